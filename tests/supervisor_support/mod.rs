//! Shared helpers for the supervisor tests: a scratch directory with a `litevisor.toml`, litevisor
//! run on it (directly as a subreaper, or as PID 1 of a fresh PID namespace) with stdout and stderr
//! captured to files, an events file the services append to (append order = real order), and
//! patient waiting.
#![allow(dead_code)]

#[allow(unused_imports)] // each test file uses a part of it
pub use crate::support::{BIN, alive, children_of, cpu_ticks, parent, wait_exit, wait_for};

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// Generous bound for anything that should happen "soon" on a loaded 2-core machine.
pub const PATIENCE: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Direct,
    Pid1,
}

pub struct Setup {
    pub dir: tempfile::TempDir,
}

impl Setup {
    /// A scratch directory holding `litevisor.toml` with `config`; `$EV` in the config text is
    /// replaced by the events file's path, `$DIR` by the directory.
    pub fn new(config: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let setup = Self { dir };
        setup.write("litevisor.toml", config);
        setup
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn events_path(&self) -> PathBuf {
        self.file("events")
    }

    /// Writes a file, expanding `$EV` and `$DIR`.
    pub fn write(&self, name: &str, text: &str) {
        let path = self.file(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        let text = text
            .replace("$EV", &self.events_path().display().to_string())
            .replace("$DIR", &self.path().display().to_string());
        std::fs::write(&path, text).expect("write");
    }

    pub fn write_exec(&self, name: &str, text: &str) {
        use std::os::unix::fs::PermissionsExt;
        self.write(name, text);
        std::fs::set_permissions(self.file(name), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
    }

    /// Lines of the events file so far.
    pub fn events(&self) -> Vec<String> {
        read_lines(&self.events_path())
    }

    pub fn position(&self, event: &str) -> Option<usize> {
        self.events().iter().position(|e| e == event)
    }

    /// Waits until `event` is in the events file.
    pub fn wait_event(&self, event: &str) {
        let found = wait_for(PATIENCE, || self.position(event));
        assert!(
            found.is_some(),
            "event {event:?} never came; events: {:?}\nstderr:\n{}",
            self.events(),
            self.stderr()
        );
    }

    /// Waits until litevisor has logged every named service as ready. A service's own output can
    /// come before the supervisor has recorded its process group; only a service reported ready is
    /// sure to be a signal-forwarding target.
    pub fn wait_ready(&self, names: &[&str]) {
        let all_ready = wait_for(PATIENCE, || {
            let log = self.stderr();
            names
                .iter()
                .all(|name| log.contains(&format!("service {name:?} is ready")))
                .then_some(())
        });
        assert!(
            all_ready.is_some(),
            "services {names:?} never all became ready; stderr:\n{}",
            self.stderr()
        );
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.file("stdout.log")).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.file("stderr.log")).unwrap_or_default()
    }

    /// Starts litevisor on this directory's config, output to stdout.log / stderr.log.
    pub fn start(&self, mode: Mode, extra: &[&str]) -> Lv {
        self.start_with(
            mode,
            &[
                "--config",
                &self.file("litevisor.toml").display().to_string(),
            ],
            extra,
        )
    }

    /// The control socket litevisor listens on when started by `start_with_socket`.
    pub fn socket(&self) -> PathBuf {
        self.file("control.sock")
    }

    /// Starts litevisor on this directory's config with its control socket at `socket()`, and
    /// waits until the socket is there.
    pub fn start_with_socket(&self, mode: Mode) -> Lv {
        let sock = self.socket();
        let lv = self.start_env(mode, &[("LITEVISOR_SOCKET", &sock.display().to_string())]);
        let up = wait_for(PATIENCE, || sock.exists().then_some(()));
        assert!(
            up.is_some(),
            "no control socket; stderr:\n{}",
            self.stderr()
        );
        lv
    }

    /// Runs `litevisor ARGS` against the control socket at `socket()`.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .env("LITEVISOR_SOCKET", self.socket())
            .output()
            .expect("run litevisor")
    }

