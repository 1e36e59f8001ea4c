//! A repository in a local directory (`file:///var/lib/pgward/repo`).
//!
//! Keys map to files under the root (`wal/00000001/…` is `<root>/wal/00000001/…`). Writes go
//! through [`crate::fsutil`]: a `.tmp.<random>` file in the target directory, `fsync`, then
//! `rename` (or `link` for [`Storage::put_if_absent`]) and an `fsync` of the directory, so an
//! object is either absent or complete and durable. Listings skip temp files.
//!
//! File IO runs on tokio's blocking pool. Dropping a `put` future sets a flag that the writer
//! checks between chunks and before making the object visible, so a cancelled put normally
//! leaves nothing behind; if the cancellation races with the final rename, the whole object
//! appears, never a part of it.
//!
//! Files and directories are created with default permissions (subject to the umask): the
//! repository may be shared by root and the `postgres` user, and ownership is the operator's
//! choice, not ours.

use super::stream::{ByteStream, Part, PartReceipt, Upload};
use super::{ObjectMeta, PutOutcome, Storage, StorageError, StorageResult};
use crate::fsutil::{self, TEMP_PREFIX, TempFile};
use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug, Clone)]
pub struct LocalStorage {
    root: PathBuf,
}

impl LocalStorage {
    /// A repository rooted at `root`. The directory is created on the first write if missing.
    pub fn new(root: PathBuf) -> LocalStorage {
        LocalStorage { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path_of(&self, key: &str) -> StorageResult<PathBuf> {
        validate_key(key)?;
        Ok(self.root.join(key))
    }

    /// The directory a listing of `prefix` reads, the key prefix of its entries and the name
    /// prefix they must have (only the part of `prefix` up to its last `/` names a directory).
    fn listing_of(&self, prefix: &str) -> StorageResult<(PathBuf, String, String)> {
        let (dir_part, name_prefix) = match prefix.rfind('/') {
            Some(i) => (&prefix[..i], &prefix[i + 1..]),
            None => ("", prefix),
        };
        if prefix.starts_with('/') {
            return Err(StorageError::Permanent(format!(
                "list prefix `{prefix}` must be relative (no leading `/`)"
            )));
        }
        if !dir_part.is_empty() {
            validate_segments(dir_part, prefix)?;
        }
        let key_base = if dir_part.is_empty() {
            String::new()
        } else {
            format!("{dir_part}/")
        };
        Ok((self.root.join(dir_part), key_base, name_prefix.to_string()))
    }

    /// The temp file of a streamed upload: `id` is its name, beside the key's final path.
    fn upload_path(&self, upload: &Upload) -> StorageResult<(PathBuf, PathBuf)> {
        let path = self.path_of(&upload.key)?;
        if !upload.id.starts_with(TEMP_PREFIX) || upload.id.contains('/') {
            return Err(StorageError::Permanent(format!(
                "`{}` is not an upload of this repository",
                upload.id
            )));
        }
        let tmp = path
            .parent()
            .map(|p| p.join(&upload.id))
            .unwrap_or_else(|| PathBuf::from(&upload.id));
        Ok((path, tmp))
    }
}

/// Bytes read per chunk of a streamed get.
const STREAM_CHUNK: usize = 1 << 20;

/// Keys are relative `/`-separated paths without empty, `.` or `..` segments; segments must
/// not look like our temp files.
fn validate_key(key: &str) -> StorageResult<()> {
    if key.is_empty() {
        return Err(StorageError::Permanent("empty object key".into()));
    }
    if key.starts_with('/') {
        return Err(StorageError::Permanent(format!(
            "object key `{key}` must be relative (no leading `/`)"
        )));
    }
    validate_segments(key, key)
}

fn validate_segments(path: &str, key: &str) -> StorageResult<()> {
    for seg in path.split('/') {
        if seg.is_empty() || seg == "." || seg == ".." {
            return Err(StorageError::Permanent(format!(
                "object key `{key}` has an empty, `.` or `..` segment"
            )));
        }
        if seg.starts_with(TEMP_PREFIX) {
            return Err(StorageError::Permanent(format!(
                "object key `{key}` uses the reserved temp-file prefix `{TEMP_PREFIX}`"
            )));
        }
        if seg.contains('\0') {
            return Err(StorageError::Permanent(format!(
                "object key `{key:?}` contains a NUL byte"
            )));
        }
    }
    Ok(())
}

/// Whether the failure is about a read finding nothing where an object would be.
fn is_absent(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory | io::ErrorKind::IsADirectory
    )
}

/// Classifies an IO error. `write` selects the wording and treats a vanished directory during a
/// write (a concurrent delete) as transient rather than "not found".
fn map_io(op: &str, path: &Path, e: io::Error, write: bool) -> StorageError {
    let what = format!("cannot {op} {}: {e}", path.display());
    if e.kind() == io::ErrorKind::NotFound && !write {
        return StorageError::NotFound(path.display().to_string());
    }
    use io::ErrorKind as K;
    let code = e.raw_os_error();
    let is = |codes: &[i32]| code.is_some_and(|c| codes.contains(&c));
    if matches!(e.kind(), K::StorageFull | K::QuotaExceeded) || is(&[libc::ENOSPC, libc::EDQUOT]) {
        StorageError::Permanent(format!(
            "{what}\nhint: the repository filesystem is full; free space or move the repository"
        ))
    } else if e.kind() == K::PermissionDenied || is(&[libc::EACCES, libc::EPERM]) {
        StorageError::Permanent(format!(
            "{what}\nhint: check the owner and permissions of the repository directory; it must \
             be writable by the user running pgward (often `postgres`)"
        ))
    } else if e.kind() == K::ReadOnlyFilesystem || is(&[libc::EROFS]) {
        StorageError::Permanent(format!(
            "{what}\nhint: the repository filesystem is mounted read-only"
        ))
    } else if matches!(
        e.kind(),
        K::NotADirectory | K::IsADirectory | K::DirectoryNotEmpty | K::InvalidFilename
    ) || is(&[
        libc::ENOTDIR,
        libc::EISDIR,
        libc::ENOTEMPTY,
        libc::ENAMETOOLONG,
        libc::ELOOP,
    ]) {
        StorageError::Permanent(format!(
            "{what}\nhint: a file or directory pgward did not write is in the way in the repository"
        ))
    } else {
        StorageError::Transient(what)
    }
}

/// Sets the flag when dropped, telling the blocking writer its caller went away.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> StorageResult<T> + Send + 'static,
) -> StorageResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StorageError::Transient(format!("local storage io task failed: {e}")))?
}

