//! Can recovery reach the target? The second, pure half of restore planning.
//!
//! [`super::plan`] chooses the backup and the timeline path from the catalog alone. Time, xid
//! and name targets cannot be placed from the catalog, and PostgreSQL 15 treats a target it
//! never reaches as fatal: it replays the whole archive and ends with "recovery ended before
//! configured recovery target was reached" (`xlogrecovery.c`), after the restore reported
//! success. So `restore` reads a bounded amount of WAL along the planned path
//! ([`super::wal_facts`]; which WAL depends on the plan, hence two steps) and this module decides
//! from those facts, without IO and with `now` passed in:
//!
//! - a time target stops only *before* a commit or abort later than it (`recoveryStopsBefore`):
//!   refused when it is not earlier than the newest commit/abort archived on the path
//!   (inclusive; exclusive stops at one at the target time, too), or — when the bounded read
//!   found no commit to judge by — when it is later than `now` (the server's commit times
//!   decide before this host's clock, which may differ);
//! - an xid target stops only at that transaction's commit or abort: refused when the xid was
//!   not yet assigned by the end of the archive (the xid horizon of
//!   [`crate::pg::wal_records::SegmentRecords::xid_horizon`]);
//! - a name target stops at a restore point of that name replayed after the backup is
//!   consistent: refused when one is found only before the backup's end, or when the WAL from
//!   the backup's start to the end of the archive was read whole and holds none;
//! - a time target after a fork (the plan leaves a parent timeline whose archived WAL goes on
//!   with commits past the branch point, and the target is later than the first of them) means
//!   two different histories contain "the state at T": refused unless `--target-timeline` was
//!   given (issue 9, item 11).
//!
//! What the bounded read could not establish is never guessed: it becomes a warning saying what
//! was not checked. With a hole in the archive the end checks are skipped: recovery stops at
//! the hole (`wal-fetch` fails it, the plan warns) until the segment is put back, so the WAL
//! before the hole does not show what recovery will reach.

use crate::pg::wal_records::xid_precedes;
use crate::pg::{Lsn, Timeline};
use crate::restore::plan::RestorePlan;
use crate::restore::target::RecoveryTarget;
use anyhow::{Result, bail};
use chrono::{DateTime, SecondsFormat, Utc};

/// A commit or abort found in the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeenXactEnd {
    pub time: DateTime<Utc>,
    pub xid: u32,
    pub lsn: Lsn,
    pub timeline: Timeline,
}

/// What the newest WAL on the plan's path shows, read from the end of the archive backwards.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchiveEnd {
    /// The segments read, newest first.
    pub segments_read: Vec<String>,
    /// Where the valid WAL of the newest segment read ends.
    pub end: Lsn,
    /// The read went back to the backup's first segment: what it did not find is not in the
    /// WAL recovery replays.
    pub back_to_backup: bool,
    /// The latest commit or abort read.
    pub last_xact_end: Option<SeenXactEnd>,
    /// No transaction id at or past this had been assigned by the end of the archive.
    pub xid_horizon: Option<u32>,
    /// Restore points read: name and end LSN.
    pub restore_points: Vec<(String, Lsn)>,
    /// Why the read stopped before it could decide (a segment that could not be fetched,
    /// decoded, or read to its end).
    pub incomplete: Option<String>,
}

