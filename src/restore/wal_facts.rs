//! Reads the little WAL that [`super::reachable`] decides on: the newest archived segments on
//! the planned timeline path (for time, xid and name targets), and the parent's WAL after a
//! branch point the path leaves (for time targets whose timeline was not given).
//!
//! Cost is bounded, because a restore must not download its archive twice: from the end of the
//! archive backwards, a scan stops as soon as the target's question is answered — the newest
//! segment holding a commit or abort (time), holding a running-transactions record (xid), or
//! holding the restore point (name) — and after at most [`END_SCAN_SEGMENTS`] segments (256 MiB
//! of WAL at the default size), never before the backup's first segment. A name target is
//! therefore refused as absent only when the WAL from the backup's start to the end of the
//! archive is that short; otherwise the plan warns that older WAL was not read. After a fork at
//! most [`FORK_SCAN_SEGMENTS`] of the parent are read from the branch point on. Each segment is
//! fetched whole (16 MiB in memory, two at a time: a record may run on into the next segment),
//! decoded and checked against its sha256 like `wal-fetch` does, and read by
//! [`crate::pg::wal_records`]. A segment that cannot be fetched, decoded or read to its end
//! stops the scan and is reported as what could not be checked, never as evidence.

use crate::codec;
use crate::pg::wal_records::{self, SegmentRecords, XactEndKind, xid_max};
use crate::pg::{Lsn, Timeline, WalSegmentName};
use crate::repo::wal_catalog::WalCatalog;
use crate::restore::plan::{RestorePlan, segment_source};
use crate::restore::reachable::{ArchiveEnd, ForkFacts, ReachRequest, SeenXactEnd, WalFacts};
use crate::restore::target::RecoveryTarget;
use crate::storage::Storage;
use std::time::Instant;

/// At most this many segments are read back from the end of the archive.
pub const END_SCAN_SEGMENTS: usize = 16;
/// At most this many segments of a parent timeline are read after a branch point.
pub const FORK_SCAN_SEGMENTS: usize = 4;

/// One segment to read, and how far its records belong to the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanItem {
    pub name: WalSegmentName,
    /// Records from here on belong to another history (the copy of a timeline the path leaves
    /// inside this segment).
    pub upto: Option<Lsn>,
}

/// What the target asks of the end of the archive, if anything.
fn question(target: &RecoveryTarget) -> Option<Question<'_>> {
    match target {
        RecoveryTarget::Time(_) => Some(Question::LastXactEnd),
        RecoveryTarget::Xid(_) => Some(Question::XidHorizon),
        RecoveryTarget::Name(n) => Some(Question::RestorePoint(n)),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy)]
enum Question<'a> {
    LastXactEnd,
    XidHorizon,
    RestorePoint(&'a str),
}

/// The segments to read from the end of the archive backwards, newest first: the ones recovery
/// along the plan's path replays, down to the backup's first, at most [`END_SCAN_SEGMENTS`].
pub fn end_scan(plan: &RestorePlan, wal: &WalCatalog) -> Vec<ScanItem> {
    let seg_size = wal.seg_size;
    let first = plan.backup.start_wal.segno(seg_size);
    let Some(last) = plan.wal_available_until.0.checked_sub(1) else {
        return Vec::new();
    };
    let last = Lsn(last).segment_no(seg_size);
    (first..=last)
        .rev()
        .take(END_SCAN_SEGMENTS)
        .map_while(|segno| {
            let (tli, upto) = segment_source(&plan.timeline.path, wal, segno)?;
            Some(ScanItem {
                name: WalSegmentName::from_segno(tli, segno, seg_size),
                upto,
            })
        })
        .collect()
}

