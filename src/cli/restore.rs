//! `litevisor restore [flags] DB_PATH|REPLICA_URL`: Litestream's restore command, same flags, messages
//! and exit codes. A DB path is looked up in the configuration (`litestream.yml`, or litevisor.toml's
//! `[[databases]]`, a database under a `dir:` entry included) to find its replica
//! ([`crate::config::Configured::find`]).
//!
//! `litevisor restore -config FILE` without a DB path restores every database of the file: each
//! `path:` entry and every database the replica holds below each `dir:` entry's replica path (which
//! Litestream cannot: it answers "database not found in config"), [`PARALLEL_RESTORES`] at a time,
//! each written complete or not at all.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};

use super::config_file::ConfigFile;
use crate::replica::{self, FileInfo, ReplicaClient, rfc3339};
use crate::replication::follow;
use crate::replication::ltx;
use crate::replication::restore::{self, IntegrityCheck, RestoreError, RestoreOptions, Target};
use crate::text::{json_str, tabulate};

#[derive(clap::Args, Debug)]
pub struct RestoreArgs {
    /// Output path of the restored database (required with a replica URL).
    #[arg(short = 'o', value_name = "PATH")]
    output: Option<PathBuf>,
    /// Restore up to this hex-encoded transaction ID (inclusive).
    #[arg(long, value_name = "TXID")]
    txid: Option<String>,
    /// Restore to a point in time (RFC 3339): files created strictly before it.
    #[arg(long, value_name = "TIMESTAMP")]
    timestamp: Option<String>,
    /// Exit 0 (doing nothing) if the output database already exists.
    #[arg(long)]
    if_db_not_exists: bool,
    /// Exit 0 if the replica holds no matching backup.
    #[arg(long)]
    if_replica_exists: bool,
    /// Print the restore plan and exit without writing a database.
    #[arg(long)]
    dry_run: bool,
    /// Overwrite an existing output database and its -wal/-shm/-journal files.
    #[arg(long)]
    force: bool,
    /// Print a JSON summary (or the plan, with -dry-run).
    #[arg(long)]
    json: bool,
    /// Follow mode (Litestream's `-f`): after the restore, keep applying new files until SIGTERM.
    /// Note: `-f` is NOT "force"; use -force.
    #[arg(short = 'f')]
    follow: bool,
    /// Polling interval for follow mode (default 1s).
    #[arg(long, value_name = "DURATION")]
    follow_interval: Option<String>,
    /// Accepted for compatibility; the restore reads the chain in one streaming pass.
    #[arg(long, value_name = "NUM")]
    parallelism: Option<u32>,
    /// Post-restore integrity check: none, quick or full.
    #[arg(long, value_name = "MODE", default_value = "none")]
    integrity_check: String,
    #[command(flatten)]
    file: ConfigFile,
    /// Without it (and with -config): every database of the configuration.
    #[arg(value_name = "DB_PATH|REPLICA_URL")]
    source: Option<String>,
}

impl RestoreArgs {
    /// Follow mode waits for the stop signals itself, so they stay blocked.
    pub fn follows(&self) -> bool {
        self.follow
    }
}

/// Restores of a whole configuration running at once.
const PARALLEL_RESTORES: usize = 8;

/// A fully resolved restore request: what the CLI (or the config track, for `DB_PATH` restores and
/// `restore-if-db-not-exists`) hands to [`run_restore`].
#[derive(Clone, Debug)]
pub struct RestoreRequest {
    /// Shown in the dry-run plan: the URL or DB path the user named.
    pub source: String,
    pub output: PathBuf,
    pub target: Target,
    pub if_db_not_exists: bool,
    pub if_replica_exists: bool,
    pub force: bool,
    pub dry_run: bool,
    pub json: bool,
    pub integrity_check: IntegrityCheck,
    /// Litestream checks `-timestamp` against the replica's time range only for URL restores.
    pub check_time_bounds: bool,
}

impl RestoreRequest {
    /// The request to restore `source` into `output` as the command line's flags say (the time
    /// range not checked).
    fn from_args(
        args: &RestoreArgs,
        source: String,
        output: PathBuf,
        target: Target,
        integrity_check: IntegrityCheck,
    ) -> RestoreRequest {
        RestoreRequest {
            source,
            output,
            target,
            if_db_not_exists: args.if_db_not_exists,
            if_replica_exists: args.if_replica_exists,
            force: args.force,
            dry_run: args.dry_run,
            json: args.json,
            integrity_check,
            check_time_bounds: false,
        }
    }
}

