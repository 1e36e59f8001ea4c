//! Leases under `locks/`: one backup at a time per repository (and, later, expire/gc against
//! backups and drills). This is the one lease mechanism; everything that must not run twice
//! takes one.
//!
//! A lease is an object created with put-if-absent. It names its holder (host, pid, purpose,
//! time) so a refusal can say who holds it, and carries a random nonce so its bytes are unique:
//! - a retried create that finds exactly its own bytes took the lease (the first attempt
//!   committed but its answer was lost), and after every create the lease is read back — on a
//!   store without atomic conditional writes two creators can both be told "written", and only
//!   the one whose bytes are there holds it;
//! - a lease left by a process that died on this same host (its pid no longer exists) is taken
//!   over, but only by one taker: the takers race to create a takeover marker named after the
//!   stale lease's hash, and only the winner deletes the stale lease (after checking it is
//!   still the stale one) before creating its own. A plain delete would let two takers of one
//!   stale lease delete each other's fresh leases and both run. Conditional deletes (S3
//!   `If-Match`) would do as well, but not every S3-compatible store has them, while
//!   put-if-absent is already required.
//! - every lease records `expires_at` (acquired + [`LEASE_TTL`]); its holder renews it well
//!   before then ([`Lease::renew_if_due`] when less than two thirds are left, from a background
//!   task: [`Lease::keep_renewed`]). A lease whose `expires_at` plus [`CLOCK_SKEW`] has passed
//!   (by the taker's clock) has lapsed: its holder is paused, partitioned or dead, whatever its
//!   host, and it is taken over through the same takeover marker. A lapsed lease is never
//!   renewed (someone may have taken it): its holder must stop, and work that must not outlive
//!   its lease checks [`Lease::ensure_valid_for`] a safety margin before each step that matters.
//!   Leases of older versions without `expires_at` keep the old rules: only a dead pid on this
//!   host frees them; a lease from another host without expiry is never broken automatically.
//! - renewal rewrites the lease after reading back that it still holds this holder's bytes;
//!   renewing only while more than [`CLOCK_SKEW`] is left keeps that read-then-write clear of a
//!   taker, who waits for expiry plus the skew.
//! - release deletes the lease only while it still holds this lease's bytes.
//!
//! Read leases (`locks/read/<label>-<nonce>.json`) are shared: any number of restores, drills
//! and verifies hold one each, naming what they read, and garbage collection honours the live
//! ones ([`live_read_leases`]). Readers follow one protocol: read the manifest, take the read
//! lease, check the manifest still exists (else release and fail) — so a sweep that listed the
//! manifests before the lease existed finds the manifest the reader checked, and one that
//! listed after finds the lease.

use crate::clock::{self, DynClock};
use crate::codec::Sha256Digest;
use crate::events::{Event, Events};
use crate::pg::Timeline;
use crate::repo::layout;
use crate::storage::{self, Created, DynStorage, Storage};
use anyhow::{Context, Result, bail};
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How long a lease is valid after it was written or renewed.
pub const LEASE_TTL: Duration = Duration::from_secs(300);
/// How far apart the clocks of two hosts may be: a lease lapses this long after its expiry.
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);
/// How much validity work checks is left before a step that must not happen after its lease
/// lapsed (a batch of deletes, a manifest write).
pub const SAFETY_MARGIN: Duration = Duration::from_secs(60);
/// How often the background renewal looks at its lease.
const RENEW_POLL: Duration = Duration::from_secs(10);

fn chrono_of(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseInfo {
    pub host: String,
    pub pid: u32,
    pub purpose: String,
    pub acquired_at: String,
    /// Random, so that every lease's bytes are unique (leases of older versions lack it).
    #[serde(default)]
    pub nonce: String,
    /// Until when the holder promises to be alive (leases of older versions lack it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

/// Whether a lease with this expiry has lapsed at `now` (expiry plus the skew allowance).
fn lapsed(expires_at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
    expires_at.is_some_and(|e| now > e + chrono_of(CLOCK_SKEW))
}

impl LeaseInfo {
    /// Lapsed at `now`: its expiry plus [`CLOCK_SKEW`] has passed.
    pub fn lapsed(&self, now: DateTime<Utc>) -> bool {
        lapsed(self.expires_at, now)
    }
}

/// The lease `key` is held by someone else (a typed error, so callers may wait on it).
#[derive(Debug, thiserror::Error)]
#[error(
    "another {} is running: lock {key} is held by pid {} on {} since {}{}\nhint: wait for it to \
     finish; if that process is gone (e.g. its host died), {}",
    holder.purpose, holder.pid, holder.host, holder.acquired_at,
    holder.expires_at.map(|e| format!(" (valid until {})", rfc3339(e))).unwrap_or_default(),
    if holder.expires_at.is_some() {
        "the lock is taken over once it has lapsed"
    } else {
        "delete the lock from the repository"
    }
)]
pub struct Held {
    pub key: String,
    pub holder: LeaseInfo,
}

