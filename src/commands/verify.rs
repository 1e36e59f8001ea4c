//! `pgward verify [--full] [--max-bytes N] [--rotation N] [--listing-only] [--json]`: checks
//! the repository (see [`crate::verify`]) and prints what it found. The `--json` object is a
//! stable, documented format: fields are only ever added. Anything wrong makes the command
//! fail after the report is printed (main.rs decides the exit status).

use crate::context::Context;
use crate::output;
use crate::repo::label::Label;
use crate::repo::lock::hostname;
use crate::repo::snapshot::Snapshot;
use crate::retention::plan::{self, SnapshotInputs};
use crate::units;
use crate::verify::{self, DEFAULT_ROTATION, VerifyRequest};
use anyhow::{Context as _, Result, bail};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Read and hash every object, not a rotating sample.
    #[arg(long, conflicts_with_all = ["max_bytes", "listing_only"])]
    pub full: bool,
    /// Stored bytes a sampled run reads at most (e.g. 512MiB, 2GiB); objects that do not fit
    /// are read first by the next run.
    #[arg(long, value_name = "N", value_parser = units::parse_bytes)]
    pub max_bytes: Option<u64>,
    /// Consecutive sampled runs that together read every object once.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_ROTATION,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub rotation: u32,
    /// Only the checks made from listings and manifests; read no data, keep no state.
    #[arg(long)]
    pub listing_only: bool,
    /// Print the report as one JSON object (a stable format) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The verify request of `args` for this repository (its PITR base from the policy).
pub async fn request(ctx: &Context, args: &Args) -> VerifyRequest {
    VerifyRequest {
        full: args.full,
        max_bytes: args.max_bytes,
        rotation: args.rotation,
        jobs: ctx.config.backup.jobs,
        pitr_from: pitr_base(ctx).await,
        listing_only: args.listing_only,
    }
}

pub async fn run(ctx: &Context, args: &Args) -> Result<()> {
    let req = request(ctx, args).await;
    let report = verify::verify(ctx.storage.as_ref(), &req).await?;
    let text = if args.json {
        serde_json::to_string_pretty(&report)? + "\n"
    } else {
        report.text()
    };
    output::stdout(&text).context("cannot write the report to standard output")?;
    if !report.ok {
        bail!(
            "verify found {} in {}\nhint: the report names what each one breaks; `pgward \
             backup` (or `dump`) now makes a good copy again",
            units::count(report.problems.len() as u64, "problem", "problems"),
            report.repository
        );
    }
    Ok(())
}

/// Where the policy's recoverable window starts (the retention plan's PITR base): WAL before
/// it is what `expire` may have deleted, so recoverable ranges are checked from there on (and
/// each older kept backup for its own range). Without a usable policy or snapshot: `None`,
/// every backup's range onward is checked.
async fn pitr_base(ctx: &Context) -> Option<Label> {
    let policy = match ctx.policy() {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!("checking every backup's WAL onward: {e:#}");
            return None;
        }
    };
    let snapshot = Snapshot::load(ctx.storage.as_ref()).await.ok()?;
    let inputs = SnapshotInputs::of(&snapshot, &hostname());
    let p = plan::plan(
        &inputs.input(&snapshot, &[]),
        &policy.retention,
        chrono::Utc::now(),
    );
    p.pitr_base
}
