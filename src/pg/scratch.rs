//! One throwaway or scratch PostgreSQL server: the demo's clusters, a drill's restored copy,
//! the tests' clusters.
//!
//! A [`ScratchSpec`] says which programs, which data directory, which socket and port, which
//! settings and who runs the server. [`ScratchSpec::initdb`] makes a new data directory,
//! [`ScratchSpec::adopt`] takes over an existing one (a restored backup); both write the
//! spec's settings into `postgresql.auto.conf` (read last, so they beat whatever the directory
//! inherited: a restored copy must not listen on the source's port or archive into the
//! source's repository). [`ScratchCluster::start`] returns a [`Running`] guard.
//!
//! The invariant: a server this module started does not outlive its guard. Dropping a
//! [`Running`] (also while unwinding from a panic) stops the server — the spec's first
//! shutdown mode, then immediate, then SIGKILL to the postmaster it started (by PID and
//! process start time, see [`postmaster`]) — and a start that fails stops whatever it started
//! before returning the error. The server listens on its Unix socket only.
//!
//! SQL runs through `psql` from the same binaries, not a tokio-postgres connection: the guard
//! and the tests are synchronous and may run inside or outside a tokio runtime, a `psql` under a
//! deadline cannot hang its caller, and there is no connection to re-establish across a
//! promotion or a restart. Async callers that want typed values connect with
//! [`ScratchCluster::conn_config`].

pub mod postmaster;
pub mod server_log;

use crate::pg::binaries::PgBinaries;
use crate::pg::conf;
use crate::process::{self, Output};
use anyhow::{Context, Result, anyhow, bail};
use postmaster::Postmaster;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Unix socket paths are limited to 107 bytes (`sun_path`).
const MAX_SOCKET_PATH: usize = 107;
/// Deadline for `initdb`, `psql` and `pg_ctl promote`.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);
/// Extra time a `pg_ctl` gets beyond its own `-t` before it is killed.
const PG_CTL_SLACK: Duration = Duration::from_secs(30);
/// How long a postmaster may take to exit once `pg_ctl stop` says it has, or after SIGKILL.
const EXIT_WAIT: Duration = Duration::from_secs(10);
/// How often recovery is polled.
const POLL: Duration = Duration::from_millis(100);

/// `pg_ctl stop -m <mode>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// Sessions are disconnected and a shutdown checkpoint is written.
    Fast,
    /// No checkpoint: the next start runs crash recovery.
    Immediate,
}

impl Shutdown {
    fn as_str(self) -> &'static str {
        match self {
            Shutdown::Fast => "fast",
            Shutdown::Immediate => "immediate",
        }
    }
}

/// What happens to the data directory when the last handle on the cluster goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterUse {
    KeepDataDir,
    /// Removed once the server is stopped (never while a postmaster still runs in it).
    RemoveDataDir,
}

/// Options of [`ScratchSpec::initdb`].
#[derive(Debug, Clone, Default)]
pub struct Initdb {
    pub data_checksums: bool,
}

/// What a scratch server is; fields are public so callers adjust the defaults of
/// [`ScratchSpec::new`] before `initdb` or `adopt`.
#[derive(Debug, Clone)]
pub struct ScratchSpec {
    /// The programs, and who runs them (the `postgres` user when we are root).
    pub bins: PgBinaries,
    pub datadir: PathBuf,
    pub socket_dir: PathBuf,
    pub port: u16,
    /// `pg_ctl -l`; appended to across restarts.
    pub log_file: PathBuf,
    /// Written to `postgresql.auto.conf` after the socket settings, in this order.
    pub settings: Vec<(String, String)>,
    /// The role `psql` connects as.
    pub superuser: String,
    /// `pg_ctl start -t`: how long until the server accepts connections (a standby in
    /// recovery counts once it accepts read-only ones).
    pub start_timeout: Duration,
    /// `pg_ctl stop -t`, for each shutdown mode tried.
    pub stop_timeout: Duration,
    /// The first shutdown mode a dropped guard tries (then immediate, then SIGKILL).
    pub on_drop: Shutdown,
    pub after_use: AfterUse,
}

/// A TCP port nobody listens on right now. Scratch servers listen on their Unix socket only, so
/// the port only names the socket file.
pub fn free_port() -> Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .context("cannot find a free port")
}

