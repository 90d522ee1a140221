//! The S3 replica backend: LTX files as objects `<path>/<level %04x>/<min>-<max>.ltx` with metadata
//! `litestream-timestamp` (the LTX header time, Go RFC3339Nano UTC), byte-for-byte the layout of
//! Litestream's `s3/replica_client.go`, so either tool can restore the other's replica.
//!
//! The [`ReplicaClient`] trait is synchronous and called from blocking threads. Every call blocks on
//! one process-wide tokio runtime (two worker threads, created lazily on the first S3 call and shared
//! by all S3 replicas). Never call these methods, or read a reader they return, from inside an async
//! context: `block_on` would panic there. Nothing runs in the background between calls: the client
//! is built on first use, and tasks exist only while a transfer does.
//!
//! Failures: the SDK retries 5xx, throttling, timeouts and connection errors with exponential back-off
//! and jitter; downloads additionally resume a body broken mid-way (see `download`). Every call has
//! connect/read/attempt timeouts ([`S3Timeouts`]), so a replica that is down fails the call rather
//! than blocking the caller's upload loop.

mod download;
mod http;
mod options;
mod upload;

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_config::BehaviorVersion;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use tokio::runtime::Runtime;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

// The configuration surface for the config and CLI layers.
pub use crate::config::s3::{
    DEFAULT_CONCURRENCY, DEFAULT_PART_SIZE, S3Options, S3Timeouts, Secret,
};
pub use options::{apply_litestream_env, endpoint_from_env};

use super::{FileInfo, ReplicaClient, ReplicaError, rfc3339};
use crate::replication::ltx;

/// Object metadata key holding the LTX header timestamp (Litestream's `litestream-timestamp`).
pub const TIMESTAMP_METADATA: &str = "litestream-timestamp";
/// Parallel HEADs when reading timestamps from metadata (Litestream uses 50).
const HEAD_CONCURRENCY: usize = 32;
/// GETs opened in parallel by [`ReplicaClient::open_ltx_many`].
const OPEN_CONCURRENCY: usize = 16;
/// DeleteObjects accepts at most this many keys.
const DELETE_BATCH: usize = 1000;

/// An S3 (or S3-compatible) replica. Cheap to create: no I/O until the first call.
pub struct S3Replica {
    opts: S3Options,
    client: Mutex<Option<Client>>,
}

impl fmt::Debug for S3Replica {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // S3Options' Debug already hides the keys.
        f.debug_struct("S3Replica")
            .field("opts", &self.opts)
            .finish()
    }
}

fn runtime() -> Result<&'static Runtime, ReplicaError> {
    static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("litevisor-s3")
                .enable_io()
                .enable_time()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| ReplicaError::Unsupported(format!("cannot start the S3 runtime: {e}")))
}

impl S3Replica {
    pub fn new(opts: S3Options) -> S3Replica {
        S3Replica {
            opts,
            client: Mutex::new(None),
        }
    }

    /// The object key of one LTX file, exactly as Litestream builds it (string concatenation).
    pub fn key(&self, level: u8, min: u64, max: u64) -> String {
        format!(
            "{}/{:04x}/{}",
            self.opts.path,
            level,
            ltx::file_name(min, max)
        )
    }

    fn level_prefix(&self, level: u8) -> String {
        format!("{}/{:04x}/", self.opts.path, level)
    }

