//! The plan: a pure function of (topology, board) giving every directory and file write
//! `setup` makes, in the order the kernel needs them:
//! - a group's parent enables `+cpu +cpuset` before the group's own cpu/cpuset files exist;
//! - `cgroup.type` becomes `threaded` before anything is enabled below a group;
//! - `cpu.uclamp.min` is written on every ancestor too, because the kernel caps a group's
//!   effective value by its parent's.

use serde::Serialize;

use crate::board::Board;
use crate::cgroupfs::files;
use crate::cpulist::CpuList;
use crate::layout::{ARCVM, CHROME, IO, NON_URGENT, PROCESS_GROUPS, URGENT, VCPU, VMS};
use crate::topology::Topology;

/// Which filesystem a step writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tree {
    Cgroup,
    Sysfs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Mkdir,
    Write,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    pub op: Op,
    pub tree: Tree,
    /// Relative to the cgqos root (cgroup steps) or the sysfs root (sysfs steps).
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

impl Step {
    fn mkdir(path: &str) -> Step {
        Step {
            op: Op::Mkdir,
            tree: Tree::Cgroup,
            path: path.to_string(),
            value: None,
        }
    }

    fn write(group: &str, file: &str, value: impl Into<String>) -> Step {
        Step {
            op: Op::Write,
            tree: Tree::Cgroup,
            path: join(group, file),
            value: Some(value.into()),
        }
    }

    /// The group directory and file name of a cgroup write.
    pub fn split(&self) -> (&str, &str) {
        match self.path.rsplit_once('/') {
            Some((dir, file)) => (dir, file),
            None => ("", self.path.as_str()),
        }
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tree = match self.tree {
            Tree::Cgroup => "",
            Tree::Sysfs => "sysfs:",
        };
        match (&self.op, &self.value) {
            (Op::Mkdir, _) => write!(f, "mkdir {tree}{}", self.path),
            (Op::Write, Some(v)) => write!(f, "write {tree}{} = {v}", self.path),
            (Op::Write, None) => write!(f, "write {tree}{}", self.path),
        }
    }
}

/// The join lives with the filesystem layer, which must not depend on the plan.
pub use crate::cgroupfs::join;

/// Values derived from topology and board, shown by `plan` and used by `vm add`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Derived {
    pub all_cpus: CpuList,
    pub nonurgent_cpus: CpuList,
    pub boost_urgent: u32,
    /// `cpu.uclamp.min` percent of ArcVM's groups, from `boost-arcvm`.
    pub arcvm_uclamp_min: Option<f64>,
    /// For VM launchers (ARCVM's `androidboot.arc_top_app_uclamp_min`).
    pub boost_top_app: Option<u32>,
    pub input_boost: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub derived: Derived,
    pub steps: Vec<Step>,
}

#[derive(Debug, thiserror::Error)]
#[error(
    "{at}: scheduler-tune.cpuset-nonurgent: CPUs {outside} are not possible on this machine (possible: {possible})"
)]
pub struct PlanError {
    pub at: String,
    pub outside: CpuList,
    pub possible: CpuList,
}

pub const CONTROLLERS: &str = "+cpu +cpuset";
pub const INPUT_BOOST_PATH: &str = "module/cpu_boost/parameters/input_boost_freq_percent";

/// Percent with two decimals, as the kernel prints `cpu.uclamp.min`.
pub fn percent(v: f64) -> String {
    format!("{v:.2}")
}

