//! Reading `rules.d/`: cgqos YAML rules and class overrides, and schedqos JSON app configs
//! (JSON is read with the same position-keeping parser, so every error has a file and line).

use std::fs;
use std::path::Path;

use super::schedqos::{self, JsonKind};
use super::{CgroupClass, ClassDef, Glob, Matcher, Rule, RuleSet};
use crate::config_read::{self, ReadError, Trust};
use crate::layout::Target;
use crate::sched::{self, TaskAttrs};
use crate::yaml::schema::{self, Map, map, string};
use crate::yaml::{self, Node, YamlError};

pub const RULES_DIR: &str = "rules.d";

/// Loads every `*.yaml`, `*.yml` and `*.json` of `<config_dir>/rules.d` in name order, then
/// the schedqos installation daemon.yaml's `schedqos: DIR` names, if any. A missing
/// directory is an empty rule set.
pub fn load_dir(config_dir: &Path) -> Result<RuleSet, YamlError> {
    let mut files = rules_d_files(config_dir)?;
    if let Some(dir) = schedqos::setting(config_dir)? {
        files.extend(schedqos::dir_files(&dir)?);
    }
    load_texts(
        &files
            .iter()
            .map(|(f, t)| (f.as_str(), t.as_str()))
            .collect::<Vec<_>>(),
    )
}

/// The (path, text) of each rule file of `<config_dir>/rules.d`, in name order.
/// The names in `dir` ending in one of `suffixes`, sorted, hidden files left out; `None` when
/// `dir` does not exist.
pub(super) fn config_names(
    dir: &Path,
    suffixes: &[&str],
) -> Result<Option<Vec<String>>, YamlError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(schema::file_error(
                dir,
                format!("cannot read the directory: {e}"),
            ));
        }
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !n.starts_with('.') && suffixes.iter().any(|s| n.ends_with(s)))
        .collect();
    names.sort();
    Ok(Some(names))
}

fn rules_d_files(config_dir: &Path) -> Result<Vec<(String, String)>, YamlError> {
    let dir = config_dir.join(RULES_DIR);
    // No rules.d is no rules; one that cannot be listed is an error (on a reload the old
    // rules stay), not an empty set.
    let Some(names) = config_names(&dir, &[".yaml", ".yml", ".json"])? else {
        return Ok(Vec::new());
    };
    let mut files = Vec::new();
    trusted(&dir)?;
    for n in names {
        let path = dir.join(&n);
        // Regular files only, at most 1 MiB, owned by root and writable only by root:
        // checked on the opened file, so a FIFO or a device never blocks the reader.
        let text = config_read::read(&path, Trust::Owner).map_err(|e| read_error(&e))?;
        files.push((path.display().to_string(), text));
    }
    Ok(files)
}

/// A file that could not be read, as an error at its first line.
pub fn read_error(e: &ReadError) -> YamlError {
    schema::unreadable(e)
}

/// Rules change how root treats every process: a file or directory that another user owns
/// or may write is refused. (Files are checked again on the opened file when read.)
pub fn trusted(path: &Path) -> Result<(), YamlError> {
    schema::trusted(path)
}

/// Loads rule files given as (name, text); `.json` names are schedqos files: app configs,
/// or `qos_mappings.json` and `sched_profiles.json` by name.
pub fn load_texts(files: &[(&str, &str)]) -> Result<RuleSet, YamlError> {
    let mut set = RuleSet::default();
    // Class references are checked once all files (and their class overrides) are read.
    let mut refs: Vec<(Node, String)> = Vec::new();
    for (file, text) in files {
        let doc = yaml::parse(file, text)?;
        if file.ends_with(".json") {
            match schedqos::kind(file) {
                JsonKind::AppConfig => schedqos::app_config(&doc, &mut set, &mut refs)?,
                JsonKind::QosMappings => schedqos::qos_mappings(&doc, &mut set)?,
                JsonKind::SchedProfiles => schedqos::sched_profiles(&doc)?,
            }
        } else {
            cgqos_yaml(&doc, &mut set, &mut refs)?;
        }
        set.files.push(file.to_string());
    }
    for (node, name) in refs {
        if set.classes.get(&name).is_none() {
            return Err(node.error(format!(
                "unknown class {name:?} (classes: {}; schedqos names QOS_* are accepted too)",
                set.classes.names().join(", ")
            )));
        }
    }
    Ok(set)
}

/// A name glob from a string node; an over-long pattern is an error at the node.
fn glob(n: &Node, what: &str) -> Result<Glob, YamlError> {
    Glob::new(string(n, what)?).map_err(|e| n.error(format!("{what}: {e}")))
}

fn loc(n: &Node) -> String {
    format!("{}:{}", n.at.file, n.at.line)
}

