//! One event type for what long work reports, and the sinks that receive it.
//!
//! The library never prints. A WAL file pushed or fetched, a backup or a restore starting,
//! making progress and ending, a wait that lasts: each is an [`Event`] handed to the
//! [`Context`](crate::context::Context)'s sink. The command line's sink is [`LogSink`]: the
//! log lines pgward has always written (one per WAL file; a backup's and a restore's start,
//! progress and result; a dump's) and, on a terminal, the backup's or the dump's progress line. Tests use
//! [`TestSink`] to assert the sequence. Later sinks (metrics, notification hooks, the agent's
//! state) receive the same events, so all of them tell the same story.
//!
//! Progress events come at most every [`PROGRESS_EVERY`]; a sink decides how often to show
//! them (the log every 10 s, a terminal line on each).

use crate::pg::Lsn;
use crate::units;
use serde::Serialize;
use std::fmt::Debug;
use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often long work reports its progress.
pub const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// What happened. Serialised with an `event` tag (`"backup_started"`, …) for JSON consumers.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A WAL file is durable in the repository (or was already).
    WalPushed {
        wal: String,
        outcome: WalPushOutcome,
        bytes: u64,
        stored_bytes: u64,
        ms: u64,
        /// Stored by the background pusher ahead of PostgreSQL's call.
        ahead: bool,
    },
    /// A WAL file was restored for recovery.
    WalFetched {
        wal: String,
        bytes: u64,
        stored_bytes: u64,
        ms: u64,
        from_spool: bool,
    },
    BackupStarted {
        label: String,
        start_lsn: Lsn,
    },
    BackupProgress {
        label: String,
        bytes_done: u64,
        /// 0 while unknown (the size is estimated by a walk beside the copy).
        bytes_total: u64,
        stored_bytes: u64,
        elapsed_ms: u64,
    },
    BackupFinished {
        label: String,
        total_bytes: u64,
        new_bytes: u64,
        stored_bytes: u64,
        duration_ms: u64,
    },
    BackupFailed {
        label: Option<String>,
        error: String,
        cancelled: bool,
    },
    RestoreStarted {
        backup: String,
        pgdata: String,
        bytes_total: u64,
    },
    RestoreProgress {
        bytes_done: u64,
        bytes_total: u64,
        elapsed_ms: u64,
    },
    RestoreFinished {
        backup: String,
        files: u64,
        bytes: u64,
        duration_ms: u64,
    },
    RestoreFailed {
        backup: String,
        error: String,
        cancelled: bool,
    },
    /// A logical dump started: these databases are dumped under this label.
    DumpStarted {
        label: String,
        databases: Vec<String>,
    },
    /// A dump's progress: databases finished, and bytes pg_dump has written so far.
    DumpProgress {
        label: String,
        databases_done: u64,
        databases_total: u64,
        bytes_done: u64,
        elapsed_ms: u64,
    },
    /// One database's dump is stored and checked.
    DumpDatabaseStored {
        label: String,
        database: String,
        bytes: u64,
        stored_bytes: u64,
        ms: u64,
    },
    /// The dump's manifest is written: the dump is complete.
    DumpFinished {
        label: String,
        databases: u64,
        bytes: u64,
        stored_bytes: u64,
        duration_ms: u64,
    },
    DumpFailed {
        label: Option<String>,
        error: String,
        cancelled: bool,
    },
    /// A restore drill started (its report will be `drills/<label>.json`).
    DrillStarted {
        drill: String,
        label: String,
    },
    /// A drill ended, passed or failed; its report is stored.
    DrillFinished {
        drill: String,
        label: String,
        passed: bool,
        rto_seconds: Option<f64>,
        rpo_seconds: Option<f64>,
        /// The phase and reason of a failure.
        failure: Option<String>,
        duration_ms: u64,
    },
    /// The agent started one of its jobs (`kind`: backup, dump, expire, verify, drill).
    JobStarted {
        job: String,
        kind: String,
    },
    /// One of the agent's jobs ended. `recovered`: it succeeded and its previous run had
    /// failed. `summary` is one line (the error's, for a failure); `details` what the job
    /// reported (a backup's label and sizes, a drill's RTO, …) as a JSON object.
    JobFinished {
        job: String,
        kind: String,
        succeeded: bool,
        recovered: bool,
        summary: String,
        duration_ms: u64,
        details: serde_json::Value,
    },
    /// A job was ended by the agent's shutdown before it finished (neither a success nor a
    /// failure; a restart runs it again).
    JobCancelled {
        job: String,
        kind: String,
        duration_ms: u64,
    },
    /// A wait that has lasted a while (WAL to reach the repository, a lease, …), repeated
    /// while it lasts.
    Waiting {
        what: String,
        waited_ms: u64,
        limit_ms: u64,
    },
}

