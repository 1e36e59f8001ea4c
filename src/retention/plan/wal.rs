//! Which WAL the plan keeps, per timeline, with a reason per range. Rules (issue 12, item 2):
//! - while no complete backup exists, nothing is deleted (pgBackRest #680, Barman #712), and
//!   the WAL archived before the oldest complete backup (on its timeline's path) stays for one
//!   PITR window after that backup stopped: a repository's first backup never purges the
//!   older archive at once (it may serve a base backup taken by other means). Once the oldest
//!   backup is older than the window — or at once without a window, where DESIGN.md keeps
//!   "all WAL from the oldest kept backup on" — that WAL goes too: no pgward restore can use
//!   it, and operators expect it gone (pgBackRest #2034, #1349 are complaints that it stayed).
//!   The WAL of expired backups, from the oldest backup's start on, goes;
//! - every kept backup's start..stop segments, on its timeline;
//! - from the recoverable base on, along the path (history) of the current timeline and of
//!   every timeline holding a kept backup. The base is the PITR base (the newest backup that
//!   stopped at or before `now − pitr_window`), else the oldest kept backup; a kept timeline
//!   whose path does not pass the base (a branch off before it, a reset) is kept from its own
//!   oldest kept backup on (pg_probackup #69: a child timeline is never wiped);
//! - everything at or after the start of the newest complete backup, on its timeline and the
//!   timelines that branch off it later; a live in-progress backup started after it, so the
//!   same range keeps its WAL too;
//! - a hold keeps its `wal_from` onward (that timeline and the ones branching off it later);
//! - a timeline that holds no kept backup and is not current is deleted only below the base:
//!   by segment on a timeline whose history passes through the base, never on one that
//!   branched off before it (a restore of an older backup, promoted, is the production
//!   timeline until its first backup), and by time on one that shares no history with it
//!   (after a reset: deleted whole when all its backups are older than the base);
//! - `.partial` and `.backup` files inside kept ranges; the history files of kept timelines,
//!   of timelines that keep WAL, and of all their ancestors.
//!
//! Positions are compared only as segment numbers on one timeline's path; which backup is
//! newest or oldest is decided by time, never by timeline or LSN order, which lie after a
//! pg_upgrade-like reset (WAL-G #636).

use super::{
    HistoryDecision, HistoryFileDecision, HistoryReason, Hold, WalDecision, WalFileDecision,
    WalRangeDecision, WalReason,
};
use crate::pg::history::TimelineHistory;
use crate::pg::{Lsn, Timeline, WalSegmentName};
use crate::repo::catalog::BackupSummary;
use crate::repo::label::Label;
use crate::repo::wal_catalog::WalCatalog;
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

pub(super) struct WalInput<'a> {
    pub wal: &'a WalCatalog,
    pub histories: &'a BTreeMap<Timeline, TimelineHistory>,
    /// Complete backups, oldest first by time.
    pub backups: &'a [&'a BackupSummary],
    pub kept: &'a [bool],
    pub newest: Option<usize>,
    pub base: Option<usize>,
    pub pitr_base: Option<usize>,
    pub window: Option<Duration>,
    pub now: DateTime<Utc>,
    pub live_in_progress: &'a [Label],
    pub holds: &'a [Hold],
}

pub(super) struct WalPlan {
    pub ranges: Vec<WalRangeDecision>,
    pub files: Vec<WalFileDecision>,
    pub histories: Vec<HistoryFileDecision>,
    pub current_timeline: Option<Timeline>,
    pub wal_keys: Vec<String>,
    pub history_keys: Vec<String>,
    pub freed_bytes: u64,
}

/// One step of a timeline's path: `tli` up to `end` (its switch point; `None` for the last).
type Step = (Timeline, Option<Lsn>);

struct Keeps {
    seg_size: u64,
    by_tli: BTreeMap<Timeline, Vec<(u64, u64, WalReason)>>,
}

