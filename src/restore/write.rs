//! Writes files from stored blocks, in parallel, verifying every block.
//!
//! Files are cut into chunks of up to [`CHUNK_BYTES`]; each chunk is written by one worker,
//! front to back through one open handle, with a reused decompression context and aligned
//! buffer, reading the next few objects ahead (readahead.rs) and writing around the page cache
//! (direct.rs). Up to `WRITERS_PER_JOB × jobs` chunks are in progress and at most `jobs`
//! blocks decode at once, so memory stays around a few blocks per writer whatever the size of
//! the backup. Measured on the 1.6 GB bench restore (bench/RESULTS.md): per-block tasks that
//! reopened files and allocated per block took 3.2 s; one worker per whole file 2.15–2.35 s;
//! chunks, direct writes, preallocation and read-ahead about 1.5 s.
//!
//! A block whose content does not hash to its id, or an object that is missing or not a valid
//! zstd frame, aborts the restore with the file, the block number and the object key. In delta
//! mode a block whose bytes on disk already hash to its id is neither fetched nor written.
//!
//! Lengths, modes, times and durability are handled at the end ([`finish_files`],
//! [`sync_dirs`]), in parallel, rather than one fsync per write in the hot path.

use super::direct::{AlignedBuf, FileSink};
use super::files::{Creator, FileJob};
use super::readahead::ReadAhead;
use crate::codec::{self, Sha256Digest};
use crate::repo::layout;
use crate::repo::manifest::Recipe;
use crate::storage::DynStorage;
use anyhow::{Context as _, Result, anyhow, bail};
use futures::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::ops::Range;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};
use tokio::sync::Semaphore;

/// One place a stored block goes: `len` bytes from `from` in the block, at `at` within block
/// `block` of file `file`.
#[derive(Debug, Clone, Copy)]
struct Loc {
    file: usize,
    block: u64,
    at: u64,
    from: u64,
    len: u64,
}

/// What to write, grouped for the workers.
#[derive(Debug, Default)]
pub struct WritePlan {
    pub files: Vec<FileJob>,
    block_size: u64,
    /// Files are written in chunks of this many bytes ([`CHUNK_BYTES`]; smaller in tests).
    pub chunk_bytes: u64,
    /// Set when the writers create the files they alone write (a full restore); otherwise
    /// every file exists before writing starts (`prepare::create_files`).
    pub creator: Option<Creator>,
    /// Single-piece recipes by stored block, in the order blocks are first used (so writes
    /// go roughly sequentially through the files).
    groups: Vec<(Sha256Digest, Vec<Loc>)>,
    /// Recipes of several pieces: applied in order, one task each.
    composite: Vec<(usize, u64, Recipe)>,
    /// Every file's recipes, in block order: what the writers walk.
    recipes: Vec<Vec<Recipe>>,
}

/// Counters, shared with the progress reporter.
#[derive(Debug, Default)]
pub struct Progress {
    /// Bytes laid down or found already in place.
    pub bytes_done: AtomicU64,
    pub blocks_fetched: AtomicU64,
    pub blocks_reused: AtomicU64,
    /// Compressed bytes downloaded.
    pub bytes_fetched: AtomicU64,
    pub bytes_written: AtomicU64,
}

impl WritePlan {
    pub fn new(block_size: u64) -> WritePlan {
        WritePlan {
            block_size,
            chunk_bytes: CHUNK_BYTES,
            ..WritePlan::default()
        }
    }

