//! `litevisor restore -f` (follow mode) against a real primary (litevisor or Litestream 0.5.17
//! replicating a real SQLite database to a file replica): read-only readers querying the follower
//! during a heavy write load never see an error, a broken invariant or a step back; SIGTERM stops
//! it promptly with exit 0; a new history on the replica is applied in place.

mod support;
use support::s3_server;

mod replicate_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use replicate_support::*;
use rusqlite::{Connection, OpenFlags};

/// Accounts whose balances always sum to this (every transaction moves money between two).
const TOTAL: i64 = 1_000_000;

fn bank_tables(c: &Connection) {
    c.execute_batch(
        "CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v TEXT NOT NULL);
         CREATE TABLE IF NOT EXISTS acc(id INTEGER PRIMARY KEY, bal INTEGER NOT NULL);",
    )
    .unwrap();
    let n: i64 = c
        .query_row("SELECT count(*) FROM acc", [], |r| r.get(0))
        .unwrap();
    if n == 0 {
        let tx = c.unchecked_transaction().unwrap();
        for i in 0..100 {
            tx.execute("INSERT INTO acc(id, bal) VALUES (?1, ?2)", [i, TOTAL / 100])
                .unwrap();
        }
        tx.commit().unwrap();
    }
}

/// A primary's database: the application's connection to it with the bank's tables, and the
/// next id to insert in t.
struct Bank {
    c: Connection,
    db: PathBuf,
    next_id: i64,
}

impl Bank {
    fn open(db: &Path) -> Bank {
        let c = app(db);
        bank_tables(&c);
        Bank {
            c,
            db: db.to_path_buf(),
            next_id: 0,
        }
    }

    /// One transaction: `rows` new rows in t (ids contiguous from 0) and a transfer between
    /// accounts.
    fn write(&mut self, rows: usize) {
        let tx = self.c.transaction().unwrap();
        for _ in 0..rows {
            tx.execute(
                "INSERT INTO t(id, v) VALUES (?1, ?2)",
                rusqlite::params![self.next_id, value(self.next_id)],
            )
            .unwrap();
            self.next_id += 1;
        }
        let (a, b) = (self.next_id % 100, (self.next_id * 7 + 3) % 100);
        tx.execute("UPDATE acc SET bal = bal - 17 WHERE id = ?1", [a])
            .unwrap();
        tx.execute("UPDATE acc SET bal = bal + 17 WHERE id = ?1", [b])
            .unwrap();
        tx.commit().unwrap();
    }

    /// One transaction of `rows` rows, then `replicate -once` uploads it to `replica`.
    fn write_once(&mut self, rows: usize, replica: &Path) {
        self.write(rows);
        once_ok(&self.db, replica, &[]);
    }

    /// Writes transactions for `how_long`, the `i`th (from 1) of `rows(i)` rows.
    fn load(&mut self, how_long: Duration, rows: impl Fn(u32) -> usize) {
        let until = Instant::now() + how_long;
        let mut i = 0u32;
        while Instant::now() < until {
            i += 1;
            self.write(rows(i));
        }
    }
}

/// (rows in t, max id + 1, sum of balances) in one read transaction.
fn snapshot(c: &Connection) -> rusqlite::Result<(i64, i64, i64)> {
    c.query_row(
        "SELECT (SELECT count(*) FROM t), (SELECT coalesce(max(id), -1) + 1 FROM t), \
         (SELECT coalesce(sum(bal), 0) FROM acc)",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
}

fn reader(path: &Path) -> Connection {
    let c = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI,
    )
    .unwrap();
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    c
}

/// A reader loop on `out` until `stop`: a persistent connection plus a fresh one every few
/// queries. Returns (queries, errors and violations seen).
fn read_loop(out: PathBuf, stop: Arc<AtomicBool>) -> (u64, Vec<String>) {
    let mut problems = Vec::new();
    let mut queries = 0u64;
    let mut last = 0i64;
    let mut persistent = reader(&out);
    while !stop.load(Ordering::Relaxed) {
        if queries.is_multiple_of(10) {
            persistent = reader(&out);
        }
        queries += 1;
        // An application serving requests pauses between them. Without any pause, SQLite lets this
        // process's connections share their read lock past the follower's PENDING lock and the
        // follower waits for a moment when none of them reads (README, "Read replicas").
        std::thread::sleep(Duration::from_millis(5));
        match snapshot(&persistent) {
            Err(e) => problems.push(format!("query {queries}: {e}")),
            Ok((count, next, sum)) => {
                if count != next {
                    problems.push(format!(
                        "query {queries}: {count} rows but max id + 1 = {next}"
                    ));
                }
                if sum != TOTAL && count > 0 {
                    problems.push(format!("query {queries}: balances sum to {sum}"));
                }
                if count < last {
                    problems.push(format!(
                        "query {queries}: stepped back from {last} to {count}"
                    ));
                }
                last = count;
            }
        }
        if problems.len() > 20 {
            break;
        }
    }
    (queries, problems)
}

