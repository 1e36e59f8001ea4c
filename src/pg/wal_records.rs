//! Reads the records of a WAL segment, for what recovery targets care about: where each
//! transaction committed or aborted and when, restore points, and how far transaction ids had
//! been handed out. Pure: bytes in, facts out.
//!
//! Format (PostgreSQL 15–17, 8 KiB WAL pages, MAXALIGN 8): `src/include/access/xlogrecord.h`,
//! `xlog_internal.h` (page headers), `xact.h` (commit and abort records), `pg_control.h`
//! (`XLOG_RESTORE_POINT`), `standbydefs.h` (`xl_running_xacts`), and the walk over block
//! headers in `DecodeXLogRecord` (`src/backend/access/transam/xlogreader.c`).
//!
//! The invariant: nothing unchecked is reported. Every page header must carry the magic of the
//! segment's first page and its own address, a record continued on the next page must find
//! `XLP_FIRST_IS_CONTRECORD` there, `xl_prev` must point at the record before, and the record's
//! crc32c must match. The first record that fails any check — zeros after an `XLOG_SWITCH`,
//! the torn tail of a `.partial`, a recycled segment's old content — ends the valid WAL, as it
//! does for PostgreSQL's own reader, and [`SegmentRecords::end`] says where and why. The one
//! exception PostgreSQL makes too: a record cut off by a crash, whose next page was rewritten
//! with `XLP_FIRST_IS_OVERWRITE_CONTRECORD`, is skipped and reading goes on with the new WAL.

use super::Lsn;
use super::wal_page::major_version_for_magic;
use chrono::{DateTime, Utc};

/// `XLOG_BLCKSZ`: the only WAL page size the reader supports (PostgreSQL's default).
pub const WAL_PAGE_SIZE: usize = 8192;
const SHORT_PAGE_HEADER: usize = 24;
const LONG_PAGE_HEADER: usize = 40;
const XLP_FIRST_IS_CONTRECORD: u16 = 0x0001;
const XLP_LONG_HEADER: u16 = 0x0002;
const XLP_FIRST_IS_OVERWRITE_CONTRECORD: u16 = 0x0008;
/// `SizeOfXLogRecord`.
const RECORD_HEADER: usize = 24;
/// `XLogRecordMaxSize` (PostgreSQL 16; 15 allows a little more but never writes it).
const MAX_RECORD: usize = 1020 * 1024 * 1024;

const RM_XLOG_ID: u8 = 0;
const RM_XACT_ID: u8 = 1;
const RM_STANDBY_ID: u8 = 8;
const XLOG_SWITCH: u8 = 0x40;
const XLOG_RESTORE_POINT: u8 = 0x70;
const XLOG_RUNNING_XACTS: u8 = 0x10;
const XLOG_XACT_OPMASK: u8 = 0x70;
const XLOG_XACT_HAS_INFO: u8 = 0x80;

/// Seconds from the Unix epoch to PostgreSQL's (2000-01-01 00:00:00 UTC).
const PG_EPOCH_UNIX_SECS: i64 = 946_684_800;

/// How a transaction ended, as recovery's stop checks see it (`recoveryStopsBefore`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XactEndKind {
    Commit,
    CommitPrepared,
    Abort,
    AbortPrepared,
}

/// A commit or abort record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XactEnd {
    pub kind: XactEndKind,
    /// Where the record starts and ends (MAXALIGNed, as PostgreSQL's `EndRecPtr`: what
    /// `pg_current_wal_insert_lsn()` shows right after the commit when nothing else wrote).
    pub start: Lsn,
    pub end: Lsn,
    /// The transaction recovery compares with `recovery_target_xid`: the record's own xid, or
    /// for a prepared transaction the prepared one.
    pub xid: u32,
    /// `xact_time`, what `recovery_target_time` is compared with.
    pub time: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestorePoint {
    pub name: String,
    pub time: DateTime<Utc>,
    pub start: Lsn,
    pub end: Lsn,
}

/// `xl_running_xacts`: at `start`, no transaction id at or above `next_xid` had been assigned
/// (PostgreSQL holds `XidGenLock` until the record is inserted, `LogStandbySnapshot`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunningXacts {
    pub start: Lsn,
    pub next_xid: u32,
}

