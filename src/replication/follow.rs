//! Follow mode (`restore -f`): after the restore, keep the output database current by polling the
//! replica and applying each new LTX file, while read-only readers query it.
//!
//! Design (why readers are never hurt): the output is kept in rollback-journal mode (header bytes
//! 18/19 = 1), so a reader's only view of it is the main file under SQLite's own file locks. Every
//! apply runs inside `BEGIN EXCLUSIVE` on a rusqlite connection to the output: SQLite itself takes
//! PENDING (no new readers), waits for the readers holding SHARED to finish, and takes EXCLUSIVE, all
//! with the exact byte-range fcntl protocol of os_unix.c (no reimplementation to get wrong). While it
//! is held, the merged pages are written in place through a second descriptor that stays open as
//! long as the connection (closing any descriptor of the file would drop the process's POSIX locks),
//! page 1's header gets bytes 18/19 = 1, the database size (offset 28) and a new change counter
//! (offset 24, copied to version-valid-for at 92) so every reader's page cache is invalidated, the
//! file is truncated to the new size and fsynced; only then the (write-free) transaction ends and the
//! readers waiting in their busy handler see the new whole state. Readers therefore need a busy
//! timeout (rusqlite and most drivers set one; the sqlite3 shell's default is none).
//!
//! Getting the lock: SQLite keeps PENDING only while its busy handler runs, so the follower's
//! handler ([`wait_for_readers`]) waits up to [`LOCK_ATTEMPT`] inside it, polling every
//! millisecond, before it lets go and looks at the stop flag. A shorter attempt starves under load:
//! each give-up lets new readers in, and when the readers' queries outlast every attempt the
//! follower never gets its turn. Within one process SQLite shares a read lock between connections
//! without looking at PENDING, so a process whose connections read back to back with no instant
//! of pause between them all holds the follower off until it pauses (a server with idle moments
//! does; a tight loop over several connections does not).
//!
//! Which files: one listing of L0 per interval while idle; files chaining from the applied TXID
//! (`min == txid + 1`, pre-apply checksum equal to the last applied post-apply checksum when both
//! are known) are fetched and merged. Litestream 0.5 and litevisor write L0 files without checksums,
//! so a replaced history is also recognized by the file at the applied TXID being listed with
//! another size or time than the one applied. When L0 cannot continue the chain (compaction or retention
//! deleted files not read yet, a snapshot after a continuity break) or the replica's history is a
//! different one (its TXID went back, or checksums do not chain: the primary was restored or taken
//! over), the whole restore plan (snapshot + levels) is restored into a staging file (streamed and
//! verified, bounded memory) and copied into the output under the same lock, so readers, even those
//! with open connections, switch atomically from the old state to the new one.
//!
//! Limit: the in-place write is not journaled; a follower killed in the middle of an apply leaves a
//! torn file, which the next `restore -f -force` replaces (readers see it torn until then).

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::replica::file::fsync_dir;
use crate::replica::{FileInfo, ReplicaClient};
use crate::replication::ltx;
use crate::replication::restore::{
    self, IntegrityCheck, RestoreError, RestoreOptions, Target, named_error, open_merger,
};

pub use crate::config::tuning::DEFAULT_FOLLOW_INTERVAL as DEFAULT_INTERVAL;

/// How long one attempt at the exclusive lock holds PENDING and waits for the readers inside it to
/// finish before the stop flag is looked at. It must outlast the readers' queries: an attempt that
/// gives up releases PENDING, new readers come in, and if every attempt is shorter than a query the
/// follower never gets its turn (seen with 200 ms under load: the follower stalled for a minute).
const LOCK_ATTEMPT: Duration = Duration::from_secs(1);

#[derive(Clone, Debug)]
pub struct FollowOptions {
    pub interval: Duration,
    pub integrity_check: IntegrityCheck,
}

