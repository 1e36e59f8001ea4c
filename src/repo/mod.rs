//! The repository: what is stored where (`layout`), its identity (`identity`), and read models
//! rebuilt from listings (`wal_catalog`). There is no mutable central index.

pub mod catalog;
pub mod dumps;
pub mod identity;
pub mod label;
pub mod layout;
pub mod lock;
pub mod manifest;
pub mod pins;
pub mod snapshot;
pub mod upgrade;
pub mod wal_catalog;

/// Serde for u64 values kept as JSON strings (system identifiers do not fit a JavaScript
/// number, and JSON readers in other languages would round them).
pub(crate) mod u64_string {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
