//! A tablespace created while a base backup is being copied (issue 9, item 7), against a real
//! PostgreSQL 15.
//!
//! The backup runs in this process so that the walk's test hook can pause it just before it
//! lists `pg_tblspc`: the test then runs `CREATE TABLESPACE` and fills a table in it, and lets
//! the copy go on. The backup completes; recovery of it replays that `CREATE TABLESPACE`,
//! which PostgreSQL 15 does at the location recorded in WAL, the source's.
//!
//! The contract: the manifest marks the tablespace; a restore that maps it elsewhere, or that
//! would write into the source's own tablespace directory, is refused before anything is
//! written, naming the tablespace and what to do; where its location is free (another host,
//! here the source's directory moved out of reach), recovery finishes with the table there and
//! the source's tablespace files are untouched.

mod common;

use common::backup_scenarios::{Source, no_archiving, start_restored, switch_and_archive};
use common::pg::*;
use pgward::backup::run_backup;
use pgward::backup::walk::hook;
use pgward::config::Config;
use pgward::context::Context;
use pgward::repo::layout;
use pgward::repo::manifest::Manifest;
use pgward::storage::DynStorage;
use pgward::storage::local::LocalStorage;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const IN_NEW_SQL: &str = "select count(*) || '/' || coalesce(sum(id), 0) from in_new";

