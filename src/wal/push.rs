//! Archiving one WAL file, and push-ahead of the archiver's backlog.
//!
//! Never overwrite history: an object's key carries the sha256 of the original bytes, so a push
//! can only add objects. Before adding, the name's existing objects are listed; the same hash
//! means "already archived" (success), a different hash is refused loudly.

use crate::codec::Sha256Digest;
use crate::events::{Event, Events, LogSink, WalPushOutcome};
use crate::pg::WalFileName;
use crate::repo::identity::RepoIdentity;
use crate::repo::layout;
use crate::storage::{DynStorage, PutOutcome, Storage};
use crate::wal::spool::{PushRecord, PushSpool};
use crate::wal::validate;
use anyhow::{Context, Result, bail};
use bytes::Bytes;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// What happened to one pushed file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// Stored now.
    Stored,
    /// The same content was already archived under this name.
    AlreadyArchived,
    /// Push-ahead stored it earlier and the local file still hashes the same.
    PushedAhead,
}

#[derive(Debug, Clone)]
pub struct PushReport {
    pub name: WalFileName,
    pub outcome: PushOutcome,
    pub sha256: Sha256Digest,
    pub raw_bytes: u64,
    pub stored_bytes: u64,
    pub elapsed: Duration,
    pub key: String,
    /// crc32c of the original bytes (`None` when the report did not read the file).
    pub crc32c: Option<u32>,
}

impl PushReport {
    /// What this push reports ([`Event::WalPushed`]); `ahead`: stored by the background
    /// pusher.
    pub fn event(&self, ahead: bool) -> Event {
        Event::WalPushed {
            wal: self.name.to_string(),
            outcome: match self.outcome {
                PushOutcome::Stored => WalPushOutcome::Stored,
                PushOutcome::AlreadyArchived => WalPushOutcome::AlreadyArchived,
                PushOutcome::PushedAhead => WalPushOutcome::PushedAhead,
            },
            bytes: self.raw_bytes,
            stored_bytes: self.stored_bytes,
            ms: self.elapsed.as_millis() as u64,
            ahead,
        }
    }
}

/// zstd threads for a push that has the machine to itself.
const MAX_ZSTD_WORKERS: u32 = 2;

/// Everything a push needs besides the file.
#[derive(Clone)]
pub struct Pusher {
    pub storage: DynStorage,
    pub identity: Arc<RepoIdentity>,
    pub level: i32,
    /// Bounds CPU-heavy work (hashing + compressing) to the number of cores.
    pub cpu: Arc<Semaphore>,
    /// Permits in `cpu`.
    pub cores: u32,
    /// Whether a push that finds every core free may compress on several zstd threads. Off
    /// while push-ahead runs beside it: concurrent encodes already use the cores, and zstd's
    /// per-worker buffers on top of them would raise peak memory.
    pub multithread: bool,
    /// Where pushes are reported.
    pub events: Events,
}

impl Pusher {
    pub fn new(storage: DynStorage, identity: RepoIdentity, level: i32) -> Pusher {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        Pusher {
            storage,
            identity: Arc::new(identity),
            level,
            cpu: Arc::new(Semaphore::new(cores)),
            cores: cores as u32,
            multithread: true,
            events: Arc::new(LogSink::new(false)),
        }
    }

    /// Validates, compresses and stores one WAL file. Returns only once the object is durable.
    pub async fn push_one(&self, path: &Path, name: &WalFileName) -> Result<PushReport> {
        let started = Instant::now();
        let prefix = layout::wal_name_prefix(name);
        // Listing runs while the file is compressed: it costs a round trip on S3.
        let listing = self.storage.list(&prefix);
        let encode = {
            let (path, name, id, level) = (
                path.to_path_buf(),
                name.clone(),
                self.identity.clone(),
                self.level,
            );
            let (cpu, cores, mt) = (self.cpu.clone(), self.cores, self.multithread);
            async move {
                // A push that finds every core free takes them all and lets zstd compress on
                // up to two threads; pushes that run beside others (push-ahead) compress on one
                // thread each, so the cores are not oversubscribed.
                let exclusive = if mt {
                    cpu.clone().try_acquire_many_owned(cores).ok()
                } else {
                    None
                };
                let (_permit, workers) = match exclusive {
                    Some(all) => (all, cores.min(MAX_ZSTD_WORKERS)),
                    None => (cpu.acquire_owned().await?, 0),
                };
                tokio::task::spawn_blocking(move || {
                    validate::check_and_encode(&path, &name, &id, level, workers)
                })
                .await?
            }
        };
        let (listing, encoded) = tokio::join!(listing, encode);
        let encoded = encoded?;
        let existing = listing
            .with_context(|| format!("cannot list {prefix}* in {}", self.storage.describe()))?;
        let key = layout::wal_key(name, &encoded.sha256);
        tracing::debug!(
            wal = %name,
            sha256 = %encoded.sha256,
            key,
            existing = existing.len(),
            zstd_workers_free = self.cpu.available_permits(),
            "encoded; objects already under the name's prefix listed"
        );
        let mut report = PushReport {
            name: name.clone(),
            outcome: PushOutcome::Stored,
            sha256: encoded.sha256,
            raw_bytes: encoded.raw_len,
            stored_bytes: encoded.data.len() as u64,
            elapsed: Duration::ZERO,
            key: key.clone(),
            crc32c: Some(encoded.crc32c),
        };
        if existing.iter().any(|o| o.key == key) {
            report.outcome = PushOutcome::AlreadyArchived;
            report.elapsed = started.elapsed();
            return Ok(report);
        }
        if let Some(other) = existing
            .iter()
            .find_map(|o| layout::parse_wal_key(&o.key).filter(|(n, _)| n == name))
        {
            bail!(conflict_message(name, &other.1, &encoded.sha256));
        }
        let outcome = self
            .storage
            .put_if_absent(&key, Bytes::from(encoded.data))
            .await
            .with_context(|| {
                format!(
                    "cannot store {name} as {key} in {}",
                    self.storage.describe()
                )
            })?;
        if outcome == PutOutcome::AlreadyExists {
            // Same key means same sha256: a concurrent push (or an earlier attempt of ours that
            // timed out after the store) already stored identical content — but only an object
            // that is there counts; "exists" is never taken on the store's word alone.
            let found =
                self.storage.head(&key).await.with_context(|| {
                    format!("cannot check {key} in {}", self.storage.describe())
                })?;
            if found.is_none() {
                bail!(
                    "{} answered that {key} exists, but it is not there: {name} is not archived\n\
                     hint: PostgreSQL retries; if this repeats, check the store's consistency",
                    self.storage.describe()
                );
            }
            report.outcome = PushOutcome::AlreadyArchived;
        }
        report.elapsed = started.elapsed();
        Ok(report)
    }
}

