//! YAML with positions, for every file cgqos reads (board files, `rules.d/`, `daemon.yaml`,
//! CPU descriptions): [`tree`] builds a spanned document from the parser's events (merge keys,
//! duplicate keys, an alias budget); [`schema`] reads typed values out of it with errors that
//! name file, line, column and key, worded in one place.

pub mod schema;
mod tree;

pub use tree::{Location, MAX_DEPTH, NODE_BUDGET, Node, Value, YamlError, parse};
