//! The cheap half of `verify`: checks made from what is already known without reading data —
//! the snapshot (backup summaries, dump manifests, the WAL catalog, parsed history files), the
//! full backup manifests, and one listing each of `blocks/` and `dumps/`. Pure: no IO, no
//! clock, so every rule is tested on hand-built inputs.
//!
//! What a backup needs of the WAL:
//! - its own range, `start_wal..=stop_wal` on its timeline: without it the backup cannot be
//!   restored at all (it never reaches consistency);
//! - its recoverable range: from `start_wal` onward along every timeline it leads to (its own,
//!   and each timeline whose history passes through the backup's stop point), to the newest
//!   segment archived on that timeline. On a parent timeline the path ends at the segment
//!   before the switch point; the child holds its own copy of the switch segment (PostgreSQL
//!   copies it at promotion and archives the parent's as `.partial`). A hole there cuts point
//!   in time recovery beyond it short. `pitr_from` narrows this to the backups at or after the
//!   given one (the retention plan's PITR base): older ones are checked for their own range only.
//!
//! The [`Dependents`] index built here answers, for any block, WAL segment or dump object
//! found bad later (by a read), what it breaks.

use crate::codec::Sha256Digest;
use crate::pg::history::TimelineHistory;
use crate::pg::{Lsn, Timeline, WalFileName, WalSegmentName};
use crate::repo::catalog::{BackupSummary, InProgressMarker};
use crate::repo::dumps::DumpManifest;
use crate::repo::label::Label;
use crate::repo::layout::{self, DumpKey};
use crate::repo::manifest::Manifest;
use crate::repo::snapshot::Snapshot;
use crate::repo::wal_catalog::WalCatalog;
use crate::storage::ObjectMeta;
use crate::verify::report::{Breaks, BrokenRange, Checked, Orphans, Problem, ProblemKind};
use std::collections::{BTreeMap, BTreeSet};

/// Everything the listing checks look at.
pub struct Listed<'a> {
    pub snapshot: &'a Snapshot,
    /// The full manifests of the complete backups that could be read, oldest first.
    pub manifests: &'a [Manifest],
    /// A listing of `blocks/`, taken after the manifests were read (so every block a read
    /// manifest references was uploaded before it).
    pub blocks: &'a [ObjectMeta],
    /// A listing of `dumps/`, taken after the dump manifests were read.
    pub dumps: &'a [ObjectMeta],
    /// The in-progress markers of dumps without a manifest, by label (`None`: unreadable).
    pub dump_markers: &'a BTreeMap<String, Option<InProgressMarker>>,
    pub this_host: &'a str,
    /// Check recoverable ranges only from this backup on; `None`: from every backup.
    pub pitr_from: Option<&'a Label>,
}

/// An object a later run may read and hash, and how to check it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub key: String,
    pub stored_bytes: u64,
    pub check: ReadCheck,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadCheck {
    /// A block: its id is the sha256 of its bytes.
    Block(Sha256Digest),
    /// A WAL file: the sha256 in its key; the length when known (segments and partials are
    /// one segment long).
    Wal {
        name: WalFileName,
        sha256: Sha256Digest,
        len: Option<u64>,
    },
    /// A dump object: the manifest's sha256 and size of the raw pg_dump output.
    Dump { sha256: Sha256Digest, size: u64 },
}

#[derive(Debug)]
pub struct Findings {
    pub problems: Vec<Problem>,
    pub orphans: Orphans,
    pub checked: Checked,
    pub candidates: Vec<Candidate>,
    pub dependents: Dependents,
}

/// A run of segments `first..=last` on one timeline (segment numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub tli: Timeline,
    pub first: u64,
    pub last: u64,
}

impl Span {
    fn overlaps(&self, tli: Timeline, first: u64, last: u64) -> bool {
        self.tli == tli && self.first <= last && first <= self.last
    }
}

