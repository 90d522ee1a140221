//! A database's upload lane: all of its replica traffic. Uploads each local L0 file as soon as the
//! sync lane writes it (with back-off while the replica fails), then compaction, the snapshot level
//! and retention on their schedules, and the upload part of the final sync (retried until the
//! deadline). It runs in turns on the upload pool ([`super::super::pool`]); no timer is armed unless
//! work waits for it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing::{debug, info, warn};

use super::{
    Answer, DbConfig, EngineError, Inbox, LaneWorker, MAX_BACKOFF, MIN_BACKOFF, Reply, Status,
    finish, lane_turn, lock,
};
use crate::replica::{ReplicaClient, ReplicaError};
use crate::replication::compact::{self, Retention};
use crate::replication::ltx::{PageEncoding, SNAPSHOT_LEVEL};
use crate::replication::meta::Meta;
use crate::replication::pool::{Handle, Task, Turn};

/// How often a hole in the local L0 listing is listed again (1, 2, ... ms apart) before it is
/// believed (one more listing always suffices unless a file really is missing).
const GAP_RELISTS: u64 = 5;

pub(super) enum UploadMsg {
    Flush(Reply<Result<u64, String>>),
    Drain(Instant, Reply<Result<u64, String>>),
}

/// The lane as the pool and the [`super::Replicator`] see it.
pub(super) struct UploadLane {
    uploader: Mutex<Option<Uploader>>,
    inbox: Mutex<Inbox<UploadMsg>>,
    /// The sync lane wrote an L0 file.
    new_l0: AtomicBool,
    closed: AtomicBool,
}

/// How the sync lane and the Replicator reach the upload lane.
#[derive(Clone)]
pub(super) struct UploadPort {
    pub(super) lane: Arc<UploadLane>,
    pub(super) handle: Handle,
}

impl UploadPort {
    pub(super) fn new_l0(&self) {
        self.lane.new_l0.store(true, Ordering::Release);
        self.handle.notify();
    }

    /// Queues a message; `Err` gives it back when the lane has ended.
    pub(super) fn send(&self, msg: UploadMsg) -> Result<(), UploadMsg> {
        lock(&self.lane.inbox).push(msg)?;
        self.handle.notify();
        Ok(())
    }

    pub(super) fn close(&self) {
        self.lane.closed.store(true, Ordering::Release);
        self.handle.notify();
    }
}

impl UploadLane {
    pub(super) fn new(uploader: Uploader) -> UploadLane {
        UploadLane {
            uploader: Mutex::new(Some(uploader)),
            inbox: Mutex::new(Inbox::default()),
            new_l0: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        }
    }

    /// The replica's newest L0 TXID as the start-up found it (None: not reachable then).
    pub(super) fn set_replica_txid(&self, txid: Option<u64>) {
        if let Some(up) = lock(&self.uploader).as_mut() {
            up.replica_txid = txid;
        }
    }
}

impl Task for UploadLane {
    fn turn(&self) -> Turn {
        lane_turn(&self.uploader, &self.inbox, &self.new_l0, &self.closed).unwrap_or(Turn::Done)
    }

    fn abandon(&self) {
        let up = lock(&self.uploader).take();
        drop(up);
        finish(&self.inbox);
    }
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

/// Owns replica traffic; runs only in its lane's turns.
pub(super) struct Uploader {
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
    /// The first turn uploads what the start-up left pending.
    started: bool,
    draining: Option<(Instant, Reply<Result<u64, String>>)>,
    /// The final upload's answer, sent by the lane once the uploader is gone.
    drain_outcome: Answer<Result<u64, String>>,
}

impl Uploader {
    pub(super) fn new(
        cfg: &DbConfig,
        meta: Meta,
        status: Arc<Mutex<Status>>,
        replica_txid: Option<u64>,
    ) -> Uploader {
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
            replica_txid,
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
            started: false,
            draining: None,
            drain_outcome: None,
        }
    }
}

impl LaneWorker for Uploader {
    type Msg = UploadMsg;
    type Outcome = Result<u64, String>;

