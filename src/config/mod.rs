//! The supervisor's configuration: `litevisor.toml`, the services directory (litevisor's own
//! `NAME/service.toml` + `run` form and s6-overlay's service directories as they are), and the
//! `[[databases]]` to replicate, loaded into one validated, resolved model.
//!
//! Loading fails closed: every problem (unknown key, bad value, missing or non-executable program,
//! missing dependency, cycle, unknown user, ...) is collected with its file, line and key, and the
//! whole list is returned. Nothing here starts a process.
//!
//! Where the configuration comes from ([`load`]):
//! 1. the path given (`--config PATH`), else `$LITEVISOR_CONFIG` when set and non-empty, else
//!    [`DEFAULT_CONFIG`];
//! 2. a path given explicitly (flag or variable) must exist; the default file may be missing, and then
//!    the services come only from [`DEFAULT_SERVICES_DIR`], which must then exist;
//! 3. `services_dir` (relative to the config file's directory; default `services.d`, which for the
//!    default file is [`DEFAULT_SERVICES_DIR`]) is scanned when it exists; a `services_dir` set
//!    explicitly must exist.

mod credentials;
mod database;
mod diag;
mod directory;
mod env;
mod execline;
mod graph;
pub mod litestream;
mod lookup;
pub mod observe;
mod pipeline;
mod program;
pub mod replica_url;
mod resolve;
pub mod s3;
mod s6dir;
mod s6overlay;
mod spec;
mod tree;
pub mod tuning;
mod values;

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use database::replica_from_url;
pub use diag::{ConfigError, Problem};
pub use directory::DatabaseDir;
pub use lookup::{Configured, configured};
pub use nix::sys::signal::Signal;
pub use observe::{LogFilter, LogFormat, LogSettings, Observability};
pub use program::{DEFAULT_PATH, SELF_EXE, SELF_PROGRAM};
pub use replica_url::{ReplicaUrl, UrlError, is_url};
pub use s3::S3Options;
pub use tuning::PageEncoding;
pub use values::duration as parse_duration;
pub use values::signal as parse_signal;

/// The configuration file read when neither `--config` nor `$LITEVISOR_CONFIG` names one.
pub const DEFAULT_CONFIG: &str = "/etc/litevisor/litevisor.toml";
/// The services directory read when the default configuration file is absent (it is also the default
/// `services_dir` of the default file: `services.d` next to it).
pub const DEFAULT_SERVICES_DIR: &str = "/etc/litevisor/services.d";
/// The environment variable that names the configuration file.
pub const CONFIG_ENV: &str = "LITEVISOR_CONFIG";
/// Set in every service's environment to the service's own name.
pub const SERVICE_NAME_ENV: &str = "LITEVISOR_SERVICE";

/// The whole validated configuration.
#[allow(dead_code)] // Read by the supervisor and replication runtimes, built on this model.
#[derive(Debug)]
pub struct Config {
    /// The configuration file that was read; `None` when the default file was absent.
    pub file: Option<PathBuf>,
    /// The services directory that was scanned, if it existed.
    pub services_dir: Option<PathBuf>,
    /// Default for each service's `log_prefix`.
    pub log_prefix: bool,
    /// One deadline bounding the whole shutdown, from the first stop signal to the last exit.
    pub shutdown_timeout: Duration,
    /// Default for each service's `stop_grace`.
    pub grace: Duration,
    /// Services in start order (a topological order of `depends_on`; ties broken by name).
    /// Stop in reverse order.
    pub services: Vec<Service>,
    pub databases: Vec<Database>,
    /// Directory entries (Litestream's `dir:` mode): the databases found under each.
    pub directories: Vec<DatabaseDir>,
    /// Logging, the metrics and health listener.
    pub observe: Observability,
    /// Things accepted but worth telling (ignored s6 features); `check` prints them.
    pub warnings: Vec<Problem>,
}

#[allow(dead_code)] // Used by the runtimes built on this model.
impl Config {
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }

    /// Index of a service in [`Config::services`] (start order).
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.services.iter().position(|s| s.name == name)
    }

    /// The service whose exit ends the container, if one is marked `main`.
    pub fn main_service(&self) -> Option<&Service> {
        self.services.iter().find(|s| s.main)
    }
}

