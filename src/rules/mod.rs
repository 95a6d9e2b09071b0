//! Automatic QoS by rule: thread classes (cgroup class + task attributes), rules that match
//! apps, and the decision for one task. Pure: reading /proc and applying are elsewhere.
//!
//! Files: `<config-dir>/rules.d/*.yaml` (cgqos rules and class overrides) and
//! `<config-dir>/rules.d/*.json` (schedqos app configs, read unchanged). Files are read in
//! name order; the first rule that matches a process wins. Tasks that match no rule are never
//! touched.

pub mod app;
pub mod load;
pub mod schedqos;

use std::fmt;

use serde::Serialize;

use crate::layout::Target;
use crate::matcher::{Mode, TooLong, Wildcard};
use crate::sched::TaskAttrs;

/// Where a class puts a thread inside its process group: one of the layout's thread classes
/// ([`crate::layout::BROWSER_CLASSES`]), or the process group itself. Derived from the layout
/// table: a class added there is a `cgroup-class` rules may name, with no change here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupClass(Option<&'static str>);

impl CgroupClass {
    /// The process group itself (`default`).
    pub const DEFAULT: CgroupClass = CgroupClass(None);
    const URGENT: CgroupClass = CgroupClass(Some(crate::layout::URGENT));
    const NON_URGENT: CgroupClass = CgroupClass(Some(crate::layout::NON_URGENT));

    /// A `cgroup-class` word as a rules file writes it: a thread class of the layout, one of
    /// its aliases, or `default`.
    pub fn parse(word: &str) -> Option<CgroupClass> {
        if word == crate::layout::DEFAULT_CLASS {
            return Some(CgroupClass::DEFAULT);
        }
        crate::layout::BROWSER_CLASSES
            .iter()
            .find(|c| c.name == word || c.aliases.contains(&word))
            .map(|c| CgroupClass(Some(c.name)))
    }

    /// The words `parse` takes, for error messages: `urgent, default or non-urgent`.
    pub fn words() -> String {
        let mut words: Vec<&str> = crate::layout::BROWSER_CLASSES
            .iter()
            .map(|c| c.name)
            .collect();
        words.insert(1.min(words.len()), crate::layout::DEFAULT_CLASS);
        match words.split_last() {
            Some((last, [])) => last.to_string(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => String::new(),
        }
    }

    /// The layout's class name (`None`: the group's default).
    pub fn layout_class(self) -> Option<&'static str> {
        self.0
    }

    /// The name rules files and `cgqos rules` use for it.
    pub fn name(self) -> &'static str {
        self.0.unwrap_or(crate::layout::DEFAULT_CLASS)
    }
}

