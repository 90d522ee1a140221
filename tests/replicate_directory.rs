//! Directory mode (`dir:` entries) against the real Litestream 0.5.17, on file and S3 (moto)
//! replicas: the same replica layout both ways (`DIR/sub/x.db` -> `<replica>/sub/x.db/...`), watch
//! mode (a database created while running is replicated, one deleted is dropped without an error
//! storm, a non-WAL file is reported once), and `restore -config` of a whole directory.

mod support;
use support::s3_server;

mod replicate_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use replicate_support::*;
use s3_server::S3Server;

/// A WAL-mode database at `path` holding rows 0..n.
fn database(path: &Path, n: i64) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut c = app(path);
    create_table(&c);
    insert(&mut c, 0..n, 1);
}

fn config(dir: &Path, body: &str) -> PathBuf {
    let cfg = dir.join("litestream.yml");
    std::fs::write(&cfg, body).unwrap();
    cfg
}

/// A Litestream configuration replicating every `*.db` below `data` (recursively, watching it
/// when `watch`) to `url`/<relative path>.
fn dir_yml(data: &Path, url: &str, watch: bool) -> String {
    let watch = if watch { "    watch: true\n" } else { "" };
    format!(
        "dbs:\n  - dir: {}\n    pattern: '*.db'\n    recursive: true\n{watch}    replica:\n      url: {url}\n",
        data.display()
    )
}

fn litevisor_dir(cfg: &Path, log: &Path, env: &[(&str, &str)]) -> Replicator {
    let mut cmd = Command::new(LITEVISOR);
    cmd.env("LITEVISOR_SOCKET", log.with_extension("sock"))
        .args(["replicate", "-log-level", "debug"]);
    replicate_dir(cmd, cfg, log, env)
}

fn litestream_dir(cfg: &Path, log: &Path, env: &[(&str, &str)]) -> Replicator {
    let mut cmd = Command::new("litestream");
    cmd.env_remove("AWS_CA_BUNDLE").arg("replicate");
    replicate_dir(cmd, cfg, log, env)
}

/// `cmd` (a `replicate` command line) run on the configuration `cfg` with `env` added.
fn replicate_dir(mut cmd: Command, cfg: &Path, log: &Path, env: &[(&str, &str)]) -> Replicator {
    cmd.arg("-config").arg(cfg).envs(env.iter().copied());
    Replicator::spawn(cmd, log.to_path_buf())
}

/// Deletes `data` and checks that `litevisor restore -config cfg` (with `env`) brings every
/// database of `names` back with the rows it had.
fn assert_restore_config_brings_back(
    data: &Path,
    names: &[&str],
    cfg: &Path,
    env: &[(&str, &str)],
) {
    let before: Vec<_> = names.iter().map(|n| rows(&data.join(n))).collect();
    std::fs::remove_dir_all(data).unwrap();
    support::run_ok(
        "litevisor restore -config",
        Command::new(LITEVISOR)
            .envs(env.iter().copied())
            .args(["restore", "-config"])
            .arg(cfg),
    );
    for (n, rows_before) in names.iter().zip(before) {
        assert_eq!(rows(&data.join(n)), rows_before, "{n}");
    }
}

fn has_l0(replica: &Path) -> bool {
    max_l0(replica) >= 1
}

/// `replicator` (`litevisor_dir` or `litestream_dir`) replicates the directory `data` to the file
/// replica `replica` (its configuration beside it, returned) until every database of `names` has
/// an L0 file there.
fn replicate_all(
    replicator: fn(&Path, &Path, &[(&str, &str)]) -> Replicator,
    data: &Path,
    replica: &Path,
    names: &[&str],
) -> PathBuf {
    let cfg = replica.with_extension("yml");
    std::fs::write(&cfg, dir_yml(data, &url(replica), false)).unwrap();
    let r = replicator(&cfg, &replica.with_extension("log"), &[]);
    stop_when(
        r,
        "every database's first L0",
        Duration::from_secs(60),
        || names.iter().all(|n| has_l0(&replica.join(n))),
    );
    cfg
}

/// Waits (up to `limit`) until `done`, then stops `r`, which must exit 0.
fn stop_when(r: Replicator, what: &str, limit: Duration, done: impl FnMut() -> bool) {
    wait_for(&r, what, limit, done);
    let status = r.stop();
    assert!(status.success(), "after {what}: exit {status:?}");
}

#[test]
fn file_replicas_of_a_directory_interoperate_with_litestream_both_ways() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    let names = ["a.db", "sub/b.db", "sub/deep/c.db"];
    for (i, n) in names.iter().enumerate() {
        database(&data.join(n), 10 + i as i64);
    }
    std::fs::write(data.join("notes.txt"), "not a database").unwrap();
    let replica = t.path().join("replica");
    replicate_all(litevisor_dir, &data, &replica, &names);
    // Litestream restores each from the layout litevisor wrote.
    for n in names {
        let out = litestream_restore(&replica.join(n), &t.path().join("ls-out").join(n));
        assert_same_rows(&data.join(n), &out);
    }

    // And the other way: Litestream replicates the directory, `litevisor restore -config` brings
    // every database back (Litestream itself cannot: "database not found in config").
    let replica2 = t.path().join("replica2");
    let cfg2 = replicate_all(litestream_dir, &data, &replica2, &names);
    assert_restore_config_brings_back(&data, &names, &cfg2, &[]);
}

