//! Restore drills: prove on a schedule that a backup or a dump really restores — to the exact
//! point asked, with the data checked — and measure RTO and RPO (DESIGN.md, "Restore drills").
//!
//! A drill is a file in `restore-tests/` ([`file`]). [`run::run_drill`] plans it (preflight
//! from the catalog, before anything is fetched), restores into a scratch directory through the
//! same code as `pgward restore` / `restore-dump`, starts a scratch server whose configuration
//! is pgward's own ([`isolation`]), proves the target ([`marker`] for `target = "marker"`),
//! runs the checks ([`checks`]) and writes one object to the repository: the report
//! `drills/<label>.json` ([`report`]).
//!
//! The invariants: a drill never writes to the repository except its report (its scratch
//! server does not archive, its `restore_command` is the read-only `wal-fetch`); it never
//! touches the source except for the marker rows and restore point of a marker drill; and
//! whatever happens — a failed phase, a timeout, Ctrl-C — its server is stopped and its
//! directory removed (unless `--keep`). A drill killed outright (SIGKILL) leaves a marker file
//! naming its process and postmaster; the next drill run reaps both.

pub mod checks;
pub mod expect;
pub mod file;
pub mod isolation;
pub mod marker;
pub mod preflight;
pub mod report;
pub mod run;
pub mod source;
