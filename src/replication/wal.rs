//! Reading a SQLite WAL file the way Litestream's `wal_reader.go` does: the 32-byte header, frame
//! headers, the cumulative frame checksums (in the byte order the magic names), and the scan that
//! collects the pages of *committed* transactions from a given offset.
//!
//! The end of the valid WAL is the first frame that is short, carries other salts, or fails its
//! checksum; frames after the last commit frame belong to an unfinished transaction and are ignored.

use std::collections::BTreeMap;
use std::io::{self, BufReader, Read, Seek, SeekFrom};

pub const WAL_HEADER_SIZE: u64 = 32;
pub const WAL_FRAME_HEADER_SIZE: u64 = 24;
/// Magic with checksums computed over little-endian words; `| 1` means big-endian words.
pub const WAL_MAGIC_LE: u32 = 0x377f_0682;
pub const WAL_MAGIC_BE: u32 = 0x377f_0683;
const WAL_VERSION: u32 = 3_007_000;
const SCAN_BUFFER_SIZE: usize = 256 << 10;

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("i/o error reading the WAL: {0}")]
    Io(#[from] io::Error),
    #[error("unsupported WAL format version {0} (want 3007000)")]
    UnsupportedVersion(u32),
    #[error("invalid WAL page size {0}")]
    InvalidPageSize(u32),
    #[error("WAL offset {offset} is not a frame boundary for page size {page_size}")]
    UnalignedOffset { offset: u64, page_size: u32 },
    #[error("cannot resume at WAL offset {offset}: the frame before it {reason}")]
    ResumeMismatch { offset: u64, reason: &'static str },
    #[error("WAL frame at offset {offset} is incomplete")]
    ShortFrame { offset: u64 },
    #[error("page buffer is {got} bytes, page size is {want}")]
    BufferSize { got: usize, want: u32 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalHeader {
    pub big_endian_checksums: bool,
    pub page_size: u32,
    pub checkpoint_seq: u32,
    pub salt1: u32,
    pub salt2: u32,
    pub checksum1: u32,
    pub checksum2: u32,
}

impl WalHeader {
    /// Header + page data.
    pub fn frame_size(&self) -> u64 {
        WAL_FRAME_HEADER_SIZE + u64::from(self.page_size)
    }

    /// Ok(None) when the bytes are not a valid header (bad magic or checksum); errors for a
    /// header whose checksum holds but whose version or page size SQLite would never write.
    pub fn from_bytes(b: &[u8; WAL_HEADER_SIZE as usize]) -> Result<Option<WalHeader>, WalError> {
        let big_endian_checksums = match be32(b, 0) {
            WAL_MAGIC_LE => false,
            WAL_MAGIC_BE => true,
            _ => return Ok(None),
        };
        let (checksum1, checksum2) = (be32(b, 24), be32(b, 28));
        if checksum(big_endian_checksums, (0, 0), &b[..24]) != (checksum1, checksum2) {
            return Ok(None);
        }
        let version = be32(b, 4);
        if version != WAL_VERSION {
            return Err(WalError::UnsupportedVersion(version));
        }
        let page_size = be32(b, 8);
        if !(512..=65536).contains(&page_size) || !page_size.is_power_of_two() {
            return Err(WalError::InvalidPageSize(page_size));
        }
        Ok(Some(WalHeader {
            big_endian_checksums,
            page_size,
            checkpoint_seq: be32(b, 12),
            salt1: be32(b, 16),
            salt2: be32(b, 20),
            checksum1,
            checksum2,
        }))
    }

    /// Serializes the header, recomputing its checksum (used to build WALs in tests and tools).
    #[allow(dead_code)] // only tests/wal_reader.rs builds WALs; kept beside the parser it mirrors
    pub fn to_bytes(self) -> [u8; WAL_HEADER_SIZE as usize] {
        let mut b = [0u8; WAL_HEADER_SIZE as usize];
        let magic = if self.big_endian_checksums {
            WAL_MAGIC_BE
        } else {
            WAL_MAGIC_LE
        };
        b[0..4].copy_from_slice(&magic.to_be_bytes());
        b[4..8].copy_from_slice(&WAL_VERSION.to_be_bytes());
        b[8..12].copy_from_slice(&self.page_size.to_be_bytes());
        b[12..16].copy_from_slice(&self.checkpoint_seq.to_be_bytes());
        b[16..20].copy_from_slice(&self.salt1.to_be_bytes());
        b[20..24].copy_from_slice(&self.salt2.to_be_bytes());
        let (c1, c2) = checksum(self.big_endian_checksums, (0, 0), &b[..24]);
        b[24..28].copy_from_slice(&c1.to_be_bytes());
        b[28..32].copy_from_slice(&c2.to_be_bytes());
        b
    }
}

/// The 24-byte header in front of every page in the WAL.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameHeader {
    pub pgno: u32,
    /// Database size in pages after this frame when it ends a transaction, else 0.
    pub commit: u32,
    pub salt1: u32,
    pub salt2: u32,
    pub checksum1: u32,
    pub checksum2: u32,
}

impl FrameHeader {
    pub fn from_bytes(b: &[u8; WAL_FRAME_HEADER_SIZE as usize]) -> FrameHeader {
        FrameHeader {
            pgno: be32(b, 0),
            commit: be32(b, 4),
            salt1: be32(b, 8),
            salt2: be32(b, 12),
            checksum1: be32(b, 16),
            checksum2: be32(b, 20),
        }
    }
}

/// SQLite's WAL checksum over 8-byte units (`s0 += w0 + s1; s1 += w1 + s0`), continuing from `s`.
/// `data.len()` must be a multiple of 8 (frame header prefixes and pages always are); a ragged
/// tail is ignored.
pub fn checksum(big_endian: bool, s: (u32, u32), data: &[u8]) -> (u32, u32) {
    let (mut s0, mut s1) = s;
    let word = |w: &[u8]| {
        let w = [w[0], w[1], w[2], w[3]];
        if big_endian {
            u32::from_be_bytes(w)
        } else {
            u32::from_le_bytes(w)
        }
    };
    for unit in data.chunks_exact(8) {
        s0 = s0.wrapping_add(word(&unit[..4])).wrapping_add(s1);
        s1 = s1.wrapping_add(word(&unit[4..])).wrapping_add(s0);
    }
    (s0, s1)
}

/// Ok(None) when the file is shorter than 32 bytes or the header/checksum is invalid (= no valid WAL).
pub fn read_header(f: &mut (impl Read + Seek)) -> Result<Option<WalHeader>, WalError> {
    f.seek(SeekFrom::Start(0))?;
    let mut b = [0u8; WAL_HEADER_SIZE as usize];
    if !read_full(f, &mut b)? {
        return Ok(None);
    }
    WalHeader::from_bytes(&b)
}

/// Result of scanning committed frames from `start`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scan {
    pub header: WalHeader,
    pub start: u64,
    /// Offset just past the last COMMITTED frame (== start if none).
    pub end: u64,
    /// Database size in pages at the last commit frame (0 if none).
    pub commit: u32,
    /// pgno -> offset of the page DATA (frame offset + 24) of its latest committed version in
    /// start..end; pages above `commit` are dropped.
    pub pages: BTreeMap<u32, u64>,
    /// The scan stopped at a commit boundary because of `max_bytes`; more committed frames may follow.
    pub limited: bool,
}

/// Collects the committed frames from `start` (32, or the end offset of the last synced range),
/// verifying every frame's checksum. When `start > 32` the running checksum is the one stored in
/// the frame before `start` (whose salts must match the header's). Stops at a salt mismatch, a bad
/// checksum or a short frame; only whole transactions (ending in a commit frame) are included.
/// `max_bytes` (0 = unlimited) ends the scan at the first commit boundary at or past that many bytes.
/// Nothing at or past `limit` is read: the caller passes what SQLite counts as committed
/// ([`super::shm::committed_end`]), or `u64::MAX` for the whole valid WAL.
pub fn scan_committed(
    f: &mut (impl Read + Seek),
    header: &WalHeader,
    start: u64,
    max_bytes: u64,
    limit: u64,
) -> Result<Scan, WalError> {
    let frame_size = header.frame_size();
    if start < WAL_HEADER_SIZE || !(start - WAL_HEADER_SIZE).is_multiple_of(frame_size) {
        return Err(WalError::UnalignedOffset {
            offset: start,
            page_size: header.page_size,
        });
    }
    let mut sum = (header.checksum1, header.checksum2);
    let mut hdr = [0u8; WAL_FRAME_HEADER_SIZE as usize];
    if start > WAL_HEADER_SIZE {
        let prev = start - frame_size;
        f.seek(SeekFrom::Start(prev))?;
        if !read_full(f, &mut hdr)? {
            return Err(WalError::ResumeMismatch {
                offset: start,
                reason: "is missing",
            });
        }
        let fh = FrameHeader::from_bytes(&hdr);
        if (fh.salt1, fh.salt2) != (header.salt1, header.salt2) {
            return Err(WalError::ResumeMismatch {
                offset: start,
                reason: "has other salts",
            });
        }
        sum = (fh.checksum1, fh.checksum2);
    }

    let mut scan = Scan {
        header: *header,
        start,
        end: start,
        commit: 0,
        pages: BTreeMap::new(),
        limited: false,
    };
    f.seek(SeekFrom::Start(start))?;
    let mut r = BufReader::with_capacity(SCAN_BUFFER_SIZE, f);
    let mut page = vec![0u8; header.page_size as usize];
    let mut txn: Vec<(u32, u64)> = Vec::new();
    let mut offset = start;
    loop {
        if offset.saturating_add(frame_size) > limit
            || !read_full(&mut r, &mut hdr)?
            || !read_full(&mut r, &mut page)?
        {
            break;
        }
        let fh = FrameHeader::from_bytes(&hdr);
        if (fh.salt1, fh.salt2) != (header.salt1, header.salt2) || fh.pgno == 0 {
            break;
        }
        sum = checksum(header.big_endian_checksums, sum, &hdr[..8]);
        sum = checksum(header.big_endian_checksums, sum, &page);
        if sum != (fh.checksum1, fh.checksum2) {
            break;
        }
        txn.push((fh.pgno, offset + WAL_FRAME_HEADER_SIZE));
        offset += frame_size;
        if fh.commit != 0 {
            scan.pages.extend(txn.drain(..));
            scan.commit = fh.commit;
            scan.end = offset;
            if max_bytes > 0 && scan.end - start >= max_bytes {
                scan.limited = true;
                break;
            }
        }
    }
    // A VACUUM may shrink the database: pages past the final size are gone.
    let commit = scan.commit;
    scan.pages.retain(|&pgno, _| pgno <= commit);
    Ok(scan)
}

/// Reads the frame whose header starts at `frame_offset`: its header, and its page data into
/// `buf` (len == page_size). Does not verify the checksum (that needs the running sum).
pub fn read_frame(
    f: &mut (impl Read + Seek),
    frame_offset: u64,
    page_size: u32,
    buf: &mut [u8],
) -> Result<FrameHeader, WalError> {
    if buf.len() != page_size as usize {
        return Err(WalError::BufferSize {
            got: buf.len(),
            want: page_size,
        });
    }
    let mut hdr = [0u8; WAL_FRAME_HEADER_SIZE as usize];
    f.seek(SeekFrom::Start(frame_offset))?;
    if !read_full(f, &mut hdr)? || !read_full(f, buf)? {
        return Err(WalError::ShortFrame {
            offset: frame_offset,
        });
    }
    Ok(FrameHeader::from_bytes(&hdr))
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// read_exact that reports a short read as `false` instead of an error (a torn WAL is normal).
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> Result<bool, io::Error> {
    match r.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}