/// One service, resolved: argv, environment and credentials are final.
#[allow(dead_code)] // Read by the supervisor runtime, built on this model.
#[derive(Debug, Clone)]
pub struct Service {
    pub name: String,
    /// Where the service is defined: the config file, its `service.toml`, or its directory.
    pub defined_in: PathBuf,
    pub kind: ServiceKind,
    /// argv to exec; `argv[0]` is a path, or a name looked up on the service's `PATH`.
    pub command: Vec<OsString>,
    /// Direct dependencies (started and ready before this one starts).
    pub depends_on: Vec<String>,
    /// Direct dependents (stopped before this one stops).
    pub dependents: Vec<String>,
    pub restart: RestartPolicy,
    pub backoff: Backoff,
    /// This service's exit ends the container with its exit status.
    pub main: bool,
    pub readiness: Readiness,
    /// How long to wait for readiness (a oneshot: for its successful exit); `None` = forever.
    pub ready_timeout: Option<Duration>,
    pub stop_signal: Signal,
    /// Time between `stop_signal` and SIGKILL (capped at run time by what is left of `shutdown_timeout`).
    pub stop_grace: Duration,
    /// The complete environment for exec, in order, without duplicates.
    pub env: Environment,
    /// Directory to chdir to; `None` = litevisor's own.
    pub working_dir: Option<PathBuf>,
    /// Identity to switch to; `None` = keep litevisor's.
    pub credentials: Option<Credentials>,
    /// Run after each exit of a longrun, with s6's arguments: exit code (256 if killed), signal number,
    /// service name.
    pub finish: Option<Vec<OsString>>,
    /// A oneshot's `down` (s6-rc): run when the container stops, in reverse start order, after its
    /// dependents have stopped; bounded by the stop deadline.
    pub down: Option<Vec<OsString>>,
    /// s6-rc log pipeline: this service's stdout goes to that service's stdin (through one pipe
    /// litevisor keeps open for the whole run, so no line is lost across restarts).
    pub stdout_to: Option<String>,
    /// Another service's stdout feeds this one's stdin (it is a pipeline's consumer).
    pub stdin_piped: bool,
    /// `None` = no limit.
    pub finish_timeout: Option<Duration>,
    pub log_prefix: bool,
    /// Databases (their resolved `path`) that must be restored before this service starts.
    pub databases: Vec<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceKind {
    /// Runs for the life of the container; restarted per `restart`.
    Longrun,
    /// Runs once to completion; success (exit 0) makes it "ready" for its dependents.
    Oneshot,
}

impl fmt::Display for ServiceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ServiceKind::Longrun => "longrun",
            ServiceKind::Oneshot => "oneshot",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

/// What happens when a service used up `max_restarts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUp {
    /// Stop the container (exit status: the service's last one).
    Shutdown,
    /// Leave the service down; everything else keeps running.
    StayDown,
}

/// Restart pacing: exponential back-off with jitter, forgiven once the service has been up long enough.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Delay before the first restart; doubles after each further consecutive failure.
    pub initial: Duration,
    pub max: Duration,
    /// Each delay is multiplied by a random factor in `[1 - jitter, 1]`; 0 = deterministic.
    pub jitter: f64,
    /// A run that lasts this long resets the delay and the restart count.
    pub stable_after: Duration,
    /// Consecutive restarts allowed before giving up; `None` = unlimited.
    pub max_restarts: Option<u32>,
    pub give_up: GiveUp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Ready as soon as it is started (a oneshot: when it exits 0).
    Started,
    /// s6 protocol: the service writes a newline to this fd (the write end is placed at this number).
    NotificationFd(i32),
    /// Ready when a TCP connect to host:port succeeds.
    Tcp { host: String, port: u16 },
    /// Ready when this command exits 0 (run repeatedly until then).
    Command(Vec<OsString>),
}

/// Resolved identity: setgroups(groups), setgid(gid), setuid(uid), in that order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (includes `gid`).
    pub groups: Vec<u32>,
    /// The passwd name, when the user has an entry.
    pub user_name: Option<String>,
}

