//! The init event loop: waits on the signalfd (and a wake-up eventfd) with `poll`, reaps on SIGCHLD,
//! and hands everything else to a [`Sink`] as [`Event`]s. It sleeps in the kernel until something
//! happens or the caller's deadline passes: no ticks, no wake-ups while idle.
//!
//! Exits of children started with [`crate::init::spawn`] never show up here; the reaper calls their
//! owners directly. The sink sees signals, orphans, stop reports, and "no children left".

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Instant;

use nix::unistd::Pid;

use super::reaper::{self, Children, Reaped};
use super::signals::{self, SignalSet};
use super::status::ExitStatus;

/// A signal as read from the signalfd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignalInfo {
    pub signal: i32,
    /// The sending process (0 for the kernel; our own pid for e.g. a SIGPIPE raised by our write).
    pub sender: i32,
    /// `si_code`: how it was sent (`SI_USER` for kill(2), `SI_KERNEL` for the kernel's own).
    pub code: i32,
}

impl SignalInfo {
    /// A SIGINT the kernel sent because someone typed the interrupt character (Ctrl-C) on the
    /// terminal litevisor runs in: a person at the keyboard, not a process manager.
    pub fn is_terminal_interrupt(&self) -> bool {
        self.signal == libc::SIGINT && self.code == libc::SI_KERNEL
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A signal other than SIGCHLD arrived.
    Signal(SignalInfo),
    /// An unregistered child (an orphan re-parented to us) was reaped.
    OrphanExited { pid: Pid, status: ExitStatus },
    /// A child was stopped by `signal` (job control).
    Stopped { pid: Pid, signal: i32 },
    /// After reaping, `waitpid` reported that no children remain.
    NoChildren,
    /// [`Waker::wake`] was called.
    Woken,
}

/// Whether the loop should keep going after an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

/// Receives the loop's events. Runs on the loop's thread: must not block (for a thread feeding an
/// async supervisor, send on an unbounded channel).
pub trait Sink {
    fn event(&mut self, event: Event) -> Flow;
}

impl<F: FnMut(Event) -> Flow> Sink for F {
    fn event(&mut self, event: Event) -> Flow {
        self(event)
    }
}

/// Wakes a [`Reactor`] from any thread; it then reports [`Event::Woken`].
#[derive(Clone, Debug)]
pub struct Waker(Arc<OwnedFd>);

impl Waker {
    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: an 8-byte write to our eventfd. It is non-blocking; if the counter is saturated a
        // wake-up is already pending, so the error can be ignored.
        unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }
}

pub struct Reactor {
    signals: OwnedFd,
    wake: Arc<OwnedFd>,
}

impl Reactor {
    /// `set` is what [`signals::take_over`] returned: those signals are blocked and now read here.
    pub fn new(set: &SignalSet) -> io::Result<Self> {
        let signals = signals::signalfd(set)?;
        // SAFETY: creates a fresh descriptor owned by nobody else.
        let wake = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if wake < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `wake` was just created and is valid.
        let wake = Arc::new(unsafe { OwnedFd::from_raw_fd(wake) });
        Ok(Self { signals, wake })
    }

    pub fn waker(&self) -> Waker {
        Waker(Arc::clone(&self.wake))
    }

    /// Runs until the sink answers [`Flow::Stop`].
    pub fn run(&mut self, sink: &mut impl Sink) -> io::Result<()> {
        while self.turn(None, sink)? == Flow::Continue {}
        Ok(())
    }

    /// Waits for activity or `deadline`, then delivers everything pending: signals in arrival order,
    /// then the results of one reap drain if SIGCHLD was among them. Returns [`Flow::Stop`] if the
    /// sink asked to stop at any event of this turn (all events of the turn are still delivered, and
    /// reaping always completes). Returns `Continue` without events when the deadline passed.
    pub fn turn(&mut self, deadline: Option<Instant>, sink: &mut impl Sink) -> io::Result<Flow> {
        let mut fds = [
            libc::pollfd {
                fd: self.signals.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: self.wake.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let timeout = deadline.map_or(-1, |d| {
            // Round up so we never wake just before the deadline and spin.
            let left = d.saturating_duration_since(Instant::now());
            left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32
        });
        // SAFETY: fds is a valid array of two pollfd structs.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout) };
        if ready < 0 {
            let err = io::Error::last_os_error();
            return if err.kind() == io::ErrorKind::Interrupted {
                Ok(Flow::Continue)
            } else {
                Err(err)
            };
        }

        let mut flow = Flow::Continue;
        let mut emit = |event| {
            if sink.event(event) == Flow::Stop {
                flow = Flow::Stop;
            }
        };

        if fds[1].revents != 0 {
            let mut counter = 0u64;
            // SAFETY: reading the 8-byte counter resets the non-blocking eventfd.
            unsafe { libc::read(self.wake.as_raw_fd(), (&mut counter as *mut u64).cast(), 8) };
            emit(Event::Woken);
        }
        let mut child_signal = false;
        if fds[0].revents != 0 {
            self.read_signals(|info| {
                if info.signal == libc::SIGCHLD {
                    child_signal = true;
                } else {
                    emit(Event::Signal(info));
                }
            })?;
        }
        if child_signal {
            let left = reaper::drain(|reaped| {
                let event = match reaped {
                    Reaped::Orphan { pid, status } => Event::OrphanExited { pid, status },
                    Reaped::Stopped { pid, signal } => Event::Stopped { pid, signal },
                };
                emit(event);
            });
            if left == Children::None {
                emit(Event::NoChildren);
            }
        }
        Ok(flow)
    }

    fn read_signals(&self, mut each: impl FnMut(SignalInfo)) -> io::Result<()> {
        const INFO: usize = std::mem::size_of::<libc::signalfd_siginfo>();
        // SAFETY: signalfd_siginfo is plain old data; all-zero is a valid value.
        let mut batch: [libc::signalfd_siginfo; 16] = unsafe { std::mem::zeroed() };
        loop {
            // SAFETY: reading whole siginfo records into our array.
            let n = unsafe {
                libc::read(
                    self.signals.as_raw_fd(),
                    batch.as_mut_ptr().cast(),
                    INFO * batch.len(),
                )
            };
            if n < 0 {
                let err = io::Error::last_os_error();
                return match err.kind() {
                    io::ErrorKind::WouldBlock => Ok(()),
                    io::ErrorKind::Interrupted => continue,
                    _ => Err(err),
                };
            }
            let records = n as usize / INFO;
            for info in &batch[..records] {
                each(SignalInfo {
                    signal: info.ssi_signo as i32,
                    sender: info.ssi_pid as i32,
                    code: info.ssi_code,
                });
            }
            if records < batch.len() {
                return Ok(());
            }
        }
    }
}
