//! What the child inherits: no blocked or ignored signals (even when litevisor itself inherited some,
//! and although Rust ignores SIGPIPE), no descriptors beyond 0-2, and its own session without a TTY.

mod init_support;

use init_support::{Mode, litevisor, run, with_dirty_inheritance};

fn both(test: impl Fn(Mode)) {
    test(Mode::Direct);
    test(Mode::Pid1);
}

#[test]
fn child_starts_with_empty_signal_mask_and_default_dispositions() {
    both(|mode| {
        let mut cmd = litevisor(
            mode,
            &["--", "grep", "-E", "^Sig(Blk|Ign):", "/proc/self/status"],
        );
        with_dirty_inheritance(&mut cmd);
        let (code, out, err) = run(cmd);
        assert_eq!(code, 0, "{mode:?}: {err}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{mode:?}: {out}");
        for line in lines {
            let mask = line.split_whitespace().nth(1).unwrap_or("?");
            assert!(mask.chars().all(|c| c == '0'), "{mode:?}: child has {line}");
        }
    });
}

#[test]
fn sigpipe_kills_a_writer_silently() {
    // With SIGPIPE ignored, `yes` would see EPIPE and complain "Broken pipe" on stderr.
    both(|mode| {
        let mut cmd = litevisor(mode, &["--", "sh", "-c", "yes | head -n 1"]);
        with_dirty_inheritance(&mut cmd);
        let (code, out, err) = run(cmd);
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
