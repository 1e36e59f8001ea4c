//! The page model from hand-built snapshots: where WAL, holes, marks and drills land on the
//! axis, what the table says keeps each item, and that the drawn elements stay bounded for a
//! repository of 1000 backups and 100k segments.

use super::*;
use crate::codec::Sha256Digest;
use crate::drill::report::testing::sample as drill_sample;
use crate::pg::{WalFileName, WalSegmentName};
use crate::repo::catalog::{BackupCatalog, BackupSummary};
use crate::repo::dumps::DumpCatalog;
use crate::repo::identity::RepoIdentity;
use crate::repo::label::Label;
use crate::repo::layout;
use crate::repo::pins::Pin;
use crate::repo::wal_catalog::WalCatalog;
use crate::retention::plan::{self as retention_plan, KeepReason, PlanInput};
use crate::retention::policy::Policy;
use crate::status::{Level, Reason};
use crate::storage::ObjectMeta;
use std::collections::BTreeSet;

const SEG: u64 = 16 << 20;

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().to_utc()
}

fn now() -> DateTime<Utc> {
    t("2026-12-02T06:00:00Z")
}

fn minutes(n: i64) -> chrono::Duration {
    chrono::Duration::minutes(n)
}

/// Segment `segno` of timeline `tli`, archived at `at`.
fn seg(tli: u32, segno: u64, at: DateTime<Utc>) -> ObjectMeta {
    let name = WalSegmentName::from_segno(Timeline(tli), segno, SEG);
    ObjectMeta {
        key: layout::wal_key(
            &WalFileName::Segment(name),
            &Sha256Digest::of(&segno.to_be_bytes()),
        ),
        size: 1000,
        last_modified: Some(at),
    }
}

/// A backup on `tli` started at `at` spanning segments `start..=stop`.
fn backup(at: DateTime<Utc>, tli: u32, start: u64, stop: u64) -> BackupSummary {
    let tl = Timeline(tli);
    BackupSummary {
        label: Label::for_start(at),
        timeline: tl,
        start_lsn: Lsn(Lsn::from_segment(start, SEG).0 + 0x28),
        stop_lsn: Lsn(Lsn::from_segment(stop, SEG).0 + 0x100),
        start_wal: WalSegmentName::from_segno(tl, start, SEG),
        stop_wal: WalSegmentName::from_segno(tl, stop, SEG),
        start_time: at,
        stop_time: at + chrono::Duration::seconds(30),
        total_bytes: 1 << 30,
        stored_bytes: 1 << 20,
        files: 1,
        bad_pages: 0,
        data_checksums: true,
    }
}

fn snapshot(backups: Vec<BackupSummary>, wal: Vec<ObjectMeta>, pins: Vec<Pin>) -> Snapshot {
    Snapshot {
        identity: RepoIdentity {
            format_version: layout::FORMAT_VERSION,
            system_identifier: 7_400_000_000_000_000_001,
            pg_major: 15,
            wal_segment_size: SEG,
            block_size: 1 << 20,
            created_at: String::new(),
            created_by: String::new(),
        },
        catalog: BackupCatalog {
            backups,
            in_progress: vec![],
            markers: vec![],
        },
        dumps: DumpCatalog {
            dumps: vec![],
            incomplete: vec![],
            markers: vec![],
        },
        wal: WalCatalog::from_listing(&wal, SEG),
        histories: BTreeMap::new(),
        pins,
        warnings: vec![],
    }
}

fn policy(text: &str) -> Policy {
    Policy::parse(text, "test").unwrap()
}

fn plan_of(s: &Snapshot, p: &Policy) -> Plan {
    let input = PlanInput {
        backups: &s.catalog.backups,
        in_progress: &[],
        dumps: &s.dumps.dumps,
        dumps_incomplete: &[],
        wal: &s.wal,
        histories: &s.histories,
        pins: &s.pins,
        holds: &[],
    };
    retention_plan::plan(&input, &p.retention, now())
}

fn verdict() -> Verdict {
    Verdict::from_reasons(vec![Reason {
        level: Level::Warning,
        text: "x".into(),
    }])
}

