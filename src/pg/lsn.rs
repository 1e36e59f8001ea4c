//! Log sequence numbers: byte positions in the WAL stream.
//!
//! An [`Lsn`] is printed and parsed exactly as PostgreSQL's `pg_lsn` type does (`16/B374D848`:
//! the high and low 32 bits in upper-case hex without zero padding), so values can be copied
//! between `psql`, `pg_controldata`, backup labels and pgward's own output unchanged. Parsing
//! follows `pg_lsn_in` in `src/backend/utils/adt/pg_lsn.c`: 1 to 8 hex digits on each side of
//! one slash, nothing else.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A position in the WAL stream (PostgreSQL `XLogRecPtr`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct Lsn(pub u64);

/// The form shown in every parse error, so the user sees what a valid value looks like.
const EXPECTED_FORM: &str =
    "expected two hex numbers of 1 to 8 digits separated by a slash, like 16/B374D848";

/// PostgreSQL caps each half at 8 digits (`MAXPG_LSNCOMPONENT`): a longer half is a typo, not
/// a larger number.
const MAX_DIGITS: usize = 8;

/// Why a string is not an LSN. Each message repeats the input and the expected form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LsnParseError {
    #[error("`{}` is not an LSN: it has no `/`; {EXPECTED_FORM}", .input.escape_debug())]
    MissingSlash { input: String },
    #[error("`{}` is not an LSN: the part {side} the `/` is empty; {EXPECTED_FORM}", .input.escape_debug())]
    EmptyPart { input: String, side: &'static str },
    #[error("`{}` is not an LSN: `{}` has more than 8 hex digits; {EXPECTED_FORM}", .input.escape_debug(), .part.escape_debug())]
    TooManyDigits { input: String, part: String },
    #[error("`{}` is not an LSN: `{}` is not hexadecimal; {EXPECTED_FORM}", .input.escape_debug(), .part.escape_debug())]
    NotHex { input: String, part: String },
}

impl Lsn {
    /// The invalid LSN PostgreSQL uses for "none" (`InvalidXLogRecPtr`).
    pub const INVALID: Lsn = Lsn(0);

    /// Number of the WAL segment holding this position (`XLByteToSeg`).
    ///
    /// # Panics
    /// If `seg_size` is 0. Sizes from outside are checked with
    /// [`crate::pg::walname::is_valid_seg_size`] before they get here.
    pub fn segment_no(self, seg_size: u64) -> u64 {
        self.0 / seg_size
    }

    /// Offset of this position inside its segment (`XLogSegmentOffset`).
    ///
    /// # Panics
    /// If `seg_size` is 0 (see [`Lsn::segment_no`]).
    pub fn segment_offset(self, seg_size: u64) -> u64 {
        self.0 % seg_size
    }

    /// `self + bytes`, or `None` past the end of the 64-bit WAL address space.
    pub fn checked_add(self, bytes: u64) -> Option<Lsn> {
        self.0.checked_add(bytes).map(Lsn)
    }

    /// First position of segment `segno` (`XLogSegNoOffsetToRecPtr(segno, 0, ...)`).
    ///
    /// Wraps instead of panicking for segment numbers beyond the address space, which only a
    /// name that is invalid for `seg_size` can produce; such names are refused earlier by
    /// [`crate::pg::WalSegmentName::is_valid_for`].
    pub fn from_segment(segno: u64, seg_size: u64) -> Lsn {
        Lsn(segno.wrapping_mul(seg_size))
    }

    /// True unless this is [`Lsn::INVALID`].
    pub fn is_valid(self) -> bool {
        self != Lsn::INVALID
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl FromStr for Lsn {
    type Err = LsnParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some((high, low)) = s.split_once('/') else {
            return Err(LsnParseError::MissingSlash {
                input: s.to_owned(),
            });
        };
        let high = parse_half(s, high, "before")?;
        let low = parse_half(s, low, "after")?;
        Ok(Lsn((u64::from(high) << 32) | u64::from(low)))
    }
}

/// Parses one side of the slash. Digits are checked by hand because `u32::from_str_radix`
/// also accepts a leading `+`, which `pg_lsn_in` does not.
fn parse_half(input: &str, part: &str, side: &'static str) -> Result<u32, LsnParseError> {
    if part.is_empty() {
        return Err(LsnParseError::EmptyPart {
            input: input.to_owned(),
            side,
        });
    }
    if !part.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(LsnParseError::NotHex {
            input: input.to_owned(),
            part: part.to_owned(),
        });
    }
    if part.len() > MAX_DIGITS {
        return Err(LsnParseError::TooManyDigits {
            input: input.to_owned(),
            part: part.to_owned(),
        });
    }
    u32::from_str_radix(part, 16).map_err(|_| LsnParseError::NotHex {
        input: input.to_owned(),
        part: part.to_owned(),
    })
}

