//! The end-to-end matrix for base backups and restore (issue 3), one body per scenario,
//! parameterised by where the repository lives. `tests/e2e_backup_local.rs` and
//! `tests/e2e_backup_s3.rs` only choose the repository: what PostgreSQL gets back must not
//! depend on it.
//!
//! Every scenario drives the built binary as PostgreSQL's user (`pgward backup`, `pgward
//! restore`, and PostgreSQL itself running `wal-push` / `wal-fetch`), starts each restored
//! cluster, waits for recovery to end, and checks *content*: the rows of a marker table written
//! in numbered batches between the recovery targets, fingerprints of the pgbench tables, a
//! `pg_dumpall` comparison and `pg_amcheck`. Restored clusters run one at a time with
//! `archive_mode = off` (except the one that must create timeline 2) and are stopped as soon as
//! they are checked.
#![allow(dead_code)]

use super::pg::*;
use super::verify::assert_repo_verifies;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Deadline for `pgward backup` and `pgward restore`.
const BULK_PGWARD: Duration = Duration::from_secs(180);
/// Deadline for a restored cluster to finish recovery.
const RECOVERY: Duration = Duration::from_secs(90);
/// Deadline for a switched segment to reach the repository.
const ARCHIVING: Duration = Duration::from_secs(90);
/// Pause on each side of a recorded time target, so commit timestamps are clearly apart.
const TIME_MARGIN: Duration = Duration::from_millis(1100);

/// The marker table's rows in id order, as `id:batch` pairs.
pub const MARKER_SQL: &str =
    "select coalesce(string_agg(id || ':' || batch, ',' order by id), '') from marker";

/// pgbench's tables in one line: history rows, balances. Stable once pgbench has stopped.
pub const PGBENCH_SQL: &str = "select (select count(*) from pgbench_history) || '/' || \
     (select sum(abalance) from pgbench_accounts) || '/' || \
     (select sum(tbalance) from pgbench_tellers) || '/' || \
     (select sum(bbalance) from pgbench_branches)";

/// `now()` with an explicit offset, as operators write `recovery_target_time`.
const NOW_SQL: &str =
    "select to_char(now() at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'";

fn log_step(what: &str, started: Instant) {
    eprintln!("[{:>6.1} s] {what}", started.elapsed().as_secs_f64());
}

// ---------------------------------------------------------------------------------------------
// A source cluster archiving into the repository
// ---------------------------------------------------------------------------------------------

/// A running cluster that archives through `pgward wal-push`, its pgward configuration, and the
/// batches written to its marker table so far.
pub struct Source {
    pub cluster: PgCluster,
    pub cfg: PathBuf,
    /// `(id, batch)` of every committed marker row, in id order.
    marker: Vec<(u32, String)>,
}

impl Source {
    /// `initdb` (with data checksums), a pgward config for `repo` (with `conninfo` and `bindir`,
    /// which backup needs), `pgward init`, start with archiving on, and create the marker table.
    pub fn start(dir: &TestDir, name: &str, repo: RepoSpec) -> Source {
        Source::start_with(dir, name, repo, Vec::new(), |_| {})
    }

    /// Like [`start`](Self::start), with `extra_conf` appended to postgresql.conf after the
    /// harness's settings, and `before_start` run on the stopped cluster once its
    /// configuration is written (to create an `include_dir`, say).
    pub fn start_with(
        dir: &TestDir,
        name: &str,
        repo: RepoSpec,
        extra_conf: Vec<String>,
        before_start: impl FnOnce(&PgCluster),
    ) -> Source {
        // No autovacuum: nothing but the test writes, so the archive's end is known and dumps
        // compare exactly.
        let mut conf = vec![
            "archive_mode = on".to_string(),
            "autovacuum = off".to_string(),
        ];
        conf.extend(extra_conf);
        let cluster = PgCluster::init(
            dir,
            name,
            InitOpts {
                data_checksums: true,
                extra_conf: conf,
            },
        );
        let cfg = write_config(dir, &cluster.datadir, repo);
        configure_backup_source(&cluster, &cfg, "\n[backup]\nwal_wait_timeout = \"90s\"\n");
        let mut src = Source {
            cluster,
            cfg,
            marker: Vec::new(),
        };
        src.pgward_ok(dir, &["init"]);
        before_start(&src.cluster);
        src.cluster.start();
        src.cluster
            .psql("create table marker (id int primary key, batch text not null)");
        src
    }

