//! An in-memory store for tests: a sorted map behind a mutex.
//!
//! It keeps the whole contract trivially (every operation is one critical section, so puts are
//! atomic and `put_if_absent` is truly atomic) and counts calls so tests can assert on what a
//! command did, e.g. that a block already stored was not uploaded again.

use super::stream::{ByteStream, Part, PartReceipt, Upload, chunks_of};
use super::{ObjectMeta, PutOutcome, Storage, StorageError, StorageResult};
use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// One stored object: its bytes and when they were written (the `last_modified` it reports).
#[derive(Debug, Clone)]
struct Stored {
    data: Bytes,
    at: DateTime<Utc>,
}

impl Stored {
    fn now(data: Bytes) -> Stored {
        Stored {
            data,
            at: Utc::now(),
        }
    }

    fn meta(&self, key: &str) -> ObjectMeta {
        ObjectMeta {
            key: key.to_string(),
            size: self.data.len() as u64,
            last_modified: Some(self.at),
        }
    }
}

#[derive(Debug, Default)]
pub struct MemoryStorage {
    objects: Mutex<BTreeMap<String, Stored>>,
    /// Streamed uploads in progress: id → parts by offset.
    uploads: Mutex<BTreeMap<String, BTreeMap<u64, Bytes>>>,
    next_upload: AtomicUsize,
    puts: AtomicUsize,
    gets: AtomicUsize,
    calls: AtomicUsize,
}

impl MemoryStorage {
    pub fn new() -> MemoryStorage {
        MemoryStorage::default()
    }

    /// Calls of `put` and `put_if_absent` (whether or not they wrote).
    pub fn put_count(&self) -> usize {
        self.puts.load(Ordering::Relaxed)
    }

    /// Calls of `get`.
    pub fn get_count(&self) -> usize {
        self.gets.load(Ordering::Relaxed)
    }