/// Why reading stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadEnd {
    /// The segment's last record ended where the next segment begins (or the next record
    /// starts in the next segment).
    SegmentEnd,
    /// A record runs on into the next segment, which was not given.
    ContinuesInNextSegment,
    /// An `XLOG_SWITCH` record (`pg_switch_wal()`, `archive_timeout`): the rest is padding.
    Switch,
    /// A zeroed or invalid record or page: the end of valid WAL.
    Invalid(String),
}

/// What one segment holds, in WAL order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentRecords {
    pub records: u64,
    pub xact_ends: Vec<XactEnd>,
    pub restore_points: Vec<RestorePoint>,
    pub running_xacts: Vec<RunningXacts>,
    /// Every record's `xl_xid` (and prepared xids of commit/abort records), in WAL order
    /// paired with the record's start, for the xid horizon: see [`SegmentRecords::xid_horizon`].
    pub xids: Vec<(Lsn, u32)>,
    /// Where the valid WAL read ends, and why.
    pub end_lsn: Lsn,
    pub end: ReadEnd,
}

impl SegmentRecords {
    /// Only the records that start before `upto`: the part of a segment that belongs to one
    /// history when a timeline branched off inside it.
    pub fn before(&self, upto: Lsn) -> SegmentRecords {
        SegmentRecords {
            records: self.records,
            xact_ends: self
                .xact_ends
                .iter()
                .filter(|x| x.start < upto)
                .copied()
                .collect(),
            restore_points: (self.restore_points.iter())
                .filter(|r| r.start < upto)
                .cloned()
                .collect(),
            running_xacts: (self.running_xacts.iter())
                .filter(|r| r.start < upto)
                .copied()
                .collect(),
            xids: self
                .xids
                .iter()
                .filter(|(at, _)| *at < upto)
                .copied()
                .collect(),
            end_lsn: self.end_lsn.min(upto),
            end: if self.end_lsn > upto {
                ReadEnd::SegmentEnd
            } else {
                self.end.clone()
            },
        }
    }

    /// The latest commit or abort (the last in WAL order; xact times are taken just before the
    /// record is inserted, so they follow WAL order up to a few microseconds).
    pub fn last_xact_end(&self) -> Option<&XactEnd> {
        self.xact_ends.last()
    }

    /// The first transaction id not seen assigned, if this segment holds a running-xacts
    /// record to anchor it: the newest anchor's `next_xid`, raised past every xid seen after it.
    /// A transaction at or beyond the horizon has no commit record up to [`Self::end_lsn`].
    pub fn xid_horizon(&self) -> Option<u32> {
        let anchor = self.running_xacts.last()?;
        Some(
            self.xids
                .iter()
                .filter(|(at, _)| *at > anchor.start)
                .fold(anchor.next_xid, |h, (_, x)| xid_max(h, x.wrapping_add(1))),
        )
    }
}

/// `a` or `b`, whichever is later in PostgreSQL's modulo-2^32 order (`TransactionIdFollows`).
pub fn xid_max(a: u32, b: u32) -> u32 {
    if xid_precedes(a, b) { b } else { a }
}

