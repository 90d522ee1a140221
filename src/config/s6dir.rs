//! Scans the services directory. Each visible subdirectory is one service: litevisor's own form (an
//! executable `run`, optional executable `finish`, optional `service.toml` with the same keys as a
//! `[services.NAME]` table, an s6 `log/` logger) and s6-rc's source form read as `s6-rc-compile`
//! reads it (`type`, `run`/`finish` without the exec bit, `up`/`down` execline, `dependencies.d/`,
//! `producer-for`/`consumer-for`/`pipeline-name`, `notification-fd`, `down-signal`, `timeout-*`), so
//! a migration needs no rewrite. s6 bundles (`type` = `bundle`, `contents.d/`) are accepted as
//! dependency aliases for their members. s6-overlay's own layer around it is `s6overlay`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::diag::{Loc, Problems, Source};
use super::spec::{ServiceSpec, notification_fd, set};
use super::tree::{self, CommandSpec, Located, TableReader};
use super::{ServiceKind, values};

/// An s6 bundle: a name standing for its members.
pub struct Bundle {
    pub name: String,
    pub loc: Loc,
    pub members: Vec<Located<String>>,
}

/// s6-overlay's built-in bundle every user service lists; litevisor has nothing to wait for there.
const S6_BASE_BUNDLE: &str = "base";

/// s6 features whose silent omission would change behaviour.
const UNSUPPORTED: [(&str, &str); 2] = [
    (
        "flag-newpidns",
        "running a service in a new PID namespace is not supported",
    ),
    ("lock-fd", "lock-fd is not supported"),
];

/// s6-overlay's own definitions, which it merges into the compiled tree at boot and litevisor
/// provides itself (see `s6overlay`): copies of them in the scanned directory are not read.
pub const OVERLAY_OWN: [&str; 5] = [
    "base",
    "top",
    "fix-attrs",
    "legacy-cont-init",
    "legacy-services",
];
/// s6-overlay's user bundles: a directory of that name may hold only `contents.d/`.
pub const OVERLAY_USER_BUNDLES: [&str; 2] = ["user", "user2"];

/// Reads every service directory of `dir`. With `overlay`, the directory is part of an s6-overlay
/// layout: its own definitions are skipped, `user`/`user2` are bundles, and `base` is a real
/// dependency (cont-init.d runs there).
pub fn scan(dir: &Path, overlay: bool, problems: &mut Problems) -> (Vec<ServiceSpec>, Vec<Bundle>) {
    let mut names = Vec::new();
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for entry in entries {
                match entry {
                    Ok(e) => names.push(e.file_name()),
                    Err(err) => problems.push(
                        Loc::file(dir),
                        format!("cannot list the services directory: {err}"),
                    ),
                }
            }
        }
        Err(err) => problems.push(
            Loc::file(dir),
            format!("cannot list the services directory: {err}"),
        ),
    }
    names.sort();
    let (mut services, mut bundles) = (Vec::new(), Vec::new());
    for name in names {
        let path = dir.join(&name);
        if name.as_encoded_bytes().starts_with(b".") || !path.is_dir() {
            continue;
        }
        let Some(name) = name.to_str().filter(|n| values::service_name(n).is_ok()) else {
            let msg = format!(
                "invalid service name {name:?}: use only letters, digits, '.', '_' and '-'"
            );
            problems.push(Loc::file(&path), msg);
            continue;
        };
        if overlay && OVERLAY_OWN.contains(&name) {
            continue;
        }
        match read_file(&path, "type", problems).as_deref() {
            Some("bundle") => bundles.push(read_bundle(name, &path, overlay, problems)),
            None if overlay && OVERLAY_USER_BUNDLES.contains(&name) => {
                bundles.push(read_bundle(name, &path, overlay, problems))
            }
            kind => {
                services.push(read_service(name, &path, kind, overlay, problems));
                services.extend(logger(name, &path, problems));
            }
        }
    }
    (services, bundles)
}

