//! The checks a drill runs on its restored copy: after promotion (`amcheck`, `read_all`, `sql`,
//! `rows`), and on the stopped copy (`checksums`).
//!
//! Each returns a [`CheckResult`] and never an error: a check that cannot run (the server went
//! away, a program is missing) is a failed check whose detail says why, so one broken check
//! does not hide the others. The invariants: a check passes only on positive evidence — an
//! amcheck that checked no relation fails, a cluster without data checksums is `skipped`,
//! never `ok` — and nothing a check reads is written to disk (`read_all` streams `pg_dump`
//! into a hash).
//!
//! They block (programs under deadlines); the async drill runs them under `block_in_place`.

use crate::drill::file::{RowsCheck, SqlCheck, Tolerance};
use crate::drill::report::CheckResult;
use crate::drill::source::SourceDb;
use crate::pg::binaries::PgBinaries;
use crate::pg::conn::quote_ident;
use crate::pg::scratch::ScratchCluster;
use crate::process;
use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Deadline of one whole-cluster check program (`pg_amcheck`, one `pg_dump`, `pg_checksums`).
/// Generous: they read every page; the drill's own timeout is the real bound.
const BULK_TIMEOUT: Duration = Duration::from_secs(6 * 3600);
/// How much of a program's output a check's detail keeps.
const DETAIL_MAX: usize = 2000;

/// The connectable databases of the copy, in name order.
fn databases(server: &ScratchCluster) -> Result<Vec<String>> {
    let rows = server.rows("select datname from pg_database where datallowconn order by 1")?;
    Ok(rows
        .into_iter()
        .filter_map(|r| r.into_iter().next())
        .collect())
}

/// `text` trimmed to at most [`DETAIL_MAX`] bytes (at a character boundary), marked when cut.
fn trimmed(text: &str) -> String {
    let text = text.trim();
    if text.len() <= DETAIL_MAX {
        return text.to_string();
    }
    let mut end = DETAIL_MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{} [... {} more bytes]", &text[..end], text.len() - end)
}

/// `pg_amcheck --all --heapallindexed --install-missing` (the copy is thrown away, so creating
/// the `amcheck` extension in it is fine): Failed if it reports corruption or checked no
/// relation (counted from its `--progress` line `N/M relations`).
pub fn amcheck(server: &ScratchCluster) -> CheckResult {
    const NAME: &str = "amcheck";
    let started = Instant::now();
    let mut cmd = server.client("pg_amcheck");
    cmd.args([
        "--all",
        "--heapallindexed",
        "--install-missing",
        "--progress",
    ])
    .args(["--maintenance-db", "postgres"]);
    let out = match process::run(&mut cmd, BULK_TIMEOUT) {
        Ok(out) => out,
        Err(e) => return CheckResult::failed(NAME, trimmed(&e.to_string()), secs(started)),
    };
    let seconds = secs(started);
    let relations = checked_relations(&out.stderr);
    let dbs = databases(server).map(|d| d.len()).unwrap_or(0);
    if !out.success() || !out.stdout.trim().is_empty() {
        // pg_amcheck prints corruption on stdout and exits 2; other failures exit 1.
        let report = format!("{}\n{}", out.stdout.trim(), progress_free(&out.stderr));
        return CheckResult::failed(
            NAME,
            format!(
                "pg_amcheck exited with {:?}: {}",
                out.code(),
                trimmed(&report)
            ),
            seconds,
        );
    }
    match relations {
        Some(n) if n > 0 => CheckResult::ok(
            NAME,
            format!("{n} relations in {dbs} databases, no corruption"),
            seconds,
        ),
        _ => CheckResult::failed(
            NAME,
            format!(
                "pg_amcheck checked no relation (nothing to prove the copy is sound)\n{}",
                trimmed(&progress_free(&out.stderr))
            ),
            seconds,
        ),
    }
}

