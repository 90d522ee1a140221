//! The `[[databases]]` array: which SQLite files to replicate (`path`, or a directory of them: `dir` +
//! `pattern`, `recursive`, `watch`, Litestream's directory mode), where to, and Litestream's tuning
//! knobs (same names, snake_case), plus litevisor's `allow_network_fs`. Parsed and validated here for the
//! replication side; credentials become [`Secret`]s at once so they can never be printed. Replica URLs
//! go through [`ReplicaUrl::parse`], the same rules as the command line's (Litestream's).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::diag::{Loc, Problems, Source};
use super::directory::glob_match;
use super::replica_url::{ReplicaUrl, is_url};
use super::s3::{S3Options, Secret, endpoint_with_scheme};
use super::tree::{Located, Node, Spanned, TableReader};
use super::tuning as engine;
use super::{Database, DatabaseDir, Replica, RestorePolicy, values};

/// Reads the `databases` array of the root table: the single databases and the directory entries.
pub fn read_all(
    src: &Source,
    loc: Loc,
    node: Spanned<Node>,
    base_dir: &Path,
    problems: &mut Problems,
) -> (Vec<Database>, Vec<DatabaseDir>) {
    let items = match node.into_inner() {
        Node::Array(items) => items,
        other => {
            problems.push(
                loc,
                format!(
                    "expected an array of tables ([[databases]]), found {}",
                    other.kind()
                ),
            );
            return (Vec::new(), Vec::new());
        }
    };
    let mut out: Vec<(Database, Loc)> = Vec::new();
    let mut dirs: Vec<(DatabaseDir, Loc)> = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let prefix = format!("databases[{i}]");
        let item_loc = src.loc(item.span().start, &prefix);
        let entries = match item.into_inner() {
            Node::Table(entries) => entries,
            other => {
                problems.push(
                    item_loc,
                    format!("expected a table, found {}", other.kind()),
                );
                continue;
            }
        };
        let mut reader = TableReader::new(src, &prefix, entries);
        let directory = read_directory_keys(&mut reader, base_dir, problems);
        if let Some((db, path_loc)) =
            read_one(reader, item_loc, base_dir, directory.is_some(), problems)
        {
            if let Some(d) = directory {
                let dir = DatabaseDir {
                    dir: d.dir.clone(),
                    template: Database { path: d.dir, ..db },
                    pattern: d.pattern,
                    recursive: d.recursive,
                    watch: d.watch,
                    meta_dir: None,
                };
                match dirs.iter().find(|(other, _)| other.dir == dir.dir) {
                    Some((_, first)) => {
                        let msg = format!(
                            "directory {} is already listed at line {}",
                            dir.dir.display(),
                            first.line.map_or(0, |l| l.0)
                        );
                        problems.push(path_loc, msg);
                    }
                    None => dirs.push((dir, path_loc)),
                }
            } else if let Some((_, first)) = out.iter().find(|(d, _)| d.path == db.path) {
                let msg = format!(
                    "database {} is already listed at line {}",
                    db.path.display(),
                    first.line.map_or(0, |l| l.0)
                );
                problems.push(path_loc, msg);
            } else {
                out.push((db, path_loc));
            }
        }
    }
    (
        out.into_iter().map(|(db, _)| db).collect(),
        dirs.into_iter().map(|(d, _)| d).collect(),
    )
}

/// The directory-mode keys of one entry (`dir`, `pattern`, `recursive`, `watch`).
struct DirectoryKeys {
    dir: PathBuf,
    pattern: String,
    recursive: bool,
    watch: bool,
}

