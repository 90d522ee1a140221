//! `litevisor svc up|down|restart|once|kill -s SIGNAL NAME` against the real running supervisor:
//! each verb, s6-rc's handling of dependents and dependencies, the main service brought down (exit
//! code), and the errors; reload by `litevisor reload` and SIGHUP (added, removed, changed,
//! unchanged, invalid). Services are real processes; "untouched" is checked by pid.

mod support;

mod supervisor_support;

use std::time::Duration;

use supervisor_support::*;

/// Three longruns: `web` depends on `db`; `other` is independent. Each appends `start NAME` to the
/// events file and runs until signalled; `web` also records SIGUSR1.
const CONFIG: &str = r#"
[services.db]
command = ["sh", "-c", "echo start db >> $EV; exec sleep 1000"]
[services.web]
command = ["sh", "-c", "trap 'echo usr1 web >> $EV' USR1; echo start web >> $EV; while :; do sleep 0.1; done"]
depends_on = ["db"]
[services.other]
command = ["sh", "-c", "echo start other >> $EV; exec sleep 1000"]
"#;

/// litevisor started on `config` (its control socket at `Setup::socket`) with the services
/// `ready` up and ready.
fn up(config: &str, ready: &[&str]) -> (Setup, Lv) {
    let s = Setup::new(config);
    let lv = s.start_with_socket(Mode::Direct);
    s.wait_ready(ready);
    (s, lv)
}

/// litevisor on CONFIG, its three services ready and their start lines written.
fn up_with_config() -> (Setup, Lv) {
    let (s, lv) = up(CONFIG, &["db", "web", "other"]);
    for event in ["start db", "start web", "start other"] {
        s.wait_event(event);
    }
    (s, lv)
}

/// Runs `litevisor svc ARGS`, asserting it succeeded; returns its answer.
fn svc(s: &Setup, args: &[&str]) -> String {
    let mut full = vec!["svc"];
    full.extend_from_slice(args);
    let out = s.cli(&full);
    assert!(
        out.status.success(),
        "svc {args:?}: {out:?}\nstderr:\n{}",
        s.stderr()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The services of `litevisor status --json`: (name, state, pid).
fn services(s: &Setup) -> Vec<(String, String, Option<i64>)> {
    s.status("services")
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap_or_default().to_owned(),
                s["state"].as_str().unwrap_or_default().to_owned(),
                s["pid"].as_i64(),
            )
        })
        .collect()
}

fn service(s: &Setup, name: &str) -> (String, Option<i64>) {
    services(s)
        .into_iter()
        .find(|(n, _, _)| n == name)
        .map(|(_, state, pid)| (state, pid))
        .unwrap_or_else(|| panic!("no service {name} in status"))
}

/// Waits until `name` is in `state` (and, for `running`, has a pid); returns its pid.
fn wait_state(s: &Setup, name: &str, state: &str) -> Option<i64> {
    let found = wait_for(PATIENCE, || {
        let (now, pid) = service(s, name);
        (now == state && (state != "running" || pid.is_some())).then_some(pid)
    });
    found.unwrap_or_else(|| {
        panic!(
            "{name} never {state}: {:?}\nstderr:\n{}",
            services(s),
            s.stderr()
        )
    })
}

fn running_pid(s: &Setup, name: &str) -> i32 {
    wait_state(s, name, "running").expect("pid") as i32
}

fn count(s: &Setup, event: &str) -> usize {
    s.events().iter().filter(|e| *e == event).count()
}

/// Waits until `event` has been recorded `n` times (a process may be running, and shown so, a
/// moment before its shell has written its line).
fn wait_count(s: &Setup, event: &str, n: usize) {
    let reached = wait_for(PATIENCE, || (count(s, event) >= n).then_some(()));
    assert!(reached.is_some(), "{event:?} x{n}: {:?}", s.events());
    assert_eq!(count(s, event), n, "{:?}", s.events());
}

