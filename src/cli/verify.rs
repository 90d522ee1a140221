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

use super::restore::find_database;
use crate::config::parse_duration;
use crate::replica;
use crate::replication::db;
use crate::replication::restore::{self, IntegrityCheck, RestoreError, RestoreOptions, Target};
use crate::replication::verify::{self, Live, LivePosition, Summary};
use crate::text::json_str;

pub const EXIT_NOT_COMPARABLE: i32 = 3;
pub const EXIT_FAILED: i32 = 4;

#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// Configuration file to find DB_PATH's replica in (a litestream.yml or a litevisor .toml).
    #[arg(long, value_name = "PATH")]
    config: Option<String>,
    /// Do not expand $VAR / ${VAR} in the configuration file.
    #[arg(long = "no-expand-env")]
    no_expand_env: bool,
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

/// What the comparison concluded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Ok,
    IntegrityFailed,
    Mismatch,
    NotComparable,
}

impl Verdict {
    fn code(self) -> i32 {
        match self {
            Verdict::Ok => 0,
            Verdict::NotComparable => EXIT_NOT_COMPARABLE,
            Verdict::IntegrityFailed | Verdict::Mismatch => EXIT_FAILED,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::IntegrityFailed => "integrity_failed",
            Verdict::Mismatch => "mismatch",
            Verdict::NotComparable => "not_comparable",
        }
    }
}

pub fn run(args: VerifyArgs) -> anyhow::Result<i32> {
    let db_path = &args.db_path;
    let (replica, shown, meta_path) = match args.replica_url.as_deref() {
        Some(_) if args.config.is_some() => {
            bail!("cannot specify a replica URL and the -config flag")
        }
        Some(url) => (
            replica::open_replica(url).with_context(|| format!("open replica {url}"))?,
            crate::config::replica_url::redact(url),
            None,
        ),
        None => {
            let db = find_database(
                args.config.as_deref(),
                !args.no_expand_env,
                &db_path.to_string_lossy(),
            )?;
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

    // T is fixed by the plan; the live database is read right after, so a running replicator has
    // the least time to move past T.
    let files = match restore::plan(replica.as_ref(), Target::Latest) {
        Err(RestoreError::TxNotAvailable) => bail!("replica {shown} holds no backup"),
        r => r.with_context(|| format!("read replica {shown}"))?,
    };
    let live = verify::live(db_path, &meta_dir, args.busy_timeout)
        .with_context(|| format!("read live database {}", db_path.display()))?;

    let tmp = TempDir::create().context("create a temp directory for the restored copy")?;
    let copy = tmp.0.join("replica.db");
    let report =
        restore::restore_files(replica.as_ref(), &files, &copy, &RestoreOptions::default())
            .with_context(|| format!("restore replica {shown}"))?;
    let integrity = match restore::integrity_check(&copy, IntegrityCheck::Full) {
        Ok(()) => "ok".to_string(),
        Err(RestoreError::Integrity { result, .. }) => result,
        Err(e) => return Err(e).context("integrity check of the restored copy"),
    };
    let restored =
        verify::file_summary(&copy, report.page_size).context("checksum of the restored copy")?;
    drop(tmp);

    let (verdict, message) = judge(report.txid, &restored, &integrity, &live);
    let out = Output {
        db: db_path,
        replica: &shown,
        replica_txid: report.txid,
        restored: &restored,
        integrity: &integrity,
        live: &live,
        verdict,
        message: &message,
    };
    if args.json {
        println!("{}", out.json());
    } else {
        print!("{}", out.text());
    }
    if verdict != Verdict::Ok {
        eprintln!("litevisor: verify {}: {message}", db_path.display());
    }
    Ok(verdict.code())
}

/// Decides the verdict and the one-line explanation.
fn judge(txid: u64, restored: &Summary, integrity: &str, live: &Live) -> (Verdict, String) {
    let at = |t: u64| format!("{t:016x}");
    if integrity != "ok" {
        return (
            Verdict::IntegrityFailed,
            format!(
                "the replica at TXID {} restores to a database that fails PRAGMA integrity_check: {integrity}",
                at(txid)
            ),
        );
    }
    if *restored == live.summary {
        return (
            Verdict::Ok,
            format!(
                "the replica at TXID {} restores to exactly the live database ({} pages)",
                at(txid),
                restored.pages
            ),
        );
    }
    let retry = "run `litevisor replicate -once` or wait for the next sync, then verify again";
    match live.position {
        LivePosition::At(t) if t == txid => (
            Verdict::Mismatch,
            format!(
                "MISMATCH: the replica at TXID {} restores to a different database than the live one \
                 at the same TXID (checksum {:016x} vs live {:016x}, {} vs {} pages)",
                at(txid),
                restored.checksum,
                live.summary.checksum,
                restored.pages,
                live.summary.pages
            ),
        ),
        LivePosition::At(t) => (
            Verdict::NotComparable,
            format!(
                "live DB is at TXID {}, replica at {}: {retry}",
                at(t),
                at(txid)
            ),
        ),
        LivePosition::NotAt { newest_l0 } => (
            Verdict::NotComparable,
            format!(
                "live DB has changed since TXID {} (its newest local sync), replica at {}: {retry}",
                at(newest_l0),
                at(txid)
            ),
        ),
        LivePosition::Unknown => (
            Verdict::NotComparable,
            format!(
                "live DB's TXID is unknown (no local replication state next to it), replica at {}: {retry}",
                at(txid)
            ),
        ),
    }
}

struct Output<'a> {
    db: &'a Path,
    replica: &'a str,
    replica_txid: u64,
    restored: &'a Summary,
    integrity: &'a str,
    live: &'a Live,
    verdict: Verdict,
    message: &'a str,
}

impl Output<'_> {
    fn live_txid(&self) -> Option<u64> {
        match self.live.position {
            LivePosition::At(t) => Some(t),
            _ => None,
        }
    }

    fn text(&self) -> String {
        let live_at = match self.live.position {
            LivePosition::At(t) => format!("TXID {t:016x}"),
            LivePosition::NotAt { newest_l0 } => format!("past TXID {newest_l0:016x}"),
            LivePosition::Unknown => "TXID unknown".to_string(),
        };
        format!(
            "database:   {}\nreplica:    {}\nrestored:   TXID {:016x}, {} pages of {} bytes, checksum {:016x}\n\
             integrity:  {}\nlive:       {live_at}, {} pages of {} bytes, checksum {:016x}\nresult:     {}: {}\n",
            self.db.display(),
            self.replica,
            self.replica_txid,
            self.restored.pages,
            self.restored.page_size,
            self.restored.checksum,
            self.integrity,
            self.live.summary.pages,
            self.live.summary.page_size,
            self.live.summary.checksum,
            self.verdict.name(),
            self.message
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
            hex(self.replica_txid),
            self.restored.pages,
            self.restored.page_size,
            hex(self.restored.checksum),
            json_str(self.integrity),
            self.live_txid().map_or("null".to_string(), hex),
            self.live.summary.pages,
            hex(self.live.summary.checksum),
            *self.restored == self.live.summary,
            self.verdict.name(),
            json_str(self.message)
        )
    }
}

