//! `pgward info [--json]`: the repository's identity and what WAL is archived.
//!
//! The JSON form is a stable interface (documented in README.md): additions only.

use crate::context::Context;
use crate::drill::report::{self as drill_report, Verdict};
use crate::output;
use crate::pg::Lsn;
use crate::pg::Timeline;
use crate::repo::catalog::BackupSummary;
use crate::repo::catalog::InProgressMarker;
use crate::repo::dumps::DumpManifest;
use crate::repo::label::rfc3339;
use crate::repo::lock::hostname;
use crate::repo::pins::Pin;
use crate::repo::snapshot::Snapshot;
use crate::repo::wal_catalog::SegmentRange;
use crate::restore::plan::{self, PlanRequest};
use crate::restore::target::{RecoveryTarget, TimelineChoice};
use crate::retention::plan::{self as retention_plan, Decision, SnapshotInputs};
use crate::retention::policy::Policy;
use crate::units;
use anyhow::{Context as _, Result};
use serde::Serialize;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
pub struct InfoReport {
    pub repository: String,
    pub format_version: u32,
    pub system_identifier: String,
    pub pg_major: u32,
    pub wal_segment_size: u64,
    pub block_size: u64,
    pub created_at: String,
    pub timelines: Vec<TimelineReport>,
    /// WAL names archived more than once with different content.
    pub conflicts: Vec<String>,
    /// Complete base backups, oldest first.
    pub backups: Vec<BackupSummary>,
    /// Backups that are running, or died before writing their manifest.
    pub backups_in_progress: Vec<String>,
    /// The same, with what their markers say: who writes them and whether that process is
    /// still there.
    pub backups_in_progress_detail: Vec<InProgressReport>,
    /// Per timeline, the span a restore can reach: from the stop of the oldest backup that
    /// leads to the timeline to the end of the WAL archived contiguously from it.
    pub recoverable: Vec<RecoverableWindow>,
    /// Problems found while reading the archive (e.g. unusable history files).
    pub warnings: Vec<String>,
    /// Complete logical dumps (`pgward dump`), oldest first.
    pub dumps: Vec<DumpReport>,
    /// Labels of dumps that are running, or died before writing their manifest (not dumps).
    pub dumps_incomplete: Vec<String>,
    /// Pinned labels (`pgward pin`): never expired.
    pub pins: Vec<Pin>,
    /// What the configured retention policy decides now about each backup and dump (the
    /// plan `pgward expire` would carry out); `None` when the policy cannot be read (the
    /// reason is in `warnings`).
    pub retention: Option<RetentionInfo>,
    /// The newest report of each drill (`pgward drill`), newest first, at most
    /// [`LAST_DRILLS`]; reports that cannot be read are left out with a warning each.
    pub drills: Vec<drill_report::Summary>,
}

/// How many drills `info` shows.
pub const LAST_DRILLS: usize = 10;

/// The last drills, and why any report was left out. A repository whose drill reports cannot
/// be listed still gets its `info`: the reason becomes a warning.
async fn last_drills(
    storage: &dyn crate::storage::Storage,
) -> (Vec<drill_report::Summary>, Vec<String>) {
    match drill_report::latest_per_drill(storage, LAST_DRILLS).await {
        Ok((reports, warnings)) => (
            reports.iter().map(drill_report::Summary::of).collect(),
            warnings,
        ),
        Err(e) => (Vec::new(), vec![format!("no drill reports: {e:#}")]),
    }
}

#[derive(Debug, Serialize)]
pub struct RetentionInfo {
    /// The policy file, or `built-in policies/default.toml`.
    pub policy: String,
    pub backups: Vec<RetentionVerdict>,
    pub dumps: Vec<RetentionVerdict>,
}

/// Why the policy keeps an item, or that the next expire deletes it.
#[derive(Debug, Serialize)]
pub struct RetentionVerdict {
    pub label: String,
    #[serde(flatten)]
    pub decision: Decision,
    /// The reasons as sentences.
    pub why: String,
}

#[derive(Debug, Serialize)]
pub struct DumpReport {
    pub label: String,
    pub start_time: String,
    pub stop_time: String,
    pub server_version: String,
    pub pg_dump_version: String,
    /// Bytes pg_dump and pg_dumpall wrote, all objects.
    pub size: u64,
    pub stored_size: u64,
    pub databases: Vec<DumpDatabaseReport>,
}

#[derive(Debug, Serialize)]
pub struct DumpDatabaseReport {
    pub name: String,
    pub size: u64,
    pub stored_size: u64,
    pub toc_entries: u64,
}