fn cgqos_yaml(
    doc: &Node,
    set: &mut RuleSet,
    refs: &mut Vec<(Node, String)>,
) -> Result<(), YamlError> {
    let top = map(doc, "rules file")?.only("rules file", &["classes", "rules"])?;
    for (k, v) in top.iter() {
        match k.as_str() {
            Some("classes") => {
                for (name, def) in map(v, "classes")?.iter() {
                    let class = class_def(string(name, "class name")?, def)?;
                    match set.classes.0.iter_mut().find(|c| c.name == class.name) {
                        Some(existing) => *existing = class,
                        None => set.classes.0.push(class),
                    }
                }
            }
            Some("rules") => {
                for r in schema::list(v, "rules")? {
                    set.rules.push(rule(r, refs)?);
                }
            }
            _ => {}
        }
    }
    Ok(())
}

const CLASS_KEYS: [&str; 7] = [
    "cgroup-class",
    "policy",
    "priority",
    "nice",
    "uclamp-min",
    "uclamp-max",
    "slice-us",
];

fn class_def(name: &str, def: &Node) -> Result<ClassDef, YamlError> {
    let what = format!("classes.{name}");
    let m = map(def, &what)?.only(&what, &CLASS_KEYS)?;
    let key = |k: &str| format!("{what}.{k}");
    let cgroup_class = match m.get("cgroup-class") {
        None => CgroupClass::DEFAULT,
        Some(n) => n.as_str().and_then(CgroupClass::parse).ok_or_else(|| {
            schema::expected(
                n,
                &key("cgroup-class"),
                &CgroupClass::words(),
                &schema::quoted(n),
            )
        })?,
    };
    let attrs = class_attrs(m, def, &what)?;
    Ok(ClassDef {
        name: name.to_string(),
        cgroup_class,
        attrs,
        at: loc(def),
    })
}

/// The task attributes of class `what` (`classes.<name>`), checked against each other.
fn class_attrs(m: Map, def: &Node, what: &str) -> Result<TaskAttrs, YamlError> {
    let key = |k: &str| format!("{what}.{k}");
    let mut attrs = TaskAttrs::default();
    if let Some(n) = m.get("policy") {
        attrs.policy = Some(schema::keyword(
            n,
            &key("policy"),
            "normal (or other), batch, idle, fifo or rr",
            &sched::POLICY_NAMES,
        )?);
    }
    if let Some(n) = m.get("priority") {
        attrs.priority = Some(schema::int_in(n, &key("priority"), 1, 99)?);
    }
    match (attrs.policy.is_some_and(sched::is_realtime), attrs.priority) {
        (true, None) => {
            return Err(def.error(format!(
                "{}: policy fifo and rr need a priority 1-99",
                key("policy")
            )));
        }
        (false, Some(_)) => {
            return Err(def.error(format!(
                "{}: a priority is only for policy fifo or rr",
                key("priority")
            )));
        }
        _ => {}
    }
    if let Some(n) = m.get("nice") {
        attrs.nice = Some(schema::int_in(n, &key("nice"), -20, 19)?);
    }
    if let Some(n) = m.get("uclamp-min") {
        attrs.uclamp_min = Some(uclamp(n, &key("uclamp-min"))?);
    }
    if let Some(n) = m.get("uclamp-max") {
        attrs.uclamp_max = Some(uclamp(n, &key("uclamp-max"))?);
    }
    if let (Some(lo), Some(hi)) = (attrs.uclamp_min, attrs.uclamp_max) {
        if lo > hi {
            return Err(def.error(format!("{what}: uclamp-min {lo} is above uclamp-max {hi}")));
        }
    }
    if let Some(n) = m.get("slice-us") {
        // EEVDF accepts slices of 0.1 ms to 100 ms.
        attrs.runtime_ns = Some(schema::int_in::<u64>(n, &key("slice-us"), 100, 100_000)? * 1000);
    }
    Ok(attrs)
}

/// A utilization clamp: 0-1024, or a percent of 1024 (`50%`).
fn uclamp(n: &Node, what: &str) -> Result<u32, YamlError> {
    let s = n.as_str().unwrap_or_default();
    match s.strip_suffix('%') {
        Some(p) => p
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|p| (0.0..=100.0).contains(p))
            .map(|p| ((p * 1024.0 + 50.0) / 100.0) as u32)
            .ok_or_else(|| {
                n.error(format!(
                    "{what}: expected 0-1024 or a percent 0%-100%, found {s:?}"
                ))
            }),
        None => schema::int_in(n, what, 0, 1024),
    }
}

const RULE_KEYS: [&str; 5] = ["name", "match", "group", "class", "threads"];
const MATCH_KEYS: [&str; 5] = ["argv0", "exe", "comm", "cmdline", "uid"];

