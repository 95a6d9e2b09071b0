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
                Some(p) => Err(format!("VM groups have parts `vcpu` and `io`, not {p:?}")),
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
            _ => Err(format!(
                "unknown group {s:?}: expected ui, foreground, background, chrome/<group>, arcvm, arcvm-vcpu, arcvm-io, vm:<name>[/vcpu|/io] or vms/<name>[/vcpu|/io]"
            )),
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
            "unknown thread class {other:?}: expected urgent, non-urgent, default (browser groups) or vcpu, io, default (VM groups)"
        )),
    }
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
