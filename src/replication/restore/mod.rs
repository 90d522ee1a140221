//! Restore: choosing the replica files that rebuild a database at a target (Litestream's
//! `CalcRestorePlan`, rule for rule), here; materializing them into a SQLite file, in
//! [`materialize`] (streamed through one merger into `<out>.tmp`, verified, then renamed).

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::replica::file::{create_dir_all_durable, fsync_dir};
use crate::replica::{FileInfo, ReplicaClient, ReplicaError};
use crate::replication::ltx::{self, Decoder, LtxError, Merger, SNAPSHOT_LEVEL};

mod materialize;

pub use materialize::{integrity_check, restore_files};
pub(crate) use materialize::{named_error, open_merger};

/// What to restore to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Latest,
    /// Inclusive. `Txid(0)` means latest, as in Litestream.
    Txid(u64),
    /// Files created strictly before this time.
    Timestamp(SystemTime),
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IntegrityCheck {
    #[default]
    None,
    /// `PRAGMA quick_check`
    Quick,
    /// `PRAGMA integrity_check`
    Full,
}

#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    pub integrity_check: IntegrityCheck,
    /// Draw a progress line on stderr (only when it is a terminal).
    pub progress: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreReport {
    /// TXID the database was restored to.
    pub txid: u64,
    pub page_size: u32,
    /// Database size in pages.
    pub pages: u32,
    pub files: Vec<FileInfo>,
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// Litestream's `ErrTxNotAvailable`.
    #[error("no matching backup files available")]
    TxNotAvailable,
    #[error("non-contiguous ltx files: have up to {have:016x} but next file starts at {next:016x}")]
    NonContiguous { have: u64, next: u64 },
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    #[error("replica file {file}: {source}")]
    File {
        file: String,
        #[source]
        source: LtxError,
    },
    #[error(
        "cannot restore: the restore chain starts at TXID {min:016x} ({file}) but must start at TXID 1 \
         (a snapshot); the replica is missing its first transaction"
    )]
    MissingFirstTxid { min: u64, file: String },
    #[error("{0}")]
    Chain(String),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("post-restore integrity check of {path} failed: {result}")]
    Integrity { path: PathBuf, result: String },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> RestoreError + 'a {
    move |source| RestoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Whether any level of the replica holds a file. Compaction and retention may have emptied L0 before
