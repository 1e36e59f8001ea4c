//! A drill's report: `drills/<label>.json` in the repository, the only object a drill writes.
//!
//! The format is stable (fields are only ever added; `format` says which version wrote it) and
//! is what `drill --json` prints, what `info` reads for "last drills", and what the agent and
//! `status` judge. Times are RFC 3339 UTC, durations are seconds (fractional).
//!
//! The label is the UTC start second and the drill's name, `20261202T031500Z-weekly-latest`:
//! reports sort by time, and the name tells them apart at a glance. The label also names the
//! marker drill's restore point (`pgward-drill-<label>`).

use crate::pg::Lsn;
use crate::repo::label::rfc3339_time;
use crate::repo::layout;
use crate::storage::{PutOutcome, Storage};
use anyhow::{Context as _, Result, anyhow};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

pub const FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillReport {
    pub format: u32,
    pub label: String,
    /// The drill's name.
    pub drill: String,
    /// The drill file it came from.
    pub file: String,
    /// `backup` or `dump`.
    pub from: String,
    pub pgward_version: String,
    /// Of the scratch server's programs.
    pub postgres_version: String,
    pub host: String,
    #[serde(with = "rfc3339_time")]
    pub started_at: DateTime<Utc>,
    #[serde(with = "rfc3339_time")]
    pub finished_at: DateTime<Utc>,
    /// The backup or dump label restored (`None` when the drill failed before choosing one).
    pub backup: Option<String>,
    pub target: TargetReport,
    /// What recovery reached (backup drills that got that far).
    pub reached: Option<Reached>,
    /// A marker drill's markers and what the copy held.
    pub markers: Option<Markers>,
    pub phases: Vec<Phase>,
    /// Drill start → promoted server accepting connections at the target.
    pub rto_seconds: Option<f64>,
    /// Drill start − the last recovered commit (a backup drill), or − the dump's start.
    pub rpo_seconds: Option<f64>,
    pub checks: Vec<CheckResult>,
    pub verdict: Verdict,
    pub failure: Option<Failure>,
    /// Where `--keep` left the stopped scratch copy.
    pub kept: Option<String>,
    /// Things worth knowing that did not fail the drill.
    #[serde(default)]
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetReport {
    /// `marker`, `latest`, `immediate`, `time`, `name` or `dump`.
    pub kind: String,
    /// The time or restore point name asked, when the kind has one.
    pub value: Option<String>,
    /// For `latest`: the end of the contiguous archive when the drill was planned (the last
    /// segment recovery must reach).
    pub archive_end_segment: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reached {
    /// `pg_last_wal_replay_lsn()` when recovery stopped.
    pub lsn: Lsn,
    pub timeline: u32,
    /// `pg_last_xact_replay_timestamp()`: the newest commit recovered.
    #[serde(default, with = "opt_time")]
    pub last_commit: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Markers {
    pub database: String,
    pub table: String,
    pub restore_point: String,
    /// What `pg_create_restore_point` returned.
    pub restore_point_lsn: Lsn,
    /// The values committed before (A) and after (B) the restore point.
    pub a: String,
    pub b: String,
    /// What the copy held, paused at the target (`None`: not looked at).
    pub a_present: Option<bool>,
    pub b_present: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    /// `preflight`, `marker`, `restore`, `recovery`, `promote`, `checks`, `cleanup` (backup
    /// drills); `preflight`, `initdb`, `globals`, `restore`, `checks`, `cleanup` (dump drills).
    pub name: String,
    #[serde(with = "rfc3339_time")]
    pub started_at: DateTime<Utc>,
    pub seconds: f64,
    /// Bytes written (restore) or read (checks), when counted.
    pub bytes: Option<u64>,
    pub ok: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    /// `amcheck`, `read_all`, `checksums`, `sql: <query>`, `rows: <db>.<table>`, `max_rto`,
    /// `max_rpo`.
    pub name: String,
    pub status: CheckStatus,
    /// What it got (or why it was skipped).
    pub detail: String,
    pub seconds: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    Ok,
    Failed,
    Skipped,
}

impl CheckStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckStatus::Ok => "ok",
            CheckStatus::Failed => "FAILED",
            CheckStatus::Skipped => "skipped",
        }
    }
}

