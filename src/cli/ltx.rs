//! `litevisor ltx [-level 0-9|all] [-json] REPLICA_URL`: lists a replica's LTX files in Litestream's
//! format (`level min_txid max_txid size created`, tab-aligned; or the same JSON array).

use anyhow::{Context, bail};

use std::time::SystemTime;

use super::config_file::ConfigFile;
use crate::config::parse_duration;
use crate::replica::{FileInfo, rfc3339};
use crate::replication::compact::{self, Retention};
use crate::replication::ltx::{PageEncoding, SNAPSHOT_LEVEL};
use crate::text::tabulate;

#[derive(clap::Args, Debug)]
pub struct LtxArgs {
    /// Compaction level to list (0-9 or "all").
    #[arg(long, default_value = "0", value_name = "LEVEL")]
    level: String,
    /// Output raw JSON instead of human-readable text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    file: ConfigFile,
    /// Maintenance (not in Litestream): compact level SRC into DST first, e.g. `-compact 0:1`.
    #[arg(long, value_name = "SRC:DST", hide = true)]
    compact: Vec<String>,
    /// Maintenance: write an L9 snapshot from the replica's chain first.
    #[arg(long, hide = true)]
    snapshot: bool,
    /// Maintenance: enforce retention first (with -snapshot-retention and -l0-retention).
    #[arg(long, hide = true)]
    enforce_retention: bool,
    #[arg(long, value_name = "DURATION", default_value = "24h", hide = true)]
    snapshot_retention: String,
    #[arg(long, value_name = "DURATION", default_value = "5m", hide = true)]
    l0_retention: String,
    /// Page encoding of files written by maintenance: frame (any Litestream 0.5) or block (>= 0.5.16).
    #[arg(long, value_name = "ENCODING", default_value = "frame", hide = true)]
    encoding: String,
    /// A replica URL (file:///path, s3://bucket/path) or a database path from the config.
    #[arg(value_name = "DB_PATH|REPLICA_URL")]
    target: String,
}

pub fn run(args: LtxArgs) -> anyhow::Result<i32> {
    let levels: Vec<u8> = match args.level.as_str() {
        "all" => (0..=SNAPSHOT_LEVEL).collect(),
        l => match l.parse::<u8>() {
            Ok(n) if n <= SNAPSHOT_LEVEL => vec![n],
            _ => bail!("invalid -level {l:?}: must be 0-9 or \"all\""),
        },
    };
    let client = args.file.replica_for(&args.target)?;
    maintain(&args, client.as_ref())?;
    let mut files: Vec<FileInfo> = Vec::new();
    for level in levels {
        files.extend(
            client
                .ltx_files(level)
                .with_context(|| format!("list level {level}"))?,
        );
    }
    print!(
        "{}",
        if args.json {
            to_json(&files)
        } else {
            to_table(&files)
        }
    );
    Ok(0)
}

/// Runs the hidden maintenance steps (compaction, snapshot, retention) in that order, reporting each
/// on stderr, so operators and tests can drive what `replicate` schedules.
fn maintain(args: &LtxArgs, client: &dyn crate::replica::ReplicaClient) -> anyhow::Result<()> {
    let encoding: PageEncoding = args
        .encoding
        .parse()
        .map_err(|err| anyhow::anyhow!("-encoding: {err}"))?;
    for spec in &args.compact {
        let parsed = spec
            .split_once(':')
            .and_then(|(a, b)| Some((a.parse::<u8>().ok()?, b.parse::<u8>().ok()?)));
        let Some((src, dst)) = parsed.filter(|(s, d)| s < d && *d < SNAPSHOT_LEVEL) else {
            bail!("invalid -compact {spec:?}: want SRC:DST levels with SRC < DST < 9");
        };
        match compact::compact_level(client, src, dst, encoding)
            .with_context(|| format!("compact L{src} into L{dst}"))?
        {
            Some(f) => eprintln!("compacted L{src} into {}", f.describe()),
            None => eprintln!("nothing to compact from L{src} into L{dst}"),
        }
    }
    if args.snapshot {
        match compact::snapshot_level(client, encoding).context("snapshot")? {
            Some(f) => eprintln!("wrote snapshot {}", f.describe()),
            None => eprintln!("snapshot is up to date"),
        }
    }
    if args.enforce_retention {
        let retention = Retention {
            snapshot_retention: parse_duration(&args.snapshot_retention)
                .map_err(anyhow::Error::msg)
                .context("-snapshot-retention")?,
            l0_retention: parse_duration(&args.l0_retention)
                .map_err(anyhow::Error::msg)
                .context("-l0-retention")?,
        };
        let report = compact::enforce_retention(client, &retention, SystemTime::now())
            .context("retention")?;
        for f in &report.deleted {
            eprintln!("deleted {}", f.describe());
        }
    }
    Ok(())
}

fn to_table(files: &[FileInfo]) -> String {
    let mut rows = vec![
        ["level", "min_txid", "max_txid", "size", "created"]
            .map(String::from)
            .to_vec(),
    ];
    for f in files {
        rows.push(vec![
            f.level.to_string(),
            format!("{:016x}", f.min_txid),
            format!("{:016x}", f.max_txid),
            f.size.to_string(),
            rfc3339::format_utc(f.created_at),
        ]);
    }
    tabulate(&rows)
}

fn to_json(files: &[FileInfo]) -> String {
    if files.is_empty() {
        return "[]\n".to_string();
    }
    let items: Vec<String> = files
        .iter()
        .map(|f| {
            format!(
                "  {{\n    \"level\": {},\n    \"min_txid\": \"{:016x}\",\n    \"max_txid\": \"{:016x}\",\n    \"size\": {},\n    \"timestamp\": \"{}\"\n  }}",
                f.level,
                f.min_txid,
                f.max_txid,
                f.size,
                rfc3339::format_utc(f.created_at)
            )
        })
        .collect();
    format!("[\n{}\n]\n", items.join(",\n"))
}
