//! The source every restore-drill test starts from (issue 13): a PostgreSQL 15 cluster set up
//! the way production ones are, so a drill that copies its configuration blindly fails here as
//! it would there.
//!
//! What makes it production-like, each a way a naive scratch server goes wrong:
//! - `max_connections = 300`, `max_prepared_transactions = 10`, `max_locks_per_transaction =
//!   128`: a hot standby (and so a recovering copy) refuses to start with less than the
//!   primary's (pg_control records them).
//! - `archive_command` = pgward wal-push: a copy that keeps it archives into the repository.
//! - `synchronous_standby_names = 'standby_a'` (with `synchronous_commit = local`, so the
//!   source's own commits do not wait): a promoted copy that keeps it hangs every commit.
//! - `primary_conninfo` to an unreachable documentation address (192.0.2.1, TEST-NET-1): a copy
//!   that keeps it tries to stream from "production".
//! - `include_dir = 'conf.d'` setting `work_mem`: a copy that keeps the source's includes
//!   runs with settings the drill did not choose (and fails when the directory is absent).
//! - data checksums on, and a tablespace outside PGDATA holding a table: a copy that restores
//!   it in place writes over the source's tablespace.
//!
//! Then it has the data a drill checks (`bookedbarber`: users, appointments), one base backup
//! (`pgward backup`) and one dump (`pgward dump`), and a pgward.toml whose `[drill]` puts
//! scratch copies in `<testdir>/scratch` and drill files in `<testdir>/drills`.
//!
//! The helpers run drills as PostgreSQL's user, list the repository's `wal/` (to prove a drill
//! wrote no WAL), and assert that nothing of a drill is left: no process naming the scratch
//! directory, and the scratch directory empty or gone.
#![allow(dead_code)]

use super::backup_scenarios::{Source, backup_label, switch_and_archive};
use super::pg::*;
use pgward::config::Config;
use pgward::context::{CreateRepo, open_storage};
use pgward::repo::layout;
use pgward::storage::DynStorage;
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Deadline for one `pgward drill` run (a drill of this small source takes seconds).
const DRILL_TIMEOUT: Duration = Duration::from_secs(300);
/// How long processes of a finished drill may take to disappear (a postmaster's children exit
/// just after it).
const PROCESS_GRACE: Duration = Duration::from_secs(3);

/// The production settings of the source's postgresql.conf, as `SHOW` reports them.
pub const PRODUCTION_SETTINGS: [(&str, &str); 8] = [
    ("max_connections", "300"),
    ("max_prepared_transactions", "10"),
    ("max_locks_per_transaction", "128"),
    ("synchronous_standby_names", "standby_a"),
    ("synchronous_commit", "local"),
    (
        "primary_conninfo",
        "host=192.0.2.1 port=5432 user=replicator",
    ),
    ("work_mem", "8MB"),
    ("data_checksums", "on"),
];

/// The booking database: a few hundred users and a couple of thousand appointments, enough
/// for amcheck and row counts to mean something and small enough to restore in a second.
pub const BOOKEDBARBER_SQL: &str = "
create table users (
    id         bigserial primary key,
    name       text not null,
    email      text not null unique,
    role       text not null check (role in ('client', 'barber')),
    created_at timestamptz not null default '2026-12-01 08:00+00'
);
create table appointments (
    id         bigserial primary key,
    client_id  bigint not null references users,
    barber_id  bigint not null references users,
    service    text not null,
    starts_at  timestamptz not null,
    status     text not null check (status in ('booked', 'completed', 'cancelled'))
);
create index appointments_barber_time on appointments (barber_id, starts_at);
insert into users (name, email, role)
    select 'Barber ' || g, 'barber' || g || '@example.com', 'barber' from generate_series(1, 8) g;
insert into users (name, email, role)
    select 'Client ' || g, 'client' || g || '@example.com', 'client' from generate_series(1, 400) g;
