//! Signal ownership: litevisor takes every catchable signal away from asynchronous delivery and reads
//! it from a `signalfd` instead, so no handler ever runs and nothing in the signal path can re-enter.
//!
//! Order matters: [`take_over`] must run on the main thread before any other thread exists, because
//! threads inherit the creator's signal mask. A thread spawned earlier would keep the signals unblocked
//! and the kernel could deliver one there (default action: often death), bypassing the signalfd.
//!
//! Children must not inherit any of this. They get the signal state litevisor itself was started
//! with, as tini does: [`Inherited`] is recorded before `main` (before Rust's runtime ignores SIGPIPE
//! and before litevisor blocks anything), and [`Inherited::apply_in_child`] restores it between
//! `fork` and `exec`: the signals that were ignored stay ignored (`nohup litevisor -- prog`: prog
//! ignores SIGHUP), those that were blocked stay blocked, everything else gets its default action.
//! One deliberate exception: an ignored SIGCHLD is not passed on (nor kept by litevisor, see
//! [`take_over`]), because it makes the kernel reap children behind their parent's back.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

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
/// Call it first thing in `main`'s thread, before starting a tokio runtime or any other thread. Debug
/// builds (the tests) check that: it fails if the process already has more than one thread, since
/// those would keep receiving signals. Release builds skip the check, which reads /proc at every
/// start.
pub fn take_over() -> io::Result<SignalSet> {
    if cfg!(debug_assertions)
        && let Some(threads) = thread_count()
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
    // Started with SIGCHLD ignored (or SA_NOCLDWAIT), the kernel would reap our children itself and
    // no exit status would ever reach us: the main program's end would go unnoticed forever.
    // SAFETY: installing SIG_DFL has no memory-safety requirements; it also clears SA_NOCLDWAIT.
    if unsafe { libc::signal(libc::SIGCHLD, libc::SIG_DFL) } == libc::SIG_ERR {
        return Err(io::Error::last_os_error());
    }
    let set = SignalSet::init_signals();
    // SAFETY: `set` is a valid, initialised sigset_t.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, set.as_raw(), std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(set)
}

/// Asks the kernel to send `signal` to litevisor when its parent dies (`PR_SET_PDEATHSIG`, tini's
/// `-p`). Like any other signal it then arrives on the signalfd: forwarded to the children, and a
/// stop signal starts the shutdown. If the parent died while this was being set up, the signal is
/// raised at once, since the kernel would never send it.
pub fn on_parent_death(signal: libc::c_int) -> io::Result<()> {
    // SAFETY: getppid/prctl/kill take and return plain integers.
    unsafe {
        let parent = libc::getppid();
        if libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong, 0, 0, 0) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::getppid() != parent {
            libc::kill(libc::getpid(), signal);
        }
    }
    Ok(())
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

/// The signal state litevisor was started with: the blocked mask and the ignored dispositions of
/// signals 1 to 64, as a bit per signal (bit `N - 1` for signal N).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Inherited {
    pub blocked: u64,
    pub ignored: u64,
}

static INHERITED_BLOCKED: AtomicU64 = AtomicU64::new(0);
static INHERITED_IGNORED: AtomicU64 = AtomicU64::new(0);
static INHERITED_RECORDED: AtomicBool = AtomicBool::new(false);

/// Runs before `main`, from the executable's constructors: Rust's runtime ignores SIGPIPE before
/// `main` starts, so the parent's SIGPIPE disposition is only visible here.
#[used]
#[unsafe(link_section = ".init_array")]
static RECORD_INHERITED: extern "C" fn() = record_inherited;

