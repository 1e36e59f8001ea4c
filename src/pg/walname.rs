//! Timelines and the names of the files PostgreSQL hands to `archive_command`.
//!
//! [`WalFileName::parse`] is the one place a WAL file name is taken apart: it checks the length,
//! the hex digits and the suffix, and returns an enum that command code matches on instead of
//! slicing strings. It accepts exactly what PostgreSQL writes (upper-case hex, see
//! `XLogFileName`, `TLHistoryFileName` and `BackupHistoryFileName` in
//! `src/include/access/xlog_internal.h`), so a file renamed by hand or produced by another tool
//! is refused with a message saying what is wrong, never silently archived under a name that
//! restore will not ask for. Parsing never panics, whatever the input (short, long, multibyte).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::Lsn;

/// Number of addressable bytes covered by one "xlogid", the middle 8 hex digits of a segment
/// name (`UINT64CONST(0x100000000)` in `XLogSegmentsPerXLogId`).
const XLOG_ID_SPAN: u64 = 0x1_0000_0000;

/// Smallest and largest WAL segment sizes `initdb --wal-segsize` accepts
/// (`WalSegMinSize`/`WalSegMaxSize`, `IsValidWalSegSize`).
pub const MIN_SEG_SIZE: u64 = 1024 * 1024;
pub const MAX_SEG_SIZE: u64 = 1024 * 1024 * 1024;

/// PostgreSQL's default WAL segment size.
pub const DEFAULT_SEG_SIZE: u64 = 16 * 1024 * 1024;

/// True if `seg_size` is a segment size PostgreSQL can use: a power of two from 1 MiB to 1 GiB.
/// The segment arithmetic in this module divides by the size, so values read from outside are
/// checked with this first.
pub fn is_valid_seg_size(seg_size: u64) -> bool {
    seg_size.is_power_of_two() && (MIN_SEG_SIZE..=MAX_SEG_SIZE).contains(&seg_size)
}

/// A timeline ID (`TimeLineID`). Printed as 8 upper-case hex digits, as in file names.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timeline(pub u32);

impl fmt::Display for Timeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08X}", self.0)
    }
}

impl FromStr for Timeline {
    type Err = WalNameError;

    /// Accepts the 8-hex-digit form (`00000001`), in either case: this parses user input and
    /// repository keys, not PostgreSQL file names.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = s.as_bytes();
        if bytes.len() != 8 || !bytes.iter().all(u8::is_ascii_hexdigit) {
            return Err(WalNameError::NotATimeline {
                input: s.to_owned(),
            });
        }
        u32::from_str_radix(s, 16)
            .map(Timeline)
            .map_err(|_| WalNameError::NotATimeline {
                input: s.to_owned(),
            })
    }
}

/// The name of one WAL segment: timeline, then the segment number split into "log" (high) and
/// "seg" (low) parts, each printed as 8 hex digits.
///
/// The derived order (timeline, log, seg) is the order PostgreSQL writes segments in.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct WalSegmentName {
    pub tli: Timeline,
    pub log: u32,
    pub seg: u32,
}

/// Written as its file name (`000000010000000000000003`), as in every report.
impl Serialize for WalSegmentName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl WalSegmentName {
    /// Parses a bare 24-hex-digit segment name (no suffix).
    pub fn parse(name: &str) -> Result<Self, WalNameError> {
        match WalFileName::parse(name)? {
            WalFileName::Segment(seg) => Ok(seg),
            _ => Err(WalNameError::NotASegment {
                name: name.to_owned(),
            }),
        }
    }

    /// Segments per xlogid for this segment size (`XLogSegmentsPerXLogId`).
    ///
    /// # Panics
    /// If `seg_size` is 0 or larger than 4 GiB; see [`is_valid_seg_size`].
    fn per_xlog_id(seg_size: u64) -> u64 {
        let per = XLOG_ID_SPAN / seg_size;
        assert!(per > 0, "WAL segment size {seg_size} is larger than 4 GiB");
        per
    }

    /// The segment number (`XLogFromFileName`): `log * segments per xlogid + seg`.
    /// Cannot overflow: `log` and `seg` are 32-bit and segments per xlogid is at most 2^32.
    ///
    /// # Panics
    /// If `seg_size` is 0 or larger than 4 GiB; see [`is_valid_seg_size`].
    pub fn segno(&self, seg_size: u64) -> u64 {
        u64::from(self.log) * Self::per_xlog_id(seg_size) + u64::from(self.seg)
    }