/// How a push ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WalPushOutcome {
    Stored,
    AlreadyArchived,
    PushedAhead,
}

/// Receives events; called from any task or thread, so it must be quick.
pub trait EventSink: Send + Sync + Debug {
    fn emit(&self, event: &Event);
}

pub type Events = Arc<dyn EventSink>;

/// The command line's sink: log lines through `tracing`, and a progress line on standard
/// error for a backup when it is a terminal.
#[derive(Debug)]
pub struct LogSink {
    terminal_progress: bool,
    last_logged: Mutex<Option<Instant>>,
}

/// How often progress reaches the log (the terminal line shows every event).
const LOG_PROGRESS_EVERY: Duration = Duration::from_secs(10);

impl LogSink {
    /// `terminal_progress`: draw a backup's progress line on standard error (only when it is
    /// a terminal, so logs and pipes never see control characters).
    pub fn new(terminal_progress: bool) -> LogSink {
        LogSink {
            terminal_progress,
            last_logged: Mutex::new(None),
        }
    }

    /// Whether a progress event is due in the log.
    fn log_due(&self) -> bool {
        let mut last = self.last_logged.lock().unwrap_or_else(|e| e.into_inner());
        let due = last.is_none_or(|t| t.elapsed() >= LOG_PROGRESS_EVERY);
        if due {
            *last = Some(Instant::now());
        }
        due
    }

