//! The S3 backend through a fault-injecting proxy in front of a real S3-compatible server (moto):
//! 503 SlowDown answers, downloads cut mid-body and uploads dropped mid-body are retried or resumed
//! with nothing lost; a server that never answers fails calls within the configured timeouts instead
//! of blocking; and an idle replica sends no requests at all.

mod support;
use support::{s3_proxy, s3_server};

use std::io::Read;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, UNIX_EPOCH};

use litevisor::replica::ReplicaClient;
use litevisor::replica::s3::{S3Options, S3Replica, S3Timeouts};
use s3_proxy::{BlackHole, FaultProxy};
use s3_server::S3Server;

fn replica_via(endpoint: &str, bucket: &str, timeouts: S3Timeouts) -> S3Replica {
    S3Replica::new(S3Options {
        timeouts,
        ..s3_server::test_options(endpoint, bucket, "db")
    })
}

fn quick_retries() -> S3Timeouts {
    S3Timeouts {
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        ..S3Timeouts::default()
    }
}

fn content(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 7 + i / 4093) as u8).wrapping_add(seed))
        .collect()
}

fn read_all(mut r: impl Read) -> Vec<u8> {
    let mut v = Vec::new();
    r.read_to_end(&mut v).expect("read object");
    v
}

#[test]
fn retries_503_and_resumes_cut_transfers_without_loss() {
    let server = S3Server::with_bucket("faulty");
    let proxy = FaultProxy::start(server.port);
    let r = replica_via(&proxy.endpoint, "faulty", quick_retries());

    // 503 SlowDown on the first requests: the write still lands, after retries.
    proxy.faults.fail_next.store(3, Ordering::SeqCst);
    let small = content(1, 10_000);
    r.write_ltx(0, 1, 1, UNIX_EPOCH, &mut &small[..]).unwrap();
    assert_eq!(proxy.injected(), 3, "three 503s served");
    assert!(
        proxy.requests() >= 4,
        "retried after the 503s: {} requests",
        proxy.requests()
    );

    // A listing and a read behind 503s.
    proxy.faults.fail_next.store(2, Ordering::SeqCst);
    assert_eq!(r.ltx_files(0).unwrap().len(), 1);
    proxy.faults.fail_next.store(2, Ordering::SeqCst);
    assert_eq!(read_all(r.open_ltx(0, 1, 1).unwrap()), small);

    // Downloads cut in the middle of the body are resumed from where they broke.
    let big = content(2, 3 * 1024 * 1024 + 17);
    r.write_ltx(0, 2, 2, UNIX_EPOCH, &mut &big[..]).unwrap();
    let before = proxy.injected();
    proxy.faults.cut_downloads.store(2, Ordering::SeqCst);
    let got = read_all(r.open_ltx(0, 2, 2).unwrap());
    assert_eq!(proxy.injected() - before, 2, "both cuts happened");
    assert!(
        got == big,
        "resumed download differs (len {} vs {})",
        got.len(),
        big.len()
    );

    // Uploads dropped mid-body (single PUT and multipart parts) are retried.
    let before = proxy.injected();
    proxy.faults.cut_uploads.store(1, Ordering::SeqCst);
    let mid = content(3, 2 * 1024 * 1024);
    r.write_ltx(0, 3, 3, UNIX_EPOCH, &mut &mid[..]).unwrap();
    assert_eq!(proxy.injected() - before, 1);
    let before = proxy.injected();
    proxy.faults.cut_uploads.store(2, Ordering::SeqCst);
    let multi = content(4, 12 * 1024 * 1024 + 5);
    r.write_ltx(9, 1, 4, UNIX_EPOCH, &mut &multi[..]).unwrap();
    assert_eq!(proxy.injected() - before, 2);

    // Nothing lost: every object reads back intact through a clean path.
    let direct = replica_via(&server.endpoint, "faulty", quick_retries());
    assert_eq!(read_all(direct.open_ltx(0, 3, 3).unwrap()), mid);
    assert!(
        read_all(direct.open_ltx(9, 1, 4).unwrap()) == multi,
        "multipart object differs"
    );
    let l0: Vec<u64> = direct
        .ltx_files(0)
        .unwrap()
        .iter()
        .map(|f| f.size)
        .collect();
    assert_eq!(
        l0,
        vec![small.len() as u64, big.len() as u64, mid.len() as u64]
    );
}

