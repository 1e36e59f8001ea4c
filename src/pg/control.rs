//! `global/pg_control`: the cluster's identity (system identifier, segment size) and its last
//! checkpoint.
//!
//! pgward binds a repository to one cluster through the system identifier read here, and uses
//! the segment size for all WAL arithmetic. The file holds `ControlFileData`
//! (`src/include/catalog/pg_control.h`) at its start, followed by zeros up to
//! `PG_CONTROL_FILE_SIZE` (8192) bytes; the struct ends with a CRC-32C of all bytes before the
//! `crc` field, which is verified before any value is trusted.
//!
//! Supported formats (`pg_control_version`):
//! - 1300: PostgreSQL 13 to 16.
//! - 1700: PostgreSQL 17. `CheckPoint` gained `int wal_level` right after `bool
//!   fullPageWrites`, in what was padding before the 8-byte aligned `nextXid`, so every offset
//!   read here is the same as in 1300.
//!
//! Offsets are derived with C alignment rules for x86_64 (the only layout pgward builds for)
//! and checked against `pg_controldata` output in `tests/pg_control_real.rs`:
//!
//! | offset | field                               |
//! |--------|-------------------------------------|
//! | 0      | `system_identifier` u64             |
//! | 8      | `pg_control_version` u32            |
//! | 12     | `catalog_version_no` u32            |
//! | 16     | `state` (enum DBState) u32          |
//! | 24     | `time` i64                          |
//! | 32     | `checkPoint` u64                    |
//! | 40     | `checkPointCopy.redo` u64           |
//! | 48     | `checkPointCopy.ThisTimeLineID` u32 |
//! | 216    | `blcksz` u32                        |
//! | 224    | `xlog_blcksz` u32                   |
//! | 228    | `xlog_seg_size` u32                 |
//! | 252    | `data_checksum_version` u32         |
//! | 288    | `crc` u32 (CRC-32C of bytes 0..288) |

use std::fmt;
use std::path::Path;

use anyhow::Context;

use super::walname::is_valid_seg_size;
use super::{Lsn, Timeline};

/// Physical size of `pg_control` (`PG_CONTROL_FILE_SIZE`); the struct uses the first few
/// hundred bytes, the rest is zeros.
pub const PG_CONTROL_FILE_SIZE: usize = 8192;

/// Path of the control file inside a data directory.
pub const PG_CONTROL_PATH: &str = "global/pg_control";

/// Byte offsets of the fields pgward reads, for one `pg_control_version`.
struct Layout {
    system_identifier: usize,
    catalog_version_no: usize,
    state: usize,
    checkpoint: usize,
    checkpoint_redo: usize,
    checkpoint_tli: usize,
    blcksz: usize,
    xlog_blcksz: usize,
    xlog_seg_size: usize,
    data_checksum_version: usize,
    crc: usize,
}

/// Where `pg_control_version` lives; PostgreSQL keeps it at this offset in every format so
/// that a reader can tell formats apart before knowing the layout.
const VERSION_OFFSET: usize = 8;

/// Layout shared by 1300 and 1700 (see the module documentation for why they agree).
const LAYOUT_1300: Layout = Layout {
    system_identifier: 0,
    catalog_version_no: 12,
    state: 16,
    checkpoint: 32,
    checkpoint_redo: 40,
    checkpoint_tli: 48,
    blcksz: 216,
    xlog_blcksz: 224,
    xlog_seg_size: 228,
    data_checksum_version: 252,
    crc: 288,
};

fn layout_for(pg_control_version: u32) -> Option<&'static Layout> {
    match pg_control_version {
        1300 | 1700 => Some(&LAYOUT_1300),
        _ => None,
    }
}

/// Cluster state (`DBState`), as `pg_controldata` prints it under "Database cluster state".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DbState {
    StartingUp,
    ShutDown,
    ShutDownInRecovery,
    ShuttingDown,
    InCrashRecovery,
    InArchiveRecovery,
    InProduction,
    Unknown(u32),
}