insert into appointments (client_id, barber_id, service, starts_at, status)
    select 9 + g % 400, 1 + g % 8, (array['haircut', 'skin fade', 'beard trim'])[1 + g % 3],
           timestamptz '2026-12-01 09:00+00' + (g / 8) * interval '1 day' + (g % 8) * interval '1 hour',
           case when g % 4 = 0 then 'booked' else 'completed' end
    from generate_series(1, 2000) g;
";

/// The table in the tablespace outside PGDATA (database `bookedbarber`).
pub const TABLESPACE_TABLE: &str = "appointment_archive";
pub const TABLESPACE_SQL: &str = "select count(*) || '/' || md5(string_agg(id || ':' || note, ',' order by id)) \
     from appointment_archive";

/// How [`DrillSource::damage`] breaks an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Damage {
    /// One byte changed (at `at`, or the last byte if the object is shorter): same size, so only
    /// reading it finds out.
    FlipByte {
        at: usize,
    },
    /// Cut to `to` bytes.
    Truncate {
        to: usize,
    },
    Delete,
}

/// The drill source: the running cluster, its pgward configuration, and what is in the
/// repository.
pub struct DrillSource {
    pub src: Source,
    /// The test directory (the working directory of every pgward run).
    pub root: PathBuf,
    pub repo: RepoSpec,
    /// `[drill] scratch_dir`.
    pub scratch: PathBuf,
    /// `[drill] tests`.
    pub drills: PathBuf,
    /// The source's tablespace directory, outside PGDATA.
    pub tablespace: PathBuf,
    /// The label of the base backup taken at start.
    pub backup: String,
    /// The label of the dump taken at start.
    pub dump: String,
}

impl DrillSource {
    /// Starts the production-like source archiving into `repo`, fills `bookedbarber`, takes a
    /// base backup and a dump, and switches WAL so the archive runs past the backup.
    pub fn start(dir: &TestDir, repo: RepoSpec) -> DrillSource {
        let t = Instant::now();
        let production: Vec<String> = [
            "max_connections = 300",
            "max_prepared_transactions = 10",
            "max_locks_per_transaction = 128",
            "synchronous_standby_names = 'standby_a'",
            "synchronous_commit = local",
            "primary_conninfo = 'host=192.0.2.1 port=5432 user=replicator'",
            "include_dir = 'conf.d'",
        ]
        .map(String::from)
        .to_vec();
        let src = Source::start_with(dir, "src", repo.clone(), production, |c| {
            let conf_d = c.datadir.join("conf.d");
            make_postgres_dir(&conf_d);
            write_postgres_file(
                &conf_d.join("10-memory.conf"),
                b"# production tuning, included by postgresql.conf\nwork_mem = '8MB'\n",
            );
        });
        let scratch = dir.subdir("scratch");
        let drills = dir.subdir("drills");
        let section = format!(
            "\n[drill]\nscratch_dir = {}\ntests = {}\n",
            toml_str(&scratch.to_string_lossy()),
            toml_str(&drills.to_string_lossy())
        );
        let text = fs::read_to_string(&src.cfg).unwrap() + &section;
        write_postgres_file(&src.cfg, text.as_bytes());
        eprintln!(
            "[{:>5.1} s] drill source started",
            t.elapsed().as_secs_f64()
        );

        let tablespace = dir.subdir("ts-outside");
        src.cluster.psql("create database bookedbarber");
        src.cluster.psql(&format!(
            "create tablespace bb_archive location '{}'",
            tablespace.display()
        ));
        src.cluster.psql_db("bookedbarber", BOOKEDBARBER_SQL);
        src.cluster.psql_db(
            "bookedbarber",
            &format!(
                "create table {TABLESPACE_TABLE} (id int primary key, note text not null) \
                 tablespace bb_archive; \
                 insert into {TABLESPACE_TABLE} select g, 'archived ' || g \
                 from generate_series(1, 1000) g"
            ),
        );

        let backup = backup_label(&src.backup(dir));
        let out = src.pgward_ok(dir, &["dump", "--json"]);
        let dump: Value = serde_json::from_str(out.stdout.trim())
            .unwrap_or_else(|e| panic!("dump --json is not JSON ({e}):\n{}", out.describe()));
        let dump = dump["label"]
            .as_str()
            .unwrap_or_else(|| panic!("dump --json has no label: {dump:#}"))
            .to_string();
        switch_and_archive(&src.cluster);
        eprintln!(
            "[{:>5.1} s] drill source ready: backup {backup}, dump {dump}",
            t.elapsed().as_secs_f64()
        );
        DrillSource {
            src,
            root: dir.path().to_path_buf(),
            repo,
            scratch,
            drills,
            tablespace,
            backup,
            dump,
        }
    }