    /// The name of segment `segno` on timeline `tli` (`XLogFileName`).
    ///
    /// # Panics
    /// If `seg_size` is 0 or larger than 4 GiB; see [`is_valid_seg_size`].
    pub fn from_segno(tli: Timeline, segno: u64, seg_size: u64) -> Self {
        let per = Self::per_xlog_id(seg_size);
        // `as u32` matches the `(uint32)` casts in XLogFileName; it only truncates for segment
        // numbers past the end of the 64-bit address space.
        WalSegmentName {
            tli,
            log: (segno / per) as u32,
            seg: (segno % per) as u32,
        }
    }

    /// The LSN at which this segment starts.
    pub fn start_lsn(&self, seg_size: u64) -> Lsn {
        Lsn::from_segment(self.segno(seg_size), seg_size)
    }

    /// The following segment on the same timeline.
    pub fn next(&self, seg_size: u64) -> Self {
        Self::from_segno(self.tli, self.segno(seg_size).wrapping_add(1), seg_size)
    }

    /// True if the "seg" part is in range for this segment size, that is, PostgreSQL could
    /// have written this name (`seg < segments per xlogid`).
    pub fn is_valid_for(&self, seg_size: u64) -> bool {
        seg_size != 0 && seg_size <= XLOG_ID_SPAN && u64::from(self.seg) < XLOG_ID_SPAN / seg_size
    }
}

impl fmt::Display for WalSegmentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{:08X}{:08X}", self.tli, self.log, self.seg)
    }
}

impl FromStr for WalSegmentName {
    type Err = WalNameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Any file PostgreSQL archives through `archive_command`.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum WalFileName {
    /// `000000010000000000000003`: a complete WAL segment.
    Segment(WalSegmentName),
    /// `000000010000000000000003.partial`: the last, incomplete segment of a timeline that a
    /// promoted standby archives (full-size file, valid up to the switch point).
    Partial(WalSegmentName),
    /// `000000010000000000000003.00000028.backup`: a backup history file; `offset` is the
    /// backup's start position within the segment.
    Backup {
        segment: WalSegmentName,
        offset: u32,
    },
    /// `00000002.history`: a timeline history file.
    History(Timeline),
}

const PARTIAL_SUFFIX: &str = ".partial";
const BACKUP_SUFFIX: &str = ".backup";
const HISTORY_SUFFIX: &str = ".history";

impl WalFileName {
    /// Parses a file name as PostgreSQL writes it: upper-case hex only.
    pub fn parse(name: &str) -> Result<Self, WalNameError> {
        let shape = || WalNameError::BadShape {
            name: name.to_owned(),
        };
        // Everything PostgreSQL writes is ASCII; checking that first makes every byte offset
        // below a character boundary.
        if !name.is_ascii() {
            return Err(shape());
        }
        let (stem, suffix) = match name.find('.') {
            Some(dot) => (
                name.get(..dot).ok_or_else(shape)?,
                name.get(dot..).ok_or_else(shape)?,
            ),
            None => (name, ""),
        };
        match stem.len() {
            24 => {
                let segment = parse_segment_stem(name, stem)?;
                if suffix.is_empty() {
                    Ok(WalFileName::Segment(segment))
                } else if suffix == PARTIAL_SUFFIX {
                    Ok(WalFileName::Partial(segment))
                } else if let Some(offset) = backup_offset(suffix) {
                    let offset = parse_hex8(name, offset)?;
                    Ok(WalFileName::Backup { segment, offset })
                } else {
                    Err(WalNameError::UnknownSuffix {
                        name: name.to_owned(),
                        suffix: suffix.to_owned(),
                    })
                }
            }
            8 if suffix == HISTORY_SUFFIX => {
                Ok(WalFileName::History(Timeline(parse_hex8(name, stem)?)))
            }
            8 if !suffix.is_empty() => Err(WalNameError::UnknownSuffix {
                name: name.to_owned(),
                suffix: suffix.to_owned(),
            }),
            _ => Err(shape()),
        }
    }

    /// The timeline the file belongs to.
    pub fn timeline(&self) -> Timeline {
        match self {
            WalFileName::Segment(s) | WalFileName::Partial(s) => s.tli,
            WalFileName::Backup { segment, .. } => segment.tli,
            WalFileName::History(tli) => *tli,
        }
    }

