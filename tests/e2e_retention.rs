//! Retention end to end (issue 12) against a real PostgreSQL 15, on a local and an S3
//! repository: four backups with pgbench and WAL between them, a policy keeping the last two
//! with a PITR window covering only the newest. `expire` without `--confirm` changes nothing;
//! with it the two oldest manifests and the WAL before the kept range go, then (after the
//! grace) their unreferenced blocks; the repository shrinks, still verifies, restores a point
//! inside the window exactly, and refuses a point before the kept range clearly.

mod common;

use common::backup_scenarios::{PGBENCH_SQL, Source, backup_label, restore_and_check};
use common::pg::{RepoSpec, TestDir, make_postgres_dir, write_postgres_file};
use common::s3_server::S3Server;
use common::verify::{assert_repo_verifies, verify_json};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Every stored object under `root` (a local repository, or the S3 server's directory of the
/// repository's prefix) with its size; temp files of unfinished writes left out.
fn objects(root: &Path) -> BTreeMap<String, u64> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, u64>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if p.is_dir() {
                walk(root, &p, out);
            } else if !name.starts_with('.') && !name.contains(".tmp") {
                let key = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.insert(key, e.metadata().unwrap().len());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn keys_under<'a>(objects: &'a BTreeMap<String, u64>, prefix: &str) -> Vec<&'a String> {
    objects.keys().filter(|k| k.starts_with(prefix)).collect()
}

fn json(out: &common::pg::RunOutput) -> Value {
    serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", out.describe()))
}

