//! `pgward dump` against a real PostgreSQL 15 (issue 11), on a local and an S3 repository.
//!
//! What it checks: a dump of a BookedBarber-shaped database (tables, an index, a view, a
//! sequence, a large object), decoded from the repository and restored with `pg_restore`,
//! gives a copy whose `pg_dump` equals the source's; databases are dumped `dump.jobs` at a
//! time; an unknown `--db` is refused with nothing stored; a pg_dump killed midway fails the
//! dump, leaves no manifest and no object of its label, and `info` shows no dump; a pg_dump
//! older than the server is refused before anything runs, naming both versions.

mod common;

use common::backup_scenarios::Source;
use common::pg::*;
use common::s3_server::S3Server;
use common::verify::*;
use pgward::codec;
use pgward::repo::dumps::DumpManifest;
use pgward::storage::DynStorage;
use pgward::storage::local::LocalStorage;
use serde_json::Value;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

const CLIENT: Duration = Duration::from_secs(120);

const BOOKEDBARBER_SQL: &str = "
create table users (id bigserial primary key, email text not null unique, name text not null,
  created_at timestamptz not null default '2026-12-01 08:00+00');
create table appointments (id bigserial primary key, user_id bigint not null references users(id),
  starts_at timestamptz not null, service text not null, status text not null default 'booked');
create index appointments_starts_at on appointments (starts_at);
create table payments (id bigserial primary key,
  appointment_id bigint not null references appointments(id),
  amount_cents int not null check (amount_cents > 0), paid_at timestamptz);
create sequence invoice_no start 1000;
create view upcoming as select a.id, u.email, a.starts_at from appointments a
  join users u on u.id = a.user_id where a.status = 'booked';
insert into users (email, name)
  select 'user' || g || '@example.com', 'User ' || g from generate_series(1, 500) g;
insert into appointments (user_id, starts_at, service)
  select 1 + g % 500, timestamptz '2026-12-01 09:00+00' + g * interval '30 min',
         (array['cut', 'shave', 'beard'])[1 + g % 3] from generate_series(1, 2000) g;
insert into payments (appointment_id, amount_cents, paid_at)
  select id, 2500 + id % 1000, starts_at from appointments where id % 2 = 0;
select nextval('invoice_no');
select lo_from_bytea(0, convert_to('receipt for appointment 1', 'UTF8'));
";

fn log_step(what: &str, started: Instant) {
    eprintln!("[{:>6.1} s] {what}", started.elapsed().as_secs_f64());
}

/// A PostgreSQL client program against `c`, as postgres.
fn client(c: &PgCluster, program: &str) -> Command {
    let mut cmd = Command::new(pg_bindir().join(program));
    cmd.current_dir("/tmp")
        .arg("-h")
        .arg(&c.socket_dir)
        .args(["-p", &c.port.to_string(), "-U", "postgres"])
        .env("LC_ALL", "C");
    as_postgres(&mut cmd);
    cmd
}

fn psql_db(c: &PgCluster, db: &str, sql: &str) -> String {
    let mut cmd = client(c, "psql");
    cmd.args([
        "-X",
        "-q",
        "-At",
        "-v",
        "ON_ERROR_STOP=1",
        "-d",
        db,
        "-c",
        sql,
    ]);
    run_ok(&mut cmd, CLIENT).stdout
}

/// A plain `pg_dump` of `db`, without what differs on every run (`\restrict` keys) or may
/// legitimately differ in a copy (`setval`), as NOTES-testing.md says.
fn plain_dump(c: &PgCluster, db: &str) -> String {
    let mut cmd = client(c, "pg_dump");
    cmd.args(["-d", db]);
    let out = run_ok(&mut cmd, CLIENT).stdout;
    out.lines()
        .filter(|l| !l.contains("pg_catalog.setval("))
        .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn dump_json(out: &RunOutput) -> Value {
    serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("dump --json is not JSON ({e}):\n{}", out.describe()))
}

fn info_json(src: &Source, dir: &TestDir) -> Value {
    let out = src.pgward_ok(dir, &["info", "--json"]);
    serde_json::from_str(out.stdout.trim()).unwrap()
}

