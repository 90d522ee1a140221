//! A TOML document as a tree that keeps the byte span of every key and value, and a reader that walks
//! one table against a fixed set of keys. Deserializing straight into structs would stop at the first
//! bad key; this tree lets validation report every unknown key and bad value with its line.

use std::fmt;
use std::ops::Range;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use super::diag::{Loc, Problems, Source};

/// One TOML value, with spans on every nested key and value.
#[derive(Debug)]
pub enum Node {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Array(Vec<Spanned<Node>>),
    Table(Vec<(Spanned<String>, Spanned<Node>)>),
}

impl Node {
    pub fn kind(&self) -> &'static str {
        match self {
            Node::Str(_) => "a string",
            Node::Int(_) => "an integer",
            Node::Float(_) => "a float",
            Node::Bool(_) => "a boolean",
            Node::Array(_) => "an array",
            Node::Table(_) => "a table",
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Node, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a TOML value (dates and times are not used by litevisor)")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        i64::try_from(v)
            .map(Node::Int)
            .map_err(|_| E::custom("integer out of range"))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Float(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Str(v.to_string()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Node>>()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<String>>()? {
            let value = map.next_value::<Spanned<Node>>()?;
            entries.push((key, value));
        }
        Ok(Node::Table(entries))
    }
}

/// A value and its byte range in the source. Like `toml::Spanned`, but it also accepts values the
/// parser has no span for (tables only implied by a dotted header, as `services` in `[services.web]`),
/// for which `toml::Spanned` fails to deserialize; those get an empty span at offset 0.
#[derive(Debug)]
pub struct Spanned<T> {
    span: Range<usize>,
    value: T,
}

impl<T> Spanned<T> {
    pub fn span(&self) -> Range<usize> {
        self.span.clone()
    }

    pub fn get_ref(&self) -> &T {
        &self.value
    }

    pub fn into_inner(self) -> T {
        self.value
    }

    fn unspanned(value: T) -> Spanned<T> {
        Spanned { span: 0..0, value }
    }
}

// The protocol toml's deserializer speaks to request spans (serde_spanned 0.6): a struct with this name
// and fields is answered with a map of start, end and value. Pinned by Cargo.lock; the tests in this
// file fail if it changes.
const SPANNED_NAME: &str = "$__serde_spanned_private_Spanned";
const SPANNED_START: &str = "$__serde_spanned_private_start";
const SPANNED_FIELDS: &[&str] = &[
    "$__serde_spanned_private_start",
    "$__serde_spanned_private_end",
    "$__serde_spanned_private_value",
];

/// Reads the rest of a span map after its start key: start, end key, end, value key, value.
fn spanned_rest<'de, A: MapAccess<'de>, T: Deserialize<'de>>(
    mut map: A,
) -> Result<Spanned<T>, A::Error> {
    let start: usize = map.next_value()?;
    map.next_key::<de::IgnoredAny>()?
        .ok_or_else(|| de::Error::custom("span end missing"))?;
    let end: usize = map.next_value()?;
    map.next_key::<de::IgnoredAny>()?
        .ok_or_else(|| de::Error::custom("spanned value missing"))?;
    let value = map.next_value()?;
    Ok(Spanned {
        span: start..end,
        value,
    })
}

impl<'de> Deserialize<'de> for Spanned<String> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_struct(SPANNED_NAME, SPANNED_FIELDS, SpannedKeyVisitor)
    }
}

struct SpannedKeyVisitor;

impl<'de> Visitor<'de> for SpannedKeyVisitor {
    type Value = Spanned<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Spanned::unspanned(v.to_string()))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        match map.next_key::<String>()? {
            Some(key) if key == SPANNED_START => spanned_rest(map),
            _ => Err(de::Error::custom("expected a key")),
        }
    }
}

impl<'de> Deserialize<'de> for Spanned<Node> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_struct(SPANNED_NAME, SPANNED_FIELDS, SpannedNodeVisitor)
    }
}

/// Answers the span map, or any plain value (which then has no span).
struct SpannedNodeVisitor;

