//! The supervisor's control socket and `litevisor status`: where the socket lives, the one-line
//! protocol, the status snapshot (services and databases) and its text and JSON renderings.
//!
//! Socket path: see [`path`] (PID 1: `/run/litevisor.sock`; others: a path of their own process).
//! The supervisor creates it with mode 0600 in a directory only its user may write, and answers
//! only connections whose peer is its own user or root (`SO_PEERCRED`). A leftover socket nobody
//! listens on (a litevisor that was SIGKILLed) is replaced; a live one (another litevisor) is left
//! alone and this supervisor runs without a socket: the socket is a convenience, never a reason to
//! fail a start-up.
//!
//! Protocol: the client connects, writes one line, `status`, `status json`, `health` or one of
//! Litestream's commands ([`commands`]), and reads the answer until the server closes the
//! connection. `health` answers `ok`, or `unhealthy:` and what is wrong ([`health`]).
//!
//! The optional HTTP listener for `/metrics` and `/healthz` is [`http`]; both read the same
//! [`StatusSource`].
//!
//! The server runs on the supervisor's current-thread runtime. It arms no timer while idle; an open
//! connection gets [`REQUEST_PATIENCE`] to send its line. Answering only reads in-memory state
//! through [`StatusSource`] (short mutex reads, plus a `stat` of each database and its WAL), so a
//! status request never waits on SQLite or on a replica.

use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener as StdListener, UnixStream as StdStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub mod commands;
pub mod health;
pub mod http;
pub mod metrics;
pub mod path;
pub mod svc;

use crate::replica::rfc3339;
use crate::replication::status::{Failure, Status};
use crate::text::{json_str, tabulate};

pub const SOCKET_ENV: &str = "LITEVISOR_SOCKET";

/// How long a connected client may take to send its request line.
const REQUEST_PATIENCE: Duration = Duration::from_secs(5);
/// The longest request line accepted.
const MAX_REQUEST: usize = 256;

/// What `litevisor status` shows: the services, then the databases.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub services: Vec<ServiceRow>,
    pub databases: Vec<DatabaseRow>,
}

#[derive(Clone, Debug)]
pub struct ServiceRow {
    pub name: String,
    /// `longrun` or `oneshot`.
    pub kind: &'static str,
    pub main: bool,
    /// `pending`, `starting`, `running`, `restarting`, `stopping`, `ended`, `down` (by request).
    pub state: &'static str,
    /// The process (group leader) running now.
    pub pid: Option<i32>,
    pub restarts: u32,
    /// How its last process ended (`exited with status 3`, `killed by SIGTERM`), if one did.
    pub last_exit: Option<String>,
    /// Its last process's exit code (128+N for signal N), if one ended.
    pub last_exit_code: Option<i32>,
    /// When the process running now was started.
    pub since: Option<SystemTime>,
    /// Ready (a longrun with readiness: it said so; without: it runs).
    pub ready: bool,
}

#[derive(Clone, Debug, Default)]
pub struct DatabaseRow {
    pub path: String,
    /// The replica as a URL, without credentials.
    pub replica: String,
    /// `pending`, `restoring`, `starting`, `replicating`, `retrying` (the replica fails; retried
    /// with back-off), `error` (a local failure stopped replication), `final sync`, `stopped`,
    /// `failed`.
    pub state: String,
    /// The replication engine's figures (positions, times, counters, current failures).
    pub engine: Status,
    /// Current sizes of the database file and its WAL (`None`: absent).
    pub db_size: Option<u64>,
    pub wal_size: Option<u64>,
    /// The start-up failure or final sync failure, when there is one.
    pub error: Option<String>,
    /// What the start-up restore did (`restored TXID 0000000000000012`, `kept the existing file`...).
    pub restore: Option<String>,
    /// How long the start-up restore took, when one ran.
    pub restore_took: Option<Duration>,
    /// The final sync's duration and outcome (true: everything committed reached the replica).
    pub final_sync: Option<(Duration, bool)>,
}

impl DatabaseRow {
    /// Committed transactions not yet on the replica.
    pub fn lag(&self) -> u64 {
        self.engine.lag_txids()
    }