/// What the follower did, for the caller's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FollowEvent {
    /// The initial restore to this TXID.
    Restored { txid: u64 },
    /// New L0 files applied.
    Applied { from: u64, to: u64 },
    /// L0 could not continue the chain (or the history changed): the whole plan was applied.
    Resynced { from: u64, to: u64, reason: String },
    /// A poll found nothing new: the output is as current as the replica.
    UpToDate { txid: u64 },
    /// A poll failed; the output stays at `txid` and the next interval tries again.
    Retrying { txid: u64, error: String },
}

/// The output database and what has been applied to it.
struct Output {
    path: PathBuf,
    /// Holds SQLite's locks during an apply.
    conn: rusqlite::Connection,
    /// The descriptor the pages are written through; lives as long as `conn` (see the module doc).
    file: File,
    txid: u64,
    /// Post-apply checksum of the last applied state, when known.
    checksum: Option<u64>,
    /// The replica file the applied state ends with, as listed: if the replica later lists another
    /// file under the same name, it holds another history (most LTX files carry no checksums).
    last: Option<FileInfo>,
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> RestoreError + 'a {
    move |source| RestoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

fn sqlite_err(path: &Path, e: rusqlite::Error) -> RestoreError {
    RestoreError::Io {
        op: "lock",
        path: path.to_path_buf(),
        source: io::Error::other(e.to_string()),
    }
}

/// Restores `out` (which must not exist or be empty) from the replica's latest state, then applies
/// new files every `interval` until `wait` returns true (a stop was asked). `wait(d)` sleeps up to
/// `d` and says whether to stop; `event` is told what was done.
pub fn follow(
    replica: &dyn ReplicaClient,
    out: &Path,
    opts: &FollowOptions,
    wait: &mut dyn FnMut(Duration) -> bool,
    event: &mut dyn FnMut(FollowEvent),
) -> Result<(), RestoreError> {
    // Sticky: a stop seen while waiting for the lock (which consumes the signal) ends the loop too.
    let mut stopped = false;
    let wait = &mut |d: Duration| {
        stopped = stopped || wait(d);
        stopped
    };
    let mut output = initial_restore(replica, out, opts)?;
    event(FollowEvent::Restored { txid: output.txid });
    while !wait(opts.interval) {
        // A replica that is briefly empty (being replaced) or unreachable is retried next interval:
        // the output keeps its last whole state meanwhile.
        match poll(replica, &mut output, wait) {
            Ok(Some(e)) => event(e),
            Ok(None) => event(FollowEvent::UpToDate { txid: output.txid }),
            Err(e) => event(FollowEvent::Retrying {
                txid: output.txid,
                error: e.to_string(),
            }),
        }
    }
    Ok(())
}

/// The ordinary restore into a staging file, switched to rollback-journal mode before it becomes
/// `out`, so no reader ever sees it in WAL mode.
fn initial_restore(
    replica: &dyn ReplicaClient,
    out: &Path,
    opts: &FollowOptions,
) -> Result<Output, RestoreError> {
    let files = restore::plan(replica, Target::Latest)?;
    let mut staging = out.as_os_str().to_owned();
    staging.push(".follow");
    let staging = PathBuf::from(staging);
    let ropts = RestoreOptions {
        integrity_check: opts.integrity_check,
        progress: true,
    };
    let result = (|| {
        let report = restore::restore_files(replica, &files, &staging, &ropts)?;
        let file = File::options()
            .read(true)
            .write(true)
            .open(&staging)
            .map_err(io_err("open", &staging))?;
        write_header(&file, &staging, report.pages, None)?;
        file.sync_all().map_err(io_err("fsync", &staging))?;
        fs::rename(&staging, out).map_err(io_err("rename followed database to", out))?;
        Ok(report)
    })();
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = fs::remove_file(&staging);
            return Err(e);
        }
    };
    if let Some(dir) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        fsync_dir(dir).map_err(io_err("fsync", dir))?;
    }
    let conn = rusqlite::Connection::open_with_flags(
        out,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| sqlite_err(out, e))?;
    conn.busy_handler(Some(wait_for_readers))
        .map_err(|e| sqlite_err(out, e))?;
    let file = File::options()
        .read(true)
        .write(true)
        .open(out)
        .map_err(io_err("open", out))?;
    write_txid_sidecar(out, report.txid);
    let checksum = match files.last() {
        Some(last) => last_checksum(replica, last)?,
        None => None,
    };
    Ok(Output {
        path: out.to_path_buf(),
        conn,
        file,
        txid: report.txid,
        checksum,
        last: files.last().cloned(),
    })
}