    fn url(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.opts.bucket)
    }

    fn client(&self) -> Result<(&'static Runtime, Client), ReplicaError> {
        let rt = runtime()?;
        let mut slot = self.client.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = slot.as_ref() {
            return Ok((rt, c.clone()));
        }
        if let Some(why) = rt.block_on(unknown_endpoint_host(&self.opts)) {
            return Err(ReplicaError::Permanent {
                code: Permanent::UnknownHost.code(),
                message: Permanent::UnknownHost.describe(&self.opts, &why),
            });
        }
        let client = rt
            .block_on(build_client(&self.opts))
            .map_err(|msg| ReplicaError::Io {
                op: "s3 client setup",
                path: PathBuf::from(format!("s3://{}/{}", self.opts.bucket, self.opts.path)),
                cause: io::Error::other(msg),
            })?;
        *slot = Some(client.clone());
        Ok((rt, client))
    }

    fn fail(&self, e: S3Error) -> ReplicaError {
        if e.not_found {
            return ReplicaError::NotFound(self.url(&e.key));
        }
        if let Some(permanent) = e.permanent {
            return ReplicaError::Permanent {
                code: permanent.code(),
                message: permanent.describe(&self.opts, &e.msg),
            };
        }
        ReplicaError::Io {
            op: e.op,
            path: PathBuf::from(self.url(&e.key)),
            cause: io::Error::new(e.kind, e.msg),
        }
    }

    async fn list(
        client: &Client,
        bucket: &str,
        prefix: &str,
        level: u8,
    ) -> Result<Vec<(FileInfo, String)>, S3Error> {
        let mut files = Vec::new();
        let mut pages = client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| sdk_error("s3 ListObjectsV2", prefix, e))?;
            for obj in page.contents() {
                let Some(key) = obj.key() else { continue };
                let Some((min_txid, max_txid)) =
                    key.strip_prefix(prefix).and_then(ltx::parse_file_name)
                else {
                    continue;
                };
                let created_at = obj
                    .last_modified()
                    .and_then(|t| SystemTime::try_from(*t).ok())
                    .unwrap_or(UNIX_EPOCH);
                let size = obj.size().unwrap_or(0).max(0) as u64;
                files.push((
                    FileInfo {
                        level,
                        min_txid,
                        max_txid,
                        size,
                        created_at,
                    },
                    key.to_string(),
                ));
            }
        }
        files.sort_by_key(|(f, _)| (f.min_txid, f.max_txid));
        Ok(files)
    }
}

async fn build_client(opts: &S3Options) -> Result<Client, String> {
    if opts.bucket.is_empty() {
        return Err("bucket required".to_string());
    }
    let t = &opts.timeouts;
    let http = http::http_client(opts.skip_verify, t.connect, t.read)?;
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(t.connect)
        .read_timeout(t.read)
        .operation_attempt_timeout(t.attempt)
        .build();
    let retry = RetryConfig::standard()
        .with_max_attempts(t.max_attempts.max(1))
        .with_initial_backoff(t.initial_backoff)
        .with_max_backoff(t.max_backoff);
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .timeout_config(timeouts)
        .retry_config(retry);
    // Litestream: an explicit region wins; with a custom endpoint the default is us-east-1.
    let region = opts
        .region
        .clone()
        .or_else(|| opts.endpoint.as_ref().map(|_| "us-east-1".to_string()));
    if let Some(r) = &region {
        loader = loader.region(Region::new(r.clone()));
    }
    match (&opts.access_key_id, &opts.secret_access_key) {
        (Some(id), Some(secret)) => {
            loader = loader.credentials_provider(Credentials::new(
                id.expose(),
                secret.expose(),
                None,
                None,
                "litevisor-config",
            ));
        }
        (Some(_), None) | (None, Some(_)) => {
            return Err("access-key-id and secret-access-key must be set together".to_string());
        }
        (None, None) => {
            if let Some((id, secret, token)) = options::litestream_env_keys() {
                loader = loader.credentials_provider(Credentials::new(
                    id,
                    secret.expose(),
                    token,
                    None,
                    "litestream-env",
                ));
            }
        }
    }
    let sdk = loader.load().await;
    let mut conf = aws_sdk_s3::config::Builder::from(&sdk)
        .force_path_style(opts.effective_force_path_style())
        // Only what the API requires: S3-compatible servers vary in their support for the new
        // default checksums (aws-chunked trailers).
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
    if let Some(endpoint) = &opts.endpoint {
        conf = conf.endpoint_url(endpoint);
    }
    if sdk.region().is_none() {
        // Like Litestream: ask where the bucket lives (the request works from us-east-1).
        let probe = Client::from_conf(conf.clone().region(Region::new("us-east-1")).build());
        let found = match probe
            .get_bucket_location()
            .bucket(&opts.bucket)
            .send()
            .await
        {
            Ok(out) => match out.location_constraint().map(|c| c.as_str().to_string()) {
                None => "us-east-1".to_string(),
                Some(c) if c.is_empty() => "us-east-1".to_string(),
                Some(c) if c == "EU" => "eu-west-1".to_string(),
                Some(c) => c,
            },
            Err(e) => {
                tracing::debug!(bucket = %opts.bucket, error = %error_chain(&e), "bucket region lookup failed; using us-east-1");
                "us-east-1".to_string()
            }
        };
        conf = conf.region(Region::new(found));
    }
    Ok(Client::from_conf(conf.build()))
}

