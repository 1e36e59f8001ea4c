//! Object storage behind one small trait.
//!
//! Every repository backend (local directory, S3, in-memory, fault-injecting wrapper) implements
//! [`Storage`], and one contract test suite (`tests/storage_contract.rs`) runs against all of
//! them. Keys are `/`-separated relative paths such as `wal/00000001/0000...-<sha>.zst`; only
//! `repo::layout` builds them.
//!
//! Contract (every implementation keeps it):
//! - `put` is atomic: a reader sees either no object or the whole new object, never a prefix.
//!   When `put` returns `Ok`, the object is durable (local: file and directory fsynced;
//!   S3: PUT acknowledged).
//! - `put_if_absent` writes only if no object exists under the key and reports which happened.
//!   Where the backend cannot make this atomic, it is check-then-write; callers that need
//!   stronger guarantees re-check after writing. `AlreadyExists` is only ever answered for an
//!   object that exists (S3: 412; a 409 "conflicting operation in progress" is `Transient`),
//!   but it may be this very write: an earlier attempt that committed although its answer was
//!   lost. [`create`] tells the two apart by reading the object back.
//! - `get` and `head` report a missing object as [`StorageError::NotFound`] / `None`.
//! - `list(prefix)` returns every object whose key starts with `prefix` (a plain string prefix,
//!   not a directory), sorted by key.
//! - `list_after(prefix, start_after, limit)` returns the first `limit` of those whose key sorts
//!   strictly after `start_after`, sorted. On S3 it is one request (`start-after`, `max-keys`)
//!   whatever the number of objects, which is what lets `wal-fetch` ask "is anything archived
//!   after this name?" every few seconds on a standby. The default implementation filters a full
//!   `list` (right, not cheap); backends that can do better override it, and wrappers pass it on.
//! - `delete` of a missing key succeeds (idempotent).
//! - `delete_many(keys)` deletes each key as `delete` would and returns the keys it could not
//!   delete, each with its error (an empty answer: all are gone). Keys are independent: one
//!   failing key never stops the others. S3 sends them as DeleteObjects requests of at most
//!   [`DELETE_BATCH`] keys and checks every per-key error; a request that fails as a whole
//!   fails each of its keys with that error. The retry layer retries the transient failures.
//! - `last_modified` in [`ObjectMeta`] is when the object was last written (local: the file's
//!   mtime; S3: `LastModified`; memory: the insertion time), `None` where a store cannot say.
//! - `copy_if_absent(from, to)` gives `to` the bytes of `from` unless `to` exists, without
//!   moving the bytes through pgward where the backend can (local: `link(2)`, S3: CopyObject).
//! - Streams ([`stream`]): [`put_stream`] stores a byte stream of unknown length through the
//!   `upload_*` steps (multipart on S3, a temp file + fsync + rename locally), atomically: a
//!   failed or cancelled one leaves nothing visible under the key, and is never replayed by any
//!   layer — the caller restarts from its source. `get_stream(key, offset)` reads an object in
//!   chunks from `offset`; the retry layer resumes it at the offset reached after a failure.
//! - Cancellation: dropping a future mid-`put` never leaves a partial object visible under the
//!   key (local writes go through a temp file; S3 uploads are single requests or multipart
//!   uploads that are only completed at the end).
//! - Errors are classified so callers can decide: `NotFound` (the object is not there),
//!   `Transient` (worth retrying: timeouts, 5xx, throttling, connection resets) and `Permanent`
//!   (retrying will not help: access denied, no such bucket, bad request, disk full).

pub mod faulty;
pub mod local;
pub mod memory;
pub mod retry;
pub mod s3;
pub mod stream;

use async_trait::async_trait;
use bytes::Bytes;
use std::fmt::Debug;
use std::sync::Arc;
pub use stream::{ByteStream, Part, PartReceipt, Upload, put_stream};

use chrono::{DateTime, Utc};
use futures::StreamExt;

/// The most keys one S3 DeleteObjects request may carry.
pub const DELETE_BATCH: usize = 1000;
/// Deletes in flight at once in the default `delete_many` (one request per key).
const DELETE_CONCURRENCY: usize = 16;

/// What the storage knows about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
    /// When the object was last written, where the store says.
    pub last_modified: Option<DateTime<Utc>>,
}

