//! VM types: how a monitor program is recognised and how it names its vCPU threads. Two ship
//! ([`BUILTIN`]); `<config-dir>/vm-types.yaml` changes their patterns or adds types:
//!
//! ```yaml
//! qemu:                      # a shipped type: the keys given replace its own
//!   vcpu-threads: ["CPU */KVM"]
//! firecracker:               # a new type: both keys
//!   monitors: ["firecracker"]
//!   vcpu-threads: ["fc_vcpu *"]
//! ```

use std::path::Path;

use crate::matcher::{MAX_PATTERN, Mode, Wildcard};
use crate::yaml::schema::{self, expected, list, map, map_or_null, quoted, string};
use crate::yaml::{self, Node, YamlError};

/// The file in the configuration directory.
pub const FILE: &str = "vm-types.yaml";
/// Most patterns in one list (`monitors`, `vcpu-threads`, `--vcpu-threads`).
pub const MAX_PATTERNS: usize = 16;
/// Most types in the file.
pub const MAX_TYPES: usize = 64;

/// The types that ship: (name, monitor programs, vCPU thread names). QEMU names its vCPU
/// threads `CPU <n>/<accelerator>` only with `-name <vm>,debug-threads=on`; without it every
/// thread is `qemu-system-*` and goes to io.
pub const BUILTIN: &[(&str, &[&str], &[&str])] = &[
    (
        "qemu",
        &["qemu-system-*", "qemu-kvm"],
        &["CPU */KVM", "CPU */TCG", "CPU */HVF", "CPU */WHPX"],
    ),
    ("crosvm", &["crosvm"], &["crosvm_vcpu*"]),
];

/// A kind of VM monitor and how it names its vCPU threads.
#[derive(Debug, Clone, PartialEq)]
pub struct VmType {
    pub name: String,
    /// Globs of the monitor's program name (the basename of its exe, else its comm).
    pub monitors: Vec<String>,
    /// Globs of its vCPU threads' names (a comm: at most 15 bytes).
    pub vcpu_threads: Vec<String>,
}

/// The known VM types, in order (detection takes the first whose monitor matches).
#[derive(Debug, Clone, PartialEq)]
pub struct VmTypes(pub Vec<VmType>);

impl Default for VmTypes {
    fn default() -> Self {
        let owned = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        VmTypes(
            BUILTIN
                .iter()
                .map(|(name, monitors, vcpu)| VmType {
                    name: name.to_string(),
                    monitors: owned(monitors),
                    vcpu_threads: owned(vcpu),
                })
                .collect(),
        )
    }
}

impl VmTypes {
    pub fn get(&self, name: &str) -> Option<&VmType> {
        self.0.iter().find(|t| t.name == name)
    }

    pub fn names(&self) -> Vec<&str> {
        self.0.iter().map(|t| t.name.as_str()).collect()
    }

    /// The shipped types with `<dir>/vm-types.yaml` applied (absent: the shipped ones).
    pub fn load(dir: &Path) -> Result<VmTypes, YamlError> {
        let path = dir.join(FILE);
        schema::trusted(&path)?;
        match crate::config_read::read_optional(&path, crate::config_read::Trust::Owner) {
            Ok(Some(text)) => VmTypes::parse(&path.display().to_string(), &text),
            Ok(None) => Ok(VmTypes::default()),
            Err(e) => Err(schema::unreadable(&e)),
        }
    }

    /// The shipped types with the file's text applied.
    pub fn parse(file: &str, text: &str) -> Result<VmTypes, YamlError> {
        // A file of comments only changes nothing (the YAML reader wants a document).
        if text
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
        {
            return Ok(VmTypes::default());
        }
        let doc = yaml::parse(file, text)?;
        let mut types = VmTypes::default();
        let top = map_or_null(&doc, FILE)?;
        for (key, value) in top.iter() {
            let name = string(key, "VM type")?;
            if !valid_name(name) {
                return Err(expected(
                    key,
                    "VM type",
                    "1-32 of a-z, 0-9, '-', '_'",
                    &quoted(key),
                ));
            }
            let fields = map(value, name)?.only(name, &["monitors", "vcpu-threads"])?;
            let read = |k: &str| -> Result<Option<Vec<String>>, YamlError> {
                fields
                    .get(k)
                    .map(|n| patterns(n, &format!("{name}.{k}")))
                    .transpose()
            };
            let (monitors, vcpu) = (read("monitors")?, read("vcpu-threads")?);
            match types.0.iter_mut().find(|t| t.name == name) {
                Some(t) => {
                    t.monitors = monitors.unwrap_or(std::mem::take(&mut t.monitors));
                    t.vcpu_threads = vcpu.unwrap_or(std::mem::take(&mut t.vcpu_threads));
                }
                None => match (monitors, vcpu) {
                    (Some(monitors), Some(vcpu_threads)) => types.0.push(VmType {
                        name: name.to_string(),
                        monitors,
                        vcpu_threads,
                    }),
                    _ => {
                        return Err(value.error(format!(
                            "{name}: a new VM type needs both `monitors` and `vcpu-threads`"
                        )));
                    }
                },
            }
        }
        if types.0.len() > MAX_TYPES {
            return Err(doc.error(format!("{} VM types; at most {MAX_TYPES}", types.0.len())));
        }
        Ok(types)
    }
}

