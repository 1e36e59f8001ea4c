//! zstd + sha256, streamed.
//!
//! Every stored object is one plain zstd frame with its content checksum on, so `zstd -d` alone
//! recovers it. The sha256 is always of the original bytes (it names objects and is checked on
//! every read), computed in the same pass that compresses, so a file is read once.

pub mod stream;

use sha2::{Digest, Sha256};
use std::fmt;
use std::io::{self, Read, Write};

/// Chunk size for streaming reads: big enough to amortise syscalls, small enough to keep
/// memory flat.
const CHUNK: usize = 1 << 20;

/// A sha256 digest, printed as 64 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256Digest(pub [u8; 32]);

impl Sha256Digest {
    pub fn of(data: &[u8]) -> Sha256Digest {
        Sha256Digest(Sha256::digest(data).into())
    }

    /// Parses 64 hex digits (either case).
    pub fn parse_hex(s: &str) -> Option<Sha256Digest> {
        if s.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Sha256Digest(out))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256Digest({})", self.to_hex())
    }
}

impl serde::Serialize for Sha256Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for Sha256Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Sha256Digest::parse_hex(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("`{s}` is not a sha256 hex digest")))
    }
}

/// The result of compressing some input.
#[derive(Debug)]
pub struct Encoded {
    /// One zstd frame with content checksum and content size.
    pub data: Vec<u8>,
    /// sha256 of the original bytes.
    pub sha256: Sha256Digest,
    /// Length of the original bytes.
    pub raw_len: u64,
    /// crc32c of the original bytes: a cheap way for a later call to recognise the same file
    /// (push-ahead records), computed in the same pass as the sha256.
    pub crc32c: u32,
}

impl Encoded {
    /// Original size divided by stored size (1.0 for empty input).
    pub fn ratio(&self) -> f64 {
        if self.data.is_empty() {
            1.0
        } else {
            self.raw_len as f64 / self.data.len() as f64
        }
    }
}

/// Input per zstd worker job when compressing on several threads.
const ZSTD_JOB: u32 = 2 << 20;

/// Inputs at least this large are hashed on a second thread while they are compressed.
const PARALLEL_MIN: u64 = 4 * CHUNK as u64;

/// Compresses and hashes everything `reader` yields. `size_hint` (when known) is recorded in the
/// frame header and sizes the output buffer.
pub fn encode_reader<R: Read>(
    reader: R,
    level: i32,
    size_hint: Option<u64>,
) -> io::Result<Encoded> {
    encode_reader_mt(reader, level, size_hint, 0)
}

/// Like [`encode_reader`], but large inputs (or inputs of unknown size) are hashed on a thread of
/// their own while they are compressed, and `zstd_workers > 0` lets zstd compress on that many
/// threads of its own. The output is still one plain zstd frame with content checksum (and
/// content size when `size_hint` is given), whatever the number of threads.
pub fn encode_reader_mt<R: Read>(
    reader: R,
    level: i32,
    size_hint: Option<u64>,
    zstd_workers: u32,
) -> io::Result<Encoded> {
    let cap = size_hint.map(|s| (s / 4) as usize).unwrap_or(64 * 1024);
    let mut encoder = zstd::stream::Encoder::new(Vec::with_capacity(cap), level)?;
    encoder.include_checksum(true)?;
    encoder.include_contentsize(size_hint.is_some())?;
    encoder.set_pledged_src_size(size_hint)?;
    let parallel = size_hint.is_none_or(|s| s >= PARALLEL_MIN);
    if parallel && zstd_workers > 0 {
        encoder.multithread(zstd_workers)?;
        // zstd's default job for level 3 is 8 MiB, and every worker holds a job's input and
        // output: smaller jobs keep a 16 MiB segment's push well under 32 MiB resident.
        encoder.set_parameter(zstd::stream::raw::CParameter::JobSize(ZSTD_JOB))?;
    }
    let (raw_len, Digests { sha256, crc32c }) = if parallel {
        feed_hashing_aside(reader, &mut encoder)?
    } else {
        feed_inline(reader, &mut encoder)?
    };
    if let Some(hint) = size_hint
        && hint != raw_len
    {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("file changed size while being read: expected {hint} bytes, read {raw_len}"),
        ));
    }
    let data = encoder.finish()?;
    Ok(Encoded {
        data,
        sha256,
        raw_len,
        crc32c,
    })
}

/// Both digests of the original bytes, computed in one pass over them.
struct Digests {
    sha256: Sha256Digest,
    crc32c: u32,
}

#[derive(Default)]
struct Hashers {
    sha256: Sha256,
    crc32c: u32,
}

impl Hashers {
    fn update(&mut self, data: &[u8]) {
        self.sha256.update(data);
        self.crc32c = crc32c::crc32c_append(self.crc32c, data);
    }

    fn finish(self) -> Digests {
        Digests {
            sha256: Sha256Digest(self.sha256.finalize().into()),
            crc32c: self.crc32c,
        }
    }
}

