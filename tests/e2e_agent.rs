//! `pgward agent` end to end (issue 14): a real PostgreSQL 15 source archiving into a local
//! repository, and a policy whose jobs run every few seconds. Within a bounded time a backup,
//! a dump, an expire and a verify have each succeeded, as `/metrics` shows; `/healthz` and
//! `/readyz` answer 200; SIGTERM stops the agent with exit 0; its state persists.

mod common;

use common::backup_scenarios::Source;
use common::pg::{
    RepoSpec, TestDir, as_postgres, free_port, reachable_binary, write_postgres_file,
};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `GET path` on the agent: (status, body).
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|x| x.1.to_string())?;
    Some((status, body))
}

/// The value of the series `series` (name with labels, exactly as exposed) in `metrics`.
fn value(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let (name, v) = l.rsplit_once(' ')?;
        (name == series).then(|| v.parse().ok())?
    })
}

const KINDS: [&str; 4] = ["backup", "dump", "expire", "verify"];

#[test]
fn the_agent_runs_its_jobs_and_serves_its_endpoints_local() {
    let dir = TestDir::new("agent");
    let src = Source::start(&dir, "src", RepoSpec::Local(dir.path().join("repo")));
    let policy = dir.write_file(
        "policy.toml",
        "timezone = \"UTC\"\n\
         [[job]]\nkind = \"backup\"\nschedule = \"*/4 * * * * *\"\n\
         [[job]]\nkind = \"dump\"\nschedule = \"*/4 * * * * *\"\n\
         [[job]]\nkind = \"expire\"\nschedule = \"*/5 * * * * *\"\n\
         [[job]]\nkind = \"verify\"\nschedule = \"*/5 * * * * *\"\n",
    );
    let port = free_port();
    let state = dir.subdir("state");
    let text = format!(
        "policy = {:?}\n{}\n[agent]\nlisten = \"127.0.0.1:{port}\"\nstate_dir = {:?}\nstop_timeout = \"60s\"\n",
        policy.display().to_string(),
        std::fs::read_to_string(&src.cfg).unwrap(),
        state.display().to_string()
    );
    write_postgres_file(&src.cfg, text.as_bytes());

    let mut cmd = Command::new(reachable_binary());
    cmd.args(["--config", src.cfg.to_str().unwrap(), "agent"])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    as_postgres(&mut cmd);
    let mut agent = cmd.spawn().unwrap();
    let stderr = agent.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        let mut s = String::new();
        let mut r = stderr;
        let _ = r.read_to_string(&mut s);
        s
    });

    let deadline = Instant::now() + Duration::from_secs(180);
    let metrics = loop {
        assert!(
            agent.try_wait().unwrap().is_none(),
            "the agent exited early:\n{}",
            log.join().unwrap()
        );
        if let Some((200, m)) = get(port, "/metrics") {
            let done = KINDS.iter().all(|k| {
                value(
                    &m,
                    &format!(
                        "pgward_job_last_success_timestamp_seconds{{job=\"{k}\",kind=\"{k}\"}}"
                    ),
                )
                .is_some_and(|v| v > 0.0)
            });
            if done {
                break m;
            }
        }
        if Instant::now() > deadline {
            let _ = agent.kill();
            panic!(
                "not every job succeeded in time:\n{}\n{}",
                get(port, "/metrics").map(|x| x.1).unwrap_or_default(),
                log.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    for (name, kind) in [
        ("pgward_build_info", "gauge"),
        ("pgward_agent_start_time_seconds", "gauge"),
        ("pgward_job_last_start_timestamp_seconds", "gauge"),
        ("pgward_job_last_failure_timestamp_seconds", "gauge"),
        ("pgward_job_next_run_timestamp_seconds", "gauge"),
        ("pgward_job_interval_seconds", "gauge"),
        ("pgward_job_last_duration_seconds", "gauge"),
        ("pgward_job_runs", "counter"),
        ("pgward_repo_up", "gauge"),
        ("pgward_backups", "gauge"),
        ("pgward_dumps", "gauge"),
        ("pgward_repo_stored_bytes", "gauge"),
        ("pgward_backup_last_size_bytes", "gauge"),
        ("pgward_wal_gap_segments", "gauge"),
        ("pgward_verify_problems", "gauge"),
        ("pgward_wal_archived", "counter"),
        ("pgward_wal_archive_pending_segments", "gauge"),
        ("pgward_rpo_seconds", "gauge"),
    ] {
        assert!(
            metrics.contains(&format!("# TYPE {name} {kind}\n")),
            "{name} {kind}:\n{metrics}"
        );
    }
    assert_eq!(value(&metrics, "pgward_repo_up"), Some(1.0), "{metrics}");
    assert!(
        value(&metrics, "pgward_backups").unwrap() >= 1.0,
        "{metrics}"
    );
    assert!(
        value(&metrics, "pgward_wal_archived_total").unwrap() >= 1.0,
        "{metrics}"
    );
    assert_eq!(
        value(
            &metrics,
            "pgward_job_interval_seconds{job=\"backup\",kind=\"backup\"}"
        ),
        Some(4.0),
        "{metrics}"
    );
    assert_eq!(get(port, "/healthz").map(|x| x.0), Some(200));
    let (status, body) = get(port, "/readyz").unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(get(port, "/nothing").map(|x| x.0), Some(404));

    // SIGTERM: the agent lets a running job finish and exits 0.
    let pid = rustix::process::Pid::from_raw(agent.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let stopped = Instant::now();
    let status = loop {
        if let Some(s) = agent.try_wait().unwrap() {
            break s;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(90),
            "the agent did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let log = log.join().unwrap();
    assert!(status.success(), "the agent exited with {status}:\n{log}");
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(state.join("jobs.json")).unwrap()).unwrap();
    for k in KINDS {
        assert!(
            saved.to_string().contains(k),
            "jobs.json keeps the {k} job: {saved:#}"
        );
    }
    common::verify::assert_repo_verifies(dir.path(), &src.cfg);
}
