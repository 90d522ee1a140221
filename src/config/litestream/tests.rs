//! Whole files through [`parse`]: what is mapped, warned about and refused, with locations.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;
use crate::config::s3::Secret;
use crate::config::{Replica, RestorePolicy, S3Options};

fn load_text(text: &str, overrides: &Overrides) -> (Option<Config>, Problems) {
    let mut problems = Problems::default();
    let config = parse(
        Path::new("/etc/ls.yml"),
        text,
        true,
        overrides,
        &mut problems,
    );
    (config, problems)
}

fn ok(text: &str) -> (Config, Vec<String>) {
    let (config, mut problems) = load_text(text, &Overrides::default());
    let warnings: Vec<String> = problems
        .take_warnings()
        .iter()
        .map(|w| w.to_string())
        .collect();
    assert!(problems.is_empty(), "{}", problems.into_error());
    (config.expect("config"), warnings)
}

fn errors(text: &str) -> String {
    let (config, problems) = load_text(text, &Overrides::default());
    assert!(config.is_none());
    problems.into_error().to_string()
}

#[test]
fn databases_replicas_and_defaults() {
    let (config, warnings) = ok("
access-key-id: AKID
secret-access-key: SECRETKEY
region: eu-west-1
shutdown-sync-timeout: 5s
levels:
  - interval: 10s
  - interval: 1m
snapshot:
  interval: 1h
  retention: 2h
retention:
  enabled: false
dbs:
  - path: /data/a.db
    monitor-interval: 2s
    checkpoint-interval: 30s
    busy-timeout: 3s
    min-checkpoint-page-count: 50
    truncate-page-n: 0
    max-sync-wal-bytes: 1024
    restore-if-db-not-exists: true
    meta-path: /meta/a
    replica:
      url: s3://bkt/a?endpoint=localhost:9000
      sync-interval: 5s
  - path: /data/b.db
    allow-network-fs: yes
    snapshot:
      interval: 30m
    replicas:
      - type: s3
        bucket: b2
        path: /keep/as/written
        access-key-id: OWN
        part-size: 5MiB
  - path: /data/c.db
    replica:
      path: /backups/c
");
    assert_eq!(
        warnings,
        [
            "/etc/ls.yml:30:7: dbs[1].snapshot.interval: ignored: the top-level snapshot.interval (3600s) applies to every database, as in Litestream"
        ]
    );
    assert!(config.services.is_empty());
    assert_eq!(config.shutdown_timeout, Duration::from_secs(5));
    let [a, b, c] = config.databases.as_slice() else {
        panic!("{:?}", config.databases)
    };
    assert_eq!(a.path, Path::new("/data/a.db"));
    assert_eq!(a.restore, RestorePolicy::IfMissing);
    assert_eq!(a.sync_interval, Duration::from_secs(5));
    assert_eq!(a.checkpoint_interval, Duration::from_secs(30));
    assert_eq!(a.busy_timeout, Duration::from_secs(3));
    assert_eq!(a.min_checkpoint_page_count, 50);
    assert_eq!(a.truncate_page_n, 121_359, "0 keeps the default");
    assert_eq!(a.max_sync_wal_bytes, 1024);
    assert_eq!(a.meta_path.as_deref(), Some(Path::new("/meta/a")));
    assert_eq!(a.levels, [Duration::from_secs(10), Duration::from_secs(60)]);
    assert_eq!(
        (a.snapshot_interval, a.snapshot_retention),
        (Duration::from_secs(3600), Duration::from_secs(7200))
    );
    assert!(!a.retention_enabled && !a.allow_network_fs);
    let Replica::S3(s3) = &a.replica else {
        panic!("{:?}", a.replica)
    };
    let force_path_style = &s3.effective_force_path_style();
    let S3Options {
        bucket,
        path,
        endpoint,
        region,
        access_key_id,
        secret_access_key,
        ..
    } = s3;
    assert_eq!((bucket.as_str(), path.as_str()), ("bkt", "a"));
    assert_eq!(endpoint.as_deref(), Some("http://localhost:9000"));
    assert_eq!(region.as_deref(), Some("eu-west-1"), "top-level default");
    assert!(*force_path_style);
    assert_eq!(access_key_id.as_ref().map(Secret::expose), Some("AKID"));
    assert_eq!(
        secret_access_key.as_ref().map(Secret::expose),
        Some("SECRETKEY")
    );

    assert_eq!(b.restore, RestorePolicy::Never);
    assert!(b.allow_network_fs);
    assert_eq!(b.sync_interval, Duration::from_secs(1));
    assert_eq!(
        b.snapshot_interval,
        Duration::from_secs(3600),
        "snapshot settings are store-wide"
    );
    let Replica::S3(s3) = &b.replica else {
        panic!("{:?}", b.replica)
    };
    let force_path_style = &s3.effective_force_path_style();
    let S3Options {
        bucket,
        path,
        access_key_id,
        part_size,
        ..
    } = s3;
    assert_eq!((bucket.as_str(), path.as_str()), ("b2", "/keep/as/written"));
    assert_eq!(
        access_key_id.as_ref().map(Secret::expose),
        Some("OWN"),
        "own key wins"
    );
    assert_eq!(*part_size, Some(5 * 1024 * 1024));
    assert!(!force_path_style);
    assert_eq!(
        c.replica,
        Replica::File {
            path: "/backups/c".into()
        }
    );
}

#[test]
fn unknown_and_ignored_keys_warn_with_line_and_key() {
    let (_, warnings) = ok("mcp-addr: :9091
dbs:
  - path: /data/a.db
    replica:
      url: file:///backups/a
      retention: 24h
    chekpoint-interval: 1m
logging:
  level: debug
");
    assert_eq!(warnings.len(), 3, "{warnings:?}");
    assert!(
        warnings
            .iter()
            .any(|w| w == "/etc/ls.yml:1:1: mcp-addr: ignored: litevisor has no MCP server"),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w == "/etc/ls.yml:7:5: dbs[0].chekpoint-interval: unknown key, ignored"),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("/etc/ls.yml:6:7: dbs[0].replica.retention: ignored")),
        "{warnings:?}"
    );
}

