//! The document mapped onto the validated model: the top-level keys (store-wide defaults, `levels`,
//! `snapshot`, `retention`, `exec`), each database of `dbs:`, and the run's [`Config`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::super::diag::{Loc, Problems};
use super::super::{Config, Database, DatabaseDir, Observability, RestorePolicy};
use super::directory::read_directory_keys;
use super::expand::{expand_env, expand_path};
use super::map::{Map, loc_at};
use super::replica::{ReplicaKeys, read_replica};
use super::yaml::{Node, Value, parse_yaml};
use super::{DEFAULT_SHUTDOWN_SYNC_TIMEOUT, Overrides, exec_service, replicate_config};

/// Top-level keys accepted and ignored, with the reason shown.
const IGNORED_TOP: &[(&str, &str)] = &[
    (
        "socket",
        "litevisor always listens on a control socket of its own (see `litevisor status --help`)",
    ),
    ("mcp-addr", "litevisor has no MCP server"),
    ("heartbeat-url", "litevisor sends no heartbeats"),
    ("heartbeat-interval", "litevisor sends no heartbeats"),
    ("validation", "litevisor does not run periodic validation"),
    (
        "verify-compaction",
        "litevisor does not re-verify compactions",
    ),
    (
        "shutdown-sync-interval",
        "the final sync retries with its own back-off",
    ),
    (
        "l0-retention-check-interval",
        "L0 retention runs with each compaction",
    ),
];

/// Store-wide settings every database gets.
pub(super) struct Globals {
    pub(super) replica: ReplicaKeys,
    pub(super) levels: Option<Vec<Duration>>,
    pub(super) l0_retention: Option<Duration>,
    pub(super) retention_enabled: Option<bool>,
}

/// A `snapshot:` mapping as written (top level or one database's), each value with its place.
#[derive(Default)]
struct SnapshotKeys {
    interval: Option<(Loc, Duration)>,
    retention: Option<(Loc, Duration)>,
}

/// Top-level keys litevisor ignores but Litestream checks: a file Litestream refuses is refused.
fn check_ignored(top: &mut Map<'_>, problems: &mut Problems) {
    let ignored = |loc: Loc, problems: &mut Problems| {
        let key = loc.key.clone().unwrap_or_default();
        let why = IGNORED_TOP
            .iter()
            .find(|(k, _)| *k == key)
            .map_or("", |(_, why)| *why);
        problems.warn(loc, format!("ignored: {why}"));
    };
    for key in ["l0-retention-check-interval", "shutdown-sync-interval"] {
        if let Some((loc, _)) = top.positive_duration(key, problems) {
            ignored(loc, problems);
        }
    }
    if let Some((loc, d)) = top.duration_at("heartbeat-interval", problems) {
        if d < Duration::from_secs(60) {
            problems.push(loc, "must be at least 1m (Litestream refuses less)");
        } else {
            ignored(loc, problems);
        }
    }
    if let Some((loc, url)) = top.text("heartbeat-url", problems) {
        let host = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"))
            .map(|rest| rest.split(['/', '?', '#']).next().unwrap_or(""));
        if host.is_none_or(str::is_empty) {
            problems.push(
                loc,
                format!("{url:?} is not an http:// or https:// URL (Litestream refuses it)"),
            );
        } else {
            ignored(loc, problems);
        }
    }
}

/// Litestream's snapshot settings are store-wide: one interval and one retention for every
/// database. A database's own value stands for all of them when the top level sets none, so two
/// databases may not disagree; with a top-level value, the databases' own are ignored.
fn store_snapshot(
    top: SnapshotKeys,
    own: &[SnapshotKeys],
    problems: &mut Problems,
) -> (Option<Duration>, Option<Duration>) {
    let pick = |top: Option<(Loc, Duration)>,
                own: Vec<&(Loc, Duration)>,
                problems: &mut Problems| {
        let mut first: Option<&(Loc, Duration)> = None;
        for setting in own {
            match first {
                Some((loc, d)) if *d != setting.1 => {
                    let line = loc.line.map_or(0, |l| l.0);
                    let key = loc.key.as_deref().unwrap_or("");
                    problems.push(
                        setting.0.clone(),
                        format!(
                            "{:?} conflicts with {key} ({d:?}, line {line}): snapshot settings apply to every database (as in Litestream), so databases must agree; set it once at the top level",
                            setting.1
                        ),
                    );
                }
                Some(_) => {}
                None => first = Some(setting),
            }
            if let Some((_, d)) = &top
                && *d != setting.1
            {
                let key = setting.0.key.as_deref().unwrap_or("");
                let name = key.rsplit('.').next().unwrap_or(key);
                problems.warn(
                    setting.0.clone(),
                    format!("ignored: the top-level snapshot.{name} ({d:?}) applies to every database, as in Litestream"),
                );
            }
        }
        top.map(|(_, d)| d).or(first.map(|(_, d)| *d))
    };
    let interval = pick(
        top.interval,
        own.iter().filter_map(|s| s.interval.as_ref()).collect(),
        problems,
    );
    let retention = pick(
        top.retention,
        own.iter().filter_map(|s| s.retention.as_ref()).collect(),
        problems,
    );
    (interval, retention)
}

