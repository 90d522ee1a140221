//! The k-way [`Merger`] of LTX files that compaction and restore stream pages through.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::*;

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
