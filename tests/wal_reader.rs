//! The WAL reader against real SQLite WAL files (rusqlite, bundled SQLite): committed-frame scans
//! reproduce exactly what SQLite's own checkpoint writes; both checksum byte orders validate (the
//! big-endian WAL is accepted by SQLite itself); a corrupted frame, a torn frame, an unfinished
//! transaction and stale frames after a WAL restart all end the scan at the previous commit; resuming
//! from a recorded offset or limiting by bytes yields the same pages as a full scan. Garbage never
//! panics the reader.

use std::fs;
use std::io::Cursor;
use std::path::PathBuf;

use litevisor::replication::wal::*;
use proptest::prelude::*;
use rusqlite::Connection;

/// A database in WAL mode whose writer stays open (so the WAL is never checkpointed or deleted),
/// and the WAL size after each transaction: the commit boundaries.
struct Fixture {
    _dir: tempfile::TempDir,
    conn: Connection,
    db: PathBuf,
    wal: PathBuf,
    boundaries: Vec<u64>,
    page_counts: Vec<u32>,
}

const TXNS: &[&str] = &[
    "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)",
    "INSERT INTO t(v) SELECT hex(randomblob(400)) FROM s LIMIT 50",
    "UPDATE t SET v = 'u' || v WHERE id % 3 = 0",
    "INSERT INTO t(v) SELECT hex(randomblob(1500)) FROM s LIMIT 30",
    "DELETE FROM t WHERE id % 4 = 0",
    "INSERT INTO t(v) SELECT hex(randomblob(900)) FROM s LIMIT 60",
];

fn fixture(txns: &[&str]) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db.sqlite");
    let conn = Connection::open(&db).unwrap();
    conn.execute_batch("PRAGMA journal_mode=wal; PRAGMA wal_autocheckpoint=0;")
        .unwrap();
    let mut f = Fixture {
        wal: dir.path().join("db.sqlite-wal"),
        _dir: dir,
        conn,
        db,
        boundaries: Vec::new(),
        page_counts: Vec::new(),
    };
    for sql in txns {
        f.commit(sql);
    }
    f
}

impl Fixture {
    fn commit(&mut self, sql: &str) {
        let sql = sql.replace(
            "FROM s",
            "FROM (WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 1000) SELECT i FROM s)",
        );
        self.conn
            .execute_batch(&format!("BEGIN; {sql}; COMMIT;"))
            .unwrap();
        self.boundaries.push(fs::metadata(&self.wal).unwrap().len());
        self.page_counts.push(
            self.conn
                .query_row("PRAGMA page_count", [], |r| r.get(0))
                .unwrap(),
        );
    }

    fn wal_bytes(&self) -> Vec<u8> {
        fs::read(&self.wal).unwrap()
    }
}

fn header_of(wal: &[u8]) -> WalHeader {
    read_header(&mut Cursor::new(wal))
        .unwrap()
        .expect("valid WAL header")
}

fn scan(wal: &[u8], start: u64, max_bytes: u64) -> Scan {
    let h = header_of(wal);
    scan_committed(&mut Cursor::new(wal), &h, start, max_bytes, u64::MAX).unwrap()
}

/// The database file SQLite itself produces by checkpointing `wal` into `db`.
fn sqlite_checkpoint(db: &[u8], wal: &[u8]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("copy.db");
    fs::write(&path, db).unwrap();
    fs::write(dir.path().join("copy.db-wal"), wal).unwrap();
    let conn = Connection::open(&path).unwrap();
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
        r.get::<_, i64>(0)
    })
    .unwrap();
    drop(conn);
    fs::read(&path).unwrap()
}

fn rows_with_wal(db: &[u8], wal: &[u8]) -> Vec<(i64, String)> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("copy.db");
    fs::write(&path, db).unwrap();
    fs::write(dir.path().join("copy.db-wal"), wal).unwrap();
    let conn = Connection::open(&path).unwrap();
    let mut stmt = conn.prepare("SELECT id, v FROM t ORDER BY id").unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Applies the scanned pages to the database file, as a replicator's restore would.
fn materialize(db: &[u8], wal: &[u8], s: &Scan) -> Vec<u8> {
    let ps = s.header.page_size as usize;
    let mut out = db.to_vec();
    out.resize(s.commit as usize * ps, 0);
    for (&pgno, &off) in &s.pages {
        let at = (pgno as usize - 1) * ps;
        out[at..at + ps].copy_from_slice(&wal[off as usize..off as usize + ps]);
    }
    out
}

