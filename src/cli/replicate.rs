//! `litevisor replicate`: Litestream's `replicate` command in all its forms, as a drop-in.
//!
//! - `litevisor replicate [-config PATH]`: the databases of a `litestream.yml` (`-config`, else
//!   `$LITESTREAM_CONFIG`, else `/etc/litestream.yml`; see [`crate::config::litestream`]).
//! - `litevisor replicate DB_PATH REPLICA_URL`: one database, no file.
//! - Either form with `-exec "myapp -myflag myarg"` (or `exec:` in the file; the flag wins): the
//!   program is the main service of litevisor's supervisor. It starts once the databases are
//!   restored (`-restore-if-db-not-exists`, else never restored, as in Litestream), gets the stop
//!   signals forwarded to its process group, and its exit ends the run; then the final sync runs.
//! - `-once`: one sync and upload of every configured database, then exit. Not with `-exec`. With
//!   `-force-snapshot` an L9 snapshot follows; with `-enforce-retention`, snapshot retention and the
//!   L1+ files below its floor (Litestream's order and rules; L0 is left alone).
//!
//! Without `-once` the run *is* the supervisor ([`crate::supervisor::run`], called before any
//! other thread exists because it takes the signals over): every database is a restore oneshot plus
//! a replicator longrun whose stop is the final sync. So this also works as a container's
//! entrypoint, as PID 1, or as a sidecar container of its own.
//!
//! Shutdown deadline: the final sync may retry for `shutdown-sync-timeout` (default 30 s; at least
//! 1 s); with `-exec` the program first gets up to 10 s between SIGTERM and SIGKILL, so the whole
//! shutdown is bounded by `shutdown-sync-timeout + 10 s`. Keep that below `docker stop -t`.
//!
//! Exit codes:
//! - with `-exec`: the program's code (`128 + N` if signal N killed it, e.g. 143 after SIGTERM);
//!   74 when that code would be 0 but a final sync did not reach the replica. (Litestream collapses
//!   the program's code to 0/1 and skips the final sync when the program fails.)
//! - without: 0 after SIGTERM/SIGINT when every final sync reached the replica, 74 otherwise.
//! - `-once`: 0 when every database was synced and uploaded, 1 otherwise.
//! - 1 when a database or replica could not be opened or a restore failed; 2 for usage errors and
//!   invalid configuration (every problem is printed as `file:line:col: key: message`).

use std::path::PathBuf;
use std::time::Duration;

use tracing::{error, info, warn};

use crate::config::PageEncoding;
use crate::config::litestream::{self, Overrides};
use crate::config::parse_duration;
use crate::config::{Config, ConfigError, Database, Replica, RestorePolicy};
use crate::init::ExitCodeMap;
use crate::replication::once::{OnceOptions, replicate_once};
use std::str::FromStr;

/// Exit code of a usage error or an invalid configuration.
const USAGE: i32 = 2;