/// A failed S3 call, before it is named with the bucket.
pub(crate) struct S3Error {
    op: &'static str,
    key: String,
    kind: io::ErrorKind,
    msg: String,
    not_found: bool,
    /// Set when retrying cannot help.
    permanent: Option<Permanent>,
}

/// The S3 failures that retrying cannot fix: the bucket, the credentials or the endpoint must change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Permanent {
    NoSuchBucket,
    AccessDenied,
    InvalidAccessKeyId,
    SignatureDoesNotMatch,
    NoCredentials,
    UnknownHost,
}

impl Permanent {
    fn code(self) -> &'static str {
        match self {
            Permanent::NoSuchBucket => "NoSuchBucket",
            Permanent::AccessDenied => "AccessDenied",
            Permanent::InvalidAccessKeyId => "InvalidAccessKeyId",
            Permanent::SignatureDoesNotMatch => "SignatureDoesNotMatch",
            Permanent::NoCredentials => "NoCredentials",
            Permanent::UnknownHost => "UnknownHost",
        }
    }

    fn from_code(code: &str) -> Option<Permanent> {
        Some(match code {
            "NoSuchBucket" => Permanent::NoSuchBucket,
            "AccessDenied" | "AllAccessDisabled" => Permanent::AccessDenied,
            "InvalidAccessKeyId" => Permanent::InvalidAccessKeyId,
            "SignatureDoesNotMatch" => Permanent::SignatureDoesNotMatch,
            _ => return None,
        })
    }

    /// One line naming the bucket, the endpoint and the code, with what to do about it.
    fn describe(self, opts: &S3Options, detail: &str) -> String {
        let bucket = &opts.bucket;
        let at = match &opts.endpoint {
            Some(endpoint) => endpoint.clone(),
            None => format!(
                "AWS S3 ({})",
                opts.region
                    .as_deref()
                    .unwrap_or("region from the environment")
            ),
        };
        let line = match self {
            Permanent::NoSuchBucket => format!(
                "S3 error NoSuchBucket: bucket {bucket:?} does not exist at {at}: create it, or fix the bucket name"
            ),
            Permanent::AccessDenied => format!(
                "S3 error AccessDenied: {at} refused access to bucket {bucket:?}: allow s3:ListBucket, s3:GetObject, s3:PutObject and s3:DeleteObject to these credentials"
            ),
            Permanent::InvalidAccessKeyId => format!(
                "S3 error InvalidAccessKeyId: {at} does not know the access key id (bucket {bucket:?}): check AWS_ACCESS_KEY_ID / LITESTREAM_ACCESS_KEY_ID or access-key-id"
            ),
            Permanent::SignatureDoesNotMatch => format!(
                "S3 error SignatureDoesNotMatch: {at} rejected the request signature (bucket {bucket:?}): the secret access key does not match the access key id"
            ),
            Permanent::NoCredentials => format!(
                "no S3 credentials found for bucket {bucket:?} at {at}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or LITESTREAM_*), AWS_PROFILE, or access-key-id and secret-access-key in the configuration"
            ),
            Permanent::UnknownHost => format!(
                "unknown host: the S3 endpoint {at} of bucket {bucket:?} does not resolve ({}): check the endpoint",
                crate::text::cut(detail, 80)
            ),
        };
        crate::text::cut(&line, 280)
    }
}

impl fmt::Display for S3Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.op, self.key, self.msg)
    }
}

impl S3Error {
    fn new(key: &str, msg: impl Into<String>) -> S3Error {
        S3Error {
            op: "s3",
            key: key.to_string(),
            kind: io::ErrorKind::Other,
            msg: msg.into(),
            not_found: false,
            permanent: None,
        }
    }

    /// The caller's data stream failed: nothing is committed.
    fn source(key: &str, e: io::Error) -> S3Error {
        S3Error {
            op: "s3 upload (reading source)",
            key: key.to_string(),
            kind: e.kind(),
            msg: e.to_string(),
            not_found: false,
            permanent: None,
        }
    }
}

/// The resolver said the name does not exist (not that it could not ask: that passes).
fn host_unknown(text: &str) -> bool {
    text.contains("not known") || text.contains("No address associated")
}

