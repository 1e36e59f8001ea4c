//! One storage contract, every backend (STYLE item 2): the suite in [`contract`] runs against
//! the local directory, memory, S3 (an in-process server, never skipped), the fault-injecting
//! wrapper, and the retrying wrapper over stores that fail. What the suite checks is the
//! contract written on `pgward::storage::Storage`.
//!
//! After the suite, targeted tests prove the failure behaviour that `wal-push` relies on
//! (STYLE item 9): a stuck store fails fast, permanent failures are not retried, a cancelled
//! local put leaves nothing, an unreachable S3 endpoint is transient, and bad credentials are
//! permanent with a message that never shows the secret.

mod common;

use bytes::Bytes;
use common::s3_server::S3Server;
use futures::{StreamExt, TryStreamExt};
use pgward::config::{S3Config, Secret};
use pgward::storage::faulty::FaultyStorage;
use pgward::storage::local::LocalStorage;
use pgward::storage::memory::MemoryStorage;
use pgward::storage::retry::{self, RetryPolicy, RetryingStorage};
use pgward::storage::s3::S3Storage;
use pgward::storage::stream::{chunks_of, collect};
use pgward::storage::{DynStorage, PutOutcome, Storage, StorageError, put_stream};
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;

/// 40 MiB of deterministic, incompressible-looking bytes (shared by all tests of this binary).
fn big() -> Bytes {
    static BIG: OnceLock<Bytes> = OnceLock::new();
    BIG.get_or_init(|| {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut v = Vec::with_capacity(40 * MIB);
        while v.len() < 40 * MIB {
            // xorshift64
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.extend_from_slice(&x.to_le_bytes());
        }
        Bytes::from(v)
    })
    .clone()
}

/// A WAL-like key: `wal/<tli>/<segment>-<64 hex>.zst`.
fn wal_key(tli: u32, seg: u64) -> String {
    let name = format!("{tli:08X}{:08X}{:08X}", seg >> 32, seg & 0xffff_ffff);
    let sha: String = format!("{name}{name}{name}")
        .chars()
        .take(64)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    format!("wal/{tli:08X}/{name}-{sha}.zst")
}

fn assert_same(what: &str, got: &Bytes, want: &Bytes) {
    // Not assert_eq!: a mismatch on 40 MiB must not print 40 MiB.
    assert!(
        got.len() == want.len() && got == want,
        "{what}: got {} bytes, want {} bytes{}",
        got.len(),
        want.len(),
        if got.len() == want.len() {
            " (contents differ)"
        } else {
            ""
        }
    );
}

async fn keys(s: &DynStorage, prefix: &str) -> Vec<String> {
    let list = s
        .list(prefix)
        .await
        .unwrap_or_else(|e| panic!("list {prefix:?}: {e}"));
    let keys: Vec<String> = list.iter().map(|m| m.key.clone()).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "list {prefix:?} must be sorted by key");
    for k in &keys {
        assert!(k.starts_with(prefix), "list {prefix:?} returned {k}");
    }
    keys
}

