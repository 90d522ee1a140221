//! The LTX file codec, byte-compatible with `superfly/ltx` v0.5.2 as used by Litestream 0.5.17.
//!
//! A file is `header(100) | page frames | terminator(6) | page index | index size(8) | trailer(16)`,
//! all integers big-endian. This module owns the header and its validation rules, the two page-frame
//! encodings (legacy: one LZ4 *frame* per page, read by every Litestream 0.5.x; block: a size-prefixed
//! raw LZ4 block, read by Litestream >= 0.5.16), the page index, the trailer and the CRC-64/GO-ISO file
//! checksum, plus the k-way [`Merger`] used by compaction and restore.
//!
//! Everything streams: the [`Decoder`] holds one compressed buffer and the caller's page buffer, never
//! the file; the [`Encoder`] holds one compressed frame and the (small) page index it must write last.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, BufReader, Read, Write};

use crc::{CRC_64_GO_ISO, Crc, Digest, Table};
use lz4_flex::frame::{BlockMode, BlockSize, FrameEncoder, FrameInfo};

pub const HEADER_SIZE: usize = 100;
pub const PAGE_HEADER_SIZE: usize = 6;
pub const TRAILER_SIZE: usize = 16;
pub const HEADER_FLAG_NO_CHECKSUM: u32 = 0x2;
pub const SNAPSHOT_LEVEL: u8 = 9;
/// Bit 63: set on every checksum that is present (file checksum, pre/post-apply checksums).
pub const CHECKSUM_FLAG: u64 = 1 << 63;

const MAGIC: &[u8; 4] = b"LTX1";
const HEADER_FLAG_MASK: u32 = HEADER_FLAG_NO_CHECKSUM;
/// Page-header flag of the block encoding: a u32 compressed size follows the 6-byte header.
const PAGE_FLAG_SIZE: u16 = 0x0001;
const MIN_PAGE_SIZE: u32 = 512;
const MAX_PAGE_SIZE: u32 = 65536;
/// SQLite's PENDING_BYTE: the page holding it is never stored in a database file.
const PENDING_BYTE: u32 = 0x4000_0000;
/// Slice-by-16 tables (32 KiB, built at compile time): ~5x the byte-wise table's throughput, and the
/// file checksum covers every decompressed byte.
pub(crate) const CRC64: Crc<u64, Table<16>> = Crc::<u64, Table<16>>::new(&CRC_64_GO_ISO);
const READ_BUFFER_SIZE: usize = 64 << 10;

const LZ4_FRAME_MAGIC: u32 = 0x184D_2204;
const XXH_PRIME32_1: u32 = 0x9E37_79B1;
const XXH_PRIME32_2: u32 = 0x85EB_CA77;
const XXH_PRIME32_3: u32 = 0xC2B2_AE3D;
const XXH_PRIME32_4: u32 = 0x27D4_EB2F;
const XXH_PRIME32_5: u32 = 0x1656_67B1;

/// Why an LTX file (or a request to write one) is not acceptable. Callers add the path or key.
#[derive(Debug, thiserror::Error)]
pub enum LtxError {
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    #[error("truncated LTX file: unexpected end of data while reading {0}")]
    Truncated(&'static str),
    #[error("not an LTX file: bad magic {0:02x?} (want \"LTX1\")")]
    BadMagic([u8; 4]),
    #[error("invalid LTX header: {0}")]
    InvalidHeader(String),
    #[error("invalid page header for page {pgno}: flags 0x{flags:04x}")]
    InvalidPageFlags { pgno: u32, flags: u16 },
    #[error("page {pgno} out of order: follows page {prev}")]
    PageOutOfOrder { prev: u32, pgno: u32 },
    #[error("page {pgno} is beyond the commit size of {commit} pages")]
    PageBeyondCommit { pgno: u32, commit: u32 },
    #[error("page {pgno} is the SQLite lock page and must never be stored")]
    LockPage { pgno: u32 },
    #[error("snapshot is missing pages: page {pgno} follows page {prev}")]
    SnapshotGap { prev: u32, pgno: u32 },
    #[error("snapshot ends at page {last} but its commit size is {commit} pages")]
    SnapshotIncomplete { last: u32, commit: u32 },
    #[error("page buffer is {got} bytes, page size is {want}")]
    BufferSize { got: usize, want: u32 },
    #[error("page {pgno}: {reason}")]
    BadPageData { pgno: u32, reason: String },
    #[error(
        "file checksum mismatch: trailer says {stored:016x}, content hashes to {computed:016x}"
    )]
    ChecksumMismatch { stored: u64, computed: u64 },
    #[error("invalid page index: {0}")]
    InvalidIndex(String),
    #[error("invalid trailer: {0}")]
    InvalidTrailer(String),
    #[error("unexpected data after the trailer")]
    TrailingData,
    #[error("an LTX file must hold at least one page")]
    NoPages,
    #[error("litevisor writes NoChecksum LTX files only (flags 0x{0:08x})")]
    ChecksumsUnsupported(u32),
    #[error("no input files to merge")]
    NoInputs,
    #[error("input {index}: page size {page_size} differs from the first input's {want}")]
    MixedPageSize {
        index: usize,
        page_size: u32,
        want: u32,
    },
    #[error(
        "non-contiguous TXIDs: {prev_min:016x}-{prev_max:016x} is followed by {min:016x}-{max:016x}"
    )]
    NonContiguous {
        prev_min: u64,
        prev_max: u64,
        min: u64,
        max: u64,
    },
    #[error("input {index} ({min_txid:016x}-{max_txid:016x}): {source}")]
    Input {
        index: usize,
        min_txid: u64,
        max_txid: u64,
        source: Box<LtxError>,
    },
    #[error("an earlier error left this stream unusable: {0}")]
    Failed(String),
}

