//! Objects of unknown length, streamed in and out with bounded memory.
//!
//! A `pg_dump` of 200 GB cannot pass through a `Vec`, so storage has a second way in and out:
//! [`put_stream`] stores a [`ByteStream`] and [`Storage::get_stream`] reads one back.
//!
//! **Writing.** Every backend offers the same four steps — `upload_start`, `upload_part`,
//! `upload_finish`, `upload_abort` — and [`put_stream`] is the one function that drives them:
//! it cuts the stream into parts (8 MiB, growing for very large objects so S3's 10 000-part
//! limit is never hit before 650 GB), keeps at most [`PARTS_IN_FLIGHT`] uploads running while
//! it reads the next part, and finishes the upload when the stream has ended. A stream that
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

use super::{DynStorage, StorageError, StorageResult};
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

/// The size of part `number`: 8 MiB for the first 2000 (16 GB), 32 MiB up to part 6000
/// (another 128 GB), 128 MiB after that (another 512 GB). Small objects keep small parts;
/// huge ones stay within [`MAX_PARTS`].
pub fn part_size(number: u32) -> usize {
    match number {
        0..=2000 => 8 << 20,
        2001..=6000 => 32 << 20,
        _ => 128 << 20,
    }
}

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

/// The next `size` bytes of `source` (fewer at its end), and whether it ended.
async fn fill(source: &mut ByteStream, size: usize, key: &str) -> StorageResult<(Bytes, bool)> {
    let mut buf = BytesMut::with_capacity(size.min(1 << 20));
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
    let (first, ended) = fill(&mut data, part_size(1), key).await?;
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
        let size = part_size(number);
        while carry.len() < size && !ended {
            let (more, end) = fill(&mut rest, size - carry.len(), &upload.key).await?;
            let mut joined = BytesMut::with_capacity(carry.len() + more.len());
            joined.extend_from_slice(&carry);
            joined.extend_from_slice(&more);
            carry = joined.freeze();
            ended = end;
        }
        let body = carry.split_to(size.min(carry.len()));
        if body.is_empty() {
            break;
        }
        if number > MAX_PARTS {
            return Err(StorageError::Permanent(format!(
                "{} is larger than one upload can hold ({MAX_PARTS} parts)",
                upload.key
            )));
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
        assert_eq!(part_size(1), 8 << 20);
        assert_eq!(part_size(2000), 8 << 20);
        assert_eq!(part_size(2001), 32 << 20);
        assert_eq!(part_size(MAX_PARTS), 128 << 20);
        let capacity: u64 = (1..=MAX_PARTS).map(|n| part_size(n) as u64).sum();
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
