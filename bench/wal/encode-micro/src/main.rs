//! Time per 16 MiB WAL segment of the ways to hash (sha256) and compress (zstd level 3) it.
//! Usage: encode-micro SEGMENT...   (best of 3 passes over all given files, wall time)

use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::mpsc::sync_channel;
use std::time::Instant;

/// pgward's read size (`codec::CHUNK`).
const CHUNK: usize = 1 << 20;

struct How {
    hash: bool,
    compress: bool,
    /// zstd worker threads (0 = single-threaded, as pgward today).
    workers: u32,
    /// zstd job size for workers > 0 (0 = zstd's default).
    job: u32,
    /// sha256 on its own thread instead of inline.
    hash_thread: bool,
}

/// Streams the file in 1 MiB reads into sha256 and a zstd frame (checksum and size on, as
/// pgward writes it). Returns the compressed size.
fn encode(path: &str, how: &How) -> usize {
    let mut f = std::fs::File::open(path).unwrap();
    let len = f.metadata().unwrap().len();
    let mut enc = zstd::stream::Encoder::new(Vec::with_capacity((len / 4) as usize), 3).unwrap();
    enc.include_checksum(true).unwrap();
    enc.include_contentsize(true).unwrap();
    enc.set_pledged_src_size(Some(len)).unwrap();
    if how.workers > 0 {
        enc.multithread(how.workers).unwrap();
        if how.job > 0 {
            enc.set_parameter(zstd::zstd_safe::CParameter::JobSize(how.job)).unwrap();
        }
    }
    let mut hasher = Sha256::new();
    let (tx, rx) = sync_channel::<Arc<Vec<u8>>>(4);
    let hasher_thread = (how.hash && how.hash_thread).then(|| {
        std::thread::spawn(move || {
            let mut h = Sha256::new();
            for b in rx {
                h.update(&b[..]);
            }
            h.finalize()
        })
    });
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        if hasher_thread.is_some() {
            let b = Arc::new(buf[..n].to_vec());
            tx.send(b.clone()).unwrap();
            if how.compress {
                enc.write_all(&b).unwrap();
            }
        } else {
            if how.hash {
                hasher.update(&buf[..n]);
            }
            if how.compress {
                enc.write_all(&buf[..n]).unwrap();
            }
        }
    }
    drop(tx);
    if let Some(t) = hasher_thread {
        std::hint::black_box(t.join().unwrap());
    }
    std::hint::black_box(hasher.finalize());
    if how.compress { enc.finish().unwrap().len() } else { 0 }
}

fn crc32c_file(path: &str) -> usize {
    let mut f = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; CHUNK];
    let mut crc = 0u32;
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        crc = crc32c::crc32c_append(crc, &buf[..n]);
    }
    std::hint::black_box(crc);
    0
}

fn main() {
    let files: Vec<String> = std::env::args().skip(1).collect();
    assert!(!files.is_empty(), "usage: encode-micro SEGMENT...");
    let h = |hash, compress, workers, job, hash_thread| How { hash, compress, workers, job, hash_thread };
    let variants: Vec<(&str, Box<dyn Fn(&str) -> usize>)> = vec![
        ("sha256 only", Box::new(move |p| encode(p, &h(true, false, 0, 0, false)))),
        ("crc32c only", Box::new(crc32c_file)),
        ("zstd-3 only", Box::new(move |p| encode(p, &h(false, true, 0, 0, false)))),
        ("pgward today: sha256 + zstd-3 inline, one thread", Box::new(move |p| encode(p, &h(true, true, 0, 0, false)))),
        ("sha256 on a second thread", Box::new(move |p| encode(p, &h(true, true, 0, 0, true)))),
        ("zstd nbWorkers=2 (default job), sha256 thread", Box::new(move |p| encode(p, &h(true, true, 2, 0, true)))),
        ("zstd nbWorkers=2 jobSize 2 MiB, sha256 thread", Box::new(move |p| encode(p, &h(true, true, 2, 2 << 20, true)))),
        ("zstd nbWorkers=2 jobSize 1 MiB, sha256 thread", Box::new(move |p| encode(p, &h(true, true, 2, 1 << 20, true)))),
    ];
    let raw = files.len() as f64 * 16_777_216.0;
    for (name, f) in &variants {
        let (mut best, mut stored) = (f64::MAX, 0);
        for _ in 0..3 {
            let t = Instant::now();
            stored = files.iter().map(|p| f(p)).sum::<usize>();
            best = best.min(t.elapsed().as_secs_f64());
        }
        let ratio = if stored > 0 { format!("ratio {:.2}", raw / stored as f64) } else { String::new() };
        println!(
            "{name:50} {:6.1} ms/segment {:6.0} MB/s  {ratio}",
            best * 1000.0 / files.len() as f64,
            raw / 1e6 / best
        );
    }
}
