//! Block garbage collection: two-phase, safe against backups that deduplicate against a block
//! being collected, against readers, and against a paused or killed collector (issue 12,
//! item 4; DESIGN.md "Retention").
//!
//! Blocks are shared by every backup; a block may go only when no complete manifest references
//! it and no backup can come to reference it. The protocol:
//!
//! 1. **Mark** ([`mark`], no lease): list `blocks/`, then read every complete manifest. Blocks
//!    referenced by none, not in an earlier mark, and last written more than `grace` ago are
//!    recorded in `gc/<id>/mark.json.zst` (id = sortable time + random). A mark is only a list
//!    of candidates: nothing is decided by it alone.
//! 2. **Backups never deduplicate against marked blocks**: [`KnownBlocks::load`] subtracts
//!    every block of every mark ([`marked_blocks`]), so a backup starting after a mark uploads
//!    its own copy (a `put`, which also makes the block young again).
//! 3. **Sweep** ([`sweep`], a later run, for marks older than `grace` by the injected clock)
//!    holds the repository's `backup` lease (purpose `gc`), so no backup runs meanwhile: a
//!    backup that starts waits for it (`Event::Waiting`), a sweep that finds a backup holding
//!    the lease defers and says so. Under the lease it lists the complete manifests, then the
//!    live read leases, then `blocks/`, and deletes only blocks that are in a due mark,
//!    referenced by no manifest, and not written again since the mark. It defers entirely
//!    while a live read lease names a backup that has no complete manifest (a restore still
//!    reading an expired backup): the manifests are listed before the read leases, and readers
//!    take their lease before checking their manifest exists, so every reader is seen either
//!    through its manifest (whose blocks are then referenced) or through its lease. A mark is
//!    removed once all its blocks are gone or referenced again.
//! 4. **A backup checks before it commits** (`backup::store_manifest`): its lease is still its
//!    own and valid for at least [`SAFETY_MARGIN`], and every block its manifest references
//!    that appears in a current mark still exists (a head each). The lead's proposal checked
//!    only blocks deduplicated against and trusted the marks alone; that has a hole: a sweep
//!    removes its mark when done, so a backup whose lease lapsed while it was paused could
//!    find no mark for the block swept from under it. The lease check closes that: a sweep can
//!    only run during a backup if the backup's lease lapsed and was taken over, which changes
//!    the lease's bytes. Blocks the backup uploaded itself are checked too (see the residual
//!    window below).
//! 5. **A paused or killed collector**: before each delete batch the sweep renews its lease if
//!    due and checks it is valid for at least [`SAFETY_MARGIN`] by its clock; once that fails
//!    it deletes nothing more and fails saying why. A killed sweep leaves its lease (taken
//!    over once lapsed, or at once on this host when the pid is gone) and its marks; the next
//!    run re-reads everything and converges: deletes are idempotent and a mark goes only when
//!    done.
//!
//! Residual windows, honestly: (a) the sweep is paused after its margin check and before its
//! DeleteObjects request lands, for longer than the margin plus [`CLOCK_SKEW`]; a backup then
//! takes the lapsed lease. That backup never deduplicated against the marked blocks (rule 2),
//! so it uploads them anew; if the late delete lands after that upload, the block is gone —
//! and the backup's own check (rule 4, blocks in a mark are headed, uploaded ones too) catches
//! it unless the delete lands between that head and the manifest write. S3 refuses requests
//! signed more than 15 minutes earlier, which bounds the stall. (b) a backup is paused between
//! its check and its manifest write for longer than the margin plus the skew: a sweep can take
//! its lease and delete a block it deduplicated against. Both need a pause of more than two
//! minutes at exactly one point; neither is silent at restore time (a missing block fails the
//! restore loudly, and `verify`'s listing check names the backup it breaks).

