//! WAL archiving under storage faults, in process: `wal-push` / `wal-fetch` (and the `Pusher`
//! below them) over a `MemoryStorage` wrapped in `FaultyStorage` and the retry layer, fed with
//! real WAL from an initdb'd cluster (never started).
//!
//! The contract under test (DESIGN principles 1 and 2): a push reports success only once the
//! exact original bytes are durable in the repository; transient faults are retried, permanent
//! ones and a stuck store fail (the latter within `wal.timeout`); a cancelled push neither
//! stores a partial object nor leaves a push-ahead record for something that is not stored; a
//! corrupt read or a full disk never puts anything at the fetch destination; and a push-ahead
//! record lets a push succeed only when the local file is what the repository already holds.
//!
//! One initdb per test binary: its first segment is real WAL with this cluster's identity.
//! Further segments are that one with the page address in the long header rewritten to match
//! their names, which is all `wal-push`'s validation looks at.

mod common;

use anyhow::Result;
use common::pg::{InitOpts, PgCluster, TestDir};
use common::s3_server::S3Server;
use pgward::codec::{self, Sha256Digest};
use pgward::commands::{wal_fetch, wal_push};
use pgward::config::Config;
use pgward::context::Context;
use pgward::pg::control::ControlFile;
use pgward::pg::version::read_major_version;
use pgward::pg::{Timeline, WalFileName, WalSegmentName};
use pgward::repo::identity::RepoIdentity;
use pgward::repo::layout;
use pgward::storage::faulty::FaultyStorage;
use pgward::storage::memory::MemoryStorage;
use pgward::storage::retry::{self, RetryPolicy};
use pgward::storage::{DynStorage, Storage};
use pgward::wal::push::{PushOutcome, Pusher};
use pgward::wal::spool::{PushRecord, PushSpool};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

const SEG1: &str = "000000010000000000000001";
/// Where `flip_after_first_page` changes a segment: well past the validated first page.
const FLIP_AT: usize = 3 * 8192 + 100;

// ---------------------------------------------------------------------------------------------
// Fixture: one real segment and the cluster's identity
// ---------------------------------------------------------------------------------------------

struct Fixture {
    seg1: Vec<u8>,
    identity: RepoIdentity,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        // The cluster and its directory go away again; only the bytes are kept.
        let dir = TestDir::new("inproc");
        let pg = PgCluster::init(&dir, "pg", InitOpts::default());
        let seg1 = fs::read(pg.datadir.join("pg_wal").join(SEG1)).expect("initdb's first segment");
        let control = ControlFile::read(&pg.datadir).expect("pg_control");
        let major = read_major_version(&pg.datadir).expect("PG_VERSION");
        let identity = RepoIdentity::for_cluster(&control, major);
        assert_eq!(seg1.len() as u64, identity.wal_segment_size);
        Fixture { seg1, identity }
    })
}

fn seg_size() -> u64 {
    fixture().identity.wal_segment_size
}

/// The name of segment number `segno` on timeline 1.
fn seg_name(segno: u64) -> String {
    WalSegmentName::from_segno(Timeline(1), segno, seg_size()).to_string()
}

/// A valid segment `segno` of the fixture cluster: the real first segment with its page address
/// rewritten (segment 1 is the real one, unchanged).
fn segment_bytes(segno: u64) -> Vec<u8> {
    let mut bytes = fixture().seg1.clone();
    bytes[8..16].copy_from_slice(&(segno * seg_size()).to_le_bytes());
    bytes
}

fn wal_name(name: &str) -> WalFileName {
    WalFileName::parse(name).unwrap()
}

fn flip_after_first_page(path: &Path) {
    let mut bytes = fs::read(path).unwrap();
    for b in &mut bytes[FLIP_AT..FLIP_AT + 16] {
        *b ^= 0x5a;
    }
    fs::write(path, bytes).unwrap();
}

// ---------------------------------------------------------------------------------------------
// One test's world: memory repository behind faults and retries, a pg_wal, a spool
// ---------------------------------------------------------------------------------------------

