//! Table-driven: a plan, what the WAL showed, the request → refused (with the words the
//! message must hold) or accepted (with the warnings).

use super::*;
use crate::repo::catalog::BackupSummary;
use crate::restore::plan::{PathStep, TimelinePlan, WalRange};
use crate::restore::target::{TimelineChoice, parse_time};

fn lsn(s: &str) -> Lsn {
    s.parse().unwrap()
}

fn utc(s: &str) -> DateTime<Utc> {
    parse_time(s).unwrap().utc()
}

fn plan(target: RecoveryTarget, tli: u32) -> RestorePlan {
    RestorePlan {
        backup: BackupSummary {
            label: crate::repo::label::Label::parse("B").unwrap(),
            timeline: Timeline(1),
            start_lsn: lsn("0/3000028"),
            stop_lsn: lsn("0/3000100"),
            start_wal: crate::pg::WalSegmentName::parse("000000010000000000000003").unwrap(),
            stop_wal: crate::pg::WalSegmentName::parse("000000010000000000000003").unwrap(),
            start_time: "2026-11-22T10:00:00Z".parse().unwrap(),
            stop_time: "2026-11-22T10:00:30Z".parse().unwrap(),
            total_bytes: 0,
            stored_bytes: 0,
            files: 0,
            bad_pages: 0,
            data_checksums: false,
        },
        reason: String::new(),
        target,
        timeline: TimelinePlan {
            requested: TimelineChoice::Latest,
            timeline: Timeline(tli),
            setting: "latest".into(),
            path: vec![PathStep {
                timeline: Timeline(tli),
                begins: Lsn(0),
                ends: None,
            }],
        },
        wal_needed: WalRange {
            first: "000000010000000000000003".into(),
            last: "000000010000000000000003".into(),
            segments: 1,
        },
        wal_available_until: lsn("0/8000000"),
        wal_hole: None,
        warnings: vec![],
    }
}

fn time(s: &str) -> RecoveryTarget {
    RecoveryTarget::Time(parse_time(s).unwrap())
}

fn seen(t: &str, xid: u32, l: &str, tli: u32) -> SeenXactEnd {
    SeenXactEnd {
        time: utc(t),
        xid,
        lsn: lsn(l),
        timeline: Timeline(tli),
    }
}

/// The archive ends in segment 7 with a commit of xid 900 at 11:00:00.5.
fn end() -> ArchiveEnd {
    ArchiveEnd {
        segments_read: vec![
            "000000010000000000000007".into(),
            "000000010000000000000006".into(),
        ],
        end: lsn("0/7A00100"),
        back_to_backup: false,
        last_xact_end: Some(seen("2026-11-22 11:00:00.5+00", 900, "0/7A00000", 1)),
        xid_horizon: Some(902),
        restore_points: vec![("before".into(), lsn("0/6000200"))],
        incomplete: None,
    }
}

fn req() -> ReachRequest {
    ReachRequest {
        inclusive: true,
        timeline_given: false,
        now: utc("2026-11-22 12:00:00+00"),
    }
}

enum Want {
    Refused(&'static [&'static str]),
    /// Accepted with warnings holding these words (empty: no warning).
    Accepted(&'static [&'static str]),
}

fn judge(plan: &RestorePlan, facts: &WalFacts, req: &ReachRequest, want: &Want, what: &str) {
    let got = check(plan, facts, req);
    match (want, got) {
        (Want::Refused(words), Err(e)) => {
            let msg = format!("{e:#}");
            for w in *words {
                assert!(msg.contains(w), "{what}: {w:?} missing in\n{msg}");
            }
            assert!(msg.contains("\nhint: "), "{what}: no hint in\n{msg}");
        }
        (Want::Accepted(words), Ok(warnings)) => {
            if words.is_empty() {
                assert!(warnings.is_empty(), "{what}: {warnings:?}");
            }
            let all = warnings.join("\n");
            for w in *words {
                assert!(all.contains(w), "{what}: {w:?} missing in {warnings:?}");
            }
        }
        (Want::Refused(_), Ok(w)) => panic!("{what}: accepted ({w:?}), should be refused"),
        (Want::Accepted(_), Err(e)) => panic!("{what}: refused: {e:#}"),
    }
}

