//! The graph's life cycle: starts nodes as their dependencies become ready, routes signals, decides
//! when and why the container stops, stops nodes in reverse dependency order under one deadline,
//! sweeps up leftover processes, and computes litevisor's exit code.
//!
//! Exit code (see also the module docs of [`super`]):
//! - the main service ended (on its own, or during any shutdown): its status, `128 + N` for signal
//!   N, remapped by `--remap-exit`;
//! - a stop signal, no main service (or it never ran): 0;
//! - start-up failed (readiness timeout, failed oneshot, exit before readiness with dependents
//!   waiting): 1;
//! - a service gave up with `give_up = "shutdown"`: its last exit code, or 1 if that was 0;
//! - every service ended on its own (no main): the first non-zero exit code among them, else 0;
//! - then, if a database's final sync failed: a code that would be 0 becomes 74 (EX_IOERR); a
//!   non-zero code is kept (the failure is logged either way).
//!
//! Databases: their nodes stop last (every service depends on its databases' replicators), and
//! services get a stop deadline that leaves the final syncs a share of `shutdown_timeout`
//! ([`final_sync_reserve`]). A process service ending on its own keeps the container up while
//! others run; database nodes never count as "still running" for that rule.

mod apply;
mod life;
mod requests;

use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use self::life::{Life, Step, Want};
use super::reload::Op;
use super::status::ServiceEntry;
use super::unit::{Board, Command, Control, Ended, Report, Unit, Why};
use crate::control::svc;
use crate::init::{Event, ExitCodeMap, ExitStatus, procs, signal_name};

/// One node of the graph, ready to run.
pub struct Node {
    pub name: String,
    /// Indices of the nodes this one depends on.
    pub deps: Vec<usize>,
    pub main: bool,
    /// A database node (restore or replicator) rather than a service.
    pub database: bool,
    /// Runs even when the shutdown begins before it started (a replicator: committed transactions
    /// already in the database must still reach the replica), once its dependencies are satisfied;
    /// it then starts with its stop order already given.
    pub final_sync: bool,
    pub unit: Box<dyn Unit>,
    /// A oneshot with a `down` command: once done, its unit stays until the stop (to run `down`),
    /// which does not count as running when deciding whether every service has ended.
    pub lingers: bool,
    /// Builds the unit that takes over should this one panic (a replicator: its engine lives on
    /// and its final sync must still run). Without it a panic is a failure of the node.
    pub revive: Option<Box<dyn Fn() -> Box<dyn Unit> + Send>>,
    /// Builds a new unit for the node when `litevisor svc` starts it again (a service). Without it
    /// the node cannot be controlled.
    pub fresh: Option<Fresh>,
}

/// The orchestrator's ties to the rest of the supervisor.
pub struct Links {
    /// One entry per node.
    pub board: std::sync::Arc<Board>,
    /// The services `litevisor status` shows (a reload adds and removes some).
    pub entries: std::sync::Arc<std::sync::Mutex<Vec<ServiceEntry>>>,
    /// Service requests and reloaded configurations.
    pub ops: mpsc::UnboundedReceiver<Op>,
    /// Where SIGHUP asks for a reload; `None`: SIGHUP is forwarded.
    pub reload_trigger: Option<svc::Handle>,
    /// Each database and its replicate node (a reload adds and removes some).
    pub database_nodes: Vec<(std::path::PathBuf, usize)>,
    pub databases: std::sync::Arc<super::dbset::DbSet>,
}

/// How to start a service node again ([`Node::fresh`]).
pub struct Fresh {
    pub oneshot: bool,
    /// What a reload compares to tell a changed service from an unchanged one.
    pub key: String,
    pub make: Box<dyn Fn() -> Box<dyn Unit> + Send>,
}

/// Exit code when everything else says 0 but a database's final sync failed (sysexits' EX_IOERR).
pub const FINAL_SYNC_FAILED: i32 = 74;

/// The part of `shutdown_timeout` kept for the databases' final syncs when databases are configured:
/// services must be down that much earlier (their `stop_grace` is cut to fit), so a service that
/// ignores its stop signal cannot eat the time the last transactions need to reach the replica.
pub fn final_sync_reserve(shutdown_timeout: Duration) -> Duration {
    (shutdown_timeout / 3).min(Duration::from_secs(5))
}

