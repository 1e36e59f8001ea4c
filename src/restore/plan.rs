//! Restore planning: which backup, which timeline, which WAL — pure, no IO.
//!
//! The plan is built from what the repository holds (backup summaries, parsed timeline
//! histories, the WAL catalog) and the request. It is what `--dry-run` prints and what tests
//! assert on; execution only carries it out. Nothing here reads the clock or the disk.
//!
//! Rules, in the order they apply:
//! - a backup qualifies for a target if it ended before it: `stop_time <= time` for time
//!   targets, `stop_lsn <= lsn` for LSN targets; any backup for xid, name, immediate and
//!   end-of-archive targets (pgward cannot see where a transaction or restore point is);
//! - and if its end `(timeline, stop_lsn)` lies on the history of the target timeline;
//! - the newest qualifying backup is chosen unless `--backup` names one, which must qualify;
//! - the WAL from the backup's start to its stop must be archived (else: refuse, naming the
//!   missing segments); a gap later on only limits how far recovery can go (a warning);
//! - a path that leaves a timeline whose archive goes on past the branch point ([`forks`]) is
//!   named in a warning with `--target-timeline N` for the parent: the restore gets the
//!   branch's history and nothing else would say so (issue 9, item 11).
//!
//! Whether a time, xid or name target can be reached at all needs the WAL itself, which
//! depends on the path chosen here: [`super::reachable`] decides that second, from a bounded
//! read the restore makes after planning.
//!
//! Timelines follow PostgreSQL's recovery (`xlogrecovery.c`): a segment is read from the
//! newest timeline on the path whose start is in or before it; the segment holding a switch
//! point exists on both timelines, and the child's copy is the one that leads on.

use crate::pg::history::TimelineHistory;
use crate::pg::{Lsn, Timeline, WalSegmentName};
use crate::repo::catalog::BackupSummary;
use crate::repo::label::rfc3339;
use crate::repo::wal_catalog::WalCatalog;
use crate::restore::target::{RecoveryTarget, TimelineChoice};
use anyhow::{Result, anyhow, bail};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

/// What the repository holds, as planning needs it.
#[derive(Debug, Clone, Copy)]
pub struct ArchiveView<'a> {
    /// Complete backups, oldest first.
    pub backups: &'a [BackupSummary],
    /// Labels of backups without a manifest (running or dead): never restorable.
    pub in_progress: &'a [String],
    /// Parsed history files, by the timeline they describe.
    pub histories: &'a BTreeMap<Timeline, TimelineHistory>,
    pub wal: &'a WalCatalog,
}

/// What the operator asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanRequest {
    pub backup: Option<String>,
    pub target: RecoveryTarget,
    pub timeline: TimelineChoice,
    /// `--target-timeline` was given; `timeline` is otherwise the default, `latest`.
    pub timeline_given: bool,
}

/// A timeline whose parent's archived WAL goes on past the point where it branched off: two
/// histories share the WAL up to `at` and differ after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fork {
    pub parent: Timeline,
    pub child: Timeline,
    /// The branch point (the child's history file).
    pub at: Lsn,
    /// The newest segment archived on the parent.
    pub parent_last: WalSegmentName,
}

/// Every fork the archive shows: a history file's direct parent with archived segments after
/// the one holding the branch point. (WAL the parent wrote after the branch point inside that
/// same segment cannot be seen in the listing; `restore` reads it for time targets.)
pub fn forks(histories: &BTreeMap<Timeline, TimelineHistory>, wal: &WalCatalog) -> Vec<Fork> {
    histories
        .iter()
        .filter_map(|(child, h)| {
            let parent = h.entries.last()?;
            let last = *wal
                .timelines
                .get(&parent.tli)?
                .segments
                .keys()
                .next_back()?;
            (last > parent.switch_lsn.segment_no(wal.seg_size)).then(|| Fork {
                parent: parent.tli,
                child: *child,
                at: parent.switch_lsn,
                parent_last: WalSegmentName::from_segno(parent.tli, last, wal.seg_size),
            })
        })
        .collect()
}