/// Reads `dir` and its companions; `None` when the entry has no `dir` (then `pattern`, `recursive`
/// and `watch` are errors: they mean nothing for a single `path`).
fn read_directory_keys(
    t: &mut TableReader<'_>,
    base_dir: &Path,
    problems: &mut Problems,
) -> Option<DirectoryKeys> {
    let dir = t.string("dir", problems);
    let pattern = t.string("pattern", problems);
    let recursive = t.bool("recursive", problems);
    let watch = t.bool("watch", problems);
    let Some(dir) = dir else {
        for (key, at) in [
            ("pattern", pattern.map(|v| v.loc)),
            ("recursive", recursive.map(|v| v.loc)),
            ("watch", watch.map(|v| v.loc)),
        ] {
            if let Some(at) = at {
                problems.push(at, format!("`{key}` applies only to a `dir` entry"));
            }
        }
        return None;
    };
    if dir.value.is_empty() {
        problems.push(dir.loc, "must not be empty");
        return None;
    }
    let pattern = match pattern {
        Some(p) => match glob_match(&p.value, "") {
            Ok(_) if p.value.is_empty() => {
                problems.push(p.loc, "must not be empty");
                return None;
            }
            Ok(_) => p.value,
            Err(why) => {
                problems.push(p.loc, format!("invalid pattern: {why}"));
                return None;
            }
        },
        None => {
            problems.push(
                Loc {
                    key: Some(t.path_of("pattern")),
                    ..dir.loc
                },
                "missing required key: a `dir` entry needs `pattern` (e.g. \"*.db\")",
            );
            return None;
        }
    };
    Some(DirectoryKeys {
        dir: base_dir.join(&dir.value),
        pattern,
        recursive: recursive.is_some_and(|v| v.value),
        watch: watch.is_some_and(|v| v.value),
    })
}

fn read_one(
    mut t: TableReader<'_>,
    loc: Loc,
    base_dir: &Path,
    directory: bool,
    problems: &mut Problems,
) -> Option<(Database, Loc)> {
    let path = t.string("path", problems);
    let replica = match t.take("replica") {
        Some((rloc, node)) => read_replica(&mut t, rloc, node, base_dir, problems),
        None => {
            problems.push(
                Loc {
                    key: Some(t.path_of("replica")),
                    ..loc.clone()
                },
                "missing required key",
            );
            None
        }
    };
    let restore = t
        .string("restore", problems)
        .and_then(|v| match v.value.as_str() {
            "if-missing" => Some(RestorePolicy::IfMissing),
            "always" => Some(RestorePolicy::Always),
            "never" => Some(RestorePolicy::Never),
            other => {
                problems.push(
                    v.loc,
                    format!("unknown value {other:?}: use \"if-missing\", \"always\" or \"never\""),
                );
                None
            }
        });
    let sync_interval = duration(
        &mut t,
        "sync_interval",
        engine::DEFAULT_MIN_SYNC_INTERVAL,
        problems,
    );
    let checkpoint_interval = duration(
        &mut t,
        "checkpoint_interval",
        engine::DEFAULT_CHECKPOINT_INTERVAL,
        problems,
    );
    let busy_timeout = duration(
        &mut t,
        "busy_timeout",
        engine::DEFAULT_BUSY_TIMEOUT,
        problems,
    );
    let min_checkpoint_page_count = count(
        &mut t,
        "min_checkpoint_page_count",
        engine::DEFAULT_MIN_CHECKPOINT_PAGE_COUNT,
        1,
        problems,
    );
    let truncate_page_n = count(
        &mut t,
        "truncate_page_n",
        engine::DEFAULT_TRUNCATE_PAGE_N,
        0,
        problems,
    );
    let allow_network_fs = t.bool("allow_network_fs", problems);
    let follow = t.bool("follow", problems);
    let follow_interval = duration(
        &mut t,
        "follow_interval",
        engine::DEFAULT_FOLLOW_INTERVAL,
        problems,
    );
    t.finish(problems);
    let follows = follow.as_ref().is_some_and(|v| v.value);
    if follows && directory {
        if let Some(f) = &follow {
            problems.push(
                f.loc.clone(),
                "a directory of databases cannot be followed (give each database its own entry)",
            );
        }
        return None;
    }

    let path = match path {
        Some(p) if directory => {
            problems.push(p.loc, "give either `path` or `dir`, not both");
            return None;
        }
        None if directory => Located {
            value: String::new(),
            loc: loc.clone(),
        },
        Some(p) if p.value.is_empty() => {
            problems.push(p.loc, "must not be empty");
            return None;
        }
        Some(p) => p,
        None => {
            problems.push(
                Loc {
                    key: Some(format!("{}.path", loc.key.as_deref().unwrap_or(""))),
                    ..loc
                },
                "missing required key (or `dir` + `pattern` for a directory of databases)",
            );
            return None;
        }
    };
    let db = Database {
        restore: restore.unwrap_or(RestorePolicy::IfMissing),
        sync_interval: sync_interval?,
        checkpoint_interval: checkpoint_interval?,
        min_checkpoint_page_count: min_checkpoint_page_count?,
        truncate_page_n: truncate_page_n?,
        busy_timeout: busy_timeout?,
        allow_network_fs: allow_network_fs.is_some_and(|v| v.value),
        follow: if follows {
            Some(follow_interval?)
        } else {
            None
        },
        ..Database::new(base_dir.join(&path.value), replica?)
    };
    Some((db, path.loc))
}

