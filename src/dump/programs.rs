//! The PostgreSQL client programs a dump runs — `pg_dump`, `pg_dumpall`, `pg_restore` — and
//! how they reach the server.
//!
//! They come from the same directory as every other PostgreSQL program pgward runs
//! ([`PgBinaries`]: `[postgres] bindir`, else the usual search), as the same user. They are
//! pointed at the server of `[postgres] conninfo` with explicit `-h -p -U` (parsed as libpq
//! would, so the URL form works too) and the password through `PGPASSWORD`, never on the
//! command line. A database is named as a conninfo (`dbname='…'`): a bare name holding `=`
//! would otherwise be taken for one.
//!
//! A pg_dump older than the server cannot be trusted with it (pg_dump refuses newer servers,
//! and an older one would miss what the newer catalog holds), so [`Programs::check_versions`]
//! refuses before anything runs, naming both versions.

use crate::pg::binaries::{PgBinaries, parse_version_line};
use crate::pg::conn;
use anyhow::{Context as _, Result, bail};
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt as _;
use std::process::Command;
use std::time::Duration;

/// Deadline for `--version`.
const VERSION_TIMEOUT: Duration = Duration::from_secs(30);

/// The programs, and the arguments that connect them to the configured server.
#[derive(Debug, Clone)]
pub struct Programs {
    bins: PgBinaries,
    connect: Vec<OsString>,
    password: Option<OsString>,
    /// The database pg_dumpall connects to: the conninfo's, else `postgres`.
    maintenance_db: String,
}

impl Programs {
    pub fn new(bins: PgBinaries, conninfo: &str) -> Result<Programs> {
        let config = conn::parse_conninfo(conninfo)?;
        let mut connect: Vec<OsString> = Vec::new();
        let mut hosts = conn::host_names(&config);
        if hosts.is_empty() {
            // `hostaddr` alone: an address is a valid host name for `-h`.
            hosts = config
                .get_hostaddrs()
                .iter()
                .map(|a| a.to_string())
                .collect();
        }
        if !hosts.is_empty() {
            connect.extend(["-h".into(), hosts.join(",").into()]);
        }
        if let Some(port) = config.get_ports().first() {
            connect.extend(["-p".into(), port.to_string().into()]);
        }
        if let Some(user) = config.get_user() {
            connect.extend(["-U".into(), user.into()]);
        }
        // Never prompt: there is nobody to answer.
        connect.push("-w".into());
        Ok(Programs {
            bins,
            connect,
            password: config
                .get_password()
                .map(|p| OsString::from_vec(p.to_vec())),
            maintenance_db: config.get_dbname().unwrap_or("postgres").to_string(),
        })
    }

    fn client(&self, program: &str) -> Command {
        let mut cmd = self.bins.command(program);
        cmd.args(&self.connect);
        if let Some(p) = &self.password {
            cmd.env("PGPASSWORD", p);
        }
        cmd
    }

    /// `pg_dump -Fc -Z0` of `db` to standard output (pgward compresses).
    pub fn pg_dump(&self, db: &str, lock_wait_timeout: Duration) -> Command {
        let mut cmd = self.client("pg_dump");
        cmd.args(["--format=custom", "--compress=0"])
            .arg(format!(
                "--lock-wait-timeout={}",
                lock_wait_timeout.as_millis()
            ))
            .arg("--dbname")
            .arg(format!("dbname={}", conninfo_value(db)));
        cmd
    }

    /// `pg_dumpall --globals-only` (roles, tablespaces) to standard output.
    pub fn pg_dumpall_globals(&self, role_passwords: bool) -> Command {
        let mut cmd = self.client("pg_dumpall");
        cmd.arg("--globals-only")
            .arg("--database")
            .arg(&self.maintenance_db);
        if !role_passwords {
            cmd.arg("--no-role-passwords");
        }
        cmd
    }

