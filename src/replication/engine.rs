//! The replication engine for one database: a sync thread (SQLite discipline, WAL -> L0, checkpoints,
//! woken by the process's one inotify watcher, [`super::watch`]) and an upload thread (L0 -> replica
//! with back-off, then compaction, snapshot level and retention on their schedules). Both threads
//! sleep until something happens: no timer is armed unless it has work pending, so an idle database
//! costs no wake-ups and no replica requests.
//!
//! `Replicator` is the handle others use: `start`, `status`, `sync_now`, `shutdown` (final sync).

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing::{debug, info, warn};

use crate::replica::{ReplicaClient, ReplicaError};
use crate::replication::compact::{self, Retention};
use crate::replication::db::{self, Db, DbError};
use crate::replication::fsguard::{self, FsGuardError};
use crate::replication::ltx::{PageEncoding, SNAPSHOT_LEVEL};
use crate::replication::meta::{Meta, MetaError, MetaLock};
use crate::replication::sync::{self, DbFiles, Position, SyncError, SyncOptions, SyncState};
use crate::replication::{wal, watch};

/// Litestream's defaults for the knobs below; the configuration starts from these too.
pub const DEFAULT_MIN_SYNC_INTERVAL: Duration = Duration::from_secs(1);
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(60);
pub const DEFAULT_MIN_CHECKPOINT_PAGE_COUNT: u32 = 1000;
pub const DEFAULT_TRUNCATE_PAGE_N: u32 = 121_359;
pub const DEFAULT_LEVELS: [Duration; 3] = [
    Duration::from_secs(30),
    Duration::from_secs(300),
    Duration::from_secs(3600),
];
pub const DEFAULT_SNAPSHOT_INTERVAL: Duration = Duration::from_secs(24 * 3600);
pub const DEFAULT_SNAPSHOT_RETENTION: Duration = Duration::from_secs(24 * 3600);
pub const DEFAULT_L0_RETENTION: Duration = Duration::from_secs(300);

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
            busy_timeout: db::DEFAULT_BUSY_TIMEOUT,
            min_sync_interval: DEFAULT_MIN_SYNC_INTERVAL,
            max_sync_wal_bytes: sync::DEFAULT_MAX_SYNC_WAL_BYTES,
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

/// A point-in-time view of one database's replication.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Status {
    /// Newest local L0 TXID and the WAL offset it ends at.
    pub txid: u64,
    pub wal_offset: u64,
    /// Newest TXID on the replica's L0.
    pub replica_txid: u64,
    pub last_sync: Option<SystemTime>,
    pub last_upload: Option<SystemTime>,
    pub snapshots: u64,
    pub checkpoints: u64,
    pub replica_errors: u64,
    pub last_error: Option<String>,
}

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
    #[error("database {0} does not exist")]
    NoDatabase(PathBuf),
    #[error("the replicator of {0} has stopped")]
    Stopped(PathBuf),
    #[error("{0}: waiting to retry the replica")]
    ReplicaPending(PathBuf),
}

enum SyncCmd {
    SyncNow(mpsc::Sender<Result<(), String>>),
    Stop(Instant, mpsc::Sender<Result<(), String>>),
}

enum UploadMsg {
    NewL0,
    Flush(mpsc::Sender<Result<u64, String>>),
    Drain(Instant, mpsc::Sender<Result<u64, String>>),
}

/// Handle to one database's replication threads.
pub struct Replicator {
    path: PathBuf,
    status: Arc<Mutex<Status>>,
    sync_tx: mpsc::Sender<SyncCmd>,
    wake: UnixStream,
    upload_tx: mpsc::Sender<UploadMsg>,
    threads: Vec<JoinHandle<()>>,
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
    /// before this returns (errors surface here); otherwise the sync thread waits for it to appear.
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
        let dir = watch::parent_dir(&cfg.path);
        let wal_path = db::wal_path(&cfg.path);
        let names: Vec<&std::ffi::OsStr> = [cfg.path.file_name(), wal_path.file_name()]
            .into_iter()
            .flatten()
            .collect();
        let (subscription, changes) = watch::watch(&dir, &names).map_err(|e| EngineError::Io {
            op: "watch",
            path: dir.clone(),
            source: e,
        })?;
        let (wake, wake_rx) = UnixStream::pair().map_err(|e| EngineError::Io {
            op: "socketpair for",
            path: cfg.path.clone(),
            source: e,
        })?;
        wake_rx.set_nonblocking(true).map_err(|e| EngineError::Io {
            op: "socketpair for",
            path: cfg.path.clone(),
            source: e,
        })?;