    fn args<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut all = vec!["--config", self.cfg.to_str().unwrap()];
        all.extend_from_slice(args);
        all
    }

    /// `pgward --config <cfg> <args>` as postgres; the caller checks the status.
    pub fn pgward(&self, dir: &TestDir, args: &[&str]) -> RunOutput {
        pgward_timeout(dir.path(), &self.args(args), BULK_PGWARD)
    }

    /// Like [`pgward`](Self::pgward), panicking with the output (and the server log) on failure.
    pub fn pgward_ok(&self, dir: &TestDir, args: &[&str]) -> RunOutput {
        let out = self.pgward(dir, args);
        assert!(
            out.status.success(),
            "pgward {args:?} failed\n{}\n{}",
            out.describe(),
            self.cluster.log_tail(30)
        );
        out
    }

    /// `pgward backup --json`, parsed; panics unless it succeeds and prints a JSON object.
    pub fn backup(&self, dir: &TestDir) -> Value {
        let out = self.pgward_ok(dir, &["backup", "--json"]);
        let v: Value = serde_json::from_str(out.stdout.trim())
            .unwrap_or_else(|e| panic!("backup --json is not JSON ({e}):\n{}", out.describe()));
        assert!(v.is_object(), "backup --json: {v:#}");
        v
    }

    /// Commits `rows` marker rows tagged `batch` in one transaction.
    pub fn batch(&mut self, batch: &str, rows: u32) {
        self.cluster.psql(&self.batch_sql(batch, rows));
        self.record_batch(batch, rows);
    }

    /// Like [`batch`](Self::batch) but returns the transaction's id (`txid_current()`).
    pub fn batch_with_xid(&mut self, batch: &str, rows: u32) -> String {
        let sql = format!(
            "with ins as ({} returning 1) select txid_current() from (select count(*) from ins) c",
            self.batch_sql(batch, rows)
        );
        let xid = self.cluster.psql(&sql);
        self.record_batch(batch, rows);
        xid
    }

    fn batch_sql(&self, batch: &str, rows: u32) -> String {
        let first = self.marker.last().map_or(1, |(id, _)| id + 1);
        format!(
            "insert into marker (id, batch) select g, '{batch}' \
             from generate_series({first}, {}) g",
            first + rows - 1
        )
    }

    fn record_batch(&mut self, batch: &str, rows: u32) {
        let first = self.marker.last().map_or(1, |(id, _)| id + 1);
        self.marker
            .extend((first..first + rows).map(|id| (id, batch.to_string())));
    }

    /// The marker content a restore must show when it holds exactly the batches so far.
    pub fn expected_marker(&self) -> String {
        self.marker
            .iter()
            .map(|(id, b)| format!("{id}:{b}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The current time on the server, with an explicit offset.
    pub fn now(&self) -> String {
        self.cluster.psql(NOW_SQL)
    }

    /// Switches WAL and waits until the finished segment is archived; returns its name. Also
    /// fails on archiver failures and FATAL lines (see NOTES-testing.md).
    pub fn switch_and_archive(&self) -> String {
        switch_and_archive(&self.cluster)
    }
}

/// Switches WAL on `cluster` and waits until the finished segment is archived.
pub fn switch_and_archive(cluster: &PgCluster) -> String {
    let last = cluster.psql("select pg_walfile_name(pg_switch_wal())");
    cluster.wait_until(
        "select last_archived_wal from pg_stat_archiver",
        &last,
        ARCHIVING,
    );
    assert_eq!(
        cluster.psql("select failed_count from pg_stat_archiver"),
        "0",
        "the archiver of {} reported failures\n{}",
        cluster.name,
        cluster.log_tail(40)
    );
    cluster.assert_no_fatal();
    last
}

// ---------------------------------------------------------------------------------------------
// Restoring and starting
// ---------------------------------------------------------------------------------------------

/// `pgward restore --pgdata <dir>/<name> <args>`; panics unless it succeeds. Returns the data
/// directory (which the restore creates).
pub fn restore(src: &Source, dir: &TestDir, name: &str, args: &[&str]) -> PathBuf {
    let pgdata = dir.path().join(name);
    let pgdata_arg = pgdata.to_string_lossy().into_owned();
    let mut all = vec!["restore", "--pgdata", pgdata_arg.as_str()];
    all.extend_from_slice(args);
    src.pgward_ok(dir, &all);
    assert!(
        pgdata.join("PG_VERSION").is_file(),
        "restore {args:?} reported success but {} holds no PG_VERSION",
        pgdata.display()
    );
    pgdata
}

/// Starts a restored data directory as cluster `name` (own port and socket, the `extra`
/// settings after pgward's recovery settings) and waits until recovery has ended.
pub fn start_restored(dir: &TestDir, name: &str, pgdata: PathBuf, extra: &[String]) -> PgCluster {
    let mut c = PgCluster::from_datadir(dir, name, pgdata, extra);
    c.start();
    c.wait_for_recovery_end(RECOVERY);
    c
}

/// The settings every checked-and-discarded restored cluster gets: it must never push into the
/// repository its WAL came from.
pub fn no_archiving() -> Vec<String> {
    vec!["archive_mode = off".to_string()]
}

/// Restores with `args`, starts the copy without archiving, checks the marker table against
/// `expected_marker` and the pgbench tables against `expected_pgbench`, and returns the running
/// cluster (the caller stops it, or drops it).
pub fn restore_and_check(
    src: &Source,
    dir: &TestDir,
    name: &str,
    args: &[&str],
    expected_marker: &str,
    expected_pgbench: &str,
) -> PgCluster {
    let pgdata = restore(src, dir, name, args);
    let c = start_restored(dir, name, pgdata, &no_archiving());
    assert_eq!(
        c.psql(MARKER_SQL),
        expected_marker,
        "restore {args:?}: marker rows differ from what was committed before the target\n{}",
        c.log_tail(30)
    );
    assert_eq!(
        c.psql(PGBENCH_SQL),
        expected_pgbench,
        "restore {args:?}: pgbench tables differ"
    );
    c
}

/// `pg_dumpall` of a cluster, without what legitimately differs between a source and its
/// restored copy: `setval` lines (sequences are WAL-logged 32 values ahead) and pg_dump
/// 15.14+'s random `\restrict` / `\unrestrict` keys.
pub fn dumpall(dir: &TestDir, c: &PgCluster) -> String {
    let mut cmd = Command::new(pg_bindir().join("pg_dumpall"));
    cmd.current_dir(dir.path())
        .arg("-h")
        .arg(&c.socket_dir)
        .args(["-p", &c.port.to_string(), "-U", "postgres"])
        .env_remove("PGHOST")
        .env_remove("PGPORT")
        .env_remove("PGUSER")
        .env_remove("PGDATABASE")
        .env("LC_ALL", "C");
    as_postgres(&mut cmd);
    let out = run_ok(&mut cmd, Duration::from_secs(120));
    out.stdout
        .lines()
        .filter(|l| !l.contains("pg_catalog.setval("))
        .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Panics with the first differing lines when two dumps differ.
pub fn assert_same_dump(expected: &str, got: &str, what: &str) {
    if expected == got {
        return;
    }
    let e: Vec<&str> = expected.lines().collect();
    let g: Vec<&str> = got.lines().collect();
    let first = e
        .iter()
        .zip(&g)
        .position(|(a, b)| a != b)
        .unwrap_or(e.len().min(g.len()));
    let show = |v: &[&str]| v[first.min(v.len())..(first + 8).min(v.len())].join("\n");
    panic!(
        "{what}: pg_dumpall differs ({} vs {} lines), first at line {}\n--- source ---\n{}\n--- restored ---\n{}",
        e.len(),
        g.len(),
        first + 1,
        show(&e),
        show(&g)
    );
}

/// A field of `backup --json` (a stable format: `label`, `stored_bytes`, ...).
pub fn backup_u64(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("backup --json has no number `{key}`: {v:#}"))
}

pub fn backup_label(v: &Value) -> String {
    v["label"]
        .as_str()
        .unwrap_or_else(|| panic!("backup --json has no `label`: {v:#}"))
        .to_string()
}

// ---------------------------------------------------------------------------------------------
// Scenario: PITR targets, end of archive, bad input
// ---------------------------------------------------------------------------------------------

/// A backup taken while pgbench runs, then marked batches with a recovery target between each
/// two: a time, a named restore point, an LSN, an xid, and the end of the archive. Every
/// restored cluster holds exactly the batches before its target; the end-of-archive copy dumps
/// identically to the source and passes `pg_amcheck`. A target before the oldest backup is
/// refused clearly.
pub fn pitr_targets(dir: &TestDir, repo: RepoSpec) {
    let t = Instant::now();
    let mut src = Source::start(dir, "src", repo);
    let before_backup = src.now();
    std::thread::sleep(Duration::from_millis(20));
    src.cluster.pgbench(&["-i", "-s", "3", "-q"]);
    src.batch("b0", 5);
    src.switch_and_archive();
    log_step("source ready", t);

    // The backup runs while pgbench writes.
    let backup = std::thread::scope(|s| {
        let bench = s.spawn(|| src.cluster.pgbench(&["-T", "4", "-c", "2", "-j", "2"]));
        std::thread::sleep(Duration::from_millis(500));
        let backup = src.backup(dir);
        let running_after = !bench.is_finished();
        if let Err(p) = bench.join() {
            std::panic::resume_unwind(p);
        }
        (backup, running_after)
    });
    let (backup, overlapped) = backup;
    eprintln!(
        "backup during pgbench: {backup}\n(pgbench still running when the backup ended: {overlapped})"
    );
    let pgbench = src.cluster.psql(PGBENCH_SQL);
    log_step("backup taken during pgbench", t);

    // Batches with a target between each two.
    src.batch("b1", 5);
    let after_b1 = src.expected_marker();
    std::thread::sleep(TIME_MARGIN);
    let time_target = src.now();
    std::thread::sleep(TIME_MARGIN);
    src.batch("b2", 5);
    let after_b2 = src.expected_marker();
    src.cluster
        .psql("select pg_create_restore_point('after-b2')");
    src.batch("b3", 5);
    let after_b3 = src.expected_marker();
    let lsn_target = src.cluster.psql("select pg_current_wal_lsn()");
    let xid_target = src.batch_with_xid("b4", 5);
    let after_b4 = src.expected_marker();
    src.batch("b5", 5);
    let after_b5 = src.expected_marker();
    assert_eq!(src.cluster.psql(MARKER_SQL), after_b5);
    let source_dump = dumpall(dir, &src.cluster);
    src.switch_and_archive();
    log_step("batches written and archived", t);

    let cases: [(&str, Vec<&str>, &str); 4] = [
        (
            "r-time",
            vec!["--target-time", &time_target, "--target-action", "promote"],
            &after_b1,
        ),
        (
            "r-name",
            vec!["--target-name", "after-b2", "--target-action", "promote"],
            &after_b2,
        ),
        (
            "r-lsn",
            vec!["--target-lsn", &lsn_target, "--target-action", "promote"],
            &after_b3,
        ),
        (
            "r-xid",
            vec!["--target-xid", &xid_target, "--target-action", "promote"],
            &after_b4,
        ),
    ];
    for (name, args, expected) in &cases {
        let mut c = restore_and_check(&src, dir, name, args, expected, &pgbench);
        c.stop();
        log_step(&format!("{name}: restored, started and checked"), t);
    }

    // End of the archive: everything, identical to the source.
    let mut c = restore_and_check(&src, dir, "r-end", &[], &after_b5, &pgbench);
    assert_same_dump(&source_dump, &dumpall(dir, &c), "end-of-archive restore");
    c.pg_amcheck();
    c.stop();
    log_step("r-end: dump identical, amcheck clean", t);

    // A target before the oldest backup is refused, naming the backup, and restores nothing.
    let bad = dir.path().join("r-bad");
    let bad_arg = bad.to_string_lossy().into_owned();
    let out = src.pgward(
        dir,
        &[
            "restore",
            "--pgdata",
            &bad_arg,
            "--target-time",
            &before_backup,
        ],
    );
    assert_eq!(
        out.code(),
        Some(1),
        "a target before the oldest backup must be refused with exit 1\n{}",
        out.describe()
    );
    let label = backup_label(&backup);
    assert!(
        out.stderr.contains("oldest backup") && out.stderr.contains(&label),
        "the refusal should name the oldest backup ({label})\n{}",
        out.describe()
    );
    assert!(
        !bad.join("PG_VERSION").exists(),
        "a refused restore wrote into {}",
        bad.display()
    );
    log_step("target before the oldest backup refused", t);
    assert_repo_verifies(dir.path(), &src.cfg);
}

// ---------------------------------------------------------------------------------------------
// Scenario: timelines
// ---------------------------------------------------------------------------------------------

/// A restore to a point is promoted and archives timeline 2 into the same repository, with its
/// own rows. Restoring again with `--target-timeline current` ends on timeline 1's data (the
/// end of its archive); with `latest` it follows timeline 2 and has its rows.
pub fn timelines(dir: &TestDir, repo: RepoSpec) {
    let t = Instant::now();
    let mut src = Source::start(dir, "src", repo);
    src.cluster.pgbench(&["-i", "-s", "1", "-q"]);
    src.batch("b0", 5);
    src.backup(dir);
    let pgbench = src.cluster.psql(PGBENCH_SQL);
    src.batch("b1", 5);
    let after_b1 = src.expected_marker();
    let fork_lsn = src.cluster.psql("select pg_current_wal_lsn()");
    src.batch("b2", 5);
    let after_b2 = src.expected_marker();
    src.switch_and_archive();
    log_step("source: backup and batches archived", t);

    // Timeline 2: restore to the fork point, promote, archive into the SAME repository (the
    // copy keeps the source's archive_mode and archive_command).
    let pgdata = restore(
        &src,
        dir,
        "tl2",
        &["--target-lsn", &fork_lsn, "--target-action", "promote"],
    );
    let mut tl2 = start_restored(dir, "tl2", pgdata, &[]);
    assert_eq!(tl2.psql(MARKER_SQL), after_b1, "{}", tl2.log_tail(30));
    assert_eq!(tl2.psql(PGBENCH_SQL), pgbench);
    let tli = tl2.psql("select substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)");
    assert_eq!(tli, "00000002", "the promoted copy should be on timeline 2");
    tl2.psql("insert into marker (id, batch) select g, 't2' from generate_series(100, 104) g");
    let on_tl2 = tl2.psql(MARKER_SQL);
    assert!(
        on_tl2.starts_with(&after_b1) && on_tl2.ends_with("104:t2"),
        "{on_tl2}"
    );
    let last = switch_and_archive(&tl2);
    assert!(last.starts_with("00000002"), "{last}");
    tl2.stop();
    log_step("timeline 2 created and archived", t);

    let info = src.pgward_ok(dir, &["info", "--json"]);
    let info: Value = serde_json::from_str(&info.stdout).expect("info --json");
    let tlis: Vec<u64> = info["timelines"]
        .as_array()
        .expect("timelines")
        .iter()
        .filter_map(|x| x["timeline"].as_u64())
        .collect();
    assert!(tlis.contains(&1) && tlis.contains(&2), "{info:#}");
    // The recoverable window: both timelines are reachable from the one backup, and timeline
    // 2's window runs past the fork point.
    let label = info["backups"][0]["label"]
        .as_str()
        .expect("one backup")
        .to_string();
    let windows = info["recoverable"].as_array().expect("recoverable");
    let window = |tli: u64| {
        windows
            .iter()
            .find(|w| w["timeline"].as_u64() == Some(tli))
            .unwrap_or_else(|| panic!("no recoverable window for timeline {tli}: {info:#}"))
    };
    let lsn = |v: &Value| -> pgward::pg::Lsn { v.as_str().expect("lsn").parse().expect("lsn") };
    for tli in [1, 2] {
        assert_eq!(window(tli)["from_backup"], label.as_str(), "{info:#}");
    }
    let fork: pgward::pg::Lsn = fork_lsn.parse().expect("fork lsn");
    assert!(lsn(&window(2)["to_lsn"]) > fork, "{info:#}");
    assert!(
        lsn(&window(1)["to_lsn"]) > lsn(&window(1)["from_lsn"]),
        "{info:#}"
    );

    let mut c = restore_and_check(
        &src,
        dir,
        "r-current",
        &["--target-timeline", "current"],
        &after_b2,
        &pgbench,
    );
    c.stop();
    log_step("--target-timeline current: timeline 1 to its end", t);

    let mut c = restore_and_check(
        &src,
        dir,
        "r-latest",
        &["--target-timeline", "latest"],
        &on_tl2,
        &pgbench,
    );
    c.stop();
    log_step("--target-timeline latest: follows timeline 2", t);
    assert_repo_verifies(dir.path(), &src.cfg);
}

// ---------------------------------------------------------------------------------------------
// Scenario: tablespaces, dedup, delta
// ---------------------------------------------------------------------------------------------

/// What a file tree holds, for byte comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TreeEntry {
    Dir,
    File { len: u64, sha256: String },
    Link(PathBuf),
}

/// Every entry under `root` keyed by relative path, following the tablespace links in
/// `pg_tblspc` (their contents appear under `pg_tblspc/<oid>/`). The contents of `pg_wal` and
/// `postgresql.auto.conf` (recovery settings, per-copy ports) are left out.
pub fn snapshot_pgdata(root: &Path) -> BTreeMap<String, TreeEntry> {
    let mut out = BTreeMap::new();
    let mut stack: Vec<(PathBuf, String)> = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        let entries =
            fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
        for e in entries {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            let rel_path = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            if rel_path == "postgresql.auto.conf" || rel == "pg_wal" || rel.starts_with("pg_wal/") {
                continue;
            }
            let ft = e.file_type().unwrap();
            if ft.is_symlink() {
                let target = fs::read_link(e.path()).unwrap();
                out.insert(rel_path.clone(), TreeEntry::Link(target.clone()));
                if rel == "pg_tblspc" {
                    stack.push((target, rel_path));
                }
            } else if ft.is_dir() {
                out.insert(rel_path.clone(), TreeEntry::Dir);
                stack.push((e.path(), rel_path));
            } else {
                let bytes = fs::read(e.path()).unwrap();
                out.insert(
                    rel_path,
                    TreeEntry::File {
                        len: bytes.len() as u64,
                        sha256: hex::encode(Sha256::digest(&bytes)),
                    },
                );
            }
        }
    }
    out
}

