//! The keep rules of one series (the complete backups, or one database's dumps): keep_last,
//! calendar buckets, keep_within, and the floors. Pure; `now` is passed in.
//!
//! Calendar buckets follow restic's `forget`: items newest first; a rule with N slots keeps
//! the newest item of each period, moving to the next period only when an item falls in one
//! that differs from the last kept one, so only periods that have an item count and a gap of
//! weeks does not use up slots. Periods are those of the policy's IANA zone, computed from
//! each item's instant (never by building local times, so DST gaps and repeated hours cannot
//! panic or shift a day); an hour bucket carries its UTC offset, so the two 02:00 hours of a
//! fall-back night are two periods. Weeks are ISO weeks (2027-01-01 is in 2026-W53).

use super::KeepReason;
use crate::repo::label::Label;
use crate::retention::policy::KeepRules;
use chrono::{DateTime, Datelike, Duration as ChronoDuration, Timelike, Utc};
use chrono_tz::Tz;

/// One complete item of a series.
pub(super) struct Item {
    pub label: Label,
    pub time: DateTime<Utc>,
}

/// Indices of `items`, newest first (by time, then label: never by name alone).
pub(super) fn newest_first(items: &[Item]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by(|&a, &b| (items[b].time, &items[b].label).cmp(&(items[a].time, &items[a].label)));
    order
}

/// The reasons the series rules give each item (aligned with `items`). `None` rules: every
/// item is kept ([`KeepReason::NoRules`]).
pub(super) fn rule_reasons(
    items: &[Item],
    rules: Option<&KeepRules>,
    tz: Tz,
    now: DateTime<Utc>,
) -> Vec<Vec<KeepReason>> {
    let mut reasons = vec![Vec::new(); items.len()];
    let Some(rules) = rules else {
        for r in &mut reasons {
            r.push(KeepReason::NoRules);
        }
        return reasons;
    };
    let order = newest_first(items);
    // A clock that was ahead dated these; they take no slot (they would push real backups
    // out) and are kept until `now` passes them.
    let (future, present): (Vec<usize>, Vec<usize>) =
        order.iter().partition(|&&i| items[i].time > now);
    for &i in &future {
        reasons[i].push(KeepReason::FutureDated);
    }
    if let Some(&newest) = present.first() {
        reasons[newest].push(KeepReason::NewestComplete);
    }
    for &i in present.iter().take(rules.keep_last as usize) {
        reasons[i].push(KeepReason::KeepLast { n: rules.keep_last });
    }
    let buckets: [(u32, Period); 5] = [
        (rules.keep_hourly, hourly),
        (rules.keep_daily, daily),
        (rules.keep_weekly, weekly),
        (rules.keep_monthly, monthly),
        (rules.keep_yearly, yearly),
    ];
    for (slots, period) in buckets {
        let mut left = slots;
        let mut last: Option<KeepReason> = None;
        for &i in &present {
            if left == 0 {
                break;
            }
            let p = period(items[i].time, tz);
            if last.as_ref() != Some(&p) {
                reasons[i].push(p.clone());
                last = Some(p);
                left -= 1;
            }
        }
    }
    if let (Some(within), Some(&newest)) = (rules.keep_within, present.first()) {
        let since = ChronoDuration::from_std(within)
            .ok()
            .and_then(|w| items[newest].time.checked_sub_signed(w))
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        for &i in &present {
            if items[i].time >= since {
                reasons[i].push(KeepReason::KeepWithin {
                    within_seconds: within.as_secs(),
                });
            }
        }
    }
    reasons
}

/// `min_keep`: while fewer than `min_keep` items are kept (by any reason, or by `kept_anyway`
/// such as a pin of the whole label), the newest unkept present items are kept.
pub(super) fn apply_min_keep(
    items: &[Item],
    reasons: &mut [Vec<KeepReason>],
    kept_anyway: &[bool],
    rules: Option<&KeepRules>,
    now: DateTime<Utc>,
) {
    let Some(rules) = rules else { return };
    let is_kept = |i: usize, reasons: &[Vec<KeepReason>]| !reasons[i].is_empty() || kept_anyway[i];
    let mut count = (0..items.len()).filter(|&i| is_kept(i, reasons)).count() as u32;
    for i in newest_first(items) {
        if count >= rules.min_keep {
            break;
        }
        if items[i].time <= now && !is_kept(i, reasons) {
            reasons[i].push(KeepReason::MinKeep { n: rules.min_keep });
            count += 1;
        }
    }
}

/// The calendar period an instant falls in, as the reason that keeps it.
type Period = fn(DateTime<Utc>, Tz) -> KeepReason;

fn hourly(t: DateTime<Utc>, tz: Tz) -> KeepReason {
    let local = t.with_timezone(&tz).fixed_offset();
    let into_hour = ChronoDuration::seconds(i64::from(local.minute() * 60 + local.second()))
        + ChronoDuration::nanoseconds(i64::from(local.nanosecond()));
    KeepReason::KeepHourly {
        hour: local - into_hour,
    }
}

fn daily(t: DateTime<Utc>, tz: Tz) -> KeepReason {
    KeepReason::KeepDaily {
        day: t.with_timezone(&tz).date_naive(),
    }
}

fn weekly(t: DateTime<Utc>, tz: Tz) -> KeepReason {
    let w = t.with_timezone(&tz).iso_week();
    KeepReason::KeepWeekly {
        iso_year: w.year(),
        week: w.week(),
    }
}

fn monthly(t: DateTime<Utc>, tz: Tz) -> KeepReason {
    let l = t.with_timezone(&tz);
    KeepReason::KeepMonthly {
        year: l.year(),
        month: l.month(),
    }
}

fn yearly(t: DateTime<Utc>, tz: Tz) -> KeepReason {
    KeepReason::KeepYearly {
        year: t.with_timezone(&tz).year(),
    }
}
