//! Data page checksums, as PostgreSQL computes and checks them.
//!
//! A cluster initialised with `--data-checksums` stores a 16-bit checksum in every page header
//! (`pd_checksum`). Base backups verify it while reading, the way `pg_basebackup` does
//! (`sendFile` in `src/backend/backup/basebackup.c`), so corruption is found when a backup is
//! taken rather than when it is restored.
//!
//! The algorithm is `pg_checksum_page` from `src/include/storage/checksum_impl.h`: the 8 KiB
//! page is read as 64 rows of 32 native-endian `u32` words; each of the 32 columns runs its own
//! FNV-1a-like hash (`h = (h ^ v) * FNV_PRIME ^ ((h ^ v) >> 17)`) seeded from a fixed table, two
//! rounds of zeros mix the last words, the columns are xor-folded, the block number is xored in
//! and the result is reduced to `(sum % 65535) + 1`. The stored checksum itself (bytes 8..10)
//! counts as zero. The 32 independent columns are what lets the compiler vectorise the loop.
//!
//! Only little-endian layouts are supported, like the rest of `crate::pg`.

use super::Lsn;

/// PostgreSQL's page size (`BLCKSZ`). Other sizes need a rebuilt server and are not supported.
pub const BLCKSZ: usize = 8192;

/// Pages per relation segment file (`RELSEG_SIZE` for 1 GiB segments of 8 KiB pages). The block
/// number mixed into a checksum counts from the start of the relation, not of the segment file.
pub const RELSEG_SIZE: u32 = 131_072;

const N_SUMS: usize = 32;
const FNV_PRIME: u32 = 16_777_619;

/// Seeds of the 32 parallel hashes (`checksumBaseOffsets`).
const BASE_OFFSETS: [u32; N_SUMS] = [
    0x5B1F36E9, 0xB8525960, 0x02AB50AA, 0x1DE66D2A, 0x79FF467A, 0x9BB9F8A3, 0x217E7CD2, 0x83E13D2C,
    0xF8D4474F, 0xE39EB970, 0x42C6AE16, 0x993216FA, 0x7B093B5D, 0x98DAFF3C, 0xF718902A, 0x0B1C9CDB,
    0xE58F764B, 0x187636BC, 0x5D7B3BB1, 0xE73DE7DE, 0x92BEC979, 0xCCA6C0B2, 0x304A0979, 0x85AA43D4,
    0x783125BB, 0x6CA8EAA2, 0xE407EAC6, 0x4B5CFC3E, 0x9FBF8C76, 0x15CA20BE, 0xF2CA9FD3, 0x959BD756,
];

/// Byte offsets of the page header fields used here (`PageHeaderData` in `bufpage.h`).
const PD_CHECKSUM: usize = 8;
const PD_UPPER: usize = 14;

/// One round for every column (`CHECKSUM_COMP`).
#[inline(always)]
fn mix(sums: &mut [u32; N_SUMS], row: &[u32; N_SUMS]) {
    for (s, &v) in sums.iter_mut().zip(row) {
        let t = *s ^ v;
        *s = t.wrapping_mul(FNV_PRIME) ^ (t >> 17);
    }
}

#[inline(always)]
fn row_words(row: &[u8]) -> [u32; N_SUMS] {
    let mut words = [0u32; N_SUMS];
    for (w, b) in words.iter_mut().zip(row.chunks_exact(4)) {
        *w = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
    words
}

/// `pg_checksum_page`: the checksum PostgreSQL would store in this page as block `blkno` of its
/// relation. The stored checksum field does not influence the result.
pub fn pg_checksum_page(page: &[u8; BLCKSZ], blkno: u32) -> u16 {
    let mut sums = BASE_OFFSETS;
    let mut rows = page.chunks_exact(N_SUMS * 4);
    if let Some(first) = rows.next() {
        let mut words = row_words(first);
        // pd_checksum is the low half of word 2 (bytes 8..10) and is hashed as zero.
        words[PD_CHECKSUM / 4] &= 0xFFFF_0000;
        mix(&mut sums, &words);
    }
    for row in rows {
        mix(&mut sums, &row_words(row));
    }
    for _ in 0..2 {
        mix(&mut sums, &[0; N_SUMS]);
    }
    let checksum = sums.iter().fold(0u32, |acc, s| acc ^ s) ^ blkno;
    // The offset of one keeps zero free to mean "no checksum".
    ((checksum % 65535) + 1) as u16
}

/// The checksum stored in the page header (`pd_checksum`).
pub fn stored_checksum(page: &[u8; BLCKSZ]) -> u16 {
    u16::from_le_bytes([page[PD_CHECKSUM], page[PD_CHECKSUM + 1]])
}

/// The page LSN (`pd_lsn`: `xlogid` then `xrecoff`, two native-endian `u32`s).
pub fn page_lsn(page: &[u8; BLCKSZ]) -> Lsn {
    let hi = u32::from_le_bytes([page[0], page[1], page[2], page[3]]);
    let lo = u32::from_le_bytes([page[4], page[5], page[6], page[7]]);
    Lsn((u64::from(hi) << 32) | u64::from(lo))
}

/// `PageIsNew`: the page was never initialised (`pd_upper == 0`).
pub fn is_new(page: &[u8; BLCKSZ]) -> bool {
    page[PD_UPPER] == 0 && page[PD_UPPER + 1] == 0
}

/// The outcome of checking one page read during a backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageCheck {
    /// The stored checksum is right.
    Valid,
    /// An all-zero page: extended but never written, it has no checksum yet.
    New,
    /// Written at or after the backup started: it may be torn, and WAL replay rewrites it
    /// from a full-page image, so its checksum proves nothing either way.
    Recent,
    /// The checksum does not match. `expected` is what the contents hash to.
    Mismatch { expected: u16, found: u16 },
}