/// Reads `reader` into `out`, hashing on the same thread.
fn feed_inline<R: Read, W: Write>(reader: R, out: &mut W) -> io::Result<(u64, Digests)> {
    let mut hasher = Hashers::default();
    let raw_len = read_chunks(reader, |chunk| {
        hasher.update(chunk);
        out.write_all(chunk)
    })?;
    Ok((raw_len, hasher.finish()))
}

/// Hands everything `reader` yields to `each` in chunks of up to [`CHUNK`] bytes; returns the
/// total length.
fn read_chunks<R: Read>(
    mut reader: R,
    mut each: impl FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<u64> {
    let mut buf = vec![0u8; CHUNK];
    let mut len = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(len),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        each(&buf[..n])?;
        len += n as u64;
    }
}

/// Chunks in flight between the reader and the hashing thread (bounds memory to
/// `POOL * PIPE_CHUNK`).
const POOL: usize = 3;
/// Chunk size when hashing on a second thread: small enough that the pool stays small.
const PIPE_CHUNK: usize = 512 * 1024;

/// Reads `reader` into `out` while a scoped thread hashes the same chunks. Each chunk is shared
/// (not copied) with the hasher and comes back to a small pool once both sides are done.
fn feed_hashing_aside<R: Read, W: Write>(mut reader: R, out: &mut W) -> io::Result<(u64, Digests)> {
    use std::sync::{Arc, mpsc};
    std::thread::scope(|scope| {
        let (to_hash, hash_rx) = mpsc::sync_channel::<Arc<Vec<u8>>>(POOL - 1);
        let (back_tx, back_rx) = mpsc::channel::<Arc<Vec<u8>>>();
        let hasher = scope.spawn(move || {
            let mut hasher = Hashers::default();
            for chunk in hash_rx {
                hasher.update(&chunk[..]);
                // The reader may have finished; then the buffer is simply dropped.
                let _ = back_tx.send(chunk);
            }
            hasher.finish()
        });
        let fed = (|| -> io::Result<u64> {
            let mut pool: Vec<Vec<u8>> = Vec::with_capacity(POOL);
            let mut allocated = 0usize;
            let mut raw_len = 0u64;
            loop {
                // A buffer the hasher has finished with, or a new one while the pool is small.
                while let Ok(done) = back_rx.try_recv() {
                    pool.extend(Arc::try_unwrap(done).ok());
                }
                let mut buf = match pool.pop() {
                    Some(b) => b,
                    None if allocated < POOL => {
                        allocated += 1;
                        Vec::with_capacity(PIPE_CHUNK)
                    }
                    None => match back_rx.recv() {
                        Ok(done) => {
                            Arc::try_unwrap(done).unwrap_or_else(|_| Vec::with_capacity(PIPE_CHUNK))
                        }
                        Err(_) => return Err(io::Error::other("sha256 thread stopped")),
                    },
                };
                buf.resize(PIPE_CHUNK, 0);
                let mut filled = 0;
                while filled < PIPE_CHUNK {
                    match reader.read(&mut buf[filled..]) {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e),
                    }
                }
                if filled == 0 {
                    return Ok(raw_len);
                }
                buf.truncate(filled);
                let chunk = Arc::new(buf);
                to_hash
                    .send(chunk.clone())
                    .map_err(|_| io::Error::other("sha256 thread stopped"))?;
                out.write_all(&chunk)?;
                raw_len += filled as u64;
            }
        })();
        drop(to_hash);
        let digest = hasher
            .join()
            .map_err(|_| io::Error::other("sha256 thread panicked"))?;
        Ok((fed?, digest))
    })
}

/// Compresses and hashes an in-memory buffer.
pub fn encode_bytes(data: &[u8], level: i32) -> io::Result<Encoded> {
    encode_reader(data, level, Some(data.len() as u64))
}

/// Why a stored object could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("stored object is corrupt: {0} (zstd frame or checksum invalid)")]
    Corrupt(String),
    #[error(
        "stored object is corrupt: its content has sha256 {actual}, but {expected} was recorded"
    )]
    HashMismatch {
        expected: Sha256Digest,
        actual: Sha256Digest,
    },
    #[error("cannot write decoded data: {0}")]
    Write(io::Error),
}

/// Decompresses one stored object into `out`, verifying the zstd checksum and, when given,
/// the sha256 of the original bytes. Returns the original length. On error the caller must
/// discard whatever was written.
pub fn decode_into<W: Write>(
    compressed: &[u8],
    expected: Option<&Sha256Digest>,
    mut out: W,
) -> Result<u64, DecodeError> {
    let mut decoder = zstd::stream::Decoder::with_buffer(compressed)
        .map_err(|e| DecodeError::Corrupt(e.to_string()))?
        .single_frame();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut len = 0u64;
    loop {
        let n = match decoder.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(DecodeError::Corrupt(e.to_string())),
        };
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(DecodeError::Write)?;
        len += n as u64;
    }
    let actual = Sha256Digest(hasher.finalize().into());
    if let Some(expected) = expected
        && *expected != actual
    {
        return Err(DecodeError::HashMismatch {
            expected: *expected,
            actual,
        });
    }
    Ok(len)
}

