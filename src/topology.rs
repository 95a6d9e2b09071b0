//! CPU topology from a sysfs root: which CPUs are usable and which of them are little.
//!
//! Rules (ChromeOS session_manager's, with its known bugs fixed):
//! - only online CPUs are read (offline ones answer EBUSY for `cpuinfo_max_freq`);
//! - isolated CPUs (`isolcpus=`) are left out of every set;
//! - Intel hybrid parts name their E-cores in `devices/cpu_atom/cpus`: preferred when present;
//! - otherwise `cpu_capacity`, then `cpufreq/cpuinfo_max_freq`, then `acpi_cppc/highest_perf`:
//!   the first with more than one distinct value wins; two tiers: the lowest is little, more
//!   than two: the two lowest are little;
//! - an unreadable, unparsable or zero value skips that CPU with a warning.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::cpulist::CpuList;

const CPU_DIR: &str = "devices/system/cpu";
const ATOM_CPUS: &str = "devices/cpu_atom/cpus";

/// A per-CPU attribute that can rank CPUs, in probe order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Attribute {
    CpuCapacity,
    CpuinfoMaxFreq,
    AcpiCppc,
}

impl Attribute {
    pub const PROBE_ORDER: [Attribute; 3] = [
        Attribute::CpuCapacity,
        Attribute::CpuinfoMaxFreq,
        Attribute::AcpiCppc,
    ];

    /// File relative to `devices/system/cpu/cpuN/`.
    pub fn file(self) -> &'static str {
        match self {
            Attribute::CpuCapacity => "cpu_capacity",
            Attribute::CpuinfoMaxFreq => "cpufreq/cpuinfo_max_freq",
            Attribute::AcpiCppc => "acpi_cppc/highest_perf",
        }
    }
}

/// Where the little set came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    CpuCapacity,
    CpuinfoMaxFreq,
    AcpiCppc,
    CpuAtom,
    /// The board's `cpuset-nonurgent` replaced detection.
    Board,
}