    /// Adds a file and its recipes, checking that every piece lies inside its block and the
    /// file (a manifest that says otherwise is refused before anything is fetched).
    pub fn add(
        &mut self,
        job: FileJob,
        recipes: &[Recipe],
        index: &mut HashMap<Sha256Digest, usize>,
    ) -> Result<()> {
        let file = self.files.len();
        for (block, recipe) in recipes.iter().enumerate() {
            let block = block as u64;
            for p in &recipe.pieces {
                let end_in_block = p.at.checked_add(p.len);
                let end_in_file = end_in_block.and_then(|e| e.checked_add(block * self.block_size));
                if end_in_block.is_none_or(|e| e > self.block_size)
                    || end_in_file.is_none_or(|e| e > job.size)
                {
                    bail!(
                        "the manifest is inconsistent: block {block} of {} has a piece of {} \
                         bytes at offset {} that does not fit the block ({} bytes) or the file \
                         ({} bytes)",
                        job.rel,
                        p.len,
                        p.at,
                        self.block_size,
                        job.size
                    );
                }
            }
            match recipe.pieces.as_slice() {
                [] => {}
                [p] => {
                    let loc = Loc {
                        file,
                        block,
                        at: p.at,
                        from: p.from,
                        len: p.len,
                    };
                    let at = *index.entry(p.id).or_insert_with(|| {
                        self.groups.push((p.id, Vec::new()));
                        self.groups.len() - 1
                    });
                    self.groups[at].1.push(loc);
                }
                _ => self.composite.push((file, block, recipe.clone())),
            }
        }
        self.files.push(job);
        self.recipes.push(recipes.to_vec());
        Ok(())
    }

    pub fn blocks(&self) -> u64 {
        self.groups.iter().map(|g| g.1.len() as u64).sum::<u64>() + self.composite.len() as u64
    }
}

/// What the workers share.
struct Shared {
    storage: DynStorage,
    plan: WritePlan,
    delta: bool,
    cpu: Semaphore,
    progress: Arc<Progress>,
    /// Decode buffers and contexts, reused across chunks: most chunks are small files, and a
    /// fresh 1 MiB buffer and zstd context per file cost an mmap, page faults and an munmap
    /// (a TLB shootdown across threads) each.
    scratch: std::sync::Mutex<Vec<Scratch>>,
}

/// One worker's decode state.
struct Scratch {
    raw: AlignedBuf,
    dctx: zstd::bulk::Decompressor<'static>,
}

impl Shared {
    fn take_scratch(&self) -> Result<Scratch> {
        let pooled = self.scratch.lock().ok().and_then(|mut p| p.pop());
        match pooled {
            Some(s) => Ok(s),
            None => Ok(Scratch {
                raw: AlignedBuf::new(self.plan.block_size as usize),
                dctx: zstd::bulk::Decompressor::new()
                    .context("cannot create a zstd decompression context")?,
            }),
        }
    }

    fn put_scratch(&self, s: Scratch) {
        if let Ok(mut p) = self.scratch.lock() {
            p.push(s);
        }
    }
}

/// Files are written in pieces of at most this many bytes, each piece by one worker front
/// to back: small enough that the segments of one big relation (1 GB) are spread over every
/// worker, large enough that each worker still writes long sequential runs.
const CHUNK_BYTES: u64 = 64 << 20;

/// Writers per decoding slot: direct writes and reads wait on the disk, so more writers than
/// `jobs` keep both busy (2 -> 4 per job: 1.68 s -> 1.52 s on the bench restore).
const WRITERS_PER_JOB: usize = 4;

/// Objects each worker reads ahead of the one it is decoding (see readahead.rs).
const READ_AHEAD: usize = 4;

