//! Real s6-overlay v3 patterns, run unchanged by the real binary: fixtures of our own laid out as
//! s6-overlay merges its layers at boot (the user's `s6-rc.d`, its user bundles, copies of the
//! overlay's own definitions, and the legacy `cont-init.d`, `services.d`, `cont-finish.d`), with
//! the linuxserver.io conventions (a oneshot whose `up` names its executable `run`, scripts without
//! the exec bit, `with-contenv` shebangs) and s6-overlay README's example. Each checks `check`
//! accepts the tree and the run does what s6-overlay does: order, `up`/`down`, the stop.
//! Where `s6-rc-compile` is installed, it must accept the same trees (else that test says why it
//! skips).

mod support;

mod supervisor_support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use supervisor_support::*;

const CONFIG: &str = "services_dir = \"etc/s6-overlay/s6-rc.d\"\n";
/// A legacy-only image: the services directory is `/etc/services.d`.
const LEGACY: &str = "services_dir = \"etc/services.d\"\n";

/// A linuxserver.io-style image: cont-init.d scripts, oneshots `init-*` whose `up` names their
/// `run`, an execline `up`, a longrun whose `run` lacks the exec bit, the `user`/`user2` bundles,
/// a legacy services.d daemon, a cont-finish.d script, and copies of s6-overlay's own definitions
/// (whose scripts do not exist here: litevisor provides those services itself).
fn linuxserver_tree(t: &Setup) {
    let rc = "etc/s6-overlay/s6-rc.d";
    t.write_exec(
        "etc/cont-init.d/10-adduser",
        "#!/command/with-contenv sh\necho cont-init-10 >> $EV\n",
    );
    t.write_exec(
        "etc/cont-init.d/20-config",
        "#!/bin/sh\necho cont-init-20 >> $EV\nexit 3\n",
    );
    t.write_exec(
        "etc/cont-finish.d/10-bye",
        "#!/usr/bin/with-contenv sh\necho cont-finish >> $EV\n",
    );
    // The linuxserver.io oneshot: `up` names the executable `run`.
    t.write(&format!("{rc}/init-adduser/type"), "oneshot\n");
    t.write(
        &format!("{rc}/init-adduser/up"),
        &format!("$DIR/{rc}/init-adduser/run\n"),
    );
    t.write_exec(
        &format!("{rc}/init-adduser/run"),
        "#!/command/with-contenv sh\necho init-adduser LV=$LV_FROM_ENV >> $EV\n",
    );
    t.write(&format!("{rc}/init-adduser/dependencies.d/base"), "");
    // An execline `up` with a block, and a `down`.
    t.write(&format!("{rc}/init-config/type"), "oneshot\n");
    t.write(
        &format!("{rc}/init-config/up"),
        "if { mkdir -p $DIR/state }\nforeground { chmod 02755 $DIR/state }\nsh -c \"echo init-config >> $EV\"\n",
    );
    t.write(
        &format!("{rc}/init-config/down"),
        "sh -c \"echo init-config-down >> $EV\"\n",
    );
    t.write(&format!("{rc}/init-config/dependencies.d/init-adduser"), "");
    // A longrun whose scripts have no exec bit (s6-rc-compile installs them 0755).
    t.write(&format!("{rc}/svc-app/type"), "longrun\n");
    t.write(
        &format!("{rc}/svc-app/run"),
        "#!/command/with-contenv sh\necho svc-app >> $EV\nexec sleep 1000\n",
    );
    t.write(
        &format!("{rc}/svc-app/finish"),
        "#!/bin/sh\necho svc-app-finish >> $EV\n",
    );
    t.write(&format!("{rc}/svc-app/dependencies.d/init-config"), "");
    // The user bundle holds only contents.d, as in the images.
    for member in ["init-adduser", "init-config", "svc-app"] {
        t.write(&format!("{rc}/user/contents.d/{member}"), "");
    }
    // user2: after the legacy services (declared, as s6-overlay's README says).
    t.write(&format!("{rc}/svc-late/type"), "longrun\n");
    t.write_exec(
        &format!("{rc}/svc-late/run"),
        "#!/bin/sh\necho svc-late >> $EV\nexec sleep 1000\n",
    );
    t.write(&format!("{rc}/svc-late/dependencies.d/legacy-services"), "");
    // With `user` in s6-rc.d, s6-overlay reads user2 from there too (not user-bundles.d).
    t.write(&format!("{rc}/user2/contents.d/svc-late"), "");
    // A legacy services.d daemon.
    t.write_exec(
        "etc/services.d/legacy/run",
        "#!/command/with-contenv sh\necho legacy >> $EV\necho legacy says hi\nexec sleep 1000\n",
    );
    // ... with an s6 logger reading its stdout.
    t.write_exec(
        "etc/services.d/legacy/log/run",
        "#!/bin/sh\nwhile read -r l; do echo \"legacy-log: $l\" >> $EV; done\n",
    );
    // A log pipeline: app's stdout is app-log's stdin; the pipeline is one bundle in `user`.
    t.write(&format!("{rc}/app/type"), "longrun\n");
    t.write_exec(
        &format!("{rc}/app/run"),
        "#!/bin/sh\necho hello from app\nexec sleep 1000\n",
    );
    t.write(&format!("{rc}/app/producer-for"), "app-log\n");
    t.write(&format!("{rc}/app-log/type"), "longrun\n");
    t.write_exec(
        &format!("{rc}/app-log/run"),
        "#!/bin/sh\nwhile read -r l; do echo \"logged: $l\" >> $EV; done\n",
    );
    t.write(&format!("{rc}/app-log/consumer-for"), "app\n");
    t.write(&format!("{rc}/app-log/pipeline-name"), "app-pipeline\n");
    t.write(&format!("{rc}/user/contents.d/app-pipeline"), "");
    overlay_sources(t);
}

