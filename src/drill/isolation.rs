//! The drill's scratch server runs with pgward's configuration, not the source's.
//!
//! A restored data directory brings the source's configuration with it: its port and socket,
//! its `archive_command` (a promoted copy would push a new timeline into the production
//! archive), its `archive_cleanup_command` and `recovery_end_command` (run during and at the end
//! of recovery: a cleanup command deletes the production archive's files), its `primary_conninfo` (a standby of production), its subscriptions (logical
//! replication workers connecting to publishers), `include` files that exist only on the source
//! host, TLS files that are not here. The invariant kept here: whatever the restored files say,
//! the server listens on its own socket only, archives nothing, replicates from nothing, reads no
//! file outside its data directory for its configuration, and accepts only local connections
//! through `trust` on a socket directory of mode 0700.
//!
//! How: [`isolate_files`] comments out the `include*` (and `data_directory`) lines of the
//! restored `postgresql.conf` and `postgresql.auto.conf` and writes pgward's own HBA and ident
//! files; [`scratch_settings`] are written into `postgresql.auto.conf` (read last, so they win;
//! [`crate::pg::scratch::ScratchSpec::adopt`] writes them). The `max_*` settings come from the
//! copy's `pg_control` ([`read_limits`]): PostgreSQL refuses hot standby or recovery with less
//! than the source had (`CheckRequiredParameterValues` in `xlogrecovery.c`), and the source's
//! configuration file that said so may be one that was not restored.

use crate::pg::binaries::{PgBinaries, RunAs};
use crate::process;
use anyhow::{Context, Result, bail};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

/// pgward's HBA file in the copy's data directory (a name no PostgreSQL file has).
pub const HBA_FILE: &str = "pgward_drill_hba.conf";
/// pgward's (empty) ident file.
pub const IDENT_FILE: &str = "pgward_drill_ident.conf";

/// The limits a standby needs at least, as the source's `pg_control` records them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceLimits {
    pub max_connections: u32,
    pub max_worker_processes: u32,
    pub max_wal_senders: u32,
    pub max_prepared_xacts: u32,
    pub max_locks_per_xact: u32,
    pub data_checksums: bool,
}

/// `pg_controldata` of `datadir` (the restored copy, not started).
pub fn read_limits(bins: &PgBinaries, datadir: &Path) -> Result<SourceLimits> {
    let mut cmd = bins.command("pg_controldata");
    cmd.current_dir("/").arg("-D").arg(datadir);
    let out = process::run(&mut cmd, Duration::from_secs(60))?;
    if !out.success() {
        bail!(
            "pg_controldata of {} failed\n{}",
            datadir.display(),
            out.describe()
        );
    }
    parse_controldata(&out.stdout).with_context(|| {
        format!(
            "cannot read the source's limits from pg_controldata of {}",
            datadir.display()
        )
    })
}

/// The limits from `pg_controldata` output (run with `LC_ALL=C`: English labels).
pub fn parse_controldata(text: &str) -> Result<SourceLimits> {
    let field = |label: &str| -> Result<u32> {
        let value = text
            .lines()
            .find_map(|l| Some(l.strip_prefix(label)?.trim()))
            .with_context(|| format!("no \"{label}\" line"))?;
        value
            .parse()
            .with_context(|| format!("\"{label}\" is `{value}`, not a number"))
    };
    Ok(SourceLimits {
        max_connections: field("max_connections setting:")?,
        max_worker_processes: field("max_worker_processes setting:")?,
        max_wal_senders: field("max_wal_senders setting:")?,
        max_prepared_xacts: field("max_prepared_xacts setting:")?,
        max_locks_per_xact: field("max_locks_per_xact setting:")?,
        data_checksums: field("Data page checksum version:")? != 0,
    })
}

