//! A repository in an S3 bucket, or any S3-compatible store (`s3://bucket/prefix`).
//!
//! Objects live under `prefix/` in the bucket. Bodies up to [`SINGLE_PUT_MAX`] are one
//! PutObject; larger ones are a multipart upload of [`PART_SIZE`] parts, completed only after
//! every part is in and aborted on any failure, so a reader never sees a partial object.
//! `put_if_absent` uses a conditional write (`If-None-Match: *`); on a store that answers
//! `501 Not Implemented` to it, it falls back to head-then-put (check-then-write, as the trait
//! contract allows).
//!
//! The SDK's own retries are off: [`super::retry::RetryingStorage`] owns deadlines and retries
//! for every backend, and two retry layers would multiply the time a stuck store can hold up
//! `wal-push`. Errors are classified here, once, into `NotFound` / `Transient` / `Permanent`.
//! No message ever contains the secret key: messages are built from the bucket, key, HTTP status
//! and the service's error code and message.

use super::stream::{ByteStream as Chunks, Part, PartReceipt, Upload};
use super::{
    DELETE_BATCH, DeleteFailure, ListPage, ObjectMeta, PutOutcome, Storage, StorageError,
    StorageResult,
};
use crate::config::S3Config;
use anyhow::Context;
use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    BucketLocationConstraint, ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart,
    CreateBucketConfiguration, Delete, ObjectIdentifier,
};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Bodies up to this size are uploaded with a single PutObject.
pub const SINGLE_PUT_MAX: usize = 16 << 20;
/// Part size of multipart uploads (S3 allows 5 MiB to 5 GiB per part, 10 000 parts).
pub const PART_SIZE: usize = 8 << 20;
/// Parts of one upload in flight at once (bounds memory and connections per object).
const PART_PARALLELISM: usize = 4;
/// Time to establish a TCP (and TLS) connection before the attempt fails as transient.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_REGION: &str = "us-east-1";
/// DeleteObjects requests of one `delete_many` in flight at once.
const DELETE_PARALLELISM: usize = 4;

#[derive(Debug)]
pub struct S3Storage {
    client: Client,
    bucket: String,
    /// Without leading or trailing `/`; empty for the bucket root.
    prefix: String,
    region: String,
    endpoint: Option<String>,
    /// Set once the store answered 501 to a conditional write.
    no_conditional_writes: AtomicBool,
}

/// How an S3 failure is to be treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    NotFound,
    Transient,
    Permanent(&'static str),
}

const HINT_CREDENTIALS: &str = "check credentials ([repo.s3] access_key_id / secret_access_key, \
     or the AWS credential chain) and that they grant access to the bucket";
const HINT_BUCKET: &str = "create the bucket, or fix the bucket name in repo.url";
const HINT_NONE: &str = "";
const HINT_NO_CREDENTIALS: &str = "set [repo.s3] access_key_id and secret_access_key, or give \
     the user pgward runs as (postgres, for archive_command) AWS_ACCESS_KEY_ID / \
     AWS_SECRET_ACCESS_KEY, a profile in ~/.aws, or an instance role";

/// The longest cause text kept in a message: the SDK's errors carry whole request and
/// credential-chain structures that bury the one line an operator needs.
const MAX_CAUSE_CHARS: usize = 300;

/// An error and its causes as `a: b: c`, each only by its first line of `Display` (never its
/// `Debug`), skipping causes its parent already quoted, cut to [`MAX_CAUSE_CHARS`]. The SDK's
/// `DisplayErrorContext` prints the `Debug` of the whole chain too: 10 KB for a missing
/// credential.
fn short_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        let text = e.to_string();
        let line = text.lines().next().unwrap_or_default().trim().to_string();
        if !line.is_empty() && !parts.iter().any(|p| p.contains(&line)) {
            parts.push(line);
        }
        next = e.source();
    }
    let joined = parts.join(": ");
    match joined.char_indices().nth(MAX_CAUSE_CHARS) {
        Some((cut, _)) => format!("{}…", &joined[..cut]),
        None => joined,
    }
}

/// Whether a cause of `err` is the credential chain's failure (the SDK exposes no type for it
/// through aws-sdk-s3, so its text decides: every credential error says "credential").
fn mentions_credentials(err: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(err.source(), |e| e.source())
        .any(|e| e.to_string().to_ascii_lowercase().contains("credential"))
}

