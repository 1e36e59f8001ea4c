//! The base-backup manifest: everything a restore needs, written last.
//!
//! A manifest lists every file of the backup and, per file, one *recipe* per block: the pieces
//! to lay down at that block's offset. Today each recipe is one piece (a whole stored block at
//! offset 0). Later, page-level deltas add pieces that overlay a base block; restore already
//! applies pieces in order, so the shape of restore does not change. Every manifest names every
//! piece its restore needs: there are no chains between backups, and any backup can be expired.

use crate::codec::{self, Sha256Digest};
use crate::pg::{Lsn, Timeline};
use crate::repo::layout;
use crate::storage::{self, Created, Storage};
use anyhow::{Context, Result, bail};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

pub const MANIFEST_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub label: String,
    #[serde(with = "crate::repo::u64_string")]
    pub system_identifier: u64,
    pub pg_major: u32,
    pub block_size: u64,
    pub timeline: Timeline,
    pub start_lsn: Lsn,
    pub stop_lsn: Lsn,
    /// First and last WAL segment a restore of this backup needs (inclusive).
    pub start_wal: String,
    pub stop_wal: String,
    /// RFC 3339 UTC.
    pub start_time: String,
    pub stop_time: String,
    /// As returned by `pg_backup_stop()`; written verbatim into the restored data directory.
    pub backup_label: String,
    pub tablespace_map: Option<String>,
    pub data_checksums: bool,
    pub tablespaces: Vec<TablespaceEntry>,
    pub files: Vec<FileEntry>,
    /// Pages whose checksum failed twice while read.
    pub bad_pages: Vec<BadPage>,
    pub stats: BackupStats,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TablespaceEntry {
    pub oid: u32,
    /// Where the tablespace lived on the source (the target of `pg_tblspc/<oid>`).
    pub location: String,
    /// `pg_tablespace.spcname` when the copy ended, for messages (absent in older manifests,
    /// or when the server could not be asked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Not there when the backup started, but copied: recovery replays its `CREATE
    /// TABLESPACE`, which links it to `location` whatever the restore maps it to, so it can
    /// be restored only at `location` (see `backup/tablespaces.rs`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub created_during_backup: bool,
}

impl TablespaceEntry {
    /// `16395 (ts_new, /srv/ts)`, or `16395 (/srv/ts)` without a name, for messages.
    pub fn describe(&self) -> String {
        match &self.name {
            Some(name) => format!("{} ({name}, {})", self.oid, self.location),
            None => format!("{} ({})", self.oid, self.location),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    File,
    Dir,
}

/// One file or directory. Paths are relative to the data directory and use `/`; files in a
/// tablespace are under `pg_tblspc/<oid>/…` exactly as PostgreSQL addresses them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    pub kind: FileKind,
    pub mode: u32,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub mtime: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocks: Vec<Recipe>,
}

/// How to produce one block of a file: pieces applied in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipe {
    pub pieces: Vec<Piece>,
}

/// `len` bytes of stored block `id`, starting at `from` in the block, written at offset `at`
/// within the file block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Piece {
    pub id: Sha256Digest,
    #[serde(default)]
    pub at: u64,
    #[serde(default)]
    pub from: u64,
    pub len: u64,
}

