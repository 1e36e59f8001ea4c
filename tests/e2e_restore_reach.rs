//! Restore refuses targets the archive shows it cannot reach, and forks it would silently
//! resolve the wrong way (issue 9, items 14 and 11), against real PostgreSQL 15.
//!
//! One source on timeline 1 takes a backup and writes marked batches. A copy restored to a
//! point in the middle is promoted and archives timeline 2 into the same repository, while the
//! source goes on writing on timeline 1 past the branch point. Then:
//! - a time target after the fork on timeline 1 is refused without `--target-timeline`,
//!   naming both choices; with `--target-timeline 1` it restores exactly timeline 1's rows
//!   before it (item 11); a restore without a target warns that timeline 1 goes on, and so
//!   does `info`;
//! - a time after the last archived commit, a future time, an xid never assigned and a restore
//!   point never created are refused before anything is written, naming the end of the archive
//!   (item 14).

mod common;

use common::backup_scenarios::{
    MARKER_SQL, Source, backup_label, no_archiving, restore, start_restored, switch_and_archive,
};
use common::pg::*;
use serde_json::Value;
use std::time::{Duration, Instant};

/// Pause on each side of a recorded time target, so commit timestamps are clearly apart.
const TIME_MARGIN: Duration = Duration::from_millis(1100);

fn step(what: &str, t: Instant) {
    eprintln!("[{:>6.1} s] {what}", t.elapsed().as_secs_f64());
}

/// `pgward restore --pgdata <dir>/<name> <args>` as postgres; the caller checks the outcome.
fn try_restore(src: &Source, dir: &TestDir, name: &str, args: &[&str]) -> RunOutput {
    let pgdata = dir.path().join(name);
    let pgdata = pgdata.to_string_lossy().into_owned();
    let mut all = vec!["restore", "--pgdata", pgdata.as_str()];
    all.extend_from_slice(args);
    src.pgward(dir, &all)
}

/// A refusal: exit 1, every word in the message, nothing written.
fn assert_refused(src: &Source, dir: &TestDir, name: &str, args: &[&str], words: &[&str]) {
    let started = Instant::now();
    let out = try_restore(src, dir, name, args);
    assert_eq!(
        out.code(),
        Some(1),
        "restore {args:?} must be refused\n{}",
        out.describe()
    );
    for w in words {
        assert!(
            out.stderr.contains(w),
            "restore {args:?}: {w:?} missing in the refusal\n{}",
            out.describe()
        );
    }
    assert!(
        !dir.path().join(name).exists(),
        "a refused restore wrote {name}"
    );
    let read = out
        .stderr
        .lines()
        .find(|l| l.contains("read archived WAL"))
        .unwrap_or("(no WAL read)");
    let error: Vec<&str> = out
        .stderr
        .lines()
        .skip_while(|l| !l.contains(" ERROR "))
        .collect();
    eprintln!(
        "  refused in {:.2} s: {args:?}\n    {read}\n    {}",
        started.elapsed().as_secs_f64(),
        error.join("\n    ")
    );
}

