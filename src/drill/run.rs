//! One drill run, plan first then execute, always ending in a report.
//!
//! Backup drill: reap what killed drills left → preflight from the catalog (a dry run of the
//! restore planner with the drill's target: the backup exists and is complete, the WAL to the
//! target is continuous; the disk has room; the programs match) → for `marker`, the markers on
//! the source → restore into `<scratch>/pgward-drill-<label>/data` through `run_restore`, every
//! tablespace mapped under the scratch directory → pgward's own configuration over the copy's
//! (`isolation`) → start; recovery to the target (paused there for `marker`, which is judged
//! before promotion) → promote → RTO → checks → fast stop → `pg_checksums` on the stopped copy
//! → the report.
//!
//! Dump drill: preflight (the dump, its databases, versions, disk) → initdb a fresh scratch
//! cluster → each database through `restore-dump`'s code, globals first (without tablespaces:
//! their locations are the source's) → RTO → checks → the report.
//!
//! A read lease (purpose `drill`) covers the whole drill, recovery included: `expire` keeps the
//! backup and its WAL while the scratch server's `wal-fetch` still reads them.
//!
//! The scratch directory ([`ScratchDir`]) lives outside the drill's future, so a timeout or
//! Ctrl-C that drops the future still finds the server log for the report; dropping the
//! [`Running`] guard stops the server and dropping the directory removes it.

use crate::context::Context;
use crate::drill::file::{Drill, DrillFrom, Target};
use crate::drill::isolation::{self, SourceLimits};
use crate::drill::report::{
    self, CheckResult, CheckStatus, DrillReport, Failure, Phase, Reached, TargetReport, Verdict,
};
use crate::drill::source::SourceDb;
use crate::drill::{checks, marker, preflight};
use crate::dump::programs::{RestoreOptions, major_of};
use crate::dump::restore_db::{RestoreToDbRequest, restore_to_db};
use crate::events::Event;
use crate::pg::binaries::PgBinaries;
use crate::pg::scratch::postmaster::Postmaster;
use crate::pg::scratch::{Initdb, Running, ScratchCluster, ScratchDir, ScratchSpec, Shutdown};
use crate::pg::{Lsn, WalFileName};
use crate::repo::dumps::DumpCatalog;
use crate::repo::layout;
use crate::repo::lock::{ReadKind, ReadLease, ReadPurpose, ReadRequest, Renewing, WalFrom};
use crate::repo::manifest::Manifest;
use crate::repo::snapshot::Snapshot;
use crate::restore::target::{RecoveryTarget, TargetAction, TargetTime};
use crate::restore::{RestoreRequest, run_restore};
use anyhow::{Context as _, Result, anyhow, bail};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How the command line runs a drill.
#[derive(Debug, Clone, Default)]
pub struct DrillOptions {
    /// Leave the stopped scratch copy for a look.
    pub keep: bool,
    /// The pgward binary the scratch server's `restore_command` runs (`None`: this one).
    pub exe: Option<PathBuf>,
}

/// How long a marker drill waits for its switched WAL segment to reach the repository.
const ARCHIVE_WAIT: Duration = Duration::from_secs(300);
/// How long stopping the scratch server may take at the end.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// Lines of the server log kept in a failed drill's report.
const LOG_TAIL: usize = 40;

/// Runs `drill` and stores its report. The report is returned whatever the verdict; the error
/// is only for a report that could not be stored (it is returned with it, to be printed).
pub async fn run_drill(
    ctx: &Context,
    drill: &Drill,
    opts: &DrillOptions,
) -> (DrillReport, Result<String>) {
    let mut report = execute(ctx, drill, opts).await;
    let stored = report::store(ctx.storage.as_ref(), &mut report).await;
    ctx.events.emit(&Event::DrillFinished {
        drill: report.drill.clone(),
        label: report.label.clone(),
        passed: report.verdict == Verdict::Passed,
        rto_seconds: report.rto_seconds,
        rpo_seconds: report.rpo_seconds,
        failure: report
            .failure
            .as_ref()
            .map(|f| format!("{}: {}", f.phase, f.reason)),
        duration_ms: (report.finished_at - report.started_at)
            .num_milliseconds()
            .max(0) as u64,
    });
    (report, stored)
}

/// What a run gathers while it goes; becomes the report.
struct Recorder {
    report: DrillReport,
    started: Instant,
    /// The phase running now: the one a failure is charged to.
    phase: Option<(String, DateTime<Utc>, Instant)>,
}

impl Recorder {
    fn begin(&mut self, name: &str) {
        self.end(true, None);
        tracing::info!(drill = %self.report.drill, phase = name, "drill phase");
        self.phase = Some((name.to_string(), Utc::now(), Instant::now()));
    }

    fn end(&mut self, ok: bool, bytes: Option<u64>) {
        if let Some((name, at, t)) = self.phase.take() {
            self.report.phases.push(Phase {
                name,
                started_at: at,
                seconds: t.elapsed().as_secs_f64(),
                bytes,
                ok,
            });
        }
    }

    fn phase_name(&self) -> String {
        self.phase
            .as_ref()
            .map(|p| p.0.clone())
            .unwrap_or_else(|| "preflight".into())
    }

