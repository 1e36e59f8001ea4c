//! `restore-dump --to-db TARGET [--create]`: one database's stored dump, streamed verified into
//! `pg_restore --exit-on-error --single-transaction` against the configured server.
//!
//! The invariant: **a restore that fails commits nothing.** The whole archive is restored in
//! one transaction, and the last decoded chunk is held back until the decoder has checked the
//! frame, the sha256 and the length at the end of the stream: pg_restore can only reach its
//! COMMIT once the object is known good. A corrupt or truncated object (or a pg_restore error)
//! kills pg_restore, whose transaction the server then rolls back; a TARGET created by this
//! restore (`--create`) is dropped again. So TARGET is either the complete dump or as it was,
//! and the error says which.
//!
//! `--globals` applies the dump's `globals.sql` first ([`super::globals`]), before TARGET is
//! created; roles and tablespaces are cluster-wide, outside the restore's transaction.
//!
//! Only TARGET is touched. It must be empty (no relations, functions or schemas of its own) or,
//! with `--create`, not exist: restoring over existing objects would mix two databases. With
//! `--clean` a non-empty TARGET is accepted: pg_restore drops each object the dump holds before
//! creating it (`--clean --if-exists`), in the same one transaction; objects the dump does not
//! hold stay.

use super::child::{self, describe_status};
use super::programs::{Programs, RestoreOptions};
use super::restore::choose;
use crate::context::Context;
use crate::pg::binaries::PgBinaries;
use crate::pg::conn;
use crate::repo::dumps::DumpCatalog;
use anyhow::{Context as _, Result, anyhow, bail};
use futures::StreamExt as _;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncWriteExt as _;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What to restore into which database.
#[derive(Debug, Clone)]
pub struct RestoreToDbRequest {
    pub label: Option<String>,
    pub database: String,
    pub target: String,
    /// Create TARGET (it must not exist).
    pub create: bool,
    /// Objects owned by the restoring user instead of the dumped owners; drop what the
    /// archive holds before creating it (a non-empty TARGET is then allowed).
    pub options: RestoreOptions,
    /// Apply the dump's globals.sql (roles, tablespaces) first.
    pub globals: bool,
    /// Check and say what would be done; change nothing.
    pub dry_run: bool,
}

#[derive(Debug, Clone)]
pub struct RestoreToDbOutcome {
    pub label: String,
    pub database: String,
    pub target: String,
    pub key: String,
    pub bytes: u64,
    pub created: bool,
    /// Nothing was done: this is what would be.
    pub dry_run: bool,
}

pub async fn restore_to_db(ctx: &Context, req: &RestoreToDbRequest) -> Result<RestoreToDbOutcome> {
    if req.dry_run {
        return to_db(ctx, req).await;
    }
    // The dump is chosen once, under a read lease that expire and gc honour.
    let catalog = DumpCatalog::load(ctx.storage.as_ref()).await?;
    let (manifest, _) = choose(&catalog, req.label.as_deref(), &req.database)?;
    let label = manifest.label.to_string();
    let lease = super::restore::read_lease(ctx, &label).await?;
    let chosen = RestoreToDbRequest {
        label: Some(label),
        ..req.clone()
    };
    let result = to_db(ctx, &chosen).await;
    if let Err(e) = lease.release().await {
        tracing::warn!("{e:#}");
    }
    result
}

async fn to_db(ctx: &Context, req: &RestoreToDbRequest) -> Result<RestoreToDbOutcome> {
    let catalog = DumpCatalog::load(ctx.storage.as_ref()).await?;
    let (manifest, db) = choose(&catalog, req.label.as_deref(), &req.database)?;
    let conninfo = ctx
        .config
        .postgres
        .conninfo
        .as_deref()
        .context("[postgres] conninfo is not set in the configuration")?;
    let client = conn::connect(conninfo, CONNECT_TIMEOUT).await?;
    let exists = client
        .query_opt(
            "select 1 from pg_database where datname = $1",
            &[&req.target],
        )
        .await
        .context("cannot list the server's databases")?
        .is_some();
    let target = &req.target;
    match (req.create, exists) {
        (true, true) => bail!(
            "database `{target}` already exists; --create makes a new one\nhint: name a new \
             database, or leave --create out to restore into an existing empty one"
        ),
        (false, false) => {
            bail!("database `{target}` does not exist\nhint: add --create to create it")
        }
        (false, true) if req.options.clean => {}
        (false, true) => check_empty(conninfo, target).await?,
        (true, false) => {}
    }
    let bins = PgBinaries::locate(ctx.config.postgres.bindir.as_deref())?;
    let programs = Programs::new(bins, conninfo)?;
    let outcome = RestoreToDbOutcome {
        label: manifest.label.to_string(),
        database: db.name.clone(),
        target: target.clone(),
        key: db.object.key.clone(),
        bytes: db.object.size,
        created: req.create,
        dry_run: req.dry_run,
    };
    if req.dry_run {
        return Ok(outcome);
    }
    // Before TARGET is created, so a failure here leaves nothing behind but the globals.
    if req.globals {
        let existed = super::globals::apply_globals(
            &ctx.storage,
            manifest,
            &programs,
            req.options.no_tablespaces,
        )
        .await
        .with_context(|| format!("nothing was restored into database `{target}`"))?;
        tracing::info!(
            already_existing = existed,
            "globals.sql applied (roles or tablespaces that already existed were left as they were)"
        );
    }
    if req.create {
        client
            .batch_execute(&format!(
                "create database {} template template0",
                conn::quote_ident(target)
            ))
            .await
            .with_context(|| format!("cannot create database `{target}`"))?;
    }
    let what = format!(
        "the stored dump of database `{}` in dump {} ({})",
        db.name, manifest.label, db.object.key
    );
    let restore = programs.pg_restore_into(target, req.options);
    let result = stream_into(ctx, restore, db, target, &what).await;
    if let Err(e) = result {
        let left = if req.create {
            // The killed pg_restore's session may still be ending: FORCE (PostgreSQL 13+)
            // does not wait for it.
            let force = if conn::server_version_num(&client).await.unwrap_or(0) >= 130000 {
                " with (force)"
            } else {
                ""
            };
            match client
                .batch_execute(&format!(
                    "drop database {}{force}",
                    conn::quote_ident(target)
                ))
                .await
            {
                Ok(()) => format!("database `{target}`, created for this restore, was dropped"),
                Err(d) => format!(
                    "database `{target}` was created for this restore and holds nothing \
                     committed, but could not be dropped ({d}); drop it by hand"
                ),
            }
        } else {
            format!(
                "database `{target}` is as it was: the restore's one transaction was rolled back"
            )
        };
        let globals = if req.globals {
            " (the roles and tablespaces of globals.sql were applied and stay)"
        } else {
            ""
        };
        return Err(anyhow!("{e:#}; {left}{globals}"));
    }
    Ok(outcome)
}

