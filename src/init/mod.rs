//! PID-1 duties: owning signals, starting children, reaping every process that ends, and the tini-style
//! single-program mode built from those pieces.
//!
//! # Pieces
//! - [`signals`]: [`signals::take_over`] blocks every catchable signal and ignores SIGTTIN/SIGTTOU.
//!   Call it on the main thread before any thread exists (so tokio's threads inherit the mask).
//! - [`spawn()`]: fork + exec a [`ChildSpec`] with clean signal state, no leaked descriptors, its own
//!   session or process group, and the exec error (if any) reported back as a [`SpawnError`]. The pid
//!   is registered with an exit callback under the reaper's lock, so even an instant exit is routed to
//!   the owner and never mistaken for an orphan.
//! - the reaper: the only `waitpid(-1)` in litevisor. It runs inside [`Reactor::turn`] after SIGCHLD,
//!   calls the callbacks of known children, and reports unknown ones (orphans) as events.
//! - [`Reactor`]: the event loop over a signalfd (plus an eventfd for [`Waker`]) with an optional
//!   deadline. It delivers [`Event`]s to a [`Sink`]; nothing wakes it while idle.
//! - [`ExitStatus`] and [`ExitCodeMap`]: `128 + N` for a death by signal N, and tini's `-e` remapping.
//! - [`signals::Inherited`]: the signal state litevisor was started with (recorded before `main`),
//!   which every child gets back between `fork` and `exec`.
//! - [`footprint::settle`]: once started, gives back the start-up's pages so an idle init stays small.
//!
//! # Two ways to drive it
//! Single program (`litevisor -- PROG`): [`single::run`] does everything on the main thread with no
//! async runtime; see that module for the shutdown rules.
//!
//! Supervisor (tokio): take the signals first, then give the reactor its own thread and turn events
//! into messages. Child exits arrive through the callback given to [`spawn()`]:
//! ```ignore
//! let set = init::signals::take_over()?;            // before the runtime exists
//! let mut reactor = init::Reactor::new(&set)?;
//! let waker = reactor.waker();                        // reactor.turn wakes with Event::Woken
//! let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
//! std::thread::spawn(move || reactor.run(&mut |ev| {
//!     if tx.send(ev).is_err() { init::Flow::Stop } else { init::Flow::Continue }
//! }));
//! let runtime = tokio::runtime::Runtime::new()?;      // its threads inherit the blocked mask
//! // in a task, via spawn_blocking (spawn waits for the child's exec):
//! let (done_tx, done_rx) = tokio::sync::oneshot::channel();
//! let pid = init::spawn(&spec, move |_pid, status| { let _ = done_tx.send(status); })?;
//! ```
//! When not PID 1, call [`become_subreaper`] so orphans come to us. Never reap anywhere else: no
//! `tokio::process`, no `std::process::Child::wait`.

// The supervisor (built on this API later) is its main user; until then parts look unused.
#![allow(dead_code, unused_imports)]

pub mod event_loop;
pub mod footprint;
pub mod procs;
pub mod reaper;
pub mod signals;
pub mod single;
pub mod spawn;
pub mod status;

pub use event_loop::{Event, Flow, Reactor, SignalInfo, Sink, Waker};
pub use reaper::{OnExit, become_subreaper};
pub use spawn::{ChildSpec, Session, SpawnError, Stdio, spawn};
pub use status::{ExitCodeMap, ExitStatus, signal_name};
