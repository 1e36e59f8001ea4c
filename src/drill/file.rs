//! Drill files (`restore-tests/*.toml`): what one drill restores, to which target, what it
//! checks and what it must take at most. Parsed the way pgward.toml is: unknown keys and bad
//! values are refused with the file and line.
//!
//! SKELETON: the types are the interface the drill run uses; parsing is being written.

use crate::drill::expect::Expect;
use anyhow::Result;
use chrono::{DateTime, Utc};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One drill, as its file describes it, with every default filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Drill {
    /// `name` (default: the file's stem).
    pub name: String,
    /// The file it was read from.
    pub origin: PathBuf,
    pub from: DrillFrom,
    /// `backup`: the label of the backup (or, for `from = "dump"`, the dump) to restore;
    /// `None` = the newest complete one.
    pub backup: Option<String>,
    pub target: Target,
    /// `database`: where a marker drill commits its markers (default `postgres`).
    pub database: String,
    /// `marker_table` (default `pgward_drill`, created by pgward in `database`).
    pub marker_table: Option<String>,
    /// `databases`: a dump drill restores these databases of the dump (empty = all of them).
    pub databases: Vec<String>,
    /// `timeout`: the whole drill (default 1h).
    pub timeout: Duration,
    pub max_rto: Option<Duration>,
    pub max_rpo: Option<Duration>,
    /// `scratch_dir`: where the scratch copy goes (default `[drill] scratch_dir`).
    pub scratch_dir: Option<PathBuf>,
    /// `[settings]`: extra settings for the scratch server, applied after pgward's own
    /// isolation settings except those isolation forbids overriding.
    pub settings: Vec<(String, String)>,
    pub checks: Checks,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrillFrom {
    Backup,
    Dump,
}

impl DrillFrom {
    pub fn as_str(self) -> &'static str {
        match self {
            DrillFrom::Backup => "backup",
            DrillFrom::Dump => "dump",
        }
    }
}

/// `target`: `"marker"`, `"latest"`, `"immediate"`, `{ time = "RFC 3339" }`,
/// `{ ago = "15m" }` (a time relative to the drill's start) or `{ name = "restore point" }`.
/// Dump drills take no target (a dump is one point).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Marker,
    Latest,
    Immediate,
    Time(DateTime<Utc>),
    Ago(Duration),
    Name(String),
}

/// `[checks]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Checks {
    /// `pg_amcheck --heapallindexed` on every database (default true).
    pub amcheck: bool,
    /// Every table read through `pg_dump` into a hashing sink (default false).
    pub read_all: bool,
    /// `pg_checksums --check` on the stopped copy when the cluster has data checksums
    /// (default true; "skipped" when it has none).
    pub checksums: bool,
    pub sql: Vec<SqlCheck>,
    pub rows: Vec<RowsCheck>,
}

/// `[[checks.sql]]`: a query whose first column of the first row must meet `expect`.
#[derive(Debug, Clone, PartialEq)]
pub struct SqlCheck {
    pub database: String,
    pub query: String,
    pub expect: Expect,
}

/// `[[checks.rows]]`: `count(*)` of `table` in the copy compared with the source.
#[derive(Debug, Clone, PartialEq)]
pub struct RowsCheck {
    pub database: String,
    pub table: String,
    pub tolerance: Tolerance,
}

/// How far the copy's row count may be from the source's: `tolerance = 100` (rows) or
/// `tolerance = "5%"` (of the source's count). Default 0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Tolerance {
    Rows(u64),
    Percent(f64),
}

impl Drill {
    /// Parses drill text; `origin` is the file (its stem is the default name).
    pub fn parse(_text: &str, _origin: &Path) -> Result<Drill> {
        todo!("being written")
    }

    /// Reads one drill file.
    pub fn load(_path: &Path) -> Result<Drill> {
        todo!("being written")
    }
}

/// The drills directory: `[drill] tests` relative to pgward.toml's directory, default
/// `restore-tests` beside it.
pub fn tests_dir(_cfg: &crate::config::Config, _config_path: &Path) -> PathBuf {
    todo!("being written")
}

/// Every `*.toml` in `dir`, in name order; two drills with one name are refused.
pub fn load_dir(_dir: &Path) -> Result<Vec<Drill>> {
    todo!("being written")
}

/// The drills `names` ask for (or all with `all`), in the order asked; an unknown name is an
/// error listing the known ones.
pub fn select(_drills: Vec<Drill>, _names: &[String], _all: bool) -> Result<Vec<Drill>> {
    todo!("being written")
}