/// Names isolation owns: a drill file's `[settings]` cannot set them. A name ending in `*` is a
/// prefix.
const OWNED: [&str; 16] = [
    "archive_*",
    "primary_*",
    "recovery_target*",
    "restore_command",
    "recovery_end_command",
    "listen_addresses",
    "port",
    "unix_socket_*",
    "hba_file",
    "ident_file",
    "config_file",
    "data_directory",
    "external_pid_file",
    "synchronous_standby_names",
    "max_logical_replication_workers",
    "cluster_name",
];

fn owned(name: &str) -> bool {
    OWNED.iter().any(|o| match o.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == *o,
    })
}

/// The settings of a drill's scratch server, in order (pure): isolation first, then `extra`
/// (the drill file's `[settings]`). A name isolation owns is refused, and so is a `max_*`
/// limit below the source's (PostgreSQL would refuse to recover).
pub fn scratch_settings(
    limits: &SourceLimits,
    data_dir: &Path,
    extra: &[(String, String)],
) -> Result<Vec<(String, String)>> {
    let at_least = [
        ("max_connections", limits.max_connections),
        ("max_worker_processes", limits.max_worker_processes),
        ("max_wal_senders", limits.max_wal_senders),
        ("max_prepared_transactions", limits.max_prepared_xacts),
        ("max_locks_per_transaction", limits.max_locks_per_xact),
    ];
    let file = |name: &str| data_dir.join(name).to_string_lossy().into_owned();
    let mut settings: Vec<(String, String)> = [
        ("archive_mode", "off".to_string()),
        ("archive_command", String::new()),
        ("archive_library", String::new()),
        // Run during recovery and at its end: a source's (a Patroni or repmgr template's
        // `pg_archivecleanup /mnt/archive %r`, ignored on a primary) would delete production's
        // archive from the drill's restartpoints.
        ("archive_cleanup_command", String::new()),
        ("recovery_end_command", String::new()),
        ("primary_conninfo", String::new()),
        ("primary_slot_name", String::new()),
        ("synchronous_standby_names", String::new()),
        ("max_logical_replication_workers", "0".to_string()),
        ("external_pid_file", String::new()),
        ("shared_buffers", "128MB".to_string()),
        ("hot_standby", "on".to_string()),
        ("logging_collector", "off".to_string()),
        ("log_destination", "stderr".to_string()),
        ("log_line_prefix", "%m [%p] ".to_string()),
        ("log_min_messages", "warning".to_string()),
        ("ssl", "off".to_string()),
        ("cluster_name", "pgward-drill".to_string()),
        ("hba_file", file(HBA_FILE)),
        ("ident_file", file(IDENT_FILE)),
    ]
    .into_iter()
    .chain(at_least.iter().map(|(n, v)| (*n, v.to_string())))
    .map(|(n, v)| (n.to_string(), v))
    .collect();
    for (name, value) in extra {
        let lower = name.to_ascii_lowercase();
        if owned(&lower) {
            bail!(
                "the drill's [settings] set `{name}`, which the scratch server's isolation owns\n\
                 hint: remove it; a drill's server never archives, replicates or listens \
                 beyond its own socket"
            );
        }
        if let Some((_, min)) = at_least.iter().find(|(n, _)| *n == lower) {
            let v: u64 = value.trim().parse().with_context(|| {
                format!("the drill's [settings] give `{name}` = `{value}`, not a number")
            })?;
            if v < u64::from(*min) {
                bail!(
                    "the drill's [settings] give `{name}` = {v}, less than the source's {min}\n\
                     hint: PostgreSQL refuses to recover with less; leave it out"
                );
            }
        }
        settings.push((name.clone(), value.clone()));
    }
    Ok(settings)
}

/// The directives [`neutralise`] comments out: they make the server read files (or a data
/// directory) outside the copy.
const NEUTRALISED: [&str; 4] = [
    "include",
    "include_dir",
    "include_if_exists",
    "data_directory",
];

