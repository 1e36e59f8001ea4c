//! Table-driven plan tests: `now` is passed in; every case asserts reasons, not only verdicts.

use super::*;
use crate::codec::Sha256Digest;
use crate::pg::{Lsn, WalFileName};
use crate::repo::dumps::{DUMP_MANIFEST_VERSION, DatabaseDump, StoredObject};
use crate::retention::policy::KeepRules;
use crate::storage::ObjectMeta;
use KeepReason as K;

const SEG: u64 = 16 << 20;

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().to_utc()
}

fn label(s: &str) -> Label {
    Label::for_start(t(s))
}

/// A backup started at `at` on timeline `tli`, from segment `start` to `stop`.
fn backup(at: &str, tli: u32, start: u64, stop: u64) -> BackupSummary {
    let tl = Timeline(tli);
    BackupSummary {
        label: label(at),
        timeline: tl,
        start_lsn: Lsn(Lsn::from_segment(start, SEG).0 + 0x28),
        stop_lsn: Lsn(Lsn::from_segment(stop, SEG).0 + 0x100),
        start_wal: WalSegmentName::from_segno(tl, start, SEG),
        stop_wal: WalSegmentName::from_segno(tl, stop, SEG),
        start_time: t(at),
        stop_time: t(at) + chrono::Duration::minutes(10),
        total_bytes: 1000,
        stored_bytes: 100,
        files: 1,
        bad_pages: 0,
        data_checksums: true,
    }
}

fn backups(times: &[&str]) -> Vec<BackupSummary> {
    times
        .iter()
        .enumerate()
        .map(|(i, at)| backup(at, 1, 10 * i as u64 + 1, 10 * i as u64 + 2))
        .collect()
}

fn obj(name: &str) -> ObjectMeta {
    let n = WalFileName::parse(name).unwrap();
    ObjectMeta::new(
        layout::wal_key(&n, &Sha256Digest::of(name.as_bytes())),
        1000,
    )
}

/// Segments `range` of each timeline, plus history files.
fn archive(segs: &[(u32, std::ops::RangeInclusive<u64>)], extra: &[&str]) -> WalCatalog {
    let mut objs: Vec<ObjectMeta> = segs
        .iter()
        .flat_map(|(tli, r)| {
            r.clone()
                .map(move |s| obj(&WalSegmentName::from_segno(Timeline(*tli), s, SEG).to_string()))
        })
        .collect();
    objs.extend(extra.iter().map(|n| obj(n)));
    WalCatalog::from_listing(&objs, SEG)
}

fn histories(h: &[(u32, &str)]) -> BTreeMap<Timeline, TimelineHistory> {
    h.iter()
        .map(|(tli, text)| {
            (
                Timeline(*tli),
                TimelineHistory::parse(Timeline(*tli), text).unwrap(),
            )
        })
        .collect()
}

fn retention(tz: chrono_tz::Tz, rules: KeepRules, pitr: Option<&str>) -> Retention {
    Retention {
        timezone: tz,
        backups: Some(rules.clone()),
        dumps: Some(rules),
        pitr_window: pitr.map(|p| humantime::parse_duration(p).unwrap()),
        gc_grace: Duration::from_secs(86400),
    }
}

#[derive(Default)]
struct Repo {
    backups: Vec<BackupSummary>,
    in_progress: Vec<InProgress>,
    dumps: Vec<DumpManifest>,
    dumps_incomplete: Vec<InProgress>,
    pins: Vec<Pin>,
    holds: Vec<Hold>,
    wal: Option<WalCatalog>,
    histories: BTreeMap<Timeline, TimelineHistory>,
}

impl Repo {
    fn plan(&self, policy: &Retention, now: &str) -> Plan {
        let empty = WalCatalog::from_listing(&[], SEG);
        let input = PlanInput {
            backups: &self.backups,
            in_progress: &self.in_progress,
            dumps: &self.dumps,
            dumps_incomplete: &self.dumps_incomplete,
            wal: self.wal.as_ref().unwrap_or(&empty),
            histories: &self.histories,
            pins: &self.pins,
            holds: &self.holds,
        };
        let p = plan(&input, policy, t(now));
        // Every plan prints in both forms.
        assert!(!p.render_text().is_empty());
        serde_json::to_value(&p).unwrap();
        p
    }
}

fn kept(p: &Plan, at: &str) -> Vec<KeepReason> {
    match &p.backup(label(at).as_str()).unwrap().decision {
        Decision::Keep { reasons } => reasons.clone(),
        Decision::Delete { .. } => Vec::new(),
    }
}

fn wal_at(p: &Plan, tli: u32, segno: u64) -> WalDecision {
    let seg = WalSegmentName::from_segno(Timeline(tli), segno, SEG);
    p.wal
        .iter()
        .find(|r| r.timeline.0 == tli && r.first <= seg && seg <= r.last)
        .unwrap_or_else(|| panic!("no range holds {seg}: {:#?}", p.wal))
        .decision
        .clone()
}

