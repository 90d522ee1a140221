//! The `[[databases]]` array: which SQLite files to replicate, where to, and Litestream's tuning knobs
//! (same names, snake_case). Parsed and validated here for the replication side; credentials become
//! [`Secret`]s at once so they can never be printed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::diag::{Loc, Problems, Source};
use super::tree::{Node, Spanned, TableReader};
use super::{Database, Replica, RestorePolicy, Secret, values};

/// Reads the `databases` array of the root table.
pub fn read_all(
    src: &Source,
    loc: Loc,
    node: Spanned<Node>,
    base_dir: &Path,
    problems: &mut Problems,
) -> Vec<Database> {
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
            return Vec::new();
        }
    };
    let mut out: Vec<(Database, Loc)> = Vec::new();
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
        let reader = TableReader::new(src, &prefix, entries);
        if let Some((db, path_loc)) = read_one(reader, item_loc, base_dir, problems) {
            if let Some((_, first)) = out.iter().find(|(d, _)| d.path == db.path) {
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
    out.into_iter().map(|(db, _)| db).collect()
}

fn read_one(
    mut t: TableReader<'_>,
    loc: Loc,
    base_dir: &Path,
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
    let sync_interval = duration(&mut t, "sync_interval", Duration::from_secs(1), problems);
    let checkpoint_interval = duration(
        &mut t,
        "checkpoint_interval",
        Duration::from_secs(60),
        problems,
    );
    let busy_timeout = duration(&mut t, "busy_timeout", Duration::from_secs(1), problems);
    let min_checkpoint_page_count = count(&mut t, "min_checkpoint_page_count", 1000, 1, problems);
    let truncate_page_n = count(&mut t, "truncate_page_n", 121_359, 0, problems);
    t.finish(problems);

    let path = match path {
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
                "missing required key",
            );
            return None;
        }
    };
    let db = Database {
        path: base_dir.join(&path.value),
        replica: replica?,
        restore: restore.unwrap_or(RestorePolicy::IfMissing),
        sync_interval: sync_interval?,
        checkpoint_interval: checkpoint_interval?,
        min_checkpoint_page_count: min_checkpoint_page_count?,
        truncate_page_n: truncate_page_n?,
        busy_timeout: busy_timeout?,
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
        Node::Str(url) => return parse_url(&url).map_err(|msg| problems.push(loc, msg)).ok(),
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

    let mut parts = match &url {
        Some(url) => {
            for other in [&kind, &bucket, &path].into_iter().flatten() {
                let msg = format!(
                    "conflicts with `url` at line {}: give the location once",
                    line_of(&url.loc)
                );
                problems.push(other.loc.clone(), msg);
            }
            match parse_url_parts(&url.value) {
                Ok(UrlParts::File(path)) => UrlParts::File(path),
                Ok(UrlParts::S3(s3)) => UrlParts::S3(s3),
                Err(msg) => {
                    problems.push(url.loc.clone(), msg);
                    return None;
                }
            }
        }
        None => match kind.as_ref().map(|k| (k.value.as_str(), k)) {
            Some(("s3", _)) => UrlParts::S3(S3Parts::default()),
            Some(("file", _)) => UrlParts::File(PathBuf::new()),
            Some((other, k)) => {
                problems.push(
                    k.loc.clone(),
                    format!("unsupported replica type {other:?}: use \"s3\" or \"file\""),
                );
                return None;
            }
            None if bucket.is_some() => UrlParts::S3(S3Parts::default()),
            None => UrlParts::File(PathBuf::new()),
        },
    };
    let replica_key = |key: &str| Loc {
        key: Some(format!("{}.{key}", db.path_of("replica"))),
        ..loc.clone()
    };
    match &mut parts {
        UrlParts::File(file_path) => {
            let s3_only = [
                ("bucket", bucket.map(|v| v.loc)),
                ("endpoint", endpoint.map(|v| v.loc)),
                ("region", region.map(|v| v.loc)),
                ("force_path_style", force_path_style.map(|v| v.loc)),
                ("skip_verify", skip_verify.map(|v| v.loc)),
                ("access_key_id", access_key_id.map(|v| v.loc)),
                ("secret_access_key", secret_access_key.map(|v| v.loc)),
            ];
            for (key, at) in s3_only {
                if let Some(at) = at {
                    problems.push(at, format!("`{key}` applies only to s3 replicas"));
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
            Some(Replica::File {
                path: std::mem::take(file_path),
            })
        }
        UrlParts::S3(s3) => {
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
            s3.endpoint = endpoint.map(|v| v.value).or(s3.endpoint.take());
            s3.region = region.map(|v| v.value).or(s3.region.take());
            s3.force_path_style = force_path_style.map(|v| v.value).or(s3.force_path_style);
            s3.skip_verify = skip_verify.map_or(s3.skip_verify, |v| v.value);
            let mut replica = std::mem::take(s3).into_replica();
            if let Replica::S3 {
                access_key_id: id,
                secret_access_key: secret,
                ..
            } = &mut replica
            {
                *id = access_key_id.map(|v| Secret::new(v.value));
                *secret = secret_access_key.map(|v| Secret::new(v.value));
            }
            Some(replica)
        }
    }
}

fn line_of(loc: &Loc) -> usize {
    loc.line.map_or(0, |(l, _)| l)
}

enum UrlParts {
    File(PathBuf),
    S3(S3Parts),
}

#[derive(Default)]
struct S3Parts {
    bucket: String,
    path: String,
    endpoint: Option<String>,
    region: Option<String>,
    force_path_style: Option<bool>,
    skip_verify: bool,
}

impl S3Parts {
    /// Path-style addressing defaults to on with a custom endpoint (MinIO and friends), like Litestream.
    fn into_replica(self) -> Replica {
        Replica::S3 {
            force_path_style: self.force_path_style.unwrap_or(self.endpoint.is_some()),
            bucket: self.bucket,
            path: self.path,
            endpoint: self.endpoint,
            region: self.region,
            skip_verify: self.skip_verify,
            access_key_id: None,
            secret_access_key: None,
        }
    }
}

/// `file:///abs/path` or `s3://bucket/prefix?endpoint=...&region=...&forcePathStyle=true&skipVerify=true`.
pub fn parse_url(url: &str) -> Result<Replica, String> {
    Ok(match parse_url_parts(url)? {
        UrlParts::File(path) => Replica::File { path },
        UrlParts::S3(s3) => s3.into_replica(),
    })
}

fn parse_url_parts(url: &str) -> Result<UrlParts, String> {
    if let Some(path) = url.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err(format!(
                "invalid replica URL {url:?}: a file URL needs an absolute path (file:///dir)"
            ));
        }
        return Ok(UrlParts::File(PathBuf::from(path)));
    }
    let Some(rest) = url.strip_prefix("s3://") else {
        return Err(match url.split_once("://") {
            Some((scheme, _)) => {
                format!("unsupported replica scheme {scheme:?}: use s3:// or file://")
            }
            None => format!("invalid replica URL {url:?}: use s3://bucket/path or file:///path"),
        });
    };
    let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (bucket, path) = location.split_once('/').unwrap_or((location, ""));
    if bucket.is_empty() {
        return Err(format!("invalid replica URL {url:?}: no bucket"));
    }
    let mut s3 = S3Parts {
        bucket: bucket.to_string(),
        path: path.trim_matches('/').to_string(),
        ..S3Parts::default()
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value)
            .ok_or_else(|| format!("invalid %-escape in replica URL parameter {key:?}"))?;
        match key {
            "endpoint" => s3.endpoint = Some(value),
            "region" => s3.region = Some(value),
            "forcePathStyle" | "force-path-style" | "force_path_style" => {
                s3.force_path_style = Some(flag(key, &value)?)
            }
            "skipVerify" | "skip-verify" | "skip_verify" => s3.skip_verify = flag(key, &value)?,
            other => return Err(format!("unknown replica URL parameter {other:?}")),
        }
    }
    Ok(UrlParts::S3(s3))
}