/// Checks one page the way a base backup must: pages changed since `backup_start` are skipped,
/// an all-zero page is fine, anything else must carry the right checksum. A page whose header
/// says "new" but holds data is checked like any other page, as PostgreSQL's
/// `PageIsVerifiedExtended` would reject it too.
pub fn check_page(page: &[u8; BLCKSZ], blkno: u32, backup_start: Lsn) -> PageCheck {
    if page_lsn(page) >= backup_start {
        return PageCheck::Recent;
    }
    if is_new(page) && page.iter().all(|&b| b == 0) {
        return PageCheck::New;
    }
    let expected = pg_checksum_page(page, blkno);
    let found = stored_checksum(page);
    if expected == found {
        PageCheck::Valid
    } else {
        PageCheck::Mismatch { expected, found }
    }
}

/// Where a file sits among a relation's segment files, if it is a relation file whose pages
/// carry checksums: `base/<db>/<file>`, `global/<file>` or
/// `pg_tblspc/<oid>/<version dir>/<db>/<file>`, with `<file>` one of `<relfilenode>`,
/// `<relfilenode>_fsm`, `_vm` or `_init`, each optionally followed by `.<segment number>`.
/// Returns the segment number. Temporary relations (`t3_16384`) and the non-relation files
/// in those directories (`pg_filenode.map`, `PG_VERSION`, `pg_internal.init`, `pg_control`)
/// are not checksummed and give `None`.
pub fn relation_segment(rel_path: &str) -> Option<u32> {
    let parts: Vec<&str> = rel_path.split('/').collect();
    let file = match parts.as_slice() {
        ["base", db, file] if all_digits(db) => file,
        ["global", file] => file,
        ["pg_tblspc", oid, _version, db, file] if all_digits(oid) && all_digits(db) => file,
        _ => return None,
    };
    parse_relation_file_name(file).map(|r| r.segno)
}

/// The parts of a relation file name such as `16384_fsm.2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelationFileName<'a> {
    pub relfilenode: &'a str,
    pub fork: Fork,
    pub segno: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fork {
    Main,
    Fsm,
    Vm,
    Init,
}

