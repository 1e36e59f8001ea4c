//! Logical backups (DESIGN.md, "Logical dumps"): `pg_dump -Fc` of each database and
//! `pg_dumpall --globals-only`, streamed into the repository and checked before the dump is
//! called complete.
//!
//! [`run_dump`] picks the databases (every one that allows connections, templates excepted, or
//! exactly those named — an unknown name refuses the dump before anything is stored), refuses a
//! pg_dump older than the server, claims a label (`dumps/<label>/in-progress.json`, created
//! put-if-absent), then stores `globals.sql.zst` and, `dump.jobs` at a time, each database's
//! archive, reads each object back, and writes `manifest.json.zst` last.
//!
//! Dataflow of one database, in bounded memory (no temp file):
//! ```text
//! pg_dump stdout ─(256 KiB reads)─▶ child ─▶ encode_stream (zstd on its own threads, sha256
//!   of the raw bytes) ─▶ put_stream (2 MiB parts locally, 8 MiB on S3; ≤ 2 in flight)
//! then: get_stream ─▶ decode_stream (sha256 + length checked) ─▶ pg_restore --list (stdin)
//! ```
//! Memory per database: about 3 parts in put_stream (6 MiB locally, 24 MiB on S3) plus a few
//! 1 MiB chunks in the codec and zstd's jobs and window, whatever the database's size;
//! `dump.jobs` multiplies it.
//!
//! Error rule: **pg_dump's own exit status decides** ([`child`]): a pg_dump that fails or is
//! killed ends its stream with an error, so its object is never made visible, and the whole
//! dump fails with pg_dump's last lines of standard error. On any failure (or cancellation)
//! no manifest is written and every object already stored under `dumps/<label>/` is deleted,
//! the in-progress marker last; the error says what was removed (or what could not be, which
//! without a manifest is not a dump and is listed by `info` as incomplete).
//!
//! **No repository lease.** The `backup` lease keeps two base backups (and, later, garbage
//! collection of blocks) apart; a dump shares nothing with them: it writes only new keys under
//! its own label, which the in-progress marker claims uniquely, and reads no block or WAL. So a
//! dump runs beside a base backup (the usual nightly pair) and beside another dump. What must
//! not race a running dump is expiry of dumps, which will skip labels with an in-progress
//! marker.

pub mod check;
pub mod child;
pub mod globals;
pub mod programs;
pub mod restore;
pub mod restore_db;

use crate::codec::stream::encode_stream;
use crate::context::Context;
use crate::events::{Event, Events, PROGRESS_EVERY};
use crate::pg::binaries::PgBinaries;
use crate::pg::conn;
use crate::repo::dumps::{DUMP_MANIFEST_VERSION, DatabaseDump, DumpManifest, StoredObject};
use crate::repo::identity::RepoIdentity;
use crate::repo::label::{self, Label};
use crate::repo::layout::{self, DumpKey};
use crate::storage::{self, DynStorage, put_stream};
use anyhow::{Context as _, Result, anyhow, bail};
use chrono::{DateTime, SubsecRound as _, Utc};
use futures::{StreamExt as _, TryStreamExt as _};
use programs::Programs;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long connecting to the server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a producer may take to exit once its output was abandoned.
const EXIT_GRACE: Duration = Duration::from_secs(5);

/// What to dump.
#[derive(Debug, Clone, Default)]
pub struct DumpRequest {
    /// Exactly these databases; empty for every database that allows connections.
    pub databases: Vec<String>,
}

/// A complete dump: its manifest, and how long it took.
#[derive(Debug, Clone)]
pub struct DumpOutcome {
    pub manifest: DumpManifest,
    pub duration_ms: u64,
}

/// A dump stopped by its context's cancellation token.
#[derive(Debug, thiserror::Error)]
#[error("the dump was cancelled before it completed")]
pub struct Cancelled;

/// Dumps the server of `[postgres] conninfo` into the repository; see the module
/// documentation. Reports through `ctx.events` and stops when `ctx.cancel` fires.
pub async fn run_dump(ctx: &Context, request: &DumpRequest) -> Result<DumpOutcome> {
    let claimed = std::sync::Mutex::new(None);
    let result = dump(ctx, request, &claimed).await;
    if let Err(e) = &result {
        ctx.events.emit(&Event::DumpFailed {
            label: claimed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .map(|l: &Label| l.to_string()),
            error: format!("{e:#}"),
            cancelled: e.chain().any(|c| c.is::<Cancelled>()),
        });
    }
    result
}

