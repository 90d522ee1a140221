//! litevisor's own log lines: the one place that sets up `tracing` for every subcommand.
//!
//! - Level: the first source that gives one (each subcommand names its own order: flag, environment
//!   variables, the configuration file), else the subcommand's default. A level that is not one of
//!   [`crate::config::observe::LOG_LEVELS`] is an error naming where it came from and the accepted values.
//! - Format: `--log-format`, else `LITEVISOR_LOG_FORMAT`, else the file's (`log_format`, or
//!   litestream.yml's `logging.type`), else text. JSON lines have Litestream's shape: `time`
//!   (RFC 3339, nanoseconds, UTC), `level` (`INFO`...), `msg`, then the event's fields (`db`,
//!   `service`, `txid`...); a field named `txid` or ending in `_txid` is a 16-digit hex string as in
//!   Litestream. Text lines are `TIME LEVEL msg key=value...`.
//! - Stream: stderr, or stdout when litestream.yml says `logging: {stderr: false}`.
//! - Length: values are cut (with `…`) so a line stays under about 300 characters, except the
//!   message of an error, kept whole up to [`MAX_ERROR_MESSAGE`]: an error is said once and its end
//!   is often what to do (about a lock, a bucket, a limit), while an oversized value anywhere else
//!   is a dump nobody reads.
//! - Other crates (the AWS SDK, hyper) log at `warn` at most, whatever the level: their debug and
//!   trace output shows request headers and the credential chain's findings.

use std::fmt::{self, Write as _};
use std::time::SystemTime;

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogFilter, LogFormat, LogSettings};

/// The environment variable that picks the log format (`text` or `json`).
pub const FORMAT_ENV: &str = "LITEVISOR_LOG_FORMAT";

/// Longest line aimed for; values are cut to stay under it.
const LINE_BUDGET: usize = 300;
/// Longest single value (the message included, but for errors).
const MAX_VALUE: usize = 260;
/// Longest message of an error.
const MAX_ERROR_MESSAGE: usize = 1000;
/// A value is never cut below this, even late in a long line.
const MIN_VALUE: usize = 24;

/// What a subcommand asks for; see the module docs for the precedence.
pub struct LogRequest<'a> {
    /// Candidate levels, highest precedence first: (where it comes from, its text).
    pub levels: Vec<(&'a str, Option<String>)>,
    /// `--log-format`, if the subcommand has it.
    pub format_flag: Option<&'a str>,
    /// The configuration file's logging keys.
    pub file: &'a LogSettings,
    pub default: LogFilter,
}

/// An environment variable's value, when set and not blank.
pub fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Sets up logging for the process. `Err` is the message for a bad level or format (a usage error).
pub fn init_logging(request: LogRequest<'_>) -> Result<(), String> {
    let mut filter = None;
    for (source, text) in &request.levels {
        if let Some(text) = text {
            let parsed = LogFilter::parse(text).map_err(|e| format!("{source}: {e}"))?;
            filter = Some(parsed);
            break;
        }
    }
    let filter = filter
        .or_else(|| request.file.level.clone())
        .unwrap_or(request.default);
    let format = match (request.format_flag, env(FORMAT_ENV)) {
        (Some(flag), _) => Some(LogFormat::parse(flag).map_err(|e| format!("--log-format: {e}"))?),
        (None, Some(var)) => {
            Some(LogFormat::parse(&var).map_err(|e| format!("{FORMAT_ENV}: {e}"))?)
        }
        (None, None) => None,
    }
    .or(request.file.format)
    .unwrap_or(LogFormat::Text);

    // Other crates never below warn (their debug output would show credentials), nor above what
    // litevisor's own modules are set to.
    let foreign = filter.default.min(LevelFilter::WARN);
    let targets = tracing_subscriber::filter::Targets::new()
        .with_default(foreign)
        .with_target("litevisor", filter.default)
        .with_targets(filter.directives.iter().cloned());
    let lines = LineFormat {
        json: format == LogFormat::Json,
    };
    let layer = tracing_subscriber::fmt::layer().event_format(lines);
    let result = if request.file.stderr == Some(false) {
        let layer = layer.with_writer(std::io::stdout);
        tracing_subscriber::registry()
            .with(tracing_subscriber::Layer::with_filter(layer, targets))
            .try_init()
    } else {
        let layer = layer.with_writer(std::io::stderr);
        tracing_subscriber::registry()
            .with(tracing_subscriber::Layer::with_filter(layer, targets))
            .try_init()
    };
    // Already set up (a caller in the same process): keep that one.
    drop(result);
    Ok(())
}

/// The one event formatter, text or JSON.
struct LineFormat {
    json: bool,
}

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let line = render(
            self.json,
            SystemTime::now(),
            *event.metadata().level(),
            &fields,
        );
        writer.write_str(&line)
    }
}

/// One field's value as recorded.
#[derive(Debug, PartialEq)]
enum Value {
    Text(String),
    /// Written as it is in JSON (numbers, booleans).
    Raw(String),
}

