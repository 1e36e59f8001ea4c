//! Text output of `restore`: the plan (what `--dry-run` prints, and a normal run prints first)
//! and the result. The JSON forms are the serde shapes of [`RestorePlan`] and
//! [`RestoreOutcome`](super::RestoreOutcome).

use crate::restore::plan::RestorePlan;
use crate::restore::{RestoreOutcome, RestoreStats};
use crate::units;
use std::fmt::Write as _;

pub fn render_plan(o: &RestoreOutcome, delta: bool, inclusive: bool, action: &str) -> String {
    let p: &RestorePlan = &o.plan;
    let b = &p.backup;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "restore plan{}",
        if o.dry_run {
            " (dry run: nothing written)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        s,
        "  backup      {} (timeline {}, {} .. {}, stopped {}, {} in {} files)",
        b.label,
        b.timeline.0,
        b.start_lsn,
        b.stop_lsn,
        crate::repo::label::rfc3339(&b.stop_time),
        units::bytes(b.total_bytes),
        b.files
    );
    let _ = writeln!(s, "  because     {}", p.reason);
    let mut target = p.target.to_string();
    if p.target.has_inclusive() {
        target += if inclusive {
            " (inclusive)"
        } else {
            " (exclusive)"
        };
    }
    if p.target.is_set() {
        let _ = write!(target, ", then {action}");
    }
    let _ = writeln!(s, "  target      {target}");
    let path = p
        .timeline
        .path
        .iter()
        .map(|step| match step.ends {
            Some(end) => format!("{} until {end}", step.timeline.0),
            None => step.timeline.0.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" -> ");
    let _ = writeln!(
        s,
        "  timeline    {} (requested {}; recovery_target_timeline = '{}'; path {path})",
        p.timeline.timeline.0, p.timeline.requested, p.timeline.setting
    );
    let _ = writeln!(
        s,
        "  WAL needed  {} .. {} ({} segment(s), all archived)",
        p.wal_needed.first, p.wal_needed.last, p.wal_needed.segments
    );
    let _ = writeln!(
        s,
        "  WAL until   {} (contiguous archive along the path)",
        p.wal_available_until
    );
    let _ = writeln!(
        s,
        "  into        {}{}",
        o.pgdata.display(),
        if delta {
            " (delta: reusing what matches)"
        } else {
            ""
        }
    );
    for w in &p.warnings {
        let _ = writeln!(s, "warning: {w}");
    }
    s
}

pub fn render_result(o: &RestoreOutcome, r: &RestoreStats, delta: bool) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "restored {} ({}) and {} in {:.1} s ({})",
        units::count(r.files, "file", "files"),
        units::bytes(r.bytes),
        units::count(r.directories, "directory", "directories"),
        r.duration_ms as f64 / 1000.0,
        units::rate(r.bytes, r.duration_ms as f64 / 1000.0)
    );
    let _ = writeln!(
        s,
        "  blocks      {} fetched ({} compressed){}",
        r.blocks_fetched,
        units::bytes(r.bytes_fetched),
        if delta {
            format!(", {} already in place", r.blocks_reused)
        } else {
            String::new()
        }
    );
    if delta {
        let _ = writeln!(
            s,
            "  removed     {} entries the backup does not have",
            r.removed
        );
    }
    let _ = writeln!(
        s,
        "  next        start PostgreSQL on {}: it replays WAL through `pgward wal-fetch` and {}",
        o.pgdata.display(),
        if o.plan.target.is_set() {
            "stops at the target"
        } else {
            "ends at the end of the archive"
        }
    );
    for n in &r.notes {
        let _ = writeln!(s, "note: {n}");
    }
    s
}
