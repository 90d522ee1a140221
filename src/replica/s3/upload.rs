//! Streaming uploads with bounded memory. The caller's `Read` is pulled on the calling (blocking)
//! thread one part at a time: an object that ends within the first part goes up as one PutObject
//! (no 5 MiB buffer for a tiny L0 file beyond what it holds); a larger one becomes a multipart upload
//! with at most `concurrency` parts in flight, aborted on any failure so nothing partial is left.

use std::collections::HashMap;
use std::io::{self, Read};

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, StorageClass};
use tokio::runtime::Runtime;
use tokio::task::JoinSet;

use super::{S3Error, sdk_error};

/// S3's limit on parts per upload; past every 1000 parts the part size doubles so that even a huge
/// snapshot fits (parts may differ in size, only the last may be below 5 MiB).
const MAX_PARTS: i32 = 10_000;

pub(super) struct Target<'a> {
    pub rt: &'a Runtime,
    pub client: &'a Client,
    pub bucket: &'a str,
    pub key: &'a str,
    pub metadata: HashMap<String, String>,
    pub part_size: u64,
    pub concurrency: usize,
    pub storage_class: Option<StorageClass>,
}

/// Uploads everything `data` yields; returns the object size.
pub(super) fn upload(t: &Target<'_>, data: &mut dyn Read) -> Result<u64, S3Error> {
    let first = read_part(data, t.part_size).map_err(|e| S3Error::source(t.key, e))?;
    if (first.len() as u64) < t.part_size {
        let len = first.len() as u64;
        t.rt.block_on(
            t.client
                .put_object()
                .bucket(t.bucket)
                .key(t.key)
                .set_metadata(Some(t.metadata.clone()))
                .set_storage_class(t.storage_class.clone())
                .content_length(len as i64)
                .body(ByteStream::from(first))
                .send(),
        )
        .map_err(|e| sdk_error("s3 PutObject", t.key, e))?;
        return Ok(len);
    }
    let created =
        t.rt.block_on(
            t.client
                .create_multipart_upload()
                .bucket(t.bucket)
                .key(t.key)
                .set_metadata(Some(t.metadata.clone()))
                .set_storage_class(t.storage_class.clone())
                .send(),
        )
        .map_err(|e| sdk_error("s3 CreateMultipartUpload", t.key, e))?;
    let Some(upload_id) = created.upload_id else {
        return Err(S3Error::new(
            t.key,
            "CreateMultipartUpload returned no upload id",
        ));
    };
    match upload_parts(t, &upload_id, first, data) {
        Ok(size) => Ok(size),
        Err(e) => {
            let abort = t.rt.block_on(
                t.client
                    .abort_multipart_upload()
                    .bucket(t.bucket)
                    .key(t.key)
                    .upload_id(&upload_id)
                    .send(),
            );
            if let Err(abort_err) = abort {
                // The bucket's lifecycle rule for incomplete uploads is the only cleanup left.
                tracing::warn!(key = t.key, error = %sdk_error("s3 AbortMultipartUpload", t.key, abort_err), "could not abort multipart upload");
            }
            Err(e)
        }
    }
}

fn upload_parts(
    t: &Target<'_>,
    upload_id: &str,
    first: Vec<u8>,
    data: &mut dyn Read,
) -> Result<u64, S3Error> {
    let mut inflight: JoinSet<Result<CompletedPart, S3Error>> = JoinSet::new();
    let mut done: Vec<CompletedPart> = Vec::new();
    let mut total: u64 = 0;
    let mut part = first;
    let mut number: i32 = 1;
    loop {
        while inflight.len() >= t.concurrency {
            done.push(join_one(t, &mut inflight)?);
        }
        total += part.len() as u64;
        let client = t.client.clone();
        let (bucket, key, id) = (
            t.bucket.to_string(),
            t.key.to_string(),
            upload_id.to_string(),
        );
        inflight.spawn_on(
            async move {
                let out = client
                    .upload_part()
                    .bucket(&bucket)
                    .key(&key)
                    .upload_id(id)
                    .part_number(number)
                    .content_length(part.len() as i64)
                    .body(ByteStream::from(part))
                    .send()
                    .await
                    .map_err(|e| sdk_error("s3 UploadPart", &key, e))?;
                Ok(CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(out.e_tag)
                    .build())
            },
            t.rt.handle(),
        );
        if number >= MAX_PARTS {
            return Err(S3Error::new(
                t.key,
                "object too large: more than 10000 parts",
            ));
        }
        let next_size = t.part_size << (number / 1000).min(10);
        part = read_part(data, next_size).map_err(|e| S3Error::source(t.key, e))?;
        if part.is_empty() {
            break;
        }
        number += 1;
    }
    while !inflight.is_empty() {
        done.push(join_one(t, &mut inflight)?);
    }
    done.sort_by_key(|p| p.part_number);
    t.rt.block_on(
        t.client
            .complete_multipart_upload()
            .bucket(t.bucket)
            .key(t.key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(done))
                    .build(),
            )
            .send(),
    )
    .map_err(|e| sdk_error("s3 CompleteMultipartUpload", t.key, e))?;
    Ok(total)
}

fn join_one(
    t: &Target<'_>,
    set: &mut JoinSet<Result<CompletedPart, S3Error>>,
) -> Result<CompletedPart, S3Error> {
    match t.rt.block_on(set.join_next()) {
        Some(Ok(r)) => r,
        Some(Err(join)) => Err(S3Error::new(t.key, format!("upload task failed: {join}"))),
        None => Err(S3Error::new(t.key, "no upload in flight")),
    }
}

/// Reads until `size` bytes or EOF; the buffer grows with the data, so a small object costs only
/// its own size.
fn read_part(data: &mut dyn Read, size: u64) -> io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity((size as usize).min(256 * 1024));
    (&mut *data).take(size).read_to_end(&mut buf)?;
    Ok(buf)
}