impl ObjectMeta {
    /// An object's key and size, its time unknown.
    pub fn new(key: impl Into<String>, size: u64) -> ObjectMeta {
        ObjectMeta {
            key: key.into(),
            size,
            last_modified: None,
        }
    }
}

/// One key that `delete_many` could not delete, and why.
#[derive(Debug)]
pub struct DeleteFailure {
    pub key: String,
    pub error: StorageError,
}

/// One page of a listing: some objects in key order, and where the next page starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPage {
    pub objects: Vec<ObjectMeta>,
    /// Continuation token of the next page; `None` when this was the last.
    pub next: Option<String>,
}

/// Whether `put_if_absent` wrote the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Written,
    AlreadyExists,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    #[error("object not found: {0}")]
    NotFound(String),
    #[error("transient storage error: {0}")]
    Transient(String),
    #[error("storage error: {0}")]
    Permanent(String),
}

impl StorageError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, StorageError::NotFound(_))
    }
    pub fn is_transient(&self) -> bool {
        matches!(self, StorageError::Transient(_))
    }
}

pub type StorageResult<T> = Result<T, StorageError>;

#[async_trait]
pub trait Storage: Send + Sync + Debug {
    /// Stores `data` under `key`, replacing any existing object. Atomic and durable on `Ok`.
    async fn put(&self, key: &str, data: Bytes) -> StorageResult<()>;
    /// Stores `data` under `key` only if no object exists there.
    async fn put_if_absent(&self, key: &str, data: Bytes) -> StorageResult<PutOutcome>;
    /// Reads a whole object. A missing key is `NotFound`.
    async fn get(&self, key: &str) -> StorageResult<Bytes>;
    /// Size of an object, or `None` when it does not exist.
    async fn head(&self, key: &str) -> StorageResult<Option<ObjectMeta>>;
    /// Every object whose key starts with `prefix`, sorted by key.
    async fn list(&self, prefix: &str) -> StorageResult<Vec<ObjectMeta>>;
    /// One page of `list(prefix)`, from the start (`token = None`) or from a previous page's
    /// `next`. Backends that list in one piece return everything as one page (the default);
    /// S3 returns up to 1000 keys. The retry layer puts each page under its own deadline and
    /// retries, so a listing of 100 000 objects never has to fit in one attempt.
    async fn list_page(&self, prefix: &str, token: Option<&str>) -> StorageResult<ListPage> {
        debug_assert!(token.is_none(), "one-page listings hand out no token");
        Ok(ListPage {
            objects: self.list(prefix).await?,
            next: None,
        })
    }
    /// The first `limit` objects whose key starts with `prefix` and sorts after `start_after`.
    async fn list_after(
        &self,
        prefix: &str,
        start_after: &str,
        limit: usize,
    ) -> StorageResult<Vec<ObjectMeta>> {
        let mut all = self.list(prefix).await?;
        all.retain(|o| o.key.as_str() > start_after);
        all.truncate(limit);
        Ok(all)
    }
    /// Removes an object; removing a missing object succeeds.
    async fn delete(&self, key: &str) -> StorageResult<()>;
    /// Removes every key in `keys` and returns those it could not remove (see the contract).
    /// The default is one `delete` per key, [`DELETE_CONCURRENCY`] at a time.
    async fn delete_many(&self, keys: &[String]) -> Vec<DeleteFailure> {
        // Boxed one by one: a stream of closures over borrowed keys is not `Send` enough for
        // `async_trait`'s boxed future.
        let deletes: Vec<futures::future::BoxFuture<'_, Option<DeleteFailure>>> = keys
            .iter()
            .map(|key| {
                Box::pin(async move {
                    self.delete(key).await.err().map(|error| DeleteFailure {
                        key: key.clone(),
                        error,
                    })
                }) as futures::future::BoxFuture<'_, _>
            })
            .collect();
        let done: Vec<Option<DeleteFailure>> = futures::stream::iter(deletes)
            .buffer_unordered(DELETE_CONCURRENCY)
            .collect()
            .await;
        done.into_iter().flatten().collect()
    }
    /// Makes `to` hold the bytes of `from`, unless an object exists under `to` (then it is
    /// left alone: callers copy to content-addressed keys, where "exists" means "same
    /// content"). A missing `from` is `NotFound`. Local: a hard link; S3: a server-side copy
    /// (check-then-copy); the default reads and writes the bytes.
    async fn copy_if_absent(&self, from: &str, to: &str) -> StorageResult<PutOutcome> {
        let data = self.get(from).await?;
        self.put_if_absent(to, data).await
    }
    /// Starts an upload to `key` for [`put_stream`] (its only caller). Every backend in this
    /// crate implements the four `upload_*` steps; the defaults refuse, for test doubles.
    async fn upload_start(&self, key: &str) -> StorageResult<Upload> {
        Err(StorageError::Permanent(format!(
            "{}: streamed uploads are not supported (key {key})",
            self.describe()
        )))
    }
    /// Stores one part; storing the same part again replaces it (so a retry is safe).
    async fn upload_part(
        &self,
        upload: &Upload,
        part: Part,
        data: Bytes,
    ) -> StorageResult<PartReceipt> {
        let _ = (part, data);
        Err(StorageError::Permanent(format!(
            "{}: streamed uploads are not supported (key {})",
            self.describe(),
            upload.key
        )))
    }
    /// Makes the object whole, durable and visible from `parts` (in order, `total` bytes).
    async fn upload_finish(
        &self,
        upload: &Upload,
        parts: &[PartReceipt],
        total: u64,
    ) -> StorageResult<()> {
        let _ = (parts, total);
        Err(StorageError::Permanent(format!(
            "{}: streamed uploads are not supported (key {})",
            self.describe(),
            upload.key
        )))
    }
    /// Gives an upload up: nothing becomes visible. Aborting an unknown upload succeeds.
    async fn upload_abort(&self, upload: &Upload) -> StorageResult<()> {
        let _ = upload;
        Ok(())
    }
    /// The object's bytes from `offset` on, in chunks. A missing key is `NotFound`. The
    /// default reads the whole object first (test doubles); real backends stream.
    async fn get_stream(&self, key: &str, offset: u64) -> StorageResult<ByteStream> {
        let data = self.get(key).await?;
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(data.len());
        Ok(stream::chunks_of(data.slice(start..), 1 << 20))
    }
    /// The size of part `number` (from 1) of a streamed upload, or `None` past the most parts
    /// one upload may have. The default is S3's schedule ([`stream::s3_part_size`]); wrappers
    /// pass their inner backend's answer on.
    fn part_size(&self, number: u32) -> Option<usize> {
        stream::s3_part_size(number)
    }
    /// A short description for logs and errors (never contains secrets).
    fn describe(&self) -> String;
}