    pub fn cfg(&self) -> &Path {
        &self.src.cfg
    }

    /// Writes `<drills>/<name>.toml` (readable by postgres); returns its path.
    pub fn write_drill(&self, name: &str, toml: &str) -> PathBuf {
        let path = self.drills.join(format!("{name}.toml"));
        write_postgres_file(&path, toml.as_bytes());
        path
    }

    /// `pgward --config <cfg> <args>` as postgres, under a deadline; the caller judges it.
    pub fn pgward(&self, args: &[&str]) -> RunOutput {
        let cfg = self.src.cfg.to_string_lossy().into_owned();
        let mut all = vec!["--config", cfg.as_str()];
        all.extend_from_slice(args);
        pgward_timeout(&self.root, &all, DRILL_TIMEOUT)
    }

    /// `pgward --config <cfg> drill <args>` as postgres; the caller judges the outcome.
    pub fn drill(&self, args: &[&str]) -> RunOutput {
        let mut all = vec!["drill"];
        all.extend_from_slice(args);
        self.pgward(&all)
    }

    /// `info --json`, parsed; panics unless it succeeds.
    pub fn info(&self) -> Value {
        let out = self.pgward(&["info", "--json"]);
        assert!(out.status.success(), "info failed\n{}", out.describe());
        serde_json::from_str(out.stdout.trim())
            .unwrap_or_else(|e| panic!("info --json is not JSON ({e}):\n{}", out.describe()))
    }

    /// Runs `f` on the repository's storage, as pgward opens it (the same code for a local and
    /// an S3 repository). Call it from a plain test thread or a blocking one (the S3 tests'
    /// `spawn_blocking`), not from async code.
    pub fn with_repo<T, F>(&self, f: impl FnOnce(DynStorage) -> F) -> T
    where
        F: std::future::Future<Output = T>,
    {
        let (cfg, _) = Config::load(Some(&self.src.cfg)).unwrap_or_else(|e| panic!("{e:#}"));
        let work = async move {
            let storage = open_storage(&cfg, CreateRepo::No)
                .await
                .unwrap_or_else(|e| panic!("cannot open the repository: {e:#}"));
            f(storage).await
        };
        let out = match tokio::runtime::Handle::try_current() {
            // The S3 tests' server runs on that runtime; this is one of its blocking threads.
            Ok(handle) => handle.block_on(work),
            Err(_) => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(work),
        };
        // Objects written here as root must stay readable by the pgward PostgreSQL runs.
        if let RepoSpec::Local(root) = &self.repo {
            chown_tree_postgres(root);
        }
        out
    }

    /// Every object under `prefix` as `<key> <size>`, sorted.
    pub fn listing(&self, prefix: &str) -> Vec<String> {
        let prefix = prefix.to_string();
        let objects = self.with_repo(|s| async move {
            s.list(&prefix)
                .await
                .unwrap_or_else(|e| panic!("cannot list {prefix}: {e:#}"))
        });
        let mut keys: Vec<String> = objects
            .into_iter()
            .map(|o| format!("{} {}", o.key, o.size))
            .collect();
        keys.sort();
        keys
    }

    /// Every object under `wal/` as `<key> <size>`, sorted, as the repository lists it: a drill
    /// must leave it exactly as it found it.
    pub fn wal_listing(&self) -> Vec<String> {
        self.listing(layout::WAL_PREFIX)
    }