pub struct Settings {
    pub shutdown_timeout: Duration,
    /// Time leftover processes get between SIGTERM and SIGKILL (within the deadline).
    pub grace: Duration,
    pub exit_map: ExitCodeMap,
    /// Log a warning for every orphan reaped (tini's `-w`).
    pub warn_on_reap: bool,
    /// See [`super::Options::idle_when_empty`].
    pub idle_when_empty: bool,
}

#[derive(Clone, Copy, Debug)]
enum Reason {
    /// A stop signal (or the event loop's failure).
    Signal,
    Main(ExitStatus),
    StartupFailed,
    GaveUp(ExitStatus),
    AllEnded,
    /// A unit panicked (a litevisor bug) and could not be revived.
    Panicked,
}

struct Slot {
    name: String,
    deps: Vec<usize>,
    dependents: Vec<usize>,
    main: bool,
    database: bool,
    final_sync: bool,
    lingers: bool,
    unit: Option<Box<dyn Unit>>,
    revive: Option<Box<dyn Fn() -> Box<dyn Unit> + Send>>,
    fresh: Option<Fresh>,
    life: Life,
    want: Want,
    /// Orders to its running unit.
    command: Option<watch::Sender<Command>>,
}

impl Slot {
    fn new(node: Node) -> Self {
        Slot {
            name: node.name,
            deps: node.deps,
            dependents: Vec::new(),
            main: node.main,
            database: node.database,
            final_sync: node.final_sync,
            lingers: node.lingers,
            unit: Some(node.unit),
            revive: node.revive,
            fresh: node.fresh,
            life: Life::Pending,
            want: Want::Up,
            command: None,
        }
    }
}

struct Orchestrator {
    slots: Vec<Slot>,
    settings: Settings,
    reports: mpsc::UnboundedSender<Report>,
    board: std::sync::Arc<Board>,
    self_pid: i32,
    reason: Option<Reason>,
    /// Set when the shutdown starts: everything must be gone by then.
    deadline: Option<Instant>,
    killed: bool,
    /// Services get SIGKILL instead of their grace (an interactive second Ctrl-C); databases still
    /// run their final sync.
    services_killed: bool,
    /// Set once every node ended: when leftovers get SIGKILL.
    sweep_kill_at: Option<Instant>,
    done: bool,
    main_status: Option<ExitStatus>,
    first_failure: Option<i32>,
    final_sync_failed: bool,
    /// A unit panicked and could not be revived: litevisor does not exit 0.
    panicked: bool,
    /// Start-up is over (every node satisfied or ended) and its memory was given back.
    settled: bool,
    entries: std::sync::Arc<std::sync::Mutex<Vec<ServiceEntry>>>,
    reload_trigger: Option<svc::Handle>,
    database_nodes: Vec<(std::path::PathBuf, usize)>,
    databases: std::sync::Arc<super::dbset::DbSet>,
    /// Replicate nodes of databases a reload removed: they leave the set once their final sync ran.
    leaving: Vec<(usize, std::path::PathBuf)>,
    /// `unregister` answers waiting for a replicate node's final sync.
    waiting: Vec<(usize, tokio::sync::oneshot::Sender<Result<String, String>>)>,
}

/// Runs the graph to the end; returns litevisor's exit code. `board` has one entry per node.
pub async fn run(
    nodes: Vec<Node>,
    settings: Settings,
    mut events: mpsc::UnboundedReceiver<Event>,
    links: Links,
) -> i32 {
    let Links {
        board,
        entries,
        ops: mut requests,
        reload_trigger,
        database_nodes,
        databases,
    } = links;
    let (reports, mut report_rx) = mpsc::unbounded_channel();
    let mut slots: Vec<Slot> = nodes.into_iter().map(Slot::new).collect();
    for i in 0..slots.len() {
        for d in slots[i].deps.clone() {
            slots[d].dependents.push(i);
        }
    }
    let mut o = Orchestrator {
        board,
        slots,
        settings,
        reports,
        self_pid: std::process::id() as i32,
        reason: None,
        deadline: None,
        killed: false,
        services_killed: false,
        sweep_kill_at: None,
        done: false,
        main_status: None,
        first_failure: None,
        final_sync_failed: false,
        panicked: false,
        settled: false,
        entries,
        reload_trigger,
        database_nodes,
        databases,
        leaving: Vec::new(),
        waiting: Vec::new(),
    };
    o.start_what_can_start();
    o.check_all_ended();
    while !o.done {
        let timer = o.next_timer();
        tokio::select! {
            event = events.recv() => match event {
                Some(event) => o.on_event(event),
                None => {
                    // The reactor thread died: nobody reaps any more. Take everything down now.
                    tracing::error!("the init event loop stopped: killing every process");
                    o.kill_everything();
                    o.reason.get_or_insert(Reason::StartupFailed);
                    break;
                }
            },
            Some(report) = report_rx.recv() => o.on_report(report),
            Some(op) = requests.recv() => match op {
                Op::Svc(request) => {
                    let answer = o.on_request(request.verb, &request.name);
                    let _ = request.reply.send(answer);
                }
                Op::Apply(plan, reply) => o.apply(plan, reply),
            },
            _ = tokio::time::sleep_until(timer.unwrap_or_else(Instant::now)), if timer.is_some() => o.on_timer(),
        }
    }
    o.exit_code()
}

