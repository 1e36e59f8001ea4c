//! The deploy kit in `deploy/` (issue 14 item 6): the alert rules pass `promtool check rules`
//! and their unit tests (`promtool test rules`), the rules, their tests and the Grafana dashboard
//! use only the metrics the agent exports (issue 14 item 3), the systemd unit is hardened and
//! never removes the cluster's IPC, and the shipped policy is the BookedBarber one.
//!
//! promtool is required: a missing promtool fails these tests (Debian's `prometheus` package
//! has it; `.ci/run` installs it).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Every metric the agent exports (issue 14's, and the reload gauge). Nothing in `deploy/` may query
/// another `pgward_*` name.
const AGENT_METRICS: &[&str] = &[
    "pgward_build_info",
    "pgward_agent_start_time_seconds",
    "pgward_config_last_reload_successful",
    "pgward_job_last_start_timestamp_seconds",
    "pgward_job_last_success_timestamp_seconds",
    "pgward_job_last_failure_timestamp_seconds",
    "pgward_job_next_run_timestamp_seconds",
    "pgward_job_interval_seconds",
    "pgward_job_last_duration_seconds",
    "pgward_job_runs_total",
    "pgward_repo_up",
    "pgward_backups",
    "pgward_dumps",
    "pgward_repo_stored_bytes",
    "pgward_backup_last_size_bytes",
    "pgward_backup_last_stored_bytes",
    "pgward_recovery_window_start_timestamp_seconds",
    "pgward_recovery_window_end_timestamp_seconds",
    "pgward_wal_gap_segments",
    "pgward_verify_problems",
    "pgward_wal_archived_total",
    "pgward_wal_archive_failed_total",
    "pgward_wal_archive_pending_segments",
    "pgward_rpo_seconds",
    "pgward_drill_last_success_timestamp_seconds",
    "pgward_drill_last_rto_seconds",
    "pgward_drill_last_rpo_seconds",
    "pgward_drill_last_passed",
    "pgward_notifications_total",
];

/// What the dashboard must show (issue 14 item 6 and the deploy brief): last success per job,
/// durations, runs by result, the recovery window, RPO, WAL archived/failed, drill RTO/RPO and
/// pass/fail, stored bytes.
const DASHBOARD_MUST_SHOW: &[&str] = &[
    "pgward_job_last_success_timestamp_seconds",
    "pgward_job_last_duration_seconds",
    "pgward_job_runs_total",
    "pgward_recovery_window_start_timestamp_seconds",
    "pgward_recovery_window_end_timestamp_seconds",
    "pgward_rpo_seconds",
    "pgward_wal_archived_total",
    "pgward_wal_archive_failed_total",
    "pgward_drill_last_rto_seconds",
    "pgward_drill_last_rpo_seconds",
    "pgward_drill_last_passed",
    "pgward_repo_stored_bytes",
];

const ALERTS: &[&str] = &[
    "PgwardJobOverdue",
    "PgwardJobFailing",
    "PgwardDrillFailing",
    "PgwardWalArchiveFailing",
    "PgwardRPOHigh",
    "PgwardWalGap",
    "PgwardRepoDown",
    "PgwardAbsent",
    "PgwardConfigReloadFailed",
];

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(file)
}

fn read(file: &str) -> String {
    let path = deploy(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Runs promtool with `args` (bounded: 60 s) and returns its combined output; panics with the
/// output when it exits non-zero, and with install instructions when promtool is missing.
fn promtool(args: &[&str]) -> String {
    let mut child = match Command::new("promtool")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "promtool is not installed, and the deploy kit's alert rules cannot be checked without \
             it (this test never skips).\nhint: apt-get install -y --no-install-recommends \
             prometheus (Debian's package ships /usr/bin/promtool); .ci/run does this"
        ),
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for promtool") {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("promtool {args:?} did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().expect("promtool output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        status.success(),
        "promtool {args:?} failed ({status}):\n{text}"
    );
    text
}

/// The `pgward_*` names in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let re = regex::Regex::new(r"\bpgward_[a-z0-9_]+").unwrap();
    re.find_iter(text).map(|m| m.as_str().to_string()).collect()
}