impl Serialize for CgroupClass {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassDef {
    pub name: String,
    pub cgroup_class: CgroupClass,
    pub attrs: TaskAttrs,
    /// Where it was defined (`built-in` for the shipped defaults).
    pub at: String,
}

/// schedqos's QoS names and the classes they stand for.
pub const SCHEDQOS_ALIASES: [(&str, &str); 6] = [
    ("QOS_USER_INTERACTIVE", "urgent-bursty"),
    ("QOS_INTERACTIVE", "urgent-bursty"),
    ("QOS_USER_INITIATED", "balanced"),
    ("QOS_DEFAULT", "balanced"),
    ("QOS_UTILITY", "utility"),
    ("QOS_BACKGROUND", "background"),
];

/// Whether rules may change a task of this policy: fair ones only, as schedqos tags only
/// fair tasks. A real-time or deadline thread (an audio thread) is left alone.
pub fn is_fair(policy: u32) -> bool {
    matches!(
        policy,
        crate::sched::SCHED_OTHER | crate::sched::SCHED_BATCH | crate::sched::SCHED_IDLE
    )
}

/// uclamp.min of ChromeOS's urgent states (resourced's UCLAMP_BOOSTED_MIN, 60%).
const BOOSTED_MIN: u32 = 614;

/// The shipped classes, modelled on ChromeOS resourced's thread states. Real-time policies
/// are not used by default (ChromeOS's UrgentBursty is SCHED_RR 8): a class may opt in.
pub fn default_classes() -> Vec<ClassDef> {
    let c = |name: &str, cgroup_class, nice: i32, uclamp_min: Option<u32>| ClassDef {
        name: name.into(),
        cgroup_class,
        attrs: TaskAttrs {
            nice: Some(nice),
            uclamp_min,
            ..TaskAttrs::default()
        },
        at: "built-in".into(),
    };
    vec![
        c("urgent-bursty", CgroupClass::URGENT, -8, Some(BOOSTED_MIN)),
        c("urgent", CgroupClass::URGENT, -8, Some(BOOSTED_MIN)),
        c("balanced", CgroupClass::DEFAULT, 0, Some(0)),
        c("eco", CgroupClass::NON_URGENT, 0, Some(0)),
        c("utility", CgroupClass::NON_URGENT, 1, Some(0)),
        c("background", CgroupClass::NON_URGENT, 10, Some(0)),
        // resourced's states for the two ends of a synchronous IPC (6 and 7 of
        // SetThreadState): its nice values (-12 and -10), urgent-bursty's boost.
        c(
            "urgent-bursty-server",
            CgroupClass::URGENT,
            -12,
            Some(BOOSTED_MIN),
        ),
        c(
            "urgent-bursty-client",
            CgroupClass::URGENT,
            -10,
            Some(BOOSTED_MIN),
        ),
    ]
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Classes(pub Vec<ClassDef>);

impl Default for Classes {
    fn default() -> Self {
        Classes(default_classes())
    }
}

impl Classes {
    /// A class by name, schedqos alias, or the cgroup classes' own names (`default` is
    /// `balanced`, `non-urgent` is `eco`). A `QOS_*` tag that `qos_mappings.json` defined is
    /// a class of its own name; `QOS_INTERACTIVE` is `QOS_USER_INTERACTIVE`.
    pub fn get(&self, name: &str) -> Option<&ClassDef> {
        let tag = schedqos::canonical_tag(name).unwrap_or(name);
        if let Some(c) = self.0.iter().find(|c| c.name == tag) {
            return Some(c);
        }
        let name = SCHEDQOS_ALIASES
            .iter()
            .find(|(a, _)| *a == name)
            .map(|(_, c)| *c)
            .unwrap_or(match name {
                "default" => "balanced",
                "non-urgent" | "nonurgent" => "eco",
                other => other,
            });
        self.0.iter().find(|c| c.name == name)
    }

    pub fn names(&self) -> Vec<&str> {
        self.0.iter().map(|c| c.name.as_str()).collect()
    }
}

/// A shell-style glob (`*`, `?`; every other character literal), as schedqos matches names
/// with fnmatch. Compiled once; matching is linear in the text (`crate::matcher`).
#[derive(Debug, Clone, Serialize)]
#[serde(into = "String")]
pub struct Glob {
    source: String,
    compiled: Wildcard,
}

impl Glob {
    /// Compiles a glob; one longer than `matcher::MAX_PATTERN` characters is refused.
    pub fn new(pattern: &str) -> Result<Glob, TooLong> {
        Ok(Glob {
            source: pattern.to_string(),
            compiled: Wildcard::bounded(pattern, Mode::Name)?,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    pub fn matches(&self, text: &str) -> bool {
        self.compiled.matches(text)
    }
}

impl PartialEq for Glob {
    fn eq(&self, other: &Glob) -> bool {
        self.source == other.source
    }
}

impl Eq for Glob {}

impl From<Glob> for String {
    fn from(g: Glob) -> String {
        g.source
    }
}

/// What a rule matches a process by; every given field must match.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Matcher {
    pub argv0: Option<Glob>,
    pub exe: Option<Glob>,
    pub comm: Option<Glob>,
    #[serde(serialize_with = "ser_regex")]
    pub cmdline: Option<regex::Regex>,
    pub uid: Option<u32>,
}

fn ser_regex<S: serde::Serializer>(r: &Option<regex::Regex>, s: S) -> Result<S::Ok, S::Error> {
    match r {
        Some(r) => s.serialize_str(r.as_str()),
        None => s.serialize_none(),
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Rule {
    pub name: String,
    /// `file:line` of the rule.
    pub at: String,
    pub matcher: Matcher,
    /// The process group every matching process goes to (`None`: keep its cgroup).
    #[serde(serialize_with = "ser_target")]
    pub group: Option<Target>,
    /// The class of every thread the thread map does not name (`None`: leave them).
    pub class: Option<String>,
    /// Thread name globs and their classes, first match wins.
    pub threads: Vec<(Glob, String)>,
}

fn ser_target<S: serde::Serializer>(t: &Option<Target>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.collect_str(t),
        None => s.serialize_none(),
    }
}

/// What the matcher sees of a process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessInfo {
    pub argv0: String,
    pub exe: String,
    pub comm: String,
    pub cmdline: String,
    pub uid: u32,
}

impl ProcessInfo {
    /// The basename of argv[0] (schedqos's app key).
    pub fn argv0_base(&self) -> &str {
        self.argv0.rsplit('/').next().unwrap_or(&self.argv0)
    }
}

impl Matcher {
    pub fn matches(&self, p: &ProcessInfo) -> bool {
        self.argv0
            .as_ref()
            .is_none_or(|g| g.matches(p.argv0_base()))
            && self.exe.as_ref().is_none_or(|g| g.matches(&p.exe))
            && self.comm.as_ref().is_none_or(|g| g.matches(&p.comm))
            && self.cmdline.as_ref().is_none_or(|r| r.is_match(&p.cmdline))
            && self.uid.is_none_or(|u| u == p.uid)
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RuleSet {
    pub classes: Classes,
    pub rules: Vec<Rule>,
    pub files: Vec<String>,
}

/// What a rule decides for one thread.
#[derive(Debug, Clone)]
pub struct Decision<'a> {
    pub rule: &'a Rule,
    pub group: Option<Target>,
    pub class: Option<&'a ClassDef>,
}

impl fmt::Display for Decision<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rule {} ({})", self.rule.name, self.rule.at)?;
        if let Some(g) = &self.group {
            write!(f, ", group {g}")?;
        }
        if let Some(c) = self.class {
            write!(f, ", class {}", c.name)?;
        }
        Ok(())
    }
}

impl RuleSet {
    /// The rule that classes a process's threads: the first matching rule with a class or
    /// a thread map.
    pub fn rule_for(&self, p: &ProcessInfo) -> Option<&Rule> {
        self.rules
            .iter()
            .find(|r| (r.class.is_some() || !r.threads.is_empty()) && r.matcher.matches(p))
    }

    /// The rule that gives a process its group: the first matching rule with a group. So a
    /// schedqos config (classes, no group) and a YAML rule that only gives the same app a
    /// group combine.
    pub fn group_rule_for(&self, p: &ProcessInfo) -> Option<&Rule> {
        self.rules
            .iter()
            .find(|r| r.group.is_some() && r.matcher.matches(p))
    }

    /// The decision for one thread (its comm) of a process the rule matched.
    pub fn decide<'a>(&'a self, rule: &'a Rule, thread_comm: &str) -> Decision<'a> {
        let class_name = rule
            .threads
            .iter()
            .find(|(g, _)| g.matches(thread_comm))
            .map(|(_, c)| c.as_str())
            .or(rule.class.as_deref());
        Decision {
            rule,
            group: rule.group.clone(),
            class: class_name.and_then(|c| self.classes.get(c)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_like_fnmatch() {
        let g = |p: &str, t: &str| Glob::new(p).unwrap().matches(t);
        assert!(g("chrome", "chrome"));
        assert!(!g("chrome", "chromium"));
        assert!(g("chrom*", "chromium"));
        assert!(g("Thread?ool*", "ThreadPoolForeg"));
        assert!(g("*", ""));
        assert!(!g("a?", "a"));
    }

    #[test]
    fn cgroup_classes_are_the_layout_tables_with_their_aliases() {
        let word = |w: &str| CgroupClass::parse(w).map(CgroupClass::layout_class);
        assert_eq!(word("urgent"), Some(Some(crate::layout::URGENT)));
        assert_eq!(word("non-urgent"), Some(Some(crate::layout::NON_URGENT)));
        assert_eq!(
            word("nonurgent"),
            word("non-urgent"),
            "an alias of the table"
        );
        assert_eq!(word("default"), Some(None));
        assert_eq!(word("middle"), None);
        assert_eq!(CgroupClass::words(), "urgent, default or non-urgent");
        assert_eq!(CgroupClass::DEFAULT.name(), "default");
    }

    #[test]
    fn schedqos_names_and_cgroup_class_names_resolve() {
        let c = Classes::default();
        assert_eq!(c.get("QOS_BACKGROUND").unwrap().name, "background");
        assert_eq!(c.get("QOS_USER_INTERACTIVE").unwrap().name, "urgent-bursty");
        assert_eq!(c.get("default").unwrap().name, "balanced");
        assert_eq!(
            c.get("non-urgent").unwrap().cgroup_class,
            CgroupClass::NON_URGENT
        );
        assert!(c.get("nope").is_none());
    }
}
