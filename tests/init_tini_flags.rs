//! tini's flags and environment variables, with tini's meaning, through the real binary (directly and
//! as PID 1 of a PID namespace): `-s`/`TINI_SUBREAPER`, `-g`/`TINI_KILL_PROCESS_GROUP`, `-p`, `-v`
//! and `TINI_VERBOSITY`, `-w`, `-e`, `-l`, `-h`, and getopt-style clusters such as `-vvv`. The cases
//! follow tini's own behaviour tests (its `test/` directory).

mod support;

mod init_support;

use std::process::Stdio;
use std::time::Duration;

use init_support::{
    Guard, Mode, PATIENCE, litevisor, litevisor_pid, path_str, run, scratch, signal, wait_exit,
    wait_for,
};

fn both(test: impl Fn(Mode)) {
    test(Mode::Direct);
    test(Mode::Pid1);
}

/// A program that leaves an orphan behind: it exits at once, its background `sleep` is reparented
/// to litevisor, and is reaped there once litevisor stops it.
const LEAVES_AN_ORPHAN: [&str; 4] = ["--", "sh", "-c", "sleep 30 & exit 0"];

#[test]
fn w_warns_about_each_reaped_zombie_in_tinis_words() {
    both(|mode| {
        let mut args = vec!["-w"];
        args.extend(LEAVES_AN_ORPHAN);
        let (code, _, err) = run(litevisor(mode, &args));
        assert_eq!(code, 0, "{mode:?}: {err}");
        assert!(
            err.contains("Reaped zombie process with pid="),
            "{mode:?}: {err}"
        );

        let (code, _, err) = run(litevisor(mode, &LEAVES_AN_ORPHAN));
        assert_eq!(code, 0, "{mode:?}: {err}");
        assert!(!err.contains("Reaped zombie"), "{mode:?}: {err}");
    });
}

#[test]
fn v_and_tini_verbosity_set_the_log_level() {
    both(|mode| {
        let quiet = run(litevisor(mode, &["--", "true"]));
        assert_eq!((quiet.0, quiet.2.as_str()), (0, ""), "{mode:?}");

        // tini's -v count: default 1 (warnings), -v info, -vv debug, -vvv trace.
        for flags in [&["-vv"][..], &["-v", "-v"], &["-vvv"]] {
            let mut args = flags.to_vec();
            args.extend(["--", "true"]);
            let (code, _, err) = run(litevisor(mode, &args));
            assert_eq!(code, 0, "{mode:?} {flags:?}: {err}");
            assert!(
                err.contains("DEBUG") && err.contains("main program started"),
                "{mode:?} {flags:?}: {err}"
            );
        }
        let (_, _, err) = run(litevisor(mode, &["-v", "--", "true"]));
        assert!(!err.contains("DEBUG"), "{mode:?}: -v is info only: {err}");

        let mut cmd = litevisor(mode, &["--", "true"]);
        cmd.env("TINI_VERBOSITY", "3");
        let (_, _, err) = run(cmd);
        assert!(err.contains("DEBUG"), "{mode:?}: TINI_VERBOSITY=3: {err}");

        // Verbosity 0: not even the -w warnings.
        let mut args = vec!["-w"];
        args.extend(LEAVES_AN_ORPHAN);
        let mut cmd = litevisor(mode, &args);
        cmd.env("TINI_VERBOSITY", "0");
        let (code, _, err) = run(cmd);
        assert_eq!((code, err.as_str()), (0, ""), "{mode:?}: TINI_VERBOSITY=0");
    });
}

#[test]
fn e_remaps_exit_codes_like_tini() {
    both(|mode| {
        // tini's "inclusive" and "exclusive" exit code cases, on a sample of codes.
        for code in [0, 1, 42, 143, 255] {
            let c = code.to_string();
            let script = format!("exit {code}");
            let (got, _, err) = run(litevisor(mode, &["-e", &c, "--", "sh", "-c", &script]));
            assert_eq!(got, 0, "{mode:?}: -e {code}: {err}");

            let mut args: Vec<String> = (0..=255)
                .filter(|other| *other != code)
                .flat_map(|other| ["-e".to_owned(), other.to_string()])
                .collect();
            args.extend(["--", "sh", "-c", &script].map(str::to_owned));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let (got, _, err) = run(litevisor(mode, &args));
            assert_eq!(got, code, "{mode:?}: all but {code} remapped: {err}");
        }
        let (got, _, _) = run(litevisor(mode, &["-e143", "--", "sh", "-c", "kill $$"]));
        assert_eq!(got, 0, "{mode:?}: attached value");
    });
}

#[test]
fn s_and_tini_subreaper_are_accepted_and_orphans_come_to_litevisor() {
    let with = |configure: &dyn Fn(&mut std::process::Command), flags: &[&str]| {
        let mut args = flags.to_vec();
        // The subshell starts a sleep in the background and exits: that sleep is orphaned at once.
        args.extend(["--", "sh", "-c", "(sleep 1000 &); exec sleep 1001"]);
        let mut cmd = litevisor(Mode::Direct, &args);
        configure(&mut cmd);
        let mut guard = Guard(cmd.stdout(Stdio::null()).spawn().expect("spawn"));
        let lv = guard.0.id() as i32;
        // Reparented to litevisor (a subreaper), not to PID 1 of the namespace.
        let orphan = wait_for(PATIENCE, || {
            init_support::all_processes().into_iter().find(|s| {
                s.ppid == lv
                    && std::fs::read_to_string(format!("/proc/{}/cmdline", s.pid))
                        .is_ok_and(|c| c == "sleep\x001000\x00")
            })
        });
        let orphan =
            orphan.unwrap_or_else(|| panic!("{flags:?}: orphan not reparented to litevisor"));
        signal(lv, libc::SIGTERM);
        let status = wait_exit(&mut guard.0, PATIENCE);
        assert_eq!(status.code(), Some(143), "{flags:?}");
        assert!(
            wait_for(PATIENCE, || (!init_support::exists(orphan.pid))
                .then_some(()))
            .is_some(),
            "{flags:?}: orphan left behind"
        );
    };
    with(&|_| {}, &["-s"]);
    with(
        &|cmd| {
            cmd.env("TINI_SUBREAPER", "");
        },
        &[],
    );
    // As PID 1, -s is accepted too (and harmless).
    let (code, _, err) = run(litevisor(Mode::Pid1, &["-s", "--", "true"]));
    assert_eq!(code, 0, "{err}");
}