    /// The message of what is wrong now, if anything.
    pub fn last_error(&self) -> Option<String> {
        self.error
            .clone()
            .or_else(|| self.engine.last_error.clone())
    }

    /// The failure going on now (local first: it stops replication), if any.
    pub fn failure(&self) -> Option<&Failure> {
        self.engine
            .local_failure
            .as_ref()
            .or(self.engine.replica_failure.as_ref())
    }
}

/// Where the status comes from (the supervisor).
pub trait StatusSource: Send + Sync {
    fn snapshot(&self) -> Snapshot;
    /// The longest a committed transaction may wait for its upload before the health check fails.
    fn health_upload_lag(&self) -> Duration;
    /// Where `svc ...` requests go ([`svc`]); `None` where there are no services to control.
    fn services(&self) -> Option<svc::Handle> {
        None
    }
}

/// Everything the control socket asks of the supervisor: its status and Litestream's commands.
pub trait Daemon: StatusSource + commands::Commands {}

impl<T: StatusSource + commands::Commands> Daemon for T {}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(
        "no litevisor is listening on {0} (is it running? its socket can be named with {SOCKET_ENV} or --socket)"
    )]
    NotRunning(PathBuf),
    #[error("{0}")]
    Refused(String),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The bound control socket. Dropping it removes the socket file, if the file is still the one it
/// created (another litevisor may have replaced a socket it thought stale).
pub struct Server {
    listener: Option<StdListener>,
    path: PathBuf,
    identity: (u64, u64),
}

