//! WAL continuity: litevisor's own checkpoints continue without a snapshot; anything another process
//! did to the WAL or database while litevisor was down ends in a snapshot at the next TXID, and a
//! real Litestream restore has every row.

mod replicate_support;

use std::path::Path;
use std::time::Duration;

use replicate_support::*;

/// Starts litevisor on a database with rows 0..200, stops it, returns the replica's max TXID.
fn replicate_then_stop(db: &Path, replica: &Path) -> u64 {
    let mut c = app(db);
    create_table(&c);
    let lv = Replicator::litevisor(db, replica, &[]);
    insert(&mut c, 0..200, 20);
    let status = lv.stop();
    assert!(status.success());
    max_l0(replica)
}

/// Restarts litevisor, writes rows, stops it; asserts the first new L0 (txid `prev + 1`) is a full
/// snapshot (WAL offset 32 and every page) and that Litestream restores every row.
fn assert_resumes_with_snapshot(dir: &Path, db: &Path, replica: &Path, prev: u64) {
    let lv = Replicator::litevisor(db, replica, &[]);
    wait_until("snapshot uploaded", Duration::from_secs(30), || {
        max_l0(replica) > prev
    });
    let mut c = app(db);
    insert(&mut c, 10_000..10_050, 10);
    let log_path = lv.log.clone();
    let status = lv.stop();
    let log = std::fs::read_to_string(log_path).unwrap_or_default();
    assert!(status.success(), "{log}");
    assert!(log.contains("wrote snapshot L0"), "{log}");
    let (commit, min, max, wal_offset, _) = ltx_header(&l0_path(replica, prev + 1));
    assert_eq!(
        (min, max),
        (prev + 1, prev + 1),
        "TXIDs continue, no restart at 1"
    );
    assert_eq!(wal_offset, 32, "snapshot covers the WAL from its start");
    let pages: u32 = {
        let c = rusqlite::Connection::open(db).unwrap();
        c.query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap()
    };
    assert!(
        commit >= 2 && commit <= pages,
        "commit {commit} pages {pages}"
    );
    let restored = litestream_restore(replica, &dir.join("out.db"));
    assert_same_rows(db, &restored);
}

#[test]
fn truncate_checkpoint_by_the_app_while_down_forces_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let replica = dir.path().join("replica");
    let prev = replicate_then_stop(&db, &replica);
    let mut c = app(&db);
    insert(&mut c, 200..300, 10);
    let (busy, _, _): (i64, i64, i64) = c
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap();
    assert_eq!(busy, 0);
    insert(&mut c, 300..310, 10);
    drop(c);
    assert_resumes_with_snapshot(dir.path(), &db, &replica, prev);
}

#[test]
fn wal_deleted_while_down_forces_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let replica = dir.path().join("replica");
    let prev = replicate_then_stop(&db, &replica);
    {
        let mut c = app(&db);
        insert(&mut c, 200..400, 10);
    } // the last close checkpoints the WAL into the database
    let _ = std::fs::remove_file(db.with_extension("db-wal"));
    let _ = std::fs::remove_file(db.with_extension("db-shm"));
    assert!(!db.with_extension("db-wal").exists());
    assert_resumes_with_snapshot(dir.path(), &db, &replica, prev);
}

#[test]
fn database_replaced_while_down_forces_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let replica = dir.path().join("replica");
    let prev = replicate_then_stop(&db, &replica);
    let other = dir.path().join("other.db");
    {
        let mut c = app(&other);
        create_table(&c);
        insert(&mut c, 50_000..50_700, 100);
        c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
    }
    let _ = std::fs::remove_file(dir.path().join("other.db-wal"));
    std::fs::rename(&other, &db).unwrap();
    let _ = std::fs::remove_file(db.with_extension("db-wal"));
    let _ = std::fs::remove_file(db.with_extension("db-shm"));
    assert_resumes_with_snapshot(dir.path(), &db, &replica, prev);
    assert!(
        rows(&db).iter().all(|(id, _)| *id >= 10_000),
        "the replaced database's rows only"
    );
}

#[test]
fn own_checkpoints_restart_the_wal_without_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let replica = dir.path().join("replica");
    let mut c = app(&db);
    create_table(&c);
    let lv = Replicator::litevisor(&db, &replica, &["-monitor-interval", "0"]);
    // Well past min-checkpoint-page-count (1000 pages) in several rounds, with pauses so
    // litevisor syncs and checkpoints in between.
    let wal = db.with_extension("db-wal");
    let mut id = 0;
    for _ in 0..8 {
        for _ in 0..60 {
            insert(&mut c, id..id + 20, 20);
            id += 20;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let log_path = lv.log.clone();
    let status = lv.stop();
    let log = std::fs::read_to_string(log_path).unwrap();
    assert!(status.success(), "{log}");
    assert_eq!(
        count_matches(&log, "wrote snapshot L0"),
        1,
        "only the initial snapshot:\n{log}"
    );
    assert!(
        count_matches(&log, "checkpoint done") >= 1,
        "litevisor checkpointed:\n{log}"
    );
    assert!(
        log.contains("restarted=true"),
        "a checkpoint restarted the WAL:\n{log}"
    );
    // The WAL stays bounded instead of holding all ~9600 rows' frames.
    let wal_len = std::fs::metadata(&wal).map_or(0, |m| m.len());
    let page_size: u64 = c.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap();
    let frames = wal_len / (page_size + 24);
    let pages: u64 = c.query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap();
    assert!(
        frames < 2500,
        "WAL holds {frames} frames for a {pages}-page database"
    );
    let restored = litestream_restore(&replica, &dir.path().join("out.db"));
    assert_same_rows(&db, &restored);
}

/// A SIGKILLed replicator runs no final sync, but what the app committed is still in the WAL: the
/// next start continues from the local state at the next TXID without a snapshot, and the replica
/// ends up with every row.
#[test]
fn sigkill_then_restart_resumes_without_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let replica = dir.path().join("replica");
    let mut c = app(&db);
    create_table(&c);
    let lv = Replicator::litevisor(&db, &replica, &[]);
    insert(&mut c, 0..200, 20);
    wait_for(&lv, "the rows replicated", Duration::from_secs(30), || {
        max_l0(&replica) > 0
            && rows(&litevisor_restore(&replica, &dir.path().join("probe.db"))).len() == 200
    });
    let prev = max_l0(&replica);
    drop(lv); // SIGKILL: no final sync, the meta dir stays as the last sync left it

    insert(&mut c, 200..300, 10); // committed while no replicator runs; the app keeps its connection
    let lv = Replicator::litevisor(&db, &replica, &[]);
    wait_for(
        &lv,
        "the rows written while down",
        Duration::from_secs(30),
        || max_l0(&replica) > prev,
    );
    insert(&mut c, 300..350, 10);
    let log_path = lv.log.clone();
    let status = lv.stop();
    let log = std::fs::read_to_string(log_path).unwrap_or_default();
    assert!(status.success(), "{log}");
    assert!(
        !log.contains("wrote snapshot L0"),
        "resumed with a snapshot:\n{log}"
    );
    let (_, min, _, wal_offset, _) = ltx_header(&l0_path(&replica, prev + 1));
    assert_eq!(min, prev + 1, "TXIDs continue");
    assert!(
        wal_offset > 32,
        "an incremental L0, not a snapshot (WAL offset {wal_offset})"
    );
    drop(c);
    let restored = litestream_restore(&replica, &dir.path().join("out.db"));
    assert_same_rows(&db, &restored);
}