    /// The `list` ("services", "databases") of `litevisor status --json`, which must succeed.
    pub fn status(&self, list: &str) -> Vec<serde_json::Value> {
        let out = self.cli(&["status", "--json"]);
        assert!(out.status.success(), "status: {out:?}");
        let mut v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status json");
        match v[list].take() {
            serde_json::Value::Array(items) => items,
            other => panic!("status has no {list} list: {other}"),
        }
    }

    /// Starts litevisor on this directory's config with `env` added to its environment.
    pub fn start_env(&self, mode: Mode, env: &[(&str, &str)]) -> Lv {
        let config = self.file("litevisor.toml").display().to_string();
        self.spawn(mode, &["--config", &config], &[], env)
    }

    pub fn start_with(&self, mode: Mode, config_args: &[&str], extra: &[&str]) -> Lv {
        self.spawn(mode, config_args, extra, &[])
    }

    fn spawn(&self, mode: Mode, config_args: &[&str], extra: &[&str], env: &[(&str, &str)]) -> Lv {
        let mut cmd = match mode {
            Mode::Direct => Command::new(BIN),
            Mode::Pid1 => {
                let mut c = Command::new("unshare");
                c.args(["--pid", "--fork", "--mount-proc", "--kill-child", BIN]);
                c
            }
        };
        cmd.args(config_args).args(extra);
        clear_litevisor_env(&mut cmd);
        cmd.env("LITEVISOR_LOG", "info");
        cmd.envs(env.iter().copied());
        cmd.stdin(Stdio::null());
        cmd.stdout(std::fs::File::create(self.file("stdout.log")).expect("stdout.log"));
        cmd.stderr(std::fs::File::create(self.file("stderr.log")).expect("stderr.log"));
        let child = cmd.spawn().expect("spawn litevisor");
        let pid = match mode {
            Mode::Direct => child.id() as i32,
            Mode::Pid1 => {
                let launcher = child.id() as i32;
                wait_for(PATIENCE, || {
                    children_of(launcher).into_iter().find(|p| {
                        std::fs::read_link(format!("/proc/{p}/exe"))
                            .is_ok_and(|e| e == Path::new(BIN))
                    })
                })
                .expect("litevisor did not appear under unshare")
            }
        };
        Lv { child, pid }
    }
}

/// A running litevisor.
pub struct Lv {
    pub child: Child,
    /// litevisor's pid as seen from the test (not 1 in PID-1 mode).
    pub pid: i32,
}

impl Lv {
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill has no memory-safety requirements.
        unsafe { libc::kill(self.pid, sig) };
    }

    /// Sends `sig` and checks that litevisor then exits with `code` (its stderr shown otherwise).
    pub fn stop(&mut self, sig: i32, code: i32, s: &Setup) {
        self.signal(sig);
        assert_eq!(self.wait(PATIENCE), code, "{}", s.stderr());
    }

    /// Waits for the exit (killing litevisor after `limit`) and returns its exit code.
    pub fn wait(&mut self, limit: Duration) -> i32 {
        let status = wait_exit(&mut self.child, limit);
        status.code().expect("litevisor was killed by a signal")
    }
}

impl Drop for Lv {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            // SAFETY: see above; the PID-1 litevisor takes its namespace down with it.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
            let _ = self.child.wait();
        }
    }
}

pub fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Removes the variables through which the environment the tests run in could change litevisor's
/// settings (grace, log level, config path), so each test sees only what it sets itself.
pub fn clear_litevisor_env(cmd: &mut Command) {
    for var in [
        "LITEVISOR_GRACE",
        "LITEVISOR_LOG",
        "LOG_LEVEL",
        "LITEVISOR_CONFIG",
    ] {
        cmd.env_remove(var);
    }
}
