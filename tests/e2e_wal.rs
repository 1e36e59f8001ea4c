//! End to end: a real PostgreSQL 15 archives through `pgward wal-push`, a base backup of it
//! recovers through `pgward wal-fetch`, once with a local repository and once with S3 (the
//! in-process S3 server). One body, two backends: what PostgreSQL sees must not depend on where
//! the WAL is kept.
//!
//! Checked along the way: the archiver never fails (its view and the server log), the
//! repository holds one contiguous range of segments up to the last switched one, every archived
//! segment fetches back byte-identical to the file still in pg_wal, and the recovered copy holds
//! exactly the rows committed before the last switch.

mod common;

use common::pg::*;
use common::s3_server::S3Server;
use pgward::storage::Storage;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::time::Duration;

const MARKER_ROWS: u32 = 100;
const MARKER_SQL: &str =
    "select coalesce(string_agg(id || ':' || note, ',' order by id), '') from marker";

#[test]
fn archive_and_recover_local() {
    let dir = TestDir::new("e2e-local");
    let repo = dir.path().join("repo");
    archive_and_recover(&dir, RepoSpec::Local(repo));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_and_recover_s3() {
    // The server runs on the runtime's workers; the PostgreSQL side blocks on subprocesses, so
    // it runs on a blocking thread.
    let server = S3Server::start().await;
    let storage = server.storage("pgward-e2e", "cluster-a").await;
    let repo = RepoSpec::S3 {
        endpoint: server.endpoint.clone(),
        bucket: "pgward-e2e".to_string(),
        prefix: "cluster-a".to_string(),
        access_key: server.access_key.clone(),
        secret_key: server.secret_key.clone(),
    };
    let archived = match tokio::task::spawn_blocking(move || {
        let dir = TestDir::new("e2e-s3");
        archive_and_recover(&dir, repo)
    })
    .await
    {
        Ok(archived) => archived,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    };

    // The bucket holds exactly one object per archived segment, under the documented key.
    let keys: Vec<String> = storage
        .list("wal/00000001/")
        .await
        .expect("list the bucket")
        .into_iter()
        .map(|o| o.key)
        .collect();
    for seg in &archived {
        let prefix = format!("wal/00000001/{}/{seg}-", &seg[8..16]);
        let matching: Vec<&String> = keys.iter().filter(|k| k.starts_with(&prefix)).collect();
        assert_eq!(matching.len(), 1, "objects for {seg}: {matching:?}");
        let sha = matching[0][prefix.len()..].strip_suffix(".zst");
        assert!(
            sha.is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit())),
            "bad key {}",
            matching[0]
        );
    }
    drop(server);
}

