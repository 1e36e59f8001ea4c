//! `pgward report --html FILE [--days N]`: the recovery report (`crate::report`) written to
//! one self-contained HTML file, atomically (a reader never sees half a page).

use crate::context::Context;
use crate::fsutil;
use crate::output;
use crate::report;
use crate::status;
use anyhow::{Context as _, Result, bail};
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Write the report to this HTML file (replaced atomically).
    #[arg(long, value_name = "FILE")]
    pub html: PathBuf,
    /// How many days the timeline and the drill history show.
    #[arg(long, default_value_t = report::DEFAULT_DAYS, value_name = "N")]
    pub days: u32,
}

pub async fn run(ctx: &Context, args: &Args) -> Result<()> {
    if !(1..=report::model::MAX_DAYS).contains(&args.days) {
        bail!(
            "--days {} is out of range\nhint: give a number of days from 1 to {} (default {})",
            args.days,
            report::model::MAX_DAYS,
            report::DEFAULT_DAYS
        );
    }
    let now = chrono::Utc::now();
    let verdict = status::judge(&status::gather(ctx, now).await, now);
    let page = report::render(ctx, &verdict, args.days, now).await?;
    fsutil::write_atomic(&args.html, page.as_bytes()).with_context(|| {
        format!(
            "cannot write the report to {}\nhint: its directory must exist and be writable",
            args.html.display()
        )
    })?;
    output::report_done(
        "the report",
        &format!(
            "recovery report written to {} ({} bytes)\n",
            args.html.display(),
            page.len()
        ),
    );
    Ok(())
}
