//! Command-line surface: parses argv (accepting Litestream's Go-style `-flag` spelling) and dispatches
//! to one subcommand. Each subcommand's flags and handler live in a file of their own.

mod check;
mod config_file;
mod control;
mod databases;
mod example_app;
mod health;
mod logging;
mod ltx;
mod register;
mod reload;
mod replicate;
mod reset;
mod restore;
mod run;
mod status;
mod svc;
mod verify;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "litevisor",
    version,
    about = "Container init, process supervisor and Litestream-compatible SQLite replicator",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    /// Flags of the default mode (`run`): `litevisor [FLAGS] [-- PROG ARGS...]`.
    #[command(flatten)]
    run: run::RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run as init: supervise the configured services, or run `-- PROG ARGS...` (the default).
    Run(run::RunArgs),
    /// Validate the configuration and services without starting anything.
    Check(check::CheckArgs),
    /// Replicate databases to their replicas (Litestream `replicate`).
    Replicate(replicate::ReplicateArgs),
    /// Restore a database from its replica (Litestream `restore`).
    Restore(restore::RestoreArgs),
    /// List the LTX files of a replica (Litestream `ltx`).
    Ltx(ltx::LtxArgs),
    /// List the configured databases and their replicas (Litestream `databases`).
    Databases(databases::DatabasesArgs),
    /// Show the running supervisor's services and databases (over its control socket).
    Status(status::StatusArgs),
    /// Exit 0 when the running supervisor is healthy (services up and ready, replicas reachable and
    /// caught up), 1 otherwise: for `HEALTHCHECK CMD ["litevisor", "health"]`.
    Health(health::HealthArgs),
    /// Force a sync of a database now; with -wait, until the replica holds it (Litestream `sync`).
    Sync(control::SyncArgs),
    /// Stop replicating a database after its final sync, until `start` (Litestream `stop`).
    Stop(control::DbCommandArgs),
    /// Replicate a database again after `stop` (Litestream `start`).
    Start(control::DbCommandArgs),
    /// List the running litevisor's databases and their states (Litestream `list`).
    List(control::DaemonArgs),
    /// Show the running litevisor's version, pid, uptime and database count (Litestream `info`).
    Info(control::DaemonArgs),
    /// Remove a database's local replication state; its next sync starts with a snapshot
    /// (Litestream `reset`).
    Reset(reset::ResetArgs),
    /// Print the version (Litestream `version`).
    Version,
    /// Control one of the running supervisor's services: up, down, restart, once, kill -s SIGNAL.
    Svc(svc::SvcArgs),
    /// Make the running supervisor re-read its configuration and apply it (as SIGHUP does).
    Reload(reload::ReloadArgs),
    /// Register a database for replication in the running litevisor (Litestream `register`).
    Register(register::RegisterArgs),
    /// Unregister a database from replication, after its final sync (Litestream `unregister`).
    Unregister(register::UnregisterArgs),
    /// Check that a replica restores to exactly the live database (integrity check + checksum).
    Verify(verify::VerifyArgs),
    /// The bundled example's SQLite app (services.d.example): migrate, write or read rows.
    ExampleApp(example_app::ExampleAppArgs),
}

/// The default mode's arguments alone: what `litevisor [FLAGS] -- PROG` is parsed with.
#[derive(Parser, Debug)]
#[command(name = "litevisor")]
struct InitCli {
    #[command(flatten)]
    run: run::RunArgs,
}

/// Tries the default mode's parser first: building the whole command tree (every subcommand's flags
/// and help texts) costs an init, which is mostly `litevisor [FLAGS] -- PROG`, start-up time and
/// memory it then keeps. Anything else (a subcommand, `--help`, `--version`, a mistake) is parsed,
/// or reported, by the full parser, which reads a plain run invocation the same way. The most common
/// entrypoint of all, `litevisor -- PROG ARGS...`, has no flag to parse: it skips clap altogether.
fn parse(argv: Vec<std::ffi::OsString>) -> Result<Cli, clap::Error> {
    if argv.get(1).is_some_and(|first| first == "--") {
        return Ok(Cli {
            command: None,
            run: run::RunArgs {
                command: argv[2..].to_vec(),
                ..Default::default()
            },
        });
    }
    match InitCli::try_parse_from(&argv) {
        Ok(init) => Ok(Cli {
            command: None,
            run: init.run,
        }),
        Err(_) => Cli::try_parse_from(argv),
    }
}

