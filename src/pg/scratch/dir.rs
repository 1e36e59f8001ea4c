//! A claimed working directory for one scratch server (a drill's restored copy): its data
//! directory, socket, tablespaces and log under one root, and a marker file naming the process
//! that owns it and the postmaster it started.
//!
//! The invariant: a [`ScratchDir`] is removed when it is dropped (also while unwinding), after
//! any postmaster still running in it is stopped, and never while one is — unless it was
//! [`kept`](ScratchDir::keep). A process killed outright (SIGKILL, OOM) cannot run its drops, so
//! the marker `<root>/pgward-scratch.json` says who owned the directory (PID and process start
//! time, on which host) and which postmaster runs in it; [`reap`] removes what such a process
//! left: it stops the postmaster and removes the directory once the owner is gone.
//!
//! Stopping uses signals, not `pg_ctl` (the reaper has no configuration to find the programs
//! with): SIGQUIT is PostgreSQL's immediate shutdown — what `pg_ctl stop -m immediate` sends —
//! and SIGKILL follows when the postmaster does not exit. The copy is thrown away, so the
//! crash recovery an immediate shutdown implies does not matter. Signals go only to a process
//! whose PID *and* start time match (see [`super::postmaster`]).
//!
//! Layout: `<root>/data/` (absent until a restore or initdb creates it), `<root>/sock/` (the
//! Unix socket; mode 0700, so `trust` authentication admits only its owner and root),
//! `<root>/tblspc/<oid>/` (remapped tablespaces), `<root>/server.log`.

use super::EXIT_WAIT;
use super::postmaster::Postmaster;
use crate::pg::binaries::RunAs;
use crate::repo::label::rfc3339_time;
use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The marker's file name in a scratch directory's root.
pub const MARKER: &str = "pgward-scratch.json";

/// `pgward-scratch.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Marker {
    owner: ProcessId,
    host: String,
    #[serde(with = "rfc3339_time")]
    created_at: DateTime<Utc>,
    postmaster: Option<ProcessId>,
    kept: bool,
}

/// A process named by PID and start time (see [`Postmaster`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct ProcessId {
    pid: u32,
    start_ticks: u64,
}

impl From<Postmaster> for ProcessId {
    fn from(p: Postmaster) -> ProcessId {
        ProcessId {
            pid: p.pid(),
            start_ticks: p.start_ticks(),
        }
    }
}

impl ProcessId {
    fn process(self) -> Postmaster {
        Postmaster::from_parts(self.pid, self.start_ticks)
    }
}

/// A claimed scratch directory; see the module doc.
#[derive(Debug)]
pub struct ScratchDir {
    root: PathBuf,
    marker: Mutex<Marker>,
    kept: bool,
}