/// `text` of a configuration file with the `include`, `include_dir`, `include_if_exists` and
/// `data_directory` lines commented out under a pgward note, and the lines commented out
/// (pure). Both `include 'f'` and `include = 'f'` forms are recognised, in any case.
pub fn neutralise(text: &str) -> (String, Vec<String>) {
    let mut out = String::with_capacity(text.len());
    let mut found = Vec::new();
    for line in text.split_inclusive('\n') {
        let body = line.trim_start();
        let end = body
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(body.len());
        let name = body[..end].to_ascii_lowercase();
        let rest = body[end..].trim_start();
        let directive = NEUTRALISED.contains(&name.as_str())
            && (rest.starts_with('=') || rest.starts_with('\'') || name == "data_directory");
        if directive {
            found.push(line.trim_end().to_string());
            out.push_str("# disabled by pgward drill (the scratch copy reads no outside file): ");
            out.push_str(body);
        } else {
            out.push_str(line);
        }
    }
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    (out, found)
}

/// Neutralises what the restored files would bring in (see the module doc): `include*` and
/// `data_directory` lines of `postgresql.conf` and `postgresql.auto.conf` are commented out, a
/// minimal `postgresql.conf` is written when the backup has none (Debian keeps it in /etc), and
/// pgward's own HBA file (`local all all trust` only) and an empty ident file are written.
/// Files are owned by `run_as`, mode 0600. Returns notes for the report: what was neutralised.
pub fn isolate_files(data_dir: &Path, run_as: &RunAs) -> Result<Vec<String>> {
    let mut notes = Vec::new();
    for name in ["postgresql.conf", crate::pg::conf::AUTO_CONF] {
        let path = data_dir.join(name);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if name == "postgresql.conf" {
                    let text = "# written by pgward drill: the backup holds no postgresql.conf \
                                (it lives outside the data directory on the source)\n";
                    write_private(&path, text, run_as)?;
                    notes.push(format!(
                        "the backup has no {name}; the copy runs with PostgreSQL's defaults and \
                         pgward's settings"
                    ));
                }
                continue;
            }
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let (new, found) = neutralise(&text);
        if !found.is_empty() {
            write_private(&path, &new, run_as)?;
            notes.extend(
                found
                    .iter()
                    .map(|l| format!("{name}: `{l}` disabled in the scratch copy")),
            );
        }
    }
    write_private(
        &data_dir.join(HBA_FILE),
        "# written by pgward drill: the scratch copy's socket directory is mode 0700\n\
         local all all trust\n",
        run_as,
    )?;
    write_private(
        &data_dir.join(IDENT_FILE),
        "# written by pgward drill\n",
        run_as,
    )?;
    Ok(notes)
}

