//! The plan as people read it: reasons become sentences here, and only here.

use super::{
    Decision, DeleteReason, HistoryDecision, HistoryReason, KeepReason, Plan, WalDecision,
    WalReason,
};
use crate::units;
use std::fmt::Write as _;
use std::time::Duration;

fn duration(seconds: u64) -> String {
    humantime::format_duration(Duration::from_secs(seconds)).to_string()
}

impl KeepReason {
    /// `what` names the kind of item ("backup", "dump").
    pub fn sentence(&self, tz: &str, what: &str) -> String {
        match self {
            KeepReason::KeepLast { n } => format!("keep_last {n}"),
            KeepReason::KeepHourly { hour } => {
                format!("keep_hourly {} ({tz})", hour.format("%Y-%m-%d %H:00%:z"))
            }
            KeepReason::KeepDaily { day } => format!("keep_daily {day} ({tz})"),
            KeepReason::KeepWeekly { iso_year, week } => {
                format!("keep_weekly {iso_year}-W{week:02} ({tz})")
            }
            KeepReason::KeepMonthly { year, month } => {
                format!("keep_monthly {year}-{month:02} ({tz})")
            }
            KeepReason::KeepYearly { year } => format!("keep_yearly {year} ({tz})"),
            KeepReason::KeepWithin { within_seconds } => format!(
                "keep_within {} of the newest complete {what}",
                duration(*within_seconds)
            ),
            KeepReason::MinKeep { n } => format!("min_keep {n}"),
            KeepReason::NewestComplete => format!("newest complete {what}"),
            KeepReason::FutureDated => {
                "dated in the future (a clock ahead?): kept until then".to_string()
            }
            KeepReason::NoRules => {
                format!("the policy has no [retention.{what}s] rules: every {what} is kept")
            }
            KeepReason::Pinned { reason: Some(r) } => format!("pinned: {r}"),
            KeepReason::Pinned { reason: None } => "pinned".to_string(),
            KeepReason::Held { holder } => format!("held by {holder}"),
            KeepReason::PitrBase { window_seconds } => {
                format!("PITR base for {} window", duration(*window_seconds))
            }
            KeepReason::InProgress => {
                "in progress (its writer runs, or is not known to be gone)".to_string()
            }
            KeepReason::DatabaseKept { database: Some(db) } => format!("{db} is kept"),
            KeepReason::DatabaseKept { database: None } => "its globals are kept".to_string(),
        }
    }
}

impl Decision {
    /// "keep_last 2; keep_daily 2026-11-30 (UTC)", or why it goes.
    pub fn sentence(&self, tz: &str, what: &str) -> String {
        match self {
            Decision::Keep { reasons } => reasons
                .iter()
                .map(|r| r.sentence(tz, what))
                .collect::<Vec<_>>()
                .join("; "),
            Decision::Delete {
                reason: DeleteReason::Expired,
            } => "no rule keeps it".to_string(),
            Decision::Delete {
                reason: DeleteReason::Abandoned,
            } => "abandoned: no manifest and its writer is gone".to_string(),
        }
    }

    fn verb(&self) -> &'static str {
        if self.is_keep() { "keep  " } else { "delete" }
    }
}

impl WalReason {
    pub fn sentence(&self) -> String {
        match self {
            WalReason::NoCompleteBackup => {
                "no complete backup exists yet: no WAL is deleted".to_string()
            }
            WalReason::BackupRange { label } => format!("WAL of kept backup {label}"),
            WalReason::Recoverable {
                base,
                window_seconds: Some(w),
            } => format!("PITR base {base} for {} window", duration(*w)),
            WalReason::Recoverable {
                base,
                window_seconds: None,
            } => format!("recoverable from backup {base} on"),
            WalReason::AfterNewestBackup { label } => {
                format!("at or after the start of the newest complete backup {label}")
            }
            WalReason::InProgressBackup { label } => format!("backup {label} in progress"),
            WalReason::Held { label, holder } => format!("held by {holder} (reading {label})"),
            WalReason::BeforeOldestBackup { label } => format!(
                "archived before the oldest complete backup {label} (never deleted by expire)"
            ),
            WalReason::BranchNotBelowBase { base } => {
                format!("a timeline without a kept backup, not below the recoverable base {base}")
            }
        }
    }
}

fn wal_sentence(d: &WalDecision) -> (&'static str, String) {
    match d {
        WalDecision::Keep { reasons } => (
            "keep  ",
            reasons
                .iter()
                .map(WalReason::sentence)
                .collect::<Vec<_>>()
                .join("; "),
        ),
        WalDecision::Delete => ("delete", "no rule keeps it".to_string()),
    }
}

