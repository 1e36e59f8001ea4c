//! pgward: PostgreSQL WAL archiving, base backups and restore drills.
//!
//! The binary in `main.rs` is a thin shell around this library so that integration tests can
//! drive commands in-process with any [`storage::Storage`] (including the fault-injecting one).

pub mod agent;
pub mod backup;
pub mod cli;
pub mod clock;
pub mod codec;
pub mod commands;
pub mod config;
pub mod context;
pub mod drill;
pub mod dump;
pub mod events;
pub mod fsutil;
pub mod logging;
pub mod notify;
pub mod output;
pub mod owner;
pub mod pg;
pub mod process;
pub mod repo;
pub mod report;
pub mod restore;
pub mod retention;
pub mod status;
pub mod storage;
pub mod units;
pub mod verify;
pub mod wal;
