//! The backups in a repository, rebuilt from a listing of `backups/` and their manifests.
//! A label with a manifest is a complete backup; a label with only `in-progress.json` is a
//! backup that is running or died, and never a restore candidate.

use crate::pg::{Lsn, Timeline, WalSegmentName};
use crate::repo::label::{Label, rfc3339};
use crate::repo::layout::{self, BackupKey};
use crate::repo::manifest::Manifest;
use crate::storage::Storage;
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Serialize;

/// What plans and `info` need of a backup, without its file list: the typed header of its
/// manifest. Serialised as `info --json` shows it (times in RFC 3339, WAL as file names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupSummary {
    pub label: Label,
    pub timeline: Timeline,
    pub start_lsn: Lsn,
    pub stop_lsn: Lsn,
    pub start_wal: WalSegmentName,
    pub stop_wal: WalSegmentName,
    #[serde(serialize_with = "serialize_time")]
    pub start_time: DateTime<Utc>,
    #[serde(serialize_with = "serialize_time")]
    pub stop_time: DateTime<Utc>,
    pub total_bytes: u64,
    pub stored_bytes: u64,
    pub files: u64,
    pub bad_pages: u64,
    pub data_checksums: bool,
}

impl BackupSummary {
    /// The header of `m`; a manifest whose label, WAL names or times do not parse is refused,
    /// naming the field (it is written by pgward, so that is damage, not a format to guess).
    pub fn of(m: &Manifest) -> Result<BackupSummary> {
        let bad = |field: &str, value: &str| {
            anyhow::anyhow!(
                "the manifest of backup {} has an unreadable {field}: `{value}`",
                m.label
            )
        };
        let wal = |field: &str, v: &str| WalSegmentName::parse(v).map_err(|_| bad(field, v));
        let time = |field: &str, v: &str| {
            DateTime::parse_from_rfc3339(v)
                .map(|t| t.to_utc())
                .map_err(|_| bad(field, v))
        };
        Ok(BackupSummary {
            label: Label::parse(&m.label).map_err(|_| bad("label", &m.label))?,
            timeline: m.timeline,
            start_lsn: m.start_lsn,
            stop_lsn: m.stop_lsn,
            start_wal: wal("start_wal", &m.start_wal)?,
            stop_wal: wal("stop_wal", &m.stop_wal)?,
            start_time: time("start_time", &m.start_time)?,
            stop_time: time("stop_time", &m.stop_time)?,
            total_bytes: m.stats.total_bytes,
            stored_bytes: m.stats.stored_bytes,
            files: m.stats.files,
            bad_pages: m.bad_pages.len() as u64,
            data_checksums: m.data_checksums,
        })
    }
}

fn serialize_time<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(t))
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
                    .and_then(|m| BackupSummary::of(&m))
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
            .map(|label| read_marker(storage, label, layout::in_progress_key(label)))
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

/// Reads one in-progress marker (a backup's or a dump's, at `key`); what cannot be read stays
/// `None` (and is logged).
pub(crate) async fn read_marker(
    storage: &dyn Storage,
    label: &str,
    key: String,
) -> InProgressMarker {
    let unknown = InProgressMarker {
        label: label.to_string(),
        host: None,
        pid: None,
        start_time: None,
    };
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