fn flag(key: &str, value: &str) -> Result<bool, String> {
    match value {
        "" | "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(format!(
            "replica URL parameter {key}={value:?}: use true or false"
        )),
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("file:///backups/app"),
            Ok(Replica::File {
                path: "/backups/app".into()
            })
        );
        let Ok(Replica::S3 {
            bucket,
            path,
            endpoint,
            force_path_style,
            skip_verify,
            ..
        }) = parse_url("s3://bkt/app/db/?endpoint=http%3A%2F%2F127.0.0.1%3A9000&skipVerify=true")
        else {
            panic!("not s3")
        };
        assert_eq!((bucket.as_str(), path.as_str()), ("bkt", "app/db"));
        assert_eq!(endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert!(force_path_style && skip_verify);
        assert!(
            parse_url("gs://b/p")
                .unwrap_err()
                .contains("unsupported replica scheme")
        );
        assert!(parse_url("file://relative").is_err());
        assert!(parse_url("s3:///p").is_err());
        assert!(parse_url("s3://b/p?bogus=1").unwrap_err().contains("bogus"));
    }

    #[test]
    fn secrets_never_print() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret} {secret:?}"), "*** ***");
        let replica = Replica::S3 {
            bucket: "b".into(),
            path: "p".into(),
            endpoint: None,
            region: None,
            force_path_style: false,
            skip_verify: false,
            access_key_id: Some(Secret::new("AKIDSECRET")),
            secret_access_key: Some(secret),
        };
        let shown = format!("{replica} {replica:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("AKIDSECRET"),
            "{shown}"
        );
    }
}
