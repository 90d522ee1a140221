//! `[[databases]]` under the supervisor, end to end with the real binary, the real `sqlite3` CLI as the
//! application and a file replica: every committed row reaches the replica on a graceful stop (the
//! app trapping SIGTERM, dying of it, or exiting at once), the exit code is the main service's, a
//! failed final sync turns 0 into 74, the database is restored before the app starts (and not with
//! `restore = "never"`), and `litevisor status` shows the database and its lag.

mod support;
use support::s3_server;

mod supervisor_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use supervisor_support::{BIN, Lv, PATIENCE, alive, children_of, read_lines, wait_exit, wait_for};

/// How long a stopped litevisor may take to exit (final syncs included).
const STOP_LIMIT: Duration = Duration::from_secs(90);

/// A scratch directory with a config, a socket path of its own and litevisor's logs.
struct Db {
    dir: tempfile::TempDir,
}

/// The application: records what it found at start (`first=N`, or `first=none` without a table),
/// then inserts rows one transaction each (each committed id appended to `committed`) until it
/// has written `$LIMIT` rows in this run; then, depending on `$THEN`, exits 0 or waits to be stopped.
/// With `$TRAP` set it exits 3 on SIGTERM, with `$IGNORE` set it ignores SIGTERM, with `$SLOW` set
/// it takes half a second to stop and exits 5, otherwise SIGTERM kills it.
const APP: &str = r#"#!/bin/sh
db="$DIR/app.db"
sq() { sqlite3 -cmd '.timeout 10000' "$db" "$@"; }
[ -n "$TRAP" ] && trap 'echo "trapped" >> "$DIR/events"; exit 3' TERM
[ -n "$IGNORE" ] && trap '' TERM
[ -n "$SLOW" ] && trap 'echo "term" >> "$DIR/events"; sleep 0.5; exit 5' TERM
echo "first=$(sq 'select count(*) from t' 2>/dev/null || echo none)" >> "$DIR/events"
sq 'pragma journal_mode=wal' > /dev/null
sq 'create table if not exists t(id integer primary key, v text not null)'
i=$(sq 'select coalesce(max(id), 0) from t')
end=$((i + LIMIT))
while [ "$i" -lt "$end" ]; do
  i=$((i + 1))
  if sq "insert into t(id, v) values($i, 'row $i ' || hex(randomblob(64)))"; then
    echo "$i" >> "$DIR/committed"
  fi
  if [ -e "$DIR/pause" ]; then
    while [ -e "$DIR/pause" ]; do sleep 0.05; done
  fi
done
echo "done" >> "$DIR/events"
[ "$THEN" = "exit" ] && exit 0
while :; do sleep 1; done
"#;

impl Db {
    /// `extra_db` is appended to the `[[databases]]` table, `app_env` to the service's environment.
    fn new(extra_db: &str, app_env: &str) -> Db {
        Db::with_replica(None, extra_db, app_env)
    }

