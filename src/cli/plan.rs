//! `cgqos plan`: every directory and write `setup` would make, in order. Touches nothing.
//!
//! A board's CPU numbers only mean something on a machine with that board's CPUs. Boards
//! that ship a CPU description (`boards/<board>/cpus.yaml`) can therefore be previewed on any
//! machine: when this machine's possible CPUs are not the board's (or cannot be read), the
//! plan is made against the description and the output says so. `--cpus` forces either.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use serde::Serialize;

use super::Ctx;
use crate::board::yaml::{self, Node};
use crate::board::{Board, DEFAULT_BOARDS_DIR};
use crate::cpulist::CpuList;
use crate::error::{CliError, CliResult};
use crate::plan::{Derived, Plan, Step};
use crate::topology::{Attribute, Cpu, Source, Topology};

/// CPU descriptions shipped with cgqos, built in like the boards themselves.
const BUILTIN_CPUS: &[(&str, &str)] = &[
    ("trogdor", include_str!("../../boards/trogdor/cpus.yaml")),
    ("brya", include_str!("../../boards/brya/cpus.yaml")),
];

/// Descriptions are a few lines; anything bigger is not one.
const MAX_DESCRIPTION: u64 = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CpusFrom {
    /// This machine's, unless the board ships a CPU description and this machine's possible
    /// CPUs differ from it (or cannot be read): then the board's
    Auto,
    /// This machine's (--sysfs-root): exactly what `setup` would do here
    Machine,
    /// The board's own CPU description (boards/<board>/cpus.yaml): a preview of the board
    Board,
}

#[derive(Args, Debug)]
pub struct PlanArgs {
    /// Whose CPUs to plan for
    #[arg(long, value_enum, default_value = "auto", value_name = "FROM")]
    pub cpus: CpusFrom,
}

#[derive(Serialize)]
struct CpusOut {
    /// "machine" or "board".
    from: &'static str,
    /// The board's CPU description, when it was used.
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<String>,
    /// Why the description was used instead of this machine's CPUs.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

#[derive(Serialize)]
struct PlanOut<'a> {
    board: &'a str,
    sku: Option<i64>,
    cpus: CpusOut,
    derived: &'a Derived,
    steps: &'a [Step],
}

pub fn run(ctx: &Ctx, args: PlanArgs) -> CliResult<()> {
    let board = ctx.board()?;
    let described = || description(ctx, &board);
    let (topo, cpus) = match args.cpus {
        CpusFrom::Machine => (ctx.topology()?, machine()),
        CpusFrom::Board => {
            let (file, topo) = described()?.ok_or_else(|| no_description(&board))?;
            (topo, from_board(file, "--cpus board".into()))
        }
        CpusFrom::Auto => match (ctx.topology(), described()?) {
            (Ok(m), Some((file, d))) if m.possible != d.possible => {
                let reason = format!(
                    "this machine's possible CPUs are {}, the board's {}",
                    m.possible, d.possible
                );
                (d, from_board(file, reason))
            }
            (Err(e), Some((file, d))) => (d, from_board(file, format!("{e}"))),
            (m, _) => (m?, machine()),
        },
    };
    let plan = Plan::build(&topo, &board)?;
    let out = PlanOut {
        board: &board.name,
        sku: board.sku,
        cpus,
        derived: &plan.derived,
        steps: &plan.steps,
    };
    ctx.output(&out, |o| {
        let d = o.derived;
        let mut s = format!(
            "# board {:?}{}: all CPUs {}, non-urgent CPUs {}, boost-urgent {}%{}{}\n",
            o.board,
            o.sku.map(|s| format!(" SKU {s}")).unwrap_or_default(),
            d.all_cpus,
            d.nonurgent_cpus,
            d.boost_urgent,
            d.arcvm_uclamp_min
                .map(|b| format!(", arcvm uclamp.min {b:.2}%"))
                .unwrap_or_default(),
            d.boost_top_app
                .map(|b| format!(", boost-top-app {b}"))
                .unwrap_or_default(),
        );
        if let (Some(file), Some(reason)) = (&o.cpus.file, &o.cpus.reason) {
            s.push_str(&format!(
                "# CPUs: the board's own ({file}), not this machine's ({reason}): a preview; \
                 --cpus machine plans for this machine\n"
            ));
        }
        s.push_str("# paths are relative to the cgqos root (sysfs: relative to the sysfs root)\n");
        for step in o.steps {
            s.push_str(&format!("{step}\n"));
        }
        s
    });
    Ok(())
}