/// Fetches, verifies and writes every block of `plan` into files that exist (see
/// `prepare::create_file`). Lengths, modes and times are set afterwards by [`finish_files`]
/// (the padded direct write of a file's last piece may leave it slightly long until then).
///
/// Each chunk of [`CHUNK_BYTES`] is written by one worker, front to back through one open
/// handle: interleaving a file's blocks across threads and reopening it per block cost twice
/// the kernel time and much slower fsyncs, while one worker per whole file left a 1 GB
/// relation segment to a single core (bench/RESULTS.md). Chunks of the largest files go
/// first so the last ones to finish are small. Fetches and direct writes wait on I/O, so
/// [`WRITERS_PER_JOB`] writers per job run, with decoding still bounded by `jobs`.
pub async fn write_blocks(
    storage: DynStorage,
    plan: WritePlan,
    jobs: usize,
    delta: bool,
    progress: Arc<Progress>,
) -> Result<WritePlan> {
    let jobs = jobs.max(1);
    let shared = Arc::new(Shared {
        storage,
        plan,
        delta,
        cpu: Semaphore::new(jobs),
        progress,
        scratch: Default::default(),
    });
    let blocks_per_chunk =
        (shared.plan.chunk_bytes / shared.plan.block_size.max(1)).max(1) as usize;
    let mut order: Vec<usize> = (0..shared.plan.files.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(shared.plan.files[i].size));
    let chunks: Vec<(usize, Range<usize>)> = order
        .into_iter()
        .flat_map(|file| {
            let n = shared.plan.recipes[file].len();
            (0..n.div_ceil(blocks_per_chunk).max(1)).map(move |c| {
                let start = c * blocks_per_chunk;
                (file, start..(start + blocks_per_chunk).min(n))
            })
        })
        .collect();
    futures::stream::iter(chunks)
        .map(|(file, blocks)| {
            let shared = shared.clone();
            blocking(move || {
                let mut scratch = shared.take_scratch()?;
                let r = write_chunk(&shared, file, blocks, &mut scratch);
                shared.put_scratch(scratch);
                r
            })
        })
        .buffer_unordered(jobs * WRITERS_PER_JOB)
        .try_collect::<()>()
        .await?;
    // Every task has finished, so this is the only reference left.
    let shared = Arc::try_unwrap(shared).map_err(|_| anyhow!("restore workers still running"))?;
    Ok(shared.plan)
}

/// Writes blocks `blocks` of one file in order (on a blocking thread).
fn write_chunk(
    s: &Arc<Shared>,
    file: usize,
    blocks: Range<usize>,
    scratch: &mut Scratch,
) -> Result<()> {
    let rt = tokio::runtime::Handle::current();
    let job = &s.plan.files[file];
    if let Some(c) = s.plan.creator
        && job.size <= s.plan.chunk_bytes
    {
        crate::restore::files::create_file(job, false, c.owner, false)?;
    }
    // Delta mode reads what is on disk, so it stays in the page cache; a full restore writes
    // around it (see direct.rs).
    let mut sink = FileSink::open(&job.path, job.size, !s.delta)?;
    // The last decoded block: runs of identical blocks (zeroed space) are fetched once. The
    // buffer is reused: a fresh 1 MiB allocation per block is a fresh mmap, and faulting its
    // pages in cost as much kernel time as writing the data.
    let mut last: Option<Sha256Digest> = None;
    let Scratch { raw, dctx } = scratch;
    let mut raw_len = 0;
    // A full restore needs every object of the chunk, in a known order, so the next few are
    // read ahead; delta mode decides block by block whether to fetch at all.
    let mut ahead = (!s.delta).then(|| {
        let shared = s.clone();
        let rt = rt.clone();
        ReadAhead::new(
            fetch_order(s, file, &blocks),
            READ_AHEAD,
            move |&(id, block)| {
                let shared = shared.clone();
                rt.spawn(async move { fetch(&shared, &id, file, block, 0).await })
            },
        )
    });
    for (block, recipe) in s.plan.recipes[file][blocks.clone()].iter().enumerate() {
        let block = (blocks.start + block) as u64;
        if s.delta
            && let [p] = recipe.pieces.as_slice()
        {
            let loc = Loc {
                file,
                block,
                at: p.at,
                from: p.from,
                len: p.len,
            };
            if already_there_in(s, sink.file(), &p.id, &loc)? {
                s.progress.blocks_reused.fetch_add(1, Ordering::Relaxed);
                s.progress.bytes_done.fetch_add(loc.len, Ordering::Relaxed);
                continue;
            }
        }
        for p in &recipe.pieces {
            if last != Some(p.id) {
                let data = match ahead.as_mut() {
                    Some(ahead) => match ahead.next(&rt) {
                        Some(((id, _), r)) if id == p.id => {
                            r.map_err(|e| anyhow!("a restore read failed: {e}"))??
                        }
                        _ => bail!("restore read-ahead lost its place in {}", job.rel),
                    },
                    None => rt.block_on(fetch(s, &p.id, file, block, 0))?,
                };
                let _permit = rt.block_on(s.cpu.acquire())?;
                raw_len = decode_into_buf(s, dctx, &p.id, &data, file, block, raw)?;
                last = Some(p.id);
            }
            let loc = Loc {
                file,
                block,
                at: p.at,
                from: p.from,
                len: p.len,
            };
            write_piece_to(s, &mut sink, raw, raw_len, &loc)?;
        }
    }
    Ok(())
}

