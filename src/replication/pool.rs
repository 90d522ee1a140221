//! The replication engine's threads: two fixed pools of workers shared by every database of the
//! process, plus one timer thread. A database is two [`Task`]s (its sync lane and its upload lane, see
//! [`super::engine`]); a task runs one *turn* at a time on whichever worker is free, when something
//! [`Handle::notify`]s it (a file event, a command, the other lane) or when the deadline its last turn
//! asked for passes. So the number of threads does not grow with the number of databases, and a
//! database with nothing to do costs no thread, no timer and no wake-up.
//!
//! Two pools, so that a slow or unreachable replica (uploads block on the network) never holds up
//! the local work (WAL -> L0, checkpoints) of other databases:
//! - the *sync* pool runs SQLite and local file work; sized by the cores (2..=8);
//! - the *upload* pool runs replica traffic, and the blocking start-up of each database (open,
//!   reconcile with the replica); sized 2 × cores (4..=16), since its threads mostly wait.
//!
//! `LITEVISOR_REPLICATION_THREADS=N` sets both: a third of N (at least 1) sync workers, the rest
//! upload workers (at least 1).
//!
//! A task never runs on two workers at once; a notification that arrives during a turn makes the
//! task run again right after it. A turn that panics ends its task (it is a litevisor bug): the
//! task's [`Task::abandon`] drops its state, and whoever waited for a reply gets "stopped".

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Instant;

/// The environment variable that sizes the pools (see the module docs).
pub const THREADS_ENV: &str = "LITEVISOR_REPLICATION_THREADS";

/// What a task wants after a turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Turn {
    /// Run again when notified, or at this instant at the latest.
    Sleep(Option<Instant>),
    /// Never run again.
    Done,
}

/// One unit of scheduling: a database's sync lane or upload lane.
pub trait Task: Send + Sync + 'static {
    fn turn(&self) -> Turn;
    /// Called once instead of further turns after a turn panicked: drop the state, fail the waiters.
    fn abandon(&self);
}

const IDLE: u8 = 0;
const QUEUED: u8 = 1;
const RUNNING: u8 = 2;
/// Running, and notified meanwhile: runs again right after this turn.
const NOTIFIED: u8 = 3;
const DONE: u8 = 4;

struct Entry {
    task: Box<dyn Task>,
    pool: &'static Pool,
    state: AtomicU8,
    /// Identifies the timer of the latest turn; older timers are stale and ignored.
    timer_gen: AtomicU64,
}

/// A scheduled task; cloning it is cheap. Notifying a finished task does nothing.
#[derive(Clone)]
pub struct Handle(Arc<Entry>);

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("pool", &self.0.pool.name)
            .finish()
    }
}

/// A handle that does not keep its task alive (for the file watcher's callbacks).
#[derive(Clone)]
pub struct WeakHandle(Weak<Entry>);

impl WeakHandle {
    pub fn notify(&self) {
        if let Some(entry) = self.0.upgrade() {
            Handle(entry).notify();
        }
    }
}

impl<T: Task> Task for Arc<T> {
    fn turn(&self) -> Turn {
        T::turn(self)
    }
    fn abandon(&self) {
        T::abandon(self)
    }
}

impl Handle {
    /// A task on `pool` that runs its first turn when first notified.
    pub fn new(pool: &'static Pool, task: Box<dyn Task>) -> Handle {
        Handle(Arc::new(Entry {
            task,
            pool,
            state: AtomicU8::new(IDLE),
            timer_gen: AtomicU64::new(0),
        }))
    }

    /// Schedules `task` on `pool`; its first turn runs at once.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn spawn(pool: &'static Pool, task: Box<dyn Task>) -> Handle {
        let handle = Handle::new(pool, task);
        handle.notify();
        handle
    }

    pub fn downgrade(&self) -> WeakHandle {
        WeakHandle(Arc::downgrade(&self.0))
    }

    /// Makes the task run a turn soon (once, however often this is called before it runs).
    pub fn notify(&self) {
        let entry = &self.0;
        let mut state = entry.state.load(Ordering::Acquire);
        loop {
            let next = match state {
                IDLE => QUEUED,
                RUNNING => NOTIFIED,
                _ => return,
            };
            match entry.state.compare_exchange_weak(
                state,
                next,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    if next == QUEUED {
                        entry.pool.push(Work::Task(Arc::clone(entry)));
                    }
                    return;
                }
                Err(actual) => state = actual,
            }
        }
    }

    /// The task is finished (its last turn returned [`Turn::Done`], or it panicked).
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn is_done(&self) -> bool {
        self.0.state.load(Ordering::Acquire) == DONE
    }
}

