//! Walking the data directory: which directories and files a backup copies, in a stream.
//!
//! [`Walk`] is an iterator that reads one directory at a time (depth first, names sorted), so
//! memory grows with the depth of the tree and the width of one directory, not with the size
//! of the cluster. It applies the rules of [`super::exclude`], follows the tablespace links in
//! `pg_tblspc` (only into this server's version directory, as `pg_basebackup` does) and records
//! their files under `pg_tblspc/<oid>/…`, which is how PostgreSQL addresses them. It records
//! each link it followed ([`Walk::followed`]), so the backup can tell which tablespaces were
//! created while it ran (see [`super::tablespaces`]).
//!
//! Files and directories may disappear while the cluster runs (a dropped table, a finished
//! temporary file): an entry that is gone by the time it is looked at is skipped. Any other
//! error (permissions, IO) fails the walk, since the backup would be incomplete.
//! `global/pg_control` comes last, as in `pg_basebackup`, so the copy is taken after every
//! other file.

use super::exclude::{self, DbDirFilter};
use crate::pg::page_checksum;
use crate::repo::manifest::TablespaceEntry;
use anyhow::{Context, Result};
use std::collections::VecDeque;
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The directory tablespaces link to from `pg_tblspc`.
pub const TBLSPC_DIR: &str = "pg_tblspc";

/// Copied after everything else.
const PG_CONTROL: &str = "global/pg_control";

/// Mode recorded for a directory that is a symlink on the source (`pg_wal` on another disk):
/// it is restored as a plain directory (`pg_dir_create_mode`).
const LINKED_DIR_MODE: u32 = 0o700;

/// One thing to copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Dir {
        /// Relative to the data directory, `/`-separated.
        path: String,
        mode: u32,
        mtime: i64,
    },
    File {
        path: String,
        /// Where to read it.
        abs: PathBuf,
        mode: u32,
        mtime: i64,
        /// Size when listed (the copy records what it actually reads).
        size: u64,
        /// For relation files with page checksums: the segment number (`.1` → 1).
        relation_segno: Option<u32>,
    },
}

impl Entry {
    pub fn path(&self) -> &str {
        match self {
            Entry::Dir { path, .. } | Entry::File { path, .. } => path,
        }
    }
}

/// The name of this server's directory inside each tablespace (`TABLESPACE_VERSION_DIRECTORY`:
/// `PG_<major>_<catalog version>`).
pub fn tablespace_version_dir(pg_major: u32, catalog_version: u32) -> String {
    format!("PG_{pg_major}_{catalog_version}")
}

/// The tablespaces linked from `pg_tblspc`, oldest oid first. Directories there (in-place
/// tablespaces) are part of the data directory and not listed.
pub fn tablespaces(pgdata: &Path) -> Result<Vec<TablespaceEntry>> {
    let dir = pgdata.join(TBLSPC_DIR);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", dir.display())),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        let Some(oid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let path = entry.path();
        let is_link = entry
            .file_type()
            .with_context(|| format!("cannot stat {}", path.display()))?
            .is_symlink();
        if !is_link {
            continue;
        }
        let target = match fs::read_link(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read link {}", path.display()));
            }
        };
        out.push(TablespaceEntry {
            oid,
            location: target.to_string_lossy().into_owned(),
            ..Default::default()
        });
    }
    out.sort_by_key(|t| t.oid);
    Ok(out)
}

/// One directory being listed.
struct Frame {
    rel: String,
    abs: PathBuf,
    children: std::vec::IntoIter<String>,
    db_filter: Option<DbDirFilter>,
}

/// The entries of a data directory to back up; see the module documentation.
pub struct Walk {
    version_dir: String,
    stack: Vec<Frame>,
    /// Entries produced ahead of their turn (a directory's own entry before its listing).
    pending: VecDeque<Entry>,
    /// `global/pg_control`, held back until the end.
    control: Option<Entry>,
    followed: Followed,
    done: bool,
}

/// The tablespace links a [`Walk`] followed, readable after the walk has moved to the copy's
/// thread.
#[derive(Debug, Clone, Default)]
pub struct Followed(Arc<Mutex<Vec<TablespaceEntry>>>);

impl Followed {
    /// The links followed so far, by oid.
    pub fn take(&self) -> Vec<TablespaceEntry> {
        let mut v = std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()));
        v.sort_by_key(|t| t.oid);
        v
    }

    fn push(&self, t: TablespaceEntry) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(t);
    }
}

