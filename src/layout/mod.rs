//! The names of cgqos's groups and thread classes, and the aliases users type, all read
//! from one table ([`table`]).
//!
//! ```text
//! chrome/                    thread root of all browser processes
//!   ui/ foreground/ background/        process groups (threaded)
//!     urgent/ non-urgent/              thread classes (threaded)
//! vms/
//!   arcvm/ <name>/           thread root of one VM's processes
//!     vcpu/ io/                        thread classes (threaded)
//! ```

pub mod table;

use std::fmt;

pub use crate::suggest::{closest, suggest};
pub use table::{
    ARCVM, BROWSER_CLASSES, CHROME, CHROME_GROUPS, DEFAULT_CLASS, IO, Kind, NON_URGENT, URGENT,
    VCPU, VM_PARTS, VMS, allows_real_time, canonical_class, child_path, class_words, classes_of,
    full_weight, lookup, named_vms, vm_path,
};

/// Where a whole process can be placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `chrome/<group>`: threads keep their urgent / non-urgent class.
    Browser(String),
    /// `vms/<name>`, or one of its parts (`vcpu`, `io`) when `part` is set.
    Vm { name: String, part: Option<String> },
}

fn process_group(word: &str) -> Option<&'static str> {
    CHROME_GROUPS
        .iter()
        .find(|g| g.name == word)
        .map(|g| g.name)
}

fn vm_part(word: &str) -> Option<&'static str> {
    VM_PARTS.iter().find(|p| p.name == word).map(|p| p.name)
}

/// `` `vcpu` and `io` ``
fn vm_parts_listed() -> String {
    let parts: Vec<String> = VM_PARTS.iter().map(|p| format!("`{}`", p.name)).collect();
    parts.join(" and ")
}

/// A named VM's aliases: `<vm>` and `<vm>-<part>`, with what each stands for.
fn vm_aliases() -> Vec<(String, &'static str, Option<&'static str>)> {
    let mut out = Vec::new();
    for vm in named_vms() {
        out.push((vm.to_string(), vm, None));
        for p in VM_PARTS {
            out.push((format!("{vm}-{}", p.name), vm, Some(p.name)));
        }
    }
    out
}

/// What `Target::parse` accepts, for its error message.
fn expected_groups() -> String {
    let parts: Vec<String> = VM_PARTS.iter().map(|p| format!("/{}", p.name)).collect();
    let parts = parts.join("|");
    let mut words: Vec<String> = CHROME_GROUPS.iter().map(|g| g.name.to_string()).collect();
    words.push(format!("{CHROME}/<group>"));
    words.extend(vm_aliases().into_iter().map(|(a, _, _)| a));
    words.push(format!("vm:<name>[{parts}]"));
    format!("{} or {VMS}/<name>[{parts}]", words.join(", "))
}

/// Where whole processes go, for the hint when a class was given as a group.
fn process_destinations() -> String {
    let mut words: Vec<&str> = CHROME_GROUPS.iter().map(|g| g.name).collect();
    words.extend(named_vms());
    format!("{} or vm:<name>", words.join(", "))
}

