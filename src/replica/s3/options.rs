//! Litestream's environment conventions for S3 replicas: `LITESTREAM_ACCESS_KEY_ID` /
//! `LITESTREAM_SECRET_ACCESS_KEY` standing in for unset `AWS_*` keys, and `LITESTREAM_S3_ENDPOINT`
//! for replicas named by a URL. The settings type itself is [`crate::config::s3::S3Options`].

use crate::config::s3::{S3Options, Secret, endpoint_with_scheme};

/// A replica named by a URL (`litevisor restore s3://...`, `replicate DB s3://...`) takes
/// `LITESTREAM_S3_ENDPOINT` as its endpoint when the URL names none, with path-style addressing,
/// as Litestream does for URL-built clients only (config-file replicas ignore it).
pub fn endpoint_from_env(opts: &mut S3Options) {
    if opts.endpoint.is_none()
        && let Some(endpoint) = env_nonempty("LITESTREAM_S3_ENDPOINT")
    {
        opts.endpoint = Some(endpoint_with_scheme(&endpoint));
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
    Some((id, Secret::new(secret), env_nonempty("AWS_SESSION_TOKEN")))
}
