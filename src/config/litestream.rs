//! Litestream's configuration file (`litestream.yml`) read into litevisor's own [`Config`] model, so
//! `litevisor replicate` and `litevisor restore` are drop-ins for Litestream's: the same file, the
//! same lookup (`-config PATH`, else `$LITESTREAM_CONFIG`, else `/etc/litestream.yml`), the same
//! `$VAR`/`${VAR}` expansion over the whole text before parsing (off with `-no-expand-env`).
//!
//! Unlike Litestream, nothing is silently ignored. Every key is one of:
//! - supported: mapped onto [`Database`], [`Replica`] and the `exec` main [`Service`];
//! - accepted but ignored (a feature litevisor does not have, such as `addr` or `logging`): a warning
//!   naming the file, line and key path;
//! - rejected (litevisor cannot do what it asks: gs/abs/sftp/... replicas, `age:` encryption,
//!   several replicas, SSE): an error naming the file, line and key path;
//! - unknown: a warning (Litestream's own parser ignores unknown keys, so a typo must not stop a
//!   container that Litestream would have started, but it must be seen).
//!
//! The YAML is read with an event parser (`saphyr-parser`) into a small tree that keeps each node's
//! line and column, which is what makes `file:line:col: key: message` possible. Scalars stay text
//! until a key gives them a type, the way Go's typed decoding reads them.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

use super::database::replica_from_url;
use super::diag::{ConfigError, Loc, Problems};
use super::directory::glob_match;
use super::env::EnvBuilder;
use super::program::{DEFAULT_PATH, check_program};
use super::{
    Backoff, Config, Database, DatabaseDir, GiveUp, Readiness, Replica, RestartPolicy,
    RestorePolicy, S3Keys, SERVICE_NAME_ENV, Service, ServiceKind,
};
use crate::cli::duration::parse_duration;
use crate::replica::url::{ReplicaUrl, is_url};

/// The file read when neither `-config` nor `$LITESTREAM_CONFIG` names one.
pub const DEFAULT_CONFIG: &str = "/etc/litestream.yml";
/// The environment variable that names the file.
pub const CONFIG_ENV: &str = "LITESTREAM_CONFIG";
/// Litestream's default `shutdown-sync-timeout`.
pub const DEFAULT_SHUTDOWN_SYNC_TIMEOUT: Duration = Duration::from_secs(30);
/// Time the `exec` program gets between SIGTERM and SIGKILL at shutdown.
pub const EXEC_STOP_GRACE: Duration = Duration::from_secs(10);
/// The name of the `exec` program's service (in logs and messages).
pub const EXEC_SERVICE: &str = "exec";

/// What the command line adds to the file.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `-exec`: replaces the file's `exec`.
    pub exec: Option<String>,
    /// `-restore-if-db-not-exists`: for every database.
    pub restore_if_db_not_exists: bool,
    /// `-allow-network-fs`: for every database.
    pub allow_network_fs: bool,
    /// `-shutdown-sync-timeout`: replaces the file's `shutdown-sync-timeout`.
    pub shutdown_sync_timeout: Option<Duration>,
    /// Leave `exec` out (`restore` and `databases` read the file only for its databases).
    pub ignore_exec: bool,
}

/// The path `replicate`/`restore` read: the flag, else `$LITESTREAM_CONFIG`, else [`DEFAULT_CONFIG`].
pub fn config_path(flag: Option<&Path>) -> PathBuf {
    flag.map(Path::to_path_buf)
        .or_else(|| {
            std::env::var_os(CONFIG_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG))
}

/// Reads and validates a `litestream.yml`. Warnings (ignored and unknown keys) are in
/// [`Config::warnings`]; any error fails the whole load with every problem found.
pub fn load(path: &Path, expand_env: bool, overrides: &Overrides) -> Result<Config, ConfigError> {
    let mut problems = Problems::default();
    let config = match std::fs::read_to_string(path) {
        Ok(text) => parse(path, &text, expand_env, overrides, &mut problems),
        Err(err) => {
            problems.push(
                Loc::file(path),
                format!("cannot read the configuration file: {err}"),
            );
            None
        }
    };
    match config {
        Some(mut config) if problems.is_empty() => {
            config.warnings = problems.take_warnings();
            Ok(config)
        }
        _ => Err(problems.into_error()),
    }
}

/// The configuration of `replicate [-exec CMD] DB_PATH REPLICA_URL`: one database, no file.
pub fn command_line(
    database: Database,
    exec: Option<&str>,
    shutdown_sync_timeout: Duration,
) -> Result<Config, ConfigError> {
    let mut problems = Problems::default();
    let origin = Loc {
        file: PathBuf::from("-exec"),
        line: None,
        key: None,
    };
    let databases = vec![database];
    let service = exec.and_then(|cmd| exec_service(cmd, origin, &databases, &mut problems));
    if !problems.is_empty() {
        return Err(problems.into_error());
    }
    Ok(replicate_config(
        None,
        (databases, Vec::new()),
        service,
        shutdown_sync_timeout,
    ))
}

/// The model of a replicate run: the databases, at most the one `exec` main service, and one
/// shutdown deadline = the final sync's retry window (at least 1 s, so a 0 window still gets its one
/// attempt) plus, with `exec`, the program's stop grace (it stops first, then the final sync runs).
fn replicate_config(
    file: Option<PathBuf>,
    (databases, directories): (Vec<Database>, Vec<DatabaseDir>),
    exec: Option<Service>,
    shutdown_sync_timeout: Duration,
) -> Config {
    let mut shutdown_timeout = shutdown_sync_timeout.max(Duration::from_secs(1));
    if let Some(service) = &exec {
        shutdown_timeout += service.stop_grace;
    }
    Config {
        file,
        services_dir: None,
        log_prefix: false,
        shutdown_timeout,
        grace: EXEC_STOP_GRACE,
        services: exec.into_iter().collect(),
        databases,
        directories,
        observe: Default::default(),
        warnings: Vec::new(),
    }
}

/// `exec` as the main service: split with shell-word rules, run as-is (no shell), never restarted,
/// its exit ends the run with its status. Its output goes straight to litevisor's stdout/stderr
/// (no prefix), as under Litestream. It starts once every database is restored.
fn exec_service(
    command: &str,
    origin: Loc,
    databases: &[Database],
    problems: &mut Problems,
) -> Option<Service> {
    let argv = match split_command(command) {
        Ok(argv) if argv.is_empty() => {
            problems.push(origin, "the command is empty");
            return None;
        }
        Ok(argv) => argv,
        Err(msg) => {
            problems.push(origin, msg);
            return None;
        }
    };
    let mut env = EnvBuilder::default();
    for (name, value) in std::env::vars_os() {
        env.set(name, value);
    }
    // As Litestream does for its child: LITESTREAM_* keys stand in for unset AWS_* ones.
    for (aws, litestream) in [
        ("AWS_ACCESS_KEY_ID", "LITESTREAM_ACCESS_KEY_ID"),
        ("AWS_SECRET_ACCESS_KEY", "LITESTREAM_SECRET_ACCESS_KEY"),
    ] {
        if env.get(aws).is_none_or(|v| v.is_empty())
            && let Some(value) = std::env::var_os(litestream).filter(|v| !v.is_empty())
        {
            env.set(aws, value);
        }
    }
    env.set(SERVICE_NAME_ENV, EXEC_SERVICE);
    let path_var = env
        .get("PATH")
        .cloned()
        .unwrap_or_else(|| DEFAULT_PATH.into());
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let command: Vec<OsString> = argv.into_iter().map(OsString::from).collect();
    if let Err(msg) = check_program(&command[0], &path_var, &cwd) {
        problems.push(origin, msg);
        return None;
    }
    Some(Service {
        name: EXEC_SERVICE.to_string(),
        defined_in: origin.file,
        kind: ServiceKind::Longrun,
        command,
        depends_on: Vec::new(),
        dependents: Vec::new(),
        restart: RestartPolicy::Never,
        backoff: Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
            jitter: 0.0,
            stable_after: Duration::from_secs(10),
            max_restarts: None,
            give_up: GiveUp::Shutdown,
        },
        main: true,
        readiness: Readiness::Started,
        ready_timeout: None,
        stop_signal: nix::sys::signal::Signal::SIGTERM,
        stop_grace: EXEC_STOP_GRACE,
        env: env.build(),
        working_dir: None,
        credentials: None,
        finish: None,
        finish_timeout: None,
        log_prefix: false,
        databases: databases.iter().map(|d| d.path.clone()).collect(),
    })
}

