//! Starting child processes: `fork` + `execve` with the hygiene an init owes its children, and
//! registration in the reaper so the exit status reaches the owner.
//!
//! Why not `std::process::Command`: its `Child` wants to reap its own pid (`wait`, `try_wait`, and
//! `spawn` itself reaps when exec fails), which races with our single `waitpid(-1)`. Doing fork/exec
//! here keeps the reaper the only one who waits, and lets us register the pid under the reaper's lock.
//!
//! Everything the child needs (argv, envp, the PATH candidates, the cwd) is built before `fork`. The
//! child then only makes async-signal-safe system calls, in this order:
//! 1. session: `setsid`, or its own process group (made the terminal's foreground group if asked),
//! 2. stdio: `dup2` the requested descriptors onto 0, 1, 2,
//! 3. `chdir`, then `setgroups`/`setgid`/`setuid` if a user is given,
//! 4. marks every descriptor >= 3 close-on-exec (`close_range`, or a `fcntl` loop on old kernels),
//!    then `dup2`s the passed descriptors ([`ChildSpec::pass_fd`]) onto their numbers,
//! 5. the signal state litevisor was started with: ignored signals stay ignored, blocked ones stay
//!    blocked, every other signal gets its default action ([`signals::Inherited`]),
//! 6. `execve` on each PATH candidate in turn (what `execvp` does, minus its allocations).
//!
//! Any failure is reported to the parent as (step, errno) through a close-on-exec pipe, then the child
//! `_exit(127)`s. EOF on that pipe means exec succeeded.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use nix::unistd::Pid;

use super::reaper::{self, ForkGuard};
use super::signals;
use super::status::ExitStatus;
use crate::config::{DEFAULT_PATH, SELF_EXE, SELF_PROGRAM};

/// What to put on one of the child's descriptors 0, 1, 2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stdio {
    /// Keep litevisor's own descriptor.
    Inherit,
    /// `/dev/null`.
    Null,
    /// This open descriptor of ours (it must stay open until `spawn` returns).
    Fd(RawFd),
}

/// Which session and process group the child runs in. Signals from litevisor go to the whole group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Session {
    /// A new session without a controlling terminal (`setsid`); the child leads its group.
    New,
    /// Its own process group, made the foreground group of the terminal `tty` (`tcsetpgrp`). For
    /// interactive use: ^C and ^Z from the terminal reach the child directly.
    Foreground { tty: RawFd },
    /// Its own process group in litevisor's session.
    Group,
    /// litevisor's own group and session.
    Inherit,
}

/// Everything needed to start one program.
#[derive(Clone, Debug)]
pub struct ChildSpec {
    program: OsString,
    argv: Vec<OsString>,
    env: Option<Vec<(OsString, OsString)>>,
    cwd: Option<PathBuf>,
    stdio: [Stdio; 3],
    session: Session,
    user: Option<(u32, u32)>,
    groups: Option<Vec<u32>>,
    /// (target, source): our descriptor `source` becomes the child's descriptor `target` (>= 3).
    extra_fds: Vec<(RawFd, RawFd)>,
}