fn unknown_metrics(used: &BTreeSet<String>) -> Vec<&String> {
    used.iter()
        .filter(|m| !AGENT_METRICS.contains(&m.as_str()))
        .collect()
}

#[test]
fn promtool_checks_the_alert_rules() {
    let out = promtool(&["check", "rules", "deploy/alerts.yml"]);
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", ALERTS.len())),
        "{out}"
    );
    let rules = read("alerts.yml");
    let defined: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(str::trim)
        .collect();
    assert_eq!(
        defined, ALERTS,
        "alerts.yml must define exactly the issue's alerts"
    );
    for rule in rules.split("- alert:").skip(1) {
        let name = rule.split_whitespace().next().unwrap();
        assert!(
            rule.contains("severity: critical") || rule.contains("severity: warning"),
            "{name} has no severity label"
        );
        assert!(
            rule.contains("summary:") && rule.contains("description:"),
            "{name} lacks a summary or description"
        );
    }
}

#[test]
fn promtool_unit_tests_of_the_alert_rules_pass() {
    let out = promtool(&["test", "rules", "deploy/alerts.test.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");
}

/// Each alert has a test where it fires and one where it must stay quiet (the next line after
/// `alertname: X` is `exp_alerts: []` for a quiet case, `exp_alerts:` with items for a firing one).
#[test]
fn every_alert_is_tested_firing_and_quiet() {
    let tests = read("alerts.test.yml");
    let lines: Vec<&str> = tests.lines().map(str::trim).collect();
    let mut seen: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(name) = line.strip_prefix("alertname:") else {
            continue;
        };
        let next = lines[i + 1..].iter().find(|l| !l.is_empty()).copied();
        let entry = seen.entry(name.trim()).or_default();
        match next {
            Some("exp_alerts: []") => entry.1 += 1,
            Some("exp_alerts:") => entry.0 += 1,
            other => panic!("alertname: {name} followed by {other:?}"),
        }
    }
    let mut missing = Vec::new();
    for alert in ALERTS {
        match seen.get(alert) {
            Some((fires, quiet)) if *fires > 0 && *quiet > 0 => {}
            got => missing.push(format!("{alert}: (firing, quiet) cases = {got:?}")),
        }
    }
    assert!(
        missing.is_empty(),
        "alerts.test.yml lacks cases:\n{}",
        missing.join("\n")
    );
}

#[test]
fn alert_rules_and_their_tests_use_only_the_agents_metrics() {
    for file in ["alerts.yml", "alerts.test.yml"] {
        let used = metric_names(&read(file));
        assert!(!used.is_empty(), "{file} uses no pgward metric");
        let unknown = unknown_metrics(&used);
        assert!(
            unknown.is_empty(),
            "{file} uses metrics the agent does not export: {unknown:?}"
        );
    }
}

/// Collects every PromQL text of a dashboard (`expr` of targets, and `query`/`definition` of
/// template variables).
fn queries(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr" | "definition", serde_json::Value::String(s)) => out.push(s.clone()),
                    ("query", serde_json::Value::String(s)) if s.contains('(') => {
                        out.push(s.clone())
                    }
                    _ => queries(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| queries(v, out)),
        _ => {}
    }
}