/// Classifies a service answer by HTTP status and S3 error code.
fn classify_response(status: Option<u16>, code: Option<&str>) -> Class {
    match code {
        Some(
            "SlowDown"
            | "RequestTimeout"
            | "InternalError"
            | "ServiceUnavailable"
            | "OperationAborted"
            | "RequestTimeTooSkewed"
            // "A conflicting conditional operation is currently in progress": retry.
            | "ConditionalRequestConflict",
        ) => return Class::Transient,
        Some("NoSuchBucket") => return Class::Permanent(HINT_BUCKET),
        Some(
            "AccessDenied"
            | "InvalidAccessKeyId"
            | "SignatureDoesNotMatch"
            | "ExpiredToken"
            | "InvalidToken",
        ) => return Class::Permanent(HINT_CREDENTIALS),
        Some("NoSuchKey" | "NotFound") => return Class::NotFound,
        _ => {}
    }
    match status {
        Some(401 | 403) => Class::Permanent(HINT_CREDENTIALS),
        Some(404) => Class::NotFound,
        Some(408 | 429) => Class::Transient,
        // A 409 without a code is how some stores say ConditionalRequestConflict.
        Some(409) if code.is_none() => Class::Transient,
        Some(501) => Class::Permanent(HINT_NONE),
        Some(s) if s >= 500 => Class::Transient,
        Some(_) => Class::Permanent(HINT_NONE),
        // No answer we could read: treat like a dropped connection.
        None => Class::Transient,
    }
}

/// The HTTP status of a service answer, if there was one.
fn status_of<E>(err: &SdkError<E>) -> Option<u16> {
    err.raw_response().map(|r| r.status().as_u16())
}

