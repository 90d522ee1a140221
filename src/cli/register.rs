//! `litevisor register -replica URL DB_PATH` and `litevisor unregister DB_PATH`, Litestream 0.5.17's
//! commands with its flags and output: add a database to the running litevisor's replication (it
//! is restored first if the file is missing and the replica has data), or take one out after its
//! final sync. Work against `replicate` and the supervisor alike, over the control socket.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::control;
use crate::text::json_str;

#[derive(clap::Args, Debug)]
pub struct RegisterArgs {
    /// Path to the SQLite database file.
    db_path: PathBuf,
    /// Replica destination URL (e.g., s3://bucket/prefix, file:///backup/path). Required.
    #[arg(long, value_name = "URL")]
    replica: Option<String>,
    /// Maximum time to wait in seconds (accepted as Litestream spells it; must be > 0).
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    timeout: i64,
    /// Path to control socket (default: as for `status`).
    #[arg(long, value_name = "PATH", env = control::SOCKET_ENV)]
    socket: Option<PathBuf>,
    /// Output raw JSON instead of human-readable text.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
pub struct UnregisterArgs {
    /// Path to the SQLite database file.
    db_path: PathBuf,
    /// Maximum time to wait in seconds (accepted as Litestream spells it; must be > 0).
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    timeout: i64,
    /// Path to control socket (default: as for `status`).
    #[arg(long, value_name = "PATH", env = control::SOCKET_ENV)]
    socket: Option<PathBuf>,
    /// Preview what would be unregistered without changing the daemon.
    #[arg(long)]
    dry_run: bool,
    /// Output raw JSON instead of human-readable text.
    #[arg(long)]
    json: bool,
}

/// The path as the server must see it: absolute, without whitespace (one-line protocol).
fn request_path(path: &Path) -> anyhow::Result<String> {
    let path = std::path::absolute(path).with_context(|| format!("{}", path.display()))?;
    let text = path.to_string_lossy().into_owned();
    if text.chars().any(char::is_whitespace) {
        bail!("{text}: a path with whitespace cannot be sent over the control socket");
    }
    Ok(text)
}

/// Sends `request` and waits up to `timeout` seconds (plus a little) for the answer; the server's
/// `ok: WORD` gives WORD, its `error: ...` an error.
fn ask(socket: &Path, request: &str, verb: &str, timeout: i64) -> anyhow::Result<String> {
    let patience = std::time::Duration::from_secs(timeout.max(1) as u64 + 5);
    let answer = control::query_within(socket, request, patience)?;
    match answer.trim_end().strip_prefix("ok: ") {
        Some(word) => Ok(word.to_owned()),
        None => bail!(
            "{verb} failed: {}",
            answer.trim_end().trim_start_matches("error: ")
        ),
    }
}

pub fn register(args: RegisterArgs) -> anyhow::Result<i32> {
    let Some(replica) = args.replica else {
        bail!(
            "-replica is required. Try: litevisor register -replica s3://bucket/prefix /path/to/db"
        );
    };
    if args.timeout <= 0 {
        bail!("timeout must be greater than 0");
    }
    let path = request_path(&args.db_path)?;
    if replica.chars().any(char::is_whitespace) {
        bail!("{replica}: a replica URL with whitespace cannot be sent over the control socket");
    }
    let socket = control::path::resolve(args.socket)?;
    let status = ask(
        &socket,
        &format!("register {path} {replica}"),
        "register",
        args.timeout,
    )?;
    let socket = socket.display().to_string();
    if args.json {
        println!(
            "{{\n  \"status\": {},\n  \"db_path\": {},\n  \"replica\": {},\n  \"socket\": {}\n}}",
            json_str(&status),
            json_str(&path),
            json_str(&replica),
            json_str(&socket)
        );
    } else {
        let shown = if status == "already_exists" {
            "already registered"
        } else {
            &status
        };
        println!("status: {shown}\ndb_path: {path}\nreplica: {replica}\nsocket: {socket}");
    }
    Ok(0)
}

pub fn unregister(args: UnregisterArgs) -> anyhow::Result<i32> {
    if args.timeout <= 0 {
        bail!("timeout must be greater than 0");
    }
    let path = request_path(&args.db_path)?;
    let socket = control::path::resolve(args.socket)?;
    if args.dry_run {
        println!("Dry run: unregister request preview");
        println!("  database: {path}");
        println!("  socket: {}", socket.display());
        println!("  replicas: daemon-managed replica for this database");
        println!(
            "  final sync: daemon close will sync the database and replica before the command completes"
        );
        println!("  timeout: {}s", args.timeout);
        println!("No unregister request was sent.");
        return Ok(0);
    }
    let txid = ask(
        &socket,
        &format!("unregister {path}"),
        "unregister",
        args.timeout,
    )?;
    let socket = socket.display().to_string();
    if args.json {
        println!(
            "{{\n  \"status\": \"unregistered\",\n  \"db_path\": {},\n  \"final_txid\": {txid},\n  \"socket\": {}\n}}",
            json_str(&path),
            json_str(&socket)
        );
    } else {
        println!("status: unregistered\ndb_path: {path}\nfinal_txid: {txid}\nsocket: {socket}");
    }
    Ok(0)
}