/// The `N` of pg_amcheck's last `N/M relations` progress line (lines end in `\r` on a
/// terminal, `\n` otherwise).
fn checked_relations(stderr: &str) -> Option<u64> {
    stderr
        .split(['\r', '\n'])
        .filter_map(|l| {
            let (done, rest) = l.trim().split_once('/')?;
            rest.split_whitespace()
                .nth(1)?
                .starts_with("relations")
                .then_some(())?;
            done.trim().parse().ok()
        })
        .next_back()
}

/// `stderr` without the progress lines.
fn progress_free(stderr: &str) -> String {
    stderr
        .split(['\r', '\n'])
        .filter(|l| !l.contains(" relations (") && !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every table of every database read: `pg_dump -Fc -Z0` per database streamed into SHA-256
/// (never to disk). Detail: databases, bytes, digest prefix. Also returns the bytes read (the
/// phase's).
pub fn read_all(server: &ScratchCluster) -> (CheckResult, u64) {
    const NAME: &str = "read_all";
    let started = Instant::now();
    let result = (|| -> Result<(usize, u64, String)> {
        let dbs = databases(server)?;
        if dbs.is_empty() {
            bail!("the copy has no connectable database");
        }
        let mut all = Sha256::new();
        let mut bytes = 0;
        for db in &dbs {
            let mut cmd = server.client("pg_dump");
            cmd.args(["-Fc", "-Z0", "-d"])
                .arg(crate::pg::scratch::cluster::dbname_arg(db));
            let (n, digest) = hash_stdout(cmd, BULK_TIMEOUT)
                .with_context(|| format!("pg_dump of database {db} failed"))?;
            bytes += n;
            all.update(digest);
        }
        Ok((dbs.len(), bytes, hex::encode(all.finalize())))
    })();
    let seconds = secs(started);
    match result {
        Ok((dbs, bytes, digest)) => (
            CheckResult::ok(
                NAME,
                format!(
                    "{dbs} databases read through pg_dump, {}, sha256 {}",
                    crate::units::bytes(bytes),
                    &digest[..16]
                ),
                seconds,
            ),
            bytes,
        ),
        Err(e) => (
            CheckResult::failed(NAME, trimmed(&format!("{e:#}")), seconds),
            0,
        ),
    }
}

/// Runs `cmd`, hashing its standard output as it comes; an error unless it exits 0 within
/// `timeout` (then it is killed). Returns the bytes and their SHA-256.
fn hash_stdout(mut cmd: std::process::Command, timeout: Duration) -> Result<(u64, [u8; 32])> {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {what}"))?;
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let stderr_reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stderr.read_to_end(&mut text);
        String::from_utf8_lossy(&text).into_owned()
    });
    // The watchdog owns the child: it kills it at the deadline, which ends the stream here.
    let watchdog = std::thread::spawn(move || {
        let deadline = Instant::now() + timeout;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return (Some(status), false),
                Ok(None) if Instant::now() < deadline => {}
                outcome => {
                    let _ = child.kill();
                    return (child.wait().ok(), outcome.is_ok());
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    let read = loop {
        match stdout.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => {
                hasher.update(&buf[..n]);
                bytes += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    drop(stdout);
    let (status, timed_out) = watchdog.join().expect("the watchdog does not panic");
    let err = stderr_reader.join().unwrap_or_default();
    if timed_out {
        bail!("timed out after {timeout:?}: {what}\n{}", trimmed(&err));
    }
    read.with_context(|| format!("cannot read the output of {what}"))?;
    match status {
        Some(status) if status.success() => {}
        Some(status) => bail!("{what} exited with {status}\n{}", trimmed(&err)),
        None => bail!("cannot wait for {what}\n{}", trimmed(&err)),
    }
    Ok((bytes, hasher.finalize().into()))
}

/// `pg_checksums --check` on the stopped copy (call it after the server is stopped). Skipped
/// (never ok) when the cluster has no data checksums.
/// `timeout` bounds the scan (the drill's remaining time: the copy is stopped, so stopping the
/// server cannot end it).
pub fn checksums(
    bins: &PgBinaries,
    data_dir: &Path,
    enabled: bool,
    timeout: Duration,
) -> CheckResult {
    const NAME: &str = "checksums";
    if !enabled {
        return CheckResult::skipped(
            NAME,
            "the cluster has no data checksums (initdb --data-checksums, or pg_checksums \
             --enable on the stopped source)",
        );
    }
    let started = Instant::now();
    let mut cmd = bins.command("pg_checksums");
    cmd.current_dir("/").arg("--check").arg("-D").arg(data_dir);
    match process::run(&mut cmd, timeout) {
        Ok(out) if out.success() => {
            let scanned = out
                .stdout
                .lines()
                .find_map(|l| l.strip_prefix("Blocks scanned:"))
                .map(str::trim)
                .unwrap_or("?");
            CheckResult::ok(
                NAME,
                format!("{scanned} blocks scanned, no bad checksum"),
                secs(started),
            )
        }
        Ok(out) => CheckResult::failed(
            NAME,
            format!(
                "pg_checksums --check exited with {:?}: {}",
                out.code(),
                trimmed(&format!("{}\n{}", out.stdout.trim(), out.stderr.trim()))
            ),
            secs(started),
        ),
        Err(e) => CheckResult::failed(NAME, trimmed(&e.to_string()), secs(started)),
    }
}

/// The check's name for a query: `sql: <query>`, whitespace collapsed, at most 60 characters.
pub fn sql_check_name(query: &str) -> String {
    let flat = query.split_whitespace().collect::<Vec<_>>().join(" ");
    let short: String = flat.chars().take(60).collect();
    if short.len() < flat.len() {
        format!("sql: {short}…")
    } else {
        format!("sql: {short}")
    }
}

/// What a failed query said: the server's ERROR (and its DETAIL/HINT) lines when psql printed
/// any, else the whole error, trimmed.
fn query_error(e: &anyhow::Error) -> String {
    let text = format!("{e:#}");
    let said: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("ERROR:") || l.starts_with("DETAIL:") || l.starts_with("HINT:"))
        .collect();
    if said.is_empty() {
        trimmed(&text)
    } else {
        format!("the query failed: {}", said.join(" "))
    }
}

/// The query's first column of the first row (NULL or no row: empty) judged by `expect`.
pub fn sql(server: &ScratchCluster, check: &SqlCheck) -> CheckResult {
    let name = sql_check_name(&check.query);
    let started = Instant::now();
    let got = match server.rows_in(&check.database, &check.query) {
        Ok(rows) => rows
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next())
            .unwrap_or_default(),
        Err(e) => return CheckResult::failed(name, query_error(&e), secs(started)),
    };
    let seconds = secs(started);
    match check.expect.judge(&got) {
        Ok(()) => CheckResult::ok(name, format!("got `{got}` ({})", check.expect), seconds),
        Err(why) => CheckResult::failed(name, why, seconds),
    }
}

/// `table` as SQL: `schema.table` when written so (split on the first `.`), each part quoted.
pub fn table_sql(table: &str) -> String {
    match table.split_once('.') {
        Some((schema, name)) => format!("{}.{}", quote_ident(schema), quote_ident(name)),
        None => quote_ident(table),
    }
}

/// Whether `copy` rows are within `tolerance` of the source's `source` rows; else why not.
pub fn within(copy: u64, source: u64, tolerance: Tolerance) -> Result<(), String> {
    let diff = copy.abs_diff(source);
    let (allowed, said) = match tolerance {
        Tolerance::Rows(n) => (n as f64, format!("{n} rows")),
        Tolerance::Percent(p) => (source as f64 * p / 100.0, format!("{p}% of {source}")),
    };
    if diff as f64 <= allowed {
        Ok(())
    } else {
        Err(format!(
            "the copy has {copy} rows, the source {source}: {diff} apart, more than the \
             tolerance ({said})"
        ))
    }
}

/// `count(*)` of the table in the copy and on the source, within the check's tolerance.
pub fn rows(source: &SourceDb, server: &ScratchCluster, check: &RowsCheck) -> CheckResult {
    let name = format!("rows: {}.{}", check.database, check.table);
    let started = Instant::now();
    let sql = format!("select count(*) from {}", table_sql(&check.table));
    let count = |text: Result<String>, whose: &str| -> Result<u64, String> {
        let text = text.map_err(|e| format!("cannot count the rows {whose}: {e:#}"))?;
        text.trim()
            .parse()
            .map_err(|_| format!("count(*) {whose} returned `{text}`"))
    };
    let result = count(
        server.rows_in(&check.database, &sql).map(|r| {
            r.into_iter()
                .next()
                .and_then(|r| r.into_iter().next())
                .unwrap_or_default()
        }),
        "in the copy",
    )
    .and_then(|c| {
        Ok((
            c,
            count(source.psql(&check.database, &sql), "on the source")?,
        ))
    });
    let seconds = secs(started);
    match result {
        Ok((copy, src)) => match within(copy, src, check.tolerance) {
            Ok(()) => CheckResult::ok(name, format!("copy {copy}, source {src}"), seconds),
            Err(why) => CheckResult::failed(name, why, seconds),
        },
        Err(why) => CheckResult::failed(name, trimmed(&why), seconds),
    }
}

fn secs(started: Instant) -> f64 {
    started.elapsed().as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amcheck_progress_lines() {
        let stderr = "  0/542 relations (0%),    0/1605 pages (0%)\r542/542 relations (100%), \
                      1605/1605 pages (100%)\n";
        assert_eq!(checked_relations(stderr), Some(542));
        assert_eq!(
            checked_relations("0/0 relations (100%), 0/0 pages (100%)\n"),
            Some(0)
        );
        assert_eq!(checked_relations("pg_amcheck: error: no databases\n"), None);
        assert_eq!(
            progress_free("pg_amcheck: warning: x\n1/2 relations (50%), 1/2 pages (50%)\r"),
            "pg_amcheck: warning: x"
        );
    }

    #[test]
    fn names_and_quoting() {
        assert_eq!(
            sql_check_name("select\n  count(*)\tfrom t"),
            "sql: select count(*) from t"
        );
        let long = format!("select {}", "x, ".repeat(40));
        let name = sql_check_name(&long);
        assert!(
            name.ends_with('…') && name.chars().count() == 5 + 60 + 1,
            "{name}"
        );
        assert_eq!(table_sql("appointments"), "\"appointments\"");
        assert_eq!(table_sql("app.Users"), "\"app\".\"Users\"");
        assert_eq!(table_sql("we\"ird"), "\"we\"\"ird\"");
    }

    #[test]
    fn tolerance_table() {
        use Tolerance::*;
        for (copy, source, tol, ok) in [
            (100, 100, Rows(0), true),
            (99, 100, Rows(0), false),
            (101, 100, Rows(0), false),
            (95, 100, Rows(5), true),
            (94, 100, Rows(5), false),
            (950, 1000, Percent(5.0), true),
            (949, 1000, Percent(5.0), false),
            (0, 0, Percent(1.0), true),
            (1, 0, Percent(50.0), false),
        ] {
            let got = within(copy, source, tol);
            assert_eq!(got.is_ok(), ok, "{copy} vs {source} with {tol:?}: {got:?}");
            if let Err(why) = got {
                assert!(
                    why.contains(&format!("copy has {copy} rows"))
                        && why.contains(&format!("source {source}")),
                    "{why}"
                );
            }
        }
    }

    #[test]
    fn details_are_trimmed_at_a_char_boundary() {
        let long = "é".repeat(DETAIL_MAX);
        let t = trimmed(&long);
        assert!(
            t.len() < long.len() && t.contains("more bytes]"),
            "{}",
            t.len()
        );
        assert_eq!(trimmed("  short \n"), "short");
    }
}