/// Refuses a segment in the `pg_wal` of a data directory whose server is running when
/// PostgreSQL has not marked it `.ready` (or `.done`): it may still be being written, and an
/// incomplete copy, once archived, is immutable and makes PostgreSQL's own push of the finished
/// segment fail forever ("different content"). Copies outside a live data directory — as tools
/// and tests push them — are not affected. A postmaster in another PID namespace is not seen
/// (`/proc`); then the push goes ahead as before.
pub fn refuse_unfinished_segment(path: &Path) -> Result<()> {
    let Some(WalFileName::Segment(seg)) = path
        .file_name()
        .and_then(|f| f.to_str())
        .and_then(|f| WalFileName::parse(f).ok())
    else {
        return Ok(());
    };
    let pg_wal = match path.parent() {
        Some(p) if p.as_os_str().is_empty() => Path::new("."),
        Some(p) => p,
        None => return Ok(()),
    };
    let status = pg_wal.join("archive_status");
    if status.join(format!("{seg}.ready")).exists() || status.join(format!("{seg}.done")).exists() {
        return Ok(());
    }
    let Some(data_dir) = pg_wal.parent() else {
        return Ok(());
    };
    let data_dir = if data_dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        data_dir
    };
    let Some(pid) = std::fs::read_to_string(data_dir.join("postmaster.pid"))
        .ok()
        .and_then(|t| t.lines().next()?.trim().parse::<u32>().ok())
    else {
        return Ok(());
    };
    if !Path::new(&format!("/proc/{pid}")).exists() {
        return Ok(());
    }
    bail!(
        "refusing to archive {}: the server of this data directory is running (postmaster pid \
         {pid}) and has not marked {seg} ready (no archive_status/{seg}.ready), so the file may \
         still be being written and an incomplete copy would be archived for good\nhint: let \
         PostgreSQL archive it (`select pg_switch_wal()` finishes the current segment), or pass \
         --force if you know the file is complete",
        path.display()
    )
}

fn conflict_message(name: &WalFileName, archived: &Sha256Digest, local: &Sha256Digest) -> String {
    format!(
        "{name} is already archived with different content (archived sha256 {archived}, this file {local}); \
         refusing to overwrite archived WAL\n\
         hint: this usually means another cluster archives into this repository (compare the \
         system identifier in `pgward info` with pg_controldata), a split brain (two primaries \
         writing one timeline), a standby promoted without switching to a new timeline, or a \
         manual `wal-push --force` of a segment that was still being written (then the archived \
         copy is an incomplete one: check it with `zstd -d` and pg_waldump, and only then remove \
         that object so that PostgreSQL's own push can store the finished segment). Keep both \
         copies until you know which history is the real one."
    )
}

/// `.ready` files waiting in `archive_status` beside `path`, oldest first, excluding `current`.
pub fn ready_backlog(path: &Path, current: &WalFileName) -> Vec<(PathBuf, WalFileName)> {
    let wal_dir = path.parent().unwrap_or(Path::new("."));
    let mut out = ready_segments(wal_dir);
    out.retain(|(_, name)| name != current);
    out
}

