//! Block garbage collection against a backup running at the same moment (issue 12, item 4 (a)),
//! with a real PostgreSQL 15 and injected clocks.
//!
//! The backups run in this process so that the walk's test hook can pause them after they
//! loaded the known blocks (and before they copy `base/`). While one is paused, the test
//! expires the previous backup (deletes its manifest), so every block the paused backup is
//! about to deduplicate against is unreferenced, marks them, and sweeps:
//! - while the paused backup's lease is valid, the sweep defers ("a backup is running"); the
//!   backup completes, and a later sweep keeps the marked blocks it references (the
//!   deduplicated-against case, provoked) — and the backup restores with exact data;
//! - with a clock past the paused backup's lease, the sweep takes the lapsed lease over and
//!   deletes the blocks; the backup, resumed, refuses to write its manifest and says why.

mod common;

use common::backup_scenarios::{MARKER_SQL, Source, no_archiving, restore, start_restored};
use common::pg::*;
use pgward::backup::run_backup;
use pgward::backup::walk::hook;
use pgward::clock::ManualClock;
use pgward::config::Config;
use pgward::context::Context;
use pgward::events::{Events, TestSink};
use pgward::repo::layout;
use pgward::retention::gc::{self, Deferral, Gc};
use pgward::storage::DynStorage;
use pgward::storage::local::LocalStorage;
use std::fs;
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Pauses the next walk of `pgdata` before it lists `base/` and runs `during` (on its own
/// runtime: the hook runs on the copy's thread) before letting it go on.
fn pause_before_base(pgdata: &Path, during: impl FnOnce() + Send + 'static) -> mpsc::Receiver<()> {
    let at = pgdata.join("base");
    let (done_tx, done_rx) = mpsc::channel();
    let once: Mutex<Option<Box<dyn FnOnce() + Send>>> = Mutex::new(Some(Box::new(during)));
    hook::set_before_listing(move |dir| {
        if dir != at {
            return;
        }
        let Some(f) = once.lock().unwrap().take() else {
            return;
        };
        // A thread of its own: the test's storage calls need a runtime, this thread has none.
        std::thread::spawn(f)
            .join()
            .expect("the paused step panicked");
        done_tx.send(()).unwrap();
    });
    done_rx
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn gc_at<'a>(
    storage: &'a DynStorage,
    events: &'a Events,
    at: chrono::DateTime<chrono::Utc>,
) -> Gc<'a> {
    Gc {
        storage,
        events,
        clock: ManualClock::new(at),
        grace: Duration::ZERO,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_against_a_backup_that_deduplicated_against_the_blocks_it_collects() {
    let dir = TestDir::new("gcrace");
    let repo = dir.path().join("repo");
    let (dir, mut src) = tokio::task::spawn_blocking(move || {
        let src = Source::start(&dir, "src", RepoSpec::Local(repo));
        (dir, src)
    })
    .await
    .unwrap();
    let repo = dir.path().join("repo");
    let cfg_text = fs::read_to_string(&src.cfg).unwrap();
    let cfg_path = src.cfg.clone();
    let config = || Config::parse(&cfg_text, &cfg_path.display().to_string()).unwrap();
    let storage: DynStorage = Arc::new(LocalStorage::new(repo.clone()));
    let events: Events = TestSink::new();
    let ctx = Context::with_storage(config(), cfg_path.clone(), storage.clone());

    src.batch("one", 100);
    let b1 = run_backup(&ctx).await.expect("the first backup");
    src.batch("two", 100);

    // (1) Paused after loading the known blocks; B1 expired, its blocks marked; the sweep
    // finds the backup's lease valid and defers.
    let deferred = Arc::new(Mutex::new(None));
    let done = {
        let (storage, deferred, b1) = (storage.clone(), deferred.clone(), b1.label.clone());
        pause_before_base(&src.cluster.datadir, move || {
            block_on(async {
                let events: Events = TestSink::new();
                storage.delete(&layout::manifest_key(&b1)).await.unwrap();
                let now = chrono::Utc::now() + chrono::Duration::seconds(1);
                let marked = gc::mark(&gc_at(&storage, &events, now)).await.unwrap();
                assert!(marked.marked > 0, "{marked:?}");
                let swept = gc::sweep(&gc_at(&storage, &events, now)).await.unwrap();
                assert_eq!(swept.deleted, 0, "{swept:?}");
                *deferred.lock().unwrap() = swept.deferred;
            })
        })
    };
    let b2 = run_backup(&ctx).await;
    hook::clear();
    done.recv_timeout(Duration::from_secs(5))
        .expect("the pause ran");
    let b2 = b2.expect("the backup completes");
    assert!(
        matches!(&*deferred.lock().unwrap(), Some(Deferral::BackupRunning { purpose, .. }) if purpose == "backup"),
        "{:?}",
        deferred.lock().unwrap()
    );
    // The backup deduplicated against marked blocks and references them: the sweep keeps them.
    let swept = gc::sweep(&gc_at(
        &storage,
        &events,
        chrono::Utc::now() + chrono::Duration::seconds(2),
    ))
    .await
    .unwrap();
    assert_eq!(swept.deferred, None);
    assert!(
        swept.kept_referenced > 0,
        "the dedup case was provoked: {swept:?}"
    );
    assert_eq!(swept.marks_removed, 1, "{swept:?}");

    // B2 restores with exact data (and the rows committed after it, from the WAL).
    src.batch("after two", 10);
    let expected = src.expected_marker();
    let src = tokio::task::spawn_blocking({
        let dir_path = dir.path().to_path_buf();
        move || {
            chown_tree_postgres(&dir_path.join("repo"));
            src.switch_and_archive();
            src
        }
    })
    .await
    .unwrap();
    let (dir, src) = tokio::task::spawn_blocking(move || {
        let pgdata = restore(&src, &dir, "r2", &[]);
        let c = start_restored(&dir, "r2", pgdata, &no_archiving());
        assert_eq!(c.psql(MARKER_SQL), expected, "{}", c.log_tail(30));
        drop(c);
        (dir, src)
    })
    .await
    .unwrap();

    // (2) Paused again, B2 expired and marked, and a sweep whose clock is past the paused
    // backup's lease: it takes the lease over and deletes. The resumed backup refuses to
    // write its manifest.
    let ctx = Context::with_storage(config(), cfg_path.clone(), storage.clone());
    let swept_after_lapse = Arc::new(Mutex::new(None));
    let done = {
        let (storage, out, b2) = (storage.clone(), swept_after_lapse.clone(), b2.label.clone());
        pause_before_base(&src.cluster.datadir, move || {
            block_on(async {
                let events: Events = TestSink::new();
                storage.delete(&layout::manifest_key(&b2)).await.unwrap();
                let now = chrono::Utc::now() + chrono::Duration::seconds(1);
                gc::mark(&gc_at(&storage, &events, now)).await.unwrap();
                let later = chrono::Utc::now() + chrono::Duration::hours(1);
                *out.lock().unwrap() = Some(gc::sweep(&gc_at(&storage, &events, later)).await);
            })
        })
    };
    let b3 = run_backup(&ctx).await;
    hook::clear();
    done.recv_timeout(Duration::from_secs(5))
        .expect("the pause ran");
    let swept = swept_after_lapse.lock().unwrap().take().unwrap().unwrap();
    assert!(swept.deleted > 0, "{swept:?}");
    let err = b3.expect_err("the backup must not commit a manifest over deleted blocks");
    let text = format!("{err:#}");
    assert!(
        text.contains("refusing to write the manifest: garbage collection may have run meanwhile"),
        "{text}"
    );
    let manifests: Vec<String> = storage
        .list(layout::BACKUPS_PREFIX)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .filter(|k| k.ends_with("manifest.json.zst"))
        .collect();
    assert!(manifests.is_empty(), "{manifests:?}");
    drop(src);
    drop(dir);
}