fn wal_keeps(p: &Plan, tli: u32, segno: u64) -> Vec<WalReason> {
    match wal_at(p, tli, segno) {
        WalDecision::Keep { reasons } => reasons,
        WalDecision::Delete => Vec::new(),
    }
}

fn rules() -> KeepRules {
    KeepRules::default()
}

#[test]
fn calendar_buckets_follow_the_policy_zone_across_a_dst_change() {
    use chrono_tz::Europe::Berlin;
    // Berlin leaves summer time on 2026-10-25 at 01:00 UTC (03:00 CEST → 02:00 CET).
    let repo = Repo {
        backups: backups(&[
            "2026-10-24T21:30:00Z", // 23:30 CEST, Oct 24
            "2026-10-24T22:30:00Z", // 00:30 CEST, Oct 25
            "2026-10-25T22:30:00Z", // 23:30 CET,  Oct 25 (a +02:00 zone would say Oct 26)
            "2026-10-26T23:30:00Z", // 00:30 CET,  Oct 27
        ]),
        ..Repo::default()
    };
    let day = |s: &str| K::KeepDaily {
        day: NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap(),
    };
    let p = repo.plan(
        &retention(
            Berlin,
            KeepRules {
                keep_daily: 3,
                ..rules()
            },
            None,
        ),
        "2026-10-28T12:00:00Z",
    );
    let cases = [
        (
            "2026-10-26T23:30:00Z",
            vec![K::NewestComplete, day("2026-10-27")],
        ),
        ("2026-10-25T22:30:00Z", vec![day("2026-10-25")]),
        ("2026-10-24T22:30:00Z", vec![]),
        ("2026-10-24T21:30:00Z", vec![day("2026-10-24")]),
    ];
    for (at, want) in cases {
        assert_eq!(kept(&p, at), want, "{at}");
    }
    assert!(
        p.render_text()
            .contains("keep_daily 2026-10-25 (Europe/Berlin)"),
        "{}",
        p.render_text()
    );

    // The two 02:30s of the fall-back night are two hours.
    let repo = Repo {
        backups: backups(&["2026-10-25T00:30:00Z", "2026-10-25T01:30:00Z"]),
        ..Repo::default()
    };
    let p = repo.plan(
        &retention(
            Berlin,
            KeepRules {
                keep_hourly: 2,
                ..rules()
            },
            None,
        ),
        "2026-10-25T12:00:00Z",
    );
    let hour = |s: &str| K::KeepHourly {
        hour: DateTime::parse_from_rfc3339(s).unwrap(),
    };
    assert_eq!(
        kept(&p, "2026-10-25T01:30:00Z"),
        vec![K::NewestComplete, hour("2026-10-25T02:00:00+01:00")]
    );
    assert_eq!(
        kept(&p, "2026-10-25T00:30:00Z"),
        vec![hour("2026-10-25T02:00:00+02:00")]
    );
}

#[test]
fn iso_weeks_run_across_new_year() {
    let repo = Repo {
        backups: backups(&[
            "2026-12-29T12:00:00Z",
            "2026-12-31T12:00:00Z",
            "2027-01-02T12:00:00Z", // Saturday of ISO week 2026-W53
            "2027-01-05T12:00:00Z", // 2027-W01
        ]),
        ..Repo::default()
    };
    let p = repo.plan(
        &retention(
            chrono_tz::UTC,
            KeepRules {
                keep_weekly: 2,
                ..rules()
            },
            None,
        ),
        "2027-01-06T00:00:00Z",
    );
    let week = |iso_year, week| K::KeepWeekly { iso_year, week };
    let cases = [
        (
            "2027-01-05T12:00:00Z",
            vec![K::NewestComplete, week(2027, 1)],
        ),
        ("2027-01-02T12:00:00Z", vec![week(2026, 53)]),
        ("2026-12-31T12:00:00Z", vec![]),
        ("2026-12-29T12:00:00Z", vec![]),
    ];
    for (at, want) in cases {
        assert_eq!(kept(&p, at), want, "{at}");
    }
    assert!(!p.force.needed, "2 of 4 is not more than half");
}

