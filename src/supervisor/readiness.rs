//! Readiness probes: how litevisor learns that a started longrun may have dependents.
//!
//! - s6 notification fd: the service writes a newline to a pipe it got as fd N;
//! - TCP: a connect to host:port succeeds (tried again after a short, growing pause);
//! - a check command exits 0 (run again after a short, growing pause; started through
//!   [`crate::init::spawn`] like everything else, and killed if the probe is abandoned).
//!
//! A probe only ever resolves to "ready"; the caller bounds it with the service's `ready_timeout` and
//! abandons it when the service exits first.

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use tokio::io::unix::AsyncFd;

use super::child::{self, KillOnDrop};
use crate::init::ChildSpec;

pub enum Probe {
    /// Ready once started.
    Started,
    /// The read end of the notification pipe.
    Notification {
        fd: i32,
        pipe: AsyncFd<OwnedFd>,
    },
    Tcp {
        host: String,
        port: u16,
    },
    Command(ChildSpec),
}

impl Probe {
    /// For error messages: what was being waited for.
    pub fn describe(&self) -> String {
        match self {
            Probe::Started => "start".into(),
            Probe::Notification { fd, .. } => format!("a newline on notification fd {fd}"),
            Probe::Tcp { host, port } => format!("a TCP connection to {host}:{port}"),
            Probe::Command(spec) => format!("check command {:?} to exit 0", spec.program()),
        }
    }

    /// Resolves when the service is ready; stays pending when it can no longer tell (the
    /// notification pipe closed without a newline).
    pub async fn ready(self) {
        match self {
            Probe::Started => {}
            Probe::Notification { pipe, .. } => {
                if !newline(&pipe).await {
                    std::future::pending::<()>().await;
                }
            }
            Probe::Tcp { host, port } => tcp(&host, port).await,
            Probe::Command(spec) => command(spec).await,
        }
    }
}

/// True when a newline arrived, false at EOF without one.
async fn newline(pipe: &AsyncFd<OwnedFd>) -> bool {
    let mut buf = [0u8; 512];
    loop {
        let Ok(mut ready) = pipe.readable().await else {
            return false;
        };
        let result = ready.try_io(|fd| {
            // SAFETY: reading into our stack buffer, at most its length.
            let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        });
        match result {
            Ok(Ok(0)) => return false,
            Ok(Ok(n)) if buf[..n].contains(&b'\n') => return true,
            Ok(Ok(_)) | Err(_) => continue,
            Ok(Err(err)) if err.kind() == std::io::ErrorKind::Interrupted => continue,
            Ok(Err(_)) => return false,
        }
    }
}

fn next_pause(pause: Duration, max: Duration) -> Duration {
    (pause * 2).min(max)
}

async fn tcp(host: &str, port: u16) {
    let mut pause = Duration::from_millis(20);
    loop {
        let attempt = tokio::net::TcpStream::connect((host, port));
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(1), attempt).await {
            return;
        }
        tokio::time::sleep(pause).await;
        pause = next_pause(pause, Duration::from_millis(500));
    }
}

async fn command(spec: ChildSpec) {
    let mut pause = Duration::from_millis(50);
    loop {
        match child::start(spec.clone(), |_| {}).await {
            Ok(mut running) => {
                let mut guard = KillOnDrop::new(running.pid);
                let status = running.exited().await;
                guard.disarm();
                if status.success() {
                    return;
                }
                tracing::debug!(program = ?spec.program(), %status, "readiness check not yet");
            }
            Err(err) => tracing::warn!(%err, "readiness check cannot run"),
        }
        tokio::time::sleep(pause).await;
        pause = next_pause(pause, Duration::from_secs(1));
    }
}
