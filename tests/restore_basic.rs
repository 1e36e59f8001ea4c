//! `pgward restore` against a real PostgreSQL 15: a cluster archives through `wal-push`, is
//! backed up with `pgward backup`, and is restored (as postgres, as in production) to the end
//! of the archive and to an LSN between two batches. Each restored copy starts with its own
//! port and `archive_mode = off`, replays WAL through `wal-fetch`, and must hold exactly the
//! rows committed before its target. Also: refusals (non-empty directory, a target before the
//! oldest backup), `--dry-run` naming the backup, `--delta` over a used copy giving the same
//! files as a full restore, and a corrupted stored block failing the restore by name.
//!
//! The broader matrix (S3, tablespaces, timelines, time/xid/name targets) is in
//! `e2e_backup_*.rs`; this one stays small and quick.

#[path = "common/pg.rs"]
mod pg;
#[path = "common/verify.rs"]
mod verify;

use pg::*;
use pgward::repo::layout;
use pgward::repo::manifest::Manifest;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const PGWARD_DEADLINE: Duration = Duration::from_secs(120);
const RECOVERY: Duration = Duration::from_secs(90);
const ROWS_SQL: &str =
    "select coalesce(string_agg(id || ':' || batch, ',' order by id), '') from t";
/// The current time in UTC with an explicit offset, to the microsecond.
const NOW_SQL: &str =
    "select to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'";

struct Source {
    cluster: PgCluster,
    cfg: PathBuf,
}

impl Source {
    fn pgward(&self, dir: &TestDir, args: &[&str]) -> RunOutput {
        let mut all = vec!["--config", self.cfg.to_str().unwrap()];
        all.extend_from_slice(args);
        pgward_timeout(dir.path(), &all, PGWARD_DEADLINE)
    }

    fn pgward_ok(&self, dir: &TestDir, args: &[&str]) -> RunOutput {
        let out = self.pgward(dir, args);
        assert!(
            out.status.success(),
            "pgward {args:?} failed\n{}\n{}",
            out.describe(),
            self.cluster.log_tail(30)
        );
        out
    }

    /// `pgward restore --pgdata <dir>/<name> <args> --json`, parsed.
    fn restore(&self, dir: &TestDir, name: &str, args: &[&str]) -> (PathBuf, Value) {
        let pgdata = dir.path().join(name);
        let p = pgdata.to_string_lossy().into_owned();
        let mut all = vec!["restore", "--pgdata", p.as_str(), "--json"];
        all.extend_from_slice(args);
        let out = self.pgward_ok(dir, &all);
        let v: Value = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("restore --json is not JSON ({e})\n{}", out.describe()));
        (pgdata, v)
    }

    fn switch_and_archive(&self) {
        let c = &self.cluster;
        let last = c.psql("select pg_walfile_name(pg_switch_wal())");
        c.wait_until(
            "select last_archived_wal from pg_stat_archiver",
            &last,
            Duration::from_secs(60),
        );
        assert_eq!(c.psql("select failed_count from pg_stat_archiver"), "0");
        c.assert_no_fatal();
    }
}

fn rows(batch: &str, ids: std::ops::RangeInclusive<u32>) -> Vec<String> {
    ids.map(|i| format!("{i}:{batch}")).collect()
}

/// Starts a restored directory with its own port and socket and no archiving (appended after
/// the restore's recovery block, so it wins), and waits for the end of recovery.
fn start_restored(dir: &TestDir, name: &str, pgdata: &Path) -> PgCluster {
    let mut c = PgCluster::from_datadir(
        dir,
        name,
        pgdata.to_path_buf(),
        &["archive_mode = off".into()],
    );
    c.start();
    c.wait_for_recovery_end(RECOVERY);
    c
}

/// Files and directories under `root` (links not followed): kind, mode, and content hash. The
/// contents of pg_wal and postgresql.auto.conf (it names the restore time, and the harness
/// appends the port) are left out.
fn tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if rel.starts_with("pg_wal/") && !rel.starts_with("pg_wal/archive_status")
                || rel == "postgresql.auto.conf"
            {
                continue;
            }
            let m = fs::symlink_metadata(&p).unwrap();
            let v = if m.is_dir() {
                stack.push(p.clone());
                format!("dir {:o}", m.mode() & 0o7777)
            } else if m.is_symlink() {
                format!("-> {}", fs::read_link(&p).unwrap().display())
            } else {
                let data = fs::read(&p).unwrap();
                format!(
                    "{:o} {} {}",
                    m.mode() & 0o7777,
                    data.len(),
                    pgward::codec::Sha256Digest::of(&data)
                )
            };
            out.insert(rel, v);
        }
    }
    out
}

