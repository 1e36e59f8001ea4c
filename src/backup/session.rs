//! The server side of a non-exclusive backup: `pg_backup_start` / `pg_backup_stop` on one
//! session that stays open for the whole copy (PostgreSQL aborts the backup when the session
//! ends, so a pgward that dies leaves nothing behind on the server).
//!
//! PostgreSQL 15 renamed the functions and dropped exclusive backups
//! (<https://www.postgresql.org/docs/15/functions-admin.html#FUNCTIONS-ADMIN-BACKUP>); 13 and 14
//! have `pg_start_backup(label, fast, exclusive)` / `pg_stop_backup(exclusive,
//! wait_for_archive)` with the same results.

use super::archiver::{self, ArchiverStats};
use super::wal::WAIT_PROGRESS_EVERY;
use crate::events::{Event, Events};
use crate::pg::Lsn;
use crate::pg::conn::{self, pg_error};
use anyhow::{Context, Result, anyhow, bail};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::time::Instant;
use tokio_postgres::{Client, NoTls};

/// The oldest release with non-exclusive backups returning the label and map files as pgward
/// needs them.
const MIN_VERSION_NUM: u32 = 130_000;
/// First release with `pg_backup_start` / `pg_backup_stop`.
const PG15: u32 = 150_000;

/// What `pg_backup_stop` returns.
#[derive(Debug, Clone)]
pub struct StopResult {
    pub stop_lsn: Lsn,
    pub backup_label: String,
    pub tablespace_map: String,
}

/// Refuses servers older than PostgreSQL 13.
pub fn check_version(version_num: u32) -> Result<()> {
    if version_num < MIN_VERSION_NUM {
        bail!(
            "the server is PostgreSQL {}.{}; pgward backs up PostgreSQL 13 and later",
            version_num / 10000,
            version_num % 10000
        );
    }
    Ok(())
}

/// Starts the backup with an immediate checkpoint; returns its start LSN.
pub async fn start(client: &Client, version_num: u32, label: &str) -> Result<Lsn> {
    let sql = if version_num >= PG15 {
        "select pg_backup_start($1, fast => true)::text"
    } else {
        "select pg_start_backup($1, true, false)::text"
    };
    let row = client
        .query_one(sql, &[&label])
        .await
        .map_err(|e| anyhow!("cannot start the backup: {}", pg_error(&e)))?;
    let text: String = row.get(0);
    text.parse()
        .with_context(|| format!("the server returned `{text}` as backup start LSN"))
}

/// How `pg_backup_stop` may wait for archiving, and where its wait is reported.
pub struct StopWait<'a> {
    /// `backup.wal_wait_timeout`.
    pub timeout: Duration,
    /// `[postgres] conninfo`: `pg_stat_archiver` is read on a second session, since the
    /// backup's own is busy in `pg_backup_stop`.
    pub conninfo: &'a str,
    pub events: &'a Events,
}

/// Stops the backup, waiting for the last WAL segment to be archived, for at most
/// `wait.timeout`, and reporting the wait (with the archiver's state) every
/// [`WAIT_PROGRESS_EVERY`]. On timeout `pg_stat_archiver` is read first and the statement
/// cancelled after (the backup is then aborted with the session), so the error can say what
/// the archiver was doing.
pub async fn stop(client: &Client, version_num: u32, wait: &StopWait<'_>) -> Result<StopResult> {
    let sql = if version_num >= PG15 {
        "select lsn::text, labelfile, spcmapfile from pg_backup_stop(wait_for_archive => true)"
    } else {
        "select lsn::text, labelfile, spcmapfile from pg_stop_backup(false, true)"
    };
    let started = Instant::now();
    let deadline = started + wait.timeout;
    let query = client.query_one(sql, &[]);
    tokio::pin!(query);
    let mut watcher = ArchiverSession::new(wait.conninfo);
    let row = loop {
        let next = (Instant::now() + WAIT_PROGRESS_EVERY).min(deadline);
        tokio::select! {
            r = &mut query => break r.map_err(|e| anyhow!("cannot stop the backup: {}", pg_error(&e)))?,
            () = tokio::time::sleep_until(next) => {}
        }
        let stats = watcher.stats().await;
        if Instant::now() >= deadline {
            if let Err(e) = client.cancel_token().cancel_query(NoTls).await {
                tracing::debug!(error = %e, "could not cancel pg_backup_stop");
            }
            return Err(stop_timed_out(wait.timeout, &stats));
        }
        wait.events.emit(&Event::Waiting {
            what: format!(
                "pg_backup_stop() to return: PostgreSQL waits for the backup's last WAL segment \
                 to be archived ({})",
                describe_stats(&stats)
            ),
            waited_ms: started.elapsed().as_millis() as u64,
            limit_ms: wait.timeout.as_millis() as u64,
        });
    };
    let lsn: String = row.get(0);
    let stop_lsn = lsn
        .parse()
        .with_context(|| format!("the server returned `{lsn}` as backup stop LSN"))?;
    Ok(StopResult {
        stop_lsn,
        backup_label: row.get(1),
        tablespace_map: row.get::<_, Option<String>>(2).unwrap_or_default(),
    })
}

