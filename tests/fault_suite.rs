//! The fault suite: the real litevisor binary attacked at random moments, with real Litestream
//! 0.5.17 as the judge of every replica (restored by `litestream restore` and by `litevisor
//! restore`, then compared row by row and with `PRAGMA integrity_check` against the live database).
//!
//! Each scenario class is one function `fn(runs, seed) -> Tally`. The plain tests run a few runs of
//! each (the quick form, part of the test suite); the `#[ignore]`d `full_*` tests run
//! `FAULTS_RUNS` runs (default 200) from `FAULTS_SEED` and are what `scripts/faults` calls. Every run
//! prints its seed S (and a failure note names its run's seed R): `FAULTS_SEED=S cargo test --test
//! fault_suite quick_X` replays a quick test, `FAULTS_RUN_SEED=R cargo test --test fault_suite
//! quick_X` replays the one run. A scenario never stops at its first failure: it counts lost rows, wrong exit codes,
//! hangs and panics over all its runs, prints one `FAULTS|...` line (the script's table), then
//! fails if any figure is not zero.

mod support;
use support::{s3_proxy, s3_server};

mod replicate_support;

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use replicate_support::{LITEVISOR, Replicator, handles_sigterm, integrity};

/// The application of the graceful-stop runs: writes rows in short transactions until SIGTERM,
/// then exits 0 ("ok") or 3 ("fail"), or dies of the signal mid-transaction ("die": no handler).
/// It creates `<db>.started` once its handler is in place.
const APP: &str = r#"
import os, signal, sqlite3, sys, time
db, mode, per_tx = sys.argv[1], sys.argv[2], int(sys.argv[3])
stop = False
def on_stop(sig, frame):
    global stop
    stop = True
if mode != "die":
    signal.signal(signal.SIGTERM, on_stop)
open(db + ".started", "w").close()
c = sqlite3.connect(db, timeout=5, isolation_level=None)
c.execute("pragma journal_mode=wal")
c.execute("create table if not exists t(id integer primary key, v text not null)")
n = c.execute("select coalesce(max(id), 0) from t").fetchone()[0]
while not stop:
    c.execute("begin immediate")
    for _ in range(per_tx):
        n += 1
        c.execute("insert into t(id, v) values (?, ?)", (n, "row-%d-%s" % (n, "x" * (n % 97 * 7))))
    c.execute("commit")
    time.sleep(0.002)
c.close()
sys.exit(0 if mode == "ok" else 3)
"#;

// ---------------------------------------------------------------------------------------------
// Randomness, figures

/// splitmix64: small, seedable, good enough to pick moments and modes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn seed() -> u64 {
    std::env::var("FAULTS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
}

fn full_runs() -> usize {
    std::env::var("FAULTS_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200)
}

/// What one scenario class did over its runs.
#[derive(Default)]
struct Tally {
    runs: usize,
    /// Committed rows missing from a restored replica, plus rows it holds that were never kept.
    lost_rows: usize,
    wrong_exit: usize,
    hangs: usize,
    panics: usize,
    /// Any other failure (a restore that fails, integrity_check not ok, ...).
    other: usize,
    failures: String,
}

impl Tally {
    fn fail(&mut self, seed: u64, what: &str) {
        self.other += 1;
        self.note(seed, what);
    }
    fn note(&mut self, seed: u64, what: &str) {
        let _ = writeln!(self.failures, "  run seed {seed}: {what}");
    }
    /// Prints the figures line and fails the test if anything went wrong.
    fn finish(self, scenario: &str, seed: u64) {
        println!(
            "FAULTS|{scenario}|{}|{}|{}|{}|{}|{}|{seed}",
            self.runs, self.lost_rows, self.wrong_exit, self.hangs, self.panics, self.other
        );
        assert!(
            self.lost_rows + self.wrong_exit + self.hangs + self.panics + self.other == 0,
            "{scenario} (seed {seed}): {} runs, {} lost rows, {} wrong exit codes, {} hangs, {} panics, {} other failures:\n{}",
            self.runs,
            self.lost_rows,
            self.wrong_exit,
            self.hangs,
            self.panics,
            self.other,
            self.failures
        );
    }
}

/// Runs `runs` runs of `one`, each with its own seed drawn from `seed`, in a fresh directory.
fn scenario(
    name: &str,
    runs: usize,
    seed: u64,
    mut one: impl FnMut(&mut Rng, &Path, &mut Tally, u64),
) {
    // FAULTS_RUN_SEED replays one run (the seed a failure note names).
    let replay: Option<u64> = std::env::var("FAULTS_RUN_SEED")
        .ok()
        .and_then(|s| s.parse().ok());
    let runs = if replay.is_some() { 1 } else { runs };
    println!("{name}: {runs} runs from seed {seed}");
    let mut master = Rng(seed);
    let mut tally = Tally::default();
    for i in 0..runs {
        let run_seed = replay.unwrap_or_else(|| master.next());
        let dir = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let before = tally.failures.len();
        one(&mut Rng(run_seed), dir.path(), &mut tally, run_seed);
        tally.runs += 1;
        if tally.failures.len() != before {
            // A failed run's files (logs, database, replica) stay for a look.
            let kept = dir.keep();
            tally.note(
                run_seed,
                &format!("its files are kept in {}", kept.display()),
            );
        }
        if runs > 5 && (i + 1) % 10 == 0 {
            println!("{name}: {} runs done ({:?} last)", i + 1, started.elapsed());
        }
    }
    tally.finish(name, seed);
}

// ---------------------------------------------------------------------------------------------
// The judge

/// Where a replica lives, as both tools name it, with the environment they need.
#[derive(Clone)]
struct Target {
    url: String,
    env: Vec<(String, String)>,
}

impl Target {
    fn file(dir: &Path) -> Target {
        Target {
            url: format!("file://{}", dir.join("replica").display()),
            env: Vec::new(),
        }
    }
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_remove("AWS_CA_BUNDLE");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }
}