impl Serialize for Lsn {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Lsn {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG16: u64 = 16 * 1024 * 1024;

    #[test]
    fn displays_like_postgres() {
        assert_eq!(Lsn(0x16_B374_D848).to_string(), "16/B374D848");
        assert_eq!(Lsn(0).to_string(), "0/0");
        assert_eq!(Lsn(0x0100_0028).to_string(), "0/1000028");
        assert_eq!(Lsn(u64::MAX).to_string(), "FFFFFFFF/FFFFFFFF");
    }

    #[test]
    fn parses_upper_and_lower_case() {
        assert_eq!("16/B374D848".parse::<Lsn>().unwrap(), Lsn(0x16_B374_D848));
        assert_eq!("16/b374d848".parse::<Lsn>().unwrap(), Lsn(0x16_B374_D848));
        assert_eq!("0/0".parse::<Lsn>().unwrap(), Lsn(0));
        assert_eq!("00000000/00000001".parse::<Lsn>().unwrap(), Lsn(1));
        assert_eq!("FFFFFFFF/FFFFFFFF".parse::<Lsn>().unwrap(), Lsn(u64::MAX));
    }

    #[test]
    fn round_trips() {
        for v in [0, 1, 0x1_0000_0000, 0x16_B374_D848, u64::MAX] {
            assert_eq!(Lsn(v).to_string().parse::<Lsn>().unwrap(), Lsn(v));
        }
    }

    #[test]
    fn rejects_bad_input_with_a_useful_message() {
        let cases: &[(&str, &str)] = &[
            ("16B374D848", "has no `/`"),
            ("", "has no `/`"),
            ("/B374D848", "part before the `/` is empty"),
            ("16/", "part after the `/` is empty"),
            ("123456789/0", "more than 8 hex digits"),
            ("0/123456789", "more than 8 hex digits"),
            ("G/0", "not hexadecimal"),
            ("+1/0", "not hexadecimal"),
            ("1/0/0", "not hexadecimal"),
            (" 1/0", "not hexadecimal"),
            ("1/0\n", "not hexadecimal"),
            ("é/0", "not hexadecimal"),
        ];
        for (input, want) in cases {
            let err = input.parse::<Lsn>().unwrap_err().to_string();
            assert!(err.contains(want), "{input:?}: {err}");
            assert!(err.contains("like 16/B374D848"), "{input:?}: {err}");
        }
    }

    #[test]
    fn segment_arithmetic() {
        let lsn = Lsn(0x16_B374_D848);
        assert_eq!(lsn.segment_no(SEG16), 0x16B3);
        assert_eq!(lsn.segment_offset(SEG16), 0x74_D848);
        assert_eq!(Lsn::from_segment(0x16B3, SEG16), Lsn(0x16_B300_0000));
        assert_eq!(Lsn(u64::MAX).checked_add(1), None);
        assert_eq!(Lsn(1).checked_add(2), Some(Lsn(3)));
        // Never panics, even for segment numbers no valid name produces.
        let _ = Lsn::from_segment(u64::MAX, SEG16);
    }

    #[test]
    fn serde_uses_the_string_form() {
        let json = serde_json::to_string(&Lsn(0x16_B374_D848)).unwrap();
        assert_eq!(json, "\"16/B374D848\"");
        let back: Lsn = serde_json::from_str(&json).unwrap();
        assert_eq!(back, Lsn(0x16_B374_D848));
        let err = serde_json::from_str::<Lsn>("\"nope\"").unwrap_err();
        assert!(err.to_string().contains("is not an LSN"), "{err}");
    }
}