    /// Like [`Db::new`] with `replica` (a TOML value) instead of the file replica.
    fn with_replica(replica: Option<&str>, extra_db: &str, app_env: &str) -> Db {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db { dir };
        let replica = replica.map_or_else(
            || format!("\"file://{}\"", db.replica().display()),
            str::to_owned,
        );
        db.write_exec("app.sh", APP);
        let config = format!(
            r#"shutdown_timeout = "20s"

[[databases]]
path = "app.db"
replica = {replica}
sync_interval = "50ms"
{extra_db}

[services.app]
main = true
command = ["{app}"]
stop_grace = "10s"
environment = {{ DIR = "{dir}", {app_env} }}
"#,
            app = db.file("app.sh").display(),
            dir = db.path().display(),
        );
        std::fs::write(db.file("litevisor.toml"), config).expect("config");
        db
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs litevisor until it exits on its own, which must be with 0; returns its stderr.
    fn run_to_exit(&self) -> String {
        let code = self.start(false).wait(STOP_LIMIT);
        let log = self.stderr();
        assert_eq!(code, 0, "stderr:\n{log}");
        log
    }

    /// Fills `app.db` (in WAL mode) with `mb` MB of other data, in a table `big`.
    fn add_big_data(&self, mb: u32) {
        sql(
            &self.file("app.db"),
            &format!(
                "pragma journal_mode=wal; create table big(b); \
                 insert into big select randomblob(1000000) from generate_series(1, {mb})"
            ),
        );
    }

    /// Sets the app's `stop_grace` and the `shutdown_timeout` (10 s and 20 s by default).
    fn set_timeouts(&self, stop_grace: &str, shutdown_timeout: &str) {
        self.edit_config(|config| {
            assert!(
                config.contains("stop_grace = \"10s\"")
                    && config.contains("shutdown_timeout = \"20s\""),
                "{config}"
            );
            config
                .replace(
                    "stop_grace = \"10s\"",
                    &format!("stop_grace = \"{stop_grace}\""),
                )
                .replace(
                    "shutdown_timeout = \"20s\"",
                    &format!("shutdown_timeout = \"{shutdown_timeout}\""),
                )
        });
    }

    /// Rewrites `litevisor.toml` through `edit`.
    fn edit_config(&self, edit: impl FnOnce(&str) -> String) {
        let path = self.file("litevisor.toml");
        let config = std::fs::read_to_string(&path).expect("config");
        std::fs::write(&path, edit(&config)).expect("config");
    }

    fn replica(&self) -> PathBuf {
        self.file("replica")
    }

    fn socket(&self) -> PathBuf {
        self.file("lv.sock")
    }

    fn write_exec(&self, name: &str, text: &str) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(self.file(name), text).expect("write");
        std::fs::set_permissions(self.file(name), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
    }

    fn events(&self) -> Vec<String> {
        read_lines(&self.file("events"))
    }

    fn committed(&self) -> Vec<i64> {
        read_lines(&self.file("committed"))
            .iter()
            .map(|l| l.parse().expect("id"))
            .collect()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.file("stderr.log")).unwrap_or_default()
    }

    /// Starts litevisor (as PID 1 of a new PID namespace with `pid1`).
    fn start(&self, pid1: bool) -> Lv {
        self.start_with(pid1, &[])
    }