/// Who depends on what: for naming what a bad object breaks.
#[derive(Debug, Default)]
pub struct Dependents {
    seg_size: u64,
    labels: Vec<String>,
    /// Block id → indexes (into `labels`) of the backups whose restore reads it.
    blocks: BTreeMap<Sha256Digest, Vec<u32>>,
    /// Per backup: its own WAL range.
    own: Vec<Span>,
    /// Per backup: the WAL its recoverable range runs through.
    paths: Vec<Vec<Span>>,
    /// Dump object key → the dump it belongs to (`<label>` or `<label>/<database>`).
    dump_objects: BTreeMap<String, String>,
}

impl Dependents {
    /// What a missing or bad block breaks.
    pub fn of_block(&self, id: &Sha256Digest) -> Breaks {
        Breaks {
            backups: self
                .blocks
                .get(id)
                .map(|ix| {
                    ix.iter()
                        .map(|&i| self.labels[i as usize].clone())
                        .collect()
                })
                .unwrap_or_default(),
            ..Breaks::default()
        }
    }

    /// What missing or bad segments `first..=last` on `tli` break.
    pub fn of_wal(&self, tli: Timeline, first: u64, last: u64) -> Breaks {
        let backups: Vec<String> = self
            .own
            .iter()
            .zip(&self.labels)
            .filter(|(s, _)| s.overlaps(tli, first, last))
            .map(|(_, l)| l.clone())
            .collect();
        let cut: Vec<String> = self
            .paths
            .iter()
            .zip(&self.labels)
            .filter(|(p, _)| p.iter().any(|s| s.overlaps(tli, first, last)))
            .map(|(_, l)| l.clone())
            .collect();
        let name = |segno| WalSegmentName::from_segno(tli, segno, self.seg_size).to_string();
        let recoverable_ranges = if cut.is_empty() {
            Vec::new()
        } else {
            vec![BrokenRange {
                timeline: tli.0,
                first_missing: name(first),
                last_missing: name(last),
                recovery_stops_at: Lsn::from_segment(first, self.seg_size).to_string(),
                cut_backups: cut,
            }]
        };
        Breaks {
            backups,
            dumps: Vec::new(),
            recoverable_ranges,
        }
    }

    /// What a missing or bad dump object breaks.
    pub fn of_dump_object(&self, key: &str) -> Breaks {
        Breaks {
            dumps: self.dump_objects.get(key).cloned().into_iter().collect(),
            ..Breaks::default()
        }
    }

    /// What a bad WAL file breaks (only segments are read by recovery).
    pub fn of_wal_file(&self, name: &WalFileName) -> Breaks {
        match name {
            WalFileName::Segment(seg) => {
                let n = seg.segno(self.seg_size);
                self.of_wal(seg.tli, n, n)
            }
            _ => Breaks::default(),
        }
    }
}