#[test]
fn month_ends_fall_in_the_zone_month() {
    let repo = Repo {
        backups: backups(&[
            "2026-01-31T12:00:00Z",
            "2026-02-28T12:00:00Z",
            "2026-03-01T12:00:00Z",
            "2026-03-31T12:00:00Z",
        ]),
        ..Repo::default()
    };
    let p = repo.plan(
        &retention(
            chrono_tz::UTC,
            KeepRules {
                keep_monthly: 3,
                ..rules()
            },
            None,
        ),
        "2026-04-01T00:00:00Z",
    );
    let month = |year, month| K::KeepMonthly { year, month };
    for (at, want) in [
        (
            "2026-03-31T12:00:00Z",
            vec![K::NewestComplete, month(2026, 3)],
        ),
        ("2026-03-01T12:00:00Z", vec![]),
        ("2026-02-28T12:00:00Z", vec![month(2026, 2)]),
        ("2026-01-31T12:00:00Z", vec![month(2026, 1)]),
    ] {
        assert_eq!(kept(&p, at), want, "{at}");
    }
    // 23:30 UTC on January 31 is February 1 in Berlin: the same month as the newest.
    let repo = Repo {
        backups: backups(&["2026-01-31T23:30:00Z", "2026-02-27T12:00:00Z"]),
        ..Repo::default()
    };
    let p = repo.plan(
        &retention(
            chrono_tz::Europe::Berlin,
            KeepRules {
                keep_monthly: 2,
                ..rules()
            },
            None,
        ),
        "2026-03-01T00:00:00Z",
    );
    assert_eq!(
        kept(&p, "2026-02-27T12:00:00Z"),
        vec![K::NewestComplete, month(2026, 2)]
    );
    assert_eq!(kept(&p, "2026-01-31T23:30:00Z"), vec![]);
}

/// Daily backups January 1–10 (backup i on segments 10i+1..10i+2), continuous WAL 1..=110,
/// then nothing for 60 days.
fn ten_days() -> Repo {
    let times: Vec<String> = (1..=10)
        .map(|d| format!("2026-01-{d:02}T01:00:00Z"))
        .collect();
    let refs: Vec<&str> = times.iter().map(String::as_str).collect();
    Repo {
        backups: backups(&refs),
        wal: Some(archive(&[(1, 1..=110)], &[])),
        ..Repo::default()
    }
}

#[test]
fn nothing_ages_out_while_backups_stop_for_60_days() {
    let repo = ten_days();
    let policy = retention(
        chrono_tz::UTC,
        KeepRules {
            keep_last: 1,
            keep_within: Some(Duration::from_secs(2 * 86400)),
            ..rules()
        },
        Some("7d"),
    );
    let p = repo.plan(&policy, "2026-03-11T00:00:00Z");
    let within = K::KeepWithin {
        within_seconds: 2 * 86400,
    };
    let pitr = K::PitrBase {
        window_seconds: 7 * 86400,
    };
    assert_eq!(
        kept(&p, "2026-01-10T01:00:00Z"),
        vec![
            K::NewestComplete,
            K::KeepLast { n: 1 },
            within.clone(),
            pitr
        ]
    );
    assert_eq!(kept(&p, "2026-01-09T01:00:00Z"), vec![within.clone()]);
    assert_eq!(
        kept(&p, "2026-01-08T01:00:00Z"),
        vec![within],
        "exactly 2d before"
    );
    assert_eq!(kept(&p, "2026-01-07T01:00:00Z"), vec![]);
    assert_eq!(p.pitr_base, Some(label("2026-01-10T01:00:00Z")));
    assert!(p.force.needed, "7 of 10 backups: {:?}", p.force);
    assert_eq!((p.force.backups_deleted, p.force.backups_total), (7, 10));

    // Backups 1..=10 are on segments 10i+1..10i+2 (i = 0..9).
    let jan = |d: u32| label(&format!("2026-01-{d:02}T01:00:00Z"));
    assert_eq!(
        wal_keeps(&p, 1, 0x51),
        vec![WalReason::BackupRange { label: jan(9) }]
    );
    assert_eq!(
        wal_keeps(&p, 1, 0x55),
        vec![],
        "between kept ranges, before the window"
    );
    assert_eq!(
        wal_keeps(&p, 1, 0x5B),
        vec![
            WalReason::BackupRange { label: jan(10) },
            WalReason::Recoverable {
                base: jan(10),
                window_seconds: Some(7 * 86400)
            },
            WalReason::AfterNewestBackup { label: jan(10) },
        ]
    );
    assert_eq!(
        wal_keeps(&p, 1, 0x60),
        vec![
            WalReason::Recoverable {
                base: jan(10),
                window_seconds: Some(7 * 86400)
            },
            WalReason::AfterNewestBackup { label: jan(10) },
        ]
    );
    // The WAL of expired backups goes.
    assert_eq!(
        wal_keeps(&p, 1, 0x05),
        vec![],
        "backup 1's own WAL: expired with it"
    );
    let d = p.deletions();
    assert!(d.manifests.contains(&layout::manifest_key(jan(1).as_str())));
    assert!(!d.manifests.contains(&layout::manifest_key(jan(8).as_str())));
    assert_eq!(d.manifests.len(), 7);
    assert_eq!(p.freed.backup_bytes_up_to, 700);
    assert_eq!(p.freed.wal_bytes, 1000 * d.wal.len() as u64);
    let text = p.render_text();
    assert!(text.contains("PITR base for 7days window"), "{text}");
    assert!(text.contains("only --force carries it out"), "{text}");
}

