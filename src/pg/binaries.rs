//! Locating the PostgreSQL programs (`initdb`, `pg_ctl`, `psql`, ...) and running them as the
//! `postgres` OS user.
//!
//! Owns two facts the rest of pgward should not rediscover:
//! - Where the programs are: `[postgres] bindir` if configured (and then only there, so a
//!   mistyped path is an error rather than a silent fallback to another version), else
//!   `$PGWARD_PG_BINDIR`, else `/usr/lib/postgresql/{17,16,15,14,13}/bin` (Debian/Ubuntu's
//!   layout, newest first), else `pg_config --bindir` from `PATH`.
//! - Who runs them: PostgreSQL refuses to run as root (`initdb`, `postgres`), and the server runs
//!   `archive_command` as its own user, so when pgward's effective uid is 0 every PostgreSQL
//!   program is started as the `postgres` user through `std::process::Command::uid/gid` (the
//!   standard library also drops root's supplementary groups). No `unsafe`: the effective uid is
//!   read from the owner of `/proc/self`, and the user from `/etc/passwd`.

use anyhow::{Context, Result, bail};
use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Environment variable naming the directory that holds the PostgreSQL programs.
pub const BINDIR_ENV: &str = "PGWARD_PG_BINDIR";

/// Major versions looked for under `/usr/lib/postgresql/<major>/bin`, newest first.
pub const DEBIAN_MAJORS: [u32; 5] = [17, 16, 15, 14, 13];

/// Name of the OS user PostgreSQL runs as.
pub const POSTGRES_USER: &str = "postgres";

/// Environment variables that could point a client at another server or change its behaviour;
/// removed from every PostgreSQL command pgward starts.
const CLIENT_ENV: [&str; 10] = [
    "PGDATA",
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGUSER",
    "PGDATABASE",
    "PGPASSWORD",
    "PGSERVICE",
    "PGOPTIONS",
    "PGSSLMODE",
];

/// The agent's systemd notification socket and watchdog: a drill's scratch postmaster (Debian
/// builds PostgreSQL with systemd support) would otherwise tell the agent's unit it is ready
/// or stopping.
const SYSTEMD_ENV: [&str; 3] = ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"];

/// An OS user, as listed in `/etc/passwd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

/// Whether this process runs with effective uid 0. `/proc/self` is owned by the process's
/// effective uid, which avoids an `unsafe` call to `geteuid`.
pub fn is_root() -> Result<bool> {
    let meta = std::fs::metadata("/proc/self")
        .context("cannot stat /proc/self to find the effective uid (is /proc mounted?)")?;
    Ok(meta.uid() == 0)
}

/// Parses `/etc/passwd` text and returns the entry for `name`.
pub fn parse_passwd(text: &str, name: &str) -> Option<OsUser> {
    text.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() >= 6 && f[0] == name {
            Some(OsUser {
                name: name.to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: PathBuf::from(f[5]),
            })
        } else {
            None
        }
    })
}

/// The `postgres` OS user. Users known only to NSS modules (LDAP, sssd) are not found: only
/// `/etc/passwd` is read.
pub fn postgres_user() -> Result<OsUser> {
    let text = std::fs::read_to_string("/etc/passwd").context("cannot read /etc/passwd")?;
    parse_passwd(&text, POSTGRES_USER).with_context(|| {
        format!(
            "running as root, but there is no `{POSTGRES_USER}` user in /etc/passwd\n\
             hint: PostgreSQL refuses to run as root; install PostgreSQL (which creates the \
             user) or run pgward as the database's OS user"
        )
    })
}

/// Who PostgreSQL programs run as: ourselves, or (when we are root) the `postgres` user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunAs {
    CurrentUser,
    User(OsUser),
}

impl RunAs {
    /// `postgres` when the effective uid is 0, else the current user.
    pub fn detect() -> Result<RunAs> {
        if is_root()? {
            Ok(RunAs::User(postgres_user()?))
        } else {
            Ok(RunAs::CurrentUser)
        }
    }

    /// Makes `cmd` run as this user (sets uid, gid and the login environment).
    pub fn apply<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        if let RunAs::User(u) = self {
            cmd.uid(u.uid)
                .gid(u.gid)
                .env("HOME", &u.home)
                .env("USER", &u.name)
                .env("LOGNAME", &u.name);
        }
        cmd
    }

    /// Gives `path` to this user (a no-op for the current user).
    pub fn chown(&self, path: &Path) -> Result<()> {
        if let RunAs::User(u) = self {
            std::os::unix::fs::chown(path, Some(u.uid), Some(u.gid))
                .with_context(|| format!("cannot chown {} to {}", path.display(), u.name))?;
        }
        Ok(())
    }

    /// The user's name, for messages.
    pub fn describe(&self) -> String {
        match self {
            RunAs::CurrentUser => "the current user".to_string(),
            RunAs::User(u) => format!("the `{}` user", u.name),
        }
    }
}

