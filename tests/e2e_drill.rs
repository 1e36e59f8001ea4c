//! Restore drills end to end (issue 13) against real PostgreSQL 15, on a local and an S3
//! repository. Every drill starts from `common::drill::DrillSource`, a source configured as
//! production ones are (see that module for why each setting is there).
//!
//! This file starts with the fixture's own proof: the source really runs with the production
//! settings a drill must not inherit, and its backup and dump are in the repository.

mod common;

use common::drill::{Damage, DrillSource, PRODUCTION_SETTINGS, TABLESPACE_SQL};
use common::pg::{RepoSpec, TestDir};
use common::s3_server::S3Server;
use common::verify::{problems, verify_json};
use std::time::Instant;

const BUCKET: &str = "pgward-drills";

/// Runs `body` against a fresh S3 server and prefix, on a blocking thread (the scenario
/// blocks on subprocesses; the server runs on the runtime's workers).
async fn s3(tag: &'static str, body: fn(&TestDir, RepoSpec)) {
    let server = S3Server::start().await;
    server.storage(BUCKET, tag).await;
    let repo = RepoSpec::S3 {
        endpoint: server.endpoint.clone(),
        bucket: BUCKET.to_string(),
        prefix: tag.to_string(),
        access_key: server.access_key.clone(),
        secret_key: server.secret_key.clone(),
    };
    let result = tokio::task::spawn_blocking(move || {
        let dir = TestDir::new(tag);
        body(&dir, repo);
    })
    .await;
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
    drop(server);
}

fn local(tag: &str, body: fn(&TestDir, RepoSpec)) {
    let dir = TestDir::new(tag);
    let repo = RepoSpec::Local(dir.path().join("repo"));
    body(&dir, repo);
}

/// The source runs with every production setting, its tablespace lies outside PGDATA, and
/// `info --json` lists the fixture's backup and dump; the `wal/` listing is stable between two
/// reads and nothing of a drill exists yet. Then the damage helpers: a flipped byte in a WAL
/// object, a truncated block and a deleted dump object are each found by `verify --full`.
fn fixture_body(dir: &TestDir, repo: RepoSpec) {
    let t = Instant::now();
    let s = DrillSource::start(dir, repo);
    for (name, want) in PRODUCTION_SETTINGS {
        assert_eq!(
            s.src.cluster.psql(&format!("show {name}")),
            want,
            "SHOW {name}"
        );
    }
    // The include_dir really is read: work_mem comes from conf.d, not postgresql.conf.
    let from = s
        .src
        .cluster
        .psql("select sourcefile from pg_settings where name = 'work_mem'");
    assert!(
        from.ends_with("/conf.d/10-memory.conf"),
        "work_mem set in {from}"
    );
    assert!(
        s.src
            .cluster
            .psql("show archive_command")
            .contains("wal-push"),
        "archive_command is pgward's"
    );

    let location = s
        .src
        .cluster
        .psql("select pg_tablespace_location(oid) from pg_tablespace where spcname = 'bb_archive'");
    assert_eq!(location, s.tablespace.to_string_lossy());
    assert!(!s.tablespace.starts_with(&s.src.cluster.datadir));
    assert_eq!(
        s.src
            .cluster
            .psql_db("bookedbarber", TABLESPACE_SQL)
            .split('/')
            .next(),
        Some("1000")
    );
    let counts = s.src.cluster.psql_db(
        "bookedbarber",
        "select (select count(*) from users) || '/' || (select count(*) from appointments)",
    );
    assert_eq!(counts, "408/2000");

    let info = s.info();
    let backups: Vec<&str> = info["backups"]
        .as_array()
        .expect("backups")
        .iter()
        .filter_map(|b| b["label"].as_str())
        .collect();
    assert_eq!(backups, [s.backup.as_str()], "{info:#}");
    let dump = &info["dumps"][0];
    assert_eq!(dump["label"], s.dump.as_str(), "{info:#}");
    let dbs: Vec<&str> = dump["databases"]
        .as_array()
        .expect("databases")
        .iter()
        .filter_map(|d| d["name"].as_str())
        .collect();
    assert!(dbs.contains(&"bookedbarber"), "{info:#}");
    assert_eq!(info["drills"], serde_json::json!([]), "{info:#}");

    let wal = s.wal_listing();
    assert!(
        wal.len() >= 3,
        "the archive holds the backup's WAL and more: {wal:?}"
    );
    assert_eq!(s.wal_listing(), wal);
    let drill = s.write_drill("weekly", "target = \"latest\"\n");
    assert!(drill.starts_with(&s.drills));
    s.assert_nothing_left();
    eprintln!("[{:>5.1} s] fixture checked", t.elapsed().as_secs_f64());

    // The damage helpers reach the objects pgward reads, on either backend: verify finds each.
    let segments = s.commit_and_archive(2);
    assert_eq!(segments.len(), 2);
    let wal_key = s.wal_key(&segments[0]);
    s.damage(&wal_key, Damage::FlipByte { at: 100 });
    let block = s.keys("blocks/").into_iter().next().expect("a block");
    s.damage(&block, Damage::Truncate { to: 10 });
    let dump_prefix = format!("dumps/{}/", s.dump);
    let dump_object = s
        .keys(&dump_prefix)
        .into_iter()
        .find(|k| k.contains("bookedbarber"))
        .unwrap_or_else(|| panic!("no bookedbarber object under {dump_prefix}"));
    s.damage(&dump_object, Damage::Delete);
    let (ok, report) = verify_json(&s.root, s.cfg(), &["--full"]);
    assert!(!ok, "{report:#}");
    for (kind, key) in [
        ("wal_corrupt", &wal_key),
        ("block_corrupt", &block),
        ("dump_object_missing", &dump_object),
    ] {
        let found = problems(&report, kind);
        assert!(
            found.iter().any(|p| p.to_string().contains(key.as_str())),
            "verify should name {kind} {key}: {report:#}"
        );
    }
}

#[test]
fn fixture_source_is_production_like() {
    local("drill-fixture", fixture_body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixture_source_is_production_like_s3() {
    s3("drill-fixture-s3", fixture_body).await;
}
