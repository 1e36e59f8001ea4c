//! Restore a base backup into a data directory, to any point in time.
//!
//! Plan, then execute (DESIGN.md, "Restore and PITR"): [`plan`] decides which backup, which
//! timeline and which WAL from what the repository holds, without IO; [`run_restore`] loads
//! that view, builds the plan, and unless it is a dry run carries it out:
//!
//! Before anything else, time, xid and name targets are checked against a bounded read of the
//! archived WAL ([`wal_facts`], judged by [`reachable`]): a target the archive shows recovery
//! cannot reach is refused instead of failing in PostgreSQL after a restore that "succeeded".
//!
//! 1. checks the target (no running server; empty, or `--delta` over the same cluster);
//! 2. creates directories, tablespace links and files, and in delta mode removes what the
//!    backup does not have (`prepare`);
//! 3. writes every block in parallel, verifying its sha256 (`write`);
//! 4. writes `backup_label`, `tablespace_map`, `recovery.signal` and the recovery settings
//!    (`recovery_conf`);
//! 5. writes `global/pg_control` last and makes everything durable.
//!
//! Until step 5 the directory holds a marker and no `pg_control`: an interrupted restore cannot
//! be started by mistake, and `--delta` resumes it.

pub mod delta;
pub mod dest;
pub mod direct;
pub mod files;
pub mod plan;
pub mod prepare;
pub mod reachable;
pub mod readahead;
pub mod recovery_conf;
pub mod report;
pub mod target;
pub mod wal_facts;
pub mod write;

use crate::context::Context;
use crate::events::{Event, Events, PROGRESS_EVERY};
use crate::pg::Lsn;
use crate::repo::layout;
use crate::repo::lock::{ReadKind, ReadLease, ReadPurpose, ReadRequest, WalFrom};
use crate::repo::manifest::Manifest;
use crate::repo::snapshot::Snapshot;
use crate::restore::delta::Marker;
use crate::restore::dest::Destination;
use crate::restore::plan::{PlanRequest, RestorePlan};
use crate::restore::prepare::Layout;
use crate::restore::recovery_conf::RecoverySettings;
use crate::restore::target::{RecoveryTarget, TargetAction, TimelineChoice};
use crate::restore::write::{Progress, WritePlan};
use anyhow::{Context as _, Result, anyhow, bail};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Everything a restore is asked to do.
#[derive(Debug, Clone)]
pub struct RestoreRequest {
    pub pgdata: PathBuf,
    /// A backup label; `None` picks the newest that fits the target.
    pub backup: Option<String>,
    pub target: RecoveryTarget,
    pub action: TargetAction,
    pub timeline: TimelineChoice,
    /// `--target-timeline` was given (`timeline` is otherwise the default, `latest`): a time
    /// target after a fork is then not ambiguous.
    pub timeline_given: bool,
    /// `recovery_target_inclusive = off`.
    pub exclusive: bool,
    /// Tablespace OID → new location.
    pub tablespace_map: BTreeMap<u32, PathBuf>,
    pub delta: bool,
    pub dry_run: bool,
    /// The operator says `postmaster.pid` in the data directory is stale: restore although
    /// what it names looks alive (`--force`).
    pub force: bool,
    /// The pgward binary `restore_command` runs; `None` for this process's own executable.
    pub exe: Option<PathBuf>,
}

impl RestoreRequest {
    /// Restore the newest backup to the end of the archive on the latest timeline.
    pub fn new(pgdata: impl Into<PathBuf>) -> RestoreRequest {
        RestoreRequest {
            pgdata: pgdata.into(),
            backup: None,
            target: RecoveryTarget::EndOfArchive,
            action: TargetAction::Promote,
            timeline: TimelineChoice::Latest,
            timeline_given: false,
            exclusive: false,
            tablespace_map: BTreeMap::new(),
            delta: false,
            dry_run: false,
            force: false,
            exe: None,
        }
    }
}

