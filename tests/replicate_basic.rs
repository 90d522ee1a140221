//! `litevisor replicate` against real SQLite and real Litestream 0.5.17 restores: every committed row
//! reaches the replica, -once, page sizes, grow/shrink, idle silence, a large database.

mod support;

mod replicate_support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use replicate_support::*;

#[test]
fn every_committed_row_survives_sigterm_and_litestream_restores_it() {
    let (dir, db, replica, mut c) = scene();
    insert(&mut c, 0..50, 10);

    let lv = Replicator::litevisor(&db, &replica, &[]);
    // The application keeps writing while litevisor syncs: many small and some large transactions.
    let writer = std::thread::spawn(move || {
        let start = Instant::now();
        let mut id = 50;
        while start.elapsed() < Duration::from_secs(3) {
            let per_tx = if id % 500 == 0 { 400 } else { 3 };
            insert(&mut c, id..id + per_tx as i64, per_tx);
            id += per_tx as i64;
        }
        c.execute_batch(
            "UPDATE t SET v = v || '-updated' WHERE id % 5 = 0; DELETE FROM t WHERE id % 7 = 3;",
        )
        .unwrap();
        id
    });
    let last = writer.join().unwrap();
    assert!(last > 200, "the writer made progress ({last})");
    let status = lv.stop();
    assert!(status.success(), "replicate exit status {status:?}");

    assert_litestream_restores(&db, &replica, dir.path());
    let own = litevisor_restore(&replica, &dir.path().join("own.db"));
    assert_same_rows(&db, &own);
    // TXIDs are contiguous from 1 on the replica's L0 and start with a full snapshot.
    let l0 = replica_files(&replica, 0);
    assert_eq!(l0.first(), Some(&(1, 1)));
    assert!(
        l0.windows(2).all(|w| w[1].0 == w[0].1 + 1),
        "contiguous L0: {l0:?}"
    );
    assert!(l0.iter().all(|(a, b)| a == b), "L0 files are T-T");
}

#[test]
fn once_syncs_then_exits_and_force_snapshot_writes_an_l9_snapshot() {
    let (dir, db, replica, mut c) = scene();
    insert(&mut c, 0..300, 50);

    once_ok(&db, &replica, &[]);
    assert_eq!(max_l0(&replica), 1);
    let (commit1, ..) = ltx_header(&l0_path(&replica, 1));

    insert(&mut c, 300..310, 5);
    once_ok(&db, &replica, &[]);
    assert_eq!(max_l0(&replica), 2);
    let (_, min, max, wal_offset, wal_size) = ltx_header(&l0_path(&replica, 2));
    assert_eq!((min, max), (2, 2));
    assert!(
        wal_offset > 32 && wal_size > 0,
        "incremental L0 continues in the WAL ({wal_offset}, {wal_size})"
    );
    let incremental_size = std::fs::metadata(l0_path(&replica, 2)).unwrap().len();

    // Nothing new: -once writes nothing.
    once_ok(&db, &replica, &[]);
    assert_eq!(max_l0(&replica), 2);

    // As Litestream's: no new L0, a snapshot of the whole database at the newest TXID in L9.
    once_ok(&db, &replica, &["-force-snapshot"]);
    assert_eq!(max_l0(&replica), 2);
    assert_eq!(replica_files(&replica, 9), [(1, 2)]);
    let snapshot = replica.join("ltx/9/0000000000000001-0000000000000002.ltx");
    let (commit3, ..) = ltx_header(&snapshot);
    assert!(commit3 >= commit1);
    let snapshot_size = std::fs::metadata(&snapshot).unwrap().len();
    assert!(
        snapshot_size > incremental_size,
        "snapshot {snapshot_size} vs incremental {incremental_size}"
    );

    assert_litestream_restores(&db, &replica, dir.path());
}