/// Runs the whole scenario; returns the archived segment names (timeline 1, in order).
fn archive_and_recover(dir: &TestDir, repo: RepoSpec) -> Vec<String> {
    let bin = reachable_binary();
    let tmp = dir.path();

    // --- the source cluster, archiving through pgward -----------------------------------------
    let mut src = PgCluster::init(
        dir,
        "src",
        InitOpts {
            data_checksums: true,
            // Keep every segment in pg_wal so archived copies can be compared with the originals.
            // No autovacuum: nothing but the test writes WAL, so the archive's end is known.
            extra_conf: vec![
                "archive_mode = on".into(),
                "wal_keep_size = '1GB'".into(),
                "autovacuum = off".into(),
            ],
        },
    );
    let cfg = write_config(dir, &src.datadir, repo.clone());
    let cfg_arg = cfg.to_str().unwrap();
    src.append_conf(&[format!(
        "archive_command = '{} --config {cfg_arg} wal-push %p'",
        bin.display()
    )]);
    pgward_ok(tmp, &["--config", cfg_arg, "init"]);
    // init is idempotent for the same cluster.
    pgward_ok(tmp, &["--config", cfg_arg, "init"]);

    src.start();
    src.pgbench(&["-i", "-s", "5", "-q"]);
    src.psql("select pg_switch_wal()");
    src.pgbench(&["-T", "3", "-c", "2", "-j", "2"]);
    src.psql("select pg_switch_wal()");
    src.psql("create table marker (id int primary key, note text not null)");

    // -X none: the copy has no WAL of its own and can only become consistent from the archive.
    // pg_basebackup waits until the backup's last segment is archived.
    let copy = tmp.join("copy");
    src.pg_basebackup(&copy, &["-X", "none"]);

    src.psql(&format!(
        "insert into marker select g, 'row ' || g from generate_series(1, {MARKER_ROWS}) g"
    ));
    // Read everything to compare before the last switch: with data checksums, the first read of
    // freshly written rows logs full-page images for hint bits, and that WAL must not spill into
    // a segment after the one the archive is expected to end with.
    let expected_marker: Vec<String> = (1..=MARKER_ROWS).map(|i| format!("{i}:row {i}")).collect();
    let expected_marker = expected_marker.join(",");
    assert_eq!(src.psql(MARKER_SQL), expected_marker);
    let accounts = src.psql("select count(*) || '/' || sum(abalance) from pgbench_accounts");
    assert!(accounts.starts_with("500000/"), "{accounts}");
    let sysid = src.psql("select system_identifier from pg_control_system()");

    let last = src.psql("select pg_walfile_name(pg_switch_wal())");
    src.wait_until(
        "select last_archived_wal from pg_stat_archiver",
        &last,
        Duration::from_secs(120),
    );
    assert_eq!(
        src.psql("select failed_count from pg_stat_archiver"),
        "0",
        "archiver reported failures\n{}",
        src.log_tail(60)
    );
    // Exit codes above 125 make the archiver die FATAL without counting a failure.
    src.assert_no_fatal();

    // --- what the repository says it holds -----------------------------------------------------
    let info = pgward_ok(tmp, &["--config", cfg_arg, "info", "--json"]);
    let info: Value = serde_json::from_str(&info.stdout)
        .unwrap_or_else(|e| panic!("info --json is not JSON ({e}):\n{}", info.stdout));
    assert_eq!(
        info["system_identifier"].as_str(),
        Some(sysid.as_str()),
        "{info:#}"
    );
    let timelines = info["timelines"].as_array().expect("timelines array");
    assert_eq!(timelines.len(), 1, "only timeline 1 expected: {info:#}");
    let tl = &timelines[0];
    assert_eq!(tl["timeline"].as_u64(), Some(1), "{info:#}");
    let ranges = tl["ranges"].as_array().expect("ranges array");
    assert_eq!(ranges.len(), 1, "one contiguous range expected: {info:#}");
    let gaps = tl["gaps"].as_array().expect("gaps array");
    assert!(gaps.is_empty(), "no gaps expected: {info:#}");
    let first = ranges[0]["first"].as_str().expect("first").to_string();
    let range_last = ranges[0]["last"].as_str().expect("last").to_string();
    assert_eq!(
        range_last,
        last,
        "archive must end at the last switched segment: {info:#}\n{}",
        src.log_tail(40)
    );
    let (tli, first_no) = parse_segment(&first);
    let (_, last_no) = parse_segment(&last);
    assert_eq!(tli, 1);
    assert_eq!(
        first_no, 1,
        "archiving was on from the start: {first}..{last}"
    );
    let archived: Vec<String> = (first_no..=last_no).map(|n| segment_name(1, n)).collect();
    assert_eq!(
        ranges[0]["segments"].as_u64(),
        Some(archived.len() as u64),
        "{info:#}"
    );
    assert!(
        archived.len() >= 8,
        "the workload should have produced several segments, got {archived:?}"
    );

    // Every segment PostgreSQL marked done is in the archive.
    let pg_wal = src.datadir.join("pg_wal");
    let archived_set: BTreeSet<&str> = archived.iter().map(String::as_str).collect();
    let mut done = Vec::new();
    for e in fs::read_dir(pg_wal.join("archive_status")).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        if let Some(seg) = name.strip_suffix(".done")
            && is_segment_name(seg)
        {
            assert!(
                archived_set.contains(seg),
                "{seg} is marked .done but not in the archive {first}..{last}"
            );
            done.push(seg.to_string());
        }
        if let Some(seg) = name.strip_suffix(".ready") {
            assert!(
                !archived_set.contains(seg),
                "{seg} still waits for archiving although the archive reports it"
            );
        }
    }
    assert_eq!(
        done.len(),
        archived.len(),
        "every archived segment should be .done"
    );

    // --- byte identity: every archived segment fetches back exactly ----------------------------
    let fetched = dir.subdir("fetched");
    for seg in &archived {
        let original = fs::read(pg_wal.join(seg))
            .unwrap_or_else(|e| panic!("{seg} should still be in pg_wal (wal_keep_size): {e}"));
        let dest = fetched.join(seg);
        let out = pgward(
            tmp,
            &[
                "--config",
                cfg_arg,
                "wal-fetch",
                seg,
                dest.to_str().unwrap(),
            ],
        );
        assert_eq!(out.code(), Some(0), "wal-fetch {seg}\n{}", out.describe());
        let got = fs::read(&dest).unwrap_or_else(|e| panic!("wal-fetch {seg} wrote nothing: {e}"));
        assert!(
            got == original,
            "wal-fetch {seg}: {} bytes differ from the {} bytes in pg_wal",
            got.len(),
            original.len()
        );
        fs::remove_file(&dest).unwrap();
    }

    // A local repository is plain files: check the documented layout with zstd alone.
    if let RepoSpec::Local(repo_dir) = &repo {
        check_local_layout(repo_dir, &pg_wal, &archived);
    }

    // --- PostgreSQL recovers the base backup from the archive ----------------------------------
    // Nothing may run on the copy's behalf against the source's socket or archive.
    src.stop();
    let copy_cfg = write_config(dir, &copy, repo);
    let mut restored = PgCluster::from_datadir(
        dir,
        "restored",
        copy.clone(),
        &[
            format!(
                "restore_command = '{} --config {} wal-fetch %f %p'",
                bin.display(),
                copy_cfg.display()
            ),
            "archive_mode = off".into(),
        ],
    );
    write_postgres_file(&copy.join("recovery.signal"), b"");
    restored.start();
    restored.wait_for_recovery_end(Duration::from_secs(120));
    assert_eq!(restored.psql(MARKER_SQL), expected_marker);
    assert_eq!(
        restored.psql("select count(*) || '/' || sum(abalance) from pgbench_accounts"),
        accounts
    );
    restored.pg_amcheck();
    restored.assert_no_fatal();
    let log = restored.server_log();
    assert!(
        log.contains(&format!("restored log file \"{last}\" from archive")),
        "recovery should have replayed up to {last} from the archive\n{}",
        restored.log_tail(60)
    );
    restored.stop();
    common::verify::assert_repo_verifies(tmp, &cfg);
    archived
}