impl DbState {
    pub fn from_raw(raw: u32) -> DbState {
        match raw {
            0 => DbState::StartingUp,
            1 => DbState::ShutDown,
            2 => DbState::ShutDownInRecovery,
            3 => DbState::ShuttingDown,
            4 => DbState::InCrashRecovery,
            5 => DbState::InArchiveRecovery,
            6 => DbState::InProduction,
            other => DbState::Unknown(other),
        }
    }
}

impl fmt::Display for DbState {
    /// The same words as `pg_controldata` (`dbState()` in `src/bin/pg_controldata`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbState::StartingUp => f.write_str("starting up"),
            DbState::ShutDown => f.write_str("shut down"),
            DbState::ShutDownInRecovery => f.write_str("shut down in recovery"),
            DbState::ShuttingDown => f.write_str("shutting down"),
            DbState::InCrashRecovery => f.write_str("in crash recovery"),
            DbState::InArchiveRecovery => f.write_str("in archive recovery"),
            DbState::InProduction => f.write_str("in production"),
            DbState::Unknown(raw) => write!(f, "unrecognized status code {raw}"),
        }
    }
}

/// The parts of `pg_control` pgward uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlFile {
    pub system_identifier: u64,
    pub pg_control_version: u32,
    pub catalog_version: u32,
    pub state: DbState,
    /// "Latest checkpoint location".
    pub checkpoint_lsn: Lsn,
    /// "Latest checkpoint's REDO location".
    pub checkpoint_redo: Lsn,
    /// "Latest checkpoint's TimeLineID".
    pub checkpoint_timeline: Timeline,
    pub blcksz: u32,
    pub xlog_blcksz: u32,
    pub xlog_seg_size: u32,
    /// 0 when data checksums are off.
    pub data_checksum_version: u32,
}

/// Why `pg_control` bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlFileError {
    #[error(
        "pg_control is {len} bytes, too short to hold the control data ({needed} bytes needed; \
         the file is normally {PG_CONTROL_FILE_SIZE}): it is truncated"
    )]
    TooShort { len: usize, needed: usize },
    #[error(
        "pg_control has format version {version}, which looks byte-swapped: the cluster was \
         created on a machine of different endianness"
    )]
    ByteSwapped { version: u32 },
    #[error(
        "pg_control has format version {version}, which pgward cannot read (supported: 1300 for \
         PostgreSQL 13 to 16, 1700 for PostgreSQL 17): unsupported PostgreSQL version, or the \
         file is corrupt"
    )]
    UnsupportedVersion { version: u32 },
    #[error(
        "pg_control CRC mismatch: stored {stored:#010X}, computed {computed:#010X}: the file is \
         corrupt or was copied while being written"
    )]
    CrcMismatch { stored: u32, computed: u32 },
    #[error(
        "pg_control gives a WAL segment size of {seg_size} bytes, which is not a power of two \
         from 1 MiB to 1 GiB: the file is corrupt"
    )]
    InvalidSegSize { seg_size: u32 },
}

