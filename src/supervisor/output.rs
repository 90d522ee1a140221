//! Service output: every service's stdout and stderr come through pipes, and each line goes to
//! litevisor's own stdout or stderr (the stream the service used), prefixed with `[name] `.
//!
//! Lines are never torn: one writer thread per stream is the only writer of litevisor's descriptor,
//! and every message it gets holds whole lines (a batch of them is written with one `write`). A line
//! longer than the read buffer is streamed in pieces while its reader holds the stream's lock, so no
//! other service's line lands in the middle of it. A last line without a newline is completed at EOF.
//! Writing to a slow stdout blocks only the writer thread, then (through the bounded queue) the
//! readers, then the services themselves: back-pressure, never unbounded memory.

use std::fs::File;
use std::io::{self, Write};
use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::sync::{Mutex, OwnedMutexGuard, mpsc};

/// Read buffer per pipe; a line longer than this is passed on in pieces (still whole and untorn).
/// Reserved, not filled: its pages only become resident as far as output actually reaches.
pub const LINE_BUFFER: usize = 64 * 1024;
/// Messages queued per stream before readers wait for the writer.
const QUEUE: usize = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

type Sink = Arc<Mutex<Option<mpsc::Sender<Vec<u8>>>>>;

pub struct Output {
    sinks: [Sink; 2],
    writers: StdMutex<Vec<std::thread::JoinHandle<()>>>,
    /// Each reader holds a clone; when all are gone, `done` yields `None`.
    alive: StdMutex<Option<mpsc::Sender<()>>>,
    done: Mutex<mpsc::Receiver<()>>,
}

impl Output {
    /// Starts the two writer threads (after signals were taken over, so they inherit the mask).
    pub fn new() -> io::Result<Arc<Self>> {
        let mut writers = Vec::new();
        let mut sink = |fd: i32, name: &str| -> io::Result<Sink> {
            let (tx, rx) = mpsc::channel(QUEUE);
            writers.push(
                std::thread::Builder::new()
                    .name(name.into())
                    .stack_size(64 * 1024)
                    .spawn(move || write_all_messages(fd, rx))?,
            );
            Ok(Arc::new(Mutex::new(Some(tx))))
        };
        let sinks = [sink(1, "lv-stdout")?, sink(2, "lv-stderr")?];
        let (alive, done) = mpsc::channel(1);
        Ok(Arc::new(Self {
            sinks,
            writers: StdMutex::new(writers),
            alive: StdMutex::new(Some(alive)),
            done: Mutex::new(done),
        }))
    }

    /// A pipe whose lines go to `stream` with `prefix` in front; returns the write end for the child
    /// (blocking, close-on-exec: `spawn` dup2s it onto 1 or 2). Must run inside the runtime.
    pub fn pipe(&self, stream: Stream, prefix: &[u8]) -> io::Result<OwnedFd> {
        let (read, write) = super::child::pipe()?;
        let read = super::child::async_reader(read)?;
        let alive = self.alive.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let sink = Arc::clone(&self.sinks[stream as usize]);
        let prefix = prefix.to_vec();
        tokio::spawn(async move {
            forward(read, prefix, sink).await;
            drop(alive);
        });
        Ok(write)
    }

    /// Waits (at most `patience`) for every pipe to reach EOF, then lets the writers drain their
    /// queues and exit.
    pub async fn close(&self, patience: Duration) {
        drop(self.alive.lock().unwrap_or_else(|p| p.into_inner()).take());
        let mut done = self.done.lock().await;
        let _ = tokio::time::timeout(patience, done.recv()).await;
        for sink in &self.sinks {
            sink.lock().await.take();
        }
        let writers = std::mem::take(&mut *self.writers.lock().unwrap_or_else(|p| p.into_inner()));
        let _ = tokio::task::spawn_blocking(move || {
            for writer in writers {
                let _ = writer.join();
            }
        })
        .await;
    }
}