impl From<Attribute> for Source {
    fn from(a: Attribute) -> Self {
        match a {
            Attribute::CpuCapacity => Source::CpuCapacity,
            Attribute::CpuinfoMaxFreq => Source::CpuinfoMaxFreq,
            Attribute::AcpiCppc => Source::AcpiCppc,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cpu {
    pub cpu: u32,
    /// The winning attribute's value for this CPU (null when it has none or was skipped).
    pub value: Option<u64>,
    pub online: bool,
    pub isolated: bool,
    /// Raw per-attribute readings, kept for boost computations (`boost-top-app`, `boost-arcvm`).
    #[serde(skip)]
    pub readings: BTreeMap<&'static str, u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Topology {
    pub source: Option<Source>,
    pub hybrid: bool,
    pub little: CpuList,
    /// Online, non-isolated CPUs: the "all CPUs" of every cpuset cgqos writes.
    pub all: CpuList,
    pub possible: CpuList,
    pub isolated: CpuList,
    pub cpus: Vec<Cpu>,
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("{path}: cannot read the CPU list: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        source: crate::cpulist::CpuListError,
    },
    #[error("{0}: no CPUs found (is this a sysfs root? expected devices/system/cpu/cpuN)")]
    NoCpus(PathBuf),
}

/// What sysfs says about the CPUs, read and not yet judged: [`Raw::read`] does the I/O,
/// [`Topology::decide`] the rest, so the rules are tested on values directly.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Raw {
    /// `devices/system/cpu` under the sysfs root (warnings name files under it).
    pub cpu_dir: PathBuf,
    /// The `cpuN` directories, sorted.
    pub present: Vec<u32>,
    /// `possible`, or the `cpuN` directories when the file is missing.
    pub possible: CpuList,
    /// `online`, or every present CPU whose `cpuN/online` does not say 0.
    pub online: CpuList,
    pub isolated: CpuList,
    /// `devices/cpu_atom/cpus` (Intel hybrid E-cores), when present.
    pub atom: Option<CpuList>,
    /// Each attribute file of each usable CPU: its text, or why it could not be read.
    /// Missing files (the attribute does not exist here) are left out.
    pub values: BTreeMap<(u32, Attribute), Result<String, String>>,
}

impl Raw {
    /// Reads `sysfs_root` (normally `/sys`); attribute files only of online, non-isolated
    /// CPUs (offline ones answer EBUSY).
    pub fn read(sysfs_root: &Path) -> Result<Raw, TopologyError> {
        let cpu_dir = sysfs_root.join(CPU_DIR);
        let present = cpu_dirs(&cpu_dir)?;
        let possible = read_list_or(&cpu_dir.join("possible"), || {
            present.iter().copied().collect()
        })?;
        if possible.is_empty() && present.is_empty() {
            return Err(TopologyError::NoCpus(cpu_dir));
        }
        let online = read_list_or(&cpu_dir.join("online"), || {
            present
                .iter()
                .copied()
                .filter(|&c| per_cpu_online(&cpu_dir, c))
                .collect()
        })?;
        let isolated = read_list_or(&cpu_dir.join("isolated"), CpuList::new)?;
        let mut values = BTreeMap::new();
        for cpu in online.difference(&isolated).iter() {
            for attr in Attribute::PROBE_ORDER {
                let path = cpu_dir.join(format!("cpu{cpu}")).join(attr.file());
                match fs::read_to_string(&path) {
                    Ok(text) => {
                        values.insert((cpu, attr), Ok(text));
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => {
                        values.insert((cpu, attr), Err(e.to_string()));
                    }
                }
            }
        }
        let atom = read_list_opt(&sysfs_root.join(ATOM_CPUS))?;
        Ok(Raw {
            cpu_dir,
            present,
            possible,
            online,
            isolated,
            atom,
            values,
        })
    }
}

impl Topology {
    /// Reads `sysfs_root` (normally `/sys`) and decides.
    pub fn detect(sysfs_root: &Path) -> Result<Topology, TopologyError> {
        Ok(Topology::decide(&Raw::read(sysfs_root)?))
    }

    /// The rules of the module comment, on values read: no I/O.
    pub fn decide(raw: &Raw) -> Topology {
        let all = raw.online.difference(&raw.isolated);
        let mut warnings = Vec::new();
        let mut cpus: Vec<Cpu> = raw
            .possible
            .iter()
            .chain(raw.present.iter().copied())
            .collect::<CpuList>()
            .iter()
            .map(|cpu| Cpu {
                cpu,
                value: None,
                online: raw.online.contains(cpu),
                isolated: raw.isolated.contains(cpu),
                readings: BTreeMap::new(),
            })
            .collect();
        for c in cpus.iter_mut().filter(|c| all.contains(c.cpu)) {
            for attr in Attribute::PROBE_ORDER {
                if let Some(v) = raw.values.get(&(c.cpu, attr)) {
                    match reading(raw, c.cpu, attr, v) {
                        Ok(v) => {
                            c.readings.insert(attr.file(), v);
                        }
                        Err(w) => warnings.push(w),
                    }
                }
            }
        }
        let mut topo = Topology {
            source: None,
            hybrid: false,
            little: CpuList::new(),
            all,
            possible: raw.possible.clone(),
            isolated: raw.isolated.clone(),
            cpus,
            warnings,
        };
        if let Some(little) = raw.atom.as_ref().map(|a| a.intersection(&topo.all)) {
            if !little.is_empty() && little != topo.all {
                topo.source = Some(Source::CpuAtom);
                topo.hybrid = true;
                topo.little = little;
                let max_freq = Attribute::CpuinfoMaxFreq.file();
                for c in &mut topo.cpus {
                    c.value = c.readings.get(max_freq).copied();
                }
                return topo;
            }
        }
        for attr in Attribute::PROBE_ORDER {
            if topo.rank_by(attr) {
                break;
            }
        }
        topo
    }

    /// Takes the little set from `attr` if it has more than one distinct value.
    fn rank_by(&mut self, attr: Attribute) -> bool {
        let values: BTreeMap<u32, u64> = self
            .cpus
            .iter()
            .filter_map(|c| c.readings.get(attr.file()).map(|&v| (c.cpu, v)))
            .collect();
        let mut tiers: Vec<u64> = values.values().copied().collect();
        tiers.sort_unstable();
        tiers.dedup();
        if tiers.len() < 2 {
            return false;
        }
        // Two tiers: the lowest is little. Three or more: the two lowest are.
        let cutoff = if tiers.len() == 2 { tiers[0] } else { tiers[1] };
        self.source = Some(attr.into());
        self.hybrid = true;
        self.little = values
            .iter()
            .filter(|&(_, &v)| v <= cutoff)
            .map(|(&cpu, _)| cpu)
            .collect();
        for c in &mut self.cpus {
            c.value = values.get(&c.cpu).copied();
        }
        true
    }

    /// Replaces detection with the board's `cpuset-nonurgent`.
    pub fn override_little(&mut self, little: CpuList) {
        self.source = Some(Source::Board);
        self.hybrid = !little.is_empty() && little != self.all;
        self.little = little;
    }

    /// The CPUs non-urgent work may use: the little set, or all CPUs when not hybrid.
    pub fn nonurgent_cpus(&self) -> CpuList {
        if self.little.is_empty() {
            self.all.clone()
        } else {
            self.little.clone()
        }
    }

    fn readings(&self, attr: Attribute) -> impl Iterator<Item = u64> + '_ {
        self.cpus
            .iter()
            .filter(|c| self.all.contains(c.cpu))
            .filter_map(move |c| c.readings.get(attr.file()).copied())
    }

    /// ChromeOS concierge's default for `boost-top-app` on asymmetric hosts:
    /// `min(smallest capacity * 100 / 1024 + 5, 100)`; `None` when capacities are equal.
    pub fn default_boost_top_app(&self) -> Option<u32> {
        let min = self.readings(Attribute::CpuCapacity).min()?;
        let max = self.readings(Attribute::CpuCapacity).max()?;
        (min != max).then(|| ((min * 100 / 1024 + 5) as u32).min(100))
    }

    /// Little/big ratio of `cpuinfo_max_freq`, as concierge scales `boost-arcvm` with it.
    /// 1.0 when frequencies are equal or unknown.
    pub fn max_freq_ratio(&self) -> f64 {
        let min = self.readings(Attribute::CpuinfoMaxFreq).min();
        let max = self.readings(Attribute::CpuinfoMaxFreq).max();
        match (min, max) {
            (Some(min), Some(max)) if max > 0 => min as f64 / max as f64,
            _ => 1.0,
        }
    }
}

/// One attribute value of one CPU, or the warning that skips it (unreadable, not a
/// number, zero).
fn reading(
    raw: &Raw,
    cpu: u32,
    attr: Attribute,
    v: &Result<String, String>,
) -> Result<u64, String> {
    let path = raw.cpu_dir.join(format!("cpu{cpu}")).join(attr.file());
    match v {
        Ok(text) => match text.trim().parse::<u64>() {
            Ok(0) => Err(format!(
                "{}: value is 0, CPU {cpu} skipped for {}",
                path.display(),
                attr.file()
            )),
            Ok(v) => Ok(v),
            Err(_) => Err(format!(
                "{}: {:?} is not a number, CPU {cpu} skipped for {}",
                path.display(),
                text.trim(),
                attr.file()
            )),
        },
        Err(e) => Err(format!(
            "{}: unreadable ({e}), CPU {cpu} skipped for {}",
            path.display(),
            attr.file()
        )),
    }
}

fn cpu_dirs(cpu_dir: &Path) -> Result<Vec<u32>, TopologyError> {
    let entries = match fs::read_dir(cpu_dir) {
        Ok(e) => e,
        Err(source) => {
            return Err(TopologyError::Read {
                path: cpu_dir.to_path_buf(),
                source,
            });
        }
    };
    let mut ids: Vec<u32> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let n = name.strip_prefix("cpu")?;
            (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())).then(|| n.parse().ok())?
        })
        .collect();
    ids.sort_unstable();
    Ok(ids)
}

