//! `pgward pin LABEL [--reason TEXT]`: a pinned backup or dump is never expired and keeps its
//! own WAL range. The label must be a complete backup or dump in the repository.

use crate::context::Context;
use crate::output;
use crate::repo::label::Label;
use crate::repo::lock::hostname;
use crate::repo::pins::{self, Pin};
use crate::repo::snapshot::Snapshot;
use anyhow::{Context as _, Result, bail};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The backup or dump label (`pgward info` lists them).
    pub label: String,
    /// Why it is pinned, shown by `info` and `expire` ("before migration").
    #[arg(long)]
    pub reason: Option<String>,
}

pub async fn run(ctx: &Context, args: &Args) -> Result<()> {
    let label = Label::parse(&args.label).map_err(anyhow::Error::msg)?;
    let snap = Snapshot::load(ctx.storage.as_ref()).await?;
    let what = what_is(&snap, &label, &ctx.storage.describe())?;
    let pin = Pin {
        label: label.clone(),
        reason: args.reason.clone(),
        created_at: chrono::Utc::now(),
        created_by: format!("{} pid {}", hostname(), std::process::id()),
    };
    pins::add(ctx.storage.as_ref(), &pin).await?;
    output::stdout(&format!(
        "pinned {what} {label}{}: expire never deletes it\n",
        args.reason
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default()
    ))
    .context("cannot write to standard output")
}

/// "backup" or "dump", or why the label cannot be pinned.
fn what_is(snap: &Snapshot, label: &Label, repo: &str) -> Result<&'static str> {
    let backup = snap.catalog.find(label.as_str()).is_some();
    let dump = snap.dumps.dumps.iter().any(|d| &d.label == label);
    match (backup, dump) {
        (true, true) => Ok("backup and dump"),
        (true, false) => Ok("backup"),
        (false, true) => Ok("dump"),
        _ if snap.catalog.in_progress.iter().any(|l| l == label.as_str()) => bail!(
            "{label} is a backup in progress (or one that died), not a complete backup: \
             only complete backups and dumps can be pinned\nhint: pin it once it completes"
        ),
        _ if snap.dumps.incomplete.contains(label) => bail!(
            "{label} is an incomplete dump (running, or died without a manifest): only \
             complete backups and dumps can be pinned"
        ),
        _ => {
            bail!("{label} is no complete backup or dump in {repo}\nhint: `pgward info` lists them")
        }
    }
}
