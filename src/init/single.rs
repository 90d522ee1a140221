//! The tini mode, `litevisor -- PROG ARGS...`: run one program as the main child, forward signals to
//! its process group, reap every orphan, and exit with the program's exit code once nothing is left.
//! Runs on the calling (main) thread with no async runtime.
//!
//! Life cycle:
//! - Running: every signal litevisor receives (except SIGCHLD) goes to the child's process group.
//!   SIGTERM, SIGINT and SIGQUIT also start a shutdown: a grace period, after which the group and all
//!   our descendants get SIGKILL. A repeated stop signal is forwarded again and changes nothing else;
//!   only a second Ctrl-C typed on litevisor's terminal sends SIGKILL at once.
//! - Main exited: whatever remains (the child's group, and every descendant: `kill(-1)` as PID 1,
//!   a /proc walk as subreaper) gets SIGTERM + SIGCONT, then SIGKILL when the grace period ends.
//!   litevisor exits as soon as it has no children left, with the main program's exit code.
//! - Job control: with a terminal, the child is the terminal's foreground group. If it gets stopped
//!   (^Z) and litevisor is not PID 1, litevisor stops itself too so the calling shell gets its prompt
//!   back; on SIGCONT it hands the terminal back and continues the child. As PID 1 a stopped child just
//!   stays stopped until someone sends SIGCONT (which is forwarded).
//! - Footprint: 100 ms after the start, once, litevisor gives back the pages its start-up touched
//!   ([`footprint::settle`]), so an idle init costs little more than tini.

use std::ffi::OsString;
use std::os::fd::RawFd;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use nix::unistd::Pid;

use super::event_loop::{Event, Flow, Reactor, SignalInfo};
use super::spawn::{ChildSpec, Session, SpawnError, spawn};
use super::status::{ExitCodeMap, ExitStatus, signal_name};
use super::{footprint, procs, reaper, signals};

/// How long after the program's start its init gives back the start-up's pages: a program that is
/// over by then (`litevisor -- true` in a script) never pays for it. One wake-up, then never again.
const SETTLE_AFTER: Duration = Duration::from_millis(100);

