//! What the child inherits. Signals: exactly the state litevisor itself was started with, as under
//! tini (signals its parent ignored stay ignored, those it blocked stay blocked, whatever litevisor
//! or Rust's runtime changed for themselves does not leak), except an ignored SIGCHLD. Descriptors:
//! none beyond 0-2. Session: its own, without a TTY.

mod support;

mod init_support;

use std::os::unix::process::CommandExt;
use std::process::Command;

use init_support::{Mode, litevisor, run, scratch, with_dirty_inheritance};

fn both(test: impl Fn(Mode)) {
    test(Mode::Direct);
    test(Mode::Pid1);
}

/// The child that reports its signal state. `cat`, not `grep`: grep installs a SIGSEGV handler.
const PROBE: [&str; 3] = ["--", "cat", "/proc/self/status"];

fn bit(signal: i32) -> u64 {
    1 << (signal - 1)
}

/// (SigBlk, SigIgn) from a /proc/PID/status listing (line prefixes allowed).
fn signal_masks(out: &str) -> (u64, u64) {
    let field = |name: &str| {
        let line = out
            .lines()
            .find_map(|l| l.split_once(name).map(|(_, rest)| rest))
            .unwrap_or_else(|| panic!("no {name} line in {out:?}"));
        u64::from_str_radix(line.trim(), 16).expect("hex mask")
    };
    (field("SigBlk:"), field("SigIgn:"))
}

/// Runs the tini-mode child [`PROBE`] under `prepare`d inheritance.
fn child_masks(mode: Mode, prepare: impl Fn(&mut Command)) -> (u64, u64) {
    let mut cmd = litevisor(mode, &PROBE);
    prepare(&mut cmd);
    let (code, out, err) = run(cmd);
    assert_eq!(code, 0, "{mode:?}: {err}");
    signal_masks(&out)
}

#[test]
fn from_a_clean_parent_the_child_gets_an_empty_mask_and_default_dispositions() {
    // litevisor blocks nearly every signal and Rust ignores SIGPIPE: none of that reaches the child.
    both(|mode| {
        assert_eq!(child_masks(mode, |_| {}), (0, 0), "{mode:?}");
    });
}

#[test]
fn the_child_inherits_the_ignored_and_blocked_signals_litevisor_was_started_with() {
    both(|mode| {
        let (blocked, ignored) = child_masks(mode, with_dirty_inheritance);
        assert_eq!(
            blocked,
            bit(libc::SIGUSR1) | bit(libc::SIGHUP),
            "{mode:?}: SigBlk {blocked:x}"
        );
        assert_eq!(
            ignored,
            bit(libc::SIGPIPE) | bit(libc::SIGUSR2),
            "{mode:?}: SigIgn {ignored:x}"
        );
    });
}

#[test]
fn under_nohup_the_child_still_ignores_sighup() {
    both(|mode| {
        let plain = litevisor(mode, &PROBE);
        let mut cmd = Command::new("nohup");
        cmd.arg(plain.get_program()).args(plain.get_args());
        cmd.env_remove("LITEVISOR_LOG").env_remove("LOG_LEVEL");
        cmd.stdin(std::process::Stdio::null());
        let (code, out, err) = run(cmd);
        assert_eq!(code, 0, "{mode:?}: {err}");
        let (blocked, ignored) = signal_masks(&out);
        assert_eq!((blocked, ignored), (0, bit(libc::SIGHUP)), "{mode:?}");
    });
}

#[test]
fn tinis_signal_configuration_case() {
    // tini's test/sigconf: ignored SIGTTOU (tini ignores it too), SIGSEGV (not touched) and SIGINT
    // (forwarded); blocked SIGTTIN, SIGILL and SIGTERM: the child sees all six as they were.
    both(|mode| {
        let (blocked, ignored) = child_masks(mode, |cmd| {
            // SAFETY: only async-signal-safe calls between fork and exec.
            unsafe {
                cmd.pre_exec(|| {
                    for signal in [libc::SIGTTOU, libc::SIGSEGV, libc::SIGINT] {
                        libc::signal(signal, libc::SIG_IGN);
                    }
                    let mut set: libc::sigset_t = std::mem::zeroed();
                    libc::sigemptyset(&mut set);
                    for signal in [libc::SIGTTIN, libc::SIGILL, libc::SIGTERM] {
                        libc::sigaddset(&mut set, signal);
                    }
                    libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
                    Ok(())
                });
            }
        });
        assert_eq!(
            blocked,
            bit(libc::SIGTTIN) | bit(libc::SIGILL) | bit(libc::SIGTERM),
            "{mode:?}: SigBlk {blocked:x}"
        );
        assert_eq!(
            ignored,
            bit(libc::SIGTTOU) | bit(libc::SIGSEGV) | bit(libc::SIGINT),
            "{mode:?}: SigIgn {ignored:x}"
        );
    });
}

