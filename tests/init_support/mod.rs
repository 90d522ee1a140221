//! Shared helpers for the init tests: run the real litevisor binary either directly (subreaper mode)
//! or as PID 1 of a fresh PID namespace (`unshare --pid --fork --mount-proc`), find it in /proc,
//! signal it, and wait for conditions with generous timeouts.
#![allow(dead_code)]

#[allow(unused_imports)] // each test file uses a part of it
pub use crate::support::{BIN, signal, wait_exit, wait_for};

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Generous upper bound for anything that should be "prompt" on a loaded 2-core machine.
pub const PATIENCE: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// litevisor is a normal process (it makes itself a subreaper).
    Direct,
    /// litevisor is PID 1 of a new PID namespace.
    Pid1,
}

/// `litevisor ARGS...` in the given mode, with stdin from /dev/null and a clean logging environment.
pub fn litevisor(mode: Mode, args: &[&str]) -> Command {
    let mut cmd = match mode {
        Mode::Direct => Command::new(BIN),
        Mode::Pid1 => {
            let mut c = Command::new("unshare");
            c.args(["--pid", "--fork", "--mount-proc", "--kill-child", BIN]);
            c
        }
    };
    cmd.args(args);
    for var in ["LITEVISOR_GRACE", "LITEVISOR_LOG", "LOG_LEVEL"] {
        cmd.env_remove(var);
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// Makes the spawned litevisor inherit a hostile signal state (SIGPIPE and SIGUSR2 ignored, SIGUSR1
/// and SIGHUP blocked) and a descriptor 7 without close-on-exec, so tests can check that none of it
/// reaches litevisor's child.
pub fn with_dirty_inheritance(cmd: &mut Command) {
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
            libc::signal(libc::SIGUSR2, libc::SIG_IGN);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGUSR1);
            libc::sigaddset(&mut set, libc::SIGHUP);
            libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            let fd = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY);
            if fd >= 0 && fd != 7 {
                libc::dup2(fd, 7);
                libc::close(fd);
            }
            Ok(())
        });
    }
}

/// The pid of the litevisor process for `child` (in the PID-1 mode, unshare's forked child).
pub fn litevisor_pid(mode: Mode, child: &Child) -> i32 {
    let launcher = child.id() as i32;
    match mode {
        Mode::Direct => launcher,
        Mode::Pid1 => {
            let found = wait_for(PATIENCE, || {
                children_of(launcher).into_iter().find(|p| {
                    std::fs::read_link(format!("/proc/{p}/exe")).is_ok_and(|e| e == Path::new(BIN))
                })
            });
            found.expect("litevisor did not appear under unshare")
        }
    }
}

/// One process as seen in /proc/PID/stat.
#[derive(Clone, Debug)]
pub struct Stat {
    pub pid: i32,
    pub state: char,
    pub ppid: i32,
    pub pgrp: i32,
    pub session: i32,
    pub tpgid: i32,
}

pub fn parse_stat(text: &str) -> Option<Stat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let pid = text[..open].trim().parse().ok()?;
    let f: Vec<&str> = text[close + 1..].split_whitespace().collect();
    Some(Stat {
        pid,
        state: f.first()?.chars().next()?,
        ppid: f.get(1)?.parse().ok()?,
        pgrp: f.get(2)?.parse().ok()?,
        session: f.get(3)?.parse().ok()?,
        tpgid: f.get(5)?.parse().ok()?,
    })
}

pub fn stat(pid: i32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

pub fn all_processes() -> Vec<Stat> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(stat)
        .collect()
}

pub fn children_of(pid: i32) -> Vec<i32> {
    all_processes()
        .into_iter()
        .filter(|s| s.ppid == pid)
        .map(|s| s.pid)
        .collect()
}

/// Whether `pid` still exists as a process that has not yet been reaped-or-is-running (zombies count
/// as gone only once reaped).
pub fn exists(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Runs to completion and returns (exit code, stdout, stderr).
pub fn run(mut cmd: Command) -> (i32, String, String) {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().expect("spawn litevisor");
    let out = wait_output(child, PATIENCE);
    (
        out.status.code().expect("litevisor was killed by a signal"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn wait_output(child: Child, limit: Duration) -> std::process::Output {
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("wait for litevisor"),
        Err(_) => {
            // SAFETY: kill has no memory-safety requirements.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("litevisor did not finish within {limit:?}");
        }
    }
}

/// A scratch directory removed at drop.
pub fn scratch() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

pub fn file_in(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

/// Kills a child on drop, with everything below it, so a failing assertion never leaves a
/// litevisor, its namespace or its children behind.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_some() {
            return;
        }
        let root = self.0.id() as i32;
        let mut doomed = vec![root];
        let mut i = 0;
        let processes = all_processes();
        while i < doomed.len() {
            let parent = doomed[i];
            doomed.extend(processes.iter().filter(|s| s.ppid == parent).map(|s| s.pid));
            i += 1;
        }
        for pid in doomed.into_iter().rev() {
            // SAFETY: kill has no memory-safety requirements.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let _ = self.0.wait();
    }
}
