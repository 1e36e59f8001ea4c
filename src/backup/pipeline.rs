//! The parallel block pipeline: read, verify, hash, compress and upload a stream of files.
//!
//! ```text
//! walker thread ──block tasks──▶ jobs CPU workers ──new blocks──▶ upload tasks (≈2×jobs)
//!      │ (bounded)                   │ (bounded)                        │
//!      └────────── file/dir/block results (bounded) ──▶ collector ◀─────┘ stats
//! ```
//!
//! - The walker opens each file once, announces it to the collector, and queues one task per
//!   block of `block_size` bytes (from its size at open). The last task of a file is its
//!   *tail*: its worker keeps reading past the planned end while the file has grown, so a file
//!   that grows during the copy is recorded with what was read, not cut at its old size.
//! - A worker reads its block with positional reads (many workers read one file at once),
//!   verifies page checksums of relation files (re-reading a failing page once, since it may
//!   have been caught mid-write), hashes the bytes, and, if no block with that id is in the
//!   repository or already claimed by this backup, compresses and queues it for upload.
//! - The collector assembles each file's recipes in order. A block shorter than `block_size`
//!   ends its file: if a file shrank during the copy, what follows is dropped, so offsets in
//!   the manifest are always `index * block_size`.
//!
//! Memory stays bounded whatever the size of the database: every queue that carries block data
//! is bounded, so at most about `5 × jobs` blocks are in memory (one raw and one compressed per
//! worker, the upload queue, the uploads in flight). The set of known block ids grows with the
//! repository (about 100 bytes per stored block).
//!
//! Any error stops every stage: a shared flag is raised, queues close, and the first real
//! error is returned. The blocks uploaded before that are harmless: they are not referenced by
//! any manifest, and garbage collection removes them.

use super::walk::Entry;
use crate::codec::Sha256Digest;
use crate::pg::Lsn;
use crate::pg::page_checksum::{self, BLCKSZ, PageCheck, RELSEG_SIZE};
use crate::repo::layout;
use crate::repo::manifest::{BackupStats, BadPage, FileEntry, FileKind, Recipe};
use crate::storage::DynStorage;
use anyhow::{Context, Result, anyhow};
use bytes::Bytes;
use futures::TryStreamExt;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// How the pipeline runs.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Bytes per block (a multiple of 8 KiB).
    pub block_size: u64,
    /// CPU workers.
    pub jobs: usize,
    /// zstd level.
    pub level: i32,
    /// Verify page checksums of relation files, skipping pages written at or after this LSN
    /// (the backup start). `None` when the cluster has no data checksums.
    pub verify_from: Option<Lsn>,
}

/// What the pipeline produced.
#[derive(Debug, Default)]
pub struct PipelineOutput {
    /// Every directory and file, sorted by path (so a directory precedes its contents).
    pub files: Vec<FileEntry>,
    pub bad_pages: Vec<BadPage>,
    /// All counters except `duration_ms`.
    pub stats: BackupStats,
}

/// Live counters, read by the progress display.
#[derive(Debug, Default)]
pub struct Progress {
    /// Bytes read so far.
    pub bytes_done: AtomicU64,
    /// Expected total, when an estimate was made (0 otherwise).
    pub bytes_total: AtomicU64,
    /// Compressed bytes uploaded so far.
    pub stored_bytes: AtomicU64,
}

/// The ids of blocks already in the repository, plus those this backup has claimed.
#[derive(Debug, Default)]
pub struct KnownBlocks {
    ids: Mutex<HashSet<Sha256Digest>>,
}

