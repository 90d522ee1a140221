//! `litevisor svc up|down|restart|once|kill -s SIGNAL NAME`: asks the running supervisor, over its
//! control socket, to bring a service up or down, restart it, run it once or signal it (s6-svc's
//! `-u`, `-d`, `-r`, `-o`, `-s`). Exit 0 when the supervisor accepted the request, 1 otherwise (an
//! unknown service, a bad signal, no litevisor listening); the answer is printed either way.

use std::path::PathBuf;

use crate::control;

#[derive(clap::Args, Debug)]
pub struct SvcArgs {
    #[command(subcommand)]
    verb: SvcVerb,
    /// The supervisor's control socket (default: as for `status`).
    #[arg(long, global = true, value_name = "PATH", env = control::SOCKET_ENV)]
    socket: Option<PathBuf>,
}

#[derive(clap::Subcommand, Debug)]
enum SvcVerb {
    /// Bring the service up (its dependencies first) and supervise it again.
    Up { name: String },
    /// Stop the service (its dependents first) and keep it down until `up`.
    Down { name: String },
    /// Stop the service and start it again (its dependents keep running).
    Restart { name: String },
    /// Bring the service up, but do not restart it when it ends.
    Once { name: String },
    /// Send a signal to the service's process group.
    Kill {
        /// The signal: a name (TERM, SIGHUP) or a number.
        #[arg(short = 's', long = "signal", value_name = "SIGNAL")]
        signal: String,
        name: String,
    },
}

pub fn run(args: SvcArgs) -> anyhow::Result<i32> {
    let path = control::path::resolve(args.socket)?;
    let request = match &args.verb {
        SvcVerb::Up { name } => format!("svc up {name}"),
        SvcVerb::Down { name } => format!("svc down {name}"),
        SvcVerb::Restart { name } => format!("svc restart {name}"),
        SvcVerb::Once { name } => format!("svc once {name}"),
        SvcVerb::Kill { signal, name } => format!("svc kill {signal} {name}"),
    };
    let answer = control::query(&path, &request)?;
    Ok(super::control::relay(&answer))
}
