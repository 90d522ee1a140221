//! File-change notification for every replicated database of the process, from ONE inotify instance
//! and one thread.
//!
//! Why one: the kernel allows 128 inotify instances per user by default
//! (`fs.inotify.max_user_instances`), so an instance per database stops working at the 129th database
//! of a multi-database container. Watches are cheap (192k per user by default), instances are not.
//!
//! [`watch`] registers interest in some names inside one directory and hands back the read end of a
//! socket pair that becomes readable whenever one of those names changes (or whenever the kernel's
//! event queue overflowed, when nobody can know what changed). Subscribers in the same directory share
//! the kernel watch; it is removed with the last of them. Idle, the thread sleeps in `read(2)`.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

/// Keeps a subscription alive; dropping it unsubscribes.
#[derive(Debug)]
pub struct Watch {
    hub: &'static Hub,
    wd: WatchDescriptor,
    id: u64,
}

/// Wakes the returned socket whenever an entry of `dir` named in `names` is created, modified,
/// closed after writing, moved in, or deleted.
pub fn watch(dir: &Path, names: &[&OsStr]) -> io::Result<(Watch, UnixStream)> {
    let hub = hub()?;
    let (poke, changes) = UnixStream::pair()?;
    poke.set_nonblocking(true)?;
    changes.set_nonblocking(true)?;
    let mask = AddWatchFlags::IN_MODIFY
        | AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_CLOSE_WRITE;
    let mut state = hub.lock();
    // Under the lock, so that a concurrent last unsubscribe cannot remove the kernel watch between
    // this add and the registration below.
    let wd = hub
        .inotify
        .add_watch(dir, mask)
        .map_err(|e| io::Error::other(format!("inotify_add_watch {}: {e}", dir.display())))?;
    state.next_id += 1;
    let id = state.next_id;
    state.dirs.entry(wd).or_default().push(Subscriber {
        id,
        names: names.iter().map(|n| n.to_os_string()).collect(),
        poke,
    });
    Ok((Watch { hub, wd, id }, changes))
}

/// Drains the socket returned by [`watch`]; true if anything was pending.
pub fn drain(changes: &UnixStream) -> bool {
    let mut buf = [0u8; 64];
    let mut any = false;
    while io::Read::read(&mut &*changes, &mut buf).is_ok_and(|n| n > 0) {
        any = true;
    }
    any
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

#[derive(Debug)]
struct Subscriber {
    id: u64,
    names: Vec<OsString>,
    /// Write end: one byte means "look again"; a full buffer already means that.
    poke: UnixStream,
}

impl Subscriber {
    fn poke(&self) {
        let _ = (&self.poke).write(&[1]);
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
                        .for_each(Subscriber::poke);
                    return;
                }
            };
            let mut state = self.lock();
            for event in events {
                if event.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                    state.dirs.values().flatten().for_each(Subscriber::poke);
                    continue;
                }
                if event.mask.contains(AddWatchFlags::IN_IGNORED) {
                    // The directory is gone: wake its subscribers so they notice, and forget it.
                    if let Some(subscribers) = state.dirs.remove(&event.wd) {
                        subscribers.iter().for_each(Subscriber::poke);
                    }
                    continue;
                }
                let (Some(name), Some(subscribers)) = (&event.name, state.dirs.get(&event.wd))
                else {
                    continue;
                };
                subscribers
                    .iter()
                    .filter(|s| s.names.iter().any(|n| n == name))
                    .for_each(Subscriber::poke);
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
    use std::time::{Duration, Instant};

    fn wait_readable(s: &UnixStream, within: Duration) -> bool {
        let end = Instant::now() + within;
        while Instant::now() < end {
            if drain(s) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    #[test]
    fn only_named_entries_wake_their_subscriber() {
        let dir = tempfile::tempdir().unwrap();
        let (_a, a) = watch(dir.path(), &[OsStr::new("a.db"), OsStr::new("a.db-wal")]).unwrap();
        let (_b, b) = watch(dir.path(), &[OsStr::new("b.db")]).unwrap();
        std::fs::write(dir.path().join("a.db-wal"), b"x").unwrap();
        assert!(wait_readable(&a, Duration::from_secs(5)), "a not woken");
        // Events are handled in order: once b has seen its file, every event of a's write (create,
        // modify, close) has been handled too, and what a sees after that is new.
        std::fs::write(dir.path().join("b.db"), b"x").unwrap();
        assert!(wait_readable(&b, Duration::from_secs(5)), "b not woken");
        drain(&a);
        std::fs::write(dir.path().join("other"), b"x").unwrap();
        std::fs::write(dir.path().join("b.db"), b"y").unwrap();
        assert!(
            wait_readable(&b, Duration::from_secs(5)),
            "b not woken again"
        );
        assert!(!drain(&a), "a woken by b's or an unrelated file");
    }

    #[test]
    fn the_kernel_watch_outlives_all_but_the_last_subscriber() {
        let dir = tempfile::tempdir().unwrap();
        let (first, _) = watch(dir.path(), &[OsStr::new("x")]).unwrap();
        let (_second, second_rx) = watch(dir.path(), &[OsStr::new("x")]).unwrap();
        drop(first);
        std::fs::write(dir.path().join("x"), b"1").unwrap();
        assert!(wait_readable(&second_rx, Duration::from_secs(5)));
    }

    #[test]
    fn many_databases_share_one_instance() {
        // More subscribers than the default per-user instance limit (128).
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<OsString> = (0..300).map(|i| format!("db{i}").into()).collect();
        let watches: Vec<_> = names
            .iter()
            .map(|n| watch(dir.path(), &[n.as_os_str()]).unwrap())
            .collect();
        std::fs::write(dir.path().join("db299"), b"x").unwrap();
        assert!(wait_readable(&watches[299].1, Duration::from_secs(5)));
    }
}