/// The objects a chunk fetches, in order: what [`write_chunk`] decodes when not in delta mode
/// (a run of pieces from the same object is fetched once).
fn fetch_order(s: &Shared, file: usize, blocks: &Range<usize>) -> Vec<(Sha256Digest, u64)> {
    let mut order = Vec::new();
    let mut last = None;
    for (i, recipe) in s.plan.recipes[file][blocks.clone()].iter().enumerate() {
        for p in &recipe.pieces {
            if last != Some(p.id) {
                order.push((p.id, (blocks.start + i) as u64));
                last = Some(p.id);
            }
        }
    }
    order
}

/// Runs blocking file work on the blocking pool, propagating panics as errors.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| anyhow!("a restore worker failed: {e}"))?
}

/// Where a block is used, for messages: "block 3 of base/5/16384 (and 2 other places)".
fn place(s: &Shared, file: usize, block: u64, others: usize) -> String {
    let mut p = format!("block {block} of {}", s.plan.files[file].rel);
    if others > 0 {
        p += &format!(" (and {others} other place(s) using the same stored block)");
    }
    p
}

async fn fetch(
    s: &Arc<Shared>,
    id: &Sha256Digest,
    file: usize,
    block: u64,
    others: usize,
) -> Result<bytes::Bytes> {
    let key = layout::block_key(id);
    match s.storage.get(&key).await {
        Ok(data) => {
            s.progress.blocks_fetched.fetch_add(1, Ordering::Relaxed);
            s.progress
                .bytes_fetched
                .fetch_add(data.len() as u64, Ordering::Relaxed);
            Ok(data)
        }
        Err(e) if e.is_not_found() => Err(anyhow!(
            "cannot restore {}: object {key} is missing from the repository\nhint: the \
             repository lost data this backup needs (deleted by hand, or an interrupted garbage \
             collection); restore another backup with --backup",
            place(s, file, block, others)
        )),
        Err(e) => Err(anyhow::Error::new(e).context(format!(
            "cannot restore {}: cannot read {key}",
            place(s, file, block, others)
        ))),
    }
}

/// Decompresses with a reused context straight into the reused buffer (blocks are at most one
/// block size), then checks the sha256; returns the block's length.
fn decode_into_buf(
    s: &Shared,
    dctx: &mut zstd::bulk::Decompressor<'static>,
    id: &Sha256Digest,
    data: &[u8],
    file: usize,
    block: u64,
    raw: &mut AlignedBuf,
) -> Result<usize> {
    let err = |e: codec::DecodeError| decode_error(s, id, e, file, block, 0);
    let len = dctx
        .decompress_to_buffer(data, raw.space_mut())
        .map_err(|e| err(codec::DecodeError::Corrupt(e.to_string())))?;
    let actual = Sha256Digest(Sha256::digest(&raw.space()[..len]).into());
    if actual != *id {
        return Err(err(codec::DecodeError::HashMismatch {
            expected: *id,
            actual,
        }));
    }
    raw.zero_pad_after(len);
    Ok(len)
}

fn decode_error(
    s: &Shared,
    id: &Sha256Digest,
    e: codec::DecodeError,
    file: usize,
    block: u64,
    others: usize,
) -> anyhow::Error {
    anyhow!(
        "cannot restore {} from {}: {e}\nhint: the repository copy of \
         this block is damaged, and every backup that uses it is affected; check the \
         storage, and restore an older backup that does not share the block with --backup",
        place(s, file, block, others),
        layout::block_key(id)
    )
}

