//! Comparing a database with its replica: the LTX "database checksum" of a SQLite file, and of the
//! live database as SQLite sees it at one WAL position, plus the TXID that position corresponds to.
//!
//! The database checksum is the one LTX defines (reference §2.6): `(1<<63) | XOR over every page
//! except the lock page of (1<<63) | crc64iso(BE32(pgno) ‖ page)`. It does not depend on the order
//! pages are read in, so the restored copy is hashed straight from its file and the live database
//! page by page from its file and WAL.
//!
//! Why not compare against checksums in the LTX files: Litestream 0.5 (and litevisor, to stay
//! compatible) writes every LTX file with the NoChecksum flag, so no file carries a post-apply
//! checksum to compare with. The live database's checksum at the replica's TXID is therefore only
//! known when the live database *is* at that TXID now: its WAL ends exactly where the newest local
//! L0 file (in the meta directory) says replication stopped.
//!
//! Reading the live database takes no write lock and changes nothing: a read-only SQLite connection
//! holds a read transaction (so no checkpoint can restart the WAL underneath) while the pages are
//! read from the database file and the WAL's committed frames, exactly as `sync.rs` reads them for a
//! snapshot. Like any SQLite reader of a WAL database, the connection creates empty `-wal`/`-shm`
//! files when they are missing (they are SQLite's own and harmless; deleting them afterwards could
//! pull them from under an application that just opened the database). The file descriptors opened
//! here stay open until after the connection is closed: POSIX record locks are per process, and
//! closing any descriptor of the database file would drop the connection's shared lock.

use std::fs::File;
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::replica::ReplicaClient;
use crate::replication::ltx::{self, CHECKSUM_FLAG, CRC64, Header};
use crate::replication::meta::{Meta, MetaError};
use crate::replication::restore::{self, IntegrityCheck, RestoreError, RestoreOptions, Target};
use crate::replication::shm::{self, ShmError};
use crate::replication::wal::{self, WalError};

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{op} {}: {source}", .path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("database {}: {op}: {source}", .path.display())]
    Sqlite {
        path: PathBuf,
        op: &'static str,
        source: rusqlite::Error,
    },
    #[error("WAL {}: {source}", .path.display())]
    Wal { path: PathBuf, source: WalError },
    #[error("database {}: {what}", .path.display())]
    Format { path: PathBuf, what: String },
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("database {}: it kept changing while being read; try again", .0.display())]
    Unstable(PathBuf),
    #[error("database {}: {source}", .path.display())]
    Shm { path: PathBuf, source: ShmError },
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> VerifyError + use<> {
    let path = path.to_path_buf();
    move |source| VerifyError::Io { op, path, source }
}

/// LTX's checksum of one page.
pub fn page_checksum(pgno: u32, data: &[u8]) -> u64 {
    let mut d = CRC64.digest();
    d.update(&pgno.to_be_bytes());
    d.update(data);
    CHECKSUM_FLAG | d.finalize()
}

/// Accumulates LTX's database checksum page by page, in any order.
#[derive(Clone, Copy, Debug, Default)]
pub struct DbChecksum(u64);

impl DbChecksum {
    pub fn add(&mut self, pgno: u32, data: &[u8]) {
        self.0 ^= page_checksum(pgno, data);
    }

    pub fn value(&self) -> u64 {
        CHECKSUM_FLAG | self.0
    }
}

/// Size and checksum of a database image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    pub page_size: u32,
    pub pages: u32,
    pub checksum: u64,
}

/// Checksum of a plain database file (no WAL), e.g. a restored copy.
pub fn file_summary(path: &Path, page_size: u32) -> Result<Summary, VerifyError> {
    let f = File::open(path).map_err(io("open", path))?;
    let len = f.metadata().map_err(io("stat", path))?.len();
    let ps = u64::from(page_size);
    if page_size == 0 || !len.is_multiple_of(ps) {
        return Err(VerifyError::Format {
            path: path.to_path_buf(),
            what: format!("size {len} is not a multiple of the page size {page_size}"),
        });
    }
    let pages = u32::try_from(len / ps).map_err(|_| VerifyError::Format {
        path: path.to_path_buf(),
        what: format!("{} pages is more than SQLite allows", len / ps),
    })?;
    let lock = ltx::lock_pgno(page_size);
    let mut r = BufReader::with_capacity(1 << 20, f);
    let mut buf = vec![0u8; page_size as usize];
    let mut sum = DbChecksum::default();
    for pgno in 1..=pages {
        r.read_exact(&mut buf).map_err(io("read", path))?;
        if pgno != lock {
            sum.add(pgno, &buf);
        }
    }
    Ok(Summary {
        page_size,
        pages,
        checksum: sum.value(),
    })
}