/// A custom endpoint's host name that does not resolve, found before the SDK would retry the
/// lookup for several seconds; `None` when it resolves, when the resolver could not answer now
/// (that is worth retrying), or when there is no custom endpoint.
async fn unknown_endpoint_host(opts: &S3Options) -> Option<String> {
    let endpoint = opts.endpoint.as_deref()?;
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') && p.parse::<u16>().is_ok() => (h, p.parse().ok()?),
        _ if endpoint.starts_with("http://") => (authority, 80),
        _ => (authority, 443),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match tokio::net::lookup_host((host, port)).await {
        Err(e) if host_unknown(&e.to_string()) => Some(e.to_string()),
        _ => None,
    }
}

/// An error and its sources, Display only, joined with `: ` (a segment that repeats the previous
/// one is left out) and cut to one short line. Never a `Debug` dump: the SDK's carry whole
/// responses, and the credential chain's carry what each provider found.
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        let text = e.to_string();
        // The credential chain's message lists every provider it tried, one per line: the first
        // line says it all.
        let text = text.lines().next().unwrap_or_default().trim().to_string();
        if !text.is_empty() && parts.last().is_none_or(|p| !p.ends_with(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    crate::text::cut(&parts.join(": "), 200)
}

pub(crate) fn sdk_error<E>(op: &'static str, key: &str, err: SdkError<E>) -> S3Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = err.raw_response().map(|r| r.status().as_u16());
    let code = err
        .as_service_error()
        .and_then(|e| e.code())
        .map(str::to_string);
    let kind = match (&err, status, code.as_deref()) {
        (SdkError::TimeoutError(_), _, _) => io::ErrorKind::TimedOut,
        (SdkError::DispatchFailure(d), _, _) if d.is_timeout() => io::ErrorKind::TimedOut,
        (SdkError::DispatchFailure(_), _, _) => io::ErrorKind::ConnectionRefused,
        (_, Some(404), _) | (_, _, Some("NoSuchKey" | "NotFound")) => io::ErrorKind::NotFound,
        (_, Some(401 | 403), _) => io::ErrorKind::PermissionDenied,
        _ => io::ErrorKind::Other,
    };
    let not_found = kind == io::ErrorKind::NotFound && code.as_deref() != Some("NoSuchBucket");
    let chain = error_chain(&err);
    let mut permanent = code.as_deref().and_then(Permanent::from_code);
    if permanent.is_none() && status == Some(403) {
        // A HEAD has no body to carry a code.
        permanent = Some(Permanent::AccessDenied);
    }
    if permanent.is_none() && matches!(err, SdkError::DispatchFailure(_)) {
        if chain.contains("no credentials found")
            || chain.contains("credential provider was not enabled")
        {
            permanent = Some(Permanent::NoCredentials);
        } else if chain.contains("dns error") && host_unknown(&chain) {
            permanent = Some(Permanent::UnknownHost);
        }
    }
    let mut msg = match (&code, err.as_service_error().and_then(|e| e.message())) {
        (Some(code), Some(message)) => format!("{code}: {}", crate::text::cut(message, 120)),
        (Some(code), None) => code.clone(),
        _ => chain,
    };
    if let Some(status) = status {
        msg = format!("HTTP {status}: {msg}");
    }
    S3Error {
        op,
        key: key.to_string(),
        kind,
        msg,
        not_found,
        permanent,
    }
}

/// Exponential back-off with jitter: a random wait in `[d/2, d]` for `d = initial * 2^(attempt-1)`,
/// capped at `max`.
pub(crate) fn backoff(attempt: u32, initial: Duration, max: Duration) -> Duration {
    use std::hash::BuildHasher;
    let d = initial
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(max);
    let r = std::collections::hash_map::RandomState::new().hash_one(std::time::Instant::now());
    let frac = (r >> 11) as f64 / (1u64 << 53) as f64;
    d / 2 + d.mul_f64(frac / 2.0)
}

/// Go's `time.RFC3339Nano` in UTC: fractional seconds with trailing zeros trimmed, none when zero.
pub fn format_rfc3339_nano(t: SystemTime) -> String {
    let whole = rfc3339::format_utc(t);
    let nanos = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.subsec_nanos(),
        Err(e) => (1_000_000_000 - e.duration().subsec_nanos()) % 1_000_000_000,
    };
    if nanos == 0 {
        return whole;
    }
    let frac = format!("{nanos:09}");
    format!(
        "{}.{}Z",
        whole.trim_end_matches('Z'),
        frac.trim_end_matches('0')
    )
}

