//! Base backups: every backup is full, stored incrementally (DESIGN.md, "Base backups").
//!
//! [`run_backup`] takes a non-exclusive backup of the running cluster: it checks that the
//! repository, the data directory and the server are one cluster, takes the `backup` lease,
//! marks the label in progress, calls `pg_backup_start` on a session it keeps open, copies the
//! data directory and its tablespaces itself through the block [`pipeline`] (blocks already in
//! the repository are not uploaded again), calls `pg_backup_stop`, waits until the backup's WAL
//! is in the repository, and only then writes the manifest.
//!
//! The invariant: **a manifest exists only for a backup that can be restored.** Blocks go
//! first, the WAL is checked, the manifest is written last. On every error path the
//! in-progress marker is removed and the lease released; a backup that fails leaves at most
//! unreferenced blocks, which garbage collection removes.
//!
//! Submodules: [`exclude`] (what is not copied), [`walk`] (what is), [`pipeline`] (reading,
//! checking, hashing, compressing, uploading), [`session`] (the server calls), [`tablespaces`]
//! (which were created during the copy), [`wal`] (the WAL check), [`archiver`] (what the server says about archiving), [`progress`] (the terminal
//! display).

pub mod archiver;
pub mod exclude;
pub mod pipeline;
pub mod progress;
pub mod session;
pub mod tablespaces;
pub mod wal;
pub mod walk;

use crate::context::Context;
use crate::events::Event;
use crate::pg::backup_label::BackupLabel;
use crate::pg::control::ControlFile;
use crate::pg::version::read_major_version;
use crate::pg::{Lsn, Timeline, WalSegmentName, conn};
use crate::repo::identity::RepoIdentity;
use crate::repo::label;
use crate::repo::layout::{self, BackupKey};
use crate::repo::lock::{Lease, LeaseWait, Renewing, SAFETY_MARGIN};
use crate::repo::manifest::{BackupStats, BadPage, MANIFEST_VERSION, Manifest};
use crate::storage::DynStorage;
use anyhow::{Context as _, Result, anyhow, bail};
use chrono::{DateTime, SecondsFormat, Utc};
use pipeline::{KnownBlocks, PipelineConfig, Progress};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio_postgres::Client;

/// How long connecting to the server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The lease that keeps backups and garbage-collection sweeps from running at once.
pub const LEASE_NAME: &str = "backup";
/// The longest a backup waits for a garbage-collection sweep holding [`LEASE_NAME`].
const GC_WAIT: Duration = Duration::from_secs(600);

/// What a finished backup is, for the command's output and for tests.
#[derive(Debug, Clone)]
pub struct BackupOutcome {
    pub label: String,
    pub timeline: Timeline,
    pub start_lsn: Lsn,
    pub stop_lsn: Lsn,
    pub start_wal: String,
    pub stop_wal: String,
    pub start_time: String,
    pub stop_time: String,
    pub data_checksums: bool,
    pub stats: BackupStats,
    pub bad_pages: Vec<BadPage>,
}

/// Facts about the server gathered before the backup starts.
struct Server {
    version_num: u32,
    system_identifier: u64,
    data_checksums: bool,
    data_directory: Option<PathBuf>,
}

/// Takes a base backup of the cluster at `[postgres] pgdata` through `[postgres] conninfo`
/// into the repository; see the module documentation.
///
/// Reports through `ctx.events` (started, progress, finished or failed) and stops when
/// `ctx.cancel` fires: a cancelled backup writes no manifest, removes its in-progress marker and
/// releases its lease, and fails with [`Cancelled`].
pub async fn run_backup(ctx: &Context) -> Result<BackupOutcome> {
    let claimed = std::sync::Mutex::new(None);
    let result = backup(ctx, &claimed).await;
    if let Err(e) = &result {
        ctx.events.emit(&Event::BackupFailed {
            label: claimed.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            error: crate::output::error_text(e),
            cancelled: e.chain().any(|c| c.is::<Cancelled>()),
        });
    }
    result
}

