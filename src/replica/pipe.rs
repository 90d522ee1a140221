//! A bounded in-process pipe whose writer can fail the reader: lets a producer thread (an LTX encoder)
//! stream into `ReplicaClient::write_ltx`, which pulls from a `Read`. Unlike an OS pipe, a producer
//! that errors or dies makes the reader fail instead of seeing a clean EOF, so a truncated stream can
//! never be committed as a complete replica file.

use std::io::{self, Read, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

const CHUNK: usize = 256 * 1024;
/// Chunks in flight: bounds memory to about `CHUNK * DEPTH`.
const DEPTH: usize = 4;

enum Msg {
    Data(Vec<u8>),
    Done,
    Failed(String),
}

pub struct PipeWriter {
    tx: SyncSender<Msg>,
    buf: Vec<u8>,
    finished: bool,
}

pub struct PipeReader {
    rx: Receiver<Msg>,
    cur: Vec<u8>,
    pos: usize,
    done: bool,
}

pub fn pipe() -> (PipeWriter, PipeReader) {
    let (tx, rx) = sync_channel(DEPTH);
    (
        PipeWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
            finished: false,
        },
        PipeReader {
            rx,
            cur: Vec::new(),
            pos: 0,
            done: false,
        },
    )
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "pipe reader closed")
}

impl PipeWriter {
    /// Flushes and marks the stream complete; only now does the reader see EOF.
    pub fn finish(mut self) -> io::Result<()> {
        self.flush()?;
        self.finished = true;
        self.tx.send(Msg::Done).map_err(|_| closed())
    }
}

impl Write for PipeWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
            self.tx.send(Msg::Data(chunk)).map_err(|_| closed())?;
        }
        Ok(())
    }
}

impl Drop for PipeWriter {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.tx.send(Msg::Failed(
                "producer stopped before the end of the stream".into(),
            ));
        }
    }
}

impl Read for PipeReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            if self.done {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Msg::Data(d)) => {
                    self.cur = d;
                    self.pos = 0;
                }
                Ok(Msg::Done) => self.done = true,
                Ok(Msg::Failed(reason)) => return Err(io::Error::other(reason)),
                Err(_) => {
                    return Err(io::Error::other(
                        "producer vanished before the end of the stream",
                    ));
                }
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete_stream_reads_to_eof() {
        let (mut w, mut r) = pipe();
        let t = std::thread::spawn(move || {
            for i in 0..1000u32 {
                w.write_all(&i.to_be_bytes().repeat(100)).unwrap();
            }
            w.finish().unwrap();
        });
        let mut got = Vec::new();
        r.read_to_end(&mut got).unwrap();
        t.join().unwrap();
        assert_eq!(got.len(), 1000 * 400);
        assert_eq!(&got[400..404], &1u32.to_be_bytes());
    }

    #[test]
    fn dropped_producer_is_an_error_not_eof() {
        let (mut w, mut r) = pipe();
        w.write_all(b"partial").unwrap();
        drop(w);
        assert!(r.read_to_end(&mut Vec::new()).is_err());
    }
}