impl S3Replica {
    /// Like `ltx_files`, but each file's `created_at` is its `litestream-timestamp` metadata (the LTX
    /// header time) instead of the object's LastModified: one HEAD per file, 32 in parallel. Files
    /// without (parsable) metadata keep LastModified; files deleted in between are skipped.
    pub fn ltx_files_with_timestamps(&self, level: u8) -> Result<Vec<FileInfo>, ReplicaError> {
        let (rt, client) = self.client()?;
        let bucket = self.opts.bucket.clone();
        let prefix = self.level_prefix(level);
        rt.block_on(async move {
            let files = Self::list(&client, &bucket, &prefix, level).await?;
            let limit = Arc::new(Semaphore::new(HEAD_CONCURRENCY));
            let mut heads = JoinSet::new();
            for (i, (_, key)) in files.iter().enumerate() {
                let (client, bucket, key, limit) =
                    (client.clone(), bucket.clone(), key.clone(), limit.clone());
                heads.spawn(async move {
                    let _permit = limit.acquire_owned().await;
                    let out = client.head_object().bucket(&bucket).key(&key).send().await;
                    (i, out.map_err(|e| sdk_error("s3 HeadObject", &key, e)))
                });
            }
            let mut exact: Vec<Option<FileInfo>> =
                files.iter().map(|(f, _)| Some(f.clone())).collect();
            while let Some(joined) = heads.join_next().await {
                let (i, out) =
                    joined.map_err(|e| S3Error::new(&prefix, format!("HEAD task failed: {e}")))?;
                match out {
                    Ok(head) => {
                        let ts = head
                            .metadata()
                            .and_then(|m| m.get(TIMESTAMP_METADATA))
                            .and_then(|v| rfc3339::parse(v));
                        if let (Some(ts), Some(f)) = (ts, exact[i].as_mut()) {
                            f.created_at = ts;
                        }
                    }
                    Err(e) if e.not_found => exact[i] = None,
                    Err(e) => return Err(e),
                }
            }
            Ok(exact.into_iter().flatten().collect())
        })
        .map_err(|e| self.fail(e))
    }

    /// Opens several files at once: the GETs are issued concurrently (16 in flight) and every body is
    /// then pumped ahead of its reader into a small bounded buffer (512 chunks shared by all files,
    /// 2..16 per file), so a restore that merges many files pays a few round trips in total instead
    /// of one per file, and never waits on a per-chunk round trip.
    pub fn open_many(&self, files: &[FileInfo]) -> Result<Vec<Box<dyn Read + Send>>, ReplicaError> {
        let (rt, client) = self.client()?;
        let limit = Arc::new(Semaphore::new(OPEN_CONCURRENCY));
        let mut gets = JoinSet::new();
        for (i, f) in files.iter().enumerate() {
            let key = self.key(f.level, f.min_txid, f.max_txid);
            let (client, bucket, limit) = (client.clone(), self.opts.bucket.clone(), limit.clone());
            gets.spawn_on(
                async move {
                    let _permit = limit.acquire_owned().await;
                    let out = client.get_object().bucket(&bucket).key(&key).send().await;
                    (i, key, out)
                },
                rt.handle(),
            );
        }
        let mut readers: Vec<Option<Box<dyn Read + Send>>> =
            (0..files.len()).map(|_| None).collect();
        while let Some(joined) = rt.block_on(gets.join_next()) {
            let (i, key, out) =
                joined.map_err(|e| self.fail(S3Error::new("", format!("GET task failed: {e}"))))?;
            let out = out.map_err(|e| self.fail(sdk_error("s3 GetObject", &key, e)))?;
            readers[i] = Some(self.reader(rt, &client, key, out, download::depth_for(files.len())));
        }
        Ok(readers.into_iter().flatten().collect())
    }