fn s3_env() -> Vec<(String, String)> {
    [
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// (id, v) rows of table t, ordered; empty when the table (or file) is not there.
fn rows(db: &Path) -> Vec<(i64, String)> {
    if !db.exists() {
        return Vec::new();
    }
    let c = rusqlite::Connection::open(db).unwrap();
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    let Ok(mut st) = c.prepare("SELECT id, v FROM t ORDER BY id") else {
        return Vec::new();
    };
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

/// Rows in one list and not the other (both ways).
fn difference(a: &[(i64, String)], b: &[(i64, String)]) -> usize {
    use std::collections::HashSet;
    let sa: HashSet<_> = a.iter().collect();
    let sb: HashSet<_> = b.iter().collect();
    sa.symmetric_difference(&sb).count()
}

/// Restores `target` with `tool` ("litestream" or litevisor) into `out`: Ok(None) when the tool
/// says there is nothing to restore, Err with its output when it fails otherwise.
fn restore_with(tool: &str, target: &Target, out: &Path) -> Result<Option<PathBuf>, String> {
    let _ = fs::remove_file(out);
    let output = target
        .command(tool)
        .arg("restore")
        .arg("-o")
        .arg(out)
        .arg(&target.url)
        .output()
        .map_err(|e| format!("run {tool}: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() {
        return Ok(Some(out.to_path_buf()));
    }
    let lower = text.to_lowercase();
    if lower.contains("no matching backup")
        || lower.contains("no backups found")
        || lower.contains("nothing to restore")
        || lower.contains("no snapshot")
        || lower.contains("is empty")
    {
        return Ok(None);
    }
    Err(format!("{tool} restore failed ({}): {text}", output.status))
}

/// How the restored rows must relate to the live ones.
#[derive(Clone, Copy, PartialEq)]
enum Expect {
    /// Exactly the live rows.
    Exact,
    /// A committed prefix of the live rows (after a SIGKILL: the last transactions may be missing).
    Prefix,
}

/// Restores with both tools and compares with `live`; counts into `tally`. Returns the number of
/// rows Litestream restored.
fn judge(
    target: &Target,
    live: &Path,
    dir: &Path,
    expect: Expect,
    tally: &mut Tally,
    seed: u64,
) -> usize {
    let want = rows(live);
    if want.is_empty() {
        return 0;
    }
    if integrity(live) != "ok" {
        tally.fail(seed, "the live database fails integrity_check");
    }
    let mut restored_count = 0;
    for tool in ["litestream", LITEVISOR] {
        let name = if tool == "litestream" {
            "litestream"
        } else {
            "litevisor"
        };
        let out = dir.join(format!("restored-{name}.db"));
        let got = match restore_with(tool, target, &out) {
            Ok(Some(path)) => {
                let check = integrity(&path);
                if check != "ok" {
                    tally.fail(seed, &format!("{name} restore: integrity_check {check}"));
                }
                rows(&path)
            }
            Ok(None) => Vec::new(),
            Err(e) => {
                tally.fail(seed, &e);
                continue;
            }
        };
        if tool == "litestream" {
            restored_count = got.len();
        }
        let bad = match expect {
            Expect::Exact => difference(&want, &got),
            Expect::Prefix => {
                if want.starts_with(&got) {
                    0
                } else {
                    difference(&want[..got.len().min(want.len())], &got).max(1)
                }
            }
        };
        if bad > 0 {
            tally.lost_rows += bad;
            tally.note(
                seed,
                &format!(
                    "{name} restored {} rows, the database keeps {} ({bad} differ, expected {})",
                    got.len(),
                    want.len(),
                    if expect == Expect::Exact {
                        "exactly those"
                    } else {
                        "a prefix"
                    }
                ),
            );
        }
    }
    restored_count
}

// ---------------------------------------------------------------------------------------------
// Running litevisor

fn spawn_litevisor(
    target: &Target,
    dir: &Path,
    db: &Path,
    flags: &[String],
    tag: &str,
) -> Replicator {
    let mut cmd = target.command(LITEVISOR);
    cmd.env("LITEVISOR_SOCKET", dir.join(format!("{tag}.sock")))
        .arg("replicate")
        .args(["-log-level", "debug"])
        .args(flags)
        .arg(db)
        .arg(&target.url);
    Replicator::spawn(cmd, dir.join(format!("{tag}.log")))
}

/// Waits up to `limit` for the exit; None (a hang) past it, the process then killed.
fn wait_exit(r: &mut Replicator, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = r.child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            let _ = r.child.kill();
            let _ = r.child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

fn signal(r: &Replicator, sig: i32) {
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe { libc::kill(r.child.id() as i32, sig) };
}

/// SIGTERM once litevisor handles it (see `handles_sigterm`), then waits; counts hangs and
/// panics. Returns the exit code, None on a hang.
fn stop(r: &mut Replicator, limit: Duration, tally: &mut Tally, seed: u64) -> Option<i32> {
    let pid = r.child.id() as i32;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !handles_sigterm(pid) && Instant::now() < deadline && r.alive() {
        std::thread::sleep(Duration::from_millis(1));
    }
    signal(r, libc::SIGTERM);
    let status = wait_exit(r, limit);
    check_log(r, tally, seed);
    match status {
        Some(s) => Some(code(s)),
        None => {
            tally.hangs += 1;
            tally.note(
                seed,
                &format!("litevisor did not exit within {limit:?}; log:\n{}", tail(r)),
            );
            None
        }
    }
}

fn check_log(r: &Replicator, tally: &mut Tally, seed: u64) {
    let log = r.log_text();
    if log.contains("panicked at") {
        tally.panics += 1;
        tally.note(seed, &format!("litevisor panicked; log:\n{}", tail(r)));
    }
}

fn tail(r: &Replicator) -> String {
    let log = r.log_text();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// A writer thread in this process: rows with increasing ids in transactions of 1..=5 rows until
/// told to stop. A failed transaction (disk full) is rolled back and tried again a little later;
/// `failures` counts them.
struct Writer {
    stop: Arc<AtomicBool>,
    failures: Arc<AtomicI64>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(db: &Path, seed: u64) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(AtomicI64::new(0));
        let (s, fails, db) = (stop.clone(), failures.clone(), db.to_path_buf());
        let handle = std::thread::spawn(move || {
            let mut rng = Rng(seed);
            let mut c = replicate_support::app(&db);
            replicate_support::create_table(&c);
            let mut next: i64 = c
                .query_row("SELECT coalesce(max(id), 0) FROM t", [], |r| r.get(0))
                .unwrap();
            while !s.load(Ordering::SeqCst) {
                let n = 1 + rng.below(5) as i64;
                let tx = (|| {
                    let tx = c.transaction()?;
                    for id in next + 1..=next + n {
                        tx.execute(
                            "INSERT INTO t(id, v) VALUES (?1, ?2)",
                            rusqlite::params![id, replicate_support::value(id)],
                        )?;
                    }
                    tx.commit()
                })();
                match tx {
                    Ok(()) => next += n,
                    Err(_) => {
                        fails.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
                std::thread::sleep(Duration::from_millis(1 + rng.below(4)));
            }
        });
        Writer {
            stop,
            failures,
            handle: Some(handle),
        }
    }
    fn finish(mut self) -> i64 {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            h.join().expect("writer thread");
        }
        self.failures.load(Ordering::SeqCst)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn monitor_flags(rng: &mut Rng) -> Vec<String> {
    let interval = ["50ms", "200ms", "1s"][rng.below(3) as usize];
    vec!["-monitor-interval".into(), interval.into()]
}

// ---------------------------------------------------------------------------------------------
// Scenario: graceful stops with writes in flight

fn graceful_stop(rng: &mut Rng, dir: &Path, tally: &mut Tally, seed: u64) {
    let db = dir.join("app.db");
    let target = Target::file(dir);
    let app = dir.join("app.py");
    fs::write(&app, APP).unwrap();
    let mode = ["ok", "fail", "die"][rng.below(3) as usize];
    let per_tx = 1 + rng.below(20);
    let mut flags = monitor_flags(rng);
    // A third of the runs start from a replica only, so the stop can land in the restore.
    if rng.chance(33) {
        let mut first = spawn_litevisor(&target, dir, &db, &flags, "seed");
        let w = Writer::start(&db, rng.next());
        std::thread::sleep(rng.ms(200, 800));
        w.finish();
        if stop(&mut first, Duration::from_secs(60), tally, seed) != Some(0) {
            tally.fail(seed, "the seeding run did not stop with 0");
            return;
        }
        for f in ["app.db", "app.db-wal", "app.db-shm"] {
            let _ = fs::remove_file(dir.join(f));
        }
        flags.push("-restore-if-db-not-exists".into());
    }
    flags.push("-exec".into());
    flags.push(format!(
        "python3 {} {} {mode} {per_tx}",
        app.display(),
        db.display()
    ));
    let mut lv = spawn_litevisor(&target, dir, &db, &flags, "lv");
    std::thread::sleep(rng.ms(0, 2000));
    // Sometimes the stop signal comes twice (GNU timeout, a group and its leader).
    let twice = rng.chance(25);
    let started = db.with_extension("db.started").exists();
    let Some(got) = ({
        if twice {
            let pid = lv.child.id() as i32;
            while !handles_sigterm(pid) && lv.alive() {
                std::thread::sleep(Duration::from_millis(1));
            }
            signal(&lv, libc::SIGTERM);
            std::thread::sleep(Duration::from_millis(100));
        }
        stop(&mut lv, Duration::from_secs(60), tally, seed)
    }) else {
        return;
    };
    let started = started || db.with_extension("db.started").exists();
    let wanted: &[i32] = match (started, mode) {
        (true, "ok") => &[0],
        (true, "fail") => &[3],
        (true, _) => &[143],
        // Not started yet (or killed before its handler was in place): the program never ran
        // its stop, litevisor reports SIGTERM.
        (false, _) => &[143, 0],
    };
    if !wanted.contains(&got) {
        tally.wrong_exit += 1;
        tally.note(
            seed,
            &format!(
                "mode {mode}, started {started}: exit {got}, expected {wanted:?}; log:\n{}",
                tail(&lv)
            ),
        );
    }
    let n = judge(&target, &db, dir, Expect::Exact, tally, seed);
    println!("  seed {seed}: mode {mode}, started {started}, twice {twice}, exit {got}, {n} rows");
}

#[test]
fn quick_graceful_stops() {
    scenario("graceful-stop", 4, seed(), graceful_stop);
}

#[test]
#[ignore = "full form: scripts/faults"]
fn full_graceful_stops() {
    scenario("graceful-stop", full_runs(), seed(), graceful_stop);
}

// ---------------------------------------------------------------------------------------------
// Scenario: SIGKILL of litevisor, then a restart

fn sigkill_restart(rng: &mut Rng, dir: &Path, tally: &mut Tally, seed: u64) {
    let db = dir.join("app.db");
    let target = Target::file(dir);
    let flags = monitor_flags(rng);
    let writer = Writer::start(&db, rng.next());
    let mut lv = spawn_litevisor(&target, dir, &db, &flags, "lv1");
    std::thread::sleep(rng.ms(0, 2500));
    signal(&lv, libc::SIGKILL);
    let _ = wait_exit(&mut lv, Duration::from_secs(10));
    check_log(&lv, tally, seed);
    // The replica as the SIGKILL left it: a committed prefix of the database.
    let prefix = judge(&target, &db, dir, Expect::Prefix, tally, seed);
    // Restarted (writes go on meanwhile), it catches up to all of it.
    let mut lv2 = spawn_litevisor(&target, dir, &db, &flags, "lv2");
    std::thread::sleep(rng.ms(100, 1000));
    writer.finish();
    match stop(&mut lv2, Duration::from_secs(60), tally, seed) {
        Some(0) => {}
        Some(other) => {
            tally.wrong_exit += 1;
            tally.note(
                seed,
                &format!("restart exited {other}; log:\n{}", tail(&lv2)),
            );
        }
        None => return,
    }
    let n = judge(&target, &db, dir, Expect::Exact, tally, seed);
    println!("  seed {seed}: {prefix} rows at the SIGKILL, {n} after the restart");
}

#[test]
fn quick_sigkills() {
    scenario("sigkill-restart", 4, seed(), sigkill_restart);
}

#[test]
#[ignore = "full form: scripts/faults"]
fn full_sigkills() {
    scenario("sigkill-restart", full_runs(), seed(), sigkill_restart);
}

// ---------------------------------------------------------------------------------------------
// Scenario: S3 faults through a fault-injecting proxy in front of moto

struct S3Rig {
    server: s3_server::S3Server,
    proxy: s3_proxy::FaultProxy,
    bucket_n: usize,
}

impl S3Rig {
    fn start() -> S3Rig {
        let server = s3_server::S3Server::start();
        let proxy = s3_proxy::FaultProxy::start(server.port);
        S3Rig {
            server,
            proxy,
            bucket_n: 0,
        }
    }
    /// A fresh bucket: (through the proxy, straight to moto) targets.
    fn targets(&mut self) -> (Target, Target) {
        self.bucket_n += 1;
        let bucket = format!("faults{}", self.bucket_n);
        self.server.create_bucket(&bucket);
        let t = |endpoint: &str| Target {
            url: format!("s3://{bucket}/db?endpoint={endpoint}&forcePathStyle=true"),
            env: s3_env(),
        };
        (t(&self.proxy.endpoint), t(&self.server.endpoint))
    }
    fn clear(&self) {
        let f = &self.proxy.faults;
        f.fail_permille.store(0, Ordering::SeqCst);
        f.reset_permille.store(0, Ordering::SeqCst);
        f.down.store(false, Ordering::SeqCst);
        f.stall.store(false, Ordering::SeqCst);
    }
}

const S3_KINDS: [&str; 5] = [
    "a share of 503s",
    "a share of connection resets",
    "a stalled connection",
    "S3 down for a while",
    "S3 down at the stop",
];

fn s3_fault(rig: &mut S3Rig, rng: &mut Rng, dir: &Path, tally: &mut Tally, seed: u64) {
    rig.clear();
    let (via_proxy, direct) = rig.targets();
    let f = rig.proxy.faults.clone();
    f.seed.store(rng.next(), Ordering::SeqCst);
    let db = dir.join("app.db");
    // FAULTS_S3_KIND forces one kind; FAULTS_S3_DOWN_SECS sets how long kind 3 keeps S3 down
    // (default: 1 to 5 s; the full form runs a few with minutes).
    let kind = std::env::var("FAULTS_S3_KIND")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or_else(|| rng.below(5));
    let down_for = std::env::var("FAULTS_S3_DOWN_SECS")
        .ok()
        .and_then(|k| k.parse().ok())
        .map_or_else(|| rng.ms(1000, 5000), Duration::from_secs);
    let mut flags = monitor_flags(rng);
    let sync_timeout = 2 + rng.below(4);
    if kind == 4 {
        flags.push("-shutdown-sync-timeout".into());
        flags.push(format!("{sync_timeout}s"));
    }
    let writer = Writer::start(&db, rng.next());
    let mut lv = spawn_litevisor(&via_proxy, dir, &db, &flags, "lv");
    match kind {
        // 5xx for a share of the requests, then resets for a share.
        0 => f
            .fail_permille
            .store(100 + rng.below(300), Ordering::SeqCst),
        1 => f
            .reset_permille
            .store(100 + rng.below(300), Ordering::SeqCst),
        // A stalled connection for a while, then released.
        2 => {
            std::thread::sleep(rng.ms(100, 800));
            f.stall.store(true, Ordering::SeqCst);
            std::thread::sleep(rng.ms(500, 3000));
            f.stall.store(false, Ordering::SeqCst);
        }
        // S3 down for a while, then back.
        3 => {
            std::thread::sleep(rng.ms(100, 800));
            f.down.store(true, Ordering::SeqCst);
            std::thread::sleep(down_for);
            f.down.store(false, Ordering::SeqCst);
        }
        // S3 down at the stop: handled below.
        _ => {}
    }
    std::thread::sleep(rng.ms(500, 2500));
    writer.finish();
    let mut restart = false;
    if kind == 4 {
        f.down.store(true, Ordering::SeqCst);
        // The stop is bounded by -shutdown-sync-timeout; 15 s of slack for a loaded machine.
        let bound = Duration::from_secs(sync_timeout + 15);
        let t0 = Instant::now();
        let got = stop(&mut lv, bound, tally, seed);
        if got == Some(0) {
            tally.wrong_exit += 1;
            tally.note(seed, "exit 0 although S3 was down at the stop");
        }
        if got.is_some() {
            println!(
                "  s3 down at the stop: exit {got:?} after {:?} (shutdown-sync-timeout {sync_timeout}s)",
                t0.elapsed()
            );
        }
        // The rows are kept locally and uploaded at the next start.
        f.down.store(false, Ordering::SeqCst);
        restart = true;
    } else {
        // Faults keep going through the stop (shares), or are over (stall, down): the final
        // sync must get everything there within the bound. One exception: after a long outage
        // the backlog (one L0 per sync, as in Litestream) may take longer to upload than the
        // final sync's 30 s; then exit 74 after using all of it is right, and the next start
        // uploads the rest.
        let t0 = Instant::now();
        match stop(&mut lv, Duration::from_secs(90), tally, seed) {
            Some(0) => {}
            Some(74) if kind == 3 && t0.elapsed() >= Duration::from_secs(30) => {
                println!(
                    "  seed {seed}: S3 back {down_for:?} later, the backlog outlasted the final sync (exit 74 after {:?}); restarting",
                    t0.elapsed()
                );
                restart = true;
            }
            Some(other) => {
                tally.wrong_exit += 1;
                tally.note(
                    seed,
                    &format!("kind {kind}: exit {other}; log:\n{}", tail(&lv)),
                );
            }
            None => return,
        }
    }
    if restart {
        let mut again = spawn_litevisor(&via_proxy, dir, &db, &flags, "lv2");
        std::thread::sleep(rng.ms(200, 800));
        match stop(&mut again, Duration::from_secs(90), tally, seed) {
            Some(0) => {}
            Some(other) => {
                tally.wrong_exit += 1;
                tally.note(
                    seed,
                    &format!("restart exited {other}; log:\n{}", tail(&again)),
                );
            }
            None => return,
        }
    }
    rig.clear();
    let n = judge(&direct, &db, dir, Expect::Exact, tally, seed);
    println!(
        "  seed {seed}: kind {kind} ({}), {n} rows, {} faults injected so far",
        S3_KINDS[kind as usize],
        rig.proxy.injected()
    );
}

fn s3_scenario(runs: usize) {
    let mut rig = S3Rig::start();
    scenario("s3-faults", runs, seed(), |rng, dir, tally, s| {
        s3_fault(&mut rig, rng, dir, tally, s)
    });
}

#[test]
fn quick_s3_faults() {
    s3_scenario(5);
}

#[test]
#[ignore = "full form: scripts/faults"]
fn full_s3_faults() {
    s3_scenario(full_runs());
}

// ---------------------------------------------------------------------------------------------
// Scenario: what the app (or an operator) does to the database beside litevisor

/// A database made elsewhere (e.g. restored from another backup): other rows under the same ids.
fn other_database(path: &Path, rng: &mut Rng) {
    let c = replicate_support::app(path);
    replicate_support::create_table(&c);
    let n = 1 + rng.below(3000) as i64;
    c.execute_batch("BEGIN").unwrap();
    for id in 1..=n {
        c.execute(
            "INSERT INTO t(id, v) VALUES (?1, ?2)",
            rusqlite::params![id, format!("replaced-{id}")],
        )
        .unwrap();
    }
    c.execute_batch("COMMIT; PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
}

/// Puts `other` in place of `db` the way a restore tool does (rename over it), WAL and shm gone.
fn replace_database(db: &Path, other: &Path) {
    let _ = fs::remove_file(db.with_extension("db-wal"));
    let _ = fs::remove_file(db.with_extension("db-shm"));
    fs::rename(other, db).unwrap();
}

const LOCAL_KINDS: [&str; 6] = [
    "checkpoint(TRUNCATE) while down",
    "VACUUM while down",
    "VACUUM while running",
    "database replaced while down",
    "WAL deleted while down",
    "database replaced while running",
];

fn local_fault(rng: &mut Rng, dir: &Path, tally: &mut Tally, seed: u64) {
    let db = dir.join("app.db");
    let target = Target::file(dir);
    let flags = monitor_flags(rng);
    let kind = rng.below(LOCAL_KINDS.len() as u64) as usize;
    let mut lv = spawn_litevisor(&target, dir, &db, &flags, "lv1");
    let writer = Writer::start(&db, rng.next());
    std::thread::sleep(rng.ms(200, 1200));
    // Some deleted rows, so that VACUUM has pages to move.
    writer.finish();
    {
        let c = replicate_support::app(&db);
        c.execute("DELETE FROM t WHERE id % 3 = 0", []).unwrap();
    }
    match stop(&mut lv, Duration::from_secs(60), tally, seed) {
        Some(0) => {}
        Some(other) => {
            tally.wrong_exit += 1;
            tally.note(
                seed,
                &format!("first run exited {other}; log:\n{}", tail(&lv)),
            );
        }
        None => return,
    }
    match kind {
        0 => {
            let mut c = replicate_support::app(&db);
            replicate_support::insert(&mut c, 1_000_000..1_000_050, 7);
            c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
        }
        1 => {
            let c = replicate_support::app(&db);
            c.execute_batch("VACUUM").unwrap();
        }
        3 => {
            other_database(&dir.join("other.db"), rng);
            replace_database(&db, &dir.join("other.db"));
        }
        4 => {
            let mut c = replicate_support::app(&db);
            replicate_support::insert(&mut c, 1_000_000..1_000_050, 7);
            c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
            drop(c);
            let _ = fs::remove_file(db.with_extension("db-wal"));
        }
        _ => {}
    }
    let mut lv = spawn_litevisor(&target, dir, &db, &flags, "lv2");
    let writer = Writer::start(&db, rng.next());
    std::thread::sleep(rng.ms(200, 1000));
    let writer = match kind {
        2 => {
            let c = replicate_support::app(&db);
            c.execute_batch("VACUUM").unwrap();
            writer
        }
        5 => {
            writer.finish();
            other_database(&dir.join("other.db"), rng);
            replace_database(&db, &dir.join("other.db"));
            Writer::start(&db, rng.next())
        }
        _ => writer,
    };
    std::thread::sleep(rng.ms(200, 1000));
    writer.finish();
    match stop(&mut lv, Duration::from_secs(60), tally, seed) {
        Some(0) => {}
        Some(other) => {
            tally.wrong_exit += 1;
            tally.note(
                seed,
                &format!("{}: exited {other}; log:\n{}", LOCAL_KINDS[kind], tail(&lv)),
            );
        }
        None => return,
    }
    let n = judge(&target, &db, dir, Expect::Exact, tally, seed);
    println!("  seed {seed}: {}, {n} rows", LOCAL_KINDS[kind]);
}

#[test]
fn quick_local_faults() {
    scenario("local-faults", 6, seed(), local_fault);
}

#[test]
#[ignore = "full form: scripts/faults"]
fn full_local_faults() {
    scenario("local-faults", full_runs(), seed(), local_fault);
}

// ---------------------------------------------------------------------------------------------
// Scenario: disk full (a small tmpfs) under the database or under the replica

/// A tmpfs of `size` bytes mounted at `at`; unmounted on drop. None when mounting is not allowed
/// (not root): the scenario then says so and is skipped.
struct SmallFs(PathBuf);

impl SmallFs {
    fn mount(at: &Path, size: u64) -> Option<SmallFs> {
        fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| SmallFs(at.to_path_buf()))
    }
    fn grow(&self) {
        let ok = Command::new("mount")
            .args(["-o", "remount,size=256m"])
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "remount {}", self.0.display());
    }
    /// Writes a file until the filesystem has no byte left.
    fn fill(&self) {
        use std::io::Write;
        let mut f = fs::File::create(self.0.join("filler")).unwrap();
        let chunk = vec![0u8; 4096];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.flush();
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn disk_full(rng: &mut Rng, dir: &Path, tally: &mut Tally, seed: u64) {
    let db_full = rng.chance(50);
    let size = if db_full {
        (512 + rng.below(1024)) * 1024
    } else {
        (128 + rng.below(512)) * 1024
    };
    let Some(small) = SmallFs::mount(&dir.join("small"), size) else {
        println!("  SKIP: cannot mount a tmpfs (needs root)");
        return;
    };
    let (db, target) = if db_full {
        (small.0.join("app.db"), Target::file(dir))
    } else {
        (
            dir.join("app.db"),
            Target {
                url: format!("file://{}", small.0.join("replica").display()),
                env: Vec::new(),
            },
        )
    };
    let flags = monitor_flags(rng);
    let writer = Writer::start(&db, rng.next());
    let mut lv = spawn_litevisor(&target, dir, &db, &flags, "lv");
    // The app and litevisor use some of it; then a filler takes every byte left, for longer than
    // the longest monitor interval, so that the app's commits and litevisor's writes meet ENOSPC.
    std::thread::sleep(rng.ms(200, 1500));
    small.fill();
    std::thread::sleep(rng.ms(1500, 3000));
    if !lv.alive() {
        tally.wrong_exit += 1;
        tally.note(
            seed,
            &format!("litevisor exited on a full disk; log:\n{}", tail(&lv)),
        );
    }
    small.grow();
    std::thread::sleep(rng.ms(500, 1500));
    let write_failures = writer.finish();
    match stop(&mut lv, Duration::from_secs(90), tally, seed) {
        Some(0) => {}
        Some(other) => {
            tally.wrong_exit += 1;
            tally.note(
                seed,
                &format!("exit {other} after space came back; log:\n{}", tail(&lv)),
            );
        }
        None => return,
    }
    let log = lv.log_text();
    if !log.contains("No space left on device") && !log.contains("disk is full") {
        tally.fail(seed, "the filesystem was full but the log never says so");
    }
    let n = judge(&target, &db, dir, Expect::Exact, tally, seed);
    println!(
        "  seed {seed}: {} full ({size} bytes), {write_failures} failed app transactions, {n} rows",
        if db_full {
            "database's filesystem"
        } else {
            "replica's filesystem"
        }
    );
}

#[test]
fn quick_disk_full() {
    scenario("disk-full", 4, seed(), disk_full);
}

#[test]
#[ignore = "full form: scripts/faults"]
fn full_disk_full() {
    scenario("disk-full", full_runs(), seed(), disk_full);
}

// ---------------------------------------------------------------------------------------------
// Scenario: bad input (configuration files, service directories, corrupted replica files)

/// A malformed configuration: the files (relative to the run's dir; `@` stands for the dir), the
/// command after `litevisor`, and what the error must name besides the file (a key or a line).
struct BadConfig {
    name: &'static str,
    files: &'static [(&'static str, &'static str)],
    args: &'static [&'static str],
    names: &'static str,
}

const TOML_ARGS: &[&str] = &["--config", "@/litevisor.toml"];
const YML_ARGS: &[&str] = &["replicate", "-config", "@/litestream.yml"];

/// Every case starts nothing (a service would create `@/started`) and writes no database or replica.
const BAD_CONFIGS: &[BadConfig] = &[
    BadConfig {
        name: "toml syntax error",
        files: &[(
            "litevisor.toml",
            "[services.app]\ncommand = \"touch @/started\"\nmain = tru\n",
        )],
        args: TOML_ARGS,
        names: ":3:",
    },
    BadConfig {
        name: "toml unknown key",
        files: &[(
            "litevisor.toml",
            "[services.app]\ncommand = \"touch @/started\"\ncomand = \"x\"\n",
        )],
        args: TOML_ARGS,
        names: "comand",
    },
    BadConfig {
        name: "toml bad duration",
        files: &[(
            "litevisor.toml",
            "grace = \"10 parsecs\"\n[services.app]\ncommand = \"touch @/started\"\n",
        )],
        args: TOML_ARGS,
        names: "grace",
    },
    BadConfig {
        name: "toml bad signal",
        files: &[(
            "litevisor.toml",
            "[services.app]\ncommand = \"touch @/started\"\nstop_signal = \"SIGNOPE\"\n",
        )],
        args: TOML_ARGS,
        names: "stop_signal",
    },
    BadConfig {
        name: "toml dependency cycle",
        files: &[(
            "litevisor.toml",
            "[services.a]\ncommand = \"touch @/started\"\ndepends_on = [\"b\"]\n[services.b]\ncommand = \"touch @/started\"\ndepends_on = [\"a\"]\n",
        )],
        args: TOML_ARGS,
        names: "depends_on",
    },
    BadConfig {
        name: "toml undefined dependency",
        files: &[(
            "litevisor.toml",
            "[services.a]\ncommand = \"touch @/started\"\ndepends_on = [\"ghost\"]\n",
        )],
        args: TOML_ARGS,
        names: "ghost",
    },
    BadConfig {
        name: "toml two main services",
        files: &[(
            "litevisor.toml",
            "[services.a]\ncommand = \"touch @/started\"\nmain = true\n[services.b]\ncommand = \"touch @/started\"\nmain = true\n",
        )],
        args: TOML_ARGS,
        names: "main",
    },
    BadConfig {
        name: "toml program not on PATH",
        files: &[(
            "litevisor.toml",
            "[services.a]\ncommand = [\"no-such-program-anywhere\", \"@/started\"]\n",
        )],
        args: TOML_ARGS,
        names: "no-such-program-anywhere",
    },
    BadConfig {
        name: "toml notification_fd below 3",
        files: &[(
            "litevisor.toml",
            "[services.a]\ncommand = \"touch @/started\"\nnotification_fd = 1\n",
        )],
        args: TOML_ARGS,
        names: "notification_fd",
    },
    BadConfig {
        name: "toml unknown user",
        files: &[(
            "litevisor.toml",
            "[services.a]\ncommand = \"touch @/started\"\nuser = \"nobody-here-at-all\"\n",
        )],
        args: TOML_ARGS,
        names: "user",
    },
    BadConfig {
        name: "toml database with a bad replica",
        files: &[(
            "litevisor.toml",
            "[services.a]\ncommand = \"touch @/started\"\n[[databases]]\npath = \"@/app.db\"\nreplica = \"gs://bucket/app.db\"\n",
        )],
        args: TOML_ARGS,
        names: "replica",
    },
    BadConfig {
        name: "toml binary garbage",
        files: &[("litevisor.toml", "\u{0}\u{1}\u{2}[[[\u{7f}\n=\n")],
        args: TOML_ARGS,
        names: ":1:",
    },
    BadConfig {
        name: "service dir run not executable",
        files: &[
            ("litevisor.toml", "services_dir = \"@/services.d\"\n"),
            ("services.d/app/run", "#!/bin/sh\ntouch @/started\n"),
        ],
        args: TOML_ARGS,
        names: "run",
    },
    BadConfig {
        name: "service dir bad service.toml",
        files: &[
            ("litevisor.toml", "services_dir = \"@/services.d\"\n"),
            ("services.d/app/service.toml", "restart = \"sometimes\"\n"),
        ],
        args: TOML_ARGS,
        names: "restart",
    },
    BadConfig {
        name: "service dir missing interpreter",
        files: &[
            ("litevisor.toml", "services_dir = \"@/services.d\"\n"),
            (
                "services.d/app/run",
                "#!/no/such/interpreter\ntouch @/started\n",
            ),
        ],
        args: TOML_ARGS,
        names: "/no/such/interpreter",
    },
    BadConfig {
        name: "services_dir missing",
        files: &[("litevisor.toml", "services_dir = \"@/nowhere\"\n")],
        args: TOML_ARGS,
        names: "services_dir",
    },
    BadConfig {
        name: "yml syntax error",
        files: &[(
            "litestream.yml",
            "exec: touch @/started\ndbs:\n  - path: @/app.db\n    replica: [url: file://@/replica\n",
        )],
        args: YML_ARGS,
        names: "litestream.yml:",
    },
    BadConfig {
        name: "yml bad duration",
        files: &[(
            "litestream.yml",
            "exec: touch @/started\ndbs:\n  - path: @/app.db\n    monitor-interval: soon\n    replica:\n      url: file://@/replica\n",
        )],
        args: YML_ARGS,
        names: "monitor-interval",
    },
    BadConfig {
        name: "yml unsupported replica type",
        files: &[(
            "litestream.yml",
            "exec: touch @/started\ndbs:\n  - path: @/app.db\n    replica:\n      url: gs://bucket/app.db\n",
        )],
        args: YML_ARGS,
        names: "gs",
    },
    BadConfig {
        name: "yml two replicas",
        files: &[(
            "litestream.yml",
            "exec: touch @/started\ndbs:\n  - path: @/app.db\n    replicas:\n      - url: file://@/replica\n      - url: file://@/replica2\n",
        )],
        args: YML_ARGS,
        names: "replicas",
    },
    BadConfig {
        name: "yml database without path",
        files: &[(
            "litestream.yml",
            "exec: touch @/started\ndbs:\n  - replica:\n      url: file://@/replica\n",
        )],
        args: YML_ARGS,
        names: "path",
    },
    BadConfig {
        name: "yml zero sync interval",
        files: &[(
            "litestream.yml",
            "exec: touch @/started\ndbs:\n  - path: @/app.db\n    replica:\n      url: file://@/replica\n      sync-interval: 0s\n",
        )],
        args: YML_ARGS,
        names: "sync-interval",
    },
    BadConfig {
        name: "yml not a mapping",
        files: &[("litestream.yml", "- just\n- a list\n")],
        args: YML_ARGS,
        names: "litestream.yml",
    },
    BadConfig {
        name: "yml unbalanced exec quotes",
        files: &[(
            "litestream.yml",
            "exec: \"touch '@/started\"\ndbs:\n  - path: @/app.db\n    replica:\n      url: file://@/replica\n",
        )],
        args: YML_ARGS,
        names: "exec",
    },
];

/// Runs `litevisor ARGS` with `dir` for `@`; (exit code or None on a hang, stdout+stderr).
fn run_litevisor(dir: &Path, args: &[&str]) -> (Option<i32>, String) {
    let at = dir.display().to_string();
    let out = dir.join("run.log");
    let mut cmd = Command::new(LITEVISOR);
    cmd.args(args.iter().map(|a| a.replace('@', &at)))
        .env("LITEVISOR_SOCKET", dir.join("run.sock"))
        .env_remove("LITEVISOR_CONFIG")
        .env_remove("AWS_CA_BUNDLE");
    let mut r = Replicator::spawn(cmd, out);
    let status = wait_exit(&mut r, Duration::from_secs(20));
    (status.map(code), r.log_text())
}

fn bad_config(case: &BadConfig, dir: &Path, tally: &mut Tally, seed: u64) {
    let at = dir.display().to_string();
    let mut main_file = None;
    for (rel, text) in case.files {
        let path = dir.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, text.replace('@', &at)).unwrap();
        if rel.ends_with("/run") && !case.name.contains("not executable") {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        }
        main_file.get_or_insert(path);
    }
    let (got, out) = run_litevisor(dir, case.args);
    judge_bad_input(case.name, got, &out, case.names, dir, tally, seed);
    let file = main_file.unwrap();
    let file_name = file.file_name().unwrap().to_string_lossy();
    if !out.contains(&*file_name) && !case.name.starts_with("service dir") {
        tally.fail(
            seed,
            &format!("{}: the error does not name {file_name}:\n{out}", case.name),
        );
    }
    for written in ["started", "app.db", "replica", "replica2"] {
        if dir.join(written).exists() {
            tally.fail(
                seed,
                &format!("{}: {written} was created:\n{out}", case.name),
            );
        }
    }
}

/// The common rules: a non-zero exit in time, no panic, an error naming `names`.
fn judge_bad_input(
    name: &str,
    got: Option<i32>,
    out: &str,
    names: &str,
    dir: &Path,
    tally: &mut Tally,
    seed: u64,
) {
    let _ = dir;
    match got {
        None => {
            tally.hangs += 1;
            tally.note(seed, &format!("{name}: no exit within 20 s:\n{out}"));
        }
        Some(0) => {
            tally.wrong_exit += 1;
            tally.note(seed, &format!("{name}: exit 0:\n{out}"));
        }
        Some(101) | Some(134) => {
            tally.panics += 1;
            tally.note(seed, &format!("{name}: crashed:\n{out}"));
        }
        Some(_) => {}
    }
    if out.contains("panicked at") {
        tally.panics += 1;
        tally.note(seed, &format!("{name}: panicked:\n{out}"));
    }
    if !out.contains(names) {
        tally.fail(
            seed,
            &format!("{name}: the error does not name {names:?}:\n{out}"),
        );
    }
}

/// A file replica of several L0 files (one per `-once` sync) of a database of known rows.
fn small_replica(dir: &Path, rng: &mut Rng) -> (PathBuf, PathBuf) {
    let db = dir.join("src.db");
    let replica = dir.join("replica");
    let mut c = replicate_support::app(&db);
    replicate_support::create_table(&c);
    let batches = 3 + rng.below(4) as i64;
    for b in 0..batches {
        replicate_support::insert(&mut c, b * 100..b * 100 + 50 + rng.below(50) as i64, 10);
        let (code, out) = replicate_support::once(&db, &replica, &[]);
        assert_eq!(code, 0, "{out}");
    }
    (db, replica)
}

const REPLICA_KINDS: [&str; 3] = ["flipped byte", "truncated file", "missing middle file"];

fn corrupt_replica(rng: &mut Rng, dir: &Path, tally: &mut Tally, seed: u64) {
    let (db, replica) = small_replica(dir, rng);
    let files: Vec<PathBuf> = {
        let mut v: Vec<PathBuf> = fs::read_dir(replica.join("ltx/0"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v
    };
    // The undamaged replica's restore: what a harmless flip must still give, byte for byte.
    let clean_db = dir.join("clean.db");
    let url = format!("file://{}", replica.display());
    let (clean, out) = run_litevisor(
        dir,
        &["restore", "-o", &clean_db.display().to_string(), &url],
    );
    assert_eq!(clean, Some(0), "restore of the undamaged replica: {out}");
    let kind = rng.below(3) as usize;
    let victim = match kind {
        2 => files[1 + rng.below(files.len() as u64 - 2) as usize].clone(),
        _ => files[rng.below(files.len() as u64) as usize].clone(),
    };
    let mut bytes = fs::read(&victim).unwrap();
    match kind {
        0 => {
            let at = rng.below(bytes.len() as u64) as usize;
            bytes[at] ^= 1 << rng.below(8);
            fs::write(&victim, &bytes).unwrap();
        }
        1 => {
            bytes.truncate(rng.below(bytes.len() as u64) as usize);
            fs::write(&victim, &bytes).unwrap();
        }
        _ => fs::remove_file(&victim).unwrap(),
    }
    let out_db = dir.join("out.db");
    let victim_name = victim.file_name().unwrap().to_string_lossy().into_owned();
    let what = format!("{} in {victim_name}", REPLICA_KINDS[kind]);
    let (got, out) = run_litevisor(dir, &["restore", "-o", &out_db.display().to_string(), &url]);
    if got == Some(0) {
        // Right only when the damage cannot matter. LTX checksums cover the *decompressed* pages,
        // so a flip inside LZ4 data that decompresses to the same bytes (a match offset within a
        // run of zeros, say) is harmless and undetectable, by Litestream too: the restore must then
        // be exactly the undamaged replica's.
        if kind == 0 && fs::read(&out_db).ok() == fs::read(&clean_db).ok() {
            return;
        }
        let want = rows(&db);
        let have = rows(&out_db);
        if want != have || integrity(&out_db) != "ok" {
            tally.lost_rows += difference(&want, &have).max(1);
            tally.note(
                seed,
                &format!("{what}: restore exited 0 with other rows:\n{out}"),
            );
        } else {
            tally.wrong_exit += 1;
            tally.note(
                seed,
                &format!("{what}: restore exited 0 despite the damage:\n{out}"),
            );
        }
        return;
    }
    // A missing file is named by the gap around it; a damaged one by its own name.
    let names = if kind == 2 {
        "ltx"
    } else {
        victim_name.as_str()
    };
    judge_bad_input(&what, got, &out, names, dir, tally, seed);
    if out_db.exists() {
        tally.fail(
            seed,
            &format!("{what}: the output {} was written", out_db.display()),
        );
    }
    println!("  seed {seed}: {what}: exit {got:?}");
}

fn bad_input(runs: usize, replica_runs: usize) {
    let mut config_case = 0;
    scenario("bad-input", runs, seed(), |rng, dir, tally, s| {
        if config_case < BAD_CONFIGS.len() && (tally.runs + replica_runs < runs || rng.chance(50)) {
            bad_config(&BAD_CONFIGS[config_case], dir, tally, s);
            config_case += 1;
        } else if rng.chance(30) {
            bad_config(
                &BAD_CONFIGS[rng.below(BAD_CONFIGS.len() as u64) as usize],
                dir,
                tally,
                s,
            );
        } else {
            corrupt_replica(rng, dir, tally, s);
        }
    });
}

#[test]
fn quick_bad_input() {
    bad_input(BAD_CONFIGS.len() + 6, 6);
}

#[test]
#[ignore = "full form: scripts/faults"]
fn full_bad_input() {
    bad_input(full_runs().max(BAD_CONFIGS.len() + 1), full_runs() / 2);
}
