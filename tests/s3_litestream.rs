//! Interop with real Litestream 0.5.17 over a real S3-compatible server (moto): litevisor's S3 client
//! lists and reads the objects Litestream replicates (same keys, parsable `litestream-timestamp`,
//! valid LTX), `litevisor restore` rebuilds the database from Litestream's S3 replica, and Litestream
//! restores both a replica whose objects litevisor's client uploaded and one `litevisor replicate`
//! wrote to S3.

mod support;
use support::s3_server;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use litevisor::replica::ReplicaClient;
use litevisor::replica::file::FileReplica;
use litevisor::replica::s3::S3Replica;
use litevisor::replication::ltx;
use s3_server::S3Server;

fn s3(server: &S3Server, bucket: &str, path: &str) -> S3Replica {
    S3Replica::new(server.options(bucket, path))
}

/// `program ARGS` with the S3 server's test credentials.
fn s3_tool(program: &str, args: &[&str]) -> Command {
    let mut cmd = s3_server::s3_command(program);
    cmd.args(args);
    cmd
}

fn litestream(args: &[&str]) -> Command {
    s3_tool("litestream", args)
}

fn litevisor(args: &[&str]) -> Command {
    s3_tool(env!("CARGO_BIN_EXE_litevisor"), args)
}

/// An S3 server with `bucket`, and a scratch directory holding the database `db_name` with `rows`.
fn scene(
    bucket: &str,
    db_name: &str,
    rows: std::ops::Range<i64>,
) -> (S3Server, tempfile::TempDir, PathBuf) {
    let server = S3Server::with_bucket(bucket);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join(db_name);
    create_db(&db, rows);
    (server, dir, db)
}

fn stop(mut child: Child) {
    // SIGTERM: Litestream does its final sync, then exits.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().ok().flatten().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.wait();
}

/// `replicator` (spawned, its output discarded) replicates `db` to `r` until two uploads are
/// there: the first, then one after the rows `more` were inserted; then it is stopped (with its
/// final sync). Returns `db`'s summary, which passes the integrity check.
fn replicate_two_uploads(
    replicator: &mut Command,
    db: &Path,
    more: std::ops::Range<i64>,
    r: &dyn ReplicaClient,
) -> (i64, i64, String) {
    let child = replicator
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the replicator");
    let limit = Duration::from_secs(90);
    support::wait_until("the first upload", limit, || max_txid(r) >= 1);
    let first = max_txid(r);
    insert(db, more);
    support::wait_until("the next upload", limit, || max_txid(r) > first);
    stop(child);
    let expected = summary(db);
    assert_eq!(expected.2, "ok");
    expected
}

/// `TOOL restore -o OUT URL` (`tool`: `litestream` or `litevisor`) succeeds, and `out` has the
/// `expected` summary; `what` names it on failure.
fn assert_restores(
    what: &str,
    tool: fn(&[&str]) -> Command,
    url: &str,
    out: &Path,
    expected: &(i64, i64, String),
) {
    support::run_ok(
        what,
        &mut tool(&["restore", "-o", out.to_str().unwrap(), url]),
    );
    assert_eq!(&summary(out), expected, "{what}");
}

fn create_db(path: &Path, rows: std::ops::Range<i64>) {
    let db = rusqlite::Connection::open(path).unwrap();
    db.execute_batch(
        "PRAGMA journal_mode=WAL; CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v TEXT);",
    )
    .unwrap();
    insert(path, rows);
}

fn insert(path: &Path, rows: std::ops::Range<i64>) {
    let db = rusqlite::Connection::open(path).unwrap();
    db.busy_timeout(Duration::from_secs(10)).unwrap();
    let tx = db.unchecked_transaction().unwrap();
    for i in rows {
        tx.execute(
            "INSERT INTO t(id, v) VALUES (?1, ?2)",
            rusqlite::params![i, format!("row-{i}-{}", "x".repeat(200))],
        )
        .unwrap();
    }
    tx.commit().unwrap();
}

