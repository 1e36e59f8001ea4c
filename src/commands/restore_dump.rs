//! `pgward restore-dump [--label L] --db NAME --to-file PATH [--json]`: one database's stored
//! dump, verified, as the original `pg_dump -Fc` archive.
//!
//! The work is [`crate::dump::restore::restore_to_file`]; this file only prints the result.
//! (`--to-db`, which streams the archive into `pg_restore`, comes with the next part of
//! issue 11.)

use crate::context::Context;
use crate::dump::restore::{RestoreDumpRequest, restore_to_file};
use crate::output;
use crate::units;
use anyhow::Result;
use serde::Serialize;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The dump to read [default: the newest complete dump that holds the database].
    #[arg(long)]
    pub label: Option<String>,
    /// The database whose dump is restored.
    #[arg(long = "db", value_name = "NAME")]
    pub database: String,
    /// Write the archive (verified) to this new file, for `pg_restore`.
    #[arg(long, value_name = "PATH")]
    pub to_file: PathBuf,
    /// Print the result as one JSON object (a stable format).
    #[arg(long)]
    pub json: bool,
}

/// The `--json` output.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub label: String,
    pub database: String,
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
}

pub async fn run(ctx: &Context, args: &Args) -> Result<()> {
    let request = RestoreDumpRequest {
        label: args.label.clone(),
        database: args.database.clone(),
        to_file: args.to_file.clone(),
    };
    let o = restore_to_file(ctx, &request).await?;
    let summary = Summary {
        label: o.label,
        database: o.database,
        path: o.path.display().to_string(),
        bytes: o.bytes,
        sha256: o.sha256,
    };
    let text = if args.json {
        serde_json::to_string_pretty(&summary)? + "\n"
    } else {
        format!(
            "database `{}` of dump {} written to {} ({}, sha256 {} verified)\n\
             \x20 restore it with: pg_restore -j 4 -d <database> {}\n",
            summary.database,
            summary.label,
            summary.path,
            units::bytes(summary.bytes),
            summary.sha256,
            summary.path
        )
    };
    if let Err(e) = output::stdout(&text) {
        tracing::warn!(
            "{} is written but the summary could not be printed: {e}",
            summary.path
        );
    }
    Ok(())
}
