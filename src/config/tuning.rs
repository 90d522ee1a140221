//! The replication knobs' defaults (Litestream 0.5's documented ones) and the small value types the
//! configuration shares with the engine. They live here, at the bottom, so that both the validated
//! model ([`super::Database`]) and the engine's own settings (`replication::engine::DbConfig`) start
//! from the same values without the model importing the engine.

use std::str::FromStr;
use std::time::Duration;

/// Litestream's `monitor-interval`: the least time between two syncs.
pub const DEFAULT_MIN_SYNC_INTERVAL: Duration = Duration::from_secs(1);
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(60);
pub const DEFAULT_MIN_CHECKPOINT_PAGE_COUNT: u32 = 1000;
pub const DEFAULT_TRUNCATE_PAGE_N: u32 = 121_359;
/// Litestream's `busy-timeout`.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(1);
/// Litestream's `max-sync-wal-bytes`.
pub const DEFAULT_MAX_SYNC_WAL_BYTES: u64 = 64 * 1024 * 1024;
/// Compaction intervals of L1..L3.
pub const DEFAULT_LEVELS: [Duration; 3] = [
    Duration::from_secs(30),
    Duration::from_secs(300),
    Duration::from_secs(3600),
];
pub const DEFAULT_SNAPSHOT_INTERVAL: Duration = Duration::from_secs(24 * 3600);
pub const DEFAULT_SNAPSHOT_RETENTION: Duration = Duration::from_secs(24 * 3600);
pub const DEFAULT_L0_RETENTION: Duration = Duration::from_secs(300);
/// Litestream's `-follow-interval` (`restore -f`), also `follow_interval` of a followed database.
pub const DEFAULT_FOLLOW_INTERVAL: Duration = Duration::from_secs(1);

/// How page data is stored after each 6-byte page header of a written LTX file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PageEncoding {
    /// flags=0, then one LZ4 frame (64 KiB blocks, content checksum). Every Litestream 0.5.x reads it.
    #[default]
    Frame,
    /// flags=1, then a u32 size and one raw LZ4 block. Only Litestream >= 0.5.16 reads it.
    Block,
}

impl FromStr for PageEncoding {
    type Err = String;

    fn from_str(text: &str) -> Result<PageEncoding, String> {
        match text {
            "frame" => Ok(PageEncoding::Frame),
            "block" => Ok(PageEncoding::Block),
            _ => Err(format!("unknown page encoding {text:?} (frame or block)")),
        }
    }
}
