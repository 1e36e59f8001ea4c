//! What an operator reads when a first run goes wrong, from the command line (issue 10 item 6).
//!
//! The contract: an error says its cause, then the state, then one `hint:` last; it is short
//! (no SDK structures), and it never contains a secret.

mod common;

use common::pg::*;
use std::process::Command;
use std::time::Duration;

/// An S3 repository with no credentials anywhere: the message says "no credentials found" in
/// a few lines, at once (no retries: waiting cannot fix it), and names no secret.
#[test]
fn s3_without_credentials_says_so_briefly() {
    let dir = TestDir::new("s3nocred");
    let port = free_port();
    let cfg = dir.write_file(
        "cfg.toml",
        format!(
            "[repo]\nurl = \"s3://pgward-test/repo\"\n[repo.s3]\nendpoint = \
             \"http://127.0.0.1:{port}\"\nforce_path_style = true\n[postgres]\npgdata = {}\n",
            toml_str(&dir.path().display().to_string())
        ),
    );
    let home = dir.subdir("home");
    // A clean environment: no AWS_* variables, a HOME without ~/.aws, and instance metadata
    // off (it would be asked over the network).
    let mut cmd = Command::new(reachable_binary());
    cmd.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", &home)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .args(["--config", cfg.to_str().unwrap(), "info"])
        .current_dir(dir.path());
    let out = run_with_timeout(&mut cmd, Duration::from_secs(60));
    assert_eq!(out.code(), Some(1), "{}", out.describe());
    let err = out.stderr.trim_end();
    assert!(err.contains("no credentials found"), "{}", out.describe());
    assert!(!err.contains("retrying"), "{}", out.describe());
    assert!(err.len() < 1000, "{} bytes:\n{}", err.len(), out.describe());
    assert!(
        err.lines()
            .last()
            .unwrap_or_default()
            .starts_with("hint: set [repo.s3] access_key_id and secret_access_key"),
        "{}",
        out.describe()
    );
}

/// Every path under `root` (itself included) not owned by the postgres user.
fn not_postgres_owned(root: &std::path::Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let uid = postgres_user().uid;
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.uid() != uid {
            out.push(p.display().to_string());
        }
        if meta.is_dir() {
            for e in std::fs::read_dir(&p).unwrap().flatten() {
                stack.push(e.path());
            }
        }
    }
    out
}

/// Root running `init`, `backup` or `wal-push` against a postgres-owned data directory and
/// repository is refused before it creates anything, naming both users, with the command to
/// run instead; as postgres the same commands work.
#[test]
fn root_is_refused_where_postgres_owns_the_files() {
    assert!(
        is_root(),
        "this test checks what happens when pgward runs as root"
    );
    let dir = TestDir::new("asroot");
    let cluster = PgCluster::init(&dir, "src", InitOpts::default());
    let repo = dir.subdir("repo");
    let cfg = write_config(&dir, &cluster.datadir, RepoSpec::Local(repo.clone()));
    let cfg = cfg.to_str().unwrap();
    let as_root = |args: &[&str]| {
        let mut cmd = Command::new(reachable_binary());
        cmd.args(args).current_dir(dir.path());
        run_with_timeout(&mut cmd, Duration::from_secs(60))
    };
    let refused = |args: &[&str], what: &str, path: &std::path::Path| {
        let out = as_root(args);
        assert_eq!(out.code(), Some(1), "{args:?}\n{}", out.describe());
        let err = out.stderr.trim_end();
        assert!(
            err.contains(&format!(
                "refusing to run as root: {what} {} belongs to postgres",
                path.display()
            )),
            "{args:?}\n{}",
            out.describe()
        );
        let hint = format!(
            "hint: run it as postgres: `sudo -u postgres pgward {}`",
            args.join(" ")
        );
        assert_eq!(
            err.lines().last(),
            Some(hint.as_str()),
            "{}",
            out.describe()
        );
        let foreign = not_postgres_owned(&repo);
        assert!(foreign.is_empty(), "{args:?} left {foreign:?}");
    };
    refused(
        &["--config", cfg, "init"],
        "the data directory",
        &cluster.datadir,
    );
    pgward_ok(dir.path(), &["--config", cfg, "init"]);
    refused(
        &["--config", cfg, "backup"],
        "the data directory",
        &cluster.datadir,
    );
    let seg = "pg_wal/000000010000000000000001";
    refused(&["--config", cfg, "wal-push", seg], "the repository", &repo);
    // Reading commands may run as root.
    let out = as_root(&["--config", cfg, "info"]);
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    assert!(not_postgres_owned(&repo).is_empty());
}
