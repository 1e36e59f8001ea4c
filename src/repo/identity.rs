//! `repo.json`: which cluster a repository belongs to. Written once by `pgward init`; every
//! command reads it and refuses to mix clusters.

use crate::pg::control::ControlFile;
use crate::repo::layout::{FORMAT_VERSION, REPO_JSON};
use crate::storage::{PutOutcome, Storage, StorageError};
use anyhow::{Context, Result, bail};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Default size of base-backup blocks (fixed per repository at init).
pub const DEFAULT_BLOCK_SIZE: u64 = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoIdentity {
    pub format_version: u32,
    /// Kept as a string in JSON: it does not fit a JavaScript number.
    #[serde(with = "crate::repo::u64_string")]
    pub system_identifier: u64,
    pub pg_major: u32,
    pub wal_segment_size: u64,
    pub block_size: u64,
    pub created_at: String,
    pub created_by: String,
}

impl RepoIdentity {
    /// The identity of the cluster whose control file this is.
    pub fn for_cluster(control: &ControlFile, pg_major: u32) -> RepoIdentity {
        RepoIdentity {
            format_version: FORMAT_VERSION,
            system_identifier: control.system_identifier,
            pg_major,
            wal_segment_size: control.xlog_seg_size as u64,
            block_size: DEFAULT_BLOCK_SIZE,
            created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            created_by: format!("pgward {}", env!("CARGO_PKG_VERSION")),
        }
    }

    /// Refuses a cluster that is not the one this repository belongs to.
    pub fn check_cluster(&self, control: &ControlFile, pg_major: u32) -> Result<()> {
        if self.system_identifier != control.system_identifier {
            bail!(
                "this repository belongs to database system identifier {}, but the cluster has {}\n\
                 hint: one repository holds one cluster; point [repo] url at this cluster's own \
                 repository (a re-initialised cluster needs a new repository)",
                self.system_identifier,
                control.system_identifier
            );
        }
        if self.pg_major != pg_major {
            bail!(
                "this repository holds PostgreSQL {} but the cluster is PostgreSQL {pg_major}\n\
                 hint: after a major upgrade, start a new repository",
                self.pg_major
            );
        }
        if self.wal_segment_size != control.xlog_seg_size as u64 {
            bail!(
                "this repository's WAL segment size is {} bytes but the cluster's is {}",
                self.wal_segment_size,
                control.xlog_seg_size
            );
        }
        Ok(())
    }

    /// Reads `repo.json`; `None` when the repository has not been initialised. A repository in
    /// another format is refused, naming what to do.
    pub async fn load(storage: &dyn Storage) -> Result<Option<RepoIdentity>> {
        let Some(id) = RepoIdentity::load_any_format(storage).await? else {
            return Ok(None);
        };
        if id.format_version < FORMAT_VERSION {
            bail!(
                "repository {} is in format version {}; this pgward reads format {FORMAT_VERSION} \
                 (WAL filed in one directory per log number)\nhint: run `pgward init --upgrade` \
                 once, as the user that runs PostgreSQL; it moves the WAL keys, can be \
                 interrupted and run again, and archiving resumes when it is done",
                storage.describe(),
                id.format_version
            );
        }
        if id.format_version != FORMAT_VERSION {
            bail!(
                "repository format version {} is not supported by this pgward (supports \
                 {FORMAT_VERSION})\nhint: use the pgward version that wrote the repository",
                id.format_version
            );
        }
        Ok(Some(id))
    }

    /// Reads `repo.json` whatever its format version (for `init --upgrade`).
    pub async fn load_any_format(storage: &dyn Storage) -> Result<Option<RepoIdentity>> {
        let bytes = match storage.get(REPO_JSON).await {
            Ok(b) => b,
            Err(StorageError::NotFound(_)) => return Ok(None),
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("cannot read {REPO_JSON} from {}", storage.describe())
                });
            }
        };
        let id: RepoIdentity = serde_json::from_slice(&bytes).map_err(|e| {
            anyhow::anyhow!(
                "{REPO_JSON} in {} is not valid JSON for this version of pgward: {e}\nhint: it \
                 is written once by `pgward init` and never changes; restore it from a copy of \
                 the repository (it records the cluster's system identifier, PostgreSQL major \
                 version and WAL segment size)",
                storage.describe()
            )
        })?;
        Ok(Some(id))
    }

    /// Reads `repo.json` or explains how to create it.
    pub async fn require(storage: &dyn Storage) -> Result<RepoIdentity> {
        RepoIdentity::load(storage).await?.with_context(|| {
            format!(
                "repository {} is not initialised (no {REPO_JSON})\nhint: run `pgward init` once, as the user that runs PostgreSQL",
                storage.describe()
            )
        })
    }

    /// Writes `repo.json` unless one exists; returns the identity now in force.
    pub async fn create(storage: &dyn Storage, id: &RepoIdentity) -> Result<(RepoIdentity, bool)> {
        let body = serde_json::to_vec_pretty(id)?;
        match storage
            .put_if_absent(REPO_JSON, Bytes::from(body))
            .await
            .with_context(|| format!("cannot write {REPO_JSON} to {}", storage.describe()))?
        {
            PutOutcome::Written => Ok((id.clone(), true)),
            PutOutcome::AlreadyExists => Ok((RepoIdentity::require(storage).await?, false)),
        }
    }
}
