//! The facts `pgward status` judges and the HTML report draws, gathered once into one
//! [`StatusInput`]: the repository catalog (backups, dumps, WAL per timeline with its ranges,
//! holes and recoverable window), the newest report of each drill, the drill files' bounds,
//! the agent's job state (when `[agent] state_dir/jobs.json` exists), the policy's jobs with
//! their schedules, and the server's archiver.
//!
//! Gathering never fails: a source that cannot be read becomes a reason string in its place
//! (`repository_error`, `agent.error`, `policy.error`, `warnings`), so an unreachable
//! repository still gets its verdict (UNKNOWN) rather than an error. The repository is read
//! under one deadline (`[wal] timeout`), so a stuck store cannot hang a Nagios check.
//! Nothing here judges: [`super::verdict::judge`] does, from these facts and `now` alone.

use crate::agent::jobs;
use crate::agent::schedule::Schedule;
use crate::agent::state::{AgentState, JobState};
use crate::config::Config;
use crate::context::Context;
use crate::drill::file as drill_file;
use crate::drill::report as drill_report;
use crate::pg::Lsn;
use crate::pg::archiver::{self, ArchiverFacts};
use crate::repo::snapshot::Snapshot;
use crate::repo::wal_catalog::SegmentRange;
use crate::restore::plan::{self, ArchiveView, PlanRequest};
use crate::restore::target::{RecoveryTarget, TimelineChoice};
use crate::retention::policy::Policy;
use crate::storage::Storage;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// How many drill reports are read for "the newest of each drill".
const DRILLS: usize = 100;

/// Everything a verdict and a status page need, as of `generated_at`.
#[derive(Debug, Clone, Serialize)]
pub struct StatusInput {
    pub generated_at: DateTime<Utc>,
    /// The repository, as its storage describes it (or `[repo] url` when it cannot be opened).
    pub repository: String,
    /// What the repository holds; `None` when it cannot be read (`repository_error` says why).
    pub repo: Option<RepoFacts>,
    pub repository_error: Option<String>,
    /// The newest report of each drill, newest first.
    pub drills: Vec<drill_report::Summary>,
    /// The drill files of `[drill] tests` (for `max_rto` / `max_rpo`).
    pub drill_definitions: Vec<DrillDefinition>,
    pub agent: AgentFacts,
    pub policy: PolicyFacts,
    pub server: ServerFacts,
    /// Sources that could not be read and do not decide the verdict (a damaged drill report,
    /// a drill file that does not parse).
    pub warnings: Vec<String>,
}

/// The repository catalog, as status needs it.
#[derive(Debug, Clone, Serialize)]
pub struct RepoFacts {
    pub system_identifier: String,
    pub pg_major: u32,
    pub wal_segment_size: u64,
    /// Complete base backups, oldest first.
    pub backups: Vec<BackupFacts>,
    /// Backups without a manifest (running, or died): not restorable.
    pub backups_in_progress: Vec<String>,
    /// Complete dumps, oldest first.
    pub dumps: Vec<DumpFacts>,
    pub timelines: Vec<TimelineFacts>,
    /// How far a restore of the newest backup gets (the restore planner's answer).
    pub newest_backup_reach: Option<Reach>,
    /// WAL names archived more than once with different content.
    pub conflicts: Vec<String>,
    /// What the catalog said while being read (unusable history files, forks).
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackupFacts {
    pub label: String,
    pub timeline: u32,
    pub start_time: DateTime<Utc>,
    pub stop_time: DateTime<Utc>,
    pub duration_seconds: f64,
    pub start_lsn: Lsn,
    pub stop_lsn: Lsn,
    pub start_wal: String,
    pub stop_wal: String,
    pub total_bytes: u64,
    pub stored_bytes: u64,
    pub pinned: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DumpFacts {
    pub label: String,
    pub start_time: DateTime<Utc>,
    pub stop_time: DateTime<Utc>,
    pub duration_seconds: f64,
    pub databases: Vec<String>,
    pub size: u64,
    pub stored_size: u64,
    pub pinned: bool,
}

/// One timeline's archived WAL: the runs of consecutive segments, the holes between them,
/// and the span a restore can reach.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimelineFacts {
    pub timeline: u32,
    pub segments: u64,
    pub stored_bytes: u64,
    pub ranges: Vec<SegmentRange>,
    /// Every hole between archived ranges (first..last missing segment, and their LSNs).
    pub gaps: Vec<SegmentRange>,
    /// From the oldest backup that leads to this timeline; `None` when none does.
    pub window: Option<Window>,
}

/// The recoverable window of one timeline, as `info` computes it (the restore planner).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Window {
    pub from_backup: String,
    pub from_lsn: Lsn,
    pub from_time: DateTime<Utc>,
    /// The end of the WAL archived contiguously from that backup.
    pub to_lsn: Lsn,
    /// A time the window reaches at least (the WAL listing has no times): when the
    /// archiver's last archived segment is on this timeline inside the window, its archive
    /// time; else the end of the newest backup inside the window.
    pub to_time_at_least: DateTime<Utc>,
    /// The first missing segment when later WAL is archived (the window ends in a hole).
    pub hole: Option<String>,
}