pub fn read_service(
    name: &str,
    dir: &Path,
    s6_type: Option<&str>,
    overlay: bool,
    problems: &mut Problems,
) -> ServiceSpec {
    let mut spec = ServiceSpec::new(name, Loc::file(dir), dir);
    spec.service_dir = Some(dir.to_path_buf());
    let toml_path = dir.join("service.toml");
    if toml_path.exists() {
        match std::fs::read_to_string(&toml_path) {
            Ok(text) => {
                let src = Source {
                    path: toml_path.clone(),
                    text,
                };
                if let Some(root) = tree::parse(&src, problems) {
                    spec.read_table(TableReader::new(&src, "", root), problems);
                }
            }
            Err(err) => problems.push(Loc::file(&toml_path), format!("cannot read: {err}")),
        }
    }
    let at = |file: &str| Loc::file(&dir.join(file));
    match s6_type {
        None => {}
        Some("longrun") => set(
            &mut spec.kind,
            Located {
                value: ServiceKind::Longrun,
                loc: at("type"),
            },
            problems,
        ),
        Some("oneshot") => set(
            &mut spec.kind,
            Located {
                value: ServiceKind::Oneshot,
                loc: at("type"),
            },
            problems,
        ),
        Some(other) => problems.push(
            at("type"),
            format!("unknown type {other:?}: use longrun, oneshot or bundle"),
        ),
    }
    // An s6-rc source directory (it has a `type`) is read as s6-rc-compile reads it: a oneshot's
    // command is `up` (its `run`, if any, is just a file `up` may name, as in the linuxserver.io
    // images), a longrun's is `run`, and scripts need no exec bit (s6-rc-compile installs them 0755).
    let s6rc = s6_type.is_some();
    let oneshot = s6_type == Some("oneshot");
    let longrun = s6_type == Some("longrun");
    if !oneshot && let Some(run) = script(dir, "run", s6rc, problems) {
        set(
            &mut spec.command,
            Located {
                value: CommandSpec::Script(run),
                loc: at("run"),
            },
            problems,
        );
    }
    match read_file(dir, "up", problems) {
        Some(_) if longrun => problems.warn(
            at("up"),
            "ignored: `up` is the command of a oneshot, and this is a longrun (s6-rc ignores it too)",
        ),
        Some(up) => {
            if spec.kind.is_none() {
                spec.kind = Some(Located {
                    value: ServiceKind::Oneshot,
                    loc: at("up"),
                });
            }
            if up.is_empty() {
                problems.push(at("up"), "empty command");
            } else {
                set(
                    &mut spec.command,
                    Located {
                        value: CommandSpec::Execline(up),
                        loc: at("up"),
                    },
                    problems,
                );
            }
        }
        None => {}
    }
    if spec.command.is_none() {
        let msg = if oneshot {
            "an s6 oneshot needs an `up` file (its command line)"
        } else {
            "no executable `run` file (nor an s6 `up` file, nor `command` in service.toml)"
        };
        problems.push(Loc::file(dir), msg);
    }
    if !oneshot && let Some(finish) = script(dir, "finish", s6rc, problems) {
        set(
            &mut spec.finish,
            Located {
                value: CommandSpec::Script(finish),
                loc: at("finish"),
            },
            problems,
        );
    }
    if let Some(deps) = read_dependencies(dir, overlay, problems) {
        set(&mut spec.depends_on, deps, problems);
    }
    if let Some(text) = read_file(dir, "notification-fd", problems) {
        match text
            .parse::<i64>()
            .map_err(|_| format!("invalid fd {text:?}"))
            .and_then(notification_fd)
        {
            Ok(fd) => set(
                &mut spec.notification_fd,
                Located {
                    value: fd,
                    loc: at("notification-fd"),
                },
                problems,
            ),
            Err(msg) => problems.push(at("notification-fd"), msg),
        }
    }
    if let Some(text) = read_file(dir, "down-signal", problems) {
        match values::signal(&text) {
            Ok(sig) => set(
                &mut spec.stop_signal,
                Located {
                    value: sig,
                    loc: at("down-signal"),
                },
                problems,
            ),
            Err(msg) => problems.push(at("down-signal"), msg),
        }
    }
    // s6: timeout-kill absent or 0 = never SIGKILL; litevisor always bounds the stop, so only a
    // positive value carries over. timeout-down is the closest substitute when timeout-kill is absent.
    let kill = millis(dir, "timeout-kill", problems);
    let down = millis(dir, "timeout-down", problems);
    if let Some(grace) = kill
        .filter(|k| !k.value.is_zero())
        .or(down.filter(|d| !d.value.is_zero()))
    {
        set(&mut spec.stop_grace, grace, problems);
    }
    // 0 means "wait forever" in s6 and in litevisor alike.
    if let Some(up) = millis(dir, "timeout-up", problems) {
        set(&mut spec.ready_timeout, up, problems);
    }
    if let Some(finish) = millis(dir, "timeout-finish", problems) {
        set(&mut spec.finish_timeout, finish, problems);
    }
    // s6-rc log pipelines: checked and linked across services in `pipeline`.
    if let Some(consumer) = read_file(dir, "producer-for", problems) {
        spec.producer_for = Some(Located {
            value: consumer,
            loc: at("producer-for"),
        });
    }
    let consumer_for = dir.join("consumer-for");
    if consumer_for.exists() {
        spec.consumer_for = Some(Located {
            value: read_list_file(&consumer_for, problems),
            loc: at("consumer-for"),
        });
    }
    if let Some(name) = read_file(dir, "pipeline-name", problems) {
        spec.pipeline_name = Some(Located {
            value: name,
            loc: at("pipeline-name"),
        });
    }
    for (file, why) in UNSUPPORTED {
        if dir.join(file).exists() {
            problems.push(at(file), why);
        }
    }
    let is_oneshot = spec
        .kind
        .as_ref()
        .is_some_and(|k| k.value == ServiceKind::Oneshot);
    if is_oneshot {
        // A oneshot's `down` runs at the stop; an empty or missing one succeeds, as in s6-rc.
        if let Some(down) = read_file(dir, "down", problems).filter(|d| !d.is_empty()) {
            spec.down = Some(Located {
                value: CommandSpec::Execline(down),
                loc: at("down"),
            });
        }
    } else if dir.join("down").exists() {
        problems.warn(
            at("down"),
            "ignored: litevisor starts every service (a `down` file keeps it down in s6)",
        );
    }
    if dir.join("log").is_dir() {
        if s6rc {
            problems.warn(at("log"), "ignored: s6-rc services log through pipelines (producer-for/consumer-for), as in s6-rc");
        } else {
            // An s6 service directory's logger: it reads the service's stdout (see `logger`).
            spec.producer_for = Some(Located {
                value: logger_name(name),
                loc: at("log"),
            });
        }
    }
    spec
}

