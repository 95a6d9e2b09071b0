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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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

impl Topology {
    /// Reads `sysfs_root` (normally `/sys`).
    pub fn detect(sysfs_root: &Path) -> Result<Topology, TopologyError> {
        let cpu_dir = sysfs_root.join(CPU_DIR);
        let present_dirs = cpu_dirs(&cpu_dir)?;
        let possible = read_list_or(&cpu_dir.join("possible"), || {
            present_dirs.iter().copied().collect()
        })?;
        if possible.is_empty() && present_dirs.is_empty() {
            return Err(TopologyError::NoCpus(cpu_dir));
        }
        let online = read_list_or(&cpu_dir.join("online"), || {
            present_dirs
                .iter()
                .copied()
                .filter(|&c| per_cpu_online(&cpu_dir, c))
                .collect()
        })?;
        let isolated = read_list_or(&cpu_dir.join("isolated"), CpuList::new)?;
        let all = online.difference(&isolated);
        let mut warnings = Vec::new();

        let mut cpus: Vec<Cpu> = possible
            .iter()
            .chain(present_dirs.iter().copied())
            .collect::<CpuList>()
            .iter()
            .map(|cpu| Cpu {
                cpu,
                value: None,
                online: online.contains(cpu),
                isolated: isolated.contains(cpu),
                readings: BTreeMap::new(),
            })
            .collect();

        // Read every attribute of every usable CPU once; a missing file is normal (that
        // attribute does not exist on this machine), anything else is worth a warning.
        for c in cpus.iter_mut().filter(|c| all.contains(c.cpu)) {
            for attr in Attribute::PROBE_ORDER {
                let path = cpu_dir.join(format!("cpu{}", c.cpu)).join(attr.file());
                match fs::read_to_string(&path) {
                    Ok(text) => match text.trim().parse::<u64>() {
                        Ok(0) => warnings.push(format!(
                            "{}: value is 0, CPU {} skipped for {}",
                            path.display(),
                            c.cpu,
                            attr.file()
                        )),
                        Ok(v) => {
                            c.readings.insert(attr.file(), v);
                        }
                        Err(_) => warnings.push(format!(
                            "{}: {:?} is not a number, CPU {} skipped for {}",
                            path.display(),
                            text.trim(),
                            c.cpu,
                            attr.file()
                        )),
                    },
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => warnings.push(format!(
                        "{}: unreadable ({e}), CPU {} skipped for {}",
                        path.display(),
                        c.cpu,
                        attr.file()
                    )),
                }
            }
        }

        let mut topo = Topology {
            source: None,
            hybrid: false,
            little: CpuList::new(),
            all,
            possible,
            isolated,
            cpus,
            warnings,
        };

        let atom_path = sysfs_root.join(ATOM_CPUS);
        if let Some(atom) = read_list_opt(&atom_path)? {
            let little = atom.intersection(&topo.all);
            if !little.is_empty() && little != topo.all {
                topo.source = Some(Source::CpuAtom);
                topo.hybrid = true;
                topo.little = little;
                let max_freq = Attribute::CpuinfoMaxFreq.file();
                for c in &mut topo.cpus {
                    c.value = c.readings.get(max_freq).copied();
                }
                return Ok(topo);
            }
        }

        for attr in Attribute::PROBE_ORDER {
            let values: BTreeMap<u32, u64> = topo
                .cpus
                .iter()
                .filter_map(|c| c.readings.get(attr.file()).map(|&v| (c.cpu, v)))
                .collect();
            let mut tiers: Vec<u64> = values.values().copied().collect();
            tiers.sort_unstable();
            tiers.dedup();
            if tiers.len() < 2 {
                continue;
            }
            // Two tiers: the lowest is little. Three or more: the two lowest are.
            let cutoff = if tiers.len() == 2 { tiers[0] } else { tiers[1] };
            topo.source = Some(attr.into());
            topo.hybrid = true;
            topo.little = values
                .iter()
                .filter(|&(_, &v)| v <= cutoff)
                .map(|(&cpu, _)| cpu)
                .collect();
            for c in &mut topo.cpus {
                c.value = values.get(&c.cpu).copied();
            }
            return Ok(topo);
        }
        Ok(topo)
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
