//! The names of cgqos's groups and thread classes, and the aliases users type.
//!
//! ```text
//! chrome/                    thread root of all browser processes
//!   ui/ foreground/ background/        process groups (threaded)
//!     urgent/ non-urgent/              thread classes (threaded)
//! vms/
//!   arcvm/ <name>/           thread root of one VM's processes
//!     vcpu/ io/                        thread classes (threaded)
//! ```

use std::fmt;

pub const CHROME: &str = "chrome";
pub const VMS: &str = "vms";
pub const ARCVM: &str = "arcvm";
pub const PROCESS_GROUPS: [&str; 3] = ["ui", "foreground", "background"];
pub const URGENT: &str = "urgent";
pub const NON_URGENT: &str = "non-urgent";
pub const VCPU: &str = "vcpu";
pub const IO: &str = "io";

/// Where a whole process can be placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `chrome/<group>`: threads keep their urgent / non-urgent class.
    Browser(String),
    /// `vms/<name>`, or one of its parts (`vcpu`, `io`) when `part` is set.
    Vm { name: String, part: Option<String> },
}

impl Target {
    /// Parses a path (`chrome/background`, `vms/arcvm/io`) or alias (`ui`, `foreground`,
    /// `background`, `arcvm`, `arcvm-vcpu`, `arcvm-io`, `vm:<name>`, `vm:<name>/io`).
    pub fn parse(s: &str) -> Result<Target, String> {
        let s = s.trim_end_matches('/');
        let parts: Vec<&str> = s.split('/').collect();
        let vm = |name: &str, part: Option<&str>| -> Result<Target, String> {
            validate_vm_name(name)?;
            match part {
                None => Ok(Target::Vm {
                    name: name.into(),
                    part: None,
                }),
                Some(p @ (VCPU | IO)) => Ok(Target::Vm {
                    name: name.into(),
                    part: Some(p.into()),
                }),
                Some(p) => Err(format!(
                    "VM groups have parts `vcpu` and `io`, not {p:?}{}",
                    suggest(p, [VCPU, IO])
                )),
            }
        };
        match parts.as_slice() {
            [g] if PROCESS_GROUPS.contains(g) => Ok(Target::Browser(g.to_string())),
            [CHROME, g] if PROCESS_GROUPS.contains(g) => Ok(Target::Browser(g.to_string())),
            ["arcvm"] => vm(ARCVM, None),
            ["arcvm-vcpu"] => vm(ARCVM, Some(VCPU)),
            ["arcvm-io"] => vm(ARCVM, Some(IO)),
            [VMS, name] => vm(name, None),
            [VMS, name, part] => vm(name, Some(part)),
            [alias, rest @ ..] if alias.starts_with("vm:") && rest.len() <= 1 => {
                vm(&alias[3..], rest.first().copied())
            }
            [class] if THREAD_CLASS_WORDS.contains(class) => Err(format!(
                "{class:?} is a thread class, not a group: `cgqos move --thread TID... {class}` moves threads to a class (whole processes go to ui, foreground, background, arcvm or vm:<name>)"
            )),
            _ => {
                // A near miss of a thread class is a class meant for `move --thread`.
                let mut hint = suggest(s, GROUP_WORDS);
                if hint.is_empty() {
                    hint = suggest(s, THREAD_CLASS_WORDS.iter().copied());
                    if !hint.is_empty() {
                        hint = format!(
                            "{}, a thread class: use `move --thread`)",
                            &hint[..hint.len() - 1]
                        );
                    }
                }
                Err(format!(
                    "unknown group {s:?}{hint}: expected ui, foreground, background, chrome/<group>, arcvm, arcvm-vcpu, arcvm-io, vm:<name>[/vcpu|/io] or vms/<name>[/vcpu|/io]"
                ))
            }
        }
    }

