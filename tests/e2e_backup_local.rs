//! The base backup and restore matrix (issue 3) against a local repository directory. The
//! scenarios live in `common/backup_scenarios.rs` and run unchanged against S3 in
//! `e2e_backup_s3.rs`. Each test has its own source cluster, so they can run in parallel.

mod common;

use common::backup_scenarios as scenarios;
use common::pg::{RepoSpec, TestDir};

fn local(tag: &str, body: fn(&TestDir, RepoSpec)) {
    let dir = TestDir::new(tag);
    let repo = RepoSpec::Local(dir.path().join("repo"));
    body(&dir, repo);
}

/// Time, restore point, LSN, xid and end-of-archive targets; dump comparison and amcheck; a
/// target before the oldest backup.
#[test]
fn pitr_targets_local() {
    local("bk-pitr", scenarios::pitr_targets);
}

/// A promoted restore archives timeline 2; `--target-timeline current` and `latest`.
#[test]
fn timelines_local() {
    local("bk-tli", scenarios::timelines);
}

/// `--tablespace-map`, block dedup between backups, `--delta` over a damaged stale copy.
#[test]
fn tablespace_dedup_delta_local() {
    local("bk-ts", scenarios::tablespace_dedup_delta);
}
