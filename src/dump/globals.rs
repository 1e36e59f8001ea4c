//! `restore-dump --globals`: a dump's `globals.sql` (roles, tablespaces) applied to the server
//! before the database is restored, so that the owners and grantees the archive names exist.
//!
//! The script is read back and verified whole before any of it runs (it is small: roles and
//! tablespaces), then fed to `psql` which goes on after errors. A role or tablespace that
//! already exists is expected — the server's own superuser always does — and is not an error;
//! any other error fails the restore, quoting psql. The globals are not part of the database
//! restore's transaction: roles created here stay if that restore then fails (the error of
//! `restore-dump` says so).

use super::check::open_decoded;
use super::child;
use super::programs::Programs;
use crate::repo::dumps::DumpManifest;
use crate::storage::DynStorage;
use anyhow::{Context as _, Result, anyhow, bail};
use bytes::BytesMut;
use futures::StreamExt as _;
use std::process::Stdio;
use tokio::io::AsyncWriteExt as _;

/// globals.sql larger than this is refused (it would not be roles and tablespaces).
const GLOBALS_MAX: u64 = 64 << 20;

/// Applies the dump's globals; returns how many "already exists" errors were passed over.
/// With `skip_tablespaces` the script's tablespace statements are left out (see
/// [`without_tablespaces`]).
pub async fn apply_globals(
    storage: &DynStorage,
    manifest: &DumpManifest,
    programs: &Programs,
    skip_tablespaces: bool,
) -> Result<usize> {
    let object = &manifest.globals;
    if object.size > GLOBALS_MAX {
        bail!(
            "{} holds {} bytes; globals.sql of roles and tablespaces is never that large",
            object.key,
            object.size
        );
    }
    let what = format!("globals.sql of dump {} ({})", manifest.label, object.key);
    let mut decoded = open_decoded(storage, object, &what).await?;
    let mut script = BytesMut::with_capacity(object.size as usize);
    while let Some(chunk) = decoded.next().await {
        let chunk = chunk.map_err(|e| anyhow!("{what} does not read back as stored: {e}"))?;
        script.extend_from_slice(&chunk);
    }
    let script = if skip_tablespaces {
        without_tablespaces(&script)
    } else {
        script.to_vec()
    };
    let mut cmd = tokio::process::Command::from(programs.psql_script());
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut proc = cmd.spawn().context("cannot start psql for globals.sql")?;
    let mut stdin = proc.stdin.take().context("no pipe for psql's input")?;
    let stderr = proc.stderr.take().context("no pipe for psql's errors")?;
    // Every error line matters here, not only the last few: read them all.
    let errors = tokio::spawn(async move {
        use tokio::io::AsyncBufReadExt as _;
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        let mut all = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            all.push(line);
        }
        all
    });
    let fed = stdin.write_all(&script).await;
    drop(stdin);
    let status = proc.wait().await.context("cannot wait for psql")?;
    let lines = errors.await.unwrap_or_default();
    if !status.success() {
        bail!(
            "psql applying {what} failed ({}): {}",
            child::describe_status(&status),
            lines.join("\n")
        );
    }
    fed.with_context(|| format!("cannot feed {what} to psql"))?;
    let (expected, other): (Vec<&String>, Vec<&String>) = lines
        .iter()
        .filter(|l| l.contains("ERROR:"))
        .partition(|l| already_exists(l));
    if !other.is_empty() {
        bail!(
            "applying {what} failed: {}",
            other
                .iter()
                .map(|l| l.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    Ok(expected.len())
}

/// The script without its tablespace statements. `pg_dumpall --globals-only` writes each
/// statement on one line; a drill's scratch server leaves them out, because `CREATE
/// TABLESPACE ... LOCATION` names a directory of the source's host (restored objects then go
/// into the default tablespace, `pg_restore --no-tablespaces`).
pub fn without_tablespaces(script: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(script.len());
    for line in script.split_inclusive(|&b| b == b'\n') {
        let text = String::from_utf8_lossy(line).to_ascii_uppercase();
        let t = text.trim_start();
        let about_tablespace = t.starts_with("CREATE TABLESPACE ")
            || t.starts_with("ALTER TABLESPACE ")
            || t.starts_with("COMMENT ON TABLESPACE ")
            || t.starts_with("SECURITY LABEL ON TABLESPACE ")
            || ((t.starts_with("GRANT ") || t.starts_with("REVOKE "))
                && t.contains(" ON TABLESPACE "));
        if !about_tablespace {
            out.extend_from_slice(line);
        }
    }
    out
}

/// `psql:<stdin>:12: ERROR:  role "postgres" already exists` (or a tablespace).
fn already_exists(line: &str) -> bool {
    let Some((_, message)) = line.split_once("ERROR:") else {
        return false;
    };
    let message = message.trim();
    (message.starts_with("role \"") || message.starts_with("tablespace \""))
        && message.ends_with("\" already exists")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tablespace_statements_are_left_out() {
        let script = b"CREATE ROLE app;\nALTER ROLE app WITH LOGIN;\n\
            CREATE TABLESPACE fast OWNER postgres LOCATION '/srv/fast';\n\
            ALTER TABLESPACE fast SET (random_page_cost='1.1');\n\
            GRANT CREATE ON TABLESPACE fast TO app;\nGRANT app TO postgres;\n";
        let kept = String::from_utf8(without_tablespaces(script)).unwrap();
        assert_eq!(
            kept,
            "CREATE ROLE app;\nALTER ROLE app WITH LOGIN;\nGRANT app TO postgres;\n"
        );
    }

    #[test]
    fn only_existing_roles_and_tablespaces_are_expected() {
        assert!(already_exists(
            "psql:<stdin>:14: ERROR:  role \"postgres\" already exists"
        ));
        assert!(already_exists(
            "psql:<stdin>:20: ERROR:  tablespace \"ts1\" already exists"
        ));
        assert!(!already_exists(
            "psql:<stdin>:9: ERROR:  permission denied to create role"
        ));
        assert!(!already_exists(
            "psql:<stdin>:9: ERROR:  database \"x\" already exists"
        ));
    }
}
