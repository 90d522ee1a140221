//! The S3 replica backend against a real S3-compatible server (moto, started by this test): the
//! `ReplicaClient` round trip, Litestream's exact key layout and `litestream-timestamp` metadata as seen
//! by an independent SDK client, listing strictness, exact timestamps through HEAD, parallel opens,
//! deletes, and clear errors for a missing bucket.

mod support;
use support::s3_server;

use std::io::Read;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use litevisor::replica;
use litevisor::replica::s3::{S3Options, S3Replica};
use litevisor::replica::{FileInfo, ReplicaClient};
use s3_server::{S3Server, list_keys, sdk_client};

fn replica_at(server: &S3Server, bucket: &str, path: &str) -> S3Replica {
    S3Replica::new(server.options(bucket, path))
}

fn content(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn read_all(mut r: impl Read) -> Vec<u8> {
    let mut v = Vec::new();
    r.read_to_end(&mut v).expect("read object");
    v
}

fn at_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

#[test]
fn round_trip_layout_metadata_and_delete() {
    let server = S3Server::with_bucket("bkt");
    let r = replica_at(&server, "bkt", "db");
    assert_eq!(r.kind(), "s3");
    assert!(
        r.ltx_files(0).unwrap().is_empty(),
        "empty level lists as empty"
    );

    // Header timestamps in the past, with millisecond parts, so they differ from LastModified.
    let t1 = at_ms(1_600_000_000_123);
    let t2 = at_ms(1_600_000_001_500);
    let t9 = at_ms(1_600_000_002_000);
    let a = content(1, 3000);
    let b = content(2, 100);
    let snap = content(3, 70_000);
    let fa = r.write_ltx(0, 1, 1, t1, &mut &a[..]).unwrap();
    let fb = r.write_ltx(0, 2, 2, t2, &mut &b[..]).unwrap();
    let f9 = r.write_ltx(9, 1, 0x2a, t9, &mut &snap[..]).unwrap();
    assert_eq!(
        (fa.level, fa.min_txid, fa.max_txid, fa.size, fa.created_at),
        (0, 1, 1, 3000, t1)
    );
    assert_eq!(f9.size, 70_000);

    // Keys and metadata exactly as Litestream writes them, seen from outside.
    let (rt, sdk) = sdk_client(&server.endpoint, None);
    let keys = list_keys(&rt, &sdk, "bkt");
    assert_eq!(
        keys,
        vec![
            (
                "db/0000/0000000000000001-0000000000000001.ltx".to_string(),
                3000
            ),
            (
                "db/0000/0000000000000002-0000000000000002.ltx".to_string(),
                100
            ),
            (
                "db/0009/0000000000000001-000000000000002a.ltx".to_string(),
                70_000
            ),
        ]
    );
    let head = s3_server::head(
        &rt,
        &sdk,
        "bkt",
        "db/0000/0000000000000001-0000000000000001.ltx",
    );
    assert_eq!(
        s3_server::litestream_timestamp(&head),
        Some("2020-09-13T12:26:40.123Z"),
        "{:?}",
        head.metadata()
    );
    let head = s3_server::head(
        &rt,
        &sdk,
        "bkt",
        "db/0000/0000000000000002-0000000000000002.ltx",
    );
    assert_eq!(
        s3_server::litestream_timestamp(&head),
        Some("2020-09-13T12:26:41.5Z"),
        "Go trims trailing zeros of the fraction"
    );

    // storage-class reaches the object.
    let ia = S3Replica::new(S3Options {
        storage_class: Some("STANDARD_IA".into()),
        ..server.options("bkt", "ia")
    });
    ia.write_ltx(0, 1, 1, t1, &mut &b[..]).unwrap();
    let head = s3_server::head(
        &rt,
        &sdk,
        "bkt",
        "ia/0000/0000000000000001-0000000000000001.ltx",
    );
    assert_eq!(
        head.storage_class().map(|c| c.as_str()),
        Some("STANDARD_IA")
    );
    ia.delete_ltx(&ia.ltx_files(0).unwrap()).unwrap();

    // Foreign keys under the level prefix are ignored, like Litestream's strict regex.
    for junk in [
        "db/0000/0000000000000003-0000000000000003.ltx.tmp",
        "db/0000/000000000000000A-000000000000000A.ltx",
        "db/0000/notes.txt",
        "db/0000/sub/0000000000000004-0000000000000004.ltx",
        "db/00000/0000000000000005-0000000000000005.ltx",
    ] {
        rt.block_on(
            sdk.put_object()
                .bucket("bkt")
                .key(junk)
                .body(b"x".to_vec().into())
                .send(),
        )
        .unwrap();
    }

    let l0 = r.ltx_files(0).unwrap();
    assert_eq!(
        l0.iter()
            .map(|f| (f.min_txid, f.max_txid, f.size))
            .collect::<Vec<_>>(),
        vec![(1, 1, 3000), (2, 2, 100)]
    );
    let now = SystemTime::now();
    for f in &l0 {
        // Listings give LastModified (server time, just now), not the header time.
        let age = now.duration_since(f.created_at).unwrap_or_default();
        assert!(
            age < Duration::from_secs(600),
            "LastModified expected, got {:?}",
            f.created_at
        );
    }
    // The exact listing reads `litestream-timestamp` through HEAD.
    let exact = r.ltx_files_exact(0).unwrap();
    assert_eq!(
        exact.iter().map(|f| f.created_at).collect::<Vec<_>>(),
        vec![t1, t2]
    );
    assert_eq!(r.ltx_files_exact(9).unwrap()[0].created_at, t9);

    // Reads stream the same bytes back, one at a time and all at once.
    assert_eq!(read_all(r.open_ltx(0, 1, 1).unwrap()), a);
    let many = r
        .open_ltx_many(&[f9.clone(), fa.clone(), fb.clone()])
        .unwrap();
    let got: Vec<Vec<u8>> = many.into_iter().map(read_all).collect();
    assert_eq!(
        got,
        vec![snap.clone(), a.clone(), b.clone()],
        "open_ltx_many keeps the order asked for"
    );

    // Missing objects are NotFound, naming the key.
    let err = r.open_ltx(0, 7, 7).err().expect("missing file");
    assert!(matches!(err, replica::ReplicaError::NotFound(_)), "{err}");
    assert!(
        err.to_string()
            .contains("s3://bkt/db/0000/0000000000000007-0000000000000007.ltx"),
        "{err}"
    );

    // Overwrite replaces atomically (same key, new content).
    let a2 = content(9, 5000);
    r.write_ltx(0, 1, 1, t1, &mut &a2[..]).unwrap();
    assert_eq!(read_all(r.open_ltx(0, 1, 1).unwrap()), a2);

    // Deletes: present and already-gone files alike.
    let gone = FileInfo {
        level: 0,
        min_txid: 99,
        max_txid: 99,
        size: 0,
        created_at: t1,
    };
    r.delete_ltx(&[fa, fb, gone]).unwrap();
    assert!(r.ltx_files(0).unwrap().is_empty());
    assert_eq!(r.ltx_files(9).unwrap().len(), 1);
    r.delete_ltx(&[f9]).unwrap();
    let left: Vec<String> = list_keys(&rt, &sdk, "bkt")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert!(
        left.iter()
            .all(|k| !k.ends_with("-000000000000002a.ltx")
                && !k.contains("0001-0000000000000001.ltx")),
        "{left:?}"
    );
}

#[test]
fn deletes_more_than_one_batch() {
    let server = S3Server::with_bucket("many");
    let r = replica_at(&server, "many", "x");
    let files: Vec<FileInfo> = (1..=1005u64)
        .map(|t| FileInfo {
            level: 0,
            min_txid: t,
            max_txid: t,
            size: 0,
            created_at: UNIX_EPOCH,
        })
        .collect();
    // Create them directly (fast), then delete through the client in 2 batches.
    let (rt, sdk) = sdk_client(&server.endpoint, None);
    rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for f in &files {
            let sdk = sdk.clone();
            let key = r.key(0, f.min_txid, f.max_txid);
            set.spawn(async move {
                sdk.put_object()
                    .bucket("many")
                    .key(key)
                    .body(b"".to_vec().into())
                    .send()
                    .await
            });
            while set.len() >= 32 {
                set.join_next().await.unwrap().unwrap().unwrap();
            }
        }
        while let Some(j) = set.join_next().await {
            j.unwrap().unwrap();
        }
    });
    assert_eq!(
        r.ltx_files(0).unwrap().len(),
        1005,
        "listing paginates past 1000"
    );
    r.delete_ltx(&files).unwrap();
    assert!(r.ltx_files(0).unwrap().is_empty());
}

#[test]
fn missing_bucket_fails_clearly() {
    let server = S3Server::start();
    let r = replica_at(&server, "nope", "db");
    let err = r.ltx_files(0).unwrap_err().to_string();
    support::assert_contains(&err, "NoSuchBucket");
    support::assert_contains(&err, "bucket \"nope\" does not exist");
    let err = r
        .write_ltx(0, 1, 1, at_ms(1), &mut &b"x"[..])
        .unwrap_err()
        .to_string();
    assert!(err.contains("NoSuchBucket"), "{err}");
}
