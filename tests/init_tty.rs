//! Terminal behaviour, under a real pseudo-terminal from util-linux `script`: the child becomes the
//! terminal's foreground process group (in litevisor's session), ^C from the terminal reaches it, and
//! ^Z stops the child and then litevisor itself (not PID 1), which resumes both on SIGCONT.

mod support;

mod init_support;

use init_support::{BIN, PATIENCE, all_processes, parse_stat, stat, wait_exit, wait_for};
use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};

/// `litevisor -- sh -c SCRIPT` on a fresh pty. stdin stays open (a pipe) so `script` keeps running.
struct OnTerminal {
    child: Child,
    stdin: ChildStdin,
    output: Arc<Mutex<String>>,
}

impl OnTerminal {
    fn start(script: &str) -> Self {
        let quoted = script.replace('\'', r"'\''");
        // Not `exec`: the non-interactive sh in between ignores stops, like a plain parent process.
        let line = format!("{BIN} -- sh -c '{quoted}'; exit $?");
        let mut child = Command::new("script")
            .args(["-q", "-e", "-c", &line, "/dev/null"])
            .env("SHELL", "/bin/sh")
            .env_remove("LITEVISOR_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn script(1)");
        let stdin = child.stdin.take().expect("stdin");
        let mut stdout = child.stdout.take().expect("stdout");
        let output = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&output);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Self {
            child,
            stdin,
            output,
        }
    }

    fn wait_output(&self, needle: &str) -> String {
        let found = wait_for(PATIENCE, || {
            let out = self.output.lock().unwrap();
            out.contains(needle).then(|| out.clone())
        });
        found
            .unwrap_or_else(|| panic!("no {needle:?} in output: {:?}", self.output.lock().unwrap()))
    }

    fn type_bytes(&mut self, bytes: &[u8]) {
        self.stdin.write_all(bytes).expect("write to script");
        self.stdin.flush().expect("flush");
    }

    /// The litevisor process running under this `script`.
    fn litevisor_pid(&self) -> i32 {
        let found = wait_for(PATIENCE, || {
            all_processes().into_iter().map(|s| s.pid).find(|&p| {
                std::fs::read_link(format!("/proc/{p}/exe"))
                    .is_ok_and(|e| e == std::path::Path::new(BIN))
                    && is_descendant(p, self.child.id() as i32)
            })
        });
        found.expect("litevisor under script")
    }
}

impl Drop for OnTerminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn is_descendant(mut pid: i32, ancestor: i32) -> bool {
    for _ in 0..16 {
        match stat(pid) {
            Some(s) if s.ppid == ancestor => return true,
            Some(s) if s.ppid > 1 => pid = s.ppid,
            _ => return false,
        }
    }
    false
}

#[test]
fn with_a_tty_the_child_is_the_foreground_group() {
    let mut term = OnTerminal::start("cat /proc/$$/stat; echo END; read x");
    let out = term.wait_output("END");
    let line = out.lines().find(|l| l.contains("(sh)")).expect("stat line");
    let child = parse_stat(line.trim()).expect("parse stat");
    assert_eq!(
        child.pgrp, child.pid,
        "the child leads its own process group: {line}"
    );
    assert_eq!(
        child.tpgid, child.pgrp,
        "and that group owns the terminal: {line}"
    );
    assert_ne!(
        child.session, child.pid,
        "no new session: it keeps the controlling terminal: {line}"
    );
    term.type_bytes(b"\n");
    let status = wait_exit(&mut term.child, PATIENCE);
    assert_eq!(status.code(), Some(0));
}

#[test]
fn ctrl_c_on_the_terminal_reaches_the_child() {
    let mut term = OnTerminal::start("trap 'exit 5' INT; echo READY; while :; do sleep 1; done");
    term.wait_output("READY");
    term.type_bytes(b"\x03");
    let status = wait_exit(&mut term.child, PATIENCE);
    assert_eq!(
        status.code(),
        Some(5),
        "the child's INT trap ran: {:?}",
        term.output.lock().unwrap()
    );
}

#[test]
fn ctrl_z_stops_child_and_litevisor_and_sigcont_resumes_both() {
    let mut term = OnTerminal::start("trap 'exit 6' INT; echo READY; while :; do sleep 1; done");
    term.wait_output("READY");
    let litevisor = term.litevisor_pid();
    term.type_bytes(b"\x1a");
    let stopped = wait_for(PATIENCE, || stat(litevisor).filter(|s| s.state == 'T'));
    assert!(
        stopped.is_some(),
        "litevisor follows its stopped child into the background"
    );

    init_support::signal(litevisor, libc::SIGCONT);
    let resumed = wait_for(PATIENCE, || stat(litevisor).filter(|s| s.state != 'T'));
    assert!(resumed.is_some(), "litevisor resumes on SIGCONT");
    // The child was continued too and still owns the terminal: ^C reaches its trap.
    let running = wait_for(PATIENCE, || {
        let kids: Vec<_> = all_processes()
            .into_iter()
            .filter(|s| s.ppid == litevisor)
            .collect();
        kids.iter().all(|s| s.state != 'T').then_some(())
    });
    assert!(running.is_some(), "the child was continued");
    term.type_bytes(b"\x03");
    let status = wait_exit(&mut term.child, PATIENCE);
    assert_eq!(status.code(), Some(6), "{:?}", term.output.lock().unwrap());
}