#[derive(clap::Args, Debug)]
pub struct ReplicateArgs {
    /// Database to replicate (with REPLICA_URL); without both, the databases of the config file.
    pub db_path: Option<PathBuf>,
    /// Replica URL: `file:///path`, a plain path, or `s3://bucket/path?...`.
    pub replica_url: Option<String>,
    /// More replica URLs: refused (one replica per database, as in Litestream 0.5).
    #[arg(hide = true)]
    pub more_urls: Vec<String>,
    /// Litestream configuration file (default: $LITESTREAM_CONFIG, else /etc/litestream.yml).
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Do not expand $VAR / ${VAR} in the configuration file.
    #[arg(long = "no-expand-env")]
    pub no_expand_env: bool,
    /// Run this command (split like a shell would, not run by one) as the supervised application;
    /// its exit ends replication after a final sync, with its exit code.
    #[arg(long, value_name = "CMD")]
    pub exec: Option<String>,
    /// Replicate even from a network or FUSE filesystem (NFS, SMB, 9p, ...), which is refused by
    /// default.
    #[arg(long = "allow-network-fs")]
    pub allow_network_fs: bool,
    /// Sync the WAL and upload once, then exit.
    #[arg(long)]
    pub once: bool,
    /// With -once: also write a snapshot (L9) of the database, as Litestream does.
    #[arg(long = "force-snapshot", requires = "once")]
    pub force_snapshot: bool,
    /// With -once: delete snapshots older than the snapshot retention and the L1+ files they
    /// make unnecessary, as Litestream does.
    #[arg(long = "enforce-retention", requires = "once")]
    pub enforce_retention: bool,
    /// Restore a database from its replica first when it does not exist and the replica has data.
    #[arg(long = "restore-if-db-not-exists")]
    pub restore_if_db_not_exists: bool,
    /// trace, debug, info, warn, error (LOG_LEVEL overrides, as in Litestream) [default: the
    /// file's `logging.level`, else info].
    #[arg(long = "log-level")]
    pub log_level: Option<String>,
    /// Log line format: text or json [env: LITEVISOR_LOG_FORMAT] [default: the file's
    /// `logging.type`, else text].
    #[arg(long = "log-format", value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// Serve /metrics and /healthz on HOST:PORT [env: LITEVISOR_METRICS_ADDR] [default: the file's
    /// `addr`, else off].
    #[arg(long = "metrics-addr", value_name = "HOST:PORT")]
    pub metrics_addr: Option<String>,
    /// Minimum time between two syncs (Litestream's monitor-interval); 0 syncs as soon as the WAL
    /// changes [default: 1s, or the config file's].
    #[arg(long = "monitor-interval", value_parser = parse_duration)]
    pub monitor_interval: Option<Duration>,
    /// How long the final sync may retry uploads at shutdown [default: 30s, or the config file's].
    #[arg(long = "shutdown-sync-timeout", value_parser = parse_duration)]
    pub shutdown_sync_timeout: Option<Duration>,
    /// Page encoding of written LTX files: `frame` (every Litestream 0.5.x reads it) or `block`
    /// (Litestream >= 0.5.16 only) [default: frame].
    #[arg(long = "page-encoding", value_parser = PageEncoding::from_str)]
    pub page_encoding: Option<PageEncoding>,
    /// How long litevisor's SQLite connections wait for locks [default: 1s, or the config file's].
    #[arg(long = "busy-timeout", value_parser = parse_duration)]
    pub busy_timeout: Option<Duration>,
}

pub fn run(args: ReplicateArgs) -> anyhow::Result<i32> {
    // As under Litestream, an -exec program sees LITESTREAM_ACCESS_KEY_ID/SECRET as the AWS_*
    // variables its own SDK reads. Here, before any thread exists (it changes the environment).
    crate::replica::s3::apply_litestream_env();
    if !args.more_urls.is_empty() {
        return usage(
            "several replica URLs are not supported: give one DB_PATH and one REPLICA_URL",
        );
    }
    if args.once && args.exec.is_some() {
        return usage("cannot specify -exec with -once");
    }
    let mut config = match load(&args) {
        Ok(Ok(config)) => config,
        Ok(Err(err)) => {
            for problem in &err.problems {
                eprintln!("{problem}");
            }
            eprintln!("litevisor: error: the configuration has the problems above");
            return Ok(USAGE);
        }
        Err(msg) => return usage(&msg),
    };
    // After the file is read: its `logging:` keys count.
    if let Err(msg) = init_logging(&args, &config.observe.log) {
        return usage(&msg);
    }
    for warning in &config.warnings {
        warn!("{warning}");
    }
    if let Err(msg) = super::observe_overrides(args.metrics_addr.as_deref(), &mut config.observe) {
        return usage(&msg);
    }
    for db in &mut config.databases {
        if let Some(d) = args.monitor_interval {
            db.sync_interval = d;
        }
        if let Some(d) = args.busy_timeout {
            db.busy_timeout = d;
        }
        if let Some(e) = args.page_encoding {
            db.page_encoding = e;
        }
    }
    if args.once {
        if config.main_service().is_some() {
            return usage("cannot use -once with `exec` in the configuration file");
        }
        // Without exec the deadline is exactly the final sync's window.
        let options = OnceOptions {
            sync_timeout: config.shutdown_timeout,
            force_snapshot: args.force_snapshot,
            enforce_retention: args.enforce_retention,
        };
        return Ok(once(&config.databases, options));
    }
    for db in &config.databases {
        info!(db = %db.path.display(), replica = %db.replica, "replicating");
    }
    if config.databases.is_empty() && config.services.is_empty() {
        warn!("no databases in the configuration: waiting for a stop signal");
    }
    let options = crate::supervisor::Options {
        exit_map: ExitCodeMap::new(Vec::new()),
        warn_on_reap: false,
        idle_when_empty: true,
        // No reload here: SIGHUP goes to the `-exec` program, as Litestream forwards it.
        reload: None,
    };
    match crate::supervisor::run(config, options) {
        Ok(code) => Ok(code),
        Err(err) => {
            eprintln!("litevisor: error: {err}");
            Ok(1)
        }
    }
}

