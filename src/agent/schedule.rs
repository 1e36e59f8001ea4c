//! When a job runs: a crontab(5) expression evaluated in the policy's time zone.
//!
//! Pure: every function takes the instant it reasons from, so tests pin time.
//!
//! **Why `croner` and not `cron`.** The `cron` crate reads Quartz-like expressions: six or seven
//! fields with the seconds required, and day-of-week numbered 1-7 = Sunday-Saturday, so the
//! crontab line `0 3 * * 1` (Monday) would mean Sunday there. Giving crontab semantics on top of
//! it would need a translation layer of our own (renumbering every day-of-week value, range and
//! step, inserting the seconds field). `croner` parses crontab itself: five fields, or six with
//! seconds first; day-of-week 0 and 7 = Sunday; `mon`/`jan` names; `@daily` and the other
//! nicknames; the day-of-month/day-of-week OR rule; and it evaluates in a `chrono-tz` zone with
//! Vixie cron's DST rule (below), which the tests here check against Europe/Berlin.
//!
//! **What is refused.** Only crontab(5) syntax is accepted: croner's extensions (`L`, `W`, `#`,
//! `?`, a leading `+` on day-of-week) and a year field are refused with the reason, so a policy
//! means the same to an operator who reads it as crontab and to the agent. `@reboot` is refused
//! too (the agent's `catch_up` covers what it is usually used for). An expression that can never
//! fire (`0 0 30 2 *`) is refused at parse, not discovered when the job silently never runs.
//!
//! **DST, as Vixie cron.** A job at fixed times — Vixie's test: no `*` leads its minute or hour
//! field (nor, here, its seconds field), so `30 2 * * *`, `30 2,14 * * *` and `0 1-3 * * *` —
//! whose local time falls in a spring-forward gap runs right after the gap (Berlin 2026-03-29
//! 02:30 runs at 03:00 CEST; several such times are one run then); a local time that exists
//! twice (fall-back) runs once, at its first occurrence. A job with `*` leading a time field
//! (`0 * * * *`, `*/15 * * * *`, `@hourly`) follows the wall clock, as Vixie's "jobs which are
//! specified with wildcards are run based on the new time immediately": `0 * * * *` runs at
//! 02:00 CEST and again at 02:00 CET, an hour apart in real time, and has no run in the skipped
//! hour. croner does the latter itself, but counts as fixed only single-valued time fields (it
//! would skip `30 2,14 * * *` in the gap and run it twice in the overlap), so fixed-time jobs
//! are evaluated here: croner walks the wall clock (naive local times) and [`Schedule`] maps
//! each match to its instant (the first of two; the end of a gap).
//!
//! **A difference left alone.** Vixie treats a day-of-month or day-of-week field that *starts*
//! with `*` (`*/2`) as unrestricted for its OR rule; croner only the field `*` itself. Only an
//! expression that steps one day field and restricts the other (`0 0 */2 * 1`) sees it.

use anyhow::{Result, anyhow};
use chrono::{DateTime, LocalResult, NaiveDateTime, Offset, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use std::time::Duration;

/// A crontab(5) expression in a time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    expr: String,
    tz: Tz,
    cron: Cron,
    /// Vixie's "fixed time": no `*` leads the second, minute or hour field (see the module doc).
    fixed_time: bool,
}

/// Bounds on the wall-clock walks of fixed-time jobs (runs skipped in a repeated hour; seconds
/// of a DST gap).
const MAX_WALK: usize = 100_000;
const MAX_GAP_SECONDS: usize = 6 * 3600;
const FIELDS_5: [&str; 5] = ["minute", "hour", "day-of-month", "month", "day-of-week"];
const FIELDS_6: [&str; 6] = [
    "second",
    "minute",
    "hour",
    "day-of-month",
    "month",
    "day-of-week",
];
const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
const HINT: &str = "hint: write five crontab(5) fields `minute hour day-of-month month \
                    day-of-week` (e.g. `0 3 * * *` daily at 03:00, `*/15 * * * *`), or six with \
                    seconds first; day-of-week 0 and 7 are Sunday";

