//! Signal forwarding and shutdown: every catchable signal sent to litevisor reaches the child; SIGTERM,
//! SIGINT and SIGQUIT start a shutdown bounded by the grace period; a repeated SIGTERM is forwarded
//! again and does not cut the grace short; as PID 1 of a namespace, SIGTERM from outside the namespace works.
//!
//! The child is a small Perl program that appends the number of every signal it receives to a file,
//! so the test can wait for each delivery instead of sleeping.

mod support;

mod init_support;

use init_support::{
    Guard, Mode, PATIENCE, file_in, litevisor, litevisor_pid, signal, wait_exit, wait_for,
};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

/// Records every signal in `$ARGV[0]` (one number per line). Exits with 42 on the signal number given
/// as `$ARGV[1]` (0: never). Creates `$ARGV[0].ready` once the handlers are installed.
const RECORDER: &str = r#"
use POSIX ();
my ($log, $exit_on) = @ARGV;
for my $n (1 .. 64) {
    next if $n == 9 || $n == 19 || $n == 17 || $n == 32 || $n == 33;
    my $action = POSIX::SigAction->new(sub {
        open(my $f, '>>', $log) or die "log: $!";
        print $f "$n\n";
        close $f;
        POSIX::_exit(42) if $n == $exit_on;
    });
    POSIX::sigaction($n, $action);
}
open(my $r, '>', "$log.ready") or die; close $r;
while (1) { sleep 1 }
"#;

fn ready_marker(log: &Path) -> std::path::PathBuf {
    format!("{}.ready", log.display()).into()
}

fn recorded(log: &Path) -> Vec<i32> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// The recorder under litevisor, its log in a scratch directory of its own.
struct Recorder {
    _dir: tempfile::TempDir,
    log: PathBuf,
    guard: Guard,
    /// litevisor's pid (as seen from here).
    pid: i32,
}

impl Recorder {
    /// Starts litevisor with `flags` running the recorder (exiting 42 on `exit_on`), and waits
    /// until the recorder's handlers are installed.
    fn start(mode: Mode, flags: &[&str], exit_on: i32) -> Recorder {
        let dir = init_support::scratch();
        let log = file_in(&dir, "signals.log");
        let exit_on = exit_on.to_string();
        let mut args = flags.to_vec();
        args.extend([
            "--",
            "perl",
            "-e",
            RECORDER,
            init_support::path_str(&log),
            &exit_on,
        ]);
        let child = litevisor(mode, &args).spawn().expect("spawn litevisor");
        let guard = Guard(child);
        let pid = litevisor_pid(mode, &guard.0);
        let ready = ready_marker(&log);
        wait_for(PATIENCE, || ready.exists().then_some(())).expect("recorder never became ready");
        Recorder {
            _dir: dir,
            log,
            guard,
            pid,
        }
    }

    fn recorded(&self) -> Vec<i32> {
        recorded(&self.log)
    }

    /// Sends `sig` to litevisor and waits until the recorder got it once more.
    fn send_and_expect(&self, sig: i32) {
        let count = || self.recorded().iter().filter(|&&s| s == sig).count();
        let before = count();
        signal(self.pid, sig);
        let arrived = wait_for(PATIENCE, || (count() > before).then_some(()));
        assert!(
            arrived.is_some(),
            "signal {sig} was not forwarded; got {:?}",
            self.recorded()
        );
    }

    /// Waits for litevisor's exit: its status, and the time since `since`.
    fn exit(&mut self, since: Instant) -> (ExitStatus, Duration) {
        let status = wait_exit(&mut self.guard.0, PATIENCE);
        (status, since.elapsed())
    }
}

/// Signals that do not stop litevisor, including a realtime one and SIGPIPE sent by someone else.
fn plain_signals() -> Vec<i32> {
    vec![
        libc::SIGHUP,
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGPIPE,
        libc::SIGALRM,
        libc::SIGWINCH,
        libc::SIGURG,
        libc::SIGCONT,
        libc::SIGTSTP,
        libc::SIGIO,
        libc::SIGPWR,
        libc::SIGXCPU,
        libc::SIGXFSZ,
        libc::SIGVTALRM,
        libc::SIGPROF,
        libc::SIGSTKFLT,
        libc::SIGRTMIN() + 1,
        libc::SIGRTMAX(),
    ]
}

#[test]
fn every_signal_is_forwarded_and_stop_signals_end_the_child() {
    for mode in [Mode::Direct, Mode::Pid1] {
        for stop in [libc::SIGTERM, libc::SIGINT, libc::SIGQUIT] {
            let mut r = Recorder::start(mode, &[], stop);
            if stop == libc::SIGTERM {
                for sig in plain_signals() {
                    r.send_and_expect(sig);
                }
            }
            signal(r.pid, stop);
            let (status, _) = r.exit(Instant::now());
            assert_eq!(
                status.code(),
                Some(42),
                "{mode:?}: stop signal {stop}: {:?}",
                r.recorded()
            );
            assert_eq!(r.recorded().last(), Some(&stop), "{mode:?}");
        }
    }
}

