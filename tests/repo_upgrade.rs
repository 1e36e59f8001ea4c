//! `pgward init --upgrade`: a format-1 repository (one flat WAL directory per timeline) is
//! refused by every command with the upgrade hint, converted in place on a local directory
//! (through the CLI, as an operator runs it) and on S3, and then serves its WAL again.

mod common;

use bytes::Bytes;
use common::pg::RepoSpec;
use common::pg::{TestDir, chown_postgres, make_postgres_dir, pgward, pgward_ok, write_config};
use common::s3_server::S3Server;
use pgward::codec::{self, Sha256Digest};
use pgward::pg::WalFileName;
use pgward::repo::identity::RepoIdentity;
use pgward::repo::layout;
use pgward::repo::upgrade;
use pgward::storage::local::LocalStorage;
use pgward::storage::{DynStorage, Storage};
use std::path::Path;
use std::sync::Arc;

/// Segments on timeline 1 crossing a log directory, and a history file.
const SEGMENTS: [&str; 4] = [
    "0000000100000000000000FE",
    "0000000100000000000000FF",
    "000000010000000100000000",
    "000000010000000100000001",
];

/// The original bytes stored for `name` (not real WAL: `wal-fetch` checks only the stored
/// frame and its sha256).
fn content(name: &str) -> Vec<u8> {
    format!("contents of {name}\n").repeat(1000).into_bytes()
}

/// Writes a format-1 repository: `repo.json` with `format_version: 1` and the WAL under
/// format-1 keys.
async fn write_v1(s: &dyn Storage) {
    let id = serde_json::json!({
        "format_version": 1,
        "system_identifier": "7",
        "pg_major": 15,
        "wal_segment_size": 16 << 20,
        "block_size": 1 << 20,
        "created_at": "2026-11-01T00:00:00Z",
        "created_by": "pgward 0.0.9",
    });
    s.put(layout::REPO_JSON, Bytes::from(id.to_string()))
        .await
        .unwrap();
    for name in SEGMENTS.iter().copied().chain(["00000002.history"]) {
        let enc = codec::encode_bytes(&content(name), 3).unwrap();
        let key = layout::v1_wal_key(&WalFileName::parse(name).unwrap(), &enc.sha256);
        s.put(&key, Bytes::from(enc.data)).await.unwrap();
    }
}

/// Every key under `wal/` is a format-2 key, one per file written.
async fn assert_format_2(s: &dyn Storage) {
    let keys: Vec<String> = s
        .list("wal/")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(keys.len(), SEGMENTS.len() + 1, "{keys:?}");
    for k in &keys {
        let (name, sha) = layout::parse_wal_key(k).unwrap_or_else(|| panic!("not format 2: {k}"));
        assert_eq!(sha, Sha256Digest::of(&content(&name.to_string())), "{k}");
    }
    assert!(
        keys.iter().any(|k| k.starts_with("wal/00000001/00000001/")),
        "{keys:?}"
    );
    assert_eq!(
        RepoIdentity::require(s).await.unwrap().format_version,
        layout::FORMAT_VERSION
    );
}

fn chown_tree(p: &Path) {
    chown_postgres(p);
    if p.is_dir() {
        for e in std::fs::read_dir(p).unwrap() {
            chown_tree(&e.unwrap().path());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_repository_upgraded_through_the_cli() {
    let dir = TestDir::new("upgrade");
    let repo = dir.subdir("repo");
    make_postgres_dir(&repo);
    write_v1(&LocalStorage::new(repo.clone())).await;
    chown_tree(&repo);
    let config = write_config(
        &dir,
        &dir.subdir("no-pgdata"),
        RepoSpec::Local(repo.clone()),
    );
    let config = config.to_str().unwrap();
    let dest = dir.path().join("fetched");
    let dest = dest.to_str().unwrap();

    // Refused, with the hint, by a command that reads the WAL.
    let refused = pgward(
        dir.path(),
        &["--config", config, "wal-fetch", SEGMENTS[2], dest],
    );
    assert_eq!(refused.code(), Some(1), "{}", refused.describe());
    assert!(
        refused.stderr.contains("format version 1")
            && refused.stderr.contains("pgward init --upgrade"),
        "{}",
        refused.describe()
    );
    let info = pgward(dir.path(), &["--config", config, "info"]);
    assert!(
        !info.status.success() && info.stderr.contains("init --upgrade"),
        "{}",
        info.describe()
    );

    let up = pgward_ok(dir.path(), &["--config", config, "init", "--upgrade"]);
    assert!(
        up.stdout
            .contains("upgraded from format 1 to 2: 4 WAL files moved"),
        "{}",
        up.describe()
    );
    assert_format_2(&LocalStorage::new(repo.clone())).await;
    let again = pgward_ok(dir.path(), &["--config", config, "init", "--upgrade"]);
    assert!(
        again.stdout.contains("already in format 2"),
        "{}",
        again.describe()
    );

    pgward_ok(
        dir.path(),
        &["--config", config, "wal-fetch", SEGMENTS[2], dest],
    );
    assert_eq!(std::fs::read(dest).unwrap(), content(SEGMENTS[2]));
    let info = pgward_ok(dir.path(), &["--config", config, "info"]);
    assert!(
        info.stdout.contains("000000010000000000000FE")
            || info.stdout.contains("0000000100000000000000FE"),
        "{}",
        info.describe()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_repository_upgraded_and_converges_when_interrupted() {
    let server = S3Server::start().await;
    let s: DynStorage = Arc::new(server.storage("pgward-upgrade", "cluster").await);
    write_v1(s.as_ref()).await;
    assert!(RepoIdentity::require(s.as_ref()).await.is_err());

    // An interrupted run: one key already copied, its old key still there.
    let (first_key, first) = {
        let listing = s.list("wal/00000001/").await.unwrap();
        let o = listing.into_iter().next().unwrap();
        let (name, sha) = layout::parse_v1_wal_key(&o.key).unwrap();
        (o.key, layout::wal_key(&name, &sha))
    };
    s.copy_if_absent(&first_key, &first).await.unwrap();

    let done = upgrade::upgrade(&s).await.unwrap();
    assert_eq!((done.from_version, done.moved), (1, 4));
    assert_format_2(s.as_ref()).await;
    let body = s.get(&first).await.unwrap();
    let (name, sha) = layout::parse_wal_key(&first).unwrap();
    assert_eq!(
        codec::decode_to_vec(&body, Some(&sha)).unwrap(),
        content(&name.to_string())
    );
}