#[test]
fn future_dated_backups_take_no_slot_and_do_not_move_keep_within() {
    let repo = Repo {
        backups: backups(&[
            "2026-11-28T00:00:00Z",
            "2026-11-29T00:00:00Z",
            "2026-11-30T00:00:00Z",
            "2027-06-01T00:00:00Z", // a clock far ahead
        ]),
        ..Repo::default()
    };
    let p = repo.plan(
        &retention(
            chrono_tz::UTC,
            KeepRules {
                keep_last: 1,
                keep_within: Some(Duration::from_secs(36 * 3600)),
                ..rules()
            },
            None,
        ),
        "2026-12-01T12:00:00Z",
    );
    let within = K::KeepWithin {
        within_seconds: 36 * 3600,
    };
    for (at, want) in [
        ("2027-06-01T00:00:00Z", vec![K::FutureDated]),
        (
            "2026-11-30T00:00:00Z",
            vec![K::NewestComplete, K::KeepLast { n: 1 }, within.clone()],
        ),
        ("2026-11-29T00:00:00Z", vec![within]),
        ("2026-11-28T00:00:00Z", vec![]),
    ] {
        assert_eq!(kept(&p, at), want, "{at}");
    }
}

#[test]
fn min_keep_is_a_floor_that_counts_pins() {
    let times = [
        "2026-11-26T00:00:00Z",
        "2026-11-27T00:00:00Z",
        "2026-11-28T00:00:00Z",
        "2026-11-29T00:00:00Z",
        "2026-11-30T00:00:00Z",
    ];
    let mut repo = Repo {
        backups: backups(&times),
        ..Repo::default()
    };
    let policy = retention(
        chrono_tz::UTC,
        KeepRules {
            keep_last: 1,
            min_keep: 3,
            ..rules()
        },
        None,
    );
    let p = repo.plan(&policy, "2026-12-01T00:00:00Z");
    let got: Vec<Vec<KeepReason>> = times.iter().map(|at| kept(&p, at)).collect();
    assert_eq!(
        got,
        vec![
            vec![],
            vec![],
            vec![K::MinKeep { n: 3 }],
            vec![K::MinKeep { n: 3 }],
            vec![K::NewestComplete, K::KeepLast { n: 1 }],
        ]
    );
    repo.pins.push(Pin {
        label: label(times[0]),
        reason: Some("before migration".into()),
        created_at: t("2026-11-26T01:00:00Z"),
        created_by: "db1 pid 1".into(),
    });
    let p = repo.plan(&policy, "2026-12-01T00:00:00Z");
    let got: Vec<Vec<KeepReason>> = times.iter().map(|at| kept(&p, at)).collect();
    assert_eq!(
        got,
        vec![
            vec![K::Pinned {
                reason: Some("before migration".into())
            }],
            vec![],
            vec![],
            vec![K::MinKeep { n: 3 }],
            vec![K::NewestComplete, K::KeepLast { n: 1 }],
        ]
    );
}

#[test]
fn deleting_more_than_half_needs_force() {
    let cases: [(&[&str], u32, bool); 4] = [
        (&["2026-11-28T00:00:00Z", "2026-11-29T00:00:00Z"], 1, false),
        (
            &[
                "2026-11-27T00:00:00Z",
                "2026-11-28T00:00:00Z",
                "2026-11-29T00:00:00Z",
            ],
            1,
            true,
        ),
        (
            &[
                "2026-11-27T00:00:00Z",
                "2026-11-28T00:00:00Z",
                "2026-11-29T00:00:00Z",
            ],
            2,
            false,
        ),
        (&["2026-11-29T00:00:00Z"], 1, false),
    ];
    for (times, keep_last, needed) in cases {
        let repo = Repo {
            backups: backups(times),
            ..Repo::default()
        };
        let p = repo.plan(
            &retention(
                chrono_tz::UTC,
                KeepRules {
                    keep_last,
                    ..rules()
                },
                None,
            ),
            "2026-12-01T00:00:00Z",
        );
        assert_eq!(p.force.needed, needed, "{times:?} keep_last {keep_last}");
        assert_eq!(p.force.backups_total, times.len() as u64);
        assert_eq!(
            p.force.backups_deleted,
            times.len() as u64 - u64::from(keep_last).min(times.len() as u64)
        );
    }
}

