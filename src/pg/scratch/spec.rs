//! What a scratch server is, and making its data directory: `initdb`, or adopting one.

use super::{AfterUse, CLIENT_TIMEOUT, MAX_SOCKET_PATH, Shutdown, free_port};
use crate::pg::binaries::PgBinaries;
use crate::pg::conf;
use crate::pg::scratch::ScratchCluster;
use crate::process;
use anyhow::{Context, Result, bail};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
        Ok(ScratchCluster::new(self))
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
