//! A fault-injecting wrapper for tests: fails calls, hangs them, or corrupts what they read.
//!
//! The knobs take `&self` so a test can turn faults on and off while the store is shared with
//! the code under test (`Arc<FaultyStorage>` coerces to [`DynStorage`]); they return `&Self` so
//! they chain: `faulty.fail_next(3).corrupt_reads(true)`.
//!
//! Injected failures happen before the inner store is called, so a failed write never partly
//! happens — except [`FaultyStorage::lose_acks`], which lets a write commit and then loses its
//! answer, as a dropped connection after a successful PUT does. A hang or a delay is a plain
//! `tokio::time::sleep` before the call: dropping the future (a deadline firing) cancels it, as
//! it would cancel a real stuck request.

use super::stream::{ByteStream, Part, PartReceipt, Upload};
use super::{
    DeleteFailure, DynStorage, ListPage, ObjectMeta, PutOutcome, Storage, StorageError,
    StorageResult,
};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// Which keys of the next `delete_many` calls fail (see [`FaultyStorage::fail_batch_keys`]).
#[derive(Debug)]
struct BatchKeyFailures {
    every: usize,
    rounds: usize,
    permanent: bool,
}

/// A failure rule for calls of one method on keys with a prefix.
#[derive(Debug)]
struct KeyRule {
    op: &'static str,
    prefix: String,
    /// Calls still to fail; `None` while the rule is on for good.
    remaining: Option<usize>,
    permanent: bool,
}

#[derive(Debug)]
pub struct FaultyStorage {
    inner: DynStorage,
    fail_next: AtomicUsize,
    fail_puts_permanently: AtomicBool,
    hang: Mutex<Option<Duration>>,
    corrupt_reads: Mutex<Option<String>>,
    failing_ops: Mutex<Vec<&'static str>>,
    key_rules: Mutex<Vec<KeyRule>>,
    lost_acks: Mutex<Vec<(String, usize)>>,
    delays: Mutex<Vec<(&'static str, String, Duration)>>,
    throttle: Mutex<Option<u64>>,
    broken_streams: Mutex<Vec<u64>>,
    batch_key_failures: Mutex<Option<BatchKeyFailures>>,
    calls: AtomicUsize,
    injected: AtomicUsize,
}

impl FaultyStorage {
    /// Wraps `inner` with every fault off.
    pub fn new(inner: DynStorage) -> FaultyStorage {
        FaultyStorage {
            inner,
            fail_next: AtomicUsize::new(0),
            fail_puts_permanently: AtomicBool::new(false),
            hang: Mutex::new(None),
            corrupt_reads: Mutex::new(None),
            failing_ops: Mutex::new(Vec::new()),
            key_rules: Mutex::new(Vec::new()),
            lost_acks: Mutex::new(Vec::new()),
            delays: Mutex::new(Vec::new()),
            throttle: Mutex::new(None),
            broken_streams: Mutex::new(Vec::new()),
            batch_key_failures: Mutex::new(None),
            calls: AtomicUsize::new(0),
            injected: AtomicUsize::new(0),
        }
    }

    /// The next `n` calls of any method fail with `Transient` (replaces any remaining count).
    pub fn fail_next(&self, n: usize) -> &Self {
        self.fail_next.store(n, Ordering::SeqCst);
        self
    }

    /// While on, `put` and `put_if_absent` fail with `Permanent` without writing.
    pub fn fail_puts_permanently(&self, on: bool) -> &Self {
        self.fail_puts_permanently.store(on, Ordering::SeqCst);
        self
    }

    /// While `Some(d)`, every call sleeps `d` before doing anything (a stuck store).
    pub fn hang(&self, d: Option<Duration>) -> &Self {
        *self.hang.lock().unwrap_or_else(|e| e.into_inner()) = d;
        self
    }

    /// While on, `get` returns the object with the byte in its middle flipped.
    pub fn corrupt_reads(&self, on: bool) -> &Self {
        *self.corrupt_reads.lock().unwrap_or_else(|e| e.into_inner()) = on.then(String::new);
        self
    }

