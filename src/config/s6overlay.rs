//! s6-overlay's own layer, for a services directory laid out as s6-overlay v3 merges it at boot
//! (`<etc>/s6-overlay/s6-rc.d`, or the legacy `<etc>/services.d`): what s6-overlay adds to the
//! user's s6-rc services, provided by litevisor itself so the tree runs unchanged.
//!
//! - `legacy-cont-init`: a oneshot running every `<etc>/cont-init.d` script in name order, then
//!   acting on failures per `S6_BEHAVIOUR_IF_STAGE2_FAILS` (0 continue, 1 warn, 2 fail the start);
//!   its `down` runs every `<etc>/cont-finish.d` script at the stop, each killed after
//!   `S6_KILL_FINISH_MAXTIME` ms when set.
//! - `<etc>/services.d/*`: longruns after `base` and `user`, stopped with
//!   `S6_SERVICES_GRACETIME` (3000 ms) of grace, in the bundle `legacy-services`.
//! - The bundles `fix-attrs` (empty: fix-attrs.d is not supported), `base` (fix-attrs,
//!   legacy-cont-init), `user` and `user2` (from the tree and `<etc>/s6-overlay/user-bundles.d`),
//!   `legacy-services` and `top`.
//! - `S6_KILL_GRACETIME` (ms) is the grace of the final TERM -> KILL of leftover processes, and
//!   `S6_CMD_WAIT_FOR_SERVICES_MAXTIME` (ms, 0 = forever, the default) bounds each service's
//!   start-up, as s6-rc's `-t` does; s6-overlay variables litevisor does not honour are warned
//!   about when set.
//!
//! Scripts run as s6-overlay runs them: directly, except that a `with-contenv` shebang is skipped
//! (see [`super::program::script_argv`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::ServiceKind;
use super::diag::{Loc, Problems};
use super::program::{DEFAULT_PATH, check_program, script_argv};
use super::s6dir::{self, Bundle};
use super::spec::ServiceSpec;
use super::tree::{CommandSpec, Located};

/// What the layer adds to the configuration.
pub struct Layer {
    pub specs: Vec<ServiceSpec>,
    pub bundles: Vec<Bundle>,
    /// `S6_KILL_GRACETIME`, when set.
    pub grace: Option<Duration>,
}

/// s6-overlay variables that change behaviour in ways litevisor does not reproduce.
const NOT_HONOURED: [(&str, &str); 8] = [
    ("S6_STAGE2_HOOK", "litevisor does not run a stage 2 hook"),
    (
        "S6_LOGGING",
        "service output goes to litevisor's stdout, prefixed by the service name",
    ),
    ("S6_READ_ONLY_ROOT", "litevisor needs no writable /run"),
    ("S6_RUNTIME_PROFILE", "cont-profile.d is not read"),
    ("S6_CMD_ARG0", "litevisor runs no CMD beside the services"),
    (
        "S6_CMD_WAIT_FOR_SERVICES",
        "litevisor runs no CMD beside the services",
    ),
    (
        "S6_CMD_RECEIVE_SIGNALS",
        "litevisor runs no CMD beside the services",
    ),
    (
        "S6_SYNC_DISKS",
        "litevisor does not sync the disks at the stop",
    ),
];

/// The `<etc>` of an s6-overlay layout, when `services_dir` is `<etc>/s6-overlay/s6-rc.d` or
/// `<etc>/services.d` (with `<etc>` named `etc`).
pub fn root_of(services_dir: &Path) -> Option<PathBuf> {
    let name = services_dir.file_name()?;
    let parent = services_dir.parent()?;
    let etc = if name == "s6-rc.d" && parent.file_name()? == "s6-overlay" {
        parent.parent()?
    } else if name == "services.d" {
        parent
    } else {
        return None;
    };
    (etc.file_name()? == "etc").then(|| etc.to_path_buf())
}