pub(super) fn parse(
    path: &Path,
    text: &str,
    expand: bool,
    overrides: &Overrides,
    problems: &mut Problems,
) -> Option<Config> {
    let expanded;
    let text = if expand {
        // As in Litestream, `$PID` is the replicator's own process id.
        expanded = expand_env(text, |name| match name {
            "PID" => Some(std::process::id().to_string()),
            _ => std::env::var(name).ok(),
        });
        expanded.as_str()
    } else {
        text
    };
    let root = match parse_yaml(text) {
        Ok(Some(root)) => root,
        Ok(None) => Node {
            line: 0,
            col: 0,
            value: Value::Null,
        },
        Err(((line, col), msg)) => {
            problems.push(loc_at(path, line, col, ""), msg);
            return None;
        }
    };
    let mut top = Map::new(path, "", root, problems)?;
    let replica_defaults = ReplicaKeys::read(&mut top, problems);
    let mut globals = Globals {
        replica: replica_defaults,
        levels: None,
        l0_retention: top.duration("l0-retention", problems),
        retention_enabled: None,
    };
    if let Some((loc, node)) = top.take("levels") {
        globals.levels = read_levels(path, loc, node, problems);
    }
    let top_snapshot = top
        .take("snapshot")
        .map(|(loc, node)| read_snapshot(path, &loc, node, problems))
        .unwrap_or_default();
    if let Some((loc, node)) = top.take("retention")
        && let Some(mut m) = Map::new(path, loc.key.as_deref().unwrap_or(""), node, problems)
    {
        globals.retention_enabled = m.bool("enabled", problems);
        m.finish(&[], problems);
    }
    let from_file = top.duration("shutdown-sync-timeout", problems);
    let shutdown_sync_timeout = overrides
        .shutdown_sync_timeout
        .or(from_file)
        .unwrap_or(DEFAULT_SHUTDOWN_SYNC_TIMEOUT);
    let exec = top.text("exec", problems);
    check_ignored(&mut top, problems);

    let mut databases: Vec<Database> = Vec::new();
    let mut directories: Vec<DatabaseDir> = Vec::new();
    let mut snapshots: Vec<SnapshotKeys> = Vec::new();
    // No `dbs:` is valid: Litestream starts with no databases and idles; so does litevisor.
    if let Some((loc, node)) = top.take("dbs") {
        match node.value {
            Value::Seq(items) => {
                for (i, item) in items.into_iter().enumerate() {
                    let prefix = format!("dbs[{i}]");
                    let mut directory = None;
                    let read = read_db(
                        path,
                        &prefix,
                        item,
                        &globals,
                        overrides,
                        &mut directory,
                        problems,
                    );
                    if let Some((db, snapshot)) = read {
                        snapshots.push(snapshot);
                        if let Some(entry) = directory {
                            match directories.iter().find(|d| d.dir == db.path) {
                                Some(_) => problems.push(
                                    loc_at(path, 0, 0, &format!("{prefix}.dir")),
                                    format!("directory {} is listed twice", db.path.display()),
                                ),
                                None => directories.push(DatabaseDir {
                                    dir: db.path.clone(),
                                    template: db,
                                    ..entry
                                }),
                            }
                            continue;
                        }
                        match databases.iter().find(|d| d.path == db.path) {
                            Some(_) => problems.push(
                                loc_at(path, 0, 0, &format!("{prefix}.path")),
                                format!("database {} is listed twice", db.path.display()),
                            ),
                            None => databases.push(db),
                        }
                    }
                }
            }
            other => problems.push(loc, format!("expected a list, found {}", other.kind())),
        }
    }
    let observe = read_observability(path, &mut top, problems);
    top.finish(IGNORED_TOP, problems);
    let (interval, retention) = store_snapshot(top_snapshot, &snapshots, problems);
    let templates = directories.iter_mut().map(|d| &mut d.template);
    for db in databases.iter_mut().chain(templates) {
        if let Some(d) = interval {
            db.snapshot_interval = d;
        }
        if let Some(d) = retention {
            db.snapshot_retention = d;
        }
    }

    let service = match (&overrides.exec, exec) {
        _ if overrides.ignore_exec => None,
        (Some(cmd), _) => {
            let origin = Loc {
                file: PathBuf::from("-exec"),
                line: None,
                key: None,
            };
            exec_service(cmd, origin, &databases, problems)
        }
        (None, Some((loc, cmd))) => exec_service(&cmd, loc, &databases, problems),
        (None, None) => None,
    };
    if !problems.is_empty() {
        return None;
    }
    let mut config = replicate_config(
        Some(path.to_path_buf()),
        (databases, directories),
        service,
        shutdown_sync_timeout,
    );
    config.observe = observe;
    Some(config)
}