    /// Seconds since the drill started.
    fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    fn check(&mut self, c: CheckResult) {
        tracing::info!(drill = %self.report.drill, check = %c.name, status = c.status.as_str(), "{}", c.detail);
        self.report.checks.push(c);
    }
}

async fn execute(ctx: &Context, drill: &Drill, opts: &DrillOptions) -> DrillReport {
    let started_at = Utc::now();
    let label = report::label_for(started_at, &drill.name);
    let mut rec = Recorder {
        report: DrillReport {
            format: report::FORMAT,
            label: label.clone(),
            drill: drill.name.clone(),
            file: drill.origin.display().to_string(),
            from: drill.from.as_str().into(),
            pgward_version: env!("CARGO_PKG_VERSION").into(),
            postgres_version: String::new(),
            host: crate::repo::lock::hostname(),
            started_at,
            finished_at: started_at,
            backup: None,
            target: target_report(&drill.target, drill.from),
            reached: None,
            markers: None,
            phases: Vec::new(),
            rto_seconds: None,
            rpo_seconds: None,
            checks: Vec::new(),
            verdict: Verdict::Failed,
            failure: None,
            kept: None,
            notes: Vec::new(),
        },
        started: Instant::now(),
        phase: None,
    };
    ctx.events.emit(&Event::DrillStarted {
        drill: drill.name.clone(),
        label: label.clone(),
    });
    rec.begin("preflight");
    let parent = drill
        .scratch_dir
        .clone()
        .unwrap_or_else(|| ctx.config.drill.scratch_dir.clone());
    let setup = (|| -> Result<(PgBinaries, ScratchDir)> {
        let bins = PgBinaries::locate(ctx.config.postgres.bindir.as_deref())?;
        for r in crate::pg::scratch::dir::reap(&parent)? {
            let what = format!("a drill that was killed: {r}");
            tracing::warn!("{what}");
            rec.report.notes.push(what);
        }
        let pgdata = ctx.config.postgres.pgdata.as_deref();
        let tablespaces = source_tablespaces(pgdata)?;
        preflight::check_scratch_location(&parent, pgdata, &tablespaces)?;
        let dir = ScratchDir::create(&parent, &format!("pgward-drill-{label}"), bins.run_as())?;
        Ok((bins, dir))
    })();
    let (bins, dir) = match setup {
        Ok(x) => x,
        Err(e) => {
            fail(&mut rec, e, None);
            return finish(rec);
        }
    };
    rec.report.postgres_version = bins.server_version().unwrap_or_default();
    let timeout = drill.timeout;
    // Work blocked on the scratch server (a query, a wait for recovery) cannot be dropped at
    // an await point: on a timeout or Ctrl-C the watchdog stops the server, which ends it.
    let stopped_because: Arc<Mutex<Option<String>>> = Arc::default();
    let body_done = CancellationToken::new();
    let watchdog = tokio::spawn({
        let (cancel, done, why) = (
            ctx.cancel.clone(),
            body_done.clone(),
            stopped_because.clone(),
        );
        let data = dir.data_dir();
        async move {
            let reason = tokio::select! {
                () = done.cancelled() => return,
                () = cancel.cancelled() => "the drill was interrupted".to_string(),
                () = tokio::time::sleep(timeout) => timeout_text(timeout),
            };
            *why.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason);
            let _ = tokio::task::spawn_blocking(move || {
                if let Some(pm) = Postmaster::of_datadir(&data) {
                    let _ = pm.quit();
                    if !pm.wait_gone(Duration::from_secs(10)) {
                        let _ = pm.kill();
                    }
                }
            })
            .await;
        }
    });
    // The read lease lives here, not in the body: a body dropped on a timeout still has its
    // lease released below.
    let mut lease: Option<Renewing<ReadLease>> = None;
    let outcome = {
        let body = async {
            match drill.from {
                DrillFrom::Backup => {
                    backup_drill(ctx, drill, opts, &bins, &dir, &mut rec, &mut lease).await
                }
                DrillFrom::Dump => dump_drill(ctx, drill, &bins, &dir, &mut rec, &mut lease).await,
            }
        };
        tokio::select! {
            biased;
            () = ctx.cancel.cancelled() => Err(anyhow!("the drill was interrupted")),
            r = tokio::time::timeout(timeout, body) => {
                r.unwrap_or_else(|_| Err(anyhow!(timeout_text(timeout))))
            }
        }
    };
    body_done.cancel();
    let _ = watchdog.await;
    if let Some(l) = lease.take()
        && let Err(e) = l.release().await
    {
        tracing::warn!("{e:#}");
    }
    let stopped = stopped_because
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    let outcome = match (outcome, stopped) {
        (Err(e), Some(why)) if !format!("{e}").starts_with(&why) => Err(anyhow!(
            "{why}: the scratch server was stopped, and the work waiting on it ended with: {}",
            crate::output::error_text(&e)
        )),
        // The work ended, but only once the limit had passed (or after Ctrl-C): not a pass.
        (Ok(()), Some(why)) => Err(anyhow!("{why}")),
        (outcome, _) => outcome,
    };
    // The body's guards are dropped: the server is stopped (on failure immediately).
    if let Err(e) = outcome {
        let log = crate::pg::scratch::server_log::read_from(&dir.log_file(), 0);
        let tail = (!log.is_empty())
            .then(|| crate::pg::scratch::server_log::tail(&dir.log_file(), &log, LOG_TAIL));
        fail(&mut rec, e, tail);
    }
    rec.begin("cleanup");
    if opts.keep {
        let kept = dir.keep();
        rec.report.kept = Some(kept.display().to_string());
    } else {
        drop(dir);
    }
    rec.end(true, None);
    finish(rec)
}

