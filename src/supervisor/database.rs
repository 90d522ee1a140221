//! `[[databases]]` as nodes of the service graph: for each database a oneshot [`RestoreUnit`] (puts
//! the file in place before anything that uses it starts) and a longrun [`ReplicateUnit`] (the
//! replication engine; ready once replicating; its stop is the final sync). Also what `litevisor
//! status` shows per database ([`DbShared`]).
//!
//! All SQLite and replica work runs on plain threads, never on the supervisor's runtime: the engine
//! blocks, and the S3 client runs its own runtime. Results come back over oneshot channels.
//!
//! The restore policy is decided before the services start, by
//! [`crate::replication::prepare::restore_if_needed`]. A replica that cannot be listed, or a restore that fails, stops the start-up (exit 1) rather than
//! letting the application start on an empty database (Litestream #364). A stop order during a
//! restore abandons it: the restore writes a temporary file and renames it only when complete, so the
//! database is then still absent, never half-written.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

use super::unit::{Command, Control, Ended, Unit, UnitFuture, Why};
use crate::config::Database;
use crate::control::DatabaseRow;
use crate::replication::engine::{DbConfig, FinalSync, Replicator, Status, Syncer};
use crate::replication::prepare::{Restored, nothing_to_restore, restore_if_needed};

/// A start of the engine under way: settles on its outcome.
pub type Started = watch::Receiver<Option<Result<(), String>>>;

/// One database's state as both of its units and the status server see it.
#[derive(Debug)]
pub struct DbShared {
    path: PathBuf,
    replica_url: String,
    /// Its configuration, for `litevisor start DB` after a `stop`.
    db: Database,
    inner: Mutex<DbInner>,
}

/// Where a database is in its life under the supervisor, as `litevisor status` names it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DbState {
    /// Waiting for its restore unit.
    #[default]
    Pending,
    Restoring,
    /// In place (restored, or nothing to restore); replication not started yet.
    Restored,
    Starting,
    Replicating,
    /// A read replica (`follow = true`) kept current from its replica.
    Following,
    FinalSync,
    /// Deleted while replicated (directory mode): its last sync runs.
    Removed,
    /// Replication ended: after the final sync, or by `litevisor stop`.
    Stopped,
    Failed,
}

impl DbState {
    pub fn as_str(self) -> &'static str {
        match self {
            DbState::Pending => "pending",
            DbState::Restoring => "restoring",
            DbState::Restored => "restored",
            DbState::Starting => "starting",
            DbState::Replicating => "replicating",
            DbState::Following => "following",
            DbState::FinalSync => "final sync",
            DbState::Removed => "removed",
            DbState::Stopped => "stopped",
            DbState::Failed => "failed",
        }
    }
}

impl std::fmt::Display for DbState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Default)]
struct DbInner {
    state: DbState,
    engine: Engine,
    /// The engine's status when it was last taken out (after the final sync, the final figures).
    last: Status,
    restore: Option<String>,
    restore_took: Option<Duration>,
    error: Option<String>,
    final_sync: Option<(Duration, bool)>,
    /// `litevisor stop DB` ended its replication (after a final sync) until `litevisor start DB`.
    stopped_by_request: bool,
    /// The supervisor is stopping it for good: `litevisor start DB` is refused.
    closing: bool,
}

/// Where the database's replication engine is. Held here, not by the replicate unit, so status
/// requests can read it and a unit that panicked can be replaced without losing it.
#[derive(Debug, Default)]
enum Engine {
    #[default]
    Idle,
    /// Its start thread runs; the outcome arrives on the channel.
    Starting(watch::Receiver<Option<Result<(), String>>>),
    Running(Replicator),
    /// Taken out for the final sync, which runs on a thread of its own.
    FinalSync(watch::Receiver<Option<FinalSync>>),
}