    fn draw(&self, line: &str) {
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r{line}\x1b[K");
        let _ = err.flush();
    }

    fn clear_line(&self) {
        if self.terminal_progress {
            self.draw("");
        }
    }
}

impl EventSink for LogSink {
    fn emit(&self, event: &Event) {
        match event {
            Event::WalPushed {
                wal,
                outcome,
                bytes,
                stored_bytes,
                ms,
                ahead,
            } => match outcome {
                WalPushOutcome::AlreadyArchived => tracing::warn!(
                    wal = %wal, bytes, ms,
                    "already archived with identical content; nothing to do"
                ),
                WalPushOutcome::PushedAhead => tracing::info!(
                    wal = %wal, bytes, ms,
                    "archived earlier by push-ahead; local file verified"
                ),
                WalPushOutcome::Stored => tracing::info!(
                    wal = %wal,
                    bytes,
                    stored = stored_bytes,
                    ratio = ratio(*bytes, *stored_bytes),
                    ms,
                    ahead,
                    "pushed"
                ),
            },
            Event::WalFetched {
                wal,
                bytes,
                stored_bytes,
                ms,
                from_spool,
            } => tracing::info!(
                wal = %wal,
                bytes,
                stored = stored_bytes,
                ratio = ratio(*bytes, *stored_bytes),
                ms,
                prefetched = from_spool,
                "fetched"
            ),
            Event::BackupStarted { label, start_lsn } => {
                tracing::info!(label, start_lsn = %start_lsn, "backup started");
            }
            Event::BackupProgress {
                bytes_done,
                bytes_total,
                stored_bytes,
                elapsed_ms,
                ..
            } => {
                let line = backup_line(*bytes_done, *bytes_total, *stored_bytes, *elapsed_ms);
                if self.terminal_progress {
                    self.draw(&line);
                } else if self.log_due() {
                    tracing::info!("{line}");
                }
            }
            Event::BackupFinished { label, .. } => {
                self.clear_line();
                tracing::info!(label, "backup complete");
            }
            Event::BackupFailed {
                label, cancelled, ..
            } => {
                self.clear_line();
                if *cancelled {
                    tracing::warn!(label = label.as_deref().unwrap_or("-"), "backup cancelled");
                }
            }
            Event::RestoreStarted {
                backup,
                pgdata,
                bytes_total,
            } => tracing::info!(
                backup,
                pgdata,
                bytes_total,
                "restore started: {} to write",
                units::bytes(*bytes_total)
            ),
            Event::RestoreProgress {
                bytes_done,
                bytes_total,
                elapsed_ms,
            } => {
                if self.log_due() {
                    let percent =
                        (*bytes_done as f64 * 100.0 / (*bytes_total).max(1) as f64).round();
                    tracing::info!(
                        bytes_done,
                        bytes_total,
                        percent,
                        "restoring: {} of {} ({percent}%), {}",
                        units::bytes(*bytes_done),
                        units::bytes(*bytes_total),
                        units::rate(*bytes_done, *elapsed_ms as f64 / 1000.0)
                    );
                }
            }
            Event::RestoreFinished { .. } => {}
            Event::RestoreFailed {
                backup, cancelled, ..
            } => {
                if *cancelled {
                    tracing::warn!(backup, "restore cancelled");
                }
            }
            Event::DumpStarted { label, databases } => tracing::info!(
                label,
                databases = databases.len(),
                "dump started: {}",
                databases.join(", ")
            ),
            Event::DumpProgress {
                databases_done,
                databases_total,
                bytes_done,
                elapsed_ms,
                ..
            } => {
                let line = dump_line(*databases_done, *databases_total, *bytes_done, *elapsed_ms);
                if self.terminal_progress {
                    self.draw(&line);
                } else if self.log_due() {
                    tracing::info!("{line}");
                }
            }
            Event::DumpDatabaseStored {
                label,
                database,
                bytes,
                stored_bytes,
                ms,
            } => tracing::info!(
                label,
                database,
                bytes,
                stored = stored_bytes,
                ratio = ratio(*bytes, *stored_bytes),
                ms,
                "database dumped, stored and checked"
            ),
            Event::DumpFinished { label, .. } => {
                self.clear_line();
                tracing::info!(label, "dump complete");
            }
            Event::DumpFailed {
                label, cancelled, ..
            } => {
                self.clear_line();
                if *cancelled {
                    tracing::warn!(label = label.as_deref().unwrap_or("-"), "dump cancelled");
                }
            }
            Event::DrillStarted { drill, label } => {
                tracing::info!(drill, label, "drill started")
            }
            Event::DrillFinished {
                drill,
                label,
                passed: true,
                rto_seconds,
                rpo_seconds,
                ..
            } => tracing::info!(
                drill,
                label,
                rto_s = rto_seconds.unwrap_or(0.0),
                rpo_s = rpo_seconds.unwrap_or(0.0),
                "drill passed"
            ),
            Event::DrillFinished {
                drill,
                label,
                failure,
                ..
            } => tracing::error!(
                drill,
                label,
                "drill FAILED: {}",
                failure.as_deref().unwrap_or("a check failed")
            ),
            Event::JobStarted { job, kind } => tracing::info!(job, kind, "job started"),
            Event::JobFinished {
                job,
                succeeded: true,
                recovered,
                summary,
                duration_ms,
                ..
            } => tracing::info!(job, ms = duration_ms, recovered, "job succeeded: {summary}"),
            Event::JobFinished {
                job,
                summary,
                duration_ms,
                details,
                ..
            } => tracing::error!(
                job,
                ms = duration_ms,
                "job failed: {}",
                details["error"].as_str().unwrap_or(summary)
            ),
            Event::JobCancelled {
                job, duration_ms, ..
            } => tracing::warn!(job, ms = duration_ms, "job cancelled by the shutdown"),
            Event::Waiting {
                what,
                waited_ms,
                limit_ms,
            } => tracing::info!(
                waited_s = waited_ms / 1000,
                limit_s = limit_ms / 1000,
                "still waiting: {what}"
            ),
        }
    }
}

/// Original over stored size, to one decimal (a JSON log line carries it as a number).
fn ratio(raw: u64, stored: u64) -> f64 {
    if stored == 0 {
        0.0
    } else {
        (raw as f64 / stored as f64 * 10.0).round() / 10.0
    }
}

/// `backup: 1.2 GiB / 3.4 GiB (35%), 85.3 MiB/s, 120.0 MiB new stored`.
pub fn backup_line(done: u64, total: u64, stored: u64, elapsed_ms: u64) -> String {
    let head = if total > 0 {
        let pct = (done as f64 * 100.0 / total as f64).min(100.0);
        format!(
            "{} / {} ({pct:.0}%)",
            units::bytes(done),
            units::bytes(total)
        )
    } else {
        units::bytes(done)
    };
    let new = if stored == 0 {
        "nothing new stored yet".to_string()
    } else {
        format!("{} new stored", units::bytes(stored))
    };
    format!(
        "backup: {head}, {}, {new}",
        units::rate(done, elapsed_ms as f64 / 1000.0)
    )
}

/// `dump: 1 of 3 databases done, 1.2 GiB written by pg_dump, 85.3 MiB/s`.
pub fn dump_line(done: u64, total: u64, bytes: u64, elapsed_ms: u64) -> String {
    format!(
        "dump: {done} of {} done, {} written by pg_dump, {}",
        units::count(total, "database", "databases"),
        units::bytes(bytes),
        units::rate(bytes, elapsed_ms as f64 / 1000.0)
    )
}

/// Several sinks as one: each event goes to every one, in order (the agent's log and its
/// notifications hear the same events).
#[derive(Debug)]
pub struct Fanout(pub Vec<Events>);

impl EventSink for Fanout {
    fn emit(&self, event: &Event) {
        for sink in &self.0 {
            sink.emit(event);
        }
    }
}

/// A sink that keeps every event, for tests.
#[derive(Debug, Default)]
pub struct TestSink {
    events: Mutex<Vec<Event>>,
}

impl TestSink {
    pub fn new() -> Arc<TestSink> {
        Arc::new(TestSink::default())
    }

