//! Directory entries (Litestream's `dir:` mode) as two nodes of the service graph, like a single
//! database's: [`DirRestoreUnit`] restores every database the replica holds below the entry's
//! replica path (per the `restore` policy, in parallel, each written complete or not at all), then
//! [`DirUnit`] finds the databases (the file name matches `pattern`; a SQLite database in WAL mode),
//! adds each to the supervisor's [`DbSet`] and, with `watch`, follows the directory: a database
//! created is added once it is one (from its first commit), one deleted is removed after a last
//! sync. Its stop is the final sync of every database it holds.
//!
//! A file that matches the pattern but is not a SQLite database in WAL mode is reported once and
//! skipped (looked at again when it changes: an application creating a database writes it first).
//! Reading a file's header opens and closes it, which would drop SQLite's POSIX locks of a
//! database litevisor replicates: members of the set are never looked at that way.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::database::ended;
use super::dbset::DbSet;
use super::unit::{Command, Control, Ended, Unit, UnitFuture, Why};
use crate::config::{DatabaseDir, RestorePolicy};
use crate::replication::prepare::{Restored, restore_if_needed};
use crate::replication::watch::{self, DirEvent};

/// Events of one file are gathered this long before it is looked at (Litestream's debounce).
const DEBOUNCE: Duration = Duration::from_millis(250);
/// How long the last sync of a deleted database may take.
const REMOVAL_TIMEOUT: Duration = Duration::from_secs(30);
/// Restores of one directory running at once.
const RESTORE_PARALLELISM: usize = 8;

/// Runs `f` on a plain thread; the result comes back to the async side.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = oneshot::channel();
    crate::replication::pool::upload_pool().execute(move || {
        let _ = tx.send(f());
    });
    rx.await.ok()
}

/// What a file's first 100 bytes say.
enum Kind {
    WalDatabase,
    /// Why it is skipped.
    Skipped(&'static str),
}

/// Reads the SQLite header of a file litevisor does not replicate (see the module docs).
fn classify(path: &Path) -> Kind {
    use std::io::Read;
    let mut header = [0u8; 100];
    let read = std::fs::File::open(path).and_then(|mut f| {
        let mut n = 0;
        while n < header.len() {
            match f.read(&mut header[n..])? {
                0 => break,
                k => n += k,
            }
        }
        Ok(n)
    });
    match read {
        Ok(n) if n < 100 || &header[..16] != b"SQLite format 3\0" => {
            Kind::Skipped("not a SQLite database")
        }
        Ok(_) if header[18] == 2 && header[19] == 2 => Kind::WalDatabase,
        Ok(_) => Kind::Skipped("not in WAL mode (journal_mode is not wal)"),
        Err(_) => Kind::Skipped("cannot be read"),
    }
}

/// The entry's matching files and (recursive) subdirectories below `from`. Litestream's meta
/// directories (`.<name>-litestream`) hold no databases and are skipped.
fn scan(entry: &DatabaseDir, from: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    let mut todo = vec![from.to_path_buf()];
    while let Some(dir) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(kind) = e.file_type() else { continue };
            if kind.is_dir() {
                if entry.recursive && !name.ends_with("-litestream") {
                    dirs.push(e.path());
                    todo.push(e.path());
                }
            } else if kind.is_file() && entry.matches(&name) {
                files.push(e.path());
            }
        }
    }
    files.sort();
    (files, dirs)
}

/// The databases of a directory entry as they are now: the files matching its pattern that are
/// SQLite databases in WAL mode (for `litevisor databases`; never call it on a directory litevisor
/// replicates in this process, see the module docs).
pub fn found_databases(entry: &DatabaseDir) -> Vec<crate::config::Database> {
    let (files, _) = scan(entry, &entry.dir);
    files
        .into_iter()
        .filter(|f| matches!(classify(f), Kind::WalDatabase))
        .filter_map(|f| entry.database(&f))
        .collect()
}

/// The oneshot that restores a directory entry's databases before anything uses them.
pub struct DirRestoreUnit {
    entry: DatabaseDir,
}

