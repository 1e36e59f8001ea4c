//! The last condition of a complete backup: every WAL segment from the backup's start to its
//! stop is in the repository. `pg_backup_stop(wait_for_archive => true)` only says PostgreSQL's
//! `archive_command` reported success; a misconfigured command (`/bin/true`, another
//! repository) also reports success. So the repository is checked, by listing, until the
//! segments are there or `backup.wal_wait_timeout` runs out.

use crate::pg::{Lsn, Timeline, WalFileName, WalSegmentName};
use crate::repo::layout;
use crate::repo::wal_catalog::WalCatalog;
use crate::storage::DynStorage;
use anyhow::{Context, Result, bail};
use std::time::Duration;
use tokio::time::Instant;

/// Segments a restore of the backup needs: from the one holding `start` to the one holding the
/// last byte before `stop` (inclusive), on `tli`.
pub fn required_segments(
    tli: Timeline,
    start: Lsn,
    stop: Lsn,
    seg_size: u64,
) -> Vec<WalSegmentName> {
    let first = start.segment_no(seg_size);
    let last = Lsn(stop.0.saturating_sub(1))
        .segment_no(seg_size)
        .max(first);
    (first..=last)
        .map(|segno| WalSegmentName::from_segno(tli, segno, seg_size))
        .collect()
}

/// The longest common prefix of the keys of `first` and `last`: one listing of it covers the
/// whole range without listing the timeline's entire history.
fn listing_prefix(first: &WalSegmentName, last: &WalSegmentName) -> String {
    let a = layout::wal_name_prefix(&WalFileName::Segment(*first));
    let b = layout::wal_name_prefix(&WalFileName::Segment(*last));
    let common = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
    a[..common].to_string()
}

/// Polls the repository until every segment in `needed` is stored, or fails after `timeout`
/// naming the missing ones.
pub async fn wait_for_segments(
    storage: &DynStorage,
    needed: &[WalSegmentName],
    seg_size: u64,
    timeout: Duration,
) -> Result<()> {
    let (Some(first), Some(last)) = (needed.first(), needed.last()) else {
        return Ok(());
    };
    let prefix = listing_prefix(first, last);
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(100);
    loop {
        let listing = storage
            .list(&prefix)
            .await
            .with_context(|| format!("cannot list WAL in {}", storage.describe()))?;
        let catalog = WalCatalog::from_listing(&listing, seg_size);
        let missing: Vec<&WalSegmentName> =
            needed.iter().filter(|s| !catalog.has_segment(s)).collect();
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            const SHOWN: usize = 10;
            let mut names: Vec<String> =
                missing.iter().take(SHOWN).map(|s| s.to_string()).collect();
            if missing.len() > SHOWN {
                names.push(format!("and {} more", missing.len() - SHOWN));
            }
            bail!(
                "the backup's WAL did not reach the repository within backup.wal_wait_timeout \
                 ({}): missing {} (the backup needs {first} to {last}); no manifest was written, \
                 so this backup does not exist\n\
                 hint: PostgreSQL reported these segments archived, so archive_command is not \
                 storing them in {}: check that it runs `pgward --config <this file> wal-push %p`",
                humantime::format_duration(timeout),
                names.join(", "),
                storage.describe()
            );
        }
        tracing::debug!(
            missing = missing.len(),
            "waiting for the backup's WAL to be archived"
        );
        let left = deadline.saturating_duration_since(Instant::now());
        tokio::time::sleep(pause.min(left)).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Sha256Digest;
    use crate::storage::Storage;
    use crate::storage::memory::MemoryStorage;
    use bytes::Bytes;
    use std::sync::Arc;

    const SEG: u64 = 16 << 20;

    fn names(v: &[WalSegmentName]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_range_ends_before_the_stop_lsn() {
        let t = Timeline(1);
        assert_eq!(
            names(&required_segments(t, Lsn(0x200_0028), Lsn(0x200_0138), SEG)),
            ["000000010000000000000002"]
        );
        // Stopping exactly at a segment boundary needs nothing of the next segment.
        assert_eq!(
            names(&required_segments(t, Lsn(0x200_0028), Lsn(0x400_0000), SEG)),
            ["000000010000000000000002", "000000010000000000000003"]
        );
        assert_eq!(
            names(&required_segments(
                Timeline(2),
                Lsn(0xFF00_0000),
                Lsn(0x1_0100_0010),
                SEG
            )),
            [
                "0000000200000000000000FF",
                "000000020000000100000000",
                "000000020000000100000001"
            ]
        );
    }

    #[test]
    fn listing_prefix_is_narrow() {
        let a = WalSegmentName::parse("000000010000000000000002").unwrap();
        let b = WalSegmentName::parse("000000010000000000000005").unwrap();
        assert_eq!(
            listing_prefix(&a, &a),
            "wal/00000001/00000000/000000010000000000000002-"
        );
        assert_eq!(
            listing_prefix(&a, &b),
            "wal/00000001/00000000/00000001000000000000000"
        );
        // Across a log directory the listing covers the timeline from there on.
        let c = WalSegmentName::parse("000000010000000100000000").unwrap();
        assert_eq!(listing_prefix(&a, &c), "wal/00000001/0000000");
    }

    async fn put(mem: &MemoryStorage, name: &str) {
        let name = WalFileName::parse(name).unwrap();
        let key = layout::wal_key(&name, &Sha256Digest::of(name.to_string().as_bytes()));
        mem.put(&key, Bytes::from_static(b"x")).await.unwrap();
    }

    #[tokio::test]
    async fn waits_for_late_segments_and_names_missing_ones() {
        let mem = Arc::new(MemoryStorage::new());
        let storage: DynStorage = mem.clone();
        let needed = required_segments(Timeline(1), Lsn(0x200_0028), Lsn(0x300_0100), SEG);
        put(&mem, "000000010000000000000002").await;
        let err = wait_for_segments(&storage, &needed, SEG, Duration::from_millis(300))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing 000000010000000000000003"), "{err}");
        assert!(!err.contains("missing 000000010000000000000002"), "{err}");

        let late_mem = mem.clone();
        let late = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            put(&late_mem, "000000010000000000000003").await;
        });
        wait_for_segments(&storage, &needed, SEG, Duration::from_secs(10))
            .await
            .unwrap();
        late.await.unwrap();
    }
}