/// The 100-byte file header. Field meanings: see the reference, section 2.1.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    pub flags: u32,
    pub page_size: u32,
    pub commit: u32,
    pub min_txid: u64,
    pub max_txid: u64,
    pub timestamp_ms: i64,
    pub pre_apply_checksum: u64,
    pub wal_offset: i64,
    pub wal_size: i64,
    pub wal_salt1: u32,
    pub wal_salt2: u32,
    pub node_id: u64,
}

impl Header {
    /// A snapshot holds the whole database: every page 1..=commit except the lock page.
    pub fn is_snapshot(&self) -> bool {
        self.min_txid == 1
    }

    pub fn no_checksum(&self) -> bool {
        self.flags & HEADER_FLAG_NO_CHECKSUM != 0
    }

    /// `superfly/ltx` `Header.Validate`, rule for rule.
    pub fn validate(&self) -> Result<(), LtxError> {
        let bad = |msg: String| Err(LtxError::InvalidHeader(msg));
        if self.flags & !HEADER_FLAG_MASK != 0 {
            return bad(format!("invalid flags 0x{:08x}", self.flags));
        }
        if !is_valid_page_size(self.page_size) {
            return bad(format!("invalid page size {}", self.page_size));
        }
        if self.min_txid == 0 {
            return bad("minimum TXID is zero".into());
        }
        if self.max_txid == 0 {
            return bad("maximum TXID is zero".into());
        }
        if self.min_txid > self.max_txid {
            return bad(format!(
                "TXIDs out of order: {:016x} > {:016x}",
                self.min_txid, self.max_txid
            ));
        }
        if self.wal_offset < 0 {
            return bad(format!("negative WAL offset {}", self.wal_offset));
        }
        if self.wal_size < 0 {
            return bad(format!("negative WAL size {}", self.wal_size));
        }
        if (self.wal_salt1 != 0 || self.wal_salt2 != 0) && self.wal_offset == 0 {
            return bad("WAL salts without a WAL offset".into());
        }
        if self.wal_offset == 0 && self.wal_size != 0 {
            return bad("WAL size without a WAL offset".into());
        }
        if self.is_snapshot() {
            if self.pre_apply_checksum != 0 {
                return bad("snapshot with a pre-apply checksum".into());
            }
        } else if self.no_checksum() {
            if self.pre_apply_checksum != 0 {
                return bad("pre-apply checksum set on a NoChecksum file".into());
            }
        } else if self.pre_apply_checksum == 0 {
            return bad("pre-apply checksum required on a non-snapshot file".into());
        } else if self.pre_apply_checksum & CHECKSUM_FLAG == 0 {
            return bad(format!(
                "malformed pre-apply checksum {:016x}",
                self.pre_apply_checksum
            ));
        }
        Ok(())
    }

    pub fn to_bytes(self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[0..4].copy_from_slice(MAGIC);
        b[4..8].copy_from_slice(&self.flags.to_be_bytes());
        b[8..12].copy_from_slice(&self.page_size.to_be_bytes());
        b[12..16].copy_from_slice(&self.commit.to_be_bytes());
        b[16..24].copy_from_slice(&self.min_txid.to_be_bytes());
        b[24..32].copy_from_slice(&self.max_txid.to_be_bytes());
        b[32..40].copy_from_slice(&self.timestamp_ms.to_be_bytes());
        b[40..48].copy_from_slice(&self.pre_apply_checksum.to_be_bytes());
        b[48..56].copy_from_slice(&self.wal_offset.to_be_bytes());
        b[56..64].copy_from_slice(&self.wal_size.to_be_bytes());
        b[64..68].copy_from_slice(&self.wal_salt1.to_be_bytes());
        b[68..72].copy_from_slice(&self.wal_salt2.to_be_bytes());
        b[72..80].copy_from_slice(&self.node_id.to_be_bytes());
        b
    }

    /// Parses the fields and checks the magic; does not [`validate`](Self::validate).
    /// The reserved bytes 80..100 are ignored (they are still covered by the file checksum).
    pub fn from_bytes(b: &[u8; HEADER_SIZE]) -> Result<Header, LtxError> {
        let magic = [b[0], b[1], b[2], b[3]];
        if &magic != MAGIC {
            return Err(LtxError::BadMagic(magic));
        }
        let u32_at = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[i..i + 8]);
            u64::from_be_bytes(w)
        };
        Ok(Header {
            flags: u32_at(4),
            page_size: u32_at(8),
            commit: u32_at(12),
            min_txid: u64_at(16),
            max_txid: u64_at(24),
            timestamp_ms: u64_at(32) as i64,
            pre_apply_checksum: u64_at(40),
            wal_offset: u64_at(48) as i64,
            wal_size: u64_at(56) as i64,
            wal_salt1: u32_at(64),
            wal_salt2: u32_at(68),
            node_id: u64_at(72),
        })
    }

    pub fn lock_pgno(&self) -> u32 {
        lock_pgno(self.page_size)
    }
}

