//! The supervisor's set of replicated databases: the one place where a database joins the set
//! ([`DbSet::add`]: its engine starts) or leaves it ([`DbSet::remove`]: its final sync runs, then it
//! is gone) while litevisor runs. Directory mode's discovery (a database created or deleted in a
//! watched directory, [`super::directory`]) goes through these two calls; so should anything else
//! that changes the set at run time (registering a database over the control socket, a reload).
//! `[[databases]]` entries are members too ([`DbSet::insert`]), driven by their graph nodes.
//!
//! Each member is a [`DbShared`] record (engine state, status row) and belongs to an *owner*, the
//! node that answers for its final sync at the stop (`replicate:<db>`, `replicate:<dir>`, ...). A
//! path is in the set at most once: adding a path another owner holds is refused.
//!
//! Also the process's budget of file descriptors: each replicated database holds about
//! [`FDS_PER_DATABASE`] of them (SQLite's two connections, the wal-index, litevisor's own handles
//! and its single-replicator lock). When the set grows past the soft `ulimit -n`, the soft limit is
//! raised to the hard one (as most servers do); past the hard one, a database is refused with a
//! message naming the setting, rather than failing later on a random `open`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::watch;

use super::database::DbShared;
use crate::config::Database;
use crate::control::DatabaseRow;
use crate::replication::engine::FinalSync;

/// Descriptors one replicated database holds (measured: `bench/scale` reports it).
pub const FDS_PER_DATABASE: u64 = 8;
/// Descriptors kept for everything else (sockets, pipes, logs, the replica's connections).
const FD_RESERVE: u64 = 256;

pub use super::database::Started;

#[derive(Debug, Default)]
pub struct DbSet {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    members: BTreeMap<PathBuf, Member>,
    next_seq: u64,
}

#[derive(Debug)]
struct Member {
    /// Order of joining: the status lists members in it.
    seq: u64,
    owner: String,
    db: Database,
    shared: Arc<DbShared>,
}

