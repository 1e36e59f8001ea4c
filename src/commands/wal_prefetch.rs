//! `pgward wal-prefetch <name>` (hidden): the detached prefetcher that `wal-fetch` starts; the
//! work is in `wal::prefetch`.

use crate::context::Context;
use crate::pg::WalSegmentName;
use anyhow::Result;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The segment just fetched; prefetching starts after it.
    pub after: String,
}

pub async fn run(ctx: &Context, args: &Args) -> Result<()> {
    crate::wal::prefetch::run(ctx, WalSegmentName::parse(&args.after)?).await
}
