//! Objects of unknown length, streamed in and out with bounded memory.
//!
//! A `pg_dump` of 200 GB cannot pass through a `Vec`, so storage has a second way in and out:
//! [`put_stream`] stores a [`ByteStream`] and [`Storage::get_stream`] reads one back.
//!
//! **Writing.** Every backend offers the same four steps — `upload_start`, `upload_part`,
//! `upload_finish`, `upload_abort` — and [`put_stream`] is the one function that drives them:
//! it cuts the stream into parts of the size the backend asks for ([`Storage::part_size`]: on
//! S3 8 MiB, growing for very large objects so its 10 000-part limit is never hit before
//! 650 GB; locally 2 MiB, as a part is only a write at an offset), keeps at most
//! [`PARTS_IN_FLIGHT`] uploads running while it reads the next part, and finishes the upload
//! when the stream has ended. A stream that
//! ends within the first part is one ordinary `put`. On S3 the steps are a multipart upload;
//! locally a temp file written at each part's offset, fsynced and renamed at the finish; in
//! memory a map of parts. Each step is a separate storage call, so the retry layer gives each
//! part its own deadline (sized to the part) and retries it — the part's bytes are in memory,
//! so a retry re-sends exactly them. The stream itself is never replayed.
//!
//! What a failed `put_stream` means (the contract):
//! - Nothing new is visible under the key: the object that was there before (if any) is
//!   still there, unchanged. The upload is aborted (S3: its parts are dropped; locally: the
//!   temp file is removed). If the abort itself fails, or the call is cancelled by dropping it,
//!   an S3 store keeps an incomplete multipart upload until a lifecycle rule for incomplete
//!   uploads (or a later abort) removes it, and a local repository keeps a `.tmp.*` file that
//!   listings skip. Neither is ever readable under the key.
//! - The one exception is a lost answer to the final step: the store may have made the object
//!   visible although the call failed. Callers that write unique keys (dumps write
//!   `dumps/<label>/…`) treat the failure as a failure and retry the whole object, which
//!   replaces it.
//! - To retry, the caller starts again from its source; no layer retries a stream silently.
//!
//! **Reading.** `get_stream(key, offset)` yields the object's bytes from `offset` on in
//! chunks. The retry layer watches each chunk with its own deadline, and when a read fails or
//! stalls midway it re-opens the object at the offset reached, so a long download survives a
//! dropped connection without starting over.

use super::{DynStorage, Storage, StorageError, StorageResult};
use bytes::{Bytes, BytesMut};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use tokio::task::JoinSet;

/// A stream of chunks; an `Err` item ends it as failed.
pub type ByteStream = BoxStream<'static, std::io::Result<Bytes>>;

/// An upload in progress, as the backend that started it knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    pub key: String,
    /// The backend's handle: an S3 upload id, a temp file's key, a memory slot.
    pub id: String,
}

/// Where one part goes: its 1-based number and the offset of its first byte in the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    pub number: u32,
    pub offset: u64,
}

/// What a stored part needs at the finish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartReceipt {
    pub number: u32,
    pub len: u64,
    /// S3's ETag and CRC32 of the part; `None` elsewhere.
    pub etag: Option<String>,
    pub crc32: Option<String>,
}

/// Uploads running at once while the next part is read: memory stays below
/// `(PARTS_IN_FLIGHT + 1) × part size`.
pub const PARTS_IN_FLIGHT: usize = 2;

/// S3 allows at most this many parts in one upload.
pub const MAX_PARTS: u32 = 10_000;

/// S3's part schedule, the trait's default: 8 MiB for the first 2000 parts (16 GB), 32 MiB up
/// to part 6000 (another 128 GB), 128 MiB up to part [`MAX_PARTS`] (another 512 GB), then
/// none. Small objects keep small parts; huge ones stay within the limit.
pub fn s3_part_size(number: u32) -> Option<usize> {
    match number {
        0..=2000 => Some(8 << 20),
        2001..=6000 => Some(32 << 20),
        6001..=MAX_PARTS => Some(128 << 20),
        _ => None,
    }
}

/// The part size of a local repository: a part is one positioned write into the temp file,
/// so small parts cost nothing and keep a streamed upload within a few MiB. No part limit.
pub const LOCAL_PART_SIZE: usize = 2 << 20;

/// The bytes of `data` as a stream of chunks of at most `chunk` bytes (no copy).
pub fn chunks_of(data: Bytes, chunk: usize) -> ByteStream {
    let chunk = chunk.max(1);
    let pieces: Vec<std::io::Result<Bytes>> = (0..data.len().div_ceil(chunk))
        .map(|i| Ok(data.slice(i * chunk..((i + 1) * chunk).min(data.len()))))
        .collect();
    futures::stream::iter(pieces).boxed()
}

/// Reads a whole stream into memory (tests and small objects only).
pub async fn collect(stream: ByteStream) -> std::io::Result<Bytes> {
    let parts: Vec<Bytes> = stream.try_collect().await?;
    let mut out = BytesMut::with_capacity(parts.iter().map(Bytes::len).sum());
    for p in parts {
        out.extend_from_slice(&p);
    }
    Ok(out.freeze())
}

/// `carry` followed by the next bytes of `source` until `size` bytes are held (fewer at its
/// end), and whether it ended. The buffer is allocated once, at its final size: growing it by
/// doubling would hold two copies of a part for a moment.
async fn fill(
    carry: &[u8],
    source: &mut ByteStream,
    size: usize,
    key: &str,
) -> StorageResult<(Bytes, bool)> {
    let mut buf = BytesMut::with_capacity(size.max(carry.len()));
    buf.extend_from_slice(carry);
    while buf.len() < size {
        match source.next().await {
            None => return Ok((buf.freeze(), true)),
            Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
            Some(Err(e)) => {
                return Err(StorageError::Permanent(format!(
                    "the data to store under {key} failed midway: {e}; nothing was stored"
                )));
            }
        }
    }
    // A chunk may overshoot the part: the rest starts the next part.
    Ok((buf.freeze(), false))
}

