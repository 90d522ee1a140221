//! Processes from async code: [`start`] runs [`init::spawn`] off the runtime and hands back a future
//! of the exit status (delivered by the init core's single reaper), and [`Tree`] signals a service's
//! process group plus the descendants that left it (a `setsid` grandchild), through pidfds so a
//! recycled pid is never hit.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::unistd::Pid;
use tokio::sync::oneshot;

use crate::init::{self, ChildSpec, ExitStatus, SpawnError};

/// A started process whose exit has not been awaited yet.
pub struct Running {
    pub pid: Pid,
    exit: oneshot::Receiver<ExitStatus>,
}

impl Running {
    /// Resolves when the reaper has collected the process.
    pub async fn exited(&mut self) -> ExitStatus {
        // The reaper calls every registered callback exactly once; a lost sender cannot happen short
        // of a bug, and then "killed" is the honest answer.
        (&mut self.exit).await.unwrap_or(ExitStatus::Signaled {
            signal: libc::SIGKILL,
            core_dumped: false,
        })
    }
}

/// Starts `spec` (blocking only a pool thread for the fork-to-exec window). `on_started` gets the
/// pid on that thread as soon as the process runs, before this future resumes: whoever needs the
/// process group (signal forwarding) has it without waiting for the runtime to poll us again.
pub async fn start(
    spec: ChildSpec,
    on_started: impl FnOnce(Pid) + Send + 'static,
) -> Result<Running, SpawnError> {
    let program = spec.program().to_owned();
    let (tx, exit) = oneshot::channel();
    let spawned = tokio::task::spawn_blocking(move || {
        let pid = init::spawn(&spec, move |_, status| {
            let _ = tx.send(status);
        })?;
        on_started(pid);
        Ok(pid)
    })
    .await;
    match spawned {
        Ok(Ok(pid)) => Ok(Running { pid, exit }),
        Ok(Err(err)) => Err(err),
        Err(join) => Err(SpawnError::Parent {
            program,
            source: io::Error::other(join.to_string()),
        }),
    }
}

/// Sends `signal` to the process group led by `leader`. ESRCH (already gone) is fine.
pub fn signal_group(leader: Pid, signal: i32) {
    // SAFETY: kill has no memory-safety requirements.
    unsafe { libc::kill(-leader.as_raw(), signal) };
}

/// A service's process group plus every descendant seen so far, held as pidfds.
pub struct Tree {
    leader: Pid,
    known: BTreeMap<i32, OwnedFd>,
}

impl Tree {
    pub fn new(leader: Pid) -> Self {
        Self {
            leader,
            known: BTreeMap::new(),
        }
    }

    /// Looks for new descendants of the leader (only possible while it lives: after its death they
    /// are re-parented to us and no longer distinguishable), then sends each of `signals` to the
    /// group and all of them.
    pub fn signal(&mut self, signals: &[i32]) {
        for pid in init::procs::descendants(self.leader.as_raw()) {
            if let std::collections::btree_map::Entry::Vacant(slot) = self.known.entry(pid)
                && let Some(fd) = pidfd_open(pid)
            {
                slot.insert(fd);
            }
        }
        for &signal in signals {
            signal_group(self.leader, signal);
            for fd in self.known.values() {
                // SAFETY: pidfd_send_signal with a valid pidfd and no siginfo; errors (the process
                // exited) are ignored.
                unsafe {
                    libc::syscall(
                        libc::SYS_pidfd_send_signal,
                        fd.as_raw_fd(),
                        signal,
                        std::ptr::null::<libc::siginfo_t>(),
                        0u32,
                    )
                };
            }
        }
    }
}

fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open returns a new descriptor or -1; no memory is passed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0u32) };
    if fd < 0 {
        return None;
    }
    // SAFETY: a fresh descriptor (pidfds are close-on-exec) that nobody else owns.
    Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Kills a process group when dropped (for probes abandoned by a timeout), unless disarmed once the
/// process was reaped (its pid may be reused after that).
pub struct KillOnDrop(Option<Pid>);

impl KillOnDrop {
    pub fn new(leader: Pid) -> Self {
        Self(Some(leader))
    }

    pub fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(leader) = self.0 {
            signal_group(leader, libc::SIGKILL);
        }
    }
}

/// A close-on-exec pipe `(read, write)` whose read end is non-blocking (for the runtime) and whose
/// write end stays blocking (for the child, which expects ordinary stdout semantics).
/// A pipe with both ends blocking and close-on-exec: one service's stdout to another's stdin.
pub fn blocking_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors are fresh and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors are fresh and owned by nobody else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: fcntl on our own descriptor.
    if unsafe { libc::fcntl(read.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((read, write))
}

/// Registers the read end of a pipe from [`pipe`] with the runtime.
pub fn async_reader(read: OwnedFd) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: the AsyncFd owns the descriptor and closes it only when dropped; nothing else closes
    // or replaces it meanwhile.
    let registered = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(read, tokio::io::Interest::READABLE)
    };
    Ok(registered?)
}
