//! `litevisor health`: asks the running supervisor, over its control socket, whether everything is
//! healthy (the same verdict as `GET /healthz`); exit 0 when it is, 1 otherwise (and when no
//! litevisor answers). Made for images without curl: `HEALTHCHECK CMD ["litevisor", "health"]`.

use std::path::PathBuf;

use crate::control;

#[derive(clap::Args, Debug)]
pub struct HealthArgs {
    /// The supervisor's control socket (default: as for `status`).
    #[arg(long, value_name = "PATH", env = control::SOCKET_ENV)]
    socket: Option<PathBuf>,
}

pub fn run(args: HealthArgs) -> anyhow::Result<i32> {
    let path = control::path::resolve(args.socket)?;
    let answer = match control::query(&path, "health") {
        Ok(answer) => answer,
        Err(err) => {
            eprintln!("unhealthy: {err}");
            return Ok(1);
        }
    };
    print!("{answer}");
    Ok(if answer.trim() == "ok" { 0 } else { 1 })
}