/// Litestream's `addr:` (the metrics listener; litevisor adds `/healthz` on it) and `logging:`
/// (`level`, `type: text|json`, `stderr`).
fn read_observability(path: &Path, top: &mut Map<'_>, problems: &mut Problems) -> Observability {
    use super::super::observe::{LogFilter, LogFormat, parse_listen_addr};
    let mut observe = Observability::default();
    if let Some((loc, addr)) = top.text("addr", problems)
        && !addr.trim().is_empty()
    {
        match parse_listen_addr(&addr) {
            Ok(addr) => observe.metrics_addr = Some(addr),
            Err(msg) => problems.push(loc, msg),
        }
    }
    if let Some((loc, node)) = top.take("logging")
        && let Some(mut m) = Map::new(
            path,
            loc.key.as_deref().unwrap_or("logging"),
            node,
            problems,
        )
    {
        if let Some((loc, level)) = m.text("level", problems) {
            match LogFilter::parse(&level) {
                Ok(filter) => observe.log.level = Some(filter),
                Err(msg) => problems.push(loc, msg),
            }
        }
        if let Some((loc, format)) = m.text("type", problems) {
            match LogFormat::parse(&format) {
                Ok(format) => observe.log.format = Some(format),
                Err(msg) => problems.push(loc, msg),
            }
        }
        observe.log.stderr = m.bool("stderr", problems);
        m.finish(&[], problems);
    }
    observe
}

fn read_levels(
    path: &Path,
    loc: Loc,
    node: Node,
    problems: &mut Problems,
) -> Option<Vec<Duration>> {
    let items = match node.value {
        Value::Seq(items) => items,
        other => {
            problems.push(loc, format!("expected a list, found {}", other.kind()));
            return None;
        }
    };
    let mut levels = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let prefix = format!("{}[{i}]", loc.key.as_deref().unwrap_or("levels"));
        let mut m = Map::new(path, &prefix, item, problems)?;
        match m.duration("interval", problems) {
            Some(d) if d.is_zero() => problems.push(
                loc_at(path, 0, 0, &m.path_of("interval")),
                "must be more than 0",
            ),
            Some(d) => levels.push(d),
            None => problems.push(
                loc_at(path, 0, 0, &m.path_of("interval")),
                "missing required key",
            ),
        }
        m.finish(
            &[(
                "retention",
                "a per-level retention does not exist in Litestream 0.5 either",
            )],
            problems,
        );
    }
    if levels.is_empty() {
        problems.push(loc, "needs at least one level");
        return None;
    }
    if levels.len() > 8 {
        problems.push(loc, "at most 8 levels (L9 holds the snapshots)");
        return None;
    }
    Some(levels)
}

fn read_snapshot(path: &Path, loc: &Loc, node: Node, problems: &mut Problems) -> SnapshotKeys {
    let Some(mut m) = Map::new(
        path,
        loc.key.as_deref().unwrap_or("snapshot"),
        node,
        problems,
    ) else {
        return SnapshotKeys::default();
    };
    let interval = m.positive_duration("interval", problems);
    let retention = m.positive_duration("retention", problems);
    m.finish(&[], problems);
    SnapshotKeys {
        interval,
        retention,
    }
}