/// Reads the whole layout under `etc`.
pub fn scan(etc: &Path, problems: &mut Problems) -> Layer {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let millis = |name: &str, problems: &mut Problems| -> Option<Duration> {
        let text = env(name)?;
        match text.trim().parse::<u64>() {
            Ok(ms) => Some(Duration::from_millis(ms)),
            Err(_) => {
                problems.push(
                    env_loc(name),
                    format!("{text:?} is not an integer of milliseconds"),
                );
                None
            }
        }
    };
    for (name, why) in NOT_HONOURED {
        if env(name).is_some_and(|v| v != "0") {
            problems.warn(env_loc(name), format!("ignored: {why}"));
        }
    }
    let behaviour = match env("S6_BEHAVIOUR_IF_STAGE2_FAILS")
        .as_deref()
        .map(str::trim)
    {
        None => 0,
        Some(v) => v.parse::<u8>().unwrap_or_else(|_| {
            problems.push(env_loc("S6_BEHAVIOUR_IF_STAGE2_FAILS"), "use 0, 1 or 2");
            0
        }),
    };
    let finish_limit = millis("S6_KILL_FINISH_MAXTIME", problems).filter(|d| !d.is_zero());
    let services_grace =
        millis("S6_SERVICES_GRACETIME", problems).unwrap_or(Duration::from_millis(3000));
    let ready_limit = millis("S6_CMD_WAIT_FOR_SERVICES_MAXTIME", problems).unwrap_or_default();
    let grace = millis("S6_KILL_GRACETIME", problems);

    let (mut specs, mut bundles) = (Vec::new(), Vec::new());
    let rc_dir = etc.join("s6-overlay/s6-rc.d");
    if rc_dir.is_dir() {
        (specs, bundles) = s6dir::scan(&rc_dir, true, problems);
    }
    for name in s6dir::OVERLAY_USER_BUNDLES {
        let extra = etc.join("s6-overlay/user-bundles.d").join(name);
        let more = if extra.is_dir() {
            s6dir::read_bundle(name, &extra, true, problems).members
        } else {
            Vec::new()
        };
        match bundles.iter_mut().find(|b| b.name == name) {
            Some(bundle) => bundle.members.extend(more),
            None => bundles.push(bundle(name, etc, more)),
        }
    }

    let cont_init = scripts(&etc.join("cont-init.d"), problems);
    let cont_finish = scripts(&etc.join("cont-finish.d"), problems);
    if cont_init.is_empty() && cont_finish.is_empty() {
        bundles.push(bundle("legacy-cont-init", etc, Vec::new()));
    } else {
        let dir = etc.join("cont-init.d");
        let mut spec = ServiceSpec::new("legacy-cont-init", Loc::file(&dir), etc);
        let at = Loc::file(&dir);
        spec.kind = Some(Located {
            value: ServiceKind::Oneshot,
            loc: at.clone(),
        });
        spec.command = Some(Located {
            value: CommandSpec::Shell(cont_init_script(&cont_init, behaviour)),
            loc: at,
        });
        if !cont_finish.is_empty() {
            spec.down = Some(Located {
                value: CommandSpec::Shell(cont_finish_script(&cont_finish, finish_limit)),
                loc: Loc::file(&etc.join("cont-finish.d")),
            });
        }
        specs.push(spec);
    }
    let fix_attrs = etc.join("fix-attrs.d");
    if std::fs::read_dir(&fix_attrs).is_ok_and(|mut d| d.next().is_some()) {
        problems.warn(
            Loc::file(&fix_attrs),
            "ignored: fix-attrs.d is not supported (deprecated by s6-overlay): set ownership and modes in the image",
        );
    }

    let mut legacy = Vec::new();
    let services_d = etc.join("services.d");
    for name in sorted_entries(&services_d, problems) {
        let dir = services_d.join(&name);
        if !dir.is_dir() {
            continue;
        }
        let mut spec = s6dir::read_service(&name, &dir, None, false, problems);
        let here = Loc::file(&dir);
        let deps = ["base", "user"].map(|d| Located {
            value: d.to_string(),
            loc: here.clone(),
        });
        match &mut spec.depends_on {
            Some(list) => list.value.extend(deps),
            None => {
                spec.depends_on = Some(Located {
                    value: deps.to_vec(),
                    loc: here.clone(),
                })
            }
        }
        if spec.stop_grace.is_none() {
            spec.stop_grace = Some(Located {
                value: services_grace,
                loc: env_loc("S6_SERVICES_GRACETIME"),
            });
        }
        legacy.push(Located {
            value: name.clone(),
            loc: here,
        });
        specs.push(spec);
        specs.extend(s6dir::logger(&name, &dir, problems));
    }

    let named = |names: &[&str]| -> Vec<Located<String>> {
        names
            .iter()
            .map(|n| Located {
                value: n.to_string(),
                loc: Loc::file(etc),
            })
            .collect()
    };
    bundles.push(bundle("fix-attrs", etc, Vec::new()));
    bundles.push(bundle(
        "base",
        etc,
        named(&["fix-attrs", "legacy-cont-init"]),
    ));
    bundles.push(bundle("legacy-services", etc, legacy));
    bundles.push(bundle(
        "top",
        etc,
        named(&["base", "user", "legacy-services", "user2"]),
    ));
    // s6-rc waits for a transition as long as `-t` says: forever unless the variable bounds it.
    for spec in &mut specs {
        if spec.ready_timeout.is_none() {
            spec.ready_timeout = Some(Located {
                value: ready_limit,
                loc: env_loc("S6_CMD_WAIT_FOR_SERVICES_MAXTIME"),
            });
        }
    }
    Layer {
        specs,
        bundles,
        grace,
    }
}