impl Target {
    /// Parses a path (`chrome/background`, `vms/arcvm/io`) or alias (`ui`, `foreground`,
    /// `background`, `arcvm`, `arcvm-vcpu`, `arcvm-io`, `vm:<name>`, `vm:<name>/io`).
    pub fn parse(s: &str) -> Result<Target, String> {
        let s = s.trim_end_matches('/');
        let parts: Vec<&str> = s.split('/').collect();
        let vm = |name: &str, part: Option<&str>| -> Result<Target, String> {
            validate_vm_name(name)?;
            match part.map(|p| (p, vm_part(p))) {
                None => Ok(Target::Vm {
                    name: name.into(),
                    part: None,
                }),
                Some((_, Some(p))) => Ok(Target::Vm {
                    name: name.into(),
                    part: Some(p.into()),
                }),
                Some((p, None)) => Err(format!(
                    "VM groups have parts {}, not {p:?}{}",
                    vm_parts_listed(),
                    suggest(p, VM_PARTS.iter().map(|p| p.name))
                )),
            }
        };
        // Built only for a one-word name that is no process group (every move parses one).
        let alias = (parts.len() == 1 && process_group(s).is_none())
            .then(|| vm_aliases().into_iter().find(|(a, _, _)| a == s))
            .flatten();
        match parts.as_slice() {
            [g] if process_group(g).is_some() => Ok(Target::Browser(g.to_string())),
            [CHROME, g] if process_group(g).is_some() => Ok(Target::Browser(g.to_string())),
            [_] if alias.is_some() => {
                let (_, name, part) = alias.expect("checked");
                vm(name, part)
            }
            [VMS, name] => vm(name, None),
            [VMS, name, part] => vm(name, Some(part)),
            [alias, rest @ ..] if alias.starts_with("vm:") && rest.len() <= 1 => {
                vm(&alias[3..], rest.first().copied())
            }
            [class] if thread_class_words().contains(class) => Err(format!(
                "{class:?} is a thread class, not a group: `cgqos move --thread TID... {class}` moves threads to a class (whole processes go to {})",
                process_destinations()
            )),
            _ => {
                // A near miss of a thread class is a class meant for `move --thread`.
                let words = group_words();
                let mut hint = suggest(s, words.iter().map(String::as_str));
                if hint.is_empty() {
                    hint = suggest(s, thread_class_words());
                    if !hint.is_empty() {
                        hint = format!(
                            "{}, a thread class: use `move --thread`)",
                            &hint[..hint.len() - 1]
                        );
                    }
                }
                Err(format!(
                    "unknown group {s:?}{hint}: expected {}",
                    expected_groups()
                ))
            }
        }
    }

    /// Path relative to the cgqos root.
    pub fn path(&self) -> String {
        match self {
            Target::Browser(g) => format!("{CHROME}/{g}"),
            Target::Vm { name, part: None } => vm_path(name),
            Target::Vm {
                name,
                part: Some(p),
            } => format!("{}/{p}", vm_path(name)),
        }
    }

    /// The thread classes inside this target, if threads keep their class there.
    pub fn classes(&self) -> Vec<&'static str> {
        classes_of(&self.path())
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path())
    }
}

pub fn validate_vm_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && !name.starts_with('-')
        && vm_part(name).is_none();
    if ok {
        Ok(())
    } else {
        let parts: Vec<String> = VM_PARTS.iter().map(|p| format!("`{}`", p.name)).collect();
        Err(format!(
            "invalid VM name {name:?}: 1-64 characters of a-z, 0-9, '-' and '_', not starting with '-', not {}",
            parts.join(" or ")
        ))
    }
}

/// A thread class as typed after `move --thread`.
pub fn parse_class(s: &str) -> Result<Option<&'static str>, String> {
    if let Some((_, c)) = class_words().into_iter().find(|(w, _)| *w == s) {
        return Ok(c);
    }
    let browser: Vec<&str> = BROWSER_CLASSES.iter().map(|c| c.name).collect();
    let vm: Vec<&str> = VM_PARTS.iter().map(|c| c.name).collect();
    let mut canonical = browser.clone();
    canonical.push(DEFAULT_CLASS);
    canonical.extend(&vm);
    Err(format!(
        "unknown thread class {s:?}{}: expected {}, {DEFAULT_CLASS} (browser groups) or {}, {DEFAULT_CLASS} (VM groups)",
        suggest(s, canonical),
        browser.join(", "),
        vm.join(", ")
    ))
}

/// The fixed group names and aliases `Target::parse` accepts, for "did you mean": the
/// process groups by name, then by path, then the named VMs' aliases.
fn group_words() -> Vec<String> {
    let mut words: Vec<String> = CHROME_GROUPS.iter().map(|g| g.name.to_string()).collect();
    words.extend(CHROME_GROUPS.iter().map(|g| format!("{CHROME}/{}", g.name)));
    words.extend(vm_aliases().into_iter().map(|(a, _, _)| a));
    words
}

