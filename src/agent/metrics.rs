//! The agent's Prometheus metrics: what the agent observed (its jobs) and what the repository
//! catalog says, refreshed after each job — never computed at scrape time from stale data, and
//! labelled only by bounded values (job and kind names from the policy, drill names; never a
//! backup label or an error text).
//!
//! Names, types and labels are the public interface (README "Agent", deploy/alerts.yml):
//! timestamps are Unix seconds, 0 = never.

use crate::agent::state::JobState;
use crate::drill::report::{DrillReport, Verdict};
pub use crate::pg::archiver::ArchiverFacts;
use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

type Seconds = Gauge<f64, AtomicU64>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabels {
    pub job: String,
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunLabels {
    pub job: String,
    pub kind: String,
    /// `success`, `failure` or `skipped`.
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DrillLabels {
    pub drill: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `success` or `failure`.
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabels {
    pub version: String,
}

/// What the repository catalog said at its last refresh.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RepoFacts {
    pub backups: i64,
    pub dumps: i64,
    pub stored_bytes: u64,
    pub last_backup_size_bytes: u64,
    pub last_backup_stored_bytes: u64,
    pub window_start: Option<DateTime<Utc>>,
    pub window_end: Option<DateTime<Utc>>,
    pub wal_gap_segments: i64,
}

pub struct Metrics {
    registry: Registry,
    start_time: Seconds,
    job_last_start: Family<JobLabels, Seconds>,
    job_last_success: Family<JobLabels, Seconds>,
    job_last_failure: Family<JobLabels, Seconds>,
    job_next_run: Family<JobLabels, Seconds>,
    job_interval: Family<JobLabels, Seconds>,
    job_last_duration: Family<JobLabels, Seconds>,
    job_runs: Family<RunLabels, Counter>,
    repo_up: Gauge,
    backups: Gauge,
    dumps: Gauge,
    repo_stored_bytes: Gauge,
    backup_last_size: Gauge,
    backup_last_stored: Gauge,
    window_start: Seconds,
    window_end: Seconds,
    wal_gap_segments: Gauge,
    verify_problems: Gauge,
    reload_ok: Gauge,
    wal_archived: Counter,
    wal_archive_failed: Counter,
    wal_pending: Gauge,
    rpo: Seconds,
    drill_last_success: Family<DrillLabels, Seconds>,
    drill_last_rto: Family<DrillLabels, Seconds>,
    drill_last_rpo: Family<DrillLabels, Seconds>,
    drill_last_passed: Family<DrillLabels, Gauge>,
    notifications: Family<ResultLabels, Counter>,
    /// The server's counters at the last look: Prometheus counters only go up, so the
    /// difference is added (a statistics reset on the server is skipped over).
    seen_archived: std::sync::Mutex<(u64, u64)>,
}

fn ts(t: Option<DateTime<Utc>>) -> f64 {
    t.map(|t| t.timestamp_millis() as f64 / 1000.0)
        .unwrap_or(0.0)
}

impl Metrics {
    pub fn new(started: DateTime<Utc>) -> Metrics {
        let mut r = Registry::default();
        let m = Metrics {
            start_time: Seconds::default(),
            job_last_start: Family::default(),
            job_last_success: Family::default(),
            job_last_failure: Family::default(),
            job_next_run: Family::default(),
            job_interval: Family::default(),
            job_last_duration: Family::default(),
            job_runs: Family::default(),
            repo_up: Gauge::default(),
            backups: Gauge::default(),
            dumps: Gauge::default(),
            repo_stored_bytes: Gauge::default(),
            backup_last_size: Gauge::default(),
            backup_last_stored: Gauge::default(),
            window_start: Seconds::default(),
            window_end: Seconds::default(),
            wal_gap_segments: Gauge::default(),
            verify_problems: Gauge::default(),
            reload_ok: Gauge::default(),
            wal_archived: Counter::default(),
            wal_archive_failed: Counter::default(),
            wal_pending: Gauge::default(),
            rpo: Seconds::default(),
            drill_last_success: Family::default(),
            drill_last_rto: Family::default(),
            drill_last_rpo: Family::default(),
            drill_last_passed: Family::default(),
            notifications: Family::default(),
            seen_archived: std::sync::Mutex::new((0, 0)),
            registry: Registry::default(),
        };
        let build = Family::<VersionLabels, Gauge>::default();
        build
            .get_or_create(&VersionLabels {
                version: env!("CARGO_PKG_VERSION").to_string(),
            })
            .set(1);
        r.register("pgward_build_info", "pgward's version (always 1)", build);
        m.start_time.set(ts(Some(started)));
        m.reload_ok.set(1);
        r.register(
            "pgward_agent_start_time_seconds",
            "When the agent started",
            m.start_time.clone(),
        );
        for (name, help, f) in [
            (
                "pgward_job_last_start_timestamp_seconds",
                "When the job last started (0 = never)",
                &m.job_last_start,
            ),
            (
                "pgward_job_last_success_timestamp_seconds",
                "When the job last succeeded (0 = never)",
                &m.job_last_success,
            ),
            (
                "pgward_job_last_failure_timestamp_seconds",
                "When the job last failed (0 = never)",
                &m.job_last_failure,
            ),
            (
                "pgward_job_next_run_timestamp_seconds",
                "When the job runs next",
                &m.job_next_run,
            ),
            (
                "pgward_job_interval_seconds",
                "The job's nominal interval",
                &m.job_interval,
            ),
            (
                "pgward_job_last_duration_seconds",
                "How long the job's last run took",
                &m.job_last_duration,
            ),
        ] {
            r.register(name, help, f.clone());
        }
        r.register(
            "pgward_job_runs",
            "Job runs by result (success, failure, skipped: an overlapping start)",
            m.job_runs.clone(),
        );
        for (name, help, g) in [
            (
                "pgward_repo_up",
                "1 when the repository answered at the last refresh",
                &m.repo_up,
            ),
            ("pgward_backups", "Complete base backups", &m.backups),
            ("pgward_dumps", "Complete logical dumps", &m.dumps),
            (
                "pgward_repo_stored_bytes",
                "Bytes the repository's backups and dumps hold (stored, compressed)",
                &m.repo_stored_bytes,
            ),
            (
                "pgward_backup_last_size_bytes",
                "The newest backup's size",
                &m.backup_last_size,
            ),
            (
                "pgward_backup_last_stored_bytes",
                "Bytes the newest backup added to the repository",
                &m.backup_last_stored,
            ),
            (
                "pgward_wal_gap_segments",
                "Missing WAL segments between archived ones (holes)",
                &m.wal_gap_segments,
            ),
            (
                "pgward_verify_problems",
                "Problems the last verify found",
                &m.verify_problems,
            ),
            (
                "pgward_config_last_reload_successful",
                "Whether the last SIGHUP reload was taken (1; also before any) or refused (0)",
                &m.reload_ok,
            ),
            (
                "pgward_wal_archive_pending_segments",
                "Segments PostgreSQL has marked ready and not archived yet",
                &m.wal_pending,
            ),
        ] {
            r.register(name, help, g.clone());
        }
        r.register(
            "pgward_recovery_window_start_timestamp_seconds",
            "The oldest time the repository can restore to",
            m.window_start.clone(),
        );
        r.register(
            "pgward_recovery_window_end_timestamp_seconds",
            "The newest time the repository can restore to",
            m.window_end.clone(),
        );
        r.register(
            "pgward_wal_archived",
            "WAL files the server archived (pg_stat_archiver)",
            m.wal_archived.clone(),
        );
        r.register(
            "pgward_wal_archive_failed",
            "Failed archive attempts (pg_stat_archiver)",
            m.wal_archive_failed.clone(),
        );
        r.register(
            "pgward_rpo_seconds",
            "Age of the oldest WAL segment waiting to be archived (0 when none)",
            m.rpo.clone(),
        );
        for (name, help, f) in [
            (
                "pgward_drill_last_success_timestamp_seconds",
                "When the drill last passed (0 = never)",
                &m.drill_last_success,
            ),
            (
                "pgward_drill_last_rto_seconds",
                "The last run's RTO",
                &m.drill_last_rto,
            ),
            (
                "pgward_drill_last_rpo_seconds",
                "The last run's RPO",
                &m.drill_last_rpo,
            ),
        ] {
            r.register(name, help, f.clone());
        }
        r.register(
            "pgward_drill_last_passed",
            "1 when the drill's last run passed",
            m.drill_last_passed.clone(),
        );
        for result in ["success", "failure"] {
            let _ = m.notifications.get_or_create(&ResultLabels {
                result: result.into(),
            });
        }
        r.register(
            "pgward_notifications",
            "Notification deliveries by final result (success, failure: after the retries)",
            m.notifications.clone(),
        );
        Metrics { registry: r, ..m }
    }

    /// A job's state and schedule, after it ran (or at start, from the persisted state).
    pub fn observe_job(
        &self,
        job: &str,
        kind: &str,
        s: &JobState,
        next_run: Option<DateTime<Utc>>,
        interval: Option<std::time::Duration>,
    ) {
        let l = JobLabels {
            job: job.into(),
            kind: kind.into(),
        };
        self.job_last_start.get_or_create(&l).set(ts(s.last_start));
        self.job_last_success
            .get_or_create(&l)
            .set(ts(s.last_success));
        self.job_last_failure
            .get_or_create(&l)
            .set(ts(s.last_failure));
        self.job_next_run.get_or_create(&l).set(ts(next_run));
        self.job_interval
            .get_or_create(&l)
            .set(interval.map(|d| d.as_secs_f64()).unwrap_or(0.0));
        self.job_last_duration
            .get_or_create(&l)
            .set(s.last_duration_seconds.unwrap_or(0.0));
        for (result, n) in [
            ("success", s.runs_success),
            ("failure", s.runs_failure),
            ("skipped", s.runs_skipped),
        ] {
            let c = self.job_runs.get_or_create(&RunLabels {
                job: job.into(),
                kind: kind.into(),
                result: result.into(),
            });
            let have = c.get();
            if n > have {
                c.inc_by(n - have);
            }
        }
    }

    /// A job the reloaded policy no longer has: its series go (no stale "overdue" alert).
    pub fn forget_job(&self, job: &str, kind: &str) {
        let l = JobLabels {
            job: job.into(),
            kind: kind.into(),
        };
        for f in [
            &self.job_last_start,
            &self.job_last_success,
            &self.job_last_failure,
            &self.job_next_run,
            &self.job_interval,
            &self.job_last_duration,
        ] {
            f.remove(&l);
        }
        for result in ["success", "failure", "skipped"] {
            self.job_runs.remove(&RunLabels {
                job: job.into(),
                kind: kind.into(),
                result: result.into(),
            });
        }
    }

    /// Whether the last SIGHUP reload was taken (1) or refused (0; the old policy runs).
    pub fn observe_reload(&self, ok: bool) {
        self.reload_ok.set(i64::from(ok));
    }

    pub fn observe_repo(&self, facts: Option<&RepoFacts>) {
        let Some(f) = facts else {
            self.repo_up.set(0);
            return;
        };
        self.repo_up.set(1);
        self.backups.set(f.backups);
        self.dumps.set(f.dumps);
        self.repo_stored_bytes.set(f.stored_bytes as i64);
        self.backup_last_size.set(f.last_backup_size_bytes as i64);
        self.backup_last_stored
            .set(f.last_backup_stored_bytes as i64);
        self.window_start.set(ts(f.window_start));
        self.window_end.set(ts(f.window_end));
        self.wal_gap_segments.set(f.wal_gap_segments);
    }

    pub fn observe_verify(&self, problems: usize) {
        self.verify_problems.set(problems as i64);
    }

    pub fn observe_archiver(&self, a: &ArchiverFacts) {
        let mut seen = self.seen_archived.lock().unwrap_or_else(|e| e.into_inner());
        let (archived, failed) = *seen;
        if a.archived_count > archived {
            self.wal_archived.inc_by(a.archived_count - archived);
        }
        if a.failed_count > failed {
            self.wal_archive_failed.inc_by(a.failed_count - failed);
        }
        *seen = (a.archived_count, a.failed_count);
        // Not measured: the gauges keep their last values rather than claim 0.
        if a.rpo_unmeasured.is_none() {
            self.wal_pending.set(a.pending_segments);
            self.rpo.set(a.rpo_seconds);
        }
    }

    /// The newest report of each drill.
    pub fn observe_drills(&self, reports: &[DrillReport]) {
        for r in reports {
            let l = DrillLabels {
                drill: r.drill.clone(),
            };
            let passed = r.verdict == Verdict::Passed;
            self.drill_last_passed
                .get_or_create(&l)
                .set(i64::from(passed));
            self.drill_last_rto
                .get_or_create(&l)
                .set(r.rto_seconds.unwrap_or(0.0));
            self.drill_last_rpo
                .get_or_create(&l)
                .set(r.rpo_seconds.unwrap_or(0.0));
            if passed {
                let g = self.drill_last_success.get_or_create(&l);
                let t = ts(Some(r.started_at));
                if t > g.get() {
                    g.set(t);
                }
            } else {
                // Known, never passed in what was seen: 0 (created if missing).
                let _ = self.drill_last_success.get_or_create(&l);
            }
        }
    }

    /// One notification's final result, `success` or `failure` (the notifier's `on_result`).
    pub fn observe_notification(&self, result: &str) {
        self.notifications
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .inc();
    }

    /// The OpenMetrics text Prometheus scrapes.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_has_its_name_and_type() {
        let m = Metrics::new(Utc::now());
        let s = JobState {
            last_start: Some(Utc::now()),
            last_success: Some(Utc::now()),
            runs_success: 2,
            runs_failure: 1,
            ..JobState::default()
        };
        m.observe_job(
            "backup",
            "backup",
            &s,
            Some(Utc::now()),
            Some(std::time::Duration::from_secs(3600)),
        );
        m.observe_job("backup", "backup", &s, None, None);
        m.observe_repo(Some(&RepoFacts {
            backups: 3,
            ..RepoFacts::default()
        }));
        m.observe_archiver(&ArchiverFacts {
            archived_count: 10,
            failed_count: 1,
            pending_segments: 2,
            rpo_seconds: 30.0,
            ..ArchiverFacts::default()
        });
        m.observe_archiver(&ArchiverFacts {
            archived_count: 12,
            failed_count: 1,
            pending_segments: 0,
            rpo_seconds: 0.0,
            ..ArchiverFacts::default()
        });
        m.observe_drills(&[crate::drill::report::testing::sample(
            "L",
            "weekly",
            Verdict::Passed,
        )]);
        let text = m.encode();
        for (name, kind) in [
            ("pgward_build_info", "gauge"),
            ("pgward_agent_start_time_seconds", "gauge"),
            ("pgward_job_last_success_timestamp_seconds", "gauge"),
            ("pgward_job_runs", "counter"),
            ("pgward_repo_up", "gauge"),
            ("pgward_wal_archived", "counter"),
            ("pgward_wal_archive_failed", "counter"),
            ("pgward_rpo_seconds", "gauge"),
            ("pgward_drill_last_passed", "gauge"),
            ("pgward_recovery_window_end_timestamp_seconds", "gauge"),
        ] {
            assert!(
                text.contains(&format!("# TYPE {name} {kind}\n")),
                "{name}:\n{text}"
            );
        }
        // Counters count what was seen, once: 2 successes stay 2 after a second observation.
        assert!(
            text.contains(
                "pgward_job_runs_total{job=\"backup\",kind=\"backup\",result=\"success\"} 2"
            ),
            "{text}"
        );
        assert!(text.contains("pgward_wal_archived_total 12"), "{text}");
        assert!(text.contains("pgward_wal_archive_failed_total 1"), "{text}");
        assert!(
            text.contains("pgward_drill_last_passed{drill=\"weekly\"} 1"),
            "{text}"
        );
        assert!(text.contains("pgward_repo_up 1"), "{text}");
        m.observe_repo(None);
        assert!(m.encode().contains("pgward_repo_up 0"));
        // Both results exist from the start (0), so an alert on failures has a series.
        assert!(
            text.contains("# TYPE pgward_notifications counter\n"),
            "{text}"
        );
        assert!(
            text.contains("pgward_notifications_total{result=\"failure\"} 0"),
            "{text}"
        );
        m.observe_notification("success");
        m.observe_notification("success");
        assert!(
            m.encode()
                .contains("pgward_notifications_total{result=\"success\"} 2")
        );
    }
}