/// Parses `<digits>[_fsm|_vm|_init][.<digits>]` (`parse_filename_for_nontemp_relation`).
pub fn parse_relation_file_name(name: &str) -> Option<RelationFileName<'_>> {
    let (stem, segno) = match name.split_once('.') {
        Some((stem, seg)) => {
            // PostgreSQL never writes segment 0 with a suffix.
            let segno: u32 = if all_digits(seg) {
                seg.parse().ok()?
            } else {
                return None;
            };
            if segno == 0 {
                return None;
            }
            (stem, segno)
        }
        None => (name, 0),
    };
    let (relfilenode, fork) = match stem.split_once('_') {
        Some((node, "fsm")) => (node, Fork::Fsm),
        Some((node, "vm")) => (node, Fork::Vm),
        Some((node, "init")) => (node, Fork::Init),
        Some(_) => return None,
        None => (stem, Fork::Main),
    };
    all_digits(relfilenode).then_some(RelationFileName {
        relfilenode,
        fork,
        segno,
    })
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Page 0 of a one-row heap table (`create table t (id int, note text); insert into t
    /// values (1, 'pgward')`) written by PostgreSQL 15 with data checksums on, stored as the
    /// zstd frame of the 8 KiB page in hex. Its stored checksum is what PostgreSQL computed.
    const REAL_PAGE_ZST_HEX: &str = "28b52ffd64001fe5010042c40c17b0a9354012a082853529b0873f6a092e2f5e4b48989429\
        7f71148869865b42b8d7fec17f5444aa7e01ab512d9e227b8ee4030100e47e0f9cd79a4612";

    fn real_page() -> Box<[u8; BLCKSZ]> {
        let zst = hex::decode(REAL_PAGE_ZST_HEX.trim()).unwrap();
        let raw = zstd::decode_all(&zst[..]).unwrap();
        Box::new(raw.try_into().unwrap())
    }

    /// A page with a valid header and some content, as a heap page would look.
    fn synthetic(lsn: u64) -> Box<[u8; BLCKSZ]> {
        let mut p = Box::new([0u8; BLCKSZ]);
        p[0..4].copy_from_slice(&((lsn >> 32) as u32).to_le_bytes());
        p[4..8].copy_from_slice(&(lsn as u32).to_le_bytes());
        p[12..14].copy_from_slice(&28u16.to_le_bytes()); // pd_lower
        p[14..16].copy_from_slice(&8000u16.to_le_bytes()); // pd_upper
        p[16..18].copy_from_slice(&8192u16.to_le_bytes()); // pd_special
        p[18..20].copy_from_slice(&0x2004u16.to_le_bytes()); // size + layout version
        for (i, b) in p[8000..].iter_mut().enumerate() {
            *b = (i * 7 + 3) as u8;
        }
        p
    }

    #[test]
    fn real_page_checksum_matches_postgres() {
        let page = real_page();
        assert!(!is_new(&page));
        let stored = stored_checksum(&page);
        assert_ne!(stored, 0);
        assert_eq!(pg_checksum_page(&page, 0), stored);
        // The block number is part of the checksum: the same bytes elsewhere do not verify.
        assert_ne!(pg_checksum_page(&page, 1), stored);
        assert_eq!(check_page(&page, 0, Lsn(u64::MAX)), PageCheck::Valid);
    }

    #[test]
    fn stored_checksum_field_is_ignored() {
        let mut page = synthetic(0x1_0000_0000);
        let sum = pg_checksum_page(&page, 7);
        page[8..10].copy_from_slice(&sum.to_le_bytes());
        assert_eq!(pg_checksum_page(&page, 7), sum);
        page[8..10].copy_from_slice(&0xBEEFu16.to_le_bytes());
        assert_eq!(pg_checksum_page(&page, 7), sum);
        // Byte 10 (pd_flags) is hashed.
        page[10] ^= 1;
        assert_ne!(pg_checksum_page(&page, 7), sum);
    }

    #[test]
    fn check_page_rules() {
        let start = Lsn(0x2_0000_0000);
        let mut page = synthetic(0x1_0000_0000);
        let blkno = RELSEG_SIZE + 5;
        let sum = pg_checksum_page(&page, blkno);
        page[8..10].copy_from_slice(&sum.to_le_bytes());
        assert_eq!(check_page(&page, blkno, start), PageCheck::Valid);

        // A flipped byte in the middle of the page is caught and both values are reported.
        page[4000] ^= 0x55;
        let expected = pg_checksum_page(&page, blkno);
        assert_eq!(
            check_page(&page, blkno, start),
            PageCheck::Mismatch {
                expected,
                found: sum
            }
        );

        // A page written since the backup started is not judged.
        let recent = synthetic(start.0);
        assert_eq!(check_page(&recent, 0, start), PageCheck::Recent);

        // An all-zero page is new; a "new" header over garbage is not.
        let zero = Box::new([0u8; BLCKSZ]);
        assert_eq!(check_page(&zero, 3, start), PageCheck::New);
        let mut garbage = Box::new([0u8; BLCKSZ]);
        garbage[5000] = 1;
        assert!(is_new(&garbage));
        assert!(matches!(
            check_page(&garbage, 3, start),
            PageCheck::Mismatch { .. }
        ));
    }

    #[test]
    fn checksum_is_never_zero() {
        // Spot check over many block numbers: the +1 offset keeps 0 free.
        let page = synthetic(1);
        for blkno in 0..5000 {
            assert_ne!(pg_checksum_page(&page, blkno), 0);
        }
    }

    #[test]
    fn relation_files_are_recognised() {
        for (path, want) in [
            ("base/1/1259", Some(0)),
            ("base/16384/16385.3", Some(3)),
            ("base/16384/16385_fsm", Some(0)),
            ("base/16384/16385_vm.1", Some(1)),
            ("base/16384/16385_init", Some(0)),
            ("global/1260", Some(0)),
            ("pg_tblspc/16390/PG_15_202209061/16384/16391.12", Some(12)),
            ("global/pg_control", None),
            ("global/pg_filenode.map", None),
            ("base/1/PG_VERSION", None),
            ("base/1/pg_internal.init", None),
            ("base/16384/t3_16385", None),
            ("base/16384/16385.0", None),
            ("base/16384/16385_xyz", None),
            ("base/16384/16385.", None),
            ("base/pgsql_tmp/16385", None),
            ("pg_xact/0000", None),
            ("base/1/1259/x", None),
            ("16385", None),
        ] {
            assert_eq!(relation_segment(path), want, "{path}");
        }
        assert_eq!(
            parse_relation_file_name("123_init.4"),
            Some(RelationFileName {
                relfilenode: "123",
                fork: Fork::Init,
                segno: 4
            })
        );
    }
}
