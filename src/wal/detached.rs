//! Helper processes that outlive the command that starts them (the WAL prefetcher and the
//! background pusher): at most one per spool, guarded by an exclusive lock on a file, started
//! in their own process group with standard error going to a log file.

use anyhow::{Context as _, Result};
use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::path::Path;
use std::process::{Command, Stdio};

/// Whether a helper holding `lock` could be started now, i.e. none holds it. Taking and dropping
/// the lock is only a cheap pre-check: the helper takes it itself and exits if it lost a race.
pub fn lock_is_free(lock: &Path) -> bool {
    if let Some(dir) = lock.parent()
        && std::fs::create_dir_all(dir).is_err()
    {
        return false;
    }
    matches!(File::create(lock).map(|f| f.try_lock()), Ok(Ok(())))
}

/// The helper's own hold on `lock`: `None` when another helper holds it (this one then exits).
pub fn take_lock(lock: &Path) -> Result<Option<File>> {
    if let Some(dir) = lock.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let file = File::create(lock).with_context(|| format!("cannot open {}", lock.display()))?;
    Ok(file.try_lock().is_ok().then_some(file))
}

/// How a helper's standard error is kept.
pub enum Log<'a> {
    /// Started afresh by every helper.
    Truncate(&'a Path),
    /// Appended to, and started afresh once larger than the given number of bytes.
    Append(&'a Path, u64),
}

/// Starts `exe --config CONFIG ARGS...` detached. Failure to start is only logged: the helper
/// speeds things up, and the command that starts it works without it.
pub fn spawn(exe: &Path, config: &Path, args: &[&OsStr], log: Log<'_>) {
    let log = match log {
        Log::Truncate(path) => File::create(path),
        Log::Append(path, max) => {
            if std::fs::metadata(path).is_ok_and(|m| m.len() > max) {
                let _ = std::fs::remove_file(path);
            }
            OpenOptions::new().create(true).append(true).open(path)
        }
    }
    .map(Stdio::from)
    .unwrap_or_else(|_| Stdio::null());
    let mut cmd = Command::new(exe);
    cmd.arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    // Its own process group: a signal aimed at PostgreSQL's archiver or startup process must
    // not kill a helper in the middle of its work, and PostgreSQL must not wait for it.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    if let Err(e) = cmd.spawn() {
        tracing::debug!(
            "cannot start {}: {e}",
            args.first().map_or("".into(), |a| a.to_string_lossy())
        );
    }
}
