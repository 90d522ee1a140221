//! Replica location parsing: `file:///path`, plain paths and `s3://bucket/path?...`, with the same string
//! logic as Litestream's `replica_url.go` so that a URL names the same objects in both tools.

use std::fmt;
use std::path::PathBuf;

use super::s3::{S3Options, endpoint_with_scheme};

/// Where a replica lives, as named on the command line or in the config.
// Parsed once per replica named: the S3 variant's size costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplicaUrl {
    File(PathBuf),
    /// An S3 replica's location and the URL's query settings; no credentials (Litestream takes
    /// those from the environment or the config, never from a URL).
    S3(S3Options),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid replica URL {url}: {reason}")]
pub struct UrlError {
    /// The URL with any `user:password@` removed.
    pub url: String,
    pub reason: String,
}

/// Litestream's `IsURL`: `^\w+://`. Anything else is a path.
pub fn is_url(s: &str) -> bool {
    match s.find("://") {
        Some(i) if i > 0 => s[..i]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_'),
        _ => false,
    }
}

impl ReplicaUrl {
    pub fn parse(s: &str) -> Result<ReplicaUrl, UrlError> {
        let err = |reason: &str| UrlError {
            url: redact(s),
            reason: reason.to_string(),
        };
        if !is_url(s) {
            if s.is_empty() {
                return Err(err("empty path"));
            }
            return Ok(ReplicaUrl::File(PathBuf::from(s)));
        }
        let (scheme, rest) = s.split_once("://").ok_or_else(|| err("missing scheme"))?;
        match scheme.to_ascii_lowercase().as_str() {
            "file" => {
                // Go: the scheme is dropped and the rest re-serialized, so `file://host/p` means `/host/p`.
                let rest = rest.split(['?', '#']).next().unwrap_or("");
                let path = clean_path(&format!("/{}", rest.trim_start_matches('/')));
                if rest.is_empty() {
                    return Err(err("file replica path required"));
                }
                Ok(ReplicaUrl::File(PathBuf::from(path)))
            }
            "s3" if is_arn(rest) => Err(err(ARN_REFUSED)),
            "s3" => parse_s3(rest).map(ReplicaUrl::S3).map_err(|r| err(&r)),
            other => Err(err(&format!("unsupported replica URL scheme {other:?}"))),
        }
    }
}

impl fmt::Display for ReplicaUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplicaUrl::File(p) => write!(f, "file://{}", p.display()),
            ReplicaUrl::S3(s3) => write!(f, "s3://{}/{}", s3.bucket, s3.path),
        }
    }
}

/// Why an S3 access-point ARN (`s3://arn:aws:s3:REGION:ACCOUNT:accesspoint/NAME/...`, or as a
/// `bucket`) is refused: litevisor's S3 client addresses buckets only, and taking the ARN for a
/// bucket name would retry a request that can never succeed.
pub const ARN_REFUSED: &str = "S3 access-point ARNs are not supported by litevisor: use the access point's alias (NAME-...-s3alias) as the bucket, or the bucket itself";

/// An Amazon resource name where a bucket is expected.
pub fn is_arn(bucket_or_rest: &str) -> bool {
    bucket_or_rest
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case("arn:"))
}

