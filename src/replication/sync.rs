//! WAL -> L0: proves the WAL still continues from the replication position (Litestream's
//! `verify`, section 3.4 of the reference) and writes the next L0 file: the committed frames past the
//! position, or a full snapshot of the database when continuity cannot be proven. Never skips data.
//!
//! Pure file work (the DB file and its `-wal`); the caller owns the SQLite connections and the
//! locking discipline (`db.rs`) and runs this on the database's own thread.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::replication::ltx::{self, HEADER_FLAG_NO_CHECKSUM, Header, PageEncoding};
use crate::replication::meta::{Meta, MetaError};
use crate::replication::shm::{self, ShmError};
use crate::replication::wal::{self, WAL_FRAME_HEADER_SIZE, WAL_HEADER_SIZE, WalError, WalHeader};

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("WAL {path}: {source}")]
    Wal { path: PathBuf, source: WalError },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("database {path}: page {pgno} is past the end of the file")]
    ShortDb { path: PathBuf, pgno: u32 },
    /// The WAL has no valid header: the caller forces a frame (db.rs) and syncs again.
    #[error("WAL {0} has no valid header")]
    NoWal(PathBuf),
    #[error("database {path}: {source}")]
    Shm { path: PathBuf, source: ShmError },
}

/// Where replication stands: the newest L0's TXID and the WAL range it ended at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub txid: u64,
    /// WALOffset + WALSize of the newest L0: where the next incremental sync resumes.
    pub wal_offset: u64,
    pub salt1: u32,
    pub salt2: u32,
    /// Database size in pages after the newest L0.
    pub commit: u32,
    pub page_size: u32,
}

impl Position {
    pub fn from_header(h: &Header) -> Position {
        Position {
            txid: h.max_txid,
            wal_offset: (h.wal_offset.max(0) + h.wal_size.max(0)) as u64,
            salt1: h.wal_salt1,
            salt2: h.wal_salt2,
            commit: h.commit,
            page_size: h.page_size,
        }
    }
}

/// What the next sync must write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Committed frames from `start` of the WAL generation with `salts`.
    Incremental { start: u64 },
    /// The whole database: continuity is not proven.
    Snapshot { reason: String },
}