#[test]
fn time_targets_against_the_end_of_the_archive() {
    let exclusive = ReachRequest {
        inclusive: false,
        ..req()
    };
    let nothing = ArchiveEnd {
        last_xact_end: None,
        back_to_backup: true,
        ..end()
    };
    let unread = ArchiveEnd {
        last_xact_end: None,
        incomplete: Some("cannot read 000000010000000000000007: timed out".into()),
        ..end()
    };
    let few = ArchiveEnd {
        last_xact_end: None,
        ..end()
    };
    let cases: Vec<(&str, &str, ArchiveEnd, ReachRequest, Want)> = vec![
        (
            "before the last commit",
            "2026-11-22 11:00:00+00",
            end(),
            req(),
            Want::Accepted(&[]),
        ),
        (
            "just before it",
            "2026-11-22 11:00:00.499999+00",
            end(),
            req(),
            Want::Accepted(&[]),
        ),
        (
            "at the last commit, inclusive: recovery needs a later one",
            "2026-11-22 11:00:00.5+00",
            end(),
            req(),
            Want::Refused(&[
                "not before the last commit",
                "transaction 900",
                "2026-11-22T11:00:00.500Z",
            ]),
        ),
        (
            "at the last commit, exclusive: stops before it",
            "2026-11-22 11:00:00.5+00",
            end(),
            exclusive,
            Want::Accepted(&[]),
        ),
        (
            "after the end of the archive",
            "2026-11-22 11:30:00+00",
            end(),
            req(),
            Want::Refused(&[
                "the archive on timeline 1 ends at 0/7A00100 (segment 000000010000000000000007)",
                "LSN 0/7A00000",
                "recovery ended before configured recovery target was reached",
                "choose a time before 2026-11-22T11:00:00.500Z",
                "pg_switch_wal()",
            ]),
        ),
        (
            "in the future, and after the last commit",
            "2026-11-22 12:00:01+00",
            end(),
            req(),
            Want::Refused(&[
                "not before the last commit in the archive (and in the future: it is now \
                 2026-11-22T12:00:00Z)",
            ]),
        ),
        (
            "after this host's clock but before the last commit: the server's clock differs",
            "2026-11-22 11:00:00+00",
            end(),
            ReachRequest {
                now: utc("2026-11-22 10:59:00+00"),
                ..req()
            },
            Want::Accepted(&[
                "later than this host's clock",
                "clocks of this host and the database server differ",
            ]),
        ),
        (
            "in the future, with no commit read to judge by",
            "2026-11-22 12:00:01+00",
            ArchiveEnd {
                last_xact_end: None,
                ..end()
            },
            req(),
            Want::Refused(&["is in the future", "it is now 2026-11-22T12:00:00Z"]),
        ),
        (
            "no commit at all after the backup",
            "2026-11-22 10:45:00+00",
            nothing,
            req(),
            Want::Refused(&[
                "no transaction commits or aborts",
                "after backup B",
                "2 segments, 000000010000000000000006 to 000000010000000000000007",
            ]),
        ),
        (
            "the read failed: not checked, said so",
            "2026-11-22 11:30:00+00",
            unread,
            req(),
            Want::Accepted(&["could not check", "timed out"]),
        ),
        (
            "no commit in the bounded read: not checked, said so",
            "2026-11-22 11:30:00+00",
            few,
            req(),
            Want::Accepted(&["could not check", "no commit in the newest 2 segments"]),
        ),
    ];
    for (what, t, e, r, want) in cases {
        let facts = WalFacts {
            end: Some(e),
            forks: vec![],
        };
        judge(&plan(time(t), 1), &facts, &r, &want, what);
    }
    // Past a hole recovery stops at the hole until it is repaired: the WAL before it does not
    // show where the archive ends, so it is not judged (the plan warns of the hole).
    let mut holed = plan(time("2026-11-22 11:30:00+00"), 1);
    holed.wal_hole = Some("000000010000000000000008".into());
    let facts = WalFacts {
        end: Some(end()),
        forks: vec![],
    };
    judge(&holed, &facts, &req(), &Want::Accepted(&[]), "hole");
    // Without facts nothing is refused but the future.
    judge(
        &plan(time("2026-11-22 12:30:00+00"), 1),
        &WalFacts::default(),
        &req(),
        &Want::Refused(&["is in the future"]),
        "no facts, future",
    );
    judge(
        &plan(time("2026-11-22 11:30:00+00"), 1),
        &WalFacts::default(),
        &req(),
        &Want::Accepted(&[]),
        "no facts",
    );
}

