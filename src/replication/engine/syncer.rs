//! A database's sync lane: its SQLite connections and the WAL -> L0 work (Litestream's discipline,
//! see `db.rs` and `sync.rs`), checkpoints, and its part of the final sync. It runs in turns on the
//! sync pool ([`super::super::pool`]): woken by the process's file watcher ([`super::super::watch`]),
//! by a command, or at the deadline its last turn asked for (the minimum sync interval, a checkpoint
//! due, a retry). No turn sleeps: a wait is a deadline handed back to the pool.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tracing::{debug, info, warn};

use super::uploader::UploadPort;
use super::{
    Answer, DbConfig, EngineError, Inbox, LaneWorker, MAX_BACKOFF, MIN_BACKOFF, Reply, Status,
    finish, lane_turn, lock,
};
use crate::replica::ReplicaError;
use crate::replication::db::Db;
use crate::replication::meta::{Meta, MetaLock};
use crate::replication::pool::{Task, Turn};
use crate::replication::sync::{self, DbFiles, Position, SyncError, SyncOptions, SyncState};
use crate::replication::{wal, watch};

/// Looking again for a commit being published: from 1 ms, doubling up to 100 ms, for 5 s at most.
const MIN_UNPUBLISHED_BACKOFF: Duration = Duration::from_millis(1);
const MAX_UNPUBLISHED_BACKOFF: Duration = Duration::from_millis(100);
const UNPUBLISHED_PATIENCE: Duration = Duration::from_secs(5);
/// How long the final sync waits for other connections to let go of the wal-index so SQLite can
/// decide on unpublished frames.
const SETTLE_PATIENCE: Duration = Duration::from_secs(2);
/// Pause between two attempts of a failed final sync; between two reopenings while settling.
const FINAL_RETRY: Duration = Duration::from_millis(200);
const SETTLE_RETRY: Duration = Duration::from_millis(50);

pub(super) enum SyncCmd {
    SyncNow(Reply<Result<(), String>>),
    /// The final sync until the deadline; `once`: a single attempt (the database was deleted).
    Stop(Instant, Reply<Result<(), String>>, bool),
}

/// The lane as the pool and the [`super::Replicator`] see it.
pub(super) struct SyncLane {
    worker: Mutex<Option<SyncWorker>>,
    inbox: Mutex<Inbox<SyncCmd>>,
    /// The WAL or the database changed (set by the file watcher).
    changed: AtomicBool,
    /// The Replicator was dropped without a shutdown: stop without a final sync.
    closed: AtomicBool,
}

impl SyncLane {
    pub(super) fn new() -> SyncLane {
        SyncLane {
            worker: Mutex::new(None),
            inbox: Mutex::new(Inbox::default()),
            changed: AtomicBool::new(true),
            closed: AtomicBool::new(false),
        }
    }

    pub(super) fn install(&self, worker: SyncWorker) {
        *lock(&self.worker) = Some(worker);
    }

    /// Queues a command; `Err` gives it back when the lane has ended.
    pub(super) fn send(&self, cmd: SyncCmd) -> Result<(), SyncCmd> {
        lock(&self.inbox).push(cmd)
    }

    pub(super) fn file_changed(&self) {
        self.changed.store(true, Ordering::Release);
    }

    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }
}

impl Task for SyncLane {
    fn turn(&self) -> Turn {
        lane_turn(&self.worker, &self.inbox, &self.changed, &self.closed).unwrap_or_else(|| {
            // Not installed yet (a file event during start-up), or already ended.
            if lock(&self.inbox).finished {
                Turn::Done
            } else {
                Turn::Sleep(None)
            }
        })
    }

    fn abandon(&self) {
        let worker = lock(&self.worker).take();
        drop(worker);
        finish(&self.inbox);
    }
}

/// A final sync under way.
struct Stopping {
    deadline: Instant,
    reply: Reply<Result<(), String>>,
    /// When settling unpublished frames gives up (set by the first settling round).
    settle_until: Option<Instant>,
    /// One attempt only.
    once: bool,
}

enum Settled {
    Done,
    Again(Instant),
}