    /// One turn: what the old per-database upload thread did between two sleeps.
    fn turn(&mut self, new_l0: bool, msgs: Vec<UploadMsg>, closed: bool) -> Turn {
        if !self.started {
            self.started = true;
            if let Some(t) = self.replica_txid {
                let mut s = lock(&self.status);
                s.replica_txid = s.replica_txid.max(t);
                drop(s);
                let _ = self.upload_pending(false);
            }
        }
        if new_l0 {
            // One upload round covers every L0 written so far, however many were announced.
            let _ = self.upload_pending(false);
        }
        for msg in msgs {
            match msg {
                UploadMsg::Flush(reply) => {
                    let r = self.upload_pending(true);
                    reply.send(r);
                }
                UploadMsg::Drain(deadline, reply) => {
                    if self.draining.is_none() {
                        self.draining = Some((deadline, reply));
                    }
                }
            }
        }
        if self.draining.is_some() {
            return self.drain_turn();
        }
        if closed {
            return Turn::Done;
        }
        self.run_due();
        Turn::Sleep(self.next_deadline())
    }

    fn outcome(&mut self) -> Answer<Result<u64, String>> {
        self.drain_outcome.take()
    }
}

impl Uploader {
    fn next_deadline(&self) -> Option<Instant> {
        self.levels
            .iter()
            .chain(std::iter::once(&self.snapshot))
            .filter_map(|l| l.due)
            .chain(self.retry_at)
            .min()
    }

    /// The replica's newest L0 TXID, listed once (lazily when the database appeared after start).
    fn replica_txid(&mut self) -> Result<u64, ReplicaError> {
        if let Some(t) = self.replica_txid {
            return Ok(t);
        }
        let t = self.replica.ltx_files(0)?.last().map_or(0, |f| f.max_txid);
        self.replica_txid = Some(t);
        let mut s = lock(&self.status);
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
                if let Some(f) = lock(&self.status).replica_ok() {
                    info!(db = %self.path.display(), kind = f.kind, attempts = f.attempts, "replica reachable again");
                }
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
                let mut s = lock(&self.status);
                match &e {
                    EngineError::Replica(r) => {
                        let news = s.replica_failed(r.kind(), &msg, r.is_permanent());
                        drop(s);
                        super::syncer::log_replica_failure(&self.path, r, news);
                    }
                    other => {
                        let kind = crate::replication::status::local_kind(other);
                        if s.replica_failed(kind, &msg, false) {
                            drop(s);
                            tracing::error!(db = %self.path.display(), kind, "upload failed, retrying: {msg}");
                        }
                    }
                }
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
            {
                // The oldest transaction still waiting is this file's.
                let mut s = lock(&self.status);
                if s.pending_since.is_some() {
                    s.pending_since = Some(created_at);
                }
            }
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
            lock(&self.status).uploaded(pos, None);
        }
        Ok(uploaded)
    }

    /// One attempt of the final upload: done when the replica has every local L0; otherwise tried
    /// again after the back-off until the deadline passes.
    fn drain_turn(&mut self) -> Turn {
        let Some((deadline, _)) = self.draining.as_ref() else {
            return Turn::Done;
        };
        let deadline = *deadline;
        let result = self.upload_pending(true);
        let done = result.is_ok()
            && self
                .meta
                .l0_txids()
                .map(|t| t.last().copied().unwrap_or(0))
                .unwrap_or(u64::MAX)
                <= self.replica_txid.unwrap_or(0);
        let now = Instant::now();
        if !done && now < deadline {
            return Turn::Sleep(Some(now + self.backoff.min(deadline - now)));
        }
        let outcome = if done {
            result
        } else {
            Err(result
                .err()
                .unwrap_or_else(|| "local L0 files remain unuploaded".to_string()))
        };
        if let Some((_, reply)) = self.draining.take() {
            self.drain_outcome = Some((reply, outcome));
        }
        Turn::Done
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
                Err(e) => self.quiet_while_failing(
                    || warn!(db = %self.path.display(), "snapshot level failed: {e}"),
                ),
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
                self.quiet_while_failing(
                    || warn!(db = %self.path.display(), level = dst, "compaction failed: {e}"),
                );
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
            self.quiet_while_failing(|| warn!(db = %self.path.display(), "retention failed: {e}"));
        }
    }

    /// Runs `log` unless the replica is known to fail already (that was said once).
    fn quiet_while_failing(&self, log: impl FnOnce()) {
        if lock(&self.status).replica_failure.is_none() {
            log();
        }
    }
}