#[test]
fn xid_targets_against_the_horizon() {
    let no_anchor = ArchiveEnd {
        xid_horizon: None,
        ..end()
    };
    let cases: Vec<(&str, u64, ArchiveEnd, Want)> = vec![
        ("assigned", 901, end(), Want::Accepted(&[])),
        ("older", 5, end(), Want::Accepted(&[])),
        (
            "at the horizon",
            902,
            end(),
            Want::Refused(&[
                "transaction 902 does not end in the archive",
                "from 902 on",
                "ends at 0/7A00100",
                "txid_current()",
            ]),
        ),
        (
            "epoch-qualified: the low 32 bits count",
            (1u64 << 32) + 950,
            end(),
            Want::Refused(&["transaction 4294968246 does not end"]),
        ),
        (
            "epoch-qualified, assigned",
            (1u64 << 32) + 10,
            end(),
            Want::Accepted(&[]),
        ),
        (
            "no anchor",
            5000,
            no_anchor,
            Want::Accepted(&[
                "could not check that transaction 5000",
                "running-transactions",
            ]),
        ),
    ];
    for (what, x, e, want) in cases {
        let facts = WalFacts {
            end: Some(e),
            forks: vec![],
        };
        judge(
            &plan(RecoveryTarget::Xid(x), 1),
            &facts,
            &req(),
            &want,
            what,
        );
    }
}

#[test]
fn name_targets_against_the_restore_points_read() {
    let all = ArchiveEnd {
        back_to_backup: true,
        ..end()
    };
    let early = ArchiveEnd {
        restore_points: vec![("early".into(), lsn("0/3000080"))],
        back_to_backup: true,
        ..end()
    };
    let cases: Vec<(&str, &str, ArchiveEnd, Want)> = vec![
        (
            "found after the backup",
            "before",
            end(),
            Want::Accepted(&[]),
        ),
        (
            "absent from all the WAL after the backup",
            "Before",
            all,
            Want::Refused(&[
                "restore point 'Before' is not in the WAL archived after backup B",
                "found only before",
                "case-sensitive",
            ]),
        ),
        (
            "absent from the newest segments only",
            "older",
            end(),
            Want::Accepted(&[
                "did not find restore point 'older'",
                "older WAL was not read",
            ]),
        ),
        (
            "only before the backup became consistent",
            "early",
            early,
            Want::Refused(&[
                "is at 0/3000080, before backup B became consistent",
                "--backup",
            ]),
        ),
    ];
    for (what, n, e, want) in cases {
        let facts = WalFacts {
            end: Some(e),
            forks: vec![],
        };
        judge(
            &plan(RecoveryTarget::Name(n.into()), 1),
            &facts,
            &req(),
            &want,
            what,
        );
    }
}

#[test]
fn a_time_after_a_fork_needs_the_timeline_named() {
    // Timeline 2 branched off 1 at 0/B006390; timeline 1 went on, first committing at 11:10.
    let fork = |first: Option<SeenXactEnd>| ForkFacts {
        parent: Timeline(1),
        child: Timeline(2),
        at: lsn("0/B006390"),
        first_xact_end_after: first,
        segments_read: vec!["00000001000000000000000B".into()],
        incomplete: None,
    };
    let went_on = fork(Some(seen("2026-11-22 11:10:00+00", 800, "0/B006400", 1)));
    let given = ReachRequest {
        timeline_given: true,
        ..req()
    };
    let cases: Vec<(&str, &str, ForkFacts, ReachRequest, Want)> = vec![
        (
            "after the parent's first commit past the fork",
            "2026-11-22 11:20:00+00",
            went_on.clone(),
            req(),
            Want::Refused(&[
                "timeline 2 branched off timeline 1 at 0/B006390",
                "transaction 800 at 2026-11-22T11:10:00Z",
                "--target-timeline 1",
                "--target-timeline 2",
            ]),
        ),
        (
            "the same, timeline named",
            "2026-11-22 11:20:00+00",
            went_on.clone(),
            given,
            Want::Accepted(&[]),
        ),
        (
            "before the parent went on",
            "2026-11-22 11:05:00+00",
            went_on,
            req(),
            Want::Accepted(&[]),
        ),
        (
            "the parent's WAL shows no commit in the bounded read",
            "2026-11-22 11:20:00+00",
            fork(None),
            req(),
            Want::Accepted(&["could not tell whether", "--target-timeline 1"]),
        ),
    ];
    for (what, t, f, r, want) in cases {
        let facts = WalFacts {
            end: None,
            forks: vec![f],
        };
        judge(&plan(time(t), 2), &facts, &r, &want, what);
    }
}
