//! Fetching one WAL file back: from the prefetch spool when it holds a verified copy, else from
//! the repository. The destination only ever appears complete and verified (temp file, rename).
//!
//! **Recovery must never end early.** PostgreSQL reads every `restore_command` exit status from
//! 1 to 125 as "this file does not exist" and, in archive recovery, ends recovery there and
//! promotes; only a status above 125 (or a signal) stops it with FATAL (`RestoreArchivedFile`
//! in `src/backend/access/transam/xlogarchive.c`,
//! <https://www.postgresql.org/docs/15/runtime-config-wal.html#GUC-RESTORE-COMMAND>). So a fetch
//! has three answers:
//! - *restored* (exit 0);
//! - *not archived* ([`NotArchived`], exit 1, quiet): the listing succeeded, no object exists
//!   for the name, and — for a segment — no later segment of its timeline is archived. One
//!   listing call that starts after the name tells (`start-after`, a few keys), whatever the
//!   archive's size. A timeline switch is not a hole: PostgreSQL 13+ asks for a timeline's
//!   segments only from the segment where that timeline begins;
//! - *failure* ([`FetchFailure`] or any other error): a corrupt object, a store that stays
//!   unreachable, a hole, a destination that cannot be written, an unusable repository.
//!   `main.rs` exits [`EXIT_STOP_RECOVERY`] in archive recovery and 1 on a standby (which must
//!   keep retrying and may stream instead), see [`exit_status`].
//!
//! A hole can be transient while a primary is still archiving with push-ahead (segments stored
//! out of order): a standby then logs the error and retries; a restore stops and can simply be
//! started again.
//!
//! Nothing here is fsynced (but for the rare copy across file systems, which goes through the
//! durable `fsutil::write_atomic`). A restored file need not survive a crash: PostgreSQL makes the files
//! it keeps durable itself (`KeepFileRestoredFromArchive` renames them with `durable_rename`),
//! and after a crash recovery asks for the rest again. A spool file torn by a crash fails its
//! crc32c check and is fetched again. pgBackRest's archive-get does not fsync either.

use crate::codec::{self, DecodeError, Sha256Digest};
use crate::events::Event;
use crate::fsutil;
use crate::pg::WalFileName;
use crate::repo::layout;
use crate::storage::{ObjectMeta, Storage};
use crate::wal::spool::{FetchSpool, SpooledFile};
use anyhow::{Context, Result, bail};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A WAL file that is not in the archive. `wal-fetch` exits 1 for it without a loud error:
/// recovery asks for files that do not exist as a matter of course (the next segment at the
/// end of the archive, history files of timelines that were never created).
#[derive(Debug, thiserror::Error)]
#[error("{0} is not in the archive")]
pub struct NotArchived(pub String);

/// A fetch that failed in a way recovery must not read as "not archived".
#[derive(Debug, thiserror::Error)]
pub enum FetchFailure {
    #[error(
        "wal-fetch of {name}: the stored object {key} is corrupt: {why}\nhint: restore the \
         object from another copy (`zstd -d` must give content whose sha256 is in its key), or \
         choose a recovery target before {name}"
    )]
    Corrupt {
        name: WalFileName,
        key: String,
        why: String,
    },
    #[error(
        "wal-fetch of {name}: it is missing from the archive, but later WAL of its timeline is \
         archived ({next_key}): a hole, not the end of the archive\nhint: restore {name} from \
         another copy (a standby's or the primary's pg_wal) into the repository with `pgward \
         wal-push`, or choose a recovery target before {name}"
    )]
    Hole { name: WalFileName, next_key: String },
    #[error(
        "wal-fetch of {name}: the repository did not answer: {why}\nhint: check that {store} \
         is reachable and the credentials work, then start the server again"
    )]
    Unreachable {
        name: WalFileName,
        store: String,
        why: String,
    },
    #[error(
        "wal-fetch of {name}: cannot write {dest}: {why}\nhint: check free space and permissions"
    )]
    Unwritable {
        name: WalFileName,
        dest: String,
        why: String,
    },
}

/// How PostgreSQL runs `restore_command`, told by the signal files in its working directory
/// (the data directory). It decides the exit status of a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryMode {
    /// `recovery.signal`: archive recovery (a restore, PITR), which an exit 1 would end.
    ArchiveRecovery,
    /// `standby.signal` (it wins over `recovery.signal`, as in PostgreSQL): a standby retries
    /// a failed file and may stream instead.
    Standby,
    /// Neither: run by hand or by a tool.
    Manual,
}

