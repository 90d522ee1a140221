//! Litestream's control commands against the running litevisor (`replicate` or the supervisor):
//! `sync [-wait] [-timeout SECONDS] [-json] DB_PATH`, `stop DB_PATH`, `start DB_PATH`, `list`,
//! `info`, each with `-socket PATH`, `-timeout` and `-json` as Litestream spells them; and
//! `version`. The answers are rendered by the server ([`crate::control::commands`]); this file
//! sends the request and prints the answer: stdout and exit 0, or stderr and exit 1.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::parse_duration;
use crate::control::commands::{Request, Verb};
use crate::control::{self, SOCKET_ENV};

#[derive(clap::Args, Debug)]
pub struct SocketArgs {
    /// The running litevisor's control socket (see `litevisor status --help` for the default).
    #[arg(long, value_name = "PATH", env = SOCKET_ENV)]
    socket: Option<PathBuf>,
    /// Print Litestream's JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
pub struct DbCommandArgs {
    #[command(flatten)]
    socket: SocketArgs,
    /// How long to wait, in seconds (or a duration such as 2m).
    #[arg(long, value_name = "SECONDS", default_value = "30", value_parser = parse_duration)]
    timeout: Duration,
    /// The database, as configured (a relative path or a symlink to it works too).
    #[arg(value_name = "DB_PATH")]
    db_path: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct SyncArgs {
    /// Return only when the replica holds every transaction committed before the call.
    #[arg(long)]
    wait: bool,
    #[command(flatten)]
    db: DbCommandArgs,
}

#[derive(clap::Args, Debug)]
pub struct DaemonArgs {
    #[command(flatten)]
    socket: SocketArgs,
    /// How long to wait for the answer, in seconds.
    #[arg(long, value_name = "SECONDS", default_value = "10", value_parser = parse_duration)]
    timeout: Duration,
}

pub fn sync(args: SyncArgs) -> anyhow::Result<i32> {
    db_command(Verb::Sync, args.wait, args.db)
}

pub fn stop(args: DbCommandArgs) -> anyhow::Result<i32> {
    db_command(Verb::Stop, false, args)
}

pub fn start(args: DbCommandArgs) -> anyhow::Result<i32> {
    db_command(Verb::Start, false, args)
}

pub fn list(args: DaemonArgs) -> anyhow::Result<i32> {
    ask(Verb::List, false, None, args.timeout, args.socket)
}

pub fn info(args: DaemonArgs) -> anyhow::Result<i32> {
    ask(Verb::Info, false, None, args.timeout, args.socket)
}

/// `litevisor version`: the bare version, as `litestream version` prints it.
pub fn version() -> anyhow::Result<i32> {
    println!("{}", env!("CARGO_PKG_VERSION"));
    Ok(0)
}

/// Prints an answer whose first word says `ok` (stdout, exit 0) or not (stderr, exit 1).
pub(super) fn relay(answer: &str) -> i32 {
    if answer.starts_with("ok") {
        print!("{answer}");
        0
    } else {
        eprint!("{answer}");
        1
    }
}

fn db_command(verb: Verb, wait: bool, args: DbCommandArgs) -> anyhow::Result<i32> {
    // The server may run elsewhere in the tree: it gets the path absolute.
    let db = std::path::absolute(&args.db_path).unwrap_or(args.db_path);
    ask(verb, wait, Some(db), args.timeout, args.socket)
}

fn ask(
    verb: Verb,
    wait: bool,
    db: Option<PathBuf>,
    timeout: Duration,
    socket: SocketArgs,
) -> anyhow::Result<i32> {
    let path = control::path::resolve(socket.socket)?;
    let request = Request {
        verb,
        json: socket.json,
        wait,
        timeout,
        db,
    };
    // The server answers once the work is done or its timeout passed: give it a little more.
    let answer = control::query_within(&path, &request.line(), timeout + Duration::from_secs(5))?;
    match answer.split_once('\n') {
        Some(("ok", body)) => {
            print!("{body}");
            Ok(0)
        }
        Some(("error", message)) => {
            eprint!("litevisor: error: {message}");
            Ok(1)
        }
        _ => {
            eprintln!(
                "litevisor: error: unexpected answer from {}: {answer:?}",
                path.display()
            );
            Ok(1)
        }
    }
}
