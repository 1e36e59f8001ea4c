//! The event schema `pgward.event.v1`: what every notification target receives.
//!
//! One JSON object per job start or end, built from [`Event::JobStarted`] and
//! [`Event::JobFinished`] — the same events that feed the log and the metrics. The fields are
//! a public, documented interface (README "Agent" → "Notifications"): add fields, never rename
//! or remove one without a new schema name.

use crate::events::Event;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Serialize, Serializer};

pub const SCHEMA: &str = "pgward.event.v1";

/// The `event` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    JobStarted,
    JobSucceeded,
    JobFailed,
    /// A success right after a failed run.
    JobRecovered,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::JobStarted => "job_started",
            EventKind::JobSucceeded => "job_succeeded",
            EventKind::JobFailed => "job_failed",
            EventKind::JobRecovered => "job_recovered",
        }
    }
}

/// One `pgward.event.v1` object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Envelope {
    pub schema: &'static str,
    /// `evt_` and 32 hex digits; the same for every target and every retry of this event (a
    /// webhook receiver deduplicates on it: it is also the `webhook-id` header).
    pub id: String,
    /// When the event happened, RFC 3339 in UTC with milliseconds.
    #[serde(serialize_with = "rfc3339")]
    pub time: DateTime<Utc>,
    pub event: EventKind,
    /// The job's name in the policy (default: its kind).
    pub job: String,
    /// backup | dump | expire | verify | drill.
    pub kind: String,
    pub host: String,
    /// One line: what the job did, or the error that made it fail.
    pub summary: String,
    /// How long the job ran; absent from `job_started`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// What the job reported (a backup's label and sizes, a drill's RTO, …); `{}` for a start.
    pub details: serde_json::Value,
}

fn rfc3339<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true))
}

/// A fresh event id: `evt_` and 128 random bits in hex.
pub fn new_id() -> String {
    format!("evt_{:032x}", rand::random::<u128>())
}

impl Envelope {
    /// The envelope of a job event; `None` for every other event. `id` and `now` are passed in
    /// so the result is a pure function of its inputs.
    pub fn of(event: &Event, host: &str, id: String, now: DateTime<Utc>) -> Option<Envelope> {
        let (event, job, kind, summary, duration_ms, details) = match event {
            Event::JobStarted { job, kind } => (
                EventKind::JobStarted,
                job,
                kind,
                format!("{job} ({kind}) started"),
                None,
                serde_json::json!({}),
            ),
            Event::JobFinished {
                job,
                kind,
                succeeded,
                recovered,
                summary,
                duration_ms,
                details,
            } => (
                match (succeeded, recovered) {
                    (false, _) => EventKind::JobFailed,
                    (true, true) => EventKind::JobRecovered,
                    (true, false) => EventKind::JobSucceeded,
                },
                job,
                kind,
                summary.clone(),
                Some(*duration_ms),
                if details.is_object() {
                    details.clone()
                } else {
                    serde_json::json!({})
                },
            ),
            _ => return None,
        };
        Some(Envelope {
            schema: SCHEMA,
            id,
            time: now,
            event,
            job: job.clone(),
            kind: kind.clone(),
            host: host.to_string(),
            summary,
            duration_ms,
            details,
        })
    }

    /// The JSON body (one line).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an envelope always serialises")
    }

    /// The `PGWARD_EVENT_*` variables a command hook gets.
    pub fn env_vars(&self) -> Vec<(&'static str, String)> {
        vec![
            ("PGWARD_EVENT_SCHEMA", SCHEMA.to_string()),
            ("PGWARD_EVENT_ID", self.id.clone()),
            (
                "PGWARD_EVENT_TIME",
                self.time.to_rfc3339_opts(SecondsFormat::Millis, true),
            ),
            ("PGWARD_EVENT_EVENT", self.event.as_str().to_string()),
            ("PGWARD_EVENT_JOB", self.job.clone()),
            ("PGWARD_EVENT_KIND", self.kind.clone()),
            ("PGWARD_EVENT_HOST", self.host.clone()),
            ("PGWARD_EVENT_SUMMARY", self.summary.clone()),
            ("PGWARD_EVENT_JSON", self.to_json()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn finished(succeeded: bool, recovered: bool) -> Event {
        Event::JobFinished {
            job: "hourly".into(),
            kind: "backup".into(),
            succeeded,
            recovered,
            summary: "backup 20261202T050000Z: 1.0 GiB".into(),
            duration_ms: 1234,
            details: serde_json::json!({"label": "20261202T050000Z"}),
        }
    }

    #[test]
    fn job_events_map_to_the_four_event_names() {
        let now = Utc.with_ymd_and_hms(2026, 12, 2, 5, 0, 1).unwrap();
        let cases = [
            (
                Event::JobStarted {
                    job: "hourly".into(),
                    kind: "backup".into(),
                },
                EventKind::JobStarted,
            ),
            (finished(true, false), EventKind::JobSucceeded),
            (finished(true, true), EventKind::JobRecovered),
            (finished(false, false), EventKind::JobFailed),
            // `recovered` without success cannot happen; a failure stays a failure.
            (finished(false, true), EventKind::JobFailed),
        ];
        for (event, want) in cases {
            let e = Envelope::of(&event, "db1", "evt_1".into(), now).unwrap();
            assert_eq!(e.event, want, "{event:?}");
        }
        let other = Event::Waiting {
            what: "x".into(),
            waited_ms: 1,
            limit_ms: 2,
        };
        assert_eq!(Envelope::of(&other, "db1", "evt_1".into(), now), None);
    }

    #[test]
    fn the_envelope_has_the_documented_fields() {
        let now = Utc.with_ymd_and_hms(2026, 12, 2, 5, 0, 1).unwrap();
        let e = Envelope::of(&finished(false, false), "db1", "evt_ab".into(), now).unwrap();
        let v: serde_json::Value = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "schema": "pgward.event.v1",
                "id": "evt_ab",
                "time": "2026-12-02T05:00:01.000Z",
                "event": "job_failed",
                "job": "hourly",
                "kind": "backup",
                "host": "db1",
                "summary": "backup 20261202T050000Z: 1.0 GiB",
                "duration_ms": 1234,
                "details": {"label": "20261202T050000Z"},
            })
        );
        let started = Envelope::of(
            &Event::JobStarted {
                job: "j".into(),
                kind: "dump".into(),
            },
            "db1",
            "evt_cd".into(),
            now,
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&started.to_json()).unwrap();
        assert_eq!(v["details"], serde_json::json!({}));
        assert_eq!(v["summary"], "j (dump) started");
        assert!(v.get("duration_ms").is_none(), "{v}");
        let vars = e.env_vars();
        let get = |k: &str| vars.iter().find(|(n, _)| *n == k).unwrap().1.clone();
        assert_eq!(get("PGWARD_EVENT_EVENT"), "job_failed");
        assert_eq!(get("PGWARD_EVENT_TIME"), "2026-12-02T05:00:01.000Z");
        assert_eq!(get("PGWARD_EVENT_JSON"), e.to_json());
        let id = new_id();
        assert!(
            id.len() == 36 && id.starts_with("evt_") && id != new_id(),
            "{id}"
        );
    }
}