impl Server {
    /// Binds the socket at `path`. Returns `None` (after a warning) when it cannot: another
    /// litevisor listens there, the path is not a socket, or the directory is not usable.
    /// Call it before other threads create files (it narrows the umask for the bind).
    pub fn bind(path: &Path) -> Option<Server> {
        match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!("control socket {}: {e}; running without it", path.display());
                return None;
            }
            Ok(meta) if !meta.file_type().is_socket() => {
                tracing::warn!(
                    "control socket {} exists and is not a socket; running without it",
                    path.display()
                );
                return None;
            }
            Ok(_) => match StdStream::connect(path) {
                Ok(_) => {
                    tracing::warn!(
                        "another litevisor is listening on {}; running without a control socket (set {SOCKET_ENV} to give this one its own)",
                        path.display()
                    );
                    return None;
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    tracing::info!("replacing stale control socket {}", path.display());
                    if let Err(e) = std::fs::remove_file(path)
                        && e.kind() != io::ErrorKind::NotFound
                    {
                        tracing::warn!(
                            "cannot remove stale control socket {}: {e}; running without it",
                            path.display()
                        );
                        return None;
                    }
                }
                Err(e) => {
                    tracing::warn!("control socket {}: {e}; running without it", path.display());
                    return None;
                }
            },
        }
        // The socket file is created by bind with the umask applied: narrow it so the file is never
        // reachable by others, even for an instant.
        // SAFETY: umask only swaps the process's file creation mask.
        let old = unsafe { libc::umask(0o177) };
        let bound = StdListener::bind(path);
        // SAFETY: as above, restoring the previous mask.
        unsafe { libc::umask(old) };
        let listener = match bound {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(
                    "cannot create control socket {}: {e}; running without it",
                    path.display()
                );
                return None;
            }
        };
        let meta = std::fs::metadata(path).ok();
        if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
            tracing::warn!("chmod 0600 {}: {e}", path.display());
        }
        if let Err(e) = listener.set_nonblocking(true) {
            tracing::warn!("control socket {}: {e}; running without it", path.display());
            let _ = std::fs::remove_file(path);
            return None;
        }
        tracing::info!("control socket: {}", path.display());
        Some(Server {
            listener: Some(listener),
            path: path.to_path_buf(),
            identity: meta.map_or((0, 0), |m| (m.dev(), m.ino())),
        })
    }

    /// Answers requests until the runtime drops the task. Must run inside a tokio runtime.
    pub fn serve(&mut self, source: Arc<dyn Daemon>) -> Option<impl Future<Output = ()> + use<>> {
        let listener = self.listener.take()?;
        let listener = match tokio::net::UnixListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(
                    "control socket {}: {e}; running without it",
                    self.path.display()
                );
                return None;
            }
        };
        let path = Arc::new(self.path.clone());
        Some(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        tokio::spawn(answer(stream, Arc::clone(&source), Arc::clone(&path)));
                    }
                    Err(e) => {
                        // Out of descriptors and the like: back off instead of spinning.
                        tracing::debug!("control socket accept: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| (m.dev(), m.ino()) == self.identity);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

async fn answer(mut stream: tokio::net::UnixStream, source: Arc<dyn Daemon>, path: Arc<PathBuf>) {
    let request = tokio::time::timeout(REQUEST_PATIENCE, read_line(&mut stream)).await;
    // Checked once the request is read, so the client is not cut off while it still writes.
    // The socket's mode already keeps others out; this holds even if someone loosens it.
    // SAFETY: geteuid cannot fail and touches no memory.
    let own = unsafe { libc::geteuid() };
    match stream.peer_cred() {
        Ok(cred) if cred.uid() == own || cred.uid() == 0 => {}
        peer => {
            let who =
                peer.map_or_else(|e| format!("unknown ({e})"), |c| format!("uid {}", c.uid()));
            tracing::warn!(
                "control socket {}: refused a connection from {who}",
                path.display()
            );
            let refusal =
                format!("error\nrefused: {who} is not litevisor's user (uid {own}) or root\n");
            let _ = stream.write_all(refusal.as_bytes()).await;
            let _ = stream.shutdown().await;
            return;
        }
    }
    let reply = match request {
        Ok(Ok(line)) if let Some(request) = commands::Request::parse(&line) => {
            let listed = matches!(request.verb, commands::Verb::List | commands::Verb::Info);
            let databases = if listed {
                source.snapshot().databases
            } else {
                Vec::new()
            };
            commands::answer(request, &*source, databases, &path).await
        }
        Ok(Ok(line)) => match line.split_whitespace().collect::<Vec<_>>().as_slice() {
            ["status"] => render_text(&source.snapshot()),
            ["status", "json"] => render_json(&source.snapshot()),
            ["health"] => health::render(&health::problems(
                &source.snapshot(),
                source.health_upload_lag(),
            )),
            ["svc", rest @ ..] => svc::answer(rest, source.services()).await,
            ["reload"] => svc::reload(source.services()).await,
            ["register", rest @ ..] => svc::database(true, rest, source.services()).await,
            ["unregister", rest @ ..] => svc::database(false, rest, source.services()).await,
            _ => format!(
                "error: unknown request {line:?} (use `status`, `status json` or `health`)\n"
            ),
        },
        Ok(Err(e)) => {
            tracing::debug!("control socket read: {e}");
            return;
        }
        Err(_) => return,
    };
    let _ = stream.write_all(reply.as_bytes()).await;
    let _ = stream.shutdown().await;
}

async fn read_line(stream: &mut tokio::net::UnixStream) -> io::Result<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 64];
    loop {
        let n = stream.read(&mut chunk).await?;
        buf.extend_from_slice(&chunk[..n]);
        if n == 0 || buf.contains(&b'\n') || buf.len() > MAX_REQUEST {
            break;
        }
    }
    let line = buf.split(|&b| b == b'\n').next().unwrap_or_default();
    Ok(String::from_utf8_lossy(line).trim().to_owned())
}

/// Asks the litevisor listening on `path`; returns its answer.
pub fn query(path: &Path, request: &str) -> Result<String, ControlError> {
    query_within(path, request, Duration::from_secs(10))
}

/// [`query`], waiting up to `patience` for the answer (a `sync -wait` may take long).
pub fn query_within(
    path: &Path,
    request: &str,
    patience: Duration,
) -> Result<String, ControlError> {
    let io_err = |op| {
        move |source| ControlError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    };
    let mut stream = match StdStream::connect(path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(ControlError::NotRunning(path.to_path_buf()));
        }
        Err(e) => return Err(io_err("connect to")(e)),
    };
    let patience = Some(patience);
    stream
        .set_read_timeout(patience)
        .map_err(io_err("set timeout on"))?;
    stream
        .set_write_timeout(patience)
        .map_err(io_err("set timeout on"))?;
    stream
        .write_all(format!("{request}\n").as_bytes())
        .map_err(io_err("write to"))?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(io_err("read from"))?;
    // A refused connection (another user's) is answered `error` whatever the request.
    if let Some(why) = answer.strip_prefix("error\nrefused: ") {
        return Err(ControlError::Refused(format!(
            "refused: {}",
            why.trim_end()
        )));
    }
    Ok(answer)
}

