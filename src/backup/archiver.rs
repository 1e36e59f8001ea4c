//! What the server says about WAL archiving, for the waits at the end of a backup.
//!
//! PostgreSQL's view of archiving is `pg_stat_archiver` (last archived and last failed WAL,
//! failure count) and the `.ready` / `.done` files in `pg_wal/archive_status`. pgward's view is
//! the repository listing. When the two disagree — the server says a segment is archived, the
//! repository lacks it — `archive_command` is storing WAL somewhere else, and waiting longer
//! cannot help. When the archiver keeps failing on a segment the backup needs, the operator
//! should hear that while the backup waits, not ten minutes later.
//!
//! (<https://www.postgresql.org/docs/15/monitoring-stats.html#MONITORING-PG-STAT-ARCHIVER-VIEW>)

use crate::pg::{WalFileName, WalSegmentName, conn};
use anyhow::{Context, Result};
use async_trait::async_trait;
use std::path::Path;
use std::time::Duration;
use tokio_postgres::Client;

/// How long one look at the server may take: a diagnostic must never hold up the wait.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// One row of `pg_stat_archiver`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchiverStats {
    pub last_archived_wal: Option<String>,
    pub last_archived_time: Option<String>,
    pub last_failed_wal: Option<String>,
    pub last_failed_time: Option<String>,
    pub failed_count: i64,
    /// The last failure is later than the last success (the archiver is failing now).
    pub failing_now: bool,
}

impl ArchiverStats {
    /// Whether the server reports `seg` archived: its last archived segment is `seg` or a later
    /// one of the same timeline (the archiver goes in order). Backup history and timeline
    /// history files say nothing certain about a segment and count as no.
    pub fn archived_at_or_past(&self, seg: &WalSegmentName) -> bool {
        let last = self
            .last_archived_wal
            .as_deref()
            .and_then(|n| WalFileName::parse(n).ok());
        match last {
            Some(WalFileName::Segment(s) | WalFileName::Partial(s)) => {
                s.tli == seg.tli && s >= *seg
            }
            _ => false,
        }
    }

    /// The last failed WAL, when the archiver is failing on `seg` now.
    pub fn failing_on(&self, seg: &WalSegmentName) -> bool {
        self.failing_now && self.last_failed_wal.as_deref() == Some(seg.to_string().as_str())
    }

    /// `last archived: X at T; last failure: Y at T (N failures)`, for messages.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        match &self.last_archived_wal {
            Some(w) => parts.push(format!(
                "last archived: {w} at {}",
                self.last_archived_time.as_deref().unwrap_or("?")
            )),
            None => parts.push("nothing archived since the statistics were reset".to_string()),
        }
        if let Some(w) = &self.last_failed_wal {
            parts.push(format!(
                "last failure: {w} at {} ({} failures in all)",
                self.last_failed_time.as_deref().unwrap_or("?"),
                self.failed_count
            ));
        }
        format!("pg_stat_archiver: {}", parts.join("; "))
    }
}

/// Reads `pg_stat_archiver`.
pub async fn read_stats(client: &Client) -> Result<ArchiverStats> {
    let q = client.query_one(
        "select last_archived_wal, last_archived_time::text, last_failed_wal, \
         last_failed_time::text, failed_count, \
         coalesce(last_failed_time > last_archived_time, last_failed_time is not null) \
         from pg_stat_archiver",
        &[],
    );
    let row = tokio::time::timeout(QUERY_TIMEOUT, q)
        .await
        .context("pg_stat_archiver did not answer within 5s")?
        .context("cannot read pg_stat_archiver")?;
    Ok(ArchiverStats {
        last_archived_wal: row.get(0),
        last_archived_time: row.get(1),
        last_failed_wal: row.get(2),
        last_failed_time: row.get(3),
        failed_count: row.get(4),
        failing_now: row.get(5),
    })
}

/// The server's `archive_command` (as `SHOW archive_command` prints it).
pub async fn archive_command(client: &Client) -> Option<String> {
    tokio::time::timeout(QUERY_TIMEOUT, conn::show(client, "archive_command"))
        .await
        .ok()?
        .ok()
}

/// What the WAL wait asks of the server; a trait so tests can play the server.
#[async_trait]
pub trait ArchiverWatch: Send + Sync {
    /// `pg_stat_archiver` now, or `None` if it cannot be read (the wait goes on without it).
    async fn stats(&self) -> Option<ArchiverStats>;
    /// Whether `pg_wal/archive_status/<seg>.done` exists: the archiver stored it.
    fn done_file(&self, seg: &WalSegmentName) -> bool;
    /// `SHOW archive_command`, for the message that blames it.
    async fn archive_command(&self) -> Option<String>;
}

/// The running server, through the backup's session, and its data directory.
pub struct ServerWatch<'a> {
    pub client: &'a Client,
    pub pgdata: &'a Path,
}

#[async_trait]
impl ArchiverWatch for ServerWatch<'_> {
    async fn stats(&self) -> Option<ArchiverStats> {
        read_stats(self.client)
            .await
            .map_err(|e| tracing::debug!("{e:#}"))
            .ok()
    }

    fn done_file(&self, seg: &WalSegmentName) -> bool {
        self.pgdata
            .join("pg_wal/archive_status")
            .join(format!("{seg}.done"))
            .exists()
    }

    async fn archive_command(&self) -> Option<String> {
        archive_command(self.client).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(name: &str) -> WalSegmentName {
        WalSegmentName::parse(name).unwrap()
    }

    #[test]
    fn archived_means_this_segment_or_a_later_one_of_its_timeline() {
        let stats = |last: &str| ArchiverStats {
            last_archived_wal: Some(last.to_string()),
            ..ArchiverStats::default()
        };
        let s3 = seg("000000010000000000000003");
        assert!(stats("000000010000000000000003").archived_at_or_past(&s3));
        assert!(stats("000000010000000000000004").archived_at_or_past(&s3));
        assert!(!stats("000000010000000000000002").archived_at_or_past(&s3));
        assert!(!stats("000000020000000000000004").archived_at_or_past(&s3));
        assert!(!stats("000000010000000000000004.00000028.backup").archived_at_or_past(&s3));
        assert!(!stats("00000002.history").archived_at_or_past(&s3));
        assert!(!ArchiverStats::default().archived_at_or_past(&s3));
    }

    #[test]
    fn failing_needs_a_failure_after_the_last_success() {
        let s3 = seg("000000010000000000000003");
        let mut stats = ArchiverStats {
            last_failed_wal: Some(s3.to_string()),
            failed_count: 4,
            last_failed_time: Some("2026-12-01 21:00:00+00".into()),
            ..ArchiverStats::default()
        };
        assert!(!stats.failing_on(&s3), "an old failure");
        stats.failing_now = true;
        assert!(stats.failing_on(&s3));
        assert!(!stats.failing_on(&seg("000000010000000000000004")));
        let d = stats.describe();
        assert!(
            d.contains("last failure: 000000010000000000000003 at 2026-12-01 21:00:00+00")
                && d.contains("4 failures"),
            "{d}"
        );
    }
}