/// Every key under `dumps/` in the repository.
fn dump_keys(storage: &DynStorage) -> Vec<String> {
    let s = storage.clone();
    tokio::runtime::Handle::current()
        .block_on(async move { s.list("dumps/").await })
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect()
}

/// `restore-dump --label <label> --db <db> --to-file`: the stored archive, verified, in a
/// file postgres can read; checked against the manifest's sha256.
fn stored_archive(src: &Source, dir: &TestDir, label: &str, db: &str) -> PathBuf {
    let path = dir.path().join(format!("{db}.pgdump"));
    let path_arg = path.to_string_lossy().into_owned();
    let args = [
        "restore-dump",
        "--label",
        label,
        "--db",
        db,
        "--to-file",
        &path_arg,
        "--json",
    ];
    let v: Value = serde_json::from_str(src.pgward_ok(dir, &args).stdout.trim()).unwrap();
    let raw = fs::read(&path).unwrap();
    assert_eq!(v["sha256"], codec::Sha256Digest::of(&raw).to_hex(), "{v:#}");
    assert_eq!(v["bytes"], raw.len() as u64, "{v:#}");
    let mut cmd = client(&src.cluster, "pg_restore");
    cmd.arg("--list").arg(&path);
    assert!(
        run_ok(&mut cmd, CLIENT)
            .stdout
            .contains("TABLE DATA public users")
    );
    // Never over an existing file.
    let out = src.pgward(dir, &args);
    assert!(
        !out.status.success() && out.stderr.contains("already exists"),
        "{}",
        out.describe()
    );
    path
}

/// How a test restores a stored dump.
#[derive(Clone, Copy)]
enum Via {
    /// `restore-dump --to-file`, then `pg_restore -d`.
    File,
    /// `restore-dump --to-db <copy> --create`.
    Db,
}

/// Restores the stored dump of `db` into a new database (`<db>_copy`, or `<db>_from_file`)
/// and compares the two.
fn restore_and_compare(src: &Source, dir: &TestDir, label: &str, db: &str, via: Via) {
    let copy = match via {
        Via::File => format!("{db}_from_file"),
        Via::Db => format!("{db}_copy"),
    };
    match via {
        Via::File => {
            let file = stored_archive(src, dir, label, db);
            src.cluster.psql(&format!("create database {copy}"));
            let mut cmd = client(&src.cluster, "pg_restore");
            cmd.args(["--exit-on-error", "-d", &copy]).arg(&file);
            run_ok(&mut cmd, CLIENT);
        }
        Via::Db => {
            let out = src.pgward_ok(
                dir,
                &[
                    "restore-dump",
                    "--db",
                    db,
                    "--to-db",
                    &copy,
                    "--create",
                    "--json",
                ],
            );
            let v: Value = serde_json::from_str(out.stdout.trim()).unwrap();
            assert_eq!(v["label"], label, "the newest dump holding {db}: {v:#}");
            assert_eq!(v["created"], true, "{v:#}");
        }
    }
    let (a, b) = (
        plain_dump(&src.cluster, db),
        plain_dump(&src.cluster, &copy),
    );
    common::backup_scenarios::assert_same_dump(&a, &b, &format!("{db} restored from dump {label}"));
    assert!(
        a.contains("CREATE VIEW public.upcoming") && a.contains("lo_create"),
        "{a}"
    );
    assert_eq!(
        psql_db(&src.cluster, &copy, "select count(*) from payments").trim(),
        "1000"
    );
}

fn create_bookedbarber(src: &Source) {
    src.cluster.psql("create database bookedbarber");
    psql_db(&src.cluster, "bookedbarber", BOOKEDBARBER_SQL);
}

