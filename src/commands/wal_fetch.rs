//! `pgward wal-fetch <name> <dest>`: the `restore_command`.
//!
//! Exit 0 with the exact original bytes at `dest`; exit 1, quietly, only when the file is known
//! not to be archived; every failure is loud, and stops archive recovery (`wal::fetch` explains
//! the three answers, `main.rs` turns them into exit statuses). A fetch from the repository also
//! checks `repo.json` (and, run in a data directory, that it is this cluster's repository): an
//! uninitialised, unreadable or foreign repository is a failure, never "not archived". Each
//! successful fetch makes sure a detached prefetcher is downloading the next segments.
//! See <https://www.postgresql.org/docs/15/runtime-config-wal.html#GUC-RESTORE-COMMAND>.

use crate::context::Context;
use crate::pg::WalFileName;
use crate::pg::control::ControlFile;
use crate::pg::version::read_major_version;
use crate::repo::identity::RepoIdentity;
use crate::storage::Storage;
use crate::wal::detached::{self, Log};
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
            None => {
                tracing::debug!(wal = %name, spool = %spool.dir().display(), "not in the spool; fetching from the repository");
                // The identity check runs beside the fetch, so it costs no extra round trip.
                let storage = ctx.storage.as_ref();
                let (identity, fetched) = tokio::join!(
                    check_repository(storage),
                    fetch::fetch_from_repo(storage, &name, &args.dest)
                );
                match (identity, fetched) {
                    (Ok(()), fetched) => fetched?,
                    // A failed fetch is the more direct cause; it is a failure either way.
                    (Err(_), Err(e)) if !e.is::<fetch::NotArchived>() => return Err(e),
                    // Neither a fetched file nor "not archived" may come from a repository
                    // that is not this cluster's.
                    (Err(e), fetched) => {
                        if fetched.is_ok() {
                            let _ = std::fs::remove_file(&args.dest);
                        }
                        return Err(e);
                    }
                }
            }
        };
        ctx.events.emit(&report.event());
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

/// Refuses a repository that is not initialised, unreadable, or another cluster's (when run in
/// a data directory, as PostgreSQL runs `restore_command`).
async fn check_repository(storage: &dyn Storage) -> Result<()> {
    let id = RepoIdentity::require(storage).await?;
    let here = Path::new(".");
    if here.join("global/pg_control").is_file() {
        // The same check `init`, `backup` and `wal-push` make: system identifier, major
        // version and segment size.
        let control = ControlFile::read(here)?;
        id.check_cluster(&control, read_major_version(here)?)
            .with_context(|| format!("wal-fetch refuses {}", storage.describe()))?;
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