/// A restore of one backup to the end of the archive, as the planner sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reach {
    pub backup: String,
    /// The timeline recovery ends on.
    pub timeline: u32,
    /// Recovery cannot go past this LSN (the end of the contiguous WAL).
    pub until: Lsn,
    /// The first missing segment when later WAL is archived.
    pub hole: Option<String>,
    /// Why the backup cannot be restored at all (its own WAL is missing).
    pub error: Option<String>,
}

/// One drill's newest report, in brief.
/// A drill file's bounds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DrillDefinition {
    pub name: String,
    pub max_rto_seconds: Option<f64>,
    pub max_rpo_seconds: Option<f64>,
}

/// The agent's job state file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentFacts {
    pub state_dir: PathBuf,
    /// `jobs.json` exists and was read: staleness against the schedules is judged.
    pub present: bool,
    /// It exists and cannot be read.
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyFacts {
    /// The policy file (or `built-in policies/default.toml`); `None` when it cannot be read.
    pub origin: Option<String>,
    pub error: Option<String>,
    /// The policy's time zone (schedules are evaluated in it).
    pub timezone: String,
    pub jobs: Vec<JobFacts>,
}

/// One `[[job]]` of the policy, with what the agent recorded about it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobFacts {
    pub name: String,
    /// backup | dump | expire | verify | drill.
    pub kind: String,
    pub schedule: String,
    /// The schedule does not parse (the agent refuses it too).
    pub schedule_error: Option<String>,
    /// The schedule's nominal interval from now (`pgward_job_interval_seconds`).
    pub interval_seconds: Option<f64>,
    pub next_run: Option<DateTime<Utc>>,
    /// What `jobs.json` says (`None` without agent state or when the job never ran).
    pub state: Option<JobState>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServerFacts {
    /// `[postgres] conninfo` is set, so the archiver is expected to answer.
    pub conninfo_set: bool,
    /// `None` without conninfo, or when the server did not answer.
    pub archiver: Option<ArchiverFacts>,
    /// Why the server did not answer (with conninfo set).
    pub error: Option<String>,
}

/// Gathers the facts through an open repository.
/// In the agent, its policy in force (not the file, which a refused reload found broken).
pub async fn gather(ctx: &Context, now: DateTime<Utc>) -> StatusInput {
    let storage = Ok(ctx.storage.as_ref());
    let policy = ctx.policy.as_deref();
    gather_with(&ctx.config, &ctx.config_path, storage, policy, now).await
}

/// Gathers the facts; `storage` is the opened repository, or why it could not be opened
/// (the rest is still gathered, and the verdict is UNKNOWN).
pub async fn gather_from(
    config: &Config,
    config_path: &Path,
    storage: Result<&dyn Storage, String>,
    now: DateTime<Utc>,
) -> StatusInput {
    gather_with(config, config_path, storage, None, now).await
}

