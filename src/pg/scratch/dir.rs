//! STUB (helper B writes the real one).
use super::postmaster::Postmaster;
use crate::pg::binaries::RunAs;
use anyhow::Result;
use std::path::{Path, PathBuf};

pub struct ScratchDir {
    root: PathBuf,
}

#[derive(Debug)]
pub struct Reaped {
    pub dir: PathBuf,
    pub postmaster: Option<u32>,
    pub warning: Option<String>,
}

impl ScratchDir {
    pub fn create(parent: &Path, name: &str, _run_as: &RunAs) -> Result<ScratchDir> {
        Ok(ScratchDir {
            root: parent.join(name),
        })
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }
    pub fn socket_dir(&self) -> PathBuf {
        self.root.join("sock")
    }
    pub fn log_file(&self) -> PathBuf {
        self.root.join("server.log")
    }
    pub fn tablespace_dir(&self, oid: u32) -> PathBuf {
        self.root.join("tblspc").join(oid.to_string())
    }
    pub fn record_postmaster(&self, _pm: &Postmaster) -> Result<()> {
        Ok(())
    }
    pub fn keep(self) -> PathBuf {
        self.root.clone()
    }
}

pub fn reap(_parent: &Path) -> Result<Vec<Reaped>> {
    Ok(vec![])
}
