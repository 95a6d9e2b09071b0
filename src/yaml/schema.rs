//! Reading typed values out of a [`Node`] tree: mappings and their allowed keys, lists,
//! strings, integers and numbers in a range, booleans, keywords, and the errors for files
//! that cannot be read. Every message a configuration error shows is worded here, in one of
//! two forms the files have always used:
//!
//! - `{what}: expected {shape}, found {found}` for values (`rules.d/`, `daemon.yaml`, the
//!   typed board settings), where `what` is the dotted key (`cgqos.vm-cpu-weight`);
//! - `` `{what}` must be {shape}, found {found} `` for the structure of a board file.
//!
//! `found` is the node's kind (`a mapping`) for shape errors and its text, quoted, for value
//! errors ([`describe`], [`quoted`]).

use std::fmt::Display;
use std::path::Path;
use std::str::FromStr;

use super::{Location, Node, Value, YamlError};
use crate::config_read::{self, ReadError};

/// A scalar's text, quoted; anything else by its kind (`a list`).
pub fn describe(n: &Node) -> String {
    match &n.value {
        Value::Scalar { text, .. } => format!("{text:?}"),
        _ => n.kind().to_string(),
    }
}

/// A scalar's text or else the node's kind, quoted either way (`"a list"`).
pub fn quoted(n: &Node) -> String {
    format!("{:?}", n.as_str().unwrap_or(n.kind()))
}

/// `{what}: expected {shape}, found {found}` at `n`.
pub fn expected(n: &Node, what: &str, shape: &str, found: &str) -> YamlError {
    n.error(format!("{what}: expected {shape}, found {found}"))
}

/// `` `{what}` must be {shape}, found {found} `` at `n`.
pub fn must_be(n: &Node, what: &str, shape: &str, found: &str) -> YamlError {
    n.error(format!("`{what}` must be {shape}, found {found}"))
}

/// The entries of a mapping node, to look keys up in and check against a schema.
#[derive(Debug, Clone, Copy)]
pub struct Map<'a> {
    entries: &'a [(Node, Node)],
}

impl<'a> Map<'a> {
    pub const EMPTY: Map<'static> = Map { entries: &[] };

    /// The mapping `n` is, if it is one.
    pub fn of(n: &'a Node) -> Option<Map<'a>> {
        n.as_map().map(|entries| Map { entries })
    }

    /// The value of `key` (keys are unique: the tree refuses duplicates).
    pub fn get(&self, key: &str) -> Option<&'a Node> {
        self.entries
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }

    /// Entries in document order.
    pub fn iter(&self) -> std::slice::Iter<'a, (Node, Node)> {
        self.entries.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Refuses the first key not in `known`:
    /// `{what}: unknown key `{key}` (expected one of: {known})`, without the `{what}: `
    /// prefix when `what` is empty (a file's top level).
    pub fn only(self, what: &str, known: &[&str]) -> Result<Map<'a>, YamlError> {
        for (k, _) in self.entries {
            let key = k.as_str().unwrap_or_default();
            if !known.contains(&key) {
                let prefix = if what.is_empty() {
                    String::new()
                } else {
                    format!("{what}: ")
                };
                return Err(k.error(format!(
                    "{prefix}unknown key `{key}` (expected one of: {})",
                    known.join(", ")
                )));
            }
        }
        Ok(self)
    }
}

/// A mapping: `{what}: expected a mapping, found {kind}` otherwise.
pub fn map<'a>(n: &'a Node, what: &str) -> Result<Map<'a>, YamlError> {
    Map::of(n).ok_or_else(|| expected(n, what, "a mapping", n.kind()))
}

/// A mapping, where an empty value (`key:` or `key: ~`) is an empty one.
pub fn map_or_null<'a>(n: &'a Node, what: &str) -> Result<Map<'a>, YamlError> {
    if n.is_null() {
        return Ok(Map::EMPTY);
    }
    map(n, what)
}

/// A list: `{what}: expected a list, found {kind}` otherwise.
pub fn list<'a>(n: &'a Node, what: &str) -> Result<&'a [Node], YamlError> {
    n.as_seq()
        .ok_or_else(|| expected(n, what, "a list", n.kind()))
}

/// Any scalar, null included, as its text.
pub fn scalar<'a>(n: &'a Node, what: &str) -> Result<&'a str, YamlError> {
    n.as_str()
        .ok_or_else(|| expected(n, what, "a scalar", n.kind()))
}

/// A scalar that is not null.
pub fn string<'a>(n: &'a Node, what: &str) -> Result<&'a str, YamlError> {
    match &n.value {
        Value::Scalar { text, .. } if !n.is_null() => Ok(text),
        _ => Err(expected(n, what, "a string", n.kind())),
    }
}