/// The name of the service running a service directory's `log/`.
fn logger_name(service: &str) -> String {
    format!("{service}-log")
}

/// The logger of an s6 service directory (`log/run`, not in s6-rc source dirs): a longrun named
/// `NAME-log` whose stdin is the service's stdout, as s6-svscan pipes them.
pub fn logger(name: &str, dir: &Path, problems: &mut Problems) -> Option<ServiceSpec> {
    let log = dir.join("log");
    if !log.is_dir() || dir.join("type").exists() {
        return None;
    }
    let mut spec = read_service(&logger_name(name), &log, None, false, problems);
    spec.consumer_for = Some(Located {
        value: vec![Located {
            value: name.to_string(),
            loc: Loc::file(&log),
        }],
        loc: Loc::file(&log),
    });
    Some(spec)
}

pub fn read_bundle(name: &str, dir: &Path, overlay: bool, problems: &mut Problems) -> Bundle {
    let mut members = list_dir_names(&dir.join("contents.d"), problems);
    members.extend(read_list_file(&dir.join("contents"), problems));
    if !overlay {
        members.retain(|m| m.value != S6_BASE_BUNDLE);
    }
    Bundle {
        name: name.to_string(),
        loc: Loc::file(dir),
        members,
    }
}

/// `dependencies.d/` (one empty file per dependency) and the older `dependencies` list file. Outside
/// an s6-overlay layout, `base` (the overlay's bundle) has nothing to wait for and is dropped.
fn read_dependencies(
    dir: &Path,
    overlay: bool,
    problems: &mut Problems,
) -> Option<Located<Vec<Located<String>>>> {
    let d = dir.join("dependencies.d");
    let f = dir.join("dependencies");
    if !d.exists() && !f.exists() {
        return None;
    }
    let mut deps = list_dir_names(&d, problems);
    deps.extend(read_list_file(&f, problems));
    if !overlay {
        deps.retain(|dep| dep.value != S6_BASE_BUNDLE);
    }
    let loc = Loc::file(if d.exists() { &d } else { &f });
    Some(Located { value: deps, loc })
}

