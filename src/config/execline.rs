//! s6-rc's `up` and `down` files: one execline command line, which `s6-rc-compile` lexes with
//! execlineb's rules (they are not shell scripts). litevisor runs them the way s6-rc does:
//! - the common forms run without execlineb: one command line (exec'd directly), and
//!   `if [-n] [-t] { ... } rest`, `foreground { ... } rest`, `background [-d] { ... } rest`
//!   (blocks nest) through `/bin/sh` from an exact translation, every word single-quoted so
//!   nothing is expanded. A leading `with-contenv` is dropped and a script named as a program
//!   runs as [`script_argv`] says (its `with-contenv` or `/command/` shebang resolved), since
//!   litevisor never wipes the environment and the image may have no `/command`;
//! - any other execline runs as `execlineb -Pc TEXT` where execlineb is on the service's PATH;
//! - anything else is refused when the configuration is loaded, so `check` and the run agree.

use std::ffi::OsString;
use std::path::Path;

use super::program::{check_program, script_argv};

/// One execline word or block, as execlineb lexes it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Word(String),
    Open,
    Close,
}

/// A command line of the forms run without execlineb.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Cmd {
    /// A program and its arguments.
    Exec(Vec<String>),
    /// `if [-n] [-t] { cond } then`.
    If {
        negate: bool,
        zero_on_false: bool,
        cond: Box<Cmd>,
        then: Box<Cmd>,
    },
    /// `foreground { first } then`.
    Foreground(Box<Cmd>, Box<Cmd>),
    /// `background [-d] { first } then`.
    Background(Box<Cmd>, Box<Cmd>),
}

/// The argv that runs `text` (an `up`/`down` file's content) for a service whose PATH is
/// `path_var` and working directory `cwd`; `Err` says why litevisor cannot run it.
pub fn argv(text: &str, path_var: &OsString, cwd: &Path) -> Result<Vec<OsString>, String> {
    let tokens = lex(text)?;
    if tokens.is_empty() {
        return Err("empty command".to_string());
    }
    let mut rest = tokens.as_slice();
    let parsed = parse(&mut rest).and_then(|cmd| match rest.first() {
        Some(Token::Close) => Err("`}` without a matching `{`".to_string()),
        _ => Ok(cmd),
    });
    let cmd = match parsed {
        Ok(cmd) => resolve_scripts(cmd, cwd),
        Err(msg) => {
            return match check_program("execlineb".as_ref(), path_var, cwd) {
                Ok(()) => Ok(vec!["execlineb".into(), "-Pc".into(), text.into()]),
                Err(_) => Err(msg),
            };
        }
    };
    check_programs(&cmd, path_var, cwd)?;
    if let Cmd::Exec(words) = cmd {
        return Ok(words.into_iter().map(OsString::from).collect());
    }
    check_program("/bin/sh".as_ref(), path_var, cwd)?;
    Ok(vec![
        "/bin/sh".into(),
        "-c".into(),
        to_sh(&cmd, true).into(),
    ])
}

/// Each program given as a path to a script runs as [`script_argv`] says.
fn resolve_scripts(cmd: Cmd, cwd: &Path) -> Cmd {
    match cmd {
        Cmd::Exec(mut words) => {
            let program = cwd.join(&words[0]);
            if words[0].contains('/') && program.is_file() {
                let argv = script_argv(&program, false);
                if argv.len() > 1 {
                    words.splice(0..1, argv.iter().map(|a| a.to_string_lossy().into_owned()));
                }
            }
            Cmd::Exec(words)
        }
        Cmd::If {
            negate,
            zero_on_false,
            cond,
            then,
        } => Cmd::If {
            negate,
            zero_on_false,
            cond: Box::new(resolve_scripts(*cond, cwd)),
            then: Box::new(resolve_scripts(*then, cwd)),
        },
        Cmd::Foreground(a, b) => Cmd::Foreground(
            Box::new(resolve_scripts(*a, cwd)),
            Box::new(resolve_scripts(*b, cwd)),
        ),
        Cmd::Background(a, b) => Cmd::Background(
            Box::new(resolve_scripts(*a, cwd)),
            Box::new(resolve_scripts(*b, cwd)),
        ),
    }
}

