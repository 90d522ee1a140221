//! `litevisor verify [-config PATH] [-json] DB_PATH [REPLICA_URL]`: proves that a replica restores
//! to exactly the live database. It restores the replica's latest state (TXID T) into a private temp
//! directory (the restore checks every LTX file checksum), runs `PRAGMA integrity_check` on that
//! copy, and compares the copy's LTX database checksum with the live database's at T (see
//! `replication::verify` for how the live database's TXID is proven and why only "the live database
//! is at T now" can be compared).
//!
//! Without REPLICA_URL the database's replica (and meta path) come from the configuration, found the
//! way `litevisor restore DB_PATH` finds it (`-config`, `$LITEVISOR_CONFIG`, `$LITESTREAM_CONFIG`,
//! `/etc/litestream.yml`).
//!
//! Nothing is written to the live database, its WAL or meta directory, or the replica: the live
//! database is read through a read-only connection inside one read transaction.
//!
//! Exit codes (distinct so monitoring can tell them apart):
//! - 0: integrity ok and the replica equals the live database;
//! - 1: could not verify (replica unreachable or empty, unreadable database, ...);
//! - 2: usage error;
//! - 3: not comparable now: the live database is not at the replica's TXID (commits not uploaded
//!   yet, or no local replication state); retry after the next sync or `litevisor replicate -once`;
//! - 4: verification FAILED: the restored copy fails the integrity check, or it differs from the live
//!   database at the same TXID.
//!
//! Temp space: the whole database is restored under `$TMPDIR` (default `/tmp`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};

use super::config_file::ConfigFile;
use crate::config::parse_duration;
use crate::replica;
use crate::replication::db;
use crate::replication::verify::{self, LivePosition, Verdict, Verification};
use crate::text::json_str;

pub const EXIT_NOT_COMPARABLE: i32 = 3;
pub const EXIT_FAILED: i32 = 4;

#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    #[command(flatten)]
    file: ConfigFile,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    /// How long to wait for a lock held by a writer before reading the live database.
    #[arg(long = "busy-timeout", default_value = "5s", value_parser = parse_duration)]
    busy_timeout: Duration,
    /// The database's local replication state (Litestream's `meta-path`); default
    /// `.<db>-litestream` next to the database.
    #[arg(long = "meta-path", value_name = "DIR")]
    meta_path: Option<PathBuf>,
    /// The live database.
    #[arg(value_name = "DB_PATH")]
    db_path: PathBuf,
    /// Its replica: `file:///path`, a plain path, or `s3://bucket/path` (default: from the config).
    #[arg(value_name = "REPLICA_URL")]
    replica_url: Option<String>,
}

/// The exit code of a verdict (see the module doc).
fn exit_code(verdict: Verdict) -> i32 {
    match verdict {
        Verdict::Ok => 0,
        Verdict::NotComparable => EXIT_NOT_COMPARABLE,
        Verdict::IntegrityFailed | Verdict::Mismatch => EXIT_FAILED,
    }
}

pub fn run(args: VerifyArgs) -> anyhow::Result<i32> {
    let db_path = &args.db_path;
    let (replica, shown, meta_path) = match args.replica_url.as_deref() {
        Some(_) if args.file.config.is_some() => {
            bail!("cannot specify a replica URL and the -config flag")
        }
        Some(url) => (
            replica::open_replica(url).with_context(|| format!("open replica {url}"))?,
            crate::config::replica_url::redact(url),
            None,
        ),
        None => {
            let db = args.file.find(db_path)?;
            (
                crate::replica::client_for(&db.replica),
                db.replica.to_string(),
                db.meta_path,
            )
        }
    };
    if !db_path.is_file() {
        bail!("database {} does not exist", db_path.display());
    }
    let meta_dir = args
        .meta_path
        .clone()
        .or(meta_path)
        .unwrap_or_else(|| db::meta_dir(db_path));

    let found = verify::verify_replica(replica.as_ref(), db_path, &meta_dir, args.busy_timeout)
        .with_context(|| format!("verify {} against {shown}", db_path.display()))?;
    let out = Output {
        db: db_path,
        replica: &shown,
        found: &found,
    };
    if args.json {
        println!("{}", out.json());
    } else {
        print!("{}", out.text());
    }
    if found.verdict != Verdict::Ok {
        eprintln!("litevisor: verify {}: {}", db_path.display(), found.message);
    }
    Ok(exit_code(found.verdict))
}

struct Output<'a> {
    db: &'a Path,
    replica: &'a str,
    found: &'a Verification,
}

impl Output<'_> {
    fn live_txid(&self) -> Option<u64> {
        match self.found.live.position {
            LivePosition::At(t) => Some(t),
            _ => None,
        }
    }

    fn text(&self) -> String {
        let live_at = match self.found.live.position {
            LivePosition::At(t) => format!("TXID {t:016x}"),
            LivePosition::NotAt { newest_l0 } => format!("past TXID {newest_l0:016x}"),
            LivePosition::Unknown => "TXID unknown".to_string(),
        };
        format!(
            "database:   {}\nreplica:    {}\nrestored:   TXID {:016x}, {} pages of {} bytes, checksum {:016x}\n\
             integrity:  {}\nlive:       {live_at}, {} pages of {} bytes, checksum {:016x}\nresult:     {}: {}\n",
            self.db.display(),
            self.replica,
            self.found.replica_txid,
            self.found.restored.pages,
            self.found.restored.page_size,
            self.found.restored.checksum,
            self.found.integrity,
            self.found.live.summary.pages,
            self.found.live.summary.page_size,
            self.found.live.summary.checksum,
            self.found.verdict.name(),
            self.found.message
        )
    }

    fn json(&self) -> String {
        let hex = |v: u64| format!("\"{v:016x}\"");
        format!(
            "{{\"db\":{},\"replica\":{},\"replica_txid\":{},\"pages\":{},\"page_size\":{},\
             \"replica_checksum\":{},\"integrity\":{},\"live_txid\":{},\"live_pages\":{},\
             \"live_checksum\":{},\"match\":{},\"result\":\"{}\",\"message\":{}}}",
            json_str(&self.db.to_string_lossy()),
            json_str(self.replica),
            hex(self.found.replica_txid),
            self.found.restored.pages,
            self.found.restored.page_size,
            hex(self.found.restored.checksum),
            json_str(&self.found.integrity),
            self.live_txid().map_or("null".to_string(), hex),
            self.found.live.summary.pages,
            hex(self.found.live.summary.checksum),
            self.found.restored == self.found.live.summary,
            self.found.verdict.name(),
            json_str(&self.found.message)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        assert_eq!(exit_code(Verdict::Ok), 0);
        assert_eq!(exit_code(Verdict::Mismatch), EXIT_FAILED);
        assert_eq!(exit_code(Verdict::IntegrityFailed), EXIT_FAILED);
        assert_eq!(exit_code(Verdict::NotComparable), EXIT_NOT_COMPARABLE);
    }
}
