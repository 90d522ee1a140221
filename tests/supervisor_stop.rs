//! Stopping: the main service's exit code becomes litevisor's, stop signals go to whole process
//! trees (a `setsid` grandchild included) with SIGKILL after the grace, shutdown ends as soon as the
//! last process is gone, a repeated SIGTERM is forwarded without cutting the grace short, and other
//! signals are forwarded.

mod support;

mod supervisor_support;

use std::time::{Duration, Instant};

use supervisor_support::*;

#[test]
fn main_exit_code_is_litevisors() {
    for (command, expected) in [("exit 3", 3), ("kill -9 $$", 137), ("exit 0", 0)] {
        let s = Setup::new(&format!(
            r#"
[services.app]
command = ["sh", "-c", "sleep 1; {command}"]
main = true

[services.helper]
command = ["sh", "-c", "trap 'echo helper stopped >> $EV; exit 0' TERM; while :; do sleep 0.05; done"]
"#
        ));
        for mode in [Mode::Direct, Mode::Pid1] {
            let _ = std::fs::remove_file(s.events_path());
            let mut lv = s.start(mode, &[]);
            let code = lv.wait(PATIENCE);
            assert_eq!(code, expected, "{mode:?} {command}: {}", s.stderr());
            assert_eq!(s.events(), ["helper stopped"], "the rest is stopped");
        }
    }
}

#[test]
fn sigterm_gives_the_main_status_and_remap_applies() {
    let s = Setup::new(
        r#"
[services.app]
command = ["sleep", "1000"]
main = true
"#,
    );
    let mut lv = s.start(Mode::Pid1, &[]);
    wait_for(PATIENCE, || s.stderr().contains("started").then_some(())).expect("started");
    lv.stop(libc::SIGTERM, 143, &s);

    let mut lv = s.start(Mode::Pid1, &["--remap-exit", "143:0"]);
    wait_for(PATIENCE, || s.stderr().contains("started").then_some(())).expect("started");
    lv.stop(libc::SIGTERM, 0, &s);
}

/// The service ignores SIGTERM and leaves a grandchild in its own session (also ignoring SIGTERM).
const STUBBORN: &str = r#"
shutdown_timeout = "30s"
grace = "20s"

[services.stubborn]
command = ["sh", "-c", "trap '' TERM; setsid sh -c 'echo $$ > $DIR/grandchild; trap \"\" TERM; while :; do sleep 0.05; done' & echo up >> $EV; while :; do sleep 0.05; done"]
stop_grace = "1s"
"#;

#[test]
fn grace_then_sigkill_reaches_a_setsid_grandchild() {
    let s = Setup::new(STUBBORN);
    for mode in [Mode::Direct, Mode::Pid1] {
        let _ = std::fs::remove_file(s.file("grandchild"));
        let mut lv = s.start(mode, &[]);
        s.wait_event("up");
        wait_for(PATIENCE, || s.file("grandchild").exists().then_some(())).expect("grandchild");
        let started = Instant::now();
        lv.signal(libc::SIGTERM);
        let code = lv.wait(PATIENCE);
        let took = started.elapsed();
        assert_eq!(code, 0, "{mode:?}: {}", s.stderr());
        // stop_grace (1s) decides, not grace (20s) nor shutdown_timeout (30s).
        assert!(
            took < Duration::from_secs(15),
            "{mode:?}: took {took:?}\n{}",
            s.stderr()
        );
        support::assert_contains(&s.stderr(), "killing its process group");
        if mode == Mode::Direct {
            let gc: i32 = std::fs::read_to_string(s.file("grandchild"))
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            assert!(!alive(gc), "the setsid grandchild {gc} must be gone");
        }
    }
}