/// A parent timeline the plan leaves at `at`, read from there on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForkFacts {
    pub parent: Timeline,
    pub child: Timeline,
    pub at: Lsn,
    /// The first commit or abort on the parent at or after the branch point.
    pub first_xact_end_after: Option<SeenXactEnd>,
    pub segments_read: Vec<String>,
    pub incomplete: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WalFacts {
    /// `None` when the target needs nothing from the end of the archive.
    pub end: Option<ArchiveEnd>,
    pub forks: Vec<ForkFacts>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReachRequest {
    /// `recovery_target_inclusive`.
    pub inclusive: bool,
    /// `--target-timeline` was given (not the default `latest`).
    pub timeline_given: bool,
    pub now: DateTime<Utc>,
}

/// Refuses a target the archive shows recovery cannot reach; returns warnings for what could
/// not be checked.
pub fn check(plan: &RestorePlan, facts: &WalFacts, req: &ReachRequest) -> Result<Vec<String>> {
    let mut warnings = Vec::new();
    // Past a hole the archive's end is not where recovery ends: `wal-fetch` stops recovery at
    // the hole (the plan warns of it) until the segment is put back, so what the WAL after it
    // holds cannot be judged from the WAL before it.
    let end = facts.end.as_ref().filter(|_| plan.wal_hole.is_none());
    match &plan.target {
        RecoveryTarget::Time(t) => {
            let t = t.utc();
            // The archive's own commit times decide when they can; this host's clock (which
            // may differ from the server's) only when they cannot.
            let decided_by_wal = end.is_some_and(|e| e.last_xact_end.is_some());
            if t > req.now && !decided_by_wal {
                bail!(
                    "the target {} is in the future (it is now {}): recovery would replay the \
                     whole archive without reaching it and then fail with \"recovery ended \
                     before configured recovery target was reached\"\nhint: check the time \
                     and its offset; to restore everything archived, leave out --target-time",
                    plan.target,
                    fmt_now(req.now)
                );
            }
            check_forks(plan, facts, req, t, &mut warnings)?;
            if let Some(end) = end {
                check_time(plan, end, req, t, &mut warnings)?;
            }
        }
        RecoveryTarget::Xid(x) => {
            if let Some(end) = end {
                check_xid(plan, end, *x, &mut warnings)?;
            }
        }
        RecoveryTarget::Name(n) => {
            if let Some(end) = end {
                check_name(plan, end, n, &mut warnings)?;
            }
        }
        _ => {}
    }
    Ok(warnings)
}

/// Whether recovery stops at a commit or abort at `at` for a target time `t`.
fn stops_at(at: DateTime<Utc>, t: DateTime<Utc>, inclusive: bool) -> bool {
    if inclusive { at > t } else { at >= t }
}

fn fmt_now(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn fmt_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn describe_read(segments: &[String]) -> String {
    match segments {
        [] => "no segment".to_string(),
        [one] => format!("segment {one}"),
        [newest, .., oldest] => format!("{} segments, {oldest} to {newest}", segments.len()),
    }
}

fn end_of_archive(plan: &RestorePlan, end: &ArchiveEnd) -> String {
    format!(
        "the archive on timeline {} ends at {} (segment {})",
        plan.timeline.timeline.0,
        end.end,
        end.segments_read.first().map_or("?", |s| s.as_str())
    )
}

fn check_time(
    plan: &RestorePlan,
    end: &ArchiveEnd,
    req: &ReachRequest,
    t: DateTime<Utc>,
    warnings: &mut Vec<String>,
) -> Result<()> {
    const FAILS: &str = "it would replay the whole archive without reaching the target and then \
                         fail with \"recovery ended before configured recovery target was \
                         reached\"";
    const HINT: &str = "if the server committed more since, archive it first (on the primary: \
                        select pg_switch_wal(), then wait until `pgward info` shows the \
                        segment), or leave out --target-time to restore everything archived";
    match (&end.last_xact_end, &end.incomplete) {
        (Some(last), _) if !stops_at(last.time, t, req.inclusive) => bail!(
            "the target {} is not before the last commit in the archive{}: {}, and its last \
             commit or abort is transaction {} at {} (LSN {}); recovery stops only before a \
             commit later than the target, so {FAILS}\nhint: choose a time before {}, or \
             {HINT}",
            plan.target,
            if t > req.now {
                format!(" (and in the future: it is now {})", fmt_now(req.now))
            } else {
                String::new()
            },
            end_of_archive(plan, end),
            last.xid,
            fmt_time(last.time),
            last.lsn,
            fmt_time(last.time),
        ),
        (Some(last), _) => {
            if t > req.now {
                warnings.push(format!(
                    "the target {} is later than this host's clock ({}) but before the last \
                     archived commit ({}): the clocks of this host and the database server \
                     differ",
                    plan.target,
                    fmt_now(req.now),
                    fmt_time(last.time)
                ));
            }
            Ok(())
        }
        (None, None) if end.back_to_backup => bail!(
            "the target {} cannot be reached: no transaction commits or aborts in the WAL \
             archived after backup {} ({} read, to {}), and recovery stops only before a \
             commit later than the target, so {FAILS}\nhint: {HINT}",
            plan.target,
            plan.backup.label,
            describe_read(&end.segments_read),
            end.end
        ),
        (None, why) => {
            warnings.push(format!(
                "pgward could not check that the archive reaches the target {}: {}; if no \
                 commit later than the target is archived, recovery fails at the end with \
                 \"recovery ended before configured recovery target was reached\"",
                plan.target,
                why.clone().unwrap_or_else(|| format!(
                    "no commit in the newest {} read",
                    describe_read(&end.segments_read)
                ))
            ));
            Ok(())
        }
    }
}

fn check_xid(
    plan: &RestorePlan,
    end: &ArchiveEnd,
    xid: u64,
    warnings: &mut Vec<String>,
) -> Result<()> {
    // PostgreSQL keeps the low 32 bits of an epoch-qualified xid.
    let x = xid as u32;
    match end.xid_horizon {
        Some(h) if !xid_precedes(x, h) => bail!(
            "transaction {xid} does not end in the archive: {}, and by then no transaction id \
             from {h} on had been assigned ({} read); recovery stops only at that \
             transaction's commit or abort, so it would replay the whole archive and then fail \
             with \"recovery ended before configured recovery target was reached\"\nhint: \
             check the id (txid_current() shows the current one; of an epoch-qualified id only \
             the low 32 bits count); if it committed since, archive that WAL first (on the \
             primary: select pg_switch_wal())",
            end_of_archive(plan, end),
            describe_read(&end.segments_read)
        ),
        Some(_) => Ok(()),
        None => {
            warnings.push(format!(
                "pgward could not check that transaction {xid} ends in the archive: {}",
                end.incomplete.clone().unwrap_or_else(|| format!(
                    "no running-transactions record (logged at checkpoints and every 15 s of \
                     activity) in the newest {} read",
                    describe_read(&end.segments_read)
                ))
            ));
            Ok(())
        }
    }
}

fn check_name(
    plan: &RestorePlan,
    end: &ArchiveEnd,
    name: &str,
    warnings: &mut Vec<String>,
) -> Result<()> {
    let b = &plan.backup;
    // The scan reads newest first: the last match read is the newest.
    let newest = end
        .restore_points
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, l)| *l)
        .max();
    match newest {
        Some(at) if at >= b.stop_lsn => Ok(()),
        Some(at) => bail!(
            "restore point '{name}' is at {at}, before backup {} became consistent (stop LSN \
             {}); recovery from this backup would either pass it before it may stop or never \
             replay it\nhint: choose an older backup with --backup (one that stopped before \
             {at})",
            b.label,
            b.stop_lsn
        ),
        None if end.back_to_backup && end.incomplete.is_none() => {
            let mut names: Vec<&str> = end.restore_points.iter().map(|(n, _)| n.as_str()).collect();
            names.dedup();
            bail!(
                "restore point '{name}' is not in the WAL archived after backup {}: pgward read \
                 all of it ({}, to {}) and found {}; recovery would replay the whole archive \
                 and then fail with \"recovery ended before configured recovery target was \
                 reached\"\nhint: names are case-sensitive; create the restore point with \
                 pg_create_restore_point() on the primary and archive its WAL (select \
                 pg_switch_wal()), or choose an older backup with --backup if it was created \
                 before this one",
                b.label,
                describe_read(&end.segments_read),
                end.end,
                if names.is_empty() {
                    "no restore points".to_string()
                } else {
                    format!("only {}", names.join(", "))
                }
            )
        }
        None => {
            warnings.push(format!(
                "pgward did not find restore point '{name}' in the newest {} of the archive{}; \
                 older WAL was not read, so it may be there — if it is not, recovery fails at \
                 the end with \"recovery ended before configured recovery target was reached\"",
                describe_read(&end.segments_read),
                end.incomplete
                    .as_ref()
                    .map(|w| format!(" (reading stopped: {w})"))
                    .unwrap_or_default()
            ));
            Ok(())
        }
    }
}