impl DumpReport {
    fn of(m: &DumpManifest) -> DumpReport {
        DumpReport {
            label: m.label.to_string(),
            start_time: rfc3339(&m.start_time),
            stop_time: rfc3339(&m.stop_time),
            server_version: m.server_version.clone(),
            pg_dump_version: m.pg_dump_version.clone(),
            size: m.size(),
            stored_size: m.stored_size(),
            databases: m
                .databases
                .iter()
                .map(|d| DumpDatabaseReport {
                    name: d.name.clone(),
                    size: d.object.size,
                    stored_size: d.object.stored_size,
                    toc_entries: d.toc_entries,
                })
                .collect(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct InProgressReport {
    pub label: String,
    pub host: Option<String>,
    pub pid: Option<u32>,
    pub start_time: Option<String>,
    /// `running` (its process is alive on this host), `died` (it ran on this host and its
    /// process is gone), or `unknown` (another host, or an unreadable marker).
    pub state: &'static str,
}

impl InProgressReport {
    fn of(m: &InProgressMarker, this_host: &str) -> InProgressReport {
        InProgressReport {
            label: m.label.clone(),
            host: m.host.clone(),
            pid: m.pid,
            start_time: m.start_time.clone(),
            state: match m.writer_is_gone(this_host) {
                Some(true) => "died",
                Some(false) => "running",
                None => "unknown",
            },
        }
    }
}

#[derive(Debug, Serialize)]
pub struct RecoverableWindow {
    pub timeline: u32,
    pub from_backup: String,
    pub from_lsn: Lsn,
    pub from_time: String,
    pub to_lsn: Lsn,
}

#[derive(Debug, Serialize)]
pub struct TimelineReport {
    pub timeline: u32,
    pub segments: u64,
    pub stored_bytes: u64,
    pub has_history_file: bool,
    pub ranges: Vec<SegmentRange>,
    pub gaps: Vec<SegmentRange>,
    pub partial_files: Vec<String>,
    pub backup_files: Vec<String>,
}

/// Builds the report from the repository.
pub async fn report(ctx: &Context) -> Result<InfoReport> {
    let started = std::time::Instant::now();
    let loaded = Snapshot::load(ctx.storage.as_ref()).await?;
    tracing::debug!(
        backups = loaded.catalog.backups.len(),
        in_progress = loaded.catalog.in_progress.len(),
        timelines = loaded.wal.timelines.len(),
        histories = loaded.histories.len(),
        ms = started.elapsed().as_millis() as u64,
        "repository snapshot loaded"
    );
    let id = loaded.identity.clone();
    let catalog = &loaded.wal;
    let recoverable = recoverable_windows(&loaded);
    let mut warnings = loaded.warnings.clone();
    warnings.extend(fork_warnings(&loaded));
    let retention = match ctx.policy() {
        Ok(policy) => Some(retention_info(&loaded, &policy)),
        Err(e) => {
            warnings.push(format!("no retention verdicts: {e:#}"));
            None
        }
    };
    let (drills, drill_warnings) = last_drills(ctx.storage.as_ref()).await;
    warnings.extend(drill_warnings);
    let timelines = catalog
        .timelines
        .iter()
        .map(|(tli, tl)| {
            let all = tl.segments.values().flatten();
            TimelineReport {
                timeline: tli.0,
                segments: tl.segments.len() as u64,
                stored_bytes: all.map(|s| s.stored_bytes).sum::<u64>()
                    + tl.partials.iter().map(|s| s.stored_bytes).sum::<u64>(),
                has_history_file: !tl.history.is_empty(),
                ranges: catalog.ranges(*tli),
                gaps: catalog.gaps(*tli),
                partial_files: tl.partials.iter().map(|s| s.name.to_string()).collect(),
                backup_files: tl.backup_files.iter().map(|s| s.name.to_string()).collect(),
            }
        })
        .collect();
    let conflicts = catalog
        .conflicts()
        .iter()
        .map(|objs| objs[0].name.to_string())
        .collect();
    Ok(InfoReport {
        repository: ctx.storage.describe(),
        format_version: id.format_version,
        system_identifier: id.system_identifier.to_string(),
        pg_major: id.pg_major,
        wal_segment_size: id.wal_segment_size,
        block_size: id.block_size,
        created_at: id.created_at,
        timelines,
        conflicts,
        backups: loaded.catalog.backups.clone(),
        backups_in_progress: loaded.catalog.in_progress.clone(),
        backups_in_progress_detail: (loaded.catalog.markers.iter())
            .map(|m| InProgressReport::of(m, &hostname()))
            .collect(),
        recoverable,
        warnings,
        dumps: loaded.dumps.dumps.iter().map(DumpReport::of).collect(),
        dumps_incomplete: (loaded.dumps.incomplete.iter())
            .map(|l| l.to_string())
            .collect(),
        pins: loaded.pins.clone(),
        retention,
        drills,
    })
}

/// The retention plan's verdicts as of now (no holds: info takes no read leases).
fn retention_info(s: &Snapshot, policy: &Policy) -> RetentionInfo {
    let inputs = SnapshotInputs::of(s, &hostname());
    let p = retention_plan::plan(&inputs.input(s, &[]), &policy.retention, chrono::Utc::now());
    let verdict = |label: String, d: &Decision, what: &str| RetentionVerdict {
        label,
        why: d.sentence(&p.timezone, what),
        decision: d.clone(),
    };
    RetentionInfo {
        policy: policy.origin.clone(),
        backups: (p.backups.iter())
            .map(|b| verdict(b.label.to_string(), &b.decision, "backup"))
            .collect(),
        dumps: (p.dumps.iter())
            .map(|d| verdict(d.label.to_string(), &d.decision, "dump"))
            .collect(),
    }
}

/// Asks the restore planner, for each timeline, which is the oldest backup it would accept for
/// an end-of-archive restore onto that timeline and how far recovery could go: `info` and
/// `restore` can then never disagree about what is recoverable.
fn recoverable_windows(a: &Snapshot) -> Vec<RecoverableWindow> {
    let view = a.view();
    a.wal
        .timelines
        .keys()
        .filter_map(|tli| {
            a.catalog.backups.iter().find_map(|b| {
                let req = PlanRequest {
                    backup: Some(b.label.to_string()),
                    target: RecoveryTarget::EndOfArchive,
                    timeline: TimelineChoice::Number(*tli),
                    timeline_given: true,
                };
                let p = plan::plan(&view, &req).ok()?;
                Some(RecoverableWindow {
                    timeline: tli.0,
                    from_backup: b.label.to_string(),
                    from_lsn: b.stop_lsn,
                    from_time: rfc3339(&b.stop_time),
                    to_lsn: p.wal_available_until,
                })
            })
        })
        .collect()
}

/// Timelines that go on past a branch point (issue 9, item 11): a restore that follows the
/// branch — `latest` does by default — leaves out what the parent committed after it.
fn fork_warnings(a: &Snapshot) -> Vec<String> {
    plan::forks(&a.histories, &a.wal)
        .iter()
        .map(|f| {
            format!(
                "timeline {} goes on after timeline {} branched off it at {} (its WAL is \
                 archived up to {}): a restore that follows timeline {} (the default, \
                 --target-timeline latest, does) leaves out what timeline {} committed after \
                 {}; restore with --target-timeline {} for timeline {}'s history",
                f.parent.0,
                f.child.0,
                f.at,
                f.parent_last,
                f.child.0,
                f.parent.0,
                f.at,
                f.parent.0,
                f.parent.0
            )
        })
        .collect()
}

pub async fn run(ctx: &Context, args: &Args) -> Result<()> {
    let r = report(ctx).await?;
    let text = if args.json {
        serde_json::to_string_pretty(&r)? + "\n"
    } else {
        render_text(&r)
    };
    // The report is all `info` does, so a failed write fails it (a closed pipe does not).
    output::stdout(&text).context("cannot write the report to standard output")
}

pub fn render_text(r: &InfoReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "repository         {}", r.repository);
    let _ = writeln!(s, "system identifier  {}", r.system_identifier);
    let _ = writeln!(
        s,
        "postgresql         {} (WAL segment {}, backup block {})",
        r.pg_major,
        units::bytes(r.wal_segment_size),
        units::bytes(r.block_size)
    );
    let _ = writeln!(
        s,
        "created            {} (format {})",
        r.created_at, r.format_version
    );
    let _ = writeln!(s, "\nWAL archive");
    if r.timelines.is_empty() {
        let _ = writeln!(s, "  (empty)");
    }
    for t in &r.timelines {
        let _ = writeln!(
            s,
            "  timeline {}: {}, {} stored{}",
            Timeline(t.timeline).0,
            units::count(t.segments, "segment", "segments"),
            units::bytes(t.stored_bytes),
            if t.has_history_file {
                ", history file archived"
            } else {
                ""
            }
        );
        for g in &t.ranges {
            let _ = writeln!(
                s,
                "    {} .. {}  ({}, {} - {})",
                g.first,
                g.last,
                units::count(g.segments, "segment", "segments"),
                g.start_lsn,
                g.end_lsn
            );
        }
        for g in &t.gaps {
            let _ = writeln!(
                s,
                "    GAP {} .. {}  ({} missing)",
                g.first,
                g.last,
                units::count(g.segments, "segment", "segments")
            );
        }
        for p in &t.partial_files {
            let _ = writeln!(s, "    partial {p}");
        }
    }
    let _ = writeln!(s, "\nBase backups");
    if r.backups.is_empty() {
        let _ = writeln!(s, "  (none)");
    }
    for b in &r.backups {
        let _ = writeln!(
            s,
            "  {}  timeline {}  {} .. {}  lsn {} .. {}  size {}  stored {}{}",
            b.label,
            b.timeline.0,
            rfc3339(&b.start_time),
            rfc3339(&b.stop_time),
            b.start_lsn,
            b.stop_lsn,
            units::bytes(b.total_bytes),
            units::bytes(b.stored_bytes),
            if b.bad_pages > 0 {
                format!("  BAD PAGES: {}", b.bad_pages)
            } else {
                String::new()
            }
        );
    }
    for m in &r.backups_in_progress_detail {
        let who = match (&m.host, m.pid) {
            (Some(h), Some(p)) => format!("pid {p} on {h}"),
            _ => "an unreadable marker".to_string(),
        };
        let what = match m.state {
            "died" => "died before completing: not restorable; its marker can be removed",
            "running" => "in progress: not restorable until it completes",
            _ => "in progress, or died before completing: not restorable",
        };
        let _ = writeln!(s, "  {}  ({what}; {who})", m.label);
    }
    let _ = writeln!(s, "\nLogical dumps");
    if r.dumps.is_empty() {
        let _ = writeln!(s, "  (none)");
    }
    for d in &r.dumps {
        let names: Vec<&str> = d.databases.iter().map(|b| b.name.as_str()).collect();
        let _ = writeln!(
            s,
            "  {}  {} .. {}  {}: {}  size {}  stored {}",
            d.label,
            d.start_time,
            d.stop_time,
            units::count(names.len() as u64, "database", "databases"),
            names.join(", "),
            units::bytes(d.size),
            units::bytes(d.stored_size)
        );
    }
    for l in &r.dumps_incomplete {
        let _ = writeln!(
            s,
            "  {l}  (incomplete: running, or failed without cleaning up; not a dump)"
        );
    }
    if !r.pins.is_empty() {
        let _ = writeln!(s, "\nPins");
        for p in &r.pins {
            let _ = writeln!(
                s,
                "  {}  {}  (pinned {} by {})",
                p.label,
                p.reason.as_deref().unwrap_or("(no reason given)"),
                rfc3339(&p.created_at),
                p.created_by
            );
        }
    }
    if let Some(ret) = &r.retention {
        let _ = writeln!(s, "\nRetention ({})", ret.policy);
        if ret.backups.is_empty() && ret.dumps.is_empty() {
            let _ = writeln!(s, "  (nothing to decide)");
        }
        for (kind, list) in [("backup", &ret.backups), ("dump", &ret.dumps)] {
            for v in list {
                let verb = if v.decision.is_keep() {
                    "kept"
                } else {
                    "the next expire deletes it"
                };
                let _ = writeln!(s, "  {kind} {}: {verb}: {}", v.label, v.why);
            }
        }
    }
    render_drills(&mut s, &r.drills);
    let _ = writeln!(s, "\nRecoverable window");
    if r.recoverable.is_empty() {
        let _ = writeln!(s, "  (none: take a backup with `pgward backup`)");
    }
    for w in &r.recoverable {
        let _ = writeln!(
            s,
            "  timeline {}: from {} ({}, backup {}) to {} (end of contiguous WAL)",
            w.timeline, w.from_lsn, w.from_time, w.from_backup, w.to_lsn
        );
    }
    for w in &r.warnings {
        let _ = writeln!(s, "  warning: {w}");
    }
    for c in &r.conflicts {
        let _ = writeln!(s, "  CONFLICT: {c} is archived with two different contents");
    }
    s
}

/// The "Last drills" section: one line a drill.
fn render_drills(s: &mut String, drills: &[drill_report::Summary]) {
    use std::fmt::Write;
    let _ = writeln!(s, "\nLast drills");
    if drills.is_empty() {
        let _ = writeln!(s, "  (no drills yet — see restore-tests/README.md)");
    }
    let secs = |v: Option<f64>| v.map(drill_report::secs).unwrap_or_else(|| "-".into());
    for d in drills {
        let verdict = match d.verdict {
            Verdict::Passed => "passed",
            Verdict::Failed => "FAILED",
        };
        let _ = write!(
            s,
            "  {}  {}  {verdict}  {} {}  RTO {}  RPO {}",
            d.name,
            d.label,
            d.from,
            d.backup.as_deref().unwrap_or("(none chosen)"),
            secs(d.rto_seconds),
            secs(d.rpo_seconds)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drill::report::testing::sample;
    use crate::drill::report::{Failure, store};
    use crate::storage::Storage;
    use crate::storage::memory::MemoryStorage;

    #[tokio::test]
    async fn info_shows_the_newest_report_of_each_drill() {
        let s = MemoryStorage::new();
        let (drills, warnings) = last_drills(&s).await;
        assert!(
            drills.is_empty() && warnings.is_empty(),
            "{drills:?} {warnings:?}"
        );
        let mut text = String::new();
        render_drills(&mut text, &drills);
        assert!(
            text.contains("(no drills yet — see restore-tests/README.md)"),
            "{text}"
        );

        let mut old = sample("20261201T031500Z-weekly", "weekly", Verdict::Passed);
        let mut new = sample("20261202T031500Z-weekly", "weekly", Verdict::Failed);
        new.rto_seconds = None;
        new.rpo_seconds = None;
        new.backup = None;
        new.failure = Some(Failure {
            phase: "preflight".into(),
            reason: "WAL segment 000000010000000000000005 is missing".into(),
            server_log_tail: None,
        });
        let mut dump = sample("20261201T040000Z-daily", "daily", Verdict::Passed);
        dump.from = "dump".into();
        dump.target.kind = "dump".into();
        for r in [&mut old, &mut new, &mut dump] {
            store(&s, r).await.unwrap();
        }
        s.put(
            "drills/20261203T000000Z-x.json",
            bytes::Bytes::from_static(b"{"),
        )
        .await
        .unwrap();

        let (drills, warnings) = last_drills(&s).await;
        let rows: Vec<(&str, &str, Verdict, &str)> = drills
            .iter()
            .map(|d| {
                (
                    d.name.as_str(),
                    d.label.as_str(),
                    d.verdict,
                    d.target.as_str(),
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                (
                    "weekly",
                    "20261202T031500Z-weekly",
                    Verdict::Failed,
                    "latest"
                ),
                ("daily", "20261201T040000Z-daily", Verdict::Passed, "dump"),
            ]
        );
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("drills/20261203T000000Z-x.json"),
            "{warnings:?}"
        );

        // The JSON fields are the documented, stable ones.
        let json = serde_json::to_value(&drills[0]).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "name": "weekly",
                "label": "20261202T031500Z-weekly",
                "verdict": "failed",
                "started_at": "2026-12-02T03:15:00Z",
                "finished_at": "2026-12-02T03:15:00Z",
                "duration_seconds": 0.0,
                "from": "backup",
                "backup": null,
                "target": "latest",
                "rto_seconds": null,
                "rpo_seconds": null,
                "failed_phase": "preflight",
                "failure": "WAL segment 000000010000000000000005 is missing",
            })
        );

        let mut text = String::new();
        render_drills(&mut text, &drills);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "",
                "Last drills",
                "  weekly  20261202T031500Z-weekly  FAILED  backup (none chosen)  RTO -  RPO -  \
                 (in preflight: WAL segment 000000010000000000000005 is missing)",
                "  daily  20261201T040000Z-daily  passed  dump 20261202T020000Z  RTO 12.5 s  \
                 RPO 30.0 s",
            ]
        );
    }

    fn marker(host: Option<&str>, pid: Option<u32>) -> InProgressMarker {
        InProgressMarker {
            label: "20261201T120000Z".into(),
            host: host.map(str::to_string),
            pid,
            start_time: Some("2026-12-01T12:00:00Z".into()),
        }
    }

    #[test]
    fn an_in_progress_backup_whose_process_is_gone_is_said_to_have_died() {
        let here = "db1";
        // pid_max is at most 2^22 on Linux: this pid cannot exist.
        let cases = [
            (marker(Some(here), Some(999_999_999)), "died"),
            (marker(Some(here), Some(std::process::id())), "running"),
            (marker(Some("db2"), Some(999_999_999)), "unknown"),
            (marker(None, None), "unknown"),
        ];
        for (m, want) in cases {
            assert_eq!(InProgressReport::of(&m, here).state, want, "{m:?}");
        }
    }
}