/// `-once -force-snapshot` and `-once -enforce-retention`, step by step on twin databases, one
/// replicated by REAL Litestream and one by litevisor: after each step both replicas hold the same
/// files (levels and TXID ranges), and Litestream restores litevisor's.
#[test]
fn force_snapshot_and_enforce_retention_leave_what_litestream_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let twins = ["litestream", "litevisor"].map(|tool| {
        let db = dir.path().join(format!("{tool}.db"));
        let replica = dir.path().join(format!("{tool}-replica"));
        let config = dir.path().join(format!("{tool}.yml"));
        std::fs::write(
            &config,
            format!(
                "snapshot:\n  retention: 2s\ndbs:\n  - path: {}\n    replica:\n      url: {}\n",
                db.display(),
                url(&replica)
            ),
        )
        .unwrap();
        let c = app(&db);
        create_table(&c);
        (tool, db, replica, config, c)
    });
    let mut twins = twins;
    let step = |twins: &mut [(&str, PathBuf, PathBuf, PathBuf, rusqlite::Connection)],
                flags: &[&str],
                rows: std::ops::Range<i64>| {
        for (tool, db, _, config, c) in twins.iter_mut() {
            if !rows.is_empty() {
                insert(c, rows.clone(), 10);
            }
            let bin = if *tool == "litestream" {
                "litestream"
            } else {
                LITEVISOR
            };
            support::run_ok(
                &format!("{tool} {flags:?} on {}", db.display()),
                std::process::Command::new(bin)
                    .env_remove("AWS_CA_BUNDLE")
                    .args(["replicate", "-once", "-config", config.to_str().unwrap()])
                    .args(flags),
            );
        }
        let listing = |replica: &Path| -> Vec<(u8, Vec<(u64, u64)>)> {
            [0, 1, 2, 3, 9]
                .map(|l| (l, replica_files(replica, l)))
                .into_iter()
                .filter(|(_, f)| !f.is_empty())
                .collect()
        };
        let theirs = listing(&twins[0].2);
        let ours = listing(&twins[1].2);
        assert_eq!(ours, theirs, "after {flags:?}");
        ours
    };
    step(&mut twins, &[], 0..100);
    let after = step(&mut twins, &["-force-snapshot"], 100..110);
    assert!(
        after.iter().any(|(l, f)| *l == 9 && f == &[(1, 2)]),
        "{after:?}"
    );
    // A forced snapshot is written again even when one covers the position (and dated now).
    let snapshot = twins[1]
        .2
        .join("ltx/9/0000000000000001-0000000000000002.ltx");
    let before = std::fs::metadata(&snapshot).unwrap().modified().unwrap();
    std::thread::sleep(Duration::from_millis(20));
    step(&mut twins, &["-force-snapshot"], 0..0);
    assert!(std::fs::metadata(&snapshot).unwrap().modified().unwrap() > before);
    step(&mut twins, &["-force-snapshot"], 110..120);
    // Both snapshots are younger than the 2 s retention: nothing goes.
    step(&mut twins, &["-enforce-retention"], 0..0);
    std::thread::sleep(Duration::from_millis(2500));
    let after = step(
        &mut twins,
        &["-force-snapshot", "-enforce-retention"],
        120..130,
    );
    assert!(
        after.iter().any(|(l, f)| *l == 9 && f == &[(1, 4)]),
        "the expired snapshots went, the new one stayed: {after:?}"
    );
    let restored = litestream_restore(&twins[1].2, &dir.path().join("out.db"));
    assert_same_rows(&twins[1].1, &restored);
}

#[test]
fn once_refuses_a_missing_database() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = once(
        &dir.path().join("nope.db"),
        &dir.path().join("replica"),
        &[],
    );
    assert_ne!(code, 0);
    assert!(out.contains("nope.db"), "{out}");
    assert!(
        !dir.path().join("nope.db").exists(),
        "litevisor never creates the user's database"
    );
}

#[test]
fn a_missing_database_directory_is_named_at_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("not-yet");
    let mut child = std::process::Command::new(LITEVISOR)
        .arg("replicate")
        .arg(missing.join("app.db"))
        .arg(url(&dir.path().join("replica")))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = support::wait_exit(&mut child, Duration::from_secs(30));
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    support::assert_contains(
        &err,
        format!(
            "the database's directory {} does not exist",
            missing.display()
        ),
    );
    assert!(
        !missing.exists(),
        "litevisor creates no directory of the user's"
    );
}