/// What a restore did (or, for a dry run, would do).
#[derive(Debug, Clone, Serialize)]
pub struct RestoreOutcome {
    pub plan: RestorePlan,
    pub pgdata: PathBuf,
    pub dry_run: bool,
    /// `None` for a dry run.
    pub result: Option<RestoreStats>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RestoreStats {
    pub files: u64,
    pub directories: u64,
    /// Bytes of all restored files.
    pub bytes: u64,
    /// Block placements fetched from the repository (a block used in several places is
    /// fetched once).
    pub blocks_fetched: u64,
    /// Delta: block placements already right on disk, neither fetched nor written.
    pub blocks_reused: u64,
    /// Compressed bytes downloaded.
    pub bytes_fetched: u64,
    pub bytes_written: u64,
    /// Delta: files and directories removed because the backup does not have them.
    pub removed: u64,
    pub duration_ms: u64,
    /// `bytes` in MB (10^6) per second.
    pub mb_per_s: f64,
    /// The block appended to postgresql.auto.conf.
    pub recovery_settings: String,
    /// Things the operator should know that are not about the plan.
    pub notes: Vec<String>,
}

/// A restore stopped by its context's cancellation token before the directory was complete.
#[derive(Debug, thiserror::Error)]
#[error("the restore was cancelled")]
pub struct Cancelled;

/// Plans and (unless `dry_run`) runs a restore. Reports through `ctx.events`; stops when
/// `ctx.cancel` fires, leaving a directory without `pg_control` (which cannot be started) and
/// saying so: `--delta` resumes it.
pub async fn run_restore(ctx: &Context, req: RestoreRequest) -> Result<RestoreOutcome> {
    if req.exclusive && !req.target.has_inclusive() {
        bail!(
            "--target-exclusive applies to time, LSN and xid targets only, not to {}",
            req.target
        );
    }
    let storage = ctx.storage.as_ref();
    let loaded = Snapshot::load(storage).await?;
    let id = &loaded.identity;
    let view = loaded.view();
    let preq = PlanRequest {
        backup: req.backup.clone(),
        target: req.target.clone(),
        timeline: req.timeline,
        timeline_given: req.timeline_given,
    };
    let mut plan = plan::plan(&view, &preq)?;
    tracing::debug!(backup = %plan.backup.label, "planned");
    // Time, xid and name targets: what the archive shows about reaching them (a bounded read
    // of WAL along the planned path), judged purely with the clock passed in.
    let reach = reachable::ReachRequest {
        inclusive: !req.exclusive,
        timeline_given: req.timeline_given,
        now: chrono::Utc::now(),
    };
    let facts = wal_facts::gather(storage, &loaded.wal, &plan, &reach).await;
    let not_checked = reachable::check(&plan, &facts, &reach)?;
    plan.warnings.extend(not_checked);
    plan.warnings.extend(loaded.warnings.iter().cloned());
    for w in &plan.warnings {
        // What a restore leaves out or could not check must not scroll past unseen in the
        // plan: also on standard error (the plan text keeps them too).
        tracing::warn!("{w}");
    }
    let pgdata = std::path::absolute(&req.pgdata)
        .with_context(|| format!("cannot resolve {}", req.pgdata.display()))?;
    let manifest = Manifest::load(storage, plan.backup.label.as_str()).await?;
    tracing::debug!(files = manifest.files.len(), "manifest loaded");
    if manifest.system_identifier != id.system_identifier {
        bail!(
            "backup {} is of database system {}, but this repository belongs to {}",
            manifest.label,
            manifest.system_identifier,
            id.system_identifier
        );
    }
    // For --delta: the backups a stale copy's backup_label may come from.
    let known: Vec<(String, Lsn)> = (loaded.catalog.backups.iter())
        .map(|b| (b.label.to_string(), b.start_lsn))
        .collect();
    // Every check the real run makes, dry or not: a dry run never approves what the run refuses.
    let source = ctx.config.postgres.pgdata.as_deref();
    let checked = preflight(&req, &pgdata, &manifest, &known, source)?;
    if req.dry_run {
        return Ok(RestoreOutcome {
            plan,
            pgdata,
            dry_run: true,
            result: None,
        });
    }
    // The reader protocol (`repo::lock`): manifest read, lease taken, manifest still there.
    let lease = ReadLease::take_checked(
        ctx.storage.clone(),
        ReadRequest {
            purpose: ReadPurpose::Restore,
            kind: ReadKind::Backup,
            label: manifest.label.clone(),
            wal_from: Some(WalFrom {
                timeline: manifest.timeline,
                first_segment: manifest.start_wal.clone(),
            }),
        },
        &layout::manifest_key(&manifest.label),
    )
    .await?
    .keep_renewed();
    let executed = execute(ctx, &req, &plan, &manifest, checked).await;
    if let Err(e) = lease.release().await {
        tracing::warn!("{e:#}");
    }
    let stats = match executed {
        Ok(stats) => stats,
        Err(e) => {
            let e = e.context(format!(
                "restore of backup {} into {} failed",
                manifest.label,
                pgdata.display()
            ));
            ctx.events.emit(&Event::RestoreFailed {
                backup: manifest.label.clone(),
                error: crate::output::error_text(&e),
                // The error chain was flattened into text by `incomplete`.
                cancelled: ctx.cancel.is_cancelled(),
            });
            return Err(e);
        }
    };
    ctx.events.emit(&Event::RestoreFinished {
        backup: manifest.label.clone(),
        files: stats.files,
        bytes: stats.bytes,
        duration_ms: stats.duration_ms,
    });
    Ok(RestoreOutcome {
        plan,
        pgdata,
        dry_run: false,
        result: Some(stats),
    })
}

async fn execute(
    ctx: &Context,
    req: &RestoreRequest,
    plan: &RestorePlan,
    m: &Manifest,
    checked: Checked,
) -> Result<RestoreStats> {
    let started = Instant::now();
    let Checked { dest, layout, exe } = checked;
    let pgdata = dest.pgdata.clone();
    let pgdata = pgdata.as_path();
    // Nothing has been written so far; from here on a failure leaves a directory that
    // cannot be started, and says so.
    let mut stats = write_all(ctx, req, &dest, &layout, plan, m, &exe)
        .await
        .map_err(|e| incomplete(e, pgdata))?;
    let duration = started.elapsed();
    stats.duration_ms = duration.as_millis() as u64;
    stats.mb_per_s = round2(stats.bytes as f64 / 1e6 / duration.as_secs_f64().max(0.001));
    if let Some(n) = exe_note(&exe, &dest.pgdata) {
        stats.notes.push(n);
    }
    stats.notes.push(
        "the restored cluster keeps the source's settings, archive_command included: a scratch \
         copy should run with archive_mode = off (and its own port), or once promoted it \
         archives a new timeline into this repository"
            .to_string(),
    );
    Ok(stats)
}

/// What [`preflight`] checked, ready to write.
struct Checked {
    dest: Destination,
    layout: Layout,
    /// The binary `restore_command` will run.
    exe: PathBuf,
}

/// The checks before anything is written (shared by the run and `--dry-run`): the target
/// directory and tablespace locations, the mapping, and the binary `restore_command` will run.
/// `source` is `[postgres] pgdata`, the source cluster when restoring on its host.
fn preflight(
    req: &RestoreRequest,
    pgdata: &Path,
    m: &Manifest,
    known_backups: &[(String, Lsn)],
    source: Option<&Path>,
) -> Result<Checked> {
    let dest = Destination::new(pgdata, m, &req.tablespace_map)?;
    let layout = Layout::of(&dest, m)?;
    if let Some(source) = source {
        dest::check_not_source_tablespaces(&dest, m, source)?;
    }
    check_destination(&dest, m, req, known_backups)?;
    let exe = exe_path(req)?;
    Ok(Checked { dest, layout, exe })
}

async fn write_all(
    ctx: &Context,
    req: &RestoreRequest,
    dest: &Destination,
    layout: &Layout,
    plan: &RestorePlan,
    m: &Manifest,
    exe: &Path,
) -> Result<RestoreStats> {
    // Restores are normally run as postgres; run as root, everything created is handed to
    // the owner of the target (or of its parent) as it is created, so even a failed restore
    // leaves no root-owned files behind.
    let owner = dest::owner_for(&dest.pgdata);
    let jobs = ctx.config.backup.jobs.max(1);
    // Creating and fsyncing files wait on the disk, not the CPU: more threads than jobs keep
    // it busy.
    let sync_threads = (jobs * 4).min(32);
    let marker = Marker {
        system_identifier: m.system_identifier,
        backup: m.label.clone(),
        started_at: now_rfc3339(),
    };
    let prepared = {
        let (dest, m, layout, delta) = (dest.clone(), m.clone(), layout.clone(), req.delta);
        tokio::task::spawn_blocking(move || {
            prepare::prepare(&dest, &m, &layout, delta, &marker, owner)
        })
        .await
        .map_err(|e| anyhow!("restore preparation failed: {e}"))??
    };
    prepare::create_files(&prepared.plan, req.delta, owner, sync_threads).await?;
    tracing::debug!(removed = prepared.removed, "directories and files prepared");
    let sync = prepare::dirs_to_sync(&prepared);
    let total_bytes: u64 =
        layout.files.iter().map(|(f, _)| f.size).sum::<u64>() + layout.control.0.size;

    ctx.events.emit(&Event::RestoreStarted {
        backup: m.label.clone(),
        pgdata: dest.pgdata.display().to_string(),
        bytes_total: total_bytes,
    });
    let progress = Arc::new(Progress::default());
    let started_writing = Instant::now();
    let reporter = spawn_progress(ctx.events.clone(), progress.clone(), total_bytes);
    let written = tokio::select! {
        biased;
        () = ctx.cancel.cancelled() => Err(anyhow!(Cancelled)),
        written = write::write_blocks(
            ctx.storage.clone(),
            prepared.plan,
            jobs,
            req.delta,
            progress.clone(),
        ) => written,
    };
    reporter.abort();
    ctx.events.emit(&Event::RestoreProgress {
        bytes_done: progress.bytes_done.load(Ordering::Relaxed),
        bytes_total: total_bytes,
        elapsed_ms: started_writing.elapsed().as_millis() as u64,
    });
    let written = written?;
    tracing::debug!("blocks written");
    let files = written.files.len() as u64 + 1;
    write::finish_files(written.files, sync_threads).await?;
    tracing::debug!("files durable");
    // The last cancellation point: what follows is short, and a directory that gets its
    // pg_control must never be reported as cancelled.
    if ctx.cancel.is_cancelled() {
        return Err(anyhow!(Cancelled));
    }

    // The recovery configuration, then pg_control: from then on the directory is startable.
    let settings = RecoverySettings {
        restore_command: recovery_conf::restore_command(exe, &ctx.config_path),
        target: req.target.clone(),
        inclusive: !req.exclusive,
        timeline: plan.timeline.setting.clone(),
        action: req.action,
        hole_after_target: plan.wal_hole.clone(),
    };
    let block = recovery_conf::render(&settings, &m.label, &now_rfc3339());
    {
        let (dest, m, block) = (dest.clone(), m.clone(), block.clone());
        tokio::task::spawn_blocking(move || write_config_files(&dest, &m, &block, owner))
            .await
            .map_err(|e| anyhow!("writing the recovery configuration failed: {e}"))??;
    }
    // Everything else durable first — every directory's entries (backup_label,
    // recovery.signal and the files were fsynced as written) — so that a crash before
    // pg_control exists leaves a directory PostgreSQL cannot start, never one that starts
    // without backup_label and silently skips the WAL the backup needs.
    set_dir_modes(prepared.dirs.clone()).await?;
    write::sync_dirs(sync, sync_threads).await?;
    crate::fsutil::fsync_dir(&dest.pgdata)
        .with_context(|| format!("cannot fsync {}", dest.pgdata.display()))?;
    let (control, control_index) = layout.control.clone();
    let control_path = control.path.clone();
    files::create_file(&control, req.delta, owner, false)?;
    let mut control_plan = WritePlan::new(m.block_size);
    control_plan.add(
        control,
        &m.files[control_index].blocks,
        &mut Default::default(),
    )?;
    let control_plan = write::write_blocks(
        ctx.storage.clone(),
        control_plan,
        1,
        false,
        progress.clone(),
    )
    .await?;
    write::finish_files(control_plan.files, 1).await?;
    if let Some(global) = control_path.parent() {
        crate::fsutil::fsync_dir(global)
            .with_context(|| format!("cannot fsync {}", global.display()))?;
    }
    let marker_path = dest.pgdata.join(dest::MARKER);
    fs::remove_file(&marker_path)
        .with_context(|| format!("cannot remove {}", marker_path.display()))?;
    crate::fsutil::fsync_dir(&dest.pgdata)
        .with_context(|| format!("cannot fsync {}", dest.pgdata.display()))?;

    Ok(RestoreStats {
        files,
        directories: prepared.dirs.len() as u64,
        bytes: total_bytes,
        blocks_fetched: progress.blocks_fetched.load(Ordering::Relaxed),
        blocks_reused: progress.blocks_reused.load(Ordering::Relaxed),
        bytes_fetched: progress.bytes_fetched.load(Ordering::Relaxed),
        bytes_written: progress.bytes_written.load(Ordering::Relaxed),
        removed: prepared.removed,
        duration_ms: 0,
        mb_per_s: 0.0,
        recovery_settings: block,
        notes: Vec::new(),
    })
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A failure after the data directory was touched: the cause first (with its own hint), then
/// what state the directory is in and how to resume.
fn incomplete(cause: anyhow::Error, pgdata: &Path) -> anyhow::Error {
    anyhow!(
        "{cause:#}\nnote: {} is incomplete and cannot be started (it has no global/pg_control \
         yet); once the cause is fixed, run the same restore with --delta to resume, or remove \
         the directory",
        pgdata.display()
    )
}

fn exe_path(req: &RestoreRequest) -> Result<PathBuf> {
    match &req.exe {
        Some(p) => Ok(p.clone()),
        None => std::env::current_exe()
            .context("cannot find the path of the pgward executable for restore_command"),
    }
}

/// A note when the data directory's owner may not be able to run `exe` (a build under /root,
/// say): recovery would then fail on its first restore_command.
fn exe_note(exe: &Path, pgdata: &Path) -> Option<String> {
    let owner = fs::metadata(pgdata).ok()?.uid();
    let exe_meta = fs::metadata(exe).ok()?;
    if owner == 0 || exe_meta.uid() == owner {
        return None;
    }
    // The owner can pass a directory it owns through the user bits, others through o+x.
    let can_enter = |m: &fs::Metadata| {
        if m.uid() == owner {
            m.mode() & 0o100 != 0
        } else {
            m.mode() & 0o001 != 0
        }
    };
    let reachable = exe_meta.mode() & 0o005 == 0o005
        && exe
            .ancestors()
            .skip(1)
            .filter(|a| !a.as_os_str().is_empty())
            .all(|a| fs::metadata(a).is_ok_and(|m| can_enter(&m)));
    (!reachable).then(|| {
        format!(
            "restore_command runs {}, which the owner of {} may not be able to execute (a \
             directory on the way lacks o+x, or the file lacks o+rx); install pgward where \
             PostgreSQL can run it, or edit restore_command in postgresql.auto.conf",
            exe.display(),
            pgdata.display()
        )
    })
}

/// The checks made before anything is written.
fn check_destination(
    dest: &Destination,
    m: &Manifest,
    req: &RestoreRequest,
    known_backups: &[(String, Lsn)],
) -> Result<()> {
    let delta = req.delta;
    if let Some(sign) = dest::server_sign(&dest.pgdata) {
        let what = sign.describe(&dest.pgdata);
        if !req.force {
            bail!(
                "{what}\nhint: stop it first (pg_ctl stop -D {}, or in the container that runs \
                 it); a restore never writes under a running server. Only if you are sure that \
                 no server runs on this directory anywhere (the file is left from a crash, and \
                 what it names belongs to something else), run the restore again with --force",
                dest.pgdata.display()
            );
        }
        tracing::warn!("restoring anyway, as --force says: {what}");
    }
    let empty = dest::is_empty_or_absent(&dest.pgdata)?;
    if !empty {
        if !delta {
            let resumable = delta::read_marker(&dest.pgdata).is_some();
            bail!(
                "{} is not empty\nhint: {}",
                dest.pgdata.display(),
                if resumable {
                    "it holds an interrupted restore: run the same restore with --delta to \
                     resume it, or remove the directory"
                } else {
                    "restore into an empty directory, or add --delta to bring this data \
                     directory (of the same cluster) to the backup's state"
                }
            );
        }
        delta::check_same_cluster(&dest.pgdata, m.system_identifier, known_backups)?;
    }
    if !delta {
        for (oid, loc) in &dest.tablespaces {
            if !dest::is_empty_or_absent(loc)? {
                if let Some(t) =
                    (m.tablespaces.iter()).find(|t| t.oid == *oid && t.created_during_backup)
                {
                    bail!(
                        "tablespace {} cannot be restored: its location is not empty, and \
                         backup {} can restore that tablespace only there: it was created while \
                         the backup was being copied, and recovery replays its CREATE \
                         TABLESPACE at {} whatever --tablespace-map says\n\
                         hint: on the source's host that directory is the source's own \
                         tablespace: restore this backup on a host where {} is free, or take a \
                         new backup (`pgward backup`) and restore that one",
                        t.describe(),
                        m.label,
                        t.location,
                        t.location
                    );
                }
                bail!(
                    "the location of tablespace {oid}, {}, is not empty\nhint: map it to an \
                     empty directory with --tablespace-map {oid}=/new/location, or add --delta",
                    loc.display()
                );
            }
        }
    }
    Ok(())
}

/// `backup_label`, `tablespace_map`, `recovery.signal`, and the settings appended to
/// `postgresql.auto.conf`, each made durable.
fn write_config_files(
    dest: &Destination,
    m: &Manifest,
    block: &str,
    owner: Option<(u32, u32)>,
) -> Result<()> {
    let pgdata = &dest.pgdata;
    write_small_file(
        &pgdata.join(dest::BACKUP_LABEL),
        m.backup_label.as_bytes(),
        owner,
    )?;
    let map = dest
        .tablespace_map()
        .or_else(|| m.tablespace_map.clone().filter(|t| !t.trim().is_empty()));
    match map {
        Some(map) => write_small_file(&pgdata.join(dest::TABLESPACE_MAP), map.as_bytes(), owner)?,
        None => remove_if_present(&pgdata.join(dest::TABLESPACE_MAP))?,
    }
    write_small_file(&pgdata.join(dest::RECOVERY_SIGNAL), b"", owner)?;
    append_auto_conf(&pgdata.join(dest::AUTO_CONF), block, owner)
}

fn write_small_file(path: &Path, data: &[u8], owner: Option<(u32, u32)>) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(data)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.set_permissions(fs::Permissions::from_mode(0o600))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::fchown(&f, Some(uid), Some(gid))
            .with_context(|| format!("cannot change the owner of {}", path.display()))?;
    }
    crate::fsutil::fsync_file(&f, path).with_context(|| format!("cannot fsync {}", path.display()))
}

