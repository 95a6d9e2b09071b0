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
use crate::layout::table::{self, Cpus, Group, Kind, ROOT, Uclamp, VM_PARTS, VMS_TABLE, Vm};
use crate::layout::{child_path, vm_path};
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
    "{at}: {}: CPUs {outside} are not possible on this machine (possible: {possible})",
    crate::board::model::CPUSET_NONURGENT
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
    /// The steps of the layout table, group by group from the root down (a group's own
    /// steps before its children's), then the input boost.
    pub fn build(topology: &Topology, board: &Board) -> Result<Plan, PlanError> {
        let derived = derive(topology, board)?;
        let tree = resolve(&ROOT, String::new(), board, &derived, None);
        let mut steps = Vec::new();
        emit(&tree, &mut steps);
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

/// A group of the table with its values for one (topology, board).
struct Resolved {
    path: String,
    kind: Kind,
    cpus: Option<CpuList>,
    weight: Option<u32>,
    uclamp: Option<f64>,
    children: Vec<Resolved>,
}

fn resolve(
    group: &Group,
    path: String,
    board: &Board,
    derived: &Derived,
    parent_uclamp: Option<f64>,
) -> Resolved {
    // The VMs setup makes sit below `vms`; others come and go with `vm add`.
    let vms: Vec<&Vm> = if group.kind == Kind::VmRoot {
        VMS_TABLE
            .iter()
            .filter(|v| v.in_plan.is_some_and(|f| f(board)))
            .collect()
    } else {
        Vec::new()
    };
    let own = match group.uclamp {
        Uclamp::None => None,
        Uclamp::Board(get) => Some(get(board) as f64),
        Uclamp::ArcvmBoost => derived.arcvm_uclamp_min,
        Uclamp::Parent => parent_uclamp,
        // Filled in from the children below.
        Uclamp::MaxBelow => None,
    };
    let mut children: Vec<Resolved> = group
        .children
        .iter()
        .map(|c| resolve(c, child_path(&path, c.name), board, derived, own))
        .collect();
    for v in vms {
        let name = v.name.unwrap_or_default();
        let (weight, uclamp) = vm_settings(board, derived, name);
        children.push(vm_tree(name, weight, uclamp));
    }
    let uclamp = match group.uclamp {
        Uclamp::MaxBelow => children.iter().filter_map(|c| c.uclamp).reduce(f64::max),
        _ => own,
    };
    Resolved {
        path,
        kind: group.kind,
        cpus: match group.cpus {
            Cpus::None => None,
            Cpus::All => Some(derived.all_cpus.clone()),
            Cpus::NonUrgent => Some(derived.nonurgent_cpus.clone()),
        },
        weight: group.weight.value(board),
        uclamp,
        children,
    }
}

/// One VM's groups with its settings (its parts take nothing but the VM's boost: a unit
/// test of the table pins that).
fn vm_tree(name: &str, weight: u32, uclamp: Option<f64>) -> Resolved {
    let path = vm_path(name);
    Resolved {
        children: VM_PARTS
            .iter()
            .map(|p| Resolved {
                path: child_path(&path, p.name),
                kind: p.kind,
                cpus: None,
                weight: None,
                uclamp: uclamp.filter(|_| matches!(p.uclamp, Uclamp::Parent)),
                children: Vec::new(),
            })
            .collect(),
        path,
        kind: Kind::Vm,
        cpus: None,
        weight: Some(weight),
        uclamp,
    }
}

/// A group's steps in the order the kernel needs them, then its children's.
fn emit(g: &Resolved, steps: &mut Vec<Step>) {
    let p = g.path.as_str();
    if g.kind != Kind::Root {
        steps.push(Step::mkdir(p));
    }
    if g.kind.threaded() {
        steps.push(Step::write(p, files::TYPE, files::THREADED));
    }
    if g.kind.enables_controllers() {
        steps.push(Step::write(p, files::SUBTREE_CONTROL, CONTROLLERS));
    }
    if let Some(cpus) = &g.cpus {
        steps.push(Step::write(p, files::CPUSET_CPUS, cpus.to_string()));
    }
    if let Some(w) = g.weight {
        steps.push(Step::write(p, files::CPU_WEIGHT, w.to_string()));
    }
    // The cgqos root's own uclamp.min caps everything below when it is not the cgroup2
    // root (which has no uclamp files; apply skips it there).
    if let Some(u) = g.uclamp {
        steps.push(Step::write(p, files::CPU_UCLAMP_MIN, percent(u)));
    }
    for c in &g.children {
        emit(c, steps);
    }
}

/// The groups of one VM: `vms/<name>` (a thread root for its processes) with threaded
/// `vcpu` and `io` below it. `uclamp` boosts the VM and its vCPUs (as concierge does).
pub fn vm_steps(name: &str, weight: u32, uclamp: Option<f64>) -> Vec<Step> {
    let mut steps = Vec::new();
    emit(&vm_tree(name, weight, uclamp), &mut steps);
    steps
}

/// cpu.weight and uclamp of a VM's group, from its row of the layout's VM table.
pub fn vm_settings(board: &Board, derived: &Derived, name: &str) -> (u32, Option<f64>) {
    let v = table::vm(name);
    let weight = v.weight.value(board).unwrap_or(1);
    let uclamp = match v.uclamp {
        Uclamp::Board(get) => Some(get(board) as f64),
        Uclamp::ArcvmBoost => derived.arcvm_uclamp_min,
        Uclamp::None | Uclamp::Parent | Uclamp::MaxBelow => None,
    };
    (weight, uclamp)
}

/// Whether the plan makes the group of VM `name` (the others are `vm add`'s).
pub fn plans_vm(plan: &Plan, name: &str) -> bool {
    let path = vm_path(name);
    plan.steps
        .iter()
        .any(|s| s.op == Op::Mkdir && s.tree == Tree::Cgroup && s.path == path)
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