/// Panics listing every difference between two snapshots.
pub fn assert_same_tree(
    expected: &BTreeMap<String, TreeEntry>,
    got: &BTreeMap<String, TreeEntry>,
    what: &str,
) {
    let mut diffs = Vec::new();
    for (k, v) in expected {
        match got.get(k) {
            None => diffs.push(format!("missing: {k}")),
            Some(g) if g != v => diffs.push(format!("differs: {k}: {v:?} vs {g:?}")),
            _ => {}
        }
    }
    for k in got.keys().filter(|k| !expected.contains_key(*k)) {
        diffs.push(format!("extra: {k}"));
    }
    assert!(
        diffs.is_empty(),
        "{what}: {} difference(s)\n{}",
        diffs.len(),
        diffs.join("\n")
    );
}

fn rel_file(src: &Source, table: &str) -> String {
    src.cluster
        .psql(&format!("select pg_relation_filepath('{table}')"))
}

/// A table in a tablespace outside PGDATA is backed up and restored to a new location with
/// `--tablespace-map`. A second backup after a small change stores a small fraction of the
/// first. A `--delta` restore over a stale copy (an older backup, with files changed and
/// deleted) gives the same files as a full restore, and the same data.
pub fn tablespace_dedup_delta(dir: &TestDir, repo: RepoSpec) {
    let t = Instant::now();
    let mut src = Source::start(dir, "src", repo);
    let ts_src = dir.subdir("ts-src");
    src.cluster.psql(&format!(
        "create tablespace ts1 location '{}'",
        ts_src.display()
    ));
    src.cluster.psql(
        "create table tsdata (id int primary key, v text not null) tablespace ts1; \
         insert into tsdata select g, md5(g::text) from generate_series(1, 20000) g",
    );
    src.cluster.pgbench(&["-i", "-s", "5", "-q"]);
    src.batch("b0", 5);
    let ts_oid = src
        .cluster
        .psql("select oid from pg_tablespace where spcname = 'ts1'");
    let tsdata_path = rel_file(&src, "tsdata");
    assert!(
        tsdata_path.starts_with(&format!("pg_tblspc/{ts_oid}/")),
        "{tsdata_path}"
    );
    let tsdata_sql =
        "select count(*) || '/' || md5(string_agg(id || v, ',' order by id)) from tsdata";
    let tsdata = src.cluster.psql(tsdata_sql);
    log_step("source with a tablespace ready", t);

    // --- dedup ----------------------------------------------------------------------------------
    let first = src.backup(dir);
    let first_label = backup_label(&first);
    src.batch("b1", 5);
    src.cluster
        .psql("update pgbench_accounts set abalance = abalance + 1 where aid <= 10");
    let second = src.backup(dir);
    let stored_1 = backup_u64(&first, "stored_bytes");
    let stored_2 = backup_u64(&second, "stored_bytes");
    assert!(
        stored_1 > 0 && stored_2 * 10 < stored_1,
        "the second backup after a small change should store < 10% of the first: \
         {stored_2} vs {stored_1}\nfirst: {first}\nsecond: {second}"
    );
    log_step(
        &format!("dedup: first backup stored {stored_1} bytes, second {stored_2}"),
        t,
    );

    src.batch("b2", 5);
    let final_marker = src.expected_marker();
    let pgbench = src.cluster.psql(PGBENCH_SQL);
    src.switch_and_archive();

    // --- tablespace map -------------------------------------------------------------------------
    // Full restore of the newest backup to the end of the archive, the tablespace moved.
    let ts_new = dir.path().join("ts-restored");
    let map = format!("{ts_oid}={}", ts_new.display());
    let pgdata = restore(&src, dir, "r", &["--tablespace-map", &map]);
    let link = fs::read_link(pgdata.join("pg_tblspc").join(&ts_oid))
        .unwrap_or_else(|e| panic!("pg_tblspc/{ts_oid} is not a link: {e}"));
    assert_eq!(
        link, ts_new,
        "pg_tblspc/{ts_oid} should point to the new location"
    );
    let under_ts = tsdata_path
        .strip_prefix(&format!("pg_tblspc/{ts_oid}/"))
        .unwrap();
    assert!(
        ts_new.join(under_ts).is_file(),
        "the new tablespace directory lacks {under_ts}"
    );
    assert!(
        fs::read_dir(&ts_src).unwrap().count() > 0,
        "the source tablespace must be untouched"
    );
    let full_tree = snapshot_pgdata(&pgdata);
    let mut c = start_restored(dir, "r-full", pgdata.clone(), &no_archiving());
    assert_eq!(c.psql(tsdata_sql), tsdata, "table in the tablespace");
    assert_eq!(
        c.psql(&format!("select pg_tablespace_location({ts_oid})")),
        ts_new.to_string_lossy()
    );
    assert_eq!(c.psql(MARKER_SQL), final_marker);
    assert_eq!(c.psql(PGBENCH_SQL), pgbench);
    c.stop();
    drop(c);
    log_step("tablespace restored to a new location and read", t);

    // --- delta ----------------------------------------------------------------------------------
    // The same paths again, so the delta result must match the full restore byte for byte: an
    // older backup restored there, then damaged, then brought up to date with --delta.
    fs::remove_dir_all(&pgdata).unwrap();
    fs::remove_dir_all(&ts_new).unwrap();
    restore(
        &src,
        dir,
        "r",
        &["--backup", &first_label, "--tablespace-map", &map],
    );
    let damage = |rel: &str| pgdata.join(rel);
    // Changed: a page of pgbench_accounts overwritten, pgbench_tellers truncated, a catalog
    // file with a few bytes flipped.
    let accounts = damage(&rel_file(&src, "pgbench_accounts"));
    let mut f = fs::OpenOptions::new().write(true).open(&accounts).unwrap();
    f.seek(SeekFrom::Start(8192)).unwrap();
    f.write_all(&[0xab; 8192]).unwrap();
    drop(f);
    fs::OpenOptions::new()
        .write(true)
        .open(damage(&rel_file(&src, "pgbench_tellers")))
        .unwrap()
        .set_len(0)
        .unwrap();
    let class = damage(&rel_file(&src, "pg_class"));
    let mut bytes = fs::read(&class).unwrap();
    for b in bytes.iter_mut().take(64) {
        *b ^= 0xff;
    }
    fs::write(&class, bytes).unwrap();
    // Deleted: pgbench_branches, the table in the tablespace, and the shared catalogs' relation
    // map. (pg_control stays: it is how --delta recognises a data directory of the same
    // cluster, and without it the directory is rightly refused.)
    fs::remove_file(damage(&rel_file(&src, "pgbench_branches"))).unwrap();
    fs::remove_file(ts_new.join(under_ts)).unwrap();
    fs::remove_file(damage("global/pg_filenode.map")).unwrap();

    src.pgward_ok(
        dir,
        &[
            "restore",
            "--pgdata",
            &pgdata.to_string_lossy(),
            "--delta",
            "--tablespace-map",
            &map,
        ],
    );
    let delta_tree = snapshot_pgdata(&pgdata);
    assert_same_tree(&full_tree, &delta_tree, "--delta restore vs full restore");
    let mut c = start_restored(dir, "r-delta", pgdata, &no_archiving());
    assert_eq!(c.psql(tsdata_sql), tsdata, "table in the tablespace");
    assert_eq!(c.psql(MARKER_SQL), final_marker);
    assert_eq!(c.psql(PGBENCH_SQL), pgbench);
    c.pg_amcheck();
    c.stop();
    log_step(
        "delta restore identical to the full restore, data checked",
        t,
    );
    assert_repo_verifies(dir.path(), &src.cfg);
}