#[derive(Debug, Default)]
struct Fields {
    message: String,
    fields: Vec<(&'static str, Value)>,
}

impl Fields {
    fn push(&mut self, field: &Field, value: Value) {
        if field.name() == "message" {
            self.message = match value {
                Value::Text(s) | Value::Raw(s) => s,
            };
        } else {
            self.fields.push((field.name(), value));
        }
    }
}

fn is_txid(name: &str) -> bool {
    name == "txid" || name.ends_with("_txid")
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.push(field, Value::Text(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.push(field, Value::Text(value.to_owned()));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        // Display only: a Debug dump of a library error is never a log line.
        self.push(field, Value::Text(value.to_string()));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        if is_txid(field.name()) {
            self.push(field, Value::Text(format!("{value:016x}")));
        } else {
            self.push(field, Value::Raw(value.to_string()));
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push(field, Value::Raw(value.to_string()));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push(field, Value::Raw(value.to_string()));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        let text = if value.is_finite() {
            value.to_string()
        } else {
            format!("\"{value}\"")
        };
        self.push(field, Value::Raw(text));
    }
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::TRACE => "TRACE",
        Level::DEBUG => "DEBUG",
        Level::INFO => "INFO",
        Level::WARN => "WARN",
        Level::ERROR => "ERROR",
    }
}

fn render(json: bool, time: SystemTime, level: Level, f: &Fields) -> String {
    let time = crate::replica::s3::format_rfc3339_nano(time);
    let mut line = String::with_capacity(160);
    // An error's message does not count against the budget of its fields.
    let budget = |line: &String, message: usize| {
        LINE_BUDGET
            .saturating_sub(line.len().saturating_sub(message))
            .clamp(MIN_VALUE, MAX_VALUE)
    };
    let whole_message = level == Level::ERROR;
    if json {
        let _ = write!(
            line,
            "{{\"time\":\"{time}\",\"level\":\"{}\",\"msg\":",
            level_name(level)
        );
        let message_budget = if whole_message {
            MAX_ERROR_MESSAGE
        } else {
            budget(&line, 0)
        };
        let msg = crate::text::cut(&f.message, message_budget);
        line.push_str(&crate::text::json_str(&msg));
        let fields_start = if whole_message { msg.len() } else { 0 };
        for (name, value) in &f.fields {
            let _ = write!(line, ",{}:", crate::text::json_str(name));
            match value {
                Value::Raw(raw) => line.push_str(raw),
                Value::Text(text) => {
                    let text = crate::text::cut(text, budget(&line, fields_start));
                    line.push_str(&crate::text::json_str(&text));
                }
            }
        }
        line.push_str("}\n");
    } else {
        let _ = write!(line, "{time} {:>5} ", level_name(level));
        let message_budget = if whole_message {
            MAX_ERROR_MESSAGE
        } else {
            budget(&line, 0)
        };
        let msg = crate::text::cut(&f.message, message_budget);
        line.push_str(&msg);
        let fields_start = if whole_message { msg.len() } else { 0 };
        for (name, value) in &f.fields {
            let text = match value {
                Value::Raw(raw) => raw.clone(),
                Value::Text(text) => crate::text::cut(text, budget(&line, fields_start)),
            };
            let quote = text.is_empty() || text.contains([' ', '"', '=']);
            if quote {
                let _ = write!(line, " {name}={text:?}");
            } else {
                let _ = write!(line, " {name}={text}");
            }
        }
        line.push('\n');
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn fields(message: &str, fields: Vec<(&'static str, Value)>) -> Fields {
        Fields {
            message: message.to_string(),
            fields,
        }
    }

    #[test]
    fn json_lines_have_litestreams_shape() {
        let t = UNIX_EPOCH + Duration::from_nanos(1_764_456_321_123_456_789);
        let f = fields(
            "final sync done",
            vec![
                ("db", Value::Text("/data/a \"b\".db".into())),
                ("txid", Value::Text(format!("{:016x}", 42))),
                ("pages", Value::Raw("7".into())),
            ],
        );
        assert_eq!(
            render(true, t, Level::INFO, &f),
            "{\"time\":\"2025-11-29T22:45:21.123456789Z\",\"level\":\"INFO\",\"msg\":\"final sync done\",\"db\":\"/data/a \\\"b\\\".db\",\"txid\":\"000000000000002a\",\"pages\":7}\n"
        );
    }

    #[test]
    fn long_values_are_cut_to_keep_lines_short() {
        let long = "x".repeat(5000);
        let f = fields(
            &long,
            vec![
                ("error", Value::Text(long.clone())),
                ("db", Value::Text(long.clone())),
            ],
        );
        for json in [true, false] {
            let line = render(json, SystemTime::now(), Level::WARN, &f);
            assert!(line.chars().count() < 400, "{}", line.len());
            assert!(line.contains('…'));
            let line = render(json, SystemTime::now(), Level::ERROR, &f);
            assert!(
                line.chars().count() < MAX_ERROR_MESSAGE + 400,
                "{}",
                line.len()
            );
            assert!(
                line.matches('…').count() == 3,
                "message and both fields cut: {line}"
            );
        }
        // An error's long message keeps its end (the advice is often there); a warning's is cut.
        let advice = format!("{} two replicators would fork the history", "x".repeat(400));
        for json in [true, false] {
            let error = render(
                json,
                SystemTime::now(),
                Level::ERROR,
                &fields(&advice, vec![]),
            );
            assert!(error.contains("would fork the history"), "{error}");
            let warning = render(
                json,
                SystemTime::now(),
                Level::WARN,
                &fields(&advice, vec![]),
            );
            assert!(!warning.contains("would fork") && warning.chars().count() < 400);
        }
        let text = render(false, UNIX_EPOCH, Level::WARN, &fields("a\nb", vec![]));
        assert_eq!(text, "1970-01-01T00:00:00Z  WARN a b\n");
    }
}
