//! A configured service as a [`Unit`]: one process at a time, started with the service's argv,
//! environment, working directory and credentials, in its own session and process group, with its
//! output through [`Output`]. It waits for readiness, restarts per policy with back-off, runs the
//! `finish` program after each exit, and stops by signalling its whole process tree.
//!
//! Life of one run:
//! 1. spawn (a spawn error counts as an exit with 126/127);
//! 2. until the first readiness (a longrun): the probe, bounded by `ready_timeout`; on timeout the
//!    process tree is killed and the unit fails (start-up cannot go on). A oneshot is ready when it
//!    exits 0, and `ready_timeout` bounds its whole run. Restarts are not re-gated;
//! 3. on exit: `finish CODE SIGNAL NAME` (CODE = 256 when killed by a signal, SIGNAL = 0 when not),
//!    killed after `finish_timeout`; a finish exit of 125 means "do not restart", as in s6;
//! 4. restart policy, then [`Restarts`] decides the delay or gives up. The main service never
//!    restarts: its exit ends the container.
//!
//! Stopping: `stop_signal` + SIGCONT to the group and to every descendant found (so a `setsid`
//! grandchild is included), SIGKILL to the same after `stop_grace` or at the global deadline,
//! whichever comes first; a kill order sends SIGKILL at once.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::backoff::{Decision, Restarts};
use super::child::{self, Running, Tree};
use super::output::{Output, Stream};
use super::readiness::Probe;
use super::unit::{Command, Control, Ended, Unit, UnitFuture, Why};
use crate::config::{GiveUp, Readiness, RestartPolicy, Service, ServiceKind};
use crate::init::{ChildSpec, ExitStatus, Session, SpawnError, Stdio};

/// Far enough to never fire, near enough not to overflow the clock.
const NEVER: Duration = Duration::from_secs(100 * 365 * 86_400);

pub struct ProcessService {
    service: Service,
    output: Arc<Output>,
    restarts: Restarts,
    prefix: Vec<u8>,
    /// A pipeline consumer's stdin (the read end of its pipeline).
    stdin: Option<Arc<OwnedFd>>,
    /// A pipeline producer's stdout (the write end of its consumer's pipeline).
    stdout: Option<Arc<OwnedFd>>,
}

/// How one run ended.
enum RunEnd {
    Exited(ExitStatus),
    /// Stopped by an order; the order may still allow `finish` (not after a kill).
    Stopped(ExitStatus),
    Failed(ExitStatus, String),
}

impl Unit for ProcessService {
    fn run(self: Box<Self>, control: Control) -> UnitFuture {
        Box::pin(self.supervise(control))
    }
}

impl ProcessService {
    pub fn new(service: Service, output: Arc<Output>, seed: u64) -> Self {
        let prefix = if service.log_prefix {
            format!("[{}] ", service.name).into_bytes()
        } else {
            Vec::new()
        };
        Self {
            restarts: Restarts::new(service.backoff, seed),
            service,
            output,
            prefix,
            stdin: None,
            stdout: None,
        }
    }

    /// Connects the service to its log pipeline: `stdin` if it consumes one, `stdout` if it
    /// produces for one.
    pub fn piped(mut self, stdin: Option<Arc<OwnedFd>>, stdout: Option<Arc<OwnedFd>>) -> Self {
        self.stdin = stdin;
        self.stdout = stdout;
        self
    }

