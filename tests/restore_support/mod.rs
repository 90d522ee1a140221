//! Test support for the restore/replica/compaction tests: builds a file replica with the REAL Litestream
//! 0.5.17 (`litestream replicate` on a small database written in bursts, stopped with SIGTERM), records
//! the database's rows after every burst, and runs `litevisor` / `litestream` restores as processes.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rusqlite::Connection;

pub fn litevisor(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_litevisor"))
        .args(args)
        .output()
        .expect("run litevisor")
}

pub fn litestream(args: &[&str]) -> Output {
    Command::new("litestream")
        .args(args)
        .env_remove("AWS_CA_BUNDLE")
        .output()
        .expect("run litestream")
}

pub fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Every row of table `t`, as (id, hex of v).
pub fn rows(db: &Path) -> BTreeSet<(i64, String)> {
    let conn = Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("open restored db");
    let mut stmt = conn
        .prepare("SELECT id, hex(v) FROM t ORDER BY id")
        .expect("query t");
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("rows")
        .map(|r| r.expect("row"))
        .collect()
}

pub fn integrity(db: &Path) -> String {
    let conn = Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("open db");
    conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check")
}

/// What to do in one write burst.
#[derive(Clone, Copy, Debug)]
pub enum Burst {
    /// Insert `n` rows of `size` random bytes.
    Insert { n: usize, size: usize },
    /// Delete every row with id % 4 != 0.
    DeleteMost,
    /// VACUUM (the file shrinks).
    Vacuum,
}

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub db: PathBuf,
    pub replica: PathBuf,
    /// Rows of the source database at the end of each burst (index 0 = initial state).
    pub states: Vec<BTreeSet<(i64, String)>>,
    /// TXID of `states[0]`; `states[i]` is TXID `base_txid + i`.
    pub base_txid: u64,
}

impl Fixture {
    pub fn url(&self) -> String {
        format!("file://{}", self.replica.display())
    }

    /// Copies the replica to a new directory inside the fixture dir, returning its path.
    pub fn copy_replica(&self, name: &str) -> PathBuf {
        let dst = self.dir.path().join(name);
        copy_dir(&self.replica, &dst);
        dst
    }

    /// Rows at `txid`, when a burst ended exactly there.
    pub fn state(&self, txid: u64) -> Option<&BTreeSet<(i64, String)>> {
        self.states
            .get(usize::try_from(txid.checked_sub(self.base_txid)?).ok()?)
    }

    pub fn max_txid(&self) -> u64 {
        self.base_txid + self.states.len() as u64 - 1
    }

    pub fn files(&self, level: u8) -> Vec<PathBuf> {
        level_files(&self.replica, level)
    }
}

pub fn level_files(replica: &Path, level: u8) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = match fs::read_dir(replica.join("ltx").join(level.to_string())) {
        Ok(rd) => rd
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "ltx"))
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

/// `(min, max)` of an LTX file path.
pub fn range(p: &Path) -> (u64, u64) {
    let name = p.file_name().and_then(|n| n.to_str()).expect("name");
    (
        u64::from_str_radix(&name[..16], 16).expect("min"),
        u64::from_str_radix(&name[17..33], 16).expect("max"),
    )
}

pub fn copy_dir(src: &Path, dst: &Path) {
    fs::create_dir_all(dst).expect("mkdir");
    for e in fs::read_dir(src).expect("read dir") {
        let e = e.expect("entry");
        let to = dst.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            fs::copy(e.path(), &to).expect("copy");
            let mtime = fs::metadata(e.path())
                .and_then(|m| m.modified())
                .expect("mtime");
            fs::File::options()
                .write(true)
                .open(&to)
                .and_then(|f| f.set_modified(mtime))
                .expect("set mtime");
        }
    }
}

struct Replicator(Child);

