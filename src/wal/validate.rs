//! Checks a local WAL file before it is archived, then compresses it in the same read.
//!
//! Segments and `.partial` files must carry this cluster's long page header (magic, system
//! identifier, segment size) and a page address matching their name; history and `.backup`
//! files must parse. Anything else is refused before a byte is stored.

use crate::codec::{self, Encoded};
use crate::pg::WalFileName;
use crate::pg::history::TimelineHistory;
use crate::pg::wal_page;
use crate::repo::identity::RepoIdentity;
use anyhow::{Context, Result, bail};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// History and backup-label files are a few hundred bytes; anything this large is not one.
const MAX_TEXT_FILE: u64 = 1 << 20;
/// The long page header lives in the first WAL page; 8 KiB covers every XLOG_BLCKSZ in use.
const FIRST_PAGE: usize = 8192;

/// Validates `path` as the WAL file `name` of the repository's cluster and encodes it.
/// `zstd_workers` threads of zstd's own compress a segment (0: compress on the calling thread).
pub fn check_and_encode(
    path: &Path,
    name: &WalFileName,
    id: &RepoIdentity,
    level: i32,
    zstd_workers: u32,
) -> Result<Encoded> {
    let mut file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let len = file
        .metadata()
        .with_context(|| format!("cannot stat {}", path.display()))?
        .len();
    match name {
        WalFileName::Segment(seg) | WalFileName::Partial(seg) => {
            let mut first = vec![0u8; FIRST_PAGE.min(len as usize)];
            file.read_exact(&mut first)
                .with_context(|| format!("cannot read {}", path.display()))?;
            wal_page::check_segment_header(
                &first,
                len,
                seg,
                id.system_identifier,
                id.wal_segment_size as u32,
            )
            .with_context(|| format!("refusing to archive {}", path.display()))?;
            file.seek(SeekFrom::Start(0))?;
        }
        WalFileName::History(tli) => {
            let text = read_small_text(&mut file, len, path)?;
            TimelineHistory::parse(*tli, &text).with_context(|| {
                format!(
                    "refusing to archive {}: not a valid history file",
                    path.display()
                )
            })?;
            return encode_text(text, level);
        }
        WalFileName::Backup { .. } => {
            let text = read_small_text(&mut file, len, path)?;
            if !text.contains("START WAL LOCATION:") {
                bail!(
                    "refusing to archive {}: not a backup history file (no START WAL LOCATION line)",
                    path.display()
                );
            }
            return encode_text(text, level);
        }
    }
    codec::encode_reader_mt(file, level, Some(len), zstd_workers)
        .with_context(|| format!("cannot read and compress {}", path.display()))
}

fn read_small_text(file: &mut File, len: u64, path: &Path) -> Result<String> {
    if len > MAX_TEXT_FILE {
        bail!(
            "refusing to archive {}: {len} bytes is too large for its kind of file",
            path.display()
        );
    }
    let mut text = String::new();
    file.read_to_string(&mut text)
        .with_context(|| format!("{} is not a readable text file", path.display()))?;
    Ok(text)
}

fn encode_text(text: String, level: i32) -> Result<Encoded> {
    Ok(codec::encode_bytes(text.as_bytes(), level)?)
}