/// What every `Storage` must do. `many` adds a listing of more than 1000 objects (one S3 page).
async fn contract(s: DynStorage, many: bool) {
    let desc = s.describe();
    assert!(!desc.is_empty());

    // --- round trips, of sizes that take different paths (S3: single put vs multipart) ------
    let big = big();
    let cases: Vec<(&str, Bytes)> = vec![
        ("rt/empty", Bytes::new()),
        ("rt/one", Bytes::from_static(b"x")),
        ("rt/1mib", big.slice(..MIB)),
        ("rt/40mib", big.clone()),
    ];
    for (key, data) in &cases {
        s.put(key, data.clone())
            .await
            .unwrap_or_else(|e| panic!("{desc}: put {key}: {e}"));
    }
    for (key, data) in &cases {
        let got = s
            .get(key)
            .await
            .unwrap_or_else(|e| panic!("{desc}: get {key}: {e}"));
        assert_same(&format!("{desc}: get {key}"), &got, data);
        let meta = s.head(key).await.unwrap().expect("head of a stored object");
        assert_eq!(meta.key, *key);
        assert_eq!(meta.size, data.len() as u64, "head {key}");
    }

    // --- overwrite ------------------------------------------------------------------------
    s.put("ow/k", Bytes::from_static(b"first")).await.unwrap();
    s.put("ow/k", Bytes::from_static(b"second, longer"))
        .await
        .unwrap();
    assert_eq!(&s.get("ow/k").await.unwrap()[..], b"second, longer");
    assert_eq!(s.head("ow/k").await.unwrap().unwrap().size, 14);
    s.put("ow/k", Bytes::from_static(b"3")).await.unwrap();
    assert_eq!(&s.get("ow/k").await.unwrap()[..], b"3");

    // --- put_if_absent --------------------------------------------------------------------
    let k = wal_key(1, 3);
    assert_eq!(
        s.put_if_absent(&k, Bytes::from_static(b"original"))
            .await
            .unwrap(),
        PutOutcome::Written
    );
    assert_eq!(
        s.put_if_absent(&k, Bytes::from_static(b"other"))
            .await
            .unwrap(),
        PutOutcome::AlreadyExists
    );
    assert_eq!(&s.get(&k).await.unwrap()[..], b"original");
    // Large enough for a multipart upload on S3.
    let large = big.slice(..17 * MIB);
    assert_eq!(
        s.put_if_absent("pia/large", large.clone()).await.unwrap(),
        PutOutcome::Written
    );
    assert_eq!(
        s.put_if_absent("pia/large", big.slice(MIB..18 * MIB))
            .await
            .unwrap(),
        PutOutcome::AlreadyExists
    );
    assert_same(
        "put_if_absent large",
        &s.get("pia/large").await.unwrap(),
        &large,
    );

    // --- missing objects --------------------------------------------------------------------
    match s.get("missing/object").await {
        Err(StorageError::NotFound(_)) => {}
        other => panic!("{desc}: get of a missing object: {other:?}"),
    }
    assert_eq!(s.head("missing/object").await.unwrap(), None);
    // A key that is only a prefix of other keys is not an object. (A whole "directory" such as
    // `rt` is covered by the local backend's unit tests: s3s-fs, storing objects as files,
    // answers a GET of a directory with a server error, which real S3 never does.)
    assert!(s.get("rt/1").await.unwrap_err().is_not_found());
    assert_eq!(s.head("rt/1").await.unwrap(), None);

    // --- listing ------------------------------------------------------------------------------
    let wal = [
        wal_key(1, 3),
        wal_key(1, 4),
        wal_key(1, 0x1_0000_0000),
        wal_key(2, 5),
        format!("wal/00000002.history-{}.zst", "ab".repeat(32)),
    ];
    for k in &wal[1..] {
        s.put(k, Bytes::from(k.clone())).await.unwrap();
    }
    s.put(
        "backups/20261122T013000Z/manifest.json.zst",
        Bytes::from_static(b"m"),
    )
    .await
    .unwrap();
    s.put(
        "backups/20261122T013000Z/in-progress.json",
        Bytes::from_static(b"{}"),
    )
    .await
    .unwrap();
    s.put("repo.json", Bytes::from_static(b"{\"version\":1}"))
        .await
        .unwrap();

    let mut all_wal = wal.to_vec();
    all_wal.sort();
    assert_eq!(keys(&s, "wal/").await, all_wal);
    assert_eq!(keys(&s, "wal").await, all_wal);
    // A prefix that ends in the middle of a file name.
    assert_eq!(
        keys(&s, "wal/00000001/0000000100000000000000").await,
        vec![wal_key(1, 3), wal_key(1, 4)]
    );
    assert_eq!(keys(&s, &wal_key(1, 4)).await, vec![wal_key(1, 4)]);
    // `.` sorts before `/`: the history file comes before the timeline's directory.
    assert_eq!(
        keys(&s, "wal/00000002").await,
        vec![wal[4].clone(), wal_key(2, 5)]
    );
    assert_eq!(
        keys(&s, "back").await,
        vec![
            "backups/20261122T013000Z/in-progress.json",
            "backups/20261122T013000Z/manifest.json.zst"
        ]
    );
    assert_eq!(keys(&s, "repo.").await, vec!["repo.json"]);
    assert!(keys(&s, "nothing/").await.is_empty());
    assert!(keys(&s, "wal/00000003/").await.is_empty());
    assert!(keys(&s, "wal/00000001/0000000200").await.is_empty());
    // list_after: strictly after the given key, within the prefix, at most `limit`, sorted.
    let after = |prefix: &'static str, start: String, limit: usize| {
        let s = s.clone();
        async move {
            let got: Vec<String> = s
                .list_after(prefix, &start, limit)
                .await
                .unwrap_or_else(|e| panic!("list_after {prefix:?} {start:?}: {e}"))
                .into_iter()
                .map(|m| m.key)
                .collect();
            got
        }
    };
    assert_eq!(
        after("wal/00000001/", wal_key(1, 3), 10).await,
        vec![wal_key(1, 4), wal_key(1, 0x1_0000_0000)]
    );
    assert_eq!(
        after("wal/00000001/", wal_key(1, 3), 1).await,
        vec![wal_key(1, 4)]
    );
    // A start past the key itself (`~` sorts after `-` and `.`) and past the prefix's end.
    assert_eq!(
        after("wal/00000001/", format!("{}~", &wal_key(1, 4)[..37]), 5).await,
        vec![wal_key(1, 0x1_0000_0000)]
    );
    assert!(
        after("wal/00000001/", wal_key(1, 0x1_0000_0000), 5)
            .await
            .is_empty()
    );
    // A start before the prefix: the listing still stays inside it.
    assert_eq!(
        after("wal/00000002/", "wal/00000001/".to_string(), 5).await,
        vec![wal_key(2, 5)]
    );

    // Across directories, in key order (`a-x` sorts before `a/…`): what sharded WAL keys need.
    let nested = ["nest/a-x", "nest/a/1", "nest/a/2", "nest/b/1", "nest/c"];
    for k in nested {
        s.put(k, Bytes::from_static(b"n")).await.unwrap();
    }
    assert_eq!(after("nest/", "nest/a/1".into(), 10).await, nested[2..]);
    assert_eq!(after("nest/", "nest/a-x".into(), 10).await, nested[1..]);
    assert_eq!(after("nest/", "nest/a/~".into(), 1).await, ["nest/b/1"]);
    assert_eq!(after("nest/", "nest/".into(), 2).await, nested[..2]);
    for k in nested {
        s.delete(k).await.unwrap();
    }

    let everything = s.list("").await.unwrap();
    let sizes: Vec<(String, u64)> = everything.iter().map(|m| (m.key.clone(), m.size)).collect();
    for (key, data) in &cases {
        assert!(
            sizes.contains(&(key.to_string(), data.len() as u64)),
            "{desc}: list \"\" lacks {key}: {sizes:?}"
        );
    }
    assert_eq!(
        sizes.len(),
        cases.len() + 1 + 1 + wal.len() + 2 + 1,
        "{desc}: {sizes:?}"
    );
    assert_eq!(keys(&s, "").await.len(), sizes.len());

    if many {
        // More than one page of ListObjectsV2 (1000 keys).
        let n = 1100;
        futures::stream::iter(0..n)
            .map(|i| {
                let s = s.clone();
                async move { s.put(&format!("many/k{i:05}"), Bytes::new()).await }
            })
            .buffer_unordered(16)
            .try_collect::<()>()
            .await
            .unwrap();
        let listed = keys(&s, "many/").await;
        let want: Vec<String> = (0..n).map(|i| format!("many/k{i:05}")).collect();
        assert_eq!(listed, want);
        assert_eq!(keys(&s, "many/k0105").await, want[1050..1060].to_vec());
        // More than one DeleteObjects request (1000 keys), and keys that never existed.
        let mut doomed = want.clone();
        doomed.push("many/never-existed".into());
        let failed = s.delete_many(&doomed).await;
        assert!(failed.is_empty(), "{desc}: {failed:?}");
        assert!(keys(&s, "many/").await.is_empty(), "{desc}");
    }

    // --- copy ---------------------------------------------------------------------------------
    s.put("cp/a", Bytes::from_static(b"alpha")).await.unwrap();
    s.put("cp/taken", Bytes::from_static(b"kept"))
        .await
        .unwrap();
    assert_eq!(
        s.copy_if_absent("cp/a", "cp/sub/b").await.unwrap(),
        PutOutcome::Written
    );
    assert_eq!(
        s.get("cp/sub/b").await.unwrap(),
        Bytes::from_static(b"alpha")
    );
    assert_eq!(
        s.get("cp/a").await.unwrap(),
        Bytes::from_static(b"alpha"),
        "{desc}: source kept"
    );
    assert_eq!(
        s.copy_if_absent("cp/a", "cp/taken").await.unwrap(),
        PutOutcome::AlreadyExists
    );
    assert_eq!(
        s.get("cp/taken").await.unwrap(),
        Bytes::from_static(b"kept")
    );
    assert!(
        s.copy_if_absent("cp/missing", "cp/c")
            .await
            .unwrap_err()
            .is_not_found(),
        "{desc}: copy of a missing object"
    );
    assert_eq!(s.head("cp/c").await.unwrap(), None);
    // The copy is independent of its source.
    s.delete("cp/a").await.unwrap();
    assert_eq!(
        s.get("cp/sub/b").await.unwrap(),
        Bytes::from_static(b"alpha")
    );
    for k in ["cp/sub/b", "cp/taken"] {
        s.delete(k).await.unwrap();
    }

    // --- streams ------------------------------------------------------------------------------
    streams(&s, &big).await;

    // --- delete -------------------------------------------------------------------------------
    s.delete("ow/k").await.unwrap();
    assert_eq!(s.head("ow/k").await.unwrap(), None);
    assert!(s.get("ow/k").await.unwrap_err().is_not_found());
    s.delete("ow/k").await.unwrap();
    s.delete("never/existed").await.unwrap();
    assert!(keys(&s, "ow/").await.is_empty());

    // delete_many: every key gone, missing keys included; an empty batch is a no-op.
    for k in ["dm/a", "dm/sub/b", "dm/c"] {
        s.put(k, Bytes::from_static(b"d")).await.unwrap();
    }
    assert!(s.delete_many(&[]).await.is_empty(), "{desc}");
    let doomed: Vec<String> = ["dm/a", "dm/sub/b", "dm/missing"]
        .iter()
        .map(|k| k.to_string())
        .collect();
    let failed = s.delete_many(&doomed).await;
    assert!(failed.is_empty(), "{desc}: {failed:?}");
    assert_eq!(keys(&s, "dm/").await, vec!["dm/c".to_string()], "{desc}");
    s.delete("dm/c").await.unwrap();

    // last_modified: every backend says when an object was written (to the second).
    let before = chrono::Utc::now() - chrono::Duration::seconds(2);
    s.put("lm/k", Bytes::from_static(b"t")).await.unwrap();
    let after = chrono::Utc::now() + chrono::Duration::seconds(2);
    let headed = s.head("lm/k").await.unwrap().unwrap().last_modified;
    let listed = s.list("lm/").await.unwrap()[0].last_modified;
    for t in [headed, listed] {
        let t = t.unwrap_or_else(|| panic!("{desc}: no last_modified"));
        assert!(
            before <= t && t <= after,
            "{desc}: {t} not in [{before}, {after}]"
        );
    }
    s.delete("lm/k").await.unwrap();

    // Deleting everything leaves an empty listing.
    let rest = keys(&s, "").await;
    futures::stream::iter(rest)
        .map(|k| {
            let s = s.clone();
            async move { s.delete(&k).await }
        })
        .buffer_unordered(16)
        .try_collect::<()>()
        .await
        .unwrap();
    assert!(
        keys(&s, "").await.is_empty(),
        "{desc}: objects left after deleting all"
    );
}

