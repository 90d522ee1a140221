//! `litevisor verify DB REPLICA`: a healthy replica verifies (exit 0, text and JSON); a live database
//! ahead of its replica is "not comparable" (exit 3) until the next sync; a live database whose
//! pages differ from the replica at the same TXID is a mismatch (exit 4). Verify changes nothing.

mod support;
use support::s3_server;

mod replicate_support;

use std::path::Path;
use std::process::Command;

use replicate_support::*;

fn verify(db: &Path, replica: &Path, extra: &[&str]) -> (i32, String, String) {
    run_on(&[&["verify"], extra].concat(), db, replica)
}

/// Every byte of the database, its WAL and its meta directory (verify must leave them as they are).
fn snapshot_files(db: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let dir = db.parent().unwrap();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let name = p.to_string_lossy().into_owned();
            if p.is_dir() {
                if name.contains("-litestream") {
                    stack.push(p);
                }
            } else if name.contains("app.db") && !name.ends_with("-shm") {
                out.push((name, std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn healthy_replica_verifies_and_a_live_db_ahead_is_not_comparable_until_synced() {
    let (_dir, db, replica, mut c) = scene();
    insert(&mut c, 0..300, 50);
    once_ok(&db, &replica, &[]);

    // The application keeps its connection (the WAL is live): verify reads it without a write lock.
    let before = snapshot_files(&db);
    let (code, stdout, stderr) = verify(&db, &replica, &[]);
    assert_eq!(code, 0, "healthy replica: {stdout}{stderr}");
    assert!(stdout.contains("integrity:  ok"), "{stdout}");
    assert!(stdout.contains("result:     ok"), "{stdout}");
    assert!(
        stdout.contains("live:       TXID "),
        "live TXID proven: {stdout}"
    );
    assert!(
        snapshot_files(&db) == before,
        "verify must not change the database, its WAL or its meta directory"
    );
    let (code, json, _) = verify(&db, &replica, &["-json"]);
    assert_eq!(code, 0, "{json}");
    for part in [
        "\"result\":\"ok\"",
        "\"match\":true",
        "\"integrity\":\"ok\"",
        "\"replica_txid\":\"",
    ] {
        assert!(json.contains(part), "{part} missing from {json}");
    }

    // New commits not yet replicated: the live database is past the replica's TXID.
    insert(&mut c, 300..320, 5);
    let (code, stdout, stderr) = verify(&db, &replica, &[]);
    assert_eq!(code, 3, "live ahead: {stdout}{stderr}");
    assert!(stderr.contains("live DB"), "{stderr}");
    assert!(stderr.contains("replicate -once"), "{stderr}");
    assert!(stdout.contains("not_comparable"), "{stdout}");

    // After the next sync it verifies again, with the application's connection open or closed.
    once_ok(&db, &replica, &[]);
    let (code, stdout, stderr) = verify(&db, &replica, &[]);
    assert_eq!(code, 0, "after the sync: {stdout}{stderr}");
    drop(c);
    let (code, stdout, stderr) = verify(&db, &replica, &[]);
    assert_eq!(code, 0, "after the app closed: {stdout}{stderr}");
}

#[test]
fn live_pages_that_differ_from_the_replica_at_the_same_txid_are_a_mismatch() {
    let (_dir, db, replica) = paths("app.db");
    {
        let mut c = app(&db);
        create_table(&c);
        insert(&mut c, 0..400, 100);
    } // the application's close moves everything into the database file
    once_ok(&db, &replica, &[]);
    let (code, stdout, stderr) = verify(&db, &replica, &[]);
    assert_eq!(code, 0, "before the damage: {stdout}{stderr}");

    // Silent damage to the live file (a bad disk, a stray write outside SQLite): one byte of row
    // data in the last page, which the WAL does not hold. Replication saw nothing, so the replica
    // and the live database claim the same TXID but hold different pages.
    let len = std::fs::metadata(&db).unwrap().len();
    let page_size = 4096;
    assert_eq!(len % page_size, 0);
    let offset = len - 16;
    let mut bytes = std::fs::read(&db).unwrap();
    bytes[offset as usize] ^= 0x01;
    std::fs::write(&db, &bytes).unwrap();

    let (code, stdout, stderr) = verify(&db, &replica, &[]);
    assert_eq!(code, 4, "mismatch: {stdout}{stderr}");
    assert!(
        stdout.contains("integrity:  ok"),
        "the replica itself is sound: {stdout}"
    );
    assert!(stderr.contains("MISMATCH"), "{stderr}");
    assert!(stderr.contains("at the same TXID"), "{stderr}");
    let (code, json, _) = verify(&db, &replica, &["-json"]);
    assert_eq!(code, 4);
    assert!(json.contains("\"result\":\"mismatch\""), "{json}");
    assert!(json.contains("\"match\":false"), "{json}");
}

#[test]
fn usage_and_error_exit_codes() {
    let (_dir, db, replica) = paths("app.db");
    let (code, _, stderr) = verify(&db, &replica, &[]);
    assert_eq!(code, 1, "missing database: {stderr}");
    assert!(stderr.contains("does not exist"), "{stderr}");

    let mut c = app(&db);
    create_table(&c);
    insert(&mut c, 0..10, 10);
    let (code, _, stderr) = verify(&db, &replica, &[]);
    assert_eq!(code, 1, "empty replica: {stderr}");
    assert!(stderr.contains("holds no backup"), "{stderr}");

    let out = Command::new(LITEVISOR)
        .args(["verify", "--no-such-flag"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn the_replica_can_come_from_the_config_file() {
    let (dir, db, replica, mut c) = scene();
    insert(&mut c, 0..50, 10);
    once_ok(&db, &replica, &[]);
    let yml = write_litestream_yml(dir.path(), &db, &replica);
    let out = Command::new(LITEVISOR)
        .arg("verify")
        .arg("-config")
        .arg(&yml)
        .arg(&db)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("result:     ok"), "{text}");

    let other = dir.path().join("other.db");
    std::fs::copy(&db, &other).unwrap();
    let out = Command::new(LITEVISOR)
        .arg("verify")
        .arg("-config")
        .arg(&yml)
        .arg(&other)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    support::assert_contains(&String::from_utf8_lossy(&out.stderr), "not found in config");
}

/// Beside a running replicator and a busy application (syncs, checkpoints and WAL restarts happen
/// under it), verify never reports a false mismatch or fails; once the writes stop it verifies.
#[test]
fn verify_beside_a_running_replicator_never_raises_a_false_alarm() {
    let (_dir, db, replica, mut c) = scene();
    insert(&mut c, 0..100, 50);
    let lv = Replicator::litevisor(&db, &replica, &[]);
    wait_first_upload(&lv, &replica);

    let writer = std::thread::spawn(move || {
        let start = std::time::Instant::now();
        let mut id = 100;
        while start.elapsed() < std::time::Duration::from_secs(4) {
            insert(&mut c, id..id + 3, 3);
            id += 3;
        }
        c
    });
    let mut codes = Vec::new();
    while !writer.is_finished() {
        let (code, stdout, stderr) = verify(&db, &replica, &[]);
        assert!(
            code == 0 || code == 3,
            "only ok or not-comparable while writing, got {code}: {stdout}{stderr}\nlog:\n{}",
            lv.log_text()
        );
        codes.push(code);
    }
    let c = writer.join().unwrap();
    assert!(!codes.is_empty());
    eprintln!(
        "verify while writing: {} runs, {} ok; replicator checkpoints: {}",
        codes.len(),
        codes.iter().filter(|c| **c == 0).count(),
        lv.log_text().matches("checkpoint").count()
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (code, stdout, stderr) = verify(&db, &replica, &[]);
        if code == 0 {
            break;
        }
        assert!(
            code == 3 && std::time::Instant::now() < deadline,
            "after the writes stopped, got {code}: {stdout}{stderr}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let status = lv.stop();
    assert!(status.success(), "{status:?}");
    drop(c);
}

/// The same check against an S3 replica (moto on loopback).
#[test]
fn an_s3_replica_verifies() {
    let server = s3_server::S3Server::with_bucket("verify");
    let (_dir, db, _, mut c) = scene();
    insert(&mut c, 0..200, 20);
    let s3 = format!("s3://verify/app?endpoint={}", server.endpoint);
    let run = |args: &[&str]| {
        let out = Command::new(LITEVISOR)
            .args(args)
            .env_remove("AWS_CA_BUNDLE")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let db_arg = db.to_str().unwrap();
    let (code, text) = run(&["replicate", "-once", db_arg, &s3]);
    assert_eq!(code, 0, "{text}");
    let (code, text) = run(&["verify", db_arg, &s3]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("result:     ok"), "{text}");
    insert(&mut c, 200..210, 5);
    let (code, text) = run(&["verify", db_arg, &s3]);
    assert_eq!(code, 3, "{text}");
}