/// execlineb's lexer: blanks separate words, `#` at a word's start comments out the line, `"..."`
/// quotes (with `\n`, `\t`, `\r`, `\"`, `\\`), a backslash outside quotes takes the next character
/// literally, and a bare `{` or `}` opens or closes a block.
fn lex(text: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let Some(&first) = chars.peek() else {
            return Ok(tokens);
        };
        if first == '#' {
            while chars.next_if(|c| *c != '\n').is_some() {}
            continue;
        }
        let mut word = String::new();
        let mut quoted = false;
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() {
                break;
            }
            chars.next();
            match c {
                '"' => {
                    quoted = true;
                    loop {
                        match chars.next() {
                            Some('"') => break,
                            Some('\\') => match chars.next() {
                                Some('n') => word.push('\n'),
                                Some('t') => word.push('\t'),
                                Some('r') => word.push('\r'),
                                Some('\n') => {}
                                Some(other) => word.push(other),
                                None => return Err("unbalanced double quote".to_string()),
                            },
                            Some(other) => word.push(other),
                            None => return Err("unbalanced double quote".to_string()),
                        }
                    }
                }
                '\\' => match chars.next() {
                    Some('\n') => {}
                    Some(other) => {
                        quoted = true;
                        word.push(other);
                    }
                    None => return Err("ends with a lone backslash".to_string()),
                },
                other => word.push(other),
            }
        }
        tokens.push(match word.as_str() {
            "{" if !quoted => Token::Open,
            "}" if !quoted => Token::Close,
            _ => Token::Word(word),
        });
    }
}

const RUN_WITHOUT_EXECLINEB: &str = "litevisor runs without execlineb only one command line, `if`, \
     `foreground` and `background` blocks: install execline (execlineb) in the image, or use a script";

/// One command line from `tokens`, up to the end or the `}` closing the block it is in.
fn parse(tokens: &mut &[Token]) -> Result<Cmd, String> {
    let mut words = Vec::new();
    while let Some(Token::Word(w)) = tokens.first() {
        words.push(w.clone());
        *tokens = &tokens[1..];
        // A chaining builtin takes a block next: handle it once its options are read.
        if words.len() == 1 || words[1..].iter().all(|w| w.starts_with('-')) {
            match words[0].as_str() {
                "if" | "foreground" | "background"
                    if matches!(tokens.first(), Some(Token::Open)) =>
                {
                    return parse_chain(words, tokens);
                }
                _ => {}
            }
        }
    }
    if let Some(Token::Open) = tokens.first() {
        return Err(format!(
            "a block after `{}` is execline that {RUN_WITHOUT_EXECLINEB}",
            words.first().map_or("", String::as_str)
        ));
    }
    // `with-contenv PROG...` only restores the container environment: run PROG.
    if words.first().is_some_and(|w| {
        Path::new(w)
            .file_name()
            .is_some_and(|n| n == "with-contenv")
    }) {
        words.remove(0);
    }
    if words.is_empty() {
        return Err("empty command".to_string());
    }
    Ok(Cmd::Exec(words))
}

fn parse_chain(words: Vec<String>, tokens: &mut &[Token]) -> Result<Cmd, String> {
    *tokens = &tokens[1..]; // the `{`
    let first = parse(tokens)?;
    match tokens.first() {
        Some(Token::Close) => *tokens = &tokens[1..],
        _ => return Err(format!("the block of `{}` is not closed", words[0])),
    }
    let then = Box::new(parse(tokens)?);
    let first = Box::new(first);
    let options = &words[1..];
    let bad = |o: &String| format!("`{} {o}`: {RUN_WITHOUT_EXECLINEB}", words[0]);
    match words[0].as_str() {
        "if" => {
            let (mut negate, mut zero_on_false) = (false, false);
            for o in options {
                match o.as_str() {
                    "-n" => negate = true,
                    "-t" => zero_on_false = true,
                    "-nt" | "-tn" => (negate, zero_on_false) = (true, true),
                    _ => return Err(bad(o)),
                }
            }
            Ok(Cmd::If {
                negate,
                zero_on_false,
                cond: first,
                then,
            })
        }
        "foreground" => match options.first() {
            Some(o) => Err(bad(o)),
            None => Ok(Cmd::Foreground(first, then)),
        },
        _ => match options.iter().find(|o| *o != "-d") {
            Some(o) => Err(bad(o)),
            None => Ok(Cmd::Background(first, then)),
        },
    }
}

/// Every program the line would run must exist, as for any service command.
fn check_programs(cmd: &Cmd, path_var: &OsString, cwd: &Path) -> Result<(), String> {
    match cmd {
        Cmd::Exec(words) => check_program(words[0].as_ref(), path_var, cwd).map_err(|msg| {
            if is_execline_program(&words[0]) {
                format!(
                    "{msg}: `{}` is an execline program; {RUN_WITHOUT_EXECLINEB}",
                    words[0]
                )
            } else {
                msg
            }
        }),
        Cmd::If { cond, then, .. } => {
            check_programs(cond, path_var, cwd)?;
            check_programs(then, path_var, cwd)
        }
        Cmd::Foreground(a, b) | Cmd::Background(a, b) => {
            check_programs(a, path_var, cwd)?;
            check_programs(b, path_var, cwd)
        }
    }
}

