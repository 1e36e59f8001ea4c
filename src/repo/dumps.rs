//! Logical dumps in the repository: the manifest of one dump (`dumps/<label>/manifest.json.zst`,
//! written last, so a label with a manifest is a complete, checked dump) and the catalog of
//! every dump, rebuilt from a listing of `dumps/` for the [`Snapshot`](super::snapshot).
//!
//! A label with only `in-progress.json` (or only data objects) is a dump that is running or
//! died: never listed as a dump, never a restore candidate.

use crate::codec::{self, Sha256Digest};
use crate::repo::catalog::{InProgressMarker, read_marker};
use crate::repo::label::{Label, rfc3339_time};
use crate::repo::layout::{self, DumpKey};
use crate::storage::{self, Created, Storage};
use anyhow::{Context, Result, bail};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

pub const DUMP_MANIFEST_VERSION: u32 = 1;

/// One stored object of a dump: where, how big before and after compression, and the sha256
/// of the original bytes (what `pg_dump` or `pg_dumpall` wrote).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredObject {
    pub key: String,
    pub size: u64,
    pub stored_size: u64,
    pub sha256: Sha256Digest,
}

/// One database's `pg_dump -Fc` archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseDump {
    pub name: String,
    #[serde(flatten)]
    pub object: StoredObject,
    /// Entries `pg_restore --list` read from the stored archive's table of contents.
    pub toc_entries: u64,
    #[serde(with = "rfc3339_time")]
    pub start_time: DateTime<Utc>,
    #[serde(with = "rfc3339_time")]
    pub stop_time: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DumpManifest {
    pub format_version: u32,
    pub label: Label,
    #[serde(with = "crate::repo::u64_string")]
    pub system_identifier: u64,
    /// The server's version (`server_version`, e.g. `15.18`).
    pub server_version: String,
    /// `pg_dump --version` of the program used (also the pg_dumpall's).
    pub pg_dump_version: String,
    #[serde(with = "rfc3339_time")]
    pub start_time: DateTime<Utc>,
    #[serde(with = "rfc3339_time")]
    pub stop_time: DateTime<Utc>,
    /// Whether `globals.sql` holds the roles' password hashes.
    pub role_passwords: bool,
    pub globals: StoredObject,
    /// In name order.
    pub databases: Vec<DatabaseDump>,
}

impl DumpManifest {
    pub fn to_bytes(&self, level: i32) -> Result<Vec<u8>> {
        let json = serde_json::to_vec_pretty(self)?;
        Ok(codec::encode_bytes(&json, level)?.data)
    }

    pub fn from_bytes(compressed: &[u8]) -> Result<DumpManifest> {
        let json = codec::decode_to_vec(compressed, None)?;
        let m: DumpManifest =
            serde_json::from_slice(&json).context("dump manifest is not valid JSON")?;
        if m.format_version != DUMP_MANIFEST_VERSION {
            bail!(
                "dump manifest format version {} is not supported (this pgward reads \
                 {DUMP_MANIFEST_VERSION})",
                m.format_version
            );
        }
        Ok(m)
    }

    /// Writes the manifest, which makes the dump exist. Refuses to replace another one.
    pub async fn store(&self, storage: &dyn Storage, level: i32) -> Result<()> {
        let key = layout::dump_manifest_key(self.label.as_str());
        let bytes = Bytes::from(self.to_bytes(level)?);
        match storage::create(storage, &key, bytes)
            .await
            .with_context(|| format!("cannot write {key}"))?
        {
            Created::Written | Created::AlreadyOurs => Ok(()),
            Created::Taken(_) => bail!("a dump labelled {} already exists", self.label),
        }
    }

    pub async fn load(storage: &dyn Storage, label: &str) -> Result<DumpManifest> {
        let key = layout::dump_manifest_key(label);
        let bytes = storage.get(&key).await.map_err(|e| {
            if e.is_not_found() {
                anyhow::anyhow!(
                    "dump {label} does not exist in {}\nhint: `pgward info` lists the dumps",
                    storage.describe()
                )
            } else {
                anyhow::Error::new(e).context(format!("cannot read {key}"))
            }
        })?;
        DumpManifest::from_bytes(&bytes).with_context(|| format!("cannot read manifest {key}"))
    }

    /// Original bytes of every object (databases and globals).
    pub fn size(&self) -> u64 {
        self.globals.size + self.databases.iter().map(|d| d.object.size).sum::<u64>()
    }

    /// Compressed bytes of every object.
    pub fn stored_size(&self) -> u64 {
        self.globals.stored_size
            + self
                .databases
                .iter()
                .map(|d| d.object.stored_size)
                .sum::<u64>()
    }
}