    /// `psql -XAtq -v ON_ERROR_STOP=1` on `db` (the caller adds `-c` or `-f`).
    pub fn psql(&self, db: &str) -> Command {
        let mut cmd = self.client("psql");
        cmd.args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "--dbname"])
            .arg(format!("dbname={}", conninfo_value(db)));
        cmd
    }

    /// `psql` running an SQL script read from standard input in the maintenance database,
    /// going on after errors (the caller judges them).
    pub fn psql_script(&self) -> Command {
        let mut cmd = self.client("psql");
        cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=0", "-f", "-", "--dbname"])
            .arg(format!("dbname={}", conninfo_value(&self.maintenance_db)));
        cmd
    }

    /// `pg_restore --list` of an archive read from standard input (no server involved).
    pub fn pg_restore_list(&self) -> Command {
        let mut cmd = self.bins.command("pg_restore");
        cmd.arg("--list");
        cmd
    }

    /// `pg_restore --exit-on-error --single-transaction` of an archive read from standard
    /// input into `db`: nothing is committed unless the whole archive restores.
    pub fn pg_restore_into(&self, db: &str, options: RestoreOptions) -> Command {
        let mut cmd = self.client("pg_restore");
        cmd.args(["--exit-on-error", "--single-transaction"]);
        if options.no_owner {
            cmd.arg("--no-owner");
        }
        if options.clean {
            cmd.args(["--clean", "--if-exists"]);
        }
        if options.no_tablespaces {
            cmd.arg("--no-tablespaces");
        }
        cmd.arg("--dbname")
            .arg(format!("dbname={}", conninfo_value(db)));
        cmd
    }

    /// Refuses a pg_dump or pg_dumpall older than the server (`server_version`, e.g. `15.18`)
    /// and returns pg_dump's version.
    pub fn check_versions(&self, server_version: &str) -> Result<String> {
        let server_major = major_of(server_version)
            .with_context(|| format!("cannot read the server's version `{server_version}`"))?;
        let mut dump_version = String::new();
        for program in ["pg_dump", "pg_dumpall"] {
            let version = self.version_of(program)?;
            let major = major_of(&version)
                .with_context(|| format!("cannot read the major version of {program} {version}"))?;
            if major < server_major {
                bail!(
                    "{program} {version} ({}) is older than the server, PostgreSQL \
                     {server_version}: an older {program} cannot dump a newer server \
                     reliably; nothing was dumped\nhint: set [postgres] bindir to the bin \
                     directory of PostgreSQL {server_major} or newer",
                    self.bins.path(program).display()
                );
            }
            if program == "pg_dump" {
                dump_version = version;
            }
        }
        Ok(dump_version)
    }

    fn version_of(&self, program: &str) -> Result<String> {
        let path = self.bins.path(program);
        let out = crate::process::run(self.bins.command(program).arg("--version"), VERSION_TIMEOUT)
            .with_context(|| format!("cannot run {} --version", path.display()))?;
        if !out.success() {
            bail!("{} --version failed: {}", path.display(), out.stderr.trim());
        }
        parse_version_line(&out.stdout).with_context(|| {
            format!(
                "cannot read the version in `{}` ({} --version)",
                out.stdout.trim(),
                path.display()
            )
        })
    }
}

/// How `pg_restore` treats what it restores.
#[derive(Debug, Clone, Copy, Default)]
pub struct RestoreOptions {
    /// The restoring user owns the objects, instead of the owners as dumped.
    pub no_owner: bool,
    /// Drop each object the archive holds before creating it (`--clean --if-exists`).
    pub clean: bool,
    /// Objects go into the default tablespace (`--no-tablespaces`), and globals.sql's
    /// tablespaces are left out: a drill's scratch server must not create directories at the
    /// source's tablespace locations.
    pub no_tablespaces: bool,
}

/// The major version in `15.18`, `17beta1`, `9.6.24` (gives 9).
pub fn major_of(version: &str) -> Option<u32> {
    let digits: String = version.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// A libpq conninfo value: quoted, with `\` and `'` escaped.
pub fn conninfo_value(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::binaries::RunAs;
    use std::path::PathBuf;

    #[test]
    fn versions_and_quoting() {
        assert_eq!(major_of("15.18"), Some(15));
        assert_eq!(major_of("17beta1"), Some(17));
        assert_eq!(major_of("x"), None);
        assert_eq!(conninfo_value("it's a\\b"), "'it\\'s a\\\\b'");
    }

    #[test]
    fn connects_like_libpq_and_keeps_the_password_off_the_command_line() {
        let bins = PgBinaries::new(PathBuf::from("/pg/bin"), RunAs::CurrentUser);
        let p = Programs::new(
            bins,
            "host=/tmp/s port=6000 user=alice dbname=app password=SEKRET",
        )
        .unwrap();
        let cmd = p.pg_dump("my db", Duration::from_secs(300));
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "-h",
                "/tmp/s",
                "-p",
                "6000",
                "-U",
                "alice",
                "-w",
                "--format=custom",
                "--compress=0",
                "--lock-wait-timeout=300000",
                "--dbname",
                "dbname='my db'"
            ]
        );
        assert!(args.iter().all(|a| !a.contains("SEKRET")));
        let envs: Vec<_> = cmd.get_envs().collect();
        assert!(envs.iter().any(|(k, v)| *k == "PGPASSWORD" && v.is_some()));
        let restore: Vec<String> = (p
            .pg_restore_into("copy", RestoreOptions::default())
            .get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
        assert!(
            restore.ends_with(&[
                "--exit-on-error".to_string(),
                "--single-transaction".into(),
                "--dbname".into(),
                "dbname='copy'".into()
            ]),
            "{restore:?}"
        );
        let all = p.pg_dumpall_globals(false);
        let args: Vec<String> = all
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(args.ends_with(&[
            "--globals-only".to_string(),
            "--database".into(),
            "app".into(),
            "--no-role-passwords".into()
        ]));
    }
}
