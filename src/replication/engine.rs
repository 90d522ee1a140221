//! The replication engine for one database, in two lanes that run in turns on the process's
//! replication pools ([`super::pool`]): the sync lane ([`syncer`]: SQLite discipline, WAL -> L0,
//! checkpoints; woken by the process's one inotify watcher, [`super::watch`]) and the upload lane
//! ([`uploader`]: L0 -> replica with back-off, then compaction, snapshot level and retention on their
//! schedules). A lane with nothing to do arms no timer and holds no thread, so an idle database costs
//! no wake-ups and no replica requests, and the threads do not grow with the number of databases.
//!
//! `Replicator` is the handle others use: `start`, `status`, `sync_now`, `shutdown` (final sync), or
//! `begin_shutdown` to get the final sync's outcome through a callback without blocking a thread.

mod syncer;
mod uploader;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::time::{Duration, Instant};

use tracing::warn;

use crate::config::tuning::{
    DEFAULT_BUSY_TIMEOUT, DEFAULT_CHECKPOINT_INTERVAL, DEFAULT_L0_RETENTION, DEFAULT_LEVELS,
    DEFAULT_MAX_SYNC_WAL_BYTES, DEFAULT_MIN_CHECKPOINT_PAGE_COUNT, DEFAULT_MIN_SYNC_INTERVAL,
    DEFAULT_SNAPSHOT_INTERVAL, DEFAULT_SNAPSHOT_RETENTION, DEFAULT_TRUNCATE_PAGE_N, PageEncoding,
};
use crate::replica::{ReplicaClient, ReplicaError};
use crate::replication::db::{self, DbError};
use crate::replication::fsguard::{self, FsGuardError};
use crate::replication::meta::{Meta, MetaError};
use crate::replication::pool::{self, Handle, Turn};
use crate::replication::sync::SyncError;
use crate::replication::watch;
use syncer::{SyncCmd, SyncLane, SyncWorker};
use uploader::{UploadLane, UploadMsg, UploadPort, Uploader};

/// Checkpoint policy (Litestream's defaults; section 3.5 of the reference).
#[derive(Clone, Debug)]
pub struct CheckpointConfig {
    /// PASSIVE checkpoint once the synced WAL holds this many frames.
    pub min_page_count: u64,
    /// PASSIVE checkpoint this long after data was synced, if the WAL has more than one frame.
    pub interval: Duration,
    /// Emergency valve: checkpoint waiting for readers (up to busy_timeout), then shrink the WAL.
    pub truncate_page_n: u64,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            min_page_count: u64::from(DEFAULT_MIN_CHECKPOINT_PAGE_COUNT),
            interval: DEFAULT_CHECKPOINT_INTERVAL,
            truncate_page_n: u64::from(DEFAULT_TRUNCATE_PAGE_N),
        }
    }
}

/// Everything the engine needs for one database.
#[derive(Clone, Debug)]
pub struct DbConfig {
    pub path: PathBuf,
    /// Litestream's `meta-path`; default `<dir>/.<dbfile>-litestream`.
    pub meta_dir: Option<PathBuf>,
    pub replica: Arc<dyn ReplicaClient>,
    pub busy_timeout: Duration,
    /// Minimum time between two syncs (Litestream's monitor-interval; 0 = as soon as the WAL changes).
    pub min_sync_interval: Duration,
    pub max_sync_wal_bytes: u64,
    pub checkpoint: CheckpointConfig,
    pub encoding: PageEncoding,
    /// Compaction intervals of L1..Ln.
    pub levels: Vec<Duration>,
    pub snapshot_interval: Duration,
    pub snapshot_retention: Duration,
    /// `Duration::ZERO` disables L0 retention (Litestream #1425).
    pub l0_retention: Duration,
    pub retention_enabled: bool,
    /// Replicate even when the database's directory is on a network filesystem (see `fsguard`).
    pub allow_network_fs: bool,
}

impl DbConfig {
    pub fn new(path: impl Into<PathBuf>, replica: Arc<dyn ReplicaClient>) -> DbConfig {
        DbConfig {
            path: path.into(),
            meta_dir: None,
            replica,
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
            min_sync_interval: DEFAULT_MIN_SYNC_INTERVAL,
            max_sync_wal_bytes: DEFAULT_MAX_SYNC_WAL_BYTES,
            checkpoint: CheckpointConfig::default(),
            encoding: PageEncoding::Frame,
            levels: DEFAULT_LEVELS.to_vec(),
            snapshot_interval: DEFAULT_SNAPSHOT_INTERVAL,
            snapshot_retention: DEFAULT_SNAPSHOT_RETENTION,
            l0_retention: DEFAULT_L0_RETENTION,
            retention_enabled: true,
            allow_network_fs: false,
        }
    }
}

