//! What a base backup leaves out of the data directory, following `pg_basebackup`
//! (`excludeDirContents`, `excludeFiles` and the unlogged/temporary relation checks in
//! `sendDir`, `src/backend/backup/basebackup.c`).
//!
//! Everything left out is either recreated or emptied by PostgreSQL at startup, comes from the
//! WAL archive (`pg_wal`), belongs to the running server only (`postmaster.pid`), or would make
//! a restored server misbehave (`backup_label`, `standby.signal` of the source). Leaving out a
//! file that is needed makes a broken backup, so the lists are short and literal, with tests.

use crate::pg::page_checksum::{Fork, parse_relation_file_name};
use std::collections::HashSet;

/// Top-level directories whose contents are not copied. The directories themselves are
/// recorded, empty, so a restore recreates them with the right permissions.
pub const EXCLUDE_DIR_CONTENTS: &[&str] = &[
    // WAL comes from the archive; a restore replays it from there.
    "pg_wal",
    // Replication slots of the source are not useful, and harmful, on a restored copy.
    "pg_replslot",
    // Temporary statistics (extensions such as pg_stat_statements write here too).
    "pg_stat_tmp",
    // Removed at startup: dsm_cleanup_for_mmap().
    "pg_dynshmem",
    // Removed at startup: AsyncShmemInit().
    "pg_notify",
    // Only kept for debugging, not needed to run: SerialInit().
    "pg_serial",
    // Removed at startup: DeleteAllExportedSnapshotFiles().
    "pg_snapshots",
    // Zeroed at startup: StartupSUBTRANS().
    "pg_subtrans",
];

/// Files left out wherever they appear (exact names).
const EXCLUDE_FILES: &[&str] = &[
    // Written and renamed by ALTER SYSTEM and the logging collector.
    "postgresql.auto.conf.tmp",
    "current_logfiles.tmp",
    // The restored backup gets its own from the manifest; an old one would be wrong.
    "backup_label",
    "tablespace_map",
    // Belongs to a pg_basebackup backup the server was once restored from.
    "backup_manifest",
    // The running server's own.
    "postmaster.pid",
    "postmaster.opts",
    // Recovery configuration of the source: a restore writes what it needs.
    "recovery.signal",
    "standby.signal",
];

/// Name prefixes left out wherever they appear.
const EXCLUDE_PREFIXES: &[&str] = &[
    // The relation cache init file and its temp files (`pg_internal.init.<pid>`), rebuilt at
    // startup.
    "pg_internal.init",
    // Temporary files and directories of queries (`PG_TEMP_FILE_PREFIX`).
    "pgsql_tmp",
];

/// Why an entry is left out, for debug logs.
pub type Reason = &'static str;

/// Whether a directory entry is left out by its name alone, wherever it is.
pub fn excluded_name(name: &str) -> Option<Reason> {
    if EXCLUDE_FILES.contains(&name) {
        return Some("excluded file");
    }
    if EXCLUDE_PREFIXES.iter().any(|p| name.starts_with(p)) {
        return Some("temporary or rebuilt at startup");
    }
    // Every `.tmp` file PostgreSQL writes is renamed into place once complete (auto.conf,
    // current_logfiles, pg_stat, replication origin checkpoints, logical snapshots): the
    // complete file is what a backup needs, never the half-written one.
    if name.ends_with(".tmp") {
        return Some("temporary file");
    }
    None
}

/// Whether the contents of this directory (a path relative to the data directory) are left
/// out.
pub fn excludes_contents(rel_dir: &str) -> bool {
    EXCLUDE_DIR_CONTENTS.contains(&rel_dir)
}

/// Whether a relative path is a database directory, which holds relation files:
/// `base/<oid>` or `pg_tblspc/<oid>/<version dir>/<oid>`.
pub fn is_db_dir(rel_dir: &str) -> bool {
    let parts: Vec<&str> = rel_dir.split('/').collect();
    match parts.as_slice() {
        ["base", db] => all_digits(db),
        ["pg_tblspc", oid, _version, db] => all_digits(oid) && all_digits(db),
        _ => false,
    }
}

/// The relation-level rules for one database directory, built from its complete listing:
/// the main, fsm and vm forks of unlogged relations (those with an `_init` fork) are left out,
/// because PostgreSQL resets them from the init fork at the end of recovery; the init fork
/// itself is kept. Temporary relations (`t<backend>_<relfilenode>…`) belong to sessions that
/// will not exist after a restore.
#[derive(Debug, Default)]
pub struct DbDirFilter {
    unlogged: HashSet<String>,
}