/// Stores `data` under `key`, replacing any object there, and returns how many bytes it
/// stored. See the module documentation for what a failure leaves behind.
pub async fn put_stream(
    storage: &DynStorage,
    key: &str,
    mut data: ByteStream,
) -> StorageResult<u64> {
    let first_size = part_size_of(storage.as_ref(), 1, key)?;
    let (first, ended) = fill(&[], &mut data, first_size, key).await?;
    if ended {
        let len = first.len() as u64;
        storage.put(key, first).await?;
        return Ok(len);
    }
    let upload = storage.upload_start(key).await?;
    let mut guard = AbortOnDrop {
        storage: storage.clone(),
        upload: Some(upload.clone()),
    };
    match upload_all(storage, &upload, first, data).await {
        Ok(total) => {
            guard.upload = None;
            Ok(total)
        }
        Err(e) => {
            guard.upload = None;
            if let Err(abort) = storage.upload_abort(&upload).await {
                tracing::warn!(
                    key,
                    error = %abort,
                    "cannot abort the unfinished upload; nothing is visible under the key, and \
                     a lifecycle rule for incomplete uploads (S3) or the next gc removes its parts"
                );
            }
            Err(e)
        }
    }
}

/// Uploads `first` and the rest of `rest` as parts, then finishes the upload.
async fn upload_all(
    storage: &DynStorage,
    upload: &Upload,
    first: Bytes,
    mut rest: ByteStream,
) -> StorageResult<u64> {
    // Spawned, so parts upload while the next one is read; dropping the set (cancellation)
    // aborts them.
    let mut in_flight: JoinSet<StorageResult<PartReceipt>> = JoinSet::new();
    let mut receipts = Vec::new();
    let mut carry = first;
    let mut number = 1u32;
    let mut offset = 0u64;
    let mut ended = false;
    loop {
        // `carry` may be longer than its part (a chunk overshot): cut it.
        let size = part_size_of(storage.as_ref(), number, &upload.key)?;
        if carry.len() < size && !ended {
            let (filled, end) = fill(&carry, &mut rest, size, &upload.key).await?;
            carry = filled;
            ended = end;
        }
        let body = carry.split_to(size.min(carry.len()));
        if body.is_empty() {
            break;
        }
        let part = Part { number, offset };
        offset += body.len() as u64;
        number += 1;
        let storage = storage.clone();
        let upload = upload.clone();
        in_flight.spawn(async move { storage.upload_part(&upload, part, body).await });
        while in_flight.len() > PARTS_IN_FLIGHT {
            receipts.push(joined_part(in_flight.join_next().await)?);
        }
        if ended && carry.is_empty() {
            break;
        }
    }
    while !in_flight.is_empty() {
        receipts.push(joined_part(in_flight.join_next().await)?);
    }
    receipts.sort_by_key(|r| r.number);
    storage.upload_finish(upload, &receipts, offset).await?;
    Ok(offset)
}

/// The size of part `number` on `storage`, or the error for an object too large for one upload.
fn part_size_of(storage: &dyn Storage, number: u32, key: &str) -> StorageResult<usize> {
    storage.part_size(number).ok_or_else(|| {
        StorageError::Permanent(format!(
            "{key} is larger than one upload to {} can hold ({} parts)",
            storage.describe(),
            number - 1
        ))
    })
}

/// The receipt of a finished part task.
fn joined_part(
    joined: Option<Result<StorageResult<PartReceipt>, tokio::task::JoinError>>,
) -> StorageResult<PartReceipt> {
    match joined {
        Some(Ok(r)) => r,
        Some(Err(e)) => Err(StorageError::Transient(format!(
            "a part upload task failed: {e}"
        ))),
        None => Err(StorageError::Transient("no part upload was running".into())),
    }
}

/// Aborts the upload if `put_stream` is dropped midway (cancelled); best effort, spawned.
struct AbortOnDrop {
    storage: DynStorage,
    upload: Option<Upload>,
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        let Some(upload) = self.upload.take() else {
            return;
        };
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let storage = self.storage.clone();
            rt.spawn(async move {
                let _ = storage.upload_abort(&upload).await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_grow_so_huge_objects_fit() {
        assert_eq!(s3_part_size(1), Some(8 << 20));
        assert_eq!(s3_part_size(2000), Some(8 << 20));
        assert_eq!(s3_part_size(2001), Some(32 << 20));
        assert_eq!(s3_part_size(MAX_PARTS), Some(128 << 20));
        assert_eq!(s3_part_size(MAX_PARTS + 1), None);
        let capacity: u64 = (1..=MAX_PARTS)
            .filter_map(s3_part_size)
            .map(|n| n as u64)
            .sum();
        assert!(capacity > 600 * 1_000_000_000, "{capacity}");
    }

    #[tokio::test]
    async fn chunks_round_trip() {
        let data = Bytes::from((0..10_000u32).map(|i| i as u8).collect::<Vec<_>>());
        let back = collect(chunks_of(data.clone(), 999)).await.unwrap();
        assert_eq!(back, data);
        assert!(
            collect(chunks_of(Bytes::new(), 10))
                .await
                .unwrap()
                .is_empty()
        );
    }
}