/// The post-apply checksum in a file's trailer (None when the file carries none), so the first file
/// applied after the restore is checked to chain from the restored state too.
fn last_checksum(replica: &dyn ReplicaClient, f: &FileInfo) -> Result<Option<u64>, RestoreError> {
    let name = || replica.locate(f.level, f.min_txid, f.max_txid);
    let r = replica.open_ltx(f.level, f.min_txid, f.max_txid)?;
    let file_err = |source| RestoreError::File {
        file: name(),
        source,
    };
    let mut dec = ltx::Decoder::new(io::BufReader::new(r)).map_err(file_err)?;
    let mut buf = vec![0u8; dec.header().page_size as usize];
    while dec.next_page(&mut buf).map_err(file_err)?.is_some() {}
    let trailer = dec.finish().map_err(file_err)?;
    Ok(Some(trailer.post_apply_checksum).filter(|&c| c != 0))
}

/// Sets page 1's header for a rollback-journal reader: bytes 18/19 = 1, the size in pages at 28, and a
/// change counter one past the current one at 24 and 92 (so cached pages are dropped).
/// `before`: the counter readers may have cached (read before page 1 was overwritten), which the new
/// one must differ from.
fn write_header(
    file: &File,
    path: &Path,
    pages: u32,
    before: Option<u32>,
) -> Result<(), RestoreError> {
    let mut h = [0u8; 100];
    file.read_exact_at(&mut h, 0)
        .map_err(io_err("read header of", path))?;
    let now = u32::from_be_bytes([h[24], h[25], h[26], h[27]]);
    let counter = now.max(before.unwrap_or(0)).wrapping_add(1);
    h[18] = 1;
    h[19] = 1;
    h[24..28].copy_from_slice(&counter.to_be_bytes());
    h[28..32].copy_from_slice(&pages.to_be_bytes());
    h[92..96].copy_from_slice(&counter.to_be_bytes());
    file.write_all_at(&h, 0)
        .map_err(io_err("write header of", path))
}

/// One poll: list L0, apply what chains, or fall back to the whole plan.
fn poll(
    replica: &dyn ReplicaClient,
    output: &mut Output,
    wait: &mut dyn FnMut(Duration) -> bool,
) -> Result<Option<FollowEvent>, RestoreError> {
    let l0 = replica.ltx_files(0)?;
    let newest = l0.last().map_or(0, |f| f.max_txid);
    if let Some(last) = &output.last
        && let Some(now) = l0.iter().find(|f| {
            (f.level, f.min_txid, f.max_txid) == (last.level, last.min_txid, last.max_txid)
        })
        && (now.size, now.created_at) != (last.size, last.created_at)
    {
        return resync(
            replica,
            output,
            wait,
            "the replica's file at the applied TXID was replaced (a new history)",
        );
    }
    let mut chain: Vec<FileInfo> = Vec::new();
    let mut cur = output.txid;
    for f in l0.iter().filter(|f| f.max_txid > output.txid) {
        if f.min_txid != cur + 1 {
            break;
        }
        cur = f.max_txid;
        chain.push(f.clone());
    }
    let from = output.txid;
    let applied = |output: &Output| {
        Ok(Some(FollowEvent::Applied {
            from,
            to: output.txid,
        }))
    };
    if !chain.is_empty() {
        match apply(replica, output, &chain, wait)? {
            Applied::Done => return applied(output),
            Applied::Stopped => return Ok(None),
            Applied::ChecksumMismatch => {
                return resync(
                    replica,
                    output,
                    wait,
                    "checksums do not chain (a new history)",
                );
            }
        }
    }
    if !l0.is_empty() && newest == output.txid {
        return Ok(None); // idle: nothing new
    }
    if !l0.is_empty() && newest < output.txid {
        // L0 ends below our TXID: the primary was restored or replaced.
        return resync(
            replica,
            output,
            wait,
            "the replica's TXID went back (a new history)",
        );
    }
    // L0 is empty or continues past a gap: files were compacted away before we read them, or a
    // snapshot followed a continuity break. First try to continue from the compacted levels (L1-L8,
    // then L0 again): only the files past our TXID are fetched.
    if newest > output.txid {
        let chain = higher_chain(replica, output.txid, &l0)?;
        if !chain.is_empty() {
            match apply(replica, output, &chain, wait)? {
                Applied::Done => return applied(output),
                Applied::Stopped => return Ok(None),
                Applied::ChecksumMismatch => {}
            }
        }
    }
    // No chain from our TXID: the whole plan says where the replica is.
    let plan = restore::plan(replica, Target::Latest)?;
    let top = plan.last().map_or(0, |f| f.max_txid);
    if top == output.txid {
        return Ok(None);
    }
    let reason = if top < output.txid {
        "the replica's TXID went back (a new history)"
    } else {
        "the replica no longer holds the L0 files after the applied TXID"
    };
    resync_with(replica, output, plan, wait, reason)
}