#[test]
fn an_ignored_sigchld_neither_hides_exits_from_litevisor_nor_reaches_the_child() {
    // With SIGCHLD ignored the kernel reaps children itself: litevisor would never learn that its
    // program ended (and waited forever); the program's own children would vanish unwaited.
    both(|mode| {
        let mut cmd = litevisor(
            mode,
            &[
                "--",
                "sh",
                "-c",
                "grep -E '^SigIgn:' /proc/self/status; exit 7",
            ],
        );
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::signal(libc::SIGCHLD, libc::SIG_IGN);
                Ok(())
            });
        }
        let (code, out, err) = run(cmd);
        assert_eq!(code, 7, "{mode:?}: {err}");
        let ignored = u64::from_str_radix(out.trim().trim_start_matches("SigIgn:").trim(), 16)
            .expect("hex mask");
        assert_eq!(ignored & bit(libc::SIGCHLD), 0, "{mode:?}: {out}");
    });
}

#[test]
fn supervised_services_inherit_the_same_signal_state() {
    both(|mode| {
        let dir = scratch();
        let config = dir.path().join("litevisor.toml");
        std::fs::write(
            &config,
            "[services.probe]\nmain = true\ncommand = [\"cat\", \"/proc/self/status\"]\n",
        )
        .expect("write config");
        let mut cmd = litevisor(mode, &["--config", config.to_str().expect("utf-8")]);
        with_dirty_inheritance(&mut cmd);
        let (code, out, err) = run(cmd);
        assert_eq!(code, 0, "{mode:?}: {err}");
        let (blocked, ignored) = signal_masks(&out);
        assert_eq!(blocked, bit(libc::SIGUSR1) | bit(libc::SIGHUP), "{mode:?}");
        assert_eq!(ignored, bit(libc::SIGPIPE) | bit(libc::SIGUSR2), "{mode:?}");
    });
}

#[test]
fn sigpipe_kills_a_writer_silently() {
    // Rust's runtime ignores SIGPIPE in litevisor; had that leaked, `yes` would see EPIPE and
    // complain "Broken pipe" on stderr.
    both(|mode| {
        let (code, out, err) = run(litevisor(mode, &["--", "sh", "-c", "yes | head -n 1"]));
        assert_eq!(code, 0, "{mode:?}: {err}");
        assert_eq!(out, "y\n");
        assert!(
            err.is_empty(),
            "{mode:?}: yes should die of SIGPIPE without a message: {err}"
        );
    });
}

#[test]
fn no_descriptor_leaks_into_the_child() {
    both(|mode| {
        // litevisor itself inherits descriptor 7 without close-on-exec; the child must not.
        let mut cmd = litevisor(mode, &["--", "ls", "-l", "/proc/self/fd/"]);
        with_dirty_inheritance(&mut cmd);
        let (code, out, err) = run(cmd);
        assert_eq!(code, 0, "{mode:?}: {err}");
        let mut fds = Vec::new();
        for line in out.lines().filter(|l| l.contains(" -> ")) {
            let (left, target) = line.split_once(" -> ").unwrap();
            let fd: i32 = left.split_whitespace().last().unwrap().parse().unwrap();
            // ls's own handle on the directory it is listing is allowed.
            let own_listing = target.starts_with("/proc/") && target.ends_with("/fd");
            if !own_listing {
                fds.push((fd, target.to_owned()));
            }
        }
        let unexpected: Vec<_> = fds.iter().filter(|(fd, _)| *fd > 2).collect();
        assert!(
            unexpected.is_empty(),
            "{mode:?}: leaked {unexpected:?}\n{out}"
        );
        assert!(
            fds.iter().any(|(fd, _)| *fd == 1),
            "{mode:?}: listing looks wrong: {out}"
        );
    });
}

#[test]
fn without_a_tty_the_child_gets_its_own_session() {
    both(|mode| {
        let (code, out, err) = run(litevisor(mode, &["--", "sh", "-c", "cat /proc/$$/stat"]));
        assert_eq!(code, 0, "{err}");
        let stat = init_support::parse_stat(&out).expect("stat line");
        assert_eq!(
            stat.session, stat.pid,
            "{mode:?}: child should lead a new session: {out}"
        );
        assert_eq!(stat.pgrp, stat.pid, "{mode:?}: {out}");
    });
}