impl RecoveryMode {
    pub fn detect(data_dir: &Path) -> RecoveryMode {
        if data_dir.join("standby.signal").exists() {
            RecoveryMode::Standby
        } else if data_dir.join("recovery.signal").exists() {
            RecoveryMode::ArchiveRecovery
        } else {
            RecoveryMode::Manual
        }
    }
}

/// A failed fetch during archive recovery: above 125, so PostgreSQL stops recovery (FATAL)
/// instead of ending it and promoting; the server can be started again once the cause is fixed.
pub const EXIT_STOP_RECOVERY: u8 = 200;

/// The three answers, as PostgreSQL gets them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Restored,
    NotArchived,
    Failed,
}

impl Outcome {
    /// The answer a `wal-fetch` error gives: only [`NotArchived`] means "not archived".
    pub fn of_error(e: &anyhow::Error) -> Outcome {
        if e.is::<NotArchived>() {
            Outcome::NotArchived
        } else {
            Outcome::Failed
        }
    }
}

/// The exit status `wal-fetch` gives PostgreSQL.
pub fn exit_status(outcome: Outcome, mode: RecoveryMode) -> u8 {
    match (outcome, mode) {
        (Outcome::Restored, _) => 0,
        (Outcome::NotArchived, _) => 1,
        (Outcome::Failed, RecoveryMode::ArchiveRecovery) => EXIT_STOP_RECOVERY,
        (Outcome::Failed, RecoveryMode::Standby | RecoveryMode::Manual) => 1,
    }
}

/// The error line of a failed fetch: the error, what it means for the server, then the hint.
pub fn failure_message(e: &anyhow::Error, mode: RecoveryMode) -> String {
    let text = crate::output::error_text(e);
    let consequence = match mode {
        RecoveryMode::ArchiveRecovery => {
            "recovery stops here (exit 200) instead of ending early and promoting without the \
             rest of the WAL; start the server again once the cause is fixed"
        }
        RecoveryMode::Standby => {
            "the standby keeps retrying (or streams) until the WAL can be fetched"
        }
        RecoveryMode::Manual => return text,
    };
    match text.split_once("\nhint: ") {
        Some((what, hint)) => format!("{what}\n{consequence}\nhint: {hint}"),
        None => format!("{text}\n{consequence}"),
    }
}

/// How many keys after a missing segment are looked at to tell a hole from the end: the first
/// WAL key decides; a few more only step over foreign objects.
const LATER_KEYS: usize = 4;

/// Whether a missing `name` is the end of the archive (`None`) or a hole (`Some(key)` of the
/// first later WAL file of its timeline), given the first keys listed after it. Pure.
pub fn hole_after(name: &WalFileName, later: &[ObjectMeta]) -> Option<String> {
    let WalFileName::Segment(seg) = name else {
        // History files are probed for timelines that were never created.
        return None;
    };
    later.iter().find_map(|o| {
        let (found, _) = layout::parse_wal_key(&o.key)?;
        let next = found.segment()?;
        (next.tli == seg.tli && (next.log, next.seg) > (seg.log, seg.seg)).then(|| o.key.clone())
    })
}

/// For a name with no object: [`NotArchived`] at the end of the archive, a [`FetchFailure`]
/// for a hole or when the store cannot tell.
async fn absent(storage: &dyn Storage, name: &WalFileName) -> anyhow::Error {
    let WalFileName::Segment(seg) = name else {
        return NotArchived(name.to_string()).into();
    };
    let (prefix, start_after) = layout::wal_after_segment(seg);
    match storage.list_after(&prefix, &start_after, LATER_KEYS).await {
        Ok(later) => match hole_after(name, &later) {
            None => NotArchived(name.to_string()).into(),
            Some(next_key) => FetchFailure::Hole {
                name: name.clone(),
                next_key,
            }
            .into(),
        },
        Err(e) => FetchFailure::Unreachable {
            name: name.clone(),
            store: storage.describe(),
            why: format!("cannot tell whether it is the end of the archive or a hole: {e}"),
        }
        .into(),
    }
}

#[derive(Debug, Clone)]
pub struct FetchReport {
    pub name: WalFileName,
    pub raw_bytes: u64,
    pub stored_bytes: u64,
    pub elapsed: Duration,
    pub from_spool: bool,
}