impl DbConfig {
    /// The engine's settings for one configured database: one plain field-to-field mapping, so
    /// every new `[[databases]]` knob gets exactly one line here.
    pub fn for_database(db: &crate::config::Database) -> DbConfig {
        let mut cfg = DbConfig::new(&db.path, crate::replica::client_for(&db.replica));
        cfg.min_sync_interval = db.sync_interval;
        cfg.busy_timeout = db.busy_timeout;
        cfg.checkpoint.interval = db.checkpoint_interval;
        cfg.checkpoint.min_page_count = u64::from(db.min_checkpoint_page_count);
        cfg.checkpoint.truncate_page_n = u64::from(db.truncate_page_n);
        cfg.meta_dir = db.meta_path.clone();
        cfg.max_sync_wal_bytes = db.max_sync_wal_bytes;
        cfg.levels = db.levels.clone();
        cfg.snapshot_interval = db.snapshot_interval;
        cfg.snapshot_retention = db.snapshot_retention;
        cfg.l0_retention = db.l0_retention;
        cfg.retention_enabled = db.retention_enabled;
        cfg.encoding = db.page_encoding;
        cfg.allow_network_fs = db.allow_network_fs;
        cfg
    }
}

pub use super::status::Status;

/// Result of the final sync at shutdown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FinalSync {
    pub txid: u64,
    pub replica_txid: u64,
    /// None when everything committed locally reached the replica.
    pub error: Option<String>,
}

impl FinalSync {
    pub fn ok(&self) -> bool {
        self.error.is_none() && self.replica_txid >= self.txid
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Sync(#[from] SyncError),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    FsGuard(#[from] FsGuardError),
    #[error("replica: {0}")]
    Replica(#[from] ReplicaError),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("database {0} does not exist (or is still an empty file)")]
    NoDatabase(PathBuf),
    #[error("the replicator of {0} has stopped")]
    Stopped(PathBuf),
    #[error("{}: not done after {:.1}s", .0.display(), .1.as_secs_f64())]
    TimedOut(PathBuf, Duration),
    #[error("{0}: waiting to retry the replica")]
    ReplicaPending(PathBuf),
}

/// Back-off of replica retries (uploads, reconciliation): from 500 ms, doubling up to 60 s.
const MIN_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// A lock that survives a panic elsewhere (the data it guards stays usable).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The one answer to a command sent to a lane. Dropped without an answer (the lane ended or its
/// turn panicked), it answers `None`, so nobody waits forever.
pub(crate) struct Reply<T: Send + 'static>(Option<Box<dyn FnOnce(Option<T>) + Send>>);

impl<T: Send + 'static> Reply<T> {
    pub(crate) fn new(f: impl FnOnce(Option<T>) + Send + 'static) -> Reply<T> {
        Reply(Some(Box::new(f)))
    }

    /// A reply and the channel its answer arrives on (for callers that may block).
    fn channel() -> (Reply<T>, mpsc::Receiver<Option<T>>) {
        let (tx, rx) = mpsc::channel();
        (
            Reply::new(move |v| {
                let _ = tx.send(v);
            }),
            rx,
        )
    }

    fn send(mut self, value: T) {
        if let Some(f) = self.0.take() {
            f(Some(value));
        }
    }
}

/// A reply held back until its lane has let go of everything, with the answer it will get.
type Answer<T> = Option<(Reply<T>, T)>;

impl<T: Send + 'static> Drop for Reply<T> {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f(None);
        }
    }
}

/// A lane's mailbox: what was sent to its worker, and whether the lane has ended.
struct Inbox<M> {
    msgs: Vec<M>,
    /// The lane has ended: nothing sent now would ever be read.
    finished: bool,
}

impl<M> Default for Inbox<M> {
    fn default() -> Self {
        Inbox {
            msgs: Vec::new(),
            finished: false,
        }
    }
}