fn valid_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// A list of 1 to [`MAX_PATTERNS`] non-empty globs of at most [`MAX_PATTERN`] characters.
fn patterns(n: &Node, what: &str) -> Result<Vec<String>, YamlError> {
    let items = list(n, what)?;
    if items.is_empty() || items.len() > MAX_PATTERNS {
        return Err(expected(
            n,
            what,
            &format!("a list of 1 to {MAX_PATTERNS} patterns"),
            &format!("{} item(s)", items.len()),
        ));
    }
    items
        .iter()
        .map(|i| {
            let p = string(i, what)?;
            check_pattern(p).map_err(|why| expected(i, what, &why, &quoted(i)))?;
            Ok(p.to_string())
        })
        .collect()
}

/// Why a glob is not a usable name pattern, if it is not.
pub fn check_pattern(p: &str) -> Result<Wildcard, String> {
    if p.is_empty() {
        return Err("a non-empty pattern".into());
    }
    Wildcard::bounded(p, Mode::Name)
        .map_err(|_| format!("a pattern of at most {MAX_PATTERN} characters"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_changes_shipped_types_and_adds_new_ones() {
        let t = VmTypes::parse(
            "vm-types.yaml",
            "qemu:\n  vcpu-threads: [\"vcpu *\"]\nfirecracker:\n  monitors: [firecracker]\n  vcpu-threads: [\"fc_vcpu *\"]\n",
        )
        .unwrap();
        assert_eq!(t.names(), ["qemu", "crosvm", "firecracker"]);
        let q = t.get("qemu").unwrap();
        assert_eq!(q.vcpu_threads, ["vcpu *"]);
        assert_eq!(q.monitors, ["qemu-system-*", "qemu-kvm"], "kept");
        assert_eq!(t.get("firecracker").unwrap().monitors, ["firecracker"]);
        assert_eq!(VmTypes::parse("f", "").unwrap(), VmTypes::default());
        assert_eq!(VmTypes::parse("f", "# none\n").unwrap(), VmTypes::default());
    }

    #[test]
    fn file_errors_name_the_line_and_what_was_found() {
        let err = |text: &str| {
            VmTypes::parse("vm-types.yaml", text)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err("qemu:\n  vcpu: [x]\n"),
            "vm-types.yaml:2:3: qemu: unknown key `vcpu` (expected one of: monitors, vcpu-threads)"
        );
        assert_eq!(
            err("fc:\n  monitors: [fc]\n"),
            "vm-types.yaml:2:3: fc: a new VM type needs both `monitors` and `vcpu-threads`"
        );
        assert_eq!(
            err("Big:\n  monitors: [x]\n"),
            "vm-types.yaml:1:1: VM type: expected 1-32 of a-z, 0-9, '-', '_', found \"Big\""
        );
        assert_eq!(
            err("qemu:\n  vcpu-threads: []\n"),
            "vm-types.yaml:2:17: qemu.vcpu-threads: expected a list of 1 to 16 patterns, found 0 item(s)"
        );
        assert_eq!(
            err("qemu:\n  vcpu-threads: \"CPU*\"\n"),
            "vm-types.yaml:2:17: qemu.vcpu-threads: expected a list, found a string"
        );
        assert_eq!(
            err("qemu:\n  vcpu-threads: [\"\"]\n"),
            "vm-types.yaml:2:18: qemu.vcpu-threads: expected a non-empty pattern, found \"\""
        );
    }
}
