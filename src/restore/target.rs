//! Recovery targets as operators write them, parsed once and checked.
//!
//! Each target becomes exactly one PostgreSQL setting in `postgresql.auto.conf`
//! (<https://www.postgresql.org/docs/15/runtime-config-wal.html#RUNTIME-CONFIG-WAL-RECOVERY-TARGET>).
//! The invariant kept here: whatever is accepted is a value PostgreSQL reads the same way
//! pgward does. That is why a time without an explicit offset is refused: PostgreSQL would read
//! it in the restored server's `TimeZone`, which pgward cannot know for sure, and picking the
//! backup on a different reading than recovery's would restore the wrong data silently.

use crate::pg::{Lsn, Timeline};
use anyhow::{Result, bail};
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveTime, Timelike, Utc};
use serde::{Serialize, Serializer};
use std::fmt;

/// `recovery_target_name` is limited to `MAXFNAMELEN - 1` bytes, like the names
/// `pg_create_restore_point()` accepts.
pub const MAX_RESTORE_POINT_NAME: usize = 63;

/// Where recovery stops.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum RecoveryTarget {
    /// No target: replay all archived WAL on the way to the target timeline.
    EndOfArchive,
    /// `recovery_target = 'immediate'`: stop as soon as the backup is consistent.
    Immediate,
    Time(TargetTime),
    Lsn(Lsn),
    /// A transaction id, possibly epoch-qualified (PostgreSQL reads it as a 64-bit number and
    /// keeps the low 32 bits).
    Xid(u64),
    /// A restore point created with `pg_create_restore_point()`.
    Name(String),
}

impl RecoveryTarget {
    /// Whether a target is set at all (`recovery_target_action` only applies then).
    pub fn is_set(&self) -> bool {
        !matches!(self, RecoveryTarget::EndOfArchive)
    }

    /// Whether `recovery_target_inclusive` means anything for this target (PostgreSQL applies
    /// it to time, LSN and xid targets only).
    pub fn has_inclusive(&self) -> bool {
        matches!(
            self,
            RecoveryTarget::Time(_) | RecoveryTarget::Lsn(_) | RecoveryTarget::Xid(_)
        )
    }

    /// The PostgreSQL setting and its (unquoted) value; `None` for end of archive.
    pub fn setting(&self) -> Option<(&'static str, String)> {
        match self {
            RecoveryTarget::EndOfArchive => None,
            RecoveryTarget::Immediate => Some(("recovery_target", "immediate".into())),
            RecoveryTarget::Time(t) => Some(("recovery_target_time", t.to_string())),
            RecoveryTarget::Lsn(l) => Some(("recovery_target_lsn", l.to_string())),
            RecoveryTarget::Xid(x) => Some(("recovery_target_xid", x.to_string())),
            RecoveryTarget::Name(n) => Some(("recovery_target_name", n.clone())),
        }
    }
}

impl fmt::Display for RecoveryTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecoveryTarget::EndOfArchive => f.write_str("end of archive"),
            RecoveryTarget::Immediate => f.write_str("immediate (end of the backup)"),
            RecoveryTarget::Time(t) => write!(f, "time {t}"),
            RecoveryTarget::Lsn(l) => write!(f, "LSN {l}"),
            RecoveryTarget::Xid(x) => write!(f, "transaction {x}"),
            RecoveryTarget::Name(n) => write!(f, "restore point '{n}'"),
        }
    }
}

/// A point in time with the offset the operator gave, to microsecond precision (PostgreSQL's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetTime(pub DateTime<FixedOffset>);

impl TargetTime {
    pub fn utc(&self) -> DateTime<Utc> {
        self.0.with_timezone(&Utc)
    }
}

impl fmt::Display for TargetTime {
    /// PostgreSQL's own output style (`2026-11-22 14:30:00.123456+05:30`), which it reads back
    /// unambiguously; fractional seconds only when there are any.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = &self.0;
        write!(f, "{}", t.format("%Y-%m-%d %H:%M:%S"))?;
        if t.nanosecond() != 0 {
            write!(f, ".{:06}", t.nanosecond() / 1000)?;
        }
        write!(f, "{}", t.format("%:z"))
    }
}