fn follower(replica_url: &str, out: &Path, extra: &[&str]) -> Replicator {
    let mut cmd = Command::new(LITEVISOR);
    cmd.env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .args(["restore", "-f", "-follow-interval", "100ms"])
        .args(extra)
        .arg("-o")
        .arg(out)
        .arg(replica_url);
    Replicator::spawn(cmd, out.with_extension("follow.log"))
}

/// Rows in t, or -1 while the output does not exist yet.
fn count(db: &Path) -> i64 {
    if !db.exists() {
        return -1;
    }
    reader(db)
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap_or(-1)
}

/// The usual scene, as `(dir, bank, replica, out)`: the primary's `primary.db` opened as a
/// `Bank`, the path of a file replica beside it and of the follower's output `follower.db`.
fn scene() -> (tempfile::TempDir, Bank, PathBuf, PathBuf) {
    let (dir, replica, out) = bare_scene();
    let bank = Bank::open(&dir.path().join("primary.db"));
    (dir, bank, replica, out)
}

/// The scene of a primary replaced by another, as `(dir, replica, out)`: paths as in `scene`,
/// each test opening its own primaries.
fn bare_scene() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let replica = dir.path().join("replica");
    let out = dir.path().join("follower.db");
    (dir, replica, out)
}

/// Waits up to a minute (showing the follower's log on a timeout) until `out` holds `want` rows
/// in t.
fn wait_rows(f: &Replicator, what: &str, out: &Path, want: i64) {
    wait_for(f, what, Duration::from_secs(60), || count(out) == want);
}

/// A follower of `replica_url` into `out`, past its initial restore: `out` exists, holding `want`
/// rows where that is given.
fn follow(replica_url: &str, out: &Path, want: Option<i64>) -> Replicator {
    let f = follower(replica_url, out, &[]);
    wait_for(&f, "the initial restore", Duration::from_secs(30), || {
        want.map_or(count(out) >= 0, |n| count(out) == n)
    });
    f
}

/// `n` threads running `read_loop` on one output until `finish`.
struct Readers {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<(u64, Vec<String>)>>,
}

impl Readers {
    fn start(n: usize, out: &Path) -> Readers {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..n)
            .map(|_| {
                let (out, stop) = (out.to_path_buf(), stop.clone());
                std::thread::spawn(move || read_loop(out, stop))
            })
            .collect();
        Readers { stop, threads }
    }

    /// Stops the readers: none may have seen a problem, and together they ran more than
    /// `min_queries` queries.
    fn finish(self, min_queries: u64) {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = 0;
        for r in self.threads {
            let (queries, problems) = r.join().unwrap();
            assert!(problems.is_empty(), "reader problems: {problems:#?}");
            total += queries;
        }
        assert!(total > min_queries, "the readers ran only {total} queries");
    }
}

/// The end of a load under `readers`: the follower `f` catches up with all of `bank`'s rows
/// while they still read, the readers stop (`Readers::finish`), the follower stops promptly
/// (`stop_promptly`), then the primary; the follower's rows are the primary's. Returns the
/// primary's exit status.
fn catch_up_and_stop(
    f: Replicator,
    readers: Readers,
    min_queries: u64,
    primary: Replicator,
    bank: &Bank,
    out: &Path,
) -> std::process::ExitStatus {
    wait_rows(&f, "the follower to catch up", out, bank.next_id);
    readers.finish(min_queries);
    stop_promptly(f, out);
    let status = primary.stop();
    assert_eq!(rows(&bank.db), rows(out));
    status
}

/// SIGTERM; the follower must exit 0 within a second, leaving a consistent output.
fn stop_promptly(mut f: Replicator, out: &Path) {
    let pid = f.child.id() as i32;
    // Past its initial restore the follower has had SIGTERM blocked since its first instruction.
    // (`handles_sigterm` cannot tell: sigtimedwait unblocks the signals it waits for while it waits.)
    assert!(f.log_text().contains("following"), "{}", f.log_text());
    let started = Instant::now();
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let status = f.wait_exit(Duration::from_secs(30));
    let took = started.elapsed();
    assert!(
        status.success(),
        "follower exit status {status:?}; log:\n{}",
        f.log_text()
    );
    assert!(
        took < Duration::from_secs(1),
        "the follower took {took:?} to stop; log:\n{}",
        f.log_text()
    );
    assert_eq!(integrity(out), "ok");
}

