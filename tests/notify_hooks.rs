//! The agent's notifications (issue 14, item 4) against real loopback receivers and real
//! programs: what each `[[notify]]` target receives, and what counts as delivered.
//!
//! Contract checked here:
//! - a webhook gets one JSON POST per routed event, in `pgward.event.v1`, with Standard
//!   Webhooks headers whose signature verifies (checked here with an independent HMAC);
//! - 5xx/429 are retried (same `webhook-id`, `Retry-After` honoured), a 400 is not, and each
//!   final result is counted once in `pgward_notifications_total{result}`;
//! - a failure's log line names the target as scheme://host only: no URL path, no secret;
//! - a command gets the event on stdin and in `PGWARD_EVENT_*`; a non-zero exit is a failure
//!   reported with its stderr; one that outlives its timeout is killed with its process group;
//! - a ping sees `/start`, `/` and `/fail`; an https URL is spoken to over TLS;
//! - `emit` never waits for a target.
//!
//! Backoffs are set to milliseconds so the whole file runs in a few seconds.

mod common;

use common::receiver::{Receiver, Script, verify_signature};
use pgward::agent::metrics::Metrics;
use pgward::config::Config;
use pgward::events::{Event, EventSink};
use pgward::notify::{Notifier, NotifyConfig};
use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn entries(toml: &str) -> Vec<NotifyConfig> {
    Config::parse(&format!("[repo]\nurl = \"file:///tmp/r\"\n{toml}"), "test")
        .unwrap_or_else(|e| panic!("{e:#}"))
        .notify
}

/// A notifier whose results land in a real `Metrics`.
fn notifier(configs: Vec<NotifyConfig>) -> (Arc<Notifier>, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new(chrono::Utc::now()));
    let m = metrics.clone();
    let n = Notifier::start(
        configs,
        "db1.example".into(),
        Arc::new(move |r: &str| m.observe_notification(r)),
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    (n, metrics)
}

fn counted(m: &Metrics, result: &str) -> u64 {
    let text = m.encode();
    let prefix = format!("pgward_notifications_total{{result=\"{result}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix}in\n{text}"))
        .parse()
        .unwrap()
}

fn started(kind: &str) -> Event {
    Event::JobStarted {
        job: format!("nightly-{kind}"),
        kind: kind.into(),
    }
}

fn finished(kind: &str, succeeded: bool, recovered: bool) -> Event {
    Event::JobFinished {
        job: format!("nightly-{kind}"),
        kind: kind.into(),
        succeeded,
        recovered,
        summary: if succeeded {
            "backup 20261202T050000Z complete".into()
        } else {
            "cannot reach the repository: connection refused".into()
        },
        duration_ms: 4321,
        details: serde_json::json!({"label": "20261202T050000Z"}),
    }
}

fn secret_file(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let p = dir.path().join("hook.secret");
    std::fs::write(&p, format!("{SECRET}\n")).unwrap();
    p
}

