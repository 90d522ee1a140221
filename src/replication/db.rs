//! One replicated database's SQLite connections and the locking discipline that keeps its WAL readable.
//!
//! Two connections per database, both owned by the database's sync thread (never an async worker):
//! - the *reader* holds a long read transaction so no other connection can restart or truncate the WAL
//!   behind litevisor's back. It is released only around litevisor's own checkpoint and re-taken right
//!   after. It also runs that checkpoint (PASSIVE only; litevisor never runs RESTART).
//! - the *writer* is the checkpoint barrier: `BEGIN IMMEDIATE` seals the WAL (no application commit can
//!   land between the final sync and the checkpoint), and its commit is a no-op write
//!   (`PRAGMA user_version` set to its own value) that starts the next WAL generation while the barrier
//!   is still held, so no application frame can be backfilled and overwritten unseen.
//!
//! Unlike Litestream, no `_litestream_seq`/`_litestream_lock` tables are created in the user's database
//! (issue #1428): the no-op `user_version` write forces a WAL frame (it only rewrites page 1's change
//! counter), and `BEGIN IMMEDIATE` takes the write lock without writing anything.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags, ffi};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database {path}: {op}: {source}")]
    Sqlite {
        path: PathBuf,
        op: &'static str,
        source: rusqlite::Error,
    },
    #[error("database {path}: journal_mode is {mode:?}, could not switch it to wal")]
    NotWal { path: PathBuf, mode: String },
    #[error("database {path}: invalid page size {page_size}")]
    PageSize { path: PathBuf, page_size: i64 },
    #[error("database {path}: open: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("database {path}: SQLITE_FCNTL_PERSIST_WAL failed with code {code}")]
    PersistWal { path: PathBuf, code: i32 },
}

/// Outcome of `PRAGMA wal_checkpoint(PASSIVE)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointResult {
    /// Frames in the WAL when the checkpoint ran.
    pub log_frames: i64,
    /// Frames copied back into the database file (all of them when `== log_frames`).
    pub checkpointed_frames: i64,
}

impl CheckpointResult {
    pub fn complete(&self) -> bool {
        self.log_frames >= 0 && self.checkpointed_frames == self.log_frames
    }
}

/// The `-wal` file next to `db`.
pub fn wal_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// Litestream's local meta directory: `<dir>/.<dbfile>-litestream`.
pub fn meta_dir(db: &Path) -> PathBuf {
    let file = db
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    db.parent()
        .unwrap_or(Path::new("."))
        .join(format!(".{file}-litestream"))
}

/// The connections of one replicated database. Not `Sync`: lives on its database's sync thread.
pub struct Db {
    path: PathBuf,
    reader: Connection,
    writer: Connection,
    read_held: bool,
    barrier_held: bool,
    page_size: u32,
    /// The database file, open for as long as the connections are. POSIX record locks belong to the
    /// process and are ALL dropped when any descriptor of the file is closed, so litevisor must
    /// never open+close the database file on its own: that would silently release SQLite's SHARED
    /// lock and let the application's last close checkpoint and delete the WAL under us.
    /// Declared last: closed after the connections.
    file: std::fs::File,
    /// The wal-index (`-shm`), read to know what SQLite has committed ([`super::shm`]); held open
    /// for the same reason as `file` (SQLite's read marks are locks on it). `None` in exclusive
    /// locking mode, which has no such file.
    shm: Option<std::fs::File>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("path", &self.path)
            .field("page_size", &self.page_size)
            .finish()
    }
}