fn write_private(path: &Path, text: &str, run_as: &RunAs) -> Result<()> {
    let write = || -> std::io::Result<()> {
        fs::write(path, text)?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))
    };
    write().with_context(|| format!("cannot write {}", path.display()))?;
    run_as.chown(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTROLDATA: &str = "pg_control version number:            1300
wal_level setting:                    replica
max_connections setting:              300
max_worker_processes setting:         8
max_wal_senders setting:              10
max_prepared_xacts setting:           7
max_locks_per_xact setting:           128
track_commit_timestamp setting:       off
Data page checksum version:           1
";

    fn limits() -> SourceLimits {
        parse_controldata(CONTROLDATA).unwrap()
    }

    #[test]
    fn limits_from_pg_controldata() {
        assert_eq!(
            limits(),
            SourceLimits {
                max_connections: 300,
                max_worker_processes: 8,
                max_wal_senders: 10,
                max_prepared_xacts: 7,
                max_locks_per_xact: 128,
                data_checksums: true,
            }
        );
        let off = CONTROLDATA.replace("version:           1", "version:           0");
        assert!(!parse_controldata(&off).unwrap().data_checksums);
        let missing = CONTROLDATA.replace("max_wal_senders setting:              10\n", "");
        let err = format!("{:#}", parse_controldata(&missing).unwrap_err());
        assert!(err.contains("max_wal_senders setting:"), "{err}");
        let bad = CONTROLDATA.replace("300", "lots");
        let err = format!("{:#}", parse_controldata(&bad).unwrap_err());
        assert!(
            err.contains("max_connections") && err.contains("lots"),
            "{err}"
        );
    }

    fn get<'a>(s: &'a [(String, String)], name: &str) -> Option<&'a str> {
        s.iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn isolation_settings_and_the_sources_limits() {
        let s = scratch_settings(&limits(), Path::new("/d/data"), &[]).unwrap();
        for (name, want) in [
            ("archive_mode", "off"),
            ("archive_command", ""),
            ("archive_library", ""),
            ("primary_conninfo", ""),
            ("primary_slot_name", ""),
            ("synchronous_standby_names", ""),
            ("max_logical_replication_workers", "0"),
            ("external_pid_file", ""),
            ("hot_standby", "on"),
            ("ssl", "off"),
            ("logging_collector", "off"),
            ("max_connections", "300"),
            ("max_worker_processes", "8"),
            ("max_wal_senders", "10"),
            ("max_prepared_transactions", "7"),
            ("max_locks_per_transaction", "128"),
            ("hba_file", "/d/data/pgward_drill_hba.conf"),
            ("ident_file", "/d/data/pgward_drill_ident.conf"),
        ] {
            assert_eq!(get(&s, name), Some(want), "{name}");
        }
        // Every name once.
        let mut names: Vec<_> = s.iter().map(|(n, _)| n).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), s.len());
    }

    #[test]
    fn extra_settings_come_last_but_cannot_override_isolation() {
        let extra = |n: &str, v: &str| vec![(n.to_string(), v.to_string())];
        let s = scratch_settings(&limits(), Path::new("/d"), &extra("work_mem", "64MB")).unwrap();
        assert_eq!(s.last().unwrap(), &("work_mem".into(), "64MB".into()));
        let s =
            scratch_settings(&limits(), Path::new("/d"), &extra("max_connections", "400")).unwrap();
        assert_eq!(get(&s, "max_connections"), Some("400"));
        for (name, value, says) in [
            ("archive_command", "cp %p /x", "isolation owns"),
            ("Archive_Mode", "on", "isolation owns"),
            ("primary_conninfo", "host=prod", "isolation owns"),
            ("restore_command", "cp", "isolation owns"),
            ("recovery_target_name", "x", "isolation owns"),
            ("listen_addresses", "*", "isolation owns"),
            ("port", "5432", "isolation owns"),
            ("unix_socket_directories", "/run", "isolation owns"),
            ("hba_file", "/etc/pg_hba.conf", "isolation owns"),
            ("max_connections", "100", "less than the source's 300"),
            ("max_locks_per_transaction", "many", "not a number"),
        ] {
            let err = scratch_settings(&limits(), Path::new("/d"), &extra(name, value))
                .unwrap_err()
                .to_string();
            assert!(err.contains(says) && err.contains(name), "{name}: {err}");
        }
    }

    #[test]
    fn include_lines_are_commented_out() {
        let text = "port = 5432\n\
                    include 'a.conf'\n\
                    \x20 INCLUDE_DIR = 'conf.d'   # local\n\
                    include_if_exists='/etc/x.conf'\n\
                    data_directory = '/var/lib/postgresql/15/main'\n\
                    includes_are_not = 'a setting'\n\
                    # include 'commented.conf'\n\
                    include_dirty = on";
        let (out, found) = neutralise(text);
        assert_eq!(
            found,
            vec![
                "include 'a.conf'",
                "  INCLUDE_DIR = 'conf.d'   # local",
                "include_if_exists='/etc/x.conf'",
                "data_directory = '/var/lib/postgresql/15/main'",
            ]
        );
        let kept: Vec<&str> = out
            .lines()
            .filter(|l| !l.starts_with("# disabled"))
            .collect();
        assert_eq!(
            kept,
            vec![
                "port = 5432",
                "includes_are_not = 'a setting'",
                "# include 'commented.conf'",
                "include_dirty = on"
            ]
        );
        assert!(out.contains("# disabled by pgward drill (the scratch copy reads no outside file): include 'a.conf'\n"));
        assert!(out.ends_with('\n'));
        assert_eq!(neutralise("").0, "");
    }
}
