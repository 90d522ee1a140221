//! Start and stop order: dependents start only once their dependencies are ready (notification fd,
//! TCP, check command) or done (oneshot), independent services do not wait, stops run in reverse
//! dependency order, and a start-up that cannot complete fails with a clear error and a non-zero exit.

mod support;

mod supervisor_support;

use supervisor_support::*;

/// A longrun that logs "start NAME" and, on SIGTERM, "stop NAME" (after a short pause, so a wrong
/// order would show), then exits 0.
fn longrun(name: &str, extra: &str) -> String {
    format!(
        r#"
[services.{name}]
command = ["sh", "-c", "echo start {name} >> $EV; trap 'sleep 0.2; echo stop {name} >> $EV; exit 0' TERM; {extra} while :; do sleep 0.05; done"]
"#
    )
}

/// A oneshot `migrate` running the shell script `script`, and a longrun `app` depending on it
/// that logs "start app".
fn migrate_then_app(script: &str) -> String {
    format!(
        r#"
[services.migrate]
type = "oneshot"
command = ["sh", "-c", "{script}"]

[services.app]
command = ["sh", "-c", "echo start app >> $EV; exec sleep 1000"]
depends_on = ["migrate"]
"#
    )
}

#[test]
fn starts_follow_readiness_and_stops_run_in_reverse() {
    // db (ready via notification fd after 1s) <- app <- front ; side has no dependencies.
    let mut config = String::from("shutdown_timeout = \"30s\"\n");
    config.push_str(
        r#"
[services.db]
command = ["sh", "-c", "echo start db >> $EV; trap 'sleep 0.2; echo stop db >> $EV; exit 0' TERM; sleep 1; echo ready db >> $EV; echo >&3; while :; do sleep 0.05; done"]
notification_fd = 3
"#,
    );
    // Ready (notification fd) once it logged its start, so "start app" precedes "start front".
    config.push_str(&longrun("app", "echo >&3;"));
    config.push_str("depends_on = [\"db\"]\nnotification_fd = 3\n");
    config.push_str(&longrun("front", ""));
    config.push_str("depends_on = [\"app\"]\n");
    config.push_str(&longrun("side", ""));
    let s = Setup::new(&config);
    for mode in [Mode::Direct, Mode::Pid1] {
        let _ = std::fs::remove_file(s.events_path());
        let mut lv = s.start(mode, &[]);
        s.wait_event("start front");
        s.wait_event("start side");
        lv.signal(libc::SIGTERM);
        let code = lv.wait(PATIENCE);
        assert_eq!(
            code,
            0,
            "{mode:?}: clean SIGTERM stop without main exits 0\n{}",
            s.stderr()
        );

        let at = |e: &str| {
            s.position(e)
                .unwrap_or_else(|| panic!("{mode:?}: no {e:?} in {:?}", s.events()))
        };
        assert!(at("ready db") < at("start app"), "{:?}", s.events());
        assert!(at("start app") < at("start front"), "{:?}", s.events());
        // Independent: does not wait for db's readiness.
        assert!(at("start side") < at("ready db"), "{:?}", s.events());
        // Reverse order: front, then app, then db.
        assert!(at("stop front") < at("stop app"), "{:?}", s.events());
        assert!(at("stop app") < at("stop db"), "{:?}", s.events());
    }
}

/// A service `srv` (its table's lines: `srv`) and a `client` depending on it: the client starts
/// only after srv has logged `ready_event` (just before it gets ready).
fn readiness_gates_the_client(srv: &str, ready_event: &str) {
    let s = Setup::new(&format!(
        r#"
[services.srv]
{srv}

[services.client]
command = ["sh", "-c", "echo start client >> $EV; exec sleep 1000"]
depends_on = ["srv"]
"#
    ));
    let mut lv = s.start(Mode::Direct, &[]);
    s.wait_event("start client");
    let (ready, client) = (s.position(ready_event), s.position("start client"));
    assert!(ready.is_some() && ready < client, "{:?}", s.events());
    lv.stop(libc::SIGTERM, 0, &s);
}

#[test]
fn tcp_readiness_gates_the_dependent() {
    let port = support::free_port();
    readiness_gates_the_client(
        &format!(
            r#"command = ["sh", "-c", "sleep 1; echo listening >> $EV; exec busybox httpd -f -p 127.0.0.1:{port} -h $DIR"]
ready_tcp = "127.0.0.1:{port}"
ready_timeout = "30s""#
        ),
        "listening",
    );
}

#[test]
fn check_command_readiness_gates_the_dependent() {
    readiness_gates_the_client(
        r#"command = ["sh", "-c", "sleep 1; echo made flag >> $EV; touch $DIR/flag; exec sleep 1000"]
ready_command = ["test", "-e", "$DIR/flag"]"#,
        "made flag",
    );
}

#[test]
fn readiness_timeout_fails_the_start_up() {
    let s = Setup::new(
        r#"
[services.slow]
command = ["sh", "-c", "echo start slow >> $EV; exec sleep 1000"]
notification_fd = 5
ready_timeout = "1s"

[services.dependent]
command = ["sh", "-c", "echo start dependent >> $EV; exec sleep 1000"]
depends_on = ["slow"]
"#,
    );
    let mut lv = s.start(Mode::Pid1, &[]);
    let code = lv.wait(PATIENCE);
    let err = s.stderr();
    assert_ne!(code, 0, "{err}");
    assert!(
        err.contains("\"slow\" did not become ready within 1.0s")
            && err.contains("notification fd 5"),
        "the error names the service and why:\n{err}"
    );
    assert!(s.position("start slow").is_some());
    assert!(s.position("start dependent").is_none(), "{:?}", s.events());
}

#[test]
fn a_failed_oneshot_stops_the_start_up() {
    let s = Setup::new(&format!(
        "{}{}",
        migrate_then_app("echo migrating >> $EV; sleep 1; exit 3"),
        r#"
[services.other]
command = ["sh", "-c", "echo start other >> $EV; trap 'echo stop other >> $EV; exit 0' TERM; while :; do sleep 0.05; done"]
"#
    ));
    let mut lv = s.start(Mode::Direct, &[]);
    let code = lv.wait(PATIENCE);
    let err = s.stderr();
    assert_eq!(code, 1, "{err}");
    support::assert_contains(&err, "oneshot \"migrate\" failed: it exited with code 3");
    assert!(s.position("start app").is_none(), "{:?}", s.events());
    // What was started is stopped properly before litevisor exits.
    assert!(s.position("stop other").is_some(), "{:?}", s.events());
}

#[test]
fn oneshot_success_starts_the_dependent() {
    let s = Setup::new(&migrate_then_app("sleep 0.5; echo migrated >> $EV"));
    let mut lv = s.start(Mode::Direct, &[]);
    s.wait_event("start app");
    assert!(s.position("migrated") < s.position("start app"));
    lv.stop(libc::SIGINT, 0, &s);
}