impl Db {
    /// Opens an existing database (never creates one), switches it to WAL mode, disables
    /// autocheckpoint on litevisor's connections, persists the WAL and takes the long read lock.
    pub fn open(path: &Path, busy_timeout: Duration) -> Result<Db, DbError> {
        let path = path.to_path_buf();
        let open = |op| {
            let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
            let conn =
                Connection::open_with_flags(&path, flags).map_err(|e| sqlite(&path, op, e))?;
            slim(&conn);
            conn.busy_timeout(busy_timeout)
                .map_err(|e| sqlite(&path, "busy_timeout", e))?;
            conn.execute_batch("PRAGMA wal_autocheckpoint = 0;")
                .map_err(|e| sqlite(&path, "wal_autocheckpoint", e))?;
            Ok::<_, DbError>(conn)
        };
        let reader = open("open reader connection")?;
        let mode: String = reader
            .query_row("PRAGMA journal_mode = wal", [], |r| r.get(0))
            .map_err(|e| sqlite(&path, "journal_mode=wal", e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(DbError::NotWal { path, mode });
        }
        let writer = open("open writer connection")?;
        let page_size: i64 = reader
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .map_err(|e| sqlite(&path, "page_size", e))?;
        if !(512..=65536).contains(&page_size) || !(page_size as u64).is_power_of_two() {
            return Err(DbError::PageSize { path, page_size });
        }
        let file = std::fs::File::open(&path).map_err(|source| DbError::Open {
            path: path.clone(),
            source,
        })?;
        let mut db = Db {
            path,
            reader,
            writer,
            read_held: false,
            barrier_held: false,
            page_size: page_size as u32,
            file,
            shm: None,
        };
        db.persist_wal()?;
        db.acquire_read()?;
        // The read transaction made SQLite create and map the wal-index.
        db.shm = super::shm::open(&db.path).map_err(|source| DbError::Open {
            path: super::shm::shm_path(&db.path),
            source,
        })?;
        Ok(db)
    }

    pub fn page_size(&self) -> u32 {
        self.page_size
    }

    /// The long-lived database file handle: read pages through it, never through a new descriptor.
    pub fn file(&self) -> &std::fs::File {
        &self.file
    }

    /// True when the database's path now names another file than the one these connections
    /// opened: the database was replaced under litevisor (renamed over, e.g. restored from
    /// elsewhere). The connections keep reading the old, unlinked file, so the caller reopens.
    /// False when the path is gone (a deleted database is handled as such) or cannot be read.
    pub fn replaced(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        let (Ok(open), Ok(now)) = (self.file.metadata(), std::fs::metadata(&self.path)) else {
            return false;
        };
        (open.dev(), open.ino()) != (now.dev(), now.ino())
    }

    /// The long-lived wal-index handle (see [`super::shm`]).
    pub fn shm(&self) -> Option<&std::fs::File> {
        self.shm.as_ref()
    }

    /// Keeps the `-wal` file when connections close, so a restart finds the frames it has not synced.
    fn persist_wal(&mut self) -> Result<(), DbError> {
        for conn in [&self.reader, &self.writer] {
            let mut on: libc::c_int = 1;
            // SAFETY: the handle is valid while `conn` lives; the file control reads/writes one int.
            let code = unsafe {
                ffi::sqlite3_file_control(
                    conn.handle(),
                    c"main".as_ptr(),
                    ffi::SQLITE_FCNTL_PERSIST_WAL,
                    (&mut on as *mut libc::c_int).cast(),
                )
            };
            if code != ffi::SQLITE_OK {
                return Err(DbError::PersistWal {
                    path: self.path.clone(),
                    code,
                });
            }
        }
        Ok(())
    }

    /// Starts the long read transaction (idempotent).
    pub fn acquire_read(&mut self) -> Result<(), DbError> {
        if self.read_held {
            return Ok(());
        }
        self.reader
            .execute_batch("BEGIN")
            .map_err(|e| sqlite(&self.path, "begin read lock", e))?;
        // The read transaction starts with the first read of the database.
        if let Err(e) = self
            .reader
            .query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
                r.get::<_, i64>(0)
            })
        {
            let _ = self.reader.execute_batch("ROLLBACK");
            return Err(sqlite(&self.path, "take read lock", e));
        }
        self.read_held = true;
        Ok(())
    }

    pub fn release_read(&mut self) -> Result<(), DbError> {
        if !self.read_held {
            return Ok(());
        }
        self.read_held = false;
        self.reader
            .execute_batch("ROLLBACK")
            .map_err(|e| sqlite(&self.path, "release read lock", e))
    }

    /// Forces a WAL frame (so a WAL header exists) with a no-op write; re-takes the read lock after.
    pub fn force_wal_frame(&mut self) -> Result<(), DbError> {
        self.release_read()?;
        let result = self
            .begin_barrier()
            .and_then(|()| self.commit_barrier_with_write());
        if result.is_err() {
            self.rollback_barrier();
        }
        self.acquire_read()?;
        result
    }

    /// Takes the write lock on the writer connection (waits up to busy_timeout for the application).
    pub fn begin_barrier(&mut self) -> Result<(), DbError> {
        self.writer
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| sqlite(&self.path, "begin immediate", e))?;
        self.barrier_held = true;
        Ok(())
    }

    /// Commits the barrier with a no-op write: it appends one frame (page 1), or starts a new WAL
    /// generation when the previous one was fully checkpointed and no reader pins it.
    pub fn commit_barrier_with_write(&mut self) -> Result<(), DbError> {
        let v: i64 = self
            .writer
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| sqlite(&self.path, "read user_version", e))?;
        self.writer
            .execute_batch(&format!("PRAGMA user_version = {v}; COMMIT;"))
            .map_err(|e| sqlite(&self.path, "forced wal write", e))?;
        self.barrier_held = false;
        Ok(())
    }

    pub fn rollback_barrier(&mut self) {
        if self.barrier_held {
            let _ = self.writer.execute_batch("ROLLBACK");
            self.barrier_held = false;
        }
    }

    /// Caps the WAL file size after the writer's next WAL restart (`None` = no cap). Used by the
    /// emergency valve instead of TRUNCATE: the restart happens under litevisor's own barrier, so no
    /// application frame can be checkpointed and truncated before it was synced.
    pub fn set_wal_size_limit(&mut self, limit: Option<u64>) -> Result<(), DbError> {
        let v = limit.map_or(-1, |l| l as i64);
        self.writer
            .query_row(&format!("PRAGMA journal_size_limit = {v}"), [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|_| ())
            .map_err(|e| sqlite(&self.path, "journal_size_limit", e))
    }

    /// `PRAGMA wal_checkpoint(PASSIVE)` on the reader connection. The caller must have released the
    /// read lock (and normally holds the barrier). With `wait_readers`, retries until every frame is
    /// backfilled or the deadline passes (the emergency valve waiting for long application readers).
    pub fn checkpoint_passive(
        &mut self,
        wait_readers: Option<Instant>,
    ) -> Result<CheckpointResult, DbError> {
        debug_assert!(!self.read_held);
        loop {
            let (_busy, log, ckpt): (i64, i64, i64) = self
                .reader
                .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .map_err(|e| sqlite(&self.path, "wal_checkpoint(PASSIVE)", e))?;
            let result = CheckpointResult {
                log_frames: log,
                checkpointed_frames: ckpt,
            };
            match wait_readers {
                Some(deadline) if !result.complete() && Instant::now() < deadline => {
                    // Application readers pin older frames; they end on their own, SQLite offers no
                    // notification for that, so this emergency-only path polls briefly.
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => return Ok(result),
            }
        }
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        self.rollback_barrier();
        let _ = self.release_read();
    }
}

/// Pages litevisor's connections may cache: they read little through SQLite (pages are read from
/// the files directly), and a replicator of thousands of databases holds two connections each.
const CACHE_PAGES: i64 = 4;

/// Keeps one of litevisor's connections small: no lookaside buffer (SQLite preallocates about
/// 120 KiB per connection for it) and a page cache of a few pages (its first use otherwise
/// preallocates 20 pages). Neither changes what the connection does, only what it keeps around.
fn slim(conn: &Connection) {
    // SAFETY: the handle is valid while `conn` lives; LOOKASIDE takes (void*, int, int), and a null
    // buffer with size 0 turns lookaside off. Fails harmlessly (SQLITE_BUSY) if it were in use.
    unsafe {
        ffi::sqlite3_db_config(
            conn.handle(),
            ffi::SQLITE_DBCONFIG_LOOKASIDE,
            std::ptr::null_mut::<std::ffi::c_void>(),
            0 as libc::c_int,
            0 as libc::c_int,
        );
    }
    let _ = conn.execute_batch(&format!("PRAGMA cache_size = {CACHE_PAGES};"));
}

fn sqlite(path: &Path, op: &'static str, source: rusqlite::Error) -> DbError {
    DbError::Sqlite {
        path: path.to_path_buf(),
        op,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_db(dir: &Path) -> PathBuf {
        let path = dir.join("app.db");
        let c = Connection::open(&path).unwrap();
        c.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
            .unwrap();
        path
    }

    #[test]
    fn open_switches_to_wal_and_forced_write_creates_a_wal_frame() {
        let dir = tempfile::tempdir().unwrap();
        let path = new_db(dir.path());
        let mut db = Db::open(&path, crate::config::tuning::DEFAULT_BUSY_TIMEOUT).unwrap();
        let wal = wal_path(&path);
        let before = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        db.force_wal_frame().unwrap();
        let after = std::fs::metadata(&wal).unwrap().len();
        assert!(
            after >= before + 24 + u64::from(db.page_size()),
            "{before} -> {after}"
        );
        let app = Connection::open(&path).unwrap();
        let mode: String = app
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let tables: i64 = app
            .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            tables, 1,
            "litevisor must not create tables in the user's database"
        );
    }

    #[test]
    fn read_lock_blocks_application_truncate_and_wal_survives_close() {
        let dir = tempfile::tempdir().unwrap();
        let path = new_db(dir.path());
        let db = Db::open(&path, crate::config::tuning::DEFAULT_BUSY_TIMEOUT).unwrap();
        let app = Connection::open(&path).unwrap();
        app.busy_timeout(Duration::from_millis(100)).unwrap();
        app.execute_batch("INSERT INTO t VALUES (2);").unwrap();
        let wal = wal_path(&path);
        let size = std::fs::metadata(&wal).unwrap().len();
        let (busy, _, _): (i64, i64, i64) = app
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .unwrap();
        assert_eq!(
            busy, 1,
            "TRUNCATE must be refused while litevisor holds its read lock"
        );
        assert_eq!(std::fs::metadata(&wal).unwrap().len(), size);
        drop(app);
        drop(db);
        assert!(
            wal.exists(),
            "PERSIST_WAL keeps the -wal file after the last connection closes"
        );
    }
}
