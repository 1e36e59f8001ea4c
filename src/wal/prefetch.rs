//! The WAL prefetcher: the detached process `wal-fetch` starts (as the hidden command
//! `pgward wal-prefetch <name>`) so that recovery finds the next segments already in the fetch
//! spool, verified.
//!
//! Keeps the `wal.prefetch` segments after the newest one recovery has taken (on the same
//! timeline) in the fetch spool, and exits at the end of the archive or when recovery stops
//! asking. At most one runs per spool (an exclusive lock on `prefetch.lock`).
//!
//! Leftovers: a recovery that stops before the end of the archive (a PITR target) leaves up to
//! `wal.prefetch` segments (129 MiB were measured) that nobody will take. Run in a data
//! directory (as `wal-fetch` starts it), an idle prefetcher waits for recovery to end (its
//! signal files gone) and then removes the files it spooled that recovery did not take; it
//! gives up waiting, removing them too, after [`SPOOL_MAX_AGE`] without progress. Any
//! prefetcher start also removes spool files older than that. A `wal-fetch` that loses a
//! spooled file to this removal fetches the segment from the repository
//! (`fetch::take_from_spool`), so the race costs a download, never recovery.

use crate::context::Context;
use crate::pg::{WalFileName, WalSegmentName};
use crate::repo::identity::RepoIdentity;
use crate::wal::detached;
use crate::wal::fetch::RecoveryMode;
use crate::wal::fetch::{self, NotArchived};
use crate::wal::spool::{FetchSpool, SPOOL_MAX_AGE};
use anyhow::Result;
use std::collections::{HashSet, VecDeque};
use std::path::Path;
use std::time::{Duration, Instant};

/// Downloads in flight at once; WAL replay is single-threaded, so a few keep well ahead of it.
const PARALLEL: usize = 3;
/// The prefetcher exits after this long without a finished download or a consumed segment.
const IDLE_EXIT: Duration = Duration::from_secs(2);
/// How often the spool is re-read to see what recovery has consumed.
const POLL: Duration = Duration::from_millis(20);
/// How often an idle prefetcher waiting for recovery to end looks again.
const IDLE_POLL: Duration = Duration::from_millis(500);

/// What recovery is doing, as seen from the directory the prefetcher runs in (`wal-fetch`'s,
/// which PostgreSQL sets to the data directory).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// Not run in a data directory: nothing tells when recovery ends.
    Unknown,
    /// `recovery.signal` or `standby.signal` is there.
    Running,
    /// The signal files are gone: recovery ended, nothing will take the spooled files.
    Over,
}

impl Recovery {
    pub fn detect(dir: &Path) -> Recovery {
        if !dir.join("global/pg_control").is_file() {
            return Recovery::Unknown;
        }
        match RecoveryMode::detect(dir) {
            RecoveryMode::Manual => Recovery::Over,
            _ => Recovery::Running,
        }
    }
}

/// What an idle prefetcher (nothing to download, nothing consumed) does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleStep {
    Wait,
    /// Leave the spooled files for a later `wal-fetch` (or the age bound).
    ExitKeepingFiles,
    /// Remove the files it spooled that recovery did not take, then exit.
    ExitRemovingFiles,
}

/// Pure: the decision for a prefetcher idle for `idle_for`.
pub fn idle_step(recovery: Recovery, idle_for: Duration) -> IdleStep {
    match recovery {
        Recovery::Over => IdleStep::ExitRemovingFiles,
        _ if idle_for < IDLE_EXIT => IdleStep::Wait,
        Recovery::Unknown => IdleStep::ExitKeepingFiles,
        Recovery::Running if idle_for < SPOOL_MAX_AGE => IdleStep::Wait,
        Recovery::Running => IdleStep::ExitRemovingFiles,
    }
}

/// Keeps a sliding window of `wal.prefetch` segments spooled ahead of the newest segment that
/// recovery has taken: as soon as a download finishes (or recovery consumes a spooled segment),
/// the next one starts. Exits at the end of the archive or after [`IDLE_EXIT`] without progress.
pub async fn run(ctx: &Context, after: WalSegmentName) -> Result<()> {
    let spool = FetchSpool::new(&ctx.spool_dir());
    let Some(lock) = detached::take_lock(&spool.lock_path())? else {
        return Ok(());
    };
    spool.cleanup(None);
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
            // Recovery moves on: segments archived since the end was seen may be there now.
            reached_end = false;
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
        let mut poll = POLL;
        if tasks.is_empty() && (reached_end || last_progress.elapsed() >= IDLE_EXIT) {
            // At the end of the archive recovery is idle at once, as far as downloads go.
            let idle_for = if reached_end {
                last_progress.elapsed().max(IDLE_EXIT)
            } else {
                last_progress.elapsed()
            };
            match idle_step(Recovery::detect(Path::new(".")), idle_for) {
                IdleStep::Wait => poll = IDLE_POLL,
                IdleStep::ExitKeepingFiles => break,
                IdleStep::ExitRemovingFiles => {
                    for &(log, seg) in &spooled {
                        let name = WalFileName::Segment(WalSegmentName {
                            tli: position.tli,
                            log,
                            seg,
                        });
                        spool.remove(&name);
                    }
                    break;
                }
            }
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
            _ = tokio::time::sleep(poll) => {}
        }
    }
    drop(lock);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_prefetcher_waits_for_recovery_to_end_then_removes_its_files() {
        use IdleStep::*;
        use Recovery::*;
        let s = Duration::from_secs;
        for (recovery, idle_for, step) in [
            (Running, s(0), Wait),
            (Unknown, s(0), Wait),
            (Unknown, IDLE_EXIT, ExitKeepingFiles),
            (Running, IDLE_EXIT, Wait),
            (Running, SPOOL_MAX_AGE - s(1), Wait),
            (Running, SPOOL_MAX_AGE, ExitRemovingFiles),
            (Over, s(0), ExitRemovingFiles),
            (Over, IDLE_EXIT, ExitRemovingFiles),
        ] {
            assert_eq!(
                idle_step(recovery, idle_for),
                step,
                "{recovery:?} {idle_for:?}"
            );
        }
    }

    #[test]
    fn recovery_is_read_from_the_signal_files_of_a_data_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Recovery::detect(dir.path()), Recovery::Unknown);
        std::fs::create_dir(dir.path().join("global")).unwrap();
        std::fs::write(dir.path().join("global/pg_control"), b"").unwrap();
        std::fs::write(dir.path().join("recovery.signal"), b"").unwrap();
        assert_eq!(Recovery::detect(dir.path()), Recovery::Running);
        std::fs::remove_file(dir.path().join("recovery.signal")).unwrap();
        assert_eq!(Recovery::detect(dir.path()), Recovery::Over);
    }
}