impl<M> Inbox<M> {
    /// Queues `msg`; `Err` gives it back when the lane has ended.
    fn push(&mut self, msg: M) -> Result<(), M> {
        if self.finished {
            return Err(msg);
        }
        self.msgs.push(msg);
        Ok(())
    }

    fn take(&mut self) -> Vec<M> {
        std::mem::take(&mut self.msgs)
    }
}

/// Ends a lane: marks its inbox finished and drops what was never read (their replies say the
/// lane stopped), outside the inbox's lock.
fn finish<M>(inbox: &Mutex<Inbox<M>>) {
    let unread = {
        let mut inbox = lock(inbox);
        inbox.finished = true;
        inbox.take()
    };
    drop(unread);
}

/// The worker of a lane (the sync lane's, the upload lane's), run in turns.
trait LaneWorker {
    type Msg;
    type Outcome: Send + 'static;

    /// One turn: `woken`, the lane's event happened since the last one (a file changed, an L0
    /// file was written); `msgs`, what was sent since; `closed`, the Replicator was dropped
    /// without a shutdown.
    fn turn(&mut self, woken: bool, msgs: Vec<Self::Msg>, closed: bool) -> Turn;

    /// The answer to the final sync (or drain), taken once the last turn is over.
    fn outcome(&mut self) -> Answer<Self::Outcome>;
}

/// A turn of the lane whose worker is in `slot` (`None` when there is none: not installed yet,
/// or ended). After the worker's last turn, the worker and its resources (connections, watch,
/// locks) go and the lane ends (`finish`) before the final sync's or drain's waiter hears how it
/// went.
fn lane_turn<W: LaneWorker>(
    slot: &Mutex<Option<W>>,
    inbox: &Mutex<Inbox<W::Msg>>,
    woken: &AtomicBool,
    closed: &AtomicBool,
) -> Option<Turn> {
    let mut slot = lock(slot);
    let worker = slot.as_mut()?;
    let msgs = lock(inbox).take();
    let woken = woken.swap(false, Ordering::AcqRel);
    let turn = worker.turn(woken, msgs, closed.load(Ordering::Acquire));
    if turn == Turn::Done {
        let mut worker = slot.take().expect("it had its turn");
        let outcome = worker.outcome();
        drop(worker);
        drop(slot);
        finish(inbox);
        if let Some((reply, result)) = outcome {
            reply.send(result);
        }
    }
    Some(turn)
}

/// Handle to one database's replication (its two lanes).
pub struct Replicator {
    path: PathBuf,
    status: Arc<Mutex<Status>>,
    sync: Arc<SyncLane>,
    sync_handle: Handle,
    upload: UploadPort,
    /// `begin_shutdown` was called: dropping the handle must not cut the final sync short.
    shutting_down: bool,
}

impl std::fmt::Debug for Replicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replicator")
            .field("path", &self.path)
            .finish()
    }
}