impl DirRestoreUnit {
    pub fn new(entry: DatabaseDir) -> Self {
        Self { entry }
    }

    async fn supervise(self, mut ctl: Control) -> Ended {
        let dir = self.entry.dir.display().to_string();
        if self.entry.template.restore == RestorePolicy::Never {
            ctl.ready();
            return ended(Why::Exited);
        }
        if ctl.command() != Command::Run {
            return ended(Why::Stopped);
        }
        let entry = self.entry.clone();
        let (tx, rx) = oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name("lv-restore-dir".into())
            .spawn(move || {
                let _ = tx.send(restore_directory(&entry));
            });
        if let Err(e) = spawned {
            return ended(Why::Failed(format!(
                "directory {dir}: cannot start the restore thread: {e}"
            )));
        }
        tokio::select! {
            result = rx => match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return ended(Why::Failed(format!("directory {dir}: {e}"))),
                Err(_) => return ended(Why::Failed(format!("directory {dir}: the restore thread died"))),
            },
            _ = ctl.next_order() => {
                tracing::info!("directory {dir}: restore abandoned (stopping)");
                return ended(Why::Stopped);
            }
        }
        ctl.ready();
        ended(Why::Exited)
    }
}

impl Unit for DirRestoreUnit {
    fn run(self: Box<Self>, control: Control) -> UnitFuture {
        Box::pin(self.supervise(control))
    }
}

/// Restores every database the replica holds below the entry's replica path, per the entry's
/// `restore` policy, [`RESTORE_PARALLELISM`] at a time; each writes a temporary file and renames
/// it only when complete. Blocks. `Err` names every database that failed.
fn restore_directory(entry: &DatabaseDir) -> Result<(), String> {
    let base = crate::replica::client_for(&entry.template.replica);
    let rels = base.databases_below().map_err(|e| {
        format!(
            "cannot list the replica {} to decide what to restore: {e}",
            entry.template.replica
        )
    })?;
    let dbs: Vec<_> = rels
        .iter()
        .filter_map(|rel| entry.database(&entry.dir.join(rel)))
        .filter(|db| {
            db.path
                .file_name()
                .is_some_and(|n| entry.matches(&n.to_string_lossy()))
        })
        .collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..RESTORE_PARALLELISM.min(dbs.len()) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(db) = dbs.get(i) else { break };
                    let name = db.path.display();
                    match restore_if_needed(db) {
                        Ok(Restored::Kept(why)) => {
                            tracing::info!("database {name}: not restored ({why})")
                        }
                        Ok(Restored::Restored { txid, bytes, took }) => tracing::info!(
                            "database {name}: restored from {} to txid {txid:016x} ({bytes} bytes in {:.1}s)",
                            db.replica,
                            took.as_secs_f64()
                        ),
                        Err(e) => failures
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(format!("{name}: {e}")),
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap_or_else(|p| p.into_inner());
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!("restore failed: {}", failures.join("; ")))
    }
}

/// The longrun that replicates every database of a directory entry; its stop is their final sync.
pub struct DirUnit {
    entry: DatabaseDir,
    set: Arc<DbSet>,
    /// The owner name in the set: this node's name.
    owner: String,
}

/// The DirUnit's working state while it runs.
struct Discovery {
    entry: DatabaseDir,
    set: Arc<DbSet>,
    owner: String,
    events: mpsc::UnboundedSender<(PathBuf, DirEvent)>,
    watches: HashMap<PathBuf, watch::Watch>,
    /// Paths already reported as skipped (reported once).
    reported: HashSet<PathBuf>,
}

impl Discovery {
    /// Follows `dir` (with `watch`); a failure names the limit when it is one.
    fn follow(&mut self, dir: &Path) -> Result<(), String> {
        if !self.entry.watch || self.watches.contains_key(dir) {
            return Ok(());
        }
        let tx = self.events.clone();
        let at = dir.to_path_buf();
        let listener = Arc::new(move |ev: DirEvent| {
            let _ = tx.send((at.clone(), ev));
        });
        let w = watch::listen(dir, listener).map_err(|e| e.to_string())?;
        self.watches.insert(dir.to_path_buf(), w);
        Ok(())
    }

