//! Restore drills end to end (issue 13) against real PostgreSQL 15, on a local and an S3
//! repository. Every drill starts from `common::drill::DrillSource`, a source configured as
//! production ones are (see that module for why each setting is there).
//!
//! The drills that pass (`latest`, `marker`, `time`, a dump drill) run on a local and an S3
//! repository and start with the fixture's own proof: the source really runs with the
//! production settings a drill must not inherit. The drills that must fail (a wrong target, a
//! failing SQL assertion, an impossible `max_rto`, a flipped block byte, a WAL hole, a corrupt
//! WAL object, a truncated dump) and a drill killed with SIGKILL run on a local repository.
//! After every drill, nothing of it may be left: no process naming the scratch directory, no
//! scratch directory.

mod common;

use common::backup_scenarios::switch_and_archive;
use common::drill::{Damage, DrillSource, PRODUCTION_SETTINGS, TABLESPACE_SQL, processes_naming};
use common::pg::{
    RepoSpec, RunOutput, TestDir, as_postgres, make_postgres_dir, reachable_binary, snapshot_tree,
};
use common::s3_server::with_s3_repo;
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BUCKET: &str = "pgward-drills";

async fn s3(tag: &'static str, body: fn(&TestDir, RepoSpec)) {
    with_s3_repo(BUCKET, tag, body).await;
}

fn local(tag: &str, body: fn(&TestDir, RepoSpec)) {
    let dir = TestDir::new(tag);
    let repo = RepoSpec::Local(dir.path().join("repo"));
    body(&dir, repo);
}

/// The source runs with every production setting, its tablespace lies outside PGDATA, and
/// `info --json` lists the fixture's backup and dump; the `wal/` listing is stable between two
/// reads and nothing of a drill exists yet. (A drill that passes on it passes despite all of
/// that, which is the point.)
fn assert_production_like(s: &DrillSource) {
    let t = Instant::now();
    for (name, want) in PRODUCTION_SETTINGS {
        assert_eq!(
            s.src.cluster.psql(&format!("show {name}")),
            want,
            "SHOW {name}"
        );
    }
    // The include_dir really is read: work_mem comes from conf.d, not postgresql.conf.
    let from = s
        .src
        .cluster
        .psql("select sourcefile from pg_settings where name = 'work_mem'");
    assert!(
        from.ends_with("/conf.d/10-memory.conf"),
        "work_mem set in {from}"
    );
    assert!(
        s.src
            .cluster
            .psql("show archive_command")
            .contains("wal-push"),
        "archive_command is pgward's"
    );

    let location = s
        .src
        .cluster
        .psql("select pg_tablespace_location(oid) from pg_tablespace where spcname = 'bb_archive'");
    assert_eq!(location, s.tablespace.to_string_lossy());
    assert!(!s.tablespace.starts_with(&s.src.cluster.datadir));
    assert_eq!(
        s.src
            .cluster
            .psql_db("bookedbarber", TABLESPACE_SQL)
            .split('/')
            .next(),
        Some("1000")
    );
    let counts = s.src.cluster.psql_db(
        "bookedbarber",
        "select (select count(*) from users) || '/' || (select count(*) from appointments)",
    );
    assert_eq!(counts, "408/2000");

    let info = s.info();
    let backups: Vec<&str> = info["backups"]
        .as_array()
        .expect("backups")
        .iter()
        .filter_map(|b| b["label"].as_str())
        .collect();
    assert_eq!(backups, [s.backup.as_str()], "{info:#}");
    let dump = &info["dumps"][0];
    assert_eq!(dump["label"], s.dump.as_str(), "{info:#}");
    let dbs: Vec<&str> = dump["databases"]
        .as_array()
        .expect("databases")
        .iter()
        .filter_map(|d| d["name"].as_str())
        .collect();
    assert!(dbs.contains(&"bookedbarber"), "{info:#}");
    assert_eq!(info["drills"], serde_json::json!([]), "{info:#}");

    let wal = s.wal_listing();
    assert!(
        wal.len() >= 3,
        "the archive holds the backup's WAL and more: {wal:?}"
    );
    assert_eq!(s.wal_listing(), wal);
    s.assert_nothing_left();
    eprintln!("[{:>5.1} s] fixture checked", t.elapsed().as_secs_f64());
}