/// A quoted scalar (a JSON string, in a file read as JSON).
pub fn json_string<'a>(n: &'a Node, what: &str) -> Result<&'a str, YamlError> {
    match &n.value {
        Value::Scalar { text, quoted: true } => Ok(text),
        _ => Err(expected(
            n,
            what,
            "a JSON string",
            n.as_str().unwrap_or(n.kind()),
        )),
    }
}

/// An unquoted scalar's text (`20` is a number; `"20"` is a string).
fn plain(n: &Node) -> Option<&str> {
    match &n.value {
        Value::Scalar {
            text,
            quoted: false,
        } => Some(text),
        _ => None,
    }
}

/// An integer `lo..=hi` written as any scalar (`"20"` too); `found` shows the value quoted.
pub fn int_in<T>(n: &Node, what: &str, lo: T, hi: T) -> Result<T, YamlError>
where
    T: FromStr + PartialOrd + Display + Copy,
{
    n.as_str()
        .and_then(|s| s.parse::<T>().ok())
        .filter(|v| (lo..=hi).contains(v))
        .ok_or_else(|| expected(n, what, &format!("an integer {lo}-{hi}"), &quoted(n)))
}

/// An integer `lo..=hi` written unquoted (typed YAML, as the board schema is).
pub fn plain_int_in<T>(n: &Node, what: &str, lo: T, hi: T) -> Result<T, YamlError>
where
    T: FromStr + PartialOrd + Display + Copy,
{
    plain(n)
        .and_then(|s| s.parse::<T>().ok())
        .filter(|v| (lo..=hi).contains(v))
        .ok_or_else(|| expected(n, what, &format!("an integer {lo}-{hi}"), &describe(n)))
}

/// A number `lo..=hi` written unquoted; the range is shown with one decimal (`0.0-1.0`).
pub fn plain_number_in(n: &Node, what: &str, lo: f64, hi: f64) -> Result<f64, YamlError> {
    plain(n)
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|v| (lo..=hi).contains(v))
        .ok_or_else(|| expected(n, what, &format!("a number {lo:?}-{hi:?}"), &describe(n)))
}

/// `true` or `false`, unquoted.
pub fn plain_bool(n: &Node, what: &str) -> Result<bool, YamlError> {
    match plain(n) {
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        _ => Err(expected(n, what, "true or false", &describe(n))),
    }
}

/// One of the words of `table` (a scalar, quoted or not); `shape` lists them for the error
/// (`urgent, default or non-urgent`), which may leave out synonyms the table accepts.
pub fn keyword<T: Copy>(
    n: &Node,
    what: &str,
    shape: &str,
    table: &[(&str, T)],
) -> Result<T, YamlError> {
    let word = n.as_str();
    table
        .iter()
        .find(|(w, _)| Some(*w) == word)
        .map(|(_, v)| *v)
        .ok_or_else(|| expected(n, what, shape, &quoted(n)))
}

/// An error about a whole file, at its first line (it could not be read, or is refused).
pub fn file_error(path: &Path, message: String) -> YamlError {
    YamlError {
        at: Location {
            file: path.display().to_string().into(),
            line: 1,
            col: 1,
        },
        message,
    }
}

/// A file that could not be read, as an error at its first line.
pub fn unreadable(e: &ReadError) -> YamlError {
    file_error(e.path(), e.detail())
}

