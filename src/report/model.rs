//! The recovery report's page model: pure code that takes what the repository holds (the
//! snapshot), the retention plan, the drill reports, the drill files' limits, `now` and the
//! number of days shown, and lays everything out on one time axis. It never reads the clock
//! or the store; [`super::html`] only draws what this decides.
//!
//! Bounded output whatever the repository's size: WAL coverage is made of the catalog's runs
//! of contiguous segments (never one element per segment), and spans, holes and marks that
//! fall within a few units of each other on the axis are merged into one element that lists
//! what it stands for. So the number of drawn elements is bounded by the chart's width
//! ([`WIDTH`]), not by the number of backups or segments.
//!
//! WAL has no time of its own in the catalog: a segment's time is when the store says it was
//! written (its archive time), and backups add their start and stop (LSN, time) pairs. Those
//! anchors, kept monotonic in LSN order, map any LSN of a timeline to a time by linear
//! interpolation ([`TimeMap`]).

use crate::drill::report::{DrillReport, Verdict as DrillVerdict};
use crate::pg::{Lsn, Timeline};
use crate::repo::snapshot::Snapshot;
use crate::retention::plan::{Decision, Plan};
use crate::status::Verdict;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use std::collections::BTreeMap;
use std::time::Duration;

/// The chart's width in SVG user units (the HTML scales it to the page).
pub const WIDTH: f64 = 1000.0;
/// Marks (backups, dumps, drills) closer than this on the axis are drawn as one.
pub const MARK_MERGE: f64 = 4.0;
/// A hole is drawn at least this wide, so one missing segment in fourteen days shows.
pub const MIN_HOLE_WIDTH: f64 = 3.0;
/// Items named in one merged mark's hover text; the rest are counted.
pub const HOVER_ITEMS: usize = 6;
/// The longest period a page shows (ten years).
pub const MAX_DAYS: u32 = 3660;
/// Holes listed as text under a timeline; the rest are counted.
pub const LISTED_HOLES: usize = 20;

/// What a drill file expects (by drill name).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub max_rto: Option<Duration>,
    pub max_rpo: Option<Duration>,
}

/// Everything the page is made from.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub snapshot: &'a Snapshot,
    /// The retention plan as of `now` (`None`: the policy could not be read).
    pub plan: Option<&'a Plan>,
    /// Drill reports, any order.
    pub drills: &'a [DrillReport],
    /// `max_rto` / `max_rpo` by drill name, from the drill files.
    pub limits: &'a BTreeMap<String, Limits>,
    /// The policy's time zone (dates are shown in UTC and in it).
    pub timezone: Tz,
    pub now: DateTime<Utc>,
    pub days: u32,
}

/// The time axis: `[from, to]` drawn over `0..WIDTH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Axis {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

impl Axis {
    /// The last `days` days before `now` (at least 1, at most [`MAX_DAYS`]).
    pub fn new(now: DateTime<Utc>, days: u32) -> Axis {
        let back = chrono::Duration::days(i64::from(days.clamp(1, MAX_DAYS)));
        Axis {
            from: now
                .checked_sub_signed(back)
                .unwrap_or(DateTime::<Utc>::MIN_UTC),
            to: now,
        }
    }

    /// Where `t` falls on the chart, clamped to it.
    pub fn x(&self, t: DateTime<Utc>) -> f64 {
        let span = (self.to - self.from).num_milliseconds().max(1) as f64;
        let at = (t - self.from).num_milliseconds() as f64;
        (at / span * WIDTH).clamp(0.0, WIDTH)
    }

    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        self.from <= t && t <= self.to
    }

    /// Whether `[a, b]` meets the axis.
    pub fn meets(&self, a: DateTime<Utc>, b: DateTime<Utc>) -> bool {
        a <= self.to && b >= self.from
    }
}