impl ScratchDir {
    /// Creates `<parent>/<name>/` (and `parent`, mode 0700, owned by `run_as`'s user, when it
    /// is missing) with `sock/`, `tblspc/` and the marker; `data/` is left to the restore or
    /// initdb. `name` must be one path segment, and the directory must not exist yet: a
    /// directory is claimed by creating it.
    pub fn create(parent: &Path, name: &str, run_as: &RunAs) -> Result<ScratchDir> {
        if name.is_empty()
            || name == "."
            || name == ".."
            || name.contains('/')
            || name.contains('\0')
        {
            bail!("`{name}` cannot name a scratch directory: it must be one path segment");
        }
        let parent = std::path::absolute(parent)
            .with_context(|| format!("cannot resolve {}", parent.display()))?;
        if !parent.is_dir() {
            fs::create_dir_all(&parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
            private_dir(&parent, run_as)?;
        }
        let root = parent.join(name);
        fs::create_dir(&root).with_context(|| {
            format!(
                "cannot create the scratch directory {}\nhint: a directory of that name is \
                 left from an earlier run or in use by another one",
                root.display()
            )
        })?;
        let marker = Marker {
            owner: Postmaster::find(std::process::id())
                .context("cannot read this process's start time from /proc")?
                .into(),
            host: crate::repo::lock::hostname(),
            created_at: Utc::now(),
            postmaster: None,
            kept: false,
        };
        // From here on the directory is ours: a failure below removes it on drop.
        let dir = ScratchDir {
            root,
            marker: Mutex::new(marker.clone()),
            kept: false,
        };
        private_dir(&dir.root, run_as)?;
        write_marker(&dir.root, &marker)?;
        for sub in [dir.socket_dir(), dir.root.join("tblspc")] {
            fs::create_dir(&sub).with_context(|| format!("cannot create {}", sub.display()))?;
            private_dir(&sub, run_as)?;
        }
        Ok(dir)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/data`: absent until a restore or initdb creates it.
    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    pub fn socket_dir(&self) -> PathBuf {
        self.root.join("sock")
    }

    /// `<root>/server.log` (`pg_ctl -l`).
    pub fn log_file(&self) -> PathBuf {
        self.root.join("server.log")
    }

    /// `<root>/tblspc/<oid>`: where the tablespace `oid` is remapped to.
    pub fn tablespace_dir(&self, oid: u32) -> PathBuf {
        self.root.join("tblspc").join(oid.to_string())
    }

    /// Records the postmaster in the marker (rewritten atomically), so a reaper can stop it
    /// if this process is killed.
    pub fn record_postmaster(&self, pm: &Postmaster) -> Result<()> {
        let mut marker = self.marker.lock().unwrap_or_else(|e| e.into_inner());
        marker.postmaster = Some((*pm).into());
        write_marker(&self.root, &marker)
    }

    /// Leaves the directory in place (its server must be stopped already; one still running is
    /// left running): the marker says kept, so no reaper removes it. Returns the path.
    pub fn keep(mut self) -> PathBuf {
        self.kept = true;
        let mut marker = self
            .marker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        marker.kept = true;
        if let Err(e) = write_marker(&self.root, &marker) {
            tracing::warn!("{e:#}");
        }
        self.root.clone()
    }

    fn recorded_postmaster(&self) -> Option<Postmaster> {
        let marker = self.marker.lock().unwrap_or_else(|e| e.into_inner());
        marker.postmaster.map(ProcessId::process)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        if let Err(e) = stop_and_remove(&self.root, self.recorded_postmaster()) {
            tracing::warn!("scratch directory: {e:#}");
        }
    }
}

/// Mode 0700, owned by `run_as` (PostgreSQL runs as it).
fn private_dir(path: &Path, run_as: &RunAs) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot chmod {}", path.display()))?;
    run_as.chown(path)
}

fn write_marker(root: &Path, marker: &Marker) -> Result<()> {
    let path = root.join(MARKER);
    let json = serde_json::to_vec_pretty(marker).expect("a marker serialises");
    crate::fsutil::write_atomic(&path, &json)
        .with_context(|| format!("cannot write {}", path.display()))
}

fn read_marker(root: &Path) -> Result<Marker> {
    let path = root.join(MARKER);
    let text = fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("cannot parse {}", path.display()))
}

/// Stops every live postmaster of `root` (the one `<root>/data/postmaster.pid` names, and the
/// recorded one) and removes `root`. Returns the PIDs stopped. An error leaves `root` in
/// place: it is never removed while a postmaster of it runs.
fn stop_and_remove(root: &Path, recorded: Option<Postmaster>) -> Result<Vec<u32>> {
    let data = root.join("data");
    let mut stopped = Vec::new();
    // The recorded one only while it still runs in `data`: a PID and start time are enough
    // against reuse within a boot, the working directory also across reboots.
    let candidates = [
        Postmaster::of_datadir(&data),
        recorded.filter(|pm| pm.runs_in(&data)),
    ];
    for pm in candidates.into_iter().flatten() {
        if stopped.contains(&pm.pid()) || !pm.is_alive() {
            continue;
        }
        stop(&pm).with_context(|| {
            format!(
                "cannot stop the postmaster (pid {}) of {}; the directory is left in place",
                pm.pid(),
                root.display()
            )
        })?;
        stopped.push(pm.pid());
    }
    // A postmaster can start between the look and the stop only if someone else starts it.
    if let Some(pm) = Postmaster::of_datadir(&data) {
        bail!(
            "a postmaster (pid {}) still runs in {}; the directory is left in place\n\
             hint: stop it, then remove the directory",
            pm.pid(),
            data.display()
        );
    }
    match fs::remove_dir_all(root) {
        Ok(()) => Ok(stopped),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(stopped),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", root.display())),
    }
}

/// SIGQUIT (immediate shutdown), then SIGKILL, until the process is gone.
fn stop(pm: &Postmaster) -> Result<()> {
    pm.quit().context("SIGQUIT")?;
    if pm.wait_gone(EXIT_WAIT) {
        return Ok(());
    }
    pm.kill().context("SIGKILL")?;
    if !pm.wait_gone(EXIT_WAIT) {
        bail!("it survived SIGKILL");
    }
    Ok(())
}

/// What [`reap`] did with one directory under the parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reaped {
    pub dir: PathBuf,
    pub outcome: ReapOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReapOutcome {
    /// Its owner was gone: the postmasters (PIDs) were stopped and the directory removed.
    Removed { stopped: Vec<u32> },
    /// Left alone, and why (a warning for the caller to log).
    LeftAlone(LeftAlone),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeftAlone {
    /// The marker names another host: its owner cannot be checked from here.
    OtherHost(String),
    /// The marker cannot be read or parsed.
    UnreadableMarker(String),
    /// Stopping the server or removing the directory failed.
    CleanupFailed(String),
}

impl std::fmt::Display for Reaped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dir = self.dir.display();
        match &self.outcome {
            ReapOutcome::Removed { stopped } if stopped.is_empty() => {
                write!(f, "removed {dir}, left by a run that is gone")
            }
            ReapOutcome::Removed { stopped } => write!(
                f,
                "removed {dir}, left by a run that is gone, after stopping its postmaster \
                 (pid {stopped:?})"
            ),
            ReapOutcome::LeftAlone(LeftAlone::OtherHost(host)) => {
                write!(f, "left {dir} alone: it belongs to a run on host {host}")
            }
            ReapOutcome::LeftAlone(LeftAlone::UnreadableMarker(e)) => {
                write!(f, "left {dir} alone: {e}")
            }
            ReapOutcome::LeftAlone(LeftAlone::CleanupFailed(e)) => {
                write!(f, "cannot reap {dir}: {e}")
            }
        }
    }
}

/// Reaps what killed runs left under `parent`: every `<parent>/*/pgward-scratch.json` whose
/// owner process is gone (PID and start time, on this host) and that is not kept — its
/// postmaster is stopped (the one of `<dir>/data`, also when the marker has none recorded yet)
/// and the directory removed. Directories of live owners, kept ones and directories without a
/// marker are not touched and not listed. A missing `parent` has nothing to reap.
pub fn reap(parent: &Path) -> Result<Vec<Reaped>> {
    let entries = match fs::read_dir(parent) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", parent.display())),
    };
    let host = crate::repo::lock::hostname();
    let mut reaped = Vec::new();
    let mut dirs: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .filter(|d| d.join(MARKER).exists())
        .collect();
    dirs.sort();
    for dir in dirs {
        let left = |why| Reaped {
            dir: dir.clone(),
            outcome: ReapOutcome::LeftAlone(why),
        };
        let marker = match read_marker(&dir) {
            Ok(m) => m,
            Err(e) => {
                reaped.push(left(LeftAlone::UnreadableMarker(format!("{e:#}"))));
                continue;
            }
        };
        if marker.kept || (marker.host == host && marker.owner.process().is_alive()) {
            continue;
        }
        if marker.host != host {
            reaped.push(left(LeftAlone::OtherHost(marker.host)));
            continue;
        }
        let recorded = marker.postmaster.map(ProcessId::process);
        reaped.push(match stop_and_remove(&dir, recorded) {
            Ok(stopped) => Reaped {
                dir: dir.clone(),
                outcome: ReapOutcome::Removed { stopped },
            },
            Err(e) => left(LeftAlone::CleanupFailed(format!("{e:#}"))),
        });
    }
    Ok(reaped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_as() -> RunAs {
        RunAs::detect().unwrap()
    }

    #[test]
    fn names_must_be_one_segment() {
        let tmp = tempfile::tempdir().unwrap();
        for bad in ["", ".", "..", "a/b", "/abs"] {
            let err = ScratchDir::create(tmp.path(), bad, &run_as()).unwrap_err();
            assert!(err.to_string().contains("one path segment"), "{bad}: {err}");
        }
    }

    #[test]
    fn layout_marker_and_removal() {
        let tmp = tempfile::tempdir().unwrap();
        let parent = tmp.path().join("drills");
        let dir = ScratchDir::create(&parent, "d1", &run_as()).unwrap();
        let root = dir.root().to_path_buf();
        assert_eq!(root, parent.join("d1"));
        assert!(dir.socket_dir().is_dir() && root.join("tblspc").is_dir());
        assert!(!dir.data_dir().exists());
        assert_eq!(dir.tablespace_dir(16384), root.join("tblspc/16384"));
        assert_eq!(
            fs::metadata(&parent).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let marker = read_marker(&root).unwrap();
        assert_eq!(marker.owner.pid, std::process::id());
        assert_eq!((marker.postmaster, marker.kept), (None, false));
        // A second claim of the same name is refused.
        assert!(ScratchDir::create(&parent, "d1", &run_as()).is_err());
        // This process owns it: reap leaves it alone.
        assert_eq!(reap(&parent).unwrap(), vec![]);
        drop(dir);
        assert!(!root.exists());
    }

    #[test]
    fn kept_and_foreign_markers_are_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let kept = ScratchDir::create(tmp.path(), "kept", &run_as())
            .unwrap()
            .keep();
        assert!(read_marker(&kept).unwrap().kept);
        // A marker of a gone owner on another host, and one that does not parse.
        let foreign = tmp.path().join("foreign");
        fs::create_dir(&foreign).unwrap();
        let marker = Marker {
            owner: ProcessId {
                pid: 1,
                start_ticks: 0,
            },
            host: "elsewhere".into(),
            created_at: Utc::now(),
            postmaster: None,
            kept: false,
        };
        write_marker(&foreign, &marker).unwrap();
        let garbled = tmp.path().join("garbled");
        fs::create_dir(&garbled).unwrap();
        fs::write(garbled.join(MARKER), "{").unwrap();
        // A directory without a marker is not ours.
        fs::create_dir(tmp.path().join("stranger")).unwrap();
        let got = reap(tmp.path()).unwrap();
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(
            got[0].outcome,
            ReapOutcome::LeftAlone(LeftAlone::OtherHost("elsewhere".into()))
        );
        assert!(matches!(
            &got[1].outcome,
            ReapOutcome::LeftAlone(LeftAlone::UnreadableMarker(e)) if e.contains("cannot parse")
        ));
        assert!(kept.exists() && foreign.exists() && garbled.exists());
    }

    #[test]
    fn a_gone_owners_directory_is_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let gone = tmp.path().join("gone");
        fs::create_dir_all(gone.join("data")).unwrap();
        let me = Postmaster::find(std::process::id()).unwrap();
        let marker = Marker {
            // This PID with another start time: a process that is gone (its PID reused).
            owner: ProcessId {
                pid: me.pid(),
                start_ticks: me.start_ticks() + 1,
            },
            host: crate::repo::lock::hostname(),
            created_at: Utc::now(),
            postmaster: None,
            kept: false,
        };
        write_marker(&gone, &marker).unwrap();
        let got = reap(tmp.path()).unwrap();
        assert_eq!(
            got,
            vec![Reaped {
                dir: gone.clone(),
                outcome: ReapOutcome::Removed { stopped: vec![] }
            }]
        );
        assert!(!gone.exists());
    }
}
