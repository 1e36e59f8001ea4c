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
        let in_progress = markers
            .into_iter()
            .filter(|l| !manifests.contains(l))
            .collect();
        Ok(BackupCatalog {
            backups,
            in_progress,
        })
    }

    pub fn find(&self, label: &str) -> Option<&BackupSummary> {
        self.backups.iter().find(|b| b.label == label)
    }
}