    async fn supervise(mut self, mut ctl: Control) -> Ended {
        let name = self.service.name.clone();
        let mut ever_ready = false;
        loop {
            if ctl.command() != Command::Run {
                return ended(None, Why::Stopped);
            }
            let started = Instant::now();
            let end = match self.start(&ctl).await {
                Ok((running, probe)) => self.watch(&mut ctl, running, probe, &mut ever_ready).await,
                Err(err) => {
                    tracing::error!(service = %name, "service {name:?}: {err}");
                    RunEnd::Exited(ExitStatus::Exited(err.exit_code()))
                }
            };
            let status = match end {
                RunEnd::Failed(status, reason) => return ended(Some(status), Why::Failed(reason)),
                RunEnd::Stopped(status) => {
                    tracing::info!(service = %name, "service {name:?} stopped: {status}");
                    if ctl.command() != Command::Kill {
                        self.finish(&mut ctl, status).await;
                    }
                    return ended(Some(status), Why::Stopped);
                }
                RunEnd::Exited(status) => status,
            };

            if self.service.kind == ServiceKind::Oneshot {
                if status.success() {
                    tracing::info!(service = %name, "oneshot {name:?} done");
                    ctl.ready();
                    if let Some(down) = self.service.down.clone() {
                        return self.down(&mut ctl, &down).await;
                    }
                    return ended(Some(status), Why::Exited);
                }
                if self.service.main {
                    return ended(Some(status), Why::Exited);
                }
                let reason = format!("oneshot {name:?} failed: it {status}");
                return ended(Some(status), Why::Failed(reason));
            }

            let finish = self.finish(&mut ctl, status).await;
            if ctl.command() != Command::Run {
                return ended(Some(status), Why::Stopped);
            }
            if ctl.once() {
                tracing::info!(service = %name, "service {name:?} {status}; started once: not restarted");
                return ended(Some(status), Why::Exited);
            }
            if self.service.main {
                tracing::info!(service = %name, "main service {name:?} {status}");
                return ended(Some(status), Why::Exited);
            }
            let wanted = match self.service.restart {
                RestartPolicy::Always => true,
                RestartPolicy::OnFailure => !status.success(),
                RestartPolicy::Never => false,
            };
            if finish == Some(ExitStatus::Exited(125)) {
                tracing::warn!(
                    service = %name,
                    "service {name:?} {status}; its finish program asked (exit 125) not to restart it"
                );
                return ended(Some(status), Why::Exited);
            }
            if !wanted {
                tracing::warn!(service = %name, "service {name:?} {status}; not restarted (restart policy)");
                return ended(Some(status), Why::Exited);
            }
            match self.restarts.after_exit(started.elapsed()) {
                Decision::GiveUp { restarts } => {
                    let shutdown = self.service.backoff.give_up == GiveUp::Shutdown;
                    tracing::error!(
                        service = %name,
                        "service {name:?} {status}; giving up after {restarts} restarts ({})",
                        if shutdown {
                            "stopping the container"
                        } else {
                            "it stays down"
                        }
                    );
                    return ended(Some(status), Why::GaveUp { shutdown });
                }
                Decision::Restart { delay, attempt } => {
                    ctl.restarting(status);
                    let max = self
                        .service
                        .backoff
                        .max_restarts
                        .map_or(String::new(), |m| format!("/{m}"));
                    tracing::warn!(
                        service = %name,
                        "service {name:?} {status}; restart {attempt}{max} in {}ms",
                        delay.as_millis()
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = ctl.next_order() => return ended(Some(status), Why::Stopped),
                    }
                }
            }
        }
    }

    /// The base spec for any program of this service (run, check, finish).
    fn spec(&self, argv: &[OsString]) -> ChildSpec {
        let mut spec = ChildSpec::new(&argv[0])
            .args(&argv[1..])
            .env(self.service.env.vars().to_vec())
            .session(Session::New)
            .stdin(Stdio::Null);
        if let Some(dir) = &self.service.working_dir {
            spec = spec.cwd(dir);
        }
        if let Some(c) = &self.service.credentials {
            spec = spec.user(c.uid, c.gid).groups(c.groups.clone());
        }
        spec
    }

    /// Spawns `argv` with stdout and stderr through the log pipes (plus `extra`, a descriptor to pass);
    /// `on_started` gets the pid from the spawning thread (see [`child::start`]).
    async fn launch(
        &self,
        argv: &[OsString],
        extra: Option<(i32, &OwnedFd)>,
        on_started: impl FnOnce(nix::unistd::Pid) + Send + 'static,
    ) -> Result<Running, SpawnError> {
        let parent_err = |source: io::Error| SpawnError::Parent {
            program: argv[0].clone(),
            source,
        };
        let own_out;
        let out_fd = match &self.stdout {
            Some(pipeline) => pipeline.as_raw_fd(),
            None => {
                own_out = self
                    .output
                    .pipe(Stream::Stdout, &self.prefix)
                    .map_err(parent_err)?;
                own_out.as_raw_fd()
            }
        };
        let err = self
            .output
            .pipe(Stream::Stderr, &self.prefix)
            .map_err(parent_err)?;
        let mut spec = self
            .spec(argv)
            .stdout(Stdio::Fd(out_fd))
            .stderr(Stdio::Fd(err.as_raw_fd()));
        if let Some(stdin) = &self.stdin {
            spec = spec.stdin(Stdio::Fd(stdin.as_raw_fd()));
        }
        if let Some((target, fd)) = extra {
            spec = spec.pass_fd(target, fd.as_raw_fd());
        }
        child::start(spec, on_started).await
        // `out`, `err` and the passed descriptor close here: only the child holds them now.
    }