/// State carried between syncs on the database's thread.
#[derive(Debug, Default)]
pub struct SyncState {
    pub pos: Option<Position>,
    /// The last sync ended exactly at the end of the WAL file (so a shorter WAL later is a
    /// checkpoint truncation, not an overwrite). In memory only, like Litestream.
    pub synced_to_wal_end: bool,
    /// Set by litevisor's own checkpoint: it started the WAL generation with these salts right after
    /// syncing everything up to `pos`, under its write barrier.
    pub expected_restart: Option<(u64, u32, u32)>,
    /// Forces the next sync to be a snapshot (`-force-snapshot`, a replica gap).
    pub force_snapshot: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    pub header: Header,
    pub size: u64,
    /// Why a snapshot was written (None for an incremental L0).
    pub snapshot_reason: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncOutcome {
    pub written: Option<Written>,
    /// More committed frames follow (the chunk hit max-sync-wal-bytes).
    pub limited: bool,
    /// Frames of this WAL generation lie past what SQLite has committed: a writer is publishing a
    /// commit (its frames are written, the wal-index not updated yet), or died doing so. The caller
    /// looks again soon: the publication itself raises no file event.
    pub unpublished: bool,
}

#[derive(Clone, Copy, Debug)]
pub struct SyncOptions {
    pub max_wal_bytes: u64,
    pub encoding: PageEncoding,
}

/// The files of one database the sync reads.
#[derive(Clone, Debug)]
pub struct DbFiles {
    pub db: PathBuf,
    pub wal: PathBuf,
    pub page_size: u32,
}

/// One sync pass: verify, then write at most one L0 file (`pos.txid + 1`).
/// `db_file` and `shm` must be the long-lived handles of `db.rs` (see `Db::file` for why).
pub fn sync_once(
    files: &DbFiles,
    db_file: &File,
    shm: Option<&File>,
    meta: &Meta,
    state: &mut SyncState,
    opts: &SyncOptions,
) -> Result<SyncOutcome, SyncError> {
    let mut wal_file = match File::open(&files.wal) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(SyncError::NoWal(files.wal.clone()));
        }
        Err(e) => return Err(io_err("open", &files.wal, e)),
    };
    let wal_err = |source| SyncError::Wal {
        path: files.wal.clone(),
        source,
    };
    let Some(header) = wal::read_header(&mut wal_file).map_err(wal_err)? else {
        return Err(SyncError::NoWal(files.wal.clone()));
    };
    let wal_len = wal_file
        .metadata()
        .map_err(|e| io_err("stat", &files.wal, e))?
        .len();

    // Read before the WAL is scanned: frames published after this read wait for the next sync.
    let committed = shm::committed_end(shm, &header).map_err(|source| SyncError::Shm {
        path: files.db.clone(),
        source,
    })?;
    let unpublished = committed < wal_len
        && frame_salts_at(&mut wal_file, committed)? == Some((header.salt1, header.salt2));

    let plan = verify(
        files,
        meta,
        state,
        &header,
        &mut wal_file,
        wal_len,
        committed,
    )?;
    let txid = state.pos.map_or(0, |p| p.txid) + 1;
    // An incremental plan whose resume point no longer matches becomes a snapshot, like any other
    // continuity break.
    let work = match plan {
        Plan::Incremental { start } => {
            match wal::scan_committed(&mut wal_file, &header, start, opts.max_wal_bytes, committed)
            {
                Ok(scan) => Ok((start, scan)),
                Err(WalError::ResumeMismatch { .. }) => {
                    Err("the frame before the sync position no longer matches".to_string())
                }
                Err(e) => return Err(wal_err(e)),
            }
        }
        Plan::Snapshot { reason } => Err(reason),
    };
    let mut source = L0Source {
        files,
        db_file,
        meta,
        header: &header,
        wal_file: &mut wal_file,
        txid,
        opts,
    };
    let (written, limited, end) = match work {
        Ok((start, scan)) => {
            if scan.end == start {
                // Nothing new; still adopt a proven new WAL generation so the position stays exact.
                state.synced_to_wal_end = start == wal_len;
                return Ok(SyncOutcome {
                    unpublished,
                    ..SyncOutcome::default()
                });
            }
            let prev_commit = state.pos.map_or(0, |p| p.commit);
            let w = write_incremental(&mut source, &scan, prev_commit)?;
            (w, scan.limited, scan.end)
        }
        Err(reason) => {
            let (w, end) = write_snapshot(&mut source, reason, committed)?;
            (w, false, end)
        }
    };
    state.pos = Some(Position::from_header(&written.header));
    state.synced_to_wal_end = end == wal_len;
    state.expected_restart = None;
    Ok(SyncOutcome {
        written: Some(written),
        limited,
        unpublished: unpublished && !limited,
    })
}

