//! The retention plan: what `expire` keeps and deletes, with every reason — pure code that
//! takes what the repository holds, the policy and `now`, and never reads the clock or the
//! store. `expire` prints it (text or `--json`) and carries out [`Plan::deletions`].
//!
//! Backups (complete ones only take keep slots; see [`series`] for the rules):
//! - rules are ORed and every kept item records every rule that keeps it;
//! - floors: the newest complete backup is never deleted (so an older one goes only once a
//!   newer one is complete), `min_keep` (at least 1), anything pinned or held by a reader,
//!   the PITR base (the newest backup that stopped at or before `now − pitr_window`), backups
//!   dated in the future (a skewed clock) until `now` passes them;
//! - an in-progress backup is neither counted nor deleted while `live`; a dead one's marker
//!   is deleted;
//! - deleting more than half of the complete backups (or dumps) needs `--force`
//!   ([`ForceCheck`]): the executor refuses without it.
//!
//! Dumps: the same rules per database (each database's dumps are one series). A dump label
//! is deleted only when none of its databases' entries is kept: deleting one database out of
//! a dump would mean rewriting its manifest, and the manifest is written once, last, as the
//! proof that the dump is complete — a rewritten one would prove nothing.
//!
//! WAL: see [`wal`]. Blocks are not in the plan: block garbage collection counts references
//! from the manifests that remain.
//!
//! Deletion order ([`Deletions`]): manifests first (an item without its manifest no longer
//! exists for restore, so a crash after that point only leaves garbage), then the objects
//! under deleted labels, then WAL, then history files. A re-run plans the same deletions
//! again minus what is gone, so it converges.

mod render;
mod series;
mod wal;

#[cfg(test)]
mod tests;

use crate::pg::history::TimelineHistory;
use crate::pg::{Timeline, WalSegmentName};
use crate::repo::catalog::BackupSummary;
use crate::repo::dumps::DumpManifest;
use crate::repo::label::{Label, rfc3339_time};
use crate::repo::layout;
use crate::repo::pins::Pin;
use crate::repo::wal_catalog::WalCatalog;
use crate::retention::policy::Retention;
use chrono::{DateTime, FixedOffset, NaiveDate, Utc};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// What the plan is made from. The caller decides liveness (a lease or marker whose writer
/// may still run is live) and turns read leases into [`Hold`]s.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    /// Complete backups (any order).
    pub backups: &'a [BackupSummary],
    /// Backups with an in-progress marker and no manifest.
    pub in_progress: &'a [InProgress],
    /// Complete dumps (any order).
    pub dumps: &'a [DumpManifest],
    /// Dump labels with objects but no manifest.
    pub dumps_incomplete: &'a [InProgress],
    pub wal: &'a WalCatalog,
    pub histories: &'a BTreeMap<Timeline, TimelineHistory>,
    pub pins: &'a [Pin],
    pub holds: &'a [Hold],
}

/// A backup or dump being written (or abandoned).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InProgress {
    pub label: Label,
    /// Its writer runs, or is not known to be gone (another host, an unreadable marker).
    pub live: bool,
}

/// A restore, drill or verify reading a backup or dump: the label is kept, and so is the
/// WAL from `wal_from` on (on that timeline and the timelines that branch off it later).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub label: Label,
    /// Who reads it, as people should read it ("restore on host1 pid 42").
    pub holder: String,
    pub wal_from: Option<(Timeline, WalSegmentName)>,
}