fn fast_policy(attempt_timeout: Duration) -> RetryPolicy {
    RetryPolicy {
        attempts: 5,
        attempt_timeout,
        base_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(40),
        ..RetryPolicy::default()
    }
}

struct Opts {
    push_ahead: usize,
    timeout: &'static str,
    attempt_timeout: Duration,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            push_ahead: 0,
            timeout: "20s",
            attempt_timeout: Duration::from_secs(5),
        }
    }
}

struct Env {
    dir: tempfile::TempDir,
    mem: Arc<MemoryStorage>,
    faulty: Arc<FaultyStorage>,
    ctx: Context,
    /// `put`s of the setup itself (repo.json).
    setup_puts: usize,
}

impl Env {
    async fn new(opts: Opts) -> Env {
        Env::with_inner(opts, |mem| mem).await
    }

    /// `wrap` may put another layer between the memory store and the fault injector.
    async fn with_inner(opts: Opts, wrap: impl FnOnce(DynStorage) -> DynStorage) -> Env {
        let fx = fixture();
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = tempfile::Builder::new()
            .prefix("pgw-inproc-")
            .tempdir()
            .unwrap();
        fs::create_dir_all(dir.path().join("pg_wal/archive_status")).unwrap();
        let text = format!(
            "[repo]\nurl = \"file:///nonexistent/pgward-inproc-{}-{}\"\n\n\
             [wal]\npush_ahead = {}\nprefetch = 0\nspool_dir = \"{}\"\ntimeout = \"{}\"\n",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            opts.push_ahead,
            dir.path().join("spool").display(),
            opts.timeout,
        );
        let config = Config::parse(&text, "test config").unwrap();
        let mem = Arc::new(MemoryStorage::new());
        // repo.json goes straight into memory: faults are for the command under test.
        RepoIdentity::create(mem.as_ref(), &fx.identity)
            .await
            .unwrap();
        let setup_puts = mem.put_count();
        let faulty = Arc::new(FaultyStorage::new(wrap(mem.clone())));
        let storage = retry::wrap(faulty.clone(), fast_policy(opts.attempt_timeout));
        let ctx = Context::with_storage(config, dir.path().join("pgward.toml"), storage);
        Env {
            dir,
            mem,
            faulty,
            ctx,
            setup_puts,
        }
    }

    /// `put` / `put_if_absent` calls that reached the memory store since the setup.
    fn puts(&self) -> usize {
        self.mem.put_count() - self.setup_puts
    }

    fn wal_path(&self, name: &str) -> PathBuf {
        self.dir.path().join("pg_wal").join(name)
    }

    /// Puts segment `segno` into pg_wal, with a `.ready` file when `ready`.
    fn add_segment(&self, segno: u64, ready: bool) -> PathBuf {
        let name = seg_name(segno);
        let path = self.wal_path(&name);
        fs::write(&path, segment_bytes(segno)).unwrap();
        if ready {
            let status = self.dir.path().join("pg_wal/archive_status");
            fs::write(status.join(format!("{name}.ready")), b"").unwrap();
        }
        path
    }

    async fn push(&self, path: &Path) -> Result<()> {
        wal_push::run(
            &self.ctx,
            &wal_push::Args {
                path: path.to_path_buf(),
                force: false,
            },
            // No binary: push-ahead runs inside the call.
            None,
        )
        .await
    }

    async fn fetch(&self, name: &str, dest: &Path) -> Result<()> {
        let args = wal_fetch::Args {
            name: name.to_string(),
            dest: dest.to_path_buf(),
        };
        wal_fetch::run(&self.ctx, &args, None).await
    }

    fn pusher(&self) -> Pusher {
        Pusher::new(self.ctx.storage.clone(), fixture().identity.clone(), 3)
    }

    fn spool(&self) -> PushSpool {
        PushSpool::new(&self.ctx.spool_dir())
    }

