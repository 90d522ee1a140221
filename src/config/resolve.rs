//! Turns the config file, the services directory and the database list into the final [`Config`]:
//! reads the top-level keys, gathers the service definitions, fills defaults, and resolves each
//! service's argv, environment, credentials and paths. The graph checks live in `graph`, the
//! executability checks in `program`.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;

use super::diag::{ConfigError, Loc, Problems, Source};
use super::env::{EnvBuilder, read_env_file};
use super::graph::{check_main, dedupe, direct_deps, expand_bundles, start_order};
use super::program::{DEFAULT_PATH, check_program, script_argv};
use super::spec::ServiceSpec;
use super::tree::{self, CommandSpec, Located, Node, TableReader};
use super::{
    Backoff, Config, DEFAULT_SERVICES_DIR, Database, GiveUp, Readiness, RestartPolicy,
    SERVICE_NAME_ENV, Service, ServiceKind, credentials, database, execline, values,
};
use super::{pipeline, s6dir, s6overlay};

pub const DEFAULT_LOG_PREFIX: bool = true;
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);
pub const DEFAULT_RESTART_DELAY: Duration = Duration::from_millis(100);
pub const DEFAULT_RESTART_DELAY_MAX: Duration = Duration::from_secs(30);
pub const DEFAULT_RESTART_JITTER: f64 = 0.1;
pub const DEFAULT_STABLE_AFTER: Duration = Duration::from_secs(10);
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_FINISH_TIMEOUT: Duration = Duration::from_secs(5);

/// Top-level settings every service inherits.
struct Globals {
    log_prefix: bool,
    grace: Duration,
    /// Directory of the config file: base of its relative paths.
    config_dir: PathBuf,
}

/// `explicit`: the path was asked for (flag or variable), so it must exist.
pub fn load_file(path: &Path, explicit: bool) -> Result<Config, ConfigError> {
    load_with_default_dir(path, explicit, Path::new(DEFAULT_SERVICES_DIR))
}

fn load_with_default_dir(
    path: &Path,
    explicit: bool,
    default_services_dir: &Path,
) -> Result<Config, ConfigError> {
    let mut problems = Problems::default();
    let config = load_into(path, explicit, default_services_dir, &mut problems);
    match config {
        Some(mut config) if problems.is_empty() => {
            config.warnings = problems.take_warnings();
            Ok(config)
        }
        _ => Err(problems.into_error()),
    }
}