impl<'de> Visitor<'de> for SpannedNodeVisitor {
    type Value = Spanned<Node>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        NodeVisitor.expecting(f)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Spanned::unspanned(Node::Bool(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Spanned::unspanned(Node::Int(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        NodeVisitor.visit_u64(v).map(Spanned::unspanned)
    }

    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Spanned::unspanned(Node::Float(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Spanned::unspanned(Node::Str(v.to_string())))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        NodeVisitor.visit_seq(seq).map(Spanned::unspanned)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let Some(first) = map.next_key::<Spanned<String>>()? else {
            return Ok(Spanned::unspanned(Node::Table(Vec::new())));
        };
        if first.value == SPANNED_START {
            return spanned_rest(map);
        }
        // A table without a span of its own: `first` is its first key.
        let mut entries = vec![(first, map.next_value::<Spanned<Node>>()?)];
        while let Some(key) = map.next_key::<Spanned<String>>()? {
            entries.push((key, map.next_value::<Spanned<Node>>()?));
        }
        Ok(Spanned::unspanned(Node::Table(entries)))
    }
}

/// Parses a whole TOML document into its root table's entries, or reports the syntax error.
pub fn parse(
    src: &Source,
    problems: &mut Problems,
) -> Option<Vec<(Spanned<String>, Spanned<Node>)>> {
    match toml::from_str::<Node>(&src.text) {
        Ok(Node::Table(entries)) => Some(entries),
        Ok(other) => {
            problems.push(
                Loc::file(&src.path),
                format!("expected a table, found {}", other.kind()),
            );
            None
        }
        Err(err) => {
            let loc = Loc {
                file: src.path.clone(),
                line: err.span().map(|span| src.line_col(span.start)),
                key: None,
            };
            let message = err.message().trim().to_string();
            problems.push(loc, format!("invalid TOML: {message}"));
            None
        }
    }
}

/// A value read from a table, with where it came from (for later, cross-file checks).
#[derive(Clone, Debug)]
pub struct Located<T> {
    pub value: T,
    pub loc: Loc,
}

/// Walks the keys of one table. Each `take_*` marks a key as known; `finish` reports the rest as unknown.
pub struct TableReader<'a> {
    src: &'a Source,
    prefix: String,
    entries: Vec<(Spanned<String>, Option<Spanned<Node>>)>,
}

impl<'a> TableReader<'a> {
    /// `prefix` is the dotted path of this table (`services.web`), or empty for the root.
    pub fn new(
        src: &'a Source,
        prefix: &str,
        entries: Vec<(Spanned<String>, Spanned<Node>)>,
    ) -> Self {
        let entries = entries.into_iter().map(|(k, v)| (k, Some(v))).collect();
        TableReader {
            src,
            prefix: prefix.to_string(),
            entries,
        }
    }

    pub fn source(&self) -> &'a Source {
        self.src
    }

    pub fn path_of(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.prefix)
        }
    }

    /// Location of a span, named by a dotted key path.
    pub fn loc_at(&self, span: &Range<usize>, key: &str) -> Loc {
        self.src.loc(span.start, key)
    }

    /// Removes and returns a raw value; the location is the key's.
    pub fn take(&mut self, key: &str) -> Option<(Loc, Spanned<Node>)> {
        let path = self.path_of(key);
        let entry = self
            .entries
            .iter_mut()
            .find(|(k, v)| k.get_ref() == key && v.is_some())?;
        let loc = self.src.loc(entry.0.span().start, &path);
        entry.1.take().map(|node| (loc, node))
    }

    /// Reports every key no `take` asked for.
    pub fn finish(self, problems: &mut Problems) {
        for (key, value) in &self.entries {
            if value.is_some() {
                let path = self.path_of(key.get_ref());
                problems.push(self.src.loc(key.span().start, &path), "unknown key");
            }
        }
    }

    pub fn string(&mut self, key: &str, problems: &mut Problems) -> Option<Located<String>> {
        let (loc, node) = self.take(key)?;
        match node.into_inner() {
            Node::Str(s) => Some(Located { value: s, loc }),
            other => type_error(problems, loc, "a string", &other),
        }
    }

    pub fn bool(&mut self, key: &str, problems: &mut Problems) -> Option<Located<bool>> {
        let (loc, node) = self.take(key)?;
        match node.into_inner() {
            Node::Bool(b) => Some(Located { value: b, loc }),
            other => type_error(problems, loc, "true or false", &other),
        }
    }

    pub fn integer(&mut self, key: &str, problems: &mut Problems) -> Option<Located<i64>> {
        let (loc, node) = self.take(key)?;
        match node.into_inner() {
            Node::Int(i) => Some(Located { value: i, loc }),
            other => type_error(problems, loc, "an integer", &other),
        }
    }

    pub fn float(&mut self, key: &str, problems: &mut Problems) -> Option<Located<f64>> {
        let (loc, node) = self.take(key)?;
        match node.into_inner() {
            Node::Float(x) => Some(Located { value: x, loc }),
            Node::Int(i) => Some(Located {
                value: i as f64,
                loc,
            }),
            other => type_error(problems, loc, "a number", &other),
        }
    }

    /// A string or integer value, as text (durations and signals accept both).
    pub fn scalar_text(&mut self, key: &str, problems: &mut Problems) -> Option<Located<String>> {
        let (loc, node) = self.take(key)?;
        match node.into_inner() {
            Node::Str(s) => Some(Located { value: s, loc }),
            Node::Int(i) => Some(Located {
                value: i.to_string(),
                loc,
            }),
            other => type_error(problems, loc, "a string or an integer", &other),
        }
    }

    /// An array of strings; each element keeps its own location.
    pub fn string_list(
        &mut self,
        key: &str,
        problems: &mut Problems,
    ) -> Option<Located<Vec<Located<String>>>> {
        let (loc, node) = self.take(key)?;
        let items = match node.into_inner() {
            Node::Array(items) => items,
            other => return type_error(problems, loc, "an array of strings", &other),
        };
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, item) in items.into_iter().enumerate() {
            let item_loc = self.src.loc(
                item.span().start,
                &format!("{}[{i}]", loc.key.as_deref().unwrap_or(key)),
            );
            match item.into_inner() {
                Node::Str(s) => out.push(Located {
                    value: s,
                    loc: item_loc,
                }),
                other => {
                    ok = false;
                    problems.push(
                        item_loc,
                        format!("expected a string, found {}", other.kind()),
                    );
                }
            }
        }
        ok.then_some(Located { value: out, loc })
    }

    /// A command: an argv array, or a string for `/bin/sh -c`.
    pub fn command(&mut self, key: &str, problems: &mut Problems) -> Option<Located<CommandSpec>> {
        let (loc, node) = self.take(key)?;
        let span = node.span();
        match node.into_inner() {
            Node::Str(s) if s.trim().is_empty() => {
                problems.push(loc, "the command is empty");
                None
            }
            Node::Str(s) => Some(Located {
                value: CommandSpec::Shell(s),
                loc,
            }),
            Node::Array(items) => {
                let mut argv = Vec::with_capacity(items.len());
                for item in items {
                    match item.into_inner() {
                        Node::Str(s) => argv.push(s),
                        other => {
                            let msg = format!(
                                "expected an array of strings, found an element that is {}",
                                other.kind()
                            );
                            problems.push(self.loc_at(&span, &self.path_of(key)), msg);
                            return None;
                        }
                    }
                }
                if argv.first().is_none_or(|a| a.is_empty()) {
                    problems.push(
                        loc,
                        "the command is empty: the first element must name a program",
                    );
                    return None;
                }
                Some(Located {
                    value: CommandSpec::Argv(argv),
                    loc,
                })
            }
            other => type_error(
                problems,
                loc,
                "an argv array or a shell command string",
                &other,
            ),
        }
    }

    /// A table of string-like values (`environment`); integers, floats and booleans become text.
    pub fn string_map(
        &mut self,
        key: &str,
        problems: &mut Problems,
    ) -> Option<Located<Vec<(String, String)>>> {
        let (loc, node) = self.take(key)?;
        let entries = match node.into_inner() {
            Node::Table(entries) => entries,
            other => return type_error(problems, loc, "a table", &other),
        };
        let mut out = Vec::with_capacity(entries.len());
        for (k, v) in entries {
            let path = format!("{}.{}", self.path_of(key), k.get_ref());
            let value = match v.into_inner() {
                Node::Str(s) => s,
                Node::Int(i) => i.to_string(),
                Node::Float(x) => x.to_string(),
                Node::Bool(b) => b.to_string(),
                other => {
                    problems.push(
                        self.src.loc(k.span().start, &path),
                        format!("expected a string, found {}", other.kind()),
                    );
                    continue;
                }
            };
            out.push((k.into_inner(), value));
        }
        Some(Located { value: out, loc })
    }
}