/// A backup stopped by its context's cancellation token before it wrote a manifest.
#[derive(Debug, thiserror::Error)]
#[error(
    "the backup was cancelled before it completed: no manifest was written, and its in-progress marker and lease were removed"
)]
pub struct Cancelled;

/// `claimed` receives the label once one is claimed (for the `backup_failed` event).
async fn backup(
    ctx: &Context,
    claimed: &std::sync::Mutex<Option<String>>,
) -> Result<BackupOutcome> {
    let started = Instant::now();
    let storage = ctx.storage.clone();
    let identity = RepoIdentity::require(storage.as_ref()).await?;
    let pgdata = ctx.config.pgdata()?.to_path_buf();
    let control = ControlFile::read(&pgdata)?;
    let major = read_major_version(&pgdata)?;
    identity.check_cluster(&control, major).with_context(|| {
        format!(
            "refusing to back up {} into {}",
            pgdata.display(),
            storage.describe()
        )
    })?;
    if identity.block_size == 0
        || !identity.block_size.is_multiple_of(page_size())
        || identity.block_size > 64 << 20
    {
        bail!(
            "repo.json gives a block size of {} bytes; it must be a multiple of 8 KiB up to 64 MiB",
            identity.block_size
        );
    }

    let conninfo = ctx.config.postgres.conninfo.as_deref().context(
        "[postgres] conninfo is not set in the configuration\n\
         hint: add e.g. conninfo = \"host=/var/run/postgresql port=5432 user=postgres dbname=postgres\"",
    )?;
    let client = conn::connect(conninfo, CONNECT_TIMEOUT).await?;
    let server = probe(&client).await?;
    check_same_cluster(&identity, &control, &pgdata, &server)?;

    // A garbage-collection sweep holds this lease briefly: wait for it rather than fail. The
    // agent's backup also waits for one started by hand ([agent] lease_wait).
    let wait = LeaseWait {
        for_purposes: if ctx.lease_wait.is_zero() {
            &["gc"]
        } else {
            &["gc", "backup"]
        },
        max: GC_WAIT.max(ctx.lease_wait),
        poll: Duration::from_secs(2),
        events: &ctx.events,
        cancel: Some(&ctx.stopping),
    };
    let lease = Lease::acquire_waiting(
        storage.clone(),
        LEASE_NAME,
        "backup",
        crate::clock::system(),
        &wait,
    )
    .await?
    .keep_renewed();
    let job = Job {
        ctx,
        storage: &storage,
        client: &client,
        server: &server,
        identity: &identity,
        control: &control,
        pgdata: &pgdata,
        conninfo,
        started,
        lease: &lease,
    };
    let result = with_lease(&job, claimed).await;
    if let Err(e) = lease.release().await {
        // The backup's own result matters more; a lease left behind names this host and pid,
        // and the next run here takes it over once this process is gone.
        tracing::warn!("{e:#}");
    }
    result
}

/// Everything one backup run works with, gathered before the lease is taken.
#[derive(Clone, Copy)]
struct Job<'a> {
    ctx: &'a Context,
    storage: &'a DynStorage,
    client: &'a Client,
    server: &'a Server,
    identity: &'a RepoIdentity,
    control: &'a ControlFile,
    pgdata: &'a Path,
    conninfo: &'a str,
    started: Instant,
    lease: &'a Renewing<Lease>,
}

async fn with_lease(
    job: &Job<'_>,
    claimed: &std::sync::Mutex<Option<String>>,
) -> Result<BackupOutcome> {
    let storage = job.storage;
    let start_time = Utc::now();
    let start_time_text = start_time.to_rfc3339_opts(SecondsFormat::Secs, true);
    let label = claim_label(storage, start_time).await?;
    *claimed.lock().unwrap_or_else(|e| e.into_inner()) = Some(label.clone());
    let marker = layout::in_progress_key(&label);
    // Until the manifest is written, cancelling drops the work (the pipeline's threads stop;
    // the session's connection, closed with the client, ends backup mode on the server).
    let result = tokio::select! {
        biased;
        () = job.ctx.cancel.cancelled() => Err(anyhow!(Cancelled)),
        copied = copy(job, &label, &start_time_text) => copied,
    };
    // Once everything the manifest names is stored, storing it is not interrupted: a backup
    // whose manifest exists is complete, and must not be reported as cancelled.
    let result = match result {
        Ok(manifest) => store_manifest(job, manifest).await,
        Err(e) => Err(e),
    };
    // Removed on success too: once the manifest exists, the marker has done its job.
    if let Err(e) = storage.delete(&marker).await {
        tracing::warn!("cannot remove {marker}: {e}");
    }
    result
}