fn rule(r: &Node, refs: &mut Vec<(Node, String)>) -> Result<Rule, YamlError> {
    let m = map(r, "rule")?.only("rule", &RULE_KEYS)?;
    let mm = m
        .get("match")
        .ok_or_else(|| r.error("rule: no `match` (argv0, exe, comm, cmdline, uid)"))?;
    let matcher = matcher(mm)?;
    let group = match m.get("group") {
        Some(g) => Some(
            Target::parse(string(g, "rule.group")?)
                .map_err(|e| g.error(format!("rule.group: {e}")))?,
        ),
        None => None,
    };
    let class = match m.get("class") {
        Some(c) => {
            let name = string(c, "rule.class")?.to_string();
            refs.push((c.clone(), name.clone()));
            Some(name)
        }
        None => None,
    };
    let mut threads = Vec::new();
    if let Some(t) = m.get("threads") {
        for (k, v) in map(t, "rule.threads")?.iter() {
            let name = string(v, "rule.threads")?.to_string();
            refs.push((v.clone(), name.clone()));
            threads.push((glob(k, "rule.threads")?, name));
        }
    }
    let name = match m.get("name") {
        Some(n) => string(n, "rule.name")?.to_string(),
        None => format!("rule at line {}", r.at.line),
    };
    Ok(Rule {
        name,
        at: loc(r),
        matcher,
        group,
        class,
        threads,
    })
}

