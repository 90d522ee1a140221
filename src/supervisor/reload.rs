//! Reload (SIGHUP in supervisor mode, `litevisor reload`): re-reads the configuration off the
//! runtime, checks it can be applied, and hands the orchestrator the new set of services as
//! [`NewService`]s; the orchestrator diffs it against what runs ([`super::orchestrator`]'s
//! `apply`): added services start, removed ones stop, changed ones restart, unchanged ones are not
//! touched. Likewise `[[databases]]` entries: an added one gets its restore and replicate nodes (it
//! is restored if needed, then replicated), a removed one gets its final sync, then leaves the set.
//! A configuration that does not validate, or that changes what reload cannot change (directory
//! entries, an entry's settings, the log pipelines), is refused with its errors and nothing changes.
//!
//! Also the [`Factory`] that builds a service's unit, used for the first graph and for reloads.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::database::RestoreUnit;
use super::dbset::DbSet;
use super::output::Output;
use super::service::ProcessService;
use super::unit::Unit;
use crate::config::{Config, ConfigError, Database, Service, ServiceKind, replica_from_url};
use crate::control::svc::Message;

/// Loads and validates the configuration again (blocking file I/O: run off the runtime).
pub type Loader = Arc<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>;

/// One service of the reloaded configuration.
pub struct NewService {
    pub name: String,
    /// Equal keys: unchanged service (everything but its list of dependents compared).
    pub key: String,
    pub main: bool,
    pub oneshot: bool,
    pub lingers: bool,
    /// Services it depends on, by name.
    pub depends_on: Vec<String>,
    /// Databases it depends on (their paths: the orchestrator knows their replicate nodes).
    pub databases: Vec<PathBuf>,
    pub make: Box<dyn Fn() -> Box<dyn Unit> + Send>,
}

/// What the orchestrator is asked: a service request, or a reloaded configuration to apply.
pub enum Op {
    Svc(crate::control::svc::Request),
    Apply(Plan, oneshot::Sender<Result<String, String>>),
}

/// A reloaded configuration, ready to apply.
pub struct Plan {
    /// `None`: the services stay as they are (`register`, `unregister`).
    pub services: Option<Vec<NewService>>,
    /// `[[databases]]` entries not replicated before: their restore and replicate units.
    pub added_databases: Vec<NewDatabase>,
    /// Entries gone from the configuration: their final sync runs, then they leave.
    pub removed_databases: Vec<PathBuf>,
    /// Answer once the removed database's final sync is over, with its replica's txid in decimal
    /// (`unregister`, as Litestream answers it), instead of at once.
    pub wait_final_sync: bool,
}

/// One added `[[databases]]` entry, as its two graph nodes' units (see [`super::database`]).
pub struct NewDatabase {
    pub path: PathBuf,
    pub name: String,
    pub restore: Box<dyn Unit>,
    pub replicate: Box<dyn Unit>,
    pub revive: Box<dyn Fn() -> Box<dyn Unit> + Send>,
}

/// Builds service units: holds what every unit shares (the output, the log pipelines' pipes, the
/// seed of the restart jitter) and where the database nodes are.
pub struct Factory {
    pub output: Arc<Output>,
    pub pipes: BTreeMap<String, (Arc<OwnedFd>, Arc<OwnedFd>)>,
    pub seed: u64,
    /// Each database (its path, or a directory entry's dir) and its replicate node.
    pub database_nodes: Vec<(PathBuf, usize)>,
    /// The configuration's directory entries, as a key: reload refuses to change them.
    pub directories_key: String,
    /// The `[[databases]]` entries applied last (path -> definition), to tell what a reload adds,
    /// removes or changes.
    pub databases: std::sync::Mutex<BTreeMap<PathBuf, String>>,
    /// Databases added by `litevisor register`: a reload keeps them.
    pub registered: std::sync::Mutex<std::collections::BTreeSet<PathBuf>>,
    pub set: Arc<DbSet>,
}