/// LSN → time for one timeline, from (LSN, time) anchors.
#[derive(Debug, Clone, Default)]
pub struct TimeMap {
    /// Sorted by LSN, times never decreasing.
    anchors: Vec<(u64, i64)>,
}

impl TimeMap {
    /// Anchors in any order; one whose time is earlier than an anchor at a lower LSN is
    /// dropped (a segment pushed again later, a skewed clock), so the map is monotonic.
    pub fn new(mut anchors: Vec<(Lsn, DateTime<Utc>)>) -> TimeMap {
        anchors.sort_by_key(|(l, t)| (l.0, *t));
        let mut out: Vec<(u64, i64)> = Vec::with_capacity(anchors.len());
        for (l, t) in anchors {
            let ms = t.timestamp_millis();
            if out.last().is_some_and(|&(_, last)| ms < last) {
                continue;
            }
            out.push((l.0, ms));
        }
        TimeMap { anchors: out }
    }

    /// The time of `lsn`: interpolated between the anchors around it, the nearest anchor's
    /// time outside them; `None` without anchors.
    pub fn at(&self, lsn: Lsn) -> Option<DateTime<Utc>> {
        let a = &self.anchors;
        let i = a.partition_point(|&(l, _)| l < lsn.0);
        let ms = if i == 0 {
            a.first()?.1
        } else if i == a.len() {
            a.last()?.1
        } else {
            let ((l0, t0), (l1, t1)) = (a[i - 1], a[i]);
            if l1 == l0 {
                t1
            } else {
                let f = (lsn.0 - l0) as f64 / (l1 - l0) as f64;
                t0 + ((t1 - t0) as f64 * f).round() as i64
            }
        };
        DateTime::from_timestamp_millis(ms)
    }
}

/// A span on the axis.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Span {
    pub x0: f64,
    pub x1: f64,
}

/// WAL coverage: runs of contiguous segments merged where they touch on the axis.
#[derive(Debug, Clone, PartialEq)]
pub struct Coverage {
    pub span: Span,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub start_lsn: Lsn,
    pub end_lsn: Lsn,
    pub segments: u64,
    /// Holes inside it too small to split it on the axis (each drawn as a hole mark).
    pub holes: usize,
}

/// One missing run of segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoleInfo {
    pub first: String,
    pub last: String,
    pub segments: u64,
    pub start_lsn: Lsn,
    pub end_lsn: Lsn,
    /// About when (from the WAL around it), when known.
    pub at: Option<DateTime<Utc>>,
}

/// Holes drawn as one red element.
#[derive(Debug, Clone, PartialEq)]
pub struct HoleMark {
    pub span: Span,
    /// The first [`HOVER_ITEMS`] holes it stands for.
    pub holes: Vec<HoleInfo>,
    pub count: usize,
}

/// What a mark stands for.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub label: String,
    pub start: DateTime<Utc>,
    pub stop: DateTime<Utc>,
    pub size: u64,
    pub stored: u64,
    pub pinned: bool,
    /// What the retention plan does with it (`None`: no plan).
    pub keep: Option<bool>,
}

/// Backups or dumps drawn as one mark.
#[derive(Debug, Clone, PartialEq)]
pub struct MarkGroup {
    pub x: f64,
    /// Every item's label (for `data-labels`).
    pub labels: Vec<String>,
    /// The first [`HOVER_ITEMS`] items.
    pub items: Vec<Item>,
    pub pinned: bool,
}

/// One drill report, as drawn and listed.
#[derive(Debug, Clone, PartialEq)]
pub struct DrillItem {
    pub label: String,
    pub drill: String,
    pub verdict: DrillVerdict,
    pub started_at: DateTime<Utc>,
    pub from: String,
    pub target: String,
    pub backup: Option<String>,
    pub rto_seconds: Option<f64>,
    pub rpo_seconds: Option<f64>,
    pub failure: Option<String>,
    pub limits: Limits,
}