impl S3Storage {
    /// A client for `s3://bucket/prefix`. Without `cfg`, or where it is silent, the region is
    /// us-east-1 and credentials come from the standard AWS chain (environment, profile, web
    /// identity, instance role). Nothing is sent to the store here.
    pub async fn connect(
        bucket: String,
        prefix: String,
        cfg: Option<&S3Config>,
    ) -> anyhow::Result<S3Storage> {
        anyhow::ensure!(
            bucket.len() >= 3 && !bucket.contains('/'),
            "invalid bucket name `{bucket}`"
        );
        let prefix = prefix.trim_matches('/').to_string();
        let region = cfg
            .map(|c| c.region.clone())
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| DEFAULT_REGION.to_string());
        let endpoint = cfg.and_then(|c| c.endpoint.clone());

        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(region.clone()))
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .build(),
            );
        if let Some(c) = cfg {
            match (&c.access_key_id, &c.secret_access_key) {
                (Some(id), Some(secret)) => {
                    loader = loader.credentials_provider(Credentials::new(
                        id.clone(),
                        secret.expose().to_string(),
                        None,
                        None,
                        "pgward-config",
                    ));
                }
                (None, None) => {}
                _ => anyhow::bail!(
                    "[repo.s3] access_key_id and secret_access_key must be given together"
                ),
            }
        }
        let sdk_config = loader.load().await;
        let mut builder = aws_sdk_s3::config::Builder::from(&sdk_config);
        if let Some(ep) = &endpoint {
            builder = builder.endpoint_url(ep.clone());
        }
        if cfg.is_some_and(|c| c.force_path_style) {
            builder = builder.force_path_style(true);
        }
        Ok(S3Storage {
            client: Client::from_conf(builder.build()),
            bucket,
            prefix,
            region,
            endpoint,
            no_conditional_writes: AtomicBool::new(false),
        })
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Creates the bucket unless it exists (used by tests and `init`).
    pub async fn create_bucket_if_missing(&self) -> anyhow::Result<()> {
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => return Ok(()),
            Err(e) if status_of(&e) == Some(404) => {}
            Err(e) => return Err(self.error("check bucket", None, e).into()),
        }
        let mut req = self.client.create_bucket().bucket(&self.bucket);
        if self.region != DEFAULT_REGION {
            req = req.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(self.region.as_str()))
                    .build(),
            );
        }
        match req.send().await {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("BucketAlreadyOwnedByYou") => Ok(()),
            Err(e) => Err(self.error("create bucket", None, e))
                .with_context(|| format!("cannot create bucket {}", self.bucket)),
        }
    }

    fn full_key(&self, key: &str) -> StorageResult<String> {
        if key.is_empty() {
            return Err(StorageError::Permanent("empty object key".into()));
        }
        Ok(self.join(key))
    }

    fn join(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    /// `s3://bucket/prefix/key` for messages.
    fn url(&self, key: Option<&str>) -> String {
        match key {
            Some(k) => format!("s3://{}/{}", self.bucket, self.join(k)),
            None => format!("s3://{}/{}", self.bucket, self.prefix),
        }
    }

    /// Turns an SDK failure into a classified error whose message names the operation, the
    /// object and what to do.
    fn error<E>(&self, op: &str, key: Option<&str>, err: SdkError<E>) -> StorageError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let url = self.url(key);
        let endpoint = self.endpoint.as_deref().unwrap_or("aws");
        match &err {
            SdkError::TimeoutError(_) => {
                StorageError::Transient(format!("s3 {op} {url}: timed out reaching {endpoint}"))
            }
            // The credential chain runs inside the dispatch: an empty chain is not a network
            // problem, and retrying cannot fix it.
            SdkError::DispatchFailure(_) if mentions_credentials(&err) => {
                StorageError::Permanent(format!(
                    "s3 {op} {url}: no credentials found: neither [repo.s3] access_key_id nor \
                     the AWS credential chain (environment, profile, web identity, container, \
                     instance metadata) provided any\nhint: {HINT_NO_CREDENTIALS}"
                ))
            }
            SdkError::DispatchFailure(d) if d.is_user() => StorageError::Permanent(format!(
                "s3 {op} {url}: {}\nhint: check [repo.s3] endpoint and region",
                short_chain(&err)
            )),
            SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
                StorageError::Transient(format!(
                    "s3 {op} {url}: cannot reach {endpoint}: {}",
                    short_chain(&err)
                ))
            }
            SdkError::ConstructionFailure(_) => StorageError::Permanent(format!(
                "s3 {op} {url}: cannot build the request: {}",
                short_chain(&err)
            )),
            _ => {
                let status = status_of(&err);
                let code = err.code();
                let detail = match (status, code, err.message()) {
                    (Some(s), Some(c), Some(m)) => format!("{c} (HTTP {s}): {m}"),
                    (Some(s), Some(c), None) => format!("{c} (HTTP {s})"),
                    (Some(s), None, _) => format!("HTTP {s}"),
                    (None, _, _) => short_chain(&err),
                };
                let msg = format!("s3 {op} {url}: {detail}");
                match classify_response(status, code) {
                    Class::NotFound => StorageError::NotFound(url),
                    Class::Transient => StorageError::Transient(msg),
                    Class::Permanent("") => StorageError::Permanent(msg),
                    Class::Permanent(hint) => {
                        StorageError::Permanent(format!("{msg}\nhint: {hint}"))
                    }
                }
            }
        }
    }

    async fn put_single(
        &self,
        key: &str,
        data: Bytes,
        if_absent: bool,
    ) -> StorageResult<PutOutcome> {
        let full = self.full_key(key)?;
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&full)
            .body(ByteStream::from(data));
        if if_absent {
            req = req.if_none_match("*");
        }
        match req.send().await {
            Ok(_) => Ok(PutOutcome::Written),
            Err(e) if if_absent && is_precondition_failure(&e) => Ok(PutOutcome::AlreadyExists),
            Err(e) => Err(self.conditional_aware_error("put", key, e, if_absent)),
        }
    }

    /// Like [`Self::error`], but a `501` to a conditional write is reported as
    /// `ConditionalUnsupported` (a `Permanent` with a marker) for the caller to fall back.
    fn conditional_aware_error<E>(
        &self,
        op: &str,
        key: &str,
        e: SdkError<E>,
        if_absent: bool,
    ) -> StorageError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        if if_absent && (status_of(&e) == Some(501) || e.code() == Some("NotImplemented")) {
            self.no_conditional_writes.store(true, Ordering::Relaxed);
            return StorageError::Permanent(CONDITIONAL_UNSUPPORTED.to_string());
        }
        self.error(op, Some(key), e)
    }

    /// A multipart upload of `data`; with `if_absent`, completed with `If-None-Match: *`.
    async fn put_multipart(
        &self,
        key: &str,
        data: Bytes,
        if_absent: bool,
    ) -> StorageResult<PutOutcome> {
        let upload = self.upload_start(key).await?;
        let mut guard = AbortOnDrop {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key: self.full_key(key)?,
            upload_id: Some(upload.id.clone()),
        };
        let result = self
            .upload_parts_and_complete(&upload, data, if_absent)
            .await;
        if result.is_err()
            || result
                .as_ref()
                .is_ok_and(|o| *o == PutOutcome::AlreadyExists)
        {
            // Abort now rather than from the drop guard so the failure is reported after
            // the store has let go of the parts.
            if let Err(e) = guard.abort().await {
                tracing::warn!(
                    key,
                    error = %short_chain(&e),
                    "cannot abort multipart upload; a bucket lifecycle rule for incomplete \
                     uploads will clean it up"
                );
            }
        } else {
            guard.upload_id = None;
        }
        result
    }

    async fn upload_parts_and_complete(
        &self,
        upload: &Upload,
        data: Bytes,
        if_absent: bool,
    ) -> StorageResult<PutOutcome> {
        let part_count = data.len().div_ceil(PART_SIZE);
        let uploads = (0..part_count).map(|i| {
            let body = data.slice(i * PART_SIZE..((i + 1) * PART_SIZE).min(data.len()));
            let part = Part {
                number: i as u32 + 1,
                offset: (i * PART_SIZE) as u64,
            };
            self.upload_part(upload, part, body)
        });
        let parts: Vec<PartReceipt> = futures::stream::iter(uploads)
            .buffered(PART_PARALLELISM)
            .try_collect()
            .await?;
        self.complete(upload, &parts, if_absent).await
    }

    /// Completes a multipart upload from its parts; with `if_absent`, only if no object is
    /// under the key (`If-None-Match: *`).
    async fn complete(
        &self,
        upload: &Upload,
        parts: &[PartReceipt],
        if_absent: bool,
    ) -> StorageResult<PutOutcome> {
        let full = self.full_key(&upload.key)?;
        let completed: Vec<CompletedPart> = parts
            .iter()
            .map(|p| {
                CompletedPart::builder()
                    .part_number(p.number as i32)
                    .set_e_tag(p.etag.clone())
                    .set_checksum_crc32(p.crc32.clone())
                    .build()
            })
            .collect();
        let mut req = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&full)
            .upload_id(&upload.id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(completed))
                    .build(),
            );
        if if_absent {
            req = req.if_none_match("*");
        }
        match req.send().await {
            Ok(_) => Ok(PutOutcome::Written),
            Err(e) if if_absent && is_precondition_failure(&e) => Ok(PutOutcome::AlreadyExists),
            Err(e) => Err(self.conditional_aware_error(
                "complete multipart upload",
                &upload.key,
                e,
                if_absent,
            )),
        }
    }

    async fn put_impl(&self, key: &str, data: Bytes, if_absent: bool) -> StorageResult<PutOutcome> {
        if data.len() <= SINGLE_PUT_MAX {
            self.put_single(key, data, if_absent).await
        } else {
            self.put_multipart(key, data, if_absent).await
        }
    }
}

