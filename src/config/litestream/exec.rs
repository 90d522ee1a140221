//! The `exec` program as the run's main service, and the shell-word splitting of its command line.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use super::super::diag::{Loc, Problems};
use super::super::env::EnvBuilder;
use super::super::program::{DEFAULT_PATH, check_program};
use super::super::{
    Backoff, Database, GiveUp, Readiness, RestartPolicy, SERVICE_NAME_ENV, Service, ServiceKind,
};
use super::{EXEC_SERVICE, EXEC_STOP_GRACE};

/// `exec` as the main service: split with shell-word rules, run as-is (no shell), never restarted,
/// its exit ends the run with its status. Its output goes straight to litevisor's stdout/stderr
/// (no prefix), as under Litestream. It starts once every database is restored.
pub(super) fn exec_service(
    command: &str,
    origin: Loc,
    databases: &[Database],
    problems: &mut Problems,
) -> Option<Service> {
    let argv = match split_command(command) {
        Ok(argv) if argv.is_empty() => {
            problems.push(origin, "the command is empty");
            return None;
        }
        Ok(argv) => argv,
        Err(msg) => {
            problems.push(origin, msg);
            return None;
        }
    };
    let mut env = EnvBuilder::default();
    for (name, value) in std::env::vars_os() {
        env.set(name, value);
    }
    // As Litestream does for its child: LITESTREAM_* keys stand in for unset AWS_* ones.
    for (aws, litestream) in [
        ("AWS_ACCESS_KEY_ID", "LITESTREAM_ACCESS_KEY_ID"),
        ("AWS_SECRET_ACCESS_KEY", "LITESTREAM_SECRET_ACCESS_KEY"),
    ] {
        if env.get(aws).is_none_or(|v| v.is_empty())
            && let Some(value) = std::env::var_os(litestream).filter(|v| !v.is_empty())
        {
            env.set(aws, value);
        }
    }
    env.set(SERVICE_NAME_ENV, EXEC_SERVICE);
    let path_var = env
        .get("PATH")
        .cloned()
        .unwrap_or_else(|| DEFAULT_PATH.into());
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let command: Vec<OsString> = argv.into_iter().map(OsString::from).collect();
    if let Err(msg) = check_program(&command[0], &path_var, &cwd) {
        problems.push(origin, msg);
        return None;
    }
    Some(Service {
        name: EXEC_SERVICE.to_string(),
        defined_in: origin.file,
        kind: ServiceKind::Longrun,
        command,
        depends_on: Vec::new(),
        dependents: Vec::new(),
        restart: RestartPolicy::Never,
        backoff: Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
            jitter: 0.0,
            stable_after: Duration::from_secs(10),
            max_restarts: None,
            give_up: GiveUp::Shutdown,
        },
        main: true,
        readiness: Readiness::Started,
        ready_timeout: None,
        stop_signal: nix::sys::signal::Signal::SIGTERM,
        stop_grace: EXEC_STOP_GRACE,
        env: env.build(),
        working_dir: None,
        credentials: None,
        finish: None,
        down: None,
        stdout_to: None,
        stdin_piped: false,
        finish_timeout: None,
        log_prefix: false,
        databases: databases.iter().map(|d| d.path.clone()).collect(),
    })
}

/// Splits a command line into words like a POSIX shell, without running one: blanks separate words;
/// `'...'` is literal; inside `"..."` a backslash escapes `"`, `\`, `$` and `` ` `` (and a newline
/// disappears); outside quotes a backslash makes the next character literal. No expansion,
/// globbing or operators. Unbalanced quotes and a trailing backslash are errors.
pub(super) fn split_command(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' | '\r' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\\' => {
                match chars.next() {
                    Some('\n') => {}
                    Some(next) => word.push(next),
                    None => return Err(format!("{line:?}: ends with a lone backslash")),
                }
                in_word = true;
            }
            '\'' => {
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(ch) => word.push(ch),
                        None => return Err(format!("{line:?}: unbalanced single quote")),
                    }
                }
                in_word = true;
            }
            '"' => {
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(ch @ ('"' | '\\' | '$' | '`')) => word.push(ch),
                            Some('\n') => {}
                            Some(ch) => {
                                word.push('\\');
                                word.push(ch);
                            }
                            None => return Err(format!("{line:?}: unbalanced double quote")),
                        },
                        Some(ch) => word.push(ch),
                        None => return Err(format!("{line:?}: unbalanced double quote")),
                    }
                }
                in_word = true;
            }
            other => {
                word.push(other);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words() {
        assert_eq!(
            split_command(r#"myapp -flag "two words" 'it''s' a\ b "q\"x\\" "\n""#).unwrap(),
            ["myapp", "-flag", "two words", "its", "a b", "q\"x\\", "\\n"]
        );
        assert_eq!(split_command("  ").unwrap(), Vec::<String>::new());
        assert_eq!(
            split_command("sh -c 'echo $HOME; exit 3'").unwrap(),
            ["sh", "-c", "echo $HOME; exit 3"]
        );
        assert!(
            split_command("a 'b")
                .unwrap_err()
                .contains("unbalanced single quote")
        );
        assert!(
            split_command("a \"b")
                .unwrap_err()
                .contains("unbalanced double quote")
        );
        assert!(split_command("a \\").is_err());
        assert_eq!(split_command("''").unwrap(), [""]);
    }
}
