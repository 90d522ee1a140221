//! The one S3 settings type, [`S3Options`]: what a replica URL, litevisor.toml, litestream.yml and
//! the environment say about an S3 replica, held by [`super::Replica::S3`] and handed as is to the S3
//! client. `None` fields mean "Litestream's default", resolved in one place (the `effective_*`
//! methods). Also the [`Secret`] wrapper that keeps keys out of logs and Debug output, and the one
//! rule that gives a scheme-less endpoint its scheme ([`endpoint_with_scheme`]).

use std::fmt;
use std::time::Duration;

/// Litestream's default multipart part size (5 MiB); objects below it go up as one PutObject.
pub const DEFAULT_PART_SIZE: u64 = 5 * 1024 * 1024;
/// S3's minimum part size: smaller configured values are raised to it.
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// Parts in flight per multipart upload. Memory of one upload is about `(concurrency + 1) * part_size`.
pub const DEFAULT_CONCURRENCY: usize = 4;

/// A credential that prints as `***` in Debug and Display, so it can never leak through a log line,
/// an error message or `{:?}` of a containing struct.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    /// The secret itself: only for handing to the request signer.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Secret {
        Secret(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Secret {
        Secret(s.to_string())
    }
}

/// Everything an S3 replica client needs. `None` means "Litestream's default": see each field.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct S3Options {
    pub bucket: String,
    /// Key prefix, used verbatim: `<path>/<level %04x>/<min>-<max>.ltx`. URL paths arrive cleaned by
    /// [`super::ReplicaUrl`] (`s3://b` gives `"."`); a config `path` is taken as written, like Litestream.
    pub path: String,
    /// Default: from the endpoint (`us-east-1` when one is set), else `AWS_REGION`/the profile, else
    /// the bucket's own region (GetBucketLocation), else `us-east-1`.
    pub region: Option<String>,
    /// `http(s)://host[:port]` of an S3-compatible server; None for AWS.
    pub endpoint: Option<String>,
    /// Default: true when an endpoint is set, otherwise virtual-hosted style.
    pub force_path_style: Option<bool>,
    /// Accept any TLS certificate (self-signed MinIO and the like).
    pub skip_verify: bool,
    /// Explicit keys; when absent the standard AWS chain is used (env, profile, web identity, IMDS),
    /// with `LITESTREAM_*` keys standing in for unset `AWS_*` ones.
    pub access_key_id: Option<Secret>,
    pub secret_access_key: Option<Secret>,
    /// Default [`DEFAULT_PART_SIZE`]; raised to [`MIN_PART_SIZE`].
    pub part_size: Option<u64>,
    /// Default [`DEFAULT_CONCURRENCY`].
    pub concurrency: Option<usize>,
    /// `storage-class` of uploaded objects (e.g. `STANDARD_IA`); None leaves the bucket default.
    pub storage_class: Option<String>,
    /// Network limits, so an unreachable replica fails a call instead of blocking it forever.
    pub timeouts: S3Timeouts,
}

/// Limits on every S3 call. The defaults suit a replica across the internet; tests shorten them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Timeouts {
    /// TCP + TLS connect.
    pub connect: Duration,
    /// Waiting for response headers, and for each body chunk of a download.
    pub read: Duration,
    /// One attempt of one operation (an UploadPart of `part_size` bytes must fit in it).
    pub attempt: Duration,
    /// Attempts per operation, with exponential back-off and jitter in between.
    pub max_attempts: u32,
    /// First back-off; it doubles per attempt up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for S3Timeouts {
    fn default() -> S3Timeouts {
        S3Timeouts {
            connect: Duration::from_secs(10),
            read: Duration::from_secs(60),
            attempt: Duration::from_secs(300),
            max_attempts: 8,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(20),
        }
    }
}

impl fmt::Debug for S3Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Options")
            .field("bucket", &self.bucket)
            .field("path", &self.path)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("force_path_style", &self.force_path_style)
            .field("skip_verify", &self.skip_verify)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key)
            .field("part_size", &self.part_size)
            .field("concurrency", &self.concurrency)
            .field("storage_class", &self.storage_class)
            .field("timeouts", &self.timeouts)
            .finish()
    }
}

