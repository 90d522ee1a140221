//! One replicator per database: a second `litevisor replicate` on the same database (another process,
//! another container sharing the volume) is refused at once with a message naming the database and
//! the holder, while the first keeps replicating; the lock dies with its holder, even on SIGKILL.

mod support;

mod replicate_support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use replicate_support::*;

/// Runs `litevisor replicate ARGS DB URL` expecting it to exit on its own within `limit`.
fn run_second(db: &Path, replica: &Path, extra: &[&str], limit: Duration) -> (i32, String) {
    let mut cmd = Command::new(LITEVISOR);
    cmd.arg("replicate").args(extra).arg(db).arg(url(replica));
    let mut second = Replicator::spawn(cmd, db.with_extension("second.log"));
    let status = second.wait_exit(limit);
    (status.code().unwrap_or(-1), second.log_text())
}

fn assert_refusal(code: i32, text: &str, db: &Path, holder_pid: u32) {
    assert_ne!(code, 0, "a second replicator must fail: {text}");
    for part in [
        format!(
            "database {} is already being replicated by another litevisor",
            db.display()
        ),
        format!("(pid {holder_pid} on host "),
        "litevisor.lock".to_string(),
        "two replicators would fork the replica's history".to_string(),
    ] {
        assert!(text.contains(&part), "{part:?} missing from:\n{text}");
    }
}

/// Waits until `r` uploaded past TXID `txid`.
fn wait_upload_past(r: &Replicator, what: &str, replica: &Path, txid: u64) {
    wait_for(r, what, Duration::from_secs(30), || max_l0(replica) > txid);
}

/// Stops `r`, which must exit 0; the replica then restores (into `out`) to `db`'s rows.
fn stop_and_restore(r: Replicator, what: &str, db: &Path, replica: &Path, out: &Path) {
    let status = r.stop();
    assert!(status.success(), "{what} exit {status:?}");
    assert_same_rows(db, &litevisor_restore(replica, out));
}

#[test]
fn second_replicator_is_refused_and_the_first_keeps_working() {
    let (dir, db, replica, mut c) = scene();
    insert(&mut c, 0..20, 5);

    let mut first = Replicator::litevisor(&db, &replica, &[]);
    wait_upload_past(&first, "the first sync", &replica, 0);
    let first_pid = first.child.id();

    // A daemon and a -once run are both refused, quickly, naming the holder.
    let (code, text) = run_second(&db, &replica, &[], Duration::from_secs(10));
    assert_refusal(code, &text, &db, first_pid);
    let (code, text) = run_second(&db, &replica, &["-once"], Duration::from_secs(10));
    assert_refusal(code, &text, &db, first_pid);

    // The first one was not disturbed: it still replicates new commits.
    let before = max_l0(&replica);
    insert(&mut c, 20..60, 4);
    wait_upload_past(&first, "a sync after the refusals", &replica, before);
    assert!(first.alive(), "the first replicator must still run");
    let r1 = dir.path().join("r1.db");
    stop_and_restore(first, "first replicator", &db, &replica, &r1);

    // Once it is gone the database can be replicated again, continuing the same history.
    insert(&mut c, 60..80, 10);
    let next = Replicator::litevisor(&db, &replica, &[]);
    let after_first = max_l0(&replica);
    wait_upload_past(&next, "the next replicator's sync", &replica, after_first);
    let r2 = dir.path().join("r2.db");
    stop_and_restore(next, "next replicator", &db, &replica, &r2);
    let l0 = replica_files(&replica, 0);
    assert!(
        l0.windows(2).all(|w| w[1].0 == w[0].1 + 1),
        "one contiguous history: {l0:?}"
    );
}

#[test]
fn lock_is_held_before_the_database_exists_and_released_by_sigkill() {
    let (dir, db, replica) = paths("later.db");

    // Both would wait for the database to appear; only one may.
    let mut first = Replicator::litevisor(&db, &replica, &[]);
    let lock = dir
        .path()
        .join(".later.db-litestream")
        .join("litevisor.lock");
    wait_for(&first, "the lock file", Duration::from_secs(30), || {
        std::fs::read_to_string(&lock).is_ok_and(|s| s.starts_with(&first.child.id().to_string()))
    });
    let (code, text) = run_second(&db, &replica, &[], Duration::from_secs(10));
    assert_refusal(code, &text, &db, first.child.id());
    assert!(first.alive());

    // A crash (SIGKILL: no cleanup at all) must not leave a stale lock behind.
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let mut c = app(&db);
    create_table(&c);
    insert(&mut c, 0..10, 5);
    let next = Replicator::litevisor(&db, &replica, &[]);
    wait_upload_past(&next, "replication after the crash", &replica, 0);
    let r = dir.path().join("r.db");
    stop_and_restore(next, "the replicator after the crash", &db, &replica, &r);
}

/// Like a second container on the same volume: the holder runs in its own PID and UTS namespaces
/// (PID 1 there, its own host name); the refusal outside names that pid and host.
#[test]
fn the_holder_in_another_pid_and_uts_namespace_is_named_by_its_host() {
    let (dir, db, replica, mut c) = scene();
    insert(&mut c, 0..10, 5);

    let log = dir.path().join("holder.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut holder = Command::new("unshare")
        .args(["--pid", "--uts", "--fork", "--kill-child", "sh", "-c"])
        .arg("hostname lv-ctr-1 && exec \"$0\" replicate -monitor-interval 100ms \"$1\" \"$2\"")
        .arg(LITEVISOR)
        .arg(&db)
        .arg(url(&replica))
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("unshare (util-linux) is needed");
    let deadline = Instant::now() + Duration::from_secs(30);
    while max_l0(&replica) < 1 {
        assert!(
            Instant::now() < deadline && holder.try_wait().unwrap().is_none(),
            "the namespaced holder did not replicate: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, text) = run_second(&db, &replica, &["-once"], Duration::from_secs(10));
    assert_ne!(code, 0, "{text}");
    assert!(
        text.contains("(pid 1 on host lv-ctr-1, lock "),
        "the holder is PID 1 of its namespace on host lv-ctr-1: {text}"
    );
    // --kill-child: the namespace's PID 1 gets SIGKILL with unshare; the lock goes with it.
    holder.kill().unwrap();
    holder.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, text) = run_second(&db, &replica, &["-once"], Duration::from_secs(30));
        if code == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline && text.contains("already being replicated"),
            "after the holder died: {text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(c);
}
