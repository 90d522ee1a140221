//! LTX codec without Litestream: the encoder's bytes equal a file assembled by hand from the format
//! reference (section 2), frames from the reference `lz4` tool decode, every header/page/index/trailer
//! rule yields its typed error, the merger keeps the newest pages and drops pages past the final
//! commit, and (proptest) random pages round-trip through both encodings while damaged or random
//! bytes never panic and never decode to wrong pages.

use std::io::Write;
use std::process::{Command, Stdio};

use crc::{CRC_64_GO_ISO, Crc};
use litevisor::replication::ltx::*;
use proptest::prelude::*;

fn header(min: u64, max: u64, commit: u32, page_size: u32) -> Header {
    Header {
        flags: HEADER_FLAG_NO_CHECKSUM,
        page_size,
        commit,
        min_txid: min,
        max_txid: max,
        timestamp_ms: 1_700_000_000_123,
        ..Header::default()
    }
}

/// A page whose bytes depend on (pgno, version); half of it compresses, half is noise.
fn page(pgno: u32, version: u8, page_size: u32) -> Vec<u8> {
    let mut x = pgno.wrapping_mul(2_654_435_761) ^ u32::from(version) << 24;
    (0..page_size as usize)
        .map(|i| {
            if i < page_size as usize / 2 {
                (i / 16) as u8 ^ version
            } else {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            }
        })
        .collect()
}

fn encode(h: &Header, pages: &[(u32, Vec<u8>)], enc: PageEncoding) -> Vec<u8> {
    let mut e = Encoder::new(Vec::new(), h, enc).unwrap();
    for (pgno, data) in pages {
        e.encode_page(*pgno, data).unwrap();
    }
    let (out, trailer) = e.finish().unwrap();
    assert_eq!(trailer.post_apply_checksum, 0);
    assert_ne!(trailer.file_checksum & CHECKSUM_FLAG, 0);
    assert_eq!(&out[out.len() - 8..], &trailer.file_checksum.to_be_bytes());
    out
}

type Pages = Vec<(u32, Vec<u8>)>;

fn decode(bytes: &[u8]) -> Result<(Header, Pages, Trailer), LtxError> {
    let mut d = Decoder::new(bytes)?;
    let h = *d.header();
    let mut buf = vec![0u8; h.page_size as usize];
    let mut pages = Vec::new();
    while let Some(pgno) = d.next_page(&mut buf)? {
        pages.push((pgno, buf.clone()));
    }
    let t = d.finish()?;
    Ok((h, pages, t))
}

fn uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// One page as stored: page-header flags, the bytes after the 6-byte header, the page itself.
struct RawPage {
    pgno: u32,
    flags: u16,
    payload: Vec<u8>,
    data: Vec<u8>,
}

/// Assembles an LTX file straight from the reference (section 2), independently of the Encoder.
/// `index_fixup` may alter the page index before the checksum is computed.
fn assemble(h: &Header, pages: &[RawPage], index_fixup: impl Fn(&mut Vec<u8>)) -> Vec<u8> {
    let crc = Crc::<u64>::new(&CRC_64_GO_ISO);
    let mut logical = Vec::new();
    let mut file = h.to_bytes().to_vec();
    logical.extend_from_slice(&file);
    let mut index = Vec::new();
    for p in pages {
        let offset = file.len() as u64;
        let mut ph = p.pgno.to_be_bytes().to_vec();
        ph.extend_from_slice(&p.flags.to_be_bytes());
        file.extend_from_slice(&ph);
        logical.extend_from_slice(&ph);
        if p.flags == 1 {
            logical.extend_from_slice(&p.payload[..4]);
        }
        logical.extend_from_slice(&p.data);
        file.extend_from_slice(&p.payload);
        uvarint(&mut index, u64::from(p.pgno));
        uvarint(&mut index, offset);
        uvarint(&mut index, 6 + p.payload.len() as u64);
    }
    index.push(0);
    index_fixup(&mut index);
    let mut tail = vec![0u8; 6];
    tail.extend_from_slice(&index);
    tail.extend_from_slice(&(index.len() as u64).to_be_bytes());
    tail.extend_from_slice(&0u64.to_be_bytes());
    logical.extend_from_slice(&tail);
    file.extend_from_slice(&tail);
    let checksum = CHECKSUM_FLAG | crc.checksum(&logical);
    file.extend_from_slice(&checksum.to_be_bytes());
    file
}

