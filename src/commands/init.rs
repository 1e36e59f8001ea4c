//! `pgward init`: bind a repository to one cluster by writing `repo.json`.

use crate::context::Context;
use crate::pg::control::ControlFile;
use crate::pg::version::read_major_version;
use crate::repo::identity::RepoIdentity;
use anyhow::{Context as _, Result};
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Data directory of the cluster (default: [postgres] pgdata).
    #[arg(long)]
    pub pgdata: Option<PathBuf>,
}

pub async fn run(ctx: &Context, args: &Args) -> Result<()> {
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
