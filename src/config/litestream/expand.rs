//! Expansion before and after parsing: Go's `os.Expand` of `$VAR`/`${VAR}` over the whole text
//! (what Litestream does to the file), and `~` in paths.

use std::path::PathBuf;

/// Go's `os.Expand` over the environment, as Litestream applies it to the whole file: `${NAME}` and
/// `$NAME` (letters, digits, `_`) and the one-character shell names (`$1`, `$$`, `$@`, ...) become
/// the variable's value, empty when unset. A `$` followed by anything else stays; a malformed
/// `${...` is dropped (Go drops it too).
pub(super) fn expand_env(text: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, used) = shell_name(after);
        match name {
            Some(name) => out.push_str(&lookup(name).unwrap_or_default()),
            None if used == 0 => out.push('$'),
            None => {}
        }
        rest = &after[used..];
    }
    out.push_str(rest);
    out
}

/// The variable name after a `$`: `(Some(name), bytes used)`, `(None, 0)` when there is none (the `$`
/// stays), `(None, n)` for malformed braces (n bytes are dropped).
fn shell_name(s: &str) -> (Option<&str>, usize) {
    let special =
        |c: u8| matches!(c, b'*' | b'#' | b'$' | b'@' | b'!' | b'?' | b'-') || c.is_ascii_digit();
    let alnum = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let bytes = s.as_bytes();
    match bytes.first() {
        None => (None, 0),
        Some(b'{') => {
            if bytes.len() > 2 && special(bytes[1]) && bytes[2] == b'}' {
                return (Some(&s[1..2]), 3);
            }
            match s.find('}') {
                Some(1) => (None, 2),
                Some(end) => (Some(&s[1..end]), end + 1),
                None => (None, 1),
            }
        }
        Some(&c) if special(c) => (Some(&s[..1]), 1),
        Some(_) => {
            let len = bytes.iter().take_while(|&&c| alnum(c)).count();
            if len == 0 {
                (None, 0)
            } else {
                (Some(&s[..len]), len)
            }
        }
    }
}

/// `~` and `~/...` mean the home directory (as in Litestream); relative paths are made absolute
/// against the working directory, which is where Litestream resolves them too.
pub(super) fn expand_path(p: &str) -> PathBuf {
    let home = || std::env::var_os("HOME").map(PathBuf::from);
    let path = match (p.strip_prefix("~/"), p == "~", home()) {
        (Some(rest), _, Some(h)) => h.join(rest),
        (None, true, Some(h)) => h,
        _ => PathBuf::from(p),
    };
    std::path::absolute(&path).unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_expansion_follows_go() {
        let env = |name: &str| match name {
            "A" => Some("x".to_string()),
            "B_2" => Some("y".to_string()),
            _ => None,
        };
        assert_eq!(expand_env("$A/${B_2}/$UNSET/end", env), "x/y//end");
        assert_eq!(expand_env("cost $ 5, 100%$", env), "cost $ 5, 100%$");
        assert_eq!(expand_env("pa$$word", env), "paword");
        assert_eq!(expand_env("a${}b", env), "ab");
        assert_eq!(expand_env("${A", env), "A");
        assert_eq!(expand_env("$Ab", env), "");
        assert_eq!(expand_env("é$A€", env), "éx€");
    }
}
