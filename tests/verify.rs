//! `pgward verify` (issue 12, item 5) on a repository written by a real PostgreSQL 15: two
//! base backups sharing blocks, WAL around and after them, and a dump. Each kind of damage is
//! made on a copy of that repository, and verify must find it and name what it breaks:
//! - a flipped byte in one block shared by both backups: the listing checks cannot see it,
//!   `--full` finds it (also through FaultyStorage's corrupted reads) and names both backups;
//! - a deleted WAL segment after both backups: the listing check names the broken recoverable
//!   range and both backups it cuts; one inside the first backup's own range names that backup
//!   as not restorable;
//! - a truncated dump object: the listing check names the dump and database;
//! - rotation: after the first run (which reads everything, all new), N sampled runs with
//!   N = the rotation length read every object exactly once; `--max-bytes` bounds a run;
//!   unreadable state starts afresh with a warning.

mod common;

use common::backup_scenarios::{Source, backup_label};
use common::pg::*;
use common::verify::*;
use pgward::repo::layout;
use pgward::repo::manifest::Manifest;
use pgward::repo::snapshot::Snapshot;
use pgward::storage::DynStorage;
use pgward::storage::faulty::FaultyStorage;
use pgward::storage::local::LocalStorage;
use pgward::verify::state::VerifyState;
use pgward::verify::{VerifyRequest, verify};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A copy of the repository at `root` and a configuration for it.
fn copy_repo(dir: &TestDir, src: &Source, root: &Path, name: &str) -> (PathBuf, PathBuf) {
    let copy = dir.path().join(name);
    let status = Command::new("cp")
        .arg("-a")
        .arg(root)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(status.success());
    let cfg = write_config(dir, &src.cluster.datadir, RepoSpec::Local(copy.clone()));
    (copy, cfg)
}

fn key_path(root: &Path, key: &str) -> PathBuf {
    root.join(key)
}

