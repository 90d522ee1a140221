//! What an S3 replica is configured with: the plain [`S3Options`] struct (filled from a URL, the
//! config file or the environment), the [`Secret`] wrapper that keeps the secret key out of logs and
//! Debug output, and Litestream's environment conventions (`LITESTREAM_ACCESS_KEY_ID`,
//! `LITESTREAM_SECRET_ACCESS_KEY`, `LITESTREAM_S3_ENDPOINT`).

use std::fmt;
use std::time::Duration;

use super::super::url::S3Url;

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

/// Everything an S3 replica client needs. `None` means "Litestream's default": see each field.
#[derive(Clone, Default)]
pub struct S3Options {
    pub bucket: String,
    /// Key prefix, used verbatim: `<path>/<level %04x>/<min>-<max>.ltx`. URL paths arrive cleaned by
    /// [`S3Url`] (`s3://b` gives `"."`); a config `path` is taken as written, like Litestream.
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
    pub access_key_id: Option<String>,
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
            .field("access_key_id", &self.access_key_id.as_ref().map(|_| "***"))
            .field("secret_access_key", &self.secret_access_key)
            .field("part_size", &self.part_size)
            .field("concurrency", &self.concurrency)
            .field("storage_class", &self.storage_class)
            .field("timeouts", &self.timeouts)
            .finish()
    }
}

impl S3Options {
    /// Options for a URL-named replica (`litevisor restore s3://...`): the URL's query settings, with
    /// `LITESTREAM_S3_ENDPOINT` as the endpoint when the URL names none (Litestream does the same for
    /// URL-built clients only; config-built clients ignore it).
    pub fn from_url(url: &S3Url) -> S3Options {
        let mut opts = S3Options {
            bucket: url.bucket.clone(),
            path: url.path.clone(),
            region: url.region.clone(),
            endpoint: url.endpoint.clone(),
            force_path_style: url.endpoint.as_ref().map(|_| url.force_path_style),
            skip_verify: url.skip_verify,
            part_size: url.part_size,
            concurrency: url.concurrency.map(|c| c.min(64) as usize),
            storage_class: url.storage_class.clone(),
            ..S3Options::default()
        };
        if url.force_path_style {
            opts.force_path_style = Some(true);
        }
        if opts.endpoint.is_none()
            && let Some(endpoint) = env_nonempty("LITESTREAM_S3_ENDPOINT")
        {
            opts.endpoint = Some(with_scheme(endpoint));
            opts.force_path_style.get_or_insert(true);
        }
        opts
    }

    pub(crate) fn effective_part_size(&self) -> u64 {
        self.part_size
            .unwrap_or(DEFAULT_PART_SIZE)
            .max(MIN_PART_SIZE)
    }

    pub(crate) fn effective_concurrency(&self) -> usize {
        self.concurrency.unwrap_or(DEFAULT_CONCURRENCY).clamp(1, 64)
    }

    pub(crate) fn effective_force_path_style(&self) -> bool {
        self.force_path_style.unwrap_or(self.endpoint.is_some())
    }
}

/// `host:port` without a scheme gets one: plain HTTP for loopback names, HTTPS otherwise.
fn with_scheme(endpoint: String) -> String {
    if endpoint.contains("://") {
        return endpoint;
    }
    let host = endpoint
        .rsplit_once(':')
        .map_or(endpoint.as_str(), |(h, _)| h);
    if host == "localhost" || host.starts_with("127.") {
        format!("http://{endpoint}")
    } else {
        format!("https://{endpoint}")
    }
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Litestream's `applyLitestreamEnv`: copies `LITESTREAM_ACCESS_KEY_ID` / `LITESTREAM_SECRET_ACCESS_KEY`
/// into `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` when those are unset.
///
/// Call it at process start, before any thread exists (it mutates the environment). It is optional:
/// the S3 client resolves the same precedence itself without touching the environment (see
/// [`litestream_env_keys`]); calling it only matters for code that reads `AWS_*` directly, and it
/// makes supervised children inherit the `AWS_*` copies as they would under Litestream's `-exec`.
pub fn apply_litestream_env() {
    for (from, to) in [
        ("LITESTREAM_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"),
        ("LITESTREAM_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"),
    ] {
        if env_nonempty(to).is_none()
            && let Some(v) = env_nonempty(from)
        {
            // SAFETY: documented as a process-start call made before other threads exist.
            unsafe { std::env::set_var(to, v) };
        }
    }
}

/// The keys the environment provides once Litestream's copy rule is applied, when at least one of them
/// comes from a `LITESTREAM_*` variable (otherwise None: the AWS chain reads `AWS_*` itself).
pub(crate) fn litestream_env_keys() -> Option<(String, Secret, Option<String>)> {
    let id_aws = env_nonempty("AWS_ACCESS_KEY_ID");
    let secret_aws = env_nonempty("AWS_SECRET_ACCESS_KEY");
    let id_ls = env_nonempty("LITESTREAM_ACCESS_KEY_ID");
    let secret_ls = env_nonempty("LITESTREAM_SECRET_ACCESS_KEY");
    let uses_litestream =
        (id_aws.is_none() && id_ls.is_some()) || (secret_aws.is_none() && secret_ls.is_some());
    if !uses_litestream {
        return None;
    }
    let id = id_aws.or(id_ls)?;
    let secret = secret_aws.or(secret_ls)?;
    Some((id, Secret(secret), env_nonempty("AWS_SESSION_TOKEN")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let o = S3Options {
            bucket: "b".into(),
            access_key_id: Some("AKIDVISIBLE".into()),
            secret_access_key: Some(Secret::new("hunter2")),
            ..S3Options::default()
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
    fn url_options_and_defaults() {
        let url = S3Url {
            bucket: "b".into(),
            path: "db".into(),
            endpoint: Some("http://127.0.0.1:9000".into()),
            force_path_style: true,
            part_size: Some(1),
            ..S3Url::default()
        };
        let o = S3Options::from_url(&url);
        assert_eq!(o.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert!(o.effective_force_path_style());
        assert_eq!(
            o.effective_part_size(),
            MIN_PART_SIZE,
            "raised to S3's minimum"
        );
        assert_eq!(
            with_scheme("localhost:9000".into()),
            "http://localhost:9000"
        );
        assert_eq!(
            with_scheme("s3.example.com".into()),
            "https://s3.example.com"
        );
        assert_eq!(with_scheme("http://x:1".into()), "http://x:1");
        let aws = S3Options {
            bucket: "b".into(),
            ..S3Options::default()
        };
        assert!(!aws.effective_force_path_style());
        assert_eq!(aws.effective_concurrency(), DEFAULT_CONCURRENCY);
    }
}