/// Drills drawn as one mark: failed when any of them failed.
#[derive(Debug, Clone, PartialEq)]
pub struct DrillGroup {
    pub x: f64,
    pub verdict: DrillVerdict,
    pub items: Vec<DrillItem>,
    pub count: usize,
}

/// One PostgreSQL timeline's lane.
#[derive(Debug, Clone, PartialEq)]
pub struct Lane {
    pub timeline: Timeline,
    pub segments: u64,
    pub first_segment: Option<String>,
    pub last_segment: Option<String>,
    /// The WAL's first and last known times.
    pub wal_from: Option<DateTime<Utc>>,
    pub wal_to: Option<DateTime<Utc>>,
    pub coverage: Vec<Coverage>,
    pub hole_marks: Vec<HoleMark>,
    /// Every hole of the timeline (first [`LISTED_HOLES`]), inside the axis or not.
    pub holes: Vec<HoleInfo>,
    pub holes_total: usize,
    pub backups: Vec<MarkGroup>,
    pub drills: Vec<DrillGroup>,
}

/// The shaded PITR window.
#[derive(Debug, Clone, PartialEq)]
pub struct Pitr {
    pub span: Span,
    pub from: DateTime<Utc>,
    /// `Some`: `[retention.wal] pitr_window`; `None`: from the oldest kept backup.
    pub window_seconds: Option<u64>,
}

/// One row of the backups-and-dumps table.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// `backup` or `dump`.
    pub kind: &'static str,
    pub item: Item,
    /// The timeline (backups) or the databases (dumps).
    pub detail: String,
    /// The retention plan's reasons as a sentence (`None`: no plan).
    pub why: Option<String>,
}

/// A small chart of RTO or RPO over time.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    /// `rto` or `rpo`.
    pub metric: &'static str,
    /// (x, seconds, verdict, report label, drill name).
    pub points: Vec<(f64, f64, DrillVerdict, String, String)>,
    /// Limit lines: (drill name, seconds).
    pub limits: Vec<(String, f64)>,
    /// The top of the y axis, in seconds.
    pub y_max: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub now: DateTime<Utc>,
    pub timezone: Tz,
    pub days: u32,
    pub axis: Axis,
    pub system_identifier: String,
    pub verdict: Verdict,
    pub lanes: Vec<Lane>,
    pub dumps: Vec<MarkGroup>,
    pub dump_drills: Vec<DrillGroup>,
    pub pitr: Option<Pitr>,
    pub rows: Vec<Row>,
    /// Drill reports in the window, newest first.
    pub drills: Vec<DrillItem>,
    pub rto: Chart,
    pub rpo: Chart,
    pub warnings: Vec<String>,
}