/// Owns the SQLite connections; runs only in its lane's turns.
pub(super) struct SyncWorker {
    pub(super) cfg: DbConfig,
    files: DbFiles,
    pub(super) meta: Meta,
    db: Option<Db>,
    /// The single-replicator lock, taken by `start` and held as long as the worker lives.
    _lock: MetaLock,
    /// Keeps the file watcher's subscription; dropped with the worker.
    _watch: Option<watch::Watch>,
    state: SyncState,
    status: Arc<Mutex<Status>>,
    upload: UploadPort,
    /// The WAL or DB changed since the last sync.
    dirty: bool,
    last_sync: Option<Instant>,
    checkpoint_due: Option<Instant>,
    synced_since_checkpoint: bool,
    /// The position was checked against the replica (no sync before that).
    reconciled: bool,
    reconcile_retry: Option<Instant>,
    reconcile_backoff: Duration,
    /// The last sync saw frames past what SQLite has committed (see [`SyncWorker::note_unpublished`]).
    unpublished: bool,
    unpublished_retry: Option<UnpublishedRetry>,
    stopping: Option<Stopping>,
    /// The last error of a failed final-sync attempt, logged once rather than at every retry.
    final_error_said: Option<String>,
    /// The final sync's answer, sent by the lane once the worker is gone.
    stop_outcome: Answer<Result<(), String>>,
}

/// When to look again for a commit being published (see [`SyncWorker::note_unpublished`]).
#[derive(Clone, Copy, Debug)]
struct UnpublishedRetry {
    at: Instant,
    backoff: Duration,
    since: Instant,
}

impl SyncWorker {
    pub(super) fn new(
        cfg: DbConfig,
        meta: Meta,
        lock: MetaLock,
        watch: Option<watch::Watch>,
        status: Arc<Mutex<Status>>,
        upload: UploadPort,
    ) -> SyncWorker {
        SyncWorker {
            files: DbFiles {
                db: cfg.path.clone(),
                wal: crate::replication::db::wal_path(&cfg.path),
                page_size: 0,
            },
            cfg,
            meta,
            db: None,
            _lock: lock,
            _watch: watch,
            state: SyncState::default(),
            status,
            upload,
            dirty: true,
            last_sync: None,
            checkpoint_due: None,
            synced_since_checkpoint: false,
            reconciled: false,
            reconcile_retry: None,
            reconcile_backoff: MIN_BACKOFF,
            unpublished: false,
            unpublished_retry: None,
            final_error_said: None,
            stopping: None,
            stop_outcome: None,
        }
    }

    pub(super) fn set_watch(&mut self, watch: watch::Watch) {
        self._watch = Some(watch);
    }

    /// Opens the database, recovers the position from the meta dir and reconciles it with the
    /// replica (Litestream #781). Returns the replica's newest L0 TXID.
    pub(super) fn open_db(&mut self) -> Result<(), EngineError> {
        if !database_ready(&self.cfg.path) {
            return Err(EngineError::NoDatabase(self.cfg.path.clone()));
        }
        self.meta.prepare()?;
        let mut db = Db::open(&self.cfg.path, self.cfg.busy_timeout)?;
        self.files.page_size = db.page_size();
        let mut wal_file = std::fs::File::open(&self.files.wal).ok();
        if wal_file
            .as_mut()
            .map(|f| wal::read_header(f).ok().flatten().is_none())
            .unwrap_or(true)
        {
            // No WAL header to anchor a position to: write a no-op frame (see db.rs).
            db.force_wal_frame()?;
        }
        self.db = Some(db);
        self.dirty = true;
        Ok(())
    }

    /// Reconciles the local position with the replica before the first sync; while the replica is
    /// unreachable, retried with back-off (the database stays open and its WAL pinned meanwhile).
    pub(super) fn try_reconcile(&mut self, now: bool) -> Result<u64, EngineError> {
        if self.reconciled {
            return Ok(self.status().replica_txid);
        }
        if !now && self.reconcile_retry.is_some_and(|t| Instant::now() < t) {
            return Err(EngineError::ReplicaPending(self.cfg.path.clone()));
        }
        match self.reconcile() {
            Ok(t) => {
                self.reconciled = true;
                self.reconcile_retry = None;
                let mut s = self.status.lock().unwrap_or_else(|e| e.into_inner());
                s.replica_txid = s.replica_txid.max(t);
                drop(s);
                self.upload.new_l0();
                Ok(t)
            }
            Err(e) => {
                self.reconcile_retry = Some(Instant::now() + self.reconcile_backoff);
                self.reconcile_backoff = (self.reconcile_backoff * 2).min(MAX_BACKOFF);
                Err(e)
            }
        }
    }