/// s6-overlay's own definitions where its image keeps them (compiled with the user's at boot);
/// their scripts are s6-overlay's, absent here: litevisor provides these services itself.
fn overlay_sources(t: &Setup) {
    let src = "package/admin/s6-overlay/etc/s6-rc/sources";
    let scripts = "/package/admin/s6-overlay/etc/s6-rc/scripts";
    let oneshots: [(&str, &str, Option<&str>, &[&str]); 3] = [
        ("fix-attrs", "fix-attrs", None, &[]),
        (
            "legacy-cont-init",
            "cont-init",
            Some("cont-finish"),
            &["fix-attrs"],
        ),
        (
            "legacy-services",
            "services-up",
            Some("services-down"),
            &["base", "user"],
        ),
    ];
    for (name, up, down, deps) in oneshots {
        t.write(&format!("{src}/{name}/type"), "oneshot\n");
        t.write(&format!("{src}/{name}/up"), &format!("{scripts}/{up}\n"));
        if let Some(down) = down {
            t.write(
                &format!("{src}/{name}/down"),
                &format!("{scripts}/{down}\n"),
            );
        }
        for dep in deps {
            t.write(&format!("{src}/{name}/dependencies.d/{dep}"), "");
        }
    }
    let bundles: [(&str, &[&str]); 2] = [
        ("base", &["fix-attrs", "legacy-cont-init"]),
        ("top", &["base", "user", "legacy-services", "user2"]),
    ];
    for (name, members) in bundles {
        t.write(&format!("{src}/{name}/type"), "bundle\n");
        for m in members {
            t.write(&format!("{src}/{name}/contents.d/{m}"), "");
        }
    }
}