/// Log lines written while the guard lives (this thread only: the tests run on a
/// current-thread runtime, so the delivery tasks log here too).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
        let logs = Logs::default();
        let w = logs.clone();
        let sub = tracing_subscriber::fmt()
            .with_writer(move || w.clone())
            .with_ansi(false)
            .with_env_filter(tracing_subscriber::EnvFilter::new("pgward=debug"))
            .finish();
        (logs, tracing::subscriber::set_default(sub))
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test]
async fn a_webhook_gets_the_signed_event_and_only_the_events_it_asked_for() {
    let rx = Receiver::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let configs = entries(&format!(
        "[[notify]]\nwebhook = \"{}\"\nsecret_file = \"{}\"\n",
        rx.url("/hooks/pgward"),
        secret_file(&dir).display()
    ));
    let (n, metrics) = notifier(configs);
    // Default `on` = failure, recovered: a start and a plain success are not sent.
    n.emit(&started("backup"));
    n.emit(&finished("backup", true, false));
    n.emit(&finished("backup", false, false));
    n.emit(&finished("backup", true, true));
    n.flush(Duration::from_secs(10)).await;
    let got = rx.requests();
    assert_eq!(got.len(), 2, "{got:#?}");
    let before = chrono::Utc::now().timestamp();
    for (r, event) in got.iter().zip(["job_failed", "job_recovered"]) {
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/hooks/pgward");
        assert_eq!(r.header("content-type"), Some("application/json"));
        let v = r.json();
        assert_eq!(v["schema"], "pgward.event.v1");
        assert_eq!(v["event"], event);
        assert_eq!(v["job"], "nightly-backup");
        assert_eq!(v["kind"], "backup");
        assert_eq!(v["host"], "db1.example");
        assert_eq!(v["duration_ms"], 4321);
        assert_eq!(v["details"]["label"], "20261202T050000Z");
        let time = chrono::DateTime::parse_from_rfc3339(v["time"].as_str().unwrap()).unwrap();
        assert!((before - time.timestamp()).abs() < 60, "{v}");
        let id = r.header("webhook-id").unwrap();
        assert_eq!(v["id"], id);
        assert!(id.starts_with("evt_"), "{id}");
        let ts = r.header("webhook-timestamp").unwrap();
        assert!((before - ts.parse::<i64>().unwrap()).abs() < 60, "{ts}");
        let sig = r.header("webhook-signature").unwrap();
        assert!(
            verify_signature(SECRET, id, ts, &r.body, sig),
            "signature {sig} does not verify"
        );
        // Tampering is detected.
        assert!(!verify_signature(SECRET, id, ts, b"{}", sig));
    }
    assert_ne!(got[0].header("webhook-id"), got[1].header("webhook-id"));
    assert_eq!(counted(&metrics, "success"), 2);
    assert_eq!(counted(&metrics, "failure"), 0);
}

#[tokio::test]
async fn a_webhook_that_fails_twice_gets_the_retries_and_counts_one_success() {
    // 503, then 429 with Retry-After: 1 (honoured), then 200.
    let script: Arc<Script> = Arc::new(|n| match n {
        0 => (503, vec![]),
        1 => (429, vec![("retry-after", "1".to_string())]),
        _ => (200, vec![]),
    });
    let rx = Receiver::start(script).await;
    let configs = entries(&format!(
        "[[notify]]\nwebhook = \"{}\"\non = [\"failure\"]\nbackoff = \"10ms\"\n",
        rx.url("/h")
    ));
    let (n, metrics) = notifier(configs);
    n.emit(&finished("dump", false, false));
    n.flush(Duration::from_secs(10)).await;
    let got = rx.requests();
    assert_eq!(got.len(), 3, "exactly three attempts: {got:#?}");
    let ids: Vec<_> = got
        .iter()
        .map(|r| r.header("webhook-id").unwrap())
        .collect();
    assert!(
        ids.iter().all(|i| *i == ids[0]),
        "one id across retries: {ids:?}"
    );
    assert!(got.iter().all(|r| r.body == got[0].body));
    assert!(
        got[2].at - got[1].at >= Duration::from_millis(950),
        "Retry-After: 1 was not honoured: {:?}",
        got[2].at - got[1].at
    );
    assert!(got[1].at - got[0].at < Duration::from_millis(900));
    assert_eq!(counted(&metrics, "success"), 1);
    assert_eq!(counted(&metrics, "failure"), 0);
}

