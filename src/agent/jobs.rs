//! One run of one job, in the agent's process, through the same library code as the command
//! line (`run_backup`, `run_dump`, `run_expire`, `verify`, `run_drill`), with the agent's
//! context (its event sink and its cancellation token). Returns a one-line summary, or the
//! error that made the run a failure.

use crate::context::Context;
use crate::drill::file;
use crate::drill::report::Verdict;
use crate::drill::run::{DrillOptions, run_drill};
use crate::retention::policy::{Job, JobKind};
use anyhow::{Result, bail};

/// What a run left for the metrics and the event beside success or failure.
#[derive(Debug, Default)]
pub struct RunFacts {
    pub summary: String,
    /// Problems a verify found.
    pub verify_problems: Option<usize>,
    /// What the job reported, for the `job_finished` event's `details` (a JSON object;
    /// bounded: labels and sizes, never file lists).
    pub details: serde_json::Map<String, serde_json::Value>,
}

fn details(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    match v {
        serde_json::Value::Object(m) => m,
        _ => serde_json::Map::new(),
    }
}

pub fn kind_name(kind: JobKind) -> &'static str {
    match kind {
        JobKind::Backup => "backup",
        JobKind::Dump => "dump",
        JobKind::Expire => "expire",
        JobKind::Verify => "verify",
        JobKind::Drill => "drill",
    }
}

/// The job's name: `name`, else its kind.
pub fn job_name(job: &Job) -> String {
    job.name
        .clone()
        .unwrap_or_else(|| kind_name(job.kind).to_string())
}

pub async fn run_job(ctx: &Context, job: &Job) -> Result<RunFacts> {
    match job.kind {
        JobKind::Backup => {
            let o = crate::backup::run_backup(ctx).await?;
            Ok(RunFacts {
                summary: format!("backup {} complete", o.label),
                details: details(serde_json::json!({
                    "label": o.label,
                    "timeline": o.timeline.0,
                    "start_lsn": o.start_lsn.to_string(),
                    "stop_lsn": o.stop_lsn.to_string(),
                    "total_bytes": o.stats.total_bytes,
                    "new_bytes": o.stats.new_bytes,
                    "stored_bytes": o.stats.stored_bytes,
                })),
                ..RunFacts::default()
            })
        }
        JobKind::Dump => {
            let req = crate::dump::DumpRequest {
                databases: job.databases.clone().unwrap_or_default(),
            };
            let o = crate::dump::run_dump(ctx, &req).await?;
            let m = &o.manifest;
            Ok(RunFacts {
                summary: format!("dump {} complete", m.label),
                details: details(serde_json::json!({
                    "label": m.label.to_string(),
                    "databases": m.databases.iter().map(|d| d.name.clone()).collect::<Vec<_>>(),
                })),
                ..RunFacts::default()
            })
        }
        JobKind::Expire => {
            let args = crate::commands::expire::Args {
                confirm: true,
                force: false,
                json: false,
            };
            let report = crate::commands::expire::run_expire(ctx, &args).await?;
            crate::commands::expire::deletion_failures(&report)?;
            let deleted = report.deleted.as_ref();
            let (manifests, wal) = (
                deleted.map_or(0, |d| d.manifests),
                deleted.map_or(0, |d| d.wal),
            );
            Ok(RunFacts {
                summary: format!("expire: {manifests} manifests, {wal} WAL files deleted"),
                details: details(serde_json::json!({
                    "deleted_manifests": manifests,
                    "deleted_wal": wal,
                })),
                ..RunFacts::default()
            })
        }
        JobKind::Verify => {
            let args = crate::commands::verify::Args {
                full: job.full,
                max_bytes: None,
                rotation: crate::verify::DEFAULT_ROTATION,
                listing_only: false,
                json: false,
            };
            let req = crate::commands::verify::request(ctx, &args).await;
            let report = crate::verify::verify(ctx.storage.as_ref(), &req).await?;
            let n = report.problems.len();
            if !report.ok {
                bail!("verify found {n} problem(s) in {}", report.repository);
            }
            Ok(RunFacts {
                summary: "verify: no problem".into(),
                verify_problems: Some(n),
                details: details(serde_json::json!({ "problems": n, "full": job.full })),
            })
        }
        JobKind::Drill => {
            let dir = file::tests_dir(&ctx.config, &ctx.config_path);
            let names: Vec<String> = job.drill.clone().unwrap_or_default();
            let drills = file::select(file::load_dir(&dir)?, &names, names.is_empty())?;
            let mut failed = Vec::new();
            let mut reports = Vec::new();
            for d in &drills {
                let (report, stored) = run_drill(ctx, d, &DrillOptions::default()).await;
                stored?;
                reports.push(serde_json::json!({
                    "drill": report.drill,
                    "label": report.label,
                    "passed": report.verdict != Verdict::Failed,
                    "rto_seconds": report.rto_seconds,
                    "rpo_seconds": report.rpo_seconds,
                }));
                if report.verdict == Verdict::Failed {
                    let why = report
                        .failure
                        .map(|f| format!("{}: {}", f.phase, f.reason))
                        .unwrap_or_default();
                    failed.push(format!("{} ({why})", d.name));
                }
            }
            if !failed.is_empty() {
                bail!("drill failed: {}", failed.join("; "));
            }
            Ok(RunFacts {
                summary: format!("{} drill(s) passed", drills.len()),
                details: details(serde_json::json!({ "drills": reports })),
                ..RunFacts::default()
            })
        }
    }
}