    /// Runs the background pusher in process over this env's pg_wal (window 3, 2 pushes at a
    /// time) until it exits on its own; returns how long it ran.
    async fn run_background_pusher(&self) -> Duration {
        let mut pusher = self.pusher();
        pusher.multithread = false;
        let limits = pgward::wal::background::Limits {
            window: 3,
            parallel: 2,
            per_push: Duration::from_secs(10),
        };
        let wal_dir = self.dir.path().join("pg_wal");
        let started = Instant::now();
        tokio::time::timeout(
            Duration::from_secs(30),
            pgward::wal::background::run(&pusher, &self.spool(), &wal_dir, &limits),
        )
        .await
        .expect("the background pusher must exit on its own");
        started.elapsed()
    }

    /// Every stored key under `wal/`.
    fn wal_objects(&self) -> Vec<String> {
        self.mem
            .keys()
            .into_iter()
            .filter(|k| k.starts_with(layout::WAL_PREFIX))
            .collect()
    }

    /// The stored object for `name`, decoded and verified against the hash in its key.
    async fn stored_content(&self, name: &str) -> Option<Vec<u8>> {
        let prefix = layout::wal_name_prefix(&wal_name(name));
        let keys: Vec<String> = self
            .wal_objects()
            .into_iter()
            .filter(|k| k.starts_with(&prefix))
            .collect();
        assert!(keys.len() <= 1, "{name} stored more than once: {keys:?}");
        let key = keys.first()?;
        let (_, sha) = layout::parse_wal_key(key).expect("a WAL key");
        let data = self.mem.get(key).await.unwrap();
        Some(codec::decode_to_vec(&data, Some(&sha)).expect("stored object decodes and verifies"))
    }

    /// Push-ahead records present, by WAL name.
    fn records(&self) -> Vec<PushRecord> {
        let dir = self.ctx.spool_dir().join("push");
        let Ok(rd) = fs::read_dir(&dir) else {
            return Vec::new();
        };
        let spool = self.spool();
        rd.flatten()
            .filter_map(|e| {
                let f = e.file_name().to_string_lossy().into_owned();
                let name = WalFileName::parse(f.strip_suffix(".json")?).ok()?;
                Some(
                    spool
                        .read(&name)
                        .unwrap_or_else(|| panic!("unreadable push record {f}")),
                )
            })
            .collect()
    }

    /// The spool invariant: a record exists only for an object that is durable in the
    /// repository, under the key its name and hash give.
    async fn assert_records_backed(&self, when: &str) {
        for rec in self.records() {
            let name = wal_name(&rec.name);
            assert_eq!(
                rec.key,
                layout::wal_key(&name, &rec.sha256),
                "{when}: record key does not match its name and hash: {rec:?}"
            );
            let stored = self.mem.head(&rec.key).await.unwrap();
            assert!(
                stored.is_some(),
                "{when}: push-ahead record for {} but nothing stored under {}; stored: {:?}",
                rec.name,
                rec.key,
                self.wal_objects()
            );
        }
    }
}

fn err_text(e: &anyhow::Error) -> String {
    format!("{e:#}")
}

