//! Reload and `[[databases]]`: an entry added by a reload is restored if needed and replicated, an
//! entry removed gets its final sync and leaves the status; `register` and `unregister`
//! (Litestream's commands) do the same at run time, under the supervisor and under `replicate`.
//! The real Litestream restores the replicas to check them.

mod support;

mod supervisor_support;

use std::path::Path;
use std::process::Command;

use supervisor_support::*;

/// A service that uses no database, so adding or removing one leaves it unchanged.
const BASE: &str = r#"
[services.app]
command = ["sh", "-c", "echo start app >> $EV; exec sleep 1000"]
databases = []
"#;

fn with_db(name: &str, extra: &str) -> String {
    format!(
        "{BASE}\n[[databases]]\npath = \"$DIR/{name}.db\"\nreplica = \"file://$DIR/{name}-replica\"\n{extra}\n"
    )
}

fn reload(s: &Setup) -> String {
    let out = s.cli(&["reload"]);
    assert!(out.status.success(), "{out:?}\n{}", s.stderr());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The databases of `litevisor status --json`: (path, state, lag).
fn databases(s: &Setup) -> Vec<(String, String, i64)> {
    s.status("databases")
        .iter()
        .map(|d| {
            (
                d["path"].as_str().unwrap_or_default().to_owned(),
                d["state"].as_str().unwrap_or_default().to_owned(),
                d["lag"].as_i64().unwrap_or(-1),
            )
        })
        .collect()
}

fn rows(db: &Path) -> i64 {
    let c = rusqlite::Connection::open(db).expect("open");
    c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .expect("count")
}

fn insert(db: &Path, from: i64, n: i64) {
    let c = rusqlite::Connection::open(db).expect("open");
    c.busy_timeout(std::time::Duration::from_secs(10))
        .expect("busy");
    c.execute_batch(
        "PRAGMA journal_mode=WAL; CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v TEXT)",
    )
    .expect("schema");
    for i in from..from + n {
        c.execute("INSERT INTO t(id, v) VALUES (?1, hex(randomblob(32)))", [i])
            .expect("insert");
    }
}

/// The real Litestream restores `replica` to `out`.
fn litestream_restore(replica: &Path, out: &Path) {
    let result = Command::new("litestream")
        .args(["restore", "-o"])
        .arg(out)
        .arg(format!("file://{}", replica.display()))
        .env_remove("AWS_CA_BUNDLE")
        .output()
        .expect("run litestream");
    assert!(result.status.success(), "litestream restore: {result:?}");
}

fn start(s: &Setup) -> Lv {
    let lv = s.start_with_socket(Mode::Direct);
    s.wait_event("start app");
    lv
}

#[test]
fn a_database_added_by_reload_is_replicated_and_a_removed_one_gets_its_final_sync() {
    let s = Setup::new(BASE);
    let db = s.file("a.db");
    insert(&db, 0, 50);
    let mut lv = start(&s);
    let app = children_of(lv.pid);
    assert!(databases(&s).is_empty());

    // Long sync interval: after the first sync, only the final sync uploads.
    s.write("litevisor.toml", &with_db("a", "sync_interval = \"1h\""));
    let answer = reload(&s);
    assert!(answer.contains("database added"), "{answer}");
    let replicated = wait_for(PATIENCE, || {
        databases(&s)
            .iter()
            .any(|(p, state, lag)| p.ends_with("a.db") && state == "replicating" && *lag == 0)
            .then_some(())
    });
    assert!(replicated.is_some(), "{:?}\n{}", databases(&s), s.stderr());
    litestream_restore(&s.file("a-replica"), &s.file("first.db"));
    assert_eq!(rows(&s.file("first.db")), 50);

    // Rows written now reach the replica only through the final sync of the removal.
    insert(&db, 50, 30);
    s.write("litevisor.toml", BASE);
    let answer = reload(&s);
    assert!(answer.contains("database removed (final sync)"), "{answer}");
    let gone = wait_for(PATIENCE, || databases(&s).is_empty().then_some(()));
    assert!(gone.is_some(), "{:?}", databases(&s));
    let logged = wait_for(PATIENCE, || {
        s.stderr().contains("final sync done").then_some(())
    });
    assert!(logged.is_some(), "{}", s.stderr());
    litestream_restore(&s.file("a-replica"), &s.file("final.db"));
    assert_eq!(rows(&s.file("final.db")), 80);
    // The service was not touched by either reload.
    assert_eq!(children_of(lv.pid), app);

    lv.stop(libc::SIGTERM, 0, &s);
}

#[test]
fn a_database_added_by_reload_is_restored_when_missing() {
    let s = Setup::new(BASE);
    // A replica made by a first litevisor run of the same entry.
    let db = s.file("b.db");
    insert(&db, 0, 40);
    s.write("litevisor.toml", &with_db("b", ""));
    let mut first = start(&s);
    let synced = wait_for(PATIENCE, || {
        databases(&s)
            .iter()
            .any(|(_, state, lag)| state == "replicating" && *lag == 0)
            .then_some(())
    });
    assert!(synced.is_some(), "{}", s.stderr());
    first.signal(libc::SIGTERM);
    assert_eq!(first.wait(PATIENCE), 0);
    for f in ["b.db", "b.db-wal", "b.db-shm"] {
        let _ = std::fs::remove_file(s.file(f));
    }
    std::fs::remove_file(s.events_path()).expect("events");

    s.write("litevisor.toml", BASE);
    let mut lv = start(&s);
    s.write("litevisor.toml", &with_db("b", ""));
    reload(&s);
    let replicated = wait_for(PATIENCE, || {
        databases(&s)
            .iter()
            .any(|(_, state, _)| state == "replicating")
            .then_some(())
    });
    assert!(replicated.is_some(), "{:?}\n{}", databases(&s), s.stderr());
    assert_eq!(rows(&db), 40, "restored from its replica");
    lv.stop(libc::SIGTERM, 0, &s);
}

/// Runs `litevisor ARGS` against `sock`.
fn lv_at(sock: &Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env("LITEVISOR_SOCKET", sock)
        .output()
        .expect("run litevisor")
}

fn stdout_of(out: &std::process::Output) -> String {
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `register` then `unregister`, as Litestream's commands, against a running litevisor on `sock`:
/// registered, replicated, restored by the real Litestream; unregistered after a final sync that
/// carries the last rows; litevisor still running after.
fn register_and_unregister(dir: &Path, sock: &Path, lv: &mut Lv) {
    let db = dir.join("reg.db");
    let replica = dir.join("reg-replica");
    insert(&db, 0, 20);
    let url = format!("file://{}", replica.display());
    let db_arg = db.display().to_string();
    let out = stdout_of(&lv_at(sock, &["register", "-replica", &url, &db_arg]));
    assert_eq!(
        out,
        format!(
            "status: registered\ndb_path: {}\nreplica: {url}\nsocket: {}\n",
            db.display(),
            sock.display()
        )
    );
    let again = stdout_of(&lv_at(sock, &["register", "-replica", &url, &db_arg]));
    assert!(again.starts_with("status: already registered\n"), "{again}");
    let replicated = wait_for(PATIENCE, || {
        let out = lv_at(sock, &["status", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        v["databases"]
            .as_array()?
            .iter()
            .any(|d| d["path"] == db_arg.as_str() && d["state"] == "replicating" && d["lag"] == 0)
            .then_some(())
    });
    assert!(replicated.is_some());
    litestream_restore(&replica, &dir.join("reg-first.db"));
    assert_eq!(rows(&dir.join("reg-first.db")), 20);

    insert(&db, 20, 5);
    let out = stdout_of(&lv_at(sock, &["unregister", "-json", &db_arg]));
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["status"], "unregistered");
    assert_eq!(v["db_path"], db_arg.as_str());
    assert!(v["final_txid"].as_u64().is_some_and(|t| t >= 2), "{out}");
    // The answer came after the final sync: the replica has every row.
    litestream_restore(&replica, &dir.join("reg-final.db"));
    assert_eq!(rows(&dir.join("reg-final.db")), 25);

    let missing = lv_at(sock, &["unregister", &db_arg]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("unregister failed: database not found"),
        "{missing:?}"
    );
    let no_replica = lv_at(sock, &["register", &db_arg]);
    assert_eq!(no_replica.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&no_replica.stderr).contains("-replica is required"));
    assert!(
        lv.child.try_wait().expect("try_wait").is_none(),
        "litevisor ended"
    );
}

#[test]
fn register_and_unregister_under_the_supervisor() {
    let s = Setup::new(BASE);
    let mut lv = start(&s);
    let sock = s.file("control.sock");
    register_and_unregister(s.path(), &sock, &mut lv);
    lv.stop(libc::SIGTERM, 0, &s);
}

#[test]
fn register_and_unregister_under_replicate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("litestream.yml");
    std::fs::write(&config, "dbs: []\n").expect("config");
    let sock = dir.path().join("control.sock");
    let child = Command::new(BIN)
        .args(["replicate", "-config"])
        .arg(&config)
        .env("LITEVISOR_SOCKET", &sock)
        .env_remove("AWS_CA_BUNDLE")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("stderr.log")).expect("log"))
        .spawn()
        .expect("spawn");
    let pid = child.id() as i32;
    let mut lv = Lv { child, pid };
    let up = wait_for(PATIENCE, || sock.exists().then_some(()));
    assert!(up.is_some(), "no control socket");
    register_and_unregister(dir.path(), &sock, &mut lv);
    lv.signal(libc::SIGTERM);
    assert_eq!(lv.wait(PATIENCE), 0);
}