impl KnownBlocks {
    /// Lists `blocks/` once, less every block garbage collection has marked: a backup never
    /// deduplicates against a marked block (it uploads its own copy; see `retention::gc`).
    pub async fn load(storage: &DynStorage) -> Result<KnownBlocks> {
        let listing = storage
            .list(layout::BLOCKS_PREFIX)
            .await
            .with_context(|| format!("cannot list the blocks in {}", storage.describe()))?;
        let marked = crate::retention::gc::marked_blocks(storage.as_ref()).await?;
        let ids = listing
            .iter()
            .filter_map(|o| layout::parse_block_key(&o.key))
            .filter(|id| !marked.contains(id))
            .collect();
        Ok(KnownBlocks {
            ids: Mutex::new(ids),
        })
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// True if `id` was unknown: the caller now owns uploading it.
    fn claim(&self, id: Sha256Digest) -> bool {
        self.lock().insert(id)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<Sha256Digest>> {
        // Every critical section is one set operation; a panic cannot leave it half done.
        self.ids.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One open file being copied, shared by its block tasks.
struct OpenFile {
    id: u64,
    path: Arc<str>,
    file: File,
    relation_segno: Option<u32>,
}

struct BlockTask {
    file: Arc<OpenFile>,
    index: u64,
    /// The last planned block: keeps reading while the file has grown.
    tail: bool,
}

/// One block as read.
#[derive(Debug)]
struct BlockDone {
    len: u64,
    id: Sha256Digest,
    bad: Vec<BadPage>,
}

enum Msg {
    Dir(FileEntry),
    File {
        id: u64,
        path: Arc<str>,
        mode: u32,
        mtime: i64,
        tasks: u64,
    },
    Blocks {
        file: u64,
        first: u64,
        blocks: Vec<BlockDone>,
    },
}

struct Upload {
    id: Sha256Digest,
    data: Vec<u8>,
    raw_len: u64,
}

/// Raises the stop flag when dropped, so blocking threads stop if the pipeline is abandoned.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Copies `entries` into `storage`. Returns the manifest entries and statistics.
pub async fn run<I>(
    storage: DynStorage,
    entries: I,
    known: Arc<KnownBlocks>,
    config: PipelineConfig,
    progress: Arc<Progress>,
) -> Result<PipelineOutput>
where
    I: Iterator<Item = Result<Entry>> + Send + 'static,
{
    anyhow::ensure!(
        config.block_size > 0 && config.block_size.is_multiple_of(BLCKSZ as u64),
        "block size {} is not a multiple of {BLCKSZ}",
        config.block_size
    );
    let jobs = config.jobs.max(1);
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_guard = StopOnDrop(stop.clone());

    // Tasks carry no data, so this queue can be deeper than the data queues; it only bounds
    // how many files are open at once.
    let (task_tx, task_rx) = std_mpsc::sync_channel::<BlockTask>(jobs * 8);
    let task_rx = Arc::new(Mutex::new(task_rx));
    let (msg_tx, msg_rx) = mpsc::channel::<Msg>(1024);
    let (up_tx, up_rx) = mpsc::channel::<Upload>(jobs);

    let walker = {
        let (msg_tx, stop) = (msg_tx.clone(), stop.clone());
        let block_size = config.block_size;
        tokio::task::spawn_blocking(move || walker(entries, block_size, task_tx, msg_tx, stop))
    };
    let workers: Vec<_> = (0..jobs)
        .map(|_| {
            let w = Worker {
                tasks: task_rx.clone(),
                msgs: msg_tx.clone(),
                uploads: up_tx.clone(),
                known: known.clone(),
                stop: stop.clone(),
                progress: progress.clone(),
                config: config.clone(),
            };
            tokio::task::spawn_blocking(move || w.run())
        })
        .collect();
    drop((task_rx, msg_tx, up_tx));

    // Uploads wait on the network (or on fsync for a local repository), not on the CPU, so
    // more of them than workers keep the workers busy.
    let concurrency = (jobs * 2).max(4);
    let uploaded = UploadStats::default();
    let (upload_result, collected) = tokio::join!(
        upload(storage, up_rx, concurrency, &uploaded, &progress, &stop),
        collect(msg_rx, config.block_size),
    );

    // The threads have finished or are finishing: every channel they feed is closed or
    // drained. Report the cause, not its echo: a worker or walker error first, then upload.
    let mut first_error = None;
    for handle in std::iter::once(walker).chain(workers) {
        let r = handle
            .await
            .map_err(|e| anyhow!("a backup thread panicked: {e}"))
            .and_then(|r| r);
        if let Err(e) = r {
            first_error.get_or_insert(e);
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    upload_result?;

    let mut out = collected;
    out.stats.new_blocks = uploaded.blocks.load(Ordering::Relaxed);
    out.stats.new_bytes = uploaded.raw_bytes.load(Ordering::Relaxed);
    out.stats.stored_bytes = uploaded.stored_bytes.load(Ordering::Relaxed);
    Ok(out)
}

fn walker<I>(
    entries: I,
    block_size: u64,
    task_tx: std_mpsc::SyncSender<BlockTask>,
    msgs: mpsc::Sender<Msg>,
    stop: Arc<AtomicBool>,
) -> Result<()>
where
    I: Iterator<Item = Result<Entry>>,
{
    let fail = |e: anyhow::Error| {
        stop.store(true, Ordering::SeqCst);
        Err(e)
    };
    let mut next_id = 0u64;
    for entry in entries {
        if stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        let entry = match entry {
            Ok(e) => e,
            Err(e) => return fail(e),
        };
        let msg = match entry {
            Entry::Dir { path, mode, mtime } => Msg::Dir(FileEntry {
                path,
                kind: FileKind::Dir,
                mode,
                size: 0,
                mtime,
                blocks: Vec::new(),
            }),
            Entry::File {
                path,
                abs,
                relation_segno,
                ..
            } => {
                let file = match File::open(&abs) {
                    Ok(f) => f,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        tracing::debug!(path, "file vanished before it was copied");
                        continue;
                    }
                    Err(e) => {
                        return fail(anyhow::Error::new(e).context(format!(
                            "cannot open {}\nhint: pgward must run as the user that owns the data directory",
                            abs.display()
                        )));
                    }
                };
                // Sizes and times from the open file, so they describe what is read.
                let meta = match file.metadata() {
                    Ok(m) => m,
                    Err(e) => {
                        return fail(
                            anyhow::Error::new(e).context(format!("cannot stat {}", abs.display())),
                        );
                    }
                };
                let tasks = meta.len().div_ceil(block_size).max(1);
                let id = next_id;
                next_id += 1;
                let path: Arc<str> = Arc::from(path);
                if msgs
                    .blocking_send(Msg::File {
                        id,
                        path: path.clone(),
                        mode: meta.permissions().mode() & 0o7777,
                        mtime: meta.mtime(),
                        tasks,
                    })
                    .is_err()
                {
                    return Ok(());
                }
                let open = Arc::new(OpenFile {
                    id,
                    path,
                    file,
                    relation_segno,
                });
                for index in 0..tasks {
                    let task = BlockTask {
                        file: open.clone(),
                        index,
                        tail: index + 1 == tasks,
                    };
                    if task_tx.send(task).is_err() {
                        return Ok(());
                    }
                }
                continue;
            }
        };
        if msgs.blocking_send(msg).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

struct Worker {
    tasks: Arc<Mutex<std_mpsc::Receiver<BlockTask>>>,
    msgs: mpsc::Sender<Msg>,
    uploads: mpsc::Sender<Upload>,
    known: Arc<KnownBlocks>,
    stop: Arc<AtomicBool>,
    progress: Arc<Progress>,
    config: PipelineConfig,
}

/// Why a worker stopped early without an error of its own.
struct Stopped;

impl Worker {
    fn run(self) -> Result<()> {
        let mut compressor = zstd::bulk::Compressor::new(self.config.level)
            .context("cannot set up zstd compression")?;
        // Same frame as `codec::encode_bytes`: content size and content checksum in it, so
        // `zstd -d` alone verifies and restores a block.
        compressor
            .set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(true))
            .and_then(|_| {
                compressor.set_parameter(zstd::zstd_safe::CParameter::ContentSizeFlag(true))
            })
            .context("cannot set up zstd compression")?;
        let mut buf = vec![0u8; self.config.block_size as usize];
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            let task = {
                let rx = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
                rx.recv()
            };
            let Ok(task) = task else {
                return Ok(());
            };
            match self.block(&task, &mut buf, &mut compressor) {
                Ok(Ok(blocks)) => {
                    let msg = Msg::Blocks {
                        file: task.file.id,
                        first: task.index,
                        blocks,
                    };
                    if self.msgs.blocking_send(msg).is_err() {
                        return Ok(());
                    }
                }
                Ok(Err(Stopped)) => return Ok(()),
                Err(e) => {
                    self.stop.store(true, Ordering::SeqCst);
                    return Err(e);
                }
            }
        }
    }

    /// Reads one block (and, for a tail, whatever the file grew by).
    fn block(
        &self,
        task: &BlockTask,
        buf: &mut [u8],
        compressor: &mut zstd::bulk::Compressor<'static>,
    ) -> Result<Result<Vec<BlockDone>, Stopped>> {
        let bs = self.config.block_size;
        let mut out = Vec::with_capacity(1);
        let mut index = task.index;
        loop {
            let offset = index * bs;
            let n = read_full_at(&task.file.file, buf, offset)
                .with_context(|| format!("cannot read {}", task.file.path))?;
            let data = &mut buf[..n];
            if n == 0 && !out.is_empty() {
                break;
            }
            let bad = match (self.config.verify_from, task.file.relation_segno) {
                (Some(start), Some(segno)) => verify_pages(&task.file, data, offset, segno, start)?,
                _ => Vec::new(),
            };
            let id = Sha256Digest::of(data);
            if n > 0 && self.known.claim(id) {
                let compressed = compressor
                    .compress(data)
                    .with_context(|| format!("cannot compress a block of {}", task.file.path))?;
                let upload = Upload {
                    id,
                    data: compressed,
                    raw_len: n as u64,
                };
                if self.uploads.blocking_send(upload).is_err() {
                    return Ok(Err(Stopped));
                }
            }
            self.progress
                .bytes_done
                .fetch_add(n as u64, Ordering::Relaxed);
            out.push(BlockDone {
                len: n as u64,
                id,
                bad,
            });
            if !task.tail || (n as u64) < bs {
                break;
            }
            if self.stop.load(Ordering::SeqCst) {
                return Ok(Err(Stopped));
            }
            index += 1;
        }
        Ok(Ok(out))
    }
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Checks every whole page of a block read at `offset` of a relation segment file. A page that
/// fails is read again once: PostgreSQL may have been writing it, and the second read then
/// sees either the complete page or one whose LSN says it is newer than the backup start.
/// The re-read page replaces the first read in `data`, so the backup holds the newer bytes.
fn verify_pages(
    file: &OpenFile,
    data: &mut [u8],
    offset: u64,
    segno: u32,
    start: Lsn,
) -> Result<Vec<BadPage>> {
    let mut bad = Vec::new();
    let first_page = offset / BLCKSZ as u64;
    for (i, chunk) in data.chunks_exact_mut(BLCKSZ).enumerate() {
        let page_no = first_page + i as u64;
        // Block numbers are 32-bit in PostgreSQL; the segment arithmetic wraps the same way.
        let blkno = segno.wrapping_mul(RELSEG_SIZE).wrapping_add(page_no as u32);
        let Ok(page) = <&mut [u8; BLCKSZ]>::try_from(chunk) else {
            continue;
        };
        if !matches!(
            page_checksum::check_page(page, blkno, start),
            PageCheck::Mismatch { .. }
        ) {
            continue;
        }
        let mut again = [0u8; BLCKSZ];
        let n = read_full_at(&file.file, &mut again, page_no * BLCKSZ as u64)
            .with_context(|| format!("cannot read {}", file.path))?;
        if n < BLCKSZ {
            // Truncated meanwhile: WAL replay recreates whatever is needed.
            continue;
        }
        *page = again;
        if let PageCheck::Mismatch { expected, found } =
            page_checksum::check_page(page, blkno, start)
        {
            // One warning naming the files comes at the end; per page is detail.
            tracing::debug!(
                path = %file.path, page = page_no, expected, found,
                "page checksum mismatch"
            );
            bad.push(BadPage {
                path: file.path.to_string(),
                page: page_no,
                expected,
                found,
            });
        }
    }
    Ok(bad)
}

#[derive(Debug, Default)]
struct UploadStats {
    blocks: AtomicU64,
    raw_bytes: AtomicU64,
    stored_bytes: AtomicU64,
}

async fn upload(
    storage: DynStorage,
    rx: mpsc::Receiver<Upload>,
    concurrency: usize,
    stats: &UploadStats,
    progress: &Progress,
    stop: &AtomicBool,
) -> Result<()> {
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|u| (Ok::<_, anyhow::Error>(u), rx))
    });
    let result = stream
        .try_for_each_concurrent(concurrency, |u| {
            let storage = storage.clone();
            async move {
                let key = layout::block_key(&u.id);
                let stored = u.data.len() as u64;
                storage
                    .put(&key, Bytes::from(u.data))
                    .await
                    .with_context(|| format!("cannot store block {key}"))?;
                stats.blocks.fetch_add(1, Ordering::Relaxed);
                stats.raw_bytes.fetch_add(u.raw_len, Ordering::Relaxed);
                stats.stored_bytes.fetch_add(stored, Ordering::Relaxed);
                progress.stored_bytes.fetch_add(stored, Ordering::Relaxed);
                Ok(())
            }
        })
        .await;
    if result.is_err() {
        stop.store(true, Ordering::SeqCst);
    }
    result
}

/// A file whose blocks are still arriving.
#[derive(Default)]
struct Pending {
    meta: Option<(Arc<str>, u32, i64, u64)>,
    received: u64,
    blocks: BTreeMap<u64, BlockDone>,
}

async fn collect(mut rx: mpsc::Receiver<Msg>, block_size: u64) -> PipelineOutput {
    let mut out = PipelineOutput::default();
    let mut pending: HashMap<u64, Pending> = HashMap::new();
    while let Some(msg) = rx.recv().await {
        let (id, p) = match msg {
            Msg::Dir(entry) => {
                out.files.push(entry);
                continue;
            }
            Msg::File {
                id,
                path,
                mode,
                mtime,
                tasks,
            } => {
                let p = pending.entry(id).or_default();
                p.meta = Some((path, mode, mtime, tasks));
                (id, p)
            }
            Msg::Blocks {
                file,
                first,
                blocks,
            } => {
                let p = pending.entry(file).or_default();
                p.received += 1;
                for (k, b) in blocks.into_iter().enumerate() {
                    p.blocks.insert(first + k as u64, b);
                }
                (file, p)
            }
        };
        if matches!(p.meta, Some((.., tasks)) if tasks == p.received)
            && let Some(p) = pending.remove(&id)
        {
            finish_file(p, block_size, &mut out);
        }
    }
    // Files still pending here belong to a run that failed; the caller reports that error.
    out.files.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// Turns a file's blocks into its manifest entry. The file ends at its first short block.
fn finish_file(p: Pending, block_size: u64, out: &mut PipelineOutput) {
    let Some((path, mode, mtime, _)) = p.meta else {
        return;
    };
    let mut recipes = Vec::with_capacity(p.blocks.len());
    let mut size = 0u64;
    for (expect, (index, block)) in p.blocks.into_iter().enumerate() {
        if index != expect as u64 || block.len == 0 {
            break;
        }
        size += block.len;
        recipes.push(Recipe::whole(block.id, block.len));
        out.bad_pages.extend(block.bad);
        if block.len < block_size {
            break;
        }
    }
    out.stats.total_bytes += size;
    out.stats.files += 1;
    out.stats.blocks += recipes.len() as u64;
    out.files.push(FileEntry {
        path: path.to_string(),
        kind: FileKind::File,
        mode,
        size,
        mtime,
        blocks: recipes,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;
    use crate::storage::Storage;
    use crate::storage::memory::MemoryStorage;
    use std::path::Path;

    const BS: u64 = 64 * 1024;

    fn config(verify_from: Option<Lsn>) -> PipelineConfig {
        PipelineConfig {
            block_size: BS,
            jobs: 3,
            level: 3,
            verify_from,
        }
    }

    fn file_entry(root: &Path, rel: &str, relation_segno: Option<u32>) -> Entry {
        let abs = root.join(rel);
        let meta = std::fs::metadata(&abs).unwrap();
        Entry::File {
            path: rel.to_string(),
            abs,
            mode: 0o600,
            mtime: 0,
            size: meta.len(),
            relation_segno,
        }
    }

    /// Distinct, poorly compressible content per seed.
    fn content(len: usize, seed: u64) -> Vec<u8> {
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

    async fn run_on(
        storage: &Arc<MemoryStorage>,
        entries: Vec<Entry>,
        cfg: PipelineConfig,
    ) -> PipelineOutput {
        let dyn_storage: DynStorage = storage.clone();
        let known = Arc::new(KnownBlocks::load(&dyn_storage).await.unwrap());
        run(
            dyn_storage,
            entries.into_iter().map(Ok),
            known,
            cfg,
            Arc::new(Progress::default()),
        )
        .await
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn files_are_split_into_blocks_and_deduplicated() {
        let dir = tempfile::tempdir().unwrap();
        let sizes = [0, 1, BS - 1, BS, BS + 1, 3 * BS + 5];
        let mut entries = vec![Entry::Dir {
            path: "d".into(),
            mode: 0o700,
            mtime: 7,
        }];
        for (i, &len) in sizes.iter().enumerate() {
            std::fs::write(
                dir.path().join(format!("f{i}")),
                content(len as usize, i as u64),
            )
            .unwrap();
            entries.push(file_entry(dir.path(), &format!("f{i}"), None));
        }
        // The same bytes as f5 under another name: its blocks are uploaded once.
        std::fs::copy(dir.path().join("f5"), dir.path().join("g5")).unwrap();
        entries.push(file_entry(dir.path(), "g5", None));

        let mem = Arc::new(MemoryStorage::new());
        let out = run_on(&mem, entries.clone(), config(None)).await;
        let paths: Vec<&str> = out.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["d", "f0", "f1", "f2", "f3", "f4", "f5", "g5"]);
        assert_eq!(out.files[0].kind, FileKind::Dir);
        for (i, &len) in sizes.iter().enumerate() {
            let f = &out.files[i + 1];
            let bytes = std::fs::read(dir.path().join(&f.path)).unwrap();
            assert_eq!(f.size, len);
            assert_eq!(f.blocks.len() as u64, len.div_ceil(BS), "{}", f.path);
            for (k, r) in f.blocks.iter().enumerate() {
                let piece = &r.pieces[0];
                let start = k * BS as usize;
                let end = (start + BS as usize).min(bytes.len());
                assert_eq!(piece.len, (end - start) as u64);
                assert_eq!(piece.id, Sha256Digest::of(&bytes[start..end]));
                // Stored as a plain zstd frame the codec decodes and verifies.
                let stored = mem.get(&layout::block_key(&piece.id)).await.unwrap();
                let raw = codec::decode_to_vec(&stored, Some(&piece.id)).unwrap();
                assert_eq!(raw, &bytes[start..end]);
                assert_eq!(zstd::decode_all(&stored[..]).unwrap(), raw);
            }
        }
        assert_eq!(out.files[7].blocks, out.files[6].blocks);
        let total: u64 = sizes.iter().sum::<u64>() + sizes[5];
        assert_eq!(out.stats.total_bytes, total);
        assert_eq!(out.stats.files, 7);
        let distinct = 1 + 1 + 1 + 2 + 4;
        assert_eq!(out.stats.blocks, distinct + 4);
        assert_eq!(out.stats.new_blocks, distinct);
        assert_eq!(out.stats.new_bytes, total - sizes[5]);
        assert_eq!(mem.put_count() as u64, distinct);

        // A second run finds everything in the repository and uploads nothing.
        let again = run_on(&mem, entries, config(None)).await;
        assert_eq!(again.stats.new_blocks, 0);
        assert_eq!(again.stats.stored_bytes, 0);
        assert_eq!(mem.put_count() as u64, distinct);
        assert_eq!(again.files, out.files);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn vanished_files_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), b"a").unwrap();
        let mut entries = vec![file_entry(dir.path(), "a", None)];
        std::fs::write(dir.path().join("gone"), b"g").unwrap();
        entries.push(file_entry(dir.path(), "gone", None));
        std::fs::remove_file(dir.path().join("gone")).unwrap();
        let out = run_on(&Arc::new(MemoryStorage::new()), entries, config(None)).await;
        let paths: Vec<&str> = out.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["a"]);
    }

    /// A heap-like page with a correct checksum for block `blkno` and LSN `lsn`.
    fn page(blkno: u32, lsn: u64, seed: u64) -> Vec<u8> {
        let mut p = vec![0u8; BLCKSZ];
        p[0..4].copy_from_slice(&((lsn >> 32) as u32).to_le_bytes());
        p[4..8].copy_from_slice(&(lsn as u32).to_le_bytes());
        p[12..14].copy_from_slice(&32u16.to_le_bytes());
        p[14..16].copy_from_slice(&4096u16.to_le_bytes());
        p[16..18].copy_from_slice(&8192u16.to_le_bytes());
        p[4096..].copy_from_slice(&content(4096, seed));
        let arr: &[u8; BLCKSZ] = p.as_slice().try_into().unwrap();
        let sum = page_checksum::pg_checksum_page(arr, blkno);
        p[8..10].copy_from_slice(&sum.to_le_bytes());
        p
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_pages_are_found_and_the_backup_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let start = Lsn(0x5_0000_0000);
        // Segment 2 of a relation: block numbers start at 2 * RELSEG_SIZE. Twenty pages span
        // three blocks of 64 KiB.
        let mut rel = Vec::new();
        for i in 0..20u32 {
            rel.extend(page(2 * RELSEG_SIZE + i, 0x1_0000_0000, i as u64));
        }
        // Page 9 is corrupt; page 11 is corrupt too but newer than the backup start (skipped);
        // page 13 is all zeros (new).
        rel[9 * BLCKSZ + 5000] ^= 0xFF;
        let p11 = page(2 * RELSEG_SIZE + 11, start.0 + 8, 11);
        rel[11 * BLCKSZ..12 * BLCKSZ].copy_from_slice(&p11);
        rel[11 * BLCKSZ + 6000] ^= 0xFF;
        rel[13 * BLCKSZ..14 * BLCKSZ].fill(0);
        std::fs::create_dir_all(dir.path().join("base/5")).unwrap();
        std::fs::write(dir.path().join("base/5/16384.2"), &rel).unwrap();
        // Not a relation file: never checked.
        std::fs::write(
            dir.path().join("base/5/pg_filenode.map"),
            vec![0xAB; BLCKSZ],
        )
        .unwrap();

        let entries = vec![
            file_entry(dir.path(), "base/5/16384.2", Some(2)),
            file_entry(dir.path(), "base/5/pg_filenode.map", None),
        ];
        let mem = Arc::new(MemoryStorage::new());
        let out = run_on(&mem, entries.clone(), config(Some(start))).await;
        assert_eq!(out.bad_pages.len(), 1, "{:?}", out.bad_pages);
        let bad = &out.bad_pages[0];
        assert_eq!(bad.path, "base/5/16384.2");
        assert_eq!(bad.page, 9);
        let mut corrupt = [0u8; BLCKSZ];
        corrupt.copy_from_slice(&rel[9 * BLCKSZ..10 * BLCKSZ]);
        assert_eq!(
            bad.expected,
            page_checksum::pg_checksum_page(&corrupt, 2 * RELSEG_SIZE + 9)
        );
        assert_eq!(bad.found, page_checksum::stored_checksum(&corrupt));
        assert_eq!(out.files[0].size, rel.len() as u64);

        // Without checksums nothing is checked.
        let out = run_on(&mem, entries, config(None)).await;
        assert!(out.bad_pages.is_empty());
    }

    #[test]
    fn a_file_ends_at_its_first_short_block() {
        let mut p = Pending {
            meta: Some((Arc::from("f"), 0o600, 0, 4)),
            received: 4,
            blocks: BTreeMap::new(),
        };
        for (i, len) in [(0, BS), (1, 100), (2, BS), (3, 0)] {
            p.blocks.insert(
                i,
                BlockDone {
                    len,
                    id: Sha256Digest::of(&[i as u8]),
                    bad: vec![],
                },
            );
        }
        let mut out = PipelineOutput::default();
        finish_file(p, BS, &mut out);
        assert_eq!(out.files[0].size, BS + 100);
        assert_eq!(out.files[0].blocks.len(), 2);
        assert_eq!(out.stats.total_bytes, BS + 100);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn upload_failure_stops_the_pipeline() {
        use crate::storage::faulty::FaultyStorage;
        let dir = tempfile::tempdir().unwrap();
        let mut entries = Vec::new();
        for i in 0..40 {
            std::fs::write(
                dir.path().join(format!("f{i}")),
                content(BS as usize * 2, i),
            )
            .unwrap();
            entries.push(file_entry(dir.path(), &format!("f{i}"), None));
        }
        let faulty = Arc::new(FaultyStorage::new(Arc::new(MemoryStorage::new())));
        faulty.fail_puts_permanently(true);
        let storage: DynStorage = faulty.clone();
        let err = run(
            storage,
            entries.into_iter().map(Ok),
            Arc::new(KnownBlocks::default()),
            config(None),
            Arc::new(Progress::default()),
        )
        .await
        .unwrap_err();
        assert!(format!("{err:#}").contains("cannot store block"), "{err:#}");
        // It stopped early instead of compressing everything first.
        assert!(faulty.calls() < 40, "{} calls", faulty.calls());
    }
}