use crate::backup::LEASE_NAME;
use crate::clock::DynClock;
use crate::codec::{self, Sha256Digest};
use crate::events::Events;
use crate::repo::layout::{self, BackupKey};
use crate::repo::lock::{self, Held, Lease, LeaseInfo, ReadKind, SAFETY_MARGIN};
use crate::repo::manifest::Manifest;
use crate::storage::{DELETE_BATCH, DeleteFailure, DynStorage, ObjectMeta, Storage};
use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

/// The default `[retention] gc_grace`.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(24 * 3600);
/// Rounds of [`delete_keys`] over the keys that failed (on top of the retry layer's retries).
const DELETE_ROUNDS: usize = 3;

/// What garbage collection works with.
pub struct Gc<'a> {
    pub storage: &'a DynStorage,
    pub events: &'a Events,
    pub clock: DynClock,
    /// `[retention] gc_grace`: how old an unreferenced block must be to be marked, and a mark
    /// to be swept.
    pub grace: Duration,
}

/// One mark: the blocks one run found unreferenced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkFile {
    pub id: String,
    pub created_at: DateTime<Utc>,
    pub blocks: Vec<MarkedBlock>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkedBlock {
    pub id: Sha256Digest,
    pub size: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MarkOutcome {
    /// The mark written, if any block was marked.
    pub mark: Option<String>,
    pub marked: usize,
    pub marked_bytes: u64,
    /// Unreferenced, but written less than `grace` ago (a backup may be uploading them).
    pub unreferenced_young: usize,
    /// Unreferenced and already in an earlier mark.
    pub already_marked: usize,
    /// Unreferenced, but the store does not say when they were written: never marked.
    pub unreferenced_undated: usize,
}

/// Why a sweep did nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Deferral {
    /// Another process (a backup) holds the `backup` lease.
    BackupRunning {
        purpose: String,
        host: String,
        pid: u32,
    },
    /// A live reader names a backup that has no complete manifest any more.
    ReaderOfExpiredBackup {
        label: String,
        purpose: String,
        host: String,
        pid: u32,
    },
}

impl std::fmt::Display for Deferral {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Deferral::BackupRunning { purpose, host, pid } => write!(
                f,
                "a {purpose} is running (pid {pid} on {host}); the sweep runs next time"
            ),
            Deferral::ReaderOfExpiredBackup {
                label,
                purpose,
                host,
                pid,
            } => write!(
                f,
                "a {purpose} (pid {pid} on {host}) is still reading backup {label}, which has \
                 no manifest any more; the sweep runs once it is done"
            ),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SweepOutcome {
    pub deferred: Option<Deferral>,
    pub deleted: usize,
    pub deleted_bytes: u64,
    /// Marked blocks referenced again (by a backup that deduplicated against them before the
    /// mark), or written again since: kept.
    pub kept_referenced: usize,
    pub kept_rewritten: usize,
    /// Marks removed (done) and left (younger than `grace`, or with failed deletes).
    pub marks_removed: usize,
    pub marks_pending: usize,
    /// Keys that could not be deleted, with why.
    pub failed: Vec<(String, String)>,
}

/// What [`delete_keys`] could not do.
#[derive(Debug, Default)]
pub struct DeleteReport {
    pub deleted: usize,
    pub failed: Vec<DeleteFailure>,
}

/// Deletes `keys` in batches through `delete_many`, tries the failed ones again up to
/// [`DELETE_ROUNDS`] times (transient failures only), and returns what stayed.
pub async fn delete_keys(storage: &dyn Storage, keys: &[String]) -> DeleteReport {
    let mut pending = keys.to_vec();
    let mut failed = Vec::new();
    for round in 0..DELETE_ROUNDS {
        let out = storage.delete_many(&pending).await;
        let (retry, stop): (Vec<_>, Vec<_>) = out.into_iter().partition(|f| f.error.is_transient());
        failed.extend(stop);
        if retry.is_empty() || round + 1 == DELETE_ROUNDS {
            failed.extend(retry);
            break;
        }
        tracing::warn!(keys = retry.len(), "some deletes failed; trying them again");
        pending = retry.into_iter().map(|f| f.key).collect();
    }
    DeleteReport {
        deleted: keys.len() - failed.len(),
        failed,
    }
}

/// Every block of every mark: backups never deduplicate against them. An unreadable mark is
/// an error (what it marks is unknown).
pub async fn marked_blocks(storage: &dyn Storage) -> Result<HashSet<Sha256Digest>> {
    Ok(read_marks(storage)
        .await?
        .into_iter()
        .flat_map(|m| m.blocks.into_iter().map(|b| b.id))
        .collect())
}

/// Before a backup's manifest is written: every block it references that is in a current
/// mark must still exist (see the module documentation, rule 4).
pub async fn check_marked_blocks_exist<'a>(
    storage: &dyn Storage,
    referenced: impl Iterator<Item = &'a Sha256Digest>,
) -> Result<()> {
    let marked = marked_blocks(storage).await?;
    let wanted: BTreeSet<&Sha256Digest> = referenced.filter(|id| marked.contains(id)).collect();
    let heads: Vec<(
        String,
        Result<Option<ObjectMeta>, crate::storage::StorageError>,
    )> = futures::stream::iter(wanted.into_iter().map(layout::block_key))
        .map(|key| async move {
            let r = storage.head(&key).await;
            (key, r)
        })
        .buffer_unordered(16)
        .collect()
        .await;
    for (key, head) in heads {
        match head.with_context(|| format!("cannot check {key}"))? {
            Some(_) => {}
            None => bail!(
                "block {key}, which this backup deduplicated against, was deleted by garbage \
                 collection while the backup ran: refusing to write a manifest that references \
                 a missing block\nhint: run the backup again (it uploads its own copy); this \
                 happens only when a backup is paused longer than its lease lasts"
            ),
        }
    }
    Ok(())
}

