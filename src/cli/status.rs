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
    /// The supervisor's control socket (default: the first that exists of /run/litevisor.sock,
    /// $XDG_RUNTIME_DIR/litevisor.sock, /tmp/litevisor-$UID.sock).
    #[arg(long, value_name = "PATH", env = control::SOCKET_ENV)]
    socket: Option<PathBuf>,
}

pub fn run(args: StatusArgs) -> anyhow::Result<i32> {
    let path = args.socket.unwrap_or_else(control::client_socket_path);
    let request = if args.json { "status json" } else { "status" };
    let answer = control::query(&path, request)?;
    print!("{answer}");
    Ok(0)
}