#[tokio::test]
async fn a_400_is_not_retried_and_its_failure_is_logged_without_secrets() {
    let (logs, _guard) = Logs::capture();
    let rx = Receiver::statuses(&[400, 400, 400]).await;
    let dir = tempfile::tempdir().unwrap();
    let url = rx.url("/services/T0/SEKRETPATH?token=SEKRETQUERY");
    let configs = entries(&format!(
        "[[notify]]\nwebhook = \"{url}\"\nsecret_file = \"{}\"\nbackoff = \"10ms\"\n",
        secret_file(&dir).display()
    ));
    let debug = format!("{configs:?}");
    let (n, metrics) = notifier(configs);
    n.emit(&finished("verify", false, false));
    n.flush(Duration::from_secs(10)).await;
    let got = rx.requests();
    assert_eq!(got.len(), 1, "a 400 is final: {got:#?}");
    assert_eq!(counted(&metrics, "success"), 0);
    assert_eq!(counted(&metrics, "failure"), 1);
    let sig = got[0].header("webhook-signature").unwrap().to_string();
    let text = logs.text();
    let line = text
        .lines()
        .find(|l| l.contains("notification failed"))
        .unwrap_or_else(|| panic!("no failure line in:\n{text}"));
    assert!(line.contains("HTTP 400"), "{line}");
    assert!(line.contains(&format!("http://{}/…", rx.addr)), "{line}");
    assert_eq!(
        text.matches("notification failed").count(),
        1,
        "logged once:\n{text}"
    );
    let secret_b64 = SECRET.strip_prefix("whsec_").unwrap();
    for (what, text) in [("log", &text), ("Debug", &debug)] {
        for leak in ["SEKRETPATH", "SEKRETQUERY", "services/T0", secret_b64, &sig] {
            assert!(!text.contains(leak), "{what} shows `{leak}`:\n{text}");
        }
    }
}

#[tokio::test]
async fn an_unreachable_webhook_is_retried_then_counted_as_a_failure() {
    // A port with nothing listening: connection refused on every attempt.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (logs, _guard) = Logs::capture();
    let configs = entries(&format!(
        "[[notify]]\nwebhook = \"http://127.0.0.1:{port}/SEKRETPATH\"\nretries = 2\n\
         backoff = \"10ms\"\ntimeout = \"2s\"\n"
    ));
    let (n, metrics) = notifier(configs);
    n.emit(&finished("expire", false, false));
    n.flush(Duration::from_secs(10)).await;
    assert_eq!(counted(&metrics, "failure"), 1);
    let text = logs.text();
    assert_eq!(text.matches("retrying").count(), 2, "{text}");
    let line = text
        .lines()
        .find(|l| l.contains("notification failed"))
        .unwrap();
    assert!(line.contains("after 3 attempts"), "{line}");
    assert!(!text.contains("SEKRETPATH"), "{text}");
}

#[tokio::test]
async fn a_ping_sees_start_success_and_fail() {
    let rx = Receiver::ok().await;
    let configs = entries(&format!(
        "[[notify]]\nping = \"{}\"\nkinds = [\"backup\"]\n",
        rx.url("/0b5e6c0a-uuid")
    ));
    let (n, metrics) = notifier(configs);
    n.emit(&started("backup"));
    n.emit(&finished("backup", true, false));
    n.emit(&started("dump")); // another kind: not this ping's
    n.emit(&finished("dump", false, false));
    n.emit(&started("backup"));
    n.emit(&finished("backup", false, false));
    n.flush(Duration::from_secs(10)).await;
    let got = rx.requests();
    let paths: Vec<_> = got.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/0b5e6c0a-uuid/start",
            "/0b5e6c0a-uuid",
            "/0b5e6c0a-uuid/start",
            "/0b5e6c0a-uuid/fail"
        ]
    );
    assert!(got.iter().all(|r| r.method == "POST"));
    assert_eq!(
        String::from_utf8_lossy(&got[3].body),
        "cannot reach the repository: connection refused"
    );
    assert_eq!(counted(&metrics, "success"), 4);
}

/// A script that records its stdin and environment, then exits with `$EXIT`.
fn script(dir: &std::path::Path, body: &str) -> String {
    let p = dir.join("hook.sh");
    let mut f = std::fs::File::create(&p).unwrap();
    writeln!(f, "#!/bin/sh\n{body}").unwrap();
    drop(f);
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p.display().to_string()
}