extern "C" fn record_inherited() {
    let mut blocked = 0u64;
    let mut ignored = 0u64;
    // SAFETY: plain queries into zeroed structs we own; no allocation, nothing else runs yet.
    unsafe {
        let mut mask: libc::sigset_t = std::mem::zeroed();
        if libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut mask) == 0 {
            for signal in 1..=64 {
                if libc::sigismember(&mask, signal) == 1 {
                    blocked |= bit(signal);
                }
            }
        }
        for signal in 1..=64 {
            let mut action: libc::sigaction = std::mem::zeroed();
            // glibc refuses its internal signals (EINVAL): they count as not ignored.
            if libc::sigaction(signal, std::ptr::null(), &mut action) == 0
                && action.sa_sigaction == libc::SIG_IGN
            {
                ignored |= bit(signal);
            }
        }
    }
    INHERITED_BLOCKED.store(blocked, Ordering::Relaxed);
    INHERITED_IGNORED.store(ignored, Ordering::Relaxed);
    INHERITED_RECORDED.store(true, Ordering::Release);
}

fn bit(signal: libc::c_int) -> u64 {
    1u64 << (signal - 1)
}

impl Inherited {
    /// What the process was started with (recorded before `main`); empty if the record is missing.
    pub fn at_start() -> Self {
        if !INHERITED_RECORDED.load(Ordering::Acquire) {
            return Self::default();
        }
        Self {
            blocked: INHERITED_BLOCKED.load(Ordering::Relaxed),
            ignored: INHERITED_IGNORED.load(Ordering::Relaxed),
        }
    }

    /// What children get: the same, minus an ignored SIGCHLD (see the module comment) and anything
    /// that cannot be blocked or ignored.
    pub fn for_children(self) -> Self {
        let never = bit(libc::SIGKILL) | bit(libc::SIGSTOP);
        Self {
            blocked: self.blocked & !never,
            ignored: self.ignored & !never & !bit(libc::SIGCHLD),
        }
    }

    pub fn is_blocked(self, signal: libc::c_int) -> bool {
        (1..=64).contains(&signal) && self.blocked & bit(signal) != 0
    }

    pub fn is_ignored(self, signal: libc::c_int) -> bool {
        (1..=64).contains(&signal) && self.ignored & bit(signal) != 0
    }

    /// Gives the calling process this state: the signals in `ignored` ignored, every other signal
    /// its default action (in particular SIGPIPE, which Rust's runtime ignores, unless the parent
    /// ignored it too), and exactly the `blocked` mask. `max_signal` is `libc::SIGRTMAX()`,
    /// computed before `fork`.
    ///
    /// # Safety
    /// Meant for the child between `fork` and `exec`: it only makes async-signal-safe calls and never
    /// allocates. Calling it in litevisor itself would unblock the signals the signalfd relies on.
    pub(crate) unsafe fn apply_in_child(self, max_signal: libc::c_int) {
        // The raw system call rather than libc's sigaction: glibc refuses to touch its two internal
        // signals (32, 33), but one of them may arrive ignored from our own parent. An all-zero
        // kernel sigaction is SIG_DFL with no flags and an empty mask, whatever the architecture's
        // field order.
        let default = [0u64; 4];
        for signal in 1..=max_signal {
            if signal == libc::SIGKILL || signal == libc::SIGSTOP {
                continue;
            }
            if self.is_ignored(signal) {
                // SAFETY: sigaction is async-signal-safe; the struct lives on our stack.
                unsafe {
                    let mut ignore: libc::sigaction = std::mem::zeroed();
                    ignore.sa_sigaction = libc::SIG_IGN;
                    libc::sigaction(signal, &ignore, std::ptr::null_mut());
                }
            } else {
                // SAFETY: rt_sigaction reads the (valid, zeroed) struct we pass and nothing else; it
                // is a plain system call, so async-signal-safe. Errors are ignored: nothing better
                // to do.
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
        // SAFETY: sigemptyset/sigaddset only write the set on our stack; sigprocmask is
        // async-signal-safe.
        unsafe {
            let mut mask: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut mask);
            for signal in 1..=max_signal.min(64) {
                if self.is_blocked(signal) {
                    libc::sigaddset(&mut mask, signal);
                }
            }
            libc::sigprocmask(libc::SIG_SETMASK, &mask, std::ptr::null_mut());
        }
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
