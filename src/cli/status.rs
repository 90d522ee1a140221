//! `litevisor status [--json]`: asks the running supervisor, over its control socket, for its
//! services (state, pid, restarts) and databases (position, replica position, lag, last sync and
//! upload, replica errors) and prints the answer. Exits 1 when no litevisor is listening.
//!
//! `litevisor status -config FILE [DB_PATH]` is Litestream's offline form: no litevisor needed, it
//! reads the configuration and each database's local replication state (database, status, local
//! TXID, WAL size).

use std::path::PathBuf;

use super::config_file::ConfigFile;
use crate::control;
use crate::replication::db;
use crate::replication::meta::Meta;
use crate::text::tabulate;

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// The supervisor's control socket (default: the one live litevisor of this user: PID 1's
    /// /run/litevisor.sock, or $XDG_RUNTIME_DIR/litevisor/PID.sock, /run/litevisor/PID.sock for
    /// root, /tmp/litevisor-UID/PID.sock).
    #[arg(long, value_name = "PATH", env = control::SOCKET_ENV)]
    socket: Option<PathBuf>,
    #[command(flatten)]
    file: ConfigFile,
    /// Only this database (offline form).
    #[arg(value_name = "DB_PATH")]
    db_path: Option<PathBuf>,
}

/// The offline table, in Litestream's columns.
fn offline(args: &StatusArgs) -> anyhow::Result<i32> {
    let databases = match &args.db_path {
        Some(path) => vec![args.file.find(path)?],
        None => args.file.databases()?.databases,
    };
    let mut rows = vec![
        ["database", "status", "local txid", "wal size"]
            .map(String::from)
            .to_vec(),
    ];
    for database in &databases {
        let meta = Meta::new(
            database
                .meta_path
                .clone()
                .unwrap_or_else(|| db::meta_dir(&database.path)),
        );
        let newest = meta.l0_txids().ok().and_then(|t| t.last().copied());
        let status = match (database.path.exists(), newest) {
            (false, _) => "no database",
            (true, None) => "not initialized",
            (true, Some(_)) => "ok",
        };
        let wal = std::fs::metadata(db::wal_path(&database.path)).map_or(0, |m| m.len());
        rows.push(vec![
            database.path.display().to_string(),
            status.to_string(),
            newest.map_or("-".to_string(), |t| format!("{t:016x}")),
            human_size(wal),
        ]);
    }
    print!("{}", tabulate(&rows));
    Ok(0)
}

/// Sizes as Litestream prints them (SI units).
fn human_size(bytes: u64) -> String {
    match bytes {
        0..1000 => format!("{bytes} B"),
        1000..1_000_000 => format!("{:.0} kB", bytes as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} MB", bytes as f64 / 1e6),
        _ => format!("{:.1} GB", bytes as f64 / 1e9),
    }
}

pub fn run(args: StatusArgs) -> anyhow::Result<i32> {
    if args.file.config.is_some() || args.db_path.is_some() {
        return offline(&args);
    }
    let path = control::path::resolve(args.socket)?;
    let request = if args.json { "status json" } else { "status" };
    let answer = control::query(&path, request)?;
    print!("{answer}");
    Ok(0)
}
