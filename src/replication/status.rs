//! What one database's replication has done and what is wrong with it right now: the figures
//! `litevisor status`, `/metrics` and `/healthz` show, kept by the engine's two threads under one
//! short lock (updated on each sync and upload, which take that lock anyway; nothing here costs
//! anything while nobody asks).
//!
//! A failure is a state, not an event: [`Status::replica_failed`] and [`Status::local_failed`] say
//! whether a failure is news (the first one, or a different kind), so the engine logs it once when
//! it starts and once when it clears ([`Status::replica_ok`], [`Status::local_ok`]), not at every
//! retry.

use std::time::{Duration, SystemTime};

/// A point-in-time view of one database's replication.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Status {
    /// Newest local L0 TXID and the WAL offset it ends at.
    pub txid: u64,
    pub wal_offset: u64,
    /// Newest TXID on the replica's L0.
    pub replica_txid: u64,
    pub last_sync: Option<SystemTime>,
    pub last_upload: Option<SystemTime>,
    pub snapshots: u64,
    pub checkpoints: u64,
    /// Failed replica operations so far (each was or will be retried).
    pub replica_errors: u64,
    pub last_error: Option<String>,
    /// Syncs (WAL -> L0) run, failed, and the time they took (Litestream's sync metrics).
    pub sync_count: u64,
    pub sync_errors: u64,
    pub sync_time: Duration,
    /// WAL bytes turned into L0 files (Litestream's `total_wal_bytes`).
    pub wal_bytes: u64,
    pub checkpoint_errors: u64,
    pub checkpoint_time: Duration,
    /// Failed replica operations by kind ([`crate::replica::ReplicaError::kind`]).
    pub errors_by_kind: Vec<(&'static str, u64)>,
    /// The replica fails now: from the first failed attempt until one succeeds.
    pub replica_failure: Option<Failure>,
    /// Replication is stopped by a local failure (disk full, permission denied...) until a sync
    /// succeeds again.
    pub local_failure: Option<Failure>,
    /// When the oldest committed transaction that is not on the replica yet was synced; `None`
    /// when the replica has everything synced.
    pub pending_since: Option<SystemTime>,
}

/// A failure that lasts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// `NoSuchBucket`, `timeout`, `disk_full`...
    pub kind: &'static str,
    /// The latest attempt's message (one line).
    pub message: String,
    pub since: SystemTime,
    /// Failed attempts since it started.
    pub attempts: u64,
    /// Retrying cannot fix it (configuration, credentials, bucket).
    pub permanent: bool,
}

impl Status {
    /// Records a failed replica operation. True when it is news (the replica was fine, or fails
    /// differently now): worth a log line.
    pub fn replica_failed(&mut self, kind: &'static str, message: &str, permanent: bool) -> bool {
        self.replica_errors += 1;
        self.last_error = Some(message.to_string());
        match self.errors_by_kind.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += 1,
            None => self.errors_by_kind.push((kind, 1)),
        }
        note(&mut self.replica_failure, kind, message, permanent)
    }

    /// The replica answered: returns the failure this ends, if any.
    pub fn replica_ok(&mut self) -> Option<Failure> {
        self.replica_failure.take()
    }

    /// Records a local failure that stops replication. True when it is news.
    pub fn local_failed(&mut self, kind: &'static str, message: &str) -> bool {
        self.last_error = Some(message.to_string());
        note(&mut self.local_failure, kind, message, false)
    }

    /// A sync succeeded: returns the local failure this ends, if any.
    pub fn local_ok(&mut self) -> Option<Failure> {
        self.local_failure.take()
    }

    /// Seconds the oldest transaction not yet on the replica has waited (0 when none waits).
    pub fn lag_seconds(&self, now: SystemTime) -> f64 {
        self.pending_since.map_or(0.0, |t| {
            now.duration_since(t).unwrap_or_default().as_secs_f64()
        })
    }

    /// Committed transactions not yet on the replica.
    pub fn lag_txids(&self) -> u64 {
        self.txid.saturating_sub(self.replica_txid)
    }

    /// The replica now holds `replica_txid`: nothing waits any more when it caught up with the
    /// local position; otherwise the wait continues from `next_pending` (when the next file was
    /// written), or from now when that is unknown.
    pub fn uploaded(&mut self, replica_txid: u64, next_pending: Option<SystemTime>) {
        self.replica_txid = replica_txid;
        self.last_upload = Some(SystemTime::now());
        self.pending_since = if replica_txid >= self.txid {
            None
        } else {
            next_pending.or(self.pending_since)
        };
    }
}

fn note(slot: &mut Option<Failure>, kind: &'static str, message: &str, permanent: bool) -> bool {
    match slot {
        Some(f) if f.kind == kind => {
            f.attempts += 1;
            f.message = message.to_string();
            false
        }
        _ => {
            *slot = Some(Failure {
                kind,
                message: message.to_string(),
                since: SystemTime::now(),
                attempts: 1,
                permanent,
            });
            true
        }
    }
}

/// The kind of a local failure, from the error's message and sources: `disk_full`,
/// `permission_denied`, `read_only`, else `local`.
pub fn local_kind(err: &(dyn std::error::Error + 'static)) -> &'static str {
    let mut next = Some(err);
    let mut text = String::new();
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            match io.raw_os_error() {
                Some(libc::ENOSPC) | Some(libc::EDQUOT) => return "disk_full",
                Some(libc::EACCES) | Some(libc::EPERM) => return "permission_denied",
                Some(libc::EROFS) => return "read_only",
                _ => {}
            }
        }
        text.push_str(&e.to_string());
        next = e.source();
    }
    if text.contains("No space left") || text.contains("disk is full") {
        "disk_full"
    } else if text.contains("Permission denied") || text.contains("permission denied") {
        "permission_denied"
    } else if text.contains("Read-only file system") || text.contains("readonly database") {
        "read_only"
    } else {
        "local"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_news_once_per_kind_and_clears() {
        let mut s = Status::default();
        assert!(s.replica_failed("timeout", "a", false));
        assert!(!s.replica_failed("timeout", "b", false));
        assert!(s.replica_failed("NoSuchBucket", "c", true));
        assert_eq!(s.replica_errors, 3);
        assert_eq!(s.errors_by_kind, vec![("timeout", 2), ("NoSuchBucket", 1)]);
        let f = s.replica_ok().unwrap();
        assert_eq!((f.kind, f.attempts, f.permanent), ("NoSuchBucket", 1, true));
        assert!(s.replica_ok().is_none());
    }

    #[test]
    fn local_kinds() {
        let full = std::io::Error::from_raw_os_error(libc::ENOSPC);
        assert_eq!(local_kind(&full), "disk_full");
        let denied = std::io::Error::from_raw_os_error(libc::EACCES);
        assert_eq!(local_kind(&denied), "permission_denied");
        assert_eq!(
            local_kind(&std::io::Error::other("database or disk is full")),
            "disk_full"
        );
        assert_eq!(local_kind(&std::io::Error::other("boom")), "local");
    }
}