/// `put_stream` and `get_stream`: sizes that take every path (one put, several parts), reads
/// from an offset, and a source that fails midway.
async fn streams(s: &DynStorage, big: &Bytes) {
    let desc = s.describe();
    // Two parts and a bit, in odd-sized chunks that never line up with a part.
    let large = big.slice(..20 * MIB + 12_345);
    let stored = put_stream(s, "st/large", chunks_of(large.clone(), 777_777))
        .await
        .unwrap_or_else(|e| panic!("{desc}: put_stream st/large: {e}"));
    assert_eq!(stored, large.len() as u64);
    assert_same(
        &format!("{desc}: get st/large"),
        &s.get("st/large").await.unwrap(),
        &large,
    );
    let whole = collect(s.get_stream("st/large", 0).await.unwrap())
        .await
        .unwrap();
    assert_same(&format!("{desc}: get_stream st/large"), &whole, &large);
    let from = 9 * MIB as u64 + 5;
    let tail = collect(s.get_stream("st/large", from).await.unwrap())
        .await
        .unwrap();
    assert_same(
        &format!("{desc}: get_stream from {from}"),
        &tail,
        &large.slice(from as usize..),
    );
    let none = collect(s.get_stream("st/large", large.len() as u64).await.unwrap())
        .await
        .unwrap();
    assert!(none.is_empty(), "{desc}: a stream from the end is empty");
    assert!(
        s.get_stream("st/missing", 0)
            .await
            .err()
            .expect("missing")
            .is_not_found(),
        "{desc}: get_stream of a missing key is NotFound"
    );

    for (key, data) in [
        ("st/small", Bytes::from_static(b"hello")),
        ("st/empty", Bytes::new()),
    ] {
        let n = put_stream(s, key, chunks_of(data.clone(), 2))
            .await
            .unwrap();
        assert_eq!(n, data.len() as u64);
        assert_eq!(s.get(key).await.unwrap(), data, "{desc}: {key}");
    }

    // A source that dies after more than one part: nothing new is visible, and an object that
    // was under the key stays as it was.
    let dying = || {
        chunks_of(big.slice(..17 * MIB), MIB).chain(futures::stream::once(async {
            Err(std::io::Error::other("the source died"))
        }))
    };
    s.put("st/kept", Bytes::from_static(b"old")).await.unwrap();
    for key in ["st/kept", "st/never"] {
        let err = put_stream(s, key, dying().boxed()).await.unwrap_err();
        assert!(err.to_string().contains("the source died"), "{desc}: {err}");
    }
    assert_eq!(s.get("st/kept").await.unwrap(), Bytes::from_static(b"old"));
    assert_eq!(
        s.head("st/never").await.unwrap(),
        None,
        "{desc}: failed stream visible"
    );
    assert_eq!(
        keys(s, "st/").await,
        ["st/empty", "st/kept", "st/large", "st/small"],
        "{desc}"
    );
}