/// One `dbs` entry. A directory entry (`dir:`) comes back as its template database (path = the
/// directory) with `directory` set to the entry's other settings.
fn read_db(
    path: &Path,
    prefix: &str,
    node: Node,
    globals: &Globals,
    overrides: &Overrides,
    directory: &mut Option<DatabaseDir>,
    problems: &mut Problems,
) -> Option<(Database, SnapshotKeys)> {
    let (line, col) = (node.line, node.col);
    let mut m = Map::new(path, prefix, node, problems)?;
    let dir = read_directory_keys(path, &mut m, problems);
    let mut db_path = m.text("path", problems);
    match (&dir, db_path.take()) {
        (Some(_), Some((loc, _))) => {
            problems.push(loc, "cannot specify both `path` and `dir`");
            return None;
        }
        (Some((dir_loc, d)), None) => {
            db_path = Some((dir_loc.clone(), d.dir.display().to_string()))
        }
        (None, p) => db_path = p,
    }
    let meta_path = m.string("meta-path", problems);
    let monitor_interval = m.duration("monitor-interval", problems);
    let checkpoint_interval = m.duration("checkpoint-interval", problems);
    let busy_timeout = m.duration("busy-timeout", problems);
    let min_checkpoint_page_count = m.integer("min-checkpoint-page-count", problems);
    let truncate_page_n = m.integer("truncate-page-n", problems);
    let max_sync_wal_bytes = m.integer("max-sync-wal-bytes", problems);
    let restore_if_missing = m.bool("restore-if-db-not-exists", problems);
    let allow_network_fs = m.bool("allow-network-fs", problems);
    let snapshot = m
        .take("snapshot")
        .map(|(loc, node)| read_snapshot(path, &loc, node, problems));

    let replica_node = match (m.take("replica"), m.take("replicas")) {
        (Some(single), None) => Some(single),
        (None, Some((loc, node))) => match node.value {
            Value::Seq(mut items) if items.len() == 1 => {
                let item = items.remove(0);
                let key = format!("{}[0]", loc.key.as_deref().unwrap_or("replicas"));
                Some((
                    Loc {
                        key: Some(key),
                        ..loc
                    },
                    item,
                ))
            }
            Value::Seq(items) if items.is_empty() => {
                problems.push(loc, "needs one replica");
                None
            }
            Value::Seq(_) => {
                problems.push(
                    loc,
                    "several replicas per database are not supported (Litestream 0.5 refuses them too): keep one",
                );
                None
            }
            other => {
                problems.push(loc, format!("expected a list, found {}", other.kind()));
                None
            }
        },
        (Some(_), Some((loc, _))) => {
            problems.push(loc, "give either `replica` or `replicas`, not both");
            None
        }
        (None, None) => {
            problems.push(
                loc_at(path, line, col, &m.path_of("replica")),
                "missing required key",
            );
            None
        }
    };
    let replica =
        replica_node.and_then(|(loc, node)| read_replica(path, &loc, node, globals, problems));
    m.finish(&[], problems);

    let Some((path_loc, db_path)) = db_path else {
        problems.push(
            loc_at(path, line, col, &format!("{prefix}.path")),
            "missing required key",
        );
        return None;
    };
    if db_path.is_empty() {
        problems.push(path_loc, "must not be empty");
        return None;
    }
    let (replica, replica_sync_interval) = replica?;
    let mut db = Database::new(expand_path(&db_path), replica);
    db.restore = if overrides.restore_if_db_not_exists || restore_if_missing == Some(true) {
        RestorePolicy::IfMissing
    } else {
        RestorePolicy::Never
    };
    // litevisor uploads each L0 file as soon as it is written, so a sync is also an upload: the
    // slower of Litestream's two cadences (monitor-interval: WAL -> L0, sync-interval: L0 -> replica)
    // bounds both, which keeps the replica's request rate what it was under Litestream.
    db.sync_interval = monitor_interval
        .unwrap_or(db.sync_interval)
        .max(replica_sync_interval.unwrap_or(Duration::ZERO));
    if let Some(d) = checkpoint_interval {
        db.checkpoint_interval = d;
    }
    if let Some(d) = busy_timeout {
        db.busy_timeout = d;
    }
    if let Some((loc, n)) = min_checkpoint_page_count {
        match u32::try_from(n) {
            Ok(n) if n > 0 => db.min_checkpoint_page_count = n,
            _ => problems.push(loc, format!("must be an integer from 1 to {}", u32::MAX)),
        }
    }
    // 0 keeps the default, as in Litestream since 0.5.16.
    if let Some((loc, n)) = truncate_page_n.filter(|(_, n)| *n > 0) {
        match u32::try_from(n) {
            Ok(n) => db.truncate_page_n = n,
            Err(_) => problems.push(loc, format!("must be at most {}", u32::MAX)),
        }
    }
    if let Some((_, n)) = max_sync_wal_bytes {
        db.max_sync_wal_bytes = n;
    }
    db.meta_path = meta_path.map(|p| expand_path(&p));
    if let Some((_, entry)) = dir {
        if db.meta_path.is_some() && entry.meta_dir.is_some() {
            problems.push(
                loc_at(path, line, col, &format!("{prefix}.meta-dir")),
                "cannot specify both `meta-path` and `meta-dir`",
            );
        }
        *directory = Some(entry);
    }
    db.allow_network_fs = overrides.allow_network_fs || allow_network_fs == Some(true);
    if let Some(levels) = &globals.levels {
        db.levels = levels.clone();
    }
    if let Some(d) = globals.l0_retention {
        db.l0_retention = d;
    }
    if let Some(enabled) = globals.retention_enabled {
        db.retention_enabled = enabled;
    }
    Some((db, snapshot.unwrap_or_default()))
}
