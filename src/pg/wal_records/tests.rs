//! Crafted WAL: records laid out on pages the way PostgreSQL writes them (page headers,
//! continuation flags, MAXALIGN, `xl_prev`, crc32c), then read back. Real PostgreSQL WAL is
//! read in `tests/wal_records_real.rs`.

use super::testing::*;
use super::*;

/// 2026-11-22 10:00:00 UTC in PostgreSQL microseconds.
const T0: i64 = (1_795_341_600 - PG_EPOCH_UNIX_SECS) * 1_000_000;

fn t(micros: i64) -> DateTime<Utc> {
    pg_timestamp(micros).unwrap()
}

#[test]
fn timestamps_convert_from_the_postgres_epoch() {
    assert_eq!(t(0).to_rfc3339(), "2000-01-01T00:00:00+00:00");
    assert_eq!(t(T0).to_rfc3339(), "2026-11-22T10:00:00+00:00");
    assert_eq!(t(-1).to_rfc3339(), "1999-12-31T23:59:59.999999+00:00");
}

#[test]
fn finds_commits_aborts_restore_points_and_running_xacts() {
    let mut b = Builder::new(0x3000000, SEG);
    let mut running = vec![0u8; 24];
    running[12..16].copy_from_slice(&740u32.to_le_bytes());
    b.record(RM_STANDBY_ID, XLOG_RUNNING_XACTS, 0, &main_only(&running));
    b.record(10, 0x00, 740, &main_only(&[1, 2, 3])); // a heap insert, say
    let c1 = b.record(RM_XACT_ID, 0x00, 740, &main_only(&commit_main(T0)));
    let c1_end = b.end();
    b.record(RM_XACT_ID, 0x20, 741, &main_only(&commit_main(T0 + 5)));
    let mut rp = commit_main(T0 + 7);
    rp.extend_from_slice(b"before-upgrade\0\0\0garbage");
    b.record(RM_XLOG_ID, XLOG_RESTORE_POINT, 0, &main_only(&rp));
    let r = read_segment(&b.buf, Lsn(0x3000000), None);
    assert_eq!(r.records, 5);
    assert_eq!(r.xact_ends.len(), 2);
    assert_eq!(
        r.xact_ends[0],
        XactEnd {
            kind: XactEndKind::Commit,
            start: c1,
            end: c1_end,
            xid: 740,
            time: t(T0),
        }
    );
    assert_eq!(r.xact_ends[1].kind, XactEndKind::Abort);
    assert_eq!(r.last_xact_end().unwrap().time, t(T0 + 5));
    assert_eq!(r.restore_points[0].name, "before-upgrade");
    assert_eq!(r.restore_points[0].time, t(T0 + 7));
    assert_eq!(r.running_xacts[0].next_xid, 740);
    assert_eq!(r.xid_horizon(), Some(742));
    assert_eq!(r.end_lsn, b.end());
    assert!(
        matches!(r.end, ReadEnd::Invalid(ref w) if w.contains("zeros")),
        "{:?}",
        r.end
    );
}

#[test]
fn a_record_spanning_pages_is_read_whole() {
    let mut b = Builder::new(0x3000000, SEG);
    // 20 000 bytes of main data: the record covers three pages.
    let big = vec![0xAB; 20_000];
    b.record(10, 0x00, 5, &main_only(&big));
    assert!(b.pos > 2 * WAL_PAGE_SIZE);
    let c = b.record(RM_XACT_ID, 0x00, 5, &main_only(&commit_main(T0)));
    let r = read_segment(&b.buf, Lsn(0x3000000), None);
    assert_eq!(r.xact_ends.len(), 1, "{:?}", r.end);
    assert_eq!(r.xact_ends[0].start, c);
    assert_eq!(r.xact_ends[0].end, b.end());
}

