//! Which databases a configuration file declares, for the commands that name a database by its path
//! (`restore DB`, `verify DB`, `reset DB`, `status`, `databases`, `ltx DB`): litevisor.toml's
//! `[[databases]]`, or Litestream's `litestream.yml`, whose `dir:` entries count too.

use std::path::{Path, PathBuf};

use super::{ConfigError, Database, DatabaseDir, Problem, litestream};

/// The databases of one configuration file.
#[derive(Debug)]
pub struct Configured {
    /// The file they come from (for messages).
    pub file: PathBuf,
    /// Its `path:` / `[[databases]]` entries.
    pub databases: Vec<Database>,
    /// Its `dir:` entries: every matching database below each directory.
    pub directories: Vec<DatabaseDir>,
    /// What the file does that litevisor ignores (Litestream keys without effect here).
    pub warnings: Vec<Problem>,
}

#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error(
        "no configuration file at {}: a database path is looked up in the config (give -config \
         PATH or set LITESTREAM_CONFIG), or name the replica by its replica URL instead \
         (s3://bucket/path, file:///path/to/replica)",
        .0.display()
    )]
    NoFile(PathBuf),
    #[error("the configuration has problems:\n{0}")]
    Invalid(ConfigError),
    #[error(
        "database not found in config: {} is not a database of {} (use `litevisor databases -config {}` to list them)",
        .db.display(),
        .file.display(),
        .file.display()
    )]
    NotFound { db: PathBuf, file: PathBuf },
}

/// Reads the configuration `config` names: litevisor.toml when it ends in `.toml` (or is not given
/// and `$LITEVISOR_CONFIG` is set), otherwise Litestream's `litestream.yml` (`config`, else
/// `$LITESTREAM_CONFIG`, else `/etc/litestream.yml`), whose `exec` is ignored.
pub fn configured(config: Option<&Path>, expand_env: bool) -> Result<Configured, LookupError> {
    let toml = match config {
        Some(path) => path.to_string_lossy().ends_with(".toml"),
        None => std::env::var_os(super::CONFIG_ENV).is_some_and(|v| !v.is_empty()),
    };
    if toml {
        let loaded = super::load(config).map_err(LookupError::Invalid)?;
        return Ok(Configured {
            file: loaded
                .file
                .clone()
                .unwrap_or_else(|| PathBuf::from(super::DEFAULT_CONFIG)),
            databases: loaded.databases,
            directories: loaded.directories,
            warnings: Vec::new(),
        });
    }
    let path = litestream::config_path(config);
    if !path.exists() {
        return Err(LookupError::NoFile(path));
    }
    let overrides = litestream::Overrides {
        ignore_exec: true,
        ..litestream::Overrides::default()
    };
    let loaded = litestream::load(&path, expand_env, &overrides).map_err(LookupError::Invalid)?;
    Ok(Configured {
        file: path,
        databases: loaded.databases,
        directories: loaded.directories,
        warnings: loaded.warnings,
    })
}

impl Configured {
    /// The database at `db_path` (compared as absolute paths, symbolic links resolved): a `path:`
    /// entry, or a database under a `dir:` entry (which may not exist yet: that is what a restore
    /// is for).
    pub fn find(self, db_path: &Path) -> Result<Database, LookupError> {
        let wanted = std::path::absolute(db_path).unwrap_or_else(|_| db_path.to_path_buf());
        let real = wanted.canonicalize().ok();
        let same = |p: &Path| p == wanted || (real.is_some() && p.canonicalize().ok() == real);
        let in_directory = || {
            self.directories.iter().find_map(|entry| {
                let name = wanted.file_name()?.to_string_lossy();
                let below = wanted.starts_with(&entry.dir)
                    && (entry.recursive || wanted.parent() == Some(entry.dir.as_path()));
                (below && entry.matches(&name))
                    .then(|| entry.database(&wanted))
                    .flatten()
            })
        };
        let found = self.databases.iter().find(|db| same(&db.path)).cloned();
        found.or_else(in_directory).ok_or(LookupError::NotFound {
            db: wanted.clone(),
            file: self.file.clone(),
        })
    }
}