/// Why a backup, dump or dump entry is kept. The sentence is made when printing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum KeepReason {
    KeepLast {
        n: u32,
    },
    /// The hour (in the policy's zone, with its offset) this item is the newest of.
    KeepHourly {
        hour: DateTime<FixedOffset>,
    },
    KeepDaily {
        day: NaiveDate,
    },
    KeepWeekly {
        iso_year: i32,
        week: u32,
    },
    KeepMonthly {
        year: i32,
        month: u32,
    },
    KeepYearly {
        year: i32,
    },
    /// Taken within this long before the newest complete item.
    KeepWithin {
        within_seconds: u64,
    },
    MinKeep {
        n: u32,
    },
    NewestComplete,
    /// Dated after `now` (a clock was ahead): kept, and takes no slot, until `now` passes it.
    FutureDated,
    /// The policy has no section for this kind: everything is kept.
    NoRules,
    Pinned {
        reason: Option<String>,
    },
    Held {
        holder: String,
    },
    /// The newest backup that stopped at or before `now − pitr_window`: the window's start.
    PitrBase {
        window_seconds: u64,
    },
    /// Being written (or not known to be abandoned).
    InProgress,
    /// A dump label: this database's entry is kept (`None`: the globals of a dump without
    /// databases).
    DatabaseKept {
        database: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeleteReason {
    /// No rule and no floor keeps it.
    Expired,
    /// A marker or objects without a manifest whose writer is gone.
    Abandoned,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Decision {
    Keep { reasons: Vec<KeepReason> },
    Delete { reason: DeleteReason },
}

impl Decision {
    fn of(reasons: Vec<KeepReason>) -> Decision {
        if reasons.is_empty() {
            Decision::Delete {
                reason: DeleteReason::Expired,
            }
        } else {
            Decision::Keep { reasons }
        }
    }

    pub fn is_keep(&self) -> bool {
        matches!(self, Decision::Keep { .. })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupDecision {
    pub label: Label,
    pub timeline: Timeline,
    pub start_wal: WalSegmentName,
    pub stop_wal: WalSegmentName,
    #[serde(with = "rfc3339_time")]
    pub start_time: DateTime<Utc>,
    #[serde(with = "rfc3339_time")]
    pub stop_time: DateTime<Utc>,
    /// Stored bytes of its blocks when it was written; shared with other backups, so deleting
    /// it frees up to this much.
    pub stored_bytes: u64,
    #[serde(flatten)]
    pub decision: Decision,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InProgressDecision {
    pub label: Label,
    #[serde(flatten)]
    pub decision: Decision,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DumpDecision {
    pub label: Label,
    #[serde(with = "rfc3339_time")]
    pub start_time: DateTime<Utc>,
    /// Exact: a dump's objects are its own.
    pub stored_bytes: u64,
    /// The label's decision: kept while any entry is kept, or by a pin or hold.
    #[serde(flatten)]
    pub decision: Decision,
    pub databases: Vec<DumpEntryDecision>,
}

/// One database's entry in a dump; no reasons = no rule keeps it by itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DumpEntryDecision {
    /// `None` for the globals of a dump without databases (a series of its own).
    pub database: Option<String>,
    pub reasons: Vec<KeepReason>,
}

/// Why WAL (a range of segments, a `.partial` or `.backup` file) is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum WalReason {
    /// No complete backup exists: nothing of the archive may go.
    NoCompleteBackup,
    /// Between a kept backup's start and stop: it stays restorable.
    BackupRange {
        label: Label,
    },
    /// On the way from `base` along a kept timeline: every moment after it is recoverable.
    /// `window_seconds` when `base` is the PITR base of `pitr_window`.
    Recoverable {
        base: Label,
        window_seconds: Option<u64>,
    },
    /// At or after the start of the newest complete backup.
    AfterNewestBackup {
        label: Label,
    },
    /// A backup in progress may need it.
    InProgressBackup {
        label: Label,
    },
    Held {
        label: Label,
        holder: String,
    },
    /// Archived before the oldest complete backup: no expired backup is why it exists.
    BeforeOldestBackup {
        label: Label,
    },
    /// A timeline branch without a kept backup: deleted only below the PITR base.
    BranchNotBelowBase {
        base: Label,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum WalDecision {
    Keep { reasons: Vec<WalReason> },
    Delete,
}

/// Consecutive archived segments of one timeline with one decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WalRangeDecision {
    pub timeline: Timeline,
    pub first: WalSegmentName,
    pub last: WalSegmentName,
    pub segments: u64,
    /// Exact stored bytes of these segments (every copy).
    pub stored_bytes: u64,
    #[serde(flatten)]
    pub decision: WalDecision,
}

/// A `.partial` or `.backup` file: kept when inside a kept range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WalFileDecision {
    pub name: String,
    pub stored_bytes: u64,
    #[serde(flatten)]
    pub decision: WalDecision,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum HistoryReason {
    NoCompleteBackup,
    /// The current timeline, or one holding a kept backup.
    KeptTimeline,
    /// An ancestor of this kept timeline (or of one that keeps WAL).
    AncestorOf {
        timeline: Timeline,
    },
    /// Its timeline keeps WAL.
    KeepsWal,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum HistoryDecision {
    Keep { reasons: Vec<HistoryReason> },
    Delete,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryFileDecision {
    pub timeline: Timeline,
    pub stored_bytes: u64,
    #[serde(flatten)]
    pub decision: HistoryDecision,
}

/// Whether this plan deletes more than half of the backups or dumps (then only `--force`
/// carries it out).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ForceCheck {
    pub needed: bool,
    pub backups_total: u64,
    pub backups_deleted: u64,
    pub dumps_total: u64,
    pub dumps_deleted: u64,
}

/// What the deletions free. WAL and dumps exactly; backups "up to": their blocks are shared,
/// and only block garbage collection later frees what no kept backup references.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub struct Freed {
    pub wal_bytes: u64,
    pub dump_bytes: u64,
    pub backup_bytes_up_to: u64,
}

/// The storage keys to delete, in the order they must go.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Deletions {
    /// First: `backups/<l>/manifest.json.zst`, `dumps/<l>/manifest.json.zst`.
    pub manifests: Vec<String>,
    /// Then the objects under deleted labels (a dump's objects, abandoned markers)…
    pub objects: Vec<String>,
    /// …and whatever else is listed under these label prefixes (leftovers of older runs).
    pub prefixes: Vec<String>,
    /// Then WAL segments, `.partial` and `.backup` files.
    pub wal: Vec<String>,
    /// Last, history files.
    pub histories: Vec<String>,
}

impl Deletions {
    pub fn is_empty(&self) -> bool {
        self.manifests.is_empty()
            && self.objects.is_empty()
            && self.prefixes.is_empty()
            && self.wal.is_empty()
            && self.histories.is_empty()
    }
}

/// The plan (`expire` prints it; `--json` is a stable form: fields only added).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    #[serde(with = "rfc3339_time")]
    pub now: DateTime<Utc>,
    pub timezone: String,
    pub pitr_window_seconds: Option<u64>,
    /// Where the recoverable window starts: the PITR base, else the oldest kept backup.
    pub pitr_base: Option<Label>,
    /// The timeline of the newest complete backup, or the latest timeline that follows it.
    pub current_timeline: Option<Timeline>,
    /// Oldest first.
    pub backups: Vec<BackupDecision>,
    pub backups_in_progress: Vec<InProgressDecision>,
    pub dumps: Vec<DumpDecision>,
    pub dumps_incomplete: Vec<InProgressDecision>,
    pub wal: Vec<WalRangeDecision>,
    pub wal_files: Vec<WalFileDecision>,
    pub histories: Vec<HistoryFileDecision>,
    pub force: ForceCheck,
    pub freed: Freed,
    /// Pins or holds naming nothing in the repository, and the like.
    pub warnings: Vec<String>,
    #[serde(skip)]
    deletions: Deletions,
}

impl Plan {
    /// The keys to delete, in safe order.
    pub fn deletions(&self) -> Deletions {
        self.deletions.clone()
    }

    /// The decision for a backup label, if it is a complete backup.
    pub fn backup(&self, label: &str) -> Option<&BackupDecision> {
        self.backups.iter().find(|b| b.label == label)
    }

    /// The decision for a dump label, if it is a complete dump.
    pub fn dump(&self, label: &str) -> Option<&DumpDecision> {
        self.dumps.iter().find(|d| d.label == label)
    }
}

fn label_reasons(label: &Label, pins: &[Pin], holds: &[Hold]) -> Vec<KeepReason> {
    let mut out: Vec<KeepReason> = pins
        .iter()
        .filter(|p| &p.label == label)
        .map(|p| KeepReason::Pinned {
            reason: p.reason.clone(),
        })
        .collect();
    out.extend(
        holds
            .iter()
            .filter(|h| &h.label == label)
            .map(|h| KeepReason::Held {
                holder: h.holder.clone(),
            }),
    );
    out
}

fn secs(d: Duration) -> u64 {
    d.as_secs()
}

/// Builds the plan. Pure: everything it needs is passed in.
pub fn plan(input: &PlanInput<'_>, policy: &Retention, now: DateTime<Utc>) -> Plan {
    let tz = policy.timezone;
    let mut del = Deletions::default();
    let mut freed = Freed::default();
    let mut warnings = Vec::new();

    // Backups.
    let backups: Vec<&BackupSummary> = {
        let mut b: Vec<&BackupSummary> = input.backups.iter().collect();
        b.sort_by(|x, y| (x.start_time, &x.label).cmp(&(y.start_time, &y.label)));
        b
    };
    let items: Vec<series::Item> = backups
        .iter()
        .map(|b| series::Item {
            label: b.label.clone(),
            time: b.start_time,
        })
        .collect();
    let mut reasons = series::rule_reasons(&items, policy.backups.as_ref(), tz, now);
    for (i, b) in backups.iter().enumerate() {
        reasons[i].extend(label_reasons(&b.label, input.pins, input.holds));
    }
    let pitr_base_idx = policy.pitr_window.and_then(|w| {
        let edge = now.checked_sub_signed(chrono::Duration::from_std(w).ok()?)?;
        (0..backups.len())
            .filter(|&i| backups[i].stop_time <= edge)
            .max_by(|&a, &b| {
                (backups[a].stop_time, &backups[a].label)
                    .cmp(&(backups[b].stop_time, &backups[b].label))
            })
    });
    if let (Some(i), Some(w)) = (pitr_base_idx, policy.pitr_window) {
        reasons[i].push(KeepReason::PitrBase {
            window_seconds: secs(w),
        });
    }
    series::apply_min_keep(
        &items,
        &mut reasons,
        &vec![false; items.len()],
        policy.backups.as_ref(),
        now,
    );
    let kept: Vec<bool> = reasons.iter().map(|r| !r.is_empty()).collect();
    let mut backup_decisions = Vec::new();
    for (b, r) in backups.iter().zip(reasons) {
        let decision = Decision::of(r);
        if !decision.is_keep() {
            del.manifests.push(layout::manifest_key(b.label.as_str()));
            del.prefixes.push(layout::backup_prefix(b.label.as_str()));
            freed.backup_bytes_up_to += b.stored_bytes;
        }
        backup_decisions.push(BackupDecision {
            label: b.label.clone(),
            timeline: b.timeline,
            start_wal: b.start_wal,
            stop_wal: b.stop_wal,
            start_time: b.start_time,
            stop_time: b.stop_time,
            stored_bytes: b.stored_bytes,
            decision,
        });
    }
    let backups_in_progress = in_progress_decisions(input.in_progress, |l| {
        del.objects.push(layout::in_progress_key(l.as_str()));
        del.prefixes.push(layout::backup_prefix(l.as_str()));
    });

    // Dumps.
    let (dumps, dumps_deleted) = plan_dumps(input, policy, now, &mut del, &mut freed);
    let dumps_incomplete = in_progress_decisions(input.dumps_incomplete, |l| {
        del.prefixes.push(layout::dump_prefix(l.as_str()));
    });

    // WAL.
    let newest = series::newest_first(&items)
        .into_iter()
        .find(|&i| items[i].time <= now)
        .or_else(|| series::newest_first(&items).first().copied());
    let oldest_kept = (0..backups.len()).find(|&i| kept[i]);
    let base = pitr_base_idx.or(oldest_kept);
    let live: Vec<Label> = input
        .in_progress
        .iter()
        .filter(|p| p.live)
        .map(|p| p.label.clone())
        .collect();
    let w = wal::plan_wal(&wal::WalInput {
        wal: input.wal,
        histories: input.histories,
        backups: &backups,
        kept: &kept,
        newest,
        base,
        pitr_base: pitr_base_idx,
        window: policy.pitr_window,
        now,
        live_in_progress: &live,
        holds: input.holds,
    });
    del.wal = w.wal_keys;
    del.histories = w.history_keys;
    freed.wal_bytes = w.freed_bytes;

    // Pins and holds that name nothing.
    let known: BTreeSet<&Label> = backups
        .iter()
        .map(|b| &b.label)
        .chain(input.dumps.iter().map(|d| &d.label))
        .collect();
    for p in input.pins {
        if !known.contains(&p.label) {
            warnings.push(format!(
                "pin {} names no complete backup or dump; `pgward unpin {}` removes it",
                p.label, p.label
            ));
        }
    }
    for h in input.holds {
        if !known.contains(&h.label) {
            warnings.push(format!(
                "{} holds {}, which is no complete backup or dump",
                h.holder, h.label
            ));
        }
    }

    let backups_deleted = backup_decisions
        .iter()
        .filter(|d| !d.decision.is_keep())
        .count() as u64;
    let force = ForceCheck {
        needed: backups_deleted * 2 > backup_decisions.len() as u64
            || dumps_deleted * 2 > dumps.len() as u64,
        backups_total: backup_decisions.len() as u64,
        backups_deleted,
        dumps_total: dumps.len() as u64,
        dumps_deleted,
    };
    for v in [
        &mut del.manifests,
        &mut del.objects,
        &mut del.prefixes,
        &mut del.wal,
        &mut del.histories,
    ] {
        v.sort();
        v.dedup();
    }
    Plan {
        now,
        timezone: tz.name().to_string(),
        pitr_window_seconds: policy.pitr_window.map(secs),
        pitr_base: base.map(|i| backups[i].label.clone()),
        current_timeline: w.current_timeline,
        backups: backup_decisions,
        backups_in_progress,
        dumps,
        dumps_incomplete,
        wal: w.ranges,
        wal_files: w.files,
        histories: w.histories,
        force,
        freed,
        warnings,
        deletions: del,
    }
}

fn in_progress_decisions(
    list: &[InProgress],
    mut on_delete: impl FnMut(&Label),
) -> Vec<InProgressDecision> {
    list.iter()
        .map(|p| {
            let decision = if p.live {
                Decision::Keep {
                    reasons: vec![KeepReason::InProgress],
                }
            } else {
                on_delete(&p.label);
                Decision::Delete {
                    reason: DeleteReason::Abandoned,
                }
            };
            InProgressDecision {
                label: p.label.clone(),
                decision,
            }
        })
        .collect()
}

/// Every database's dumps are one series; a label goes only when none of its entries stays.
fn plan_dumps(
    input: &PlanInput<'_>,
    policy: &Retention,
    now: DateTime<Utc>,
    del: &mut Deletions,
    freed: &mut Freed,
) -> (Vec<DumpDecision>, u64) {
    let mut dumps: Vec<&DumpManifest> = input.dumps.iter().collect();
    dumps.sort_by(|x, y| (x.start_time, &x.label).cmp(&(y.start_time, &y.label)));
    let label_level: Vec<Vec<KeepReason>> = dumps
        .iter()
        .map(|d| label_reasons(&d.label, input.pins, input.holds))
        .collect();
    // Series name → (dump index, entry index in that dump's decision list, time).
    type Member = (usize, usize, DateTime<Utc>);
    let mut series_of: BTreeMap<Option<String>, Vec<Member>> = BTreeMap::new();
    let mut entries: Vec<Vec<DumpEntryDecision>> = Vec::new();
    for (di, d) in dumps.iter().enumerate() {
        let mut mine = Vec::new();
        if d.databases.is_empty() {
            series_of
                .entry(None)
                .or_default()
                .push((di, 0, d.start_time));
            mine.push(DumpEntryDecision {
                database: None,
                reasons: Vec::new(),
            });
        }
        for (ei, db) in d.databases.iter().enumerate() {
            series_of
                .entry(Some(db.name.clone()))
                .or_default()
                .push((di, ei, db.start_time));
            mine.push(DumpEntryDecision {
                database: Some(db.name.clone()),
                reasons: Vec::new(),
            });
        }
        entries.push(mine);
    }
    let rules = policy.dumps.as_ref();
    for members in series_of.values() {
        let items: Vec<series::Item> = members
            .iter()
            .map(|&(di, _, time)| series::Item {
                label: dumps[di].label.clone(),
                time,
            })
            .collect();
        let mut reasons = series::rule_reasons(&items, rules, policy.timezone, now);
        let anyway: Vec<bool> = members
            .iter()
            .map(|&(di, _, _)| !label_level[di].is_empty())
            .collect();
        series::apply_min_keep(&items, &mut reasons, &anyway, rules, now);
        for (&(di, ei, _), r) in members.iter().zip(reasons) {
            entries[di][ei].reasons = r;
        }
    }
    let mut deleted = 0;
    let decisions = dumps
        .iter()
        .zip(label_level)
        .zip(entries)
        .map(|((d, mut reasons), databases)| {
            reasons.extend(databases.iter().filter(|e| !e.reasons.is_empty()).map(|e| {
                KeepReason::DatabaseKept {
                    database: e.database.clone(),
                }
            }));
            let decision = Decision::of(reasons);
            if !decision.is_keep() {
                deleted += 1;
                let l = d.label.as_str();
                del.manifests.push(layout::dump_manifest_key(l));
                // Only keys under the label: a damaged or forged manifest naming a block or
                // a WAL key must not make expire delete it (whatever really is under the
                // label goes through the prefix listing anyway).
                let prefix = layout::dump_prefix(l);
                del.objects.extend(
                    std::iter::once(&d.globals.key)
                        .chain(d.databases.iter().map(|db| &db.object.key))
                        .filter(|k| k.starts_with(&prefix))
                        .cloned(),
                );
                del.prefixes.push(prefix);
                freed.dump_bytes += d.stored_size();
            }
            DumpDecision {
                label: d.label.clone(),
                start_time: d.start_time,
                stored_bytes: d.stored_size(),
                decision,
                databases,
            }
        })
        .collect();
    (decisions, deleted)
}

/// The plan inputs a [`Snapshot`](crate::repo::snapshot::Snapshot) gives, owned, with
/// liveness decided by `this_host` (a marker is dead only when it ran here and its process is
/// gone) and no holds (read leases are another part's; pass them in with [`Self::input`]).
#[derive(Debug, Clone)]
pub struct SnapshotInputs {
    pub in_progress: Vec<InProgress>,
    pub dumps_incomplete: Vec<InProgress>,
}

impl SnapshotInputs {
    pub fn of(s: &crate::repo::snapshot::Snapshot, this_host: &str) -> SnapshotInputs {
        let in_progress = s
            .catalog
            .in_progress
            .iter()
            .filter_map(|l| {
                let label = Label::parse(l).ok()?;
                let gone = s
                    .catalog
                    .markers
                    .iter()
                    .find(|m| &m.label == l)
                    .and_then(|m| m.writer_is_gone(this_host));
                Some(InProgress {
                    label,
                    live: gone != Some(true),
                })
            })
            .collect();
        // An incomplete dump with a marker is live unless its writer is known to be gone;
        // one without a marker is a leftover (a dump claims its label with the marker first
        // and removes it last), so a re-run of an interrupted expire deletes it.
        let dumps_incomplete = s
            .dumps
            .incomplete
            .iter()
            .map(|l| {
                let marker = s.dumps.markers.iter().find(|m| m.label == l.as_str());
                InProgress {
                    label: l.clone(),
                    live: marker.is_some_and(|m| m.writer_is_gone(this_host) != Some(true)),
                }
            })
            .collect();
        SnapshotInputs {
            in_progress,
            dumps_incomplete,
        }
    }

    pub fn input<'a>(
        &'a self,
        s: &'a crate::repo::snapshot::Snapshot,
        holds: &'a [Hold],
    ) -> PlanInput<'a> {
        PlanInput {
            backups: &s.catalog.backups,
            in_progress: &self.in_progress,
            dumps: &s.dumps.dumps,
            dumps_incomplete: &self.dumps_incomplete,
            wal: &s.wal,
            histories: &s.histories,
            pins: &s.pins,
            holds,
        }
    }
}
