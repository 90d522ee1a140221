//! Shared helpers of the ops_* tests (logs, status and errors, metrics and health): the real
//! litevisor binary started in a directory of its own, with its own control socket and its stdout and
//! stderr in files; `litevisor status --json` and `litevisor health` against it; a plain HTTP/1.1
//! GET for `/metrics` and `/healthz`.
#![allow(dead_code)]

#[allow(unused_imports)] // each test file uses a part of it
pub use crate::support::{free_port, wait_for};

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const LITEVISOR: &str = env!("CARGO_BIN_EXE_litevisor");

/// Every AWS_*/LITESTREAM_* variable is removed from a started litevisor, so only what a test
/// gives it counts (and no instance metadata lookup can hang it).
pub fn clean_env(cmd: &mut Command) {
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy().into_owned();
        if name.starts_with("AWS_")
            || name.starts_with("LITESTREAM_")
            || name.starts_with("LITEVISOR_")
            || name == "LOG_LEVEL"
        {
            cmd.env_remove(&name);
        }
    }
    cmd.env("AWS_EC2_METADATA_DISABLED", "true");
    cmd.env("AWS_CONFIG_FILE", "/nonexistent/aws-config");
    cmd.env(
        "AWS_SHARED_CREDENTIALS_FILE",
        "/nonexistent/aws-credentials",
    );
}

pub struct Lv {
    pub child: Child,
    pub dir: PathBuf,
    pub socket: PathBuf,
    out: PathBuf,
    err: PathBuf,
}

impl Lv {
    /// `litevisor ARGS` in `dir` with `envs` on top of a clean environment.
    pub fn start(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Lv {
        let n = unique();
        let socket = dir.join(format!("lv{n}.sock"));
        let out = dir.join(format!("lv{n}.stdout"));
        let err = dir.join(format!("lv{n}.stderr"));
        let mut cmd = Command::new(LITEVISOR);
        clean_env(&mut cmd);
        cmd.current_dir(dir)
            .args(args)
            .env("LITEVISOR_SOCKET", &socket)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap());
        let child = cmd.spawn().expect("spawn litevisor");
        Lv {
            child,
            dir: dir.to_path_buf(),
            socket,
            out,
            err,
        }
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill only sends a signal to our own child.
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// Waits for the exit; kills and fails after `limit`.
    pub fn wait(&mut self, limit: Duration) -> i32 {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or_else(|| {
                    use std::os::unix::process::ExitStatusExt;
                    128 + status.signal().unwrap_or(0)
                });
            }
            if start.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "litevisor did not exit within {limit:?}\nstdout:\n{}\nstderr:\n{}",
                    self.stdout(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then the exit code.
    pub fn stop(&mut self) -> i32 {
        self.signal(libc::SIGTERM);
        self.wait(Duration::from_secs(40))
    }

    /// SIGTERM; litevisor must exit 0. Returns its stderr.
    pub fn stop_ok(&mut self) -> String {
        assert_eq!(self.stop(), 0, "{}", self.stderr());
        self.stderr()
    }

    /// `litevisor status --json`, parsed; `None` while nobody answers.
    pub fn status(&self) -> Option<serde_json::Value> {
        let out = Command::new(LITEVISOR)
            .args(["status", "--json", "--socket"])
            .arg(&self.socket)
            .output()
            .unwrap();
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// The first database of the status, once `probe` accepts it.
    pub fn wait_db(
        &self,
        limit: Duration,
        probe: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let mut last = None;
        let found = wait_for(limit, || {
            let status = self.status()?;
            let db = status["databases"][0].clone();
            last = Some(status);
            probe(&db).then_some(db)
        });
        found.unwrap_or_else(|| {
            panic!(
                "the status never matched: {last:?}\nstderr:\n{}",
                self.stderr()
            )
        })
    }

    /// `litevisor health` against this instance: (exit code, output).
    pub fn health(&self) -> (i32, String) {
        let out = Command::new(LITEVISOR)
            .args(["health", "--socket"])
            .arg(&self.socket)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    }
}

impl Drop for Lv {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `litevisor ARGS` to its end: (exit code, stdout, stderr).
pub fn run(
    dir: &Path,
    args: &[&str],
    envs: &[(&str, &str)],
    limit: Duration,
) -> (i32, String, String) {
    let mut lv = Lv::start(dir, args, envs);
    let code = lv.wait(limit);
    (code, lv.stdout(), lv.stderr())
}

/// `GET path` over HTTP/1.1: (status code, body). `None` when nothing listens.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    Some((
        code,
        if chunked {
            dechunk(body)
        } else {
            body.to_string()
        },
    ))
}

/// The body of a chunked response (Go's server sends larger bodies that way).
fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

/// A SQLite database in WAL mode with one table.
pub fn make_db(path: &Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(path).unwrap();
    c.execute_batch("PRAGMA journal_mode=wal; PRAGMA busy_timeout=5000; CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v TEXT);")
        .unwrap();
    c
}

pub fn insert(c: &rusqlite::Connection, n: usize) {
    for _ in 0..n {
        c.execute("INSERT INTO t(v) VALUES ('row')", []).unwrap();
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    u64::from(std::process::id()) * 1000 + N.fetch_add(1, Ordering::Relaxed)
}

/// `text` (a log) says `what` exactly once; `when` says when it should.
#[track_caller]
pub fn assert_said_once(text: &str, what: &str, when: &str) {
    let n = text.matches(what).count();
    assert_eq!(n, 1, "{what:?} said {n} times, not once ({when}):\n{text}");
}