/// Where the live database stands relative to litevisor's (or Litestream's) local replication state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LivePosition {
    /// The WAL ends exactly where the newest local L0 ends: the database is at this TXID.
    At(u64),
    /// The WAL does not end where the newest local L0 does: commits after it (not yet synced), or a
    /// WAL that was checkpointed/replaced since, so the position cannot be proven.
    NotAt { newest_l0: u64 },
    /// There is no local L0 file at all (the database was never replicated from this directory).
    Unknown,
}

/// The live database as SQLite sees it, and its position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Live {
    pub summary: Summary,
    pub position: LivePosition,
}

/// Reads the live database at its current committed state (see the module doc).
pub fn live(db: &Path, meta_dir: &Path, busy_timeout: Duration) -> Result<Live, VerifyError> {
    // Attempts: a writer may restart the WAL between our read transaction and the scan only in the
    // one case SQLite allows it (every frame already checkpointed); the header check catches it.
    for _ in 0..5 {
        if let Some(live) = live_once(db, meta_dir, busy_timeout)? {
            return Ok(live);
        }
    }
    Err(VerifyError::Unstable(db.to_path_buf()))
}

fn live_once(
    db: &Path,
    meta_dir: &Path,
    busy_timeout: Duration,
) -> Result<Option<Live>, VerifyError> {
    let wal_path = crate::replication::db::wal_path(db);
    // Opened before the connection and closed after it (module doc); the wal-index likewise, when
    // there is one already (without one, this connection is the only one and SQLite's recovery
    // counts the whole valid WAL as committed, as `committed_end(None)` does).
    let db_file = File::open(db).map_err(io("open", db))?;
    let shm_file = shm::open(db).map_err(io("open", &shm::shm_path(db)))?;
    let mut wal_file = match File::open(&wal_path) {
        Ok(f) => Some(f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io("open", &wal_path)(e)),
    };
    let sqlite = |op| {
        let path = db.to_path_buf();
        move |source| VerifyError::Sqlite { path, op, source }
    };
    let conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sqlite("open read-only"))?;
    conn.busy_timeout(busy_timeout)
        .map_err(sqlite("busy_timeout"))?;
    // Closing must never try to checkpoint (and so to lock the file exclusively).
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
        true,
    )
    .map_err(sqlite("no_ckpt_on_close"))?;
    conn.execute_batch("BEGIN").map_err(sqlite("begin"))?;
    conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
        r.get::<_, i64>(0)
    })
    .map_err(sqlite("start read transaction"))?;

    let result = (|| {
        let header = match wal_file.as_mut() {
            Some(f) => wal::read_header(f).map_err(|source| VerifyError::Wal {
                path: wal_path.clone(),
                source,
            })?,
            None => None,
        };
        let scan = match (header, wal_file.as_mut()) {
            (Some(h), Some(f)) => {
                let committed = shm::committed_end(shm_file.as_ref(), &h).map_err(|source| {
                    VerifyError::Shm {
                        path: db.to_path_buf(),
                        source,
                    }
                })?;
                Some(
                    wal::scan_committed(f, &h, wal::WAL_HEADER_SIZE, 0, committed).map_err(
                        |source| VerifyError::Wal {
                            path: wal_path.clone(),
                            source,
                        },
                    )?,
                )
            }
            _ => None,
        };
        let page_size = match &scan {
            Some(s) => s.header.page_size,
            None => db_page_size(&db_file, db)?,
        };
        let ps = u64::from(page_size);
        let pages = match &scan {
            Some(s) if s.commit > 0 => s.commit,
            _ => {
                let len = db_file.metadata().map_err(io("stat", db))?.len();
                u32::try_from(len / ps).map_err(|_| VerifyError::Format {
                    path: db.to_path_buf(),
                    what: format!("{len} bytes is more pages than SQLite allows"),
                })?
            }
        };
        let lock = ltx::lock_pgno(page_size);
        let mut buf = vec![0u8; page_size as usize];
        let mut sum = DbChecksum::default();
        for pgno in (1..=pages).filter(|p| *p != lock) {
            match (scan.as_ref().and_then(|s| s.pages.get(&pgno)), &wal_file) {
                (Some(&offset), Some(f)) => f
                    .read_exact_at(&mut buf, offset)
                    .map_err(io("read", &wal_path))?,
                _ => db_file
                    .read_exact_at(&mut buf, u64::from(pgno - 1) * ps)
                    .map_err(io("read", db))?,
            }
            sum.add(pgno, &buf);
        }
        // The WAL must still be the generation that was scanned.
        if let Some(f) = wal_file.as_mut() {
            let again = wal::read_header(f).map_err(|source| VerifyError::Wal {
                path: wal_path.clone(),
                source,
            })?;
            if again != header {
                return Ok(None);
            }
        }
        let summary = Summary {
            page_size,
            pages,
            checksum: sum.value(),
        };
        let newest = Meta::new(meta_dir.to_path_buf()).newest_header()?;
        let position = position(newest.as_ref(), scan.as_ref().map(|s| (s.header, s.end)));
        Ok(Some(Live { summary, position }))
    })();
    let _ = conn.execute_batch("ROLLBACK");
    drop(conn);
    drop(db_file);
    drop(wal_file);
    result
}