fn duration(
    t: &mut TableReader<'_>,
    key: &str,
    default: Duration,
    problems: &mut Problems,
) -> Option<Duration> {
    let Some(v) = t.scalar_text(key, problems) else {
        return Some(default);
    };
    match values::duration(&v.value) {
        Ok(d) if d.is_zero() => {
            problems.push(v.loc, "must be more than 0");
            None
        }
        Ok(d) => Some(d),
        Err(msg) => {
            problems.push(v.loc, msg);
            None
        }
    }
}

fn count(
    t: &mut TableReader<'_>,
    key: &str,
    default: u32,
    min: u32,
    problems: &mut Problems,
) -> Option<u32> {
    let Some(v) = t.integer(key, problems) else {
        return Some(default);
    };
    match u32::try_from(v.value) {
        Ok(n) if n >= min => Some(n),
        _ => {
            problems.push(
                v.loc,
                format!("must be an integer from {min} to {}", u32::MAX),
            );
            None
        }
    }
}

fn read_replica(
    db: &mut TableReader<'_>,
    loc: Loc,
    node: Spanned<Node>,
    base_dir: &Path,
    problems: &mut Problems,
) -> Option<Replica> {
    let entries = match node.into_inner() {
        Node::Str(url) => {
            return replica_from_url(&url, base_dir)
                .map_err(|msg| problems.push(loc, msg))
                .ok();
        }
        Node::Table(entries) => entries,
        other => {
            problems.push(
                loc,
                format!("expected a URL string or a table, found {}", other.kind()),
            );
            return None;
        }
    };
    let mut t = TableReader::new(db.source(), &db.path_of("replica"), entries);
    let kind = t.string("type", problems);
    let url = t.string("url", problems);
    let bucket = t.string("bucket", problems);
    let path = t.string("path", problems);
    let endpoint = t.string("endpoint", problems);
    let region = t.string("region", problems);
    let force_path_style = t.bool("force_path_style", problems);
    let skip_verify = t.bool("skip_verify", problems);
    let access_key_id = t.string("access_key_id", problems);
    let secret_access_key = t.string("secret_access_key", problems);
    t.finish(problems);

    let mut replica = match &url {
        Some(url) => {
            for other in [&kind, &bucket, &path].into_iter().flatten() {
                let msg = format!(
                    "conflicts with `url` at line {}: give the location once",
                    line_of(&url.loc)
                );
                problems.push(other.loc.clone(), msg);
            }
            match replica_from_url(&url.value, base_dir) {
                Ok(replica) => replica,
                Err(msg) => {
                    problems.push(url.loc.clone(), msg);
                    return None;
                }
            }
        }
        None => match kind.as_ref().map(|k| (k.value.as_str(), k)) {
            Some(("s3", _)) => empty_s3(),
            Some(("file", _)) => Replica::File {
                path: PathBuf::new(),
            },
            Some((other, k)) => {
                problems.push(
                    k.loc.clone(),
                    format!("unsupported replica type {other:?}: use \"s3\" or \"file\""),
                );
                return None;
            }
            None if bucket.is_some() => empty_s3(),
            None => Replica::File {
                path: PathBuf::new(),
            },
        },
    };
    let replica_key = |key: &str| Loc {
        key: Some(format!("{}.{key}", db.path_of("replica"))),
        ..loc.clone()
    };
    match &mut replica {
        Replica::File { path: file_path } => {
            let s3_only = [
                ("bucket", bucket.as_ref().map(|v| &v.loc)),
                ("endpoint", endpoint.as_ref().map(|v| &v.loc)),
                ("region", region.as_ref().map(|v| &v.loc)),
                (
                    "force_path_style",
                    force_path_style.as_ref().map(|v| &v.loc),
                ),
                ("skip_verify", skip_verify.as_ref().map(|v| &v.loc)),
                ("access_key_id", access_key_id.as_ref().map(|v| &v.loc)),
                (
                    "secret_access_key",
                    secret_access_key.as_ref().map(|v| &v.loc),
                ),
            ];
            for (key, at) in s3_only {
                if let Some(at) = at {
                    problems.push(at.clone(), format!("`{key}` applies only to s3 replicas"));
                }
            }
            if url.is_none() {
                match path {
                    Some(p) if !p.value.is_empty() => *file_path = base_dir.join(p.value),
                    _ => {
                        problems.push(
                            replica_key("path"),
                            "a file replica needs `path` (or `url`)",
                        );
                        return None;
                    }
                }
            }
        }
        Replica::S3(s3) => {
            if let Some(b) = bucket {
                s3.bucket = b.value;
            }
            if let Some(p) = path {
                s3.path = p.value.trim_matches('/').to_string();
            }
            if s3.bucket.is_empty() {
                problems.push(
                    replica_key("bucket"),
                    "an s3 replica needs `bucket` (or `url`)",
                );
                return None;
            }
            if let Some(e) = endpoint {
                s3.endpoint = Some(endpoint_with_scheme(&e.value));
            }
            if let Some(r) = region {
                s3.region = Some(r.value);
            }
            if let Some(v) = force_path_style {
                s3.force_path_style = Some(v.value);
            }
            if let Some(v) = skip_verify {
                s3.skip_verify = v.value;
            }
            // Keys in the file win over the environment (the S3 client falls back to it when unset).
            s3.access_key_id = access_key_id.map(|v| Secret::new(v.value));
            s3.secret_access_key = secret_access_key.map(|v| Secret::new(v.value));
        }
    }
    Some(replica)
}

