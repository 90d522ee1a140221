//! A read-replica container: `[[databases]]` with `follow = true` under the supervisor, following
//! a replica that a running `litevisor replicate` (the primary) writes. The database is restored
//! before the services start, kept current while they run, never uploaded from this side, shown in
//! the status, and the stop is quick.

mod support;

mod replicate_support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use replicate_support::{Replicator, insert, max_l0, rows, scene, url};
use support::{BIN, output, wait_for};

fn replica_listing(replica: &Path) -> Vec<String> {
    let mut names = Vec::new();
    let mut dirs = vec![replica.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                names.push(path.display().to_string());
            }
        }
    }
    names.sort();
    names
}

/// Rows of the followed copy, read as a reader would: read-only, with a busy timeout.
fn follower_rows(db: &Path) -> Option<Vec<(i64, String)>> {
    let c = rusqlite::Connection::open_with_flags(
        db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .ok()?;
    c.busy_timeout(Duration::from_secs(5)).ok()?;
    let mut stmt = c.prepare("SELECT id, v FROM t ORDER BY id").ok()?;
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .ok()?
        .collect::<Result<Vec<_>, _>>()
        .ok()?;
    Some(rows)
}

#[test]
fn a_followed_database_is_restored_first_kept_current_and_never_uploaded() {
    let (dir, primary, replica, mut c) = scene();
    insert(&mut c, 0..100, 10);
    let source = Replicator::litevisor(&primary, &replica, &[]);
    let uploaded = wait_for(Duration::from_secs(30), || {
        (max_l0(&replica) >= 1).then_some(())
    });
    assert!(uploaded.is_some(), "{}", source.log_text());

    let copy = dir.path().join("copy.db");
    let marker = dir.path().join("service-saw");
    let config = dir.path().join("litevisor.toml");
    std::fs::write(
        &config,
        format!(
            "[[databases]]\npath = \"{}\"\nreplica = \"{}\"\nfollow = true\nfollow_interval = \"200ms\"\n\n\
             [services.reader]\ncommand = [\"sh\", \"-c\", \"wc -c < {} > {}; exec sleep 1000\"]\n",
            copy.display(),
            url(&replica),
            copy.display(),
            marker.display()
        ),
    )
    .unwrap();
    let socket = dir.path().join("follower.sock");
    let mut cmd = Command::new(BIN);
    cmd.env("LITEVISOR_SOCKET", &socket)
        .arg("--config")
        .arg(&config);
    let follower = Replicator::spawn(cmd, dir.path().join("follower.log"));

    // The service started on a restored copy (its size was not 0 when it looked).
    let seen = wait_for(Duration::from_secs(30), || {
        std::fs::read_to_string(&marker)
            .ok()
            .filter(|s| !s.is_empty())
    });
    let size: u64 = seen
        .unwrap_or_else(|| panic!("the service never started: {}", follower.log_text()))
        .trim()
        .parse()
        .unwrap();
    assert!(size > 0, "the service started before the restore");

    // New commits on the primary show up in the copy.
    insert(&mut c, 100..300, 20);
    let want = rows(&primary);
    let current = wait_for(Duration::from_secs(30), || {
        (follower_rows(&copy).as_ref() == Some(&want)).then_some(())
    });
    assert!(
        current.is_some(),
        "the copy did not catch up: {}",
        follower.log_text()
    );

    let status = Command::new(BIN)
        .args([
            "status",
            "--json",
            "--socket",
            &socket.display().to_string(),
        ])
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let db = &status["databases"][0];
    assert_eq!(db["state"], "following", "{status}");
    assert_eq!(db["lag"], 0, "{status}");

    // Nothing is uploaded from this side: with the primary stopped, the replica stays as it is.
    assert!(source.stop().success());
    let listing = replica_listing(&replica);
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(replica_listing(&replica), listing);
    assert!(
        !dir.path().join(".copy.db-litestream").exists(),
        "a replicator ran on the copy"
    );

    let t0 = Instant::now();
    let status = follower.stop();
    assert!(status.success(), "{status:?}");
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "the stop took {:?}",
        t0.elapsed()
    );
    assert_eq!(follower_rows(&copy), Some(want));
}

#[test]
fn a_directory_cannot_be_followed() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("litevisor.toml");
    std::fs::write(
        &config,
        "[[databases]]\ndir = \"/data\"\npattern = \"*.db\"\nreplica = \"file:///r\"\nfollow = true\n",
    )
    .unwrap();
    let (code, _, err) =
        output(Command::new(BIN).args(["check", "--config", &config.display().to_string()]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot be followed"), "{err}");
}
