//! The repository check every scenario that writes a repository ends with: `pgward verify
//! --listing-only --json` (manifests, block references, WAL continuity, history chains, dump
//! object sizes — from listings, no data read), so a test that leaves a broken repository
//! fails there, and one that breaks it on purpose can say what verify must name.

#![allow(dead_code)]

use super::pg::pgward;
use serde_json::Value;
use std::path::Path;

fn run(cwd: &Path, cfg: &Path, extra: &[&str]) -> (bool, Value, String) {
    let mut args = vec!["--config", cfg.to_str().unwrap(), "verify", "--json"];
    args.extend_from_slice(extra);
    let out = pgward(cwd, &args);
    let report: Value = serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("verify --json is not JSON ({e}):\n{}", out.describe()));
    (out.status.success(), report, out.describe())
}

/// Panics with the report unless the listing checks find nothing wrong; returns the report.
pub fn assert_repo_verifies(cwd: &Path, cfg: &Path) -> Value {
    let (success, report, described) = run(cwd, cfg, &["--listing-only"]);
    assert!(
        success && report["ok"] == true,
        "the repository does not verify:\n{described}"
    );
    report
}

/// Panics unless the listing checks fail (exit status and report agree); returns the report.
pub fn assert_repo_verify_fails(cwd: &Path, cfg: &Path) -> Value {
    let (success, report, described) = run(cwd, cfg, &["--listing-only"]);
    assert!(
        !success && report["ok"] == false,
        "verify should have failed:\n{described}"
    );
    report
}

/// `verify --json` with `args` (`--full`, `--max-bytes`, …): (exit 0?, report).
pub fn verify_json(cwd: &Path, cfg: &Path, args: &[&str]) -> (bool, Value) {
    let (success, report, described) = run(cwd, cfg, args);
    assert_eq!(
        success,
        report["ok"] == true,
        "exit status and report disagree:\n{described}"
    );
    (success, report)
}

/// The problems of `kind` in a report.
pub fn problems<'a>(report: &'a Value, kind: &str) -> Vec<&'a Value> {
    report["problems"]
        .as_array()
        .map(|p| p.iter().filter(|p| p["kind"] == kind).collect())
        .unwrap_or_default()
}

/// A JSON array of strings as strings.
pub fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}
