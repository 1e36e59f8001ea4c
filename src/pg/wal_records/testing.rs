//! Crafted WAL for tests: records laid out on pages the way PostgreSQL writes them (page
//! headers, continuation flags, MAXALIGN, `xl_prev`, crc32c).

use super::*;

pub const MAGIC_PG15: u16 = 0xD110;
/// A small segment size for crafted WAL (16 pages).
pub const SEG: usize = 16 * WAL_PAGE_SIZE;

/// Writes records into a run of pages starting at `start`.
pub struct Builder {
    pub buf: Vec<u8>,
    pub start: u64,
    pub pos: usize,
    pub prev: u64,
    /// Start of every record written, in order.
    pub starts: Vec<Lsn>,
    /// Pages at multiples of this get the long header.
    pub seg_size: usize,
}

impl Builder {
    /// `len` bytes of zeros, the page headers written as pages are entered.
    pub fn new(start: u64, len: usize) -> Builder {
        Builder::with_seg_size(start, len, SEG)
    }

    pub fn with_seg_size(start: u64, len: usize, seg_size: usize) -> Builder {
        let mut b = Builder {
            buf: vec![0; len],
            start,
            pos: 0,
            prev: 0,
            starts: Vec::new(),
            seg_size,
        };
        b.page_header(0, 0, 0);
        b.pos = LONG_PAGE_HEADER;
        b
    }

    fn page_header(&mut self, page: usize, flags: u16, rem_len: u32) {
        let long = (self.start + page as u64).is_multiple_of(self.seg_size as u64);
        let info = flags | if long { XLP_LONG_HEADER } else { 0 };
        let h = &mut self.buf[page..page + 24];
        h[0..2].copy_from_slice(&MAGIC_PG15.to_le_bytes());
        h[2..4].copy_from_slice(&info.to_le_bytes());
        h[4..8].copy_from_slice(&1u32.to_le_bytes());
        h[8..16].copy_from_slice(&(self.start + page as u64).to_le_bytes());
        h[16..20].copy_from_slice(&rem_len.to_le_bytes());
        if long {
            self.buf[page + 24..page + 32].copy_from_slice(&7u64.to_le_bytes());
            self.buf[page + 32..page + 36].copy_from_slice(&(SEG as u32).to_le_bytes());
            self.buf[page + 36..page + 40].copy_from_slice(&(WAL_PAGE_SIZE as u32).to_le_bytes());
        }
    }

    /// Appends a record with `body` after its header; returns its start.
    pub fn record(&mut self, rmid: u8, info: u8, xid: u32, body: &[u8]) -> Lsn {
        let mut rec = vec![0u8; RECORD_HEADER];
        rec.extend_from_slice(body);
        let tot = rec.len() as u32;
        rec[0..4].copy_from_slice(&tot.to_le_bytes());
        rec[4..8].copy_from_slice(&xid.to_le_bytes());
        rec[8..16].copy_from_slice(&self.prev.to_le_bytes());
        rec[16] = info;
        rec[17] = rmid;
        let crc = crc32c::crc32c_append(crc32c::crc32c(&rec[RECORD_HEADER..]), &rec[..20]);
        rec[20..24].copy_from_slice(&crc.to_le_bytes());
        self.raw(&rec)
    }

    /// Lays `rec` out from the next aligned position, continuing on new pages as needed.
    pub fn raw(&mut self, rec: &[u8]) -> Lsn {
        self.pos = align8(self.pos);
        if self.pos.is_multiple_of(WAL_PAGE_SIZE) {
            self.page_header(self.pos, 0, 0);
            self.pos += SHORT_PAGE_HEADER;
        }
        let at = Lsn(self.start + self.pos as u64);
        let mut left = rec;
        while !left.is_empty() {
            if self.pos.is_multiple_of(WAL_PAGE_SIZE) {
                if self.pos >= self.buf.len() {
                    break;
                }
                self.page_header(self.pos, XLP_FIRST_IS_CONTRECORD, left.len() as u32);
                let long = (self.start + self.pos as u64).is_multiple_of(self.seg_size as u64);
                self.pos += if long {
                    LONG_PAGE_HEADER
                } else {
                    SHORT_PAGE_HEADER
                };
            }
            let room = WAL_PAGE_SIZE - self.pos % WAL_PAGE_SIZE;
            let n = room.min(left.len());
            self.buf[self.pos..self.pos + n].copy_from_slice(&left[..n]);
            self.pos += n;
            left = &left[n..];
        }
        self.prev = at.0;
        self.starts.push(at);
        at
    }

    /// The end of the last record, MAXALIGNed as PostgreSQL reports it.
    pub fn end(&self) -> Lsn {
        Lsn(self.start + align8(self.pos) as u64)
    }
}

/// Main data only (`XLR_BLOCK_ID_DATA_SHORT` or `_LONG`).
pub fn main_only(main: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    if main.len() < 256 {
        b.extend_from_slice(&[255, main.len() as u8]);
    } else {
        b.push(254);
        b.extend_from_slice(&(main.len() as u32).to_le_bytes());
    }
    b.extend_from_slice(main);
    b
}

pub fn commit_main(micros: i64) -> Vec<u8> {
    micros.to_le_bytes().to_vec()
}
