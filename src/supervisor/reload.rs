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

use super::database::{ReplicateUnit, RestoreUnit};
use super::dbset::DbSet;
use super::output::Output;
use super::service::ProcessService;
use super::unit::Unit;
use crate::config::{Config, ConfigError, Service, ServiceKind};
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
    pub services: Vec<NewService>,
    /// `[[databases]]` entries not replicated before: their restore and replicate units.
    pub added_databases: Vec<NewDatabase>,
    /// Entries gone from the configuration: their final sync runs, then they leave.
    pub removed_databases: Vec<PathBuf>,
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
        let removed_databases: Vec<PathBuf> = known
            .keys()
            .filter(|p| !config.databases.iter().any(|d| &d.path == *p))
            .cloned()
            .collect();
        let mut added_databases = Vec::new();
        for db in config
            .databases
            .iter()
            .filter(|d| !known.contains_key(&d.path))
        {
            let name = db.path.display().to_string();
            let record = self.set.insert(db, &format!("replicate:{name}"));
            let (revive_db, revive_record) = (db.clone(), Arc::clone(&record));
            added_databases.push(NewDatabase {
                path: db.path.clone(),
                name,
                restore: Box::new(RestoreUnit::new(db.clone(), Arc::clone(&record))),
                replicate: Box::new(ReplicateUnit::new(db.clone(), record)),
                revive: Box::new(move || {
                    ReplicateUnit::revive(revive_db.clone(), Arc::clone(&revive_record))
                }),
            });
        }
        *known = config
            .databases
            .iter()
            .map(|d| (d.path.clone(), format!("{d:?}")))
            .collect();
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
            services,
            added_databases,
            removed_databases,
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
                    Ok(Ok(config)) => factory.plan(&config),
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
