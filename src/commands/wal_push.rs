//! `pgward wal-push <path>`: the `archive_command`.
//!
//! Exit 0 only once the file is durable in the repository (or was already archived with the
//! same content). The whole call is bounded by `wal.timeout` so a stuck store fails fast and
//! PostgreSQL retries, instead of hanging while pg_wal fills the disk.
//!
//! With `wal.push_ahead > 0` and a backlog, the call starts the detached background pusher
//! (`wal-push-ahead`, see `wal::background`) and a later call finds its file already stored and
//! recorded. Without the binary at hand (library callers), push-ahead runs inside the call.
//! See <https://www.postgresql.org/docs/15/continuous-archiving.html#BACKUP-ARCHIVING-WAL>.

use crate::context::Context;
use crate::pg::WalFileName;
use crate::repo::identity::RepoIdentity;
use crate::wal::detached::{self, Log};
use crate::wal::push::{self, Pusher};
use crate::wal::spool::PushSpool;
use anyhow::{Context as _, Result, anyhow};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::time::{Instant, timeout_at};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The WAL file to archive (PostgreSQL's %p, relative to the data directory).
    pub path: PathBuf,
    /// Archive a segment of a running server's pg_wal that PostgreSQL has not marked ready
    /// (only when you know the file is complete).
    #[arg(long)]
    pub force: bool,
}

pub async fn run(ctx: &Context, args: &Args, exe: Option<&Path>) -> Result<()> {
    let limit = ctx.config.wal.timeout;
    let deadline = Instant::now() + limit;
    // Push-ahead must give up a little before the call's own deadline, so that a finished main
    // push is never reported as timed out.
    let ahead_deadline = deadline - (limit / 10).min(Duration::from_secs(1));
    if !args.force {
        push::refuse_unfinished_segment(&args.path)?;
    }
    match timeout_at(deadline, push(ctx, &args.path, ahead_deadline, exe)).await {
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

async fn push(
    ctx: &Context,
    path: &Path,
    ahead_deadline: Instant,
    exe: Option<&Path>,
) -> Result<()> {
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
    let ahead_limit = ctx.config.wal.push_ahead;
    let pushes_ahead = ahead_limit > 0 && name.segment().is_some();
    // With the binary at hand, push-ahead runs in a detached background pusher; without it
    // (library callers), inside this call.
    let background = exe.filter(|_| pushes_ahead);
    if let Some(report) = push::verify_pushed_ahead(ctx.storage.as_ref(), &spool, path, &name).await
    {
        ctx.events.emit(&report.event(false));
        if let Some(exe) = background
            && !push::ready_backlog(path, &name).is_empty()
        {
            start_background_pusher(ctx, &spool, path, exe);
        }
        return Ok(());
    }
    // A pusher (the background one, or another call) may be storing this very file right now:
    // wait for it, then look for its record again.
    let mut claim = None;
    if pushes_ahead {
        match spool.claim(&name).await {
            Ok(c) => claim = Some(c),
            Err(e) => tracing::warn!(wal = %name, "cannot claim the file in the spool: {e:#}"),
        }
        if let Some(report) =
            push::verify_pushed_ahead(ctx.storage.as_ref(), &spool, path, &name).await
        {
            ctx.events.emit(&report.event(false));
            return Ok(());
        }
    }
    let mut pusher = pusher_for(ctx).await?;
    spool.cleanup_before(&name);

    let backlog = if pushes_ahead {
        push::ready_backlog(path, &name)
    } else {
        Vec::new()
    };
    // zstd threads only when this call's segment is the only one being compressed.
    pusher.multithread = backlog.is_empty();
    let ahead = match background {
        _ if backlog.is_empty() => None,
        Some(exe) => {
            start_background_pusher(ctx, &spool, path, exe);
            None
        }
        None => {
            let (pusher, spool) = (pusher.clone(), spool.clone());
            Some(AbortOnDrop(tokio::spawn(async move {
                push::push_ahead(&pusher, &spool, backlog, ahead_limit).await
            })))
        }
    };

    let result = pusher.push_one(path, &name).await;
    if let (Ok(_), Some(claim)) = (&result, claim.as_mut()) {
        claim.mark_done();
    }
    drop(claim);
    if let Some(mut ahead) = ahead {
        // The main push decides the exit code; push-ahead gets whatever time is left and is
        // abandoned at the deadline (its records are written only after durable stores).
        if timeout_at(ahead_deadline, &mut ahead.0).await.is_err() {
            tracing::warn!("push-ahead abandoned at wal.timeout");
        }
    }
    ctx.events.emit(&result?.event(false));
    Ok(())
}

/// A pusher into the configured repository, which must be initialised.
pub async fn pusher_for(ctx: &Context) -> Result<Pusher> {
    let identity = RepoIdentity::require(ctx.storage.as_ref()).await?;
    let mut pusher = Pusher::new(
        ctx.storage.clone(),
        identity,
        ctx.config.repo.compression_level.0,
    );
    pusher.events = ctx.events.clone();
    Ok(pusher)
}

/// The background pusher's log is appended to, and started afresh beyond this size.
const PUSHER_LOG_MAX: u64 = 1 << 20;

/// Starts a detached `wal-push-ahead` for the pg_wal that holds `path`, unless a background
/// pusher runs for this spool already. The caller has seen a backlog.
fn start_background_pusher(ctx: &Context, spool: &PushSpool, path: &Path, exe: &Path) {
    let Ok(wal_dir) = std::path::absolute(path.parent().unwrap_or(Path::new("."))) else {
        return;
    };
    if !detached::lock_is_free(&spool.pusher_lock_path()) {
        return;
    }
    // One JSON event per line: the log is read by tools more than by eye.
    let args = [
        OsStr::new("--log-format"),
        OsStr::new("json"),
        OsStr::new("wal-push-ahead"),
        wal_dir.as_os_str(),
    ];
    let log = Log::Append(&spool.pusher_log_path(), PUSHER_LOG_MAX);
    detached::spawn(exe, &ctx.config_path, &args, log);
}