#[test]
fn dashboard_is_valid_json_over_the_agents_metrics_with_a_datasource_variable() {
    let text = read("grafana-dashboard.json");
    let dash: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("grafana-dashboard.json: {e}"));

    let vars = dash["templating"]["list"]
        .as_array()
        .expect("templating.list");
    assert!(
        vars.iter().any(|v| v["name"] == "datasource"
            && v["type"] == "datasource"
            && v["query"] == "prometheus"),
        "no Prometheus datasource variable named `datasource`"
    );

    let panels = dash["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    for p in panels {
        let title = p["title"].as_str().unwrap_or("?");
        assert!(
            ids.insert(p["id"].as_u64().expect("panel id")),
            "duplicate panel id at {title}"
        );
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(
            p["datasource"]["uid"], "${datasource}",
            "panel {title} does not use the datasource variable"
        );
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {title} has no query");
        for t in targets {
            let expr = t["expr"].as_str().unwrap_or("");
            assert!(
                expr.contains("pgward_"),
                "panel {title}: query {expr:?} reads no pgward metric"
            );
            assert_eq!(
                t["datasource"]["uid"], "${datasource}",
                "panel {title}: target datasource"
            );
        }
    }

    let mut all = Vec::new();
    queries(&dash, &mut all);
    let used: BTreeSet<String> = all.iter().flat_map(|q| metric_names(q)).collect();
    let unknown = unknown_metrics(&used);
    assert!(
        unknown.is_empty(),
        "the dashboard queries metrics the agent does not export: {unknown:?}"
    );
    let missing: Vec<&&str> = DASHBOARD_MUST_SHOW
        .iter()
        .filter(|m| !used.contains(**m))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard does not show {missing:?}"
    );
}

/// Every dashboard query is valid PromQL: promtool checks them as recording rules, with
/// Grafana's variables replaced by values of the kind Grafana puts there.
#[test]
fn dashboard_queries_parse_as_promql() {
    let dash: serde_json::Value = serde_json::from_str(&read("grafana-dashboard.json")).unwrap();
    let mut all = Vec::new();
    queries(&dash, &mut all);
    assert!(all.len() > 10, "only {} queries found", all.len());
    // Grafana's `label_values(SELECTOR, label)` (a variable's query): its selector is PromQL.
    let label_values = regex::Regex::new(r"^label_values\((.*),\s*[a-z_]+\)$").unwrap();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, q) in all.iter().enumerate() {
        let expr = label_values
            .replace(q, "$1")
            .replace("$__rate_interval", "2m")
            .replace("$__range", "1d")
            .replace("$instance", ".*");
        assert!(!expr.contains('$'), "an unknown Grafana variable in {q:?}");
        rules.push_str(&format!(
            "      - record: dashboard:query{i}\n        expr: {}\n",
            serde_json::to_string(&expr).unwrap()
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard-queries.yml");
    std::fs::write(&file, rules).unwrap();
    let out = promtool(&["check", "rules", file.to_str().unwrap()]);
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", all.len())),
        "{out}"
    );
}

/// The `Key=Value` lines of a unit file (comments and section headers left out), in order.
fn unit_directives(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty() && !l.starts_with('#') && !l.starts_with(';') && !l.starts_with('[')
        })
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("not a directive: {l}"));
            (k.trim().to_string(), v.trim().to_string())
        })
        .collect()
}

fn seconds(v: &str) -> u64 {
    let (num, mult) = if let Some(n) = v.strip_suffix("min") {
        (n, 60)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1)
    } else if let Some(n) = v.strip_suffix('m') {
        (n, 60)
    } else {
        (v, 1)
    };
    num.trim()
        .parse::<u64>()
        .unwrap_or_else(|_| panic!("not a time span: {v}"))
        * mult
}

