//! The repository: what is stored where (`layout`), its identity (`identity`), and read models
//! rebuilt from listings (`wal_catalog`). There is no mutable central index.

pub mod catalog;
pub mod identity;
pub mod layout;
pub mod lock;
pub mod manifest;
pub mod wal_catalog;
