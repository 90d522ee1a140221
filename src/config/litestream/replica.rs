//! One database's replica: its location (`url`, or `type` + `path`/`bucket`), the S3 keys it may set
//! itself or inherit from the top level, the keys accepted but ignored, and those refused.

use std::path::Path;
use std::time::Duration;

use super::super::Replica;
use super::super::database::replica_from_url;
use super::super::diag::{Loc, Problems};
use super::super::replica_url::{ARN_REFUSED, is_arn, is_url};
use super::super::s3::{S3Options, Secret, endpoint_with_scheme};
use super::expand::expand_path;
use super::map::{Map, join, loc_at};
use super::mapping::Globals;
use super::yaml::Node;

/// Replica keys accepted and ignored, with the reason shown.
const IGNORED_REPLICA: &[(&str, &str)] = &[
    (
        "name",
        "replica names are not used (one replica per database)",
    ),
    ("max-sync-ltx-files", "every pending L0 file is uploaded"),
    (
        "auto-recover",
        "a replica mismatch always falls back to a snapshot",
    ),
    ("validation-interval", "unused by Litestream too"),
    ("sign-payload", "payloads are always signed"),
    ("require-content-md5", "not configurable in litevisor"),
    (
        "retention",
        "a Litestream 0.3 key; Litestream 0.5 ignores it too",
    ),
    (
        "retention-check-interval",
        "a Litestream 0.3 key; Litestream 0.5 ignores it too",
    ),
    (
        "snapshot-interval",
        "a Litestream 0.3 key; Litestream 0.5 ignores it too (use `snapshot`)",
    ),
];

/// Replica keys that ask for something litevisor cannot do.
const REJECTED_REPLICA: &[(&str, &str)] = &[
    (
        "age",
        "age encryption was removed in Litestream 0.5 and is not supported",
    ),
    ("sse-customer-algorithm", "SSE-C is not supported yet"),
    ("sse-customer-key", "SSE-C is not supported yet"),
    ("sse-customer-key-path", "SSE-C is not supported yet"),
    ("sse-kms-key-id", "SSE-KMS is not supported yet"),
];

/// Replica settings, from a replica or as top-level defaults for every replica.
#[derive(Clone, Debug, Default)]
pub(super) struct ReplicaKeys {
    pub(super) bucket: Option<String>,
    region: Option<String>,
    endpoint: Option<String>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    force_path_style: Option<bool>,
    skip_verify: Option<bool>,
    part_size: Option<u64>,
    concurrency: Option<u64>,
    storage_class: Option<String>,
    pub(super) sync_interval: Option<(Loc, Duration)>,
}

impl ReplicaKeys {
    pub(super) fn read(m: &mut Map<'_>, problems: &mut Problems) -> ReplicaKeys {
        let concurrency = m.integer("concurrency", problems).and_then(|(loc, n)| {
            if n == 0 {
                problems.push(loc, "must be at least 1");
                None
            } else {
                Some(n)
            }
        });
        ReplicaKeys {
            bucket: m.string("bucket", problems),
            region: m.string("region", problems),
            endpoint: m.string("endpoint", problems),
            access_key_id: m.string("access-key-id", problems),
            secret_access_key: m.string("secret-access-key", problems),
            force_path_style: m.bool("force-path-style", problems),
            skip_verify: m.bool("skip-verify", problems),
            part_size: m.size("part-size", problems),
            concurrency,
            storage_class: m.string("storage-class", problems),
            sync_interval: m.duration_at("sync-interval", problems),
        }
    }

    /// `self` with `defaults` filling what it leaves unset.
    pub(super) fn or(self, defaults: &ReplicaKeys) -> ReplicaKeys {
        let d = defaults.clone();
        ReplicaKeys {
            bucket: self.bucket.or(d.bucket),
            region: self.region.or(d.region),
            endpoint: self.endpoint.or(d.endpoint),
            access_key_id: self.access_key_id.or(d.access_key_id),
            secret_access_key: self.secret_access_key.or(d.secret_access_key),
            force_path_style: self.force_path_style.or(d.force_path_style),
            skip_verify: self.skip_verify.or(d.skip_verify),
            part_size: self.part_size.or(d.part_size),
            concurrency: self.concurrency.or(d.concurrency),
            storage_class: self.storage_class.or(d.storage_class),
            sync_interval: self.sync_interval.or(d.sync_interval),
        }
    }
}