/// A CPU without an `online` file (cpu0 on x86) cannot be offlined, so it is online.
fn per_cpu_online(cpu_dir: &Path, cpu: u32) -> bool {
    match fs::read_to_string(cpu_dir.join(format!("cpu{cpu}/online"))) {
        Ok(s) => s.trim() != "0",
        Err(_) => true,
    }
}

fn read_list_opt(path: &Path) -> Result<Option<CpuList>, TopologyError> {
    match fs::read_to_string(path) {
        Ok(s) => s.parse().map(Some).map_err(|source| TopologyError::Parse {
            path: path.to_path_buf(),
            source,
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(TopologyError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn read_list_or(path: &Path, default: impl FnOnce() -> CpuList) -> Result<CpuList, TopologyError> {
    Ok(read_list_opt(path)?.unwrap_or_else(default))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(s: &str) -> CpuList {
        s.parse().unwrap()
    }

    /// CPUs 0-`n-1`, all online, with `attr` values as given (missing where `None`).
    fn raw(n: u32, attr: Attribute, values: &[Option<&str>]) -> Raw {
        let all = list(&format!("0-{}", n - 1));
        Raw {
            cpu_dir: PathBuf::from("/sys/devices/system/cpu"),
            present: (0..n).collect(),
            possible: all.clone(),
            online: all,
            isolated: CpuList::new(),
            atom: None,
            values: values
                .iter()
                .enumerate()
                .filter_map(|(cpu, v)| v.map(|v| ((cpu as u32, attr), Ok(v.to_string()))))
                .collect(),
        }
    }

    #[test]
    fn two_tiers_the_lowest_is_little_three_tiers_the_two_lowest() {
        let cap = Attribute::CpuCapacity;
        let t = Topology::decide(&raw(
            4,
            cap,
            &[Some("400"), Some("400"), Some("1024"), Some("1024")],
        ));
        assert_eq!((t.source, t.hybrid), (Some(Source::CpuCapacity), true));
        assert_eq!(t.little, list("0-1"));
        let t = Topology::decide(&raw(3, cap, &[Some("300"), Some("600"), Some("1024")]));
        assert_eq!(t.little, list("0-1"));
        assert_eq!(t.cpus[2].value, Some(1024));
    }

    #[test]
    fn equal_values_are_not_hybrid_and_the_next_attribute_is_tried() {
        let mut r = raw(2, Attribute::CpuCapacity, &[Some("1024"), Some("1024")]);
        r.values
            .insert((0, Attribute::CpuinfoMaxFreq), Ok("1800000\n".into()));
        r.values
            .insert((1, Attribute::CpuinfoMaxFreq), Ok("2400000\n".into()));
        let t = Topology::decide(&r);
        assert_eq!(t.source, Some(Source::CpuinfoMaxFreq));
        assert_eq!(t.little, list("0"));
        let t = Topology::decide(&raw(2, Attribute::AcpiCppc, &[Some("5"), Some("5")]));
        assert_eq!((t.source, t.hybrid), (None, false));
        assert!(t.little.is_empty());
        assert_eq!(t.nonurgent_cpus(), list("0-1"));
    }

    #[test]
    fn bad_values_skip_the_cpu_with_a_warning_naming_the_file() {
        let mut r = raw(
            4,
            Attribute::CpuCapacity,
            &[Some("0"), Some("big"), Some("512"), Some("1024")],
        );
        r.values.insert(
            (3, Attribute::AcpiCppc),
            Err("Device or resource busy".into()),
        );
        let t = Topology::decide(&r);
        assert_eq!(t.little, list("2"));
        assert_eq!(t.warnings.len(), 3, "{:?}", t.warnings);
        assert_eq!(
            t.warnings[0],
            "/sys/devices/system/cpu/cpu0/cpu_capacity: value is 0, CPU 0 skipped for cpu_capacity"
        );
        assert!(
            t.warnings[1].contains("\"big\" is not a number"),
            "{:?}",
            t.warnings
        );
        assert!(
            t.warnings[2]
                .contains("cpu3/acpi_cppc/highest_perf: unreadable (Device or resource busy)")
        );
    }

    #[test]
    fn isolated_and_offline_cpus_are_left_out_and_cpu_atom_wins() {
        let mut r = raw(
            4,
            Attribute::CpuCapacity,
            &[Some("400"), Some("1024"), Some("400"), Some("1024")],
        );
        r.isolated = list("3");
        r.online = list("0-1,3");
        let t = Topology::decide(&r);
        assert_eq!(t.all, list("0-1"));
        assert_eq!(t.little, list("0"));
        assert!(!t.cpus[2].online && t.cpus[3].isolated);
        assert_eq!((t.cpus[2].value, t.cpus[3].value), (None, None));
        r.atom = Some(list("1-3"));
        let t = Topology::decide(&r);
        assert_eq!(t.source, Some(Source::CpuAtom));
        assert_eq!(t.little, list("1"));
        // An atom list covering every usable CPU says nothing: ranking decides.
        r.atom = Some(list("0-3"));
        assert_eq!(Topology::decide(&r).source, Some(Source::CpuCapacity));
    }
}
