//! The import graph of `src/` stays a DAG in layers (docs/design.md, "Layers"): low layers
//! (the kernel's files, /proc, scheduling, the state store) below policy (board, layout,
//! rules, plan) below operations below the two front ends (CLI, daemon). No low module may
//! import a higher one, and inside the daemon no module may reach back into one that
//! depends on it. This reads the sources, so a new `use` that breaks the rule fails here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module's layer: a module may import only from its own layer or below.
const LAYERS: &[(&str, u8)] = &[
    // Low: files and syscalls, no policy.
    ("cpulist", 0),
    ("config_read", 0),
    ("matcher", 0),
    ("suggest", 0),
    ("sys", 0),
    ("yaml", 0),
    ("sched", 0),
    ("procfs", 0),
    ("cgroupfs", 0),
    ("topology", 0),
    ("state", 0),
    ("model", 0),
    ("mounts", 0),
    // Policy: what the tree and the classes should be.
    ("board", 1),
    ("layout", 1),
    ("rules", 1),
    ("plan", 1),
    // Operations: doing it, for either front end.
    ("apply", 2),
    ("place", 2),
    ("error", 2),
    ("session", 2),
    ("classify", 2),
    ("ops", 2),
    ("top", 2),
    ("vm_attach", 2),
    // Front ends.
    ("cli", 3),
    ("daemon", 3),
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `src/daemon/engine/moves.rs` → `["daemon", "engine", "moves"]`; `mod.rs` is its directory.
fn module_of(file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src()).unwrap().with_extension("");
    let mut m: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if m.last()
        .is_some_and(|l| l == "mod" || l == "lib" || l == "main")
    {
        m.pop();
    }
    m
}

/// The modules a file names, as absolute paths (`crate::a::b`, `super::x`, `crate::{a, b}`),
/// outside comments and its test module.
fn imports(file: &Path) -> BTreeSet<Vec<String>> {
    let text = std::fs::read_to_string(file).unwrap();
    let code = text.split("#[cfg(test)]").next().unwrap();
    let here = module_of(file);
    let mut out = BTreeSet::new();
    for line in code.lines() {
        let line = line.split("//").next().unwrap();
        for (i, _) in line
            .match_indices("crate::")
            .chain(line.match_indices("super::"))
        {
            let rest = &line[i..];
            let (mut base, rest) = match rest.strip_prefix("crate::") {
                Some(r) => (Vec::new(), r),
                None => {
                    // `super::` (repeated) from this file's module.
                    let mut base = here.clone();
                    let mut r = rest;
                    while let Some(x) = r.strip_prefix("super::") {
                        base.pop();
                        r = x;
                    }
                    (base, r)
                }
            };
            if i >= 7 && line[..i].ends_with("super::") {
                continue; // counted from its first `super::`
            }
            if let Some(list) = rest.strip_prefix('{') {
                let list = list.split('}').next().unwrap_or("");
                for item in list.split(',') {
                    let mut p = base.clone();
                    p.extend(path_words(item.trim()));
                    out.insert(p);
                }
            } else {
                base.extend(path_words(rest));
                out.insert(base);
            }
        }
    }
    out
}

/// The module words of `a::b::Item...`.
fn path_words(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut rest = s;
    loop {
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        words.push(rest[..end].to_string());
        match rest[end..].strip_prefix("::") {
            Some(r) if !r.starts_with('{') => rest = r,
            _ => break,
        }
    }
    words
}

/// Every edge between distinct modules, each side cut to `depth` words.
fn edges(depth: usize) -> BTreeSet<(String, String)> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut out = BTreeSet::new();
    for f in files {
        let from = module_of(&f);
        if from.is_empty() {
            continue; // lib.rs and main.rs put it all together
        }
        for to in imports(&f) {
            let cut = |m: &[String]| m.iter().take(depth).cloned().collect::<Vec<_>>().join("::");
            let (a, b) = (cut(&from), cut(&to));
            if !b.is_empty() && a != b {
                out.insert((a, b));
            }
        }
    }
    out
}

fn layer(m: &str) -> u8 {
    LAYERS
        .iter()
        .find(|(n, _)| *n == m)
        .map(|(_, l)| *l)
        .unwrap_or_else(|| panic!("module {m:?} has no layer: add it to LAYERS in {}", file!()))
}

/// A cycle in `edges` among the nodes `keep` accepts, if there is one.
fn cycle(edges: &BTreeSet<(String, String)>, keep: impl Fn(&str) -> bool) -> Option<Vec<String>> {
    let mut next: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (a, b) in edges.iter().filter(|(a, b)| keep(a) && keep(b)) {
        next.entry(a).or_default().push(b);
    }
    fn visit<'a>(
        n: &'a str,
        next: &BTreeMap<&'a str, Vec<&'a str>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| *p == n) {
            let mut c: Vec<String> = path[i..].iter().map(|s| s.to_string()).collect();
            c.push(n.to_string());
            return Some(c);
        }
        if !done.insert(n) {
            return None;
        }
        path.push(n);
        for m in next.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, next, path, done) {
                return Some(c);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    let starts: Vec<&str> = next.keys().copied().collect();
    starts
        .into_iter()
        .find_map(|n| visit(n, &next, &mut Vec::new(), &mut done))
}

#[test]
fn no_module_imports_a_higher_layer() {
    let wrong: Vec<String> = edges(1)
        .into_iter()
        .filter(|(a, b)| layer(b) > layer(a))
        .map(|(a, b)| {
            format!(
                "{a} (layer {}) imports {b} (layer {})",
                layer(&a),
                layer(&b)
            )
        })
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_top_level_modules_form_a_dag() {
    let c = cycle(&edges(1), |_| true);
    assert!(c.is_none(), "import cycle: {}", c.unwrap().join(" -> "));
}

/// Inside the daemon every part depends on `core` and below, never back on what uses it
/// (`daemon/mod.rs`, which starts them all, is left out).
#[test]
fn the_daemons_modules_form_a_dag() {
    let c = cycle(&edges(2), |m| m.starts_with("daemon::"));
    assert!(c.is_none(), "import cycle: {}", c.unwrap().join(" -> "));
}

/// The operations layer knows nothing of the wire protocol: it shares `model` with it.
#[test]
fn operations_do_not_know_the_protocol() {
    let wrong: Vec<String> = edges(2)
        .into_iter()
        .filter(|(a, b)| layer(a.split("::").next().unwrap()) < 3 && b.starts_with("daemon"))
        .map(|(a, b)| format!("{a} imports {b}"))
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The checker itself: it sees `crate::`, braces and `super::` paths.
#[test]
fn the_checker_reads_imports() {
    let e = edges(2);
    for (a, b) in [
        ("ops", "session"),
        ("daemon::conn", "daemon::core"),
        ("daemon::core", "daemon::engine"),
        ("cli::status", "daemon::protocol"),
    ] {
        assert!(
            e.contains(&(a.to_string(), b.to_string())),
            "{a} -> {b} not seen"
        );
    }
    let before = edges(1);
    assert!(before.contains(&("classify".into(), "session".into())));
}
