//! The long page header at the start of every WAL segment, and the checks `archive-push`
//! runs on a segment before storing it.
//!
//! The first page of each segment carries `XLogLongPageHeaderData`
//! (`src/include/access/xlog_internal.h`): the page magic (which PostgreSQL release wrote it),
//! the system identifier of the cluster, the segment size and the WAL address of the page.
//! [`check_segment`] compares those with the repository and with the file's name, so a file
//! from another cluster, a recycled or renamed segment, or a truncated copy is refused before
//! it can be archived under a name that a restore would trust.
//!
//! Layout (little-endian, x86_64, 40 bytes):
//!
//! | offset | field             | type |
//! |--------|-------------------|------|
//! | 0      | `xlp_magic`       | u16  |
//! | 2      | `xlp_info`        | u16  |
//! | 4      | `xlp_tli`         | u32  |
//! | 8      | `xlp_pageaddr`    | u64  |
//! | 16     | `xlp_rem_len`     | u32  |
//! | 20     | (padding)         |      |
//! | 24     | `xlp_sysid`       | u64  |
//! | 32     | `xlp_seg_size`    | u32  |
//! | 36     | `xlp_xlog_blcksz` | u32  |

use super::walname::is_valid_seg_size;
use super::{Lsn, Timeline, WalSegmentName};

/// `xlp_info` flag: this page has the long header (set on the first page of each segment).
pub const XLP_LONG_HEADER: u16 = 0x0002;

/// `sizeof(XLogLongPageHeaderData)` on 64-bit platforms.
pub const LONG_PAGE_HEADER_SIZE: usize = 40;

/// `XLOG_PAGE_MAGIC` of each supported major version. The magic changes whenever the WAL
/// format does, so it identifies the release that wrote a segment.
const PAGE_MAGICS: &[(u16, u32)] = &[
    (0xD097, 10),
    (0xD098, 11),
    (0xD101, 12),
    (0xD106, 13),
    (0xD10D, 14),
    (0xD110, 15),
    (0xD113, 16),
    (0xD116, 17),
];

/// The PostgreSQL major version whose WAL pages carry `magic`, if it is one pgward knows.
pub fn major_version_for_magic(magic: u16) -> Option<u32> {
    PAGE_MAGICS
        .iter()
        .find(|(m, _)| *m == magic)
        .map(|&(_, version)| version)
}

/// The fields of `XLogLongPageHeaderData`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LongPageHeader {
    pub magic: u16,
    pub info: u16,
    /// Timeline of the first record on the page. Not necessarily the timeline in the file
    /// name: the first segment of a new timeline begins with a page copied from the old one.
    pub tli: Timeline,
    /// WAL address of this page; for the first page, the start of the segment.
    pub pageaddr: Lsn,
    pub rem_len: u32,
    pub sysid: u64,
    pub seg_size: u32,
    pub xlog_blcksz: u32,
}

impl LongPageHeader {
    /// Reads the long header from the start of `data` (at least [`LONG_PAGE_HEADER_SIZE`]
    /// bytes). Checks only that the bytes are there and that the long-header flag is set;
    /// [`check_segment`] checks the values.
    pub fn parse(data: &[u8]) -> Result<Self, WalPageError> {
        let too_short = || WalPageError::TooShort { len: data.len() };
        let header = data.get(..LONG_PAGE_HEADER_SIZE).ok_or_else(too_short)?;
        let u16_at = |at: usize| {
            header
                .get(at..at + 2)
                .and_then(|b| b.try_into().ok())
                .map(u16::from_le_bytes)
                .ok_or_else(too_short)
        };
        let u32_at = |at: usize| {
            header
                .get(at..at + 4)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_le_bytes)
                .ok_or_else(too_short)
        };
        let u64_at = |at: usize| {
            header
                .get(at..at + 8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
                .ok_or_else(too_short)
        };
        let info = u16_at(2)?;
        if info & XLP_LONG_HEADER == 0 {
            return Err(WalPageError::NoLongHeader { info });
        }
        Ok(LongPageHeader {
            magic: u16_at(0)?,
            info,
            tli: Timeline(u32_at(4)?),
            pageaddr: Lsn(u64_at(8)?),
            rem_len: u32_at(16)?,
            sysid: u64_at(24)?,
            seg_size: u32_at(32)?,
            xlog_blcksz: u32_at(36)?,
        })
    }

    /// The PostgreSQL major version that wrote this page, if known.
    pub fn major_version(&self) -> Option<u32> {
        major_version_for_magic(self.magic)
    }
}

