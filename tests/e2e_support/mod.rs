//! The end-to-end scenario shared by `tests/container_e2e.rs` (a FROM-scratch Docker image) and
//! `tests/pidns_e2e.rs` (litevisor as PID 1 of a fresh PID namespace): the example of
//! `container.example/` (migrate oneshot, app main service writing rows with sqlite3, stats reader)
//! with its database replicated to S3 (moto), stopped with SIGTERM, checked against the replica,
//! then started again on an empty data directory to prove the restore happened before the app ran.
//!
//! Only the way litevisor is started and stopped differs between the two tests: that is the
//! [`Launcher`] trait.
#![allow(dead_code)]

#[allow(unused_imports)] // each test file uses a part of it
pub use crate::support::{BIN, wait_for};

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::s3_server::S3Server;

/// Generous bound for anything that should happen "soon" on a loaded 2-core machine.
pub const PATIENCE: Duration = Duration::from_secs(120);

/// Rows the app must have reported committed before the stop.
const ROWS_BEFORE_STOP: usize = 25;

/// Credentials handed to litevisor through Litestream's variables (moto without auth accepts any;
/// its signature check cannot be used here, it mis-canonicalizes the '/' in ListObjectsV2 prefixes).
pub const ACCESS_KEY_ID: &str = "e2e-key-id";
pub const SECRET_ACCESS_KEY: &str = "e2e-secret-never-logged";

/// Replica location inside the bucket.
pub const REPLICA_PATH: &str = "app.db";

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The example's services, shared with Dockerfile.example.
pub fn services_dir() -> PathBuf {
    repo().join("container.example/services.d")
}

pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{nanos:x}", std::process::id())
}

/// The litevisor.toml of the scenario: container.example/litevisor.toml itself, with the test's
/// bucket, path-style addressing (the test's S3 server is addressed by IP) and, outside the image,
/// the host paths of the services and the database. Each edit must apply, so a change to the
/// example that the test does not follow fails here instead of silently testing something else.
/// The endpoint is not in the file: like in production it comes from `AWS_ENDPOINT_URL_S3`.
pub fn config_toml(services_dir: Option<&Path>, db: Option<&Path>, bucket: &str) -> String {
    let path = repo().join("container.example/litevisor.toml");
    let mut text = std::fs::read_to_string(&path).expect("read container.example/litevisor.toml");
    let mut edit = |from: &str, to: &str| {
        assert!(
            text.contains(from),
            "container.example/litevisor.toml no longer contains {from:?}"
        );
        text = text.replacen(from, to, 1);
    };
    edit("bucket = \"my-bucket\"", &format!("bucket = \"{bucket}\""));
    // `restore` below finds the replica at this path.
    edit(
        &format!("\npath = \"{REPLICA_PATH}\"\n"),
        &format!("\npath = \"{REPLICA_PATH}\"\n"),
    );
    edit("# force_path_style = true", "force_path_style = true");
    if let Some(dir) = services_dir {
        edit(
            "services_dir = \"services.d\"",
            &format!("services_dir = \"{}\"", dir.display()),
        );
    }
    if let Some(db) = db {
        edit(
            "path = \"/data/app.db\"",
            &format!("path = \"{}\"", db.display()),
        );
    }
    text
}

