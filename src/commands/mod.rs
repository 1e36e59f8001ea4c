//! One file per command: its clap `Args` and an `async fn run(ctx, args)`.

pub mod backup;
pub mod demo;
pub mod detached;
pub mod info;
pub mod init;
pub mod restore;
pub mod wal_fetch;
pub mod wal_prefetch;
pub mod wal_push;
pub mod wal_push_ahead;

/// A WAL file that is not in the archive. `wal-fetch` exits 1 for it without a loud error:
/// recovery asks for files that do not exist as a matter of course (the next segment at the
/// end of the archive, history files of timelines that were never created).
#[derive(Debug, thiserror::Error)]
#[error("{0} is not in the archive")]
pub struct NotArchived(pub String);