#[test]
fn restore_basic() {
    let started = Instant::now();
    let dir = TestDir::new("restore");
    let repo = dir.path().join("repo");

    // A source cluster archiving through pgward.
    let cluster = PgCluster::init(
        &dir,
        "src",
        InitOpts {
            data_checksums: true,
            extra_conf: vec!["archive_mode = on".into(), "autovacuum = off".into()],
        },
    );
    let cfg = write_config(&dir, &cluster.datadir, RepoSpec::Local(repo.clone()));
    configure_backup_source(
        &cluster,
        &cfg,
        "\n[backup]\njobs = 2\nwal_wait_timeout = \"60s\"\n",
    );
    let src = Source { cluster, cfg };
    src.pgward_ok(&dir, &["init"]);
    let mut src = src;
    src.cluster.start();
    let c = &src.cluster;
    c.psql("create table t (id int primary key, batch text not null)");
    c.psql("insert into t select g, 'a' from generate_series(1, 100) g");
    let before_backup = c.psql(NOW_SQL);
    std::thread::sleep(Duration::from_millis(20));

    let out = src.pgward_ok(&dir, &["backup", "--json"]);
    let backup: Value = serde_json::from_str(out.stdout.trim()).expect("backup --json");
    let label = backup["label"].as_str().expect("label").to_string();
    let table_file = c.psql("select pg_relation_filepath('t')");

    c.psql("insert into t select g, 'b' from generate_series(101, 150) g");
    let lsn_b = c.psql("select pg_current_wal_lsn()");
    c.psql("insert into t select g, 'c' from generate_series(151, 170) g");
    src.switch_and_archive();
    let all_rows = [
        rows("a", 1..=100),
        rows("b", 101..=150),
        rows("c", 151..=170),
    ]
    .concat()
    .join(",");
    let ab_rows = [rows("a", 1..=100), rows("b", 101..=150)]
        .concat()
        .join(",");
    assert_eq!(c.psql(ROWS_SQL), all_rows);
    eprintln!("source ready, backup {label}: {:.1?}", started.elapsed());

    // --dry-run names the chosen backup and writes nothing.
    let dry = dir.path().join("dry");
    let out = src.pgward_ok(
        &dir,
        &["restore", "--pgdata", dry.to_str().unwrap(), "--dry-run"],
    );
    assert!(
        out.stdout.contains(&format!("backup      {label}")),
        "{}",
        out.describe()
    );
    assert!(out.stdout.contains("dry run"), "{}", out.describe());
    assert!(!dry.exists());

    // (a) To the end of the archive.
    let (end_dir, end) = src.restore(&dir, "r-end", &[]);
    assert_eq!(end["plan"]["backup"]["label"], label.as_str());
    let full_fetched = end["result"]["blocks_fetched"].as_u64().unwrap();
    let auto_conf = fs::read_to_string(end_dir.join("postgresql.auto.conf")).unwrap();
    assert!(
        auto_conf.contains("wal-fetch %f %p'")
            && auto_conf.contains("recovery_target_timeline = 'latest'"),
        "{auto_conf}"
    );
    if is_root() {
        let u = postgres_user();
        let m = fs::metadata(end_dir.join(&table_file)).unwrap();
        assert_eq!(
            (m.uid(), m.gid()),
            (u.uid, u.gid),
            "restored files belong to postgres"
        );
    }
    let mut r_end = start_restored(&dir, "r-end", &end_dir);
    assert_eq!(r_end.psql(ROWS_SQL), all_rows, "end-of-archive restore");
    r_end.assert_no_fatal();

    // (b) To an LSN between batch b and batch c.
    let (lsn_dir, lsn) = src.restore(&dir, "r-lsn", &["--target-lsn", &lsn_b]);
    assert_eq!(lsn["plan"]["target"]["value"], lsn_b.as_str());
    let r_lsn = start_restored(&dir, "r-lsn", &lsn_dir);
    assert_eq!(r_lsn.psql(ROWS_SQL), ab_rows, "restore to {lsn_b}");
    drop(r_lsn);
    eprintln!(
        "two restores started and checked: {:.1?}",
        started.elapsed()
    );

    // Refusals: a non-empty directory, a target before the oldest backup.
    let busy = dir.subdir("busy");
    fs::write(busy.join("keep.txt"), b"mine").unwrap();
    let out = src.pgward(&dir, &["restore", "--pgdata", busy.to_str().unwrap()]);
    assert_eq!(out.code(), Some(1), "{}", out.describe());
    assert!(
        out.stderr.contains("is not empty") && out.stderr.contains("--delta"),
        "{}",
        out.describe()
    );
    assert_eq!(fs::read_dir(&busy).unwrap().count(), 1);
    let early = dir.path().join("early");
    let out = src.pgward(
        &dir,
        &[
            "restore",
            "--pgdata",
            early.to_str().unwrap(),
            "--target-time",
            &before_backup,
        ],
    );
    assert_eq!(out.code(), Some(1), "{}", out.describe());
    assert!(
        out.stderr.contains("no backup ends before the target")
            && out.stderr.contains(&format!("oldest backup, {label}")),
        "{}",
        out.describe()
    );
    assert!(!early.exists());

    // --delta over the used copy (started, promoted, then damaged) gives the same files as a
    // fresh full restore, fetching less.
    r_end.stop();
    drop(r_end);
    fs::remove_file(end_dir.join(&table_file)).unwrap();
    fs::write(end_dir.join("global/pg_filenode.map"), b"garbage").unwrap();
    let pg_version = end_dir.join("PG_VERSION");
    fs::write(end_dir.join("base/1/99999"), b"stray relation").unwrap();
    fs::set_permissions(
        &pg_version,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let (delta_dir, delta) = src.restore(&dir, "r-end", &["--delta"]);
    let (full_dir, _) = src.restore(&dir, "r-full", &[]);
    let d = &delta["result"];
    assert!(d["blocks_reused"].as_u64().unwrap() > 0, "{d:#}");
    assert!(
        d["blocks_fetched"].as_u64().unwrap() < full_fetched,
        "{d:#}"
    );
    assert!(d["removed"].as_u64().unwrap() >= 2, "{d:#}");
    assert_eq!(tree(&delta_dir), tree(&full_dir), "--delta vs full restore");
    let r_delta = start_restored(&dir, "r-delta", &delta_dir);
    assert_eq!(r_delta.psql(ROWS_SQL), all_rows, "delta restore");
    drop(r_delta);
    eprintln!("delta checked: {:.1?}", started.elapsed());

    // A corrupted stored block of the table fails the restore, naming the file.
    let bytes = fs::read(repo.join(layout::manifest_key(&label))).unwrap();
    let manifest = Manifest::from_bytes(&bytes).unwrap();
    let entry = manifest
        .files
        .iter()
        .find(|f| f.path == table_file)
        .expect("table in manifest");
    let key = layout::block_key(&entry.blocks[0].pieces[0].id);
    let object = repo.join(&key);
    let mut data = fs::read(&object).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0x55;
    fs::write(&object, &data).unwrap();
    let bad = dir.path().join("r-bad");
    let out = src.pgward(&dir, &["restore", "--pgdata", bad.to_str().unwrap()]);
    assert_eq!(out.code(), Some(1), "{}", out.describe());
    assert!(
        out.stderr.contains(&format!("block 0 of {table_file}")) && out.stderr.contains(&key),
        "{}",
        out.describe()
    );
    assert!(
        !bad.join("global/pg_control").exists(),
        "a failed restore must not be startable"
    );
    // The listing checks cannot see a flipped byte; a full verify names the block and backup.
    verify::assert_repo_verifies(dir.path(), &src.cfg);
    let (ok, report) = verify::verify_json(dir.path(), &src.cfg, &["--full"]);
    let corrupt = verify::problems(&report, "block_corrupt");
    assert!(!ok && corrupt.len() == 1, "{report:#}");
    assert_eq!(corrupt[0]["object"], key.as_str());
    assert_eq!(
        verify::strings(&corrupt[0]["breaks"]["backups"]),
        vec![label.clone()]
    );
    eprintln!("done: {:.1?}", started.elapsed());
}