fn time_text(t: Option<SystemTime>, now: SystemTime) -> String {
    match t {
        None => "-".to_owned(),
        Some(t) => {
            let ago = now.duration_since(t).unwrap_or_default().as_secs();
            format!("{} ({ago}s ago)", rfc3339::format_utc(t))
        }
    }
}

fn size_text(size: Option<u64>) -> String {
    size.map_or("-".to_owned(), |s| format!("{s} bytes"))
}

fn uptime_text(since: Option<SystemTime>, now: SystemTime) -> String {
    let Some(since) = since else {
        return "-".to_owned();
    };
    let s = now.duration_since(since).unwrap_or_default().as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        3600..86400 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86400, s % 86400 / 3600),
    }
}

/// The human-readable answer: one table of services, then one block per database.
pub fn render_text(s: &Snapshot) -> String {
    let now = SystemTime::now();
    let mut out = String::new();
    if s.services.is_empty() {
        out.push_str("no services\n");
    } else {
        let mut rows = vec![
            [
                "SERVICE",
                "TYPE",
                "STATE",
                "PID",
                "UPTIME",
                "RESTARTS",
                "LAST EXIT",
            ]
            .map(String::from)
            .to_vec(),
        ];
        for svc in &s.services {
            rows.push(vec![
                if svc.main {
                    format!("{} (main)", svc.name)
                } else {
                    svc.name.clone()
                },
                svc.kind.to_owned(),
                svc.state.to_owned(),
                svc.pid.map_or("-".to_owned(), |p| p.to_string()),
                uptime_text(svc.since, now),
                svc.restarts.to_string(),
                svc.last_exit.clone().unwrap_or_else(|| "-".to_owned()),
            ]);
        }
        out.push_str(&tabulate(&rows));
    }
    for db in &s.databases {
        out.push('\n');
        let e = &db.engine;
        let errors = match db.failure() {
            Some(f) => format!(
                "{} ({} since {}, {} attempt(s))",
                e.replica_errors,
                f.kind,
                rfc3339::format_utc(f.since),
                f.attempts
            ),
            None => e.replica_errors.to_string(),
        };
        let lines = [
            ("database", db.path.clone()),
            ("replica", db.replica.clone()),
            ("state", db.state.clone()),
            ("local txid", format!("{:016x}", e.txid)),
            ("replica txid", format!("{:016x}", e.replica_txid)),
            (
                "lag",
                format!("{} txid(s), {:.1}s", db.lag(), e.lag_seconds(now)),
            ),
            ("db size", size_text(db.db_size)),
            ("wal size", size_text(db.wal_size)),
            ("last sync", time_text(e.last_sync, now)),
            ("last upload", time_text(e.last_upload, now)),
            ("replica errors", errors),
            (
                "last error",
                db.last_error().unwrap_or_else(|| "-".to_owned()),
            ),
            (
                "restore",
                db.restore.clone().unwrap_or_else(|| "-".to_owned()),
            ),
        ];
        for (k, v) in lines {
            out.push_str(&format!("{k:<15} {v}\n"));
        }
    }
    out
}