fn timeout_text(timeout: Duration) -> String {
    format!(
        "the drill did not finish within its timeout of {}",
        humantime::format_duration(timeout)
    )
}

fn fail(rec: &mut Recorder, e: anyhow::Error, server_log_tail: Option<String>) {
    let phase = rec.phase_name();
    rec.end(false, None);
    if rec.report.failure.is_none() {
        rec.report.failure = Some(Failure {
            phase,
            reason: crate::output::error_text(&e),
            server_log_tail,
        });
    }
}

fn finish(mut rec: Recorder) -> DrillReport {
    rec.end(true, None);
    let r = &mut rec.report;
    r.finished_at = Utc::now();
    let check_failed = r.checks.iter().find(|c| c.status == CheckStatus::Failed);
    if r.failure.is_none()
        && let Some(c) = check_failed
    {
        r.failure = Some(Failure {
            phase: "checks".into(),
            reason: format!("check {} failed: {}", c.name, c.detail),
            server_log_tail: None,
        });
    }
    r.verdict = if r.failure.is_none() {
        Verdict::Passed
    } else {
        Verdict::Failed
    };
    rec.report
}

fn target_report(t: &Target, from: DrillFrom) -> TargetReport {
    let (kind, value) = match (from, t) {
        (DrillFrom::Dump, _) => ("dump", None),
        (_, Target::Marker) => ("marker", None),
        (_, Target::Latest) => ("latest", None),
        (_, Target::Immediate) => ("immediate", None),
        (_, Target::Time(t)) => ("time", Some(crate::repo::label::rfc3339(t))),
        (_, Target::Ago(d)) => (
            "time",
            Some(format!("{} ago", humantime::format_duration(*d))),
        ),
        (_, Target::Name(n)) => ("name", Some(n.clone())),
    };
    TargetReport {
        kind: kind.into(),
        value,
        archive_end_segment: None,
    }
}

/// Runs a blocking call (a psql, pg_ctl or pg_* subprocess) on this worker thread: the drill
/// waits for it anyway.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// What the remaining drill time allows a single wait.
fn remaining(rec: &Recorder, drill: &Drill) -> Duration {
    drill
        .timeout
        .saturating_sub(rec.started.elapsed())
        .max(Duration::from_secs(1))
}

// ---------------------------------------------------------------------------------------------
// Backup drills
// ---------------------------------------------------------------------------------------------

