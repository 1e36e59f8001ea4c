//! `pgward init`: bind a repository to one cluster by writing `repo.json`; with `--upgrade`,
//! convert a repository written by an older pgward to the current format (`repo::upgrade`).

use crate::context::Context;
use crate::pg::control::ControlFile;
use crate::pg::version::read_major_version;
use crate::repo::identity::RepoIdentity;
use crate::repo::layout::FORMAT_VERSION;
use crate::repo::upgrade;
use crate::{say, units};
use anyhow::{Context as _, Result};
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Data directory of the cluster (default: [postgres] pgdata).
    #[arg(long)]
    pub pgdata: Option<PathBuf>,
    /// Convert the repository to this pgward's format (safe to interrupt and run again).
    #[arg(long)]
    pub upgrade: bool,
}

pub async fn run(ctx: &Context, args: &Args) -> Result<()> {
    if args.upgrade {
        let done = upgrade::upgrade(&ctx.storage).await?;
        if done.from_version == FORMAT_VERSION && done.moved == 0 {
            say!(
                "repository {} is already in format {FORMAT_VERSION}; nothing to do",
                ctx.storage.describe()
            );
        } else {
            say!(
                "repository {} upgraded from format {} to {FORMAT_VERSION}: {} moved ({})",
                ctx.storage.describe(),
                done.from_version,
                units::count(done.moved, "WAL file", "WAL files"),
                units::bytes(done.bytes)
            );
        }
        return Ok(());
    }
    let pgdata = match &args.pgdata {
        Some(p) => p.clone(),
        None => ctx.config.pgdata()?.to_path_buf(),
    };
    let control = ControlFile::read(&pgdata)?;
    let major = read_major_version(&pgdata)?;
    let wanted = RepoIdentity::for_cluster(&control, major);
    if let Some(existing) = RepoIdentity::load(ctx.storage.as_ref()).await? {
        existing
            .check_cluster(&control, major)
            .with_context(|| format!("refusing to initialise {}", ctx.storage.describe()))?;
        tracing::info!(
            repository = %ctx.storage.describe(),
            system_identifier = existing.system_identifier,
            "repository already initialised for this cluster; nothing to do"
        );
        return Ok(());
    }
    let (now, created) = RepoIdentity::create(ctx.storage.as_ref(), &wanted).await?;
    now.check_cluster(&control, major)
        .with_context(|| format!("refusing to initialise {}", ctx.storage.describe()))?;
    if created {
        tracing::info!(
            repository = %ctx.storage.describe(),
            system_identifier = now.system_identifier,
            pg_major = now.pg_major,
            wal_segment_size = now.wal_segment_size,
            "repository initialised"
        );
    }
    Ok(())
}