async fn read_marks(storage: &dyn Storage) -> Result<Vec<MarkFile>> {
    let listing = storage
        .list(layout::GC_PREFIX)
        .await
        .with_context(|| format!("cannot list gc marks in {}", storage.describe()))?;
    let mut marks = Vec::new();
    for o in listing {
        if layout::parse_gc_mark_key(&o.key).is_none() {
            continue;
        }
        let bytes = match storage.get(&o.key).await {
            Ok(b) => b,
            // Removed by a sweep between the listing and the read.
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot read gc mark {}", o.key)),
        };
        let json = codec::decode_to_vec(&bytes, None)
            .with_context(|| format!("gc mark {} is not a zstd frame", o.key))?;
        let mark: MarkFile = serde_json::from_slice(&json).with_context(|| {
            format!(
                "gc mark {} cannot be parsed\nhint: delete it; the next gc marks again",
                o.key
            )
        })?;
        marks.push(mark);
    }
    Ok(marks)
}

/// Every block referenced by a complete manifest. An unreadable manifest is an error: what it
/// references is unknown, so nothing may be collected.
async fn referenced_blocks(
    storage: &dyn Storage,
) -> Result<(BTreeSet<String>, HashSet<Sha256Digest>)> {
    let listing = storage
        .list(layout::BACKUPS_PREFIX)
        .await
        .with_context(|| format!("cannot list backups in {}", storage.describe()))?;
    let labels: BTreeSet<String> = listing
        .iter()
        .filter_map(|o| match layout::parse_backup_key(&o.key)? {
            BackupKey::Manifest(l) => Some(l),
            BackupKey::InProgress(_) => None,
        })
        .collect();
    let manifests: Vec<Result<Manifest>> = futures::stream::iter(labels.iter())
        .map(|l| Manifest::load(storage, l))
        .buffer_unordered(8)
        .collect()
        .await;
    let mut ids = HashSet::new();
    for m in manifests {
        ids.extend(m?.block_ids().copied());
    }
    Ok((labels, ids))
}