/// Voluntary + involuntary context switches of each thread of `pid`, by thread name.
fn switches(pid: u32) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        let n: u64 = field("voluntary_ctxt_switches:").parse().unwrap_or(0)
            + field("nonvoluntary_ctxt_switches:")
                .parse::<u64>()
                .unwrap_or(0);
        out.push((field("Name:"), n));
    }
    out.sort();
    out
}

#[test]
fn idle_database_produces_no_new_replica_files_and_no_wakeups() {
    let (dir, db, replica, mut c) = scene();
    insert(&mut c, 0..100, 10);
    let lv = Replicator::litevisor(&db, &replica, &[]);
    insert(&mut c, 100..110, 1);
    let newest_local = || {
        replica_files(&dir.path().join(".app.db-litestream"), 0)
            .last()
            .map_or(0, |f| f.1)
    };
    wait_for(
        &lv,
        "the replica holds every local L0",
        Duration::from_secs(30),
        || {
            let local = newest_local();
            local >= 1 && max_l0(&replica) == local
        },
    );
    std::thread::sleep(Duration::from_secs(2)); // let in-flight work settle
    let before = max_l0(&replica);
    let local_before = newest_local();
    // Compaction timers fire on wall-clock multiples of 30 s (when new data waits): measure in a
    // window that contains none, so the only allowed wake-ups are none at all.
    loop {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
            % 30.0;
        if (1.0..22.0).contains(&secs) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let pid = lv.child.id();
    let switches_before = switches(pid);
    std::thread::sleep(Duration::from_secs(5));
    let switches_after = switches(pid);
    assert_eq!(max_l0(&replica), before, "no L0 while nothing is written");
    assert_eq!(newest_local(), local_before, "no local L0 either");
    // Zero idle wake-ups: the threads sleep in poll/recv/sigwait with no timer armed.
    let woke: Vec<(String, u64)> = switches_after
        .iter()
        .map(|(name, n)| {
            let was = switches_before
                .iter()
                .find(|(m, _)| m == name)
                .map_or(0, |x| x.1);
            (name.clone(), n - was)
        })
        .collect();
    for (name, n) in &woke {
        // One spurious switch is tolerated (the kernel may count one for an unrelated reason); a
        // ticker of 1 s or faster would show at least 5.
        let limit = 1;
        assert!(
            *n <= limit,
            "thread {name} woke {n} times while idle: {woke:?}"
        );
    }
    // Reads by the application are not writes.
    for _ in 0..20 {
        let _: i64 = c
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
    }
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(max_l0(&replica), before, "reads do not cause syncs");
    assert!(lv.stop().success());
    assert_litestream_restores(&db, &replica, dir.path());
}

#[test]
fn sigterm_during_writes_keeps_everything_committed_before_it() {
    let (dir, db, replica, mut c) = scene();
    let lv = Replicator::litevisor(&db, &replica, &["-monitor-interval", "1s"]);
    let committed = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(-1));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (committed, stop) = (committed.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut id = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                insert(&mut c, id..id + 5, 5);
                committed.store(id + 4, std::sync::atomic::Ordering::SeqCst);
                id += 5;
            }
        })
    };
    std::thread::sleep(Duration::from_millis(1500));
    // Everything committed before the signal must be in the replica; what follows may or may not.
    let before_signal = committed.load(std::sync::atomic::Ordering::SeqCst);
    let status = lv.stop();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    writer.join().unwrap();
    assert!(status.success());
    assert!(before_signal > 0);
    let restored = litestream_restore(&replica, &dir.path().join("out.db"));
    assert_eq!(integrity(&restored), "ok");
    let got = rows(&restored);
    let all = rows(&db);
    assert!(
        got.len() as i64 > before_signal,
        "{} rows restored, {before_signal} committed before SIGTERM",
        got.len()
    );
    assert_eq!(
        &all[..got.len()],
        &got[..],
        "the restore is a prefix of the database's rows"
    );
}

