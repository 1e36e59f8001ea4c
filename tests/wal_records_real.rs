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

/// A transaction end as the server reported it.
struct Expected {
    kind: XactEndKind,
    xid: u32,
    /// `pg_xact_commit_timestamp`, µs since the Unix epoch (none for aborts).
    time_us: Option<i64>,
    /// The insert position before and after the statement.
    before: Lsn,
    after: Lsn,
}

/// Runs `sql`, which ends one transaction and prints its xid (or `xid` is given).
fn observe(c: &PgCluster, kind: XactEndKind, sql: &str, xid: Option<String>) -> Expected {
    let insert_lsn = || lsn(&c.psql("select pg_current_wal_insert_lsn()"));
    let before = insert_lsn();
    let printed = c.psql(sql);
    let after = insert_lsn();
    let xid = xid.unwrap_or(printed);
    let time_us = (kind != XactEndKind::Abort).then(|| {
        c.psql(&format!(
            "select (extract(epoch from pg_xact_commit_timestamp('{xid}'::xid)) * 1000000)::bigint"
        ))
        .parse()
        .unwrap()
    });
    Expected {
        kind,
        xid: xid.parse().unwrap(),
        time_us,
        before,
        after,
    }
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

    // Small commits, and one with 60 kB of incompressible data: records across pages.
    let pad = "(select string_agg(md5(g::text), '') from generate_series(1, 2000) g)";
    let mut expected = Vec::new();
    for pad in ["'a'", pad] {
        let sql = format!(
            "with ins as (insert into t select 1, {pad} returning 1) \
             select txid_current() from (select count(*) from ins) c"
        );
        expected.push(observe(&c, XactEndKind::Commit, &sql, None));
    }
    // A commit that drops a relation (relfilenodes, dropped stats and invalidations in it).
    c.psql("create table gone (i int)");
    let sql = "begin; drop table gone; select txid_current(); commit";
    expected.push(observe(&c, XactEndKind::Commit, sql, None));
    let sql = "begin; insert into t values (2); select txid_current(); rollback";
    expected.push(observe(&c, XactEndKind::Abort, sql, None));
    // A prepared transaction, committed.
    c.psql("begin; insert into t values (3); prepare transaction 'p1'");
    let xid = c.psql("select transaction from pg_prepared_xacts where gid = 'p1'");
    let sql = "commit prepared 'p1'";
    expected.push(observe(&c, XactEndKind::CommitPrepared, sql, Some(xid)));
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

    for e in &expected {
        let xid = e.xid;
        let found: Vec<_> = r.xact_ends.iter().filter(|x| x.xid == xid).collect();
        assert_eq!(found.len(), 1, "xid {xid}: {:?}", r.xact_ends);
        let x = found[0];
        assert_eq!(x.kind, e.kind, "xid {xid}");
        if let Some(us) = e.time_us {
            assert_eq!(x.time.timestamp_micros(), us, "xid {xid}: commit time");
        }
        assert!(
            e.before <= x.start && x.end <= e.after,
            "xid {xid}: record {}..{} not between {} and {}",
            x.start,
            x.end,
            e.before,
            e.after
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