#[test]
fn a_header_split_across_pages_is_read() {
    let mut b = Builder::new(0x3000000, SEG);
    // Fill the first page so that exactly 8 bytes are left before the second.
    let first_room = WAL_PAGE_SIZE - LONG_PAGE_HEADER - 8;
    let body = main_only(&vec![1u8; first_room - RECORD_HEADER - 5]);
    b.record(10, 0x00, 9, &body);
    assert_eq!(b.pos, WAL_PAGE_SIZE - 8);
    let c = b.record(RM_XACT_ID, 0x00, 9, &main_only(&commit_main(T0)));
    assert_eq!(c.0, 0x3000000 + WAL_PAGE_SIZE as u64 - 8);
    let r = read_segment(&b.buf, Lsn(0x3000000), None);
    assert_eq!(r.xact_ends.len(), 1, "{:?}", r.end);
    assert_eq!(r.xact_ends[0].start, c);
}

#[test]
fn a_torn_tail_ends_the_valid_wal() {
    let mut b = Builder::new(0x3000000, SEG);
    b.record(RM_XACT_ID, 0x00, 5, &main_only(&commit_main(T0)));
    let torn = b.record(RM_XACT_ID, 0x00, 6, &main_only(&commit_main(T0 + 1)));
    // One byte of the second commit's time flipped: its crc no longer matches.
    let at = (torn.0 - 0x3000000) as usize + RECORD_HEADER + 2;
    b.buf[at] ^= 1;
    let r = read_segment(&b.buf, Lsn(0x3000000), None);
    assert_eq!(r.xact_ends.len(), 1);
    assert_eq!(r.end_lsn, torn);
    assert!(
        matches!(r.end, ReadEnd::Invalid(ref w) if w.contains("crc32c")),
        "{:?}",
        r.end
    );

    // A record whose xl_prev does not point back is old content, not WAL.
    let mut b = Builder::new(0x3000000, SEG);
    b.record(RM_XACT_ID, 0x00, 5, &main_only(&commit_main(T0)));
    b.prev = 0x1234;
    b.record(RM_XACT_ID, 0x00, 6, &main_only(&commit_main(T0 + 1)));
    let r = read_segment(&b.buf, Lsn(0x3000000), None);
    assert_eq!(r.xact_ends.len(), 1);
    assert!(
        matches!(r.end, ReadEnd::Invalid(ref w) if w.contains("points back")),
        "{:?}",
        r.end
    );

    // A page from another place (a recycled segment's old page) stops the reader.
    let mut b = Builder::new(0x3000000, SEG);
    b.record(10, 0x00, 5, &main_only(&vec![0; 9000]));
    b.buf[WAL_PAGE_SIZE + 8] ^= 0x40;
    let r = read_segment(&b.buf, Lsn(0x3000000), None);
    assert_eq!(r.records, 0);
    assert!(
        matches!(r.end, ReadEnd::Invalid(ref w) if w.contains("says it is at")),
        "{:?}",
        r.end
    );

    // Zeros, foreign bytes, a short buffer: nothing, never a panic.
    for junk in [vec![0u8; SEG], vec![0x5a; SEG], vec![0u8; 100]] {
        let r = read_segment(&junk, Lsn(0x3000000), None);
        assert_eq!(r.records, 0);
        assert!(matches!(r.end, ReadEnd::Invalid(_)));
    }
}

#[test]
fn records_crossing_into_the_next_segment() {
    // Two segments; a commit-bearing record straddles the boundary.
    let mut b = Builder::new(0, 2 * SEG);
    b.record(10, 0x00, 5, &main_only(&vec![0; SEG - 3 * WAL_PAGE_SIZE]));
    while b.pos < SEG - 200 {
        b.record(10, 0x00, 5, &main_only(&[0; 100]));
    }
    let mut long_commit = commit_main(T0);
    long_commit.resize(400, 0); // padding inside main data, as an xinfo part would be
    let straddling = b.record(RM_XACT_ID, 0x00, 5, &main_only(&long_commit));
    let after = b.record(RM_XACT_ID, 0x00, 6, &main_only(&commit_main(T0 + 9)));
    assert!(straddling.0 < SEG as u64 && after.0 > SEG as u64);
    let (first, second) = b.buf.split_at(SEG);

    let alone = read_segment(first, Lsn(0), None);
    assert_eq!(alone.end, ReadEnd::ContinuesInNextSegment);
    assert!(alone.xact_ends.is_empty());
    let with_next = read_segment(first, Lsn(0), Some(second));
    assert_eq!(with_next.end, ReadEnd::SegmentEnd);
    assert_eq!(with_next.xact_ends.len(), 1);
    assert_eq!(with_next.xact_ends[0].start, straddling);
    // The second segment starts with the tail (xlp_rem_len) and then the next commit.
    let second_read = read_segment(second, Lsn(SEG as u64), None);
    assert_eq!(second_read.xact_ends.len(), 1, "{:?}", second_read.end);
    assert_eq!(second_read.xact_ends[0].start, after);
    assert_eq!(second_read.xact_ends[0].time, t(T0 + 9));
}