impl Serialize for TargetTime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Parses a recovery target time. Accepted: `YYYY-MM-DD HH:MM[:SS[.ffffff]]` or with a `T`,
/// followed (optionally after spaces) by `Z`, `UTC`, `GMT`, `+HH`, `+HHMM` or `+HH:MM`.
pub fn parse_time(input: &str) -> Result<TargetTime> {
    let s = input.trim();
    let form_hint = "hint: write it as PostgreSQL prints timestamps, with an offset: \
                     `2026-11-22 14:30:00+00`, `2026-11-22 14:30:00.5+05:30`, or RFC 3339 \
                     `2026-11-22T14:30:00Z`";
    let bad =
        |why: &str| anyhow::anyhow!("`{input}` is not a recovery target time: {why}\n{form_hint}");

    let no_date = || bad("it does not start with a valid date YYYY-MM-DD");
    let date_text = s.get(..10).ok_or_else(no_date)?;
    let date = NaiveDate::parse_from_str(date_text, "%Y-%m-%d").map_err(|_| no_date())?;
    let rest = &s[10..];
    let rest = match rest.chars().next() {
        Some(' ' | 'T' | 't') => &rest[1..],
        None => {
            bail!(
                "`{input}` has a date but no time of day\nhint: add the time and the offset, \
                 e.g. `{date_text} 00:00:00+00`"
            )
        }
        Some(_) => return Err(bad("expected a space or `T` between the date and the time")),
    };
    let rest = rest.trim_start();
    // The time of day runs until the offset starts.
    let time_end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == ':' || c == '.'))
        .unwrap_or(rest.len());
    let (time_text, zone_text) = rest.split_at(time_end);
    let time = parse_time_of_day(time_text).ok_or_else(|| {
        bad("the time of day must be HH:MM, HH:MM:SS or HH:MM:SS.ffffff (at most 6 fraction digits)")
    })?;
    let zone_text = zone_text.trim();
    if zone_text.is_empty() {
        bail!(
            "`{input}` has no time zone offset: PostgreSQL would read it in the restored \
             server's TimeZone setting, which pgward cannot know for sure, so the backup chosen \
             and the point recovery stops at could disagree\nhint: add the offset: \
             `{s}+00` for UTC, or the zone's offset such as `{s}+01` or `{s}-05:30`"
        );
    }
    let offset = parse_offset(zone_text).ok_or_else(|| {
        if zone_text.chars().any(|c| c.is_ascii_alphabetic()) {
            bad(
                "zone names other than Z, UTC and GMT are not accepted (their offset depends \
                 on the date and the server's zone database); use a numeric offset like +01",
            )
        } else {
            bad("the offset must be Z, +HH, +HHMM or +HH:MM (at most ±15:59)")
        }
    })?;
    let local = date.and_time(time);
    let Some(t) = local.and_local_timezone(offset).single() else {
        return Err(bad("the time does not exist with that offset"));
    };
    Ok(TargetTime(t))
}

fn parse_time_of_day(s: &str) -> Option<NaiveTime> {
    let (hms, frac) = match s.split_once('.') {
        Some((hms, frac)) => (hms, Some(frac)),
        None => (s, None),
    };
    let parts: Vec<&str> = hms.split(':').collect();
    let two = |p: &str| {
        (p.len() == 2 && p.bytes().all(|b| b.is_ascii_digit()))
            .then(|| p.parse::<u32>().ok())
            .flatten()
    };
    let (h, m, sec) = match parts.as_slice() {
        [h, m] if frac.is_none() => (two(h)?, two(m)?, 0),
        [h, m, sec] => (two(h)?, two(m)?, two(sec)?),
        _ => return None,
    };
    let micros = match frac {
        None => 0,
        Some(f) if !f.is_empty() && f.len() <= 6 && f.bytes().all(|b| b.is_ascii_digit()) => {
            f.parse::<u32>().ok()? * 10u32.pow(6 - f.len() as u32)
        }
        Some(_) => return None,
    };
    NaiveTime::from_hms_micro_opt(h, m, sec, micros)
}

fn parse_offset(z: &str) -> Option<FixedOffset> {
    if matches!(z.to_ascii_uppercase().as_str(), "Z" | "UTC" | "GMT") {
        return FixedOffset::east_opt(0);
    }
    let sign = match z.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let digits: String = z[1..].chars().filter(|&c| c != ':').collect();
    let colons = z[1..].matches(':').count();
    if !digits.bytes().all(|b| b.is_ascii_digit()) || colons > 1 {
        return None;
    }
    let (h, m) = match (digits.len(), colons) {
        (1 | 2, 0) => (digits.parse::<i32>().ok()?, 0),
        (4, 0) => (digits[..2].parse().ok()?, digits[2..].parse().ok()?),
        // `+5:30` and `+05:30`
        (3 | 4, 1) => {
            let (h, m) = z[1..].split_once(':')?;
            if m.len() != 2 {
                return None;
            }
            (h.parse().ok()?, m.parse().ok()?)
        }
        _ => return None,
    };
    if h > 15 || m > 59 {
        return None;
    }
    FixedOffset::east_opt(sign * (h * 3600 + m * 60))
}

