//! `litevisor [run] [FLAGS] [-- PROG ARGS...]`: the init entry point. With a program after `--` it
//! runs in tini mode ([`crate::init::single`]); without one it supervises the services of the
//! configuration ([`crate::supervisor`]).

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use super::duration::parse_duration;
use super::logging::{self, LogRequest};
use crate::config::{LogFilter, LogSettings};
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

    /// Log line format: text or json [env: LITEVISOR_LOG_FORMAT] [default: the file's `log_format`,
    /// else text].
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,

    /// Serve /metrics and /healthz on HOST:PORT (`:9090` = every interface) [env:
    /// LITEVISOR_METRICS_ADDR] [default: the file's `metrics_addr`, else off].
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_addr: Option<String>,

    /// Configuration file of the services to supervise when no program is given after `--`
    /// (default: $LITEVISOR_CONFIG, else /etc/litevisor/litevisor.toml).
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Program and arguments to run as the main child, passed verbatim.
    #[arg(last = true)]
    pub command: Vec<OsString>,
}

pub fn run(args: RunArgs) -> anyhow::Result<i32> {
    let grace = match args.grace {
        Some(grace) => grace,
        None => grace_from_env()?,
    };
    if args.command.is_empty() {
        return supervise(args);
    }
    if let Err(msg) = init_logging(&args, &LogSettings::default()) {
        eprintln!("litevisor: error: {msg}");
        return Ok(2);
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
    let mut config = match crate::config::load(args.config.as_deref()) {
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
    if let Err(msg) = init_logging(&args, &config.observe.log) {
        eprintln!("litevisor: error: {msg}");
        return Ok(2);
    }
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    if let Err(msg) = super::observe_overrides(args.metrics_addr.as_deref(), &mut config.observe) {
        eprintln!("litevisor: error: {msg}");
        return Ok(2);
    }
    let options = crate::supervisor::Options {
        exit_map: ExitCodeMap::new(args.remap_exit),
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
fn init_logging(args: &RunArgs, file: &LogSettings) -> Result<(), String> {
    use tracing::level_filters::LevelFilter;
    let default = LogFilter {
        default: LevelFilter::WARN,
        directives: vec![
            ("litevisor::supervisor::database".into(), LevelFilter::INFO),
            ("litevisor::replication".into(), LevelFilter::INFO),
        ],
    };
    logging::init_logging(LogRequest {
        levels: vec![
            ("--log-level", args.log_level.clone()),
            ("LITEVISOR_LOG", logging::env("LITEVISOR_LOG")),
            ("LOG_LEVEL", logging::env("LOG_LEVEL")),
        ],
        format_flag: args.log_format.as_deref(),
        file,
        default,
    })
}