async fn backup_drill(
    ctx: &Context,
    drill: &Drill,
    opts: &DrillOptions,
    bins: &PgBinaries,
    dir: &ScratchDir,
    rec: &mut Recorder,
    lease_slot: &mut Option<Renewing<ReadLease>>,
) -> Result<()> {
    let storage = ctx.storage.as_ref();
    let label = rec.report.label.clone();
    // The target for the planner and for recovery. A marker drill plans to the end of the
    // archive first (its restore point does not exist yet), then to the restore point.
    let (plan_target, mut target, action) = match &drill.target {
        Target::Marker | Target::Latest => (
            RecoveryTarget::EndOfArchive,
            RecoveryTarget::EndOfArchive,
            TargetAction::Promote,
        ),
        Target::Immediate => (
            RecoveryTarget::Immediate,
            RecoveryTarget::Immediate,
            TargetAction::Promote,
        ),
        Target::Time(t) => {
            let t = RecoveryTarget::Time(TargetTime(t.fixed_offset()));
            (t.clone(), t, TargetAction::Promote)
        }
        Target::Ago(d) => {
            let at = rec.report.started_at
                - chrono::Duration::from_std(*d).context("the `ago` target is too far back")?;
            let t = RecoveryTarget::Time(TargetTime(at.fixed_offset()));
            rec.report.target.value = Some(crate::repo::label::rfc3339(&at));
            (t.clone(), t, TargetAction::Promote)
        }
        Target::Name(n) => (
            RecoveryTarget::Name(n.clone()),
            RecoveryTarget::Name(n.clone()),
            TargetAction::Promote,
        ),
    };
    let pgdata = dir.data_dir();
    let tablespace_map = |m: &Manifest| -> BTreeMap<u32, PathBuf> {
        m.tablespaces
            .iter()
            .map(|t| (t.oid, dir.tablespace_dir(t.oid)))
            .collect()
    };
    let snapshot = Snapshot::load(storage).await?;
    let seg_size = snapshot.wal.seg_size;
    // Which backup: the drill's, else the newest that fits the target.
    let chosen = crate::restore::plan::plan(
        &snapshot.view(),
        &crate::restore::plan::PlanRequest {
            backup: drill.backup.clone(),
            target: plan_target.clone(),
            timeline: crate::restore::target::TimelineChoice::Latest,
            timeline_given: false,
        },
    )?;
    let backup = chosen.backup.label.to_string();
    rec.report.backup = Some(backup.clone());
    let manifest = Manifest::load(storage, &backup).await?;
    // The restore's own checks, as a dry run: every tablespace goes under the scratch
    // directory (never to the source's locations, which the restore refuses anyway).
    let mut request = RestoreRequest::new(&pgdata);
    request.backup = Some(backup.clone());
    request.target = plan_target;
    request.dry_run = true;
    request.exe = opts.exe.clone();
    request.tablespace_map = tablespace_map(&manifest);
    let planned = run_restore(ctx, request.clone()).await?;
    if let Some(t) = manifest
        .tablespaces
        .iter()
        .find(|t| t.created_during_backup)
    {
        bail!(
            "backup {backup} holds tablespace {} created while the backup ran: recovery \
             replays its CREATE TABLESPACE at the source's location {}, so it cannot be \
             restored into a scratch directory\nhint: drill a later backup",
            t.oid,
            t.location
        );
    }
    if matches!(drill.target, Target::Marker | Target::Latest) {
        preflight::check_no_hole(&planned.plan)?;
    }
    let in_backup: Vec<u32> = manifest.tablespaces.iter().map(|t| t.oid).collect();
    let on_this_host = source_tablespaces(ctx.config.postgres.pgdata.as_deref())?;
    preflight::check_no_new_tablespaces(&backup, &in_backup, &on_this_host)?;
    let programs_major = major_of(&rec.report.postgres_version).unwrap_or(0);
    preflight::check_major(programs_major, manifest.pg_major, bins.bindir())?;
    let first_seg = planned.plan.wal_needed.first.clone();
    let wal_segments = WalFileName::parse(&first_seg)
        .ok()
        .and_then(|f| f.segment())
        .map(|s| {
            planned
                .plan
                .wal_available_until
                .segment_no(seg_size)
                .saturating_sub(s.segno(seg_size))
        })
        .unwrap_or(0);
    let needed = preflight::backup_bytes_needed(manifest.stats.total_bytes, wal_segments, seg_size);
    preflight::check_disk(dir.root(), preflight::free_bytes(dir.root())?, needed)?;

    // The whole drill reads this backup and its WAL: the read lease says so to expire.
    let lease = ReadLease::take_checked(
        ctx.storage.clone(),
        ReadRequest {
            purpose: ReadPurpose::Drill,
            kind: ReadKind::Backup,
            label: backup.clone(),
            wal_from: Some(WalFrom {
                timeline: manifest.timeline,
                first_segment: manifest.start_wal.clone(),
            }),
        },
        &layout::manifest_key(&backup),
    )
    .await?
    .keep_renewed();
    let lease = lease_slot.insert(lease);
    backup_drill_leased(
        ctx,
        drill,
        bins,
        dir,
        rec,
        &label,
        &mut request,
        &mut target,
        action,
        &planned.plan,
        seg_size,
        lease,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn backup_drill_leased(
    ctx: &Context,
    drill: &Drill,
    bins: &PgBinaries,
    dir: &ScratchDir,
    rec: &mut Recorder,
    label: &str,
    request: &mut RestoreRequest,
    target: &mut RecoveryTarget,
    mut action: TargetAction,
    plan: &crate::restore::plan::RestorePlan,
    seg_size: u64,
    lease: &Renewing<ReadLease>,
) -> Result<()> {
    let storage = ctx.storage.as_ref();
    let mut archive_end = plan.wal_available_until;
    if drill.target == Target::Marker {
        rec.begin("marker");
        let conninfo = ctx.config.postgres.conninfo.as_deref().context(
            "a marker drill writes its markers on the source, but [postgres] conninfo is not set",
        )?;
        let source = SourceDb::new(bins.clone(), conninfo)?;
        let identity = crate::repo::identity::RepoIdentity::load(storage)
            .await?
            .context("the repository has no repo.json\nhint: run `pgward init`")?;
        let sysid = blocking(|| {
            source.psql(
                &drill.database,
                "select system_identifier from pg_control_system()",
            )
        })?;
        if sysid != identity.system_identifier.to_string() {
            bail!(
                "the server at [postgres] conninfo is database system {sysid}, but this \
                 repository belongs to {}: the markers would prove nothing\nhint: point \
                 [postgres] conninfo at the server this repository backs up",
                identity.system_identifier
            );
        }
        let table = drill
            .marker_table
            .clone()
            .unwrap_or_else(|| marker::DEFAULT_TABLE.to_string());
        let (markers, segment) =
            blocking(|| marker::place(&source, &drill.database, &table, label))?;
        rec.report.markers = Some(markers.clone());
        wait_archived(ctx, &segment, ARCHIVE_WAIT.min(remaining(rec, drill))).await?;
        // Plan again, now to the restore point: its WAL must be reachable without a hole.
        *target = RecoveryTarget::Name(markers.restore_point.clone());
        action = TargetAction::Pause;
        let mut again = request.clone();
        again.target = target.clone();
        let replanned = run_restore(ctx, again).await?;
        archive_end = replanned.plan.wal_available_until;
        if markers.restore_point_lsn > archive_end {
            bail!(
                "the restore point {} at {} is not in the contiguous archive (it ends at {})",
                markers.restore_point,
                markers.restore_point_lsn,
                archive_end
            );
        }
    }
    if drill.target == Target::Latest {
        rec.report.target.archive_end_segment = Some(segment_name_before(
            archive_end,
            plan.timeline.timeline.0,
            seg_size,
        ));
    }
    lease.check(Duration::from_secs(60)).await?;

    rec.begin("restore");
    request.dry_run = false;
    request.target = target.clone();
    request.action = action;
    let restored = run_restore(ctx, request.clone()).await?;
    let bytes = restored.result.as_ref().map(|r| r.bytes);
    rec.end(true, bytes);

    rec.begin("recovery");
    let pgdata = dir.data_dir();
    let run_as = bins.run_as().clone();
    let notes = blocking(|| isolation::isolate_files(&pgdata, &run_as))?;
    rec.report.notes.extend(notes);
    let limits = blocking(|| isolation::read_limits(bins, &pgdata))?;
    let settings = isolation::scratch_settings(&limits, &pgdata, &drill.settings)?;
    let mut spec = ScratchSpec::new(bins.clone(), &pgdata, &dir.socket_dir())?;
    spec.log_file = dir.log_file();
    spec.settings = settings;
    spec.on_drop = Shutdown::Immediate;
    spec.start_timeout = remaining(rec, drill);
    spec.stop_timeout = STOP_TIMEOUT;
    let cluster = blocking(|| spec.adopt())?;
    let server = blocking(|| cluster.start())?;
    dir.record_postmaster(&server.postmaster())?;
    let wait = remaining(rec, drill);
    if drill.target == Target::Marker {
        blocking(|| server.wait_recovery_paused(wait))?;
        let replay = replay_lsn(&server)?;
        let mut markers = rec.report.markers.clone().expect("placed above");
        let table_exists = blocking(|| {
            server.value_in(&markers.database, &marker::table_exists_sql(&markers.table))
        })? == "t";
        let count = |m: &str| -> Result<bool> {
            if !table_exists {
                return Ok(false);
            }
            let sql = marker::count_sql(&markers.table, label, m);
            let n = blocking(|| server.value_in(&markers.database, &sql))?;
            Ok(n != "0")
        };
        markers.a_present = Some(count("A")?);
        markers.b_present = Some(count("B")?);
        rec.report.markers = Some(markers.clone());
        rec.report.reached = Some(reached(&server, replay, plan)?);
        marker::judge(&markers, replay).map_err(|e| anyhow!("the marker proof failed: {e}"))?;
        rec.begin("promote");
        blocking(|| server.promote(wait))?;
    } else {
        blocking(|| server.wait_recovery_done(wait))?;
        let replay = replay_lsn(&server)?;
        rec.report.reached = Some(reached(&server, replay, plan)?);
    }
    rec.end(true, None);
    // A real recovery places no markers: their phase (and its wait for archiving) is not RTO.
    let markers_took: f64 = (rec.report.phases.iter())
        .filter(|p| p.name == "marker")
        .map(|p| p.seconds)
        .sum();
    rec.report.rto_seconds = Some(rec.elapsed() - markers_took);
    let reached_now = rec.report.reached.clone().expect("set above");
    // No commit replayed (an `immediate` target, an idle source): the copy holds what the
    // backup held when it ended.
    let newest = match reached_now.last_commit {
        Some(commit) => commit,
        None => {
            rec.report.notes.push(format!(
                "recovery replayed no commit: RPO is measured from the end of backup {}",
                plan.backup.label
            ));
            plan.backup.stop_time
        }
    };
    rec.report.rpo_seconds = Some(seconds_between(newest, rec.report.started_at));
    match &drill.target {
        Target::Latest => {
            // Recovery must reach the last segment of the contiguous archive; stopping
            // earlier means WAL that is in the repository was not replayed.
            let last_start = Lsn(archive_end.0.saturating_sub(1) / seg_size * seg_size);
            if reached_now.lsn < last_start {
                bail!(
                    "recovery stopped at {} but the archive holds WAL to {} (segment {}): \
                     {} of archived WAL were not replayed",
                    reached_now.lsn,
                    archive_end,
                    rec.report
                        .target
                        .archive_end_segment
                        .clone()
                        .unwrap_or_default(),
                    crate::units::bytes(archive_end.0.saturating_sub(reached_now.lsn.0))
                );
            }
        }
        Target::Time(_) | Target::Ago(_) => {
            if let (RecoveryTarget::Time(t), Some(c)) = (&*target, reached_now.last_commit)
                && c > t.utc()
            {
                bail!(
                    "recovery replayed a commit at {} after the target time {t}",
                    crate::repo::label::rfc3339(&c)
                );
            }
        }
        _ => {}
    }

    rec.begin("checks");
    run_checks(ctx, drill, bins, &server, rec).await;
    limit_checks(drill, rec);
    lease.check(Duration::from_secs(30)).await?;
    // pg_checksums needs the copy cleanly stopped.
    let cluster: ScratchCluster = (*server).clone();
    blocking(|| server.stop())?;
    if drill.checks.checksums {
        let wait = remaining(rec, drill);
        let c =
            blocking(|| checks::checksums(bins, cluster.datadir(), limits.data_checksums, wait));
        rec.check(c);
    }
    Ok(())
}

/// The source's tablespaces on this host (none when `[postgres] pgdata` is not set or not
/// here).
fn source_tablespaces(pgdata: Option<&std::path::Path>) -> Result<Vec<(u32, PathBuf)>> {
    Ok(match pgdata {
        Some(p) => preflight::source_tablespaces(p)?.unwrap_or_default(),
        None => Vec::new(),
    })
}

/// Seconds from `from` to `to`, never negative (a marker committed after the drill started is
/// an RPO of 0).
fn seconds_between(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    ((to - from).num_milliseconds() as f64 / 1000.0).max(0.0)
}

/// The name of the segment holding the byte before `end` on timeline `tli`.
fn segment_name_before(end: Lsn, tli: u32, seg_size: u64) -> String {
    let segno = end.0.saturating_sub(1) / seg_size;
    let per_log = 0x1_0000_0000 / seg_size;
    format!("{tli:08X}{:08X}{:08X}", segno / per_log, segno % per_log)
}

fn replay_lsn(server: &Running) -> Result<Lsn> {
    let v = blocking(|| server.value("select pg_last_wal_replay_lsn()"))?;
    v.parse()
        .map_err(|e| anyhow!("pg_last_wal_replay_lsn() gave `{v}`: {e}"))
}

fn reached(
    server: &Running,
    lsn: Lsn,
    plan: &crate::restore::plan::RestorePlan,
) -> Result<Reached> {
    let commit = blocking(|| {
        server.value_in(
            "postgres",
            "select coalesce(to_char(pg_last_xact_replay_timestamp() at time zone 'UTC', \
             'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), '')",
        )
    })?;
    let last_commit = if commit.is_empty() {
        None
    } else {
        Some(
            DateTime::parse_from_rfc3339(&commit)
                .map_err(|e| anyhow!("pg_last_xact_replay_timestamp() gave `{commit}`: {e}"))?
                .to_utc(),
        )
    };
    Ok(Reached {
        lsn,
        timeline: plan.timeline.timeline.0,
        last_commit,
    })
}

/// Waits until `segment` is in the repository.
async fn wait_archived(ctx: &Context, segment: &str, timeout: Duration) -> Result<()> {
    let name = WalFileName::parse(segment).map_err(|e| anyhow!("{segment}: {e}"))?;
    let prefix = layout::wal_name_prefix(&name);
    let deadline = Instant::now() + timeout;
    loop {
        let listed = ctx.storage.list(&prefix).await;
        if let Ok(objects) = &listed
            && !objects.is_empty()
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "WAL segment {segment} (with the markers and the restore point) was not archived \
                 into the repository within {}{}\nhint: check the source's archiving \
                 (pg_stat_archiver, its server log)",
                humantime::format_duration(timeout),
                listed
                    .err()
                    .map(|e| format!("; the last listing failed: {e}"))
                    .unwrap_or_default()
            );
        }
        tokio::select! {
            () = ctx.cancel.cancelled() => bail!("interrupted"),
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Dump drills
// ---------------------------------------------------------------------------------------------

async fn dump_drill(
    ctx: &Context,
    drill: &Drill,
    bins: &PgBinaries,
    dir: &ScratchDir,
    rec: &mut Recorder,
    lease_slot: &mut Option<Renewing<ReadLease>>,
) -> Result<()> {
    let storage = ctx.storage.as_ref();
    let catalog = DumpCatalog::load(storage).await?;
    let manifest = match &drill.backup {
        Some(l) => catalog
            .dumps
            .iter()
            .find(|d| d.label.as_str() == l)
            .with_context(|| {
                let incomplete = catalog.incomplete.iter().any(|i| i.as_str() == l);
                format!(
                    "dump {l} {}\nhint: `pgward info` lists the dumps",
                    if incomplete {
                        "is not complete (running, or it failed)"
                    } else {
                        "is not in the repository"
                    }
                )
            })?,
        None => catalog
            .dumps
            .last()
            .context("the repository has no complete dump\nhint: take one with `pgward dump`")?,
    }
    .clone();
    let label = manifest.label.to_string();
    rec.report.backup = Some(label.clone());
    let databases: Vec<String> = if drill.databases.is_empty() {
        manifest.databases.iter().map(|d| d.name.clone()).collect()
    } else {
        for d in &drill.databases {
            if !manifest.databases.iter().any(|m| &m.name == d) {
                bail!(
                    "dump {label} holds no database `{d}` (it holds: {})",
                    manifest
                        .databases
                        .iter()
                        .map(|m| m.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
        drill.databases.clone()
    };
    let programs_major = major_of(&rec.report.postgres_version).unwrap_or(0);
    let dump_major = major_of(&manifest.server_version).unwrap_or(0);
    preflight::check_dump_major(programs_major, dump_major, bins.bindir())?;
    let stored: u64 = manifest
        .databases
        .iter()
        .filter(|d| databases.contains(&d.name))
        .map(|d| d.object.size)
        .sum();
    preflight::check_disk(
        dir.root(),
        preflight::free_bytes(dir.root())?,
        preflight::dump_bytes_needed(stored),
    )?;
    let lease = ReadLease::take_checked(
        ctx.storage.clone(),
        ReadRequest {
            purpose: ReadPurpose::Drill,
            kind: ReadKind::Dump,
            label: label.clone(),
            wal_from: None,
        },
        &layout::dump_manifest_key(&label),
    )
    .await?
    .keep_renewed();
    *lease_slot = Some(lease);
    dump_drill_leased(ctx, drill, bins, dir, rec, &manifest, &databases).await
}

async fn dump_drill_leased(
    ctx: &Context,
    drill: &Drill,
    bins: &PgBinaries,
    dir: &ScratchDir,
    rec: &mut Recorder,
    manifest: &crate::repo::dumps::DumpManifest,
    databases: &[String],
) -> Result<()> {
    rec.begin("initdb");
    // A fresh cluster: PostgreSQL's default limits, pgward's isolation all the same.
    let limits = SourceLimits {
        max_connections: 100,
        max_worker_processes: 8,
        max_wal_senders: 10,
        max_prepared_xacts: 0,
        max_locks_per_xact: 64,
        data_checksums: false,
    };
    let pgdata = dir.data_dir();
    let mut spec = ScratchSpec::new(bins.clone(), &pgdata, &dir.socket_dir())?;
    spec.log_file = dir.log_file();
    spec.on_drop = Shutdown::Immediate;
    spec.start_timeout = remaining(rec, drill).min(Duration::from_secs(300));
    spec.stop_timeout = STOP_TIMEOUT;
    let cluster = blocking(|| spec.initdb(&Initdb::default()))?;
    let run_as = bins.run_as().clone();
    blocking(|| isolation::isolate_files(&pgdata, &run_as))?;
    let settings = isolation::scratch_settings(&limits, &pgdata, &drill.settings)?;
    crate::pg::conf::set_in_auto_conf(&pgdata, &settings, "drill isolation (pgward)", &run_as)?;
    let server = blocking(|| cluster.start())?;
    dir.record_postmaster(&server.postmaster())?;

    rec.begin("restore");
    let s = server.spec();
    let mut config = ctx.config.clone();
    config.postgres.conninfo = Some(format!(
        "host={} port={} user={} dbname=postgres",
        s.socket_dir.display(),
        s.port,
        s.superuser
    ));
    config.postgres.bindir = Some(bins.bindir().to_path_buf());
    let mut scratch_ctx =
        Context::with_storage(config, ctx.config_path.clone(), ctx.storage.clone());
    scratch_ctx.events = ctx.events.clone();
    scratch_ctx.cancel = ctx.cancel.clone();
    let existing = blocking(|| server.rows("select datname from pg_database"))?;
    let mut bytes = 0;
    for (i, db) in databases.iter().enumerate() {
        let exists = existing.iter().any(|r| r.first() == Some(db));
        let out = restore_to_db(
            &scratch_ctx,
            &RestoreToDbRequest {
                label: Some(manifest.label.to_string()),
                database: db.clone(),
                target: db.clone(),
                create: !exists,
                options: RestoreOptions {
                    no_tablespaces: true,
                    ..RestoreOptions::default()
                },
                globals: i == 0,
                dry_run: false,
            },
        )
        .await
        .with_context(|| format!("restoring database `{db}` of dump {}", manifest.label))?;
        bytes += out.bytes;
    }
    rec.end(true, Some(bytes));
    rec.report.rto_seconds = Some(rec.elapsed());
    rec.report.rpo_seconds = Some(
        ((rec.report.started_at - manifest.start_time).num_milliseconds() as f64 / 1000.0).max(0.0),
    );

    rec.begin("checks");
    run_checks(ctx, drill, bins, &server, rec).await;
    limit_checks(drill, rec);
    if drill.checks.checksums {
        rec.check(CheckResult::skipped(
            "checksums",
            "a dump drill restores into a fresh cluster: page checksums are the source's \
             physical layout, which a dump does not carry",
        ));
    }
    blocking(|| server.stop())?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------------

async fn run_checks(
    ctx: &Context,
    drill: &Drill,
    bins: &PgBinaries,
    server: &Running,
    rec: &mut Recorder,
) {
    let c = &drill.checks;
    if c.amcheck {
        let r = blocking(|| checks::amcheck(server));
        rec.check(r);
    }
    if c.read_all {
        let (r, _bytes) = blocking(|| checks::read_all(server));
        rec.check(r);
    }
    for q in &c.sql {
        let r = blocking(|| checks::sql(server, q));
        rec.check(r);
    }
    if !c.rows.is_empty() {
        match ctx
            .config
            .postgres
            .conninfo
            .as_deref()
            .context("[postgres] conninfo is not set: the source's row counts cannot be read")
            .and_then(|ci| SourceDb::new(bins.clone(), ci))
        {
            Ok(source) => {
                for q in &c.rows {
                    let r = blocking(|| checks::rows(&source, server, q));
                    rec.check(r);
                }
            }
            Err(e) => {
                for q in &c.rows {
                    rec.check(CheckResult::failed(
                        format!("rows: {}.{}", q.database, q.table),
                        format!("{e:#}"),
                        0.0,
                    ));
                }
            }
        }
    }
}

/// `max_rto` and `max_rpo` as checks, judged on what was measured.
fn limit_checks(drill: &Drill, rec: &mut Recorder) {
    for (name, limit, got) in [
        ("max_rto", drill.max_rto, rec.report.rto_seconds),
        ("max_rpo", drill.max_rpo, rec.report.rpo_seconds),
    ] {
        let Some(limit) = limit else { continue };
        let what = if name == "max_rto" { "RTO" } else { "RPO" };
        let c = match got {
            Some(s) if s <= limit.as_secs_f64() => CheckResult::ok(
                name,
                format!("{what} {s:.1} s ≤ {}", humantime::format_duration(limit)),
                0.0,
            ),
            Some(s) => CheckResult::failed(
                name,
                format!(
                    "{what} {s:.1} s is above the limit of {}",
                    humantime::format_duration(limit)
                ),
                0.0,
            ),
            None => CheckResult::failed(name, format!("{what} could not be measured"), 0.0),
        };
        rec.check(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drill::file::Checks;

    fn drill(max_rto: Option<u64>, max_rpo: Option<u64>) -> Drill {
        Drill {
            name: "d".into(),
            origin: "restore-tests/d.toml".into(),
            from: DrillFrom::Backup,
            backup: None,
            target: Target::Latest,
            database: "postgres".into(),
            marker_table: None,
            databases: vec![],
            timeout: Duration::from_secs(3600),
            max_rto: max_rto.map(Duration::from_secs),
            max_rpo: max_rpo.map(Duration::from_secs),
            scratch_dir: None,
            settings: vec![],
            checks: Checks {
                amcheck: false,
                read_all: false,
                checksums: false,
                sql: vec![],
                rows: vec![],
            },
        }
    }

    fn recorder(rto: Option<f64>, rpo: Option<f64>) -> Recorder {
        let t = Utc::now();
        let mut report = report::testing::sample("L", "d", Verdict::Passed);
        report.started_at = t;
        report.checks.clear();
        report.rto_seconds = rto;
        report.rpo_seconds = rpo;
        Recorder {
            report,
            started: Instant::now(),
            phase: None,
        }
    }

    #[test]
    fn limits_are_checks_with_what_was_measured() {
        for (limits, measured, want) in [
            ((None, None), (Some(5.0), Some(5.0)), vec![]),
            (
                (Some(60), Some(60)),
                (Some(5.0), Some(59.5)),
                vec![
                    ("max_rto", CheckStatus::Ok, "RTO 5.0 s"),
                    ("max_rpo", CheckStatus::Ok, "RPO 59.5 s"),
                ],
            ),
            (
                (Some(1), None),
                (Some(12.25), None),
                vec![(
                    "max_rto",
                    CheckStatus::Failed,
                    "RTO 12.2 s is above the limit of 1s",
                )],
            ),
            (
                (None, Some(1)),
                (Some(1.0), None),
                vec![("max_rpo", CheckStatus::Failed, "RPO could not be measured")],
            ),
        ] {
            let mut rec = recorder(measured.0, measured.1);
            limit_checks(&drill(limits.0, limits.1), &mut rec);
            let got: Vec<_> = rec
                .report
                .checks
                .iter()
                .map(|c| (c.name.as_str(), c.status))
                .collect();
            let expected: Vec<_> = want.iter().map(|(n, s, _)| (*n, *s)).collect();
            assert_eq!(got, expected);
            for (c, (_, _, text)) in rec.report.checks.iter().zip(&want) {
                assert!(c.detail.contains(text), "{} lacks {text}", c.detail);
            }
        }
    }

    #[test]
    fn a_failed_check_fails_the_drill_and_is_named() {
        let mut rec = recorder(Some(1.0), Some(1.0));
        rec.check(CheckResult::ok("amcheck", "12 relations", 0.1));
        rec.check(CheckResult::skipped("checksums", "no data checksums"));
        let passed = finish(rec);
        assert_eq!((passed.verdict, passed.failure), (Verdict::Passed, None));
        let mut rec = recorder(Some(1.0), Some(1.0));
        rec.check(CheckResult::failed(
            "sql: select 1",
            "expected `2`, got `1`",
            0.1,
        ));
        let failed = finish(rec);
        assert_eq!(failed.verdict, Verdict::Failed);
        let f = failed.failure.unwrap();
        assert_eq!(f.phase, "checks");
        assert!(
            f.reason.contains("sql: select 1 failed: expected `2`"),
            "{}",
            f.reason
        );
    }

    #[test]
    fn a_failure_is_charged_to_the_running_phase() {
        let mut rec = recorder(None, None);
        rec.begin("preflight");
        rec.begin("restore");
        fail(&mut rec, anyhow!("block 3f… is corrupt"), None);
        let r = finish(rec);
        assert_eq!(r.verdict, Verdict::Failed);
        assert_eq!(r.failure.as_ref().unwrap().phase, "restore");
        let phases: Vec<_> = r.phases.iter().map(|p| (p.name.as_str(), p.ok)).collect();
        assert_eq!(phases, [("preflight", true), ("restore", false)]);
    }

    #[test]
    fn segment_names_and_seconds() {
        let seg = 16 << 20;
        assert_eq!(
            segment_name_before(Lsn(0x0900_0000), 1, seg),
            "000000010000000000000008"
        );
        assert_eq!(
            segment_name_before(Lsn(0x1_0000_0000), 2, seg),
            "0000000200000000000000FF"
        );
        let t = Utc::now();
        assert_eq!(
            seconds_between(t, t + chrono::Duration::milliseconds(1500)),
            1.5
        );
        assert_eq!(seconds_between(t + chrono::Duration::seconds(3), t), 0.0);
    }
}
