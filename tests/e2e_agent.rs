//! `pgward agent` end to end (issue 14), against real PostgreSQL 15 sources.
//!
//! Local repository: a policy whose jobs run every few seconds; within a bounded time a backup,
//! a dump, an expire and a verify have each succeeded, as `/metrics` shows with every metric's
//! type; `/healthz` and `/readyz` answer 200; systemd hears READY, WATCHDOG, RELOADING and
//! STOPPING; SIGHUP with a broken policy keeps the old one (and its jobs keep running), with a
//! good one takes it; a repository the agent cannot read makes `/readyz` 503 with the reason
//! and `pgward_repo_up 0`, and it recovers; SIGTERM exits 0; the state persists.
//!
//! S3 repository: an agent restarted after missing a scheduled run runs it once; SIGTERM
//! during a backup (slow store, short stop_timeout) cancels it, exits 0 in time, and leaves no
//! manifest.

mod common;

use common::agent::{Agent, NotifySocket, job};
use common::backup_scenarios::Source;
use common::pg::{RepoSpec, TestDir, free_port, pgward_ok, write_postgres_file};
use common::receiver::Receiver;
use common::s3_server::{Faults, S3Server};
use rustix::process::Signal;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const KINDS: [&str; 4] = ["backup", "dump", "expire", "verify"];

/// The source's configuration with `policy`, and an `[agent]` section.
/// `extra` is appended (`[[notify]]` entries).
fn agent_config(
    src: &Source,
    policy: &Path,
    state: &Path,
    port: u16,
    stop_timeout: &str,
    extra: &str,
) {
    let base = std::fs::read_to_string(&src.cfg).unwrap();
    let base = base.split("\n[agent]").next().unwrap();
    let base: String = base
        .lines()
        .filter(|l| !l.starts_with("policy = "))
        .map(|l| format!("{l}\n"))
        .collect();
    let text = format!(
        "policy = {:?}\n{base}\n[agent]\nlisten = \"127.0.0.1:{port}\"\nstate_dir = {:?}\n\
         stop_timeout = \"{stop_timeout}\"\n{extra}",
        policy.display().to_string(),
        state.display().to_string()
    );
    write_postgres_file(&src.cfg, text.as_bytes());
}

fn policy(backup_every: u32) -> String {
    format!(
        "timezone = \"UTC\"\n\
         [[job]]\nkind = \"backup\"\nschedule = \"*/{backup_every} * * * * *\"\n\
         [[job]]\nkind = \"dump\"\nschedule = \"*/4 * * * * *\"\n\
         [[job]]\nkind = \"expire\"\nschedule = \"*/5 * * * * *\"\n\
         [[job]]\nkind = \"verify\"\nschedule = \"*/5 * * * * *\"\n"
    )
}

fn runs(a: &Agent, kind: &str, result: &str) -> f64 {
    a.value(&format!(
        "pgward_job_runs_total{{job=\"{kind}\",kind=\"{kind}\",result=\"{result}\"}}"
    ))
    .unwrap_or(0.0)
}

/// The Standard Webhooks secret the webhook entry signs with.
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_runs_its_jobs_reloads_and_reports_a_broken_store_local() {
    // A webhook receiver that fails the first two attempts: the first delivery needs a retry.
    let receiver = Arc::new(Receiver::statuses(&[503, 503]).await);
    let r = receiver.clone();
    let result = tokio::task::spawn_blocking(move || local(&r)).await;
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}

