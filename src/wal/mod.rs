//! WAL archiving machinery shared by `wal-push`, `wal-fetch` and the prefetcher: checking a file
//! before it is archived, storing and fetching one file, and the local spool that push-ahead and
//! prefetch use.

pub mod background;
pub mod detached;
pub mod fetch;
pub mod prefetch;
pub mod push;
pub mod spool;
pub mod validate;