    /// Like [`FaultyStorage::corrupt_reads`], for keys starting with `key_prefix` only (one
    /// block, say, so that planning still reads its manifests).
    pub fn corrupt_reads_of(&self, key_prefix: &str) -> &Self {
        *self.corrupt_reads.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(key_prefix.to_string());
        self
    }

    /// While on, every call of the method named `op` (`"put"`, `"list_after"`, …) fails with
    /// `Transient`, whatever the other knobs say.
    pub fn fail_op(&self, op: &'static str, on: bool) -> &Self {
        let mut ops = self.failing_ops.lock().unwrap_or_else(|e| e.into_inner());
        ops.retain(|o| *o != op);
        if on {
            ops.push(op);
        }
        drop(ops);
        self
    }

    /// The next `n` calls of the method named `op` fail with `Transient` (replaces an earlier
    /// rule for `op` on all keys).
    pub fn fail_op_next(&self, op: &'static str, n: usize) -> &Self {
        self.fail_keys(op, "", n)
    }

    /// The next `n` calls of `op` on keys starting with `key_prefix` fail with `Transient`
    /// (replaces an earlier rule for the same pair).
    pub fn fail_keys(&self, op: &'static str, key_prefix: &str, n: usize) -> &Self {
        self.set_rule(op, key_prefix, Some(n), false)
    }

    /// While on, every call of `op` on keys starting with `key_prefix` fails with `Permanent`.
    pub fn refuse_keys(&self, op: &'static str, key_prefix: &str, on: bool) -> &Self {
        self.set_rule(op, key_prefix, if on { None } else { Some(0) }, true)
    }

    fn set_rule(
        &self,
        op: &'static str,
        prefix: &str,
        remaining: Option<usize>,
        permanent: bool,
    ) -> &Self {
        let mut rules = self.key_rules.lock().unwrap_or_else(|e| e.into_inner());
        rules.retain(|r| !(r.op == op && r.prefix == prefix));
        if remaining != Some(0) {
            rules.push(KeyRule {
                op,
                prefix: prefix.to_string(),
                remaining,
                permanent,
            });
        }
        drop(rules);
        self
    }

    /// The rule that fails this call, if any (counting it down): `Some(permanent)`.
    fn rule_for(&self, op: &str, key: &str) -> Option<bool> {
        let mut rules = self.key_rules.lock().unwrap_or_else(|e| e.into_inner());
        let rule = rules
            .iter_mut()
            .find(|r| r.op == op && key.starts_with(r.prefix.as_str()) && r.remaining != Some(0))?;
        if let Some(n) = &mut rule.remaining {
            *n -= 1;
        }
        Some(rule.permanent)
    }

    /// The next `n` writes (`put`, `put_if_absent`) of keys starting with `key_prefix` reach
    /// the inner store and commit, and then fail with `Transient`: the answer was lost.
    pub fn lose_acks(&self, key_prefix: &str, n: usize) -> &Self {
        let mut rules = self.lost_acks.lock().unwrap_or_else(|e| e.into_inner());
        rules.retain(|(p, _)| p != key_prefix);
        rules.push((key_prefix.to_string(), n));
        drop(rules);
        self
    }

    /// Every call of `op` on a key starting with `key_prefix` sleeps `d` first (replacing an
    /// earlier delay for the same pair; `Duration::ZERO` removes it).
    pub fn delay(&self, op: &'static str, key_prefix: &str, d: Duration) -> &Self {
        let mut delays = self.delays.lock().unwrap_or_else(|e| e.into_inner());
        delays.retain(|(o, p, _)| !(*o == op && p == key_prefix));
        if !d.is_zero() {
            delays.push((op, key_prefix.to_string(), d));
        }
        drop(delays);
        self
    }

    /// While `Some(rate)`, `put`, `put_if_absent` and `get` move their bytes at `rate` bytes
    /// per second (a slow link): they take `size / rate` longer, a get after reading.
    pub fn throttle(&self, bytes_per_second: Option<u64>) -> &Self {
        *self.throttle.lock().unwrap_or_else(|e| e.into_inner()) = bytes_per_second;
        self
    }