pub fn run(args: RestoreArgs) -> anyhow::Result<i32> {
    let follow_interval = match &args.follow_interval {
        None => follow::DEFAULT_INTERVAL,
        Some(text) => {
            let d = crate::config::parse_duration(text)
                .map_err(|e| anyhow::anyhow!("-follow-interval: {e}"))?;
            if d.is_zero() {
                bail!("-follow-interval must be greater than 0");
            }
            d
        }
    };
    if args.follow {
        if args.txid.is_some() || args.timestamp.is_some() {
            bail!("cannot use follow mode with -txid or -timestamp");
        }
        if args.dry_run {
            bail!("cannot use follow mode with -dry-run");
        }
        if args.source.is_none() {
            bail!("follow mode (-f) follows one database: give DB_PATH or REPLICA_URL");
        }
    }
    let _ = args.parallelism;
    let integrity_check = match args.integrity_check.as_str() {
        "none" => IntegrityCheck::None,
        "quick" => IntegrityCheck::Quick,
        "full" => IntegrityCheck::Full,
        other => bail!("invalid -integrity-check value: {other}"),
    };
    let target = match (&args.txid, &args.timestamp) {
        (Some(_), Some(_)) => bail!("cannot specify both -txid and -timestamp"),
        (Some(t), None) => Target::Txid(parse_txid(t)?),
        (None, Some(ts)) => Target::Timestamp(rfc3339::parse(ts).with_context(|| {
            format!("invalid -timestamp {ts:?}, must specify in ISO 8601 format (e.g. 2000-01-01T00:00:00Z)")
        })?),
        (None, None) => Target::Latest,
    };
    // Litestream's `restore DB_PATH`: the replica comes from the configuration, the output
    // defaults to the database's own path, and `-timestamp` is not checked against the replica's
    // time range first (as in Litestream). A replica URL needs `-o`.
    let Some(source) = args.source.clone() else {
        if args.file.config.is_none() {
            bail!("give DB_PATH or REPLICA_URL (or -config FILE to restore every database of it)");
        }
        if args.output.is_some() {
            bail!("-o names one output: give the DB_PATH to restore too");
        }
        return restore_all(&args, target, integrity_check);
    };
    let (output, db) = if crate::config::is_url(&source) {
        if args.file.config.is_some() {
            bail!("cannot specify a replica URL and the -config flag");
        }
        let Some(output) = args.output.clone() else {
            bail!(
                "-o is required when restoring from a replica URL (litevisor restore -o /path/to/db {source})"
            );
        };
        (output, None)
    } else {
        let db = args.file.find(Path::new(&source))?;
        (
            args.output.clone().unwrap_or_else(|| db.path.clone()),
            Some(db),
        )
    };
    let request = RestoreRequest {
        check_time_bounds: db.is_none(),
        ..RestoreRequest::from_args(&args, source.clone(), output, target, integrity_check)
    };
    // Checked before the replica URL is opened, so a skipped restore never fails on the replica.
    if request.if_db_not_exists && exists(&request.output) {
        eprintln!(
            "database already exists, skipping: {}",
            request.output.display()
        );
        return Ok(0);
    }
    let replica = match &db {
        Some(db) => crate::replica::client_for(&db.replica),
        None => replica::open_replica(&source)?,
    };
    if args.follow {
        return run_follow(replica.as_ref(), &request, follow_interval);
    }
    run_restore(replica.as_ref(), &request)
}

/// `restore -f`: restore, then apply new files every interval until SIGTERM/SIGINT/SIGQUIT (kept
/// blocked since process start, see `cli::main`), exit 0.
fn run_follow(
    replica: &dyn ReplicaClient,
    req: &RestoreRequest,
    interval: std::time::Duration,
) -> anyhow::Result<i32> {
    prepare_output_path(&req.output, req.force)?;
    let opts = follow::FollowOptions {
        interval,
        integrity_check: req.integrity_check,
    };
    let out = req.output.display().to_string();
    let result = follow::follow(
        replica,
        &req.output,
        &opts,
        &mut follow::wait_for_stop_signal,
        &mut |event| match event {
            follow::FollowEvent::Restored { txid } => {
                eprintln!("restored {out} to TXID {txid:016x}, following")
            }
            follow::FollowEvent::Applied { .. } | follow::FollowEvent::UpToDate { .. } => {}
            follow::FollowEvent::Retrying { txid, error } => {
                eprintln!("{out}: at TXID {txid:016x}, retrying next interval: {error}")
            }
            follow::FollowEvent::Resynced { from, to, reason } => {
                eprintln!(
                    "{out}: {reason}: applied the whole replica (TXID {from:016x} -> {to:016x})"
                )
            }
        },
    );
    match result {
        Err(RestoreError::TxNotAvailable) if req.if_replica_exists => {
            eprintln!("no matching backups found");
            Ok(0)
        }
        other => {
            other.with_context(|| format!("follow {out}"))?;
            Ok(0)
        }
    }
}

