//! `litevisor check [--config PATH]`: loads and validates the configuration exactly as `run` would,
//! starts nothing, and prints either every problem (exit 1) or the services in start order (exit 0).

use std::path::PathBuf;

use crate::config;

#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// Configuration file (default: $LITEVISOR_CONFIG, else /etc/litevisor/litevisor.toml).
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
}

pub fn run(args: CheckArgs) -> anyhow::Result<i32> {
    let config = match config::load(args.config.as_deref()) {
        Ok(config) => config,
        Err(err) => {
            for problem in &err.problems {
                eprintln!("{problem}");
            }
            let n = err.problems.len();
            eprintln!(
                "litevisor: configuration invalid: {n} problem{}",
                if n == 1 { "" } else { "s" }
            );
            return Ok(1);
        }
    };
    for warning in &config.warnings {
        eprintln!("warning: {warning}");
    }
    let width = config
        .services
        .iter()
        .map(|s| s.name.len())
        .max()
        .unwrap_or(0);
    for service in &config.services {
        let deps = if service.depends_on.is_empty() {
            "-".to_string()
        } else {
            service.depends_on.join(",")
        };
        let main = if service.main { "  main" } else { "" };
        println!(
            "{:<width$}  {:<7}  depends_on={deps}{main}",
            service.name,
            service.kind.to_string()
        );
    }
    for db in &config.databases {
        println!("database {} -> {}", db.path.display(), db.replica);
    }
    Ok(0)
}
