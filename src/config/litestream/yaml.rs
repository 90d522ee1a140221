//! The YAML document as a small tree that keeps each node's line and column, read with an event
//! parser (`saphyr-parser`). Scalars stay text until a key gives them a type, the way Go's typed
//! decoding reads them; anchors, aliases and YAML 1.1 merge keys are resolved here.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

#[derive(Clone, Debug)]
pub(super) struct Node {
    pub(super) line: usize,
    pub(super) col: usize,
    pub(super) value: Value,
}

#[derive(Clone, Debug)]
pub(super) enum Value {
    Null,
    Scalar(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Value {
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Value::Null => "nothing",
            Value::Scalar(_) => "a value",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

pub(super) type YamlError = ((usize, usize), String);

fn position(span: &Span) -> (usize, usize) {
    (span.start.line(), span.start.col() + 1)
}

/// The first document of `text` as a tree; `None` for an empty file.
pub(super) fn parse_yaml(text: &str) -> Result<Option<Node>, YamlError> {
    let mut parser = Parser::new_from_str(text);
    let mut anchors = HashMap::new();
    loop {
        match next_event(&mut parser)? {
            (Event::StreamStart | Event::DocumentStart(_) | Event::Nothing, _) => continue,
            (Event::StreamEnd | Event::DocumentEnd, _) => return Ok(None),
            (event, span) => return build(event, span, &mut parser, &mut anchors).map(Some),
        }
    }
}

fn next_event<'a>(
    parser: &mut Parser<'a, saphyr_parser::StrInput<'a>>,
) -> Result<(Event<'a>, Span), YamlError> {
    match parser.next() {
        Some(Ok(event)) => Ok(event),
        Some(Err(err)) => {
            let m = err.marker();
            Err((
                (m.line(), m.col() + 1),
                format!("invalid YAML: {}", err.info()),
            ))
        }
        None => Err(((0, 0), "invalid YAML: unexpected end".to_string())),
    }
}

fn build<'a>(
    event: Event<'a>,
    span: Span,
    parser: &mut Parser<'a, saphyr_parser::StrInput<'a>>,
    anchors: &mut HashMap<usize, Node>,
) -> Result<Node, YamlError> {
    let (line, col) = position(&span);
    let (value, anchor) = match event {
        Event::Scalar(text, style, anchor, _) => {
            let null = style == ScalarStyle::Plain
                && matches!(text.as_ref(), "" | "~" | "null" | "Null" | "NULL");
            let value = if null {
                Value::Null
            } else {
                Value::Scalar(text.into_owned())
            };
            (value, anchor)
        }
        Event::SequenceStart(anchor, _) => {
            let mut items = Vec::new();
            loop {
                match next_event(parser)? {
                    (Event::SequenceEnd, _) => break,
                    (event, span) => items.push(build(event, span, parser, anchors)?),
                }
            }
            (Value::Seq(items), anchor)
        }
        Event::MappingStart(anchor, _) => {
            let mut entries: Vec<(Node, Node)> = Vec::new();
            loop {
                let key = match next_event(parser)? {
                    (Event::MappingEnd, _) => break,
                    (event, span) => build(event, span, parser, anchors)?,
                };
                let (event, span) = next_event(parser)?;
                let value = build(event, span, parser, anchors)?;
                entries.push((key, value));
            }
            (Value::Map(merge_keys(entries)), anchor)
        }
        Event::Alias(id) => {
            return match anchors.get(&id) {
                Some(node) => Ok(node.clone()),
                None => Err(((line, col), "invalid YAML: unknown alias".to_string())),
            };
        }
        _ => return Err(((line, col), "invalid YAML: unexpected token".to_string())),
    };
    let node = Node { line, col, value };
    if anchor != 0 {
        anchors.insert(anchor, node.clone());
    }
    Ok(node)
}

/// YAML 1.1 merge keys (`<<: *defaults`), which Litestream's parser (yaml.v2) honours: the merged
/// mapping's entries are added where the key is not set explicitly.
fn merge_keys(entries: Vec<(Node, Node)>) -> Vec<(Node, Node)> {
    let is_merge = |k: &Node| matches!(&k.value, Value::Scalar(s) if s == "<<");
    if !entries.iter().any(|(k, _)| is_merge(k)) {
        return entries;
    }
    let (merges, mut own): (Vec<_>, Vec<_>) = entries.into_iter().partition(|(k, _)| is_merge(k));
    for (key, value) in merges {
        let sources = match value.value {
            Value::Map(m) => vec![m],
            Value::Seq(items) => items
                .into_iter()
                .filter_map(|n| match n.value {
                    Value::Map(m) => Some(m),
                    _ => None,
                })
                .collect(),
            // Not a mapping: keep it as an ordinary (and so unknown, reported) key.
            other => {
                own.push((
                    key,
                    Node {
                        value: other,
                        ..value
                    },
                ));
                continue;
            }
        };
        for source in sources {
            for (k, v) in source {
                let taken = own
                    .iter()
                    .any(|(o, _)| matches!((&o.value, &k.value), (Value::Scalar(a), Value::Scalar(b)) if a == b));
                if !taken {
                    own.push((k, v));
                }
            }
        }
    }
    own
}