/// A lease's record: what it says, its bytes, and when it lapses. Shared by exclusive and
/// read leases.
trait Record: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    fn expires_at(&self) -> Option<DateTime<Utc>>;
    fn set_expires_at(&mut self, at: DateTime<Utc>);
}

impl Record for LeaseInfo {
    fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.expires_at
    }
    fn set_expires_at(&mut self, at: DateTime<Utc>) {
        self.expires_at = Some(at);
    }
}

/// One written lease object this process holds.
#[derive(Debug)]
struct Holding<T> {
    storage: DynStorage,
    key: String,
    info: T,
    body: Bytes,
    clock: DynClock,
    released: bool,
}

impl<T: Record> Holding<T> {
    fn valid_for(&self) -> Duration {
        let left = self.info.expires_at().map(|e| e - self.clock.now());
        left.and_then(|d| d.to_std().ok()).unwrap_or(Duration::ZERO)
    }

    async fn still_ours(&self) -> Result<bool> {
        match self.storage.get(&self.key).await {
            Ok(now) => Ok(now == self.body),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e).with_context(|| format!("cannot read lock {}", self.key)),
        }
    }

    async fn renew(&mut self) -> Result<()> {
        let left = self.valid_for();
        if left <= CLOCK_SKEW {
            bail!(
                "lock {} is valid for only {left:?} more, too little to renew safely (another \
                 process may take it over at any moment)\nhint: this process was paused or cut \
                 off from the repository for longer than the lease lasts ({LEASE_TTL:?}); its \
                 work stops here",
                self.key
            );
        }
        if !self.still_ours().await? {
            bail!(
                "lock {} is no longer ours (another process took it over)\nhint: check that no \
                 two pgward processes ran the same work at once",
                self.key
            );
        }
        let mut info = self.info.clone();
        info.set_expires_at(self.clock.now() + chrono_of(LEASE_TTL));
        let body = Bytes::from(serde_json::to_vec_pretty(&info)?);
        self.storage
            .put(&self.key, body.clone())
            .await
            .with_context(|| format!("cannot renew lock {}", self.key))?;
        self.info = info;
        self.body = body;
        Ok(())
    }

    async fn renew_if_due(&mut self) -> Result<bool> {
        if self.valid_for() >= LEASE_TTL * 2 / 3 {
            return Ok(false);
        }
        self.renew().await.map(|()| true)
    }

    fn ensure_valid_for(&self, margin: Duration) -> Result<()> {
        let left = self.valid_for();
        if left < margin {
            bail!(
                "lock {} is valid for {left:?} more, less than the safety margin of {margin:?}: \
                 stopping before doing anything more\nhint: this process was paused or could \
                 not renew its lease; run it again (a re-run picks up where this one stopped)",
                self.key
            );
        }
        Ok(())
    }

    async fn release(&mut self) -> Result<()> {
        self.released = true;
        if !self.still_ours().await? {
            if self.storage.head(&self.key).await?.is_none() {
                return Ok(());
            }
            bail!(
                "lock {} is no longer ours (another process took it over)\nhint: check that no \
                 two pgward processes ran the same work at once",
                self.key
            );
        }
        self.storage
            .delete(&self.key)
            .await
            .with_context(|| format!("cannot remove lock {}", self.key))
    }
}

impl<T> Drop for Holding<T> {
    fn drop(&mut self) {
        if !self.released {
            tracing::debug!(lock = %self.key, "lease dropped without release");
        }
    }
}

/// A held lease. Call [`Lease::release`] when done; a lease that is dropped unreleased stays
/// until it lapses or a later run on this host sees its process is gone.
#[derive(Debug)]
pub struct Lease(Holding<LeaseInfo>);

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".to_string())
}

fn process_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// How often a wait for a lease says it still waits.
const WAITING_EVERY: Duration = Duration::from_secs(30);

/// A wait for a lease ended by a stop (the agent's shutdown, Ctrl-C) before the holder let go.
#[derive(Debug, thiserror::Error)]
#[error("stopped while waiting for the lock (nothing was started)")]
pub struct WaitCancelled;

/// How [`Lease::acquire_waiting`] waits for a holder.
pub struct LeaseWait<'a> {
    /// Holders with these purposes are waited for; any other holder is a refusal at once.
    pub for_purposes: &'a [&'a str],
    /// The longest wait.
    pub max: Duration,
    /// How often to try again.
    pub poll: Duration,
    pub events: &'a Events,
    /// Ends the wait early (the agent's shutdown): the holder's refusal is returned.
    pub cancel: Option<&'a CancellationToken>,
}

impl Lease {
    /// Takes the lease `name` (system clock), or explains who holds it.
    pub async fn acquire(storage: DynStorage, name: &str, purpose: &str) -> Result<Lease> {
        Lease::acquire_at(storage, name, purpose, clock::system()).await
    }