/// One `[[databases]]` entry.
#[derive(Debug, Clone)]
pub struct Database {
    /// The SQLite database file (relative paths resolve against the config file's directory).
    pub path: PathBuf,
    pub replica: Replica,
    pub restore: RestorePolicy,
    pub sync_interval: Duration,
    pub checkpoint_interval: Duration,
    pub min_checkpoint_page_count: u32,
    /// WAL size in pages that forces a TRUNCATE checkpoint; 0 = never.
    pub truncate_page_n: u32,
    pub busy_timeout: Duration,
    /// Litestream's `meta-path`; `None` = `.<db file name>-litestream` next to the database.
    pub meta_path: Option<PathBuf>,
    /// Most WAL bytes turned into one L0 file per sync; 0 = unlimited.
    pub max_sync_wal_bytes: u64,
    /// Compaction intervals of L1..Ln.
    pub levels: Vec<Duration>,
    pub snapshot_interval: Duration,
    pub snapshot_retention: Duration,
    /// How long L0 files stay after compaction; 0 = never delete them.
    pub l0_retention: Duration,
    /// false = never delete anything from the replica.
    pub retention_enabled: bool,
    /// Page encoding of written LTX files.
    pub page_encoding: PageEncoding,
    /// Replicate even when the database is on a network or FUSE filesystem (litevisor refuses by
    /// default: SQLite's locking is unreliable there).
    pub allow_network_fs: bool,
    /// A read replica (`follow = true`): restored before the services start, then kept current
    /// from the replica every interval; never replicated from this side.
    pub follow: Option<Duration>,
}

impl Database {
    /// A database with Litestream's documented defaults for every knob (the engine's).
    pub fn new(path: PathBuf, replica: Replica) -> Database {
        use tuning::*;
        Database {
            path,
            replica,
            restore: RestorePolicy::IfMissing,
            sync_interval: DEFAULT_MIN_SYNC_INTERVAL,
            checkpoint_interval: DEFAULT_CHECKPOINT_INTERVAL,
            min_checkpoint_page_count: DEFAULT_MIN_CHECKPOINT_PAGE_COUNT,
            truncate_page_n: DEFAULT_TRUNCATE_PAGE_N,
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
            meta_path: None,
            max_sync_wal_bytes: DEFAULT_MAX_SYNC_WAL_BYTES,
            levels: DEFAULT_LEVELS.to_vec(),
            snapshot_interval: DEFAULT_SNAPSHOT_INTERVAL,
            snapshot_retention: DEFAULT_SNAPSHOT_RETENTION,
            l0_retention: DEFAULT_L0_RETENTION,
            retention_enabled: true,
            page_encoding: PageEncoding::Frame,
            allow_network_fs: false,
            follow: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestorePolicy {
    /// Restore before the services start only when the database file does not exist.
    IfMissing,
    /// Always restore before the services start, replacing the local file.
    Always,
    Never,
}

/// Where a database is replicated to.
// One per database, built once: the S3 variant's size costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replica {
    File {
        path: PathBuf,
    },
    /// Everything the S3 client needs, as the URL and the configuration keys set it.
    S3(S3Options),
}

impl fmt::Display for Replica {
    /// The replica as a URL, never with credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Replica::File { path } => write!(f, "file://{}", path.display()),
            Replica::S3(s3) => write!(f, "s3://{}/{}", s3.bucket, s3.path),
        }
    }
}

/// A service's environment. `Debug` shows only the names: values (from env files especially) are
/// often secrets.
#[derive(Clone, PartialEq, Eq)]
pub struct Environment(Vec<(OsString, OsString)>);

#[allow(dead_code)] // Used by the supervisor runtime built on this model.
impl Environment {
    pub fn vars(&self) -> &[(OsString, OsString)] {
        &self.0
    }

    pub fn get(&self, name: &str) -> Option<&OsString> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
}

impl fmt::Debug for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(self.0.iter().map(|(name, _)| name))
            .finish()
    }
}

/// Loads and validates the configuration: `path`, else `$LITEVISOR_CONFIG`, else [`DEFAULT_CONFIG`]
/// (see the module documentation for the rules about missing files). Reads the process environment
/// (services inherit it) and the user and group databases.
pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
    let from_env = std::env::var_os(CONFIG_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    match path.map(Path::to_path_buf).or(from_env) {
        Some(explicit) => resolve::load_file(&explicit, true),
        None => resolve::load_file(Path::new(DEFAULT_CONFIG), false),
    }
}
