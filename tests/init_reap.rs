//! Reaping and clean-up: orphans re-parented to litevisor (as PID 1 or as subreaper) are reaped as
//! they exit, and whatever the main program leaves behind is terminated (SIGTERM, then SIGKILL after
//! the grace period) before litevisor exits with the main program's code.

mod support;

mod init_support;

use init_support::{
    Guard, Mode, PATIENCE, children_of, exists, file_in, litevisor, litevisor_pid, signal, stat,
    wait_exit, wait_for,
};
use std::time::{Duration, Instant};

/// Makes `$ARGV[0]` orphans: each is forked by a short-lived intermediate, so it is re-parented to
/// litevisor, and blocks reading a pipe whose last writer is this (main) process. SIGUSR1 closes that
/// writer, so all orphans exit at once. Creates `$ARGV[1]` when all are made.
const ORPHAN_MAKER: &str = r#"
use POSIX ();
my ($count, $ready) = @ARGV;
pipe(my $r, my $w) or die "pipe: $!";
for (1 .. $count) {
    my $p = fork() // die "fork: $!";
    if ($p == 0) {
        my $q = fork() // POSIX::_exit(1);
        if ($q == 0) { close $w; my $b; sysread($r, $b, 1); POSIX::_exit(0); }
        POSIX::_exit(0);
    }
    waitpid($p, 0);
}
close $r;
$SIG{USR1} = sub { close $w; };
open(my $f, '>', $ready) or die; close $f;
while (1) { sleep 1 }
"#;

fn orphans_are_reaped(mode: Mode) {
    const ORPHANS: usize = 1000;
    let dir = init_support::scratch();
    let ready = file_in(&dir, "ready");
    let count = ORPHANS.to_string();
    let args = [
        "--",
        "perl",
        "-e",
        ORPHAN_MAKER,
        &count,
        init_support::path_str(&ready),
    ];
    let mut guard = Guard(litevisor(mode, &args).spawn().expect("spawn"));
    let pid = litevisor_pid(mode, &guard.0);
    wait_for(Duration::from_secs(180), || ready.exists().then_some(()))
        .expect("orphans were not made");

    // All orphans are now litevisor's children (plus the main program itself).
    let adopted = wait_for(PATIENCE, || {
        let n = children_of(pid).len();
        (n > ORPHANS).then_some(n)
    });
    assert!(
        adopted.is_some(),
        "{mode:?}: orphans were not re-parented: {} children",
        children_of(pid).len()
    );

    signal(pid, libc::SIGUSR1); // forwarded to the main program, which releases the orphans
    let leftovers = wait_for(Duration::from_secs(120), || {
        let kids = children_of(pid);
        (kids.len() == 1).then_some(kids)
    });
    let kids = children_of(pid);
    let zombies = kids
        .iter()
        .filter(|p| stat(**p).is_some_and(|s| s.state == 'Z'))
        .count();
    assert!(
        leftovers.is_some(),
        "{mode:?}: {} children remain ({zombies} zombies) after the orphans exited",
        kids.len()
    );
    assert_eq!(zombies, 0, "{mode:?}");
    assert!(
        stat(kids[0]).is_some_and(|s| s.state != 'Z'),
        "{mode:?}: only the main program is left"
    );

    signal(pid, libc::SIGTERM);
    let status = wait_exit(&mut guard.0, PATIENCE);
    assert_eq!(status.code(), Some(143), "{mode:?}");
}

#[test]
fn a_thousand_orphans_are_reaped_as_subreaper() {
    orphans_are_reaped(Mode::Direct);
}

#[test]
fn a_thousand_orphans_are_reaped_as_pid_1() {
    orphans_are_reaped(Mode::Pid1);
}

fn read_pid(path: &std::path::Path) -> i32 {
    let text = wait_for(PATIENCE, || {
        std::fs::read_to_string(path)
            .ok()
            .filter(|t| t.ends_with('\n'))
    });
    text.expect("pid file").trim().parse().expect("pid")
}

#[test]
fn processes_left_by_the_main_program_are_terminated() {
    for mode in [Mode::Direct, Mode::Pid1] {
        let dir = init_support::scratch();
        let (grouped, detached) = (file_in(&dir, "grouped"), file_in(&dir, "detached"));
        // One leftover in the main program's group, one that escaped into its own session.
        let script = format!(
            "sleep 1000 & echo $! > {g}.tmp; mv {g}.tmp {g}; \
             setsid sleep 1000 & echo $! > {d}.tmp; mv {d}.tmp {d}; \
             while [ ! -d /proc/$(cat {d}) ]; do sleep 0.05; done; exit 3",
            g = grouped.display(),
            d = detached.display()
        );
        let started = Instant::now();
        let mut guard = Guard(
            litevisor(mode, &["--grace", "60s", "--", "sh", "-c", &script])
                .spawn()
                .unwrap(),
        );
        let (g, d) = (read_pid(&grouped), read_pid(&detached));
        let status = wait_exit(&mut guard.0, PATIENCE);
        assert_eq!(status.code(), Some(3), "{mode:?}: the main program's code");
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{mode:?}: leftovers die of SIGTERM, no need to wait for the grace period: {:?}",
            started.elapsed()
        );
        if mode == Mode::Direct {
            // Pids from inside a namespace mean nothing out here; there the namespace is gone anyway.
            assert!(!exists(g) && !exists(d), "{mode:?}: leftovers still exist");
        }
    }
}

#[test]
fn a_leftover_ignoring_sigterm_is_killed_after_the_grace_period() {
    for mode in [Mode::Direct, Mode::Pid1] {
        let dir = init_support::scratch();
        let marker = file_in(&dir, "ignoring");
        let script = format!(
            "sh -c 'trap \"\" TERM; echo $$ > {m}.tmp; mv {m}.tmp {m}; exec sleep 1000' & \
             while [ ! -e {m} ]; do sleep 0.05; done; exit 0",
            m = marker.display()
        );
        let mut guard = Guard(
            litevisor(mode, &["--grace", "1s", "--", "sh", "-c", &script])
                .spawn()
                .unwrap(),
        );
        let leftover = read_pid(&marker);
        let main_gone = Instant::now();
        let status = wait_exit(&mut guard.0, PATIENCE);
        let took = main_gone.elapsed();
        assert_eq!(status.code(), Some(0), "{mode:?}");
        assert!(
            took >= Duration::from_millis(700),
            "{mode:?}: the leftover got its grace period: {took:?}"
        );
        assert!(
            took <= Duration::from_secs(10),
            "{mode:?}: then SIGKILL: {took:?}"
        );
        if mode == Mode::Direct {
            assert!(!exists(leftover), "the leftover was killed");
        }
    }
}