    /// Looks at a candidate file and adds it when it is a database in WAL mode; returns the start's
    /// channel when it was added.
    async fn consider(&mut self, path: PathBuf) -> Option<super::dbset::Started> {
        if self.set.contains(&path) {
            return None;
        }
        let p = path.clone();
        let kind = blocking(move || classify(&p)).await?;
        match kind {
            Kind::Skipped(why) => {
                if path.exists() && self.reported.insert(path.clone()) {
                    tracing::warn!(
                        "directory {}: {} skipped: {why}",
                        self.entry.dir.display(),
                        path.display()
                    );
                }
                None
            }
            Kind::WalDatabase => {
                let db = self.entry.database(&path)?;
                self.reported.remove(&path);
                match self.set.add(db, &self.owner) {
                    Ok((_, started)) => {
                        tracing::info!(
                            "database {}: found in {}, replicating to {}",
                            path.display(),
                            self.entry.dir.display(),
                            self.entry
                                .database(&path)
                                .map(|d| d.replica.to_string())
                                .unwrap_or_default()
                        );
                        Some(started)
                    }
                    Err(e) => {
                        if self.reported.insert(path.clone()) {
                            tracing::warn!("directory {}: {e}", self.entry.dir.display());
                        }
                        None
                    }
                }
            }
        }
    }

    /// A member whose start failed is reported and leaves the set (it is looked at again when it
    /// changes).
    fn watch_start(&self, path: PathBuf, mut started: super::dbset::Started) {
        let set = Arc::clone(&self.set);
        tokio::spawn(async move {
            let outcome = started
                .wait_for(Option::is_some)
                .await
                .ok()
                .and_then(|v| v.clone());
            let why = match outcome {
                Some(Ok(())) => return,
                Some(Err(e)) => e,
                None => "the replication thread died".to_owned(),
            };
            tracing::warn!("database {}: cannot replicate: {why}", path.display());
            set.remove(&path, Instant::now(), false);
        });
    }

    /// A member deleted (or moved away): its last sync, then it leaves the set.
    fn drop_member(&self, path: &Path) {
        if !self.set.paths_of(&self.owner).iter().any(|p| p == path) {
            return;
        }
        tracing::info!(
            "database {}: deleted; a last sync, then it is dropped",
            path.display()
        );
        let Some(mut done) = self
            .set
            .remove(path, Instant::now() + REMOVAL_TIMEOUT, true)
        else {
            return;
        };
        let path = path.to_path_buf();
        tokio::spawn(async move {
            let result = done
                .wait_for(Option::is_some)
                .await
                .ok()
                .and_then(|v| v.clone());
            match result {
                Some(r) if r.ok() => tracing::info!(
                    "database {}: dropped (txid {:016x} on the replica)",
                    path.display(),
                    r.replica_txid
                ),
                Some(r) => tracing::info!(
                    "database {}: dropped; its last sync did not complete ({})",
                    path.display(),
                    r.error.unwrap_or_else(|| "the replica is behind".into())
                ),
                None => tracing::info!("database {}: dropped", path.display()),
            }
        });
    }
}

impl DirUnit {
    pub fn new(entry: DatabaseDir, set: Arc<DbSet>, owner: String) -> Self {
        Self { entry, set, owner }
    }

    /// A unit to take over after this one panicked: it adopts the databases it held.
    pub fn revive(entry: DatabaseDir, set: Arc<DbSet>, owner: String) -> Box<dyn Unit> {
        Box::new(Self::new(entry, set, owner))
    }