fn build_with(s: &Snapshot, plan: Option<&Plan>, drills: &[DrillReport], days: u32) -> Page {
    let limits = BTreeMap::from([(
        "weekly".to_string(),
        Limits {
            max_rto: Some(Duration::from_secs(1800)),
            max_rpo: Some(Duration::from_secs(900)),
        },
    )]);
    build(
        &Input {
            snapshot: s,
            plan,
            drills,
            limits: &limits,
            timezone: chrono_tz::Europe::Berlin,
            now: now(),
            days,
        },
        &verdict(),
    )
}

#[test]
fn time_map_interpolates_clamps_and_stays_monotonic() {
    let a = t("2026-12-01T00:00:00Z");
    let m = TimeMap::new(vec![
        (Lsn(2000), a + minutes(20)),
        (Lsn(1000), a),
        // Re-pushed later at a lower time than its predecessor: dropped.
        (Lsn(1500), a - minutes(5)),
    ]);
    let cases = [
        (Lsn(0), a, "before the first anchor: its time"),
        (Lsn(1000), a, "on an anchor"),
        (
            Lsn(1500),
            a + minutes(10),
            "halfway, interpolated (the bad anchor dropped)",
        ),
        (Lsn(2000), a + minutes(20), "the last anchor"),
        (
            Lsn(9000),
            a + minutes(20),
            "after the last anchor: its time",
        ),
    ];
    for (lsn, want, why) in cases {
        assert_eq!(m.at(lsn), Some(want), "{why}");
    }
    assert_eq!(TimeMap::new(vec![]).at(Lsn(1)), None, "no anchors, no time");
}

#[test]
fn axis_maps_the_window_onto_the_width() {
    let axis = Axis::new(now(), 2);
    let cases = [
        (now(), WIDTH),
        (now() - chrono::Duration::days(1), WIDTH / 2.0),
        (now() - chrono::Duration::days(2), 0.0),
        (now() - chrono::Duration::days(9), 0.0),
        (now() + chrono::Duration::days(1), WIDTH),
    ];
    for (at, want) in cases {
        assert!((axis.x(at) - want).abs() < 1e-6, "{at}: {}", axis.x(at));
    }
    assert_eq!(Axis::new(now(), 0), Axis::new(now(), 1), "at least one day");
}

/// Segments 1..=10 archived ten minutes apart, segment 5 missing, a backup at segment 2.
fn holed() -> Snapshot {
    let base = now() - chrono::Duration::hours(3);
    let wal = (1..=10)
        .filter(|&n| n != 5)
        .map(|n| seg(1, n, base + minutes(10 * n as i64)))
        .collect();
    snapshot(vec![backup(base + minutes(15), 1, 2, 2)], wal, vec![])
}

#[test]
fn a_missing_segment_is_a_hole_named_by_its_segment_and_lsns() {
    let s = holed();
    let page = build_with(&s, None, &[], 14);
    assert_eq!(page.lanes.len(), 1);
    let lane = &page.lanes[0];
    assert_eq!(lane.timeline, Timeline(1));
    assert_eq!(lane.segments, 9);
    assert_eq!(lane.holes_total, 1);
    let hole = &lane.holes[0];
    assert_eq!(hole.first, "000000010000000000000005");
    assert_eq!(hole.last, "000000010000000000000005");
    assert_eq!(hole.start_lsn, "0/5000000".parse().unwrap());
    assert_eq!(hole.end_lsn, "0/6000000".parse().unwrap());
    // About when: the end of segment 4, which was archived at base + 40 min.
    assert_eq!(
        hole.at,
        Some(now() - chrono::Duration::hours(3) + minutes(40))
    );
    assert_eq!(lane.hole_marks.len(), 1);
    let m = &lane.hole_marks[0];
    assert!(m.span.x1 - m.span.x0 >= MIN_HOLE_WIDTH, "{m:?}");
    assert_eq!(m.holes[0], *hole);
    // On a 14-day axis the two runs touch: one coverage element that says it has a hole.
    assert_eq!(lane.coverage.len(), 1, "{:?}", lane.coverage);
    assert_eq!(lane.coverage[0].segments, 9);
    assert_eq!(lane.coverage[0].holes, 1);
    // On a 1-hour-wide axis they do not: two elements, the hole between them.
    let narrow = build_with(&s, None, &[], 1);
    assert_eq!(
        narrow.lanes[0].coverage.len(),
        2,
        "{:?}",
        narrow.lanes[0].coverage
    );
    assert!(narrow.lanes[0].coverage[0].span.x1 <= narrow.lanes[0].hole_marks[0].span.x1);
}