/// Writes `data` into a temp file beside `path`, fsynced, its directory durable under `root`.
fn write_temp(root: &Path, path: &Path, data: &[u8], cancel: &AtomicBool) -> io::Result<TempFile> {
    let mut tmp = in_durable_dir(root, path, || TempFile::create_beside(path))?;
    tmp.write_all(data, Some(cancel))?;
    tmp.sync()?;
    fsutil::check_cancel(Some(cancel))?;
    Ok(tmp)
}

/// Runs `make`, which creates an entry beside `path`, once the directory holding `path` is
/// durable. A directory emptied by a `delete` is removed (S3 has no directories, and an
/// operator should not find `backups/<label>/` left empty by a failed backup), so it may vanish
/// between the two: then it is made again and `make` retried once.
fn in_durable_dir<T>(root: &Path, path: &Path, make: impl Fn() -> io::Result<T>) -> io::Result<T> {
    let Some(dir) = path.parent() else {
        return make();
    };
    fsutil::ensure_dir_durable(root, dir)?;
    match make() {
        Err(e) if e.kind() == io::ErrorKind::NotFound && !dir.is_dir() => {
            fsutil::forget_durable(dir);
            fsutil::ensure_dir_durable(root, dir)?;
            make()
        }
        other => other,
    }
}

/// Removes the directories that `delete` left empty, from `dir` up to (not including) `root`.
/// Best effort: a directory another writer is filling is not empty and stays.
fn remove_empty_dirs(root: &Path, mut dir: &Path) {
    while dir != root && dir.starts_with(root) && fs::remove_dir(dir).is_ok() {
        fsutil::forget_durable(dir);
        match dir.parent() {
            Some(p) => dir = p,
            None => break,
        }
    }
}

