//! `replicate -once` for one configured database: the restore decision, one sync and upload through
//! the same engine the daemon runs, its final sync, then (as asked) an L9 snapshot and retention, in
//! Litestream's order. Blocking: the CLI calls it before any runtime exists.

use std::time::{Duration, SystemTime};

use tracing::{error, info};

use crate::config::Database;
use crate::replication::compact::{self, CompactError};
use crate::replication::engine::{DbConfig, EngineError, Replicator};
use crate::replication::prepare::{self, Restored};

/// What `-once` does after the sync, in Litestream's order.
#[derive(Clone, Copy, Debug)]
pub struct OnceOptions {
    /// How long the sync and the final sync may retry.
    pub sync_timeout: Duration,
    /// Write an L9 snapshot from the replica's chain (`-force-snapshot`).
    pub force_snapshot: bool,
    /// Apply snapshot retention and drop the L1+ files below its floor (`-enforce-retention`).
    pub enforce_retention: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum OnceError {
    #[error("{0}")]
    Restore(String),
    #[error("database {} does not exist", .0.display())]
    Missing(std::path::PathBuf),
    #[error("replicate {}: {source}", path.display())]
    Start {
        path: std::path::PathBuf,
        source: Box<EngineError>,
    },
    #[error("final sync failed (local txid {txid}, replica txid {replica_txid}): {why}")]
    FinalSync {
        txid: u64,
        replica_txid: u64,
        why: String,
    },
    #[error("snapshot: {0}")]
    Snapshot(#[source] CompactError),
    #[error("enforce retention: {0}")]
    Retention(#[source] CompactError),
}

/// Runs `-once` for `db`; `Ok` when the replica holds everything committed (and the asked-for
/// snapshot and retention are done).
pub fn replicate_once(db: &Database, options: OnceOptions) -> Result<(), OnceError> {
    let name = db.path.display();
    match prepare::restore_if_needed(db).map_err(OnceError::Restore)? {
        Restored::Kept(why) => info!(db = %name, "not restored ({why})"),
        Restored::Restored { txid, .. } => {
            info!(db = %name, txid, "restored database from replica")
        }
    }
    if !db.path.exists() {
        return Err(OnceError::Missing(db.path.clone()));
    }
    let cfg = DbConfig::for_database(db);
    let replica = cfg.replica.clone();
    let replicator = Replicator::start(cfg).map_err(|source| OnceError::Start {
        path: db.path.clone(),
        source: Box::new(source),
    })?;
    match replicator.sync_now(options.sync_timeout) {
        Ok(s) => info!(db = %name, txid = s.txid, replica_txid = s.replica_txid, "synced"),
        Err(e) => error!(db = %name, "sync failed: {e}"),
    }
    // The final sync is a no-op unless the database changed meanwhile; it says whether the replica
    // holds everything committed.
    let done = replicator.shutdown(options.sync_timeout);
    if !done.ok() {
        return Err(OnceError::FinalSync {
            txid: done.txid,
            replica_txid: done.replica_txid,
            why: done
                .error
                .unwrap_or_else(|| "replica is behind".to_string()),
        });
    }
    info!(txid = done.txid, "final sync complete");
    // Litestream writes the snapshot from the database at the position just uploaded; the
    // replica's chain holds exactly that state, so it is built from there (no database lock).
    if options.force_snapshot {
        match compact::force_snapshot(&*replica, db.page_encoding).map_err(OnceError::Snapshot)? {
            Some(f) => info!(db = %name, txid = f.max_txid, "snapshot written"),
            None => info!(db = %name, "nothing to snapshot: the replica is empty"),
        }
    }
    if options.enforce_retention {
        if !db.retention_enabled {
            info!(db = %name, "retention disabled: nothing deleted");
        } else {
            let report = compact::snapshot_and_level_retention(
                &*replica,
                db.snapshot_retention,
                SystemTime::now(),
            )
            .map_err(OnceError::Retention)?;
            info!(db = %name, deleted = report.deleted.len(), "retention enforced");
        }
    }
    Ok(())
}