/// Checks that `data` is a whole WAL segment (or `.partial`, which is always full-size too) of
/// the cluster `expected_sysid`, and that its content matches `name`.
///
/// Deliberately not checked: `xlp_tli` against the name's timeline. The first segment of a new
/// timeline starts with a page PostgreSQL copied from the old timeline, so they legitimately
/// differ.
pub fn check_segment(
    data: &[u8],
    name: &WalSegmentName,
    expected_sysid: u64,
    expected_seg_size: u32,
) -> Result<LongPageHeader, WalPageError> {
    check_segment_header(
        data,
        data.len() as u64,
        name,
        expected_sysid,
        expected_seg_size,
    )
}

/// [`check_segment`] for a file that is streamed rather than held in memory: `first_page` is
/// the start of the file (at least [`LONG_PAGE_HEADER_SIZE`] bytes; the first WAL page is
/// enough) and `file_len` its full length.
pub fn check_segment_header(
    first_page: &[u8],
    file_len: u64,
    name: &WalSegmentName,
    expected_sysid: u64,
    expected_seg_size: u32,
) -> Result<LongPageHeader, WalPageError> {
    let seg_size = u64::from(expected_seg_size);
    if !is_valid_seg_size(seg_size) {
        return Err(WalPageError::InvalidSegSize {
            seg_size: expected_seg_size,
        });
    }
    if file_len != seg_size {
        return Err(WalPageError::WrongSize {
            segment: *name,
            len: file_len,
            expected: expected_seg_size,
        });
    }
    let header = LongPageHeader::parse(first_page)?;
    if header.major_version().is_none() {
        return Err(WalPageError::UnknownMagic {
            segment: *name,
            magic: header.magic,
        });
    }
    if header.sysid != expected_sysid {
        return Err(WalPageError::SysidMismatch {
            segment: *name,
            found: header.sysid,
            expected: expected_sysid,
        });
    }
    if header.seg_size != expected_seg_size {
        return Err(WalPageError::SegSizeMismatch {
            segment: *name,
            found: header.seg_size,
            expected: expected_seg_size,
        });
    }
    if !name.is_valid_for(seg_size) {
        return Err(WalPageError::NameOutOfRange {
            segment: *name,
            seg_size: expected_seg_size,
        });
    }
    let expected_addr = name.start_lsn(seg_size);
    if header.pageaddr != expected_addr {
        return Err(WalPageError::PageAddrMismatch {
            segment: *name,
            found: header.pageaddr,
            expected: expected_addr,
        });
    }
    Ok(header)
}

