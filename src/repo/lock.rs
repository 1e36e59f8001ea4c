//! Leases under `locks/`: one backup at a time per repository (and, later, expire/gc against
//! backups and drills). This is the one lease mechanism; everything that must not run twice
//! takes one.
//!
//! A lease is an object created with put-if-absent. It names its holder (host, pid, purpose,
//! time) so a refusal can say who holds it, and carries a random nonce so its bytes are unique:
//! - a retried create that finds exactly its own bytes took the lease (the first attempt
//!   committed but its answer was lost), and after every create the lease is read back — on a
//!   store without atomic conditional writes two creators can both be told "written", and only
//!   the one whose bytes are there holds it;
//! - a lease left by a process that died on this same host (its pid no longer exists) is taken
//!   over, but only by one taker: the takers race to create a takeover marker named after the
//!   stale lease's hash, and only the winner deletes the stale lease (after checking it is
//!   still the stale one) before creating its own. A plain delete would let two takers of one
//!   stale lease delete each other's fresh leases and both run. Conditional deletes (S3
//!   `If-Match`) would do as well, but not every S3-compatible store has them, while
//!   put-if-absent is already required. A lease from another host is never broken
//!   automatically.
//! - release deletes the lease only while it still holds this lease's bytes.

use crate::codec::Sha256Digest;
use crate::repo::layout;
use crate::storage::{self, Created, DynStorage};
use anyhow::{Context, Result, bail};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseInfo {
    pub host: String,
    pub pid: u32,
    pub purpose: String,
    pub acquired_at: String,
    /// Random, so that every lease's bytes are unique (leases of older versions lack it).
    #[serde(default)]
    pub nonce: String,
}

/// A held lease. Call [`Lease::release`] when done; a lease that is dropped unreleased stays
/// until a later run on this host sees its process is gone.
#[derive(Debug)]
pub struct Lease {
    storage: DynStorage,
    key: String,
    body: Bytes,
    released: bool,
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".to_string())
}

fn process_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

impl Lease {
    /// Takes the lease `name`, or explains who holds it.
    pub async fn acquire(storage: DynStorage, name: &str, purpose: &str) -> Result<Lease> {
        let key = layout::lock_key(name);
        let me = LeaseInfo {
            host: hostname(),
            pid: std::process::id(),
            purpose: purpose.to_string(),
            acquired_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            nonce: format!("{:016x}", rand::random::<u64>()),
        };
        let body = Bytes::from(serde_json::to_vec_pretty(&me)?);
        for _ in 0..3 {
            let found = storage::create(storage.as_ref(), &key, body.clone())
                .await
                .with_context(|| format!("cannot write lock {key}"))?;
            let holder_bytes = match found {
                Created::Written | Created::AlreadyOurs => {
                    // Read back: only the creator whose bytes are there holds the lease.
                    match storage.get(&key).await {
                        Ok(now) if now == body => {
                            return Ok(Lease {
                                storage,
                                key,
                                body,
                                released: false,
                            });
                        }
                        Ok(other) => other,
                        Err(e) if e.is_not_found() => continue,
                        Err(e) => return Err(e).with_context(|| format!("cannot read lock {key}")),
                    }
                }
                Created::Taken(other) => other,
            };
            let holder: Option<LeaseInfo> = serde_json::from_slice(&holder_bytes).ok();
            match holder {
                Some(h) if h.host == me.host && !process_alive(h.pid) => {
                    take_over(&storage, name, &key, &holder_bytes, &body, h.pid).await?;
                }
                Some(h) => bail!(
                    "another {} is running: lock {key} is held by pid {} on {} since {}\n\
                     hint: wait for it to finish; if that process is gone (e.g. its host died), \
                     delete {key} from the repository",
                    h.purpose,
                    h.pid,
                    h.host,
                    h.acquired_at
                ),
                None => bail!(
                    "lock {key} exists but cannot be read\nhint: if no other pgward is running, delete it"
                ),
            }
        }
        bail!("cannot take lock {key}: it keeps reappearing (another process is racing for it)")
    }

    pub async fn release(mut self) -> Result<()> {
        self.released = true;
        match self.storage.get(&self.key).await {
            Ok(now) if now == self.body => {}
            Ok(_) => bail!(
                "lock {} is no longer ours (another process took it over)\nhint: check that no \
                 two pgward processes ran the same work at once",
                self.key
            ),
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e).with_context(|| format!("cannot read lock {}", self.key)),
        }
        self.storage
            .delete(&self.key)
            .await
            .with_context(|| format!("cannot remove lock {}", self.key))
    }
}