pub fn parse_lsn(input: &str) -> Result<Lsn> {
    input.trim().parse::<Lsn>().map_err(|e| {
        anyhow::anyhow!("{e}\nhint: take it from pg_current_wal_lsn() or pg_waldump output")
    })
}

pub fn parse_xid(input: &str) -> Result<u64> {
    let s = input.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        bail!(
            "`{input}` is not a transaction id: expected decimal digits, like 1234567\n\
             hint: take it from txid_current() or pg_current_xact_id()"
        );
    }
    let xid: u64 = s
        .parse()
        .map_err(|_| anyhow::anyhow!("`{input}` is not a transaction id: it is too large"))?;
    // 0, 1 and 2 are InvalidTransactionId, BootstrapTransactionId and FrozenTransactionId:
    // no transaction commits with them, so recovery would never stop.
    if xid & 0xFFFF_FFFF < 3 {
        bail!("`{input}` is a reserved transaction id (0, 1 and 2 never commit)");
    }
    Ok(xid)
}

pub fn parse_name(input: &str) -> Result<String> {
    if input.is_empty() {
        bail!(
            "the restore point name is empty\nhint: use the name given to pg_create_restore_point()"
        );
    }
    if input.len() > MAX_RESTORE_POINT_NAME {
        bail!(
            "restore point name `{input}` is {} bytes long; PostgreSQL allows at most \
             {MAX_RESTORE_POINT_NAME}",
            input.len()
        );
    }
    if input.chars().any(char::is_control) {
        bail!(
            "restore point name `{}` contains control characters",
            input.escape_debug()
        );
    }
    Ok(input.to_string())
}

/// `recovery_target_action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TargetAction {
    Promote,
    Pause,
    Shutdown,
}

impl TargetAction {
    pub fn as_str(&self) -> &'static str {
        match self {
            TargetAction::Promote => "promote",
            TargetAction::Pause => "pause",
            TargetAction::Shutdown => "shutdown",
        }
    }
}

/// `recovery_target_timeline` as requested. Serialised as its setting text (`latest`,
/// `current`, `2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimelineChoice {
    /// The newest timeline that descends from the backup.
    Latest,
    /// The backup's own timeline.
    Current,
    Number(Timeline),
}

impl fmt::Display for TimelineChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TimelineChoice::Latest => f.write_str("latest"),
            TimelineChoice::Current => f.write_str("current"),
            TimelineChoice::Number(t) => write!(f, "{}", t.0),
        }
    }
}