impl Walk {
    /// Walks `pgdata`; `version_dir` is this server's directory inside tablespaces.
    pub fn new(pgdata: &Path, version_dir: &str) -> Result<Walk> {
        hook::before_listing(pgdata);
        let children = list_dir(pgdata)?
            .with_context(|| format!("data directory {} does not exist", pgdata.display()))?;
        Ok(Walk {
            version_dir: version_dir.to_string(),
            stack: vec![Frame {
                rel: String::new(),
                abs: pgdata.to_path_buf(),
                children: children.into_iter(),
                db_filter: None,
            }],
            pending: VecDeque::new(),
            control: None,
            followed: Followed::default(),
            done: false,
        })
    }

    /// A handle on the tablespace links this walk follows.
    pub fn followed(&self) -> Followed {
        self.followed.clone()
    }

    fn step(&mut self) -> Result<Option<Entry>> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Ok(Some(e));
            }
            let Some(frame) = self.stack.last_mut() else {
                return Ok(self.control.take());
            };
            let Some(name) = frame.children.next() else {
                self.stack.pop();
                continue;
            };
            let rel = if frame.rel.is_empty() {
                name.clone()
            } else {
                format!("{}/{name}", frame.rel)
            };
            let abs = frame.abs.join(&name);
            if let Some(why) = exclude::excluded_name(&name) {
                tracing::debug!(path = %rel, why, "not backed up");
                continue;
            }
            if let Some(why) = frame.db_filter.as_ref().and_then(|f| f.excluded(&name)) {
                tracing::debug!(path = %rel, why, "not backed up");
                continue;
            }
            let in_tblspc = frame.rel == TBLSPC_DIR;
            let Some(meta) = lstat(&abs)? else {
                continue;
            };
            let ft = meta.file_type();

            if exclude::excludes_contents(&rel) && (ft.is_dir() || ft.is_symlink()) {
                let mode = if ft.is_dir() {
                    mode_of(&meta)
                } else {
                    LINKED_DIR_MODE
                };
                self.pending.push_back(dir_entry(rel.clone(), mode, &meta));
                if rel == "pg_wal" {
                    // As pg_basebackup does, so a restored pg_wal is ready for the archiver.
                    self.pending
                        .push_back(dir_entry("pg_wal/archive_status".into(), mode, &meta));
                }
                continue;
            }
            if in_tblspc && ft.is_symlink() {
                self.enter_tablespace(rel, abs)?;
                continue;
            }
            if ft.is_symlink() {
                tracing::warn!(
                    path = %abs.display(),
                    "skipping a symbolic link outside pg_tblspc (pg_basebackup skips these too)"
                );
                continue;
            }
            if ft.is_dir() {
                hook::before_listing(&abs);
                let Some(children) = list_dir(&abs)? else {
                    continue;
                };
                let db_filter = exclude::is_db_dir(&rel)
                    .then(|| DbDirFilter::new(children.iter().map(String::as_str)));
                self.stack.push(Frame {
                    rel: rel.clone(),
                    abs,
                    children: children.into_iter(),
                    db_filter,
                });
                return Ok(Some(dir_entry(rel, mode_of(&meta), &meta)));
            }
            if ft.is_file() {
                let entry = Entry::File {
                    relation_segno: page_checksum::relation_segment(&rel),
                    path: rel,
                    abs,
                    mode: mode_of(&meta),
                    mtime: meta.mtime(),
                    size: meta.len(),
                };
                if entry.path() == PG_CONTROL {
                    self.control = Some(entry);
                    continue;
                }
                return Ok(Some(entry));
            }
            tracing::warn!(path = %abs.display(), "skipping a special file (socket, fifo or device)");
        }
    }

    /// `pg_tblspc/<oid>` links to a tablespace directory: record it as a directory and walk
    /// only this server's version directory inside it.
    fn enter_tablespace(&mut self, rel: String, abs: PathBuf) -> Result<()> {
        let target = match fs::metadata(&abs) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                tracing::warn!(
                    link = %abs.display(),
                    "tablespace link points nowhere; skipping it (was the tablespace dropped?)"
                );
                return Ok(());
            }
            Err(e) => return Err(e).with_context(|| format!("cannot stat {}", abs.display())),
        };
        if !target.is_dir() {
            tracing::warn!(link = %abs.display(), "tablespace link does not point to a directory; skipping it");
            return Ok(());
        }
        let oid = rel.rsplit('/').next().and_then(|n| n.parse::<u32>().ok());
        if let Some(oid) = oid {
            let location = fs::read_link(&abs)
                .with_context(|| format!("cannot read link {}", abs.display()))?;
            self.followed.push(TablespaceEntry {
                oid,
                location: location.to_string_lossy().into_owned(),
                ..Default::default()
            });
        }
        self.pending
            .push_back(dir_entry(rel.clone(), mode_of(&target), &target));
        self.stack.push(Frame {
            rel,
            abs,
            children: vec![self.version_dir.clone()].into_iter(),
            db_filter: None,
        });
        Ok(())
    }
}

