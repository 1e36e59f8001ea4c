//! `pgward restore-dump [--label L] --db NAME (--to-db TARGET [--create] | --to-file PATH)
//! [--json]`: one database's stored dump, verified, into a database or as the original
//! `pg_dump -Fc` archive.
//!
//! The work is [`crate::dump::restore_db::restore_to_db`] and
//! [`crate::dump::restore::restore_to_file`]; this file only prints the result.

use crate::context::Context;
use crate::dump::programs::RestoreOptions;
use crate::dump::restore::{RestoreDumpRequest, restore_to_file};
use crate::dump::restore_db::{RestoreToDbRequest, restore_to_db};
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
    /// Restore into this database of the configured server (empty, or new with --create).
    #[arg(
        long,
        value_name = "TARGET",
        required_unless_present = "to_file",
        conflicts_with = "to_file"
    )]
    pub to_db: Option<String>,
    /// Create TARGET first (it must not exist).
    #[arg(long, requires = "to_db", conflicts_with = "clean")]
    pub create: bool,
    /// Accept a non-empty TARGET: drop each object the dump holds before creating it.
    #[arg(long, requires = "to_db")]
    pub clean: bool,
    /// Restore every object into TARGET's default tablespace, and leave globals.sql's
    /// tablespaces out (their locations are the source host's).
    #[arg(long, requires = "to_db")]
    pub no_tablespaces: bool,
    /// Make the restoring user own the objects, instead of the owners as dumped.
    #[arg(long, requires = "to_db")]
    pub no_owner: bool,
    /// Apply the dump's globals.sql (roles, tablespaces) first; those that exist are left.
    #[arg(long, requires = "to_db")]
    pub globals: bool,
    /// Check everything and say what would be done; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Write the archive (verified) to this new file, for `pg_restore`.
    #[arg(long, value_name = "PATH")]
    pub to_file: Option<PathBuf>,
    /// Print the result as one JSON object (a stable format).
    #[arg(long)]
    pub json: bool,
}

/// The `--json` output.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub label: String,
    pub database: String,
    pub key: String,
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
    pub dry_run: bool,
}

pub async fn run(ctx: &Context, args: &Args) -> Result<()> {
    let text = match (&args.to_db, &args.to_file) {
        (Some(target), _) => to_db(ctx, args, target).await?,
        (None, Some(path)) => to_file(ctx, args, path).await?,
        (None, None) => anyhow::bail!("restore-dump needs --to-db TARGET or --to-file PATH"),
    };
    output::report_done("restore-dump", &text);
    Ok(())
}

/// The `--json` output of `--to-db`.
#[derive(Debug, Serialize)]
pub struct DbSummary {
    pub label: String,
    pub database: String,
    pub key: String,
    pub target: String,
    pub bytes: u64,
    pub created: bool,
    pub dry_run: bool,
}

async fn to_db(ctx: &Context, args: &Args, target: &str) -> Result<String> {
    let request = RestoreToDbRequest {
        label: args.label.clone(),
        database: args.database.clone(),
        target: target.to_string(),
        create: args.create,
        options: RestoreOptions {
            no_owner: args.no_owner,
            clean: args.clean,
            no_tablespaces: args.no_tablespaces,
        },
        globals: args.globals,
        dry_run: args.dry_run,
    };
    let o = restore_to_db(ctx, &request).await?;
    let s = DbSummary {
        label: o.label,
        database: o.database,
        key: o.key,
        target: o.target,
        bytes: o.bytes,
        created: o.created,
        dry_run: o.dry_run,
    };
    Ok(if args.json {
        serde_json::to_string_pretty(&s)? + "\n"
    } else if s.dry_run {
        format!(
            "dry run: would restore database `{}` of dump {} ({}, {}) into {} `{}` with \
             pg_restore --single-transaction; nothing was changed\n",
            s.database,
            s.label,
            s.key,
            units::bytes(s.bytes),
            if s.created {
                "a new database"
            } else {
                "the existing database"
            },
            s.target
        )
    } else {
        format!(
            "database `{}` of dump {} restored into {}database `{}` ({} verified, one \
             transaction)\n",
            s.database,
            s.label,
            if s.created { "new " } else { "" },
            s.target,
            units::bytes(s.bytes)
        )
    })
}

async fn to_file(ctx: &Context, args: &Args, path: &std::path::Path) -> Result<String> {
    let request = RestoreDumpRequest {
        label: args.label.clone(),
        database: args.database.clone(),
        to_file: path.to_path_buf(),
        dry_run: args.dry_run,
    };
    let o = restore_to_file(ctx, &request).await?;
    let summary = Summary {
        label: o.label,
        database: o.database,
        key: o.key,
        path: o.path.display().to_string(),
        bytes: o.bytes,
        sha256: o.sha256,
        dry_run: o.dry_run,
    };
    Ok(if args.json {
        serde_json::to_string_pretty(&summary)? + "\n"
    } else if summary.dry_run {
        format!(
            "dry run: would write database `{}` of dump {} ({}, {}) to {}; nothing was written\n",
            summary.database,
            summary.label,
            summary.key,
            units::bytes(summary.bytes),
            summary.path
        )
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
    })
}
