//! The status verdict (pure): [`judge`] turns a [`StatusInput`] and `now` into reasons, each
//! with its level and the sentence an operator reads. The rules, worst first:
//!
//! UNKNOWN — the state cannot be read: the repository (or the configuration) is unreadable.
//!
//! CRITICAL
//! - no complete base backup (nothing can be restored);
//! - the newest backup cannot be restored (its own WAL is missing), or the WAL after it has a
//!   hole: the planner's first missing segment, and the last recoverable LSN (the byte before
//!   that segment) are named;
//! - the newest report of a drill says it failed (its phase and reason), while the drill is
//!   defined (a retired drill's failed report only warns);
//! - with agent state, a `backup`, `verify` or `drill` job whose last run failed: these say
//!   whether what is stored can be restored at all;
//! - the server's archiver is failing (its last failure is newer than its last success);
//! - RPO above twice its bound.
//!
//! - a hole between older backups: the recoverable window is cut (points in time inside it are
//!   lost, though the newest state is still recoverable) — issue 15: a hole that cuts the
//!   window is CRITICAL and names its first missing segment;
//!
//! WARNING
//! - a WAL name archived twice with different contents (two servers archive here?);
//! - with agent state, a `dump` or `expire` job whose last run failed (the physical backups
//!   still protect the data), and any job overdue: no success for more than twice its
//!   schedule's interval (the rule of the agent's `/readyz`). For `backup` and `dump` the
//!   sentence gives the newest item's age when that is old too ("newest backup is 26 h old,
//!   schedule is hourly"). A job that never started is not judged (it was just added);
//! - RPO above its bound: the smallest `max_rpo` of the drill files, else
//!   [`DEFAULT_RPO_BOUND`] (15 min);
//! - `[postgres] conninfo` is set and the server does not answer (archiving is not judged);
//! - the agent's state file exists but cannot be read, or with agent state the policy cannot
//!   be read (staleness is not judged).
//!
//! Without agent state (pgward driven from cron) staleness is not judged. A repository with a
//! complete backup, continuous WAL after it and no failures is OK.

use super::facts::{RepoFacts, StatusInput};
use super::{Level, Reason, Verdict};
use crate::agent::schedule;
use crate::drill::report::Verdict as DrillVerdict;
use crate::pg::Lsn;
use crate::units;
use chrono::{DateTime, Utc};
use std::time::Duration;

/// The RPO bound when no drill file sets `max_rpo`.
pub const DEFAULT_RPO_BOUND: Duration = Duration::from_secs(15 * 60);

/// The RPO above which status warns (twice it is critical), and where the bound comes from.
pub fn rpo_bound(input: &StatusInput) -> (f64, String) {
    let smallest = (input.drill_definitions.iter())
        .filter_map(|d| d.max_rpo_seconds.map(|s| (s, &d.name)))
        .min_by(|a, b| a.0.total_cmp(&b.0));
    match smallest {
        Some((s, name)) => (s, format!("max_rpo of drill {name}")),
        None => (DEFAULT_RPO_BOUND.as_secs_f64(), "the default bound".into()),
    }
}

pub fn judge(input: &StatusInput, now: DateTime<Utc>) -> Verdict {
    let mut reasons = Vec::new();
    match (&input.repo, &input.repository_error) {
        (Some(repo), _) => repository(repo, &mut reasons),
        (None, err) => reasons.push(unknown(format!(
            "the state cannot be read: {}",
            first_line(err.as_deref().unwrap_or("the repository was not read"))
        ))),
    }
    drills(input, &mut reasons);
    agent(input, now, &mut reasons);
    server(input, &mut reasons);
    // Worst first; within a level, in the order the rules run.
    reasons.sort_by_key(|r| std::cmp::Reverse(r.level));
    Verdict::from_reasons(reasons)
}