impl ControlFile {
    /// Parses and CRC-checks the contents of `pg_control`.
    pub fn parse(data: &[u8]) -> Result<Self, ControlFileError> {
        let version = read_u32(data, VERSION_OFFSET).ok_or(ControlFileError::TooShort {
            len: data.len(),
            needed: VERSION_OFFSET + 4,
        })?;
        let Some(layout) = layout_for(version) else {
            // Same test as PostgreSQL's ReadControlFile for a file from the other byte order.
            if version % 65536 == 0 && version / 65536 != 0 {
                return Err(ControlFileError::ByteSwapped { version });
            }
            return Err(ControlFileError::UnsupportedVersion { version });
        };
        let needed = layout.crc + 4;
        let (Some(covered), Some(stored)) = (data.get(..layout.crc), read_u32(data, layout.crc))
        else {
            return Err(ControlFileError::TooShort {
                len: data.len(),
                needed,
            });
        };
        let computed = crc32c::crc32c(covered);
        if computed != stored {
            return Err(ControlFileError::CrcMismatch { stored, computed });
        }
        // Every offset below is < layout.crc, and `covered` has exactly those bytes, so these
        // reads cannot fail; `get` keeps that a checked fact rather than an assumption.
        let u32_at = |at| read_u32(covered, at).unwrap_or_default();
        let u64_at = |at| read_u64(covered, at).unwrap_or_default();
        let xlog_seg_size = u32_at(layout.xlog_seg_size);
        if !is_valid_seg_size(u64::from(xlog_seg_size)) {
            return Err(ControlFileError::InvalidSegSize {
                seg_size: xlog_seg_size,
            });
        }
        Ok(ControlFile {
            system_identifier: u64_at(layout.system_identifier),
            pg_control_version: version,
            catalog_version: u32_at(layout.catalog_version_no),
            state: DbState::from_raw(u32_at(layout.state)),
            checkpoint_lsn: Lsn(u64_at(layout.checkpoint)),
            checkpoint_redo: Lsn(u64_at(layout.checkpoint_redo)),
            checkpoint_timeline: Timeline(u32_at(layout.checkpoint_tli)),
            blcksz: u32_at(layout.blcksz),
            xlog_blcksz: u32_at(layout.xlog_blcksz),
            xlog_seg_size,
            data_checksum_version: u32_at(layout.data_checksum_version),
        })
    }

    /// Reads `<pgdata>/global/pg_control`.
    pub fn read(pgdata: &Path) -> anyhow::Result<Self> {
        let path = pgdata.join(PG_CONTROL_PATH);
        let data = match std::fs::read(&path) {
            Ok(data) => data,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| {
                    format!(
                        "could not read {}: hint: is {} a PostgreSQL data directory?",
                        path.display(),
                        pgdata.display()
                    )
                });
            }
            Err(e) => {
                return Err(e).with_context(|| format!("could not read {}", path.display()));
            }
        };
        Self::parse(&data).with_context(|| format!("invalid control file {}", path.display()))
    }
}