    /// [`Db::start`] with more environment for litevisor itself.
    fn start_with(&self, pid1: bool, env: &[(&str, &str)]) -> Lv {
        let mut cmd = if pid1 {
            let mut c = Command::new("unshare");
            c.args(["--pid", "--fork", "--mount-proc", "--kill-child", BIN]);
            c
        } else {
            Command::new(BIN)
        };
        cmd.arg("--config").arg(self.file("litevisor.toml"));
        for var in ["LITEVISOR_GRACE", "LOG_LEVEL", "LITEVISOR_CONFIG"] {
            cmd.env_remove(var);
        }
        cmd.env("LITEVISOR_LOG", "info")
            .env("LITEVISOR_SOCKET", self.socket())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(self.file("stdout.log")).expect("stdout.log"))
            .stderr(std::fs::File::create(self.file("stderr.log")).expect("stderr.log"));
        let child = cmd.spawn().expect("spawn litevisor");
        let pid = if pid1 {
            let launcher = child.id() as i32;
            wait_for(PATIENCE, || {
                children_of(launcher).into_iter().find(|p| {
                    std::fs::read_link(format!("/proc/{p}/exe")).is_ok_and(|e| e == Path::new(BIN))
                })
            })
            .expect("litevisor did not appear under unshare")
        } else {
            child.id() as i32
        };
        Lv { child, pid }
    }

    /// Waits until the app has committed at least `n` rows in total.
    fn wait_committed(&self, n: usize) {
        let ok = wait_for(PATIENCE, || (self.committed().len() >= n).then_some(()));
        assert!(
            ok.is_some(),
            "the app committed only {} rows; events {:?}\nstderr:\n{}",
            self.committed().len(),
            self.events(),
            self.stderr()
        );
    }

    fn wait_event(&self, event: &str) {
        let ok = wait_for(PATIENCE, || {
            self.events().iter().any(|e| e == event).then_some(())
        });
        assert!(
            ok.is_some(),
            "event {event:?} never came; events {:?}\nstderr:\n{}",
            self.events(),
            self.stderr()
        );
    }

    /// Restores the replica into a new file with `litevisor restore`; returns (count, max id).
    fn restored(&self) -> (i64, i64) {
        let out = self.file(&format!("restored-{}.db", rand_suffix()));
        let output = Command::new(BIN)
            .arg("restore")
            .arg("-o")
            .arg(&out)
            .arg(format!("file://{}", self.replica().display()))
            .output()
            .expect("run litevisor restore");
        assert!(
            output.status.success(),
            "restore failed: {}\nlitevisor stderr:\n{}",
            String::from_utf8_lossy(&output.stderr),
            self.stderr()
        );
        assert_eq!(sql(&out, "pragma integrity_check"), "ok");
        count_and_max(&out)
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn sql(db: &Path, query: &str) -> String {
    let output = support::run_ok(
        &format!("sqlite3 {query:?}"),
        Command::new("sqlite3")
            .args(["-cmd", ".timeout 10000"])
            .arg(db)
            .arg(query),
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn count_and_max(db: &Path) -> (i64, i64) {
    let text = sql(db, "select count(*) || ' ' || coalesce(max(id), 0) from t");
    let mut parts = text.split(' ').map(|p| p.parse::<i64>().expect("number"));
    (parts.next().expect("count"), parts.next().expect("max"))
}

/// SIGTERM while the app writes as fast as it can (so the stop lands in the middle of syncs): the
/// exit code is the app's, and the replica holds exactly what the app committed.
fn stop_while_writing(trap: bool, pid1: bool) {
    let env = format!(
        r#"LIMIT = "100000", THEN = "wait", TRAP = "{}""#,
        if trap { "1" } else { "" }
    );
    let db = Db::new("", &env);
    let mut lv = db.start(pid1);
    db.wait_committed(60);
    lv.signal(libc::SIGTERM);
    let code = lv.wait(STOP_LIMIT);
    let log = db.stderr();
    assert_eq!(
        code,
        if trap { 3 } else { 143 },
        "exit code; stderr:\n{log}"
    );
    assert!(log.contains("final sync done"), "stderr:\n{log}");
    assert!(!alive(lv.pid));
    // The local database is the truth about what was committed; the replica must hold all of it.
    let local = count_and_max(&db.file("app.db"));
    let committed = db.committed();
    let reported_max = committed.iter().copied().max().unwrap_or(0);
    assert!(
        local.1 >= reported_max && local.0 >= committed.len() as i64,
        "the app reported {} rows up to {reported_max}, the database has {local:?}",
        committed.len()
    );
    assert_eq!(
        db.restored(),
        local,
        "replica differs from the database; stderr:\n{log}"
    );
}

#[test]
fn sigterm_trapped_exit_code_and_every_committed_row_replicated() {
    stop_while_writing(true, false);
}

#[test]
fn sigterm_killed_app_gives_143_and_every_committed_row_replicated() {
    stop_while_writing(false, false);
}

#[test]
fn as_pid1_sigterm_keeps_every_committed_row() {
    stop_while_writing(true, true);
}

/// SIGTERM twice, 100 ms apart, while the app takes half a second to stop (GNU `timeout` does
/// this; so does a signal sent to a group and to its leader): the app keeps its grace and its own
/// exit code, and the final sync carries every row the database kept.
#[test]
fn a_repeated_sigterm_costs_neither_the_apps_exit_code_nor_the_final_sync() {
    for pid1 in [false, true] {
        let db = Db::new("", r#"LIMIT = "100000", THEN = "wait", SLOW = "1""#);
        let mut lv = db.start(pid1);
        db.wait_committed(30);
        lv.signal(libc::SIGTERM);
        wait_for(PATIENCE, || {
            db.stderr().contains("SIGTERM received").then_some(())
        })
        .expect("the first SIGTERM was read");
        std::thread::sleep(Duration::from_millis(100));
        lv.signal(libc::SIGTERM);
        let code = lv.wait(STOP_LIMIT);
        let log = db.stderr();
        assert_eq!(
            code, 5,
            "pid1={pid1}: the app's own exit code; stderr:\n{log}"
        );
        assert!(log.contains("SIGTERM again"), "pid1={pid1}: stderr:\n{log}");
        assert!(
            !log.contains("FINAL SYNC FAILED"),
            "pid1={pid1}: stderr:\n{log}"
        );
        assert!(
            log.contains("final sync done"),
            "pid1={pid1}: stderr:\n{log}"
        );
        let local = count_and_max(&db.file("app.db"));
        assert_eq!(db.restored(), local, "pid1={pid1}: stderr:\n{log}");
    }
}

/// A second Ctrl-C typed on litevisor's terminal cuts the services' grace short (a person wants
/// out now), but the databases' final sync still runs.
#[test]
fn a_second_ctrl_c_on_the_terminal_kills_the_services_but_the_final_sync_runs() {
    use std::io::Write;
    let db = Db::new("", r#"LIMIT = "100000", THEN = "wait", IGNORE = "1""#);
    db.set_timeouts("60s", "90s");
    let line = format!(
        "exec {BIN} --config {} 2> {}",
        db.file("litevisor.toml").display(),
        db.file("stderr.log").display()
    );
    let mut script = Command::new("script")
        .args(["-q", "-e", "-c", &line, "/dev/null"])
        .env("SHELL", "/bin/sh")
        .env("LITEVISOR_LOG", "info")
        .env("LITEVISOR_SOCKET", db.socket())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn script(1)");
    let mut tty = script.stdin.take().expect("stdin");
    db.wait_committed(30);
    tty.write_all(b"\x03").expect("type ^C");
    tty.flush().expect("flush");
    wait_for(PATIENCE, || {
        db.stderr().contains("stopping service").then_some(())
    })
    .expect("the first ^C started the stop");
    let second = std::time::Instant::now();
    tty.write_all(b"\x03").expect("type ^C");
    tty.flush().expect("flush");
    let status = wait_exit(&mut script, STOP_LIMIT);
    let log = db.stderr();
    assert!(
        second.elapsed() < Duration::from_secs(30),
        "the service kept its 60 s grace after the second ^C; stderr:\n{log}"
    );
    assert!(log.contains("Ctrl-C again"), "stderr:\n{log}");
    assert!(log.contains("final sync done"), "stderr:\n{log}");
    assert!(!log.contains("FINAL SYNC FAILED"), "stderr:\n{log}");
    assert_eq!(
        status.code(),
        Some(137),
        "the main service was killed; stderr:\n{log}"
    );
    let local = count_and_max(&db.file("app.db"));
    assert_eq!(db.restored(), local, "stderr:\n{log}");
}

/// A unit that panics (a test-only hook of debug builds) is contained: the panic is logged, and
/// the stop still runs every database's final sync. A replicator that panics is taken over by a
/// fresh unit that adopts its engine; a service that panics stops the container (exit 1).
#[test]
fn a_panicking_unit_never_costs_the_final_sync() {
    /// What panics where, whether the test stops litevisor, and the exit code it must give.
    type Case = (&'static str, fn(&Db) -> String, bool, i32);
    let replicate = |db: &Db| format!("stop:replicate:{}", db.file("app.db").display());
    let cases: [Case; 3] = [
        ("replicator panics at its stop", replicate, true, 3),
        (
            "service panics at its stop",
            |_| "stop:app".to_owned(),
            true,
            1,
        ),
        (
            "service panics while running",
            |_| "ready:app".to_owned(),
            false,
            1,
        ),
    ];
    for (what, point, stop, want) in cases {
        let db = Db::new("", r#"LIMIT = "100000", THEN = "wait", TRAP = "1""#);
        let mut lv = db.start_with(false, &[("LITEVISOR_TEST_PANIC", &point(&db))]);
        if stop {
            db.wait_committed(30);
            lv.signal(libc::SIGTERM);
        }
        let code = lv.wait(STOP_LIMIT);
        let log = db.stderr();
        assert_eq!(code, want, "{what}: exit code; stderr:\n{log}");
        assert!(
            log.contains("panicked (injected panic"),
            "{what}: stderr:\n{log}"
        );
        assert!(log.contains("final sync done"), "{what}: stderr:\n{log}");
        assert!(!log.contains("FINAL SYNC FAILED"), "{what}: stderr:\n{log}");
        assert!(!alive(lv.pid));
        // (Killed at once, the app may not even have created its table.)
        let has_table = || {
            sql(
                &db.file("app.db"),
                "select count(*) from sqlite_schema where name = 't'",
            ) == "1"
        };
        if db.file("app.db").exists() && has_table() {
            let local = count_and_max(&db.file("app.db"));
            assert_eq!(db.restored(), local, "{what}: stderr:\n{log}");
        }
    }
}

#[test]
fn restores_before_the_app_starts_unless_policy_never() {
    // Run 1: the main service writes 40 rows and exits 0 at once. The database starts with 24 MB
    // of other data so that a restore takes far longer than the app needs to look (an app not
    // held back until the restore is done would see no rows).
    let db = Db::new("", r#"LIMIT = "40", THEN = "exit""#);
    db.add_big_data(24);
    db.run_to_exit();
    assert_eq!(db.events().first().map(String::as_str), Some("first=none"));
    assert_eq!(db.restored(), (40, 40), "stderr:\n{}", db.stderr());

    // Run 2: the volume is lost (database, WAL and litevisor's state); the replica has the data.
    // The app's first look at the database must already see the 40 rows.
    for f in ["app.db", "app.db-wal", "app.db-shm", "events"] {
        let _ = std::fs::remove_file(db.file(f));
    }
    std::fs::remove_dir_all(db.file(".app.db-litestream")).expect("remove meta dir");
    let log = db.run_to_exit();
    assert_eq!(
        db.events().first().map(String::as_str),
        Some("first=40"),
        "the app started before the restore; stderr:\n{log}"
    );
    assert!(log.contains("restored from"), "stderr:\n{log}");
    assert_eq!(db.restored(), (80, 80), "stderr:\n{log}");

    // Run 3: restore = "never" leaves a missing database missing.
    let never = Db::new(r#"restore = "never""#, r#"LIMIT = "1", THEN = "exit""#);
    std::fs::create_dir_all(never.replica()).expect("mkdir");
    copy_dir(&db.replica(), &never.replica());
    never.run_to_exit();
    assert_eq!(
        never.events().first().map(String::as_str),
        Some("first=none"),
        "restore = \"never\" restored; stderr:\n{}",
        never.stderr()
    );
}

#[test]
fn a_stop_during_the_restore_never_starts_the_app() {
    let db = Db::new("", r#"LIMIT = "1", THEN = "exit""#);
    db.add_big_data(48);
    db.run_to_exit();
    for f in ["app.db", "app.db-wal", "app.db-shm", "events"] {
        let _ = std::fs::remove_file(db.file(f));
    }
    std::fs::remove_dir_all(db.file(".app.db-litestream")).expect("remove meta dir");

    let mut lv = db.start(false);
    let restoring = wait_for(PATIENCE, || {
        db.stderr().contains("restoring from").then_some(())
    });
    assert!(restoring.is_some(), "stderr:\n{}", db.stderr());
    lv.signal(libc::SIGTERM);
    let code = lv.wait(STOP_LIMIT);
    let log = db.stderr();
    assert_eq!(code, 0, "stderr:\n{log}");
    assert!(
        db.events().is_empty() && !log.contains("started (pid"),
        "the app ran although the start-up was stopped; stderr:\n{log}"
    );
    assert!(!log.contains("replicating to"), "stderr:\n{log}");
    assert!(log.contains("restore abandoned"), "stderr:\n{log}");
}

#[test]
fn a_database_that_cannot_be_replicated_fails_the_start_up_naming_it() {
    let db = Db::new("", r#"LIMIT = "3", THEN = "wait""#);
    let mut first = db.start(false);
    db.wait_event("done");
    // A second supervisor of the same database (its own socket and logs): the replicator's lock
    // refuses it, so start-up fails before its app runs.
    let other = tempfile::tempdir().expect("tempdir");
    let out = Command::new(BIN)
        .arg("--config")
        .arg(db.file("litevisor.toml"))
        .env("LITEVISOR_SOCKET", other.path().join("lv.sock"))
        .env("LITEVISOR_LOG", "info")
        .stdin(Stdio::null())
        .output()
        .expect("run a second litevisor");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr:\n{err}");
    let path = db.file("app.db").display().to_string();
    assert!(
        err.contains(&format!("database {path}: cannot replicate")),
        "stderr:\n{err}"
    );
    assert!(!err.contains("started (pid"), "stderr:\n{err}");
    assert_eq!(
        db.events()
            .iter()
            .filter(|e| e.starts_with("first="))
            .count(),
        1,
        "a second app ran"
    );
    first.signal(libc::SIGTERM);
    assert_eq!(first.wait(STOP_LIMIT), 143, "stderr:\n{}", db.stderr());
    assert_eq!(db.restored(), (3, 3));
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            std::fs::create_dir_all(&target).expect("mkdir");
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

#[test]
fn a_failed_final_sync_turns_exit_0_into_74() {
    let db = Db::new("", r#"LIMIT = "20", THEN = "exit""#);
    // The app stops after its first row until the replica is broken.
    std::fs::write(db.file("pause"), "").expect("pause");
    let mut lv = db.start(false);
    db.wait_committed(1);
    // Let the first row reach the replica, then make L0 unwritable: a regular file where the
    // level directory was (chmod would not stop root).
    let l0 = db.replica().join("ltx").join("0");
    let synced = wait_for(PATIENCE, || {
        std::fs::read_dir(&l0)
            .ok()
            .and_then(|d| d.flatten().next())
            .map(|_| ())
    });
    assert!(
        synced.is_some(),
        "nothing reached the replica; stderr:\n{}",
        db.stderr()
    );
    std::fs::rename(&l0, db.replica().join("ltx").join("0.moved")).expect("move L0 away");
    std::fs::write(&l0, "not a directory").expect("block L0");
    std::fs::remove_file(db.file("pause")).expect("resume");
    let code = lv.wait(STOP_LIMIT);
    let log = db.stderr();
    assert_eq!(code, 74, "stderr:\n{log}");
    assert!(log.contains("FINAL SYNC FAILED"), "stderr:\n{log}");
}

#[test]
fn a_nonzero_main_code_is_kept_when_the_final_sync_fails() {
    let db = Db::new("", r#"LIMIT = "5", THEN = "wait", TRAP = "1""#);
    let mut lv = db.start(false);
    db.wait_event("done");
    let l0 = db.replica().join("ltx").join("0");
    std::fs::rename(&l0, db.replica().join("ltx").join("0.moved")).expect("move L0 away");
    std::fs::write(&l0, "not a directory").expect("block L0");
    // One more commit that cannot reach the replica.
    sql(&db.file("app.db"), "insert into t(v) values('late')");
    lv.signal(libc::SIGTERM);
    let code = lv.wait(STOP_LIMIT);
    let log = db.stderr();
    assert_eq!(code, 3, "stderr:\n{log}");
    assert!(log.contains("FINAL SYNC FAILED"), "stderr:\n{log}");
}

fn status(db: &Db, json: bool) -> (i32, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.arg("status").env("LITEVISOR_SOCKET", db.socket());
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output().expect("run litevisor status");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn status_shows_the_services_and_the_database_lag() {
    let db = Db::new("", r#"LIMIT = "25", THEN = "wait""#);
    let mut lv = db.start(false);
    db.wait_event("done");
    let path = db.file("app.db").display().to_string();
    // Once the last commit is synced and uploaded the lag is 0 and the replica is at the local TXID.
    let json = wait_for(PATIENCE, || {
        let (code, out, _) = status(&db, true);
        (code == 0 && out.contains("\"lag\":0") && !out.contains("\"txid\":\"0000000000000000\""))
            .then_some(out)
    });
    let Some(json) = json else {
        panic!(
            "status never showed lag 0: {:?}\nstderr:\n{}",
            status(&db, true),
            db.stderr()
        );
    };
    assert!(json.contains(&format!("\"path\":\"{path}\"")), "{json}");
    assert!(json.contains("\"state\":\"replicating\""), "{json}");
    assert!(json.contains("\"name\":\"app\""), "{json}");
    assert!(json.contains("\"last_upload\":\"20"), "{json}");
    let (code, text, _) = status(&db, false);
    assert_eq!(code, 0);
    assert!(
        text.contains(&path) && text.contains("lag             0 txid(s)"),
        "{text}"
    );
    assert!(
        text.contains("app (main)") && text.contains("running"),
        "{text}"
    );
    assert!(
        text.contains(&format!("file://{}", db.replica().display())),
        "{text}"
    );

    lv.signal(libc::SIGTERM);
    assert_eq!(lv.wait(STOP_LIMIT), 143, "stderr:\n{}", db.stderr());
    assert!(!db.socket().exists(), "the socket outlived litevisor");
    let (code, out, err) = status(&db, false);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("no litevisor is listening"), "{err}");
}

/// A signal forwarded the moment a service's first output line appears reaches it. (The process
/// group is recorded by the spawning thread before the service's task resumes; the old window, up
/// to that task's next poll, is too narrow to hit reliably from here, so this checks the behaviour
/// across ten fresh starts rather than the race itself.)
#[test]
fn a_signal_right_after_the_start_reaches_the_service() {
    for round in 0..10 {
        let dir = tempfile::tempdir().expect("tempdir");
        let app = dir.path().join("app.sh");
        std::fs::write(
            &app,
            "#!/bin/sh\ntrap 'echo got-usr1; exit 0' USR1\necho up\nwhile :; do sleep 0.01; done\n",
        )
        .expect("write");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&app, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let config = dir.path().join("litevisor.toml");
        std::fs::write(
            &config,
            format!(
                "[services.app]\nmain = true\ncommand = [\"{}\"]\n",
                app.display()
            ),
        )
        .expect("config");
        let stdout = dir.path().join("stdout.log");
        let mut child = Command::new(BIN)
            .arg("--config")
            .arg(&config)
            .env("LITEVISOR_SOCKET", dir.path().join("lv.sock"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).expect("stdout"))
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        let up = wait_for(PATIENCE, || {
            std::fs::read_to_string(&stdout)
                .ok()
                .filter(|t| t.contains("up"))
                .map(|_| ())
        });
        assert!(up.is_some(), "round {round}: the service never started");
        // SAFETY: kill has no memory-safety requirements.
        unsafe { libc::kill(child.id() as i32, libc::SIGUSR1) };
        let status = wait_exit(&mut child, Duration::from_secs(30));
        let out = std::fs::read_to_string(&stdout).unwrap_or_default();
        assert_eq!(status.code(), Some(0), "round {round}: stdout:\n{out}");
        assert!(out.contains("got-usr1"), "round {round}: stdout:\n{out}");
    }
}

/// An S3 replica configured as a table with its own keys: the database replicates there, is
/// restored from there before the app starts, and the secret never shows in the logs or the status.
/// (moto's signature checking rejects every ListObjectsV2 with a `/` in its prefix, even boto3's,
/// so the server here accepts any keys; the signing of config keys is tested in s3_auth.)
#[test]
fn s3_replica_with_keys_from_the_config() {
    let server = s3_server::S3Server::start();
    let (id, secret) = (
        "AKIDLITEVISORTEST".to_owned(),
        "s3cr3t/with+chars-NOT-TO-BE-SHOWN".to_owned(),
    );
    server.create_bucket("lv-db");
    let replica = format!(
        r#"{{ type = "s3", bucket = "lv-db", path = "app", endpoint = "{}", access_key_id = "{id}", secret_access_key = "{secret}" }}"#,
        server.endpoint
    );
    let db = Db::with_replica(Some(&replica), "", r#"LIMIT = "20", THEN = "wait""#);
    let mut lv = db.start(false);
    db.wait_event("done");
    let shown = wait_for(PATIENCE, || {
        let (_, out, _) = status(&db, true);
        out.contains("\"lag\":0").then_some(out)
    })
    .expect("status never showed lag 0");
    assert!(shown.contains("\"replica\":\"s3://lv-db/app\""), "{shown}");
    assert!(!shown.contains(&secret), "the secret is in the status");
    lv.signal(libc::SIGTERM);
    assert_eq!(lv.wait(STOP_LIMIT), 143, "stderr:\n{}", db.stderr());
    assert!(!db.stderr().contains(&secret), "the secret is in the log");

    // Lose the volume: the next start restores from S3 before the app looks.
    for f in ["app.db", "app.db-wal", "app.db-shm", "events"] {
        let _ = std::fs::remove_file(db.file(f));
    }
    std::fs::remove_dir_all(db.file(".app.db-litestream")).expect("remove meta dir");
    let mut lv = db.start(false);
    db.wait_event("done");
    lv.signal(libc::SIGTERM);
    assert_eq!(lv.wait(STOP_LIMIT), 143, "stderr:\n{}", db.stderr());
    assert_eq!(
        db.events().first().map(String::as_str),
        Some("first=20"),
        "stderr:\n{}",
        db.stderr()
    );

    let out = db.file("from-s3.db");
    support::run_ok(
        "litevisor restore",
        Command::new(BIN)
            .args(["restore", "-o"])
            .arg(&out)
            .arg(format!("s3://lv-db/app?endpoint={}", server.endpoint))
            .env("AWS_ACCESS_KEY_ID", &id)
            .env("AWS_SECRET_ACCESS_KEY", &secret)
            .env_remove("AWS_CA_BUNDLE"),
    );
    assert_eq!(count_and_max(&out), (40, 40));
}

/// Without a main service the container stops when every service has ended; the databases do not
/// keep it up, and they still get their final sync.
#[test]
fn services_ending_on_their_own_stop_the_container_after_a_final_sync() {
    let db = Db::new("", r#"LIMIT = "15", THEN = "exit""#);
    db.edit_config(|config| config.replace("main = true", "type = \"oneshot\""));
    let log = db.run_to_exit();
    assert!(log.contains("every service has ended"), "stderr:\n{log}");
    assert!(log.contains("final sync done"), "stderr:\n{log}");
    assert_eq!(db.restored(), (15, 15));
}

/// Databases alone (no services: a replication sidecar) replicate until a stop signal, then exit 0
/// after the final sync.
#[test]
fn databases_alone_replicate_until_a_stop_signal() {
    let db = Db::new("", r#"LIMIT = "1", THEN = "exit""#);
    db.edit_config(|config| {
        let cut = config.find("[services.app]").expect("service table");
        config[..cut].to_owned()
    });
    let mut lv = db.start(false);
    let file = db.file("app.db");
    sql(
        &file,
        "pragma journal_mode=wal; create table t(id integer primary key, v text not null)",
    );
    for i in 1..=30 {
        sql(&file, &format!("insert into t(v) values('row {i}')"));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        lv.child.try_wait().expect("try_wait").is_none(),
        "litevisor exited on its own"
    );
    lv.signal(libc::SIGTERM);
    assert_eq!(lv.wait(STOP_LIMIT), 0, "stderr:\n{}", db.stderr());
    assert_eq!(db.restored(), (30, 30));
}

/// An app that ignores SIGTERM with a `stop_grace` longer than the whole `shutdown_timeout` is
/// SIGKILLed early enough to leave the final sync its share of the deadline: it is killed (137), and
/// still every row it committed reaches the replica.
#[test]
fn an_app_ignoring_sigterm_cannot_eat_the_final_sync_time() {
    let db = Db::new("", r#"LIMIT = "30", THEN = "wait", IGNORE = "1""#);
    db.set_timeouts("1m", "6s");
    let mut lv = db.start(false);
    db.wait_event("done");
    let stop = std::time::Instant::now();
    lv.signal(libc::SIGTERM);
    let code = lv.wait(STOP_LIMIT);
    let took = stop.elapsed();
    let log = db.stderr();
    assert_eq!(code, 137, "stderr:\n{log}");
    assert!(log.contains("final sync done"), "stderr:\n{log}");
    assert!(!log.contains("FINAL SYNC FAILED"), "stderr:\n{log}");
    assert!(
        took < Duration::from_secs(6),
        "took {took:?}; stderr:\n{log}"
    );
    assert_eq!(db.restored(), (30, 30));
}