#[test]
fn down_takes_dependents_first_and_keeps_them_down_until_up() {
    let (s, mut lv) = up_with_config();
    let (db, web, other) = (
        running_pid(&s, "db"),
        running_pid(&s, "web"),
        running_pid(&s, "other"),
    );

    let answer = svc(&s, &["down", "db"]);
    assert!(answer.contains("web"), "names the dependent: {answer}");
    wait_state(&s, "db", "down");
    wait_state(&s, "web", "down");
    assert!(
        wait_for(PATIENCE, || (!alive(db) && !alive(web)).then_some(())).is_some(),
        "processes still alive"
    );
    // The dependent stopped before its dependency.
    let log = s.stderr();
    let (stop_web, stop_db) = (
        log.find("stopping service \"web\"").expect("web stopped"),
        log.find("stopping service \"db\"").expect("db stopped"),
    );
    assert!(stop_web < stop_db, "web must stop first:\n{log}");
    // Kept down: no restart comes (the independent service is untouched).
    assert_eq!(running_pid(&s, "other"), other);
    assert_eq!(count(&s, "start db"), 1);
    assert_eq!(service(&s, "db").0, "down");

    // `up web` brings its dependency up first.
    let answer = svc(&s, &["up", "web"]);
    assert!(answer.contains("db"), "names the dependency: {answer}");
    let (db2, web2) = (running_pid(&s, "db"), running_pid(&s, "web"));
    assert!(db2 != db && web2 != web);
    assert!(alive(db2) && alive(web2));
    assert_eq!(running_pid(&s, "other"), other);

    lv.stop(libc::SIGTERM, 0, &s);
}

#[test]
fn up_of_a_dependency_leaves_its_downed_dependents_down() {
    let (s, mut lv) = up_with_config();
    svc(&s, &["down", "db"]);
    wait_state(&s, "web", "down");
    wait_state(&s, "db", "down");
    svc(&s, &["up", "db"]);
    running_pid(&s, "db");
    s.wait_event("start db");
    assert_eq!(service(&s, "web").0, "down");
    assert_eq!(count(&s, "start web"), 1);
    lv.stop(libc::SIGTERM, 0, &s);
}

#[test]
fn restart_replaces_the_process_and_leaves_dependents_running() {
    let (s, mut lv) = up_with_config();
    let (db, web) = (running_pid(&s, "db"), running_pid(&s, "web"));
    svc(&s, &["restart", "db"]);
    let db2 = wait_for(PATIENCE, || {
        let (state, pid) = service(&s, "db");
        (state == "running" && pid.is_some_and(|p| p as i32 != db)).then_some(pid)
    })
    .flatten()
    .expect("db restarted") as i32;
    assert!(!alive(db) && alive(db2));
    wait_count(&s, "start db", 2);
    assert_eq!(running_pid(&s, "web"), web, "the dependent is untouched");
    lv.stop(libc::SIGTERM, 0, &s);
}

#[test]
fn kill_signals_the_group_and_rejects_bad_input() {
    let (s, mut lv) = up_with_config();
    let web = running_pid(&s, "web");
    svc(&s, &["kill", "-s", "USR1", "web"]);
    s.wait_event("usr1 web");
    assert_eq!(running_pid(&s, "web"), web);

    let bad = s.cli(&["svc", "kill", "-s", "NOSUCH", "web"]);
    assert_eq!(bad.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("unknown signal \"NOSUCH\""), "{err}");

    let unknown = s.cli(&["svc", "down", "nope"]);
    assert_eq!(unknown.status.code(), Some(1));
    let err = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        err.contains("unknown service \"nope\"")
            && ["db", "web", "other"].iter().all(|n| err.contains(n)),
        "{err}"
    );

    svc(&s, &["down", "other"]);
    wait_state(&s, "other", "down");
    let not_running = s.cli(&["svc", "kill", "-s", "TERM", "other"]);
    assert_eq!(not_running.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&not_running.stderr).contains("not running"));

    // Everything else kept running through all of it.
    assert_eq!(running_pid(&s, "web"), web);
    lv.stop(libc::SIGTERM, 0, &s);
}

#[test]
fn once_is_not_restarted_when_it_ends() {
    let (s, mut lv) = up(
        r#"
[services.job]
command = ["sh", "-c", "echo start job >> $EV; exec sleep 1000"]
[services.keep]
command = ["sleep", "1000"]
"#,
        &["job", "keep"],
    );
    svc(&s, &["down", "job"]);
    wait_state(&s, "job", "down");
    svc(&s, &["once", "job"]);
    let job = running_pid(&s, "job");
    wait_count(&s, "start job", 2);
    // SAFETY: kill has no memory-safety requirements.
    unsafe { libc::kill(job, libc::SIGKILL) };
    wait_state(&s, "job", "ended");
    assert!(
        s.stderr().contains("started once: not restarted"),
        "{}",
        s.stderr()
    );
    assert_eq!(count(&s, "start job"), 2);
    // `up` brings it back under normal supervision: a kill is followed by a restart.
    svc(&s, &["up", "job"]);
    let job = running_pid(&s, "job");
    // Killed only once its shell has written its line, or the kill hides one start.
    wait_count(&s, "start job", 3);
    // SAFETY: kill has no memory-safety requirements.
    unsafe { libc::kill(job, libc::SIGKILL) };
    let back = wait_for(PATIENCE, || (count(&s, "start job") == 4).then_some(()));
    assert!(back.is_some(), "not restarted: {:?}", s.events());
    lv.stop(libc::SIGTERM, 0, &s);
}

