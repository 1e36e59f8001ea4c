//! A read model of the archived WAL, rebuilt from one listing of `wal/`.
//!
//! Groups stored files by timeline and turns segment numbers into contiguous ranges and the gaps
//! between them. Two stored objects under one WAL name with different hashes are a conflict
//! (the archive saw two histories under one name) and are reported, never resolved silently.

use crate::codec::Sha256Digest;
use crate::pg::{Lsn, Timeline, WalFileName, WalSegmentName};
use crate::repo::layout;
use crate::storage::ObjectMeta;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;

/// One stored WAL object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredWal {
    pub name: WalFileName,
    pub sha256: Sha256Digest,
    pub key: String,
    pub stored_bytes: u64,
    /// When the store says the object was written (about when the file was archived); `None`
    /// when the store does not say.
    pub archived_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Default)]
pub struct TimelineWal {
    /// Segment number → objects stored under that segment's name (normally exactly one).
    pub segments: BTreeMap<u64, Vec<StoredWal>>,
    pub partials: Vec<StoredWal>,
    pub backup_files: Vec<StoredWal>,
    pub history: Vec<StoredWal>,
}

#[derive(Debug)]
pub struct WalCatalog {
    pub seg_size: u64,
    pub timelines: BTreeMap<Timeline, TimelineWal>,
    /// Keys under `wal/` that are not WAL keys of this format (`verify` counts them).
    pub foreign: Vec<ObjectMeta>,
}

/// A run of consecutive segments (`first..=last`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SegmentRange {
    pub first: String,
    pub last: String,
    pub segments: u64,
    /// WAL covered: from the start of `first` to the end of `last`.
    pub start_lsn: Lsn,
    pub end_lsn: Lsn,
}

impl WalCatalog {
    /// Builds the catalog from a listing of `wal/` (foreign keys are ignored).
    pub fn from_listing(objects: &[ObjectMeta], seg_size: u64) -> WalCatalog {
        let mut timelines: BTreeMap<Timeline, TimelineWal> = BTreeMap::new();
        let mut foreign = Vec::new();
        for obj in objects {
            let Some((name, sha256)) = layout::parse_wal_key(&obj.key) else {
                foreign.push(obj.clone());
                continue;
            };
            let stored = StoredWal {
                name: name.clone(),
                sha256,
                key: obj.key.clone(),
                stored_bytes: obj.size,
                archived_at: obj.last_modified,
            };
            let tl = timelines.entry(name.timeline()).or_default();
            match name {
                WalFileName::Segment(seg) => {
                    if seg.is_valid_for(seg_size) {
                        tl.segments
                            .entry(seg.segno(seg_size))
                            .or_default()
                            .push(stored);
                    }
                }
                WalFileName::Partial(_) => tl.partials.push(stored),
                WalFileName::Backup { .. } => tl.backup_files.push(stored),
                WalFileName::History(_) => tl.history.push(stored),
            }
        }
        WalCatalog {
            seg_size,
            timelines,
            foreign,
        }
    }

    /// Contiguous ranges of archived segments of one timeline, oldest first.
    pub fn ranges(&self, tli: Timeline) -> Vec<SegmentRange> {
        let Some(tl) = self.timelines.get(&tli) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut run: Option<(u64, u64)> = None;
        for &segno in tl.segments.keys() {
            run = match run {
                Some((first, last)) if segno == last + 1 => Some((first, segno)),
                Some((first, last)) => {
                    out.push(self.range(tli, first, last));
                    Some((segno, segno))
                }
                None => Some((segno, segno)),
            };
        }
        if let Some((first, last)) = run {
            out.push(self.range(tli, first, last));
        }
        out
    }

    /// The missing runs between archived ranges of one timeline.
    pub fn gaps(&self, tli: Timeline) -> Vec<SegmentRange> {
        self.ranges(tli)
            .windows(2)
            .map(|w| {
                let after = self.segno_of(&w[0].last) + 1;
                let before = self.segno_of(&w[1].first) - 1;
                self.range(tli, after, before)
            })
            .collect()
    }

    /// WAL names stored more than once with different content.
    pub fn conflicts(&self) -> Vec<&[StoredWal]> {
        self.timelines
            .values()
            .flat_map(|tl| tl.segments.values())
            .filter(|objs| objs.len() > 1)
            .map(|v| v.as_slice())
            .collect()
    }

    /// Whether a segment is archived.
    pub fn has_segment(&self, name: &WalSegmentName) -> bool {
        self.timelines
            .get(&name.tli)
            .is_some_and(|tl| tl.segments.contains_key(&name.segno(self.seg_size)))
    }

    fn segno_of(&self, name: &str) -> u64 {
        WalSegmentName::parse(name)
            .map(|n| n.segno(self.seg_size))
            .unwrap_or_default()
    }

    fn range(&self, tli: Timeline, first: u64, last: u64) -> SegmentRange {
        let f = WalSegmentName::from_segno(tli, first, self.seg_size);
        let l = WalSegmentName::from_segno(tli, last, self.seg_size);
        SegmentRange {
            first: f.to_string(),
            last: l.to_string(),
            segments: last - first + 1,
            start_lsn: f.start_lsn(self.seg_size),
            end_lsn: Lsn::from_segment(last + 1, self.seg_size),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: u64 = 16 << 20;

    fn obj(name: &str, content: &[u8]) -> ObjectMeta {
        let n = WalFileName::parse(name).unwrap();
        ObjectMeta {
            key: layout::wal_key(&n, &Sha256Digest::of(content)),
            size: 10,
            last_modified: None,
        }
    }

    #[test]
    fn ranges_and_gaps_cross_log_boundaries() {
        let objs = vec![
            obj("0000000100000000000000FE", b"a"),
            obj("0000000100000000000000FF", b"b"),
            obj("000000010000000100000000", b"c"),
            obj("000000010000000100000003", b"d"),
            obj("000000010000000100000004", b"e"),
            obj("00000002.history", b"h"),
            obj("000000020000000100000004", b"f"),
            obj("000000010000000100000004.partial", b"p"),
            ObjectMeta {
                key: "wal/junk".into(),
                size: 1,
                last_modified: None,
            },
        ];
        let cat = WalCatalog::from_listing(&objs, SEG);
        let r = cat.ranges(Timeline(1));
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].first, "0000000100000000000000FE");
        assert_eq!(r[0].last, "000000010000000100000000");
        assert_eq!(r[0].segments, 3);
        assert_eq!(r[0].end_lsn, "1/1000000".parse().unwrap());
        let g = cat.gaps(Timeline(1));
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].first, "000000010000000100000001");
        assert_eq!(g[0].last, "000000010000000100000002");
        assert_eq!(g[0].segments, 2);
        assert_eq!(cat.ranges(Timeline(2)).len(), 1);
        assert_eq!(cat.timelines[&Timeline(2)].history.len(), 1);
        assert_eq!(cat.timelines[&Timeline(1)].partials.len(), 1);
        assert!(cat.conflicts().is_empty());
        assert_eq!(cat.foreign.len(), 1);
        assert!(cat.has_segment(&WalSegmentName::parse("000000010000000100000003").unwrap()));
        assert!(!cat.has_segment(&WalSegmentName::parse("000000010000000100000001").unwrap()));
    }

    #[test]
    fn two_contents_under_one_name_are_a_conflict() {
        let objs = vec![
            obj("000000010000000000000003", b"a"),
            obj("000000010000000000000003", b"b"),
        ];
        let cat = WalCatalog::from_listing(&objs, SEG);
        assert_eq!(cat.conflicts().len(), 1);
    }
}
