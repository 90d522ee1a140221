//! The Litestream drop-in, through the real binary: `litestream.yml` (env expansion, warnings for
//! unknown and ignored keys, errors for what litevisor cannot do, each naming file, line and key),
//! `replicate -config` and `-exec` run by the supervisor (exit codes, final sync), `restore DB_PATH`
//! and `databases` via the config, and the same file read by REAL Litestream 0.5.17.

mod support;
use support::s3_server;

mod replicate_support;

use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use replicate_support::*;

/// Runs litevisor with `args` in `dir` (its own control socket, no inherited CA bundle).
fn lv(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(LITEVISOR)
        .args(args)
        .current_dir(dir)
        .env("LITEVISOR_SOCKET", dir.join("lv.sock"))
        .env_remove("AWS_CA_BUNDLE")
        .env_remove("LITESTREAM_CONFIG")
        .env_remove("LITEVISOR_CONFIG")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run litevisor")
}

/// REAL Litestream 0.5.17 restores `db` by its path in `config` into `out`, with every row of `db`.
fn litestream_restores_from_config(config: &str, db: &Path, out_db: &Path, env: &[(&str, &str)]) {
    support::run_ok(
        "litestream restore -config",
        Command::new("litestream")
            .args(["restore", "-config", config, "-o"])
            .arg(out_db)
            .arg(db)
            .envs(env.iter().copied())
            .env_remove("AWS_CA_BUNDLE"),
    );
    assert_same_rows(db, out_db);
}

/// `litevisor restore -config CONFIG -o OUT DB` (in `dir`, with `env`) restores `db` by its path
/// in `config` into `out_db`, with every row of `db`.
fn litevisor_restores_from_config(
    dir: &Path,
    config: &str,
    db: &Path,
    out_db: &Path,
    env: &[(&str, &str)],
) {
    let (out, db_arg) = (out_db.to_str().unwrap(), db.to_str().unwrap());
    let args = ["restore", "-config", config, "-o", out, db_arg];
    lv_exits(dir, &args, env, 0);
    assert_same_rows(db, out_db);
}

/// Runs litevisor like `lv`; it must exit with `code`. Returns (stdout, stderr).
#[track_caller]
fn lv_exits(dir: &Path, args: &[&str], env: &[(&str, &str)], code: i32) -> (String, String) {
    let out = lv(dir, args, env);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(code), "{args:?}:\n{stderr}");
    (stdout, stderr)
}

/// `litevisor databases -config CONFIG` in `dir`, which must fail: its stderr.
#[track_caller]
fn databases_refuses(dir: &Path, config: &str) -> String {
    let out = lv(dir, &["databases", "-config", config], &[]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success(), "{config} accepted:\n{stderr}");
    stderr
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A scratch directory holding `litestream.yml` with `body`, and the file's path.
fn scratch_config(body: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), body);
    (dir, config)
}

fn write_config(dir: &Path, body: &str) -> String {
    let path = dir.join("litestream.yml");
    fs::write(&path, body).unwrap();
    path.to_string_lossy().into_owned()
}

/// A `replicate` started in the background with its stderr in a log file.
fn spawn_replicate(dir: &Path, args: &[&str]) -> Replicator {
    let mut cmd = Command::new(LITEVISOR);
    cmd.arg("replicate")
        .args(args)
        .current_dir(dir)
        .env("LITEVISOR_SOCKET", dir.join("lv.sock"))
        .env_remove("AWS_CA_BUNDLE");
    Replicator::spawn(cmd, dir.join(format!("replicate-{}.log", args.len())))
}

fn count(db: &Path) -> i64 {
    let c = rusqlite::Connection::open(db).unwrap();
    c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn env_expansion_and_no_expand_env() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let config = write_config(
        dir.path(),
        "dbs:\n  - path: $LV_DIR/a${LV_UNSET_XYZ}.db\n    replica:\n      url: file://${LV_DIR}/replica\n",
    );
    let (stdout, _) = lv_exits(
        dir.path(),
        &["databases", "-config", &config],
        &[("LV_DIR", d)],
        0,
    );
    assert!(
        stdout.contains(&format!("{d}/a.db")) && stdout.contains(&format!("file://{d}/replica")),
        "unset variables expand to nothing:\n{stdout}"
    );

    let (stdout, _) = lv_exits(
        dir.path(),
        &["databases", "-no-expand-env", "-config", &config],
        &[("LV_DIR", d)],
        0,
    );
    assert!(
        stdout.contains("$LV_DIR/a${LV_UNSET_XYZ}.db"),
        "the text is taken literally:\n{stdout}"
    );
}