/// Removes the stale lease `stale` (of a dead process) so the caller can create its own — if
/// this caller wins the takeover marker; a loser is refused. The marker is removed afterwards:
/// a taker that wins it later finds the stale lease gone and deletes nothing.
async fn take_over(
    storage: &DynStorage,
    name: &str,
    key: &str,
    stale: &Bytes,
    mine: &Bytes,
    dead_pid: u32,
) -> Result<()> {
    let marker = layout::lock_takeover_key(name, &Sha256Digest::of(stale));
    let won = storage::create(storage.as_ref(), &marker, mine.clone())
        .await
        .with_context(|| format!("cannot write {marker}"))?;
    if let Created::Taken(_) = won {
        bail!(
            "lock {key} was left by pid {dead_pid}, which no longer exists, and another process is \
             taking it over right now\nhint: run again in a moment; if this repeats, no other \
             pgward runs and {marker} stays, delete {marker} (a taker died midway)"
        );
    }
    let result = async {
        match storage.get(key).await {
            Ok(now) if now == *stale => {
                tracing::warn!(
                    lock = %key, pid = dead_pid,
                    "taking over a lock left by a process that no longer exists"
                );
                storage.delete(key).await?;
            }
            // Already replaced or removed: nothing of the dead process's to delete.
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        Ok(())
    }
    .await
    .with_context(|| format!("cannot take over lock {key}"));
    let _ = storage.delete(&marker).await;
    result
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.released {
            tracing::debug!(lock = %self.key, "lease dropped without release");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::MemoryStorage;
    use std::sync::Arc;

    #[tokio::test]
    async fn second_holder_is_refused_and_release_frees() {
        let s: DynStorage = Arc::new(MemoryStorage::new());
        let a = Lease::acquire(s.clone(), "backup", "backup").await.unwrap();
        // Pretend another live process on another host holds it.
        let other = LeaseInfo {
            host: "elsewhere".into(),
            pid: 1,
            purpose: "backup".into(),
            acquired_at: "t".into(),
            nonce: String::new(),
        };
        s.put(
            &layout::lock_key("backup"),
            Bytes::from(serde_json::to_vec(&other).unwrap()),
        )
        .await
        .unwrap();
        let err = Lease::acquire(s.clone(), "backup", "backup")
            .await
            .unwrap_err();
        assert!(format!("{err}").contains("elsewhere"), "{err}");
        // `a` lost its lease: releasing refuses to delete the other holder's.
        assert!(a.release().await.is_err());
        s.delete(&layout::lock_key("backup")).await.unwrap();
        let b = Lease::acquire(s.clone(), "backup", "backup").await.unwrap();
        b.release().await.unwrap();
    }

    #[tokio::test]
    async fn stale_lease_on_this_host_is_taken_over() {
        let s: DynStorage = Arc::new(MemoryStorage::new());
        let dead = LeaseInfo {
            host: hostname(),
            pid: u32::MAX - 1,
            purpose: "backup".into(),
            acquired_at: "t".into(),
            nonce: String::new(),
        };
        s.put(
            &layout::lock_key("backup"),
            Bytes::from(serde_json::to_vec(&dead).unwrap()),
        )
        .await
        .unwrap();
        let l = Lease::acquire(s.clone(), "backup", "backup").await.unwrap();
        l.release().await.unwrap();
    }

    fn dead_lease() -> Bytes {
        let dead = LeaseInfo {
            host: hostname(),
            pid: u32::MAX - 1,
            purpose: "backup".into(),
            acquired_at: "t".into(),
            nonce: "dead".into(),
        };
        Bytes::from(serde_json::to_vec(&dead).unwrap())
    }

    /// Two takers of one stale lease, each pausing before its deletes as `pauses` says: at most
    /// one may hold the lease (with a plain delete, the slower one deleted the faster one's
    /// fresh lease and both ran).
    #[tokio::test]
    async fn two_takers_of_one_stale_lease_never_both_hold_it() {
        use crate::storage::faulty::FaultyStorage;
        use std::time::Duration;
        let ms = Duration::from_millis;
        for pauses in [(ms(0), ms(150)), (ms(150), ms(0)), (ms(100), ms(100))] {
            let mem: DynStorage = Arc::new(MemoryStorage::new());
            mem.put(&layout::lock_key("backup"), dead_lease())
                .await
                .unwrap();
            let taker = |pause| {
                let f = FaultyStorage::new(mem.clone());
                f.delay("delete", "locks/", pause);
                Arc::new(f) as DynStorage
            };
            let (a, b) = tokio::join!(
                Lease::acquire(taker(pauses.0), "backup", "backup"),
                Lease::acquire(taker(pauses.1), "backup", "backup")
            );
            let held: Vec<Lease> = [a, b].into_iter().filter_map(|r| r.ok()).collect();
            assert_eq!(
                held.len(),
                1,
                "{pauses:?}: exactly one taker holds the lease"
            );
            let winner = held.into_iter().next().unwrap();
            assert_eq!(
                mem.get(&winner.key).await.unwrap(),
                winner.body,
                "{pauses:?}"
            );
            winner.release().await.unwrap();
            assert!(mem.list("locks/").await.unwrap().is_empty(), "{pauses:?}");
        }
    }

    /// The create committed but its answer was lost: the retry finds its own bytes and holds
    /// the lease; release removes it.
    #[tokio::test]
    async fn a_lost_answer_still_takes_the_lease() {
        use crate::storage::faulty::FaultyStorage;
        use crate::storage::retry::{self, RetryPolicy};
        let mem: DynStorage = Arc::new(MemoryStorage::new());
        let faulty = Arc::new(FaultyStorage::new(mem.clone()));
        faulty.lose_acks("locks/", 1);
        let s = retry::wrap(faulty.clone(), RetryPolicy::default());
        let l = Lease::acquire(s, "backup", "backup").await.unwrap();
        assert_eq!(faulty.injected_failures(), 1);
        l.release().await.unwrap();
        assert!(mem.list("locks/").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn release_leaves_a_lease_that_is_no_longer_ours() {
        let s: DynStorage = Arc::new(MemoryStorage::new());
        let l = Lease::acquire(s.clone(), "backup", "backup").await.unwrap();
        let key = layout::lock_key("backup");
        s.put(&key, dead_lease()).await.unwrap();
        let err = l.release().await.unwrap_err();
        assert!(format!("{err:#}").contains("no longer ours"), "{err:#}");
        assert_eq!(s.get(&key).await.unwrap(), dead_lease());
    }
}