/// A directory holding the PostgreSQL programs, and the user to run them as.
#[derive(Debug, Clone)]
pub struct PgBinaries {
    bindir: PathBuf,
    run_as: RunAs,
}

impl PgBinaries {
    /// Finds the programs (see the module doc for the search order) and decides who runs them.
    /// A directory qualifies when it holds `pg_ctl`.
    pub fn locate(configured: Option<&Path>) -> Result<PgBinaries> {
        let env = std::env::var_os(BINDIR_ENV);
        let bindir = find_bindir(configured, env, &standard_dirs(), pg_config_bindir)?;
        Ok(PgBinaries {
            bindir,
            run_as: RunAs::detect()?,
        })
    }

    /// Programs from `bindir`, run as `run_as` (no search).
    pub fn new(bindir: PathBuf, run_as: RunAs) -> PgBinaries {
        PgBinaries { bindir, run_as }
    }

    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    pub fn run_as(&self) -> &RunAs {
        &self.run_as
    }

    /// The full path of `program` in this directory.
    pub fn path(&self, program: &str) -> PathBuf {
        self.bindir.join(program)
    }

    /// A command for `program`, run as the right user, with the `PG*` client variables removed
    /// (nothing from the caller's environment may redirect it to another server) and `LC_ALL=C`
    /// (messages pgward may parse stay in English).
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.path(program));
        for var in CLIENT_ENV.iter().chain(&SYSTEMD_ENV) {
            cmd.env_remove(var);
        }
        cmd.env("LC_ALL", "C");
        self.run_as.apply(&mut cmd);
        cmd
    }

    /// The server's version line, e.g. `15.18`, from `postgres --version`.
    pub fn server_version(&self) -> Result<String> {
        let out = Command::new(self.path("postgres"))
            .arg("--version")
            .env("LC_ALL", "C")
            .output()
            .with_context(|| format!("cannot run {} --version", self.path("postgres").display()))?;
        if !out.status.success() {
            bail!(
                "{} --version failed: {}",
                self.path("postgres").display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        parse_version_line(&String::from_utf8_lossy(&out.stdout)).with_context(|| {
            format!(
                "cannot read the version from `{}`",
                String::from_utf8_lossy(&out.stdout).trim()
            )
        })
    }
}

/// The version number in a `postgres --version` line (`postgres (PostgreSQL) 15.18 (Debian
/// 15.18-1.pgdg120+1)` gives `15.18`).
pub fn parse_version_line(line: &str) -> Option<String> {
    let rest = line.split_once("(PostgreSQL)")?.1.trim_start();
    let version: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '.')
        .collect();
    version
        .starts_with(|c: char| c.is_ascii_digit())
        .then_some(version)
}

/// `/usr/lib/postgresql/<major>/bin` for [`DEBIAN_MAJORS`], newest first.
fn standard_dirs() -> Vec<PathBuf> {
    DEBIAN_MAJORS
        .iter()
        .map(|m| PathBuf::from(format!("/usr/lib/postgresql/{m}/bin")))
        .collect()
}

/// `pg_config --bindir`, if `pg_config` is on `PATH` and answers.
fn pg_config_bindir() -> Option<PathBuf> {
    let out = Command::new("pg_config").arg("--bindir").output().ok()?;
    if !out.status.success() {
        return None;
    }
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!dir.is_empty()).then(|| PathBuf::from(dir))
}

