//! `litevisor replicate DB_PATH REPLICA_URL` (Litestream's command-line form): replicate one database
//! until SIGTERM/SIGINT, then run a final sync (WAL -> L0 -> replica) before exiting.
//!
//! Exit codes: 0 when the final sync uploaded everything committed; 1 when it did not (or on any
//! error: the database or replica could not be opened, the restore failed); 2 for usage errors.
//! (Litestream exits 0 even when its final sync fails; a supervisor deserves to know.)
//!
//! `-exec` and `-config` are deliberately absent: the supervisor and config loader plug in by building
//! `DbConfig`s and driving `Replicator`s the same way `replicate_one` does.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use nix::sys::signal::{SigSet, Signal};
use tracing::{error, info};

use super::duration::parse_duration;
use crate::replica::open_replica;
use crate::replication::engine::{DbConfig, FinalSync, Replicator};
use crate::replication::ltx::PageEncoding;
use crate::replication::restore;

#[derive(clap::Args, Debug)]
pub struct ReplicateArgs {
    /// Database to replicate (with REPLICA_URL; `-config` is not supported yet).
    pub db_path: Option<PathBuf>,
    /// Replica URL: `file:///path` or a plain path.
    pub replica_url: Option<String>,
    /// Sync the WAL and upload once, then exit.
    #[arg(long)]
    pub once: bool,
    /// With -once: write a full snapshot instead of an incremental L0.
    #[arg(long = "force-snapshot", requires = "once")]
    pub force_snapshot: bool,
    /// Restore the database from the replica first when it does not exist and the replica has data.
    #[arg(long = "restore-if-db-not-exists")]
    pub restore_if_db_not_exists: bool,
    /// trace, debug, info, warn, error (LOG_LEVEL overrides, as in Litestream).
    #[arg(long = "log-level", default_value = "info")]
    pub log_level: String,
    /// Minimum time between two syncs (Litestream's monitor-interval); 0 syncs as soon as the WAL
    /// changes.
    #[arg(long = "monitor-interval", default_value = "1s", value_parser = parse_duration)]
    pub monitor_interval: Duration,
    /// How long the final sync may retry uploads at shutdown.
    #[arg(long = "shutdown-sync-timeout", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_sync_timeout: Duration,
    /// Page encoding of written LTX files: `frame` (every Litestream 0.5.x reads it) or `block`
    /// (Litestream >= 0.5.16 only).
    #[arg(long = "page-encoding", default_value = "frame", value_parser = parse_encoding)]
    pub page_encoding: PageEncoding,
    /// How long litevisor's SQLite connections wait for locks.
    #[arg(long = "busy-timeout", default_value = "1s", value_parser = parse_duration)]
    pub busy_timeout: Duration,
}

pub fn run(args: ReplicateArgs) -> anyhow::Result<i32> {
    init_logging(&args.log_level);
    let (Some(db_path), Some(url)) = (args.db_path.clone(), args.replica_url.clone()) else {
        bail!(
            "usage: litevisor replicate [flags] DB_PATH REPLICA_URL (-config is not supported yet)"
        );
    };
    let replica = open_replica(&url).with_context(|| format!("open replica {url}"))?;
    if args.restore_if_db_not_exists && !db_path.exists() {
        restore_if_replica_exists(&*replica, &db_path)?;
    }
    let mut cfg = DbConfig::new(&db_path, replica);
    cfg.min_sync_interval = args.monitor_interval;
    cfg.encoding = args.page_encoding;
    cfg.busy_timeout = args.busy_timeout;
    cfg.force_snapshot = args.force_snapshot;

    if args.once {
        if !db_path.exists() {
            bail!("database {} does not exist", db_path.display());
        }
        let replicator =
            Replicator::start(cfg).with_context(|| format!("replicate {}", db_path.display()))?;
        // One pass through the same engine the daemon uses, then the final sync (a no-op unless
        // the database changed meanwhile).
        match replicator.sync_now(args.shutdown_sync_timeout) {
            Ok(s) => {
                info!(db = %replicator.path().display(), txid = s.txid, replica_txid = s.replica_txid, "synced")
            }
            Err(e) => error!(db = %replicator.path().display(), "sync failed: {e}"),
        }
        return Ok(report(
            replicator.shutdown(args.shutdown_sync_timeout),
            &db_path,
        ));
    }

    // Block the stop signals before any thread starts so every thread inherits the mask and only
    // `sigwait` below sees them.
    let mut stop = SigSet::empty();
    stop.add(Signal::SIGTERM);
    stop.add(Signal::SIGINT);
    stop.thread_block().context("block SIGTERM/SIGINT")?;
    let replicator =
        Replicator::start(cfg).with_context(|| format!("replicate {}", db_path.display()))?;
    info!(db = %db_path.display(), replica = %url, "replicating");
    let sig = stop.wait().context("wait for SIGTERM/SIGINT")?;
    info!(signal = %sig, "stopping: final sync");
    Ok(report(
        replicator.shutdown(args.shutdown_sync_timeout),
        &db_path,
    ))
}

fn report(done: FinalSync, db: &std::path::Path) -> i32 {
    if done.ok() {
        info!(db = %db.display(), txid = done.txid, "final sync complete");
        0
    } else {
        let why = done
            .error
            .unwrap_or_else(|| "replica is behind".to_string());
        error!(db = %db.display(), txid = done.txid, replica_txid = done.replica_txid, "final sync failed: {why}");
        eprintln!("litevisor: final sync of {} failed: {why}", db.display());
        1
    }
}

fn restore_if_replica_exists(
    replica: &dyn crate::replica::ReplicaClient,
    db: &std::path::Path,
) -> anyhow::Result<()> {
    let has_data = [0u8, crate::replication::ltx::SNAPSHOT_LEVEL]
        .iter()
        .map(|l| replica.ltx_files(*l).map(|f| !f.is_empty()))
        .collect::<Result<Vec<_>, _>>()
        .context("list replica")?
        .into_iter()
        .any(|b| b);
    if !has_data {
        info!(db = %db.display(), "no database and no replica data: starting empty");
        return Ok(());
    }
    let report = restore::restore(
        replica,
        restore::Target::Latest,
        db,
        &restore::RestoreOptions::default(),
    )
    .with_context(|| format!("restore {}", db.display()))?;
    info!(db = %db.display(), txid = report.txid, "restored database from replica");
    Ok(())
}

fn init_logging(level: &str) {
    let level = std::env::var("LOG_LEVEL")
        .ok()
        .filter(|l| !l.is_empty())
        .unwrap_or_else(|| level.to_string());
    let directive = match level.to_ascii_lowercase().as_str() {
        "trace" | "debug" | "info" | "error" => level.to_ascii_lowercase(),
        "warn" | "warning" => "warn".to_string(),
        _ => "info".to_string(),
    };
    let filter = tracing_subscriber::EnvFilter::new(format!("litevisor={directive}"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

fn parse_encoding(s: &str) -> Result<PageEncoding, String> {
    match s {
        "frame" => Ok(PageEncoding::Frame),
        "block" => Ok(PageEncoding::Block),
        _ => Err(format!("unknown page encoding {s:?} (frame or block)")),
    }
}
