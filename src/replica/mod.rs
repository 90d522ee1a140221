//! Replica storage: the `ReplicaClient` trait every backend implements (list, read, atomically write and
//! delete the LTX files of one level), the file backend, and replica URL parsing.
//!
//! The trait is synchronous: callers run it on blocking threads; a network backend blocks on its own
//! runtime inside these calls.

pub mod file;
pub(crate) mod pipe;
pub mod rfc3339;
pub mod s3;

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use crate::replication::ltx;

use crate::config::{ReplicaUrl, UrlError};

/// One LTX file of a replica level.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileInfo {
    pub level: u8,
    pub min_txid: u64,
    pub max_txid: u64,
    pub size: u64,
    /// The LTX header timestamp (file mtime on the file backend).
    pub created_at: SystemTime,
}

impl FileInfo {
    /// `level/<min>-<max>.ltx`, the name used in messages.
    pub fn describe(&self) -> String {
        format!(
            "L{} {}",
            self.level,
            ltx::file_name(self.min_txid, self.max_txid)
        )
    }
}

pub trait ReplicaClient: Send + Sync + std::fmt::Debug {
    /// "file", "s3".
    fn kind(&self) -> &'static str;
    /// Files of one level sorted by (min_txid, max_txid). A missing level is empty.
    fn ltx_files(&self, level: u8) -> Result<Vec<FileInfo>, ReplicaError>;
    fn open_ltx(&self, level: u8, min: u64, max: u64)
    -> Result<Box<dyn Read + Send>, ReplicaError>;
    /// Atomic: afterwards the file is complete or absent. `created_at` is the LTX header timestamp.
    /// Fails (leaving nothing behind) when `data` returns an error.
    fn write_ltx(
        &self,
        level: u8,
        min: u64,
        max: u64,
        created_at: SystemTime,
        data: &mut dyn Read,
    ) -> Result<FileInfo, ReplicaError>;
    /// Deletes the files; files already gone are not an error.
    fn delete_ltx(&self, files: &[FileInfo]) -> Result<(), ReplicaError>;
    /// Like `ltx_files`, but `created_at` is the LTX header time even where listings only give a
    /// server time (S3: LastModified; this reads the `litestream-timestamp` metadata, one HEAD per
    /// file, in parallel). For point-in-time restores.
    fn ltx_files_exact(&self, level: u8) -> Result<Vec<FileInfo>, ReplicaError> {
        self.ltx_files(level)
    }
    /// Opens several files for reading together (a restore chain). Network backends start every
    /// download at once and buffer ahead (bounded), instead of one round trip per file.
    fn open_ltx_many(&self, files: &[FileInfo]) -> Result<Vec<Box<dyn Read + Send>>, ReplicaError> {
        files
            .iter()
            .map(|f| self.open_ltx(f.level, f.min_txid, f.max_txid))
            .collect()
    }
    /// The replicas of a directory entry found below this replica's path: each one's path relative
    /// to it (`sub/x.db` for `<path>/sub/x.db/<level>/<file>.ltx`), sorted. Litestream's layout, so
    /// the replicas of either tool are found.
    fn databases_below(&self) -> Result<Vec<String>, ReplicaError> {
        Err(ReplicaError::Unsupported(format!(
            "listing the databases of a {} replica",
            self.kind()
        )))
    }
    /// Where a file lives, for error messages (a path or an object key; never credentials).
    fn locate(&self, level: u8, min: u64, max: u64) -> String {
        format!("level {level} {}", ltx::file_name(min, max))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// `cause` is said in the message itself (not as a `source`), so a chained report does not
    /// repeat it.
    #[error("{op} {path}: {cause}")]
    Io {
        op: &'static str,
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("replica file not found: {0}")]
    NotFound(String),
    #[error(transparent)]
    Url(#[from] UrlError),
    #[error("{0}")]
    Unsupported(String),
    /// Retrying cannot fix it: a missing bucket, refused or missing credentials, an unknown host.
    /// `message` is one line naming the bucket, the endpoint and the code, with a hint.
    #[error("{message}")]
    Permanent { code: &'static str, message: String },
}

impl ReplicaError {
    /// True when only a change of configuration, credentials or bucket can make it work.
    pub fn is_permanent(&self) -> bool {
        matches!(self, ReplicaError::Permanent { .. })
    }

    /// A short name of what went wrong, for metrics and status: the S3 code of a permanent error,
    /// else `timeout`, `connection`, `permission`, `not_found`, `local` or `other`.
    pub fn kind(&self) -> &'static str {
        match self {
            ReplicaError::Permanent { code, .. } => code,
            ReplicaError::NotFound(_) => "not_found",
            ReplicaError::Io { cause, path, .. } => match cause.kind() {
                std::io::ErrorKind::TimedOut => "timeout",
                std::io::ErrorKind::ConnectionRefused
                | std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::BrokenPipe => "connection",
                std::io::ErrorKind::PermissionDenied => "permission",
                _ if path.to_string_lossy().starts_with("s3://") => "other",
                _ => "local",
            },
            ReplicaError::Url(_) | ReplicaError::Unsupported(_) => "other",
        }
    }
}

/// The client for a configured replica (no I/O happens here).
pub fn client_for(replica: &crate::config::Replica) -> Arc<dyn ReplicaClient> {
    match replica {
        crate::config::Replica::File { path } => Arc::new(file::FileReplica::new(path)),
        crate::config::Replica::S3(opts) => Arc::new(s3::S3Replica::new(opts.clone())),
    }
}

/// Opens the replica named by a URL (`file:///x`, `s3://...`) or a plain path.
pub fn open_replica(url_or_path: &str) -> Result<Arc<dyn ReplicaClient>, ReplicaError> {
    match ReplicaUrl::parse(url_or_path)? {
        ReplicaUrl::File(path) => Ok(Arc::new(file::FileReplica::new(path))),
        ReplicaUrl::S3(mut opts) => {
            s3::endpoint_from_env(&mut opts);
            Ok(Arc::new(s3::S3Replica::new(opts)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_urls_open_an_s3_replica_without_io() {
        let r = open_replica("s3://bucket/db?endpoint=http://127.0.0.1:1").unwrap();
        assert_eq!(r.kind(), "s3");
        assert_eq!(
            r.locate(0, 1, 1),
            "s3://bucket/db/0000/0000000000000001-0000000000000001.ltx"
        );
    }
}
