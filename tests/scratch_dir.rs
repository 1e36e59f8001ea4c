//! `pgward::pg::scratch::dir` against a real PostgreSQL 15: a drill's scratch directory does not
//! outlive its owner's handle, with its server stopped first (checked by PID and start time);
//! what a killed owner left is reaped by the next run, and nothing else is — not a kept
//! directory, not a live owner's. And `Running::wait_recovery_paused`: a copy recovering to a
//! restore point pauses there; one whose target is never reached fails with PostgreSQL's FATAL.

#[path = "common/pg.rs"]
mod pg;

use pg::{InitOpts, PgCluster, TestDir, pg_bins};
use pgward::pg::conf;
use pgward::pg::scratch::dir::{ReapOutcome, Reaped, reap};
use pgward::pg::scratch::postmaster::Postmaster;
use pgward::pg::scratch::{Initdb, Running, ScratchDir, ScratchSpec};
use std::path::Path;
use std::time::Duration;

fn scratch_dir(parent: &Path, name: &str) -> ScratchDir {
    ScratchDir::create(parent, name, pg_bins().run_as()).unwrap()
}

fn spec_in(dir: &ScratchDir) -> ScratchSpec {
    let mut spec = ScratchSpec::new(pg_bins().clone(), &dir.data_dir(), &dir.socket_dir()).unwrap();
    spec.log_file = dir.log_file();
    spec
}

/// initdb in `dir` and start; the marker records the postmaster.
fn start_in(dir: &ScratchDir) -> Running {
    let running = spec_in(dir)
        .initdb(&Initdb::default())
        .unwrap()
        .start()
        .unwrap();
    dir.record_postmaster(&running.postmaster()).unwrap();
    running
}

fn marker(root: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(root.join("pgward-scratch.json")).unwrap()).unwrap()
}

/// Makes the marker name `owner` as the directory's owner (a fake owner process).
fn set_owner(root: &Path, owner: &Postmaster) {
    let mut m = marker(root);
    m["owner"]["pid"] = owner.pid().into();
    m["owner"]["start_ticks"] = owner.start_ticks().into();
    std::fs::write(root.join("pgward-scratch.json"), m.to_string()).unwrap();
}

#[test]
fn dropping_the_dir_stops_its_server_and_removes_it() {
    let t = TestDir::new("sd-drop");
    let dir = scratch_dir(&t.path().join("drills"), "d1");
    let root = dir.root().to_path_buf();
    let running = start_in(&dir);
    let pm = running.postmaster();
    assert_eq!(running.value("select 1").unwrap(), "1");
    assert_eq!(marker(&root)["postmaster"]["pid"], pm.pid());
    assert!(dir.log_file().is_file());
    // The guard is lost (as when the drill's guard is leaked or outlived): the directory's
    // drop must still stop the server before removing anything.
    std::mem::forget(running);
    assert!(pm.is_alive());
    drop(dir);
    assert!(!pm.is_alive(), "postmaster {} survived", pm.pid());
    assert!(!root.exists(), "{} is still there", root.display());
}

#[test]
fn reap_stops_a_gone_owners_server_and_leaves_live_and_kept_dirs() {
    let t = TestDir::new("sd-reap");
    let parent = t.path().join("drills");
    let mut owner = std::process::Command::new("sleep")
        .arg("300")
        .spawn()
        .unwrap();
    let fake = Postmaster::find(owner.id()).unwrap();

    // An owner that will be killed, with a running server.
    let orphan = scratch_dir(&parent, "orphan");
    let orphan_root = orphan.root().to_path_buf();
    let running = start_in(&orphan);
    let pm = running.postmaster();
    set_owner(&orphan_root, &fake);
    std::mem::forget(running);
    std::mem::forget(orphan);

    // A kept directory whose owner is gone too.
    let kept = scratch_dir(&parent, "kept");
    spec_in(&kept).initdb(&Initdb::default()).unwrap();
    let kept_root = kept.keep();
    set_owner(&kept_root, &fake);

    // A live owner (this process) with a server that has not been recorded yet.
    let mine = scratch_dir(&parent, "mine");
    let mine_running = spec_in(&mine)
        .initdb(&Initdb::default())
        .unwrap()
        .start()
        .unwrap();

    assert_eq!(reap(&parent).unwrap(), vec![], "the fake owner still runs");
    assert!(pm.is_alive() && orphan_root.exists());

    owner.kill().unwrap();
    owner.wait().unwrap();
    let got = reap(&parent).unwrap();
    assert_eq!(
        got,
        vec![Reaped {
            dir: orphan_root.clone(),
            outcome: ReapOutcome::Removed {
                stopped: vec![pm.pid()]
            }
        }]
    );
    assert!(!pm.is_alive(), "postmaster {} survived the reap", pm.pid());
    assert!(!orphan_root.exists());
    assert!(kept_root.join("data/PG_VERSION").is_file());
    assert!(
        mine_running.value("select 1").is_ok(),
        "a live owner's server was touched"
    );
    assert!(mine.root().exists());
    drop(mine_running);
    drop(mine);
    std::fs::remove_dir_all(&kept_root).unwrap();
}