    /// Takes the lease `name` with `clock` deciding expiry (tests step it).
    pub async fn acquire_at(
        storage: DynStorage,
        name: &str,
        purpose: &str,
        clock: DynClock,
    ) -> Result<Lease> {
        let key = layout::lock_key(name);
        let now = clock.now();
        let me = LeaseInfo {
            host: hostname(),
            pid: std::process::id(),
            purpose: purpose.to_string(),
            acquired_at: rfc3339(now),
            nonce: format!("{:016x}", rand::random::<u64>()),
            expires_at: Some(now + chrono_of(LEASE_TTL)),
        };
        let body = Bytes::from(serde_json::to_vec_pretty(&me)?);
        for _ in 0..3 {
            let found = storage::create(storage.as_ref(), &key, body.clone())
                .await
                .with_context(|| format!("cannot write lock {key}"))?;
            let holder_bytes = match found {
                Created::Written | Created::AlreadyOurs => {
                    // Read back: only the creator whose bytes are there holds the lease.
                    match storage.get(&key).await {
                        Ok(now) if now == body => {
                            return Ok(Lease(Holding {
                                storage,
                                key,
                                info: me,
                                body,
                                clock,
                                released: false,
                            }));
                        }
                        Ok(other) => other,
                        Err(e) if e.is_not_found() => continue,
                        Err(e) => return Err(e).with_context(|| format!("cannot read lock {key}")),
                    }
                }
                Created::Taken(other) => other,
            };
            let holder: Option<LeaseInfo> = serde_json::from_slice(&holder_bytes).ok();
            match holder {
                Some(h) if h.host == me.host && !process_alive(h.pid) => {
                    let why = format!("pid {} no longer exists", h.pid);
                    take_over(&storage, name, &key, &holder_bytes, &body, &why).await?;
                }
                Some(h) if h.lapsed(clock.now()) => {
                    let why = format!(
                        "its holder (pid {} on {}) let it lapse at {}",
                        h.pid,
                        h.host,
                        h.expires_at.map(rfc3339).unwrap_or_default()
                    );
                    take_over(&storage, name, &key, &holder_bytes, &body, &why).await?;
                }
                Some(holder) => return Err(Held { key, holder }.into()),
                None => bail!(
                    "lock {key} exists but cannot be read\nhint: if no other pgward is running, delete it"
                ),
            }
        }
        bail!("cannot take lock {key}: it keeps reappearing (another process is racing for it)")
    }

    /// Like [`Lease::acquire_at`], but a holder whose purpose is in `wait.for_purposes` (a
    /// garbage-collection sweep, say) is waited for, up to `wait.max`, with a `Waiting` event
    /// on each try, instead of being a refusal.
    pub async fn acquire_waiting(
        storage: DynStorage,
        name: &str,
        purpose: &str,
        clock: DynClock,
        wait: &LeaseWait<'_>,
    ) -> Result<Lease> {
        let started = Instant::now();
        let mut last_said = None;
        loop {
            let err = match Lease::acquire_at(storage.clone(), name, purpose, clock.clone()).await {
                Ok(lease) => return Ok(lease),
                Err(e) => e,
            };
            let waitable = err
                .downcast_ref::<Held>()
                .is_some_and(|h| wait.for_purposes.contains(&h.holder.purpose.as_str()));
            let waited = started.elapsed();
            if !waitable || waited >= wait.max {
                return Err(err);
            }
            // Said at the first try and then every WAITING_EVERY, not at each poll.
            let due = last_said.is_none_or(|t: Instant| t.elapsed() >= WAITING_EVERY);
            if let Some(h) = err.downcast_ref::<Held>()
                && due
            {
                last_said = Some(Instant::now());
                wait.events.emit(&Event::Waiting {
                    what: format!(
                        "lock {} held by {} (pid {} on {})",
                        h.key, h.holder.purpose, h.holder.pid, h.holder.host
                    ),
                    waited_ms: waited.as_millis() as u64,
                    limit_ms: wait.max.as_millis() as u64,
                });
            }
            match wait.cancel {
                Some(token) => tokio::select! {
                    () = token.cancelled() => return Err(err.context(WaitCancelled)),
                    () = tokio::time::sleep(wait.poll) => {}
                },
                None => tokio::time::sleep(wait.poll).await,
            }
        }
    }

    /// What this lease says (holder, expiry).
    pub fn info(&self) -> &LeaseInfo {
        &self.0.info
    }

    /// How long this lease is still valid by its clock (zero once expired).
    pub fn valid_for(&self) -> Duration {
        self.0.valid_for()
    }

    /// Fails unless the lease is valid for at least `margin` more by its clock.
    pub fn ensure_valid_for(&self, margin: Duration) -> Result<()> {
        self.0.ensure_valid_for(margin)
    }

    /// Whether the stored lease still holds this holder's bytes (not taken over).
    pub async fn still_ours(&self) -> Result<bool> {
        self.0.still_ours().await
    }

