//! Crash-safe local file writes.
//!
//! Everything that writes a file the user relies on (the local repository, WAL files restored
//! into `pg_wal`, spool records) goes through this module. The invariant: a file under its final
//! name is always complete, and once a function here returns `Ok` the file and the directory
//! entry naming it survive a power failure.
//!
//! The recipe is the classic one: write a temp file created with `create_new` in the same
//! directory, `fsync` it, `rename` it over the final name, `fsync` the directory (see
//! <https://lwn.net/Articles/457667/>). Temp files are named `.tmp.<random>` so listings can
//! skip them, and are removed when a write fails or is abandoned.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Names of in-flight temp files start with this; readers skip such names.
pub const TEMP_PREFIX: &str = ".tmp.";

/// Data is written in pieces this large so an abandoned write stops early.
const WRITE_CHUNK: usize = 1 << 20;

/// Writes `data` to `path` atomically and durably: after `Ok`, `path` holds exactly `data`
/// even after a crash; after an error or a crash before that, `path` is unchanged.
/// The parent directory must exist.
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut tmp = TempFile::create_beside(path)?;
    tmp.write_all(data, None)?;
    tmp.sync()?;
    tmp.rename_to(path)
}

/// `fsync`s a directory so that entries created, renamed or removed in it are durable.
pub fn fsync_dir(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()?;
    journal::note("fsync-dir", path);
    Ok(())
}

/// `fsync`s an open file (and notes it in the [`journal`]).
pub fn fsync_file(f: &File, path: &Path) -> io::Result<()> {
    f.sync_all()?;
    journal::note("fsync", path);
    Ok(())
}

/// The order of durability steps (creates and fsyncs), recorded only while a test asks for
/// it: crash safety depends on that order (a restore's `pg_control` comes last), and the
/// order cannot be seen from the files afterwards. Off, it costs one relaxed load per step.
pub mod journal {
    use std::path::Path;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    static ON: AtomicBool = AtomicBool::new(false);
    static STEPS: Mutex<Vec<(String, std::path::PathBuf)>> = Mutex::new(Vec::new());

    /// Starts recording (process-wide; filter by path when tests run in parallel).
    pub fn start() {
        ON.store(true, Ordering::SeqCst);
    }

    /// The steps recorded so far whose path is under `root`, as `(step, path)`.
    pub fn steps_under(root: &Path) -> Vec<(String, std::path::PathBuf)> {
        STEPS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, p)| p.starts_with(root))
            .cloned()
            .collect()
    }

    pub(crate) fn note(step: &str, path: &Path) {
        if ON.load(Ordering::Relaxed) {
            let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
            STEPS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((step.to_string(), abs));
        }
    }
}

/// Makes `dir`, which lies under `root`, and every directory between them durable: creates the
/// missing ones, and fsyncs the parent of each — also of those that already exist. An existing
/// directory may have been created a moment ago by a concurrent writer that has not fsynced its
/// parent yet; an object put into it now and acknowledged would vanish with the directory in a
/// crash. Each directory is made durable once per process (a clean directory's fsync is cheap,
/// but a backup touches hundreds of block directories), so the hot path pays nothing after the
/// first write. `root` itself must already be durable (`init` made it).
pub fn ensure_dir_durable(root: &Path, dir: &Path) -> io::Result<()> {
    if dir.as_os_str().is_empty() || durable::known(dir) {
        return Ok(());
    }
    create_dir_all_durable(dir)?;
    let mut cur = dir;
    while cur != root && cur.starts_with(root) && !durable::known(cur) {
        let Some(parent) = cur.parent().filter(|p| !p.as_os_str().is_empty()) else {
            break;
        };
        fsync_dir(parent)?;
        durable::remember(cur);
        cur = parent;
    }
    Ok(())
}

/// Forgets that `dir` was made durable: it was removed (an emptied directory), so the next
/// [`ensure_dir_durable`] creates it again.
pub fn forget_durable(dir: &Path) {
    durable::forget(dir);
}

/// Directories this process has made durable (see [`ensure_dir_durable`]).
mod durable {
    use std::collections::HashSet;
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    static DIRS: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);

    pub(super) fn known(dir: &Path) -> bool {
        DIRS.lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|s| s.contains(dir))
    }

    pub(super) fn forget(dir: &Path) {
        if let Some(set) = DIRS.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            set.remove(dir);
        }
    }

    pub(super) fn remember(dir: &Path) {
        DIRS.lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_with(HashSet::new)
            .insert(dir.to_path_buf());
    }
}

/// Creates `dir` and any missing ancestors, fsyncing the parent of every directory created so
/// the new entries survive a crash. Existing directories are left as they are (see
/// [`ensure_dir_durable`] for a directory another process may have just created).
fn create_dir_all_durable(dir: &Path) -> io::Result<()> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    let mut missing = Vec::new();
    let mut cur = dir;
    loop {
        match fs::metadata(cur) {
            Ok(m) if m.is_dir() => break,
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::NotADirectory,
                    format!("{} exists and is not a directory", cur.display()),
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                missing.push(cur);
                match cur.parent() {
                    Some(p) if !p.as_os_str().is_empty() => cur = p,
                    _ => break,
                }
            }
            Err(e) => return Err(e),
        }
    }
    for d in missing.into_iter().rev() {
        match fs::create_dir(d) {
            Ok(()) => {}
            // Another writer created it concurrently; its creator fsyncs the parent, but we
            // cannot know it has yet, so fall through and fsync too.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && d.is_dir() => {}
            Err(e) => return Err(e),
        }
        if let Some(parent) = d.parent().filter(|p| !p.as_os_str().is_empty()) {
            fsync_dir(parent)?;
        }
    }
    Ok(())
}