impl Schedule {
    /// 5 fields, or 6 with seconds first; day-of-week 0 and 7 = Sunday; names (mon, jan)
    /// as crontab allows; errors name the expression and what is wrong (with a hint).
    pub fn parse(expr: &str, tz: Tz) -> Result<Schedule> {
        let refuse = |why: String| anyhow!("schedule `{expr}` {why}\n{HINT}");
        let trimmed = expr.trim();
        let body = match trimmed.to_ascii_lowercase().as_str() {
            "" => return Err(refuse("is empty".into())),
            "@yearly" | "@annually" => "0 0 1 1 *".to_string(),
            "@monthly" => "0 0 1 * *".to_string(),
            "@weekly" => "0 0 * * 0".to_string(),
            "@daily" | "@midnight" => "0 0 * * *".to_string(),
            "@hourly" => "0 * * * *".to_string(),
            "@reboot" => {
                return Err(refuse(
                    "uses @reboot, which the agent does not run (a run missed while it was down \
                     is caught up at start when [agent] catch_up is on)"
                        .into(),
                ));
            }
            s if s.starts_with('@') => {
                return Err(refuse(format!(
                    "uses the unknown nickname `{s}` (crontab knows @yearly, @annually, \
                     @monthly, @weekly, @daily, @midnight and @hourly)"
                )));
            }
            _ => trimmed.to_string(),
        };
        let fields: Vec<&str> = body.split_whitespace().collect();
        let names: &[&str] = match fields.len() {
            5 => &FIELDS_5,
            6 => &FIELDS_6,
            n => {
                return Err(refuse(format!(
                    "has {n} field{}; crontab(5) has 5 (or 6 with seconds first)",
                    if n == 1 { "" } else { "s" }
                )));
            }
        };
        for (field, name) in fields.iter().zip(names) {
            check_field(field, name).map_err(refuse)?;
        }
        let parser = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .dom_and_dow(false)
            .alternative_weekdays(false)
            .build();
        let cron = parser
            .parse(&body)
            .map_err(|e| refuse(format!("is not valid: {e}")))?;
        // Vixie flags a minute or hour field that starts with `*` (`*`, `*/15`) as a wildcard;
        // the seconds field, which crontab lacks, is judged the same way.
        let time_fields = &fields[..fields.len() - 3];
        let fixed_time = !time_fields.iter().any(|f| f.starts_with('*'));
        let schedule = Schedule {
            expr: expr.to_string(),
            tz,
            cron,
            fixed_time,
        };
        // From a fixed instant, so parsing stays pure: a leap day is found within the years
        // croner searches, `30 February` never.
        let reference = Utc.with_ymd_and_hms(1999, 12, 31, 0, 0, 0).unwrap();
        if schedule.next_after(reference).is_none() {
            return Err(refuse(
                "never fires (no date matches its day-of-month and month fields)".into(),
            ));
        }
        Ok(schedule)
    }