    fn status(&self) -> Status {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Litestream's checkDatabaseBehindReplica (#781), plus a fresh start for an empty replica.
    fn reconcile(&mut self) -> Result<u64, EngineError> {
        let replica_l0 = self.cfg.replica.ltx_files(0)?;
        let replica_max = replica_l0.last().map_or(0, |f| f.max_txid);
        let local = self.meta.l0_txids()?;
        let local_max = local.last().copied().unwrap_or(0);
        if local_max < replica_max {
            // Restored or behind (Litestream #781): continue numbering after the replica's newest L0;
            // its salts won't match this WAL, which forces a snapshot at max+1.
            info!(db = %self.cfg.path.display(), local_txid = local_max, replica_txid = replica_max,
                "database is behind its replica; continuing from the replica's newest L0");
            for txid in &local {
                self.meta.remove_l0(*txid)?;
            }
            let newest = replica_l0.last().expect("replica_max > 0");
            let mut r = self
                .cfg
                .replica
                .open_ltx(0, newest.min_txid, newest.max_txid)?;
            self.meta.install_l0(newest.max_txid, &mut r)?;
        } else if replica_max == 0 && local_max > 0 {
            // An empty replica cannot continue a chain that starts elsewhere: start it over at TXID 1.
            info!(db = %self.cfg.path.display(), local_txid = local_max, "replica is empty; starting a new chain with a snapshot");
            for txid in &local {
                self.meta.remove_l0(*txid)?;
            }
        }
        self.state = SyncState {
            pos: self
                .meta
                .newest_header()?
                .map(|h| Position::from_header(&h)),
            // No local state at all while the replica has some (`litevisor reset`, a deleted meta
            // directory): the position comes from the replica, but nothing local vouches that this
            // database is where that file left it, so the next file is a full snapshot (as
            // Litestream does after a reset). A restored database gets one anyway (new WAL salts).
            force_snapshot: (local.is_empty() && replica_max > 0)
                .then(|| "no local replication state".to_string()),
            ..SyncState::default()
        };
        if let Some(pos) = self.state.pos {
            let mut s = self.status.lock().unwrap_or_else(|e| e.into_inner());
            s.txid = pos.txid;
            s.wal_offset = pos.wal_offset;
        }
        self.dirty = true;
        Ok(replica_max)
    }
}

impl LaneWorker for SyncWorker {
    type Msg = SyncCmd;
    type Outcome = Result<(), String>;

    /// One turn: what the old per-database thread did between two sleeps.
    fn turn(&mut self, changed: bool, cmds: Vec<SyncCmd>, closed: bool) -> Turn {
        let now = Instant::now();
        if changed {
            self.dirty = true;
        }
        if self.db.is_some() {
            let retries = [self.reconcile_retry, self.unpublished_retry.map(|r| r.at)];
            self.dirty |= retries.into_iter().flatten().any(|t| now >= t);
        }
        for cmd in cmds {
            match cmd {
                SyncCmd::SyncNow(reply) => {
                    let r = self.ensure_init(true).and_then(|()| self.sync_all());
                    reply.send(r.map_err(|e| e.to_string()));
                }
                SyncCmd::Stop(deadline, reply, once) => {
                    if self.stopping.is_none() {
                        self.stopping = Some(Stopping {
                            deadline,
                            reply,
                            settle_until: None,
                            once,
                        });
                    }
                }
            }
        }
        if self.stopping.is_some() {
            return self.final_sync_turn();
        }
        if closed {
            self.db = None;
            return Turn::Done; // the Replicator was dropped without shutdown
        }
        if self.db.is_none() {
            if self.dirty && database_ready(&self.cfg.path) {
                self.dirty = false;
                if let Err(e) = self.ensure_init(false) {
                    self.note_failure(&e);
                }
            }
            return Turn::Sleep(self.next_deadline());
        }
        let now = Instant::now();
        if self.dirty
            && self
                .last_sync
                .is_none_or(|t| now >= t + self.cfg.min_sync_interval)
        {
            self.dirty = false;
            self.last_sync = Some(now);
            let began = Instant::now();
            let synced = self.sync_all();
            self.count_sync(began.elapsed(), &synced);
            match synced.and_then(|()| self.maybe_checkpoint()) {
                Ok(()) => {}
                Err(e @ EngineError::ReplicaPending(_)) => debug!("{e}"),
                Err(e) => self.note_failure(&e),
            }
        }
        if self.checkpoint_due.is_some_and(|d| Instant::now() >= d) {
            self.checkpoint_due = None;
            if self.synced_since_checkpoint
                && self.wal_frames() > 1
                && let Err(e) = self.checkpoint(false)
            {
                self.note_failure(&e);
            }
        }
        Turn::Sleep(self.next_deadline())
    }