fn repository(repo: &RepoFacts, out: &mut Vec<Reason>) {
    let Some(newest) = repo.backups.iter().max_by_key(|b| b.stop_time) else {
        let running = if repo.backups_in_progress.is_empty() {
            String::new()
        } else {
            format!(
                " ({} without a manifest: {})",
                units::count(repo.backups_in_progress.len() as u64, "backup", "backups"),
                repo.backups_in_progress.join(", ")
            )
        };
        out.push(critical(format!(
            "no complete base backup{running}: nothing can be restored; take one with \
             `pgward backup`"
        )));
        return;
    };
    if let Some(reach) = &repo.newest_backup_reach {
        if let Some(e) = &reach.error {
            out.push(critical(format!(
                "the newest backup {} cannot be restored: {}",
                reach.backup,
                first_line(e)
            )));
        } else if let Some(hole) = &reach.hole {
            out.push(critical(format!(
                "WAL hole after the newest backup at {hole}: nothing after {} is recoverable",
                last_byte_before(reach.until)
            )));
        }
    }
    // Holes before the newest backup's WAL that an older backup's restore runs into.
    let seg = repo.wal_segment_size.max(1);
    let newest_start = Lsn::from_segment(newest.start_lsn.segment_no(seg), seg);
    for tl in &repo.timelines {
        for gap in &tl.gaps {
            if gap.end_lsn > newest_start {
                continue;
            }
            let before = (repo.backups.iter())
                .filter(|b| b.timeline <= tl.timeline && b.start_lsn < gap.start_lsn)
                .max_by_key(|b| b.start_lsn);
            let after = (repo.backups.iter())
                .filter(|b| b.start_lsn >= gap.end_lsn)
                .min_by_key(|b| b.start_lsn);
            let (Some(before), Some(after)) = (before, after) else {
                continue;
            };
            out.push(critical(format!(
                "WAL hole between backups {} and {} at {} ({} missing): the recoverable window \
                 is cut; nothing after {} is recoverable until backup {} ended ({})",
                before.label,
                after.label,
                gap.first,
                units::count(gap.segments, "segment", "segments"),
                last_byte_before(gap.start_lsn),
                after.label,
                after.stop_lsn
            )));
        }
    }
    for name in &repo.conflicts {
        out.push(warning(format!(
            "WAL {name} is archived twice with different contents: do two servers archive \
             into this repository?"
        )));
    }
}

/// A failed newest report is CRITICAL while its drill is defined. Once the drill files are
/// known and it is not among them (removed, renamed, or run once with `--file`), it warns
/// instead: otherwise a deleted drill would keep the check CRITICAL for ever (reports are kept).
fn drills(input: &StatusInput, out: &mut Vec<Reason>) {
    let defined = |name: &str| {
        input.drill_definitions.is_empty() || input.drill_definitions.iter().any(|d| d.name == name)
    };
    for d in &input.drills {
        if d.verdict != DrillVerdict::Failed {
            continue;
        }
        if !defined(&d.name) {
            out.push(warning(format!(
                "last drill {} failed (report drills/{}.json), and no drill {} is defined in \
                 [drill] tests any more",
                d.name, d.label, d.name
            )));
            continue;
        }
        let why = match (&d.failed_phase, &d.failure) {
            (Some(phase), Some(reason)) => format!(" in {phase}: {}", first_line(reason)),
            (None, Some(reason)) => format!(": {}", first_line(reason)),
            _ => String::new(),
        };
        out.push(critical(format!(
            "last drill {} failed{why} (report drills/{}.json)",
            d.name, d.label
        )));
    }
}

