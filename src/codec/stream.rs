//! The codec over byte streams: compress a stream of unknown length into one zstd frame while
//! hashing it, and decode a stored stream while verifying it, in bounded memory.
//!
//! zstd runs on a blocking thread (and, with `workers > 0`, on that many zstd threads of its
//! own), between two small channels, so neither side ever holds more than a few chunks: memory
//! is bounded by the channel depths × the chunk size plus zstd's own windows, whatever the
//! length of the stream. The frame has its content checksum but no content size (the size is
//! unknown when the header is written); `zstd -d` reads it as any other.
//!
//! A decoded stream is only trustworthy once it has ended without an error: the sha256 of the
//! original bytes is checked after the last byte, so a consumer (pg_restore, a file) has
//! already seen the bytes when a mismatch is reported. Callers that must not act on unverified
//! bytes write them somewhere provisional first (a temp file renamed at the end, a database
//! that is dropped on failure), and say what they left.

use super::Sha256Digest;
use crate::storage::ByteStream;
use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use std::io::{self, Read, Write};
use tokio::sync::{mpsc, oneshot};

/// Chunks buffered between each side and the zstd thread.
const DEPTH: usize = 4;
/// Bytes per chunk handed on by the zstd thread.
const CHUNK: usize = 1 << 20;

/// What an encoded stream held, known once it has been drained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamSummary {
    /// sha256 of the original bytes.
    pub sha256: Sha256Digest,
    /// Length of the original bytes.
    pub raw_len: u64,
    /// Length of the compressed frame.
    pub stored_len: u64,
}

/// Compresses `input` into one zstd frame at `level` (on `workers` zstd threads when > 0).
/// Returns the compressed stream and the summary, which resolves once the compressed stream
/// has been read to its end; an error in `input` ends the compressed stream with that error.
pub fn encode_stream(
    input: ByteStream,
    level: i32,
    workers: u32,
) -> (ByteStream, oneshot::Receiver<io::Result<StreamSummary>>) {
    let (in_tx, in_rx) = mpsc::channel(DEPTH);
    let (out_tx, out_rx) = mpsc::channel(DEPTH);
    let (done_tx, done_rx) = oneshot::channel();
    tokio::spawn(feed(input, in_tx));
    tokio::task::spawn_blocking(move || {
        let result = encode_blocking(in_rx, out_tx.clone(), level, workers);
        if let Err(e) = &result {
            // The reader learns of the failure in the stream itself, not only in the summary.
            let _ = out_tx.blocking_send(Err(io::Error::new(e.kind(), e.to_string())));
        }
        let _ = done_tx.send(result);
    });
    (receiver_stream(out_rx), done_rx)
}

/// The original bytes of one stored zstd frame read from `input`, checked against `expected`
/// (sha256 and length) at the end: a mismatch, a corrupt or truncated frame ends the stream
/// with an `InvalidData` error naming what was wrong.
pub fn decode_stream(input: ByteStream, expected: Sha256Digest, expected_len: u64) -> ByteStream {
    let (in_tx, in_rx) = mpsc::channel(DEPTH);
    let (out_tx, out_rx) = mpsc::channel(DEPTH);
    tokio::spawn(feed(input, in_tx));
    tokio::task::spawn_blocking(move || {
        if let Err(e) = decode_blocking(in_rx, &out_tx, expected, expected_len) {
            let _ = out_tx.blocking_send(Err(e));
        }
    });
    receiver_stream(out_rx)
}

/// Moves a stream's items into a channel until either side ends.
async fn feed(mut input: ByteStream, tx: mpsc::Sender<io::Result<Bytes>>) {
    while let Some(item) = input.next().await {
        let failed = item.is_err();
        if tx.send(item).await.is_err() || failed {
            return;
        }
    }
}

fn receiver_stream(rx: mpsc::Receiver<io::Result<Bytes>>) -> ByteStream {
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
    .boxed()
}

fn gone() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "the reader of the stream went away",
    )
}

fn encode_blocking(
    mut input: mpsc::Receiver<io::Result<Bytes>>,
    out: mpsc::Sender<io::Result<Bytes>>,
    level: i32,
    workers: u32,
) -> io::Result<StreamSummary> {
    let sink = ChunkSender {
        tx: out,
        buf: Vec::with_capacity(CHUNK),
        sent: 0,
    };
    let mut encoder = zstd::stream::Encoder::new(sink, level)?;
    encoder.include_checksum(true)?;
    if workers > 0 {
        encoder.multithread(workers)?;
        encoder.set_parameter(zstd::stream::raw::CParameter::JobSize(super::ZSTD_JOB))?;
    }
    let mut hasher = Sha256::new();
    let mut raw_len = 0u64;
    while let Some(item) = input.blocking_recv() {
        let chunk = item?;
        hasher.update(&chunk);
        raw_len += chunk.len() as u64;
        encoder.write_all(&chunk)?;
    }
    let mut sink = encoder.finish()?;
    sink.flush()?;
    Ok(StreamSummary {
        sha256: Sha256Digest(hasher.finalize().into()),
        raw_len,
        stored_len: sink.sent,
    })
}