/// The plan's decision for backup `label`: ("keep" | "delete", the reason rules).
fn decision(plan: &Value, label: &str) -> (String, Vec<String>) {
    let b = plan["backups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["label"] == label)
        .unwrap_or_else(|| panic!("no decision for {label} in {plan:#}"));
    let action = b["action"].as_str().unwrap_or_default().to_string();
    let rules = b["reasons"]
        .as_array()
        .map(|r| {
            r.iter()
                .map(|x| x["rule"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default();
    (action, rules)
}

/// The WAL segment names stored for timeline 1 (from keys `wal/00000001/<log>/<seg>-<sha>.zst`).
fn segments(objects: &BTreeMap<String, u64>) -> Vec<String> {
    keys_under(objects, "wal/00000001/")
        .into_iter()
        .filter_map(|k| k.rsplit('/').next())
        .filter_map(|f| f.split_once('-').map(|(name, _)| name.to_string()))
        .filter(|n| n.len() == 24)
        .collect()
}

/// Points the source's pgward.toml at `policy` (a top-level key, so it goes first).
fn use_policy(src: &Source, policy: &Path) {
    let cfg_text = std::fs::read_to_string(&src.cfg).unwrap();
    let line = format!("policy = {:?}\n", policy.to_string_lossy());
    std::fs::write(&src.cfg, line + &cfg_text).unwrap();
}

fn expire_scenario(dir: &TestDir, repo: RepoSpec, repo_root: PathBuf) {
    let mut src = Source::start(dir, "src", repo);
    // The policy: the two newest backups; WAL for a one-second window (so the newest backup is
    // the PITR base); blocks swept one second after they were marked.
    let policy = dir.write_file(
        "policy.toml",
        "timezone = \"UTC\"\n[retention.backups]\nkeep_last = 2\n\
         [retention.wal]\npitr_window = \"1s\"\n[retention]\ngc_grace = \"1s\"\n",
    );
    use_policy(&src, &policy);

    src.cluster.pgbench(&["-i", "-s", "2", "-q"]);
    let mut labels = Vec::new();
    let mut before_third = String::new();
    for i in 1..=4 {
        src.batch(&format!("b{i}"), 10);
        src.cluster.pgbench(&["-t", "300", "-c", "2"]);
        src.switch_and_archive();
        if i == 3 {
            before_third = src.now();
            std::thread::sleep(Duration::from_millis(1100));
        }
        labels.push(backup_label(&src.backup(dir)));
    }
    let info = json(&src.pgward_ok(dir, &["info", "--json"]));
    let backups = info["backups"].as_array().unwrap().clone();
    assert_eq!(backups.len(), 4);
    // Inside the window: after the newest backup.
    src.batch("after", 10);
    let inside = src.expected_marker();
    let pgbench = src.cluster.psql(PGBENCH_SQL);
    std::thread::sleep(Duration::from_millis(1100));
    let target = src.now();
    std::thread::sleep(Duration::from_millis(1100));
    src.batch("too-late", 10);
    src.switch_and_archive();
    std::thread::sleep(Duration::from_millis(1100));
    let before = objects(&repo_root);

    // The plan alone deletes nothing.
    let out = src.pgward_ok(dir, &["expire", "--json"]);
    let report = json(&out);
    assert_eq!(report["confirmed"], false, "{report:#}");
    let plan = &report["plan"];
    for old in &labels[..2] {
        let (action, _) = decision(plan, old);
        assert_eq!(action, "delete", "{old}: {plan:#}");
    }
    let (action, rules) = decision(plan, &labels[3]);
    assert_eq!(action, "keep");
    assert!(rules.contains(&"newest_complete".to_string()), "{rules:?}");
    assert!(rules.contains(&"keep_last".to_string()), "{rules:?}");
    let (action, rules) = decision(plan, &labels[2]);
    assert_eq!(
        (action.as_str(), rules),
        ("keep", vec!["keep_last".to_string()])
    );
    let text = src.pgward_ok(dir, &["expire"]).stdout;
    assert!(text.contains("nothing was deleted"), "{text}");
    assert_eq!(
        objects(&repo_root),
        before,
        "expire without --confirm changed the repository"
    );

    // Carried out: manifests and WAL now, blocks marked.
    let out = src.pgward_ok(dir, &["expire", "--confirm", "--json"]);
    let report = json(&out);
    assert_eq!(report["deleted"]["manifests"], 2, "{report:#}");
    assert!(report["deleted"]["wal"].as_u64().unwrap() > 0, "{report:#}");
    assert!(
        report["gc"]["mark"]["marked"].as_u64().unwrap() > 0,
        "{report:#}"
    );
    let after_expire = objects(&repo_root);
    for old in &labels[..2] {
        assert!(
            keys_under(&after_expire, &format!("backups/{old}/")).is_empty(),
            "{old} is still there"
        );
    }
    let info = json(&src.pgward_ok(dir, &["info", "--json"]));
    let left: Vec<&str> = info["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["label"].as_str().unwrap())
        .collect();
    assert_eq!(left, vec![labels[2].as_str(), labels[3].as_str()]);
    // No WAL before the third backup's start, and none between its stop and the newest's
    // start (below the PITR base, outside every kept backup's range); its own range stays.
    let start3 = backups[2]["start_wal"].as_str().unwrap().to_string();
    let stop3 = backups[2]["stop_wal"].as_str().unwrap().to_string();
    let start4 = backups[3]["start_wal"].as_str().unwrap().to_string();
    let segs = segments(&after_expire);
    assert_eq!(segs.first(), Some(&start3), "{segs:?}");
    assert!(segs.contains(&stop3), "{segs:?}");
    assert!(
        segs.iter().all(|s| s <= &stop3 || s >= &start4),
        "WAL between {stop3} and {start4} is left: {segs:?}"
    );
    let blocks_before = keys_under(&before, "blocks/").len();
    assert_eq!(keys_under(&after_expire, "blocks/").len(), blocks_before);

    // After the grace the next run sweeps what is still unreferenced.
    std::thread::sleep(Duration::from_millis(1500));
    let gc = json(&src.pgward_ok(dir, &["gc", "--json"]));
    let swept = gc["sweep"]["deleted"].as_u64().unwrap();
    assert!(swept > 0, "{gc:#}");
    let after_gc = objects(&repo_root);
    assert_eq!(
        keys_under(&after_gc, "blocks/").len() as u64,
        blocks_before as u64 - swept
    );
    let bytes = |o: &BTreeMap<String, u64>| o.values().sum::<u64>();
    assert!(
        bytes(&after_gc) < bytes(&before),
        "the repository did not shrink: {} → {}",
        bytes(&before),
        bytes(&after_gc)
    );
    assert_repo_verifies(dir.path(), &src.cfg);
    let (ok, full) = verify_json(dir.path(), &src.cfg, &["--full"]);
    assert!(ok, "{full:#}");

    // A point inside the window restores exactly.
    let c = restore_and_check(
        &src,
        dir,
        "inside",
        &["--target-time", &target, "--target-action", "promote"],
        &inside,
        &pgbench,
    );
    drop(c);
    // A point before the kept range is refused, saying why.
    let pgdata = dir.path().join("before");
    let out = src.pgward(
        dir,
        &[
            "restore",
            "--pgdata",
            pgdata.to_str().unwrap(),
            "--target-time",
            &before_third,
        ],
    );
    assert!(!out.status.success(), "{}", out.describe());
    assert!(out.stderr.contains("before"), "{}", out.describe());
    assert!(!pgdata.join("PG_VERSION").exists());

    // A re-run converges: nothing more to delete.
    let again = json(&src.pgward_ok(dir, &["expire", "--confirm", "--json"]));
    assert_eq!(again["deleted"]["manifests"], 0, "{again:#}");
    assert_eq!(again["deleted"]["wal"], 0, "{again:#}");
}

#[test]
fn expire_keeps_what_the_policy_needs_local() {
    let dir = TestDir::new("ret-local");
    let root = dir.path().join("repo");
    expire_scenario(&dir, RepoSpec::Local(root.clone()), root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expire_keeps_what_the_policy_needs_s3() {
    const BUCKET: &str = "pgward-retention";
    let server = S3Server::start().await;
    server.storage(BUCKET, "ret").await;
    let repo = RepoSpec::S3 {
        endpoint: server.endpoint.clone(),
        bucket: BUCKET.to_string(),
        prefix: "ret".to_string(),
        access_key: server.access_key.clone(),
        secret_key: server.secret_key.clone(),
    };
    let root = server.root().join(BUCKET).join("ret");
    let result = tokio::task::spawn_blocking(move || {
        let dir = TestDir::new("ret-s3");
        expire_scenario(&dir, repo, root);
    })
    .await;
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
    drop(server);
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// An expire that fails at each step — a manifest that cannot be deleted, WAL that cannot be
/// deleted, blocks that cannot be swept (directories made read-only for the postgres user
/// pgward runs as) — leaves a repository that verifies, and the next run finishes the job.
#[test]
fn an_interrupted_expire_leaves_a_sound_repository_and_the_next_run_converges() {
    let dir = TestDir::new("ret-interrupt");
    let root = dir.path().join("repo");
    let mut src = Source::start(&dir, "src", RepoSpec::Local(root.clone()));
    let policy = dir.write_file(
        "policy.toml",
        "[retention.backups]\nkeep_last = 1\n[retention]\ngc_grace = \"1s\"\n",
    );
    use_policy(&src, &policy);
    let mut labels = Vec::new();
    for i in 1..=3 {
        src.batch(&format!("b{i}"), 10);
        src.cluster.psql(&format!(
            "create table t{i} as select g, md5(g::text) from generate_series(1, 20000) g"
        ));
        src.switch_and_archive();
        labels.push(backup_label(&src.backup(&dir)));
    }
    let manifest = |l: &str| format!("backups/{l}/manifest.json.zst");
    let before = objects(&root);
    let first_segment = segments(&before).first().cloned();

    // A restore reading the oldest backup (its read lease, live: this process, this host,
    // expiring in an hour) keeps it and its WAL; once the lease is gone, it may go.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let start0 = {
        let info = json(&src.pgward_ok(&dir, &["info", "--json"]));
        info["backups"][0]["start_wal"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let now = chrono::Utc::now();
    let lease = serde_json::json!({
        "host": host.trim(), "pid": std::process::id(), "purpose": "restore",
        "kind": "backup", "label": labels[0],
        "wal_from": {"timeline": 1, "first_segment": start0},
        "acquired_at": now.to_rfc3339(),
        "expires_at": (now + chrono::Duration::hours(1)).to_rfc3339(),
        "nonce": "0123456789abcdef",
    });
    make_postgres_dir(&root.join("locks"));
    make_postgres_dir(&root.join("locks/read"));
    let lease_file = root.join(format!("locks/read/{}-0123456789abcdef.json", labels[0]));
    write_postgres_file(&lease_file, lease.to_string().as_bytes());
    let plan = json(&src.pgward_ok(&dir, &["expire", "--json"]));
    let (action, rules) = decision(&plan["plan"], &labels[0]);
    assert_eq!((action.as_str(), rules), ("keep", vec!["held".to_string()]));
    let (action, _) = decision(&plan["plan"], &labels[1]);
    assert_eq!(action, "delete");
    std::fs::remove_file(&lease_file).unwrap();

    // Two of three backups is more than half: refused without --force, nothing deleted.
    let out = src.pgward(&dir, &["expire", "--confirm"]);
    assert!(!out.status.success(), "{}", out.describe());
    assert!(out.stderr.contains("--force"), "{}", out.describe());
    assert_eq!(objects(&root), before);

    // 1. The oldest manifest cannot be deleted: the run stops before any WAL goes.
    let oldest = root.join("backups").join(&labels[0]);
    chmod(&oldest, 0o555);
    let out = src.pgward(&dir, &["expire", "--confirm", "--force"]);
    chmod(&oldest, 0o755);
    assert!(!out.status.success(), "{}", out.describe());
    assert!(
        out.stderr.contains("could not be deleted"),
        "{}",
        out.describe()
    );
    let mid = objects(&root);
    assert!(mid.contains_key(&manifest(&labels[0])));
    assert!(!mid.contains_key(&manifest(&labels[1])));
    assert_eq!(segments(&mid).first().cloned(), first_segment, "WAL went");
    assert_repo_verifies(dir.path(), &src.cfg);

    // 2. WAL cannot be deleted: the manifests go, the WAL stays, the repository verifies.
    let wal_dir = root.join("wal/00000001/00000000");
    chmod(&wal_dir, 0o555);
    let out = src.pgward(&dir, &["expire", "--confirm", "--force"]);
    chmod(&wal_dir, 0o755);
    assert!(!out.status.success(), "{}", out.describe());
    let mid = objects(&root);
    assert!(!mid.contains_key(&manifest(&labels[0])));
    assert_eq!(segments(&mid).first().cloned(), first_segment);
    assert_repo_verifies(dir.path(), &src.cfg);

    // 3. Blocks cannot be swept: their marks stay, the repository verifies.
    std::thread::sleep(Duration::from_millis(1500));
    let shards: Vec<PathBuf> = std::fs::read_dir(root.join("blocks"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    shards.iter().for_each(|d| chmod(d, 0o555));
    let out = src.pgward(&dir, &["gc", "--json"]);
    shards.iter().for_each(|d| chmod(d, 0o755));
    assert!(!out.status.success(), "{}", out.describe());
    assert!(
        out.stderr.contains("could not be deleted"),
        "{}",
        out.describe()
    );
    assert_repo_verifies(dir.path(), &src.cfg);

    // The next runs finish the job: WAL before the kept backup and the unreferenced blocks
    // go, and what is kept restores.
    let report = json(&src.pgward_ok(&dir, &["expire", "--confirm", "--force", "--json"]));
    assert!(report["deleted"]["wal"].as_u64().unwrap() > 0, "{report:#}");
    // (Its own gc step sweeps the marks that are due; what it marks now is swept next.)
    std::thread::sleep(Duration::from_millis(1500));
    let gc = json(&src.pgward_ok(&dir, &["gc", "--json"]));
    let swept = report["gc"]["sweep"]["deleted"].as_u64().unwrap()
        + gc["sweep"]["deleted"].as_u64().unwrap();
    assert!(swept > 0, "{report:#}\n{gc:#}");
    let end = objects(&root);
    assert!(end.values().sum::<u64>() < before.values().sum::<u64>());
    assert_repo_verifies(dir.path(), &src.cfg);
    let (ok, full) = verify_json(dir.path(), &src.cfg, &["--full"]);
    assert!(ok, "{full:#}");
    let again = json(&src.pgward_ok(&dir, &["expire", "--confirm", "--force", "--json"]));
    assert_eq!(again["deleted"]["manifests"], 0, "{again:#}");
    assert_eq!(again["deleted"]["wal"], 0, "{again:#}");
}

/// A restore reading a backup while expire would delete it finishes: the restore's read lease
/// keeps the backup (reason "held") and its WAL. The S3 server holds the restore's block reads
/// until expire is done, so the two really overlap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_reading_a_backup_outlives_an_expire_s3() {
    const BUCKET: &str = "pgward-retention-read";
    let server = S3Server::start().await;
    server.storage(BUCKET, "rd").await;
    let repo = RepoSpec::S3 {
        endpoint: server.endpoint.clone(),
        bucket: BUCKET.to_string(),
        prefix: "rd".to_string(),
        access_key: server.access_key.clone(),
        secret_key: server.secret_key.clone(),
    };
    let faults = server.faults.clone();
    let result = tokio::task::spawn_blocking(move || {
        let dir = TestDir::new("ret-read");
        let mut src = Source::start(&dir, "src", repo);
        let policy = dir.write_file("policy.toml", "[retention.backups]\nkeep_last = 1\n");
        use_policy(&src, &policy);
        src.batch("b1", 10);
        src.switch_and_archive();
        let first = backup_label(&src.backup(&dir));
        let at_first = src.expected_marker();
        src.batch("b2", 10);
        src.switch_and_archive();
        let second = backup_label(&src.backup(&dir));

        faults.hold_gets_of(Some("/blocks/"));
        let restored = std::thread::scope(|s| {
            let restore = s.spawn(|| {
                let pgdata = dir.path().join("old");
                let out = src.pgward(
                    &dir,
                    &[
                        "restore",
                        "--pgdata",
                        pgdata.to_str().unwrap(),
                        "--backup",
                        &first,
                        "--target",
                        "immediate",
                        "--target-action",
                        "promote",
                    ],
                );
                (out, pgdata)
            });
            let waited = std::time::Instant::now();
            while faults.gets_held() == 0 {
                assert!(
                    waited.elapsed() < Duration::from_secs(60),
                    "the restore never read a block"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            let report = json(&src.pgward_ok(&dir, &["expire", "--confirm", "--json"]));
            let (action, rules) = decision(&report["plan"], &first);
            assert_eq!(
                (action.as_str(), rules),
                ("keep", vec!["held".to_string()]),
                "{report:#}"
            );
            assert_eq!(report["deleted"]["manifests"], 0, "{report:#}");
            faults.hold_gets_of(None);
            restore.join().unwrap()
        });
        let (out, pgdata) = restored;
        assert!(
            out.status.success(),
            "the restore failed:\n{}",
            out.describe()
        );
        let c = common::backup_scenarios::start_restored(
            &dir,
            "old",
            pgdata,
            &common::backup_scenarios::no_archiving(),
        );
        assert_eq!(c.psql(common::backup_scenarios::MARKER_SQL), at_first);
        drop(c);
        // The restore is over: its lease is gone, and the next expire deletes the old backup.
        let report = json(&src.pgward_ok(&dir, &["expire", "--confirm", "--json"]));
        assert_eq!(report["deleted"]["manifests"], 1, "{report:#}");
        let info = json(&src.pgward_ok(&dir, &["info", "--json"]));
        assert_eq!(info["backups"][0]["label"], second.as_str());
        assert_repo_verifies(dir.path(), &src.cfg);
    })
    .await;
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
    drop(server);
}