#[test]
fn main_down_ends_litevisor_with_mains_exit_code_after_its_dependents() {
    for mode in [Mode::Direct, Mode::Pid1] {
        main_down(mode);
    }
}

fn main_down(mode: Mode) {
    let s = Setup::new(
        r#"
[services.app]
command = ["sh", "-c", "trap 'echo stop app >> $EV; exit 7' TERM; while :; do sleep 0.1; done"]
main = true
[services.sidecar]
command = ["sh", "-c", "trap 'echo stop sidecar >> $EV; exit 0' TERM; while :; do sleep 0.1; done"]
depends_on = ["app"]
"#,
    );
    let mut lv = s.start_with_socket(mode);
    s.wait_ready(&["app", "sidecar"]);
    svc(&s, &["down", "app"]);
    assert_eq!(lv.wait(PATIENCE), 7, "{mode:?}: stderr:\n{}", s.stderr());
    assert_eq!(s.events(), ["stop sidecar", "stop app"]);
}

#[test]
fn every_service_down_by_request_keeps_litevisor_up() {
    let (s, mut lv) = up(
        r#"
[services.only]
command = ["sh", "-c", "echo start only >> $EV; exec sleep 1000"]
"#,
        &["only"],
    );
    svc(&s, &["down", "only"]);
    wait_state(&s, "only", "down");
    // Down on purpose is healthy.
    let health = s.cli(&["health"]);
    assert!(health.status.success(), "{health:?}");
    // Not "every service has ended": `up` still finds it there.
    svc(&s, &["up", "only"]);
    running_pid(&s, "only");
    wait_count(&s, "start only", 2);
    assert!(lv.child.try_wait().expect("try_wait").is_none());
    lv.signal(libc::SIGTERM);
    assert_eq!(lv.wait(Duration::from_secs(60)), 0);
}

// Reload: SIGHUP and `litevisor reload`.

const BEFORE: &str = r#"
[services.keep]
command = ["sh", "-c", "trap 'echo hup keep >> $EV' HUP; echo start keep >> $EV; while :; do sleep 0.1; done"]
[services.change]
command = ["sh", "-c", "echo start change v1 >> $EV; exec sleep 1000"]
[services.gone]
command = ["sh", "-c", "echo start gone >> $EV; exec sleep 1000"]
"#;

const AFTER: &str = r#"
[services.keep]
command = ["sh", "-c", "trap 'echo hup keep >> $EV' HUP; echo start keep >> $EV; while :; do sleep 0.1; done"]
[services.change]
command = ["sh", "-c", "echo start change v2 >> $EV; exec sleep 1000"]
[services.added]
command = ["sh", "-c", "echo start added >> $EV; exec sleep 1000"]
depends_on = ["keep"]
"#;

fn names(s: &Setup) -> Vec<String> {
    let mut names: Vec<String> = services(s).into_iter().map(|(n, _, _)| n).collect();
    names.sort();
    names
}

/// After AFTER replaced BEFORE: `keep` untouched (same pid, no SIGHUP), `change` restarted with its
/// new command, `gone` stopped and not shown, `added` running.
fn assert_applied(s: &Setup, keep: i32, change: i32, gone: i32) {
    s.wait_event("start added");
    s.wait_event("start change v2");
    assert!(
        wait_for(PATIENCE, || (!alive(gone) && !alive(change)).then_some(())).is_some(),
        "old processes still alive"
    );
    assert_eq!(running_pid(s, "keep"), keep);
    assert!(alive(keep));
    assert_eq!(count(s, "start keep"), 1);
    assert_ne!(running_pid(s, "change"), change);
    running_pid(s, "added");
    assert_eq!(names(s), ["added", "change", "keep"]);
    assert!(s.position("hup keep").is_none(), "{:?}", s.events());
}