    /// The segment the file is named after; `None` for history files.
    pub fn segment(&self) -> Option<WalSegmentName> {
        match self {
            WalFileName::Segment(s) | WalFileName::Partial(s) => Some(*s),
            WalFileName::Backup { segment, .. } => Some(*segment),
            WalFileName::History(_) => None,
        }
    }
}

/// For `.XXXXXXXX.backup`, the `XXXXXXXX` part.
fn backup_offset(suffix: &str) -> Option<&str> {
    let inner = suffix.strip_prefix('.')?.strip_suffix(BACKUP_SUFFIX)?;
    (inner.len() == 8).then_some(inner)
}

fn parse_segment_stem(name: &str, stem: &str) -> Result<WalSegmentName, WalNameError> {
    let part = |range: std::ops::Range<usize>| {
        stem.get(range).ok_or_else(|| WalNameError::BadShape {
            name: name.to_owned(),
        })
    };
    Ok(WalSegmentName {
        tli: Timeline(parse_hex8(name, part(0..8)?)?),
        log: parse_hex8(name, part(8..16)?)?,
        seg: parse_hex8(name, part(16..24)?)?,
    })
}

/// Parses 8 upper-case hex digits. Lower case gets its own error: it is the one mistake a
/// person renaming files by hand is likely to make.
fn parse_hex8(name: &str, digits: &str) -> Result<u32, WalNameError> {
    let bytes = digits.as_bytes();
    if bytes.len() != 8 || !bytes.iter().all(u8::is_ascii_hexdigit) {
        return Err(WalNameError::NotHex {
            name: name.to_owned(),
            part: digits.to_owned(),
        });
    }
    if bytes.iter().any(u8::is_ascii_lowercase) {
        return Err(WalNameError::LowerCase {
            name: name.to_owned(),
        });
    }
    u32::from_str_radix(digits, 16).map_err(|_| WalNameError::NotHex {
        name: name.to_owned(),
        part: digits.to_owned(),
    })
}

impl fmt::Display for WalFileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalFileName::Segment(s) => write!(f, "{s}"),
            WalFileName::Partial(s) => write!(f, "{s}{PARTIAL_SUFFIX}"),
            WalFileName::Backup { segment, offset } => {
                write!(f, "{segment}.{offset:08X}{BACKUP_SUFFIX}")
            }
            WalFileName::History(tli) => write!(f, "{tli}{HISTORY_SUFFIX}"),
        }
    }
}