// ---------------------------------------------------------------------------------------------
// The drill cases. Each test has its own source (they run in parallel); within one, drills
// run one after another, and after each nothing of it may be left.
// ---------------------------------------------------------------------------------------------

/// `drill --json` parsed: `{"passed": bool, "drills": [report, ...]}`.
fn drill_json(out: &RunOutput) -> Value {
    serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("drill --json is not JSON ({e}):\n{}", out.describe()))
}

/// Runs `drill <names> --json`; asserts the exit status matches `passed`; returns the reports.
fn run_drills(s: &DrillSource, names: &[&str], passed: bool) -> Vec<Value> {
    let mut args: Vec<&str> = names.to_vec();
    args.push("--json");
    let out = s.drill(&args);
    let v = drill_json(&out);
    assert_eq!(
        (out.status.success(), v["passed"].as_bool()),
        (passed, Some(passed)),
        "drill {names:?}: expected passed = {passed}\n{}",
        out.describe()
    );
    s.assert_nothing_left();
    let reports = v["drills"].as_array().expect("drills array").clone();
    assert_eq!(reports.len(), names.len(), "{v:#}");
    reports
}

fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"].as_str().is_some_and(|n| n.starts_with(name)))
        .unwrap_or_else(|| panic!("no check {name} in {report:#}"))
}

fn status<'a>(report: &'a Value, name: &str) -> &'a str {
    check(report, name)["status"].as_str().unwrap()
}