    /// The next streamed get (one per call of this knob) fails with an IO error once it has
    /// delivered `after` bytes: a connection dropped mid-download.
    pub fn break_stream_after(&self, after: u64) -> &Self {
        self.broken_streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(after);
        self
    }

    /// In each of the next `rounds` calls of `delete_many`, every `every`-th key of the batch
    /// (the 1st, the `every+1`-th, …) is not deleted and is answered with a per-key error:
    /// `Transient` (an S3 `InternalError` for one key) or, with `permanent`, `Permanent`
    /// (`AccessDenied`). The other keys go to the inner store's `delete_many`. To fail whole
    /// requests (a 503), use `fail_op_next("delete_many", n)`.
    pub fn fail_batch_keys(&self, every: usize, rounds: usize, permanent: bool) -> &Self {
        *self
            .batch_key_failures
            .lock()
            .unwrap_or_else(|e| e.into_inner()) =
            (every > 0 && rounds > 0).then_some(BatchKeyFailures {
                every,
                rounds,
                permanent,
            });
        self
    }

    /// Sleeps as long as moving `len` bytes takes on the throttled link.
    async fn transfer(&self, len: usize) {
        let rate = *self.throttle.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(rate) = rate.filter(|r| *r > 0) {
            tokio::time::sleep(Duration::from_secs_f64(len as f64 / rate as f64)).await;
        }
    }

    /// Whether this write's answer is to be lost (counts one down).
    fn lose_this_ack(&self, op: &str, key: &str) -> StorageResult<()> {
        let lose = self
            .lost_acks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter_mut()
            .find(|(p, n)| *n > 0 && key.starts_with(p.as_str()))
            .map(|(_, n)| *n -= 1)
            .is_some();
        if lose {
            self.injected.fetch_add(1, Ordering::SeqCst);
            return Err(StorageError::Transient(format!(
                "injected lost answer: {op} {key} was committed"
            )));
        }
        Ok(())
    }

    /// Calls of any method so far, including the ones that failed.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Calls that failed because of an injected fault.
    pub fn injected_failures(&self) -> usize {
        self.injected.load(Ordering::SeqCst)
    }

    /// Counts the call, hangs if asked, and fails it if a fault is armed.
    async fn before(&self, op: &str, key: &str, is_put: bool) -> StorageResult<()> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let hang = *self.hang.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = hang {
            tokio::time::sleep(d).await;
        }
        let delay = self
            .delays
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|(o, p, _)| *o == op && key.starts_with(p.as_str()))
            .map(|(_, _, d)| *d);
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        let armed = self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if armed {
            self.injected.fetch_add(1, Ordering::SeqCst);
            return Err(StorageError::Transient(format!(
                "injected transient failure: {op} {key}"
            )));
        }
        match self.rule_for(op, key) {
            Some(true) => {
                self.injected.fetch_add(1, Ordering::SeqCst);
                return Err(StorageError::Permanent(format!(
                    "injected permanent failure: {op} {key}"
                )));
            }
            Some(false) => {
                self.injected.fetch_add(1, Ordering::SeqCst);
                return Err(StorageError::Transient(format!(
                    "injected transient failure: {op} {key}"
                )));
            }
            None => {}
        }
        let op_fails = self
            .failing_ops
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&op);
        if op_fails {
            self.injected.fetch_add(1, Ordering::SeqCst);
            return Err(StorageError::Transient(format!(
                "injected transient failure of every {op}: {key}"
            )));
        }
        if is_put && self.fail_puts_permanently.load(Ordering::SeqCst) {
            self.injected.fetch_add(1, Ordering::SeqCst);
            return Err(StorageError::Permanent(format!(
                "injected permanent failure: {op} {key}"
            )));
        }
        Ok(())
    }
}