impl Factory {
    /// The unit maker for `service` (the `i`th of its configuration).
    pub fn make(&self, service: &Service, i: usize) -> Box<dyn Fn() -> Box<dyn Unit> + Send> {
        let (service, output) = (service.clone(), Arc::clone(&self.output));
        let seed = self
            .seed
            .wrapping_add(i as u64)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let stdin = self
            .pipes
            .get(&service.name)
            .map(|(read, _)| Arc::clone(read));
        let stdout = service
            .stdout_to
            .as_ref()
            .and_then(|c| self.pipes.get(c))
            .map(|(_, write)| Arc::clone(write));
        Box::new(move || {
            Box::new(
                ProcessService::new(service.clone(), Arc::clone(&output), seed)
                    .piped(stdin.clone(), stdout.clone()),
            )
        })
    }

    /// The two units of a database added at run time.
    fn new_database(&self, db: &Database) -> NewDatabase {
        let name = db.path.display().to_string();
        let record = self.set.insert(db, &format!("replicate:{name}"));
        let (revive_db, revive_record) = (db.clone(), Arc::clone(&record));
        NewDatabase {
            path: db.path.clone(),
            name,
            restore: Box::new(RestoreUnit::new(db.clone(), Arc::clone(&record))),
            replicate: super::database::replication_unit(db, &record),
            revive: Box::new(move || super::database::replication_unit(&revive_db, &revive_record)),
        }
    }

    /// `litevisor register`: Litestream's status word and the plan, or why not.
    fn register(&self, path: PathBuf, url: &str) -> Result<(&'static str, Option<Plan>), String> {
        if !path.is_absolute() {
            return Err(format!("{}: the path must be absolute", path.display()));
        }
        let mut known = self.databases.lock().unwrap_or_else(|p| p.into_inner());
        if known.contains_key(&path) || self.set.contains(&path) {
            return Ok(("already_exists", None));
        }
        let base = path.parent().unwrap_or(std::path::Path::new("/"));
        let replica = replica_from_url(url, base).map_err(|e| format!("{url}: {e}"))?;
        let db = Database::new(path.clone(), replica);
        known.insert(path.clone(), format!("{db:?}"));
        self.registered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(path);
        let plan = Plan {
            services: None,
            added_databases: vec![self.new_database(&db)],
            removed_databases: Vec::new(),
            wait_final_sync: false,
        };
        Ok(("registered", Some(plan)))
    }

    /// `litevisor unregister`: the plan, or why not.
    fn unregister(&self, path: PathBuf) -> Result<Plan, String> {
        let mut known = self.databases.lock().unwrap_or_else(|p| p.into_inner());
        if known.remove(&path).is_none() {
            return Err(format!("database not found: {}", path.display()));
        }
        self.registered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&path);
        Ok(Plan {
            services: None,
            added_databases: Vec::new(),
            removed_databases: vec![path],
            wait_final_sync: true,
        })
    }

    /// The database nodes `service` depends on.
    pub fn database_deps(&self, service: &Service) -> Vec<usize> {
        service
            .databases
            .iter()
            .filter_map(|p| self.database_nodes.iter().find(|(d, _)| d == p))
            .map(|(_, i)| *i)
            .collect()
    }

    /// The new configuration as services and databases to apply, or why it cannot be applied.
    fn plan(&self, config: &Config) -> Result<Plan, String> {
        if directories_key(config) != self.directories_key {
            return Err(
                "the directory entries changed: restart litevisor to change them".to_owned(),
            );
        }
        let mut known = self.databases.lock().unwrap_or_else(|p| p.into_inner());
        for db in &config.databases {
            if known.get(&db.path).is_some_and(|k| *k != format!("{db:?}")) {
                return Err(format!(
                    "database {}: its settings changed: remove it and add it back (two reloads), or restart litevisor",
                    db.path.display()
                ));
            }
        }
        for service in &config.services {
            let piped = service.stdin_piped || service.stdout_to.is_some();
            let known = self.pipes.contains_key(&service.name)
                || service
                    .stdout_to
                    .as_ref()
                    .is_some_and(|c| self.pipes.contains_key(c));
            if piped && !known {
                return Err(format!(
                    "service {:?}: a new log pipeline: restart litevisor to add one",
                    service.name
                ));
            }
        }
        let registered = self.registered.lock().unwrap_or_else(|p| p.into_inner());
        let removed_databases: Vec<PathBuf> = known
            .keys()
            .filter(|p| !config.databases.iter().any(|d| &d.path == *p) && !registered.contains(*p))
            .cloned()
            .collect();
        let added_databases = config
            .databases
            .iter()
            .filter(|d| !known.contains_key(&d.path))
            .map(|db| self.new_database(db))
            .collect();
        known.retain(|p, _| registered.contains(p));
        known.extend(
            config
                .databases
                .iter()
                .map(|d| (d.path.clone(), format!("{d:?}"))),
        );
        let services = config
            .services
            .iter()
            .enumerate()
            .map(|(i, service)| NewService {
                name: service.name.clone(),
                key: service_key(service),
                main: service.main,
                oneshot: service.kind == ServiceKind::Oneshot,
                lingers: service.kind == ServiceKind::Oneshot && service.down.is_some(),
                depends_on: service.depends_on.clone(),
                databases: service.databases.clone(),
                make: self.make(service, i),
            })
            .collect();
        Ok(Plan {
            services: Some(services),
            added_databases,
            removed_databases,
            wait_final_sync: false,
        })
    }
}