/// Rewrites a WAL with big-endian checksums (magic 0x377f0683), recomputing every checksum the
/// way SQLite defines them. Independent of the reader's own checksum code.
fn to_big_endian(wal: &[u8]) -> Vec<u8> {
    fn sum(s: (u32, u32), data: &[u8]) -> (u32, u32) {
        let (mut s0, mut s1) = s;
        for u in data.chunks(8) {
            s0 = s0
                .wrapping_add(u32::from_be_bytes(u[..4].try_into().unwrap()))
                .wrapping_add(s1);
            s1 = s1
                .wrapping_add(u32::from_be_bytes(u[4..].try_into().unwrap()))
                .wrapping_add(s0);
        }
        (s0, s1)
    }
    let mut out = wal.to_vec();
    out[0..4].copy_from_slice(&0x377f_0683u32.to_be_bytes());
    let mut s = sum((0, 0), &out[..24]);
    out[24..28].copy_from_slice(&s.0.to_be_bytes());
    out[28..32].copy_from_slice(&s.1.to_be_bytes());
    let ps = u32::from_be_bytes(out[8..12].try_into().unwrap()) as usize;
    let mut off = 32;
    while off + 24 + ps <= out.len() {
        s = sum(s, &out[off..off + 8]);
        s = sum(s, &out[off + 24..off + 24 + ps]);
        out[off + 16..off + 20].copy_from_slice(&s.0.to_be_bytes());
        out[off + 20..off + 24].copy_from_slice(&s.1.to_be_bytes());
        off += 24 + ps;
    }
    out
}

#[test]
fn nothing_past_the_committed_limit_is_read() {
    let f = fixture(&[
        "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)",
        "INSERT INTO t(v) SELECT 'a' || i FROM s",
        "INSERT INTO t(v) SELECT 'b' || i FROM s",
    ]);
    let wal = f.wal_bytes();
    let h = header_of(&wal);
    let full = scan(&wal, 32, 0);
    assert_eq!(full.end, f.boundaries[2]);
    // SQLite published only up to the second transaction (the third's writer died mid-commit):
    // a limit at or inside the third transaction ends the scan at the second's commit frame.
    for limit in [
        f.boundaries[1],
        f.boundaries[1] + h.frame_size(),
        f.boundaries[2] - 1,
    ] {
        let s = scan_committed(&mut Cursor::new(&wal), &h, 32, 0, limit).unwrap();
        assert_eq!(s.end, f.boundaries[1], "limit {limit}");
        assert_eq!(s.commit, f.page_counts[1]);
    }
    let none = scan_committed(&mut Cursor::new(&wal), &h, 32, 0, 32).unwrap();
    assert_eq!((none.end, none.pages.len()), (32, 0));
}

#[test]
fn full_scan_equals_sqlite_checkpoint() {
    let f = fixture(TXNS);
    let wal = f.wal_bytes();
    let h = header_of(&wal);
    assert_eq!(
        h.big_endian_checksums,
        cfg!(target_endian = "big"),
        "native byte order"
    );
    let s = scan(&wal, WAL_HEADER_SIZE, 0);
    assert_eq!(s.end, *f.boundaries.last().unwrap());
    assert_eq!(s.end, wal.len() as u64);
    assert_eq!(s.commit, *f.page_counts.last().unwrap());
    assert!(!s.limited);
    let db = fs::read(&f.db).unwrap();
    assert!(
        materialize(&db, &wal, &s) == sqlite_checkpoint(&db, &wal),
        "scan disagrees with SQLite's checkpoint"
    );

    // read_frame on the final commit frame.
    let mut page = vec![0u8; h.page_size as usize];
    let fh = read_frame(
        &mut Cursor::new(&wal),
        s.end - h.frame_size(),
        h.page_size,
        &mut page,
    )
    .unwrap();
    assert_eq!(fh.commit, s.commit);
    assert_eq!((fh.salt1, fh.salt2), (h.salt1, h.salt2));
    assert_eq!(
        s.pages[&fh.pgno],
        s.end - h.frame_size() + WAL_FRAME_HEADER_SIZE
    );
    assert!(matches!(
        read_frame(&mut Cursor::new(&wal), s.end - 10, h.page_size, &mut page),
        Err(WalError::ShortFrame { .. })
    ));
}

