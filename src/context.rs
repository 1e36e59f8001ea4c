//! What every command needs: the configuration and the repository storage built from it.

use crate::config::{Config, RepoUrl};
use crate::events::{Events, LogSink};
use crate::retention::policy::Policy;
use crate::storage::DynStorage;
use crate::storage::local::LocalStorage;
use crate::storage::retry::{self, RetryPolicy};
use crate::storage::s3::S3Storage;
use anyhow::{Result, bail};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub struct Context {
    pub config: Config,
    /// Absolute path of the configuration file, handed to child processes and written into
    /// `restore_command`.
    pub config_path: PathBuf,
    pub storage: DynStorage,
    /// Where long work reports what happens (`events`); the command line logs it.
    pub events: Events,
    /// Cancels long work (a backup, a restore) cleanly: SIGINT/SIGTERM on the command line,
    /// the agent's shutdown, a test.
    pub cancel: CancellationToken,
    /// A stop was asked for: waits for a lease end now. On the command line the same token as
    /// `cancel`; in the agent it fires at the signal, `cancel` only after `stop_timeout`, so a
    /// job that has not begun (waiting for a lease) never begins, and one under way may end.
    pub stopping: CancellationToken,
    /// The policy in force when it is not the file's current text: the agent's, which keeps
    /// the last valid one when a reload finds the file broken. `None`: read the file.
    pub policy: Option<Arc<Policy>>,
    /// How long work waits for a lease held by another run of its own kind (a backup for a
    /// backup started by hand, an expire for an expire): zero on the command line (refused at
    /// once, naming the holder), `[agent] lease_wait` in the agent's jobs.
    pub lease_wait: Duration,
}

/// Whether the repository directory may be created (only `init` does that).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateRepo {
    Yes,
    No,
}

impl Context {
    /// Opens the repository named by the configuration, with retries and deadlines.
    pub async fn open(config: Config, config_path: PathBuf, create: CreateRepo) -> Result<Context> {
        let storage = open_storage(&config, create).await?;
        Ok(Context::with_storage(config, config_path, storage))
    }

    /// A context over a given storage (tests inject memory or faulty storage here).
    pub fn with_storage(config: Config, config_path: PathBuf, storage: DynStorage) -> Context {
        let cancel = CancellationToken::new();
        Context {
            config,
            config_path,
            storage,
            events: Arc::new(LogSink::new(false)),
            cancel: cancel.clone(),
            stopping: cancel,
            policy: None,
            lease_wait: Duration::ZERO,
        }
    }

    /// The retention and schedule policy in force: the agent's loaded one, else the file's
    /// (`policy` in the configuration, or the built-in default).
    pub fn policy(&self) -> Result<Policy> {
        match &self.policy {
            Some(p) => Ok(Policy::clone(p)),
            None => Policy::for_config(&self.config, &self.config_path),
        }
    }

    /// This repository's private corner of `wal.spool_dir`. Keyed by the repository URL so two
    /// clusters on one host sharing a spool directory never see each other's files.
    pub fn spool_dir(&self) -> PathBuf {
        let digest = Sha256::digest(self.config.repo.url.to_string().as_bytes());
        self.config.wal.spool_dir.join(hex::encode(&digest[..6]))
    }
}

/// The retry policy for one storage call, derived from `wal.timeout`: several attempts fit in
/// the deadline, and no single attempt may eat all of it.
pub fn retry_policy(config: &Config) -> RetryPolicy {
    let total = config.wal.timeout;
    RetryPolicy {
        attempts: 5,
        attempt_timeout: (total / 3).max(Duration::from_secs(1)),
        ..RetryPolicy::default()
    }
}

/// Builds the storage for `[repo] url`.
pub async fn open_storage(config: &Config, create: CreateRepo) -> Result<DynStorage> {
    let inner: DynStorage = match &config.repo.url {
        RepoUrl::Local(root) => {
            if !root.is_dir() {
                if create == CreateRepo::No {
                    bail!(
                        "repository directory {} does not exist\nhint: run `pgward init`, or check [repo] url",
                        root.display()
                    );
                }
                std::fs::create_dir_all(root).map_err(|e| {
                    anyhow::anyhow!("cannot create repository directory {}: {e}", root.display())
                })?;
            }
            Arc::new(LocalStorage::new(root.clone()))
        }
        RepoUrl::S3 { bucket, prefix } => Arc::new(
            S3Storage::connect(bucket.clone(), prefix.clone(), config.repo.s3.as_ref()).await?,
        ),
    };
    Ok(retry::wrap(inner, retry_policy(config)))
}