/// One replica: its location (a `url`, or `type` + `path`/`bucket`), its S3 settings over the
/// top-level defaults, and its `sync-interval`.
pub(super) fn read_replica(
    path: &Path,
    loc: &Loc,
    node: Node,
    globals: &Globals,
    problems: &mut Problems,
) -> Option<(Replica, Option<Duration>)> {
    let (line, col) = (node.line, node.col);
    let mut m = Map::new(
        path,
        loc.key.as_deref().unwrap_or("replica"),
        node,
        problems,
    )?;
    for (key, why) in REJECTED_REPLICA {
        if let Some((loc, _)) = m.take(key) {
            problems.push(loc, *why);
        }
    }
    let kind = m.text("type", problems);
    let url = m.text("url", problems);
    let replica_path = m.text("path", problems);
    let had_bucket = m.has("bucket");
    let keys = ReplicaKeys::read(&mut m, problems).or(&globals.replica);
    m.finish(IGNORED_REPLICA, problems);
    let here = |key: &str| loc_at(path, line, col, &m_path(loc, key));

    let scheme = url.as_ref().and_then(|(_, u)| {
        is_url(u).then(|| u.split("://").next().unwrap_or("").to_ascii_lowercase())
    });
    let kind_name = match (&kind, &scheme) {
        (Some((kloc, k)), Some(s)) if k != s => {
            problems.push(
                kloc.clone(),
                format!("type {k:?} does not match the url's scheme {s:?}"),
            );
            return None;
        }
        (Some((_, k)), _) => k.clone(),
        (None, Some(s)) => s.clone(),
        (None, None) if url.is_some() => "file".to_string(),
        (None, None) if keys.bucket.is_some() => "s3".to_string(),
        (None, None) => "file".to_string(),
    };
    match kind_name.as_str() {
        "file" | "s3" => {}
        other => {
            let at = kind
                .as_ref()
                .map(|(l, _)| l.clone())
                .or_else(|| url.as_ref().map(|(l, _)| l.clone()))
                .unwrap_or_else(|| here("type"));
            problems.push(
                at,
                format!("replica type {other:?} is not supported by litevisor: use file or s3"),
            );
            return None;
        }
    }
    if let Some((ploc, p)) = &replica_path
        && is_url(p)
    {
        problems.push(
            ploc.clone(),
            "a replica `path` cannot be a URL (Litestream refuses it too): use `url` instead",
        );
        return None;
    }
    if let (Some((uloc, _)), Some((ploc, _))) = (&url, &replica_path) {
        let msg = format!(
            "conflicts with `url` at line {}: give the location once",
            uloc.line.map_or(0, |l| l.0)
        );
        problems.push(ploc.clone(), msg);
        return None;
    }

    let mut replica = match (&url, kind_name.as_str()) {
        (Some((uloc, u)), _) => match replica_from_url(u, Path::new("/")) {
            Ok(r) => r,
            Err(msg) => {
                problems.push(uloc.clone(), msg);
                return None;
            }
        },
        (None, "file") => match &replica_path {
            Some((_, p)) if !p.is_empty() => Replica::File {
                path: expand_path(p),
            },
            _ => {
                problems.push(here("path"), "a file replica needs `path` (or `url`)");
                return None;
            }
        },
        // A config `path` is the key prefix as written, like Litestream's.
        (None, _) => Replica::S3(S3Options::new(
            String::new(),
            replica_path.map(|(_, p)| p).unwrap_or_default(),
        )),
    };
    match &mut replica {
        Replica::File { .. } => {
            // Top-level S3 defaults do not concern a file replica; its own S3 keys are a mistake.
            if had_bucket {
                problems.push(here("bucket"), "`bucket` applies only to s3 replicas");
            }
        }
        Replica::S3(s3) => {
            let bucket = &mut s3.bucket;
            if url.is_some() && had_bucket {
                problems.push(
                    here("bucket"),
                    "conflicts with `url`: give the location once",
                );
                return None;
            }
            // A top-level default `bucket` does not override a replica's own `url`.
            if let Some(b) = keys.bucket
                && url.is_none()
            {
                *bucket = b;
            }
            if bucket.is_empty() {
                problems.push(here("bucket"), "an s3 replica needs `bucket` (or `url`)");
                return None;
            }
            if is_arn(bucket) {
                problems.push(here("bucket"), ARN_REFUSED);
                return None;
            }
        }
    }
    if let Replica::S3(s3) = &mut replica {
        if let Some(e) = keys.endpoint {
            s3.endpoint = Some(endpoint_with_scheme(&e));
        }
        if keys.region.is_some() {
            s3.region = keys.region;
        }
        if keys.force_path_style.is_some() {
            s3.force_path_style = keys.force_path_style;
        }
        if let Some(v) = keys.skip_verify {
            s3.skip_verify = v;
        }
        if keys.part_size.is_some() {
            s3.part_size = keys.part_size;
        }
        if let Some(n) = keys.concurrency {
            s3.concurrency = Some(usize::try_from(n).unwrap_or(usize::MAX));
        }
        if keys.storage_class.is_some() {
            s3.storage_class = keys.storage_class;
        }
        // Keys in the file win over the environment (the S3 client falls back to it when unset).
        s3.access_key_id = keys.access_key_id.map(Secret::new);
        s3.secret_access_key = keys.secret_access_key.map(Secret::new);
    }
    // Litestream checks each replica after the top-level defaults are applied, so a top-level 0
    // fails only when a replica inherits it (reported once, where it is set).
    if let Some((loc, d)) = &keys.sync_interval
        && d.is_zero()
    {
        problems.push(
            loc.clone(),
            "must be more than 0 (Litestream refuses 0 too)",
        );
        return None;
    }
    Some((replica, keys.sync_interval.map(|(_, d)| d)))
}

fn m_path(loc: &Loc, key: &str) -> String {
    join(loc.key.as_deref().unwrap_or(""), key)
}