impl HistoryReason {
    pub fn sentence(&self) -> String {
        match self {
            HistoryReason::NoCompleteBackup => "no complete backup exists yet".to_string(),
            HistoryReason::KeptTimeline => {
                "the current timeline or one with a kept backup".to_string()
            }
            HistoryReason::AncestorOf { timeline } => {
                format!("an ancestor of timeline {}", timeline.0)
            }
            HistoryReason::KeepsWal => "its timeline keeps WAL".to_string(),
        }
    }
}

impl Plan {
    /// The plan as `expire` prints it.
    pub fn render_text(&self) -> String {
        let tz = self.timezone.as_str();
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Retention plan at {} (calendar time zone {tz}{})",
            crate::repo::label::rfc3339(&self.now),
            match (self.pitr_window_seconds, &self.pitr_base) {
                (Some(w), Some(b)) => format!(", PITR window {} from backup {b}", duration(w)),
                (None, Some(b)) => format!(", recoverable from backup {b} on"),
                _ => String::new(),
            }
        );
        let _ = writeln!(s, "\nBase backups");
        if self.backups.is_empty() && self.backups_in_progress.is_empty() {
            let _ = writeln!(s, "  (none)");
        }
        for b in &self.backups {
            let _ = writeln!(
                s,
                "  {} {}  timeline {}  stored {}{}: {}",
                b.decision.verb(),
                b.label,
                b.timeline.0,
                if b.decision.is_keep() { "" } else { "up to " },
                units::bytes(b.stored_bytes),
                b.decision.sentence(tz, "backup")
            );
        }
        for p in &self.backups_in_progress {
            let _ = writeln!(
                s,
                "  {} {}  {}",
                p.decision.verb(),
                p.label,
                p.decision.sentence(tz, "backup")
            );
        }
        let _ = writeln!(s, "\nLogical dumps");
        if self.dumps.is_empty() && self.dumps_incomplete.is_empty() {
            let _ = writeln!(s, "  (none)");
        }
        for d in &self.dumps {
            let _ = writeln!(
                s,
                "  {} {}  stored {}: {}",
                d.decision.verb(),
                d.label,
                units::bytes(d.stored_bytes),
                d.decision.sentence(tz, "dump")
            );
            for e in &d.databases {
                let name = e.database.as_deref().unwrap_or("(globals only)");
                let why = if e.reasons.is_empty() {
                    "no rule keeps it".to_string()
                } else {
                    e.reasons
                        .iter()
                        .map(|r| r.sentence(tz, "dump"))
                        .collect::<Vec<_>>()
                        .join("; ")
                };
                let _ = writeln!(s, "      {name}: {why}");
            }
        }
        for p in &self.dumps_incomplete {
            let _ = writeln!(
                s,
                "  {} {}  {}",
                p.decision.verb(),
                p.label,
                p.decision.sentence(tz, "dump")
            );
        }
        let _ = writeln!(s, "\nWAL");
        if self.wal.is_empty() && self.wal_files.is_empty() && self.histories.is_empty() {
            let _ = writeln!(s, "  (none)");
        }
        let mut last_tli = None;
        for r in &self.wal {
            if last_tli != Some(r.timeline) {
                let _ = writeln!(s, "  timeline {}", r.timeline.0);
                last_tli = Some(r.timeline);
            }
            let (verb, why) = wal_sentence(&r.decision);
            let _ = writeln!(
                s,
                "    {verb} {} .. {}  {}, {}: {why}",
                r.first,
                r.last,
                units::count(r.segments, "segment", "segments"),
                units::bytes(r.stored_bytes)
            );
        }
        for f in &self.wal_files {
            let (verb, why) = wal_sentence(&f.decision);
            let _ = writeln!(s, "    {verb} {}: {why}", f.name);
        }
        for h in &self.histories {
            let (verb, why) = match &h.decision {
                HistoryDecision::Keep { reasons } => (
                    "keep  ",
                    reasons
                        .iter()
                        .map(HistoryReason::sentence)
                        .collect::<Vec<_>>()
                        .join("; "),
                ),
                HistoryDecision::Delete => ("delete", "no kept timeline needs it".to_string()),
            };
            let _ = writeln!(s, "    {verb} {:08X}.history: {why}", h.timeline.0);
        }
        let _ = writeln!(
            s,
            "\nFreed: WAL {}, dumps {}, backups up to {} (blocks shared with kept backups \
             stay; block garbage collection frees the rest)",
            units::bytes(self.freed.wal_bytes),
            units::bytes(self.freed.dump_bytes),
            units::bytes(self.freed.backup_bytes_up_to)
        );
        if self.force.needed {
            let _ = writeln!(
                s,
                "This plan deletes {} of {} backups and {} of {} dumps: more than half, so \
                 only --force carries it out",
                self.force.backups_deleted,
                self.force.backups_total,
                self.force.dumps_deleted,
                self.force.dumps_total
            );
        }
        for w in &self.warnings {
            let _ = writeln!(s, "warning: {w}");
        }
        s
    }
}