// ---------------------------------------------------------------------------------------------
// Transient faults
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried_and_nothing_is_lost() {
    let env = Env::new(Opts::default()).await;
    let path = env.add_segment(1, false);
    let original = fixture().seg1.clone();

    env.faulty.fail_next(3);
    env.push(&path)
        .await
        .expect("push must survive 3 transient failures");
    assert_eq!(env.faulty.injected_failures(), 3);
    let sha = Sha256Digest::of(&original);
    assert_eq!(
        env.wal_objects(),
        vec![layout::wal_key(&wal_name(SEG1), &sha)]
    );
    let stored = env.stored_content(SEG1).await.unwrap();
    assert!(
        stored == original,
        "stored object differs from the original"
    );

    // And back, through the same faults.
    env.faulty.fail_next(3);
    let dest = env.dir.path().join("restore");
    fs::create_dir(&dest).unwrap();
    let dest = dest.join("RECOVERYXLOG");
    env.fetch(SEG1, &dest)
        .await
        .expect("fetch must survive 3 transient failures");
    assert_eq!(env.faulty.injected_failures(), 6);
    assert!(fs::read(&dest).unwrap() == original, "fetched bytes differ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_acknowledgement_of_a_store_is_still_success() {
    let env = Env::new(Opts::default()).await;
    // The store keeps the object but the answer of the first write never arrives.
    env.faulty.lose_acks(layout::WAL_PREFIX, 1);
    let path = env.add_segment(1, false);
    let report = env
        .pusher()
        .push_one(&path, &wal_name(SEG1))
        .await
        .expect("the retry finds the object its first attempt stored");
    assert!(
        matches!(
            report.outcome,
            PushOutcome::AlreadyArchived | PushOutcome::Stored
        ),
        "{report:?}"
    );
    assert_eq!(env.wal_objects(), vec![report.key.clone()]);
    assert!(env.stored_content(SEG1).await.unwrap() == fixture().seg1);
}

// ---------------------------------------------------------------------------------------------
// Permanent faults
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_put_failure_fails_the_push_and_stores_nothing() {
    let env = Env::new(Opts {
        push_ahead: 4,
        ..Opts::default()
    })
    .await;
    let path = env.add_segment(1, true);
    for segno in 2..=4 {
        env.add_segment(segno, true);
    }
    env.faulty.fail_puts_permanently(true);

    let err = env.push(&path).await.expect_err("push with puts failing");
    let text = err_text(&err);
    assert!(text.contains("cannot store"), "{text}");
    assert!(text.contains("injected permanent failure"), "{text}");
    assert_eq!(env.puts(), 0, "no put reached the store");
    assert!(env.wal_objects().is_empty(), "{:?}", env.wal_objects());
    // Push-ahead failed as well: no record may claim otherwise.
    assert!(env.records().is_empty(), "{:?}", env.records());

    // The Pusher itself reports the failure too (a permanent error is not retried).
    let before = env.faulty.injected_failures();
    env.pusher()
        .push_one(&path, &wal_name(SEG1))
        .await
        .expect_err("push_one with puts failing");
    assert_eq!(
        env.faulty.injected_failures(),
        before + 1,
        "retried a permanent error"
    );
    assert!(env.wal_objects().is_empty());
}

// ---------------------------------------------------------------------------------------------
// A stuck store
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_store_fails_the_push_within_wal_timeout() {
    // The retry layer's attempt deadline is longer than wal.timeout: only wal.timeout can end
    // the call in time.
    let env = Env::new(Opts {
        timeout: "1s",
        attempt_timeout: Duration::from_secs(5),
        ..Opts::default()
    })
    .await;
    let path = env.add_segment(1, false);
    env.faulty.hang(Some(Duration::from_secs(60)));

    let started = Instant::now();
    let err = env
        .push(&path)
        .await
        .expect_err("push against a stuck store");
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_millis(1500),
        "wal.timeout = 1s, yet wal-push took {elapsed:?}"
    );
    assert!(
        elapsed >= Duration::from_millis(900),
        "failed before the deadline ({elapsed:?}): {err:#}"
    );
    let text = err_text(&err);
    assert!(text.contains("wal.timeout"), "{text}");
    assert!(env.faulty.calls() > 0, "the store was never called");

    env.faulty.hang(None);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(env.wal_objects().is_empty(), "{:?}", env.wal_objects());
    assert_eq!(env.puts(), 0);
    assert!(env.records().is_empty());
}