impl Orchestrator {
    fn next_timer(&self) -> Option<Instant> {
        if self.killed {
            return None;
        }
        match (self.deadline, self.sweep_kill_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn on_timer(&mut self) {
        let now = Instant::now();
        let due = self.deadline.is_some_and(|d| now >= d);
        if due {
            tracing::warn!(
                "shutdown_timeout ({}s) passed: killing every remaining process",
                self.settings.shutdown_timeout.as_secs_f64()
            );
        }
        if due || self.sweep_kill_at.is_some_and(|d| now >= d) {
            self.kill_everything();
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Signal(info) => {
                let signal = info.signal;
                if signal == libc::SIGPIPE && info.sender == self.self_pid {
                    return; // raised by one of our own writes
                }
                match signal {
                    libc::SIGTERM | libc::SIGINT | libc::SIGQUIT if self.deadline.is_none() => {
                        tracing::info!("{} received: shutting down", signal_name(signal));
                        self.begin_shutdown(Reason::Signal);
                    }
                    // A repeated stop signal is routine (GNU `timeout`, a signal sent to a group
                    // and to its leader, an impatient orchestrator): it never costs the final
                    // sync. Only the deadline, or a SIGKILL of litevisor, cuts the stop short.
                    libc::SIGINT if info.is_terminal_interrupt() => {
                        tracing::warn!(
                            "Ctrl-C again: killing the services now; the databases' final sync still runs"
                        );
                        self.kill_services();
                    }
                    libc::SIGTERM | libc::SIGINT | libc::SIGQUIT => {
                        tracing::info!(
                            "{} again: forwarded to the services still stopping; the stop stays bounded by \
                             their stop_grace and shutdown_timeout",
                            signal_name(signal)
                        );
                        self.forward_to_services(signal);
                    }
                    libc::SIGHUP if self.reload_trigger.is_some() => self.reload_on_sighup(),
                    _ => self.forward(signal),
                }
            }
            Event::OrphanExited { pid, status } => {
                if self.settings.warn_on_reap {
                    tracing::warn!("Reaped zombie process with pid={pid} ({status})");
                } else {
                    tracing::debug!(%pid, %status, "reaped an orphan");
                }
                self.check_sweep();
            }
            Event::NoChildren => self.check_sweep(),
            Event::Stopped { pid, signal } => {
                tracing::debug!(%pid, signal = %signal_name(signal), "child stopped")
            }
            Event::Woken => {}
        }
    }

    /// Signals other than the stop signals go to the main service's group, or to every service's
    /// group when there is no main service (or it is not running).
    fn forward(&self, signal: i32) {
        let main = self.slots.iter().position(|s| s.main);
        let groups = match main {
            Some(i) if self.board.deliver(i, signal) => 1,
            _ => self.board.deliver_all(signal, |_| true),
        };
        tracing::debug!(signal = %signal_name(signal), groups, "forwarding");
    }

    /// A stop signal received again during the shutdown goes to every service still running.
    fn forward_to_services(&self, signal: i32) {
        self.board.deliver_all(signal, |i| !self.slots[i].database);
    }

    fn on_report(&mut self, report: Report) {
        match report {
            Report::Ready(i) => {
                if !self.slots[i].life.satisfied() && self.step(i, Step::Ready) {
                    self.start_what_can_start();
                    self.settle_after_start_up();
                }
            }
            Report::Ended(i, ended) => self.on_ended(i, ended),
        }
    }

    /// Once every node is up (or done), the start-up's code and garbage are given back: see
    /// [`crate::init::footprint`].
    fn settle_after_start_up(&mut self) {
        let started = self
            .slots
            .iter()
            .all(|s| s.life.satisfied() || s.life.ended());
        if started && !self.settled && self.deadline.is_none() {
            self.settled = true;
            crate::init::footprint::settle();
        }
    }

    fn on_ended(&mut self, i: usize, ended: Ended) {
        if let Why::Panicked(message) = &ended.why
            && self.on_panic(i, message)
        {
            return;
        }
        if self.deadline.is_none() && self.ended_by_request(i, &ended) {
            return;
        }
        self.step(i, Step::End(ended.status));
        let slot = &self.slots[i];
        let name = slot.name.clone();
        if slot.main {
            self.main_status = ended.status;
        }
        match &ended.why {
            Why::FinalSyncFailed(why) => {
                tracing::error!("{why}");
                self.final_sync_failed = true;
            }
            Why::Panicked(_) if self.slots[i].final_sync => {
                tracing::error!(
                    "{name}: FINAL SYNC FAILED: its unit panicked twice; the newest transactions may be \
                     only in the local database and its WAL (the next start resumes from there)"
                );
                self.final_sync_failed = true;
            }
            // During a shutdown nothing else reports it (the start-up is over either way).
            Why::Failed(why) if self.deadline.is_some() => tracing::error!("{why}"),
            _ => {}
        }
        if let Some(status) = ended.status
            && !status.success()
            && ended.why != Why::Stopped
        {
            self.first_failure.get_or_insert(status.code());
        }
        if self.deadline.is_none() {
            let waiting = self.slots[i]
                .dependents
                .iter()
                .any(|&d| self.slots[d].life.pending());
            match ended.why {
                Why::Failed(reason) => {
                    tracing::error!("start-up failed: {reason}");
                    self.begin_shutdown(Reason::StartupFailed);
                }
                Why::Panicked(_) => {
                    tracing::error!("{name} cannot go on: shutting down");
                    self.begin_shutdown(Reason::Panicked);
                }
                _ if self.slots[i].main => {
                    let status = ended.status.unwrap_or(ExitStatus::Exited(0));
                    tracing::info!("main service {name:?} ended ({status}): shutting down");
                    self.begin_shutdown(Reason::Main(status));
                }
                Why::GaveUp { shutdown: true } => {
                    let status = ended.status.unwrap_or(ExitStatus::Exited(1));
                    self.begin_shutdown(Reason::GaveUp(status));
                }
                _ if !self.slots[i].life.satisfied() && waiting => {
                    let how = ended
                        .status
                        .map_or_else(|| "ended".to_owned(), |s| s.to_string());
                    tracing::error!(
                        "start-up failed: service {name:?} {how} before it was ready; its dependents cannot start"
                    );
                    self.begin_shutdown(Reason::StartupFailed);
                }
                _ => self.check_all_ended(),
            }
        }
        if self.deadline.is_some() {
            self.drop_unstartable();
            self.stop_what_can_stop();
        }
    }

    /// Starts every pending node whose dependencies are satisfied. During a shutdown only
    /// `final_sync` nodes still start, with their stop order already given.
    fn start_what_can_start(&mut self) {
        for i in 0..self.slots.len() {
            let slot = &self.slots[i];
            if !slot.life.pending() || !slot.deps.iter().all(|&d| self.slots[d].life.satisfied()) {
                continue;
            }
            let first_order = match self.deadline {
                None => Command::Run,
                Some(_) if !slot.final_sync => continue,
                Some(_) if self.killed => Command::Kill,
                Some(deadline) => Command::Stop {
                    deadline: deadline.into_std(),
                },
            };
            let Some(unit) = self.slots[i].unit.take() else {
                continue;
            };
            let (command, orders) = watch::channel(first_order);
            self.step(
                i,
                Step::Start {
                    stopping: first_order != Command::Run,
                },
            );
            self.slots[i].command = Some(command);
            self.spawn_unit(i, unit, orders);
        }
    }

    /// Runs `unit` as node `i` on its own task, guarded: whatever happens inside, the orchestrator
    /// hears how it ended (a panic included), so no stop ever waits for a unit that is gone.
    fn spawn_unit(&self, i: usize, unit: Box<dyn Unit>, orders: watch::Receiver<Command>) {
        let control = Control::new(
            i,
            self.reports.clone(),
            orders,
            std::sync::Arc::clone(&self.board),
        );
        let task = tokio::spawn(unit.run(control));
        let reports = self.reports.clone();
        tokio::spawn(async move {
            let ended = match task.await {
                Ok(ended) => ended,
                Err(err) => Ended {
                    status: None,
                    why: Why::Panicked(panic_message(err)),
                },
            };
            let _ = reports.send(Report::Ended(i, ended));
        });
    }

    /// A unit panicked. Its process group (if any) is killed, since nothing supervises it any
    /// more. A node that can be revived gets a fresh unit under the same orders; any other counts
    /// as failed: at run time that stops the container, and the databases' final syncs still run.
    /// Returns whether the node was revived.
    fn on_panic(&mut self, i: usize, message: &str) -> bool {
        let name = self.slots[i].name.clone();
        tracing::error!("{name}: panicked ({message}): this is a litevisor bug, please report it");
        if let Some(group) = self.board.get(i) {
            super::child::signal_group(group, libc::SIGKILL);
        }
        let slot = &self.slots[i];
        let (Some(revive), Some(command)) = (&slot.revive, &slot.command) else {
            self.panicked = true;
            return false;
        };
        tracing::warn!("{name}: taking over with a fresh unit");
        let unit = revive();
        let orders = command.subscribe();
        // One revival per node: a unit that panics again is a failure.
        self.slots[i].revive = None;
        self.spawn_unit(i, unit, orders);
        true
    }

    /// During a shutdown: a pending `final_sync` node whose dependency ended without being
    /// satisfied (a restore that was abandoned or failed) can never start; it ends unstarted.
    fn drop_unstartable(&mut self) {
        for i in 0..self.slots.len() {
            let unstartable = self.slots[i].deps.iter().any(|&d| {
                let dep = self.slots[d].life;
                dep.ended() && !dep.satisfied()
            });
            if unstartable {
                self.abandon_if_pending(i);
            }
        }
    }

    /// With no main service, the container ends when no service runs any more. Database nodes do
    /// not count (they run until the services stop), so databases alone run until a stop signal.
    fn check_all_ended(&mut self) {
        // Nodes a reload or `unregister` removed are gone, not ended: with nothing else left,
        // litevisor keeps running (the next reload or `register` may add something).
        let live = || self.slots.iter().filter(|s| s.want != Want::Gone);
        if live().next().is_none() && (self.settings.idle_when_empty || !self.slots.is_empty()) {
            return;
        }
        let mut services = live().filter(|s| !s.database).peekable();
        let any_service = services.peek().is_some();
        // A done oneshot waiting to run its `down` at the stop has ended as far as running goes.
        // One down by request is not over: it waits for `svc up`.
        let services_ended = services
            .all(|s| (s.life.ended() && s.want != Want::Down) || (s.lingers && s.life.satisfied()));
        if self.deadline.is_none()
            && services_ended
            && (any_service || live().all(|s| s.life.ended()))
        {
            tracing::info!("every service has ended: shutting down");
            self.begin_shutdown(Reason::AllEnded);
        }
    }

    fn begin_shutdown(&mut self, reason: Reason) {
        if self.deadline.is_some() {
            return;
        }
        self.reason = Some(reason);
        self.deadline = Some(Instant::now() + self.settings.shutdown_timeout);
        for i in 0..self.slots.len() {
            if !self.slots[i].final_sync {
                self.abandon_if_pending(i);
            }
        }
        self.drop_unstartable();
        self.start_what_can_start();
        self.stop_what_can_stop();
    }

    /// Sends the stop order to every running node whose dependents have all ended.
    /// Whether any node depending on `i`, directly or through others, is still running.
    fn dependent_running(&self, i: usize) -> bool {
        let mut seen = vec![false; self.slots.len()];
        let mut stack = self.slots[i].dependents.clone();
        while let Some(d) = stack.pop() {
            if std::mem::replace(&mut seen[d], true) {
                continue;
            }
            if self.slots[d].life.running() {
                return true;
            }
            stack.extend(&self.slots[d].dependents);
        }
        false
    }

    fn stop_what_can_stop(&mut self) {
        let Some(deadline) = self.deadline else {
            return;
        };
        let service_deadline = if self.slots.iter().any(|s| s.database) {
            deadline - final_sync_reserve(self.settings.shutdown_timeout)
        } else {
            deadline
        };
        for i in (0..self.slots.len()).rev() {
            let slot = &self.slots[i];
            if !slot.life.running() || slot.life.stopping() {
                continue;
            }
            // A pending dependent (a replicator waiting for its restore) does not hold the stop
            // back: the restore is abandoned, and the replicator then never starts. Dependents
            // count transitively: a oneshot that ended in between does not open the way (a
            // oneshot's `down` runs after everything started after it has stopped, as in s6-rc).
            if self.dependent_running(i) {
                continue;
            }
            let order = if self.killed || (self.services_killed && !slot.database) {
                Command::Kill
            } else if slot.database {
                Command::Stop {
                    deadline: deadline.into_std(),
                }
            } else {
                Command::Stop {
                    deadline: service_deadline.into_std(),
                }
            };
            self.send(i, order);
        }
        if self.sweep_kill_at.is_none() && self.slots.iter().all(|s| s.life.ended()) {
            self.begin_sweep();
        }
    }

    /// Every node ended: whatever process is left (orphans, escaped descendants) gets SIGTERM, then
    /// SIGKILL after the grace (within the deadline). Done when no process is left.
    fn begin_sweep(&mut self) {
        let deadline = self.deadline.unwrap_or_else(Instant::now);
        let grace = if self.services_killed {
            Duration::ZERO
        } else {
            self.settings.grace
        };
        self.sweep_kill_at = Some((Instant::now() + grace).min(deadline));
        let left = procs::descendants(self.self_pid);
        if left.is_empty() {
            self.done = true;
            return;
        }
        tracing::info!("{} leftover process(es): sending SIGTERM", left.len());
        self.signal_leftovers(libc::SIGTERM);
        self.signal_leftovers(libc::SIGCONT);
    }

    fn check_sweep(&mut self) {
        if self.sweep_kill_at.is_none() || self.done {
            return;
        }
        if procs::descendants(self.self_pid).is_empty() {
            self.done = true;
        } else if self.killed {
            // Something may have forked since the last SIGKILL round.
            self.signal_leftovers(libc::SIGKILL);
        }
    }

    fn signal_leftovers(&self, signal: i32) {
        if self.self_pid == 1 {
            // SAFETY: kill has no memory-safety requirements. As PID 1 this reaches every other
            // process of the namespace, but not ourselves.
            unsafe { libc::kill(-1, signal) };
        } else {
            for pid in procs::descendants(self.self_pid) {
                // SAFETY: as above; ESRCH is expected for processes that just ended.
                unsafe { libc::kill(pid, signal) };
            }
        }
    }

    /// Cuts the services' grace short; database nodes keep their stop order (the final sync).
    fn kill_services(&mut self) {
        self.services_killed = true;
        for i in 0..self.slots.len() {
            if !self.slots[i].database {
                self.send(i, Command::Kill);
            }
        }
    }

    /// Sends a stop or kill order to node `i`, if its unit runs.
    fn send(&mut self, i: usize, order: Command) {
        if let Some(command) = &self.slots[i].command {
            let _ = command.send(order);
            self.step(i, Step::Stop);
        }
    }

    fn kill_everything(&mut self) {
        if self.deadline.is_none() {
            self.begin_shutdown(Reason::Signal);
        }
        self.killed = true;
        for i in 0..self.slots.len() {
            self.send(i, Command::Kill);
        }
        self.signal_leftovers(libc::SIGKILL);
        self.check_sweep();
    }

    fn exit_code(&self) -> i32 {
        let map = |code: i32| self.settings.exit_map.apply(code);
        let code = match self.reason {
            Some(Reason::Main(status)) => map(status.code()),
            Some(Reason::Signal) | None => self.main_status.map_or(0, |s| map(s.code())),
            Some(Reason::StartupFailed | Reason::Panicked) => 1,
            Some(Reason::GaveUp(status)) => match status.code() {
                0 => 1,
                code => code,
            },
            Some(Reason::AllEnded) => self.first_failure.unwrap_or(0),
        };
        let code = if self.final_sync_failed && code == 0 {
            tracing::error!(
                "a database's final sync failed: exiting with {FINAL_SYNC_FAILED} instead of 0"
            );
            FINAL_SYNC_FAILED
        } else {
            code
        };
        // A unit that panicked is a litevisor bug: never report success after one.
        let code = if self.panicked && code == 0 { 1 } else { code };
        tracing::info!("exiting with code {code}");
        code
    }
}

/// What a panicked task said, for the log.
fn panic_message(err: tokio::task::JoinError) -> String {
    if !err.is_panic() {
        return "cancelled".to_owned();
    }
    let payload = err.into_panic();
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_owned())
}