/// `policy`: the one in force, when it is not the file's (the agent's).
async fn gather_with(
    config: &Config,
    config_path: &Path,
    storage: Result<&dyn Storage, String>,
    policy: Option<&Policy>,
    now: DateTime<Utc>,
) -> StatusInput {
    let mut warnings = Vec::new();
    let (repository, repo, repository_error, drills) = match storage {
        Ok(storage) => {
            let (repo, drills) = read_repository(storage, config.wal.timeout, &mut warnings).await;
            let (repo, err) = match repo {
                Ok(r) => (Some(r), None),
                Err(e) => (None, Some(e)),
            };
            (storage.describe(), repo, err, drills)
        }
        Err(e) => (config.repo.url.to_string(), None, Some(e), Vec::new()),
    };
    let drill_definitions = drill_definitions(config, config_path, &mut warnings);
    let (agent, state) = agent_facts(config);
    let policy = policy_facts(config, config_path, policy, state.as_ref(), now);
    let conninfo_set = config.postgres.conninfo.is_some();
    let (archiver, error) = match archiver::read(config).await {
        Ok(a) => (Some(a), None),
        Err(e) => (None, conninfo_set.then_some(e)),
    };
    let server = ServerFacts {
        conninfo_set,
        archiver,
        error,
    };
    let mut repo = repo;
    if let Some(r) = repo.as_mut() {
        window_times(r, server.archiver.as_ref());
    }
    StatusInput {
        generated_at: now,
        repository,
        repo,
        repository_error,
        drills,
        drill_definitions,
        agent,
        policy,
        server,
        warnings,
    }
}

/// The catalog and the drill reports, under one deadline.
async fn read_repository(
    storage: &dyn Storage,
    deadline: std::time::Duration,
    warnings: &mut Vec<String>,
) -> (Result<RepoFacts, String>, Vec<drill_report::Summary>) {
    let read = async {
        let snapshot = Snapshot::load(storage).await?;
        let drills = drill_report::latest_per_drill(storage, DRILLS).await;
        anyhow::Ok((snapshot, drills))
    };
    match tokio::time::timeout(deadline, read).await {
        Err(_) => (
            Err(format!(
                "the repository {} did not answer within {} ([wal] timeout)",
                storage.describe(),
                humantime::format_duration(deadline)
            )),
            Vec::new(),
        ),
        Ok(Err(e)) => (Err(crate::output::error_text(&e)), Vec::new()),
        Ok(Ok((snapshot, drills))) => {
            let drills = match drills {
                Ok((reports, bad)) => {
                    warnings.extend(bad);
                    reports.iter().map(drill_report::Summary::of).collect()
                }
                Err(e) => {
                    warnings.push(format!("no drill reports: {e:#}"));
                    Vec::new()
                }
            };
            (Ok(repo_facts(&snapshot)), drills)
        }
    }
}

/// The catalog's facts (pure: the snapshot holds everything).
pub fn repo_facts(s: &Snapshot) -> RepoFacts {
    let pinned = |label: &str| s.pins.iter().any(|p| p.label == *label);
    let backups = (s.catalog.backups.iter())
        .map(|b| {
            let label = b.label.to_string();
            BackupFacts {
                pinned: pinned(&label),
                label,
                timeline: b.timeline.0,
                start_time: b.start_time,
                stop_time: b.stop_time,
                duration_seconds: seconds_between(b.start_time, b.stop_time),
                start_lsn: b.start_lsn,
                stop_lsn: b.stop_lsn,
                start_wal: b.start_wal.to_string(),
                stop_wal: b.stop_wal.to_string(),
                total_bytes: b.total_bytes,
                stored_bytes: b.stored_bytes,
            }
        })
        .collect();
    let dumps = (s.dumps.dumps.iter())
        .map(|d| {
            let label = d.label.to_string();
            DumpFacts {
                pinned: pinned(&label),
                label,
                start_time: d.start_time,
                stop_time: d.stop_time,
                duration_seconds: seconds_between(d.start_time, d.stop_time),
                databases: d.databases.iter().map(|x| x.name.clone()).collect(),
                size: d.size(),
                stored_size: d.stored_size(),
            }
        })
        .collect();
    let view = s.view();
    let timelines = (s.wal.timelines.iter())
        .map(|(tli, tl)| TimelineFacts {
            timeline: tli.0,
            segments: tl.segments.len() as u64,
            stored_bytes: tl
                .segments
                .values()
                .flatten()
                .map(|w| w.stored_bytes)
                .sum::<u64>()
                + tl.partials.iter().map(|w| w.stored_bytes).sum::<u64>(),
            ranges: s.wal.ranges(*tli),
            gaps: s.wal.gaps(*tli),
            window: window(&view, *tli),
        })
        .collect();
    let newest = s.catalog.backups.iter().max_by_key(|b| b.stop_time);
    RepoFacts {
        system_identifier: s.identity.system_identifier.to_string(),
        pg_major: s.identity.pg_major,
        wal_segment_size: s.identity.wal_segment_size,
        backups,
        backups_in_progress: s.catalog.in_progress.clone(),
        dumps,
        timelines,
        newest_backup_reach: newest.map(|b| reach(&view, &b.label.to_string())),
        conflicts: (s.wal.conflicts().iter())
            .map(|objs| objs[0].name.to_string())
            .collect(),
        warnings: s.warnings.clone(),
    }
}

