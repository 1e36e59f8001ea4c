//! STUB (helper B writes the real one).
use crate::drill::file::{RowsCheck, SqlCheck};
use crate::drill::report::CheckResult;
use crate::drill::source::SourceDb;
use crate::pg::binaries::PgBinaries;
use crate::pg::scratch::ScratchCluster;
use std::path::Path;

pub fn amcheck(_server: &ScratchCluster) -> CheckResult {
    todo!()
}
pub fn read_all(_server: &ScratchCluster) -> (CheckResult, u64) {
    todo!()
}
pub fn checksums(_bins: &PgBinaries, _data_dir: &Path, _enabled: bool) -> CheckResult {
    todo!()
}
pub fn sql(_server: &ScratchCluster, _check: &SqlCheck) -> CheckResult {
    todo!()
}
pub fn rows(_source: &SourceDb, _server: &ScratchCluster, _check: &RowsCheck) -> CheckResult {
    todo!()
}
