//! `litevisor [run] [FLAGS] [-- PROG ARGS...]`: the init entry point. With a program after `--` it
//! runs in tini mode ([`crate::init::single`]); without one it supervises the services of the
//! configuration ([`crate::supervisor`]).
//!
//! tini's flags and environment variables are accepted with tini's meaning (`-s`, `-g`, `-p`, `-v`,
//! `-w`, `-e`, `-l`, `-h`; `TINI_SUBREAPER`, `TINI_KILL_PROCESS_GROUP`, `TINI_VERBOSITY`), so
//! `ENTRYPOINT ["tini", "-g", "--"]` becomes `["litevisor", "-g", "--"]`. Where litevisor's
//! defaults differ (it always signals the group and becomes a subreaper), the flag is accepted
//! and changes what tini's would, if anything; the README has the side-by-side table.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::ArgAction;

use super::logging::{self, LogRequest};
use crate::config::parse_duration;
use crate::config::{LogFilter, LogSettings, Signal, parse_signal};
use crate::init::{self, ExitCodeMap, single};

/// Default time between SIGTERM and SIGKILL.
const DEFAULT_GRACE: Duration = Duration::from_secs(10);

#[derive(clap::Args, Debug, Default)]
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
    /// [env: LITEVISOR_LOG, TINI_VERBOSITY or LOG_LEVEL; -v wins over them] [default: warn, and info for databases: restored, replicating,
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

    /// Register as a child subreaper, and exit 1 if that fails (tini's `-s`; without it litevisor
    /// still tries when it is not PID 1, and only warns) [env: TINI_SUBREAPER].
    #[arg(short = 's', long)]
    pub subreaper: bool,

    /// Send signals to the program's process group (tini's `-g`): litevisor always does
    /// [env: TINI_KILL_PROCESS_GROUP].
    #[arg(short = 'g', long = "process-group")]
    pub process_group: bool,

    /// Signal litevisor gets when its parent dies (tini's `-p`), e.g. `SIGKILL`, `TERM` or `15`.
    #[arg(short = 'p', long = "parent-death-signal", value_name = "SIGNAL", value_parser = parse_signal)]
    pub parent_death_signal: Option<Signal>,

    /// More verbose logs (tini's `-v`): `-v` info, `-vv` debug, `-vvv` trace [env: TINI_VERBOSITY].
    #[arg(short = 'v', long = "verbose", action = ArgAction::Count)]
    pub verbose: u8,

    /// Log a warning for every zombie reaped, other than the program itself (tini's `-w`).
    #[arg(short = 'w', long = "warn-on-reap")]
    pub warn_on_reap: bool,

    /// Show litevisor's license and exit (tini's `-l`).
    #[arg(short = 'l', long)]
    pub license: bool,

    /// Program and arguments to run as the main child, passed verbatim.
    #[arg(last = true)]
    pub command: Vec<OsString>,
}

pub fn run(args: RunArgs) -> anyhow::Result<i32> {
    if args.license {
        println!("{LICENSE}");
        return Ok(0);
    }
    let grace = match args.grace {
        Some(grace) => grace,
        None => grace_from_env()?,
    };
    if let Some(signal) = args.parent_death_signal
        && let Err(err) = init::signals::on_parent_death(signal as i32)
    {
        eprintln!("litevisor: error: cannot set the parent death signal: {err}");
        return Ok(1);
    }
    if (args.subreaper || std::env::var_os("TINI_SUBREAPER").is_some())
        && let Err(err) = init::become_subreaper()
    {
        eprintln!("litevisor: error: cannot register as a child subreaper (-s): {err}");
        return Ok(1);
    }
    if args.command.is_empty() {
        return supervise(args);
    }
    if let Err(msg) = init_logging(&args, &LogSettings::default(), false) {
        eprintln!("litevisor: error: {msg}");
        return Ok(2);
    }
    let options = single::Options {
        command: args.command,
        grace,
        exit_map: ExitCodeMap::new(args.remap_exit),
        warn_on_reap: args.warn_on_reap,
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
    if let Err(msg) = init_logging(&args, &config.observe.log, !config.databases.is_empty()) {
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
        warn_on_reap: args.warn_on_reap,
        idle_when_empty: false,
        reload: Some({
            let path = args.config.clone();
            std::sync::Arc::new(move || crate::config::load(path.as_deref()))
        }),
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

const LICENSE: &str = concat!(
    "litevisor ",
    env!("CARGO_PKG_VERSION"),
    " is licensed under the Apache License, Version 2.0 (SPDX: ",
    env!("CARGO_PKG_LICENSE"),
    "): https://www.apache.org/licenses/LICENSE-2.0"
);

/// Logs go to stderr, quiet (warn) unless asked, except for the few lines of each database's life
/// (restored, replicating, snapshots, final sync done or failed) that an operator needs to see
/// without asking. The level comes from `--log-level`, else tini's `-v` count, else `LITEVISOR_LOG`,
/// else tini's `TINI_VERBOSITY`, else Litestream's `LOG_LEVEL`, else the file's. Without databases
/// the default is a plain `warn` (the replication modules have nothing to say).
fn init_logging(args: &RunArgs, file: &LogSettings, databases: bool) -> Result<(), String> {
    use tracing::level_filters::LevelFilter;
    let default = if databases {
        LogFilter {
            default: LevelFilter::WARN,
            directives: vec![
                ("litevisor::supervisor::database".into(), LevelFilter::INFO),
                ("litevisor::replication".into(), LevelFilter::INFO),
            ],
        }
    } else {
        LogFilter::level(LevelFilter::WARN)
    };
    let tini_level = |verbosity: i64| {
        match verbosity {
            ..=0 => "error",
            1 => "warn",
            2 => "info",
            3 => "debug",
            _ => "trace",
        }
        .to_owned()
    };
    logging::init_logging(LogRequest {
        levels: vec![
            ("--log-level", args.log_level.clone()),
            (
                "-v",
                (args.verbose > 0).then(|| tini_level(1 + i64::from(args.verbose))),
            ),
            ("LITEVISOR_LOG", logging::env("LITEVISOR_LOG")),
            (
                "TINI_VERBOSITY",
                std::env::var("TINI_VERBOSITY")
                    .ok()
                    .map(|v| tini_level(atoi(&v))),
            ),
            ("LOG_LEVEL", logging::env("LOG_LEVEL")),
        ],
        format_flag: args.log_format.as_deref(),
        file,
        default,
    })
}

/// C's `atoi`, which tini applies to `TINI_VERBOSITY`: leading blanks, an optional sign, the digits
/// that follow; anything else (or nothing) is 0.
fn atoi(text: &str) -> i64 {
    let text = text.trim_start();
    let (sign, digits) = match text.as_bytes().first() {
        Some(b'-') => (-1, &text[1..]),
        Some(b'+') => (1, &text[1..]),
        _ => (1, text),
    };
    let end = digits
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(digits.len());
    sign * digits[..end].parse::<i64>().unwrap_or(0)
}
