//! The contract between the orchestrator and one node of the service graph: a [`Unit`] runs until it
//! ends for good, says when it is ready, and obeys stop orders. A process service is one kind of unit
//! ([`super::service::ProcessService`]); an in-process unit (a database restore or replicator) is the
//! next one, and needs nothing else from the orchestrator.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use nix::unistd::Pid;
use tokio::sync::{mpsc, watch};

use crate::init::ExitStatus;

/// What the orchestrator wants from a unit right now. It only ever moves forward:
/// `Run` -> `Stop` -> `Kill`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Run,
    /// Stop gracefully; everything must be gone by `deadline` (the global shutdown deadline).
    Stop {
        deadline: Instant,
    },
    /// Kill at once (second stop signal, or the global deadline passed).
    Kill,
}

/// Why a unit ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Why {
    /// It was told to stop.
    Stopped,
    /// It ended and its restart policy does not bring it back (a oneshot that succeeded, a longrun
    /// with `restart = "never"`, the main service).
    Exited,
    /// It used up `max_restarts`; `shutdown` when its `give_up` says to stop the container.
    GaveUp { shutdown: bool },
    /// It could not start: readiness timeout, failed oneshot. The text says why.
    Failed(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ended {
    /// The last exit status, if a process ever ran (an in-process unit reports its own outcome).
    pub status: Option<ExitStatus>,
    pub why: Why,
}

/// Messages from units to the orchestrator.
#[derive(Debug)]
pub enum Report {
    /// The unit is ready: its dependents may start (a oneshot: it exited 0).
    Ready(usize),
    Ended(usize, Ended),
}

/// The process group each unit currently runs (for forwarding signals), indexed like the nodes.
#[derive(Debug, Default)]
pub struct Groups(Mutex<Vec<Option<Pid>>>);

impl Groups {
    pub fn new(n: usize) -> Arc<Self> {
        Arc::new(Self(Mutex::new(vec![None; n])))
    }

    fn set(&self, index: usize, pid: Option<Pid>) {
        let mut groups = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = groups.get_mut(index) {
            *slot = pid;
        }
    }

    pub fn get(&self, index: usize) -> Option<Pid> {
        let groups = self.0.lock().unwrap_or_else(|p| p.into_inner());
        groups.get(index).copied().flatten()
    }

    pub fn all(&self) -> Vec<Pid> {
        let groups = self.0.lock().unwrap_or_else(|p| p.into_inner());
        groups.iter().flatten().copied().collect()
    }
}

/// A unit's handle on the orchestrator.
pub struct Control {
    index: usize,
    reports: mpsc::UnboundedSender<Report>,
    command: watch::Receiver<Command>,
    /// The last order returned by `next_order`.
    seen: Command,
    groups: Arc<Groups>,
}

impl Control {
    pub fn new(
        index: usize,
        reports: mpsc::UnboundedSender<Report>,
        command: watch::Receiver<Command>,
        groups: Arc<Groups>,
    ) -> Self {
        Self {
            index,
            reports,
            command,
            seen: Command::Run,
            groups,
        }
    }

    /// Tells the orchestrator the unit is ready (repeated calls are harmless).
    pub fn ready(&self) {
        let _ = self.reports.send(Report::Ready(self.index));
    }

    /// Records the process group now running for this unit (`None` when nothing runs).
    pub fn set_group(&self, pid: Option<Pid>) {
        self.groups.set(self.index, pid);
    }

    pub fn command(&self) -> Command {
        *self.command.borrow()
    }

    /// Returns the next order not returned yet (each of `Stop`, `Kill` once), waiting for it.
    pub async fn next_order(&mut self) -> Command {
        loop {
            if self.seen == Command::Kill {
                // Nothing comes after a kill.
                std::future::pending::<()>().await;
            }
            let now = self.command();
            if now != self.seen {
                self.seen = now;
                return now;
            }
            if self.command.changed().await.is_err() {
                // The orchestrator is gone: nothing will ever be asked again; behave as killed.
                self.seen = Command::Kill;
                return Command::Kill;
            }
        }
    }
}

pub type UnitFuture = Pin<Box<dyn Future<Output = Ended> + Send>>;

/// One node of the graph. `run` starts the unit, calls [`Control::ready`] when dependents may start,
/// keeps it going (restarts are the unit's business), and returns once it has ended for good or has
/// been stopped by [`Control::next_order`]. It must not return while anything it started still runs.
pub trait Unit: Send {
    fn run(self: Box<Self>, control: Control) -> UnitFuture;
}