/// The page that holds SQLite's PENDING_BYTE; it never exists in a database file.
pub fn lock_pgno(page_size: u32) -> u32 {
    PENDING_BYTE / page_size.max(1) + 1
}

pub fn is_valid_page_size(page_size: u32) -> bool {
    (MIN_PAGE_SIZE..=MAX_PAGE_SIZE).contains(&page_size) && page_size.is_power_of_two()
}

/// How page data is stored after each 6-byte page header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PageEncoding {
    /// flags=0, then one LZ4 frame (64 KiB blocks, content checksum). Every Litestream 0.5.x reads it.
    #[default]
    Frame,
    /// flags=1, then a u32 size and one raw LZ4 block. Only Litestream >= 0.5.16 reads it.
    Block,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Trailer {
    pub post_apply_checksum: u64,
    pub file_checksum: u64,
}

/// `%016x-%016x.ltx`: the name of every LTX file, locally and in every replica.
pub fn file_name(min_txid: u64, max_txid: u64) -> String {
    format!("{min_txid:016x}-{max_txid:016x}.ltx")
}

/// Inverse of [`file_name`] with Litestream's strict regex `^([0-9a-f]{16})-([0-9a-f]{16})\.ltx$`:
/// uppercase hex or other widths are not LTX files.
pub fn parse_file_name(name: &str) -> Option<(u64, u64)> {
    let b = name.as_bytes();
    if b.len() != 37 || b[16] != b'-' || &b[33..] != b".ltx" {
        return None;
    }
    let hex = |s: &[u8]| -> Option<u64> {
        if !s
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
        {
            return None;
        }
        u64::from_str_radix(std::str::from_utf8(s).ok()?, 16).ok()
    };
    Some((hex(&b[..16])?, hex(&b[17..33])?))
}

/// Largest compressed payload a valid page can have: bounds what a decoder allocates for garbage input.
fn max_compressed_len(page_size: u32) -> usize {
    lz4_flex::block::get_maximum_output_size(page_size as usize) + 64
}

fn append_uvarint(out: &mut Vec<u8>, v: u64) {
    let mut b = [0u8; 10];
    let n = put_uvarint(&mut b, v);
    out.extend_from_slice(&b[..n]);
}

/// Go's `binary.PutUvarint`: LEB128 into `out` (at least 10 bytes), returns the length.
fn put_uvarint(out: &mut [u8], mut v: u64) -> usize {
    let mut n = 0;
    while v >= 0x80 {
        out[n] = (v as u8) | 0x80;
        v >>= 7;
        n += 1;
    }
    out[n] = v as u8;
    n + 1
}

/// Checks one page against the file's ordering rules (shared by the encoder and the decoder).
fn check_page_order(header: &Header, prev: u32, pgno: u32) -> Result<(), LtxError> {
    if pgno > header.commit {
        return Err(LtxError::PageBeyondCommit {
            pgno,
            commit: header.commit,
        });
    }
    let lock = header.lock_pgno();
    if pgno == lock {
        return Err(LtxError::LockPage { pgno });
    }
    if pgno <= prev {
        return Err(LtxError::PageOutOfOrder { prev, pgno });
    }
    if header.is_snapshot() {
        let want = if prev + 1 == lock { prev + 2 } else { prev + 1 };
        if pgno != want {
            return Err(LtxError::SnapshotGap { prev, pgno });
        }
    }
    Ok(())
}

/// A snapshot must end with the commit page (or the page before it when that is the lock page).
fn check_snapshot_complete(header: &Header, last: u32) -> Result<(), LtxError> {
    let commit = header.commit;
    let complete = last == commit || (commit == header.lock_pgno() && last + 1 == commit);
    if header.is_snapshot() && !complete {
        return Err(LtxError::SnapshotIncomplete { last, commit });
    }
    Ok(())
}

/// Streaming LTX writer. Always writes NoChecksum files with zero pre/post-apply checksums, which is
/// what Litestream 0.5 writes and the only thing its compaction and restore accept.
pub struct Encoder<W: Write> {
    w: W,
    header: Header,
    encoding: PageEncoding,
    hash: Digest<'static, u64, Table<16>>,
    offset: u64,
    prev_pgno: u32,
    /// The page index as it will be written: (pgno, offset, size) uvarints in page order.
    index: Vec<u8>,
    /// Frame encoding: an LZ4 frame encoder reused for every page; its Vec holds one whole page frame.
    frame: FrameEncoder<Vec<u8>>,
    /// Block encoding: one page frame (header, size, compressed block).
    block: Vec<u8>,
    /// Set when a write failed part-way: the output and the checksum no longer agree.
    write_failed: Option<String>,
}