/// `TransactionIdPrecedes` for normal xids.
pub fn xid_precedes(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// Converts a PostgreSQL `TimestampTz` (microseconds since 2000-01-01 UTC).
pub fn pg_timestamp(micros: i64) -> Option<DateTime<Utc>> {
    let secs = micros
        .div_euclid(1_000_000)
        .checked_add(PG_EPOCH_UNIX_SECS)?;
    let nanos = (micros.rem_euclid(1_000_000) * 1000) as u32;
    DateTime::from_timestamp(secs, nanos)
}

/// Reads the records that start in `segment` (whose first byte is WAL position `start`).
/// `next` is the following segment when the caller has it: a record running on into it is
/// then read whole instead of ending the read with [`ReadEnd::ContinuesInNextSegment`].
pub fn read_segment(segment: &[u8], start: Lsn, next: Option<&[u8]>) -> SegmentRecords {
    let stream = Stream {
        start,
        parts: [segment, next.unwrap_or(&[])],
        magic: None,
    };
    let mut out = SegmentRecords {
        records: 0,
        xact_ends: Vec::new(),
        restore_points: Vec::new(),
        running_xacts: Vec::new(),
        xids: Vec::new(),
        end_lsn: start,
        end: ReadEnd::SegmentEnd,
    };
    let (mut pos, stream) = match stream.first_record() {
        Ok(found) => found,
        Err(why) => {
            out.end = ReadEnd::Invalid(why);
            return out;
        }
    };
    let seg_len = segment.len();
    let mut prev: Option<Lsn> = None;
    let mut buf = Vec::new();
    loop {
        out.end_lsn = stream.lsn(pos);
        if pos >= seg_len {
            out.end = ReadEnd::SegmentEnd;
            return out;
        }
        let next_pos = match stream.read_record(pos, &mut buf) {
            Ok(p) => p,
            Err(Stop::Truncated) => {
                out.end = ReadEnd::ContinuesInNextSegment;
                return out;
            }
            Err(Stop::Overwritten { resume }) => {
                // The aborted record is no record: `xl_prev` of the next still points at the
                // one before it.
                pos = resume;
                continue;
            }
            Err(Stop::Invalid(why)) => {
                out.end = ReadEnd::Invalid(why);
                return out;
            }
        };
        let here = stream.lsn(pos);
        let header = RecordHeader::of(&buf);
        if let Some(p) = prev
            && header.prev != p
        {
            out.end = ReadEnd::Invalid(format!(
                "the record at {here} points back to {} instead of {p}",
                header.prev
            ));
            return out;
        }
        out.records += 1;
        // PostgreSQL's end of a record (`EndRecPtr`, and what `pg_create_restore_point()`
        // returns) is MAXALIGNed.
        let end = stream.lsn(align8(next_pos));
        decode(&buf, &header, here, end, &mut out);
        prev = Some(here);
        if header.rmid == RM_XLOG_ID && header.info & 0xF0 == XLOG_SWITCH {
            // The rest of the segment is padding (`XLogReadRecord` skips it the same way).
            out.end_lsn = end;
            out.end = ReadEnd::Switch;
            return out;
        }
        // The next record starts MAXALIGNed, after the page header if it falls on a new page.
        pos = match stream.skip_page_header(align8(next_pos)) {
            Ok(p) => p,
            Err(Stop::Truncated) => {
                out.end_lsn = end;
                out.end = ReadEnd::SegmentEnd;
                return out;
            }
            Err(other) => {
                out.end_lsn = end;
                out.end = ReadEnd::Invalid(stop_text(other));
                return out;
            }
        };
    }
}

enum Stop {
    /// The bytes given end inside the record.
    Truncated,
    /// The record was never completed: after a crash, PostgreSQL 15 wrote the next page with
    /// `XLP_FIRST_IS_OVERWRITE_CONTRECORD` and new WAL from its header on (`xlogrecovery.c`,
    /// "missing contrecord"). Reading resumes there.
    Overwritten {
        resume: usize,
    },
    Invalid(String),
}

/// The WAL bytes given, as one run of pages from `start`.
struct Stream<'a> {
    start: Lsn,
    parts: [&'a [u8]; 2],
    /// The page magic of the first page; every page must carry it.
    magic: Option<u16>,
}

struct PageHeader {
    magic: u16,
    info: u16,
    pageaddr: Lsn,
    rem_len: u32,
}

struct RecordHeader {
    tot_len: usize,
    xid: u32,
    prev: Lsn,
    info: u8,
    rmid: u8,
    crc: u32,
}

impl RecordHeader {
    fn of(b: &[u8]) -> RecordHeader {
        RecordHeader {
            tot_len: le_u32(b, 0).unwrap_or(0) as usize,
            xid: le_u32(b, 4).unwrap_or(0),
            prev: Lsn(le_u64(b, 8).unwrap_or(0)),
            info: b.get(16).copied().unwrap_or(0),
            rmid: b.get(17).copied().unwrap_or(0),
            crc: le_u32(b, 20).unwrap_or(0),
        }
    }
}

impl<'a> Stream<'a> {
    fn len(&self) -> usize {
        self.parts[0].len() + self.parts[1].len()
    }

    fn lsn(&self, pos: usize) -> Lsn {
        Lsn(self.start.0 + pos as u64)
    }

    fn bytes(&self, pos: usize, len: usize) -> Option<&'a [u8]> {
        let first = self.parts[0].len();
        if pos + len <= first {
            self.parts[0].get(pos..pos + len)
        } else if pos >= first {
            self.parts[1].get(pos - first..pos - first + len)
        } else {
            // Pages never straddle the two parts (segments are whole pages).
            None
        }
    }

    fn page_header(&self, page: usize) -> Result<PageHeader, Stop> {
        let Some(h) = self.bytes(page, SHORT_PAGE_HEADER) else {
            return Err(Stop::Truncated);
        };
        let header = PageHeader {
            magic: le_u16(h, 0).unwrap_or(0),
            info: le_u16(h, 2).unwrap_or(0),
            pageaddr: Lsn(le_u64(h, 8).unwrap_or(0)),
            rem_len: le_u32(h, 16).unwrap_or(0),
        };
        let at = self.lsn(page);
        if Some(header.magic) != self.magic {
            return Err(Stop::Invalid(format!(
                "the page at {at} has magic {:#06X}, not the segment's",
                header.magic
            )));
        }
        if header.pageaddr != at {
            return Err(Stop::Invalid(format!(
                "the page at {at} says it is at {} (old or foreign content)",
                header.pageaddr
            )));
        }
        Ok(header)
    }

    fn header_len(info: u16) -> usize {
        if info & XLP_LONG_HEADER != 0 {
            LONG_PAGE_HEADER
        } else {
            SHORT_PAGE_HEADER
        }
    }

    /// At a page start, moves past the page header (checking it); elsewhere stays.
    fn skip_page_header(&self, pos: usize) -> Result<usize, Stop> {
        if !pos.is_multiple_of(WAL_PAGE_SIZE) {
            return Ok(pos);
        }
        if pos >= self.len() {
            return Err(Stop::Truncated);
        }
        let h = self.page_header(pos)?;
        Ok(pos + Self::header_len(h.info))
    }

    /// Checks the first page and finds the first record that starts in the segment, past the
    /// tail of a record continued from the previous one (`xlp_rem_len`).
    fn first_record(mut self) -> Result<(usize, Stream<'a>), String> {
        if self.parts[0].len() < WAL_PAGE_SIZE || !self.parts[0].len().is_multiple_of(WAL_PAGE_SIZE)
        {
            return Err(format!(
                "{} bytes are not whole {WAL_PAGE_SIZE}-byte WAL pages",
                self.parts[0].len()
            ));
        }
        let magic = le_u16(self.parts[0], 0).unwrap_or(0);
        if major_version_for_magic(magic).is_none_or(|v| v < 15) {
            return Err(format!(
                "page magic {magic:#06X} is not PostgreSQL 15 or later, whose record format \
                 this reader knows"
            ));
        }
        self.magic = Some(magic);
        let h = self.page_header(0).map_err(stop_text)?;
        let mut pos = Self::header_len(h.info);
        if h.info & XLP_FIRST_IS_CONTRECORD != 0 {
            let mut remaining = h.rem_len as usize;
            loop {
                let room = WAL_PAGE_SIZE - pos % WAL_PAGE_SIZE;
                if remaining <= room {
                    pos += remaining;
                    break;
                }
                remaining -= room;
                pos += room;
                if pos >= self.parts[0].len() {
                    // The continued record fills the whole segment.
                    return Ok((pos, self));
                }
                let next = self.page_header(pos).map_err(stop_text)?;
                if next.info & XLP_FIRST_IS_CONTRECORD == 0 {
                    return Err(format!(
                        "the page at {} should continue a record but does not",
                        self.lsn(pos)
                    ));
                }
                pos += Self::header_len(next.info);
            }
            pos = align8(pos);
            if pos >= self.parts[0].len() {
                // The continued record ends with the segment.
                return Ok((pos, self));
            }
            pos = self.skip_page_header(pos).map_err(stop_text)?;
        }
        Ok((pos, self))
    }

    /// Reads the record starting at `pos` into `buf` (page headers removed) and checks it.
    /// Returns the position just past its last byte.
    fn read_record(&self, pos: usize, buf: &mut Vec<u8>) -> Result<usize, Stop> {
        buf.clear();
        let at = self.lsn(pos);
        let mut want = RECORD_HEADER;
        let mut p = pos;
        loop {
            let page_end = (p / WAL_PAGE_SIZE + 1) * WAL_PAGE_SIZE;
            let take = (want - buf.len()).min(page_end - p);
            let Some(chunk) = self.bytes(p, take) else {
                return Err(Stop::Truncated);
            };
            buf.extend_from_slice(chunk);
            p += take;
            if want == RECORD_HEADER && buf.len() == RECORD_HEADER {
                let tot = RecordHeader::of(buf).tot_len;
                if tot == 0 {
                    return Err(Stop::Invalid(format!("no record at {at} (zeros)")));
                }
                if !(RECORD_HEADER..=MAX_RECORD).contains(&tot) {
                    return Err(Stop::Invalid(format!(
                        "the record at {at} has an impossible length {tot}"
                    )));
                }
                want = tot;
            }
            if buf.len() == want {
                break;
            }
            if !p.is_multiple_of(WAL_PAGE_SIZE) {
                // The header told the length: read on in this page.
                continue;
            }
            // The record goes on on the next page, which must say so.
            if p >= self.len() {
                return Err(Stop::Truncated);
            }
            let h = self.page_header(p)?;
            if h.info & XLP_FIRST_IS_OVERWRITE_CONTRECORD != 0 {
                return Err(Stop::Overwritten {
                    resume: p + Self::header_len(h.info),
                });
            }
            if h.info & XLP_FIRST_IS_CONTRECORD == 0 {
                return Err(Stop::Invalid(format!(
                    "the record at {at} is cut off: the page at {} does not continue it",
                    self.lsn(p)
                )));
            }
            if want > RECORD_HEADER && h.rem_len as usize != want - buf.len() {
                return Err(Stop::Invalid(format!(
                    "the page at {} continues {} bytes, but the record at {at} has {} left",
                    self.lsn(p),
                    h.rem_len,
                    want - buf.len()
                )));
            }
            p += Self::header_len(h.info);
        }
        let header = RecordHeader::of(buf);
        let crc = crc32c::crc32c_append(crc32c::crc32c(&buf[RECORD_HEADER..]), &buf[..20]);
        if crc != header.crc {
            return Err(Stop::Invalid(format!(
                "the record at {at} fails its crc32c check"
            )));
        }
        Ok(p)
    }
}