/// Environment for litevisor: the replica's endpoint (by IP: no resolver involved) and keys.
pub fn replica_env(s3: &S3Server) -> Vec<(String, String)> {
    [
        ("AWS_ENDPOINT_URL_S3", s3.endpoint.as_str()),
        ("LITESTREAM_ACCESS_KEY_ID", ACCESS_KEY_ID),
        ("LITESTREAM_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_REGION", "us-east-1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// How one test starts and stops litevisor on a data directory.
pub trait Launcher {
    /// Starts litevisor with `data` as the app's data directory (empty on the second run).
    fn start(&mut self, run: usize, data: &Path);
    /// Everything litevisor printed so far (stdout, then stderr).
    fn output(&self) -> String;
    /// Sends SIGTERM the way the platform does (`docker stop`, kill) and returns the exit code.
    fn stop(&mut self) -> i32;
    /// `litevisor status` run next to the running litevisor (`docker exec`, or the same socket).
    fn status(&self) -> std::process::Output;
    /// Path of the database file on the host, given the data directory.
    fn db_on_host(&self, data: &Path) -> PathBuf {
        data.join("app.db")
    }
}

/// What the app printed: the count it found at start and the ids it reported committed.
#[derive(Debug, Default)]
pub struct AppLog {
    pub started_with: Option<u64>,
    pub committed: Vec<u64>,
    pub stopped: bool,
}

pub fn app_log(output: &str) -> AppLog {
    let mut log = AppLog::default();
    for line in output.lines() {
        let Some(msg) = line.strip_prefix("[app] ") else {
            continue;
        };
        if let Some(n) = msg
            .strip_prefix("started with ")
            .and_then(|r| r.strip_suffix(" rows"))
        {
            log.started_with = n.trim().parse().ok();
        } else if let Some(id) = msg.strip_prefix("committed ") {
            if let Ok(id) = id.trim().parse() {
                log.committed.push(id);
            }
        } else if msg.starts_with("stopping after ") {
            log.stopped = true;
        }
    }
    log
}

/// Every id in the `items` table of `db`, read with the sqlite3 CLI (independent of litevisor).
pub fn ids(db: &Path) -> BTreeSet<u64> {
    let out = crate::support::run_ok(
        &format!("sqlite3 {}", db.display()),
        Command::new("sqlite3")
            .arg(db)
            .arg("select id from items order by id;"),
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().parse().expect("integer id"))
        .collect()
}

/// Restores the replica on the host with `litevisor restore` into `out`.
pub fn restore(s3: &S3Server, bucket: &str, out: &Path) {
    let url = format!("s3://{bucket}/{REPLICA_PATH}?endpoint={}", s3.endpoint);
    crate::support::run_ok(
        &format!("litevisor restore {url}"),
        Command::new(BIN)
            .args(["restore", "-integrity-check", "quick", "-o"])
            .arg(out)
            .arg(&url)
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_CA_BUNDLE"),
    );
}

/// The whole scenario. `data_root` holds the two data directories; `scratch` the restored copies.
pub fn scenario(launcher: &mut dyn Launcher, s3: &S3Server, bucket: &str, scratch: &Path) {
    // Run 1: an empty volume and an empty replica. The app writes rows until SIGTERM.
    let data1 = scratch.join("data1");
    std::fs::create_dir_all(&data1).expect("mkdir data1");
    launcher.start(1, &data1);
    let enough = wait_for(PATIENCE, || {
        let log = app_log(&launcher.output());
        (log.committed.len() >= ROWS_BEFORE_STOP).then_some(())
    });
    assert!(
        enough.is_some(),
        "run 1: the app never reported {ROWS_BEFORE_STOP} committed rows; output:\n{}",
        launcher.output()
    );
    let code = launcher.stop();
    let out1 = launcher.output();
    assert_eq!(
        code, 0,
        "run 1: the app exits 0 on SIGTERM and the final sync succeeded, so litevisor must exit 0; \
         output:\n{out1}"
    );
    let log1 = app_log(&out1);
    assert_eq!(
        log1.started_with,
        Some(0),
        "run 1 starts empty; output:\n{out1}"
    );
    assert!(
        log1.stopped,
        "run 1: the app did not stop on its own; output:\n{out1}"
    );
    assert!(
        out1.contains("[migrate] schema ready") && out1.contains("[stats] rows="),
        "run 1: the other services of the example did not run; output:\n{out1}"
    );
    assert!(
        !out1.contains(SECRET_ACCESS_KEY),
        "the secret key appeared in litevisor's output"
    );

    // The replica holds every committed row: exactly the rows of the database the app left.
    let restored1 = scratch.join("restored1.db");
    restore(s3, bucket, &restored1);
    let replica_ids = ids(&restored1);
    let source_ids = ids(&launcher.db_on_host(&data1));
    let missing: Vec<_> = log1
        .committed
        .iter()
        .filter(|id| !replica_ids.contains(id))
        .collect();
    assert!(
        missing.is_empty(),
        "rows the app reported committed are not in the replica: {missing:?}"
    );
    assert_eq!(
        replica_ids, source_ids,
        "the replica differs from the database the app left behind"
    );
    let expected = replica_ids.len() as u64;
    eprintln!(
        "e2e: run 1 committed {} rows (reported {}), replica restored {expected}",
        source_ids.len(),
        log1.committed.len()
    );

    // Run 2: an empty volume again. litevisor must restore before the app starts, so the app's
    // very first query sees every replicated row; replication then continues where it stopped.
    let data2 = scratch.join("data2");
    std::fs::create_dir_all(&data2).expect("mkdir data2");
    launcher.start(2, &data2);
    let more = wait_for(PATIENCE, || {
        let log = app_log(&launcher.output());
        (log.started_with.is_some() && log.committed.len() >= 3).then_some(())
    });
    assert!(
        more.is_some(),
        "run 2: the app never started and committed rows; output:\n{}",
        launcher.output()
    );
    // `litevisor status` beside it: the services, and the database restored and replicating.
    let status = launcher.status();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.status.success(),
        "run 2: litevisor status failed: {}{text}",
        String::from_utf8_lossy(&status.stderr)
    );
    let field = |name: &str| {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .map(|l| l[name.len()..].trim().to_string())
            .unwrap_or_default()
    };
    assert!(
        text.lines()
            .any(|l| l.starts_with("app (main)") && l.contains("running"))
            && field("state") == "replicating"
            && field("restore").starts_with("restored txid"),
        "run 2: unexpected litevisor status:\n{text}"
    );
    let code = launcher.stop();
    let out2 = launcher.output();
    assert_eq!(code, 0, "run 2: exit code; output:\n{out2}");
    let log2 = app_log(&out2);
    assert_eq!(
        log2.started_with,
        Some(expected),
        "run 2: the app must find the restored rows at its first query (restore before start); \
         output:\n{out2}"
    );
    let restored2 = scratch.join("restored2.db");
    restore(s3, bucket, &restored2);
    let replica2 = ids(&restored2);
    assert!(
        replica_ids.is_subset(&replica2),
        "run 2 lost rows of run 1 from the replica"
    );
    assert_eq!(
        replica2,
        ids(&launcher.db_on_host(&data2)),
        "run 2: the replica differs from the database the app left behind"
    );
    assert!(
        log2.committed.iter().all(|id| replica2.contains(id)),
        "run 2: a committed row is missing from the replica"
    );
}
