//! A `[[databases]]` entry with `follow = true`: a read replica. Its `replicate:<db>` node runs a
//! [`FollowUnit`] instead of a replicator: on a thread of its own the follower
//! ([`crate::replication::follow`]) restores the database, and the node is ready only then, so the
//! services that read it start on a restored copy; then it applies the replica's new files every
//! `follow_interval`, readers never hurt. A stop order ends it between two polls, or within a
//! second while it waits for readers (one lock attempt, see [`crate::replication::follow`]).
//! Nothing is ever uploaded from this side.
//!
//! What the status shows: state `following`, the applied TXID, the time of the last apply, and,
//! while polls fail, how long the copy could not be confirmed current (the lag health and metrics
//! judge, like a primary's upload lag).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use tokio::sync::oneshot;

use super::database::{DbShared, DbState, ended};
use super::unit::{Command, Control, Ended, Unit, UnitFuture, Why};
use crate::config::Database;
use crate::replication::follow::{self, FollowEvent, FollowOptions};
use crate::replication::restore::IntegrityCheck;

pub struct FollowUnit {
    db: Database,
    interval: Duration,
    shared: Arc<DbShared>,
}

impl FollowUnit {
    pub fn new(db: Database, interval: Duration, shared: Arc<DbShared>) -> Self {
        Self {
            db,
            interval,
            shared,
        }
    }

    async fn supervise(self, mut ctl: Control) -> Ended {
        let name = self.db.path.display().to_string();
        if ctl.command() != Command::Run {
            return ended(Why::Stopped);
        }
        self.shared.set_state(DbState::Restoring);
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let (ready_tx, mut ready_rx) = oneshot::channel::<u64>();
        let (done_tx, mut done_rx) = oneshot::channel::<Result<(), String>>();
        let (db, interval, shared) = (self.db.clone(), self.interval, Arc::clone(&self.shared));
        let spawned = std::thread::Builder::new()
            .name("lv-follow".into())
            .spawn(move || {
                let result = run(&db, interval, &shared, stop_rx, ready_tx);
                let _ = done_tx.send(result);
            });
        if let Err(e) = spawned {
            return self
                .shared
                .fail(format!("database {name}: cannot start the follower: {e}"));
        }
        let mut stopping = false;
        let mut ready = false;
        loop {
            tokio::select! {
                txid = &mut ready_rx, if !ready => {
                    ready = true;
                    if let Ok(txid) = txid {
                        tracing::info!(db = %name, "database {name}: restored to txid {txid:016x}; following {}", self.db.replica);
                        self.shared.set_state(DbState::Following);
                        ctl.ready();
                    }
                }
                result = &mut done_rx => {
                    return match result {
                        Ok(Ok(())) if stopping => {
                            self.shared.set_state(DbState::Stopped);
                            ended(Why::Stopped)
                        }
                        Ok(Ok(())) => self.shared.fail(format!("database {name}: the follower ended")),
                        Ok(Err(e)) => self.shared.fail(format!("database {name}: cannot follow {}: {e}", self.db.replica)),
                        Err(_) => self.shared.fail(format!("database {name}: the follower thread died")),
                    };
                }
                order = ctl.next_order() => match order {
                    Command::Stop { .. } | Command::Kill => {
                        if !stopping {
                            stopping = true;
                            let _ = stop_tx.send(());
                        }
                        if order == Command::Kill {
                            return ended(Why::Stopped);
                        }
                    }
                    Command::Run => {}
                },
            }
        }
    }
}

impl Unit for FollowUnit {
    fn run(self: Box<Self>, control: Control) -> UnitFuture {
        Box::pin(self.supervise(control))
    }
}

/// The follower's thread: stale sidecars out of the way, then restore and follow until a stop.
fn run(
    db: &Database,
    interval: Duration,
    shared: &DbShared,
    stop: mpsc::Receiver<()>,
    ready: oneshot::Sender<u64>,
) -> Result<(), String> {
    // The followed copy is kept in rollback-journal mode: a WAL or a hot journal left by an earlier
    // life of this volume must not be taken for part of it by a reader.
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut p = db.path.as_os_str().to_owned();
        p.push(suffix);
        match std::fs::remove_file(PathBuf::from(&p)) {
            Ok(()) => tracing::info!("removed the stale {}", PathBuf::from(p).display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("remove {}: {e}", PathBuf::from(p).display())),
        }
    }
    let replica = crate::replica::client_for(&db.replica);
    let options = FollowOptions {
        interval,
        integrity_check: IntegrityCheck::None,
    };
    let mut ready = Some(ready);
    let mut wait = |d: Duration| match stop.recv_timeout(d) {
        Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => true,
        Err(mpsc::RecvTimeoutError::Timeout) => false,
    };
    let mut event = |event: FollowEvent| {
        shared.note_follow(&event);
        if let FollowEvent::Restored { txid } = event
            && let Some(ready) = ready.take()
        {
            let _ = ready.send(txid);
        }
    };
    follow::follow(&*replica, &db.path, &options, &mut wait, &mut event).map_err(|e| e.to_string())
}