fn env_loc(name: &str) -> Loc {
    Loc {
        file: PathBuf::from("environment"),
        line: None,
        key: Some(name.to_string()),
    }
}

fn bundle(name: &str, etc: &Path, members: Vec<Located<String>>) -> Bundle {
    Bundle {
        name: name.to_string(),
        loc: Loc::file(etc),
        members,
    }
}

fn sorted_entries(dir: &Path, problems: &mut Problems) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        match name.into_string() {
            Ok(n) if !n.starts_with('.') => names.push(n),
            Ok(_) => {}
            Err(n) => problems.push(Loc::file(&dir.join(n)), "not a UTF-8 file name"),
        }
    }
    names.sort();
    names
}

/// The scripts of a cont-init.d/cont-finish.d directory in name order (as s6-overlay's `s6-sort`),
/// each as the argv that runs it; a program that cannot run is reported.
fn scripts(dir: &Path, problems: &mut Problems) -> Vec<(PathBuf, Vec<String>)> {
    let path_var = std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into());
    let cwd = PathBuf::from("/");
    let mut out = Vec::new();
    for name in sorted_entries(dir, problems) {
        let path = dir.join(&name);
        if !path.is_file() {
            continue;
        }
        let argv = script_argv(&path, true);
        if let Err(msg) = check_program(&argv[0], &path_var, &cwd) {
            problems.push(Loc::file(&path), msg);
            continue;
        }
        let argv: Vec<String> = argv
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        out.push((path, argv));
    }
    out
}

fn quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// sh that runs each script in turn, reports each failure, and fails at the end only when
/// `S6_BEHAVIOUR_IF_STAGE2_FAILS` is 2 or more (s6-overlay's `cont-init`).
fn cont_init_script(scripts: &[(PathBuf, Vec<String>)], behaviour: u8) -> String {
    let mut sh = String::from("r=0\n");
    for (path, argv) in scripts {
        let line = argv.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" ");
        let shown = quote(&path.display().to_string());
        sh.push_str(&format!(
            "{line}; b=$?; if [ $b -ne 0 ]; then echo \"cont-init: \"{shown}\" exited $b\" >&2; r=1; fi\n"
        ));
    }
    if behaviour >= 1 {
        sh.push_str("if [ $r -ne 0 ]; then echo 'cont-init: warning: some scripts exited nonzero' >&2; fi\n");
    }
    sh.push_str(if behaviour >= 2 {
        "exit $r\n"
    } else {
        "exit 0\n"
    });
    sh
}

/// sh that runs each cont-finish.d script in turn, each killed after `limit` (s6-overlay's
/// `cont-finish` with `s6-maximumtime -k`); always succeeds.
fn cont_finish_script(scripts: &[(PathBuf, Vec<String>)], limit: Option<Duration>) -> String {
    let mut sh = String::new();
    for (_, argv) in scripts {
        let line = argv.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" ");
        match limit {
            None => sh.push_str(&format!("{line}\n")),
            Some(d) => sh.push_str(&format!(
                "{line} & p=$!; ( sleep {:.3}; kill -KILL $p 2>/dev/null ) & w=$!; wait $p; kill $w 2>/dev/null\n",
                d.as_secs_f64()
            )),
        }
    }
    sh.push_str("exit 0\n");
    sh
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_are_recognised() {
        assert_eq!(
            root_of(Path::new("/etc/s6-overlay/s6-rc.d")),
            Some(PathBuf::from("/etc"))
        );
        assert_eq!(
            root_of(Path::new("/x/etc/services.d")),
            Some(PathBuf::from("/x/etc"))
        );
        assert_eq!(root_of(Path::new("/etc/litevisor/services.d")), None);
        assert_eq!(root_of(Path::new("/srv/s6-rc.d")), None);
    }
}