/// A command as written: an argv array, a string for `/bin/sh -c`, a script file (`run`), or an
/// s6-rc `up`/`down` line (execline).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommandSpec {
    Argv(Vec<String>),
    Shell(String),
    Script(std::path::PathBuf),
    Execline(String),
}

fn type_error<T>(problems: &mut Problems, loc: Loc, expected: &str, found: &Node) -> Option<T> {
    problems.push(loc, format!("expected {expected}, found {}", found.kind()));
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(text: &str) -> Source {
        Source {
            path: "t.toml".into(),
            text: text.into(),
        }
    }

    #[test]
    fn keeps_spans_of_nested_keys() {
        let src = source("a = 1\n[services.web]\ncommand = \"x\"\nbogus = true\n");
        let mut problems = Problems::default();
        let root = parse(&src, &mut problems).unwrap();
        let mut reader = TableReader::new(&src, "", root);
        assert_eq!(reader.integer("a", &mut problems).unwrap().value, 1);
        let (_, services) = reader.take("services").unwrap();
        let Node::Table(services) = services.into_inner() else {
            panic!("not a table")
        };
        let (name, web) = services.into_iter().next().unwrap();
        assert_eq!(name.get_ref(), "web");
        let Node::Table(web) = web.into_inner() else {
            panic!("not a table")
        };
        let mut web = TableReader::new(&src, "services.web", web);
        let cmd = web.command("command", &mut problems).unwrap();
        assert_eq!(cmd.value, CommandSpec::Shell("x".into()));
        assert_eq!(cmd.loc.line, Some((3, 1)));
        web.finish(&mut problems);
        let err = problems.into_error().to_string();
        assert_eq!(err, "t.toml:4:1: services.web.bogus: unknown key");
    }

    #[test]
    fn syntax_errors_have_a_line() {
        let src = source("a = 1\nb = [\n");
        let mut problems = Problems::default();
        assert!(parse(&src, &mut problems).is_none());
        let err = problems.into_error().to_string();
        assert!(err.starts_with("t.toml:"), "{err}");
        assert!(err.contains("invalid TOML"), "{err}");
    }
}