impl Drop for Replicator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs real Litestream on a fresh database with `page_size`, applying `bursts` one per Litestream
/// sync (so each becomes its own L0 TXID), waits until L0 and L1 hold everything, then SIGTERMs it.
pub fn build(page_size: u32, bursts: &[Burst]) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("src.db");
    let replica = dir.path().join("replica");
    let conn = Connection::open(&db).expect("create db");
    conn.execute_batch(&format!(
        "PRAGMA page_size={page_size}; PRAGMA journal_mode=wal; PRAGMA busy_timeout=5000; \
         CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB); INSERT INTO t(v) VALUES (randomblob(10));"
    ))
    .expect("init db");
    let config = dir.path().join("litestream.yml");
    fs::write(
        &config,
        format!(
            "dbs:\n  - path: {}\n    replica:\n      url: file://{}\nlevels:\n  - interval: 1s\n  - interval: 3s\nsnapshot:\n  interval: 24h\n  retention: 24h\nl0-retention: 1h\n",
            db.display(),
            replica.display()
        ),
    )
    .expect("write config");
    let log = fs::File::create(dir.path().join("litestream.log")).expect("log");
    let child = Command::new("litestream")
        .args(["replicate", "-config"])
        .arg(&config)
        .env_remove("AWS_CA_BUNDLE")
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn litestream");
    let mut replicator = Replicator(child);

    let mut states = vec![rows(&db)];
    wait_l0_growth(&replica, 0, &dir, true);
    // Litestream's own setup writes may take one more sync; let it settle.
    std::thread::sleep(Duration::from_millis(2500));
    let base_txid = level_files(&replica, 0)
        .iter()
        .map(|p| range(p).1)
        .max()
        .unwrap_or(0);
    let mut expected_txid = base_txid;
    for burst in bursts {
        match *burst {
            Burst::Insert { n, size } => {
                let tx = conn.unchecked_transaction().expect("begin");
                for _ in 0..n {
                    tx.execute("INSERT INTO t(v) VALUES (randomblob(?1))", [size as i64])
                        .expect("insert");
                }
                tx.commit().expect("commit");
            }
            Burst::DeleteMost => {
                conn.execute_batch("DELETE FROM t WHERE id % 4 != 0")
                    .expect("delete");
            }
            Burst::Vacuum => conn.execute_batch("VACUUM").expect("vacuum"),
        }
        states.push(rows(&db));
        expected_txid = wait_l0_growth(&replica, expected_txid, &dir, false);
    }
    drop(conn);
    // Let L1 catch up with L0 so every level is populated, then stop Litestream cleanly.
    let deadline = Instant::now() + Duration::from_secs(60);
    while level_files(&replica, 1).iter().map(|p| range(p).1).max() != Some(expected_txid) {
        assert!(
            Instant::now() < deadline,
            "L1 never reached txid {expected_txid}: {}",
            log_of(&dir)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let pid = replicator.0.id() as i32;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let status = replicator.0.wait().expect("wait litestream");
    assert!(
        status.success(),
        "litestream exited {status:?}: {}",
        log_of(&dir)
    );
    assert_eq!(
        level_files(&replica, 0).iter().map(|p| range(p).1).max(),
        Some(expected_txid),
        "a burst was synced after the last one we waited for: {}",
        log_of(&dir)
    );
    Fixture {
        dir,
        db,
        replica,
        states,
        base_txid,
    }
}

/// Waits for a new L0 file past `after` (one Litestream sync), returning its TXID.
fn wait_l0_growth(replica: &Path, after: u64, dir: &tempfile::TempDir, any: bool) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let max = level_files(replica, 0)
            .iter()
            .map(|p| range(p).1)
            .max()
            .unwrap_or(0);
        if max > after {
            if any {
                return max;
            }
            assert_eq!(
                max,
                after + 1,
                "one sync per burst expected: {}",
                log_of_dir(dir.path())
            );
            return max;
        }
        assert!(
            Instant::now() < deadline,
            "litestream did not sync past txid {after}: {}",
            log_of_dir(dir.path())
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn log_of(dir: &tempfile::TempDir) -> String {
    log_of_dir(dir.path())
}

fn log_of_dir(dir: &Path) -> String {
    fs::read_to_string(dir.join("litestream.log")).unwrap_or_default()
}

/// RFC 3339 with milliseconds, UTC, for a SystemTime.
pub fn rfc3339_ms(t: std::time::SystemTime) -> String {
    let d = t
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after epoch");
    let (secs, ms) = (d.as_secs() as i64, d.subsec_millis());
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // civil_from_days
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 {
        yoe + era * 400 + 1
    } else {
        yoe + era * 400
    };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