#[test]
fn addr_and_logging_are_read() {
    let (config, warnings) = ok("addr: \":9090\"
logging:
  level: DEBUG
  type: json
  stderr: false
dbs:
  - path: /data/a.db
    replica:
      url: file:///backups/a
");
    assert!(warnings.is_empty(), "{warnings:?}");
    let observe = &config.observe;
    assert_eq!(observe.metrics_addr.as_deref(), Some(":9090"));
    assert_eq!(observe.log.format, Some(crate::config::LogFormat::Json));
    assert_eq!(observe.log.stderr, Some(false));
    assert_eq!(
        observe.log.level,
        Some(crate::config::LogFilter::level(
            tracing::level_filters::LevelFilter::DEBUG
        ))
    );
    let err = errors(
        "logging:\n  level: verbose\n  type: logfmt\naddr: \"9090\"\ndbs:\n  - path: /a.db\n    replica:\n      url: file:///b\n",
    );
    assert!(
        err.contains("/etc/ls.yml:2:3: logging.level: invalid log level \"verbose\""),
        "{err}"
    );
    assert!(err.contains("logging.type: invalid log format"), "{err}");
    assert!(err.contains("addr: invalid address"), "{err}");
}

#[test]
fn rejected_keys_name_file_line_and_key() {
    let err = errors(
        "dbs:
  - dir: /data
    replica:
      url: gs://bucket/x
  - path: /data/b.db
    replicas:
      - url: file:///r1
      - url: file:///r2
  - path: /data/c.db
    replica:
      type: sftp
      host: example
  - path: /data/d.db
    replica:
      url: file:///r
      age:
        recipients: [x]
",
    );
    for expected in [
        "dbs[0].pattern: 'pattern' is required when using 'dir'",
        "/etc/ls.yml:4:7: dbs[0].replica.url: replica type \"gs\" is not supported",
        "/etc/ls.yml:6:5: dbs[1].replicas: several replicas per database are not supported",
        "/etc/ls.yml:11:7: dbs[2].replica.type: replica type \"sftp\" is not supported",
        "/etc/ls.yml:16:7: dbs[3].replica.age: age encryption",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
}

#[test]
fn directory_entries_follow_litestreams_rules() {
    let (config, _) = ok("dbs:
  - dir: /data/tenants
    pattern: '*.db'
    recursive: true
    watch: true
    monitor-interval: 5s
    replica:
      url: s3://bucket/tenants
  - path: /data/app.db
    replica:
      url: file:///backups/app
");
    assert_eq!(config.databases.len(), 1);
    let [d] = &config.directories[..] else {
        panic!("{:?}", config.directories)
    };
    assert_eq!(d.dir, Path::new("/data/tenants"));
    assert_eq!(
        (d.pattern.as_str(), d.recursive, d.watch),
        ("*.db", true, true)
    );
    let db = d.database(Path::new("/data/tenants/eu/acme.db")).unwrap();
    assert_eq!(db.replica.to_string(), "s3://bucket/tenants/eu/acme.db");
    assert_eq!(db.sync_interval, Duration::from_secs(5));
    let err = errors(
        "dbs:
  - path: /a.db
    dir: /data
    pattern: '*.db'
    replica: {url: file:///r}
  - path: /b.db
    watch: true
    replica: {url: file:///r}
  - dir: /data
    pattern: '[a-'
    replica: {url: file:///r}
",
    );
    for expected in [
        "dbs[0].path: cannot specify both `path` and `dir`",
        "dbs[1].watch: `watch` can only be used with a directory",
        "dbs[2].pattern: invalid pattern",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
}

#[test]
fn syntax_and_type_errors() {
    assert!(errors("dbs: [").contains("/etc/ls.yml:"));
    let err =
        errors("dbs:\n  - path: /a\n    monitor-interval: often\n    replica: {url: file:///r}\n");
    assert!(
        err.contains("/etc/ls.yml:3:5: dbs[0].monitor-interval: invalid duration"),
        "{err}"
    );
    let err = errors("dbs:\n  - path: /a\n    path: /b\n    replica: {url: file:///r}\n");
    assert!(
        err.contains("/etc/ls.yml:3:5: dbs[0].path: set twice (first at line 2)"),
        "{err}"
    );
    assert!(errors("snapshot: {interval: 0s}\n").contains("must be more than 0"));
    let err = errors("dbs:\n  - path: /a\n    replica: {url: file:///r}\nexec: \"app 'x\"\n");
    assert!(
        err.contains("/etc/ls.yml:4:1: exec:") && err.contains("unbalanced"),
        "{err}"
    );
}

#[test]
fn exec_becomes_the_main_service_and_extends_the_deadline() {
    let (config, _) =
        ok("exec: sh -c 'exit 3'\ndbs:\n  - path: /a.db\n    replica: {url: file:///r}\n");
    let [svc] = config.services.as_slice() else {
        panic!()
    };
    assert!(svc.main);
    assert_eq!(svc.command, ["sh", "-c", "exit 3"].map(OsString::from));
    assert_eq!(svc.databases, [PathBuf::from("/a.db")]);
    assert_eq!(
        config.shutdown_timeout,
        DEFAULT_SHUTDOWN_SYNC_TIMEOUT + EXEC_STOP_GRACE
    );
    let overrides = Overrides {
        exec: Some("true".into()),
        restore_if_db_not_exists: true,
        allow_network_fs: true,
        ..Overrides::default()
    };
    let (config, problems) = load_text(
        "exec: no-such-program-lv\ndbs:\n  - path: /a.db\n    replica: {url: file:///r}\n",
        &overrides,
    );
    assert!(problems.is_empty());
    let config = config.expect("config");
    assert_eq!(config.services[0].command, [OsString::from("true")]);
    assert_eq!(config.databases[0].restore, RestorePolicy::IfMissing);
    assert!(config.databases[0].allow_network_fs);
    assert!(
        errors("exec: no-such-program-lv\ndbs:\n  - path: /a.db\n    replica: {url: file:///r}\n")
            .contains("no-such-program-lv")
    );
}

#[test]
fn anchors_and_merge_keys() {
    let (config, warnings) = ok("
x-common: &common
  monitor-interval: 3s
dbs:
  - <<: *common
    path: /a.db
    replica: {url: file:///r}
");
    assert_eq!(config.databases[0].sync_interval, Duration::from_secs(3));
    assert_eq!(warnings.len(), 1, "x-common is unknown: {warnings:?}");
}

#[test]
fn no_databases_is_a_valid_idle_configuration() {
    let (config, warnings) = ok("mcp-addr: ':9091'\n");
    assert!(config.databases.is_empty() && config.services.is_empty());
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let (config, _) = ok("");
    assert!(config.databases.is_empty());
}

#[test]
fn a_databases_own_snapshot_setting_is_store_wide_as_in_litestream() {
    let (config, warnings) = ok("
dbs:
  - path: /a.db
    replica: {url: file:///r}
  - path: /b.db
    snapshot: {interval: 2h, retention: 48h}
    replica: {url: file:///r2}
");
    assert!(warnings.is_empty(), "{warnings:?}");
    for db in &config.databases {
        assert_eq!(db.snapshot_interval, Duration::from_secs(7200));
        assert_eq!(db.snapshot_retention, Duration::from_secs(48 * 3600));
    }
    let err = errors(
        "
dbs:
  - path: /a.db
    snapshot: {retention: 1h}
    replica: {url: file:///r}
  - path: /b.db
    snapshot: {retention: 2h}
    replica: {url: file:///r2}
",
    );
    assert!(
        err.contains("/etc/ls.yml:7:16: dbs[1].snapshot.retention: 7200s conflicts with dbs[0].snapshot.retention (3600s, line 4)"),
        "{err}"
    );
}

#[test]
fn pid_is_the_process_id() {
    let (config, _) = ok("dbs:\n  - path: /a-$PID.db\n    replica: {url: file:///r}\n");
    assert_eq!(
        config.databases[0].path,
        PathBuf::from(format!("/a-{}.db", std::process::id()))
    );
}