#[test]
fn unknown_and_ignored_keys_are_warnings_with_file_line_and_key() {
    let (dir, config) = scratch_config(
        "heartbeat-url: http://example.invalid/ping\ndbs:\n  - path: /data/app.db\n    monitr-interval: 1s\n    replica:\n      url: file:///backups/app\n",
    );
    let (stdout, stderr) = lv_exits(dir.path(), &["databases", "-config", &config], &[], 0);
    assert!(stdout.contains("/data/app.db") && stdout.contains("file:///backups/app"));
    assert!(
        stderr.contains(&format!(
            "{config}:4:5: dbs[0].monitr-interval: unknown key"
        )),
        "{stderr}"
    );
    support::assert_contains(&stderr, format!("{config}:1:1: heartbeat-url: ignored"));
}

#[test]
fn rejected_keys_fail_with_file_line_and_key() {
    let (dir, config) = scratch_config(
        "dbs:\n  - dir: /data\n    replica:\n      url: file:///r\n  - path: /data/b.db\n    replica:\n      url: gs://bucket/b\n  - path: /data/c.db\n    replicas:\n      - url: file:///r1\n      - url: file:///r2\n",
    );
    let (_, stderr) = lv_exits(dir.path(), &["replicate", "-config", &config], &[], 2);
    for expected in [
        "dbs[0].pattern: 'pattern' is required when using 'dir'".to_string(),
        format!("{config}:7:7: dbs[1].replica.url: replica type \"gs\" is not supported"),
        format!("{config}:9:5: dbs[2].replicas: several replicas per database are not supported"),
    ] {
        assert!(
            stderr.contains(&expected),
            "missing {expected:?}:\n{stderr}"
        );
    }
}

#[test]
fn usage_errors() {
    let (dir, config) =
        scratch_config("dbs:\n  - path: /data/a.db\n    replica: {url: file:///r}\n");
    let none = dir.path().join("none.yml").to_string_lossy().into_owned();
    for (args, says) in [
        (
            &["replicate", "-once", "-exec", "true", "-config", &config][..],
            "-exec with -once",
        ),
        (
            &["replicate", "-config", &config, "a.db", "file:///r"],
            "-config",
        ),
        (&["replicate", "-config", &none], "none.yml"),
    ] {
        let (_, stderr) = lv_exits(dir.path(), args, &[], 2);
        assert!(
            stderr.contains(says),
            "{args:?}: want {says:?} in:\n{stderr}"
        );
    }
}

#[test]
fn replicate_config_then_restore_by_db_path_and_with_litestream() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap().to_string();
    let db = dir.path().join("app.db");
    let replica = dir.path().join("replica");
    // The same file is read by litevisor and by Litestream: only Litestream keys, env expanded.
    let config = write_config(
        dir.path(),
        "dbs:\n  - path: ${DATA_DIR}/app.db\n    monitor-interval: 100ms\n    replica:\n      type: file\n      path: $DATA_DIR/replica\n",
    );
    let mut c = app(&db);
    create_table(&c);
    insert(&mut c, 0..200, 20);

    let mut child = Command::new(LITEVISOR);
    child
        .args(["replicate", "-config", &config])
        .env("DATA_DIR", &d)
        .env("LITEVISOR_SOCKET", dir.path().join("lv.sock"))
        .env_remove("AWS_CA_BUNDLE");
    let mut r = Replicator::spawn(child, dir.path().join("replicate.log"));
    wait_first_upload(&r, &replica);
    insert(&mut c, 200..500, 25);
    drop(c);
    // SIGTERM right after the last commit: the final sync must carry it.
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(r.child.id() as i32, libc::SIGTERM) };
    let code = r.wait_exit(Duration::from_secs(60)).code().unwrap_or(-1);
    assert_eq!(code, 0, "log:\n{}", r.log_text());

    // litevisor restore DB_PATH: the replica comes from the config.
    let out_db = dir.path().join("restored.db");
    litevisor_restores_from_config(dir.path(), &config, &db, &out_db, &[("DATA_DIR", &d)]);
    assert_eq!(count(&out_db), 500);

    // A path the config does not list is a clear error.
    let (_, stderr) = lv_exits(
        dir.path(),
        &[
            "restore",
            "-config",
            &config,
            "-o",
            "x.db",
            "/nowhere/else.db",
        ],
        &[("DATA_DIR", &d)],
        1,
    );
    support::assert_contains(&stderr, "database not found in config");

    // REAL Litestream reads the same file and restores what litevisor replicated.
    litestream_restores_from_config(
        &config,
        &db,
        &dir.path().join("litestream-restored.db"),
        &[("DATA_DIR", &d)],
    );
}

