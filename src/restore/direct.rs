//! Writing restored files around the page cache.
//!
//! A full restore writes every byte of the cluster once and never reads it back, so copying
//! it into the page cache first only costs: on the bench machine (bench/RESULTS.md) a
//! buffered 1.6 GB write takes 1.3–2.8 s, nearly all of it kernel time spent allocating and
//! filling cache pages, while the same write with `O_DIRECT` takes 0.6 s. [`FileSink`]
//! therefore writes every aligned piece with `O_DIRECT` and the rest (a piece that does not
//! start on an alignment boundary, or a file system that refuses `O_DIRECT`, such as tmpfs)
//! through an ordinary handle. Both handles are the same file; the kernel keeps the page cache
//! coherent with direct writes. The caller cuts each file to its length once all its pieces
//! are down (a last piece may go out padded to the alignment) and its final `fsync` makes
//! both kinds of write durable.

use anyhow::{Context as _, Result};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

/// Offsets, lengths and buffer addresses of direct writes are multiples of this. 4 KiB is the
/// logical block size of every disk and file system PostgreSQL runs on in practice; a device
/// that needs more refuses the write with `EINVAL`, and the sink falls back to buffered.
pub const ALIGN: usize = 4096;

/// A buffer whose start is aligned to [`ALIGN`], built from a plain `Vec` (the aligned window
/// is found inside a slightly larger allocation, so no unsafe allocation code is needed).
pub struct AlignedBuf {
    mem: Vec<u8>,
    start: usize,
    cap: usize,
}

impl AlignedBuf {
    /// A zeroed buffer with room for `cap` bytes.
    pub fn new(cap: usize) -> AlignedBuf {
        let mem = vec![0u8; cap + ALIGN];
        // If the address cannot be aligned (align_offset may give up and return usize::MAX),
        // the buffer simply starts unaligned and every write goes through the page cache.
        let start = match mem.as_ptr().align_offset(ALIGN) {
            s if s < ALIGN => s,
            _ => 0,
        };
        AlignedBuf { mem, start, cap }
    }

    /// The whole usable window, to decode into.
    pub fn space_mut(&mut self) -> &mut [u8] {
        &mut self.mem[self.start..self.start + self.cap]
    }

    /// The whole usable window.
    pub fn space(&self) -> &[u8] {
        &self.mem[self.start..self.start + self.cap]
    }

    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Zeroes `from..` up to the next alignment boundary (within capacity), so a file's last
    /// piece can be written padded and then cut to length without leaving stale bytes even
    /// for an instant.
    pub fn zero_pad_after(&mut self, from: usize) {
        let end = round_up(from).min(self.cap);
        if from < end {
            self.space_mut()[from..end].fill(0);
        }
    }
}

fn round_up(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}

/// One file being restored: a buffered handle, and a direct one when the file system allows.
pub struct FileSink {
    buffered: File,
    direct: Option<File>,
    /// The file's final length: only a piece that ends exactly there may be written padded,
    /// since the caller cuts the file to this length once every piece is down.
    size: u64,
}

impl FileSink {
    /// Opens `path` (which must exist) for writing; `direct` asks for the direct handle.
    pub fn open(path: &Path, size: u64, direct: bool) -> Result<FileSink> {
        let buffered = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .with_context(|| format!("cannot open {} for writing", path.display()))?;
        // A file system that does not support O_DIRECT refuses the open (EINVAL); that is
        // not an error, the sink just writes everything buffered.
        let direct = direct
            .then(|| {
                OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_DIRECT)
                    .open(path)
                    .ok()
            })
            .flatten();
        Ok(FileSink {
            buffered,
            direct,
            size,
        })
    }

    /// The buffered handle, for reads (delta mode) and metadata.
    pub fn file(&self) -> &File {
        &self.buffered
    }

    /// Writes `buf.space()[from..from + len]` at `offset`: directly when offset, address and
    /// length are aligned, or when the piece ends the file (it is then written padded to the
    /// alignment with the zeroes [`AlignedBuf::zero_pad_after`] put there), else buffered.
    pub fn write_piece(
        &mut self,
        buf: &AlignedBuf,
        from: usize,
        len: usize,
        offset: u64,
    ) -> io::Result<()> {
        let piece = &buf.space()[from..from + len];
        if let Some(direct) = &self.direct {
            let ends_file = offset + len as u64 == self.size;
            let padded_len = if len.is_multiple_of(ALIGN) {
                Some(len)
            } else if ends_file && from + round_up(len) <= buf.capacity() {
                Some(round_up(len))
            } else {
                None
            };
            let aligned = (piece.as_ptr() as usize).is_multiple_of(ALIGN)
                && offset.is_multiple_of(ALIGN as u64);
            if let (true, Some(n)) = (aligned, padded_len) {
                match direct.write_all_at(&buf.space()[from..from + n], offset) {
                    Ok(()) => return Ok(()),
                    // The device wants a larger alignment: stop trying for this file.
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => self.direct = None,
                    Err(e) => return Err(e),
                }
            }
        }
        self.buffered.write_all_at(piece, offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(cap: usize, len: usize, byte: u8) -> AlignedBuf {
        let mut b = AlignedBuf::new(cap);
        b.space_mut()[..len].fill(byte);
        b.zero_pad_after(len);
        b
    }

    #[test]
    fn buffer_is_aligned_and_zeroed() {
        let mut b = AlignedBuf::new(3 * ALIGN);
        assert_eq!(b.space().as_ptr() as usize % ALIGN, 0);
        assert_eq!(b.space().len(), 3 * ALIGN);
        assert!(b.space().iter().all(|&x| x == 0));
        b.space_mut().fill(7);
        b.zero_pad_after(10);
        assert_eq!(&b.space()[..10], &[7; 10]);
        assert!(b.space()[10..ALIGN].iter().all(|&x| x == 0));
        assert!(b.space()[ALIGN..].iter().all(|&x| x == 7));
    }

    /// Aligned pieces, a padded last piece and an unaligned piece all land where they should,
    /// and the file ends at its declared size, whether or not the file system allows O_DIRECT
    /// (the temp dir may be tmpfs).
    #[test]
    fn mixed_pieces_give_exact_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        File::create(&path).unwrap();
        let size = (2 * ALIGN + 100) as u64;
        let mut sink = FileSink::open(&path, size, true).unwrap();
        sink.write_piece(&filled(ALIGN, ALIGN, 1), 0, ALIGN, 0)
            .unwrap();
        // Unaligned source offset: must go buffered.
        let b = filled(2 * ALIGN, 2 * ALIGN, 2);
        sink.write_piece(&b, 1, ALIGN, ALIGN as u64).unwrap();
        // Last piece, not a multiple of the alignment: written padded, then cut.
        sink.write_piece(&filled(ALIGN, 100, 3), 0, 100, 2 * ALIGN as u64)
            .unwrap();
        drop(sink);
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(size).unwrap();
        let got = std::fs::read(&path).unwrap();
        assert_eq!(got.len() as u64, size);
        assert!(got[..ALIGN].iter().all(|&x| x == 1));
        assert!(got[ALIGN..2 * ALIGN].iter().all(|&x| x == 2));
        assert!(got[2 * ALIGN..].iter().all(|&x| x == 3));
    }
}