fn check_forks(
    plan: &RestorePlan,
    facts: &WalFacts,
    req: &ReachRequest,
    t: DateTime<Utc>,
    warnings: &mut Vec<String>,
) -> Result<()> {
    if req.timeline_given {
        return Ok(());
    }
    for f in &facts.forks {
        match &f.first_xact_end_after {
            Some(c) if !stops_at(c.time, t, req.inclusive) => bail!(
                "the target {} is ambiguous: timeline {} branched off timeline {} at {}, and \
                 timeline {} went on after that point (its first commit after the branch, \
                 transaction {} at {} (LSN {}), is before the target); \"the state at the \
                 target time\" exists on both: following timeline {} (`latest`, the default) \
                 restores the branch and leaves out what timeline {} committed after {}, \
                 following timeline {} restores the opposite\nhint: say which history you want: \
                 --target-timeline {} (the original, continued timeline) or --target-timeline \
                 {} (the branch)",
                plan.target,
                f.child.0,
                f.parent.0,
                f.at,
                f.parent.0,
                c.xid,
                fmt_time(c.time),
                c.lsn,
                plan.timeline.timeline.0,
                f.parent.0,
                f.at,
                f.parent.0,
                f.parent.0,
                plan.timeline.timeline.0
            ),
            Some(_) => {}
            None => warnings.push(format!(
                "pgward could not tell whether the target lies after timeline {} went on past \
                 the branch point {} of timeline {}: {}; if it does, --target-timeline {} gives \
                 timeline {}'s data instead",
                f.parent.0,
                f.at,
                f.child.0,
                f.incomplete.clone().unwrap_or_else(|| format!(
                    "no commit on timeline {} after it in {}",
                    f.parent.0,
                    describe_read(&f.segments_read)
                )),
                f.parent.0,
                f.parent.0
            )),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