/// any snapshot exists, so every level is looked at (stopping at the first non-empty one).
pub fn has_data(replica: &dyn ReplicaClient) -> Result<bool, ReplicaError> {
    for level in 0..=SNAPSHOT_LEVEL {
        if !replica.ltx_files(level)?.is_empty() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Litestream's `CalcRestorePlan` over the replica's listings.
pub fn plan(replica: &dyn ReplicaClient, target: Target) -> Result<Vec<FileInfo>, RestoreError> {
    let mut levels: Vec<Vec<FileInfo>> = Vec::with_capacity(SNAPSHOT_LEVEL as usize + 1);
    for level in 0..=SNAPSHOT_LEVEL {
        // Point-in-time plans need the LTX header times, which some backends only give on request.
        levels.push(match target {
            Target::Timestamp(_) => replica.ltx_files_exact(level)?,
            _ => replica.ltx_files(level)?,
        });
    }
    plan_from(&levels, target)
}

/// The planning algorithm on listings indexed by level (`levels[9]` = snapshots), each sorted by
/// (min, max): the newest eligible snapshot, then greedily the file from any level that extends the
/// contiguous range furthest (larger max, then smaller min, then higher level, then older).
pub fn plan_from(levels: &[Vec<FileInfo>], target: Target) -> Result<Vec<FileInfo>, RestoreError> {
    let (txid, before) = match target {
        Target::Latest | Target::Txid(0) => (0, None),
        Target::Txid(t) => (t, None),
        Target::Timestamp(ts) => (0, Some(ts)),
    };
    let eligible = |f: &FileInfo| {
        (txid == 0 || f.max_txid <= txid) && before.is_none_or(|ts| f.created_at < ts)
    };
    let empty = Vec::new();
    let level = |l: u8| levels.get(l as usize).unwrap_or(&empty);

    let mut plan: Vec<FileInfo> = Vec::new();
    if let Some(snapshot) = level(SNAPSHOT_LEVEL).iter().rfind(|f| eligible(f)) {
        plan.push(snapshot.clone());
    }
    let mut current_max = plan.last().map_or(0, |f| f.max_txid);
    if txid != 0 && current_max >= txid {
        return Ok(plan);
    }

    struct Cursor<'a> {
        files: &'a [FileInfo],
        pos: usize,
        candidate: Option<&'a FileInfo>,
    }
    let mut cursors: Vec<Cursor> = (0..SNAPSHOT_LEVEL)
        .rev()
        .map(|l| Cursor {
            files: level(l),
            pos: 0,
            candidate: None,
        })
        .collect();

    loop {
        for c in cursors.iter_mut() {
            // Consume every file that could continue the range; remember the best eligible one.
            if c.candidate.is_some_and(|f| f.max_txid <= current_max) {
                c.candidate = None;
            }
            while let Some(info) = c.files.get(c.pos) {
                if info.min_txid > current_max.saturating_add(1) {
                    break;
                }
                c.pos += 1;
                if info.max_txid <= current_max || !eligible(info) {
                    continue;
                }
                if c.candidate.is_none_or(|cur| better(cur, info)) {
                    c.candidate = Some(info);
                }
            }
        }
        let candidates: Vec<Option<&FileInfo>> = cursors.iter().map(|c| c.candidate).collect();
        let Some(best) = best_candidate(&candidates) else {
            break;
        };
        let Some(chosen) = cursors[best].candidate.take().cloned() else {
            break;
        };
        current_max = chosen.max_txid;
        plan.push(chosen);
        if txid != 0 && current_max >= txid {
            break;
        }
    }

    if !plan.is_empty() && txid == 0 && before.is_none() {
        for c in &cursors {
            if let Some(f) = c.files.get(c.pos)
                && f.min_txid > current_max.saturating_add(1)
            {
                return Err(RestoreError::NonContiguous {
                    have: current_max,
                    next: f.min_txid,
                });
            }
        }
    }
    if plan.is_empty() || (txid != 0 && current_max < txid) {
        return Err(RestoreError::TxNotAvailable);
    }
    Ok(plan)
}

/// Index of the best candidate (first wins ties, as cursors are ordered L8..L0).
fn best_candidate(cands: &[Option<&FileInfo>]) -> Option<usize> {
    let mut best: Option<(usize, &FileInfo)> = None;
    for (i, c) in cands.iter().enumerate() {
        let Some(c) = c else { continue };
        if best.is_none_or(|(_, b)| better(b, c)) {
            best = Some((i, c));
        }
    }
    best.map(|(i, _)| i)
}

/// Litestream's `restoreCandidateBetter(curr, next)`.
fn better(curr: &FileInfo, next: &FileInfo) -> bool {
    if next.max_txid != curr.max_txid {
        return next.max_txid > curr.max_txid;
    }
    if next.min_txid != curr.min_txid {
        return next.min_txid < curr.min_txid;
    }
    if next.level != curr.level {
        return next.level > curr.level;
    }
    next.created_at < curr.created_at
}

/// Oldest and newest `created_at` across every level, or None for an empty replica.
pub fn time_bounds(
    replica: &dyn ReplicaClient,
) -> Result<Option<(SystemTime, SystemTime)>, RestoreError> {
    let mut bounds: Option<(SystemTime, SystemTime)> = None;
    for level in (0..=SNAPSHOT_LEVEL).rev() {
        for f in replica.ltx_files(level)? {
            bounds = Some(match bounds {
                None => (f.created_at, f.created_at),
                Some((lo, hi)) => (lo.min(f.created_at), hi.max(f.created_at)),
            });
        }
    }
    Ok(bounds)
}

/// Plans and materializes a restore of `target` into `out`.
pub fn restore(
    replica: &dyn ReplicaClient,
    target: Target,
    out: &Path,
    opts: &RestoreOptions,
) -> Result<RestoreReport, RestoreError> {
    let files = plan(replica, target)?;
    restore_files(replica, &files, out, opts)
}

/// The time an LTX header timestamp stands for.
pub fn timestamp_to_time(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms as u64)
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_with_files_only_in_a_middle_level_has_data() {
        let dir = tempfile::tempdir().unwrap();
        let replica = crate::replica::file::FileReplica::new(dir.path());
        assert!(!has_data(&replica).unwrap(), "an empty replica");
        // L0 trimmed by retention and no snapshot yet: only L2 holds the history.
        let l2 = replica.level_dir(2);
        fs::create_dir_all(&l2).unwrap();
        fs::write(l2.join(crate::replication::ltx::file_name(1, 9)), b"x").unwrap();
        assert!(has_data(&replica).unwrap());
    }

    fn f(level: u8, min: u64, max: u64, created_s: u64) -> FileInfo {
        FileInfo {
            level,
            min_txid: min,
            max_txid: max,
            size: 1000,
            created_at: UNIX_EPOCH + Duration::from_secs(created_s),
        }
    }

    fn levels(files: &[FileInfo]) -> Vec<Vec<FileInfo>> {
        let mut lv = vec![Vec::new(); 10];
        for file in files {
            lv[file.level as usize].push(file.clone());
        }
        for l in &mut lv {
            l.sort_by_key(|f| (f.min_txid, f.max_txid));
        }
        lv
    }

    fn ranges(plan: &[FileInfo]) -> Vec<(u8, u64, u64)> {
        plan.iter()
            .map(|f| (f.level, f.min_txid, f.max_txid))
            .collect()
    }

    /// The plan for `target` as (level, min TXID, max TXID) triples.
    fn planned(lv: &[Vec<FileInfo>], target: Target) -> Vec<(u8, u64, u64)> {
        ranges(&plan_from(lv, target).unwrap())
    }

    #[track_caller]
    fn assert_not_available(lv: &[Vec<FileInfo>], target: Target) {
        let plan = plan_from(lv, target);
        assert!(
            matches!(plan, Err(RestoreError::TxNotAvailable)),
            "{target:?}: {plan:?}"
        );
    }

    fn at(s: u64) -> Target {
        Target::Timestamp(UNIX_EPOCH + Duration::from_secs(s))
    }

    #[test]
    fn l0_only_chain() {
        let lv = levels(&[f(0, 1, 1, 10), f(0, 2, 2, 20), f(0, 3, 3, 30)]);
        assert_eq!(
            planned(&lv, Target::Latest),
            [(0, 1, 1), (0, 2, 2), (0, 3, 3)]
        );
        assert_eq!(planned(&lv, Target::Txid(2)), [(0, 1, 1), (0, 2, 2)]);
        assert_not_available(&lv, Target::Txid(4));
        assert_not_available(&levels(&[]), Target::Latest);
    }

    #[test]
    fn prefers_snapshot_then_widest_files() {
        let lv = levels(&[
            f(9, 1, 5, 50),
            f(9, 1, 8, 80),
            f(2, 1, 4, 40),
            f(2, 5, 10, 100),
            f(1, 1, 2, 20),
            f(1, 3, 4, 40),
            f(1, 5, 6, 60),
            f(1, 7, 10, 100),
            f(1, 11, 12, 120),
            f(0, 11, 11, 110),
            f(0, 12, 12, 120),
            f(0, 13, 13, 130),
        ]);
        // Newest snapshot, then L2 5-10 (largest max reaching past 8), then L1 11-12, then L0 13.
        assert_eq!(
            planned(&lv, Target::Latest),
            [(9, 1, 8), (2, 5, 10), (1, 11, 12), (0, 13, 13)]
        );
        // -txid is inclusive and files ending past it are skipped: L1 5-6 after snapshot 1-5.
        assert_eq!(planned(&lv, Target::Txid(6)), [(9, 1, 5), (1, 5, 6)]);
        assert_eq!(planned(&lv, Target::Txid(8)), [(9, 1, 8)]);
        // A target inside a compacted range with no finer files fails.
        assert_not_available(&lv, Target::Txid(9));
        assert_eq!(
            planned(&lv, Target::Txid(11)),
            [(9, 1, 8), (2, 5, 10), (0, 11, 11)]
        );
    }

    #[test]
    fn timestamp_is_strictly_before() {
        let lv = levels(&[
            f(9, 1, 2, 20),
            f(0, 1, 1, 10),
            f(0, 2, 2, 20),
            f(0, 3, 3, 30),
        ]);
        assert_eq!(planned(&lv, at(30)), [(9, 1, 2)]);
        assert_eq!(planned(&lv, at(31)), [(9, 1, 2), (0, 3, 3)]);
        assert_eq!(planned(&lv, at(20)), [(0, 1, 1)]);
        assert_not_available(&lv, at(10));
    }

    #[test]
    fn ties_prefer_higher_level_then_older() {
        let lv = levels(&[f(0, 1, 3, 30), f(1, 1, 3, 31), f(3, 1, 3, 32)]);
        assert_eq!(planned(&lv, Target::Latest), [(3, 1, 3)]);
        let mut lv = levels(&[f(1, 1, 3, 31)]);
        lv[1].push(f(1, 1, 3, 5)); // same range listed twice (impossible on disk, but ordering must hold)
        assert_eq!(
            plan_from(&lv, Target::Latest).unwrap()[0].created_at,
            UNIX_EPOCH + Duration::from_secs(5)
        );
    }

    #[test]
    fn overlaps_are_followed_gaps_are_fatal_for_latest() {
        // Overlapping files: 1-4 then 3-6 extends the range.
        let lv = levels(&[f(1, 1, 4, 1), f(0, 3, 6, 2), f(0, 7, 7, 3)]);
        assert_eq!(
            planned(&lv, Target::Latest),
            [(1, 1, 4), (0, 3, 6), (0, 7, 7)]
        );
        // A gap after 2: latest fails as non-contiguous, txid 2 still works.
        let lv = levels(&[f(0, 1, 1, 1), f(0, 2, 2, 2), f(0, 4, 4, 4)]);
        assert!(matches!(
            plan_from(&lv, Target::Latest),
            Err(RestoreError::NonContiguous { have: 2, next: 4 })
        ));
        assert_eq!(planned(&lv, Target::Txid(2)), [(0, 1, 1), (0, 2, 2)]);
        assert_not_available(&lv, Target::Txid(4));
        // Missing TXID 1 and no snapshot: nothing can start the chain.
        let lv = levels(&[f(0, 2, 2, 2), f(0, 3, 3, 3)]);
        assert_not_available(&lv, Target::Latest);
    }

    #[test]
    fn snapshot_covering_target_needs_nothing_else() {
        let lv = levels(&[f(9, 1, 10, 100), f(0, 1, 1, 1), f(0, 11, 11, 110)]);
        assert_eq!(planned(&lv, Target::Txid(10)), [(9, 1, 10)]);
        assert_eq!(planned(&lv, Target::Txid(0)), [(9, 1, 10), (0, 11, 11)]);
        // Old L0 files before the snapshot don't count as a gap.
        assert_eq!(planned(&lv, Target::Latest), [(9, 1, 10), (0, 11, 11)]);
    }
}