fn block_page(pgno: u32, data: Vec<u8>) -> RawPage {
    let block = lz4_flex::block::compress(&data);
    let mut payload = (block.len() as u32).to_be_bytes().to_vec();
    payload.extend_from_slice(&block);
    RawPage {
        pgno,
        flags: 1,
        payload,
        data,
    }
}

fn frame_page(pgno: u32, data: Vec<u8>, info: &lz4_flex::frame::FrameInfo) -> RawPage {
    let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(info.clone(), Vec::new());
    enc.write_all(&data).unwrap();
    RawPage {
        pgno,
        flags: 0,
        payload: enc.finish().unwrap(),
        data,
    }
}

fn legacy_info() -> lz4_flex::frame::FrameInfo {
    lz4_flex::frame::FrameInfo::new()
        .block_size(lz4_flex::frame::BlockSize::Max64KB)
        .content_checksum(true)
}

#[test]
fn crc_is_go_iso() {
    assert_eq!(
        Crc::<u64>::new(&CRC_64_GO_ISO).checksum(b"123456789"),
        0xb909_56c7_75a4_1001
    );
}

#[test]
fn encoder_output_equals_the_reference_layout() {
    let h = Header {
        wal_offset: 32,
        wal_size: 4096 * 3,
        wal_salt1: 7,
        wal_salt2: 9,
        ..header(3, 3, 12, 4096)
    };
    let pages: Pages = [2u32, 5, 12]
        .iter()
        .map(|&p| (p, page(p, 1, 4096)))
        .collect();
    let block: Vec<RawPage> = pages
        .iter()
        .map(|(p, d)| block_page(*p, d.clone()))
        .collect();
    assert_eq!(
        encode(&h, &pages, PageEncoding::Block),
        assemble(&h, &block, |_| {})
    );
    let frame: Vec<RawPage> = pages
        .iter()
        .map(|(p, d)| frame_page(*p, d.clone(), &legacy_info()))
        .collect();
    assert_eq!(
        encode(&h, &pages, PageEncoding::Frame),
        assemble(&h, &frame, |_| {})
    );
    // Same pages, different logical streams: the block encoding hashes the size fields too.
    assert_ne!(
        encode(&h, &pages, PageEncoding::Block)[..],
        encode(&h, &pages, PageEncoding::Frame)[..]
    );
}

#[test]
fn round_trip_both_encodings() {
    for enc in [PageEncoding::Frame, PageEncoding::Block] {
        for page_size in [512u32, 4096, 65536] {
            let h = header(5, 7, 10, page_size);
            let pages: Pages = [1u32, 3, 10]
                .iter()
                .map(|&p| (p, page(p, 1, page_size)))
                .collect();
            let (h2, pages2, _) = decode(&encode(&h, &pages, enc)).unwrap();
            assert_eq!(h2, h);
            assert_eq!(pages2, pages);
        }
    }
}

#[test]
fn decodes_lz4_frame_variants() {
    use lz4_flex::frame::{BlockMode, BlockSize, FrameInfo};
    let h = header(2, 2, 4, 65536);
    let variants = [
        legacy_info(),
        FrameInfo::new()
            .block_size(BlockSize::Max4MB)
            .content_checksum(false),
        FrameInfo::new()
            .block_size(BlockSize::Max64KB)
            .content_size(Some(65536))
            .block_checksums(true),
        FrameInfo::new()
            .block_size(BlockSize::Max64KB)
            .block_mode(BlockMode::Linked)
            .content_checksum(true),
    ];
    for info in variants {
        let pages = vec![
            frame_page(1, page(1, 3, 65536), &info),
            frame_page(4, vec![0; 65536], &info),
        ];
        let file = assemble(&h, &pages, |_| {});
        let (_, got, _) = decode(&file).unwrap();
        assert_eq!(
            got,
            pages
                .iter()
                .map(|p| (p.pgno, p.data.clone()))
                .collect::<Pages>()
        );
    }
}