#[test]
fn pinned_and_held_items_keep_themselves_and_their_wal() {
    let mut repo = ten_days();
    let jan = |d: u32| label(&format!("2026-01-{d:02}T01:00:00Z"));
    repo.pins.push(Pin {
        label: jan(2),
        reason: Some("before migration".into()),
        created_at: t("2026-01-02T02:00:00Z"),
        created_by: "db1 pid 1".into(),
    });
    repo.pins.push(Pin {
        label: Label::parse("20200101T000000Z").unwrap(),
        reason: None,
        created_at: t("2026-01-02T02:00:00Z"),
        created_by: "db1 pid 1".into(),
    });
    let held_from = WalSegmentName::from_segno(Timeline(1), 0x21, SEG);
    repo.holds.push(Hold {
        label: jan(3),
        holder: "restore on host1 pid 42".into(),
        wal_from: Some((Timeline(1), held_from)),
    });
    let p = repo.plan(
        &retention(
            chrono_tz::UTC,
            KeepRules {
                keep_last: 1,
                ..rules()
            },
            Some("7d"),
        ),
        "2026-03-11T00:00:00Z",
    );
    assert_eq!(
        kept(&p, "2026-01-02T01:00:00Z"),
        vec![K::Pinned {
            reason: Some("before migration".into())
        }]
    );
    assert_eq!(
        kept(&p, "2026-01-03T01:00:00Z"),
        vec![K::Held {
            holder: "restore on host1 pid 42".into()
        }]
    );
    assert_eq!(
        wal_keeps(&p, 1, 0x0B),
        vec![WalReason::BackupRange { label: jan(2) }]
    );
    assert_eq!(
        wal_keeps(&p, 1, 0x0D),
        vec![],
        "after the pinned backup's stop"
    );
    let held = WalReason::Held {
        label: jan(3),
        holder: "restore on host1 pid 42".into(),
    };
    assert!(wal_keeps(&p, 1, 0x21).contains(&held));
    assert!(
        wal_keeps(&p, 1, 0x40).contains(&held),
        "held from wal_from on"
    );
    assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
    assert!(p.warnings[0].contains("pgward unpin 20200101T000000Z"));
    let text = p.render_text();
    assert!(text.contains("pinned: before migration"), "{text}");
    assert!(text.contains("held by restore on host1 pid 42"), "{text}");
}

#[test]
fn an_in_progress_backup_is_neither_counted_nor_deleted_while_live() {
    let mut repo = ten_days();
    repo.backups.truncate(3);
    repo.in_progress = vec![
        InProgress {
            label: label("2026-01-04T01:00:00Z"),
            live: true,
        },
        InProgress {
            label: label("2026-01-03T12:00:00Z"),
            live: false,
        },
    ];
    let p = repo.plan(
        &retention(
            chrono_tz::UTC,
            KeepRules {
                keep_last: 2,
                ..rules()
            },
            None,
        ),
        "2026-01-04T02:00:00Z",
    );
    assert_eq!(
        p.backups_in_progress[0].decision,
        Decision::Keep {
            reasons: vec![K::InProgress]
        }
    );
    assert_eq!(
        p.backups_in_progress[1].decision,
        Decision::Delete {
            reason: DeleteReason::Abandoned
        }
    );
    // The live one takes no slot: two complete backups are still kept.
    assert_eq!(
        kept(&p, "2026-01-03T01:00:00Z"),
        vec![K::NewestComplete, K::KeepLast { n: 2 }]
    );
    assert_eq!(kept(&p, "2026-01-02T01:00:00Z"), vec![K::KeepLast { n: 2 }]);
    assert_eq!(kept(&p, "2026-01-01T01:00:00Z"), vec![]);
    let tail = wal_keeps(&p, 1, 0x40);
    assert!(
        tail.contains(&WalReason::InProgressBackup {
            label: label("2026-01-04T01:00:00Z")
        }),
        "{tail:?}"
    );
    let d = p.deletions();
    let dead = label("2026-01-03T12:00:00Z");
    assert_eq!(d.objects, vec![layout::in_progress_key(dead.as_str())]);
    assert!(d.prefixes.contains(&layout::backup_prefix(dead.as_str())));
    assert!(!d.prefixes.iter().any(|k| k.contains("20260104T010000Z")));
}

