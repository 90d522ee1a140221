//! The multi-service supervisor (`litevisor [run] [--config PATH]` without `-- PROG`): runs the
//! services of a validated [`Config`] as one dependency graph, as PID 1 or as a subreaper.
//!
//! # Threads and event flow
//! [`run`] takes the signals over first (before any thread), gives the init core's [`Reactor`] (the
//! signalfd and the only `waitpid(-1)`) its own thread, and drives everything else from a
//! current-thread tokio runtime: signals and orphan reports arrive over an unbounded channel, child
//! exits through the reaper's per-pid callbacks. Two writer threads own litevisor's stdout and
//! stderr ([`output`]). Nothing ticks: idle, every thread sleeps in the kernel.
//!
//! # Life cycle ([`orchestrator`])
//! - Start: nodes start as soon as all their dependencies are *satisfied* (a longrun: ready; a
//!   oneshot: exited 0), so independent branches start in parallel. A failed oneshot, a readiness
//!   timeout, or a service that dies before readiness while dependents wait stop the start-up: the
//!   error names the service and the reason, everything started is stopped, exit code 1.
//! - Run: restarts are each service's business ([`service`], [`backoff`]). SIGHUP reloads the
//!   configuration when there is one to re-read ([`reload`]); signals other than TERM/INT/QUIT (USR1,
//!   USR2, WINCH, ... and HUP without a reload) go to the main service's process group, or to every
//!   service's group when there is no main service. `litevisor svc` requests change one service at
//!   run time (see the orchestrator's `requests` module).
//! - Shutdown starts on SIGTERM/SIGINT/SIGQUIT, on the main service's exit, on a `give_up =
//!   "shutdown"`, on a start-up failure, or (no main service) when every service has ended. Nodes
//!   stop in reverse dependency order (one stops once all its dependents are down), each with its
//!   stop signal, then SIGKILL of its tree after `stop_grace`; one deadline (`shutdown_timeout`)
//!   bounds it all and, when it passes, everything is killed at once. A repeated stop signal is
//!   forwarded to the services still stopping and changes nothing else (it never costs a final
//!   sync); a second Ctrl-C on litevisor's terminal kills the services at once, and the final syncs
//!   still run. Then leftovers (orphans, escaped descendants) get SIGTERM and, after `grace`
//!   (within the deadline), SIGKILL. litevisor exits the moment no process is left: no fixed sleeps.
//! - Exit code: the main service's (`128 + N` if a signal killed it, remapped by `--remap-exit`),
//!   including after a SIGTERM-initiated stop (so `docker stop` of a main that dies of SIGTERM gives
//!   143; `-e 143` maps it to 0); 0 after a stop signal when there is no main service; 1 for a failed
//!   start-up; the give-up service's code (at least 1); with no main service and every service ended
//!   on its own: the first non-zero exit code, else 0. Then 74 instead of 0 if a database's final
//!   sync failed.
//!
//! # Units and databases
//! The orchestrator knows nodes only as [`unit::Unit`]s: `run(control)` starts the unit, calls
//! `control.ready()` when dependents may start, obeys `control.next_order()` (`Stop { deadline }`,
//! then maybe `Kill`), and returns an [`unit::Ended`] once it is down for good. A process service
//! ([`service`]) is one implementation; each `[[databases]]` entry adds two in-process ones
//! ([`database`]), built by [`build_nodes`]:
//! - `restore:<db>`, a oneshot: restores the file per its `restore` policy (default: when the file
//!   is missing and the replica has data), ready when the file is in place. A failed restore or an
//!   unreadable replica fails the start-up (exit 1) instead of starting the app on an empty database;
//! - `replicate:<db>`, a longrun depending on it: ready once the engine replicates; its stop order is
//!   the final sync (WAL -> L0 -> replica, retried until the shutdown deadline). A stop that comes
//!   before it started does not skip it: once its restore is done (or was not needed) it starts for
//!   the final sync alone; after an abandoned restore it never starts.
//!
//! Every service depends on the replicate node of each database in its `databases` list (all of
//! them by default), so it starts on a restored, replicated database, and the reverse-order stop
//! runs the final syncs only after those services are down. Services get their stop deadline
//! [`orchestrator::final_sync_reserve`] earlier than the databases, so a service that ignores its
//! stop signal cannot use up the final sync's time. A failed (or abandoned) final sync turns an exit
//! code of 0 into 74 and keeps any other code; it is logged as an error either way. Databases alone
//! (no services) replicate until a stop signal.
//!
//! # Control socket
//! [`control::Server`] is bound before any thread starts (see [`crate::control`] for the path) and
//! answers `litevisor status` from the runtime: service states from the [`unit::Board`], database
//! positions from each database's [`database::DbShared`] (in-memory reads only).