#[async_trait]
impl Storage for FaultyStorage {
    async fn put(&self, key: &str, data: Bytes) -> StorageResult<()> {
        self.before("put", key, true).await?;
        self.transfer(data.len()).await;
        self.inner.put(key, data).await?;
        self.lose_this_ack("put", key)
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> StorageResult<PutOutcome> {
        self.before("put_if_absent", key, true).await?;
        self.transfer(data.len()).await;
        let outcome = self.inner.put_if_absent(key, data).await?;
        self.lose_this_ack("put_if_absent", key)?;
        Ok(outcome)
    }

    async fn get(&self, key: &str) -> StorageResult<Bytes> {
        self.before("get", key, false).await?;
        let data = self.inner.get(key).await?;
        self.transfer(data.len()).await;
        let corrupt = self
            .corrupt_reads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_deref()
            .is_some_and(|p| key.starts_with(p));
        if corrupt && !data.is_empty() {
            let mut v = data.to_vec();
            let mid = v.len() / 2;
            v[mid] ^= 0xff;
            return Ok(Bytes::from(v));
        }
        Ok(data)
    }

    async fn head(&self, key: &str) -> StorageResult<Option<ObjectMeta>> {
        self.before("head", key, false).await?;
        self.inner.head(key).await
    }

    async fn list(&self, prefix: &str) -> StorageResult<Vec<ObjectMeta>> {
        self.before("list", prefix, false).await?;
        self.inner.list(prefix).await
    }

    async fn list_page(&self, prefix: &str, token: Option<&str>) -> StorageResult<ListPage> {
        self.before("list", prefix, false).await?;
        self.inner.list_page(prefix, token).await
    }

    async fn list_after(
        &self,
        prefix: &str,
        start_after: &str,
        limit: usize,
    ) -> StorageResult<Vec<ObjectMeta>> {
        self.before("list_after", start_after, false).await?;
        self.inner.list_after(prefix, start_after, limit).await
    }

    async fn delete(&self, key: &str) -> StorageResult<()> {
        self.before("delete", key, false).await?;
        self.inner.delete(key).await
    }

    /// Whole-request rules and delays apply under the op name `delete_many` and the batch's
    /// first key; [`FaultyStorage::fail_batch_keys`] fails single keys of it.
    async fn delete_many(&self, keys: &[String]) -> Vec<DeleteFailure> {
        let first = keys.first().map(String::as_str).unwrap_or_default();
        if let Err(error) = self.before("delete_many", first, false).await {
            return keys
                .iter()
                .map(|key| DeleteFailure {
                    key: key.clone(),
                    error: error.clone(),
                })
                .collect();
        }
        let rule = {
            let mut armed = self
                .batch_key_failures
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let rule = armed.as_mut().map(|r| {
                r.rounds -= 1;
                (r.every, r.permanent)
            });
            if armed.as_ref().is_some_and(|r| r.rounds == 0) {
                *armed = None;
            }
            rule
        };
        let Some((every, permanent)) = rule else {
            return self.inner.delete_many(keys).await;
        };
        let mut failed = Vec::new();
        let mut rest = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            if i % every == 0 {
                self.injected.fetch_add(1, Ordering::SeqCst);
                let error = if permanent {
                    StorageError::Permanent(format!("injected AccessDenied for {key} in a batch"))
                } else {
                    StorageError::Transient(format!("injected InternalError for {key} in a batch"))
                };
                failed.push(DeleteFailure {
                    key: key.clone(),
                    error,
                });
            } else {
                rest.push(key.clone());
            }
        }
        failed.extend(self.inner.delete_many(&rest).await);
        failed
    }

    async fn copy_if_absent(&self, from: &str, to: &str) -> StorageResult<PutOutcome> {
        self.before("copy_if_absent", to, true).await?;
        let outcome = self.inner.copy_if_absent(from, to).await?;
        self.lose_this_ack("copy_if_absent", to)?;
        Ok(outcome)
    }

    async fn upload_start(&self, key: &str) -> StorageResult<Upload> {
        self.before("upload_start", key, true).await?;
        self.inner.upload_start(key).await
    }

    async fn upload_part(
        &self,
        upload: &Upload,
        part: Part,
        data: Bytes,
    ) -> StorageResult<PartReceipt> {
        self.before("upload_part", &upload.key, true).await?;
        self.transfer(data.len()).await;
        self.inner.upload_part(upload, part, data).await
    }