/// tini's process-group case: the program ignores SIGUSR1 and waits for a child that does not; a
/// SIGUSR1 to litevisor must reach that child (the whole group), so everything ends.
#[test]
fn g_and_tini_kill_process_group_signal_the_whole_group() {
    both(|mode| {
        let script = "trap '' USR1; (trap - USR1; exec sleep 1000); exit 0";
        let cases: [(&[&str], Option<&str>); 3] = [
            (&["-g"], None),
            (&[], Some("TINI_KILL_PROCESS_GROUP")),
            (&[], None), // litevisor's default anyway
        ];
        for (flags, env) in cases {
            let mut args = flags.to_vec();
            args.extend(["--", "sh", "-c", script]);
            let mut cmd = litevisor(mode, &args);
            if let Some(var) = env {
                cmd.env(var, "1");
            }
            let mut guard = Guard(cmd.stdout(Stdio::null()).spawn().expect("spawn"));
            let lv = litevisor_pid(mode, &guard.0);
            // Only once the child runs `sleep` has it reset SIGUSR1 to its default action.
            let sleeper = wait_for(PATIENCE, || {
                let sh = *init_support::children_of(lv).first()?;
                let child = *init_support::children_of(sh).first()?;
                std::fs::read_to_string(format!("/proc/{child}/cmdline"))
                    .is_ok_and(|c| c.starts_with("sleep\x00"))
                    .then_some(child)
            })
            .expect("the program's child");
            signal(lv, libc::SIGUSR1);
            let status = wait_exit(&mut guard.0, PATIENCE);
            assert_eq!(status.code(), Some(0), "{mode:?} {flags:?} {env:?}");
            assert!(!init_support::exists(sleeper), "{mode:?}: child survived");
        }
    });
}

/// tini's parent-death case: with `-p SIGUSR1`, killing litevisor's parent makes the kernel send
/// litevisor SIGUSR1, which it forwards to the program.
#[test]
fn p_sets_the_signal_litevisor_gets_when_its_parent_dies() {
    let dir = scratch();
    let done = dir.path().join("done");
    let program = format!(
        "trap 'echo ok > {}; exit 0' USR1; kill -KILL $LV_PARENT; sleep 30 & wait",
        path_str(&done)
    );
    // The parent is a shell that does not exec litevisor (a command follows), so the child can
    // kill it.
    let parent = format!(
        "LV_PARENT=$$ {} -p SIGUSR1 -- sh -c \"$0\"; true",
        init_support::BIN
    );
    let mut cmd = std::process::Command::new("sh");
    cmd.args(["-c", &parent, &program]).stdin(Stdio::null());
    let mut guard = Guard(cmd.spawn().expect("spawn"));
    let got = wait_for(PATIENCE, || {
        std::fs::read_to_string(&done).ok().filter(|t| t == "ok\n")
    });
    assert!(got.is_some(), "the program never got SIGUSR1");
    let _ = guard.0.wait();

    // A bad signal is a usage error.
    let (code, _, err) = run(litevisor(Mode::Direct, &["-p", "SIGBOGUS", "--", "true"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("SIGBOGUS"), "{err}");
}

#[test]
fn l_h_and_getopt_clusters() {
    both(|mode| {
        let (code, out, _) = run(litevisor(mode, &["-l"]));
        assert_eq!(code, 0, "{mode:?}");
        assert!(out.contains("Apache License"), "{mode:?}: {out}");

        let (code, out, _) = run(litevisor(mode, &["-h"]));
        assert_eq!(code, 0, "{mode:?}");
        for flag in ["-s", "-g", "-p", "-v", "-w", "-e", "-l"] {
            assert!(
                out.contains(&format!("{flag}, ")),
                "{mode:?}: {flag} in {out}"
            );
        }

        // `ENTRYPOINT ["tini", "-sgvw", "--"]` style.
        let (code, _, err) = run(litevisor(
            mode,
            &["-sgw", "-vvv", "--", "sh", "-c", "exit 5"],
        ));
        assert_eq!(code, 5, "{mode:?}: {err}");
    });
}

/// tini's signal case: SIGTERM, SIGUSR1 and SIGUSR2 sent to the init kill a program that keeps their
/// default actions, and the init exits with 128 + N.
#[test]
fn forwarded_signals_give_128_plus_n_like_tini() {
    both(|mode| {
        for sig in [libc::SIGTERM, libc::SIGUSR1, libc::SIGUSR2] {
            let mut guard = Guard(
                litevisor(mode, &["-g", "--", "sleep", "1000"])
                    .stdout(Stdio::null())
                    .spawn()
                    .expect("spawn"),
            );
            let lv = litevisor_pid(mode, &guard.0);
            wait_for(PATIENCE, || init_support::children_of(lv).first().copied())
                .expect("program started");
            std::thread::sleep(Duration::from_millis(50));
            signal(lv, sig);
            let status = wait_exit(&mut guard.0, PATIENCE);
            assert_eq!(status.code(), Some(128 + sig), "{mode:?}: signal {sig}");
        }
    });
}
