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
//!
//! Here: the format's constants, [`Header`], [`Trailer`], file names and the ordering rules shared by
//! both directions; the writer is in `encode`, the reader in `decode`, the merge in `merge`.

mod decode;
mod encode;
mod merge;

use std::io::{self, BufReader, Read, Write};

use crc::{CRC_64_GO_ISO, Crc, Digest, Table};
use lz4_flex::frame::{BlockMode, BlockSize, FrameEncoder, FrameInfo};

/// The encoding choice is a setting of the model; the codec re-exports it for its writers.
pub use crate::config::PageEncoding;
pub use decode::Decoder;
pub use encode::Encoder;
pub use merge::Merger;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_page_numbers() {
        assert_eq!(lock_pgno(4096), 262_145);
        assert_eq!(lock_pgno(512), 2_097_153);
        assert_eq!(lock_pgno(65536), 16_385);
    }
}
