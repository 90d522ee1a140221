//! Litestream's control commands (`sync [-wait]`, `stop`, `start`, `list`, `info`, `version`)
//! against the real running binary, in `replicate` mode and under the supervisor (`[[databases]]`),
//! with the real Litestream restoring the replica to check what `-wait` promised.

mod support;

mod replicate_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use replicate_support::{
    Replicator, app, create_table, insert, litestream_restore, rows, scene, url,
    write_litestream_yml,
};
use support::{BIN, output, wait_for};

/// Runs `litevisor ARGS` against `socket`: (exit code, stdout, stderr).
fn ctl(socket: &Path, args: &[&str]) -> (i32, String, String) {
    ctl_in(Path::new("/"), socket, args)
}

/// [`ctl`] from the directory `cwd`.
fn ctl_in(cwd: &Path, socket: &Path, args: &[&str]) -> (i32, String, String) {
    output(
        Command::new(BIN)
            .current_dir(cwd)
            .args(args)
            .args(["-socket", &socket.display().to_string()]),
    )
}

/// Starts litevisor (`args`, e.g. `replicate -config F`) in `dir` with a control socket of its
/// own, and waits until it replicates.
fn start(dir: &Path, args: &[&str]) -> (Replicator, PathBuf) {
    let socket = dir.join("lv.sock");
    let mut cmd = Command::new(BIN);
    cmd.env("LITEVISOR_SOCKET", &socket).args(args);
    let lv = Replicator::spawn(cmd, dir.join("lv.log"));
    let up = wait_for(Duration::from_secs(30), || {
        ctl(&socket, &["list"])
            .1
            .contains("[replicating]")
            .then_some(())
    });
    assert!(up.is_some(), "never replicating: {}", lv.log_text());
    (lv, socket)
}

/// A configuration file `name` in `dir` holding `text`; its path as a string.
/// `litevisor sync -wait DB`, which must succeed: what was committed is on the replica then.
fn sync_wait(socket: &Path, db: &Path) {
    let (code, out, err) = ctl(socket, &["sync", "-wait", &db.display().to_string()]);
    assert_eq!(code, 0, "sync -wait {}: {out}{err}", db.display());
}

/// The rows of `replica` as REAL Litestream restores it (into `out`).
fn replica_rows(replica: &Path, out: &Path) -> Vec<(i64, String)> {
    rows(&litestream_restore(replica, out))
}

