//! A service as written, before cross-checks: every field optional and tagged with where it was set.
//! Filled from a `[services.NAME]` table, a `service.toml`, or the files of an s6 service directory;
//! a setting given twice (e.g. a `run` file and a `command` key) is an error naming both places.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;

use super::diag::{Loc, Problems};
use super::tree::{CommandSpec, Located, TableReader};
use super::values;
use super::{GiveUp, RestartPolicy, ServiceKind};

#[derive(Debug, Default)]
pub struct ServiceSpec {
    pub name: String,
    /// The table header, `service.toml` or directory that defines the service.
    pub defined_in: Option<Loc>,
    /// Relative paths in the definition resolve against this directory.
    pub base_dir: PathBuf,
    /// Set for the directory form: the default working directory, as in s6.
    pub service_dir: Option<PathBuf>,
    pub command: Option<Located<CommandSpec>>,
    pub kind: Option<Located<ServiceKind>>,
    pub depends_on: Option<Located<Vec<Located<String>>>>,
    pub restart: Option<Located<RestartPolicy>>,
    pub restart_delay: Option<Located<Duration>>,
    pub restart_delay_max: Option<Located<Duration>>,
    pub restart_jitter: Option<Located<f64>>,
    pub stable_after: Option<Located<Duration>>,
    pub max_restarts: Option<Located<u32>>,
    pub give_up: Option<Located<GiveUp>>,
    pub main: Option<Located<bool>>,
    pub notification_fd: Option<Located<i32>>,
    pub ready_tcp: Option<Located<(String, u16)>>,
    pub ready_command: Option<Located<CommandSpec>>,
    pub ready_timeout: Option<Located<Duration>>,
    pub stop_signal: Option<Located<Signal>>,
    pub stop_grace: Option<Located<Duration>>,
    pub environment: Option<Located<Vec<(String, String)>>>,
    pub env_files: Option<Located<Vec<Located<String>>>>,
    pub clear_env: Option<Located<bool>>,
    pub working_dir: Option<Located<String>>,
    pub user: Option<Located<String>>,
    pub group: Option<Located<String>>,
    pub finish: Option<Located<CommandSpec>>,
    /// A oneshot's `down` (s6-rc directories only).
    pub down: Option<Located<CommandSpec>>,
    /// s6-rc `producer-for`: the service whose stdin this one's stdout feeds.
    pub producer_for: Option<Located<String>>,
    /// s6-rc `consumer-for`: the services whose stdout feeds this one's stdin.
    pub consumer_for: Option<Located<Vec<Located<String>>>>,
    /// s6-rc `pipeline-name`: a bundle of the whole pipeline ending here.
    pub pipeline_name: Option<Located<String>>,
    pub finish_timeout: Option<Located<Duration>>,
    pub log_prefix: Option<Located<bool>>,
    pub databases: Option<Located<Vec<Located<String>>>>,
}

/// Stores a setting, or reports that it was already set elsewhere.
pub fn set<T>(slot: &mut Option<Located<T>>, value: Located<T>, problems: &mut Problems) {
    match slot {
        Some(first) => {
            let message = format!(
                "also set by {}; set it in one place only",
                describe(&first.loc)
            );
            problems.push(value.loc, message);
        }
        None => *slot = Some(value),
    }
}

fn describe(loc: &Loc) -> String {
    let mut out = loc.file.display().to_string();
    if let Some((line, col)) = loc.line {
        out.push_str(&format!(":{line}:{col}"));
    }
    if let Some(key) = &loc.key {
        out.push_str(&format!(" ({key})"));
    }
    out
}

impl ServiceSpec {
    pub fn new(name: &str, defined_in: Loc, base_dir: &Path) -> ServiceSpec {
        ServiceSpec {
            name: name.to_string(),
            defined_in: Some(defined_in),
            base_dir: base_dir.to_path_buf(),
            ..ServiceSpec::default()
        }
    }

    pub fn defined_in(&self) -> Loc {
        self.defined_in
            .clone()
            .unwrap_or_else(|| Loc::file(&self.base_dir))
    }