impl Keeps {
    fn add(&mut self, tli: Timeline, lo: u64, hi: u64, why: &WalReason) {
        if lo <= hi {
            self.by_tli
                .entry(tli)
                .or_default()
                .push((lo, hi, why.clone()));
        }
    }

    /// From segment `from` of `from_tli` onward along `path`.
    fn along(&mut self, path: &[Step], from_tli: Timeline, from: u64, why: &WalReason) {
        let Some(at) = path.iter().position(|(t, _)| *t == from_tli) else {
            return;
        };
        let seg_size = self.seg_size;
        let seg = |l: Lsn| l.segment_no(seg_size);
        for j in at..path.len() {
            let lo = if j == at {
                from
            } else {
                path[j - 1].1.map(seg).unwrap_or(0)
            };
            let hi = path[j].1.map(seg).unwrap_or(u64::MAX);
            self.add(path[j].0, lo, hi, why);
        }
    }

    fn reasons(&self, tli: Timeline, segno: u64) -> Vec<WalReason> {
        let mut out: Vec<WalReason> = Vec::new();
        for (lo, hi, why) in self.by_tli.get(&tli).into_iter().flatten() {
            if (*lo..=*hi).contains(&segno) && !out.contains(why) {
                out.push(why.clone());
            }
        }
        out
    }
}

fn path(tli: Timeline, histories: &BTreeMap<Timeline, TimelineHistory>) -> Vec<Step> {
    let mut p: Vec<Step> = histories
        .get(&tli)
        .map(|h| {
            h.entries
                .iter()
                .map(|e| (e.tli, Some(e.switch_lsn)))
                .collect()
        })
        .unwrap_or_default();
    p.push((tli, None));
    p
}

fn on_path(p: &[Step], tli: Timeline, lsn: Lsn) -> bool {
    p.iter()
        .any(|(t, end)| *t == tli && end.is_none_or(|e| lsn <= e))
}

/// Timelines that branch off `tli` at or after `lsn`.
fn descendants(
    tli: Timeline,
    lsn: Lsn,
    histories: &BTreeMap<Timeline, TimelineHistory>,
) -> Vec<Timeline> {
    histories
        .iter()
        .filter(|(d, h)| **d != tli && h.contains(tli, lsn))
        .map(|(d, _)| *d)
        .collect()
}

