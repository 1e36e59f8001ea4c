//! Recovery must never end early (DESIGN.md; issue 8), against real PostgreSQL 15 on a local
//! and an S3 repository.
//!
//! PostgreSQL reads a `restore_command` exit status of 1–125 as "no such file" and, in archive
//! recovery, ends recovery there and promotes with the rest of the data silently missing. The
//! contract checked here: a corrupt object, a store that goes away mid-recovery, or a hole in
//! the archive never makes a restored server come up promoted with data missing — it stops, says
//! which segment, and recovers everything once the cause is fixed; on a standby the same fault
//! is loud but the standby keeps running; and `pgward restore` refuses to plan past a hole it can
//! see, while a target before the hole restores.
//!
//! One source cluster per repository writes four marked batches, each in its own archived
//! segment, after one base backup; the cases then damage and repair the stored segments of
//! batches 2 and 3 in turn, each case leaving the archive whole again.

mod common;

use common::backup_scenarios::{MARKER_SQL, Source, no_archiving};
use common::pg::*;
use common::s3_server::{Faults, S3Server};
use common::verify::*;
use pgward::storage::Storage;
use pgward::storage::s3::S3Storage;
use std::fs;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

const BUCKET: &str = "pgward-recovery";
/// How long a restored server may take to finish or to fail its recovery.
const RECOVERY: Duration = Duration::from_secs(90);

/// Where the test reaches the stored objects behind pgward's back.
enum Objects {
    Local(PathBuf),
    S3 {
        storage: S3Storage,
        rt: tokio::runtime::Handle,
        faults: Arc<Faults>,
    },
}

impl Objects {
    fn read(&self, key: &str) -> Vec<u8> {
        match self {
            Objects::Local(root) => fs::read(root.join(key)).unwrap(),
            Objects::S3 { storage, rt, .. } => rt.block_on(storage.get(key)).unwrap().to_vec(),
        }
    }

    /// Replaces an object's bytes in place: a copy damaged at rest, or the good copy put back.
    fn write(&self, key: &str, data: &[u8]) {
        match self {
            Objects::Local(root) => write_postgres_file(&root.join(key), data),
            Objects::S3 { storage, rt, .. } => rt
                .block_on(storage.put(key, bytes::Bytes::copy_from_slice(data)))
                .unwrap(),
        }
    }

    fn delete(&self, key: &str) {
        match self {
            Objects::Local(root) => fs::remove_file(root.join(key)).unwrap(),
            Objects::S3 { storage, rt, .. } => rt.block_on(storage.delete(key)).unwrap(),
        }
    }

    /// The one stored object of a WAL segment.
    fn wal_key(&self, segment: &str) -> String {
        // Format 2: `wal/<TLI>/<LOG>/<segment>-<sha256>.zst`.
        let dir = format!("wal/{}/{}/", &segment[..8], &segment[8..16]);
        let prefix = format!("{dir}{segment}-");
        let keys: Vec<String> = match self {
            Objects::Local(root) => fs::read_dir(root.join(&dir))
                .unwrap()
                .map(|e| format!("{dir}{}", e.unwrap().file_name().to_string_lossy()))
                .filter(|k| k.starts_with(&prefix))
                .collect(),
            Objects::S3 { storage, rt, .. } => rt
                .block_on(storage.list(&prefix))
                .unwrap()
                .into_iter()
                .map(|m| m.key)
                .collect(),
        };
        assert_eq!(keys.len(), 1, "objects of {segment}: {keys:?}");
        keys.into_iter().next().unwrap()
    }
}

/// A copy with four bytes in its middle flipped.
fn damaged(good: &[u8]) -> Vec<u8> {
    let mut bad = good.to_vec();
    let mid = bad.len() / 2;
    for b in &mut bad[mid..mid + 4] {
        *b ^= 0x5a;
    }
    bad
}

/// Moves a cluster's log aside, so the next start is judged on its own lines.
fn rotate_log(c: &PgCluster, n: u32) {
    let old = c.log_file.with_extension(format!("{n}.log"));
    fs::rename(&c.log_file, old).unwrap();
}

/// The source, its batches and what a restore must show at each point.
struct World {
    /// Kept running while the cases run (dropping it stops the cluster).
    _src: Source,
    /// pgward config for restores: short `wal.timeout`, so a store that went away fails fast.
    restore_cfg: PathBuf,
    /// The same without prefetch, so that exactly the chosen fetch is the last one served.
    restore_cfg_no_prefetch: PathBuf,
    /// The archived segment holding each batch's commit, batches 1..=4.
    segment: Vec<String>,
    /// The marker content after batches 1..=4.
    after: Vec<String>,
    /// An LSN inside batch 1's segment, after its commit.
    lsn_after_batch1: String,
}

