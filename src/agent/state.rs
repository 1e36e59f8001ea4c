//! The agent's persisted per-job state: `<[agent] state_dir>/jobs.json`.
//!
//! It records each job's last start, success and failure and its run counters, so a restart
//! neither forgets them (the metrics keep their values) nor loses the information catch-up
//! depends on: [`super::schedule::missed_run`] judges a missed run from `last_start`. That is
//! why a file that exists but cannot be read or parsed is an error, never an empty state: an
//! empty state would silently turn every catch-up off. The file is written with
//! [`crate::fsutil::write_atomic`], so a crash leaves the old or the new file, never half of one.
//!
//! The file is `{"format": 1, "jobs": {"<job name>": {...}}}`; a job absent from it has never
//! run. Jobs in the file that the policy no longer has are kept (a policy edited back does not
//! lose its history) and are the caller's to ignore.

use anyhow::{Context, Result, anyhow};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The name of the state file in `state_dir`.
pub const STATE_FILE: &str = "jobs.json";
const FORMAT: u32 = 1;

/// What the agent knows about one job's runs.
#[derive(Serialize, Deserialize, Default, Clone, Debug, PartialEq)]
#[serde(default)]
pub struct JobState {
    pub last_start: Option<DateTime<Utc>>,
    pub last_success: Option<DateTime<Utc>>,
    pub last_failure: Option<DateTime<Utc>>,
    pub last_duration_seconds: Option<f64>,
    /// The last failure's message (for the log and /readyz; never a metric label).
    pub last_error: Option<String>,
    pub runs_success: u64,
    pub runs_failure: u64,
    pub runs_skipped: u64,
}

impl JobState {
    /// A run started at `at`.
    pub fn started(&mut self, at: DateTime<Utc>) {
        self.last_start = Some(at);
    }

    /// The run started at `last_start` ended well at `at`, after `took`.
    pub fn succeeded(&mut self, at: DateTime<Utc>, took: Duration) {
        self.last_success = Some(at);
        self.last_duration_seconds = Some(took.as_secs_f64());
        self.runs_success += 1;
    }

    /// The run ended in `error` at `at`, after `took`. `last_error` keeps the message until the
    /// next failure replaces it (a success does not clear it; `last_success > last_failure` says
    /// the job has recovered).
    pub fn failed(&mut self, at: DateTime<Utc>, took: Duration, error: &str) {
        self.last_failure = Some(at);
        self.last_duration_seconds = Some(took.as_secs_f64());
        self.last_error = Some(error.to_string());
        self.runs_failure += 1;
    }

    /// A start that did not happen because the job's previous run was still going.
    pub fn skipped(&mut self) {
        self.runs_skipped += 1;
    }

    /// Whether the last finished run failed.
    pub fn failing(&self) -> bool {
        match (self.last_failure, self.last_success) {
            (Some(f), Some(s)) => f > s,
            (Some(_), None) => true,
            _ => false,
        }
    }
}

/// Every job's state, by job name.
#[derive(Default, Clone, Debug, PartialEq)]
pub struct AgentState {
    pub jobs: BTreeMap<String, JobState>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    format: u32,
    jobs: BTreeMap<String, JobState>,
}