#[test]
fn reload_adds_removes_changes_and_leaves_unchanged_services_alone() {
    let (s, mut lv) = up(BEFORE, &["keep", "change", "gone"]);
    let [keep, change, gone] = ["keep", "change", "gone"].map(|name| running_pid(&s, name));
    s.write("litevisor.toml", AFTER);
    let out = s.cli(&["reload"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.contains("added: added")
            && text.contains("removed: gone")
            && text.contains("changed (restarting): change")
            && text.contains("unchanged: 1"),
        "{text}"
    );
    assert_applied(&s, keep, change, gone);
    // The removed service cannot be controlled any more.
    assert_eq!(s.cli(&["svc", "up", "gone"]).status.code(), Some(1));
    lv.stop(libc::SIGTERM, 0, &s);
}

#[test]
fn sighup_reloads_in_supervisor_mode() {
    let (s, mut lv) = up(BEFORE, &["keep", "change", "gone"]);
    let [keep, change, gone] = ["keep", "change", "gone"].map(|name| running_pid(&s, name));
    s.write("litevisor.toml", AFTER);
    lv.signal(libc::SIGHUP);
    assert_applied(&s, keep, change, gone);
    lv.stop(libc::SIGTERM, 0, &s);
}

#[test]
fn an_invalid_configuration_is_refused_and_nothing_changes() {
    let (s, mut lv) = up(BEFORE, &["keep", "change", "gone"]);
    let before: Vec<_> = services(&s);
    s.write(
        "litevisor.toml",
        &format!("{AFTER}\n[services.bad]\ncommand = []\nrestart = \"sometimes\"\n"),
    );
    let out = s.cli(&["reload"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("reload refused, nothing changed") && err.contains("litevisor.toml:"),
        "{err}"
    );
    assert!(s.stderr().contains("reload refused"), "{}", s.stderr());
    // SIGHUP with the same file: refused too (logged).
    lv.signal(libc::SIGHUP);
    let logged = wait_for(PATIENCE, || {
        (s.stderr().matches("reload refused").count() >= 2).then_some(())
    });
    assert!(logged.is_some(), "{}", s.stderr());
    assert_eq!(services(&s), before);
    assert!(s.position("start added").is_none());
    lv.stop(libc::SIGTERM, 0, &s);
}

#[test]
fn up_while_a_down_is_still_stopping_brings_it_back() {
    let (s, mut lv) = up(
        r#"
[services.slow]
command = ["sh", "-c", "trap 'echo stopping >> $EV; sleep 3; exit 0' TERM; echo start slow >> $EV; while :; do sleep 0.1; done"]
[services.keep]
command = ["sleep", "1000"]
"#,
        &["slow", "keep"],
    );
    let first = running_pid(&s, "slow");
    svc(&s, &["down", "slow"]);
    s.wait_event("stopping");
    // Its stop takes seconds: the `up` comes while it is still stopping.
    assert_eq!(service(&s, "slow").0, "stopping");
    svc(&s, &["up", "slow"]);
    let back = wait_for(PATIENCE, || (count(&s, "start slow") == 2).then_some(()));
    assert!(back.is_some(), "{:?}\n{}", s.events(), s.stderr());
    assert_ne!(running_pid(&s, "slow"), first);
    lv.stop(libc::SIGTERM, 0, &s);
}

#[test]
fn restart_during_a_down_means_the_service_runs_afterwards() {
    // Both take two seconds to stop, so each `restart` below comes in the middle of a `down`.
    let (s, mut lv) = up(
        r#"
[services.base]
command = ["sh", "-c", "trap 'echo stopping base >> $EV; sleep 2; exit 0' TERM; echo start base >> $EV; while :; do sleep 0.1; done"]
[services.dep]
command = ["sh", "-c", "trap 'echo stopping dep >> $EV; sleep 2; exit 0' TERM; echo start dep >> $EV; while :; do sleep 0.1; done"]
depends_on = ["base"]
"#,
        &["base", "dep"],
    );
    s.wait_event("start base");
    let base = running_pid(&s, "base");
    // `base` waits for its dependent to stop: a restart now keeps it up, untouched.
    svc(&s, &["down", "base"]);
    s.wait_event("stopping dep");
    let answer = svc(&s, &["restart", "base"]);
    assert!(answer.contains("stays up"), "{answer}");
    wait_state(&s, "dep", "down");
    assert_eq!(running_pid(&s, "base"), base);
    assert_eq!(count(&s, "stopping base"), 0, "{:?}", s.events());
    // `base` itself is stopping: a restart now starts it again once it has stopped.
    svc(&s, &["down", "base"]);
    s.wait_event("stopping base");
    let answer = svc(&s, &["restart", "base"]);
    assert!(answer.contains("starts again once stopped"), "{answer}");
    wait_count(&s, "start base", 2);
    assert_ne!(running_pid(&s, "base"), base);
    // The dependent it brought down stays down until its own `up`.
    assert_eq!(service(&s, "dep").0, "down");
    // An `up` while a restart is under way does not cancel the restart.
    let second = running_pid(&s, "base");
    svc(&s, &["restart", "base"]);
    wait_count(&s, "stopping base", 2);
    svc(&s, &["up", "base"]);
    wait_count(&s, "start base", 3);
    assert_ne!(running_pid(&s, "base"), second);
    lv.stop(libc::SIGTERM, 0, &s);
}
