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
