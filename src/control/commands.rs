//! Litestream's control commands over the control socket: `sync [-wait]`, `stop DB`, `start DB`,
//! `list` and `info`, with Litestream 0.5.17's text and JSON answers. This file owns the request
//! line, the reply, and the [`Commands`] the supervisor implements behind them.
//!
//! Request line: `<verb> <json 0|1> <wait 0|1> <timeout ms> <path or ->`; the path is the rest of
//! the line, so it may hold spaces. Reply: a first line `ok` or `error`, then the text to show.
//! The answer is rendered here, on the server, so the client stays a pipe.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use crate::replica::rfc3339;
use crate::text::json_str;

/// What a command's future gives: the answer's fields, or the message of its failure.
pub type Answer<T> = Pin<Box<dyn Future<Output = Result<T, String>> + Send>>;

/// What the running supervisor does for the commands. Each call returns at once; the work (a sync,
/// a final sync) runs off the runtime and the future settles when it is done or `timeout` passed.
pub trait Commands: Send + Sync {
    /// When this litevisor started.
    fn started_at(&self) -> SystemTime;
    /// Syncs `db`'s WAL into a new L0 now; with `wait`, until the replica holds it too.
    fn sync(&self, db: &Path, wait: bool, timeout: Duration) -> Answer<Synced>;
    /// Final sync, then no replication of `db` until [`Commands::start_db`].
    fn stop_db(&self, db: &Path, timeout: Duration) -> Answer<Changed>;
    /// Replicates `db` again after [`Commands::stop_db`].
    fn start_db(&self, db: &Path, timeout: Duration) -> Answer<Changed>;
}

/// A forced sync's outcome.
#[derive(Clone, Debug)]
pub struct Synced {
    pub db: PathBuf,
    pub txid: u64,
    /// With `-wait`: the replica's TXID after the upload.
    pub replica_txid: Option<u64>,
    pub took: Duration,
}

/// A `stop` or `start` outcome, in Litestream's words.
#[derive(Clone, Debug)]
pub struct Changed {
    /// `stopped`, `already_stopped`, `started`, `already_running`.
    pub status: &'static str,
    pub db: PathBuf,
    /// `stopped` or `running`.
    pub state: &'static str,
    pub txid: u64,
}

/// One parsed request line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub verb: Verb,
    pub json: bool,
    pub wait: bool,
    pub timeout: Duration,
    pub db: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Sync,
    Stop,
    Start,
    List,
    Info,
}

impl Verb {
    fn word(self) -> &'static str {
        match self {
            Verb::Sync => "sync",
            Verb::Stop => "stop",
            Verb::Start => "start",
            Verb::List => "list",
            Verb::Info => "info",
        }
    }
}

impl Request {
    /// The line the client sends.
    pub fn line(&self) -> String {
        let db = self
            .db
            .as_ref()
            .map_or("-".to_string(), |p| p.display().to_string());
        format!(
            "{} {} {} {} {db}",
            self.verb.word(),
            u8::from(self.json),
            u8::from(self.wait),
            self.timeout.as_millis()
        )
    }

    /// Parses a request line; `None` when it is not one of these commands.
    pub fn parse(line: &str) -> Option<Request> {
        let mut parts = line.splitn(5, ' ');
        let verb = match parts.next()? {
            "sync" => Verb::Sync,
            "stop" => Verb::Stop,
            "start" => Verb::Start,
            "list" => Verb::List,
            "info" => Verb::Info,
            _ => return None,
        };
        let flag = |p: Option<&str>| match p? {
            "0" => Some(false),
            "1" => Some(true),
            _ => None,
        };
        let json = flag(parts.next())?;
        let wait = flag(parts.next())?;
        let timeout = Duration::from_millis(parts.next()?.parse().ok()?);
        let db = match parts.next()? {
            "-" => None,
            path => Some(PathBuf::from(path)),
        };
        Some(Request {
            verb,
            json,
            wait,
            timeout,
            db,
        })
    }
}

/// Answers one request; the reply's first line says `ok` or `error`.
pub async fn answer(
    request: Request,
    commands: &dyn Commands,
    databases: Vec<crate::control::DatabaseRow>,
    socket: &Path,
) -> String {
    let json = request.json;
    let needs_db = matches!(request.verb, Verb::Sync | Verb::Stop | Verb::Start);
    let db = match (&request.db, needs_db) {
        (Some(db), true) => db.clone(),
        (None, true) => return failure("a database path is required"),
        _ => PathBuf::new(),
    };
    let result = match request.verb {
        Verb::Info => Ok(info(commands.started_at(), databases.len(), json)),
        Verb::List => Ok(list(&databases, json)),
        Verb::Sync => commands
            .sync(&db, request.wait, request.timeout)
            .await
            .map(|s| synced(&s, json))
            .map_err(|e| format!("sync failed: {e}")),
        Verb::Stop => commands
            .stop_db(&db, request.timeout)
            .await
            .map(|c| changed(&c, socket, json))
            .map_err(|e| format!("stop failed: {e}")),
        Verb::Start => commands
            .start_db(&db, request.timeout)
            .await
            .map(|c| changed(&c, socket, json))
            .map_err(|e| format!("start failed: {e}")),
    };
    match result {
        Ok(body) => format!("ok\n{body}"),
        Err(e) => failure(&e),
    }
}