#[async_trait]
impl Storage for LocalStorage {
    async fn put(&self, key: &str, data: Bytes) -> StorageResult<()> {
        let path = self.path_of(key)?;
        let root = self.root.clone();
        let cancel = Arc::new(AtomicBool::new(false));
        let _guard = CancelOnDrop(cancel.clone());
        blocking(move || {
            write_temp(&root, &path, &data, &cancel)
                .and_then(|tmp| tmp.rename_to(&path))
                .map_err(|e| map_io("write", &path, e, true))
        })
        .await
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> StorageResult<PutOutcome> {
        let path = self.path_of(key)?;
        let root = self.root.clone();
        let cancel = Arc::new(AtomicBool::new(false));
        let _guard = CancelOnDrop(cancel.clone());
        blocking(move || {
            // Cheap early exit; the link below is what makes the decision atomic.
            let exists = fs::metadata(&path).is_ok_and(|m| m.is_file());
            if !exists
                && write_temp(&root, &path, &data, &cancel)
                    .and_then(|tmp| tmp.link_if_absent(&path))
                    .map_err(|e| map_io("write", &path, e, true))?
            {
                return Ok(PutOutcome::Written);
            }
            // The object is someone else's, perhaps linked a moment ago by a process that has
            // not fsynced the directory yet: make its entry durable before the caller relies on
            // it (wal-push answers "archived" on an identical existing object).
            if let Some(dir) = path.parent() {
                fsutil::ensure_dir_durable(&root, dir)
                    .and_then(|()| fsutil::fsync_dir(dir))
                    .map_err(|e| map_io("fsync", dir, e, true))?;
            }
            Ok(PutOutcome::AlreadyExists)
        })
        .await
    }

    async fn get(&self, key: &str) -> StorageResult<Bytes> {
        let path = self.path_of(key)?;
        let key = key.to_string();
        blocking(move || match fs::read(&path) {
            Ok(v) => Ok(Bytes::from(v)),
            Err(e) if is_absent(&e) => Err(StorageError::NotFound(key)),
            Err(e) => Err(map_io("read", &path, e, false)),
        })
        .await
    }

    async fn head(&self, key: &str) -> StorageResult<Option<ObjectMeta>> {
        let path = self.path_of(key)?;
        let key = key.to_string();
        blocking(move || match fs::metadata(&path) {
            Ok(m) if m.is_file() => Ok(Some(meta_of(key, &m))),
            Ok(_) => Ok(None),
            Err(e) if is_absent(&e) => Ok(None),
            Err(e) => Err(map_io("stat", &path, e, false)),
        })
        .await
    }

    async fn list(&self, prefix: &str) -> StorageResult<Vec<ObjectMeta>> {
        let (dir, key_base, name_prefix) = self.listing_of(prefix)?;
        blocking(move || {
            let mut out = Vec::new();
            list_dir(&dir, &key_base, &name_prefix, &mut out)
                .map_err(|e| map_io("list", &dir, e, false))?;
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
        .await
    }

    /// Walks the directories in key order and skips every subtree whose keys all sort before
    /// `start_after`, so asking for the WAL after a segment reads its log directory and the
    /// next one, not the whole timeline.
    async fn list_after(
        &self,
        prefix: &str,
        start_after: &str,
        limit: usize,
    ) -> StorageResult<Vec<ObjectMeta>> {
        let (dir, key_base, name_prefix) = self.listing_of(prefix)?;
        let start_after = start_after.to_string();
        blocking(move || {
            let mut out = Vec::new();
            let mut walk = SortedWalk {
                start_after: &start_after,
                limit,
                out: &mut out,
            };
            walk.dir(&dir, &key_base, &name_prefix)
                .map_err(|e| map_io("list", &dir, e, false))?;
            Ok(out)
        })
        .await
    }

    async fn delete(&self, key: &str) -> StorageResult<()> {
        let path = self.path_of(key)?;
        let root = self.root.clone();
        blocking(move || {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if is_absent(&e) => return Ok(()),
                Err(e) => return Err(map_io("delete", &path, e, true)),
            }
            if let Some(dir) = path.parent() {
                remove_empty_dirs(&root, dir);
            }
            Ok(())
        })
        .await
    }

    /// A hard link: no bytes copied, and `link(2)` refuses an existing target atomically.
    async fn copy_if_absent(&self, from: &str, to: &str) -> StorageResult<PutOutcome> {
        let src = self.path_of(from)?;
        let dst = self.path_of(to)?;
        let root = self.root.clone();
        let from = from.to_string();
        blocking(move || {
            if let Some(dir) = dst.parent() {
                fsutil::ensure_dir_durable(&root, dir)
                    .map_err(|e| map_io("write", dir, e, true))?;
            }
            let outcome = match fs::hard_link(&src, &dst) {
                Ok(()) => PutOutcome::Written,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => PutOutcome::AlreadyExists,
                Err(e) if is_absent(&e) && !src.exists() => {
                    return Err(StorageError::NotFound(from));
                }
                Err(e) => return Err(map_io("link", &dst, e, true)),
            };
            if let Some(dir) = dst.parent() {
                fsutil::fsync_dir(dir).map_err(|e| map_io("fsync", dir, e, true))?;
            }
            Ok(outcome)
        })
        .await
    }

    /// A temp file beside the final path, in a directory made durable now.
    async fn upload_start(&self, key: &str) -> StorageResult<Upload> {
        let path = self.path_of(key)?;
        let root = self.root.clone();
        let key = key.to_string();
        blocking(move || {
            let tmp = in_durable_dir(&root, &path, || TempFile::create_beside(&path))
                .map_err(|e| map_io("write", &path, e, true))?
                .keep();
            let id = tmp
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            Ok(Upload { key, id })
        })
        .await
    }

    /// Writes the part at its offset (so parts may arrive in any order and be re-sent).
    async fn upload_part(
        &self,
        upload: &Upload,
        part: Part,
        data: Bytes,
    ) -> StorageResult<PartReceipt> {
        use std::os::unix::fs::FileExt;
        let (_, tmp) = self.upload_path(upload)?;
        blocking(move || {
            let file = fs::OpenOptions::new()
                .write(true)
                .open(&tmp)
                .map_err(|e| map_io("write", &tmp, e, true))?;
            file.write_all_at(&data, part.offset)
                .map_err(|e| map_io("write", &tmp, e, true))?;
            Ok(PartReceipt {
                number: part.number,
                len: data.len() as u64,
                etag: None,
                crc32: None,
            })
        })
        .await
    }

    /// fsync, check the length, rename over the key, fsync the directory.
    async fn upload_finish(
        &self,
        upload: &Upload,
        _parts: &[PartReceipt],
        total: u64,
    ) -> StorageResult<()> {
        let (path, tmp) = self.upload_path(upload)?;
        blocking(move || {
            let file = fs::File::open(&tmp).map_err(|e| map_io("write", &tmp, e, true))?;
            let len = file
                .metadata()
                .map_err(|e| map_io("write", &tmp, e, true))?
                .len();
            if len != total {
                return Err(StorageError::Permanent(format!(
                    "upload to {} holds {len} bytes, {total} were sent; not made visible",
                    path.display()
                )));
            }
            fsutil::fsync_file(&file, &tmp)
                .and_then(|()| fs::rename(&tmp, &path))
                .and_then(|()| path.parent().map_or(Ok(()), fsutil::fsync_dir))
                .map_err(|e| map_io("write", &path, e, true))
        })
        .await
    }

    async fn upload_abort(&self, upload: &Upload) -> StorageResult<()> {
        let (_, tmp) = self.upload_path(upload)?;
        blocking(move || match fs::remove_file(&tmp) {
            Ok(()) => Ok(()),
            Err(e) if is_absent(&e) => Ok(()),
            Err(e) => Err(map_io("delete", &tmp, e, true)),
        })
        .await
    }

    async fn get_stream(&self, key: &str, offset: u64) -> StorageResult<ByteStream> {
        use futures::StreamExt;
        use std::io::{Read, Seek, SeekFrom};
        let path = self.path_of(key)?;
        let key = key.to_string();
        let file = blocking(move || {
            let mut f = fs::File::open(&path).map_err(|e| match e {
                e if is_absent(&e) => StorageError::NotFound(key.clone()),
                e => map_io("read", &path, e, false),
            })?;
            f.seek(SeekFrom::Start(offset))
                .map_err(|e| map_io("read", &path, e, false))?;
            Ok(f)
        })
        .await?;
        // One blocking read per chunk; the file moves into each read and back out.
        let chunks = futures::stream::unfold(Some(file), |state| async move {
            let mut f = state?;
            let read = tokio::task::spawn_blocking(move || {
                let mut buf = vec![0u8; STREAM_CHUNK];
                let mut filled = 0;
                while filled < buf.len() {
                    match f.read(&mut buf[filled..]) {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                buf.truncate(filled);
                Ok((f, buf))
            })
            .await
            .unwrap_or_else(|e| Err(io::Error::other(e)));
            match read {
                Ok((_, buf)) if buf.is_empty() => None,
                Ok((f, buf)) => Some((Ok(Bytes::from(buf)), Some(f))),
                Err(e) => Some((Err(e), None)),
            }
        });
        Ok(chunks.boxed())
    }

    fn part_size(&self, _number: u32) -> Option<usize> {
        Some(super::stream::LOCAL_PART_SIZE)
    }

    fn describe(&self) -> String {
        format!("file://{}", self.root.display())
    }
}

/// A file's key, size and mtime as an [`ObjectMeta`].
fn meta_of(key: String, meta: &fs::Metadata) -> ObjectMeta {
    ObjectMeta {
        key,
        size: meta.len(),
        last_modified: meta.modified().ok().map(DateTime::<Utc>::from),
    }
}

/// A listing in key order that starts after a key and stops at a limit.
struct SortedWalk<'a> {
    start_after: &'a str,
    limit: usize,
    out: &'a mut Vec<ObjectMeta>,
}

impl SortedWalk<'_> {
    fn full(&self) -> bool {
        self.out.len() >= self.limit
    }

    /// The entries of `dir` in the order of their keys: a directory's keys are `name/…`, so it
    /// sorts as `name/` (after `name-x` and `name.x`, which a plain name sort would put later).
    fn dir(&mut self, dir: &Path, key_base: &str, name_prefix: &str) -> io::Result<()> {
        let entries = match fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if is_absent(&e) => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut items: Vec<(String, bool, Option<fs::Metadata>)> = Vec::new();
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with(TEMP_PREFIX) || !name.starts_with(name_prefix) {
                continue;
            }
            let meta = match fs::metadata(entry.path()) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if meta.is_dir() {
                items.push((format!("{key_base}{name}/"), true, None));
            } else if meta.is_file() {
                items.push((format!("{key_base}{name}"), false, Some(meta)));
            }
        }
        items.sort_by(|a, b| a.0.cmp(&b.0));
        for (key, is_dir, meta) in items {
            if self.full() {
                break;
            }
            if is_dir {
                // Every key below sorts before `start_after` unless it is a prefix of it.
                if key.as_str() <= self.start_after && !self.start_after.starts_with(&key) {
                    continue;
                }
                let name = key
                    .trim_end_matches('/')
                    .rsplit('/')
                    .next()
                    .unwrap_or_default();
                self.dir(&dir.join(name), &key, "")?;
            } else if key.as_str() > self.start_after
                && let Some(meta) = meta
            {
                self.out.push(meta_of(key, &meta));
            }
        }
        Ok(())
    }
}

/// Appends the objects in `dir` whose names start with `name_prefix` (whole subtrees for
/// matching directories) to `out`, keyed as `key_base + name`. A missing directory is empty.
fn list_dir(
    dir: &Path,
    key_base: &str,
    name_prefix: &str,
    out: &mut Vec<ObjectMeta>,
) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if is_absent(&e) => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        // A name that is not UTF-8 cannot be a key we wrote.
        let Some(name) = name.to_str() else { continue };
        if name.starts_with(TEMP_PREFIX) || !name.starts_with(name_prefix) {
            continue;
        }
        let key = format!("{key_base}{name}");
        // Follows symlinks, so an operator may link parts of the repository elsewhere.
        let meta = match fs::metadata(entry.path()) {
            Ok(m) => m,
            // Deleted while we were listing.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if meta.is_dir() {
            list_dir(&entry.path(), &format!("{key}/"), "", out)?;
        } else if meta.is_file() {
            out.push(meta_of(key, &meta));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fsyncs recorded under `root` while `f` ran, as `(step, path relative to root)`.
    async fn durability_steps<F: std::future::Future<Output = ()>>(
        root: &Path,
        f: F,
    ) -> Vec<(String, String)> {
        fsutil::journal::start();
        let before = fsutil::journal::steps_under(root).len();
        f.await;
        let root = std::path::absolute(root).unwrap();
        fsutil::journal::steps_under(&root)[before..]
            .iter()
            .map(|(step, p)| {
                let rel = p.strip_prefix(&root).unwrap().display().to_string();
                (step.clone(), rel)
            })
            .collect()
    }

    #[tokio::test]
    async fn an_object_in_a_directory_another_writer_just_made_is_durable_when_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::new(dir.path().to_path_buf());
        // A concurrent writer created these directories and has not fsynced their parents yet.
        fs::create_dir_all(dir.path().join("wal/00000001")).unwrap();
        let steps = durability_steps(dir.path(), async {
            s.put("wal/00000001/a", Bytes::from_static(b"x"))
                .await
                .unwrap();
        })
        .await;
        for parent in ["wal", ""] {
            assert!(
                steps.contains(&("fsync-dir".to_string(), parent.to_string())),
                "the parent `{parent}` of an existing directory is fsynced: {steps:?}"
            );
        }
    }