impl ChildSpec {
    /// Runs `program` (searched in PATH unless it contains a `/`) with `argv[0] = program`.
    pub fn new(program: impl Into<OsString>) -> Self {
        let program = program.into();
        Self {
            argv: vec![program.clone()],
            program,
            env: None,
            cwd: None,
            stdio: [Stdio::Inherit; 3],
            session: Session::New,
            user: None,
            groups: None,
            extra_fds: Vec::new(),
        }
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.argv.push(arg.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, args: I) -> Self {
        self.argv.extend(args.into_iter().map(Into::into));
        self
    }

    /// Replaces the environment (default: litevisor's environment at spawn time). PATH lookup of the
    /// program uses the new environment's PATH.
    pub fn env(mut self, vars: Vec<(OsString, OsString)>) -> Self {
        self.env = Some(vars);
        self
    }

    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    pub fn stdin(mut self, io: Stdio) -> Self {
        self.stdio[0] = io;
        self
    }

    pub fn stdout(mut self, io: Stdio) -> Self {
        self.stdio[1] = io;
        self
    }

    pub fn stderr(mut self, io: Stdio) -> Self {
        self.stdio[2] = io;
        self
    }

    pub fn session(mut self, session: Session) -> Self {
        self.session = session;
        self
    }

    /// Runs as `uid`/`gid` with `gid` as the only supplementary group.
    pub fn user(mut self, uid: u32, gid: u32) -> Self {
        self.user = Some((uid, gid));
        self
    }

    /// Supplementary groups to set with [`ChildSpec::user`] (instead of just its `gid`).
    pub fn groups(mut self, groups: Vec<u32>) -> Self {
        self.groups = Some(groups);
        self
    }

    /// Passes our open descriptor `source` to the child as descriptor `target` (3 or more), e.g. the
    /// write end of an s6 readiness pipe. `source` must stay open until `spawn` returns.
    pub fn pass_fd(mut self, target: RawFd, source: RawFd) -> Self {
        self.extra_fds.push((target, source));
        self
    }

    pub fn program(&self) -> &OsStr {
        &self.program
    }
}

/// The step of the child's set-up that failed; reported through the exec-status pipe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Step {
    Session = 1,
    Stdio,
    Chdir,
    User,
    Exec,
}

impl Step {
    fn from_byte(byte: u8) -> Self {
        match byte {
            1 => Self::Session,
            2 => Self::Stdio,
            3 => Self::Chdir,
            4 => Self::User,
            _ => Self::Exec,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::Session => "cannot create the session/process group of",
            Self::Stdio => "cannot set up stdin/stdout/stderr of",
            Self::Chdir => "cannot change to the working directory of",
            Self::User => "cannot switch user for",
            Self::Exec => "cannot execute",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot run {program:?}: {reason}")]
    Invalid {
        program: OsString,
        reason: &'static str,
    },
    #[error("{step_text} {program:?}: {source}", step_text = step.describe())]
    Child {
        program: OsString,
        step: Step,
        #[source]
        source: io::Error,
    },
    #[error("cannot start {program:?}: {source}")]
    Parent {
        program: OsString,
        #[source]
        source: io::Error,
    },
}

impl SpawnError {
    /// The exit code a shell would give: 127 when the program does not exist, 126 when it exists but
    /// cannot be run (permissions, format, set-up failure).
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Child {
                step: Step::Exec,
                source,
                ..
            } if matches!(source.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => 127,
            Self::Invalid { .. } => 127,
            _ => 126,
        }
    }
}

/// Starts `spec` and registers `on_exit`, which the reaper calls exactly once with the exit status
/// (from the reaping thread: it must not block). Returns after the child has exec'd, or with the
/// error the child reported, in which case `on_exit` is dropped uncalled and the child is reaped
/// silently. Blocks only for the fork-to-exec window; from async code call it via `spawn_blocking`.
pub fn spawn<F>(spec: &ChildSpec, on_exit: F) -> Result<Pid, SpawnError>
where
    F: FnOnce(Pid, ExitStatus) + Send + 'static,
{
    let plan = Plan::new(spec)?;
    let parent_err = |source| SpawnError::Parent {
        program: spec.program.clone(),
        source,
    };
    let (report_rx, report_tx) = cloexec_pipe().map_err(parent_err)?;

    let guard = ForkGuard::lock();
    // SAFETY: the child branch below runs only async-signal-safe code on pre-built data and never
    // returns; the parent keeps the registry locked until the pid is registered.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: we are the freshly forked child.
        unsafe { plan.exec_in_child(report_tx.as_raw_fd()) }
    }
    if pid < 0 {
        return Err(parent_err(io::Error::last_os_error()));
    }
    let pid = Pid::from_raw(pid);
    guard.register(pid);
    drop(report_tx);

