//! `pgward status [--json] [--nagios]`: the verdict on top, then what it rests on — one
//! screen. It never takes the generic error path: whatever cannot be read (the configuration,
//! the repository) becomes the UNKNOWN verdict, so a monitoring check always gets its line and
//! its exit status. `main.rs` turns the level into the exit status (README, "Status").
//!
//! `--json` prints `{"format": 1, "verdict": {...}, ...the facts}`, a stable format: fields
//! are only ever added.

use crate::config::Config;
use crate::context::{CreateRepo, open_storage};
use crate::drill::report::{Verdict as DrillVerdict, secs};
use crate::output;
use crate::repo::label::rfc3339;
use crate::status::facts::{self, JobFacts, StatusInput};
use crate::status::verdict::{self, describe_interval};
use crate::status::{Level, Verdict};
use crate::units;
use chrono::{DateTime, SubsecRound as _, Utc};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the verdict and its facts as JSON (a stable format, README "Status").
    #[arg(long, conflicts_with = "nagios")]
    pub json: bool,
    /// One line `PGWARD OK - ...` with perfdata, and exit 0/1/2/3 as a Nagios/Icinga plugin.
    #[arg(long)]
    pub nagios: bool,
}

/// The version of `status --json`.
pub const FORMAT: u32 = 1;

/// `status --json`.
#[derive(Serialize)]
pub struct StatusJson<'a> {
    pub format: u32,
    pub verdict: &'a Verdict,
    #[serde(flatten)]
    pub facts: &'a StatusInput,
}

/// Gathers, judges and prints; returns the verdict's level for `main.rs` to exit with.
pub async fn run(config: Option<&Path>, args: &Args) -> Level {
    // Whole seconds: what the screen and the JSON show.
    let now = Utc::now().trunc_subsecs(0);
    let input = collect(config, now).await;
    let verdict = verdict::judge(&input, now);
    let text = if args.nagios {
        nagios_line(&input, &verdict) + "\n"
    } else if args.json {
        let doc = StatusJson {
            format: FORMAT,
            verdict: &verdict,
            facts: &input,
        };
        serde_json::to_string_pretty(&doc).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
            + "\n"
    } else {
        render_text(&input, &verdict, now)
    };
    if let Err(e) = output::stdout(&text) {
        tracing::warn!("cannot write the status to standard output: {e}");
    }
    verdict.level
}

/// The facts, whatever fails on the way.
async fn collect(config: Option<&Path>, now: DateTime<Utc>) -> StatusInput {
    let (config, path) = match Config::load(config) {
        Ok(c) => c,
        Err(e) => {
            return StatusInput::unreadable(
                "(no configuration)".into(),
                output::error_text(&e),
                now,
            );
        }
    };
    let path = std::path::absolute(&path).unwrap_or(path);
    match open_storage(&config, CreateRepo::No).await {
        Ok(storage) => facts::gather_from(&config, &path, Ok(storage.as_ref()), now).await,
        Err(e) => facts::gather_from(&config, &path, Err(output::error_text(&e)), now).await,
    }
}

/// How many reasons the one Nagios line names.
const NAGIOS_REASONS: usize = 3;