    fn reader(
        &self,
        rt: &'static Runtime,
        client: &Client,
        key: String,
        out: aws_sdk_s3::operation::get_object::GetObjectOutput,
        depth: usize,
    ) -> Box<dyn Read + Send> {
        let source = download::Source {
            client: client.clone(),
            bucket: self.opts.bucket.clone(),
            key,
            etag: out.e_tag.clone(),
            len: out.content_length.and_then(|l| u64::try_from(l).ok()),
            timeouts: self.opts.timeouts.clone(),
        };
        Box::new(download::start(rt.handle(), source, out.body, depth))
    }
}

impl ReplicaClient for S3Replica {
    fn kind(&self) -> &'static str {
        "s3"
    }

    /// One ListObjectsV2 pagination of `<path>/<level %04x>/`; `created_at` is LastModified, as in
    /// Litestream's listings (see [`S3Replica::ltx_files_with_timestamps`] for the header time).
    fn ltx_files(&self, level: u8) -> Result<Vec<FileInfo>, ReplicaError> {
        let (rt, client) = self.client()?;
        let prefix = self.level_prefix(level);
        let files = rt
            .block_on(Self::list(&client, &self.opts.bucket, &prefix, level))
            .map_err(|e| self.fail(e))?;
        Ok(files.into_iter().map(|(f, _)| f).collect())
    }

    fn ltx_files_exact(&self, level: u8) -> Result<Vec<FileInfo>, ReplicaError> {
        self.ltx_files_with_timestamps(level)
    }

    /// One listing of every key under `<path>/`: a key `<path>/<rel>/<level %04x>/<file>.ltx` names
    /// the replica `<rel>`.
    fn databases_below(&self) -> Result<Vec<String>, ReplicaError> {
        let (rt, client) = self.client()?;
        let base = self.opts.path.trim_end_matches('/');
        let prefix = if base.is_empty() || base == "." {
            String::new()
        } else {
            format!("{base}/")
        };
        let bucket = self.opts.bucket.clone();
        let keys = rt
            .block_on(async {
                let mut keys = Vec::new();
                let mut pages = client
                    .list_objects_v2()
                    .bucket(&bucket)
                    .prefix(&prefix)
                    .into_paginator()
                    .send();
                while let Some(page) = pages.next().await {
                    let page = page.map_err(|e| sdk_error("s3 ListObjectsV2", &prefix, e))?;
                    keys.extend(
                        page.contents()
                            .iter()
                            .filter_map(|o| o.key().map(str::to_owned)),
                    );
                }
                Ok::<_, S3Error>(keys)
            })
            .map_err(|e| self.fail(e))?;
        let mut out: Vec<String> = keys
            .iter()
            .filter_map(|key| {
                let rest = key.strip_prefix(&prefix)?;
                let (dir, file) = rest.rsplit_once('/')?;
                ltx::parse_file_name(file)?;
                let (rel, level) = dir.rsplit_once('/')?;
                (level.len() == 4 && u8::from_str_radix(level, 16).is_ok() && !rel.is_empty())
                    .then(|| rel.to_owned())
            })
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Starts the GET now (a missing object is `NotFound` here) and streams the body.
    fn open_ltx(
        &self,
        level: u8,
        min: u64,
        max: u64,
    ) -> Result<Box<dyn Read + Send>, ReplicaError> {
        let (rt, client) = self.client()?;
        let key = self.key(level, min, max);
        let out = rt
            .block_on(
                client
                    .get_object()
                    .bucket(&self.opts.bucket)
                    .key(&key)
                    .send(),
            )
            .map_err(|e| self.fail(sdk_error("s3 GetObject", &key, e)))?;
        Ok(self.reader(rt, &client, key, out, download::MAX_DEPTH))
    }

    fn open_ltx_many(&self, files: &[FileInfo]) -> Result<Vec<Box<dyn Read + Send>>, ReplicaError> {
        self.open_many(files)
    }

    /// S3 objects appear atomically: a PutObject or a completed multipart upload, never a prefix.
    fn write_ltx(
        &self,
        level: u8,
        min: u64,
        max: u64,
        created_at: SystemTime,
        data: &mut dyn Read,
    ) -> Result<FileInfo, ReplicaError> {
        let (rt, client) = self.client()?;
        let key = self.key(level, min, max);
        let target = upload::Target {
            rt,
            client: &client,
            bucket: &self.opts.bucket,
            key: &key,
            metadata: HashMap::from([(
                TIMESTAMP_METADATA.to_string(),
                format_rfc3339_nano(created_at),
            )]),
            part_size: self.opts.effective_part_size(),
            concurrency: self.opts.effective_concurrency(),
            storage_class: self
                .opts
                .storage_class
                .as_deref()
                .map(aws_sdk_s3::types::StorageClass::from),
        };
        let size = upload::upload(&target, data).map_err(|e| self.fail(e))?;
        Ok(FileInfo {
            level,
            min_txid: min,
            max_txid: max,
            size,
            created_at,
        })
    }

    /// DeleteObjects in batches of 1000; keys already gone are not an error.
    fn delete_ltx(&self, files: &[FileInfo]) -> Result<(), ReplicaError> {
        if files.is_empty() {
            return Ok(());
        }
        let (rt, client) = self.client()?;
        let keys: Vec<String> = files
            .iter()
            .map(|f| self.key(f.level, f.min_txid, f.max_txid))
            .collect();
        for batch in keys.chunks(DELETE_BATCH) {
            let objects = batch
                .iter()
                .map(|k| ObjectIdentifier::builder().key(k).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| self.fail(S3Error::new(&batch[0], e.to_string())))?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| self.fail(S3Error::new(&batch[0], e.to_string())))?;
            let out = rt
                .block_on(
                    client
                        .delete_objects()
                        .bucket(&self.opts.bucket)
                        .delete(delete)
                        .send(),
                )
                .map_err(|e| self.fail(sdk_error("s3 DeleteObjects", &batch[0], e)))?;
            if let Some(err) = out.errors().iter().find(|e| e.code() != Some("NoSuchKey")) {
                let key = err.key().unwrap_or(&batch[0]);
                let msg = format!(
                    "{}: {}",
                    err.code().unwrap_or("error"),
                    err.message().unwrap_or("delete failed")
                );
                return Err(self.fail(S3Error {
                    op: "s3 DeleteObjects",
                    ..S3Error::new(key, msg)
                }));
            }
        }
        Ok(())
    }

    fn locate(&self, level: u8, min: u64, max: u64) -> String {
        self.url(&self.key(level, min, max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_litestream_layout() {
        let r = |path: &str| {
            S3Replica::new(S3Options {
                bucket: "b".into(),
                path: path.into(),
                ..S3Options::default()
            })
        };
        for (path, level, min, max, want) in [
            (
                "db",
                0,
                1,
                1,
                "db/0000/0000000000000001-0000000000000001.ltx",
            ),
            (
                "db",
                9,
                1,
                0x2a,
                "db/0009/0000000000000001-000000000000002a.ltx",
            ),
            (".", 1, 2, 3, "./0001/0000000000000002-0000000000000003.ltx"),
            (
                "/db",
                0,
                1,
                1,
                "/db/0000/0000000000000001-0000000000000001.ltx",
            ),
        ] {
            assert_eq!(r(path).key(level, min, max), want, "{path}");
        }
        assert_eq!(r("db").level_prefix(10), "db/000a/");
    }

    #[test]
    fn rfc3339_nano_trims_like_go() {
        let t = |ms: u64| UNIX_EPOCH + Duration::from_millis(ms);
        assert_eq!(
            format_rfc3339_nano(t(1_764_456_321_789)),
            "2025-11-29T22:45:21.789Z"
        );
        assert_eq!(
            format_rfc3339_nano(t(1_764_456_321_780)),
            "2025-11-29T22:45:21.78Z"
        );
        assert_eq!(
            format_rfc3339_nano(t(1_764_456_321_000)),
            "2025-11-29T22:45:21Z"
        );
        assert_eq!(
            format_rfc3339_nano(UNIX_EPOCH + Duration::from_nanos(1)),
            "1970-01-01T00:00:00.000000001Z"
        );
        assert_eq!(
            rfc3339::parse(&format_rfc3339_nano(t(1_764_456_321_789))),
            Some(t(1_764_456_321_789))
        );
    }

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let (i, m) = (Duration::from_millis(100), Duration::from_secs(2));
        for attempt in 1..20 {
            let d = backoff(attempt, i, m);
            let cap = i.saturating_mul(1 << (attempt - 1).min(16)).min(m);
            assert!(
                d >= cap / 2 && d <= cap,
                "attempt {attempt}: {d:?} vs {cap:?}"
            );
        }
    }
}
