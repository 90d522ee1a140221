//! Reading one mapping of the tree key by key: typed values (booleans, durations, integers, sizes)
//! with errors located at `file:line:col: key.path`, duplicate keys refused, and every key left
//! unread reported at the end as ignored or unknown.

use std::path::Path;
use std::time::Duration;

use super::super::diag::{Loc, Problems};
use super::yaml::{Node, Value};
use crate::config::parse_duration;

/// One mapping being read: keys are taken as they are understood; [`Map::finish`] reports the rest.
pub(super) struct Map<'a> {
    file: &'a Path,
    prefix: String,
    entries: Vec<Option<(String, Node, Node)>>,
}

impl<'a> Map<'a> {
    /// `None` (reported) when `node` is not a mapping; an empty (null) node is an empty mapping.
    pub(super) fn new(
        file: &'a Path,
        prefix: &str,
        node: Node,
        problems: &mut Problems,
    ) -> Option<Map<'a>> {
        let entries = match node.value {
            Value::Map(entries) => entries,
            Value::Null => Vec::new(),
            other => {
                problems.push(
                    loc_at(file, node.line, node.col, prefix),
                    format!("expected a mapping, found {}", other.kind()),
                );
                return None;
            }
        };
        let mut out: Vec<Option<(String, Node, Node)>> = Vec::new();
        for (key, value) in entries {
            let name = match &key.value {
                Value::Scalar(s) => s.clone(),
                other => {
                    problems.push(
                        loc_at(file, key.line, key.col, prefix),
                        format!("expected a key name, found {}", other.kind()),
                    );
                    continue;
                }
            };
            let first = out
                .iter()
                .flatten()
                .find(|(n, _, _)| *n == name)
                .map(|(_, k, _)| k.line);
            if let Some(first_line) = first {
                problems.push(
                    loc_at(file, key.line, key.col, &join(prefix, &name)),
                    format!("set twice (first at line {first_line})"),
                );
                continue;
            }
            out.push(Some((name, key, value)));
        }
        Some(Map {
            file,
            prefix: prefix.to_string(),
            entries: out,
        })
    }

    /// Whether `key` is set and not yet taken.
    pub(super) fn has(&self, key: &str) -> bool {
        self.entries.iter().flatten().any(|(n, _, _)| n == key)
    }

    pub(super) fn path_of(&self, key: &str) -> String {
        join(&self.prefix, key)
    }

    /// Takes a key; a null value counts as absent.
    pub(super) fn take(&mut self, key: &str) -> Option<(Loc, Node)> {
        let slot = self
            .entries
            .iter_mut()
            .find(|e| e.as_ref().is_some_and(|(n, _, _)| n == key))?;
        let (name, k, v) = slot.take()?;
        let loc = loc_at(self.file, k.line, k.col, &join(&self.prefix, &name));
        match v.value {
            Value::Null => None,
            _ => Some((loc, v)),
        }
    }

    pub(super) fn text(&mut self, key: &str, problems: &mut Problems) -> Option<(Loc, String)> {
        let (loc, node) = self.take(key)?;
        match node.value {
            Value::Scalar(s) => Some((loc, s)),
            other => {
                problems.push(loc, format!("expected a value, found {}", other.kind()));
                None
            }
        }
    }

    pub(super) fn string(&mut self, key: &str, problems: &mut Problems) -> Option<String> {
        self.text(key, problems).map(|(_, s)| s)
    }

    /// YAML 1.1 booleans, as Litestream's parser reads them.
    pub(super) fn bool(&mut self, key: &str, problems: &mut Problems) -> Option<bool> {
        let (loc, s) = self.text(key, problems)?;
        match s.to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "y" => Some(true),
            "false" | "no" | "off" | "n" => Some(false),
            _ => {
                problems.push(loc, format!("{s:?} is not a boolean: use true or false"));
                None
            }
        }
    }

    /// Go durations (`500ms`, `1m30s`, `24h`).
    pub(super) fn duration(&mut self, key: &str, problems: &mut Problems) -> Option<Duration> {
        self.duration_at(key, problems).map(|(_, d)| d)
    }

    /// A Go duration with where it was set.
    pub(super) fn duration_at(
        &mut self,
        key: &str,
        problems: &mut Problems,
    ) -> Option<(Loc, Duration)> {
        let (loc, s) = self.text(key, problems)?;
        match parse_duration(&s) {
            Ok(d) => Some((loc, d)),
            Err(msg) => {
                problems.push(loc, msg);
                None
            }
        }
    }

    /// A duration Litestream requires to be more than 0 (it refuses the file otherwise).
    pub(super) fn positive_duration(
        &mut self,
        key: &str,
        problems: &mut Problems,
    ) -> Option<(Loc, Duration)> {
        let (loc, d) = self.duration_at(key, problems)?;
        if d.is_zero() {
            problems.push(loc, "must be more than 0 (Litestream refuses 0 too)");
            return None;
        }
        Some((loc, d))
    }

    pub(super) fn integer(&mut self, key: &str, problems: &mut Problems) -> Option<(Loc, u64)> {
        let (loc, s) = self.text(key, problems)?;
        match s.trim().parse::<u64>() {
            Ok(n) => Some((loc, n)),
            Err(_) => {
                problems.push(loc, format!("{s:?} is not a non-negative integer"));
                None
            }
        }
    }

    /// A byte size the way Litestream reads `part-size` (go-humanize): `5242880`, `5MB` (10^6),
    /// `5MiB` (2^20).
    pub(super) fn size(&mut self, key: &str, problems: &mut Problems) -> Option<u64> {
        let (loc, s) = self.text(key, problems)?;
        parse_size(&s).map_err(|msg| problems.push(loc, msg)).ok()
    }

    /// Reports every key nobody took: `ignored` ones with why, the rest as unknown.
    pub(super) fn finish(self, ignored: &[(&str, &str)], problems: &mut Problems) {
        for (name, key, _) in self.entries.into_iter().flatten() {
            let loc = loc_at(self.file, key.line, key.col, &join(&self.prefix, &name));
            match ignored.iter().find(|(k, _)| *k == name) {
                Some((_, why)) => problems.warn(loc, format!("ignored: {why}")),
                None => problems.warn(loc, "unknown key, ignored"),
            }
        }
    }
}

pub(super) fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

pub(super) fn loc_at(file: &Path, line: usize, col: usize, key: &str) -> Loc {
    Loc {
        file: file.to_path_buf(),
        line: (line > 0).then_some((line, col)),
        key: (!key.is_empty()).then(|| key.to_string()),
    }
}

fn parse_size(text: &str) -> Result<u64, String> {
    let bad = || format!("invalid size {text:?}: use bytes, or e.g. 5MB or 5MiB");
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let number: f64 = t[..split].parse().map_err(|_| bad())?;
    let multiplier: f64 = match t[split..].trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "ki" | "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mi" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gi" | "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => return Err(bad()),
    };
    let bytes = number * multiplier;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn sizes() {
        assert_eq!(parse_size("5MB"), Ok(5_000_000));
        assert_eq!(parse_size("5MiB"), Ok(5 * 1024 * 1024));
        assert_eq!(parse_size("1024"), Ok(1024));
        assert!(parse_size("lots").is_err());
    }
}