    fn outcome(&mut self) -> Answer<Result<(), String>> {
        self.stop_outcome.take()
    }
}

impl SyncWorker {
    /// When the next turn must run even if nothing notifies the lane: a checkpoint due, a retry,
    /// or the end of the minimum sync interval while changes wait. None: only on a notification.
    fn next_deadline(&self) -> Option<Instant> {
        self.db.as_ref()?;
        let mut deadline = self.checkpoint_due;
        let retries = [self.reconcile_retry, self.unpublished_retry.map(|r| r.at)];
        for t in retries.into_iter().flatten() {
            deadline = Some(deadline.map_or(t, |d| d.min(t)));
        }
        if self.dirty {
            let next = self
                .last_sync
                .map_or_else(Instant::now, |t| t + self.cfg.min_sync_interval);
            deadline = Some(deadline.map_or(next, |d| d.min(next)));
        }
        deadline
    }

    /// One attempt of the final sync; failed attempts are retried [`FINAL_RETRY`] apart until the
    /// deadline (and always at least once).
    fn final_sync_turn(&mut self) -> Turn {
        let Some(stop) = self.stopping.as_ref() else {
            return Turn::Done;
        };
        let (deadline, once) = (stop.deadline, stop.once);
        let result = if self.db.is_none() && !database_ready(&self.cfg.path) {
            Ok(Settled::Done) // nothing was ever replicated
        } else {
            self.ensure_init(true)
                .and_then(|()| self.sync_all())
                .and_then(|()| self.settle_unpublished(deadline))
        };
        let outcome = match result {
            Ok(Settled::Again(at)) => return Turn::Sleep(Some(at)),
            Ok(Settled::Done) => Ok(()),
            Err(e) if !once && Instant::now() + FINAL_RETRY < deadline => {
                // Said once per different error, not at every retry.
                let text = e.to_string();
                if self.final_error_said.as_ref() != Some(&text) {
                    warn!(db = %self.cfg.path.display(), "final sync failed, retrying: {text}");
                    self.final_error_said = Some(text);
                }
                return Turn::Sleep(Some(Instant::now() + FINAL_RETRY));
            }
            Err(e) => Err(e.to_string()),
        };
        self.db = None; // releases the read lock and closes the connections
        if let Some(stop) = self.stopping.take() {
            self.stop_outcome = Some((stop.reply, outcome));
        }
        Turn::Done
    }

    fn ensure_init(&mut self, now: bool) -> Result<(), EngineError> {
        if self.db.is_none() {
            self.open_db()?;
        }
        self.try_reconcile(now).map(|_| ())
    }