fn load_into(
    path: &Path,
    explicit: bool,
    default_services_dir: &Path,
    problems: &mut Problems,
) -> Option<Config> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => Some(text),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound && !explicit => None,
        Err(err) => {
            problems.push(
                Loc::file(path),
                format!("cannot read the configuration file: {err}"),
            );
            return None;
        }
    };
    // Absolute, so that paths derived from it (a `run` file's argv[0]) survive the chdir to a service's
    // working directory.
    let config_dir = std::path::absolute(path)
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf));
    let config_dir = config_dir.unwrap_or_else(|| PathBuf::from("/"));
    let mut globals = Globals {
        log_prefix: DEFAULT_LOG_PREFIX,
        grace: DEFAULT_GRACE,
        config_dir,
    };
    let mut shutdown_timeout = DEFAULT_SHUTDOWN_TIMEOUT;
    let mut services_dir: Option<Located<PathBuf>> = None;
    let mut specs = Vec::new();
    let mut databases = Vec::new();
    let mut directories = Vec::new();
    let mut observe = super::Observability::default();

    let src = text.map(|text| Source {
        path: path.to_path_buf(),
        text,
    });
    if let Some(src) = &src {
        let root = tree::parse(src, problems)?;
        let mut t = TableReader::new(src, "", root);
        if let Some(v) = t.string("services_dir", problems) {
            let joined = globals.config_dir.join(&v.value);
            let value = std::path::absolute(&joined).unwrap_or(joined);
            services_dir = Some(Located { value, loc: v.loc });
        }
        if let Some(v) = t.bool("log_prefix", problems) {
            globals.log_prefix = v.value;
        }
        if let Some(d) = duration(&mut t, "shutdown_timeout", problems) {
            if d.value.is_zero() {
                problems.push(d.loc, "must be more than 0");
            } else {
                shutdown_timeout = d.value;
            }
        }
        if let Some(d) = duration(&mut t, "grace", problems) {
            globals.grace = d.value;
        }
        read_observability(&mut t, &mut observe, problems);
        if let Some((loc, node)) = t.take("services") {
            specs = read_service_tables(src, loc, node, &globals.config_dir, problems);
        }
        if let Some((loc, node)) = t.take("databases") {
            (databases, directories) =
                database::read_all(src, loc, node, &globals.config_dir, problems);
        }
        t.finish(problems);
    }

    let scanned_dir = match &services_dir {
        Some(dir) if dir.value.is_dir() => Some(dir.value.clone()),
        Some(dir) => {
            problems.push(
                dir.loc.clone(),
                format!(
                    "the services directory {} does not exist",
                    dir.value.display()
                ),
            );
            None
        }
        // Unset: `services.d` next to the config file (so /etc/litevisor/services.d for the default
        // file), used when it exists.
        None if src.is_some() => Some(globals.config_dir.join("services.d")).filter(|d| d.is_dir()),
        None if default_services_dir.is_dir() => Some(default_services_dir.to_path_buf()),
        None => {
            let msg = format!(
                "no configuration: neither this file nor the services directory {} exists",
                default_services_dir.display()
            );
            problems.push(Loc::file(path), msg);
            return None;
        }
    };
    let mut bundles = Vec::new();
    match scanned_dir.as_deref().map(|d| (d, s6overlay::root_of(d))) {
        Some((_, Some(etc))) => {
            let layer = s6overlay::scan(&etc, problems);
            specs.extend(layer.specs);
            bundles = layer.bundles;
            if let Some(grace) = layer.grace {
                globals.grace = grace;
            }
        }
        Some((dir, None)) => {
            let (dir_specs, dir_bundles) = s6dir::scan(dir, false, problems);
            specs.extend(dir_specs);
            bundles = dir_bundles;
        }
        None => {}
    }
    if specs.is_empty() && databases.is_empty() && directories.is_empty() && problems.is_empty() {
        problems.push(
            Loc::file(src.as_ref().map_or(path, |s| &s.path)),
            "no services and no databases are configured",
        );
    }

    let mut specs = dedupe(specs, &bundles, problems);
    pipeline::link(&mut specs, &mut bundles, problems);
    expand_bundles(&specs, &bundles, problems);
    // A service's `databases` may name a directory entry by its `dir` too.
    let known_databases: Vec<Database> = databases
        .iter()
        .cloned()
        .chain(directories.iter().map(|d| d.template.clone()))
        .collect();
    let mut services: Vec<Service> = specs
        .iter()
        .filter_map(|spec| resolve_service(spec, &globals, &known_databases, problems))
        .collect();
    check_main(&specs, problems);
    let order = start_order(&specs, &bundles, problems)?;
    if services.len() != specs.len() {
        return None;
    }
    for service in &mut services {
        if let Some(spec) = specs.iter().find(|s| s.name == service.name) {
            service.depends_on = direct_deps(spec, &specs, &bundles);
        }
    }
    let mut by_name: BTreeMap<String, Service> =
        services.drain(..).map(|s| (s.name.clone(), s)).collect();
    let mut ordered: Vec<Service> = order
        .iter()
        .filter_map(|name| by_name.remove(name))
        .collect();
    for i in 0..ordered.len() {
        let name = ordered[i].name.clone();
        let dependents = ordered
            .iter()
            .filter(|s| s.depends_on.contains(&name))
            .map(|s| s.name.clone())
            .collect();
        ordered[i].dependents = dependents;
    }
    Some(Config {
        file: src.map(|s| s.path),
        services_dir: scanned_dir,
        log_prefix: globals.log_prefix,
        shutdown_timeout,
        grace: globals.grace,
        services: ordered,
        databases,
        directories,
        observe,
        warnings: Vec::new(),
    })
}

/// `log_format`, `metrics_addr` and `health_upload_lag` (see [`super::observe`]).
fn read_observability(
    t: &mut TableReader<'_>,
    observe: &mut super::Observability,
    problems: &mut Problems,
) {
    use super::observe::{LogFormat, parse_listen_addr};
    if let Some(v) = t.string("log_format", problems) {
        match LogFormat::parse(&v.value) {
            Ok(format) => observe.log.format = Some(format),
            Err(msg) => problems.push(v.loc, msg),
        }
    }
    if let Some(v) = t.string("metrics_addr", problems) {
        match parse_listen_addr(&v.value) {
            Ok(addr) => observe.metrics_addr = Some(addr),
            Err(msg) => problems.push(v.loc, msg),
        }
    }
    if let Some(d) = duration(t, "health_upload_lag", problems) {
        if d.value.is_zero() {
            problems.push(d.loc, "must be more than 0");
        } else {
            observe.health_upload_lag = Some(d.value);
        }
    }
}