pub(super) fn plan_wal(input: &WalInput<'_>) -> WalPlan {
    let wal = input.wal;
    let seg_size = wal.seg_size;
    let segno = |s: &WalSegmentName| s.segno(seg_size);
    let mut keeps = Keeps {
        seg_size,
        by_tli: BTreeMap::new(),
    };
    let b = input.backups;
    let mut lines: BTreeSet<Timeline> = BTreeSet::new();
    let mut current_timeline = None;

    let no_backup = input.newest.is_none();
    if let Some(n) = input.newest {
        let newest = b[n];
        let current = descendants(newest.timeline, newest.stop_lsn, input.histories)
            .into_iter()
            .chain([newest.timeline])
            .max()
            .unwrap_or(newest.timeline);
        current_timeline = Some(current);
        lines.insert(current);
        for (i, k) in b.iter().enumerate() {
            if input.kept[i] {
                lines.insert(k.timeline);
                keeps.add(
                    k.timeline,
                    segno(&k.start_wal),
                    segno(&k.stop_wal),
                    &WalReason::BackupRange {
                        label: k.label.clone(),
                    },
                );
            }
        }
        for &t in &lines {
            let p = path(t, input.histories);
            let from = input
                .base
                .filter(|&i| on_path(&p, b[i].timeline, b[i].stop_lsn))
                .or_else(|| {
                    (0..b.len())
                        .find(|&i| input.kept[i] && on_path(&p, b[i].timeline, b[i].stop_lsn))
                });
            if let Some(i) = from {
                let why = WalReason::Recoverable {
                    base: b[i].label.clone(),
                    window_seconds: input
                        .window
                        .filter(|_| input.pitr_base == Some(i))
                        .map(|w| w.as_secs()),
                };
                keeps.along(&p, b[i].timeline, segno(&b[i].start_wal), &why);
            }
        }
        let after_newest = std::iter::once(WalReason::AfterNewestBackup {
            label: newest.label.clone(),
        })
        .chain(
            input
                .live_in_progress
                .iter()
                .map(|l| WalReason::InProgressBackup { label: l.clone() }),
        );
        let from = segno(&newest.start_wal);
        let tails: Vec<Timeline> = descendants(newest.timeline, newest.stop_lsn, input.histories)
            .into_iter()
            .chain([newest.timeline])
            .collect();
        for why in after_newest {
            for &t in &tails {
                keeps.add(t, from, u64::MAX, &why);
            }
        }
        // The WAL before the oldest complete backup of each kept line (and of the oldest
        // backup of all) stays.
        let mut firsts: Vec<usize> = vec![0];
        for &t in &lines {
            let p = path(t, input.histories);
            firsts.extend((0..b.len()).find(|&i| on_path(&p, b[i].timeline, b[i].stop_lsn)));
        }
        firsts.sort();
        firsts.dedup();
        // Only for one PITR window after that backup stopped (see the module header).
        let within_window = |i: usize| {
            input.window.is_some_and(|w| {
                chrono::Duration::from_std(w).is_ok_and(|w| b[i].stop_time > input.now - w)
            })
        };
        firsts.retain(|&i| within_window(i));
        for i in firsts {
            let why = WalReason::BeforeOldestBackup {
                label: b[i].label.clone(),
            };
            let before = segno(&b[i].start_wal);
            let mut lo = 0;
            for (t, end) in path(b[i].timeline, input.histories) {
                let hi = end
                    .map(|e| e.segment_no(seg_size))
                    .unwrap_or(u64::MAX)
                    .min(before.saturating_sub(1));
                if before > 0 {
                    keeps.add(t, lo, hi, &why);
                }
                lo = hi;
            }
        }
        if let Some(base) = input.base {
            let why = WalReason::BranchNotBelowBase {
                base: b[base].label.clone(),
            };
            let base_path: BTreeSet<Timeline> = path(b[base].timeline, input.histories)
                .into_iter()
                .map(|(t, _)| t)
                .collect();
            for &t in wal.timelines.keys() {
                if lines.contains(&t) {
                    continue;
                }
                let t_path = path(t, input.histories);
                let related = t_path.iter().any(|(s, _)| base_path.contains(s));
                if related {
                    // Cut below the base when this timeline's history passes through it (it
                    // branched off after the base started), or when it is older than the
                    // base's timeline (a dead branch: PostgreSQL numbers a new timeline
                    // above every one it finds). A newer timeline that branched off before
                    // the base — a restore of an older backup, promoted, with no backup of
                    // its own yet: the production timeline — shares nothing with the base
                    // after its branch point, and segment numbers below the base's are its
                    // newest WAL: it is kept whole.
                    let base_b = b[base];
                    let passes_base = t_path.iter().any(|(s, end)| {
                        *s == base_b.timeline && end.is_none_or(|e| e > base_b.start_lsn)
                    });
                    let from = if passes_base || t < base_b.timeline {
                        segno(&base_b.start_wal)
                    } else {
                        0
                    };
                    keeps.add(t, from, u64::MAX, &why);
                    continue;
                }
                // No history links it to the base (a reset): positions cannot be compared,
                // so time decides. A timeline whose backups all started before the base is
                // below it; one without backups, or with a later one, is kept whole.
                let mine: Vec<&&BackupSummary> = b.iter().filter(|k| k.timeline == t).collect();
                let older =
                    !mine.is_empty() && mine.iter().all(|k| k.start_time < b[base].start_time);
                if !older {
                    keeps.add(t, 0, u64::MAX, &why);
                }
            }
        }
    }
    for h in input.holds {
        let Some((tli, seg)) = h.wal_from else {
            continue;
        };
        let why = WalReason::Held {
            label: h.label.clone(),
            holder: h.holder.clone(),
        };
        let lsn = seg.start_lsn(seg_size);
        for t in descendants(tli, lsn, input.histories)
            .into_iter()
            .chain([tli])
        {
            keeps.add(t, segno(&seg), u64::MAX, &why);
        }
    }
    let reasons_at = |tli: Timeline, s: u64| -> Vec<WalReason> {
        if no_backup {
            vec![WalReason::NoCompleteBackup]
        } else {
            keeps.reasons(tli, s)
        }
    };
    let decision = |r: Vec<WalReason>| {
        if r.is_empty() {
            WalDecision::Delete
        } else {
            WalDecision::Keep { reasons: r }
        }
    };

    let mut out = WalPlan {
        ranges: Vec::new(),
        files: Vec::new(),
        histories: Vec::new(),
        current_timeline,
        wal_keys: Vec::new(),
        history_keys: Vec::new(),
        freed_bytes: 0,
    };
    let mut keeps_wal: BTreeSet<Timeline> = BTreeSet::new();
    for (&tli, tl) in &wal.timelines {
        let mut open: Option<WalRangeDecision> = None;
        let mut prev: Option<u64> = None;
        for (&s, objs) in &tl.segments {
            let d = decision(reasons_at(tli, s));
            let bytes: u64 = objs.iter().map(|o| o.stored_bytes).sum();
            if d == WalDecision::Delete {
                out.wal_keys.extend(objs.iter().map(|o| o.key.clone()));
                out.freed_bytes += bytes;
            } else {
                keeps_wal.insert(tli);
            }
            let name = WalSegmentName::from_segno(tli, s, seg_size);
            match &mut open {
                Some(r) if prev == Some(s.wrapping_sub(1)) && r.decision == d => {
                    r.last = name;
                    r.segments += 1;
                    r.stored_bytes += bytes;
                }
                _ => {
                    out.ranges.extend(open.take());
                    open = Some(WalRangeDecision {
                        timeline: tli,
                        first: name,
                        last: name,
                        segments: 1,
                        stored_bytes: bytes,
                        decision: d,
                    });
                }
            }
            prev = Some(s);
        }
        out.ranges.extend(open);
        for f in tl.partials.iter().chain(&tl.backup_files) {
            let Some(seg) = f.name.segment() else {
                continue;
            };
            let d = decision(reasons_at(tli, segno(&seg)));
            if d == WalDecision::Delete {
                out.wal_keys.push(f.key.clone());
                out.freed_bytes += f.stored_bytes;
            } else {
                keeps_wal.insert(tli);
            }
            out.files.push(WalFileDecision {
                name: f.name.to_string(),
                stored_bytes: f.stored_bytes,
                decision: d,
            });
        }
    }

    // History files: kept timelines, timelines keeping WAL, and their ancestors.
    for (&tli, tl) in &wal.timelines {
        if tl.history.is_empty() {
            continue;
        }
        let mut reasons = Vec::new();
        if no_backup {
            reasons.push(HistoryReason::NoCompleteBackup);
        }
        if lines.contains(&tli) {
            reasons.push(HistoryReason::KeptTimeline);
        }
        if keeps_wal.contains(&tli) {
            reasons.push(HistoryReason::KeepsWal);
        }
        for &t in lines.iter().chain(&keeps_wal) {
            let why = HistoryReason::AncestorOf { timeline: t };
            if t != tli
                && path(t, input.histories).iter().any(|(s, _)| *s == tli)
                && !reasons.contains(&why)
            {
                reasons.push(why);
            }
        }
        let bytes = tl.history.iter().map(|h| h.stored_bytes).sum();
        let decision = if reasons.is_empty() {
            out.history_keys
                .extend(tl.history.iter().map(|h| h.key.clone()));
            out.freed_bytes += bytes;
            HistoryDecision::Delete
        } else {
            HistoryDecision::Keep { reasons }
        };
        out.histories.push(HistoryFileDecision {
            timeline: tli,
            stored_bytes: bytes,
            decision,
        });
    }
    out
}