/// `PGWARD CRITICAL - reason; reason | rpo=0s;900;1800;0 backup_age=3600s;;;0`.
pub fn nagios_line(input: &StatusInput, v: &Verdict) -> String {
    let summary = if v.reasons.is_empty() {
        ok_summary(input)
    } else {
        // Worst first, and a few: old NRPE cuts plugin output at 1 KiB, and the screen and
        // --json have them all.
        let mut texts: Vec<String> = (v.reasons.iter().take(NAGIOS_REASONS))
            .map(|r| r.text.clone())
            .collect();
        if v.reasons.len() > NAGIOS_REASONS {
            texts.push(format!(
                "and {} more (pgward status)",
                v.reasons.len() - NAGIOS_REASONS
            ));
        }
        texts.join("; ")
    };
    // `|` starts perfdata, and a plugin's first line is one line.
    let summary = summary.replace('|', "/").replace('\n', " ");
    let mut perf = Vec::new();
    if let Some(a) = input
        .server
        .archiver
        .as_ref()
        .filter(|a| a.rpo_unmeasured.is_none())
    {
        let (bound, _) = verdict::rpo_bound(input);
        perf.push(format!(
            "rpo={:.0}s;{:.0};{:.0};0",
            a.rpo_seconds,
            bound,
            2.0 * bound
        ));
    }
    if let Some(repo) = &input.repo {
        if let Some(t) = repo.backups.iter().map(|b| b.stop_time).max() {
            let age = (input.generated_at - t).num_seconds().max(0);
            perf.push(format!("backup_age={age}s;;;0"));
        }
        perf.push(format!("backups={};;;0", repo.backups.len()));
        let gaps: usize = repo.timelines.iter().map(|t| t.gaps.len()).sum();
        perf.push(format!("wal_gaps={gaps};;;0"));
    }
    let mut line = format!("PGWARD {} - {summary}", v.level.as_str());
    if !perf.is_empty() {
        let _ = write!(line, " | {}", perf.join(" "));
    }
    line
}

/// What an OK line says: the newest backup, how far it recovers, the RPO.
fn ok_summary(input: &StatusInput) -> String {
    let Some(repo) = &input.repo else {
        return "nothing to judge".into();
    };
    let mut parts = Vec::new();
    if let Some(b) = repo.backups.iter().max_by_key(|b| b.stop_time) {
        let age = (input.generated_at - b.stop_time).num_seconds() as f64;
        parts.push(format!(
            "newest backup {} is {} old",
            b.label,
            units::span(age)
        ));
    }
    if let Some(r) = &repo.newest_backup_reach {
        parts.push(format!(
            "recoverable to {} on timeline {}",
            r.until, r.timeline
        ));
    }
    if let Some(a) = &input.server.archiver {
        parts.push(format!("RPO {}", units::span(a.rpo_seconds)));
    }
    let passed = input
        .drills
        .iter()
        .filter(|d| d.verdict == DrillVerdict::Passed)
        .count();
    if passed > 0 {
        parts.push(units::count(passed as u64, "drill passed", "drills passed"));
    }
    parts.join(", ")
}