fn list_dir_names(dir: &Path, problems: &mut Problems) -> Vec<Located<String>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .filter(|n| !n.as_encoded_bytes().starts_with(b"."))
        .collect();
    names.sort();
    names
        .into_iter()
        .filter_map(|n| match n.into_string() {
            Ok(name) => Some(Located {
                loc: Loc::file(&dir.join(&name)),
                value: name,
            }),
            Err(n) => {
                problems.push(Loc::file(&dir.join(n)), "invalid service name");
                None
            }
        })
        .collect()
}

fn read_list_file(path: &Path, problems: &mut Problems) -> Vec<Located<String>> {
    let Some(text) = read_path(path, problems) else {
        return Vec::new();
    };
    text.lines()
        .enumerate()
        .map(|(i, line)| (i, line.trim()))
        .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
        .map(|(i, line)| Located {
            value: line.to_string(),
            loc: Loc {
                file: path.to_path_buf(),
                line: Some((i + 1, 1)),
                key: None,
            },
        })
        .collect()
}

/// A small s6 file's content, trimmed; `None` if absent.
fn read_file(dir: &Path, name: &str, problems: &mut Problems) -> Option<String> {
    read_path(&dir.join(name), problems).map(|t| t.trim().to_string())
}

fn read_path(path: &Path, problems: &mut Problems) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Some(text),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
        Err(err) => {
            problems.push(Loc::file(path), format!("cannot read: {err}"));
            None
        }
    }
}

/// s6 timeouts are integers of milliseconds.
fn millis(dir: &Path, name: &str, problems: &mut Problems) -> Option<Located<Duration>> {
    let text = read_file(dir, name, problems)?;
    let loc = Loc::file(&dir.join(name));
    match text.parse::<u64>() {
        Ok(ms) => Some(Located {
            value: Duration::from_millis(ms),
            loc,
        }),
        Err(_) => {
            problems.push(
                loc,
                format!("invalid timeout {text:?}: s6 timeouts are integers of milliseconds"),
            );
            None
        }
    }
}

/// A script of the service directory (`run`, `finish`). It must be executable, except in an s6-rc
/// source directory (`relaxed`), where a `#!` script without the exec bit runs through its
/// interpreter, as it would once `s6-rc-compile` installed it 0755.
pub fn script(dir: &Path, name: &str, relaxed: bool, problems: &mut Problems) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    let meta = std::fs::metadata(&path).ok()?;
    if !meta.is_file() {
        problems.push(Loc::file(&path), "not a regular file");
        return None;
    }
    if meta.permissions().mode() & 0o111 == 0 {
        let shebang = std::fs::read(&path).is_ok_and(|b| b.starts_with(b"#!"));
        if !relaxed {
            problems.push(Loc::file(&path), "not executable (chmod +x it)");
            return None;
        }
        if !shebang {
            problems.push(
                Loc::file(&path),
                "not executable and no #! line: chmod +x it, or start it with e.g. #!/bin/sh",
            );
            return None;
        }
    }
    Some(path)
}