/// Sets each window's `to_time_at_least` from the backups inside it and the archiver's last
/// archived segment (pure).
pub fn window_times(repo: &mut RepoFacts, archiver: Option<&ArchiverFacts>) {
    let seg_size = repo.wal_segment_size;
    let last = archiver.and_then(|a| {
        let name = crate::pg::WalSegmentName::parse(a.last_archived_wal.as_deref()?).ok()?;
        Some((name, a.last_archived_time?))
    });
    for tl in &mut repo.timelines {
        let Some(w) = tl.window.as_mut() else {
            continue;
        };
        let backups = (repo.backups.iter())
            .filter(|b| b.stop_lsn <= w.to_lsn && b.stop_lsn >= w.from_lsn)
            .map(|b| b.stop_time);
        let archived = last
            .filter(|(name, _)| {
                name.tli.0 == tl.timeline
                    && Lsn::from_segment(name.segno(seg_size) + 1, seg_size) <= w.to_lsn
            })
            .map(|(_, t)| t);
        if let Some(t) = backups.chain(archived).max() {
            w.to_time_at_least = w.to_time_at_least.max(t);
        }
    }
}

/// The oldest backup the planner accepts for a restore onto `tli`, and how far its recovery
/// can go. The plan asks for `immediate`: an end-of-archive plan is refused outright when a
/// hole lies after the backup, and the hole is exactly what status must name.
fn window(view: &ArchiveView<'_>, tli: crate::pg::Timeline) -> Option<Window> {
    view.backups.iter().find_map(|b| {
        let req = PlanRequest {
            backup: Some(b.label.to_string()),
            target: RecoveryTarget::Immediate,
            timeline: TimelineChoice::Number(tli),
            timeline_given: true,
        };
        let p = plan::plan(view, &req).ok()?;
        Some(Window {
            from_backup: b.label.to_string(),
            from_lsn: b.stop_lsn,
            from_time: b.stop_time,
            to_time_at_least: b.stop_time,
            to_lsn: p.wal_available_until,
            hole: p.wal_hole,
        })
    })
}

/// A restore of backup `label` onto the latest timeline it leads to: whether its own WAL is
/// there (else `error`), and how far recovery can go (`immediate`, as in [`window`]).
fn reach(view: &ArchiveView<'_>, label: &str) -> Reach {
    let req = PlanRequest {
        backup: Some(label.to_string()),
        target: RecoveryTarget::Immediate,
        timeline: TimelineChoice::Latest,
        timeline_given: false,
    };
    match plan::plan(view, &req) {
        Ok(p) => Reach {
            backup: label.to_string(),
            timeline: p.timeline.timeline.0,
            until: p.wal_available_until,
            hole: p.wal_hole,
            error: None,
        },
        Err(e) => Reach {
            backup: label.to_string(),
            timeline: 0,
            until: Lsn::INVALID,
            hole: None,
            // The cause; its hint is for `restore`, not for a status line.
            error: Some(
                format!("{e:#}")
                    .split("\nhint:")
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            ),
        },
    }
}

