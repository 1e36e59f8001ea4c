//! The local spool under `wal.spool_dir`: push-ahead records and prefetched segments.
//!
//! Invariant for push records: a record is written only after its object is durable in the
//! repository, and it never lets a push succeed on its own — the caller re-hashes the local file
//! and trusts the record only when hash and size match.
//!
//! Invariant for prefetched files: they are named `<wal name>-<sha256>-<crc32c>` (the sha256 of
//! the object they were decoded from, verified while decoding; the crc32c of the decoded bytes)
//! and are checked against the crc32c before use, so a torn or damaged spool file is fetched
//! afresh, never handed to recovery.

use crate::codec::Sha256Digest;
use crate::fsutil;
use crate::pg::{WalFileName, WalSegmentName};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Push records older than this are forgotten (PostgreSQL would have asked long ago).
const PUSH_RECORD_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// How often a call waiting for another pusher's claim tries again.
const CLAIM_POLL: Duration = Duration::from_millis(2);
/// Prefetched files nobody asked for within this time are removed (by any `wal-fetch` or
/// prefetcher start, or by the prefetcher that spooled them). Recovery takes a spooled segment
/// within seconds of its predecessor; ten minutes is a stopped recovery, not a slow one.
pub const SPOOL_MAX_AGE: Duration = Duration::from_secs(10 * 60);

/// What push-ahead stored for one WAL file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushRecord {
    pub name: String,
    pub sha256: Sha256Digest,
    pub size: u64,
    pub key: String,
    /// crc32c of the bytes that were stored, computed in the same pass as `sha256`. When it is
    /// present the later `wal-push` recognises its file by crc32c and size (≈ 1.6 ms for a
    /// 16 MiB segment instead of ≈ 9 ms for sha256); records without it are checked by sha256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crc32c: Option<u32>,
}

/// The right to push one WAL file: an exclusive `flock` on `push/<name>.claim`, held by
/// whichever process pushes the file (a `wal-push` call or the background pusher). The kernel
/// drops it when that process dies, so a crashed pusher never blocks PostgreSQL's own call.
/// The file itself is not removed while in use (removing a locked file lets a second process
/// lock a new file of the same name); `cleanup_before` removes old ones.
pub struct PushClaim {
    file: File,
}

impl PushClaim {
    /// Whether a pusher that held this claim before reported the file archived.
    pub fn already_done(&self) -> bool {
        self.file.metadata().is_ok_and(|m| m.len() > 0)
    }

    /// Notes in the claim that the file is durably archived, so that a background pusher that
    /// claims it later (after PostgreSQL has marked it done and may recycle it) leaves it alone.
    pub fn mark_done(&mut self) {
        let _ = self.file.write_all(b"archived\n");
    }
}

