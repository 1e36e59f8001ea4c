//! `pgward wal-push <path>`: the `archive_command`.
//!
//! Exit 0 only once the file is durable in the repository (or was already archived with the
//! same content). The whole call is bounded by `wal.timeout` so a stuck store fails fast and
//! PostgreSQL retries, instead of hanging while pg_wal fills the disk.
//! See <https://www.postgresql.org/docs/15/continuous-archiving.html#BACKUP-ARCHIVING-WAL>.

use crate::context::Context;
use crate::pg::WalFileName;
use crate::repo::identity::RepoIdentity;
use crate::wal::push::{self, Pusher};
use crate::wal::spool::PushSpool;
use anyhow::{Context as _, Result, anyhow};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::time::{Instant, timeout_at};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The WAL file to archive (PostgreSQL's %p, relative to the data directory).
    pub path: PathBuf,
}

pub async fn run(ctx: &Context, args: &Args) -> Result<()> {
    let limit = ctx.config.wal.timeout;
    let deadline = Instant::now() + limit;
    // Push-ahead must give up a little before the call's own deadline, so that a finished main
    // push is never reported as timed out.
    let ahead_deadline = deadline - (limit / 10).min(Duration::from_secs(1));
    match timeout_at(deadline, push(ctx, &args.path, ahead_deadline)).await {
        Ok(r) => r,
        Err(_) => Err(anyhow!(
            "wal-push of {} did not finish within wal.timeout ({}); nothing was reported archived\n\
             hint: the repository ({}) is unreachable or stuck; PostgreSQL will retry",
            args.path.display(),
            humantime::format_duration(limit),
            ctx.storage.describe()
        )),
    }
}

/// The WAL file name of `path`, refusing anything that is not a WAL file.
pub fn wal_name_of(path: &Path) -> Result<WalFileName> {
    let file = path
        .file_name()
        .and_then(|f| f.to_str())
        .ok_or_else(|| anyhow!("{} does not name a file", path.display()))?;
    WalFileName::parse(file).with_context(|| format!("refusing to archive {}", path.display()))
}

/// Aborts the push-ahead task when the call ends for any reason, including the caller dropping
/// this future at `wal.timeout`: nothing may keep pushing after the command has answered.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn push(ctx: &Context, path: &Path, ahead_deadline: Instant) -> Result<()> {
    let name = wal_name_of(path)?;
    if !path.is_file() {
        anyhow::bail!(
            "{} does not exist or is not a regular file (cwd {})",
            path.display(),
            std::env::current_dir()
                .map(|d| d.display().to_string())
                .unwrap_or_default()
        );
    }
    let spool = PushSpool::new(&ctx.spool_dir());
    if let Some(report) = push::verify_pushed_ahead(ctx.storage.as_ref(), &spool, path, &name).await
    {
        report.log(false);
        return Ok(());
    }
    let identity = RepoIdentity::require(ctx.storage.as_ref()).await?;
    let mut pusher = Pusher::new(
        ctx.storage.clone(),
        identity,
        ctx.config.repo.compression_level.0,
    );
    spool.cleanup_before(&name);

    let ahead_limit = ctx.config.wal.push_ahead;
    let backlog = if ahead_limit > 0 && name.segment().is_some() {
        push::ready_backlog(path, &name)
    } else {
        Vec::new()
    };
    // zstd threads only when this call's segment is the only one being compressed.
    pusher.multithread = backlog.is_empty();
    let ahead = (!backlog.is_empty()).then(|| {
        let (pusher, spool) = (pusher.clone(), PushSpool::new(&ctx.spool_dir()));
        AbortOnDrop(tokio::spawn(async move {
            push::push_ahead(&pusher, &spool, backlog, ahead_limit).await
        }))
    });

    let result = pusher.push_one(path, &name).await;
    if let Some(mut ahead) = ahead {
        // The main push decides the exit code; push-ahead gets whatever time is left and is
        // abandoned at the deadline (its records are written only after durable stores).
        if timeout_at(ahead_deadline, &mut ahead.0).await.is_err() {
            tracing::warn!("push-ahead abandoned at wal.timeout");
        }
    }
    result?.log(false);
    Ok(())
}
