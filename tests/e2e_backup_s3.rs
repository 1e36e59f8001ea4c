//! The base backup and restore matrix (issue 3) against S3: the in-process S3 server of
//! `common/s3_server.rs`, reached over HTTP by every pgward process (backup, restore, and
//! PostgreSQL's wal-push / wal-fetch). Same scenarios as `e2e_backup_local.rs`.

mod common;

use common::backup_scenarios as scenarios;
use common::pg::{RepoSpec, TestDir};
use common::s3_server::with_s3_repo;

const BUCKET: &str = "pgward-backups";

async fn s3(tag: &'static str, body: fn(&TestDir, RepoSpec)) {
    with_s3_repo(BUCKET, tag, body).await;
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
