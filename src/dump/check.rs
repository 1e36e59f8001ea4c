//! Reading a stored dump object back before the dump is called complete.
//!
//! Every object is downloaded again ([`Storage::get_stream`]) and decoded with
//! [`decode_stream`], which checks the zstd frame and then the sha256 and length of the
//! original bytes against what was recorded while storing. A database archive is also fed to
//! `pg_restore --list` on its standard input, which must read its table of contents and exit
//! 0; the number of entries goes into the manifest. pg_restore stops reading once it has the
//! table of contents (the data follows it), so the rest of the stream is still decoded to the
//! end: the sha256 covers every byte, whatever pg_restore needed.
//!
//! Memory: the decoder's few chunks; pg_restore's listing is counted line by line.

use super::child::{self, describe_status};
use crate::codec::stream::decode_stream;
use crate::repo::dumps::StoredObject;
use crate::storage::DynStorage;
use anyhow::{Context as _, Result, anyhow, bail};
use futures::StreamExt;
use std::io::ErrorKind;
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};

/// The original bytes of a stored object, verified as they are read (see [`decode_stream`]:
/// the stream ends with an error at the first sign of damage, or at the end if the sha256 or
/// length differ). `what` names the object in the error.
pub async fn open_decoded(
    storage: &DynStorage,
    object: &StoredObject,
    what: &str,
) -> Result<crate::storage::ByteStream> {
    let stored = storage
        .get_stream(&object.key, 0)
        .await
        .with_context(|| format!("cannot read {what}"))?;
    Ok(decode_stream(stored, object.sha256, object.size))
}

/// Decodes `object` from storage to its end, verifying it; `sink` sees every chunk, and
/// answers whether it still wants more.
async fn read_back(
    storage: &DynStorage,
    object: &StoredObject,
    mut sink: impl AsyncFnMut(&[u8]) -> bool,
) -> Result<()> {
    let mut decoded = open_decoded(storage, object, &object.key).await?;
    let mut wanted = true;
    while let Some(chunk) = decoded.next().await {
        let chunk =
            chunk.map_err(|e| anyhow!("{} does not read back as stored: {e}", object.key))?;
        if wanted {
            wanted = sink(&chunk).await;
        }
    }
    Ok(())
}

/// Checks a stored object's bytes (globals.sql).
pub async fn check_object(storage: &DynStorage, object: &StoredObject) -> Result<()> {
    read_back(storage, object, async |_| false).await
}

/// Checks a stored `pg_dump -Fc` archive and returns the number of entries in its table of
/// contents.
pub async fn check_archive(
    storage: &DynStorage,
    object: &StoredObject,
    pg_restore_list: std::process::Command,
) -> Result<u64> {
    let mut cmd = tokio::process::Command::from(pg_restore_list);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut proc = cmd.spawn().context("cannot start pg_restore --list")?;
    let mut stdin = proc
        .stdin
        .take()
        .context("no pipe for pg_restore's input")?;
    let stdout = proc
        .stdout
        .take()
        .context("no pipe for pg_restore's output")?;
    let stderr = tokio::spawn(child::tail_lines(
        proc.stderr
            .take()
            .context("no pipe for pg_restore's errors")?,
    ));
    let entries = tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        let mut n = 0u64;
        while let Ok(Some(line)) = lines.next_line().await {
            // Comment lines start with `;`; every other non-empty line is one TOC entry.
            if !line.trim().is_empty() && !line.starts_with(';') {
                n += 1;
            }
        }
        n
    });
    let mut write_error = None;
    read_back(storage, object, async |chunk| {
        match stdin.write_all(chunk).await {
            Ok(()) => true,
            // pg_restore has its table of contents and stopped reading.
            Err(e) if e.kind() == ErrorKind::BrokenPipe => false,
            Err(e) => {
                write_error = Some(e);
                false
            }
        }
    })
    .await?;
    drop(stdin);
    if let Some(e) = write_error {
        bail!("cannot feed {} to pg_restore --list: {e}", object.key);
    }
    let status = proc.wait().await.context("cannot wait for pg_restore")?;
    let said = stderr.await.unwrap_or_default();
    let entries = entries.await.unwrap_or(0);
    if !status.success() {
        bail!(
            "pg_restore --list cannot read {} ({}): {}",
            object.key,
            describe_status(&status),
            said.trim()
        );
    }
    // Zero is right for an empty database (PostgreSQL 15 dumps nothing for it, not even the
    // public schema); what proves the archive is pg_restore reading it and exiting 0.
    Ok(entries)
}
