//! `pgward init --upgrade`: converts a format-1 repository to format 2 (WAL keys sharded by
//! log number, see `repo::layout`).
//!
//! The protocol, chosen so that it is safe to interrupt at any point and to run again:
//! 1. Move every format-1 WAL key: copy it to its format-2 key (`copy_if_absent`: a hard link
//!    locally, a server-side copy on S3; no WAL passes through pgward), check that the new
//!    object is there with the old one's size, then delete the old key. An interrupted move
//!    leaves both keys — the next run finds the new one present and only deletes the old one.
//!    Nothing is ever deleted before its copy is confirmed.
//! 2. Write `repo.json` with format version 2. Until then every command of this pgward refuses
//!    the repository (so no reader can miss a key that is not yet moved), and `wal-push` fails
//!    with the upgrade hint, which PostgreSQL retries: WAL waits in `pg_wal`, none is lost.
//! 3. Move again: a pgward of format 1 (an old binary as `archive_command`) may have pushed
//!    between the first listing and the new `repo.json`; after it, such binaries refuse the
//!    repository too.
//!
//! History files keep their keys (format 2 did not change them), backups and blocks too.

use crate::repo::identity::RepoIdentity;
use crate::repo::layout::{self, FORMAT_VERSION, REPO_JSON};
use crate::storage::{DynStorage, PutOutcome};
use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

/// Keys moved at once.
const PARALLEL: usize = 16;

/// What an upgrade did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Upgraded {
    /// The format the repository was in.
    pub from_version: u32,
    /// WAL keys moved to their format-2 place.
    pub moved: u64,
    /// Bytes of those objects (not copied through pgward).
    pub bytes: u64,
}

/// Upgrades the repository behind `storage` to the current format; a no-op (apart from
/// moving stray format-1 keys) when it is already current.
pub async fn upgrade(storage: &DynStorage) -> Result<Upgraded> {
    let Some(mut id) = RepoIdentity::load_any_format(storage.as_ref()).await? else {
        bail!(
            "repository {} is not initialised (no {REPO_JSON}); there is nothing to upgrade\n\
             hint: run `pgward init` to create it",
            storage.describe()
        );
    };
    if id.format_version > FORMAT_VERSION {
        bail!(
            "repository {} is in format version {}, newer than this pgward (format \
             {FORMAT_VERSION})\nhint: use the pgward version that wrote the repository",
            storage.describe(),
            id.format_version
        );
    }
    let mut done = Upgraded {
        from_version: id.format_version,
        ..Upgraded::default()
    };
    move_v1_wal(storage, &mut done).await?;
    if id.format_version < FORMAT_VERSION {
        id.format_version = FORMAT_VERSION;
        let body = serde_json::to_vec_pretty(&id)?;
        storage
            .put(REPO_JSON, Bytes::from(body))
            .await
            .with_context(|| format!("cannot write {REPO_JSON} to {}", storage.describe()))?;
        move_v1_wal(storage, &mut done).await?;
    }
    Ok(done)
}

/// Moves every format-1 WAL key to its format-2 key.
async fn move_v1_wal(storage: &DynStorage, done: &mut Upgraded) -> Result<()> {
    let listing = storage
        .list(layout::WAL_PREFIX)
        .await
        .with_context(|| format!("cannot list WAL in {}", storage.describe()))?;
    let old: Vec<(String, String, u64)> = listing
        .into_iter()
        .filter_map(|o| {
            let (name, sha) = layout::parse_v1_wal_key(&o.key)?;
            Some((o.key, layout::wal_key(&name, &sha), o.size))
        })
        .collect();
    let moved: Vec<u64> = futures::stream::iter(old)
        .map(|(from, to, size)| async move { move_one(storage, &from, &to, size).await })
        .buffer_unordered(PARALLEL)
        .try_collect()
        .await?;
    done.moved += moved.len() as u64;
    done.bytes += moved.iter().sum::<u64>();
    Ok(())
}