impl Serialize for TimelineChoice {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Parses `latest`, `current` or a timeline number. Numbers are decimal, as PostgreSQL reads
/// `recovery_target_timeline` (a `0x` prefix is hex, also as PostgreSQL's `strtoul(…, 0)`).
pub fn parse_timeline(input: &str) -> Result<TimelineChoice> {
    let s = input.trim();
    match s.to_ascii_lowercase().as_str() {
        "latest" => return Ok(TimelineChoice::Latest),
        "current" => return Ok(TimelineChoice::Current),
        _ => {}
    }
    let n = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None if s.bytes().all(|b| b.is_ascii_digit()) => s.parse::<u32>().ok(),
        None => None,
    };
    match n {
        Some(n) if n >= 1 => Ok(TimelineChoice::Number(Timeline(n))),
        _ => bail!(
            "`{input}` is not a recovery target timeline\nhint: use latest, current, or a \
             timeline number such as 2 (decimal, as in recovery_target_timeline)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> String {
        parse_time(s).unwrap().to_string()
    }

    #[test]
    fn accepts_what_operators_write() {
        let cases: &[(&str, &str)] = &[
            ("2026-11-22 14:30:00+00", "2026-11-22 14:30:00+00:00"),
            (
                "2026-11-22 14:30:00.123456+05:30",
                "2026-11-22 14:30:00.123456+05:30",
            ),
            (
                "2026-11-22 14:30:00.5+05:30",
                "2026-11-22 14:30:00.500000+05:30",
            ),
            ("2026-11-22 14:30:00+0530", "2026-11-22 14:30:00+05:30"),
            ("2026-11-22 14:30:00-08", "2026-11-22 14:30:00-08:00"),
            ("2026-11-22 14:30:00 +02", "2026-11-22 14:30:00+02:00"),
            ("2026-11-22 14:30:00Z", "2026-11-22 14:30:00+00:00"),
            ("2026-11-22 14:30:00 UTC", "2026-11-22 14:30:00+00:00"),
            ("2026-11-22T14:30:00Z", "2026-11-22 14:30:00+00:00"),
            (
                "2026-11-22T14:30:00.25-03:00",
                "2026-11-22 14:30:00.250000-03:00",
            ),
            ("2026-11-22 14:30+01", "2026-11-22 14:30:00+01:00"),
            ("  2026-11-22 14:30:00+00  ", "2026-11-22 14:30:00+00:00"),
            ("2026-11-22 14:30:00+5:30", "2026-11-22 14:30:00+05:30"),
        ];
        for (input, want) in cases {
            assert_eq!(t(input), *want, "{input}");
        }
    }

    #[test]
    fn offsets_change_the_instant() {
        let a = parse_time("2026-11-22 14:30:00+05:30").unwrap();
        let b = parse_time("2026-11-22T09:00:00Z").unwrap();
        assert_eq!(a.utc(), b.utc());
        assert_ne!(
            a.to_string(),
            b.to_string(),
            "the operator's offset is kept"
        );
    }

    #[test]
    fn refuses_times_without_offset_with_a_hint() {
        for input in [
            "2026-11-22 14:30:00",
            "2026-11-22T14:30:00.5",
            "2026-11-22 14:30",
        ] {
            let msg = format!("{:#}", parse_time(input).unwrap_err());
            assert!(msg.contains("no time zone offset"), "{input}: {msg}");
            assert!(
                msg.contains("hint:") && msg.contains("+00"),
                "{input}: {msg}"
            );
        }
    }

    #[test]
    fn refuses_garbage() {
        let cases: &[(&str, &str)] = &[
            ("", "valid date"),
            ("yesterday", "valid date"),
            ("2026-11-2é 14:30:00+00", "valid date"),
            ("2026-13-22 14:30:00+00", "valid date"),
            ("2026-11-22", "no time of day"),
            ("2026-11-22/14:30:00+00", "space or `T`"),
            ("2026-11-22 25:30:00+00", "time of day"),
            ("2026-11-22 14:30:00.1234567+00", "time of day"),
            ("2026-11-22 14:30:00+16", "offset"),
            ("2026-11-22 14:30:00+05:3", "offset"),
            ("2026-11-22 14:30:00 Europe/Paris", "zone names"),
            ("2026-11-22 14:30:00 CET", "zone names"),
            ("2026-11-22 14:3:00+00", "time of day"),
        ];
        for (input, want) in cases {
            let msg = format!("{:#}", parse_time(input).unwrap_err());
            assert!(msg.contains(want), "{input:?}: {msg}");
        }
    }

    #[test]
    fn lsn_xid_name() {
        assert_eq!(parse_lsn("0/3000060").unwrap(), Lsn(0x300_0060));
        assert!(format!("{:#}", parse_lsn("3000060").unwrap_err()).contains("hint:"));
        assert_eq!(parse_xid("1234").unwrap(), 1234);
        assert_eq!(parse_xid("8589934595").unwrap(), 8_589_934_595);
        for bad in ["", "-1", "12a", "0", "2", "99999999999999999999999"] {
            assert!(parse_xid(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_name("before 'upgrade'").unwrap(), "before 'upgrade'");
        assert!(parse_name("").is_err());
        assert!(parse_name(&"x".repeat(64)).is_err());
        assert!(parse_name(&"x".repeat(63)).is_ok());
        assert!(parse_name("a\nb").is_err());
    }

    #[test]
    fn settings() {
        let time = RecoveryTarget::Time(parse_time("2026-11-22 14:30:00+00").unwrap());
        assert_eq!(
            time.setting(),
            Some(("recovery_target_time", "2026-11-22 14:30:00+00:00".into()))
        );
        assert_eq!(
            RecoveryTarget::Immediate.setting(),
            Some(("recovery_target", "immediate".into()))
        );
        assert_eq!(RecoveryTarget::EndOfArchive.setting(), None);
        assert!(RecoveryTarget::Xid(5).has_inclusive());
        assert!(!RecoveryTarget::Name("x".into()).has_inclusive());
        let json = serde_json::to_value(&time).unwrap();
        assert_eq!(json["kind"], "time");
        assert_eq!(json["value"], "2026-11-22 14:30:00+00:00");
    }

    #[test]
    fn timelines() {
        assert_eq!(parse_timeline("latest").unwrap(), TimelineChoice::Latest);
        assert_eq!(parse_timeline("Current").unwrap(), TimelineChoice::Current);
        assert_eq!(
            parse_timeline("12").unwrap(),
            TimelineChoice::Number(Timeline(12))
        );
        assert_eq!(
            parse_timeline("0x1A").unwrap(),
            TimelineChoice::Number(Timeline(26))
        );
        for bad in ["0", "-1", "newest", "", "00000002x"] {
            assert!(parse_timeline(bad).is_err(), "{bad}");
        }
    }
}