#[test]
fn exec_exit_code_is_the_programs_and_rows_are_replicated() {
    let (dir, db, replica, c) = scene();
    drop(c);
    let config = write_config(
        dir.path(),
        &format!(
            "dbs:\n  - path: {}\n    replica:\n      url: file://{}\n",
            db.display(),
            replica.display()
        ),
    );
    // The program writes rows (sqlite3, with a busy timeout like a real app) and fails with 3.
    let script = format!(
        "sh -c 'for i in 1 2 3 4 5; do sqlite3 -cmd \".timeout 5000\" {db} \"INSERT INTO t(id, v) VALUES ($i, '\\''v'\\'')\"; done; exit 3'",
        db = db.display()
    );
    let mut r = spawn_replicate(dir.path(), &["-exec", &script, "-config", &config]);
    let code = r.wait_exit(Duration::from_secs(60)).code().unwrap_or(-1);
    assert_eq!(code, 3, "log:\n{}", r.log_text());
    assert_eq!(count(&db), 5, "the program ran");
    let restored = litevisor_restore(&replica, &dir.path().join("restored.db"));
    assert_eq!(
        count(&restored),
        5,
        "the final sync after the program's exit carried every row; log:\n{}",
        r.log_text()
    );
}

#[test]
fn exec_killed_by_sigterm_exits_143_after_the_final_sync() {
    let (dir, db, replica, mut c) = scene();
    insert(&mut c, 0..50, 10);
    // DB_PATH REPLICA_URL form, program given with -exec (split like a shell: quotes kept together).
    let marker = dir.path().join("started");
    let script = format!("sh -c 'touch {}; exec sleep 60'", marker.display());
    let mut r = spawn_replicate(
        dir.path(),
        &[
            "-exec",
            &script,
            "-monitor-interval",
            "100ms",
            db.to_str().unwrap(),
            &url(&replica),
        ],
    );
    wait_for(&r, "the program to start", Duration::from_secs(30), || {
        marker.exists()
    });
    insert(&mut c, 50..120, 10);
    drop(c);
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(r.child.id() as i32, libc::SIGTERM) };
    let code = r.wait_exit(Duration::from_secs(60)).code().unwrap_or(-1);
    assert_eq!(code, 143, "log:\n{}", r.log_text());
    let restored = litevisor_restore(&replica, &dir.path().join("restored.db"));
    assert_same_rows(&db, &restored);
}

/// `replicate -exec`: SIGHUP is the program's (as Litestream forwards it), not a reload.
#[test]
fn exec_sighup_is_forwarded_to_the_program() {
    let (dir, db, replica, c) = scene();
    drop(c);
    let (ready, hup) = (dir.path().join("ready"), dir.path().join("hup"));
    let script = format!(
        "sh -c 'trap \"touch {hup}\" HUP; touch {ready}; while :; do sleep 0.05; done'",
        hup = hup.display(),
        ready = ready.display()
    );
    let mut r = spawn_replicate(
        dir.path(),
        &["-exec", &script, db.to_str().unwrap(), &url(&replica)],
    );
    wait_for(&r, "the program to start", Duration::from_secs(30), || {
        ready.exists()
    });
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(r.child.id() as i32, libc::SIGHUP) };
    wait_for(
        &r,
        "the program to get SIGHUP",
        Duration::from_secs(30),
        || hup.exists(),
    );
    unsafe { libc::kill(r.child.id() as i32, libc::SIGTERM) };
    let code = r.wait_exit(Duration::from_secs(60)).code().unwrap_or(-1);
    assert_eq!(code, 143, "log:\n{}", r.log_text());
}