impl<W: Write> Encoder<W> {
    /// Validates `header` and writes it.
    pub fn new(mut w: W, header: &Header, encoding: PageEncoding) -> Result<Self, LtxError> {
        header.validate()?;
        if !header.no_checksum() {
            return Err(LtxError::ChecksumsUnsupported(header.flags));
        }
        if header.commit == 0 {
            return Err(LtxError::InvalidHeader("commit size is zero".into()));
        }
        let bytes = header.to_bytes();
        w.write_all(&bytes)?;
        let mut hash = CRC64.digest();
        hash.update(&bytes);
        // pierrec/lz4 as configured by ltx v0.5.1: 64 KiB independent blocks, content checksum.
        let info = FrameInfo::new()
            .block_size(BlockSize::Max64KB)
            .block_mode(BlockMode::Independent)
            .block_checksums(false)
            .content_checksum(true);
        let page_size = header.page_size as usize;
        Ok(Encoder {
            w,
            header: *header,
            encoding,
            hash,
            offset: HEADER_SIZE as u64,
            prev_pgno: 0,
            index: Vec::new(),
            frame: FrameEncoder::with_frame_info(info, Vec::with_capacity(page_size + 64)),
            block: Vec::with_capacity(10 + max_compressed_len(header.page_size)),
            write_failed: None,
        })
    }

    /// `data.len() == page_size`; pgno strictly ascending, `<= commit`, never the lock page; a
    /// snapshot lists every page from 1.
    pub fn encode_page(&mut self, pgno: u32, data: &[u8]) -> Result<(), LtxError> {
        if let Some(e) = &self.write_failed {
            return Err(LtxError::Failed(e.clone()));
        }
        if data.len() != self.header.page_size as usize {
            return Err(LtxError::BufferSize {
                got: data.len(),
                want: self.header.page_size,
            });
        }
        check_page_order(&self.header, self.prev_pgno, pgno)?;
        let frame_bytes: &[u8] = match self.encoding {
            PageEncoding::Frame => {
                let buf = self.frame.get_mut();
                buf.clear();
                buf.extend_from_slice(&pgno.to_be_bytes());
                buf.extend_from_slice(&0u16.to_be_bytes());
                self.frame.write_all(data)?;
                self.frame.try_finish().map_err(|e| LtxError::BadPageData {
                    pgno,
                    reason: format!("lz4 frame compression failed: {e}"),
                })?;
                self.hash.update(&self.frame.get_ref()[..PAGE_HEADER_SIZE]);
                self.frame.get_ref()
            }
            PageEncoding::Block => {
                let bound = max_compressed_len(self.header.page_size);
                self.block.clear();
                self.block.resize(10 + bound, 0);
                let n =
                    lz4_flex::block::compress_into(data, &mut self.block[10..]).map_err(|e| {
                        LtxError::BadPageData {
                            pgno,
                            reason: format!("lz4 block compression failed: {e}"),
                        }
                    })?;
                self.block.truncate(10 + n);
                self.block[0..4].copy_from_slice(&pgno.to_be_bytes());
                self.block[4..6].copy_from_slice(&PAGE_FLAG_SIZE.to_be_bytes());
                self.block[6..10].copy_from_slice(&(n as u32).to_be_bytes());
                self.hash.update(&self.block[..10]);
                &self.block
            }
        };
        self.hash.update(data);
        if let Err(e) = self.w.write_all(frame_bytes) {
            self.write_failed = Some(e.to_string());
            return Err(e.into());
        }
        let size = frame_bytes.len() as u64;
        append_uvarint(&mut self.index, u64::from(pgno));
        append_uvarint(&mut self.index, self.offset);
        append_uvarint(&mut self.index, size);
        self.offset += size;
        self.prev_pgno = pgno;
        Ok(())
    }