impl FetchReport {
    /// What this fetch reports ([`Event::WalFetched`]).
    pub fn event(&self) -> Event {
        Event::WalFetched {
            wal: self.name.to_string(),
            bytes: self.raw_bytes,
            stored_bytes: self.stored_bytes,
            ms: self.elapsed.as_millis() as u64,
            from_spool: self.from_spool,
        }
    }
}

/// The stored object for `name`: its key, hash and stored size. Errors with [`NotArchived`]
/// when there is none (without asking whether it is a hole: the prefetcher only needs to know
/// where to stop), and refuses to choose between two different contents.
pub async fn locate(
    storage: &dyn Storage,
    name: &WalFileName,
) -> Result<(String, Sha256Digest, u64)> {
    let prefix = layout::wal_name_prefix(name);
    let found: Vec<_> = storage
        .list(&prefix)
        .await
        .map_err(|e| FetchFailure::Unreachable {
            name: name.clone(),
            store: storage.describe(),
            why: format!("cannot list {prefix}*: {e}"),
        })?
        .into_iter()
        .filter_map(|o| {
            let (n, sha) = layout::parse_wal_key(&o.key)?;
            (n == *name).then_some((o.key, sha, o.size))
        })
        .collect();
    tracing::debug!(wal = %name, prefix, found = ?found.iter().map(|f| &f.0).collect::<Vec<_>>(), "listed");
    match found.len() {
        0 => Err(NotArchived(name.to_string()).into()),
        1 => Ok(found.into_iter().next().expect("one element")),
        _ => bail!(
            "{name} is archived {} times with different content ({}); refusing to guess which \
             history is right\nhint: this is a split brain or two clusters sharing a repository; \
             inspect the objects and remove the wrong one by hand",
            found.len(),
            found
                .iter()
                .map(|f| f.0.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Downloads `name` from the repository into `dest`, verified. Errors are [`NotArchived`] only
/// at the end of the archive (see the module documentation); everything else is a failure.
pub async fn fetch_from_repo(
    storage: &dyn Storage,
    name: &WalFileName,
    dest: &Path,
) -> Result<FetchReport> {
    let started = Instant::now();
    let (key, sha, stored) = match locate(storage, name).await {
        Ok(found) => found,
        Err(e) if e.is::<NotArchived>() => return Err(absent(storage, name).await),
        Err(e) => return Err(e),
    };
    let data = storage
        .get(&key)
        .await
        .map_err(|e| FetchFailure::Unreachable {
            name: name.clone(),
            store: storage.describe(),
            why: format!("cannot read {key}: {e}"),
        })?;
    let dest_owned = dest.to_path_buf();
    let raw = tokio::task::spawn_blocking(move || write_verified(&data, &sha, &dest_owned))
        .await?
        .map_err(|e| classify_write_error(name, &key, dest, e))?;
    Ok(FetchReport {
        name: name.clone(),
        raw_bytes: raw,
        stored_bytes: stored,
        elapsed: started.elapsed(),
        from_spool: false,
    })
}

/// A failed decode-and-write is either a corrupt object or a destination that cannot be written.
fn classify_write_error(
    name: &WalFileName,
    key: &str,
    dest: &Path,
    e: anyhow::Error,
) -> FetchFailure {
    match e.downcast_ref::<DecodeError>() {
        Some(d @ (DecodeError::Corrupt(_) | DecodeError::HashMismatch { .. })) => {
            FetchFailure::Corrupt {
                name: name.clone(),
                key: key.to_string(),
                why: d.to_string(),
            }
        }
        _ => FetchFailure::Unwritable {
            name: name.clone(),
            dest: dest.display().to_string(),
            why: format!("{e:#}"),
        },
    }
}

/// Decodes a stored object into `dest` atomically, verifying zstd checksum and sha256.
/// Nothing is left at `dest` (or beside it) on failure.
pub fn write_verified(compressed: &[u8], sha: &Sha256Digest, dest: &Path) -> Result<u64> {
    let decoded = decode_beside(compressed, sha, &parent_dir(dest))?;
    let len = decoded.len;
    decoded.persist(dest)?;
    Ok(len)
}

/// A stored object decoded and verified into a temporary file, not yet in place. Dropping it
/// removes the file.
pub struct Decoded {
    tmp: tempfile::NamedTempFile,
    pub len: u64,
    /// crc32c of the decoded bytes, for a cheap check before the file is handed out later.
    pub crc32c: u32,
}

impl Decoded {
    /// Renames the file to `dest` (in the same directory it was decoded in).
    pub fn persist(self, dest: &Path) -> Result<()> {
        self.tmp
            .persist(dest)
            .map_err(|e| e.error)
            .with_context(|| format!("cannot rename into {}", dest.display()))?;
        Ok(())
    }
}

/// Decodes a stored object into a temporary file in `dir`, verifying zstd checksum and sha256.
pub fn decode_beside(compressed: &[u8], sha: &Sha256Digest, dir: &Path) -> Result<Decoded> {
    let mut tmp = tempfile::Builder::new()
        .prefix(".pgward-tmp-")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    let mut out = codec::Crc32cWriter::new(std::io::BufWriter::new(tmp.as_file_mut()));
    let len = codec::decode_into(compressed, Some(sha), &mut out)?;
    // Flush explicitly: an error in BufWriter's implicit flush on drop would be lost, and a
    // short file would be renamed into place (seen with small history files on a full disk).
    out.flush()
        .with_context(|| format!("cannot write a temporary file in {}", dir.display()))?;
    let crc32c = out.crc32c();
    drop(out);
    Ok(Decoded { tmp, len, crc32c })
}

/// Hands a prefetched copy to `dest` after checking it against the crc32c in its name (files
/// spooled by older versions, without one, by sha256). `Ok(None)` when the spool has no
/// usable copy (a bad one is removed and the caller fetches from the repository).
pub fn take_from_spool(
    spool: &FetchSpool,
    name: &WalFileName,
    dest: &Path,
) -> Result<Option<FetchReport>> {
    match spool.find(name) {
        Some(file) => take_spooled(&file, name, dest),
        None => Ok(None),
    }
}

/// [`take_from_spool`] once the file is found. The file may vanish at any step — the
/// prefetcher removing what recovery did not take, a cleanup of old files — and that is no
/// failure: `Ok(None)`, and the caller fetches from the repository. Recovery must never stop
/// over a spool file.
fn take_spooled(
    file: &SpooledFile,
    name: &WalFileName,
    dest: &Path,
) -> Result<Option<FetchReport>> {
    let started = Instant::now();
    let checked = match file.crc32c {
        Some(crc) => codec::crc32c_file(&file.path).map(|(c, len)| (c == crc, len)),
        None => codec::sha256_file(&file.path).map(|(s, len)| (s == file.sha256, len)),
    };
    let len = match checked {
        Ok((true, len)) => len,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vanished(name)),
        _ => {
            tracing::warn!(wal = %name, "prefetched copy failed verification; fetching again");
            let _ = std::fs::remove_file(&file.path);
            return Ok(None);
        }
    };
    match move_into_place(&file.path, dest) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !file.path.exists() => {
            return Ok(vanished(name));
        }
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot move prefetched file to {}", dest.display()));
        }
    }
    Ok(Some(FetchReport {
        name: name.clone(),
        raw_bytes: len,
        stored_bytes: 0,
        elapsed: started.elapsed(),
        from_spool: true,
    }))
}

fn vanished(name: &WalFileName) -> Option<FetchReport> {
    tracing::debug!(wal = %name, "the prefetched copy was removed meanwhile; fetching it again");
    None
}

/// Renames a verified spool file to `dest`; across file systems, copies instead.
fn move_into_place(src: &Path, dest: &Path) -> std::io::Result<()> {
    match std::fs::rename(src, dest) {
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            let data = std::fs::read(src)?;
            fsutil::write_atomic(dest, &data)?;
            let _ = std::fs::remove_file(src);
            Ok(())
        }
        other => other,
    }
}