/// The parent timelines the path leaves where the parent's archive holds the branch point's
/// segment or later ones: each with the segments to read from the branch point on.
pub fn fork_scans(
    plan: &RestorePlan,
    wal: &WalCatalog,
) -> Vec<(Timeline, Timeline, Lsn, Vec<ScanItem>)> {
    let seg_size = wal.seg_size;
    plan.timeline
        .path
        .windows(2)
        .filter_map(|pair| {
            let (parent, child) = (pair[0].timeline, pair[1].timeline);
            let at = pair[0].ends?;
            let segs = &wal.timelines.get(&parent)?.segments;
            let from = at.segment_no(seg_size);
            let items: Vec<ScanItem> = (from..)
                .take(FORK_SCAN_SEGMENTS)
                .take_while(|s| segs.contains_key(s))
                .map(|s| ScanItem {
                    name: WalSegmentName::from_segno(parent, s, seg_size),
                    upto: None,
                })
                .collect();
            (!items.is_empty()).then_some((parent, child, at, items))
        })
        .collect()
}

/// Reads what the target needs. Forks are read only when the operator did not choose the
/// timeline (`req.timeline_given`): a chosen one is not ambiguous.
pub async fn gather(
    storage: &dyn Storage,
    wal: &WalCatalog,
    plan: &RestorePlan,
    req: &ReachRequest,
) -> WalFacts {
    let started = Instant::now();
    let mut facts = WalFacts::default();
    let mut read = 0usize;
    // Past a hole the end of the archive is not where recovery ends (see `reachable`).
    if let Some(q) = question(&plan.target).filter(|_| plan.wal_hole.is_none()) {
        let items = end_scan(plan, wal);
        let backup_first = Some(plan.backup.start_wal.segno(wal.seg_size));
        let mut acc = EndAccumulator::new(q);
        let mut newer: Option<(WalSegmentName, Vec<u8>)> = None;
        for item in &items {
            let bytes = match fetch(storage, wal, &item.name).await {
                Ok(b) => b,
                Err(why) => {
                    acc.end.incomplete = Some(why);
                    break;
                }
            };
            read += 1;
            let next = newer
                .as_ref()
                .filter(|(n, _)| *n == item.name.next(wal.seg_size))
                .map(|(_, b)| b.as_slice());
            let records =
                wal_records::read_segment(&bytes, item.name.start_lsn(wal.seg_size), next);
            if acc.add(item, &records) {
                break;
            }
            newer = Some((item.name, bytes));
        }
        acc.end.back_to_backup = acc.end.incomplete.is_none()
            && items.len() == acc.end.segments_read.len()
            && items
                .last()
                .is_some_and(|i| Some(i.name.segno(wal.seg_size)) == backup_first);
        facts.end = Some(acc.end);
    }
    if matches!(plan.target, RecoveryTarget::Time(_)) && !req.timeline_given {
        for (parent, child, at, items) in fork_scans(plan, wal) {
            let f = read_fork(storage, wal, (parent, child, at), &items).await;
            read += f.segments_read.len();
            facts.forks.push(f);
        }
    }
    if read > 0 {
        tracing::info!(
            segments = read,
            ms = started.elapsed().as_millis() as u64,
            "read archived WAL to check that the target can be reached"
        );
    }
    facts
}

async fn read_fork(
    storage: &dyn Storage,
    wal: &WalCatalog,
    (parent, child, at): (Timeline, Timeline, Lsn),
    items: &[ScanItem],
) -> ForkFacts {
    let mut f = ForkFacts {
        parent,
        child,
        at,
        first_xact_end_after: None,
        segments_read: Vec::new(),
        incomplete: None,
    };
    // Forwards, one segment ahead: a record may run on into the next.
    let mut current = match fetch(storage, wal, &items[0].name).await {
        Ok(b) => b,
        Err(why) => {
            f.incomplete = Some(why);
            return f;
        }
    };
    for (i, item) in items.iter().enumerate() {
        let next = match items.get(i + 1) {
            Some(n) => match fetch(storage, wal, &n.name).await {
                Ok(b) => Some(b),
                Err(why) => {
                    f.incomplete = Some(why);
                    None
                }
            },
            None => None,
        };
        let records =
            wal_records::read_segment(&current, item.name.start_lsn(wal.seg_size), next.as_deref());
        f.segments_read.push(item.name.to_string());
        f.first_xact_end_after = records
            .xact_ends
            .iter()
            .find(|x| {
                x.start >= at && matches!(x.kind, XactEndKind::Commit | XactEndKind::CommitPrepared)
            })
            .map(|x| SeenXactEnd {
                time: x.time,
                xid: x.xid,
                lsn: x.start,
                timeline: parent,
            });
        if f.first_xact_end_after.is_some() {
            break;
        }
        if let wal_records::ReadEnd::Invalid(why) = &records.end {
            f.incomplete = Some(format!(
                "{} could not be read past {} ({why})",
                item.name, records.end_lsn
            ));
            break;
        }
        if f.incomplete.is_some() {
            break;
        }
        match next {
            Some(n) => current = n,
            None => break,
        }
    }
    f
}