/// Litestream's `verifyWithExecutor`, plus checks it lacks: a position past what SQLite counts as
/// committed (`committed`: frames a dying writer left that the replica must not keep building on), a
/// restarted WAL whose previous generation still has frames past the position, and litevisor's own
/// proven restarts.
pub fn verify(
    files: &DbFiles,
    meta: &Meta,
    state: &mut SyncState,
    header: &WalHeader,
    wal_file: &mut File,
    wal_len: u64,
    committed: u64,
) -> Result<Plan, SyncError> {
    let snapshot = |reason: &str| {
        Ok(Plan::Snapshot {
            reason: reason.to_string(),
        })
    };
    let expected_restart = state.expected_restart;
    if let Some(reason) = state.force_snapshot.take() {
        return Ok(Plan::Snapshot { reason });
    }
    let Some(pos) = state.pos else {
        return snapshot("no replication position yet");
    };
    if pos.page_size != header.page_size || pos.page_size != files.page_size {
        return snapshot("page size changed");
    }
    let salts = (header.salt1, header.salt2);
    if let Some((offset, s1, s2)) = expected_restart
        && offset == pos.wal_offset
        && (s1, s2) == salts
    {
        // Proven only if the previous generation ended at the position. Between litevisor's
        // barrier and the restart, the application may have appended a commit to it and
        // checkpointed that itself (its own auto-checkpoint), so the restart hides frames never
        // synced. Those frames are still in the file, past the position, with the old salts.
        return match frame_salts_at(wal_file, pos.wal_offset)? {
            Some(old) if old == (pos.salt1, pos.salt2) => {
                snapshot("wal restarted with frames of the previous generation never synced")
            }
            Some(new) if new == salts => {
                snapshot("the new wal generation overwrote the end of the previous one unseen")
            }
            _ => Ok(Plan::Incremental {
                start: WAL_HEADER_SIZE,
            }),
        };
    }
    let frame_size = WAL_FRAME_HEADER_SIZE + u64::from(header.page_size);
    if pos.wal_offset < WAL_HEADER_SIZE
        || !(pos.wal_offset - WAL_HEADER_SIZE).is_multiple_of(frame_size)
    {
        return snapshot("the position has no usable WAL offset");
    }
    if wal_len < pos.wal_offset {
        if state.synced_to_wal_end {
            return Ok(Plan::Incremental {
                start: WAL_HEADER_SIZE,
            });
        }
        return snapshot("wal truncated by another process");
    }
    let salt_match = salts == (pos.salt1, pos.salt2);
    if salt_match && pos.wal_offset > committed {
        return snapshot(
            "the replica holds WAL frames SQLite never committed (a writer died inside its commit)",
        );
    }
    if pos.wal_offset == WAL_HEADER_SIZE {
        return if salt_match {
            Ok(Plan::Incremental {
                start: WAL_HEADER_SIZE,
            })
        } else {
            snapshot("wal header salt reset")
        };
    }

    // The last synced frame must still be there, with the recorded salts and the same page bytes.
    let prev = pos.wal_offset - frame_size;
    let mut buf = vec![0u8; header.page_size as usize];
    let fh = match wal::read_frame(wal_file, prev, header.page_size, &mut buf) {
        Ok(fh) => fh,
        Err(WalError::ShortFrame { .. }) => return snapshot("wal truncated by another process"),
        Err(source) => {
            return Err(SyncError::Wal {
                path: files.wal.clone(),
                source,
            });
        }
    };
    if (fh.salt1, fh.salt2) != (pos.salt1, pos.salt2)
        || meta.find_page(pos.txid, fh.pgno)?.as_deref() != Some(&buf[..])
    {
        return snapshot("last synced frame no longer matches: wal overwritten by another process");
    }
    if salt_match {
        return Ok(Plan::Incremental {
            start: pos.wal_offset,
        });
    }

    // The WAL restarted; the previous generation ended at the position only if no frame of it
    // follows, and no third generation may have come and gone in between.
    if frame_salts_at(wal_file, pos.wal_offset)? == Some((pos.salt1, pos.salt2)) {
        return snapshot("wal restarted with frames of the previous generation never synced");
    }
    let mut offset = WAL_HEADER_SIZE;
    while offset < prev {
        match frame_salts_at(wal_file, offset)? {
            Some(s) if s == salts => offset += frame_size,
            Some(s) if s == (pos.salt1, pos.salt2) => break,
            _ => return snapshot("wal restarted more than once since the last sync"),
        }
    }
    Ok(Plan::Incremental {
        start: WAL_HEADER_SIZE,
    })
}

