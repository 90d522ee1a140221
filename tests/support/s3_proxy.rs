//! Test support: an HTTP/1.1 fault-injecting TCP proxy between an S3 client and the S3 server. It
//! counts requests, adds latency, answers the first N with `503 SlowDown`, cuts large download bodies mid-way, and
//! drops connections in the middle of large uploads; also a share of requests answered 503 or reset
//! (seeded draws), "down" (every connection closed unanswered) and "stall" (requests held). Also a "black hole" listener that accepts
//! connections and never answers (a replica that is down but reachable).
#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// Bodies larger than this are the ones cut by `cut_downloads` / `cut_uploads`.
pub const CUT_THRESHOLD: u64 = 256 * 1024;

#[derive(Default)]
pub struct Faults {
    /// Requests seen (every request head, including those answered with 503).
    pub requests: AtomicUsize,
    /// Next N requests get 503 SlowDown.
    pub fail_next: AtomicUsize,
    /// Next N GET responses with a body > CUT_THRESHOLD are cut after half the body.
    pub cut_downloads: AtomicUsize,
    /// Next N requests with a body > CUT_THRESHOLD are dropped after half the body arrived.
    pub cut_uploads: AtomicUsize,
    /// Milliseconds added before each request is forwarded (network latency).
    pub delay_ms: AtomicU64,
    /// Faults actually injected (503s + cuts + resets + refusals).
    pub injected: AtomicUsize,
    /// A share (per mille) of requests answered with 503 SlowDown, drawn from `seed`.
    pub fail_permille: AtomicU64,
    /// A share (per mille) of requests whose connection is reset before they are forwarded.
    pub reset_permille: AtomicU64,
    /// While set, every request's connection is closed unanswered (S3 down).
    pub down: AtomicBool,
    /// While set, requests are held unanswered (a stalled connection); released when cleared.
    pub stall: AtomicBool,
    /// Seed of the per-request draws of `fail_permille` / `reset_permille` (replayable runs).
    pub seed: AtomicU64,
    stop: AtomicBool,
}

