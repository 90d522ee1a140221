//! WAL continuity: litevisor's own checkpoints continue without a snapshot; anything another process
//! did to the WAL or database while litevisor was down ends in a snapshot at the next TXID, and a
//! real Litestream restore has every row.

mod support;

mod replicate_support;

use std::path::{Path, PathBuf};
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
    let log = lv.stop_ok();
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
    assert_litestream_restores(db, replica, dir);
}

/// Another database, `other.db` in `dir`: rows 50 000..50 700, all checkpointed into the file,
/// its WAL gone.
fn other_database(dir: &Path) -> PathBuf {
    let other = dir.join("other.db");
    let mut c = app(&other);
    create_table(&c);
    insert(&mut c, 50_000..50_700, 100);
    c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
    drop(c);
    let _ = std::fs::remove_file(dir.join("other.db-wal"));
    other
}

/// Deletes `db`'s WAL and shared-memory files (where they exist).
fn remove_wal_and_shm(db: &Path) {
    let _ = std::fs::remove_file(db.with_extension("db-wal"));
    let _ = std::fs::remove_file(db.with_extension("db-shm"));
}

/// Replicates `app.db`, stops, lets `while_down` change the database (given the directory and
/// the database's path), and checks that the next start resumes with a snapshot. Returns the
/// directory and the database's path.
fn resumes_with_snapshot_after(
    while_down: impl FnOnce(&Path, &Path),
) -> (tempfile::TempDir, PathBuf) {
    let (dir, db, replica) = paths("app.db");
    let prev = replicate_then_stop(&db, &replica);
    while_down(dir.path(), &db);
    assert_resumes_with_snapshot(dir.path(), &db, &replica, prev);
    (dir, db)
}

#[test]
fn truncate_checkpoint_by_the_app_while_down_forces_a_snapshot() {
    resumes_with_snapshot_after(|_, db| {
        let mut c = app(db);
        insert(&mut c, 200..300, 10);
        let (busy, _, _): (i64, i64, i64) = c
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .unwrap();
        assert_eq!(busy, 0);
        insert(&mut c, 300..310, 10);
    });
}

#[test]
fn wal_deleted_while_down_forces_a_snapshot() {
    resumes_with_snapshot_after(|_, db| {
        {
            let mut c = app(db);
            insert(&mut c, 200..400, 10);
        } // the last close checkpoints the WAL into the database
        remove_wal_and_shm(db);
        assert!(!db.with_extension("db-wal").exists());
    });
}

#[test]
fn database_replaced_while_down_forces_a_snapshot() {
    let (_dir, db) = resumes_with_snapshot_after(|dir, db| {
        std::fs::rename(other_database(dir), db).unwrap();
        remove_wal_and_shm(db);
    });
    assert!(
        rows(&db).iter().all(|(id, _)| *id >= 10_000),
        "the replaced database's rows only"
    );
}

/// Found by the fault suite: a database renamed over the replicated one while litevisor runs. Its
/// connections kept the old (unlinked) file while the new WAL looked like a restart after a
/// checkpoint, so the new file's frames were shipped as increments of the old chain and a restore
/// was corrupt. Now the file's identity is checked at every sync: reopened, then a snapshot.
#[test]
fn database_replaced_while_running_is_reopened_and_snapshotted() {
    let (dir, db, replica, mut c) = scene();
    let lv = Replicator::litevisor(&db, &replica, &[]);
    // Its first snapshot first: rows written before it would all land in that one file.
    wait_first_upload(&lv, &replica);
    insert(&mut c, 0..300, 20);
    wait_for(&lv, "rows replicated", Duration::from_secs(30), || {
        max_l0(&replica) >= 2
    });
    drop(c);
    let other = other_database(dir.path());
    remove_wal_and_shm(&db);
    std::fs::rename(&other, &db).unwrap();
    let mut c = app(&db);
    insert(&mut c, 60_000..60_040, 10);
    drop(c);
    let log = lv.stop_ok();
    assert!(log.contains("the database file was replaced"), "{log}");
    assert!(log.contains("reason=\"database file replaced\""), "{log}");
    assert_litestream_restores(&db, &replica, dir.path());
    assert!(rows(&db).iter().all(|(id, _)| *id >= 50_000));
}

#[test]
fn own_checkpoints_restart_the_wal_without_snapshots() {
    let (dir, db, replica, mut c) = scene();
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
    let log = lv.stop_ok();
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
    assert_litestream_restores(&db, &replica, dir.path());
}

/// A SIGKILLed replicator runs no final sync, but what the app committed is still in the WAL: the
/// next start continues from the local state at the next TXID without a snapshot, and the replica
/// ends up with every row.
#[test]
fn sigkill_then_restart_resumes_without_a_snapshot() {
    let (dir, db, replica, mut c) = scene();
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
    let log = lv.stop_ok();
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
    assert_litestream_restores(&db, &replica, dir.path());
}