impl CheckResult {
    pub fn ok(name: impl Into<String>, detail: impl Into<String>, seconds: f64) -> CheckResult {
        CheckResult {
            name: name.into(),
            status: CheckStatus::Ok,
            detail: detail.into(),
            seconds,
        }
    }

    pub fn failed(name: impl Into<String>, detail: impl Into<String>, seconds: f64) -> CheckResult {
        CheckResult {
            name: name.into(),
            status: CheckStatus::Failed,
            detail: detail.into(),
            seconds,
        }
    }

    pub fn skipped(name: impl Into<String>, why: impl Into<String>) -> CheckResult {
        CheckResult {
            name: name.into(),
            status: CheckStatus::Skipped,
            detail: why.into(),
            seconds: 0.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Passed,
    Failed,
}

/// One report in brief, for `info`, `status` and the recovery report (the whole report is
/// `drills/<label>.json`). The JSON fields are documented and stable.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// The drill's name.
    pub name: String,
    /// The report's label (`drills/<label>.json`).
    pub label: String,
    /// `passed` or `failed`.
    pub verdict: Verdict,
    #[serde(with = "rfc3339_time")]
    pub started_at: DateTime<Utc>,
    #[serde(with = "rfc3339_time")]
    pub finished_at: DateTime<Utc>,
    pub duration_seconds: f64,
    /// `backup` or `dump`.
    pub from: String,
    /// The backup or dump label restored (`None` when it failed before choosing one).
    pub backup: Option<String>,
    /// `marker`, `latest`, `immediate`, `time`, `name` or `dump`.
    pub target: String,
    pub rto_seconds: Option<f64>,
    pub rpo_seconds: Option<f64>,
    /// The phase that failed, on failure.
    pub failed_phase: Option<String>,
    /// Why it failed, on failure.
    pub failure: Option<String>,
}

impl Summary {
    pub fn of(r: &DrillReport) -> Summary {
        Summary {
            name: r.drill.clone(),
            label: r.label.clone(),
            verdict: r.verdict,
            started_at: r.started_at,
            finished_at: r.finished_at,
            duration_seconds: (r.finished_at - r.started_at).num_milliseconds().max(0) as f64
                / 1000.0,
            from: r.from.clone(),
            backup: r.backup.clone(),
            target: r.target.kind.clone(),
            rto_seconds: r.rto_seconds,
            rpo_seconds: r.rpo_seconds,
            failed_phase: r.failure.as_ref().map(|f| f.phase.clone()),
            failure: r.failure.as_ref().map(|f| f.reason.clone()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    /// The phase that failed (a failed check: `checks`).
    pub phase: String,
    pub reason: String,
    /// The last lines of the scratch server's log, when it had started.
    pub server_log_tail: Option<String>,
}

mod opt_time {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&crate::repo::label::rfc3339(t)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| {
                DateTime::parse_from_rfc3339(&s)
                    .map(|t| t.to_utc())
                    .map_err(serde::de::Error::custom)
            })
            .transpose()
    }
}

/// The label of a drill named `name` that started at `t`.
pub fn label_for(t: DateTime<Utc>, name: &str) -> String {
    format!("{}-{name}", t.format("%Y%m%dT%H%M%SZ"))
}

/// Writes the report under its label. A report already there (the same drill started twice in
/// one second) is never replaced: the label gets `-2`, `-3`, … Returns the key written.
pub async fn store(storage: &dyn Storage, report: &mut DrillReport) -> Result<String> {
    let base = report.label.clone();
    for n in 1..=100u32 {
        if n > 1 {
            report.label = format!("{base}-{n}");
        }
        let key = layout::drill_report_key(&report.label);
        let mut body = serde_json::to_vec_pretty(report)?;
        body.push(b'\n');
        let body = Bytes::from(body);
        match storage
            .put_if_absent(&key, body)
            .await
            .with_context(|| format!("cannot write the drill report {key}"))?
        {
            PutOutcome::Written => return Ok(key),
            PutOutcome::AlreadyExists => continue,
        }
    }
    Err(anyhow!(
        "cannot find a free label for the drill report {base}"
    ))
}

/// The labels of every report, oldest first (labels sort by start time).
pub async fn list_labels(storage: &dyn Storage) -> Result<Vec<String>> {
    let listing = storage
        .list(layout::DRILLS_PREFIX)
        .await
        .with_context(|| format!("cannot list drill reports in {}", storage.describe()))?;
    let mut labels: Vec<String> = listing
        .iter()
        .filter_map(|o| layout::parse_drill_report_key(&o.key))
        .collect();
    labels.sort();
    Ok(labels)
}

/// One report; an unreadable one is an error naming its key.
pub async fn load(storage: &dyn Storage, label: &str) -> Result<DrillReport> {
    let key = layout::drill_report_key(label);
    let bytes = storage
        .get(&key)
        .await
        .with_context(|| format!("cannot read the drill report {key}"))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| anyhow!("the drill report {key} cannot be read: {e}"))
}

/// The newest report of each drill name, newest first, at most `limit`. Reports that cannot be
/// read are skipped with a warning each (a damaged old report must not hide the others).
pub async fn latest_per_drill(
    storage: &dyn Storage,
    limit: usize,
) -> Result<(Vec<DrillReport>, Vec<String>)> {
    let labels = list_labels(storage).await?;
    let loaded: Vec<Result<DrillReport>> = futures::stream::iter(labels.iter().rev().take(200))
        .map(|l| load(storage, l))
        .buffered(8)
        .collect()
        .await;
    let mut seen = std::collections::BTreeSet::new();
    let (mut out, mut warnings) = (Vec::new(), Vec::new());
    for r in loaded {
        match r {
            Ok(r) if seen.insert(r.drill.clone()) => out.push(r),
            Ok(_) => {}
            Err(e) => warnings.push(format!("{e:#}")),
        }
        if out.len() >= limit {
            break;
        }
    }
    Ok((out, warnings))
}

/// `12.3 s`, or `4 min 05 s` from a minute on.
pub(crate) fn secs(s: f64) -> String {
    if s < 60.0 {
        format!("{s:.1} s")
    } else {
        let whole = s.round() as u64;
        format!("{} min {:02} s", whole / 60, whole % 60)
    }
}

/// The report as text: the verdict line, the phases, the checks, and on failure the reason and
/// the server log's tail.
pub fn render_text(r: &DrillReport) -> String {
    let mut out = String::new();
    let verdict = match r.verdict {
        Verdict::Passed => "PASSED",
        Verdict::Failed => "FAILED",
    };
    let _ = writeln!(
        out,
        "drill {} {verdict} (report drills/{}.json)",
        r.drill, r.label
    );
    let _ = writeln!(
        out,
        "  {}         {}",
        r.from,
        r.backup.as_deref().unwrap_or("(none chosen)")
    );
    let target = match (&r.target.value, &r.target.archive_end_segment) {
        (Some(v), _) => format!("{} {v}", r.target.kind),
        (None, Some(end)) => format!("{} (archive ends in {end})", r.target.kind),
        (None, None) => r.target.kind.clone(),
    };
    let _ = writeln!(out, "  target         {target}");
    if let Some(reached) = &r.reached {
        let commit = reached
            .last_commit
            .map(|t| crate::repo::label::rfc3339(&t))
            .unwrap_or_else(|| "none replayed".into());
        let _ = writeln!(
            out,
            "  reached        {} on timeline {}, last commit {commit}",
            reached.lsn, reached.timeline
        );
    }
    if let Some(m) = &r.markers {
        let show = |v: Option<bool>| match v {
            Some(true) => "present",
            Some(false) => "absent",
            None => "not looked at",
        };
        let _ = writeln!(
            out,
            "  markers        A {} (expected present), B {} (expected absent), restore point {} at {}",
            show(m.a_present),
            show(m.b_present),
            m.restore_point,
            m.restore_point_lsn
        );
    }
    let rto = r.rto_seconds.map(secs).unwrap_or_else(|| "-".into());
    let rpo = r.rpo_seconds.map(secs).unwrap_or_else(|| "-".into());
    let _ = writeln!(out, "  RTO            {rto}");
    let _ = writeln!(out, "  RPO            {rpo}");
    let _ = writeln!(out, "  phases");
    for p in &r.phases {
        let bytes = p
            .bytes
            .map(|b| format!("  {}", crate::units::bytes(b)))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "    {:<12} {:>9}{bytes}{}",
            p.name,
            secs(p.seconds),
            if p.ok { "" } else { "  FAILED" }
        );
    }
    if !r.checks.is_empty() {
        let _ = writeln!(out, "  checks");
        for c in &r.checks {
            let _ = writeln!(out, "    {:<8} {}: {}", c.status.as_str(), c.name, c.detail);
        }
    }
    for n in &r.notes {
        let _ = writeln!(out, "  note: {n}");
    }
    if let Some(f) = &r.failure {
        let _ = writeln!(out, "  failed in {}: {}", f.phase, f.reason);
        if let Some(tail) = &f.server_log_tail {
            for line in tail.lines() {
                let _ = writeln!(out, "    | {line}");
            }
        }
    }
    if let Some(k) = &r.kept {
        let _ = writeln!(out, "  kept the stopped scratch copy in {k}");
    }
    out
}