    /// At the final sync, frames a writer left unpublished (it was stopped inside its commit) are
    /// SQLite's to decide: when litevisor's connections are the database's last ones, closing and
    /// reopening them makes SQLite recover the wal-index from the WAL, which counts a fully written
    /// transaction as committed, exactly as the next process to open the database would. A process
    /// that is still going away (killed a moment ago) holds the wal-index for a little while, so this
    /// is retried (one reopening per turn) for up to [`SETTLE_PATIENCE`]; a connection still open
    /// after that belongs to a live process, whose next write discards the frames. Either way the
    /// replica ends where the database's next opener will find it.
    fn settle_unpublished(&mut self, deadline: Instant) -> Result<Settled, EngineError> {
        if !self.unpublished {
            return Ok(Settled::Done);
        }
        let give_up = match self.stopping.as_ref().and_then(|s| s.settle_until) {
            Some(t) => t,
            None => {
                info!(db = %self.cfg.path.display(), "a writer left WAL frames unpublished; reopening so SQLite decides whether they are committed");
                let t = (Instant::now() + SETTLE_PATIENCE).min(deadline);
                if let Some(s) = self.stopping.as_mut() {
                    s.settle_until = Some(t);
                }
                t
            }
        };
        self.db = None;
        self.open_db()?;
        self.sync_all()?;
        if !self.unpublished {
            return Ok(Settled::Done);
        }
        if Instant::now() >= give_up {
            info!(db = %self.cfg.path.display(), "WAL frames stay unpublished: another connection has the database open, and its next write discards them");
            return Ok(Settled::Done);
        }
        Ok(Settled::Again(Instant::now() + SETTLE_RETRY))
    }

