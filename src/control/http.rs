//! The optional HTTP listener (`metrics_addr`, litestream.yml's `addr`): `GET /metrics` (Prometheus'
//! text format, [`super::metrics`]) and `GET /healthz` (200 `ok`, or 503 naming what is wrong,
//! [`super::health`]). HTTP/1.1 by hyper's server side, on the supervisor's runtime.
//!
//! It binds exactly the address it is given (`:PORT` = every interface, IPv6 and IPv4) and sleeps
//! in `accept` while nobody asks: no timer is armed without a connection. At most
//! [`MAX_CONNECTIONS`] connections are served at once (others are closed at once), each for at most
//! [`CONNECTION_LIFETIME`], so a client that never sends its request cannot pile up descriptors.

use std::convert::Infallible;
use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use tokio::sync::Semaphore;

use super::StatusSource;

const MAX_CONNECTIONS: usize = 16;
const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);

pub struct HttpServer {
    listener: TcpListener,
    addr: SocketAddr,
}

impl HttpServer {
    /// Binds `addr` (`HOST:PORT`, or `:PORT` for every interface). Called before any thread starts.
    pub fn bind(addr: &str) -> io::Result<HttpServer> {
        let listener = match addr.strip_prefix(':') {
            Some(port) => {
                let port: u16 = port
                    .parse()
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "bad port"))?;
                // Every interface: IPv6 (which takes IPv4 too), or IPv4 alone where IPv6 is off.
                TcpListener::bind(("::", port)).or_else(|_| TcpListener::bind(("0.0.0.0", port)))?
            }
            None => {
                let mut last = io::Error::new(io::ErrorKind::NotFound, "the name has no address");
                let mut bound = None;
                for candidate in addr.to_socket_addrs()? {
                    match TcpListener::bind(candidate) {
                        Ok(l) => {
                            bound = Some(l);
                            break;
                        }
                        Err(e) => last = e,
                    }
                }
                bound.ok_or(last)?
            }
        };
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        Ok(HttpServer { listener, addr })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until the runtime drops the task. Must be called inside the runtime.
    pub fn serve(
        self,
        source: Arc<dyn StatusSource>,
    ) -> io::Result<impl Future<Output = ()> + use<>> {
        let listener = tokio::net::TcpListener::from_std(self.listener)?;
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        Ok(async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of descriptors and the like: back off instead of spinning.
                        tracing::debug!("metrics listener accept: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                    continue; // too many at once: this one is closed
                };
                let source = Arc::clone(&source);
                tokio::spawn(async move {
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let service = hyper::service::service_fn(move |req| {
                        let source = Arc::clone(&source);
                        async move { Ok::<_, Infallible>(answer(&req, &*source)) }
                    });
                    let conn =
                        hyper::server::conn::http1::Builder::new().serve_connection(io, service);
                    let _ = tokio::time::timeout(CONNECTION_LIFETIME, conn).await;
                    drop(slot);
                });
            }
        })
    }
}

fn answer(
    req: &Request<hyper::body::Incoming>,
    source: &dyn StatusSource,
) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &str, body: String| {
        Response::builder()
            .status(status)
            .header(hyper::header::CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_default()
    };
    const TEXT: &str = "text/plain; charset=utf-8";
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(StatusCode::METHOD_NOT_ALLOWED, TEXT, "use GET\n".into());
    }
    match req.uri().path() {
        "/metrics" => reply(
            StatusCode::OK,
            super::metrics::CONTENT_TYPE,
            super::metrics::render(&source.snapshot()),
        ),
        "/healthz" => {
            let problems = super::health::problems(&source.snapshot(), source.health_upload_lag());
            let status = if problems.is_empty() {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            reply(status, TEXT, super::health::render(&problems))
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            TEXT,
            "not found: try /metrics or /healthz\n".into(),
        ),
    }
}