pub type DynStorage = Arc<dyn Storage>;

/// A whole listing, page by page through [`Storage::list_page`] (each page its own call, so
/// the retry layer times and retries pages separately), sorted by key.
pub async fn list_all_pages<S: Storage + ?Sized>(
    storage: &S,
    prefix: &str,
) -> StorageResult<Vec<ObjectMeta>> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = storage.list_page(prefix, token.as_deref()).await?;
        out.extend(page.objects);
        match page.next {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

/// What [`create`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// This call wrote the object.
    Written,
    /// The object was there with exactly these bytes: an earlier attempt of this same write
    /// whose answer was lost (callers make their bytes unique, with a nonce or a label, when
    /// "someone else wrote the same" must not count as theirs).
    AlreadyOurs,
    /// Another object is there; its bytes.
    Taken(Bytes),
}

/// Creates `key` unless an object exists there, and on "already exists" reads it back to tell
/// an earlier attempt of this write from someone else's object. An "already exists" for an
/// object that then cannot be found is `Transient` (retry), never success.
pub async fn create(storage: &dyn Storage, key: &str, data: Bytes) -> StorageResult<Created> {
    match storage.put_if_absent(key, data.clone()).await? {
        PutOutcome::Written => Ok(Created::Written),
        PutOutcome::AlreadyExists => match storage.get(key).await {
            Ok(found) if found == data => Ok(Created::AlreadyOurs),
            Ok(found) => Ok(Created::Taken(found)),
            Err(StorageError::NotFound(_)) => Err(StorageError::Transient(format!(
                "{}: the store said {key} exists, but it cannot be read back; retry",
                storage.describe()
            ))),
            Err(e) => Err(e),
        },
    }
}