fn stop_text(s: Stop) -> String {
    match s {
        Stop::Truncated => "the segment ends inside its first page".to_string(),
        Stop::Overwritten { .. } => "an overwritten record at the segment start".to_string(),
        Stop::Invalid(why) => why,
    }
}

fn align8(pos: usize) -> usize {
    (pos + 7) & !7
}

/// Finds a checked record's main data and turns the records targets care about into facts.
fn decode(rec: &[u8], h: &RecordHeader, start: Lsn, end: Lsn, out: &mut SegmentRecords) {
    if h.xid != 0 {
        out.xids.push((start, h.xid));
    }
    let Some(main) = main_data(rec) else {
        return;
    };
    match h.rmid {
        RM_XACT_ID => {
            let kind = match h.info & XLOG_XACT_OPMASK {
                0x00 => XactEndKind::Commit,
                0x30 => XactEndKind::CommitPrepared,
                0x20 => XactEndKind::Abort,
                0x40 => XactEndKind::AbortPrepared,
                _ => return,
            };
            let Some(time) = le_i64(main, 0).and_then(pg_timestamp) else {
                return;
            };
            let xid = match kind {
                XactEndKind::CommitPrepared | XactEndKind::AbortPrepared => {
                    let has_info = h.info & XLOG_XACT_HAS_INFO != 0;
                    match prepared_xid(main, has_info, kind == XactEndKind::CommitPrepared) {
                        Some(x) => x,
                        None => return,
                    }
                }
                _ => h.xid,
            };
            if xid != h.xid && xid != 0 {
                out.xids.push((start, xid));
            }
            out.xact_ends.push(XactEnd {
                kind,
                start,
                end,
                xid,
                time,
            });
        }
        RM_XLOG_ID if h.info & 0xF0 == XLOG_RESTORE_POINT => {
            // xl_restore_point: TimestampTz rp_time; char rp_name[MAXFNAMELEN].
            let Some(time) = le_i64(main, 0).and_then(pg_timestamp) else {
                return;
            };
            let name = main.get(8..).unwrap_or_default();
            let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
            out.restore_points.push(RestorePoint {
                name: String::from_utf8_lossy(name).into_owned(),
                time,
                start,
                end,
            });
        }
        RM_STANDBY_ID if h.info & 0xF0 == XLOG_RUNNING_XACTS => {
            // xl_running_xacts: int xcnt; int subxcnt; bool subxid_overflow; TransactionId
            // nextXid (at 12, after padding); ...
            if let Some(next_xid) = le_u32(main, 12) {
                out.running_xacts.push(RunningXacts { start, next_xid });
            }
        }
        _ => {}
    }
}

