//! Replica maintenance, by Litestream's rules: compacting one level into the next, writing a full
//! snapshot (L9) from the replica's own chain, and retention that never leaves a gap.
//!
//! Everything here works through `ReplicaClient` only (no database lock is held): merged pages stream
//! from the source files through an `ltx::Encoder` into a bounded pipe that `write_ltx` drains, so a
//! compaction needs one page buffer per input, never a whole file in memory. A failed encode fails
//! the upload, so a partial file is never committed.

use std::io::Read;
use std::time::{Duration, SystemTime};

use crate::replica::pipe::{self, PipeWriter};
use crate::replica::{FileInfo, ReplicaClient, ReplicaError};
use crate::replication::ltx::{Encoder, LtxError, Merger, PageEncoding, SNAPSHOT_LEVEL};
use crate::replication::restore::{self, RestoreError, Target};

#[derive(Debug, thiserror::Error)]
pub enum CompactError {
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    #[error(transparent)]
    Restore(#[from] RestoreError),
    #[error("cannot {what}: {source}")]
    Encode {
        what: String,
        #[source]
        source: LtxError,
    },
    #[error("cannot build a snapshot: the replica chain starts at TXID {0:016x}, not 1")]
    NoBase(u64),
}

/// Retention periods (Litestream: `snapshot.retention` 24h, `l0-retention` 5m; zero L0 retention
/// disables L0 deletes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    pub snapshot_retention: Duration,
    pub l0_retention: Duration,
}