fn config(dir: &Path, name: &str, text: String) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// `litevisor replicate` with a control socket of its own and no sync but the forced ones after
/// the first (a one-hour monitor interval), so only `sync` can move the replica.
fn replicate(dir: &Path, db: &Path, replica: &Path) -> (Replicator, PathBuf) {
    let (db, url) = (db.display().to_string(), url(replica));
    start(dir, &["replicate", "-monitor-interval", "1h", &db, &url])
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn sync_wait_puts_every_committed_transaction_on_the_replica() {
    let (dir, db, replica, mut c) = scene();
    insert(&mut c, 0..10, 5);
    let (lv, socket) = replicate(dir.path(), &db, &replica);

    insert(&mut c, 10..20, 5);
    let (code, out, err) = ctl(
        &socket,
        &["sync", "-wait", "-json", &db.display().to_string()],
    );
    assert_eq!(code, 0, "{out}{err}");
    let answer = json(&out);
    assert_eq!(answer["db_path"], db.display().to_string());
    assert!(answer["txid"].as_u64().unwrap() >= 2, "{out}");
    assert_eq!(answer["replica_txid"], answer["txid"], "{out}");
    // The replica holds the rows now, long before any scheduled sync: Litestream restores them.
    let restored = litestream_restore(&replica, &dir.path().join("restored.db"));
    assert_eq!(rows(&restored), rows(&db));

    // Without -wait: the local sync only (Litestream's text shape, no replica_txid); a path
    // relative to the caller's directory names the same database.
    insert(&mut c, 20..21, 1);
    let (code, out, _) = ctl_in(dir.path(), &socket, &["sync", "app.db"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with(&format!("db_path: {}\ntxid: ", db.display())),
        "{out}"
    );
    assert!(!out.contains("replica_txid"), "{out}");

    // An unknown database: exit 1, named.
    let missing = dir.path().join("nope.db");
    let (code, out, err) = ctl(&socket, &["sync", "-wait", &missing.display().to_string()]);
    assert_eq!(code, 1, "{out}");
    assert!(
        err.contains(&format!("database not found: {}", missing.display())),
        "{err}"
    );
    assert!(lv.stop().success());
}

#[test]
fn stop_and_start_one_database() {
    let (dir, db, replica, mut c) = scene();
    insert(&mut c, 0..10, 5);
    let (lv, socket) = replicate(dir.path(), &db, &replica);
    let path = db.display().to_string();

    // `stop` runs the final sync: what was committed before it is on the replica.
    insert(&mut c, 10..20, 5);
    let (code, out, err) = ctl(&socket, &["stop", &path]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("status: stopped\n"), "{out}");
    assert!(
        out.contains(&format!("socket: {}", socket.display())),
        "{out}"
    );
    let before_stop = rows(&db);
    assert_eq!(
        replica_rows(&replica, &dir.path().join("r1.db")),
        before_stop
    );

    // Stopped: nothing more is replicated, syncs are refused, `list` says so.
    insert(&mut c, 20..30, 5);
    let (code, _, err) = ctl(&socket, &["sync", "-wait", &path]);
    assert_eq!(code, 1);
    assert!(err.contains("database not open"), "{err}");
    assert!(ctl(&socket, &["list"]).1.contains("[stopped]"));
    let (code, out, _) = ctl(&socket, &["stop", "-json", &path]);
    assert_eq!(
        (code, json(&out)["status"].clone()),
        (0, "already_stopped".into())
    );
    assert_eq!(
        replica_rows(&replica, &dir.path().join("r2.db")),
        before_stop,
        "replicated while stopped"
    );

    // `start` resumes from the local state; the rows written while stopped follow.
    let (code, out, err) = ctl(&socket, &["start", "-json", &path]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(json(&out)["status"], "started");
    let (code, out, _) = ctl(&socket, &["start", "-json", &path]);
    assert_eq!(
        (code, json(&out)["status"].clone()),
        (0, "already_running".into())
    );
    sync_wait(&socket, &db);
    assert_eq!(replica_rows(&replica, &dir.path().join("r3.db")), rows(&db));
    assert!(lv.stop().success());
}

#[test]
fn list_info_and_version_in_litestreams_shapes() {
    let (dir, db, replica, _c) = scene();
    let (lv, socket) = replicate(dir.path(), &db, &replica);

    let (code, out, _) = ctl(&socket, &["list", "-json"]);
    assert_eq!(code, 0);
    let list = json(&out);
    assert_eq!(list["databases"][0]["path"], db.display().to_string());
    assert_eq!(list["databases"][0]["status"], "replicating");
    let (code, out, _) = ctl(&socket, &["info", "-json"]);
    assert_eq!(code, 0);
    let info = json(&out);
    assert_eq!(info["pid"], lv.child.id());
    assert_eq!(info["database_count"], 1);
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    let (code, out, _) = ctl(&socket, &["info"]);
    assert_eq!(code, 0);
    assert!(
        out.contains(&format!("PID:        {}", lv.child.id())),
        "{out}"
    );

    let version = Command::new(BIN).arg("version").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&version.stdout),
        format!("{}\n", env!("CARGO_PKG_VERSION"))
    );
    assert!(lv.stop().success());

    // Nobody listening: exit 1 with the socket named.
    let (code, _, err) = ctl(&socket, &["info"]);
    assert_eq!(code, 1);
    assert!(err.contains(&socket.display().to_string()), "{err}");
}

/// The same commands reach `[[databases]]` under the supervisor.
#[test]
fn sync_wait_under_the_supervisor() {
    let (dir, db, replica, mut c) = scene();
    insert(&mut c, 0..5, 5);
    let config = config(
        dir.path(),
        "litevisor.toml",
        format!(
            "[[databases]]\npath = \"{}\"\nreplica = \"{}\"\nsync_interval = \"1h\"\n",
            db.display(),
            url(&replica)
        ),
    );
    let (lv, socket) = start(dir.path(), &["--config", &config]);

    insert(&mut c, 5..15, 5);
    sync_wait(&socket, &db);
    let restored = dir.path().join("restored.db");
    assert_eq!(replica_rows(&replica, &restored), rows(&db));
    assert!(lv.stop().success());
}

/// Two litevisors of one user on one host, neither PID 1 nor given a socket path, listen at paths
/// of their own; a client with no `-socket` refuses to guess between them and names both, and
/// finds the one left once the other is gone.
#[test]
fn default_sockets_do_not_collide() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = dir.path().join("xdg");
    std::fs::create_dir(&runtime).unwrap();
    let start = |name: &str| {
        let db = dir.path().join(format!("{name}.db"));
        create_table(&app(&db));
        let mut cmd = Command::new(BIN);
        cmd.env_remove("LITEVISOR_SOCKET")
            .env("XDG_RUNTIME_DIR", &runtime)
            .arg("replicate")
            .arg(&db)
            .arg(url(&dir.path().join(format!("{name}-replica"))));
        Replicator::spawn(cmd, dir.path().join(format!("{name}.log")))
    };
    let client = |args: &[&str]| {
        output(
            Command::new(BIN)
                .env_remove("LITEVISOR_SOCKET")
                .env("XDG_RUNTIME_DIR", &runtime)
                .args(args),
        )
    };
    let a = start("a");
    let b = start("b");
    let sockets = [&a, &b].map(|r| runtime.join(format!("litevisor/{}.sock", r.child.id())));
    let both = wait_for(Duration::from_secs(30), || {
        sockets.iter().all(|s| s.exists()).then_some(())
    });
    assert!(both.is_some(), "sockets {sockets:?}: {}", a.log_text());
    let mode = std::fs::metadata(runtime.join("litevisor"))
        .unwrap()
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o700
    );

    let (code, _, err) = client(&["info"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("several litevisor processes are running"),
        "{err}"
    );
    for s in &sockets {
        assert!(err.contains(&s.display().to_string()), "{err}");
    }
    let (code, out, _) = client(&[
        "info",
        "-json",
        "-socket",
        &sockets[1].display().to_string(),
    ]);
    assert_eq!((code, json(&out)["pid"].clone()), (0, b.child.id().into()));

    assert!(a.stop().success());
    assert!(!sockets[0].exists(), "the socket goes with its process");
    let (code, out, err) = client(&["info", "-json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["pid"], b.child.id());
    // (None left is the unit test of control::path: other litevisors of this user may run on
    // this machine, in the directories looked at when the first has none.)
    assert!(b.stop().success());
}

/// Another user cannot use the socket: the file's mode keeps them out, and if someone loosens it,
/// the server still refuses them by their peer credentials. Needs root (to create the user).
#[test]
fn another_users_connection_is_refused() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIP another_users_connection_is_refused: needs root to create a second user");
        return;
    }
    let user = "lvtest";
    if !Command::new("id")
        .arg(user)
        .output()
        .unwrap()
        .status
        .success()
    {
        let made = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                user,
            ])
            .status()
            .unwrap();
        assert!(made.success(), "useradd {user}");
    }
    let dir = tempfile::tempdir().unwrap();
    // The other user must reach the socket's path to try it at all.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let (db, replica) = (dir.path().join("app.db"), dir.path().join("replica"));
    create_table(&app(&db));
    let (lv, socket) = replicate(dir.path(), &db, &replica);
    let as_other = |args: &[&str]| {
        let (code, _, err) = output(
            Command::new("setpriv")
                .args(["--reuid", user, "--regid", user, "--clear-groups", BIN])
                .args(args)
                .args(["-socket", &socket.display().to_string()]),
        );
        (code, err)
    };
    let (code, err) = as_other(&["list"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("Permission denied") || err.contains("permission denied"),
        "{err}"
    );

    std::fs::set_permissions(&socket, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    for args in [
        &["list"][..],
        &["status"],
        &["sync", "-wait", db.to_str().unwrap()],
    ] {
        let (code, err) = as_other(args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(err.contains("refused: uid"), "{args:?}: {err}");
    }
    assert!(lv.log_text().contains("refused a connection from uid"));
    // Its own user still gets answers.
    assert_eq!(ctl(&socket, &["list"]).0, 0);
    assert!(lv.stop().success());
}

/// Litestream's `reset` and offline `status -config`: refused while replicated, then the local
/// state goes and the next sync starts with a snapshot that Litestream restores.
#[test]
fn reset_and_offline_status() {
    let (dir, db, replica, mut c) = scene();
    insert(&mut c, 0..10, 5);
    let cfg = write_litestream_yml(dir.path(), &db, &replica)
        .display()
        .to_string();
    let path = db.display().to_string();
    let offline = |args: &[&str]| output(Command::new(BIN).args(args));
    let (code, out, err) = offline(&["status", "-config", &cfg]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("not initialized"), "{out}");

    let (lv, socket) = start(dir.path(), &["replicate", "-config", &cfg]);
    sync_wait(&socket, &db);
    let (code, out, _) = offline(&["status", "-config", &cfg, &path]);
    assert_eq!(code, 0);
    assert!(
        out.contains(" ok ") && out.contains("000000000000000"),
        "{out}"
    );

    // Replicated right now: refused, with the way out named.
    let (code, _, err) = offline(&["reset", "-config", &cfg, &path]);
    assert_eq!(code, 1);
    assert!(err.contains("litevisor stop"), "{err}");

    assert_eq!(ctl(&socket, &["stop", &path]).0, 0);
    let (code, out, _) = offline(&["reset", "-config", &cfg, "-dry-run", &path]);
    assert_eq!(code, 0);
    assert!(out.contains("No files were removed"), "{out}");
    assert!(dir.path().join(".app.db-litestream/ltx/0").exists());
    let (code, out, err) = offline(&["reset", "-config", &cfg, &path]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!dir.path().join(".app.db-litestream/ltx").exists());
    assert!(
        offline(&["status", "-config", &cfg])
            .1
            .contains("not initialized")
    );

    let snapshots_before = lv.log_text().matches("wrote snapshot L0").count();
    insert(&mut c, 10..20, 5);
    assert_eq!(ctl(&socket, &["start", &path]).0, 0);
    sync_wait(&socket, &db);
    assert!(
        lv.log_text().matches("wrote snapshot L0").count() > snapshots_before,
        "no snapshot after the reset: {}",
        lv.log_text()
    );
    let restored = litestream_restore(&replica, &dir.path().join("restored.db"));
    assert_eq!(rows(&restored), rows(&db));
    assert!(lv.stop().success());
}