    /// Renews the lease if less than two thirds of its time is left; `true` if it did. Fails
    /// when the lease is no longer ours, or too close to lapsing to renew safely.
    pub async fn renew_if_due(&mut self) -> Result<bool> {
        self.0.renew_if_due().await
    }

    /// Hands the lease to a background task that renews it until released.
    pub fn keep_renewed(self) -> Renewing<Lease> {
        Renewing::start(self)
    }

    pub async fn release(mut self) -> Result<()> {
        self.0.release().await
    }
}

/// A lease renewed in the background ([`Lease::keep_renewed`], [`ReadLease::keep_renewed`]).
/// A renewal that fails is remembered: [`Renewing::check`] reports it.
#[derive(Debug)]
pub struct Renewing<L: Renewable> {
    lease: Arc<tokio::sync::Mutex<Option<L>>>,
    failed: Arc<std::sync::Mutex<Option<String>>>,
    task: tokio::task::JoinHandle<()>,
}

/// What [`Renewing`] can hold.
#[async_trait::async_trait]
pub trait Renewable: Send + Sync + 'static {
    async fn renew_now_if_due(&mut self) -> Result<bool>;
    fn check_valid_for(&self, margin: Duration) -> Result<()>;
    async fn check_ours(&self) -> Result<bool>;
    async fn release_it(self) -> Result<()>;
}

#[async_trait::async_trait]
impl Renewable for Lease {
    async fn renew_now_if_due(&mut self) -> Result<bool> {
        self.renew_if_due().await
    }
    fn check_valid_for(&self, margin: Duration) -> Result<()> {
        self.ensure_valid_for(margin)
    }
    async fn check_ours(&self) -> Result<bool> {
        self.still_ours().await
    }
    async fn release_it(self) -> Result<()> {
        self.release().await
    }
}

impl<L: Renewable> Renewing<L> {
    fn start(lease: L) -> Renewing<L> {
        let lease = Arc::new(tokio::sync::Mutex::new(Some(lease)));
        let failed = Arc::new(std::sync::Mutex::new(None));
        let (l, f) = (lease.clone(), failed.clone());
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(RENEW_POLL).await;
                let mut guard = l.lock().await;
                let Some(lease) = guard.as_mut() else { return };
                if let Err(e) = lease.renew_now_if_due().await {
                    tracing::warn!("{e:#}");
                    *f.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!("{e:#}"));
                    return;
                }
            }
        });
        Renewing {
            lease,
            failed,
            task,
        }
    }

    /// Fails if a renewal failed, the lease is no longer ours, or it is valid for less than
    /// `margin` more.
    pub async fn check(&self, margin: Duration) -> Result<()> {
        if let Some(why) = self
            .failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            bail!("{why}");
        }
        let guard = self.lease.lock().await;
        let Some(lease) = guard.as_ref() else {
            bail!("the lease was released");
        };
        lease.check_valid_for(margin)?;
        if !lease.check_ours().await? {
            bail!(
                "our lease was taken over by another process\nhint: this process was paused \
                 longer than its lease lasts ({LEASE_TTL:?}); its work stops here"
            );
        }
        Ok(())
    }

    /// Stops renewing and releases the lease.
    pub async fn release(self) -> Result<()> {
        self.task.abort();
        let lease = self.lease.lock().await.take();
        match lease {
            Some(l) => l.release_it().await,
            None => Ok(()),
        }
    }
}

/// A dropped (unreleased) renewing lease stops being renewed: it lapses after its TTL instead
/// of being kept alive for as long as the process runs (the agent runs for months; a lease it
/// forgot must not hold a backup against `expire` forever).
impl<L: Renewable> Drop for Renewing<L> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Removes the stale lease `stale` (of a dead process, or lapsed) so the caller can create its
/// own — if this caller wins the takeover marker; a loser is refused. The marker is removed
/// afterwards: a taker that wins it later finds the stale lease gone and deletes nothing.
async fn take_over(
    storage: &DynStorage,
    name: &str,
    key: &str,
    stale: &Bytes,
    mine: &Bytes,
    why: &str,
) -> Result<()> {
    let marker = layout::lock_takeover_key(name, &Sha256Digest::of(stale));
    let won = storage::create(storage.as_ref(), &marker, mine.clone())
        .await
        .with_context(|| format!("cannot write {marker}"))?;
    if let Created::Taken(_) = won {
        bail!(
            "lock {key} is stale ({why}), and another process is taking it over right now\n\
             hint: run again in a moment; if this repeats, no other pgward runs and {marker} \
             stays, delete {marker} (a taker died midway)"
        );
    }
    let result = async {
        match storage.get(key).await {
            Ok(now) if now == *stale => {
                tracing::warn!(lock = %key, "taking over a stale lock: {why}");
                storage.delete(key).await?;
            }
            // Already replaced or removed: nothing of the stale holder's to delete.
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        Ok(())
    }
    .await
    .with_context(|| format!("cannot take over lock {key}"));
    let _ = storage.delete(&marker).await;
    result
}

// ---------------------------------------------------------------------------------------------
// Read leases
// ---------------------------------------------------------------------------------------------

/// Why a reader holds a read lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReadPurpose {
    Restore,
    RestoreDump,
    Drill,
    Verify,
}