fn machine() -> CpusOut {
    CpusOut {
        from: "machine",
        file: None,
        reason: None,
    }
}

fn from_board(file: String, reason: String) -> CpusOut {
    CpusOut {
        from: "board",
        file: Some(file),
        reason: Some(reason),
    }
}

fn no_description(board: &Board) -> CliError {
    let known: Vec<&str> = BUILTIN_CPUS.iter().map(|(n, _)| *n).collect();
    CliError::bad_input(format!(
        "board {:?} has no CPU description (boards/{0}/cpus.yaml; built-in: {}): use --cpus machine",
        board.name,
        known.join(", ")
    ))
}

/// The board's CPU description: `<boards-dir>/<board>/cpus.yaml` if installed, else the
/// built-in one, else none. Errors only for a description that exists and is wrong.
fn description(ctx: &Ctx, board: &Board) -> CliResult<Option<(String, Topology)>> {
    let name = board.name.as_str();
    // The name comes from a board file: never let it leave the boards directory.
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Ok(None);
    }
    let dir = ctx
        .g
        .boards_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_BOARDS_DIR));
    let path = dir.join(name).join("cpus.yaml");
    let (file, text) = match read_small(&path) {
        Ok(Some(text)) => (path.display().to_string(), text),
        Ok(None) => match BUILTIN_CPUS.iter().find(|(n, _)| *n == name) {
            Some((n, text)) => (format!("<built-in>/boards/{n}/cpus.yaml"), text.to_string()),
            None => return Ok(None),
        },
        Err(e) => return Err(CliError::bad_input(e)),
    };
    let topo = parse_description(&file, &text).map_err(|e| CliError::bad_input(e.to_string()))?;
    Ok(Some((file, topo)))
}

/// Reads a description; `None` if the file does not exist. Through the one safe reader: a
/// regular file only (a FIFO in `--boards-dir` never blocks), bounded.
fn read_small(path: &std::path::Path) -> Result<Option<String>, String> {
    use crate::config_read::{self, Trust};
    let text = config_read::read_optional(path, Trust::Any).map_err(|e| e.to_string())?;
    if text
        .as_ref()
        .is_some_and(|t| t.len() as u64 > MAX_DESCRIPTION)
    {
        return Err(format!(
            "{}: larger than {MAX_DESCRIPTION} bytes: not a CPU description",
            path.display()
        ));
    }
    Ok(text)
}

const KEYS: &[&str] = &[
    "possible",
    "little",
    "source",
    "cpu_capacity",
    "cpuinfo_max_freq",
    "acpi_cppc",
];

/// Parses a CPU description into the topology detection would give on that board with every
/// CPU online and none isolated. The format (docs/configuration.md):
///
/// ```yaml
/// possible: 0-7                 # devices/system/cpu/possible
/// little: 0-5                   # what detection finds ("" when none)
/// source: cpu_capacity          # which attribute tells them apart (or cpu_atom, none)
/// cpu_capacity: {0-5: 415, 6-7: 1024}
/// cpuinfo_max_freq: {0-5: 1804800, 6-7: 2400000}
/// ```
pub fn parse_description(file: &str, text: &str) -> Result<Topology, yaml::YamlError> {
    let doc = yaml::parse(file, text)?;
    check_keys(&doc)?;
    let required = |key: &str| {
        doc.get(key)
            .ok_or_else(|| doc.error(format!("`{key}` is missing")))
    };
    let possible = cpulist(required("possible")?, "possible")?;
    if possible.is_empty() {
        return Err(required("possible")?.error("possible: expected at least one CPU"));
    }
    let little = little_cpus(required("little")?, &possible)?;
    let source_node = required("source")?;
    let source = parse_source(source_node)?;
    if source.is_none() != little.is_empty() {
        return Err(source_node.error("source: `none` exactly when `little` is empty"));
    }

    let mut cpus: Vec<Cpu> = possible
        .iter()
        .map(|cpu| Cpu {
            cpu,
            value: None,
            online: true,
            isolated: false,
            readings: BTreeMap::new(),
        })
        .collect();
    read_attributes(&doc, &possible, &mut cpus)?;
    let shown = shown_attribute(source);
    for c in &mut cpus {
        c.value = shown.and_then(|a| c.readings.get(a.file()).copied());
    }
    Ok(Topology {
        source,
        hybrid: !little.is_empty() && little != possible,
        little,
        all: possible.clone(),
        possible,
        isolated: CpuList::new(),
        cpus,
        warnings: Vec::new(),
    })
}

