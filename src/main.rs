//! The pgward binary: parse, set up logging, run the command, map errors to exit codes.
//!
//! Exit codes are part of the interface: 0 success; 1 any ordinary failure; 2 usage errors.
//! `wal-push` never exits above 125: PostgreSQL treats that as fatal for the archiver
//! (<https://www.postgresql.org/docs/15/continuous-archiving.html>). `wal-fetch` exits 1 quietly
//! for "not archived", and for any failure 1 on a standby but 200 in archive recovery, so that
//! PostgreSQL stops recovery instead of ending it early (`wal::fetch` explains why).
//! `status --nagios` exits 0/1/2/3 as a Nagios plugin (3: the state cannot be read).

use clap::Parser;
use pgward::cli::{Cli, Command};
use pgward::commands;
use pgward::config::Config;
use pgward::context::{Context, CreateRepo};
use pgward::events::LogSink;
use pgward::wal::fetch::{self, Outcome, RecoveryMode};
use std::io::IsTerminal as _;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

/// How long finished commands wait for leftover blocking work before exiting anyway.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

fn main() -> ExitCode {
    let cli = Cli::parse();
    let agent = matches!(cli.command, Command::Agent(_));
    let format = cli
        .log_format
        .unwrap_or_else(|| pgward::logging::default_format(agent));
    pgward::logging::init(format, cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    // PostgreSQL runs restore_command in the data directory, whose signal files say whether a
    // failure must stop recovery; read before anything can fail (a bad config fails too).
    // `status` never takes the error path below: what it cannot read is its UNKNOWN verdict,
    // and a monitoring check must get its line and its exit status whatever happens.
    if let Command::Status(a) = &cli.command {
        let level = runtime.block_on(commands::status::run(cli.config.as_deref(), a));
        runtime.shutdown_timeout(SHUTDOWN_GRACE);
        return ExitCode::from(status_exit(level, a.nagios));
    }
    let fetch_mode =
        matches!(cli.command, Command::WalFetch(_)).then(|| RecoveryMode::detect(Path::new(".")));
    let result = runtime.block_on(run(cli));
    // Blocking work stuck in the kernel (a `file://` repository on a stalled NFS mount) must not
    // keep the process alive after the command has answered within `wal.timeout`: dropping the
    // runtime would wait for it forever, the archiver would hang and pg_wal fill up. Exiting
    // ends those threads.
    runtime.shutdown_timeout(SHUTDOWN_GRACE);
    match (result, fetch_mode) {
        (Ok(()), _) => ExitCode::SUCCESS,
        (Err(e), Some(mode)) => {
            let outcome = Outcome::of_error(&e);
            match outcome {
                Outcome::NotArchived => tracing::debug!("{e}"),
                _ => tracing::error!("{}", fetch::failure_message(&e, mode)),
            }
            ExitCode::from(fetch::exit_status(outcome, mode))
        }
        (Err(e), None) => {
            tracing::error!("{}", pgward::output::error_text(&e));
            ExitCode::from(1)
        }
    }
}

/// `status`'s exit status: with `--nagios` the plugin convention (0 OK, 1 WARNING, 2 CRITICAL,
/// 3 UNKNOWN); without it 0 unless the verdict is CRITICAL or UNKNOWN, then 1 (an ordinary
/// failure, for cron and scripts).
fn status_exit(level: pgward::status::Level, nagios: bool) -> u8 {
    use pgward::status::Level;
    match (nagios, level) {
        (true, l) => l.nagios_code() as u8,
        (false, Level::Ok | Level::Warning) => 0,
        (false, Level::Critical | Level::Unknown) => 1,
    }
}

/// SIGINT or SIGTERM cancels the command's work cleanly (a backup removes its marker and lease,
/// a restore says what it left); a second one exits at once.
fn cancel_on_signals(ctx: &Context) {
    use tokio::signal::unix::{SignalKind, signal};
    let token = ctx.cancel.clone();
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::warn!("cannot watch for SIGINT/SIGTERM; an interrupted command cannot clean up");
        return;
    };
    tokio::spawn(async move {
        for round in 0.. {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            if round > 0 {
                tracing::error!("interrupted again: exiting without cleaning up");
                std::process::exit(1);
            }
            tracing::warn!("interrupted: cancelling (interrupt again to exit at once)");
            token.cancel();
        }
    });
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // The demo writes its own configuration in its own directory: it must not need one.
    if let Command::Demo(a) = &cli.command {
        return commands::demo::run(a).await;
    }
    let (config, path) = Config::load(cli.config.as_deref())?;
    let path = std::path::absolute(&path)?;
    // Before the repository is opened: `init` would create it as whoever runs it.
    pgward::owner::check(
        &pgward::owner::guarded_paths(&cli.command, &config),
        &pgward::owner::command_line_after_program(),
    )?;
    let create = match cli.command {
        Command::Init(_) => CreateRepo::Yes,
        _ => CreateRepo::No,
    };
    let mut ctx = Context::open(config, path, create).await?;
    let json_report = match &cli.command {
        Command::Backup(a) => Some(a.json),
        Command::Dump(a) => Some(a.json),
        _ => None,
    };
    if let Some(json) = json_report {
        // The progress line only on a terminal, never into logs or pipes.
        let terminal = !json && std::io::stderr().is_terminal();
        ctx.events = Arc::new(LogSink::new(terminal));
    }
    if matches!(
        cli.command,
        Command::Backup(_) | Command::Restore(_) | Command::Dump(_) | Command::Drill(_)
    ) {
        cancel_on_signals(&ctx);
    }
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
        Command::Dump(a) => commands::dump::run(&ctx, a).await,
        Command::RestoreDump(a) => commands::restore_dump::run(&ctx, a).await,
        Command::Info(a) => commands::info::run(&ctx, a).await,
        Command::Pin(a) => commands::pin::run(&ctx, a).await,
        Command::Unpin(a) => commands::unpin::run(&ctx, a).await,
        Command::Verify(a) => commands::verify::run(&ctx, a).await,
        Command::Drill(a) => commands::drill::run(&ctx, a).await,
        // The agent handles SIGTERM itself: a running job gets [agent] stop_timeout first.
        Command::Agent(a) => commands::agent::run(&ctx, a).await,
        Command::Gc(a) => commands::gc::run(&ctx, a).await,
        Command::Expire(a) => commands::expire::run(&ctx, a).await,
        Command::Report(a) => commands::report::run(&ctx, a).await,
        Command::WalPrefetch(a) => commands::wal_prefetch::run(&ctx, a).await,
        Command::WalPushAhead(a) => commands::wal_push_ahead::run(&ctx, a).await,
        Command::Demo(_) => unreachable!("the demo runs before the configuration is loaded"),
        Command::Status(_) => unreachable!("status runs before the configuration is loaded"),
    }
}