    if matches!(spec.session, Session::Foreground { .. } | Session::Group) {
        // Also done by the child; doing it here too (like a shell) means the group exists as soon as
        // we return, whichever process runs first. Errors just mean the child won the race.
        let _ = nix::unistd::setpgid(pid, pid);
    }
    if let Session::Foreground { tty } = spec.session {
        // SAFETY: tcsetpgrp on a caller-provided descriptor; failure is tolerated (see the child).
        let _ = unsafe { libc::tcsetpgrp(tty, pid.as_raw()) };
    }

    match read_report(&report_rx) {
        Ok(None) => {
            reaper::finish_start(pid, Some(Box::new(on_exit)));
            Ok(pid)
        }
        Ok(Some((step, errno))) => {
            reaper::finish_start(pid, None);
            Err(SpawnError::Child {
                program: spec.program.clone(),
                step,
                source: io::Error::from_raw_os_error(errno),
            })
        }
        Err(source) => {
            // We cannot tell whether it runs; treat it as started so its exit is still delivered.
            reaper::finish_start(pid, Some(Box::new(on_exit)));
            tracing::debug!(%pid, %source, "lost the exec report of a child");
            Ok(pid)
        }
    }
}

/// The child's whole program, prepared before `fork` so the child never allocates.
struct Plan {
    candidates: Vec<CString>,
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    _envp: Vec<CString>,
    envp_ptrs: Vec<*const libc::c_char>,
    cwd: Option<CString>,
    stdio: [Stdio; 3],
    session: Session,
    user: Option<(u32, u32)>,
    groups: Vec<libc::gid_t>,
    extra_fds: Vec<(RawFd, RawFd)>,
    signals: signals::Inherited,
    max_signal: libc::c_int,
    max_fd: libc::c_int,
}

