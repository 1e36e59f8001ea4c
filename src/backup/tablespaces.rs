//! Which tablespaces a backup has, and which of them were created while it was being copied.
//!
//! The tablespaces are listed before `pg_backup_start`, but the walk follows every link it
//! meets in `pg_tblspc`, so a tablespace created during the copy is copied too. Recovery of
//! such a backup replays its `CREATE TABLESPACE` (the record lies between the backup's start
//! and stop, so it is always replayed), and PostgreSQL 15 replays it with
//! `create_tablespace_directories(location)` from `src/backend/commands/tablespace.c`: it
//! chmods the location *recorded in WAL* (the source's directory), accepts an existing version
//! directory because it is in recovery, removes `pg_tblspc/<oid>` and links it to that
//! location again. Measured with PostgreSQL 15.18 (tests/tablespace_during_backup.rs and by
//! hand):
//!
//! - with the tablespace restored as a plain directory (what restore did for an oid it did not
//!   know), recovery stops at once: `FATAL: could not remove directory "pg_tblspc/16395":
//!   Directory not empty`, `CONTEXT: WAL redo at 0/2000428 for Tablespace/CREATE: 16395
//!   "/tmp/…/ts-new-src"`;
//! - with `pg_tblspc/16395` linked to a mapped copy (what `--tablespace-map` would do),
//!   recovery finishes, but the link then points at the source's `ts-new-src`, the restored
//!   server reads its table from there, and its end-of-recovery checkpoint rewrote two of the
//!   source's files (`16396_fsm` and `16400`, new mtimes): on the source's host a restore
//!   would run on the production tablespace.
//!
//! PostgreSQL 15 has no setting that remaps a tablespace during replay, so such a tablespace
//! can be restored only at its original location, on a host where that directory is free. The
//! manifest marks it (`created_during_backup`), the backup warns, and restore refuses to map
//! it or to write into a location that is not empty (`restore/dest.rs`, `restore/mod.rs`).
//! `pg_basebackup` does no better: it sends such a tablespace as a bare link to the source's
//! location, and recovery then writes there too.

use crate::repo::manifest::TablespaceEntry;
use std::collections::BTreeMap;

/// The tablespaces of a backup: those linked when it started, then those the walk followed
/// that were not (marked as created during the copy), with their names where known. A
/// tablespace listed at the start but gone when the walk got there (dropped during the copy)
/// stays: restore recreates its location, and recovery replays the `DROP TABLESPACE`.
pub fn of_backup(
    at_start: Vec<TablespaceEntry>,
    followed: Vec<TablespaceEntry>,
    names: &BTreeMap<u32, String>,
) -> Vec<TablespaceEntry> {
    let mut all = at_start;
    for t in followed {
        if !all.iter().any(|s| s.oid == t.oid) {
            all.push(TablespaceEntry {
                created_during_backup: true,
                ..t
            });
        }
    }
    for t in &mut all {
        t.name = names.get(&t.oid).cloned();
    }
    all.sort_by_key(|t| t.oid);
    all
}

/// The warning a backup gives for a tablespace created during its copy.
pub fn created_during_warning(t: &TablespaceEntry) -> String {
    format!(
        "tablespace {} was created while the backup was being copied: a restore of this backup \
         must put it back at {} (recovery replays its CREATE TABLESPACE there, whatever \
         --tablespace-map says), so it cannot be restored on this host next to the source\n\
         hint: take another backup now (`pgward backup`); that one restores the tablespace \
         anywhere",
        t.describe(),
        t.location
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(oid: u32, location: &str) -> TablespaceEntry {
        TablespaceEntry {
            oid,
            location: location.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_tablespace_only_the_walk_saw_was_created_during_the_copy() {
        let names = BTreeMap::from([(16391, "ts_old".to_string()), (16395, "ts_new".into())]);
        let got = of_backup(
            // 16380 was dropped during the copy.
            vec![ts(16380, "/srv/gone"), ts(16391, "/srv/old")],
            vec![ts(16391, "/srv/old"), ts(16395, "/srv/new")],
            &names,
        );
        let want = vec![
            ts(16380, "/srv/gone"),
            TablespaceEntry {
                name: Some("ts_old".into()),
                ..ts(16391, "/srv/old")
            },
            TablespaceEntry {
                name: Some("ts_new".into()),
                created_during_backup: true,
                ..ts(16395, "/srv/new")
            },
        ];
        assert_eq!(got, want);
        let w = created_during_warning(&got[2]);
        assert!(
            w.starts_with("tablespace 16395 (ts_new, /srv/new) was created while the backup")
                && w.contains("\nhint: take another backup now"),
            "{w}"
        );
    }
}