    /// Reads every service key of one table (`[services.NAME]` or `service.toml`); unknown keys are
    /// reported.
    pub fn read_table(&mut self, mut t: TableReader<'_>, problems: &mut Problems) {
        if let Some(v) = t.command("command", problems) {
            set(&mut self.command, v, problems);
        }
        if let Some(v) = t.string_list("depends_on", problems) {
            set(&mut self.depends_on, v, problems);
        }
        if let Some(v) = t.string("type", problems) {
            match v.value.as_str() {
                "longrun" => set(
                    &mut self.kind,
                    relocate(v.loc, ServiceKind::Longrun),
                    problems,
                ),
                "oneshot" => set(
                    &mut self.kind,
                    relocate(v.loc, ServiceKind::Oneshot),
                    problems,
                ),
                other => problems.push(
                    v.loc,
                    format!("unknown type {other:?}: use \"longrun\" or \"oneshot\""),
                ),
            }
        }
        if let Some(v) = t.string("restart", problems) {
            match restart_policy(&v.value) {
                Ok(policy) => set(&mut self.restart, relocate(v.loc, policy), problems),
                Err(msg) => problems.push(v.loc, msg),
            }
        }
        read_duration(&mut t, "restart_delay", &mut self.restart_delay, problems);
        read_duration(
            &mut t,
            "restart_delay_max",
            &mut self.restart_delay_max,
            problems,
        );
        read_duration(&mut t, "stable_after", &mut self.stable_after, problems);
        read_duration(&mut t, "ready_timeout", &mut self.ready_timeout, problems);
        read_duration(&mut t, "stop_grace", &mut self.stop_grace, problems);
        read_duration(&mut t, "finish_timeout", &mut self.finish_timeout, problems);
        if let Some(v) = t.float("restart_jitter", problems) {
            if (0.0..=1.0).contains(&v.value) {
                set(&mut self.restart_jitter, v, problems);
            } else {
                problems.push(v.loc, "must be between 0.0 and 1.0");
            }
        }
        if let Some(v) = t.integer("max_restarts", problems) {
            match u32::try_from(v.value) {
                Ok(n) => set(&mut self.max_restarts, relocate(v.loc, n), problems),
                Err(_) => problems.push(v.loc, "must be 0 (unlimited) or a positive integer"),
            }
        }
        if let Some(v) = t.string("give_up", problems) {
            match v.value.as_str() {
                "shutdown" => set(
                    &mut self.give_up,
                    relocate(v.loc, GiveUp::Shutdown),
                    problems,
                ),
                "stay-down" => set(
                    &mut self.give_up,
                    relocate(v.loc, GiveUp::StayDown),
                    problems,
                ),
                other => problems.push(
                    v.loc,
                    format!("unknown value {other:?}: use \"shutdown\" or \"stay-down\""),
                ),
            }
        }
        if let Some(v) = t.bool("main", problems) {
            set(&mut self.main, v, problems);
        }
        if let Some(v) = t.integer("notification_fd", problems) {
            match notification_fd(v.value) {
                Ok(fd) => set(&mut self.notification_fd, relocate(v.loc, fd), problems),
                Err(msg) => problems.push(v.loc, msg),
            }
        }
        if let Some(v) = t.string("ready_tcp", problems) {
            match values::host_port(&v.value) {
                Ok(addr) => set(&mut self.ready_tcp, relocate(v.loc, addr), problems),
                Err(msg) => problems.push(v.loc, msg),
            }
        }
        if let Some(v) = t.command("ready_command", problems) {
            set(&mut self.ready_command, v, problems);
        }
        if let Some(v) = t.scalar_text("stop_signal", problems) {
            match values::signal(&v.value) {
                Ok(sig) => set(&mut self.stop_signal, relocate(v.loc, sig), problems),
                Err(msg) => problems.push(v.loc, msg),
            }
        }
        if let Some(v) = t.string_map("environment", problems) {
            for (name, _) in &v.value {
                if let Err(msg) = super::env::check_name(name) {
                    problems.push(v.loc.clone(), msg);
                }
            }
            set(&mut self.environment, v, problems);
        }
        if let Some(v) = t.string_list("env_files", problems) {
            set(&mut self.env_files, v, problems);
        }
        if let Some(v) = t.bool("clear_env", problems) {
            set(&mut self.clear_env, v, problems);
        }
        if let Some(v) = t.string("working_dir", problems) {
            if v.value.is_empty() {
                problems.push(v.loc, "must not be empty");
            } else {
                set(&mut self.working_dir, v, problems);
            }
        }
        if let Some(v) = t.scalar_text("user", problems) {
            set(&mut self.user, v, problems);
        }
        if let Some(v) = t.scalar_text("group", problems) {
            set(&mut self.group, v, problems);
        }
        if let Some(v) = t.command("finish", problems) {
            set(&mut self.finish, v, problems);
        }
        if let Some(v) = t.bool("log_prefix", problems) {
            set(&mut self.log_prefix, v, problems);
        }
        if let Some(v) = t.string_list("databases", problems) {
            set(&mut self.databases, v, problems);
        }
        t.finish(problems);
    }
}

fn relocate<T>(loc: Loc, value: T) -> Located<T> {
    Located { value, loc }
}

fn read_duration(
    t: &mut TableReader<'_>,
    key: &str,
    slot: &mut Option<Located<Duration>>,
    problems: &mut Problems,
) {
    if let Some(v) = t.scalar_text(key, problems) {
        match values::duration(&v.value) {
            Ok(d) => set(slot, relocate(v.loc, d), problems),
            Err(msg) => problems.push(v.loc, msg),
        }
    }
}

pub fn restart_policy(text: &str) -> Result<RestartPolicy, String> {
    match text {
        "always" => Ok(RestartPolicy::Always),
        "on-failure" => Ok(RestartPolicy::OnFailure),
        "never" => Ok(RestartPolicy::Never),
        other => Err(format!(
            "unknown restart policy {other:?}: use \"always\", \"on-failure\" or \"never\""
        )),
    }
}

/// fds 0-2 are the service's stdio, so the notification fd must be 3 or more.
pub fn notification_fd(value: i64) -> Result<i32, String> {
    match i32::try_from(value) {
        Ok(fd) if (3..=65535).contains(&fd) => Ok(fd),
        _ => Err(format!(
            "invalid fd {value}: must be between 3 and 65535 (0-2 are stdin, stdout, stderr)"
        )),
    }
}