impl Replicator {
    /// Starts replicating. When the database exists it is opened and checked against the replica
    /// before this returns (errors surface here); otherwise the sync lane waits for it to appear.
    /// Blocks (SQLite, the replica): call it from a plain thread or the upload pool
    /// ([`pool::upload_pool`]), never from an async runtime.
    pub fn start(cfg: DbConfig) -> Result<Replicator, EngineError> {
        if let Some(fs) = fsguard::check(&cfg.path, cfg.allow_network_fs)? {
            warn!(db = %cfg.path.display(), dir = %fs.dir.display(), filesystem = %fs.name,
                "replicating on a network filesystem because allow_network_fs is set: only one host may ever open this database");
        }
        let meta = Meta::new(
            cfg.meta_dir
                .clone()
                .unwrap_or_else(|| db::meta_dir(&cfg.path)),
        );
        // Before anything touches the meta directory (prepare() removes temp files a running holder
        // may be writing), and even when the database does not exist yet.
        let lock = meta.lock(&cfg.path)?;

        let status = Arc::new(Mutex::new(Status::default()));
        // The sync lane exists (idle) before the watch, so the watch can wake it; it runs only
        // once its worker is installed below.
        let sync = Arc::new(SyncLane::new());
        let sync_handle = Handle::new(pool::sync_pool(), Box::new(Arc::clone(&sync)));
        let dir = watch::parent_dir(&cfg.path);
        let wal_path = db::wal_path(&cfg.path);
        let names: Vec<&std::ffi::OsStr> = [cfg.path.file_name(), wal_path.file_name()]
            .into_iter()
            .flatten()
            .collect();
        let wake = {
            let lane = Arc::downgrade(&sync);
            let handle = sync_handle.downgrade();
            Arc::new(move || {
                if let Some(lane) = lane.upgrade() {
                    lane.file_changed();
                    handle.notify();
                }
            })
        };
        let subscription = watch::watch(&dir, &names, wake).map_err(|e| EngineError::Io {
            op: "watch",
            path: dir.clone(),
            source: e,
        })?;

        // The upload lane is built idle too: its first turn needs the replica position the
        // start-up finds.
        let upload_lane = Arc::new(UploadLane::new(Uploader::new(
            &cfg,
            meta.clone(),
            status.clone(),
            None,
        )));
        let upload_handle = Handle::new(pool::upload_pool(), Box::new(Arc::clone(&upload_lane)));
        let upload = UploadPort {
            lane: upload_lane,
            handle: upload_handle,
        };
        let mut worker = SyncWorker::new(cfg, meta, lock, None, status.clone(), upload.clone());
        worker.set_watch(subscription);
        let mut replica_txid = None;
        // The replica is asked once now, so that what retrying cannot fix (a missing bucket, refused
        // or missing credentials, an unknown host) fails the start at once instead of being retried
        // in the background; anything else is retried, and shows in the status from now on.
        if syncer::database_ready(&worker.cfg.path) {
            worker.open_db()?;
            match worker.try_reconcile(true) {
                Ok(t) => replica_txid = Some(t),
                Err(EngineError::Replica(e)) if e.is_permanent() => return Err(e.into()),
                Err(e) => worker.note_failure(&e),
            }
        } else {
            match worker.cfg.replica.ltx_files(0) {
                Ok(_) => {}
                Err(e) if e.is_permanent() => return Err(e.into()),
                Err(e) => worker.note_failure(&EngineError::Replica(e)),
            }
        }
        upload.lane.set_replica_txid(replica_txid);
        let path = worker.cfg.path.clone();
        sync.install(worker);
        upload.handle.notify();
        sync_handle.notify();
        Ok(Replicator {
            path,
            status,
            sync,
            sync_handle,
            upload,
            shutting_down: false,
        })
    }

    pub fn status(&self) -> Status {
        lock(&self.status).clone()
    }

    /// Syncs the WAL into a new L0 now and uploads everything pending; returns the status after.
    /// Blocks up to `timeout` per step: never call it from a replication pool thread.
    pub fn sync_now(&self, timeout: Duration) -> Result<Status, EngineError> {
        self.syncer().sync(true, timeout)
    }

    /// A handle that can force syncs while this replicator runs (`litevisor sync`), without
    /// holding the replicator itself; once the replicator is shut down its syncs fail as stopped.
    pub fn syncer(&self) -> Syncer {
        Syncer {
            path: self.path.clone(),
            status: Arc::clone(&self.status),
            sync: Arc::clone(&self.sync),
            sync_handle: self.sync_handle.clone(),
            upload: self.upload.clone(),
        }
    }

    /// Final sync: WAL -> L0 -> replica, uploads retried until `timeout` passes; then both lanes
    /// end and the database connections close. Never blocks longer than about `timeout` plus one
    /// in-flight replica request. Never call it from a replication pool thread.
    pub fn shutdown(self, timeout: Duration) -> FinalSync {
        let (tx, rx) = mpsc::channel();
        self.begin_shutdown(Instant::now() + timeout, move |done| {
            let _ = tx.send(done);
        });
        rx.recv().unwrap_or_else(|_| FinalSync {
            txid: 0,
            replica_txid: 0,
            error: Some("the final sync ended without an outcome".to_string()),
        })
    }

    /// [`Replicator::shutdown`] without blocking: `done` runs (on a pool thread) once both lanes
    /// have ended, the connections are closed and the single-replicator lock is released.
    pub fn begin_shutdown(self, deadline: Instant, done: impl FnOnce(FinalSync) + Send + 'static) {
        self.stop(deadline, false, done);
    }

    /// The end of a database that was deleted while replicated: one attempt to sync what its WAL
    /// still holds (no retries, so no stream of errors about files that are gone), then the upload
    /// of what is staged locally, until `deadline`.
    pub fn begin_removal(self, deadline: Instant, done: impl FnOnce(FinalSync) + Send + 'static) {
        self.stop(deadline, true, done);
    }

