//! The bundled example's application (`litevisor example-app`): a tiny SQLite app built into the
//! binary, so that `services.d.example` runs on a machine with nothing but litevisor. It uses SQLite
//! the way a real application should beside a replicator: WAL mode, a busy timeout on every
//! connection, one short transaction per write.
//!
//! - [`migrate`] creates the `items` table if it is missing (a oneshot);
//! - [`write`] inserts one row per interval and prints each id once it is committed, optionally
//!   signalling readiness (s6 style: a newline on a descriptor) after its first commit;
//! - [`read`] prints the row count per interval (a reader beside the writer).
//!
//! `write` and `read` stop at SIGTERM, SIGINT or SIGQUIT and exit 0. They wait for those signals
//! with `sigtimedwait` between rows: no handler, no polling, and a stop never cuts a transaction.

use std::os::fd::RawFd;
use std::path::Path;
use std::time::Duration;

use nix::sys::signal::{SigSet, Signal};
use rusqlite::{Connection, OpenFlags};

/// How long a statement waits for another connection's lock (litevisor's checkpoints take one
/// briefly) before failing with `SQLITE_BUSY`: Litestream's advice for applications.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const SCHEMA: &str = "create table if not exists items (id integer primary key, note text not null, at text not null)";

#[derive(Debug, thiserror::Error)]
pub enum ExampleError {
    #[error("{path}")]
    Sqlite {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("cannot signal readiness on descriptor {fd}")]
    Notify {
        fd: RawFd,
        #[source]
        source: std::io::Error,
    },
}

/// Creates the schema if it is not there yet (a database restored from the replica has it already).
pub fn migrate(db: &Path) -> Result<(), ExampleError> {
    let sqlite = sqlite_error(db);
    let conn = open(db, OpenFlags::default())?;
    conn.execute_batch(SCHEMA).map_err(&sqlite)?;
    println!(
        "schema ready in {} ({} rows)",
        db.display(),
        count(&conn, db)?
    );
    Ok(())
}

/// Inserts a row every `interval` until a stop signal, printing each id after its commit. After the
/// first commit it writes a newline to `notify_fd` (then closes it), if given.
pub fn write(db: &Path, interval: Duration, notify_fd: Option<RawFd>) -> Result<(), ExampleError> {
    let sqlite = sqlite_error(db);
    let stop = StopSignals::take();
    let conn = open(db, OpenFlags::default())?;
    println!("started with {} rows", count(&conn, db)?);
    let mut notify = notify_fd;
    let mut written = 0u64;
    loop {
        let id: i64 = conn
            .query_row(
                "insert into items (note, at) values ('row', datetime('now')) returning id",
                [],
                |row| row.get(0),
            )
            .map_err(&sqlite)?;
        written += 1;
        println!("committed row {id}");
        if let Some(fd) = notify.take() {
            ready(fd)?;
        }
        if stop.wait(interval) {
            println!("stopping after {written} new rows");
            return Ok(());
        }
    }
}

/// Prints the number of rows and the newest one every `interval` until a stop signal.
pub fn read(db: &Path, interval: Duration) -> Result<(), ExampleError> {
    let sqlite = sqlite_error(db);
    let stop = StopSignals::take();
    let conn = open(db, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    loop {
        let (rows, newest): (i64, Option<String>) = conn
            .query_row(
                "select count(*), (select id || ' at ' || at from items order by id desc limit 1) from items",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .map_err(&sqlite)?;
        println!(
            "{rows} rows (newest: {})",
            newest.as_deref().unwrap_or("none")
        );
        if stop.wait(interval) {
            return Ok(());
        }
    }
}

fn open(db: &Path, flags: OpenFlags) -> Result<Connection, ExampleError> {
    let sqlite = sqlite_error(db);
    let conn = Connection::open_with_flags(db, flags).map_err(&sqlite)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(&sqlite)?;
    if !flags.contains(OpenFlags::SQLITE_OPEN_READ_ONLY) {
        // WAL is what a replicator reads; NORMAL is durable enough in WAL mode and much faster.
        conn.execute_batch("pragma journal_mode = wal; pragma synchronous = normal")
            .map_err(&sqlite)?;
    }
    Ok(conn)
}

fn count(conn: &Connection, db: &Path) -> Result<i64, ExampleError> {
    conn.query_row("select count(*) from items", [], |row| row.get(0))
        .map_err(sqlite_error(db))
}

fn sqlite_error(db: &Path) -> impl Fn(rusqlite::Error) -> ExampleError + '_ {
    move |source| ExampleError::Sqlite {
        path: db.display().to_string(),
        source,
    }
}

/// s6 readiness: one newline on the descriptor the supervisor passed, then close it.
fn ready(fd: RawFd) -> Result<(), ExampleError> {
    // Raw calls on the number: nothing here may assume the descriptor is open (a mistyped
    // `--notify-fd` is an error, not undefined behaviour).
    // SAFETY: write reads one byte from a live buffer; close only ends that descriptor.
    let written = unsafe { libc::write(fd, b"\n".as_ptr().cast(), 1) };
    let result = if written == 1 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    };
    // SAFETY: see above.
    unsafe { libc::close(fd) };
    result.map_err(|source| ExampleError::Notify { fd, source })
}

/// The stop signals, blocked so that they wait in the queue until [`StopSignals::wait`] takes one.
struct StopSignals(SigSet);

impl StopSignals {
    fn take() -> StopSignals {
        let mut set = SigSet::empty();
        for signal in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGQUIT] {
            set.add(signal);
        }
        // Cannot fail with a valid set; if it did, a stop signal would end the process at once
        // (between transactions or not), which SQLite survives.
        let _ = set.thread_block();
        StopSignals(set)
    }

    /// Sleeps for `interval` unless a stop signal comes first; true if one came.
    fn wait(&self, interval: Duration) -> bool {
        let deadline = std::time::Instant::now() + interval;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let timeout = libc::timespec {
                tv_sec: left.as_secs() as libc::time_t,
                tv_nsec: left.subsec_nanos() as libc::c_long,
            };
            // SAFETY: both pointers refer to live values for the duration of the call.
            let signal =
                unsafe { libc::sigtimedwait(self.0.as_ref(), std::ptr::null_mut(), &timeout) };
            if signal > 0 {
                return true;
            }
            // EAGAIN: the interval passed; EINTR (another signal's handler ran): wait on.
            if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                return false;
            }
        }
    }
}