#[test]
fn shutdown_ends_when_the_last_process_is_gone() {
    // Default grace is 10s: a fixed sleep anywhere would show.
    let mut config = String::new();
    for i in 0..5 {
        config.push_str(&format!(
            "[services.s{i}]\ncommand = [\"sleep\", \"1000\"]\n\n"
        ));
    }
    let s = Setup::new(&config);
    let mut lv = s.start(Mode::Pid1, &[]);
    wait_for(PATIENCE, || {
        (s.stderr().matches("started").count() == 5).then_some(())
    })
    .expect("5 services started");
    let started = Instant::now();
    lv.stop(libc::SIGTERM, 0, &s);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

/// litevisor running one service, `stubborn`, that runs `on_term` on SIGTERM instead of ending,
/// under `stop_grace` and `shutdown_timeout`; started once the service is up.
fn stubborn(on_term: &str, stop_grace: &str, shutdown_timeout: &str) -> (Setup, Lv) {
    let s = Setup::new(&format!(
        r#"
shutdown_timeout = "{shutdown_timeout}"
[services.stubborn]
command = ["sh", "-c", "trap '{on_term}' TERM; echo up >> $EV; while :; do sleep 0.05; done"]
stop_grace = "{stop_grace}"
"#
    ));
    let lv = s.start(Mode::Direct, &[]);
    s.wait_event("up");
    (s, lv)
}

#[test]
fn a_repeated_sigterm_is_forwarded_and_the_grace_still_holds() {
    let (s, mut lv) = stubborn("echo term >> $EV", "2s", "60s");
    let started = Instant::now();
    let terms = |n: usize| {
        lv.signal(libc::SIGTERM);
        wait_for(PATIENCE, || {
            (s.events().iter().filter(|e| *e == "term").count() == n).then_some(())
        })
    };
    terms(1).expect("the stop signal reached the service");
    terms(2).expect("the repeated SIGTERM was forwarded to the service");
    assert_eq!(lv.wait(PATIENCE), 0, "{}", s.stderr());
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1900),
        "the repeated SIGTERM cut the 2 s stop_grace short: {took:?}; {}",
        s.stderr()
    );
    assert!(s.stderr().contains("SIGTERM again"), "{}", s.stderr());
}

#[test]
fn the_shutdown_deadline_bounds_every_grace() {
    let (s, mut lv) = stubborn("", "50s", "1s");
    let started = Instant::now();
    lv.stop(libc::SIGTERM, 0, &s);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn other_signals_go_to_the_main_service() {
    let s = Setup::new(
        r#"
[services.app]
command = ["sh", "-c", "trap 'echo usr2 >> $EV' USR2; trap 'echo usr1 >> $EV' USR1; echo up >> $EV; while :; do sleep 0.05; done"]
main = true

[services.other]
command = ["sh", "-c", "trap 'echo other usr2 >> $EV' USR2; while :; do sleep 0.05; done"]
"#,
    );
    let mut lv = s.start(Mode::Pid1, &[]);
    s.wait_event("up");
    s.wait_ready(&["app", "other"]);
    // (SIGHUP reloads the configuration in supervisor mode: see supervisor_svc.rs.)
    lv.signal(libc::SIGUSR2);
    s.wait_event("usr2");
    lv.signal(libc::SIGUSR1);
    s.wait_event("usr1");
    assert!(s.position("other usr2").is_none(), "{:?}", s.events());
    lv.signal(libc::SIGTERM);
    // sh dies of the SIGTERM: 128 + 15.
    assert_eq!(lv.wait(PATIENCE), 143, "{}", s.stderr());
}

#[test]
fn without_a_main_service_signals_go_to_every_service() {
    let s = Setup::new(
        r#"
[services.a]
command = ["sh", "-c", "trap 'echo a usr2 >> $EV' USR2; echo a up >> $EV; while :; do sleep 0.05; done"]
[services.b]
command = ["sh", "-c", "trap 'echo b usr2 >> $EV' USR2; echo b up >> $EV; while :; do sleep 0.05; done"]
"#,
    );
    let mut lv = s.start(Mode::Direct, &[]);
    s.wait_event("a up");
    s.wait_event("b up");
    s.wait_ready(&["a", "b"]);
    lv.signal(libc::SIGUSR2);
    s.wait_event("a usr2");
    s.wait_event("b usr2");
    lv.stop(libc::SIGTERM, 0, &s);
}

#[test]
fn leftover_orphans_are_terminated_before_exit() {
    // A oneshot leaves two daemons behind (re-parented to litevisor): one dies on SIGTERM, the other
    // ignores it and must get SIGKILL after `grace`.
    let s = Setup::new(
        r#"
grace = "1s"
shutdown_timeout = "30s"

[services.daemonize]
type = "oneshot"
command = ["sh", "-c", "setsid sleep 1000 & echo $! > $DIR/polite; setsid sh -c 'trap \"\" TERM; echo $$ > $DIR/rude; while :; do sleep 0.05; done' & sleep 0.2"]

[services.app]
command = ["sh", "-c", "echo up >> $EV; exec sleep 1000"]
depends_on = ["daemonize"]
"#,
    );
    let mut lv = s.start(Mode::Direct, &[]);
    s.wait_event("up");
    let pid = |name: &str| -> i32 {
        wait_for(PATIENCE, || {
            std::fs::read_to_string(s.file(name))
                .ok()
                .and_then(|t| t.trim().parse().ok())
        })
        .expect("pid file")
    };
    let (polite, rude) = (pid("polite"), pid("rude"));
    assert!(alive(polite) && alive(rude));
    let started = Instant::now();
    lv.stop(libc::SIGTERM, 0, &s);
    assert!(!alive(polite) && !alive(rude), "nothing is left behind");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "grace, not the deadline"
    );
    assert!(s.stderr().contains("leftover process"), "{}", s.stderr());
}
