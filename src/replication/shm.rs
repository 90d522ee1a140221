//! What SQLite itself counts as committed in the WAL: the wal-index header in the `-shm` file.
//!
//! A transaction is committed when its frames are in the WAL *and* the writer has published the new
//! last frame (`mxFrame`) in the wal-index header. A writer that dies between the two (a signal, an
//! OOM kill) leaves frames in the WAL whose checksums and commit marker are all valid, yet SQLite
//! never counts them: the next writer overwrites them, or the last connection's close truncates the
//! WAL. Shipping such frames would put a transaction in the replica's history that the database never
//! kept, so the sync reads no further than [`committed_end`] says.
//!
//! The header is read the way SQLite's readers read it (`walIndexTryHdr`): two copies, which must be
//! equal and carry a valid checksum, else the read is retried (a writer is in the middle of
//! publishing). Fields are in the machine's byte order; the salts are the WAL header's raw bytes.
//!
//! The `-shm` file is read through a descriptor that stays open as long as the SQLite connections
//! that hold locks on it ([`super::db::Db`]): SQLite's read marks are POSIX record locks on this
//! file, and closing *any* descriptor of a file drops all of the process's locks on it.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::replication::wal::{self, WAL_HEADER_SIZE, WalHeader};

/// `WALINDEX_MAX_VERSION` of SQLite's wal.c.
const INDEX_VERSION: u32 = 3_007_000;
/// One copy of the header (`sizeof(WalIndexHdr)`); the checksum covers the first 40 bytes.
const HEADER_COPY: usize = 48;
/// A writer publishes its header in a few stores: a torn read clears up within a few tries.
const TRIES: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum ShmError {
    #[error("cannot read the WAL index: {0}")]
    Io(#[from] io::Error),
    #[error("the WAL index stays inconsistent (torn or corrupt header); not syncing past it")]
    Inconsistent,
}

/// The wal-index header fields the sync needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexHeader {
    /// Number of the last committed frame (1-based; 0 = none) of the WAL generation with `salts`.
    pub mx_frame: u32,
    pub salts: (u32, u32),
}

/// `<db>-shm`.
pub fn shm_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-shm");
    PathBuf::from(name)
}

/// Opens `<db>-shm` for [`read_index_header`]; `None` when there is none (no connection has the
/// database open in WAL mode, or it uses exclusive locking mode). Keep it open for as long as the
/// SQLite connections live (see the module docs).
pub fn open(db: &Path) -> io::Result<Option<File>> {
    match File::open(shm_path(db)) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The wal-index header; `Ok(None)` when SQLite has not initialised it.
pub fn read_index_header(shm: &File) -> Result<Option<IndexHeader>, ShmError> {
    let mut both = [0u8; 2 * HEADER_COPY];
    for attempt in 0..TRIES {
        let n = shm.read_at(&mut both, 0)?;
        if n < both.len() {
            return Ok(None);
        }
        let (first, second) = both.split_at(HEADER_COPY);
        if first == second {
            match parse(first) {
                Parsed::Header(h) => return Ok(Some(h)),
                Parsed::Uninitialised => return Ok(None),
                Parsed::Torn => {}
            }
        }
        if attempt > 10 {
            std::thread::sleep(std::time::Duration::from_micros(100));
        } else {
            std::thread::yield_now();
        }
    }
    Err(ShmError::Inconsistent)
}

/// How far the WAL holds transactions SQLite counts as committed: the end offset of frame
/// `mxFrame` when the index describes the WAL generation `header` starts, else the WAL header's end
/// (the index still describes the previous generation: a writer restarting the WAL has not
/// committed anything in it yet). No index (`shm` is `None`: exclusive locking mode, where nobody
/// else can be writing): the whole valid WAL, as SQLite's own recovery would count it.
pub fn committed_end(shm: Option<&File>, header: &WalHeader) -> Result<u64, ShmError> {
    let Some(shm) = shm else {
        return Ok(u64::MAX);
    };
    Ok(match read_index_header(shm)? {
        Some(ix) if ix.salts == (header.salt1, header.salt2) => {
            WAL_HEADER_SIZE + u64::from(ix.mx_frame) * header.frame_size()
        }
        Some(_) => WAL_HEADER_SIZE,
        None => u64::MAX,
    })
}

enum Parsed {
    Header(IndexHeader),
    Uninitialised,
    Torn,
}

fn parse(h: &[u8]) -> Parsed {
    let ne32 = |at: usize| u32::from_ne_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
    let be32 = |at: usize| u32::from_be_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
    let is_init = h[12];
    if is_init == 0 {
        return Parsed::Uninitialised;
    }
    // SQLite sums the header's native-order words: the WAL checksum in the machine's byte order.
    let native_big_endian = cfg!(target_endian = "big");
    let sum = wal::checksum(native_big_endian, (0, 0), &h[..40]);
    if ne32(0) != INDEX_VERSION || sum != (ne32(40), ne32(44)) {
        return Parsed::Torn;
    }
    Parsed::Header(IndexHeader {
        mx_frame: ne32(16),
        salts: (be32(32), be32(36)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A real SQLite database in WAL mode with `rows` committed transactions, its connection open
    /// (so the wal-index exists and stays).
    fn database(dir: &Path, rows: usize) -> (PathBuf, rusqlite::Connection) {
        let db = dir.join("x.db");
        let c = rusqlite::Connection::open(&db).unwrap();
        c.busy_timeout(Duration::from_secs(5)).unwrap();
        c.execute_batch("PRAGMA journal_mode=wal; PRAGMA wal_autocheckpoint=0; CREATE TABLE t(v)")
            .unwrap();
        for i in 0..rows {
            c.execute("INSERT INTO t VALUES (?1)", [i as i64]).unwrap();
        }
        (db, c)
    }

    #[test]
    fn the_index_counts_exactly_the_frames_sqlite_committed() {
        let dir = tempfile::tempdir().unwrap();
        let (db, _c) = database(dir.path(), 5);
        let wal_file = db.with_file_name("x.db-wal");
        let mut f = File::open(&wal_file).unwrap();
        let header = wal::read_header(&mut f).unwrap().unwrap();
        let wal_len = f.metadata().unwrap().len();
        let shm = open(&db).unwrap().unwrap();
        let ix = read_index_header(&shm).unwrap().unwrap();
        assert_eq!(ix.salts, (header.salt1, header.salt2));
        // No checkpoint ran: every frame in the file is committed, and the index says so.
        assert_eq!(committed_end(Some(&shm), &header).unwrap(), wal_len);
        assert!(ix.mx_frame >= 6, "table + 5 rows: {}", ix.mx_frame);
    }

    #[test]
    fn a_torn_header_is_never_taken_and_a_missing_one_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert!(open(&dir.path().join("none.db")).unwrap().is_none());
        let (db, _c) = database(dir.path(), 1);
        let mut bytes = std::fs::read(shm_path(&db)).unwrap();
        let copy = dir.path().join("copy-shm");
        // The two copies disagree on mxFrame (a writer mid-publish that never finishes).
        bytes[HEADER_COPY + 16] ^= 0x40;
        std::fs::write(&copy, &bytes).unwrap();
        assert!(matches!(
            read_index_header(&File::open(&copy).unwrap()),
            Err(ShmError::Inconsistent)
        ));
        // Both copies changed alike: the checksum no longer holds.
        bytes[16] ^= 0x40;
        std::fs::write(&copy, &bytes).unwrap();
        assert!(matches!(
            read_index_header(&File::open(&copy).unwrap()),
            Err(ShmError::Inconsistent)
        ));
    }
}
