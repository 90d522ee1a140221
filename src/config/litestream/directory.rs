//! Litestream's directory mode keys of one `dbs` entry (`dir`, `pattern`, `recursive`, `watch`,
//! `meta-dir`), with Litestream's rules: `pattern` is required with `dir` and must be a valid Go
//! `filepath.Match` pattern; the others mean nothing without `dir`.

use std::path::{Path, PathBuf};

use super::super::diag::{Loc, Problems};
use super::super::directory::glob_match;
use super::super::{Database, DatabaseDir, Replica};
use super::expand::expand_path;
use super::map::{Map, loc_at};

/// Reads the directory keys of an entry: `None` when it has no `dir` (a plain database entry, or a
/// problem already reported).
pub(super) fn read_directory_keys(
    file: &Path,
    m: &mut Map<'_>,
    problems: &mut Problems,
) -> Option<(Loc, DatabaseDir)> {
    let dir = m.text("dir", problems);
    let pattern = m.text("pattern", problems);
    let recursive = m.bool("recursive", problems);
    let watch = m.bool("watch", problems);
    let meta_dir = m.text("meta-dir", problems);
    let Some((dir_loc, dir)) = dir.filter(|(_, d)| !d.is_empty()) else {
        for (key, set) in [
            ("pattern", pattern.is_some()),
            ("recursive", recursive.is_some()),
            ("watch", watch.is_some()),
            ("meta-dir", meta_dir.is_some()),
        ] {
            if set {
                problems.push(
                    loc_at(file, 0, 0, &m.path_of(key)),
                    format!("`{key}` can only be used with a directory (`dir`)"),
                );
            }
        }
        return None;
    };
    let pattern = match pattern {
        Some((loc, p)) if p.is_empty() => {
            problems.push(loc, "must not be empty");
            return None;
        }
        Some((loc, p)) => match glob_match(&p, "") {
            Ok(_) => p,
            Err(why) => {
                problems.push(loc, format!("invalid pattern: {why}"));
                return None;
            }
        },
        None => {
            problems.push(
                loc_at(file, 0, 0, &m.path_of("pattern")),
                "'pattern' is required when using 'dir' (e.g. pattern: \"*.db\")",
            );
            return None;
        }
    };
    let dir = expand_path(&dir);
    Some((
        dir_loc,
        DatabaseDir {
            template: Database::new(
                dir.clone(),
                Replica::File {
                    path: PathBuf::new(),
                },
            ),
            dir,
            pattern,
            recursive: recursive.unwrap_or(false),
            watch: watch.unwrap_or(false),
            meta_dir: meta_dir.map(|(_, p)| expand_path(&p)),
        },
    ))
}
