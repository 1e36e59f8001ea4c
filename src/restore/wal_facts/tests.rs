//! Crafted segments (1 MiB) stored in memory, the planner's plan, and what the bounded reads
//! gather: which segments, in which order, where they stop and what they find.

use super::*;
use crate::codec::Sha256Digest;
use crate::pg::WalFileName;
use crate::pg::history::TimelineHistory;
use crate::pg::wal_records::testing::{Builder, commit_main, main_only};
use crate::pg::wal_records::{WAL_PAGE_SIZE, pg_timestamp};
use crate::repo::catalog::BackupSummary;
use crate::repo::layout;
use crate::restore::plan::{self, ArchiveView, PlanRequest};
use crate::restore::target::{TimelineChoice, parse_time};
use crate::storage::memory::MemoryStorage;
use bytes::Bytes;
use std::collections::BTreeMap;

const SEG: u64 = 1 << 20;
/// 2026-11-22 10:00:00 UTC in PostgreSQL microseconds.
const T0: i64 = (1_795_341_600 - 946_684_800) * 1_000_000;
const MINUTE: i64 = 60_000_000;

fn running_xacts(next: u32) -> Vec<u8> {
    let mut m = vec![0u8; 24];
    m[12..16].copy_from_slice(&next.to_le_bytes());
    main_only(&m)
}

fn restore_point(name: &str, at: i64) -> Vec<u8> {
    let mut m = commit_main(at);
    m.extend_from_slice(name.as_bytes());
    m.resize(8 + 64, 0);
    main_only(&m)
}

/// Segment `segno`, its records written by `fill`, ended by an `XLOG_SWITCH` (as archived
/// segments end after `pg_switch_wal()`).
fn segment(segno: u64, fill: impl FnOnce(&mut Builder)) -> Vec<u8> {
    let mut b = Builder::with_seg_size(segno * SEG, SEG as usize, SEG as usize);
    fill(&mut b);
    b.record(0, 0x40, 0, &[]);
    b.buf
}

async fn put(s: &MemoryStorage, name: &str, bytes: &[u8]) {
    let name = WalFileName::parse(name).unwrap();
    let enc = codec::encode_bytes(bytes, 1).unwrap();
    s.put(&layout::wal_key(&name, &enc.sha256), Bytes::from(enc.data))
        .await
        .unwrap();
}

fn seg_name(tli: u32, segno: u64) -> String {
    WalSegmentName::from_segno(Timeline(tli), segno, SEG).to_string()
}

/// Timeline 1, segments 3..=6 after a backup in segment 3:
/// 3: running xacts (next 700), commit 700 at T0;
/// 4: commit 701 at T0+1m, restore point `rp`;
/// 5: an insert by xid 702, no commit;
/// 6: a record without xid.
async fn archive() -> MemoryStorage {
    let s = MemoryStorage::new();
    let segs = [
        segment(3, |b| {
            b.record(8, 0x10, 0, &running_xacts(700));
            b.record(1, 0x00, 700, &main_only(&commit_main(T0)));
        }),
        segment(4, |b| {
            b.record(1, 0x00, 701, &main_only(&commit_main(T0 + MINUTE)));
            b.record(0, 0x70, 0, &restore_point("rp", T0 + MINUTE));
        }),
        segment(5, |b| {
            b.record(10, 0x00, 702, &main_only(&[1; 40]));
        }),
        segment(6, |b| {
            b.record(10, 0x00, 0, &main_only(&[2; 40]));
        }),
    ];
    for (i, bytes) in segs.iter().enumerate() {
        put(&s, &seg_name(1, 3 + i as u64), bytes).await;
    }
    s
}

fn backup() -> BackupSummary {
    BackupSummary {
        label: crate::repo::label::Label::parse("B").unwrap(),
        timeline: Timeline(1),
        start_lsn: Lsn(3 * SEG + 0x28),
        stop_lsn: Lsn(3 * SEG + 0x100),
        start_wal: WalSegmentName::parse(&seg_name(1, 3)).unwrap(),
        stop_wal: WalSegmentName::parse(&seg_name(1, 3)).unwrap(),
        start_time: "2026-11-22T09:59:00Z".parse().unwrap(),
        stop_time: "2026-11-22T09:59:30Z".parse().unwrap(),
        total_bytes: 0,
        stored_bytes: 0,
        files: 0,
        bad_pages: 0,
        data_checksums: false,
    }
}