fn drill_definitions(
    config: &Config,
    config_path: &Path,
    warnings: &mut Vec<String>,
) -> Vec<DrillDefinition> {
    let dir = drill_file::tests_dir(config, config_path);
    if !dir.is_dir() {
        return Vec::new();
    }
    match drill_file::load_dir(&dir) {
        Ok(drills) => drills
            .iter()
            .map(|d| DrillDefinition {
                name: d.name.clone(),
                max_rto_seconds: d.max_rto.map(|x| x.as_secs_f64()),
                max_rpo_seconds: d.max_rpo.map(|x| x.as_secs_f64()),
            })
            .collect(),
        Err(e) => {
            warnings.push(format!("no drill bounds: {e:#}"));
            Vec::new()
        }
    }
}

fn agent_facts(config: &Config) -> (AgentFacts, Option<AgentState>) {
    let dir = config.agent.state_dir.clone();
    let present = AgentState::path(&dir).symlink_metadata().is_ok();
    let (state, error) = if present {
        match AgentState::load(&dir) {
            Ok(s) => (Some(s), None),
            Err(e) => (None, Some(format!("{e:#}"))),
        }
    } else {
        (None, None)
    };
    let facts = AgentFacts {
        state_dir: dir,
        present: state.is_some(),
        error,
    };
    (facts, state)
}

fn policy_facts(
    config: &Config,
    config_path: &Path,
    in_force: Option<&Policy>,
    state: Option<&AgentState>,
    now: DateTime<Utc>,
) -> PolicyFacts {
    let policy = match in_force.map_or_else(
        || Policy::for_config(config, config_path),
        |p| Ok(p.clone()),
    ) {
        Ok(p) => p,
        Err(e) => {
            return PolicyFacts {
                origin: None,
                error: Some(format!("{e:#}")),
                timezone: "UTC".into(),
                jobs: Vec::new(),
            };
        }
    };
    let tz = policy.retention.timezone;
    let jobs = (policy.jobs.iter())
        .map(|job| {
            let name = jobs::job_name(job);
            let schedule = Schedule::parse(&job.schedule, tz);
            let (interval, next) = match &schedule {
                Ok(s) => (s.interval(now), s.next_after(now)),
                Err(_) => (None, None),
            };
            JobFacts {
                kind: jobs::kind_name(job.kind).to_string(),
                schedule: job.schedule.clone(),
                schedule_error: schedule.err().map(|e| format!("{e:#}")),
                interval_seconds: interval.map(|d| d.as_secs_f64()),
                next_run: next,
                state: state.and_then(|s| s.jobs.get(&name).cloned()),
                name,
            }
        })
        .collect();
    PolicyFacts {
        origin: Some(policy.origin.clone()),
        error: None,
        timezone: tz.to_string(),
        jobs,
    }
}

fn seconds_between(a: DateTime<Utc>, b: DateTime<Utc>) -> f64 {
    (b - a).num_milliseconds().max(0) as f64 / 1000.0
}

impl StatusInput {
    /// The facts when nothing could be read (the configuration itself): the verdict is
    /// UNKNOWN with `why`.
    pub fn unreadable(repository: String, why: String, now: DateTime<Utc>) -> StatusInput {
        StatusInput {
            generated_at: now,
            repository,
            repo: None,
            repository_error: Some(why),
            drills: Vec::new(),
            drill_definitions: Vec::new(),
            agent: AgentFacts {
                state_dir: PathBuf::new(),
                present: false,
                error: None,
            },
            policy: PolicyFacts {
                origin: None,
                error: None,
                timezone: "UTC".into(),
                jobs: Vec::new(),
            },
            server: ServerFacts {
                conninfo_set: false,
                error: None,
                archiver: None,
            },
            warnings: Vec::new(),
        }
    }
}

/// Facts for tests elsewhere (the verdict's table, the command's lines, the report).
#[cfg(test)]
pub mod testing {
    use super::*;
    use crate::repo::wal_catalog::SegmentRange;

    pub const SEG: u64 = 16 << 20;

    pub fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    pub fn now() -> DateTime<Utc> {
        t("2026-12-02T12:00:00Z")
    }

    pub fn seg(n: u64) -> String {
        format!("00000001{:08X}{:08X}", n >> 8, n & 0xff)
    }