#[tokio::test]
async fn a_command_gets_the_event_on_stdin_and_in_its_environment() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let hook = script(
        dir.path(),
        &format!(
            "cat > {d}/stdin.json\nenv | grep ^PGWARD_EVENT_ | sort > {d}/env.txt\necho \"$1\" > {d}/arg.txt"
        ),
    );
    let configs = entries(&format!(
        "[[notify]]\ncommand = [\"{hook}\", \"--team=db\"]\non = [\"success\", \"failure\"]\n"
    ));
    let (n, metrics) = notifier(configs);
    n.emit(&finished("drill", true, false));
    n.flush(Duration::from_secs(10)).await;
    assert_eq!(counted(&metrics, "success"), 1);
    let stdin: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("stdin.json")).unwrap())
            .unwrap();
    assert_eq!(stdin["schema"], "pgward.event.v1");
    assert_eq!(stdin["event"], "job_succeeded");
    assert_eq!(stdin["kind"], "drill");
    let env = std::fs::read_to_string(dir.path().join("env.txt")).unwrap();
    let var = |k: &str| {
        env.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("no {k} in\n{env}"))
            .to_string()
    };
    assert_eq!(var("PGWARD_EVENT_ID"), stdin["id"].as_str().unwrap());
    assert_eq!(var("PGWARD_EVENT_TIME"), stdin["time"].as_str().unwrap());
    assert_eq!(var("PGWARD_EVENT_EVENT"), "job_succeeded");
    assert_eq!(var("PGWARD_EVENT_JOB"), "nightly-drill");
    assert_eq!(var("PGWARD_EVENT_KIND"), "drill");
    assert_eq!(var("PGWARD_EVENT_HOST"), "db1.example");
    assert_eq!(
        var("PGWARD_EVENT_SUMMARY"),
        "backup 20261202T050000Z complete"
    );
    let json: serde_json::Value = serde_json::from_str(&var("PGWARD_EVENT_JSON")).unwrap();
    assert_eq!(json, stdin);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("arg.txt")).unwrap(),
        "--team=db\n"
    );
}

#[tokio::test]
async fn a_failing_command_is_reported_with_its_stderr() {
    let (logs, _guard) = Logs::capture();
    let dir = tempfile::tempdir().unwrap();
    let hook = script(dir.path(), "echo 'pager: token rejected' >&2\nexit 3");
    let (n, metrics) = notifier(entries(&format!("[[notify]]\ncommand = [\"{hook}\"]\n")));
    n.emit(&finished("backup", false, false));
    n.flush(Duration::from_secs(10)).await;
    assert_eq!(counted(&metrics, "failure"), 1);
    let text = logs.text();
    let line = text
        .lines()
        .find(|l| l.contains("notification failed"))
        .unwrap();
    assert!(
        line.contains("exit status: 3") && line.contains("pager: token rejected"),
        "{line}"
    );
}

fn alive(pid: i32) -> bool {
    // A zombie (exited, not yet reaped by its new parent) is not running.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

#[tokio::test]
async fn a_command_past_its_timeout_is_killed_with_its_children_and_never_blocks_emit() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let hook = script(
        dir.path(),
        &format!("echo $$ > {d}/sh.pid\nsleep 30 &\necho $! > {d}/child.pid\nwait"),
    );
    let configs = entries(&format!(
        "[[notify]]\ncommand = [\"{hook}\"]\ntimeout = \"500ms\"\n"
    ));
    let (n, metrics) = notifier(configs);
    let t = Instant::now();
    n.emit(&finished("backup", false, false));
    assert!(
        t.elapsed() < Duration::from_millis(50),
        "emit waited for the hook: {:?}",
        t.elapsed()
    );
    // A short flush gives up while the hook still runs.
    n.flush(Duration::from_millis(100)).await;
    assert_eq!(n.pending(), 1);
    n.flush(Duration::from_secs(10)).await;
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert_eq!(counted(&metrics, "failure"), 1);
    assert_eq!(n.pending(), 0);
    for f in ["sh.pid", "child.pid"] {
        assert_ends(&dir.path().join(f)).await;
    }
}

