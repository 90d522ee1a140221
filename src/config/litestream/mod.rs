//! Litestream's configuration file (`litestream.yml`) read into litevisor's own [`Config`] model, so
//! `litevisor replicate` and `litevisor restore` are drop-ins for Litestream's: the same file, the
//! same lookup (`-config PATH`, else `$LITESTREAM_CONFIG`, else `/etc/litestream.yml`), the same
//! `$VAR`/`${VAR}` expansion over the whole text before parsing (off with `-no-expand-env`).
//!
//! Unlike Litestream, nothing is silently ignored. Every key is one of:
//! - supported: mapped onto [`Database`], [`Replica`] and the `exec` main [`Service`];
//! - accepted but ignored (a feature litevisor does not have, such as `mcp-addr` or heartbeats): a
//!   warning naming the file, line and key path;
//! - rejected (litevisor cannot do what it asks: gs/abs/sftp/... replicas, `age:` encryption,
//!   several replicas, SSE): an error naming the file, line and key path;
//! - unknown: a warning (Litestream's own parser ignores unknown keys, so a typo must not stop a
//!   container that Litestream would have started, but it must be seen).
//!
//! The YAML is read with an event parser (`saphyr-parser`) into a small tree that keeps each node's
//! line and column, which is what makes `file:line:col: key: message` possible. Scalars stay text
//! until a key gives them a type, the way Go's typed decoding reads them.
//!
//! The reading is split by concern: [`expand`] (`$VAR` and `~` expansion), [`yaml`] (the YAML tree
//! with positions), [`map`] (typed keys with `file:line:col` locations), [`mapping`] (the document
//! onto the model), [`directory`] (a `dir:` entry's keys), [`replica`] (one replica's keys) and
//! [`exec`] (the `exec` main service).

mod directory;
mod exec;
mod expand;
mod map;
mod mapping;
mod replica;
#[cfg(test)]
mod tests;
mod yaml;

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::diag::{ConfigError, Loc, Problems};
use super::{Config, Database, DatabaseDir, Service};

use exec::exec_service;
use mapping::parse;

/// The file read when neither `-config` nor `$LITESTREAM_CONFIG` names one.
pub const DEFAULT_CONFIG: &str = "/etc/litestream.yml";
/// The environment variable that names the file.
pub const CONFIG_ENV: &str = "LITESTREAM_CONFIG";
/// Litestream's default `shutdown-sync-timeout`.
pub const DEFAULT_SHUTDOWN_SYNC_TIMEOUT: Duration = Duration::from_secs(30);
/// Time the `exec` program gets between SIGTERM and SIGKILL at shutdown.
pub const EXEC_STOP_GRACE: Duration = Duration::from_secs(10);
/// The name of the `exec` program's service (in logs and messages).
pub const EXEC_SERVICE: &str = "exec";

/// What the command line adds to the file.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `-exec`: replaces the file's `exec`.
    pub exec: Option<String>,
    /// `-restore-if-db-not-exists`: for every database.
    pub restore_if_db_not_exists: bool,
    /// `-allow-network-fs`: for every database.
    pub allow_network_fs: bool,
    /// `-shutdown-sync-timeout`: replaces the file's `shutdown-sync-timeout`.
    pub shutdown_sync_timeout: Option<Duration>,
    /// Leave `exec` out (`restore` and `databases` read the file only for its databases).
    pub ignore_exec: bool,
}

/// The path `replicate`/`restore` read: the flag, else `$LITESTREAM_CONFIG`, else [`DEFAULT_CONFIG`].
pub fn config_path(flag: Option<&Path>) -> PathBuf {
    flag.map(Path::to_path_buf)
        .or_else(|| {
            std::env::var_os(CONFIG_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG))
}

/// Reads and validates a `litestream.yml`. Warnings (ignored and unknown keys) are in
/// [`Config::warnings`]; any error fails the whole load with every problem found.
pub fn load(path: &Path, expand_env: bool, overrides: &Overrides) -> Result<Config, ConfigError> {
    let mut problems = Problems::default();
    let config = match std::fs::read_to_string(path) {
        Ok(text) => parse(path, &text, expand_env, overrides, &mut problems),
        Err(err) => {
            problems.push(
                Loc::file(path),
                format!("cannot read the configuration file: {err}"),
            );
            None
        }
    };
    match config {
        Some(mut config) if problems.is_empty() => {
            config.warnings = problems.take_warnings();
            Ok(config)
        }
        _ => Err(problems.into_error()),
    }
}

/// The configuration of `replicate [-exec CMD] DB_PATH REPLICA_URL`: one database, no file.
pub fn command_line(
    database: Database,
    exec: Option<&str>,
    shutdown_sync_timeout: Duration,
) -> Result<Config, ConfigError> {
    let mut problems = Problems::default();
    let origin = Loc {
        file: PathBuf::from("-exec"),
        line: None,
        key: None,
    };
    let databases = vec![database];
    let service = exec.and_then(|cmd| exec_service(cmd, origin, &databases, &mut problems));
    if !problems.is_empty() {
        return Err(problems.into_error());
    }
    Ok(replicate_config(
        None,
        (databases, Vec::new()),
        service,
        shutdown_sync_timeout,
    ))
}

/// The model of a replicate run: the databases, at most the one `exec` main service, and one
/// shutdown deadline = the final sync's retry window (at least 1 s, so a 0 window still gets its one
/// attempt) plus, with `exec`, the program's stop grace (it stops first, then the final sync runs).
pub(super) fn replicate_config(
    file: Option<PathBuf>,
    (databases, directories): (Vec<Database>, Vec<DatabaseDir>),
    exec: Option<Service>,
    shutdown_sync_timeout: Duration,
) -> Config {
    let mut shutdown_timeout = shutdown_sync_timeout.max(Duration::from_secs(1));
    if let Some(service) = &exec {
        shutdown_timeout += service.stop_grace;
    }
    Config {
        file,
        services_dir: None,
        log_prefix: false,
        shutdown_timeout,
        grace: EXEC_STOP_GRACE,
        services: exec.into_iter().collect(),
        databases,
        directories,
        observe: Default::default(),
        warnings: Vec::new(),
    }
}
