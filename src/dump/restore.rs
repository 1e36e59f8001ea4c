//! `restore-dump --to-file`: one database's stored archive, verified, as the original
//! `pg_dump -Fc` file (for `pg_restore -j`, or to hand over).
//!
//! Which dump: the one labelled, else the newest complete dump that holds the database
//! ([`choose`], a pure function of the catalog). The object is streamed from storage through
//! [`decode_stream`] into a temp file beside the destination; only when the stream has ended
//! without error — the zstd frame whole, the sha256 and length those recorded in the manifest —
//! is the file fsynced and linked into place (`link(2)`, which refuses an existing file
//! atomically). A corrupt or truncated object fails naming the object and the database, and
//! leaves nothing at the destination.

use crate::context::Context;
use crate::fsutil::TempFile;
use crate::repo::dumps::{DatabaseDump, DumpCatalog, DumpManifest};
use crate::repo::layout;
use crate::repo::lock::{ReadKind, ReadLease, ReadPurpose, ReadRequest, Renewing};
use anyhow::{Context as _, Result, anyhow, bail};
use bytes::Bytes;
use futures::StreamExt as _;
use std::path::{Path, PathBuf};

/// What to restore, and where.
#[derive(Debug, Clone)]
pub struct RestoreDumpRequest {
    pub label: Option<String>,
    pub database: String,
    pub to_file: PathBuf,
    /// Check and say what would be written; write nothing.
    pub dry_run: bool,
}

/// A finished `--to-file`.
#[derive(Debug, Clone)]
pub struct RestoreDumpOutcome {
    pub label: String,
    pub database: String,
    pub path: PathBuf,
    pub key: String,
    pub bytes: u64,
    pub sha256: String,
    /// Nothing was written: this is what would be.
    pub dry_run: bool,
}