/// Percent-encodes a key for `x-amz-copy-source`, keeping `/` and the unreserved characters.
fn urlencode_path(key: &str) -> String {
    key.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Marker message of a conditional write the store does not implement.
const CONDITIONAL_UNSUPPORTED: &str = "conditional writes are not supported by this store";

/// 412 Precondition Failed: the object exists. Not a 409 (`ConditionalRequestConflict`, or a
/// 409 without a code): AWS documents it for `If-None-Match` writes as "a conflicting operation
/// is in progress, retry", and the object may never be stored — it is `Transient`
/// (`classify_response`), so a retry or a later `head` decides.
fn is_precondition_failure<E: ProvideErrorMetadata>(e: &SdkError<E>) -> bool {
    status_of(e) == Some(412) || e.code() == Some("PreconditionFailed")
}

/// Aborts an unfinished multipart upload when the put future is dropped (cancelled), so the
/// store does not keep its parts; `upload_id` is `None` once the upload completed.
struct AbortOnDrop {
    client: Client,
    bucket: String,
    key: String,
    upload_id: Option<String>,
}

impl AbortOnDrop {
    async fn abort(
        &mut self,
    ) -> Result<
        (),
        SdkError<aws_sdk_s3::operation::abort_multipart_upload::AbortMultipartUploadError>,
    > {
        let Some(id) = self.upload_id.take() else {
            return Ok(());
        };
        self.client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(id)
            .send()
            .await
            .map(|_| ())
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        let Some(id) = self.upload_id.take() else {
            return;
        };
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let req = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(&self.key)
                .upload_id(id);
            rt.spawn(async move {
                // Best effort; a lifecycle rule for incomplete uploads is the backstop.
                let _ = req.send().await;
            });
        }
    }
}

