//! What a drill checks before it fetches anything: the WAL to the target is continuous, the
//! scratch disk has room, the programs can run the backup. Pure rules on values the run
//! gathers (the restore plan from the catalog, `statvfs`, versions), tested table-driven.

use crate::restore::plan::RestorePlan;
use anyhow::{Context as _, Result, bail};
use std::path::{Path, PathBuf};

/// Space kept free beyond the estimate: the server log, `pg_wal` growing past the estimate, the
/// other files of the host.
pub const DISK_MARGIN: u64 = 256 << 20;
/// How many WAL segments recovery is assumed to hold in `pg_wal` at once (restored segments stay
/// until a restartpoint recycles them).
const WAL_SEGMENTS_HELD: u64 = 64;

/// The bytes a backup drill needs in its scratch directory: the restored files, the WAL
/// recovery holds, a tenth for what grows during recovery, and [`DISK_MARGIN`].
pub fn backup_bytes_needed(restored: u64, wal_segments: u64, seg_size: u64) -> u64 {
    restored + wal_segments.min(WAL_SEGMENTS_HELD) * seg_size + restored / 10 + DISK_MARGIN
}

/// The bytes a dump drill needs: restored tables and indexes are a few times the compressed
/// dump (an estimate: a dump holds no index data), plus a fresh cluster and [`DISK_MARGIN`].
pub fn dump_bytes_needed(stored: u64) -> u64 {
    stored * 5 + (64 << 20) + DISK_MARGIN
}

