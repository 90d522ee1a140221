//! Shared helpers of the replicate_*/interop_* tests: the real litevisor binary, real SQLite
//! (rusqlite) as the application, real Litestream 0.5.17 for cross-restores.
#![allow(dead_code)]

#[allow(unused_imports)] // each test file uses a part of it
pub use crate::support::wait_until;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rusqlite::Connection;

pub const LITEVISOR: &str = env!("CARGO_BIN_EXE_litevisor");

/// A running `replicate` process (litevisor or litestream) with its stderr in a log file.
pub struct Replicator {
    pub child: Child,
    pub log: PathBuf,
}

impl Replicator {
    pub fn litevisor(db: &Path, replica: &Path, extra: &[&str]) -> Replicator {
        let log = db.with_extension(format!("lv{}.log", unique()));
        let mut cmd = Command::new(LITEVISOR);
        // A control socket of its own: the default one is shared by every litevisor on the host,
        // and another test's `status` must not wake (or read) this one.
        cmd.env(
            "LITEVISOR_SOCKET",
            db.with_extension(format!("{}.sock", unique())),
        );
        cmd.arg("replicate").args(["-log-level", "debug"]);
        if !extra.contains(&"-monitor-interval") {
            cmd.args(["-monitor-interval", "100ms"]);
        }
        cmd.args(extra);
        cmd.arg(db).arg(url(replica));
        Replicator::spawn(cmd, log)
    }

    pub fn litestream(db: &Path, replica: &Path) -> Replicator {
        let log = db.with_extension(format!("ls{}.log", unique()));
        let mut cmd = Command::new("litestream");
        cmd.env_remove("AWS_CA_BUNDLE")
            .arg("replicate")
            .arg(db)
            .arg(url(replica));
        Replicator::spawn(cmd, log)
    }