fn check(t: &Setup, env: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(t.file("litevisor.toml"))
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn before(events: &[String], a: &str, b: &str) -> bool {
    let pos = |e: &str| events.iter().position(|x| x == e);
    matches!((pos(a), pos(b)), (Some(x), Some(y)) if x < y)
}

#[test]
fn a_linuxserver_style_tree_runs_unchanged() {
    let t = Setup::new(CONFIG);
    linuxserver_tree(&t);
    let (ok, order, err) = check(&t, &[]);
    assert!(ok, "check refused the tree:\n{err}");
    // Start order: cont-init first, then the user bundle, the legacy services, then user2.
    let names: Vec<&str> = order
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let at = |n: &str| {
        names
            .iter()
            .position(|x| *x == n)
            .unwrap_or_else(|| panic!("{n} in {order}"))
    };
    assert!(at("legacy-cont-init") < at("init-adduser"), "{order}");
    assert!(at("init-adduser") < at("init-config") && at("init-config") < at("svc-app"));
    assert!(
        at("svc-app") < at("legacy") && at("legacy") < at("svc-late"),
        "{order}"
    );

    assert!(
        at("app-log") < at("app"),
        "the consumer starts first: {order}"
    );

    let mut lv = start_with_env(&t, &[("LV_FROM_ENV", "kept")]);
    t.wait_event("logged: hello from app");
    t.wait_event("legacy-log: legacy says hi");
    assert!(!t.stdout().contains("hello from app"), "{}", t.stdout());
    t.wait_event("svc-late");
    for e in ["svc-app", "legacy"] {
        t.wait_event(e);
    }
    let events = t.events();
    for (a, b) in [
        ("cont-init-10", "cont-init-20"),
        ("cont-init-20", "init-adduser LV=kept"),
        ("init-adduser LV=kept", "init-config"),
        ("init-config", "svc-app"),
    ] {
        assert!(before(&events, a, b), "{a} before {b}: {events:?}");
    }
    // A longrun without readiness is up once started (so its output may come later).
    let log = t.stderr();
    let started = |n: &str| {
        log.find(&format!("service {n:?} started"))
            .unwrap_or(usize::MAX)
    };
    assert!(started("svc-app") < started("legacy"), "{log}");
    assert!(started("legacy") < started("svc-late"), "{log}");
    let mode = std::fs::metadata(t.file("state"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o2755, "the execline `if` ran both commands");
    // cont-init's failing script is reported, and (S6_BEHAVIOUR_IF_STAGE2_FAILS=0) tolerated.
    assert!(t.stdout().contains("exited 3") || t.stderr().contains("exited 3"));

    lv.stop(libc::SIGTERM, 0, &t);
    let events = t.events();
    assert!(
        before(&events, "svc-app-finish", "init-config-down"),
        "{events:?}"
    );
    assert!(
        before(&events, "init-config-down", "cont-finish"),
        "{events:?}"
    );
    assert_eq!(
        events.last().map(String::as_str),
        Some("cont-finish"),
        "{events:?}"
    );
}

#[test]
fn stage2_failure_stops_the_start_when_s6_says_so() {
    let t = Setup::new(CONFIG);
    linuxserver_tree(&t);
    let mut lv = start_with_env(&t, &[("S6_BEHAVIOUR_IF_STAGE2_FAILS", "2")]);
    let code = lv.wait(PATIENCE);
    assert_ne!(code, 0, "{}", t.stderr());
    assert!(t.position("svc-app").is_none(), "{:?}", t.events());
}

/// s6-overlay README's example: a services.d `run` and an s6-rc longrun, both `#!/command/execlineb -P`
/// scripts, the longrun in the `user` bundle through `user-bundles.d`, depending on `base`.
#[test]
fn the_s6_overlay_readme_example_runs() {
    if !on_path("execlineb") {
        eprintln!(
            "skipped: execlineb is not installed (scripts/install-test-deps installs execline)"
        );
        return;
    }
    let t = Setup::new(CONFIG);
    readme_tree(&t);
    let (ok, _, err) = check(&t, &[]);
    assert!(ok, "{err}");
    let mut lv = start_with_env(&t, &[]);
    t.wait_event("myapp");
    t.wait_event("myapp2");
    lv.stop(libc::SIGTERM, 0, &t);
}

/// The README example's layout: a services.d `run` and an s6-rc longrun in `user` through
/// user-bundles.d (as s6-overlay ships them: with their `type`).
fn readme_tree(t: &Setup) {
    t.write_exec(
        "etc/services.d/myapp/run",
        "#!/command/execlineb -P\nsh -c \"echo myapp >> $EV; exec sleep 1000\"\n",
    );
    t.write("etc/s6-overlay/s6-rc.d/myapp2/type", "longrun\n");
    t.write_exec(
        "etc/s6-overlay/s6-rc.d/myapp2/run",
        "#!/command/execlineb -P\nsh -c \"echo myapp2 >> $EV; exec sleep 1000\"\n",
    );
    t.write("etc/s6-overlay/s6-rc.d/myapp2/dependencies.d/base", "");
    for b in ["user", "user2"] {
        t.write(
            &format!("etc/s6-overlay/user-bundles.d/{b}/type"),
            "bundle\n",
        );
        t.write(
            &format!("etc/s6-overlay/user-bundles.d/{b}/contents.d/.empty"),
            "",
        );
    }
    t.write("etc/s6-overlay/user-bundles.d/user/contents.d/myapp2", "");
    overlay_sources(t);
}

/// Copies of s6-overlay's own definitions inside s6-rc.d (a tree flattened from a running image)
/// are skipped: litevisor provides those services.
#[test]
fn copies_of_the_overlays_own_definitions_are_skipped() {
    let t = Setup::new(CONFIG);
    linuxserver_tree(&t);
    let copy = Command::new("sh")
        .arg("-c")
        .arg("cp -r package/admin/s6-overlay/etc/s6-rc/sources/* etc/s6-overlay/s6-rc.d/")
        .current_dir(t.path())
        .status()
        .unwrap();
    assert!(copy.success());
    let (ok, order, err) = check(&t, &[]);
    assert!(ok, "{err}");
    let names: Vec<&str> = order
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(names.contains(&"legacy-cont-init"), "{order}");
    for own in ["top", "base", "fix-attrs", "legacy-services"] {
        assert!(
            !names.contains(&own),
            "{own} is a bundle, not a service: {order}"
        );
    }
}

/// Without execlineb, `up` and `down` run through an exact sh translation of the common forms;
/// anything else is refused by `check`, so check and run never disagree.
#[test]
fn execline_without_execlineb_runs_the_common_forms_and_refuses_the_rest() {
    let t = Setup::new("services_dir = \"rc\"\n");
    let bin = t.file("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for prog in ["mkdir", "chmod", "sleep", "cat"] {
        let real = ["/bin", "/usr/bin"]
            .iter()
            .map(|d| Path::new(d).join(prog))
            .find(|p| p.exists())
            .unwrap();
        std::os::unix::fs::symlink(real, bin.join(prog)).unwrap();
    }
    t.write("rc/init/type", "oneshot\n");
    t.write(
        "rc/init/up",
        "# a comment\nif { mkdir -p $DIR/x }\nif -n { mkdir $DIR/x }\nbackground { chmod 02755 $DIR/x }\nsleep 0\n",
    );
    t.write("rc/app/type", "longrun\n");
    t.write_exec("rc/app/run", "#!/bin/sh\nexec sleep 1000\n");
    t.write("rc/app/dependencies.d/init", "");
    let path = bin.display().to_string();
    let (ok, _, err) = check(&t, &[("PATH", &path)]);
    assert!(ok, "{err}");
    let mut lv = start_with_env(&t, &[("PATH", &path)]);
    t.wait_ready(&["app"]);
    let mode = wait_for(PATIENCE, || {
        let m = std::fs::metadata(t.file("x")).ok()?.permissions().mode() & 0o7777;
        (m == 0o2755).then_some(m)
    });
    assert_eq!(mode, Some(0o2755), "{}", t.stderr());
    lv.stop(libc::SIGTERM, 0, &t);

    t.write("rc/init/up", "importas -i HOME HOME mkdir $HOME/x\n");
    let (ok, _, err) = check(&t, &[("PATH", &path)]);
    assert!(!ok);
    support::assert_contains(&err, "rc/init/up");
    support::assert_contains(&err, "`importas` is an execline program");
    t.write("rc/init/up", "if -X { true } true\n");
    let (ok, _, err) = check(&t, &[("PATH", &path)]);
    assert!(!ok && err.contains("`if -X`"), "{err}");
}

/// What s6-rc-compile accepts, litevisor accepts, and litevisor's start order follows every
/// dependency s6-rc compiled.
#[test]
fn s6_rc_compile_accepts_what_litevisor_accepts() {
    if !on_path("s6-rc-compile") {
        eprintln!(
            "skipped: s6-rc-compile is not installed (Debian has no s6-rc package; build it from skarnet's source)"
        );
        return;
    }
    let readme = Setup::new(CONFIG);
    readme_tree(&readme);
    s6_overlay_compile(&readme);
    let (ok, _, err) = check(&readme, &[]);
    assert!(ok, "{err}");

    let t = Setup::new(CONFIG);
    linuxserver_tree(&t);
    let db = s6_overlay_compile(&t);
    let (ok, order, err) = check(&t, &[]);
    assert!(ok, "{err}");
    let names: Vec<String> = order
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect();
    let mut compared = 0;
    for (i, name) in names.iter().enumerate() {
        let deps = Command::new("s6-rc-db")
            .args(["-c"])
            .arg(&db)
            .args(["all-dependencies", name])
            .output()
            .unwrap();
        if !deps.status.success() {
            continue; // a name only litevisor has (none expected) is not compared
        }
        for dep in String::from_utf8_lossy(&deps.stdout).lines() {
            if dep == name {
                continue;
            }
            if let Some(j) = names.iter().position(|n| n == dep) {
                assert!(j < i, "{dep} must start before {name}: {names:?}");
                compared += 1;
            }
        }
    }
    assert!(
        compared >= 5,
        "only {compared} dependencies compared: {names:?}"
    );
}

/// Compiles the fixture as s6-overlay's stage 2 does (`rc.init`): a `user` directory in s6-rc.d
/// gets its `type` (and an empty `user2`), and then s6-rc.d, the user-bundles.d (only without
/// that `user`) and the overlay's own sources are compiled together. Returns the database.
fn s6_overlay_compile(t: &Setup) -> std::path::PathBuf {
    let work = t.file("boot");
    std::fs::create_dir_all(&work).unwrap();
    let rc = work.join("s6-rc.d");
    let copy = Command::new("cp")
        .arg("-r")
        .arg(t.file("etc/s6-overlay/s6-rc.d"))
        .arg(&rc)
        .status()
        .unwrap();
    assert!(copy.success());
    let mut sources = vec![rc.clone()];
    if rc.join("user").is_dir() {
        for b in ["user", "user2"] {
            std::fs::create_dir_all(rc.join(b).join("contents.d")).unwrap();
            std::fs::write(rc.join(b).join("type"), "bundle\n").unwrap();
        }
    } else {
        sources.push(t.file("etc/s6-overlay/user-bundles.d"));
    }
    sources.push(t.file("package/admin/s6-overlay/etc/s6-rc/sources"));
    let db = work.join("db");
    support::run_ok(
        "s6-rc-compile of the fixture",
        Command::new("s6-rc-compile")
            .arg(&db)
            .args(&sources)
            .stdin(Stdio::null()),
    );
    db
}

fn on_path(prog: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
}

fn start_with_env(t: &Setup, env: &[(&str, &str)]) -> Lv {
    t.start_env(Mode::Direct, env)
}

/// The S6_* variables that change behaviour: `S6_SERVICES_GRACETIME` is the stop grace of the
/// services.d daemons, `S6_CMD_WAIT_FOR_SERVICES_MAXTIME` bounds each start-up (unset: no bound,
/// as in s6-overlay 3.2), `S6_KILL_FINISH_MAXTIME` each cont-finish.d script.
#[test]
fn s6_variables_set_the_grace_times_and_start_up_bound() {
    let t = Setup::new(LEGACY);
    t.write_exec(
        "etc/services.d/stubborn/run",
        "#!/bin/sh\ntrap '' TERM\necho stubborn >> $EV\nwhile :; do sleep 1; done\n",
    );
    t.write_exec(
        "etc/cont-finish.d/10-slow",
        "#!/bin/sh\necho finish-start >> $EV\nexec sleep 30\n",
    );
    let mut lv = start_with_env(
        &t,
        &[
            ("S6_SERVICES_GRACETIME", "300"),
            ("S6_KILL_FINISH_MAXTIME", "200"),
        ],
    );
    t.wait_event("stubborn");
    lv.stop(libc::SIGTERM, 0, &t);
    assert!(t.stderr().contains("stop_grace 0.3s"), "{}", t.stderr());
    t.wait_event("finish-start");

    // A cont-init script slower than S6_CMD_WAIT_FOR_SERVICES_MAXTIME fails the start.
    let t = Setup::new(LEGACY);
    t.write_exec("etc/cont-init.d/10-slow", "#!/bin/sh\nexec sleep 30\n");
    t.write_exec(
        "etc/services.d/app/run",
        "#!/bin/sh\necho app >> $EV\nexec sleep 1000\n",
    );
    let mut lv = start_with_env(&t, &[("S6_CMD_WAIT_FOR_SERVICES_MAXTIME", "300")]);
    assert_ne!(lv.wait(PATIENCE), 0, "{}", t.stderr());
    assert!(t.position("app").is_none(), "{:?}", t.events());
    let (ok, _, err) = check(&t, &[("S6_CMD_WAIT_FOR_SERVICES_MAXTIME", "soon")]);
    assert!(
        !ok && err.contains("S6_CMD_WAIT_FOR_SERVICES_MAXTIME"),
        "{err}"
    );
}