impl S3Options {
    /// An S3 replica at `bucket`/`path` with every other setting left to its default (credentials
    /// from the environment).
    pub fn new(bucket: impl Into<String>, path: impl Into<String>) -> S3Options {
        S3Options {
            bucket: bucket.into(),
            path: path.into(),
            ..S3Options::default()
        }
    }

    pub fn effective_part_size(&self) -> u64 {
        self.part_size
            .unwrap_or(DEFAULT_PART_SIZE)
            .max(MIN_PART_SIZE)
    }

    pub fn effective_concurrency(&self) -> usize {
        self.concurrency.unwrap_or(DEFAULT_CONCURRENCY).clamp(1, 64)
    }

    pub fn effective_force_path_style(&self) -> bool {
        self.force_path_style.unwrap_or(self.endpoint.is_some())
    }
}

/// `host[:port]` without a scheme gets one, by Litestream's rule for every endpoint (URL query,
/// config key, `LITESTREAM_S3_ENDPOINT`): plain HTTP for local and private-network hosts
/// (`localhost`, `127.0.0.1`, `10.*`, `172.16-31.*`, `192.168.*`, `*.local`, `*.localhost`), HTTPS
/// for everything else.
pub fn endpoint_with_scheme(endpoint: &str) -> String {
    if endpoint.starts_with("http://") || endpoint.starts_with("https://") {
        return endpoint.to_string();
    }
    let host = endpoint
        .rsplit_once(':')
        .map_or(endpoint, |(h, _)| h)
        .to_ascii_lowercase();
    let private_172 = host
        .strip_prefix("172.")
        .and_then(|rest| rest.split('.').next()?.parse::<u8>().ok())
        .is_some_and(|second| (16..=31).contains(&second));
    let local = host == "localhost"
        || host == "127.0.0.1"
        || host.starts_with("192.168.")
        || host.starts_with("10.")
        || private_172
        || host.ends_with(".local")
        || host.ends_with(".localhost");
    format!("{}://{endpoint}", if local { "http" } else { "https" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let o = S3Options {
            access_key_id: Some("AKIDVISIBLE".into()),
            secret_access_key: Some(Secret::new("hunter2")),
            ..S3Options::new("b", "p")
        };
        let dbg = format!("{o:?}");
        assert!(
            !dbg.contains("hunter2") && !dbg.contains("AKIDVISIBLE"),
            "{dbg}"
        );
        assert_eq!(Secret::new("x").to_string(), "***");
        assert_eq!(Secret::new("x").expose(), "x");
    }

    #[test]
    fn defaults_resolve_in_one_place() {
        let minio = S3Options {
            endpoint: Some("http://127.0.0.1:9000".into()),
            part_size: Some(1),
            concurrency: Some(1000),
            ..S3Options::new("b", "db")
        };
        assert!(minio.effective_force_path_style(), "on with an endpoint");
        assert_eq!(
            minio.effective_part_size(),
            MIN_PART_SIZE,
            "raised to S3's minimum"
        );
        assert_eq!(minio.effective_concurrency(), 64, "clamped");
        let aws = S3Options::new("b", "db");
        assert!(!aws.effective_force_path_style());
        assert_eq!(aws.effective_concurrency(), DEFAULT_CONCURRENCY);
        assert_eq!(aws.effective_part_size(), DEFAULT_PART_SIZE);
    }

    #[test]
    fn one_scheme_rule_for_every_endpoint() {
        for (given, want) in [
            ("localhost:9000", "http://localhost:9000"),
            ("127.0.0.1:9000", "http://127.0.0.1:9000"),
            ("192.168.1.5:9000", "http://192.168.1.5:9000"),
            ("10.0.0.7", "http://10.0.0.7"),
            ("172.16.0.1:9000", "http://172.16.0.1:9000"),
            ("172.31.9.9", "http://172.31.9.9"),
            ("172.32.0.1", "https://172.32.0.1"),
            ("172.2.0.1", "https://172.2.0.1"),
            ("minio.local:9000", "http://minio.local:9000"),
            ("s3.example.com", "https://s3.example.com"),
            ("fly.storage.tigris.dev", "https://fly.storage.tigris.dev"),
            ("http://x:1", "http://x:1"),
            ("https://192.168.1.5", "https://192.168.1.5"),
        ] {
            assert_eq!(endpoint_with_scheme(given), want, "{given}");
        }
    }
}