/// Free bytes for an unprivileged user on the file system that holds `path` (or its nearest
/// existing ancestor: the scratch directory may not exist yet).
pub fn free_bytes(path: &Path) -> Result<u64> {
    let existing = path
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    let st = rustix::fs::statvfs(existing)
        .with_context(|| format!("cannot read the free space of {}", existing.display()))?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Refuses a drill that would fill the disk.
pub fn check_disk(dir: &Path, free: u64, needed: u64) -> Result<()> {
    if free < needed {
        bail!(
            "{} has {} free, the drill needs about {} (the restored copy, the WAL recovery holds \
             and a margin)\nhint: free space there, or point `scratch_dir` (the drill file) or \
             `[drill] scratch_dir` (pgward.toml) at a larger file system",
            dir.display(),
            crate::units::bytes(free),
            crate::units::bytes(needed)
        );
    }
    Ok(())
}

/// The scratch server's programs must be of the backup's major version (PostgreSQL cannot start
/// a data directory of another one).
pub fn check_major(programs_major: u32, backup_major: u32, bindir: &Path) -> Result<()> {
    if programs_major != backup_major {
        bail!(
            "the backup is of PostgreSQL {backup_major}, but the programs in {} are PostgreSQL \
             {programs_major}\nhint: set [postgres] bindir to the PostgreSQL {backup_major} \
             programs",
            bindir.display()
        );
    }
    Ok(())
}

/// A dump restores into programs of its server's major version or newer.
pub fn check_dump_major(programs_major: u32, dump_major: u32, bindir: &Path) -> Result<()> {
    if programs_major < dump_major {
        bail!(
            "the dump is of PostgreSQL {dump_major}, newer than the programs in {} (PostgreSQL \
             {programs_major})\nhint: set [postgres] bindir to PostgreSQL {dump_major} or newer",
            bindir.display()
        );
    }
    Ok(())
}

/// The source's tablespaces on this host, `(oid, location)`, from the links in
/// `<pgdata>/pg_tblspc`. `Ok(None)` when this host has no such data directory (the drill runs
/// elsewhere, where the source's locations are not production's).
pub fn source_tablespaces(pgdata: &Path) -> Result<Option<Vec<(u32, PathBuf)>>> {
    let dir = pgdata.join("pg_tblspc");
    if !pgdata.exists() {
        return Ok(None);
    }
    let entries = std::fs::read_dir(&dir).with_context(|| {
        format!(
            "cannot list the source's tablespaces in {}: a drill must know them (a tablespace              created after the backup would be recreated at its source location)
hint: run              the drill as the user PostgreSQL runs as",
            dir.display()
        )
    })?;
    let mut out = Vec::new();
    for e in entries {
        let e = e.with_context(|| format!("cannot list {}", dir.display()))?;
        let Some(oid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let target = std::fs::read_link(e.path())
            .with_context(|| format!("cannot read the link {}", e.path().display()))?;
        out.push((oid, target));
    }
    out.sort();
    Ok(Some(out))
}

/// Refuses a backup whose recovery would replay a `CREATE TABLESPACE` of the source on this
/// host: PostgreSQL's redo of it removes `<location>/PG_<version>_<catversion>` if it exists
/// and links the tablespace there, whatever the restore mapped — the source's live tablespace
/// directory. A tablespace the source has now and the backup lacks was created after it.
pub fn check_no_new_tablespaces(
    backup: &str,
    in_backup: &[u32],
    source: &[(u32, PathBuf)],
) -> Result<()> {
    if let Some((oid, location)) = source.iter().find(|(oid, _)| !in_backup.contains(oid)) {
        bail!(
            "the source has tablespace {oid} at {}, created after backup {backup}: recovery              would replay its CREATE TABLESPACE, which empties and takes over that directory —              the source's own
hint: drill a backup taken after the tablespace was created              (`pgward backup`, then run the drill again), or run drills on another host",
            location.display()
        );
    }
    Ok(())
}

/// Refuses a scratch directory inside the source's data directory or one of its tablespaces
/// (a full copy there would fill production's file system and land in its next base backup),
/// or a relative one (a drill removes what it makes there; where is that?).
pub fn check_scratch_location(
    scratch: &Path,
    pgdata: Option<&Path>,
    tablespaces: &[(u32, PathBuf)],
) -> Result<()> {
    if !scratch.is_absolute() {
        bail!(
            "the drill's scratch directory {} is not an absolute path
hint: set `scratch_dir`              (drill file) or `[drill] scratch_dir` (pgward.toml) to an absolute path",
            scratch.display()
        );
    }
    let real = canonical_prefix(scratch);
    let forbidden = pgdata
        .map(|p| ("the source's data directory", p.to_path_buf()))
        .into_iter()
        .chain(
            tablespaces
                .iter()
                .map(|(_, l)| ("a source tablespace", l.clone())),
        );
    for (what, p) in forbidden {
        let p = canonical_prefix(&p);
        if real.starts_with(&p) {
            bail!(
                "the drill's scratch directory {} is inside {what} ({})
hint: point                  `scratch_dir` at a directory outside the source's files",
                scratch.display(),
                p.display()
            );
        }
    }
    Ok(())
}

/// `path` with its longest existing prefix resolved (symlinks followed) and the rest appended.
fn canonical_prefix(path: &Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut cur = path.to_path_buf();
    loop {
        if let Ok(real) = std::fs::canonicalize(&cur) {
            return rest.iter().rev().fold(real, |acc, c| acc.join(c));
        }
        match (cur.file_name().map(|n| n.to_os_string()), cur.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                cur = parent.to_path_buf();
            }
            _ => return path.to_path_buf(),
        }
    }
}

/// A drill to the end of the archive (`latest`, and `marker`, whose restore point is archived
/// last) must not stop at a hole: everything after it would be silently left out, and the drill
/// would "pass" with less data than the archive holds.
pub fn check_no_hole(plan: &RestorePlan) -> Result<()> {
    if let Some(missing) = &plan.wal_hole {
        bail!(
            "the WAL archive has a hole after backup {}: segment {missing} is missing while \
             later WAL is archived, so recovery would stop at {} and leave out everything after \
             it\nhint: the segment was lost or never archived; check archiving (pg_stat_archiver, \
             the server log), and take a new backup so that the newest WAL is recoverable",
            plan.backup.label,
            plan.wal_available_until
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_disk_estimate_and_its_refusal() {
        const MB: u64 = 1 << 20;
        let seg = 16 * MB;
        for (restored, segments, needed) in [
            (0, 0, DISK_MARGIN),
            (1000 * MB, 2, 1000 * MB + 32 * MB + 100 * MB + DISK_MARGIN),
            // pg_wal is recycled: a long archive does not count whole.
            (0, 10_000, 64 * seg + DISK_MARGIN),
        ] {
            assert_eq!(backup_bytes_needed(restored, segments, seg), needed);
        }
        assert_eq!(dump_bytes_needed(MB), 5 * MB + 64 * MB + DISK_MARGIN);
        let dir = Path::new("/var/tmp/pgward-drill");
        check_disk(dir, 2 * DISK_MARGIN, DISK_MARGIN).unwrap();
        let e = check_disk(dir, MB, 3 * MB).unwrap_err().to_string();
        assert!(e.contains("/var/tmp/pgward-drill has 1.0 MiB free"), "{e}");
        assert!(e.contains("scratch_dir"), "{e}");
    }

    #[test]
    fn versions() {
        let bin = Path::new("/usr/lib/postgresql/16/bin");
        check_major(15, 15, bin).unwrap();
        let e = check_major(16, 15, bin).unwrap_err().to_string();
        assert!(e.contains("backup is of PostgreSQL 15"), "{e}");
        assert!(e.contains("PostgreSQL 16"), "{e}");
        check_dump_major(16, 15, bin).unwrap();
        check_dump_major(15, 15, bin).unwrap();
        let e = check_dump_major(14, 15, bin).unwrap_err().to_string();
        assert!(e.contains("newer than the programs"), "{e}");
    }

    #[test]
    fn tablespaces_and_scratch_locations() {
        let src = vec![
            (16384, PathBuf::from("/srv/ts1")),
            (16390, PathBuf::from("/srv/ts2")),
        ];
        check_no_new_tablespaces("B", &[16384, 16390], &src).unwrap();
        check_no_new_tablespaces("B", &[16384, 16390, 17000], &src).unwrap();
        let e = check_no_new_tablespaces("B", &[16384], &src)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("tablespace 16390 at /srv/ts2, created after backup B"),
            "{e}"
        );
        let pgdata = Path::new("/var/lib/postgresql/15/main");
        check_scratch_location(Path::new("/var/tmp/pgward-drill"), Some(pgdata), &src).unwrap();
        for (scratch, what) in [
            (
                "/var/lib/postgresql/15/main/tmp",
                "the source's data directory",
            ),
            ("/srv/ts2/drills", "a source tablespace"),
            ("drills", "not an absolute path"),
        ] {
            let e = check_scratch_location(Path::new(scratch), Some(pgdata), &src)
                .unwrap_err()
                .to_string();
            assert!(e.contains(what), "{scratch}: {e}");
        }
        // Symlinks are followed: /tmp/x/link -> the data directory is inside it.
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::os::unix::fs::symlink(&data, dir.path().join("link")).unwrap();
        let e = check_scratch_location(&dir.path().join("link/drills"), Some(&data), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("inside the source's data directory"), "{e}");
    }

    #[test]
    fn the_source_tablespaces_of_this_host() {
        assert_eq!(
            source_tablespaces(Path::new("/no/such/pgdata")).unwrap(),
            None
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("pg_tblspc")).unwrap();
        std::os::unix::fs::symlink("/srv/ts1", dir.path().join("pg_tblspc/16384")).unwrap();
        assert_eq!(
            source_tablespaces(dir.path()).unwrap(),
            Some(vec![(16384, PathBuf::from("/srv/ts1"))])
        );
    }

    #[test]
    fn free_bytes_of_a_missing_directory_is_its_parents() {
        let free = free_bytes(Path::new("/tmp/pgward-no-such-dir/a/b")).unwrap();
        assert!(free > 0);
    }
}