impl DbSet {
    pub fn new() -> Arc<DbSet> {
        Arc::new(DbSet::default())
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a database whose engine its graph node drives (a `[[databases]]` entry); nothing
    /// starts here.
    pub fn insert(&self, db: &Database, owner: &str) -> Arc<DbShared> {
        join(&mut self.lock(), db, owner)
    }

    /// Adds `db` to the set for `owner` and starts replicating it; the channel settles on the
    /// start's outcome. Adding a database `owner` already has adopts it (a revived owner). `Err`
    /// says why not: another owner replicates that path, or the descriptor budget is spent.
    pub fn add(&self, db: Database, owner: &str) -> Result<(Arc<DbShared>, Started), String> {
        let mut inner = self.lock();
        if let Some(m) = inner.members.get(&db.path) {
            if m.owner != owner {
                return Err(format!(
                    "{} is already replicated (by {})",
                    db.path.display(),
                    m.owner
                ));
            }
            let shared = Arc::clone(&m.shared);
            let db = m.db.clone();
            drop(inner);
            let started = shared.start_engine(&db);
            return Ok((shared, started));
        }
        fd_budget(inner.members.len() as u64 + 1)?;
        let shared = join(&mut inner, &db, owner);
        drop(inner);
        let started = shared.start_engine(&db);
        Ok((shared, started))
    }

    /// Ends a member's replication: its final sync (`gone`: the file was deleted, one attempt),
    /// then it leaves the set. `None` when `path` is not a member. The channel settles on the
    /// outcome (it closes without one when no engine ran).
    pub fn remove(
        self: &Arc<Self>,
        path: &Path,
        deadline: Instant,
        gone: bool,
    ) -> Option<watch::Receiver<Option<FinalSync>>> {
        let (seq, shared) = {
            let inner = self.lock();
            let m = inner.members.get(path)?;
            (m.seq, Arc::clone(&m.shared))
        };
        let done = match shared.final_sync(deadline, gone) {
            Ok(rx) => rx,
            Err(e) => {
                tracing::error!(
                    "database {}: cannot start its final sync: {e}",
                    path.display()
                );
                watch::channel(None).1
            }
        };
        let set = Arc::clone(self);
        let path = path.to_path_buf();
        let mut rx = done.clone();
        tokio::spawn(async move {
            let _ = rx.wait_for(Option::is_some).await;
            let mut inner = set.lock();
            if inner.members.get(&path).is_some_and(|m| m.seq == seq) {
                inner.members.remove(&path);
            }
        });
        Some(done)
    }

    /// Drops a member whose graph node has ended for good (a `[[databases]]` entry a reload removed,
    /// after its final sync).
    pub fn forget(&self, path: &Path) {
        self.lock().members.remove(path);
    }

    pub fn get(&self, path: &Path) -> Option<Arc<DbShared>> {
        self.lock().members.get(path).map(|m| Arc::clone(&m.shared))
    }

    /// The member at `path` as a client names it: the same path, or the same file once both are
    /// canonicalized (a relative path, a symlinked directory).
    pub fn find(&self, path: &Path) -> Option<Arc<DbShared>> {
        if let Some(found) = self.get(path) {
            return Some(found);
        }
        let wanted = std::fs::canonicalize(path).ok()?;
        self.lock()
            .members
            .iter()
            .find(|(p, _)| std::fs::canonicalize(p).is_ok_and(|c| c == wanted))
            .map(|(_, m)| Arc::clone(&m.shared))
    }

    pub fn contains(&self, path: &Path) -> bool {
        self.lock().members.contains_key(path)
    }

    /// The paths `owner` holds.
    pub fn paths_of(&self, owner: &str) -> Vec<PathBuf> {
        self.lock()
            .members
            .iter()
            .filter(|(_, m)| m.owner == owner)
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// One status row per member, in the order they joined.
    pub fn rows(&self) -> Vec<DatabaseRow> {
        let mut members: Vec<(u64, Arc<DbShared>)> = self
            .lock()
            .members
            .values()
            .map(|m| (m.seq, Arc::clone(&m.shared)))
            .collect();
        members.sort_by_key(|(seq, _)| *seq);
        members.into_iter().map(|(_, s)| s.row()).collect()
    }
}

/// Makes `db` a member held by `owner`, last in the joining order.
fn join(inner: &mut Inner, db: &Database, owner: &str) -> Arc<DbShared> {
    inner.next_seq += 1;
    let shared = DbShared::new(db);
    inner.members.insert(
        db.path.clone(),
        Member {
            seq: inner.next_seq,
            owner: owner.to_owned(),
            db: db.clone(),
            shared: Arc::clone(&shared),
        },
    );
    shared
}

/// Checks that `databases` replicated databases fit the open-file limit, raising the soft limit
/// to the hard one when that is what it takes.
fn fd_budget(databases: u64) -> Result<(), String> {
    let need = databases * FDS_PER_DATABASE + FD_RESERVE;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Ok(());
    }
    if limit.rlim_cur == libc::RLIM_INFINITY || need <= limit.rlim_cur {
        return Ok(());
    }
    if limit.rlim_max == libc::RLIM_INFINITY || need <= limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads one rlimit struct.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            tracing::info!(
                "raised the open-file limit (ulimit -n) from {} to {} for {databases} databases",
                limit.rlim_cur,
                limit.rlim_max
            );
            return Ok(());
        }
    }
    Err(format!(
        "too many open files: {databases} databases need about {need} file descriptors \
         ({FDS_PER_DATABASE} each) but the limit is {} (hard limit {}): raise `ulimit -n` \
         (RLIMIT_NOFILE; docker run --ulimit nofile=N:N, LimitNOFILE= in systemd)",
        limit.rlim_cur, limit.rlim_max
    ))
}