fn failure(message: &str) -> String {
    format!("error\n{message}\n")
}

/// Litestream's pretty-printed JSON object (two-space indent), from `(key, JSON value)` pairs.
fn object(fields: &[(&str, String)]) -> String {
    let body: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("  \"{k}\": {v}"))
        .collect();
    format!("{{\n{}\n}}\n", body.join(",\n"))
}

fn info(started: SystemTime, databases: usize, json: bool) -> String {
    let version = env!("CARGO_PKG_VERSION");
    let pid = std::process::id();
    let uptime = SystemTime::now()
        .duration_since(started)
        .unwrap_or_default()
        .as_secs();
    if json {
        return object(&[
            ("version", json_str(version)),
            ("pid", pid.to_string()),
            ("uptime_seconds", uptime.to_string()),
            ("started_at", json_str(&rfc3339::format_utc(started))),
            ("database_count", databases.to_string()),
        ]);
    }
    format!(
        "litevisor {version}\n  PID:        {pid}\n  Uptime:     {uptime}s\n  Started at: {}\n  Databases:  {databases}\n",
        rfc3339::format_utc(started)
    )
}

/// Litestream's state words for the databases' states.
fn list_status(state: &str) -> &str {
    match state {
        "replicating" | "retrying" | "error" => "replicating",
        other => other,
    }
}

fn list(databases: &[crate::control::DatabaseRow], json: bool) -> String {
    if json {
        let rows: Vec<String> = databases
            .iter()
            .map(|d| {
                let mut fields = vec![
                    format!("      \"path\": {}", json_str(&d.path)),
                    format!("      \"status\": {}", json_str(list_status(&d.state))),
                ];
                if let Some(t) = d.engine.last_sync {
                    fields.push(format!(
                        "      \"last_sync_at\": {}",
                        json_str(&rfc3339::format_utc(t))
                    ));
                }
                format!("    {{\n{}\n    }}", fields.join(",\n"))
            })
            .collect();
        return format!("{{\n  \"databases\": [\n{}\n  ]\n}}\n", rows.join(",\n"));
    }
    databases
        .iter()
        .map(|d| {
            let last = d
                .engine
                .last_sync
                .map_or("never".to_string(), rfc3339::format_utc);
            format!(
                "{} [{}] (last sync: {last})\n",
                d.path,
                list_status(&d.state)
            )
        })
        .collect()
}

fn synced(s: &Synced, json: bool) -> String {
    let took = s.took.as_millis().to_string();
    let mut fields = vec![
        ("db_path", json_str(&s.db.display().to_string())),
        ("txid", s.txid.to_string()),
    ];
    if let Some(r) = s.replica_txid {
        fields.push(("replica_txid", r.to_string()));
    }
    fields.push(("duration_ms", took));
    text_or_json(&fields, json)
}

fn changed(c: &Changed, socket: &Path, json: bool) -> String {
    let fields = [
        ("status", json_str(c.status)),
        ("db_path", json_str(&c.db.display().to_string())),
        ("state", json_str(c.state)),
        ("txid", c.txid.to_string()),
        ("socket", json_str(&socket.display().to_string())),
    ];
    text_or_json(&fields, json)
}

/// Litestream's two shapes of one answer: `key: value` lines, or the JSON object.
fn text_or_json(fields: &[(&str, String)], json: bool) -> String {
    if json {
        return object(fields);
    }
    fields
        .iter()
        .map(|(k, v)| format!("{k}: {}\n", v.trim_matches('"')))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_round_trip_with_spaces_in_paths() {
        let r = Request {
            verb: Verb::Sync,
            json: true,
            wait: true,
            timeout: Duration::from_secs(30),
            db: Some(PathBuf::from("/data/my app.db")),
        };
        assert_eq!(r.line(), "sync 1 1 30000 /data/my app.db");
        assert_eq!(Request::parse(&r.line()), Some(r));
        let list = Request::parse("list 0 0 10000 -").unwrap();
        assert_eq!((list.verb, list.db), (Verb::List, None));
        for bad in [
            "status",
            "sync 2 0 1 /a",
            "sync 0 0 x /a",
            "sync 0 0",
            "reset 0 0 1 /a",
        ] {
            assert_eq!(Request::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn answers_have_litestreams_shapes() {
        let s = Synced {
            db: PathBuf::from("/d/a.db"),
            txid: 2,
            replica_txid: Some(2),
            took: Duration::from_millis(1),
        };
        assert_eq!(
            synced(&s, false),
            "db_path: /d/a.db\ntxid: 2\nreplica_txid: 2\nduration_ms: 1\n"
        );
        assert_eq!(
            synced(&s, true),
            "{\n  \"db_path\": \"/d/a.db\",\n  \"txid\": 2,\n  \"replica_txid\": 2,\n  \"duration_ms\": 1\n}\n"
        );
    }
}