#[test]
fn main_data_is_found_behind_block_headers() {
    let mut b = Builder::new(0x3000000, SEG);
    // Block 0: image with a hole, compressed (hole length present), plus data, new relation;
    // block 1: same relation, data only; an origin and a top-level xid; then main data.
    let mut body = Vec::new();
    body.extend_from_slice(&[0, 0x10 | 0x20]);
    body.extend_from_slice(&3u16.to_le_bytes()); // data length
    body.extend_from_slice(&100u16.to_le_bytes()); // image length
    body.extend_from_slice(&40u16.to_le_bytes()); // hole offset
    body.push(0x01 | 0x02 | 0x10); // has hole, apply, zstd
    body.extend_from_slice(&8000u16.to_le_bytes()); // hole length
    body.extend_from_slice(&[0; 12]); // RelFileNode
    body.extend_from_slice(&7u32.to_le_bytes());
    body.extend_from_slice(&[1, 0x20 | 0x80]);
    body.extend_from_slice(&2u16.to_le_bytes());
    body.extend_from_slice(&8u32.to_le_bytes());
    body.push(253);
    body.extend_from_slice(&1u16.to_le_bytes());
    body.push(252);
    body.extend_from_slice(&77u32.to_le_bytes());
    let main = commit_main(T0 + 42);
    body.extend_from_slice(&[255, main.len() as u8]);
    body.extend_from_slice(&[9; 100]); // image
    body.extend_from_slice(&[1; 3]);
    body.extend_from_slice(&[2; 2]);
    body.extend_from_slice(&main);
    b.record(RM_XACT_ID, 0x00, 78, &body);
    // Uncompressed image with a hole: no hole length field.
    let mut body = vec![0, 0x10];
    body.extend_from_slice(&0u16.to_le_bytes());
    body.extend_from_slice(&8000u16.to_le_bytes());
    body.extend_from_slice(&10u16.to_le_bytes());
    body.push(0x01);
    body.extend_from_slice(&[0; 16]);
    body.extend_from_slice(&[255, 8]);
    body.extend_from_slice(&vec![0; 8000]);
    body.extend_from_slice(&(T0 + 43).to_le_bytes());
    b.record(RM_XACT_ID, 0x20, 79, &body);
    let r = read_segment(&b.buf, Lsn(0x3000000), None);
    let times: Vec<_> = r.xact_ends.iter().map(|x| (x.xid, x.time)).collect();
    assert_eq!(times, vec![(78, t(T0 + 42)), (79, t(T0 + 43))]);
}

#[test]
fn prepared_transactions_report_the_prepared_xid() {
    let mut b = Builder::new(0x3000000, SEG);
    // COMMIT PREPARED with xinfo: dbinfo, 2 subxacts, 1 relfilenode, 1 dropped stat,
    // 1 inval, twophase xid 900.
    let mut main = commit_main(T0);
    let xinfo: u32 = 1 | 2 | 4 | 8 | 16 | (1 << 8);
    main.extend_from_slice(&xinfo.to_le_bytes());
    main.extend_from_slice(&[0; 8]);
    main.extend_from_slice(&2u32.to_le_bytes());
    main.extend_from_slice(&[0; 8]);
    main.extend_from_slice(&1u32.to_le_bytes());
    main.extend_from_slice(&[0; 12]);
    main.extend_from_slice(&1u32.to_le_bytes());
    main.extend_from_slice(&[0; 12]);
    main.extend_from_slice(&1u32.to_le_bytes());
    main.extend_from_slice(&[0; 16]);
    main.extend_from_slice(&900u32.to_le_bytes());
    b.record(RM_XACT_ID, 0x30 | 0x80, 0, &main_only(&main));
    // ABORT PREPARED: no invalidations part.
    let mut main = commit_main(T0 + 1);
    main.extend_from_slice(&(16u32 | 1).to_le_bytes());
    main.extend_from_slice(&[0; 8]);
    main.extend_from_slice(&901u32.to_le_bytes());
    b.record(RM_XACT_ID, 0x40 | 0x80, 0, &main_only(&main));
    let r = read_segment(&b.buf, Lsn(0x3000000), None);
    let got: Vec<_> = r.xact_ends.iter().map(|x| (x.kind, x.xid)).collect();
    assert_eq!(
        got,
        vec![
            (XactEndKind::CommitPrepared, 900),
            (XactEndKind::AbortPrepared, 901)
        ]
    );
}