/// Report fixtures for tests elsewhere (`info`'s last drills).
#[cfg(test)]
pub mod testing {
    use super::*;

    /// A passed or failed `latest` drill of `drill` that started 2026-12-02 03:15 UTC.
    pub fn sample(label: &str, drill: &str, verdict: Verdict) -> DrillReport {
        let t = DateTime::parse_from_rfc3339("2026-12-02T03:15:00Z")
            .unwrap()
            .to_utc();
        DrillReport {
            format: FORMAT,
            label: label.into(),
            drill: drill.into(),
            file: format!("restore-tests/{drill}.toml"),
            from: "backup".into(),
            pgward_version: "0.1.0".into(),
            postgres_version: "15.10".into(),
            host: "db1".into(),
            started_at: t,
            finished_at: t,
            backup: Some("20261202T020000Z".into()),
            target: TargetReport {
                kind: "latest".into(),
                value: None,
                archive_end_segment: Some("000000010000000000000009".into()),
            },
            reached: Some(Reached {
                lsn: "0/9000028".parse().unwrap(),
                timeline: 1,
                last_commit: Some(t),
            }),
            markers: None,
            phases: vec![],
            rto_seconds: Some(12.5),
            rpo_seconds: Some(30.0),
            checks: vec![CheckResult::skipped(
                "checksums",
                "the cluster has no data checksums",
            )],
            verdict,
            failure: None,
            kept: None,
            notes: vec![],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::sample;
    use super::*;
    use crate::storage::memory::MemoryStorage;

    #[tokio::test]
    async fn reports_round_trip_and_never_overwrite() {
        let s = MemoryStorage::new();
        let mut a = sample("20261202T031500Z-weekly", "weekly", Verdict::Passed);
        assert_eq!(
            store(&s, &mut a).await.unwrap(),
            "drills/20261202T031500Z-weekly.json"
        );
        let mut b = sample("20261202T031500Z-weekly", "weekly", Verdict::Failed);
        assert_eq!(
            store(&s, &mut b).await.unwrap(),
            "drills/20261202T031500Z-weekly-2.json"
        );
        assert_eq!(b.label, "20261202T031500Z-weekly-2");
        assert_eq!(load(&s, &a.label).await.unwrap(), a);
        let mut c = sample("20261201T031500Z-monthly", "monthly", Verdict::Passed);
        store(&s, &mut c).await.unwrap();
        s.put("drills/garbage.json", Bytes::from_static(b"{"))
            .await
            .unwrap();
        let (latest, warnings) = latest_per_drill(&s, 10).await.unwrap();
        let names: Vec<_> = latest.iter().map(|r| r.label.as_str()).collect();
        // garbage sorts after the dated labels, so it is read first and skipped.
        assert_eq!(
            names,
            ["20261202T031500Z-weekly-2", "20261201T031500Z-monthly"]
        );
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("drills/garbage.json"), "{warnings:?}");
    }

    #[test]
    fn text_names_the_verdict_and_the_failure() {
        let mut r = sample("L", "weekly", Verdict::Failed);
        r.failure = Some(Failure {
            phase: "recovery".into(),
            reason: "recovery stopped before the end of the archive".into(),
            server_log_tail: Some("FATAL:  boom".into()),
        });
        let text = render_text(&r);
        assert!(text.starts_with("drill weekly FAILED"), "{text}");
        assert!(
            text.contains("failed in recovery: recovery stopped"),
            "{text}"
        );
        assert!(text.contains("| FATAL:  boom"), "{text}");
        assert!(text.contains("skipped  checksums"), "{text}");
    }
}
