//! tracing setup: human text or JSON on standard error (PostgreSQL copies an archive_command's
//! stderr into its server log, so one line per event is what operators read there). Without
//! `--log-format`, the agent logs JSON when its standard error is the systemd journal (its
//! unit: one object per line with its fields, for the journal's and log shippers' parsers);
//! everything else logs text.

use crate::cli::LogFormat;
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

pub fn init(format: LogFormat, verbose: u8) {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    // Only pgward's own events by default: the AWS SDK is chatty at debug.
    let filter = EnvFilter::try_from_env("PGWARD_LOG")
        .unwrap_or_else(|_| EnvFilter::new(format!("warn,pgward={default}")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // A closed or failing stderr drops the event; it never panics (see `output`).
        .with_writer(|| crate::output::Stderr)
        .log_internal_errors(false)
        .with_target(false)
        // PostgreSQL copies our stderr into its log file: colour codes only on a terminal.
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// The format without `--log-format`: JSON for the agent when its standard error is the
/// journal; text otherwise — `wal-push` and `wal-fetch` write into PostgreSQL's log, whose
/// readers expect its text lines even when that log goes to the journal.
pub fn default_format(agent: bool) -> LogFormat {
    if agent && stderr_is_journal() {
        LogFormat::Json
    } else {
        LogFormat::Text
    }
}

/// Whether standard error is the journal's stream: systemd sets `JOURNAL_STREAM` to its
/// `device:inode`, and a child whose stderr was redirected elsewhere inherits the variable but
/// not the stream (sd_journal_stream_fd(3) says to compare, as here).
fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let Ok(st) = rustix::fs::fstat(std::io::stderr()) else {
        return false;
    };
    dev.parse::<u64>().ok() == Some(st.st_dev) && ino.parse::<u64>().ok() == Some(st.st_ino)
}