/// A chain continuing from `txid` over L1-L8 (the file reaching furthest at each step; a compacted
/// file may start before `txid + 1`: its pages are whole page images, so applying it to the state at
/// `txid` gives the state at its max) and then the L0 files after it. Empty if nothing continues.
fn higher_chain(
    replica: &dyn ReplicaClient,
    txid: u64,
    l0: &[FileInfo],
) -> Result<Vec<FileInfo>, RestoreError> {
    let mut levels = Vec::new();
    for level in 1..ltx::SNAPSHOT_LEVEL {
        levels.extend(replica.ltx_files(level)?);
    }
    let mut chain = Vec::new();
    let mut cur = txid;
    loop {
        let at = cur;
        let Some(f) = levels
            .iter()
            .filter(|f| f.min_txid <= at + 1 && f.max_txid > at)
            .max_by_key(|f| f.max_txid)
        else {
            break;
        };
        cur = f.max_txid;
        chain.push(f.clone());
    }
    if chain.is_empty() {
        return Ok(chain);
    }
    let after = cur;
    for f in l0.iter().filter(|f| f.max_txid > after) {
        if f.min_txid != cur + 1 {
            break;
        }
        cur = f.max_txid;
        chain.push(f.clone());
    }
    Ok(chain)
}

fn resync(
    replica: &dyn ReplicaClient,
    output: &mut Output,
    wait: &mut dyn FnMut(Duration) -> bool,
    reason: &str,
) -> Result<Option<FollowEvent>, RestoreError> {
    let plan = restore::plan(replica, Target::Latest)?;
    resync_with(replica, output, plan, wait, reason)
}

fn resync_with(
    replica: &dyn ReplicaClient,
    output: &mut Output,
    plan: Vec<FileInfo>,
    wait: &mut dyn FnMut(Duration) -> bool,
    reason: &str,
) -> Result<Option<FollowEvent>, RestoreError> {
    let from = output.txid;
    match plan.first() {
        None => return Err(RestoreError::TxNotAvailable),
        Some(f) if f.min_txid != 1 => {
            return Err(RestoreError::MissingFirstTxid {
                min: f.min_txid,
                file: replica.locate(f.level, f.min_txid, f.max_txid),
            });
        }
        Some(_) => {}
    }
    // The whole state is restored (streamed and verified, bounded memory) into a staging file
    // first; only the copy into the output happens under the lock.
    let mut staging = output.path.as_os_str().to_owned();
    staging.push(".follow");
    let staging = PathBuf::from(staging);
    let report = restore::restore_files(replica, &plan, &staging, &RestoreOptions::default());
    let result = report.and_then(|report| {
        let src = File::open(&staging).map_err(io_err("open", &staging))?;
        let size = u64::from(report.pages) * u64::from(report.page_size);
        let mut chunk = vec![0u8; 1 << 20];
        let path = output.path.clone();
        let done = write_locked(output, wait, report.pages, report.page_size, &mut |dst| {
            let mut offset = 0u64;
            while offset < size {
                let n = chunk.len().min((size - offset) as usize);
                src.read_exact_at(&mut chunk[..n], offset)
                    .map_err(io_err("read", &staging))?;
                dst.write_all_at(&chunk[..n], offset)
                    .map_err(io_err("write", &path))?;
                offset += n as u64;
            }
            Ok(())
        })?;
        Ok((done, report.txid))
    });
    let _ = fs::remove_file(&staging);
    let (done, txid) = result?;
    if !done {
        return Ok(None);
    }
    output.txid = txid;
    output.checksum = match plan.last() {
        Some(last) => last_checksum(replica, last)?,
        None => None,
    };
    output.last = plan.last().cloned();
    write_txid_sidecar(&output.path, output.txid);
    Ok(Some(FollowEvent::Resynced {
        from,
        to: output.txid,
        reason: reason.to_string(),
    }))
}