fn parent_dir(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::faulty::FaultyStorage;
    use crate::storage::memory::MemoryStorage;
    use bytes::Bytes;
    use std::sync::Arc;

    fn name(s: &str) -> WalFileName {
        WalFileName::parse(s).unwrap()
    }

    /// The prefetcher (or a cleanup) may remove a spool file while `wal-fetch` takes it: the
    /// fetch then falls back to the repository (`None`), and never fails.
    #[test]
    fn a_spool_file_vanishing_under_a_fetch_is_fetched_again() {
        let dir = tempfile::tempdir().unwrap();
        let spool = FetchSpool::new(dir.path());
        std::fs::create_dir_all(spool.dir()).unwrap();
        let n = name("000000010000000000000003");
        let bytes = b"segment bytes".to_vec();
        let path = spool.path_for(&n, &Sha256Digest::of(&bytes), crc32c::crc32c(&bytes));
        std::fs::write(&path, &bytes).unwrap();
        let dest = dir.path().join("RECOVERYXLOG");

        let found = spool.find(&n).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(take_spooled(&found, &n, &dest).unwrap().is_none());
        assert!(!dest.exists());

        std::fs::write(&path, &bytes).unwrap();
        let report = take_from_spool(&spool, &n, &dest).unwrap().unwrap();
        assert!(report.from_spool);
        assert_eq!(std::fs::read(&dest).unwrap(), bytes);
        assert!(!path.exists());
    }

    async fn store(s: &dyn Storage, n: &str, content: &[u8]) -> String {
        let enc = codec::encode_bytes(content, 1).unwrap();
        let key = layout::wal_key(&name(n), &enc.sha256);
        s.put(&key, Bytes::from(enc.data)).await.unwrap();
        key
    }

    /// Timeline 1 holds segments 1, 2 and 4 (3 is a hole) and a `.partial` of 5; segment 7 is
    /// stored under the hash of other bytes (corrupt).
    async fn archive() -> (Arc<MemoryStorage>, String) {
        let s = Arc::new(MemoryStorage::new());
        for n in [
            "000000010000000000000001",
            "000000010000000000000002",
            "000000010000000000000005.partial",
        ] {
            store(s.as_ref(), n, n.as_bytes()).await;
        }
        let seg4 = store(s.as_ref(), "000000010000000000000004", b"four").await;
        let enc = codec::encode_bytes(b"seven", 1).unwrap();
        let bad = layout::wal_key(&name("000000020000000000000007"), &Sha256Digest::of(b"x"));
        s.put(&bad, Bytes::from(enc.data)).await.unwrap();
        (s, seg4)
    }

    /// What a fetch answered, with the failure's kind (the reason) when it failed.
    async fn fetch(s: &dyn Storage, n: &str, dest: &Path) -> (Outcome, Option<String>) {
        match fetch_from_repo(s, &name(n), dest).await {
            Ok(_) => (Outcome::Restored, None),
            Err(e) => {
                let kind = e.downcast_ref::<FetchFailure>().map(|f| match f {
                    FetchFailure::Corrupt { key, .. } => format!("corrupt {key}"),
                    FetchFailure::Hole { next_key, .. } => format!("hole before {next_key}"),
                    FetchFailure::Unreachable { .. } => "unreachable".to_string(),
                    FetchFailure::Unwritable { .. } => "unwritable".to_string(),
                });
                (Outcome::of_error(&e), kind)
            }
        }
    }

    #[tokio::test]
    async fn the_three_answers_and_their_reasons() {
        let (s, seg4) = archive().await;
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("RECOVERYXLOG");
        let corrupt = layout::wal_key(&name("000000020000000000000007"), &Sha256Digest::of(b"x"));
        let cases: Vec<(&str, Outcome, Option<String>)> = vec![
            ("000000010000000000000002", Outcome::Restored, None),
            // Later WAL of the same timeline is archived: a hole, never "not archived".
            (
                "000000010000000000000003",
                Outcome::Failed,
                Some(format!("hole before {seg4}")),
            ),
            // A .partial of the asked segment is where the timeline ended, not a hole.
            ("000000010000000000000005", Outcome::NotArchived, None),
            ("000000010000000000000009", Outcome::NotArchived, None),
            // Timeline 2 begins later; its earlier segments are not holes, and timeline 1's
            // segments do not make holes on timeline 2.
            ("000000020000000000000008", Outcome::NotArchived, None),
            ("00000002.history", Outcome::NotArchived, None),
            (
                "000000020000000000000007",
                Outcome::Failed,
                Some(format!("corrupt {corrupt}")),
            ),
        ];
        for (n, want, reason) in cases {
            let got = fetch(s.as_ref(), n, &dest).await;
            assert_eq!(got, (want, reason), "{n}");
            assert_eq!(dest.exists(), want == Outcome::Restored, "{n}");
            let _ = std::fs::remove_file(&dest);
        }

        // A destination that cannot be written.
        let nowhere = dir.path().join("missing-dir/RECOVERYXLOG");
        assert_eq!(
            fetch(s.as_ref(), "000000010000000000000002", &nowhere).await,
            (Outcome::Failed, Some("unwritable".into()))
        );
    }

    #[tokio::test]
    async fn an_unreachable_store_is_a_failure_for_present_and_absent_names() {
        let (s, _) = archive().await;
        let faulty = FaultyStorage::new(s.clone());
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("RECOVERYXLOG");
        for n in [
            "000000010000000000000002",
            "000000010000000000000009",
            "00000002.history",
        ] {
            faulty.fail_next(1000);
            assert_eq!(
                fetch(&faulty, n, &dest).await,
                (Outcome::Failed, Some("unreachable".into())),
                "{n}"
            );
        }
        // The name's own listing works, the look past it does not: still not "not archived".
        faulty.fail_next(0).fail_op("list_after", true);
        assert_eq!(
            fetch(&faulty, "000000010000000000000009", &dest).await,
            (Outcome::Failed, Some("unreachable".into()))
        );
        faulty.fail_op("list_after", false);
        assert_eq!(
            fetch(&faulty, "000000010000000000000009", &dest).await,
            (Outcome::NotArchived, None)
        );
    }

    #[test]
    fn exit_statuses_by_outcome_and_mode() {
        use Outcome::*;
        use RecoveryMode::*;
        let table = [
            (Restored, ArchiveRecovery, 0),
            (Restored, Standby, 0),
            (NotArchived, ArchiveRecovery, 1),
            (NotArchived, Standby, 1),
            // The one that matters: a failure must stop archive recovery, not end it.
            (Failed, ArchiveRecovery, EXIT_STOP_RECOVERY),
            (Failed, Standby, 1),
            (Failed, Manual, 1),
        ];
        for (outcome, mode, want) in table {
            assert_eq!(exit_status(outcome, mode), want, "{outcome:?} {mode:?}");
        }
        const { assert!(EXIT_STOP_RECOVERY > 125) };
    }

    #[test]
    fn mode_comes_from_the_signal_files() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(RecoveryMode::detect(dir.path()), RecoveryMode::Manual);
        std::fs::write(dir.path().join("recovery.signal"), b"").unwrap();
        assert_eq!(
            RecoveryMode::detect(dir.path()),
            RecoveryMode::ArchiveRecovery
        );
        // As in PostgreSQL, standby.signal wins.
        std::fs::write(dir.path().join("standby.signal"), b"").unwrap();
        assert_eq!(RecoveryMode::detect(dir.path()), RecoveryMode::Standby);
    }

    #[test]
    fn the_message_puts_the_consequence_before_the_hint() {
        let e: anyhow::Error = FetchFailure::Hole {
            name: name("000000010000000000000003"),
            next_key: "wal/00000001/000000010000000000000004-ab.zst".into(),
        }
        .into();
        let m = failure_message(&e, RecoveryMode::ArchiveRecovery);
        let lines: Vec<&str> = m.lines().collect();
        assert_eq!(lines.len(), 3, "{m}");
        assert!(lines[0].contains("000000010000000000000003") && lines[0].contains("hole"));
        assert!(lines[1].starts_with("recovery stops here"), "{m}");
        assert!(lines[2].starts_with("hint: "), "{m}");
        assert_eq!(
            failure_message(&e, RecoveryMode::Manual),
            crate::output::error_text(&e)
        );
    }

    #[test]
    fn hole_detection_reads_only_later_segments_of_the_timeline() {
        let later = |keys: &[&str]| -> Vec<ObjectMeta> {
            keys.iter()
                .map(|k| ObjectMeta {
                    key: k.to_string(),
                    size: 1,
                    last_modified: None,
                })
                .collect()
        };
        let sha = Sha256Digest::of(b"x");
        let k = |n: &str| layout::wal_key(&name(n), &sha);
        let seg = name("000000010000000000000003");
        assert_eq!(hole_after(&seg, &later(&[])), None);
        assert_eq!(hole_after(&seg, &later(&["wal/00000001/junk.zst"])), None);
        let next = k("000000010000000000000004.partial");
        assert_eq!(
            hole_after(&seg, &later(&["wal/00000001/junk", &next])),
            Some(next)
        );
        assert_eq!(
            hole_after(&seg, &later(&[&k("000000010000000000000003.partial")])),
            None
        );
        assert_eq!(
            hole_after(
                &name("00000003.history"),
                &later(&[&k("000000010000000000000004")])
            ),
            None
        );
        // The listing starts past every key of the segment itself.
        let (prefix, after) = layout::wal_after_segment(&seg.segment().unwrap());
        for own in [
            "000000010000000000000003",
            "000000010000000000000003.partial",
        ] {
            assert!(k(own) < after && k(own).starts_with(&prefix));
        }
        assert!(k("000000010000000000000004") > after);
        assert!(k("000000010000000100000000") > after);
    }
}
