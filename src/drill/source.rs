//! SQL on the source server (`[postgres] conninfo`), for what a drill asks of it: the marker
//! rows and restore point of a marker drill, the row counts of `[[checks.rows]]`.
//!
//! Through `psql` from the configured binaries, like the scratch server's SQL: the drill's
//! steps are synchronous, and a `psql` under a deadline cannot hang the drill.

use crate::dump::programs::Programs;
use crate::pg::binaries::PgBinaries;
use crate::process;
use anyhow::{Result, bail};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(60);

pub struct SourceDb {
    programs: Programs,
    /// How the source is named in errors (the redacted conninfo).
    describe: String,
}

impl SourceDb {
    pub fn new(bins: PgBinaries, conninfo: &str) -> Result<SourceDb> {
        Ok(SourceDb {
            programs: Programs::new(bins, conninfo)?,
            describe: crate::pg::conn::redact_conninfo(conninfo),
        })
    }

    /// Runs `sql` on database `db`; psql's unaligned tuples-only output without the final
    /// newline (columns separated by `|`).
    pub fn psql(&self, db: &str, sql: &str) -> Result<String> {
        let mut cmd = self.programs.psql(db);
        cmd.args(["-c", sql]);
        let out = process::run(&mut cmd, TIMEOUT)?;
        if !out.success() {
            bail!(
                "SQL on the source ({}, database {db}) failed: {}\n{}",
                self.describe,
                sql.trim(),
                out.describe()
            );
        }
        Ok(out.stdout.trim_end_matches('\n').to_string())
    }
}