fn write_all_messages(fd: i32, mut queue: mpsc::Receiver<Vec<u8>>) {
    // SAFETY: fd 1 or 2 stays open for the life of the process; ManuallyDrop never closes it.
    let mut out = ManuallyDrop::new(unsafe { File::from_raw_fd(fd) });
    while let Some(message) = queue.blocking_recv() {
        // A closed or broken stdout loses the output but must not stop supervision.
        let _ = out.write_all(&message);
    }
}

async fn send(sink: &Option<mpsc::Sender<Vec<u8>>>, message: Vec<u8>) {
    if let Some(tx) = sink {
        let _ = tx.send(message).await;
    }
}

/// Copies one pipe to its stream until EOF, line by line.
async fn forward(pipe: AsyncFd<OwnedFd>, prefix: Vec<u8>, sink: Sink) {
    // Not zero-filled: writing 64 KiB of zeros per pipe made every service cost 128 KiB of memory
    // before it printed a byte. `buf.len()` is what has been read and not yet passed on.
    let mut buf: Vec<u8> = Vec::with_capacity(LINE_BUFFER);
    // Held while an over-long line is being streamed: nobody else writes to the stream meanwhile.
    let mut long_line: Option<OwnedMutexGuard<Option<mpsc::Sender<Vec<u8>>>>> = None;
    loop {
        let n = read_some(&pipe, &mut buf).await;
        if n == 0 {
            if !buf.is_empty() || long_line.is_some() {
                let mut message = Vec::with_capacity(prefix.len() + buf.len() + 1);
                if long_line.is_none() {
                    message.extend_from_slice(&prefix);
                }
                message.extend_from_slice(&buf);
                message.push(b'\n');
                match long_line.take() {
                    Some(guard) => send(&guard, message).await,
                    None => send(&*sink.lock().await, message).await,
                }
            }
            return;
        }
        let Some(last_newline) = buf.iter().rposition(|&b| b == b'\n') else {
            if buf.len() >= LINE_BUFFER {
                let mut message = Vec::with_capacity(prefix.len() + buf.len());
                if long_line.is_none() {
                    message.extend_from_slice(&prefix);
                    long_line = Some(Arc::clone(&sink).lock_owned().await);
                }
                message.extend_from_slice(&buf);
                if let Some(guard) = &long_line {
                    send(guard, message).await;
                }
                buf.clear();
            }
            continue;
        };
        let complete = &buf[..=last_newline];
        let lines = complete.iter().filter(|&&b| b == b'\n').count();
        let mut message = Vec::with_capacity(complete.len() + lines * prefix.len());
        for (i, line) in complete.split_inclusive(|&b| b == b'\n').enumerate() {
            // The first piece finishes a streamed long line, whose prefix went out already.
            if !(i == 0 && long_line.is_some()) {
                message.extend_from_slice(&prefix);
            }
            message.extend_from_slice(line);
        }
        match long_line.take() {
            Some(guard) => send(&guard, message).await,
            None => send(&*sink.lock().await, message).await,
        }
        buf.drain(..=last_newline);
    }
}

/// Appends what is available to `buf`, up to [`LINE_BUFFER`] bytes in all; returns how much, 0 at
/// EOF (or on an error, which ends the pipe the same way).
async fn read_some(pipe: &AsyncFd<OwnedFd>, buf: &mut Vec<u8>) -> usize {
    let room = LINE_BUFFER.saturating_sub(buf.len());
    buf.reserve(room);
    loop {
        let Ok(mut ready) = pipe.readable().await else {
            return 0;
        };
        let spare = &mut buf.spare_capacity_mut()[..room];
        let result = ready.try_io(|fd| {
            // SAFETY: reading into the vector's spare capacity, at most `room` bytes of it.
            let n = unsafe { libc::read(fd.as_raw_fd(), spare.as_mut_ptr().cast(), spare.len()) };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        });
        match result {
            Ok(Ok(n)) => {
                // SAFETY: the kernel initialised the first `n` bytes of the spare capacity.
                unsafe { buf.set_len(buf.len() + n) };
                return n;
            }
            Ok(Err(err)) if err.kind() == io::ErrorKind::Interrupted => continue,
            Ok(Err(_)) => return 0,
            Err(_would_block) => continue,
        }
    }
}