fn frame_salts_at(f: &mut File, offset: u64) -> Result<Option<(u32, u32)>, SyncError> {
    let mut hdr = [0u8; WAL_FRAME_HEADER_SIZE as usize];
    f.seek(SeekFrom::Start(offset))
        .map_err(|e| io_err("seek", Path::new("wal"), e))?;
    match f.read_exact(&mut hdr) {
        Ok(()) => Ok(Some((be32(&hdr[8..]), be32(&hdr[12..])))),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(io_err("read", Path::new("wal"), e)),
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn l0_header(
    txid: u64,
    page_size: u32,
    commit: u32,
    wal: &WalHeader,
    start: u64,
    end: u64,
) -> Header {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    Header {
        flags: HEADER_FLAG_NO_CHECKSUM,
        page_size,
        commit,
        min_txid: txid,
        max_txid: txid,
        timestamp_ms: now_ms,
        pre_apply_checksum: 0,
        wal_offset: start as i64,
        wal_size: (end - start) as i64,
        wal_salt1: wal.salt1,
        wal_salt2: wal.salt2,
        node_id: 0,
    }
}

/// What an L0 file at `txid` is written from: the database's files (the DB file and the WAL open
/// with its header), where it goes (`meta`) and how (`opts`).
struct L0Source<'a> {
    files: &'a DbFiles,
    db_file: &'a File,
    meta: &'a Meta,
    header: &'a WalHeader,
    wal_file: &'a mut File,
    txid: u64,
    opts: &'a SyncOptions,
}

fn write_incremental(
    src: &mut L0Source,
    scan: &wal::Scan,
    prev_commit: u32,
) -> Result<Written, SyncError> {
    let L0Source {
        files,
        db_file,
        meta,
        header,
        ref wal_file,
        txid,
        opts,
    } = *src;
    let page_size = header.page_size;
    let lock = ltx::lock_pgno(page_size);
    // Growth pages (prevCommit+1..commit) the WAL range does not carry come from the DB file, so
    // the merged chain always holds every page 1..commit.
    let growth: Vec<u32> = (prev_commit.saturating_add(1)..=scan.commit)
        .filter(|p| *p != lock && !scan.pages.contains_key(p))
        .collect();
    let h = l0_header(txid, page_size, scan.commit, header, scan.start, scan.end);
    let mut buf = vec![0u8; page_size as usize];
    let size = meta.write_l0(&h, opts.encoding, |enc| {
        let mut wal_pages = scan.pages.iter().peekable();
        let mut growth = growth.iter().peekable();
        loop {
            let next_wal = wal_pages.peek().map(|(p, _)| **p);
            let next_growth = growth.peek().map(|p| **p);
            let pgno = match (next_wal, next_growth) {
                (Some(w), Some(g)) if g < w => {
                    growth.next();
                    read_db_page(files, db_file, g, &mut buf)?;
                    g
                }
                (Some(w), _) => {
                    let (_, &data_offset) = wal_pages.next().expect("peeked");
                    read_at(wal_file, &files.wal, data_offset, &mut buf)?;
                    w
                }
                (None, Some(g)) => {
                    growth.next();
                    read_db_page(files, db_file, g, &mut buf)?;
                    g
                }
                (None, None) => break,
            };
            enc.encode_page(pgno, &buf)
                .map_err(|source| ltx_err(meta, txid, source))?;
        }
        Ok(())
    })?;
    Ok(Written {
        header: h,
        size,
        snapshot_reason: None,
    })
}

/// Every page 1..commit: the latest committed WAL version, else the DB file's. Streams one page at
/// a time; the WAL page map is the only thing held in memory.
fn write_snapshot(
    src: &mut L0Source,
    reason: String,
    committed: u64,
) -> Result<(Written, u64), SyncError> {
    let L0Source {
        files,
        db_file,
        meta,
        header,
        ref mut wal_file,
        txid,
        opts,
    } = *src;
    let scan =
        wal::scan_committed(wal_file, header, WAL_HEADER_SIZE, 0, committed).map_err(|source| {
            SyncError::Wal {
                path: files.wal.clone(),
                source,
            }
        })?;
    let page_size = header.page_size;
    let commit = if scan.commit > 0 {
        scan.commit
    } else {
        let len = db_file
            .metadata()
            .map(|m| m.len())
            .map_err(|e| io_err("stat", &files.db, e))?;
        (len / u64::from(page_size)) as u32
    };
    if commit == 0 {
        return Err(SyncError::ShortDb {
            path: files.db.clone(),
            pgno: 1,
        });
    }
    let lock = ltx::lock_pgno(page_size);
    let h = l0_header(txid, page_size, commit, header, WAL_HEADER_SIZE, scan.end);
    let mut buf = vec![0u8; page_size as usize];
    let size = meta.write_l0(&h, opts.encoding, |enc| {
        for pgno in (1..=commit).filter(|p| *p != lock) {
            match scan.pages.get(&pgno) {
                Some(&data_offset) => read_at(wal_file, &files.wal, data_offset, &mut buf)?,
                None => read_db_page(files, db_file, pgno, &mut buf)?,
            }
            enc.encode_page(pgno, &buf)
                .map_err(|source| ltx_err(meta, txid, source))?;
        }
        Ok(())
    })?;
    Ok((
        Written {
            header: h,
            size,
            snapshot_reason: Some(reason),
        },
        scan.end,
    ))
}

fn read_db_page(files: &DbFiles, f: &File, pgno: u32, buf: &mut [u8]) -> Result<(), MetaError> {
    let offset = u64::from(pgno - 1) * buf.len() as u64;
    read_at(f, &files.db, offset, buf).map_err(|e| match e {
        MetaError::Io { source, .. } if source.kind() == std::io::ErrorKind::UnexpectedEof => {
            MetaError::Io {
                op: "read page past the end of",
                path: files.db.clone(),
                source,
            }
        }
        e => e,
    })
}

fn read_at(f: &File, path: &Path, offset: u64, buf: &mut [u8]) -> Result<(), MetaError> {
    use std::os::unix::fs::FileExt;
    f.read_exact_at(buf, offset)
        .map_err(|source| MetaError::Io {
            op: "read",
            path: path.to_path_buf(),
            source,
        })
}

fn ltx_err(meta: &Meta, txid: u64, source: ltx::LtxError) -> MetaError {
    MetaError::Ltx {
        path: meta.l0_path(txid),
        source,
    }
}

fn io_err(op: &'static str, path: &Path, source: std::io::Error) -> SyncError {
    SyncError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    /// A WAL whose generation litevisor synced up to `pos`, then a commit appended to that same
    /// generation, checkpointed and restarted by another connection: the restart litevisor expected
    /// must not be taken as a continuation.
    #[test]
    fn an_expected_restart_with_old_frames_past_the_position_needs_a_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("a.db");
        let wal = dir.path().join("a.db-wal");
        let app = Connection::open(&db).unwrap();
        app.execute_batch(
            "PRAGMA journal_mode=wal; PRAGMA wal_autocheckpoint=0;
             CREATE TABLE t(x); INSERT INTO t VALUES (1);",
        )
        .unwrap();
        let header = |f: &mut File| wal::read_header(f).unwrap().unwrap();
        let old = header(&mut File::open(&wal).unwrap());
        let synced_end = std::fs::metadata(&wal).unwrap().len();
        let position = |end| Position {
            txid: 2,
            wal_offset: end,
            salt1: old.salt1,
            salt2: old.salt2,
            commit: 2,
            page_size: old.page_size,
        };
        let files = DbFiles {
            db: db.clone(),
            wal: wal.clone(),
            page_size: old.page_size,
        };
        let meta = Meta::new(dir.path().join("meta"));
        let plan_after_restart = |end: u64, app: &Connection| {
            // Checkpoint everything, then a write from a fresh snapshot restarts the WAL.
            app.execute_batch("PRAGMA wal_checkpoint(PASSIVE); INSERT INTO t VALUES (3);")
                .unwrap();
            let mut f = File::open(&wal).unwrap();
            let new = header(&mut f);
            assert_eq!(new.salt1, old.salt1.wrapping_add(1), "the WAL restarted");
            let mut state = SyncState {
                pos: Some(position(end)),
                expected_restart: Some((end, new.salt1, new.salt2)),
                ..SyncState::default()
            };
            let len = f.metadata().unwrap().len();
            verify(&files, &meta, &mut state, &new, &mut f, len, len).unwrap()
        };

        // A commit slipped into the old generation after the synced end: a snapshot.
        app.execute_batch("INSERT INTO t VALUES (2);").unwrap();
        match plan_after_restart(synced_end, &app) {
            Plan::Snapshot { reason } => assert!(reason.contains("never synced"), "{reason}"),
            other => panic!("continued past unsynced frames: {other:?}"),
        }

        // The old generation ended exactly at the synced end: the restart continues it.
        let old = header(&mut File::open(&wal).unwrap());
        let synced_end = std::fs::metadata(&wal).unwrap().len();
        let plan = {
            let position = Position {
                salt1: old.salt1,
                salt2: old.salt2,
                ..position(synced_end)
            };
            app.execute_batch("PRAGMA wal_checkpoint(PASSIVE); INSERT INTO t VALUES (4);")
                .unwrap();
            let mut f = File::open(&wal).unwrap();
            let new = header(&mut f);
            let mut state = SyncState {
                pos: Some(position),
                expected_restart: Some((synced_end, new.salt1, new.salt2)),
                ..SyncState::default()
            };
            let len = f.metadata().unwrap().len();
            verify(&files, &meta, &mut state, &new, &mut f, len, len).unwrap()
        };
        assert_eq!(
            plan,
            Plan::Incremental {
                start: WAL_HEADER_SIZE
            }
        );
    }
}