        let status = Arc::new(Mutex::new(Status::default()));
        let (upload_tx, upload_rx) = mpsc::channel();
        let (sync_tx, sync_rx) = mpsc::channel();
        let mut worker = SyncWorker {
            files: DbFiles {
                db: cfg.path.clone(),
                wal: db::wal_path(&cfg.path),
                page_size: 0,
            },
            cfg,
            meta,
            db: None,
            _lock: lock,
            state: SyncState::default(),
            status: status.clone(),
            upload_tx: upload_tx.clone(),
            dirty: true,
            last_sync: None,
            checkpoint_due: None,
            synced_since_checkpoint: false,
            reconciled: false,
            reconcile_retry: None,
            reconcile_backoff: MIN_BACKOFF,
        };
        let mut replica_txid = None;
        if worker.cfg.path.exists() {
            worker.open_db()?;
            match worker.try_reconcile(true) {
                Ok(t) => replica_txid = Some(t),
                Err(e) => {
                    warn!(db = %worker.cfg.path.display(), "replica not reachable, retrying: {e}")
                }
            }
        }

        let mut uploader = Uploader::new(&worker.cfg, worker.meta.clone(), status.clone());
        let path = worker.cfg.path.clone();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let upload_thread = std::thread::Builder::new()
            .name(format!("lv-upload-{name}"))
            .spawn(move || uploader.run(upload_rx, replica_txid))
            .map_err(|e| EngineError::Io {
                op: "spawn upload thread for",
                path: path.clone(),
                source: e,
            })?;
        let sync_thread = std::thread::Builder::new()
            .name(format!("lv-sync-{name}"))
            .spawn(move || worker.run(subscription, changes, wake_rx, sync_rx))
            .map_err(|e| EngineError::Io {
                op: "spawn sync thread for",
                path: path.clone(),
                source: e,
            })?;
        Ok(Replicator {
            path,
            status,
            sync_tx,
            wake,
            upload_tx,
            threads: vec![sync_thread, upload_thread],
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn status(&self) -> Status {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Syncs the WAL into a new L0 now and uploads everything pending; returns the status after.
    pub fn sync_now(&self, timeout: Duration) -> Result<Status, EngineError> {
        let (tx, rx) = mpsc::channel();
        self.send(SyncCmd::SyncNow(tx))?;
        self.wait(&rx, timeout)?.map_err(|e| self.failed(e))?;
        let (tx, rx) = mpsc::channel();
        self.upload_tx
            .send(UploadMsg::Flush(tx))
            .map_err(|_| EngineError::Stopped(self.path.clone()))?;
        self.wait(&rx, timeout)?.map_err(|e| self.failed(e))?;
        Ok(self.status())
    }

    /// Final sync: WAL -> L0 -> replica, uploads retried until `timeout` passes; then both threads
    /// stop and the database connections close. Never blocks longer than about `timeout` plus one
    /// in-flight replica request.
    pub fn shutdown(mut self, timeout: Duration) -> FinalSync {
        let deadline = Instant::now() + timeout;
        let mut error = None;
        let (tx, rx) = mpsc::channel();
        match self.send(SyncCmd::Stop(deadline, tx)) {
            Ok(()) => match rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => error = Some(format!("final sync: {e}")),
                Err(_) => error = Some("final sync: the sync thread died".to_string()),
            },
            Err(e) => error = Some(e.to_string()),
        }
        let (tx, rx) = mpsc::channel();
        let drained = self
            .upload_tx
            .send(UploadMsg::Drain(deadline, tx))
            .ok()
            .and_then(|()| rx.recv().ok());
        match drained {
            Some(Ok(_)) => {}
            Some(Err(e)) => error = error.or(Some(format!("final upload: {e}"))),
            None => error = error.or(Some("final upload: the upload thread died".to_string())),
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let status = self.status();
        FinalSync {
            txid: status.txid,
            replica_txid: status.replica_txid,
            error,
        }
    }

    fn send(&self, cmd: SyncCmd) -> Result<(), EngineError> {
        use std::io::Write;
        self.sync_tx
            .send(cmd)
            .map_err(|_| EngineError::Stopped(self.path.clone()))?;
        let _ = (&self.wake).write_all(&[1]);
        Ok(())
    }

    fn wait<T>(&self, rx: &mpsc::Receiver<T>, timeout: Duration) -> Result<T, EngineError> {
        rx.recv_timeout(timeout)
            .map_err(|_| EngineError::Stopped(self.path.clone()))
    }

    fn failed(&self, msg: String) -> EngineError {
        EngineError::Io {
            op: "sync",
            path: self.path.clone(),
            source: std::io::Error::other(msg),
        }
    }
}

/// Owns the SQLite connections; everything here runs on the database's sync thread.
struct SyncWorker {
    cfg: DbConfig,
    files: DbFiles,
    meta: Meta,
    db: Option<Db>,
    /// The single-replicator lock, taken by `start` and held as long as the worker lives.
    _lock: MetaLock,
    state: SyncState,
    status: Arc<Mutex<Status>>,
    upload_tx: mpsc::Sender<UploadMsg>,
    /// The WAL or DB changed since the last sync.
    dirty: bool,
    last_sync: Option<Instant>,
    checkpoint_due: Option<Instant>,
    synced_since_checkpoint: bool,
    /// The position was checked against the replica (no sync before that).
    reconciled: bool,
    reconcile_retry: Option<Instant>,
    reconcile_backoff: Duration,
}

impl SyncWorker {
    /// Opens the database, recovers the position from the meta dir and reconciles it with the
    /// replica (Litestream #781). Returns the replica's newest L0 TXID.
    fn open_db(&mut self) -> Result<(), EngineError> {
        if !self.cfg.path.exists() {
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
    fn try_reconcile(&mut self, now: bool) -> Result<u64, EngineError> {
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
                let _ = self.upload_tx.send(UploadMsg::NewL0);
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

    fn run(
        mut self,
        _subscription: watch::Watch,
        changes: UnixStream,
        wake: UnixStream,
        cmds: mpsc::Receiver<SyncCmd>,
    ) {
        loop {
            // Sleep until the WAL/DB changes, a command arrives, or a pending deadline passes.
            let now = Instant::now();
            let mut deadline = self.checkpoint_due;
            if let Some(t) = self.reconcile_retry.filter(|_| self.db.is_some()) {
                deadline = Some(deadline.map_or(t, |d| d.min(t)));
                self.dirty |= Instant::now() >= t;
            }
            if self.dirty && self.db.is_some() {
                let next = self
                    .last_sync
                    .map_or(now, |t| t + self.cfg.min_sync_interval);
                deadline = Some(deadline.map_or(next, |d| d.min(next)));
            }
            let timeout = deadline.map(|d| d.saturating_duration_since(now));
            let (changed, wake_ready, hangup) = poll_two(&changes, &wake, timeout);
            if changed && watch::drain(&changes) {
                self.dirty = true;
            }
            if wake_ready {
                let mut buf = [0u8; 64];
                while std::io::Read::read(&mut &wake, &mut buf).is_ok_and(|n| n > 0) {}
            }
            while let Ok(cmd) = cmds.try_recv() {
                match cmd {
                    SyncCmd::SyncNow(reply) => {
                        let r = self.ensure_init(true).and_then(|()| self.sync_all());
                        let _ = reply.send(r.map_err(|e| e.to_string()));
                    }
                    SyncCmd::Stop(deadline, reply) => {
                        let r = self.final_sync(deadline);
                        self.db = None; // releases the read lock and closes the connections
                        let _ = reply.send(r.map_err(|e| e.to_string()));
                        return;
                    }
                }
            }
            if hangup {
                return; // the Replicator was dropped without shutdown
            }
            if self.db.is_none() {
                if self.dirty && self.cfg.path.exists() {
                    self.dirty = false;
                    if let Err(e) = self.ensure_init(false) {
                        warn!(db = %self.cfg.path.display(), "cannot start replication: {e}");
                        self.record_error(&e);
                    }
                }
                continue;
            }
            let now = Instant::now();
            if self.dirty
                && self
                    .last_sync
                    .is_none_or(|t| now >= t + self.cfg.min_sync_interval)
            {
                self.dirty = false;
                self.last_sync = Some(now);
                match self.sync_all().and_then(|()| self.maybe_checkpoint()) {
                    Ok(()) => {}
                    Err(e @ EngineError::ReplicaPending(_)) => debug!("{e}"),
                    Err(e) => {
                        warn!(db = %self.cfg.path.display(), "sync failed: {e}");
                        self.record_error(&e);
                    }
                }
            }
            if self.checkpoint_due.is_some_and(|d| Instant::now() >= d) {
                self.checkpoint_due = None;
                if self.synced_since_checkpoint
                    && self.wal_frames() > 1
                    && let Err(e) = self.checkpoint(false)
                {
                    warn!(db = %self.cfg.path.display(), "checkpoint failed: {e}");
                    self.record_error(&e);
                }
            }
        }
    }

    fn ensure_init(&mut self, now: bool) -> Result<(), EngineError> {
        if self.db.is_none() {
            self.open_db()?;
        }
        self.try_reconcile(now).map(|_| ())
    }

    fn final_sync(&mut self, deadline: Instant) -> Result<(), EngineError> {
        if self.db.is_none() && !self.cfg.path.exists() {
            return Ok(()); // nothing was ever replicated
        }
        loop {
            match self.ensure_init(true).and_then(|()| self.sync_all()) {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() + Duration::from_millis(200) < deadline => {
                    warn!(db = %self.cfg.path.display(), "final sync failed, retrying: {e}");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Syncs every committed frame (in max-sync-wal-bytes chunks, one L0 each).
    fn sync_all(&mut self) -> Result<(), EngineError> {
        let opts = SyncOptions {
            max_wal_bytes: self.cfg.max_sync_wal_bytes,
            encoding: self.cfg.encoding,
        };
        self.try_reconcile(false)?;
        let mut forced = false;
        loop {
            let Some(db) = self.db.as_ref() else {
                return Err(EngineError::NoDatabase(self.cfg.path.clone()));
            };
            match sync::sync_once(&self.files, db.file(), &self.meta, &mut self.state, &opts) {
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
                        drop(s);
                        let _ = self.upload_tx.send(UploadMsg::NewL0);
                    }
                    if !out.limited {
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

    fn record_error(&self, e: &EngineError) {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last_error = Some(e.to_string());
    }
}

/// Polls the change socket and the wake socket; returns (changes readable, wake readable, wake hung
/// up).
fn poll_two(
    changes: &UnixStream,
    wake: &UnixStream,
    timeout: Option<Duration>,
) -> (bool, bool, bool) {
    let mut fds = [
        libc::pollfd {
            fd: changes.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: wake.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    let ms = timeout.map_or(-1, |t| {
        t.as_millis().min(i32::MAX as u128) as i32 + i32::from(t.subsec_nanos() % 1_000_000 != 0)
    });
    // SAFETY: two valid pollfd structs that live across the call.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
    if n <= 0 {
        return (false, false, false);
    }
    let hup = fds[1].revents & (libc::POLLHUP | libc::POLLERR) != 0;
    (
        fds[0].revents & libc::POLLIN != 0,
        fds[1].revents & libc::POLLIN != 0,
        hup,
    )
}

/// One compaction level's timer: armed only while new data waits for it.
#[derive(Debug)]
struct LevelTimer {
    level: u8,
    interval: Duration,
    due: Option<Instant>,
}

impl LevelTimer {
    /// Arms at the next wall-clock multiple of the interval (Litestream aligns levels the same way).
    fn arm(&mut self) {
        if self.due.is_some() || self.interval.is_zero() {
            return;
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let step = self.interval.as_millis().max(1);
        let next_ms = (now.as_millis() / step + 1) * step;
        let wait = Duration::from_millis((next_ms - now.as_millis()) as u64);
        self.due = Some(Instant::now() + wait);
    }
}

/// Owns replica traffic; runs on the database's upload thread.
struct Uploader {
    path: PathBuf,
    replica: Arc<dyn ReplicaClient>,
    meta: Meta,
    status: Arc<Mutex<Status>>,
    encoding: PageEncoding,
    replica_txid: Option<u64>,
    retry_at: Option<Instant>,
    backoff: Duration,
    levels: Vec<LevelTimer>,
    snapshot: LevelTimer,
    retention: Retention,
    retention_enabled: bool,
    last_retention: Option<Instant>,
}

const MIN_BACKOFF: Duration = Duration::from_millis(500);
/// How often a hole in the local L0 listing is listed again (1, 2, ... ms apart) before it is
/// believed (one more listing always suffices unless a file really is missing).
const GAP_RELISTS: u64 = 5;
const MAX_BACKOFF: Duration = Duration::from_secs(60);

impl Uploader {
    fn new(cfg: &DbConfig, meta: Meta, status: Arc<Mutex<Status>>) -> Uploader {
        let levels = cfg
            .levels
            .iter()
            .enumerate()
            .map(|(i, interval)| LevelTimer {
                level: (i + 1) as u8,
                interval: *interval,
                due: None,
            })
            .collect();
        Uploader {
            path: cfg.path.clone(),
            replica: cfg.replica.clone(),
            meta,
            status,
            encoding: cfg.encoding,
            replica_txid: None,
            retry_at: None,
            backoff: MIN_BACKOFF,
            levels,
            snapshot: LevelTimer {
                level: SNAPSHOT_LEVEL,
                interval: cfg.snapshot_interval,
                due: None,
            },
            retention: Retention {
                snapshot_retention: cfg.snapshot_retention,
                l0_retention: cfg.l0_retention,
            },
            retention_enabled: cfg.retention_enabled,
            last_retention: None,
        }
    }

    fn run(&mut self, rx: mpsc::Receiver<UploadMsg>, replica_txid: Option<u64>) {
        self.replica_txid = replica_txid;
        if let Some(t) = replica_txid {
            let mut s = self.status.lock().unwrap_or_else(|e| e.into_inner());
            s.replica_txid = s.replica_txid.max(t);
        }
        if replica_txid.is_some() {
            let _ = self.upload_pending(false);
        }
        // A message read ahead while coalescing NewL0s, handled next.
        let mut next: Option<UploadMsg> = None;
        loop {
            let deadline = self
                .levels
                .iter()
                .chain(std::iter::once(&self.snapshot))
                .filter_map(|l| l.due)
                .chain(self.retry_at)
                .min();
            let msg = match (next.take(), deadline) {
                (Some(msg), _) => Ok(msg),
                (None, Some(d)) => rx.recv_timeout(d.saturating_duration_since(Instant::now())),
                (None, None) => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match msg {
                Ok(UploadMsg::NewL0) => {
                    // One upload round covers every L0 written so far: skip the NewL0s queued
                    // behind this one (at a high commit rate thousands queue up, and each round
                    // lists the local L0 directory), but keep any other message, in order.
                    loop {
                        match rx.try_recv() {
                            Ok(UploadMsg::NewL0) => continue,
                            Ok(other) => next = Some(other),
                            Err(_) => {}
                        }
                        break;
                    }
                    let _ = self.upload_pending(false);
                }
                Ok(UploadMsg::Flush(reply)) => {
                    let r = self.upload_pending(true);
                    let _ = reply.send(r);
                }
                Ok(UploadMsg::Drain(deadline, reply)) => {
                    let _ = reply.send(self.drain(deadline));
                    return;
                }
                Err(RecvTimeoutError::Timeout) => self.run_due(),
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// The replica's newest L0 TXID, listed once (lazily when the database appeared after start).
    fn replica_txid(&mut self) -> Result<u64, ReplicaError> {
        if let Some(t) = self.replica_txid {
            return Ok(t);
        }
        let t = self.replica.ltx_files(0)?.last().map_or(0, |f| f.max_txid);
        self.replica_txid = Some(t);
        let mut s = self.status.lock().unwrap_or_else(|e| e.into_inner());
        s.replica_txid = s.replica_txid.max(t);
        Ok(t)
    }

    /// Uploads every local L0 newer than the replica's position, in TXID order. On a replica error,
    /// schedules a retry with exponential back-off and jitter (unless `now`).
    fn upload_pending(&mut self, now: bool) -> Result<u64, String> {
        if !now && self.retry_at.is_some_and(|t| Instant::now() < t) {
            return Err("waiting to retry".to_string());
        }
        match self.try_upload() {
            Ok(uploaded) => {
                self.retry_at = None;
                self.backoff = MIN_BACKOFF;
                if uploaded > 0 {
                    if let Some(l1) = self.levels.first_mut() {
                        l1.arm();
                    }
                    self.snapshot.arm();
                }
                Ok(self.replica_txid.unwrap_or(0))
            }
            Err(e) => {
                let jitter = Duration::from_millis(
                    u64::from(
                        SystemTime::now()
                            .duration_since(UNIX_EPOCH)
                            .unwrap_or_default()
                            .subsec_nanos()
                            % 1000,
                    ) * self.backoff.as_millis() as u64
                        / 2000,
                );
                self.retry_at = Some(Instant::now() + self.backoff + jitter);
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                let msg = e.to_string();
                warn!(db = %self.path.display(), "upload failed, retrying in {:?}: {msg}", self.backoff);
                let mut s = self.status.lock().unwrap_or_else(|e| e.into_inner());
                s.replica_errors += 1;
                s.last_error = Some(msg.clone());
                Err(msg)
            }
        }
    }

    fn try_upload(&mut self) -> Result<usize, EngineError> {
        let mut pos = self.replica_txid()?;
        let mut uploaded = 0;
        let start = pos;
        let mut txids = self.meta.l0_txids()?;
        // The sync thread renames L0 files into place one after another, and a directory listing
        // taken meanwhile may miss one yet show a later one. Every file up to the newest one this
        // first listing saw was in place before the listing ended, so a listing taken after it
        // shows them all: upload up to that TXID only, and list again while it shows a hole there.
        // Uploading past a hole would leave it in the replica's chain for good.
        let target = txids.last().copied().unwrap_or(start);
        let contiguous = |txids: &[u64]| {
            let mut next = start + 1;
            txids
                .iter()
                .filter(|t| **t > start && **t <= target)
                .all(|t| {
                    let ok = *t == next;
                    next = t + 1;
                    ok
                })
        };
        for attempt in 1..=GAP_RELISTS {
            if contiguous(&txids) {
                break;
            }
            std::thread::sleep(Duration::from_millis(attempt));
            txids = self.meta.l0_txids()?;
        }
        for txid in txids.into_iter().filter(|t| *t > start && *t <= target) {
            if txid != pos + 1 {
                warn!(db = %self.path.display(), replica_txid = pos, txid, "local L0 files do not continue the replica's chain");
            }
            let header = self.meta.read_header(txid)?;
            let created_at = UNIX_EPOCH + Duration::from_millis(header.timestamp_ms.max(0) as u64);
            let path = self.meta.l0_path(txid);
            let mut f = std::fs::File::open(&path).map_err(|e| EngineError::Io {
                op: "open",
                path,
                source: e,
            })?;
            self.replica.write_ltx(0, txid, txid, created_at, &mut f)?;
            pos = txid;
            self.replica_txid = Some(pos);
            uploaded += 1;
            let mut s = self.status.lock().unwrap_or_else(|e| e.into_inner());
            s.replica_txid = pos;
            s.last_upload = Some(SystemTime::now());
        }
        Ok(uploaded)
    }

    /// Uploads until the replica has every local L0 or the deadline passes.
    fn drain(&mut self, deadline: Instant) -> Result<u64, String> {
        loop {
            let result = self.upload_pending(true);
            let done = result.is_ok()
                && self
                    .meta
                    .l0_txids()
                    .map(|t| t.last().copied().unwrap_or(0))
                    .unwrap_or(u64::MAX)
                    <= self.replica_txid.unwrap_or(0);
            if done {
                return result;
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(result
                    .err()
                    .unwrap_or_else(|| "local L0 files remain unuploaded".to_string()));
            }
            std::thread::sleep(self.backoff.min(deadline - now));
        }
    }

    fn run_due(&mut self) {
        let now = Instant::now();
        if self.retry_at.is_some_and(|t| now >= t) {
            let _ = self.upload_pending(false);
        }
        for i in 0..self.levels.len() {
            if self.levels[i].due.is_some_and(|d| now >= d) {
                self.levels[i].due = None;
                self.compact(i);
            }
        }
        if self.snapshot.due.is_some_and(|d| now >= d) {
            self.snapshot.due = None;
            match compact::snapshot_level(&*self.replica, self.encoding) {
                Ok(Some(f)) => {
                    info!(db = %self.path.display(), max_txid = f.max_txid, "wrote snapshot level")
                }
                Ok(None) => {}
                Err(e) => warn!(db = %self.path.display(), "snapshot level failed: {e}"),
            }
            self.enforce_retention();
        }
    }

    fn compact(&mut self, i: usize) {
        let dst = self.levels[i].level;
        match compact::compact_level(&*self.replica, dst - 1, dst, self.encoding) {
            Ok(Some(f)) => {
                debug!(db = %self.path.display(), level = dst, min = f.min_txid, max = f.max_txid, "compacted");
                if let Some(next) = self.levels.get_mut(i + 1) {
                    next.arm();
                }
                if dst == 1 {
                    self.remove_compacted_local(f.max_txid);
                    let retention_due = self.last_retention.is_none_or(|t| {
                        t.elapsed() >= self.retention.l0_retention.max(Duration::from_secs(1))
                    });
                    if retention_due {
                        self.enforce_retention();
                    }
                }
            }
            Ok(None) => {}
            Err(e) => {
                warn!(db = %self.path.display(), level = dst, "compaction failed: {e}");
                self.levels[i].due =
                    Some(Instant::now() + self.backoff.max(Duration::from_secs(5)));
            }
        }
    }

    /// Local L0 files are only staging: once uploaded and compacted into L1 they go, except the
    /// newest (it is the replication position).
    fn remove_compacted_local(&self, l1_max: u64) {
        let Ok(txids) = self.meta.l0_txids() else {
            return;
        };
        let newest = txids.last().copied().unwrap_or(0);
        let limit = l1_max.min(self.replica_txid.unwrap_or(0));
        for txid in txids.into_iter().filter(|t| *t <= limit && *t < newest) {
            if let Err(e) = self.meta.remove_l0(txid) {
                warn!(db = %self.path.display(), "{e}");
            }
        }
    }

    fn enforce_retention(&mut self) {
        if !self.retention_enabled {
            return;
        }
        self.last_retention = Some(Instant::now());
        if let Err(e) =
            compact::enforce_retention(&*self.replica, &self.retention, SystemTime::now())
        {
            warn!(db = %self.path.display(), "retention failed: {e}");
        }
    }
}
