//! The last condition of a complete backup: every WAL segment from the backup's start to its
//! stop is in the repository. `pg_backup_stop(wait_for_archive => true)` only says PostgreSQL's
//! `archive_command` reported success; a misconfigured command (`/bin/true`, another
//! repository) also reports success. So the repository is checked, by listing, until the
//! segments are there or `backup.wal_wait_timeout` runs out — or until the server has reported
//! a missing segment archived for a few seconds, which means it went somewhere else (see
//! [`super::archiver`]). The wait reports itself every few seconds.

use super::archiver::{ArchiverStats, ArchiverWatch};
use crate::events::{Event, Events};
use crate::pg::{Lsn, Timeline, WalFileName, WalSegmentName};
use crate::repo::layout;
use crate::repo::wal_catalog::WalCatalog;
use crate::storage::DynStorage;
use anyhow::{Context, Result, anyhow};
use std::path::Path;
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

/// How long the server may report a segment archived while the repository lacks it before the
/// wait gives up. pgward's `wal-push` returns only once the object is durable and listed, so a
/// few seconds cover listing and clock slack; past that, the segment went somewhere else.
pub const ARCHIVED_ELSEWHERE_GRACE: Duration = Duration::from_secs(10);

/// How often a wait reports that it still waits.
pub const WAIT_PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// One wait for a backup's WAL.
pub struct WalWait<'a> {
    pub storage: &'a DynStorage,
    pub needed: &'a [WalSegmentName],
    pub seg_size: u64,
    /// `backup.wal_wait_timeout`.
    pub timeout: Duration,
    /// [`ARCHIVED_ELSEWHERE_GRACE`] (shorter in tests).
    pub grace: Duration,
    /// Where `Event::Waiting` goes, every `progress_every` ([`WAIT_PROGRESS_EVERY`]).
    pub events: &'a Events,
    pub progress_every: Duration,
    /// The configuration file, for the `archive_command` the hint suggests.
    pub config_path: &'a Path,
}