/// Pauses the next walk of `pgdata` just before it lists `pg_tblspc`: sends on the returned
/// receiver once paused, and goes on when the sender is sent `()`.
fn pause_before_pg_tblspc(pgdata: &Path) -> (mpsc::Receiver<()>, mpsc::Sender<()>) {
    let (paused_tx, paused_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let at = pgdata.join("pg_tblspc");
    let once = Mutex::new(Some((paused_tx, go_rx)));
    hook::set_before_listing(move |dir| {
        if dir != at {
            return;
        }
        let Some((paused, go)) = once.lock().unwrap().take() else {
            return;
        };
        paused.send(()).unwrap();
        go.recv_timeout(Duration::from_secs(120))
            .expect("the test never let the paused backup go on");
    });
    (paused_rx, go_tx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tablespace_created_during_the_copy() {
    let (dir, src, repo, ts_old_src, ts_new_src) = tokio::task::spawn_blocking(|| {
        let dir = TestDir::new("tsdur");
        let repo = dir.path().join("repo");
        let src = Source::start(&dir, "src", RepoSpec::Local(repo.clone()));
        // A tablespace that exists when the backup starts, for comparison.
        let ts_old_src = dir.subdir("ts-old-src");
        src.cluster.psql(&format!(
            "create tablespace ts_old location '{}'",
            ts_old_src.display()
        ));
        src.cluster.psql(
            "create table in_old tablespace ts_old as select g as id from generate_series(1, 100) g",
        );
        let ts_new_src = dir.subdir("ts-new-src");
        (dir, src, repo, ts_old_src, ts_new_src)
    })
    .await
    .unwrap();
    let src = Arc::new(src);

    let cfg_text = fs::read_to_string(&src.cfg).unwrap();
    let config = Config::parse(&cfg_text, &src.cfg.display().to_string()).unwrap();
    let storage: DynStorage = Arc::new(LocalStorage::new(repo.clone()));
    let ctx = Context::with_storage(config, src.cfg.clone(), storage);

    // The backup, paused before pg_tblspc while the tablespace and its table are created.
    let (paused, go) = pause_before_pg_tblspc(&src.cluster.datadir);
    let backup = tokio::spawn(async move { run_backup(&ctx).await });
    let new_oid = {
        let (src, ts_new_src) = (src.clone(), ts_new_src.clone());
        tokio::task::spawn_blocking(move || {
            paused
                .recv_timeout(Duration::from_secs(120))
                .expect("the backup never reached pg_tblspc");
            src.cluster.psql(&format!(
                "create tablespace ts_new location '{}'",
                ts_new_src.display()
            ));
            src.cluster.psql(
                "create table in_new (id int primary key, v text not null) tablespace ts_new; \
                 insert into in_new select g, md5(g::text) from generate_series(1, 1000) g",
            );
            go.send(()).unwrap();
            src.cluster
                .psql("select oid from pg_tablespace where spcname = 'ts_new'")
        })
        .await
        .unwrap()
    };
    let outcome = backup.await.unwrap();
    hook::clear();
    let outcome = outcome.expect("the backup completes");

    let mut src = Arc::into_inner(src).expect("the backup task is done with the source");
    let backup = Backup {
        label: outcome.label,
        repo,
        ts_old_src,
        ts_new_src,
        new_oid,
    };
    tokio::task::spawn_blocking(move || after_backup(&dir, &mut src, &backup))
        .await
        .unwrap();
}

/// The backup taken while the tablespace was created, and where things are.
struct Backup {
    label: String,
    repo: PathBuf,
    ts_old_src: PathBuf,
    ts_new_src: PathBuf,
    /// The oid of the tablespace created during the copy.
    new_oid: String,
}

fn after_backup(dir: &TestDir, src: &mut Source, b: &Backup) {
    let (repo, ts_old_src, ts_new_src) = (&b.repo, b.ts_old_src.as_path(), b.ts_new_src.as_path());
    let new_oid = b.new_oid.as_str();
    chown_tree_postgres(repo);
    // Changes after the backup, replayed by a restore to the end of the archive: on the
    // source's host these are what would be written into the source's tablespace.
    src.cluster
        .psql("insert into in_new select g, md5(g::text) from generate_series(1001, 1500) g");
    let expected = src.cluster.psql(IN_NEW_SQL);
    let old_oid = src
        .cluster
        .psql("select oid from pg_tablespace where spcname = 'ts_old'");
    switch_and_archive(&src.cluster);

    // The manifest marks the tablespace the backup did not see at its start.
    let m = fs::read(repo.join(layout::manifest_key(&b.label))).unwrap();
    let m = Manifest::from_bytes(&m).unwrap();
    let marks: Vec<(String, Option<&str>, &str, bool)> = (m.tablespaces.iter())
        .map(|t| {
            let (oid, name) = (t.oid.to_string(), t.name.as_deref());
            (oid, name, t.location.as_str(), t.created_during_backup)
        })
        .collect();
    let (ts_old_loc, ts_new_loc) = (ts_old_src.to_str().unwrap(), ts_new_src.to_str().unwrap());
    assert_eq!(
        marks,
        [
            (old_oid.clone(), Some("ts_old"), ts_old_loc, false),
            (new_oid.to_string(), Some("ts_new"), ts_new_loc, true),
        ]
    );

    let pgdata = dir.path().join("r");
    let ts_old_r: PathBuf = dir.path().join("ts-old-r");
    let ts_new_r: PathBuf = dir.path().join("ts-new-r");
    let map_old = format!("{old_oid}={}", ts_old_r.display());
    let map_new = format!("{new_oid}={}", ts_new_r.display());
    let pgdata_arg = pgdata.to_str().unwrap();
    let restore = |src: &Source, extra: &[&str]| {
        let mut args = vec![
            "restore",
            "--pgdata",
            pgdata_arg,
            "--tablespace-map",
            &map_old,
        ];
        args.extend_from_slice(extra);
        src.pgward(dir, &args)
    };
    let refused = |out: RunOutput, want: &[String]| {
        assert_eq!(out.code(), Some(1), "{}", out.describe());
        for w in want {
            assert!(
                out.stderr.contains(w.as_str()),
                "want {w:?}\n{}",
                out.describe()
            );
        }
        for untouched in [&pgdata, &ts_new_r, &ts_old_r] {
            assert!(
                !untouched.exists(),
                "a refused restore created {}",
                untouched.display()
            );
        }
    };
    let named = format!("tablespace {new_oid} (ts_new, {ts_new_loc})");

    // Mapped elsewhere: replay would link it back to the source's directory. Refused before
    // anything is written, naming the tablespace and what to do.
    refused(
        restore(src, &["--tablespace-map", &map_new]),
        &[
            format!("{named} cannot be restored to {}", ts_new_r.display()),
            format!("hint: leave out --tablespace-map {new_oid}=… and restore on a host where"),
        ],
    );
    // Not mapped, on the source's host: its location is the source's own tablespace. With
    // --delta too, which would otherwise clean it out.
    let link = src.cluster.datadir.join("pg_tblspc").join(new_oid);
    for extra in [&[][..], &["--delta"][..]] {
        refused(
            restore(src, extra),
            &[
                format!(
                    "{named} cannot be restored on this host: its location is the source \
                     cluster's own tablespace ({} links there)",
                    link.display()
                ),
                format!("hint: restore this backup on a host where {ts_new_loc} is free"),
            ],
        );
    }

    // Another host, where the location is free: the source stops (cleanly, everything
    // flushed) and its tablespace moves out of reach; from here on only the restored server
    // could change the source's tablespace files.
    src.cluster.stop();
    let ts_new_moved = dir.path().join("ts-new-src.moved");
    fs::rename(ts_new_src, &ts_new_moved).unwrap();
    let before_new = snapshot_tree(&ts_new_moved);
    let before_old = snapshot_tree(ts_old_src);
    let out = restore(src, &[]);
    assert!(out.status.success(), "{}", out.describe());
    assert_eq!(
        fs::read_link(pgdata.join("pg_tblspc").join(new_oid)).unwrap(),
        ts_new_src
    );
    let mut c = start_restored(dir, "r", pgdata.clone(), &no_archiving());
    assert_eq!(c.psql(IN_NEW_SQL), expected, "{}", c.log_tail(40));
    assert_eq!(c.psql("select count(*) from in_old"), "100");
    assert_eq!(
        c.psql(&format!("select pg_tablespace_location({new_oid})")),
        ts_new_loc
    );
    assert_eq!(
        c.psql(&format!("select pg_tablespace_location({old_oid})")),
        ts_old_r.to_str().unwrap()
    );
    c.psql("checkpoint");
    c.stop();
    assert!(
        snapshot_tree(&ts_new_moved) == before_new,
        "the source's new tablespace was modified"
    );
    assert!(
        snapshot_tree(ts_old_src) == before_old,
        "the source's old tablespace was modified"
    );
    common::verify::assert_repo_verifies(dir.path(), &src.cfg);
}