fn build_world(dir: &TestDir, repo: RepoSpec) -> World {
    let t = Instant::now();
    let mut src = Source::start(dir, "src", repo.clone());
    src.batch("b0", 3);
    src.switch_and_archive();
    src.backup(dir);
    let (mut segment, mut after) = (Vec::new(), Vec::new());
    let mut lsn_after_batch1 = String::new();
    for (i, b) in ["b1", "b2", "b3", "b4"].into_iter().enumerate() {
        src.batch(b, 5);
        if i == 0 {
            lsn_after_batch1 = src.cluster.psql("select pg_current_wal_lsn()");
        }
        after.push(src.expected_marker());
        segment.push(src.switch_and_archive());
    }
    let restore_cfg = |prefetch| {
        let wal = WalOpts {
            timeout: "5s".into(),
            prefetch,
            ..WalOpts::default()
        };
        write_config_with(dir, &src.cluster.datadir, repo.clone(), &wal)
    };
    let (restore_cfg, restore_cfg_no_prefetch) = (restore_cfg(8), restore_cfg(0));
    eprintln!(
        "[{:>5.1} s] source ready: {segment:?}",
        t.elapsed().as_secs_f64()
    );
    World {
        _src: src,
        restore_cfg,
        restore_cfg_no_prefetch,
        segment,
        after,
        lsn_after_batch1,
    }
}

impl World {
    fn restore(&self, dir: &TestDir, name: &str, args: &[&str]) -> RunOutput {
        self.restore_with(&self.restore_cfg, dir, name, args)
    }

    fn restore_with(
        &self,
        cfg: &std::path::Path,
        dir: &TestDir,
        name: &str,
        args: &[&str],
    ) -> RunOutput {
        let pgdata = dir.path().join(name);
        let mut all = vec![
            "--config",
            cfg.to_str().unwrap(),
            "restore",
            "--pgdata",
            pgdata.to_str().unwrap(),
        ];
        all.extend_from_slice(args);
        pgward_timeout(dir.path(), &all, Duration::from_secs(180))
    }

    fn restore_ok(&self, dir: &TestDir, name: &str, args: &[&str]) -> PgCluster {
        let out = self.restore(dir, name, args);
        assert!(out.status.success(), "restore {args:?}\n{}", out.describe());
        PgCluster::from_datadir(dir, name, dir.path().join(name), &no_archiving())
    }
}

/// Starts a restored copy whose recovery must fail on `segment`: it must stop without ever
/// promoting, and its log must name the segment.
fn assert_recovery_stops(c: &mut PgCluster, segment: &str, why: &str) {
    // pg_ctl may return success once read-only connections are accepted, before the failure.
    let _ = c.try_start();
    assert!(
        c.wait_stopped(RECOVERY),
        "{why}: the server should stop recovery, yet it runs\n{}",
        c.log_tail(40)
    );
    let log = c.server_log();
    assert!(
        log.contains(&format!(
            "could not restore file \"{segment}\" from archive"
        )),
        "{why}: the log should name {segment} as the file recovery stopped on\n{}",
        c.log_tail(40)
    );
    assert!(
        log.contains(segment) && log.contains("recovery stops here"),
        "{why}: pgward's error should be in the log\n{}",
        c.log_tail(40)
    );
    for promoted in ["selected new timeline ID", "archive recovery complete"] {
        assert!(
            !log.contains(promoted),
            "{why}: the server promoted ({promoted:?})\n{}",
            c.log_tail(40)
        );
    }
}

/// After the cause is fixed, the same directory recovers to the end with every batch.
fn assert_recovers_everything(c: &mut PgCluster, w: &World, why: &str) {
    rotate_log(c, 1);
    c.start();
    c.wait_for_recovery_end(RECOVERY);
    assert_eq!(
        c.psql(MARKER_SQL),
        w.after[3],
        "{why}: restarted after the fix"
    );
    c.stop();
}

/// A corrupt stored object of batch 2's segment: the restored server stops instead of coming
/// up with batch 1 only; with the good copy back, the same directory recovers everything.
fn corrupt_object_stops_recovery(dir: &TestDir, w: &World, objects: &Objects) {
    let key = objects.wal_key(&w.segment[1]);
    let good = objects.read(&key);
    objects.write(&key, &damaged(&good));
    let mut c = w.restore_ok(dir, "corrupt", &[]);
    assert_recovery_stops(&mut c, &w.segment[1], "corrupt object");
    objects.write(&key, &good);
    assert_recovers_everything(&mut c, w, "corrupt object");
}