fn decode_blocking(
    input: mpsc::Receiver<io::Result<Bytes>>,
    out: &mpsc::Sender<io::Result<Bytes>>,
    expected: Sha256Digest,
    expected_len: u64,
) -> io::Result<()> {
    let source = ChunkReader {
        rx: input,
        current: Bytes::new(),
    };
    let corrupt = |e: io::Error| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("stored object is corrupt: {e} (zstd frame or checksum invalid)"),
        )
    };
    let mut decoder = zstd::stream::Decoder::new(source)
        .map_err(corrupt)?
        .single_frame();
    let mut hasher = Sha256::new();
    let mut len = 0u64;
    loop {
        let mut buf = vec![0u8; CHUNK];
        let mut filled = 0;
        while filled < buf.len() {
            match decoder.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // The source's own failure (a broken download) is not corruption.
                Err(e)
                    if e.kind() == io::ErrorKind::Other
                        && e.get_ref().is_some_and(|i| i.is::<SourceError>()) =>
                {
                    return Err(e);
                }
                Err(e) => return Err(corrupt(e)),
            }
        }
        if filled == 0 {
            break;
        }
        buf.truncate(filled);
        hasher.update(&buf);
        len += filled as u64;
        out.blocking_send(Ok(Bytes::from(buf)))
            .map_err(|_| gone())?;
    }
    let actual = Sha256Digest(hasher.finalize().into());
    if actual != expected || len != expected_len {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "stored object is corrupt: its content has sha256 {actual} and {len} bytes, \
                 but {expected} and {expected_len} bytes were recorded"
            ),
        ));
    }
    Ok(())
}

/// Collects compressed output into chunks and sends them (blocking) to the async side.
struct ChunkSender {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
    sent: u64,
}

impl ChunkSender {
    fn send_buffered(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.sent += chunk.len() as u64;
        self.tx
            .blocking_send(Ok(Bytes::from(chunk)))
            .map_err(|_| gone())
    }
}

impl Write for ChunkSender {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send_buffered()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_buffered()
    }
}

/// The error a [`ChunkReader`] passes on from its source, so it is not taken for corruption.
#[derive(Debug)]
struct SourceError(String);

impl std::fmt::Display for SourceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SourceError {}

/// Reads (blocking) the chunks the async side sends.
struct ChunkReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(io::Error::other(SourceError(e.to_string()))),
            }
        }
        let n = out.len().min(self.current.len());
        out[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::stream::{chunks_of, collect};

    fn sample(len: usize) -> Bytes {
        // Compressible but not trivial: text-like rows.
        let mut v = Vec::with_capacity(len);
        let mut i = 0u64;
        while v.len() < len {
            v.extend_from_slice(
                format!("{i},user{}@example.com,2026-12-01\n", i * 7919 % 10007).as_bytes(),
            );
            i += 1;
        }
        v.truncate(len);
        Bytes::from(v)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn round_trip_and_the_frame_is_plain_zstd() {
        let data = sample(9 << 20);
        for workers in [0, 2] {
            let (compressed, summary) = encode_stream(chunks_of(data.clone(), 100_000), 3, workers);
            let stored = collect(compressed).await.unwrap();
            let summary = summary.await.unwrap().unwrap();
            assert_eq!(summary.raw_len, data.len() as u64);
            assert_eq!(summary.stored_len, stored.len() as u64);
            assert_eq!(summary.sha256, Sha256Digest::of(&data));
            assert!(
                stored.len() < data.len() / 3,
                "compressed: {}",
                stored.len()
            );
            // The non-streaming decoder reads it too (one plain frame).
            assert_eq!(
                super::super::decode_to_vec(&stored, Some(&summary.sha256)).unwrap(),
                data
            );
            let back = decode_stream(chunks_of(stored, 65_536), summary.sha256, summary.raw_len);
            assert_eq!(collect(back).await.unwrap(), data);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn damage_ends_the_decoded_stream_with_an_error() {
        let data = sample(3 << 20);
        let (compressed, summary) = encode_stream(chunks_of(data.clone(), 1 << 20), 3, 0);
        let stored = collect(compressed).await.unwrap();
        let summary = summary.await.unwrap().unwrap();
        let decode = |bytes: Bytes, sha: Sha256Digest, len: u64| async move {
            collect(decode_stream(chunks_of(bytes, 4096), sha, len)).await
        };

        let mut flipped = stored.to_vec();
        flipped[stored.len() / 2] ^= 0x55;
        let e = decode(Bytes::from(flipped), summary.sha256, summary.raw_len)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("corrupt"), "{e}");

        let truncated = stored.slice(..stored.len() - 100);
        let e = decode(truncated, summary.sha256, summary.raw_len)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("corrupt"), "{e}");

        let other = Sha256Digest::of(b"something else");
        let e = decode(stored.clone(), other, summary.raw_len)
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("was recorded") || e.to_string().contains("were recorded"),
            "{e}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_source_fails_the_encoded_stream_and_the_summary() {
        let source = chunks_of(sample(2 << 20), 1 << 20)
            .chain(futures::stream::once(async {
                Err(io::Error::other("pg_dump died"))
            }))
            .boxed();
        let (compressed, summary) = encode_stream(source, 3, 0);
        let e = collect(compressed).await.unwrap_err();
        assert!(e.to_string().contains("pg_dump died"), "{e}");
        assert!(summary.await.unwrap().is_err());
    }
}
