//! Streaming downloads: a GetObject body pumped by a task on the replica's runtime into a bounded
//! channel, read by a blocking `std::io::Read`. A body that breaks or stalls mid-way is resumed with a
//! ranged GET from the last byte received (`If-Match` the original ETag, so a replaced object is never
//! spliced), with back-off; the reader sees an error only after the retries are exhausted, and never a
//! clean EOF for a truncated object.

use std::io::{self, Read};

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use bytes::{Buf, Bytes};
use tokio::sync::mpsc;

use super::backoff;
use crate::config::s3::S3Timeouts;

/// Body chunks buffered ahead of the reader of a single open file (hyper chunks are at most a few
/// hundred KiB, typically 8-64 KiB).
pub(super) const MAX_DEPTH: usize = 16;
/// Chunks buffered across all the files opened together, so a long restore chain stays bounded.
const TOTAL_DEPTH: usize = 512;

/// Chunks to buffer per file when `files` are open at once.
pub(super) fn depth_for(files: usize) -> usize {
    (TOTAL_DEPTH / files.max(1)).clamp(2, MAX_DEPTH)
}

enum Chunk {
    Data(Bytes),
    Done,
    Failed(io::Error),
}

/// What the pump needs to resume a body.
pub(super) struct Source {
    pub client: Client,
    pub bucket: String,
    pub key: String,
    pub etag: Option<String>,
    pub len: Option<u64>,
    pub timeouts: S3Timeouts,
}

/// A blocking reader of one object. Must not be read from inside an async context (it blocks the
/// thread on the channel); the replica's trait is called from blocking threads, where this is fine.
pub(super) struct ObjectReader {
    rx: mpsc::Receiver<Chunk>,
    cur: Bytes,
    state: State,
    name: String,
}

enum State {
    Reading,
    Done,
    Failed(io::ErrorKind, String),
}

/// Starts pumping `body` (the first response of the GET) and returns the reader.
pub(super) fn start(
    handle: &tokio::runtime::Handle,
    source: Source,
    body: ByteStream,
    depth: usize,
) -> ObjectReader {
    let (tx, rx) = mpsc::channel(depth.max(1));
    let name = format!("s3://{}/{}", source.bucket, source.key);
    handle.spawn(pump(source, body, tx));
    ObjectReader {
        rx,
        cur: Bytes::new(),
        state: State::Reading,
        name,
    }
}

impl Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if !self.cur.is_empty() {
                let n = buf.len().min(self.cur.len());
                buf[..n].copy_from_slice(&self.cur[..n]);
                self.cur.advance(n);
                return Ok(n);
            }
            match &self.state {
                State::Done => return Ok(0),
                State::Failed(kind, msg) => return Err(io::Error::new(*kind, msg.clone())),
                State::Reading => {}
            }
            if buf.is_empty() {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Chunk::Data(b)) => self.cur = b,
                Some(Chunk::Done) => self.state = State::Done,
                Some(Chunk::Failed(e)) => self.state = State::Failed(e.kind(), e.to_string()),
                None => {
                    self.state = State::Failed(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "{}: download stopped before the end of the object",
                            self.name
                        ),
                    )
                }
            }
        }
    }
}

async fn pump(src: Source, mut body: ByteStream, tx: mpsc::Sender<Chunk>) {
    let name = format!("s3://{}/{}", src.bucket, src.key);
    let mut offset: u64 = 0;
    let mut attempts: u32 = 0;
    loop {
        let err = match tokio::time::timeout(src.timeouts.read, body.next()).await {
            Ok(Some(Ok(chunk))) => {
                offset += chunk.len() as u64;
                attempts = 0;
                if tx.send(Chunk::Data(chunk)).await.is_err() {
                    return; // The reader is gone: dropping the body closes the connection.
                }
                continue;
            }
            Ok(None) => match src.len {
                Some(len) if offset < len => io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("body ended at byte {offset} of {len}"),
                ),
                _ => {
                    let _ = tx.send(Chunk::Done).await;
                    return;
                }
            },
            Ok(Some(Err(e))) => io::Error::other(super::error_chain(&e)),
            Err(_) => io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no data for {:?}", src.timeouts.read),
            ),
        };
        // Resume after the last byte received, until an attempt succeeds or they run out.
        let mut last = err;
        loop {
            attempts += 1;
            if attempts >= src.timeouts.max_attempts.max(1) {
                let msg = format!(
                    "{name}: download failed at byte {offset} after {attempts} attempts: {last}"
                );
                let _ = tx
                    .send(Chunk::Failed(io::Error::new(last.kind(), msg)))
                    .await;
                return;
            }
            tracing::debug!(object = %name, offset, attempts, error = %last, "resuming S3 download");
            tokio::time::sleep(backoff(
                attempts,
                src.timeouts.initial_backoff,
                src.timeouts.max_backoff,
            ))
            .await;
            let resumed = src
                .client
                .get_object()
                .bucket(&src.bucket)
                .key(&src.key)
                .range(format!("bytes={offset}-"))
                .set_if_match(src.etag.clone())
                .send()
                .await;
            match resumed {
                Ok(out) => {
                    body = out.body;
                    break;
                }
                Err(e) => last = io::Error::other(super::error_chain(&e)),
            }
        }
    }
}