pub struct Options {
    /// Program and arguments, passed to the program verbatim.
    pub command: Vec<OsString>,
    /// How long processes get between SIGTERM and SIGKILL.
    pub grace: Duration,
    pub exit_map: ExitCodeMap,
    /// Log a warning for every orphan reaped (tini's `-w`).
    pub warn_on_reap: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SingleError {
    #[error("no program given")]
    NoProgram,
    #[error("cannot set up signal handling: {0}")]
    Signals(#[source] std::io::Error),
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    #[error("event loop failed: {0}")]
    Loop(#[source] std::io::Error),
}

impl SingleError {
    /// The exit code litevisor should end with when this error stops it.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Spawn(err) => err.exit_code(),
            Self::NoProgram => 2,
            _ => 1,
        }
    }
}

/// Runs the program described by `options` to completion; returns litevisor's exit code.
pub fn run(options: Options) -> Result<i32, SingleError> {
    let set = signals::take_over().map_err(SingleError::Signals)?;
    let mut reactor = Reactor::new(&set).map_err(SingleError::Signals)?;
    let self_pid = std::process::id() as i32;
    let pid1 = self_pid == 1;
    if !pid1 && let Err(err) = reaper::become_subreaper() {
        tracing::warn!(%err, "cannot become a child subreaper: orphans will not be reaped by litevisor");
    }

    let (program, args) = options
        .command
        .split_first()
        .ok_or(SingleError::NoProgram)?;
    let tty = foreground_tty();
    let session = match tty {
        Some(tty) => Session::Foreground { tty },
        None if is_tty(0) => Session::Group,
        None => Session::New,
    };
    let spec = ChildSpec::new(program).args(args).session(session);
    let main_status = Arc::new(OnceLock::new());
    let record = Arc::clone(&main_status);
    let main = spawn(&spec, move |_, status| {
        let _ = record.set(status);
    })?;
    tracing::debug!(pid = %main, ?session, "main program started");

    let mut state = State {
        main,
        main_status,
        self_pid,
        pid1,
        tty,
        grace: options.grace,
        warn_on_reap: options.warn_on_reap,
        settle_at: Some(Instant::now() + SETTLE_AFTER),
        deadline: None,
        shutting_down: false,
        killing: false,
        leftovers_signaled: false,
        no_children: false,
        main_stopped: false,
    };
    let status = state.supervise(&mut reactor).map_err(SingleError::Loop)?;
    if let Some(tty) = tty
        && !pid1
    {
        // Give the terminal back to our own group (our caller's job) before we exit.
        // SAFETY: plain ioctl wrappers; SIGTTOU is ignored, failure is harmless.
        unsafe { libc::tcsetpgrp(tty, libc::getpgrp()) };
    }
    tracing::debug!(%status, "main program ended and no process is left");
    Ok(options.exit_map.apply(status.code()))
}

struct State {
    main: Pid,
    main_status: Arc<OnceLock<ExitStatus>>,
    self_pid: i32,
    pid1: bool,
    tty: Option<RawFd>,
    grace: Duration,
    warn_on_reap: bool,
    /// When to give back the start-up's pages ([`footprint::settle`]); `None` once done.
    settle_at: Option<Instant>,
    /// When everyone gets SIGKILL; set by the first shutdown signal or the main program's exit.
    deadline: Option<Instant>,
    shutting_down: bool,
    killing: bool,
    leftovers_signaled: bool,
    no_children: bool,
    main_stopped: bool,
}

impl State {
    fn supervise(&mut self, reactor: &mut Reactor) -> std::io::Result<ExitStatus> {
        loop {
            let wake = match (self.deadline, self.settle_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            reactor.turn(wake, &mut |event| {
                self.on_event(event);
                Flow::Continue
            })?;
            if self.settle_at.is_some_and(|at| Instant::now() >= at) {
                self.settle_at = None;
                footprint::settle();
            }
            if self.deadline.is_some_and(|d| Instant::now() >= d) && !self.killing {
                tracing::debug!("grace period over: killing every remaining process");
                self.kill_everyone();
            }
            if let Some(&status) = self.main_status.get() {
                if self.no_children {
                    return Ok(status);
                }
                if !self.leftovers_signaled {
                    self.leftovers_signaled = true;
                    self.terminate_leftovers();
                } else if self.killing {
                    // Something may have forked after the last SIGKILL round.
                    self.signal_everyone(libc::SIGKILL);
                }
            }
            if std::mem::take(&mut self.main_stopped) {
                self.follow_job_control_stop();
            }
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Signal(info) => self.on_signal(info),
            Event::OrphanExited { pid, status } if self.warn_on_reap => {
                // tini's wording, which scripts may look for.
                tracing::warn!("Reaped zombie process with pid={pid} ({status})")
            }
            Event::OrphanExited { pid, status } => tracing::debug!(%pid, %status, "reaped orphan"),
            Event::Stopped { pid, signal } => {
                tracing::debug!(%pid, signal = %signal_name(signal), "child stopped");
                if pid == self.main {
                    self.main_stopped = true;
                }
            }
            Event::NoChildren => self.no_children = true,
            Event::Woken => {}
        }
    }

    fn on_signal(&mut self, info: SignalInfo) {
        let signal = info.signal;
        if signal == libc::SIGPIPE && info.sender == self.self_pid {
            // Raised by one of our own writes (e.g. stderr closed): not meant for the child.
            return;
        }
        let stops = matches!(signal, libc::SIGTERM | libc::SIGINT | libc::SIGQUIT);
        // A repeated SIGTERM (GNU `timeout`, a signal sent to a group and to its leader) is only
        // forwarded again: the program keeps its grace. A person pressing Ctrl-C a second time on
        // the terminal means "now".
        let escalates = info.is_terminal_interrupt()
            && (self.shutting_down || self.main_status.get().is_some());
        tracing::debug!(signal = %signal_name(signal), sender = info.sender, "signal received");
        if escalates {
            tracing::debug!("second Ctrl-C: killing every remaining process now");
            self.kill_everyone();
            return;
        }
        self.forward(signal);
        if stops && !self.shutting_down {
            self.shutting_down = true;
            self.deadline.get_or_insert(Instant::now() + self.grace);
        }
    }

    fn forward(&self, signal: i32) {
        // SAFETY: kill has no memory-safety requirements.
        if unsafe { libc::kill(-self.main.as_raw(), signal) } < 0 {
            let errno = nix::errno::Errno::last();
            tracing::debug!(%errno, signal = %signal_name(signal), "cannot forward signal");
        }
    }

    /// After the main program ended: ask everything left to stop, and start the grace period.
    fn terminate_leftovers(&mut self) {
        if self.killing {
            self.signal_everyone(libc::SIGKILL);
            return;
        }
        tracing::debug!("main program ended: terminating the remaining processes");
        self.signal_everyone(libc::SIGTERM);
        // A stopped process would sit on its SIGTERM until the SIGKILL.
        self.signal_everyone(libc::SIGCONT);
        self.deadline.get_or_insert(Instant::now() + self.grace);
    }

    fn kill_everyone(&mut self) {
        self.killing = true;
        self.deadline = None;
        self.signal_everyone(libc::SIGKILL);
    }

    /// The main program's group plus every other process we are responsible for.
    fn signal_everyone(&self, signal: i32) {
        // SAFETY (both kills): kill has no memory-safety requirements; ESRCH is expected.
        unsafe { libc::kill(-self.main.as_raw(), signal) };
        if self.pid1 {
            // As PID 1 of a namespace this reaches every other process in it, but not ourselves.
            unsafe { libc::kill(-1, signal) };
        } else {
            for pid in procs::descendants(self.self_pid) {
                unsafe { libc::kill(pid, signal) };
            }
        }
    }

    /// The main program was stopped (^Z). Outside a container, behave like a job-control shell
    /// expects: stop ourselves so the shell regains the terminal, and pass on the continue.
    fn follow_job_control_stop(&self) {
        let Some(tty) = self.tty else { return };
        if self.pid1 || self.main_status.get().is_some() {
            return;
        }
        // SAFETY: signalling ourselves / ioctl wrappers; SIGTTOU is ignored so tcsetpgrp from the
        // background cannot stop us.
        unsafe {
            libc::kill(self.self_pid, libc::SIGSTOP);
            // Resumed. If our caller made us the foreground job again (`fg`), hand the terminal on.
            if libc::tcgetpgrp(tty) == libc::getpgrp() {
                libc::tcsetpgrp(tty, self.main.as_raw());
            }
        }
        self.forward(libc::SIGCONT);
    }
}

fn is_tty(fd: RawFd) -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(fd) == 1 }
}

/// Stdin, if it is a terminal whose foreground group is ours (we were started in the foreground).
fn foreground_tty() -> Option<RawFd> {
    // SAFETY: plain queries on descriptor 0.
    let ours = is_tty(0) && unsafe { libc::tcgetpgrp(0) == libc::getpgrp() };
    ours.then_some(0)
}