/// The main data of a record: the walk over block headers of `DecodeXLogRecord`, which ends
/// at `XLR_BLOCK_ID_DATA_SHORT`/`LONG` (main data is the record's last bytes). `None` for a
/// record without main data or with headers that do not add up.
fn main_data(rec: &[u8]) -> Option<&[u8]> {
    const DATA_SHORT: u8 = 255;
    const DATA_LONG: u8 = 254;
    const ORIGIN: u8 = 253;
    const TOPLEVEL_XID: u8 = 252;
    const MAX_BLOCK_ID: u8 = 32;
    const HAS_IMAGE: u8 = 0x10;
    const HAS_DATA: u8 = 0x20;
    const SAME_REL: u8 = 0x80;
    const BKPIMAGE_HAS_HOLE: u8 = 0x01;
    // PostgreSQL 15+: BKPIMAGE_COMPRESS_PGLZ | _LZ4 | _ZSTD.
    const BKPIMAGE_COMPRESSED: u8 = 0x04 | 0x08 | 0x10;

    let mut p = RECORD_HEADER;
    let mut data_total = 0usize;
    let main_len = loop {
        let id = *rec.get(p)?;
        p += 1;
        match id {
            DATA_SHORT => {
                let len = *rec.get(p)? as usize;
                p += 1;
                break len;
            }
            DATA_LONG => {
                let len = le_u32(rec, p)? as usize;
                p += 4;
                break len;
            }
            ORIGIN => p += 2,
            TOPLEVEL_XID => p += 4,
            id if id <= MAX_BLOCK_ID => {
                let fork_flags = *rec.get(p)?;
                let data_len = le_u16(rec, p + 1)? as usize;
                p += 3;
                if (fork_flags & HAS_DATA != 0) != (data_len != 0) {
                    return None;
                }
                data_total += data_len;
                if fork_flags & HAS_IMAGE != 0 {
                    let image_len = le_u16(rec, p)? as usize;
                    let image_info = *rec.get(p + 4)?;
                    p += 5;
                    if image_info & BKPIMAGE_HAS_HOLE != 0 && image_info & BKPIMAGE_COMPRESSED != 0
                    {
                        p += 2; // hole length
                    }
                    data_total += image_len;
                }
                if fork_flags & SAME_REL == 0 {
                    p += 12; // RelFileNode
                }
                p += 4; // BlockNumber
            }
            _ => return None,
        }
        if p > rec.len() {
            return None;
        }
    };
    // Headers, then block data, then main data: the lengths must fill the record exactly.
    if p + data_total + main_len != rec.len() {
        return None;
    }
    rec.get(rec.len() - main_len..)
}