/// Parses the process's argv, runs the chosen subcommand and returns the process exit code.
pub fn main() -> i32 {
    // A stop signal that arrives while litevisor is still starting (parsing flags, reading the
    // config) must not kill it by its default action before `run`/`replicate` own the signals: that
    // would skip the final sync. Blocked, it stays pending until their signalfd reads it. The other
    // subcommands get the default behaviour back at once.
    let stop_signals = StopSignals::block();
    report_panics_in_one_line();
    let argv = go_style_flags(std::env::args_os().collect());
    let cli = match parse(argv) {
        Ok(cli) => cli,
        Err(err) => {
            let code = if err.use_stderr() { 2 } else { 0 };
            let _ = err.print();
            return code;
        }
    };
    let takes_signals_over = match &cli.command {
        None | Some(Command::Run(_)) => true,
        Some(Command::Replicate(args)) => !args.once,
        Some(Command::ExampleApp(args)) => args.takes_stop_signals(),
        Some(Command::Restore(args)) => args.follows(),
        Some(_) => false,
    };
    if !takes_signals_over {
        stop_signals.unblock();
    }
    let result = match cli.command {
        None => run::run(cli.run),
        Some(Command::Run(args)) => run::run(args),
        Some(Command::Check(args)) => check::run(args),
        Some(Command::Replicate(args)) => replicate::run(args),
        Some(Command::Restore(args)) => restore::run(args),
        Some(Command::Ltx(args)) => ltx::run(args),
        Some(Command::Databases(args)) => databases::run(args),
        Some(Command::Status(args)) => status::run(args),
        Some(Command::Health(args)) => health::run(args),
        Some(Command::Svc(args)) => svc::run(args),
        Some(Command::Reload(args)) => reload::run(args),
        Some(Command::Register(args)) => register::register(args),
        Some(Command::Unregister(args)) => register::unregister(args),
        Some(Command::Verify(args)) => verify::run(args),
        Some(Command::Sync(args)) => control::sync(args),
        Some(Command::Stop(args)) => control::stop(args),
        Some(Command::Start(args)) => control::start(args),
        Some(Command::List(args)) => control::list(args),
        Some(Command::Info(args)) => control::info(args),
        Some(Command::Version) => control::version(),
        Some(Command::Reset(args)) => reset::run(args),
        Some(Command::ExampleApp(args)) => example_app::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("litevisor: error: {err:#}");
            1
        }
    }
}

/// The metrics listener's address: `flag`, else `LITEVISOR_METRICS_ADDR`, else the file's; and
/// `LITEVISOR_HEALTH_UPLOAD_LAG` over the file's `health_upload_lag`. `Err` names the bad value.
fn observe_overrides(
    flag: Option<&str>,
    observe: &mut crate::config::Observability,
) -> Result<(), String> {
    use crate::config::observe::parse_listen_addr;
    match (flag, logging::env("LITEVISOR_METRICS_ADDR")) {
        (Some(addr), _) => {
            observe.metrics_addr =
                Some(parse_listen_addr(addr).map_err(|e| format!("--metrics-addr: {e}"))?);
        }
        (None, Some(addr)) => {
            observe.metrics_addr =
                Some(parse_listen_addr(&addr).map_err(|e| format!("LITEVISOR_METRICS_ADDR: {e}"))?);
        }
        (None, None) => {}
    }
    if let Some(text) = logging::env("LITEVISOR_HEALTH_UPLOAD_LAG") {
        let lag = crate::config::parse_duration(&text)
            .map_err(|e| format!("LITEVISOR_HEALTH_UPLOAD_LAG: {e}"))?;
        if lag.is_zero() {
            return Err("LITEVISOR_HEALTH_UPLOAD_LAG: must be more than 0".to_string());
        }
        observe.health_upload_lag = Some(lag);
    }
    Ok(())
}

