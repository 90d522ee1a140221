//! The contract between the orchestrator and one node of the service graph: a [`Unit`] runs until it
//! ends for good, says when it is ready, and obeys stop orders. A process service is one kind of unit
//! ([`super::service::ProcessService`]); the database restore and replicator are in-process ones
//! ([`super::database`]). The [`Board`] is what every node publishes about itself (process group,
//! state, restarts): signal forwarding and `litevisor status` read it.

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
    /// Kill at once (the global deadline passed; a service: a second Ctrl-C on the terminal).
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
    /// A database's final sync at stop did not get everything committed to the replica. The text
    /// says which database and why; the exit code becomes non-zero (74 instead of 0).
    FinalSyncFailed(String),
    /// Its task panicked (a litevisor bug); the text is the panic's message.
    Panicked(String),
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

/// Where a node is in its life, as `litevisor status` shows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NodeState {
    /// Waiting for its dependencies.
    #[default]
    Pending,
    /// Started, not ready yet.
    Starting,
    /// Ready (a oneshot: done); a restarted longrun is back here once its new process runs.
    Running,
    /// Waiting out its restart delay.
    Restarting,
    /// Told to stop (a database: its final sync runs).
    Stopping,
    /// Will not run again (or never ran, because of a shutdown).
    Ended,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Pending => "pending",
            NodeState::Starting => "starting",
            NodeState::Running => "running",
            NodeState::Restarting => "restarting",
            NodeState::Stopping => "stopping",
            NodeState::Ended => "ended",
        }
    }
}

/// What one node publishes about itself.
#[derive(Clone, Debug, Default)]
pub struct NodeInfo {
    /// The process group it currently runs (`None` when nothing runs): signals go there.
    pub group: Option<Pid>,
    pub state: NodeState,
    pub restarts: u32,
    /// How its last process ended, if one did.
    pub last_exit: Option<ExitStatus>,
    /// When the process running now started (`None` while none runs).
    pub since: Option<std::time::SystemTime>,
    /// Brought down by `litevisor svc down` (its own or a dependency's): kept down until `up`.
    pub down: bool,
    /// Started by `litevisor svc once`: not restarted when it ends.
    pub once: bool,
    /// A process is being spawned: it may already run (and be waiting for a signal) before the
    /// spawning thread records its group.
    spawning: bool,
    /// Signals that arrived while `spawning`: sent the moment the group is recorded.
    held: Vec<i32>,
}

/// Every node's [`NodeInfo`], indexed like the nodes. Shared by the orchestrator, the units and the
/// status server; each access is one short lock.
#[derive(Debug, Default)]
pub struct Board(Mutex<Vec<NodeInfo>>);

impl Board {
    pub fn new(n: usize) -> Arc<Self> {
        Arc::new(Self(Mutex::new(vec![NodeInfo::default(); n])))
    }

    fn update(&self, index: usize, f: impl FnOnce(&mut NodeInfo)) {
        let mut nodes = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = nodes.get_mut(index) {
            f(slot);
        }
    }

    /// Adds a node (a service added by a reload); returns its index.
    pub fn push(&self) -> usize {
        let mut nodes = self.0.lock().unwrap_or_else(|p| p.into_inner());
        nodes.push(NodeInfo::default());
        nodes.len() - 1
    }

    pub fn set_state(&self, index: usize, state: NodeState) {
        self.update(index, |n| n.state = state);
    }

    /// Records whether the node is down by request (`litevisor svc down`).
    pub fn set_down(&self, index: usize, down: bool) {
        self.update(index, |n| n.down = down);
    }

    /// Records whether the node's process is restarted when it ends (`litevisor svc once`).
    pub fn set_once(&self, index: usize, once: bool) {
        self.update(index, |n| n.once = once);
    }

    /// Records how the node ended.
    pub fn set_ended(&self, index: usize, status: Option<ExitStatus>) {
        self.update(index, |n| {
            n.state = NodeState::Ended;
            n.group = None;
            n.since = None;
            if status.is_some() {
                n.last_exit = status;
            }
        });
    }

    pub fn get(&self, index: usize) -> Option<Pid> {
        self.snapshot().get(index).and_then(|n| n.group)
    }