fn write_piece_to(
    s: &Shared,
    sink: &mut FileSink,
    raw: &AlignedBuf,
    raw_len: usize,
    loc: &Loc,
) -> Result<()> {
    let job = &s.plan.files[loc.file];
    let piece = usize::try_from(loc.from)
        .ok()
        .zip(usize::try_from(loc.len).ok())
        .filter(|&(from, len)| from.checked_add(len).is_some_and(|end| end <= raw_len));
    let Some((from, len)) = piece else {
        bail!(
            "the manifest is inconsistent: block {} of {} takes {} bytes from offset {} of a \
             stored block of {} bytes",
            loc.block,
            job.rel,
            loc.len,
            loc.from,
            raw_len
        );
    };
    let offset = loc.block * s.plan.block_size + loc.at;
    sink.write_piece(raw, from, len, offset)
        .with_context(|| format!("cannot write {} at offset {offset}", job.path.display()))?;
    s.progress
        .bytes_written
        .fetch_add(loc.len, Ordering::Relaxed);
    s.progress.bytes_done.fetch_add(loc.len, Ordering::Relaxed);
    Ok(())
}

/// Delta: do the bytes on disk already hash to the stored block's id? Only pieces taken from
/// the start of their block can be checked this way, which is every single-piece recipe pgward
/// writes today.
fn already_there_in(s: &Shared, f: &File, id: &Sha256Digest, loc: &Loc) -> Result<bool> {
    if loc.from != 0 {
        return Ok(false);
    }
    let job = &s.plan.files[loc.file];
    let mut buf = vec![0u8; loc.len as usize];
    let offset = loc.block * s.plan.block_size + loc.at;
    f.read_exact_at(&mut buf, offset)
        .with_context(|| format!("cannot read {} at offset {offset}", job.path.display()))?;
    Ok(Sha256Digest(Sha256::digest(&buf).into()) == *id)
}

/// Runs `f` over `items` on `threads` blocking threads, each taking every `threads`-th item.
/// Used for the fsync phase, which waits on the disk rather than the CPU.
pub async fn parallel<T, F>(items: Vec<T>, threads: usize, f: F) -> Result<()>
where
    T: Send + Sync + 'static,
    F: Fn(&T) -> Result<()> + Send + Sync + 'static,
{
    let items = Arc::new(items);
    let f = Arc::new(f);
    let threads = threads.clamp(1, items.len().max(1));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (items, f) = (items.clone(), f.clone());
            blocking(move || {
                for item in items.iter().skip(t).step_by(threads) {
                    f(item)?;
                }
                Ok(())
            })
        })
        .collect();
    for r in futures::future::join_all(handles).await {
        r?;
    }
    Ok(())
}

/// Gives every file its final length, mode and modification time, and makes it durable.
pub async fn finish_files(files: Vec<FileJob>, threads: usize) -> Result<()> {
    parallel(files, threads, move |job| {
        let f = OpenOptions::new()
            .write(true)
            .open(&job.path)
            .with_context(|| format!("cannot open {}", job.path.display()))?;
        // Cuts the padding of a direct-written last piece, or extends a file whose end is a
        // hole; before the time is set, since changing the length changes it.
        if f.metadata().map(|m| m.len()).ok() != Some(job.size) {
            f.set_len(job.size)
                .with_context(|| format!("cannot set the length of {}", job.path.display()))?;
        }
        f.set_permissions(std::fs::Permissions::from_mode(job.mode & 0o7777))
            .with_context(|| format!("cannot set the mode of {}", job.path.display()))?;
        if let Some(t) = u64::try_from(job.mtime)
            .ok()
            .and_then(|s| SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(s)))
        {
            f.set_modified(t)
                .with_context(|| format!("cannot set the time of {}", job.path.display()))?;
        }
        crate::fsutil::fsync_file(&f, &job.path)
            .with_context(|| format!("cannot fsync {}", job.path.display()))
    })
    .await
}