/// Where recovery along `path` reads segment `segno` from: the newest timeline on the path
/// whose copy is archived, and the LSN its records are good up to when that copy belongs to a
/// timeline the path leaves inside the segment (the rest of it is another history). The same
/// rule as the reach of the plan.
pub fn segment_source(
    path: &[PathStep],
    wal: &WalCatalog,
    segno: u64,
) -> Option<(Timeline, Option<Lsn>)> {
    let seg_size = wal.seg_size;
    let has = |tli: Timeline| {
        wal.timelines
            .get(&tli)
            .is_some_and(|t| t.segments.contains_key(&segno))
    };
    let steps: Vec<&PathStep> = path
        .iter()
        .filter(|p| {
            p.begins.segment_no(seg_size) <= segno
                && p.ends.is_none_or(|e| e.segment_no(seg_size) >= segno)
        })
        .collect();
    let newest = steps.last()?;
    if has(newest.timeline) {
        let upto = newest.ends.filter(|e| e.segment_no(seg_size) == segno);
        return Some((newest.timeline, upto));
    }
    steps[..steps.len() - 1]
        .iter()
        .rev()
        .find(|p| has(p.timeline))
        .map(|p| (p.timeline, p.ends))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RestorePlan {
    pub backup: BackupSummary,
    /// Why this backup, in a sentence.
    pub reason: String,
    pub target: RecoveryTarget,
    pub timeline: TimelinePlan,
    /// The WAL the backup itself needs to become consistent (on its timeline).
    pub wal_needed: WalRange,
    /// End of the WAL archived contiguously from the backup's start along the path to the
    /// target timeline: recovery cannot go past it.
    pub wal_available_until: Lsn,
    /// The first missing segment when later WAL is archived (a hole, which the plan has
    /// checked the target lies before); `None` when the archive is contiguous to its end.
    pub wal_hole: Option<String>,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TimelinePlan {
    pub requested: TimelineChoice,
    /// The timeline recovery ends on.
    pub timeline: Timeline,
    /// The value written to `recovery_target_timeline`.
    pub setting: String,
    /// The timelines recovery replays, in order, with where each one ends.
    pub path: Vec<PathStep>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PathStep {
    pub timeline: Timeline,
    /// Where this timeline branched off its parent (0/0 for the first step).
    pub begins: Lsn,
    /// Where it switched to the next step; `None` for the target timeline.
    pub ends: Option<Lsn>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WalRange {
    pub first: String,
    pub last: String,
    pub segments: u64,
}

/// Builds the plan, or explains why no restore can satisfy the request.
pub fn plan(view: &ArchiveView<'_>, req: &PlanRequest) -> Result<RestorePlan> {
    let seg_size = view.wal.seg_size;
    if view.backups.is_empty() {
        let mut msg = "the repository has no complete backup to restore".to_string();
        if !view.in_progress.is_empty() {
            let _ = write!(
                msg,
                " ({} backup(s) without a manifest, running or failed: {})",
                view.in_progress.len(),
                view.in_progress.join(", ")
            );
        }
        bail!("{msg}\nhint: take one with `pgward backup`");
    }

    let (backup, resolved, reason) = match &req.backup {
        Some(label) => choose_given(view, req, label)?,
        None => choose_newest(view, req)?,
    };

    let mut warnings = Vec::new();
    let path = timeline_path(view.histories, backup, resolved);
    let reach = reach(view.wal, seg_size, &path, backup)?;

    if reach.until < backup.stop_lsn {
        bail!(
            "backup {} cannot be restored: the archive lacks WAL it needs to become consistent \
             (from {} to {}); missing: {}\nhint: the WAL was lost or not yet archived; check \
             archiving (`pgward info`, pg_stat_archiver) or choose another backup with --backup",
            backup.label,
            backup.start_wal,
            backup.stop_wal,
            describe_segments(&reach.missing_before_stop)
        );
    }

    refuse_targets_past_a_hole(req, backup, &reach)?;

    let setting = timeline_setting(
        view.histories,
        backup,
        req.timeline,
        resolved,
        &mut warnings,
    );
    warn_about_reach(req, backup, &path, &reach, &mut warnings);
    warn_about_forks(view, req, &path, &mut warnings);
    if matches!(req.target, RecoveryTarget::Xid(_) | RecoveryTarget::Name(_))
        && req.backup.is_none()
        && view.backups.len() > 1
    {
        warnings.push(format!(
            "pgward cannot see where {} is in the WAL, so it chose the newest backup; if the \
             target came before this backup ended ({}), recovery stops with \"recovery ended \
             before configured recovery target was reached\": choose an older backup with \
             --backup",
            req.target,
            rfc3339(&backup.stop_time)
        ));
    }

    Ok(RestorePlan {
        backup: backup.clone(),
        reason,
        target: req.target.clone(),
        timeline: TimelinePlan {
            requested: req.timeline,
            timeline: resolved,
            setting,
            path,
        },
        wal_needed: wal_needed(backup, seg_size)?,
        wal_available_until: reach.until,
        wal_hole: reach
            .first_missing
            .filter(|_| reach.more_after_gap)
            .map(|m| m.to_string()),
        warnings,
    })
}

/// Does the backup end no later than the target? `Err` carries the reason it does not.
fn satisfies(b: &BackupSummary, target: &RecoveryTarget) -> std::result::Result<(), String> {
    match target {
        RecoveryTarget::Time(t) if b.stop_time <= t.utc() => Ok(()),
        RecoveryTarget::Time(t) => Err(format!(
            "it stopped at {}, after the target time {t}",
            rfc3339(&b.stop_time)
        )),
        RecoveryTarget::Lsn(l) if b.stop_lsn <= *l => Ok(()),
        RecoveryTarget::Lsn(l) => Err(format!(
            "it stopped at LSN {}, after the target LSN {l}",
            b.stop_lsn
        )),
        RecoveryTarget::Xid(_)
        | RecoveryTarget::Name(_)
        | RecoveryTarget::Immediate
        | RecoveryTarget::EndOfArchive => Ok(()),
    }
}

/// Is the backup's end on the history of timeline `target`? A timeline without a history file
/// has no ancestors (timeline 1 never has one), so only its own backups lead to it.
fn leads_to(
    histories: &BTreeMap<Timeline, TimelineHistory>,
    b: &BackupSummary,
    target: Timeline,
) -> bool {
    target == b.timeline
        || histories
            .get(&target)
            .is_some_and(|h| h.contains(b.timeline, b.stop_lsn))
}

/// The timeline recovery of `b` ends on, or why `b` cannot reach the requested one.
fn resolve_timeline(
    view: &ArchiveView<'_>,
    b: &BackupSummary,
    choice: TimelineChoice,
) -> std::result::Result<Timeline, String> {
    match choice {
        TimelineChoice::Current => Ok(b.timeline),
        TimelineChoice::Number(n) if leads_to(view.histories, b, n) => Ok(n),
        TimelineChoice::Number(n) => Err(match view.histories.get(&n) {
            None => format!(
                "timeline {} has no history file in the archive, so only backups taken on \
                 timeline {} lead to it",
                n.0, n.0
            ),
            Some(h) => match h.switch_point_of(b.timeline) {
                Some(at) => format!(
                    "timeline {} branched off timeline {} at {at}, before the backup ended at {}",
                    n.0, b.timeline.0, b.stop_lsn
                ),
                None => format!(
                    "timeline {} does not descend from timeline {} (its ancestors: {})",
                    n.0,
                    b.timeline.0,
                    list_timelines(&h.ancestors())
                ),
            },
        }),
        TimelineChoice::Latest => Ok(known_timelines(view)
            .into_iter()
            .filter(|t| leads_to(view.histories, b, *t))
            .max()
            .unwrap_or(b.timeline)),
    }
}

fn known_timelines(view: &ArchiveView<'_>) -> BTreeSet<Timeline> {
    view.histories
        .keys()
        .chain(view.wal.timelines.keys())
        .copied()
        .collect()
}

fn choose_given<'a>(
    view: &ArchiveView<'a>,
    req: &PlanRequest,
    label: &str,
) -> Result<(&'a BackupSummary, Timeline, String)> {
    let Some(b) = view.backups.iter().find(|b| b.label == label) else {
        if view.in_progress.iter().any(|l| l == label) {
            bail!(
                "backup {label} is not complete (it has no manifest: it is still running or it \
                 failed)\nhint: complete backups: {}",
                list_labels(view.backups)
            );
        }
        bail!(
            "backup {label} does not exist\nhint: complete backups: {}",
            list_labels(view.backups)
        );
    };
    if let Err(why) = satisfies(b, &req.target) {
        let older: Vec<&BackupSummary> = view
            .backups
            .iter()
            .filter(|o| satisfies(o, &req.target).is_ok())
            .collect();
        let hint = match older.last() {
            Some(o) => format!(
                "choose an older backup such as {} (stopped {}, LSN {}), or leave out --backup",
                o.label,
                rfc3339(&o.stop_time),
                o.stop_lsn
            ),
            None => "no backup in the repository ends before this target".to_string(),
        };
        bail!(
            "backup {label} cannot reach {}: {why}; recovery can only move forward from the end \
             of a backup\nhint: {hint}",
            req.target
        );
    }
    let tli = resolve_timeline(view, b, req.timeline).map_err(|why| {
        anyhow!(
            "backup {label} (timeline {}, stopped at {}) does not lead to the requested \
             timeline: {why}\nhint: use --target-timeline current or latest, or a backup taken \
             on the target timeline",
            b.timeline.0,
            b.stop_lsn
        )
    })?;
    Ok((b, tli, "requested with --backup".to_string()))
}

fn choose_newest<'a>(
    view: &ArchiveView<'a>,
    req: &PlanRequest,
) -> Result<(&'a BackupSummary, Timeline, String)> {
    let mut too_late = 0usize;
    let mut off_path: Vec<(&BackupSummary, String)> = Vec::new();
    for b in view.backups.iter().rev() {
        if satisfies(b, &req.target).is_err() {
            too_late += 1;
            continue;
        }
        match resolve_timeline(view, b, req.timeline) {
            Ok(tli) => {
                let mut reason = match &req.target {
                    RecoveryTarget::Time(t) => format!(
                        "newest backup that stopped at or before {t} (stopped {})",
                        rfc3339(&b.stop_time)
                    ),
                    RecoveryTarget::Lsn(l) => format!(
                        "newest backup whose stop LSN {} is at or before {l}",
                        b.stop_lsn
                    ),
                    other => format!("newest backup (target: {other})"),
                };
                if !off_path.is_empty() {
                    let labels: Vec<&str> =
                        off_path.iter().map(|(o, _)| o.label.as_str()).collect();
                    let _ = write!(
                        reason,
                        "; newer backups {} do not lead to timeline {}",
                        labels.join(", "),
                        req.timeline
                    );
                }
                if too_late > 0 {
                    let _ = write!(reason, "; {too_late} newer backup(s) end after the target");
                }
                return Ok((b, tli, reason));
            }
            Err(why) => off_path.push((b, why)),
        }
    }
    let oldest = &view.backups[0];
    if off_path.is_empty() {
        let (what, when) = match &req.target {
            RecoveryTarget::Lsn(_) => (
                "LSN",
                format!(
                    "LSN {} (time {})",
                    oldest.stop_lsn,
                    rfc3339(&oldest.stop_time)
                ),
            ),
            _ => (
                "time",
                format!("{} (LSN {})", rfc3339(&oldest.stop_time), oldest.stop_lsn),
            ),
        };
        bail!(
            "no backup ends before the target {}: the oldest backup, {}, stopped at {when}\n\
             hint: a restore can only reach points after the end of a backup; choose a target \
             {what} after that",
            req.target,
            oldest.label
        );
    }
    let which = match req.target {
        RecoveryTarget::Time(_) | RecoveryTarget::Lsn(_) => "no backup that ends before the target",
        _ => "no backup",
    };
    bail!(
        "{which} is on a timeline that leads to timeline {}: {}\n\
         hint: use --target-timeline latest or current, or restore a backup taken on that \
         timeline",
        req.timeline,
        grouped_reasons(&off_path)
    )
}

/// `backups C, B and A (timeline 1): why; backup D (timeline 2): other why` — each reason
/// once, with every backup it applies to, in the order first met.
fn grouped_reasons(off_path: &[(&BackupSummary, String)]) -> String {
    let mut groups: Vec<(&str, Vec<&BackupSummary>)> = Vec::new();
    for (b, why) in off_path {
        match groups
            .iter_mut()
            .find(|(w, g)| *w == why.as_str() && g[0].timeline == b.timeline)
        {
            Some((_, g)) => g.push(b),
            None => groups.push((why.as_str(), vec![b])),
        }
    }
    groups
        .iter()
        .map(|(why, g)| {
            let labels: Vec<&str> = g.iter().map(|b| b.label.as_str()).collect();
            let who = match labels.as_slice() {
                [one] => format!("backup {one}"),
                [rest @ .., last] => format!("backups {} and {last}", rest.join(", ")),
                [] => String::new(),
            };
            format!("{who} (timeline {}): {why}", g[0].timeline.0)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Recovery replays timelines from the backup's to the target's, switching at each history
/// entry after the backup's timeline.
fn timeline_path(
    histories: &BTreeMap<Timeline, TimelineHistory>,
    b: &BackupSummary,
    target: Timeline,
) -> Vec<PathStep> {
    let Some(h) = histories.get(&target).filter(|_| target != b.timeline) else {
        return vec![PathStep {
            timeline: b.timeline,
            begins: Lsn(0),
            ends: None,
        }];
    };
    let from = h
        .entries
        .iter()
        .position(|e| e.tli == b.timeline)
        .unwrap_or(0);
    let mut steps = Vec::new();
    let mut begins = Lsn(0);
    for e in &h.entries[from..] {
        steps.push(PathStep {
            timeline: e.tli,
            begins,
            ends: Some(e.switch_lsn),
        });
        begins = e.switch_lsn;
    }
    steps.push(PathStep {
        timeline: target,
        begins,
        ends: None,
    });
    steps
}

/// What `recovery_target_timeline` gets. `latest` is written only when PostgreSQL's own
/// resolution agrees with the plan: PostgreSQL takes the highest timeline it finds by probing
/// history files upwards from the backup's (`findNewestTimeLine`) and fails if the backup is
/// not on that timeline's history, so otherwise the number is written.
fn timeline_setting(
    histories: &BTreeMap<Timeline, TimelineHistory>,
    b: &BackupSummary,
    choice: TimelineChoice,
    resolved: Timeline,
    warnings: &mut Vec<String>,
) -> String {
    match choice {
        TimelineChoice::Current => "current".into(),
        TimelineChoice::Number(n) => n.0.to_string(),
        TimelineChoice::Latest => {
            let mut probed = b.timeline;
            while let Some(next) = probed.0.checked_add(1).map(Timeline)
                && histories.contains_key(&next)
            {
                probed = next;
            }
            if probed == resolved {
                "latest".into()
            } else {
                warnings.push(format!(
                    "the newest timeline PostgreSQL would pick for 'latest' is {}, which does \
                     not descend from this backup; recovery_target_timeline is set to {} (the \
                     newest timeline that does)",
                    probed.0, resolved.0
                ));
                resolved.0.to_string()
            }
        }
    }
}

fn wal_needed(b: &BackupSummary, seg_size: u64) -> Result<WalRange> {
    let (first, last) = backup_segments(b)?;
    Ok(WalRange {
        first: first.to_string(),
        last: last.to_string(),
        segments: last.segno(seg_size).saturating_sub(first.segno(seg_size)) + 1,
    })
}

fn backup_segments(b: &BackupSummary) -> Result<(WalSegmentName, WalSegmentName)> {
    Ok((b.start_wal, b.stop_wal))
}

/// How far the archived WAL reaches from the backup's start along the path.
#[derive(Debug)]
struct Reach {
    until: Lsn,
    /// The first segment recovery would miss (on the timeline it would ask for).
    first_missing: Option<WalSegmentName>,
    /// Whether WAL on the path is archived beyond the first missing segment (a gap, not the
    /// natural end of the archive).
    more_after_gap: bool,
    /// Segments the backup itself needs that are missing.
    missing_before_stop: Vec<WalSegmentName>,
}

fn reach(wal: &WalCatalog, seg_size: u64, path: &[PathStep], b: &BackupSummary) -> Result<Reach> {
    let (first, last) = backup_segments(b)?;
    let start = first.segno(seg_size);
    let stop = last.segno(seg_size);
    let has = |tli: Timeline, segno: u64| {
        wal.timelines
            .get(&tli)
            .is_some_and(|t| t.segments.contains_key(&segno))
    };
    // The path steps whose WAL may hold segment `s`, oldest first.
    let overlapping = |s: u64| -> Vec<&PathStep> {
        path.iter()
            .filter(|p| {
                p.begins.segment_no(seg_size) <= s
                    && p.ends.is_none_or(|e| e.segment_no(seg_size) >= s)
            })
            .collect()
    };

    let mut until = Lsn::from_segment(start, seg_size);
    let mut s = start;
    let (first_missing, partial_until) = loop {
        let steps = overlapping(s);
        let Some(newest) = steps.last() else {
            break (None, None);
        };
        if has(newest.timeline, s) {
            until = Lsn::from_segment(s + 1, seg_size);
            s += 1;
            continue;
        }
        // An older timeline's copy of the switch segment is good up to its switch point.
        let partial = steps[..steps.len() - 1]
            .iter()
            .filter(|p| has(p.timeline, s))
            .filter_map(|p| p.ends)
            .max();
        break (
            Some(WalSegmentName::from_segno(newest.timeline, s, seg_size)),
            partial,
        );
    };
    if let Some(p) = partial_until {
        until = until.max(p);
    }
    let more_after_gap = first_missing.is_some_and(|m| {
        let m = m.segno(seg_size);
        path.iter().any(|p| {
            let end = p.ends.map_or(u64::MAX, |e| e.segment_no(seg_size));
            wal.timelines.get(&p.timeline).is_some_and(|t| {
                t.segments
                    .range(m + 1..)
                    .next()
                    .is_some_and(|(segno, _)| *segno <= end)
            })
        })
    });
    let missing_before_stop = (start..=stop)
        .filter(|&s| {
            let steps = overlapping(s);
            !steps.iter().any(|p| has(p.timeline, s))
        })
        .map(|s| {
            let tli = overlapping(s).last().map_or(b.timeline, |p| p.timeline);
            WalSegmentName::from_segno(tli, s, seg_size)
        })
        .collect();
    Ok(Reach {
        until,
        first_missing,
        more_after_gap,
        missing_before_stop,
    })
}

/// A hole (a missing segment with later WAL archived) ends recovery early if the target lies
/// past it: refuse the end of the archive and LSN targets beyond it. Time, xid and name targets
/// cannot be placed in the WAL from the catalog; they get a warning (`warn_about_reach`), and
/// `wal-fetch` stops recovery at the hole rather than let it end there.
fn refuse_targets_past_a_hole(req: &PlanRequest, b: &BackupSummary, reach: &Reach) -> Result<()> {
    let Some(missing) = reach.first_missing.filter(|_| reach.more_after_gap) else {
        return Ok(());
    };
    let past = match &req.target {
        RecoveryTarget::EndOfArchive => "the end of the archive".to_string(),
        // Recovery reaches an LSN target only by reading a record at or past it.
        RecoveryTarget::Lsn(l) if *l >= reach.until => format!("the target LSN {l}"),
        _ => return Ok(()),
    };
    bail!(
        "the archive has a hole after backup {}: {missing} is missing but later WAL of its \
         timeline is archived, so recovery cannot go past {} and {past} lies beyond it\nhint: \
         put {missing} back into the repository from another copy (`pgward wal-push` of it from \
         a standby's or the primary's pg_wal), or choose a target before the hole (for example \
         --target-lsn with an LSN below {})",
        b.label,
        reach.until,
        reach.until
    )
}

fn warn_about_reach(
    req: &PlanRequest,
    b: &BackupSummary,
    path: &[PathStep],
    reach: &Reach,
    warnings: &mut Vec<String>,
) {
    let missing = reach
        .first_missing
        .map(|m| m.to_string())
        .unwrap_or_default();
    match &req.target {
        RecoveryTarget::Immediate => return,
        RecoveryTarget::Lsn(l) if reach.until < *l => {
            warnings.push(format!(
                "the archive holds WAL only up to {} ({missing} is missing), before the target \
                 LSN {l}: recovery can reach only up to {} unless the rest is archived first",
                reach.until, reach.until
            ));
            return;
        }
        _ => {}
    }
    // An LSN target before a hole is placed by the plan; other targets cannot be.
    if reach.more_after_gap && !matches!(req.target, RecoveryTarget::Lsn(_)) {
        warnings.push(format!(
            "the archive has a hole after backup {}: {missing} is missing, so recovery can reach \
             only up to {} although later WAL is archived; if the target lies past it, recovery \
             stops at {missing} with an error (the server does not come up) until it is put back",
            b.label, reach.until
        ));
    }
    if let Some(last) = path.last()
        && path.len() > 1
        && reach.until < last.begins
    {
        warnings.push(format!(
            "timeline {} starts at {}, beyond the archived WAL (up to {}): recovery cannot reach it",
            last.timeline.0, last.begins, reach.until
        ));
    }
}

/// The path leaves a parent timeline that goes on past the branch point: the restore gets the
/// branch's history, not the parent's, and nothing else would tell the operator (issue 9,
/// item 11). Said whether or not the timeline was chosen: it names what is left out.
fn warn_about_forks(
    view: &ArchiveView<'_>,
    req: &PlanRequest,
    path: &[PathStep],
    warnings: &mut Vec<String>,
) {
    let Some(target) = path.last() else {
        return;
    };
    let forks = forks(view.histories, view.wal);
    for pair in path.windows(2) {
        let (left, next) = (&pair[0], &pair[1]);
        let Some(f) = forks
            .iter()
            .find(|f| f.parent == left.timeline && f.child == next.timeline)
        else {
            continue;
        };
        let how = if req.timeline_given {
            format!("--target-timeline {}", req.timeline)
        } else {
            format!("--target-timeline {}, the default", req.timeline)
        };
        warnings.push(format!(
            "timeline {} goes on after timeline {} branched off it at {} (its WAL is archived \
             up to {}), but this restore follows timeline {} ({how}): what timeline {} \
             committed after {} is not restored; to restore timeline {}'s history instead, use \
             --target-timeline {}",
            f.parent.0,
            f.child.0,
            f.at,
            f.parent_last,
            target.timeline.0,
            f.parent.0,
            f.at,
            f.parent.0,
            f.parent.0
        ));
    }
}

/// `A, B..C` for a sorted list of segment names (runs collapsed).
fn describe_segments(segs: &[WalSegmentName]) -> String {
    let mut runs: Vec<(WalSegmentName, WalSegmentName)> = Vec::new();
    for s in segs {
        match runs.last_mut() {
            Some((_, last)) if last.tli == s.tli && (last.log, last.seg + 1) == (s.log, s.seg) => {
                *last = *s
            }
            _ => runs.push((*s, *s)),
        }
    }
    runs.iter()
        .map(|(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}..{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn list_labels(backups: &[BackupSummary]) -> String {
    if backups.is_empty() {
        return "none".into();
    }
    backups
        .iter()
        .map(|b| b.label.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn list_timelines(t: &[Timeline]) -> String {
    t.iter()
        .map(|t| t.0.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Sha256Digest;
    use crate::pg::WalFileName;
    use crate::repo::layout;
    use crate::restore::target::parse_time;
    use crate::storage::ObjectMeta;

    const SEG: u64 = 16 << 20;

    fn lsn(s: &str) -> Lsn {
        s.parse().unwrap()
    }

    fn seg(tli: u32, l: Lsn) -> WalSegmentName {
        WalSegmentName::from_segno(Timeline(tli), l.segment_no(SEG), SEG)
    }

    /// A backup on `tli` from `start` to `stop` (LSNs), stopping at `stop_time` (UTC, HH:MM).
    fn backup(label: &str, tli: u32, start: &str, stop: &str, stop_time: &str) -> BackupSummary {
        let (start, stop) = (lsn(start), lsn(stop));
        BackupSummary {
            label: crate::repo::label::Label::parse(label).unwrap(),
            timeline: Timeline(tli),
            start_lsn: start,
            stop_lsn: stop,
            start_wal: seg(tli, start),
            stop_wal: seg(tli, stop),
            start_time: format!("2026-11-22T{stop_time}:00Z").parse().unwrap(),
            stop_time: format!("2026-11-22T{stop_time}:30Z").parse().unwrap(),
            total_bytes: 0,
            stored_bytes: 0,
            files: 0,
            bad_pages: 0,
            data_checksums: false,
        }
    }

    /// The archive: segments `first..=last` per timeline, plus history files.
    struct Archive {
        segs: Vec<(u32, u64, u64)>,
        histories: Vec<(u32, &'static str)>,
    }

    impl Archive {
        fn catalog(&self) -> WalCatalog {
            let mut objs = Vec::new();
            for &(tli, first, last) in &self.segs {
                for s in first..=last {
                    let n = WalFileName::Segment(WalSegmentName::from_segno(Timeline(tli), s, SEG));
                    objs.push(ObjectMeta {
                        key: layout::wal_key(&n, &Sha256Digest::of(n.to_string().as_bytes())),
                        size: 1,
                        last_modified: None,
                    });
                }
            }
            for &(tli, _) in &self.histories {
                let n = WalFileName::parse(&format!("{:08X}.history", tli)).unwrap();
                objs.push(ObjectMeta {
                    key: layout::wal_key(&n, &Sha256Digest::of(b"h")),
                    size: 1,
                    last_modified: None,
                });
            }
            WalCatalog::from_listing(&objs, SEG)
        }

        fn histories(&self) -> BTreeMap<Timeline, TimelineHistory> {
            self.histories
                .iter()
                .map(|&(t, text)| {
                    (
                        Timeline(t),
                        TimelineHistory::parse(Timeline(t), text).unwrap(),
                    )
                })
                .collect()
        }
    }

    fn run(
        backups: &[BackupSummary],
        archive: &Archive,
        backup: Option<&str>,
        target: RecoveryTarget,
        timeline: TimelineChoice,
    ) -> Result<RestorePlan> {
        let wal = archive.catalog();
        let histories = archive.histories();
        let in_progress = vec!["20261122T150000Z".to_string()];
        let view = ArchiveView {
            backups,
            in_progress: &in_progress,
            histories: &histories,
            wal: &wal,
        };
        plan(
            &view,
            &PlanRequest {
                backup: backup.map(str::to_string),
                target,
                timeline,
                timeline_given: false,
            },
        )
    }

    fn time(s: &str) -> RecoveryTarget {
        RecoveryTarget::Time(parse_time(s).unwrap())
    }

    /// Three backups on timeline 1, WAL 2..=20 archived without gaps.
    fn three() -> (Vec<BackupSummary>, Archive) {
        (
            vec![
                backup("A", 1, "0/2000028", "0/2000138", "10:00"),
                backup("B", 1, "0/6000028", "0/7000100", "11:00"),
                backup("C", 1, "0/A000028", "0/A000138", "12:00"),
            ],
            Archive {
                segs: vec![(1, 2, 20)],
                histories: vec![],
            },
        )
    }

    #[test]
    fn a_refusal_names_one_reason_once_for_every_backup_it_applies_to() {
        let (backups, archive) = three();
        let err = run(
            &backups,
            &archive,
            None,
            RecoveryTarget::EndOfArchive,
            TimelineChoice::Number(Timeline(4)),
        )
        .unwrap_err()
        .to_string();
        let clause = "timeline 4 has no history file in the archive";
        assert_eq!(err.matches(clause).count(), 1, "{err}");
        assert!(err.contains("backups C, B and A"), "{err}");
        assert!(err.contains("hint: use --target-timeline"), "{err}");
    }

    #[test]
    fn selection_by_target() {
        use TimelineChoice::Latest;
        let (backups, archive) = three();
        // (target, --backup, chosen label, words in the reason)
        let cases: Vec<(RecoveryTarget, Option<&str>, &str, &str)> = vec![
            (
                time("2026-11-22 11:30:00+00"),
                None,
                "B",
                "stopped at or before",
            ),
            (
                time("2026-11-22 11:00:30+00"),
                None,
                "B",
                "1 newer backup(s) end after",
            ),
            (time("2026-11-22 11:00:29.999999+00"), None, "A", "2 newer"),
            // 12:30 in +01:00 is 11:30 UTC.
            (
                time("2026-11-22 12:30:00+01"),
                None,
                "B",
                "stopped at or before",
            ),
            (
                time("2026-11-23 00:00:00+00"),
                None,
                "C",
                "stopped at or before",
            ),
            (time("2026-11-22 12:00:00+00"), Some("A"), "A", "--backup"),
            (
                RecoveryTarget::Lsn(lsn("0/7000100")),
                None,
                "B",
                "stop LSN 0/7000100",
            ),
            (
                RecoveryTarget::Lsn(lsn("0/70000FF")),
                None,
                "A",
                "at or before 0/70000FF",
            ),
            (RecoveryTarget::Lsn(lsn("5/0")), None, "C", "stop LSN"),
            (
                RecoveryTarget::Xid(1234),
                None,
                "C",
                "newest backup (target: transaction 1234)",
            ),
            (
                RecoveryTarget::Name("before".into()),
                None,
                "C",
                "restore point",
            ),
            (
                RecoveryTarget::Name("before".into()),
                Some("B"),
                "B",
                "--backup",
            ),
            (RecoveryTarget::Immediate, None, "C", "immediate"),
            (RecoveryTarget::Immediate, Some("A"), "A", "--backup"),
            (RecoveryTarget::EndOfArchive, None, "C", "end of archive"),
            (RecoveryTarget::EndOfArchive, Some("B"), "B", "--backup"),
        ];
        for (target, given, want, reason) in cases {
            let p = run(&backups, &archive, given, target.clone(), Latest)
                .unwrap_or_else(|e| panic!("{target:?}: {e:#}"));
            assert_eq!(p.backup.label, want, "{target:?} {given:?}");
            assert!(p.reason.contains(reason), "{target:?}: {}", p.reason);
            assert_eq!(p.target, target);
            assert_eq!(p.timeline.timeline, Timeline(1));
            assert_eq!(p.timeline.setting, "latest");
            assert_eq!(p.wal_available_until, Lsn::from_segment(21, SEG));
        }
    }

    #[test]
    fn refusals_say_why_and_what_to_do() {
        use TimelineChoice::Latest;
        let (backups, archive) = three();
        let cases: Vec<(RecoveryTarget, Option<&str>, &[&str])> = vec![
            (
                time("2026-11-22 09:00:00+00"),
                None,
                &[
                    "no backup ends before the target",
                    "oldest backup, A",
                    "2026-11-22T10:00:30Z",
                    "0/2000138",
                    "hint:",
                ],
            ),
            (
                RecoveryTarget::Lsn(lsn("0/1000000")),
                None,
                &["oldest backup, A", "LSN 0/2000138", "hint:"],
            ),
            (
                time("2026-11-22 11:30:00+00"),
                Some("C"),
                &[
                    "backup C cannot reach",
                    "after the target time",
                    "such as B",
                    "hint:",
                ],
            ),
            (
                RecoveryTarget::Lsn(lsn("0/1000000")),
                Some("A"),
                &[
                    "backup A cannot reach",
                    "no backup in the repository ends before",
                ],
            ),
            (
                RecoveryTarget::EndOfArchive,
                Some("Z"),
                &["backup Z does not exist", "A, B, C"],
            ),
            (
                RecoveryTarget::EndOfArchive,
                Some("20261122T150000Z"),
                &["is not complete", "hint:"],
            ),
        ];
        for (target, given, words) in cases {
            let msg = format!(
                "{:#}",
                run(&backups, &archive, given, target.clone(), Latest).unwrap_err()
            );
            for w in words {
                assert!(
                    msg.contains(w),
                    "{target:?} {given:?}: missing {w:?} in {msg}"
                );
            }
        }
        let msg = format!(
            "{:#}",
            run(&[], &archive, None, RecoveryTarget::EndOfArchive, Latest).unwrap_err()
        );
        assert!(
            msg.contains("no complete backup") && msg.contains("20261122T150000Z"),
            "{msg}"
        );
        assert!(msg.contains("pgward backup"), "{msg}");
    }

    #[test]
    fn timelines() {
        use TimelineChoice::{Current, Latest, Number};
        // Backup on timeline 1 stopping at 0/3000100; timeline 2 branches off 1 after the stop
        // (0/5000060) or before it (0/2800000); timeline 3 branches off 2 at 0/8000000.
        let b1 = vec![backup("T1", 1, "0/3000028", "0/3000100", "10:00")];
        let after = Archive {
            segs: vec![(1, 3, 5), (2, 5, 9), (3, 8, 12)],
            histories: vec![
                (2, "1\t0/5000060\tno recovery target specified\n"),
                (3, "1\t0/5000060\tx\n2\t0/8000000\ty\n"),
            ],
        };
        let before = Archive {
            segs: vec![(1, 3, 6), (2, 2, 9)],
            histories: vec![(2, "1\t0/2800000\tbefore 10:00\n")],
        };
        let lonely = Archive {
            segs: vec![(1, 3, 6), (3, 3, 9)],
            histories: vec![],
        };
        // (archive, request, resolved, setting, path, available until, warning)
        type Case<'a> = (
            &'a Archive,
            TimelineChoice,
            u32,
            &'a str,
            Vec<(u32, Option<&'a str>)>,
            &'a str,
            Option<&'a str>,
        );
        let cases: Vec<Case> = vec![
            (
                &after,
                Latest,
                3,
                "latest",
                vec![(1, Some("0/5000060")), (2, Some("0/8000000")), (3, None)],
                "0/D000000",
                // Timeline 2's archive goes on to segment 9, past timeline 3's branch point.
                Some("timeline 2 goes on after timeline 3 branched off it at 0/8000000"),
            ),
            (
                &after,
                Current,
                1,
                "current",
                vec![(1, None)],
                "0/6000000",
                None,
            ),
            (
                &after,
                Number(Timeline(2)),
                2,
                "2",
                vec![(1, Some("0/5000060")), (2, None)],
                "0/A000000",
                None,
            ),
            (
                &before,
                Latest,
                1,
                "1",
                vec![(1, None)],
                "0/7000000",
                Some("PostgreSQL would pick for 'latest' is 2"),
            ),
            (
                &before,
                Current,
                1,
                "current",
                vec![(1, None)],
                "0/7000000",
                None,
            ),
            (
                &lonely,
                Latest,
                1,
                "latest",
                vec![(1, None)],
                "0/7000000",
                None,
            ),
        ];
        for (archive, choice, tli, setting, path, until, warning) in cases {
            let p = run(&b1, archive, None, RecoveryTarget::EndOfArchive, choice)
                .unwrap_or_else(|e| panic!("{choice:?}: {e:#}"));
            assert_eq!(p.timeline.timeline, Timeline(tli), "{choice:?}");
            assert_eq!(p.timeline.setting, setting, "{choice:?}");
            let got: Vec<(u32, Option<Lsn>)> = p
                .timeline
                .path
                .iter()
                .map(|s| (s.timeline.0, s.ends))
                .collect();
            let want: Vec<(u32, Option<Lsn>)> =
                path.iter().map(|(t, e)| (*t, e.map(lsn))).collect();
            assert_eq!(got, want, "{choice:?}");
            assert_eq!(p.wal_available_until, lsn(until), "{choice:?}");
            match warning {
                Some(w) => assert!(
                    p.warnings.iter().any(|x| x.contains(w)),
                    "{choice:?}: {:?}",
                    p.warnings
                ),
                None => assert!(p.warnings.is_empty(), "{choice:?}: {:?}", p.warnings),
            }
        }

        // Unreachable timelines are refused, with the reason.
        for (archive, n, want) in [
            (
                &before,
                2,
                "branched off timeline 1 at 0/2800000, before the backup ended at 0/3000100",
            ),
            (&lonely, 3, "timeline 3 has no history file"),
            (&after, 7, "timeline 7 has no history file"),
        ] {
            let msg = format!(
                "{:#}",
                run(
                    &b1,
                    archive,
                    None,
                    RecoveryTarget::EndOfArchive,
                    Number(Timeline(n))
                )
                .unwrap_err()
            );
            assert!(msg.contains(want), "{n}: {msg}");
            assert!(msg.contains("hint:"), "{msg}");
            let msg = format!(
                "{:#}",
                run(
                    &b1,
                    archive,
                    Some("T1"),
                    RecoveryTarget::EndOfArchive,
                    Number(Timeline(n))
                )
                .unwrap_err()
            );
            assert!(
                msg.contains("backup T1") && msg.contains(want),
                "{n}: {msg}"
            );
        }
    }

    #[test]
    fn newest_backup_on_the_path_wins() {
        // X stopped on timeline 1 before timeline 2 branched off at 0/5000000; Y stopped on
        // timeline 1 after the branch (on the abandoned history); Z is on timeline 2.
        let backups = vec![
            backup("X", 1, "0/3000028", "0/3000100", "10:00"),
            backup("Y", 1, "0/6000028", "0/6000100", "11:00"),
            backup("Z", 2, "0/8000028", "0/8000100", "12:00"),
        ];
        let archive = Archive {
            segs: vec![(1, 3, 7), (2, 5, 9)],
            histories: vec![(2, "1\t0/5000000\tx\n")],
        };
        let target = time("2026-11-22 11:30:00+00");
        let p = run(
            &backups,
            &archive,
            None,
            target.clone(),
            TimelineChoice::Number(Timeline(2)),
        )
        .unwrap();
        assert_eq!(p.backup.label, "X");
        assert!(p.reason.contains("newer backups Y"), "{}", p.reason);
        assert!(
            p.reason.contains("1 newer backup(s) end after"),
            "{}",
            p.reason
        );
        // On its own timeline, Y is fine.
        let p = run(&backups, &archive, None, target, TimelineChoice::Current).unwrap();
        assert_eq!(p.backup.label, "Y");
        assert_eq!(p.timeline.setting, "current");
        // Backups on timeline 2: `latest` is 2 itself.
        let p = run(
            &backups,
            &archive,
            None,
            RecoveryTarget::EndOfArchive,
            TimelineChoice::Latest,
        )
        .unwrap();
        assert_eq!(
            (p.backup.label.as_str(), p.timeline.timeline),
            ("Z", Timeline(2))
        );
        assert_eq!(p.wal_needed.first, "000000020000000000000008");
        assert_eq!(p.wal_available_until, lsn("0/A000000"));
    }

    #[test]
    fn wal_gaps() {
        let b = vec![backup("B", 1, "0/3000028", "0/5000100", "10:00")];
        let latest = TimelineChoice::Latest;
        // A gap inside the backup's own WAL: refused, naming the missing segments.
        let gap_inside = Archive {
            segs: vec![(1, 3, 3), (1, 5, 9)],
            histories: vec![],
        };
        let msg = format!(
            "{:#}",
            run(&b, &gap_inside, None, RecoveryTarget::Immediate, latest).unwrap_err()
        );
        assert!(msg.contains("missing: 000000010000000000000004"), "{msg}");
        assert!(
            msg.contains("from 000000010000000000000003 to 000000010000000000000005"),
            "{msg}"
        );
        let none = Archive {
            segs: vec![],
            histories: vec![],
        };
        let msg = format!(
            "{:#}",
            run(&b, &none, None, RecoveryTarget::Immediate, latest).unwrap_err()
        );
        assert!(
            msg.contains("missing: 000000010000000000000003..000000010000000000000005"),
            "{msg}"
        );

        // A hole after the stop: the end of the archive and LSN targets past it are refused,
        // naming the hole and how to get past it.
        let gap_after = Archive {
            segs: vec![(1, 3, 6), (1, 8, 9)],
            histories: vec![],
        };
        for target in [
            RecoveryTarget::EndOfArchive,
            RecoveryTarget::Lsn(lsn("0/7000000")),
            RecoveryTarget::Lsn(lsn("0/8800000")),
        ] {
            let msg = format!(
                "{:#}",
                run(&b, &gap_after, None, target.clone(), latest).unwrap_err()
            );
            for needle in [
                "hole after backup B",
                "000000010000000000000007 is missing",
                "cannot go past 0/7000000",
                "hint: put 000000010000000000000007 back",
                "--target-lsn",
            ] {
                assert!(msg.contains(needle), "{target:?}: {needle}\n{msg}");
            }
        }
        // A target before the hole is fine; a time target cannot be placed, so it is warned.
        let p = run(
            &b,
            &gap_after,
            None,
            RecoveryTarget::Lsn(lsn("0/6FFFFFF")),
            latest,
        )
        .unwrap();
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        let p = run(&b, &gap_after, None, time("2026-11-22 10:30:00+00"), latest).unwrap();
        assert_eq!(p.wal_available_until, lsn("0/7000000"));
        assert_eq!(
            p.wal_needed,
            WalRange {
                first: "000000010000000000000003".into(),
                last: "000000010000000000000005".into(),
                segments: 3,
            }
        );
        assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
        assert!(
            p.warnings[0].contains("000000010000000000000007 is missing"),
            "{:?}",
            p.warnings
        );
        assert!(
            p.warnings[0].contains("only up to 0/7000000")
                && p.warnings[0].contains("stops at 000000010000000000000007"),
            "{:?}",
            p.warnings
        );
        // Immediate needs nothing past the stop.
        let p = run(&b, &gap_after, None, RecoveryTarget::Immediate, latest).unwrap();
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        // The natural end of the archive is not a gap.
        let end = Archive {
            segs: vec![(1, 3, 6)],
            histories: vec![],
        };
        let p = run(&b, &end, None, RecoveryTarget::EndOfArchive, latest).unwrap();
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        // ... but an LSN target past it is worth a warning.
        let p = run(
            &b,
            &end,
            None,
            RecoveryTarget::Lsn(lsn("0/9000000")),
            latest,
        )
        .unwrap();
        assert!(
            p.warnings[0].contains("only up to 0/7000000"),
            "{:?}",
            p.warnings
        );
        let p = run(
            &b,
            &end,
            None,
            RecoveryTarget::Lsn(lsn("0/6FFFFFF")),
            latest,
        )
        .unwrap();
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    }

    #[test]
    fn switch_segment_on_both_timelines() {
        // Timeline 2 branches off 1 inside segment 6. Its copy of segment 6 leads on; the old
        // timeline's copy is good only up to the switch point.
        let b = vec![backup("B", 1, "0/3000028", "0/4000100", "10:00")];
        let hist = vec![(2, "1\t0/6000060\tx\n")];
        let full = Archive {
            segs: vec![(1, 3, 6), (2, 6, 8)],
            histories: hist.clone(),
        };
        let p = run(
            &b,
            &full,
            None,
            RecoveryTarget::EndOfArchive,
            TimelineChoice::Latest,
        )
        .unwrap();
        assert_eq!(p.timeline.timeline, Timeline(2));
        assert_eq!(p.wal_available_until, lsn("0/9000000"));
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);

        let no_child_copy = Archive {
            segs: vec![(1, 3, 6), (2, 7, 8)],
            histories: hist.clone(),
        };
        // Timeline 2 lacks its first segment but has later ones: a hole (wal-fetch stops
        // recovery there), so the end of the archive is refused; a target before it plans.
        let msg = format!(
            "{:#}",
            run(
                &b,
                &no_child_copy,
                None,
                RecoveryTarget::EndOfArchive,
                TimelineChoice::Latest,
            )
            .unwrap_err()
        );
        assert!(
            msg.contains("000000020000000000000006 is missing") && msg.contains("0/6000060"),
            "{msg}"
        );
        let p = run(
            &b,
            &no_child_copy,
            None,
            RecoveryTarget::Lsn(lsn("0/6000000")),
            TimelineChoice::Latest,
        )
        .unwrap();
        assert_eq!(p.wal_available_until, lsn("0/6000060"));
        assert_eq!(p.wal_hole.as_deref(), Some("000000020000000000000006"));

        // Timeline 1 past the switch point belongs to another history: not used for timeline 2.
        let old_only = Archive {
            segs: vec![(1, 3, 9)],
            histories: hist,
        };
        let p = run(
            &b,
            &old_only,
            None,
            RecoveryTarget::EndOfArchive,
            TimelineChoice::Latest,
        )
        .unwrap();
        assert_eq!(p.wal_available_until, lsn("0/6000060"));
    }

    #[test]
    fn a_parent_that_goes_on_past_the_fork_is_named() {
        use TimelineChoice::{Latest, Number};
        // Timeline 2 branched off 1 at 0/B006390 (segment B); timeline 1's archive goes on to
        // segment E (issue 9, item 11), or stops with the switch segment.
        let b = vec![backup("B", 1, "0/3000028", "0/3000100", "10:00")];
        let hist = vec![(2, "1\t0/B006390\tno recovery target specified\n")];
        let went_on = Archive {
            segs: vec![(1, 3, 14), (2, 11, 12)],
            histories: hist.clone(),
        };
        let stopped = Archive {
            segs: vec![(1, 3, 11), (2, 11, 12)],
            histories: hist,
        };
        assert_eq!(
            forks(&went_on.histories(), &went_on.catalog()),
            vec![Fork {
                parent: Timeline(1),
                child: Timeline(2),
                at: lsn("0/B006390"),
                parent_last: WalSegmentName::parse("00000001000000000000000E").unwrap(),
            }]
        );
        assert!(forks(&stopped.histories(), &stopped.catalog()).is_empty());
        for (target, given) in [
            (RecoveryTarget::EndOfArchive, None),
            (RecoveryTarget::EndOfArchive, Some("B")),
            (time("2026-11-22 11:30:00+00"), None),
        ] {
            let p = run(&b, &went_on, given, target.clone(), Latest).unwrap();
            assert_eq!(p.timeline.timeline, Timeline(2));
            let w = p.warnings.join("\n");
            for needle in [
                "timeline 1 goes on after timeline 2 branched off it at 0/B006390",
                "up to 00000001000000000000000E",
                "follows timeline 2",
                "--target-timeline 1",
            ] {
                assert!(
                    w.contains(needle),
                    "{target:?} {given:?}: {needle:?} in {w}"
                );
            }
            let p = run(&b, &stopped, given, target.clone(), Latest).unwrap();
            assert!(p.warnings.is_empty(), "{:?}", p.warnings);
            // On timeline 1 itself nothing is left behind.
            let p = run(&b, &went_on, given, target, Number(Timeline(1))).unwrap();
            assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        }
    }

    #[test]
    fn plan_serialises_for_json_output() {
        let (backups, archive) = three();
        let p = run(
            &backups,
            &archive,
            None,
            time("2026-11-22 11:30:00+00"),
            TimelineChoice::Latest,
        )
        .unwrap();
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["backup"]["label"], "B");
        assert_eq!(v["target"]["kind"], "time");
        assert_eq!(v["timeline"]["timeline"], 1);
        assert_eq!(v["timeline"]["requested"], "latest");
        assert_eq!(v["wal_available_until"], "0/15000000");
        assert_eq!(v["wal_needed"]["segments"], 2);
    }

    #[test]
    fn segment_lists_collapse_runs() {
        let s = |n: &str| WalSegmentName::parse(n).unwrap();
        assert_eq!(
            describe_segments(&[
                s("000000010000000000000004"),
                s("000000010000000000000006"),
                s("000000010000000000000007"),
                s("000000010000000000000008"),
            ]),
            "000000010000000000000004, 000000010000000000000006..000000010000000000000008"
        );
    }
}