    /// Lost answers ([`FaultyStorage::lose_acks`]) apply here: the object becomes visible
    /// and the call still fails.
    async fn upload_finish(
        &self,
        upload: &Upload,
        parts: &[PartReceipt],
        total: u64,
    ) -> StorageResult<()> {
        self.before("upload_finish", &upload.key, true).await?;
        self.inner.upload_finish(upload, parts, total).await?;
        self.lose_this_ack("upload_finish", &upload.key)
    }

    async fn upload_abort(&self, upload: &Upload) -> StorageResult<()> {
        self.before("upload_abort", &upload.key, false).await?;
        self.inner.upload_abort(upload).await
    }

    async fn get_stream(&self, key: &str, offset: u64) -> StorageResult<ByteStream> {
        self.before("get_stream", key, false).await?;
        let inner = self.inner.get_stream(key, offset).await?;
        let break_after = {
            let mut armed = self
                .broken_streams
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            (!armed.is_empty()).then(|| armed.remove(0))
        };
        let Some(limit) = break_after else {
            return Ok(inner);
        };
        self.injected.fetch_add(1, Ordering::SeqCst);
        let key = key.to_string();
        // Deliver up to `limit` bytes (cutting a chunk if needed), then fail.
        let broken =
            futures::stream::unfold((inner, 0u64, false), move |(mut inner, sent, done)| {
                let key = key.clone();
                async move {
                    if done {
                        return None;
                    }
                    if sent >= limit {
                        let e = std::io::Error::other(format!(
                            "injected broken stream: {key} after {sent} bytes"
                        ));
                        return Some((Err(e), (inner, sent, true)));
                    }
                    match inner.next().await {
                        None => None,
                        Some(Ok(chunk)) => {
                            let room = usize::try_from(limit - sent).unwrap_or(usize::MAX);
                            let chunk = chunk.slice(..chunk.len().min(room));
                            let sent = sent + chunk.len() as u64;
                            Some((Ok(chunk), (inner, sent, false)))
                        }
                        Some(Err(e)) => Some((Err(e), (inner, sent, true))),
                    }
                }
            });
        Ok(broken.boxed())
    }

    fn part_size(&self, number: u32) -> Option<usize> {
        self.inner.part_size(number)
    }

    fn describe(&self) -> String {
        format!("faulty({})", self.inner.describe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::MemoryStorage;
    use std::sync::Arc;

    #[tokio::test]
    async fn knobs_work_while_shared() {
        let mem = Arc::new(MemoryStorage::new());
        let f = Arc::new(FaultyStorage::new(mem.clone()));
        let s: DynStorage = f.clone();
        f.fail_next(2);
        assert!(
            s.put("k", Bytes::from_static(b"abc"))
                .await
                .unwrap_err()
                .is_transient()
        );
        assert!(s.get("k").await.unwrap_err().is_transient());
        assert_eq!(
            mem.calls(),
            0,
            "failures are injected before the inner store"
        );
        s.put("k", Bytes::from_static(b"abc")).await.unwrap();

        f.corrupt_reads(true);
        assert_eq!(&s.get("k").await.unwrap()[..], b"a\x9dc");
        f.corrupt_reads(false).fail_puts_permanently(true);
        assert!(matches!(
            s.put_if_absent("x", Bytes::new()).await,
            Err(StorageError::Permanent(_))
        ));
        assert_eq!(s.head("x").await.unwrap(), None);
        assert_eq!(f.calls(), 6);
        assert_eq!(f.injected_failures(), 3);
    }

    #[tokio::test]
    async fn hang_is_cancellable() {
        let f = FaultyStorage::new(Arc::new(MemoryStorage::new()));
        f.hang(Some(Duration::from_secs(3600)));
        let r = tokio::time::timeout(Duration::from_millis(20), f.list("")).await;
        assert!(r.is_err());
        f.hang(None);
        assert!(f.list("").await.unwrap().is_empty());
    }
}