impl DbShared {
    pub fn new(db: &Database) -> Arc<DbShared> {
        Arc::new(DbShared {
            path: db.path.clone(),
            replica_url: db.replica.to_string(),
            db: db.clone(),
            inner: Mutex::new(DbInner {
                state: DbState::Pending,
                ..DbInner::default()
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DbInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn set_state(&self, state: DbState) {
        self.lock().state = state;
    }

    /// Marks the database failed with `why` (shown by `litevisor status`); the unit's end.
    pub(super) fn fail(&self, why: String) -> Ended {
        let mut inner = self.lock();
        inner.state = DbState::Failed;
        inner.error = Some(why.clone());
        ended(Why::Failed(why))
    }

    fn engine_idle(&self) -> bool {
        matches!(self.lock().engine, Engine::Idle)
    }

    /// Starts the engine on the replication pool (it blocks on SQLite and the replica), or adopts
    /// the one already starting or running. The channel settles on the start's outcome.
    pub(super) fn start_engine(
        self: &Arc<Self>,
        db: &Database,
    ) -> watch::Receiver<Option<Result<(), String>>> {
        let mut inner = self.lock();
        match &inner.engine {
            Engine::Starting(rx) => return rx.clone(),
            Engine::Running(_) | Engine::FinalSync(_) => return watch::channel(Some(Ok(()))).1,
            Engine::Idle => {}
        }
        inner.state = DbState::Starting;
        let (tx, rx) = watch::channel(None);
        inner.engine = Engine::Starting(rx.clone());
        drop(inner);
        let cfg = DbConfig::for_database(db);
        let shared = Arc::clone(self);
        // On the replication upload pool: the start blocks on SQLite and the replica, and a
        // thread per database would not scale to thousands of them.
        crate::replication::pool::upload_pool().execute(move || {
            let result = Replicator::start(cfg);
            let mut inner = shared.lock();
            let outcome = match result {
                Ok(replicator) => {
                    inner.engine = Engine::Running(replicator);
                    // A restart by `litevisor start` has no unit to say so.
                    if inner.state == DbState::Starting {
                        inner.state = DbState::Replicating;
                    }
                    Ok(())
                }
                Err(e) => {
                    inner.engine = Engine::Idle;
                    Err(e.to_string())
                }
            };
            drop(inner);
            let _ = tx.send(Some(outcome));
        });
        rx
    }

    /// Takes the running engine out and runs its final sync (on the replication pool), bounded by
    /// `deadline`; or follows the final sync already under way. The channel settles on the result
    /// (it closes without one when there was no engine to sync).
    pub(super) fn final_sync(
        self: &Arc<Self>,
        deadline: Instant,
        gone: bool,
    ) -> std::io::Result<watch::Receiver<Option<FinalSync>>> {
        let mut inner = self.lock();
        let replicator = match std::mem::take(&mut inner.engine) {
            Engine::Running(replicator) => replicator,
            Engine::FinalSync(rx) => {
                inner.engine = Engine::FinalSync(rx.clone());
                return Ok(rx);
            }
            other => {
                inner.engine = other;
                return Ok(watch::channel(None).1);
            }
        };
        inner.state = if gone {
            DbState::Removed
        } else {
            DbState::FinalSync
        };
        // What the status shows while the engine is out of the record.
        inner.last = replicator.status();
        let (tx, rx) = watch::channel(None);
        inner.engine = Engine::FinalSync(rx.clone());
        drop(inner);
        let shared = Arc::clone(self);
        let began = Instant::now();
        let finish = move |result: FinalSync| {
            {
                let mut inner = shared.lock();
                inner.final_sync = Some((began.elapsed(), result.ok()));
                inner.last.txid = result.txid;
                inner.last.replica_txid = result.replica_txid;
                inner.state = if result.ok() {
                    DbState::Stopped
                } else {
                    DbState::Failed
                };
                if let Some(e) = &result.error {
                    inner.error = Some(format!("final sync: {e}"));
                }
            }
            let _ = tx.send(Some(result));
        };
        if gone {
            replicator.begin_removal(deadline, finish);
        } else {
            replicator.begin_shutdown(deadline, finish);
        }
        Ok(rx)
    }

    /// What the follower of a read replica did: the status shows the applied TXID, the last apply,
    /// and (while polls fail) since when the copy could not be confirmed current.
    pub(super) fn note_follow(&self, event: &crate::replication::follow::FollowEvent) {
        use crate::replication::follow::FollowEvent;
        let now = std::time::SystemTime::now();
        let mut inner = self.lock();
        let last = &mut inner.last;
        match event {
            FollowEvent::Restored { txid }
            | FollowEvent::Applied { to: txid, .. }
            | FollowEvent::Resynced { to: txid, .. } => {
                last.txid = *txid;
                last.replica_txid = *txid;
                last.last_sync = Some(now);
                last.pending_since = None;
                last.last_error = None;
            }
            FollowEvent::UpToDate { txid } => {
                last.txid = *txid;
                last.replica_txid = *txid;
                last.pending_since = None;
                last.last_error = None;
            }
            FollowEvent::Retrying { error, .. } => {
                last.pending_since.get_or_insert(now);
                last.replica_errors += 1;
                last.last_error = Some(error.clone());
            }
        }
        if let FollowEvent::Retrying { error, .. } = event {
            inner.error = Some(format!("following: {error}"));
        } else {
            inner.error = None;
        }
    }

    fn not_open(&self, state: DbState) -> String {
        format!("database not open: {} ({state})", self.path.display())
    }

    fn stopping_error(&self) -> String {
        format!("database {}: litevisor is stopping it", self.path.display())
    }

    /// A handle to force syncs (`litevisor sync`), while the engine runs.
    pub fn syncer(&self) -> Result<Syncer, String> {
        let inner = self.lock();
        match &inner.engine {
            Engine::Running(replicator) => Ok(replicator.syncer()),
            _ => Err(self.not_open(inner.state)),
        }
    }

    /// Stopped by `litevisor stop DB` (its final sync done or under way).
    pub fn is_paused(&self) -> bool {
        self.lock().stopped_by_request
    }

    /// `litevisor stop DB`: the final sync (bounded by `deadline`), then no replication until
    /// [`DbShared::resume`]. The channel settles on the final sync's outcome; it is settled at once
    /// when the database was stopped already.
    pub fn pause(
        self: &Arc<Self>,
        deadline: Instant,
    ) -> Result<watch::Receiver<Option<FinalSync>>, String> {
        {
            let mut inner = self.lock();
            if inner.closing {
                return Err(self.stopping_error());
            }
            match &inner.engine {
                Engine::Running(_) | Engine::FinalSync(_) => inner.stopped_by_request = true,
                _ => {
                    return Err(self.not_open(inner.state));
                }
            }
        }
        self.final_sync(deadline, false)
            .map_err(|e| format!("cannot start the final sync: {e}"))
    }

    /// `litevisor start DB` after a `stop`: starts the engine again (its start resumes from the
    /// local state, like any start). `Ok(None)` when it was running already.
    pub fn resume(self: &Arc<Self>) -> Result<Option<Started>, String> {
        let mut inner = self.lock();
        if inner.closing {
            return Err(self.stopping_error());
        }
        match &inner.engine {
            Engine::Running(_) | Engine::Starting(_) => return Ok(None),
            Engine::FinalSync(rx) if inner.stopped_by_request && rx.borrow().is_some() => {}
            Engine::FinalSync(_) => {
                return Err(format!(
                    "database {}: its final sync is still running",
                    self.path.display()
                ));
            }
            Engine::Idle => {
                return Err(self.not_open(inner.state));
            }
        }
        inner.engine = Engine::Idle;
        inner.stopped_by_request = false;
        inner.error = None;
        drop(inner);
        let started = self.start_engine(&self.db);
        Ok(Some(started))
    }

    /// The supervisor stops this database for good: no `litevisor start` from now on. Returns the
    /// start under way, if any, for the caller to wait for before its final sync.
    pub(super) fn close(&self) -> Option<watch::Receiver<Option<Result<(), String>>>> {
        let mut inner = self.lock();
        inner.closing = true;
        match &inner.engine {
            Engine::Starting(rx) => Some(rx.clone()),
            _ => None,
        }
    }

    /// The channel of a start under way, if the engine is starting.
    pub(super) fn starting(&self) -> Option<watch::Receiver<Option<Result<(), String>>>> {
        match &self.lock().engine {
            Engine::Starting(rx) => Some(rx.clone()),
            _ => None,
        }
    }

    /// The status row: a short lock plus, while replicating, the engine's own short status lock,
    /// and a `stat` of the database and its WAL.
    pub fn row(&self) -> DatabaseRow {
        let inner = self.lock();
        let engine = match &inner.engine {
            Engine::Running(replicator) => {
                let mut status = replicator.status();
                // After `litevisor stop` + `start` the new engine has not synced yet.
                status.last_sync = status.last_sync.or(inner.last.last_sync);
                status.last_upload = status.last_upload.or(inner.last.last_upload);
                status
            }
            _ => inner.last.clone(),
        };
        // While the engine runs, what it is going through right now is the state.
        let state = match (inner.state, &engine) {
            (DbState::Replicating, e) if e.local_failure.is_some() => "error",
            (DbState::Replicating | DbState::Starting, e) if e.replica_failure.is_some() => {
                "retrying"
            }
            (state, _) => state.as_str(),
        };
        let size = |p: &Path| std::fs::metadata(p).ok().map(|m| m.len());
        DatabaseRow {
            path: self.path.display().to_string(),
            replica: self.replica_url.clone(),
            state: state.to_owned(),
            db_size: size(&self.path),
            wal_size: size(&crate::replication::db::wal_path(&self.path)),
            engine,
            error: inner.error.clone(),
            restore: inner.restore.clone(),
            restore_took: inner.restore_took,
            final_sync: inner.final_sync,
        }
    }
}

pub(super) fn ended(why: Why) -> Ended {
    Ended { status: None, why }
}

/// The oneshot that puts the database file in place (see the module docs for the policy).
pub struct RestoreUnit {
    db: Database,
    shared: Arc<DbShared>,
}

impl RestoreUnit {
    pub fn new(db: Database, shared: Arc<DbShared>) -> Self {
        Self { db, shared }
    }

    async fn supervise(self, mut ctl: Control) -> Ended {
        let name = self.db.path.display().to_string();
        // Decided before looking at the orders: when nothing is to be restored, the database is in
        // place already, and a stop that came first must still let its replicator do the final sync.
        if let Some(why) = nothing_to_restore(&self.db) {
            tracing::info!(db = %name, "database {name}: not restored ({why})");
            self.shared.lock().restore = Some(format!("not restored ({why})"));
            ctl.ready();
            return ended(Why::Exited);
        }
        if ctl.command() != Command::Run {
            return ended(Why::Stopped);
        }
        self.shared.set_state(DbState::Restoring);
        crate::fault::panic_if("start", &format!("restore:{name}"));
        let (tx, rx) = oneshot::channel();
        let db = self.db.clone();
        let spawned = std::thread::Builder::new()
            .name("lv-restore".into())
            .spawn(move || {
                let _ = tx.send(restore_if_needed(&db));
            });
        if let Err(e) = spawned {
            return self.shared.fail(format!(
                "database {name}: cannot start the restore thread: {e}"
            ));
        }
        tokio::select! {
            result = rx => match result {
                Ok(Ok(Restored::Kept(why))) => {
                    tracing::info!(db = %name, "database {name}: not restored ({why})");
                    self.shared.lock().restore = Some(format!("not restored ({why})"));
                }
                Ok(Ok(Restored::Restored { txid, bytes, took })) => {
                    tracing::info!(
                        db = %name,
                        "database {name}: restored from {} to txid {txid:016x} ({bytes} bytes in {:.1}s)",
                        self.shared.replica_url,
                        took.as_secs_f64()
                    );
                    let mut inner = self.shared.lock();
                    inner.restore = Some(format!("restored txid {txid:016x}"));
                    inner.restore_took = Some(took);
                }
                Ok(Err(e)) => return self.shared.fail(format!("database {name}: {e}")),
                Err(_) => return self.shared.fail(format!("database {name}: the restore thread died")),
            },
            _ = ctl.next_order() => {
                tracing::info!(db = %name, "database {name}: restore abandoned (stopping)");
                self.shared.set_state(DbState::Stopped);
                return ended(Why::Stopped);
            }
        }
        self.shared.set_state(DbState::Restored);
        ctl.ready();
        ended(Why::Exited)
    }
}

impl Unit for RestoreUnit {
    fn run(self: Box<Self>, control: Control) -> UnitFuture {
        Box::pin(self.supervise(control))
    }
}

/// The longrun that replicates one database; its stop is the final sync.
///
/// The engine and its final sync belong to the database's [`DbShared`] record, not to this unit's
/// future: should the unit panic, the orchestrator starts a fresh one ([`ReplicateUnit::revive`]),
/// which adopts the engine (or the final sync already under way) instead of losing it.
pub struct ReplicateUnit {
    db: Database,
    shared: Arc<DbShared>,
}

impl ReplicateUnit {
    pub fn new(db: Database, shared: Arc<DbShared>) -> Self {
        Self { db, shared }
    }

    async fn supervise(self, mut ctl: Control) -> Ended {
        let name = self.db.path.display().to_string();
        if ctl.command() == Command::Kill && self.shared.engine_idle() {
            // Killed before it ever started: nothing was replicated, nothing is lost here.
            return ended(Why::Stopped);
        }
        let mut started = self.shared.start_engine(&self.db);
        let mut started_done = false;
        // Set by a stop order; the final sync starts as soon as the engine runs.
        let mut stop_deadline: Option<Instant> = None;
        let mut done: Option<watch::Receiver<Option<FinalSync>>> = None;
        loop {
            if started_done
                && done.is_none()
                && let Some(deadline) = stop_deadline
            {
                match self.shared.final_sync(deadline, false) {
                    Ok(rx) => done = Some(rx),
                    Err(e) => {
                        return ended(Why::FinalSyncFailed(format!(
                            "database {name}: FINAL SYNC FAILED: cannot start its thread: {e}"
                        )));
                    }
                }
            }
            tokio::select! {
                result = outcome(&mut started), if !started_done => {
                    started_done = true;
                    match result {
                        Some(Ok(())) => {
                            if stop_deadline.is_none() {
                                tracing::info!(
                                    db = %name,
                                    "database {name}: replicating to {}",
                                    self.shared.replica_url
                                );
                                self.shared.set_state(DbState::Replicating);
                                crate::fault::panic_if("ready", &format!("replicate:{name}"));
                                ctl.ready();
                            }
                        }
                        Some(Err(e)) => {
                            return self.shared.fail(format!("database {name}: cannot replicate: {e}"));
                        }
                        None => {
                            return self.shared.fail(format!("database {name}: the replication thread died"));
                        }
                    }
                }
                result = outcome_of(&mut done) => {
                    return match result {
                        Some(done) if done.ok() => {
                            tracing::info!(
                                db = %name,
                                "database {name}: final sync done (txid {:016x} on the replica)",
                                done.replica_txid
                            );
                            ended(Why::Stopped)
                        }
                        Some(done) => {
                            let why = done
                                .error
                                .unwrap_or_else(|| "the replica is behind".to_owned());
                            ended(Why::FinalSyncFailed(format!(
                                "database {name}: FINAL SYNC FAILED: local txid {:016x}, replica txid {:016x}: {why}; \
                                 the newest transactions are only in the local database and its WAL (the next start resumes from there)",
                                done.txid, done.replica_txid
                            )))
                        }
                        None => ended(Why::FinalSyncFailed(format!(
                            "database {name}: FINAL SYNC FAILED: the final sync thread died"
                        ))),
                    };
                }
                order = ctl.next_order() => match order {
                    Command::Stop { deadline } => {
                        if stop_deadline.is_none() {
                            crate::fault::panic_if("stop", &format!("replicate:{name}"));
                            let left = deadline.saturating_duration_since(Instant::now());
                            tracing::info!(
                                db = %name,
                                "database {name}: final sync (up to {:.1}s)",
                                left.as_secs_f64()
                            );
                            stop_deadline = Some(deadline);
                            // A `litevisor start` may have restarted the engine since: its final
                            // sync waits for that start.
                            if let Some(rx) = self.shared.close() {
                                started = rx;
                                started_done = false;
                            }
                        }
                    }
                    Command::Kill => {
                        if !started_done && self.shared.engine_idle() {
                            return ended(Why::Stopped);
                        }
                        return ended(Why::FinalSyncFailed(format!(
                            "database {name}: FINAL SYNC FAILED: abandoned (shutdown_timeout passed); \
                             the newest transactions may be only in the local database and its WAL (the next start resumes from there)"
                        )));
                    }
                    Command::Run => {}
                },
            }
        }
    }

    /// A unit to take over after this database's unit panicked: it adopts whatever the record
    /// holds (the engine starting or running, or its final sync under way).
    pub fn revive(db: Database, shared: Arc<DbShared>) -> Box<dyn Unit> {
        Box::new(Self::new(db, shared))
    }
}

/// The value a watched outcome settles on; `None` when its thread died without one.
async fn outcome<T: Clone>(rx: &mut watch::Receiver<Option<T>>) -> Option<T> {
    // Closed without a value: the thread died (the value, if any, was seen by `wait_for`).
    let settled = rx.wait_for(Option::is_some).await.ok().map(|v| v.clone());
    settled.flatten()
}

/// [`outcome`] once there is something to watch; never resolves before that.
async fn outcome_of<T: Clone>(rx: &mut Option<watch::Receiver<Option<T>>>) -> Option<T> {
    match rx {
        Some(rx) => outcome(rx).await,
        None => std::future::pending().await,
    }
}

impl Unit for ReplicateUnit {
    fn run(self: Box<Self>, control: Control) -> UnitFuture {
        Box::pin(self.supervise(control))
    }
}

/// Node names that read well in logs and `litevisor status`: the file name, or the whole path when
/// two databases share a file name.
pub fn display_names(dbs: &[Database]) -> Vec<String> {
    let base = |p: &Path| {
        p.file_name().map_or_else(
            || p.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    };
    dbs.iter()
        .map(|db| {
            let name = base(&db.path);
            let clash = dbs.iter().filter(|other| base(&other.path) == name).count() > 1;
            if clash {
                db.path.display().to_string()
            } else {
                name
            }
        })
        .collect()
}

/// The longrun of a configured database: its replicator, or its follower for a read replica
/// (`follow = true`). Also what revives it after a panic.
pub fn replication_unit(db: &Database, shared: &Arc<DbShared>) -> Box<dyn Unit> {
    match db.follow {
        Some(interval) => Box::new(super::follow::FollowUnit::new(
            db.clone(),
            interval,
            Arc::clone(shared),
        )),
        None => ReplicateUnit::revive(db.clone(), Arc::clone(shared)),
    }
}