/// A rule class named like no cgroup class, which is still a class and not a group.
const RULE_CLASS_WORDS: [&str; 1] = ["urgent-bursty"];

/// Words that name a thread class (of `move --thread`) rather than a group.
fn thread_class_words() -> Vec<&'static str> {
    let mut words: Vec<&str> = class_words().into_iter().map(|(w, _)| w).collect();
    words.extend(RULE_CLASS_WORDS);
    words
}

/// Where a cgroup path (relative to the cgqos root) sits in the layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The process group (`chrome/foreground`, `vms/arcvm`).
    pub group: String,
    /// The thread class, `None` for the group's default.
    pub class: Option<String>,
}

/// Classifies a path relative to the cgqos root; `None` when it is not a cgqos group.
pub fn classify(rel: &str) -> Option<Placement> {
    let parts: Vec<&str> = rel.split('/').filter(|p| !p.is_empty()).collect();
    let group = lookup(rel)?;
    match parts.split_last() {
        Some(_) if group.kind.holds_processes() => Some(Placement {
            group: parts.join("/"),
            class: None,
        }),
        Some((class, up)) if group.kind.is_class() => Some(Placement {
            group: up.join("/"),
            class: Some(class.to_string()),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_and_paths_resolve_to_the_same_groups() {
        for (input, path) in [
            ("ui", "chrome/ui"),
            ("background", "chrome/background"),
            ("chrome/foreground", "chrome/foreground"),
            ("chrome/foreground/", "chrome/foreground"),
            ("arcvm", "vms/arcvm"),
            ("arcvm-vcpu", "vms/arcvm/vcpu"),
            ("arcvm-io", "vms/arcvm/io"),
            ("vms/arcvm/io", "vms/arcvm/io"),
            ("vm:termina", "vms/termina"),
            ("vm:termina/vcpu", "vms/termina/vcpu"),
        ] {
            assert_eq!(Target::parse(input).unwrap().path(), path, "{input}");
        }
    }

    #[test]
    fn unknown_groups_and_bad_vm_names_are_rejected() {
        for bad in [
            "",
            "chrome",
            "chrome/ui/urgent",
            "vm:",
            "vm:../x",
            "vm:UPPER",
            "vms/x/gpu",
            "vm:vcpu",
            "/etc",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn near_misses_get_a_suggestion_and_classes_point_at_thread() {
        let e = Target::parse("forground").unwrap_err();
        assert!(e.contains("did you mean \"foreground\""), "{e}");
        let e = Target::parse("chrome/backgorund").unwrap_err();
        assert!(e.contains("did you mean \"chrome/background\""), "{e}");
        let e = Target::parse("vm:termina/vpcu").unwrap_err();
        assert!(e.contains("did you mean \"vcpu\""), "{e}");
        let e = Target::parse("urgent").unwrap_err();
        assert!(e.contains("--thread"), "{e}");
        let e = parse_class("nonurgnet").unwrap_err();
        assert!(e.contains("did you mean \"non-urgent\""), "{e}");
        let e = Target::parse("urgnt").unwrap_err();
        assert!(
            e.contains("did you mean \"urgent\"?, a thread class: use `move --thread`)"),
            "{e}"
        );
        // Nothing close: no guess.
        assert!(
            !Target::parse("zzzzzz")
                .unwrap_err()
                .contains("did you mean")
        );
        assert_eq!(closest("x", ["ui", "io"]), None);
        assert_eq!(closest("UI", ["ui", "io"]), Some("ui"));
        assert_eq!(closest("back", ["ui", "background"]), Some("background"));
    }

    #[test]
    fn classify_finds_group_and_class() {
        assert_eq!(
            classify("chrome/foreground/non-urgent"),
            Some(Placement {
                group: "chrome/foreground".into(),
                class: Some("non-urgent".into())
            })
        );
        assert_eq!(
            classify("vms/arcvm/vcpu").unwrap().class.as_deref(),
            Some("vcpu")
        );
        assert_eq!(classify("chrome"), None);
        assert_eq!(classify("other/x"), None);
    }
}