fn duration(
    t: &mut TableReader<'_>,
    key: &str,
    problems: &mut Problems,
) -> Option<Located<Duration>> {
    let v = t.scalar_text(key, problems)?;
    match values::duration(&v.value) {
        Ok(d) => Some(Located {
            value: d,
            loc: v.loc,
        }),
        Err(msg) => {
            problems.push(v.loc, msg);
            None
        }
    }
}

fn read_service_tables(
    src: &Source,
    loc: Loc,
    node: tree::Spanned<Node>,
    config_dir: &Path,
    problems: &mut Problems,
) -> Vec<ServiceSpec> {
    let entries = match node.into_inner() {
        Node::Table(entries) => entries,
        other => {
            problems.push(
                loc,
                format!(
                    "expected a table of services ([services.NAME]), found {}",
                    other.kind()
                ),
            );
            return Vec::new();
        }
    };
    let mut specs = Vec::new();
    for (name, body) in entries {
        let path = format!("services.{}", name.get_ref());
        let at = src.loc(name.span().start, &path);
        if let Err(msg) = values::service_name(name.get_ref()) {
            problems.push(at, msg);
            continue;
        }
        let Node::Table(body) = body.into_inner() else {
            problems.push(at, "expected a table ([services.NAME])");
            continue;
        };
        let mut spec = ServiceSpec::new(name.get_ref(), at.clone(), config_dir);
        spec.read_table(TableReader::new(src, &path, body), problems);
        if spec.command.is_none() {
            problems.push(
                Loc {
                    key: Some(format!("{path}.command")),
                    ..at
                },
                "missing required key",
            );
        }
        specs.push(spec);
    }
    specs
}

/// Keys that mean nothing for a oneshot; setting one is an error rather than silently ignored.
fn oneshot_misuse(spec: &ServiceSpec, problems: &mut Problems) {
    let locs = [
        spec.restart_delay.as_ref().map(|v| &v.loc),
        spec.restart_delay_max.as_ref().map(|v| &v.loc),
        spec.restart_jitter.as_ref().map(|v| &v.loc),
        spec.stable_after.as_ref().map(|v| &v.loc),
        spec.max_restarts.as_ref().map(|v| &v.loc),
        spec.give_up.as_ref().map(|v| &v.loc),
        spec.notification_fd.as_ref().map(|v| &v.loc),
        spec.ready_tcp.as_ref().map(|v| &v.loc),
        spec.ready_command.as_ref().map(|v| &v.loc),
        spec.finish.as_ref().map(|v| &v.loc),
        spec.finish_timeout.as_ref().map(|v| &v.loc),
    ];
    for loc in locs.into_iter().flatten() {
        problems.push(
            loc.clone(),
            "applies only to longrun services; this one is a oneshot",
        );
    }
    if let Some(r) = spec
        .restart
        .as_ref()
        .filter(|r| r.value != RestartPolicy::Never)
    {
        problems.push(
            r.loc.clone(),
            "a oneshot is never restarted: remove `restart` or make the service a longrun",
        );
    }
}

