//! PostgreSQL knowledge: LSNs, WAL file names, WAL page headers, timeline history files,
//! `pg_control`, `PG_VERSION`, `postmaster.pid`, configuration files, and running a scratch
//! server.
//!
//! This module owns every fact pgward relies on about PostgreSQL's on-disk formats, so the rest
//! of the code never slices a file name or reads a byte offset itself. The invariant it keeps:
//! everything that comes from outside (a file name, a file's bytes, a user's LSN) is parsed once
//! into a newtype or enum here, with checks, and parsing never panics, whatever the input.
//!
//! Formats follow the PostgreSQL sources for versions 13 to 17 (little-endian x86_64 layout):
//! `src/include/access/xlog_internal.h` (WAL names, page headers),
//! `src/include/catalog/pg_control.h` (control file) and
//! `src/backend/access/transam/timeline.c` (history files).

pub mod archiver;
pub mod backup_label;
pub mod binaries;
pub mod conf;
pub mod conn;
pub mod control;
pub mod history;
pub mod lsn;
pub mod page_checksum;
pub mod postmaster_pid;
pub mod scratch;
pub mod version;
pub mod wal_page;
pub mod wal_records;
pub mod walname;

pub use lsn::Lsn;
pub use walname::{Timeline, WalFileName, WalNameError, WalSegmentName};