/// Splits a command line into words like a POSIX shell, without running one: blanks separate words;
/// `'...'` is literal; inside `"..."` a backslash escapes `"`, `\`, `$` and `` ` `` (and a newline
/// disappears); outside quotes a backslash makes the next character literal. No expansion,
/// globbing or operators. Unbalanced quotes and a trailing backslash are errors.
pub fn split_command(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' | '\r' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\\' => {
                match chars.next() {
                    Some('\n') => {}
                    Some(next) => word.push(next),
                    None => return Err(format!("{line:?}: ends with a lone backslash")),
                }
                in_word = true;
            }
            '\'' => {
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(ch) => word.push(ch),
                        None => return Err(format!("{line:?}: unbalanced single quote")),
                    }
                }
                in_word = true;
            }
            '"' => {
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(ch @ ('"' | '\\' | '$' | '`')) => word.push(ch),
                            Some('\n') => {}
                            Some(ch) => {
                                word.push('\\');
                                word.push(ch);
                            }
                            None => return Err(format!("{line:?}: unbalanced double quote")),
                        },
                        Some(ch) => word.push(ch),
                        None => return Err(format!("{line:?}: unbalanced double quote")),
                    }
                }
                in_word = true;
            }
            other => {
                word.push(other);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// Go's `os.Expand` over the environment, as Litestream applies it to the whole file: `${NAME}` and
/// `$NAME` (letters, digits, `_`) and the one-character shell names (`$1`, `$$`, `$@`, ...) become
/// the variable's value, empty when unset. A `$` followed by anything else stays; a malformed
/// `${...` is dropped (Go drops it too).
pub fn expand_env(text: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, used) = shell_name(after);
        match name {
            Some(name) => out.push_str(&lookup(name).unwrap_or_default()),
            None if used == 0 => out.push('$'),
            None => {}
        }
        rest = &after[used..];
    }
    out.push_str(rest);
    out
}

