//! STUB (helper B writes the real one).
use crate::pg::binaries::{PgBinaries, RunAs};
use anyhow::Result;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceLimits {
    pub max_connections: u32,
    pub max_worker_processes: u32,
    pub max_wal_senders: u32,
    pub max_prepared_xacts: u32,
    pub max_locks_per_xact: u32,
    pub data_checksums: bool,
}

pub fn read_limits(_bins: &PgBinaries, _datadir: &Path) -> Result<SourceLimits> {
    todo!()
}
pub fn scratch_settings(
    _limits: &SourceLimits,
    _data_dir: &Path,
    _extra: &[(String, String)],
) -> Result<Vec<(String, String)>> {
    todo!()
}
pub fn isolate_files(_data_dir: &Path, _run_as: &RunAs) -> Result<Vec<String>> {
    todo!()
}