#[test]
fn a_wal_only_repository_deletes_no_wal_nor_does_its_first_backup_purge_it() {
    let mut repo = Repo {
        wal: Some(archive(
            &[(1, 1..=20)],
            &["00000001000000000000000F.00000028.backup"],
        )),
        ..Repo::default()
    };
    let policy = retention(
        chrono_tz::UTC,
        KeepRules {
            keep_last: 1,
            ..rules()
        },
        Some("1d"),
    );
    let p = repo.plan(&policy, "2026-12-01T00:00:00Z");
    assert!(p.deletions().is_empty(), "{:?}", p.deletions());
    assert_eq!(p.wal.len(), 1);
    assert_eq!(
        p.wal[0].decision,
        WalDecision::Keep {
            reasons: vec![WalReason::NoCompleteBackup]
        }
    );
    assert!(p.render_text().contains("no complete backup exists yet"));

    // The first backup (segments 15..16): the WAL before it stays, its own and after it too.
    repo.backups = vec![backup("2026-12-01T01:00:00Z", 1, 15, 16)];
    let p = repo.plan(&policy, "2026-12-01T02:00:00Z");
    assert!(p.deletions().is_empty(), "{:?}", p.deletions());
    let first = label("2026-12-01T01:00:00Z");
    assert_eq!(
        wal_keeps(&p, 1, 3),
        vec![WalReason::BeforeOldestBackup {
            label: first.clone()
        }]
    );
    assert_eq!(
        wal_keeps(&p, 1, 15),
        vec![
            WalReason::BackupRange {
                label: first.clone()
            },
            WalReason::Recoverable {
                base: first.clone(),
                window_seconds: None
            },
            WalReason::AfterNewestBackup { label: first },
        ]
    );
    assert!(p.wal_files[0].decision != WalDecision::Delete);

    // One PITR window (1d) after the first backup stopped, the WAL before it goes: no restore
    // can use it. The backup's own WAL and everything after it stay.
    let p = repo.plan(&policy, "2026-12-02T02:00:00Z");
    assert_eq!(wal_keeps(&p, 1, 3), vec![]);
    assert!(!wal_keeps(&p, 1, 15).is_empty());
    let d = p.deletions();
    assert_eq!(d.wal.len(), 14, "segments 1..=14 go: {:?}", d.wal);
    assert!(
        d.wal
            .iter()
            .all(|k| !k.contains("00000001000000000000000F"))
    );
}

#[test]
fn a_timeline_promoted_from_an_older_backup_is_kept_whole_until_it_has_a_backup() {
    // Backups on timeline 1 up to 0x40 (the newest at 0x40 is the PITR base); an operator
    // restored the 0x10 backup and promoted: timeline 2 branched at 0x12 and runs production
    // (segments 0x12..0x1A), with no backup yet. Its WAL is all below the base's segment
    // number, yet none of it may go, nor its history file.
    let repo = Repo {
        backups: vec![
            backup("2026-11-01T00:00:00Z", 1, 0x10, 0x11),
            backup("2026-11-20T00:00:00Z", 1, 0x40, 0x41),
        ],
        wal: Some(archive(
            &[(1, 0x10..=0x48), (2, 0x12..=0x1A)],
            &["00000002.history"],
        )),
        histories: histories(&[(2, "1\t0/12000100\trestored\n")]),
        ..Repo::default()
    };
    let p = repo.plan(
        &retention(
            chrono_tz::UTC,
            KeepRules {
                keep_last: 1,
                ..rules()
            },
            Some("1d"),
        ),
        "2026-12-01T00:00:00Z",
    );
    let newest = label("2026-11-20T00:00:00Z");
    assert_eq!(kept(&p, "2026-11-01T00:00:00Z"), vec![]);
    for seg in [0x12, 0x16, 0x1A] {
        assert_eq!(
            wal_keeps(&p, 2, seg),
            vec![WalReason::BranchNotBelowBase {
                base: newest.clone()
            }],
            "segment {seg:#x} of the promoted timeline"
        );
    }
    let d = p.deletions();
    assert!(
        !d.wal.iter().any(|k| k.starts_with("wal/00000002/")),
        "{:?}",
        d.wal
    );
    assert!(d.histories.is_empty(), "{:?}", d.histories);
    // Timeline 1 below the base goes as usual.
    assert_eq!(wal_keeps(&p, 1, 0x20), vec![]);
}

