//! The guard of a started server.

use super::postmaster::Postmaster;
use super::{PG_CTL_SLACK, POLL, ScratchCluster, Shutdown, server_log};
use crate::process;
use anyhow::{Result, bail};
use std::time::{Duration, Instant};

/// A server started by [`ScratchCluster::start`]. Dropping it stops the server (see the module
/// doc); [`Running::stop`] does so and reports how it went. Derefs to its cluster for SQL and
/// the log.
#[derive(Debug)]
pub struct Running {
    cluster: ScratchCluster,
    postmaster: Postmaster,
    /// Where this start's lines begin in the log.
    log_offset: u64,
    stopped: bool,
}

impl std::ops::Deref for Running {
    type Target = ScratchCluster;
    fn deref(&self) -> &ScratchCluster {
        &self.cluster
    }
}

impl Running {
    pub(super) fn new(cluster: ScratchCluster, postmaster: Postmaster, log_offset: u64) -> Running {
        Running {
            cluster,
            postmaster,
            log_offset,
            stopped: false,
        }
    }

    pub fn postmaster(&self) -> Postmaster {
        self.postmaster
    }

    pub fn pid(&self) -> u32 {
        self.postmaster.pid()
    }

    /// What the server logged since this start.
    pub fn log_since_start(&self) -> String {
        server_log::read_from(&self.spec().log_file, self.log_offset)
    }

    /// Waits until recovery has ended (`pg_is_in_recovery()` is false): `pg_ctl start -w`
    /// returns as soon as a server in recovery accepts connections, before recovery has reached
    /// its target or failed. Fails at once when this start's log has a FATAL or PANIC line (they
    /// are in the error) or the server has exited; fails after `timeout`.
    pub fn wait_recovery_done(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let log_file = &self.spec().log_file;
        loop {
            let log = self.log_since_start();
            let fatal = server_log::fatal_lines(&log);
            if !fatal.is_empty() {
                bail!(
                    "recovery of {} failed:\n{}\n{}",
                    self.datadir().display(),
                    fatal.join("\n"),
                    server_log::tail(log_file, &log, 40)
                );
            }
            // Connections may be refused for a moment while the server promotes.
            if self
                .value("select pg_is_in_recovery()")
                .is_ok_and(|v| v == "f")
            {
                return Ok(());
            }
            if !self.postmaster.is_alive() {
                bail!(
                    "the server in {} exited during recovery\n{}",
                    self.datadir().display(),
                    server_log::tail(log_file, &self.log_since_start(), 40)
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "the server in {} is still in recovery after {timeout:?}\n{}",
                    self.datadir().display(),
                    server_log::tail(log_file, &log, 40)
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits until recovery has paused at its target (`pg_get_wal_replay_pause_state()` is
    /// `paused`; the server was started with `recovery_target_action = pause`). Fails at once
    /// when this start's log has a FATAL or PANIC line (PostgreSQL 15 ends with FATAL "recovery
    /// ended before configured recovery target was reached" when the archive runs out first),
    /// when recovery ended instead of pausing (the target was passed, or none was set), or when
    /// the server exited; fails after `timeout`. Every error holds the log tail.
    pub fn wait_recovery_paused(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let log_file = &self.spec().log_file;
        let dir = self.datadir().display();
        loop {
            let log = self.log_since_start();
            let fatal = server_log::fatal_lines(&log);
            if !fatal.is_empty() {
                bail!(
                    "recovery of {dir} failed before pausing at its target:\n{}\n{}",
                    fatal.join("\n"),
                    server_log::tail(log_file, &log, 40)
                );
            }
            // One query, so the two answers belong to one moment; a server that has ended
            // recovery refuses the pause-state function, hence the case.
            let state = self.value(
                "select case when pg_is_in_recovery() \
                 then pg_get_wal_replay_pause_state() else 'not in recovery' end",
            );
            match state.as_deref() {
                Ok("paused") => return Ok(()),
                Ok("not in recovery") => bail!(
                    "recovery of {dir} ended instead of pausing at its target: the target was \
                     passed, or none was set\nhint: recovery pauses only with a \
                     recovery_target* setting and recovery_target_action = 'pause'\n{}",
                    server_log::tail(log_file, &self.log_since_start(), 40)
                ),
                // Not consistent yet (connections refused), or replaying.
                _ => {}
            }
            if !self.postmaster.is_alive() {
                bail!(
                    "the server in {dir} exited during recovery\n{}",
                    server_log::tail(log_file, &self.log_since_start(), 40)
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "recovery of {dir} has not paused at its target after {timeout:?}\n{}",
                    server_log::tail(log_file, &log, 40)
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Ends recovery now (`pg_ctl promote -w`) and waits until the server accepts writes.
    pub fn promote(&self, timeout: Duration) -> Result<()> {
        let mut cmd = self.command("pg_ctl");
        cmd.arg("-D").arg(self.datadir()).args([
            "-w",
            "-t",
            &timeout.as_secs().max(1).to_string(),
            "promote",
        ]);
        let out = process::run(&mut cmd, timeout + PG_CTL_SLACK)?;
        if !out.success() {
            bail!(
                "cannot promote the server in {}\n{}\n{}",
                self.datadir().display(),
                out.describe(),
                server_log::tail(&self.spec().log_file, &self.log_since_start(), 30)
            );
        }
        self.wait_recovery_done(timeout)
    }

    /// Fast shutdown; see [`Running::stop_with`].
    pub fn stop(self) -> Result<()> {
        self.stop_with(Shutdown::Fast)
    }

    /// Stops the server with `mode`, escalating (immediate, then SIGKILL) when that does not
    /// work; the error then says what it took. A server that already exited is fine.
    pub fn stop_with(mut self, mode: Shutdown) -> Result<()> {
        self.stopped = true;
        self.cluster.shut_down(&self.postmaster, mode)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        if let Err(e) = self
            .cluster
            .shut_down(&self.postmaster, self.spec().on_drop)
        {
            tracing::warn!("scratch server guard: {e:#}");
        }
    }
}