/// A temp file next to its final destination; removed on drop unless it was renamed away.
#[derive(Debug)]
pub struct TempFile {
    file: File,
    path: PathBuf,
    dir: PathBuf,
    live: bool,
}

impl TempFile {
    /// Creates `.tmp.<random>` (with `create_new`, default permissions subject to the umask) in
    /// the directory that holds `final_path`.
    pub fn create_beside(final_path: &Path) -> io::Result<TempFile> {
        let dir = match final_path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        loop {
            let path = dir.join(format!("{TEMP_PREFIX}{:016x}", rand::random::<u64>()));
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => {
                    return Ok(TempFile {
                        file,
                        path,
                        dir,
                        live: true,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes all of `data`. When `cancel` is given and becomes true, stops between chunks
    /// with a "write cancelled" error (the temp file is then removed on drop).
    pub fn write_all(&mut self, data: &[u8], cancel: Option<&AtomicBool>) -> io::Result<()> {
        for chunk in data.chunks(WRITE_CHUNK) {
            check_cancel(cancel)?;
            self.file.write_all(chunk)?;
        }
        Ok(())
    }

    /// Flushes the file's data and metadata to stable storage.
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_all()
    }

    /// Renames the temp file over `final_path` (same directory) and fsyncs the directory.
    pub fn rename_to(mut self, final_path: &Path) -> io::Result<()> {
        fs::rename(&self.path, final_path)?;
        self.live = false;
        fsync_dir(&self.dir)
    }

    /// Links the temp file to `final_path` only if nothing exists there (`link(2)` fails with
    /// `EEXIST` atomically), fsyncs the directory and removes the temp name.
    /// Returns `Ok(false)` when `final_path` already existed.
    pub fn link_if_absent(mut self, final_path: &Path) -> io::Result<bool> {
        match fs::hard_link(&self.path, final_path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(e),
        }
        fs::remove_file(&self.path)?;
        self.live = false;
        fsync_dir(&self.dir)?;
        Ok(true)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keeps the temp file on disk (it is no longer removed on drop) and returns its path:
    /// for a file written across several calls, finished by a rename or removed explicitly.
    pub fn keep(mut self) -> PathBuf {
        self.live = false;
        self.path.clone()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.live {
            // Best effort: a leftover temp file is harmless (readers skip the prefix).
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Fails with "write cancelled" when `cancel` is set.
pub fn check_cancel(cancel: Option<&AtomicBool>) -> io::Result<()> {
    if cancel.is_some_and(|c| c.load(Ordering::Acquire)) {
        return Err(io::Error::other("write cancelled"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn write_atomic_creates_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        write_atomic(&p, b"one").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"one");
        write_atomic(&p, b"second version").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"second version");
        write_atomic(&p, b"").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"");
        assert_eq!(names(dir.path()), vec!["f"], "no temp files left behind");
    }

    #[test]
    fn write_atomic_large_is_complete() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big");
        let data: Vec<u8> = (0..3 * WRITE_CHUNK + 17).map(|i| (i % 251) as u8).collect();
        write_atomic(&p, &data).unwrap();
        assert_eq!(fs::read(&p).unwrap(), data);
    }

    #[test]
    fn write_atomic_failure_leaves_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        // The target is a non-empty directory: rename fails after the temp file was written.
        let p = dir.path().join("d");
        fs::create_dir(&p).unwrap();
        fs::write(p.join("x"), b"x").unwrap();
        assert!(write_atomic(&p, b"data").is_err());
        assert_eq!(names(dir.path()), vec!["d"], "temp file removed on failure");
        // A missing parent directory is an error, not a silent success.
        assert!(write_atomic(&dir.path().join("missing/f"), b"x").is_err());
    }

    #[test]
    fn cancelled_write_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let cancel = AtomicBool::new(true);
        let mut tmp = TempFile::create_beside(&p).unwrap();
        let err = tmp.write_all(b"abc", Some(&cancel)).unwrap_err();
        assert!(err.to_string().contains("cancelled"), "{err}");
        drop(tmp);
        assert!(names(dir.path()).is_empty());
    }

    #[test]
    fn link_if_absent_does_not_clobber() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let mut t = TempFile::create_beside(&p).unwrap();
        t.write_all(b"first", None).unwrap();
        t.sync().unwrap();
        assert!(t.link_if_absent(&p).unwrap());
        let mut t = TempFile::create_beside(&p).unwrap();
        t.write_all(b"second", None).unwrap();
        assert!(!t.link_if_absent(&p).unwrap());
        assert_eq!(fs::read(&p).unwrap(), b"first");
        assert_eq!(names(dir.path()), vec!["f"]);
    }

    #[test]
    fn create_dir_all_durable_makes_nested_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b/c");
        create_dir_all_durable(&nested).unwrap();
        assert!(nested.is_dir());
        create_dir_all_durable(&nested).unwrap();
        fs::write(dir.path().join("file"), b"").unwrap();
        assert!(create_dir_all_durable(&dir.path().join("file/sub")).is_err());
    }
}