enum Applied {
    Done,
    Stopped,
    ChecksumMismatch,
}

/// Merges `files` (which continue the applied state) and writes the result into the output under
/// SQLite's EXCLUSIVE lock.
fn apply(
    replica: &dyn ReplicaClient,
    output: &mut Output,
    files: &[FileInfo],
    wait: &mut dyn FnMut(Duration) -> bool,
) -> Result<Applied, RestoreError> {
    let mut tmp = output.path.as_os_str().to_owned();
    tmp.push(".follow-merge");
    let (mut merger, names, _intermediate) = open_merger(replica, files, Path::new(&tmp))?;
    // The chain's first file must start from the state we hold (a compacted file starting before
    // it carries no checksum to compare).
    if let (Some(have), Some(first)) = (output.checksum, merger.first_header())
        && first.min_txid == output.txid + 1
        && !first.no_checksum()
        && first.pre_apply_checksum != have
    {
        return Ok(Applied::ChecksumMismatch);
    }
    let header = merger.header();
    let page_size = header.page_size as usize;
    let lock_page = ltx::lock_pgno(header.page_size);
    // Decode (and verify) every new page before taking the lock, so readers wait only for the
    // writes (memory: the pages changed since the last poll).
    let mut pages: Vec<(u32, Vec<u8>)> = Vec::new();
    let mut buf = vec![0u8; page_size];
    while let Some(pgno) = merger
        .next_page(&mut buf)
        .map_err(|e| named_error(&names, e))?
    {
        if pgno != lock_page {
            pages.push((pgno, buf.clone()));
        }
    }
    let trailers = merger
        .finish_trailers()
        .map_err(|e| named_error(&names, e))?;
    let checksum = trailers
        .last()
        .map(|t| t.post_apply_checksum)
        .filter(|&c| c != 0);

    let path = output.path.clone();
    let done = write_locked(output, wait, header.commit, header.page_size, &mut |dst| {
        for (pgno, data) in &pages {
            let offset = u64::from(*pgno - 1) * page_size as u64;
            dst.write_all_at(data, offset)
                .map_err(io_err("write", &path))?;
        }
        Ok(())
    })?;
    if !done {
        return Ok(Applied::Stopped);
    }
    output.txid = header.max_txid;
    output.checksum = checksum;
    output.last = files.last().cloned();
    write_txid_sidecar(&path, output.txid);
    Ok(Applied::Done)
}