/// The description is a mapping of known keys only.
fn check_keys(doc: &Node) -> Result<(), yaml::YamlError> {
    let Some(entries) = doc.as_map() else {
        return Err(doc.error(format!(
            "a CPU description must be a mapping, found {}",
            doc.kind()
        )));
    };
    for (k, _) in entries {
        let key = k.as_str().unwrap_or_default();
        if !KEYS.contains(&key) {
            return Err(k.error(format!(
                "unknown key `{key}` (expected one of: {})",
                KEYS.join(", ")
            )));
        }
    }
    Ok(())
}

/// `little`: a CPU list within `possible` (possibly empty).
fn little_cpus(node: &Node, possible: &CpuList) -> Result<CpuList, yaml::YamlError> {
    let little = cpulist(node, "little")?;
    if !little.is_subset(possible) {
        return Err(node.error(format!(
            "little: CPUs {} are not in possible ({possible})",
            little.difference(possible)
        )));
    }
    Ok(little)
}

/// `source`: the attribute that tells the CPUs apart, none for `none`.
fn parse_source(node: &Node) -> Result<Option<Source>, yaml::YamlError> {
    match node.as_str().unwrap_or_default() {
        "cpu_capacity" => Ok(Some(Source::CpuCapacity)),
        "cpuinfo_max_freq" => Ok(Some(Source::CpuinfoMaxFreq)),
        "acpi_cppc" => Ok(Some(Source::AcpiCppc)),
        "cpu_atom" => Ok(Some(Source::CpuAtom)),
        "none" => Ok(None),
        other => Err(node.error(format!(
            "source: expected cpu_capacity, cpuinfo_max_freq, acpi_cppc, cpu_atom or none, found {other:?}"
        ))),
    }
}

/// Each attribute key given (`{0-5: 415, 6-7: 1024}`) becomes a reading of its CPUs.
fn read_attributes(
    doc: &Node,
    possible: &CpuList,
    cpus: &mut [Cpu],
) -> Result<(), yaml::YamlError> {
    for (key, attr) in [
        ("cpu_capacity", Attribute::CpuCapacity),
        ("cpuinfo_max_freq", Attribute::CpuinfoMaxFreq),
        ("acpi_cppc", Attribute::AcpiCppc),
    ] {
        let Some(node) = doc.get(key) else { continue };
        let Some(values) = node.as_map() else {
            return Err(node.error(format!(
                "{key}: expected a mapping of CPU lists to values, e.g. {{0-5: 415, 6-7: 1024}}, found {}",
                node.kind()
            )));
        };
        for (k, v) in values {
            let list = cpulist(k, key)?;
            if !list.is_subset(possible) {
                return Err(k.error(format!(
                    "{key}: CPUs {} are not in possible ({possible})",
                    list.difference(possible)
                )));
            }
            let value = positive(v, key)?;
            for c in cpus.iter_mut().filter(|c| list.contains(c.cpu)) {
                c.readings.insert(attr.file(), value);
            }
        }
    }
    Ok(())
}

/// An attribute's value: a positive whole number.
fn positive(v: &Node, key: &str) -> Result<u64, yaml::YamlError> {
    v.as_str()
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|&n| n > 0)
        .ok_or_else(|| {
            v.error(format!(
                "{key}: expected a positive whole number, found {:?}",
                v.as_str().unwrap_or_default()
            ))
        })
}

/// The attribute whose value a CPU shows, as detection reports it: the winning attribute's
/// (max_freq for cpu_atom).
fn shown_attribute(source: Option<Source>) -> Option<Attribute> {
    match source {
        Some(Source::CpuCapacity) => Some(Attribute::CpuCapacity),
        Some(Source::CpuinfoMaxFreq | Source::CpuAtom) => Some(Attribute::CpuinfoMaxFreq),
        Some(Source::AcpiCppc) => Some(Attribute::AcpiCppc),
        _ => None,
    }
}

fn cpulist(node: &Node, key: &str) -> Result<CpuList, yaml::YamlError> {
    let text = node.as_str().unwrap_or_default();
    // CpuList bounds ids by the kernel's NR_CPUS limit, so a range cannot blow up.
    text.parse().map_err(|e| node.error(format!("{key}: {e}")))
}