/// The prepared transaction's xid in a COMMIT PREPARED / ABORT PREPARED record
/// (`ParseCommitRecord` / `ParseAbortRecord`: the optional parts in their order).
fn prepared_xid(main: &[u8], has_info: bool, commit: bool) -> Option<u32> {
    const HAS_DBINFO: u32 = 1 << 0;
    const HAS_SUBXACTS: u32 = 1 << 1;
    const HAS_RELFILENODES: u32 = 1 << 2;
    const HAS_INVALS: u32 = 1 << 3;
    const HAS_TWOPHASE: u32 = 1 << 4;
    const HAS_DROPPED_STATS: u32 = 1 << 8;
    if !has_info {
        return None;
    }
    let xinfo = le_u32(main, 8)?;
    let mut p = 12usize;
    let counted = |p: &mut usize, each: usize| -> Option<()> {
        let n = usize::try_from(le_u32(main, *p)? as i32).ok()?;
        *p = p.checked_add(4 + n.checked_mul(each)?)?;
        Some(())
    };
    if xinfo & HAS_DBINFO != 0 {
        p += 8;
    }
    if xinfo & HAS_SUBXACTS != 0 {
        counted(&mut p, 4)?;
    }
    if xinfo & HAS_RELFILENODES != 0 {
        counted(&mut p, 12)?;
    }
    if xinfo & HAS_DROPPED_STATS != 0 {
        counted(&mut p, 12)?;
    }
    if commit && xinfo & HAS_INVALS != 0 {
        counted(&mut p, 16)?;
    }
    if xinfo & HAS_TWOPHASE == 0 {
        return None;
    }
    le_u32(main, p)
}

fn le_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn le_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn le_i64(b: &[u8], at: usize) -> Option<i64> {
    Some(i64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