impl AgentState {
    /// The file the state lives in.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(STATE_FILE)
    }

    /// Reads `<dir>/jobs.json`. A missing file (or directory) is the empty state of an agent
    /// that never ran; an unreadable or corrupt file is an error naming it, with a hint.
    pub fn load(dir: &Path) -> Result<AgentState> {
        let path = Self::path(dir);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(AgentState::default());
            }
            Err(e) => {
                let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
                    format!(
                        "run the agent as the user that owns {} (the unit runs it as postgres)",
                        dir.display()
                    )
                } else {
                    "check the file and its directory".to_string()
                };
                return Err(anyhow!(
                    "cannot read the agent's job state {}: {e}\nhint: {hint}",
                    path.display()
                ));
            }
        };
        let corrupt = |why: String| {
            anyhow!(
                "the agent's job state {} is unusable: {why}; the last runs of its jobs, \
                 which catch-up depends on, are unknown\nhint: restore the file, or move it \
                 aside to start with no history (every job then waits for its next scheduled \
                 time, and missed runs are not caught up)",
                path.display()
            )
        };
        let file: StateFile =
            serde_json::from_slice(&bytes).map_err(|e| corrupt(format!("not valid JSON ({e})")))?;
        if file.format != FORMAT {
            return Err(corrupt(format!(
                "format {} is not the format {FORMAT} this pgward writes (written by another \
                 version?)",
                file.format
            )));
        }
        Ok(AgentState { jobs: file.jobs })
    }

    /// Writes `<dir>/jobs.json` atomically and durably, creating `dir` when missing.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let path = Self::path(dir);
        std::fs::create_dir_all(dir).with_context(|| {
            format!(
                "cannot create the agent's state directory {}\nhint: create it for the \
                 agent's user, or set [agent] state_dir",
                dir.display()
            )
        })?;
        let file = StateFile {
            format: FORMAT,
            jobs: self.jobs.clone(),
        };
        let mut json = serde_json::to_vec_pretty(&file).context("encoding the job state")?;
        json.push(b'\n');
        crate::fsutil::write_atomic(&path, &json).with_context(|| {
            format!(
                "cannot write the agent's job state {}\nhint: check that {} is writable by \
                 the agent's user and the file system has space",
                path.display(),
                dir.display()
            )
        })
    }

    /// The state of job `name` (created empty when it has none yet).
    pub fn job_mut(&mut self, name: &str) -> &mut JobState {
        self.jobs.entry(name.to_string()).or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn a_missing_file_or_directory_is_the_empty_state() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(AgentState::load(dir.path()).unwrap(), AgentState::default());
        let absent = dir.path().join("not-yet");
        assert_eq!(AgentState::load(&absent).unwrap(), AgentState::default());
    }

    #[test]
    fn state_round_trips_and_save_creates_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("agent");
        let mut s = AgentState::default();
        let b = s.job_mut("backup");
        b.started(utc("2026-06-01T10:00:00Z"));
        b.succeeded(
            utc("2026-06-01T10:03:00.250Z"),
            Duration::from_millis(180_250),
        );
        b.skipped();
        let d = s.job_mut("dump");
        d.started(utc("2026-06-01T11:00:00Z"));
        d.failed(
            utc("2026-06-01T11:00:05Z"),
            Duration::from_secs(5),
            "pg_dump exited 1",
        );
        s.save(&state_dir).unwrap();
        let back = AgentState::load(&state_dir).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.jobs["backup"].last_duration_seconds, Some(180.25));
        assert_eq!(back.jobs["dump"].runs_failure, 1);
        // No temp files are left beside it.
        let names: Vec<_> = std::fs::read_dir(&state_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, [STATE_FILE]);
        // Saving again replaces it.
        s.job_mut("backup").skipped();
        s.save(&state_dir).unwrap();
        assert_eq!(
            AgentState::load(&state_dir).unwrap().jobs["backup"].runs_skipped,
            2
        );
    }

    #[test]
    fn a_state_with_missing_keys_gets_defaults() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(STATE_FILE),
            r#"{"format":1,"jobs":{"backup":{"last_start":"2026-06-01T10:00:00Z"}}}"#,
        )
        .unwrap();
        let s = AgentState::load(dir.path()).unwrap();
        assert_eq!(
            s.jobs["backup"],
            JobState {
                last_start: Some(utc("2026-06-01T10:00:00Z")),
                ..JobState::default()
            }
        );
    }

    #[test]
    fn an_unusable_file_is_an_error_naming_it_never_an_empty_state() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "not valid JSON"),
            (
                b"{\"format\":1,\"jobs\":{\"backup\":{\"last_start\":",
                "not valid JSON",
            ),
            (b"\x00\x00\x00", "not valid JSON"),
            (
                b"{\"format\":2,\"jobs\":{}}",
                "format 2 is not the format 1",
            ),
            (b"{\"jobs\":{}}", "not valid JSON"),
            (
                b"{\"format\":1,\"jobs\":{\"b\":{\"runs_success\":-1}}}",
                "not valid JSON",
            ),
        ];
        for (text, why) in cases {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(STATE_FILE);
            std::fs::write(&path, text).unwrap();
            let err = format!("{:#}", AgentState::load(dir.path()).unwrap_err());
            assert!(
                err.starts_with(&format!(
                    "the agent's job state {} is unusable: {why}",
                    path.display()
                )),
                "{err}"
            );
            assert!(
                err.contains("catch-up depends on") && err.contains("\nhint: "),
                "{err}"
            );
        }
    }

    #[test]
    fn an_unreadable_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should be: reading it fails, and not with NotFound.
        std::fs::create_dir(dir.path().join(STATE_FILE)).unwrap();
        let err = format!("{:#}", AgentState::load(dir.path()).unwrap_err());
        assert!(
            err.starts_with(&format!(
                "cannot read the agent's job state {}",
                dir.path().join(STATE_FILE).display()
            )) && err.contains("\nhint: "),
            "{err}"
        );
        // And saving over it fails with the reason, keeping the directory as it was.
        let save = format!("{:#}", AgentState::default().save(dir.path()).unwrap_err());
        assert!(
            save.starts_with("cannot write the agent's job state"),
            "{save}"
        );
    }

    #[test]
    fn failing_means_the_last_finished_run_failed() {
        let t1 = utc("2026-06-01T10:00:00Z");
        let t2 = utc("2026-06-01T11:00:00Z");
        type When = Option<DateTime<Utc>>;
        let cases: &[(When, When, bool, &str)] = &[
            (None, None, false, "never ran"),
            (Some(t1), None, false, "only successes"),
            (None, Some(t1), true, "only failures"),
            (Some(t1), Some(t2), true, "failed after a success"),
            (Some(t2), Some(t1), false, "recovered"),
        ];
        for (success, failure, want, why) in cases {
            let s = JobState {
                last_success: *success,
                last_failure: *failure,
                ..JobState::default()
            };
            assert_eq!(s.failing(), *want, "{why}");
        }
    }
}