/// Everything up to the manifest: blocks copied, the backup stopped, its WAL archived.
async fn copy(job: &Job<'_>, label: &str, start_time: &str) -> Result<Manifest> {
    let Job {
        ctx,
        storage,
        client,
        server,
        identity,
        control,
        pgdata,
        started,
        ..
    } = *job;
    let level = ctx.config.repo.compression_level.0;
    let wait = ctx.config.backup.wal_wait_timeout;
    let seg_size = identity.wal_segment_size;

    // Listed before the backup starts: the server need not sit in backup mode meanwhile. A
    // tablespace linked after this listing counts as created during the copy, which is the
    // safe side: its CREATE TABLESPACE may come after the start's checkpoint, and is then
    // replayed (see `tablespaces`).
    let known = Arc::new(KnownBlocks::load(storage).await?);
    let listed_at_start = walk::tablespaces(pgdata)?;
    let version_dir = walk::tablespace_version_dir(identity.pg_major, control.catalog_version);

    let start_lsn = session::start(client, server.version_num, label).await?;
    tracing::debug!(label, known_blocks = known.len(), "known blocks loaded");
    ctx.events.emit(&Event::BackupStarted {
        label: label.to_string(),
        start_lsn,
    });

    let progress = Arc::new(Progress::default());
    let (dir, vdir, p) = (pgdata.to_path_buf(), version_dir.clone(), progress.clone());
    // A size estimate for the progress events: one cheap walk (metadata only).
    tokio::task::spawn_blocking(move || {
        let total: u64 = walk::Walk::new(&dir, &vdir)
            .into_iter()
            .flatten()
            .filter_map(|e| match e {
                Ok(walk::Entry::File { size, .. }) => Some(size),
                _ => None,
            })
            .sum();
        p.bytes_total.store(total, Ordering::Relaxed);
    });
    let reporter = progress::Reporter::start(ctx.events.clone(), label, progress.clone());
    let entries = walk::Walk::new(pgdata, &version_dir)?;
    let followed = entries.followed();
    let config = PipelineConfig {
        block_size: identity.block_size,
        jobs: ctx.config.backup.jobs,
        level,
        verify_from: server.data_checksums.then_some(start_lsn),
    };
    let copied = pipeline::run(storage.clone(), entries, known, config, progress.clone()).await;
    drop(reporter);
    let copied = copied?;
    let names = session::tablespace_names(client).await.unwrap_or_else(|e| {
        // Names only make messages clearer; the backup does not need them.
        tracing::warn!("{e:#}");
        BTreeMap::new()
    });
    let tablespaces = tablespaces::of_backup(listed_at_start, followed.take(), &names);
    for t in tablespaces.iter().filter(|t| t.created_during_backup) {
        tracing::warn!("{}", tablespaces::created_during_warning(t));
    }
    tracing::info!(
        files = copied.stats.files,
        bytes = copied.stats.total_bytes,
        new_bytes = copied.stats.new_bytes,
        "data copied; stopping the backup"
    );

    let stop_wait = session::StopWait {
        timeout: wait,
        conninfo: job.conninfo,
        events: &ctx.events,
    };
    let stop = session::stop(client, server.version_num, &stop_wait).await?;
    let stop_time = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
    let backup_label = BackupLabel::parse(&stop.backup_label)
        .context("cannot read the backup_label returned by the server")?;
    if backup_label.start_lsn != start_lsn {
        bail!(
            "the backup_label returned by the server starts at {}, but the backup started at \
             {start_lsn}; was another backup started on this session?",
            backup_label.start_lsn
        );
    }
    let timeline = backup_label.timeline();
    let needed = wal::required_segments(timeline, start_lsn, stop.stop_lsn, seg_size);
    tracing::info!(
        stop_lsn = %stop.stop_lsn,
        segments = needed.len(),
        "waiting for the backup's WAL to be in the repository"
    );
    let wal_wait = wal::WalWait {
        storage,
        needed: &needed,
        seg_size,
        timeout: wait,
        grace: wal::ARCHIVED_ELSEWHERE_GRACE,
        events: &ctx.events,
        progress_every: wal::WAIT_PROGRESS_EVERY,
        config_path: &ctx.config_path,
    };
    let server_watch = archiver::ServerWatch { client, pgdata };
    wal::wait_for_segments(&wal_wait, &server_watch).await?;
    let (start_wal, stop_wal) = segment_names(&needed, timeline, start_lsn, seg_size);

    let mut stats = copied.stats;
    stats.duration_ms = started.elapsed().as_millis() as u64;
    Ok(Manifest {
        format_version: MANIFEST_VERSION,
        label: label.to_string(),
        system_identifier: identity.system_identifier,
        pg_major: identity.pg_major,
        block_size: identity.block_size,
        timeline,
        start_lsn,
        stop_lsn: stop.stop_lsn,
        start_wal,
        stop_wal,
        start_time: start_time.to_string(),
        stop_time,
        backup_label: stop.backup_label,
        tablespace_map: Some(stop.tablespace_map).filter(|m| !m.trim().is_empty()),
        data_checksums: server.data_checksums,
        tablespaces,
        files: copied.files,
        bad_pages: copied.bad_pages,
        stats,
    })
}

