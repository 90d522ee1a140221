//! The upload thread's schedule: replica errors are retried with back-off while the application
//! keeps writing, and L1 compaction runs on its 30 s wall-clock boundary once there is new data,
//! after which the local L0 staging files are dropped (except the newest, the position).

mod support;

mod replicate_support;

use std::time::{Duration, Instant};

use replicate_support::*;

#[test]
fn replica_errors_are_retried_and_never_block_the_application() {
    let (dir, db, replica, mut c) = scene();
    insert(&mut c, 0..50, 10);
    let lv = Replicator::litevisor(&db, &replica, &[]);
    wait_first_upload(&lv, &replica);

    // Break the replica: its level-0 directory becomes a plain file, so every upload fails.
    let l0_dir = replica.join("ltx").join("0");
    let parked = dir.path().join("parked-l0");
    std::fs::rename(&l0_dir, &parked).unwrap();
    std::fs::write(&l0_dir, b"not a directory").unwrap();
    let started = Instant::now();
    for round in 0..10 {
        insert(&mut c, 1000 + round * 20..1020 + round * 20, 5);
        std::thread::sleep(Duration::from_millis(150));
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "writes are not blocked by the replica"
    );
    let local_max = || {
        replica_files(&dir.path().join(".app.db-litestream"), 0)
            .last()
            .map_or(0, |f| f.1)
    };
    wait_until("local L0 files pile up", Duration::from_secs(30), || {
        local_max() > 3
    });

    // Repair it: the pending L0 files get uploaded in order, without a gap.
    std::fs::remove_file(&l0_dir).unwrap();
    std::fs::rename(&parked, &l0_dir).unwrap();
    wait_until("uploads resume", Duration::from_secs(90), || {
        max_l0(&replica) >= local_max()
    });
    let log = lv.stop_ok();
    assert!(log.contains("replica error, retrying"), "{log}");
    assert!(log.contains("replica reachable again"), "{log}");
    let l0 = replica_files(&replica, 0);
    assert!(l0.windows(2).all(|w| w[1].0 == w[0].1 + 1), "{l0:?}");
    assert_litestream_restores(&db, &replica, dir.path());
}

#[test]
fn l1_compaction_runs_on_its_boundary_and_trims_local_staging() {
    let (dir, db, replica, mut c) = scene();
    let lv = Replicator::litevisor(&db, &replica, &[]);
    for round in 0..8 {
        insert(&mut c, round * 30..round * 30 + 30, 10);
        std::thread::sleep(Duration::from_millis(250));
    }
    wait_until("an L1 compaction", Duration::from_secs(45), || {
        !replica_files(&replica, 1).is_empty()
    });
    let l1 = replica_files(&replica, 1);
    assert_eq!(l1[0].0, 1, "L1 starts at TXID 1: {l1:?}");
    let meta = dir.path().join(".app.db-litestream");
    // Generous: a loaded machine (the whole suite at once) delays the trim.
    wait_until("local L0 trimmed", Duration::from_secs(30), || {
        let local = replica_files(&meta, 0);
        local.len() <= 2 && local.last().map_or(0, |f| f.1) >= l1[0].1
    });
    insert(&mut c, 5000..5100, 10);
    assert!(lv.stop().success());
    assert_litestream_restores(&db, &replica, dir.path());
}

#[test]
fn an_unreachable_replica_at_start_is_retried() {
    let (dir, db, replica, mut c) = scene();
    insert(&mut c, 0..100, 10);
    // The replica cannot even be listed: its `ltx` directory is a plain file.
    std::fs::create_dir_all(&replica).unwrap();
    std::fs::write(replica.join("ltx"), b"not a directory").unwrap();
    let mut lv = Replicator::litevisor(&db, &replica, &[]);
    insert(&mut c, 100..200, 10);
    std::thread::sleep(Duration::from_secs(2));
    assert!(lv.alive(), "replicate keeps running: {}", lv.log_text());
    std::fs::remove_file(replica.join("ltx")).unwrap();
    insert(&mut c, 200..300, 10);
    wait_until(
        "uploads after the replica came back",
        Duration::from_secs(90),
        || max_l0(&replica) >= 1,
    );
    assert!(lv.stop().success());
    assert_litestream_restores(&db, &replica, dir.path());
}