/// `restore -config FILE` alone: every database of the file, in parallel; exit 1 if any failed.
fn restore_all(
    args: &RestoreArgs,
    target: Target,
    integrity_check: IntegrityCheck,
) -> anyhow::Result<i32> {
    let crate::config::Configured {
        file,
        mut databases,
        directories,
        ..
    } = args.file.databases()?;
    for entry in &directories {
        let base = crate::replica::client_for(&entry.template.replica);
        let rels = base
            .databases_below()
            .with_context(|| format!("list the replica {}", entry.template.replica))?;
        databases.extend(
            rels.iter()
                .filter_map(|rel| entry.database(&entry.dir.join(rel)))
                .filter(|db| {
                    db.path
                        .file_name()
                        .is_some_and(|n| entry.matches(&n.to_string_lossy()))
                }),
        );
    }
    if databases.is_empty() {
        eprintln!("no databases to restore in {}", file.display());
        return Ok(if args.if_replica_exists { 0 } else { 1 });
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failed = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..PARALLEL_RESTORES.min(databases.len()) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(db) = databases.get(i) else { break };
                    let request = RestoreRequest::from_args(
                        args,
                        db.path.display().to_string(),
                        db.path.clone(),
                        target,
                        integrity_check,
                    );
                    let replica = crate::replica::client_for(&db.replica);
                    if let Some(parent) = db.path.parent() {
                        let _ = std::fs::create_dir_all(parent);
                    }
                    match run_restore(replica.as_ref(), &request) {
                        Ok(0) => {}
                        Ok(_) => {
                            failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Err(e) => {
                            eprintln!("litevisor: error: {}: {e:#}", db.path.display());
                            failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                }
            });
        }
    });
    let failed = failed.into_inner();
    if failed > 0 {
        eprintln!(
            "{failed} of {} database(s) were not restored",
            databases.len()
        );
        return Ok(1);
    }
    Ok(0)
}

/// Litestream's TXID flag: hex, inclusive. Fewer than 16 digits are accepted too.
fn parse_txid(s: &str) -> anyhow::Result<u64> {
    if s.is_empty() || s.len() > 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!(
            "invalid -txid {s:?}: must be a hex transaction ID of up to 16 digits (e.g. 000000000000002a)"
        );
    }
    Ok(u64::from_str_radix(s, 16)?)
}

fn exists(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

/// Runs a resolved restore against an opened replica; returns the exit code.
pub fn run_restore(replica: &dyn ReplicaClient, req: &RestoreRequest) -> anyhow::Result<i32> {
    if req.if_db_not_exists && exists(&req.output) {
        eprintln!(
            "database already exists, skipping: {}",
            req.output.display()
        );
        return Ok(0);
    }
    if let (Target::Timestamp(ts), true) = (req.target, req.check_time_bounds) {
        match restore::time_bounds(replica)? {
            None => bail!("no backups found"),
            Some((lo, hi)) if ts < lo || ts > hi => bail!("timestamp does not exist"),
            Some(_) => {}
        }
    }
    if req.dry_run {
        let files = match restore::plan(replica, req.target) {
            Err(RestoreError::TxNotAvailable) => bail!("no matching backup files available"),
            other => other.context("cannot calc restore plan")?,
        };
        print!("{}", dry_run_text(req, replica, &files));
        return Ok(0);
    }
    prepare_output_path(&req.output, req.force)?;

    let started = Instant::now();
    let opts = RestoreOptions {
        integrity_check: req.integrity_check,
        progress: true,
    };
    let files = match restore::plan(replica, req.target) {
        Err(RestoreError::TxNotAvailable) if req.if_replica_exists => {
            eprintln!("no matching backups found");
            return Ok(0);
        }
        Err(RestoreError::TxNotAvailable) => {
            bail!(
                "no matching backup files available{}",
                why_unavailable(replica)
            )
        }
        other => other.context("cannot calc restore plan")?,
    };
    let report = restore::restore_files(replica, &files, &req.output, &opts)
        .with_context(|| format!("restore {}", req.output.display()))?;
    if req.json {
        println!(
            "{{\n  \"db_path\": {},\n  \"replica\": \"{}\",\n  \"txid\": \"{:016x}\",\n  \"duration_ms\": {},\n  \"integrity_check\": \"{}\"\n}}",
            json_str(&req.output.to_string_lossy()),
            replica.kind(),
            report.txid,
            started.elapsed().as_millis(),
            match req.integrity_check {
                IntegrityCheck::None => "none",
                IntegrityCheck::Quick => "quick",
                IntegrityCheck::Full => "full",
            }
        );
    } else {
        // The check ran and passed (a failure is an error above): say so, it is why it was asked.
        let checked = match req.integrity_check {
            IntegrityCheck::None => "",
            IntegrityCheck::Quick => "; quick_check ok",
            IntegrityCheck::Full => "; integrity_check ok",
        };
        eprintln!(
            "restored {} to txid {:016x} ({} pages of {} bytes, {} files{checked})",
            req.output.display(),
            report.txid,
            report.pages,
            report.page_size,
            report.files.len()
        );
    }
    Ok(0)
}

/// Litestream says only "no matching backup files available"; when the cause is that the chain cannot
/// start (TXID 1 is gone), say so after that same prefix.
fn why_unavailable(replica: &dyn ReplicaClient) -> String {
    let mut earliest: Option<FileInfo> = None;
    for level in 0..=crate::replication::ltx::SNAPSHOT_LEVEL {
        let Ok(files) = replica.ltx_files(level) else {
            return String::new();
        };
        if files.iter().any(|f| f.min_txid == 1) {
            return String::new();
        }
        if let Some(f) = files.first()
            && earliest.as_ref().is_none_or(|e| f.min_txid < e.min_txid)
        {
            earliest = Some(f.clone());
        }
    }
    match earliest {
        None => String::new(),
        Some(f) => format!(
            " (the replica has no file starting at TXID 1, its initial snapshot; the earliest is {})",
            replica.locate(f.level, f.min_txid, f.max_txid)
        ),
    }
}

/// Litestream's `prepareOutputPath` checks: a non-empty output or any SQLite sidecar is an error
/// unless `force`.
fn prepare_output_path(path: &Path, force: bool) -> anyhow::Result<()> {
    let meta = match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(e).with_context(|| format!("cannot access output path {}", path.display()));
        }
        Ok(m) => m,
    };
    if meta.is_dir() {
        bail!(
            "cannot restore, output path is a directory: {}",
            path.display()
        );
    }
    if meta.len() > 0 && !force {
        bail!(
            "cannot restore, output path already exists and is not empty: {}. Use -force to overwrite",
            path.display()
        );
    }
    let sidecars: Vec<PathBuf> = ["-wal", "-shm", "-journal"]
        .iter()
        .map(|s| {
            let mut p = path.as_os_str().to_owned();
            p.push(s);
            PathBuf::from(p)
        })
        .collect();
    for s in &sidecars {
        if exists(s) && !force {
            bail!(
                "cannot restore, SQLite sidecar path already exists: {}. Use -force to overwrite",
                s.display()
            );
        }
    }
    // Unlike Litestream, nothing is deleted yet: the restore replaces the database (and removes the
    // sidecars) only once the new file is complete, so a failed restore leaves the old one intact.
    Ok(())
}