    /// Sends `signal` to node `index`'s process group; a process still being spawned gets it the
    /// moment its group is recorded. False when the node runs no process at all.
    pub fn deliver(&self, index: usize, signal: i32) -> bool {
        let mut nodes = self.0.lock().unwrap_or_else(|p| p.into_inner());
        nodes
            .get_mut(index)
            .is_some_and(|node| Self::deliver_to(node, signal))
    }

    /// [`Board::deliver`] to every node for which `which(index)` holds; returns how many got it.
    pub fn deliver_all(&self, signal: i32, which: impl Fn(usize) -> bool) -> usize {
        let mut nodes = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut delivered = 0;
        for (_, node) in nodes.iter_mut().enumerate().filter(|(i, _)| which(*i)) {
            delivered += usize::from(Self::deliver_to(node, signal));
        }
        delivered
    }

    // Under the board's lock, so a signal cannot slip between a spawn's recording and its delivery.
    fn deliver_to(node: &mut NodeInfo, signal: i32) -> bool {
        match node.group {
            Some(group) => {
                super::child::signal_group(group, signal);
                true
            }
            None if node.spawning => {
                node.held.push(signal);
                true
            }
            None => false,
        }
    }

    pub fn snapshot(&self) -> Vec<NodeInfo> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A unit's handle on the orchestrator.
pub struct Control {
    index: usize,
    reports: mpsc::UnboundedSender<Report>,
    command: watch::Receiver<Command>,
    /// The last order returned by `next_order`.
    seen: Command,
    board: Arc<Board>,
}

impl Control {
    pub fn new(
        index: usize,
        reports: mpsc::UnboundedSender<Report>,
        command: watch::Receiver<Command>,
        board: Arc<Board>,
    ) -> Self {
        Self {
            index,
            reports,
            command,
            seen: Command::Run,
            board,
        }
    }

    /// Tells the orchestrator the unit is ready (repeated calls are harmless).
    pub fn ready(&self) {
        let _ = self.reports.send(Report::Ready(self.index));
    }

    /// Records the process group now running for this unit (`None` when nothing runs). A process
    /// started again after a restart delay counts as running (restarts are not re-gated).
    pub fn set_group(&self, pid: Option<Pid>) {
        self.board.update(self.index, |n| {
            n.group = pid;
            n.since = pid.map(|_| std::time::SystemTime::now());
            n.spawning = false;
            n.held.clear();
            if pid.is_some() && n.state == NodeState::Restarting {
                n.state = NodeState::Running;
            }
        });
    }

    /// A `set_group` that can travel to the thread that spawns the process, so the group is recorded
    /// the moment the spawn returns, before the async side even resumes; signals forwarded while the
    /// spawn runs are held and sent then (the process may already be running and waiting for one).
    /// Dropped without being called (the spawn failed), it forgets the held signals.
    pub fn group_recorder(&self) -> impl FnOnce(Pid) + Send + 'static {
        self.board.update(self.index, |n| n.spawning = true);
        let recorder = Recorder {
            board: Arc::clone(&self.board),
            index: self.index,
            recorded: false,
        };
        move |pid| recorder.record(pid)
    }

    /// Records an exit that is followed by a restart (after the back-off delay).
    pub fn restarting(&self, status: ExitStatus) {
        self.board.update(self.index, |n| {
            n.state = NodeState::Restarting;
            n.since = None;
            n.restarts += 1;
            n.last_exit = Some(status);
        });
    }

    pub fn command(&self) -> Command {
        *self.command.borrow()
    }

    /// Whether the unit was started by `litevisor svc once`: its process is not restarted.
    pub fn once(&self) -> bool {
        self.board
            .snapshot()
            .get(self.index)
            .is_some_and(|n| n.once)
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

/// See [`Control::group_recorder`].
struct Recorder {
    board: Arc<Board>,
    index: usize,
    recorded: bool,
}

impl Recorder {
    fn record(mut self, pid: Pid) {
        self.recorded = true;
        self.board.update(self.index, |n| {
            n.group = Some(pid);
            n.since = Some(std::time::SystemTime::now());
            n.spawning = false;
            for signal in std::mem::take(&mut n.held) {
                super::child::signal_group(pid, signal);
            }
            if n.state == NodeState::Restarting {
                n.state = NodeState::Running;
            }
        });
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if !self.recorded {
            self.board.update(self.index, |n| {
                n.spawning = false;
                n.held.clear();
            });
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