/// (count, sum of ids, integrity_check result)
fn summary(path: &Path) -> (i64, i64, String) {
    let db = rusqlite::Connection::open(path).unwrap();
    let (n, s) = db
        .query_row("SELECT count(*), coalesce(sum(id), 0) FROM t", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    (n, s, check)
}

fn max_txid(r: &dyn ReplicaClient) -> u64 {
    r.ltx_files(0)
        .map(|f| f.iter().map(|f| f.max_txid).max().unwrap_or(0))
        .unwrap_or(0)
}

#[test]
fn litestream_replicates_to_s3_and_litevisor_reads_and_restores_it() {
    let (server, dir, db) = scene("lsrep", "app.db", 0..500);

    let started = SystemTime::now() - Duration::from_secs(5);
    let url = format!(
        "s3://lsrep/app?endpoint={}&forcePathStyle=true",
        server.endpoint
    );
    let r = s3(&server, "lsrep", "app");
    let mut ls = litestream(&["replicate", db.to_str().unwrap(), &url]);
    let expected = replicate_two_uploads(&mut ls, &db, 500..1500, &r);

    // Our listing of Litestream's objects: contiguous L0 files with parsable metadata timestamps.
    let l0 = r.ltx_files_exact(0).unwrap();
    assert!(l0.len() >= 2, "{l0:?}");
    for w in l0.windows(2) {
        assert_eq!(w[1].min_txid, w[0].max_txid + 1, "contiguous: {l0:?}");
    }
    let now = SystemTime::now() + Duration::from_secs(5);
    for f in &l0 {
        assert!(
            f.created_at > started && f.created_at < now,
            "metadata timestamp {:?} outside the run",
            f.created_at
        );
        // The object is a valid LTX file for its name, checksum included.
        let mut dec = ltx::Decoder::new(r.open_ltx(0, f.min_txid, f.max_txid).unwrap()).unwrap();
        assert_eq!(
            (dec.header().min_txid, dec.header().max_txid),
            (f.min_txid, f.max_txid)
        );
        let mut page = vec![0u8; dec.header().page_size as usize];
        while dec.next_page(&mut page).unwrap().is_some() {}
        dec.finish().unwrap();
    }

    // litevisor restore from Litestream's S3 replica, end to end through the binary.
    let out = dir.path().join("restored-by-litevisor.db");
    assert_restores(
        "litevisor's restore of Litestream's S3 replica",
        litevisor,
        &url,
        &out,
        &expected,
    );
}

#[test]
fn litestream_restores_what_litevisor_uploaded() {
    let (server, dir, db) = scene("upload", "src.db", 0..300);

    // A file replica (Litestream writes it), copied to S3 through litevisor's client.
    let file_rep = dir.path().join("file-replica");
    let files = FileReplica::new(&file_rep);
    let file_url = format!("file://{}", file_rep.display());
    let mut ls = litestream(&["replicate", db.to_str().unwrap(), &file_url]);
    let expected = replicate_two_uploads(&mut ls, &db, 300..2000, &files);

    let target = s3(&server, "upload", "copied");
    let mut copied = 0;
    for level in 0..=9u8 {
        for f in files.ltx_files(level).unwrap() {
            let mut src = files.open_ltx(level, f.min_txid, f.max_txid).unwrap();
            let info = target
                .write_ltx(level, f.min_txid, f.max_txid, f.created_at, &mut src)
                .unwrap();
            assert_eq!(info.size, f.size);
            copied += 1;
        }
    }
    assert!(copied >= 2);

    let out = dir.path().join("restored-by-litestream.db");
    let url = format!(
        "s3://upload/copied?endpoint={}&forcePathStyle=true",
        server.endpoint
    );
    assert_restores(
        "Litestream's restore of litevisor's uploads",
        litestream,
        &url,
        &out,
        &expected,
    );
}

#[test]
fn litevisor_replicates_to_s3_and_litestream_restores_it() {
    let (server, dir, db) = scene("lvrep", "lv.db", 0..400);

    let url = format!("s3://lvrep/lv?endpoint={}", server.endpoint);
    let r = s3(&server, "lvrep", "lv");
    let mut lv = litevisor(&["replicate", db.to_str().unwrap(), &url]);
    let expected = replicate_two_uploads(&mut lv, &db, 400..1200, &r);

    // Its objects carry the metadata Litestream's point-in-time restore reads.
    for f in r.ltx_files_exact(0).unwrap() {
        let age = SystemTime::now()
            .duration_since(f.created_at)
            .unwrap_or_default();
        assert!(age < Duration::from_secs(600), "{f:?}");
    }
    let out = dir.path().join("restored-by-litestream.db");
    let url = format!("{url}&forcePathStyle=true");
    assert_restores(
        "Litestream's restore of litevisor's S3 replica",
        litestream,
        &url,
        &out,
        &expected,
    );
}
