//! How a child ended, and the shell's convention for turning that into one exit code (`128 + N` for a
//! death by signal N), plus the user's optional remapping of exit codes (tini's `-e`).

use std::fmt;

/// How a reaped child ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// The process called `exit(code)`.
    Exited(i32),
    /// The process was killed by `signal`.
    Signaled { signal: i32, core_dumped: bool },
}

impl ExitStatus {
    /// Decodes a raw `waitpid` status. `None` for stop/continue reports, which are not an end.
    pub fn from_wait_status(raw: libc::c_int) -> Option<Self> {
        if libc::WIFEXITED(raw) {
            Some(Self::Exited(libc::WEXITSTATUS(raw)))
        } else if libc::WIFSIGNALED(raw) {
            Some(Self::Signaled {
                signal: libc::WTERMSIG(raw),
                core_dumped: libc::WCOREDUMP(raw),
            })
        } else {
            None
        }
    }

    /// The exit code a shell would report: the code itself, or `128 + N` for a death by signal N.
    pub fn code(self) -> i32 {
        match self {
            Self::Exited(code) => code & 0xff,
            Self::Signaled { signal, .. } => (128 + signal) & 0xff,
        }
    }

    pub fn success(self) -> bool {
        self == Self::Exited(0)
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Exited(code) => write!(f, "exited with code {code}"),
            Self::Signaled {
                signal,
                core_dumped,
            } => {
                write!(f, "killed by {}", signal_name(signal))?;
                if core_dumped {
                    f.write_str(" (core dumped)")?;
                }
                Ok(())
            }
        }
    }
}

/// `SIGTERM`, `SIGRTMIN+3`, or `signal 99` for numbers the platform does not name.
pub fn signal_name(signal: i32) -> String {
    if let Ok(named) = nix::sys::signal::Signal::try_from(signal) {
        return named.as_str().to_owned();
    }
    let (min, max) = (libc::SIGRTMIN(), libc::SIGRTMAX());
    if (min..=max).contains(&signal) {
        return format!("SIGRTMIN+{}", signal - min);
    }
    format!("signal {signal}")
}

/// Rewrites chosen exit codes, e.g. `143 -> 0` so that a Java program stopped by SIGTERM counts as a
/// clean exit. Rules are tried in order; the first whose `from` matches wins.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExitCodeMap {
    rules: Vec<(u8, u8)>,
}

impl ExitCodeMap {
    pub fn new(rules: Vec<(u8, u8)>) -> Self {
        Self { rules }
    }

    /// Parses one rule: `FROM:TO`, or `FROM` alone meaning `FROM:0`.
    pub fn parse_rule(text: &str) -> Result<(u8, u8), String> {
        let code = |s: &str| {
            s.trim()
                .parse::<u8>()
                .map_err(|_| format!("invalid exit code {s:?} in {text:?}: expected 0..=255"))
        };
        match text.split_once(':') {
            Some((from, to)) => Ok((code(from)?, code(to)?)),
            None => Ok((code(text)?, 0)),
        }
    }

    pub fn apply(&self, code: i32) -> i32 {
        self.rules
            .iter()
            .find(|(from, _)| i32::from(*from) == code)
            .map_or(code, |(_, to)| i32::from(*to))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_deaths_become_128_plus_n() {
        let killed = ExitStatus::Signaled {
            signal: libc::SIGKILL,
            core_dumped: false,
        };
        assert_eq!(killed.code(), 137);
        assert_eq!(ExitStatus::Exited(7).code(), 7);
        assert!(!killed.success());
        assert_eq!(killed.to_string(), "killed by SIGKILL");
    }

    #[test]
    fn raw_wait_statuses_decode() {
        // Encodings from the Linux ABI: exit code in bits 8..16, terminating signal in bits 0..7.
        assert_eq!(
            ExitStatus::from_wait_status(7 << 8),
            Some(ExitStatus::Exited(7))
        );
        assert_eq!(
            ExitStatus::from_wait_status(15),
            Some(ExitStatus::Signaled {
                signal: 15,
                core_dumped: false
            })
        );
        // A stopped child (0x7f in the low byte) is not an exit.
        assert_eq!(ExitStatus::from_wait_status((19 << 8) | 0x7f), None);
    }

    #[test]
    fn remap_rules_parse_and_apply_in_order() {
        assert_eq!(ExitCodeMap::parse_rule("143"), Ok((143, 0)));
        assert_eq!(ExitCodeMap::parse_rule("3:4"), Ok((3, 4)));
        assert!(ExitCodeMap::parse_rule("256").is_err());
        assert!(ExitCodeMap::parse_rule("x:1").is_err());
        let map = ExitCodeMap::new(vec![(143, 0), (3, 4), (3, 5)]);
        assert_eq!(map.apply(143), 0);
        assert_eq!(map.apply(3), 4);
        assert_eq!(map.apply(1), 1);
    }

    #[test]
    fn realtime_signals_are_named_relative_to_sigrtmin() {
        assert_eq!(signal_name(libc::SIGRTMIN() + 2), "SIGRTMIN+2");
        assert_eq!(signal_name(libc::SIGTERM), "SIGTERM");
    }
}