#[test]
fn wal_and_backups_outside_the_window_are_not_drawn_but_holes_are_listed() {
    let old = now() - chrono::Duration::days(30);
    let wal = vec![seg(1, 1, old), seg(1, 3, old + minutes(10))];
    let s = snapshot(vec![backup(old, 1, 1, 1)], wal, vec![]);
    let page = build_with(&s, None, &[], 14);
    let lane = &page.lanes[0];
    assert!(lane.coverage.is_empty() && lane.hole_marks.is_empty() && lane.backups.is_empty());
    assert_eq!(lane.holes_total, 1, "the hole is still listed as text");
    assert_eq!(page.rows.len(), 1, "the table lists every backup");
}

#[test]
fn backups_close_together_merge_and_every_label_stays_on_a_mark() {
    let base = now() - chrono::Duration::days(13);
    let backups: Vec<BackupSummary> = (0..1000)
        .map(|i| backup(base + minutes(18 * i), 1, i as u64 + 1, i as u64 + 1))
        .collect();
    let labels: Vec<String> = backups.iter().map(|b| b.label.to_string()).collect();
    let pinned = labels[500].clone();
    let pins = vec![Pin {
        label: Label::parse(&pinned).unwrap(),
        reason: Some("before migration".into()),
        created_at: now(),
        created_by: "test".into(),
    }];
    let s = snapshot(backups, vec![], pins);
    let page = build_with(&s, None, &[], 14);
    let marks = &page.lanes[0].backups;
    assert!(
        marks.len() as f64 <= WIDTH / MARK_MERGE + 1.0,
        "{} marks for 1000 backups",
        marks.len()
    );
    assert!(
        marks.len() > 100,
        "still spread over the axis: {}",
        marks.len()
    );
    let on_marks: Vec<String> = marks.iter().flat_map(|m| m.labels.clone()).collect();
    assert_eq!(
        on_marks, labels,
        "each backup on exactly one mark, in time order"
    );
    assert!(marks.iter().all(|m| m.items.len() <= HOVER_ITEMS));
    let with_pin: Vec<&MarkGroup> = marks.iter().filter(|m| m.pinned).collect();
    assert_eq!(with_pin.len(), 1);
    assert!(with_pin[0].labels.contains(&pinned));
    assert!(
        page.rows
            .iter()
            .any(|r| r.item.label == pinned && r.item.pinned)
    );
}

#[test]
fn table_rows_carry_the_retention_plans_reasons() {
    let base = now() - chrono::Duration::days(3);
    let backups = (0..3)
        .map(|i| {
            backup(
                base + chrono::Duration::days(i),
                1,
                1 + i as u64,
                1 + i as u64,
            )
        })
        .collect();
    let s = snapshot(backups, vec![], vec![]);
    let p = policy("[retention.backups]\nkeep_last = 1\n");
    let plan = plan_of(&s, &p);
    let page = build_with(&s, Some(&plan), &[], 14);
    // Newest first.
    let rows: Vec<(&str, Option<bool>)> = page
        .rows
        .iter()
        .map(|r| (r.item.label.as_str(), r.item.keep))
        .collect();
    let newest = s.catalog.backups[2].label.to_string();
    let oldest = s.catalog.backups[0].label.to_string();
    assert_eq!(rows[0], (newest.as_str(), Some(true)));
    assert_eq!(rows[2], (oldest.as_str(), Some(false)));
    let d = &plan.backup(&newest).unwrap().decision;
    assert!(
        matches!(d, Decision::Keep { reasons } if reasons.contains(&KeepReason::NewestComplete)),
        "{d:?}"
    );
    let why = page.rows[0].why.as_deref().unwrap();
    assert_eq!(why, d.sentence("Europe/Berlin", "backup"));
    assert!(why.contains("newest complete backup"), "{why}");
    // Without a plan the rows say nothing about retention.
    let page = build_with(&s, None, &[], 14);
    assert!(
        page.rows
            .iter()
            .all(|r| r.why.is_none() && r.item.keep.is_none())
    );
}