impl Faults {
    fn take(counter: &AtomicUsize) -> bool {
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    /// A draw in 0..1000 for request number `n`, from the seed (splitmix64).
    fn draw(&self, n: usize, salt: u64) -> u64 {
        let mut z = self
            .seed
            .load(Ordering::SeqCst)
            .wrapping_add((n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .wrapping_add(salt);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % 1000
    }
}

pub struct FaultProxy {
    pub port: u16,
    pub endpoint: String,
    pub faults: Arc<Faults>,
}

impl FaultProxy {
    pub fn start(upstream_port: u16) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let faults = Arc::new(Faults::default());
        let f = faults.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if f.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let f = f.clone();
                std::thread::spawn(move || {
                    let _ = serve(conn, upstream_port, &f);
                });
            }
        });
        FaultProxy {
            port,
            endpoint: format!("http://127.0.0.1:{port}"),
            faults,
        }
    }

    pub fn requests(&self) -> usize {
        self.faults.requests.load(Ordering::SeqCst)
    }

    pub fn injected(&self) -> usize {
        self.faults.injected.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.faults.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

struct Head {
    raw: Vec<u8>,
    first_line: String,
    content_length: Option<u64>,
    chunked: bool,
    close: bool,
}

fn read_head(r: &mut impl BufRead) -> io::Result<Option<Head>> {
    let mut raw = Vec::new();
    let mut first_line = String::new();
    let (mut content_length, mut chunked, mut close) = (None, false, false);
    loop {
        let mut line = Vec::new();
        if r.read_until(b'\n', &mut line)? == 0 {
            return if raw.is_empty() {
                Ok(None)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
        raw.extend_from_slice(&line);
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        if first_line.is_empty() {
            first_line = text;
            continue;
        }
        if text.is_empty() {
            return Ok(Some(Head {
                raw,
                first_line,
                content_length,
                chunked,
                close,
            }));
        }
        if let Some((name, value)) = text.split_once(':') {
            let (name, value) = (
                name.trim().to_ascii_lowercase(),
                value.trim().to_ascii_lowercase(),
            );
            match name.as_str() {
                "content-length" => content_length = value.parse().ok(),
                "transfer-encoding" => chunked = value.contains("chunked"),
                "connection" => close = value.contains("close"),
                _ => {}
            }
        }
    }
}

/// Copies exactly `n` bytes.
fn copy_n(r: &mut impl Read, w: &mut impl Write, n: u64) -> io::Result<()> {
    let copied = io::copy(&mut r.take(n), w)?;
    if copied < n {
        Err(io::ErrorKind::UnexpectedEof.into())
    } else {
        Ok(())
    }
}

/// Relays a chunked body verbatim.
fn copy_chunked(r: &mut impl BufRead, w: &mut impl Write) -> io::Result<()> {
    loop {
        let mut line = Vec::new();
        r.read_until(b'\n', &mut line)?;
        w.write_all(&line)?;
        let size_text = String::from_utf8_lossy(&line);
        let size = u64::from_str_radix(size_text.trim().split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
        if size == 0 {
            loop {
                let mut t = Vec::new();
                r.read_until(b'\n', &mut t)?;
                w.write_all(&t)?;
                if t == b"\r\n" || t.is_empty() {
                    return Ok(());
                }
            }
        }
        copy_n(r, w, size + 2)?;
    }
}

fn serve(client: TcpStream, upstream_port: u16, f: &Faults) -> io::Result<()> {
    let mut client_w = client.try_clone()?;
    let mut client_r = BufReader::new(client);
    let mut upstream: Option<(BufReader<TcpStream>, TcpStream)> = None;
    while let Some(req) = read_head(&mut client_r)? {
        let n = f.requests.fetch_add(1, Ordering::SeqCst);
        let body_len = req.content_length.unwrap_or(0);
        while f.stall.load(Ordering::SeqCst) && !f.stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20));
        }
        if f.down.load(Ordering::SeqCst) || f.draw(n, 1) < f.reset_permille.load(Ordering::SeqCst) {
            f.injected.fetch_add(1, Ordering::SeqCst);
            // SO_LINGER 0: the close is a TCP reset, as when a load balancer drops a connection.
            let _ = set_linger_zero(&client_w);
            let _ = client_w.shutdown(Shutdown::Both);
            return Ok(());
        }
        if Faults::take(&f.fail_next) || f.draw(n, 2) < f.fail_permille.load(Ordering::SeqCst) {
            f.injected.fetch_add(1, Ordering::SeqCst);
            io::copy(&mut (&mut client_r).take(body_len), &mut io::sink())?;
            let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
            write!(
                client_w,
                "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )?;
            continue;
        }
        if body_len > CUT_THRESHOLD && Faults::take(&f.cut_uploads) {
            f.injected.fetch_add(1, Ordering::SeqCst);
            io::copy(&mut (&mut client_r).take(body_len / 2), &mut io::sink())?;
            let _ = client_w.shutdown(Shutdown::Both);
            return Ok(());
        }
        let delay = f.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            std::thread::sleep(Duration::from_millis(delay));
        }
        if upstream.is_none() {
            let s = TcpStream::connect(("127.0.0.1", upstream_port))?;
            upstream = Some((BufReader::new(s.try_clone()?), s));
        }
        let Some((up_r, up_w)) = upstream.as_mut() else {
            unreachable!()
        };
        up_w.write_all(&req.raw)?;
        if req.chunked {
            copy_chunked(&mut client_r, up_w)?;
        } else {
            copy_n(&mut client_r, up_w, body_len)?;
        }
        // Interim 1xx responses are passed through until the final one.
        let resp = loop {
            let head = read_head(up_r)?.ok_or(io::ErrorKind::UnexpectedEof)?;
            let status: u16 = head
                .first_line
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            if (100..200).contains(&status) {
                client_w.write_all(&head.raw)?;
                continue;
            }
            break (head, status);
        };
        let (head, status) = resp;
        let is_head = req.first_line.starts_with("HEAD ");
        let is_get = req.first_line.starts_with("GET ");
        let no_body = is_head || status == 204 || status == 304;
        if !no_body
            && is_get
            && head.content_length.is_some_and(|n| n > CUT_THRESHOLD)
            && Faults::take(&f.cut_downloads)
        {
            f.injected.fetch_add(1, Ordering::SeqCst);
            client_w.write_all(&head.raw)?;
            copy_n(up_r, &mut client_w, head.content_length.unwrap_or(0) / 2)?;
            let _ = client_w.shutdown(Shutdown::Both);
            return Ok(());
        }
        client_w.write_all(&head.raw)?;
        if no_body {
        } else if head.chunked {
            copy_chunked(up_r, &mut client_w)?;
        } else if let Some(n) = head.content_length {
            copy_n(up_r, &mut client_w, n)?;
        } else {
            io::copy(up_r, &mut client_w)?;
            return Ok(());
        }
        if head.close || req.close {
            return Ok(());
        }
    }
    Ok(())
}

fn set_linger_zero(s: &TcpStream) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket we own, with a properly sized linger struct.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A port that accepts connections and never answers.
pub struct BlackHole {
    pub port: u16,
    pub endpoint: String,
}

impl BlackHole {
    pub fn start() -> BlackHole {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for conn in listener.incoming().flatten() {
                let _ = conn.set_read_timeout(Some(Duration::from_secs(600)));
                held.push(conn);
            }
        });
        BlackHole {
            port,
            endpoint: format!("http://127.0.0.1:{port}"),
        }
    }
}
