//! `pgward status` end to end (issue 15, item 1): the verdict and its Nagios exit status
//! (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN) from a real repository in each state, driven
//! through the binary as PostgreSQL's user.
//!
//! One PostgreSQL 15 source archives into a local repository and has one base backup with
//! WAL after it. Each state is a configuration over it (or over a copy of its repository):
//! - OK: that repository, no agent state;
//! - WARNING: an agent state file whose hourly backup job last succeeded days ago;
//! - CRITICAL: a copy with a WAL segment after the newest backup deleted (a hole), and a copy
//!   with a failed drill report;
//! - UNKNOWN: a repository directory that does not exist, and an S3 endpoint nobody listens on.
//!
//! `--json` parses and holds the same verdict; without `--nagios` a CRITICAL exits 1.

mod common;

use common::backup_scenarios::Source;
use common::pg::{RepoSpec, RunOutput, TestDir, free_port, pgward_timeout, toml_str};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const STATUS_TIMEOUT: Duration = Duration::from_secs(60);

fn status(dir: &TestDir, cfg: &Path, args: &[&str]) -> RunOutput {
    let mut all = vec!["--config", cfg.to_str().unwrap(), "status"];
    all.extend_from_slice(args);
    pgward_timeout(dir.path(), &all, STATUS_TIMEOUT)
}

/// `status --nagios`: (exit code, the one line).
fn nagios(dir: &TestDir, cfg: &Path) -> (i32, String) {
    let out = status(dir, cfg, &["--nagios"]);
    let code = out.status.code().unwrap_or(-1);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one line\n{}", out.describe());
    (code, lines[0].to_string())
}

fn json(dir: &TestDir, cfg: &Path) -> Value {
    let out = status(dir, cfg, &["--json"]);
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("status --json is not JSON ({e}):\n{}", out.describe()))
}

/// A configuration: `top` (top-level keys) + the source's configuration with its repository
/// path replaced by `repo` + `tail` (sections).
fn config(dir: &TestDir, name: &str, base: &Base, repo: &str, top: &str, tail: &str) -> PathBuf {
    let text = base.text.replace(&base.repo_url, repo);
    dir.write_file(name, format!("{top}\n{text}\n{tail}\n"))
}

struct Base {
    text: String,
    repo_url: String,
}