fn remove_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
}

fn append_auto_conf(path: &Path, block: &str, owner: Option<(u32, u32)>) -> Result<()> {
    let mut f = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    // Start on a line of our own even if the file does not end with a newline.
    let len = f.metadata()?.len();
    let mut last = [0u8; 1];
    if len > 0 {
        f.seek(SeekFrom::Start(len - 1))?;
        f.read_exact(&mut last)?;
    }
    let sep = if len > 0 && last[0] != b'\n' {
        "\n"
    } else {
        ""
    };
    f.write_all(format!("{sep}{block}").as_bytes())
        .with_context(|| format!("cannot append to {}", path.display()))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
    }
    crate::fsutil::fsync_file(&f, path).with_context(|| format!("cannot fsync {}", path.display()))
}

/// Final directory modes, deepest first, once everything inside was written (a manifest
/// mode without owner write permission must not block the restore itself).
async fn set_dir_modes(dirs: Vec<(PathBuf, u32)>) -> Result<()> {
    tokio::task::spawn_blocking(move || -> Result<()> {
        for (d, mode) in dirs.iter().rev() {
            fs::set_permissions(d, fs::Permissions::from_mode(*mode))
                .with_context(|| format!("cannot set the mode of {}", d.display()))?;
        }
        Ok(())
    })
    .await
    .map_err(|e| anyhow!("setting directory modes failed: {e}"))?
}

/// Reports progress as events until aborted.
fn spawn_progress(events: Events, p: Arc<Progress>, total: u64) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let start = Instant::now();
        let mut tick = tokio::time::interval(PROGRESS_EVERY);
        tick.tick().await;
        loop {
            tick.tick().await;
            events.emit(&Event::RestoreProgress {
                bytes_done: p.bytes_done.load(Ordering::Relaxed),
                bytes_total: total,
                elapsed_ms: start.elapsed().as_millis() as u64,
            });
        }
    })
}

#[cfg(test)]
mod tests;
