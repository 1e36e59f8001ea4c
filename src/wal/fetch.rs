//! Fetching one WAL file back: from the prefetch spool when it holds a verified copy, else from
//! the repository. The destination only ever appears complete and verified (temp file, rename).
//!
//! Nothing here is fsynced (but for the rare copy across file systems, which goes through the
//! durable `fsutil::write_atomic`). A restored file need not survive a crash: PostgreSQL makes the files
//! it keeps durable itself (`KeepFileRestoredFromArchive` renames them with `durable_rename`),
//! and after a crash recovery asks for the rest again. A spool file torn by a crash fails its
//! crc32c check and is fetched again. pgBackRest's archive-get does not fsync either.

use crate::codec::{self, Sha256Digest};
use crate::commands::NotArchived;
use crate::fsutil;
use crate::pg::WalFileName;
use crate::repo::layout;
use crate::storage::Storage;
use crate::wal::spool::FetchSpool;
use anyhow::{Context, Result, bail};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct FetchReport {
    pub name: WalFileName,
    pub raw_bytes: u64,
    pub stored_bytes: u64,
    pub elapsed: Duration,
    pub from_spool: bool,
}

impl FetchReport {
    pub fn log(&self) {
        let ratio = if self.stored_bytes == 0 {
            0.0
        } else {
            self.raw_bytes as f64 / self.stored_bytes as f64
        };
        tracing::info!(
            wal = %self.name,
            bytes = self.raw_bytes,
            stored = self.stored_bytes,
            ratio = format_args!("{ratio:.1}"),
            ms = self.elapsed.as_millis() as u64,
            prefetched = self.from_spool,
            "fetched"
        );
    }
}

/// The stored object for `name`: its key, hash and stored size. Errors with [`NotArchived`]
/// when there is none, and refuses to choose between two different contents.
pub async fn locate(
    storage: &dyn Storage,
    name: &WalFileName,
) -> Result<(String, Sha256Digest, u64)> {
    let prefix = layout::wal_name_prefix(name);
    let found: Vec<_> = storage
        .list(&prefix)
        .await
        .with_context(|| format!("cannot list {prefix}* in {}", storage.describe()))?
        .into_iter()
        .filter_map(|o| {
            let (n, sha) = layout::parse_wal_key(&o.key)?;
            (n == *name).then_some((o.key, sha, o.size))
        })
        .collect();
    match found.len() {
        0 => Err(NotArchived(name.to_string()).into()),
        1 => Ok(found.into_iter().next().expect("one element")),
        _ => bail!(
            "{name} is archived {} times with different content ({}); refusing to guess which \
             history is right\nhint: this is a split brain or two clusters sharing a repository; \
             inspect the objects and remove the wrong one by hand",
            found.len(),
            found
                .iter()
                .map(|f| f.0.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Downloads `name` from the repository into `dest`, verified.
pub async fn fetch_from_repo(
    storage: &dyn Storage,
    name: &WalFileName,
    dest: &Path,
) -> Result<FetchReport> {
    let started = Instant::now();
    let (key, sha, stored) = locate(storage, name).await?;
    let data = storage
        .get(&key)
        .await
        .with_context(|| format!("cannot read {key} from {}", storage.describe()))?;
    let dest_owned = dest.to_path_buf();
    let raw = tokio::task::spawn_blocking(move || write_verified(&data, &sha, &dest_owned))
        .await?
        .with_context(|| format!("cannot restore {name} from {key}"))?;
    Ok(FetchReport {
        name: name.clone(),
        raw_bytes: raw,
        stored_bytes: stored,
        elapsed: started.elapsed(),
        from_spool: false,
    })
}

/// Decodes a stored object into `dest` atomically, verifying zstd checksum and sha256.
/// Nothing is left at `dest` (or beside it) on failure.
pub fn write_verified(compressed: &[u8], sha: &Sha256Digest, dest: &Path) -> Result<u64> {
    let decoded = decode_beside(compressed, sha, &parent_dir(dest))?;
    let len = decoded.len;
    decoded.persist(dest)?;
    Ok(len)
}

/// A stored object decoded and verified into a temporary file, not yet in place. Dropping it
/// removes the file.
pub struct Decoded {
    tmp: tempfile::NamedTempFile,
    pub len: u64,
    /// crc32c of the decoded bytes, for a cheap check before the file is handed out later.
    pub crc32c: u32,
}

impl Decoded {
    /// Renames the file to `dest` (in the same directory it was decoded in).
    pub fn persist(self, dest: &Path) -> Result<()> {
        self.tmp
            .persist(dest)
            .map_err(|e| e.error)
            .with_context(|| format!("cannot rename into {}", dest.display()))?;
        Ok(())
    }
}

/// Decodes a stored object into a temporary file in `dir`, verifying zstd checksum and sha256.
pub fn decode_beside(compressed: &[u8], sha: &Sha256Digest, dir: &Path) -> Result<Decoded> {
    let mut tmp = tempfile::Builder::new()
        .prefix(".pgward-tmp-")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    let mut out = codec::Crc32cWriter::new(std::io::BufWriter::new(tmp.as_file_mut()));
    let len = codec::decode_into(compressed, Some(sha), &mut out)?;
    // Flush explicitly: an error in BufWriter's implicit flush on drop would be lost, and a
    // short file would be renamed into place (seen with small history files on a full disk).
    out.flush()
        .with_context(|| format!("cannot write a temporary file in {}", dir.display()))?;
    let crc32c = out.crc32c();
    drop(out);
    Ok(Decoded { tmp, len, crc32c })
}

/// Hands a prefetched copy to `dest` after checking it against the crc32c in its name (files
/// spooled by older versions, without one, by sha256). `Ok(None)` when the spool has no
/// usable copy (a bad one is removed and the caller fetches from the repository).
pub fn take_from_spool(
    spool: &FetchSpool,
    name: &WalFileName,
    dest: &Path,
) -> Result<Option<FetchReport>> {
    let Some(file) = spool.find(name) else {
        return Ok(None);
    };
    let started = Instant::now();
    let intact = match file.crc32c {
        Some(crc) => codec::crc32c_file(&file.path).map(|(c, _)| c == crc),
        None => codec::sha256_file(&file.path).map(|(s, _)| s == file.sha256),
    };
    match intact {
        Ok(true) => {}
        _ => {
            tracing::warn!(wal = %name, "prefetched copy failed verification; fetching again");
            let _ = std::fs::remove_file(&file.path);
            return Ok(None);
        }
    }
    let len = std::fs::metadata(&file.path)?.len();
    move_into_place(&file.path, dest)?;
    Ok(Some(FetchReport {
        name: name.clone(),
        raw_bytes: len,
        stored_bytes: 0,
        elapsed: started.elapsed(),
        from_spool: true,
    }))
}

/// Renames a verified spool file to `dest`; across file systems, copies instead.
fn move_into_place(src: &Path, dest: &Path) -> Result<()> {
    match std::fs::rename(src, dest) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            let data = std::fs::read(src)?;
            fsutil::write_atomic(dest, &data)
                .with_context(|| format!("cannot write {}", dest.display()))?;
            let _ = std::fs::remove_file(src);
        }
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot move prefetched file to {}", dest.display()));
        }
    }
    Ok(())
}

fn parent_dir(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}
