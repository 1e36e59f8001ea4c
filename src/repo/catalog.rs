//! The backups in a repository, rebuilt from a listing of `backups/` and their manifests.
//! A label with a manifest is a complete backup; a label with only `in-progress.json` is a
//! backup that is running or died, and never a restore candidate.

use crate::pg::{Lsn, Timeline};
use crate::repo::layout::{self, BackupKey};
use crate::repo::manifest::Manifest;
use crate::storage::Storage;
use anyhow::{Context, Result};
use futures::StreamExt;
use serde::Serialize;

/// What plans and `info` need of a backup, without its file list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupSummary {
    pub label: String,
    pub timeline: Timeline,
    pub start_lsn: Lsn,
    pub stop_lsn: Lsn,
    pub start_wal: String,
    pub stop_wal: String,
    pub start_time: String,
    pub stop_time: String,
    pub total_bytes: u64,
    pub stored_bytes: u64,
    pub files: u64,
    pub bad_pages: u64,
    pub data_checksums: bool,
}

impl BackupSummary {
    pub fn of(m: &Manifest) -> BackupSummary {
        BackupSummary {
            label: m.label.clone(),
            timeline: m.timeline,
            start_lsn: m.start_lsn,
            stop_lsn: m.stop_lsn,
            start_wal: m.start_wal.clone(),
            stop_wal: m.stop_wal.clone(),
            start_time: m.start_time.clone(),
            stop_time: m.stop_time.clone(),
            total_bytes: m.stats.total_bytes,
            stored_bytes: m.stats.stored_bytes,
            files: m.stats.files,
            bad_pages: m.bad_pages.len() as u64,
            data_checksums: m.data_checksums,
        }
    }

    /// The stop time as a timestamp (manifests always hold RFC 3339).
    pub fn stop_time_utc(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        chrono::DateTime::parse_from_rfc3339(&self.stop_time)
            .ok()
            .map(|t| t.with_timezone(&chrono::Utc))
    }
}

#[derive(Debug, Clone, Default)]
pub struct BackupCatalog {
    /// Complete backups, oldest first (labels sort in time order).
    pub backups: Vec<BackupSummary>,
    /// Labels with an in-progress marker and no manifest.
    pub in_progress: Vec<String>,
    /// What those markers say about who is writing them.
    pub markers: Vec<InProgressMarker>,
}

/// `backups/<label>/in-progress.json`: who is (or was) writing a backup. Fields are `None`
/// when the marker cannot be read (it is written by the backup, so an unreadable one is a
/// sign of damage, reported, never a reason to treat the backup as complete).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct InProgressMarker {
    pub label: String,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub pid: Option<u32>,
    #[serde(default)]
    pub start_time: Option<String>,
}

impl InProgressMarker {
    /// Whether the writer is known to be gone: it ran on this host (by name) and no process
    /// has its pid. `None` when that cannot be told (another host, an unreadable marker).
    pub fn writer_is_gone(&self, this_host: &str) -> Option<bool> {
        let (host, pid) = (self.host.as_deref()?, self.pid?);
        (host == this_host).then(|| !std::path::Path::new(&format!("/proc/{pid}")).exists())
    }
}

impl BackupCatalog {
    pub async fn load(storage: &dyn Storage) -> Result<BackupCatalog> {
        let listing = storage
            .list(layout::BACKUPS_PREFIX)
            .await
            .with_context(|| format!("cannot list backups in {}", storage.describe()))?;
        let mut manifests = Vec::new();
        let mut markers = Vec::new();
        for obj in &listing {
            match layout::parse_backup_key(&obj.key) {
                Some(BackupKey::Manifest(l)) => manifests.push(l),
                Some(BackupKey::InProgress(l)) => markers.push(l),
                None => {}
            }
        }
        let mut backups: Vec<BackupSummary> = futures::stream::iter(manifests.iter())
            .map(|label| async move {
                Manifest::load(storage, label)
                    .await
                    .map(|m| BackupSummary::of(&m))
            })
            .buffered(8)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_>>()?;
        backups.sort_by(|a, b| a.label.cmp(&b.label));
        let in_progress: Vec<String> = markers
            .into_iter()
            .filter(|l| !manifests.contains(l))
            .collect();
        let markers = futures::stream::iter(in_progress.iter())
            .map(|label| read_marker(storage, label))
            .buffered(8)
            .collect()
            .await;
        Ok(BackupCatalog {
            backups,
            in_progress,
            markers,
        })
    }

    pub fn find(&self, label: &str) -> Option<&BackupSummary> {
        self.backups.iter().find(|b| b.label == label)
    }
}

/// Reads one in-progress marker; what cannot be read stays `None` (and is logged).
async fn read_marker(storage: &dyn Storage, label: &str) -> InProgressMarker {
    let unknown = InProgressMarker {
        label: label.to_string(),
        host: None,
        pid: None,
        start_time: None,
    };
    let key = layout::in_progress_key(label);
    match storage.get(&key).await {
        Ok(bytes) => match serde_json::from_slice::<InProgressMarker>(&bytes) {
            Ok(m) => InProgressMarker {
                label: label.to_string(),
                ..m
            },
            Err(e) => {
                tracing::warn!(key, "cannot read the in-progress marker: {e}");
                unknown
            }
        },
        // Removed since the listing: the backup just finished or gave up.
        Err(e) if e.is_not_found() => unknown,
        Err(e) => {
            tracing::warn!(key, "cannot read the in-progress marker: {e}");
            unknown
        }
    }
}
