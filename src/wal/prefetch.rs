//! The WAL prefetcher: the detached process `wal-fetch` starts (as the hidden command
//! `pgward wal-prefetch <name>`) so that recovery finds the next segments already in the fetch
//! spool, verified.
//!
//! Keeps the `wal.prefetch` segments after the newest one recovery has taken (on the same
//! timeline) in the fetch spool, and exits at the end of the archive or when recovery stops
//! asking. At most one runs per spool (an exclusive lock on `prefetch.lock`).

use crate::context::Context;
use crate::pg::{WalFileName, WalSegmentName};
use crate::repo::identity::RepoIdentity;
use crate::wal::detached;
use crate::wal::fetch::{self, NotArchived};
use crate::wal::spool::FetchSpool;
use anyhow::Result;
use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

/// Downloads in flight at once; WAL replay is single-threaded, so a few keep well ahead of it.
const PARALLEL: usize = 3;
/// The prefetcher exits after this long without a finished download or a consumed segment.
const IDLE_EXIT: Duration = Duration::from_secs(2);
/// How often the spool is re-read to see what recovery has consumed.
const POLL: Duration = Duration::from_millis(20);

/// Keeps a sliding window of `wal.prefetch` segments spooled ahead of the newest segment that
/// recovery has taken: as soon as a download finishes (or recovery consumes a spooled segment),
/// the next one starts. Exits at the end of the archive or after [`IDLE_EXIT`] without progress.
pub async fn run(ctx: &Context, after: WalSegmentName) -> Result<()> {
    let spool = FetchSpool::new(&ctx.spool_dir());
    let Some(lock) = detached::take_lock(&spool.lock_path())? else {
        return Ok(());
    };
    let id = RepoIdentity::require(ctx.storage.as_ref()).await?;
    let seg_size = id.wal_segment_size;
    let window = ctx.config.wal.prefetch;
    let storage = ctx.storage.clone();
    let pos = |s: &WalSegmentName| (s.log, s.seg);

    // Segments after recovery's position that were scheduled (spooled, in flight or failed),
    // in WAL order; recovery's position is the newest segment known to be consumed.
    let mut scheduled: VecDeque<WalSegmentName> = VecDeque::new();
    // Scheduled segments known to be in the spool (downloaded by us or found there).
    let mut spooled: HashSet<(u32, u32)> = HashSet::new();
    let mut position = after;
    let mut last = after;
    let mut reached_end = false;
    let mut last_progress = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        // What recovery took since the last look: a segment we saw in the spool is gone.
        let present: HashSet<(u32, u32)> = spool.segments().iter().map(pos).collect();
        let consumed: Vec<(u32, u32)> = spooled.difference(&present).copied().collect();
        for c in consumed {
            spooled.remove(&c);
            if c > pos(&position) {
                position = WalSegmentName {
                    tli: position.tli,
                    log: c.0,
                    seg: c.1,
                };
            }
            last_progress = Instant::now();
        }
        while scheduled.front().is_some_and(|s| pos(s) <= pos(&position)) {
            scheduled.pop_front();
        }
        // Fill the window.
        while !reached_end && tasks.len() < PARALLEL && scheduled.len() < window {
            last = last.next(seg_size);
            scheduled.push_back(last);
            if present.contains(&pos(&last)) {
                spooled.insert(pos(&last));
                continue;
            }
            let name = WalFileName::Segment(last);
            let storage = storage.clone();
            let spool = spool.clone();
            tasks.spawn(async move {
                let res = async {
                    let (key, sha, _) = fetch::locate(storage.as_ref(), &name).await?;
                    let data = storage.get(&key).await?;
                    tokio::task::spawn_blocking(move || {
                        let decoded = fetch::decode_beside(&data, &sha, spool.dir())?;
                        let dest = spool.path_for(&name, &sha, decoded.crc32c);
                        decoded.persist(&dest)
                    })
                    .await??;
                    Ok::<_, anyhow::Error>(())
                }
                .await;
                (last, res)
            });
        }
        if tasks.is_empty() && (reached_end || last_progress.elapsed() >= IDLE_EXIT) {
            break;
        }
        tokio::select! {
            Some(joined) = tasks.join_next() => {
                let (seg, res) = joined?;
                match res {
                    Ok(()) => {
                        spooled.insert(pos(&seg));
                        last_progress = Instant::now();
                    }
                    Err(e) if e.is::<NotArchived>() => reached_end = true,
                    Err(e) => tracing::warn!("prefetch failed: {e:#}"),
                }
            }
            _ = tokio::time::sleep(POLL) => {}
        }
    }
    drop(lock);
    Ok(())
}
