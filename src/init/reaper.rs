//! The process registry and the one place in litevisor that calls `waitpid(-1)`.
//!
//! Every child litevisor starts is registered here by [`crate::init::spawn`] together with its owner's
//! exit callback. When SIGCHLD arrives the event loop calls [`drain`], which reaps everything that has
//! ended and routes each status: known pids go to their owner's callback, unknown ones are orphans
//! (re-parented to us as PID 1 or subreaper) and are only reported to the event loop.
//!
//! Registration happens under the same lock as routing, and `spawn` holds it from before `fork`
//! until the pid is inserted. A reap that races with the insert waits on the lock, so a child that
//! exits instantly is never mistaken for an orphan.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use nix::unistd::Pid;

use super::status::ExitStatus;

/// Called once with the child's pid and how it ended. It runs on the reaping thread, so it must not
/// block: send on an unbounded or oneshot channel, set a flag, wake a task.
pub type OnExit = Box<dyn FnOnce(Pid, ExitStatus) + Send>;

enum Entry {
    /// Forked, exec outcome not known yet. Holds the status if the child already ended.
    Starting(Option<ExitStatus>),
    /// Exec succeeded; the owner waits for the exit.
    Running(OnExit),
    /// Exec failed and `spawn` already told its caller: reap silently.
    Discard,
}

static REGISTRY: Mutex<BTreeMap<i32, Entry>> = Mutex::new(BTreeMap::new());

fn registry() -> MutexGuard<'static, BTreeMap<i32, Entry>> {
    // Nothing panics while holding the lock, but if it ever did, the map is still consistent.
    REGISTRY
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Holds the registry while `spawn` forks, so that the new pid is known before anyone can reap it.
pub(super) struct ForkGuard(MutexGuard<'static, BTreeMap<i32, Entry>>);

impl ForkGuard {
    pub(super) fn lock() -> Self {
        Self(registry())
    }

    pub(super) fn register(mut self, pid: Pid) {
        self.0.insert(pid.as_raw(), Entry::Starting(None));
    }
}

/// Called by `spawn` once it knows whether exec succeeded. On success the owner's callback is armed
/// (or called at once if the child already ended); on failure the child's status is dropped.
pub(super) fn finish_start(pid: Pid, on_exit: Option<OnExit>) {
    let early = {
        let mut entries = registry();
        match (entries.remove(&pid.as_raw()), on_exit) {
            (Some(Entry::Starting(Some(status))), on_exit) => on_exit.map(|f| (f, status)),
            (_, Some(on_exit)) => {
                entries.insert(pid.as_raw(), Entry::Running(on_exit));
                None
            }
            (_, None) => {
                entries.insert(pid.as_raw(), Entry::Discard);
                None
            }
        }
    };
    if let Some((on_exit, status)) = early {
        deliver(on_exit, pid, status);
    }
}

/// Something [`drain`] reaped that has no registered owner, or a stop report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reaped {
    /// An unknown child ended: an orphan re-parented to us.
    Orphan { pid: Pid, status: ExitStatus },
    /// A child (known or not) was stopped by `signal` (job control).
    Stopped { pid: Pid, signal: i32 },
}

/// Whether litevisor still has children after a drain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Children {
    Remain,
    /// `waitpid` answered ECHILD: nothing is left to wait for.
    None,
}

/// Reaps every child that has ended, without blocking; routes known pids to their owners and reports
/// the rest to `other`. Only the event loop calls this: it is the single `waitpid(-1)` of the process.
pub(super) fn drain(mut other: impl FnMut(Reaped)) -> Children {
    loop {
        let mut raw = 0;
        // SAFETY: waitpid only writes the status integer we pass.
        let pid = unsafe { libc::waitpid(-1, &mut raw, libc::WNOHANG | libc::WUNTRACED) };
        if pid == 0 {
            return Children::Remain;
        }
        if pid < 0 {
            match nix::errno::Errno::last() {
                nix::errno::Errno::EINTR => continue,
                nix::errno::Errno::ECHILD => return Children::None,
                errno => {
                    tracing::debug!(%errno, "waitpid failed");
                    return Children::Remain;
                }
            }
        }
        let pid = Pid::from_raw(pid);
        if libc::WIFSTOPPED(raw) {
            other(Reaped::Stopped {
                pid,
                signal: libc::WSTOPSIG(raw),
            });
            continue;
        }
        let Some(status) = ExitStatus::from_wait_status(raw) else {
            continue;
        };
        if let Some(orphan) = route(pid, status) {
            other(orphan);
        }
    }
}

fn route(pid: Pid, status: ExitStatus) -> Option<Reaped> {
    let owner = {
        let mut entries = registry();
        match entries.remove(&pid.as_raw()) {
            Some(Entry::Running(on_exit)) => Some(on_exit),
            Some(Entry::Starting(_)) => {
                entries.insert(pid.as_raw(), Entry::Starting(Some(status)));
                return None;
            }
            Some(Entry::Discard) => return None,
            None => return Some(Reaped::Orphan { pid, status }),
        }
    };
    if let Some(on_exit) = owner {
        deliver(on_exit, pid, status);
    }
    None
}

fn deliver(on_exit: OnExit, pid: Pid, status: ExitStatus) {
    // An owner's bug must not take PID 1 down with it.
    let call = std::panic::AssertUnwindSafe(move || on_exit(pid, status));
    if std::panic::catch_unwind(call).is_err() {
        tracing::debug!(%pid, "exit callback panicked");
    }
}

/// Makes orphaned descendants re-parent to us instead of to the namespace's PID 1, so that we reap
/// them. Needed (and used) only when litevisor is not PID 1 itself.
pub fn become_subreaper() -> std::io::Result<()> {
    // SAFETY: PR_SET_CHILD_SUBREAPER takes a plain integer argument.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