impl S3Storage {
    /// The key prefix every listed key starts with (`<prefix>/`, or nothing at the bucket root).
    fn list_root(&self) -> String {
        if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        }
    }

    fn list_error<E>(&self, prefix: &str, e: SdkError<E>) -> StorageError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        // A missing bucket is not an empty listing.
        match self.error("list", Some(prefix), e) {
            StorageError::NotFound(m) => {
                StorageError::Permanent(format!("s3 list {m}: not found\nhint: {HINT_BUCKET}"))
            }
            other => other,
        }
    }
}

/// An S3 timestamp as a chrono one.
fn to_chrono(t: &aws_sdk_s3::primitives::DateTime) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos())
}

impl S3Storage {
    /// One DeleteObjects request (quiet: only failures are answered) for at most
    /// [`DELETE_BATCH`] keys; the keys it could not delete, each with its error. A request that
    /// fails as a whole (a 503, a timeout) fails every key of it with that error.
    async fn delete_batch(&self, keys: &[String]) -> Vec<DeleteFailure> {
        let mut objects = Vec::with_capacity(keys.len());
        for key in keys {
            match self.full_key(key).and_then(|full| {
                ObjectIdentifier::builder()
                    .key(full)
                    .build()
                    .map_err(|e| StorageError::Permanent(format!("s3 delete {key}: {e}")))
            }) {
                Ok(o) => objects.push(o),
                Err(error) => return fail_all(keys, &error),
            }
        }
        let delete = match Delete::builder()
            .set_objects(Some(objects))
            .quiet(true)
            .build()
        {
            Ok(d) => d,
            Err(e) => {
                let error = StorageError::Permanent(format!("s3 delete_many: {e}"));
                return fail_all(keys, &error);
            }
        };
        let first = keys.first().map(String::as_str);
        let out = match self
            .client
            .delete_objects()
            .bucket(&self.bucket)
            .delete(delete)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) => {
                let error = match self.error("delete_many", first, e) {
                    // A missing bucket is not "every key already gone".
                    StorageError::NotFound(m) => StorageError::Permanent(format!(
                        "s3 delete_many {m}: not found\nhint: {HINT_BUCKET}"
                    )),
                    other => other,
                };
                return fail_all(keys, &error);
            }
        };
        let root = self.list_root();
        out.errors()
            .iter()
            .filter_map(|err| {
                let key = err.key()?.strip_prefix(root.as_str())?.to_string();
                let code = err.code();
                let msg = format!(
                    "s3 delete {}: {} in a DeleteObjects answer{}",
                    self.url(Some(&key)),
                    code.unwrap_or("an error"),
                    err.message().map(|m| format!(": {m}")).unwrap_or_default()
                );
                let error = match classify_response(None, code) {
                    Class::NotFound => return None,
                    // A per-key error without a code we know: it names no cause worth a retry.
                    Class::Transient if code.is_some() => StorageError::Transient(msg),
                    Class::Transient | Class::Permanent(_) => StorageError::Permanent(msg),
                };
                Some(DeleteFailure { key, error })
            })
            .collect()
    }
}

/// `error` for every key.
fn fail_all(keys: &[String], error: &StorageError) -> Vec<DeleteFailure> {
    keys.iter()
        .map(|key| DeleteFailure {
            key: key.clone(),
            error: error.clone(),
        })
        .collect()
}