#[test]
fn the_pitr_window_is_shaded_from_the_policy() {
    let s = holed();
    let cases = [
        (
            "[retention.wal]\npitr_window = \"7d\"\n",
            Some(now() - chrono::Duration::days(7)),
            Some(7 * 86400),
        ),
        // Without a window the recoverable span starts at the oldest kept backup's stop.
        ("", Some(s.catalog.backups[0].stop_time), None),
    ];
    for (text, from, window) in cases {
        let plan = plan_of(&s, &policy(text));
        let page = build_with(&s, Some(&plan), &[], 14);
        let pitr = page.pitr.as_ref();
        assert_eq!(pitr.map(|p| p.from), from, "{text}");
        assert_eq!(pitr.and_then(|p| p.window_seconds), window, "{text}");
        let p = pitr.unwrap();
        assert_eq!(p.span.x1, WIDTH);
        assert!((p.span.x0 - page.axis.x(p.from)).abs() < 1e-9);
    }
    assert_eq!(
        build_with(&s, None, &[], 14).pitr,
        None,
        "no plan, no shade"
    );
}

#[test]
fn drills_land_on_their_backups_timeline_with_verdicts_and_limits() {
    let s = holed();
    let label = s.catalog.backups[0].label.to_string();
    let mut passed = drill_sample("a", "weekly", DrillVerdict::Passed);
    passed.started_at = now() - chrono::Duration::days(2);
    passed.backup = Some(label.clone());
    let mut failed = drill_sample("b", "weekly", DrillVerdict::Failed);
    failed.started_at = now() - chrono::Duration::days(1);
    failed.backup = Some(label.clone());
    failed.rto_seconds = Some(2400.0);
    failed.failure = Some(crate::drill::report::Failure {
        phase: "recovery".into(),
        reason: "block missing".into(),
        server_log_tail: None,
    });
    let mut dump = drill_sample("c", "nightly-dump", DrillVerdict::Passed);
    dump.from = "dump".into();
    dump.started_at = now() - chrono::Duration::hours(1);
    let mut old = drill_sample("d", "weekly", DrillVerdict::Passed);
    old.started_at = now() - chrono::Duration::days(20);
    let reports = [passed, failed, dump, old];

    let page = build_with(&s, None, &reports, 14);
    let verdicts: Vec<(DrillVerdict, usize)> = page.lanes[0]
        .drills
        .iter()
        .map(|g| (g.verdict, g.count))
        .collect();
    assert_eq!(
        verdicts,
        [(DrillVerdict::Passed, 1), (DrillVerdict::Failed, 1)],
        "backup drills on timeline 1, oldest first; the 20-day-old one left out"
    );
    assert_eq!(page.dump_drills.len(), 1, "dump drills go with the dumps");
    let listed: Vec<&str> = page.drills.iter().map(|d| d.label.as_str()).collect();
    assert_eq!(listed, ["c", "b", "a"], "newest first");
    assert_eq!(
        page.drills[1].failure.as_deref(),
        Some("recovery: block missing")
    );

    assert_eq!(page.rto.limits, [("weekly".to_string(), 1800.0)]);
    assert_eq!(page.rpo.limits, [("weekly".to_string(), 900.0)]);
    assert_eq!(page.rto.points.len(), 3);
    assert!(
        page.rto.y_max >= 2400.0,
        "the worst RTO fits: {}",
        page.rto.y_max
    );
    assert!(
        page.rpo.y_max >= 900.0,
        "the limit fits: {}",
        page.rpo.y_max
    );

    // Two drills at one pixel: one mark, failed when either failed.
    let mut a = reports[0].clone();
    let mut b = reports[1].clone();
    a.started_at = now() - minutes(30);
    b.started_at = now() - minutes(29);
    let page = build_with(&s, None, &[a, b], 14);
    let g = &page.lanes[0].drills;
    assert_eq!(g.len(), 1);
    assert_eq!((g[0].verdict, g[0].count), (DrillVerdict::Failed, 2));
}

