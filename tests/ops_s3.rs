//! Honest S3 errors against a real S3 server (moto): what retrying cannot fix (a missing bucket, an
//! unknown key id, a wrong secret, no credentials at all, an unknown host) fails `replicate`,
//! `restore` and a `[[databases]]` restore within seconds, in one short line naming the bucket,
//! the endpoint and the code; a replica that is down shows as `retrying` (with its errors) from the
//! first failed attempt until it comes back, said once in the log each way; and no credential
//! reaches a log, even at trace level.

mod support;
use support::s3_server;

mod ops_support;

use std::time::{Duration, Instant};

use ops_support::{Lv, assert_said_once, free_port, insert, make_db, run};
use s3_server::S3Server;

/// Every line short, and no Debug dump of an SDK error.
fn assert_tidy(text: &str) {
    for line in text.lines() {
        assert!(
            line.chars().count() <= 330,
            "a {}-character line:\n{line}",
            line.len()
        );
        for dump in [
            "DispatchFailure(",
            "ServiceError {",
            "ErrorMetadata",
            "ConnectorError",
            "SdkBody",
        ] {
            assert!(
                !line.contains(dump),
                "a Debug dump reached the output:\n{line}"
            );
        }
    }
}

/// `litevisor ARGS` must fail (exit 1) within 10 s; returns its stderr.
fn fails_fast(dir: &std::path::Path, args: &[&str], envs: &[(&str, &str)]) -> String {
    let began = Instant::now();
    let (code, out, err) = run(dir, args, envs, Duration::from_secs(60));
    let took = began.elapsed();
    assert_eq!(code, 1, "{args:?}\nstdout:\n{out}\nstderr:\n{err}");
    assert!(
        took < Duration::from_secs(10),
        "{args:?} took {took:?}:\n{err}"
    );
    assert_tidy(&err);
    assert_tidy(&out);
    err
}

const KEYS: [(&str, &str); 2] = [
    ("AWS_ACCESS_KEY_ID", "AKIDTESTVISIBLE"),
    ("AWS_SECRET_ACCESS_KEY", "SECRETTESTVISIBLE"),
];

#[test]
fn permanent_errors_fail_at_once_in_one_line() {
    let s3 = S3Server::start();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    make_db(&db);
    let db_arg = db.to_str().unwrap();
    let missing = format!("s3://missing-bucket/app?endpoint={}", s3.endpoint);

    let err = fails_fast(dir.path(), &["replicate", db_arg, &missing], &KEYS);
    assert!(
        err.contains("NoSuchBucket")
            && err.contains("\"missing-bucket\"")
            && err.contains(&s3.endpoint),
        "{err}"
    );
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("NoSuchBucket")).collect();
    assert_eq!(lines.len(), 1, "said once:\n{err}");

    let out = dir.path().join("out.db");
    let err = fails_fast(
        dir.path(),
        &["restore", "-o", out.to_str().unwrap(), &missing],
        &KEYS,
    );
    support::assert_contains(&err, "NoSuchBucket");
    support::assert_contains(&err, "\"missing-bucket\"");

    std::fs::write(
        dir.path().join("litevisor.toml"),
        format!(
            "[[databases]]\npath = \"new.db\"\nreplica = {{ type = \"s3\", bucket = \"missing-bucket\", path = \"app\", endpoint = \"{}\" }}\n",
            s3.endpoint
        ),
    )
    .unwrap();
    let err = fails_fast(dir.path(), &["--config", "litevisor.toml"], &KEYS);
    support::assert_contains(&err, "NoSuchBucket");
    support::assert_contains(&err, "\"missing-bucket\"");

    let err = fails_fast(
        dir.path(),
        &[
            "replicate",
            db_arg,
            "s3://bkt/app?endpoint=http://no-such-host.invalid:9000",
        ],
        &KEYS,
    );
    support::assert_contains(&err, "unknown host");
    support::assert_contains(&err, "no-such-host.invalid");

    s3.create_bucket("bkt");
    let err = fails_fast(
        dir.path(),
        &[
            "replicate",
            db_arg,
            &format!("s3://bkt/app?endpoint={}", s3.endpoint),
        ],
        &[],
    );
    support::assert_contains(&err, "no S3 credentials found");
    support::assert_contains(&err, "\"bkt\"");
}