impl Plan {
    fn new(spec: &ChildSpec) -> Result<Self, SpawnError> {
        let invalid = |reason| SpawnError::Invalid {
            program: spec.program.clone(),
            reason,
        };
        let cstr =
            |s: &OsStr| CString::new(s.as_bytes()).map_err(|_| invalid("contains a NUL byte"));
        if spec.program.is_empty() {
            return Err(invalid("empty program name"));
        }
        let argv = spec
            .argv
            .iter()
            .map(|a| cstr(a))
            .collect::<Result<Vec<_>, _>>()?;
        let env: Vec<(OsString, OsString)> = match &spec.env {
            Some(vars) => vars.clone(),
            None => std::env::vars_os().collect(),
        };
        let envp = env
            .iter()
            .map(|(k, v)| {
                let mut kv = k.as_bytes().to_vec();
                kv.push(b'=');
                kv.extend_from_slice(v.as_bytes());
                CString::new(kv).map_err(|_| invalid("environment contains a NUL byte"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let path = env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.as_os_str());
        let candidates = exec_candidates(&spec.program, path)
            .iter()
            .map(|c| cstr(c))
            .collect::<Result<Vec<_>, _>>()?;
        let cwd = spec.cwd.as_ref().map(|d| cstr(d.as_os_str())).transpose()?;
        if spec.extra_fds.len() > 8
            || spec
                .extra_fds
                .iter()
                .any(|&(target, source)| target < 3 || source < 0)
        {
            return Err(invalid("at most 8 passed descriptors, each 3 or more"));
        }
        let groups = match (&spec.groups, spec.user) {
            (Some(groups), _) => groups.clone(),
            (None, Some((_, gid))) => vec![gid],
            (None, None) => Vec::new(),
        };
        let nul_terminated = |v: &[CString]| {
            v.iter()
                .map(|s| s.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect::<Vec<_>>()
        };
        Ok(Self {
            candidates,
            argv_ptrs: nul_terminated(&argv),
            _argv: argv,
            envp_ptrs: nul_terminated(&envp),
            _envp: envp,
            cwd,
            stdio: spec.stdio,
            session: spec.session,
            user: spec.user,
            groups,
            extra_fds: spec.extra_fds.clone(),
            signals: signals::Inherited::at_start().for_children(),
            max_signal: libc::SIGRTMAX(),
            max_fd: fd_limit(),
        })
    }

    /// # Safety
    /// Only in a freshly forked child. Never returns.
    unsafe fn exec_in_child(&self, report: RawFd) -> ! {
        // SAFETY (whole body): async-signal-safe system calls on memory prepared before fork.
        unsafe {
            // Passed descriptors (and the report pipe) move above every target first, so that no
            // dup2 below can clobber the source of another.
            let above = self
                .extra_fds
                .iter()
                .map(|&(t, _)| t + 1)
                .max()
                .unwrap_or(3);
            let report = if self.extra_fds.is_empty() {
                report
            } else {
                let moved = libc::fcntl(report, libc::F_DUPFD_CLOEXEC, above);
                if moved < 0 { report } else { moved }
            };
            let fail = |step: Step, errno: libc::c_int| -> ! {
                let mut msg = [0u8; 5];
                msg[0] = step as u8;
                msg[1..].copy_from_slice(&errno.to_le_bytes());
                libc::write(report, msg.as_ptr().cast(), msg.len());
                libc::_exit(127)
            };
            let errno = || *libc::__errno_location();

            let mut moved_fds = [-1 as RawFd; 8];
            for (slot, &(_, source)) in moved_fds.iter_mut().zip(&self.extra_fds) {
                *slot = libc::fcntl(source, libc::F_DUPFD_CLOEXEC, above);
                if *slot < 0 {
                    fail(Step::Stdio, errno());
                }
            }

            match self.session {
                Session::New => {
                    if libc::setsid() < 0 {
                        fail(Step::Session, errno());
                    }
                }
                Session::Foreground { tty } => {
                    if libc::setpgid(0, 0) < 0 {
                        fail(Step::Session, errno());
                    }
                    // SIGTTOU is still ignored (inherited from litevisor), so a background group may
                    // take the terminal. No terminal after all (ENOTTY, ENXIO) is fine.
                    if libc::tcsetpgrp(tty, libc::getpid()) < 0
                        && !matches!(errno(), libc::ENOTTY | libc::ENXIO | libc::EBADF)
                    {
                        fail(Step::Session, errno());
                    }
                }
                Session::Group => {
                    if libc::setpgid(0, 0) < 0 {
                        fail(Step::Session, errno());
                    }
                }
                Session::Inherit => {}
            }

            // Move caller descriptors that sit in 0..=2 out of the way first, so that one dup2 cannot
            // clobber the source of another.
            let mut sources = [-1 as RawFd; 3];
            for (target, io) in self.stdio.iter().enumerate() {
                sources[target] = match *io {
                    Stdio::Inherit => -1,
                    Stdio::Null => {
                        libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC)
                    }
                    Stdio::Fd(fd) if fd <= 2 => libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3),
                    Stdio::Fd(fd) => fd,
                };
                if *io != Stdio::Inherit && sources[target] < 0 {
                    fail(Step::Stdio, errno());
                }
            }
            for (target, &source) in sources.iter().enumerate() {
                if source >= 0 && libc::dup2(source, target as RawFd) < 0 {
                    fail(Step::Stdio, errno());
                }
            }

            if let Some(cwd) = &self.cwd
                && libc::chdir(cwd.as_ptr()) < 0
            {
                fail(Step::Chdir, errno());
            }
            if let Some((uid, gid)) = self.user
                && (libc::setgroups(self.groups.len(), self.groups.as_ptr()) < 0
                    || libc::setgid(gid) < 0
                    || libc::setuid(uid) < 0)
            {
                fail(Step::User, errno());
            }

            // Belt and braces: whatever litevisor or a library opened without O_CLOEXEC stays here.
            if libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            ) < 0
            {
                for fd in 3..self.max_fd {
                    libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
                }
            }

            // After the close-on-exec sweep: dup2 leaves each target open across exec.
            for (&moved, &(target, _)) in moved_fds.iter().zip(&self.extra_fds) {
                if libc::dup2(moved, target) < 0 {
                    fail(Step::Stdio, errno());
                }
            }

            self.signals.apply_in_child(self.max_signal);

            let mut result = libc::ENOENT;
            for candidate in &self.candidates {
                libc::execve(
                    candidate.as_ptr(),
                    self.argv_ptrs.as_ptr(),
                    self.envp_ptrs.as_ptr(),
                );
                match errno() {
                    // Not here: keep looking, like execvp. Remember EACCES so "found but not
                    // executable" wins over "not found" in the end.
                    libc::ENOENT | libc::ENOTDIR => {}
                    libc::EACCES => result = libc::EACCES,
                    other => {
                        result = other;
                        break;
                    }
                }
            }
            fail(Step::Exec, result)
        }
    }
}

/// Paths to try for `program`: itself if it contains a `/`, else each PATH directory in order.
/// [`SELF_PROGRAM`] is litevisor's own binary first ([`SELF_EXE`]), then the PATH search (in case
/// `/proc` is not mounted).
fn exec_candidates(program: &OsStr, path: Option<&OsStr>) -> Vec<OsString> {
    if program.as_bytes().contains(&b'/') {
        return vec![program.to_owned()];
    }
    let own_binary = (program == SELF_PROGRAM).then(|| OsString::from(SELF_EXE));
    let path = path.map_or(DEFAULT_PATH.as_bytes(), |p| p.as_bytes());
    let search = path.split(|b| *b == b':').map(|dir| {
        let mut full = if dir.is_empty() {
            b".".to_vec()
        } else {
            dir.to_vec()
        };
        full.push(b'/');
        full.extend_from_slice(program.as_bytes());
        OsString::from(OsStr::from_bytes(&full))
    });
    own_binary.into_iter().chain(search).collect()
}

fn fd_limit() -> libc::c_int {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    // Only used by the fallback loop on kernels without close_range; cap it to keep that bounded.
    if ok {
        limit.rlim_cur.min(65_536) as libc::c_int
    } else {
        1024
    }
}

fn cloexec_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors are fresh and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// `None` when the pipe closed without a word (exec succeeded), else the child's (step, errno).
fn read_report(pipe: &OwnedFd) -> io::Result<Option<(Step, i32)>> {
    let mut msg = [0u8; 5];
    let mut filled = 0;
    while filled < msg.len() {
        // SAFETY: reading into the unfilled tail of our stack buffer.
        let n = unsafe {
            libc::read(
                pipe.as_raw_fd(),
                msg[filled..].as_mut_ptr().cast(),
                msg.len() - filled,
            )
        };
        match n {
            0 => break,
            n if n > 0 => filled += n as usize,
            _ => {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(err);
                }
            }
        }
    }
    match filled {
        0 => Ok(None),
        5 => {
            let errno = i32::from_le_bytes([msg[1], msg[2], msg[3], msg[4]]);
            Ok(Some((Step::from_byte(msg[0]), errno)))
        }
        _ => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "truncated exec report",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_search_candidates_follow_path_order() {
        let c = exec_candidates(OsStr::new("app"), Some(OsStr::new("/a::/b")));
        assert_eq!(c, ["/a/app", "./app", "/b/app"]);
        assert_eq!(
            exec_candidates(OsStr::new("./x"), Some(OsStr::new("/a"))),
            ["./x"]
        );
    }

    #[test]
    fn litevisor_is_its_own_binary_first() {
        let c = exec_candidates(OsStr::new("litevisor"), Some(OsStr::new("/a")));
        assert_eq!(c, ["/proc/self/exe", "/a/litevisor"]);
        let c = exec_candidates(OsStr::new("./litevisor"), Some(OsStr::new("/a")));
        assert_eq!(c, ["./litevisor"]);
    }

    #[test]
    fn exit_codes_follow_the_shell() {
        let err = |step, errno| SpawnError::Child {
            program: "p".into(),
            step,
            source: io::Error::from_raw_os_error(errno),
        };
        assert_eq!(err(Step::Exec, libc::ENOENT).exit_code(), 127);
        assert_eq!(err(Step::Exec, libc::EACCES).exit_code(), 126);
        assert_eq!(err(Step::Chdir, libc::ENOENT).exit_code(), 126);
    }
}