    /// The first run strictly after `after`, DST handled as Vixie cron does: a local time
    /// that does not exist (spring-forward gap) runs right after the gap; one that exists
    /// twice (fall-back) runs once (the first). See the module documentation for jobs with
    /// wildcards in their time fields.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Whole seconds: the first match after the truncated second is after `after` itself.
        let after = after.with_nanosecond(0)?;
        if self.fixed_time {
            // Walk the wall clock's matches; their instants are monotone in them, so the first
            // one after `after` is the answer. From `after`'s own wall time: only matches in a
            // repeated hour's second pass map back before it, and those few are skipped.
            let mut wall = after.with_timezone(&self.tz).naive_local();
            for _ in 0..MAX_WALK {
                wall = self.cron.find_next_occurrence(&wall, false).ok()?;
                let at = self.instant_of(wall)?;
                if at > after {
                    return Some(at);
                }
            }
            return None;
        }
        self.cron
            .find_next_occurrence(&after.with_timezone(&self.tz), false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The latest run at or before `at`.
    fn latest_at_or_before(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let at = at.with_nanosecond(0)?;
        if self.fixed_time {
            // Backwards from the latest wall time that can map to `at` or before: after a
            // fall-back, wall times up to the clock's step ahead of `at`'s own still do.
            let local = at.with_timezone(&self.tz);
            let earlier = (at - chrono::Duration::hours(3)).with_timezone(&self.tz);
            let step =
                earlier.offset().fix().local_minus_utc() - local.offset().fix().local_minus_utc();
            let mut wall = local.naive_local() + chrono::Duration::seconds(i64::from(step.max(0)));
            let mut inclusive = true;
            for _ in 0..MAX_WALK {
                wall = self.cron.find_previous_occurrence(&wall, inclusive).ok()?;
                inclusive = false;
                let t = self.instant_of(wall)?;
                if t <= at {
                    return Some(t);
                }
            }
            return None;
        }
        self.cron
            .find_previous_occurrence(&at.with_timezone(&self.tz), true)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// When a fixed-time job scheduled at local `wall` runs: then; at the first occurrence
    /// when the clock repeats it; right after the gap when the clock skips it.
    fn instant_of(&self, wall: NaiveDateTime) -> Option<DateTime<Utc>> {
        match self.tz.from_local_datetime(&wall) {
            LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => Some(t.with_timezone(&Utc)),
            LocalResult::None => {
                // The first wall clock second after the gap (gaps last at most a few hours).
                let mut w = wall;
                for _ in 0..MAX_GAP_SECONDS {
                    w += chrono::Duration::seconds(1);
                    if let LocalResult::Single(t) | LocalResult::Ambiguous(t, _) =
                        self.tz.from_local_datetime(&w)
                    {
                        return Some(t.with_timezone(&Utc));
                    }
                }
                None
            }
        }
    }

    /// The nominal interval (next-after-next minus next, from `now`), for the
    /// `pgward_job_interval_seconds` metric and "overdue" judgements.
    pub fn interval(&self, now: DateTime<Utc>) -> Option<Duration> {
        let next = self.next_after(now)?;
        let after = self.next_after(next)?;
        (after - next).to_std().ok()
    }

    pub fn expr(&self) -> &str {
        &self.expr
    }

    pub fn timezone(&self) -> Tz {
        self.tz
    }
}

/// Refuses what crontab(5) does not have: every atom of a field is `*`, a number, or (month,
/// day-of-week) a three-letter English name; steps follow `/` as numbers.
fn check_field(field: &str, name: &str) -> std::result::Result<(), String> {
    for c in ['L', 'W', '#', '?', '+'] {
        if field.to_ascii_uppercase().contains(c) && !names_allow(field, name) {
            return Err(format!(
                "uses `{c}` in its {name} field `{field}`, an extension crontab(5) does not have"
            ));
        }
    }
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (item, None),
        };
        if let Some(step) = step
            && (step.is_empty() || !step.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(format!(
                "has the step `/{step}` in its {name} field `{field}`; a step is a number (`*/15`)"
            ));
        }
        if range == "*" {
            continue;
        }
        for atom in range.split('-') {
            let ok = !atom.is_empty()
                && (atom.bytes().all(|b| b.is_ascii_digit())
                    || (name == "month" && MONTHS.contains(&atom.to_ascii_lowercase().as_str()))
                    || (name == "day-of-week"
                        && DAYS.contains(&atom.to_ascii_lowercase().as_str())));
            if !ok {
                return Err(format!(
                    "has `{atom}` in its {name} field `{field}`, which is neither a number{}",
                    match name {
                        "month" => ", `*` nor a month name (jan..dec)",
                        "day-of-week" => ", `*` nor a day name (sun..sat)",
                        _ => " nor `*`",
                    }
                ));
            }
        }
    }
    Ok(())
}

