//! The one restore-before-start decision, for every path that starts replicating a configured
//! database: the supervisor's `restore:<db>` unit, directory mode's start-up restores and
//! `replicate -once`. Blocking (a stat, a replica listing, a restore): call it off the runtime.
//!
//! - `never`: the file is left as it is;
//! - `if-missing` (the default): restore when the database file does not exist and the replica has
//!   data;
//! - `always`: restore whenever the replica has data, replacing the local file only once the
//!   restored copy is complete.
//!
//! A replica that cannot be listed is an error, never "nothing to restore": the caller must not start
//! an application on an empty database when its backup exists but is unreachable (Litestream #364).

use std::time::{Duration, Instant};

use crate::config::{Database, RestorePolicy};
use crate::replica;
use crate::replication::restore::{self, RestoreOptions, Target};

/// What [`restore_if_needed`] did.
#[derive(Debug)]
pub enum Restored {
    /// Nothing restored, and why.
    Kept(&'static str),
    Restored {
        txid: u64,
        bytes: u64,
        took: Duration,
    },
}

/// Why no restore is needed when that is clear without asking the replica: `restore = "never"`, or
/// `if-missing` and the file exists (one stat; no SQLite, no network).
pub fn nothing_to_restore(db: &Database) -> Option<&'static str> {
    if db.follow.is_some() {
        return Some("followed: its follower restores it");
    }
    match db.restore {
        RestorePolicy::Never => Some("restore = \"never\""),
        RestorePolicy::IfMissing if std::fs::symlink_metadata(&db.path).is_ok() => {
            Some("the file exists")
        }
        _ => None,
    }
}

/// Decides by `db.restore` and, if needed, restores the latest state. `Err` is the message to show.
pub fn restore_if_needed(db: &Database) -> Result<Restored, String> {
    if let Some(why) = nothing_to_restore(db) {
        return Ok(Restored::Kept(why));
    }
    let exists = match std::fs::symlink_metadata(&db.path) {
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(format!("cannot check the database file: {e}")),
    };
    let replica = replica::client_for(&db.replica);
    if !restore::has_data(&*replica).map_err(|e| {
        format!(
            "cannot list the replica {} to decide whether to restore: {e}",
            db.replica
        )
    })? {
        return Ok(Restored::Kept(if exists {
            "the replica is empty; keeping the existing file"
        } else {
            "the replica is empty: the database starts empty"
        }));
    }
    tracing::info!(
        "database {}: restoring from {}",
        db.path.display(),
        db.replica
    );
    let started = Instant::now();
    let report = restore::restore(
        &*replica,
        Target::Latest,
        &db.path,
        &RestoreOptions::default(),
    )
    .map_err(|e| format!("restore from {} failed: {e}", db.replica))?;
    Ok(Restored::Restored {
        txid: report.txid,
        bytes: u64::from(report.pages) * u64::from(report.page_size),
        took: started.elapsed(),
    })
}