#[test]
fn a_child_ignoring_sigterm_is_killed_after_the_grace_period() {
    for mode in [Mode::Direct, Mode::Pid1] {
        let mut r = Recorder::start(mode, &["--grace", "1s"], 0);
        let sent = Instant::now();
        signal(r.pid, libc::SIGTERM);
        let (status, took) = r.exit(sent);
        assert_eq!(status.code(), Some(137), "{mode:?}: killed by SIGKILL");
        assert!(
            r.recorded().contains(&libc::SIGTERM),
            "{mode:?}: SIGTERM was forwarded first"
        );
        assert!(
            took >= Duration::from_millis(900) && took <= Duration::from_secs(3),
            "{mode:?}: grace 1s but exit took {took:?}"
        );
    }
}

#[test]
fn grace_period_can_come_from_the_environment() {
    let dir = init_support::scratch();
    let log = file_in(&dir, "signals.log");
    let log_str = init_support::path_str(&log);
    let mut cmd = litevisor(Mode::Direct, &["--", "perl", "-e", RECORDER, log_str, "0"]);
    cmd.env("LITEVISOR_GRACE", "500ms");
    let mut guard = Guard(cmd.spawn().expect("spawn"));
    let ready = ready_marker(&log);
    wait_for(PATIENCE, || ready.exists().then_some(())).expect("ready");
    let sent = Instant::now();
    signal(guard.0.id() as i32, libc::SIGTERM);
    let status = wait_exit(&mut guard.0, PATIENCE);
    let took = sent.elapsed();
    assert_eq!(status.code(), Some(137));
    assert!(
        took >= Duration::from_millis(400) && took <= Duration::from_millis(2500),
        "took {took:?}"
    );
}

#[test]
fn a_repeated_sigterm_is_forwarded_again_and_keeps_the_grace() {
    // GNU `timeout`, or a signal sent to a group and to its leader, delivers SIGTERM twice: the
    // program gets both and keeps its whole grace period.
    for mode in [Mode::Direct, Mode::Pid1] {
        let mut r = Recorder::start(mode, &["--grace", "1500ms"], 0);
        let sent = Instant::now();
        // Wait until the first one was forwarded, so the two cannot merge into one pending signal.
        r.send_and_expect(libc::SIGTERM);
        r.send_and_expect(libc::SIGTERM);
        let (status, took) = r.exit(sent);
        assert_eq!(status.code(), Some(137), "{mode:?}: killed after its grace");
        assert!(
            took >= Duration::from_millis(1400),
            "{mode:?}: the second SIGTERM cut the grace short: exit after {took:?}"
        );
    }
}

#[test]
fn sigterm_from_outside_the_namespace_reaches_pid_1() {
    let mut guard = Guard(
        litevisor(Mode::Pid1, &["--", "sleep", "1000"])
            .spawn()
            .expect("spawn"),
    );
    let pid = litevisor_pid(Mode::Pid1, &guard.0);
    // Wait for the sleep to run under litevisor, then stop it from the parent namespace.
    wait_for(PATIENCE, || {
        (!init_support::children_of(pid).is_empty()).then_some(())
    })
    .expect("child");
    let sent = Instant::now();
    signal(pid, libc::SIGTERM);
    let status = wait_exit(&mut guard.0, PATIENCE);
    assert_eq!(
        status.code(),
        Some(143),
        "sleep dies of the forwarded SIGTERM"
    );
    assert!(sent.elapsed() < Duration::from_secs(20));
}

fn context_switches(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .filter(|l| {
            l.starts_with("voluntary_ctxt_switches:")
                || l.starts_with("nonvoluntary_ctxt_switches:")
        })
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

#[test]
fn an_idle_litevisor_never_wakes_up() {
    for mode in [Mode::Direct, Mode::Pid1] {
        let mut guard = Guard(
            litevisor(mode, &["--", "sleep", "1000"])
                .spawn()
                .expect("spawn"),
        );
        let pid = litevisor_pid(mode, &guard.0);
        wait_for(PATIENCE, || {
            (!init_support::children_of(pid).is_empty()).then_some(())
        })
        .expect("child");
        std::thread::sleep(Duration::from_millis(300));
        let before = context_switches(pid);
        std::thread::sleep(Duration::from_secs(2));
        let after = context_switches(pid);
        assert_eq!(
            before,
            after,
            "{mode:?}: litevisor woke up {} times while idle",
            after - before
        );
        signal(pid, libc::SIGTERM);
        assert_eq!(
            wait_exit(&mut guard.0, PATIENCE).code(),
            Some(143),
            "{mode:?}"
        );
    }
}