fn parse_s3(rest: &str) -> Result<S3Options, String> {
    let (before_query, query) = match rest.split_once('?') {
        Some((a, q)) => (a, q),
        None => (rest, ""),
    };
    let before_query = before_query.split('#').next().unwrap_or("");
    let (authority, raw_path) = match before_query.find('/') {
        Some(i) => (&before_query[..i], &before_query[i..]),
        None => (before_query, ""),
    };
    // Credentials in the authority are ignored (and never logged), as in Litestream.
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let mut url = S3Options {
        path: clean_path(&percent_decode(raw_path))
            .trim_start_matches('/')
            .to_string(),
        ..S3Options::default()
    };
    parse_s3_host(host, &mut url);

    let query = parse_query(query);
    let get = |keys: &[&str]| {
        keys.iter().find_map(|k| {
            query
                .iter()
                .find(|(qk, v)| qk == k && !v.is_empty())
                .map(|(_, v)| v.clone())
        })
    };
    let get_bool = |keys: &[&str]| {
        get(keys).map(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "t" | "yes"))
    };
    let get_int = |keys: &[&str]| -> Result<Option<u64>, String> {
        match get(keys) {
            None => Ok(None),
            Some(v) => match v.parse::<u64>() {
                Ok(n) if n > 0 => Ok(Some(n)),
                _ => Err(format!(
                    "invalid value for query parameter {:?}: {v:?} (must be a positive integer)",
                    keys[0]
                )),
            },
        }
    };

    // An endpoint turns path-style addressing on unless the URL says otherwise (the `None` default
    // of `S3Options::effective_force_path_style`).
    if let Some(endpoint) = get(&["endpoint"]) {
        url.endpoint = Some(endpoint_with_scheme(&endpoint));
    }
    if let Some(region) = get(&["region"]) {
        url.region = Some(region);
    }
    if let Some(v) = get_bool(&["forcePathStyle", "force-path-style"]) {
        url.force_path_style = Some(v);
    }
    url.skip_verify = get_bool(&["skipVerify", "skip-verify"]).unwrap_or(false);
    // `signPayload` and `requireContentMD5` are accepted for compatibility and ignored: litevisor's
    // S3 client has no such switches.
    url.concurrency = get_int(&["concurrency"])?.map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    url.part_size = get_int(&["partSize", "part-size"])?;
    url.storage_class = get(&["storageClass", "storage-class"]);
    if url.bucket.is_empty() {
        return Err("bucket required for s3 replica URL".to_string());
    }
    Ok(url)
}

/// Litestream's `ParseHost` for the common shapes: `bucket.host:port` (MinIO), AWS virtual-host names
/// `bucket.s3[.region].amazonaws.com`, otherwise the host is the bucket.
fn parse_s3_host(host: &str, url: &mut S3Options) {
    if host.contains(':') && !host.contains(".com") {
        match host.split_once('.') {
            Some((bucket, endpoint)) => {
                url.bucket = bucket.to_string();
                url.endpoint = Some(format!("http://{endpoint}"));
                url.region = Some("us-east-1".to_string());
            }
            None => url.endpoint = Some(format!("http://{host}")),
        }
        url.force_path_style = Some(true);
        return;
    }
    if let Some(prefix) = host.strip_suffix(".amazonaws.com") {
        // `^(.+)\.s3(?:\.([^.]+))?\.amazonaws\.com$`: the greedy bucket group prefers the last `.s3`.
        if let Some(bucket) = prefix.strip_suffix(".s3").filter(|b| !b.is_empty()) {
            url.bucket = bucket.to_string();
            return;
        }
        if let Some((left, region)) = prefix.rsplit_once('.')
            && !region.is_empty()
            && let Some(bucket) = left.strip_suffix(".s3").filter(|b| !b.is_empty())
        {
            url.bucket = bucket.to_string();
            url.region = Some(region.to_string());
            return;
        }
    }
    url.bucket = host.to_string();
}

fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split(['&', ';'])
        .filter(|kv| !kv.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (
                percent_decode(&k.replace('+', " ")),
                percent_decode(&v.replace('+', " ")),
            ),
            None => (percent_decode(kv), String::new()),
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex_val(b[i + 1]), hex_val(b[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// Go's `path.Clean`: lexical, `/`-separated; `""` becomes `"."`.
pub fn clean_path(p: &str) -> String {
    if p.is_empty() {
        return ".".to_string();
    }
    let rooted = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

/// The URL with any `user[:password]@` userinfo replaced by `***@`, safe for logs and errors.
pub fn redact(s: &str) -> String {
    let Some((scheme, rest)) = s.split_once("://") else {
        return s.to_string();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3(s: &str) -> S3Options {
        match ReplicaUrl::parse(s).unwrap() {
            ReplicaUrl::S3(u) => u,
            other => panic!("not s3: {other:?}"),
        }
    }

    #[test]
    fn file_urls_and_paths() {
        assert_eq!(
            ReplicaUrl::parse("file:///tmp/r").unwrap(),
            ReplicaUrl::File("/tmp/r".into())
        );
        assert_eq!(
            ReplicaUrl::parse("file:///tmp/r/../x/").unwrap(),
            ReplicaUrl::File("/tmp/x".into())
        );
        assert_eq!(
            ReplicaUrl::parse("file:///tmp/r?x=1").unwrap(),
            ReplicaUrl::File("/tmp/r".into())
        );
        assert_eq!(
            ReplicaUrl::parse("/abs/p").unwrap(),
            ReplicaUrl::File("/abs/p".into())
        );
        assert_eq!(
            ReplicaUrl::parse("rel/p").unwrap(),
            ReplicaUrl::File("rel/p".into())
        );
        assert!(ReplicaUrl::parse("file://").is_err());
        assert!(
            ReplicaUrl::parse("gs://b/p")
                .unwrap_err()
                .reason
                .contains("unsupported")
        );
    }

    #[test]
    fn s3_path_cleaning_matches_litestream() {
        assert_eq!(s3("s3://b/db").path, "db");
        assert_eq!(s3("s3://b").path, ".");
        assert_eq!(s3("s3://b/").path, "");
        assert_eq!(s3("s3://b//a/./c/../d/").path, "a/d");
        assert_eq!(s3("s3://b/a%20b").path, "a b");
        assert_eq!(s3("s3://b/db").bucket, "b");
    }

    #[test]
    fn s3_query_keys_both_spellings() {
        let u = s3("s3://b/p?endpoint=localhost:9000&region=eu-1&skip-verify=true&part-size=100");
        assert_eq!(u.endpoint.as_deref(), Some("http://localhost:9000"));
        assert!(
            u.effective_force_path_style(),
            "custom endpoint defaults to path style"
        );
        assert_eq!(u.region.as_deref(), Some("eu-1"));
        assert!(u.skip_verify);
        assert_eq!(u.part_size, Some(100));
        let u = s3("s3://b/p?endpoint=https://x.example&forcePathStyle=false&skipVerify=false");
        assert!(!u.effective_force_path_style());
        assert!(!u.skip_verify);
        assert_eq!(u.endpoint.as_deref(), Some("https://x.example"));
        assert!(ReplicaUrl::parse("s3://b/p?concurrency=0").is_err());
    }

    #[test]
    fn s3_hosts() {
        let u = s3("s3://mybkt.s3.us-west-2.amazonaws.com/db");
        assert_eq!(
            (u.bucket.as_str(), u.region.as_deref()),
            ("mybkt", Some("us-west-2"))
        );
        let u = s3("s3://mybkt.s3.amazonaws.com/db");
        assert_eq!((u.bucket.as_str(), u.region), ("mybkt", None));
        let u = s3("s3://bkt.localhost:9000/db");
        assert_eq!(
            (u.bucket.as_str(), u.endpoint.as_deref()),
            ("bkt", Some("http://localhost:9000"))
        );
        assert!(u.effective_force_path_style());
    }

    #[test]
    fn secrets_are_redacted() {
        assert_eq!(redact("s3://key:secret@bucket/p"), "s3://***@bucket/p");
        assert_eq!(redact("s3://bucket/p@x"), "s3://bucket/p@x");
        let e = ReplicaUrl::parse("ftp://u:hunter2@h/x").unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        // Userinfo never becomes the bucket.
        assert_eq!(s3("s3://u:pw@bkt/p").bucket, "bkt");
    }

    #[test]
    fn is_url_like_litestream() {
        assert!(is_url("s3://b"));
        assert!(is_url("file:///x"));
        assert!(!is_url("/x"));
        assert!(!is_url("://x"));
        assert!(!is_url("a b://x"));
    }
}