/// Runs `write` on the output's descriptor under SQLite's EXCLUSIVE lock, then sets the header for
/// `pages` pages, truncates, fsyncs and releases the lock. False if a stop came while waiting for
/// the readers (nothing written).
fn write_locked(
    output: &mut Output,
    wait: &mut dyn FnMut(Duration) -> bool,
    pages: u32,
    page_size: u32,
    write: &mut dyn FnMut(&File) -> Result<(), RestoreError>,
) -> Result<bool, RestoreError> {
    let path = output.path.clone();
    // SQLite's own lock protocol: PENDING, wait for SHARED holders, EXCLUSIVE.
    loop {
        match output.conn.execute_batch("BEGIN EXCLUSIVE") {
            Ok(()) => break,
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy =>
            {
                if wait(Duration::ZERO) {
                    return Ok(false);
                }
            }
            Err(e) => return Err(sqlite_err(&path, e)),
        }
    }
    let written = (|| {
        let mut h = [0u8; 28];
        output
            .file
            .read_exact_at(&mut h, 0)
            .map_err(io_err("read header of", &path))?;
        let before = u32::from_be_bytes([h[24], h[25], h[26], h[27]]);
        write(&output.file)?;
        write_header(&output.file, &path, pages, Some(before))?;
        output
            .file
            .set_len(u64::from(pages) * u64::from(page_size))
            .map_err(io_err("truncate", &path))?;
        output.file.sync_data().map_err(io_err("fsync", &path))
    })();
    // Ends the write-free transaction: releases the lock whatever happened above.
    let _ = output.conn.execute_batch("COMMIT");
    written?;
    Ok(true)
}

thread_local! {
    /// When the current lock attempt began (the busy handler gets no context but its call count).
    static ATTEMPT_BEGAN: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
}

/// SQLite's busy handler for the follower's `BEGIN EXCLUSIVE`: SQLite keeps PENDING while it calls
/// this (no new reader gets in), so waiting here drains the readers; giving up releases it. Waits
/// up to [`LOCK_ATTEMPT`], or until a stop signal is pending (`restore -f`: answered promptly).
fn wait_for_readers(calls: i32) -> bool {
    let now = Instant::now();
    if calls == 0 {
        ATTEMPT_BEGAN.set(Some(now));
    }
    let began = ATTEMPT_BEGAN.get().unwrap_or(now);
    if now.duration_since(began) >= LOCK_ATTEMPT || stop_signal_pending() {
        return false;
    }
    // Short: the lock is taken at one of these retries, and needs an instant when no reader holds
    // it (see the module doc).
    std::thread::sleep(Duration::from_millis(1));
    true
}

/// Litestream's `<db>-txid`: the applied TXID, for the operator (best effort: the database is the
/// truth).
fn write_txid_sidecar(path: &Path, txid: u64) {
    let mut p = path.as_os_str().to_owned();
    p.push("-txid");
    let _ = fs::write(PathBuf::from(p), format!("{txid:016x}\n"));
}

/// The signals that stop a follower (`restore -f` keeps them blocked).
const STOP_SIGNALS: [nix::sys::signal::Signal; 3] = {
    use nix::sys::signal::Signal;
    [Signal::SIGTERM, Signal::SIGINT, Signal::SIGQUIT]
};

/// Whether SIGTERM, SIGINT or SIGQUIT is pending (blocked and not taken yet); takes none.
fn stop_signal_pending() -> bool {
    let mut pending = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigpending fills the set it is given.
    if unsafe { libc::sigpending(pending.as_mut_ptr()) } != 0 {
        return false;
    }
    // SAFETY: initialized by the successful sigpending above.
    let pending = unsafe { pending.assume_init() };
    STOP_SIGNALS
        .iter()
        // SAFETY: sigismember only reads the set.
        .any(|&s| unsafe { libc::sigismember(&pending, s as libc::c_int) } == 1)
}

/// Sleeps up to `d` waiting for SIGTERM, SIGINT or SIGQUIT, which the caller keeps blocked; true if
/// one came. With `d == 0` it only looks at the pending ones.
pub fn wait_for_stop_signal(d: Duration) -> bool {
    let set: nix::sys::signal::SigSet = STOP_SIGNALS.into_iter().collect();
    let deadline = Instant::now() + d;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let timeout = libc::timespec {
            tv_sec: left.as_secs() as libc::time_t,
            tv_nsec: left.subsec_nanos() as libc::c_long,
        };
        // SAFETY: both pointers refer to live values for the duration of the call.
        let signal = unsafe { libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), &timeout) };
        if signal > 0 {
            return true;
        }
        if io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return false;
        }
    }
}