#[test]
fn a_child_timeline_with_a_kept_backup_keeps_its_wal_and_history() {
    // Timeline 1 to segment 0x30; timeline 2 branched at 0x20, timeline 3 at 0x18 (an older
    // point). The only kept backup is on timeline 3 (pg_probackup #69).
    let repo = Repo {
        backups: vec![
            backup("2026-11-01T00:00:00Z", 1, 0x10, 0x11),
            backup("2026-11-20T00:00:00Z", 3, 0x22, 0x23),
        ],
        wal: Some(archive(
            &[(1, 0x10..=0x30), (2, 0x20..=0x28), (3, 0x18..=0x26)],
            &["00000002.history", "00000003.history"],
        )),
        histories: histories(&[(2, "1\t0/20000100\tx\n"), (3, "1\t0/18000100\ty\n")]),
        ..Repo::default()
    };
    let p = repo.plan(
        &retention(
            chrono_tz::UTC,
            KeepRules {
                keep_last: 1,
                ..rules()
            },
            None,
        ),
        "2026-12-01T00:00:00Z",
    );
    let b3 = label("2026-11-20T00:00:00Z");
    assert_eq!(
        kept(&p, "2026-11-20T00:00:00Z"),
        vec![K::NewestComplete, K::KeepLast { n: 1 }]
    );
    assert_eq!(kept(&p, "2026-11-01T00:00:00Z"), vec![]);
    assert_eq!(p.current_timeline, Some(Timeline(3)));
    let recoverable = WalReason::Recoverable {
        base: b3.clone(),
        window_seconds: None,
    };
    assert!(wal_keeps(&p, 3, 0x22).contains(&WalReason::BackupRange { label: b3.clone() }));
    assert!(wal_keeps(&p, 3, 0x26).contains(&recoverable));
    // Timeline 3's history reaches back to timeline 1 before 0x18: that part of 1 is before
    // the base; timeline 1 after the branch and timeline 2 hold no kept backup.
    assert_eq!(
        wal_keeps(&p, 1, 0x12),
        vec![],
        "expired backup's WAL between the oldest backup and the branch"
    );
    assert_eq!(
        wal_keeps(&p, 1, 0x10),
        vec![],
        "the oldest backup's own start goes with it"
    );
    assert_eq!(
        wal_keeps(&p, 2, 0x24),
        vec![WalReason::BranchNotBelowBase { base: b3.clone() }]
    );
    assert_eq!(
        wal_keeps(&p, 2, 0x20),
        vec![],
        "below the base on a branch without backups"
    );
    let h = |tli: u32| {
        p.histories
            .iter()
            .find(|h| h.timeline.0 == tli)
            .unwrap()
            .decision
            .clone()
    };
    assert_eq!(
        h(3),
        HistoryDecision::Keep {
            reasons: vec![HistoryReason::KeptTimeline, HistoryReason::KeepsWal]
        }
    );
    assert_eq!(
        h(2),
        HistoryDecision::Keep {
            reasons: vec![HistoryReason::KeepsWal]
        }
    );
    assert!(p.deletions().histories.is_empty());
}

#[test]
fn after_a_timeline_reset_backups_are_ordered_by_time_not_by_name() {
    // Old backups on timeline 5 with high LSNs; after a pg_upgrade-like reset the cluster is
    // on timeline 1 with low LSNs, and those backups are the newest (WAL-G #636).
    let repo = Repo {
        backups: vec![
            backup("2026-11-01T00:00:00Z", 5, 0x500, 0x501),
            backup("2026-11-02T00:00:00Z", 5, 0x510, 0x511),
            backup("2026-11-10T00:00:00Z", 1, 0x03, 0x04),
            backup("2026-11-11T00:00:00Z", 1, 0x08, 0x09),
        ],
        wal: Some(archive(&[(5, 0x500..=0x520), (1, 0x01..=0x0C)], &[])),
        ..Repo::default()
    };
    let p = repo.plan(
        &retention(
            chrono_tz::UTC,
            KeepRules {
                keep_last: 2,
                ..rules()
            },
            None,
        ),
        "2026-12-01T00:00:00Z",
    );
    assert_eq!(
        kept(&p, "2026-11-11T00:00:00Z"),
        vec![K::NewestComplete, K::KeepLast { n: 2 }]
    );
    assert_eq!(kept(&p, "2026-11-10T00:00:00Z"), vec![K::KeepLast { n: 2 }]);
    assert_eq!(kept(&p, "2026-11-02T00:00:00Z"), vec![]);
    assert_eq!(kept(&p, "2026-11-01T00:00:00Z"), vec![]);
    assert_eq!(p.current_timeline, Some(Timeline(1)));
    assert_eq!(p.pitr_base, Some(label("2026-11-10T00:00:00Z")));
    let newest = label("2026-11-11T00:00:00Z");
    assert!(wal_keeps(&p, 1, 0x0C).contains(&WalReason::AfterNewestBackup { label: newest }));
    assert!(!wal_keeps(&p, 1, 0x03).is_empty());
    // The old timeline is below the base by time: it goes whole, though its names are higher.
    assert_eq!(wal_keeps(&p, 5, 0x505), vec![]);
    assert_eq!(wal_keeps(&p, 5, 0x520), vec![]);
    // The new cluster's WAL before its oldest backup goes: no window keeps it (see
    // `a_wal_only_repository_...` for the window that does), and no restore can use it.
    assert_eq!(wal_keeps(&p, 1, 0x01), vec![]);
    let d = p.deletions();
    let tl1: Vec<&String> = d
        .wal
        .iter()
        .filter(|k| k.starts_with("wal/00000001/"))
        .collect();
    assert_eq!(tl1.len(), 2, "{tl1:?}");
    assert_eq!(d.wal.len(), 0x21 + 2);
}

fn dump(at: &str, dbs: &[&str]) -> DumpManifest {
    let l = label(at);
    let o = |key: String| StoredObject {
        key,
        size: 100,
        stored_size: 10,
        sha256: Sha256Digest::of(b"x"),
    };
    DumpManifest {
        format_version: DUMP_MANIFEST_VERSION,
        label: l.clone(),
        system_identifier: 1,
        server_version: "15.18".into(),
        pg_dump_version: "15.18".into(),
        start_time: t(at),
        stop_time: t(at),
        role_passwords: true,
        globals: o(layout::dump_globals_key(l.as_str())),
        databases: dbs
            .iter()
            .map(|db| DatabaseDump {
                name: db.to_string(),
                object: o(layout::dump_database_key(l.as_str(), db)),
                toc_entries: 1,
                start_time: t(at),
                stop_time: t(at),
            })
            .collect(),
    }
}

