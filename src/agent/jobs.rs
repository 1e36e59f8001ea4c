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

/// What a run left for the metrics beside success or failure.
#[derive(Debug, Default)]
pub struct RunFacts {
    pub summary: String,
    /// Problems a verify found.
    pub verify_problems: Option<usize>,
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
                ..RunFacts::default()
            })
        }
        JobKind::Dump => {
            let req = crate::dump::DumpRequest {
                databases: job.databases.clone().unwrap_or_default(),
            };
            let o = crate::dump::run_dump(ctx, &req).await?;
            Ok(RunFacts {
                summary: format!("dump {} complete", o.manifest.label),
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
            Ok(RunFacts {
                summary: format!(
                    "expire: {} manifests, {} WAL files deleted",
                    deleted.map_or(0, |d| d.manifests),
                    deleted.map_or(0, |d| d.wal)
                ),
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
            })
        }
        JobKind::Drill => {
            let dir = file::tests_dir(&ctx.config, &ctx.config_path);
            let names: Vec<String> = job.drill.iter().cloned().collect();
            let drills = file::select(file::load_dir(&dir)?, &names, names.is_empty())?;
            let mut failed = Vec::new();
            for d in &drills {
                let (report, stored) = run_drill(ctx, d, &DrillOptions::default()).await;
                stored?;
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
                ..RunFacts::default()
            })
        }
    }
}