fn dry_run_text(req: &RestoreRequest, replica: &dyn ReplicaClient, files: &[FileInfo]) -> String {
    let (min, max) = (
        files.first().map_or(0, |f| f.min_txid),
        files.last().map_or(0, |f| f.max_txid),
    );
    let name = |f: &FileInfo| ltx::file_name(f.min_txid, f.max_txid);
    if req.json {
        let items: Vec<String> = files
            .iter()
            .map(|f| {
                format!(
                    "    {{\n      \"level\": {},\n      \"name\": \"{}\",\n      \"min_txid\": \"{:016x}\",\n      \"max_txid\": \"{:016x}\",\n      \"size\": {},\n      \"timestamp\": \"{}\"\n    }}",
                    f.level,
                    name(f),
                    f.min_txid,
                    f.max_txid,
                    f.size,
                    rfc3339::format_utc(f.created_at)
                )
            })
            .collect();
        return format!(
            "{{\n  \"source\": {},\n  \"target_path\": {},\n  \"replica\": \"{}\",\n  \"min_txid\": \"{min:016x}\",\n  \"max_txid\": \"{max:016x}\",\n  \"files\": [\n{}\n  ]\n}}\n",
            json_str(&crate::config::replica_url::redact(&req.source)),
            json_str(&req.output.to_string_lossy()),
            replica.kind(),
            items.join(",\n")
        );
    }
    let mut rows = vec![
        ["level", "file", "min_txid", "max_txid", "size", "timestamp"]
            .map(String::from)
            .to_vec(),
    ];
    for f in files {
        rows.push(vec![
            f.level.to_string(),
            name(f),
            format!("{:016x}", f.min_txid),
            format!("{:016x}", f.max_txid),
            f.size.to_string(),
            rfc3339::format_utc(f.created_at),
        ]);
    }
    format!(
        "Restore plan:\n  source: {}\n  target: {}\n  replica: {}\n  txid range: {min:016x} - {max:016x}\n\nFiles to fetch:\n{}",
        crate::config::replica_url::redact(&req.source),
        req.output.display(),
        replica.kind(),
        tabulate(&rows)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txid_flag() {
        assert_eq!(parse_txid("000000000000002a").unwrap(), 42);
        assert_eq!(parse_txid("2A").unwrap(), 42);
        assert!(parse_txid("").is_err());
        assert!(parse_txid("0x2a").is_err());
        assert!(parse_txid("00000000000000002a").is_err());
    }
}