fn resolve_service(
    spec: &ServiceSpec,
    globals: &Globals,
    databases: &[Database],
    problems: &mut Problems,
) -> Option<Service> {
    let before = problems_marker(problems);
    let kind = spec.kind.as_ref().map_or(ServiceKind::Longrun, |k| k.value);
    if kind == ServiceKind::Oneshot {
        oneshot_misuse(spec, problems);
    }
    let readiness_keys: Vec<&Loc> = [
        spec.notification_fd.as_ref().map(|v| &v.loc),
        spec.ready_tcp.as_ref().map(|v| &v.loc),
        spec.ready_command.as_ref().map(|v| &v.loc),
    ]
    .into_iter()
    .flatten()
    .collect();
    if let [first, rest @ ..] = readiness_keys.as_slice() {
        for other in rest {
            let msg = format!(
                "only one readiness check per service; {} is already set",
                first.key.as_deref().unwrap_or("one")
            );
            problems.push((*other).clone(), msg);
        }
    }

    // Credentials first: HOME/USER/LOGNAME come from the user's entry.
    let mut resolved_user = None;
    match (&spec.user, &spec.group) {
        (Some(user), group) => match credentials::resolve(user, group.as_ref()) {
            Ok(r) => resolved_user = Some(r),
            Err((at, msg)) => problems.push(at.loc, msg),
        },
        (None, Some(group)) => problems.push(group.loc.clone(), "`group` needs `user` as well"),
        (None, None) => {}
    }

    let mut env = EnvBuilder::default();
    if !spec.clear_env.as_ref().is_some_and(|c| c.value) {
        for (name, value) in std::env::vars_os() {
            env.set(name, value);
        }
    }
    if let Some(r) = &resolved_user {
        if let Some(name) = &r.credentials.user_name {
            env.set("USER", name);
            env.set("LOGNAME", name);
        }
        if let Some(home) = &r.home {
            env.set("HOME", home);
        }
    }
    for file in spec.env_files.iter().flat_map(|f| &f.value) {
        let path = spec.base_dir.join(&file.value);
        if !path.is_file() {
            problems.push(
                file.loc.clone(),
                format!("env file {} does not exist", path.display()),
            );
            continue;
        }
        for (name, value) in read_env_file(&path, problems).unwrap_or_default() {
            env.set(name, value);
        }
    }
    for (name, value) in spec.environment.iter().flat_map(|e| &e.value) {
        env.set(name, value);
    }
    env.set(SERVICE_NAME_ENV, &spec.name);

    let working_dir = match &spec.working_dir {
        Some(dir) => {
            let path = spec.base_dir.join(&dir.value);
            if !path.is_dir() {
                problems.push(
                    dir.loc.clone(),
                    format!("directory {} does not exist", path.display()),
                );
            }
            Some(path)
        }
        None => spec.service_dir.clone(),
    };
    let cwd = working_dir
        .clone()
        .or_else(|| std::env::current_dir().ok())
        .unwrap_or_else(|| PathBuf::from("/"));
    let path_var = env
        .get("PATH")
        .cloned()
        .unwrap_or_else(|| DEFAULT_PATH.into());
    let program = |c: &Located<CommandSpec>, problems: &mut Problems| -> Vec<OsString> {
        argv(&c.value, &path_var, &cwd).unwrap_or_else(|msg| {
            problems.push(c.loc.clone(), msg);
            vec![OsString::new()]
        })
    };
    let command = spec.command.as_ref().map(|c| program(c, problems));
    let finish = spec.finish.as_ref().map(|c| program(c, problems));
    let down = spec.down.as_ref().map(|c| program(c, problems));
    let readiness = match (&spec.notification_fd, &spec.ready_tcp, &spec.ready_command) {
        (Some(fd), _, _) => Readiness::NotificationFd(fd.value),
        (None, Some(tcp), _) => Readiness::Tcp {
            host: tcp.value.0.clone(),
            port: tcp.value.1,
        },
        (None, None, Some(cmd)) => Readiness::Command(program(cmd, problems)),
        (None, None, None) => Readiness::Started,
    };

    let backoff = backoff(spec, problems);
    let databases = match &spec.databases {
        None => databases.iter().map(|d| d.path.clone()).collect(),
        Some(list) => list
            .value
            .iter()
            .filter_map(|d| {
                let path = globals.config_dir.join(&d.value);
                let found = databases.iter().any(|db| db.path == path);
                if !found {
                    problems.push(
                        d.loc.clone(),
                        format!("no [[databases]] entry has path {:?}", d.value),
                    );
                }
                found.then_some(path)
            })
            .collect(),
    };
    if problems_marker(problems) != before {
        return None;
    }
    Some(Service {
        name: spec.name.clone(),
        defined_in: spec.defined_in().file,
        kind,
        command: command?,
        depends_on: Vec::new(),
        dependents: Vec::new(),
        restart: spec.restart.as_ref().map_or(
            if kind == ServiceKind::Oneshot {
                RestartPolicy::Never
            } else {
                RestartPolicy::Always
            },
            |r| r.value,
        ),
        backoff,
        main: spec.main.as_ref().is_some_and(|m| m.value),
        readiness,
        ready_timeout: optional(
            spec.ready_timeout
                .as_ref()
                .map_or(DEFAULT_READY_TIMEOUT, |t| t.value),
        ),
        stop_signal: spec
            .stop_signal
            .as_ref()
            .map_or(Signal::SIGTERM, |s| s.value),
        stop_grace: spec.stop_grace.as_ref().map_or(globals.grace, |g| g.value),
        env: env.build(),
        working_dir,
        credentials: resolved_user.map(|r| r.credentials),
        finish,
        down,
        stdout_to: spec.producer_for.as_ref().map(|p| p.value.clone()),
        stdin_piped: spec.consumer_for.is_some(),
        finish_timeout: optional(
            spec.finish_timeout
                .as_ref()
                .map_or(DEFAULT_FINISH_TIMEOUT, |t| t.value),
        ),
        log_prefix: spec
            .log_prefix
            .as_ref()
            .map_or(globals.log_prefix, |l| l.value),
        databases,
    })
}

