//! `pgward backup [--json]`: take a base backup of the running cluster.
//!
//! The work is [`crate::backup::run_backup`]; this file only prints the result. The `--json`
//! object is a stable, documented format: fields are only ever added.

use crate::backup::{BackupOutcome, run_backup};
use crate::context::Context;
use crate::output;
use crate::pg::Lsn;
use crate::units;
use anyhow::Result;
use serde::Serialize;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the result as one JSON object (a stable format) instead of a summary.
    #[arg(long)]
    pub json: bool,
}

/// The `--json` output.
#[derive(Debug, Serialize, PartialEq)]
pub struct Summary {
    pub label: String,
    pub start_lsn: Lsn,
    pub stop_lsn: Lsn,
    pub timeline: u32,
    /// Bytes of all files in the backup.
    pub total_bytes: u64,
    /// Original bytes of the blocks this backup added to the repository.
    pub new_bytes: u64,
    /// Compressed bytes this backup added to the repository.
    pub stored_bytes: u64,
    /// `total_bytes / new_bytes`: how much deduplication saved.
    pub dedup_ratio: f64,
    pub duration_ms: u64,
    /// `total_bytes` in MB (10^6 bytes) per second of the whole backup.
    pub mb_per_s: f64,
    /// Pages whose checksum failed (details in the manifest).
    pub bad_pages: u64,
}

impl Summary {
    pub fn of(o: &BackupOutcome) -> Summary {
        let s = &o.stats;
        let secs = (s.duration_ms as f64 / 1000.0).max(0.001);
        Summary {
            label: o.label.clone(),
            start_lsn: o.start_lsn,
            stop_lsn: o.stop_lsn,
            timeline: o.timeline.0,
            total_bytes: s.total_bytes,
            new_bytes: s.new_bytes,
            stored_bytes: s.stored_bytes,
            dedup_ratio: round2(s.total_bytes as f64 / s.new_bytes.max(1) as f64),
            duration_ms: s.duration_ms,
            mb_per_s: round2(s.total_bytes as f64 / 1e6 / secs),
            bad_pages: o.bad_pages.len() as u64,
        }
    }

    fn text(&self, o: &BackupOutcome) -> String {
        let new_data = if self.new_bytes == 0 {
            "nothing new: every block was already stored".to_string()
        } else {
            format!(
                "{} ({} stored compressed), dedup ratio {:.1}x",
                units::bytes(self.new_bytes),
                units::bytes(self.stored_bytes),
                self.dedup_ratio
            )
        };
        let mut out = format!(
            "backup {} complete\n\
             \x20 size:       {} in {}\n\
             \x20 new data:   {new_data}\n\
             \x20 WAL:        {} .. {} on timeline {} ({} .. {})\n\
             \x20 duration:   {:.1} s ({})\n\
             \x20 bad pages:  {}\n",
            self.label,
            units::bytes(self.total_bytes),
            units::count(o.stats.files, "file", "files"),
            self.start_lsn,
            self.stop_lsn,
            self.timeline,
            o.start_wal,
            o.stop_wal,
            self.duration_ms as f64 / 1000.0,
            units::rate(self.total_bytes, self.duration_ms as f64 / 1000.0),
            self.bad_pages,
        );
        if self.bad_pages > 0 {
            let mut files: Vec<&str> = o.bad_pages.iter().map(|b| b.path.as_str()).collect();
            files.dedup();
            out += &format!("  files with bad pages: {}\n", files.join(", "));
        }
        out
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

pub async fn run(ctx: &Context, args: &Args) -> Result<()> {
    let outcome = run_backup(ctx).await?;
    let summary = Summary::of(&outcome);
    let text = if args.json {
        serde_json::to_string_pretty(&summary)? + "\n"
    } else {
        summary.text(&outcome)
    };
    output::report_done(&format!("backup {}", summary.label), &text);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::Timeline;
    use crate::repo::manifest::{BackupStats, BadPage};

    #[test]
    fn json_has_the_documented_fields() {
        let o = BackupOutcome {
            label: "20261122T013000Z".into(),
            timeline: Timeline(1),
            start_lsn: "0/2000028".parse().unwrap(),
            stop_lsn: "0/2000138".parse().unwrap(),
            start_wal: "000000010000000000000002".into(),
            stop_wal: "000000010000000000000002".into(),
            start_time: "2026-11-22T01:30:00Z".into(),
            stop_time: "2026-11-22T01:30:02Z".into(),
            data_checksums: true,
            stats: BackupStats {
                total_bytes: 1_000_000_000,
                files: 10,
                blocks: 954,
                new_blocks: 100,
                new_bytes: 100_000_000,
                stored_bytes: 25_000_000,
                duration_ms: 2000,
            },
            bad_pages: vec![BadPage {
                path: "base/5/16384".into(),
                page: 3,
                expected: 1,
                found: 2,
            }],
        };
        let s = Summary::of(&o);
        let v = serde_json::to_value(&s).unwrap();
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "bad_pages",
                "dedup_ratio",
                "duration_ms",
                "label",
                "mb_per_s",
                "new_bytes",
                "start_lsn",
                "stop_lsn",
                "stored_bytes",
                "timeline",
                "total_bytes"
            ]
        );
        assert_eq!(v["start_lsn"], "0/2000028");
        assert_eq!(v["timeline"], 1);
        assert_eq!(v["dedup_ratio"], 10.0);
        assert_eq!(v["mb_per_s"], 500.0);
        assert_eq!(v["bad_pages"], 1);
        let text = s.text(&o);
        assert!(text.contains("base/5/16384"), "{text}");
        assert!(text.contains("953.7 MiB"), "{text}");
    }
}