#[test]
fn watch_mode_follows_creations_and_deletions() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    database(&data.join("first.db"), 5);
    database(&data.join("doomed.db"), 5);
    let replica = t.path().join("replica");
    let cfg = config(t.path(), &dir_yml(&data, &url(&replica), true));
    let lv = litevisor_dir(&cfg, &t.path().join("lv.log"), &[]);
    wait_for(&lv, "the first L0s", Duration::from_secs(30), || {
        has_l0(&replica.join("first.db")) && has_l0(&replica.join("doomed.db"))
    });

    // Created while running, in a new subdirectory too: replicated from its first commit.
    database(&data.join("new/tenant.db"), 3);
    wait_for(
        &lv,
        "the new database's replica",
        Duration::from_secs(30),
        || has_l0(&replica.join("new/tenant.db")),
    );
    // Not a database: written several times, reported once.
    for i in 0..5 {
        std::fs::write(data.join("junk.db"), format!("junk {i}")).unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
    // Deleted: dropped after one last sync, no stream of errors.
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(data.join(format!("doomed.db{suffix}")));
    }
    lv.wait_log("doomed.db: dropped");
    std::thread::sleep(Duration::from_secs(2));
    let mut c = app(&data.join("new/tenant.db"));
    insert(&mut c, 3..6, 1);
    drop(c);
    let log = lv.log_text();
    assert!(lv.stop().success(), "{log}");
    assert_eq!(
        log.matches("junk.db skipped: not a SQLite database")
            .count(),
        1,
        "{log}"
    );
    assert!(!log.contains("final sync failed, retrying"), "{log}");
    assert!(!log.contains("sync failed:"), "{log}");
    let out = litestream_restore(&replica.join("new/tenant.db"), &t.path().join("out.db"));
    assert_same_rows(&data.join("new/tenant.db"), &out);
}

#[test]
fn s3_replicas_of_a_directory_interoperate_with_litestream_both_ways() {
    let server = S3Server::with_bucket("dirs");
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    let names = ["x.db", "eu/y.db"];
    for n in names {
        database(&data.join(n), 7);
    }
    let env = [
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    let s3_url = |path: &str| {
        format!(
            "s3://dirs/{path}?endpoint={}&forcePathStyle=true",
            server.endpoint
        )
    };
    let (rt, client) = s3_server::sdk_client(&server.endpoint, None);
    // Every database of `names` has an L0 file under `prefix`/<name>/.
    let all_uploaded = |prefix: &str| {
        let keys: Vec<String> = s3_server::list_keys(&rt, &client, "dirs")
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        names.iter().all(|n| {
            keys.iter()
                .any(|key| key.starts_with(&format!("{prefix}/{n}/0000/")))
        })
    };
    // litevisor writes <prefix>/<rel>/0000/...; Litestream restores each.
    let cfg = config(t.path(), &dir_yml(&data, &s3_url("lv"), false));
    let lv = litevisor_dir(&cfg, &t.path().join("lv.log"), &env);
    stop_when(lv, "the S3 L0s", Duration::from_secs(60), || {
        all_uploaded("lv")
    });
    for n in names {
        let out = t.path().join("ls-out").join(n);
        std::fs::create_dir_all(out.parent().unwrap()).unwrap();
        let status = Command::new("litestream")
            .env_remove("AWS_CA_BUNDLE")
            .envs(env)
            .args(["restore", "-o"])
            .arg(&out)
            .arg(s3_url(&format!("lv/{n}")))
            .status()
            .unwrap();
        assert!(status.success(), "litestream restore {n}");
        assert_same_rows(&data.join(n), &out);
    }
    // Litestream writes the directory to S3; litevisor restores all of it from the config.
    let cfg2 = config(t.path(), &dir_yml(&data, &s3_url("ls"), false));
    let ls = litestream_dir(&cfg2, &t.path().join("ls.log"), &env);
    stop_when(ls, "Litestream's S3 L0s", Duration::from_secs(60), || {
        all_uploaded("ls")
    });
    assert_restore_config_brings_back(&data, &names, &cfg2, &env);
}

#[test]
fn the_supervisor_restores_a_directory_before_its_services_start() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    let replica = t.path().join("replica");
    database(&data.join("t1.db"), 4);
    database(&data.join("sub/t2.db"), 6);
    let toml = t.path().join("litevisor.toml");
    std::fs::write(
        &toml,
        format!(
            "shutdown_timeout = \"10s\"\n[[databases]]\ndir = \"{}\"\npattern = \"*.db\"\nrecursive = true\nreplica = \"file://{}\"\n\n[services.app]\ncommand = [\"/bin/sh\", \"-c\", \"ls {}/t1.db {}/sub/t2.db && exec sleep 1000\"]\n",
            data.display(),
            replica.display(),
            data.display(),
            data.display()
        ),
    )
    .unwrap();
    let run = |log: &str| {
        let mut cmd = Command::new(LITEVISOR);
        cmd.env("LITEVISOR_SOCKET", t.path().join(format!("{log}.sock")))
            .arg("--config")
            .arg(&toml);
        Replicator::spawn(cmd, t.path().join(log))
    };
    let first = run("first.log");
    stop_when(first, "both replicas", Duration::from_secs(30), || {
        has_l0(&replica.join("t1.db")) && has_l0(&replica.join("sub/t2.db"))
    });
    let before = (rows(&data.join("t1.db")), rows(&data.join("sub/t2.db")));
    std::fs::remove_dir_all(&data).unwrap();
    std::fs::create_dir_all(&data).unwrap();
    let second = run("second.log");
    second.wait_log("sub/t2.db");
    let log = second.log_text();
    assert!(second.stop().success(), "{log}");
    assert!(
        !log.contains("No such file"),
        "the app ran before the restore: {log}"
    );
    assert_eq!(
        (rows(&data.join("t1.db")), rows(&data.join("sub/t2.db"))),
        before
    );
}