    /// Starts the service's process; its group is recorded on `ctl` the moment it runs.
    async fn start(&self, ctl: &Control) -> Result<(Running, Probe), SpawnError> {
        let parent_err = |source: io::Error| SpawnError::Parent {
            program: self.service.command[0].clone(),
            source,
        };
        let probe_and_fd = match &self.service.readiness {
            Readiness::Started => (Probe::Started, None),
            Readiness::NotificationFd(fd) => {
                let (read, write) = child::pipe().map_err(parent_err)?;
                let pipe = child::async_reader(read).map_err(parent_err)?;
                (Probe::Notification { fd: *fd, pipe }, Some((*fd, write)))
            }
            Readiness::Tcp { host, port } => (
                Probe::Tcp {
                    host: host.clone(),
                    port: *port,
                },
                None,
            ),
            Readiness::Command(argv) => (
                Probe::Command(self.spec(argv).stdout(Stdio::Null).stderr(Stdio::Null)),
                None,
            ),
        };
        let (probe, notify) = probe_and_fd;
        let running = self
            .launch(
                &self.service.command,
                notify.as_ref().map(|(n, fd)| (*n, fd)),
                ctl.group_recorder(),
            )
            .await?;
        tracing::info!(
            service = %self.service.name,
            pid = running.pid.as_raw(),
            "service {:?} started (pid {})",
            self.service.name,
            running.pid
        );
        Ok((running, probe))
    }

    /// Follows one run until it exits, fails its readiness deadline, or is stopped.
    async fn watch(
        &self,
        ctl: &mut Control,
        mut running: Running,
        probe: Probe,
        ever_ready: &mut bool,
    ) -> RunEnd {
        let name = &self.service.name;
        let oneshot = self.service.kind == ServiceKind::Oneshot;
        let mut tree = Tree::new(running.pid);
        let waiting_for = probe.describe();
        let gated = !*ever_ready && !oneshot;
        let limit = self.service.ready_timeout.filter(|_| gated || oneshot);
        let ready_deadline = tokio::time::sleep_until(Instant::now() + limit.unwrap_or(NEVER));
        tokio::pin!(ready_deadline);
        let probe = probe.ready();
        tokio::pin!(probe);
        let mut probing = !oneshot;

        let end = loop {
            tokio::select! {
                status = running.exited() => break RunEnd::Exited(status),
                _ = &mut probe, if probing => {
                    probing = false;
                    if gated {
                        *ever_ready = true;
                        tracing::info!(service = %name, "service {name:?} is ready");
                        crate::fault::panic_if("ready", name);
                        ctl.ready();
                    }
                }
                _ = &mut ready_deadline, if limit.is_some() && (oneshot || probing) => {
                    let limit = limit.unwrap_or_default();
                    let what = if oneshot {
                        format!("did not finish within {}", seconds(limit))
                    } else {
                        format!("did not become ready within {} (waiting for {waiting_for})", seconds(limit))
                    };
                    tree.signal(&[libc::SIGKILL]);
                    let status = running.exited().await;
                    break RunEnd::Failed(status, format!("service {name:?} {what}"));
                }
                order = ctl.next_order() => {
                    crate::fault::panic_if("stop", name);
                    let status = self.stop(ctl, order, &mut running, &mut tree).await;
                    break RunEnd::Stopped(status);
                }
            }
        };
        ctl.set_group(None);
        end
    }

