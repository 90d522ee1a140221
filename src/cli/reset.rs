//! `litevisor reset [-config PATH] [-no-expand-env] [-dry-run] DB_PATH`: Litestream's `reset`.
//! Removes the database's local replication state (the LTX files in its meta directory), so the
//! next sync starts with a snapshot; the database file and the replica are left alone. Refused
//! while a litevisor replicates the database (`litevisor stop DB_PATH` first, then `start`).

use std::path::PathBuf;

use anyhow::Context;

use super::config_file::ConfigFile;
use crate::replication::db;
use crate::replication::meta::{Meta, MetaError};

#[derive(clap::Args, Debug)]
pub struct ResetArgs {
    #[command(flatten)]
    file: ConfigFile,
    /// Print the files that would be removed, remove nothing.
    #[arg(long = "dry-run")]
    dry_run: bool,
    #[arg(value_name = "DB_PATH")]
    db_path: PathBuf,
}

pub fn run(args: ResetArgs) -> anyhow::Result<i32> {
    let db = args.file.find(&args.db_path)?;
    let meta_dir = db
        .meta_path
        .clone()
        .unwrap_or_else(|| db::meta_dir(&db.path));
    let ltx_dir = meta_dir.join("ltx");
    let meta = Meta::new(meta_dir);
    let files = match meta.reset(&db.path, args.dry_run) {
        Err(e @ MetaError::Locked { .. }) => anyhow::bail!(
            "reset {}: {e}; stop its replication first (`litevisor stop {}`), reset, then `litevisor start` it",
            db.path.display(),
            db.path.display()
        ),
        result => result.with_context(|| format!("reset {}", db.path.display()))?,
    };
    if args.dry_run {
        println!(
            "Dry run: local replication state would be reset for: {}",
            db.path.display()
        );
        println!("Would remove: {}", ltx_dir.display());
        println!("Files that would be removed:");
        for f in &files {
            println!("  {}", f.display());
        }
        println!("No files were removed.");
        return Ok(0);
    }
    println!(
        "Resetting local replication state for: {}",
        db.path.display()
    );
    println!("Removed: {} ({} files)", ltx_dir.display(), files.len());
    println!("Reset complete. Next replication sync will create a fresh snapshot.");
    Ok(0)
}