    pub fn range(first: u64, last: u64) -> SegmentRange {
        SegmentRange {
            first: seg(first),
            last: seg(last),
            segments: last - first + 1,
            start_lsn: Lsn::from_segment(first, SEG),
            end_lsn: Lsn::from_segment(last + 1, SEG),
        }
    }

    /// A backup on timeline 1 that starts in segment `segno` and ends at `stopped`.
    pub fn backup(label: &str, segno: u64, stopped: &str) -> BackupFacts {
        BackupFacts {
            label: label.into(),
            timeline: 1,
            start_time: t(stopped) - chrono::Duration::seconds(30),
            stop_time: t(stopped),
            duration_seconds: 30.0,
            start_lsn: Lsn(Lsn::from_segment(segno, SEG).0 + 0x28),
            stop_lsn: Lsn(Lsn::from_segment(segno, SEG).0 + 0x100),
            start_wal: seg(segno),
            stop_wal: seg(segno),
            total_bytes: 1 << 30,
            stored_bytes: 1 << 28,
            pinned: false,
        }
    }

    /// One backup at segment 3 an hour ago, WAL 1..=9 continuous, the archiver fine, no
    /// agent state, no drills: OK.
    pub fn healthy() -> StatusInput {
        let b = backup("20261202T110000Z", 3, "2026-12-02T11:00:00Z");
        StatusInput {
            generated_at: now(),
            repository: "file:///repo".into(),
            repo: Some(RepoFacts {
                system_identifier: "7300000000000000001".into(),
                pg_major: 15,
                wal_segment_size: SEG,
                newest_backup_reach: Some(Reach {
                    backup: b.label.clone(),
                    timeline: 1,
                    until: Lsn::from_segment(10, SEG),
                    hole: None,
                    error: None,
                }),
                backups: vec![b],
                backups_in_progress: vec![],
                dumps: vec![],
                timelines: vec![TimelineFacts {
                    timeline: 1,
                    segments: 9,
                    stored_bytes: 9 << 20,
                    ranges: vec![range(1, 9)],
                    gaps: vec![],
                    window: None,
                }],
                conflicts: vec![],
                warnings: vec![],
            }),
            repository_error: None,
            drills: vec![],
            drill_definitions: vec![],
            agent: AgentFacts {
                state_dir: "/var/lib/pgward/agent".into(),
                present: false,
                error: None,
            },
            policy: PolicyFacts {
                origin: Some("policy.toml".into()),
                error: None,
                timezone: "UTC".into(),
                jobs: vec![],
            },
            server: ServerFacts {
                conninfo_set: true,
                error: None,
                archiver: Some(ArchiverFacts {
                    archived_count: 9,
                    last_archived_wal: Some(seg(9)),
                    last_archived_time: Some(t("2026-12-02T11:59:00Z")),
                    ..ArchiverFacts::default()
                }),
            },
            warnings: vec![],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{Level, judge};
    use crate::storage::faulty::FaultyStorage;
    use crate::storage::memory::MemoryStorage;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    fn config(dir: &Path, extra: &str) -> (Config, PathBuf) {
        let path = dir.join("pgward.toml");
        let text = format!(
            "{extra}\n[repo]\nurl = \"file://{}/repo\"\n[wal]\ntimeout = \"1s\"\n[agent]\n\
             state_dir = \"{}/agent\"\n",
            dir.display(),
            dir.display()
        );
        (Config::parse(&text, "pgward.toml").unwrap(), path)
    }

    #[test]
    fn a_window_reaches_at_least_the_last_archived_segment_inside_it() {
        use testing::*;
        let mut input = healthy();
        let repo = input.repo.as_mut().unwrap();
        let b = repo.backups[0].clone();
        let window = Window {
            from_backup: b.label.clone(),
            from_lsn: b.stop_lsn,
            from_time: b.stop_time,
            to_time_at_least: b.stop_time,
            to_lsn: Lsn::from_segment(10, SEG),
            hole: None,
        };
        repo.timelines[0].window = Some(window.clone());
        let archived = |wal: &str, at: &str| ArchiverFacts {
            last_archived_wal: Some(wal.into()),
            last_archived_time: Some(t(at)),
            ..ArchiverFacts::default()
        };
        let cases = [
            (None, b.stop_time, "no server: the newest backup's end"),
            (
                Some(archived(&seg(9), "2026-12-02T11:59:00Z")),
                t("2026-12-02T11:59:00Z"),
                "the last archived segment ends the window",
            ),
            (
                Some(archived(&seg(12), "2026-12-02T11:59:00Z")),
                b.stop_time,
                "the last archived segment lies past a hole",
            ),
            (
                Some(archived("00000002.history", "2026-12-02T11:59:00Z")),
                b.stop_time,
                "a history file",
            ),
        ];
        for (a, want, why) in cases {
            let repo = input.repo.as_mut().unwrap();
            repo.timelines[0].window = Some(window.clone());
            window_times(repo, a.as_ref());
            let got = repo.timelines[0].window.as_ref().unwrap().to_time_at_least;
            assert_eq!(got, want, "{why}");
        }
    }

    #[tokio::test]
    async fn a_stuck_store_is_unknown_within_the_wal_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let (cfg, path) = config(dir.path(), "");
        let store = FaultyStorage::new(Arc::new(MemoryStorage::new()));
        store.hang(Some(Duration::from_secs(60)));
        let now = Utc::now();
        let started = Instant::now();
        let input = gather_from(&cfg, &path, Ok(&store), now).await;
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        assert!(input.repo.is_none());
        assert_eq!(
            input.repository_error.as_deref(),
            Some("the repository faulty(memory) did not answer within 1s ([wal] timeout)"),
        );
        let v = judge(&input, now);
        assert_eq!(v.level, Level::Unknown, "{v:?}");
        assert!(
            v.reasons[0]
                .text
                .starts_with("the state cannot be read: the repository"),
            "{v:?}"
        );
    }

    #[tokio::test]
    async fn agent_state_and_schedules_are_read_when_jobs_json_exists() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("policy.toml"),
            "[[job]]\nkind = \"backup\"\nschedule = \"0 * * * *\"\n\
             [[job]]\nkind = \"verify\"\nname = \"nightly\"\nschedule = \"30 2 * * *\"\n",
        )
        .unwrap();
        let (cfg, path) = config(dir.path(), "policy = \"policy.toml\"");
        let now = DateTime::parse_from_rfc3339("2026-12-02T12:10:00Z")
            .unwrap()
            .to_utc();
        let storage = MemoryStorage::new();

