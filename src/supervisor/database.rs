//! `[[databases]]` as nodes of the service graph: for each database a oneshot [`RestoreUnit`] (puts
//! the file in place before anything that uses it starts) and a longrun [`ReplicateUnit`] (the
//! replication engine; ready once replicating; its stop is the final sync). Also the mapping from the
//! configuration to the engine ([`engine_config`]) and what `litevisor status` shows per database
//! ([`DbShared`]).
//!
//! All SQLite and replica work runs on plain threads, never on the supervisor's runtime: the engine
//! blocks, and the S3 client runs its own runtime. Results come back over oneshot channels.
//!
//! Restore policy, decided before the services start:
//! - `if-missing` (default): restore when the database file does not exist and the replica has data;
//! - `always`: restore whenever the replica has data, replacing the local file only once the restored
//!   copy is complete (its `-wal`/`-shm` are removed then);
//! - `never`: the file is left as it is.
//!
//! A replica that cannot be listed, or a restore that fails, stops the start-up (exit 1) rather than
//! letting the application start on an empty database (Litestream #364). A stop order during a
//! restore abandons it: the restore writes a temporary file and renames it only when complete, so the
//! database is then still absent, never half-written.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::unit::{Command, Control, Ended, Unit, UnitFuture, Why};
use crate::config::{Database, Replica, RestorePolicy};
use crate::control::DatabaseRow;
use crate::replica::ReplicaClient;
use crate::replica::file::FileReplica;
use crate::replica::s3::{S3Options, S3Replica};
use crate::replication::engine::{DbConfig, FinalSync, Replicator, Status};
use crate::replication::restore::{self, RestoreOptions, Target};