/// The search itself, with the environment, the standard places and `pg_config` passed in so it
/// can be tested.
fn find_bindir(
    configured: Option<&Path>,
    env: Option<OsString>,
    standard: &[PathBuf],
    pg_config: impl FnOnce() -> Option<PathBuf>,
) -> Result<PathBuf> {
    let qualifies = |d: &Path| d.join("pg_ctl").is_file();
    if let Some(dir) = configured {
        if qualifies(dir) {
            return Ok(dir.to_path_buf());
        }
        bail!(
            "[postgres] bindir {} does not hold the PostgreSQL programs (no pg_ctl there)\n\
             hint: set it to the directory of initdb and pg_ctl, e.g. /usr/lib/postgresql/15/bin, \
             or remove it to search the usual places",
            dir.display()
        );
    }
    let mut tried = Vec::new();
    if let Some(dir) = env.filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        if qualifies(&dir) {
            return Ok(dir);
        }
        tried.push(format!("${BINDIR_ENV}={}", dir.display()));
    }
    for dir in standard {
        if qualifies(dir) {
            return Ok(dir.clone());
        }
        tried.push(dir.display().to_string());
    }
    match pg_config() {
        Some(dir) if qualifies(&dir) => return Ok(dir),
        Some(dir) => tried.push(format!("pg_config --bindir ({})", dir.display())),
        None => tried.push("pg_config --bindir (not on PATH)".to_string()),
    }
    bail!(
        "PostgreSQL programs not found; looked in: {}\n\
         hint: install PostgreSQL, or set [postgres] bindir or ${BINDIR_ENV} to the directory \
         that holds pg_ctl",
        tried.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_bindir() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("pg_ctl"), b"").unwrap();
        d
    }

    fn os(p: &Path) -> Option<OsString> {
        Some(p.as_os_str().to_owned())
    }

    #[test]
    fn configured_bindir_wins_and_is_not_second_guessed() {
        let good = fake_bindir();
        let other = fake_bindir();
        let std_dirs = [other.path().to_path_buf()];
        let found = find_bindir(Some(good.path()), os(other.path()), &std_dirs, || None).unwrap();
        assert_eq!(found, good.path());

        let empty = tempfile::tempdir().unwrap();
        let err = find_bindir(Some(empty.path()), os(other.path()), &std_dirs, || None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("[postgres] bindir"), "{err}");
        assert!(err.contains(&empty.path().display().to_string()), "{err}");
    }

    #[test]
    fn search_order_env_standard_pg_config() {
        let env = fake_bindir();
        let newer = fake_bindir();
        let older = fake_bindir();
        let from_pg_config = fake_bindir();
        let empty = tempfile::tempdir().unwrap();
        let pgc = || Some(from_pg_config.path().to_path_buf());
        let standard = [
            empty.path().to_path_buf(),
            newer.path().to_path_buf(),
            older.path().to_path_buf(),
        ];

        let found = find_bindir(None, os(env.path()), &standard, pgc).unwrap();
        assert_eq!(found, env.path());
        // An unusable env dir falls through to the first standard place that has pg_ctl.
        let found = find_bindir(None, os(empty.path()), &standard, pgc).unwrap();
        assert_eq!(found, newer.path());
        let found = find_bindir(None, None, &standard[..1], pgc).unwrap();
        assert_eq!(found, from_pg_config.path());
    }

    /// A drill's postmaster must not tell the agent's unit it is ready or stopping, and no
    /// client may be redirected by the caller's PG* variables.
    #[test]
    fn commands_drop_the_callers_systemd_and_client_environment() {
        let bins = PgBinaries::new(PathBuf::from("/nonexistent/bin"), RunAs::CurrentUser);
        let cmd = bins.command("postgres");
        let removed: Vec<String> = cmd
            .get_envs()
            .filter(|(_, v)| v.is_none())
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect();
        for var in [
            "NOTIFY_SOCKET",
            "WATCHDOG_USEC",
            "WATCHDOG_PID",
            "PGHOST",
            "PGPASSWORD",
        ] {
            assert!(removed.iter().any(|r| r == var), "{var} kept: {removed:?}");
        }
    }

    #[test]
    fn nothing_found_names_every_place() {
        let empty = tempfile::tempdir().unwrap();
        let standard = [empty.path().join("17/bin"), empty.path().join("15/bin")];
        let err = find_bindir(None, os(empty.path()), &standard, || None)
            .unwrap_err()
            .to_string();
        assert!(err.contains(BINDIR_ENV), "{err}");
        assert!(err.contains("17/bin") && err.contains("15/bin"), "{err}");
        assert!(err.contains("pg_config --bindir (not on PATH)"), "{err}");
    }

    #[test]
    fn passwd_lines() {
        let text = "root:x:0:0:root:/root:/bin/bash\n\
                    broken:x:nope\n\
                    postgres:x:104:110:PostgreSQL administrator,,,:/var/lib/postgresql:/bin/bash\n";
        let u = parse_passwd(text, "postgres").unwrap();
        assert_eq!((u.uid, u.gid), (104, 110));
        assert_eq!(u.home, Path::new("/var/lib/postgresql"));
        assert!(parse_passwd(text, "broken").is_none());
        assert!(parse_passwd(text, "nobody").is_none());
    }

    #[test]
    fn version_lines() {
        assert_eq!(
            parse_version_line("postgres (PostgreSQL) 15.18 (Debian 15.18-1.pgdg120+1)\n")
                .as_deref(),
            Some("15.18")
        );
        assert_eq!(
            parse_version_line("postgres (PostgreSQL) 17beta1\n").as_deref(),
            Some("17beta1")
        );
        assert_eq!(parse_version_line("something else"), None);
    }
}