/// The variable name after a `$`: `(Some(name), bytes used)`, `(None, 0)` when there is none (the `$`
/// stays), `(None, n)` for malformed braces (n bytes are dropped).
fn shell_name(s: &str) -> (Option<&str>, usize) {
    let special =
        |c: u8| matches!(c, b'*' | b'#' | b'$' | b'@' | b'!' | b'?' | b'-') || c.is_ascii_digit();
    let alnum = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let bytes = s.as_bytes();
    match bytes.first() {
        None => (None, 0),
        Some(b'{') => {
            if bytes.len() > 2 && special(bytes[1]) && bytes[2] == b'}' {
                return (Some(&s[1..2]), 3);
            }
            match s.find('}') {
                Some(1) => (None, 2),
                Some(end) => (Some(&s[1..end]), end + 1),
                None => (None, 1),
            }
        }
        Some(&c) if special(c) => (Some(&s[..1]), 1),
        Some(_) => {
            let len = bytes.iter().take_while(|&&c| alnum(c)).count();
            if len == 0 {
                (None, 0)
            } else {
                (Some(&s[..len]), len)
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The YAML tree.

#[derive(Clone, Debug)]
struct Node {
    line: usize,
    col: usize,
    value: Value,
}

#[derive(Clone, Debug)]
enum Value {
    Null,
    Scalar(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::Null => "nothing",
            Value::Scalar(_) => "a value",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

type YamlError = ((usize, usize), String);

fn position(span: &Span) -> (usize, usize) {
    (span.start.line(), span.start.col() + 1)
}

/// The first document of `text` as a tree; `None` for an empty file.
fn parse_yaml(text: &str) -> Result<Option<Node>, YamlError> {
    let mut parser = Parser::new_from_str(text);
    let mut anchors = HashMap::new();
    loop {
        match next_event(&mut parser)? {
            (Event::StreamStart | Event::DocumentStart(_) | Event::Nothing, _) => continue,
            (Event::StreamEnd | Event::DocumentEnd, _) => return Ok(None),
            (event, span) => return build(event, span, &mut parser, &mut anchors).map(Some),
        }
    }
}

fn next_event<'a>(
    parser: &mut Parser<'a, saphyr_parser::StrInput<'a>>,
) -> Result<(Event<'a>, Span), YamlError> {
    match parser.next() {
        Some(Ok(event)) => Ok(event),
        Some(Err(err)) => {
            let m = err.marker();
            Err((
                (m.line(), m.col() + 1),
                format!("invalid YAML: {}", err.info()),
            ))
        }
        None => Err(((0, 0), "invalid YAML: unexpected end".to_string())),
    }
}

fn build<'a>(
    event: Event<'a>,
    span: Span,
    parser: &mut Parser<'a, saphyr_parser::StrInput<'a>>,
    anchors: &mut HashMap<usize, Node>,
) -> Result<Node, YamlError> {
    let (line, col) = position(&span);
    let (value, anchor) = match event {
        Event::Scalar(text, style, anchor, _) => {
            let null = style == ScalarStyle::Plain
                && matches!(text.as_ref(), "" | "~" | "null" | "Null" | "NULL");
            let value = if null {
                Value::Null
            } else {
                Value::Scalar(text.into_owned())
            };
            (value, anchor)
        }
        Event::SequenceStart(anchor, _) => {
            let mut items = Vec::new();
            loop {
                match next_event(parser)? {
                    (Event::SequenceEnd, _) => break,
                    (event, span) => items.push(build(event, span, parser, anchors)?),
                }
            }
            (Value::Seq(items), anchor)
        }
        Event::MappingStart(anchor, _) => {
            let mut entries: Vec<(Node, Node)> = Vec::new();
            loop {
                let key = match next_event(parser)? {
                    (Event::MappingEnd, _) => break,
                    (event, span) => build(event, span, parser, anchors)?,
                };
                let (event, span) = next_event(parser)?;
                let value = build(event, span, parser, anchors)?;
                entries.push((key, value));
            }
            (Value::Map(merge_keys(entries)), anchor)
        }
        Event::Alias(id) => {
            return match anchors.get(&id) {
                Some(node) => Ok(node.clone()),
                None => Err(((line, col), "invalid YAML: unknown alias".to_string())),
            };
        }
        _ => return Err(((line, col), "invalid YAML: unexpected token".to_string())),
    };
    let node = Node { line, col, value };
    if anchor != 0 {
        anchors.insert(anchor, node.clone());
    }
    Ok(node)
}

/// YAML 1.1 merge keys (`<<: *defaults`), which Litestream's parser (yaml.v2) honours: the merged
/// mapping's entries are added where the key is not set explicitly.
fn merge_keys(entries: Vec<(Node, Node)>) -> Vec<(Node, Node)> {
    let is_merge = |k: &Node| matches!(&k.value, Value::Scalar(s) if s == "<<");
    if !entries.iter().any(|(k, _)| is_merge(k)) {
        return entries;
    }
    let (merges, mut own): (Vec<_>, Vec<_>) = entries.into_iter().partition(|(k, _)| is_merge(k));
    for (key, value) in merges {
        let sources = match value.value {
            Value::Map(m) => vec![m],
            Value::Seq(items) => items
                .into_iter()
                .filter_map(|n| match n.value {
                    Value::Map(m) => Some(m),
                    _ => None,
                })
                .collect(),
            // Not a mapping: keep it as an ordinary (and so unknown, reported) key.
            other => {
                own.push((
                    key,
                    Node {
                        value: other,
                        ..value
                    },
                ));
                continue;
            }
        };
        for source in sources {
            for (k, v) in source {
                let taken = own
                    .iter()
                    .any(|(o, _)| matches!((&o.value, &k.value), (Value::Scalar(a), Value::Scalar(b)) if a == b));
                if !taken {
                    own.push((k, v));
                }
            }
        }
    }
    own
}

// ---------------------------------------------------------------------------------------------
// Reading the tree.

/// One mapping being read: keys are taken as they are understood; [`Map::finish`] reports the rest.
struct Map<'a> {
    file: &'a Path,
    prefix: String,
    entries: Vec<Option<(String, Node, Node)>>,
}

impl<'a> Map<'a> {
    /// `None` (reported) when `node` is not a mapping; an empty (null) node is an empty mapping.
    fn new(file: &'a Path, prefix: &str, node: Node, problems: &mut Problems) -> Option<Map<'a>> {
        let entries = match node.value {
            Value::Map(entries) => entries,
            Value::Null => Vec::new(),
            other => {
                problems.push(
                    loc_at(file, node.line, node.col, prefix),
                    format!("expected a mapping, found {}", other.kind()),
                );
                return None;
            }
        };
        let mut out: Vec<Option<(String, Node, Node)>> = Vec::new();
        for (key, value) in entries {
            let name = match &key.value {
                Value::Scalar(s) => s.clone(),
                other => {
                    problems.push(
                        loc_at(file, key.line, key.col, prefix),
                        format!("expected a key name, found {}", other.kind()),
                    );
                    continue;
                }
            };
            let first = out
                .iter()
                .flatten()
                .find(|(n, _, _)| *n == name)
                .map(|(_, k, _)| k.line);
            if let Some(first_line) = first {
                problems.push(
                    loc_at(file, key.line, key.col, &join(prefix, &name)),
                    format!("set twice (first at line {first_line})"),
                );
                continue;
            }
            out.push(Some((name, key, value)));
        }
        Some(Map {
            file,
            prefix: prefix.to_string(),
            entries: out,
        })
    }

    fn path_of(&self, key: &str) -> String {
        join(&self.prefix, key)
    }

    /// Takes a key; a null value counts as absent.
    fn take(&mut self, key: &str) -> Option<(Loc, Node)> {
        let slot = self
            .entries
            .iter_mut()
            .find(|e| e.as_ref().is_some_and(|(n, _, _)| n == key))?;
        let (name, k, v) = slot.take()?;
        let loc = loc_at(self.file, k.line, k.col, &join(&self.prefix, &name));
        match v.value {
            Value::Null => None,
            _ => Some((loc, v)),
        }
    }

    fn text(&mut self, key: &str, problems: &mut Problems) -> Option<(Loc, String)> {
        let (loc, node) = self.take(key)?;
        match node.value {
            Value::Scalar(s) => Some((loc, s)),
            other => {
                problems.push(loc, format!("expected a value, found {}", other.kind()));
                None
            }
        }
    }

    fn string(&mut self, key: &str, problems: &mut Problems) -> Option<String> {
        self.text(key, problems).map(|(_, s)| s)
    }

    /// YAML 1.1 booleans, as Litestream's parser reads them.
    fn bool(&mut self, key: &str, problems: &mut Problems) -> Option<bool> {
        let (loc, s) = self.text(key, problems)?;
        match s.to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "y" => Some(true),
            "false" | "no" | "off" | "n" => Some(false),
            _ => {
                problems.push(loc, format!("{s:?} is not a boolean: use true or false"));
                None
            }
        }
    }

    /// Go durations (`500ms`, `1m30s`, `24h`).
    fn duration(&mut self, key: &str, problems: &mut Problems) -> Option<Duration> {
        let (loc, s) = self.text(key, problems)?;
        parse_duration(&s)
            .map_err(|msg| problems.push(loc, msg))
            .ok()
    }

    fn integer(&mut self, key: &str, problems: &mut Problems) -> Option<(Loc, u64)> {
        let (loc, s) = self.text(key, problems)?;
        match s.trim().parse::<u64>() {
            Ok(n) => Some((loc, n)),
            Err(_) => {
                problems.push(loc, format!("{s:?} is not a non-negative integer"));
                None
            }
        }
    }

    /// A byte size the way Litestream reads `part-size` (go-humanize): `5242880`, `5MB` (10^6),
    /// `5MiB` (2^20).
    fn size(&mut self, key: &str, problems: &mut Problems) -> Option<u64> {
        let (loc, s) = self.text(key, problems)?;
        parse_size(&s).map_err(|msg| problems.push(loc, msg)).ok()
    }

    /// Reports every key nobody took: `ignored` ones with why, the rest as unknown.
    fn finish(self, ignored: &[(&str, &str)], problems: &mut Problems) {
        for (name, key, _) in self.entries.into_iter().flatten() {
            let loc = loc_at(self.file, key.line, key.col, &join(&self.prefix, &name));
            match ignored.iter().find(|(k, _)| *k == name) {
                Some((_, why)) => problems.warn(loc, format!("ignored: {why}")),
                None => problems.warn(loc, "unknown key, ignored"),
            }
        }
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

fn loc_at(file: &Path, line: usize, col: usize, key: &str) -> Loc {
    Loc {
        file: file.to_path_buf(),
        line: (line > 0).then_some((line, col)),
        key: (!key.is_empty()).then(|| key.to_string()),
    }
}

fn parse_size(text: &str) -> Result<u64, String> {
    let bad = || format!("invalid size {text:?}: use bytes, or e.g. 5MB or 5MiB");
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let number: f64 = t[..split].parse().map_err(|_| bad())?;
    let multiplier: f64 = match t[split..].trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "ki" | "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mi" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gi" | "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => return Err(bad()),
    };
    let bytes = number * multiplier;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as u64)
}

/// `~` and `~/...` mean the home directory (as in Litestream); relative paths are made absolute
/// against the working directory, which is where Litestream resolves them too.
fn expand_path(p: &str) -> PathBuf {
    let home = || std::env::var_os("HOME").map(PathBuf::from);
    let path = match (p.strip_prefix("~/"), p == "~", home()) {
        (Some(rest), _, Some(h)) => h.join(rest),
        (None, true, Some(h)) => h,
        _ => PathBuf::from(p),
    };
    std::path::absolute(&path).unwrap_or(path)
}

// ---------------------------------------------------------------------------------------------
// The keys.

/// Top-level keys accepted and ignored, with the reason shown.
const IGNORED_TOP: &[(&str, &str)] = &[
    ("socket", "litevisor has no control socket"),
    ("mcp-addr", "litevisor has no MCP server"),
    ("heartbeat-url", "litevisor sends no heartbeats"),
    ("heartbeat-interval", "litevisor sends no heartbeats"),
    ("validation", "litevisor does not run periodic validation"),
    (
        "verify-compaction",
        "litevisor does not re-verify compactions",
    ),
    (
        "shutdown-sync-interval",
        "the final sync retries with its own back-off",
    ),
    (
        "l0-retention-check-interval",
        "L0 retention runs with each compaction",
    ),
];

/// Replica keys accepted and ignored, with the reason shown.
const IGNORED_REPLICA: &[(&str, &str)] = &[
    (
        "name",
        "replica names are not used (one replica per database)",
    ),
    ("max-sync-ltx-files", "every pending L0 file is uploaded"),
    (
        "auto-recover",
        "a replica mismatch always falls back to a snapshot",
    ),
    ("validation-interval", "unused by Litestream too"),
    ("sign-payload", "payloads are always signed"),
    ("require-content-md5", "not configurable in litevisor"),
    (
        "retention",
        "a Litestream 0.3 key; Litestream 0.5 ignores it too",
    ),
    (
        "retention-check-interval",
        "a Litestream 0.3 key; Litestream 0.5 ignores it too",
    ),
    (
        "snapshot-interval",
        "a Litestream 0.3 key; Litestream 0.5 ignores it too (use `snapshot`)",
    ),
];

/// Replica keys that ask for something litevisor cannot do.
const REJECTED_REPLICA: &[(&str, &str)] = &[
    (
        "age",
        "age encryption was removed in Litestream 0.5 and is not supported",
    ),
    ("sse-customer-algorithm", "SSE-C is not supported yet"),
    ("sse-customer-key", "SSE-C is not supported yet"),
    ("sse-customer-key-path", "SSE-C is not supported yet"),
    ("sse-kms-key-id", "SSE-KMS is not supported yet"),
];

/// Litestream's directory mode keys (`dir`, `pattern`, `recursive`, `watch`, `meta-dir`), with
/// Litestream's rules: `pattern` is required with `dir`; the others mean nothing without it.
fn read_directory_keys(
    file: &Path,
    m: &mut Map<'_>,
    problems: &mut Problems,
) -> Option<(Loc, DatabaseDir)> {
    let dir = m.text("dir", problems);
    let pattern = m.text("pattern", problems);
    let recursive = m.bool("recursive", problems);
    let watch = m.bool("watch", problems);
    let meta_dir = m.text("meta-dir", problems);
    let Some((dir_loc, dir)) = dir.filter(|(_, d)| !d.is_empty()) else {
        for (key, set) in [
            ("pattern", pattern.is_some()),
            ("recursive", recursive.is_some()),
            ("watch", watch.is_some()),
            ("meta-dir", meta_dir.is_some()),
        ] {
            if set {
                problems.push(
                    loc_at(file, 0, 0, &m.path_of(key)),
                    format!("`{key}` can only be used with a directory (`dir`)"),
                );
            }
        }
        return None;
    };
    let pattern = match pattern {
        Some((loc, p)) if p.is_empty() => {
            problems.push(loc, "must not be empty");
            return None;
        }
        Some((loc, p)) => match glob_match(&p, "") {
            Ok(_) => p,
            Err(why) => {
                problems.push(loc, format!("invalid pattern: {why}"));
                return None;
            }
        },
        None => {
            problems.push(
                loc_at(file, 0, 0, &m.path_of("pattern")),
                "'pattern' is required when using 'dir' (e.g. pattern: \"*.db\")",
            );
            return None;
        }
    };
    let dir = expand_path(&dir);
    Some((
        dir_loc,
        DatabaseDir {
            template: Database::new(
                dir.clone(),
                Replica::File {
                    path: PathBuf::new(),
                },
            ),
            dir,
            pattern,
            recursive: recursive.unwrap_or(false),
            watch: watch.unwrap_or(false),
            meta_dir: meta_dir.map(|(_, p)| expand_path(&p)),
        },
    ))
}

/// Replica settings, from a replica or as top-level defaults for every replica.
#[derive(Clone, Debug, Default)]
struct ReplicaKeys {
    bucket: Option<String>,
    region: Option<String>,
    endpoint: Option<String>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    force_path_style: Option<bool>,
    skip_verify: Option<bool>,
    part_size: Option<u64>,
    concurrency: Option<u64>,
    storage_class: Option<String>,
    sync_interval: Option<Duration>,
}

impl ReplicaKeys {
    fn read(m: &mut Map<'_>, problems: &mut Problems) -> ReplicaKeys {
        let concurrency = m.integer("concurrency", problems).and_then(|(loc, n)| {
            if n == 0 {
                problems.push(loc, "must be at least 1");
                None
            } else {
                Some(n)
            }
        });
        ReplicaKeys {
            bucket: m.string("bucket", problems),
            region: m.string("region", problems),
            endpoint: m.string("endpoint", problems),
            access_key_id: m.string("access-key-id", problems),
            secret_access_key: m.string("secret-access-key", problems),
            force_path_style: m.bool("force-path-style", problems),
            skip_verify: m.bool("skip-verify", problems),
            part_size: m.size("part-size", problems),
            concurrency,
            storage_class: m.string("storage-class", problems),
            sync_interval: m.duration("sync-interval", problems),
        }
    }

    /// `self` with `defaults` filling what it leaves unset.
    fn or(self, defaults: &ReplicaKeys) -> ReplicaKeys {
        let d = defaults.clone();
        ReplicaKeys {
            bucket: self.bucket.or(d.bucket),
            region: self.region.or(d.region),
            endpoint: self.endpoint.or(d.endpoint),
            access_key_id: self.access_key_id.or(d.access_key_id),
            secret_access_key: self.secret_access_key.or(d.secret_access_key),
            force_path_style: self.force_path_style.or(d.force_path_style),
            skip_verify: self.skip_verify.or(d.skip_verify),
            part_size: self.part_size.or(d.part_size),
            concurrency: self.concurrency.or(d.concurrency),
            storage_class: self.storage_class.or(d.storage_class),
            sync_interval: self.sync_interval.or(d.sync_interval),
        }
    }
}

/// Store-wide settings every database gets (a database's own `snapshot` wins).
struct Globals {
    replica: ReplicaKeys,
    levels: Option<Vec<Duration>>,
    snapshot_interval: Option<Duration>,
    snapshot_retention: Option<Duration>,
    l0_retention: Option<Duration>,
    retention_enabled: Option<bool>,
}

fn parse(
    path: &Path,
    text: &str,
    expand: bool,
    overrides: &Overrides,
    problems: &mut Problems,
) -> Option<Config> {
    let expanded;
    let text = if expand {
        expanded = expand_env(text, |name| std::env::var(name).ok());
        expanded.as_str()
    } else {
        text
    };
    let root = match parse_yaml(text) {
        Ok(Some(root)) => root,
        Ok(None) => Node {
            line: 0,
            col: 0,
            value: Value::Null,
        },
        Err(((line, col), msg)) => {
            problems.push(loc_at(path, line, col, ""), msg);
            return None;
        }
    };
    let mut top = Map::new(path, "", root, problems)?;
    let replica_defaults = ReplicaKeys::read(&mut top, problems);
    let mut globals = Globals {
        replica: replica_defaults,
        levels: None,
        snapshot_interval: None,
        snapshot_retention: None,
        l0_retention: top.duration("l0-retention", problems),
        retention_enabled: None,
    };
    if let Some((loc, node)) = top.take("levels") {
        globals.levels = read_levels(path, loc, node, problems);
    }
    if let Some((loc, node)) = top.take("snapshot") {
        (globals.snapshot_interval, globals.snapshot_retention) =
            read_snapshot(path, &loc, node, problems);
    }
    if let Some((loc, node)) = top.take("retention")
        && let Some(mut m) = Map::new(path, loc.key.as_deref().unwrap_or(""), node, problems)
    {
        globals.retention_enabled = m.bool("enabled", problems);
        m.finish(&[], problems);
    }
    let from_file = top.duration("shutdown-sync-timeout", problems);
    let shutdown_sync_timeout = overrides
        .shutdown_sync_timeout
        .or(from_file)
        .unwrap_or(DEFAULT_SHUTDOWN_SYNC_TIMEOUT);
    let exec = top.text("exec", problems);

    let mut databases: Vec<Database> = Vec::new();
    let mut directories: Vec<DatabaseDir> = Vec::new();
    match top.take("dbs") {
        Some((loc, node)) => match node.value {
            Value::Seq(items) => {
                for (i, item) in items.into_iter().enumerate() {
                    let prefix = format!("dbs[{i}]");
                    let mut directory = None;
                    let db = read_db(
                        path,
                        &prefix,
                        item,
                        &globals,
                        overrides,
                        &mut directory,
                        problems,
                    );
                    if let (Some(db), Some(entry)) = (&db, directory) {
                        match directories.iter().find(|d| d.dir == db.path) {
                            Some(_) => problems.push(
                                loc_at(path, 0, 0, &format!("{prefix}.dir")),
                                format!("directory {} is listed twice", db.path.display()),
                            ),
                            None => directories.push(DatabaseDir {
                                dir: db.path.clone(),
                                template: db.clone(),
                                ..entry
                            }),
                        }
                        continue;
                    }
                    if let Some(db) = db {
                        match databases.iter().find(|d| d.path == db.path) {
                            Some(_) => problems.push(
                                loc_at(path, 0, 0, &format!("{prefix}.path")),
                                format!("database {} is listed twice", db.path.display()),
                            ),
                            None => databases.push(db),
                        }
                    }
                }
            }
            other => problems.push(loc, format!("expected a list, found {}", other.kind())),
        },
        None => problems.push(
            Loc::file(path),
            "no databases: add a `dbs:` list (or give DB_PATH and REPLICA_URL)",
        ),
    }
    let observe = read_observability(&mut top, problems);
    top.finish(IGNORED_TOP, problems);

    let service = match (&overrides.exec, exec) {
        _ if overrides.ignore_exec => None,
        (Some(cmd), _) => {
            let origin = Loc {
                file: PathBuf::from("-exec"),
                line: None,
                key: None,
            };
            exec_service(cmd, origin, &databases, problems)
        }
        (None, Some((loc, cmd))) => exec_service(&cmd, loc, &databases, problems),
        (None, None) => None,
    };
    if !problems.is_empty() {
        return None;
    }
    let mut config = replicate_config(
        Some(path.to_path_buf()),
        (databases, directories),
        service,
        shutdown_sync_timeout,
    );
    config.observe = observe;
    Some(config)
}

/// Litestream's `addr:` (the metrics listener; litevisor adds `/healthz` on it) and `logging:`
/// (`level`, `type: text|json`, `stderr`).
fn read_observability(top: &mut Map, problems: &mut Problems) -> super::Observability {
    use super::observe::{LogFilter, LogFormat, parse_listen_addr};
    let mut observe = super::Observability::default();
    if let Some((loc, addr)) = top.text("addr", problems)
        && !addr.trim().is_empty()
    {
        match parse_listen_addr(&addr) {
            Ok(addr) => observe.metrics_addr = Some(addr),
            Err(msg) => problems.push(loc, msg),
        }
    }
    if let Some((loc, node)) = top.take("logging")
        && let Some(mut m) = Map::new(
            top.file,
            loc.key.as_deref().unwrap_or("logging"),
            node,
            problems,
        )
    {
        if let Some((loc, level)) = m.text("level", problems) {
            match LogFilter::parse(&level) {
                Ok(filter) => observe.log.level = Some(filter),
                Err(msg) => problems.push(loc, msg),
            }
        }
        if let Some((loc, format)) = m.text("type", problems) {
            match LogFormat::parse(&format) {
                Ok(format) => observe.log.format = Some(format),
                Err(msg) => problems.push(loc, msg),
            }
        }
        observe.log.stderr = m.bool("stderr", problems);
        m.finish(&[], problems);
    }
    observe
}

fn read_levels(
    path: &Path,
    loc: Loc,
    node: Node,
    problems: &mut Problems,
) -> Option<Vec<Duration>> {
    let items = match node.value {
        Value::Seq(items) => items,
        other => {
            problems.push(loc, format!("expected a list, found {}", other.kind()));
            return None;
        }
    };
    let mut levels = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let prefix = format!("{}[{i}]", loc.key.as_deref().unwrap_or("levels"));
        let mut m = Map::new(path, &prefix, item, problems)?;
        match m.duration("interval", problems) {
            Some(d) if d.is_zero() => problems.push(
                loc_at(path, 0, 0, &m.path_of("interval")),
                "must be more than 0",
            ),
            Some(d) => levels.push(d),
            None => problems.push(
                loc_at(path, 0, 0, &m.path_of("interval")),
                "missing required key",
            ),
        }
        m.finish(
            &[(
                "retention",
                "a per-level retention does not exist in Litestream 0.5 either",
            )],
            problems,
        );
    }
    if levels.is_empty() {
        problems.push(loc, "needs at least one level");
        return None;
    }
    if levels.len() > 8 {
        problems.push(loc, "at most 8 levels (L9 holds the snapshots)");
        return None;
    }
    Some(levels)
}

fn read_snapshot(
    path: &Path,
    loc: &Loc,
    node: Node,
    problems: &mut Problems,
) -> (Option<Duration>, Option<Duration>) {
    let Some(mut m) = Map::new(
        path,
        loc.key.as_deref().unwrap_or("snapshot"),
        node,
        problems,
    ) else {
        return (None, None);
    };
    let interval = m.duration("interval", problems);
    let retention = m.duration("retention", problems);
    m.finish(&[], problems);
    (interval, retention)
}

/// One `dbs` entry. A directory entry (`dir:`) comes back as its template database (path = the
/// directory) with `directory` set to the entry's other settings.
fn read_db(
    path: &Path,
    prefix: &str,
    node: Node,
    globals: &Globals,
    overrides: &Overrides,
    directory: &mut Option<DatabaseDir>,
    problems: &mut Problems,
) -> Option<Database> {
    let (line, col) = (node.line, node.col);
    let mut m = Map::new(path, prefix, node, problems)?;
    let dir = read_directory_keys(path, &mut m, problems);
    let mut db_path = m.text("path", problems);
    match (&dir, db_path.take()) {
        (Some(_), Some((loc, _))) => {
            problems.push(loc, "cannot specify both `path` and `dir`");
            return None;
        }
        (Some((dir_loc, d)), None) => {
            db_path = Some((dir_loc.clone(), d.dir.display().to_string()))
        }
        (None, p) => db_path = p,
    }
    let meta_path = m.string("meta-path", problems);
    let monitor_interval = m.duration("monitor-interval", problems);
    let checkpoint_interval = m.duration("checkpoint-interval", problems);
    let busy_timeout = m.duration("busy-timeout", problems);
    let min_checkpoint_page_count = m.integer("min-checkpoint-page-count", problems);
    let truncate_page_n = m.integer("truncate-page-n", problems);
    let max_sync_wal_bytes = m.integer("max-sync-wal-bytes", problems);
    let restore_if_missing = m.bool("restore-if-db-not-exists", problems);
    let allow_network_fs = m.bool("allow-network-fs", problems);
    let snapshot = m
        .take("snapshot")
        .map(|(loc, node)| read_snapshot(path, &loc, node, problems));

    let replica_node = match (m.take("replica"), m.take("replicas")) {
        (Some(single), None) => Some(single),
        (None, Some((loc, node))) => match node.value {
            Value::Seq(mut items) if items.len() == 1 => {
                let item = items.remove(0);
                let key = format!("{}[0]", loc.key.as_deref().unwrap_or("replicas"));
                Some((
                    Loc {
                        key: Some(key),
                        ..loc
                    },
                    item,
                ))
            }
            Value::Seq(items) if items.is_empty() => {
                problems.push(loc, "needs one replica");
                None
            }
            Value::Seq(_) => {
                problems.push(
                    loc,
                    "several replicas per database are not supported (Litestream 0.5 refuses them too): keep one",
                );
                None
            }
            other => {
                problems.push(loc, format!("expected a list, found {}", other.kind()));
                None
            }
        },
        (Some(_), Some((loc, _))) => {
            problems.push(loc, "give either `replica` or `replicas`, not both");
            None
        }
        (None, None) => {
            problems.push(
                loc_at(path, line, col, &m.path_of("replica")),
                "missing required key",
            );
            None
        }
    };
    let replica =
        replica_node.and_then(|(loc, node)| read_replica(path, &loc, node, globals, problems));
    m.finish(&[], problems);

    let Some((path_loc, db_path)) = db_path else {
        problems.push(
            loc_at(path, line, col, &format!("{prefix}.path")),
            "missing required key",
        );
        return None;
    };
    if db_path.is_empty() {
        problems.push(path_loc, "must not be empty");
        return None;
    }
    let (replica, replica_sync_interval) = replica?;
    let mut db = Database::new(expand_path(&db_path), replica);
    db.restore = if overrides.restore_if_db_not_exists || restore_if_missing == Some(true) {
        RestorePolicy::IfMissing
    } else {
        RestorePolicy::Never
    };
    // litevisor uploads each L0 file as soon as it is written, so a sync is also an upload: the
    // slower of Litestream's two cadences (monitor-interval: WAL -> L0, sync-interval: L0 -> replica)
    // bounds both, which keeps the replica's request rate what it was under Litestream.
    db.sync_interval = monitor_interval
        .unwrap_or(db.sync_interval)
        .max(replica_sync_interval.unwrap_or(Duration::ZERO));
    if let Some(d) = checkpoint_interval {
        db.checkpoint_interval = d;
    }
    if let Some(d) = busy_timeout {
        db.busy_timeout = d;
    }
    if let Some((loc, n)) = min_checkpoint_page_count {
        match u32::try_from(n) {
            Ok(n) if n > 0 => db.min_checkpoint_page_count = n,
            _ => problems.push(loc, format!("must be an integer from 1 to {}", u32::MAX)),
        }
    }
    // 0 keeps the default, as in Litestream since 0.5.16.
    if let Some((loc, n)) = truncate_page_n.filter(|(_, n)| *n > 0) {
        match u32::try_from(n) {
            Ok(n) => db.truncate_page_n = n,
            Err(_) => problems.push(loc, format!("must be at most {}", u32::MAX)),
        }
    }
    if let Some((_, n)) = max_sync_wal_bytes {
        db.max_sync_wal_bytes = n;
    }
    db.meta_path = meta_path.map(|p| expand_path(&p));
    if let Some((_, entry)) = dir {
        if db.meta_path.is_some() && entry.meta_dir.is_some() {
            problems.push(
                loc_at(
                    path,
                    line,
                    col,
                    &m_path(&Loc::file(path), &format!("{prefix}.meta-dir")),
                ),
                "cannot specify both `meta-path` and `meta-dir`",
            );
        }
        *directory = Some(entry);
    }
    db.allow_network_fs = overrides.allow_network_fs || allow_network_fs == Some(true);
    if let Some(levels) = &globals.levels {
        db.levels = levels.clone();
    }
    let (own_interval, own_retention) = snapshot.unwrap_or((None, None));
    if let Some(d) = own_interval.or(globals.snapshot_interval) {
        db.snapshot_interval = d;
    }
    if let Some(d) = own_retention.or(globals.snapshot_retention) {
        db.snapshot_retention = d;
    }
    if let Some(d) = globals.l0_retention {
        db.l0_retention = d;
    }
    if let Some(enabled) = globals.retention_enabled {
        db.retention_enabled = enabled;
    }
    Some(db)
}

/// One replica: its location (a `url`, or `type` + `path`/`bucket`), its S3 settings over the
/// top-level defaults, and its `sync-interval`.
fn read_replica(
    path: &Path,
    loc: &Loc,
    node: Node,
    globals: &Globals,
    problems: &mut Problems,
) -> Option<(Replica, Option<Duration>)> {
    let (line, col) = (node.line, node.col);
    let mut m = Map::new(
        path,
        loc.key.as_deref().unwrap_or("replica"),
        node,
        problems,
    )?;
    for (key, why) in REJECTED_REPLICA {
        if let Some((loc, _)) = m.take(key) {
            problems.push(loc, *why);
        }
    }
    let kind = m.text("type", problems);
    let url = m.text("url", problems);
    let replica_path = m.text("path", problems);
    let had_bucket = m.entries.iter().flatten().any(|(n, _, _)| n == "bucket");
    let keys = ReplicaKeys::read(&mut m, problems).or(&globals.replica);
    m.finish(IGNORED_REPLICA, problems);
    let here = |key: &str| loc_at(path, line, col, &m_path(loc, key));

    let scheme = url.as_ref().and_then(|(_, u)| {
        is_url(u).then(|| u.split("://").next().unwrap_or("").to_ascii_lowercase())
    });
    let kind_name = match (&kind, &scheme) {
        (Some((kloc, k)), Some(s)) if k != s => {
            problems.push(
                kloc.clone(),
                format!("type {k:?} does not match the url's scheme {s:?}"),
            );
            return None;
        }
        (Some((_, k)), _) => k.clone(),
        (None, Some(s)) => s.clone(),
        (None, None) if url.is_some() => "file".to_string(),
        (None, None) if keys.bucket.is_some() => "s3".to_string(),
        (None, None) => "file".to_string(),
    };
    match kind_name.as_str() {
        "file" | "s3" => {}
        other => {
            let at = kind
                .as_ref()
                .map(|(l, _)| l.clone())
                .or_else(|| url.as_ref().map(|(l, _)| l.clone()))
                .unwrap_or_else(|| here("type"));
            problems.push(
                at,
                format!("replica type {other:?} is not supported by litevisor: use file or s3"),
            );
            return None;
        }
    }
    if let (Some((uloc, _)), Some((ploc, _))) = (&url, &replica_path) {
        let msg = format!(
            "conflicts with `url` at line {}: give the location once",
            uloc.line.map_or(0, |l| l.0)
        );
        problems.push(ploc.clone(), msg);
        return None;
    }

    let mut replica = match (&url, kind_name.as_str()) {
        (Some((uloc, u)), _) => match replica_from_url(u, Path::new("/")) {
            Ok(r) => r,
            Err(msg) => {
                problems.push(uloc.clone(), msg);
                return None;
            }
        },
        (None, "file") => match &replica_path {
            Some((_, p)) if !p.is_empty() => Replica::File {
                path: expand_path(p),
            },
            _ => {
                problems.push(here("path"), "a file replica needs `path` (or `url`)");
                return None;
            }
        },
        // A config `path` is the key prefix as written, like Litestream's.
        (None, _) => Replica::s3(
            String::new(),
            replica_path.map(|(_, p)| p).unwrap_or_default(),
        ),
    };
    match &mut replica {
        Replica::File { .. } => {
            // Top-level S3 defaults do not concern a file replica; its own S3 keys are a mistake.
            if had_bucket {
                problems.push(here("bucket"), "`bucket` applies only to s3 replicas");
            }
        }
        Replica::S3 { bucket, .. } => {
            if url.is_some() && had_bucket {
                problems.push(
                    here("bucket"),
                    "conflicts with `url`: give the location once",
                );
                return None;
            }
            // A top-level default `bucket` does not override a replica's own `url`.
            if let Some(b) = keys.bucket
                && url.is_none()
            {
                *bucket = b;
            }
            if bucket.is_empty() {
                problems.push(here("bucket"), "an s3 replica needs `bucket` (or `url`)");
                return None;
            }
        }
    }
    replica.apply_s3_keys(S3Keys {
        endpoint: keys.endpoint.map(|e| with_scheme(&e)),
        region: keys.region,
        force_path_style: keys.force_path_style,
        skip_verify: keys.skip_verify,
        part_size: keys.part_size,
        concurrency: keys.concurrency,
        storage_class: keys.storage_class,
        access_key_id: keys.access_key_id,
        secret_access_key: keys.secret_access_key,
    });
    Some((replica, keys.sync_interval))
}

fn m_path(loc: &Loc, key: &str) -> String {
    join(loc.key.as_deref().unwrap_or(""), key)
}

/// An endpoint without a scheme gets one, as Litestream does: http for local hosts, else https.
fn with_scheme(endpoint: &str) -> String {
    if endpoint.contains("://") {
        return endpoint.to_string();
    }
    // The URL parser knows the local-host rule; reuse it through a throwaway URL.
    match ReplicaUrl::parse(&format!("s3://b/p?endpoint={endpoint}")) {
        Ok(ReplicaUrl::S3(u)) => u.endpoint.unwrap_or_else(|| endpoint.to_string()),
        _ => format!("https://{endpoint}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn load_text(text: &str, overrides: &Overrides) -> (Option<Config>, Problems) {
        let mut problems = Problems::default();
        let config = parse(
            Path::new("/etc/ls.yml"),
            text,
            true,
            overrides,
            &mut problems,
        );
        (config, problems)
    }

    fn ok(text: &str) -> (Config, Vec<String>) {
        let (config, mut problems) = load_text(text, &Overrides::default());
        let warnings: Vec<String> = problems
            .take_warnings()
            .iter()
            .map(|w| w.to_string())
            .collect();
        assert!(problems.is_empty(), "{}", problems.into_error());
        (config.expect("config"), warnings)
    }

    fn errors(text: &str) -> String {
        let (config, problems) = load_text(text, &Overrides::default());
        assert!(config.is_none());
        problems.into_error().to_string()
    }

    #[test]
    fn env_expansion_follows_go() {
        let env = |name: &str| match name {
            "A" => Some("x".to_string()),
            "B_2" => Some("y".to_string()),
            _ => None,
        };
        assert_eq!(expand_env("$A/${B_2}/$UNSET/end", env), "x/y//end");
        assert_eq!(expand_env("cost $ 5, 100%$", env), "cost $ 5, 100%$");
        assert_eq!(expand_env("pa$$word", env), "paword");
        assert_eq!(expand_env("a${}b", env), "ab");
        assert_eq!(expand_env("${A", env), "A");
        assert_eq!(expand_env("$Ab", env), "");
        assert_eq!(expand_env("é$A€", env), "éx€");
    }

    #[test]
    fn shell_words() {
        assert_eq!(
            split_command(r#"myapp -flag "two words" 'it''s' a\ b "q\"x\\" "\n""#).unwrap(),
            ["myapp", "-flag", "two words", "its", "a b", "q\"x\\", "\\n"]
        );
        assert_eq!(split_command("  ").unwrap(), Vec::<String>::new());
        assert_eq!(
            split_command("sh -c 'echo $HOME; exit 3'").unwrap(),
            ["sh", "-c", "echo $HOME; exit 3"]
        );
        assert!(
            split_command("a 'b")
                .unwrap_err()
                .contains("unbalanced single quote")
        );
        assert!(
            split_command("a \"b")
                .unwrap_err()
                .contains("unbalanced double quote")
        );
        assert!(split_command("a \\").is_err());
        assert_eq!(split_command("''").unwrap(), [""]);
    }

    #[test]
    fn databases_replicas_and_defaults() {
        let (config, warnings) = ok("
access-key-id: AKID
secret-access-key: SECRETKEY
region: eu-west-1
shutdown-sync-timeout: 5s
levels:
  - interval: 10s
  - interval: 1m
snapshot:
  interval: 1h
  retention: 2h
retention:
  enabled: false
dbs:
  - path: /data/a.db
    monitor-interval: 2s
    checkpoint-interval: 30s
    busy-timeout: 3s
    min-checkpoint-page-count: 50
    truncate-page-n: 0
    max-sync-wal-bytes: 1024
    restore-if-db-not-exists: true
    meta-path: /meta/a
    replica:
      url: s3://bkt/a?endpoint=localhost:9000
      sync-interval: 5s
  - path: /data/b.db
    allow-network-fs: yes
    snapshot:
      interval: 30m
    replicas:
      - type: s3
        bucket: b2
        path: /keep/as/written
        access-key-id: OWN
        part-size: 5MiB
  - path: /data/c.db
    replica:
      path: /backups/c
");
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(config.services.is_empty());
        assert_eq!(config.shutdown_timeout, Duration::from_secs(5));
        let [a, b, c] = config.databases.as_slice() else {
            panic!("{:?}", config.databases)
        };
        assert_eq!(a.path, Path::new("/data/a.db"));
        assert_eq!(a.restore, RestorePolicy::IfMissing);
        assert_eq!(a.sync_interval, Duration::from_secs(5));
        assert_eq!(a.checkpoint_interval, Duration::from_secs(30));
        assert_eq!(a.busy_timeout, Duration::from_secs(3));
        assert_eq!(a.min_checkpoint_page_count, 50);
        assert_eq!(a.truncate_page_n, 121_359, "0 keeps the default");
        assert_eq!(a.max_sync_wal_bytes, 1024);
        assert_eq!(a.meta_path.as_deref(), Some(Path::new("/meta/a")));
        assert_eq!(a.levels, [Duration::from_secs(10), Duration::from_secs(60)]);
        assert_eq!(
            (a.snapshot_interval, a.snapshot_retention),
            (Duration::from_secs(3600), Duration::from_secs(7200))
        );
        assert!(!a.retention_enabled && !a.allow_network_fs);
        let Replica::S3 {
            bucket,
            path,
            endpoint,
            region,
            force_path_style,
            access_key_id,
            secret_access_key,
            ..
        } = &a.replica
        else {
            panic!("{:?}", a.replica)
        };
        assert_eq!((bucket.as_str(), path.as_str()), ("bkt", "a"));
        assert_eq!(endpoint.as_deref(), Some("http://localhost:9000"));
        assert_eq!(region.as_deref(), Some("eu-west-1"), "top-level default");
        assert!(*force_path_style);
        assert_eq!(access_key_id.as_ref().map(Secret::expose), Some("AKID"));
        assert_eq!(
            secret_access_key.as_ref().map(Secret::expose),
            Some("SECRETKEY")
        );

        assert_eq!(b.restore, RestorePolicy::Never);
        assert!(b.allow_network_fs);
        assert_eq!(b.sync_interval, Duration::from_secs(1));
        assert_eq!(b.snapshot_interval, Duration::from_secs(1800));
        let Replica::S3 {
            bucket,
            path,
            access_key_id,
            part_size,
            force_path_style,
            ..
        } = &b.replica
        else {
            panic!("{:?}", b.replica)
        };
        assert_eq!((bucket.as_str(), path.as_str()), ("b2", "/keep/as/written"));
        assert_eq!(
            access_key_id.as_ref().map(Secret::expose),
            Some("OWN"),
            "own key wins"
        );
        assert_eq!(*part_size, Some(5 * 1024 * 1024));
        assert!(!force_path_style);
        assert_eq!(
            c.replica,
            Replica::File {
                path: "/backups/c".into()
            }
        );
    }

    #[test]
    fn unknown_and_ignored_keys_warn_with_line_and_key() {
        let (_, warnings) = ok("mcp-addr: :9091
dbs:
  - path: /data/a.db
    replica:
      url: file:///backups/a
      retention: 24h
    chekpoint-interval: 1m
logging:
  level: debug
");
        assert_eq!(warnings.len(), 3, "{warnings:?}");
        assert!(
            warnings
                .iter()
                .any(|w| w == "/etc/ls.yml:1:1: mcp-addr: ignored: litevisor has no MCP server"),
            "{warnings:?}"
        );
        assert!(
            warnings
                .iter()
                .any(|w| w == "/etc/ls.yml:7:5: dbs[0].chekpoint-interval: unknown key, ignored"),
            "{warnings:?}"
        );
        assert!(
            warnings
                .iter()
                .any(|w| w.starts_with("/etc/ls.yml:6:7: dbs[0].replica.retention: ignored")),
            "{warnings:?}"
        );
    }

    #[test]
    fn addr_and_logging_are_read() {
        let (config, warnings) = ok("addr: \":9090\"
logging:
  level: DEBUG
  type: json
  stderr: false
dbs:
  - path: /data/a.db
    replica:
      url: file:///backups/a
");
        assert!(warnings.is_empty(), "{warnings:?}");
        let observe = &config.observe;
        assert_eq!(observe.metrics_addr.as_deref(), Some(":9090"));
        assert_eq!(observe.log.format, Some(crate::config::LogFormat::Json));
        assert_eq!(observe.log.stderr, Some(false));
        assert_eq!(
            observe.log.level,
            Some(crate::config::LogFilter::level(
                tracing::level_filters::LevelFilter::DEBUG
            ))
        );
        let err = errors(
            "logging:\n  level: verbose\n  type: logfmt\naddr: \"9090\"\ndbs:\n  - path: /a.db\n    replica:\n      url: file:///b\n",
        );
        assert!(
            err.contains("/etc/ls.yml:2:3: logging.level: invalid log level \"verbose\""),
            "{err}"
        );
        assert!(err.contains("logging.type: invalid log format"), "{err}");
        assert!(err.contains("addr: invalid address"), "{err}");
    }

    #[test]
    fn rejected_keys_name_file_line_and_key() {
        let err = errors(
            "dbs:
  - dir: /data
    replica:
      url: gs://bucket/x
  - path: /data/b.db
    replicas:
      - url: file:///r1
      - url: file:///r2
  - path: /data/c.db
    replica:
      type: sftp
      host: example
  - path: /data/d.db
    replica:
      url: file:///r
      age:
        recipients: [x]
",
        );
        for expected in [
            "dbs[0].pattern: 'pattern' is required when using 'dir'",
            "/etc/ls.yml:4:7: dbs[0].replica.url: replica type \"gs\" is not supported",
            "/etc/ls.yml:6:5: dbs[1].replicas: several replicas per database are not supported",
            "/etc/ls.yml:11:7: dbs[2].replica.type: replica type \"sftp\" is not supported",
            "/etc/ls.yml:16:7: dbs[3].replica.age: age encryption",
        ] {
            assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
        }
    }

    #[test]
    fn directory_entries_follow_litestreams_rules() {
        let (config, _) = ok("dbs:
  - dir: /data/tenants
    pattern: '*.db'
    recursive: true
    watch: true
    monitor-interval: 5s
    replica:
      url: s3://bucket/tenants
  - path: /data/app.db
    replica:
      url: file:///backups/app
");
        assert_eq!(config.databases.len(), 1);
        let [d] = &config.directories[..] else {
            panic!("{:?}", config.directories)
        };
        assert_eq!(d.dir, Path::new("/data/tenants"));
        assert_eq!(
            (d.pattern.as_str(), d.recursive, d.watch),
            ("*.db", true, true)
        );
        let db = d.database(Path::new("/data/tenants/eu/acme.db")).unwrap();
        assert_eq!(db.replica.to_string(), "s3://bucket/tenants/eu/acme.db");
        assert_eq!(db.sync_interval, Duration::from_secs(5));
        let err = errors(
            "dbs:
  - path: /a.db
    dir: /data
    pattern: '*.db'
    replica: {url: file:///r}
  - path: /b.db
    watch: true
    replica: {url: file:///r}
  - dir: /data
    pattern: '[a-'
    replica: {url: file:///r}
",
        );
        for expected in [
            "dbs[0].path: cannot specify both `path` and `dir`",
            "dbs[1].watch: `watch` can only be used with a directory",
            "dbs[2].pattern: invalid pattern",
        ] {
            assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
        }
    }

    #[test]
    fn syntax_and_type_errors() {
        assert!(errors("dbs: [").contains("/etc/ls.yml:"));
        let err = errors(
            "dbs:\n  - path: /a\n    monitor-interval: often\n    replica: {url: file:///r}\n",
        );
        assert!(
            err.contains("/etc/ls.yml:3:5: dbs[0].monitor-interval: invalid duration"),
            "{err}"
        );
        let err = errors("dbs:\n  - path: /a\n    path: /b\n    replica: {url: file:///r}\n");
        assert!(
            err.contains("/etc/ls.yml:3:5: dbs[0].path: set twice (first at line 2)"),
            "{err}"
        );
        assert!(errors("exec: x\n").contains("no databases"));
        let err = errors("dbs:\n  - path: /a\n    replica: {url: file:///r}\nexec: \"app 'x\"\n");
        assert!(
            err.contains("/etc/ls.yml:4:1: exec:") && err.contains("unbalanced"),
            "{err}"
        );
    }

    #[test]
    fn exec_becomes_the_main_service_and_extends_the_deadline() {
        let (config, _) =
            ok("exec: sh -c 'exit 3'\ndbs:\n  - path: /a.db\n    replica: {url: file:///r}\n");
        let [svc] = config.services.as_slice() else {
            panic!()
        };
        assert!(svc.main);
        assert_eq!(svc.command, ["sh", "-c", "exit 3"].map(OsString::from));
        assert_eq!(svc.databases, [PathBuf::from("/a.db")]);
        assert_eq!(
            config.shutdown_timeout,
            DEFAULT_SHUTDOWN_SYNC_TIMEOUT + EXEC_STOP_GRACE
        );
        let overrides = Overrides {
            exec: Some("true".into()),
            restore_if_db_not_exists: true,
            allow_network_fs: true,
            ..Overrides::default()
        };
        let (config, problems) = load_text(
            "exec: no-such-program-lv\ndbs:\n  - path: /a.db\n    replica: {url: file:///r}\n",
            &overrides,
        );
        assert!(problems.is_empty());
        let config = config.expect("config");
        assert_eq!(config.services[0].command, [OsString::from("true")]);
        assert_eq!(config.databases[0].restore, RestorePolicy::IfMissing);
        assert!(config.databases[0].allow_network_fs);
        assert!(
            errors(
                "exec: no-such-program-lv\ndbs:\n  - path: /a.db\n    replica: {url: file:///r}\n"
            )
            .contains("no-such-program-lv")
        );
    }

    #[test]
    fn anchors_and_merge_keys() {
        let (config, warnings) = ok("
x-common: &common
  monitor-interval: 3s
dbs:
  - <<: *common
    path: /a.db
    replica: {url: file:///r}
");
        assert_eq!(config.databases[0].sync_interval, Duration::from_secs(3));
        assert_eq!(warnings.len(), 1, "x-common is unknown: {warnings:?}");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("5MB"), Ok(5_000_000));
        assert_eq!(parse_size("5MiB"), Ok(5 * 1024 * 1024));
        assert_eq!(parse_size("1024"), Ok(1024));
        assert!(parse_size("lots").is_err());
    }
}
