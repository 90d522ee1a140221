//! Restarts: exponential back-off (the delays grow), `max_restarts` really bounds the restarts and
//! `give_up` decides what follows, a stable run resets the count, `finish` gets s6's arguments.

mod support;

mod supervisor_support;

use std::time::Duration;

use supervisor_support::*;

fn start_times(s: &Setup) -> Vec<f64> {
    s.events()
        .iter()
        .filter_map(|e| e.strip_prefix("start "))
        .map(|t| t.parse::<f64>().expect("timestamp"))
        .collect()
}

#[test]
fn back_off_grows_and_gives_up_after_max_restarts() {
    let s = Setup::new(
        r#"
[services.crash]
command = ["sh", "-c", "echo start $(date +%s.%N) >> $EV; exit 4"]
restart_delay = "300ms"
restart_delay_max = "10s"
restart_jitter = 0.0
max_restarts = 3
give_up = "shutdown"

[services.steady]
command = ["sleep", "1000"]
"#,
    );
    let mut lv = s.start(Mode::Direct, &[]);
    let code = lv.wait(PATIENCE);
    let err = s.stderr();
    // Give-up with "shutdown" stops the container with the service's last exit code.
    assert_eq!(code, 4, "{err}");
    let starts = start_times(&s);
    assert_eq!(
        starts.len(),
        4,
        "1 run + exactly 3 restarts: {starts:?}\n{err}"
    );
    for (n, delay) in [(1, 300), (2, 600), (3, 1200)] {
        let line = format!("service \"crash\" exited with code 4; restart {n}/3 in {delay}ms");
        assert!(err.contains(&line), "missing {line:?} in:\n{err}");
    }
    let gaps: Vec<f64> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    for (gap, min) in gaps.iter().zip([0.3, 0.6, 1.2]) {
        assert!(
            *gap >= min * 0.95,
            "gap {gap} shorter than the delay {min}: {gaps:?}"
        );
    }
    // The logged delays above are exact; the observed gaps include spawn time, so only compare the
    // ends (0.9 s apart) to stay robust on a loaded machine.
    assert!(gaps[0] < gaps[2], "delays grow: {gaps:?}");
    assert!(err.contains("giving up after 3 restarts"), "{err}");
}

#[test]
fn stay_down_keeps_the_others_running() {
    let s = Setup::new(
        r#"
[services.crash]
command = ["sh", "-c", "echo crash >> $EV; exit 1"]
restart_delay = "50ms"
max_restarts = 1
give_up = "stay-down"

[services.steady]
command = ["sh", "-c", "echo start steady >> $EV; exec sleep 1000"]
"#,
    );
    let mut lv = s.start(Mode::Direct, &[]);
    wait_for(PATIENCE, || s.stderr().contains("giving up").then_some(())).expect("crash gives up");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        lv.child.try_wait().unwrap().is_none(),
        "litevisor keeps running"
    );
    assert_eq!(s.events().iter().filter(|e| *e == "crash").count(), 2);
    lv.stop(libc::SIGTERM, 0, &s);
}

#[test]
fn a_stable_run_resets_the_restart_count() {
    // Each run lasts longer than stable_after, so max_restarts = 1 is never reached and the delay
    // stays at its initial value.
    let s = Setup::new(
        r#"
[services.flaky]
command = ["sh", "-c", "echo start $(date +%s.%N) >> $EV; sleep 0.6; exit 1"]
restart_delay = "100ms"
restart_jitter = 0.0
stable_after = "500ms"
max_restarts = 1
"#,
    );
    let mut lv = s.start(Mode::Direct, &[]);
    wait_for(PATIENCE, || (start_times(&s).len() >= 4).then_some(()))
        .unwrap_or_else(|| panic!("not restarted 3 times:\n{}", s.stderr()));
    assert!(lv.child.try_wait().unwrap().is_none(), "{}", s.stderr());
    lv.stop(libc::SIGTERM, 0, &s);
    let err = s.stderr();
    assert!(!err.contains("giving up"), "{err}");
    assert!(!err.contains("restart 2/1"), "the count resets: {err}");
    assert!(err.matches("restart 1/1 in 100ms").count() >= 3, "{err}");
}

#[test]
fn finish_gets_exit_code_or_256_and_the_signal() {
    let s = Setup::new(
        r#"
[services.code]
command = ["sh", "-c", "exit 3"]
restart = "never"
finish = ["sh", "-c", "echo finish code $1 $2 $3 >> $EV", "finish"]

[services.killed]
command = ["sh", "-c", "kill -9 $$"]
restart = "never"
finish = ["sh", "-c", "echo finish killed $1 $2 $3 >> $EV", "finish"]

[services.restarted]
command = ["sh", "-c", "echo run >> $EV; exit 0"]
restart = "on-failure"
finish = ["sh", "-c", "echo finish restarted $1 $2 >> $EV", "finish"]
"#,
    );
    let mut lv = s.start(Mode::Direct, &[]);
    // With no main service, the container ends once every service ended; the exit code is the first
    // failure's.
    let code = lv.wait(PATIENCE);
    let events = s.events();
    assert!(
        events.contains(&"finish code 3 0 code".to_owned()),
        "{events:?}"
    );
    assert!(
        events.contains(&"finish killed 256 9 killed".to_owned()),
        "{events:?}"
    );
    assert!(
        events.contains(&"finish restarted 0 0".to_owned()),
        "{events:?}"
    );
    assert!(code == 3 || code == 137, "first failure's code, got {code}");
}

#[test]
fn finish_runs_before_the_restart_and_is_time_bounded() {
    let s = Setup::new(
        r#"
[services.svc]
command = ["sh", "-c", "echo run >> $EV; exit 2"]
restart_delay = "50ms"
max_restarts = 1
give_up = "shutdown"
finish = ["sh", "-c", "echo finish >> $EV; exec sleep 1000"]
finish_timeout = "300ms"
"#,
    );
    let mut lv = s.start(Mode::Direct, &[]);
    assert_eq!(lv.wait(PATIENCE), 2, "{}", s.stderr());
    assert_eq!(s.events(), ["run", "finish", "run", "finish"]);
    support::assert_contains(&s.stderr(), "finish program still running");
}