/// A rule's `match`: at least one of argv0, exe, comm (globs), cmdline (a regex), uid.
fn matcher(mm: &Node) -> Result<Matcher, YamlError> {
    let mmap = map(mm, "rule.match")?.only("rule.match", &MATCH_KEYS)?;
    let mut matcher = Matcher::default();
    for (k, v) in mmap.iter() {
        match k.as_str().unwrap_or_default() {
            "argv0" => matcher.argv0 = Some(glob(v, "match.argv0")?),
            "exe" => matcher.exe = Some(glob(v, "match.exe")?),
            "comm" => matcher.comm = Some(glob(v, "match.comm")?),
            "cmdline" => {
                let s = string(v, "match.cmdline")?;
                matcher.cmdline = Some(
                    regex::RegexBuilder::new(s)
                        .size_limit(1 << 20)
                        .build()
                        .map_err(|e| {
                            v.error(format!("match.cmdline: not a regular expression: {e}"))
                        })?,
                );
            }
            _ => {
                matcher.uid = Some(
                    v.as_str()
                        .and_then(|s| s.parse().ok())
                        .ok_or_else(|| v.error("match.uid: expected a numeric uid"))?,
                );
            }
        }
    }
    if mmap.is_empty() {
        return Err(mm.error("rule.match: empty: a rule must match something"));
    }
    Ok(matcher)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rules_d_that_cannot_be_listed_is_an_error_not_an_empty_set() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            load_dir(dir.path()).unwrap().rules.is_empty(),
            "no rules.d: no rules"
        );
        std::fs::write(dir.path().join(RULES_DIR), "not a directory").unwrap();
        let e = load_dir(dir.path()).unwrap_err().to_string();
        assert!(e.contains("rules.d"), "{e}");
    }
    use crate::rules::ProcessInfo;

    #[test]
    fn the_schedqos_example_reads_unchanged() {
        let set = load_texts(&[(
            "chrome.json",
            r#"{"chrome": {"qos": "QOS_BACKGROUND", "thread_qos": {"chrome": "QOS_INTERACTIVE"}}}"#,
        )])
        .unwrap();
        let p = ProcessInfo {
            argv0: "/opt/google/chrome/chrome".into(),
            ..ProcessInfo::default()
        };
        let rule = set.rule_for(&p).unwrap();
        assert_eq!(rule.group, None);
        assert_eq!(
            set.decide(rule, "chrome").class.unwrap().name,
            "urgent-bursty"
        );
        assert_eq!(
            set.decide(rule, "ThreadPoolForeg").class.unwrap().name,
            "background"
        );
        assert!(
            set.rule_for(&ProcessInfo {
                argv0: "bash".into(),
                ..ProcessInfo::default()
            })
            .is_none()
        );
    }

    #[test]
    fn a_yaml_group_and_a_schedqos_config_for_the_same_app_combine() {
        let set = load_texts(&[
            ("10-groups.yaml", "rules:\n  - name: chrome-group\n    match: {argv0: chrome}\n    group: foreground\n"),
            ("chrome.json", r#"{"chrome": {"qos": "QOS_BACKGROUND"}}"#),
        ])
        .unwrap();
        let p = ProcessInfo {
            argv0: "chrome".into(),
            ..ProcessInfo::default()
        };
        assert_eq!(set.group_rule_for(&p).unwrap().name, "chrome-group");
        let r = set.rule_for(&p).unwrap();
        assert_eq!(r.name, "chrome");
        assert_eq!(set.decide(r, "x").class.unwrap().name, "background");
    }

    #[test]
    fn yaml_rules_with_classes_globs_and_overrides() {
        let set = load_texts(&[(
            "10-apps.yaml",
            "classes:\n  background: {cgroup-class: non-urgent, nice: 15, policy: batch, uclamp-max: 50%}\n  render: {cgroup-class: urgent, nice: -4, slice-us: 3000}\nrules:\n  - name: renderers\n    match: {argv0: \"chrom*\", cmdline: \"--type=renderer\"}\n    group: background\n    class: background\n    threads: {\"Compositor\": render, \"Media*\": utility}\n",
        )])
        .unwrap();
        let bg = set.classes.get("background").unwrap();
        assert_eq!(
            (bg.attrs.nice, bg.attrs.policy, bg.attrs.uclamp_max),
            (Some(15), Some(sched::SCHED_BATCH), Some(512))
        );
        let p = ProcessInfo {
            argv0: "chromium".into(),
            cmdline: "chromium --type=renderer --lang=en".into(),
            ..ProcessInfo::default()
        };
        let r = set.rule_for(&p).unwrap();
        assert_eq!(r.at, "10-apps.yaml:5");
        assert_eq!(r.group.as_ref().unwrap().path(), "chrome/background");
        assert_eq!(
            set.decide(r, "Compositor").class.unwrap().attrs.runtime_ns,
            Some(3_000_000)
        );
        assert_eq!(set.decide(r, "MediaWorker").class.unwrap().name, "utility");
        let no = ProcessInfo {
            argv0: "chromium".into(),
            cmdline: "chromium --type=gpu".into(),
            ..ProcessInfo::default()
        };
        assert!(set.rule_for(&no).is_none());
    }

    #[test]
    fn bad_rules_have_exact_errors() {
        let err = |name: &str, text: &str| load_texts(&[(name, text)]).unwrap_err().to_string();
        assert_eq!(
            err("a.json", r#"{"chrome": {"qos": "QOS_FAST"}}"#),
            "a.json:1:20: unknown class \"QOS_FAST\" (classes: urgent-bursty, urgent, balanced, eco, utility, background, urgent-bursty-server, urgent-bursty-client; schedqos names QOS_* are accepted too)"
        );
        assert_eq!(
            err(
                "b.yaml",
                "rules:\n  - match: {argv0: x}\n    class: speedy\n"
            ),
            "b.yaml:3:12: unknown class \"speedy\" (classes: urgent-bursty, urgent, balanced, eco, utility, background, urgent-bursty-server, urgent-bursty-client; schedqos names QOS_* are accepted too)"
        );
        assert_eq!(
            err("c.yaml", "rules:\n  - match: {}\n"),
            "c.yaml:2:12: rule.match: empty: a rule must match something"
        );
        assert_eq!(
            err("d.yaml", "rules:\n  - match: {cmdline: \"(\"}\n"),
            "d.yaml:2:22: match.cmdline: not a regular expression: regex parse error:\n    (\n    ^\nerror: unclosed group"
        );
        assert_eq!(
            err("e.yaml", "classes:\n  x: {policy: rr}\n"),
            "e.yaml:2:6: classes.x.policy: policy fifo and rr need a priority 1-99"
        );
        assert_eq!(
            err("f.yaml", "classes:\n  x: {nice: 40}\n"),
            "f.yaml:2:13: classes.x.nice: expected an integer -20-19, found \"40\""
        );
        assert_eq!(
            err("g.yaml", "classes:\n  x: {uclamp-min: 120%}\n"),
            "g.yaml:2:19: classes.x.uclamp-min: expected 0-1024 or a percent 0%-100%, found \"120%\""
        );
        assert_eq!(
            err(
                "h.yaml",
                "rules:\n  - match: {argv0: x}\n    group: nowhere\n"
            ),
            "h.yaml:3:12: rule.group: unknown group \"nowhere\": expected ui, foreground, background, chrome/<group>, arcvm, arcvm-vcpu, arcvm-io, vm:<name>[/vcpu|/io] or vms/<name>[/vcpu|/io]"
        );
        assert_eq!(
            err("i.yaml", "rulez: []\n"),
            "i.yaml:1:1: rules file: unknown key `rulez` (expected one of: classes, rules)"
        );
        assert_eq!(
            err("j.json", "{\"x\": {\"qos\": 1}}"),
            "j.json:1:15: qos: expected a JSON string, found 1"
        );
        assert_eq!(
            err("k.json", "{\"x\": {\"qos\": \"QOS_DEFAULT\"]}"),
            "k.json:1:28: YAML syntax error: while parsing a flow mapping, did not find expected ',' or '}'"
        );
    }
}
