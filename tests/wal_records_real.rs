//! The WAL record reader (`pgward::pg::wal_records`) against WAL written by a real
//! PostgreSQL 15: every commit, abort, prepared commit and restore point the server reports
//! through SQL is found exactly — xid, commit time (`pg_xact_commit_timestamp`, the very
//! `xact_time` recovery compares with `recovery_target_time`), end LSN — and the xid horizon is
//! the next xid the server hands out.

mod common;

use common::pg::*;
use pgward::pg::Lsn;
use pgward::pg::wal_records::{ReadEnd, XactEndKind, read_segment};
use std::time::Instant;

const SEG_SIZE: u64 = 16 << 20;

fn lsn(s: &str) -> Lsn {
    s.parse().unwrap()
}

#[test]
fn reads_what_postgres_reports() {
    let dir = TestDir::new("walrec");
    let mut c = PgCluster::init(
        &dir,
        "src",
        InitOpts {
            data_checksums: false,
            extra_conf: vec![
                "track_commit_timestamp = on".into(),
                "max_prepared_transactions = 2".into(),
                "autovacuum = off".into(),
            ],
        },
    );
    c.start();
    // A fresh segment, and a checkpoint in it (which logs running xacts: the xid anchor).
    c.psql("select pg_switch_wal()");
    c.psql("checkpoint");
    let segment = c.psql("select pg_walfile_name(pg_current_wal_insert_lsn())");
    c.psql("create table t (i int, pad text)");

    // (kind, xid, commit time in µs since the Unix epoch or None for aborts, LSN before it,
    // LSN after it)
    let mut expected: Vec<(XactEndKind, u32, Option<i64>, Lsn, Lsn)> = Vec::new();
    let commit_time = |c: &PgCluster, xid: &str| -> i64 {
        c.psql(&format!(
            "select (extract(epoch from pg_xact_commit_timestamp('{xid}'::xid)) * 1000000)::bigint"
        ))
        .parse()
        .unwrap()
    };
    let insert_lsn = |c: &PgCluster| lsn(&c.psql("select pg_current_wal_insert_lsn()"));
    // Small commits, and one with 60 kB of incompressible data: records across pages.
    for pad in [
        "'a'",
        "(select string_agg(md5(g::text), '') from generate_series(1, 2000) g)",
    ] {
        let before = insert_lsn(&c);
        let xid = c.psql(&format!(
            "with ins as (insert into t select 1, {pad} returning 1) \
             select txid_current() from (select count(*) from ins) c"
        ));
        let after = insert_lsn(&c);
        let time = commit_time(&c, &xid);
        expected.push((
            XactEndKind::Commit,
            xid.parse().unwrap(),
            Some(time),
            before,
            after,
        ));
    }
    // A commit that drops a relation (relfilenodes, dropped stats and invalidations in it).
    c.psql("create table gone (i int)");
    let before = insert_lsn(&c);
    let xid = c.psql("begin; drop table gone; select txid_current(); commit");
    let after = insert_lsn(&c);
    let time = commit_time(&c, &xid);
    expected.push((
        XactEndKind::Commit,
        xid.parse().unwrap(),
        Some(time),
        before,
        after,
    ));
    // An abort.
    let before = insert_lsn(&c);
    let xid = c.psql("begin; insert into t values (2); select txid_current(); rollback");
    let after = insert_lsn(&c);
    expected.push((
        XactEndKind::Abort,
        xid.parse().unwrap(),
        None,
        before,
        after,
    ));
    // A prepared transaction, committed.
    c.psql("begin; insert into t values (3); prepare transaction 'p1'");
    let xid = c.psql("select transaction from pg_prepared_xacts where gid = 'p1'");
    let before = insert_lsn(&c);
    c.psql("commit prepared 'p1'");
    let after = insert_lsn(&c);
    let time = commit_time(&c, &xid);
    expected.push((
        XactEndKind::CommitPrepared,
        xid.parse().unwrap(),
        Some(time),
        before,
        after,
    ));
    let rp_end = lsn(&c.psql("select pg_create_restore_point('rp-test')"));
    let switched = c.psql("select pg_walfile_name(pg_switch_wal())");
    assert_eq!(
        switched, segment,
        "the test's WAL should fit in one segment"
    );
    let next_xid: u32 = c.psql("select txid_current()").parse().unwrap();

    let bytes = std::fs::read(c.datadir.join("pg_wal").join(&segment)).unwrap();
    let segno = u64::from_str_radix(&segment[8..16], 16).unwrap() * 0x100
        + u64::from_str_radix(&segment[16..24], 16).unwrap();
    let started = Instant::now();
    let r = read_segment(&bytes, Lsn(segno * SEG_SIZE), None);
    let took = started.elapsed();
    eprintln!(
        "read {} records of a 16 MiB segment in {:.1} ms (debug build)",
        r.records,
        took.as_secs_f64() * 1000.0
    );
    assert_eq!(r.end, ReadEnd::Switch, "{:?}", r.end);

    for (kind, xid, time, before, after) in &expected {
        let found: Vec<_> = r.xact_ends.iter().filter(|x| x.xid == *xid).collect();
        assert_eq!(found.len(), 1, "xid {xid}: {:?}", r.xact_ends);
        let x = found[0];
        assert_eq!(x.kind, *kind, "xid {xid}");
        if let Some(us) = time {
            assert_eq!(x.time.timestamp_micros(), *us, "xid {xid}: commit time");
        }
        assert!(
            *before <= x.start && x.end <= *after,
            "xid {xid}: record {}..{} not between {before} and {after}",
            x.start,
            x.end
        );
    }
    let rp: Vec<_> = r
        .restore_points
        .iter()
        .map(|p| (&p.name[..], p.end))
        .collect();
    assert_eq!(rp, vec![("rp-test", rp_end)]);
    assert!(
        !r.running_xacts.is_empty(),
        "the checkpoint logs running xacts"
    );
    assert_eq!(r.xid_horizon(), Some(next_xid));

    // Full segments of pgbench WAL (full-page images, heap and btree records, records across
    // segment boundaries): every one reads to its end, none stops on something it cannot
    // follow — an archived segment is valid to its end, and the restore checks rely on it.
    let first = c.psql("select pg_walfile_name(pg_current_wal_insert_lsn())");
    c.pgbench(&["-i", "-s", "2", "-q"]);
    c.pgbench(&["-t", "300", "-c", "2"]);
    // Plenty of plain heap and index WAL too.
    c.psql("create index on t (i)");
    c.psql("insert into t select g, md5(g::text) from generate_series(1, 400000) g");
    let last = c.psql("select pg_walfile_name(pg_switch_wal())");
    let segno = |name: &str| {
        u64::from_str_radix(&name[8..16], 16).unwrap() * 0x100
            + u64::from_str_radix(&name[16..24], 16).unwrap()
    };
    let (first, last) = (segno(&first), segno(&last));
    assert!(
        last > first + 1,
        "pgbench should fill segments ({first}..{last})"
    );
    let path = |s: u64| {
        c.datadir
            .join("pg_wal")
            .join(format!("00000001{:08X}{:08X}", s >> 8, s & 0xFF))
    };
    let mut commits = 0;
    let mut took = Vec::new();
    for s in first..last {
        let bytes = std::fs::read(path(s)).unwrap();
        let next = std::fs::read(path(s + 1)).unwrap();
        let started = Instant::now();
        let r = read_segment(&bytes, Lsn(s * SEG_SIZE), Some(&next));
        took.push(started.elapsed().as_secs_f64() * 1000.0);
        assert!(
            matches!(r.end, ReadEnd::SegmentEnd | ReadEnd::Switch),
            "segment {s:X}: {:?} at {} after {} records",
            r.end,
            r.end_lsn,
            r.records
        );
        commits += r.xact_ends.len();
    }
    took.sort_by(f64::total_cmp);
    eprintln!(
        "{} full pgbench segments read to their end, {commits} commits; per segment: median \
         {:.1} ms, max {:.1} ms (this build)",
        took.len(),
        took[took.len() / 2],
        took[took.len() - 1]
    );
    assert!(commits >= 300, "{commits}");
    c.stop();
}