    async fn supervise(self, mut ctl: Control) -> Ended {
        let dir = self.entry.dir.clone();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut d = Discovery {
            entry: self.entry.clone(),
            set: Arc::clone(&self.set),
            owner: self.owner.clone(),
            events: tx,
            watches: HashMap::new(),
            reported: HashSet::new(),
        };
        let mut stop: Option<Instant> = match ctl.command() {
            Command::Run => None,
            Command::Stop { deadline } => Some(deadline),
            Command::Kill => return ended(Why::Stopped),
        };
        if stop.is_none() {
            if !dir.is_dir() {
                return ended(Why::Failed(format!(
                    "directory {}: not a directory",
                    dir.display()
                )));
            }
            // Watch first, then scan: a database created in between is seen either way.
            if let Err(e) = d.follow(&dir) {
                return ended(Why::Failed(format!("directory {}: {e}", dir.display())));
            }
            let entry = self.entry.clone();
            let from = dir.clone();
            let (files, dirs) = blocking(move || scan(&entry, &from))
                .await
                .unwrap_or_default();
            for sub in &dirs {
                if let Err(e) = d.follow(sub) {
                    return ended(Why::Failed(format!("directory {}: {e}", dir.display())));
                }
            }
            let mut starts = Vec::new();
            for f in files {
                if let Some(started) = d.consider(f.clone()).await {
                    starts.push((f, started));
                }
            }
            // Adopted members (a revived unit) count as found too.
            let members = self.set.paths_of(&self.owner).len();
            if members == 0 && starts.is_empty() && !self.entry.watch {
                return ended(Why::Failed(format!(
                    "no SQLite databases found in directory {} with pattern {}",
                    dir.display(),
                    self.entry.pattern
                )));
            }
            let count = starts.len();
            let mut failed = 0;
            for (path, mut started) in starts {
                tokio::select! {
                    r = started.wait_for(Option::is_some) => {
                        if let Some(Err(e)) = r.ok().and_then(|v| v.clone()) {
                            failed += 1;
                            tracing::warn!("database {}: cannot replicate: {e}", path.display());
                            self.set.remove(&path, Instant::now(), false);
                        }
                    }
                    order = ctl.next_order() => match order {
                        Command::Stop { deadline } => { stop = Some(deadline); break; }
                        Command::Kill => return ended(Why::Stopped),
                        Command::Run => {}
                    },
                }
            }
            if stop.is_none() {
                tracing::info!(
                    "directory {}: replicating {} database(s){}{}",
                    dir.display(),
                    count - failed,
                    if failed > 0 {
                        format!(", {failed} could not be")
                    } else {
                        String::new()
                    },
                    if self.entry.watch {
                        ", watching for more"
                    } else {
                        ""
                    }
                );
                ctl.ready();
            }
        }
        // Files seen changing, looked at once their events have settled.
        let mut pending: HashSet<PathBuf> = HashSet::new();
        let mut flush_at: Option<tokio::time::Instant> = None;
        while stop.is_none() {
            let flush = async {
                match flush_at {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some((at, ev)) = rx.recv() => {
                    self.on_event(&mut d, &at, ev, &mut pending).await;
                    if !pending.is_empty() && flush_at.is_none() {
                        flush_at = Some(tokio::time::Instant::now() + DEBOUNCE);
                    }
                }
                () = flush => {
                    flush_at = None;
                    let mut paths: Vec<PathBuf> = pending.drain().collect();
                    paths.sort();
                    for p in paths {
                        if let Some(started) = d.consider(p.clone()).await {
                            d.watch_start(p, started);
                        }
                    }
                }
                order = ctl.next_order() => match order {
                    Command::Stop { deadline } => stop = Some(deadline),
                    Command::Kill => return abandoned(&dir),
                    Command::Run => {}
                },
            }
        }
        d.watches.clear();
        let deadline = stop.unwrap_or_else(Instant::now);
        self.final_syncs(&mut ctl, deadline).await
    }

    async fn on_event(
        &self,
        d: &mut Discovery,
        at: &Path,
        ev: DirEvent,
        pending: &mut HashSet<PathBuf>,
    ) {
        let Some(name) = ev.name else {
            if ev.gone {
                d.watches.remove(at);
                for p in self.set.paths_of(&self.owner) {
                    if p.starts_with(at) && !p.exists() {
                        d.drop_member(&p);
                    }
                }
            } else {
                // The kernel dropped events: look at everything again.
                let entry = self.entry.clone();
                let from = self.entry.dir.clone();
                let (files, _) = blocking(move || scan(&entry, &from))
                    .await
                    .unwrap_or_default();
                pending.extend(files);
            }
            return;
        };
        let path = at.join(&name);
        let name = name.to_string_lossy();
        if ev.is_dir {
            if ev.gone {
                d.watches.remove(&path);
                for p in self.set.paths_of(&self.owner) {
                    if p.starts_with(&path) {
                        d.drop_member(&p);
                    }
                }
            } else if self.entry.recursive && !name.ends_with("-litestream") {
                if let Err(e) = d.follow(&path) {
                    tracing::error!("directory {}: {e}", self.entry.dir.display());
                }
                let entry = self.entry.clone();
                let from = path.clone();
                let (files, dirs) = blocking(move || scan(&entry, &from))
                    .await
                    .unwrap_or_default();
                for sub in dirs {
                    if let Err(e) = d.follow(&sub) {
                        tracing::error!("directory {}: {e}", self.entry.dir.display());
                    }
                }
                pending.extend(files);
            }
            return;
        }
        if !self.entry.matches(&name) {
            return;
        }
        if ev.gone {
            pending.remove(&path);
            d.drop_member(&path);
        } else if !self.set.contains(&path) {
            pending.insert(path);
        }
    }

    /// The stop: every member's final sync (a member still starting first finishes its start).
    async fn final_syncs(&self, ctl: &mut Control, deadline: Instant) -> Ended {
        let dir = self.entry.dir.display().to_string();
        let paths = self.set.paths_of(&self.owner);
        tracing::info!(
            "directory {dir}: final sync of {} database(s) (up to {:.1}s)",
            paths.len(),
            deadline
                .saturating_duration_since(Instant::now())
                .as_secs_f64()
        );
        let mut waits = Vec::new();
        for p in &paths {
            if let Some(shared) = self.set.get(p)
                && let Some(mut rx) = shared.starting()
            {
                let _ = rx.wait_for(Option::is_some).await;
            }
            if let Some(rx) = self.set.remove(p, deadline, false) {
                waits.push((p.clone(), rx));
            }
        }
        let mut failed = Vec::new();
        for (p, mut rx) in waits {
            tokio::select! {
                r = rx.wait_for(Option::is_some) => {
                    match r.ok().and_then(|v| v.clone()) {
                        Some(done) if done.ok() => {}
                        Some(done) => failed.push(format!(
                            "{}: {}",
                            p.display(),
                            done.error.unwrap_or_else(|| "the replica is behind".into())
                        )),
                        None => {}
                    }
                }
                order = ctl.next_order() => {
                    if order == Command::Kill {
                        return abandoned(&self.entry.dir);
                    }
                }
            }
        }
        if failed.is_empty() {
            tracing::info!(
                "directory {dir}: final sync done ({} database(s))",
                paths.len()
            );
            ended(Why::Stopped)
        } else {
            ended(Why::FinalSyncFailed(format!(
                "directory {dir}: FINAL SYNC FAILED for {} of {} database(s): {}; their newest \
                 transactions are only in the local databases and their WAL (the next start resumes from there)",
                failed.len(),
                paths.len(),
                failed.join("; ")
            )))
        }
    }
}

fn abandoned(dir: &Path) -> Ended {
    ended(Why::FinalSyncFailed(format!(
        "directory {}: FINAL SYNC FAILED: abandoned (shutdown_timeout passed); the newest transactions \
         may be only in the local databases and their WAL (the next start resumes from there)",
        dir.display()
    )))
}

impl Unit for DirUnit {
    fn run(self: Box<Self>, control: Control) -> UnitFuture {
        Box::pin(self.supervise(control))
    }
}
