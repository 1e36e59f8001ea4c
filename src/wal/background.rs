//! The background pusher: keeps compressing and storing the archiver's backlog while
//! PostgreSQL's own `wal-push` calls return as soon as their file is recorded.
//!
//! Why a separate process: a `wal-push` that pushed its backlog inside the call had to wait for
//! the whole batch before returning, and the calls that followed only verified, so the cores
//! idled half of the time. The background pusher keeps one encode per core running and a
//! window of `wal.push_ahead` files stored ahead of the archiver.
//!
//! Safety rules (see `PushClaim`):
//! - a file is read only while its pusher holds the file's claim and the file is still
//!   `.ready`, so PostgreSQL cannot mark it done and recycle it in the meantime (its own call
//!   for the file waits on the claim);
//! - a file some call already archived (its claim says so) is never read again;
//! - a record is written only after the object is durable, and it is a hint: the later call
//!   checks the local file against it and that the object exists.

use crate::pg::WalFileName;
use crate::wal::push::{self, Pusher};
use crate::wal::spool::PushSpool;
use anyhow::anyhow;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The pusher exits after this long without starting or finishing a push and without
/// PostgreSQL taking a record: the archiver is idle or caught up.
pub const IDLE_EXIT: Duration = Duration::from_secs(2);
/// How often `archive_status` and the spool are looked at again.
const POLL: Duration = Duration::from_millis(10);

/// What the background pusher is allowed to do.
pub struct Limits {
    /// Files stored ahead and not yet taken by PostgreSQL's calls, plus those in flight.
    pub window: usize,
    /// Pushes running at once (one single-threaded encode each).
    pub parallel: usize,
    /// The longest one push may take (`wal.timeout`).
    pub per_push: Duration,
}

/// Pushes `.ready` segments of `wal_dir` until the archiver is idle or caught up.
pub async fn run(pusher: &Pusher, spool: &PushSpool, wal_dir: &Path, limits: &Limits) {
    // Pushes running now, by task.
    let mut in_flight: HashMap<tokio::task::Id, WalFileName> = HashMap::new();
    // Failed once in this run: left to PostgreSQL's own call, which reports the error.
    let mut failed: HashSet<WalFileName> = HashSet::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut last_progress = Instant::now();
    let mut recorded_before = 0usize;
    // Records and claims of files PostgreSQL has finished with (the calls that verify records
    // do not clean up).
    if let Some((_, oldest)) = push::ready_segments(wal_dir).first() {
        spool.cleanup_before(oldest);
    }
    loop {
        // Only the oldest `.ready` files concern the window: looking stops a little beyond it
        // (some candidates are refused: the one PostgreSQL's call is pushing, files archived but
        // not yet marked done), so a long backlog costs one directory read per poll, not a stat
        // per file.
        let mut recorded = 0usize;
        let mut candidates = Vec::new();
        for (path, name) in push::ready_segments(wal_dir) {
            if recorded + in_flight.len() + candidates.len() >= limits.window + limits.parallel {
                break;
            }
            if in_flight.values().any(|n| *n == name) || failed.contains(&name) {
                continue;
            }
            if spool.has(&name) {
                recorded += 1;
            } else {
                candidates.push((path, name));
            }
        }
        if recorded < recorded_before {
            // PostgreSQL's calls took records: the archiver is moving.
            last_progress = Instant::now();
        }
        recorded_before = recorded;
        for (path, name) in candidates {
            if tasks.len() >= limits.parallel || recorded + in_flight.len() >= limits.window {
                break;
            }
            if let Some(task) = start(pusher, spool, wal_dir, path, &name, limits.per_push) {
                in_flight.insert(tasks.spawn(task).id(), name);
                last_progress = Instant::now();
            }
        }
        if tasks.is_empty() && last_progress.elapsed() >= IDLE_EXIT {
            break;
        }
        tokio::select! {
            Some(joined) = tasks.join_next_with_id() => {
                last_progress = Instant::now();
                let (id, res) = match joined {
                    Ok((id, res)) => (id, res),
                    // A panicked push: PostgreSQL's own call pushes the file.
                    Err(e) => (e.id(), Err(anyhow!("the push task failed: {e}"))),
                };
                let Some(name) = in_flight.remove(&id) else { continue };
                if let Err(e) = res {
                    tracing::warn!(wal = %name, "push-ahead failed (PostgreSQL's own call will retry it): {e:#}");
                    failed.insert(name);
                }
            }
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

type PushTask =
    std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<push::PushReport>> + Send>>;

/// A push of `name`, if it can be claimed and still needs archiving.
fn start(
    pusher: &Pusher,
    spool: &PushSpool,
    wal_dir: &Path,
    path: PathBuf,
    name: &WalFileName,
    per_push: Duration,
) -> Option<PushTask> {
    // Held by PostgreSQL's call for this file (or another pusher): that one archives it.
    let mut claim = spool.try_claim(name)?;
    // Checked under the claim: PostgreSQL cannot mark it done while we hold it, unless a call
    // archived it just before we claimed it, which the claim records.
    if claim.already_done() || !push::still_ready(wal_dir, name) || spool.has(name) {
        return None;
    }
    let (pusher, spool, name) = (pusher.clone(), spool.clone(), name.clone());
    Some(Box::pin(async move {
        let res = match tokio::time::timeout(per_push, pusher.push_one(&path, &name)).await {
            Ok(r) => r,
            Err(_) => Err(anyhow!(
                "did not finish within wal.timeout ({})",
                humantime::format_duration(per_push)
            )),
        };
        if res.is_ok() {
            claim.mark_done();
        }
        // Recorded before the claim is released: PostgreSQL's call for this file may be waiting
        // on the claim, and must find the record when it gets it.
        let res = res.and_then(|report| {
            // Logged before the record exists, so the log is complete once a call used it.
            pusher.events.emit(&report.event(true));
            if !push::record_pushed(&spool, &report) {
                anyhow::bail!("stored, but the push-ahead record could not be written");
            }
            Ok(report)
        });
        drop(claim);
        res
    }))
}