/// The objects of one listing page, keyed relative to the repository root.
fn page_objects(
    root: &str,
    page: &aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output,
) -> Vec<ObjectMeta> {
    page.contents()
        .iter()
        .filter_map(|obj| {
            let rel = obj.key()?.strip_prefix(root)?;
            Some(ObjectMeta {
                key: rel.to_string(),
                size: obj.size().unwrap_or(0).max(0) as u64,
                last_modified: obj.last_modified().and_then(to_chrono),
            })
        })
        .collect()
}

#[async_trait]
impl Storage for S3Storage {
    async fn put(&self, key: &str, data: Bytes) -> StorageResult<()> {
        self.put_impl(key, data, false).await.map(|_| ())
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> StorageResult<PutOutcome> {
        if !self.no_conditional_writes.load(Ordering::Relaxed) {
            match self.put_impl(key, data.clone(), true).await {
                Err(StorageError::Permanent(m)) if m == CONDITIONAL_UNSUPPORTED => {
                    tracing::info!(
                        store = %self.describe(),
                        "the store does not support conditional writes; using head-then-put"
                    );
                }
                other => return other,
            }
        }
        if self.head(key).await?.is_some() {
            return Ok(PutOutcome::AlreadyExists);
        }
        self.put_impl(key, data, false).await
    }

    async fn get(&self, key: &str) -> StorageResult<Bytes> {
        let full = self.full_key(key)?;
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&full)
            .send()
            .await
            .map_err(|e| self.error("get", Some(key), e))?;
        let body = out.body.collect().await.map_err(|e| {
            StorageError::Transient(format!(
                "s3 get {}: reading the body failed: {}",
                self.url(Some(key)),
                short_chain(&e)
            ))
        })?;
        Ok(body.into_bytes())
    }

    async fn head(&self, key: &str) -> StorageResult<Option<ObjectMeta>> {
        let full = self.full_key(key)?;
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(&full)
            .send()
            .await
        {
            Ok(out) => Ok(Some(ObjectMeta {
                key: key.to_string(),
                size: out.content_length().unwrap_or(0).max(0) as u64,
                last_modified: out.last_modified().and_then(to_chrono),
            })),
            Err(e) => match self.error("head", Some(key), e) {
                StorageError::NotFound(_) => Ok(None),
                other => Err(other),
            },
        }
    }

    async fn list(&self, prefix: &str) -> StorageResult<Vec<ObjectMeta>> {
        super::list_all_pages(self, prefix).await
    }

    async fn list_page(&self, prefix: &str, token: Option<&str>) -> StorageResult<ListPage> {
        let root = self.list_root();
        let mut req = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(format!("{root}{prefix}"));
        if let Some(t) = token {
            req = req.continuation_token(t);
        }
        let page = req.send().await.map_err(|e| self.list_error(prefix, e))?;
        let next = match page.next_continuation_token() {
            Some(t) if page.is_truncated() == Some(true) => Some(t.to_string()),
            _ => None,
        };
        Ok(ListPage {
            objects: page_objects(&root, &page),
            next,
        })
    }

    async fn list_after(
        &self,
        prefix: &str,
        start_after: &str,
        limit: usize,
    ) -> StorageResult<Vec<ObjectMeta>> {
        let root = self.list_root();
        // One request: S3 returns at most `max-keys` keys after `start-after`, in key order.
        let page = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(format!("{root}{prefix}"))
            .start_after(format!("{root}{start_after}"))
            .max_keys(i32::try_from(limit.clamp(1, 1000)).unwrap_or(1000))
            .send()
            .await
            .map_err(|e| self.list_error(prefix, e))?;
        let mut out = page_objects(&root, &page);
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out.truncate(limit);
        Ok(out)
    }

