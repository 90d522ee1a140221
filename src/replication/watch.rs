//! File-change notification for every replicated database of the process, from ONE inotify instance
//! and one thread.
//!
//! Why one: the kernel allows 128 inotify instances per user by default
//! (`fs.inotify.max_user_instances`), so an instance per database stops working at the 129th database
//! of a multi-database container. Watches are cheap (192k per user by default), instances are not.
//!
//! [`watch`] registers interest in some names inside one directory and a callback that runs (on the
//! watcher's thread: it must be quick, e.g. notify a pool task) whenever one of those names changes,
//! or whenever the kernel's event queue overflowed, when nobody can know what changed. Subscribers in
//! the same directory share the kernel watch; it is removed with the last of them. Idle, the thread
//! sleeps in `read(2)`. No descriptor is used per subscriber.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

/// Keeps a subscription alive; dropping it unsubscribes.
#[derive(Debug)]
pub struct Watch {
    hub: &'static Hub,
    wd: WatchDescriptor,
    id: u64,
}

/// What a subscriber runs when one of its names changes.
pub type Wake = Arc<dyn Fn() + Send + Sync>;

/// What a directory listener hears: an entry of its directory, or (`name: None`) "anything may have
/// changed" (the kernel's queue overflowed) or "the directory itself is gone" (`gone`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEvent {
    pub name: Option<OsString>,
    /// The entry was deleted or moved away (for `name: None`: the directory was).
    pub gone: bool,
    /// The entry is a directory.
    pub is_dir: bool,
}

/// What a directory listener runs for each event (on the watcher's thread: it must be quick).
pub type Listen = Arc<dyn Fn(DirEvent) + Send + Sync>;

const MASK: AddWatchFlags = AddWatchFlags::IN_MODIFY
    .union(AddWatchFlags::IN_CREATE)
    .union(AddWatchFlags::IN_MOVED_TO)
    .union(AddWatchFlags::IN_MOVED_FROM)
    .union(AddWatchFlags::IN_DELETE)
    .union(AddWatchFlags::IN_CLOSE_WRITE);

/// Calls `listen` for every entry of `dir` created, modified, closed after writing, moved in or out,
/// or deleted (directory mode's discovery of databases).
pub fn listen(dir: &Path, listen: Listen) -> io::Result<Watch> {
    subscribe(dir, Target::Listener(listen))
}

/// Calls `wake` whenever an entry of `dir` named in `names` is created, modified, closed after
/// writing, moved in, or deleted.
pub fn watch(dir: &Path, names: &[&OsStr], wake: Wake) -> io::Result<Watch> {
    subscribe(
        dir,
        Target::Names(names.iter().map(|n| n.to_os_string()).collect(), wake),
    )
}

fn subscribe(dir: &Path, target: Target) -> io::Result<Watch> {
    let hub = hub()?;
    let mut state = hub.lock();
    // Under the lock, so that a concurrent last unsubscribe cannot remove the kernel watch between
    // this add and the registration below. Every subscriber of a directory shares one kernel watch
    // (the kernel gives the same descriptor again), so they all use the same mask.
    let wd = hub.inotify.add_watch(dir, MASK).map_err(|e| match e {
        Errno::ENOSPC => io::Error::other(format!(
            "inotify_add_watch {}: the limit of inotify watches is reached: raise \
             fs.inotify.max_user_watches (sysctl; each watched directory takes one)",
            dir.display()
        )),
        Errno::EMFILE => io::Error::other(format!(
            "inotify_add_watch {}: too many inotify instances: raise fs.inotify.max_user_instances",
            dir.display()
        )),
        e => io::Error::other(format!("inotify_add_watch {}: {e}", dir.display())),
    })?;
    state.next_id += 1;
    let id = state.next_id;
    state
        .dirs
        .entry(wd)
        .or_default()
        .push(Subscriber { id, target });
    Ok(Watch { hub, wd, id })
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut state = self.hub.lock();
        let Some(subscribers) = state.dirs.get_mut(&self.wd) else {
            return; // the kernel already dropped the watch (directory removed)
        };
        subscribers.retain(|s| s.id != self.id);
        if subscribers.is_empty() {
            state.dirs.remove(&self.wd);
            let _ = self.hub.inotify.rm_watch(self.wd);
        }
    }
}

struct Subscriber {
    id: u64,
    target: Target,
}

enum Target {
    /// A database: these names of the directory, one "look again" callback.
    Names(Vec<OsString>, Wake),
    /// A directory listener: every entry, with what happened.
    Listener(Listen),
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber").field("id", &self.id).finish()
    }
}

impl Subscriber {
    /// Anything may have changed (queue overflow), or the directory is gone.
    fn poke(&self, gone: bool) {
        match &self.target {
            Target::Names(_, wake) => wake(),
            Target::Listener(listen) => listen(DirEvent {
                name: None,
                gone,
                is_dir: true,
            }),
        }
    }

