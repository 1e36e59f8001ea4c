//! Text output of `restore`: the plan (what `--dry-run` prints, and a normal run prints first)
//! and the result. The JSON forms are the serde shapes of [`RestorePlan`] and
//! [`RestoreOutcome`](super::RestoreOutcome).

use crate::restore::plan::RestorePlan;
use crate::restore::{RestoreOutcome, RestoreStats};
use std::fmt::Write as _;

/// `1.2 GiB`, `340.0 MiB`, `12 B`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: &[&str] = &["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

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
        b.stop_time,
        human_bytes(b.total_bytes),
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
        "restored {} files ({}) and {} directories in {:.1} s ({:.0} MB/s)",
        r.files,
        human_bytes(r.bytes),
        r.directories,
        r.duration_ms as f64 / 1000.0,
        r.mb_per_s
    );
    let _ = writeln!(
        s,
        "  blocks      {} fetched ({} compressed){}",
        r.blocks_fetched,
        human_bytes(r.bytes_fetched),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes() {
        assert_eq!(human_bytes(12), "12 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }
}