impl Plan {
    pub fn build(topology: &Topology, board: &Board) -> Result<Plan, PlanError> {
        let derived = derive(topology, board)?;
        let mut steps = Vec::new();
        let boost = percent(derived.boost_urgent as f64);
        let arcvm = board.cgqos.arcvm.value;
        let vms_boost = if arcvm {
            derived.arcvm_uclamp_min
        } else {
            None
        };
        let root_boost = (derived.boost_urgent as f64).max(vms_boost.unwrap_or(0.0));

        // The cgqos root: its own uclamp.min caps everything below when it is not the
        // cgroup2 root (which has no uclamp files; apply skips it there).
        steps.push(Step::write("", files::SUBTREE_CONTROL, CONTROLLERS));
        steps.push(Step::write("", files::CPU_UCLAMP_MIN, percent(root_boost)));

        steps.push(Step::mkdir(CHROME));
        steps.push(Step::write(CHROME, files::SUBTREE_CONTROL, CONTROLLERS));
        steps.push(Step::write(
            CHROME,
            files::CPUSET_CPUS,
            derived.all_cpus.to_string(),
        ));
        steps.push(Step::write(CHROME, files::CPU_UCLAMP_MIN, boost.clone()));
        for group in PROCESS_GROUPS {
            let g = format!("{CHROME}/{group}");
            let (weight, boosted) = match group {
                "ui" => (board.cgqos.ui_cpu_weight.value, true),
                "foreground" => (board.cgqos.foreground_cpu_weight.value, true),
                _ => (board.cgqos.background_cpu_weight.value, false),
            };
            steps.push(Step::mkdir(&g));
            steps.push(Step::write(&g, files::TYPE, files::THREADED));
            steps.push(Step::write(&g, files::SUBTREE_CONTROL, CONTROLLERS));
            steps.push(Step::write(&g, files::CPU_WEIGHT, weight.to_string()));
            if boosted {
                steps.push(Step::write(&g, files::CPU_UCLAMP_MIN, boost.clone()));
            }
            for (class, cpus) in [
                (URGENT, &derived.all_cpus),
                (NON_URGENT, &derived.nonurgent_cpus),
            ] {
                let c = format!("{g}/{class}");
                steps.push(Step::mkdir(&c));
                steps.push(Step::write(&c, files::TYPE, files::THREADED));
                steps.push(Step::write(&c, files::CPUSET_CPUS, cpus.to_string()));
                if boosted && class == URGENT {
                    steps.push(Step::write(&c, files::CPU_UCLAMP_MIN, boost.clone()));
                }
            }
        }

        steps.push(Step::mkdir(VMS));
        steps.push(Step::write(VMS, files::SUBTREE_CONTROL, CONTROLLERS));
        steps.push(Step::write(
            VMS,
            files::CPUSET_CPUS,
            derived.all_cpus.to_string(),
        ));
        if let Some(b) = vms_boost {
            steps.push(Step::write(VMS, files::CPU_UCLAMP_MIN, percent(b)));
        }
        if arcvm {
            steps.extend(vm_steps(
                ARCVM,
                board.cgqos.arcvm_cpu_weight.value,
                vms_boost,
            ));
        }

        if let Some(ib) = &derived.input_boost {
            steps.push(Step {
                op: Op::Write,
                tree: Tree::Sysfs,
                path: INPUT_BOOST_PATH.into(),
                value: Some(ib.to_string()),
            });
        }
        Ok(Plan { derived, steps })
    }
}

/// The groups of one VM: `vms/<name>` (a thread root for its processes) with threaded
/// `vcpu` and `io` below it. `uclamp` boosts the VM and its vCPUs (as concierge does).
pub fn vm_steps(name: &str, weight: u32, uclamp: Option<f64>) -> Vec<Step> {
    let g = format!("{VMS}/{name}");
    let mut steps = vec![
        Step::mkdir(&g),
        Step::write(&g, files::SUBTREE_CONTROL, CONTROLLERS),
        Step::write(&g, files::CPU_WEIGHT, weight.to_string()),
    ];
    if let Some(b) = uclamp {
        steps.push(Step::write(&g, files::CPU_UCLAMP_MIN, percent(b)));
    }
    for part in [VCPU, IO] {
        let p = format!("{g}/{part}");
        steps.push(Step::mkdir(&p));
        steps.push(Step::write(&p, files::TYPE, files::THREADED));
        if let (Some(b), VCPU) = (uclamp, part) {
            steps.push(Step::write(&p, files::CPU_UCLAMP_MIN, percent(b)));
        }
    }
    steps
}

fn derive(topology: &Topology, board: &Board) -> Result<Derived, PlanError> {
    let tune = &board.scheduler_tune;
    let mut topo = topology.clone();
    if let Some(list) = &tune.cpuset_nonurgent {
        let outside = list.value.difference(&topo.possible);
        if !outside.is_empty() {
            return Err(PlanError {
                at: list.at.as_ref().map_or("board".into(), |l| l.to_string()),
                outside,
                possible: topo.possible.clone(),
            });
        }
        // Isolated or offline CPUs named by the board still never get non-urgent work.
        topo.override_little(list.value.intersection(&topo.all));
    }
    let arcvm_uclamp_min = tune
        .boost_arcvm
        .as_ref()
        .filter(|b| b.value > 0.0)
        .map(|b| (topo.max_freq_ratio() * b.value * 100.0).min(100.0))
        .map(|v| (v * 100.0).round() / 100.0);
    Ok(Derived {
        all_cpus: topo.all.clone(),
        nonurgent_cpus: topo.nonurgent_cpus(),
        boost_urgent: tune.boost_urgent.value,
        arcvm_uclamp_min,
        boost_top_app: tune
            .boost_top_app
            .as_ref()
            .map(|s| s.value)
            .or_else(|| topo.default_boost_top_app()),
        input_boost: tune.input_boost.as_ref().map(|s| s.value),
    })
}