    /// Stop sequence for the running process; returns its exit status.
    async fn stop(
        &self,
        ctl: &mut Control,
        order: Command,
        running: &mut Running,
        tree: &mut Tree,
    ) -> ExitStatus {
        let name = &self.service.name;
        let deadline = match order {
            Command::Run => return running.exited().await,
            Command::Kill => {
                tree.signal(&[libc::SIGKILL]);
                return running.exited().await;
            }
            Command::Stop { deadline } => deadline,
        };
        let signal = self.service.stop_signal;
        tracing::info!(service = %name, "stopping service {name:?} ({signal})");
        tree.signal(&[signal as i32, libc::SIGCONT]);
        let kill_at = (Instant::now() + self.service.stop_grace).min(deadline.into());
        loop {
            tokio::select! {
                status = running.exited() => return status,
                _ = tokio::time::sleep_until(kill_at) => {
                    tracing::warn!(
                        service = %name,
                        "service {name:?} still running after {signal} (stop_grace {} or the shutdown deadline): killing its process group",
                        seconds(self.service.stop_grace)
                    );
                    break;
                }
                order = ctl.next_order() => if order == Command::Kill { break },
            }
        }
        tree.signal(&[libc::SIGKILL]);
        running.exited().await
    }

    /// A oneshot with a `down` command is up (no process) until its stop order, which comes once
    /// its dependents have stopped; then `down` runs, killed at the stop deadline. A kill order
    /// skips it, as it skips `finish`.
    async fn down(&self, ctl: &mut Control, argv: &[OsString]) -> Ended {
        let name = &self.service.name;
        let mut order = ctl.command();
        while order == Command::Run {
            order = ctl.next_order().await;
        }
        let Command::Stop { deadline } = order else {
            return ended(None, Why::Stopped);
        };
        tracing::info!("oneshot {name:?}: running its down command");
        let mut running = match self.launch(argv, None, ctl.group_recorder()).await {
            Ok(running) => running,
            Err(err) => {
                tracing::warn!("oneshot {name:?}: down: {err}");
                return ended(Some(ExitStatus::Exited(err.exit_code())), Why::Stopped);
            }
        };
        let mut tree = Tree::new(running.pid);
        let kill_at: Instant = deadline.into();
        let status = loop {
            tokio::select! {
                status = running.exited() => break status,
                _ = tokio::time::sleep_until(kill_at) => {
                    tracing::warn!("oneshot {name:?}: down still running at the shutdown deadline: killed");
                    tree.signal(&[libc::SIGKILL]);
                    break running.exited().await;
                }
                order = ctl.next_order() => if order == Command::Kill {
                    tree.signal(&[libc::SIGKILL]);
                    break running.exited().await;
                },
            }
        };
        ctl.set_group(None);
        if !status.success() {
            tracing::warn!("oneshot {name:?}: down {status}");
        }
        ended(Some(status), Why::Stopped)
    }

    /// Runs the finish program, if any, for an exit with `status`; returns how it ended.
    async fn finish(&self, ctl: &mut Control, status: ExitStatus) -> Option<ExitStatus> {
        let argv = self.service.finish.as_ref()?;
        let name = &self.service.name;
        let (code, signal) = match status {
            ExitStatus::Exited(code) => (code, 0),
            ExitStatus::Signaled { signal, .. } => (256, signal),
        };
        let mut full = argv.clone();
        full.extend([
            code.to_string().into(),
            signal.to_string().into(),
            name.into(),
        ]);
        // The finish program is not a signal target: only the service's own process is.
        let mut running = match self.launch(&full, None, |_| {}).await {
            Ok(running) => running,
            Err(err) => {
                tracing::warn!(service = %name, "service {name:?}: finish: {err}");
                return None;
            }
        };
        let mut tree = Tree::new(running.pid);
        let limit = self.service.finish_timeout;
        let mut kill_at = Instant::now() + limit.unwrap_or(NEVER);
        if let Command::Stop { deadline } = ctl.command() {
            kill_at = kill_at.min(deadline.into());
        }
        loop {
            tokio::select! {
                status = running.exited() => return Some(status),
                _ = tokio::time::sleep_until(kill_at) => {
                    tracing::warn!(service = %name, "service {name:?}: finish program still running after its time limit: killed");
                    break;
                }
                order = ctl.next_order() => match order {
                    Command::Kill => break,
                    Command::Stop { deadline } => kill_at = kill_at.min(deadline.into()),
                    Command::Run => {}
                },
            }
        }
        tree.signal(&[libc::SIGKILL]);
        Some(running.exited().await)
    }
}

fn ended(status: Option<ExitStatus>, why: Why) -> Ended {
    Ended { status, why }
}

fn seconds(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}
