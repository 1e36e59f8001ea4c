//! The files a restore writes, and how one is created: shared by `prepare` (which creates
//! them up front for a delta restore) and `write` (whose writers create the files they alone
//! write in a full restore), so neither has to reach into the other.

use anyhow::{Context as _, Result, bail};
use std::fs::{self, OpenOptions};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;

/// One file to produce.
#[derive(Debug, Clone)]
pub struct FileJob {
    /// The manifest path, for messages.
    pub rel: String,
    /// Where it goes on disk.
    pub path: PathBuf,
    pub size: u64,
    pub mode: u32,
    pub mtime: i64,
}

/// How writers create files: with this owner (when restoring as root).
#[derive(Debug, Clone, Copy)]
pub struct Creator {
    pub owner: Option<(u32, u32)>,
}

/// The file to write: new and empty, or in delta mode the existing one at its final length.
/// `preallocate` (for new files written in several chunks) reserves its space first.
pub fn create_file(
    job: &FileJob,
    delta: bool,
    owner: Option<(u32, u32)>,
    preallocate: bool,
) -> Result<()> {
    let path = &job.path;
    let existing = if delta {
        match fs::symlink_metadata(path) {
            Ok(m) if m.is_file() => Some(m),
            Ok(_) => bail!("{} is in the way and is not a file", path.display()),
            Err(_) => None,
        }
    } else {
        None
    };
    let f = match existing {
        Some(meta) => {
            if meta.permissions().mode() & 0o200 == 0 {
                fs::set_permissions(path, fs::Permissions::from_mode(0o600))
                    .with_context(|| format!("cannot make {} writable", path.display()))?;
            }
            OpenOptions::new().write(true).open(path)
        }
        None => OpenOptions::new()
            .write(true)
            .create_new(!delta)
            .create(delta)
            .truncate(delta)
            .mode(0o600)
            .open(path),
    }
    .with_context(|| format!("cannot create {}", path.display()))?;
    // A file written in several chunks at once gets its space first: concurrent direct
    // writes that extend a file serialise on its inode lock, writes into allocated space do
    // not (1.64 s -> 1.49 s on the bench restore). Best effort: a file system without
    // fallocate just grows the file as it is written.
    if !delta && preallocate {
        let _ = rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::empty(), 0, job.size);
    }
    if delta && f.metadata().map(|m| m.len()).ok() != Some(job.size) {
        f.set_len(job.size)
            .with_context(|| format!("cannot set the length of {}", path.display()))?;
    }
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::fchown(&f, Some(uid), Some(gid))
            .with_context(|| format!("cannot change the owner of {}", path.display()))?;
    }
    crate::fsutil::journal::note("create", path);
    Ok(())
}
