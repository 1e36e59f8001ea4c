//! Leases under `locks/`: one backup at a time per repository (and, later, expire/gc against
//! backups and drills).
//!
//! A lease is an object written with put-if-absent. It names its holder (host, pid, purpose,
//! time), so a refusal can say who holds it. A lease left by a process that died on this same
//! host is recognised (the pid no longer exists) and taken over; a lease from another host is
//! never broken automatically.

use crate::repo::layout;
use crate::storage::{DynStorage, PutOutcome};
use anyhow::{Context, Result, bail};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseInfo {
    pub host: String,
    pub pid: u32,
    pub purpose: String,
    pub acquired_at: String,
}

/// A held lease. Call [`Lease::release`] when done; a lease that is dropped unreleased stays
/// until a later run on this host sees its process is gone.
#[derive(Debug)]
pub struct Lease {
    storage: DynStorage,
    key: String,
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
        };
        let body = Bytes::from(serde_json::to_vec_pretty(&me)?);
        for _ in 0..2 {
            match storage
                .put_if_absent(&key, body.clone())
                .await
                .with_context(|| format!("cannot write lock {key}"))?
            {
                PutOutcome::Written => {
                    return Ok(Lease {
                        storage,
                        key,
                        released: false,
                    });
                }
                PutOutcome::AlreadyExists => {}
            }
            let holder: Option<LeaseInfo> = match storage.get(&key).await {
                Ok(b) => serde_json::from_slice(&b).ok(),
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e).with_context(|| format!("cannot read lock {key}")),
            };
            match holder {
                Some(h) if h.host == me.host && !process_alive(h.pid) => {
                    tracing::warn!(
                        lock = %key, pid = h.pid,
                        "taking over a lock left by a process that no longer exists"
                    );
                    storage.delete(&key).await?;
                }
                Some(h) if h.host == me.host && h.pid == me.pid => {
                    bail!("lock {key} is already held by this process")
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
        self.storage
            .delete(&self.key)
            .await
            .with_context(|| format!("cannot remove lock {}", self.key))
    }
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
        a.release().await.unwrap();
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
}