#[test]
fn readers_never_see_errors_or_steps_back_while_following_litevisor() {
    let (_dir, mut bank, replica, out) = scene();
    for _ in 0..20 {
        bank.write(50);
    }
    let primary = Replicator::litevisor(&bank.db, &replica, &[]);
    wait_first_upload(&primary, &replica);
    let f = follow(&url(&replica), &out, None);
    assert_eq!(
        reader(&out)
            .query_row("PRAGMA journal_mode", [], |r| r.get::<_, String>(0))
            .unwrap(),
        "delete",
        "the follower keeps its output in rollback-journal mode"
    );

    let readers = Readers::start(2, &out);
    // Heavy load: small and large transactions (growing pages, splitting b-trees) for seconds.
    bank.load(Duration::from_secs(8), |i| {
        if i.is_multiple_of(50) { 2000 } else { 5 }
    });
    let status = catch_up_and_stop(f, readers, 100, primary, &bank, &out);
    assert_eq!(status.code(), Some(0));
}

#[test]
fn a_new_history_on_the_replica_is_applied_in_place() {
    let (dir, replica, out) = bare_scene();
    // First history: many rows, a high TXID.
    let mut bank = Bank::open(&dir.path().join("one.db"));
    for _ in 0..60 {
        bank.write(20);
    }
    let p1 = Replicator::litevisor(&bank.db, &replica, &[]);
    wait_first_upload(&p1, &replica);
    for _ in 0..10 {
        bank.write(20);
        let txid = max_l0(&replica);
        wait_for(&p1, "the upload", Duration::from_secs(30), || {
            max_l0(&replica) > txid
        });
    }
    assert_eq!(p1.stop().code(), Some(0));
    let f = follow(&url(&replica), &out, Some(bank.next_id));
    let persistent = reader(&out);
    assert_eq!(snapshot(&persistent).unwrap().0, bank.next_id);

    // The primary is replaced: a different database (fewer transactions, so the TXID goes back)
    // replicated to the same replica path.
    std::fs::remove_dir_all(&replica).unwrap();
    let mut bank2 = Bank::open(&dir.path().join("two.db"));
    bank2.write(7);
    let p2 = Replicator::litevisor(&bank2.db, &replica, &[]);
    wait_rows(
        &f,
        "the follower to take the new history",
        &out,
        bank2.next_id,
    );
    // A connection opened before the switch sees the new state too (applied in place).
    assert_eq!(
        snapshot(&persistent).unwrap(),
        (bank2.next_id, bank2.next_id, TOTAL)
    );
    // The follower reports a new history once the output holds it: wait for the report.
    f.wait_log("new history");
    drop(persistent);
    stop_promptly(f, &out);
    assert_eq!(p2.stop().code(), Some(0));
    assert_eq!(rows(&bank2.db), rows(&out));
}

#[test]
fn l0_files_compacted_away_before_they_were_read_are_caught_up_from_l1() {
    let (_dir, mut bank, replica, out) = scene();
    bank.write_once(30, &replica);
    let mut f = follow(&url(&replica), &out, Some(bank.next_id));
    let pid = f.child.id() as i32;
    // The follower is paused while the primary uploads, compacts to L1 and deletes those L0 files.
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let first_unread = max_l0(&replica) + 1;
    for _ in 0..5 {
        bank.write_once(30, &replica);
    }
    let u = url(&replica);
    let lv = |args: &[&str]| {
        let o = Command::new(LITEVISOR).args(args).output().unwrap();
        assert!(o.status.success(), "{args:?}: {o:?}");
    };
    lv(&["ltx", "-compact", "0:1", &u]);
    // What L0 retention leaves once L1 covers them: only the newest L0 file (done by hand, as
    // `ltx -enforce-retention` keeps L0 files younger than its minimum age).
    let l1_max = replica_files(&replica, 1).last().unwrap().1;
    let newest = max_l0(&replica);
    for (min, max) in replica_files(&replica, 0) {
        if max <= l1_max && max < newest {
            std::fs::remove_file(
                replica
                    .join("ltx/0")
                    .join(format!("{min:016x}-{max:016x}.ltx")),
            )
            .unwrap();
        }
    }
    assert!(
        !replica_files(&replica, 0)
            .iter()
            .any(|&(min, _)| min == first_unread),
        "retention should have deleted L0 {first_unread:x}: {:?}",
        replica_files(&replica, 0)
    );
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    wait_rows(&f, "the follower to catch up from L1", &out, bank.next_id);
    assert!(f.alive());
    // Caught up from L1 and the newest L0 file, not by restoring the whole database again.
    assert!(
        !f.log_text().contains("applied the whole replica"),
        "{}",
        f.log_text()
    );
    stop_promptly(f, &out);
    assert_eq!(rows(&bank.db), rows(&out));
}

