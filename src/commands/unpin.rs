//! `pgward unpin LABEL`: removes the pin; the label is then subject to the policy again.

use crate::context::Context;
use crate::output;
use crate::repo::label::Label;
use crate::repo::pins;
use anyhow::{Context as _, Result, bail};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The pinned label.
    pub label: String,
}

pub async fn run(ctx: &Context, args: &Args) -> Result<()> {
    let label = Label::parse(&args.label).map_err(anyhow::Error::msg)?;
    if !pins::remove(ctx.storage.as_ref(), label.as_str()).await? {
        bail!(
            "{label} is not pinned in {}\nhint: `pgward info` lists the pins",
            ctx.storage.describe()
        );
    }
    output::stdout(&format!(
        "unpinned {label}: the retention policy decides about it again\n"
    ))
    .context("cannot write to standard output")
}