    /// The keys under `prefix` (`blocks/`, `dumps/<label>/`, ...), sorted.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        self.listing(prefix)
            .into_iter()
            .map(|l| l.rsplit_once(' ').map(|(k, _)| k.to_string()).unwrap_or(l))
            .collect()
    }

    /// The key of the archived WAL segment `segment` (a 24-hex-digit name); panics unless
    /// exactly one object holds it.
    pub fn wal_key(&self, segment: &str) -> String {
        let keys: Vec<String> = self
            .keys(layout::WAL_PREFIX)
            .into_iter()
            .filter(|k| {
                layout::parse_wal_key(k).is_some_and(|(name, _)| name.to_string() == segment)
            })
            .collect();
        assert_eq!(keys.len(), 1, "objects of WAL segment {segment}: {keys:?}");
        keys.into_iter().next().unwrap()
    }

    /// Damages the object `key` in the repository, behind pgward's back.
    pub fn damage(&self, key: &str, damage: Damage) {
        let key = key.to_string();
        self.with_repo(|s| async move {
            let bytes = s
                .get(&key)
                .await
                .unwrap_or_else(|e| panic!("cannot read {key}: {e:#}"));
            let mut bytes = bytes.to_vec();
            match damage {
                Damage::FlipByte { at } => {
                    assert!(!bytes.is_empty(), "{key} is empty: no byte to flip");
                    let at = at.min(bytes.len() - 1);
                    bytes[at] ^= 0x5a;
                }
                Damage::Truncate { to } => {
                    assert!(to < bytes.len(), "{key} has only {} bytes", bytes.len());
                    bytes.truncate(to);
                }
                Damage::Delete => {
                    s.delete(&key)
                        .await
                        .unwrap_or_else(|e| panic!("cannot delete {key}: {e:#}"));
                    return;
                }
            }
            s.put(&key, bytes::Bytes::from(bytes))
                .await
                .unwrap_or_else(|e| panic!("cannot rewrite {key}: {e:#}"));
        });
    }

    /// Commits a booking and switches WAL, `n` times, waiting until each segment is archived
    /// (a continuous archive past the backup, for holes and corruption in its middle). Returns
    /// the segments' names in order.
    pub fn commit_and_archive(&self, n: usize) -> Vec<String> {
        (0..n)
            .map(|_| {
                self.src.cluster.psql_db(
                    "bookedbarber",
                    "insert into appointments (client_id, barber_id, service, starts_at, status) \
                     values (9, 1, 'haircut', now(), 'booked')",
                );
                switch_and_archive(&self.src.cluster)
            })
            .collect()
    }

    /// Panics unless nothing of a drill is left: no live process whose command line names the
    /// scratch directory (a scratch postmaster runs as `postgres -D <scratch>/...`), and the
    /// scratch directory empty or absent. Processes get [`PROCESS_GRACE`] to go.
    pub fn assert_nothing_left(&self) {
        let started = Instant::now();
        let mut alive = processes_naming(&self.scratch);
        while !alive.is_empty() && started.elapsed() < PROCESS_GRACE {
            std::thread::sleep(Duration::from_millis(100));
            alive = processes_naming(&self.scratch);
        }
        assert!(
            alive.is_empty(),
            "processes of a drill are still running:\n{}",
            alive.join("\n")
        );
        let left: Vec<String> = match fs::read_dir(&self.scratch) {
            Ok(entries) => entries
                .flatten()
                .map(|e| e.path().display().to_string())
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => panic!("cannot read {}: {e}", self.scratch.display()),
        };
        assert!(
            left.is_empty(),
            "the scratch directory {} is not empty:\n{}",
            self.scratch.display(),
            left.join("\n")
        );
    }
}

/// `<pid>: <command line>` of every live process (not a zombie) whose command line mentions
/// `path`, this process excepted.
pub fn processes_naming(path: &Path) -> Vec<String> {
    let needle = path.to_string_lossy().into_owned();
    let me = std::process::id().to_string();
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let pid = e.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) || pid == me {
            continue;
        }
        // A process that exited between the listing and the read has nothing to say.
        let Ok(raw) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmdline.contains(&needle) {
            out.push(format!("{pid}: {}", cmdline.trim_end()));
        }
    }
    out
}