/// Leaves a transaction (row `id`) in `db`'s WAL the way a writer that died inside its COMMIT leaves
/// it: every frame written, checksums and commit marker valid, but the wal-index (`-shm`) never
/// told. It is the real transaction SQLite writes, made on a copy of the database and WAL (same
/// salts, same running checksum) and appended to the live WAL. `c`, the application's connection,
/// stays open, so the live wal-index keeps saying where SQLite's committed WAL ends.
fn leave_an_uncommitted_transaction(dir: &Path, db: &Path, id: i64) {
    let wal = std::fs::read(db.with_file_name("app.db-wal")).unwrap();
    let scratch = dir.join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    std::fs::copy(db, scratch.join("app.db")).unwrap();
    std::fs::write(scratch.join("app.db-wal"), &wal).unwrap();
    let writer = rusqlite::Connection::open(scratch.join("app.db")).unwrap();
    writer.execute_batch("PRAGMA wal_autocheckpoint=0").unwrap();
    writer
        .execute("INSERT INTO t(id, v) VALUES (?1, 'never committed')", [id])
        .unwrap();
    let after = std::fs::read(scratch.join("app.db-wal")).unwrap();
    assert!(
        after.len() > wal.len() && after[..wal.len()] == wal[..],
        "the copy's transaction must continue the live WAL"
    );
    drop(writer);
    use std::io::Write;
    let mut live = std::fs::OpenOptions::new()
        .append(true)
        .open(db.with_file_name("app.db-wal"))
        .unwrap();
    live.write_all(&after[wal.len()..]).unwrap();
}

fn ids(db: &Path) -> Vec<i64> {
    rows(db).into_iter().map(|(id, _)| id).collect()
}

/// Frames past the wal-index's last committed frame are never shipped (SQLite discards them: the
/// next writer overwrites them); the next real transaction is, and the replica is the database.
#[test]
fn frames_a_dying_writer_left_past_the_wal_index_are_never_replicated() {
    let (dir, db, replica, mut c) = scene_keeping_the_wal();
    once_ok(&db, &replica, &[]);
    let before = max_l0(&replica);

    leave_an_uncommitted_transaction(dir.path(), &db, 999);
    let out = once_ok(&db, &replica, &[]);
    assert_eq!(
        max_l0(&replica),
        before,
        "uncommitted frames were shipped: {out}"
    );
    assert_eq!(
        ids(&db),
        (0..10).collect::<Vec<_>>(),
        "SQLite does not count them"
    );

    // The application's next transaction takes the same WAL offsets; it is replicated, and the
    // replica is exactly the database.
    insert(&mut c, 10..11, 1);
    let out = once_ok(&db, &replica, &[]);
    assert_eq!(max_l0(&replica), before + 1, "{out}");
    let restored = litestream_restore(&replica, &dir.path().join("restored.db"));
    assert_same_rows(&db, &restored);
}

/// A replica that already holds such a transaction (real Litestream 0.5.17 ships it) is caught when
/// litevisor takes over: its position is past what SQLite committed, so it writes a snapshot at the
/// next TXID, and the replica's latest state is the database's.
#[test]
fn a_replica_ahead_of_the_database_is_healed_by_a_snapshot_at_takeover() {
    let (dir, db, replica, _c) = scene_keeping_the_wal();
    let litestream_once = || {
        support::run_ok(
            "litestream replicate -once",
            std::process::Command::new("litestream")
                .env_remove("AWS_CA_BUNDLE")
                .args(["replicate", "-once"])
                .arg(&db)
                .arg(url(&replica)),
        );
    };
    // The first run creates Litestream's tables, so the second writes nothing to the database.
    litestream_once();
    leave_an_uncommitted_transaction(dir.path(), &db, 999);
    litestream_once();
    let shipped = max_l0(&replica);
    let phantom = litestream_restore(&replica, &dir.path().join("phantom.db"));
    assert!(
        ids(&phantom).contains(&999),
        "this Litestream did not ship the uncommitted transaction: the premise of this test is gone"
    );

    let out = once_ok(&db, &replica, &[]);
    assert!(out.contains("never committed"), "{out}");
    let (_, min, max, wal_offset, _) = ltx_header(&l0_path(&replica, shipped + 1));
    assert_eq!(
        (min, max, wal_offset),
        (shipped + 1, shipped + 1, 32),
        "a snapshot"
    );
    let restored = litestream_restore(&replica, &dir.path().join("restored.db"));
    assert!(!ids(&restored).contains(&999));
    assert_same_rows(&db, &restored);
}

/// At the final sync the application is gone and litevisor's connections are the database's last:
/// SQLite's recovery (run by whoever opens it next) counts a fully written transaction as committed,
/// so the final sync lets SQLite decide (litevisor reopens) and the replica is what the next opener
/// finds.
#[test]
fn the_final_sync_settles_unpublished_frames_as_the_next_opener_will() {
    let (dir, db, replica, c) = scene_keeping_the_wal();
    let lv = Replicator::litevisor(&db, &replica, &[]);
    wait_for(&lv, "the first sync", Duration::from_secs(30), || {
        max_l0(&replica) > 0
    });
    leave_an_uncommitted_transaction(dir.path(), &db, 999);
    drop(c);
    let log = lv.stop_ok();
    assert!(log.contains("left WAL frames unpublished"), "{log}");
    let restored = litestream_restore(&replica, &dir.path().join("restored.db"));
    assert_same_rows(&db, &restored);
    assert!(
        ids(&db).contains(&999),
        "SQLite's recovery counts the whole transaction"
    );
}

/// The start of the uncommitted-frames tests: ten rows committed one a transaction, with SQLite's
/// automatic checkpoint off so the WAL keeps every frame a test leaves in it.
fn scene_keeping_the_wal() -> (tempfile::TempDir, PathBuf, PathBuf, rusqlite::Connection) {
    let (dir, db, replica) = paths("app.db");
    let mut c = app(&db);
    c.execute_batch("PRAGMA wal_autocheckpoint=0").unwrap();
    create_table(&c);
    insert(&mut c, 0..10, 1);
    (dir, db, replica, c)
}