#[test]
fn waits_for_a_database_that_does_not_exist_yet() {
    let (dir, db, replica) = paths("app.db");
    let lv = Replicator::litevisor(&db, &replica, &[]);
    std::thread::sleep(Duration::from_millis(500));
    assert!(!db.exists(), "litevisor never creates the database");
    let mut c = app(&db);
    create_table(&c);
    insert(&mut c, 0..100, 10);
    wait_first_upload(&lv, &replica);
    insert(&mut c, 100..200, 10);
    assert!(lv.stop().success());
    assert_litestream_restores(&db, &replica, dir.path());
}

/// An application creating its database makes an empty file first: litevisor leaves it alone
/// until the application has set it up, so the two never race to switch it to WAL mode (one of
/// them would fail at once with "database is locked", possibly the application).
#[test]
fn an_empty_database_file_is_left_to_the_application() {
    let (dir, db, replica) = paths("app.db");
    let lv = Replicator::litevisor(&db, &replica, &[]);
    std::fs::write(&db, b"").unwrap();
    // Absence of an action: give the watcher (which reacts within milliseconds) ample time.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        std::fs::metadata(&db).unwrap().len(),
        0,
        "litevisor wrote to the empty file"
    );
    assert!(
        !db.with_extension("db-wal").exists(),
        "litevisor opened the empty file"
    );
    let mut c = app(&db);
    create_table(&c);
    insert(&mut c, 0..50, 10);
    wait_first_upload(&lv, &replica);
    assert!(lv.stop().success());
    assert_litestream_restores(&db, &replica, dir.path());
}

#[test]
fn a_second_replicator_on_the_same_database_is_refused() {
    let (dir, db, replica, mut c) = scene();
    insert(&mut c, 0..10, 10);
    let lv = Replicator::litevisor(&db, &replica, &[]);
    wait_first_upload(&lv, &replica);
    let (code, out) = once(&db, &dir.path().join("other-replica"), &[]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("litevisor.lock"), "{out}");
    assert!(lv.stop().success());
}

#[test]
fn restore_if_db_not_exists_restores_then_continues_the_chain() {
    let (_dir, db, replica, mut c) = scene();
    insert(&mut c, 0..300, 30);
    once_ok(&db, &replica, &[]);
    insert(&mut c, 300..400, 30);
    once_ok(&db, &replica, &[]);
    let max = max_l0(&replica);
    drop(c);
    let want = rows(&db);

    // A new machine: no database, no meta directory.
    let fresh = tempfile::tempdir().unwrap();
    let db2 = fresh.path().join("app.db");
    let lv = Replicator::litevisor(&db2, &replica, &["-restore-if-db-not-exists"]);
    wait_until("restored database", Duration::from_secs(30), || {
        db2.exists()
    });
    std::thread::sleep(Duration::from_millis(300));
    let mut c2 = app(&db2);
    insert(&mut c2, 1000..1050, 10);
    assert!(lv.stop().success());
    assert!(rows(&db2).len() == want.len() + 50);
    // Numbering continued after the replica's newest L0 (Litestream #781), with a snapshot.
    let l0 = replica_files(&replica, 0);
    assert!(l0.iter().any(|f| f.0 == max + 1), "{l0:?}");
    let (_, _, _, wal_offset, _) = ltx_header(&l0_path(&replica, max + 1));
    assert_eq!(wal_offset, 32);
    let restored = litestream_restore(&replica, &fresh.path().join("out.db"));
    assert_same_rows(&db2, &restored);
}