#[test]
fn big_endian_checksums_validate_and_corruption_stops_the_scan() {
    let f = fixture(TXNS);
    let le = f.wal_bytes();
    let be = to_big_endian(&le);
    let db = fs::read(&f.db).unwrap();
    // SQLite itself accepts the rewritten WAL: it recovers every transaction from it.
    assert_eq!(rows_with_wal(&db, &be), rows_with_wal(&db, &le));
    assert!(header_of(&be).big_endian_checksums);
    assert_ne!(
        header_of(&be).big_endian_checksums,
        header_of(&le).big_endian_checksums
    );
    let (s_le, s_be) = (scan(&le, 32, 0), scan(&be, 32, 0));
    assert_eq!(
        (s_be.end, s_be.commit, &s_be.pages),
        (s_le.end, s_le.commit, &s_le.pages)
    );

    // A flipped byte in the page data of a frame inside transaction 3 ends the valid WAL there:
    // the scan stops at the end of transaction 2, in both byte orders.
    let h = header_of(&le);
    let (b2, b3) = (f.boundaries[2], f.boundaries[3]);
    let frame = b2 + ((b3 - b2) / h.frame_size() / 2) * h.frame_size();
    for wal in [le, be] {
        let mut bad = wal.clone();
        bad[(frame + WAL_FRAME_HEADER_SIZE + 100) as usize] ^= 0x40;
        let s = scan(&bad, 32, 0);
        assert_eq!(s.end, b2);
        assert_eq!(s.commit, f.page_counts[2]);
        assert!(s.pages.values().all(|&off| off < b2));
        assert!(materialize(&db, &bad, &s) == sqlite_checkpoint(&db, &wal[..b2 as usize]));
    }
}

/// The fixture's WAL less the end of its last transaction, `cut(fixture, frame size)` bytes: the
/// scan stops at the commit before it, reads no frame past it, and gives the pages SQLite's
/// checkpoint of the WAL up to there gives.
fn assert_scan_stops_at_the_previous_commit(cut: impl FnOnce(&Fixture, u64) -> u64) {
    let f = fixture(TXNS);
    let wal = f.wal_bytes();
    let n = f.boundaries.len();
    let (last, previous) = (f.boundaries[n - 1], f.boundaries[n - 2]);
    let short = &wal[..(last - cut(&f, header_of(&wal).frame_size())) as usize];
    let s = scan(short, 32, 0);
    assert_eq!(s.end, previous);
    assert_eq!(s.commit, f.page_counts[n - 2]);
    assert!(s.pages.values().all(|&off| off < previous));
    let db = fs::read(&f.db).unwrap();
    assert!(materialize(&db, short, &s) == sqlite_checkpoint(&db, &wal[..previous as usize]));
}

#[test]
fn torn_last_frame_ends_at_previous_commit() {
    assert_scan_stops_at_the_previous_commit(|_, frame_size| frame_size / 2);
}

#[test]
fn uncommitted_trailing_frames_are_ignored() {
    // Whole, checksum-valid frames but no commit frame: a transaction still being written.
    assert_scan_stops_at_the_previous_commit(|f, frame_size| {
        let n = f.boundaries.len();
        let last_txn_frames = (f.boundaries[n - 1] - f.boundaries[n - 2]) / frame_size;
        assert!(
            last_txn_frames >= 2,
            "the last transaction must span several frames"
        );
        frame_size
    });
}

#[test]
fn byte_limit_and_resume_match_full_scan() {
    let f = fixture(TXNS);
    let wal = f.wal_bytes();
    let full = scan(&wal, 32, 0);

    // max_bytes = 1: one transaction per scan, each resumed from the previous end.
    let mut start = WAL_HEADER_SIZE;
    let mut ends = Vec::new();
    let mut merged = std::collections::BTreeMap::new();
    loop {
        let s = scan(&wal, start, 1);
        if s.end == start {
            assert!(s.pages.is_empty() && !s.limited);
            break;
        }
        assert!(s.limited);
        merged.extend(s.pages.clone());
        ends.push(s.end);
        start = s.end;
    }
    assert_eq!(ends, f.boundaries);
    merged.retain(|&pgno, _| pgno <= full.commit);
    assert_eq!(merged, full.pages);

    // Resuming from any commit boundary gives the full scan's view of the later part.
    for &mid in &f.boundaries[..f.boundaries.len() - 1] {
        let s = scan(&wal, mid, 0);
        let later: std::collections::BTreeMap<u32, u64> = full
            .pages
            .iter()
            .filter(|&(_, &off)| off >= mid)
            .map(|(&p, &o)| (p, o))
            .collect();
        assert_eq!(s.pages, later, "resume from {mid}");
        assert_eq!((s.end, s.commit, s.start), (full.end, full.commit, mid));
    }

    // A byte limit larger than one transaction still stops only at a commit boundary.
    let s = scan(&wal, 32, f.boundaries[1] - 32 + 1);
    assert_eq!(s.end, f.boundaries[2]);
    assert!(s.limited);

    let h = header_of(&wal);
    assert!(matches!(
        scan_committed(&mut Cursor::new(&wal), &h, f.boundaries[1] + 8, 0, u64::MAX),
        Err(WalError::UnalignedOffset { .. })
    ));
}

