//! Takeover both ways with REAL Litestream 0.5.17 on the same database, meta directory and replica:
//! TXIDs continue (no restart at 1) and Litestream restores every row afterwards.

mod support;

mod replicate_support;

use std::time::Duration;

use replicate_support::*;

#[test]
fn litevisor_continues_after_litestream() {
    let (dir, db, replica, mut c) = scene();
    insert(&mut c, 0..100, 10);

    let ls = Replicator::litestream(&db, &replica);
    wait_first_upload(&ls, &replica);
    for round in 0..5 {
        insert(&mut c, 100 + round * 40..140 + round * 40, 8);
        std::thread::sleep(Duration::from_millis(600));
    }
    wait_until("litestream uploads", Duration::from_secs(30), || {
        max_l0(&replica) >= 2
    });
    let status = ls.stop();
    assert!(status.success());
    let ls_max = max_l0(&replica);
    assert!(ls_max >= 2);

    let lv = Replicator::litevisor(&db, &replica, &[]);
    insert(&mut c, 1000..1200, 20);
    assert!(lv.stop().success());
    let l0 = replica_files(&replica, 0);
    assert!(
        l0.iter().any(|f| f.0 == ls_max + 1),
        "litevisor continued at {}: {l0:?}",
        ls_max + 1
    );
    assert!(max_l0(&replica) > ls_max);
    assert_litestream_restores(&db, &replica, dir.path());
}

#[test]
fn litestream_continues_after_litevisor() {
    let (dir, db, replica, mut c) = scene();
    insert(&mut c, 0..100, 10);

    let lv = Replicator::litevisor(&db, &replica, &[]);
    for round in 0..5 {
        insert(&mut c, 100 + round * 40..140 + round * 40, 8);
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(lv.stop().success());
    let lv_max = max_l0(&replica);
    assert!(lv_max >= 2);

    let ls = Replicator::litestream(&db, &replica);
    std::thread::sleep(Duration::from_secs(2));
    insert(&mut c, 1000..1200, 20);
    wait_until("litestream continues", Duration::from_secs(30), || {
        max_l0(&replica) > lv_max
    });
    std::thread::sleep(Duration::from_millis(1500));
    ls.stop_ok();
    let l0 = replica_files(&replica, 0);
    assert!(
        l0.iter().any(|f| f.0 == lv_max + 1),
        "Litestream continued at {}: {l0:?}",
        lv_max + 1
    );
    assert_litestream_restores(&db, &replica, dir.path());

    // And litevisor picks up again after Litestream.
    let ls_max = max_l0(&replica);
    let lv = Replicator::litevisor(&db, &replica, &[]);
    insert(&mut c, 2000..2100, 10);
    assert!(lv.stop().success());
    assert!(replica_files(&replica, 0).iter().any(|f| f.0 == ls_max + 1));
    let restored = litestream_restore(&replica, &dir.path().join("out2.db"));
    assert_same_rows(&db, &restored);
}