impl FromStr for WalFileName {
    type Err = WalNameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// The forms a WAL file name can take, repeated in every error so the user sees what was meant.
const EXPECTED_NAMES: &str = "expected 24 hex digits, optionally followed by .partial or \
     .NNNNNNNN.backup, or 8 hex digits + .history";

/// Why a string is not a WAL file name (or timeline). Messages name the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WalNameError {
    /// Wrong length, non-ASCII characters, or no recognisable structure.
    #[error("`{}` is not a WAL file name: {EXPECTED_NAMES}", .name.escape_debug())]
    BadShape { name: String },
    #[error("`{}` is not a WAL file name: `{}` is not 8 hex digits; {EXPECTED_NAMES}", .name.escape_debug(), .part.escape_debug())]
    NotHex { name: String, part: String },
    #[error(
        "`{}` is not a WAL file name: it has lower-case hex digits, but PostgreSQL writes \
         upper-case (was the file renamed by hand or made by another tool?)",
        .name.escape_debug()
    )]
    LowerCase { name: String },
    #[error("`{}` is not a WAL file name: unknown suffix `{}`; {EXPECTED_NAMES}", .name.escape_debug(), .suffix.escape_debug())]
    UnknownSuffix { name: String, suffix: String },
    /// A valid WAL file name, but not of a plain segment where one was required.
    #[error("`{}` is not a WAL segment name: expected exactly 24 hex digits, without suffix", .name.escape_debug())]
    NotASegment { name: String },
    #[error("`{}` is not a timeline: expected 8 hex digits, like 00000001", .input.escape_debug())]
    NotATimeline { input: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG16: u64 = 16 * 1024 * 1024;
    const SEG1G: u64 = 1024 * 1024 * 1024;

    fn seg(tli: u32, log: u32, seg: u32) -> WalSegmentName {
        WalSegmentName {
            tli: Timeline(tli),
            log,
            seg,
        }
    }

    #[test]
    fn parses_every_kind_and_round_trips() {
        let cases = [
            (
                "000000010000000000000003",
                WalFileName::Segment(seg(1, 0, 3)),
            ),
            (
                "0000000A000000FF000000FE",
                WalFileName::Segment(seg(10, 255, 254)),
            ),
            (
                "000000010000000000000003.partial",
                WalFileName::Partial(seg(1, 0, 3)),
            ),
            (
                "000000010000000000000003.00000028.backup",
                WalFileName::Backup {
                    segment: seg(1, 0, 3),
                    offset: 0x28,
                },
            ),
            ("00000002.history", WalFileName::History(Timeline(2))),
            ("FFFFFFFF.history", WalFileName::History(Timeline(u32::MAX))),
        ];
        for (text, want) in cases {
            let got = WalFileName::parse(text).unwrap();
            assert_eq!(got, want, "{text}");
            assert_eq!(got.to_string(), text);
            assert_eq!(text.parse::<WalFileName>().unwrap(), want);
        }
    }

    #[test]
    fn timeline_and_segment_accessors() {
        let b = WalFileName::parse("000000030000000100000002.00000028.backup").unwrap();
        assert_eq!(b.timeline(), Timeline(3));
        assert_eq!(b.segment(), Some(seg(3, 1, 2)));
        let h = WalFileName::parse("00000007.history").unwrap();
        assert_eq!(h.timeline(), Timeline(7));
        assert_eq!(h.segment(), None);
        let p = WalFileName::parse("000000050000000100000002.partial").unwrap();
        assert_eq!(p.timeline(), Timeline(5));
        assert_eq!(p.segment(), Some(seg(5, 1, 2)));
    }

    #[test]
    fn rejects_bad_names_with_the_reason() {
        let cases: &[(&str, &str)] = &[
            ("0000000100000000000000", "expected 24 hex digits"),
            ("", "expected 24 hex digits"),
            ("0", "expected 24 hex digits"),
            ("00000001", "expected 24 hex digits"),
            ("0000000100000000000000030", "expected 24 hex digits"),
            ("00000001000000000000000G", "`0000000G` is not 8 hex digits"),
            ("0000000100000000000000+3", "is not 8 hex digits"),
            ("0000000100000000000000ab", "lower-case"),
            ("0000000a.history", "lower-case"),
            ("000000010000000000000003.0000002a.backup", "lower-case"),
            ("000000010000000000000003.foo", "unknown suffix `.foo`"),
            ("000000010000000000000003.PARTIAL", "unknown suffix"),
            ("000000010000000000000003.", "unknown suffix `.`"),
            ("000000010000000000000003.partial.gz", "unknown suffix"),
            ("000000010000000000000003.0000028.backup", "unknown suffix"),
            (
                "000000010000000000000003.0000002G.backup",
                "is not 8 hex digits",
            ),
            ("00000002.History", "unknown suffix `.History`"),
            ("00000002.partial", "unknown suffix"),
            ("0000000G.history", "is not 8 hex digits"),
            (".history", "expected 24 hex digits"),
            ("000000010000000000000003\n", "expected 24 hex digits"),
            ("00000001000000000000000é", "expected 24 hex digits"),
            ("é00000010000000000000003", "expected 24 hex digits"),
            ("0000000100000000000000€", "expected 24 hex digits"),
            ("日本語日本語日本語", "expected 24 hex digits"),
        ];
        for (name, want) in cases {
            let err = WalFileName::parse(name).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(want), "{name:?}: {msg}");
            assert!(msg.contains("is not a WAL file name"), "{name:?}: {msg}");
        }
    }

    #[test]
    fn the_documented_message() {
        assert_eq!(
            WalFileName::parse("0000000100000000000000")
                .unwrap_err()
                .to_string(),
            "`0000000100000000000000` is not a WAL file name: expected 24 hex digits, \
             optionally followed by .partial or .NNNNNNNN.backup, or 8 hex digits + .history"
        );
    }

    #[test]
    fn never_panics_on_any_prefix_or_multibyte_input() {
        let samples = [
            "000000010000000000000003.00000028.backup",
            "00000002.history",
            "ääääääääääääääääääääääää",
            "0000000€0000000000000003.partial",
            "€€€€€€€€.history",
            "........................",
        ];
        for s in samples {
            for (i, _) in s.char_indices() {
                let _ = WalFileName::parse(&s[..i]);
                let _ = WalFileName::parse(&s[i..]);
                let _ = WalSegmentName::parse(&s[i..]);
                let _ = s[i..].parse::<Timeline>();
            }
        }
    }

    #[test]
    fn segment_name_parse_requires_a_plain_segment() {
        assert_eq!(
            WalSegmentName::parse("000000010000000000000003").unwrap(),
            seg(1, 0, 3)
        );
        let err = WalSegmentName::parse("000000010000000000000003.partial").unwrap_err();
        assert!(matches!(err, WalNameError::NotASegment { .. }), "{err}");
        assert!(WalSegmentName::parse("00000002.history").is_err());
        assert!(WalSegmentName::parse("short").is_err());
    }

    #[test]
    fn segment_numbers_and_lsns() {
        // 16 MiB: 256 segments per xlogid.
        let s = seg(1, 0x16, 0xB3);
        assert_eq!(s.segno(SEG16), 0x16 * 256 + 0xB3);
        assert_eq!(s.start_lsn(SEG16), "16/B3000000".parse::<Lsn>().unwrap());
        assert_eq!(
            WalSegmentName::from_segno(Timeline(1), 0x16 * 256 + 0xB3, SEG16),
            s
        );
        // 1 GiB: 4 segments per xlogid.
        let big = seg(2, 5, 3);
        assert_eq!(big.segno(SEG1G), 23);
        assert_eq!(big.start_lsn(SEG1G), "5/C0000000".parse::<Lsn>().unwrap());
        // The segment holding an LSN has that LSN's name.
        let lsn: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(
            WalSegmentName::from_segno(Timeline(1), lsn.segment_no(SEG16), SEG16).to_string(),
            "0000000100000016000000B3"
        );
    }

    #[test]
    fn next_crosses_xlogid_boundaries() {
        assert_eq!(seg(1, 0, 3).next(SEG16), seg(1, 0, 4));
        assert_eq!(seg(1, 0, 0xFF).next(SEG16), seg(1, 1, 0));
        assert_eq!(seg(1, 7, 3).next(SEG1G), seg(1, 8, 0));
        assert_eq!(seg(4, 0, 3).next(SEG16).tli, Timeline(4));
    }

    #[test]
    fn validity_depends_on_segment_size() {
        assert!(seg(1, 0, 0xFF).is_valid_for(SEG16));
        assert!(!seg(1, 0, 0x100).is_valid_for(SEG16));
        assert!(seg(1, 0, 3).is_valid_for(SEG1G));
        assert!(!seg(1, 0, 4).is_valid_for(SEG1G));
        assert!(!seg(1, 0, 0).is_valid_for(0));
        assert!(is_valid_seg_size(SEG16));
        assert!(is_valid_seg_size(MIN_SEG_SIZE) && is_valid_seg_size(MAX_SEG_SIZE));
        assert!(!is_valid_seg_size(0));
        assert!(!is_valid_seg_size(3 * 1024 * 1024));
        assert!(!is_valid_seg_size(2 * MAX_SEG_SIZE));
    }

    #[test]
    fn order_is_write_order() {
        let mut names = vec![seg(2, 0, 1), seg(1, 1, 0), seg(1, 0, 0xFF), seg(1, 0, 3)];
        names.sort();
        assert_eq!(
            names,
            vec![seg(1, 0, 3), seg(1, 0, 0xFF), seg(1, 1, 0), seg(2, 0, 1)]
        );
    }

    #[test]
    fn timeline_text_and_serde() {
        assert_eq!(Timeline(1).to_string(), "00000001");
        assert_eq!(Timeline(0x1A).to_string(), "0000001A");
        assert_eq!("0000001A".parse::<Timeline>().unwrap(), Timeline(0x1A));
        assert_eq!("0000001a".parse::<Timeline>().unwrap(), Timeline(0x1A));
        for bad in ["1", "", "000000001", "0000000G", "+0000001", "0000000é"] {
            let err = bad.parse::<Timeline>().unwrap_err();
            assert!(
                err.to_string().contains("is not a timeline"),
                "{bad:?}: {err}"
            );
        }
        assert_eq!(serde_json::to_string(&Timeline(3)).unwrap(), "3");
        assert_eq!(serde_json::from_str::<Timeline>("3").unwrap(), Timeline(3));
    }
}