/// Frames written by the reference C implementation (the `lz4` tool), with and without block
/// dependency, content size and block checksums, decode exactly to their page.
#[test]
fn decodes_frames_from_the_reference_lz4_tool() {
    let h = header(2, 2, 2, 4096);
    let data = page(2, 9, 4096);
    for args in [
        &["-B4"][..],
        &["-B4", "-BD", "--content-size"],
        &["-B7", "-BX", "--no-frame-crc"],
        &["-B5", "-9"],
    ] {
        let mut child = Command::new("lz4")
            .args(args)
            .args(["-c", "-q", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the lz4 tool is required (apt-get install lz4)");
        child.stdin.take().unwrap().write_all(&data).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let raw = RawPage {
            pgno: 2,
            flags: 0,
            payload: out.stdout,
            data: data.clone(),
        };
        let (_, got, _) =
            decode(&assemble(&h, &[raw], |_| {})).unwrap_or_else(|e| panic!("lz4 {args:?}: {e}"));
        assert_eq!(got, vec![(2, data.clone())], "lz4 {args:?}");
    }
}

#[test]
fn header_bytes_and_validation() {
    let h = Header {
        wal_offset: 4152,
        wal_size: 8240,
        wal_salt1: 0xdead_beef,
        wal_salt2: 1,
        node_id: 0,
        ..header(0x10, 0x20, 99, 8192)
    };
    let b = h.to_bytes();
    assert_eq!(&b[..4], b"LTX1");
    assert_eq!(&b[8..12], &8192u32.to_be_bytes());
    assert_eq!(&b[16..24], &0x10u64.to_be_bytes());
    assert_eq!(&b[80..], &[0u8; 20]);
    assert_eq!(Header::from_bytes(&b).unwrap(), h);
    h.validate().unwrap();
    assert!(!h.is_snapshot());
    assert!(header(1, 9, 3, 4096).is_snapshot());

    let mut bad_magic = b;
    bad_magic[0] = b'X';
    assert!(matches!(
        Header::from_bytes(&bad_magic),
        Err(LtxError::BadMagic(_))
    ));
    let invalid = [
        Header { flags: 0x3, ..h },
        Header {
            page_size: 1000,
            ..h
        },
        Header {
            page_size: 256,
            ..h
        },
        Header {
            page_size: 131072,
            ..h
        },
        Header { min_txid: 0, ..h },
        Header { max_txid: 0, ..h },
        Header {
            min_txid: 0x21,
            ..h
        },
        Header {
            wal_offset: -1,
            ..h
        },
        Header { wal_size: -1, ..h },
        Header {
            wal_offset: 0,
            wal_size: 0,
            ..h
        },
        Header {
            wal_offset: 0,
            wal_salt1: 0,
            wal_salt2: 0,
            ..h
        },
        Header {
            pre_apply_checksum: CHECKSUM_FLAG | 5,
            ..h
        },
        Header {
            min_txid: 1,
            pre_apply_checksum: CHECKSUM_FLAG | 5,
            flags: 0,
            ..h
        },
        Header {
            flags: 0,
            pre_apply_checksum: 0,
            ..h
        },
        Header {
            flags: 0,
            pre_apply_checksum: 5,
            ..h
        },
    ];
    for bad in invalid {
        assert!(
            matches!(bad.validate(), Err(LtxError::InvalidHeader(_))),
            "{bad:?} should be invalid"
        );
    }
    // Checksum-tracking headers are valid LTX, just not something litevisor writes.
    let tracked = Header {
        flags: 0,
        pre_apply_checksum: CHECKSUM_FLAG | 5,
        ..h
    };
    tracked.validate().unwrap();
    assert!(matches!(
        Encoder::new(Vec::new(), &tracked, PageEncoding::Frame),
        Err(LtxError::ChecksumsUnsupported(0))
    ));
    assert_eq!(lock_pgno(4096), 262_145);
    assert_eq!(lock_pgno(65536), 16_385);
}

#[test]
fn file_names() {
    assert_eq!(file_name(1, 0x2a), "0000000000000001-000000000000002a.ltx");
    assert_eq!(
        parse_file_name("0000000000000001-000000000000002a.ltx"),
        Some((1, 0x2a))
    );
    assert_eq!(
        parse_file_name(&file_name(u64::MAX, u64::MAX)),
        Some((u64::MAX, u64::MAX))
    );
    for bad in [
        "0000000000000001-000000000000002A.ltx",
        "000000000000001-000000000000002a.ltx",
        "0000000000000001-000000000000002a.ltx.tmp",
        "0000000000000001_000000000000002a.ltx",
        "0000000000000001-000000000000002a.LTX",
        "+000000000000001-000000000000002a.ltx",
        "",
    ] {
        assert_eq!(parse_file_name(bad), None, "{bad}");
    }
}

#[test]
fn encoder_enforces_page_rules() {
    let p = |pgno| page(pgno, 0, 4096);
    let mut e = Encoder::new(Vec::new(), &header(2, 2, 10, 4096), PageEncoding::Block).unwrap();
    e.encode_page(3, &p(3)).unwrap();
    assert!(matches!(
        e.encode_page(3, &p(3)),
        Err(LtxError::PageOutOfOrder { prev: 3, pgno: 3 })
    ));
    assert!(matches!(
        e.encode_page(2, &p(2)),
        Err(LtxError::PageOutOfOrder { .. })
    ));
    assert!(matches!(
        e.encode_page(11, &p(11)),
        Err(LtxError::PageBeyondCommit {
            pgno: 11,
            commit: 10
        })
    ));
    assert!(matches!(
        e.encode_page(4, &[0u8; 512]),
        Err(LtxError::BufferSize {
            got: 512,
            want: 4096
        })
    ));

    let big = header(2, 2, 300_000, 4096);
    let mut e = Encoder::new(Vec::new(), &big, PageEncoding::Frame).unwrap();
    assert!(matches!(
        e.encode_page(262_145, &p(1)),
        Err(LtxError::LockPage { pgno: 262_145 })
    ));
    e.encode_page(262_146, &p(1)).unwrap();

    let e = Encoder::new(Vec::new(), &header(2, 2, 10, 4096), PageEncoding::Frame).unwrap();
    assert!(matches!(e.finish(), Err(LtxError::NoPages)));
    assert!(matches!(
        Encoder::new(Vec::new(), &header(2, 2, 0, 4096), PageEncoding::Frame),
        Err(LtxError::InvalidHeader(_))
    ));

    // Snapshots hold every page from 1 to commit.
    let mut e = Encoder::new(Vec::new(), &header(1, 4, 3, 4096), PageEncoding::Frame).unwrap();
    assert!(matches!(
        e.encode_page(2, &p(2)),
        Err(LtxError::SnapshotGap { prev: 0, pgno: 2 })
    ));
    e.encode_page(1, &p(1)).unwrap();
    assert!(matches!(
        e.encode_page(3, &p(3)),
        Err(LtxError::SnapshotGap { prev: 1, pgno: 3 })
    ));
    e.encode_page(2, &p(2)).unwrap();
    assert!(matches!(
        e.finish(),
        Err(LtxError::SnapshotIncomplete { last: 2, commit: 3 })
    ));
}

#[test]
fn decoder_errors_are_typed() {
    let h = header(2, 3, 8, 1024);
    let pages: Pages = [1u32, 4, 8]
        .iter()
        .map(|&p| (p, page(p, 2, 1024)))
        .collect();
    for enc in [PageEncoding::Frame, PageEncoding::Block] {
        let good = encode(&h, &pages, enc);
        decode(&good).unwrap();

        let mut bad = good.clone();
        bad[1] = b'Z';
        assert!(matches!(decode(&bad), Err(LtxError::BadMagic(_))));
        assert!(matches!(
            decode(&good[..50]),
            Err(LtxError::Truncated("header"))
        ));
        assert!(matches!(
            decode(&good[..good.len() - 3]),
            Err(LtxError::Truncated("trailer"))
        ));
        assert!(matches!(decode(&good[..300]), Err(LtxError::Truncated(_))));

        // Reserved header bytes are not validated but are covered by the file checksum.
        let mut bad = good.clone();
        bad[90] ^= 1;
        assert!(matches!(
            decode(&bad),
            Err(LtxError::ChecksumMismatch { .. })
        ));
        let mut bad = good.clone();
        let n = bad.len();
        bad[n - 9] ^= 1;
        assert!(
            matches!(decode(&bad), Err(LtxError::InvalidTrailer(_))),
            "post-apply checksum on NoChecksum"
        );
        let mut bad = good.clone();
        bad.push(0);
        assert!(matches!(decode(&bad), Err(LtxError::TrailingData)));
        let mut bad = good.clone();
        bad[HEADER_SIZE + 4] = 0x80;
        bad[HEADER_SIZE + 5] = 0;
        assert!(matches!(
            decode(&bad),
            Err(LtxError::InvalidPageFlags {
                pgno: 1,
                flags: 0x8000
            })
        ));
    }

    // Hand-assembled files with valid checksums but broken rules.
    let raw = |pgnos: &[u32]| {
        pgnos
            .iter()
            .map(|&p| block_page(p, page(p, 1, 1024)))
            .collect::<Vec<_>>()
    };
    let err = |h: &Header, pgnos: &[u32]| decode(&assemble(h, &raw(pgnos), |_| {})).unwrap_err();
    assert!(matches!(
        err(&h, &[4, 1]),
        LtxError::PageOutOfOrder { prev: 4, pgno: 1 }
    ));
    assert!(matches!(
        err(&h, &[1, 9]),
        LtxError::PageBeyondCommit { pgno: 9, commit: 8 }
    ));
    assert!(matches!(
        err(&header(1, 1, 3, 1024), &[1, 3]),
        LtxError::SnapshotGap { prev: 1, pgno: 3 }
    ));
    assert!(matches!(
        err(&header(1, 1, 3, 1024), &[1, 2]),
        LtxError::SnapshotIncomplete { last: 2, commit: 3 }
    ));
    assert!(matches!(
        err(&header(2, 2, 3_000_000, 512), &[2_097_153]),
        LtxError::LockPage { .. }
    ));
    assert!(matches!(err(&h, &[]), LtxError::NoPages));
    let mut wrong_size = raw(&[1]);
    wrong_size[0].data.truncate(512);
    wrong_size[0].payload = {
        let b = lz4_flex::block::compress(&wrong_size[0].data);
        [(b.len() as u32).to_be_bytes().to_vec(), b].concat()
    };
    assert!(matches!(
        decode(&assemble(&h, &wrong_size, |_| {})),
        Err(LtxError::BadPageData { pgno: 1, .. })
    ));
    // An index that does not describe the pages, with a checksum that matches it.
    let bad_index = assemble(&h, &raw(&[1, 4]), |index| index[1] += 1);
    assert!(matches!(decode(&bad_index), Err(LtxError::InvalidIndex(_))));
    let empty_index = assemble(&h, &raw(&[1, 4]), |index| *index = vec![0]);
    assert!(matches!(
        decode(&empty_index),
        Err(LtxError::InvalidIndex(_))
    ));
    let dropped_entry = assemble(&h, &raw(&[1, 4]), |index| {
        // Keep only the second (pgno, offset, size) entry and the end marker.
        let mut values = Vec::new();
        let (mut v, mut shift) = (0u64, 0);
        for &b in index.iter() {
            v |= u64::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                values.push(v);
                (v, shift) = (0, 0);
            }
        }
        index.clear();
        for &v in &values[3..] {
            uvarint(index, v);
        }
    });
    assert!(matches!(
        decode(&dropped_entry),
        Err(LtxError::InvalidIndex(_))
    ));
}

#[test]
fn decoder_next_page_after_end_and_finish_drains() {
    let h = header(2, 2, 5, 512);
    let pages: Pages = (1..=5).map(|p| (p, page(p, 1, 512))).collect();
    let file = encode(&h, &pages, PageEncoding::Frame);
    let mut d = Decoder::new(&file[..]).unwrap();
    let mut buf = vec![0u8; 512];
    assert_eq!(d.next_page(&mut buf).unwrap(), Some(1));
    // finish() reads (and checksums) the pages not read yet.
    d.finish().unwrap();
    let mut d = Decoder::new(&file[..]).unwrap();
    while d.next_page(&mut buf).unwrap().is_some() {}
    assert_eq!(d.next_page(&mut buf).unwrap(), None);
    d.finish().unwrap();
    // A corrupted page is reported by finish() too, and the decoder stays failed.
    let mut bad = file.clone();
    bad[HEADER_SIZE + 20] ^= 0xff;
    let mut d = Decoder::new(&bad[..]).unwrap();
    let first = d.next_page(&mut buf);
    assert!(first.is_err(), "corrupt lz4 frame detected: {first:?}");
    assert!(matches!(d.next_page(&mut buf), Err(LtxError::Failed(_))));
    assert!(d.finish().is_err());
}

fn file_of(min: u64, max: u64, commit: u32, ts: i64, pages: &[(u32, u8)]) -> Vec<u8> {
    let h = Header {
        timestamp_ms: ts,
        ..header(min, max, commit, 512)
    };
    let pages: Pages = pages.iter().map(|&(p, v)| (p, page(p, v, 512))).collect();
    encode(&h, &pages, PageEncoding::Frame)
}

fn merge(files: &[Vec<u8>]) -> Result<(Header, Pages), LtxError> {
    let decoders = files
        .iter()
        .map(|f| Decoder::new(&f[..]))
        .collect::<Result<Vec<_>, _>>()?;
    let mut m = Merger::new(decoders)?;
    let h = m.header();
    let mut buf = vec![0u8; h.page_size as usize];
    let mut pages = Vec::new();
    while let Some(pgno) = m.next_page(&mut buf)? {
        pages.push((pgno, buf.clone()));
    }
    m.finish()?;
    Ok((h, pages))
}

#[test]
fn merger_keeps_newest_pages_and_drops_pages_past_commit() {
    let a = file_of(1, 1, 4, 100, &[(1, 1), (2, 1), (3, 1), (4, 1)]);
    let b = file_of(2, 2, 5, 200, &[(2, 2), (5, 2)]);
    let c = file_of(3, 5, 3, 300, &[(1, 3), (3, 3)]);
    let (h, pages) = merge(&[a, b, c]).unwrap();
    assert_eq!(
        h,
        Header {
            flags: HEADER_FLAG_NO_CHECKSUM,
            page_size: 512,
            commit: 3,
            min_txid: 1,
            max_txid: 5,
            timestamp_ms: 300,
            ..Header::default()
        }
    );
    let want: Pages = [(1, 3), (2, 2), (3, 3)]
        .iter()
        .map(|&(p, v)| (p, page(p, v, 512)))
        .collect();
    assert_eq!(pages, want);

    // The merged stream re-encodes into a valid snapshot.
    let (h2, pages2, _) = decode(&encode(&h, &pages, PageEncoding::Block)).unwrap();
    assert_eq!((h2, pages2), (h, want));
}

#[test]
fn merger_checks_its_inputs() {
    let a = file_of(1, 3, 2, 1, &[(1, 1), (2, 1)]);
    let overlapping = file_of(2, 4, 2, 2, &[(2, 2)]);
    let (_, pages) = merge(&[a.clone(), overlapping]).unwrap();
    assert_eq!(pages[1], (2, page(2, 2, 512)));
    let gap = file_of(5, 5, 2, 2, &[(2, 2)]);
    assert!(matches!(
        merge(&[a.clone(), gap]),
        Err(LtxError::NonContiguous {
            prev_max: 3,
            min: 5,
            ..
        })
    ));
    let not_newer = file_of(2, 3, 2, 2, &[(2, 2)]);
    assert!(matches!(
        merge(&[a.clone(), not_newer]),
        Err(LtxError::NonContiguous { .. })
    ));
    let other_size = encode(
        &header(4, 4, 2, 1024),
        &[(2, page(2, 0, 1024))],
        PageEncoding::Frame,
    );
    assert!(matches!(
        merge(&[a.clone(), other_size]),
        Err(LtxError::MixedPageSize { index: 1, .. })
    ));
    assert!(matches!(merge(&[]), Err(LtxError::NoInputs)));
    // A damaged input is reported with its index when the merge finishes.
    let mut b = file_of(4, 4, 2, 2, &[(2, 2)]);
    let n = b.len();
    b[n - 1] ^= 1;
    let err = merge(&[a, b]).unwrap_err();
    assert!(
        matches!(&err, LtxError::Input { index: 1, min_txid: 4, source, .. } if matches!(**source, LtxError::ChecksumMismatch { .. })),
        "{err}"
    );
}

fn arb_file() -> impl Strategy<Value = (Header, Pages)> {
    (
        prop::sample::select(vec![512u32, 1024, 4096, 65536]),
        2u64..1000,
        0u64..3,
        any::<bool>(),
        any::<i64>(),
    )
        .prop_flat_map(|(page_size, min, span, snapshot, ts)| {
            let max_pages = if page_size == 65536 { 3 } else { 24 };
            let pgnos = if snapshot {
                (1..=max_pages as u32)
                    .prop_map(|n| (1..=n).collect::<Vec<u32>>())
                    .boxed()
            } else {
                prop::collection::btree_set(1u32..200, 1..max_pages)
                    .prop_map(|s| s.into_iter().collect())
                    .boxed()
            };
            let contents = prop::collection::vec(
                (any::<u8>(), 0usize..=page_size as usize, any::<u64>()),
                max_pages,
            );
            (
                Just(page_size),
                Just(if snapshot { 1 } else { min }),
                Just(span),
                Just(ts),
                pgnos,
                contents,
            )
        })
        .prop_map(|(page_size, min, span, ts, pgnos, contents)| {
            let commit = *pgnos.last().unwrap() + if min == 1 { 0 } else { 3 };
            let h = Header {
                timestamp_ms: ts,
                ..header(min, min + span, commit, page_size)
            };
            let pages = pgnos
                .iter()
                .zip(contents)
                .map(|(&pgno, (fill, noisy, seed))| {
                    // A run of one byte (compressible) followed by pseudo-random bytes (not).
                    let mut x = seed | 1;
                    let data = (0..page_size as usize)
                        .map(|i| {
                            if i < page_size as usize - noisy {
                                fill
                            } else {
                                x ^= x << 13;
                                x ^= x >> 7;
                                x ^= x << 17;
                                x as u8
                            }
                        })
                        .collect();
                    (pgno, data)
                })
                .collect();
            (h, pages)
        })
}

fn arb_encoding() -> impl Strategy<Value = PageEncoding> {
    prop::sample::select(vec![PageEncoding::Frame, PageEncoding::Block])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(150))]

    #[test]
    fn random_pages_round_trip((h, pages) in arb_file(), enc in arb_encoding()) {
        let file = encode(&h, &pages, enc);
        let (h2, pages2, trailer) = decode(&file).unwrap();
        prop_assert_eq!(h2, h);
        prop_assert_eq!(pages2, pages);
        prop_assert_eq!(trailer.post_apply_checksum, 0);
    }

    /// Damage is either detected (typed error) or harmless (identical header and pages): never a panic,
    /// never wrong data.
    #[test]
    fn damaged_files_never_decode_to_wrong_pages(
        (h, pages) in arb_file(),
        enc in arb_encoding(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 0..4),
        cut in prop::option::of(any::<prop::sample::Index>()),
    ) {
        let mut file = encode(&h, &pages, enc);
        for (at, x) in &flips {
            let i = at.index(file.len());
            file[i] ^= x;
        }
        if let Some(cut) = cut {
            file.truncate(cut.index(file.len()));
        }
        let damaged = !flips.is_empty() || cut.is_some();
        if let Ok((h2, pages2, _)) = decode(&file) {
            prop_assert_eq!(h2, h);
            prop_assert_eq!(&pages2, &pages);
            prop_assert!(!damaged || cut.is_none(), "a truncated file decoded");
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..3000), keep_header in any::<bool>()) {
        let mut input = bytes;
        if keep_header && input.len() >= HEADER_SIZE + 6 {
            // A valid header followed by garbage exercises the page and frame parsers.
            input[..HEADER_SIZE].copy_from_slice(&header(2, 2, 100, 512).to_bytes());
            input[HEADER_SIZE + 4] &= 1;
            input[HEADER_SIZE + 5] &= 1;
        }
        prop_assert!(decode(&input).is_err());
    }
}

