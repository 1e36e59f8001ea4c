//! The pgward binary: parse, set up logging, run the command, map errors to exit codes.
//!
//! Exit codes are part of the interface: 0 success; 1 any ordinary failure (including "not
//! archived" for wal-fetch); 2 usage errors. Never above 125: PostgreSQL treats that as fatal
//! for the archiver (<https://www.postgresql.org/docs/15/continuous-archiving.html>).

use clap::Parser;
use pgward::cli::{Cli, Command};
use pgward::commands::{self, NotArchived};
use pgward::config::Config;
use pgward::context::{Context, CreateRepo};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    pgward::logging::init(cli.log_format, cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<NotArchived>() => {
            tracing::debug!("{e}");
            ExitCode::from(1)
        }
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // The demo writes its own configuration in its own directory: it must not need one.
    if let Command::Demo(a) = &cli.command {
        return commands::demo::run(a).await;
    }
    let (config, path) = Config::load(cli.config.as_deref())?;
    let path = std::path::absolute(&path)?;
    let create = match cli.command {
        Command::Init(_) => CreateRepo::Yes,
        _ => CreateRepo::No,
    };
    let ctx = Context::open(config, path, create).await?;
    match &cli.command {
        Command::Init(a) => commands::init::run(&ctx, a).await,
        Command::WalPush(a) => {
            let exe = std::env::current_exe().ok();
            commands::wal_push::run(&ctx, a, exe.as_deref()).await
        }
        Command::WalFetch(a) => {
            let exe = std::env::current_exe().ok();
            commands::wal_fetch::run(&ctx, a, exe.as_deref()).await
        }
        Command::Backup(a) => commands::backup::run(&ctx, a).await,
        Command::Restore(a) => commands::restore::run(&ctx, a).await,
        Command::Info(a) => commands::info::run(&ctx, a).await,
        Command::WalPrefetch(a) => commands::wal_prefetch::run(&ctx, a).await,
        Command::WalPushAhead(a) => commands::wal_push_ahead::run(&ctx, a).await,
        Command::Demo(_) => unreachable!("the demo runs before the configuration is loaded"),
    }
}