impl DbDirFilter {
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> DbDirFilter {
        let unlogged = names
            .into_iter()
            .filter_map(parse_relation_file_name)
            .filter(|r| r.fork == Fork::Init)
            .map(|r| r.relfilenode.to_string())
            .collect();
        DbDirFilter { unlogged }
    }

    /// Whether a file of this database directory is left out.
    pub fn excluded(&self, name: &str) -> Option<Reason> {
        if looks_like_temp_rel_name(name) {
            return Some("temporary relation");
        }
        match parse_relation_file_name(name) {
            Some(r) if r.fork != Fork::Init && self.unlogged.contains(r.relfilenode) => {
                Some("unlogged relation (reset from its init fork on restore)")
            }
            _ => None,
        }
    }
}

/// `looks_like_temp_rel_name` in `src/backend/storage/file/fd.c`:
/// `t<digits>_<digits>[_<fork>][.<digits>]`.
fn looks_like_temp_rel_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('t') else {
        return false;
    };
    let Some((backend, rel)) = rest.split_once('_') else {
        return false;
    };
    all_digits(backend) && parse_relation_file_name(rel).is_some()
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excluded_names_match_pg_basebackup() {
        for name in [
            "postmaster.pid",
            "postmaster.opts",
            "pg_internal.init",
            "pg_internal.init.12345",
            "backup_label",
            "tablespace_map",
            "backup_manifest",
            "recovery.signal",
            "standby.signal",
            "postgresql.auto.conf.tmp",
            "current_logfiles.tmp",
            "pgstat.tmp",
            "pgsql_tmp",
            "pgsql_tmp12345.0",
        ] {
            assert!(excluded_name(name).is_some(), "{name} must be excluded");
        }
        for name in [
            "PG_VERSION",
            "postgresql.conf",
            "postgresql.auto.conf",
            "pg_hba.conf",
            "pg_ident.conf",
            "current_logfiles",
            "pg_control",
            "pg_filenode.map",
            "backup_label.old",
            "1259",
            "16384_init",
            "tmp",
            "postmaster.pid.bak",
        ] {
            assert_eq!(excluded_name(name), None, "{name} must be kept");
        }
    }

    #[test]
    fn directory_contents() {
        for d in EXCLUDE_DIR_CONTENTS {
            assert!(excludes_contents(d));
        }
        assert_eq!(EXCLUDE_DIR_CONTENTS.len(), 8);
        for d in [
            "pg_xact",
            "pg_multixact",
            "pg_logical",
            "pg_stat",
            "base",
            "global",
        ] {
            assert!(!excludes_contents(d), "{d}");
        }
        // Only at the top of the data directory.
        assert!(!excludes_contents("base/pg_wal"));
    }

    #[test]
    fn db_dirs() {
        assert!(is_db_dir("base/1"));
        assert!(is_db_dir("base/16384"));
        assert!(is_db_dir("pg_tblspc/16390/PG_15_202209061/16384"));
        assert!(!is_db_dir("base"));
        assert!(!is_db_dir("global"));
        assert!(!is_db_dir("base/pgsql_tmp"));
        assert!(!is_db_dir("pg_tblspc/16390/PG_15_202209061"));
    }

    #[test]
    fn unlogged_and_temporary_relations() {
        let names = [
            "16384",
            "16384_fsm",
            "16384_vm",
            "16384_init",
            "16384.1",
            "16390",
            "16390_fsm",
            "t3_16400",
            "t3_16400_fsm",
            "t12_16401.2",
            "PG_VERSION",
            "pg_filenode.map",
        ];
        let f = DbDirFilter::new(names);
        for n in ["16384", "16384_fsm", "16384_vm", "16384.1"] {
            assert!(f.excluded(n).is_some(), "{n}");
        }
        for n in ["t3_16400", "t3_16400_fsm", "t12_16401.2"] {
            assert!(f.excluded(n).is_some(), "{n}");
        }
        for n in [
            "16384_init",
            "16390",
            "16390_fsm",
            "PG_VERSION",
            "pg_filenode.map",
            "t",
            "tx_1",
        ] {
            assert_eq!(f.excluded(n), None, "{n}");
        }
    }
}
