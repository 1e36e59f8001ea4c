//! `pgward backup` against a real PostgreSQL 15 with data checksums, archiving through
//! `pgward wal-push` into a local repository.
//!
//! The contract under test (DESIGN.md, "Base backups"): a backup copies the data directory as
//! content-addressed blocks and is complete only when its WAL is in the repository and its
//! manifest is written (last); a second backup stores only what changed; one backup runs at a
//! time; a corrupt page is reported and recorded but does not stop the backup; WAL that never
//! reaches the repository, or a failing store, leaves no manifest, no in-progress marker and
//! no lease behind. Restoring the backups is tested with `restore`.

mod common;

use common::pg::*;
use pgward::backup::run_backup;
use pgward::codec;
use pgward::config::Config;
use pgward::context::Context;
use pgward::events::{Event, TestSink};
use pgward::pg::page_checksum::{self, BLCKSZ, PageCheck, RELSEG_SIZE};
use pgward::repo::layout;
use pgward::repo::manifest::{FileKind, Manifest};
use pgward::storage::DynStorage;
use pgward::storage::faulty::FaultyStorage;
use pgward::storage::local::LocalStorage;
use pgward::storage::retry::{self, RetryPolicy};
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// A cluster archiving into `<dir>/repo`, with a pgward configuration that can back it up.
struct Setup {
    cluster: PgCluster,
    repo: PathBuf,
    cfg: PathBuf,
}

/// The text of a configuration for `cluster` and `repo` with `[postgres] conninfo` and a
/// `[backup]` section (the harness writes pgdata and the repository only).
fn config_text(dir: &TestDir, cluster: &PgCluster, repo: &Path, wal_wait: &str) -> String {
    let base = write_config(dir, &cluster.datadir, RepoSpec::Local(repo.to_path_buf()));
    let text = fs::read_to_string(&base).unwrap();
    let conninfo = format!(
        "host={} port={} user=postgres dbname=postgres",
        cluster.socket_dir.display(),
        cluster.port
    );
    text.replacen(
        "[postgres]\n",
        &format!("[postgres]\nconninfo = {}\n", toml_str(&conninfo)),
        1,
    ) + &format!(
        "\n[backup]\njobs = 2\nwal_wait_timeout = {}\n",
        toml_str(wal_wait)
    )
}

fn setup(dir: &TestDir, name: &str) -> Setup {
    let mut cluster = PgCluster::init(
        dir,
        name,
        InitOpts {
            data_checksums: true,
            // Nothing but the test reads or writes: a corrupt page stays out of shared buffers.
            extra_conf: vec!["archive_mode = on".into(), "autovacuum = off".into()],
        },
    );
    let repo = dir.path().join(format!("{name}-repo"));
    let cfg = dir.path().join(format!("{name}.toml"));
    write_postgres_file(&cfg, config_text(dir, &cluster, &repo, "30s").as_bytes());
    cluster.append_conf(&[format!(
        "archive_command = '{} --config {} wal-push %p'",
        reachable_binary().display(),
        cfg.display()
    )]);
    pgward_ok(dir.path(), &["--config", cfg.to_str().unwrap(), "init"]);
    cluster.start();
    Setup { cluster, repo, cfg }
}

fn backup_json(dir: &TestDir, cfg: &Path) -> Value {
    let out = pgward_ok(
        dir.path(),
        &["--config", cfg.to_str().unwrap(), "backup", "--json"],
    );
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("backup --json is not JSON ({e}):\n{}", out.describe()))
}