impl ScratchSpec {
    /// A server in `datadir` with its socket in `socket_dir`, a free port, the log at
    /// `<datadir>.log`, no settings of its own, fast shutdown on drop, the directory kept.
    pub fn new(bins: PgBinaries, datadir: &Path, socket_dir: &Path) -> Result<ScratchSpec> {
        let absolute = |p: &Path| {
            std::path::absolute(p).with_context(|| format!("cannot resolve {}", p.display()))
        };
        let datadir = absolute(datadir)?;
        let mut log_file = datadir.clone().into_os_string();
        log_file.push(".log");
        Ok(ScratchSpec {
            bins,
            socket_dir: absolute(socket_dir)?,
            port: free_port()?,
            log_file: PathBuf::from(log_file),
            datadir,
            settings: Vec::new(),
            superuser: "postgres".to_string(),
            start_timeout: Duration::from_secs(60),
            stop_timeout: Duration::from_secs(60),
            on_drop: Shutdown::Fast,
            after_use: AfterUse::KeepDataDir,
        })
    }

    /// Adds a setting (see [`ScratchSpec::settings`]).
    pub fn setting(mut self, name: &str, value: impl Into<String>) -> ScratchSpec {
        self.settings.push((name.to_string(), value.into()));
        self
    }

    /// Runs `initdb` (trust authentication, UTF8, C locale, no fsync of the new files) and
    /// writes the settings.
    pub fn initdb(self, opts: &Initdb) -> Result<ScratchCluster> {
        self.prepare_socket_dir()?;
        let mut cmd = self.bins.command("initdb");
        cmd.current_dir("/")
            .arg("-D")
            .arg(&self.datadir)
            .args(["-U", &self.superuser, "-A", "trust", "-N"])
            .args(["-E", "UTF8", "--locale=C"]);
        if opts.data_checksums {
            cmd.arg("--data-checksums");
        }
        let out = process::run(&mut cmd, CLIENT_TIMEOUT)?;
        if !out.success() {
            bail!(
                "initdb of {} failed\n{}",
                self.datadir.display(),
                out.describe()
            );
        }
        self.adopt()
    }

    /// Takes over an existing data directory and writes the settings.
    pub fn adopt(self) -> Result<ScratchCluster> {
        if !self.datadir.join("PG_VERSION").is_file() {
            bail!(
                "{} is not a PostgreSQL data directory (no PG_VERSION)",
                self.datadir.display()
            );
        }
        self.prepare_socket_dir()?;
        let mut settings = vec![
            ("port".to_string(), self.port.to_string()),
            ("listen_addresses".to_string(), String::new()),
            (
                "unix_socket_directories".to_string(),
                self.socket_dir.to_string_lossy().into_owned(),
            ),
        ];
        settings.extend(self.settings.iter().cloned());
        conf::set_in_auto_conf(
            &self.datadir,
            &settings,
            "scratch server settings (pgward)",
            self.bins.run_as(),
        )?;
        Ok(ScratchCluster {
            inner: Arc::new(Inner { spec: self }),
        })
    }

    fn prepare_socket_dir(&self) -> Result<()> {
        let socket = self.socket_dir.join(format!(".s.PGSQL.{}", self.port));
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            bail!(
                "{} is too long for a Unix socket path ({} bytes, at most {MAX_SOCKET_PATH})\n\
                 hint: put the socket directory somewhere shorter, e.g. under /tmp",
                socket.display(),
                socket.as_os_str().len()
            );
        }
        if !self.socket_dir.is_dir() {
            let dir = &self.socket_dir;
            fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                .with_context(|| format!("cannot chmod {}", dir.display()))?;
            self.bins.run_as().chown(dir)?;
        }
        Ok(())
    }
}

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
        let mut cmd = self.client("psql");
        cmd.args(["-d", "postgres", "-XAtq", "-v", "ON_ERROR_STOP=1"])
            .args(format)
            .args(["-c", sql]);
        process::run(&mut cmd, CLIENT_TIMEOUT)
    }

    /// psql's output for `sql`, without the final newline; an error unless it exits 0.
    fn psql_stdout(&self, sql: &str, format: &[&str]) -> Result<String> {
        let out = self.run_psql(sql, format)?;
        if !out.success() {
            bail!(
                "psql on {} failed: {}\n{}",
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
        // Separators no text value holds, so values with `|` or line breaks split right.
        let text = self.psql_stdout(sql, &["-F", FIELD_SEP, "-R", RECORD_SEP])?;
        Ok(split_rows(&text))
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
                    return Ok(Running {
                        cluster: self.clone(),
                        postmaster,
                        log_offset,
                        stopped: false,
                    });
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
    fn shut_down(&self, postmaster: &Postmaster, first: Shutdown) -> Result<()> {
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