struct Loaded {
    wal: WalCatalog,
    histories: BTreeMap<Timeline, TimelineHistory>,
}

async fn load(s: &MemoryStorage, histories: &[(u32, &str)]) -> Loaded {
    let listing = s.list(layout::WAL_PREFIX).await.unwrap();
    Loaded {
        wal: WalCatalog::from_listing(&listing, SEG),
        histories: histories
            .iter()
            .map(|&(t, text)| {
                (
                    Timeline(t),
                    TimelineHistory::parse(Timeline(t), text).unwrap(),
                )
            })
            .collect(),
    }
}

fn plan_for(l: &Loaded, target: RecoveryTarget) -> RestorePlan {
    let backups = vec![backup()];
    plan::plan(
        &ArchiveView {
            backups: &backups,
            in_progress: &[],
            histories: &l.histories,
            wal: &l.wal,
        },
        &PlanRequest {
            backup: None,
            target,
            timeline: TimelineChoice::Latest,
            timeline_given: false,
        },
    )
    .unwrap()
}

fn req(timeline_given: bool) -> ReachRequest {
    ReachRequest {
        inclusive: true,
        timeline_given,
        now: chrono::Utc::now(),
    }
}

fn time(s: &str) -> RecoveryTarget {
    RecoveryTarget::Time(parse_time(s).unwrap())
}

#[tokio::test]
async fn each_target_reads_back_only_as_far_as_it_needs() {
    let s = archive().await;
    let l = load(&s, &[]).await;
    let names = |v: &[u64]| v.iter().map(|&n| seg_name(1, n)).collect::<Vec<_>>();

    // Time: back to the newest segment with a commit.
    let p = plan_for(&l, time("2026-11-22 10:30:00+00"));
    assert_eq!(
        end_scan(&p, &l.wal)
            .iter()
            .map(|i| i.name.to_string())
            .collect::<Vec<_>>(),
        names(&[6, 5, 4, 3])
    );
    let f = gather(&s, &l.wal, &p, &req(false)).await;
    let e = f.end.unwrap();
    assert_eq!(e.segments_read, names(&[6, 5, 4]));
    assert!(!e.back_to_backup);
    assert_eq!(e.incomplete, None);
    let last = e.last_xact_end.unwrap();
    assert_eq!(
        (last.xid, last.time),
        (701, pg_timestamp(T0 + MINUTE).unwrap())
    );
    assert!(f.forks.is_empty());

    // Xid: back to the running-xacts record; the horizon counts the newer xids too.
    let p = plan_for(&l, RecoveryTarget::Xid(702));
    let e = gather(&s, &l.wal, &p, &req(false)).await.end.unwrap();
    assert_eq!(e.segments_read, names(&[6, 5, 4, 3]));
    assert!(e.back_to_backup);
    assert_eq!(e.xid_horizon, Some(703));

    // Name: found on the way, or every segment after the backup read.
    let p = plan_for(&l, RecoveryTarget::Name("rp".into()));
    let e = gather(&s, &l.wal, &p, &req(false)).await.end.unwrap();
    assert_eq!(e.segments_read, names(&[6, 5, 4]));
    assert_eq!(
        e.restore_points,
        vec![("rp".to_string(), Lsn(4 * SEG + 184))]
    );
    let p = plan_for(&l, RecoveryTarget::Name("nope".into()));
    let e = gather(&s, &l.wal, &p, &req(false)).await.end.unwrap();
    assert!(e.back_to_backup && e.incomplete.is_none(), "{e:?}");

    // Other targets read nothing.
    for t in [
        RecoveryTarget::EndOfArchive,
        RecoveryTarget::Lsn(Lsn(5 * SEG)),
    ] {
        assert_eq!(
            gather(&s, &l.wal, &plan_for(&l, t), &req(false)).await,
            WalFacts::default()
        );
    }
}