    /// Writes the terminator, the page index and the trailer; returns the inner writer (the caller
    /// flushes, fsyncs and renames).
    pub fn finish(mut self) -> Result<(W, Trailer), LtxError> {
        if let Some(e) = self.write_failed {
            return Err(LtxError::Failed(e));
        }
        if self.prev_pgno == 0 {
            return Err(LtxError::NoPages);
        }
        check_snapshot_complete(&self.header, self.prev_pgno)?;
        let mut tail =
            Vec::with_capacity(PAGE_HEADER_SIZE + self.index.len() + 1 + 8 + TRAILER_SIZE);
        tail.extend_from_slice(&[0u8; PAGE_HEADER_SIZE]);
        let index_start = tail.len();
        tail.extend_from_slice(&self.index);
        tail.push(0);
        let index_len = (tail.len() - index_start) as u64;
        tail.extend_from_slice(&index_len.to_be_bytes());
        let post_apply_checksum = 0u64;
        tail.extend_from_slice(&post_apply_checksum.to_be_bytes());
        self.hash.update(&tail);
        let file_checksum = CHECKSUM_FLAG | self.hash.finalize();
        tail.extend_from_slice(&file_checksum.to_be_bytes());
        self.w.write_all(&tail)?;
        Ok((
            self.w,
            Trailer {
                post_apply_checksum,
                file_checksum,
            },
        ))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DecodeState {
    Pages,
    Terminated,
    Failed,
}

/// Streaming LTX reader: validates the header, every page's placement, the page index and the file
/// checksum. Holds a read buffer and one compressed-data buffer; pages go straight into the caller's
/// buffer. It buffers its input itself, so pass a plain `File` or network body.
pub struct Decoder<R: Read> {
    r: BufReader<R>,
    header: Header,
    hash: Digest<'static, u64, Table<16>>,
    /// The page index this file must end with, rebuilt from the pages actually read.
    expected_index: Digest<'static, u64, Table<16>>,
    expected_index_len: u64,
    offset: u64,
    prev_pgno: u32,
    compressed: Vec<u8>,
    state: DecodeState,
    failure: String,
}

impl<R: Read> Decoder<R> {
    /// Reads and validates the header.
    pub fn new(r: R) -> Result<Self, LtxError> {
        let mut r = BufReader::with_capacity(READ_BUFFER_SIZE, r);
        let mut bytes = [0u8; HEADER_SIZE];
        read_exact(&mut r, &mut bytes, "header")?;
        let header = Header::from_bytes(&bytes)?;
        header.validate()?;
        let mut hash = CRC64.digest();
        hash.update(&bytes);
        Ok(Decoder {
            r,
            header,
            hash,
            expected_index: CRC64.digest(),
            expected_index_len: 0,
            offset: HEADER_SIZE as u64,
            prev_pgno: 0,
            compressed: Vec::new(),
            state: DecodeState::Pages,
            failure: String::new(),
        })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Fills `buf` (len == page_size) with the next page and returns its number; Ok(None) at the
    /// terminator (and on every later call).
    pub fn next_page(&mut self, buf: &mut [u8]) -> Result<Option<u32>, LtxError> {
        match self.state {
            DecodeState::Terminated => return Ok(None),
            DecodeState::Failed => return Err(LtxError::Failed(self.failure.clone())),
            DecodeState::Pages => {}
        }
        if buf.len() != self.header.page_size as usize {
            return Err(LtxError::BufferSize {
                got: buf.len(),
                want: self.header.page_size,
            });
        }
        match self.read_page(buf) {
            Ok(p) => Ok(p),
            Err(e) => {
                self.state = DecodeState::Failed;
                self.failure = e.to_string();
                Err(e)
            }
        }
    }

    fn read_page(&mut self, buf: &mut [u8]) -> Result<Option<u32>, LtxError> {
        let frame_offset = self.offset;
        let mut ph = [0u8; PAGE_HEADER_SIZE];
        self.read_hashed(&mut ph, "page header")?;
        let pgno = u32::from_be_bytes([ph[0], ph[1], ph[2], ph[3]]);
        let flags = u16::from_be_bytes([ph[4], ph[5]]);
        if pgno == 0 && flags == 0 {
            if self.prev_pgno == 0 {
                return Err(LtxError::NoPages);
            }
            check_snapshot_complete(&self.header, self.prev_pgno)?;
            self.state = DecodeState::Terminated;
            return Ok(None);
        }
        if pgno == 0 || flags & !PAGE_FLAG_SIZE != 0 {
            return Err(LtxError::InvalidPageFlags { pgno, flags });
        }
        check_page_order(&self.header, self.prev_pgno, pgno)?;
        if flags & PAGE_FLAG_SIZE != 0 {
            self.read_block_page(pgno, buf)?;
        } else {
            self.read_frame_page(pgno, buf)?;
        }
        self.hash.update(buf);
        let mut entry = [0u8; 30];
        let mut n = put_uvarint(&mut entry, u64::from(pgno));
        n += put_uvarint(&mut entry[n..], frame_offset);
        n += put_uvarint(&mut entry[n..], self.offset - frame_offset);
        self.expected_index.update(&entry[..n]);
        self.expected_index_len += n as u64;
        self.prev_pgno = pgno;
        Ok(Some(pgno))
    }

    fn read_block_page(&mut self, pgno: u32, buf: &mut [u8]) -> Result<(), LtxError> {
        let mut size = [0u8; 4];
        self.read_hashed(&mut size, "page size field")?;
        let n = u32::from_be_bytes(size) as usize;
        if n > max_compressed_len(self.header.page_size) {
            return Err(bad_page(
                pgno,
                format!("compressed size {n} is impossible for the page size"),
            ));
        }
        self.read_compressed(n, "compressed page")?;
        let got = lz4_flex::block::decompress_into(&self.compressed[..n], buf)
            .map_err(|e| bad_page(pgno, format!("lz4 block: {e}")))?;
        if got != buf.len() {
            return Err(bad_page(
                pgno,
                format!("lz4 block holds {got} bytes, page size is {}", buf.len()),
            ));
        }
        Ok(())
    }

    /// Parses one LZ4 frame exactly up to its footer, so the next page header is the next byte.
    fn read_frame_page(&mut self, pgno: u32, buf: &mut [u8]) -> Result<(), LtxError> {
        let mut head = [0u8; 7];
        self.read_raw(&mut head, "lz4 frame header")?;
        let magic = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        if magic != LZ4_FRAME_MAGIC {
            return Err(bad_page(pgno, format!("bad lz4 frame magic {magic:08x}")));
        }
        let (flg, bd) = (head[4], head[5]);
        if flg >> 6 != 0b01 || flg & 0b10 != 0 || bd & 0b1000_1111 != 0 {
            return Err(bad_page(
                pgno,
                format!("unsupported lz4 frame descriptor {flg:02x} {bd:02x}"),
            ));
        }
        if flg & 0b1 != 0 {
            return Err(bad_page(pgno, "lz4 frame needs a dictionary".into()));
        }
        let independent = flg & 0b10_0000 != 0;
        let block_checksums = flg & 0b1_0000 != 0;
        let has_content_size = flg & 0b1000 != 0;
        let content_checksum = flg & 0b100 != 0;
        let block_max = match (bd >> 4) & 0b111 {
            4 => 64 << 10,
            5 => 256 << 10,
            6 => 1 << 20,
            7 => 4 << 20,
            other => {
                return Err(bad_page(
                    pgno,
                    format!("invalid lz4 block size code {other}"),
                ));
            }
        };
        let mut descriptor = [0u8; 10];
        descriptor[..2].copy_from_slice(&head[4..6]);
        let mut descriptor_len = 2;
        let mut header_checksum = head[6];
        if has_content_size {
            // head[6] was the first content-size byte; the descriptor checksum follows the 8 bytes.
            let mut rest = [0u8; 8];
            self.read_raw(&mut rest, "lz4 frame content size")?;
            descriptor[2] = head[6];
            descriptor[3..10].copy_from_slice(&rest[..7]);
            descriptor_len = 10;
            header_checksum = rest[7];
            let content_size = u64::from_le_bytes(descriptor[2..10].try_into().unwrap_or_default());
            if content_size != buf.len() as u64 {
                return Err(bad_page(
                    pgno,
                    format!("lz4 frame content size {content_size} != page size"),
                ));
            }
        }
        if ((xxh32(&descriptor[..descriptor_len]) >> 8) & 0xff) as u8 != header_checksum {
            return Err(bad_page(
                pgno,
                "lz4 frame descriptor checksum mismatch".into(),
            ));
        }
        let bound = max_compressed_len(self.header.page_size).min(block_max);
        let mut filled = 0usize;
        loop {
            let mut word = [0u8; 4];
            self.read_raw(&mut word, "lz4 block size")?;
            let word = u32::from_le_bytes(word);
            if word == 0 {
                break;
            }
            let stored = word & 0x8000_0000 != 0;
            let n = (word & 0x7fff_ffff) as usize;
            if n > bound || (stored && n > buf.len() - filled) {
                return Err(bad_page(
                    pgno,
                    format!("lz4 block of {n} bytes cannot fit the page"),
                ));
            }
            self.read_compressed(n, "lz4 block")?;
            if block_checksums {
                let mut sum = [0u8; 4];
                self.read_raw(&mut sum, "lz4 block checksum")?;
                if u32::from_le_bytes(sum) != xxh32(&self.compressed[..n]) {
                    return Err(bad_page(pgno, "lz4 block checksum mismatch".into()));
                }
            }
            let input = &self.compressed[..n];
            let got = if stored {
                buf[filled..filled + n].copy_from_slice(input);
                n
            } else {
                let (dict, out) = buf.split_at_mut(filled);
                let res = if independent {
                    lz4_flex::block::decompress_into(input, out)
                } else {
                    lz4_flex::block::decompress_into_with_dict(input, out, dict)
                };
                res.map_err(|e| bad_page(pgno, format!("lz4 frame block: {e}")))?
            };
            filled += got;
        }
        if filled != buf.len() {
            return Err(bad_page(
                pgno,
                format!("lz4 frame holds {filled} bytes, page size is {}", buf.len()),
            ));
        }
        if content_checksum {
            let mut sum = [0u8; 4];
            self.read_raw(&mut sum, "lz4 content checksum")?;
            if u32::from_le_bytes(sum) != xxh32(buf) {
                return Err(bad_page(pgno, "lz4 content checksum mismatch".into()));
            }
        }
        Ok(())
    }

    /// Reads the page index and trailer (after any pages not read yet) and verifies the file
    /// checksum, the index against the pages, and that nothing follows the trailer.
    pub fn finish(mut self) -> Result<Trailer, LtxError> {
        if self.state == DecodeState::Pages {
            let mut page = vec![0u8; self.header.page_size as usize];
            while self.next_page(&mut page)?.is_some() {}
        }
        if self.state == DecodeState::Failed {
            return Err(LtxError::Failed(self.failure));
        }
        self.expected_index.update(&[0]);
        self.expected_index_len += 1;
        let mut actual = CRC64.digest();
        let mut actual_len = 0u64;
        loop {
            let pgno = self.read_index_uvarint(&mut actual, &mut actual_len)?;
            if pgno == 0 {
                break;
            }
            self.read_index_uvarint(&mut actual, &mut actual_len)?;
            self.read_index_uvarint(&mut actual, &mut actual_len)?;
            if actual_len > self.expected_index_len {
                return Err(LtxError::InvalidIndex("more entries than pages".into()));
            }
        }
        if actual_len != self.expected_index_len
            || actual.finalize()
                != std::mem::replace(&mut self.expected_index, CRC64.digest()).finalize()
        {
            return Err(LtxError::InvalidIndex(
                "entries do not match the pages in the file".into(),
            ));
        }
        let mut size = [0u8; 8];
        self.read_hashed(&mut size, "page index size")?;
        let size = u64::from_be_bytes(size);
        if size != actual_len {
            return Err(LtxError::InvalidIndex(format!(
                "size field says {size} bytes, index has {actual_len}"
            )));
        }
        let mut trailer = [0u8; TRAILER_SIZE];
        self.read_raw(&mut trailer, "trailer")?;
        self.hash.update(&trailer[..8]);
        let post_apply_checksum = u64::from_be_bytes(trailer[..8].try_into().unwrap_or_default());
        let file_checksum = u64::from_be_bytes(trailer[8..].try_into().unwrap_or_default());
        if self.header.no_checksum() && post_apply_checksum != 0 {
            return Err(LtxError::InvalidTrailer(
                "post-apply checksum set on a NoChecksum file".into(),
            ));
        }
        if file_checksum & CHECKSUM_FLAG == 0 {
            return Err(LtxError::InvalidTrailer(format!(
                "malformed file checksum {file_checksum:016x}"
            )));
        }
        let computed = CHECKSUM_FLAG | self.hash.finalize();
        if computed != file_checksum {
            return Err(LtxError::ChecksumMismatch {
                stored: file_checksum,
                computed,
            });
        }
        let mut probe = [0u8; 1];
        loop {
            match self.r.read(&mut probe) {
                Ok(0) => break,
                Ok(_) => return Err(LtxError::TrailingData),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Trailer {
            post_apply_checksum,
            file_checksum,
        })
    }

    fn read_index_uvarint(
        &mut self,
        digest: &mut Digest<'static, u64, Table<16>>,
        len: &mut u64,
    ) -> Result<u64, LtxError> {
        let mut value = 0u64;
        for shift in (0..70).step_by(7) {
            let mut b = [0u8; 1];
            self.read_hashed(&mut b, "page index")?;
            digest.update(&b);
            *len += 1;
            if shift == 63 && b[0] > 1 {
                return Err(LtxError::InvalidIndex("varint overflows 64 bits".into()));
            }
            value |= u64::from(b[0] & 0x7f) << shift;
            if b[0] & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(LtxError::InvalidIndex("varint overflows 64 bits".into()))
    }

    fn read_compressed(&mut self, n: usize, what: &'static str) -> Result<(), LtxError> {
        if self.compressed.len() < n {
            self.compressed.resize(n, 0);
        }
        read_exact(&mut self.r, &mut self.compressed[..n], what)?;
        self.offset += n as u64;
        Ok(())
    }

    /// Reads bytes that are part of the file but not of the checksummed logical stream.
    fn read_raw(&mut self, buf: &mut [u8], what: &'static str) -> Result<(), LtxError> {
        read_exact(&mut self.r, buf, what)?;
        self.offset += buf.len() as u64;
        Ok(())
    }

    fn read_hashed(&mut self, buf: &mut [u8], what: &'static str) -> Result<(), LtxError> {
        self.read_raw(buf, what)?;
        self.hash.update(buf);
        Ok(())
    }
}

fn bad_page(pgno: u32, reason: String) -> LtxError {
    LtxError::BadPageData { pgno, reason }
}

fn read_exact(r: &mut impl Read, buf: &mut [u8], what: &'static str) -> Result<(), LtxError> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => LtxError::Truncated(what),
        _ => LtxError::Io(e),
    })
}

/// xxHash32 with seed 0: the LZ4 frame format's descriptor, block and content checksums.
fn xxh32(data: &[u8]) -> u32 {
    let round = |acc: u32, lane: &[u8]| {
        let v = u32::from_le_bytes([lane[0], lane[1], lane[2], lane[3]]);
        acc.wrapping_add(v.wrapping_mul(XXH_PRIME32_2))
            .rotate_left(13)
            .wrapping_mul(XXH_PRIME32_1)
    };
    let mut rest = data;
    let mut h = if data.len() >= 16 {
        let mut v = [
            XXH_PRIME32_1.wrapping_add(XXH_PRIME32_2),
            XXH_PRIME32_2,
            0,
            0u32.wrapping_sub(XXH_PRIME32_1),
        ];
        let mut stripes = data.chunks_exact(16);
        for stripe in &mut stripes {
            for (i, acc) in v.iter_mut().enumerate() {
                *acc = round(*acc, &stripe[i * 4..i * 4 + 4]);
            }
        }
        rest = stripes.remainder();
        v[0].rotate_left(1)
            .wrapping_add(v[1].rotate_left(7))
            .wrapping_add(v[2].rotate_left(12))
            .wrapping_add(v[3].rotate_left(18))
    } else {
        XXH_PRIME32_5
    };
    h = h.wrapping_add(data.len() as u32);
    let mut words = rest.chunks_exact(4);
    for w in &mut words {
        let v = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
        h = h
            .wrapping_add(v.wrapping_mul(XXH_PRIME32_3))
            .rotate_left(17)
            .wrapping_mul(XXH_PRIME32_4);
    }
    for &b in words.remainder() {
        h = h
            .wrapping_add(u32::from(b).wrapping_mul(XXH_PRIME32_5))
            .rotate_left(11)
            .wrapping_mul(XXH_PRIME32_1);
    }
    h ^= h >> 15;
    h = h.wrapping_mul(XXH_PRIME32_2);
    h ^= h >> 13;
    h = h.wrapping_mul(XXH_PRIME32_3);
    h ^ (h >> 16)
}

struct MergeInput<R: Read> {
    dec: Decoder<R>,
    page: Vec<u8>,
}

/// k-way merge of LTX files ordered oldest..newest (`ltx.Compactor`): yields every page once in
/// ascending order, the newest version wins, pages above the last input's commit are dropped.
/// Holds one page buffer per input.
pub struct Merger<R: Read> {
    inputs: Vec<MergeInput<R>>,
    /// Inputs holding an unconsumed page, keyed by (pgno, newest first).
    pending: BinaryHeap<Reverse<(u32, Reverse<usize>)>>,
    header: Header,
}

impl<R: Read> Merger<R> {
    /// Checks that the inputs share a page size and that their TXID ranges chain without gaps
    /// (`min <= prev_max + 1 && max > prev_max`).
    pub fn new(inputs: Vec<Decoder<R>>) -> Result<Self, LtxError> {
        let (Some(first), Some(last)) = (inputs.first(), inputs.last()) else {
            return Err(LtxError::NoInputs);
        };
        let (first, last) = (*first.header(), *last.header());
        for (index, pair) in inputs.windows(2).enumerate() {
            let (prev, cur) = (pair[0].header(), pair[1].header());
            if cur.page_size != first.page_size {
                return Err(LtxError::MixedPageSize {
                    index: index + 1,
                    page_size: cur.page_size,
                    want: first.page_size,
                });
            }
            if !(cur.min_txid <= prev.max_txid.saturating_add(1) && cur.max_txid > prev.max_txid) {
                return Err(LtxError::NonContiguous {
                    prev_min: prev.min_txid,
                    prev_max: prev.max_txid,
                    min: cur.min_txid,
                    max: cur.max_txid,
                });
            }
        }
        // Litestream forces NoChecksum on merged output, which also requires a zero pre-apply checksum.
        let header = Header {
            flags: HEADER_FLAG_NO_CHECKSUM,
            page_size: first.page_size,
            commit: last.commit,
            min_txid: first.min_txid,
            max_txid: last.max_txid,
            timestamp_ms: last.timestamp_ms,
            ..Header::default()
        };
        let page_size = first.page_size as usize;
        let mut merger = Merger {
            inputs: inputs
                .into_iter()
                .map(|dec| MergeInput {
                    dec,
                    page: vec![0; page_size],
                })
                .collect(),
            pending: BinaryHeap::new(),
            header,
        };
        for i in 0..merger.inputs.len() {
            merger.advance(i)?;
        }
        Ok(merger)
    }

    pub fn header(&self) -> Header {
        self.header
    }

    fn advance(&mut self, index: usize) -> Result<(), LtxError> {
        let input = &mut self.inputs[index];
        match input.dec.next_page(&mut input.page) {
            Ok(Some(pgno)) => {
                self.pending.push(Reverse((pgno, Reverse(index))));
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(e) => Err(input_error(index, input.dec.header(), e)),
        }
    }

    /// Fills `buf` (len == page_size) with the next merged page; Ok(None) when every input is done.
    pub fn next_page(&mut self, buf: &mut [u8]) -> Result<Option<u32>, LtxError> {
        if buf.len() != self.header.page_size as usize {
            return Err(LtxError::BufferSize {
                got: buf.len(),
                want: self.header.page_size,
            });
        }
        while let Some(Reverse((pgno, Reverse(newest)))) = self.pending.pop() {
            buf.copy_from_slice(&self.inputs[newest].page);
            self.advance(newest)?;
            while let Some(&Reverse((next, Reverse(older)))) = self.pending.peek() {
                if next != pgno {
                    break;
                }
                self.pending.pop();
                self.advance(older)?;
            }
            if pgno <= self.header.commit {
                return Ok(Some(pgno));
            }
        }
        Ok(None)
    }

    /// The header of the oldest input (follow mode checks its pre-apply checksum).
    pub fn first_header(&self) -> Option<Header> {
        self.inputs.first().map(|i| *i.dec.header())
    }

    /// Like [`Merger::finish`], returning each input's trailer (follow mode keeps the last
    /// post-apply checksum to check the next file against).
    pub fn finish_trailers(self) -> Result<Vec<Trailer>, LtxError> {
        let mut trailers = Vec::with_capacity(self.inputs.len());
        for (index, input) in self.inputs.into_iter().enumerate() {
            let header = *input.dec.header();
            trailers.push(
                input
                    .dec
                    .finish()
                    .map_err(|e| input_error(index, &header, e))?,
            );
        }
        Ok(trailers)
    }

    /// Finishes every input: reads its index and trailer and verifies its checksum.
    pub fn finish(self) -> Result<(), LtxError> {
        for (index, input) in self.inputs.into_iter().enumerate() {
            let header = *input.dec.header();
            input
                .dec
                .finish()
                .map_err(|e| input_error(index, &header, e))?;
        }
        Ok(())
    }
}

fn input_error(index: usize, header: &Header, e: LtxError) -> LtxError {
    LtxError::Input {
        index,
        min_txid: header.min_txid,
        max_txid: header.max_txid,
        source: Box::new(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xxh32_known_vectors() {
        assert_eq!(xxh32(b""), 0x02CC_5D05);
        assert_eq!(xxh32(b"a"), 0x550D_7456);
        assert_eq!(
            xxh32(b"Nobody inspects the spammish repetition"),
            0xE229_3B2F
        );
    }

    #[test]
    fn lock_page_numbers() {
        assert_eq!(lock_pgno(4096), 262_145);
        assert_eq!(lock_pgno(512), 2_097_153);
        assert_eq!(lock_pgno(65536), 16_385);
    }
}