/// The dumps in a repository.
#[derive(Debug, Clone, Default)]
pub struct DumpCatalog {
    /// Complete dumps, oldest first.
    pub dumps: Vec<DumpManifest>,
    /// Labels with objects but no manifest: running, or died before completing.
    pub incomplete: Vec<Label>,
    /// The in-progress markers of incomplete labels that have one. A dump claims its label
    /// with the marker before it stores anything and removes it last, so an incomplete label
    /// without a marker is what a failed clean-up or an interrupted expire left.
    pub markers: Vec<InProgressMarker>,
}

impl DumpCatalog {
    pub async fn load(storage: &dyn Storage) -> Result<DumpCatalog> {
        let listing = storage
            .list(layout::DUMPS_PREFIX)
            .await
            .with_context(|| format!("cannot list dumps in {}", storage.describe()))?;
        let mut complete = BTreeSet::new();
        let mut seen = BTreeSet::new();
        let mut with_marker = BTreeSet::new();
        for obj in &listing {
            let label = match layout::parse_dump_key(&obj.key) {
                Some(DumpKey::Manifest(l)) => {
                    complete.insert(l.clone());
                    l
                }
                Some(DumpKey::InProgress(l)) => {
                    with_marker.insert(l.clone());
                    l
                }
                Some(DumpKey::Database { label: l, .. } | DumpKey::Globals(l)) => l,
                None => continue,
            };
            seen.insert(label);
        }
        let mut dumps: Vec<DumpManifest> = futures::stream::iter(complete.iter())
            .map(|label| DumpManifest::load(storage, label))
            .buffered(8)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_>>()?;
        dumps.sort_by(|a, b| a.label.cmp(&b.label));
        let incomplete: Vec<Label> = seen
            .difference(&complete)
            .filter_map(|l| Label::parse(l).ok())
            .collect();
        let markers = futures::stream::iter(
            incomplete
                .iter()
                .filter(|l| with_marker.contains(l.as_str())),
        )
        .map(|l| {
            read_marker(
                storage,
                l.as_str(),
                layout::dump_in_progress_key(l.as_str()),
            )
        })
        .buffered(8)
        .collect()
        .await;
        Ok(DumpCatalog {
            dumps,
            incomplete,
            markers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::MemoryStorage;

    fn object(key: String) -> StoredObject {
        StoredObject {
            key,
            size: 1000,
            stored_size: 100,
            sha256: Sha256Digest::of(b"x"),
        }
    }

    pub fn sample(label: &str) -> DumpManifest {
        let t = DateTime::parse_from_rfc3339("2026-12-01T12:00:00Z")
            .unwrap()
            .to_utc();
        DumpManifest {
            format_version: DUMP_MANIFEST_VERSION,
            label: Label::parse(label).unwrap(),
            system_identifier: u64::MAX - 1,
            server_version: "15.18".into(),
            pg_dump_version: "15.18".into(),
            start_time: t,
            stop_time: t,
            role_passwords: true,
            globals: object(layout::dump_globals_key(label)),
            databases: vec![DatabaseDump {
                name: "app".into(),
                object: object(layout::dump_database_key(label, "app")),
                toc_entries: 12,
                start_time: t,
                stop_time: t,
            }],
        }
    }

    #[tokio::test]
    async fn manifests_round_trip_and_the_catalog_tells_complete_from_incomplete() {
        let s = MemoryStorage::new();
        let m = sample("20261201T120000Z");
        m.store(&s, 3).await.unwrap();
        m.store(&s, 3).await.unwrap();
        let mut other = m.clone();
        other.server_version = "15.19".into();
        assert!(other.store(&s, 3).await.is_err(), "never replaced");
        s.put(
            &layout::dump_database_key("20261201T130000Z", "app"),
            Bytes::from_static(b"partial"),
        )
        .await
        .unwrap();
        let c = DumpCatalog::load(&s).await.unwrap();
        assert_eq!(c.dumps, vec![m.clone()]);
        assert_eq!(
            c.incomplete,
            vec![Label::parse("20261201T130000Z").unwrap()]
        );
        assert_eq!((m.size(), m.stored_size()), (2000, 200));

        let json: serde_json::Value =
            serde_json::from_slice(&zstd::decode_all(&m.to_bytes(3).unwrap()[..]).unwrap())
                .unwrap();
        assert_eq!(json["system_identifier"], (u64::MAX - 1).to_string());
        assert_eq!(json["start_time"], "2026-12-01T12:00:00Z");
        assert_eq!(
            json["databases"][0]["key"],
            "dumps/20261201T120000Z/app.pgdump.zst"
        );
        assert_eq!(json["databases"][0]["toc_entries"], 12);
    }
}
