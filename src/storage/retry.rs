//! Deadlines and retries for any [`Storage`].
//!
//! Every call made through [`RetryingStorage`] runs under a per-attempt deadline, so a stuck
//! store turns into a `Transient` error instead of a hang (DESIGN principle 1: PostgreSQL must
//! get a failure it can retry, quickly). `Transient` errors are retried with exponential backoff
//! and full jitter (sleep a random time in `[0, min(max, base * 2^n)]`); `NotFound` and
//! `Permanent` return at once because retrying cannot change them. Backends do not retry on
//! their own (the S3 client has its retries disabled), so this is the one place that decides.
//!
//! Deadlines grow with the bytes moved: an attempt that transfers `n` bytes may take
//! `attempt_timeout + n / min_throughput`, so a 16 MiB segment or a large manifest on a slow
//! but working link is not abandoned and re-sent forever, while a stall on a small object is
//! still caught by the plain deadline. A put knows its size. A get does not before it starts:
//! its first attempt has the plain deadline, and when that expires the object's size is asked
//! with a `head` (one small request) and the next attempts get the deadline of that size.
//!
//! Streams: each step of a streamed upload is its own call here (a part is retried with its
//! bytes, which the caller holds), and the stream itself is never replayed. A streamed get
//! gets a deadline per chunk; when a chunk fails or does not come, the object is opened again
//! at the offset reached, up to `attempts` times in a row without progress.
//!
//! `put_if_absent` and retries: when an attempt times out or fails after the store already
//! wrote the object, the next attempt finds that object and reports
//! [`PutOutcome::AlreadyExists`] although this call wrote it. Callers of `put_if_absent`
//! already have to compare the existing object with what they meant to write (an identical
//! object is success), so that answer is safe; it is never reported as `Written` wrongly.

use super::stream::{ByteStream, Part, PartReceipt, Upload};
use super::{
    DELETE_BATCH, DeleteFailure, DynStorage, ListPage, ObjectMeta, PutOutcome, Storage,
    StorageError, StorageResult,
};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use rand::Rng;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// How hard to try one storage call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total, including the first (at least 1).
    pub attempts: u32,
    /// Deadline of one attempt; an attempt that takes longer is abandoned as `Transient`.
    pub attempt_timeout: Duration,
    /// Upper bound of the sleep after the first failure; doubles with each further failure.
    pub base_backoff: Duration,
    /// Cap of the backoff bound.
    pub max_backoff: Duration,
    /// The slowest transfer rate (bytes per second) still taken for a working link; each
    /// attempt gets `size / min_throughput` on top of `attempt_timeout`.
    pub min_throughput: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            attempt_timeout: Duration::from_secs(30),
            base_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            min_throughput: 1 << 20,
        }
    }
}

impl RetryPolicy {
    /// The deadline of one attempt that moves `bytes` bytes.
    pub fn deadline_for(&self, bytes: u64) -> Duration {
        let transfer = Duration::from_secs_f64(bytes as f64 / self.min_throughput.max(1) as f64);
        self.attempt_timeout.saturating_add(transfer)
    }

    /// The sleep after attempt number `failed_attempt` (1-based) failed: full jitter.
    pub fn backoff(&self, failed_attempt: u32) -> Duration {
        let exp = failed_attempt.saturating_sub(1).min(31);
        let bound = self
            .base_backoff
            .saturating_mul(1u32 << exp)
            .min(self.max_backoff);
        let nanos = u64::try_from(bound.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rand::thread_rng().gen_range(0..=nanos))
    }
}

#[derive(Debug)]
pub struct RetryingStorage {
    inner: DynStorage,
    policy: RetryPolicy,
}

/// `inner` behind deadlines and retries, as a [`DynStorage`].
pub fn wrap(inner: DynStorage, policy: RetryPolicy) -> DynStorage {
    Arc::new(RetryingStorage::new(inner, policy))
}