/// At wal.timeout the whole call is over, push-ahead included ("abandoned at wal.timeout"):
/// nothing it started may still be storing objects or writing records after `wal_push::run`
/// has returned its error. (The binary exits right after, which ends such tasks; a caller of
/// the library keeps them running.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_ahead_does_not_outlive_a_timed_out_push() {
    // The main push (segment 1) is stuck; push-ahead (segments 2..4) is merely slow: each of
    // its calls takes 700 ms, so it finishes after the 1 s deadline.
    let env = Env::with_inner(
        Opts {
            push_ahead: 3,
            timeout: "1s",
            attempt_timeout: Duration::from_secs(5),
        },
        |mem| mem,
    )
    .await;
    let seg1 = layout::wal_name_prefix(&WalFileName::parse(SEG1).unwrap());
    for op in ["put", "put_if_absent", "get", "head", "list", "list_after"] {
        // The first matching rule wins: segment 1's before the rest of the WAL.
        env.faulty.delay(op, &seg1, Duration::from_secs(60)).delay(
            op,
            layout::WAL_PREFIX,
            Duration::from_millis(700),
        );
    }
    let path = env.add_segment(1, true);
    for segno in 2..=4 {
        env.add_segment(segno, true);
    }
    let started = Instant::now();
    let err = env
        .push(&path)
        .await
        .expect_err("push against a stuck store");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}: {err:#}",
        started.elapsed()
    );

    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        env.wal_objects().is_empty() && env.records().is_empty(),
        "wal_push::run returned Err ({err:#}) at wal.timeout, but its push-ahead kept running \
         afterwards: stored {:?}, records {:?}",
        env.wal_objects(),
        env.records().iter().map(|r| &r.name).collect::<Vec<_>>()
    );
}