async fn move_one(storage: &DynStorage, from: &str, to: &str, size: u64) -> Result<u64> {
    let outcome = storage
        .copy_if_absent(from, to)
        .await
        .with_context(|| format!("cannot copy {from} to {to}"))?;
    let copied = storage
        .head(to)
        .await
        .with_context(|| format!("cannot check {to} after copying {from}"))?;
    match copied {
        Some(meta) if meta.size == size => {}
        Some(meta) if outcome == PutOutcome::AlreadyExists => {
            // Same WAL name and sha256 of the original bytes, compressed differently: both
            // are good copies; keep the one in the new place.
            tracing::info!(
                from,
                to,
                old = size,
                new = meta.size,
                "already moved, recompressed"
            );
        }
        other => bail!(
            "after copying {from} ({size} bytes) to {to}, the store shows {}; the old key is \
             kept\nhint: run `pgward init --upgrade` again",
            other.map_or("nothing".to_string(), |m| format!("{} bytes", m.size))
        ),
    }
    storage
        .delete(from)
        .await
        .with_context(|| format!("cannot remove {from} after moving it to {to}"))?;
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Sha256Digest;
    use crate::pg::WalFileName;
    use crate::storage::Storage;
    use crate::storage::faulty::FaultyStorage;
    use crate::storage::memory::MemoryStorage;
    use std::sync::Arc;

    fn identity(version: u32) -> RepoIdentity {
        RepoIdentity {
            format_version: version,
            system_identifier: 7,
            pg_major: 15,
            wal_segment_size: 16 << 20,
            block_size: 1 << 20,
            created_at: "2026-12-01T00:00:00Z".into(),
            created_by: "test".into(),
        }
    }

    /// A format-1 repository with `n` segments on timeline 1 crossing a log directory, and a
    /// history file.
    async fn v1_repo(s: &dyn Storage, n: u64) -> Vec<(WalFileName, Sha256Digest)> {
        s.put(
            REPO_JSON,
            Bytes::from(serde_json::to_vec(&identity(1)).unwrap()),
        )
        .await
        .unwrap();
        let mut names = Vec::new();
        for i in 0..n {
            let segno = 0xF0 + i;
            let name =
                WalFileName::parse(&format!("00000001{:08X}{:08X}", segno >> 8, segno & 0xFF))
                    .unwrap();
            let sha = Sha256Digest::of(name.to_string().as_bytes());
            s.put(
                &layout::v1_wal_key(&name, &sha),
                Bytes::from(name.to_string()),
            )
            .await
            .unwrap();
            names.push((name, sha));
        }
        let hist = WalFileName::parse("00000002.history").unwrap();
        let sha = Sha256Digest::of(b"h");
        s.put(&layout::v1_wal_key(&hist, &sha), Bytes::from_static(b"h"))
            .await
            .unwrap();
        names.push((hist, sha));
        names
    }

    async fn assert_format_2(s: &dyn Storage, names: &[(WalFileName, Sha256Digest)]) {
        let id = RepoIdentity::require(s).await.unwrap();
        assert_eq!(id.format_version, FORMAT_VERSION);
        let keys: Vec<String> = s
            .list("wal/")
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        let mut want: Vec<String> = names
            .iter()
            .map(|(n, sha)| layout::wal_key(n, sha))
            .collect();
        want.sort();
        assert_eq!(keys, want);
        for (n, sha) in names {
            let body = s.get(&layout::wal_key(n, sha)).await.unwrap();
            if !matches!(n, WalFileName::History(_)) {
                assert_eq!(body, Bytes::from(n.to_string()));
            }
        }
    }

    #[tokio::test]
    async fn a_format_1_repository_is_refused_until_upgraded() {
        let mem: DynStorage = Arc::new(MemoryStorage::new());
        let names = v1_repo(mem.as_ref(), 20).await;
        let err = RepoIdentity::require(mem.as_ref()).await.unwrap_err();
        assert!(
            format!("{err:#}").contains("pgward init --upgrade"),
            "{err:#}"
        );

        let done = upgrade(&mem).await.unwrap();
        assert_eq!((done.from_version, done.moved), (1, 20));
        assert_format_2(mem.as_ref(), &names).await;

        let again = upgrade(&mem).await.unwrap();
        assert_eq!(
            (again.from_version, again.moved),
            (FORMAT_VERSION, 0),
            "idempotent"
        );
        assert_format_2(mem.as_ref(), &names).await;
    }

    #[tokio::test]
    async fn an_interrupted_upgrade_converges_when_run_again() {
        let mem = Arc::new(MemoryStorage::new());
        let faulty = Arc::new(FaultyStorage::new(mem.clone()));
        let s: DynStorage = faulty.clone();
        let names = v1_repo(s.as_ref(), 40).await;
        // Interrupt after some copies: deletes start failing, then copies too.
        faulty.fail_op_next("delete", 1);
        assert!(upgrade(&s).await.is_err());
        faulty.fail_op_next("delete", 0);
        assert_eq!(
            RepoIdentity::load_any_format(s.as_ref())
                .await
                .unwrap()
                .unwrap()
                .format_version,
            1,
            "repo.json is only rewritten after every key moved"
        );
        faulty.fail_op_next("copy_if_absent", 1);
        assert!(upgrade(&s).await.is_err());
        faulty.fail_op_next("copy_if_absent", 0);
        let done = upgrade(&s).await.unwrap();
        assert!(done.moved > 0);
        assert_format_2(s.as_ref(), &names).await;
    }
}