/// Retries quickly so that injected failures do not slow the suite down.
fn quick_policy(attempts: u32) -> RetryPolicy {
    RetryPolicy {
        attempts,
        attempt_timeout: Duration::from_secs(30),
        base_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(10),
        ..RetryPolicy::default()
    }
}

// ------------------------------------------------------------------------------------------------
// The contract on every backend
// ------------------------------------------------------------------------------------------------

#[tokio::test]
async fn contract_local() {
    let dir = tempfile::tempdir().unwrap();
    let s: DynStorage = Arc::new(LocalStorage::new(dir.path().join("repo")));
    contract(s, false).await;
    assert_no_temp_files(dir.path());
}

#[tokio::test]
async fn contract_memory() {
    let mem = Arc::new(MemoryStorage::new());
    contract(mem.clone(), true).await;
    assert!(mem.is_empty());
    assert_eq!(mem.open_uploads(), 0, "failed streams abort their uploads");
    assert!(mem.put_count() > 1100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_s3() {
    let server = S3Server::start().await;
    let s = server.storage("pgward-contract", "cluster/a").await;
    contract(Arc::new(s), true).await;
}

#[tokio::test]
async fn contract_faulty_without_faults() {
    let faulty = Arc::new(FaultyStorage::new(Arc::new(MemoryStorage::new())));
    contract(faulty.clone(), false).await;
    assert!(faulty.calls() > 0);
    assert_eq!(faulty.injected_failures(), 0);
}

#[tokio::test]
async fn contract_retrying_over_failing_store() {
    let faulty = Arc::new(FaultyStorage::new(Arc::new(MemoryStorage::new())));
    faulty.fail_next(3);
    let s: DynStorage = Arc::new(RetryingStorage::new(faulty.clone(), quick_policy(5)));
    contract(s, false).await;
    assert_eq!(faulty.injected_failures(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_retrying_over_s3() {
    let server = S3Server::start().await;
    let s3 = server.storage("pgward-retrying", "").await;
    let s = pgward::storage::retry::wrap(Arc::new(s3), RetryPolicy::default());
    contract(s, false).await;
}

/// A part that fails is re-sent from memory; a download that breaks resumes where it was.
#[tokio::test]
async fn streams_survive_transient_failures() {
    let mem = Arc::new(MemoryStorage::new());
    let faulty = Arc::new(FaultyStorage::new(mem.clone()));
    let s: DynStorage = Arc::new(RetryingStorage::new(faulty.clone(), quick_policy(5)));
    let data = big().slice(..18 * MIB);
    faulty.fail_op_next("upload_part", 3);
    let n = put_stream(&s, "st/x", chunks_of(data.clone(), MIB))
        .await
        .unwrap();
    assert_eq!(n, data.len() as u64);
    assert_eq!(faulty.injected_failures(), 3);
    assert_same("after part retries", &mem.get("st/x").await.unwrap(), &data);

    let before = faulty.injected_failures();
    faulty
        .break_stream_after(5 * MIB as u64)
        .break_stream_after(6 * MIB as u64);
    let got = collect(s.get_stream("st/x", 0).await.unwrap())
        .await
        .unwrap();
    assert_same("after two broken downloads", &got, &data);
    assert_eq!(faulty.injected_failures(), before + 2);
    assert_eq!(mem.open_uploads(), 0);
}

fn assert_no_temp_files(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        assert!(
            !name.starts_with(pgward::fsutil::TEMP_PREFIX),
            "temp file left behind: {}",
            entry.path().display()
        );
        if entry.file_type().unwrap().is_dir() {
            assert_no_temp_files(&entry.path());
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Failure behaviour
// ------------------------------------------------------------------------------------------------

#[tokio::test]
async fn retrying_gives_up_on_a_hanging_store_quickly() {
    let faulty = Arc::new(FaultyStorage::new(Arc::new(MemoryStorage::new())));
    faulty.hang(Some(Duration::from_secs(10)));
    let s = RetryingStorage::new(
        faulty.clone(),
        RetryPolicy {
            attempts: 2,
            attempt_timeout: Duration::from_millis(200),
            base_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(100),
            ..RetryPolicy::default()
        },
    );
    let t0 = Instant::now();
    let err = pgward::storage::Storage::put(&s, &wal_key(1, 7), Bytes::from_static(b"wal"))
        .await
        .unwrap_err();
    let took = t0.elapsed();
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("2 attempts"), "{err}");
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    assert_eq!(faulty.calls(), 2);
    faulty.hang(None);
    assert_eq!(
        pgward::storage::Storage::head(&s, &wal_key(1, 7))
            .await
            .unwrap(),
        None,
        "a put that timed out did not write"
    );
}

#[tokio::test]
async fn permanent_failures_are_not_retried() {
    let mem = Arc::new(MemoryStorage::new());
    let faulty = Arc::new(FaultyStorage::new(mem.clone()));
    faulty.fail_puts_permanently(true);
    let s = RetryingStorage::new(faulty.clone(), quick_policy(5));
    use pgward::storage::Storage;
    match s.put("k", Bytes::from_static(b"v")).await {
        Err(StorageError::Permanent(_)) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(faulty.calls(), 1);
    match s.put_if_absent("k", Bytes::from_static(b"v")).await {
        Err(StorageError::Permanent(_)) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(faulty.calls(), 2);
    // Not found is an answer, not a failure.
    assert!(s.get("k").await.unwrap_err().is_not_found());
    assert_eq!(faulty.calls(), 3);
    assert_eq!(
        mem.put_count(),
        0,
        "injected failures happen before the store is touched"
    );
}

#[tokio::test]
async fn transient_failures_exhaust_attempts() {
    let faulty = Arc::new(FaultyStorage::new(Arc::new(MemoryStorage::new())));
    faulty.fail_next(100);
    let s = RetryingStorage::new(faulty.clone(), quick_policy(4));
    let err = pgward::storage::Storage::list(&s, "wal/")
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(
        err.to_string().contains("gave up after 4 attempts"),
        "{err}"
    );
    assert_eq!(faulty.calls(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_local_put_leaves_no_object() {
    use pgward::storage::Storage;
    let dir = tempfile::tempdir().unwrap();
    let s = LocalStorage::new(dir.path().to_path_buf());
    let key = wal_key(1, 9);
    let r = tokio::time::timeout(Duration::from_millis(1), s.put(&key, big())).await;
    assert!(
        r.is_err(),
        "a 40 MiB put with fsync finished within 1 ms; the test cannot cancel it"
    );
    // The writer notices the cancellation between chunks; give it time to clean up.
    let deadline = Instant::now() + Duration::from_secs(10);
    tokio::time::sleep(Duration::from_millis(300)).await;
    while temp_files(dir.path()) > 0 {
        assert!(Instant::now() < deadline, "temp file never removed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(s.head(&key).await.unwrap(), None);
    assert!(s.get(&key).await.unwrap_err().is_not_found());
    assert!(s.list("wal/").await.unwrap().is_empty());

    // The same put, not cancelled, then stores the whole object.
    s.put(&key, big()).await.unwrap();
    assert_same(
        "put after a cancelled put",
        &s.get(&key).await.unwrap(),
        &big(),
    );
}

fn temp_files(dir: &Path) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            n += temp_files(&entry.path());
        } else if entry
            .file_name()
            .to_string_lossy()
            .starts_with(pgward::fsutil::TEMP_PREFIX)
        {
            n += 1;
        }
    }
    n
}

#[tokio::test]
async fn s3_unreachable_endpoint_is_transient() {
    use pgward::storage::Storage;
    // A port that was free a moment ago: connections are refused.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cfg = S3Config {
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        region: "us-east-1".into(),
        force_path_style: true,
        access_key_id: Some("AK".into()),
        secret_access_key: Some(Secret::new("unreachable-secret")),
    };
    let s = S3Storage::connect("pgward-nowhere".into(), "p".into(), Some(&cfg))
        .await
        .unwrap();
    let t0 = Instant::now();
    let results = tokio::time::timeout(Duration::from_secs(10), async {
        (
            s.put(&wal_key(1, 1), Bytes::from_static(b"x")).await,
            s.get("k").await.map(|_| ()),
            s.list("").await.map(|_| ()),
        )
    })
    .await
    .expect("an unreachable S3 endpoint must fail, not hang");
    for (what, r) in [("put", results.0), ("get", results.1), ("list", results.2)] {
        match r {
            Err(StorageError::Transient(m)) => {
                assert!(m.contains(&format!("127.0.0.1:{port}")), "{what}: {m}");
                assert!(!m.contains("unreachable-secret"), "{what}: {m}");
            }
            other => panic!("{what}: {other:?}"),
        }
    }
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t0.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_wrong_secret_is_permanent_and_not_shown() {
    use pgward::storage::Storage;
    let server = S3Server::start().await;
    let _bucket = server.storage("pgward-auth", "").await;
    let wrong = "wrong-secret-3f9a1c7e5b";
    let mut cfg = server.s3_config();
    cfg.secret_access_key = Some(Secret::new(wrong));
    let s = S3Storage::connect("pgward-auth".into(), "".into(), Some(&cfg))
        .await
        .unwrap();
    let errors = [
        s.put("k", Bytes::from_static(b"v")).await.unwrap_err(),
        s.put_if_absent("k", Bytes::from_static(b"v"))
            .await
            .unwrap_err(),
        s.get("k").await.unwrap_err(),
        s.list("").await.unwrap_err(),
    ];
    for err in errors {
        let msg = format!("{err} {err:?}");
        assert!(matches!(err, StorageError::Permanent(_)), "{msg}");
        assert!(msg.contains("check credentials"), "{msg}");
        assert!(msg.contains("pgward-auth"), "names the bucket: {msg}");
        assert!(!msg.contains(wrong), "secret leaked: {msg}");
        assert!(!msg.contains(&server.secret_key), "secret leaked: {msg}");
    }
    // Through the retrying wrapper: not retried, still permanent.
    let r = RetryingStorage::new(Arc::new(s), quick_policy(5));
    let t0 = Instant::now();
    assert!(matches!(r.get("k").await, Err(StorageError::Permanent(_))));
    assert!(t0.elapsed() < Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_missing_bucket_is_permanent() {
    use pgward::storage::Storage;
    let server = S3Server::start().await;
    let s = S3Storage::connect(
        "pgward-absent".into(),
        "p".into(),
        Some(&server.s3_config()),
    )
    .await
    .unwrap();
    // Only listing: s3s-fs creates a missing bucket's directory on PUT, which S3 never does.
    match s.list("").await {
        Err(StorageError::Permanent(m)) => {
            assert!(m.contains("create the bucket"), "{m}");
            assert!(m.contains("pgward-absent"), "{m}");
        }
        other => panic!("{other:?}"),
    }
}

/// A listing of many pages from a distant store: every page answers within the per-attempt
/// deadline, the whole listing does not. Each page must be its own attempt (one deadline over
/// the whole listing failed every backup and restore of a large repository).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_listing_of_many_pages_is_timed_per_page() {
    let server = S3Server::start().await;
    let s3 = server.storage("pgward-pages", "repo").await;
    // 5000 objects written straight into the server's directory (s3s-fs lists files).
    let dir = server.root().join("pgward-pages/repo/wal/00000001");
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..5000u32 {
        std::fs::write(dir.join(format!("k{i:05}")), b"x").unwrap();
    }
    // The test double walks the whole directory for every page; measure what one page costs
    // it, so that the deadline stays about 3 pages of latency whatever the build.
    let t = Instant::now();
    let page = s3.list_page("wal/00000001/", None).await.unwrap();
    assert_eq!(page.objects.len(), 1000);
    let served = t.elapsed();
    let latency = Duration::from_millis(300);
    // One page (latency + its serving time) fits in two latencies and three measured serving
    // times, with a latency's worth of slack for a page served slower on a loaded machine;
    // five pages never fit.
    let deadline = latency * 2 + served * 3;
    eprintln!("one page: {served:?}; latency {latency:?}, deadline {deadline:?}");
    server.faults.set_latency(latency);
    let s = retry::wrap(
        Arc::new(s3),
        RetryPolicy {
            attempts: 3,
            attempt_timeout: deadline,
            base_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(5),
            ..RetryPolicy::default()
        },
    );
    let t = Instant::now();
    let listed = s
        .list("wal/00000001/")
        .await
        .expect("each page fits in its deadline");
    assert_eq!(listed.len(), 5000);
    assert_eq!(listed[4999].key, "wal/00000001/k04999");
    assert!(
        t.elapsed() > deadline,
        "the whole listing must take longer than one deadline, or this proves nothing"
    );
}

/// S3 specifics of `delete_many` (issue 12): 2500 keys go as three DeleteObjects requests; a
/// store that fails every 7th key of each batch once (per-key errors in the answer) and then
/// 503s one whole request sees the failed keys reported by the store, retried by the retry
/// layer, and the run converges: everything is gone and nothing is reported. Keys refused
/// for good are returned, named, and left in place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_delete_many_retries_failed_keys_of_a_batch_and_converges() {
    let server = S3Server::start().await;
    let s3: DynStorage = Arc::new(server.storage("pgward-deletes", "repo").await);
    let n = 2500;
    let all: Vec<String> = (0..n).map(|i| format!("blocks/{i:05}.zst")).collect();
    futures::stream::iter(all.clone())
        .map(|k| {
            let s3 = s3.clone();
            async move { s3.put(&k, Bytes::from_static(b"b")).await }
        })
        .buffer_unordered(32)
        .try_collect::<()>()
        .await
        .unwrap();

    // Without retries, the store's per-key failures come back as they are.
    let faulty = Arc::new(FaultyStorage::new(s3.clone()));
    faulty.fail_batch_keys(7, 1, false);
    let first: Vec<String> = all[..700].to_vec();
    let failed = faulty.delete_many(&first).await;
    assert_eq!(failed.len(), 100, "every 7th of 700 keys");
    assert!(failed.iter().all(|f| f.error.is_transient()));
    assert_eq!(keys(&s3, "blocks/").await.len(), n - 600);

    // Through the retry layer: per-key failures, then a 503 for a whole request, both retried.
    faulty.fail_batch_keys(7, 1, false);
    faulty.fail_op_next("delete_many", 1);
    let s = retry::wrap(faulty.clone(), quick_policy(4));
    let injected = faulty.injected_failures();
    let failed = s.delete_many(&all[..2000]).await;
    assert!(failed.is_empty(), "{failed:?}");
    assert!(faulty.injected_failures() > injected);
    assert_eq!(keys(&s3, "blocks/").await, all[2000..].to_vec());

    // Keys refused for good are named and stay; the others go.
    faulty.fail_batch_keys(100, 1, true);
    let failed = s.delete_many(&all[2000..]).await;
    let mut refused: Vec<String> = failed.iter().map(|f| f.key.clone()).collect();
    refused.sort();
    assert_eq!(
        refused,
        vec![
            all[2000].clone(),
            all[2100].clone(),
            all[2200].clone(),
            all[2300].clone(),
            all[2400].clone()
        ]
    );
    assert!(failed.iter().all(|f| !f.error.is_transient()));
    assert_eq!(keys(&s3, "blocks/").await, refused);
}
