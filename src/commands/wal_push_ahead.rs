//! `pgward wal-push-ahead <pg_wal>` (hidden): the detached background pusher that `wal-push`
//! starts when the archiver has a backlog. At most one runs per spool (an exclusive lock on
//! `pusher.lock`); it exits when the archiver is idle or caught up. See `wal::background`.

use crate::commands::wal_push::pusher_for;
use crate::context::Context;
use crate::wal::background::{self, Limits};
use crate::wal::detached;
use crate::wal::spool::PushSpool;
use anyhow::Result;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The cluster's pg_wal directory (absolute).
    pub wal_dir: PathBuf,
}

pub async fn run(ctx: &Context, args: &Args) -> Result<()> {
    let spool = PushSpool::new(&ctx.spool_dir());
    let Some(lock) = detached::take_lock(&spool.pusher_lock_path())? else {
        return Ok(());
    };
    let mut pusher = pusher_for(ctx).await?;
    // One single-threaded encode per core: several files at once use the cores better than
    // zstd's own threads on one file, and keep memory per encode small.
    pusher.multithread = false;
    let limits = Limits {
        window: ctx.config.wal.push_ahead,
        parallel: pusher.cores as usize,
        per_push: ctx.config.wal.timeout,
    };
    background::run(&pusher, &spool, &args.wal_dir, &limits).await;
    drop(lock);
    Ok(())
}
