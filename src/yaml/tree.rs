//! A small YAML document tree that remembers where every node came from.
//!
//! cgqos's files need things serde-based loaders do not give together: line numbers on every
//! key (errors must name file, line and key after anchors, merges and overlays), merge keys
//! whose value is a list of aliases (`<<: [ *a, *b ]`), duplicate keys as errors, and a hard
//! bound on alias expansion (a root tool must not be taken down by "billion laughs").
//! So we build the tree ourselves from `saphyr-parser`'s event stream.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

/// Total nodes a document may expand to, aliases included. Real model.yaml files are a few
/// thousand nodes; this leaves two orders of magnitude of headroom.
pub const NODE_BUDGET: usize = 500_000;
/// Nesting depth limit (the parser itself recurses on neither, but our merge does).
pub const MAX_DEPTH: usize = 128;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub file: Arc<str>,
    pub line: usize,
    pub col: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.col)
    }
}

#[derive(Clone, Debug)]
pub struct Node {
    pub value: Value,
    pub at: Location,
    /// Number of nodes in this subtree, for the expansion budget.
    size: usize,
}

#[derive(Clone, Debug)]
pub enum Value {
    /// A scalar and whether it was quoted (quoted scalars are always strings).
    Scalar {
        text: String,
        quoted: bool,
    },
    Seq(Vec<Node>),
    /// Entries in document order; keys are scalars (complex keys are rejected).
    Map(Vec<(Node, Node)>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{at}: {message}")]
pub struct YamlError {
    pub at: Location,
    pub message: String,
}

impl Node {
    pub fn kind(&self) -> &'static str {
        match &self.value {
            Value::Scalar { .. } if self.is_null() => "null",
            Value::Scalar { quoted: true, .. } => "a string",
            Value::Scalar { .. } => "a scalar",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(&self.value, Value::Scalar { text, quoted: false } if matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.value {
            Value::Seq(s) => Some(s),
            _ => None,
        }
    }

    /// The value of `key` in a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }

    pub fn error(&self, message: impl Into<String>) -> YamlError {
        YamlError {
            at: self.at.clone(),
            message: message.into(),
        }
    }

    /// Merges `over` onto `self`: mappings key by key (recursively), anything else replaced.
    pub fn overlay(&mut self, over: &Node) {
        match (&mut self.value, &over.value) {
            (Value::Map(base), Value::Map(top)) => {
                for (k, v) in top {
                    match base.iter_mut().find(|(bk, _)| bk.as_str() == k.as_str()) {
                        Some((_, bv)) => bv.overlay(v),
                        None => base.push((k.clone(), v.clone())),
                    }
                }
            }
            _ => *self = over.clone(),
        }
    }

    pub fn scalar(text: &str, at: Location) -> Node {
        Node {
            value: Value::Scalar {
                text: text.to_string(),
                quoted: true,
            },
            at,
            size: 1,
        }
    }
}

/// Parses one YAML document. An empty file or a file of only comments is an error: a
/// configuration file that says nothing is a mistake, not a default. (The message names
/// board files' `chromeos` key whatever the file: kept as it always read.)
pub fn parse(file: &str, text: &str) -> Result<Node, YamlError> {
    let file: Arc<str> = Arc::from(file);
    let mut b = Builder {
        file: file.clone(),
        anchors: HashMap::new(),
        stack: Vec::new(),
        root: None,
        budget: NODE_BUDGET,
        documents: 0,
    };
    let mut parser = Parser::new_from_str(text);
    while let Some(item) = parser.next_event() {
        let (event, span) = item.map_err(|e| YamlError {
            at: Location {
                file: file.clone(),
                line: e.marker().line(),
                col: e.marker().col() + 1,
            },
            message: format!("YAML syntax error: {}", e.info()),
        })?;
        b.event(event, span)?;
    }
    b.root.ok_or_else(|| YamlError {
        at: Location {
            file,
            line: 1,
            col: 1,
        },
        message: "the file is empty (expected a YAML mapping with a `chromeos` key)".into(),
    })
}

enum Frame {
    Seq {
        anchor: usize,
        node: Node,
    },
    Map {
        anchor: usize,
        node: Node,
        pending_key: Option<Node>,
        /// Values of `<<` keys, applied when the mapping ends (explicit keys win).
        merges: Vec<Node>,
    },
}

struct Builder {
    file: Arc<str>,
    anchors: HashMap<usize, Node>,
    stack: Vec<Frame>,
    root: Option<Node>,
    budget: usize,
    documents: usize,
}

impl Builder {
    fn loc(&self, span: &Span) -> Location {
        Location {
            file: self.file.clone(),
            line: span.start.line(),
            col: span.start.col() + 1,
        }
    }

    fn charge(&mut self, n: usize, at: &Location) -> Result<(), YamlError> {
        if n > self.budget {
            return Err(YamlError {
                at: at.clone(),
                message: format!(
                    "anchors and aliases expand to more than {NODE_BUDGET} nodes; refusing (recursive or exponential aliases?)"
                ),
            });
        }
        self.budget -= n;
        Ok(())
    }

    fn event(&mut self, event: Event<'_>, span: Span) -> Result<(), YamlError> {
        let at = self.loc(&span);
        match event {
            Event::DocumentStart(_) => {
                self.documents += 1;
                if self.documents > 1 {
                    return Err(YamlError {
                        at,
                        message: "more than one YAML document in the file (expected one)".into(),
                    });
                }
            }
            Event::Scalar(text, style, anchor, _tag) => {
                self.charge(1, &at)?;
                let node = Node {
                    value: Value::Scalar {
                        text: text.into_owned(),
                        quoted: !matches!(style, ScalarStyle::Plain),
                    },
                    at,
                    size: 1,
                };
                self.finish(node, anchor)?;
            }
            Event::Alias(id) => {
                let Some(node) = self.anchors.get(&id).cloned() else {
                    return Err(YamlError {
                        at,
                        message: "alias to an unknown anchor".into(),
                    });
                };
                self.charge(node.size, &at)?;
                self.finish(node, 0)?;
            }
            Event::SequenceStart(anchor, _) => {
                self.charge(1, &at)?;
                self.push_frame(Frame::Seq {
                    anchor,
                    node: Node {
                        value: Value::Seq(Vec::new()),
                        at,
                        size: 1,
                    },
                })?;
            }
            Event::MappingStart(anchor, _) => {
                self.charge(1, &at)?;
                self.push_frame(Frame::Map {
                    anchor,
                    node: Node {
                        value: Value::Map(Vec::new()),
                        at,
                        size: 1,
                    },
                    pending_key: None,
                    merges: Vec::new(),
                })?;
            }
            Event::SequenceEnd => {
                if let Some(Frame::Seq { anchor, node }) = self.stack.pop() {
                    self.finish(node, anchor)?;
                }
            }
            Event::MappingEnd => {
                if let Some(Frame::Map {
                    anchor,
                    mut node,
                    merges,
                    ..
                }) = self.stack.pop()
                {
                    apply_merges(&mut node, merges)?;
                    self.finish(node, anchor)?;
                }
            }
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => {}
        }
        Ok(())
    }

    fn push_frame(&mut self, frame: Frame) -> Result<(), YamlError> {
        if self.stack.len() >= MAX_DEPTH {
            let at = match &frame {
                Frame::Seq { node, .. } | Frame::Map { node, .. } => node.at.clone(),
            };
            return Err(YamlError {
                at,
                message: format!("nesting deeper than {MAX_DEPTH} levels"),
            });
        }
        self.stack.push(frame);
        Ok(())
    }

    /// A complete node: remember its anchor and attach it to its parent.
    fn finish(&mut self, node: Node, anchor: usize) -> Result<(), YamlError> {
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq { node: seq, .. }) => {
                seq.size += node.size;
                if let Value::Seq(items) = &mut seq.value {
                    items.push(node);
                }
            }
            Some(Frame::Map {
                node: map,
                pending_key,
                merges,
                ..
            }) => match pending_key.take() {
                None => {
                    if !matches!(node.value, Value::Scalar { .. }) {
                        return Err(node.error("mapping keys must be plain scalars"));
                    }
                    *pending_key = Some(node);
                }
                Some(key) => {
                    let is_merge =
                        matches!(&key.value, Value::Scalar { text, quoted: false } if text == "<<");
                    if is_merge {
                        merges.push(node);
                        return Ok(());
                    }
                    let Value::Map(entries) = &mut map.value else {
                        unreachable!("map frame holds a map")
                    };
                    if let Some((first, _)) =
                        entries.iter().find(|(k, _)| k.as_str() == key.as_str())
                    {
                        return Err(key.error(format!(
                            "duplicate key `{}` (first defined at line {})",
                            key.as_str().unwrap_or_default(),
                            first.at.line
                        )));
                    }
                    map.size += key.size + node.size;
                    entries.push((key, node));
                }
            },
        }
        Ok(())
    }
}

/// YAML merge keys: `<<: *a` or `<<: [*a, *b]`; keys already in the mapping win, and among
/// the merged mappings the earlier one wins (the YAML 1.1 merge-key rules).
fn apply_merges(node: &mut Node, merges: Vec<Node>) -> Result<(), YamlError> {
    for merge in merges {
        let sources: Vec<Node> = match merge.value {
            Value::Map(_) => vec![merge],
            Value::Seq(items) => items,
            _ => {
                return Err(merge.error(format!(
                    "merge key `<<` takes a mapping or a list of mappings, found {}",
                    merge.kind()
                )));
            }
        };
        for src in sources {
            let Value::Map(src_entries) = src.value else {
                return Err(src.error(format!(
                    "merge key `<<` list entries must be mappings, found {}",
                    src.kind()
                )));
            };
            let Value::Map(entries) = &mut node.value else {
                unreachable!("merge into a map")
            };
            for (k, v) in src_entries {
                if !entries.iter().any(|(ek, _)| ek.as_str() == k.as_str()) {
                    node.size += k.size + v.size;
                    entries.push((k, v));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Node, YamlError> {
        parse("t.yaml", text)
    }

    #[test]
    fn keeps_lines_of_keys_and_values() {
        let n = p("a:\n  b: 1\n  c: [x, 'y']\n").unwrap();
        let b = n.get("a").unwrap().get("b").unwrap();
        assert_eq!((b.at.line, b.as_str()), (2, Some("1")));
        let c = n.get("a").unwrap().get("c").unwrap().as_seq().unwrap();
        assert!(matches!(&c[1].value, Value::Scalar { quoted: true, .. }));
    }

    #[test]
    fn merge_keys_with_lists_and_explicit_keys_winning() {
        let n = p("a: &a {x: 1, y: 1}\nb: &b {y: 2, z: 2}\nc:\n  <<: [*a, *b]\n  x: 3\n").unwrap();
        let c = n.get("c").unwrap();
        assert_eq!(c.get("x").unwrap().as_str(), Some("3"));
        assert_eq!(c.get("y").unwrap().as_str(), Some("1"));
        assert_eq!(c.get("z").unwrap().as_str(), Some("2"));
    }

    #[test]
    fn duplicate_key_names_both_lines() {
        let e = p("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(e.at.line, 3);
        assert!(
            e.message
                .contains("duplicate key `a` (first defined at line 1)"),
            "{e}"
        );
    }

    #[test]
    fn billion_laughs_is_refused() {
        let mut doc = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        let mut prev = 'a';
        for name in 'b'..='k' {
            doc.push_str(&format!(
                "{name}: &{name} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
            ));
            prev = name;
        }
        let e = p(&doc).unwrap_err();
        assert!(e.message.contains("expand to more than"), "{e}");
    }

    #[test]
    fn empty_and_comment_only_files_are_errors() {
        assert!(p("").unwrap_err().message.contains("empty"));
        assert!(p("# nothing\n").unwrap_err().message.contains("empty"));
    }

    #[test]
    fn syntax_errors_carry_position() {
        let e = p("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(e.message.starts_with("YAML syntax error"), "{e}");
    }

    #[test]
    fn overlay_merges_maps_key_by_key() {
        let mut base = p("t: {a: 1, b: {c: 2, d: 3}}\n").unwrap();
        let top = p("t: {b: {d: 4}, e: 5}\n").unwrap();
        base.overlay(&top);
        let t = base.get("t").unwrap();
        assert_eq!(t.get("a").unwrap().as_str(), Some("1"));
        assert_eq!(t.get("b").unwrap().get("c").unwrap().as_str(), Some("2"));
        assert_eq!(t.get("b").unwrap().get("d").unwrap().as_str(), Some("4"));
        assert_eq!(t.get("e").unwrap().as_str(), Some("5"));
    }
}