/// Builds the page.
pub fn build(input: &Input<'_>, verdict: &Verdict) -> Page {
    let s = input.snapshot;
    let axis = Axis::new(input.now, input.days);
    let pinned = |label: &str| s.pins.iter().any(|p| p.label == label);
    let keep_of = |d: Option<&Decision>| d.map(Decision::is_keep);
    let tz_name = input.timezone.name();

    let backup_item = |b: &crate::repo::catalog::BackupSummary| Item {
        label: b.label.to_string(),
        start: b.start_time,
        stop: b.stop_time,
        size: b.total_bytes,
        stored: b.stored_bytes,
        pinned: pinned(b.label.as_str()),
        keep: keep_of(
            input
                .plan
                .and_then(|p| p.backup(b.label.as_str()))
                .map(|d| &d.decision),
        ),
    };
    let dump_item = |d: &crate::repo::dumps::DumpManifest| Item {
        label: d.label.to_string(),
        start: d.start_time,
        stop: d.stop_time,
        size: d.size(),
        stored: d.stored_size(),
        pinned: pinned(d.label.as_str()),
        keep: keep_of(
            input
                .plan
                .and_then(|p| p.dump(d.label.as_str()))
                .map(|d| &d.decision),
        ),
    };

    // Drills: those in the window, with their file's limits.
    let mut drills: Vec<DrillItem> = input
        .drills
        .iter()
        .filter(|r| axis.contains(r.started_at))
        .map(|r| DrillItem {
            label: r.label.clone(),
            drill: r.drill.clone(),
            verdict: r.verdict,
            started_at: r.started_at,
            from: r.from.clone(),
            target: r.target.kind.clone(),
            backup: r.backup.clone(),
            rto_seconds: r.rto_seconds,
            rpo_seconds: r.rpo_seconds,
            failure: r
                .failure
                .as_ref()
                .map(|f| format!("{}: {}", f.phase, f.reason)),
            limits: input.limits.get(&r.drill).copied().unwrap_or_default(),
        })
        .collect();
    drills.sort_by(|a, b| (b.started_at, &b.label).cmp(&(a.started_at, &a.label)));

    // Which lane a drill goes to: its backup's timeline, else what it reached, else the
    // current timeline; dump drills go with the dumps.
    let current = input
        .plan
        .and_then(|p| p.current_timeline)
        .or_else(|| s.wal.timelines.keys().next_back().copied());
    let drill_lane = |d: &DrillItem| -> Option<Timeline> {
        if d.from == "dump" {
            return None;
        }
        let by_backup = d
            .backup
            .as_deref()
            .and_then(|l| s.catalog.find(l))
            .map(|b| b.timeline);
        let reached = input
            .drills
            .iter()
            .find(|r| r.label == d.label)
            .and_then(|r| r.reached.as_ref())
            .map(|r| Timeline(r.timeline));
        by_backup.or(reached).or(current)
    };

    let mut tlis: Vec<Timeline> = s.wal.timelines.keys().copied().collect();
    tlis.extend(s.catalog.backups.iter().map(|b| b.timeline));
    tlis.extend(drills.iter().filter_map(drill_lane));
    tlis.sort();
    tlis.dedup();

    let lanes = tlis
        .iter()
        .map(|&tli| {
            let backups: Vec<Item> = (s.catalog.backups.iter())
                .filter(|b| b.timeline == tli && axis.contains(b.start_time))
                .map(backup_item)
                .collect();
            let tl_drills: Vec<&DrillItem> = (drills.iter())
                .filter(|d| drill_lane(d) == Some(tli))
                .collect();
            lane(s, tli, &axis, backups, &tl_drills)
        })
        .collect();

    let dumps: Vec<Item> = (s.dumps.dumps.iter())
        .filter(|d| axis.contains(d.start_time))
        .map(dump_item)
        .collect();
    let dump_drills: Vec<&DrillItem> = drills.iter().filter(|d| d.from == "dump").collect();

    let pitr = input.plan.and_then(|p| {
        let from = match p.pitr_window_seconds {
            Some(w) => input.now - chrono::Duration::seconds(w as i64),
            None => {
                let base = p.pitr_base.as_ref()?;
                s.catalog.find(base.as_str())?.stop_time
            }
        };
        (from <= axis.to).then(|| Pitr {
            span: Span {
                x0: axis.x(from),
                x1: WIDTH,
            },
            from,
            window_seconds: p.pitr_window_seconds,
        })
    });

    // The table: every backup and dump, newest first, with what keeps it.
    let mut rows: Vec<Row> = Vec::new();
    for b in &s.catalog.backups {
        rows.push(Row {
            kind: "backup",
            item: backup_item(b),
            detail: format!("timeline {}", b.timeline.0),
            why: (input.plan)
                .and_then(|p| p.backup(b.label.as_str()))
                .map(|d| d.decision.sentence(tz_name, "backup")),
        });
    }
    for d in &s.dumps.dumps {
        rows.push(Row {
            kind: "dump",
            item: dump_item(d),
            detail: (d.databases.iter())
                .map(|x| x.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            why: (input.plan)
                .and_then(|p| p.dump(d.label.as_str()))
                .map(|x| x.decision.sentence(tz_name, "dump")),
        });
    }
    rows.sort_by(|a, b| (b.item.start, &b.item.label).cmp(&(a.item.start, &a.item.label)));

    let mut warnings = s.warnings.clone();
    if let Some(p) = input.plan {
        warnings.extend(p.warnings.iter().cloned());
    }

    Page {
        now: input.now,
        timezone: input.timezone,
        days: input.days,
        axis,
        system_identifier: s.identity.system_identifier.to_string(),
        verdict: verdict.clone(),
        lanes,
        dumps: group_marks(&axis, dumps),
        dump_drills: group_drills(&axis, &dump_drills),
        pitr,
        rows,
        rto: chart("rto", &axis, &drills, |d| d.rto_seconds, |l| l.max_rto),
        rpo: chart("rpo", &axis, &drills, |d| d.rpo_seconds, |l| l.max_rpo),
        drills,
        warnings,
    }
}

fn lane(
    s: &Snapshot,
    tli: Timeline,
    axis: &Axis,
    backups: Vec<Item>,
    drills: &[&DrillItem],
) -> Lane {
    let wal = &s.wal;
    let seg_size = wal.seg_size;
    let tl = wal.timelines.get(&tli);
    let mut anchors: Vec<(Lsn, DateTime<Utc>)> = Vec::new();
    if let Some(tl) = tl {
        for (&segno, objs) in &tl.segments {
            if let Some(t) = objs.iter().filter_map(|o| o.archived_at).min() {
                anchors.push((Lsn::from_segment(segno + 1, seg_size), t));
            }
        }
    }
    for b in s.catalog.backups.iter().filter(|b| b.timeline == tli) {
        anchors.push((b.start_lsn, b.start_time));
        anchors.push((b.stop_lsn, b.stop_time));
    }
    let map = TimeMap::new(anchors);

    let ranges = wal.ranges(tli);
    let gaps = wal.gaps(tli);
    let times = |a: Lsn, b: Lsn| Some((map.at(a)?, map.at(b)?));

    // Coverage: each run on the axis, merged where runs touch.
    let mut coverage: Vec<Coverage> = Vec::new();
    for r in &ranges {
        let Some((from, to)) = times(r.start_lsn, r.end_lsn) else {
            continue;
        };
        if !axis.meets(from, to) {
            continue;
        }
        let span = Span {
            x0: axis.x(from),
            x1: axis.x(to),
        };
        match coverage.last_mut() {
            Some(c) if span.x0 <= c.span.x1 + 0.5 => {
                c.span.x1 = c.span.x1.max(span.x1);
                c.to = to;
                c.end_lsn = r.end_lsn;
                c.segments += r.segments;
                c.holes += 1;
            }
            _ => coverage.push(Coverage {
                span,
                from,
                to,
                start_lsn: r.start_lsn,
                end_lsn: r.end_lsn,
                segments: r.segments,
                holes: 0,
            }),
        }
    }

    let holes_all: Vec<HoleInfo> = gaps
        .iter()
        .map(|g| HoleInfo {
            first: g.first.clone(),
            last: g.last.clone(),
            segments: g.segments,
            start_lsn: g.start_lsn,
            end_lsn: g.end_lsn,
            at: map.at(g.start_lsn),
        })
        .collect();

    // Holes: at least MIN_HOLE_WIDTH wide, merged where they overlap.
    let mut hole_marks: Vec<HoleMark> = Vec::new();
    for h in &holes_all {
        let Some((from, to)) = times(h.start_lsn, h.end_lsn) else {
            continue;
        };
        if !axis.meets(from, to) {
            continue;
        }
        let x0 = axis.x(from).min(WIDTH - MIN_HOLE_WIDTH);
        let x1 = axis.x(to).max(x0 + MIN_HOLE_WIDTH);
        match hole_marks.last_mut() {
            Some(m) if x0 <= m.span.x1 => {
                m.span.x1 = m.span.x1.max(x1);
                m.count += 1;
                if m.holes.len() < HOVER_ITEMS {
                    m.holes.push(h.clone());
                }
            }
            _ => hole_marks.push(HoleMark {
                span: Span { x0, x1 },
                holes: vec![h.clone()],
                count: 1,
            }),
        }
    }

    let holes_total = holes_all.len();
    Lane {
        timeline: tli,
        segments: tl.map_or(0, |t| t.segments.len() as u64),
        first_segment: ranges.first().map(|r| r.first.clone()),
        last_segment: ranges.last().map(|r| r.last.clone()),
        wal_from: ranges.first().and_then(|r| map.at(r.start_lsn)),
        wal_to: ranges.last().and_then(|r| map.at(r.end_lsn)),
        coverage,
        hole_marks,
        holes: holes_all.into_iter().take(LISTED_HOLES).collect(),
        holes_total,
        backups: group_marks(axis, backups),
        drills: group_drills(axis, drills),
    }
}

/// Marks by time, merged where they fall within [`MARK_MERGE`] of the group's first.
fn group_marks(axis: &Axis, mut items: Vec<Item>) -> Vec<MarkGroup> {
    items.sort_by(|a, b| (a.start, &a.label).cmp(&(b.start, &b.label)));
    let mut out: Vec<MarkGroup> = Vec::new();
    for it in items {
        let x = axis.x(it.start);
        match out.last_mut() {
            Some(g) if x - g.x < MARK_MERGE => {
                g.labels.push(it.label.clone());
                g.pinned |= it.pinned;
                if g.items.len() < HOVER_ITEMS {
                    g.items.push(it);
                }
            }
            _ => out.push(MarkGroup {
                x,
                labels: vec![it.label.clone()],
                pinned: it.pinned,
                items: vec![it],
            }),
        }
    }
    out
}

fn group_drills(axis: &Axis, drills: &[&DrillItem]) -> Vec<DrillGroup> {
    let mut sorted: Vec<&DrillItem> = drills.to_vec();
    sorted.sort_by(|a, b| (a.started_at, &a.label).cmp(&(b.started_at, &b.label)));
    let mut out: Vec<DrillGroup> = Vec::new();
    for d in sorted {
        let x = axis.x(d.started_at);
        match out.last_mut() {
            Some(g) if x - g.x < MARK_MERGE => {
                g.count += 1;
                if d.verdict == DrillVerdict::Failed {
                    g.verdict = DrillVerdict::Failed;
                }
                if g.items.len() < HOVER_ITEMS {
                    g.items.push(d.clone());
                }
            }
            _ => out.push(DrillGroup {
                x,
                verdict: d.verdict,
                items: vec![d.clone()],
                count: 1,
            }),
        }
    }
    out
}

fn chart(
    metric: &'static str,
    axis: &Axis,
    drills: &[DrillItem],
    value: impl Fn(&DrillItem) -> Option<f64>,
    limit: impl Fn(&Limits) -> Option<Duration>,
) -> Chart {
    let mut points: Vec<(f64, f64, DrillVerdict, String, String)> = drills
        .iter()
        .filter_map(|d| {
            let v = value(d)?;
            Some((
                axis.x(d.started_at),
                v,
                d.verdict,
                d.label.clone(),
                d.drill.clone(),
            ))
        })
        .collect();
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut limits: BTreeMap<String, f64> = BTreeMap::new();
    for d in drills {
        if let Some(l) = limit(&d.limits) {
            limits.insert(d.drill.clone(), l.as_secs_f64());
        }
    }
    let limits: Vec<(String, f64)> = limits.into_iter().collect();
    let top = (points.iter().map(|p| p.1))
        .chain(limits.iter().map(|l| l.1))
        .fold(0.0_f64, f64::max);
    Chart {
        metric,
        points,
        limits,
        y_max: if top > 0.0 { top * 1.15 } else { 1.0 },
    }
}

#[cfg(test)]
mod tests;
