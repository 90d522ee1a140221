//! The streaming LTX writer ([`Encoder`]).

use super::*;

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
