//! `verify`: does the repository hold what its manifests and the WAL catalog promise?
//!
//! Every run, cheaply ([`listing`]): load the snapshot (the one read model), every complete
//! backup's full manifest, then one listing of `blocks/` and one of `dumps/` (after the
//! manifests, so a backup or dump committed meanwhile cannot look like it lost objects), and
//! check references, WAL continuity, history chains and dump object sizes, counting orphans.
//! Then it reads and hashes a sample ([`sample`]: new objects first, then a rotating slice so
//! that `rotation` consecutive runs read everything), bounded by `max_bytes`, `jobs` reads at
//! a time, each distinct object once however many backups share it ([`read`]); `full` reads
//! everything. What was read good is recorded in [`state`].
//!
//! Memory: the manifests' block lists and one entry per referenced block (the index of who
//! depends on what), plus at most `jobs` objects in flight — a block whole (≤ the block size),
//! a segment or dump streamed in chunks.
//!
//! The report ([`report`]) names, for every bad or missing object, the backups, dumps and
//! recoverable ranges it breaks. It is returned as a value; deciding that a report with
//! problems is a failure (and the exit status) belongs to the caller.

pub mod listing;
pub mod read;
pub mod report;
pub mod sample;
pub mod state;

use crate::repo::catalog::InProgressMarker;
use crate::repo::dumps::DumpManifest;
use crate::repo::identity::RepoIdentity;
use crate::repo::label::Label;
use crate::repo::layout::{self, BackupKey, DumpKey};
use crate::repo::lock::hostname;
use crate::repo::manifest::Manifest;
use crate::repo::snapshot::Snapshot;
use crate::storage::{self, Storage};
use anyhow::{Context as _, Result};
use futures::StreamExt;
use listing::{Listed, ReadCheck};
use read::ReadOutcome;
use report::{Breaks, Mode, Problem, ProblemKind, ReadSummary, VerifyReport};
use sample::{Offer, SampleRequest};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

/// Runs after which every object has been read again (the default of `--rotation`).
pub const DEFAULT_ROTATION: u32 = 7;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyRequest {
    /// Read and hash every object.
    pub full: bool,
    /// Stored bytes one sampled run reads at most (`None`: no bound).
    pub max_bytes: Option<u64>,
    /// Consecutive sampled runs that read every object.
    pub rotation: u32,
    /// Objects read at the same time.
    pub jobs: usize,
    /// Check recoverable ranges only from this backup on (the retention plan's PITR base);
    /// `None`: from every complete backup.
    pub pitr_from: Option<Label>,
    /// Only the listing checks: nothing is read, the state is not touched (what the test
    /// suite runs after every scenario).
    pub listing_only: bool,
}

impl Default for VerifyRequest {
    fn default() -> Self {
        VerifyRequest {
            full: false,
            max_bytes: None,
            rotation: DEFAULT_ROTATION,
            jobs: 4,
            pitr_from: None,
            listing_only: false,
        }
    }
}

