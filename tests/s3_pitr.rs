//! Point-in-time restore on S3 needs the `litestream-timestamp` metadata, not LastModified: two L0
//! files whose header times (1 minute and 30 s before their upload) differ from their upload times.
//! A `-timestamp` between the two uploads must include both files when the header times are used
//! (as Litestream 0.5.17 does, through HEAD), but only the first by LastModified. litevisor and
//! Litestream must restore the same, newer database.

mod support;
use support::s3_server;

use std::path::Path;
use std::time::{Duration, SystemTime};

use litevisor::replica::s3::S3Replica;
use litevisor::replica::{ReplicaClient, rfc3339};
use s3_server::S3Server;

const PAGE_SIZE: usize = 4096;

fn ltx_file(commit: u32, txid: u64, at: SystemTime, pages: &[(u32, &[u8])]) -> Vec<u8> {
    let ms = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    support::ltx_file(commit, txid, ms, pages)
}

fn borrow(pages: &[(u32, Vec<u8>)]) -> Vec<(u32, &[u8])> {
    pages.iter().map(|(n, d)| (*n, d.as_slice())).collect()
}

fn rows(path: &Path) -> i64 {
    let db = rusqlite::Connection::open(path).unwrap();
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok", "{}", path.display());
    db.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn timestamp_restores_use_the_header_time_like_litestream() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("v.db");
    let db = support::padded_table(&db_path, 1000, 100);
    let v1 = std::fs::read(&db_path).unwrap();
    db.execute_batch(
        "WITH RECURSIVE c(x) AS (SELECT 1001 UNION ALL SELECT x+1 FROM c WHERE x<2000)
         INSERT INTO t SELECT x, printf('%0100d', x) FROM c;",
    )
    .unwrap();
    drop(db);
    let v2 = std::fs::read(&db_path).unwrap();
    let (n1, n2) = ((v1.len() / PAGE_SIZE) as u32, (v2.len() / PAGE_SIZE) as u32);
    let page = |b: &[u8], n: u32| b[(n as usize - 1) * PAGE_SIZE..n as usize * PAGE_SIZE].to_vec();
    let snapshot: Vec<(u32, Vec<u8>)> = (1..=n1).map(|n| (n, page(&v1, n))).collect();
    let changed: Vec<(u32, Vec<u8>)> = (1..=n2)
        .filter(|&n| n > n1 || page(&v1, n) != page(&v2, n))
        .map(|n| (n, page(&v2, n)))
        .collect();

    let server = S3Server::with_bucket("pitr");
    let r = S3Replica::new(server.options("pitr", "db"));
    let upload1 = SystemTime::now();
    let (h1, h2) = (
        upload1 - Duration::from_secs(60),
        upload1 - Duration::from_secs(30),
    );
    let f1 = ltx_file(n1, 1, h1, &borrow(&snapshot));
    r.write_ltx(0, 1, 1, h1, &mut &f1[..]).unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    let f2 = ltx_file(n2, 2, h2, &borrow(&changed));
    r.write_ltx(0, 2, 2, h2, &mut &f2[..]).unwrap();

    // Between the two uploads, after both header times; whole seconds, UTC, as both CLIs accept.
    let ts = rfc3339::format_utc(upload1 + Duration::from_millis(1500));
    let listed = r.ltx_files(0).unwrap();
    let exact = r.ltx_files_exact(0).unwrap();
    let at = rfc3339::parse(&ts).unwrap();
    assert_eq!(
        listed.iter().filter(|f| f.created_at < at).count(),
        1,
        "by LastModified: {listed:?}"
    );
    assert_eq!(
        exact.iter().filter(|f| f.created_at < at).count(),
        2,
        "by header time: {exact:?}"
    );

    let url = format!(
        "s3://pitr/db?endpoint={}&forcePathStyle=true",
        server.endpoint
    );
    let restore = |program: &str, out: &Path| {
        support::run_ok(
            &format!("{program} restore -timestamp {ts}"),
            s3_server::s3_command(program).args([
                "restore",
                "-timestamp",
                &ts,
                "-o",
                out.to_str().unwrap(),
                &url,
            ]),
        );
    };
    let ls_out = dir.path().join("litestream.db");
    restore("litestream", &ls_out);
    assert_eq!(rows(&ls_out), 2000, "Litestream uses the header time");
    let lv_out = dir.path().join("litevisor.db");
    restore(env!("CARGO_BIN_EXE_litevisor"), &lv_out);
    assert_eq!(rows(&lv_out), 2000, "litevisor must too");
}