/// The machine-readable answer (one JSON object, TXIDs as 16-digit hex strings like Litestream's).
pub fn render_json(s: &Snapshot) -> String {
    let now = SystemTime::now();
    let opt_str = |v: &Option<String>| v.as_deref().map_or("null".to_owned(), json_str);
    let opt_time =
        |t: Option<SystemTime>| t.map_or("null".to_owned(), |t| json_str(&rfc3339::format_utc(t)));
    let opt_num = |v: Option<u64>| v.map_or("null".to_owned(), |v| v.to_string());
    let services: Vec<String> = s
        .services
        .iter()
        .map(|svc| {
            let uptime = svc.since.map(|t| now.duration_since(t).unwrap_or_default().as_secs());
            format!(
                "{{\"name\":{},\"type\":{},\"main\":{},\"state\":{},\"ready\":{},\"pid\":{},\"uptime_seconds\":{},\"restarts\":{},\"last_exit\":{},\"last_exit_code\":{}}}",
                json_str(&svc.name),
                json_str(svc.kind),
                svc.main,
                json_str(svc.state),
                svc.ready,
                svc.pid.map_or("null".to_owned(), |p| p.to_string()),
                opt_num(uptime),
                svc.restarts,
                opt_str(&svc.last_exit),
                svc.last_exit_code.map_or("null".to_owned(), |c| c.to_string()),
            )
        })
        .collect();
    let databases: Vec<String> = s
        .databases
        .iter()
        .map(|db| {
            let e = &db.engine;
            let failure = db.failure().map_or("null".to_owned(), |f| {
                format!(
                    "{{\"kind\":{},\"since\":{},\"attempts\":{},\"permanent\":{},\"message\":{}}}",
                    json_str(f.kind),
                    json_str(&rfc3339::format_utc(f.since)),
                    f.attempts,
                    f.permanent,
                    json_str(&f.message)
                )
            });
            format!(
                "{{\"path\":{},\"replica\":{},\"state\":{},\"txid\":\"{:016x}\",\"replica_txid\":\"{:016x}\",\"lag\":{},\"lag_seconds\":{:.3},\"db_size\":{},\"wal_size\":{},\"last_sync\":{},\"last_upload\":{},\"replica_errors\":{},\"failure\":{},\"last_error\":{},\"restore\":{}}}",
                json_str(&db.path),
                json_str(&db.replica),
                json_str(&db.state),
                e.txid,
                e.replica_txid,
                db.lag(),
                e.lag_seconds(now),
                opt_num(db.db_size),
                opt_num(db.wal_size),
                opt_time(e.last_sync),
                opt_time(e.last_upload),
                e.replica_errors,
                failure,
                opt_str(&db.last_error()),
                opt_str(&db.restore)
            )
        })
        .collect();
    format!(
        "{{\"services\":[{}],\"databases\":[{}]}}\n",
        services.join(","),
        databases.join(",")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Snapshot {
        Snapshot {
            services: vec![ServiceRow {
                name: "app".into(),
                kind: "longrun",
                main: true,
                state: "running",
                pid: Some(42),
                restarts: 1,
                last_exit: Some("exited with status 3".into()),
                last_exit_code: Some(3),
                since: None,
                ready: true,
            }],
            databases: vec![DatabaseRow {
                path: "/data/a \"b\".db".into(),
                replica: "file:///r".into(),
                state: "replicating".into(),
                engine: Status {
                    txid: 12,
                    replica_txid: 10,
                    ..Status::default()
                },
                ..DatabaseRow::default()
            }],
        }
    }

    #[test]
    fn json_is_escaped_and_carries_the_lag() {
        let j = render_json(&sample());
        assert!(j.contains("\"path\":\"/data/a \\\"b\\\".db\""), "{j}");
        assert!(j.contains("\"txid\":\"000000000000000c\""), "{j}");
        assert!(j.contains("\"lag\":2"), "{j}");
        assert!(j.contains("\"pid\":42"), "{j}");
        assert!(j.contains("\"last_sync\":null"), "{j}");
    }

    #[test]
    fn text_names_every_service_and_database() {
        let t = render_text(&sample());
        assert!(t.contains("app (main)") && t.contains("running"), "{t}");
        assert!(t.contains("lag             2 txid(s), 0.0s"), "{t}");
    }

    #[test]
    fn a_live_socket_is_left_alone_and_a_stale_one_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lv.sock");
        let first = Server::bind(&path).expect("bind");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(
            Server::bind(&path).is_none(),
            "a live socket was taken over"
        );
        // Simulate a SIGKILLed litevisor: the listener closes, the file stays.
        let stale = StdListener::bind(dir.path().join("stale.sock")).unwrap();
        drop(stale);
        let second = Server::bind(&dir.path().join("stale.sock"));
        assert!(second.is_some(), "a stale socket was not replaced");
        drop(first);
        assert!(!path.exists(), "the socket file outlived its server");
    }
}