#[test]
fn follows_real_litestream_with_readers_never_hurt() {
    let (_dir, mut bank, replica, out) = scene();
    bank.write(100);
    let primary = Replicator::litestream(&bank.db, &replica);
    wait_first_upload(&primary, &replica);
    let f = follow(&url(&replica), &out, None);
    let readers = Readers::start(1, &out);
    bank.load(Duration::from_secs(5), |i| {
        if i.is_multiple_of(40) { 1000 } else { 3 }
    });
    catch_up_and_stop(f, readers, 50, primary, &bank, &out);
}

#[test]
fn follows_real_litestream_on_s3() {
    let server = s3_server::S3Server::start();
    server.create_bucket("follow");
    let (dir, mut bank, _, out) = scene();
    bank.write(100);
    let url = format!(
        "s3://follow/app?endpoint={}&forcePathStyle=true",
        server.endpoint
    );
    let mut cmd = Command::new("litestream");
    cmd.env_remove("AWS_CA_BUNDLE")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .arg("replicate")
        .arg(&bank.db)
        .arg(&url);
    let primary = Replicator::spawn(cmd, dir.path().join("litestream.log"));
    // The follower's initial restore fails until Litestream's first upload: retry it.
    let mut f = follower(&url, &out, &[]);
    wait_until(
        "the initial restore from S3",
        Duration::from_secs(60),
        || {
            if !f.alive() {
                f = follower(&url, &out, &[]);
            }
            count(&out) == bank.next_id
        },
    );
    let readers = Readers::start(1, &out);
    bank.load(Duration::from_secs(4), |_| 5);
    catch_up_and_stop(f, readers, 20, primary, &bank, &out);
}

#[test]
fn a_new_history_past_the_applied_txid_is_recognized() {
    let (dir, replica, out) = bare_scene();
    let mut bank1 = Bank::open(&dir.path().join("one.db"));
    for _ in 0..3 {
        bank1.write_once(10, &replica);
    }
    let f = follow(&url(&replica), &out, Some(bank1.next_id));
    let applied = max_l0(&replica);
    // Another primary's replica, with more transactions, swapped in at once: its L0 file after our
    // TXID exists, but it does not start from our state (and carries no checksum to say so).
    let other = dir.path().join("other");
    let mut bank2 = Bank::open(&dir.path().join("two.db"));
    while max_l0(&other) <= applied + 2 {
        bank2.write_once(3, &other);
    }
    let old = dir.path().join("old");
    std::fs::rename(&replica, &old).unwrap();
    std::fs::rename(&other, &replica).unwrap();
    wait_rows(
        &f,
        "the follower to take the other history",
        &out,
        bank2.next_id,
    );
    // The follower reports a new history once the output holds it: wait for the report.
    f.wait_log("a new history");
    stop_promptly(f, &out);
    assert_eq!(rows(&bank2.db), rows(&out));
}

#[test]
fn follow_flags_are_checked_and_the_config_form_follows() {
    let (dir, mut bank, replica, out) = scene();
    bank.write_once(10, &replica);
    let u = url(&replica);
    let o = out.to_str().unwrap();
    for (args, want) in [
        (
            vec!["restore", "-f", "-txid", "1", "-o", o, &u],
            "cannot use follow mode with -txid or -timestamp",
        ),
        (
            vec!["restore", "-f", "-follow-interval", "0s", "-o", o, &u],
            "-follow-interval must be greater than 0",
        ),
        (
            vec!["restore", "-f", "-follow-interval", "soon", "-o", o, &u],
            "-follow-interval",
        ),
    ] {
        let r = Command::new(LITEVISOR).args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!out.exists());
    }
    // `restore -f -config FILE DB_PATH`: the replica comes from the configuration.
    let config = write_litestream_yml(dir.path(), &bank.db, &replica);
    let mut cmd = Command::new(LITEVISOR);
    cmd.args(["restore", "-f", "-follow-interval", "100ms", "-config"])
        .arg(&config)
        .arg("-o")
        .arg(&out)
        .arg(&bank.db);
    let f = Replicator::spawn(cmd, dir.path().join("follow.log"));
    wait_rows(&f, "the initial restore", &out, bank.next_id);
    bank.write_once(10, &replica);
    wait_rows(&f, "the next transaction", &out, bank.next_id);
    // Litestream's `<db>-txid` sidecar: the applied TXID (written just after the apply).
    let want = format!("{:016x}\n", max_l0(&replica));
    let sidecar = dir.path().join("follower.db-txid");
    wait_for(&f, "the -txid sidecar", Duration::from_secs(10), || {
        std::fs::read_to_string(&sidecar).ok().as_deref() == Some(want.as_str())
    });
    stop_promptly(f, &out);
}