fn is_execline_program(word: &str) -> bool {
    const PROGRAMS: &[&str] = &[
        "importas",
        "import",
        "define",
        "multidefine",
        "multisubstitute",
        "backtick",
        "elglob",
        "forx",
        "forbacktickx",
        "forstdin",
        "pipeline",
        "piperw",
        "redirfd",
        "fdmove",
        "fdclose",
        "fdswap",
        "fdblock",
        "fdreserve",
        "emptyenv",
        "export",
        "unexport",
        "getpid",
        "getcwd",
        "heredoc",
        "ifelse",
        "ifte",
        "ifthenelse",
        "case",
        "loopwhilex",
        "withstdinas",
        "exec",
        "tryexec",
        "trap",
        "wait",
        "runblock",
        "shift",
        "dollarat",
        "elgetpositionals",
        "elgetopt",
        "execline-cd",
        "execline-umask",
        "posix-cd",
        "posix-umask",
        "homeof",
        "eltest",
    ];
    PROGRAMS.contains(&word)
}

/// The POSIX sh text of `cmd`; `last` = nothing runs after it, so it `exec`s its program.
fn to_sh(cmd: &Cmd, last: bool) -> String {
    match cmd {
        Cmd::Exec(words) => {
            let line = words.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" ");
            if last { format!("exec {line}") } else { line }
        }
        // execline's `if`: a crash of the condition exits 128+signal, a failure exits 1 (0 with
        // -t); -n inverts success and failure.
        Cmd::If {
            negate,
            zero_on_false,
            cond,
            then,
        } => {
            let stop = if *zero_on_false { 0 } else { 1 };
            let test = if *negate {
                format!("if ( {} ); then exit {stop}; fi", to_sh(cond, false))
            } else {
                format!(
                    "( {} ); r=$?; if [ $r -ne 0 ]; then [ $r -gt 128 ] && exit $r; exit {stop}; fi",
                    to_sh(cond, false)
                )
            };
            format!("{test}\n{}", to_sh(then, last))
        }
        Cmd::Foreground(first, then) => {
            format!("( {} )\n{}", to_sh(first, false), to_sh(then, last))
        }
        Cmd::Background(first, then) => {
            format!("( {} ) &\n{}", to_sh(first, false), to_sh(then, last))
        }
    }
}

fn quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh_of(text: &str) -> Result<String, String> {
        let tokens = lex(text)?;
        let mut rest = tokens.as_slice();
        let cmd = parse(&mut rest)?;
        assert!(rest.is_empty(), "{rest:?}");
        Ok(to_sh(&cmd, true))
    }

    #[test]
    fn lexes_like_execlineb() {
        assert_eq!(
            lex("if { mkdir -p /x } # c\nchmod \"02755\" a\\ b \"q\\\"\\n\"").unwrap(),
            [
                Token::Word("if".into()),
                Token::Open,
                Token::Word("mkdir".into()),
                Token::Word("-p".into()),
                Token::Word("/x".into()),
                Token::Close,
                Token::Word("chmod".into()),
                Token::Word("02755".into()),
                Token::Word("a b".into()),
                Token::Word("q\"\n".into()),
            ]
        );
        assert!(lex("echo \"x").is_err());
    }

    #[test]
    fn common_forms_translate_to_sh_without_expansion() {
        assert_eq!(
            sh_of("echo $HOME 'x'").unwrap(),
            "exec 'echo' '$HOME' ''\\''x'\\'''"
        );
        assert_eq!(
            sh_of("if { mkdir -p /x } chmod 02755 /x").unwrap(),
            "( 'mkdir' '-p' '/x' ); r=$?; if [ $r -ne 0 ]; then [ $r -gt 128 ] && exit $r; exit 1; fi\nexec 'chmod' '02755' '/x'"
        );
        assert_eq!(
            sh_of("foreground { background { sleep 1 } true } with-contenv echo hi").unwrap(),
            "( ( 'sleep' '1' ) &\n'true' )\nexec 'echo' 'hi'"
        );
        assert!(sh_of("importas -i X X { echo $X }").is_err());
        assert!(sh_of("if -X { true } true").is_err());
        assert!(sh_of("if { true ").is_err());
    }
}