#[test]
fn reap_stops_a_postmaster_the_marker_does_not_name_yet() {
    let t = TestDir::new("sd-unrec");
    let parent = t.path().join("drills");
    let dir = scratch_dir(&parent, "early");
    let root = dir.root().to_path_buf();
    let running = spec_in(&dir)
        .initdb(&Initdb::default())
        .unwrap()
        .start()
        .unwrap();
    let pm = running.postmaster();
    assert!(marker(&root)["postmaster"].is_null());
    // Killed between the start and recording the postmaster: the owner is a process that is
    // gone (this PID with another start time).
    let me = Postmaster::find(std::process::id()).unwrap();
    set_owner(
        &root,
        &Postmaster::from_parts(me.pid(), me.start_ticks() + 1),
    );
    std::mem::forget(running);
    std::mem::forget(dir);
    let got = reap(&parent).unwrap();
    assert_eq!(
        got[0].outcome,
        ReapOutcome::Removed {
            stopped: vec![pm.pid()]
        }
    );
    assert!(!pm.is_alive() && !root.exists());
}

/// A source archiving into `<t>/archive`, with one table.
fn archiving_source(t: &TestDir) -> (PgCluster, std::path::PathBuf) {
    let archive = t.subdir("archive");
    let mut src = PgCluster::init(
        t,
        "src",
        InitOpts {
            extra_conf: vec![
                "archive_mode = on".to_string(),
                conf::setting_line(
                    "archive_command",
                    &format!("cp %p {}/%f", archive.display()),
                ),
            ],
            ..InitOpts::default()
        },
    );
    src.start();
    src.psql("create table m (v text); insert into m values ('before')");
    (src, archive)
}

fn switch_and_archive(src: &PgCluster) {
    let last = src.psql("select pg_walfile_name(pg_switch_wal())");
    src.wait_until(
        "select last_archived_wal from pg_stat_archiver",
        &last,
        Duration::from_secs(60),
    );
}

/// A copy of `src` (pg_basebackup -X stream) set to recover from the archive to restore point
/// `target` and pause there.
fn copy_to_restore_point(
    src: &PgCluster,
    archive: &Path,
    parent: &Path,
    name: &str,
    target: &str,
) -> (ScratchDir, pgward::pg::scratch::ScratchCluster) {
    let dir = scratch_dir(parent, name);
    src.pg_basebackup(&dir.data_dir(), &["-X", "stream"]);
    let spec = spec_in(&dir)
        .setting("archive_mode", "off")
        .setting("restore_command", format!("cp {}/%f %p", archive.display()))
        .setting("recovery_target_name", target)
        .setting("recovery_target_action", "pause");
    let cluster = spec.adopt().unwrap();
    let signal = dir.data_dir().join("recovery.signal");
    std::fs::write(&signal, b"").unwrap();
    pg::chown_postgres(&signal);
    (dir, cluster)
}

#[test]
fn recovery_pauses_at_a_restore_point_and_an_unknown_one_fails() {
    let t = TestDir::new("sd-pause");
    let (src, archive) = archiving_source(&t);
    let parent = t.path().join("drills");
    let (good_dir, good) = copy_to_restore_point(&src, &archive, &parent, "good", "rp1");
    let (bad_dir, bad) = copy_to_restore_point(&src, &archive, &parent, "bad", "no-such-point");
    src.psql("select pg_create_restore_point('rp1')");
    src.psql("insert into m values ('after')");
    switch_and_archive(&src);

    let running = good.start().unwrap();
    running
        .wait_recovery_paused(Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(
        running.psql("select string_agg(v, ',') from m").unwrap(),
        "before"
    );
    assert_eq!(running.value("select pg_is_in_recovery()").unwrap(), "t");
    running.promote(Duration::from_secs(60)).unwrap();
    drop(running);
    drop(good);
    drop(good_dir);

    // The archive runs out quickly: the FATAL comes either before `pg_ctl start -w` returns
    // (the start fails with this start's log) or while waiting for the pause.
    let err = match bad.start() {
        Err(e) => format!("{e:#}"),
        Ok(running) => format!(
            "{:#}",
            running
                .wait_recovery_paused(Duration::from_secs(60))
                .expect_err("the target is never reached")
        ),
    };
    assert!(
        err.contains("recovery ended before configured recovery target was reached")
            && err.contains("--- last"),
        "{err}"
    );
    assert_eq!(bad.postmaster(), None);
    drop(bad);
    drop(bad_dir);
    assert!(!parent.join("good").exists() && !parent.join("bad").exists());
}

#[test]
fn a_copy_without_a_target_is_told_apart_from_a_paused_one() {
    let t = TestDir::new("sd-notgt");
    let dir = scratch_dir(&t.path().join("drills"), "plain");
    let running = start_in(&dir);
    let err = format!(
        "{:#}",
        running
            .wait_recovery_paused(Duration::from_secs(10))
            .unwrap_err()
    );
    assert!(err.contains("ended instead of pausing"), "{err}");
}