    fn event(&self, name: &OsStr, mask: AddWatchFlags) {
        match &self.target {
            Target::Names(names, wake) => {
                if names.iter().any(|n| n == name) {
                    wake();
                }
            }
            Target::Listener(listen) => listen(DirEvent {
                name: Some(name.to_os_string()),
                gone: mask.intersects(AddWatchFlags::IN_DELETE | AddWatchFlags::IN_MOVED_FROM),
                is_dir: mask.contains(AddWatchFlags::IN_ISDIR),
            }),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    dirs: HashMap<WatchDescriptor, Vec<Subscriber>>,
    next_id: u64,
}

#[derive(Debug)]
struct Hub {
    inotify: Inotify,
    state: Mutex<State>,
}

impl Hub {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn run(&'static self) {
        loop {
            let events = match self.inotify.read_events() {
                Ok(events) => events,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    // Nothing sensible is left to do; wake everyone once so each database syncs
                    // now, and log why later changes are no longer noticed.
                    tracing::error!("inotify read failed, file changes are no longer watched: {e}");
                    self.lock()
                        .dirs
                        .values()
                        .flatten()
                        .for_each(|s| s.poke(false));
                    return;
                }
            };
            let mut state = self.lock();
            for event in events {
                if event.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                    state.dirs.values().flatten().for_each(|s| s.poke(false));
                    continue;
                }
                if event.mask.contains(AddWatchFlags::IN_IGNORED) {
                    // The directory is gone: wake its subscribers so they notice, and forget it.
                    if let Some(subscribers) = state.dirs.remove(&event.wd) {
                        subscribers.iter().for_each(|s| s.poke(true));
                    }
                    continue;
                }
                let (Some(name), Some(subscribers)) = (&event.name, state.dirs.get(&event.wd))
                else {
                    continue;
                };
                subscribers.iter().for_each(|s| s.event(name, event.mask));
            }
        }
    }
}

/// The process-wide hub, started on first use. A failure to start is returned to every caller (and
/// retried: it may be a transient lack of file descriptors).
fn hub() -> io::Result<&'static Hub> {
    static HUB: OnceLock<&'static Hub> = OnceLock::new();
    static STARTING: Mutex<()> = Mutex::new(());
    if let Some(hub) = HUB.get() {
        return Ok(hub);
    }
    let _guard = STARTING.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(hub) = HUB.get() {
        return Ok(hub);
    }
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC)
        .map_err(|e| io::Error::other(format!("inotify_init: {e}")))?;
    let hub: &'static Hub = Box::leak(Box::new(Hub {
        inotify,
        state: Mutex::new(State::default()),
    }));
    std::thread::Builder::new()
        .name("lv-watch".into())
        .stack_size(128 * 1024)
        .spawn(move || hub.run())?;
    let _ = HUB.set(hub);
    Ok(hub)
}

/// The directory holding `path` (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> PathBuf {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    fn counter() -> (Arc<AtomicUsize>, Wake) {
        let n = Arc::new(AtomicUsize::new(0));
        let m = Arc::clone(&n);
        (
            n,
            Arc::new(move || {
                m.fetch_add(1, Ordering::SeqCst);
            }),
        )
    }

    /// True once `n` was woken (and resets it).
    fn wait_woken(n: &AtomicUsize, within: Duration) -> bool {
        let end = Instant::now() + within;
        while Instant::now() < end {
            if n.swap(0, Ordering::SeqCst) > 0 {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    #[test]
    fn only_named_entries_wake_their_subscriber() {
        let dir = tempfile::tempdir().unwrap();
        let (a, wake_a) = counter();
        let (b, wake_b) = counter();
        let _a = watch(
            dir.path(),
            &[OsStr::new("a.db"), OsStr::new("a.db-wal")],
            wake_a,
        )
        .unwrap();
        let _b = watch(dir.path(), &[OsStr::new("b.db")], wake_b).unwrap();
        std::fs::write(dir.path().join("a.db-wal"), b"x").unwrap();
        assert!(wait_woken(&a, Duration::from_secs(5)), "a not woken");
        // Events are handled in order: once b has seen its file, every event of a's write (create,
        // modify, close) has been handled too, and what a sees after that is new.
        std::fs::write(dir.path().join("b.db"), b"x").unwrap();
        assert!(wait_woken(&b, Duration::from_secs(5)), "b not woken");
        a.store(0, Ordering::SeqCst);
        std::fs::write(dir.path().join("other"), b"x").unwrap();
        std::fs::write(dir.path().join("b.db"), b"y").unwrap();
        assert!(wait_woken(&b, Duration::from_secs(5)), "b not woken again");
        assert_eq!(
            a.load(Ordering::SeqCst),
            0,
            "a woken by b's or an unrelated file"
        );
    }

    #[test]
    fn the_kernel_watch_outlives_all_but_the_last_subscriber() {
        let dir = tempfile::tempdir().unwrap();
        let (_, wake_first) = counter();
        let (second, wake_second) = counter();
        let first = watch(dir.path(), &[OsStr::new("x")], wake_first).unwrap();
        let _second = watch(dir.path(), &[OsStr::new("x")], wake_second).unwrap();
        drop(first);
        std::fs::write(dir.path().join("x"), b"1").unwrap();
        assert!(wait_woken(&second, Duration::from_secs(5)));
    }

    #[test]
    fn many_databases_share_one_instance() {
        // More subscribers than the default per-user instance limit (128).
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<OsString> = (0..300).map(|i| format!("db{i}").into()).collect();
        let (last, wake_last) = counter();
        let watches: Vec<_> = names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let wake = if i == 299 {
                    Arc::clone(&wake_last)
                } else {
                    counter().1
                };
                watch(dir.path(), &[n.as_os_str()], wake).unwrap()
            })
            .collect();
        std::fs::write(dir.path().join("db299"), b"x").unwrap();
        assert!(wait_woken(&last, Duration::from_secs(5)));
        drop(watches);
    }
}