/// Decompresses a stored object into memory, verifying it.
pub fn decode_to_vec(
    compressed: &[u8],
    expected: Option<&Sha256Digest>,
) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    decode_into(compressed, expected, &mut out)?;
    Ok(out)
}

/// sha256 and length of a file, streamed.
pub fn sha256_file(path: &std::path::Path) -> io::Result<(Sha256Digest, u64)> {
    let mut hasher = Sha256::new();
    let len = read_chunks(std::fs::File::open(path)?, |chunk| {
        hasher.update(chunk);
        Ok(())
    })?;
    Ok((Sha256Digest(hasher.finalize().into()), len))
}

/// A writer that keeps the crc32c of everything written through it.
pub struct Crc32cWriter<W> {
    inner: W,
    crc: u32,
}

impl<W: Write> Crc32cWriter<W> {
    pub fn new(inner: W) -> Crc32cWriter<W> {
        Crc32cWriter { inner, crc: 0 }
    }

    pub fn crc32c(&self) -> u32 {
        self.crc
    }
}

impl<W: Write> Write for Crc32cWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// crc32c and length of a file, streamed (about 6× cheaper than [`sha256_file`]).
pub fn crc32c_file(path: &std::path::Path) -> io::Result<(u32, u64)> {
    let mut crc = 0u32;
    let len = read_chunks(std::fs::File::open(path)?, |chunk| {
        crc = crc32c::crc32c_append(crc, chunk);
        Ok(())
    })?;
    Ok((crc, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_plain_zstd() {
        let data: Vec<u8> = (0..300_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let enc = encode_bytes(&data, 3).unwrap();
        assert_eq!(enc.sha256, Sha256Digest::of(&data));
        assert!(enc.ratio() > 2.0);
        assert_eq!(enc.crc32c, crc32c::crc32c(&data));
        // A plain zstd frame: the reference decoder reads it without pgward.
        assert_eq!(zstd::decode_all(&enc.data[..]).unwrap(), data);
        assert_eq!(decode_to_vec(&enc.data, Some(&enc.sha256)).unwrap(), data);
    }

    #[test]
    fn corruption_is_detected() {
        let data = vec![7u8; 100_000];
        let mut enc = encode_bytes(&data, 3).unwrap();
        let mid = enc.data.len() / 2;
        enc.data[mid] ^= 0x40;
        assert!(decode_to_vec(&enc.data, Some(&enc.sha256)).is_err());
        assert!(decode_to_vec(b"not zstd at all", None).is_err());
    }

    #[test]
    fn wrong_expected_hash_is_reported() {
        let enc = encode_bytes(b"hello", 3).unwrap();
        let other = Sha256Digest::of(b"world");
        match decode_to_vec(&enc.data, Some(&other)) {
            Err(DecodeError::HashMismatch { expected, actual }) => {
                assert_eq!(expected, other);
                assert_eq!(actual, Sha256Digest::of(b"hello"));
            }
            r => panic!("unexpected {r:?}"),
        }
    }

    #[test]
    fn threaded_encode_is_one_plain_frame() {
        // Large enough to hash on a second thread; odd length to end on a partial chunk.
        let data: Vec<u8> = (0..(5 * CHUNK + 12345) as u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8 & 0x3f)
            .collect();
        for workers in [0, 1, 2] {
            for hint in [Some(data.len() as u64), None] {
                let enc = encode_reader_mt(&data[..], 3, hint, workers).unwrap();
                assert_eq!(enc.sha256, Sha256Digest::of(&data), "workers {workers}");
                assert_eq!(enc.crc32c, crc32c::crc32c(&data), "workers {workers}");
                assert_eq!(enc.raw_len, data.len() as u64);
                assert_eq!(zstd::decode_all(&enc.data[..]).unwrap(), data);
                assert_eq!(decode_to_vec(&enc.data, Some(&enc.sha256)).unwrap(), data);
                // Exactly one frame, nothing after it.
                let frame = zstd::zstd_safe::find_frame_compressed_size(&enc.data).unwrap();
                assert_eq!(frame, enc.data.len());
            }
        }
        assert!(encode_reader_mt(&data[..], 3, Some(data.len() as u64 + 1), 2).is_err());
    }

    #[test]
    fn size_change_during_read_is_an_error() {
        assert!(encode_reader(&b"abc"[..], 3, Some(10)).is_err());
    }

    #[test]
    fn hex_parsing() {
        let d = Sha256Digest::of(b"x");
        assert_eq!(Sha256Digest::parse_hex(&d.to_hex()), Some(d));
        assert_eq!(Sha256Digest::parse_hex("zz"), None);
        assert_eq!(Sha256Digest::parse_hex(&"g".repeat(64)), None);
    }
}