/// The engine's settings for one configured database. One plain field-to-field mapping, so every
/// new `[[databases]]` knob gets exactly one line here.
pub fn engine_config(db: &Database) -> DbConfig {
    let mut cfg = DbConfig::new(&db.path, replica_client(&db.replica));
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

/// The replica client for a configured replica (no I/O happens here).
pub fn replica_client(replica: &Replica) -> Arc<dyn ReplicaClient> {
    match replica {
        Replica::File { path } => Arc::new(FileReplica::new(path)),
        Replica::S3 {
            bucket,
            path,
            endpoint,
            region,
            force_path_style,
            skip_verify,
            part_size,
            concurrency,
            storage_class,
            access_key_id,
            secret_access_key,
        } => Arc::new(S3Replica::new(S3Options {
            bucket: bucket.clone(),
            path: path.clone(),
            region: region.clone(),
            endpoint: endpoint.clone(),
            force_path_style: Some(*force_path_style),
            skip_verify: *skip_verify,
            access_key_id: access_key_id.as_ref().map(|k| k.expose().to_owned()),
            secret_access_key: secret_access_key.clone(),
            part_size: *part_size,
            concurrency: concurrency.map(|c| c.min(64) as usize),
            storage_class: storage_class.clone(),
            ..S3Options::default()
        })),
    }
}

/// One database's state as both of its units and the status server see it.
#[derive(Debug)]
pub struct DbShared {
    path: PathBuf,
    replica_url: String,
    inner: Mutex<DbInner>,
}

#[derive(Debug, Default)]
struct DbInner {
    state: &'static str,
    /// The running engine. Held here (not by the unit) so status requests can read it; taken out
    /// for the final sync.
    replicator: Option<Replicator>,
    /// The engine's status when it was last taken out (after the final sync, the final figures).
    last: Status,
    restore: Option<String>,
    error: Option<String>,
}

impl DbShared {
    pub fn new(db: &Database) -> Arc<DbShared> {
        Arc::new(DbShared {
            path: db.path.clone(),
            replica_url: db.replica.to_string(),
            inner: Mutex::new(DbInner {
                state: "pending",
                ..DbInner::default()
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DbInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_state(&self, state: &'static str) {
        self.lock().state = state;
    }

    /// Marks the database failed with `why` (shown by `litevisor status`); the unit's end.
    fn fail(&self, why: String) -> Ended {
        let mut inner = self.lock();
        inner.state = "failed";
        inner.error = Some(why.clone());
        ended(Why::Failed(why))
    }

    /// The status row: a short lock plus, while replicating, the engine's own short status lock.
    pub fn row(&self) -> DatabaseRow {
        let inner = self.lock();
        let status = inner
            .replicator
            .as_ref()
            .map_or_else(|| inner.last.clone(), Replicator::status);
        DatabaseRow {
            path: self.path.display().to_string(),
            replica: self.replica_url.clone(),
            state: inner.state.to_owned(),
            txid: status.txid,
            replica_txid: status.replica_txid,
            last_sync: status.last_sync,
            last_upload: status.last_upload,
            replica_errors: status.replica_errors,
            last_error: inner.error.clone().or(status.last_error),
            restore: inner.restore.clone(),
        }
    }
}

fn ended(why: Why) -> Ended {
    Ended { status: None, why }
}

/// The oneshot that puts the database file in place (see the module docs for the policy).
pub struct RestoreUnit {
    db: Database,
    shared: Arc<DbShared>,
}

/// What a restore did.
enum Restored {
    Kept(&'static str),
    Restored {
        txid: u64,
        bytes: u64,
        took: Duration,
    },
}

impl RestoreUnit {
    pub fn new(db: Database, shared: Arc<DbShared>) -> Self {
        Self { db, shared }
    }

    async fn supervise(self, mut ctl: Control) -> Ended {
        let name = self.db.path.display().to_string();
        // Decided before looking at the orders: when nothing is to be restored, the database is in
        // place already, and a stop that came first must still let its replicator do the final sync.
        if let Some(why) = self.nothing_to_restore() {
            tracing::info!("database {name}: not restored ({why})");
            self.shared.lock().restore = Some(format!("not restored ({why})"));
            ctl.ready();
            return ended(Why::Exited);
        }
        if ctl.command() != Command::Run {
            return ended(Why::Stopped);
        }
        self.shared.set_state("restoring");
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
                    tracing::info!("database {name}: not restored ({why})");
                    self.shared.lock().restore = Some(format!("not restored ({why})"));
                }
                Ok(Ok(Restored::Restored { txid, bytes, took })) => {
                    tracing::info!(
                        "database {name}: restored from {} to txid {txid:016x} ({bytes} bytes in {:.1}s)",
                        self.shared.replica_url,
                        took.as_secs_f64()
                    );
                    self.shared.lock().restore = Some(format!("restored txid {txid:016x}"));
                }
                Ok(Err(e)) => return self.shared.fail(format!("database {name}: {e}")),
                Err(_) => return self.shared.fail(format!("database {name}: the restore thread died")),
            },
            _ = ctl.next_order() => {
                tracing::info!("database {name}: restore abandoned (stopping)");
                self.shared.set_state("stopped");
                return ended(Why::Stopped);
            }
        }
        self.shared.set_state("restored");
        ctl.ready();
        ended(Why::Exited)
    }
}

impl RestoreUnit {
    /// Why no restore is needed, when that is clear without asking the replica: `restore =
    /// "never"`, or `if-missing` and the file exists (one stat; no SQLite, no network).
    fn nothing_to_restore(&self) -> Option<&'static str> {
        match self.db.restore {
            RestorePolicy::Never => Some("restore = \"never\""),
            RestorePolicy::IfMissing if std::fs::symlink_metadata(&self.db.path).is_ok() => {
                Some("the file exists")
            }
            _ => None,
        }
    }
}

impl Unit for RestoreUnit {
    fn run(self: Box<Self>, control: Control) -> UnitFuture {
        Box::pin(self.supervise(control))
    }
}

/// Runs on a plain thread: decides and, if needed, restores. Errors are the message to show.
fn restore_if_needed(db: &Database) -> Result<Restored, String> {
    let exists = match std::fs::symlink_metadata(&db.path) {
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(format!("cannot check the database file: {e}")),
    };
    if exists && db.restore == RestorePolicy::IfMissing {
        return Ok(Restored::Kept("the file exists"));
    }
    let replica = replica_client(&db.replica);
    if !restore::has_data(&*replica).map_err(|e| {
        format!(
            "cannot list the replica {} to decide whether to restore: {e}",
            db.replica
        )
    })? {
        return Ok(Restored::Kept(if exists {
            "the replica is empty; keeping the existing file"
        } else {
            "the replica is empty: the database starts empty"
        }));
    }
    tracing::info!(
        "database {}: restoring from {}",
        db.path.display(),
        db.replica
    );
    let started = Instant::now();
    let report = restore::restore(
        &*replica,
        Target::Latest,
        &db.path,
        &RestoreOptions::default(),
    )
    .map_err(|e| format!("restore from {} failed: {e}", db.replica))?;
    Ok(Restored::Restored {
        txid: report.txid,
        bytes: u64::from(report.pages) * u64::from(report.page_size),
        took: started.elapsed(),
    })
}

/// The longrun that replicates one database; its stop is the final sync.
pub struct ReplicateUnit {
    db: Database,
    shared: Arc<DbShared>,
}

impl ReplicateUnit {
    pub fn new(db: Database, shared: Arc<DbShared>) -> Self {
        Self { db, shared }
    }

    async fn supervise(self, mut ctl: Control) -> Ended {
        // Started with its stop order already given (the shutdown began before it could start):
        // it still starts, and the stop order below turns that into the final sync at once.
        if ctl.command() == Command::Kill {
            return ended(Why::Stopped);
        }
        let name = self.db.path.display().to_string();
        let replica_url = self.shared.replica_url.clone();
        self.shared.set_state("starting");
        // One short-lived thread starts the engine (it blocks on SQLite and the replica), another
        // runs the final sync: no thread of ours idles beside the engine's own while it replicates.
        let (started_tx, mut started_rx) = oneshot::channel::<Result<(), String>>();
        let db = self.db.clone();
        let shared = Arc::clone(&self.shared);
        let spawned = std::thread::Builder::new()
            .name("lv-db-start".into())
            .spawn(move || {
                let result = Replicator::start(engine_config(&db)).map(|replicator| {
                    shared.lock().replicator = Some(replicator);
                });
                let _ = started_tx.send(result.map_err(|e| e.to_string()));
            });
        if let Err(e) = spawned {
            return self.shared.fail(format!(
                "database {name}: cannot start the replication thread: {e}"
            ));
        }

        let mut started = false;
        // Set by a stop order; the final sync starts as soon as the engine runs.
        let mut stop_deadline: Option<Instant> = None;
        let mut done_rx: Option<oneshot::Receiver<FinalSync>> = None;
        loop {
            if started
                && done_rx.is_none()
                && let Some(deadline) = stop_deadline
            {
                match self.final_sync(deadline) {
                    Ok(rx) => done_rx = Some(rx),
                    Err(e) => {
                        return ended(Why::FinalSyncFailed(format!(
                            "database {name}: FINAL SYNC FAILED: cannot start its thread: {e}"
                        )));
                    }
                }
            }
            tokio::select! {
                result = &mut started_rx, if !started => {
                    started = true;
                    match result {
                        Ok(Ok(())) => {
                            tracing::info!("database {name}: replicating to {replica_url}");
                            if stop_deadline.is_none() {
                                self.shared.set_state("replicating");
                                ctl.ready();
                            }
                        }
                        Ok(Err(e)) => {
                            return self.shared.fail(format!("database {name}: cannot replicate: {e}"));
                        }
                        Err(_) => {
                            return self.shared.fail(format!("database {name}: the replication thread died"));
                        }
                    }
                }
                result = finished(&mut done_rx) => {
                    return match result {
                        Ok(done) if done.ok() => {
                            tracing::info!(
                                "database {name}: final sync done (txid {:016x} on the replica)",
                                done.replica_txid
                            );
                            ended(Why::Stopped)
                        }
                        Ok(done) => {
                            let why = done
                                .error
                                .unwrap_or_else(|| "the replica is behind".to_owned());
                            ended(Why::FinalSyncFailed(format!(
                                "database {name}: FINAL SYNC FAILED: local txid {:016x}, replica txid {:016x}: {why}; \
                                 the newest transactions are only in the local database and its WAL (the next start resumes from there)",
                                done.txid, done.replica_txid
                            )))
                        }
                        Err(_) => ended(Why::FinalSyncFailed(format!(
                            "database {name}: FINAL SYNC FAILED: the final sync thread died"
                        ))),
                    };
                }
                order = ctl.next_order() => match order {
                    Command::Stop { deadline } => {
                        if stop_deadline.is_none() {
                            let left = deadline.saturating_duration_since(Instant::now());
                            tracing::info!(
                                "database {name}: final sync (up to {:.1}s)",
                                left.as_secs_f64()
                            );
                            stop_deadline = Some(deadline);
                        }
                    }
                    Command::Kill => {
                        if !started {
                            // The engine never ran: nothing was replicated, nothing is lost here.
                            return ended(Why::Stopped);
                        }
                        return ended(Why::FinalSyncFailed(format!(
                            "database {name}: FINAL SYNC FAILED: abandoned (second stop signal or shutdown_timeout passed); \
                             the newest transactions may be only in the local database and its WAL (the next start resumes from there)"
                        )));
                    }
                    Command::Run => {}
                },
            }
        }
    }

    /// Takes the running engine out of the shared record and runs its final sync on a thread of its
    /// own, bounded by `deadline`; the result arrives on the returned channel.
    fn final_sync(&self, deadline: Instant) -> std::io::Result<oneshot::Receiver<FinalSync>> {
        let (done_tx, done_rx) = oneshot::channel();
        let shared = Arc::clone(&self.shared);
        std::thread::Builder::new()
            .name("lv-db-final".into())
            .spawn(move || {
                let taken = {
                    let mut inner = shared.lock();
                    inner.state = "final sync";
                    let replicator = inner.replicator.take();
                    if let Some(r) = &replicator {
                        // What the status shows while the engine is out of the record.
                        inner.last = r.status();
                    }
                    replicator
                };
                // Without an engine there is nothing to send: the dropped sender says so.
                let Some(replicator) = taken else {
                    return;
                };
                let result =
                    replicator.shutdown(deadline.saturating_duration_since(Instant::now()));
                {
                    let mut inner = shared.lock();
                    inner.last.txid = result.txid;
                    inner.last.replica_txid = result.replica_txid;
                    inner.state = if result.ok() { "stopped" } else { "failed" };
                    if let Some(e) = &result.error {
                        inner.error = Some(format!("final sync: {e}"));
                    }
                }
                let _ = done_tx.send(result);
            })?;
        Ok(done_rx)
    }
}

/// The final sync's result once one runs; never resolves before that.
async fn finished(
    rx: &mut Option<oneshot::Receiver<FinalSync>>,
) -> Result<FinalSync, oneshot::error::RecvError> {
    match rx {
        Some(rx) => rx.await,
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