#[derive(Clone)]
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

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Held by the running background pusher (at most one per spool).
    pub fn pusher_lock_path(&self) -> PathBuf {
        self.dir.join("pusher.lock")
    }

    /// Where the background pusher logs.
    pub fn pusher_log_path(&self) -> PathBuf {
        self.dir.join("pusher.log")
    }

    fn claim_path(&self, name: &WalFileName) -> Result<(PathBuf, File)> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create spool directory {}", self.dir.display()))?;
        let path = self.dir.join(format!("{name}.claim"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        Ok((path, file))
    }

    /// The claim on `name` if nobody else holds it now.
    pub fn try_claim(&self, name: &WalFileName) -> Option<PushClaim> {
        let (_, file) = self.claim_path(name).ok()?;
        file.try_lock().ok()?;
        Some(PushClaim { file })
    }

    /// The claim on `name`, waiting while another process pushes it. Polls rather than blocking
    /// in `flock`: a blocked thread could not be cancelled at `wal.timeout`, and the runtime
    /// waits for blocking threads before the process exits.
    pub async fn claim(&self, name: &WalFileName) -> Result<PushClaim> {
        let (path, file) = self.claim_path(name)?;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(PushClaim { file }),
                Err(std::fs::TryLockError::WouldBlock) => {
                    tokio::time::sleep(CLAIM_POLL).await;
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(e).with_context(|| format!("cannot lock {}", path.display()));
                }
            }
        }
    }

    /// Drops records and claims PostgreSQL will not ask about any more: segments of the same
    /// timeline older than the one being archived now (the archiver goes oldest first), and old
    /// ones.
    pub fn cleanup_before(&self, current: &WalFileName) {
        let Some(cur) = current.segment() else { return };
        let records_and_claims = list_named(&self.dir, |f| {
            f.strip_suffix(".json").or_else(|| f.strip_suffix(".claim"))
        });
        for (path, name) in records_and_claims {
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

#[derive(Clone)]
pub struct FetchSpool {
    dir: PathBuf,
}

/// A prefetched file found in the spool.
#[derive(Debug, Clone)]
pub struct SpooledFile {
    pub path: PathBuf,
    pub sha256: Sha256Digest,
    /// `None` for files spooled by versions that named them without it.
    pub crc32c: Option<u32>,
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

    pub fn path_for(&self, name: &WalFileName, sha: &Sha256Digest, crc32c: u32) -> PathBuf {
        self.dir.join(format!("{name}-{sha}-{crc32c:08x}"))
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
            let Some(rest) = fname.strip_prefix(&prefix) else {
                continue;
            };
            let (sha, crc32c) = match rest.split_once('-') {
                Some((sha, crc)) if crc.len() == 8 => match u32::from_str_radix(crc, 16) {
                    Ok(crc) => (sha, Some(crc)),
                    Err(_) => continue,
                },
                Some(_) => continue,
                None => (rest, None),
            };
            if let Some(sha) = Sha256Digest::parse_hex(sha) {
                return Some(SpooledFile {
                    path: entry.path(),
                    sha256: sha,
                    crc32c,
                });
            }
        }
        None
    }

    /// Removes the spooled copy of `name`, if any (a `wal-fetch` taking it meanwhile falls back
    /// to the repository).
    pub fn remove(&self, name: &WalFileName) {
        if let Some(file) = self.find(name) {
            let _ = std::fs::remove_file(file.path);
        }
    }

    /// Segments present in the spool.
    pub fn segments(&self) -> Vec<WalSegmentName> {
        list_named(&self.dir, |f| f.split_once('-').map(|(n, _)| n))
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
                .split_once('-')
                .and_then(|(n, _)| WalSegmentName::parse(n).ok())
                .zip(upto)
                .is_some_and(|(seg, up)| (seg.log, seg.seg) <= (up.log, up.seg));
            if consumed || older_than(&path, SPOOL_MAX_AGE) {
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
                    crc32c: None,
                })
                .unwrap();
        }
        let r = spool.read(&seg("000000010000000000000005")).unwrap();
        assert_eq!(r.sha256, Sha256Digest::of(b"000000010000000000000005"));
        for n in ["000000010000000000000003", "000000010000000000000005"] {
            spool.try_claim(&seg(n)).unwrap().mark_done();
        }
        let claim_file = |n: &str| dir.path().join(format!("push/{n}.claim"));
        assert!(claim_file("000000010000000000000003").exists());
        spool.cleanup_before(&seg("000000010000000000000004"));
        assert!(!spool.has(&seg("000000010000000000000003")));
        assert!(spool.has(&seg("000000010000000000000005")));
        assert!(!claim_file("000000010000000000000003").exists());
        let kept = spool.try_claim(&seg("000000010000000000000005")).unwrap();
        assert!(kept.already_done(), "a newer claim keeps its mark");
    }

    #[test]
    fn fetch_spool_find_and_cleanup() {
        let dir = tempfile::tempdir().unwrap();
        let spool = FetchSpool::new(dir.path());
        std::fs::create_dir_all(spool.dir()).unwrap();
        let sha = Sha256Digest::of(b"x");
        for n in ["000000010000000000000003", "000000010000000000000004"] {
            std::fs::write(spool.path_for(&seg(n), &sha, 0x0abc_def1), b"x").unwrap();
        }
        let found = spool.find(&seg("000000010000000000000004")).unwrap();
        assert_eq!(found.sha256, sha);
        assert_eq!(found.crc32c, Some(0x0abc_def1));
        assert!(
            found
                .path
                .ends_with(format!("000000010000000000000004-{sha}-0abcdef1"))
        );
        assert!(spool.find(&seg("000000010000000000000005")).is_none());
        let up = WalSegmentName::parse("000000020000000000000003").unwrap();
        spool.cleanup(Some(&up));
        assert_eq!(spool.segments().len(), 1);
    }
}