fn local(receiver: &Receiver) {
    let dir = TestDir::new("agent");
    let repo = dir.path().join("repo");
    let src = Source::start(&dir, "src", RepoSpec::Local(repo.clone()));
    let policy_file = dir.write_file("policy.toml", policy(4));
    let port = free_port();
    let state = dir.subdir("state");
    // Hooks on the verify job's failures and recoveries: a command that keeps what it got,
    // and the signed webhook.
    let hooks = dir.subdir("hooks");
    let script = dir.write_file(
        "hook.sh",
        format!(
            "#!/bin/sh\ncat >> {0}/events.jsonl\necho >> {0}/events.jsonl\n\
             echo \"$PGWARD_EVENT_EVENT $PGWARD_EVENT_JOB $PGWARD_EVENT_SCHEMA\" >> {0}/env.txt\n",
            hooks.display()
        ),
    );
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let secret = dir.write_file("webhook.secret", format!("{SECRET}\n"));
    let notify = format!(
        "[[notify]]\ncommand = [{:?}]\non = [\"failure\", \"recovered\"]\nkinds = [\"verify\"]\n\
         [[notify]]\nwebhook = {:?}\nsecret_file = {:?}\non = [\"failure\", \"recovered\"]\n\
         kinds = [\"verify\"]\nbackoff = \"100ms\"\n",
        script.display().to_string(),
        receiver.url("/hook"),
        secret.display().to_string()
    );
    agent_config(&src, &policy_file, &state, port, "60s", &notify);
    let systemd = NotifySocket::bind(&dir.path().join("notify.sock"));
    let mut agent = Agent::start(
        &src.cfg,
        dir.path(),
        port,
        &[
            ("NOTIFY_SOCKET", systemd.path.display().to_string()),
            ("WATCHDOG_USEC", "1000000".into()),
        ],
    );

    agent.wait_for("every job succeeded", Duration::from_secs(180), |a| {
        let m = a.metrics();
        KINDS.iter().all(|k| {
            common::agent::value(
                &m,
                &format!("pgward_job_last_success_timestamp_seconds{}", job(k)),
            )
            .is_some_and(|v| v > 0.0)
        })
    });
    let metrics = agent.metrics();
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
        ("pgward_config_last_reload_successful", "gauge"),
    ] {
        assert!(
            metrics.contains(&format!("# TYPE {name} {kind}\n")),
            "{name} {kind}:\n{metrics}"
        );
    }
    let value = |series: &str| common::agent::value(&metrics, series);
    assert_eq!(value("pgward_repo_up"), Some(1.0), "{metrics}");
    assert!(value("pgward_backups").unwrap() >= 1.0, "{metrics}");
    assert!(
        value("pgward_wal_archived_total").unwrap() >= 1.0,
        "{metrics}"
    );
    let interval = format!("pgward_job_interval_seconds{}", job("backup"));
    assert_eq!(value(&interval), Some(4.0), "{metrics}");
    assert_eq!(agent.get("/healthz").map(|x| x.0), Some(200));
    let (status, body) = agent.get("/readyz").unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(agent.get("/nothing").map(|x| x.0), Some(404));
    // `/` is the recovery report, as `pgward report --html` writes it: the verdict, the
    // timeline, a mark per backup.
    let (status, html) = agent.get("/").unwrap();
    assert_eq!(status, 200, "{html}");
    let backups = value("pgward_backups").unwrap() as usize;
    assert!(
        html.contains("<title>pgward recovery report</title>")
            && html.contains("data-verdict=")
            && html.contains("data-timeline=\"1\""),
        "{html}"
    );
    let written = dir.path().join("report.html");
    pgward_ok(
        dir.path(),
        &[
            "--config",
            src.cfg.to_str().unwrap(),
            "report",
            "--html",
            written.to_str().unwrap(),
        ],
    );
    let file = std::fs::read_to_string(&written).unwrap();
    let marks = |page: &str| page.matches("class=\"mark backup").count();
    assert!(marks(&html) >= 1 && marks(&file) >= 1, "{html}");
    assert!(backups >= 1);

    // systemd: ready once listening, the watchdog fed at half of WATCHDOG_USEC.
    assert_eq!(systemd.count("READY=1"), 1, "{:?}", systemd.all());
    agent.wait_for("the watchdog fed", Duration::from_secs(10), |_| {
        systemd.count("WATCHDOG=1") >= 2
    });

    // SIGHUP with a broken policy: refused, the old one runs on — its jobs too (expire reads
    // the agent's policy, not the broken file).
    write_postgres_file(
        &policy_file,
        b"[retention.backups]\nkeep_last = \"three\"\n\
          [[job]]\nkind = \"backup\"\nschedule = \"every now and then\"\n",
    );
    agent.signal(Signal::HUP);
    agent.wait_for("the reload refused", Duration::from_secs(30), |a| {
        a.value("pgward_config_last_reload_successful") == Some(0.0)
    });
    assert!(agent.log().contains("reload refused"), "{}", agent.log());
    assert_eq!(agent.value(&interval), Some(4.0));
    // Counted once the refusal is known: every expire from here on starts with the file broken.
    let (expires, expire_failures) = (
        runs(&agent, "expire", "success"),
        runs(&agent, "expire", "failure"),
    );
    agent.wait_for(
        "an expire under the old policy",
        Duration::from_secs(60),
        |a| runs(a, "expire", "success") > expires,
    );
    assert_eq!(runs(&agent, "expire", "failure"), expire_failures);
    assert_eq!(agent.get("/readyz").map(|x| x.0), Some(200));

    // SIGHUP with a good policy: taken.
    write_postgres_file(&policy_file, policy(6).as_bytes());
    agent.signal(Signal::HUP);
    agent.wait_for("the new policy", Duration::from_secs(30), |a| {
        a.value(&interval) == Some(6.0)
            && a.value("pgward_config_last_reload_successful") == Some(1.0)
    });
    assert_eq!(systemd.count("RELOADING=1"), 2, "{:?}", systemd.all());
    assert_eq!(systemd.count("READY=1"), 3, "{:?}", systemd.all());

    // A repository the agent cannot read: not ready, with the reason; then it recovers.
    let mode = std::fs::metadata(&repo).unwrap().permissions().mode();
    std::fs::set_permissions(&repo, std::fs::Permissions::from_mode(0o000)).unwrap();
    agent.wait_for("the store reported down", Duration::from_secs(60), |a| {
        a.value("pgward_repo_up") == Some(0.0) && a.get("/readyz").is_some_and(|r| r.0 == 503)
    });
    let (_, body) = agent.get("/readyz").unwrap();
    let reasons: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        reasons
            .to_string()
            .contains("the repository cannot be read"),
        "{reasons:#}"
    );
    // The failing verify reaches the webhook: 503, 503, then delivered, one event id, signed.
    agent.wait_for("the webhook's retries", Duration::from_secs(60), |_| {
        receiver.requests().len() >= 3
    });
    let got = receiver.requests();
    let first = got[0].json();
    assert_eq!(first["schema"], "pgward.event.v1");
    assert_eq!(first["event"], "job_failed", "{first:#}");
    assert_eq!(
        (&first["job"], &first["kind"]),
        (&"verify".into(), &"verify".into())
    );
    assert!(first["details"]["error"].as_str().is_some(), "{first:#}");
    for r in &got[..3] {
        let id = r.header("webhook-id").unwrap();
        assert_eq!(id, first["id"].as_str().unwrap(), "retries carry one id");
        let (ts, sig) = (
            r.header("webhook-timestamp").unwrap(),
            r.header("webhook-signature").unwrap(),
        );
        assert!(
            common::receiver::verify_signature(SECRET, id, ts, &r.body, sig),
            "{sig}"
        );
    }
    std::fs::set_permissions(&repo, std::fs::Permissions::from_mode(mode)).unwrap();
    agent.wait_for("the store back", Duration::from_secs(90), |a| {
        a.value("pgward_repo_up") == Some(1.0) && a.get("/readyz").is_some_and(|r| r.0 == 200)
    });
    // The recovery is told too, to both hooks; the command got the events on stdin and in its
    // environment.
    agent.wait_for("the recovery notified", Duration::from_secs(60), |_| {
        receiver
            .requests()
            .iter()
            .any(|r| r.json()["event"] == "job_recovered")
    });
    agent.wait_for(
        "the command hook's recovery",
        Duration::from_secs(30),
        |_| {
            std::fs::read_to_string(hooks.join("env.txt"))
                .is_ok_and(|t| t.contains("job_recovered"))
        },
    );
    let env = std::fs::read_to_string(hooks.join("env.txt")).unwrap();
    assert!(
        env.starts_with("job_failed verify pgward.event.v1\n"),
        "{env}"
    );
    let stdin = std::fs::read_to_string(hooks.join("events.jsonl")).unwrap();
    let events: Vec<serde_json::Value> = stdin
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events[0]["event"], "job_failed", "{stdin}");
    assert!(
        events.iter().any(|e| e["event"] == "job_recovered"),
        "{stdin}"
    );
    assert!(
        agent.value("pgward_notifications_total{result=\"success\"}") >= Some(4.0),
        "{}",
        agent.metrics()
    );
    assert_eq!(
        agent.value("pgward_notifications_total{result=\"failure\"}"),
        Some(0.0)
    );

    // SIGTERM: the running job finishes, the agent tells systemd and exits 0.
    agent.signal(Signal::TERM);
    let status = agent.wait_exit(Duration::from_secs(90));
    assert!(status.success(), "exit {status}:\n{}", agent.log());
    assert_eq!(systemd.count("STOPPING=1"), 1, "{:?}", systemd.all());
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(state.join("jobs.json")).unwrap()).unwrap();
    for k in KINDS {
        assert!(
            saved["jobs"][k]["runs_success"].as_u64() >= Some(1),
            "jobs.json keeps the {k} job: {saved:#}"
        );
    }
    common::verify::assert_repo_verifies(dir.path(), &src.cfg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_catches_up_once_and_cancels_a_backup_on_sigterm_s3() {
    let server = S3Server::start().await;
    server.storage("agent", "lifecycle").await;
    let repo = RepoSpec::S3 {
        endpoint: server.endpoint.clone(),
        bucket: "agent".into(),
        prefix: "lifecycle".into(),
        access_key: server.access_key.clone(),
        secret_key: server.secret_key.clone(),
    };
    let faults = server.faults.clone();
    let objects = server.root().join("agent/lifecycle");
    let result = tokio::task::spawn_blocking(move || lifecycle(faults, repo, &objects)).await;
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// `objects`: where the S3 server keeps the repository's objects.
fn lifecycle(faults: Arc<Faults>, repo: RepoSpec, objects: &Path) {
    let dir = TestDir::new("agent-life");
    let src = Source::start(&dir, "src", repo);
    let state = dir.subdir("state");
    let port = free_port();

    // A daily expire whose last run was two days ago: the agent down since then missed one.
    let policy_file = dir.write_file(
        "policy.toml",
        "timezone = \"UTC\"\n[[job]]\nkind = \"expire\"\nschedule = \"0 3 * * *\"\n",
    );
    let two_days_ago = (chrono::Utc::now() - chrono::Duration::days(2)).to_rfc3339();
    write_postgres_file(
        &state.join("jobs.json"),
        format!(
            "{{\"format\": 1, \"jobs\": {{\"expire\": {{\"last_start\": \"{two_days_ago}\", \
             \"last_success\": \"{two_days_ago}\", \"runs_success\": 1}}}}}}"
        )
        .as_bytes(),
    );
    agent_config(&src, &policy_file, &state, port, "1s", "");
    let mut agent = Agent::start(&src.cfg, dir.path(), port, &[]);
    agent.wait_for("the missed run made", Duration::from_secs(60), |a| {
        runs(a, "expire", "success") == 2.0
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(runs(&agent, "expire", "success"), 2.0, "once, not again");
    let next = agent
        .value(&format!(
            "pgward_job_next_run_timestamp_seconds{}",
            job("expire")
        ))
        .unwrap();
    assert!(
        next > chrono::Utc::now().timestamp() as f64,
        "next run {next}"
    );
    assert!(agent.log().contains("missed"), "{}", agent.log());
    agent.signal(Signal::TERM);
    assert!(agent.wait_exit(Duration::from_secs(30)).success());
    // Restarted again: nothing was missed this time.
    let mut agent = Agent::start(&src.cfg, dir.path(), port, &[]);
    agent.wait_for("the agent up", Duration::from_secs(30), |a| {
        a.get("/healthz").is_some()
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(runs(&agent, "expire", "success"), 2.0, "{}", agent.log());
    agent.signal(Signal::TERM);
    assert!(agent.wait_exit(Duration::from_secs(30)).success());

    // SIGTERM during a backup on a slow store with a 1 s stop_timeout: cancelled cleanly.
    write_postgres_file(
        &policy_file,
        b"timezone = \"UTC\"\n[[job]]\nkind = \"backup\"\nschedule = \"* * * * * *\"\n",
    );
    faults.set_latency(Duration::from_millis(250));
    let mut agent = Agent::start(&src.cfg, dir.path(), port, &[]);
    agent.wait_for("a backup running", Duration::from_secs(60), |a| {
        a.log().contains("backup started")
    });
    std::thread::sleep(Duration::from_secs(1));
    agent.signal(Signal::TERM);
    let asked = Instant::now();
    let status = agent.wait_exit(Duration::from_secs(60));
    let took = asked.elapsed();
    let log = agent.log();
    assert!(status.success(), "exit {status}:\n{log}");
    assert!(log.contains("cancelling the running job"), "{log}");
    assert!(
        took < Duration::from_secs(10),
        "stop_timeout 1 s, stopped after {took:?}:\n{log}"
    );
    eprintln!("SIGTERM to exit, with a 1 s stop_timeout and 250 ms store latency: {took:?}");
    faults.set_latency(Duration::ZERO);
    let info = pgward_ok(
        dir.path(),
        &["--config", src.cfg.to_str().unwrap(), "info", "--json"],
    );
    let info: serde_json::Value = serde_json::from_str(&info.stdout).unwrap();
    assert_eq!(
        info["backups"].as_array().map(Vec::len),
        Some(0),
        "a cancelled backup leaves no manifest: {info:#}"
    );
    // Nothing left behind for the next backup to wait for: no lease, no in-progress marker.
    assert!(
        objects.join("repo.json").exists(),
        "objects are not under {objects:?}"
    );
    assert!(
        !objects.join("locks/backup.json").exists(),
        "the backup lease is left"
    );
    let markers: Vec<_> = walk(&objects.join("backups"))
        .into_iter()
        .filter(|p| p.ends_with("in-progress.json"))
        .collect();
    assert!(markers.is_empty(), "markers left: {markers:?}");
    // A cancelled run is neither a success nor a failure, and its start is forgotten.
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(state.join("jobs.json")).unwrap()).unwrap();
    let backup = &saved["jobs"]["backup"];
    assert_eq!(backup["runs_failure"], 0, "{saved:#}");
    assert!(backup["last_start"].is_null(), "{saved:#}");
    assert!(log.contains("job cancelled by the shutdown"), "{log}");
    common::verify::assert_repo_verifies(dir.path(), &src.cfg);
}

/// Every file under `dir` (none when it does not exist).
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