async fn list_blocks(storage: &dyn Storage) -> Result<BTreeMap<Sha256Digest, ObjectMeta>> {
    Ok(storage
        .list(layout::BLOCKS_PREFIX)
        .await
        .with_context(|| format!("cannot list the blocks in {}", storage.describe()))?
        .into_iter()
        .filter_map(|o| Some((layout::parse_block_key(&o.key)?, o)))
        .collect())
}

fn chrono_of(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// Phase one: records the blocks no complete manifest references and that were written more
/// than `grace` ago (see the module documentation).
pub async fn mark(gc: &Gc<'_>) -> Result<MarkOutcome> {
    let storage = gc.storage.as_ref();
    // Blocks first: a block written after this listing is not a candidate at all.
    let blocks = list_blocks(storage).await?;
    let (_, referenced) = referenced_blocks(storage).await?;
    let already = marked_blocks(storage).await?;
    let now = gc.clock.now();
    let old_before = now - chrono_of(gc.grace);
    let mut out = MarkOutcome::default();
    let mut marked = Vec::new();
    for (id, meta) in &blocks {
        if referenced.contains(id) {
            continue;
        }
        if already.contains(id) {
            out.already_marked += 1;
            continue;
        }
        match meta.last_modified {
            None => out.unreferenced_undated += 1,
            Some(t) if t > old_before => out.unreferenced_young += 1,
            Some(_) => {
                out.marked_bytes += meta.size;
                marked.push(MarkedBlock {
                    id: *id,
                    size: meta.size,
                });
            }
        }
    }
    out.marked = marked.len();
    if marked.is_empty() {
        return Ok(out);
    }
    let id = format!(
        "{}-{:08x}",
        now.format("%Y%m%dT%H%M%SZ"),
        rand::random::<u32>()
    );
    let file = MarkFile {
        id: id.clone(),
        created_at: now,
        blocks: marked,
    };
    let key = layout::gc_mark_key(&id);
    let bytes = codec::encode_bytes(&serde_json::to_vec(&file)?, 3)?.data;
    storage
        .put(&key, Bytes::from(bytes))
        .await
        .with_context(|| format!("cannot write gc mark {key}"))?;
    tracing::info!(
        mark = %id,
        blocks = out.marked,
        bytes = out.marked_bytes,
        "marked unreferenced blocks; a sweep after the grace period deletes those still unreferenced"
    );
    out.mark = Some(id);
    Ok(out)
}

/// Phase two: deletes the blocks of marks older than `grace` that are still unreferenced,
/// under the `backup` lease (see the module documentation).
pub async fn sweep(gc: &Gc<'_>) -> Result<SweepOutcome> {
    let mut lease =
        match Lease::acquire_at(gc.storage.clone(), LEASE_NAME, "gc", gc.clock.clone()).await {
            Ok(l) => l,
            Err(e) => {
                if let Some(Held { holder, .. }) = e.downcast_ref::<Held>() {
                    let LeaseInfo {
                        purpose, host, pid, ..
                    } = holder.clone();
                    return Ok(SweepOutcome {
                        deferred: Some(Deferral::BackupRunning { purpose, host, pid }),
                        ..SweepOutcome::default()
                    });
                }
                return Err(e.context("cannot take the backup lease for the sweep"));
            }
        };
    let result = sweep_under(gc, &mut lease).await;
    if let Err(e) = lease.release().await {
        tracing::warn!("{e:#}");
    }
    result
}

async fn sweep_under(gc: &Gc<'_>, lease: &mut Lease) -> Result<SweepOutcome> {
    let storage = gc.storage.as_ref();
    let mut out = SweepOutcome::default();
    let now = gc.clock.now();
    let (due, pending): (Vec<MarkFile>, Vec<MarkFile>) = read_marks(storage)
        .await?
        .into_iter()
        .partition(|m| m.created_at + chrono_of(gc.grace) <= now);
    out.marks_pending = pending.len();
    if due.is_empty() {
        return Ok(out);
    }
    // Manifests, then read leases (the order the reader protocol relies on), then blocks.
    let (labels, referenced) = referenced_blocks(storage).await?;
    let readers = lock::live_read_leases(storage, gc.clock.now()).await?;
    if let Some(r) = readers
        .iter()
        .find(|r| r.kind == ReadKind::Backup && !labels.contains(&r.label))
    {
        out.deferred = Some(Deferral::ReaderOfExpiredBackup {
            label: r.label.clone(),
            purpose: serde_json::to_value(r.purpose)?
                .as_str()
                .unwrap_or("reader")
                .to_string(),
            host: r.host.clone(),
            pid: r.pid,
        });
        return Ok(out);
    }
    let blocks = list_blocks(storage).await?;
    // Per mark, the keys to delete; a block in two marks is deleted once.
    let mut doomed: BTreeMap<String, u64> = BTreeMap::new();
    let mut mark_keys: Vec<(String, Vec<String>)> = Vec::new();
    for m in &due {
        let mut keys = Vec::new();
        for b in &m.blocks {
            let Some(meta) = blocks.get(&b.id) else {
                continue;
            };
            if referenced.contains(&b.id) {
                out.kept_referenced += 1;
                continue;
            }
            if meta.last_modified.is_none_or(|t| t > m.created_at) {
                out.kept_rewritten += 1;
                continue;
            }
            doomed.insert(meta.key.clone(), meta.size);
            keys.push(meta.key.clone());
        }
        mark_keys.push((layout::gc_mark_key(&m.id), keys));
    }
    let keys: Vec<String> = doomed.keys().cloned().collect();
    let mut failed: BTreeMap<String, String> = BTreeMap::new();
    for batch in keys.chunks(DELETE_BATCH) {
        // Nothing is deleted once the lease may have lapsed (the module's rule 5).
        lease.renew_if_due().await.with_context(|| progress(&out))?;
        lease
            .ensure_valid_for(SAFETY_MARGIN)
            .with_context(|| progress(&out))?;
        let report = delete_keys(storage, batch).await;
        let gone: HashSet<&str> = batch.iter().map(String::as_str).collect();
        let not_gone: HashSet<String> = report.failed.iter().map(|f| f.key.clone()).collect();
        for f in report.failed {
            failed.insert(f.key, f.error.to_string());
        }
        for k in gone {
            if !not_gone.contains(k) {
                out.deleted += 1;
                out.deleted_bytes += doomed[k];
            }
        }
    }
    for (mark, keys) in mark_keys {
        if keys.iter().any(|k| failed.contains_key(k)) {
            out.marks_pending += 1;
            continue;
        }
        storage
            .delete(&mark)
            .await
            .with_context(|| format!("cannot remove gc mark {mark}"))?;
        out.marks_removed += 1;
    }
    out.failed = failed.into_iter().collect();
    Ok(out)
}

fn progress(out: &SweepOutcome) -> String {
    format!(
        "the sweep stopped after deleting {} blocks; its marks stay for the next run",
        out.deleted
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};
    use crate::events::TestSink;
    use crate::repo::lock::{LEASE_TTL, ReadLease, ReadPurpose, ReadRequest};
    use crate::repo::manifest::{FileEntry, FileKind, Recipe};
    use crate::storage::faulty::FaultyStorage;
    use crate::storage::memory::MemoryStorage;
    use std::sync::Arc;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn later(d: Duration) -> DateTime<Utc> {
        t0() + chrono_of(d)
    }

    fn block(n: u32) -> Sha256Digest {
        Sha256Digest::of(&n.to_le_bytes())
    }

    fn manifest(label: &str, blocks: &[u32]) -> Manifest {
        Manifest {
            label: label.into(),
            files: vec![FileEntry {
                path: "base/1/1".into(),
                kind: FileKind::File,
                mode: 0o600,
                size: blocks.len() as u64,
                mtime: 0,
                blocks: blocks.iter().map(|b| Recipe::whole(block(*b), 1)).collect(),
            }],
            ..crate::repo::manifest::sample()
        }
    }

    /// A repository whose blocks `n` were written at `written[n]`, and manifests.
    async fn repo(written: &[(u32, DateTime<Utc>)], manifests: &[Manifest]) -> Arc<MemoryStorage> {
        let mem = Arc::new(MemoryStorage::new());
        for (n, at) in written {
            let key = layout::block_key(&block(*n));
            mem.put(&key, Bytes::from_static(b"blk")).await.unwrap();
            mem.set_modified(&key, *at);
        }
        for m in manifests {
            m.store(mem.as_ref(), 1).await.unwrap();
        }
        mem
    }

    fn present(mem: &MemoryStorage, n: u32) -> bool {
        mem.keys().contains(&layout::block_key(&block(n)))
    }

    struct Run {
        storage: DynStorage,
        events: Events,
    }

    impl Run {
        fn new(storage: DynStorage) -> Run {
            Run {
                storage,
                events: TestSink::new(),
            }
        }
        fn gc(&self, clock: DynClock) -> Gc<'_> {
            Gc {
                storage: &self.storage,
                events: &self.events,
                clock,
                grace: DAY,
            }
        }
        fn at(&self, t: DateTime<Utc>) -> Gc<'_> {
            self.gc(ManualClock::new(t))
        }
    }

    /// Blocks 1 (referenced), 2 (unreferenced, old) and 3 (unreferenced, young): only 2 is
    /// marked, a sweep before the grace deletes nothing, one after deletes 2 and its mark.
    #[tokio::test]
    async fn mark_then_sweep_after_the_grace_deletes_only_old_unreferenced_blocks() {
        let mem = repo(
            &[(1, t0()), (2, t0()), (3, later(DAY * 3 / 2))],
            &[manifest("A", &[1])],
        )
        .await;
        let run = Run::new(mem.clone());
        let marked = mark(&run.at(later(DAY * 2))).await.unwrap();
        assert_eq!(
            (
                marked.marked,
                marked.unreferenced_young,
                marked.already_marked
            ),
            (1, 1, 0),
            "{marked:?}"
        );
        assert_eq!(
            marked_blocks(mem.as_ref()).await.unwrap(),
            HashSet::from([block(2)])
        );
        let again = mark(&run.at(later(DAY * 2))).await.unwrap();
        assert_eq!(
            (again.marked, again.already_marked, again.mark),
            (0, 1, None)
        );

        let early = sweep(&run.at(later(DAY * 5 / 2))).await.unwrap();
        assert_eq!((early.deleted, early.marks_pending), (0, 1), "{early:?}");
        assert!(present(&mem, 2));

        let swept = sweep(&run.at(later(DAY * 3 + Duration::from_secs(60))))
            .await
            .unwrap();
        assert_eq!(swept.deferred, None);
        assert_eq!(
            (swept.deleted, swept.deleted_bytes, swept.marks_removed),
            (1, 3, 1)
        );
        assert!(present(&mem, 1) && !present(&mem, 2) && present(&mem, 3));
        assert!(
            mem.keys()
                .iter()
                .all(|k| !k.starts_with("gc/") && !k.starts_with("locks/"))
        );
    }

    /// A backup that deduplicated against a block before it was marked commits a manifest
    /// referencing it: the sweep keeps it. A block written again after the mark is kept too.
    #[tokio::test]
    async fn blocks_referenced_or_rewritten_after_the_mark_are_kept() {
        let mem = repo(&[(1, t0()), (2, t0())], &[]).await;
        let run = Run::new(mem.clone());
        assert_eq!(mark(&run.at(later(DAY * 2))).await.unwrap().marked, 2);
        manifest("B", &[1]).store(mem.as_ref(), 1).await.unwrap();
        mem.set_modified(
            &layout::block_key(&block(2)),
            later(DAY * 2 + Duration::from_secs(5)),
        );
        let swept = sweep(&run.at(later(DAY * 4))).await.unwrap();
        assert_eq!(
            (
                swept.deleted,
                swept.kept_referenced,
                swept.kept_rewritten,
                swept.marks_removed
            ),
            (0, 1, 1, 1),
            "{swept:?}"
        );
        assert!(present(&mem, 1) && present(&mem, 2));
    }

    /// A backup holding the lease: the sweep defers and says so, deleting nothing.
    #[tokio::test]
    async fn a_sweep_defers_while_a_backup_runs() {
        let mem = repo(&[(2, t0())], &[]).await;
        let run = Run::new(mem.clone());
        mark(&run.at(later(DAY * 2))).await.unwrap();
        let clock = ManualClock::new(later(DAY * 4));
        let backup = Lease::acquire_at(run.storage.clone(), LEASE_NAME, "backup", clock.clone())
            .await
            .unwrap();
        let swept = sweep(&run.gc(clock.clone())).await.unwrap();
        let Some(Deferral::BackupRunning { purpose, .. }) = &swept.deferred else {
            panic!("{swept:?}");
        };
        assert_eq!(purpose, "backup");
        assert!(
            swept
                .deferred
                .as_ref()
                .unwrap()
                .to_string()
                .contains("a backup is running")
        );
        assert!(present(&mem, 2));
        backup.release().await.unwrap();
        assert_eq!(sweep(&run.gc(clock)).await.unwrap().deleted, 1);
    }

    /// A restore still reading a backup whose manifest expire deleted: the sweep defers
    /// entirely; a reader of a backup that still exists does not hold it up.
    #[tokio::test]
    async fn a_sweep_defers_while_a_reader_holds_an_expired_backup() {
        let mem = repo(&[(1, t0()), (2, t0())], &[manifest("KEPT", &[2])]).await;
        let run = Run::new(mem.clone());
        mark(&run.at(later(DAY * 2))).await.unwrap();
        let clock = ManualClock::new(later(DAY * 4));
        let req = |label: &str| ReadRequest {
            purpose: ReadPurpose::Restore,
            kind: ReadKind::Backup,
            label: label.into(),
            wal_from: None,
        };
        let gone = ReadLease::take(run.storage.clone(), req("EXPIRED"), clock.clone())
            .await
            .unwrap();
        let kept = ReadLease::take(run.storage.clone(), req("KEPT"), clock.clone())
            .await
            .unwrap();
        let swept = sweep(&run.gc(clock.clone())).await.unwrap();
        assert!(
            matches!(&swept.deferred, Some(Deferral::ReaderOfExpiredBackup { label, purpose, .. })
                if label == "EXPIRED" && purpose == "restore"),
            "{swept:?}"
        );
        assert!(present(&mem, 1));
        gone.release().await.unwrap();
        let swept = sweep(&run.gc(clock)).await.unwrap();
        assert_eq!((swept.deferred, swept.deleted), (None, 1));
        assert!(present(&mem, 2), "the kept backup's block stays");
        kept.release().await.unwrap();
    }

    /// A clock that stands still until the first batch of deletes landed, then jumps a whole
    /// lease lifetime on: a collector paused mid-sweep.
    #[derive(Debug)]
    struct PausedAfterFirstBatch {
        mem: Arc<MemoryStorage>,
        blocks_at_start: usize,
        at: DateTime<Utc>,
    }

    impl Clock for PausedAfterFirstBatch {
        fn now(&self) -> DateTime<Utc> {
            let left = self
                .mem
                .keys()
                .iter()
                .filter(|k| k.starts_with("blocks/"))
                .count();
            if left < self.blocks_at_start {
                self.at + chrono_of(LEASE_TTL)
            } else {
                self.at
            }
        }
    }

    /// 2500 marked blocks are three batches. The collector is "paused" after the first: it
    /// deletes nothing more and fails saying why; the marks stay. A later run (after the dead
    /// collector's lease is gone) converges.
    #[tokio::test]
    async fn a_sweep_whose_lease_lapsed_deletes_nothing_more_and_a_rerun_converges() {
        let written: Vec<(u32, DateTime<Utc>)> = (0..2500).map(|n| (n, t0())).collect();
        let mem = repo(&written, &[]).await;
        let run = Run::new(mem.clone());
        assert_eq!(mark(&run.at(later(DAY * 2))).await.unwrap().marked, 2500);
        let paused: DynClock = Arc::new(PausedAfterFirstBatch {
            mem: mem.clone(),
            blocks_at_start: 2500,
            at: later(DAY * 4),
        });
        let err = sweep(&run.gc(paused)).await.unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("the sweep stopped after deleting 1000 blocks"),
            "{text}"
        );
        assert!(
            text.contains("too little to renew safely") || text.contains("safety margin"),
            "{text}"
        );
        let left = mem
            .keys()
            .iter()
            .filter(|k| k.starts_with("blocks/"))
            .count();
        assert_eq!(left, 1500, "nothing deleted after the lease lapsed");
        assert!(
            mem.keys().iter().any(|k| k.starts_with("gc/")),
            "the mark stays"
        );

        // Killed instead: its lease stays behind (a dead pid on this host); the re-run takes
        // it over, finishes, and removes the mark.
        let dead = LeaseInfo {
            host: lock::hostname(),
            pid: u32::MAX - 1,
            purpose: "gc".into(),
            acquired_at: "t".into(),
            nonce: "dead".into(),
            expires_at: Some(later(DAY * 5)),
        };
        mem.put(
            &layout::lock_key(LEASE_NAME),
            Bytes::from(serde_json::to_vec(&dead).unwrap()),
        )
        .await
        .unwrap();
        let swept = sweep(&run.at(later(DAY * 4))).await.unwrap();
        assert_eq!((swept.deleted, swept.marks_removed), (1500, 1), "{swept:?}");
        assert!(mem.is_empty(), "{:?}", mem.keys());
    }

    /// Keys that keep failing are reported; keys that fail a few times are retried and go.
    #[tokio::test]
    async fn delete_keys_retries_failed_keys_and_returns_what_stayed() {
        let mem = Arc::new(MemoryStorage::new());
        let keys: Vec<String> = (0..30).map(|i| format!("blocks/{i:02}")).collect();
        for k in &keys {
            mem.put(k, Bytes::new()).await.unwrap();
        }
        let faulty = FaultyStorage::new(mem.clone());
        faulty.fail_batch_keys(5, 2, false);
        let report = delete_keys(&faulty, &keys).await;
        assert_eq!((report.deleted, report.failed.len()), (30, 0));
        assert!(mem.is_empty());
        for k in &keys {
            mem.put(k, Bytes::new()).await.unwrap();
        }
        faulty.fail_batch_keys(1, 3, false);
        let report = delete_keys(&faulty, &keys).await;
        assert_eq!(
            (report.deleted, report.failed.len()),
            (0, 30),
            "three rounds, all failed"
        );
    }

    /// Rule 4: a manifest referencing a marked block that is gone is refused.
    #[tokio::test]
    async fn a_backup_refuses_a_manifest_whose_marked_block_is_gone() {
        let mem = repo(&[(1, t0()), (2, t0())], &[]).await;
        let run = Run::new(mem.clone());
        mark(&run.at(later(DAY * 2))).await.unwrap();
        let m = manifest("NEW", &[1, 2, 3]);
        check_marked_blocks_exist(mem.as_ref(), m.block_ids())
            .await
            .unwrap();
        mem.delete(&layout::block_key(&block(2))).await.unwrap();
        let err = check_marked_blocks_exist(mem.as_ref(), m.block_ids())
            .await
            .unwrap_err();
        assert!(
            format!("{err}").contains("was deleted by garbage collection"),
            "{err}"
        );
    }
}