    /// Path relative to the cgqos root.
    pub fn path(&self) -> String {
        match self {
            Target::Browser(g) => format!("{CHROME}/{g}"),
            Target::Vm { name, part: None } => format!("{VMS}/{name}"),
            Target::Vm {
                name,
                part: Some(p),
            } => format!("{VMS}/{name}/{p}"),
        }
    }

    /// The thread classes inside this target, if threads keep their class there.
    pub fn classes(&self) -> &'static [&'static str] {
        match self {
            Target::Browser(_) => &[URGENT, NON_URGENT],
            Target::Vm { part: None, .. } => &[VCPU, IO],
            Target::Vm { part: Some(_), .. } => &[],
        }
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
        && name != VCPU
        && name != IO;
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid VM name {name:?}: 1-64 characters of a-z, 0-9, '-' and '_', not starting with '-', not `vcpu` or `io`"
        ))
    }
}

/// A thread class as typed after `move --thread`.
pub fn parse_class(s: &str) -> Result<Option<&'static str>, String> {
    match s {
        "urgent" => Ok(Some(URGENT)),
        "non-urgent" | "nonurgent" => Ok(Some(NON_URGENT)),
        "default" => Ok(None),
        "vcpu" => Ok(Some(VCPU)),
        "io" => Ok(Some(IO)),
        other => Err(format!(
            "unknown thread class {other:?}{}: expected urgent, non-urgent, default (browser groups) or vcpu, io, default (VM groups)",
            suggest(other, [URGENT, NON_URGENT, "default", VCPU, IO])
        )),
    }
}

/// The fixed group names and aliases `Target::parse` accepts, for "did you mean".
const GROUP_WORDS: [&str; 9] = [
    "ui",
    "foreground",
    "background",
    "chrome/ui",
    "chrome/foreground",
    "chrome/background",
    "arcvm",
    "arcvm-vcpu",
    "arcvm-io",
];

/// Words that name a thread class (of `move --thread`) rather than a group.
const THREAD_CLASS_WORDS: [&str; 7] = [
    URGENT,
    NON_URGENT,
    "nonurgent",
    "default",
    VCPU,
    IO,
    "urgent-bursty",
];

/// The candidate closest to `input`, if it is close enough to be what was meant: at most
/// one edit per three characters (one for two-letter words, none for one letter), or `input`
/// a prefix of it.
pub fn closest<'a>(input: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let input_l = input.to_ascii_lowercase();
    let len = input.chars().count();
    let budget = if len < 2 { 0 } else { (len / 3).max(1) };
    candidates
        .into_iter()
        .filter(|c| *c != input)
        .filter_map(|c| {
            let d = edit_distance(&input_l, &c.to_ascii_lowercase());
            let prefix = input.len() >= 3 && c.starts_with(input);
            (d <= budget || prefix).then_some((if prefix { 0 } else { d }, c))
        })
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// ` (did you mean "x"?)` for the closest candidate, or nothing.
pub fn suggest<'a>(input: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    closest(input, candidates)
        .map(|c| format!(" (did you mean {c:?}?)"))
        .unwrap_or_default()
}

/// Edit distance over characters (insertions, deletions, substitutions and swaps of two
/// neighbours, the usual typing slips). Inputs are names typed on a command line: short, so
/// the quadratic table is fine; longer inputs are not compared at all.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    if a.len() > 256 || b.len() > 256 {
        return usize::MAX;
    }
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
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
    match parts.as_slice() {
        [CHROME, g] if PROCESS_GROUPS.contains(g) => Some(Placement {
            group: format!("{CHROME}/{g}"),
            class: None,
        }),
        [CHROME, g, c] if PROCESS_GROUPS.contains(g) && (*c == URGENT || *c == NON_URGENT) => {
            Some(Placement {
                group: format!("{CHROME}/{g}"),
                class: Some(c.to_string()),
            })
        }
        [VMS, name] => Some(Placement {
            group: format!("{VMS}/{name}"),
            class: None,
        }),
        [VMS, name, c] if *c == VCPU || *c == IO => Some(Placement {
            group: format!("{VMS}/{name}"),
            class: Some(c.to_string()),
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
