//! Command-line definitions (clap). The interface is public: see DESIGN.md and README.md.

use crate::commands;
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "pgward",
    version,
    about = "PostgreSQL WAL archiving, base backups and restore drills"
)]
pub struct Cli {
    /// Configuration file [default: $PGWARD_CONFIG, else /etc/pgward/pgward.toml]
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Log format on standard error [default: json when standard error is the systemd
    /// journal, else text].
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    /// More detail in logs (-v debug, -vv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the repository for the cluster at [postgres] pgdata (idempotent).
    Init(commands::init::Args),
    /// Archive one WAL file (archive_command = 'pgward wal-push %p').
    WalPush(commands::wal_push::Args),
    /// Restore one WAL file (restore_command = 'pgward wal-fetch %f %p').
    WalFetch(commands::wal_fetch::Args),
    /// Take a base backup of the running cluster.
    Backup(commands::backup::Args),
    /// Restore a base backup into a data directory, to any point in time.
    Restore(commands::restore::Args),
    /// Take a logical backup (pg_dump) of the server's databases.
    Dump(commands::dump::Args),
    /// Write one database's stored dump, verified, to a file (for pg_restore).
    RestoreDump(commands::restore_dump::Args),
    /// Check the repository: references and WAL from listings, then read a rotating sample.
    Verify(commands::verify::Args),
    /// Restore drills: restore into a scratch server, prove the target, check, measure RTO/RPO.
    Drill(commands::drill::Args),
    /// Show the repository's identity and archived WAL.
    Info(commands::info::Args),
    /// Pin a backup or dump: expire never deletes it.
    Pin(commands::pin::Args),
    /// Remove a pin.
    Unpin(commands::unpin::Args),
    /// Apply the retention policy: print the plan; delete only with --confirm.
    Expire(commands::expire::Args),
    /// Delete the blocks no backup references (two-phase: mark, then sweep after the grace).
    Gc(commands::gc::Args),
    /// Run the policy's jobs on their schedules; serve /metrics, /healthz and /readyz.
    Agent(commands::agent::Args),
    /// The verdict (OK/WARNING/CRITICAL/UNKNOWN) with its reasons: recoverable window, RPO,
    /// last runs, drills. --nagios for a monitoring check.
    Status(commands::status::Args),
    /// Write the recovery report: one self-contained HTML page (timeline, retention, drills).
    Report(commands::report::Args),
    /// Run the whole loop on a throwaway cluster: archive, backup, PITR restore, check.
    Demo(commands::demo::Args),
    /// Internal: the detached prefetcher started by wal-fetch.
    #[command(hide = true)]
    WalPrefetch(commands::wal_prefetch::Args),
    /// Internal: the detached background pusher started by wal-push.
    #[command(hide = true)]
    WalPushAhead(commands::wal_push_ahead::Args),
}