impl Entry {
    fn run(self: Arc<Self>) {
        self.state.store(RUNNING, Ordering::Release);
        let turn = match catch_unwind(AssertUnwindSafe(|| self.task.turn())) {
            Ok(turn) => turn,
            Err(payload) => {
                let msg = payload
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "no message".to_owned());
                tracing::error!(
                    "a replication task panicked ({msg}): this is a litevisor bug, please report it"
                );
                let _ = catch_unwind(AssertUnwindSafe(|| self.task.abandon()));
                Turn::Done
            }
        };
        match turn {
            Turn::Done => {
                self.timer_gen.fetch_add(1, Ordering::AcqRel);
                self.state.store(DONE, Ordering::Release);
            }
            Turn::Sleep(at) => {
                let generation = self.timer_gen.fetch_add(1, Ordering::AcqRel) + 1;
                if let Some(at) = at {
                    timers().arm(at, generation, Arc::downgrade(&self));
                }
                if self
                    .state
                    .compare_exchange(RUNNING, IDLE, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
                {
                    // Notified during the turn: run again.
                    self.state.store(QUEUED, Ordering::Release);
                    self.pool.push(Work::Task(self));
                }
            }
        }
    }
}

enum Work {
    Task(Arc<Entry>),
    Job(Box<dyn FnOnce() + Send>),
}

/// A fixed set of worker threads with one queue.
pub struct Pool {
    name: &'static str,
    queue: Mutex<VecDeque<Work>>,
    work: Condvar,
}

impl Pool {
    fn start(name: &'static str, workers: usize) -> &'static Pool {
        let pool: &'static Pool = Box::leak(Box::new(Pool {
            name,
            queue: Mutex::new(VecDeque::new()),
            work: Condvar::new(),
        }));
        for i in 0..workers.max(1) {
            let spawned = std::thread::Builder::new()
                .name(format!("lv-{name}-{i}"))
                .spawn(move || pool.work());
            if let Err(e) = spawned {
                // Fewer workers only means less parallelism; with none at all nothing would run.
                tracing::error!("cannot start replication worker lv-{name}-{i}: {e}");
                if i == 0 {
                    std::process::abort();
                }
                break;
            }
        }
        pool
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Work>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, work: Work) {
        self.lock().push_back(work);
        self.work.notify_one();
    }

    /// Runs `job` on one of the pool's workers (blocking work that is not a task: a database's
    /// start-up).
    pub fn execute(&'static self, job: impl FnOnce() + Send + 'static) {
        self.push(Work::Job(Box::new(job)));
    }

    fn work(&self) {
        loop {
            let work = {
                let mut queue = self.lock();
                loop {
                    if let Some(w) = queue.pop_front() {
                        break w;
                    }
                    queue = self.work.wait(queue).unwrap_or_else(|p| p.into_inner());
                }
            };
            match work {
                Work::Task(entry) => entry.run(),
                Work::Job(job) => {
                    if catch_unwind(AssertUnwindSafe(job)).is_err() {
                        tracing::error!(
                            "a replication job panicked: this is a litevisor bug, please report it"
                        );
                    }
                }
            }
        }
    }
}

/// (sync workers, upload workers) for this machine, or as `LITEVISOR_REPLICATION_THREADS` says.
pub fn sizes() -> (usize, usize) {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    match std::env::var(THREADS_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
    {
        Some(n) => {
            let sync = (n / 3).max(1);
            (sync, n.saturating_sub(sync).max(1))
        }
        None => (cores.clamp(2, 8), (2 * cores).clamp(4, 16)),
    }
}

/// The pool for SQLite and local file work.
pub fn sync_pool() -> &'static Pool {
    static POOL: OnceLock<&'static Pool> = OnceLock::new();
    POOL.get_or_init(|| Pool::start("sync", sizes().0))
}

/// The pool for replica traffic and database start-ups.
pub fn upload_pool() -> &'static Pool {
    static POOL: OnceLock<&'static Pool> = OnceLock::new();
    POOL.get_or_init(|| Pool::start("upload", sizes().1))
}

struct Timer {
    at: Instant,
    generation: u64,
    entry: Weak<Entry>,
}

impl PartialEq for Timer {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.generation) == (other.at, other.generation)
    }
}
impl Eq for Timer {}
impl PartialOrd for Timer {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Timer {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.generation).cmp(&(other.at, other.generation))
    }
}

/// Every task's next deadline, in one heap, served by one thread that sleeps until the earliest.
struct Timers {
    heap: Mutex<BinaryHeap<Reverse<Timer>>>,
    changed: Condvar,
}