/// A standby meets a corrupt object of batch 3's segment: loud error, exit 1, and it keeps
/// running (read-only, batches 1–2); with the good copy back it catches up.
fn standby_keeps_running(dir: &TestDir, w: &World, objects: &Objects) {
    let key = objects.wal_key(&w.segment[2]);
    let good = objects.read(&key);
    objects.write(&key, &damaged(&good));
    let mut c = w.restore_ok(dir, "standby", &[]);
    fs::remove_file(c.datadir.join("recovery.signal")).unwrap();
    write_postgres_file(&c.datadir.join("standby.signal"), b"");
    c.append_auto_conf(&["wal_retrieve_retry_interval = '500ms'".to_string()]);
    c.start();
    c.wait_until(MARKER_SQL, &w.after[1], RECOVERY);
    let deadline = Instant::now() + RECOVERY;
    while !(c.server_log().contains(&w.segment[2]) && c.server_log().contains("corrupt")) {
        assert!(
            Instant::now() < deadline,
            "no loud error\n{}",
            c.log_tail(40)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Retried a few times, and still a running standby.
    std::thread::sleep(Duration::from_secs(2));
    assert!(c.is_running(), "the standby stopped\n{}", c.log_tail(40));
    assert_eq!(c.psql("select pg_is_in_recovery()"), "t");
    assert_eq!(c.psql(MARKER_SQL), w.after[1]);
    c.assert_no_fatal();
    objects.write(&key, &good);
    c.wait_until(MARKER_SQL, &w.after[3], RECOVERY);
    c.assert_no_fatal();
    c.stop();
}

/// The S3 server goes away right after recovery fetched batch 1's segment: the server stops
/// instead of promoting; with S3 back, the same directory recovers everything.
fn store_gone_stops_recovery(dir: &TestDir, w: &World, faults: &Faults) {
    let out = w.restore_with(&w.restore_cfg_no_prefetch, dir, "s3-gone", &[]);
    assert!(out.status.success(), "restore\n{}", out.describe());
    let mut c =
        PgCluster::from_datadir(dir, "s3-gone", dir.path().join("s3-gone"), &no_archiving());
    faults.go_down_after_get_of(&w.segment[0]);
    assert_recovery_stops(&mut c, &w.segment[1], "S3 gone");
    assert!(faults.is_down(), "the store never went down");
    faults.set_down(false);
    assert_recovers_everything(&mut c, w, "S3 gone");
}

/// Batch 2's segment deleted, later ones present: `restore` to the end is refused naming the
/// hole; a target before the hole restores and recovers exactly to it.
fn hole_is_refused_and_a_target_before_it_works(dir: &TestDir, w: &World, objects: &Objects) {
    let key = objects.wal_key(&w.segment[1]);
    let good = objects.read(&key);
    objects.delete(&key);
    let report = assert_repo_verify_fails(dir.path(), &w._src.cfg);
    let missing = problems(&report, "wal_missing");
    assert_eq!(missing.len(), 1, "{report:#}");
    assert_eq!(missing[0]["object"], w.segment[1].as_str());
    let range = &missing[0]["breaks"]["recoverable_ranges"][0];
    assert_eq!(range["first_missing"], w.segment[1].as_str(), "{report:#}");
    assert_eq!(strings(&range["cut_backups"]).len(), 1, "{report:#}");

    let out = w.restore(dir, "hole-end", &[]);
    assert!(
        !out.status.success(),
        "restore past a hole\n{}",
        out.describe()
    );
    for needle in [w.segment[1].as_str(), "hole", "hint:"] {
        assert!(out.stderr.contains(needle), "{needle}\n{}", out.describe());
    }
    let left = dir.path().join("hole-end");
    assert!(
        !left.exists() || fs::read_dir(&left).unwrap().next().is_none(),
        "a refused restore wrote into {}",
        left.display()
    );

    let mut c = w.restore_ok(dir, "hole-lsn", &["--target-lsn", &w.lsn_after_batch1]);
    c.start();
    c.wait_for_recovery_end(RECOVERY);
    assert_eq!(c.psql(MARKER_SQL), w.after[0], "target before the hole");
    c.stop();
    objects.write(&key, &good);
}

fn run_all(dir: &TestDir, repo: RepoSpec, objects: &Objects) {
    let w = build_world(dir, repo);
    let t = Instant::now();
    corrupt_object_stops_recovery(dir, &w, objects);
    eprintln!("[{:>5.1} s] corrupt object", t.elapsed().as_secs_f64());
    standby_keeps_running(dir, &w, objects);
    eprintln!("[{:>5.1} s] standby", t.elapsed().as_secs_f64());
    if let Objects::S3 { faults, .. } = objects {
        store_gone_stops_recovery(dir, &w, faults);
        eprintln!("[{:>5.1} s] store gone", t.elapsed().as_secs_f64());
    }
    hole_is_refused_and_a_target_before_it_works(dir, &w, objects);
    eprintln!("[{:>5.1} s] hole", t.elapsed().as_secs_f64());
    assert_repo_verifies(dir.path(), &w._src.cfg);
}

#[test]
fn recovery_never_ends_early_local() {
    let dir = TestDir::new("rs-local");
    let repo = dir.path().join("repo");
    run_all(&dir, RepoSpec::Local(repo.clone()), &Objects::Local(repo));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_never_ends_early_s3() {
    let server = S3Server::start().await;
    let storage = server.storage(BUCKET, "rs").await;
    let repo = RepoSpec::S3 {
        endpoint: server.endpoint.clone(),
        bucket: BUCKET.to_string(),
        prefix: "rs".to_string(),
        access_key: server.access_key.clone(),
        secret_key: server.secret_key.clone(),
    };
    let objects = Objects::S3 {
        storage,
        rt: tokio::runtime::Handle::current(),
        faults: server.faults.clone(),
    };
    let result = tokio::task::spawn_blocking(move || {
        let dir = TestDir::new("rs-s3");
        run_all(&dir, repo, &objects);
    })
    .await;
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
    drop(server);
}