impl RetryingStorage {
    pub fn new(inner: DynStorage, policy: RetryPolicy) -> RetryingStorage {
        RetryingStorage { inner, policy }
    }

    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    async fn run<T, F, Fut>(&self, op: &'static str, key: &str, call: F) -> StorageResult<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = StorageResult<T>>,
    {
        self.run_sized(op, key, Transfer::Small, call).await
    }

    async fn run_sized<T, F, Fut>(
        &self,
        op: &'static str,
        key: &str,
        mut transfer: Transfer,
        mut call: F,
    ) -> StorageResult<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = StorageResult<T>>,
    {
        let attempts = self.policy.attempts.max(1);
        let mut attempt = 1;
        loop {
            let deadline = self.policy.deadline_for(transfer.bytes());
            let result = match tokio::time::timeout(deadline, call()).await {
                Ok(r) => r,
                Err(_) => {
                    if transfer == Transfer::Download {
                        transfer = self.size_of(key).await;
                    }
                    Err(StorageError::Transient(format!(
                        "{op} `{key}` on {}: no answer within {deadline:?}",
                        self.inner.describe(),
                    )))
                }
            };
            match result {
                Ok(v) => return Ok(v),
                Err(StorageError::Transient(msg)) if attempt < attempts => {
                    let delay = self.policy.backoff(attempt);
                    tracing::warn!(
                        op,
                        key,
                        attempt,
                        attempts,
                        error = %msg,
                        retry_in = ?delay,
                        "storage call failed, retrying"
                    );
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(StorageError::Transient(msg)) => {
                    let tries = if attempts == 1 { "attempt" } else { "attempts" };
                    return Err(StorageError::Transient(format!(
                        "{msg} (gave up after {attempts} {tries})"
                    )));
                }
                Err(StorageError::Permanent(msg)) if attempt > 1 => {
                    return Err(StorageError::Permanent(format!(
                        "{msg} (on attempt {attempt} of {attempts})"
                    )));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// After a get ran out of time: how big the object is, so the next attempts get a
    /// deadline to match. Unknown (the head failed too) keeps the plain deadline.
    async fn size_of(&self, key: &str) -> Transfer {
        match tokio::time::timeout(self.policy.attempt_timeout, self.inner.head(key)).await {
            Ok(Ok(Some(meta))) => Transfer::Bytes(meta.size),
            _ => Transfer::Small,
        }
    }
}

/// How many bytes an attempt moves, for its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transfer {
    /// A request and a short answer (head, list, delete), or a get whose size is unknown.
    Small,
    /// A get not yet timed out: its size is learned if the plain deadline is not enough.
    Download,
    Bytes(u64),
}

impl Transfer {
    fn bytes(self) -> u64 {
        match self {
            Transfer::Bytes(n) => n,
            Transfer::Small | Transfer::Download => 0,
        }
    }
}

#[async_trait]
impl Storage for RetryingStorage {
    async fn put(&self, key: &str, data: Bytes) -> StorageResult<()> {
        let size = Transfer::Bytes(data.len() as u64);
        self.run_sized("put", key, size, || self.inner.put(key, data.clone()))
            .await
    }

    /// See the module documentation: a retried call may report `AlreadyExists` for an object
    /// that its own earlier attempt wrote.
    async fn put_if_absent(&self, key: &str, data: Bytes) -> StorageResult<PutOutcome> {
        let size = Transfer::Bytes(data.len() as u64);
        self.run_sized("put_if_absent", key, size, || {
            self.inner.put_if_absent(key, data.clone())
        })
        .await
    }

    async fn get(&self, key: &str) -> StorageResult<Bytes> {
        self.run_sized("get", key, Transfer::Download, || self.inner.get(key))
            .await
    }

    async fn head(&self, key: &str) -> StorageResult<Option<ObjectMeta>> {
        self.run("head", key, || self.inner.head(key)).await
    }

    /// Page by page, each page under its own deadline and retries, resuming from its
    /// continuation token: a long listing is never one attempt.
    async fn list(&self, prefix: &str) -> StorageResult<Vec<ObjectMeta>> {
        super::list_all_pages(self, prefix).await
    }

    async fn list_page(&self, prefix: &str, token: Option<&str>) -> StorageResult<ListPage> {
        self.run("list", prefix, || self.inner.list_page(prefix, token))
            .await
    }

    async fn list_after(
        &self,
        prefix: &str,
        start_after: &str,
        limit: usize,
    ) -> StorageResult<Vec<ObjectMeta>> {
        self.run("list", start_after, || {
            self.inner.list_after(prefix, start_after, limit)
        })
        .await
    }

    async fn delete(&self, key: &str) -> StorageResult<()> {
        self.run("delete", key, || self.inner.delete(key)).await
    }

    /// Retries only the keys that failed transiently (a 503 of a whole request fails all of
    /// its keys that way), with backoff, up to `attempts` rounds; each round has one deadline
    /// per [`DELETE_BATCH`] keys. A round that runs out of time retries all its keys (deleting
    /// twice is harmless).
    async fn delete_many(&self, keys: &[String]) -> Vec<DeleteFailure> {
        let attempts = self.policy.attempts.max(1);
        let mut pending: Vec<String> = keys.to_vec();
        let mut failed = Vec::new();
        let mut attempt = 1;
        while !pending.is_empty() {
            let batches = u32::try_from(pending.len().div_ceil(DELETE_BATCH)).unwrap_or(u32::MAX);
            let deadline = self.policy.attempt_timeout.saturating_mul(batches.max(1));
            let round = match tokio::time::timeout(deadline, self.inner.delete_many(&pending)).await
            {
                Ok(f) => f,
                Err(_) => {
                    let error = StorageError::Transient(format!(
                        "delete of {} keys on {}: no answer within {deadline:?}",
                        pending.len(),
                        self.inner.describe()
                    ));
                    pending
                        .iter()
                        .map(|key| DeleteFailure {
                            key: key.clone(),
                            error: error.clone(),
                        })
                        .collect()
                }
            };
            let (transient, other): (Vec<_>, Vec<_>) =
                round.into_iter().partition(|f| f.error.is_transient());
            failed.extend(other);
            if transient.is_empty() {
                break;
            }
            if attempt >= attempts {
                let tries = if attempts == 1 { "attempt" } else { "attempts" };
                failed.extend(transient.into_iter().map(|f| DeleteFailure {
                    error: StorageError::Transient(format!(
                        "{} (gave up after {attempts} {tries})",
                        f.error
                    )),
                    key: f.key,
                }));
                break;
            }
            let delay = self.policy.backoff(attempt);
            tracing::warn!(
                keys = transient.len(),
                attempt,
                attempts,
                first_error = %transient[0].error,
                retry_in = ?delay,
                "some deletes failed, retrying them"
            );
            tokio::time::sleep(delay).await;
            pending = transient.into_iter().map(|f| f.key).collect();
            attempt += 1;
        }
        failed
    }

    async fn copy_if_absent(&self, from: &str, to: &str) -> StorageResult<PutOutcome> {
        self.run("copy_if_absent", to, || self.inner.copy_if_absent(from, to))
            .await
    }

    async fn upload_start(&self, key: &str) -> StorageResult<Upload> {
        self.run("upload_start", key, || self.inner.upload_start(key))
            .await
    }

    async fn upload_part(
        &self,
        upload: &Upload,
        part: Part,
        data: Bytes,
    ) -> StorageResult<PartReceipt> {
        let size = Transfer::Bytes(data.len() as u64);
        self.run_sized("upload_part", &upload.key, size, || {
            self.inner.upload_part(upload, part, data.clone())
        })
        .await
    }

    /// Sized by the whole object: a store may take a while to assemble many parts.
    async fn upload_finish(
        &self,
        upload: &Upload,
        parts: &[PartReceipt],
        total: u64,
    ) -> StorageResult<()> {
        self.run_sized("upload_finish", &upload.key, Transfer::Bytes(total), || {
            self.inner.upload_finish(upload, parts, total)
        })
        .await
    }

    async fn upload_abort(&self, upload: &Upload) -> StorageResult<()> {
        self.run("upload_abort", &upload.key, || {
            self.inner.upload_abort(upload)
        })
        .await
    }

    async fn get_stream(&self, key: &str, offset: u64) -> StorageResult<ByteStream> {
        let first = self
            .run("get_stream", key, || self.inner.get_stream(key, offset))
            .await?;
        let resume = Resume {
            inner: self.inner.clone(),
            policy: self.policy,
            key: key.to_string(),
            offset,
            stream: Some(first),
            failures: 0,
        };
        Ok(futures::stream::unfold(resume, Resume::next).boxed())
    }

    fn part_size(&self, number: u32) -> Option<usize> {
        self.inner.part_size(number)
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}

/// A streamed get that re-opens its object where it left off.
struct Resume {
    inner: DynStorage,
    policy: RetryPolicy,
    key: String,
    /// Offset of the next byte to deliver.
    offset: u64,
    /// `None` once finished or failed for good.
    stream: Option<ByteStream>,
    /// Failures in a row without a byte delivered.
    failures: u32,
}

impl Resume {
    async fn next(mut self) -> Option<(std::io::Result<Bytes>, Resume)> {
        loop {
            let stream = self.stream.as_mut()?;
            let failure =
                match tokio::time::timeout(self.policy.attempt_timeout, stream.next()).await {
                    Ok(None) => return None,
                    Ok(Some(Ok(chunk))) => {
                        self.offset += chunk.len() as u64;
                        self.failures = 0;
                        return Some((Ok(chunk), self));
                    }
                    Ok(Some(Err(e))) => e.to_string(),
                    Err(_) => format!("no data within {:?}", self.policy.attempt_timeout),
                };
            if let Err(e) = self.reopen(failure).await {
                self.stream = None;
                return Some((Err(e), self));
            }
        }
    }

    /// Opens the object again at `offset`, retrying, or says why it gave up.
    async fn reopen(&mut self, mut failure: String) -> std::io::Result<()> {
        loop {
            self.failures += 1;
            if self.failures >= self.policy.attempts.max(1) {
                return Err(std::io::Error::other(format!(
                    "get `{}` on {}: {failure} at byte {} (gave up after {} attempts)",
                    self.key,
                    self.inner.describe(),
                    self.offset,
                    self.failures
                )));
            }
            let delay = self.policy.backoff(self.failures);
            tracing::warn!(key = %self.key, offset = self.offset, error = %failure, retry_in = ?delay,
                "streamed read failed, resuming");
            tokio::time::sleep(delay).await;
            let open = self.inner.get_stream(&self.key, self.offset);
            match tokio::time::timeout(self.policy.attempt_timeout, open).await {
                Ok(Ok(s)) => {
                    self.stream = Some(s);
                    return Ok(());
                }
                Ok(Err(StorageError::Transient(m))) => failure = m,
                Ok(Err(e)) => {
                    return Err(std::io::Error::other(format!(
                        "get `{}` on {}: cannot resume at byte {}: {e}",
                        self.key,
                        self.inner.describe(),
                        self.offset
                    )));
                }
                Err(_) => failure = format!("no answer within {:?}", self.policy.attempt_timeout),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::faulty::FaultyStorage;
    use crate::storage::memory::MemoryStorage;

    fn quick(attempts: u32) -> RetryPolicy {
        RetryPolicy {
            attempts,
            attempt_timeout: Duration::from_millis(200),
            base_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(5),
            ..RetryPolicy::default()
        }
    }

    #[test]
    fn backoff_is_bounded_and_grows() {
        let p = RetryPolicy::default();
        for n in 1..40 {
            let bound = Duration::from_millis(100)
                .saturating_mul(1 << (n - 1).min(31))
                .min(Duration::from_secs(5));
            assert!(p.backoff(n) <= bound, "attempt {n}");
        }
        let zero = RetryPolicy {
            base_backoff: Duration::ZERO,
            ..p
        };
        assert_eq!(zero.backoff(3), Duration::ZERO);
    }

    #[tokio::test]
    async fn transient_failures_are_retried() {
        let faulty = Arc::new(FaultyStorage::new(Arc::new(MemoryStorage::new())));
        let s = RetryingStorage::new(faulty.clone(), quick(3));
        faulty.fail_next(2);
        s.put("k", Bytes::from_static(b"v")).await.unwrap();
        assert_eq!(faulty.calls(), 3);

        faulty.fail_next(3);
        let err = s.get("k").await.unwrap_err();
        assert!(err.is_transient(), "{err}");
        assert!(
            err.to_string().contains("gave up after 3 attempts"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn not_found_and_permanent_are_not_retried() {
        let faulty = Arc::new(FaultyStorage::new(Arc::new(MemoryStorage::new())));
        let s = RetryingStorage::new(faulty.clone(), quick(5));
        assert!(s.get("missing").await.unwrap_err().is_not_found());
        assert_eq!(faulty.calls(), 1);
        faulty.fail_puts_permanently(true);
        assert!(matches!(
            s.put("k", Bytes::new()).await,
            Err(StorageError::Permanent(_))
        ));
        assert_eq!(faulty.calls(), 2);
    }

    #[tokio::test]
    async fn large_transfers_get_time_in_proportion_to_their_size() {
        let faulty = Arc::new(FaultyStorage::new(Arc::new(MemoryStorage::new())));
        let s = RetryingStorage::new(faulty.clone(), quick(3));
        let big = Bytes::from(vec![7u8; 1 << 20]);
        // A link at 4 MiB/s: 250 ms for the object, beyond the 200 ms attempt deadline, yet
        // faster than the slowest transfer the policy accepts.
        faulty.throttle(Some(4 << 20));
        s.put("big", big.clone()).await.unwrap();
        assert_eq!(faulty.calls(), 1, "one attempt was enough");
        assert_eq!(s.get("big").await.unwrap(), big);
        assert_eq!(
            faulty.calls(),
            4,
            "a get with the plain deadline, a head for the size, a get with a sized deadline"
        );
        // A small object on the same link still has the plain deadline: a stall is a stall.
        s.put("small", Bytes::from_static(b"x")).await.unwrap();
        faulty.hang(Some(Duration::from_secs(3600)));
        let err = s.get("small").await.unwrap_err();
        assert!(err.to_string().contains("no answer within 200ms"), "{err}");
    }

    #[tokio::test]
    async fn a_hanging_store_times_out() {
        let faulty = Arc::new(FaultyStorage::new(Arc::new(MemoryStorage::new())));
        faulty.hang(Some(Duration::from_secs(3600)));
        let policy = RetryPolicy {
            attempt_timeout: Duration::from_millis(20),
            ..quick(2)
        };
        let s = RetryingStorage::new(faulty.clone(), policy);
        let err = s.list("").await.unwrap_err();
        assert!(err.is_transient(), "{err}");
        assert!(err.to_string().contains("no answer within"), "{err}");
        assert_eq!(faulty.calls(), 2);
    }
}