/// Polls the repository until every segment in `wait.needed` is stored. Fails after
/// `wait.timeout` naming the missing ones (and the archiver's failure, if it is failing on
/// one), or as soon as the server has reported a missing segment archived for `wait.grace`:
/// then `archive_command` stores WAL elsewhere, and waiting longer cannot help.
pub async fn wait_for_segments(wait: &WalWait<'_>, server: &dyn ArchiverWatch) -> Result<()> {
    let (Some(first), Some(last)) = (wait.needed.first(), wait.needed.last()) else {
        return Ok(());
    };
    let storage = wait.storage;
    let prefix = listing_prefix(first, last);
    let started = Instant::now();
    let deadline = started + wait.timeout;
    let mut next_report = started + wait.progress_every;
    let mut pause = Duration::from_millis(100);
    let mut reported_archived_since: Option<Instant> = None;
    loop {
        let listing = storage
            .list(&prefix)
            .await
            .with_context(|| format!("cannot list WAL in {}", storage.describe()))?;
        let catalog = WalCatalog::from_listing(&listing, wait.seg_size);
        let missing: Vec<WalSegmentName> = wait
            .needed
            .iter()
            .filter(|s| !catalog.has_segment(s))
            .copied()
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let stats = server.stats().await;
        let archived_elsewhere = missing.iter().copied().find(|s| {
            server.done_file(s) || stats.as_ref().is_some_and(|st| st.archived_at_or_past(s))
        });
        let failing = stats
            .as_ref()
            .and_then(|st| missing.iter().copied().find(|s| st.failing_on(s)));
        let now = Instant::now();
        match archived_elsewhere {
            Some(seg) => {
                let since = *reported_archived_since.get_or_insert(now);
                if now.duration_since(since) >= wait.grace {
                    let command = server.archive_command().await;
                    return Err(archived_elsewhere_error(
                        wait,
                        seg,
                        &missing,
                        stats.as_ref(),
                        command.as_deref(),
                    ));
                }
            }
            None => reported_archived_since = None,
        }
        let state = WaitState {
            missing: &missing,
            failing,
            stats: stats.as_ref(),
        };
        if now >= deadline {
            return Err(timed_out_error(wait, &state));
        }
        if now >= next_report {
            wait.events.emit(&Event::Waiting {
                what: format!(
                    "the backup's WAL to reach {}: {}",
                    storage.describe(),
                    state.describe()
                ),
                waited_ms: now.duration_since(started).as_millis() as u64,
                limit_ms: wait.timeout.as_millis() as u64,
            });
            next_report = now + wait.progress_every;
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

/// What a wait has seen on its last look, for its progress events and its failure.
struct WaitState<'a> {
    missing: &'a [WalSegmentName],
    /// A missing segment the archiver is failing on now.
    failing: Option<WalSegmentName>,
    stats: Option<&'a ArchiverStats>,
}

impl WaitState<'_> {
    /// `missing A, B (…); the archiver is failing on A (pg_stat_archiver: …)`.
    fn describe(&self) -> String {
        let mut s = format!("missing {}", shown(self.missing));
        if let (Some(seg), Some(stats)) = (self.failing, self.stats) {
            s += &format!(
                "; PostgreSQL's archiver is failing on {seg} ({})",
                stats.describe()
            );
        }
        s
    }
}

/// At most ten names, then `and N more`.
fn shown(segments: &[WalSegmentName]) -> String {
    const SHOWN: usize = 10;
    let mut names: Vec<String> = segments.iter().take(SHOWN).map(|s| s.to_string()).collect();
    if segments.len() > SHOWN {
        names.push(format!("and {} more", segments.len() - SHOWN));
    }
    names.join(", ")
}

fn needs(wait: &WalWait<'_>) -> String {
    match (wait.needed.first(), wait.needed.last()) {
        (Some(a), Some(b)) => format!("the backup needs {a} to {b}"),
        _ => "the backup needs no WAL".to_string(),
    }
}

fn archived_elsewhere_error(
    wait: &WalWait<'_>,
    seg: WalSegmentName,
    missing: &[WalSegmentName],
    stats: Option<&ArchiverStats>,
    command: Option<&str>,
) -> anyhow::Error {
    let evidence = stats
        .map(|s| format!(" ({})", s.describe()))
        .unwrap_or_default();
    let command = match command {
        Some(c) => format!("archive_command is '{c}' (SHOW archive_command)"),
        None => "check archive_command (SHOW archive_command)".to_string(),
    };
    anyhow!(
        "PostgreSQL reports WAL segment {seg} archived{evidence}, but {} still lacks it after \
         {}: archive_command stores WAL somewhere else; missing {} ({}); no manifest was \
         written, so this backup does not exist\n\
         hint: {command}; it likely points at another repository or is not pgward: set it to \
         `pgward --config {} wal-push %p`, reload, and run the backup again",
        wait.storage.describe(),
        humantime::format_duration(wait.grace),
        shown(missing),
        needs(wait),
        wait.config_path.display()
    )
}

fn timed_out_error(wait: &WalWait<'_>, state: &WaitState<'_>) -> anyhow::Error {
    let hint = if state.failing.is_some() {
        "hint: PostgreSQL cannot archive this segment: the server log says why archive_command \
         fails"
            .to_string()
    } else {
        format!(
            "hint: check that archive_command runs `pgward --config {} wal-push %p` and that \
             archiving keeps up (pg_stat_archiver, the server log); raise \
             backup.wal_wait_timeout if it is just slow",
            wait.config_path.display()
        )
    };
    anyhow!(
        "the backup's WAL did not reach {} within backup.wal_wait_timeout ({}): {} ({}); no \
         manifest was written, so this backup does not exist\n{hint}",
        wait.storage.describe(),
        humantime::format_duration(wait.timeout),
        state.describe(),
        needs(wait),
    )
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

    /// Plays the server: a fixed `pg_stat_archiver` row and `.done` files.
    #[derive(Default)]
    struct FakeServer {
        stats: Option<ArchiverStats>,
        done: Vec<WalSegmentName>,
    }

    #[async_trait::async_trait]
    impl ArchiverWatch for FakeServer {
        async fn stats(&self) -> Option<ArchiverStats> {
            self.stats.clone()
        }
        fn done_file(&self, seg: &WalSegmentName) -> bool {
            self.done.contains(seg)
        }
        async fn archive_command(&self) -> Option<String> {
            Some("cp %p /elsewhere/%f".to_string())
        }
    }

    fn wait<'a>(
        storage: &'a DynStorage,
        needed: &'a [WalSegmentName],
        timeout: Duration,
        events: &'a Events,
    ) -> WalWait<'a> {
        WalWait {
            storage,
            needed,
            seg_size: SEG,
            timeout,
            grace: Duration::from_millis(300),
            events,
            progress_every: Duration::from_millis(500),
            config_path: Path::new("/etc/pgward.toml"),
        }
    }

    #[tokio::test]
    async fn waits_for_late_segments_and_names_missing_ones() {
        let mem = Arc::new(MemoryStorage::new());
        let storage: DynStorage = mem.clone();
        let events: Events = Arc::new(crate::events::TestSink::default());
        let needed = required_segments(Timeline(1), Lsn(0x200_0028), Lsn(0x300_0100), SEG);
        put(&mem, "000000010000000000000002").await;
        let quiet = FakeServer::default();
        let err = wait_for_segments(
            &wait(&storage, &needed, Duration::from_millis(300), &events),
            &quiet,
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(err.contains("missing 000000010000000000000003"), "{err}");
        assert!(!err.contains("missing 000000010000000000000002"), "{err}");
        assert!(
            err.ends_with("raise backup.wal_wait_timeout if it is just slow"),
            "{err}"
        );

        let late_mem = mem.clone();
        let late = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            put(&late_mem, "000000010000000000000003").await;
        });
        wait_for_segments(
            &wait(&storage, &needed, Duration::from_secs(10), &events),
            &quiet,
        )
        .await
        .unwrap();
        late.await.unwrap();
    }

    #[tokio::test]
    async fn a_segment_the_server_archived_elsewhere_fails_after_the_grace_period() {
        let storage: DynStorage = Arc::new(MemoryStorage::new());
        let events: Events = Arc::new(crate::events::TestSink::default());
        let needed = required_segments(Timeline(1), Lsn(0x200_0028), Lsn(0x300_0100), SEG);
        for server in [
            FakeServer {
                stats: Some(ArchiverStats {
                    last_archived_wal: Some("000000010000000000000003".into()),
                    ..ArchiverStats::default()
                }),
                done: vec![],
            },
            FakeServer {
                stats: None,
                done: vec![needed[0]],
            },
        ] {
            let started = std::time::Instant::now();
            let err = wait_for_segments(
                &wait(&storage, &needed, Duration::from_secs(60), &events),
                &server,
            )
            .await
            .unwrap_err()
            .to_string();
            assert!(started.elapsed() < Duration::from_secs(5), "{err}");
            assert!(
                err.starts_with("PostgreSQL reports WAL segment 000000010000000000000002 archived")
                    && err.contains("archive_command stores WAL somewhere else")
                    && err.contains("missing 000000010000000000000002, 000000010000000000000003"),
                "{err}"
            );
            let hint = err.lines().last().unwrap();
            assert!(
                hint.starts_with(
                    "hint: archive_command is 'cp %p /elsewhere/%f' (SHOW archive_command)"
                ) && hint.contains("`pgward --config /etc/pgward.toml wal-push %p`"),
                "{err}"
            );
        }
    }

    #[tokio::test]
    async fn a_failing_archiver_is_named_in_progress_and_failure() {
        let storage: DynStorage = Arc::new(MemoryStorage::new());
        let sink = Arc::new(crate::events::TestSink::default());
        let events: Events = sink.clone();
        let needed = required_segments(Timeline(1), Lsn(0x200_0028), Lsn(0x200_0100), SEG);
        let server = FakeServer {
            stats: Some(ArchiverStats {
                last_archived_wal: Some("000000010000000000000001".into()),
                last_failed_wal: Some("000000010000000000000002".into()),
                last_failed_time: Some("2026-12-01 21:00:00+00".into()),
                failed_count: 7,
                failing_now: true,
                ..ArchiverStats::default()
            }),
            done: vec![],
        };
        let mut w = wait(&storage, &needed, Duration::from_millis(1200), &events);
        w.grace = Duration::from_secs(60);
        let err = wait_for_segments(&w, &server)
            .await
            .unwrap_err()
            .to_string();
        let failing = "PostgreSQL's archiver is failing on 000000010000000000000002";
        assert!(err.contains(failing) && err.contains("7 failures"), "{err}");
        assert!(
            err.lines()
                .last()
                .unwrap()
                .starts_with("hint: PostgreSQL cannot archive"),
            "{err}"
        );
        let waits: Vec<_> = sink
            .events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Waiting { what, limit_ms, .. } => Some((what, limit_ms)),
                _ => None,
            })
            .collect();
        assert!((1..=3).contains(&waits.len()), "{waits:?}");
        assert!(waits[0].0.contains(failing), "{waits:?}");
        assert_eq!(waits[0].1, 1200);
    }
}
