//! `litevisor restore` failure handling and output-path flags, on a replica written by real Litestream:
//! a corrupt replica file is named in the error and leaves an existing database untouched (even with
//! -force) and no temp file; a replica missing TXID 1 is refused clearly; -if-db-not-exists,
//! -if-replica-exists, -force (output and -wal/-shm/-journal sidecars), -dry-run, -f and DB paths.

mod support;

mod restore_support;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use restore_support::*;

fn fixture() -> &'static Fixture {
    static FX: OnceLock<Fixture> = OnceLock::new();
    FX.get_or_init(|| {
        build(
            4096,
            &[
                Burst::Insert { n: 30, size: 2000 },
                Burst::Insert { n: 5, size: 100 },
            ],
        )
    })
}

fn url(p: &Path) -> String {
    format!("file://{}", p.display())
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A scratch directory with its own copy of the fixture replica.
fn scratch(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let replica = dir.path().join(name);
    copy_dir(&fixture().replica, &replica);
    (dir, replica)
}

/// A valid SQLite database that must survive failed restores.
fn precious_db(path: &Path) -> Vec<u8> {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch("CREATE TABLE keep(x); INSERT INTO keep VALUES ('precious');")
        .unwrap();
    drop(conn);
    fs::read(path).unwrap()
}

/// The files of the latest restore plan, from `-dry-run -json`.
fn plan_files(replica: &Path) -> Vec<PathBuf> {
    let o = litevisor(&[
        "restore",
        "-dry-run",
        "-json",
        "-o",
        "/nonexistent/x.db",
        &url(replica),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let mut files = Vec::new();
    let mut level = None;
    for line in out.lines() {
        let line = line.trim();
        if let Some(l) = line.strip_prefix("\"level\": ") {
            level = Some(l.trim_end_matches(',').to_string());
        }
        if let Some(n) = line.strip_prefix("\"name\": \"") {
            let name = n.trim_end_matches("\",");
            files.push(replica.join("ltx").join(level.take().unwrap()).join(name));
        }
    }
    files
}

#[test]
fn corrupt_file_is_named_and_existing_db_untouched() {
    let (dir, replica) = scratch("replica");
    let plan = plan_files(&replica);
    assert!(plan.len() >= 2, "plan should chain several files: {plan:?}");
    let victim = plan.last().unwrap().clone();
    let mut bytes = fs::read(&victim).unwrap();
    let mid = 100 + (bytes.len() - 100) / 2;
    bytes[mid] ^= 0x5a;
    fs::write(&victim, &bytes).unwrap();

    let out = dir.path().join("app.db");
    let before = precious_db(&out);
    for force in [false, true] {
        let mut args = vec!["restore", "-o", out.to_str().unwrap()];
        if force {
            args.insert(1, "-force");
        }
        let u = url(&replica);
        args.push(&u);
        let o = litevisor(&args);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        if force {
            assert!(
                stderr(&o).contains(victim.to_str().unwrap()),
                "error must name the corrupt file: {}",
                text(&o)
            );
        } else {
            assert!(
                stderr(&o).contains("Use -force to overwrite"),
                "{}",
                text(&o)
            );
        }
        assert_eq!(
            fs::read(&out).unwrap(),
            before,
            "existing database must be untouched"
        );
        assert!(
            !dir.path().join("app.db.tmp").exists(),
            "temp file must be removed"
        );
    }

    // A truncated file too.
    fs::write(&victim, &bytes[..bytes.len() / 3]).unwrap();
    let fresh = dir.path().join("fresh.db");
    let o = litevisor(&["restore", "-o", fresh.to_str().unwrap(), &url(&replica)]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        stderr(&o).contains(victim.to_str().unwrap()),
        "{}",
        text(&o)
    );
    assert!(!fresh.exists() && !dir.path().join("fresh.db.tmp").exists());
}

#[test]
fn missing_txid_1_is_a_clear_error() {
    let (dir, replica) = scratch("replica");
    for level in 0..=9 {
        for f in level_files(&replica, level) {
            if range(&f).0 == 1 {
                fs::remove_file(f).unwrap();
            }
        }
    }
    let out = dir.path().join("out.db");
    let o = litevisor(&["restore", "-o", out.to_str().unwrap(), &url(&replica)]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = stderr(&o);
    assert!(err.contains("no matching backup files available"), "{err}");
    assert!(err.contains("no file starting at TXID 1"), "{err}");
    assert!(!out.exists());
    // Litestream agrees there is nothing to restore.
    let o = litestream(&["restore", "-o", out.to_str().unwrap(), &url(&replica)]);
    assert!(!o.status.success());
}

#[test]
fn if_db_not_exists_and_if_replica_exists() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("app.db");
    let replica_url = fixture().url();

    // `restore -if-db-not-exists -o OUT URL` succeeds whether OUT exists or not.
    let restore_unless_there = |out: &Path| {
        let out_arg = out.to_str().unwrap();
        let o = litevisor(&["restore", "-if-db-not-exists", "-o", out_arg, &replica_url]);
        assert_eq!(o.status.code(), Some(0), "{out:?}: {}", text(&o));
    };
    let before = precious_db(&out);
    restore_unless_there(&out);
    assert_eq!(fs::read(&out).unwrap(), before);

    let new = dir.path().join("new.db");
    restore_unless_there(&new);
    assert_eq!(rows(&new), rows(&fixture().db));

    let empty = dir.path().join("empty-replica");
    fs::create_dir(&empty).unwrap();
    let o = litevisor(&[
        "restore",
        "-o",
        dir.path().join("e.db").to_str().unwrap(),
        &url(&empty),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        stderr(&o).contains("no matching backup files available"),
        "{}",
        text(&o)
    );
    let o = litevisor(&[
        "restore",
        "-if-replica-exists",
        "-o",
        dir.path().join("e.db").to_str().unwrap(),
        &url(&empty),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(!dir.path().join("e.db").exists());
}

#[test]
fn force_replaces_database_and_sidecars() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("app.db");
    let replica_url = fixture().url();
    let o_str = out.to_str().unwrap().to_string();

    // An empty output file is not "existing" (Litestream's rule).
    fs::write(&out, b"").unwrap();
    let o = litevisor(&["restore", "-o", &o_str, &replica_url]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(rows(&out), rows(&fixture().db));

    let before = fs::read(&out).unwrap();
    let o = litevisor(&["restore", "-o", &o_str, &replica_url]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("already exists and is not empty"),
        "{}",
        text(&o)
    );
    assert_eq!(fs::read(&out).unwrap(), before);

    for sidecar in ["-wal", "-shm", "-journal"] {
        // Reading the restored WAL-mode database below leaves SQLite's own -wal/-shm behind.
        for s in ["-wal", "-shm", "-journal"] {
            let _ = fs::remove_file(dir.path().join(format!("app.db{s}")));
        }
        let side = dir.path().join(format!("app.db{sidecar}"));
        fs::write(&side, b"stale").unwrap();
        fs::write(&out, b"").unwrap(); // empty: passes the size check, so the sidecar check decides
        let o = litevisor(&["restore", "-o", &o_str, &replica_url]);
        assert_eq!(o.status.code(), Some(1), "{sidecar}: {}", text(&o));
        assert!(stderr(&o).contains(side.to_str().unwrap()), "{}", text(&o));
        let o = litevisor(&["restore", "-force", "-o", &o_str, &replica_url]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        assert!(!side.exists(), "{sidecar} must be removed by -force");
        assert_eq!(integrity(&out), "ok");
        assert_eq!(rows(&out), rows(&fixture().db));
    }

    // No database but a stale -wal (Litestream does not check this case): the restore succeeds and the
    // stale WAL is gone, so SQLite cannot apply it to the restored file.
    for s in ["", "-wal", "-shm", "-journal"] {
        let _ = fs::remove_file(dir.path().join(format!("app.db{s}")));
    }
    let wal = dir.path().join("app.db-wal");
    fs::write(&wal, vec![0x37u8; 5000]).unwrap();
    let o = litevisor(&["restore", "-o", &o_str, &replica_url]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(!wal.exists());
    assert_eq!(integrity(&out), "ok");
}

#[test]
fn flags_and_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.db");
    let o_str = out.to_str().unwrap();
    let replica_url = fixture().url();

    // -dry-run prints Litestream's plan and writes nothing.
    let o = litevisor(&["restore", "-dry-run", "-o", o_str, &replica_url]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let plan = String::from_utf8_lossy(&o.stdout);
    assert!(plan.starts_with("Restore plan:\n"), "{plan}");
    assert!(
        plan.contains(&format!(
            "  txid range: 0000000000000001 - {:016x}",
            fixture().max_txid()
        )),
        "{plan}"
    );
    assert!(!out.exists());
    let theirs = litestream(&["restore", "-dry-run", "-o", o_str, &replica_url]);
    assert_eq!(
        plan,
        String::from_utf8_lossy(&theirs.stdout),
        "same plan text as litestream"
    );

    // Litestream's -f is follow mode (tests/restore_follow.rs), not force; it has no dry run.
    let o = litevisor(&["restore", "-f", "-dry-run", "-o", o_str, &replica_url]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("cannot use follow mode with -dry-run"),
        "{}",
        text(&o)
    );
    assert!(!out.exists());

    // A URL needs -o; a DB path needs a config.
    let o = litevisor(&["restore", &replica_url]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("-o is required"), "{}", text(&o));
    let o = litevisor(&["restore", "/var/lib/app.db"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("file:///path/to/replica"),
        "{}",
        text(&o)
    );

    // Bad values.
    for args in [
        ["-txid", "xyz"],
        ["-timestamp", "yesterday"],
        ["-integrity-check", "some"],
    ] {
        let o = litevisor(&["restore", args[0], args[1], "-o", o_str, &replica_url]);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", text(&o));
        assert!(stderr(&o).contains(args[0]), "{args:?}: {}", text(&o));
    }
    // -integrity-check quick and -parallelism are accepted; -json prints the summary.
    let o = litevisor(&[
        "restore",
        "-integrity-check",
        "quick",
        "-parallelism",
        "4",
        "-json",
        "-o",
        o_str,
        &replica_url,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let json = String::from_utf8_lossy(&o.stdout);
    assert!(
        json.contains(&format!("\"txid\": \"{:016x}\"", fixture().max_txid())),
        "{json}"
    );
    assert!(json.contains("\"integrity_check\": \"quick\""), "{json}");
    assert_eq!(rows(&out), rows(&fixture().db));
}