/// What every database's dump needs, gathered before the label is claimed.
struct Job<'a> {
    ctx: &'a Context,
    storage: &'a DynStorage,
    programs: Programs,
    label: Label,
    /// zstd threads per object.
    workers: u32,
    progress: Arc<Progress>,
}

/// What the progress events report, counted as the work goes.
#[derive(Debug, Default)]
struct Progress {
    databases_done: AtomicU64,
    bytes_done: AtomicU64,
}

/// Emits [`Event::DumpProgress`] every [`PROGRESS_EVERY`] until dropped.
struct Reporter(tokio::task::JoinHandle<()>);

impl Reporter {
    fn start(events: Events, label: &Label, total: u64, progress: Arc<Progress>) -> Reporter {
        let label = label.to_string();
        let started = Instant::now();
        Reporter(tokio::spawn(async move {
            let mut tick = tokio::time::interval(PROGRESS_EVERY);
            tick.tick().await;
            loop {
                tick.tick().await;
                events.emit(&Event::DumpProgress {
                    label: label.clone(),
                    databases_done: progress.databases_done.load(Ordering::Relaxed),
                    databases_total: total,
                    bytes_done: progress.bytes_done.load(Ordering::Relaxed),
                    elapsed_ms: started.elapsed().as_millis() as u64,
                });
            }
        }))
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn dump(
    ctx: &Context,
    request: &DumpRequest,
    claimed: &std::sync::Mutex<Option<Label>>,
) -> Result<DumpOutcome> {
    let started = Instant::now();
    let storage = &ctx.storage;
    let identity = RepoIdentity::require(storage.as_ref()).await?;
    let conninfo = ctx.config.postgres.conninfo.as_deref().context(
        "[postgres] conninfo is not set in the configuration\n\
         hint: add e.g. conninfo = \"host=/var/run/postgresql port=5432 user=postgres dbname=postgres\"",
    )?;
    let client = conn::connect(conninfo, CONNECT_TIMEOUT).await?;
    let system_identifier = conn::system_identifier(&client).await?;
    if system_identifier != identity.system_identifier {
        bail!(
            "this repository belongs to database system identifier {}, but the server reached \
             through [postgres] conninfo has {system_identifier}; nothing was dumped\n\
             hint: one repository holds one cluster; check [postgres] conninfo and [repo] url",
            identity.system_identifier
        );
    }
    let server_version = server_version(&client).await?;
    let databases = choose_databases(&client, &request.databases).await?;
    drop(client);

    let bins = PgBinaries::locate(ctx.config.postgres.bindir.as_deref())?;
    let programs = Programs::new(bins, conninfo)?;
    let pg_dump_version = programs.check_versions(&server_version)?;

    let start_time = Utc::now().trunc_subsecs(0);
    let label = claim_label(storage, start_time).await?;
    *claimed.lock().unwrap_or_else(|e| e.into_inner()) = Some(label.clone());
    let jobs = ctx.config.dump.jobs.max(1);
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let job = Job {
        ctx,
        storage,
        programs,
        label: label.clone(),
        workers: (cores / jobs).clamp(1, 4) as u32,
        progress: Arc::new(Progress::default()),
    };
    ctx.events.emit(&Event::DumpStarted {
        label: label.to_string(),
        databases: databases.clone(),
    });

    let work = async {
        let (globals, dumped) = store_all(&job, &databases, jobs).await?;
        Ok::<_, anyhow::Error>(DumpManifest {
            format_version: DUMP_MANIFEST_VERSION,
            label: label.clone(),
            system_identifier,
            server_version: server_version.clone(),
            pg_dump_version: pg_dump_version.clone(),
            start_time,
            stop_time: Utc::now().trunc_subsecs(0),
            role_passwords: ctx.config.dump.role_passwords,
            globals,
            databases: dumped,
        })
    };
    let reporter = Reporter::start(
        ctx.events.clone(),
        &label,
        databases.len() as u64,
        job.progress.clone(),
    );
    // Cancelling drops the work: its pg_dumps are killed and unfinished uploads aborted.
    let result = tokio::select! {
        biased;
        () = ctx.cancel.cancelled() => Err(anyhow!(Cancelled)),
        done = work => done,
    };
    drop(reporter);
    // Once every object is stored and checked, writing the manifest is not interrupted.
    let result = match result {
        Ok(manifest) => manifest
            .store(storage.as_ref(), ctx.config.repo.compression_level.0)
            .await
            .map(|()| manifest),
        Err(e) => Err(e),
    };
    match result {
        Ok(manifest) => {
            let marker = layout::dump_in_progress_key(label.as_str());
            if let Err(e) = storage.delete(&marker).await {
                // The manifest makes the dump complete; a leftover marker only looks busy.
                tracing::warn!("dump {label} is complete, but {marker} could not be removed: {e}");
            }
            let duration_ms = started.elapsed().as_millis() as u64;
            ctx.events.emit(&Event::DumpFinished {
                label: label.to_string(),
                databases: manifest.databases.len() as u64,
                bytes: manifest.size(),
                stored_bytes: manifest.stored_size(),
                duration_ms,
            });
            Ok(DumpOutcome {
                manifest,
                duration_ms,
            })
        }
        Err(e) => {
            let cleanup = remove_label(storage, &label).await;
            Err(e.context(format!(
                "dump {label} failed: no manifest was written; {cleanup}"
            )))
        }
    }
}

/// `globals.sql.zst`, then the databases, `jobs` at a time (in name order in the result).
async fn store_all(
    job: &Job<'_>,
    databases: &[String],
    jobs: usize,
) -> Result<(StoredObject, Vec<DatabaseDump>)> {
    let globals = store_globals(job).await?;
    // The first failure drops the others, which kills their pg_dumps.
    let mut dumped: Vec<DatabaseDump> = futures::stream::iter(databases)
        .map(|db| dump_database(job, db))
        .buffer_unordered(jobs)
        .try_collect()
        .await?;
    dumped.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((globals, dumped))
}

async fn store_globals(job: &Job<'_>) -> Result<StoredObject> {
    let key = layout::dump_globals_key(job.label.as_str());
    let cmd = job
        .programs
        .pg_dumpall_globals(job.ctx.config.dump.role_passwords);
    let object = store_output(job, cmd, "pg_dumpall --globals-only", key).await?;
    check::check_object(job.storage, &object).await?;
    Ok(object)
}

async fn dump_database(job: &Job<'_>, db: &str) -> Result<DatabaseDump> {
    let start_time = Utc::now().trunc_subsecs(3);
    let started = Instant::now();
    let key = layout::dump_database_key(job.label.as_str(), db);
    let cmd = job
        .programs
        .pg_dump(db, job.ctx.config.dump.lock_wait_timeout);
    let what = format!("pg_dump of database `{db}`");
    let object = store_output(job, cmd, &what, key).await?;
    let toc_entries = check::check_archive(job.storage, &object, job.programs.pg_restore_list())
        .await
        .with_context(|| format!("the stored dump of database `{db}` does not check out"))?;
    job.progress.databases_done.fetch_add(1, Ordering::Relaxed);
    job.ctx.events.emit(&Event::DumpDatabaseStored {
        label: job.label.to_string(),
        database: db.to_string(),
        bytes: object.size,
        stored_bytes: object.stored_size,
        ms: started.elapsed().as_millis() as u64,
    });
    Ok(DatabaseDump {
        name: db.to_string(),
        object,
        toc_entries,
        start_time,
        stop_time: Utc::now().trunc_subsecs(3),
    })
}

/// Streams `cmd`'s standard output through zstd into `key`. The program's exit status
/// decides: a failed program fails this with its own words, whatever storage said.
async fn store_output(
    job: &Job<'_>,
    cmd: std::process::Command,
    what: &str,
    key: String,
) -> Result<StoredObject> {
    let producer = child::spawn(cmd, what)?;
    let level = job.ctx.config.repo.compression_level.0;
    let progress = job.progress.clone();
    let counted = producer
        .output
        .inspect(move |chunk| {
            if let Ok(c) = chunk {
                progress
                    .bytes_done
                    .fetch_add(c.len() as u64, Ordering::Relaxed);
            }
        })
        .boxed();
    let (compressed, summary) = encode_stream(counted, level, job.workers);
    let stored = put_stream(job.storage, &key, compressed).await;
    // Known once the output was read to its end; a stream given up midway (a storage
    // failure) dropped the program, which is then killed and gives no exit.
    let exit = if stored.is_ok() {
        producer.exit.await.ok()
    } else {
        tokio::time::timeout(EXIT_GRACE, producer.exit)
            .await
            .ok()
            .and_then(Result::ok)
    };
    if let Some(exit) = &exit
        && !exit.success()
    {
        bail!("{}", exit.failure(what));
    }
    let stored_size = stored.with_context(|| format!("cannot store {key} ({what})"))?;
    if exit.is_none() {
        bail!("{what}: its output was stored under {key} but its exit status is unknown");
    }
    let summary = summary
        .await
        .map_err(|_| anyhow!("{what}: the compressor stopped without a summary"))?
        .with_context(|| format!("cannot compress {what}"))?;
    Ok(StoredObject {
        key,
        size: summary.raw_len,
        stored_size,
        sha256: summary.sha256,
    })
}

/// `server_version` without the distribution's suffix (`15.18 (Debian …)` gives `15.18`).
async fn server_version(client: &tokio_postgres::Client) -> Result<String> {
    let text = conn::show(client, "server_version").await?;
    Ok(text
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string())
}

/// The databases to dump: those named (each must exist), else every database that allows
/// connections and is not a template. Sorted, without repeats.
async fn choose_databases(
    client: &tokio_postgres::Client,
    named: &[String],
) -> Result<Vec<String>> {
    let rows = client
        .query(
            "select datname, datallowconn and not datistemplate from pg_database order by datname",
            &[],
        )
        .await
        .context("cannot list the server's databases")?;
    let all: Vec<(String, bool)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let dumpable: Vec<String> = all
        .iter()
        .filter(|(_, ok)| *ok)
        .map(|(n, _)| n.clone())
        .collect();
    if named.is_empty() {
        return Ok(dumpable);
    }
    let named: BTreeSet<&String> = named.iter().collect();
    let missing: Vec<String> = named
        .iter()
        .filter(|n| !all.iter().any(|(a, _)| a == **n))
        .map(|n| format!("`{n}`"))
        .collect();
    if !missing.is_empty() {
        bail!(
            "{} {} not exist on the server; nothing was dumped\nhint: the databases that \
             `pgward dump` without --db dumps are: {}",
            if missing.len() == 1 {
                format!("database {}", missing[0])
            } else {
                format!("databases {}", missing.join(", "))
            },
            if missing.len() == 1 { "does" } else { "do" },
            dumpable.join(", ")
        );
    }
    Ok(named.into_iter().cloned().collect())
}

/// Claims the label: the start time, suffixed `-2`, `-3`, … if taken, with its in-progress
/// marker created put-if-absent.
async fn claim_label(storage: &DynStorage, start: DateTime<Utc>) -> Result<Label> {
    let listing = storage
        .list(layout::DUMPS_PREFIX)
        .await
        .with_context(|| format!("cannot list dumps in {}", storage.describe()))?;
    let taken: BTreeSet<String> = listing
        .iter()
        .filter_map(|o| match layout::parse_dump_key(&o.key)? {
            DumpKey::Database { label, .. }
            | DumpKey::Globals(label)
            | DumpKey::Manifest(label)
            | DumpKey::InProgress(label) => Some(label),
        })
        .collect();
    label::claim(storage.as_ref(), start, &taken, |label| {
        layout::dump_in_progress_key(label.as_str())
    })
    .await
}

/// Deletes everything under `dumps/<label>/`, the in-progress marker last, and says what it
/// did, for the error of a failed dump.
async fn remove_label(storage: &DynStorage, label: &Label) -> String {
    let prefix = layout::dump_prefix(label.as_str());
    let marker = layout::dump_in_progress_key(label.as_str());
    let outcome = async {
        let listing = storage.list(&prefix).await?;
        let mut removed = 0usize;
        for obj in listing.iter().filter(|o| o.key != marker) {
            storage.delete(&obj.key).await?;
            removed += 1;
        }
        storage.delete(&marker).await?;
        Ok::<_, storage::StorageError>(removed)
    }
    .await;
    match outcome {
        Ok(0) => format!("nothing was left under {prefix}"),
        Ok(n) => format!(
            "the {} it had stored under {prefix} {} removed",
            crate::units::count(n as u64, "object", "objects"),
            if n == 1 { "was" } else { "were" }
        ),
        Err(e) => format!(
            "what it stored under {prefix} could not all be removed ({e}); without a manifest \
             it is not a dump (`pgward info` lists it as incomplete) and can be deleted"
        ),
    }
}