/// Round trip with `dump.jobs = 2` over three databases; an unknown `--db` refused.
fn round_trip_and_refusal(dir: &TestDir, repo: RepoSpec, storage: DynStorage) {
    let t = Instant::now();
    let repo_root = repo.clone();
    let src = Source::start(dir, "src", repo);
    create_bookedbarber(&src);
    src.cluster.psql("create database shop");
    psql_db(
        &src.cluster,
        "shop",
        "create table items (id int primary key, title text); \
         insert into items select g, 'item ' || g from generate_series(1, 100) g",
    );
    let mut cfg = fs::read_to_string(&src.cfg).unwrap();
    cfg += "\n[dump]\njobs = 2\nrole_passwords = false\n";
    write_postgres_file(&src.cfg, cfg.as_bytes());
    src.cluster.psql("create role auditor nologin");
    log_step("source ready", t);

    let out = src.pgward_ok(dir, &["dump", "--json"]);
    log_step("dumped", t);
    let v = dump_json(&out);
    let label = v["label"].as_str().unwrap().to_string();
    src.cluster.psql("drop role auditor");
    let names: Vec<&str> = (v["databases"].as_array().unwrap().iter())
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["bookedbarber", "postgres", "shop"], "{v:#}");
    for d in v["databases"].as_array().unwrap() {
        assert!(d["stored_size"].as_u64().unwrap() > 0, "{d}");
    }
    // users, appointments, payments, their sequences and constraints, the index, the view,
    // the large object and its data, ...
    assert!(
        v["databases"][0]["toc_entries"].as_u64().unwrap() > 20,
        "{v:#}"
    );
    assert!(
        v["server_version"].as_str().unwrap().starts_with("15."),
        "{v}"
    );
    // `dump.jobs = 2`: a second database started before the first one ended.
    let s = storage.clone();
    let l = label.clone();
    let m = tokio::runtime::Handle::current()
        .block_on(async move { DumpManifest::load(s.as_ref(), &l).await })
        .unwrap();
    let overlapping = m.databases.iter().any(|a| {
        m.databases
            .iter()
            .any(|b| a.name != b.name && b.start_time >= a.start_time && b.start_time < a.stop_time)
    });
    assert!(
        overlapping,
        "no two databases were dumped at once: {:#?}",
        m.databases
    );
    let info = info_json(&src, dir);
    assert_eq!(info["dumps"].as_array().unwrap().len(), 1, "{info:#}");
    assert_eq!(info["dumps"][0]["label"], label.as_str());
    assert_eq!(info["dumps_incomplete"], serde_json::json!([]));
    let text = src.pgward_ok(dir, &["info"]).stdout;
    assert!(
        text.contains("Logical dumps")
            && text.contains("3 databases: bookedbarber, postgres, shop"),
        "{text}"
    );

    let before = dump_keys(&storage);
    let out = src.pgward(dir, &["dump", "--db", "shop", "--db", "nosuch"]);
    assert!(!out.status.success(), "{}", out.describe());
    eprintln!("dump --db nosuch:\n{}", out.stderr);
    assert!(
        out.stderr.contains("database `nosuch` does not exist")
            && out.stderr.contains("nothing was dumped"),
        "{}",
        out.describe()
    );
    assert_eq!(dump_keys(&storage), before, "a refused dump stored nothing");
    log_step("unknown --db refused", t);

    let dry = src.pgward_ok(
        dir,
        &[
            "restore-dump",
            "--db",
            "bookedbarber",
            "--to-db",
            "bookedbarber_copy",
            "--create",
            "--dry-run",
        ],
    );
    assert!(
        dry.stdout.contains("would restore database `bookedbarber`"),
        "{}",
        dry.describe()
    );
    assert_eq!(
        src.cluster
            .psql("select count(*) from pg_database where datname = 'bookedbarber_copy'"),
        "0",
        "a dry run creates nothing"
    );
    restore_and_compare(&src, dir, &label, "bookedbarber", Via::Db);
    log_step("restored into a new database and compared", t);
    let fingerprint = plain_dump(&src.cluster, "bookedbarber_copy");
    for (args, want) in [
        (
            vec![
                "restore-dump",
                "--db",
                "bookedbarber",
                "--to-db",
                "bookedbarber_copy",
            ],
            "database `bookedbarber_copy` is not empty",
        ),
        (
            vec![
                "restore-dump",
                "--db",
                "bookedbarber",
                "--to-db",
                "bookedbarber_copy",
                "--create",
            ],
            "database `bookedbarber_copy` already exists",
        ),
    ] {
        let out = src.pgward(dir, &args);
        assert!(
            !out.status.success() && out.stderr.contains(want),
            "{}",
            out.describe()
        );
    }
    assert_eq!(
        plain_dump(&src.cluster, "bookedbarber_copy"),
        fingerprint,
        "nothing changed"
    );
    // --clean drops and recreates what the dump holds, in the one transaction.
    psql_db(
        &src.cluster,
        "bookedbarber_copy",
        "delete from payments where id % 3 = 0",
    );
    src.pgward_ok(
        dir,
        &[
            "restore-dump",
            "--db",
            "bookedbarber",
            "--to-db",
            "bookedbarber_copy",
            "--clean",
        ],
    );
    assert_eq!(
        plain_dump(&src.cluster, "bookedbarber_copy"),
        fingerprint,
        "--clean restored"
    );
    // An existing empty database is a valid target.
    src.cluster.psql("create database shop_copy");
    src.pgward_ok(
        dir,
        &[
            "restore-dump",
            "--db",
            "shop",
            "--to-db",
            "shop_copy",
            "--no-owner",
        ],
    );
    assert_eq!(
        psql_db(&src.cluster, "shop_copy", "select count(*) from items").trim(),
        "100"
    );
    // --globals brings the dropped role back; `postgres`, which exists, is no error.
    src.pgward_ok(
        dir,
        &[
            "restore-dump",
            "--db",
            "shop",
            "--to-db",
            "shop_globals",
            "--create",
            "--globals",
        ],
    );
    assert_eq!(
        src.cluster
            .psql("select count(*) from pg_roles where rolname = 'auditor'"),
        "1"
    );
    restore_and_compare(&src, dir, &label, "bookedbarber", Via::File);
    log_step("to-file checked", t);
    assert_repo_verifies(dir.path(), &src.cfg);

    // A stored object with a flipped byte: restore-dump fails naming the object and the
    // database, and writes nothing.
    let RepoSpec::Local(root) = repo_root else {
        return;
    };
    let key = format!("dumps/{label}/shop.pgdump.zst");
    let object = root.join(&key);
    let mut bytes = fs::read(&object).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    fs::write(&object, bytes).unwrap();
    let target = dir.path().join("shop.pgdump");
    let out = src.pgward(
        dir,
        &[
            "restore-dump",
            "--db",
            "shop",
            "--to-file",
            target.to_str().unwrap(),
        ],
    );
    let said = out.describe();
    eprintln!("restore-dump of a damaged object:\n{}", out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(
        out.stderr.contains(&key) && out.stderr.contains("database `shop`"),
        "{said}"
    );
    assert!(
        out.stderr.contains("corrupt") && out.stderr.contains("nothing was written"),
        "{said}"
    );
    assert!(!target.exists(), "{said}");
    let out = src.pgward(
        dir,
        &[
            "restore-dump",
            "--db",
            "shop",
            "--to-db",
            "shop_again",
            "--create",
        ],
    );
    let said = out.describe();
    eprintln!("restore-dump --to-db of a damaged object:\n{}", out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(
        out.stderr.contains(&key) && out.stderr.contains("was dropped"),
        "{said}"
    );
    assert_eq!(
        src.cluster
            .psql("select count(*) from pg_database where datname = 'shop_again'"),
        "0",
        "{said}"
    );
    let leftovers: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp."))
        .collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");

    // The flipped byte keeps the object's size: the listing checks pass, a full read names it.
    assert_repo_verifies(dir.path(), &src.cfg);
    let (ok, report) = verify_json(dir.path(), &src.cfg, &["--full"]);
    let corrupt = problems(&report, "dump_object_corrupt");
    assert!(!ok && corrupt.len() == 1, "{report:#}");
    assert_eq!(corrupt[0]["object"], key.as_str());
    assert_eq!(
        strings(&corrupt[0]["breaks"]["dumps"]),
        vec![format!("{label}/shop")]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dump_round_trip_jobs_and_unknown_db_local() {
    let dir = TestDir::new("dump-rt");
    let root = dir.path().join("repo");
    let storage: DynStorage = Arc::new(LocalStorage::new(root.clone()));
    let dir = Arc::new(dir);
    let d = dir.clone();
    tokio::task::spawn_blocking(move || round_trip_and_refusal(&d, RepoSpec::Local(root), storage))
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dump_round_trip_s3() {
    let server = S3Server::start().await;
    let storage: DynStorage = Arc::new(server.storage("pgward-dumps", "dump-s3").await);
    let repo = RepoSpec::S3 {
        endpoint: server.endpoint.clone(),
        bucket: "pgward-dumps".into(),
        prefix: "dump-s3".into(),
        access_key: server.access_key.clone(),
        secret_key: server.secret_key.clone(),
    };
    tokio::task::spawn_blocking(move || {
        let t = Instant::now();
        let dir = TestDir::new("dump-s3");
        let src = Source::start(&dir, "src", repo);
        create_bookedbarber(&src);
        let v = dump_json(&src.pgward_ok(&dir, &["dump", "--db", "bookedbarber", "--json"]));
        log_step("dumped into S3", t);
        let label = v["label"].as_str().unwrap().to_string();
        assert_eq!(v["databases"].as_array().unwrap().len(), 1, "{v:#}");
        let keys = dump_keys(&storage);
        assert_eq!(
            keys,
            [
                format!("dumps/{label}/bookedbarber.pgdump.zst"),
                format!("dumps/{label}/globals.sql.zst"),
                format!("dumps/{label}/manifest.json.zst"),
            ],
            "the in-progress marker is gone"
        );
        restore_and_compare(&src, &dir, &label, "bookedbarber", Via::Db);
        log_step("restored and compared", t);
    })
    .await
    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    drop(server);
}

/// A bin directory with every PostgreSQL program of the real one, and `pg_dump` replaced by
/// `script` (`$REAL` is the real pg_dump).
fn fake_bindir(dir: &TestDir, name: &str, script: &str) -> PathBuf {
    let bin = dir.subdir(name);
    for e in fs::read_dir(pg_bindir()).unwrap().flatten() {
        if e.file_name() != "pg_dump" {
            std::os::unix::fs::symlink(e.path(), bin.join(e.file_name())).unwrap();
        }
    }
    let real = pg_bindir().join("pg_dump");
    let text = format!("#!/bin/sh\nREAL='{}'\n{script}", real.display());
    let path = bin.join("pg_dump");
    write_postgres_file(&path, text.as_bytes());
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

/// A copy of the source's configuration with another `[postgres] bindir`.
fn config_with_bindir(src: &Source, dir: &TestDir, name: &str, bindir: &Path) -> String {
    let text = fs::read_to_string(&src.cfg).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("bindir = "))
        .unwrap()
        .to_string();
    let text = text.replace(
        &line,
        &format!("bindir = {}", toml_str(&bindir.to_string_lossy())),
    );
    dir.write_file(name, text).to_string_lossy().into_owned()
}

fn assert_no_dump_left(src: &Source, dir: &TestDir, root: &Path, what: &str) {
    let files: Vec<String> = snapshot_tree(root)
        .into_keys()
        .filter(|k| k.starts_with("dumps/"))
        .collect();
    assert!(files.is_empty(), "{what}: objects left: {files:?}");
    let info = info_json(src, dir);
    assert_eq!(info["dumps"], serde_json::json!([]), "{what}: {info:#}");
    assert_eq!(
        info["dumps_incomplete"],
        serde_json::json!([]),
        "{what}: {info:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dump_fails_whole_when_pg_dump_dies_and_refuses_an_older_pg_dump() {
    tokio::task::spawn_blocking(|| {
        let t = Instant::now();
        let dir = TestDir::new("dump-fail");
        let root = dir.path().join("repo");
        let src = Source::start(&dir, "src", RepoSpec::Local(root.clone()));
        src.cluster.psql("create database alpha");
        src.cluster.psql("create database victim");
        psql_db(
            &src.cluster,
            "victim",
            "create table big as select g as id, md5(g::text) as payload \
             from generate_series(1, 60000) g",
        );

        // pg_dump of `victim` is cut off after 50 kB and the wrapper dies by SIGKILL; alpha and
        // postgres (dumped before it, in name order) are stored by then.
        let killer = fake_bindir(
            &dir,
            "bin-killed",
            "case \"$*\" in *victim*)\n  \"$REAL\" \"$@\" | head -c 50000\n  \
             echo 'test wrapper: pg_dump cut off midway' >&2\n  kill -9 $$;;\nesac\n\
             exec \"$REAL\" \"$@\"\n",
        );
        let cfg = config_with_bindir(&src, &dir, "killed.toml", &killer);
        let out = pgward_timeout(dir.path(), &["--config", &cfg, "dump"], CLIENT);
        log_step("dump with a dying pg_dump", t);
        let said = out.describe();
        eprintln!("dump with a dying pg_dump:\n{}", out.stderr);
        assert!(!out.status.success(), "{said}");
        for want in [
            "pg_dump of database `victim` failed (killed by signal 9)",
            "test wrapper: pg_dump cut off midway",
            "no manifest was written",
            "objects it had stored under dumps/",
            "were removed",
        ] {
            assert!(out.stderr.contains(want), "missing `{want}`:\n{said}");
        }
        assert_no_dump_left(&src, &dir, &root, "after a killed pg_dump");

        let old = fake_bindir(
            &dir,
            "bin-14",
            "if [ \"$1\" = --version ]; then echo 'pg_dump (PostgreSQL) 14.10'; exit 0; fi\n\
             exec \"$REAL\" \"$@\"\n",
        );
        let cfg = config_with_bindir(&src, &dir, "old.toml", &old);
        let out = pgward_timeout(dir.path(), &["--config", &cfg, "dump"], CLIENT);
        let said = out.describe();
        eprintln!("dump with pg_dump 14:\n{}", out.stderr);
        assert!(!out.status.success(), "{said}");
        let server = src.cluster.psql("show server_version");
        let server = server.split_whitespace().next().unwrap();
        for want in [
            "pg_dump 14.10".to_string(),
            format!("older than the server, PostgreSQL {server}"),
            "nothing was dumped".to_string(),
        ] {
            assert!(out.stderr.contains(&want), "missing `{want}`:\n{said}");
        }
        assert_no_dump_left(&src, &dir, &root, "after refusing pg_dump 14");

        // The same repository still takes a good dump.
        let v = dump_json(&src.pgward_ok(&dir, &["dump", "--db", "victim", "--json"]));
        assert!(
            v["databases"][0]["size"].as_u64().unwrap() > 2 << 20,
            "{v:#}"
        );
        log_step("refusals checked", t);

        // Damage near the end of a multi-MiB archive: pg_restore has restored the first MiBs
        // in its transaction when the damage shows; it is killed, and the existing empty
        // target is left as it was.
        let key = v["databases"][0]["key"].as_str().unwrap();
        let object = root.join(key);
        let mut bytes = fs::read(&object).unwrap();
        let near_end = bytes.len() - bytes.len() / 20;
        bytes[near_end] ^= 0x40;
        fs::write(&object, bytes).unwrap();
        src.cluster.psql("create database victim_copy");
        let out = src.pgward(
            &dir,
            &["restore-dump", "--db", "victim", "--to-db", "victim_copy"],
        );
        let said = out.describe();
        eprintln!(
            "restore-dump into an existing database, damage near the end:\n{}",
            out.stderr
        );
        assert!(!out.status.success(), "{said}");
        assert!(
            out.stderr.contains(key) && out.stderr.contains("database `victim_copy` is as it was"),
            "{said}"
        );
        assert_eq!(
            psql_db(
                &src.cluster,
                "victim_copy",
                "select count(*) from pg_class where relname = 'big'"
            )
            .trim(),
            "0",
            "{said}"
        );
        log_step("damaged restore rolled back", t);
    })
    .await
    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
}
