//! `litevisor [run] [FLAGS] [-- PROG ARGS...]`: the init entry point. With a program after `--` it
//! runs in tini mode ([`crate::init::single`]); without one it supervises the services of the
//! configuration ([`crate::supervisor`]).

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

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
    /// [env: LITEVISOR_LOG or LOG_LEVEL] [default: warn].
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

/// Parses `10s`, `500ms`, `2m`, `1h`, Go-style compounds such as `1m30s`, or plain (fractional)
/// seconds such as `10` or `0.5`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad =
        || format!("invalid duration {text:?}: expected e.g. 10s, 500ms, 2m or plain seconds");
    let text = text.trim();
    if text.is_empty() {
        return Err(bad());
    }
    if let Ok(seconds) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds).map_err(|_| bad());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let unit_len = rest[number_len..].find(|c: char| c.is_ascii_digit() || c == '.');
        let unit_end = unit_len.map_or(rest.len(), |len| number_len + len);
        let number: f64 = rest[..number_len].parse().map_err(|_| bad())?;
        let unit_seconds = match &rest[number_len..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += Duration::try_from_secs_f64(number * unit_seconds).map_err(|_| bad())?;
        rest = &rest[unit_end..];
    }
    Ok(total)
}

/// Logs go to stderr, quiet (warn) unless asked. The level comes from `--log-level`, else
/// `LITEVISOR_LOG`, else Litestream's `LOG_LEVEL`.
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
        .unwrap_or_else(|| "warn".to_owned());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_units_compounds_and_plain_seconds() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert_eq!(parse_duration("0.25"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        for bad in ["", "s", "10x", "-1", "1s2", "ten"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
