//! How litevisor can be watched: its own log lines (level, text or JSON, stdout or stderr) and the
//! optional HTTP listener for `/metrics` and `/healthz`. One model for litevisor.toml's keys
//! (`log_format`, `metrics_addr`, `health_upload_lag`), litestream.yml's (`logging:`, `addr:`) and
//! the command line and environment, with the one parser of each value.

use std::time::Duration;

use tracing::level_filters::LevelFilter;

/// The accepted log levels, as error messages name them.
pub const LOG_LEVELS: &str = "trace, debug, info, warn, error or off";

/// Default bound of `/healthz`'s "nothing waits for its upload longer than this".
pub const DEFAULT_HEALTH_UPLOAD_LAG: Duration = Duration::from_secs(300);

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observability {
    /// What the configuration file says about logging (the command line and environment come on top).
    pub log: LogSettings,
    /// `HOST:PORT` of the `/metrics` + `/healthz` listener; `None` = no listener.
    pub metrics_addr: Option<String>,
    /// `/healthz` fails when a committed transaction has waited longer than this for its upload;
    /// `None` = [`DEFAULT_HEALTH_UPLOAD_LAG`].
    pub health_upload_lag: Option<Duration>,
}

impl Observability {
    pub fn health_upload_lag(&self) -> Duration {
        self.health_upload_lag.unwrap_or(DEFAULT_HEALTH_UPLOAD_LAG)
    }
}

/// Logging as a configuration file gives it; `None` leaves the choice to the command line, the
/// environment or the default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogSettings {
    pub level: Option<LogFilter>,
    pub format: Option<LogFormat>,
    /// Litestream's `logging.stderr`: true = stderr, false = stdout.
    pub stderr: Option<bool>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    /// One JSON object per line: `time`, `level`, `msg`, then the fields (Litestream's shape).
    Json,
}

impl LogFormat {
    pub fn parse(text: &str) -> Result<LogFormat, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!(
                "invalid log format {text:?}: use \"text\" or \"json\""
            )),
        }
    }
}

/// A validated log level: one level for litevisor's own lines, or `litevisor::module=LEVEL`
/// directives (comma-separated, with an optional plain level for the rest of litevisor). Other
/// crates (the AWS SDK, hyper) never log below `warn`: their debug output carries request headers
/// and credential-chain details.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogFilter {
    /// The level of every litevisor module no directive names.
    pub default: LevelFilter,
    /// `(target, level)`; each target is `litevisor` or starts with `litevisor::`.
    pub directives: Vec<(String, LevelFilter)>,
}

impl LogFilter {
    pub fn level(level: LevelFilter) -> LogFilter {
        LogFilter {
            default: level,
            directives: Vec::new(),
        }
    }

    /// `info`, `WARN`, `warning`, or `litevisor::replication=debug,info`. Anything else is an error
    /// naming the accepted values.
    pub fn parse(spec: &str) -> Result<LogFilter, String> {
        let bad_level = |text: &str| {
            format!("invalid log level {text:?}: use {LOG_LEVELS} (or litevisor::MODULE=LEVEL)")
        };
        let mut filter = LogFilter::level(LevelFilter::INFO);
        let mut plain = false;
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.split_once('=') {
                None => {
                    filter.default = parse_level(part).ok_or_else(|| bad_level(spec))?;
                    plain = true;
                }
                Some((target, level)) => {
                    let target = target.trim();
                    if target != "litevisor" && !target.starts_with("litevisor::") {
                        return Err(format!(
                            "invalid log filter {part:?}: only litevisor's own modules (litevisor or litevisor::MODULE) can be named; other libraries log warnings and errors only"
                        ));
                    }
                    let level = parse_level(level.trim()).ok_or_else(|| bad_level(level))?;
                    filter.directives.push((target.to_string(), level));
                }
            }
        }
        if !plain && filter.directives.is_empty() {
            return Err(bad_level(spec));
        }
        Ok(filter)
    }
}

fn parse_level(text: &str) -> Option<LevelFilter> {
    Some(match text.to_ascii_lowercase().as_str() {
        "trace" => LevelFilter::TRACE,
        "debug" => LevelFilter::DEBUG,
        "info" => LevelFilter::INFO,
        "warn" | "warning" => LevelFilter::WARN,
        "error" => LevelFilter::ERROR,
        "off" => LevelFilter::OFF,
        _ => return None,
    })
}

/// `HOST:PORT` (`:9090` = every interface, as in Litestream; `[::1]:9090` for IPv6). The port is
/// required. Names are resolved when the listener binds.
pub fn parse_listen_addr(text: &str) -> Result<String, String> {
    let t = text.trim();
    let bad =
        || format!("invalid address {text:?}: use HOST:PORT, e.g. \"127.0.0.1:9090\" or \":9090\"");
    let (host, port) = t.rsplit_once(':').ok_or_else(bad)?;
    if port.parse::<u16>().is_err() || host.contains(char::is_whitespace) {
        return Err(bad());
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(bad());
    }
    Ok(t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_filters() {
        assert_eq!(
            LogFilter::parse("WARNING").unwrap(),
            LogFilter::level(LevelFilter::WARN)
        );
        let f = LogFilter::parse("litevisor::replication=debug,error").unwrap();
        assert_eq!(f.default, LevelFilter::ERROR);
        assert_eq!(
            f.directives,
            vec![("litevisor::replication".to_string(), LevelFilter::DEBUG)]
        );
        for bad in ["bogus", "verbose", "", "aws_config=trace", "litevisor=loud"] {
            let err = LogFilter::parse(bad).unwrap_err();
            assert!(
                err.contains("trace, debug, info, warn, error") || err.contains("other libraries"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn listen_addresses() {
        assert!(parse_listen_addr(":9090").is_ok());
        assert!(parse_listen_addr("127.0.0.1:9090").is_ok());
        assert!(parse_listen_addr("[::1]:9090").is_ok());
        assert!(parse_listen_addr("localhost:9090").is_ok());
        for bad in ["9090", "127.0.0.1", "::1:9090", "host:99999", "a b:1"] {
            assert!(parse_listen_addr(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formats() {
        assert_eq!(LogFormat::parse("JSON").unwrap(), LogFormat::Json);
        assert!(
            LogFormat::parse("logfmt")
                .unwrap_err()
                .contains("\"text\" or \"json\"")
        );
    }
}