    /// Syncs every committed frame (in max-sync-wal-bytes chunks, one L0 each). Frames a writer has
    /// not published yet arm [`Self::unpublished_retry`].
    fn sync_all(&mut self) -> Result<(), EngineError> {
        let opts = SyncOptions {
            max_wal_bytes: self.cfg.max_sync_wal_bytes,
            encoding: self.cfg.encoding,
        };
        self.try_reconcile(false)?;
        if self.db.as_ref().is_some_and(Db::replaced) {
            // Nothing of the position holds for the new file (its WAL may even look like a restart
            // of the old one, which the WAL alone cannot tell apart): the next L0 is a snapshot.
            warn!(db = %self.cfg.path.display(), "the database file was replaced (another file now has its name); reopening it");
            self.db = None;
            self.open_db()?;
            self.state.force_snapshot = Some("database file replaced".to_string());
        }
        let mut forced = false;
        loop {
            let Some(db) = self.db.as_ref() else {
                return Err(EngineError::NoDatabase(self.cfg.path.clone()));
            };
            match sync::sync_once(
                &self.files,
                db.file(),
                db.shm(),
                &self.meta,
                &mut self.state,
                &opts,
            ) {
                Ok(out) => {
                    if let Some(w) = &out.written {
                        self.synced_since_checkpoint = true;
                        if let Some(reason) = &w.snapshot_reason {
                            info!(db = %self.cfg.path.display(), txid = w.header.max_txid, pages = w.header.commit, reason = %reason, "wrote snapshot L0");
                        } else {
                            debug!(db = %self.cfg.path.display(), txid = w.header.max_txid, wal_offset = w.header.wal_offset, wal_size = w.header.wal_size, "wrote L0");
                        }
                        let mut s = self.status.lock().unwrap_or_else(|e| e.into_inner());
                        s.txid = w.header.max_txid;
                        s.wal_offset = (w.header.wal_offset + w.header.wal_size) as u64;
                        s.last_sync = Some(SystemTime::now());
                        s.snapshots += u64::from(w.snapshot_reason.is_some());
                        s.wal_bytes += w.header.wal_size.max(0) as u64;
                        if s.pending_since.is_none() && s.txid > s.replica_txid {
                            s.pending_since = s.last_sync;
                        }
                        drop(s);
                        self.upload.new_l0();
                    }
                    if !out.limited {
                        self.note_unpublished(out.unpublished);
                        return Ok(());
                    }
                }
                Err(SyncError::NoWal(_)) if !forced => {
                    forced = true;
                    self.db
                        .as_mut()
                        .ok_or_else(|| EngineError::NoDatabase(self.cfg.path.clone()))?
                        .force_wal_frame()?;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// A commit whose frames are in the WAL but not yet in the wal-index raises no file event when
    /// it is published (the index is shared memory), so the worker looks again on a back-off from
    /// 1 ms (the usual case is a writer between its write and its index update, or its fsync) up to
    /// [`MAX_UNPUBLISHED_BACKOFF`], and gives up after [`UNPUBLISHED_PATIENCE`]: frames still
    /// unpublished then belong to a writer that died inside its commit, which SQLite discards (the
    /// next commit overwrites them and wakes the worker) unless nobody else has the database open
    /// when litevisor stops ([`Self::settle_unpublished`]).
    fn note_unpublished(&mut self, unpublished: bool) {
        self.unpublished = unpublished;
        let now = Instant::now();
        self.unpublished_retry = match (unpublished, self.unpublished_retry) {
            (false, _) => None,
            (true, None) => Some(UnpublishedRetry {
                at: now + MIN_UNPUBLISHED_BACKOFF,
                backoff: MIN_UNPUBLISHED_BACKOFF,
                since: now,
            }),
            (true, Some(r)) if now.duration_since(r.since) >= UNPUBLISHED_PATIENCE => {
                debug!(db = %self.cfg.path.display(), "WAL frames past the wal-index stay unpublished: a writer died inside its commit");
                None
            }
            (true, Some(r)) => {
                let backoff = (r.backoff * 2).min(MAX_UNPUBLISHED_BACKOFF);
                Some(UnpublishedRetry {
                    at: now + backoff,
                    backoff,
                    since: r.since,
                })
            }
        };
    }

    fn wal_frames(&self) -> u64 {
        let frame = 24 + u64::from(self.files.page_size);
        self.state
            .pos
            .map_or(0, |p| p.wal_offset.saturating_sub(32) / frame)
    }

    fn maybe_checkpoint(&mut self) -> Result<(), EngineError> {
        let frames = self.wal_frames();
        let c = &self.cfg.checkpoint;
        if frames >= c.truncate_page_n {
            info!(db = %self.cfg.path.display(), frames, "WAL above truncate-page-n: emergency checkpoint");
            self.checkpoint(false)?;
            if self.wal_frames() >= self.cfg.checkpoint.truncate_page_n {
                self.checkpoint(true)?;
            }
        } else if frames >= c.min_page_count {
            self.checkpoint(false)?;
        } else if self.synced_since_checkpoint
            && frames > 1
            && self.checkpoint_due.is_none()
            && !c.interval.is_zero()
        {
            self.checkpoint_due = Some(Instant::now() + c.interval);
        }
        Ok(())
    }

    /// litevisor's checkpoint (see db.rs): sync, seal the WAL with the barrier, sync again, PASSIVE
    /// checkpoint, and when every frame was copied back start the next WAL generation with the
    /// barrier's own no-op write, so the restart point is exactly the synced end. `emergency` waits
    /// for application readers (up to busy_timeout) and shrinks the WAL file.
    fn checkpoint(&mut self, emergency: bool) -> Result<(), EngineError> {
        let began = Instant::now();
        let result = self.checkpoint_inner(emergency);
        let mut s = self.status.lock().unwrap_or_else(|e| e.into_inner());
        s.checkpoint_time += began.elapsed();
        if result.is_err() {
            s.checkpoint_errors += 1;
        }
        result
    }

    fn checkpoint_inner(&mut self, emergency: bool) -> Result<(), EngineError> {
        self.sync_all()?;
        let busy_timeout = self.cfg.busy_timeout;
        let path = self.cfg.path.clone();
        let Some(db) = self.db.as_mut() else {
            return Ok(());
        };
        if let Err(e) = db.begin_barrier() {
            debug!(db = %path.display(), "checkpoint skipped, the application holds the write lock: {e}");
            return Ok(());
        }
        if let Err(e) = self.sync_all() {
            if let Some(db) = self.db.as_mut() {
                db.rollback_barrier();
            }
            return Err(e);
        }
        let before = self.state.pos;
        let db = self.db.as_mut().expect("checked above");
        let ran = db
            .release_read()
            .and_then(|()| db.checkpoint_passive(emergency.then(|| Instant::now() + busy_timeout)));
        // The old generation is fully synced and sealed; release the barrier, then (when every frame
        // was copied back) commit a no-op write from a fresh snapshot: SQLite only restarts the WAL
        // from a writer whose read snapshot began after the backfill. Whoever restarts it first,
        // the new generation starts exactly at the synced end.
        db.rollback_barrier();
        let forced = match ran {
            Ok(r) if r.complete() => {
                if emergency {
                    let _ = db.set_wal_size_limit(Some(0));
                }
                let w = db
                    .begin_barrier()
                    .and_then(|()| db.commit_barrier_with_write());
                if w.is_err() {
                    db.rollback_barrier();
                }
                if emergency {
                    let _ = db.set_wal_size_limit(None);
                }
                w.map(|()| true)
            }
            Ok(r) => {
                debug!(db = %path.display(), log = r.log_frames, copied = r.checkpointed_frames, "checkpoint incomplete (readers)");
                Ok(false)
            }
            Err(e) => Err(e),
        };
        db.acquire_read()?;
        let copied_all = forced?;
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .checkpoints += 1;
        let header = std::fs::File::open(&self.files.wal)
            .ok()
            .and_then(|mut f| wal::read_header(&mut f).ok().flatten());
        let mut restarted = false;
        if let (Some(pos), Some(h)) = (before, header)
            && (h.salt1, h.salt2) != (pos.salt1, pos.salt2)
        {
            restarted = true;
            // Exactly one restart (SQLite adds 1 to salt1 per restart) since the sealed sync: the
            // new generation continues the synced one, no snapshot needed.
            if h.salt1 == pos.salt1.wrapping_add(1) {
                self.state.expected_restart = Some((pos.wal_offset, h.salt1, h.salt2));
            }
        }
        debug!(db = %path.display(), emergency, copied_all, restarted, "checkpoint done");
        self.sync_all()?;
        self.synced_since_checkpoint = false;
        self.checkpoint_due = None;
        Ok(())
    }

    /// A sync attempt (WAL -> L0) for Litestream's sync metrics; a sync that succeeded ends a
    /// local failure.
    fn count_sync(&self, took: Duration, result: &Result<(), EngineError>) {
        let mut s = self.status.lock().unwrap_or_else(|e| e.into_inner());
        s.sync_count += 1;
        s.sync_time += took;
        match result {
            Ok(()) => {
                if let Some(f) = s.local_ok() {
                    drop(s);
                    info!(db = %self.cfg.path.display(), kind = f.kind, attempts = f.attempts, "replication resumed");
                }
            }
            Err(EngineError::ReplicaPending(_) | EngineError::Replica(_)) => {}
            Err(_) => s.sync_errors += 1,
        }
    }

    /// Records a failure in the status and logs it once when it starts (then at debug level): a
    /// replica failure is retried with back-off; a local one (disk full, permission denied) stops
    /// replication until a sync succeeds again.
    pub(super) fn note_failure(&self, e: &EngineError) {
        let db = self.cfg.path.display();
        let mut s = self.status.lock().unwrap_or_else(|e| e.into_inner());
        match e {
            EngineError::ReplicaPending(_) => {}
            EngineError::Replica(r) => {
                let msg = r.to_string();
                let news = s.replica_failed(r.kind(), &msg, r.is_permanent());
                drop(s);
                log_replica_failure(&self.cfg.path, r, news);
            }
            other => {
                let msg = other.to_string();
                let kind = crate::replication::status::local_kind(other);
                if s.local_failed(kind, &msg) {
                    drop(s);
                    tracing::error!(db = %db, kind, "replication stopped: {msg}");
                } else {
                    drop(s);
                    debug!(db = %db, kind, "still failing: {msg}");
                }
            }
        }
    }
}

/// Logs a replica failure: once when it starts (an error when retrying cannot fix it), then at debug
/// level while it lasts.
pub(super) fn log_replica_failure(path: &std::path::Path, e: &ReplicaError, news: bool) {
    let db = path.display();
    let kind = e.kind();
    match (news, e.is_permanent()) {
        (true, true) => {
            tracing::error!(db = %db, kind, "replica error, retrying with back-off until it is fixed: {e}")
        }
        (true, false) => warn!(db = %db, kind, "replica error, retrying: {e}"),
        (false, _) => debug!(db = %db, kind, "replica still failing: {e}"),
    }
}

/// The database file exists and is not empty. An empty file is an application creating its
/// database right now: it is not one yet. Opening it would race the application's own `PRAGMA
/// journal_mode=wal` (both connections escalating their locks: SQLite fails one of them at once
/// with "database is locked", and it may be the application's). Its first write wakes the lane.
pub(super) fn database_ready(path: &std::path::Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.len() > 0)
}
