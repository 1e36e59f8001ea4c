//! A scratch server's data directory: its programs pointed at it, SQL through `psql`, the log,
//! and starting and stopping the server.

use super::postmaster::Postmaster;
use super::{
    AfterUse, CLIENT_TIMEOUT, EXIT_WAIT, PG_CTL_SLACK, Running, ScratchSpec, Shutdown, server_log,
};
use crate::process::{self, Output};
use anyhow::{Context, Result, anyhow, bail};
use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A data directory set up as a scratch server (not necessarily running). Clones share it; with
/// [`AfterUse::RemoveDataDir`] the directory goes when the last clone and guard are gone.
#[derive(Debug, Clone)]
pub struct ScratchCluster {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    spec: ScratchSpec,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let dir = &self.spec.datadir;
        if self.spec.after_use == AfterUse::RemoveDataDir
            && Postmaster::of_datadir(dir).is_none()
            && let Err(e) = fs::remove_dir_all(dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!("cannot remove the scratch directory {}: {e}", dir.display());
        }
    }
}

impl ScratchCluster {
    pub(super) fn new(spec: ScratchSpec) -> ScratchCluster {
        ScratchCluster {
            inner: Arc::new(Inner { spec }),
        }
    }

    pub fn spec(&self) -> &ScratchSpec {
        &self.inner.spec
    }

    pub fn datadir(&self) -> &Path {
        &self.spec().datadir
    }

    /// The whole server log (empty before the first start).
    pub fn server_log(&self) -> String {
        server_log::read_from(&self.spec().log_file, 0)
    }

    /// The last `n` lines of the server log, labelled, for messages.
    pub fn log_tail(&self, n: usize) -> String {
        server_log::tail(&self.spec().log_file, &self.server_log(), n)
    }

    /// The live postmaster of this data directory, whoever started it.
    pub fn postmaster(&self) -> Option<Postmaster> {
        Postmaster::of_datadir(self.datadir())
    }