/// Refuses a TARGET that holds objects of its own.
async fn check_empty(conninfo: &str, target: &str) -> Result<()> {
    let mut config = conn::parse_conninfo(conninfo)?;
    config.dbname(target);
    config.connect_timeout(CONNECT_TIMEOUT);
    let (client, connection) =
        tokio::time::timeout(CONNECT_TIMEOUT, config.connect(tokio_postgres::NoTls))
            .await
            .map_err(|_| anyhow!("cannot connect to database `{target}`: no answer"))?
            .with_context(|| format!("cannot connect to database `{target}`"))?;
    tokio::spawn(connection);
    let user_schemas = "n.nspname not in ('pg_catalog', 'information_schema') \
                        and n.nspname !~ '^pg_toast' and n.nspname !~ '^pg_temp'";
    let row = client
        .query_one(
            &format!(
                "select (select count(*) from pg_class c join pg_namespace n \
                         on n.oid = c.relnamespace where {user_schemas}) \
                      + (select count(*) from pg_proc p join pg_namespace n \
                         on n.oid = p.pronamespace where {user_schemas}) \
                      + (select count(*) from pg_namespace n where {user_schemas} \
                         and n.nspname <> 'public') \
                      + (select count(*) from pg_largeobject_metadata)"
            ),
            &[],
        )
        .await
        .with_context(|| format!("cannot look into database `{target}`"))?;
    let objects: i64 = row.get(0);
    if objects > 0 {
        bail!(
            "database `{target}` is not empty ({objects} relations, functions, schemas or large \
             objects of its own); restore-dump does not restore over existing objects unless \
             told to, and nothing was changed\nhint: restore into a new database with \
             --create, or add --clean to drop and recreate the objects the dump holds"
        );
    }
    Ok(())
}

/// Decodes the object into pg_restore, holding the last chunk back until the object checked
/// out; on any failure pg_restore is killed before it can commit.
async fn stream_into(
    ctx: &Context,
    pg_restore: std::process::Command,
    db: &crate::repo::dumps::DatabaseDump,
    target: &str,
    what: &str,
) -> Result<()> {
    let mut decoded = super::check::open_decoded(&ctx.storage, &db.object, what).await?;
    let mut cmd = tokio::process::Command::from(pg_restore);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut proc = cmd.spawn().context("cannot start pg_restore")?;
    let mut stdin = proc
        .stdin
        .take()
        .context("no pipe for pg_restore's input")?;
    let stderr = tokio::spawn(child::tail_lines(
        proc.stderr
            .take()
            .context("no pipe for pg_restore's errors")?,
    ));
    let mut held: Option<bytes::Bytes> = None;
    let mut fed = Ok(());
    while let Some(chunk) = decoded.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                let _ = proc.kill().await;
                bail!("{what} does not read back as stored: {e}");
            }
        };
        if let Some(previous) = held.replace(chunk)
            && let Err(e) = stdin.write_all(&previous).await
        {
            fed = Err(e);
            break;
        }
    }
    if fed.is_ok()
        && let Some(last) = held.take()
    {
        fed = stdin.write_all(&last).await;
    }
    drop(stdin);
    let status = proc.wait().await.context("cannot wait for pg_restore")?;
    let said = stderr.await.unwrap_or_default();
    if !status.success() {
        let fed = fed
            .err()
            .map(|e| format!(" (feeding it stopped: {e})"))
            .unwrap_or_default();
        bail!(
            "pg_restore into database `{target}` failed ({}): {}{fed}",
            describe_status(&status),
            said.trim()
        );
    }
    // pg_restore exits 0 only after its COMMIT, which needs the archive's last bytes: it read
    // everything, whatever a write reported.
    Ok(())
}
