//! LTX codec: round trips through both page encodings, header rules, file names, the page index,
//! the file checksum, typed errors on damaged files, and the k-way merge.

#[allow(dead_code)]
#[path = "../src/replication/ltx.rs"]
mod ltx;

use ltx::*;

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

fn page(pgno: u32, version: u8, page_size: u32) -> Vec<u8> {
    let mut p = vec![0u8; page_size as usize];
    for (i, b) in p.iter_mut().enumerate() {
        *b = match i % 64 {
            0..=3 => pgno.to_be_bytes()[i % 4],
            4 => version,
            _ => (i / 64) as u8,
        };
    }
    p
}

fn encode(h: &Header, pages: &[(u32, Vec<u8>)], enc: PageEncoding) -> Vec<u8> {
    let mut e = Encoder::new(Vec::new(), h, enc).unwrap();
    for (pgno, data) in pages {
        e.encode_page(*pgno, data).unwrap();
    }
    let (out, trailer) = e.finish().unwrap();
    assert_eq!(trailer.post_apply_checksum, 0);
    assert_ne!(trailer.file_checksum & CHECKSUM_FLAG, 0);
    out
}

fn decode(bytes: &[u8]) -> Result<(Header, Vec<(u32, Vec<u8>)>, Trailer), LtxError> {
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

#[test]
fn round_trip_both_encodings() {
    for enc in [PageEncoding::Frame, PageEncoding::Block] {
        let h = header(5, 7, 10, 4096);
        let pages: Vec<_> = [1u32, 3, 10].iter().map(|&p| (p, page(p, 1, 4096))).collect();
        let bytes = encode(&h, &pages, enc);
        let (h2, pages2, _) = decode(&bytes).unwrap();
        assert_eq!(h2, h);
        assert_eq!(pages2, pages);
    }
}