/// WAL segments of `wal_dir` (pg_wal) that have a `.ready` file, oldest first.
pub fn ready_segments(wal_dir: &Path) -> Vec<(PathBuf, WalFileName)> {
    let Ok(rd) = std::fs::read_dir(wal_dir.join("archive_status")) else {
        return Vec::new();
    };
    let mut out: Vec<(PathBuf, WalFileName)> = rd
        .flatten()
        .filter_map(|e| {
            let fname = e.file_name();
            let stem = fname.to_str()?.strip_suffix(".ready")?;
            let name = WalFileName::parse(stem).ok()?;
            matches!(name, WalFileName::Segment(_)).then(|| (wal_dir.join(stem), name))
        })
        .collect();
    out.sort_by_key(|(_, name)| name.segment());
    out
}

/// Whether `name` still waits for the archiver: once PostgreSQL has marked it done it may
/// recycle the file, so nothing may start reading it after that.
pub fn still_ready(wal_dir: &Path, name: &WalFileName) -> bool {
    wal_dir
        .join("archive_status")
        .join(format!("{name}.ready"))
        .exists()
}

/// Records a file that push-ahead made durable, so PostgreSQL's own call for it only has to
/// recognise the local file. Returns whether the record was written.
pub fn record_pushed(spool: &PushSpool, report: &PushReport) -> bool {
    let rec = PushRecord {
        name: report.name.to_string(),
        sha256: report.sha256,
        size: report.raw_bytes,
        key: report.key.clone(),
        crc32c: report.crc32c,
    };
    match spool.write(&rec) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(wal = %report.name, "pushed ahead but cannot record it: {e:#}");
            false
        }
    }
}

/// Pushes up to `limit` files of the archiver's backlog inside this call and records each one
/// that became durable. Used when no background pusher can be started (library callers without
/// the binary). Failures are logged and left for PostgreSQL's own call to retry.
pub async fn push_ahead(
    pusher: &Pusher,
    spool: &PushSpool,
    backlog: Vec<(PathBuf, WalFileName)>,
    limit: usize,
) {
    let mut tasks = tokio::task::JoinSet::new();
    for (path, name) in backlog
        .into_iter()
        .filter(|(_, n)| !spool.has(n))
        .take(limit)
    {
        // Someone else (another call, the background pusher) is pushing it already.
        let Some(mut claim) = spool.try_claim(&name) else {
            continue;
        };
        if claim.already_done() {
            continue;
        }
        let (pusher, spool) = (pusher.clone(), spool.clone());
        tasks.spawn(async move {
            let res = pusher.push_one(&path, &name).await;
            // Recorded before the claim is released (see `background`).
            let recorded = res
                .as_ref()
                .is_ok_and(|report| record_pushed(&spool, report));
            if res.is_ok() {
                claim.mark_done();
            }
            (name, res, recorded)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        let Ok((name, res, recorded)) = joined else {
            continue;
        };
        match res {
            Ok(report) => {
                if recorded {
                    pusher.events.emit(&report.event(true));
                }
            }
            Err(e) => {
                tracing::warn!(wal = %name, "push-ahead failed (PostgreSQL will retry it): {e:#}")
            }
        }
    }
}

/// Checks a push-ahead record against the local file and the repository. `Some` only when
/// the file's current hash and size match what was stored and the object the record names is
/// still in the repository; a stale or mismatching record is removed, and the caller pushes
/// normally.
pub async fn verify_pushed_ahead(
    storage: &dyn Storage,
    spool: &PushSpool,
    path: &Path,
    name: &WalFileName,
) -> Option<PushReport> {
    let rec = spool.read(name)?;
    spool.remove(name);
    let started = Instant::now();
    // The same bytes as were stored: by crc32c when the record has one (it was computed in the
    // pass that hashed and compressed them), else by sha256.
    let same = match rec.crc32c {
        Some(crc) => crate::codec::crc32c_file(path).map(|(c, size)| c == crc && size == rec.size),
        None => {
            crate::codec::sha256_file(path).map(|(s, size)| s == rec.sha256 && size == rec.size)
        }
    };
    match same {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(wal = %name, "local file differs from what push-ahead stored; pushing it normally");
            return None;
        }
        Err(e) => {
            tracing::warn!(wal = %name, "cannot re-hash local file: {e}");
            return None;
        }
    }
    // The record is only a hint: the object it names must be the one this name and hash map
    // to, and it must still exist (the repository may have been recreated or pruned).
    if rec.key != layout::wal_key(name, &rec.sha256) {
        tracing::warn!(wal = %name, "push-ahead record names an unexpected key; pushing normally");
        return None;
    }
    match storage.head(&rec.key).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            tracing::warn!(wal = %name, key = %rec.key, "push-ahead record's object is missing; pushing normally");
            return None;
        }
        Err(e) => {
            tracing::warn!(wal = %name, "cannot check push-ahead object: {e}; pushing normally");
            return None;
        }
    }
    Some(PushReport {
        name: name.clone(),
        outcome: PushOutcome::PushedAhead,
        sha256: rec.sha256,
        raw_bytes: rec.size,
        stored_bytes: 0,
        elapsed: started.elapsed(),
        key: rec.key,
        crc32c: rec.crc32c,
    })
}
