//! One file per command: its clap `Args` and an `async fn run(ctx, args)`.

pub mod agent;
pub mod backup;
pub mod demo;
pub mod drill;
pub mod dump;
pub mod expire;
pub mod gc;
pub mod info;
pub mod init;
pub mod pin;
pub mod report;
pub mod restore;
pub mod restore_dump;
pub mod status;
pub mod unpin;
pub mod verify;
pub mod wal_fetch;
pub mod wal_prefetch;
pub mod wal_push;
pub mod wal_push_ahead;