/// The LSN just before segment `name` (16 MiB segments): `0/6FFFFFF` for `...07`.
fn last_byte_before(name: &str) -> String {
    let log = u64::from_str_radix(&name[8..16], 16).unwrap();
    let seg = u64::from_str_radix(&name[16..24], 16).unwrap();
    let lsn = (log * 0x100 + seg) * (16 << 20) - 1;
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

fn copy_tree(from: &Path, to: &Path) {
    let out = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .output()
        .unwrap();
    assert!(out.status.success(), "cp -a: {out:?}");
}

#[test]
fn status_nagios_exit_codes_from_a_real_repository_in_each_state() {
    let dir = TestDir::new("status");
    let repo = dir.path().join("repo");
    let src = Source::start(&dir, "src", RepoSpec::Local(repo.clone()));
    src.backup(&dir);
    for i in 0..3 {
        src.cluster.psql(&format!(
            "create table if not exists t (x int); insert into t values ({i})"
        ));
        src.switch_and_archive();
    }
    let base = Base {
        text: std::fs::read_to_string(&src.cfg).unwrap(),
        repo_url: format!("file://{}", repo.display()),
    };
    assert!(base.text.contains(&base.repo_url), "{}", base.text);
    let no_agent = format!(
        "[agent]\nstate_dir = {}",
        toml_str(&dir.path().join("no-agent").to_string_lossy())
    );

    // OK: a backup, continuous WAL after it, the archiver fine, no agent state.
    let ok = config(&dir, "ok.toml", &base, &base.repo_url, "", &no_agent);
    let (code, line) = nagios(&dir, &ok);
    assert_eq!(code, 0, "{line}");
    assert!(line.starts_with("PGWARD OK - newest backup "), "{line}");
    assert!(
        line.contains(" | rpo=") && line.contains("backup_age="),
        "{line}"
    );
    let v = json(&dir, &ok);
    assert_eq!(v["format"], 1, "{v:#}");
    assert_eq!(v["verdict"]["level"], "OK", "{v:#}");
    assert_eq!(v["verdict"]["reasons"], serde_json::json!([]), "{v:#}");
    assert_eq!(v["repo"]["backups"].as_array().unwrap().len(), 1, "{v:#}");
    assert_eq!(v["server"]["archiver"]["failed_count"], 0, "{v:#}");
    let text = status(&dir, &ok, &[]);
    assert_eq!(text.status.code(), Some(0), "{}", text.describe());
    for part in [
        "PGWARD OK",
        "Recoverable window",
        "timeline 1: from ",
        "Last runs",
    ] {
        assert!(text.stdout.contains(part), "{part}\n{}", text.stdout);
    }

    // WARNING: the agent's hourly backup job last succeeded three days ago.
    let state = dir.subdir("agent-state");
    let days_ago = (chrono::Utc::now() - chrono::Duration::days(3))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    dir.write_file(
        "agent-state/jobs.json",
        format!(
            "{{\"format\":1,\"jobs\":{{\"backup\":{{\"last_start\":\"{days_ago}\",\
             \"last_success\":\"{days_ago}\",\"last_duration_seconds\":12.5,\
             \"runs_success\":40}}}}}}"
        ),
    );
    let policy = dir.write_file(
        "hourly.toml",
        "timezone = \"UTC\"\n[[job]]\nkind = \"backup\"\nschedule = \"0 * * * *\"\n",
    );
    let warn = config(
        &dir,
        "warn.toml",
        &base,
        &base.repo_url,
        &format!("policy = {}", toml_str(&policy.to_string_lossy())),
        &format!(
            "[agent]\nstate_dir = {}",
            toml_str(&state.to_string_lossy())
        ),
    );
    let (code, line) = nagios(&dir, &warn);
    assert_eq!(code, 1, "{line}");
    assert!(
        line.starts_with(&format!(
            "PGWARD WARNING - job backup last succeeded 3 d ago ({days_ago}), schedule is hourly"
        )),
        "{line}"
    );
    let v = json(&dir, &warn);
    assert_eq!(v["verdict"]["level"], "WARNING", "{v:#}");
    assert_eq!(v["agent"]["present"], true, "{v:#}");
    // Not a failure for cron and scripts.
    assert_eq!(status(&dir, &warn, &[]).status.code(), Some(0));

    // CRITICAL: the segment after the newest backup's stop segment is gone from a copy.
    let facts = json(&dir, &ok);
    let stop_wal = facts["repo"]["backups"][0]["stop_wal"]
        .as_str()
        .unwrap()
        .to_string();
    let last = facts["repo"]["timelines"][0]["ranges"][0]["last"]
        .as_str()
        .unwrap()
        .to_string();
    let segno = u64::from_str_radix(&stop_wal[16..24], 16).unwrap() + 1;
    let missing = format!("{}{:08X}", &stop_wal[..16], segno);
    assert!(missing < last, "WAL after {missing} is archived ({last})");
    let holed = dir.path().join("repo-hole");
    copy_tree(&repo, &holed);
    let shard = holed.join("wal/00000001").join(&missing[8..16]);
    let object = std::fs::read_dir(&shard)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            name.starts_with(&format!("{missing}-"))
        })
        .unwrap_or_else(|| panic!("no object for {missing} in {}", shard.display()));
    std::fs::remove_file(&object).unwrap();
    let hole = config(
        &dir,
        "hole.toml",
        &base,
        &format!("file://{}", holed.display()),
        "",
        &no_agent,
    );
    let (code, line) = nagios(&dir, &hole);
    assert_eq!(code, 2, "{line}");
    assert!(
        line.starts_with(&format!(
            "PGWARD CRITICAL - WAL hole after the newest backup at {missing}: nothing after {} \
             is recoverable",
            last_byte_before(&missing)
        )),
        "{line}"
    );
    assert!(line.contains("wal_gaps=1;"), "{line}");
    let text = status(&dir, &hole, &[]);
    assert_eq!(text.status.code(), Some(1), "{}", text.describe());
    assert!(
        text.stdout
            .contains(&format!("HOLE {missing} .. {missing}  1 segment missing")),
        "{}",
        text.stdout
    );

    // CRITICAL: the newest report of a drill says it failed.
    let drilled = dir.path().join("repo-drill");
    copy_tree(&repo, &drilled);
    let label = "20261202T031500Z-weekly-latest";
    let report = serde_json::json!({
        "format": 1, "label": label, "drill": "weekly-latest",
        "file": "restore-tests/weekly-latest.toml", "from": "backup",
        "pgward_version": "0.1.0", "postgres_version": "15", "host": "db1",
        "started_at": "2026-12-02T03:15:00Z", "finished_at": "2026-12-02T03:16:00Z",
        "backup": null,
        "target": {"kind": "latest", "value": null, "archive_end_segment": null},
        "reached": null, "markers": null, "phases": [], "rto_seconds": null,
        "rpo_seconds": null, "checks": [], "verdict": "failed",
        "failure": {"phase": "restore", "reason": "block 3f2a is missing from the repository",
                    "server_log_tail": null},
        "kept": null, "notes": []
    });
    let drills = drilled.join("drills");
    std::fs::create_dir_all(&drills).unwrap();
    std::fs::write(
        drills.join(format!("{label}.json")),
        serde_json::to_vec(&report).unwrap(),
    )
    .unwrap();
    let failed = config(
        &dir,
        "drill.toml",
        &base,
        &format!("file://{}", drilled.display()),
        "",
        &no_agent,
    );
    let (code, line) = nagios(&dir, &failed);
    assert_eq!(code, 2, "{line}");
    assert!(
        line.starts_with(
            "PGWARD CRITICAL - last drill weekly-latest failed in restore: block 3f2a is \
             missing from the repository (report drills/20261202T031500Z-weekly-latest.json)"
        ),
        "{line}"
    );

    // UNKNOWN: the repository directory does not exist.
    let gone = dir.path().join("no-such-repo");
    let unknown = config(
        &dir,
        "gone.toml",
        &base,
        &format!("file://{}", gone.display()),
        "",
        &no_agent,
    );
    let (code, line) = nagios(&dir, &unknown);
    assert_eq!(code, 3, "{line}");
    // The server still answers: its perfdata follows.
    assert_eq!(
        line.split(" | ").next().unwrap(),
        format!(
            "PGWARD UNKNOWN - the state cannot be read: repository directory {} does not exist",
            gone.display()
        )
    );
    let v = json(&dir, &unknown);
    assert_eq!(v["verdict"]["level"], "UNKNOWN", "{v:#}");
    assert_eq!(v["repo"], Value::Null, "{v:#}");

    // UNKNOWN: an S3 endpoint nobody listens on, within the [wal] timeout.
    let port = free_port();
    let s3 = dir.write_file(
        "s3.toml",
        format!(
            "[repo]\nurl = \"s3://pgward/status\"\n[repo.s3]\nendpoint = \
             \"http://127.0.0.1:{port}\"\nregion = \"us-east-1\"\nforce_path_style = true\n\
             access_key_id = \"k\"\nsecret_access_key = \"s\"\n[wal]\ntimeout = \"3s\"\n\
             spool_dir = {}\n{no_agent}\n",
            toml_str(&dir.path().join("spool-s3").to_string_lossy())
        ),
    );
    let started = Instant::now();
    let (code, line) = nagios(&dir, &s3);
    let took = started.elapsed();
    assert_eq!(code, 3, "{line}");
    assert!(
        line.starts_with("PGWARD UNKNOWN - the state cannot be read: "),
        "{line}"
    );
    assert!(took < Duration::from_secs(20), "took {took:?}: {line}");
    eprintln!("unreachable S3: UNKNOWN after {took:?}: {line}");
}