/// Runs every listing check.
pub fn check(l: &Listed<'_>) -> Findings {
    let snap = l.snapshot;
    let seg_size = snap.identity.wal_segment_size;
    let mut problems = Vec::new();
    let mut orphans = Orphans::default();
    let mut candidates = Vec::new();
    let mut dependents = Dependents {
        seg_size,
        ..Dependents::default()
    };

    // Blocks: every referenced block exists; unreferenced ones are orphans.
    for (i, m) in l.manifests.iter().enumerate() {
        dependents.labels.push(m.label.clone());
        for id in m.block_ids() {
            let users = dependents.blocks.entry(*id).or_default();
            if users.last() != Some(&(i as u32)) {
                users.push(i as u32);
            }
        }
    }
    let mut stored: BTreeMap<Sha256Digest, u64> = BTreeMap::new();
    for obj in l.blocks {
        match layout::parse_block_key(&obj.key) {
            Some(id) if dependents.blocks.contains_key(&id) => {
                stored.insert(id, obj.size);
            }
            _ => {
                orphans.blocks += 1;
                orphans.block_bytes += obj.size;
            }
        }
    }
    for id in dependents.blocks.keys() {
        match stored.get(id) {
            Some(&size) => candidates.push(Candidate {
                key: layout::block_key(id),
                stored_bytes: size,
                check: ReadCheck::Block(*id),
            }),
            None => problems.push(Problem {
                kind: ProblemKind::BlockMissing,
                object: layout::block_key(id),
                detail: "the block is referenced by a manifest but is not in the repository".into(),
                breaks: dependents.of_block(id),
            }),
        }
    }

    // WAL: each backup's own range and its recoverable range.
    for m in l.manifests {
        // Manifests are loaded for the snapshot's backups, so each has its summary.
        let Some(b) = snap.catalog.find(&m.label) else {
            dependents.own.push(Span {
                tli: Timeline(0),
                first: 1,
                last: 0,
            });
            dependents.paths.push(Vec::new());
            continue;
        };
        let own = own_range(b, seg_size);
        let follow = l.pitr_from.is_none_or(|from| b.label >= *from);
        let path = if follow {
            recovery_path(b, &snap.histories, &snap.wal)
        } else {
            vec![own]
        };
        dependents.own.push(own);
        dependents.paths.push(path);
    }
    for (tli, first, last) in missing_runs(&dependents.paths, &snap.wal) {
        let name = |segno| WalSegmentName::from_segno(tli, segno, seg_size).to_string();
        let object = if first == last {
            name(first)
        } else {
            format!("{} to {}", name(first), name(last))
        };
        problems.push(Problem {
            kind: ProblemKind::WalMissing,
            object,
            detail: format!(
                "{} of timeline {} not archived",
                crate::units::count(last - first + 1, "segment is", "segments are"),
                tli.0
            ),
            breaks: dependents.of_wal(tli, first, last),
        });
    }
    for objs in snap.wal.conflicts() {
        let name = objs[0].name.clone();
        problems.push(Problem {
            kind: ProblemKind::WalConflict,
            object: name.to_string(),
            detail: format!(
                "archived {} times with different content: {}",
                objs.len(),
                objs.iter()
                    .map(|o| o.key.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            breaks: dependents.of_wal_file(&name),
        });
    }
    let mut wal_files = 0u64;
    for tl in snap.wal.timelines.values() {
        let segments = tl.segments.values().flatten();
        for s in segments.chain(&tl.partials).chain(&tl.backup_files) {
            wal_files += 1;
            let len = match s.name {
                WalFileName::Segment(_) | WalFileName::Partial(_) => Some(seg_size),
                _ => None,
            };
            candidates.push(Candidate {
                key: s.key.clone(),
                stored_bytes: s.stored_bytes,
                check: ReadCheck::Wal {
                    name: s.name.clone(),
                    sha256: s.sha256,
                    len,
                },
            });
        }
        wal_files += tl.history.len() as u64;
    }
    orphans.wal_keys = snap.wal.foreign.iter().map(|o| o.key.clone()).collect();
    problems.extend(history_problems(snap));

    // Dumps: every object of a complete dump is there with its stored size.
    let dump_listing: BTreeMap<&str, u64> =
        l.dumps.iter().map(|o| (o.key.as_str(), o.size)).collect();
    for d in &snap.dumps.dumps {
        check_dump(
            d,
            &dump_listing,
            &mut dependents,
            &mut problems,
            &mut candidates,
        );
    }

    // Orphans: directories without a manifest whose writer is known to be gone.
    for m in &snap.catalog.markers {
        if m.writer_is_gone(l.this_host) == Some(true) {
            orphans.backups.push(m.label.clone());
        }
    }
    let dump_labels_with_marker: BTreeSet<String> = l
        .dumps
        .iter()
        .filter_map(|o| match layout::parse_dump_key(&o.key) {
            Some(DumpKey::InProgress(label)) => Some(label),
            _ => None,
        })
        .collect();
    for label in &snap.dumps.incomplete {
        let label = label.as_str();
        let gone = if dump_labels_with_marker.contains(label) {
            l.dump_markers
                .get(label)
                .and_then(|m| m.as_ref())
                .and_then(|m| m.writer_is_gone(l.this_host))
                == Some(true)
        } else {
            true
        };
        if gone {
            orphans.dumps.push(label.to_string());
        }
    }

    let checked = Checked {
        backups: l.manifests.len() as u64,
        dumps: snap.dumps.dumps.len() as u64,
        blocks: dependents.blocks.len() as u64,
        wal_files,
        timelines: snap.wal.timelines.len() as u64,
    };
    Findings {
        problems,
        orphans,
        checked,
        candidates,
        dependents,
    }
}

fn check_dump(
    d: &DumpManifest,
    listing: &BTreeMap<&str, u64>,
    dependents: &mut Dependents,
    problems: &mut Vec<Problem>,
    candidates: &mut Vec<Candidate>,
) {
    let label = d.label.as_str();
    let objects = std::iter::once((label.to_string(), &d.globals)).chain(
        d.databases
            .iter()
            .map(|db| (format!("{label}/{}", db.name), &db.object)),
    );
    for (owner, o) in objects {
        dependents.dump_objects.insert(o.key.clone(), owner);
        let (kind, detail) = match listing.get(o.key.as_str()) {
            Some(&size) if size == o.stored_size => {
                candidates.push(Candidate {
                    key: o.key.clone(),
                    stored_bytes: size,
                    check: ReadCheck::Dump {
                        sha256: o.sha256,
                        size: o.size,
                    },
                });
                continue;
            }
            Some(&size) => (
                ProblemKind::DumpObjectWrongSize,
                format!(
                    "stored with {size} bytes, but the dump's manifest recorded {} \
                     (truncated or replaced)",
                    o.stored_size
                ),
            ),
            None => (
                ProblemKind::DumpObjectMissing,
                "listed in the dump's manifest but not in the repository".to_string(),
            ),
        };
        problems.push(Problem {
            kind,
            object: o.key.clone(),
            detail,
            breaks: dependents.of_dump_object(&o.key),
        });
    }
}

/// A backup's own WAL range (it cannot become consistent without every segment of it).
pub fn own_range(b: &BackupSummary, seg_size: u64) -> Span {
    Span {
        tli: b.timeline,
        first: b.start_wal.segno(seg_size),
        last: b.stop_wal.segno(seg_size),
    }
}

/// The WAL a backup's recoverable range runs through: from its first segment along its own
/// timeline and every timeline it leads to, each to its newest archived segment.
pub fn recovery_path(
    b: &BackupSummary,
    histories: &BTreeMap<Timeline, TimelineHistory>,
    wal: &WalCatalog,
) -> Vec<Span> {
    let seg_size = wal.seg_size;
    let newest = |tli: Timeline| {
        wal.timelines
            .get(&tli)
            .and_then(|t| t.segments.keys().next_back().copied())
    };
    let own = own_range(b, seg_size);
    let mut spans = vec![Span {
        last: own.last.max(newest(b.timeline).unwrap_or(0)),
        ..own
    }];
    for (tli, h) in histories {
        if *tli == b.timeline || !h.contains(b.timeline, b.stop_lsn) {
            continue;
        }
        let Some(pos) = h.entries.iter().position(|e| e.tli == b.timeline) else {
            continue;
        };
        let mut from = own.first;
        for e in &h.entries[pos..] {
            let switch_seg = e.switch_lsn.segment_no(seg_size);
            if switch_seg > from {
                spans.push(Span {
                    tli: e.tli,
                    first: from,
                    last: switch_seg - 1,
                });
            }
            from = from.max(switch_seg);
        }
        if let Some(last) = newest(*tli).filter(|&n| n >= from) {
            spans.push(Span {
                tli: *tli,
                first: from,
                last,
            });
        }
    }
    spans
}

/// The runs of segments some path needs that are not archived: `(timeline, first, last)`.
pub fn missing_runs(paths: &[Vec<Span>], wal: &WalCatalog) -> Vec<(Timeline, u64, u64)> {
    // The union of every path, per timeline, as merged intervals.
    let mut by_tli: BTreeMap<Timeline, Vec<(u64, u64)>> = BTreeMap::new();
    for s in paths.iter().flatten() {
        by_tli.entry(s.tli).or_default().push((s.first, s.last));
    }
    let mut out = Vec::new();
    for (tli, mut intervals) in by_tli {
        intervals.sort();
        let mut merged: Vec<(u64, u64)> = Vec::new();
        for (f, l) in intervals {
            match merged.last_mut() {
                Some((_, last)) if f <= last.saturating_add(1) => *last = (*last).max(l),
                _ => merged.push((f, l)),
            }
        }
        let have = wal.timelines.get(&tli).map(|t| &t.segments);
        for (f, l) in merged {
            let mut run: Option<(u64, u64)> = None;
            for segno in f..=l {
                if have.is_some_and(|h| h.contains_key(&segno)) {
                    if let Some((a, b)) = run.take() {
                        out.push((tli, a, b));
                    }
                } else {
                    run = Some(run.map_or((segno, segno), |(a, _)| (a, segno)));
                }
            }
            if let Some((a, b)) = run {
                out.push((tli, a, b));
            }
        }
    }
    out
}

/// History files that cannot be used, and chains that do not hold: every timeline above 1
/// with WAL has a history file, and a history's parent (above 1) has a history file that
/// agrees with it (the parent's ancestors are the child's, minus the parent itself).
fn history_problems(snap: &Snapshot) -> Vec<Problem> {
    let mut out = Vec::new();
    for (tli, tl) in &snap.wal.timelines {
        let keys = || {
            tl.history
                .iter()
                .map(|h| h.key.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        if !tl.history.is_empty() && !snap.histories.contains_key(tli) {
            let prefix = format!("the history file of timeline {} ", tli.0);
            out.push(Problem {
                kind: ProblemKind::HistoryUnusable,
                object: keys(),
                detail: snap
                    .warnings
                    .iter()
                    .find(|w| w.starts_with(&prefix))
                    .cloned()
                    .unwrap_or_else(|| {
                        format!("the history file of timeline {} is not used", tli.0)
                    }),
                breaks: Breaks::default(),
            });
        } else if tl.history.is_empty() && tli.0 > 1 && !tl.segments.is_empty() {
            out.push(Problem {
                kind: ProblemKind::HistoryBroken,
                object: format!("timeline {}", tli.0),
                detail: format!(
                    "timeline {} has archived WAL but no history file: recovery cannot \
                     follow it from another timeline",
                    tli.0
                ),
                breaks: Breaks::default(),
            });
        }
    }
    for (tli, h) in &snap.histories {
        let Some(parent) = h.entries.last() else {
            continue;
        };
        if parent.tli.0 <= 1 {
            continue;
        }
        let ancestors = &h.entries[..h.entries.len() - 1];
        let detail = match snap.histories.get(&parent.tli) {
            Some(ph) => {
                let agree = ph.entries.len() == ancestors.len()
                    && ph
                        .entries
                        .iter()
                        .zip(ancestors)
                        .all(|(a, b)| a.tli == b.tli && a.switch_lsn == b.switch_lsn);
                if agree {
                    continue;
                }
                format!(
                    "the history of timeline {} does not agree with that of its parent \
                     timeline {} about their common ancestors",
                    tli.0, parent.tli.0
                )
            }
            // Stored but unusable: reported above.
            None if snap
                .wal
                .timelines
                .get(&parent.tli)
                .is_some_and(|t| !t.history.is_empty()) =>
            {
                continue;
            }
            None => format!(
                "the history of timeline {} names parent timeline {}, whose history file is \
                 not archived",
                tli.0, parent.tli.0
            ),
        };
        out.push(Problem {
            kind: ProblemKind::HistoryBroken,
            object: format!("timeline {}", tli.0),
            detail,
            breaks: Breaks::default(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::label::Label;
    use chrono::Utc;

    const SEG: u64 = 16 << 20;

    fn wal(segs: &[(u32, u64)]) -> WalCatalog {
        let objs: Vec<ObjectMeta> = segs
            .iter()
            .map(|&(t, s)| {
                let n = WalFileName::Segment(WalSegmentName::from_segno(Timeline(t), s, SEG));
                ObjectMeta::new(
                    layout::wal_key(&n, &Sha256Digest::of(n.to_string().as_bytes())),
                    1,
                )
            })
            .collect();
        WalCatalog::from_listing(&objs, SEG)
    }

    fn backup(label: &str, tli: u32, start: u64, stop: u64) -> BackupSummary {
        let seg = |s| WalSegmentName::from_segno(Timeline(tli), s, SEG);
        BackupSummary {
            label: Label::parse(label).unwrap(),
            timeline: Timeline(tli),
            start_lsn: Lsn::from_segment(start, SEG),
            stop_lsn: Lsn(Lsn::from_segment(stop, SEG).0 + 100),
            start_wal: seg(start),
            stop_wal: seg(stop),
            start_time: Utc::now(),
            stop_time: Utc::now(),
            total_bytes: 0,
            stored_bytes: 0,
            files: 0,
            bad_pages: 0,
            data_checksums: false,
        }
    }

    #[test]
    fn the_recoverable_range_follows_the_timelines_a_backup_leads_to() {
        // Timeline 1: segments 2..=9 archived; timeline 2 branched at segment 6 (mid-segment)
        // and has 6..=8; timeline 3 branched from 1 at segment 4, before the backup stopped.
        let w = wal(&[
            (1, 2),
            (1, 3),
            (1, 4),
            (1, 5),
            (1, 6),
            (1, 7),
            (1, 9),
            (2, 6),
            (2, 8),
        ]);
        let mut histories = BTreeMap::new();
        histories.insert(
            Timeline(2),
            TimelineHistory::parse(Timeline(2), "1\t0/6000100\tx\n").unwrap(),
        );
        histories.insert(
            Timeline(3),
            TimelineHistory::parse(Timeline(3), "1\t0/2000000\tx\n").unwrap(),
        );
        let b = backup("20261201T000000Z", 1, 3, 4);
        let path = recovery_path(&b, &histories, &w);
        assert_eq!(
            path,
            vec![
                Span {
                    tli: Timeline(1),
                    first: 3,
                    last: 9
                },
                Span {
                    tli: Timeline(1),
                    first: 3,
                    last: 5
                },
                Span {
                    tli: Timeline(2),
                    first: 6,
                    last: 8
                },
            ],
            "timeline 3 left timeline 1 before the backup stopped: not on its way"
        );
        let missing = missing_runs(std::slice::from_ref(&path), &w);
        assert_eq!(missing, vec![(Timeline(1), 8, 8), (Timeline(2), 7, 7)]);

        let deps = Dependents {
            seg_size: SEG,
            labels: vec![b.label.to_string(), "20261202T000000Z".into()],
            own: vec![
                own_range(&b, SEG),
                Span {
                    tli: Timeline(1),
                    first: 8,
                    last: 8,
                },
            ],
            paths: vec![
                path,
                vec![Span {
                    tli: Timeline(1),
                    first: 8,
                    last: 9,
                }],
            ],
            ..Dependents::default()
        };
        let breaks = deps.of_wal(Timeline(1), 8, 8);
        assert_eq!(breaks.backups, vec!["20261202T000000Z".to_string()]);
        assert_eq!(breaks.recoverable_ranges.len(), 1);
        let r = &breaks.recoverable_ranges[0];
        assert_eq!(r.first_missing, "000000010000000000000008");
        assert_eq!(r.recovery_stops_at, "0/8000000");
        assert_eq!(
            r.cut_backups,
            vec![
                "20261201T000000Z".to_string(),
                "20261202T000000Z".to_string()
            ]
        );
        assert!(deps.of_wal(Timeline(2), 1, 5).is_empty());
    }

    #[test]
    fn missing_runs_merge_overlapping_paths_and_report_each_hole_once() {
        let w = wal(&[(1, 1), (1, 2), (1, 5), (1, 9)]);
        let a = vec![Span {
            tli: Timeline(1),
            first: 1,
            last: 9,
        }];
        let b = vec![Span {
            tli: Timeline(1),
            first: 4,
            last: 9,
        }];
        assert_eq!(
            missing_runs(&[a, b], &w),
            vec![(Timeline(1), 3, 4), (Timeline(1), 6, 8)]
        );
        assert!(missing_runs(&[], &w).is_empty());
    }
}