mod backoff;
mod child;
mod database;
mod dbset;
mod directory;
mod follow;
pub use directory::found_databases;
mod orchestrator;
mod output;
mod readiness;
mod reload;
mod service;
mod status;
mod unit;

use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, ServiceKind};
use crate::control;
use crate::init::{self, ExitCodeMap, Flow, Reactor};

use database::RestoreUnit;
use dbset::DbSet;
use directory::{DirRestoreUnit, DirUnit};
use orchestrator::{Fresh, Node, Settings};
use output::Output;
use reload::Factory;
use status::{Overview, ServiceEntry};
use unit::Board;

/// How long, after the last process ended, output still in the pipes may take to reach stdout.
const OUTPUT_PATIENCE: Duration = Duration::from_secs(2);

pub struct Options {
    pub exit_map: ExitCodeMap,
    /// Log a warning for every orphan reaped (tini's `-w`).
    pub warn_on_reap: bool,
    /// With nothing to run, wait for a stop signal instead of ending at once (Litestream's
    /// `replicate` with no databases idles).
    pub idle_when_empty: bool,
    /// Re-reads the configuration for a reload (SIGHUP, `litevisor reload`); without it SIGHUP is
    /// forwarded like the other signals.
    pub reload: Option<reload::Loader>,
}

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("cannot set up signal handling: {0}")]
    Signals(#[source] std::io::Error),
    #[error("cannot start the supervisor: {0}")]
    Setup(#[source] std::io::Error),
    #[error("cannot serve /metrics and /healthz on {addr}: {err}")]
    Listen { addr: String, err: std::io::Error },
}

/// Supervises `config`'s services until the container stops; returns litevisor's exit code.
/// Must be called from the main thread before any other thread exists.
pub fn run(config: Config, options: Options) -> Result<i32, SupervisorError> {
    let set = init::signals::take_over().map_err(SupervisorError::Signals)?;
    let mut reactor = Reactor::new(&set).map_err(SupervisorError::Signals)?;
    let waker = reactor.waker();
    if std::process::id() != 1
        && let Err(err) = init::become_subreaper()
    {
        tracing::warn!(%err, "cannot become a child subreaper: orphans will not be reaped by litevisor");
    }
    // Bound before any other thread exists: the bind narrows the process umask for a moment.
    let mut socket = match control::path::server_path() {
        Ok(path) => control::Server::bind(&path),
        Err(why) => {
            tracing::warn!("running without a control socket: {why}");
            None
        }
    };
    // Only when asked for: nothing of the metrics exists otherwise.
    let http = match &config.observe.metrics_addr {
        Some(addr) => {
            let server =
                control::http::HttpServer::bind(addr).map_err(|err| SupervisorError::Listen {
                    addr: addr.clone(),
                    err,
                })?;
            tracing::info!(
                "serving metrics on http://{}/metrics (health: /healthz)",
                server.local_addr()
            );
            Some(server)
        }
        None => None,
    };

    let (events, event_rx) = tokio::sync::mpsc::unbounded_channel();
    let reactor_thread = std::thread::Builder::new()
        .name("lv-reactor".into())
        .stack_size(256 * 1024)
        .spawn(move || {
            let mut sink = |event| {
                if events.send(event).is_err() {
                    Flow::Stop
                } else {
                    Flow::Continue
                }
            };
            if let Err(err) = reactor.run(&mut sink) {
                tracing::error!(%err, "init event loop failed");
            }
        })
        .map_err(SupervisorError::Setup)?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_stack_size(256 * 1024)
        .build()
        .map_err(SupervisorError::Setup)?;
    let output = Output::new().map_err(SupervisorError::Setup)?;
    let settings = Settings {
        shutdown_timeout: config.shutdown_timeout,
        grace: config.grace,
        exit_map: options.exit_map,
        warn_on_reap: options.warn_on_reap,
        idle_when_empty: options.idle_when_empty,
    };
    let (services_handle, messages) = tokio::sync::mpsc::unbounded_channel();
    let (ops, ops_rx) = tokio::sync::mpsc::unbounded_channel();
    let (nodes, overview, factory) =
        build_nodes(&config, &output, services_handle.clone()).map_err(SupervisorError::Setup)?;
    let board = Arc::clone(&overview.board);
    let entries = Arc::clone(&overview.services);
    let database_nodes = factory.database_nodes.clone();
    let databases = Arc::clone(&overview.databases);
    // SIGHUP reloads only where there is a configuration file to re-read.
    let reload_trigger = options.reload.is_some().then_some(services_handle);
    let route = reload::route(messages, ops, options.reload, Arc::new(factory));
    let overview = Arc::new(overview);
    let daemon: Arc<dyn control::Daemon> = Arc::clone(&overview) as Arc<dyn control::Daemon>;
    let overview: Arc<dyn control::StatusSource> = overview;
    let (serve, serve_http) = {
        // The listeners join the runtime's reactor, so they are registered inside it.
        let _inside = runtime.enter();
        let serve_http = match http.map(|h| h.serve(Arc::clone(&overview))) {
            Some(Err(err)) => {
                return Err(SupervisorError::Listen {
                    addr: config.observe.metrics_addr.clone().unwrap_or_default(),
                    err,
                });
            }
            Some(Ok(serve)) => Some(serve),
            None => None,
        };
        (socket.as_mut().and_then(|s| s.serve(daemon)), serve_http)
    };
    let code = runtime.block_on(async {
        if let Some(serve) = serve {
            tokio::spawn(serve);
        }
        if let Some(serve) = serve_http {
            tokio::spawn(serve);
        }
        tokio::spawn(route);
        let links = orchestrator::Links {
            board,
            entries,
            ops: ops_rx,
            reload_trigger,
            database_nodes,
            databases,
        };
        let code = orchestrator::run(nodes, settings, event_rx, links).await;
        output.close(OUTPUT_PATIENCE).await;
        code
    });
    drop(runtime);
    drop(socket);
    // The event receiver is gone: the next turn of the reactor ends its loop.
    waker.wake();
    let _ = reactor_thread.join();
    Ok(code)
}

/// The graph: per database a restore node and a replicate node (which depends on it), then one node
/// per service in the configuration's start order; every service depends on the replicate node of
/// each database in its `databases` list, so it starts on a restored, replicated database and stops
/// before that database's final sync. Also the status view of all of it.
fn build_nodes(
    config: &Config,
    output: &Arc<Output>,
    services_handle: control::svc::Handle,
) -> std::io::Result<(Vec<Node>, Overview, Factory)> {
    // One pipe per pipeline consumer, held here for the whole run (as s6-rc's fdholder holds it):
    // a restart of either end loses no line, and the consumer never sees EOF.
    let mut pipes = std::collections::BTreeMap::new();
    for service in config.services.iter().filter(|s| s.stdin_piped) {
        let (read, write) = child::blocking_pipe()?;
        pipes.insert(service.name.clone(), (Arc::new(read), Arc::new(write)));
    }
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        ^ u64::from(std::process::id());
    let mut nodes = Vec::new();
    let set = DbSet::new();
    let names = database::display_names(&config.databases);
    for (db, name) in config.databases.iter().zip(names) {
        let record = set.insert(db, &format!("replicate:{name}"));
        let restore = Box::new(RestoreUnit::new(db.clone(), Arc::clone(&record)));
        let revive: Box<dyn Fn() -> Box<dyn unit::Unit> + Send> = {
            let (db, record) = (db.clone(), Arc::clone(&record));
            Box::new(move || database::replication_unit(&db, &record))
        };
        push_database_nodes(
            &mut nodes,
            &name,
            restore,
            database::replication_unit(db, &record),
            revive,
        );
    }
    // Directory entries: a restore node and a replicate node each, after the single databases.
    let first_dir = nodes.len();
    for entry in &config.directories {
        let name = entry.dir.display().to_string();
        let owner = format!("replicate:{name}");
        let unit = Box::new(DirUnit::new(entry.clone(), Arc::clone(&set), owner.clone()));
        let revive: Box<dyn Fn() -> Box<dyn unit::Unit> + Send> = {
            let (entry, set) = (entry.clone(), Arc::clone(&set));
            Box::new(move || DirUnit::revive(entry.clone(), Arc::clone(&set), owner.clone()))
        };
        let restore = Box::new(DirRestoreUnit::new(entry.clone()));
        push_database_nodes(&mut nodes, &name, restore, unit, revive);
    }
    let first_service = nodes.len();
    let mut database_nodes = Vec::new();
    for (i, db) in config.databases.iter().enumerate() {
        database_nodes.push((db.path.clone(), 2 * i + 1));
    }
    for (i, entry) in config.directories.iter().enumerate() {
        database_nodes.push((entry.dir.clone(), first_dir + 2 * i + 1));
    }
    let factory = Factory {
        output: Arc::clone(output),
        pipes,
        seed,
        database_nodes,
        directories_key: reload::directories_key(config),
        databases: std::sync::Mutex::new(reload::database_keys(config)),
        registered: std::sync::Mutex::default(),
        set: Arc::clone(&set),
    };
    let mut services = Vec::new();
    for (i, service) in config.services.iter().enumerate() {
        let mut deps: Vec<usize> = service
            .depends_on
            .iter()
            .filter_map(|d| config.index_of(d))
            .map(|d| first_service + d)
            .collect();
        deps.extend(factory.database_deps(service));
        // The unit, and a fresh one each time `litevisor svc` starts the service again.
        let make = factory.make(service, i);
        services.push(ServiceEntry {
            index: nodes.len(),
            name: service.name.clone(),
            kind: match service.kind {
                ServiceKind::Oneshot => "oneshot",
                ServiceKind::Longrun => "longrun",
            },
            main: service.main,
        });
        nodes.push(Node {
            name: service.name.clone(),
            deps,
            main: service.main,
            database: false,
            final_sync: false,
            lingers: service.kind == ServiceKind::Oneshot && service.down.is_some(),
            unit: make(),
            revive: None,
            fresh: Some(Fresh {
                oneshot: service.kind == ServiceKind::Oneshot,
                key: reload::service_key(service),
                make,
            }),
        });
    }
    let overview = Overview {
        board: Board::new(nodes.len()),
        services: Arc::new(std::sync::Mutex::new(services)),
        databases: set,
        health_upload_lag: config.observe.health_upload_lag(),
        started_at: std::time::SystemTime::now(),
        services_handle,
    };
    Ok((nodes, overview, factory))
}

/// A database's two nodes: `restore:NAME`, a oneshot, then `replicate:NAME` after it, the longrun
/// whose stop is the final sync (and which is revived if it panics).
fn push_database_nodes(
    nodes: &mut Vec<Node>,
    name: &str,
    restore: Box<dyn unit::Unit>,
    replicate: Box<dyn unit::Unit>,
    revive: Box<dyn Fn() -> Box<dyn unit::Unit> + Send>,
) {
    let first = nodes.len();
    nodes.push(Node {
        name: format!("restore:{name}"),
        deps: Vec::new(),
        main: false,
        database: true,
        final_sync: false,
        lingers: false,
        unit: restore,
        revive: None,
        fresh: None,
    });
    nodes.push(Node {
        name: format!("replicate:{name}"),
        deps: vec![first],
        main: false,
        database: true,
        final_sync: true,
        lingers: false,
        unit: replicate,
        revive: Some(revive),
        fresh: None,
    });
}