/// Writes the manifest (the backup is complete from then on) and reports it — after checking
/// that no garbage-collection sweep can have run since the blocks were chosen (the lease was
/// held, and is held with a margin) and that every referenced block garbage collection has
/// marked still exists (`retention::gc`, rule 4).
async fn store_manifest(job: &Job<'_>, manifest: Manifest) -> Result<BackupOutcome> {
    let level = job.ctx.config.repo.compression_level.0;
    job.lease
        .check(SAFETY_MARGIN)
        .await
        .context("refusing to write the manifest: garbage collection may have run meanwhile")?;
    crate::retention::gc::check_marked_blocks_exist(job.storage.as_ref(), manifest.block_ids())
        .await?;
    manifest.store(job.storage.as_ref(), level).await?;
    report_bad_pages(&manifest.bad_pages);
    job.ctx.events.emit(&Event::BackupFinished {
        label: manifest.label.clone(),
        total_bytes: manifest.stats.total_bytes,
        new_bytes: manifest.stats.new_bytes,
        stored_bytes: manifest.stats.stored_bytes,
        duration_ms: manifest.stats.duration_ms,
    });
    Ok(BackupOutcome {
        label: manifest.label,
        timeline: manifest.timeline,
        start_lsn: manifest.start_lsn,
        stop_lsn: manifest.stop_lsn,
        start_wal: manifest.start_wal,
        stop_wal: manifest.stop_wal,
        start_time: manifest.start_time,
        stop_time: manifest.stop_time,
        data_checksums: manifest.data_checksums,
        stats: manifest.stats,
        bad_pages: manifest.bad_pages,
    })
}

fn page_size() -> u64 {
    crate::pg::page_checksum::BLCKSZ as u64
}

fn segment_names(
    needed: &[WalSegmentName],
    tli: Timeline,
    start: Lsn,
    seg_size: u64,
) -> (String, String) {
    let first = WalSegmentName::from_segno(tli, start.segment_no(seg_size), seg_size);
    let first = needed.first().copied().unwrap_or(first);
    let last = needed.last().copied().unwrap_or(first);
    (first.to_string(), last.to_string())
}

