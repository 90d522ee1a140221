//! Large objects against a real S3-compatible server (moto): a 64 MiB object streams up as a multipart
//! upload (its ETag ends in `-<parts>`) and back down with bounded memory (the test process's peak RSS
//! grows far less than the object), and a source that fails mid-way aborts the upload, leaving neither
//! an object nor a pending multipart upload behind. Alone in its binary so the RSS check is meaningful.

mod support;
use support::s3_server;

use std::io::{self, Read};
use std::time::UNIX_EPOCH;

use litevisor::replica;
use litevisor::replica::ReplicaClient;
use litevisor::replica::s3::{S3Options, S3Replica};
use s3_server::{S3Server, sdk_client};

/// Deterministic pseudo-random bytes, generated on the fly: the object never exists in memory.
struct Generated {
    state: u64,
    left: u64,
    fail_at: Option<u64>,
    produced: u64,
}

impl Generated {
    fn new(seed: u64, len: u64) -> Generated {
        Generated {
            state: seed | 1,
            left: len,
            fail_at: None,
            produced: 0,
        }
    }
}

impl Read for Generated {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.fail_at.is_some_and(|at| self.produced >= at) {
            return Err(io::Error::other("source broke"));
        }
        let n = (buf.len() as u64).min(self.left) as usize;
        for b in &mut buf[..n] {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            *b = self.state as u8;
        }
        self.left -= n as u64;
        self.produced += n as u64;
        Ok(n)
    }
}

/// FNV-1a over a stream, so two 64 MiB streams compare without holding either.
fn digest(mut r: impl Read) -> (u64, u64) {
    let mut h: u64 = 0xcbf29ce484222325;
    let mut len = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = r.read(&mut buf).expect("read");
        if n == 0 {
            return (h, len);
        }
        for &b in &buf[..n] {
            h = (h ^ b as u64).wrapping_mul(0x100000001b3);
        }
        len += n as u64;
    }
}

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn large_objects_stream_through_multipart_with_bounded_memory() {
    let server = S3Server::with_bucket("big");
    let part_size = 5 * 1024 * 1024u64;
    let r = S3Replica::new(S3Options {
        part_size: Some(part_size),
        concurrency: Some(2),
        ..server.options("big", "db")
    });
    let len = 64 * 1024 * 1024 + 12345u64;
    let expected = digest(Generated::new(7, len));

    let rss_before = peak_rss_kib();
    let info = r
        .write_ltx(9, 1, 100, UNIX_EPOCH, &mut Generated::new(7, len))
        .unwrap();
    assert_eq!(info.size, len);
    let got = digest(r.open_ltx(9, 1, 100).unwrap());
    let rss_growth_mib = (peak_rss_kib().saturating_sub(rss_before)) / 1024;
    eprintln!("peak RSS growth during the 64 MiB round trip: {rss_growth_mib} MiB");
    assert_eq!(got, expected, "round trip of {len} bytes");
    // Parts in flight (2) + the one being read, plus SDK overhead, is ~20 MiB; the object is 64 MiB.
    assert!(
        rss_growth_mib < 48,
        "peak RSS grew by {rss_growth_mib} MiB for a 64 MiB object"
    );

    let (rt, sdk) = sdk_client(&server.endpoint, None);
    let head = s3_server::head(
        &rt,
        &sdk,
        "big",
        "db/0009/0000000000000001-0000000000000064.ltx",
    );
    let parts = len.div_ceil(part_size);
    let etag = head
        .e_tag()
        .unwrap_or_default()
        .trim_matches('"')
        .to_string();
    assert!(
        etag.ends_with(&format!("-{parts}")),
        "multipart ETag with {parts} parts expected, got {etag}"
    );
    assert_eq!(head.content_length(), Some(len as i64));
    assert_eq!(
        s3_server::litestream_timestamp(&head),
        Some("1970-01-01T00:00:00Z"),
        "metadata set on multipart uploads too"
    );

    // A source that breaks after 3 parts: an error, no object, no pending upload.
    let mut broken = Generated::new(9, len);
    broken.fail_at = Some(3 * part_size + 100);
    let err = r
        .write_ltx(9, 1, 200, UNIX_EPOCH, &mut broken)
        .unwrap_err()
        .to_string();
    support::assert_contains(&err, "source broke");
    support::assert_contains(&err, "0000000000000001-00000000000000c8.ltx");
    assert!(
        matches!(
            r.open_ltx(9, 1, 200).err(),
            Some(replica::ReplicaError::NotFound(_))
        ),
        "no object after a failed upload"
    );
    let pending = rt
        .block_on(sdk.list_multipart_uploads().bucket("big").send())
        .unwrap();
    assert!(
        pending.uploads().is_empty(),
        "aborted, not left pending: {:?}",
        pending.uploads()
    );

    // An object of exactly part-size bytes is a one-part multipart upload (no empty trailing part).
    let exact = r
        .write_ltx(0, 5, 5, UNIX_EPOCH, &mut Generated::new(3, part_size))
        .unwrap();
    assert_eq!(exact.size, part_size);
    assert_eq!(
        digest(r.open_ltx(0, 5, 5).unwrap()),
        digest(Generated::new(3, part_size))
    );
}
