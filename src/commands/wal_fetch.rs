//! `pgward wal-fetch <name> <dest>`: the `restore_command`.
//!
//! Exit 0 with the exact original bytes at `dest`; exit 1, quietly, when the file is not
//! archived (recovery probes for files that do not exist); a loud error when the stored object
//! is corrupt. Each successful fetch makes sure a detached prefetcher is downloading the next
//! segments into the spool.
//! See <https://www.postgresql.org/docs/15/runtime-config-wal.html#GUC-RESTORE-COMMAND>.

use crate::commands::detached::{self, Log};
use crate::context::Context;
use crate::pg::WalFileName;
use crate::wal::fetch;
use crate::wal::spool::FetchSpool;
use anyhow::{Context as _, Result, anyhow};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The WAL file name PostgreSQL asks for (%f).
    pub name: String,
    /// Where to write it (%p, relative to the data directory).
    pub dest: PathBuf,
}

pub async fn run(ctx: &Context, args: &Args, exe: Option<&Path>) -> Result<()> {
    let name = WalFileName::parse(&args.name)
        .with_context(|| format!("wal-fetch was asked for `{}`", args.name))?;
    let limit = ctx.config.wal.timeout;
    let spool = FetchSpool::new(&ctx.spool_dir());
    let work = async {
        let report = match fetch::take_from_spool(&spool, &name, &args.dest)? {
            Some(r) => r,
            None => fetch::fetch_from_repo(ctx.storage.as_ref(), &name, &args.dest).await?,
        };
        report.log();
        Ok::<_, anyhow::Error>(())
    };
    match tokio::time::timeout(limit, work).await {
        Ok(r) => r?,
        Err(_) => {
            return Err(anyhow!(
                "wal-fetch of {name} did not finish within wal.timeout ({})\nhint: the repository ({}) is unreachable or stuck",
                humantime::format_duration(limit),
                ctx.storage.describe()
            ));
        }
    }
    if let (Some(exe), WalFileName::Segment(seg)) = (exe, &name) {
        spool.cleanup(Some(seg));
        if ctx.config.wal.prefetch > 0 {
            maybe_start_prefetcher(ctx, &spool, &name, exe);
        }
    }
    Ok(())
}

/// Starts a detached `wal-prefetch` unless one is running or the spool already holds at least
/// half of the window ahead of `name`.
fn maybe_start_prefetcher(ctx: &Context, spool: &FetchSpool, name: &WalFileName, exe: &Path) {
    let Some(cur) = name.segment() else { return };
    let ahead = spool
        .segments()
        .iter()
        .filter(|s| (s.log, s.seg) > (cur.log, cur.seg))
        .count();
    if ahead * 2 >= ctx.config.wal.prefetch.max(1) {
        return;
    }
    if !detached::lock_is_free(&spool.lock_path()) {
        return;
    }
    let name = name.to_string();
    let args = [OsStr::new("wal-prefetch"), OsStr::new(&name)];
    let log = spool.dir().join("prefetch.log");
    detached::spawn(exe, &ctx.config_path, &args, Log::Truncate(&log));
}
