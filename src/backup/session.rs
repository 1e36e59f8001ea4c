//! The server side of a non-exclusive backup: `pg_backup_start` / `pg_backup_stop` on one
//! session that stays open for the whole copy (PostgreSQL aborts the backup when the session
//! ends, so a pgward that dies leaves nothing behind on the server).
//!
//! PostgreSQL 15 renamed the functions and dropped exclusive backups
//! (<https://www.postgresql.org/docs/15/functions-admin.html#FUNCTIONS-ADMIN-BACKUP>); 13 and 14
//! have `pg_start_backup(label, fast, exclusive)` / `pg_stop_backup(exclusive,
//! wait_for_archive)` with the same results.

use crate::pg::Lsn;
use anyhow::{Context, Result, anyhow, bail};
use std::collections::BTreeMap;
use std::time::Duration;
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

/// Stops the backup, waiting for the last WAL segment to be archived, for at most `timeout`.
/// On timeout the statement is cancelled (the backup is then aborted with the session).
pub async fn stop(client: &Client, version_num: u32, timeout: Duration) -> Result<StopResult> {
    let sql = if version_num >= PG15 {
        "select lsn::text, labelfile, spcmapfile from pg_backup_stop(wait_for_archive => true)"
    } else {
        "select lsn::text, labelfile, spcmapfile from pg_stop_backup(false, true)"
    };
    let row = match tokio::time::timeout(timeout, client.query_one(sql, &[])).await {
        Ok(r) => r.map_err(|e| anyhow!("cannot stop the backup: {}", pg_error(&e)))?,
        Err(_) => {
            if let Err(e) = client.cancel_token().cancel_query(NoTls).await {
                tracing::debug!(error = %e, "could not cancel pg_backup_stop");
            }
            let detail = archiver_status(client).await.unwrap_or_default();
            bail!(
                "pg_backup_stop() did not return within backup.wal_wait_timeout ({}): \
                 PostgreSQL is still waiting for the backup's last WAL segment to be archived, \
                 so archiving is not keeping up or is broken{detail}\n\
                 hint: check archive_command (it should run `pgward wal-push %p`), the server log \
                 and pg_stat_archiver; raise backup.wal_wait_timeout if archiving is just slow",
                humantime::format_duration(timeout)
            );
        }
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

/// The name of every tablespace by oid, for messages about them.
pub async fn tablespace_names(client: &Client) -> Result<BTreeMap<u32, String>> {
    let rows = client
        .query("select oid, spcname::text from pg_tablespace", &[])
        .await
        .map_err(|e| anyhow!("cannot list pg_tablespace: {}", pg_error(&e)))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// `; last archiving failure: <wal> at <time>` from `pg_stat_archiver`, if any.
async fn archiver_status(client: &Client) -> Option<String> {
    let q = client.query_one(
        "select last_failed_wal, last_failed_time::text, last_archived_wal from pg_stat_archiver",
        &[],
    );
    let row = tokio::time::timeout(Duration::from_secs(5), q)
        .await
        .ok()?
        .ok()?;
    let failed: Option<String> = row.get(0);
    let when: Option<String> = row.get(1);
    let archived: Option<String> = row.get(2);
    let mut s = String::new();
    if let Some(f) = failed {
        s += &format!(
            "; last archiving failure: {f} at {}",
            when.unwrap_or_default()
        );
    }
    if let Some(a) = archived {
        s += &format!("; last archived: {a}");
    }
    Some(s)
}

/// The server's message with its detail and hint, which tokio-postgres' `Display` leaves out.
pub fn pg_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = db.message().to_string();
            if let Some(d) = db.detail() {
                s += &format!(" ({d})");
            }
            if let Some(h) = db.hint() {
                s += &format!("\nhint: {h}");
            }
            s
        }
        None => e.to_string(),
    }
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
}