impl Recipe {
    /// A recipe that is one whole stored block.
    pub fn whole(id: Sha256Digest, len: u64) -> Recipe {
        Recipe {
            pieces: vec![Piece {
                id,
                at: 0,
                from: 0,
                len,
            }],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadPage {
    pub path: String,
    /// Page number within the relation segment file.
    pub page: u64,
    pub expected: u16,
    pub found: u16,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BackupStats {
    /// Bytes of all files in the backup.
    pub total_bytes: u64,
    pub files: u64,
    pub blocks: u64,
    /// Blocks (and their original bytes) that were not yet in the repository.
    pub new_blocks: u64,
    pub new_bytes: u64,
    /// Compressed bytes this backup added to the repository.
    pub stored_bytes: u64,
    pub duration_ms: u64,
}

impl Manifest {
    /// Every distinct block id the restore of this backup reads.
    pub fn block_ids(&self) -> impl Iterator<Item = &Sha256Digest> {
        self.files
            .iter()
            .flat_map(|f| f.blocks.iter())
            .flat_map(|r| r.pieces.iter())
            .map(|p| &p.id)
    }

    pub fn to_bytes(&self, level: i32) -> Result<Vec<u8>> {
        let json = serde_json::to_vec(self)?;
        Ok(codec::encode_bytes(&json, level)?.data)
    }

    pub fn from_bytes(compressed: &[u8]) -> Result<Manifest> {
        let json = codec::decode_to_vec(compressed, None)?;
        let m: Manifest = serde_json::from_slice(&json).context("manifest is not valid JSON")?;
        if m.format_version != MANIFEST_VERSION {
            bail!(
                "manifest format version {} is not supported (this pgward reads {MANIFEST_VERSION})",
                m.format_version
            );
        }
        Ok(m)
    }

    /// Writes the manifest, which makes the backup exist. Refuses to replace another one.
    pub async fn store(&self, storage: &dyn Storage, level: i32) -> Result<()> {
        let key = layout::manifest_key(&self.label);
        let bytes = Bytes::from(self.to_bytes(level)?);
        // A committed write whose answer was lost comes back as "exists" on the retry: the
        // same bytes there are this manifest, not another backup's.
        match storage::create(storage, &key, bytes)
            .await
            .with_context(|| format!("cannot write {key}"))?
        {
            Created::Written | Created::AlreadyOurs => Ok(()),
            Created::Taken(_) => bail!("a backup labelled {} already exists", self.label),
        }
    }

    pub async fn load(storage: &dyn Storage, label: &str) -> Result<Manifest> {
        let key = layout::manifest_key(label);
        let bytes = storage.get(&key).await.map_err(|e| {
            if e.is_not_found() {
                anyhow::anyhow!(
                    "backup {label} does not exist in {}\nhint: `pgward info` lists the backups",
                    storage.describe()
                )
            } else {
                anyhow::Error::new(e).context(format!("cannot read {key}"))
            }
        })?;
        Manifest::from_bytes(&bytes).with_context(|| format!("cannot read manifest {key}"))
    }
}

/// A small, valid manifest for tests elsewhere in the crate.
#[cfg(test)]
pub(crate) fn sample() -> Manifest {
    tests::sample()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn sample() -> Manifest {
        let id = Sha256Digest::of(b"block");
        Manifest {
            format_version: MANIFEST_VERSION,
            label: "20261122T013000Z".into(),
            system_identifier: u64::MAX - 7,
            pg_major: 15,
            block_size: 1 << 20,
            timeline: Timeline(1),
            start_lsn: "0/2000028".parse().unwrap(),
            stop_lsn: "0/2000138".parse().unwrap(),
            start_wal: "000000010000000000000002".into(),
            stop_wal: "000000010000000000000002".into(),
            start_time: "2026-11-22T01:30:00Z".into(),
            stop_time: "2026-11-22T01:30:05Z".into(),
            backup_label: "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n".into(),
            tablespace_map: Some("16384 /srv/ts1\n".into()),
            data_checksums: true,
            tablespaces: vec![TablespaceEntry {
                oid: 16384,
                location: "/srv/ts1".into(),
                ..Default::default()
            }],
            files: vec![
                FileEntry {
                    path: "base".into(),
                    kind: FileKind::Dir,
                    mode: 0o700,
                    size: 0,
                    mtime: 0,
                    blocks: vec![],
                },
                FileEntry {
                    path: "base/1/1259".into(),
                    kind: FileKind::File,
                    mode: 0o600,
                    size: 5,
                    mtime: 1_700_000_000,
                    blocks: vec![Recipe::whole(id, 5)],
                },
            ],
            bad_pages: vec![BadPage {
                path: "base/1/1259".into(),
                page: 0,
                expected: 1,
                found: 2,
            }],
            stats: BackupStats::default(),
        }
    }

    #[test]
    fn manifest_round_trip() {
        let m = sample();
        let bytes = m.to_bytes(3).unwrap();
        assert_eq!(Manifest::from_bytes(&bytes).unwrap(), m);
        // A plain zstd frame of JSON, readable without pgward.
        let json: serde_json::Value =
            serde_json::from_slice(&zstd::decode_all(&bytes[..]).unwrap()).unwrap();
        assert_eq!(json["system_identifier"], (u64::MAX - 7).to_string());
        assert_eq!(json["files"][1]["blocks"][0]["pieces"][0]["len"], 5);
        assert_eq!(m.block_ids().count(), 1);
    }

    #[tokio::test]
    async fn store_refuses_to_replace() {
        let s = crate::storage::memory::MemoryStorage::new();
        let m = sample();
        m.store(&s, 3).await.unwrap();
        // The same bytes again are this manifest (a retry whose first answer was lost) ...
        m.store(&s, 3).await.unwrap();
        // ... other content under the label is another backup's: refused.
        assert!(m.store(&s, 9).await.is_err());
        assert_eq!(Manifest::load(&s, &m.label).await.unwrap(), m);
        assert!(Manifest::load(&s, "nope").await.is_err());
    }
}
