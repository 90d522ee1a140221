//! A service's environment: the container's own (unless `clear_env`), then each `env_files` entry in
//! order, then the `environment` table, each layer overriding the one before. Also the dotenv-style
//! parser for env files: `KEY=value`, optional `export `, `#` comments, '...' literal and "..." quoted
//! values with `\n \t \" \\ \$` escapes. No variable interpolation.

use std::ffi::OsString;
use std::path::Path;

use super::Environment;
use super::diag::{Loc, Problems};

pub fn check_name(name: &str) -> Result<(), String> {
    let mut bytes = name.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    if !first_ok || !bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(format!(
            "invalid environment variable name {name:?}: use letters, digits and '_'"
        ));
    }
    Ok(())
}

/// Reads one env file; every bad line is reported with its line number.
pub fn read_env_file(path: &Path, problems: &mut Problems) -> Option<Vec<(String, String)>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) => {
            problems.push(Loc::file(path), format!("cannot read env file: {err}"));
            return None;
        }
    };
    let mut vars = Vec::new();
    for (i, line) in text.lines().enumerate() {
        match parse_line(line) {
            Ok(Some(pair)) => vars.push(pair),
            Ok(None) => {}
            Err(msg) => problems.push(
                Loc {
                    file: path.to_path_buf(),
                    line: Some((i + 1, 1)),
                    key: None,
                },
                msg,
            ),
        }
    }
    Some(vars)
}

fn parse_line(line: &str) -> Result<Option<(String, String)>, String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let line = line.strip_prefix("export ").map_or(line, str::trim_start);
    let (name, raw) = line.split_once('=').ok_or("expected NAME=value")?;
    let name = name.trim_end();
    check_name(name)?;
    Ok(Some((name.to_string(), value(raw.trim_start())?)))
}

fn value(raw: &str) -> Result<String, String> {
    if let Some(rest) = raw.strip_prefix('\'') {
        let end = rest.find('\'').ok_or("unterminated '...' value")?;
        trailing_comment_only(&rest[end + 1..])?;
        return Ok(rest[..end].to_string());
    }
    if let Some(rest) = raw.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = rest.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    trailing_comment_only(&rest[i + 1..])?;
                    return Ok(out);
                }
                '\\' => match chars.next().map(|(_, c)| c) {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some(c @ ('"' | '\\' | '$')) => out.push(c),
                    Some(c) => return Err(format!("unknown escape \\{c} in \"...\" value")),
                    None => break,
                },
                c => out.push(c),
            }
        }
        return Err("unterminated \"...\" value".into());
    }
    // Unquoted: up to a ` #` comment, trailing spaces dropped.
    let end = raw.find(" #").unwrap_or(raw.len());
    Ok(raw[..end].trim_end().to_string())
}

fn trailing_comment_only(rest: &str) -> Result<(), String> {
    let rest = rest.trim();
    if rest.is_empty() || rest.starts_with('#') {
        Ok(())
    } else {
        // The text itself is not shown: env files hold secrets.
        Err("unexpected text after the closing quote".to_string())
    }
}

/// Layers variables; a later value replaces an earlier one in place.
#[derive(Default)]
pub struct EnvBuilder(Vec<(OsString, OsString)>);

impl EnvBuilder {
    pub fn set(&mut self, name: impl Into<OsString>, value: impl Into<OsString>) {
        let (name, value) = (name.into(), value.into());
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name, value)),
        }
    }

    pub fn get(&self, name: &str) -> Option<&OsString> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    pub fn build(self) -> Environment {
        Environment(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotenv_lines() {
        assert_eq!(parse_line("A=1"), Ok(Some(("A".into(), "1".into()))));
        assert_eq!(
            parse_line("  export B = two words # note"),
            Ok(Some(("B".into(), "two words".into())))
        );
        assert_eq!(
            parse_line("C='$x # y'"),
            Ok(Some(("C".into(), "$x # y".into())))
        );
        assert_eq!(
            parse_line(r#"D="a\n\"b\" \$c" # c"#),
            Ok(Some(("D".into(), "a\n\"b\" $c".into())))
        );
        assert_eq!(parse_line("E="), Ok(Some(("E".into(), "".into()))));
        assert_eq!(parse_line("# comment"), Ok(None));
        assert_eq!(parse_line(""), Ok(None));
        assert!(parse_line("novalue").is_err());
        assert!(parse_line("1A=x").is_err());
        assert!(parse_line("A='open").is_err());
        assert!(parse_line("A=\"x\" y").is_err());
    }

    #[test]
    fn later_layers_replace_in_place() {
        let mut env = EnvBuilder::default();
        env.set("A", "1");
        env.set("B", "2");
        env.set("A", "3");
        let env = env.build();
        assert_eq!(
            env.vars(),
            [("A".into(), "3".into()), ("B".into(), "2".into())]
        );
        assert_eq!(
            format!("{env:?}"),
            r#"{"A", "B"}"#,
            "values are never shown"
        );
    }
}
