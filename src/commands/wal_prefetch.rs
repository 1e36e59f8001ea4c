//! `pgward wal-prefetch <name>` (hidden): the detached prefetcher that `wal-fetch` starts.
//!
//! Downloads the `wal.prefetch` segments after `name` on the same timeline into the fetch spool,
//! verified, then exits. At most one runs per spool (an exclusive lock on `prefetch.lock`).

use crate::commands::NotArchived;
use crate::context::Context;
use crate::pg::{WalFileName, WalSegmentName};
use crate::repo::identity::RepoIdentity;
use crate::wal::fetch;
use crate::wal::spool::FetchSpool;
use anyhow::{Context as _, Result};
use std::fs::File;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The segment just fetched; prefetching starts after it.
    pub after: String,
}

/// Parallel downloads; WAL replay is single-threaded, so a few keep well ahead of it.
const PARALLEL: usize = 4;

pub async fn run(ctx: &Context, args: &Args) -> Result<()> {
    let after = WalSegmentName::parse(&args.after)?;
    let spool = FetchSpool::new(&ctx.spool_dir());
    std::fs::create_dir_all(spool.dir())
        .with_context(|| format!("cannot create {}", spool.dir().display()))?;
    let lock = File::create(spool.lock_path())?;
    if lock.try_lock().is_err() {
        return Ok(());
    }
    let id = RepoIdentity::require(ctx.storage.as_ref()).await?;
    let seg_size = id.wal_segment_size;
    let mut wanted = Vec::new();
    let mut next = after;
    for _ in 0..ctx.config.wal.prefetch {
        next = next.next(seg_size);
        let name = WalFileName::Segment(next);
        if spool.find(&name).is_none() {
            wanted.push(name);
        }
    }
    let storage = ctx.storage.clone();
    for chunk in wanted.chunks(PARALLEL) {
        let mut tasks = tokio::task::JoinSet::new();
        for name in chunk {
            let name = name.clone();
            let storage = storage.clone();
            let dir = spool.dir().to_path_buf();
            tasks.spawn(async move {
                let (key, sha, _) = fetch::locate(storage.as_ref(), &name).await?;
                let data = storage.get(&key).await?;
                let dest = dir.join(format!("{name}-{sha}"));
                tokio::task::spawn_blocking(move || fetch::write_verified(&data, &sha, &dest))
                    .await??;
                Ok::<_, anyhow::Error>(())
            });
        }
        let mut reached_end = false;
        while let Some(res) = tasks.join_next().await {
            match res? {
                Ok(()) => {}
                Err(e) if e.is::<NotArchived>() => reached_end = true,
                Err(e) => tracing::warn!("prefetch failed: {e:#}"),
            }
        }
        if reached_end {
            break;
        }
    }
    drop(lock);
    Ok(())
}