// ---------------------------------------------------------------------------------------------
// Cancellation
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_push_leaves_no_unbacked_record_and_claims_nothing() {
    for cancel_after_ms in [5u64, 60, 150, 260, 450] {
        let env = Env::new(Opts {
            push_ahead: 4,
            ..Opts::default()
        })
        .await;
        let path = env.add_segment(1, true);
        for segno in 2..=5 {
            env.add_segment(segno, true);
        }
        // Every storage call takes 80 ms: a push needs at least three (repo.json, list, put).
        env.faulty.hang(Some(Duration::from_millis(80)));
        let when = format!("cancelled after {cancel_after_ms} ms");
        let r = tokio::time::timeout(Duration::from_millis(cancel_after_ms), env.push(&path)).await;
        match r {
            Err(_) => {}
            Ok(Ok(())) => {
                // Finished in time after all: then it must really be stored.
                assert!(
                    env.stored_content(SEG1).await.is_some(),
                    "{when}: push reported success without the object"
                );
            }
            Ok(Err(e)) => panic!("{when}: push failed instead of being cancelled: {e:#}"),
        }
        env.assert_records_backed(&format!("{when}, right away"))
            .await;
        assert!(
            !env.spool().has(&wal_name(SEG1)),
            "{when}: a record for the file being pushed itself"
        );

        // Let anything the cancelled call left running finish, then check again.
        tokio::time::sleep(Duration::from_millis(600)).await;
        env.assert_records_backed(&format!("{when}, later")).await;
        for name in env.wal_objects() {
            let (n, _) = layout::parse_wal_key(&name).unwrap();
            let segno = n.segment().unwrap().segno(seg_size());
            assert!(
                env.stored_content(&n.to_string()).await.unwrap() == segment_bytes(segno),
                "{when}: stored {n} differs from the local file"
            );
        }

        eprintln!(
            "{when}: finished = {}, stored {:?}, records {:?}",
            r.is_ok(),
            env.wal_objects().len(),
            env.records().len()
        );

        // With the store refusing writes, a push may succeed only for what is really stored.
        // (No backlog any more: push-ahead has nothing to add to this check.)
        env.faulty.hang(None).fail_puts_permanently(true);
        fs::remove_dir_all(env.dir.path().join("pg_wal/archive_status")).unwrap();
        for segno in 1..=5 {
            let name = seg_name(segno);
            let stored = env.stored_content(&name).await.is_some();
            let r = env.push(&env.wal_path(&name)).await;
            assert_eq!(
                r.is_ok(),
                stored,
                "{when}: push of {name} with puts refused returned {r:?}, but stored = {stored}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Corrupt reads
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_reads_fail_the_fetch_and_leave_nothing_at_dest() {
    let env = Env::new(Opts::default()).await;
    let path = env.add_segment(1, false);
    env.push(&path).await.unwrap();
    let restore = env.dir.path().join("restore");
    fs::create_dir(&restore).unwrap();
    let dest = restore.join("RECOVERYXLOG");

    env.faulty.corrupt_reads(true);
    let err = env
        .fetch(SEG1, &dest)
        .await
        .expect_err("fetch of a corrupted read");
    let text = err_text(&err);
    assert!(text.contains("corrupt"), "{text}");
    assert!(!dest.exists(), "a failed fetch left {}", dest.display());
    let left: Vec<String> = fs::read_dir(&restore)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.is_empty(), "a failed fetch left files: {left:?}");

    // The stored object itself is fine: once reads are clean the fetch works.
    env.faulty.corrupt_reads(false);
    env.fetch(SEG1, &dest).await.unwrap();
    assert!(fs::read(&dest).unwrap() == fixture().seg1);
}

// ---------------------------------------------------------------------------------------------
// Push-ahead records
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_for_a_changed_local_file_does_not_make_the_push_succeed() {
    let env = Env::new(Opts {
        push_ahead: 1,
        ..Opts::default()
    })
    .await;
    let first = env.add_segment(1, true);
    let second = env.add_segment(2, true);
    let name2 = seg_name(2);

    // Pushing segment 1 pushes segment 2 ahead and records it.
    env.push(&first).await.unwrap();
    assert!(env.spool().has(&wal_name(&name2)), "no push-ahead record");
    env.assert_records_backed("after push-ahead").await;
    let before = env.wal_objects();
    assert_eq!(before.len(), 2, "{before:?}");

    // The local file changes after push-ahead stored it.
    flip_after_first_page(&second);
    let err = env
        .push(&second)
        .await
        .expect_err("a changed file already archived with other content");
    let text = err_text(&err);
    assert!(text.contains("different content"), "{text}");
    assert!(
        !env.spool().has(&wal_name(&name2)),
        "the stale record must be removed"
    );
    assert_eq!(env.wal_objects(), before, "the archived object must stay");
    assert!(env.stored_content(&name2).await.unwrap() == segment_bytes(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_not_matching_the_local_file_is_ignored() {
    let env = Env::new(Opts::default()).await;
    let path = env.add_segment(1, false);
    // A record for other content, of which nothing is stored.
    let other = Sha256Digest::of(b"something else");
    env.spool()
        .write(&PushRecord {
            name: SEG1.into(),
            sha256: other,
            size: seg_size(),
            key: layout::wal_key(&wal_name(SEG1), &other),
            crc32c: None,
        })
        .unwrap();

    env.push(&path).await.unwrap();
    assert!(!env.spool().has(&wal_name(SEG1)));
    assert!(
        env.stored_content(SEG1).await.as_deref() == Some(&fixture().seg1[..]),
        "the push must store the real content: {:?}",
        env.wal_objects()
    );
}

/// A record is a hint, not proof: if the repository does not hold what it names (a record left
/// from an earlier repository at the same URL, a restored or pruned bucket, a forged file), the
/// push must store the file rather than report it archived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_for_content_missing_from_the_repository_is_not_trusted() {
    let env = Env::new(Opts::default()).await;
    let path = env.add_segment(1, false);
    let sha = Sha256Digest::of(&fixture().seg1);
    env.spool()
        .write(&PushRecord {
            name: SEG1.into(),
            sha256: sha,
            size: seg_size(),
            key: layout::wal_key(&wal_name(SEG1), &sha),
            crc32c: Some(crc32c::crc32c(&fixture().seg1)),
        })
        .unwrap();
    assert!(env.wal_objects().is_empty());

    let r = env.push(&path).await;
    let stored = env.stored_content(SEG1).await;
    assert!(
        stored.as_deref() == Some(&fixture().seg1[..]),
        "wal-push returned {r:?} but the repository holds no {SEG1}: objects {:?} \
         (the push-ahead record was trusted without checking the repository)",
        env.wal_objects()
    );
    r.unwrap();
    assert!(!env.spool().has(&wal_name(SEG1)));
}

/// PostgreSQL's call for a file that another process is pushing right now (the background
/// pusher holds the file's claim) waits for it and then takes its record, instead of
/// compressing and storing the file a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_waits_for_the_claim_holder_and_takes_its_record() {
    const HOLD: Duration = Duration::from_millis(400);
    let env = Env::new(Opts {
        push_ahead: 2,
        ..Opts::default()
    })
    .await;
    let path = env.add_segment(1, true);
    let name = wal_name(SEG1);
    let spool = env.spool();
    let mut claim = spool.try_claim(&name).expect("nobody holds the claim yet");
    assert!(
        spool.try_claim(&name).is_none(),
        "a held claim must not be granted twice"
    );

    let other_pusher = async {
        let report = env.pusher().push_one(&path, &name).await.unwrap();
        tokio::time::sleep(HOLD).await;
        assert!(pgward::wal::push::record_pushed(&spool, &report));
        claim.mark_done();
        drop(claim);
    };
    let started = Instant::now();
    let (pushed, ()) = tokio::join!(env.push(&path), other_pusher);
    pushed.unwrap();
    assert!(
        started.elapsed() >= HOLD,
        "wal-push returned after {:?}, while another pusher still held the file's claim",
        started.elapsed()
    );
    assert!(
        !spool.has(&name),
        "the call must have used (and removed) the other pusher's record"
    );
    assert_eq!(env.wal_objects().len(), 1, "{:?}", env.wal_objects());
    assert!(env.stored_content(SEG1).await.unwrap() == fixture().seg1);
    // Whoever claims it later is told it is archived: a background pusher leaves it alone.
    assert!(spool.try_claim(&name).unwrap().already_done());
}

/// The background pusher run in process: it stores a window of the backlog, records it, skips
/// a file whose claim says it is archived, and exits once the archiver takes no records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_pusher_fills_its_window_and_exits() {
    let env = Env::new(Opts {
        push_ahead: 3,
        ..Opts::default()
    })
    .await;
    for n in 1..=6 {
        env.add_segment(n, true);
    }
    let spool = env.spool();
    // Segment 1 was archived by PostgreSQL's own call, which is not done with it yet.
    spool.try_claim(&wal_name(SEG1)).expect("claim").mark_done();
    let ran = env.run_background_pusher().await;
    assert!(ran >= pgward::wal::background::IDLE_EXIT);
    let recorded: Vec<u64> = (1..=6)
        .filter(|&n| spool.has(&wal_name(&seg_name(n))))
        .collect();
    assert_eq!(
        recorded,
        vec![2, 3, 4],
        "a window of 3 after the archived segment 1"
    );
    assert_eq!(env.wal_objects().len(), 3, "{:?}", env.wal_objects());
    env.assert_records_backed("after the background pusher")
        .await;
    for n in 2..=4 {
        let rec = spool.read(&wal_name(&seg_name(n))).unwrap();
        assert_eq!(rec.crc32c, Some(crc32c::crc32c(&segment_bytes(n))));
        assert!(env.stored_content(&seg_name(n)).await.unwrap() == segment_bytes(n));
    }
}

/// A background pusher whose stores fail records nothing, does not mark the files archived, and
/// still exits; PostgreSQL's own calls then archive the files once the store works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_pusher_with_a_failing_store_records_nothing() {
    let env = Env::new(Opts {
        push_ahead: 3,
        ..Opts::default()
    })
    .await;
    let paths: Vec<PathBuf> = (1..=3).map(|n| env.add_segment(n, true)).collect();
    let spool = env.spool();
    env.faulty.fail_puts_permanently(true);
    env.run_background_pusher().await;
    assert!(env.records().is_empty(), "{:?}", env.records());
    assert!(env.wal_objects().is_empty(), "{:?}", env.wal_objects());
    for n in 1..=3 {
        let claim = spool
            .try_claim(&wal_name(&seg_name(n)))
            .expect("claims released");
        assert!(
            !claim.already_done(),
            "segment {n} marked archived after a failed store"
        );
    }

    env.faulty.fail_puts_permanently(false);
    for (n, path) in (1..=3).zip(&paths) {
        env.push(path).await.unwrap();
        assert!(env.stored_content(&seg_name(n)).await.unwrap() == segment_bytes(n));
    }
}

// ---------------------------------------------------------------------------------------------
// A full disk at the fetch destination
// ---------------------------------------------------------------------------------------------

/// `wal-fetch` onto a disk that refuses every byte must fail and leave nothing behind, whatever
/// the size of the file. The one test here that needs its own process: a file size limit of 0
/// (`ulimit -f 0`, SIGXFSZ ignored, so writes fail with EFBIG as on a full disk) cannot be set
/// for one test inside the shared test process.
#[test]
fn fetch_onto_a_full_disk_fails_and_leaves_nothing() {
    use common::pg::{
        RepoSpec, as_postgres, pgward, pgward_ok, reachable_binary, run_with_timeout, write_config,
        write_postgres_file,
    };
    let dir = TestDir::new("fulldisk");
    let pg = PgCluster::init(&dir, "pg", InitOpts::default());
    let cfg = write_config(&dir, &pg.datadir, RepoSpec::Local(dir.path().join("repo")));
    let cfg = cfg.to_str().unwrap();
    pgward_ok(dir.path(), &["--config", cfg, "init"]);
    // A segment and a timeline history file, both archived.
    let history = "1\t0/3000000\tno recovery target specified\n";
    write_postgres_file(
        &pg.datadir.join("pg_wal/00000002.history"),
        history.as_bytes(),
    );
    for rel in [
        format!("pg_wal/{SEG1}"),
        "pg_wal/00000002.history".to_string(),
    ] {
        let out = pgward(&pg.datadir, &["--config", cfg, "wal-push", &rel]);
        assert_eq!(out.code(), Some(0), "wal-push {rel}\n{}", out.describe());
    }

    for name in [SEG1, "00000002.history"] {
        let dest = pg.datadir.join("pg_wal/RECOVERYXLOG");
        let mut cmd = std::process::Command::new("bash");
        cmd.arg("-c")
            .arg(r#"trap '' XFSZ; ulimit -f 0; exec "$0" "$@""#)
            .arg(reachable_binary())
            .args(["--config", cfg, "wal-fetch", name, "pg_wal/RECOVERYXLOG"])
            .current_dir(&pg.datadir);
        as_postgres(&mut cmd);
        let out = run_with_timeout(&mut cmd, Duration::from_secs(60));
        let left = fs::metadata(&dest).map(|m| m.len()).ok();
        assert!(
            out.code() == Some(1) && left.is_none(),
            "wal-fetch {name} onto a full disk: expected exit 1 and no file, got {:?} and \
             RECOVERYXLOG of {left:?} bytes (the original is {} bytes)\n{}",
            out.code(),
            if name == SEG1 {
                fixture().seg1.len()
            } else {
                history.len()
            },
            out.describe()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// S3 answers that are not what they seem
// ---------------------------------------------------------------------------------------------

/// AWS answers a conditional PUT with 409 ConditionalRequestConflict while another conditional
/// write to the key is in progress, and may store nothing. The S3 server here answers the first
/// conditional PUT of every key that way: `wal-push` must not report success until the object
/// is really there (it used to count the 409 as "already archived" and exit 0 with nothing
/// stored, and PostgreSQL would have recycled the segment).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_409_from_s3_is_never_taken_for_archived() {
    let server = S3Server::start().await;
    let s3: DynStorage = Arc::new(server.storage("pgward-409", "repo").await);
    RepoIdentity::create(s3.as_ref(), &fixture().identity)
        .await
        .unwrap();
    server.faults.conflict_first_conditional_puts(true);
    let env = Env::with_inner(Opts::default(), |_| s3.clone()).await;
    for segno in 1..=4 {
        let path = env.add_segment(segno, false);
        let name = seg_name(segno);
        env.push(&path)
            .await
            .unwrap_or_else(|e| panic!("push {name}: {e:#}"));
        let dest = env.dir.path().join("fetched");
        env.fetch(&name, &dest).await.unwrap_or_else(|e| {
            panic!("{name} was reported archived but cannot be fetched: {e:#}")
        });
        assert!(fs::read(&dest).unwrap() == segment_bytes(segno), "{name}");
    }
    assert_eq!(server.faults.conflicts(), 4, "every push met a 409 first");
}
