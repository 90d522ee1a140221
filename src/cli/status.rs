//! `litevisor status [--json]`: asks the running supervisor, over its control socket, for its
//! services (state, pid, restarts) and databases (position, replica position, lag, last sync and
//! upload, replica errors) and prints the answer. Exits 1 when no litevisor is listening.

use std::path::PathBuf;

use crate::control;

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
}

pub fn run(args: StatusArgs) -> anyhow::Result<i32> {
    let path = match args.socket {
        Some(path) => path,
        None => control::path::client_path()?,
    };
    let request = if args.json { "status json" } else { "status" };
    let answer = control::query(&path, request)?;
    print!("{answer}");
    Ok(0)
}