    fn stop(
        mut self,
        deadline: Instant,
        once: bool,
        done: impl FnOnce(FinalSync) + Send + 'static,
    ) {
        self.shutting_down = true;
        let upload = self.upload.clone();
        let status = Arc::clone(&self.status);
        let after_drain = move |error: Option<String>, drained: Option<Result<u64, String>>| {
            let error = match drained {
                Some(Ok(_)) => error,
                Some(Err(e)) => error.or(Some(format!("final upload: {e}"))),
                None => error.or(Some("final upload: the upload lane died".to_string())),
            };
            let status = lock(&status).clone();
            done(FinalSync {
                txid: status.txid,
                replica_txid: status.replica_txid,
                error,
            });
        };
        // Each lane is kept alive by the reply it holds until it answers (nothing else refers to
        // it once this handle is gone); answering consumes the reply and ends the cycle.
        let sync_alive = (Arc::clone(&self.sync), self.sync_handle.clone());
        let after_sync = move |synced: Option<Result<(), String>>| {
            drop(sync_alive);
            let error = match synced {
                Some(Ok(())) => None,
                Some(Err(e)) => Some(format!("final sync: {e}")),
                None => Some("final sync: the sync lane died".to_string()),
            };
            let upload_alive = upload.clone();
            let reply = Reply::new(move |drained| {
                drop(upload_alive);
                after_drain(error, drained)
            });
            if let Err(UploadMsg::Drain(_, reply) | UploadMsg::Flush(reply)) =
                upload.send(UploadMsg::Drain(deadline, reply))
            {
                drop(reply); // answers None: the upload lane has ended
            }
        };
        let reply = Reply::new(after_sync);
        if let Err(SyncCmd::Stop(_, reply, _) | SyncCmd::SyncNow(reply)) =
            self.send_cmd(SyncCmd::Stop(deadline, reply, once))
        {
            drop(reply);
        }
    }

    fn send_cmd(&self, cmd: SyncCmd) -> Result<(), SyncCmd> {
        self.sync.send(cmd)?;
        self.sync_handle.notify();
        Ok(())
    }
}

/// Forces syncs of one running replicator ([`Replicator::syncer`]). Cheap to clone; dropping it
/// changes nothing.
#[derive(Clone)]
pub struct Syncer {
    path: PathBuf,
    status: Arc<Mutex<Status>>,
    sync: Arc<SyncLane>,
    sync_handle: Handle,
    upload: UploadPort,
}

impl Syncer {
    /// Syncs the WAL into a new L0 now; with `upload`, also uploads everything pending, so the
    /// replica then holds every transaction committed before the call. Returns the status after.
    /// Blocks up to `timeout` per step: never call it from a replication pool thread or a runtime.
    pub fn sync(&self, upload: bool, timeout: Duration) -> Result<Status, EngineError> {
        let (reply, rx) = Reply::channel();
        self.sync
            .send(SyncCmd::SyncNow(reply))
            .map_err(|_| EngineError::Stopped(self.path.clone()))?;
        self.sync_handle.notify();
        self.wait(&rx, timeout)?.map_err(|e| self.failed(e))?;
        if upload {
            let (reply, rx) = Reply::channel();
            self.upload
                .send(UploadMsg::Flush(reply))
                .map_err(|_| EngineError::Stopped(self.path.clone()))?;
            self.wait(&rx, timeout)?.map_err(|e| self.failed(e))?;
        }
        Ok(lock(&self.status).clone())
    }

    fn wait<T>(&self, rx: &mpsc::Receiver<Option<T>>, timeout: Duration) -> Result<T, EngineError> {
        match rx.recv_timeout(timeout) {
            Ok(Some(value)) => Ok(value),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                Err(EngineError::TimedOut(self.path.clone(), timeout))
            }
            Ok(None) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                Err(EngineError::Stopped(self.path.clone()))
            }
        }
    }

    fn failed(&self, msg: String) -> EngineError {
        EngineError::Io {
            op: "sync",
            path: self.path.clone(),
            source: std::io::Error::other(msg),
        }
    }
}

impl Drop for Replicator {
    /// Dropped without a shutdown: both lanes end without a final sync.
    fn drop(&mut self) {
        if !self.shutting_down {
            self.sync.close();
            self.sync_handle.notify();
            self.upload.close();
        }
    }
}
