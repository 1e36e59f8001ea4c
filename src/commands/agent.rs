//! `pgward agent [--once KIND]`: the policy's jobs on their schedules, the metrics and health
//! endpoints (see [`crate::agent::run`]). `--once KIND` runs the first job of that kind (or
//! one with no options) now through the same code, and exits with its result.

use crate::agent::run::{AgentOptions, run_agent};
use crate::context::Context;
use crate::retention::policy::JobKind;
use anyhow::Result;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run one job of this kind now and exit (backup, dump, expire, verify, drill).
    #[arg(long, value_name = "KIND", value_parser = parse_kind)]
    pub once: Option<JobKind>,
}

fn parse_kind(s: &str) -> Result<JobKind, String> {
    match s {
        "backup" => Ok(JobKind::Backup),
        "dump" => Ok(JobKind::Dump),
        "expire" => Ok(JobKind::Expire),
        "verify" => Ok(JobKind::Verify),
        "drill" => Ok(JobKind::Drill),
        _ => Err(format!(
            "`{s}` is not a job kind (backup, dump, expire, verify, drill)"
        )),
    }
}

pub async fn run(ctx: &Context, args: &Args) -> Result<()> {
    run_agent(ctx, &AgentOptions { once: args.once }).await
}
