//! `pgward gc [--json] [--grace DURATION]`: block garbage collection. Sweeps the marks older
//! than the grace period (deleting the blocks still unreferenced), then marks the blocks that
//! are unreferenced now; see `retention::gc` for the protocol. `expire --confirm` runs the
//! same two steps.
//!
//! The JSON form (`{"sweep": {...}, "mark": {...}}`, the fields of `SweepOutcome` and
//! `MarkOutcome`) is a stable interface: additions only.

use crate::context::Context;
use crate::output;
use crate::retention::gc::{self, Gc, MarkOutcome, SweepOutcome};
use crate::units;
use anyhow::{Context as _, Result, bail};
use serde::Serialize;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// How old an unreferenced block must be to be marked, and a mark to be swept (the
    /// policy's `[retention] gc_grace`, default 24h).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub grace: Option<Duration>,
}

#[derive(Debug, Serialize)]
pub struct GcReport {
    pub sweep: SweepOutcome,
    pub mark: MarkOutcome,
}

pub async fn run(ctx: &Context, args: &Args) -> Result<()> {
    let run = Gc {
        storage: &ctx.storage,
        events: &ctx.events,
        clock: crate::clock::system(),
        grace: match args.grace {
            Some(g) => g,
            None => ctx.policy()?.retention.gc_grace,
        },
    };
    let sweep = gc::sweep(&run).await?;
    let mark = gc::mark(&run).await?;
    let report = GcReport { sweep, mark };
    let text = if args.json {
        serde_json::to_string_pretty(&report)? + "\n"
    } else {
        render_text(&report)
    };
    output::stdout(&text).context("cannot write the report to standard output")?;
    if let Some((key, why)) = report.sweep.failed.first() {
        bail!(
            "{} blocks could not be deleted (first: {key}: {why}); their marks stay\n\
             hint: run gc again; it retries them",
            report.sweep.failed.len()
        );
    }
    Ok(())
}

pub fn render_text(r: &GcReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let w = &r.sweep;
    match &w.deferred {
        Some(why) => {
            let _ = writeln!(s, "sweep   deferred: {why}");
        }
        None => {
            let _ = writeln!(
                s,
                "sweep   {} blocks deleted ({}); kept {} referenced again and {} written again; \
                 {} marks done, {} pending",
                w.deleted,
                units::bytes(w.deleted_bytes),
                w.kept_referenced,
                w.kept_rewritten,
                w.marks_removed,
                w.marks_pending
            );
        }
    }
    let m = &r.mark;
    let _ = writeln!(
        s,
        "mark    {} blocks marked ({}){}; unreferenced but younger than the grace: {}, \
         already marked: {}, undated: {}",
        m.marked,
        units::bytes(m.marked_bytes),
        m.mark
            .as_ref()
            .map(|id| format!(" in gc/{id}"))
            .unwrap_or_default(),
        m.unreferenced_young,
        m.already_marked,
        m.unreferenced_undated
    );
    s
}