#[test]
fn xid_order_wraps_around() {
    assert!(xid_precedes(5, 6));
    assert!(xid_precedes(u32::MAX - 2, 5));
    assert_eq!(xid_max(u32::MAX - 2, 5), 5);
    assert_eq!(xid_max(7, 5), 7);
}

#[test]
fn a_segment_holding_only_the_tail_of_a_record() {
    // One record runs from the first segment to the very end of the second: the second has
    // nothing of its own, which is not an error.
    let build = |len: usize| {
        let mut b = Builder::new(0, 3 * SEG);
        b.record(10, 0x00, 5, &main_only(&[0; 16]));
        b.record(10, 0x00, 5, &main_only(&vec![7; len]));
        b
    };
    let mut len = SEG;
    let mut b = build(len);
    for _ in 0..4 {
        if b.pos == 2 * SEG {
            break;
        }
        len = (len as isize + (2 * SEG) as isize - b.pos as isize) as usize;
        b = build(len);
    }
    assert_eq!(
        b.pos,
        2 * SEG,
        "the record should end with the second segment"
    );
    let second = &b.buf[SEG..2 * SEG];
    let r = read_segment(second, Lsn(SEG as u64), None);
    assert_eq!(
        (r.records, r.end.clone()),
        (0, ReadEnd::SegmentEnd),
        "{:?}",
        r.end
    );
    let r = read_segment(second, Lsn(SEG as u64), Some(&b.buf[2 * SEG..]));
    assert_eq!(r.records, 0, "{:?}", r.end);
    let first = read_segment(&b.buf[..SEG], Lsn(0), Some(second));
    assert_eq!(first.records, 2, "{:?}", first.end);
}

#[test]
fn an_overwritten_contrecord_is_skipped() {
    // Record B ran onto the second page but was never completed (a crash); after recovery
    // PostgreSQL wrote that page anew with XLP_FIRST_IS_OVERWRITE_CONTRECORD: reading skips B
    // and goes on with the new WAL, whose xl_prev points at A.
    let mut b = Builder::new(0x3000000, SEG);
    let room = WAL_PAGE_SIZE - LONG_PAGE_HEADER - 100;
    let a = b.record(10, 0x00, 5, &main_only(&vec![1; room - RECORD_HEADER - 5]));
    assert_eq!(b.pos, WAL_PAGE_SIZE - 100);
    b.record(RM_XACT_ID, 0x00, 6, &main_only(&[7; 200]));
    // The second page rewritten: its header says "overwrite", then new records.
    b.buf[WAL_PAGE_SIZE + 2..WAL_PAGE_SIZE + 4].copy_from_slice(&0x0008u16.to_le_bytes());
    b.buf[WAL_PAGE_SIZE + 16..WAL_PAGE_SIZE + 20].fill(0);
    b.buf[WAL_PAGE_SIZE + SHORT_PAGE_HEADER..2 * WAL_PAGE_SIZE].fill(0);
    b.pos = WAL_PAGE_SIZE + SHORT_PAGE_HEADER;
    b.prev = a.0;
    let c = b.record(RM_XACT_ID, 0x00, 7, &main_only(&commit_main(T0)));
    let r = read_segment(&b.buf, Lsn(0x3000000), None);
    let got: Vec<_> = r.xact_ends.iter().map(|x| (x.xid, x.start)).collect();
    assert_eq!(got, vec![(7, c)], "{:?}", r.end);
    assert_eq!(r.records, 2);
}