/// A second session for `pg_stat_archiver`, opened on first use.
struct ArchiverSession<'a> {
    conninfo: &'a str,
    client: Option<Client>,
}

impl<'a> ArchiverSession<'a> {
    fn new(conninfo: &'a str) -> Self {
        ArchiverSession {
            conninfo,
            client: None,
        }
    }

    async fn stats(&mut self) -> Result<ArchiverStats> {
        if self.client.is_none() {
            self.client = Some(conn::connect(self.conninfo, Duration::from_secs(5)).await?);
        }
        let client = self.client.as_ref().expect("connected above");
        archiver::read_stats(client).await
    }
}

fn describe_stats(stats: &Result<ArchiverStats>) -> String {
    match stats {
        Ok(s) => s.describe(),
        // Its own hint (about conninfo) would only compete with the caller's.
        Err(e) => format!(
            "pg_stat_archiver could not be read: {}",
            crate::output::error_text(e)
                .split("\nhint: ")
                .next()
                .unwrap_or_default()
        ),
    }
}

/// The error for a `pg_backup_stop` that waited `timeout` for archiving.
fn stop_timed_out(timeout: Duration, stats: &Result<ArchiverStats>) -> anyhow::Error {
    let failing = matches!(stats, Ok(s) if s.failing_now);
    let hint = if failing {
        "hint: archive_command is failing: the server log says why; pgward's wal-push logs \
         its reason there too"
    } else {
        "hint: check archive_command (it should run `pgward wal-push %p`), the server log and \
         pg_stat_archiver; raise backup.wal_wait_timeout if archiving is just slow"
    };
    anyhow!(
        "pg_backup_stop() did not return within backup.wal_wait_timeout ({}): it waited for \
         WAL archiving, and PostgreSQL has not archived the backup's last WAL segment ({}); \
         the backup was aborted and no manifest was written\n{hint}",
        humantime::format_duration(timeout),
        describe_stats(stats)
    )
}

/// The name of every tablespace by oid, for messages about them.
pub async fn tablespace_names(client: &Client) -> Result<BTreeMap<u32, String>> {
    let rows = client
        .query("select oid, spcname::text from pg_tablespace", &[])
        .await
        .map_err(|e| anyhow!("cannot list pg_tablespace: {}", pg_error(&e)))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_servers_are_refused() {
        assert!(check_version(130_004).is_ok());
        assert!(check_version(150_018).is_ok());
        let err = check_version(120_010).unwrap_err().to_string();
        assert!(
            err.contains("PostgreSQL 12.10") && err.contains("13 and later"),
            "{err}"
        );
    }

    #[test]
    fn a_stop_timeout_says_it_waited_for_archiving_and_names_the_archiver_state() {
        let stats = ArchiverStats {
            last_archived_wal: Some("000000010000000000000004".into()),
            last_archived_time: Some("2026-12-01 21:00:00+00".into()),
            last_failed_wal: Some("000000010000000000000005".into()),
            last_failed_time: Some("2026-12-01 21:00:09+00".into()),
            failed_count: 3,
            failing_now: true,
        };
        let err = stop_timed_out(Duration::from_secs(3), &Ok(stats)).to_string();
        assert_eq!(
            err,
            "pg_backup_stop() did not return within backup.wal_wait_timeout (3s): it waited for \
             WAL archiving, and PostgreSQL has not archived the backup's last WAL segment \
             (pg_stat_archiver: last archived: 000000010000000000000004 at 2026-12-01 \
             21:00:00+00; last failure: 000000010000000000000005 at 2026-12-01 21:00:09+00 (3 \
             failures in all)); the backup was aborted and no manifest was written\n\
             hint: archive_command is failing: the server log says why; pgward's wal-push logs \
             its reason there too"
        );
        let err =
            stop_timed_out(Duration::from_secs(3), &Err(anyhow!("connection refused"))).to_string();
        assert!(
            err.contains("it waited for WAL archiving")
                && err.contains("pg_stat_archiver could not be read: connection refused")
                && err
                    .lines()
                    .last()
                    .unwrap()
                    .starts_with("hint: check archive_command"),
            "{err}"
        );
    }
}