/// Problems are only ever appended, so their count tells whether a step added any.
fn problems_marker(problems: &Problems) -> usize {
    problems.len()
}

/// 0 means "no limit" for timeouts that may be disabled.
fn optional(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

fn backoff(spec: &ServiceSpec, problems: &mut Problems) -> Backoff {
    let initial = spec
        .restart_delay
        .as_ref()
        .map_or(DEFAULT_RESTART_DELAY, |d| d.value);
    let max = spec
        .restart_delay_max
        .as_ref()
        .map_or(DEFAULT_RESTART_DELAY_MAX, |d| d.value);
    if let Some(d) = spec.restart_delay.as_ref().filter(|d| d.value.is_zero()) {
        problems.push(
            d.loc.clone(),
            "must be more than 0 (a crashing service would spin)",
        );
    }
    if initial > max {
        let at = spec
            .restart_delay_max
            .as_ref()
            .or(spec.restart_delay.as_ref())
            .map(|d| d.loc.clone());
        if let Some(at) = at {
            problems.push(
                at,
                format!("restart_delay ({initial:?}) is longer than restart_delay_max ({max:?})"),
            );
        }
    }
    Backoff {
        initial,
        max,
        jitter: spec
            .restart_jitter
            .as_ref()
            .map_or(DEFAULT_RESTART_JITTER, |j| j.value),
        stable_after: spec
            .stable_after
            .as_ref()
            .map_or(DEFAULT_STABLE_AFTER, |d| d.value),
        max_restarts: spec
            .max_restarts
            .as_ref()
            .map(|m| m.value)
            .filter(|n| *n > 0),
        give_up: spec.give_up.as_ref().map_or(GiveUp::Shutdown, |g| g.value),
    }
}

/// The argv of a command for a service whose PATH is `path_var` and working directory `cwd`, once
/// its program is known to be runnable.
fn argv(command: &CommandSpec, path_var: &OsString, cwd: &Path) -> Result<Vec<OsString>, String> {
    let argv = match command {
        CommandSpec::Argv(argv) => argv.iter().map(OsString::from).collect(),
        CommandSpec::Shell(script) => vec!["/bin/sh".into(), "-c".into(), script.into()],
        CommandSpec::Script(path) => script_argv(path, true),
        CommandSpec::Execline(text) => return execline::argv(text, path_var, cwd),
    };
    check_program(&argv[0], path_var, cwd)?;
    Ok(argv)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::config::{Credentials, Replica, RestorePolicy, S3Options};

    fn write(dir: &Path, rel: &str, text: &str, executable: bool) {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        if executable {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }

    fn load(dir: &Path, toml: &str) -> Result<Config, ConfigError> {
        write(dir, "litevisor.toml", toml, false);
        load_file(&dir.join("litevisor.toml"), true)
    }

    fn env_of<'a>(service: &'a Service, name: &str) -> Option<&'a str> {
        service.env.get(name).and_then(|v| v.to_str())
    }

    #[test]
    fn environment_layers_and_credentials() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "a.env",
            "FROM_FILE=1\nOVERRIDDEN=file\nHOME=/from/file\n",
            false,
        );
        let config = load(
            dir.path(),
            r#"
[services.a]
command = "exec sleep 1"
env_files = ["a.env"]
environment = { OVERRIDDEN = "table", PORT = 8080 }
user = "root"

[services.b]
command = ["/bin/true"]
clear_env = true
"#,
        )
        .unwrap();
        let a = config.service("a").unwrap();
        assert_eq!(a.command, ["/bin/sh", "-c", "exec sleep 1"]);
        assert_eq!(env_of(a, "FROM_FILE"), Some("1"));
        assert_eq!(env_of(a, "OVERRIDDEN"), Some("table"));
        assert_eq!(env_of(a, "PORT"), Some("8080"));
        assert_eq!(env_of(a, "USER"), Some("root"));
        assert_eq!(
            env_of(a, "HOME"),
            Some("/from/file"),
            "env files override the passwd HOME"
        );
        assert_eq!(env_of(a, SERVICE_NAME_ENV), Some("a"));
        // The container's environment is inherited unless clear_env.
        let (inherited, _) = std::env::vars_os()
            .next()
            .expect("tests run with some environment");
        assert!(a.env.vars().iter().any(|(n, _)| *n == inherited));
        assert_eq!(a.credentials.as_ref().map(|c| (c.uid, c.gid)), Some((0, 0)));
        let b = config.service("b").unwrap();
        assert_eq!(
            b.env.vars(),
            [(OsString::from(SERVICE_NAME_ENV), OsString::from("b"))]
        );
        assert_eq!(b.credentials, None::<Credentials>);
    }

    #[test]
    fn defaults_order_and_dependents() {
        let dir = tempfile::tempdir().unwrap();
        let config = load(
            dir.path(),
            r#"
grace = "7s"
log_prefix = false
[services.web]
command = ["/bin/true"]
depends_on = ["db", "migrate"]
main = true
ready_tcp = "localhost:8080"
[services.migrate]
command = ["/bin/true"]
type = "oneshot"
depends_on = ["db"]
[services.db]
command = ["/bin/true"]
notification_fd = 3
restart = "on-failure"
max_restarts = 3
restart_jitter = 0
stop_signal = "SIGINT"
log_prefix = true
"#,
        )
        .unwrap();
        let names: Vec<&str> = config.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["db", "migrate", "web"]);
        let db = config.service("db").unwrap();
        assert_eq!(db.dependents, ["migrate", "web"]);
        assert_eq!(db.readiness, Readiness::NotificationFd(3));
        assert_eq!(db.restart, RestartPolicy::OnFailure);
        assert_eq!(db.backoff.max_restarts, Some(3));
        assert_eq!(db.backoff.jitter, 0.0);
        assert_eq!(db.stop_signal, Signal::SIGINT);
        assert_eq!(db.stop_grace, Duration::from_secs(7));
        assert!(db.log_prefix);
        let web = config.service("web").unwrap();
        assert_eq!(web.depends_on, ["db", "migrate"]);
        assert!(web.main && config.main_service().is_some_and(|m| m.name == "web"));
        assert_eq!(
            web.readiness,
            Readiness::Tcp {
                host: "localhost".into(),
                port: 8080
            }
        );
        assert_eq!(web.restart, RestartPolicy::Always);
        assert_eq!(
            web.backoff,
            Backoff {
                initial: DEFAULT_RESTART_DELAY,
                max: DEFAULT_RESTART_DELAY_MAX,
                jitter: DEFAULT_RESTART_JITTER,
                stable_after: DEFAULT_STABLE_AFTER,
                max_restarts: None,
                give_up: GiveUp::Shutdown,
            }
        );
        assert_eq!(web.ready_timeout, Some(DEFAULT_READY_TIMEOUT));
        assert_eq!(web.finish_timeout, Some(DEFAULT_FINISH_TIMEOUT));
        assert!(!web.log_prefix);
        assert_eq!(
            config.service("migrate").unwrap().restart,
            RestartPolicy::Never
        );
        assert_eq!(config.shutdown_timeout, DEFAULT_SHUTDOWN_TIMEOUT);
    }

    #[test]
    fn s6_directory_settings_map_onto_the_model() {
        let dir = tempfile::tempdir().unwrap();
        let svc = dir.path().join("svc");
        write(&svc, "app/type", "longrun\n", false);
        write(&svc, "app/run", "#!/bin/sh\n", true);
        write(&svc, "app/finish", "#!/bin/sh\n", true);
        write(&svc, "app/down-signal", "HUP\n", false);
        write(&svc, "app/timeout-kill", "2500\n", false);
        write(&svc, "app/timeout-up", "0\n", false);
        write(&svc, "app/timeout-finish", "750\n", false);
        write(&svc, "app/down", "", false);
        write(&svc, "once/type", "oneshot\n", false);
        write(&svc, "once/up", "echo hi\n", false);
        let config = load(dir.path(), "services_dir = \"svc\"\n").unwrap();
        let app = config.service("app").unwrap();
        assert_eq!(app.command, [svc.join("app/run").into_os_string()]);
        assert_eq!(
            app.finish,
            Some(vec![svc.join("app/finish").into_os_string()])
        );
        assert_eq!(app.working_dir.as_deref(), Some(svc.join("app").as_path()));
        assert_eq!(app.stop_signal, Signal::SIGHUP);
        assert_eq!(app.stop_grace, Duration::from_millis(2500));
        assert_eq!(app.ready_timeout, None);
        assert_eq!(app.finish_timeout, Some(Duration::from_millis(750)));
        let once = config.service("once").unwrap();
        assert_eq!(once.kind, ServiceKind::Oneshot);
        // One execline command line: exec'd as it is.
        assert_eq!(once.command, ["echo", "hi"]);
        assert_eq!(config.warnings.len(), 1, "{:?}", config.warnings);
        assert!(config.warnings[0].to_string().contains("app/down"));
    }

    #[test]
    fn databases_resolve_against_the_config_directory() {
        let dir = tempfile::tempdir().unwrap();
        let config = load(
            dir.path(),
            r#"
[[databases]]
path = "app.db"
replica = { url = "s3://bkt/prefix?region=eu-west-1", endpoint = "http://127.0.0.1:9000", secret_access_key = "s3cr3t" }
checkpoint_interval = "2m"
truncate_page_n = 0

[[databases]]
path = "/abs/other.db"
replica = { path = "replica-dir" }
"#,
        )
        .unwrap();
        assert!(config.services.is_empty());
        let app = &config.databases[0];
        assert_eq!(app.path, dir.path().join("app.db"));
        assert_eq!(app.restore, RestorePolicy::IfMissing);
        assert_eq!(app.checkpoint_interval, Duration::from_secs(120));
        assert_eq!(
            (app.truncate_page_n, app.min_checkpoint_page_count),
            (0, 1000)
        );
        let Replica::S3(S3Options {
            bucket,
            path,
            region,
            endpoint,
            secret_access_key,
            ..
        }) = &app.replica
        else {
            panic!("expected s3: {:?}", app.replica)
        };
        assert_eq!(
            (bucket.as_str(), path.as_str(), region.as_deref()),
            ("bkt", "prefix", Some("eu-west-1"))
        );
        assert_eq!(endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        let Replica::S3(s3) = &app.replica else {
            unreachable!()
        };
        assert!(
            s3.effective_force_path_style(),
            "an endpoint implies path-style addressing"
        );
        assert_eq!(
            secret_access_key.as_ref().map(|s| s.expose()),
            Some("s3cr3t")
        );
        assert!(!format!("{config:?}").contains("s3cr3t"));
        assert_eq!(
            config.databases[1].replica,
            Replica::File {
                path: dir.path().join("replica-dir")
            }
        );
    }

    #[test]
    fn a_missing_default_config_falls_back_to_the_services_directory() {
        let dir = tempfile::tempdir().unwrap();
        let services = dir.path().join("services.d");
        write(&services, "solo/run", "#!/bin/sh\n", true);
        let missing = dir.path().join("litevisor.toml");
        let config = load_with_default_dir(&missing, false, &services).unwrap();
        assert_eq!(config.file, None);
        assert_eq!(config.services_dir.as_deref(), Some(services.as_path()));
        assert_eq!(config.services[0].name, "solo");
        // Asked for explicitly, the file must exist.
        let err = load_with_default_dir(&missing, true, &services).unwrap_err();
        assert!(
            err.to_string()
                .contains("cannot read the configuration file"),
            "{err}"
        );
        // Neither the default file nor the default directory: nothing to supervise.
        let err = load_with_default_dir(&missing, false, &dir.path().join("none")).unwrap_err();
        assert!(
            err.to_string().contains("no configuration: neither"),
            "{err}"
        );
    }

    #[test]
    fn services_dir_defaults_to_services_d_next_to_the_config() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "services.d/next/run", "#!/bin/sh\n", true);
        let config = load(dir.path(), "log_prefix = true\n").unwrap();
        assert_eq!(config.services_dir, Some(dir.path().join("services.d")));
        assert_eq!(config.services[0].name, "next");
    }

    #[test]
    fn nothing_configured_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = load(dir.path(), "# empty\n").unwrap_err();
        assert!(
            err.to_string().contains("no services and no databases"),
            "{err}"
        );
    }
}
