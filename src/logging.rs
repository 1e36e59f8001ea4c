//! tracing setup: human text or JSON on standard error (PostgreSQL copies an archive_command's
//! stderr into its server log, so one line per event is what operators read there).

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