/// Whether an `L`/`W` in `field` is only part of a name (`jul`, `wed`), not an extension.
fn names_allow(field: &str, name: &str) -> bool {
    let list: &[&str] = match name {
        "month" => &MONTHS,
        "day-of-week" => &DAYS,
        _ => return false,
    };
    field
        .split([',', '-', '/'])
        .filter(|a| a.bytes().any(|b| b.is_ascii_alphabetic()))
        .all(|a| list.contains(&a.to_ascii_lowercase().as_str()))
        && !field.contains(['#', '?', '+'])
}

/// A job is overdue after this many of its intervals without a success: the agent's
/// `/readyz`, `pgward status` and deploy/alerts.yml's PgwardJobOverdue share the rule.
pub const OVERDUE_INTERVALS: u32 = 2;

/// Whether a job whose last success (or, never having succeeded, the moment it is counted
/// from) is `since` is overdue at `now` for its `interval`.
pub fn overdue(since: DateTime<Utc>, interval: Duration, now: DateTime<Utc>) -> bool {
    let limit =
        chrono::Duration::from_std(interval * OVERDUE_INTERVALS).unwrap_or(chrono::Duration::MAX);
    now - since > limit
}

/// Whether a run was missed while the agent was down: the latest scheduled time in
/// `(last_start, now]`, which the agent runs once at start (when `[agent] catch_up` is on);
/// several missed runs are one catch-up, not a burst.
///
/// `last_start = None` (the job never ran, or its state was reset) is no missed run: the job
/// waits for its next scheduled time. A fresh install or a new job therefore does not fire every
/// job at once on first start, and pgward never guesses a downtime it did not observe. A
/// `last_start` after `now` (the clock went back) is no missed run either.
pub fn missed_run(
    s: &Schedule,
    last_start: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let first = s.next_after(last_start?)?;
    if first > now {
        return None;
    }
    // The latest is found backwards from `now`, so a long downtime of a frequent schedule is
    // not walked run by run; `first` bounds it should the two searches ever disagree.
    Some(
        s.latest_at_or_before(now)
            .filter(|latest| *latest >= first && *latest <= now)
            .unwrap_or(first),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    /// The next `n` runs after `after`.
    fn runs(s: &Schedule, after: &str, n: usize) -> Vec<DateTime<Utc>> {
        let mut t = utc(after);
        (0..n)
            .map(|_| {
                t = s.next_after(t).unwrap();
                t
            })
            .collect()
    }

    fn berlin(expr: &str) -> Schedule {
        Schedule::parse(expr, chrono_tz::Europe::Berlin).unwrap()
    }

    /// (expression, zone, after, the next runs in UTC)
    #[test]
    fn next_runs_follow_crontab_semantics() {
        use chrono_tz::{America::New_York, Europe::Berlin, UTC};
        let cases: &[(&str, Tz, &str, &[&str], &str)] = &[
            // 2026-06-01 is a Monday.
            (
                "0 3 * * 0",
                UTC,
                "2026-06-01T00:00:00Z",
                &["2026-06-07T03:00:00Z"],
                "0 = Sunday",
            ),
            (
                "0 3 * * 7",
                UTC,
                "2026-06-01T00:00:00Z",
                &["2026-06-07T03:00:00Z"],
                "7 = Sunday",
            ),
            (
                "0 3 * * sun",
                UTC,
                "2026-06-01T00:00:00Z",
                &["2026-06-07T03:00:00Z"],
                "sun",
            ),
            (
                "0 3 * * 1",
                UTC,
                "2026-06-01T00:00:00Z",
                &["2026-06-01T03:00:00Z", "2026-06-08T03:00:00Z"],
                "1 = Monday, not Sunday as in cron/Quartz",
            ),
            (
                "0 3 * * MON",
                UTC,
                "2026-06-01T03:00:00Z",
                &["2026-06-08T03:00:00Z"],
                "strictly after; names in any case",
            ),
            (
                "0 3 * * mon-fri",
                UTC,
                "2026-06-05T04:00:00Z",
                &["2026-06-08T03:00:00Z"],
                "a named range skips the weekend",
            ),
            (
                "0 3 * * 5-7",
                UTC,
                "2026-06-01T00:00:00Z",
                &[
                    "2026-06-05T03:00:00Z",
                    "2026-06-06T03:00:00Z",
                    "2026-06-07T03:00:00Z",
                    "2026-06-12T03:00:00Z",
                ],
                "a range ending in 7 includes Sunday",
            ),
            (
                "0 0 1 jan,jul *",
                UTC,
                "2026-06-01T00:00:00Z",
                &["2026-07-01T00:00:00Z", "2027-01-01T00:00:00Z"],
                "month names",
            ),
            (
                "*/15 * * * *",
                UTC,
                "2026-06-01T10:07:00Z",
                &[
                    "2026-06-01T10:15:00Z",
                    "2026-06-01T10:30:00Z",
                    "2026-06-01T10:45:00Z",
                    "2026-06-01T11:00:00Z",
                ],
                "*/15",
            ),
            (
                "0 9-17/4 * * *",
                UTC,
                "2026-06-01T10:00:00Z",
                &[
                    "2026-06-01T13:00:00Z",
                    "2026-06-01T17:00:00Z",
                    "2026-06-02T09:00:00Z",
                ],
                "a stepped range",
            ),
            (
                "30 */5 * * * *",
                UTC,
                "2026-06-01T10:00:00Z",
                &["2026-06-01T10:00:30Z", "2026-06-01T10:05:30Z"],
                "six fields, seconds first",
            ),
            (
                "*/10 * * * * *",
                UTC,
                "2026-06-01T10:00:00.5Z",
                &["2026-06-01T10:00:10Z", "2026-06-01T10:00:20Z"],
                "sub-second `after`",
            ),
            (
                "0 0 13 * 5",
                UTC,
                "2026-06-01T00:00:00Z",
                &[
                    "2026-06-05T00:00:00Z",
                    "2026-06-12T00:00:00Z",
                    "2026-06-13T00:00:00Z",
                ],
                "day-of-month OR day-of-week, as crontab",
            ),
            (
                "@daily",
                UTC,
                "2026-06-01T10:00:00Z",
                &["2026-06-02T00:00:00Z"],
                "nickname",
            ),
            (
                "@weekly",
                UTC,
                "2026-06-01T10:00:00Z",
                &["2026-06-07T00:00:00Z"],
                "@weekly is Sunday",
            ),
            (
                "0 3 * * *",
                Berlin,
                "2026-06-01T00:00:00Z",
                &["2026-06-01T01:00:00Z"],
                "Berlin summer is UTC+2",
            ),
            (
                "0 3 * * *",
                Berlin,
                "2026-12-01T00:00:00Z",
                &["2026-12-01T02:00:00Z"],
                "Berlin winter is UTC+1",
            ),
            (
                "0 2 * * *",
                New_York,
                "2026-06-01T00:00:00Z",
                &["2026-06-01T06:00:00Z"],
                "New York summer is UTC-4",
            ),
            // New York springs forward 2026-03-08 02:00 -> 03:00, falls back 2026-11-01 02:00 -> 01:00.
            (
                "30 2 * * *",
                New_York,
                "2026-03-07T12:00:00Z",
                &["2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z"],
                "New York gap: right after it (03:00 EDT)",
            ),
            (
                "30 1 * * *",
                New_York,
                "2026-10-31T12:00:00Z",
                &["2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"],
                "New York overlap: once, at 01:30 EDT",
            ),
        ];
        for (expr, tz, after, want, why) in cases {
            let s = Schedule::parse(expr, *tz).unwrap_or_else(|e| panic!("{why}: {e:#}"));
            let mut t = utc(after);
            for w in *want {
                t = s
                    .next_after(t)
                    .unwrap_or_else(|| panic!("{why}: no run after {t}"));
                assert_eq!(t, utc(w), "{expr} in {tz} ({why})");
            }
        }
    }

    #[test]
    fn dst_in_berlin_is_handled_as_vixie_cron() {
        // 2026-03-29: 02:00 CET -> 03:00 CEST; 02:30 does not exist.
        let s = berlin("30 2 * * *");
        assert_eq!(
            runs(&s, "2026-03-28T12:00:00Z", 2),
            [utc("2026-03-29T01:00:00Z"), utc("2026-03-30T00:30:00Z")],
            "the skipped 02:30 runs right after the gap (03:00 CEST = 01:00 UTC), once"
        );
        // 2026-10-25: 03:00 CEST -> 02:00 CET; 02:30 exists twice (00:30 and 01:30 UTC).
        let first = s.next_after(utc("2026-10-24T12:00:00Z")).unwrap();
        assert_eq!(first, utc("2026-10-25T00:30:00Z"), "the first 02:30 (CEST)");
        assert_eq!(
            s.next_after(first).unwrap(),
            utc("2026-10-26T01:30:00Z"),
            "the repeated 02:30 (CET) does not run again"
        );
        // Fixed times as Vixie judges them (no `*` in the minute or hour field), lists and ranges
        // included: croner would treat these as interval jobs and skip the gap's run.
        let cases: &[(&str, &str, &[&str], &str)] = &[
            (
                "30 2,14 * * *",
                "2026-03-28T14:00:00Z",
                &["2026-03-29T01:00:00Z", "2026-03-29T12:30:00Z"],
                "a list: the gap's 02:30 runs after the gap",
            ),
            (
                "0 1-3 * * *",
                "2026-03-28T23:30:00Z",
                &[
                    "2026-03-29T00:00:00Z",
                    "2026-03-29T01:00:00Z",
                    "2026-03-29T23:00:00Z",
                ],
                "a range: the gap's 02:00 and the real 03:00 are one run",
            ),
            (
                "30 1,2 * * *",
                "2026-10-24T12:00:00Z",
                &[
                    "2026-10-24T23:30:00Z",
                    "2026-10-25T00:30:00Z",
                    "2026-10-26T00:30:00Z",
                ],
                "a list: the repeated 02:30 runs once",
            ),
            (
                "0,30 2 * * *",
                "2026-10-25T00:15:00Z",
                &["2026-10-25T00:30:00Z", "2026-10-26T01:00:00Z"],
                "minutes listed: the second pass does not rerun 02:00 and 02:30",
            ),
            (
                "15 30 2 * * *",
                "2026-03-28T12:00:00Z",
                &["2026-03-29T01:00:00Z"],
                "six fields: the gap's 02:30:15 runs at 03:00:00",
            ),
        ];
        for (expr, after, want, why) in cases {
            let s = berlin(expr);
            let mut t = utc(after);
            for w in *want {
                t = s.next_after(t).unwrap();
                assert_eq!(t, utc(w), "{expr} ({why})");
            }
        }
        // From inside the second pass of the repeated hour, the repeated 02:30 is not next.
        assert_eq!(
            s.next_after(utc("2026-10-25T01:15:00Z")).unwrap(),
            utc("2026-10-26T01:30:00Z")
        );
        // Wildcard hour: follows the wall clock (Vixie: "run based on the new time").
        let hourly = berlin("0 * * * *");
        assert_eq!(
            runs(&hourly, "2026-10-24T23:30:00Z", 4), // from 01:30 CEST
            [
                utc("2026-10-25T00:00:00Z"), // 02:00 CEST
                utc("2026-10-25T01:00:00Z"), // 02:00 CET
                utc("2026-10-25T02:00:00Z"), // 03:00 CET
                utc("2026-10-25T03:00:00Z"),
            ],
            "an hourly job keeps running hourly through the repeated hour"
        );
        assert_eq!(
            runs(&hourly, "2026-03-28T23:30:00Z", 3), // from 00:30 CET
            [
                utc("2026-03-29T00:00:00Z"), // 01:00 CET
                utc("2026-03-29T01:00:00Z"), // 03:00 CEST: no 02:00
                utc("2026-03-29T02:00:00Z"),
            ],
            "an hourly job has no run in the skipped hour"
        );
    }

    #[test]
    fn interval_is_next_after_next_minus_next() {
        let cases: &[(&str, &str, u64)] = &[
            ("*/15 * * * *", "2026-06-01T10:07:00Z", 15 * 60),
            ("0 * * * *", "2026-06-01T10:07:00Z", 3600),
            ("0 3 * * *", "2026-06-01T10:07:00Z", 86400),
            ("0 3 * * 0", "2026-06-01T10:07:00Z", 7 * 86400),
            ("*/5 * * * * *", "2026-06-01T10:07:00Z", 5),
            // The day of the spring-forward gap is 23 hours long in Berlin.
            ("0 3 * * *", "2026-03-27T12:00:00Z", 23 * 3600),
        ];
        for (expr, now, secs) in cases {
            let got = berlin(expr).interval(utc(now)).unwrap();
            assert_eq!(got, Duration::from_secs(*secs), "{expr} from {now}");
        }
    }

    #[test]
    fn missed_run_after_a_downtime() {
        let hourly = berlin("0 * * * *");
        let daily = berlin("30 2 * * *");
        let listed = berlin("30 1,2,14 * * *");
        /// (schedule, last start, now, the missed run, why)
        type Case<'a> = (
            &'a Schedule,
            Option<&'a str>,
            &'a str,
            Option<&'a str>,
            &'a str,
        );
        let cases: &[Case] = &[
            (
                &hourly,
                Some("2026-06-01T10:00:00Z"),
                "2026-06-01T10:59:59Z",
                None,
                "down across no run",
            ),
            (
                &hourly,
                Some("2026-06-01T10:00:00Z"),
                "2026-06-01T11:00:00Z",
                Some("2026-06-01T11:00:00Z"),
                "a run exactly at now was missed",
            ),
            (
                &hourly,
                Some("2026-06-01T10:00:00Z"),
                "2026-06-01T11:20:00Z",
                Some("2026-06-01T11:00:00Z"),
                "one run missed",
            ),
            (
                &hourly,
                Some("2026-06-01T10:00:00Z"),
                "2026-06-03T07:20:00Z",
                Some("2026-06-03T07:00:00Z"),
                "several missed: the latest, once",
            ),
            (
                &hourly,
                Some("2026-06-01T10:00:05Z"),
                "2026-06-01T10:30:00Z",
                None,
                "a late start of the last run is no miss",
            ),
            (
                &hourly,
                None,
                "2026-06-03T07:20:00Z",
                None,
                "never ran: waits for its next time",
            ),
            (
                &hourly,
                Some("2026-06-03T09:00:00Z"),
                "2026-06-03T07:20:00Z",
                None,
                "clock went back",
            ),
            (
                &daily,
                Some("2026-03-28T01:30:00Z"),
                "2026-03-29T01:10:00Z",
                Some("2026-03-29T01:00:00Z"),
                "the gap's run, moved after the gap, was missed",
            ),
            (
                &daily,
                Some("2026-03-28T01:30:00Z"),
                "2026-03-29T00:59:59Z",
                None,
                "before the moved run",
            ),
            (
                &daily,
                Some("2026-10-25T00:30:00Z"),
                "2026-10-25T01:45:00Z",
                None,
                "the repeated 02:30 is not a missed run",
            ),
            (
                &listed,
                Some("2026-10-24T23:30:00Z"),
                "2026-10-25T01:15:00Z",
                Some("2026-10-25T00:30:00Z"),
                "inside the repeated hour: its first 02:30",
            ),
            (
                &listed,
                Some("2026-10-25T00:30:00Z"),
                "2026-10-25T01:45:00Z",
                None,
                "the repeated 02:30 of a list is not missed",
            ),
            (
                &listed,
                Some("2026-03-28T13:30:00Z"),
                "2026-03-29T01:10:00Z",
                Some("2026-03-29T01:00:00Z"),
                "a list's gap run, moved after the gap",
            ),
            (
                &hourly,
                Some("2026-10-25T00:00:00Z"),
                "2026-10-25T01:30:00Z",
                Some("2026-10-25T01:00:00Z"),
                "an hourly job's second 02:00",
            ),
        ];
        for (s, last, now, want, why) in cases {
            assert_eq!(
                missed_run(s, last.map(utc), utc(now)),
                want.map(utc),
                "{} ({why})",
                s.expr()
            );
        }
        // A month of a per-second schedule is not walked run by run.
        let every_second = berlin("* * * * * *");
        let started = std::time::Instant::now();
        assert_eq!(
            missed_run(
                &every_second,
                Some(utc("2026-05-01T00:00:00Z")),
                utc("2026-06-01T00:00:00.7Z")
            ),
            Some(utc("2026-06-01T00:00:00Z"))
        );
        let dense_fixed = berlin("0-59 0-59 0-23 * * *");
        assert_eq!(
            missed_run(
                &dense_fixed,
                Some(utc("2026-05-01T00:00:00Z")),
                utc("2026-06-01T00:00:00.7Z")
            ),
            Some(utc("2026-06-01T00:00:00Z"))
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn bad_expressions_are_refused_with_the_reason() {
        let cases: &[(&str, &str)] = &[
            ("", "is empty"),
            ("* * * *", "has 4 fields; crontab(5) has 5"),
            ("0 0 0 * * * 2026", "has 7 fields"),
            ("60 * * * *", "is not valid"),
            ("0 24 * * *", "is not valid"),
            ("0 0 * * 8", "is not valid"),
            ("0 0 32 * *", "is not valid"),
            ("0 0 * 13 *", "is not valid"),
            ("0 0 L * *", "uses `L` in its day-of-month field `L`"),
            ("0 0 15W * *", "uses `W` in its day-of-month field"),
            ("0 0 * * 5#2", "uses `#` in its day-of-week field"),
            ("0 0 ? * 1", "uses `?`"),
            ("0 0 * * mon#1", "uses `#`"),
            ("0 0 * * fri-L", "uses `L` in its day-of-week field `fri-L`"),
            ("0 0 * * fri-xyz", "neither a number, `*` nor a day name"),
            ("0 0 * mon *", "has `mon` in its month field"),
            ("0 0 * * jan", "has `jan` in its day-of-week field"),
            (
                "0 x * * *",
                "has `x` in its hour field `x`, which is neither a number nor `*`",
            ),
            ("*/x * * * *", "has the step `/x` in its minute field"),
            ("*/ * * * *", "has the step `/`"),
            ("0 0 30 2 *", "never fires"),
            ("@reboot", "uses @reboot"),
            ("@fortnightly", "unknown nickname `@fortnightly`"),
        ];
        for (expr, why) in cases {
            let err = match Schedule::parse(expr, chrono_tz::UTC) {
                Ok(s) => panic!("`{expr}` was accepted: {s:?}"),
                Err(e) => format!("{e:#}"),
            };
            assert!(
                err.starts_with(&format!("schedule `{expr}` ")) && err.contains(why),
                "`{expr}`: want `{why}`, got: {err}"
            );
            assert!(err.contains("\nhint: "), "{err}");
        }
        // Accepted look-alikes: names containing L and W, a leap day.
        for expr in [
            "0 0 * jul wed",
            "0 0 * * sat,sun",
            "0 0 29 2 *",
            "0 0 1-7/2 * *",
        ] {
            Schedule::parse(expr, chrono_tz::UTC).unwrap_or_else(|e| panic!("{expr}: {e:#}"));
        }
    }
}