#[tokio::test]
async fn a_segment_that_cannot_be_read_is_not_evidence() {
    let s = archive().await;
    // Segment 6 archived with content that is not WAL (a zeroed page header).
    let mut bad = segment(6, |b| {
        b.record(10, 0x00, 0, &main_only(&[2; 40]));
    });
    bad[..WAL_PAGE_SIZE].fill(0);
    let l_good = load(&s, &[]).await;
    let key = &l_good.wal.timelines[&Timeline(1)].segments[&6][0].key;
    s.delete(key).await.unwrap();
    put(&s, &seg_name(1, 6), &bad).await;
    let l = load(&s, &[]).await;
    let p = plan_for(&l, time("2026-11-22 10:30:00+00"));
    let e = gather(&s, &l.wal, &p, &req(false)).await.end.unwrap();
    assert_eq!(e.segments_read, vec![seg_name(1, 6)]);
    assert_eq!(e.last_xact_end, None);
    let why = e.incomplete.unwrap();
    assert!(
        why.contains("000000010000000000000006 could not be read"),
        "{why}"
    );

    // Stored under another content's hash: the decode refuses it.
    let s = archive().await;
    let l = load(&s, &[]).await;
    let stored = &l.wal.timelines[&Timeline(1)].segments[&6][0];
    let enc = codec::encode_bytes(b"other", 1).unwrap();
    s.put(&stored.key, Bytes::from(enc.data)).await.unwrap();
    let e = gather(&s, &l.wal, &p, &req(false)).await.end.unwrap();
    assert!(e.segments_read.is_empty());
    assert!(e.incomplete.unwrap().contains("sha256"));
    let _ = Sha256Digest::of(b"");
}

#[tokio::test]
async fn the_parent_is_read_after_the_branch_point() {
    // Timeline 2 branches off 1 in segment 4, after commit 701; timeline 1 goes on and
    // commits 703 in segment 5.
    let s = archive().await;
    let at = Lsn(4 * SEG + 0x60);
    let old5 = load(&s, &[]).await.wal.timelines[&Timeline(1)].segments[&5][0]
        .key
        .clone();
    s.delete(&old5).await.unwrap();
    put(
        &s,
        &seg_name(1, 5),
        &segment(5, |b| {
            b.record(10, 0x00, 702, &main_only(&[1; 40]));
            b.record(1, 0x00, 703, &main_only(&commit_main(T0 + 2 * MINUTE)));
        }),
    )
    .await;
    for segno in [4, 5] {
        put(&s, &seg_name(2, segno), &segment(segno, |_| {})).await;
    }
    let text = format!("1\t{at}\tno recovery target specified\n");
    let l = load(&s, &[(2, text.as_str())]).await;
    let p = plan_for(&l, time("2026-11-22 10:30:00+00"));
    assert_eq!(p.timeline.timeline, Timeline(2));
    let scans = fork_scans(&p, &l.wal);
    assert_eq!(scans.len(), 1);
    assert_eq!(
        scans[0]
            .3
            .iter()
            .map(|i| i.name.to_string())
            .collect::<Vec<_>>(),
        vec![seg_name(1, 4), seg_name(1, 5), seg_name(1, 6)]
    );
    let f = gather(&s, &l.wal, &p, &req(false)).await;
    let fork = &f.forks[0];
    assert_eq!(
        (fork.parent, fork.child, fork.at),
        (Timeline(1), Timeline(2), at)
    );
    assert_eq!(fork.segments_read, vec![seg_name(1, 4), seg_name(1, 5)]);
    let first = fork.first_xact_end_after.unwrap();
    assert_eq!(
        (first.xid, first.time),
        (703, pg_timestamp(T0 + 2 * MINUTE).unwrap())
    );
    // Timeline 2's own end: read from timeline 2 (empty here), and 1 before the branch.
    let e = f.end.unwrap();
    assert_eq!(
        e.segments_read,
        vec![seg_name(2, 5), seg_name(2, 4), seg_name(1, 3)]
    );
    // With the timeline given, the parent is not read.
    assert!(gather(&s, &l.wal, &p, &req(true)).await.forks.is_empty());
}