impl Iterator for Walk {
    type Item = Result<Entry>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.step() {
            Ok(Some(e)) => Some(Ok(e)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// A pause point for tests: what happens to a backup when the cluster changes while it is
/// being copied (a tablespace created mid-copy, say) cannot be timed from outside. A test
/// sets a callback that the walk runs before it lists each directory (on the walk's own
/// thread, so the copy waits while it runs). Off, it costs one relaxed load per directory.
pub mod hook {
    use std::path::Path;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    type Callback = Arc<dyn Fn(&Path) + Send + Sync>;

    static ON: AtomicBool = AtomicBool::new(false);
    static CALLBACK: Mutex<Option<Callback>> = Mutex::new(None);

    /// Runs `f(dir)` before every directory the walk lists, in every walk of this process
    /// (tests running in parallel filter on the path), until [`clear`].
    pub fn set_before_listing(f: impl Fn(&Path) + Send + Sync + 'static) {
        *CALLBACK.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(f));
        ON.store(true, Ordering::SeqCst);
    }

    pub fn clear() {
        ON.store(false, Ordering::SeqCst);
        *CALLBACK.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    pub(super) fn before_listing(dir: &Path) {
        if !ON.load(Ordering::Relaxed) {
            return;
        }
        // Not called under the lock: the callback may take long (it runs SQL).
        let f = CALLBACK.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(f) = f {
            f(dir);
        }
    }
}

fn dir_entry(path: String, mode: u32, meta: &Metadata) -> Entry {
    Entry::Dir {
        path,
        mode,
        mtime: meta.mtime(),
    }
}

/// Permission bits (including setgid and friends, which PostgreSQL does not use but a restore
/// should not lose).
fn mode_of(meta: &Metadata) -> u32 {
    meta.permissions().mode() & 0o7777
}

/// `lstat`, with `None` for an entry that no longer exists.
fn lstat(path: &Path) -> Result<Option<Metadata>> {
    match fs::symlink_metadata(path) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot stat {}", path.display())),
    }
}

/// The sorted names in a directory, `None` if it no longer exists. Names that are not UTF-8
/// cannot be recorded in a manifest; PostgreSQL never creates them, so they are skipped with
/// a warning.
fn list_dir(path: &Path) -> Result<Option<Vec<String>>> {
    let entries = match fs::read_dir(path) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(e).with_context(|| {
                format!(
                    "cannot list {}\nhint: pgward must run as the user that owns the data directory",
                    path.display()
                )
            });
        }
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot list {}", path.display())),
        };
        match entry.file_name().into_string() {
            Ok(name) => names.push(name),
            Err(raw) => tracing::warn!(
                dir = %path.display(),
                name = ?raw,
                "skipping a file whose name is not UTF-8"
            ),
        }
    }
    names.sort();
    Ok(Some(names))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn touch(root: &Path, rel: &str, len: usize) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, vec![1u8; len]).unwrap();
    }

    fn mkdir(root: &Path, rel: &str) {
        fs::create_dir_all(root.join(rel)).unwrap();
    }

    /// A small data directory with one of everything the rules care about.
    fn sample() -> (tempfile::TempDir, tempfile::TempDir) {
        let pg = tempfile::tempdir().unwrap();
        let ts = tempfile::tempdir().unwrap();
        let r = pg.path();
        touch(r, "PG_VERSION", 3);
        touch(r, "postgresql.conf", 10);
        touch(r, "postgresql.auto.conf", 10);
        touch(r, "postgresql.auto.conf.tmp", 10);
        touch(r, "postmaster.pid", 10);
        touch(r, "postmaster.opts", 10);
        touch(r, "standby.signal", 0);
        touch(r, "global/pg_control", 8192);
        touch(r, "global/1260", 8192);
        touch(r, "global/pg_internal.init", 100);
        touch(r, "base/1/1259", 16384);
        touch(r, "base/1/1259.1", 8192);
        touch(r, "base/1/PG_VERSION", 3);
        touch(r, "base/1/16384", 8192);
        touch(r, "base/1/16384_fsm", 8192);
        touch(r, "base/1/16384_init", 0);
        touch(r, "base/1/t3_16390", 8192);
        touch(r, "base/pgsql_tmp/pgsql_tmp123.0", 100);
        touch(r, "pg_wal/000000010000000000000001", 100);
        touch(r, "pg_wal/archive_status/000000010000000000000001.done", 0);
        touch(r, "pg_replslot/slot1/state", 10);
        touch(r, "pg_stat_tmp/global.stat", 10);
        touch(r, "pg_subtrans/0000", 10);
        touch(r, "pg_xact/0000", 8192);
        mkdir(r, "pg_notify");
        mkdir(r, "pg_logical/snapshots");
        mkdir(r, "pg_tblspc");
        touch(ts.path(), "PG_15_202209061/16384/16400", 8192);
        touch(ts.path(), "PG_15_202209061/16384/16400_vm", 8192);
        touch(ts.path(), "PG_14_202107181/16384/99999", 8192);
        symlink(ts.path(), r.join("pg_tblspc/16399")).unwrap();
        symlink("/nonexistent/elsewhere", r.join("stray_link")).unwrap();
        (pg, ts)
    }

    #[test]
    fn walks_with_the_exclusion_rules() {
        let (pg, ts) = sample();
        let walk = Walk::new(pg.path(), "PG_15_202209061").unwrap();
        let followed = walk.followed();
        let entries: Vec<Entry> = walk.collect::<Result<_>>().unwrap();
        let dirs: Vec<&str> = entries
            .iter()
            .filter(|e| matches!(e, Entry::Dir { .. }))
            .map(Entry::path)
            .collect();
        let files: Vec<&str> = entries
            .iter()
            .filter(|e| matches!(e, Entry::File { .. }))
            .map(Entry::path)
            .collect();
        assert_eq!(
            dirs,
            [
                "base",
                "base/1",
                "global",
                "pg_logical",
                "pg_logical/snapshots",
                "pg_notify",
                "pg_replslot",
                "pg_stat_tmp",
                "pg_subtrans",
                "pg_tblspc",
                "pg_tblspc/16399",
                "pg_tblspc/16399/PG_15_202209061",
                "pg_tblspc/16399/PG_15_202209061/16384",
                "pg_wal",
                "pg_wal/archive_status",
                "pg_xact",
            ]
        );
        assert_eq!(
            files,
            [
                "PG_VERSION",
                "base/1/1259",
                "base/1/1259.1",
                "base/1/16384_init",
                "base/1/PG_VERSION",
                "global/1260",
                "pg_tblspc/16399/PG_15_202209061/16384/16400",
                "pg_tblspc/16399/PG_15_202209061/16384/16400_vm",
                "pg_xact/0000",
                "postgresql.auto.conf",
                "postgresql.conf",
                // Copied last.
                "global/pg_control",
            ]
        );
        let seg = |p: &str| {
            entries.iter().find_map(|e| match e {
                Entry::File {
                    path,
                    relation_segno,
                    ..
                } if path == p => Some(*relation_segno),
                _ => None,
            })
        };
        assert_eq!(seg("base/1/1259.1"), Some(Some(1)));
        assert_eq!(seg("global/1260"), Some(Some(0)));
        assert_eq!(seg("pg_xact/0000"), Some(None));
        assert_eq!(seg("global/pg_control"), Some(None));
        assert_eq!(
            seg("pg_tblspc/16399/PG_15_202209061/16384/16400"),
            Some(Some(0))
        );

        let ts_list = tablespaces(pg.path()).unwrap();
        assert_eq!(
            ts_list,
            [TablespaceEntry {
                oid: 16399,
                location: ts.path().to_string_lossy().into_owned(),
                ..Default::default()
            }]
        );
        assert_eq!(
            followed.take(),
            ts_list,
            "the walk records the links it followed"
        );
    }

    #[test]
    fn modes_are_permission_bits() {
        let (pg, _ts) = sample();
        fs::set_permissions(
            pg.path().join("base/1/1259"),
            fs::Permissions::from_mode(0o640),
        )
        .unwrap();
        fs::set_permissions(pg.path().join("base"), fs::Permissions::from_mode(0o750)).unwrap();
        for e in Walk::new(pg.path(), "PG_15_202209061").unwrap() {
            match e.unwrap() {
                Entry::File { path, mode, .. } if path == "base/1/1259" => {
                    assert_eq!(mode, 0o640)
                }
                Entry::Dir { path, mode, .. } if path == "base" => assert_eq!(mode, 0o750),
                _ => {}
            }
        }
    }

    #[test]
    fn a_missing_data_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = Walk::new(&dir.path().join("nope"), "PG_15_1")
            .err()
            .unwrap();
        assert!(format!("{err:#}").contains("does not exist"), "{err:#}");
    }
}