    /// Spawns `cmd` with its stdout and stderr in the file `log`.
    pub fn spawn(mut cmd: Command, log: PathBuf) -> Replicator {
        let out = fs::File::create(&log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn replicator");
        Replicator { child, log }
    }

    /// SIGTERM, then waits (generously) for the exit status. The signal is sent once the process
    /// has taken SIGTERM over (blocked or caught it): sent while it is still being exec'd and
    /// linked, the default action kills it, and no program can do anything about that.
    pub fn stop(mut self) -> ExitStatus {
        let pid = self.child.id() as i32;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !handles_sigterm(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let status = self.wait_exit(Duration::from_secs(90));
        if !status.success() {
            eprintln!("replicator exited {status:?}; log:\n{}", self.log_text());
        }
        status
    }

    /// `stop`; the replicator must exit 0. Returns its whole log.
    pub fn stop_ok(self) -> String {
        let log = self.log.clone();
        let status = self.stop();
        let text = fs::read_to_string(log).unwrap_or_default();
        assert!(status.success(), "exit {status:?}; log:\n{text}");
        text
    }

    /// Waits up to `limit` for the process to exit; past it, fails the test showing the log (the
    /// process is killed on drop).
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the process did not exit within {limit:?}; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits up to 30 s until the log holds `text` (a timeout shows the log).
    pub fn wait_log(&self, text: &str) {
        let what = format!("{text:?} in the log");
        wait_for(self, &what, Duration::from_secs(30), || {
            self.log_text().contains(text)
        });
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Replicator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// SIGTERM is blocked (`SigBlk`: litevisor reads it from a signalfd) or caught (`SigCgt`: Go's
/// runtime) by the process, per /proc/PID/status. False once it has exited.
pub fn handles_sigterm(pid: i32) -> bool {
    let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    let bit = 1u64 << (libc::SIGTERM - 1);
    status.lines().any(|l| {
        let mask = l
            .strip_prefix("SigBlk:")
            .or_else(|| l.strip_prefix("SigCgt:"));
        mask.and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
            .is_some_and(|m| m & bit != 0)
    })
}

fn unique() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

pub fn url(replica: &Path) -> String {
    format!("file://{}", replica.display())
}

/// A temporary directory and the paths in it of a database named `db_name` and of a file replica
/// beside it (neither created yet), as `(dir, db, replica)`.
pub fn paths(db_name: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join(db_name);
    let replica = dir.path().join("replica");
    (dir, db, replica)
}

/// Writes `dir`/litestream.yml replicating `db` to the file replica `replica`; returns its path.
pub fn write_litestream_yml(dir: &Path, db: &Path, replica: &Path) -> PathBuf {
    let yml = dir.join("litestream.yml");
    let text = format!(
        "dbs:\n  - path: {}\n    replica:\n      url: {}\n",
        db.display(),
        url(replica)
    );
    fs::write(&yml, text).unwrap();
    yml
}

/// The scene most replication tests start from, as `(dir, db, replica, c)`: a temporary
/// directory holding `app.db` with its table created through the application's connection `c`,
/// and the path of a file replica beside it (not created yet).
pub fn scene() -> (tempfile::TempDir, PathBuf, PathBuf, Connection) {
    let (dir, db, replica) = paths("app.db");
    let c = app(&db);
    create_table(&c);
    (dir, db, replica, c)
}

/// The application's connection: WAL mode, busy_timeout 5000 (what Litestream tells apps to use).
pub fn app(db: &Path) -> Connection {
    let c = Connection::open(db).unwrap();
    c.busy_timeout(Duration::from_millis(5000)).unwrap();
    let mode: String = c
        .query_row("PRAGMA journal_mode=wal", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    c
}

pub fn create_table(c: &Connection) {
    c.execute_batch("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
        .unwrap();
}

/// Inserts ids in `ids`, `per_tx` rows per transaction; values are deterministic from the id.
pub fn insert(c: &mut Connection, ids: std::ops::Range<i64>, per_tx: usize) {
    let ids: Vec<i64> = ids.collect();
    for chunk in ids.chunks(per_tx.max(1)) {
        let tx = c.transaction().unwrap();
        for id in chunk {
            tx.execute(
                "INSERT INTO t(id, v) VALUES (?1, ?2)",
                rusqlite::params![id, value(*id)],
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }
}

pub fn value(id: i64) -> String {
    format!("row-{id}-{}", "x".repeat((id % 97) as usize * 7))
}

/// All (id, v) rows, ordered.
pub fn rows(db: &Path) -> Vec<(i64, String)> {
    let c = Connection::open(db).unwrap();
    let mut st = c.prepare("SELECT id, v FROM t ORDER BY id").unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

pub fn integrity(db: &Path) -> String {
    let c = Connection::open(db).unwrap();
    c.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

/// Restores with REAL Litestream 0.5.17 into `out` and returns it.
pub fn litestream_restore(replica: &Path, out: &Path) -> PathBuf {
    let _ = fs::remove_file(out);
    crate::support::run_ok(
        "litestream restore",
        Command::new("litestream")
            .env_remove("AWS_CA_BUNDLE")
            .arg("restore")
            .arg("-o")
            .arg(out)
            .arg(url(replica)),
    );
    out.to_path_buf()
}

/// Restores with litevisor's own `restore` command into `out` and returns it.
pub fn litevisor_restore(replica: &Path, out: &Path) -> PathBuf {
    let _ = fs::remove_file(out);
    crate::support::run_ok(
        "litevisor restore",
        Command::new(LITEVISOR)
            .arg("restore")
            .arg("-o")
            .arg(out)
            .arg(url(replica)),
    );
    out.to_path_buf()
}

/// The judge of most replication tests: REAL Litestream restores `replica` into `dir`/out.db and
/// gets exactly the rows of `db`.
pub fn assert_litestream_restores(db: &Path, replica: &Path, dir: &Path) {
    let restored = litestream_restore(replica, &dir.join("out.db"));
    assert_same_rows(db, &restored);
}

/// Asserts the restored database has exactly the source's rows and passes integrity_check.
pub fn assert_same_rows(source: &Path, restored: &Path) {
    assert_eq!(integrity(restored), "ok");
    let want = rows(source);
    let got = rows(restored);
    assert_eq!(got.len(), want.len(), "row count differs");
    assert!(got == want, "row contents differ");
}

/// TXIDs of the files in one level of a file replica (`<replica>/ltx/<level>/`), sorted by min.
pub fn replica_files(replica: &Path, level: u8) -> Vec<(u64, u64)> {
    let dir = replica.join("ltx").join(level.to_string());
    let mut out: Vec<(u64, u64)> = fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                let stem = name.strip_suffix(".ltx")?;
                let (a, b) = stem.split_once('-')?;
                Some((
                    u64::from_str_radix(a, 16).ok()?,
                    u64::from_str_radix(b, 16).ok()?,
                ))
            })
            .collect()
        })
        .unwrap_or_default();
    out.sort_unstable();
    out
}

pub fn max_l0(replica: &Path) -> u64 {
    replica_files(replica, 0).last().map_or(0, |f| f.1)
}

/// Header fields of an LTX file: (commit, min, max, wal_offset, wal_size).
pub fn ltx_header(path: &Path) -> (u32, u64, u64, i64, i64) {
    let b = fs::read(path).unwrap();
    let u32_at = |o: usize| u32::from_be_bytes(b[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_be_bytes(b[o..o + 8].try_into().unwrap());
    assert_eq!(&b[0..4], b"LTX1");
    (
        u32_at(12),
        u64_at(16),
        u64_at(24),
        u64_at(48) as i64,
        u64_at(56) as i64,
    )
}

pub fn l0_path(replica: &Path, txid: u64) -> PathBuf {
    replica
        .join("ltx")
        .join("0")
        .join(format!("{txid:016x}-{txid:016x}.ltx"))
}

/// Like `wait_until`, but a timeout shows the replicator's log.
pub fn wait_for(lv: &Replicator, what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; log:\n{}",
            lv.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits (showing `r`'s log on a timeout) for the replicator's first upload to `replica`.
pub fn wait_first_upload(r: &Replicator, replica: &Path) {
    wait_for(r, "the first upload", Duration::from_secs(30), || {
        max_l0(replica) >= 1
    });
}

/// Runs `litevisor ARGS... DB URL` to completion: (exit code, stdout, stderr).
pub fn run_on(args: &[&str], db: &Path, replica: &Path) -> (i32, String, String) {
    let out = Command::new(LITEVISOR)
        .args(args)
        .arg(db)
        .arg(url(replica))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `litevisor replicate ... DB URL`, returns (exit code, combined output).
pub fn replicate(extra: &[&str], db: &Path, replica: &Path) -> (i32, String) {
    let (code, stdout, stderr) = run_on(&[&["replicate"], extra].concat(), db, replica);
    (code, stdout + &stderr)
}

/// Runs `litevisor replicate -once ... DB URL`, returns (exit code, combined output).
pub fn once(db: &Path, replica: &Path, extra: &[&str]) -> (i32, String) {
    replicate(&[&["-once"], extra].concat(), db, replica)
}

/// `once`, which must succeed; returns its output.
#[track_caller]
pub fn once_ok(db: &Path, replica: &Path, extra: &[&str]) -> String {
    let (code, out) = once(db, replica, extra);
    assert_eq!(code, 0, "replicate -once {extra:?}: {out}");
    out
}

pub fn count_matches(text: &str, needle: &str) -> usize {
    text.matches(needle).count()
}
