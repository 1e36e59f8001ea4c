//! What the server's archiver says: `pg_stat_archiver` over `[postgres] conninfo`, and the
//! `.ready` files of `pg_wal/archive_status` under `[postgres] pgdata`. The agent's metrics and
//! `pgward status` read the same facts, so their RPO is the same number.

use crate::config::Config;
use chrono::{DateTime, Utc};
use std::path::Path;
use std::time::{Duration, SystemTime};

/// What the archiver said at one moment (`status --json` prints it as it is).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ArchiverFacts {
    pub archived_count: u64,
    pub failed_count: u64,
    /// The last segment (or history file) archived, and when.
    pub last_archived_wal: Option<String>,
    pub last_archived_time: Option<DateTime<Utc>>,
    /// The last one whose archiving failed, and when.
    pub last_failed_wal: Option<String>,
    pub last_failed_time: Option<DateTime<Utc>>,
    /// `.ready` files waiting in `pg_wal/archive_status`.
    pub pending_segments: i64,
    /// now − mtime of the oldest `.ready` file; 0 when none (an idle database never alarms).
    pub rpo_seconds: f64,
    /// Why `pg_wal/archive_status` could not be read (`[postgres] pgdata` unset, or not
    /// readable by this user): then the RPO and the pending count were not measured, and the
    /// zeros above mean nothing.
    pub rpo_unmeasured: Option<String>,
}

impl ArchiverFacts {
    /// Whether the newest attempt failed (a failure after the last success).
    pub fn failing(&self) -> bool {
        match (self.last_failed_time, self.last_archived_time) {
            (Some(f), Some(a)) => f > a,
            (Some(_), None) => true,
            _ => false,
        }
    }
}

/// How long the whole read may take: a server that accepts the connection and never answers
/// must not stall the agent's loop.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The archiver's facts, or why not: `[postgres] conninfo` not set, the connection or the
/// query failing (connection and query together bounded by [`READ_TIMEOUT`]).
pub async fn read(config: &Config) -> Result<ArchiverFacts, String> {
    match tokio::time::timeout(READ_TIMEOUT, read_unbounded(config)).await {
        Ok(facts) => facts,
        Err(_) => Err(format!(
            "pg_stat_archiver did not answer within {}",
            humantime::format_duration(READ_TIMEOUT)
        )),
    }
}

async fn read_unbounded(config: &Config) -> Result<ArchiverFacts, String> {
    let conninfo = (config.postgres.conninfo.as_deref()).ok_or("[postgres] conninfo is not set")?;
    let client = crate::pg::conn::connect(conninfo, Duration::from_secs(5))
        .await
        .map_err(|e| {
            crate::output::error_text(&e)
                .lines()
                .next()
                .unwrap_or_default()
                .to_string()
        })?;
    let row = client
        .query_one(
            "select archived_count, failed_count, last_archived_wal, \
             extract(epoch from last_archived_time)::float8, last_failed_wal, \
             extract(epoch from last_failed_time)::float8 from pg_stat_archiver",
            &[],
        )
        .await
        .map_err(|e| format!("cannot read pg_stat_archiver: {e}"))?;
    let time =
        |secs: Option<f64>| secs.and_then(|s| DateTime::from_timestamp_millis((s * 1000.0) as i64));
    let ready = match config.postgres.pgdata.as_deref() {
        Some(d) => ready_files(&d.join("pg_wal/archive_status")),
        None => Err(
            "[postgres] pgdata is not set, so pg_wal/archive_status cannot be read\n\
                     hint: set [postgres] pgdata to the cluster's data directory"
                .to_string(),
        ),
    };
    let (pending, oldest, rpo_unmeasured) = match ready {
        Ok((n, oldest)) => (n, oldest, None),
        Err(why) => (0, None, Some(why)),
    };
    let rpo = oldest
        .and_then(|t| t.elapsed().ok())
        .map_or(0.0, |d| d.as_secs_f64());
    Ok(ArchiverFacts {
        archived_count: row.get::<_, i64>(0).max(0) as u64,
        failed_count: row.get::<_, i64>(1).max(0) as u64,
        last_archived_wal: row.get(2),
        last_archived_time: time(row.get(3)),
        last_failed_wal: row.get(4),
        last_failed_time: time(row.get(5)),
        pending_segments: pending,
        rpo_seconds: rpo,
        rpo_unmeasured,
    })
}

/// How many `.ready` files there are, and the oldest one's mtime; or why the directory
/// cannot be read.
fn ready_files(dir: &Path) -> Result<(i64, Option<SystemTime>), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        format!(
            "cannot read {}: {e}\nhint: run as the user PostgreSQL runs as (postgres), \
             who alone may read pg_wal",
            dir.display()
        )
    })?;
    let mut n = 0;
    let mut oldest: Option<SystemTime> = None;
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().ends_with(".ready") {
            n += 1;
            if let Ok(m) = e.metadata().and_then(|m| m.modified()) {
                oldest = Some(oldest.map_or(m, |o| o.min(m)));
            }
        }
    }
    Ok((n, oldest))
}