/// `wal/00000001/<segment>-<sha256>.zst`: one object per segment, a plain zstd frame of the
/// original bytes, named by their sha256; plus the base backup's `.backup` history file.
fn check_local_layout(repo: &Path, pg_wal: &Path, archived: &[String]) {
    assert!(repo.join("repo.json").is_file(), "repo.json missing");
    // Format 2: one directory per log number under the timeline's (`wal/00000001/00000000/`).
    let tl_dir = repo.join("wal").join("00000001");
    let mut segments = Vec::new();
    let mut backup_files = 0;
    let log_dirs: Vec<fs::DirEntry> = fs::read_dir(&tl_dir).unwrap().map(|e| e.unwrap()).collect();
    for d in &log_dirs {
        let log = d.file_name().to_string_lossy().into_owned();
        assert!(
            log.len() == 8 && log.bytes().all(|b| b.is_ascii_hexdigit()) && d.path().is_dir(),
            "only log directories under the timeline's: {log}"
        );
    }
    for e in log_dirs
        .iter()
        .flat_map(|d| fs::read_dir(d.path()).unwrap())
    {
        let e = e.unwrap();
        let file = e.file_name().to_string_lossy().into_owned();
        let Some(stem) = file.strip_suffix(".zst") else {
            continue;
        };
        let (name, sha) = stem
            .rsplit_once('-')
            .unwrap_or_else(|| panic!("unexpected object name {file}"));
        assert_eq!(sha.len(), 64, "{file}");
        let bytes = zstd::decode_all(fs::File::open(e.path()).unwrap())
            .unwrap_or_else(|err| panic!("{file} is not a plain zstd frame: {err}"));
        assert_eq!(
            hex::encode(Sha256::digest(&bytes)),
            sha,
            "{file}: key sha256 does not match the content"
        );
        assert!(
            name.get(8..16)
                == e.path()
                    .parent()
                    .and_then(|p| p.file_name())
                    .and_then(|n| n.to_str()),
            "{file} is filed under its log number"
        );
        if is_segment_name(name) {
            assert!(
                bytes == fs::read(pg_wal.join(name)).unwrap(),
                "{file} decompresses to other bytes than pg_wal/{name}"
            );
            segments.push(name.to_string());
        } else if name.ends_with(".backup") {
            // A checkpoint may already have removed the original from pg_wal.
            match fs::read(pg_wal.join(name)) {
                Ok(original) => assert!(bytes == original, "{file} differs from pg_wal/{name}"),
                Err(_) => assert!(bytes.starts_with(b"START WAL LOCATION"), "{file}"),
            }
            backup_files += 1;
        }
    }
    segments.sort();
    assert_eq!(segments, archived, "one object per archived segment");
    assert_eq!(
        backup_files, 1,
        "the base backup's .backup file is archived"
    );
}

fn is_segment_name(s: &str) -> bool {
    s.len() == 24 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// (timeline, segment number) for 16 MiB segments.
fn parse_segment(name: &str) -> (u32, u64) {
    assert!(is_segment_name(name), "not a segment name: {name}");
    let tli = u32::from_str_radix(&name[0..8], 16).unwrap();
    let log = u64::from_str_radix(&name[8..16], 16).unwrap();
    let seg = u64::from_str_radix(&name[16..24], 16).unwrap();
    (tli, log * 0x100 + seg)
}

fn segment_name(tli: u32, segno: u64) -> String {
    format!("{tli:08X}{:08X}{:08X}", segno / 0x100, segno % 0x100)
}