#[test]
fn persistent_503_fails_with_a_clear_error_after_bounded_retries() {
    let server = S3Server::with_bucket("down");
    let proxy = FaultProxy::start(server.port);
    let r = replica_via(
        &proxy.endpoint,
        "down",
        S3Timeouts {
            max_attempts: 3,
            ..quick_retries()
        },
    );
    proxy.faults.fail_next.store(1000, Ordering::SeqCst);
    let err = r
        .write_ltx(0, 1, 1, UNIX_EPOCH, &mut &b"x"[..])
        .unwrap_err()
        .to_string();
    assert_eq!(proxy.requests(), 3, "exactly max_attempts requests");
    assert!(
        err.contains("503")
            && err.contains("s3://down/db/0000/0000000000000001-0000000000000001.ltx"),
        "{err}"
    );
    assert!(!err.contains("test\""), "{err}");
}

#[test]
fn unresponsive_server_fails_within_the_timeouts() {
    let hole = BlackHole::start();
    let timeouts = S3Timeouts {
        connect: Duration::from_secs(2),
        read: Duration::from_secs(2),
        attempt: Duration::from_secs(3),
        max_attempts: 2,
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(100),
    };
    let r = replica_via(&hole.endpoint, "b", timeouts.clone());
    let start = Instant::now();
    let err = r.ltx_files(0).unwrap_err();
    let took = start.elapsed();
    assert!(took < Duration::from_secs(30), "blocked for {took:?}");
    let msg = err.to_string();
    assert!(
        msg.to_lowercase().contains("timeout") || msg.to_lowercase().contains("timed out"),
        "{msg}"
    );
    let start = Instant::now();
    assert!(r.write_ltx(0, 1, 1, UNIX_EPOCH, &mut &b"x"[..]).is_err());
    assert!(start.elapsed() < Duration::from_secs(30));

    // A closed port (connection refused) fails fast too.
    let closed = s3_server::free_port();
    let r = replica_via(&format!("http://127.0.0.1:{closed}"), "b", timeouts);
    let start = Instant::now();
    assert!(r.ltx_files(0).is_err());
    assert!(start.elapsed() < Duration::from_secs(30));
}

#[test]
fn an_idle_replica_sends_no_requests() {
    let server = S3Server::with_bucket("idle");
    let proxy = FaultProxy::start(server.port);
    // Created (as the engine does at startup) but unused: nothing at all.
    let r = replica_via(&proxy.endpoint, "idle", S3Timeouts::default());
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(proxy.requests(), 0, "construction sends nothing");

    r.write_ltx(0, 1, 1, UNIX_EPOCH, &mut &b"data"[..]).unwrap();
    assert_eq!(r.ltx_files(0).unwrap().len(), 1);
    assert_eq!(read_all(r.open_ltx(0, 1, 1).unwrap()), b"data");
    let after_work = proxy.requests();
    assert_eq!(after_work, 3, "one request per call: PUT, LIST, GET");
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(proxy.requests(), after_work, "no requests while idle");
}

#[test]
fn opening_a_chain_at_once_hides_the_round_trips() {
    // A restore opens every file of its chain and reads each header before streaming pages. With
    // 100 ms per request and 48 files, one-by-one opens cost about 48 round trips; `open_ltx_many`
    // issues the GETs together and prefetches the bodies, costing a few.
    let server = S3Server::with_bucket("chain");
    let proxy = FaultProxy::start(server.port);
    let r = replica_via(&proxy.endpoint, "chain", quick_retries());
    let files: Vec<_> = (1..=48u64)
        .map(|t| {
            let data = content(t as u8, 20_000);
            r.write_ltx(0, t, t, UNIX_EPOCH, &mut &data[..]).unwrap()
        })
        .collect();
    proxy.faults.delay_ms.store(100, Ordering::SeqCst);

    let consume = |readers: Vec<Box<dyn Read + Send>>| -> usize {
        readers.into_iter().map(|r| read_all(r).len()).sum()
    };
    let start = Instant::now();
    let one_by_one: Vec<Box<dyn Read + Send>> = files
        .iter()
        .map(|f| {
            let mut rd = r.open_ltx(f.level, f.min_txid, f.max_txid).unwrap();
            let mut header = [0u8; 100];
            rd.read_exact(&mut header).unwrap();
            Box::new(std::io::Cursor::new(header).chain(rd)) as Box<dyn Read + Send>
        })
        .collect();
    assert_eq!(consume(one_by_one), 48 * 20_000);
    let sequential = start.elapsed();

    let start = Instant::now();
    let together = r.open_ltx_many(&files).unwrap();
    assert_eq!(consume(together), 48 * 20_000);
    let parallel = start.elapsed();
    eprintln!("48 files at 100 ms/request: one by one {sequential:?}, open_ltx_many {parallel:?}");
    assert!(
        parallel * 2 < sequential,
        "open_ltx_many ({parallel:?}) should be far faster than one-by-one opens ({sequential:?})"
    );
}