/// The configuration the arguments describe; `Err` for a usage error.
fn load(args: &ReplicateArgs) -> Result<Result<Config, ConfigError>, String> {
    let shutdown_sync_timeout = args.shutdown_sync_timeout;
    match (&args.db_path, &args.replica_url) {
        (Some(db_path), Some(url)) => {
            if args.config.is_some() {
                return Err("cannot specify a replica URL and the -config flag".to_string());
            }
            let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
            let mut replica = crate::config::replica_from_url(url, &cwd)?;
            // As Litestream's URL-built clients: `LITESTREAM_S3_ENDPOINT` when the URL names none.
            if let Replica::S3(s3) = &mut replica {
                crate::replica::s3::endpoint_from_env(s3);
            }
            let mut db = Database::new(cwd.join(db_path), replica);
            db.restore = if args.restore_if_db_not_exists {
                RestorePolicy::IfMissing
            } else {
                RestorePolicy::Never
            };
            db.allow_network_fs = args.allow_network_fs;
            Ok(litestream::command_line(
                db,
                args.exec.as_deref(),
                shutdown_sync_timeout.unwrap_or(litestream::DEFAULT_SHUTDOWN_SYNC_TIMEOUT),
            ))
        }
        (Some(_), None) => Err("must specify a replica URL after DB_PATH".to_string()),
        (None, _) => {
            let path = litestream::config_path(args.config.as_deref());
            let overrides = Overrides {
                exec: args.exec.clone(),
                restore_if_db_not_exists: args.restore_if_db_not_exists,
                allow_network_fs: args.allow_network_fs,
                shutdown_sync_timeout,
                ignore_exec: false,
            };
            Ok(litestream::load(&path, !args.no_expand_env, &overrides))
        }
    }
}

fn usage(msg: &str) -> anyhow::Result<i32> {
    eprintln!("litevisor: error: {msg}");
    eprintln!(
        "usage: litevisor replicate [-config PATH] [-exec CMD] [-once] [flags] [DB_PATH REPLICA_URL]"
    );
    Ok(USAGE)
}

/// `-once` over every database: exit 0 when each was synced and uploaded, 1 otherwise.
fn once(databases: &[Database], options: OnceOptions) -> i32 {
    let mut code = 0;
    for db in databases {
        if let Err(err) = replicate_once(db, options) {
            error!(db = %db.path.display(), "{err}");
            eprintln!("litevisor: error: {}: {err}", db.path.display());
            code = 1;
        }
    }
    code
}

/// Litestream's order: `LOG_LEVEL` overrides (after litevisor's own `LITEVISOR_LOG`), then
/// `-log-level`, then the file's `logging.level`, else info.
fn init_logging(args: &ReplicateArgs, file: &crate::config::LogSettings) -> Result<(), String> {
    use super::logging::{self, LogRequest};
    logging::init_logging(LogRequest {
        levels: vec![
            ("LITEVISOR_LOG", logging::env("LITEVISOR_LOG")),
            ("LOG_LEVEL", logging::env("LOG_LEVEL")),
            ("-log-level", args.log_level.clone()),
        ],
        format_flag: args.log_format.as_deref(),
        file,
        default: crate::config::LogFilter::level(tracing::level_filters::LevelFilter::INFO),
    })
}
