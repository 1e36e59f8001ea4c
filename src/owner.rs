//! Who may run a command that writes files: the owner of what it writes to.
//!
//! A `pgward init` or `backup` run as root in a local repository leaves root-owned directories
//! and objects, and the next `wal-push` (PostgreSQL runs it as `postgres`) fails with
//! "Permission denied" — archiving stops and `pg_wal` fills up. So a command that writes to a
//! local repository refuses to run as root unless root owns the repository's root directory,
//! and `init` and `backup` also unless root owns the data directory (whose owner is the user
//! PostgreSQL runs as). The check runs before anything is created. A path that does not exist
//! yet is not checked: whoever creates it owns it.
//!
//! Only root is refused. Any other user either may write there (a repository shared through
//! its group is the operator's choice, and refusing it would stop archiving) or gets
//! "Permission denied" from the system, which says the same thing; root always may, and
//! silently leaves files that the owner cannot change.

use crate::cli::Command;
use crate::config::{Config, RepoUrl};
use anyhow::{Context, Result, anyhow};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// A directory a command writes to, and what it is, for the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guarded {
    pub what: &'static str,
    pub path: PathBuf,
}

/// What `command` writes to and must therefore own.
pub fn guarded_paths(command: &Command, config: &Config) -> Vec<Guarded> {
    let mut out = Vec::new();
    let pgdata = match command {
        Command::Init(a) => a.pgdata.clone().or_else(|| config.postgres.pgdata.clone()),
        Command::Backup(_) => config.postgres.pgdata.clone(),
        _ => None,
    };
    if let Some(path) = pgdata {
        out.push(Guarded {
            what: "the data directory",
            path,
        });
    }
    let writes_repository = matches!(
        command,
        Command::Init(_)
            | Command::Backup(_)
            | Command::WalPush(_)
            | Command::WalPushAhead(_)
            | Command::Drill(_)
            | Command::Agent(_)
    ) || matches!(command, Command::Verify(a) if !a.listing_only);
    if let (true, RepoUrl::Local(root)) = (writes_repository, &config.repo.url) {
        out.push(Guarded {
            what: "the repository",
            path: root.clone(),
        });
    }
    out
}

/// Refuses root unless it owns every existing path in `guarded`. `command_line` is what the
/// user typed after `pgward`, for the hint.
pub fn check(guarded: &[Guarded], command_line: &str) -> Result<()> {
    let me = effective_uid()?;
    if me != 0 {
        return Ok(());
    }
    for g in guarded {
        let Ok(meta) = std::fs::metadata(&g.path) else {
            continue;
        };
        if meta.uid() != me {
            // Read only on refusal: `wal-push` runs this check for every WAL file.
            let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
            return Err(refusal(
                g,
                &user_name(&passwd, me),
                &user_name(&passwd, meta.uid()),
                command_line,
            ));
        }
    }
    Ok(())
}

fn refusal(g: &Guarded, me: &str, owner: &str, command_line: &str) -> anyhow::Error {
    anyhow!(
        "refusing to run as {me}: {} {} belongs to {owner}, and files {me} creates there would \
         make the next wal-push or backup as {owner} fail with \"Permission denied\"\n\
         hint: run it as {owner}: `sudo -u {owner} pgward {command_line}`",
        g.what,
        g.path.display()
    )
}

/// The effective uid: the owner of `/proc/self` (as `pg::binaries::is_root` reads it, without
/// `unsafe`).
fn effective_uid() -> Result<u32> {
    Ok(std::fs::metadata("/proc/self")
        .context("cannot stat /proc/self to find the effective uid (is /proc mounted?)")?
        .uid())
}

/// The name `/etc/passwd` gives `uid`, else `uid N`.
fn user_name(passwd: &str, uid: u32) -> String {
    passwd
        .lines()
        .find_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            (f.len() >= 3 && f[2].parse() == Ok(uid)).then(|| f[0].to_string())
        })
        .unwrap_or_else(|| format!("uid {uid}"))
}

/// What follows `pgward` on the command line, quoted where a shell would need it.
pub fn command_line_after_program() -> String {
    std::env::args()
        .skip(1)
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=%:,@+".contains(c))
            {
                a
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn is_guarded(guarded: &[Guarded], path: &Path) -> bool {
        guarded.iter().any(|g| g.path == path)
    }

    #[test]
    fn the_refusal_names_both_users_and_ends_with_the_command_to_run() {
        let g = Guarded {
            what: "the repository",
            path: PathBuf::from("/var/lib/pgward"),
        };
        let err = refusal(&g, "root", "postgres", "--config /etc/pgward.toml backup").to_string();
        assert_eq!(
            err,
            "refusing to run as root: the repository /var/lib/pgward belongs to postgres, and \
             files root creates there would make the next wal-push or backup as postgres fail \
             with \"Permission denied\"\n\
             hint: run it as postgres: `sudo -u postgres pgward --config /etc/pgward.toml backup`"
        );
    }

    #[test]
    fn users_are_named_from_passwd() {
        let passwd =
            "root:x:0:0:root:/root:/bin/bash\npostgres:x:105:110::/var/lib/postgresql:/bin/bash\n";
        assert_eq!(user_name(passwd, 0), "root");
        assert_eq!(user_name(passwd, 105), "postgres");
        assert_eq!(user_name(passwd, 4242), "uid 4242");
    }

    #[test]
    fn commands_that_write_guard_what_they_write() {
        let config = Config::parse(
            "[repo]\nurl = \"file:///r\"\n[postgres]\npgdata = \"/d\"\n",
            "test",
        )
        .unwrap();
        let parse = |args: &[&str]| {
            use clap::Parser;
            crate::cli::Cli::parse_from(std::iter::once("pgward").chain(args.iter().copied()))
                .command
        };
        let (repo, data) = (Path::new("/r"), Path::new("/d"));
        let backup = guarded_paths(&parse(&["backup"]), &config);
        assert!(is_guarded(&backup, repo) && is_guarded(&backup, data));
        let push = guarded_paths(
            &parse(&["wal-push", "pg_wal/000000010000000000000001"]),
            &config,
        );
        assert!(is_guarded(&push, repo) && !is_guarded(&push, data));
        assert!(guarded_paths(&parse(&["info"]), &config).is_empty());
        let init = guarded_paths(&parse(&["init", "--pgdata", "/other"]), &config);
        assert!(is_guarded(&init, Path::new("/other")) && is_guarded(&init, repo));
    }
}