fn read_u32(data: &[u8], at: usize) -> Option<u32> {
    let bytes = data.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

fn read_u64(data: &[u8], at: usize) -> Option<u64> {
    let bytes = data.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A control file as PostgreSQL 15 writes it, with a correct CRC.
    fn synthetic(version: u32) -> Vec<u8> {
        let mut data = vec![0u8; PG_CONTROL_FILE_SIZE];
        let mut put32 = |at: usize, v: u32| data[at..at + 4].copy_from_slice(&v.to_le_bytes());
        put32(8, version);
        put32(12, 202_209_061);
        put32(16, 6);
        put32(48, 3);
        put32(216, 8192);
        put32(224, 8192);
        put32(228, 16 * 1024 * 1024);
        put32(252, 1);
        data[0..8].copy_from_slice(&7_301_234_567_890_123_456u64.to_le_bytes());
        data[32..40].copy_from_slice(&0x0100_0028u64.to_le_bytes());
        data[40..48].copy_from_slice(&0x0100_0000u64.to_le_bytes());
        fix_crc(&mut data);
        data
    }

    fn fix_crc(data: &mut [u8]) {
        let crc = crc32c::crc32c(&data[..288]);
        data[288..292].copy_from_slice(&crc.to_le_bytes());
    }

    #[test]
    fn crc32c_is_the_castagnoli_check_value() {
        // PostgreSQL's INIT/COMP/FIN_CRC32C is standard CRC-32C: check value of "123456789".
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn parses_both_supported_versions() {
        for version in [1300, 1700] {
            let c = ControlFile::parse(&synthetic(version)).unwrap();
            assert_eq!(
                c,
                ControlFile {
                    system_identifier: 7_301_234_567_890_123_456,
                    pg_control_version: version,
                    catalog_version: 202_209_061,
                    state: DbState::InProduction,
                    checkpoint_lsn: Lsn(0x0100_0028),
                    checkpoint_redo: Lsn(0x0100_0000),
                    checkpoint_timeline: Timeline(3),
                    blcksz: 8192,
                    xlog_blcksz: 8192,
                    xlog_seg_size: 16 * 1024 * 1024,
                    data_checksum_version: 1,
                }
            );
        }
    }

    #[test]
    fn only_the_struct_is_needed() {
        let data = synthetic(1300);
        assert!(ControlFile::parse(&data[..292]).is_ok());
    }

    #[test]
    fn detects_a_flipped_byte() {
        for at in [0, 9, 100, 228, 287, 288] {
            let mut data = synthetic(1300);
            data[at] ^= 0x01;
            let err = ControlFile::parse(&data).unwrap_err();
            assert!(
                matches!(
                    err,
                    ControlFileError::CrcMismatch { .. }
                        | ControlFileError::UnsupportedVersion { .. }
                ),
                "byte {at}: {err}"
            );
        }
        let mut data = synthetic(1300);
        data[100] ^= 0x01;
        let err = ControlFile::parse(&data).unwrap_err();
        assert!(err.to_string().contains("CRC mismatch"), "{err}");
    }

    #[test]
    fn refuses_short_files() {
        let data = synthetic(1300);
        for len in [0, 4, 11, 12, 200, 288, 291] {
            let err = ControlFile::parse(&data[..len]).unwrap_err();
            assert!(
                matches!(err, ControlFileError::TooShort { len: l, .. } if l == len),
                "{len}: {err}"
            );
            assert!(err.to_string().contains("truncated"), "{err}");
        }
    }

    #[test]
    fn refuses_unknown_versions_by_name() {
        for version in [1201, 1800, 0] {
            let err = ControlFile::parse(&synthetic(version)).unwrap_err();
            assert_eq!(err, ControlFileError::UnsupportedVersion { version });
            assert!(err.to_string().contains(&version.to_string()), "{err}");
        }
        let swapped = 1300u32.swap_bytes();
        let err = ControlFile::parse(&synthetic(swapped)).unwrap_err();
        assert_eq!(err, ControlFileError::ByteSwapped { version: swapped });
    }

    #[test]
    fn refuses_an_impossible_segment_size() {
        let mut data = synthetic(1300);
        data[228..232].copy_from_slice(&0u32.to_le_bytes());
        fix_crc(&mut data);
        assert_eq!(
            ControlFile::parse(&data).unwrap_err(),
            ControlFileError::InvalidSegSize { seg_size: 0 }
        );
    }

    #[test]
    fn db_state_words() {
        assert_eq!(DbState::from_raw(1).to_string(), "shut down");
        assert_eq!(DbState::from_raw(6), DbState::InProduction);
        assert_eq!(DbState::from_raw(42), DbState::Unknown(42));
    }

    #[test]
    fn read_hints_at_a_wrong_directory() {
        let dir = tempfile::tempdir().unwrap();
        let err = ControlFile::read(dir.path()).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("global/pg_control"), "{msg}");
        assert!(msg.contains("a PostgreSQL data directory?"), "{msg}");

        std::fs::create_dir(dir.path().join("global")).unwrap();
        let mut data = synthetic(1300);
        data[100] ^= 1;
        std::fs::write(dir.path().join(PG_CONTROL_PATH), &data).unwrap();
        let msg = format!("{:#}", ControlFile::read(dir.path()).unwrap_err());
        assert!(
            msg.contains("global/pg_control") && msg.contains("CRC mismatch"),
            "{msg}"
        );

        std::fs::write(dir.path().join(PG_CONTROL_PATH), synthetic(1300)).unwrap();
        assert_eq!(
            ControlFile::read(dir.path()).unwrap().system_identifier,
            7_301_234_567_890_123_456
        );
    }
}