/// What a read lease reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadKind {
    Backup,
    Dump,
}

/// The WAL a backup's reader needs, from this segment on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalFrom {
    pub timeline: Timeline,
    /// A WAL segment name (24 hex digits).
    pub first_segment: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadLeaseInfo {
    pub host: String,
    pub pid: u32,
    pub purpose: ReadPurpose,
    pub kind: ReadKind,
    pub label: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal_from: Option<WalFrom>,
    pub acquired_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub nonce: String,
}

impl Record for ReadLeaseInfo {
    fn expires_at(&self) -> Option<DateTime<Utc>> {
        Some(self.expires_at)
    }
    fn set_expires_at(&mut self, at: DateTime<Utc>) {
        self.expires_at = at;
    }
}

impl ReadLeaseInfo {
    /// Live at `now`: not lapsed, and not left by a dead process on this host.
    pub fn live(&self, now: DateTime<Utc>, this_host: &str) -> bool {
        let dead_here = self.host == this_host && !process_alive(self.pid);
        !lapsed(Some(self.expires_at), now) && !dead_here
    }
}

/// What a reader asks to hold.
#[derive(Debug, Clone)]
pub struct ReadRequest {
    pub purpose: ReadPurpose,
    pub kind: ReadKind,
    pub label: String,
    pub wal_from: Option<WalFrom>,
}

/// A held read lease; release it on every exit path.
#[derive(Debug)]
pub struct ReadLease(Holding<ReadLeaseInfo>);

impl ReadLease {
    /// Writes a new read lease (a unique key: readers never contend).
    pub async fn take(storage: DynStorage, request: ReadRequest, clock: DynClock) -> Result<Self> {
        let now = clock.now();
        let nonce = format!("{:016x}", rand::random::<u64>());
        let info = ReadLeaseInfo {
            host: hostname(),
            pid: std::process::id(),
            purpose: request.purpose,
            kind: request.kind,
            label: request.label,
            wal_from: request.wal_from,
            acquired_at: now,
            expires_at: now + chrono_of(LEASE_TTL),
            nonce,
        };
        let key = layout::read_lease_key(&format!("{}-{}", info.label, info.nonce));
        let body = Bytes::from(serde_json::to_vec_pretty(&info)?);
        match storage::create(storage.as_ref(), &key, body.clone())
            .await
            .with_context(|| format!("cannot write read lease {key}"))?
        {
            Created::Written | Created::AlreadyOurs => {}
            Created::Taken(_) => bail!("read lease {key} exists already (a nonce collision)"),
        }
        Ok(ReadLease(Holding {
            storage,
            key,
            info,
            body,
            clock,
            released: false,
        }))
    }

    /// Takes the read lease and then checks that `still_there` (the object the reader read
    /// first: a manifest) exists; if it is gone, releases the lease and fails. The reader
    /// protocol in the module documentation.
    pub async fn take_checked(
        storage: DynStorage,
        request: ReadRequest,
        still_there: &str,
    ) -> Result<ReadLease> {
        let what = match request.kind {
            ReadKind::Backup => "backup",
            ReadKind::Dump => "dump",
        };
        let label = request.label.clone();
        let lease = ReadLease::take(storage.clone(), request, clock::system()).await?;
        let found = storage.head(still_there).await;
        match found {
            Ok(Some(_)) => Ok(lease),
            Ok(None) => {
                let _ = lease.release().await;
                bail!(
                    "{what} {label} was expired while this {} started: {still_there} is gone\n\
                     hint: pick another {what} (`pgward info` lists them)",
                    match what {
                        "dump" => "restore-dump",
                        _ => "restore",
                    }
                )
            }
            Err(e) => {
                let _ = lease.release().await;
                Err(e).with_context(|| format!("cannot check {still_there}"))
            }
        }
    }

    pub fn info(&self) -> &ReadLeaseInfo {
        &self.0.info
    }

    pub async fn renew_if_due(&mut self) -> Result<bool> {
        self.0.renew_if_due().await
    }

    pub fn keep_renewed(self) -> Renewing<ReadLease> {
        Renewing::start(self)
    }

    pub async fn release(mut self) -> Result<()> {
        self.0.release().await
    }
}

#[async_trait::async_trait]
impl Renewable for ReadLease {
    async fn renew_now_if_due(&mut self) -> Result<bool> {
        self.renew_if_due().await
    }
    fn check_valid_for(&self, margin: Duration) -> Result<()> {
        self.0.ensure_valid_for(margin)
    }
    async fn check_ours(&self) -> Result<bool> {
        self.0.still_ours().await
    }
    async fn release_it(self) -> Result<()> {
        self.release().await
    }
}