#[test]
fn dumps_are_kept_per_database_and_a_label_goes_only_when_no_entry_stays() {
    let repo = Repo {
        dumps: vec![
            dump("2026-11-28T02:00:00Z", &["app", "shop"]),
            dump("2026-11-29T02:00:00Z", &["app"]),
            dump("2026-11-30T02:00:00Z", &["app"]),
        ],
        dumps_incomplete: vec![InProgress {
            label: label("2026-11-30T03:00:00Z"),
            live: false,
        }],
        ..Repo::default()
    };
    let p = repo.plan(
        &retention(
            chrono_tz::UTC,
            KeepRules {
                keep_last: 1,
                ..rules()
            },
            None,
        ),
        "2026-12-01T00:00:00Z",
    );
    let d = |at: &str| p.dump(label(at).as_str()).unwrap().clone();
    // shop's only dump is in the oldest label: it keeps that label.
    let oldest = d("2026-11-28T02:00:00Z");
    assert_eq!(
        oldest.decision,
        Decision::Keep {
            reasons: vec![K::DatabaseKept {
                database: Some("shop".into())
            }]
        }
    );
    assert_eq!(
        oldest.databases[0].reasons,
        vec![],
        "app's entry alone would go"
    );
    assert_eq!(
        oldest.databases[1].reasons,
        vec![K::NewestComplete, K::KeepLast { n: 1 }]
    );
    assert_eq!(
        d("2026-11-29T02:00:00Z").decision,
        Decision::Delete {
            reason: DeleteReason::Expired
        }
    );
    assert!(d("2026-11-30T02:00:00Z").decision.is_keep());
    let del = p.deletions();
    let gone = label("2026-11-29T02:00:00Z");
    assert_eq!(
        del.manifests,
        vec![layout::dump_manifest_key(gone.as_str())]
    );
    assert!(
        del.objects
            .contains(&layout::dump_database_key(gone.as_str(), "app"))
    );
    assert!(
        del.objects
            .contains(&layout::dump_globals_key(gone.as_str()))
    );
    assert!(
        del.prefixes
            .contains(&layout::dump_prefix("20261130T030000Z"))
    );
    assert_eq!(p.freed.dump_bytes, 20);
    assert_eq!(
        p.dumps_incomplete[0].decision,
        Decision::Delete {
            reason: DeleteReason::Abandoned
        }
    );
}

#[test]
fn a_dump_manifest_naming_keys_outside_its_label_does_not_get_them_deleted() {
    let mut forged = dump("2026-11-28T02:00:00Z", &["app"]);
    forged.databases[0].object.key = "wal/00000001/00000000/000000010000000000000001-x.zst".into();
    forged.globals.key = "blocks/ab/abcd.zst".into();
    let repo = Repo {
        dumps: vec![forged, dump("2026-11-29T02:00:00Z", &["app"])],
        ..Repo::default()
    };
    let rules = KeepRules {
        keep_last: 1,
        ..rules()
    };
    let p = repo.plan(
        &retention(chrono_tz::UTC, rules, None),
        "2026-12-01T00:00:00Z",
    );
    let gone = label("2026-11-28T02:00:00Z");
    let del = p.deletions();
    assert_eq!(
        del.manifests,
        vec![layout::dump_manifest_key(gone.as_str())]
    );
    assert!(del.objects.is_empty(), "{:?}", del.objects);
    assert_eq!(del.prefixes, vec![layout::dump_prefix(gone.as_str())]);
}

#[test]
fn no_rules_keep_everything_and_the_json_form_is_stable() {
    let repo = Repo {
        backups: backups(&["2026-11-28T00:00:00Z", "2026-11-29T00:00:00Z"]),
        ..Repo::default()
    };
    let mut policy = retention(chrono_tz::UTC, rules(), None);
    policy.backups = None;
    let p = repo.plan(&policy, "2026-12-01T00:00:00Z");
    assert_eq!(kept(&p, "2026-11-28T00:00:00Z"), vec![K::NoRules]);
    let json = serde_json::to_value(&p).unwrap();
    assert_eq!(json["backups"][0]["action"], "keep");
    assert_eq!(json["backups"][0]["reasons"][0]["rule"], "no_rules");
    assert_eq!(json["backups"][0]["label"], "20261128T000000Z");
    assert_eq!(json["now"], "2026-12-01T00:00:00Z");
    assert_eq!(json["force"]["needed"], false);
    assert!(json.get("deletions").is_none());
}