impl Default for Retention {
    fn default() -> Retention {
        Retention {
            snapshot_retention: Duration::from_secs(24 * 3600),
            l0_retention: Duration::from_secs(300),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionReport {
    pub deleted: Vec<FileInfo>,
}

/// Compacts `src_level` files with `min_txid` above the newest `dst_level` file into one dst file
/// named `<min of inputs>-<max of inputs>`. Returns None when there is nothing new.
pub fn compact_level(
    replica: &dyn ReplicaClient,
    src_level: u8,
    dst_level: u8,
    encoding: PageEncoding,
) -> Result<Option<FileInfo>, CompactError> {
    let seek = replica
        .ltx_files(dst_level)?
        .iter()
        .map(|f| f.max_txid)
        .max()
        .unwrap_or(0)
        + 1;
    let inputs: Vec<FileInfo> = replica
        .ltx_files(src_level)?
        .into_iter()
        .filter(|f| f.min_txid >= seek)
        .collect();
    if inputs.is_empty() {
        return Ok(None);
    }
    let min = inputs.iter().map(|f| f.min_txid).min().unwrap_or(seek);
    let max = inputs.iter().map(|f| f.max_txid).max().unwrap_or(seek);
    merge_into(replica, &inputs, dst_level, min, max, encoding, None).map(Some)
}

/// Writes L9 `0000000000000001-<max>` by merging the replica's latest restore chain, unless the
/// newest snapshot already covers the replica's newest TXID. Returns None when skipped.
pub fn snapshot_level(
    replica: &dyn ReplicaClient,
    encoding: PageEncoding,
) -> Result<Option<FileInfo>, CompactError> {
    write_snapshot(replica, encoding, false)
}

/// `replicate -once -force-snapshot`: the L9 snapshot of the replica's newest TXID, written even
/// when one covers it already (Litestream rewrites it too). None only for an empty replica.
pub fn force_snapshot(
    replica: &dyn ReplicaClient,
    encoding: PageEncoding,
) -> Result<Option<FileInfo>, CompactError> {
    write_snapshot(replica, encoding, true)
}

fn write_snapshot(
    replica: &dyn ReplicaClient,
    encoding: PageEncoding,
    force: bool,
) -> Result<Option<FileInfo>, CompactError> {
    let chain = match restore::plan(replica, Target::Latest) {
        Ok(chain) => chain,
        Err(RestoreError::TxNotAvailable) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let Some(last) = chain.last() else {
        return Ok(None);
    };
    let newest_snapshot = replica
        .ltx_files(SNAPSHOT_LEVEL)?
        .iter()
        .map(|f| f.max_txid)
        .max()
        .unwrap_or(0);
    if newest_snapshot >= last.max_txid && !force {
        return Ok(None);
    }
    let first = chain[0].min_txid;
    if first != 1 {
        return Err(CompactError::NoBase(first));
    }
    // Like Litestream's, a snapshot is dated when it is taken (its retention counts from then); a
    // compaction keeps its inputs' date so point-in-time restores still find them.
    let now = SystemTime::now();
    merge_into(
        replica,
        &chain,
        SNAPSHOT_LEVEL,
        1,
        last.max_txid,
        encoding,
        Some(now),
    )
    .map(Some)
}

/// Streams the merge of `inputs` (a contiguous chain, oldest first) into `dst_level` as `min-max`,
/// dated `dated` (header timestamp and creation time), else as the merged header says.
fn merge_into(
    replica: &dyn ReplicaClient,
    inputs: &[FileInfo],
    dst_level: u8,
    min: u64,
    max: u64,
    encoding: PageEncoding,
    dated: Option<SystemTime>,
) -> Result<FileInfo, CompactError> {
    let what = format!(
        "write level {dst_level} {}",
        crate::replication::ltx::file_name(min, max)
    );
    // Only used when there are more inputs than may be open at once (see `restore::open_merger`).
    let scratch = std::env::temp_dir().join(format!(
        "litevisor-merge-{}-L{dst_level}-{}",
        std::process::id(),
        crate::replication::ltx::file_name(min, max)
    ));
    let (merger, names, _intermediate) = restore::open_merger(replica, inputs, &scratch)?;
    let mut header = merger.header();
    if let Some(t) = dated {
        let ms = t
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        header.timestamp_ms = i64::try_from(ms).unwrap_or(i64::MAX);
    }
    let created_at = restore::timestamp_to_time(header.timestamp_ms);
    let (writer, mut reader) = pipe::pipe();

    std::thread::scope(|s| {
        let encoder = s.spawn(move || encode(merger, &header, writer, encoding));
        let written = replica.write_ltx(dst_level, min, max, created_at, &mut reader);
        drop(reader);
        let encoded = encoder
            .join()
            .unwrap_or_else(|_| Err(LtxError::Failed("encoder thread panicked".into())));
        match (encoded, written) {
            (Err(source), _) => Err(match source {
                e @ LtxError::Input { .. } => {
                    CompactError::Restore(restore::named_error(&names, e))
                }
                source => CompactError::Encode {
                    what: what.clone(),
                    source,
                },
            }),
            // The inputs' checksums were verified before the stream completed, so `info` is sound.
            (Ok(()), Ok(info)) => Ok(info),
            (Ok(_), Err(e)) => Err(e.into()),
        }
    })
}

/// Encodes the merged pages into `writer`, verifying every input (checksums) before completing the
/// stream: any error drops the writer unfinished, which fails the reader and so the upload.
fn encode<R: Read>(
    mut merger: Merger<R>,
    header: &crate::replication::ltx::Header,
    writer: PipeWriter,
    encoding: PageEncoding,
) -> Result<(), LtxError> {
    let mut enc = Encoder::new(writer, header, encoding)?;
    let mut page = vec![0u8; header.page_size as usize];
    while let Some(pgno) = merger.next_page(&mut page)? {
        enc.encode_page(pgno, &page)?;
    }
    merger.finish()?;
    let (writer, _trailer) = enc.finish()?;
    writer.finish()?;
    Ok(())
}

/// Snapshot retention, then L1..L8 below the snapshot floor, then L0 retention (see the module doc of
/// the two steps). Never deletes the newest file of a level.
pub fn enforce_retention(
    replica: &dyn ReplicaClient,
    r: &Retention,
    now: SystemTime,
) -> Result<RetentionReport, CompactError> {
    let mut report = snapshot_and_level_retention(replica, r.snapshot_retention, now)?;
    enforce_l0_retention(replica, r.l0_retention, now, &mut report)?;
    Ok(report)
}

/// Snapshot retention, then L1..L8 below the snapshot floor; L0 is left alone. This is what
/// `replicate -once -enforce-retention` does, as Litestream's does.
pub fn snapshot_and_level_retention(
    replica: &dyn ReplicaClient,
    snapshot_retention: Duration,
    now: SystemTime,
) -> Result<RetentionReport, CompactError> {
    let mut report = RetentionReport::default();
    let floor = enforce_snapshot_retention(replica, snapshot_retention, now, &mut report)?;
    for level in 1..SNAPSHOT_LEVEL {
        let files = replica.ltx_files(level)?;
        let Some(last) = files.last().cloned() else {
            continue;
        };
        let doomed: Vec<FileInfo> = files
            .into_iter()
            .filter(|f| f.max_txid < floor && *f != last)
            .collect();
        delete(replica, doomed, &mut report)?;
    }
    Ok(report)
}

/// Deletes snapshots created before `now - retention`, always keeping the newest. Returns the floor
/// for lower levels: the max TXID of the newest deleted snapshot (0 when none was deleted), the
/// conservative choice Litestream makes so an in-flight restore plan keeps its files.
pub fn enforce_snapshot_retention(
    replica: &dyn ReplicaClient,
    retention: Duration,
    now: SystemTime,
    report: &mut RetentionReport,
) -> Result<u64, CompactError> {
    let threshold = now.checked_sub(retention).unwrap_or(SystemTime::UNIX_EPOCH);
    let snapshots = replica.ltx_files(SNAPSHOT_LEVEL)?;
    let mut doomed: Vec<FileInfo> = snapshots
        .iter()
        .filter(|f| f.created_at < threshold)
        .cloned()
        .collect();
    if doomed.last().is_some_and(|d| Some(d) == snapshots.last()) {
        doomed.pop();
    }
    let floor = snapshots
        .iter()
        .position(|s| !doomed.contains(s))
        .and_then(|i| i.checked_sub(1))
        .map_or(0, |i| snapshots[i].max_txid);
    delete(replica, doomed, report)?;
    Ok(floor)
}

/// Deletes L0 files already compacted into L1 (`max_txid <= max L1 TXID`) and older than `retention`,
/// oldest first, stopping at the first too-recent file; keeps the newest L0 file.
pub fn enforce_l0_retention(
    replica: &dyn ReplicaClient,
    retention: Duration,
    now: SystemTime,
    report: &mut RetentionReport,
) -> Result<(), CompactError> {
    if retention.is_zero() {
        return Ok(());
    }
    let max_l1 = replica
        .ltx_files(1)?
        .iter()
        .map(|f| f.max_txid)
        .max()
        .unwrap_or(0);
    if max_l1 == 0 {
        return Ok(());
    }
    let threshold = now.checked_sub(retention).unwrap_or(SystemTime::UNIX_EPOCH);
    let files = replica.ltx_files(0)?;
    let mut doomed = Vec::new();
    let mut processed_all = true;
    for f in &files {
        if f.created_at > threshold {
            processed_all = false;
            break;
        }
        if f.max_txid <= max_l1 {
            doomed.push(f.clone());
        }
    }
    if processed_all && doomed.last().is_some_and(|d| Some(d) == files.last()) {
        doomed.pop();
    }
    delete(replica, doomed, report)
}

fn delete(
    replica: &dyn ReplicaClient,
    files: Vec<FileInfo>,
    report: &mut RetentionReport,
) -> Result<(), CompactError> {
    if files.is_empty() {
        return Ok(());
    }
    replica.delete_ltx(&files)?;
    report.deleted.extend(files);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replica::file::FileReplica;
    use std::time::UNIX_EPOCH;

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(s)
    }

    /// Retention never reads file contents, so placeholders are enough here.
    fn put(r: &FileReplica, level: u8, min: u64, max: u64, created_s: u64) {
        r.write_ltx(level, min, max, at(created_s), &mut &b"x"[..])
            .unwrap();
    }

    fn ranges(r: &FileReplica, level: u8) -> Vec<(u64, u64)> {
        r.ltx_files(level)
            .unwrap()
            .iter()
            .map(|f| (f.min_txid, f.max_txid))
            .collect()
    }

    #[test]
    fn snapshot_retention_keeps_newest_and_floors_lower_levels() {
        let dir = tempfile::tempdir().unwrap();
        let r = FileReplica::new(dir.path());
        put(&r, 9, 1, 10, 100);
        put(&r, 9, 1, 20, 200);
        put(&r, 9, 1, 30, 300);
        for (min, max, t) in [(1, 9, 90), (10, 19, 190), (20, 29, 290), (30, 35, 350)] {
            put(&r, 1, min, max, t);
        }
        put(&r, 2, 1, 15, 150);
        // Snapshots older than 250s are 1-10 and 1-20; floor = 20 (newest deleted).
        let report = enforce_retention(
            &r,
            &Retention {
                snapshot_retention: Duration::from_secs(100),
                l0_retention: Duration::ZERO,
            },
            at(350),
        )
        .unwrap();
        assert_eq!(ranges(&r, 9), [(1, 30)]);
        assert_eq!(ranges(&r, 1), [(20, 29), (30, 35)], "max < 20 deleted");
        assert_eq!(ranges(&r, 2), [(1, 15)], "the last file of a level is kept");
        assert_eq!(report.deleted.len(), 4);

        // Everything old: the newest snapshot still stays.
        enforce_retention(
            &r,
            &Retention {
                snapshot_retention: Duration::from_secs(1),
                l0_retention: Duration::ZERO,
            },
            at(10_000),
        )
        .unwrap();
        assert_eq!(ranges(&r, 9), [(1, 30)]);
    }

    #[test]
    fn l0_retention_needs_l1_and_age_and_stops_at_recent() {
        let dir = tempfile::tempdir().unwrap();
        let r = FileReplica::new(dir.path());
        for t in 1..=6 {
            put(&r, 0, t, t, [10, 20, 30, 95, 40, 50][t as usize - 1]);
        }
        let ret = Retention {
            snapshot_retention: Duration::from_secs(3600),
            l0_retention: Duration::from_secs(10),
        };
        // No L1 yet: nothing is compacted, nothing goes.
        enforce_retention(&r, &ret, at(100)).unwrap();
        assert_eq!(ranges(&r, 0).len(), 6);
        put(&r, 1, 1, 5, 40);
        // Threshold 90: 1..3 go; 4 (created 95) is too recent and stops the scan, so 5 stays too.
        enforce_retention(&r, &ret, at(100)).unwrap();
        assert_eq!(ranges(&r, 0), [(4, 4), (5, 5), (6, 6)]);
        // Later: 4, 5 compacted and old; 6 not in L1 yet.
        enforce_retention(&r, &ret, at(1000)).unwrap();
        assert_eq!(ranges(&r, 0), [(6, 6)]);
        // Once 6 is compacted it is still kept: the newest L0 file is the replica's position.
        put(&r, 1, 6, 6, 50);
        enforce_retention(&r, &ret, at(1000)).unwrap();
        assert_eq!(ranges(&r, 0), [(6, 6)]);
        // Zero L0 retention disables L0 deletes.
        put(&r, 0, 7, 7, 60);
        put(&r, 1, 7, 7, 60);
        enforce_retention(
            &r,
            &Retention {
                l0_retention: Duration::ZERO,
                ..ret
            },
            at(5000),
        )
        .unwrap();
        assert_eq!(ranges(&r, 0), [(6, 6), (7, 7)]);
    }

    #[test]
    fn compaction_of_many_inputs_matches_a_direct_restore() {
        use crate::replication::ltx::{HEADER_FLAG_NO_CHECKSUM, Header};
        use crate::replication::restore::{RestoreOptions, restore};
        let dir = tempfile::tempdir().unwrap();
        let r = FileReplica::new(dir.path().join("replica"));
        let ps = 512u32;
        for t in 1..=7u64 {
            let commit = t as u32 + 1;
            let header = Header {
                flags: HEADER_FLAG_NO_CHECKSUM,
                page_size: ps,
                commit,
                min_txid: t,
                max_txid: t,
                timestamp_ms: 1_000 * t as i64,
                ..Header::default()
            };
            let mut enc = Encoder::new(Vec::new(), &header, PageEncoding::Block).unwrap();
            let pages: Vec<u32> = if t == 1 { vec![1, 2] } else { vec![1, commit] };
            for p in pages {
                enc.encode_page(p, &vec![(t * 10 + u64::from(p)) as u8; ps as usize])
                    .unwrap();
            }
            let (bytes, _) = enc.finish().unwrap();
            r.write_ltx(0, t, t, at(t), &mut bytes.as_slice()).unwrap();
        }
        let direct = dir.path().join("direct.db");
        restore(&r, Target::Latest, &direct, &RestoreOptions::default()).unwrap();

        // More inputs than may be merged at once (3 under test): batched through a scratch file.
        let l1 = compact_level(&r, 0, 1, PageEncoding::Frame)
            .unwrap()
            .unwrap();
        assert_eq!(
            (l1.level, l1.min_txid, l1.max_txid, l1.created_at),
            (1, 1, 7, at(7))
        );
        assert!(
            compact_level(&r, 0, 1, PageEncoding::Frame)
                .unwrap()
                .is_none()
        );
        let l9 = snapshot_level(&r, PageEncoding::Frame).unwrap().unwrap();
        assert_eq!((l9.level, l9.min_txid, l9.max_txid), (9, 1, 7));
        assert!(snapshot_level(&r, PageEncoding::Frame).unwrap().is_none());
        for level in [0u8, 1] {
            let files = r.ltx_files(level).unwrap();
            r.delete_ltx(&files).unwrap();
        }
        let via_snapshot = dir.path().join("snap.db");
        let report = restore(
            &r,
            Target::Latest,
            &via_snapshot,
            &RestoreOptions::default(),
        )
        .unwrap();
        assert_eq!(report.files.len(), 1);
        assert_eq!(
            std::fs::read(&via_snapshot).unwrap(),
            std::fs::read(&direct).unwrap()
        );
    }
}