/// A private (0700) directory for the restored copy, removed with everything in it on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn create() -> std::io::Result<TempDir> {
        use std::os::unix::fs::DirBuilderExt;
        let base = std::env::temp_dir();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        for attempt in 0..100u32 {
            let dir = base.join(format!(
                "litevisor-verify-{}-{nanos:x}-{attempt}",
                std::process::id()
            ));
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => return Ok(TempDir(dir)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(std::io::Error::other("no free temp directory name"))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(checksum: u64, pages: u32) -> Summary {
        Summary {
            page_size: 4096,
            pages,
            checksum,
        }
    }

    fn live(checksum: u64, position: LivePosition) -> Live {
        Live {
            summary: summary(checksum, 3),
            position,
        }
    }

    #[test]
    fn verdicts() {
        let r = summary(7, 3);
        let ok = judge(5, &r, "ok", &live(7, LivePosition::Unknown));
        assert_eq!(ok.0, Verdict::Ok);
        let bad = judge(
            5,
            &r,
            "*** in database main ***",
            &live(7, LivePosition::At(5)),
        );
        assert_eq!(bad.0, Verdict::IntegrityFailed);
        assert!(bad.1.contains("integrity_check"), "{}", bad.1);
        let mismatch = judge(5, &r, "ok", &live(8, LivePosition::At(5)));
        assert_eq!(mismatch.0, Verdict::Mismatch);
        assert!(mismatch.1.contains("MISMATCH"), "{}", mismatch.1);
        let ahead = judge(5, &r, "ok", &live(8, LivePosition::At(6)));
        assert_eq!(ahead.0, Verdict::NotComparable);
        assert!(
            ahead
                .1
                .contains("live DB is at TXID 0000000000000006, replica at 0000000000000005"),
            "{}",
            ahead.1
        );
        let moved = judge(5, &r, "ok", &live(8, LivePosition::NotAt { newest_l0: 5 }));
        assert_eq!(moved.0, Verdict::NotComparable);
        assert_eq!(
            judge(5, &r, "ok", &live(8, LivePosition::Unknown)).0,
            Verdict::NotComparable
        );
        assert_eq!(Verdict::Mismatch.code(), EXIT_FAILED);
        assert_eq!(Verdict::NotComparable.code(), EXIT_NOT_COMPARABLE);
    }
}