/// Verifies the repository in `storage`. `Err` only when it cannot be checked at all (not a
/// repository, a listing that fails); what is wrong with it is in the report.
pub async fn verify(storage: &dyn Storage, req: &VerifyRequest) -> Result<VerifyReport> {
    let started = Instant::now();
    // Not a repository (or a format to upgrade first) cannot be verified at all.
    RepoIdentity::require(storage).await?;
    let (state, state_warning) = state::load(storage).await;
    let run = state.runs + 1;
    let mut report = VerifyReport {
        repository: storage.describe(),
        run,
        mode: if req.full { Mode::Full } else { Mode::Sampled },
        ok: true,
        checked: Default::default(),
        problems: Vec::new(),
        orphans: Default::default(),
        read: ReadSummary {
            rotation: req.rotation,
            max_bytes: req.max_bytes,
            ..ReadSummary::default()
        },
        warnings: state_warning.into_iter().collect(),
        duration_ms: 0,
    };

    let snapshot = match Snapshot::load(storage).await {
        Ok(s) => s,
        Err(e) => {
            // A manifest that does not parse stops the snapshot; find and name each one.
            report.problems = unreadable_manifests(storage).await?;
            report.problems.push(Problem {
                kind: ProblemKind::CatalogUnreadable,
                object: storage.describe(),
                detail: format!(
                    "{}; the WAL, block and dump checks did not run",
                    crate::output::error_text(&e)
                ),
                breaks: Breaks::default(),
            });
            return Ok(finish(report, started));
        }
    };

    let loaded: Vec<(String, Result<Manifest>)> =
        futures::stream::iter(snapshot.catalog.backups.iter())
            .map(|b| async move {
                let label = b.label.to_string();
                let m = Manifest::load(storage, &label).await;
                (label, m)
            })
            .buffered(8)
            .collect()
            .await;
    let mut manifests = Vec::new();
    for (label, m) in loaded {
        match m {
            Ok(m) => manifests.push(m),
            Err(e) => report.problems.push(Problem {
                kind: ProblemKind::ManifestUnreadable,
                object: layout::manifest_key(&label),
                detail: crate::output::error_text(&e),
                breaks: Breaks {
                    backups: vec![label],
                    ..Breaks::default()
                },
            }),
        }
    }
    let blocks = storage::list_all_pages(storage, layout::BLOCKS_PREFIX)
        .await
        .with_context(|| format!("cannot list blocks in {}", storage.describe()))?;
    let dumps = storage::list_all_pages(storage, layout::DUMPS_PREFIX)
        .await
        .with_context(|| format!("cannot list dumps in {}", storage.describe()))?;
    let dump_markers = dump_markers(storage, &snapshot, &dumps).await;
    let this_host = hostname();
    let findings = listing::check(&Listed {
        snapshot: &snapshot,
        manifests: &manifests,
        blocks: &blocks,
        dumps: &dumps,
        dump_markers: &dump_markers,
        this_host: &this_host,
        pitr_from: req.pitr_from.as_ref(),
    });
    report.problems.extend(findings.problems);
    report.orphans = findings.orphans;
    report.checked = findings.checked;
    report.read.candidates = findings.candidates.len() as u64;
    if req.listing_only {
        return Ok(finish(report, started));
    }

    // The sampled (or full) reads.
    let candidates = &findings.candidates;
    let offers: Vec<Offer<'_>> = candidates
        .iter()
        .map(|c| Offer {
            key: &c.key,
            bytes: c.stored_bytes,
        })
        .collect();
    let sample = sample::choose(
        &offers,
        &state.verified,
        SampleRequest {
            run,
            rotation: req.rotation,
            max_bytes: req.max_bytes,
            full: req.full,
        },
    );
    report.read.new_objects = sample.new_objects;
    report.read.deferred_objects = sample.deferred;
    let outcomes: Vec<(usize, ReadOutcome)> = futures::stream::iter(sample.chosen.iter().copied())
        .map(|i| async move { (i, read::read_and_check(storage, &candidates[i]).await) })
        .buffer_unordered(req.jobs.max(1))
        .collect()
        .await;
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for (i, outcome) in outcomes {
        let c = &candidates[i];
        report.read.objects += 1;
        report.read.bytes += c.stored_bytes;
        let (kind, detail) = match (outcome, &c.check) {
            (ReadOutcome::Good, _) => {
                good.push(c.key.as_str());
                continue;
            }
            (ReadOutcome::Unreadable(why), _) => (ProblemKind::ObjectUnreadable, why),
            (ReadOutcome::Missing, check) => (
                match check {
                    ReadCheck::Block(_) => ProblemKind::BlockMissing,
                    ReadCheck::Wal { .. } => ProblemKind::WalMissing,
                    ReadCheck::Dump { .. } => ProblemKind::DumpObjectMissing,
                },
                "listed, but gone when read".to_string(),
            ),
            (ReadOutcome::Corrupt(why), check) => (
                match check {
                    ReadCheck::Block(_) => ProblemKind::BlockCorrupt,
                    ReadCheck::Wal { .. } => ProblemKind::WalCorrupt,
                    ReadCheck::Dump { .. } => ProblemKind::DumpObjectCorrupt,
                },
                why,
            ),
        };
        bad.push(c.key.as_str());
        let breaks = match &c.check {
            ReadCheck::Block(id) => findings.dependents.of_block(id),
            ReadCheck::Wal { name, .. } => findings.dependents.of_wal_file(name),
            ReadCheck::Dump { .. } => findings.dependents.of_dump_object(&c.key),
        };
        report.problems.push(Problem {
            kind,
            object: c.key.clone(),
            detail,
            breaks,
        });
    }
    let offered: BTreeSet<&str> = candidates.iter().map(|c| c.key.as_str()).collect();
    let next = state.after_run(run, &offered, &good, &bad);
    if let Err(e) = state::save(storage, &next).await {
        report.warnings.push(format!(
            "{}: the next run reads these objects again",
            crate::output::error_text(&e)
        ));
    }
    Ok(finish(report, started))
}

