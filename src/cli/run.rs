//! `litevisor [run] [FLAGS] [-- PROG ARGS...]`: the init entry point. With a program after `--` it
//! runs in tini mode ([`crate::init::single`]); without one it supervises the services of the
//! configuration ([`crate::supervisor`]).

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use super::duration::parse_duration;
use crate::init::{ExitCodeMap, single};

/// Default time between SIGTERM and SIGKILL.
const DEFAULT_GRACE: Duration = Duration::from_secs(10);

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Time processes get between SIGTERM and SIGKILL, e.g. `10s`, `500ms`, `2m`, or plain seconds
    /// [env: LITEVISOR_GRACE] [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub grace: Option<Duration>,

    /// Report exit code FROM as TO (TO defaults to 0), e.g. `-e 143` or `--remap-exit 143:0`.
    /// Repeatable; the first matching rule wins.
    #[arg(short = 'e', long = "remap-exit", value_name = "FROM[:TO]", value_parser = ExitCodeMap::parse_rule)]
    pub remap_exit: Vec<(u8, u8)>,

    /// Log level: error, warn, info, debug, trace (or a tracing filter such as `litevisor=debug`)
    /// [env: LITEVISOR_LOG or LOG_LEVEL] [default: warn, and info for databases: restored, replicating,
    /// final sync].
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,

    /// Configuration file of the services to supervise when no program is given after `--`
    /// (default: $LITEVISOR_CONFIG, else /etc/litevisor/litevisor.toml).
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Program and arguments to run as the main child, passed verbatim.
    #[arg(last = true)]
    pub command: Vec<OsString>,
}

pub fn run(args: RunArgs) -> anyhow::Result<i32> {
    init_logging(args.log_level.as_deref());
    let grace = match args.grace {
        Some(grace) => grace,
        None => grace_from_env()?,
    };
    if args.command.is_empty() {
        return supervise(args);
    }
    let options = single::Options {
        command: args.command,
        grace,
        exit_map: ExitCodeMap::new(args.remap_exit),
    };
    match single::run(options) {
        Ok(code) => Ok(code),
        Err(err) => {
            eprintln!("litevisor: error: {err}");
            Ok(err.exit_code())
        }
    }
}

/// Config mode: load and validate the configuration, then supervise its services.
fn supervise(args: RunArgs) -> anyhow::Result<i32> {
    let config = match crate::config::load(args.config.as_deref()) {
        Ok(config) => config,
        Err(err) => {
            for problem in &err.problems {
                eprintln!("{problem}");
            }
            eprintln!(
                "litevisor: error: nothing to supervise: the configuration has the problems above (`litevisor check` lists them); or give a program after `--`"
            );
            return Ok(2);
        }
    };
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    let options = crate::supervisor::Options {
        exit_map: ExitCodeMap::new(args.remap_exit),
        idle_when_empty: false,
    };
    match crate::supervisor::run(config, options) {
        Ok(code) => Ok(code),
        Err(err) => {
            eprintln!("litevisor: error: {err}");
            Ok(1)
        }
    }
}

fn grace_from_env() -> anyhow::Result<Duration> {
    match std::env::var("LITEVISOR_GRACE") {
        Ok(text) => parse_duration(&text).map_err(|err| anyhow::anyhow!("LITEVISOR_GRACE: {err}")),
        Err(_) => Ok(DEFAULT_GRACE),
    }
}

/// Logs go to stderr, quiet (warn) unless asked, except for the few lines of each database's life
/// (restored, replicating, snapshots, final sync done or failed) that an operator needs to see
/// without asking. The level comes from `--log-level`, else `LITEVISOR_LOG`, else Litestream's
/// `LOG_LEVEL`.
const DEFAULT_LOG_FILTER: &str =
    "warn,litevisor::supervisor::database=info,litevisor::replication=info";

fn init_logging(flag: Option<&str>) {
    use tracing_subscriber::filter::LevelFilter;
    let env = |name| {
        std::env::var(name)
            .ok()
            .filter(|v: &String| !v.trim().is_empty())
    };
    let spec = flag
        .map(str::to_owned)
        .or_else(|| env("LITEVISOR_LOG"))
        .or_else(|| env("LOG_LEVEL"))
        .unwrap_or_else(|| DEFAULT_LOG_FILTER.to_owned());
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false);
    // A plain level avoids building a filter engine: smaller and faster to start for PID 1.
    let result = match spec.trim().to_ascii_lowercase().parse::<LevelFilter>() {
        Ok(level) => builder.with_max_level(level).try_init(),
        Err(_) => match tracing_subscriber::EnvFilter::try_new(&spec) {
            Ok(filter) => builder.with_env_filter(filter).try_init(),
            Err(err) => {
                eprintln!("litevisor: warning: invalid log level {spec:?} ({err}); using warn");
                builder.with_max_level(LevelFilter::WARN).try_init()
            }
        },
    };
    // Already initialised (e.g. by a caller in the same process): keep the existing subscriber.
    drop(result);
}
