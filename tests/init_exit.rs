//! Tini mode, exit codes and argv: litevisor mirrors the main program's exit code (128+N for a signal
//! death), reports exec failures as 127/126 naming the program, applies `--remap-exit`/`-e`, and
//! passes argv through untouched. Every case runs both directly and as PID 1 of a PID namespace.

mod support;

mod init_support;

use init_support::{Mode, litevisor, run};
use std::os::unix::fs::PermissionsExt;

fn both(test: impl Fn(Mode)) {
    test(Mode::Direct);
    test(Mode::Pid1);
}

#[test]
fn plain_exit_code_is_mirrored() {
    both(|mode| {
        for code in ["0", "7", "255"] {
            let (got, _, err) = run(litevisor(
                mode,
                &["--", "sh", "-c", &format!("exit {code}")],
            ));
            assert_eq!(got.to_string(), code, "{mode:?}: stderr: {err}");
        }
    });
}

#[test]
fn signal_death_becomes_128_plus_n() {
    both(|mode| {
        let (code, _, _) = run(litevisor(mode, &["--", "sh", "-c", "kill -TERM $$"]));
        assert_eq!(code, 143, "{mode:?}");
        let (code, _, _) = run(litevisor(mode, &["--", "sh", "-c", "kill -KILL $$"]));
        assert_eq!(code, 137, "{mode:?}");
    });
}

#[test]
fn missing_program_exits_127_and_names_it() {
    both(|mode| {
        let (code, _, err) = run(litevisor(mode, &["--", "no-such-program-xyz", "arg"]));
        assert_eq!(code, 127, "{mode:?}: {err}");
        assert!(
            err.contains("no-such-program-xyz"),
            "{mode:?}: message should name the program: {err}"
        );
        let (code, _, err) = run(litevisor(mode, &["--", "/nonexistent/dir/prog"]));
        assert_eq!(code, 127, "{mode:?}: {err}");
        assert!(err.contains("/nonexistent/dir/prog"), "{err}");
    });
}

#[test]
fn non_executable_program_exits_126() {
    let dir = init_support::scratch();
    let script = dir.path().join("not-executable.sh");
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
    let script = init_support::path_str(&script).to_owned();
    let directory = init_support::path_str(dir.path()).to_owned();
    both(|mode| {
        let (code, _, err) = run(litevisor(mode, &["--", &script]));
        assert_eq!(code, 126, "{mode:?}: {err}");
        assert!(err.contains("not-executable.sh"), "{err}");
        let (code, _, err) = run(litevisor(mode, &["--", &directory]));
        assert_eq!(code, 126, "{mode:?}: a directory cannot be executed: {err}");
    });
}

#[test]
fn exit_codes_can_be_remapped() {
    both(|mode| {
        let term = ["--", "sh", "-c", "kill -TERM $$"];
        let (code, _, _) = run(litevisor(mode, &[&["-e", "143"][..], &term].concat()));
        assert_eq!(code, 0, "{mode:?}: -e 143 maps 143 to 0");
        let (code, _, _) = run(litevisor(
            mode,
            &[&["--remap-exit", "7:3"][..], &["--", "sh", "-c", "exit 7"]].concat(),
        ));
        assert_eq!(code, 3, "{mode:?}");
        let (code, _, _) = run(litevisor(
            mode,
            &[
                &["--remap-exit", "7:3", "-e", "9"][..],
                &["--", "sh", "-c", "exit 8"],
            ]
            .concat(),
        ));
        assert_eq!(code, 8, "{mode:?}: codes without a rule are unchanged");
    });
}

#[test]
fn argv_is_passed_verbatim() {
    let args = [
        "a b",
        "\"double\"",
        "'single'",
        "",
        "$HOME",
        "*",
        "-e",
        "--",
        "--grace",
        "tab\there",
        "new\nline",
    ];
    let expected: String = args.iter().map(|a| format!("[{a}]")).collect();
    both(|mode| {
        let mut argv = vec!["--", "printf", "[%s]"];
        argv.extend(args);
        let (code, out, err) = run(litevisor(mode, &argv));
        assert_eq!(code, 0, "{mode:?}: {err}");
        assert_eq!(out, expected, "{mode:?}");
    });
}

#[test]
fn no_program_and_no_config_is_a_usage_error() {
    let (code, _, err) = run(litevisor(Mode::Direct, &[]));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--"),
        "the message should say how to give a program: {err}"
    );
}

#[test]
fn bad_grace_is_rejected() {
    let (code, _, err) = run(litevisor(Mode::Direct, &["--grace", "soon", "--", "true"]));
    assert_eq!(code, 2, "{err}");
    let mut cmd = litevisor(Mode::Direct, &["--", "true"]);
    cmd.env("LITEVISOR_GRACE", "10x");
    let (code, _, err) = run(cmd);
    assert_ne!(
        code, 0,
        "an invalid LITEVISOR_GRACE must not be ignored: {err}"
    );
    assert!(err.contains("LITEVISOR_GRACE"), "{err}");
}
