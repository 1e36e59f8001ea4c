//! `pgward drill [NAME]... [--all] [--file PATH] [--json] [--keep]`: run restore drills and
//! store their reports (`drills/<label>.json`). The work is [`crate::drill::run::run_drill`].
//!
//! Drills run one after another (each restores a full copy; two at once would need twice the
//! disk and fight over the same CPUs). `--json` prints `{"passed": bool, "drills": [report,
//! ...]}` with each report as stored (a stable format: fields are only ever added). The exit
//! status is 0 only when every drill passed.

use crate::context::Context;
use crate::drill::file::{self, Drill};
use crate::drill::report::{self, DrillReport, Verdict};
use crate::drill::run::{DrillOptions, run_drill};
use crate::output;
use anyhow::{Result, bail};
use serde::Serialize;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The drills to run, by name (`name` in their file under `[drill] tests`).
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,
    /// Run every drill under `[drill] tests`.
    #[arg(long, conflicts_with = "file")]
    pub all: bool,
    /// Run the drill in this file (anywhere) instead.
    #[arg(long, value_name = "PATH", conflicts_with = "names")]
    pub file: Option<PathBuf>,
    /// Print the reports as JSON.
    #[arg(long)]
    pub json: bool,
    /// Leave the stopped scratch copy of each drill for a look (and say where).
    #[arg(long)]
    pub keep: bool,
}

#[derive(Debug, Serialize)]
struct JsonOutput<'a> {
    passed: bool,
    drills: &'a [DrillReport],
}

pub async fn run(ctx: &Context, args: &Args) -> Result<()> {
    let drills: Vec<Drill> = match &args.file {
        Some(path) => vec![Drill::load(path)?],
        None => {
            let dir = file::tests_dir(&ctx.config, &ctx.config_path);
            file::select(file::load_dir(&dir)?, &args.names, args.all)?
        }
    };
    let opts = DrillOptions {
        keep: args.keep,
        exe: None,
    };
    let mut reports = Vec::new();
    let mut store_errors = Vec::new();
    for drill in &drills {
        if ctx.cancel.is_cancelled() {
            break;
        }
        let (report, stored) = run_drill(ctx, drill, &opts).await;
        if let Err(e) = stored {
            store_errors.push(format!("{e:#}"));
        }
        if !args.json {
            output::report_done("the drill", &(report::render_text(&report) + "\n"));
        }
        reports.push(report);
    }
    let passed = reports.len() == drills.len()
        && reports.iter().all(|r| r.verdict == Verdict::Passed)
        && store_errors.is_empty();
    if args.json {
        let out = JsonOutput {
            passed,
            drills: &reports,
        };
        output::report_done("the drill", &(serde_json::to_string_pretty(&out)? + "\n"));
    }
    if !store_errors.is_empty() {
        bail!(
            "a drill report could not be stored (the drill's verdict is printed above):\n{}",
            store_errors.join("\n")
        );
    }
    let failed: Vec<&str> = reports
        .iter()
        .filter(|r| r.verdict == Verdict::Failed)
        .map(|r| r.drill.as_str())
        .collect();
    if !failed.is_empty() {
        bail!(
            "{} of {} drill(s) failed: {}",
            failed.len(),
            drills.len(),
            failed.join(", ")
        );
    }
    if reports.len() < drills.len() {
        bail!(
            "interrupted after {} of {} drill(s)",
            reports.len(),
            drills.len()
        );
    }
    Ok(())
}
