//! The streaming LTX reader ([`Decoder`]) and the xxHash32 its LZ4 frames are checked with.

use super::*;

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
}