/// The screen.
pub fn render_text(input: &StatusInput, v: &Verdict, now: DateTime<Utc>) -> String {
    let mut s = String::new();
    let ago = |t: DateTime<Utc>| {
        let secs = (now - t).num_seconds() as f64;
        if secs >= 0.0 {
            format!("{} ({} ago)", rfc3339(&t), units::span(secs))
        } else {
            format!("{} (in {})", rfc3339(&t), units::span(-secs))
        }
    };
    let _ = writeln!(s, "PGWARD {}  ({})", v.level.as_str(), rfc3339(&now));
    for r in &v.reasons {
        let _ = writeln!(s, "  {}: {}", r.level.as_str(), r.text);
    }
    if v.reasons.is_empty() {
        let _ = writeln!(s, "  {}", ok_summary(input));
    }

    let _ = writeln!(s, "\nRepository   {}", input.repository);
    if let Some(repo) = &input.repo {
        let _ = writeln!(
            s,
            "             PostgreSQL {}, system identifier {}",
            repo.pg_major, repo.system_identifier
        );
    }
    let _ = write!(s, "Archiving    ");
    match &input.server.archiver {
        Some(a) => {
            let _ = writeln!(
                s,
                "RPO {} ({} waiting); {} archived, {}",
                units::span(a.rpo_seconds),
                units::count(a.pending_segments.max(0) as u64, "segment", "segments"),
                a.archived_count,
                units::count(a.failed_count, "failure", "failures")
            );
            if let (Some(w), Some(t)) = (&a.last_archived_wal, a.last_archived_time) {
                let _ = writeln!(s, "             last archived {w} at {}", ago(t));
            }
            if let (Some(w), Some(t)) = (&a.last_failed_wal, a.last_failed_time) {
                let now_failing = if a.failing() { "  FAILING" } else { "" };
                let _ = writeln!(s, "             last failed {w} at {}{now_failing}", ago(t));
            }
        }
        None if input.server.conninfo_set => {
            let _ = writeln!(s, "(the server does not answer at [postgres] conninfo)");
        }
        None => {
            let _ = writeln!(s, "(not read: [postgres] conninfo is not set)");
        }
    }

    if let Some(repo) = &input.repo {
        let _ = writeln!(s, "\nRecoverable window");
        if repo.timelines.is_empty() {
            let _ = writeln!(s, "  (no WAL archived)");
        }
        for tl in &repo.timelines {
            match &tl.window {
                Some(w) => {
                    let end = match &w.hole {
                        Some(h) => format!("the hole at {h}"),
                        None => "end of contiguous WAL".into(),
                    };
                    let _ = writeln!(
                        s,
                        "  timeline {}: from {} ({}, backup {}) to {} (at least {}; {end})",
                        tl.timeline,
                        w.from_lsn,
                        rfc3339(&w.from_time),
                        w.from_backup,
                        w.to_lsn,
                        rfc3339(&w.to_time_at_least)
                    );
                }
                None => {
                    let _ = writeln!(
                        s,
                        "  timeline {}: no backup leads to it ({} archived)",
                        tl.timeline,
                        units::count(tl.segments, "segment", "segments")
                    );
                }
            }
            for r in &tl.ranges {
                let _ = writeln!(
                    s,
                    "    WAL  {} .. {}  {}  {} - {}",
                    r.first,
                    r.last,
                    units::count(r.segments, "segment", "segments"),
                    r.start_lsn,
                    r.end_lsn
                );
            }
            for g in &tl.gaps {
                let _ = writeln!(
                    s,
                    "    HOLE {} .. {}  {} missing  {} - {}",
                    g.first,
                    g.last,
                    units::count(g.segments, "segment", "segments"),
                    g.start_lsn,
                    g.end_lsn
                );
            }
        }
    }

    let _ = writeln!(s, "\nLast runs");
    let job_of = |kind: &str| input.policy.jobs.iter().find(|j| j.kind == kind);
    let job_note = |j: Option<&JobFacts>| -> String {
        let Some(j) = j else {
            return String::new();
        };
        let Some(st) = &j.state else {
            return if input.agent.present {
                format!("  [job {}: never ran]", j.name)
            } else {
                String::new()
            };
        };
        let last = match (st.last_success, st.last_failure) {
            (Some(ok), Some(bad)) if bad > ok => format!("FAILED {}", ago(bad)),
            (None, Some(bad)) => format!("FAILED {}", ago(bad)),
            (Some(ok), _) => format!("ok {}", ago(ok)),
            (None, None) => "running or never finished".into(),
        };
        let took = st
            .last_duration_seconds
            .map(|d| format!(", took {}", secs(d)))
            .unwrap_or_default();
        format!("  [job {}: {last}{took}]", j.name)
    };
    let repo = input.repo.as_ref();
    match repo.and_then(|r| r.backups.iter().max_by_key(|b| b.stop_time)) {
        Some(b) => {
            let _ = writeln!(
                s,
                "  backup  {}  {}  took {}  {} stored of {}{}",
                b.label,
                ago(b.stop_time),
                secs(b.duration_seconds),
                units::bytes(b.stored_bytes),
                units::bytes(b.total_bytes),
                job_note(job_of("backup"))
            );
        }
        None => {
            let _ = writeln!(s, "  backup  (none){}", job_note(job_of("backup")));
        }
    }
    match repo.and_then(|r| r.dumps.iter().max_by_key(|d| d.stop_time)) {
        Some(d) => {
            let _ = writeln!(
                s,
                "  dump    {}  {}  took {}  {}: {}{}",
                d.label,
                ago(d.stop_time),
                secs(d.duration_seconds),
                units::count(d.databases.len() as u64, "database", "databases"),
                d.databases.join(", "),
                job_note(job_of("dump"))
            );
        }
        None => {
            let _ = writeln!(s, "  dump    (none){}", job_note(job_of("dump")));
        }
    }
    for kind in ["expire", "verify"] {
        let note = job_note(job_of(kind));
        let note = match (note.is_empty(), input.agent.present) {
            (false, _) => note,
            (true, true) => "  (the policy has no such job)".to_string(),
            (true, false) => "  (no agent state: runs from cron are not recorded)".to_string(),
        };
        let _ = writeln!(s, "  {kind:<6}{note}");
    }
    match input.drills.first() {
        Some(d) => {
            let verdict = match d.verdict {
                DrillVerdict::Passed => "passed".to_string(),
                DrillVerdict::Failed => format!(
                    "FAILED in {}",
                    d.failed_phase.as_deref().unwrap_or("an unknown phase")
                ),
            };
            let _ = writeln!(
                s,
                "  drill   {}  {}  {verdict}  took {}{}",
                d.name,
                ago(d.started_at),
                secs(d.duration_seconds),
                job_note(job_of("drill"))
            );
        }
        None => {
            let _ = writeln!(s, "  drill   (none){}", job_note(job_of("drill")));
        }
    }

    if !input.drills.is_empty() {
        let _ = writeln!(s, "\nDrills (newest report of each)");
        let opt = |v: Option<f64>| v.map(secs).unwrap_or_else(|| "-".into());
        for d in &input.drills {
            let def = input.drill_definitions.iter().find(|x| x.name == d.name);
            let max = |m: Option<f64>| m.map(|m| format!(" (max {})", secs(m))).unwrap_or_default();
            let verdict = match d.verdict {
                DrillVerdict::Passed => "passed",
                DrillVerdict::Failed => "FAILED",
            };
            let _ = write!(
                s,
                "  {}  {}  {verdict}  {} {}  RTO {}{}  RPO {}{}",
                d.name,
                d.label,
                d.from,
                d.backup.as_deref().unwrap_or("(none chosen)"),
                opt(d.rto_seconds),
                max(def.and_then(|x| x.max_rto_seconds)),
                opt(d.rpo_seconds),
                max(def.and_then(|x| x.max_rpo_seconds)),
            );
            match (&d.failed_phase, &d.failure) {
                (Some(phase), Some(why)) => {
                    let _ = writeln!(s, "  (in {phase}: {why})");
                }
                _ => {
                    let _ = writeln!(s);
                }
            }
        }
    }

    let p = &input.policy;
    match (&p.origin, &p.error) {
        (Some(origin), _) => {
            let _ = writeln!(
                s,
                "\nNext scheduled runs (policy {origin}, time zone {}){}",
                p.timezone,
                if input.agent.present {
                    ""
                } else {
                    "; no agent state, so staleness is not judged"
                }
            );
            if p.jobs.is_empty() {
                let _ = writeln!(s, "  (the policy has no [[job]])");
            }
            for j in &p.jobs {
                let when = match (&j.schedule_error, j.next_run) {
                    (Some(e), _) => format!("invalid schedule: {e}"),
                    (None, Some(t)) => ago(t),
                    (None, None) => "never".into(),
                };
                let every = j
                    .interval_seconds
                    .map(|i| format!(" ({})", describe_interval(i)))
                    .unwrap_or_default();
                let _ = writeln!(
                    s,
                    "  {:<14} {:<7} `{}`{every}  next {when}",
                    j.name, j.kind, j.schedule
                );
            }
        }
        (None, Some(e)) => {
            let _ = writeln!(s, "\nNext scheduled runs: the policy cannot be read: {e}");
        }
        (None, None) => {}
    }

    let warnings: Vec<&String> = (input.repo.iter())
        .flat_map(|r| r.warnings.iter())
        .chain(input.warnings.iter())
        .collect();
    if !warnings.is_empty() {
        let _ = writeln!(s, "\nWarnings");
        for w in warnings {
            let _ = writeln!(s, "  {w}");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::facts::testing::{healthy, now, seg};
    use crate::status::judge;

    #[test]
    fn the_nagios_line_is_one_line_with_perfdata() {
        let ok = healthy();
        let v = judge(&ok, now());
        assert_eq!(
            nagios_line(&ok, &v),
            "PGWARD OK - newest backup 20261202T110000Z is 60 min old, recoverable to 0/A000000 \
             on timeline 1, RPO 0 s | rpo=0s;900;1800;0 backup_age=3600s;;;0 backups=1;;;0 \
             wal_gaps=0;;;0"
        );

        let mut bad = healthy();
        bad.server.archiver = None;
        bad.server.conninfo_set = false;
        let reach = bad
            .repo
            .as_mut()
            .unwrap()
            .newest_backup_reach
            .as_mut()
            .unwrap();
        reach.hole = Some(seg(7));
        reach.until = "0/7000000".parse().unwrap();
        bad.drills = vec![];
        bad.policy.jobs = vec![];
        let mut v = judge(&bad, now());
        // A reason with `|` or a newline cannot break the plugin's line.
        v.reasons.push(crate::status::Reason {
            level: Level::Warning,
            text: "a | b\nc".into(),
        });
        assert_eq!(
            nagios_line(&bad, &v),
            "PGWARD CRITICAL - WAL hole after the newest backup at 000000010000000000000007: \
             nothing after 0/6FFFFFF is recoverable; a / b c | backup_age=3600s;;;0 \
             backups=1;;;0 wal_gaps=0;;;0"
        );

        let mut gone = healthy();
        gone.repo = None;
        gone.server.archiver = None;
        gone.repository_error = Some("repository directory /r does not exist\nhint: x".into());
        let v = judge(&gone, now());
        assert_eq!(
            nagios_line(&gone, &v),
            "PGWARD UNKNOWN - the state cannot be read: repository directory /r does not exist; \
             the server does not answer at [postgres] conninfo: archiving and RPO are not judged"
        );
    }

    #[test]
    fn the_json_has_the_documented_top_level_fields() {
        let input = healthy();
        let v = judge(&input, now());
        let doc = serde_json::to_value(StatusJson {
            format: FORMAT,
            verdict: &v,
            facts: &input,
        })
        .unwrap();
        let keys: Vec<&str> = doc
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        let mut want = [
            "format",
            "verdict",
            "generated_at",
            "repository",
            "repo",
            "repository_error",
            "drills",
            "drill_definitions",
            "agent",
            "policy",
            "server",
            "warnings",
        ];
        want.sort();
        let mut keys = keys;
        keys.sort();
        assert_eq!(keys, want);
        assert_eq!(doc["format"], 1);
        assert_eq!(
            doc["verdict"],
            serde_json::json!({"level": "OK", "reasons": []})
        );
        assert_eq!(doc["generated_at"], "2026-12-02T12:00:00Z");
        assert_eq!(doc["repo"]["backups"][0]["start_lsn"], "0/3000028");
        assert_eq!(
            doc["repo"]["timelines"][0]["ranges"][0],
            serde_json::json!({
                "first": "000000010000000000000001",
                "last": "000000010000000000000009",
                "segments": 9,
                "start_lsn": "0/1000000",
                "end_lsn": "0/A000000",
            })
        );
    }

    #[test]
    fn the_screen_puts_the_verdict_on_top_and_names_every_hole() {
        let mut input = healthy();
        let tl = &mut input.repo.as_mut().unwrap().timelines[0];
        tl.gaps = vec![crate::status::facts::testing::range(5, 6)];
        let v = judge(&input, now());
        let text = render_text(&input, &v, now());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "PGWARD OK  (2026-12-02T12:00:00Z)", "{text}");
        assert!(
            text.contains(
                "    HOLE 000000010000000000000005 .. 000000010000000000000006  2 segments \
                 missing  0/5000000 - 0/7000000"
            ),
            "{text}"
        );
        assert!(
            text.contains("Archiving    RPO 0 s (0 segments waiting); 9 archived, 0 failures"),
            "{text}"
        );
    }
}