/// Why a WAL segment was refused. Each message gives the values found and expected and what
/// the mismatch usually means.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WalPageError {
    #[error(
        "WAL data is {len} bytes, shorter than the {LONG_PAGE_HEADER_SIZE}-byte long page \
         header: the file is empty or truncated"
    )]
    TooShort { len: usize },
    #[error(
        "WAL data does not start with a long page header (xlp_info = {info:#06X}, flag 0x0002 \
         not set): it is not the start of a WAL segment, or not WAL at all (a zero-filled, \
         pre-allocated or overwritten file?)"
    )]
    NoLongHeader { info: u16 },
    #[error(
        "{seg_size} bytes is not a valid WAL segment size (PostgreSQL uses powers of two from \
         1 MiB to 1 GiB): check the segment size recorded for this repository"
    )]
    InvalidSegSize { seg_size: u32 },
    #[error(
        "WAL segment {segment} is {len} bytes, but this repository's segment size is \
         {expected} bytes: segments and .partial files are always full-size, so the file is \
         truncated (interrupted copy, full disk?) or comes from a cluster initialised with a \
         different --wal-segsize"
    )]
    WrongSize {
        segment: WalSegmentName,
        len: u64,
        expected: u32,
    },
    #[error(
        "WAL segment {segment} has page magic {magic:#06X}, which no supported PostgreSQL \
         version writes (known: 10 to 17): the file is not WAL, is corrupt, or was written by \
         an unsupported PostgreSQL version"
    )]
    UnknownMagic { segment: WalSegmentName, magic: u16 },
    #[error(
        "WAL segment {segment} belongs to database system identifier {found}, but this \
         repository belongs to {expected}: is archive_command pointing at the right repository \
         (another cluster's config)?"
    )]
    SysidMismatch {
        segment: WalSegmentName,
        found: u64,
        expected: u64,
    },
    #[error(
        "WAL segment {segment} was written with a segment size of {found} bytes, but this \
         repository's segment size is {expected} bytes: the cluster was initialised with a \
         different --wal-segsize than the repository records"
    )]
    SegSizeMismatch {
        segment: WalSegmentName,
        found: u32,
        expected: u32,
    },
    #[error(
        "{segment} is not a valid WAL segment name for a segment size of {seg_size} bytes: its \
         last 8 digits are out of range, so PostgreSQL cannot have written it (renamed file?)"
    )]
    NameOutOfRange {
        segment: WalSegmentName,
        seg_size: u32,
    },
    #[error(
        "WAL segment {segment} starts at WAL address {found}, but a file with that name must \
         start at {expected}: the content does not match the name (renamed, recycled or \
         garbage file)"
    )]
    PageAddrMismatch {
        segment: WalSegmentName,
        found: Lsn,
        expected: Lsn,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG16: u32 = 16 * 1024 * 1024;
    const SYSID: u64 = 7_301_234_567_890_123_456;

    fn name(s: &str) -> WalSegmentName {
        WalSegmentName::parse(s).unwrap()
    }

    /// A segment-sized buffer whose first page has the long header PostgreSQL 15 would write
    /// for `segment`.
    fn synthetic_segment(segment: &WalSegmentName, seg_size: u32) -> Vec<u8> {
        let mut data = vec![0u8; seg_size as usize];
        write_header(
            &mut data,
            &LongPageHeader {
                magic: 0xD110,
                info: XLP_LONG_HEADER,
                tli: segment.tli,
                pageaddr: segment.start_lsn(u64::from(seg_size)),
                rem_len: 0,
                sysid: SYSID,
                seg_size,
                xlog_blcksz: 8192,
            },
        );
        data
    }

    fn write_header(data: &mut [u8], h: &LongPageHeader) {
        data[0..2].copy_from_slice(&h.magic.to_le_bytes());
        data[2..4].copy_from_slice(&h.info.to_le_bytes());
        data[4..8].copy_from_slice(&h.tli.0.to_le_bytes());
        data[8..16].copy_from_slice(&h.pageaddr.0.to_le_bytes());
        data[16..20].copy_from_slice(&h.rem_len.to_le_bytes());
        data[24..32].copy_from_slice(&h.sysid.to_le_bytes());
        data[32..36].copy_from_slice(&h.seg_size.to_le_bytes());
        data[36..40].copy_from_slice(&h.xlog_blcksz.to_le_bytes());
    }

    fn header_of(data: &[u8]) -> LongPageHeader {
        LongPageHeader::parse(data).unwrap()
    }

    #[test]
    fn accepts_a_matching_segment() {
        let n = name("0000000200000016000000B3");
        let data = synthetic_segment(&n, SEG16);
        let h = check_segment(&data, &n, SYSID, SEG16).unwrap();
        assert_eq!(h.pageaddr, "16/B3000000".parse().unwrap());
        assert_eq!(h.tli, Timeline(2));
        assert_eq!(h.major_version(), Some(15));
        assert_eq!(h.xlog_blcksz, 8192);
    }

    #[test]
    fn accepts_a_page_from_the_previous_timeline() {
        // The first segment of timeline 2 starts with a page written on timeline 1.
        let n = name("000000020000000000000005");
        let mut data = synthetic_segment(&n, SEG16);
        let mut h = header_of(&data);
        h.tli = Timeline(1);
        write_header(&mut data, &h);
        assert_eq!(
            check_segment(&data, &n, SYSID, SEG16).unwrap().tli,
            Timeline(1)
        );
    }

    #[test]
    fn parse_refuses_short_data() {
        for len in [0, 1, 39] {
            let err = LongPageHeader::parse(&vec![0u8; len]).unwrap_err();
            assert_eq!(err, WalPageError::TooShort { len });
            assert!(err.to_string().contains("truncated"), "{err}");
        }
    }

    #[test]
    fn refuses_a_page_without_the_long_header() {
        let n = name("000000010000000000000003");
        let data = vec![0u8; SEG16 as usize];
        let err = check_segment(&data, &n, SYSID, SEG16).unwrap_err();
        assert_eq!(err, WalPageError::NoLongHeader { info: 0 });
        assert!(err.to_string().contains("zero-filled"), "{err}");
    }

    #[test]
    fn refuses_wrong_file_sizes() {
        let n = name("000000010000000000000003");
        let data = synthetic_segment(&n, SEG16);
        for len in [0, 39, 8192, SEG16 as usize - 1] {
            let err = check_segment(&data[..len], &n, SYSID, SEG16).unwrap_err();
            assert!(
                matches!(err, WalPageError::WrongSize { len: l, expected: SEG16, .. } if l == len as u64),
                "{err}"
            );
            assert!(err.to_string().contains("truncated"), "{err}");
        }
        let mut longer = data.clone();
        longer.push(0);
        assert!(matches!(
            check_segment(&longer, &n, SYSID, SEG16),
            Err(WalPageError::WrongSize { .. })
        ));
    }

    #[test]
    fn refuses_an_invalid_expected_segment_size() {
        let n = name("000000010000000000000003");
        for bad in [0, 40, 3 * 1024 * 1024] {
            let err = check_segment(&[0u8; 64], &n, SYSID, bad).unwrap_err();
            assert_eq!(err, WalPageError::InvalidSegSize { seg_size: bad });
        }
    }

    #[test]
    fn refuses_an_unknown_magic() {
        let n = name("000000010000000000000003");
        let mut data = synthetic_segment(&n, SEG16);
        let mut h = header_of(&data);
        h.magic = 0xD093; // PostgreSQL 9.6
        write_header(&mut data, &h);
        let err = check_segment(&data, &n, SYSID, SEG16).unwrap_err();
        assert!(
            matches!(err, WalPageError::UnknownMagic { magic: 0xD093, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("0xD093"), "{err}");
        assert!(err.to_string().contains("unsupported PostgreSQL"), "{err}");
    }

    #[test]
    fn refuses_another_clusters_segment() {
        let n = name("000000010000000000000003");
        let data = synthetic_segment(&n, SEG16);
        let err = check_segment(&data, &n, SYSID + 1, SEG16).unwrap_err();
        assert_eq!(
            err,
            WalPageError::SysidMismatch {
                segment: n,
                found: SYSID,
                expected: SYSID + 1
            }
        );
        let msg = err.to_string();
        assert!(msg.contains(&SYSID.to_string()), "{msg}");
        assert!(msg.contains(&(SYSID + 1).to_string()), "{msg}");
        assert!(msg.contains("000000010000000000000003"), "{msg}");
        assert!(msg.contains("archive_command"), "{msg}");
    }

    #[test]
    fn refuses_a_segment_size_mismatch_in_the_header() {
        let n = name("000000010000000000000003");
        let mut data = synthetic_segment(&n, SEG16);
        let mut h = header_of(&data);
        h.seg_size = 2 * SEG16;
        write_header(&mut data, &h);
        let err = check_segment(&data, &n, SYSID, SEG16).unwrap_err();
        assert_eq!(
            err,
            WalPageError::SegSizeMismatch {
                segment: n,
                found: 2 * SEG16,
                expected: SEG16
            }
        );
        assert!(err.to_string().contains("--wal-segsize"), "{err}");
    }

    #[test]
    fn refuses_a_name_out_of_range_for_the_segment_size() {
        // With 16 MiB segments the last 8 digits stop at 000000FF.
        let n = name("000000010000000000000100");
        let data = synthetic_segment(&name("000000010000000100000000"), SEG16);
        let err = check_segment(&data, &n, SYSID, SEG16).unwrap_err();
        assert!(matches!(err, WalPageError::NameOutOfRange { .. }), "{err}");
    }

    #[test]
    fn refuses_content_that_does_not_match_the_name() {
        // A recycled segment: PostgreSQL renamed an old file, whose header still says 0/2000000.
        let old = name("000000010000000000000002");
        let data = synthetic_segment(&old, SEG16);
        let n = name("000000010000000000000009");
        let err = check_segment(&data, &n, SYSID, SEG16).unwrap_err();
        assert_eq!(
            err,
            WalPageError::PageAddrMismatch {
                segment: n,
                found: Lsn(0x0200_0000),
                expected: Lsn(0x0900_0000)
            }
        );
        let msg = err.to_string();
        assert!(
            msg.contains("0/2000000") && msg.contains("0/9000000"),
            "{msg}"
        );
        assert!(msg.contains("renamed, recycled or garbage"), "{msg}");
    }

    #[test]
    fn checks_a_streamed_file_from_its_first_page() {
        let n = name("000000010000000000000003");
        let data = synthetic_segment(&n, SEG16);
        let first = &data[..8192];
        assert!(check_segment_header(first, u64::from(SEG16), &n, SYSID, SEG16).is_ok());
        assert!(matches!(
            check_segment_header(first, 8192, &n, SYSID, SEG16),
            Err(WalPageError::WrongSize { len: 8192, .. })
        ));
        assert_eq!(
            check_segment_header(&first[..20], u64::from(SEG16), &n, SYSID, SEG16),
            Err(WalPageError::TooShort { len: 20 })
        );
    }

    #[test]
    fn knows_the_supported_magics() {
        assert_eq!(major_version_for_magic(0xD106), Some(13));
        assert_eq!(major_version_for_magic(0xD10D), Some(14));
        assert_eq!(major_version_for_magic(0xD110), Some(15));
        assert_eq!(major_version_for_magic(0xD113), Some(16));
        assert_eq!(major_version_for_magic(0xD116), Some(17));
        assert_eq!(major_version_for_magic(0xD097), Some(10));
        assert_eq!(major_version_for_magic(0xD098), Some(11));
        assert_eq!(major_version_for_magic(0xD101), Some(12));
        assert_eq!(major_version_for_magic(0), None);
        assert_eq!(major_version_for_magic(0xD093), None);
    }
}