fn phases(report: &Value) -> Vec<String> {
    report["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect()
}

fn failure_reason(report: &Value) -> String {
    report["failure"]["reason"]
        .as_str()
        .unwrap_or_else(|| panic!("no failure in {report:#}"))
        .to_string()
}

const LATEST: &str = r#"
target = "latest"
max_rto = "10m"
max_rpo = "1h"
[checks]
amcheck = true
read_all = true
checksums = true
[[checks.sql]]
database = "bookedbarber"
query = "select count(*) from appointments"
expect = "= 2000"
[[checks.sql]]
database = "bookedbarber"
query = "select count(*) from appointment_archive"
expect = ">= 1000"
[[checks.rows]]
database = "bookedbarber"
table = "appointments"
"#;

/// `latest`, `marker`, `time` and a dump drill pass on the production-like source; the
/// `wal/` listing is the same after a drill as before; `info` shows the last drills.
fn drills_that_pass(dir: &TestDir, repo: RepoSpec) {
    let s = DrillSource::start(dir, repo);
    assert_production_like(&s);
    s.write_drill("latest", LATEST);
    let before = s.wal_listing();
    let r = run_drills(&s, &["latest"], true).remove(0);
    assert_eq!(
        s.wal_listing(),
        before,
        "a drill changed the repository's wal/ (its scratch server archived?)"
    );
    assert_eq!(r["verdict"], "passed", "{r:#}");
    assert_eq!(r["backup"], s.backup.as_str(), "{r:#}");
    for c in [
        "amcheck",
        "read_all",
        "checksums",
        "sql: select count(*) from appointments",
        "sql: select count(*) from appointment_archive",
        "rows: bookedbarber.appointments",
        "max_rto",
        "max_rpo",
    ] {
        assert_eq!(status(&r, c), "ok", "{c}: {r:#}");
    }
    let p = phases(&r);
    for want in ["preflight", "restore", "recovery", "checks", "cleanup"] {
        assert!(p.contains(&want.to_string()), "{p:?}");
    }
    assert!(r["rto_seconds"].as_f64().unwrap() > 0.0, "{r:#}");
    assert!(r["rpo_seconds"].as_f64().unwrap() > 0.0, "{r:#}");
    assert!(r["target"]["archive_end_segment"].is_string(), "{r:#}");
    assert!(
        r["notes"].to_string().contains("include_dir"),
        "the include is named: {r:#}"
    );

    // marker: A present, B absent, paused exactly at the restore point.
    s.write_drill(
        "marker",
        "target = \"marker\"\ndatabase = \"bookedbarber\"\n[checks]\namcheck = false\nchecksums = false\n",
    );
    let r = run_drills(&s, &["marker"], true).remove(0);
    let m = &r["markers"];
    assert_eq!(
        (&m["a_present"], &m["b_present"]),
        (&Value::Bool(true), &Value::Bool(false)),
        "{r:#}"
    );
    assert_eq!(m["restore_point_lsn"], r["reached"]["lsn"], "{r:#}");
    let label = r["label"].as_str().unwrap();
    assert_eq!(
        s.src.cluster.psql_db(
            "bookedbarber",
            &format!("select string_agg(marker, ',' order by marker) from pgward_drill where label = '{label}'")
        ),
        "A,B",
        "both markers are committed on the source"
    );

    // time: commits before and after the target; only the one before is restored.
    s.src.cluster.psql_db(
        "bookedbarber",
        "insert into users (name, email, role) values ('Before', 'before@example.com', 'client')",
    );
    std::thread::sleep(Duration::from_millis(1100));
    let at = s
        .src
        .cluster
        .psql("select to_char(now() at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')");
    std::thread::sleep(Duration::from_millis(1100));
    s.src.cluster.psql_db(
        "bookedbarber",
        "insert into users (name, email, role) values ('After', 'after@example.com', 'client')",
    );
    switch_and_archive(&s.src.cluster);
    s.write_drill(
        "time",
        &format!(
            "target = {{ time = \"{at}\" }}\n[checks]\namcheck = false\n\
             [[checks.sql]]\ndatabase = \"bookedbarber\"\nquery = \"select count(*) from users where name = 'Before'\"\nexpect = \"= 1\"\n\
             [[checks.sql]]\ndatabase = \"bookedbarber\"\nquery = \"select count(*) from users where name = 'After'\"\nexpect = \"= 0\"\n"
        ),
    );
    // A dump drill in the same run (`drill NAME NAME`).
    s.write_drill(
        "dump",
        "from = \"dump\"\ndatabases = [\"bookedbarber\"]\n[checks]\namcheck = true\n\
         [[checks.sql]]\ndatabase = \"bookedbarber\"\nquery = \"select count(*) from appointments\"\nexpect = \"= 2000\"\n\
         [[checks.rows]]\ndatabase = \"bookedbarber\"\ntable = \"users\"\ntolerance = \"5%\"\n",
    );
    let reports = run_drills(&s, &["time", "dump"], true);
    let (t, d) = (&reports[0], &reports[1]);
    assert_eq!(t["target"]["kind"], "time", "{t:#}");
    let time =
        |v: &str| chrono::DateTime::parse_from_rfc3339(v).unwrap_or_else(|e| panic!("{v}: {e}"));
    let last_commit = t["reached"]["last_commit"].as_str().unwrap();
    assert!(
        time(last_commit) < time(&at),
        "recovered a commit at {last_commit}, after {at}: {t:#}"
    );
    assert_eq!(d["from"], "dump", "{d:#}");
    assert_eq!(d["backup"], s.dump.as_str(), "{d:#}");
    assert_eq!(
        status(d, "checksums"),
        "skipped",
        "a dump drill cannot check page checksums: {d:#}"
    );
    assert_eq!(status(d, "amcheck"), "ok", "{d:#}");
    assert_eq!(status(d, "rows: bookedbarber.users"), "ok", "{d:#}");

    // info shows the newest report of each drill.
    let info = s.info();
    let drills = info["drills"].as_array().expect("info --json has drills");
    for name in ["latest", "marker", "time", "dump"] {
        let d = drills
            .iter()
            .find(|d| d["name"] == name)
            .unwrap_or_else(|| panic!("{name} not in {drills:#?}"));
        assert_eq!(d["verdict"], "passed", "{d:#}");
    }
    common::verify::assert_repo_verifies(&s.root, s.cfg());
}

#[test]
fn drills_that_pass_local() {
    local("drill-pass", drills_that_pass);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drills_that_pass_s3() {
    s3("drill-pass-s3", drills_that_pass).await;
}

/// Runs `f` with `key` damaged, then puts the object back as it was: each damage case
/// starts from an intact repository.
fn with_damage<T>(s: &DrillSource, key: &str, damage: Damage, f: impl FnOnce() -> T) -> T {
    let k = key.to_string();
    let original = s.with_repo(|st| async move {
        st.get(&k)
            .await
            .unwrap_or_else(|e| panic!("cannot read {k}: {e:#}"))
    });
    s.damage(key, damage);
    let out = f();
    let k = key.to_string();
    s.with_repo(|st| async move {
        st.put(&k, original)
            .await
            .unwrap_or_else(|e| panic!("cannot repair {k}: {e:#}"))
    });
    out
}

/// `drill <name> --json`; must fail; returns its report.
fn failing_drill(s: &DrillSource, name: &str) -> Value {
    let out = s.drill(&[name, "--json"]);
    let v = drill_json(&out);
    assert!(
        !out.status.success(),
        "drill {name} must fail\n{}",
        out.describe()
    );
    assert_eq!(v["passed"], false, "{v:#}");
    s.assert_nothing_left();
    let r = v["drills"][0].clone();
    assert_eq!(r["verdict"], "failed", "{r:#}");
    r
}

/// Drills that must fail, each naming its cause, each leaving nothing running or on disk.
#[test]
fn drills_that_must_fail_local() {
    let dir = TestDir::new("drill-fail");
    let s = DrillSource::start(&dir, RepoSpec::Local(dir.path().join("repo")));
    // Three more segments after the backup: the middle ones can go missing or be damaged.
    let segments = s.commit_and_archive(3);

    // A wrong target: restore points with the very name the next marker drill will use,
    // created before its marker A (PostgreSQL stops at the first restore point of a name).
    // Recovery stops there: A is absent, and the drill must say so instead of passing.
    s.write_drill("decoy", "target = \"marker\"\ndatabase = \"bookedbarber\"\n[checks]\namcheck = false\nchecksums = false\n");
    let now = chrono::Utc::now();
    for ahead in 0..30 {
        let label =
            pgward::drill::report::label_for(now + chrono::Duration::seconds(ahead), "decoy");
        s.src.cluster.psql(&format!(
            "select pg_create_restore_point('pgward-drill-{label}')"
        ));
    }
    s.commit_and_archive(1);
    let r = failing_drill(&s, "decoy");
    let reason = failure_reason(&r);
    assert!(reason.contains("marker A"), "{reason}");
    assert_eq!(r["markers"]["a_present"], false, "{r:#}");
    assert_eq!(r["failure"]["phase"], "recovery", "{r:#}");

    // A failing SQL assertion and an impossible max_rto, in one drill: both checks fail.
    s.write_drill(
        "strict",
        "target = \"latest\"\nmax_rto = \"1ms\"\n[checks]\namcheck = false\nchecksums = false\n\
         [[checks.sql]]\ndatabase = \"bookedbarber\"\nquery = \"select count(*) from appointments\"\nexpect = \"= 12345\"\n",
    );
    let r = failing_drill(&s, "strict");
    assert_eq!(status(&r, "sql:"), "failed", "{r:#}");
    let detail = check(&r, "sql:")["detail"].as_str().unwrap().to_string();
    // 2000 from the fixture, plus one booking per segment archived since.
    assert!(
        detail.contains("12345") && detail.contains("got `2004`"),
        "{detail}"
    );
    assert_eq!(status(&r, "max_rto"), "failed", "{r:#}");
    assert!(
        check(&r, "max_rto")["detail"]
            .as_str()
            .unwrap()
            .contains("above the limit"),
        "{r:#}"
    );
    assert_eq!(r["failure"]["phase"], "checks", "{r:#}");

    s.write_drill(
        "plain",
        "target = \"latest\"\n[checks]\namcheck = false\nchecksums = false\n",
    );
    // A flipped byte in a stored block: the restore refuses it before PostgreSQL starts.
    let blocks = s.listing("blocks/");
    let biggest = blocks
        .iter()
        .max_by_key(|l| l.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap())
        .unwrap();
    let block = biggest.rsplit_once(' ').unwrap().0;
    let r = with_damage(&s, block, Damage::FlipByte { at: 200 }, || {
        failing_drill(&s, "plain")
    });
    assert_eq!(r["failure"]["phase"], "restore", "{r:#}");
    assert!(
        !phases(&r).contains(&"recovery".to_string()),
        "PostgreSQL never started: {r:#}"
    );
    assert!(r["failure"]["server_log_tail"].is_null(), "{r:#}");

    // A missing WAL segment between the backup and the end: preflight names the hole.
    let missing = &segments[1];
    let r = with_damage(&s, &s.wal_key(missing), Damage::Delete, || {
        failing_drill(&s, "plain")
    });
    assert_eq!(r["failure"]["phase"], "preflight", "{r:#}");
    let reason = failure_reason(&r);
    assert!(
        reason.contains(missing.as_str()),
        "the hole is named: {reason}"
    );
    assert!(
        !phases(&r).contains(&"restore".to_string()),
        "nothing fetched: {r:#}"
    );

    // A corrupt WAL object in the middle: recovery stops, and `latest` never passes with less.
    let r = with_damage(
        &s,
        &s.wal_key(&segments[1]),
        Damage::FlipByte { at: 200 },
        || failing_drill(&s, "plain"),
    );
    assert_eq!(r["failure"]["phase"], "recovery", "{r:#}");

    // A truncated dump object: the dump drill fails in its restore.
    let dump_object = s
        .keys(&format!("dumps/{}/", s.dump))
        .into_iter()
        .find(|k| k.contains("bookedbarber"))
        .expect("the dump of bookedbarber");
    s.write_drill("dump", "from = \"dump\"\n[checks]\namcheck = false\n");
    let r = with_damage(&s, &dump_object, Damage::Truncate { to: 1000 }, || {
        failing_drill(&s, "dump")
    });
    assert_eq!(r["failure"]["phase"], "restore", "{r:#}");
    assert!(failure_reason(&r).contains("bookedbarber"), "{r:#}");
    // Every damage was repaired: the same drills pass again.
    run_drills(&s, &["plain", "dump"], true);

    // Last (it stays in the WAL): a tablespace created after the backup. Its CREATE TABLESPACE,
    // replayed, would empty the source's live tablespace directory and take it over; the
    // drill refuses before restoring anything, and the source's directory is as it was.
    let late = s.root.join("ts-late");
    make_postgres_dir(&late);
    s.src.cluster.psql(&format!(
        "create tablespace late location '{}'",
        late.display()
    ));
    s.src.cluster.psql_db(
        "bookedbarber",
        "create table late_rows (id int) tablespace late; insert into late_rows select generate_series(1, 100)",
    );
    s.commit_and_archive(1);
    let before = snapshot_tree(&late);
    assert!(!before.is_empty());
    let r = failing_drill(&s, "plain");
    assert_eq!(r["failure"]["phase"], "preflight", "{r:#}");
    assert!(failure_reason(&r).contains("created after backup"), "{r:#}");
    assert_eq!(
        snapshot_tree(&late),
        before,
        "the source's tablespace was touched"
    );
    assert_eq!(
        s.src
            .cluster
            .psql_db("bookedbarber", "select count(*) from late_rows"),
        "100"
    );
}

/// `pgward drill <name>` started in the background as postgres; returns once the copy's
/// postmaster runs (its pid file says it is up; `pg_ctl`, whose command line names the
/// directory too, is not enough).
fn start_drill_until_postmaster(s: &DrillSource, name: &str) -> std::process::Child {
    let mut cmd = Command::new(reachable_binary());
    cmd.args(["--config", s.cfg().to_str().unwrap(), "drill", name])
        .current_dir(&s.root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    as_postgres(&mut cmd);
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let postmaster_up = || {
        let pid_file = fs::read_dir(&s.scratch)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.path().join("data/postmaster.pid").exists());
        pid_file
            && processes_naming(&s.scratch)
                .iter()
                .any(|p| p.contains("bin/postgres -D"))
    };
    while !postmaster_up() {
        assert!(
            Instant::now() < deadline,
            "the drill's server never started"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the drill ended before its server ran"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

/// The drill's `timeout` and Ctrl-C end a drill blocked on its server (a query that would
/// take a minute) within seconds, and leave nothing; a drill killed with SIGKILL while its
/// server runs leaves the server and the directory, and the next drill run reaps both.
#[test]
fn drills_end_on_timeout_ctrl_c_and_a_killed_one_is_reaped_local() {
    let dir = TestDir::new("drill-kill");
    let s = DrillSource::start(&dir, RepoSpec::Local(dir.path().join("repo")));
    let slow = "target = \"latest\"\n[checks]\namcheck = false\nchecksums = false\n\
                [[checks.sql]]\nquery = \"select 1 from pg_sleep(60)\"\nexpect = \"= 1\"\n";
    s.write_drill("slow", slow);
    s.write_drill("slow-timeout", &format!("timeout = \"8s\"\n{slow}"));

    let started = Instant::now();
    let r = failing_drill(&s, "slow-timeout");
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "the timeout did not end the drill: {:?}",
        started.elapsed()
    );
    assert!(failure_reason(&r).contains("timeout of 8s"), "{r:#}");

    let mut child = start_drill_until_postmaster(&s, "slow");
    let interrupted = Instant::now();
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "an interrupted drill does not pass");
    assert!(
        interrupted.elapsed() < Duration::from_secs(30),
        "Ctrl-C did not end the drill: {:?}",
        interrupted.elapsed()
    );
    s.assert_nothing_left();
    let (latest, _) = (s.info(), ());
    let interrupted_report = latest["drills"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "slow")
        .cloned()
        .expect("the interrupted drill's report is stored");
    assert_eq!(
        interrupted_report["verdict"], "failed",
        "{interrupted_report:#}"
    );
    assert!(
        interrupted_report.to_string().contains("interrupted"),
        "{interrupted_report:#}"
    );

    let mut child = start_drill_until_postmaster(&s, "slow");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        processes_naming(&s.scratch)
            .iter()
            .any(|p| p.contains("bin/postgres -D")),
        "the killed drill's server must still run (that is what the reaper is for)"
    );
    s.write_drill(
        "quick",
        "target = \"immediate\"\n[checks]\namcheck = false\nchecksums = false\n",
    );
    let r = run_drills(&s, &["quick"], true).remove(0);
    assert!(
        r["notes"].to_string().contains("killed"),
        "the reaping is reported: {r:#}"
    );

    // --keep leaves the stopped copy where the report says, and no server running in it.
    let out = s.drill(&["quick", "--keep", "--json"]);
    assert!(out.status.success(), "{}", out.describe());
    let r = drill_json(&out)["drills"][0].clone();
    let kept = PathBuf::from(r["kept"].as_str().unwrap_or_else(|| panic!("{r:#}")));
    assert!(kept.starts_with(&s.scratch), "{r:#}");
    assert!(
        kept.join("data/PG_VERSION").is_file(),
        "the copy is kept: {r:#}"
    );
    assert!(
        !kept.join("data/postmaster.pid").exists()
            && !processes_naming(&s.scratch)
                .iter()
                .any(|p| p.contains("bin/postgres -D")),
        "a kept copy is stopped"
    );
    // A later drill's reaper leaves a kept copy alone.
    run_drills_keeping(&s, "quick", &kept);
    fs::remove_dir_all(&kept).unwrap();
    s.assert_nothing_left();
}

/// Runs `drill <name>` while a kept copy is in the scratch directory: it passes and the kept
/// copy stays.
fn run_drills_keeping(s: &DrillSource, name: &str, kept: &Path) {
    let out = s.drill(&[name, "--json"]);
    assert!(out.status.success(), "{}", out.describe());
    assert!(
        kept.join("data/PG_VERSION").is_file(),
        "the reaper removed a kept copy"
    );
}