#[test]
fn wrong_keys_are_named_and_no_key_is_ever_logged_even_at_trace() {
    let s3 = S3Server::start_with_auth();
    let (id, secret) = s3.keys.clone().unwrap();
    s3.create_bucket("bkt");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let conn = make_db(&db);
    let db_arg = db.to_str().unwrap();
    let url = format!("s3://bkt/app?endpoint={}", s3.endpoint);
    let trace = [("LITEVISOR_LOG", "trace"), ("LOG_LEVEL", "trace")];
    let leaks = |text: &str, keys: &[&str]| {
        for k in keys {
            assert!(
                !text.contains(k),
                "a credential ({k}) reached the output:\n{text}"
            );
        }
    };

    let unknown_id = "AKIDUNKNOWNKEY12";
    let mut envs = vec![
        ("AWS_ACCESS_KEY_ID", unknown_id),
        ("AWS_SECRET_ACCESS_KEY", secret.as_str()),
    ];
    envs.extend(trace);
    let err = fails_fast(dir.path(), &["replicate", db_arg, &url], &envs);
    support::assert_contains(&err, "InvalidAccessKeyId");
    support::assert_contains(&err, "\"bkt\"");
    leaks(&err, &[unknown_id, &secret]);

    let wrong_secret = "WRONGSECRETwrongsecretWRONGSECRET";
    let mut envs = vec![
        ("AWS_ACCESS_KEY_ID", id.as_str()),
        ("AWS_SECRET_ACCESS_KEY", wrong_secret),
    ];
    envs.extend(trace);
    let err = fails_fast(dir.path(), &["replicate", db_arg, &url], &envs);
    support::assert_contains(&err, "SignatureDoesNotMatch");
    support::assert_contains(&err, "\"bkt\"");
    leaks(&err, &[&id, wrong_secret]);

    // Keys that work, at trace level: replication runs, every request is signed with them, and
    // neither shows. (moto's signature check rejects every ListObjectsV2 with a prefix, even
    // boto3's, so this part runs against a server that takes any signature.)
    drop(s3);
    let s3 = S3Server::start();
    s3.create_bucket("bkt");
    let url = format!("s3://bkt/app?endpoint={}", s3.endpoint);
    let mut envs = vec![
        ("AWS_ACCESS_KEY_ID", id.as_str()),
        ("AWS_SECRET_ACCESS_KEY", secret.as_str()),
    ];
    envs.extend(trace);
    let mut lv = Lv::start(
        dir.path(),
        &["replicate", "-monitor-interval", "100ms", db_arg, &url],
        &envs,
    );
    lv.wait_db(Duration::from_secs(30), |d| d["state"] == "replicating");
    insert(&conn, 5);
    lv.wait_db(Duration::from_secs(30), |d| {
        d["txid"].as_str() > Some("0000000000000001") && d["txid"] == d["replica_txid"]
    });
    let err = lv.stop_ok();
    let out = lv.stdout();
    assert!(
        err.contains("TRACE") || err.contains("DEBUG"),
        "trace level is on:\n{err}"
    );
    leaks(&out, &[&id, &secret]);
    leaks(&err, &[&id, &secret]);
    assert_tidy(&err);
}

#[test]
fn an_unreachable_replica_is_retrying_from_the_first_attempt_until_it_comes_back() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let conn = make_db(&db);
    insert(&conn, 3);
    let url = format!("s3://bkt/app?endpoint=http://127.0.0.1:{port}");
    let mut lv = Lv::start(
        dir.path(),
        &[
            "replicate",
            "-monitor-interval",
            "100ms",
            db.to_str().unwrap(),
            &url,
        ],
        &KEYS,
    );
    let failing = lv.wait_db(Duration::from_secs(60), |d| d["state"] == "retrying");
    assert!(failing["replica_errors"].as_u64() >= Some(1), "{failing}");
    assert_eq!(failing["failure"]["kind"], "connection", "{failing}");
    assert!(
        failing["last_error"]
            .as_str()
            .unwrap()
            .contains("onnection refused"),
        "{failing}"
    );
    let (code, text) = lv.health();
    assert_eq!(code, 1, "{text}");
    support::assert_contains(&text, "retrying");
    support::assert_contains(&text, "app.db");

    let s3 = S3Server::start_on(port);
    s3.create_bucket("bkt");
    let back = lv.wait_db(Duration::from_secs(120), |d| {
        d["state"] == "replicating"
            && d["replica_txid"] == d["txid"]
            && d["txid"] != "0000000000000000"
    });
    assert!(back["failure"].is_null(), "{back}");
    let (code, text) = lv.health();
    assert_eq!((code, text.trim()), (0, "ok"));
    let err = lv.stop_ok();
    // Once when it starts (kind=connection), once more when it fails differently (the bucket did
    // not exist for a moment after the server came up), and once when it clears.
    assert_said_once(&err, "kind=connection", "when it starts");
    assert_said_once(&err, "replica reachable again", "when it clears");
    assert_tidy(&err);
}
