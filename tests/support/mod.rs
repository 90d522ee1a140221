//! The one test-support module every test file declares (`mod support;`): the litevisor binary,
//! waiting on conditions, looking at processes in /proc, free ports; and, as submodules, the real
//! S3 server ([`s3_server`], moto on loopback) and the fault-injecting proxy ([`s3_proxy`]). The
//! topic helpers (`init_support`, `supervisor_support`, `replicate_support`, ...) build their
//! fixtures on it and re-export what their tests use.
#![allow(dead_code)]

pub mod s3_proxy;
pub mod s3_server;

use std::process::{Child, Command, ExitStatus, Output};
use std::time::{Duration, Instant};

#[allow(unused_imports)] // the S3 tests import it from s3_server; the others from here
pub use s3_server::free_port;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_litevisor");

/// Runs `cmd` to completion and returns its output, failing the test (naming `what` and showing
/// its stdout and stderr) when it cannot start or exits unsuccessfully. The one place for the
/// run-then-assert-success dance every test that drives an external program needs.
pub fn run_ok(what: &str, cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}): {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `cmd` to its end: (exit code, stdout, stderr); -1 for a death by signal.
pub fn output(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().expect("run the command");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Fails the test unless `text` contains `part`, showing all of `text` (an output, a log, a file).
#[track_caller]
pub fn assert_contains(text: &str, part: impl AsRef<str>) {
    let part = part.as_ref();
    assert!(text.contains(part), "missing {part:?} in:\n{text}");
}

/// Polls `probe` every 20 ms until it returns `Some`, or gives up (`None`) after `limit`.
pub fn wait_for<T>(limit: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Like [`wait_for`] for a condition, failing the test with `what` when it does not hold in time.
pub fn wait_until(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let held = wait_for(limit, || condition().then_some(()));
    assert!(
        held.is_some(),
        "timed out after {limit:?} waiting for {what}"
    );
}

/// Waits for `child` to exit (up to `limit`), killing it and failing the test if it does not.
pub fn wait_exit(child: &mut Child, limit: Duration) -> ExitStatus {
    match wait_for(limit, || child.try_wait().expect("try_wait")) {
        Some(status) => status,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("litevisor did not exit within {limit:?}");
        }
    }
}

/// The fields of `/proc/PID/stat` after the command name (state, ppid, ...).
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

pub fn parent(pid: i32) -> Option<i32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

pub fn children_of(pid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| parent(*p) == Some(pid))
        .collect()
}

/// Running (a zombie is dead for our purposes).
pub fn alive(pid: i32) -> bool {
    stat_fields(pid)
        .and_then(|f| f.first().map(|state| state != "Z" && state != "X"))
        .unwrap_or(false)
}

/// utime + stime of a process, in clock ticks.
pub fn cpu_ticks(pid: i32) -> u64 {
    let f = stat_fields(pid).expect("stat");
    f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
}

/// Sends `sig` to `pid`, failing the test when it cannot.
pub fn signal(pid: i32, sig: i32) {
    // SAFETY: kill has no memory-safety requirements.
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(
        rc,
        0,
        "kill({pid}, {sig}) failed: {}",
        std::io::Error::last_os_error()
    );
}

/// Creates the database at `path` with page size 4096 and a table `t(id, v)` holding ids
/// 1..=`rows`, each `v` the id zero-padded to `width` digits (so the page count is predictable),
/// and returns its connection.
pub fn padded_table(path: &std::path::Path, rows: i64, width: usize) -> rusqlite::Connection {
    let db = rusqlite::Connection::open(path).unwrap();
    db.execute_batch(&format!(
        "PRAGMA page_size=4096; CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);
         WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x<{rows})
         INSERT INTO t SELECT x, printf('%0{width}d', x) FROM c;"
    ))
    .unwrap();
    db
}

/// One LTX file of transaction `txid` (page size 4096, no checksums) holding `pages`, for a
/// database of `commit` pages, stamped `timestamp_ms`: what the S3 tests upload by hand.
pub fn ltx_file(commit: u32, txid: u64, timestamp_ms: i64, pages: &[(u32, &[u8])]) -> Vec<u8> {
    use litevisor::replication::ltx;
    let header = ltx::Header {
        flags: ltx::HEADER_FLAG_NO_CHECKSUM,
        page_size: 4096,
        commit,
        min_txid: txid,
        max_txid: txid,
        timestamp_ms,
        ..ltx::Header::default()
    };
    let mut enc = ltx::Encoder::new(Vec::new(), &header, ltx::PageEncoding::Frame).unwrap();
    for (pgno, data) in pages {
        enc.encode_page(*pgno, data).unwrap();
    }
    enc.finish().unwrap().0
}