/// The live TXID is proven only when the WAL's committed end is exactly the newest L0's end, in the
/// same WAL generation (same salts).
fn position(newest: Option<&Header>, wal: Option<(wal::WalHeader, u64)>) -> LivePosition {
    let Some(h) = newest else {
        return LivePosition::Unknown;
    };
    let l0_end = h.wal_offset.max(0) as u64 + h.wal_size.max(0) as u64;
    match wal {
        Some((wh, end)) if (wh.salt1, wh.salt2) == (h.wal_salt1, h.wal_salt2) && end == l0_end => {
            LivePosition::At(h.max_txid)
        }
        _ => LivePosition::NotAt {
            newest_l0: h.max_txid,
        },
    }
}

/// Page size from the database header (bytes 16-17; 1 means 65536).
fn db_page_size(f: &File, path: &Path) -> Result<u32, VerifyError> {
    let mut b = [0u8; 2];
    f.read_exact_at(&mut b, 16)
        .map_err(io("read header of", path))?;
    let ps = match u16::from_be_bytes(b) {
        1 => 65536,
        n => u32::from(n),
    };
    if ltx::is_valid_page_size(ps) {
        Ok(ps)
    } else {
        Err(VerifyError::Format {
            path: path.to_path_buf(),
            what: format!("invalid page size {ps} in the database header"),
        })
    }
}

/// What comparing a replica with the live database concluded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The replica restores to exactly the live database, and the copy passes the integrity check.
    Ok,
    IntegrityFailed,
    /// Same TXID, different content.
    Mismatch,
    /// The live database is not at the replica's TXID now (or its TXID is unknown).
    NotComparable,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::IntegrityFailed => "integrity_failed",
            Verdict::Mismatch => "mismatch",
            Verdict::NotComparable => "not_comparable",
        }
    }
}