/// A writer that accepts `room` bytes, then fails.
struct FailingWriter {
    room: usize,
}

impl Write for FailingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.len() > self.room {
            return Err(std::io::Error::other("disk full"));
        }
        self.room -= buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn encoder_is_unusable_after_a_failed_write() {
    let h = header(2, 2, 10, 4096);
    let mut e = Encoder::new(
        FailingWriter {
            room: HEADER_SIZE + 100,
        },
        &h,
        PageEncoding::Block,
    )
    .unwrap();
    assert!(matches!(
        e.encode_page(1, &page(1, 0, 4096)),
        Err(LtxError::Io(_))
    ));
    assert!(matches!(
        e.encode_page(2, &page(2, 0, 4096)),
        Err(LtxError::Failed(_))
    ));
    assert!(matches!(e.finish(), Err(LtxError::Failed(_))));
    // A rejected page (nothing written) leaves the encoder usable.
    let mut e = Encoder::new(Vec::new(), &h, PageEncoding::Block).unwrap();
    assert!(e.encode_page(11, &page(11, 0, 4096)).is_err());
    e.encode_page(1, &page(1, 0, 4096)).unwrap();
    let (bytes, _) = e.finish().unwrap();
    assert_eq!(decode(&bytes).unwrap().1, vec![(1, page(1, 0, 4096))]);
}