/// A panic is a litevisor bug that the supervisor contains (see the orchestrator): it is said in one
/// log line naming where it happened, with a backtrace only when `RUST_BACKTRACE` asks for one.
fn report_panics_in_one_line() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map_or_else(String::new, |l| format!(" at {}:{}", l.file(), l.line()));
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let thread = std::thread::current();
        let thread = thread.name().unwrap_or("unnamed");
        if tracing::dispatcher::has_been_set() {
            tracing::error!("internal error: thread {thread} panicked{location}: {message}");
        } else {
            eprintln!("litevisor: internal error: thread {thread} panicked{location}: {message}");
        }
        let backtrace = std::backtrace::Backtrace::capture();
        if backtrace.status() == std::backtrace::BacktraceStatus::Captured {
            eprintln!("{backtrace}");
        }
    }));
}

/// The signals that stop litevisor, blocked from process start until a subcommand handles them.
struct StopSignals(nix::sys::signal::SigSet);

impl StopSignals {
    fn block() -> StopSignals {
        use nix::sys::signal::{SigSet, Signal};
        let mut set = SigSet::empty();
        for signal in [
            Signal::SIGTERM,
            Signal::SIGINT,
            Signal::SIGQUIT,
            Signal::SIGHUP,
        ] {
            set.add(signal);
        }
        // Cannot fail with a valid set; if it did, startup would merely keep the default actions.
        let _ = set.thread_block();
        StopSignals(set)
    }

    fn unblock(self) {
        let _ = self.0.thread_unblock();
    }
}

/// Litestream (Go's `flag` package) spells long flags with one dash: `-config`, `-exec`, `-txid`.
/// Rewrites `-word` and `-word=value` to `--word...` so clap accepts both spellings. Single-letter flags
/// (`-o`, `-f`) and everything after a bare `--` are left alone, so a supervised program's argv is
/// never touched. In the default (`run`) mode, so are clusters of tini's short flags (`-vvv`, `-sg`,
/// `-e143`, `-pSIGKILL`), which tini users write the getopt way.
fn go_style_flags(argv: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let run_mode = argv.get(1).and_then(|a| a.to_str()).is_none_or(|first| {
        first == "run" || !<Command as clap::Subcommand>::has_subcommand(first)
    });
    let mut out = Vec::with_capacity(argv.len());
    let mut passthrough = false;
    for (i, arg) in argv.into_iter().enumerate() {
        if i == 0 || passthrough {
            out.push(arg);
            continue;
        }
        let rewritten = match arg.to_str() {
            Some("--") => {
                passthrough = true;
                None
            }
            Some(s) if run_mode && is_run_short_cluster(s) => None,
            Some(s) if is_go_long_flag(s) => Some(format!("-{s}").into()),
            _ => None,
        };
        out.push(rewritten.unwrap_or(arg));
    }
    out
}

/// The short flags of [`run::RunArgs`] (plus clap's `-h`/`-V`) that take no value, and those that
/// take one (which may follow attached, as getopt allows: `-e143`).
const RUN_SHORT_SWITCHES: &str = "sgvwlhV";
const RUN_SHORT_WITH_VALUE: &str = "ep";

/// `-` followed by switches, optionally ending in a flag with its value attached.
fn is_run_short_cluster(s: &str) -> bool {
    let Some(body) = s.strip_prefix('-').filter(|b| !b.is_empty()) else {
        return false;
    };
    for c in body.chars() {
        if RUN_SHORT_WITH_VALUE.contains(c) {
            return true;
        }
        if !RUN_SHORT_SWITCHES.contains(c) {
            return false;
        }
    }
    true
}