    /// Calls of any method.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::Relaxed)
    }

    /// Number of objects stored.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    pub fn is_empty(&self) -> bool {
        self.map().is_empty()
    }

    /// Every key, sorted (handy in assertions).
    pub fn keys(&self) -> Vec<String> {
        self.map().keys().cloned().collect()
    }

    /// Makes `key` look written at `at` (tests of age rules: garbage collection's grace).
    /// Returns whether the object exists.
    pub fn set_modified(&self, key: &str, at: DateTime<Utc>) -> bool {
        self.map().get_mut(key).map(|o| o.at = at).is_some()
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Stored>> {
        // A panic while holding the lock cannot leave the map half-updated: every critical
        // section is a single map operation.
        self.objects.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Streamed uploads started and neither finished nor aborted.
    pub fn open_uploads(&self) -> usize {
        self.uploads.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn count(&self, put: bool) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if put {
            self.puts.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn check_key(key: &str) -> StorageResult<()> {
    if key.is_empty() {
        return Err(StorageError::Permanent("empty object key".into()));
    }
    Ok(())
}

#[async_trait]
impl Storage for MemoryStorage {
    async fn put(&self, key: &str, data: Bytes) -> StorageResult<()> {
        self.count(true);
        check_key(key)?;
        self.map().insert(key.to_string(), Stored::now(data));
        Ok(())
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> StorageResult<PutOutcome> {
        self.count(true);
        check_key(key)?;
        let mut map = self.map();
        if map.contains_key(key) {
            return Ok(PutOutcome::AlreadyExists);
        }
        map.insert(key.to_string(), Stored::now(data));
        Ok(PutOutcome::Written)
    }

    async fn get(&self, key: &str) -> StorageResult<Bytes> {
        self.count(false);
        self.gets.fetch_add(1, Ordering::Relaxed);
        check_key(key)?;
        self.map()
            .get(key)
            .map(|o| o.data.clone())
            .ok_or_else(|| StorageError::NotFound(key.to_string()))
    }

    async fn head(&self, key: &str) -> StorageResult<Option<ObjectMeta>> {
        self.count(false);
        check_key(key)?;
        Ok(self.map().get(key).map(|o| o.meta(key)))
    }

    async fn list(&self, prefix: &str) -> StorageResult<Vec<ObjectMeta>> {
        self.count(false);
        Ok(self
            .map()
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, o)| o.meta(k))
            .collect())
    }

    async fn list_after(
        &self,
        prefix: &str,
        start_after: &str,
        limit: usize,
    ) -> StorageResult<Vec<ObjectMeta>> {
        use std::ops::Bound;
        self.count(false);
        let from = start_after.max(prefix).to_string();
        let lower = if from == start_after {
            Bound::Excluded(from)
        } else {
            Bound::Included(from)
        };
        Ok(self
            .map()
            .range((lower, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .map(|(k, o)| o.meta(k))
            .collect())
    }

    async fn delete(&self, key: &str) -> StorageResult<()> {
        self.count(false);
        check_key(key)?;
        self.map().remove(key);
        Ok(())
    }

    async fn upload_start(&self, key: &str) -> StorageResult<Upload> {
        self.count(false);
        check_key(key)?;
        let id = format!(
            "upload-{}",
            self.next_upload.fetch_add(1, Ordering::Relaxed)
        );
        self.uploads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), BTreeMap::new());
        Ok(Upload {
            key: key.to_string(),
            id,
        })
    }

    async fn upload_part(
        &self,
        upload: &Upload,
        part: Part,
        data: Bytes,
    ) -> StorageResult<PartReceipt> {
        self.count(true);
        let mut uploads = self.uploads.lock().unwrap_or_else(|e| e.into_inner());
        let parts = uploads.get_mut(&upload.id).ok_or_else(|| {
            StorageError::Permanent(format!("no upload {} for {}", upload.id, upload.key))
        })?;
        let len = data.len() as u64;
        parts.insert(part.offset, data);
        Ok(PartReceipt {
            number: part.number,
            len,
            etag: None,
            crc32: None,
        })
    }

    async fn upload_finish(
        &self,
        upload: &Upload,
        _parts: &[PartReceipt],
        total: u64,
    ) -> StorageResult<()> {
        self.count(true);
        let parts = self
            .uploads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&upload.id)
            .ok_or_else(|| {
                StorageError::Permanent(format!("no upload {} for {}", upload.id, upload.key))
            })?;
        let mut whole = Vec::new();
        for (offset, data) in parts {
            if offset != whole.len() as u64 {
                return Err(StorageError::Permanent(format!(
                    "upload to {} has a gap at byte {}",
                    upload.key,
                    whole.len()
                )));
            }
            whole.extend_from_slice(&data);
        }
        if whole.len() as u64 != total {
            return Err(StorageError::Permanent(format!(
                "upload to {} holds {} bytes, {total} were sent",
                upload.key,
                whole.len()
            )));
        }
        self.map()
            .insert(upload.key.clone(), Stored::now(Bytes::from(whole)));
        Ok(())
    }

    async fn upload_abort(&self, upload: &Upload) -> StorageResult<()> {
        self.count(false);
        self.uploads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&upload.id);
        Ok(())
    }

    async fn get_stream(&self, key: &str, offset: u64) -> StorageResult<ByteStream> {
        let data = self.get(key).await?;
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(data.len());
        Ok(chunks_of(data.slice(start..), 64 << 10))
    }

    fn describe(&self) -> String {
        "memory".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_calls() {
        let m = MemoryStorage::new();
        m.put("a", Bytes::from_static(b"1")).await.unwrap();
        m.put_if_absent("a", Bytes::from_static(b"2"))
            .await
            .unwrap();
        m.get("a").await.unwrap();
        m.list("").await.unwrap();
        assert_eq!(m.put_count(), 2);
        assert_eq!(m.get_count(), 1);
        assert_eq!(m.calls(), 4);
        assert_eq!(m.keys(), vec!["a"]);
        assert_eq!(m.len(), 1);
    }
}
