//! `--delta`: bring an existing data directory of the same cluster to a backup's state.
//!
//! Two jobs live here: proving the directory belongs to the backup's cluster (see
//! [`check_same_cluster`] for the evidence), and removing whatever the
//! backup does not have — including everything inside the directories whose contents backups
//! leave out (`pg_wal` and friends), so no WAL of another history survives to be replayed.
//! Which blocks to rewrite is decided in `write.rs`, by hashing what is on disk.

use crate::pg::backup_label::BackupLabel;
use crate::pg::control::ControlFile;
use crate::pg::wal_page::{LONG_PAGE_HEADER_SIZE, LongPageHeader};
use crate::pg::{Lsn, WalSegmentName};
use crate::restore::dest::MARKER;
use anyhow::{Context as _, Result, anyhow, bail};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs;
use std::io;
use std::io::Read;
use std::path::{Path, PathBuf};

/// What the marker of a running (or interrupted) restore records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    #[serde(with = "u64_string")]
    pub system_identifier: u64,
    pub backup: String,
    pub started_at: String,
}

mod u64_string {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

pub fn read_marker(pgdata: &Path) -> Option<Marker> {
    let bytes = fs::read(pgdata.join(MARKER)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Refuses a non-empty directory unless it is shown to be a data directory of cluster
/// `system_identifier`. `--delta` removes whatever the backup does not have, so it must never
/// run over another cluster's files. The evidence, in order (the first that is present
/// decides):
/// 1. `global/pg_control` and its system identifier;
/// 2. the marker an interrupted pgward restore leaves (pg_control is written last);
/// 3. a `backup_label` (or the `backup_label.old` recovery renames it to) of one of this
///    repository's backups, `backups` being their `(label, start LSN)`: a damaged copy may
///    have lost pg_control;
/// 4. the system identifier in the header of a WAL segment in `pg_wal`.
pub fn check_same_cluster(
    pgdata: &Path,
    system_identifier: u64,
    backups: &[(String, Lsn)],
) -> Result<()> {
    let mismatch = |found: u64, what: &str| {
        anyhow!(
            "{} belongs to another cluster (its {what} has database system identifier {found}; \
             the backup's is {system_identifier})\nhint: --delta only reuses a data directory of \
             the same cluster; restore into an empty directory instead",
            pgdata.display()
        )
    };
    if pgdata.join("global/pg_control").exists() {
        let found = ControlFile::read(pgdata)
            .with_context(|| {
                format!(
                    "--delta needs to know which cluster {} belongs to\nhint: if its \
                     global/pg_control is damaged, remove that file and run the restore again \
                     (other evidence is then used), or restore into an empty directory",
                    pgdata.display()
                )
            })?
            .system_identifier;
        return match found == system_identifier {
            true => Ok(()),
            false => Err(mismatch(found, "global/pg_control")),
        };
    }
    if let Some(m) = read_marker(pgdata) {
        return match m.system_identifier == system_identifier {
            true => Ok(()),
            false => Err(mismatch(m.system_identifier, "interrupted restore")),
        };
    }
    for name in ["backup_label", "backup_label.old"] {
        let Ok(text) = fs::read_to_string(pgdata.join(name)) else {
            continue;
        };
        let Ok(label) = BackupLabel::parse(&text) else {
            continue;
        };
        if backups
            .iter()
            .any(|(l, start)| label.label.as_deref() == Some(l) && label.start_lsn == *start)
        {
            return Ok(());
        }
    }
    if let Some(found) = wal_system_identifier(&pgdata.join("pg_wal")) {
        return match found == system_identifier {
            true => Ok(()),
            false => Err(mismatch(found, "WAL in pg_wal")),
        };
    }
    bail!(
        "{} is not empty and nothing shows it is a data directory of this cluster (no \
         global/pg_control, no backup_label of a backup in this repository, no WAL)\n\
         hint: --delta only reuses a data directory of the same cluster; restore into an empty \
         directory instead",
        pgdata.display()
    );
}

/// The system identifier in the long page header of the first readable WAL segment.
fn wal_system_identifier(pg_wal: &Path) -> Option<u64> {
    let mut names: Vec<PathBuf> = fs::read_dir(pg_wal)
        .ok()?
        .flatten()
        .filter(|e| WalSegmentName::parse(&e.file_name().to_string_lossy()).is_ok())
        .map(|e| e.path())
        .collect();
    names.sort();
    names.iter().find_map(|p| {
        let mut header = [0u8; LONG_PAGE_HEADER_SIZE];
        fs::File::open(p).ok()?.read_exact(&mut header).ok()?;
        LongPageHeader::parse(&header).ok().map(|h| h.sysid)
    })
}

/// What must be at a path after the restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    Dir,
    File,
    /// A symbolic link to this location (tablespaces).
    Link(PathBuf),
}

/// Removes everything under `root` that `expected` does not list, or that has the wrong type.
/// A symbolic link where a directory is expected is kept when it leads to a directory (an
/// operator's `pg_wal` on another disk, say); its contents are cleaned like any directory's.
/// Returns how many entries were removed.
pub fn clean(root: &Path, expected: &HashMap<PathBuf, Expect>) -> Result<u64> {
    let mut removed = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot list {}", dir.display())),
        };
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
            let path = entry.path();
            let meta = fs::symlink_metadata(&path)
                .with_context(|| format!("cannot stat {}", path.display()))?;
            let keep = match expected.get(&path) {
                None => false,
                Some(Expect::File) => meta.is_file(),
                Some(Expect::Dir) => {
                    let is_dir = meta.is_dir()
                        || (meta.is_symlink() && fs::metadata(&path).is_ok_and(|m| m.is_dir()));
                    if is_dir {
                        stack.push(path.clone());
                    }
                    is_dir
                }
                Some(Expect::Link(to)) => {
                    meta.is_symlink() && fs::read_link(&path).is_ok_and(|t| t == *to)
                }
            };
            if !keep {
                remove(&path, &meta)?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

fn remove(path: &Path, meta: &fs::Metadata) -> Result<()> {
    let r = if meta.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    r.with_context(|| format!("cannot remove {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn cleans_what_the_backup_does_not_have() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        let other = tempfile::tempdir().unwrap();
        for dir in [
            "base/1",
            "pg_wal/archive_status",
            "stray_dir/x",
            "pg_tblspc",
        ] {
            fs::create_dir_all(r.join(dir)).unwrap();
        }
        for f in [
            "base/1/1259",
            "base/1/9999",
            "pg_wal/000000010000000000000003",
            "pg_wal/archive_status/000000010000000000000003.done",
            "stray_dir/x/f",
            "backup_label",
            "PG_VERSION",
        ] {
            fs::write(r.join(f), b"x").unwrap();
        }
        fs::write(other.path().join("keep"), b"outside").unwrap();
        symlink(other.path(), r.join("pg_tblspc/16385")).unwrap();
        symlink(other.path(), r.join("pg_tblspc/16386")).unwrap();
        // PG_VERSION is expected as a directory: wrong type, removed.
        let expected: HashMap<PathBuf, Expect> = [
            ("base", Expect::Dir),
            ("base/1", Expect::Dir),
            ("base/1/1259", Expect::File),
            ("pg_wal", Expect::Dir),
            ("pg_wal/archive_status", Expect::Dir),
            ("pg_tblspc", Expect::Dir),
            ("pg_tblspc/16385", Expect::Link(other.path().to_path_buf())),
            ("PG_VERSION", Expect::Dir),
        ]
        .into_iter()
        .map(|(p, e)| (r.join(p), e))
        .collect();
        let removed = clean(r, &expected).unwrap();
        let mut left: Vec<String> = walk(r);
        left.sort();
        assert_eq!(
            left,
            vec![
                "base",
                "base/1",
                "base/1/1259",
                "pg_tblspc",
                "pg_tblspc/16385",
                "pg_wal",
                "pg_wal/archive_status"
            ]
        );
        assert_eq!(removed, 7);
        // Links are removed, never followed: the other tablespace's files stay.
        assert!(other.path().join("keep").exists());
    }

    fn walk(r: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![r.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                out.push(p.strip_prefix(r).unwrap().to_string_lossy().into_owned());
                if fs::symlink_metadata(&p).unwrap().is_dir() {
                    stack.push(p);
                }
            }
        }
        out
    }

    #[test]
    fn same_cluster_check() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        let backups = vec![("20261122T110000Z".to_string(), Lsn(0x400_0028))];
        fs::write(p.join("x"), b"x").unwrap();
        let check = |sysid| check_same_cluster(p, sysid, &backups).map_err(|e| format!("{e:#}"));
        let msg = check(7).unwrap_err();
        assert!(
            msg.contains("nothing shows it is a data directory"),
            "{msg}"
        );

        // WAL in pg_wal: the long page header's system identifier.
        fs::create_dir(p.join("pg_wal")).unwrap();
        let mut page = vec![0u8; 8192];
        page[2..4].copy_from_slice(&2u16.to_le_bytes());
        page[24..32].copy_from_slice(&9u64.to_le_bytes());
        fs::write(p.join("pg_wal/000000010000000000000004"), &page).unwrap();
        fs::write(p.join("pg_wal/000000010000000000000003.partial"), b"short").unwrap();
        check(9).unwrap();
        assert!(
            check(7)
                .unwrap_err()
                .contains("WAL in pg_wal has database system identifier 9")
        );

        // A backup_label of one of this repository's backups decides before the WAL.
        let label = "START WAL LOCATION: 0/4000028 (file 000000010000000000000004)\n\
                     CHECKPOINT LOCATION: 0/4000060\nLABEL: 20261122T110000Z\n";
        fs::write(p.join("backup_label.old"), label).unwrap();
        check(7).unwrap();
        fs::write(
            p.join("backup_label.old"),
            label.replace("110000Z", "120000Z"),
        )
        .unwrap();
        assert!(
            check(7).is_err(),
            "a label of another backup is no evidence"
        );

        // The marker of an interrupted restore.
        let m = Marker {
            system_identifier: 7,
            backup: "L".into(),
            started_at: "now".into(),
        };
        fs::write(p.join(MARKER), serde_json::to_vec(&m).unwrap()).unwrap();
        check(7).unwrap();
        let msg = check(8).unwrap_err();
        assert!(
            msg.contains("another cluster") && msg.contains("hint:"),
            "{msg}"
        );

        // pg_control decides first, and an unreadable one is an error.
        fs::create_dir(p.join("global")).unwrap();
        fs::write(p.join("global/pg_control"), b"short").unwrap();
        assert!(check(7).unwrap_err().contains("which cluster"));
    }
}