/// The dump and the database entry a restore of `database` reads: from `label` when given,
/// else the newest complete dump that holds it.
pub fn choose<'a>(
    catalog: &'a DumpCatalog,
    label: Option<&str>,
    database: &str,
) -> Result<(&'a DumpManifest, &'a DatabaseDump)> {
    let find = |m: &'a DumpManifest| m.databases.iter().find(|d| d.name == database);
    match label {
        Some(label) => {
            let m = (catalog.dumps.iter())
                .find(|m| m.label == label)
                .ok_or_else(|| {
                    let incomplete = catalog.incomplete.iter().any(|l| l == label);
                    anyhow!(
                        "dump {label} {}\nhint: `pgward info` lists the dumps",
                        if incomplete {
                            "is incomplete (it has no manifest: it is running, or failed)"
                        } else {
                            "does not exist"
                        }
                    )
                })?;
            let d = find(m).ok_or_else(|| {
                anyhow!(
                    "dump {label} does not hold database `{database}`; it holds: {}",
                    m.databases
                        .iter()
                        .map(|d| d.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
            Ok((m, d))
        }
        None => catalog
            .dumps
            .iter()
            .rev()
            .find_map(|m| find(m).map(|d| (m, d)))
            .ok_or_else(|| {
                anyhow!(
                    "no complete dump holds database `{database}`\nhint: `pgward info` lists \
                     the dumps; `pgward dump --db {database}` takes one"
                )
            }),
    }
}

/// Writes the chosen archive to `request.to_file`; see the module documentation.
pub async fn restore_to_file(
    ctx: &Context,
    request: &RestoreDumpRequest,
) -> Result<RestoreDumpOutcome> {
    if request.dry_run {
        return to_file(ctx, request).await;
    }
    // The dump is chosen once, under a read lease that expire and gc honour.
    let catalog = DumpCatalog::load(ctx.storage.as_ref()).await?;
    let (manifest, _) = choose(&catalog, request.label.as_deref(), &request.database)?;
    let label = manifest.label.to_string();
    let lease = read_lease(ctx, &label).await?;
    let chosen = RestoreDumpRequest {
        label: Some(label),
        ..request.clone()
    };
    let result = to_file(ctx, &chosen).await;
    if let Err(e) = lease.release().await {
        tracing::warn!("{e:#}");
    }
    result
}

/// The read lease of a restore-dump of dump `label` (see `repo::lock`, the reader protocol).
pub(super) async fn read_lease(ctx: &Context, label: &str) -> Result<Renewing<ReadLease>> {
    let request = ReadRequest {
        purpose: ReadPurpose::RestoreDump,
        kind: ReadKind::Dump,
        label: label.to_string(),
        wal_from: None,
    };
    let manifest = layout::dump_manifest_key(label);
    Ok(
        ReadLease::take_checked(ctx.storage.clone(), request, &manifest)
            .await?
            .keep_renewed(),
    )
}

async fn to_file(ctx: &Context, request: &RestoreDumpRequest) -> Result<RestoreDumpOutcome> {
    let path = &request.to_file;
    if path.symlink_metadata().is_ok() {
        bail!(
            "{} already exists; restore-dump never overwrites a file\nhint: remove it or name \
             another path",
            path.display()
        );
    }
    let catalog = DumpCatalog::load(ctx.storage.as_ref()).await?;
    let (manifest, db) = choose(&catalog, request.label.as_deref(), &request.database)?;
    let outcome = RestoreDumpOutcome {
        label: manifest.label.to_string(),
        database: db.name.clone(),
        path: absolute(path),
        key: db.object.key.clone(),
        bytes: db.object.size,
        sha256: db.object.sha256.to_hex(),
        dry_run: request.dry_run,
    };
    if request.dry_run {
        return Ok(outcome);
    }
    let what = format!(
        "the stored dump of database `{}` in dump {} ({})",
        db.name, manifest.label, db.object.key
    );
    let mut decoded = super::check::open_decoded(&ctx.storage, &db.object, &what).await?;

    let tmp = TempFile::create_beside(path)
        .with_context(|| format!("cannot create a temp file beside {}", path.display()))?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let writer = tokio::task::spawn_blocking(move || write_chunks(tmp, rx));
    let mut failure = None;
    while let Some(chunk) = decoded.next().await {
        match chunk {
            Ok(chunk) => {
                if tx.send(chunk).await.is_err() {
                    break; // the writer failed: its error says why
                }
            }
            Err(e) => {
                failure = Some(anyhow!(
                    "{what} does not read back as stored: {e}; nothing was written to {}",
                    path.display()
                ));
                break;
            }
        }
    }
    drop(tx);
    let written = writer
        .await
        .map_err(|e| anyhow!("the file writer stopped: {e}"))?;
    if let Some(e) = failure {
        // The temp file is dropped (removed) with the writer's result.
        drop(written);
        return Err(e);
    }
    let tmp = written.with_context(|| format!("cannot write {}", path.display()))?;
    let placed = tokio::task::spawn_blocking({
        let path = path.clone();
        move || tmp.link_if_absent(&path)
    })
    .await
    .map_err(|e| anyhow!("the file writer stopped: {e}"))?
    .with_context(|| format!("cannot put the restored archive at {}", path.display()))?;
    if !placed {
        bail!(
            "{} appeared while the archive was being written; it was left alone and nothing \
             was written there",
            path.display()
        );
    }
    Ok(outcome)
}

/// Writes every chunk received into `tmp`, then fsyncs it.
fn write_chunks(
    mut tmp: TempFile,
    mut rx: tokio::sync::mpsc::Receiver<Bytes>,
) -> std::io::Result<TempFile> {
    while let Some(chunk) = rx.blocking_recv() {
        tmp.write_all(&chunk, None)?;
    }
    tmp.sync()?;
    Ok(tmp)
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Sha256Digest;
    use crate::repo::dumps::{DUMP_MANIFEST_VERSION, StoredObject};
    use crate::repo::label::Label;
    use chrono::DateTime;

    fn dump(label: &str, dbs: &[&str]) -> DumpManifest {
        let t = DateTime::parse_from_rfc3339("2026-12-01T12:00:00Z")
            .unwrap()
            .to_utc();
        let object = |key: String| StoredObject {
            key,
            size: 1,
            stored_size: 1,
            sha256: Sha256Digest::of(b"x"),
        };
        DumpManifest {
            format_version: DUMP_MANIFEST_VERSION,
            label: Label::parse(label).unwrap(),
            system_identifier: 1,
            server_version: "15.18".into(),
            pg_dump_version: "15.18".into(),
            start_time: t,
            stop_time: t,
            role_passwords: true,
            globals: object(format!("dumps/{label}/globals.sql.zst")),
            databases: dbs
                .iter()
                .map(|db| DatabaseDump {
                    name: db.to_string(),
                    object: object(format!("dumps/{label}/{db}.pgdump.zst")),
                    toc_entries: 1,
                    start_time: t,
                    stop_time: t,
                })
                .collect(),
        }
    }

    #[test]
    fn the_newest_dump_holding_the_database_unless_a_label_is_given() {
        let catalog = DumpCatalog {
            dumps: vec![
                dump("20261201T010000Z", &["app", "shop"]),
                dump("20261202T010000Z", &["app"]),
            ],
            incomplete: vec![Label::parse("20261203T010000Z").unwrap()],
            markers: vec![],
        };
        let pick = |label: Option<&str>, db: &str| {
            choose(&catalog, label, db)
                .map(|(m, d)| format!("{}/{}", m.label, d.name))
                .map_err(|e| e.to_string())
        };
        assert_eq!(pick(None, "app").unwrap(), "20261202T010000Z/app");
        assert_eq!(pick(None, "shop").unwrap(), "20261201T010000Z/shop");
        assert_eq!(
            pick(Some("20261201T010000Z"), "app").unwrap(),
            "20261201T010000Z/app"
        );
        let e = pick(None, "nope").unwrap_err();
        assert!(e.contains("no complete dump holds database `nope`"), "{e}");
        let e = pick(Some("20261202T010000Z"), "shop").unwrap_err();
        assert!(
            e.contains("does not hold database `shop`; it holds: app"),
            "{e}"
        );
        let e = pick(Some("20261203T010000Z"), "app").unwrap_err();
        assert!(e.contains("is incomplete"), "{e}");
        let e = pick(Some("20261209T010000Z"), "app").unwrap_err();
        assert!(e.contains("does not exist"), "{e}");
    }
}