#[test]
fn unit_file_is_hardened_and_never_removes_ipc() {
    let text = read("pgward-agent.service");
    let d = unit_directives(&text);
    let get = |key: &str| -> Vec<&str> {
        d.iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    let one = |key: &str| -> &str {
        match get(key).as_slice() {
            [v] => v,
            other => panic!("{key}= must be set once, found {other:?}"),
        }
    };
    for (key, want) in [
        ("Type", "notify"),
        ("User", "postgres"),
        (
            "ExecStart",
            "/usr/local/bin/pgward --config /etc/pgward/pgward.toml --log-format json agent",
        ),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("KillSignal", "SIGTERM"),
        ("ProtectSystem", "strict"),
        ("NoNewPrivileges", "yes"),
        ("PrivateTmp", "yes"),
        ("ProtectHome", "yes"),
    ] {
        assert_eq!(one(key), want, "{key}=");
    }
    let watchdog = seconds(one("WatchdogSec"));
    assert!(watchdog > 0, "WatchdogSec=0 turns the watchdog off");
    // Above the agent's default [agent] stop_timeout (2 min), or systemd kills a job's clean-up.
    let stop = seconds(one("TimeoutStopSec"));
    assert!(
        stop > 120,
        "TimeoutStopSec={stop}s is not above the 2 min stop_timeout"
    );

    // Never RemoveIPC=yes (nor DynamicUser=, which implies it): it would remove the running
    // cluster's shared memory when the agent, running as postgres, stops.
    for v in get("RemoveIPC") {
        assert!(matches!(v, "no" | "false" | "0" | "off"), "RemoveIPC={v}");
    }
    assert!(
        get("DynamicUser")
            .iter()
            .all(|v| matches!(*v, "no" | "false" | "0" | "off"))
    );
    assert!(
        text.contains("NEVER set RemoveIPC=yes") && text.contains("shared memory"),
        "the unit must say why RemoveIPC=yes is never set"
    );

    // The writable paths: the defaults of the repository, the spool and the drills' scratch,
    // and whatever pgward.toml.example sets for them.
    let rw: Vec<String> = get("ReadWritePaths")
        .iter()
        .flat_map(|v| v.split_whitespace())
        .map(|p| p.trim_start_matches('-').to_string())
        .collect();
    for want in [
        "/var/lib/pgward",
        "/var/spool/pgward",
        "/var/tmp/pgward-drill",
    ] {
        assert!(
            rw.iter().any(|p| p == want),
            "ReadWritePaths= lacks {want}: {rw:?}"
        );
    }
    let writable = |path: &str| rw.iter().any(|p| Path::new(path).starts_with(p));
    let example: toml::Value = toml::from_str(&read("pgward.toml.example")).unwrap();
    let mut paths = vec![];
    if let Some(p) = example["repo"]["url"]
        .as_str()
        .and_then(|url| url.strip_prefix("file://"))
    {
        paths.push(("[repo] url", p.to_string()));
    }
    for (table, key) in [
        ("wal", "spool_dir"),
        ("agent", "state_dir"),
        ("drill", "scratch_dir"),
    ] {
        if let Some(p) = example
            .get(table)
            .and_then(|t| t.get(key))
            .and_then(|v| v.as_str())
        {
            paths.push((key, p.to_string()));
        }
    }
    assert!(!paths.is_empty());
    for (what, p) in paths {
        assert!(
            writable(&p),
            "pgward.toml.example's {what} {p} is not in the unit's ReadWritePaths="
        );
    }
}

#[test]
fn example_config_parses() {
    pgward::config::Config::parse(&read("pgward.toml.example"), "deploy/pgward.toml.example")
        .unwrap_or_else(|e| panic!("{e:#}"));
}

#[test]
fn shipped_policy_is_bookedbarber_with_every_job_kind() {
    let shipped = read("policy.toml");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/bookedbarber.toml");
    assert_eq!(
        shipped,
        std::fs::read_to_string(&source).unwrap(),
        "deploy/policy.toml must be policies/bookedbarber.toml"
    );
    pgward::retention::policy::Policy::parse(&shipped, "deploy/policy.toml")
        .unwrap_or_else(|e| panic!("{e:#}"));
    let v: toml::Value = toml::from_str(&shipped).unwrap();
    let kinds: BTreeSet<&str> = v["job"]
        .as_array()
        .expect("[[job]]")
        .iter()
        .map(|j| j["kind"].as_str().unwrap())
        .collect();
    for kind in ["backup", "dump", "expire", "verify", "drill"] {
        assert!(kinds.contains(kind), "no {kind} job in the shipped policy");
    }
}