async fn probe(client: &Client) -> Result<Server> {
    let version_num = conn::server_version_num(client).await?;
    session::check_version(version_num)?;
    let system_identifier = conn::system_identifier(client).await?;
    let data_checksums = conn::show(client, "data_checksums").await? == "on";
    let in_recovery: bool = client
        .query_one("select pg_is_in_recovery()", &[])
        .await
        .context("cannot ask the server whether it is in recovery")?
        .get(0);
    if in_recovery {
        bail!(
            "the server is a standby; pgward takes backups from the primary\n\
             hint: point [postgres] conninfo and pgdata at the primary"
        );
    }
    Ok(Server {
        version_num,
        system_identifier,
        data_checksums,
        data_directory: conn::data_directory(client).await,
    })
}

/// The repository, the data directory and the server must be one cluster.
fn check_same_cluster(
    identity: &RepoIdentity,
    control: &ControlFile,
    pgdata: &Path,
    server: &Server,
) -> Result<()> {
    if server.system_identifier != identity.system_identifier {
        bail!(
            "this repository belongs to database system identifier {}, but the server reached \
             through [postgres] conninfo has {}\n\
             hint: one repository holds one cluster; check [postgres] conninfo and [repo] url",
            identity.system_identifier,
            server.system_identifier
        );
    }
    if server.system_identifier != control.system_identifier {
        bail!(
            "the server reached through [postgres] conninfo has system identifier {}, but \
             [postgres] pgdata ({}) belongs to {}\n\
             hint: both must name the same cluster",
            server.system_identifier,
            pgdata.display(),
            control.system_identifier
        );
    }
    // A standby's data directory has the primary's identifier: only the path tells them apart.
    if let Some(dir) = &server.data_directory {
        let same = match (dir.canonicalize(), pgdata.canonicalize()) {
            (Ok(a), Ok(b)) => a == b,
            _ => dir == pgdata,
        };
        if !same {
            bail!(
                "the server reached through [postgres] conninfo runs on data directory {}, but \
                 [postgres] pgdata is {}\nhint: pgward copies the files itself, so both must be \
                 the same directory on this host",
                dir.display(),
                pgdata.display()
            );
        }
    }
    Ok(())
}

/// Picks the label (the start time, suffixed `-2`, `-3`, … if taken) and writes its
/// in-progress marker with put-if-absent, so two processes can never share a label.
async fn claim_label(storage: &DynStorage, start: DateTime<Utc>) -> Result<String> {
    let listing = storage
        .list(layout::BACKUPS_PREFIX)
        .await
        .with_context(|| format!("cannot list backups in {}", storage.describe()))?;
    let taken: BTreeSet<String> = listing
        .iter()
        .filter_map(|o| match layout::parse_backup_key(&o.key)? {
            BackupKey::Manifest(l) | BackupKey::InProgress(l) => Some(l),
        })
        .collect();
    let label = label::claim(storage.as_ref(), start, &taken, |label| {
        layout::in_progress_key(label.as_str())
    })
    .await?;
    Ok(label.to_string())
}

/// One warning naming the files with bad pages (a few pages each), after the backup.
fn report_bad_pages(bad: &[BadPage]) {
    if bad.is_empty() {
        return;
    }
    let mut by_file: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for b in bad {
        by_file.entry(&b.path).or_default().push(b.page);
    }
    let files: Vec<String> = by_file
        .iter()
        .map(|(path, pages)| {
            let shown: Vec<String> = pages.iter().take(5).map(|p| p.to_string()).collect();
            let more = if pages.len() > 5 {
                format!(", … {} in all", pages.len())
            } else {
                String::new()
            };
            format!("{path} (page {}{more})", shown.join(", "))
        })
        .collect();
    tracing::warn!(
        "{} page(s) failed checksum verification in {} file(s): {}; the backup completed and \
         records them in its manifest\nhint: this is corruption in the cluster itself; check \
         the storage, and restore those relations from an older backup or rebuild them",
        bad.len(),
        by_file.len(),
        files.join("; ")
    );
}