/// The process whose PID the hook wrote into `pid_file` ends within 2 s.
async fn assert_ends(pid_file: &std::path::Path) {
    let pid: i32 = std::fs::read_to_string(pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    while alive(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!alive(pid), "{} ({pid}) still runs", pid_file.display());
}

/// A hook that exits at once but leaves a child behind (and that child holding stderr):
/// the child is ended with it, and the delivery does not wait for the child.
#[tokio::test]
async fn a_command_that_exits_leaving_a_child_does_not_leave_it_running() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let hook = script(
        dir.path(),
        &format!("sleep 30 &\necho $! > {d}/child.pid\nexit 0"),
    );
    let configs = entries(&format!("[[notify]]\ncommand = [\"{hook}\"]\n"));
    let (n, metrics) = notifier(configs);
    let t = Instant::now();
    n.emit(&finished("backup", false, false));
    n.flush(Duration::from_secs(10)).await;
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(counted(&metrics, "success"), 1);
    assert_ends(&dir.path().join("child.pid")).await;
}

#[tokio::test]
async fn reload_swaps_the_targets_and_refuses_an_unreadable_secret() {
    let first = Receiver::ok().await;
    let second = Receiver::ok().await;
    let hook = |rx: &Receiver| format!("[[notify]]\nwebhook = \"{}\"\n", rx.url("/h"));
    let (n, _metrics) = notifier(entries(&hook(&first)));
    n.emit(&finished("backup", false, false));
    n.reload(entries(&hook(&second))).unwrap();
    n.emit(&finished("backup", false, false));
    let err = n
        .reload(entries(&format!(
            "{}secret_file = \"/nonexistent/pgward-hook.secret\"\n",
            hook(&first)
        )))
        .unwrap_err();
    let err = format!("{err:#}");
    assert!(
        err.contains("secret_file /nonexistent/pgward-hook.secret") && err.contains("hint: "),
        "{err}"
    );
    n.emit(&finished("backup", false, false));
    n.flush(Duration::from_secs(10)).await;
    assert_eq!(first.requests().len(), 1);
    assert_eq!(
        second.requests().len(),
        2,
        "the refused reload kept the second list"
    );
    // The same refusal at start.
    let start = Notifier::start(
        entries(&format!(
            "{}secret_file = \"/nonexistent/pgward-hook.secret\"\n",
            hook(&first)
        )),
        "h".into(),
        Arc::new(|_: &str| {}),
    );
    assert!(start.is_err());
}

#[tokio::test]
async fn an_https_target_is_spoken_to_over_tls() {
    // A plain-text server on the https port: the TLS handshake fails, which proves the
    // client spoke TLS (with the system's roots loaded) rather than refusing the scheme.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            use tokio::io::AsyncWriteExt as _;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .await;
        }
    });
    let (logs, _guard) = Logs::capture();
    let configs = entries(&format!(
        "[[notify]]\nwebhook = \"https://127.0.0.1:{port}/SEKRETPATH\"\nretries = 1\n\
         backoff = \"10ms\"\ntimeout = \"2s\"\n"
    ));
    let (n, metrics) = notifier(configs);
    n.emit(&finished("backup", false, false));
    n.flush(Duration::from_secs(10)).await;
    server.abort();
    assert_eq!(counted(&metrics, "failure"), 1);
    let text = logs.text();
    let line = text
        .lines()
        .find(|l| l.contains("notification failed"))
        .unwrap();
    assert!(
        line.contains("after 2 attempts") && !text.contains("no system root certificates"),
        "{text}"
    );
    // rustls's words for a server that answered in plain text.
    assert!(line.contains("InvalidContentType"), "{line}");
    assert!(!text.contains("SEKRETPATH"), "{text}");
}