fn agent(input: &StatusInput, now: DateTime<Utc>, out: &mut Vec<Reason>) {
    if let Some(e) = &input.agent.error {
        out.push(warning(format!(
            "the agent's job state cannot be read, so staleness is not judged: {}",
            first_line(e)
        )));
    }
    if !input.agent.present {
        return;
    }
    if let Some(e) = &input.policy.error {
        out.push(warning(format!(
            "the policy cannot be read, so the agent's jobs are not judged: {}",
            first_line(e)
        )));
    }
    for job in &input.policy.jobs {
        let Some(state) = &job.state else {
            continue;
        };
        if state.failing() {
            let level = match job.kind.as_str() {
                "backup" | "verify" | "drill" => Level::Critical,
                _ => Level::Warning,
            };
            let since = state
                .last_failure
                .map(|t| format!(" since {}", ago(t, now)))
                .unwrap_or_default();
            out.push(Reason {
                level,
                text: format!(
                    "job {} is failing{since}: {}",
                    job.name,
                    first_line(state.last_error.as_deref().unwrap_or("see the agent's log"))
                ),
            });
            continue;
        }
        let Some(interval) = job.interval_seconds else {
            continue;
        };
        let Some(since) = state.last_success.or(state.last_start) else {
            continue;
        };
        if !schedule::overdue(since, Duration::from_secs_f64(interval), now) {
            continue;
        }
        let limit = interval * f64::from(schedule::OVERDUE_INTERVALS);
        let schedule = describe_interval(interval);
        let newest = match job.kind.as_str() {
            "backup" => input
                .repo
                .as_ref()
                .and_then(|r| r.backups.iter().map(|b| b.stop_time).max())
                .map(|t| ("backup", t)),
            "dump" => input
                .repo
                .as_ref()
                .and_then(|r| r.dumps.iter().map(|d| d.stop_time).max())
                .map(|t| ("dump", t)),
            _ => None,
        };
        let text = match newest {
            Some((what, t)) if seconds(now - t) > limit => format!(
                "newest {what} is {} old, schedule is {schedule}",
                units::span(seconds(now - t))
            ),
            _ if state.last_success.is_none() => format!(
                "job {} has never succeeded: it last started {}, schedule is {schedule}",
                job.name,
                ago(since, now)
            ),
            _ => format!(
                "job {} last succeeded {}, schedule is {schedule}",
                job.name,
                ago(since, now)
            ),
        };
        out.push(warning(text));
    }
}

fn server(input: &StatusInput, out: &mut Vec<Reason>) {
    let Some(a) = &input.server.archiver else {
        if input.server.conninfo_set {
            let why = (input.server.error.as_deref())
                .map(|e| format!(" ({})", first_line(e)))
                .unwrap_or_default();
            out.push(warning(format!(
                "the server does not answer at [postgres] conninfo{why}: archiving and RPO are \
                 not judged"
            )));
        }
        return;
    };
    if a.failing() {
        let last_ok = match (&a.last_archived_wal, a.last_archived_time) {
            (Some(w), Some(t)) => format!("; the last success was {w} at {}", hhmm(t)),
            _ => "; nothing was archived since the statistics were reset".to_string(),
        };
        out.push(critical(format!(
            "WAL archiving is failing: {} failed at {} ({} so far){last_ok}; see the server log",
            a.last_failed_wal.as_deref().unwrap_or("a segment"),
            a.last_failed_time.map(hhmm).unwrap_or_else(|| "?".into()),
            units::count(a.failed_count, "failure", "failures"),
        )));
    }
    if let Some(why) = &a.rpo_unmeasured {
        out.push(warning(format!(
            "RPO not measured: {}",
            why.replace('\n', "; ")
        )));
        return;
    }
    let (bound, source) = rpo_bound(input);
    if a.rpo_seconds > bound {
        let level = if a.rpo_seconds > 2.0 * bound {
            Level::Critical
        } else {
            Level::Warning
        };
        out.push(Reason {
            level,
            text: format!(
                "RPO is {}: {} wait for archiving (bound {}, {source})",
                units::span(a.rpo_seconds),
                units::count(a.pending_segments.max(0) as u64, "segment", "segments"),
                units::span(bound)
            ),
        });
    }
}

/// `hourly`, `daily`, `weekly`, else `every 15 min`.
pub fn describe_interval(seconds: f64) -> String {
    match seconds.round() as u64 {
        3600 => "hourly".into(),
        86_400 => "daily".into(),
        604_800 => "weekly".into(),
        _ => format!("every {}", units::span(seconds)),
    }
}

/// The LSN just before `lsn` (`0/7000000` → `0/6FFFFFF`): the last recoverable byte.
fn last_byte_before(lsn: Lsn) -> Lsn {
    Lsn(lsn.0.saturating_sub(1))
}