#[test]
fn stale_frames_after_wal_restart_are_ignored() {
    let mut f = fixture(TXNS);
    let old = f.wal_bytes();
    let old_header = header_of(&old);
    let checkpointed: (i64, i64, i64) = f
        .conn
        .query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap();
    assert_eq!(checkpointed.0, 0, "RESTART checkpoint completed");
    f.commit("UPDATE t SET v = 'after restart' WHERE id = 1");
    let wal = f.wal_bytes();
    assert_eq!(
        wal.len(),
        old.len(),
        "the restarted WAL overwrites the old one in place"
    );
    let h = header_of(&wal);
    assert_ne!((h.salt1, h.salt2), (old_header.salt1, old_header.salt2));
    let s = scan(&wal, 32, 0);
    assert!(s.end > 32 && s.end < wal.len() as u64);
    assert_eq!(s.commit, *f.page_counts.last().unwrap());
    // The frame right after the new end still carries the old salts.
    let mut page = vec![0u8; h.page_size as usize];
    let next = read_frame(&mut Cursor::new(&wal), s.end, h.page_size, &mut page).unwrap();
    assert_eq!(
        (next.salt1, next.salt2),
        (old_header.salt1, old_header.salt2)
    );
    let db = fs::read(&f.db).unwrap();
    assert!(materialize(&db, &wal, &s) == sqlite_checkpoint(&db, &wal));

    // Resuming at an offset of the old WAL is refused: the frame before it has the old salts.
    let stale = *f.boundaries.iter().rev().nth(1).unwrap();
    assert!(matches!(
        scan_committed(&mut Cursor::new(&wal), &h, stale, 0, u64::MAX),
        Err(WalError::ResumeMismatch { .. })
    ));
}

#[test]
fn missing_or_invalid_header_means_no_wal() {
    let f = fixture(&TXNS[..2]);
    let wal = f.wal_bytes();
    assert!(read_header(&mut Cursor::new(&wal[..0])).unwrap().is_none());
    assert!(read_header(&mut Cursor::new(&wal[..31])).unwrap().is_none());
    for at in [0usize, 17, 26] {
        let mut bad = wal.clone();
        bad[at] ^= 1;
        assert!(
            read_header(&mut Cursor::new(&bad)).unwrap().is_none(),
            "flipped header byte {at}"
        );
    }
    let h = header_of(&wal);
    assert_eq!(WalHeader::from_bytes(&h.to_bytes()).unwrap(), Some(h));
    assert_eq!(&h.to_bytes()[..], &wal[..32]);
}

fn sample_wal() -> &'static (Vec<u8>, Scan) {
    static SAMPLE: std::sync::OnceLock<(Vec<u8>, Scan)> = std::sync::OnceLock::new();
    SAMPLE.get_or_init(|| {
        let f = fixture(&TXNS[..4]);
        let wal = f.wal_bytes();
        let s = scan(&wal, 32, 0);
        (wal, s)
    })
}

fn check_no_panic(wal: &[u8], start: u64) -> Option<Scan> {
    let mut c = Cursor::new(wal);
    let h = read_header(&mut c).ok()??;
    let s = scan_committed(&mut c, &h, start, 0, u64::MAX).ok()?;
    assert!(s.end >= s.start && s.end <= wal.len() as u64);
    assert!(s.pages.keys().all(|&p| p >= 1 && p <= s.commit));
    assert!(
        s.pages
            .values()
            .all(|&off| off + u64::from(h.page_size) <= s.end)
    );
    Some(s)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..5000), start in 0u64..5000) {
        check_no_panic(&bytes, start);
        let mut with_magic = bytes.clone();
        if with_magic.len() >= 4 {
            with_magic[..4].copy_from_slice(&WAL_MAGIC_LE.to_be_bytes());
        }
        check_no_panic(&with_magic, start);
    }

    #[test]
    fn damaged_wal_scans_a_prefix(flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
                                  cut in any::<prop::sample::Index>()) {
        let (wal, full) = sample_wal();
        let mut bad = wal.clone();
        for (at, x) in &flips {
            let i = at.index(bad.len());
            bad[i] ^= x;
        }
        bad.truncate(32 + cut.index(bad.len() - 31));
        // Every byte of a frame is covered by its checksum or salt check, so a damaged WAL ends at a
        // commit boundary before the first damaged frame and yields exactly the intact WAL's scan there.
        if let Some(s) = check_no_panic(&bad, 32) {
            let fs = full.header.frame_size();
            let first = flips.iter().map(|(at, _)| at.index(wal.len()) as u64).min().unwrap();
            prop_assert!(first >= 32, "a damaged header must not validate");
            prop_assert!(s.end <= 32 + (first - 32) / fs * fs);
            let reference = scan(&wal[..s.end as usize], 32, 0);
            prop_assert_eq!(&s.pages, &reference.pages);
            prop_assert_eq!(s.commit, reference.commit);
        }
    }
}