    pub fn events(&self) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The events' tags in order, repeated progress events collapsed into one.
    pub fn sequence(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for e in self.events() {
            let tag = serde_json::to_value(&e)
                .ok()
                .and_then(|v| v["event"].as_str().map(str::to_string))
                .unwrap_or_default();
            if out.last() != Some(&tag) || !tag.ends_with("_progress") {
                out.push(tag);
            }
        }
        out
    }
}

impl EventSink for TestSink {
    fn emit(&self, event: &Event) {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(event.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_line_reads_well() {
        let line = backup_line(500 << 20, 1000 << 20, 0, 1000);
        assert!(
            line.contains("(50%)") && line.contains("500.0 MiB/s"),
            "{line}"
        );
        assert!(line.contains("nothing new stored yet"), "{line}");
        let line = backup_line(3 << 20, 0, 1 << 20, 1000);
        assert_eq!(line, "backup: 3.0 MiB, 3.0 MiB/s, 1.0 MiB new stored");
    }

    #[test]
    fn dump_progress_line_reads_well() {
        assert_eq!(
            dump_line(1, 3, 3 << 20, 1000),
            "dump: 1 of 3 databases done, 3.0 MiB written by pg_dump, 3.0 MiB/s"
        );
    }

    #[test]
    fn events_serialise_with_their_tag_and_the_test_sink_collapses_progress() {
        let sink = TestSink::new();
        sink.emit(&Event::BackupStarted {
            label: "L".into(),
            start_lsn: Lsn(0x2000028),
        });
        for done in [1, 2, 3] {
            sink.emit(&Event::BackupProgress {
                label: "L".into(),
                bytes_done: done,
                bytes_total: 3,
                stored_bytes: 0,
                elapsed_ms: 1,
            });
        }
        sink.emit(&Event::BackupFailed {
            label: Some("L".into()),
            error: "x".into(),
            cancelled: true,
        });
        assert_eq!(
            sink.sequence(),
            ["backup_started", "backup_progress", "backup_failed"]
        );
        let v = serde_json::to_value(&sink.events()[0]).unwrap();
        assert_eq!(v["event"], "backup_started");
        assert_eq!(v["start_lsn"], "0/2000028");
    }
}