fn grow_shrink_with_page_size(page_size: u32) {
    let (dir, db, replica) = paths("app.db");
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch(&format!(
            "PRAGMA page_size={page_size}; PRAGMA journal_mode=wal;"
        ))
        .unwrap();
    }
    let mut c = app(&db);
    create_table(&c);
    c.execute_batch("CREATE TABLE blobs(id INTEGER PRIMARY KEY, b BLOB)")
        .unwrap();
    let lv = Replicator::litevisor(&db, &replica, &[]);
    insert(&mut c, 0..2000, 100);
    for i in 0..300 {
        c.execute(
            "INSERT INTO blobs(b) VALUES (randomblob(?1))",
            [1000 + i * 37],
        )
        .unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    // Shrink: drop most data and VACUUM (the database file gets smaller), then grow again.
    c.execute_batch("DELETE FROM blobs WHERE id % 4 != 0; DELETE FROM t WHERE id % 3 = 0; VACUUM;")
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    insert(&mut c, 5000..5500, 50);
    c.execute("INSERT INTO blobs(b) VALUES (randomblob(200000))", [])
        .unwrap();
    let got_ps: i64 = c.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap();
    assert_eq!(got_ps, i64::from(page_size));
    assert!(lv.stop().success());
    let restored = litestream_restore(&replica, &dir.path().join("out.db"));
    assert_same_rows(&db, &restored);
    let blobs = |c: &rusqlite::Connection| -> Vec<(i64, Vec<u8>)> {
        c.prepare("SELECT id, b FROM blobs ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    };
    let restored = rusqlite::Connection::open(&restored).unwrap();
    assert!(blobs(&restored) == blobs(&c), "blob table differs");
}

#[test]
fn grow_and_shrink_with_1k_pages() {
    grow_shrink_with_page_size(1024);
}

#[test]
fn grow_and_shrink_with_64k_pages() {
    grow_shrink_with_page_size(65536);
}

#[test]
fn large_database_of_200_mb() {
    let (dir, db, replica) = paths("app.db");
    let mut c = app(&db);
    c.execute_batch(
        "CREATE TABLE blobs(id INTEGER PRIMARY KEY, b BLOB); PRAGMA wal_autocheckpoint=10000;",
    )
    .unwrap();
    // ~200 MB, mostly compressible with some random data, before litevisor starts: the first sync
    // is a 200 MB snapshot.
    for chunk in 0..20 {
        let tx = c.transaction().unwrap();
        for i in 0..100 {
            let id = chunk * 100 + i;
            tx.execute(
                "INSERT INTO blobs(id, b) VALUES (?1, zeroblob(60000) || randomblob(40000))",
                [id],
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }
    create_table(&c);
    let size = std::fs::metadata(&db).unwrap().len()
        + std::fs::metadata(db.with_extension("db-wal")).map_or(0, |m| m.len());
    assert!(size > 190_000_000, "database is {size} bytes");
    let started = Instant::now();
    let lv = Replicator::litevisor(&db, &replica, &[]);
    insert(&mut c, 0..500, 25);
    assert!(lv.stop().success());
    eprintln!("200 MB replicate+stop took {:?}", started.elapsed());
    let restored = litestream_restore(&replica, &dir.path().join("out.db"));
    assert_same_rows(&db, &restored);
    let n: i64 = rusqlite::Connection::open(&restored)
        .unwrap()
        .query_row("SELECT count(*) FROM blobs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 2000);
}

#[test]
fn block_page_encoding_is_restorable_by_litestream() {
    let (dir, db, replica, mut c) = scene();
    insert(&mut c, 0..500, 50);
    once_ok(&db, &replica, &["-page-encoding", "block"]);
    insert(&mut c, 500..600, 50);
    once_ok(&db, &replica, &["-page-encoding", "block"]);
    // Block pages carry flags 0x0001 right after the first page number (offset 100 + 4).
    let bytes = std::fs::read(l0_path(&replica, 2)).unwrap();
    assert_eq!(&bytes[104..106], &[0, 1]);
    assert_litestream_restores(&db, &replica, dir.path());
}

/// A stop signal that arrives while litevisor is still starting (here: as soon as it has blocked
/// the stop signals, before it has even read its flags) still gets the database's committed rows to
/// the replica: the replicator starts for its final sync alone.
#[test]
fn a_sigterm_during_start_up_still_runs_the_final_sync() {
    let (dir, db, replica, mut c) = scene();
    insert(&mut c, 0..40, 10);
    drop(c);

    let mut lv = Replicator::litevisor(&db, &replica, &[]);
    let pid = lv.child.id() as i32;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !handles_sigterm(pid) {
        assert!(Instant::now() < deadline, "litevisor never blocked SIGTERM");
        std::hint::spin_loop();
    }
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let status = lv.wait_exit(Duration::from_secs(60));
    assert!(status.success(), "{status:?}: {}", lv.log_text());
    let restored = litevisor_restore(&replica, &dir.path().join("out.db"));
    assert_same_rows(&db, &restored);
}
