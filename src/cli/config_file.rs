//! `-config PATH` and `-no-expand-env`, the flags of every command that names a database by its path
//! (`restore`, `verify`, `reset`, `status`, `databases`, `ltx`), and what they look up
//! ([`crate::config::configured`]).

use std::path::Path;
use std::sync::Arc;

use anyhow::bail;

use crate::config::{Configured, Database};
use crate::replica::{self, ReplicaClient};

#[derive(clap::Args, Debug)]
pub struct ConfigFile {
    /// Configuration file: a litestream.yml, or a litevisor .toml (default: $LITESTREAM_CONFIG,
    /// else /etc/litestream.yml; $LITEVISOR_CONFIG when set).
    #[arg(long, value_name = "PATH")]
    pub config: Option<String>,
    /// Do not expand $VAR / ${VAR} in the configuration file.
    #[arg(long = "no-expand-env")]
    pub no_expand_env: bool,
}

impl ConfigFile {
    /// The configuration's databases; its warnings are printed.
    pub fn databases(&self) -> anyhow::Result<Configured> {
        let c =
            crate::config::configured(self.config.as_deref().map(Path::new), !self.no_expand_env)?;
        for warning in &c.warnings {
            eprintln!("warning: {warning}");
        }
        Ok(c)
    }

    /// The configured database at `db_path`.
    pub fn find(&self, db_path: &Path) -> anyhow::Result<Database> {
        Ok(self.databases()?.find(db_path)?)
    }

    /// The replica a command line names: a replica URL, or a database path looked up in the
    /// configuration.
    pub fn replica_for(&self, target: &str) -> anyhow::Result<Arc<dyn ReplicaClient>> {
        if !crate::config::is_url(target) {
            let db = self.find(Path::new(target))?;
            return Ok(replica::client_for(&db.replica));
        }
        if self.config.is_some() {
            bail!("cannot specify a replica URL and the -config flag");
        }
        Ok(replica::open_replica(target)?)
    }
}