/// Every live read lease at `now` (lapsed ones and those of dead processes on this host are
/// left out). A lease that cannot be read or parsed is an error, never "no lease".
pub async fn live_read_leases(
    storage: &dyn Storage,
    now: DateTime<Utc>,
) -> Result<Vec<ReadLeaseInfo>> {
    let listing = storage
        .list(layout::READ_LEASES_PREFIX)
        .await
        .with_context(|| format!("cannot list read leases in {}", storage.describe()))?;
    let host = hostname();
    let mut live = Vec::new();
    for o in listing {
        let bytes = match storage.get(&o.key).await {
            Ok(b) => b,
            // Released between the listing and the read.
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot read read lease {}", o.key)),
        };
        let info: ReadLeaseInfo = serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "read lease {} cannot be parsed\nhint: if no restore, drill or verify is \
                 running, delete it",
                o.key
            )
        })?;
        if info.live(now, &host) {
            live.push(info);
        }
    }
    Ok(live)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock as _;
    use crate::storage::memory::MemoryStorage;
    use std::sync::Arc;

    #[tokio::test]
    async fn second_holder_is_refused_and_release_frees() {
        let s: DynStorage = Arc::new(MemoryStorage::new());
        let a = Lease::acquire(s.clone(), "backup", "backup").await.unwrap();
        // Pretend another live process on another host holds it.
        let other = LeaseInfo {
            host: "elsewhere".into(),
            pid: 1,
            purpose: "backup".into(),
            acquired_at: "t".into(),
            nonce: String::new(),
            expires_at: None,
        };
        s.put(
            &layout::lock_key("backup"),
            Bytes::from(serde_json::to_vec(&other).unwrap()),
        )
        .await
        .unwrap();
        let err = Lease::acquire(s.clone(), "backup", "backup")
            .await
            .unwrap_err();
        assert!(format!("{err}").contains("elsewhere"), "{err}");
        // `a` lost its lease: releasing refuses to delete the other holder's.
        assert!(a.release().await.is_err());
        s.delete(&layout::lock_key("backup")).await.unwrap();
        let b = Lease::acquire(s.clone(), "backup", "backup").await.unwrap();
        b.release().await.unwrap();
    }

    #[tokio::test]
    async fn stale_lease_on_this_host_is_taken_over() {
        let s: DynStorage = Arc::new(MemoryStorage::new());
        let dead = LeaseInfo {
            host: hostname(),
            pid: u32::MAX - 1,
            purpose: "backup".into(),
            acquired_at: "t".into(),
            nonce: String::new(),
            expires_at: None,
        };
        s.put(
            &layout::lock_key("backup"),
            Bytes::from(serde_json::to_vec(&dead).unwrap()),
        )
        .await
        .unwrap();
        let l = Lease::acquire(s.clone(), "backup", "backup").await.unwrap();
        l.release().await.unwrap();
    }

    fn dead_lease() -> Bytes {
        let dead = LeaseInfo {
            host: hostname(),
            pid: u32::MAX - 1,
            purpose: "backup".into(),
            acquired_at: "t".into(),
            nonce: "dead".into(),
            expires_at: None,
        };
        Bytes::from(serde_json::to_vec(&dead).unwrap())
    }

    /// Two takers of one stale lease, each pausing before its deletes as `pauses` says: at most
    /// one may hold the lease (with a plain delete, the slower one deleted the faster one's
    /// fresh lease and both ran).
    #[tokio::test]
    async fn two_takers_of_one_stale_lease_never_both_hold_it() {
        use crate::storage::faulty::FaultyStorage;
        use std::time::Duration;
        let ms = Duration::from_millis;
        for pauses in [(ms(0), ms(150)), (ms(150), ms(0)), (ms(100), ms(100))] {
            let mem: DynStorage = Arc::new(MemoryStorage::new());
            mem.put(&layout::lock_key("backup"), dead_lease())
                .await
                .unwrap();
            let taker = |pause| {
                let f = FaultyStorage::new(mem.clone());
                f.delay("delete", "locks/", pause);
                Arc::new(f) as DynStorage
            };
            let (a, b) = tokio::join!(
                Lease::acquire(taker(pauses.0), "backup", "backup"),
                Lease::acquire(taker(pauses.1), "backup", "backup")
            );
            let held: Vec<Lease> = [a, b].into_iter().filter_map(|r| r.ok()).collect();
            assert_eq!(
                held.len(),
                1,
                "{pauses:?}: exactly one taker holds the lease"
            );
            let winner = held.into_iter().next().unwrap();
            assert_eq!(
                mem.get(&winner.0.key).await.unwrap(),
                winner.0.body,
                "{pauses:?}"
            );
            winner.release().await.unwrap();
            assert!(mem.list("locks/").await.unwrap().is_empty(), "{pauses:?}");
        }
    }

    /// The create committed but its answer was lost: the retry finds its own bytes and holds
    /// the lease; release removes it.
    #[tokio::test]
    async fn a_lost_answer_still_takes_the_lease() {
        use crate::storage::faulty::FaultyStorage;
        use crate::storage::retry::{self, RetryPolicy};
        let mem: DynStorage = Arc::new(MemoryStorage::new());
        let faulty = Arc::new(FaultyStorage::new(mem.clone()));
        faulty.lose_acks("locks/", 1);
        let s = retry::wrap(faulty.clone(), RetryPolicy::default());
        let l = Lease::acquire(s, "backup", "backup").await.unwrap();
        assert_eq!(faulty.injected_failures(), 1);
        l.release().await.unwrap();
        assert!(mem.list("locks/").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn release_leaves_a_lease_that_is_no_longer_ours() {
        let s: DynStorage = Arc::new(MemoryStorage::new());
        let l = Lease::acquire(s.clone(), "backup", "backup").await.unwrap();
        let key = layout::lock_key("backup");
        s.put(&key, dead_lease()).await.unwrap();
        let err = l.release().await.unwrap_err();
        assert!(format!("{err:#}").contains("no longer ours"), "{err:#}");
        assert_eq!(s.get(&key).await.unwrap(), dead_lease());
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn foreign(expires_at: Option<DateTime<Utc>>) -> Bytes {
        let other = LeaseInfo {
            host: "elsewhere".into(),
            pid: 1,
            purpose: "gc".into(),
            acquired_at: "t".into(),
            nonce: "n".into(),
            expires_at,
        };
        Bytes::from(serde_json::to_vec(&other).unwrap())
    }

    /// Another host's lease: refused while valid and within the skew allowance, taken over
    /// once lapsed; an old lease without expiry keeps today's rule (never broken).
    #[tokio::test]
    async fn a_lapsed_lease_of_another_host_is_taken_over_and_only_then() {
        let t0 = at("2026-12-01T12:00:00Z");
        let exp = t0 + chrono_of(LEASE_TTL);
        let cases = [
            (Some(exp), t0, false, "valid"),
            (
                Some(exp),
                exp + chrono::Duration::seconds(30),
                false,
                "expired, within skew",
            ),
            (
                Some(exp),
                exp + chrono_of(CLOCK_SKEW) + chrono::Duration::seconds(1),
                true,
                "lapsed",
            ),
            (
                None,
                t0 + chrono::Duration::days(30),
                false,
                "old lease without expiry",
            ),
        ];
        for (expires, now, taken, what) in cases {
            let s: DynStorage = Arc::new(MemoryStorage::new());
            s.put(&layout::lock_key("backup"), foreign(expires))
                .await
                .unwrap();
            let clock = crate::clock::ManualClock::new(now);
            let r = Lease::acquire_at(s.clone(), "backup", "backup", clock).await;
            assert_eq!(r.is_ok(), taken, "{what}: {:?}", r.as_ref().err());
            match r {
                Ok(l) => {
                    assert_eq!(
                        l.info().expires_at,
                        Some(now + chrono_of(LEASE_TTL)),
                        "{what}"
                    );
                    l.release().await.unwrap();
                }
                Err(e) => {
                    let held = e.downcast_ref::<Held>().expect("a typed refusal");
                    assert_eq!(held.holder.host, "elsewhere", "{what}");
                }
            }
        }
    }

    /// Renewal moves the expiry while well before it; a lease too close to lapsing (or past)
    /// is never renewed, and the safety-margin check fails before the lease lapses.
    #[tokio::test]
    async fn renewal_keeps_a_lease_and_a_lapsing_one_stops_its_holder() {
        let s: DynStorage = Arc::new(MemoryStorage::new());
        let t0 = at("2026-12-01T12:00:00Z");
        let clock = crate::clock::ManualClock::new(t0);
        let mut l = Lease::acquire_at(s.clone(), "backup", "gc", clock.clone())
            .await
            .unwrap();
        assert!(!l.renew_if_due().await.unwrap(), "fresh: nothing to do");
        clock.advance(LEASE_TTL / 2);
        assert!(l.renew_if_due().await.unwrap());
        assert_eq!(
            l.info().expires_at,
            Some(clock.now() + chrono_of(LEASE_TTL))
        );
        let stored: LeaseInfo =
            serde_json::from_slice(&s.get(&layout::lock_key("backup")).await.unwrap()).unwrap();
        assert_eq!(stored, *l.info(), "the renewal is stored");
        l.ensure_valid_for(SAFETY_MARGIN).unwrap();
        // Paused: the clock jumps to 30 s before expiry.
        clock.advance(LEASE_TTL - Duration::from_secs(30));
        let err = l.ensure_valid_for(SAFETY_MARGIN).unwrap_err();
        assert!(
            format!("{err:#}").contains("less than the safety margin"),
            "{err:#}"
        );
        let err = l.renew_if_due().await.unwrap_err();
        assert!(
            format!("{err:#}").contains("too little to renew safely"),
            "{err:#}"
        );
        // A lease taken over meanwhile is not renewed over the new holder's.
        clock.advance(LEASE_TTL + CLOCK_SKEW);
        let other = Lease::acquire_at(s.clone(), "backup", "backup", clock.clone())
            .await
            .unwrap();
        assert!(!l.still_ours().await.unwrap());
        assert!(
            l.release().await.is_err(),
            "never deletes the new holder's lease"
        );
        other.release().await.unwrap();
    }

    /// A backup waits for a sweep's lease (Waiting events), but not for another backup's.
    #[tokio::test]
    async fn a_wait_for_a_gc_holder_ends_when_it_releases() {
        use crate::events::TestSink;
        let s: DynStorage = Arc::new(MemoryStorage::new());
        let sink = Arc::new(TestSink::default());
        let events: Events = sink.clone();
        let gc = Lease::acquire(s.clone(), "backup", "gc").await.unwrap();
        let wait = LeaseWait {
            for_purposes: &["gc"],
            max: Duration::from_secs(10),
            poll: Duration::from_millis(20),
            events: &events,
            cancel: None,
        };
        let (got, ()) = tokio::join!(
            Lease::acquire_waiting(s.clone(), "backup", "backup", clock::system(), &wait),
            async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                gc.release().await.unwrap();
            }
        );
        let got = got.unwrap();
        assert!(
            sink.events()
                .iter()
                .any(|e| matches!(e, Event::Waiting { what, .. } if what.contains("held by gc"))),
            "{:?}",
            sink.events()
        );
        let started = Instant::now();
        let err = Lease::acquire_waiting(s.clone(), "backup", "backup", clock::system(), &wait)
            .await
            .unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "no wait for a backup"
        );
        assert!(
            format!("{err}").contains("another backup is running"),
            "{err}"
        );
        got.release().await.unwrap();
    }

    fn request(label: &str) -> ReadRequest {
        ReadRequest {
            purpose: ReadPurpose::Restore,
            kind: ReadKind::Backup,
            label: label.into(),
            wal_from: Some(WalFrom {
                timeline: Timeline(1),
                first_segment: "000000010000000000000003".into(),
            }),
        }
    }

    #[tokio::test]
    async fn read_leases_are_listed_while_live_and_an_unreadable_one_is_an_error() {
        let s: DynStorage = Arc::new(MemoryStorage::new());
        let t0 = at("2026-12-01T12:00:00Z");
        let clock = crate::clock::ManualClock::new(t0);
        let a = ReadLease::take(s.clone(), request("A"), clock.clone())
            .await
            .unwrap();
        let b = ReadLease::take(s.clone(), request("A"), clock.clone())
            .await
            .unwrap();
        let live = live_read_leases(s.as_ref(), t0).await.unwrap();
        assert_eq!(
            live.len(),
            2,
            "two readers of one backup hold one lease each"
        );
        assert_eq!(live[0].purpose, ReadPurpose::Restore);
        assert_eq!(live[0].wal_from.as_ref().unwrap().timeline, Timeline(1));
        let lapsed_at = t0 + chrono_of(LEASE_TTL + CLOCK_SKEW) + chrono::Duration::seconds(1);
        assert!(
            live_read_leases(s.as_ref(), lapsed_at)
                .await
                .unwrap()
                .is_empty()
        );
        a.release().await.unwrap();
        assert_eq!(live_read_leases(s.as_ref(), t0).await.unwrap().len(), 1);
        s.put(&layout::read_lease_key("junk"), Bytes::from_static(b"{"))
            .await
            .unwrap();
        let err = live_read_leases(s.as_ref(), t0).await.unwrap_err();
        assert!(format!("{err:#}").contains("cannot be parsed"), "{err:#}");
        b.release().await.unwrap();
    }

    /// The reader protocol: a manifest gone by the time the lease is held fails the reader,
    /// and leaves no lease behind.
    #[tokio::test]
    async fn a_reader_whose_backup_was_expired_meanwhile_fails_and_leaves_no_lease() {
        let s: DynStorage = Arc::new(MemoryStorage::new());
        let manifest = layout::manifest_key("20261201T120000Z");
        s.put(&manifest, Bytes::from_static(b"m")).await.unwrap();
        let l = ReadLease::take_checked(s.clone(), request("20261201T120000Z"), &manifest)
            .await
            .unwrap();
        l.release().await.unwrap();
        s.delete(&manifest).await.unwrap();
        let err = ReadLease::take_checked(s.clone(), request("20261201T120000Z"), &manifest)
            .await
            .unwrap_err();
        assert!(
            format!("{err}")
                .contains("backup 20261201T120000Z was expired while this restore started"),
            "{err}"
        );
        assert!(s.list("locks/").await.unwrap().is_empty());
    }
}