#[test]
fn a_hundred_thousand_segments_stay_a_bounded_number_of_elements() {
    // 100k segments over 14 days (one every ~12 s), one missing in every 1000.
    let start = now() - chrono::Duration::days(14);
    let wal: Vec<ObjectMeta> = (1..=100_000u64)
        .filter(|n| n % 1000 != 0)
        .map(|n| {
            seg(
                1,
                n,
                start + chrono::Duration::milliseconds(n as i64 * 12_096),
            )
        })
        .collect();
    let s = snapshot(vec![], wal, vec![]);
    let started = std::time::Instant::now();
    let page = build_with(&s, None, &[], 14);
    let took = started.elapsed();
    let lane = &page.lanes[0];
    assert_eq!(lane.holes_total, 99);
    assert_eq!(lane.holes.len(), LISTED_HOLES);
    assert!(lane.hole_marks.len() <= (WIDTH / MIN_HOLE_WIDTH) as usize);
    assert_eq!(lane.hole_marks.iter().map(|m| m.count).sum::<usize>(), 99);
    assert!(lane.coverage.len() <= 100, "{}", lane.coverage.len());
    assert_eq!(
        lane.coverage.iter().map(|c| c.segments).sum::<u64>(),
        100_000 - 100,
        "every archived segment counted once"
    );
    let html = super::super::html::page(&page);
    assert!(html.len() < 200_000, "{} bytes", html.len());
    eprintln!(
        "model of 100k segments: {took:?}, {} bytes of HTML",
        html.len()
    );
}

#[test]
fn any_number_of_days_gives_a_bounded_axis_and_a_few_ticks() {
    let s = holed();
    for (days, want_from) in [
        (0, now() - chrono::Duration::days(1)),
        (14, now() - chrono::Duration::days(14)),
        (
            u32::MAX,
            now() - chrono::Duration::days(i64::from(MAX_DAYS)),
        ),
    ] {
        let page = build_with(&s, None, &[], days);
        assert_eq!(page.axis.from, want_from, "{days} days");
        let html = super::super::html::page(&page);
        let svgs = html.matches("<svg ").count();
        let ticks = html.matches("class=\"tick\"").count();
        assert!(svgs > 0);
        // About 14 a chart; one midnight more or less with the zone.
        assert!(
            ticks / svgs <= 15 && ticks / svgs >= 1,
            "{days} days: {ticks} ticks in {svgs} charts"
        );
    }
}

#[test]
fn the_page_escapes_what_it_shows_and_links_nowhere() {
    let mut s = holed();
    let label = s.catalog.backups[0].label.clone();
    s.pins = vec![Pin {
        label,
        reason: Some("\"><img src=x onerror=alert(1)>".into()),
        created_at: now(),
        created_by: "test".into(),
    }];
    s.warnings = vec!["<iframe src=\"https://example.com\">".into()];
    let mut drill = drill_sample("x", "weekly", DrillVerdict::Failed);
    drill.started_at = now() - minutes(5);
    drill.failure = Some(crate::drill::report::Failure {
        phase: "checks".into(),
        reason: "<script>alert(1)</script>".into(),
        server_log_tail: None,
    });
    let plan = plan_of(&s, &policy(""));
    let mut page = build_with(&s, Some(&plan), &[drill], 14);
    page.verdict = Verdict::from_reasons(vec![Reason {
        level: Level::Critical,
        text: "last drill failed: <b>block</b> & 'more'".into(),
    }]);
    let html = super::super::html::page(&page);
    // Only the page's own elements: nothing that comes from the repository became markup.
    let allowed = [
        "!DOCTYPE", "html", "head", "meta", "title", "style", "body", "header", "h1", "h2", "h3",
        "p", "section", "ul", "li", "div", "span", "i", "svg", "g", "line", "rect", "circle",
        "text", "table", "thead", "tbody", "tr", "th", "td",
    ];
    let tag = regex::Regex::new(r"</?([!A-Za-z][A-Za-z0-9]*)").unwrap();
    let names: BTreeSet<&str> = tag
        .captures_iter(&html)
        .map(|c| c.get(1).unwrap().as_str())
        .collect();
    for name in &names {
        assert!(allowed.contains(name), "the page has a <{name}> element");
    }
    assert!(!html.contains("url("), "the CSS loads nothing");
    for escaped in [
        "&lt;script&gt;alert(1)&lt;/script&gt;",
        "pinned: &quot;&gt;&lt;img src=x onerror=alert(1)&gt;",
        "&lt;iframe src=&quot;",
        "CRITICAL: last drill failed: &lt;b&gt;block&lt;/b&gt; &amp; &#39;more&#39;",
    ] {
        assert!(html.contains(escaped), "{escaped} is not in the page");
    }
    assert!(html.contains("data-verdict=\"CRITICAL\""));
}