fn finish(mut report: VerifyReport, started: Instant) -> VerifyReport {
    report
        .problems
        .sort_by(|a, b| a.kind.cmp(&b.kind).then_with(|| a.object.cmp(&b.object)));
    report.ok = report.problems.is_empty();
    report.duration_ms = started.elapsed().as_millis() as u64;
    report
}

/// When the snapshot cannot be loaded: each backup or dump manifest that cannot be read.
async fn unreadable_manifests(storage: &dyn Storage) -> Result<Vec<Problem>> {
    let backups = storage
        .list(layout::BACKUPS_PREFIX)
        .await
        .with_context(|| format!("cannot list backups in {}", storage.describe()))?;
    let dumps = storage
        .list(layout::DUMPS_PREFIX)
        .await
        .with_context(|| format!("cannot list dumps in {}", storage.describe()))?;
    let mut out = Vec::new();
    for o in &backups {
        if let Some(BackupKey::Manifest(label)) = layout::parse_backup_key(&o.key)
            && let Err(e) = Manifest::load(storage, &label)
                .await
                .and_then(|m| crate::repo::catalog::BackupSummary::of(&m).map(|_| ()))
        {
            out.push(Problem {
                kind: ProblemKind::ManifestUnreadable,
                object: o.key.clone(),
                detail: crate::output::error_text(&e),
                breaks: Breaks {
                    backups: vec![label],
                    ..Breaks::default()
                },
            });
        }
    }
    for o in &dumps {
        if let Some(DumpKey::Manifest(label)) = layout::parse_dump_key(&o.key)
            && let Err(e) = DumpManifest::load(storage, &label).await
        {
            out.push(Problem {
                kind: ProblemKind::DumpManifestUnreadable,
                object: o.key.clone(),
                detail: crate::output::error_text(&e),
                breaks: Breaks {
                    dumps: vec![label],
                    ..Breaks::default()
                },
            });
        }
    }
    Ok(out)
}

/// The in-progress markers of dumps without a manifest (to tell a running dump from a dead one).
async fn dump_markers(
    storage: &dyn Storage,
    snapshot: &Snapshot,
    dumps: &[storage::ObjectMeta],
) -> BTreeMap<String, Option<InProgressMarker>> {
    let incomplete: BTreeSet<&str> = snapshot
        .dumps
        .incomplete
        .iter()
        .map(|l| l.as_str())
        .collect();
    let with_marker: Vec<String> = dumps
        .iter()
        .filter_map(|o| match layout::parse_dump_key(&o.key) {
            Some(DumpKey::InProgress(l)) if incomplete.contains(l.as_str()) => Some(l),
            _ => None,
        })
        .collect();
    futures::stream::iter(with_marker)
        .map(|label| async move {
            let key = layout::dump_in_progress_key(&label);
            let marker = match storage.get(&key).await {
                Ok(b) => serde_json::from_slice::<InProgressMarker>(&b).ok(),
                Err(_) => None,
            };
            (label, marker)
        })
        .buffered(8)
        .collect()
        .await
}
