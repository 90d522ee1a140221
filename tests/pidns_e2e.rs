//! The container scenario without Docker: litevisor is PID 1 of a fresh PID namespace
//! (`unshare --pid --fork --mount-proc`), runs the example of `container.example/` (migrate, app,
//! stats) with its database replicated to S3 (moto), gets SIGTERM, and must exit with the app's
//! code after a final sync that leaves every committed row in the replica; a second start on an
//! empty data directory must restore before the app's first query. See tests/e2e_support.

mod support;
use support::s3_server;

mod e2e_support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use e2e_support::{BIN, Launcher, PATIENCE, wait_for};
use s3_server::S3Server;

struct PidNs {
    dir: PathBuf,
    env: Vec<(String, String)>,
    bucket: String,
    run: usize,
    child: Option<Child>,
    /// litevisor's pid as seen from here (it is 1 inside its namespace).
    pid: i32,
}

impl PidNs {
    fn socket(&self) -> PathBuf {
        self.dir.join(format!("run{}.sock", self.run))
    }

    fn log(&self, stream: &str) -> PathBuf {
        self.dir.join(format!("run{}.{stream}", self.run))
    }
}

impl Launcher for PidNs {
    fn start(&mut self, run: usize, data: &Path) {
        self.run = run;
        let config = self.dir.join(format!("litevisor{run}.toml"));
        let toml = e2e_support::config_toml(
            Some(&e2e_support::services_dir()),
            Some(&data.join("app.db")),
            &self.bucket,
        );
        std::fs::write(&config, toml).expect("write config");
        let mut cmd = Command::new("unshare");
        cmd.args([
            "--pid",
            "--fork",
            "--mount-proc",
            "--kill-child",
            BIN,
            "--config",
        ])
        .arg(&config);
        for (k, _) in std::env::vars() {
            if k.starts_with("AWS_") || k.starts_with("LITESTREAM_") || k.starts_with("LITEVISOR_")
            {
                cmd.env_remove(k);
            }
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("LITEVISOR_LOG", "info")
            // /run is the host's here: keep other litevisors' `status` away from this one.
            .env("LITEVISOR_SOCKET", self.socket())
            .env("APP_DB", data.join("app.db"))
            .env("STATS_INTERVAL", "1")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(self.log("stdout")).expect("stdout log"))
            .stderr(std::fs::File::create(self.log("stderr")).expect("stderr log"));
        let child = cmd.spawn().expect("spawn unshare");
        let launcher = child.id() as i32;
        self.child = Some(child);
        // unshare forks once: its child, PID 1 of the namespace, executes litevisor.
        self.pid = wait_for(PATIENCE, || {
            children_of(launcher).into_iter().find(|p| {
                std::fs::read_link(format!("/proc/{p}/exe")).is_ok_and(|e| e == Path::new(BIN))
            })
        })
        .expect("litevisor did not appear under unshare");
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        let nspid = status
            .lines()
            .find(|l| l.starts_with("NSpid:"))
            .and_then(|l| l.split_whitespace().last().map(str::to_owned));
        assert_eq!(
            nspid.as_deref(),
            Some("1"),
            "litevisor is not PID 1: {status}"
        );
    }

    fn output(&self) -> String {
        let out = std::fs::read_to_string(self.log("stdout")).unwrap_or_default();
        let err = std::fs::read_to_string(self.log("stderr")).unwrap_or_default();
        format!("{out}{err}")
    }

    fn status(&self) -> std::process::Output {
        Command::new(BIN)
            .arg("status")
            .env("LITEVISOR_SOCKET", self.socket())
            .output()
            .expect("run litevisor status")
    }

    fn stop(&mut self) -> i32 {
        // SAFETY: kill has no memory-safety requirements.
        unsafe { libc::kill(self.pid, libc::SIGTERM) };
        let child = self.child.as_mut().expect("started");
        let status = wait_for(Duration::from_secs(30), || {
            child.try_wait().expect("try_wait")
        });
        let Some(status) = status else {
            let _ = child.kill();
            panic!(
                "litevisor did not exit within 30 s of SIGTERM; output:\n{}",
                self.output()
            );
        };
        self.child = None;
        // unshare --fork exits with its child's code (and re-raises a fatal signal).
        status
            .code()
            .unwrap_or_else(|| panic!("litevisor was killed: {status}"))
    }
}

impl Drop for PidNs {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            // SAFETY: as above; PID 1 dying takes the namespace down with it.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn children_of(pid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = &s[s.rfind(')')? + 1..];
                    rest.split_whitespace().nth(1)?.parse::<i32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

#[test]
fn example_as_pid1_replicates_stops_and_restores_before_start() {
    let s3 = S3Server::start();
    let bucket = "pidns-e2e";
    s3.create_bucket(bucket);
    let scratch = tempfile::tempdir().expect("tempdir");
    let mut ns = PidNs {
        dir: scratch.path().to_path_buf(),
        env: e2e_support::replica_env(&s3),
        bucket: bucket.to_string(),
        run: 0,
        child: None,
        pid: 0,
    };
    e2e_support::scenario(&mut ns, &s3, bucket, scratch.path());
    eprintln!("pidns_e2e: RAN (litevisor as PID 1 under unshare --pid)");
}
