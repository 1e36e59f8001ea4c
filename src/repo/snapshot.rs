//! One read model of the repository: what it holds, loaded once, for `info`, the restore
//! planner and everything after them (retention, verify, drills, status).
//!
//! [`Snapshot::load`] reads `repo.json`, then lists `backups/` and `wal/` at the same time
//! (one listing per prefix), reads every complete backup's manifest header and every
//! in-progress marker, and every timeline history file (decoded and sha256-checked, then
//! parsed) — in parallel where it helps. Nothing else is read: WAL segments and blocks are
//! known from their keys. The dumps catalog (`dumps/`, each complete dump's manifest) is
//! loaded beside them, and the pins (`pins/`, each pin read: an unreadable one fails the
//! load, never reads as "not pinned"). Later issues add their prefixes here (leases, drill
//! reports) so that every reader sees the same picture.
//!
//! A history file that cannot be used (corrupt, unparsable, or stored twice with different
//! content) does not stop anything by itself: its timeline is left out of planning, so only
//! its own backups lead to it, and the snapshot carries a warning saying why.

use crate::codec;
use crate::pg::history::TimelineHistory;
use crate::pg::{Timeline, WalFileName};
use crate::repo::catalog::BackupCatalog;
use crate::repo::dumps::DumpCatalog;
use crate::repo::identity::RepoIdentity;
use crate::repo::layout;
use crate::repo::pins::{self, Pin};
use crate::repo::wal_catalog::{StoredWal, WalCatalog};
use crate::restore::plan::ArchiveView;
use crate::storage::Storage;
use anyhow::{Context as _, Result};
use futures::StreamExt;
use std::collections::BTreeMap;

/// What the repository holds.
#[derive(Debug)]
pub struct Snapshot {
    pub identity: RepoIdentity,
    /// Complete backups and in-progress markers.
    pub catalog: BackupCatalog,
    /// Complete logical dumps, and labels of dumps that are running or died.
    pub dumps: DumpCatalog,
    /// Every archived WAL file, by timeline.
    pub wal: WalCatalog,
    pub histories: BTreeMap<Timeline, TimelineHistory>,
    /// Pinned labels (`pgward pin`), by label.
    pub pins: Vec<Pin>,
    /// History files left out, and why.
    pub warnings: Vec<String>,
}

impl Snapshot {
    /// Loads the snapshot of an initialised repository (format checked by `repo.json`).
    pub async fn load(storage: &dyn Storage) -> Result<Snapshot> {
        let identity = RepoIdentity::require(storage).await?;
        load(storage, identity).await
    }

    /// The timeline view the planner takes.
    pub fn view(&self) -> ArchiveView<'_> {
        ArchiveView {
            backups: &self.catalog.backups,
            in_progress: &self.catalog.in_progress,
            histories: &self.histories,
            wal: &self.wal,
        }
    }
}

async fn load(storage: &dyn Storage, identity: RepoIdentity) -> Result<Snapshot> {
    let wal_listing = async {
        storage
            .list(layout::WAL_PREFIX)
            .await
            .with_context(|| format!("cannot list WAL in {}", storage.describe()))
    };
    let (catalog, dumps, listing, pins) = tokio::try_join!(
        BackupCatalog::load(storage),
        DumpCatalog::load(storage),
        wal_listing,
        pins::load_all(storage)
    )?;
    let wal = WalCatalog::from_listing(&listing, identity.wal_segment_size);

    let files: Vec<(Timeline, Vec<StoredWal>)> = wal
        .timelines
        .iter()
        .filter(|(_, tl)| !tl.history.is_empty())
        .map(|(tli, tl)| (*tli, tl.history.clone()))
        .collect();
    let loaded: Vec<(Timeline, std::result::Result<TimelineHistory, String>)> =
        futures::stream::iter(files)
            .map(|(tli, stored)| async move { (tli, load_history(storage, tli, &stored).await) })
            .buffered(8)
            .collect()
            .await;
    let mut histories = BTreeMap::new();
    let mut warnings = Vec::new();
    for (tli, r) in loaded {
        match r {
            Ok(h) => {
                histories.insert(tli, h);
            }
            Err(why) => warnings.push(format!(
                "the history file of timeline {} is not used: {why}; only backups taken on \
                 timeline {} can lead to it",
                tli.0, tli.0
            )),
        }
    }
    Ok(Snapshot {
        identity,
        catalog,
        dumps,
        wal,
        histories,
        pins,
        warnings,
    })
}

async fn load_history(
    storage: &dyn Storage,
    tli: Timeline,
    stored: &[StoredWal],
) -> std::result::Result<TimelineHistory, String> {
    let [one] = stored else {
        return Err(format!(
            "it is archived {} times with different content ({})",
            stored.len(),
            stored
                .iter()
                .map(|s| s.key.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    };
    debug_assert!(matches!(one.name, WalFileName::History(_)));
    let bytes = storage
        .get(&one.key)
        .await
        .map_err(|e| format!("cannot read {}: {e}", one.key))?;
    let raw =
        codec::decode_to_vec(&bytes, Some(&one.sha256)).map_err(|e| format!("{}: {e}", one.key))?;
    let text = String::from_utf8(raw).map_err(|_| format!("{} is not text", one.key))?;
    TimelineHistory::parse(tli, &text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Sha256Digest;
    use crate::storage::memory::MemoryStorage;
    use bytes::Bytes;

    async fn put_history(s: &MemoryStorage, tli: u32, text: &[u8]) {
        let name = WalFileName::parse(&format!("{tli:08X}.history")).unwrap();
        let enc = codec::encode_bytes(text, 3).unwrap();
        s.put(&layout::wal_key(&name, &enc.sha256), Bytes::from(enc.data))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn loads_histories_and_skips_bad_ones() {
        let s = MemoryStorage::new();
        let id = RepoIdentity {
            format_version: layout::FORMAT_VERSION,
            system_identifier: 1,
            pg_major: 15,
            wal_segment_size: 16 << 20,
            block_size: 1 << 20,
            created_at: String::new(),
            created_by: String::new(),
        };
        put_history(&s, 2, b"1\t0/5000060\tno recovery target specified\n").await;
        put_history(&s, 3, b"garbage\n").await;
        put_history(&s, 4, b"1\t0/5000060\tx\n").await;
        put_history(&s, 4, b"1\t0/5000061\tx\n").await;
        // Stored under the hash of other bytes: decoding catches it.
        let name = WalFileName::parse("00000005.history").unwrap();
        let enc = codec::encode_bytes(b"1\t0/1\tx\n", 3).unwrap();
        s.put(
            &layout::wal_key(&name, &Sha256Digest::of(b"other")),
            Bytes::from(enc.data),
        )
        .await
        .unwrap();

        let a = load(&s, id).await.unwrap();
        assert_eq!(
            a.histories.keys().copied().collect::<Vec<_>>(),
            vec![Timeline(2)]
        );
        assert_eq!(a.warnings.len(), 3, "{:?}", a.warnings);
        let all = a.warnings.join("\n");
        assert!(
            all.contains("timeline 3") && all.contains("numeric parent"),
            "{all}"
        );
        assert!(
            all.contains("timeline 4") && all.contains("2 times"),
            "{all}"
        );
        assert!(
            all.contains("timeline 5") && all.contains("corrupt"),
            "{all}"
        );
        assert!(a.catalog.backups.is_empty());
    }
}