        // No jobs.json: not present, and no job has a state.
        let input = gather_from(&cfg, &path, Ok(&storage), now).await;
        assert!(!input.agent.present && input.agent.error.is_none());
        let jobs: Vec<(&str, &str, Option<f64>, bool)> = (input.policy.jobs.iter())
            .map(|j| {
                (
                    j.name.as_str(),
                    j.kind.as_str(),
                    j.interval_seconds,
                    j.state.is_some(),
                )
            })
            .collect();
        assert_eq!(
            jobs,
            [
                ("backup", "backup", Some(3600.0), false),
                ("nightly", "verify", Some(86_400.0), false)
            ]
        );
        assert_eq!(
            input.policy.jobs[1].next_run.map(|t| t.to_rfc3339()),
            Some("2026-12-03T02:30:00+00:00".to_string())
        );
        // A memory store without repo.json cannot be read.
        assert!(input.repo.is_none() && input.repository_error.is_some());

        let mut state = AgentState::default();
        state.job_mut("nightly").started(now);
        state.save(&dir.path().join("agent")).unwrap();
        let input = gather_from(&cfg, &path, Ok(&storage), now).await;
        assert!(input.agent.present, "{:?}", input.agent);
        assert_eq!(
            input.policy.jobs[1].state.as_ref().unwrap().last_start,
            Some(now)
        );
        assert!(input.policy.jobs[0].state.is_none());

        std::fs::write(dir.path().join("agent/jobs.json"), "{").unwrap();
        let input = gather_from(&cfg, &path, Ok(&storage), now).await;
        assert!(!input.agent.present);
        assert!(
            input
                .agent
                .error
                .as_deref()
                .unwrap_or("")
                .contains("is unusable"),
            "{:?}",
            input.agent
        );
    }
}