fn timers() -> &'static Timers {
    static TIMERS: OnceLock<&'static Timers> = OnceLock::new();
    TIMERS.get_or_init(|| {
        let timers: &'static Timers = Box::leak(Box::new(Timers {
            heap: Mutex::new(BinaryHeap::new()),
            changed: Condvar::new(),
        }));
        if let Err(e) = std::thread::Builder::new()
            .name("lv-timer".into())
            .stack_size(128 * 1024)
            .spawn(move || timers.run())
        {
            tracing::error!("cannot start the replication timer thread: {e}");
            std::process::abort();
        }
        timers
    })
}

impl Timers {
    fn lock(&self) -> MutexGuard<'_, BinaryHeap<Reverse<Timer>>> {
        self.heap.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn arm(&self, at: Instant, generation: u64, entry: Weak<Entry>) {
        let mut heap = self.lock();
        let earliest = heap.peek().is_none_or(|Reverse(t)| at < t.at);
        heap.push(Reverse(Timer {
            at,
            generation,
            entry,
        }));
        drop(heap);
        if earliest {
            self.changed.notify_one();
        }
    }

    fn run(&self) {
        let mut heap = self.lock();
        loop {
            let now = Instant::now();
            let mut due = Vec::new();
            while heap.peek().is_some_and(|Reverse(t)| t.at <= now) {
                if let Some(Reverse(t)) = heap.pop() {
                    due.push(t);
                }
            }
            if !due.is_empty() {
                drop(heap);
                for t in due {
                    if let Some(entry) = t.entry.upgrade()
                        && entry.timer_gen.load(Ordering::Acquire) == t.generation
                    {
                        Handle(entry).notify();
                    }
                }
                heap = self.lock();
                continue;
            }
            heap = match heap.peek() {
                Some(Reverse(t)) => {
                    let wait = t.at.saturating_duration_since(now);
                    self.changed
                        .wait_timeout(heap, wait)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
                None => self.changed.wait(heap).unwrap_or_else(|p| p.into_inner()),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    struct Counter {
        turns: AtomicUsize,
        until: usize,
        wake_in: Option<Duration>,
    }

    impl Task for Counter {
        fn turn(&self) -> Turn {
            let n = self.turns.fetch_add(1, Ordering::SeqCst) + 1;
            if n >= self.until {
                Turn::Done
            } else {
                Turn::Sleep(self.wake_in.map(|d| Instant::now() + d))
            }
        }
        fn abandon(&self) {}
    }

    fn wait_until(f: impl Fn() -> bool) -> bool {
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if f() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        false
    }

    #[test]
    fn timers_run_a_task_again_until_it_is_done() {
        let task = Arc::new(Counter {
            turns: AtomicUsize::new(0),
            until: 3,
            wake_in: Some(Duration::from_millis(5)),
        });
        let h = Handle::spawn(sync_pool(), Box::new(task.clone()));
        assert!(wait_until(|| h.is_done()));
        assert_eq!(task.turns.load(Ordering::SeqCst), 3);
        h.notify();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(
            task.turns.load(Ordering::SeqCst),
            3,
            "a done task never runs"
        );
    }

    #[test]
    fn a_sleeping_task_runs_only_when_notified() {
        let task = Arc::new(Counter {
            turns: AtomicUsize::new(0),
            until: usize::MAX,
            wake_in: None,
        });
        let h = Handle::spawn(upload_pool(), Box::new(task.clone()));
        assert!(wait_until(|| task.turns.load(Ordering::SeqCst) == 1));
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(task.turns.load(Ordering::SeqCst), 1);
        h.notify();
        assert!(wait_until(|| task.turns.load(Ordering::SeqCst) == 2));
    }

    #[test]
    fn a_panicking_turn_ends_the_task_and_the_worker_survives() {
        struct Boom(AtomicUsize);
        impl Task for Boom {
            fn turn(&self) -> Turn {
                panic!("boom");
            }
            fn abandon(&self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let (sync, _) = sizes();
        let handles: Vec<_> = (0..sync + 1)
            .map(|_| Handle::spawn(sync_pool(), Box::new(Boom(AtomicUsize::new(0)))))
            .collect();
        assert!(wait_until(|| handles.iter().all(Handle::is_done)));
        let (tx, rx) = std::sync::mpsc::channel();
        sync_pool().execute(move || tx.send(()).unwrap());
        rx.recv_timeout(Duration::from_secs(5))
            .expect("workers still run jobs");
    }
}
