//! The label of a backup (and, with the issues that add them, of a dump or a drill report):
//! the UTC time its run started, `YYYYMMDDTHHMMSSZ`, with `-2`, `-3`, … when several start in
//! the same second. It names the object prefix (`backups/<label>/`), sorts in time order, and
//! is what operators type (`restore --backup L`, `pin L`).

use crate::storage::{self, Created, Storage};
use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeSet;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Label(String);

impl Label {
    /// The label of a run that started at `t` (before any `-N` suffix).
    pub fn for_start(t: DateTime<Utc>) -> Label {
        Label(t.format("%Y%m%dT%H%M%SZ").to_string())
    }

    /// The `n`th label of the second `t` (`n` = 1 is the plain one).
    pub fn nth(t: DateTime<Utc>, n: u32) -> Label {
        let base = Label::for_start(t);
        if n <= 1 {
            base
        } else {
            Label(format!("{}-{n}", base.0))
        }
    }

    /// A label read from a key or typed by an operator: anything that can be one path segment
    /// of a key (labels written by other pgward versions stay readable).
    pub fn parse(s: &str) -> Result<Label, String> {
        if s.is_empty()
            || s.len() > 128
            || s.starts_with('.')
            || s.chars()
                .any(|c| c == '/' || c.is_whitespace() || c.is_control())
        {
            return Err(format!(
                "`{s}` is not a label (labels look like 20261201T120000Z)"
            ));
        }
        Ok(Label(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The start time the label names, when it has pgward's form.
    pub fn time(&self) -> Option<DateTime<Utc>> {
        let stamp = self.0.get(..16)?;
        NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%SZ")
            .ok()
            .map(|t| t.and_utc())
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for Label {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Label {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<String> for Label {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

impl Serialize for Label {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Label {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Label::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// Claims a label for a run that started at `start`: the first of `start`'s labels (plain,
/// then `-2`, `-3`, …) that is not in `taken` and whose marker — `marker(label)` gives its key
/// and bytes — this call creates put-if-absent, so two processes never share a label. The
/// marker names the process, so the same bytes found there are an earlier attempt of this
/// same write whose answer was lost, not another run's.
pub async fn claim(
    storage: &dyn Storage,
    start: DateTime<Utc>,
    taken: &BTreeSet<String>,
    marker_key: impl Fn(&Label) -> String,
) -> Result<Label> {
    for n in 1..=1000u32 {
        let label = Label::nth(start, n);
        if taken.contains(label.as_str()) {
            continue;
        }
        let key = marker_key(&label);
        let marker = InProgress {
            label: label.as_str(),
            host: crate::repo::lock::hostname(),
            pid: std::process::id(),
            start_time: start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            pgward: env!("CARGO_PKG_VERSION"),
        };
        let body = Bytes::from(serde_json::to_vec_pretty(&marker)?);
        match storage::create(storage, &key, body)
            .await
            .with_context(|| format!("cannot write {key}"))?
        {
            Created::Written | Created::AlreadyOurs => return Ok(label),
            Created::Taken(_) => continue,
        }
    }
    bail!(
        "cannot find a free label for {}: 1000 runs started in the same second?",
        Label::for_start(start)
    )
}

/// `<label>/in-progress.json` of a backup or a dump: who is writing it, so an operator (and
/// garbage collection) can tell a running one from a dead one (`catalog::InProgressMarker`
/// reads it back). It names this process, so the same bytes found there on a retry are this
/// claim's own (an attempt whose answer was lost), not another run's.
#[derive(Debug, Serialize)]
struct InProgress<'a> {
    label: &'a str,
    host: String,
    pid: u32,
    start_time: String,
    pgward: &'static str,
}

/// A time as pgward writes it everywhere people read it: RFC 3339 in UTC, to the second
/// (`2026-12-01T12:00:00Z`) unless it has a fraction.
pub fn rfc3339(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// Serde for a `DateTime<Utc>` written as [`rfc3339`] (`#[serde(with = "...")]`).
pub mod rfc3339_time {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::rfc3339(t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|t| t.to_utc())
            .map_err(|e| serde::de::Error::custom(format!("`{text}` is not an RFC 3339 time: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_name_their_start_and_refuse_what_cannot_be_a_key_segment() {
        let t = DateTime::parse_from_rfc3339("2026-12-01T12:34:56Z")
            .unwrap()
            .to_utc();
        assert_eq!(Label::for_start(t).as_str(), "20261201T123456Z");
        assert_eq!(Label::nth(t, 3).as_str(), "20261201T123456Z-3");
        assert_eq!(Label::nth(t, 3).time(), Some(t));
        assert_eq!(Label::parse("A").unwrap().time(), None);
        for bad in ["", "a/b", "a b", ".hidden", "x\n"] {
            assert!(Label::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Label::nth(t, 1) < Label::nth(t, 2));
        assert_eq!(rfc3339(&t), "2026-12-01T12:34:56Z");
        let json = serde_json::to_string(&Label::for_start(t)).unwrap();
        assert_eq!(json, "\"20261201T123456Z\"");
        assert!(serde_json::from_str::<Label>("\"a/b\"").is_err());
    }
}
