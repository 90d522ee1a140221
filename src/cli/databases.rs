//! `litevisor databases [-config PATH] [-no-expand-env] [-json]`: Litestream's `databases` command.
//! Lists each configured database and its replica (as a URL, never with credentials), each database
//! a `dir:` entry finds included, from
//! `litestream.yml` or litevisor.toml's `[[databases]]` (see [`crate::config::configured`]).

use super::config_file::ConfigFile;
use crate::text::{json_str, tabulate};

#[derive(clap::Args, Debug)]
pub struct DatabasesArgs {
    #[command(flatten)]
    file: ConfigFile,
    /// Print a JSON array instead of the table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: DatabasesArgs) -> anyhow::Result<i32> {
    let crate::config::Configured {
        mut databases,
        directories,
        ..
    } = args.file.databases()?;
    // Each database a directory entry finds, as `replicate` would find it now.
    for entry in &directories {
        databases.extend(crate::supervisor::found_databases(entry));
    }
    if args.json {
        let items: Vec<String> = databases
            .iter()
            .map(|db| {
                format!(
                    "  {{\"path\": {}, \"replica\": {}}}",
                    json_str(&db.path.to_string_lossy()),
                    json_str(&db.replica.to_string())
                )
            })
            .collect();
        println!("[\n{}\n]", items.join(",\n"));
        return Ok(0);
    }
    let mut rows = vec![vec!["path".to_string(), "replica".to_string()]];
    for db in &databases {
        rows.push(vec![db.path.display().to_string(), db.replica.to_string()]);
    }
    print!("{}", tabulate(&rows));
    Ok(0)
}