fn flip_middle_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(path, bytes).unwrap();
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn verify_finds_damage_and_names_what_it_breaks() {
    let dir = TestDir::new("verify");
    let root = dir.path().join("repo");
    let mut src = Source::start(&dir, "src", RepoSpec::Local(root.clone()));
    src.cluster.psql(
        "create table filler as select g, repeat('x', 200) as pad from generate_series(1, 20000) g",
    );
    src.batch("one", 500);
    let b1 = backup_label(&src.backup(&dir));
    src.batch("two", 500);
    src.switch_and_archive();
    let b2 = backup_label(&src.backup(&dir));
    src.batch("three", 100);
    src.switch_and_archive();
    src.batch("four", 100);
    src.switch_and_archive();
    let dump: Value =
        serde_json::from_str(src.pgward_ok(&dir, &["dump", "--json"]).stdout.trim()).unwrap();
    let dump_label = dump["label"].as_str().unwrap().to_string();
    src.cluster.stop();

    // A clean repository: the listing checks and a full read find nothing.
    let clean = assert_repo_verifies(dir.path(), &src.cfg);
    assert_eq!(clean["checked"]["backups"], 2);
    assert_eq!(clean["checked"]["dumps"], 1);
    assert_eq!(clean["read"]["objects"], 0, "listing only reads nothing");
    let (ok, full) = verify_json(dir.path(), &src.cfg, &["--full"]);
    assert!(ok, "{full:#}");
    assert_eq!(full["read"]["objects"], full["read"]["candidates"]);
    assert!(
        full["read"]["candidates"].as_u64().unwrap() > 10,
        "{full:#}"
    );

    let rt = runtime();
    let local: DynStorage = Arc::new(LocalStorage::new(root.clone()));
    let (snapshot, m1, m2) = rt.block_on(async {
        (
            Snapshot::load(local.as_ref()).await.unwrap(),
            Manifest::load(local.as_ref(), &b1).await.unwrap(),
            Manifest::load(local.as_ref(), &b2).await.unwrap(),
        )
    });
    let ids2: BTreeSet<_> = m2.block_ids().copied().collect();
    let shared = *m1
        .block_ids()
        .find(|id| ids2.contains(id))
        .expect("the two backups share blocks");
    let shared_key = layout::block_key(&shared);

    // 1. A flipped byte in a shared block: invisible to the listing, found by --full.
    let (r1, cfg1) = copy_repo(&dir, &src, &root, "repo-flip");
    flip_middle_byte(&key_path(&r1, &shared_key));
    assert_repo_verifies(dir.path(), &cfg1);
    let (ok, report) = verify_json(dir.path(), &cfg1, &["--full"]);
    assert!(!ok);
    let bad = problems(&report, "block_corrupt");
    assert_eq!(bad.len(), 1, "{report:#}");
    assert_eq!(bad[0]["object"], shared_key.as_str());
    assert_eq!(
        sorted(strings(&bad[0]["breaks"]["backups"])),
        sorted(vec![b1.clone(), b2.clone()]),
        "{report:#}"
    );
    let text = pgward(
        dir.path(),
        &["--config", cfg1.to_str().unwrap(), "verify", "--full"],
    );
    assert!(!text.status.success());
    assert!(
        text.stdout.contains("PROBLEM block corrupt") && text.stdout.contains(&b1),
        "{}",
        text.describe()
    );
    assert!(
        text.stderr.contains("verify found 1 problem"),
        "{}",
        text.describe()
    );

    // The same through FaultyStorage's corrupted reads of that block, in process.
    let faulty = Arc::new(FaultyStorage::new(local.clone()));
    faulty.corrupt_reads_of(&shared_key);
    let report = rt
        .block_on(verify(
            faulty.as_ref(),
            &VerifyRequest {
                full: true,
                ..VerifyRequest::default()
            },
        ))
        .unwrap();
    assert!(!report.ok);
    assert_eq!(report.problems.len(), 1, "{report:#?}");
    assert_eq!(report.problems[0].object, shared_key);
    assert_eq!(
        sorted(report.problems[0].breaks.backups.clone()),
        sorted(vec![b1.clone(), b2.clone()])
    );

    // 2. A deleted WAL segment after both backups: the recoverable range of both is cut.
    let b1_summary = snapshot.catalog.find(&b1).unwrap().clone();
    let b2_summary = snapshot.catalog.find(&b2).unwrap().clone();
    let seg = snapshot.identity.wal_segment_size;
    let tl = &snapshot.wal.timelines[&b1_summary.timeline];
    let after_b2 = tl
        .segments
        .range(b2_summary.stop_wal.segno(seg) + 1..)
        .next()
        .expect("WAL archived after the second backup");
    let newest = *tl.segments.keys().next_back().unwrap();
    assert!(
        *after_b2.0 < newest,
        "the hole must not be the newest segment"
    );
    let (r2, cfg2) = copy_repo(&dir, &src, &root, "repo-wal");
    std::fs::remove_file(key_path(&r2, &after_b2.1[0].key)).unwrap();
    let report = assert_repo_verify_fails(dir.path(), &cfg2);
    let missing = problems(&report, "wal_missing");
    assert_eq!(missing.len(), 1, "{report:#}");
    let name = after_b2.1[0].name.to_string();
    assert_eq!(missing[0]["object"], name.as_str());
    assert!(
        strings(&missing[0]["breaks"]["backups"]).is_empty(),
        "both stay restorable"
    );
    let range = &missing[0]["breaks"]["recoverable_ranges"][0];
    assert_eq!(range["first_missing"], name.as_str());
    assert_eq!(range["timeline"], b1_summary.timeline.0);
    assert_eq!(
        sorted(strings(&range["cut_backups"])),
        sorted(vec![b1.clone(), b2.clone()]),
        "{report:#}"
    );

    // ... and one inside the first backup's own range: that backup cannot be restored.
    let (r3, cfg3) = copy_repo(&dir, &src, &root, "repo-wal-own");
    let own = &tl.segments[&b1_summary.stop_wal.segno(seg)][0];
    std::fs::remove_file(key_path(&r3, &own.key)).unwrap();
    let report = assert_repo_verify_fails(dir.path(), &cfg3);
    let missing = problems(&report, "wal_missing");
    assert_eq!(missing.len(), 1, "{report:#}");
    assert_eq!(strings(&missing[0]["breaks"]["backups"]), vec![b1.clone()]);
    assert_eq!(
        strings(&missing[0]["breaks"]["recoverable_ranges"][0]["cut_backups"]),
        vec![b1.clone()],
        "the second backup starts after the hole"
    );

    // 3. A truncated dump object: found by the listing, naming the dump and database.
    let (r4, cfg4) = copy_repo(&dir, &src, &root, "repo-dump");
    let dump_key = layout::dump_database_key(&dump_label, "postgres");
    let path = key_path(&r4, &dump_key);
    let len = std::fs::metadata(&path).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let report = assert_repo_verify_fails(dir.path(), &cfg4);
    let short = problems(&report, "dump_object_wrong_size");
    assert_eq!(short.len(), 1, "{report:#}");
    assert_eq!(short[0]["object"], dump_key.as_str());
    assert_eq!(
        strings(&short[0]["breaks"]["dumps"]),
        vec![format!("{dump_label}/postgres")]
    );

    // 4. Rotation: the first run reads everything (all new), then N = 3 sampled runs read
    //    every object exactly once; unreadable state starts afresh.
    let (r5, _) = copy_repo(&dir, &src, &root, "repo-rotation");
    let storage: DynStorage = Arc::new(LocalStorage::new(r5.clone()));
    let req = VerifyRequest {
        rotation: 3,
        ..VerifyRequest::default()
    };
    rt.block_on(async {
        // The copy has the state of the clean --full run above.
        storage.delete(&layout::verify_state_key()).await.unwrap();
        let first = verify(storage.as_ref(), &req).await.unwrap();
        assert!(first.ok, "{first:#?}");
        assert_eq!(first.run, 1);
        let all = first.read.candidates;
        assert_eq!((first.read.objects, first.read.new_objects), (all, all));
        let mut read = 0;
        for run in 2..=4 {
            let r = verify(storage.as_ref(), &req).await.unwrap();
            assert!(r.ok && r.run == run, "{r:#?}");
            assert_eq!(r.read.new_objects, 0);
            assert!(r.read.objects <= all.div_ceil(3), "{r:#?}");
            read += r.read.objects;
        }
        assert_eq!(
            read, all,
            "three sampled runs read as many objects as there are"
        );
        let (state, warning) = pgward::verify::state::load(storage.as_ref()).await;
        assert_eq!(warning, None);
        assert_eq!(state.verified.len() as u64, all);
        assert!(
            state.verified.values().all(|&run| (2..=4).contains(&run)),
            "every object was read again in runs 2..=4, so none twice: {:?}",
            state.verified
        );
        let _: VerifyState = state;

        // --max-bytes bounds a run.
        let small = verify(
            storage.as_ref(),
            &VerifyRequest {
                max_bytes: Some(1),
                ..req.clone()
            },
        )
        .await
        .unwrap();
        assert!(
            small.read.bytes <= 1 && small.read.deferred_objects > 0,
            "{small:#?}"
        );

        // Unreadable state: a warning and a fresh start (everything new), never "verified".
        storage
            .put(
                &layout::verify_state_key(),
                bytes::Bytes::from_static(b"junk"),
            )
            .await
            .unwrap();
        let fresh = verify(storage.as_ref(), &req).await.unwrap();
        assert_eq!(fresh.run, 1);
        assert!(fresh.warnings.iter().any(|w| w.contains("starting afresh")));
        assert_eq!(fresh.read.new_objects, all);
    });
}