    async fn delete(&self, key: &str) -> StorageResult<()> {
        let full = self.full_key(key)?;
        match self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(&full)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match self.error("delete", Some(key), e) {
                StorageError::NotFound(_) => Ok(()),
                other => Err(other),
            },
        }
    }

    /// Check-then-copy (CopyObject has no `If-None-Match` on every store): callers copy to
    /// content-addressed keys, where a concurrent copy writes the same content.
    /// DeleteObjects requests of up to [`DELETE_BATCH`] keys, a few at a time.
    async fn delete_many(&self, keys: &[String]) -> Vec<DeleteFailure> {
        // Boxed one by one, as in the trait's default (`async_trait` needs a `Send` future).
        let batches: Vec<futures::future::BoxFuture<'_, Vec<DeleteFailure>>> = keys
            .chunks(DELETE_BATCH)
            .map(|batch| Box::pin(self.delete_batch(batch)) as futures::future::BoxFuture<'_, _>)
            .collect();
        let done: Vec<Vec<DeleteFailure>> = futures::stream::iter(batches)
            .buffer_unordered(DELETE_PARALLELISM)
            .collect()
            .await;
        done.into_iter().flatten().collect()
    }

    async fn copy_if_absent(&self, from: &str, to: &str) -> StorageResult<PutOutcome> {
        if self.head(to).await?.is_some() {
            return Ok(PutOutcome::AlreadyExists);
        }
        let src = self.full_key(from)?;
        let dst = self.full_key(to)?;
        // The copy source is `bucket/key`, URL-encoded; keys are plain ASCII here but `+`
        // and the like still must not be taken for spaces.
        let source = format!("{}/{}", self.bucket, urlencode_path(&src));
        self.client
            .copy_object()
            .bucket(&self.bucket)
            .key(&dst)
            .copy_source(source)
            .send()
            .await
            .map(|_| PutOutcome::Written)
            .map_err(|e| self.error("copy to", Some(to), e))
    }

    async fn upload_start(&self, key: &str) -> StorageResult<Upload> {
        let full = self.full_key(key)?;
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&full)
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .send()
            .await
            .map_err(|e| self.error("start multipart upload", Some(key), e))?;
        let id = created.upload_id().map(str::to_string).ok_or_else(|| {
            StorageError::Transient(format!(
                "s3 put {}: the store returned no multipart upload id",
                self.url(Some(key))
            ))
        })?;
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
        let full = self.full_key(&upload.key)?;
        let len = data.len() as u64;
        let number = i32::try_from(part.number).map_err(|_| {
            StorageError::Permanent(format!("part number {} is out of range", part.number))
        })?;
        let out = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(&full)
            .upload_id(&upload.id)
            .part_number(number)
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .body(ByteStream::from(data))
            .send()
            .await
            .map_err(|e| {
                self.error(
                    &format!("upload part {} of", part.number),
                    Some(&upload.key),
                    e,
                )
            })?;
        Ok(PartReceipt {
            number: part.number,
            len,
            etag: out.e_tag().map(str::to_string),
            crc32: out.checksum_crc32().map(str::to_string),
        })
    }

    async fn upload_finish(
        &self,
        upload: &Upload,
        parts: &[PartReceipt],
        _total: u64,
    ) -> StorageResult<()> {
        self.complete(upload, parts, false).await.map(|_| ())
    }

    async fn upload_abort(&self, upload: &Upload) -> StorageResult<()> {
        let full = self.full_key(&upload.key)?;
        match self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(&full)
            .upload_id(&upload.id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("NoSuchUpload") => Ok(()),
            Err(e) => match self.error("abort multipart upload", Some(&upload.key), e) {
                StorageError::NotFound(_) => Ok(()),
                other => Err(other),
            },
        }
    }

    async fn get_stream(&self, key: &str, offset: u64) -> StorageResult<Chunks> {
        let full = self.full_key(key)?;
        let mut req = self.client.get_object().bucket(&self.bucket).key(&full);
        if offset > 0 {
            req = req.range(format!("bytes={offset}-"));
        }
        let out = match req.send().await {
            Ok(out) => out,
            // A range that starts at the end of the object: nothing left to read.
            Err(e) if offset > 0 && status_of(&e) == Some(416) => {
                return Ok(futures::stream::empty().boxed());
            }
            Err(e) => return Err(self.error("get", Some(key), e)),
        };
        let url = self.url(Some(key));
        let chunks = futures::stream::unfold(Some(out.body), move |state| {
            let url = url.clone();
            async move {
                let mut body = state?;
                match body.next().await {
                    None => None,
                    Some(Ok(chunk)) => Some((Ok(chunk), Some(body))),
                    Some(Err(e)) => Some((
                        Err(std::io::Error::other(format!(
                            "s3 get {url}: reading the body failed: {}",
                            short_chain(&e)
                        ))),
                        None,
                    )),
                }
            }
        });
        Ok(chunks.boxed())
    }

    fn describe(&self) -> String {
        match &self.endpoint {
            Some(ep) => format!("{} (endpoint {ep})", self.url(None)),
            None => format!("{} (region {})", self.url(None), self.region),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error chain as the SDK builds it for an empty credential chain, shortened.
    #[derive(Debug)]
    struct Chain(&'static str, Option<Box<Chain>>);
    impl std::fmt::Display for Chain {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for Chain {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|c| c as _)
        }
    }

    #[test]
    fn causes_are_short_and_credentials_are_recognised() {
        let chain = Chain(
            "dispatch failure",
            Some(Box::new(Chain(
                "other: the credential provider was not enabled: no credentials found in chain. \
                 Attempted:\n  Environment: the credential provider was not enabled",
                Some(Box::new(Chain(
                    "the credential provider was not enabled",
                    None,
                ))),
            ))),
        );
        assert!(mentions_credentials(&chain));
        assert_eq!(
            short_chain(&chain),
            "dispatch failure: other: the credential provider was not enabled: no credentials \
             found in chain. Attempted:"
        );
        let refused = Chain(
            "dispatch failure",
            Some(Box::new(Chain(
                "io error",
                Some(Box::new(Chain(
                    "tcp connect error: Connection refused",
                    None,
                ))),
            ))),
        );
        assert!(!mentions_credentials(&refused));
        assert_eq!(
            short_chain(&refused),
            "dispatch failure: io error: tcp connect error: Connection refused"
        );
        let long: &'static str = "x".repeat(1000).leak();
        assert_eq!(
            short_chain(&Chain(long, None)).chars().count(),
            MAX_CAUSE_CHARS + 1
        );
    }

    #[test]
    fn responses_are_classified() {
        use Class::*;
        assert_eq!(classify_response(Some(503), Some("SlowDown")), Transient);
        assert_eq!(classify_response(Some(500), None), Transient);
        assert_eq!(classify_response(Some(429), None), Transient);
        assert_eq!(
            classify_response(Some(409), Some("ConditionalRequestConflict")),
            Transient
        );
        assert_eq!(classify_response(Some(409), None), Transient);
        assert_eq!(
            classify_response(Some(409), Some("BucketAlreadyExists")),
            Permanent("")
        );
        assert_eq!(
            classify_response(Some(400), Some("RequestTimeout")),
            Transient
        );
        assert_eq!(classify_response(None, None), Transient);
        assert_eq!(
            classify_response(Some(403), Some("AccessDenied")),
            Permanent(HINT_CREDENTIALS)
        );
        assert_eq!(
            classify_response(Some(403), Some("SignatureDoesNotMatch")),
            Permanent(HINT_CREDENTIALS)
        );
        assert_eq!(
            classify_response(Some(403), None),
            Permanent(HINT_CREDENTIALS)
        );
        assert_eq!(
            classify_response(Some(404), Some("NoSuchBucket")),
            Permanent(HINT_BUCKET)
        );
        assert_eq!(classify_response(Some(404), Some("NoSuchKey")), NotFound);
        assert_eq!(classify_response(Some(404), None), NotFound);
        assert_eq!(
            classify_response(Some(400), Some("InvalidArgument")),
            Permanent("")
        );
        assert_eq!(classify_response(Some(501), None), Permanent(""));
    }

    #[tokio::test]
    async fn keys_and_description() {
        let cfg = S3Config {
            endpoint: Some("http://127.0.0.1:9".into()),
            region: "eu-west-1".into(),
            force_path_style: true,
            access_key_id: Some("AK".into()),
            secret_access_key: Some(crate::config::Secret::new("hunter2")),
        };
        let s = S3Storage::connect("bucket".into(), "/a/b/".into(), Some(&cfg))
            .await
            .unwrap();
        assert_eq!(s.join("wal/x"), "a/b/wal/x");
        assert_eq!(
            s.describe(),
            "s3://bucket/a/b (endpoint http://127.0.0.1:9)"
        );
        assert!(!format!("{s:?}").contains("hunter2"));
        let root = S3Storage::connect("bucket".into(), String::new(), None)
            .await
            .unwrap();
        assert_eq!(root.join("k"), "k");
        assert_eq!(root.describe(), "s3://bucket/ (region us-east-1)");
    }
}