/// `replicate -exec APP DB URL`, then SIGTERM twice 100 ms apart while the app takes half a second
/// to stop (GNU `timeout` does this): the app keeps its grace and its exit code, and the final sync
/// carries every row the database kept.
#[test]
fn exec_a_repeated_sigterm_keeps_the_programs_code_and_the_final_sync() {
    let (dir, db, replica, c) = scene();
    drop(c);
    let events = dir.path().join("events");
    let app_script = dir.path().join("app.sh");
    fs::write(
        &app_script,
        format!(
            "#!/bin/sh\n\
             trap 'echo term >> {ev}; sleep 0.5; exit 5' TERM\n\
             i=0\n\
             while :; do i=$((i+1)); sqlite3 -cmd '.timeout 5000' {db} \"insert into t(id, v) values($i, 'v')\" && echo $i >> {ev}.rows; done\n",
            ev = events.display(),
            db = db.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&app_script, fs::Permissions::from_mode(0o755)).unwrap();
    let mut r = spawn_replicate(
        dir.path(),
        &[
            "-exec",
            app_script.to_str().unwrap(),
            "-monitor-interval",
            "100ms",
            db.to_str().unwrap(),
            &url(&replica),
        ],
    );
    let rows_file = dir.path().join("events.rows");
    wait_for(
        &r,
        "the app to commit rows",
        Duration::from_secs(30),
        || fs::read_to_string(&rows_file).is_ok_and(|t| t.lines().count() >= 20),
    );
    let pid = r.child.id() as i32;
    // SAFETY (both): kill(2) on our own child.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    r.wait_log("SIGTERM received");
    std::thread::sleep(Duration::from_millis(100));
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let code = r.wait_exit(Duration::from_secs(60)).code().unwrap_or(-1);
    let log = r.log_text();
    assert_eq!(code, 5, "the program's own exit code; log:\n{log}");
    assert!(log.contains("SIGTERM again"), "log:\n{log}");
    assert!(!log.contains("FINAL SYNC FAILED"), "log:\n{log}");
    let restored = litevisor_restore(&replica, &dir.path().join("restored.db"));
    assert_same_rows(&db, &restored);
}

/// moto's signature check rejects listings (a moto limitation), so the server here accepts any
/// keys: this checks the S3 keys of the file are read and used (by litevisor and by Litestream),
/// not their precedence over the environment (unit-tested in config::litestream).
#[test]
fn s3_replica_from_the_file_replicated_and_restored_by_both_tools() {
    let server = s3_server::S3Server::with_bucket("lsyml");
    let (dir, db, _, mut c) = scene();
    insert(&mut c, 0..300, 30);
    drop(c);
    // Top-level keys are defaults for every replica; their values come through expansion.
    let config = write_config(
        dir.path(),
        &format!(
            "access-key-id: $KEY_ID\nsecret-access-key: ${{KEY_SECRET}}\ndbs:\n  - path: {}\n    replica:\n      type: s3\n      bucket: lsyml\n      path: app\n      endpoint: {}\n",
            db.display(),
            server.endpoint
        ),
    );
    let secret = "file-secret-never-printed";
    let env = [("KEY_ID", "AKIAFILEKEY"), ("KEY_SECRET", secret)];
    let (_, stderr) = lv_exits(
        dir.path(),
        &["replicate", "-once", "-config", &config],
        &env,
        0,
    );
    assert!(
        !stderr.contains(secret),
        "the secret was printed:\n{stderr}"
    );

    let restored = dir.path().join("restored.db");
    litevisor_restores_from_config(dir.path(), &config, &db, &restored, &env);

    // The same file, read by REAL Litestream, restores it too.
    litestream_restores_from_config(
        &config,
        &db,
        &dir.path().join("litestream-restored.db"),
        &env,
    );
}

/// As under Litestream, the `-exec` program sees `LITESTREAM_ACCESS_KEY_ID`/`_SECRET_ACCESS_KEY` as
/// the `AWS_*` variables its own AWS SDK reads (when those are not set already).
#[test]
fn exec_sees_litestream_keys_as_aws_variables() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let seen = dir.path().join("seen");
    let replica = format!("file://{}", dir.path().join("replica").display());
    let script = format!(
        "sh -c 'echo \"$AWS_ACCESS_KEY_ID $AWS_SECRET_ACCESS_KEY\" > {}'",
        seen.display()
    );
    // Empty counts as unset, for litevisor as for Litestream.
    let out = lv(
        dir.path(),
        &[
            "replicate",
            "-exec",
            &script,
            &db.display().to_string(),
            &replica,
        ],
        &[
            ("AWS_ACCESS_KEY_ID", ""),
            ("AWS_SECRET_ACCESS_KEY", ""),
            ("LITESTREAM_ACCESS_KEY_ID", "AKIDFROMLS"),
            ("LITESTREAM_SECRET_ACCESS_KEY", "secret-from-ls"),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    let seen = std::fs::read_to_string(&seen).expect("the program ran");
    assert_eq!(seen.trim(), "AKIDFROMLS secret-from-ls");
}

/// Runs REAL Litestream 0.5.17 `databases -config CONFIG`: whether it accepts the file, and what it
/// says.
fn litestream_reads(config: &str) -> (bool, String) {
    let out = Command::new("litestream")
        .args(["databases", "-config", config])
        .env_remove("AWS_CA_BUNDLE")
        .env_remove("LITESTREAM_CONFIG")
        .output()
        .expect("run litestream databases");
    let (stdout, stderr) = text(&out);
    (out.status.success(), stdout + &stderr)
}

/// Every rule Litestream enforces on its file, one fixture each: Litestream refuses it, and so does
/// litevisor, naming the file, line and key.
#[test]
fn files_litestream_refuses_are_refused_with_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("a.db");
    let db = db.display();
    let replica = format!("replica: {{url: file://{}/r}}", dir.path().display());
    let cases = [
        (
            format!("snapshot:\n  interval: 0s\ndbs:\n  - path: {db}\n    {replica}\n"),
            ":2:3: snapshot.interval: must be more than 0",
        ),
        (
            format!("snapshot:\n  retention: 0s\ndbs:\n  - path: {db}\n    {replica}\n"),
            ":2:3: snapshot.retention: must be more than 0",
        ),
        (
            format!("dbs:\n  - path: {db}\n    snapshot: {{interval: 0s}}\n    {replica}\n"),
            ":3:16: dbs[0].snapshot.interval: must be more than 0",
        ),
        (
            format!(
                "dbs:\n  - path: {db}\n    replica:\n      url: file:///r\n      sync-interval: 0s\n"
            ),
            ":5:7: dbs[0].replica.sync-interval: must be more than 0",
        ),
        (
            format!("sync-interval: 0s\ndbs:\n  - path: {db}\n    {replica}\n"),
            ":1:1: sync-interval: must be more than 0",
        ),
        (
            format!(
                "dbs:\n  - path: {db}\n    snapshot: {{interval: 1h}}\n    {replica}\n  - path: {db}2\n    snapshot: {{interval: 2h}}\n    replica: {{url: file:///r2}}\n"
            ),
            ":6:16: dbs[1].snapshot.interval: 7200s conflicts with dbs[0].snapshot.interval (3600s, line 3)",
        ),
        (
            format!("l0-retention-check-interval: 0s\ndbs:\n  - path: {db}\n    {replica}\n"),
            ":1:1: l0-retention-check-interval: must be more than 0",
        ),
        (
            format!("shutdown-sync-interval: 0s\ndbs:\n  - path: {db}\n    {replica}\n"),
            ":1:1: shutdown-sync-interval: must be more than 0",
        ),
        (
            format!("heartbeat-url: ftp://x\ndbs:\n  - path: {db}\n    {replica}\n"),
            ":1:1: heartbeat-url: \"ftp://x\" is not an http:// or https:// URL",
        ),
        (
            format!(
                "heartbeat-url: http://x\nheartbeat-interval: 10s\ndbs:\n  - path: {db}\n    {replica}\n"
            ),
            ":2:1: heartbeat-interval: must be at least 1m",
        ),
        (
            format!("dbs:\n  - path: {db}\n    replica: {{type: file, path: \"file:///r\"}}\n"),
            ":3:27: dbs[0].replica.path: a replica `path` cannot be a URL",
        ),
        (
            format!("dbs:\n  - {replica}\n"),
            ":2:5: dbs[0].path: missing required key",
        ),
    ];
    for (i, (body, expected)) in cases.iter().enumerate() {
        let config = dir.path().join(format!("case{i}.yml"));
        fs::write(&config, body).unwrap();
        let config = config.to_str().unwrap();
        let (accepted, said) = litestream_reads(config);
        assert!(!accepted, "Litestream accepts case {i}?\n{body}\n{said}");
        let stderr = databases_refuses(dir.path(), config);
        assert!(
            stderr.contains(&format!("{config}{expected}")),
            "case {i}: want {expected:?} in:\n{stderr}"
        );
    }
}

/// Files Litestream accepts that litevisor reads the same way: no `dbs:` (Litestream's shipped
/// `etc/litestream.yml` idles), `l0-retention: 0`, `$PID`, one snapshot setting shared by databases.
#[test]
fn files_litestream_accepts_are_read_the_same_way() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("a.db");
    let db = db.display();
    for body in [
        String::new(),
        "# dbs:\n#  - path: /var/lib/db\naddr: \":9090\"\n".to_string(),
        format!("l0-retention: 0s\ndbs:\n  - path: {db}\n    replica: {{url: file:///r}}\n"),
        format!(
            "dbs:\n  - path: {db}\n    snapshot: {{interval: 1h}}\n    replica: {{url: file:///r}}\n  - path: {db}2\n    snapshot: {{interval: 1h}}\n    replica: {{url: file:///r2}}\n"
        ),
    ] {
        let config = write_config(dir.path(), &body);
        let (accepted, said) = litestream_reads(&config);
        assert!(accepted, "Litestream refuses\n{body}\n{said}");
        let out = lv(dir.path(), &["databases", "-config", &config], &[]);
        assert!(out.status.success(), "{body}\n{}", text(&out).1);
    }

    // `$PID` is the replicator's own process id, as in Litestream.
    let config = write_config(
        dir.path(),
        &format!("dbs:\n  - path: {db}\n    replica: {{url: \"file:///backups/r-$PID\"}}\n"),
    );
    let (stdout, _) = lv_exits(dir.path(), &["databases", "-config", &config], &[], 0);
    let pid: String = stdout
        .split("file:///backups/r-")
        .nth(1)
        .unwrap_or("")
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    assert!(!pid.is_empty(), "{stdout}");

    // With no databases, `replicate` starts, says so, and waits for a stop signal (exit 0).
    let config = write_config(dir.path(), "addr: \":9090\"\n");
    let mut lv = spawn_replicate(dir.path(), &["-config", &config]);
    lv.wait_log("no databases in the configuration");
    std::thread::sleep(Duration::from_millis(300));
    assert!(lv.alive(), "it idles:\n{}", lv.log_text());
    lv.stop_ok();
}