/// fsyncs directories (so the entries created in them are durable), in parallel.
pub async fn sync_dirs(dirs: Vec<PathBuf>, threads: usize) -> Result<()> {
    parallel(dirs, threads, |d| {
        crate::fsutil::fsync_dir(d)
            .with_context(|| format!("cannot fsync directory {}", d.display()))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::manifest::Piece;
    use crate::storage::Storage;
    use crate::storage::memory::MemoryStorage;
    use bytes::Bytes;

    const BLOCK: u64 = 16 * 1024;

    fn noise(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    async fn store(s: &MemoryStorage, data: &[u8]) -> Sha256Digest {
        let enc = codec::encode_bytes(data, 3).unwrap();
        s.put(&layout::block_key(&enc.sha256), Bytes::from(enc.data))
            .await
            .unwrap();
        enc.sha256
    }

    /// A file spread over many small chunks, written concurrently into preallocated space,
    /// with a run of identical blocks, a block made of pieces of two stored blocks, and a last
    /// block shorter than the alignment: every byte lands where the recipes say, the file ends
    /// at its size, and runs are fetched once per chunk.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn chunked_file_matches_its_recipes() {
        let storage = Arc::new(MemoryStorage::new());
        let mut expected = Vec::new();
        let mut recipes = Vec::new();
        for b in 0..9u64 {
            let data = noise(if b == 3 { 2 } else { b }, BLOCK as usize);
            if b == 6 {
                // Composite: 4 KiB from the middle of one stored block, then the start of
                // another.
                let x = noise(100, BLOCK as usize);
                let y = noise(101, BLOCK as usize);
                let (xid, yid) = (store(&storage, &x).await, store(&storage, &y).await);
                expected.extend_from_slice(&x[8192..12288]);
                expected.extend_from_slice(&y[..(BLOCK - 4096) as usize]);
                recipes.push(Recipe {
                    pieces: vec![
                        Piece {
                            id: xid,
                            at: 0,
                            from: 8192,
                            len: 4096,
                        },
                        Piece {
                            id: yid,
                            at: 4096,
                            from: 0,
                            len: BLOCK - 4096,
                        },
                    ],
                });
                continue;
            }
            let id = store(&storage, &data).await;
            expected.extend_from_slice(&data);
            recipes.push(Recipe::whole(id, BLOCK));
        }
        let tail = noise(9, 3000);
        recipes.push(Recipe::whole(store(&storage, &tail).await, 3000));
        expected.extend_from_slice(&tail);

        let dir = tempfile::tempdir().unwrap();
        let job = FileJob {
            rel: "base/5/16384".into(),
            path: dir.path().join("16384"),
            size: expected.len() as u64,
            mode: 0o600,
            mtime: 1_700_000_000,
        };
        let mut plan = WritePlan::new(BLOCK);
        plan.chunk_bytes = 2 * BLOCK;
        plan.add(job.clone(), &recipes, &mut HashMap::new())
            .unwrap();
        crate::restore::files::create_file(&job, false, None, true).unwrap();
        let progress = Arc::new(Progress::default());
        let plan = write_blocks(storage, plan, 2, false, progress.clone())
            .await
            .unwrap();
        finish_files(plan.files, 2).await.unwrap();

        let got = std::fs::read(&job.path).unwrap();
        assert_eq!(got.len(), expected.len());
        let first_bad = got.iter().zip(&expected).position(|(a, b)| a != b);
        assert_eq!(first_bad, None, "first differing byte");
        // Blocks 2 and 3 are one stored block in one chunk (blocks 2..4): fetched once.
        assert_eq!(progress.blocks_fetched.load(Ordering::Relaxed), 10);
        assert_eq!(
            progress.bytes_written.load(Ordering::Relaxed),
            expected.len() as u64
        );
    }
}