    #[tokio::test]
    async fn already_exists_is_answered_only_once_the_object_is_durable() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::new(dir.path().to_path_buf());
        s.put("wal/00000001/first", Bytes::from_static(b"x"))
            .await
            .unwrap();
        // Another process linked this object a moment ago and has not fsynced the directory.
        fs::write(dir.path().join("wal/00000001/b"), b"theirs").unwrap();
        let steps = durability_steps(dir.path(), async {
            let outcome = s
                .put_if_absent("wal/00000001/b", Bytes::from_static(b"ours"))
                .await
                .unwrap();
            assert_eq!(outcome, PutOutcome::AlreadyExists);
        })
        .await;
        assert!(
            steps.contains(&("fsync-dir".to_string(), "wal/00000001".to_string())),
            "the directory holding the existing object is fsynced: {steps:?}"
        );
    }

    #[tokio::test]
    async fn deleting_the_last_object_of_a_directory_removes_it_and_later_writes_recreate_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::new(dir.path().to_path_buf());
        s.put("backups/L/in-progress.json", Bytes::from_static(b"{}"))
            .await
            .unwrap();
        s.put("backups/K/manifest.json.zst", Bytes::from_static(b"m"))
            .await
            .unwrap();
        s.delete("backups/L/in-progress.json").await.unwrap();
        assert!(
            !dir.path().join("backups/L").exists(),
            "an emptied label directory is removed"
        );
        assert!(
            dir.path().join("backups/K").is_dir(),
            "a directory with objects stays"
        );
        // This process had made backups/L durable before; it is made again.
        for put in [true, false] {
            let key = "backups/L/again.json";
            if put {
                s.put(key, Bytes::from_static(b"1")).await.unwrap();
            } else {
                s.delete(key).await.unwrap();
                let out = s
                    .put_if_absent(key, Bytes::from_static(b"2"))
                    .await
                    .unwrap();
                assert_eq!(out, PutOutcome::Written);
            }
        }
        s.delete("backups/L/again.json").await.unwrap();
        s.delete("backups/K/manifest.json.zst").await.unwrap();
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            0,
            "the root itself stays, empty"
        );
    }

    #[test]
    fn bad_keys_are_permanent() {
        for k in [
            "",
            "/abs",
            "a//b",
            "a/../b",
            "..",
            "./a",
            "a/",
            "a/.tmp.123",
        ] {
            match validate_key(k) {
                Err(StorageError::Permanent(_)) => {}
                other => panic!("{k:?}: {other:?}"),
            }
        }
        for k in [
            "a",
            "wal/00000001/000000010000000000000003-ab.zst",
            "a/.b",
            "a..b",
        ] {
            validate_key(k).unwrap();
        }
    }

    #[test]
    fn io_errors_are_classified() {
        let p = Path::new("/r/k");
        let e = |code| io::Error::from_raw_os_error(code);
        assert!(matches!(
            map_io("read", p, io::ErrorKind::NotFound.into(), false),
            StorageError::NotFound(_)
        ));
        for code in [libc::ENOSPC, libc::EACCES, libc::EROFS] {
            let err = map_io("write", p, e(code), true);
            assert!(
                matches!(&err, StorageError::Permanent(m) if m.contains("hint:")),
                "{err}"
            );
        }
        assert!(map_io("write", p, e(libc::EIO), true).is_transient());
    }

    #[tokio::test]
    async fn put_creates_parents_and_skips_temp_files_in_list() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::new(dir.path().join("repo"));
        s.put("a/b/c", Bytes::from_static(b"x")).await.unwrap();
        fs::write(dir.path().join("repo/a/b/.tmp.dead"), b"junk").unwrap();
        let keys: Vec<_> = s
            .list("")
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.key)
            .collect();
        assert_eq!(keys, vec!["a/b/c"]);
        assert_eq!(s.list("a/b/c/d").await.unwrap(), vec![]);
    }

    #[tokio::test]
    async fn directories_are_not_objects() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::new(dir.path().to_path_buf());
        s.put("a/b", Bytes::from_static(b"x")).await.unwrap();
        assert!(s.get("a").await.unwrap_err().is_not_found());
        assert_eq!(s.head("a").await.unwrap(), None);
        assert!(s.get("a/b/c").await.unwrap_err().is_not_found());
        s.delete("a").await.unwrap();
        // A key under an existing object cannot be created; that is not worth retrying.
        assert!(matches!(
            s.put("a/b/c", Bytes::new()).await,
            Err(StorageError::Permanent(_))
        ));
    }
}
