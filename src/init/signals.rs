//! Signal ownership: litevisor takes every catchable signal away from asynchronous delivery and reads
//! it from a `signalfd` instead, so no handler ever runs and nothing in the signal path can re-enter.
//!
//! Order matters: [`take_over`] must run on the main thread before any other thread exists, because
//! threads inherit the creator's signal mask. A thread spawned earlier would keep the signals unblocked
//! and the kernel could deliver one there (default action: often death), bypassing the signalfd.
//!
//! Children must not inherit any of this: [`reset_in_child`] restores an empty mask and default
//! dispositions between `fork` and `exec`.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

/// A set of signal numbers (a `sigset_t`).
#[derive(Clone, Copy)]
pub struct SignalSet(libc::sigset_t);

impl SignalSet {
    pub fn empty() -> Self {
        // SAFETY: sigemptyset fully initialises the set it is given.
        unsafe {
            let mut set = std::mem::zeroed::<libc::sigset_t>();
            libc::sigemptyset(&mut set);
            Self(set)
        }
    }

    /// The signals litevisor takes over: everything catchable except
    /// - the synchronous fault signals (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP, SIGSYS, SIGABRT): they
    ///   are raised by our own faulting instruction and must keep their default (crash) action,
    /// - SIGTTIN/SIGTTOU: init ignores them so it can never be stopped by the terminal,
    /// - the two realtime signals glibc reserves for itself (below SIGRTMIN).
    pub fn init_signals() -> Self {
        const NOT_TAKEN: [libc::c_int; 11] = [
            libc::SIGKILL,
            libc::SIGSTOP,
            libc::SIGSEGV,
            libc::SIGBUS,
            libc::SIGILL,
            libc::SIGFPE,
            libc::SIGTRAP,
            libc::SIGSYS,
            libc::SIGABRT,
            libc::SIGTTIN,
            libc::SIGTTOU,
        ];
        let mut set = Self::empty();
        for signal in (1..32).chain(libc::SIGRTMIN()..=libc::SIGRTMAX()) {
            if !NOT_TAKEN.contains(&signal) {
                set.add(signal);
            }
        }
        set
    }

    pub fn add(&mut self, signal: libc::c_int) {
        // SAFETY: the set is initialised; an invalid number only yields EINVAL.
        unsafe { libc::sigaddset(&mut self.0, signal) };
    }

    pub fn contains(&self, signal: libc::c_int) -> bool {
        // SAFETY: the set is initialised.
        unsafe { libc::sigismember(&self.0, signal) == 1 }
    }

    pub(crate) fn as_raw(&self) -> &libc::sigset_t {
        &self.0
    }
}

impl std::fmt::Debug for SignalSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let members = (1..=libc::SIGRTMAX()).filter(|s| self.contains(*s));
        f.debug_set().entries(members).finish()
    }
}

/// Takes over the signals of [`SignalSet::init_signals`] for the whole process: ignores SIGTTIN and
/// SIGTTOU, then blocks the set in the calling thread (and so in every thread spawned afterwards).
///
/// Call it first thing in `main`'s thread, before starting a tokio runtime or any other thread; it
/// fails if the process already has more than one thread, since those would keep receiving signals.
pub fn take_over() -> io::Result<SignalSet> {
    if let Some(threads) = thread_count()
        && threads > 1
    {
        return Err(io::Error::other(format!(
            "signals must be taken over before any thread starts, but the process already has {threads} threads"
        )));
    }
    for signal in [libc::SIGTTIN, libc::SIGTTOU] {
        // SAFETY: installing SIG_IGN has no memory-safety requirements.
        if unsafe { libc::signal(signal, libc::SIG_IGN) } == libc::SIG_ERR {
            return Err(io::Error::last_os_error());
        }
    }
    let set = SignalSet::init_signals();
    // SAFETY: `set` is a valid, initialised sigset_t.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, set.as_raw(), std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(set)
}

/// A non-blocking, close-on-exec signalfd reading the (blocked) signals in `set`.
pub fn signalfd(set: &SignalSet) -> io::Result<OwnedFd> {
    // SAFETY: the mask is valid; on success the returned descriptor is ours alone.
    let fd = unsafe { libc::signalfd(-1, set.as_raw(), libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a freshly created descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Gives the calling process default dispositions for every signal and an empty signal mask, so an
/// exec'd program starts as if launched by a shell (in particular SIGPIPE is no longer ignored, as
/// Rust's runtime left it). `max_signal` is `libc::SIGRTMAX()`, computed before `fork`.
///
/// # Safety
/// Meant for the child between `fork` and `exec`: it only makes async-signal-safe calls and never
/// allocates. Calling it in litevisor itself would unblock the signals the signalfd relies on.
pub(crate) unsafe fn reset_in_child(max_signal: libc::c_int) {
    // The raw system call rather than libc's sigaction: glibc refuses to touch its two internal
    // signals (32, 33), but one of them may arrive ignored from our own parent. An all-zero kernel
    // sigaction is SIG_DFL with no flags and an empty mask, whatever the architecture's field order.
    let default = [0u64; 4];
    for signal in 1..=max_signal {
        if signal != libc::SIGKILL && signal != libc::SIGSTOP {
            // SAFETY: rt_sigaction reads the (valid, zeroed) struct we pass and nothing else; it is a
            // plain system call, so async-signal-safe. Errors are ignored: nothing better to do.
            unsafe {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    signal,
                    default.as_ptr(),
                    std::ptr::null_mut::<u64>(),
                    8usize,
                )
            };
        }
    }
    // SAFETY: sigprocmask is async-signal-safe; the set lives on our stack.
    unsafe {
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    }
}

fn thread_count() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_set_excludes_faults_and_job_control_reads() {
        let set = SignalSet::init_signals();
        for taken in [
            libc::SIGTERM,
            libc::SIGINT,
            libc::SIGCHLD,
            libc::SIGPIPE,
            libc::SIGRTMIN(),
        ] {
            assert!(set.contains(taken), "signal {taken} should be taken over");
        }
        for left in [libc::SIGSEGV, libc::SIGTTOU, libc::SIGKILL, libc::SIGABRT] {
            assert!(!set.contains(left), "signal {left} should be left alone");
        }
    }
}