fn ago(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    format!(
        "{} ago ({})",
        units::span(seconds(now - t)),
        crate::repo::label::rfc3339(&t)
    )
}

fn hhmm(t: DateTime<Utc>) -> String {
    crate::repo::label::rfc3339(&t)
}

fn seconds(d: chrono::Duration) -> f64 {
    d.num_milliseconds() as f64 / 1000.0
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s).trim_end()
}

fn critical(text: String) -> Reason {
    Reason {
        level: Level::Critical,
        text,
    }
}

fn warning(text: String) -> Reason {
    Reason {
        level: Level::Warning,
        text,
    }
}

fn unknown(text: String) -> Reason {
    Reason {
        level: Level::Unknown,
        text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::state::JobState;
    use crate::status::facts::testing::{SEG, backup, healthy, now, range, seg, t};
    use crate::status::facts::*;

    fn repo(i: &mut StatusInput) -> &mut RepoFacts {
        i.repo.as_mut().unwrap()
    }

    fn job(kind: &str, interval: f64, state: JobState) -> JobFacts {
        JobFacts {
            name: kind.into(),
            kind: kind.into(),
            schedule: "0 * * * *".into(),
            schedule_error: None,
            interval_seconds: Some(interval),
            next_run: Some(t("2026-12-02T13:00:00Z")),
            state: Some(state),
        }
    }

    fn with_agent(mut i: StatusInput, jobs: Vec<JobFacts>) -> StatusInput {
        i.agent.present = true;
        i.policy.jobs = jobs;
        i
    }

    fn succeeded(at: &str) -> JobState {
        JobState {
            last_start: Some(t(at) - chrono::Duration::seconds(60)),
            last_success: Some(t(at)),
            runs_success: 1,
            ..JobState::default()
        }
    }

    fn failed(at: &str, error: &str) -> JobState {
        JobState {
            last_start: Some(t(at)),
            last_success: Some(t(at) - chrono::Duration::hours(1)),
            last_failure: Some(t(at)),
            last_error: Some(error.into()),
            ..JobState::default()
        }
    }

    fn failed_drill(name: &str, phase: &str, reason: &str) -> crate::drill::report::Summary {
        crate::drill::report::Summary {
            name: name.into(),
            label: format!("20261202T031500Z-{name}"),
            verdict: DrillVerdict::Failed,
            started_at: t("2026-12-02T03:15:00Z"),
            finished_at: t("2026-12-02T03:16:00Z"),
            duration_seconds: 60.0,
            from: "backup".into(),
            backup: Some("20261202T020000Z".into()),
            target: "latest".into(),
            rto_seconds: None,
            rpo_seconds: None,
            failed_phase: Some(phase.into()),
            failure: Some(reason.into()),
        }
    }

    /// The verdict's level and its reasons as `LEVEL: text`.
    fn verdict(i: &StatusInput) -> (Level, Vec<String>) {
        let v = judge(i, now());
        let texts = (v.reasons.iter())
            .map(|r| format!("{}: {}", r.level.as_str(), r.text))
            .collect();
        (v.level, texts)
    }

    #[test]
    fn the_rules_give_their_level_and_sentence() {
        type Case = (&'static str, StatusInput, Level, Vec<&'static str>);
        let mut cases: Vec<Case> = Vec::new();

        cases.push(("healthy", healthy(), Level::Ok, vec![]));

        let mut i = healthy();
        i.server.archiver = None;
        i.server.conninfo_set = false;
        cases.push(("no server configured (a DR host)", i, Level::Ok, vec![]));

        let mut i = healthy();
        repo(&mut i).backups.clear();
        repo(&mut i).newest_backup_reach = None;
        repo(&mut i).backups_in_progress = vec!["20261202T115900Z".into()];
        cases.push((
            "no complete backup",
            i,
            Level::Critical,
            vec![
                "CRITICAL: no complete base backup (1 backup without a manifest: \
                 20261202T115900Z): nothing can be restored; take one with `pgward backup`",
            ],
        ));

        let mut i = healthy();
        let r = repo(&mut i);
        r.timelines[0].ranges = vec![range(1, 6), range(8, 9)];
        r.timelines[0].gaps = vec![range(7, 7)];
        let reach = r.newest_backup_reach.as_mut().unwrap();
        reach.until = Lsn::from_segment(7, SEG);
        reach.hole = Some(seg(7));
        cases.push((
            "a WAL hole after the newest backup",
            i,
            Level::Critical,
            vec![
                "CRITICAL: WAL hole after the newest backup at 000000010000000000000007: \
                 nothing after 0/6FFFFFF is recoverable",
            ],
        ));

        let mut i = healthy();
        let r = repo(&mut i);
        r.newest_backup_reach.as_mut().unwrap().error = Some(
            "backup 20261202T110000Z cannot be restored: the archive lacks WAL it needs \
             (from 000000010000000000000003 to 000000010000000000000003); missing: \
             000000010000000000000003\nhint: ..."
                .into(),
        );
        cases.push((
            "the newest backup's own WAL is missing",
            i,
            Level::Critical,
            vec![
                "CRITICAL: the newest backup 20261202T110000Z cannot be restored: backup \
                 20261202T110000Z cannot be restored: the archive lacks WAL it needs (from \
                 000000010000000000000003 to 000000010000000000000003); missing: \
                 000000010000000000000003",
            ],
        ));

        // Backups at segments 2 and 6, a hole at 4..=5 between them: the newest is fine.
        let mut i = healthy();
        let r = repo(&mut i);
        r.backups = vec![
            backup("20261201T110000Z", 2, "2026-12-01T11:00:00Z"),
            backup("20261202T110000Z", 6, "2026-12-02T11:00:00Z"),
        ];
        r.timelines[0].ranges = vec![range(1, 3), range(6, 9)];
        r.timelines[0].gaps = vec![range(4, 5)];
        cases.push((
            "a WAL hole between older backups",
            i,
            Level::Critical,
            vec![
                "CRITICAL: WAL hole between backups 20261201T110000Z and 20261202T110000Z at \
                 000000010000000000000004 (2 segments missing): the recoverable window is \
                 cut; nothing after 0/3FFFFFF is recoverable until backup 20261202T110000Z \
                 ended (0/6000100)",
            ],
        ));

        // A hole before the oldest backup is old WAL nobody needs.
        let mut i = healthy();
        let r = repo(&mut i);
        r.timelines[0].ranges = vec![range(1, 1), range(3, 9)];
        r.timelines[0].gaps = vec![range(2, 2)];
        cases.push(("a hole before every backup", i, Level::Ok, vec![]));

        let mut i = healthy();
        i.repo = None;
        i.repository_error =
            Some("repository directory /nowhere does not exist\nhint: run `pgward init`".into());
        cases.push((
            "an unreadable repository",
            i,
            Level::Unknown,
            vec!["UNKNOWN: the state cannot be read: repository directory /nowhere does not exist"],
        ));

        let mut i = healthy();
        i.drills = vec![failed_drill("retired", "restore", "gone")];
        i.drill_definitions = vec![DrillDefinition {
            name: "weekly".into(),
            max_rto_seconds: None,
            max_rpo_seconds: None,
        }];
        cases.push((
            "a failed drill that is no longer defined",
            i,
            Level::Warning,
            vec![
                "WARNING: last drill retired failed (report drills/20261202T031500Z-retired.json), \
                 and no drill retired is defined in [drill] tests any more",
            ],
        ));

        let mut i = healthy();
        i.drills = vec![failed_drill(
            "weekly-latest",
            "restore",
            "block 3f2a… is missing from the repository",
        )];
        cases.push((
            "a failed last drill",
            i,
            Level::Critical,
            vec![
                "CRITICAL: last drill weekly-latest failed in restore: block 3f2a… is missing \
                 from the repository (report drills/20261202T031500Z-weekly-latest.json)",
            ],
        ));

        let mut i = healthy();
        let a = i.server.archiver.as_mut().unwrap();
        a.failed_count = 3;
        a.last_failed_wal = Some(seg(10));
        a.last_failed_time = Some(t("2026-12-02T11:59:30Z"));
        cases.push((
            "archiver failing",
            i,
            Level::Critical,
            vec![
                "CRITICAL: WAL archiving is failing: 00000001000000000000000A failed at \
                 2026-12-02T11:59:30Z (3 failures so far); the last success was \
                 000000010000000000000009 at 2026-12-02T11:59:00Z; see the server log",
            ],
        ));

        let mut i = healthy();
        let a = i.server.archiver.as_mut().unwrap();
        a.failed_count = 3;
        a.last_failed_wal = Some(seg(5));
        a.last_failed_time = Some(t("2026-12-02T11:00:00Z"));
        cases.push(("an archiver that recovered", i, Level::Ok, vec![]));

        let mut i = healthy();
        i.server.archiver = None;
        i.server.error = Some("password authentication failed for user \"pgward\"".into());
        cases.push((
            "the server does not answer",
            i,
            Level::Warning,
            vec![
                "WARNING: the server does not answer at [postgres] conninfo (password \
                 authentication failed for user \"pgward\"): archiving and RPO are not judged",
            ],
        ));

        // pg_wal unreadable (a check run as another user): not "RPO 0".
        let mut i = healthy();
        i.server.archiver.as_mut().unwrap().rpo_unmeasured = Some(
            "cannot read /d/pg_wal/archive_status: Permission denied\nhint: run as postgres".into(),
        );
        cases.push((
            "RPO not measured",
            i,
            Level::Warning,
            vec![
                "WARNING: RPO not measured: cannot read /d/pg_wal/archive_status: Permission \
                 denied; hint: run as postgres",
            ],
        ));

        let mut i = healthy();
        let a = i.server.archiver.as_mut().unwrap();
        a.rpo_seconds = 1200.0;
        a.pending_segments = 4;
        cases.push((
            "RPO above the default bound",
            i,
            Level::Warning,
            vec![
                "WARNING: RPO is 20 min: 4 segments wait for archiving (bound 15 min, the \
                 default bound)",
            ],
        ));

        let mut i = healthy();
        i.server.archiver.as_mut().unwrap().rpo_seconds = 700.0;
        i.server.archiver.as_mut().unwrap().pending_segments = 2;
        i.drill_definitions = vec![
            DrillDefinition {
                name: "weekly".into(),
                max_rto_seconds: None,
                max_rpo_seconds: Some(900.0),
            },
            DrillDefinition {
                name: "hourly".into(),
                max_rto_seconds: None,
                max_rpo_seconds: Some(300.0),
            },
        ];
        cases.push((
            "RPO above twice the smallest max_rpo",
            i,
            Level::Critical,
            vec![
                "CRITICAL: RPO is 11 min: 2 segments wait for archiving (bound 5 min, max_rpo \
                 of drill hourly)",
            ],
        ));

        // Agent state: the newest backup and the job are stale.
        let mut i = healthy();
        repo(&mut i).backups[0] = backup("20261201T100000Z", 3, "2026-12-01T10:00:00Z");
        let i = with_agent(
            i,
            vec![job("backup", 3600.0, succeeded("2026-12-01T10:00:00Z"))],
        );
        cases.push((
            "a stale backup against an hourly schedule",
            i,
            Level::Warning,
            vec!["WARNING: newest backup is 26 h old, schedule is hourly"],
        ));

        // The same state without jobs.json: not judged (pgward driven from cron).
        let mut i = healthy();
        repo(&mut i).backups[0] = backup("20261201T100000Z", 3, "2026-12-01T10:00:00Z");
        i.policy.jobs = vec![JobFacts {
            state: None,
            ..job("backup", 3600.0, JobState::default())
        }];
        cases.push(("no agent state", i, Level::Ok, vec![]));

        // A fresh backup (taken by hand) while the agent's backup job has not succeeded
        // for days.
        let i = with_agent(
            healthy(),
            vec![job("backup", 3600.0, succeeded("2026-11-29T12:00:00Z"))],
        );
        cases.push((
            "a stale backup job, a fresh backup",
            i,
            Level::Warning,
            vec![
                "WARNING: job backup last succeeded 3 d ago (2026-11-29T12:00:00Z), schedule \
                 is hourly",
            ],
        ));

        let i = with_agent(
            healthy(),
            vec![
                job("backup", 3600.0, succeeded("2026-12-02T11:00:00Z")),
                job("verify", 86_400.0, succeeded("2026-12-02T01:00:00Z")),
            ],
        );
        cases.push(("fresh jobs", i, Level::Ok, vec![]));

        let i = with_agent(
            healthy(),
            vec![
                job(
                    "backup",
                    3600.0,
                    failed(
                        "2026-12-02T11:30:00Z",
                        "cannot connect to the server\nhint: x",
                    ),
                ),
                job(
                    "dump",
                    86_400.0,
                    failed("2026-12-02T02:00:00Z", "pg_dump exited 1"),
                ),
            ],
        );
        cases.push((
            "failing jobs",
            i,
            Level::Critical,
            vec![
                "CRITICAL: job backup is failing since 30 min ago (2026-12-02T11:30:00Z): \
                 cannot connect to the server",
                "WARNING: job dump is failing since 10 h ago (2026-12-02T02:00:00Z): pg_dump \
                 exited 1",
            ],
        ));

        // Started three days ago, never finished (a run that hangs, or a crash mid-run).
        let i = with_agent(
            healthy(),
            vec![job(
                "verify",
                86_400.0,
                JobState {
                    last_start: Some(t("2026-11-29T12:00:00Z")),
                    ..JobState::default()
                },
            )],
        );
        cases.push((
            "a job that never succeeded",
            i,
            Level::Warning,
            vec![
                "WARNING: job verify has never succeeded: it last started 3 d ago \
                 (2026-11-29T12:00:00Z), schedule is daily",
            ],
        ));

        let mut i = with_agent(healthy(), vec![]);
        i.policy.origin = None;
        i.policy.error = Some("invalid policy in p.toml: unknown field `jb`\nhint: x".into());
        cases.push((
            "an unreadable policy with agent state",
            i,
            Level::Warning,
            vec![
                "WARNING: the policy cannot be read, so the agent's jobs are not judged: \
                 invalid policy in p.toml: unknown field `jb`",
            ],
        ));

        let mut i = healthy();
        i.agent.error =
            Some("the agent's job state /s/jobs.json is unusable: not valid JSON".into());
        cases.push((
            "an unreadable agent state",
            i,
            Level::Warning,
            vec![
                "WARNING: the agent's job state cannot be read, so staleness is not judged: \
                 the agent's job state /s/jobs.json is unusable: not valid JSON",
            ],
        ));

        for (why, input, level, reasons) in cases {
            let (got_level, got) = verdict(&input);
            assert_eq!(got, reasons, "{why}");
            assert_eq!(got_level, level, "{why}");
        }
    }

    #[test]
    fn reasons_come_worst_first() {
        let mut i = healthy();
        i.server.archiver.as_mut().unwrap().rpo_seconds = 1000.0;
        i.drills = vec![failed_drill(
            "monthly",
            "checks",
            "amcheck found corruption",
        )];
        i.repo = None;
        i.repository_error = Some("the repository did not answer within 5s".into());
        let (level, reasons) = verdict(&i);
        // CRITICAL outranks UNKNOWN (a down store also fails archiving: page for it).
        assert_eq!(level, Level::Critical);
        let levels: Vec<&str> = reasons
            .iter()
            .map(|r| r.split(':').next().unwrap())
            .collect();
        assert_eq!(levels, ["CRITICAL", "UNKNOWN", "WARNING"], "{reasons:?}");
    }

    #[test]
    fn intervals_read_as_schedules() {
        for (s, want) in [
            (3600.0, "hourly"),
            (86_400.0, "daily"),
            (604_800.0, "weekly"),
            (900.0, "every 15 min"),
            (4.0, "every 4 s"),
        ] {
            assert_eq!(describe_interval(s), want);
        }
    }
}
