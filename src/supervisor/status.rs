//! What the supervisor answers on its control socket: the services from the [`Board`], the
//! databases from the [`DbSet`] (every member, those found in directories included). Every read is a
//! short lock on in-memory state. Also Litestream's database commands (`sync`, `stop`, `start`),
//! whose blocking work runs off the runtime.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::database::DbShared;
use super::dbset::DbSet;
use super::unit::{Board, NodeState};
use crate::control::commands::{Answer, Changed, Commands, Synced};
use crate::control::{ServiceRow, Snapshot, StatusSource};

/// One service node of the graph, as the status shows it.
#[derive(Clone, Debug)]
pub struct ServiceEntry {
    /// Index of the node on the board.
    pub index: usize,
    pub name: String,
    pub kind: &'static str,
    pub main: bool,
}

pub struct Overview {
    pub board: Arc<Board>,
    /// The services shown, in order; a reload adds and removes entries.
    pub services: Arc<std::sync::Mutex<Vec<ServiceEntry>>>,
    pub databases: Arc<DbSet>,
    pub health_upload_lag: std::time::Duration,
    pub started_at: SystemTime,
    /// Where `litevisor svc ...` requests go: the orchestrator.
    pub services_handle: crate::control::svc::Handle,
}

impl StatusSource for Overview {
    fn health_upload_lag(&self) -> std::time::Duration {
        self.health_upload_lag
    }

    fn services(&self) -> Option<crate::control::svc::Handle> {
        Some(self.services_handle.clone())
    }

    fn snapshot(&self) -> Snapshot {
        let nodes = self.board.snapshot();
        let entries = self.services.lock().unwrap_or_else(|p| p.into_inner());
        let services = entries
            .iter()
            .map(|s| {
                let info = nodes.get(s.index).cloned().unwrap_or_default();
                ServiceRow {
                    name: s.name.clone(),
                    kind: s.kind,
                    main: s.main,
                    state: match info.state {
                        NodeState::Ended if info.down => "down",
                        state => state.as_str(),
                    },
                    pid: info.group.map(|p| p.as_raw()),
                    restarts: info.restarts,
                    last_exit: info.last_exit.map(|e| e.to_string()),
                    last_exit_code: info.last_exit.map(|e| e.code()),
                    since: info.since,
                    ready: info.state == NodeState::Running,
                }
            })
            .collect();
        Snapshot {
            services,
            databases: self.databases.rows(),
        }
    }
}

impl Overview {
    fn find(&self, db: &Path) -> Result<Arc<DbShared>, String> {
        self.databases
            .find(db)
            .ok_or_else(|| format!("database not found: {}", db.display()))
    }
}

impl Commands for Overview {
    fn started_at(&self) -> SystemTime {
        self.started_at
    }

    fn sync(&self, db: &Path, wait: bool, timeout: Duration) -> Answer<Synced> {
        let found = self.find(db).and_then(|shared| shared.syncer());
        let db = db.to_path_buf();
        Box::pin(async move {
            let syncer = found?;
            let began = Instant::now();
            // The sync blocks on the engine's lanes: off the runtime.
            let status = tokio::task::spawn_blocking(move || syncer.sync(wait, timeout))
                .await
                .map_err(|e| format!("the sync thread died: {e}"))?
                .map_err(|e| e.to_string())?;
            Ok(Synced {
                db,
                txid: status.txid,
                replica_txid: wait.then_some(status.replica_txid),
                took: began.elapsed(),
            })
        })
    }

    fn stop_db(&self, db: &Path, timeout: Duration) -> Answer<Changed> {
        let found = self.find(db);
        let db = db.to_path_buf();
        Box::pin(async move {
            let shared = found?;
            if shared.is_paused() {
                return Ok(Changed {
                    status: "already_stopped",
                    db,
                    state: "stopped",
                    txid: shared.row().engine.txid,
                });
            }
            let mut done = shared.pause(Instant::now() + timeout)?;
            let result = done
                .wait_for(Option::is_some)
                .await
                .map_err(|_| "the final sync ended without an outcome".to_string())?
                .clone()
                .ok_or("the final sync ended without an outcome")?;
            if !result.ok() {
                return Err(format!(
                    "final sync: local txid {}, replica txid {}: {}",
                    result.txid,
                    result.replica_txid,
                    result.error.as_deref().unwrap_or("the replica is behind")
                ));
            }
            tracing::info!(db = %db.display(), "database {}: replication stopped by `litevisor stop` (final sync done)", db.display());
            Ok(Changed {
                status: "stopped",
                db,
                state: "stopped",
                txid: result.txid,
            })
        })
    }

    fn start_db(&self, db: &Path, timeout: Duration) -> Answer<Changed> {
        let found = self
            .find(db)
            .and_then(|shared| Ok((shared.resume()?, shared)));
        let db = db.to_path_buf();
        Box::pin(async move {
            let (started, shared) = found?;
            let status = match started {
                None => "already_running",
                Some(mut rx) => {
                    let outcome = tokio::time::timeout(timeout, rx.wait_for(Option::is_some))
                        .await
                        .map_err(|_| format!("not started after {:.1}s", timeout.as_secs_f64()))?
                        .map_err(|_| "the start thread died".to_string())?
                        .clone();
                    if let Some(Err(e)) = outcome {
                        return Err(e);
                    }
                    tracing::info!(db = %db.display(), "database {}: replication started again by `litevisor start`", db.display());
                    "started"
                }
            };
            Ok(Changed {
                status,
                db,
                state: "running",
                txid: shared.row().engine.txid,
            })
        })
    }
}
