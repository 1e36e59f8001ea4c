//! The base backup and restore matrix (issue 3) against S3: the in-process S3 server of
//! `common/s3_server.rs`, reached over HTTP by every pgward process (backup, restore, and
//! PostgreSQL's wal-push / wal-fetch). Same scenarios as `e2e_backup_local.rs`.

mod common;

use common::backup_scenarios as scenarios;
use common::pg::{RepoSpec, TestDir};
use common::s3_server::S3Server;

const BUCKET: &str = "pgward-backups";

/// Runs `body` against a fresh S3 server and repository prefix. The server runs on the
/// runtime's workers; the scenario blocks on subprocesses, so it runs on a blocking thread.
async fn s3(tag: &'static str, body: fn(&TestDir, RepoSpec)) {
    let server = S3Server::start().await;
    server.storage(BUCKET, tag).await;
    let repo = RepoSpec::S3 {
        endpoint: server.endpoint.clone(),
        bucket: BUCKET.to_string(),
        prefix: tag.to_string(),
        access_key: server.access_key.clone(),
        secret_key: server.secret_key.clone(),
    };
    let result = tokio::task::spawn_blocking(move || {
        let dir = TestDir::new(tag);
        body(&dir, repo);
    })
    .await;
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
    drop(server);
}

/// Time, restore point, LSN, xid and end-of-archive targets; dump comparison and amcheck; a
/// target before the oldest backup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pitr_targets_s3() {
    s3("bk-pitr-s3", scenarios::pitr_targets).await;
}

/// A promoted restore archives timeline 2; `--target-timeline current` and `latest`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timelines_s3() {
    s3("bk-tli-s3", scenarios::timelines).await;
}

/// `--tablespace-map`, block dedup between backups, `--delta` over a damaged stale copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tablespace_dedup_delta_s3() {
    s3("bk-ts-s3", scenarios::tablespace_dedup_delta).await;
}