#[test]
fn unreachable_targets_and_forks_are_refused() {
    let t = Instant::now();
    let dir = TestDir::new("reach");
    let mut src = Source::start(&dir, "src", RepoSpec::Local(dir.path().join("repo")));
    src.batch("b0", 3);
    let backup = src.backup(&dir);
    src.batch("b1", 5);
    let fork_lsn = src.cluster.psql("select pg_current_wal_lsn()");
    let after_b1 = src.expected_marker();
    src.batch("b2", 5);
    src.switch_and_archive();
    step("source: backup, batches archived", t);

    // Timeline 2: a copy restored to the fork point, promoted, archiving into the same
    // repository (it keeps the source's archive_command).
    let pgdata = restore(
        &src,
        &dir,
        "tl2",
        &["--target-lsn", &fork_lsn, "--target-action", "promote"],
    );
    let mut tl2 = start_restored(&dir, "tl2", pgdata, &[]);
    assert_eq!(tl2.psql(MARKER_SQL), after_b1, "{}", tl2.log_tail(30));
    tl2.psql("insert into marker (id, batch) select g, 't2' from generate_series(100, 104) g");
    let last = switch_and_archive(&tl2);
    assert!(last.starts_with("00000002"), "{last}");
    tl2.stop();
    step("timeline 2 created and archived", t);

    // Timeline 1 goes on: four rows before the target, more after it.
    src.batch("b3", 4);
    let after_b3 = src.expected_marker();
    std::thread::sleep(TIME_MARGIN);
    let target = src.now();
    std::thread::sleep(TIME_MARGIN);
    src.batch("b4", 5);
    src.switch_and_archive();
    std::thread::sleep(TIME_MARGIN);
    let after_everything = src.now();
    let never_assigned = (src
        .cluster
        .psql("select txid_current()")
        .parse::<u64>()
        .unwrap()
        + 1000)
        .to_string();
    step("timeline 1 went on past the fork and is archived", t);

    // Item 11: the time target lies after the fork on timeline 1.
    assert_refused(
        &src,
        &dir,
        "r-ambiguous",
        &["--target-time", &target],
        &[
            "ambiguous",
            "timeline 2 branched off timeline 1",
            "--target-timeline 1",
            "--target-timeline 2",
        ],
    );
    let pgdata = restore(
        &src,
        &dir,
        "r-tl1",
        &["--target-time", &target, "--target-timeline", "1"],
    );
    let mut c = start_restored(&dir, "r-tl1", pgdata, &no_archiving());
    assert_eq!(
        c.psql(MARKER_SQL),
        after_b3,
        "--target-timeline 1 must give timeline 1's rows before the target\n{}",
        c.log_tail(30)
    );
    c.stop();
    step(
        "time after the fork: refused by default, right rows on timeline 1",
        t,
    );

    // Without a target, `latest` follows timeline 2: said loudly, with the way out. The same
    // with --backup.
    let label = backup_label(&backup);
    for args in [&["--dry-run"][..], &["--dry-run", "--backup", &label]] {
        let out = try_restore(&src, &dir, "r-plan", args);
        assert!(out.status.success(), "{}", out.describe());
        for stream in [&out.stdout, &out.stderr] {
            assert!(
                stream.contains("timeline 1 goes on after timeline 2 branched off it")
                    && stream.contains("use --target-timeline 1"),
                "{args:?}: the fork must be named on stdout and stderr\n{}",
                out.describe()
            );
        }
    }
    let info = src.pgward_ok(&dir, &["info", "--json"]);
    let info: Value = serde_json::from_str(&info.stdout).expect("info --json");
    let warnings = info["warnings"].as_array().expect("warnings").clone();
    assert!(
        warnings.iter().any(|w| w
            .as_str()
            .is_some_and(|w| w.contains("timeline 1 goes on after timeline 2")
                && w.contains("--target-timeline 1"))),
        "info must list the fork: {warnings:?}"
    );
    step("fork warnings in the plan and in info", t);

    // Item 14: targets past the end of the archive.
    assert_refused(
        &src,
        &dir,
        "r-late",
        &["--target-time", &after_everything, "--target-timeline", "1"],
        &[
            "not before the last commit in the archive",
            "the archive on timeline 1 ends at",
            "recovery ended before configured recovery target was reached",
            "pg_switch_wal()",
        ],
    );
    assert_refused(
        &src,
        &dir,
        "r-future",
        &[
            "--target-time",
            "2099-01-01 00:00:00+00",
            "--target-timeline",
            "1",
        ],
        &["not before the last commit in the archive (and in the future: it is now"],
    );
    assert_refused(
        &src,
        &dir,
        "r-xid",
        &["--target-xid", &never_assigned, "--target-timeline", "1"],
        &[&format!(
            "transaction {never_assigned} does not end in the archive"
        )],
    );
    assert_refused(
        &src,
        &dir,
        "r-name",
        &[
            "--target-name",
            "never-created",
            "--target-timeline",
            "1",
            "--dry-run",
        ],
        &["restore point 'never-created' is not in the WAL archived after backup"],
    );
    step("targets past the end of the archive refused", t);
    common::verify::assert_repo_verifies(dir.path(), &src.cfg);
}
