//! litevisor's compaction, snapshot and retention on replicas written by real Litestream 0.5.17:
//! real `litestream restore` restores the result (frame and block page encodings) and `litestream ltx`
//! lists it; compacted files are named `<min>-<max>` and carry the last input's timestamp; and no
//! sequence of compaction + retention ever makes a gap: the latest restore always works, and every TXID
//! either restores byte-identically to Litestream's own restore of the untouched replica or is
//! reported as no longer available.

mod support;

mod restore_support;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

use restore_support::*;

fn fixture() -> &'static Fixture {
    static FX: OnceLock<Fixture> = OnceLock::new();
    FX.get_or_init(|| {
        build(
            4096,
            &[
                Burst::Insert { n: 20, size: 3000 },
                Burst::Insert { n: 3, size: 100 },
                Burst::DeleteMost,
                Burst::Vacuum,
                Burst::Insert { n: 10, size: 2000 },
                Burst::Insert { n: 1, size: 10 },
            ],
        )
    })
}

fn url(p: &Path) -> String {
    format!("file://{}", p.display())
}

fn ok(o: std::process::Output) -> String {
    assert!(o.status.success(), "{}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Litestream's own restores of the untouched fixture replica, by TXID.
fn expected() -> &'static BTreeMap<u64, Vec<u8>> {
    static EXP: OnceLock<BTreeMap<u64, Vec<u8>>> = OnceLock::new();
    EXP.get_or_init(|| {
        let fx = fixture();
        let dir = fx.dir.path().join("expected");
        fs::create_dir_all(&dir).unwrap();
        (1..=fx.max_txid())
            .map(|t| {
                let out = dir.join(format!("{t}.db"));
                ok(litestream(&[
                    "restore",
                    "-txid",
                    &format!("{t:016x}"),
                    "-o",
                    out.to_str().unwrap(),
                    &fx.url(),
                ]));
                (t, fs::read(&out).unwrap())
            })
            .collect()
    })
}

/// A copy of the fixture replica with only Litestream's L0 files (its L1/L2/L9 removed).
fn l0_only(dir: &Path) -> PathBuf {
    let replica = dir.join("replica");
    copy_dir(&fixture().replica, &replica);
    for level in 1..=9 {
        let _ = fs::remove_dir_all(replica.join("ltx").join(level.to_string()));
    }
    replica
}

fn mtime_ms(p: &Path) -> u128 {
    fs::metadata(p)
        .unwrap()
        .modified()
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

#[test]
fn litestream_restores_litevisor_compactions_and_snapshots() {
    let fx = fixture();
    let max = fx.max_txid();
    for encoding in ["frame", "block"] {
        let dir = tempfile::tempdir().unwrap();
        let replica = l0_only(dir.path());
        let l0: Vec<PathBuf> = level_files(&replica, 0);
        // Compact in two steps: first everything but the last two L0 files.
        let hidden = dir.path().join("hidden");
        fs::create_dir(&hidden).unwrap();
        for f in &l0[l0.len() - 2..] {
            fs::rename(f, hidden.join(f.file_name().unwrap())).unwrap();
        }
        let u = url(&replica);
        ok(litevisor(&[
            "ltx",
            "-encoding",
            encoding,
            "-compact",
            "0:1",
            &u,
        ]));
        for f in &l0[l0.len() - 2..] {
            fs::rename(hidden.join(f.file_name().unwrap()), f).unwrap();
        }
        let o = litevisor(&[
            "ltx",
            "-encoding",
            encoding,
            "-compact",
            "0:1",
            "-compact",
            "1:2",
            "-snapshot",
            &u,
        ]);
        ok(o);
        let again = litevisor(&["ltx", "-compact", "0:1", "-compact", "1:2", "-snapshot", &u]);
        let msg = String::from_utf8_lossy(&again.stderr).into_owned();
        assert!(
            msg.contains("nothing to compact from L0 into L1")
                && msg.contains("snapshot is up to date"),
            "{msg}"
        );

        let ranges = |level: u8| {
            level_files(&replica, level)
                .iter()
                .map(|p| range(p))
                .collect::<Vec<_>>()
        };
        let split = range(&l0[l0.len() - 3]).1;
        assert_eq!(ranges(1), [(1, split), (split + 1, max)]);
        assert_eq!(ranges(2), [(1, max)]);
        assert_eq!(ranges(9), [(1, max)]);
        // Timestamps: a compaction keeps the last input's; a snapshot is dated when it is taken,
        // as Litestream's (`DB.Snapshot` stamps its header with the current time).
        let newest_l0 = l0.last().unwrap();
        for level in [1u8, 2] {
            let last = level_files(&replica, level).pop().unwrap();
            assert_eq!(mtime_ms(&last), mtime_ms(newest_l0), "L{level} created_at");
        }
        let snapshot = level_files(&replica, 9).pop().unwrap();
        assert!(
            mtime_ms(&snapshot) > mtime_ms(newest_l0),
            "L9 created_at is the snapshot's time"
        );

        // Litestream lists exactly these files.
        let listing = ok(litestream(&["ltx", "-level", "all", &u]));
        let ours = ok(litevisor(&["ltx", "-level", "all", &u]));
        assert_eq!(listing, ours);
        for (level, (min, max)) in [(1, (1, split)), (2, (1, max)), (9, (1, max))] {
            let needle = format!("{level}      {min:016x}  {max:016x}");
            assert!(listing.contains(&needle), "{needle:?} in\n{listing}");
        }

        // Litestream restores from the snapshot alone, and from L2/L1 once L9 is gone.
        for pass in 0..2 {
            if pass == 1 {
                fs::remove_dir_all(replica.join("ltx/9")).unwrap();
            }
            let out = dir.path().join(format!("ls{pass}.db"));
            ok(litestream(&["restore", "-o", out.to_str().unwrap(), &u]));
            assert_eq!(integrity(&out), "ok");
            assert_eq!(rows(&out), rows(&fx.db));
            assert_eq!(fs::read(&out).unwrap(), expected()[&max]);
        }
        // And every TXID Litestream can still reach matches the untouched replica.
        for t in 1..=max {
            let out = dir.path().join(format!("t{t}.db"));
            let o = restore_at(litestream, &format!("{t:016x}"), &out, &u);
            assert!(
                o.status.success(),
                "litestream must restore txid {t} (L0 files are all kept): {}",
                text(&o)
            );
            assert_eq!(fs::read(&out).unwrap(), expected()[&t], "txid {t}");
        }
    }
}

/// `TOOL restore -txid TXID -o OUT URL` (TXID as the caller spells it).
fn restore_at(tool: fn(&[&str]) -> Output, txid: &str, out: &Path, u: &str) -> Output {
    tool(&["restore", "-txid", txid, "-o", out.to_str().unwrap(), u])
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Reveal,
    Compact01,
    Compact12,
    Snapshot,
    Retain {
        snapshot: &'static str,
        l0: &'static str,
    },
}

const OPS: [Op; 8] = [
    Op::Reveal,
    Op::Compact01,
    Op::Compact12,
    Op::Snapshot,
    Op::Retain {
        snapshot: "1h",
        l0: "1h",
    },
    Op::Retain {
        snapshot: "1h",
        l0: "1ms",
    },
    Op::Retain {
        snapshot: "1ms",
        l0: "1h",
    },
    Op::Retain {
        snapshot: "1ms",
        l0: "1ms",
    },
];

/// Applies one operation; returns how many files retention deleted.
fn apply(op: Op, replica: &Path, hidden: &mut Vec<(PathBuf, PathBuf)>) -> usize {
    let u = url(replica);
    let run = |args: &[&str]| {
        let o = litevisor(args);
        assert!(o.status.success(), "{args:?}: {}", text(&o));
        String::from_utf8_lossy(&o.stderr)
            .lines()
            .filter(|l| l.starts_with("deleted "))
            .count()
    };
    match op {
        Op::Reveal => {
            if !hidden.is_empty() {
                let (from, to) = hidden.remove(0);
                fs::rename(from, to).unwrap();
            }
            0
        }
        Op::Compact01 => run(&["ltx", "-compact", "0:1", &u]),
        Op::Compact12 => run(&["ltx", "-compact", "1:2", &u]),
        Op::Snapshot => run(&["ltx", "-snapshot", &u]),
        Op::Retain { snapshot, l0 } => run(&[
            "ltx",
            "-enforce-retention",
            "-snapshot-retention",
            snapshot,
            "-l0-retention",
            l0,
            &u,
        ]),
    }
}

/// After any operation: latest restores to the newest visible TXID; every TXID restores to exactly
/// Litestream's database at that TXID, or is reported unavailable (never a wrong or broken database).
fn check_no_gaps(replica: &Path, visible_max: u64, dir: &Path, ctx: &str) -> usize {
    let u = url(replica);
    let out = dir.join("latest.db");
    let _ = fs::remove_file(&out);
    let o = litevisor(&["restore", "-o", out.to_str().unwrap(), &u]);
    assert!(
        o.status.success(),
        "{ctx}: latest restore failed: {}",
        text(&o)
    );
    assert_eq!(
        fs::read(&out).unwrap(),
        expected()[&visible_max],
        "{ctx}: latest"
    );
    let mut available = 0;
    for t in 1..=visible_max {
        let out = dir.join(format!("t{t}.db"));
        let _ = fs::remove_file(&out);
        let o = restore_at(litevisor, &format!("{t:x}"), &out, &u);
        if o.status.success() {
            available += 1;
            assert_eq!(fs::read(&out).unwrap(), expected()[&t], "{ctx}: txid {t}");
        } else {
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(
                err.contains("no matching backup files available"),
                "{ctx}: txid {t}: {}",
                text(&o)
            );
            assert!(!out.exists());
        }
    }
    available
}

#[test]
fn retention_never_creates_gaps() {
    let max = fixture().max_txid();
    let mut total_deleted = 0;
    let mut pruned_history = false;
    for seed in 1..=4u64 {
        let dir = tempfile::tempdir().unwrap();
        let replica = l0_only(dir.path());
        let stash = dir.path().join("stash");
        fs::create_dir(&stash).unwrap();
        // Start with the first two TXIDs; the rest arrive one `Reveal` at a time.
        let mut hidden = Vec::new();
        for f in level_files(&replica, 0)
            .into_iter()
            .filter(|f| range(f).1 > 2)
        {
            let parked = stash.join(f.file_name().unwrap());
            fs::rename(&f, &parked).unwrap();
            hidden.push((parked, f));
        }
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut history = Vec::new();
        let mut steps = 0;
        while steps < 24 || !hidden.is_empty() {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let op = if steps >= 24 {
                Op::Reveal
            } else {
                OPS[(state >> 33) as usize % OPS.len()]
            };
            total_deleted += apply(op, &replica, &mut hidden);
            history.push(op);
            let visible = level_files(&replica, 0)
                .iter()
                .map(|p| range(p).1)
                .max()
                .unwrap();
            let visible = visible.max(
                level_files(&replica, 1)
                    .iter()
                    .map(|p| range(p).1)
                    .max()
                    .unwrap_or(0),
            );
            let available = check_no_gaps(
                &replica,
                visible,
                dir.path(),
                &format!("seed {seed} after {history:?}"),
            );
            pruned_history |= (available as u64) < visible;
            steps += 1;
        }
        // Finish like a long-running replica would, then make sure real Litestream agrees.
        for op in [
            Op::Compact01,
            Op::Compact12,
            Op::Snapshot,
            Op::Retain {
                snapshot: "1ms",
                l0: "1ms",
            },
        ] {
            total_deleted += apply(op, &replica, &mut hidden);
            history.push(op);
        }
        let available = check_no_gaps(
            &replica,
            max,
            dir.path(),
            &format!("seed {seed} final {history:?}"),
        );
        assert!(available >= 1);
        let out = dir.path().join("litestream.db");
        ok(litestream(&[
            "restore",
            "-o",
            out.to_str().unwrap(),
            &url(&replica),
        ]));
        assert_eq!(
            fs::read(&out).unwrap(),
            expected()[&max],
            "seed {seed}: litestream latest"
        );
    }
    assert!(
        total_deleted > 0,
        "retention must have deleted something for the test to mean anything"
    );
    assert!(
        pruned_history,
        "some sequence must have made old TXIDs unavailable"
    );
    eprintln!("retention deleted {total_deleted} files across the sequences");
}

#[test]
fn corrupt_input_fails_compaction_without_leaving_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let replica = l0_only(dir.path());
    let l0 = level_files(&replica, 0);
    let victim = &l0[l0.len() / 2];
    let mut bytes = fs::read(victim).unwrap();
    let at = bytes.len() - 20; // inside the page index / trailer: only the checksum can tell
    bytes[at] ^= 0xff;
    fs::write(victim, &bytes).unwrap();
    for args in [["-compact", "0:1"], ["-snapshot", ""]] {
        let u = url(&replica);
        let mut a = vec!["ltx"];
        a.extend(args.iter().filter(|s| !s.is_empty()));
        a.push(&u);
        let o = litevisor(&a);
        assert_eq!(o.status.code(), Some(1), "{a:?}: {}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(victim.to_str().unwrap()),
            "{a:?}: error must name the corrupt file: {err}"
        );
        for level in [1, 9] {
            let d = replica.join("ltx").join(level.to_string());
            let left: Vec<_> = fs::read_dir(&d)
                .map(|r| r.map(|e| e.unwrap().path()).collect())
                .unwrap_or_default();
            assert!(
                left.is_empty(),
                "{a:?}: nothing may be committed or left behind: {left:?}"
            );
        }
    }
}