/// What decides whether a service changed: all of it but the list of its dependents (a new
/// dependent does not change the service itself).
pub fn service_key(service: &Service) -> String {
    let mut service = service.clone();
    service.dependents.clear();
    format!("{service:?}")
}

pub fn directories_key(config: &Config) -> String {
    format!("{:?}", config.directories)
}

/// The `[[databases]]` entries as [`Factory::databases`] keeps them.
pub fn database_keys(config: &Config) -> BTreeMap<PathBuf, String> {
    config
        .databases
        .iter()
        .map(|d| (d.path.clone(), format!("{d:?}")))
        .collect()
}

/// Routes the control socket's messages: service requests straight to the orchestrator, reloads
/// through the loader (off the runtime) and the factory first. Ends when either side is gone.
pub async fn route(
    mut messages: mpsc::UnboundedReceiver<Message>,
    ops: mpsc::UnboundedSender<Op>,
    loader: Option<Loader>,
    factory: Arc<Factory>,
) {
    while let Some(message) = messages.recv().await {
        let op = match message {
            Message::Svc(request) => Op::Svc(request),
            Message::Register {
                path,
                replica_url,
                reply,
            } => match factory.register(path, &replica_url) {
                Ok((status, Some(plan))) => Op::Apply(plan, with_answer(reply, status)),
                Ok((status, None)) => {
                    let _ = reply.send(Ok(status.to_owned()));
                    continue;
                }
                Err(err) => {
                    let _ = reply.send(Err(err));
                    continue;
                }
            },
            Message::Unregister { path, reply } => match factory.unregister(path) {
                Ok(plan) => Op::Apply(plan, reply),
                Err(err) => {
                    let _ = reply.send(Err(err));
                    continue;
                }
            },
            Message::Reload(reply) => {
                let Some(loader) = loader.clone() else {
                    let _ = reply.send(Err(
                        "this litevisor has no configuration file to reload".to_owned()
                    ));
                    continue;
                };
                tracing::info!("reloading the configuration");
                let loaded = tokio::task::spawn_blocking(move || loader()).await;
                let plan = match loaded {
                    Ok(Ok(config)) => {
                        for warning in &config.warnings {
                            tracing::warn!("{warning}");
                        }
                        factory.plan(&config)
                    }
                    Ok(Err(err)) => Err(format!("the new configuration is invalid:\n{err}")),
                    Err(err) => Err(format!("loading the configuration failed: {err}")),
                };
                match plan {
                    Ok(plan) => Op::Apply(plan, reply),
                    Err(err) => {
                        tracing::error!("reload refused, nothing changed: {err}");
                        let _ = reply.send(Err(format!("reload refused, nothing changed: {err}")));
                        continue;
                    }
                }
            }
        };
        if ops.send(op).is_err() {
            return;
        }
    }
}

/// A reply channel for the orchestrator's answer that passes `word` on instead of its text when it
/// succeeds (Litestream's status words for `register` and `unregister`).
fn with_answer(
    reply: oneshot::Sender<Result<String, String>>,
    word: &'static str,
) -> oneshot::Sender<Result<String, String>> {
    let (tx, rx) = oneshot::channel::<Result<String, String>>();
    tokio::spawn(async move {
        if let Ok(answer) = rx.await {
            let _ = reply.send(answer.map(|_| word.to_owned()));
        }
    });
    tx
}