fn line_of(loc: &Loc) -> usize {
    loc.line.map_or(0, |(l, _)| l)
}

fn empty_s3() -> Replica {
    Replica::S3(S3Options::default())
}

/// A replica named by a URL or a plain path, with exactly the rules of `litevisor replicate DB URL`
/// ([`ReplicaUrl::parse`], Litestream's): `file:///dir`, `s3://bucket/path?endpoint=...`, or a path
/// (relative paths resolve against `base_dir`). Credentials never come from a URL.
pub fn replica_from_url(url: &str, base_dir: &Path) -> Result<Replica, String> {
    if let Some((scheme, _)) = url.split_once("://")
        && is_url(url)
        && !matches!(scheme.to_ascii_lowercase().as_str(), "s3" | "file")
    {
        return Err(format!(
            "unsupported replica scheme {scheme:?}: use s3:// or file:// (or a path)"
        ));
    }
    match ReplicaUrl::parse(url).map_err(|e| e.to_string())? {
        ReplicaUrl::File(path) => Ok(Replica::File {
            path: base_dir.join(path),
        }),
        ReplicaUrl::S3(s3) => Ok(Replica::S3(s3)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::s3::Secret;

    fn parse_url(url: &str) -> Result<Replica, String> {
        replica_from_url(url, Path::new("/cfg"))
    }

    #[test]
    fn urls_follow_the_command_line_rules() {
        assert_eq!(
            parse_url("file:///backups/app"),
            Ok(Replica::File {
                path: "/backups/app".into()
            })
        );
        assert_eq!(
            parse_url("backups/app"),
            Ok(Replica::File {
                path: "/cfg/backups/app".into()
            }),
            "a plain path is a file replica next to the config"
        );
        let Ok(Replica::S3(s3)) = parse_url(
            "s3://bkt/app/db/?endpoint=http%3A%2F%2F127.0.0.1%3A9000&skipVerify=true&partSize=6000000",
        ) else {
            panic!("not s3")
        };
        assert_eq!((s3.bucket.as_str(), s3.path.as_str()), ("bkt", "app/db"));
        assert_eq!(s3.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert!(s3.effective_force_path_style() && s3.skip_verify);
        assert_eq!(s3.part_size, Some(6_000_000));
        assert!(parse_url("gs://b/p").unwrap_err().contains("unsupported"));
        // Go's URL rules, as Litestream: the host part of a file URL is a path component.
        assert_eq!(
            parse_url("file://relative"),
            Ok(Replica::File {
                path: "/relative".into()
            })
        );
        assert!(parse_url("s3:///p").is_err());
        assert!(
            !parse_url("s3://id:hunter2@/p")
                .unwrap_err()
                .contains("hunter2")
        );
    }

    #[test]
    fn secrets_never_print() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret} {secret:?}"), "*** ***");
        let mut replica = empty_s3();
        if let Replica::S3(s3) = &mut replica {
            s3.access_key_id = Some(Secret::new("AKIDSECRET"));
            s3.secret_access_key = Some(secret);
        }
        let shown = format!("{replica} {replica:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("AKIDSECRET"),
            "{shown}"
        );
    }
}