/// Configuration changes how root treats every process: a file or directory that another
/// user owns or may write is refused. A path that does not exist passes (files are checked
/// again on the opened file when read).
pub fn trusted(path: &Path) -> Result<(), YamlError> {
    let Ok(m) = std::fs::metadata(path) else {
        return Ok(());
    };
    match config_read::untrusted(&m) {
        None => Ok(()),
        Some(why) => Err(unreadable(&ReadError::Untrusted {
            path: path.to_path_buf(),
            why,
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml::parse;

    fn doc(text: &str) -> Node {
        parse("s.yaml", text).unwrap()
    }

    fn err(r: Result<impl std::fmt::Debug, YamlError>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn maps_look_up_keys_and_refuse_unknown_ones_with_position() {
        let d = doc("top:\n  a: 1\n  b: 2\n");
        let m = map(d.get("top").unwrap(), "top").unwrap();
        assert_eq!(m.get("b").unwrap().as_str(), Some("2"));
        assert!(m.get("c").is_none());
        assert_eq!(m.iter().count(), 2);
        assert!(m.only("top", &["a", "b"]).is_ok());
        assert_eq!(
            err(m.only("top", &["a"])),
            "s.yaml:3:3: top: unknown key `b` (expected one of: a)"
        );
        assert_eq!(
            err(map(&d, "").unwrap().only("", &["x", "y"])),
            "s.yaml:1:1: unknown key `top` (expected one of: x, y)"
        );
    }

    #[test]
    fn shapes_name_what_was_found() {
        let d = doc("m: {}\nl: [1]\ns: x\nq: \"y\"\nn: ~\ne:\n");
        let g = |k: &str| d.get(k).unwrap();
        assert_eq!(
            err(map(g("l"), "k")),
            "s.yaml:2:4: k: expected a mapping, found a list"
        );
        assert!(map_or_null(g("n"), "k").unwrap().is_empty());
        assert!(map_or_null(g("e"), "k").unwrap().is_empty());
        assert_eq!(
            err(map(g("n"), "k")),
            "s.yaml:5:4: k: expected a mapping, found null"
        );
        assert_eq!(list(g("l"), "k").unwrap().len(), 1);
        assert_eq!(
            err(list(g("s"), "k")),
            "s.yaml:3:4: k: expected a list, found a scalar"
        );
        assert_eq!(scalar(g("n"), "k").unwrap(), "~");
        assert_eq!(
            err(scalar(g("m"), "k")),
            "s.yaml:1:4: k: expected a scalar, found a mapping"
        );
        assert_eq!(string(g("q"), "k").unwrap(), "y");
        assert_eq!(
            err(string(g("n"), "k")),
            "s.yaml:5:4: k: expected a string, found null"
        );
        assert_eq!(json_string(g("q"), "k").unwrap(), "y");
        assert_eq!(
            err(json_string(g("s"), "k")),
            "s.yaml:3:4: k: expected a JSON string, found x"
        );
        assert_eq!(
            must_be(g("l"), "a.b", "a mapping", g("l").kind()).to_string(),
            "s.yaml:2:4: `a.b` must be a mapping, found a list"
        );
    }

    #[test]
    fn integers_keep_to_their_range_and_quoting() {
        let d = doc("a: 20\nb: \"20\"\nc: 200\nd: [1]\ne: -3\n");
        let g = |k: &str| d.get(k).unwrap();
        assert_eq!(int_in(g("a"), "k", 0u32, 100).unwrap(), 20);
        assert_eq!(int_in(g("b"), "k", 0u32, 100).unwrap(), 20);
        assert_eq!(int_in(g("e"), "k", -20i64, 19).unwrap(), -3);
        assert_eq!(
            err(int_in(g("c"), "k", 0u32, 100)),
            "s.yaml:3:4: k: expected an integer 0-100, found \"200\""
        );
        assert_eq!(
            err(int_in(g("d"), "k", 0u32, 100)),
            "s.yaml:4:4: k: expected an integer 0-100, found \"a list\""
        );
        assert_eq!(plain_int_in(g("a"), "k", 0u32, 100).unwrap(), 20);
        assert_eq!(
            err(plain_int_in(g("b"), "k", 0u32, 100)),
            "s.yaml:2:4: k: expected an integer 0-100, found \"20\""
        );
        assert_eq!(
            err(plain_int_in(g("d"), "k", 0u32, 100)),
            "s.yaml:4:4: k: expected an integer 0-100, found a list"
        );
        assert_eq!(
            err(plain_int_in(g("e"), "k", 0u32, 100)),
            "s.yaml:5:4: k: expected an integer 0-100, found \"-3\""
        );
    }

    #[test]
    fn numbers_booleans_and_keywords() {
        let d = doc("f: 0.5\ng: 1.5\nt: true\nu: \"true\"\nw: fast\n");
        let g = |k: &str| d.get(k).unwrap();
        assert_eq!(plain_number_in(g("f"), "k", 0.0, 1.0).unwrap(), 0.5);
        assert_eq!(
            err(plain_number_in(g("g"), "k", 0.0, 1.0)),
            "s.yaml:2:4: k: expected a number 0.0-1.0, found \"1.5\""
        );
        assert!(plain_bool(g("t"), "k").unwrap());
        assert_eq!(
            err(plain_bool(g("u"), "k")),
            "s.yaml:4:4: k: expected true or false, found \"true\""
        );
        let table = [("slow", 1), ("fast", 2), ("quick", 2)];
        assert_eq!(keyword(g("w"), "k", "slow or fast", &table).unwrap(), 2);
        assert_eq!(
            err(keyword(g("t"), "k", "slow or fast", &table)),
            "s.yaml:3:4: k: expected slow or fast, found \"true\""
        );
    }

    #[test]
    fn files_that_cannot_be_read_or_are_refused_are_errors_at_line_one() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.yaml");
        let e = config_read::read(&missing, config_read::Trust::Any).unwrap_err();
        let y = unreadable(&e);
        assert_eq!((y.at.line, y.at.col), (1, 1));
        assert_eq!(&*y.at.file, missing.display().to_string());
        assert!(y.message.starts_with("cannot read: "), "{y}");
        assert!(trusted(&missing).is_ok());
        assert!(trusted(dir.path()).is_ok());
        use std::os::unix::fs::PermissionsExt;
        let open = dir.path().join("open.yaml");
        std::fs::write(&open, "a: 1\n").unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o666)).unwrap();
        let e = trusted(&open).unwrap_err();
        assert!(
            e.message.starts_with("refused: ")
                && e.message
                    .ends_with("; configuration must be writable only by root"),
            "{e}"
        );
    }
}