fn is_go_long_flag(s: &str) -> bool {
    let Some(body) = s.strip_prefix('-') else {
        return false;
    };
    let name = body.split('=').next().unwrap_or("");
    !body.starts_with('-')
        && name.len() > 1
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(args: &[&str]) -> Vec<String> {
        go_style_flags(args.iter().map(|s| (*s).into()).collect())
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect()
    }

    #[test]
    fn go_style_long_flags_become_double_dash() {
        assert_eq!(
            rewrite(&[
                "lv",
                "restore",
                "-o",
                "out.db",
                "-txid",
                "0a",
                "-if-db-not-exists",
                "db"
            ]),
            [
                "lv",
                "restore",
                "-o",
                "out.db",
                "--txid",
                "0a",
                "--if-db-not-exists",
                "db"
            ]
        );
        assert_eq!(
            rewrite(&["lv", "replicate", "-exec=app -x"]),
            ["lv", "replicate", "--exec=app -x"]
        );
    }

    #[test]
    fn argv_after_double_dash_is_verbatim() {
        assert_eq!(
            rewrite(&["lv", "--", "prog", "-config", "--", "-x"]),
            ["lv", "--", "prog", "-config", "--", "-x"]
        );
    }

    #[test]
    fn tini_style_short_clusters_are_untouched_in_run_mode() {
        assert_eq!(
            rewrite(&[
                "lv",
                "-vvv",
                "-sg",
                "-e143",
                "-pSIGKILL",
                "-grace",
                "1s",
                "--",
                "p"
            ]),
            [
                "lv",
                "-vvv",
                "-sg",
                "-e143",
                "-pSIGKILL",
                "--grace",
                "1s",
                "--",
                "p"
            ]
        );
        assert_eq!(
            rewrite(&["lv", "run", "-wv", "-log-level", "info"]),
            ["lv", "run", "-wv", "--log-level", "info"]
        );
        // Other subcommands keep Litestream's spelling only.
        assert_eq!(
            rewrite(&["lv", "replicate", "-exec", "app", "-v"]),
            ["lv", "replicate", "--exec", "app", "-v"]
        );
    }

    #[test]
    fn run_short_flag_lists_match_the_run_arguments() {
        use clap::CommandFactory;
        let cmd = Cli::command();
        let run = cmd.find_subcommand("run").expect("run subcommand");
        for arg in run.get_arguments() {
            let Some(short) = arg.get_short() else {
                continue;
            };
            let takes_value = arg.get_action().takes_values();
            let list = if takes_value {
                RUN_SHORT_WITH_VALUE
            } else {
                RUN_SHORT_SWITCHES
            };
            assert!(list.contains(short), "-{short} missing from its list");
        }
    }

    #[test]
    fn the_init_parser_takes_only_plain_run_invocations() {
        let parsed = |args: &[&str]| parse(args.iter().map(Into::into).collect());
        let cli = parsed(&["lv", "-g", "-e", "3", "--", "prog", "-x"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.run.command, ["prog", "-x"]);
        assert_eq!(cli.run.remap_exit, [(3, 0)]);
        assert!(matches!(
            parsed(&["lv", "run", "--", "p"]).unwrap().command,
            Some(Command::Run(_))
        ));
        assert!(matches!(
            parsed(&["lv", "replicate", "--once"]).unwrap().command,
            Some(Command::Replicate(_))
        ));
        let help = parsed(&["lv", "--help"]).unwrap_err().to_string();
        assert!(help.contains("replicate"), "{help}");
        assert!(parsed(&["lv", "--version"]).is_err());
        let wrong = parsed(&["lv", "--bogus"]).unwrap_err();
        assert_eq!(wrong.kind(), clap::error::ErrorKind::UnknownArgument);
    }

    #[test]
    fn a_bare_double_dash_reads_as_clap_would_read_it() {
        for args in [
            &["lv", "--"][..],
            &["lv", "--", "prog"],
            &["lv", "--", "prog", "-x", "--", "--grace", "1s"],
        ] {
            let argv: Vec<std::ffi::OsString> = args.iter().map(Into::into).collect();
            let fast = parse(argv.clone()).unwrap();
            let clap = Cli::try_parse_from(argv).unwrap();
            assert_eq!(format!("{fast:?}"), format!("{clap:?}"), "{args:?}");
        }
    }

    #[test]
    fn short_flags_numbers_and_values_are_untouched() {
        assert_eq!(
            rewrite(&["lv", "-f", "-v", "-1", "x"]),
            ["lv", "-f", "-v", "-1", "x"]
        );
    }
}