    /// A PostgreSQL program run as the server's user from `/` (a working directory every user
    /// can enter).
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = self.spec().bins.command(program);
        cmd.current_dir("/");
        cmd
    }

    /// A client program (`psql`, `pgbench`, `pg_basebackup`, ...) pointed at the socket.
    pub fn client(&self, program: &str) -> Command {
        let s = self.spec();
        let mut cmd = self.command(program);
        cmd.arg("-h")
            .arg(&s.socket_dir)
            .args(["-p", &s.port.to_string(), "-U", &s.superuser])
            .env("PGCONNECT_TIMEOUT", "10");
        cmd
    }

    /// Where async callers connect (tokio-postgres, database `postgres`).
    pub fn conn_config(&self) -> tokio_postgres::Config {
        let s = self.spec();
        let mut config = tokio_postgres::Config::new();
        config
            .host_path(&s.socket_dir)
            .port(s.port)
            .user(&s.superuser)
            .dbname("postgres")
            .application_name("pgward-scratch")
            .connect_timeout(Duration::from_secs(10));
        config
    }

    /// `psql -XAtq -v ON_ERROR_STOP=1 -c <sql>` on database `postgres`, as it finished.
    pub fn psql_output(&self, sql: &str) -> Result<Output, process::RunError> {
        self.run_psql(sql, &[])
    }

    fn run_psql(&self, sql: &str, format: &[&str]) -> Result<Output, process::RunError> {
        self.run_psql_in("postgres", sql, format)
    }

    fn run_psql_in(
        &self,
        db: &str,
        sql: &str,
        format: &[&str],
    ) -> Result<Output, process::RunError> {
        let mut cmd = self.client("psql");
        // As `dbname=<quoted>`: a bare name holding `=` or `postgres://` would be read as a
        // connection string whose host and port beat `-h` and `-p`.
        cmd.arg("-d")
            .arg(dbname_arg(db))
            .args(["-XAtq", "-v", "ON_ERROR_STOP=1"])
            .args(format)
            .args(["-c", sql]);
        process::run(&mut cmd, CLIENT_TIMEOUT)
    }

    /// psql's output for `sql`, without the final newline; an error unless it exits 0.
    fn psql_stdout(&self, sql: &str, format: &[&str]) -> Result<String> {
        self.psql_stdout_in("postgres", sql, format)
    }

    fn psql_stdout_in(&self, db: &str, sql: &str, format: &[&str]) -> Result<String> {
        let out = self.run_psql_in(db, sql, format)?;
        if !out.success() {
            bail!(
                "psql on {} (database {db}) failed: {}\n{}",
                self.datadir().display(),
                sql.trim(),
                out.describe()
            );
        }
        Ok(out.stdout.trim_end_matches('\n').to_string())
    }

    /// Runs `sql` (one or more statements); returns psql's unaligned, tuples-only output
    /// (columns separated by `|`) without the final newline.
    pub fn psql(&self, sql: &str) -> Result<String> {
        self.psql_stdout(sql, &[])
    }

    /// The rows `sql` returns (of every statement that returns rows), each column as text (NULL
    /// as empty). A single row holding one empty string reads as no rows.
    pub fn rows(&self, sql: &str) -> Result<Vec<Vec<String>>> {
        self.rows_in("postgres", sql)
    }

    /// [`ScratchCluster::rows`] on database `db`.
    pub fn rows_in(&self, db: &str, sql: &str) -> Result<Vec<Vec<String>>> {
        // Separators no text value holds, so values with `|` or line breaks split right.
        let text = self.psql_stdout_in(db, sql, &["-F", FIELD_SEP, "-R", RECORD_SEP])?;
        Ok(split_rows(&text))
    }

    /// The first column of the first row `sql` returns on database `db` (empty when none).
    pub fn value_in(&self, db: &str, sql: &str) -> Result<String> {
        Ok(self
            .rows_in(db, sql)?
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next())
            .unwrap_or_default())
    }

    /// The first column of the first row `sql` returns.
    pub fn value(&self, sql: &str) -> Result<String> {
        self.rows(sql)?
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next())
            .with_context(|| format!("no result from: {}", sql.trim()))
    }

    /// Starts the server (`pg_ctl start -w`). A start that fails stops whatever it started
    /// (immediate, then SIGKILL) before returning the error, which holds pg_ctl's output and
    /// the log of this start.
    pub fn start(&self) -> Result<Running> {
        let s = self.spec();
        if let Some(pm) = self.postmaster() {
            bail!(
                "a server already runs in {} (pid {})\nhint: stop it first",
                s.datadir.display(),
                pm.pid()
            );
        }
        let log_offset = server_log::len(&s.log_file);
        let mut cmd = self.command("pg_ctl");
        cmd.arg("-D")
            .arg(&s.datadir)
            .arg("-l")
            .arg(&s.log_file)
            .args([
                "-w",
                "-t",
                &s.start_timeout.as_secs().max(1).to_string(),
                "start",
            ]);
        let outcome = process::run(&mut cmd, s.start_timeout + PG_CTL_SLACK);
        let failure = match &outcome {
            Ok(out) if out.success() => match self.postmaster() {
                Some(postmaster) => {
                    return Ok(Running::new(self.clone(), postmaster, log_offset));
                }
                None => "pg_ctl reported a start, but no server runs".to_string(),
            },
            Ok(out) => out.describe(),
            Err(e) => e.to_string(),
        };
        // pg_ctl gives up (its -t, or our deadline) while the server may still come up, and the
        // server writes postmaster.pid a moment after it forks: look for a little while.
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut cleanup = String::new();
        loop {
            if let Some(pm) = self.postmaster() {
                cleanup = match self.shut_down(&pm, Shutdown::Immediate) {
                    Ok(()) => format!("\nthe server it left (pid {}) was stopped", pm.pid()),
                    Err(e) => format!("\n{e:#}"),
                };
                break;
            }
            if Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = server_log::read_from(&s.log_file, log_offset);
        Err(anyhow!(
            "the server in {} did not start{cleanup}\n{failure}\n{}",
            s.datadir.display(),
            server_log::tail(&s.log_file, &log, 30)
        ))
    }

    /// `pg_ctl stop -m <mode>`, then immediate, then SIGKILL, until `postmaster` is gone. An
    /// error says what it took; the server is stopped unless the error says the kill failed.
    pub(super) fn shut_down(&self, postmaster: &Postmaster, first: Shutdown) -> Result<()> {
        let s = self.spec();
        let modes: &[Shutdown] = match first {
            Shutdown::Fast => &[Shutdown::Fast, Shutdown::Immediate],
            Shutdown::Immediate => &[Shutdown::Immediate],
        };
        // What did not work; a server that exits during an attempt that failed is stopped too.
        let mut failures = Vec::new();
        for &mode in modes {
            if !postmaster.is_alive() {
                break;
            }
            let mut cmd = self.command("pg_ctl");
            cmd.arg("-D").arg(&s.datadir).args([
                "-m",
                mode.as_str(),
                "-w",
                "-t",
                &s.stop_timeout.as_secs().max(1).to_string(),
                "stop",
            ]);
            let said = match process::run(&mut cmd, s.stop_timeout + PG_CTL_SLACK) {
                // pg_ctl returns once postmaster.pid is gone, a moment before the process.
                Ok(out) if out.success() && postmaster.wait_gone(EXIT_WAIT) => break,
                Ok(out) => out.describe(),
                Err(e) => e.to_string(),
            };
            if postmaster.is_alive() {
                failures.push(format!("pg_ctl stop -m {}: {said}", mode.as_str()));
            }
        }
        if postmaster.is_alive() {
            postmaster.kill().with_context(|| {
                format!("cannot kill the postmaster (pid {})", postmaster.pid())
            })?;
            if !postmaster.wait_gone(EXIT_WAIT) {
                bail!(
                    "the postmaster (pid {}) of {} survived SIGKILL",
                    postmaster.pid(),
                    s.datadir.display()
                );
            }
            failures.push(format!("killed the postmaster (pid {})", postmaster.pid()));
        }
        if failures.is_empty() {
            Ok(())
        } else {
            bail!(
                "the server in {} did not stop as asked:\n{}",
                s.datadir.display(),
                failures.join("\n")
            )
        }
    }
}

/// `dbname=<db>`, quoted for a connection string: the one safe way to name a database to a
/// client program that also gets `-h` and `-p`.
pub fn dbname_arg(db: &str) -> String {
    format!("dbname={}", crate::dump::programs::conninfo_value(db))
}

const FIELD_SEP: &str = "\x1f";
const RECORD_SEP: &str = "\x1e";

fn split_rows(text: &str) -> Vec<Vec<String>> {
    if text.is_empty() {
        return Vec::new();
    }
    text.split(RECORD_SEP)
        .map(|r| r.split(FIELD_SEP).map(str::to_string).collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_split_on_separators_only() {
        assert!(split_rows("").is_empty());
        let text = "1\x1fa|b\x1e2\x1ftwo\nlines";
        assert_eq!(
            split_rows(text),
            vec![vec!["1", "a|b"], vec!["2", "two\nlines"]]
        );
    }
}
