//! Restore speed over a slow link: `litevisor restore` and Litestream 0.5.17's `restore` rebuild the
//! same 80-file S3 replica (moto behind a proxy adding 50 ms per request). Litestream opens the files
//! one after another (a round trip each); litevisor opens the chain at once (`open_ltx_many`) and
//! streams the bodies ahead, so it must finish clearly first, with the same database.

mod support;
use support::{s3_proxy, s3_server};

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, UNIX_EPOCH};

use litevisor::replica::ReplicaClient;
use litevisor::replica::s3::S3Replica;
use s3_proxy::FaultProxy;
use s3_server::S3Server;

const PAGE_SIZE: usize = 4096;
const FILES: u64 = 80;

fn ltx_file(commit: u32, txid: u64, pages: &[(u32, &[u8])]) -> Vec<u8> {
    support::ltx_file(commit, txid, 1_700_000_000_000 + txid as i64, pages)
}

fn summary(path: &std::path::Path) -> (i64, String) {
    let db = rusqlite::Connection::open(path).unwrap();
    let n = db
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    (n, check)
}

#[test]
fn litevisor_restores_a_long_chain_faster_than_litestream() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.db");
    drop(support::padded_table(&src, 3000, 200));
    let bytes = std::fs::read(&src).unwrap();
    let commit = (bytes.len() / PAGE_SIZE) as u32;
    let page = |n: u32| &bytes[(n as usize - 1) * PAGE_SIZE..n as usize * PAGE_SIZE];

    // TXID 1 is the whole database, 2..=80 each rewrite one page with its current content.
    let server = S3Server::with_bucket("speed");
    let writer = S3Replica::new(server.options("speed", "db"));
    let all: Vec<(u32, &[u8])> = (1..=commit).map(|n| (n, page(n))).collect();
    writer
        .write_ltx(0, 1, 1, UNIX_EPOCH, &mut &ltx_file(commit, 1, &all)[..])
        .unwrap();
    for txid in 2..=FILES {
        let pgno = 2 + (txid as u32 % (commit - 1));
        let data = ltx_file(commit, txid, &[(pgno, page(pgno))]);
        writer
            .write_ltx(0, txid, txid, UNIX_EPOCH, &mut &data[..])
            .unwrap();
    }

    let proxy = FaultProxy::start(server.port);
    proxy.faults.delay_ms.store(50, Ordering::SeqCst);
    let url = format!(
        "s3://speed/db?endpoint={}&forcePathStyle=true",
        proxy.endpoint
    );
    let run = |program: &str, out: &std::path::Path| -> Duration {
        let start = Instant::now();
        support::run_ok(
            &format!("{program} restore"),
            s3_server::s3_command(program).args(["restore", "-o", out.to_str().unwrap(), &url]),
        );
        start.elapsed()
    };
    let ls_out = dir.path().join("litestream.db");
    let lv_out = dir.path().join("litevisor.db");
    let requests_before = proxy.requests();
    let litestream = run("litestream", &ls_out);
    let ls_requests = proxy.requests() - requests_before;
    let litevisor = run(env!("CARGO_BIN_EXE_litevisor"), &lv_out);
    let lv_requests = proxy.requests() - requests_before - ls_requests;
    eprintln!(
        "{FILES} files at 50 ms/request: litestream {litestream:?} ({ls_requests} requests), \
         litevisor {litevisor:?} ({lv_requests} requests)"
    );

    let expected = (3000, "ok".to_string());
    assert_eq!(summary(&ls_out), expected);
    assert_eq!(summary(&lv_out), expected);
    assert_eq!(
        std::fs::read(&lv_out).unwrap(),
        std::fs::read(&ls_out).unwrap(),
        "same bytes"
    );
    assert!(
        litevisor * 3 < litestream * 2,
        "litevisor {litevisor:?} should clearly beat litestream {litestream:?}"
    );
}
