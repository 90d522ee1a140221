//! What the supervisor answers on its control socket: the services from the [`Board`], the
//! databases from the [`DbSet`] (every member, those found in directories included). Every read is a short lock on in-memory state.

use std::sync::Arc;

use super::dbset::DbSet;
use super::unit::{Board, NodeState};
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