/// Everything [`verify_replica`] found.
#[derive(Clone, Debug)]
pub struct Verification {
    pub replica_txid: u64,
    pub restored: Summary,
    /// `ok`, or what `PRAGMA integrity_check` said of the restored copy.
    pub integrity: String,
    pub live: Live,
    pub verdict: Verdict,
    /// One line saying why, and what to do when the verdict is not [`Verdict::Ok`].
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyReplicaError {
    #[error("the replica holds no backup")]
    NoBackup,
    #[error("read the replica: {0}")]
    Replica(#[source] RestoreError),
    #[error("read the live database: {0}")]
    Live(#[source] VerifyError),
    #[error("create a temp directory for the restored copy: {0}")]
    Temp(#[source] std::io::Error),
    #[error("restore the replica: {0}")]
    Restore(#[source] RestoreError),
    #[error("integrity check of the restored copy: {0}")]
    Integrity(#[source] RestoreError),
    #[error("checksum of the restored copy: {0}")]
    Summary(#[source] VerifyError),
}

/// Restores the replica's latest state (TXID T) into a private temp directory (every LTX file
/// checksum is checked on the way), runs `PRAGMA integrity_check` on the copy, and compares its
/// database checksum with the live database's at T. Writes nothing to the live database, its meta
/// directory or the replica; the copy is removed before returning.
pub fn verify_replica(
    replica: &dyn ReplicaClient,
    db: &Path,
    meta_dir: &Path,
    busy_timeout: Duration,
) -> Result<Verification, VerifyReplicaError> {
    // T is fixed by the plan; the live database is read right after, so a running replicator has
    // the least time to move past T.
    let files = match restore::plan(replica, Target::Latest) {
        Err(RestoreError::TxNotAvailable) => return Err(VerifyReplicaError::NoBackup),
        r => r.map_err(VerifyReplicaError::Replica)?,
    };
    let live = self::live(db, meta_dir, busy_timeout).map_err(VerifyReplicaError::Live)?;

    let tmp = TempDir::create().map_err(VerifyReplicaError::Temp)?;
    let copy = tmp.0.join("replica.db");
    let report = restore::restore_files(replica, &files, &copy, &RestoreOptions::default())
        .map_err(VerifyReplicaError::Restore)?;
    let integrity = match restore::integrity_check(&copy, IntegrityCheck::Full) {
        Ok(()) => "ok".to_string(),
        Err(RestoreError::Integrity { result, .. }) => result,
        Err(e) => return Err(VerifyReplicaError::Integrity(e)),
    };
    let restored = file_summary(&copy, report.page_size).map_err(VerifyReplicaError::Summary)?;
    drop(tmp);

    let (verdict, message) = judge(report.txid, &restored, &integrity, &live);
    Ok(Verification {
        replica_txid: report.txid,
        restored,
        integrity,
        live,
        verdict,
        message,
    })
}

/// Decides the verdict and the one-line explanation.
fn judge(txid: u64, restored: &Summary, integrity: &str, live: &Live) -> (Verdict, String) {
    let at = |t: u64| format!("{t:016x}");
    if integrity != "ok" {
        return (
            Verdict::IntegrityFailed,
            format!(
                "the replica at TXID {} restores to a database that fails PRAGMA integrity_check: {integrity}",
                at(txid)
            ),
        );
    }
    if *restored == live.summary {
        return (
            Verdict::Ok,
            format!(
                "the replica at TXID {} restores to exactly the live database ({} pages)",
                at(txid),
                restored.pages
            ),
        );
    }
    let retry = "run `litevisor replicate -once` or wait for the next sync, then verify again";
    match live.position {
        LivePosition::At(t) if t == txid => (
            Verdict::Mismatch,
            format!(
                "MISMATCH: the replica at TXID {} restores to a different database than the live one \
                 at the same TXID (checksum {:016x} vs live {:016x}, {} vs {} pages)",
                at(txid),
                restored.checksum,
                live.summary.checksum,
                restored.pages,
                live.summary.pages
            ),
        ),
        LivePosition::At(t) => (
            Verdict::NotComparable,
            format!(
                "live DB is at TXID {}, replica at {}: {retry}",
                at(t),
                at(txid)
            ),
        ),
        LivePosition::NotAt { newest_l0 } => (
            Verdict::NotComparable,
            format!(
                "live DB has changed since TXID {} (its newest local sync), replica at {}: {retry}",
                at(newest_l0),
                at(txid)
            ),
        ),
        LivePosition::Unknown => (
            Verdict::NotComparable,
            format!(
                "live DB's TXID is unknown (no local replication state next to it), replica at {}: {retry}",
                at(txid)
            ),
        ),
    }
}

/// A private (0700) directory under `$TMPDIR` for the restored copy, removed with everything in it
/// on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn create() -> std::io::Result<TempDir> {
        use std::os::unix::fs::DirBuilderExt;
        let base = std::env::temp_dir();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        for attempt in 0..100u32 {
            let dir = base.join(format!(
                "litevisor-verify-{}-{nanos:x}-{attempt}",
                std::process::id()
            ));
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => return Ok(TempDir(dir)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(std::io::Error::other("no free temp directory name"))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_checksum_sets_the_flag_and_depends_on_pgno_and_data() {
        let page = vec![7u8; 4096];
        let a = page_checksum(1, &page);
        assert_ne!(a & CHECKSUM_FLAG, 0);
        assert_ne!(a, page_checksum(2, &page));
        let mut other = page.clone();
        other[100] ^= 1;
        assert_ne!(a, page_checksum(1, &other));
        // CRC-64/GO-ISO of BE32(1) ‖ page, computed independently of the digest API.
        let mut bytes = 1u32.to_be_bytes().to_vec();
        bytes.extend_from_slice(&page);
        assert_eq!(a, CHECKSUM_FLAG | CRC64.checksum(&bytes));
    }

    #[test]
    fn database_checksum_is_order_independent() {
        let pages: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 512]).collect();
        let mut fwd = DbChecksum::default();
        for (i, p) in pages.iter().enumerate() {
            fwd.add(i as u32 + 1, p);
        }
        let mut rev = DbChecksum::default();
        for (i, p) in pages.iter().enumerate().rev() {
            rev.add(i as u32 + 1, p);
        }
        assert_eq!(fwd.value(), rev.value());
        assert_ne!(fwd.value(), DbChecksum::default().value());
    }

    fn sqlite_db(dir: &Path) -> PathBuf {
        let path = dir.join("app.db");
        let c = Connection::open(&path).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode=wal; PRAGMA wal_autocheckpoint=0; CREATE TABLE t(x);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 200)
             INSERT INTO t SELECT randomblob(300) FROM n;",
        )
        .unwrap();
        std::mem::forget(c); // keep the WAL: the last close would checkpoint and delete it
        path
    }

    #[test]
    fn live_checksum_with_wal_equals_the_checkpointed_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = sqlite_db(dir.path());
        let wal = crate::replication::db::wal_path(&path);
        assert!(std::fs::metadata(&wal).unwrap().len() > 32);
        let meta = dir.path().join("meta");
        let live = live(&path, &meta, Duration::from_secs(1)).unwrap();
        assert_eq!(live.position, LivePosition::Unknown);

        // The same content moved from the WAL into the file hashes the same.
        let c = Connection::open(&path).unwrap();
        c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
        assert_eq!(std::fs::metadata(&wal).unwrap().len(), 0);
        let file = file_summary(&path, live.summary.page_size).unwrap();
        assert_eq!(file, live.summary);
        let again = super::live(&path, &meta, Duration::from_secs(1)).unwrap();
        assert_eq!(again.summary, live.summary);

        c.execute_batch("INSERT INTO t VALUES (1)").unwrap();
        let changed = super::live(&path, &meta, Duration::from_secs(1)).unwrap();
        assert_ne!(changed.summary.checksum, live.summary.checksum);
    }

    #[test]
    fn position_needs_same_salts_and_end() {
        let h = Header {
            max_txid: 9,
            wal_offset: 32,
            wal_size: 4120 * 2,
            wal_salt1: 1,
            wal_salt2: 2,
            ..Header::default()
        };
        let wh = |s1, s2| wal::WalHeader {
            big_endian_checksums: false,
            page_size: 4096,
            checkpoint_seq: 0,
            salt1: s1,
            salt2: s2,
            checksum1: 0,
            checksum2: 0,
        };
        let end = 32 + 4120 * 2;
        assert_eq!(
            position(Some(&h), Some((wh(1, 2), end))),
            LivePosition::At(9)
        );
        assert_eq!(
            position(Some(&h), Some((wh(1, 2), end + 4120))),
            LivePosition::NotAt { newest_l0: 9 }
        );
        assert_eq!(
            position(Some(&h), Some((wh(3, 2), end))),
            LivePosition::NotAt { newest_l0: 9 }
        );
        assert_eq!(
            position(Some(&h), None),
            LivePosition::NotAt { newest_l0: 9 }
        );
        assert_eq!(position(None, Some((wh(1, 2), end))), LivePosition::Unknown);
    }

    fn summary(checksum: u64, pages: u32) -> Summary {
        Summary {
            page_size: 4096,
            pages,
            checksum,
        }
    }

    fn live_at(checksum: u64, position: LivePosition) -> Live {
        Live {
            summary: summary(checksum, 3),
            position,
        }
    }

    #[test]
    fn verdicts() {
        let r = summary(7, 3);
        let ok = judge(5, &r, "ok", &live_at(7, LivePosition::Unknown));
        assert_eq!(ok.0, Verdict::Ok);
        let bad = judge(
            5,
            &r,
            "*** in database main ***",
            &live_at(7, LivePosition::At(5)),
        );
        assert_eq!(bad.0, Verdict::IntegrityFailed);
        assert!(bad.1.contains("integrity_check"), "{}", bad.1);
        let mismatch = judge(5, &r, "ok", &live_at(8, LivePosition::At(5)));
        assert_eq!(mismatch.0, Verdict::Mismatch);
        assert!(mismatch.1.contains("MISMATCH"), "{}", mismatch.1);
        let ahead = judge(5, &r, "ok", &live_at(8, LivePosition::At(6)));
        assert_eq!(ahead.0, Verdict::NotComparable);
        assert!(
            ahead
                .1
                .contains("live DB is at TXID 0000000000000006, replica at 0000000000000005"),
            "{}",
            ahead.1
        );
        let moved = judge(
            5,
            &r,
            "ok",
            &live_at(8, LivePosition::NotAt { newest_l0: 5 }),
        );
        assert_eq!(moved.0, Verdict::NotComparable);
        assert_eq!(
            judge(5, &r, "ok", &live_at(8, LivePosition::Unknown)).0,
            Verdict::NotComparable
        );
    }
}
