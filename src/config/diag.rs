//! Configuration problems: where each one is (file, line, column, key) and the error that carries all
//! of them. Loading never stops at the first problem; every check appends here and the caller reports
//! the whole list, one per line.

use std::fmt;
use std::path::{Path, PathBuf};

/// A place in a configuration source: a TOML key, or an s6-style file of a service directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loc {
    pub file: PathBuf,
    /// 1-based line and column; `None` when the problem is about the file as a whole.
    pub line: Option<(usize, usize)>,
    /// Dotted key path (`services.web.restart`), or the s6 file name (`notification-fd`).
    pub key: Option<String>,
}

impl Loc {
    pub fn file(file: &Path) -> Loc {
        Loc {
            file: file.to_path_buf(),
            line: None,
            key: None,
        }
    }

    #[cfg(test)]
    pub fn key(file: &Path, key: &str) -> Loc {
        Loc {
            file: file.to_path_buf(),
            line: None,
            key: Some(key.to_string()),
        }
    }
}

/// One thing wrong with the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub loc: Loc,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.loc.file.display())?;
        if let Some((line, col)) = self.loc.line {
            write!(f, ":{line}:{col}")?;
        }
        if let Some(key) = &self.loc.key {
            write!(f, ": {key}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found while loading; `Display` prints one per line.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

/// Collects problems (which fail the load) and warnings (which do not) during one load.
#[derive(Debug, Default)]
pub struct Problems {
    errors: Vec<Problem>,
    warnings: Vec<Problem>,
}

impl Problems {
    /// Adds a problem; the same problem at the same place is reported once (a shared default
    /// found wrong for each of its users).
    pub fn push(&mut self, loc: Loc, message: impl Into<String>) {
        let problem = Problem {
            loc,
            message: message.into(),
        };
        if !self.errors.contains(&problem) {
            self.errors.push(problem);
        }
    }

    pub fn warn(&mut self, loc: Loc, message: impl Into<String>) {
        self.warnings.push(Problem {
            loc,
            message: message.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    pub fn len(&self) -> usize {
        self.errors.len()
    }

    pub fn take_warnings(&mut self) -> Vec<Problem> {
        std::mem::take(&mut self.warnings)
    }

    /// The problems in reading order: by file, then line (stable, so one line keeps its check order).
    pub fn into_error(mut self) -> ConfigError {
        self.errors
            .sort_by(|a, b| (&a.loc.file, a.loc.line).cmp(&(&b.loc.file, b.loc.line)));
        ConfigError {
            problems: self.errors,
        }
    }
}

/// The text of one TOML file, kept to turn byte offsets into line:column.
pub struct Source {
    pub path: PathBuf,
    pub text: String,
}

impl Source {
    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = self.text.get(..offset).unwrap_or(&self.text);
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let col = before[line_start..].chars().count() + 1;
        (line, col)
    }

    pub fn loc(&self, offset: usize, key: &str) -> Loc {
        Loc {
            file: self.path.clone(),
            line: Some(self.line_col(offset)),
            key: Some(key.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        let src = Source {
            path: "x.toml".into(),
            text: "a = 1\nbé = 2\n".into(),
        };
        assert_eq!(src.line_col(0), (1, 1));
        assert_eq!(src.line_col(6), (2, 1));
        assert_eq!(src.line_col(10), (2, 4));
    }

    #[test]
    fn problem_display_names_file_line_and_key() {
        let p = Problem {
            loc: Loc {
                file: "/etc/a.toml".into(),
                line: Some((3, 1)),
                key: Some("services.x.y".into()),
            },
            message: "unknown key".into(),
        };
        assert_eq!(p.to_string(), "/etc/a.toml:3:1: services.x.y: unknown key");
    }
}
