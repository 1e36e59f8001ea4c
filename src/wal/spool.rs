//! The local spool under `wal.spool_dir`: push-ahead records and prefetched segments.
//!
//! Invariant for push records: a record is written only after its object is durable in the
//! repository, and it never lets a push succeed on its own — the caller re-hashes the local file
//! and trusts the record only when hash and size match.
//!
//! Invariant for prefetched files: they are named `<wal name>-<sha256>` and are hashed again
//! before use, so a torn or tampered spool file is fetched afresh, never handed to recovery.

use crate::codec::Sha256Digest;
use crate::fsutil;
use crate::pg::{WalFileName, WalSegmentName};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Push records older than this are forgotten (PostgreSQL would have asked long ago).
const PUSH_RECORD_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Prefetched files nobody asked for within this time are removed.
const FETCH_FILE_MAX_AGE: Duration = Duration::from_secs(15 * 60);

/// What push-ahead stored for one WAL file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushRecord {
    pub name: String,
    pub sha256: Sha256Digest,
    pub size: u64,
    pub key: String,
}

pub struct PushSpool {
    dir: PathBuf,
}

impl PushSpool {
    pub fn new(spool_root: &Path) -> PushSpool {
        PushSpool {
            dir: spool_root.join("push"),
        }
    }

    fn path(&self, name: &WalFileName) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    pub fn read(&self, name: &WalFileName) -> Option<PushRecord> {
        let bytes = std::fs::read(self.path(name)).ok()?;
        let rec: PushRecord = serde_json::from_slice(&bytes).ok()?;
        (rec.name == name.to_string()).then_some(rec)
    }

    pub fn write(&self, rec: &PushRecord) -> Result<()> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create spool directory {}", self.dir.display()))?;
        let name = WalFileName::parse(&rec.name)?;
        fsutil::write_atomic(&self.path(&name), &serde_json::to_vec(rec)?)
            .with_context(|| format!("cannot write spool record in {}", self.dir.display()))
    }

    pub fn remove(&self, name: &WalFileName) {
        let _ = std::fs::remove_file(self.path(name));
    }

    /// Whether a record exists (without trusting it).
    pub fn has(&self, name: &WalFileName) -> bool {
        self.path(name).exists()
    }

    /// Drops records PostgreSQL will not ask about any more: segments of the same timeline
    /// older than the one being archived now (the archiver goes oldest first), and old records.
    pub fn cleanup_before(&self, current: &WalFileName) {
        let Some(cur) = current.segment() else { return };
        for (path, name) in list_named(&self.dir, |f| f.strip_suffix(".json")) {
            let stale = match name.segment() {
                Some(seg) => seg.tli == cur.tli && seg < cur,
                None => false,
            };
            if stale || older_than(&path, PUSH_RECORD_MAX_AGE) {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

pub struct FetchSpool {
    dir: PathBuf,
}

/// A prefetched file found in the spool.
#[derive(Debug, Clone)]
pub struct SpooledFile {
    pub path: PathBuf,
    pub sha256: Sha256Digest,
}

impl FetchSpool {
    pub fn new(spool_root: &Path) -> FetchSpool {
        FetchSpool {
            dir: spool_root.join("fetch"),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn lock_path(&self) -> PathBuf {
        self.dir.join("prefetch.lock")
    }

    pub fn path_for(&self, name: &WalFileName, sha: &Sha256Digest) -> PathBuf {
        self.dir.join(format!("{name}-{sha}"))
    }

    /// The spooled copy of `name`, if any.
    pub fn find(&self, name: &WalFileName) -> Option<SpooledFile> {
        let prefix = format!("{name}-");
        let rd = std::fs::read_dir(&self.dir).ok()?;
        for entry in rd.flatten() {
            let fname = entry.file_name();
            let Some(fname) = fname.to_str() else {
                continue;
            };
            if let Some(sha) = fname
                .strip_prefix(&prefix)
                .and_then(Sha256Digest::parse_hex)
            {
                return Some(SpooledFile {
                    path: entry.path(),
                    sha256: sha,
                });
            }
        }
        None
    }

    /// Segments present in the spool.
    pub fn segments(&self) -> Vec<WalSegmentName> {
        list_named(&self.dir, |f| f.rsplit_once('-').map(|(n, _)| n))
            .into_iter()
            .filter_map(|(_, n)| match n {
                WalFileName::Segment(s) => Some(s),
                _ => None,
            })
            .collect()
    }

    /// Removes what recovery has consumed or skipped (segments up to `upto`'s position, on any
    /// timeline: (log, seg) order is WAL position order whatever the segment size),
    /// files nobody used for a while, and temp files of killed prefetchers.
    pub fn cleanup(&self, upto: Option<&WalSegmentName>) {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in rd.flatten() {
            let path = entry.path();
            let fname = entry.file_name();
            let Some(fname) = fname.to_str() else {
                continue;
            };
            if fname == "prefetch.lock" {
                continue;
            }
            let consumed = fname
                .rsplit_once('-')
                .and_then(|(n, _)| WalSegmentName::parse(n).ok())
                .zip(upto)
                .is_some_and(|(seg, up)| (seg.log, seg.seg) <= (up.log, up.seg));
            if consumed || older_than(&path, FETCH_FILE_MAX_AGE) {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

/// Files in `dir` whose names (after `strip`) parse as WAL file names.
fn list_named(dir: &Path, strip: impl Fn(&str) -> Option<&str>) -> Vec<(PathBuf, WalFileName)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| {
            let fname = e.file_name();
            let name = WalFileName::parse(strip(fname.to_str()?)?).ok()?;
            Some((e.path(), name))
        })
        .collect()
}

fn older_than(path: &Path, age: Duration) -> bool {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .is_some_and(|d| d > age)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(n: &str) -> WalFileName {
        WalFileName::parse(n).unwrap()
    }

    #[test]
    fn push_records_round_trip_and_cleanup() {
        let dir = tempfile::tempdir().unwrap();
        let spool = PushSpool::new(dir.path());
        for n in ["000000010000000000000003", "000000010000000000000005"] {
            spool
                .write(&PushRecord {
                    name: n.into(),
                    sha256: Sha256Digest::of(n.as_bytes()),
                    size: 1,
                    key: "k".into(),
                })
                .unwrap();
        }
        let r = spool.read(&seg("000000010000000000000005")).unwrap();
        assert_eq!(r.sha256, Sha256Digest::of(b"000000010000000000000005"));
        spool.cleanup_before(&seg("000000010000000000000004"));
        assert!(!spool.has(&seg("000000010000000000000003")));
        assert!(spool.has(&seg("000000010000000000000005")));
    }

    #[test]
    fn fetch_spool_find_and_cleanup() {
        let dir = tempfile::tempdir().unwrap();
        let spool = FetchSpool::new(dir.path());
        std::fs::create_dir_all(spool.dir()).unwrap();
        let sha = Sha256Digest::of(b"x");
        for n in ["000000010000000000000003", "000000010000000000000004"] {
            std::fs::write(spool.path_for(&seg(n), &sha), b"x").unwrap();
        }
        let found = spool.find(&seg("000000010000000000000004")).unwrap();
        assert_eq!(found.sha256, sha);
        assert!(spool.find(&seg("000000010000000000000005")).is_none());
        let up = WalSegmentName::parse("000000020000000000000003").unwrap();
        spool.cleanup(Some(&up));
        assert_eq!(spool.segments().len(), 1);
    }
}