/// An S3 access-point ARN, as URL or as bucket, is refused with a clear message (litevisor's S3
/// client would take it for a bucket name and retry for ever); Litestream accepts it.
#[test]
fn s3_access_point_arns_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let arn = "arn:aws:s3:us-east-1:123456789012:accesspoint/myap";
    for (replica, at) in [
        (
            format!("{{url: \"s3://{arn}/db\"}}"),
            ":3:15: dbs[0].replica.url:",
        ),
        (
            format!("{{type: s3, bucket: \"{arn}\", path: db}}"),
            ":3:14: dbs[0].replica.bucket:",
        ),
    ] {
        let config = write_config(
            dir.path(),
            &format!("dbs:\n  - path: /data/a.db\n    replica: {replica}\n"),
        );
        let (accepted, said) = litestream_reads(&config);
        assert!(accepted, "{said}");
        let stderr = databases_refuses(dir.path(), &config);
        assert!(
            stderr.contains(&format!("{config}{at}"))
                && stderr.contains("S3 access-point ARNs are not supported"),
            "{stderr}"
        );
    }
    let url = format!("s3://{arn}/db");
    let (_, stderr) = lv_exits(
        dir.path(),
        &["replicate", "-once", "/data/a.db", &url],
        &[],
        2,
    );
    support::assert_contains(&stderr, "access-point ARNs");
}
