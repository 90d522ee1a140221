//! `litevisor reload`: asks the running supervisor, over its control socket, to re-read its
//! configuration and apply it (as SIGHUP does): added services start, removed ones stop, changed
//! ones restart, unchanged ones keep running. Prints what changed; exit 1 with the errors when the
//! new configuration was refused (nothing changed then) or no litevisor answers.

use std::path::PathBuf;

use crate::control;

#[derive(clap::Args, Debug)]
pub struct ReloadArgs {
    /// The supervisor's control socket (default: as for `status`).
    #[arg(long, value_name = "PATH", env = control::SOCKET_ENV)]
    socket: Option<PathBuf>,
}

pub fn run(args: ReloadArgs) -> anyhow::Result<i32> {
    let path = control::path::resolve(args.socket)?;
    let answer = control::query(&path, "reload")?;
    Ok(super::control::relay(&answer))
}