/// Folds segments read newest first into the facts about the end of the archive.
struct EndAccumulator<'a> {
    question: Question<'a>,
    end: ArchiveEnd,
    /// The latest xid seen in segments newer than the one being added.
    newer_xid: Option<u32>,
}

impl<'a> EndAccumulator<'a> {
    fn new(question: Question<'a>) -> Self {
        EndAccumulator {
            question,
            end: ArchiveEnd::default(),
            newer_xid: None,
        }
    }

    /// Adds one segment; true when the question is answered or reading must stop.
    fn add(&mut self, item: &ScanItem, records: &SegmentRecords) -> bool {
        let records = match item.upto {
            Some(u) => records.before(u),
            None => records.clone(),
        };
        let e = &mut self.end;
        if e.segments_read.is_empty() {
            e.end = records.end_lsn;
        }
        e.segments_read.push(item.name.to_string());
        let tli = item.name.tli;
        for x in &records.xact_ends {
            let seen = SeenXactEnd {
                time: x.time,
                xid: x.xid,
                lsn: x.start,
                timeline: tli,
            };
            if e.last_xact_end.is_none_or(|l| seen.time > l.time) {
                e.last_xact_end = Some(seen);
            }
        }
        for r in records.restore_points.iter().rev() {
            e.restore_points.push((r.name.clone(), r.end));
        }
        if let Some(h) = records.xid_horizon()
            && e.xid_horizon.is_none()
        {
            e.xid_horizon = Some(match self.newer_xid {
                Some(n) => xid_max(h, n.wrapping_add(1)),
                None => h,
            });
        }
        for (_, x) in &records.xids {
            self.newer_xid = Some(self.newer_xid.map_or(*x, |n| xid_max(n, *x)));
        }
        if let wal_records::ReadEnd::Invalid(why) = &records.end {
            // A complete archived segment is valid to its end (or to an XLOG_SWITCH): what
            // the reader could not follow is not evidence of absence.
            e.incomplete = Some(format!(
                "{} could not be read past {} ({why})",
                item.name, records.end_lsn
            ));
            return true;
        }
        match self.question {
            Question::LastXactEnd => e.last_xact_end.is_some(),
            Question::XidHorizon => e.xid_horizon.is_some(),
            Question::RestorePoint(n) => e.restore_points.iter().any(|(r, _)| r == n),
        }
    }
}

/// Downloads one archived segment and decodes it, checking its sha256. Errors are text for
/// the "could not check" warnings.
async fn fetch(
    storage: &dyn Storage,
    wal: &WalCatalog,
    name: &WalSegmentName,
) -> Result<Vec<u8>, String> {
    let stored = wal
        .timelines
        .get(&name.tli)
        .and_then(|t| t.segments.get(&name.segno(wal.seg_size)))
        .map(|v| v.as_slice())
        .unwrap_or_default();
    let [one] = stored else {
        return Err(format!(
            "{name} is archived {} times, not once",
            stored.len()
        ));
    };
    let data = storage
        .get(&one.key)
        .await
        .map_err(|e| format!("cannot read {}: {e}", one.key))?;
    let sha = one.sha256;
    let key = one.key.clone();
    tokio::task::spawn_blocking(move || codec::decode_to_vec(&data, Some(&sha)))
        .await
        .map_err(|e| format!("decoding {key} failed: {e}"))?
        .map_err(|e| format!("{key}: {e}"))
}

#[cfg(test)]
mod tests;
