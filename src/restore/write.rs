//! Writes files from stored blocks, in parallel, verifying every block.
//!
//! Each block recipe is laid down with positional writes into a file that already has its
//! final length, so blocks can land in any order from any worker. Work is grouped by stored
//! block: a block used in several places (identical catalog files of template databases, say)
//! is fetched and checked once. At most `2 × jobs` groups are in flight (fetching), and at
//! most `jobs` decode and write at once, so memory stays around a few blocks per job whatever
//! the size of the backup.
//!
//! A block whose content does not hash to its id, or an object that is missing or not a valid
//! zstd frame, aborts the restore with the file, the block number and the object key. In delta
//! mode a block whose bytes on disk already hash to its id is neither fetched nor written.
//!
//! Durability is handled at the end ([`finish_files`], [`sync_dirs`]), in parallel, rather
//! than one fsync per write in the hot path.

use crate::codec::{self, Sha256Digest};
use crate::repo::layout;
use crate::repo::manifest::Recipe;
use crate::storage::DynStorage;
use anyhow::{Context as _, Result, anyhow, bail};
use futures::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};
use tokio::sync::Semaphore;

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
    /// Single-piece recipes by stored block, in the order blocks are first used (so writes
    /// go roughly sequentially through the files).
    groups: Vec<(Sha256Digest, Vec<Loc>)>,
    /// Recipes of several pieces: applied in order, one task each.
    composite: Vec<(usize, u64, Recipe)>,
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
}

/// Fetches, verifies and writes every block of `plan`. Files must exist with their final
/// length already.
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
    });
    let groups = (0..shared.plan.groups.len()).map(Task::Group);
    let composite = (0..shared.plan.composite.len()).map(Task::Composite);
    futures::stream::iter(groups.chain(composite))
        .map(|t| {
            let shared = shared.clone();
            async move {
                match t {
                    Task::Group(i) => group(&shared, i).await,
                    Task::Composite(i) => composite_recipe(&shared, i).await,
                }
            }
        })
        .buffer_unordered(jobs * 2)
        .try_collect::<()>()
        .await?;
    // Every task has finished, so this is the only reference left.
    let shared = Arc::try_unwrap(shared).map_err(|_| anyhow!("restore workers still running"))?;
    Ok(shared.plan)
}

#[derive(Debug, Clone, Copy)]
enum Task {
    Group(usize),
    Composite(usize),
}

/// Runs blocking file work on the blocking pool, propagating panics as errors.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| anyhow!("a restore worker failed: {e}"))?
}

async fn group(shared: &Arc<Shared>, i: usize) -> Result<()> {
    let (id, locs) = &shared.plan.groups[i];
    let id = *id;
    let todo: Vec<Loc> = if shared.delta {
        let s = shared.clone();
        let locs = locs.clone();
        blocking(move || {
            let mut todo = Vec::new();
            for loc in locs {
                if already_there(&s, &id, &loc)? {
                    s.progress.blocks_reused.fetch_add(1, Ordering::Relaxed);
                    s.progress.bytes_done.fetch_add(loc.len, Ordering::Relaxed);
                } else {
                    todo.push(loc);
                }
            }
            Ok(todo)
        })
        .await?
    } else {
        locs.clone()
    };
    let Some(first) = todo.first().copied() else {
        return Ok(());
    };
    let others = todo.len() - 1;
    let data = fetch(shared, &id, first.file, first.block, others).await?;
    let _permit = shared.cpu.acquire().await?;
    let s = shared.clone();
    blocking(move || {
        let raw = decode(&s, &id, &data, first.file, first.block, others)?;
        for loc in &todo {
            write_piece(&s, &raw, loc)?;
        }
        Ok(())
    })
    .await
}

async fn composite_recipe(shared: &Arc<Shared>, i: usize) -> Result<()> {
    let (file, block, recipe) = &shared.plan.composite[i];
    let (file, block) = (*file, *block);
    let mut fetched: HashMap<Sha256Digest, bytes::Bytes> = HashMap::new();
    for p in &recipe.pieces {
        if let std::collections::hash_map::Entry::Vacant(slot) = fetched.entry(p.id) {
            slot.insert(fetch(shared, &p.id, file, block, 0).await?);
        }
    }
    let _permit = shared.cpu.acquire().await?;
    let s = shared.clone();
    let recipe = recipe.clone();
    blocking(move || {
        let mut raw: HashMap<Sha256Digest, Vec<u8>> = HashMap::new();
        for p in &recipe.pieces {
            if let std::collections::hash_map::Entry::Vacant(slot) = raw.entry(p.id) {
                slot.insert(decode(&s, &p.id, &fetched[&p.id], file, block, 0)?);
            }
            let loc = Loc {
                file,
                block,
                at: p.at,
                from: p.from,
                len: p.len,
            };
            write_piece(&s, &raw[&p.id], &loc)?;
        }
        Ok(())
    })
    .await
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

fn decode(
    s: &Shared,
    id: &Sha256Digest,
    data: &[u8],
    file: usize,
    block: u64,
    others: usize,
) -> Result<Vec<u8>> {
    let mut raw = Vec::with_capacity(s.plan.block_size as usize);
    codec::decode_into(data, Some(id), &mut raw).map_err(|e| {
        anyhow!(
            "cannot restore {} from {}: {e}\nhint: the repository copy of \
             this block is damaged, and every backup that uses it is affected; check the \
             storage, and restore an older backup that does not share the block with --backup",
            place(s, file, block, others),
            layout::block_key(id)
        )
    })?;
    Ok(raw)
}

fn write_piece(s: &Shared, raw: &[u8], loc: &Loc) -> Result<()> {
    let job = &s.plan.files[loc.file];
    let piece = usize::try_from(loc.from)
        .ok()
        .zip(usize::try_from(loc.len).ok())
        .and_then(|(from, len)| raw.get(from..from.checked_add(len)?));
    let Some(piece) = piece else {
        bail!(
            "the manifest is inconsistent: block {} of {} takes {} bytes from offset {} of a \
             stored block of {} bytes",
            loc.block,
            job.rel,
            loc.len,
            loc.from,
            raw.len()
        );
    };
    let offset = loc.block * s.plan.block_size + loc.at;
    let f = OpenOptions::new()
        .write(true)
        .open(&job.path)
        .with_context(|| format!("cannot open {} for writing", job.path.display()))?;
    f.write_all_at(piece, offset)
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
fn already_there(s: &Shared, id: &Sha256Digest, loc: &Loc) -> Result<bool> {
    if loc.from != 0 {
        return Ok(false);
    }
    let job = &s.plan.files[loc.file];
    let f = File::open(&job.path).with_context(|| format!("cannot open {}", job.path.display()))?;
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

/// Gives every file its mode and modification time, and makes it durable.
pub async fn finish_files(files: Vec<FileJob>, threads: usize) -> Result<()> {
    parallel(files, threads, move |job| {
        let f = OpenOptions::new()
            .write(true)
            .open(&job.path)
            .with_context(|| format!("cannot open {}", job.path.display()))?;
        f.set_permissions(std::fs::Permissions::from_mode(job.mode & 0o7777))
            .with_context(|| format!("cannot set the mode of {}", job.path.display()))?;
        if let Some(t) = u64::try_from(job.mtime)
            .ok()
            .and_then(|s| SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(s)))
        {
            f.set_modified(t)
                .with_context(|| format!("cannot set the time of {}", job.path.display()))?;
        }
        f.sync_all()
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