fn u64_of(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not a number in {v:#}"))
}

fn load_manifest(repo: &Path, label: &str) -> Manifest {
    let bytes = fs::read(repo.join(layout::manifest_key(label)))
        .unwrap_or_else(|e| panic!("no manifest for {label}: {e}"));
    Manifest::from_bytes(&bytes).unwrap()
}

/// Every key in a local repository (without reading the objects).
fn repo_keys(repo: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![repo.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(repo).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

/// Labels with a manifest, and keys of in-progress markers, in the repository.
fn backups_in(repo: &Path) -> (Vec<String>, Vec<String>) {
    let mut manifests = Vec::new();
    let mut markers = Vec::new();
    for key in repo_keys(repo) {
        match layout::parse_backup_key(&key) {
            Some(layout::BackupKey::Manifest(l)) => manifests.push(l),
            Some(layout::BackupKey::InProgress(_)) => markers.push(key),
            None => {}
        }
    }
    manifests.sort();
    (manifests, markers)
}

/// Every page of every relation file in `base/` and `global/` verifies with pgward's checksum
/// (nothing writes meanwhile); returns the number of pages checked.
fn verify_real_pages(pgdata: &Path) -> usize {
    let mut checked = 0;
    let mut dirs = vec![pgdata.join("global")];
    for db in fs::read_dir(pgdata.join("base")).unwrap() {
        dirs.push(db.unwrap().path());
    }
    for d in dirs {
        let rel_dir = d
            .strip_prefix(pgdata)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        for f in fs::read_dir(&d).unwrap() {
            let f = f.unwrap();
            let rel = format!("{rel_dir}/{}", f.file_name().to_string_lossy());
            let Some(segno) = page_checksum::relation_segment(&rel) else {
                continue;
            };
            let data = fs::read(f.path()).unwrap();
            for (i, chunk) in data.chunks_exact(BLCKSZ).enumerate() {
                let page: &[u8; BLCKSZ] = chunk.try_into().unwrap();
                let blkno = segno * RELSEG_SIZE + i as u32;
                match page_checksum::check_page(page, blkno, pgward::pg::Lsn(u64::MAX)) {
                    PageCheck::Valid => checked += 1,
                    PageCheck::New => {}
                    other => panic!("{rel} page {i}: {other:?}"),
                }
            }
        }
    }
    checked
}

#[test]
fn backup_cli() {
    let dir = TestDir::new("bkp");
    let tmp = dir.path();

    // A server that is not running is refused quickly, saying what to check.
    let cluster = PgCluster::init(
        &dir,
        "down",
        InitOpts {
            data_checksums: true,
            extra_conf: vec![],
        },
    );
    let down_repo = tmp.join("down-repo");
    let down_cfg = dir.write_file("down.toml", config_text(&dir, &cluster, &down_repo, "5s"));
    pgward_ok(tmp, &["--config", down_cfg.to_str().unwrap(), "init"]);
    let out = pgward(tmp, &["--config", down_cfg.to_str().unwrap(), "backup"]);
    assert_eq!(out.code(), Some(1), "{}", out.describe());
    assert!(
        out.stderr.contains("cannot connect to PostgreSQL")
            && out.stderr.contains("[postgres] conninfo"),
        "{}",
        out.describe()
    );
    let s = setup(&dir, "src");
    let cfg = s.cfg.to_str().unwrap();
    let repo = &s.repo;
    let pg = &s.cluster;
    let other = tmp.join("other.toml");
    write_postgres_file(&other, config_text(&dir, pg, &down_repo, "5s").as_bytes());
    let out = pgward(tmp, &["--config", other.to_str().unwrap(), "backup"]);
    assert_eq!(out.code(), Some(1), "{}", out.describe());
    // A repository of another cluster is refused before anything is written.
    assert!(
        out.stderr.contains("system identifier"),
        "{}",
        out.describe()
    );
    drop(cluster);

    pg.pgbench(&["-i", "-s", "2", "-q"]);
    // A tablespace outside the data directory, and an unlogged table.
    let ts_dir = dir.subdir("ts1");
    pg.psql(&format!(
        "create tablespace ts1 location '{}'",
        ts_dir.display()
    ));
    pg.psql("create table in_ts tablespace ts1 as select g from generate_series(1, 1000) g");
    pg.psql("create unlogged table scratch as select g from generate_series(1, 1000) g");
    let ts_oid = pg.psql("select oid from pg_tablespace where spcname = 'ts1'");
    let in_ts_path = pg.psql("select pg_relation_filepath('in_ts')");
    let scratch_path = pg.psql("select pg_relation_filepath('scratch')");
    pg.psql("create table t (id int, pad text)");
    pg.psql("insert into t select g, repeat('x', 100) from generate_series(1, 200) g");
    pg.psql("checkpoint");
    let t_path = pg.psql("select pg_relation_filepath('t')");
    // pgward's page checksum agrees with PostgreSQL on every page of a real cluster.
    let pages = verify_real_pages(&pg.datadir);
    assert!(pages > 1000, "only {pages} pages checked");

    // --- a first backup -------------------------------------------------------------------------
    let first = backup_json(&dir, &s.cfg);
    let label1 = first["label"].as_str().unwrap().to_string();
    assert_eq!(label1.len(), 16, "{label1}");
    assert!(
        label1.ends_with('Z') && label1.as_bytes()[8] == b'T',
        "{label1}"
    );
    let total1 = u64_of(&first, "total_bytes");
    let stored1 = u64_of(&first, "stored_bytes");
    assert!(total1 > 30_000_000, "{first:#}");
    assert!(stored1 > 0 && stored1 < total1, "{first:#}");
    assert!(u64_of(&first, "new_bytes") <= total1, "{first:#}");
    assert_eq!(u64_of(&first, "bad_pages"), 0, "{first:#}");
    assert_eq!(u64_of(&first, "timeline"), 1);
    assert!(first["dedup_ratio"].as_f64().unwrap() >= 1.0);
    assert!(first["mb_per_s"].as_f64().unwrap() > 0.0);

    let (labels, markers) = backups_in(repo);
    assert_eq!(labels, std::slice::from_ref(&label1));
    assert!(markers.is_empty(), "{markers:?}");
    assert!(!repo.join(layout::lock_key("backup")).exists());
    let m = load_manifest(repo, &label1);
    assert!(m.data_checksums);
    assert_eq!(m.stats.total_bytes, total1);
    assert_eq!(
        m.start_lsn.to_string(),
        first["start_lsn"].as_str().unwrap()
    );
    assert!(
        m.backup_label.contains("START WAL LOCATION"),
        "{}",
        m.backup_label
    );
    // The tablespace is followed and recorded where PostgreSQL addresses it.
    assert_eq!(m.tablespaces.len(), 1, "{:?}", m.tablespaces);
    assert_eq!(m.tablespaces[0].oid.to_string(), ts_oid);
    assert_eq!(Path::new(&m.tablespaces[0].location), ts_dir);
    assert!(
        m.tablespace_map
            .as_deref()
            .is_some_and(|t| t.contains(&ts_oid)),
        "{:?}",
        m.tablespace_map
    );
    assert!(
        in_ts_path.starts_with(&format!("pg_tblspc/{ts_oid}/PG_15_")),
        "{in_ts_path}"
    );
    let find = |path: &str| m.files.iter().find(|f| f.path == path);
    for dir_path in [
        "base",
        "global",
        "pg_wal",
        "pg_wal/archive_status",
        "pg_replslot",
        "pg_tblspc",
    ] {
        assert_eq!(
            find(dir_path).map(|f| f.kind),
            Some(FileKind::Dir),
            "{dir_path}"
        );
    }
    // An unlogged table keeps only its init fork.
    assert!(
        find(&scratch_path).is_none(),
        "{scratch_path} must not be backed up"
    );
    assert!(find(&format!("{scratch_path}_init")).is_some());
    for file in [
        "PG_VERSION",
        "global/pg_control",
        "postgresql.conf",
        t_path.as_str(),
        in_ts_path.as_str(),
    ] {
        assert_eq!(find(file).map(|f| f.kind), Some(FileKind::File), "{file}");
    }
    for f in &m.files {
        assert!(
            !f.path.starts_with("pg_wal/0")
                && f.path != "postmaster.pid"
                && f.path != "postmaster.opts",
            "{} must not be backed up",
            f.path
        );
        assert_eq!(
            f.size,
            f.blocks.iter().map(|r| r.pieces[0].len).sum::<u64>(),
            "{}",
            f.path
        );
    }
    assert_eq!(
        m.stats.total_bytes,
        m.files.iter().map(|f| f.size).sum::<u64>()
    );
    // Every block is stored, and PG_VERSION comes back byte for byte.
    for id in m.block_ids() {
        assert!(
            repo.join(layout::block_key(id)).is_file(),
            "block {id} missing"
        );
    }
    let pv = find("PG_VERSION").unwrap();
    let stored = fs::read(repo.join(layout::block_key(&pv.blocks[0].pieces[0].id))).unwrap();
    assert_eq!(
        codec::decode_to_vec(&stored, Some(&pv.blocks[0].pieces[0].id)).unwrap(),
        fs::read(pg.datadir.join("PG_VERSION")).unwrap()
    );
    // The WAL it needs is archived.
    let wal_keys: Vec<String> = repo_keys(repo)
        .into_iter()
        .filter(|k| k.starts_with("wal/"))
        .collect();
    for seg in [&m.start_wal, &m.stop_wal] {
        assert!(
            wal_keys.iter().any(|k| k.contains(&format!("/{seg}-"))),
            "{seg} not archived"
        );
    }

    // --- a small change: the second backup stores a small fraction -------------------------
    pg.psql("update pgbench_branches set bbalance = bbalance + 1 where bid = 1");
    let second = backup_json(&dir, &s.cfg);
    let label2 = second["label"].as_str().unwrap().to_string();
    assert_ne!(label2, label1);
    let stored2 = u64_of(&second, "stored_bytes");
    eprintln!("first backup: {first}\nsecond backup: {second}");
    assert!(
        stored2 * 10 < stored1,
        "second backup stored {stored2} bytes, first {stored1}"
    );
    assert!(u64_of(&second, "total_bytes") > 30_000_000);

    // --- one backup at a time: a lease held elsewhere refuses the backup, naming its holder ---
    let lock = repo.join(layout::lock_key("backup"));
    make_postgres_dir(lock.parent().unwrap());
    write_postgres_file(
        &lock,
        br#"{"host":"db-other.example","pid":4242,"purpose":"backup","acquired_at":"2026-11-22T01:30:00Z"}"#,
    );
    let out = pgward(tmp, &["--config", cfg, "backup"]);
    assert_eq!(out.code(), Some(1), "{}", out.describe());
    assert!(
        out.stderr.contains("db-other.example") && out.stderr.contains("4242"),
        "{}",
        out.describe()
    );
    fs::remove_file(&lock).unwrap();
    assert_eq!(
        backups_in(repo),
        (vec![label1.clone(), label2.clone()], vec![])
    );

    // --- a corrupt page is reported and recorded, and the backup completes --------------------
    let mut pg_mut = s.cluster;
    pg_mut.stop();
    let table_file = pg_mut.datadir.join(&t_path);
    let mut bytes = fs::read(&table_file).unwrap();
    assert!(bytes.len() >= 2 * BLCKSZ, "t has {} bytes", bytes.len());
    for b in &mut bytes[BLCKSZ + 4000..BLCKSZ + 4016] {
        *b = !*b;
    }
    fs::write(&table_file, &bytes).unwrap();
    pg_mut.start();
    let out = pgward_ok(tmp, &["--config", cfg, "backup", "--json"]);
    let third: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(u64_of(&third, "bad_pages"), 1, "{}", out.describe());
    assert!(
        out.stderr.contains(&t_path) && out.stderr.contains("checksum"),
        "the warning should name the file\n{}",
        out.describe()
    );
    let m3 = load_manifest(repo, third["label"].as_str().unwrap());
    assert_eq!(m3.bad_pages.len(), 1, "{:?}", m3.bad_pages);
    assert_eq!(m3.bad_pages[0].path, t_path);
    assert_eq!(m3.bad_pages[0].page, 1);
    assert_ne!(m3.bad_pages[0].expected, m3.bad_pages[0].found);

    // --- WAL that never reaches the repository: no manifest, nothing left behind --------------
    let short = tmp.join("short.toml");
    write_postgres_file(&short, config_text(&dir, &pg_mut, repo, "3s").as_bytes());
    pg_mut.set_archive_command("/bin/true");
    let before = backups_in(repo).0;
    let out = pgward_timeout(
        tmp,
        &["--config", short.to_str().unwrap(), "backup"],
        Duration::from_secs(60),
    );
    assert_eq!(out.code(), Some(1), "{}", out.describe());
    let missing = out
        .stderr
        .split("missing ")
        .nth(1)
        .map(|rest| rest.chars().take(24).collect::<String>())
        .unwrap_or_else(|| panic!("no missing segment named\n{}", out.describe()));
    assert!(
        missing.len() == 24 && missing.bytes().all(|b| b.is_ascii_hexdigit()),
        "{missing}\n{}",
        out.describe()
    );
    assert!(
        !repo_keys(repo)
            .iter()
            .any(|k| k.contains(&format!("/{missing}-"))),
        "{missing} is in the repository after all"
    );
    let (after, markers) = backups_in(repo);
    assert_eq!(after, before, "no manifest may be written");
    assert!(markers.is_empty(), "in-progress marker left: {markers:?}");
    assert!(!lock.exists(), "the lease must be released");
    common::verify::assert_repo_verifies(tmp, &s.cfg);
}

/// An `archive_command` that archives into some other directory makes PostgreSQL report every
/// segment archived while the repository never sees one. The backup must tell within seconds,
/// not after `backup.wal_wait_timeout` (10 min by default), naming the segment, the cause and
/// the `archive_command`, and leave no manifest, marker or lease. A failing `archive_command`
/// makes `pg_backup_stop` time out, and that error names the WAL the archiver fails on.
#[test]
fn wal_archived_elsewhere_fails_fast() {
    let dir = TestDir::new("bkelse");
    let tmp = dir.path();
    let mut s = setup(&dir, "src");
    let elsewhere = dir.subdir("elsewhere");
    let command = format!("cp %p {}/%f", elsewhere.display());
    s.cluster.set_archive_command(&command);
    let long = tmp.join("long.toml");
    write_postgres_file(
        &long,
        config_text(&dir, &s.cluster, &s.repo, "10min").as_bytes(),
    );

    let started = std::time::Instant::now();
    let out = pgward_timeout(
        tmp,
        &["--config", long.to_str().unwrap(), "backup"],
        Duration::from_secs(60),
    );
    let took = started.elapsed();
    assert_eq!(out.code(), Some(1), "{}", out.describe());
    assert!(
        took < Duration::from_secs(30),
        "took {took:?}\n{}",
        out.describe()
    );
    let err = &out.stderr;
    let seg = err
        .split("reports WAL segment ")
        .nth(1)
        .map(|rest| rest.chars().take(24).collect::<String>())
        .unwrap_or_else(|| panic!("no segment named\n{}", out.describe()));
    assert!(
        seg.bytes().all(|b| b.is_ascii_hexdigit()) && elsewhere.join(&seg).exists(),
        "{seg} should be archived elsewhere\n{}",
        out.describe()
    );
    assert!(
        err.contains("archive_command stores WAL somewhere else")
            && err.contains(&format!(
                "archive_command is '{command}' (SHOW archive_command)"
            )),
        "{}",
        out.describe()
    );
    let nothing_left = || {
        let (labels, markers) = backups_in(&s.repo);
        assert!(labels.is_empty(), "no manifest may be written: {labels:?}");
        assert!(markers.is_empty(), "in-progress marker left: {markers:?}");
        assert!(
            !s.repo.join(layout::lock_key("backup")).exists(),
            "the lease must be released"
        );
    };
    nothing_left();

    // A failing archive_command: pg_backup_stop waits in vain, and its timeout says so,
    // naming the WAL the archiver fails on (read before the statement is cancelled).
    s.cluster.set_archive_command("false");
    let short = tmp.join("short.toml");
    write_postgres_file(
        &short,
        config_text(&dir, &s.cluster, &s.repo, "3s").as_bytes(),
    );
    let out = pgward_timeout(
        tmp,
        &["--config", short.to_str().unwrap(), "backup"],
        Duration::from_secs(60),
    );
    assert_eq!(out.code(), Some(1), "{}", out.describe());
    assert!(
        out.stderr.contains("it waited for WAL archiving")
            && out.stderr.contains("last failure: 0000000")
            && out.stderr.contains("hint: archive_command is failing"),
        "{}",
        out.describe()
    );
    nothing_left();
    s.cluster.stop();
}

/// A connection that fails says why — the system error or the server's message — with a
/// hint that fits it, last: a socket directory with no server, a role that does not exist.
#[test]
fn connect_errors_name_their_cause() {
    let dir = TestDir::new("bkconn");
    let tmp = dir.path();
    let s = setup(&dir, "src");
    let text = fs::read_to_string(&s.cfg).unwrap();
    let old = format!("host={} ", s.cluster.socket_dir.display());
    let no_server = dir.subdir("nosock");
    for (name, from, to, cause, hint) in [
        (
            "nosock.toml",
            old.clone(),
            format!("host={} ", no_server.display()),
            "error connecting to server: No such file or directory (os error 2)".to_string(),
            "hint: no server socket there",
        ),
        (
            "norole.toml",
            "user=postgres".to_string(),
            "user=nosuchrole".to_string(),
            "role \"nosuchrole\" does not exist".to_string(),
            "hint: set user= in [postgres] conninfo to a role that exists",
        ),
    ] {
        let cfg = tmp.join(name);
        assert!(text.contains(&from), "{text}");
        write_postgres_file(&cfg, text.replacen(&from, &to, 1).as_bytes());
        let out = pgward(tmp, &["--config", cfg.to_str().unwrap(), "backup"]);
        assert_eq!(out.code(), Some(1), "{}", out.describe());
        let err = out.stderr.trim_end();
        assert!(
            err.contains("cannot connect to PostgreSQL") && err.contains(&cause),
            "{name}: {}",
            out.describe()
        );
        let last = err.lines().last().unwrap_or_default();
        assert!(last.starts_with(hint), "{name}: {}", out.describe());
    }
}

/// A reader that goes away (`backup 2>&1 | head -1`, `backup | true`) must not kill a backup
/// part-way, leaving its lease and in-progress marker, nor turn a finished one into exit 101:
/// the exit status reflects the work, not the printing.
#[test]
fn closed_output_pipes_do_not_stop_a_backup() {
    let dir = TestDir::new("bkpipe");
    let tmp = dir.path();
    let s = setup(&dir, "src");
    let cfg = s.cfg.to_str().unwrap();
    s.cluster.pgbench(&["-i", "-s", "1", "-q"]);

    // -v: debug events all the way through, each one a write to the closed stderr.
    for args in [
        vec!["--config", cfg, "-v", "backup"],
        vec!["--config", cfg, "backup", "--json"],
    ] {
        let status = pgward_closed_pipes(tmp, &args);
        assert_eq!(status.code(), Some(0), "pgward {args:?}: {status:?}");
    }
    let (labels, markers) = backups_in(&s.repo);
    assert_eq!(labels.len(), 2, "{labels:?}");
    assert!(markers.is_empty(), "in-progress marker left: {markers:?}");
    assert!(
        !s.repo.join(layout::lock_key("backup")).exists(),
        "the lease must be released"
    );

    // The repository is as usable as after any backup.
    let third = backup_json(&dir, &s.cfg);
    assert!(
        labels.iter().all(|l| third["label"] != l.as_str()),
        "{third:#}"
    );
    assert_eq!(backups_in(&s.repo).0.len(), 3);

    // Commands whose output is all they do still end cleanly.
    for args in [
        vec!["--config", cfg, "info"],
        vec!["--config", cfg, "info", "--json"],
    ] {
        let status = pgward_closed_pipes(tmp, &args);
        assert_eq!(status.code(), Some(0), "pgward {args:?}: {status:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Storage faults, in process
// ---------------------------------------------------------------------------------------------

fn fast_retries(inner: DynStorage) -> DynStorage {
    retry::wrap(
        inner,
        RetryPolicy {
            attempts: 5,
            attempt_timeout: Duration::from_secs(20),
            base_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
            ..RetryPolicy::default()
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_under_storage_faults() {
    // PostgreSQL and the CLI block; run them off the runtime's workers.
    let (dir, s) = tokio::task::spawn_blocking(|| {
        let dir = TestDir::new("bkpf");
        let s = setup(&dir, "pg");
        s.cluster.psql(
            "create table f as select g as id, md5(g::text) as v from generate_series(1, 20000) g",
        );
        (dir, s)
    })
    .await
    .unwrap();
    let text = fs::read_to_string(&s.cfg).unwrap();
    let config = Config::parse(&text, &s.cfg.display().to_string()).unwrap();
    let local: DynStorage = Arc::new(LocalStorage::new(s.repo.clone()));
    let ctx_with =
        |storage: DynStorage| Context::with_storage(config.clone(), s.cfg.clone(), storage);
    let psql = |sql: &'static str| {
        let c = &s.cluster;
        c.psql(sql);
    };

    // Transient failures of the first calls are retried: the backup succeeds.
    let faulty = Arc::new(FaultyStorage::new(local.clone()));
    faulty.fail_next(3);
    let out = run_backup(&ctx_with(fast_retries(faulty.clone())))
        .await
        .expect("transient faults are retried");
    assert_eq!(faulty.injected_failures(), 3);
    assert!(out.stats.new_blocks > 0);
    assert!(s.repo.join(layout::manifest_key(&out.label)).is_file());

    // Writes that commit but lose their answer (the lease, the in-progress marker, the
    // manifest): the retries find their own objects, so the backup succeeds with exactly one
    // manifest and leaves neither marker nor lease behind.
    psql("insert into f select g, md5(g::text) from generate_series(20001, 20100) g");
    let before = backups_in(&s.repo).0;
    let faulty = Arc::new(FaultyStorage::new(local.clone()));
    faulty
        .lose_acks(layout::LOCKS_PREFIX, 1)
        .lose_acks(layout::BACKUPS_PREFIX, 2);
    let lost = run_backup(&ctx_with(fast_retries(faulty.clone())))
        .await
        .expect("a committed write whose answer was lost is this backup's own");
    assert_eq!(faulty.injected_failures(), 3);
    let (after, markers) = backups_in(&s.repo);
    assert_eq!(after.len(), before.len() + 1, "{after:?}");
    assert!(after.contains(&lost.label), "{after:?}");
    assert!(markers.is_empty(), "{markers:?}");
    assert!(!s.repo.join(layout::lock_key("backup")).exists());

    // Transient failures of block uploads mid-copy are retried too.
    psql("insert into f select g, md5(g::text) from generate_series(20101, 40000) g");
    let blocks = Arc::new(FaultyStorage::new(local.clone()));
    blocks.fail_keys("put", layout::BLOCKS_PREFIX, 3);
    let out2 = run_backup(&ctx_with(fast_retries(blocks.clone())))
        .await
        .expect("transient block faults are retried");
    assert_eq!(blocks.injected_failures(), 3);
    let m2 = Manifest::load(local.as_ref(), &out2.label).await.unwrap();
    for id in m2.block_ids() {
        assert!(local.head(&layout::block_key(id)).await.unwrap().is_some());
    }

    // A store that refuses block uploads fails the backup: no manifest, no marker, no lease.
    psql("insert into f select g, md5(g::text) from generate_series(40001, 60000) g");
    let before = backups_in(&s.repo).0;
    blocks.refuse_keys("put", layout::BLOCKS_PREFIX, true);
    let err = run_backup(&ctx_with(fast_retries(blocks.clone())))
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("cannot store block"), "{err:#}");
    let (after, markers) = backups_in(&s.repo);
    assert_eq!(after, before);
    assert!(markers.is_empty(), "{markers:?}");
    assert!(!s.repo.join(layout::lock_key("backup")).exists());

    // Events: a backup reports its start, its progress and its result, in that order; and a
    // backup cancelled midway writes no manifest, leaves no marker or lease, and the next
    // backup succeeds.
    psql("insert into f select g, md5(g::text) from generate_series(60001, 100000) g");
    let sink = TestSink::new();
    let mut ctx = ctx_with(fast_retries(local.clone()));
    ctx.events = sink.clone();
    let done = run_backup(&ctx)
        .await
        .expect("a backup reporting to a test sink");
    assert_eq!(
        sink.sequence(),
        ["backup_started", "backup_progress", "backup_finished"]
    );
    match sink.events().last() {
        Some(Event::BackupFinished {
            label, total_bytes, ..
        }) => {
            assert_eq!(*label, done.label);
            assert_eq!(*total_bytes, done.stats.total_bytes);
        }
        other => panic!("{other:?}"),
    }

    psql("insert into f select g, md5(g::text) from generate_series(100001, 140000) g");
    let before = backups_in(&s.repo).0;
    let slow = Arc::new(FaultyStorage::new(local.clone()));
    slow.delay("put", layout::BLOCKS_PREFIX, Duration::from_millis(300));
    let sink = TestSink::new();
    let mut ctx = ctx_with(fast_retries(slow.clone()));
    ctx.events = sink.clone();
    let cancel = ctx.cancel.clone();
    let running = tokio::spawn(async move { run_backup(&ctx).await });
    let t0 = std::time::Instant::now();
    while !sink.sequence().contains(&"backup_started".to_string()) {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the backup never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    cancel.cancel();
    let err = running
        .await
        .unwrap()
        .expect_err("a cancelled backup fails");
    assert!(
        err.chain().any(|c| c.is::<pgward::backup::Cancelled>()),
        "{err:#}"
    );
    assert!(t0.elapsed() < Duration::from_secs(30), "cancelled promptly");
    let (after, markers) = backups_in(&s.repo);
    assert_eq!(after, before, "a cancelled backup writes no manifest");
    assert!(markers.is_empty(), "{markers:?}");
    assert!(!s.repo.join(layout::lock_key("backup")).exists());
    match sink.events().last() {
        Some(Event::BackupFailed {
            cancelled, label, ..
        }) => {
            assert!(*cancelled);
            assert!(label.is_some());
        }
        other => panic!("{other:?}"),
    }
    let next = run_backup(&ctx_with(fast_retries(local.clone())))
        .await
        .expect("the backup after a cancelled one");
    assert!(s.repo.join(layout::manifest_key(&next.label)).is_file());

    // A store that refuses every write fails at once, before anything is written.
    let before = backups_in(&s.repo).0;
    let faulty = Arc::new(FaultyStorage::new(local.clone()));
    faulty.fail_puts_permanently(true);
    let err = run_backup(&ctx_with(fast_retries(faulty.clone())))
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("injected permanent failure"),
        "{err:#}"
    );
    assert_eq!(backups_in(&s.repo), (before, vec![]));

    // Failed, cancelled and retried backups leave a repository that verifies.
    let report = pgward::verify::verify(
        local.as_ref(),
        &pgward::verify::VerifyRequest {
            listing_only: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(report.ok, "{}", report.text());

    // The server went on working throughout (its backup was aborted with the session).
    tokio::task::spawn_blocking(move || {
        let s = s;
        assert_eq!(s.cluster.psql("select count(*) from f"), "140000");
        s.cluster.assert_no_fatal();
        drop(s);
        drop(dir);
    })
    .await
    .unwrap();
}
