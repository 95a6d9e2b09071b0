//! The layout as data: every group cgqos makes, what kind it is, and where its `cpu.weight`,
//! `cpu.uclamp.min` and `cpuset.cpus` come from. `plan` turns it into steps, `status` into
//! rows, and the names users type (`Target::parse`, `parse_class`, placement's and the
//! policy's class checks) are read from it; nothing else spells a group or class.
//!
//! Adding a thread class to every browser group is one row in [`BROWSER_CLASSES`] (and its
//! background form in [`BACKGROUND_CLASSES`]); a
//! process group is one row in [`CHROME_GROUPS`]; a VM with its own settings one row in
//! [`VMS_TABLE`].

use crate::board::Board;

pub const CHROME: &str = "chrome";
pub const VMS: &str = "vms";
pub const ARCVM: &str = "arcvm";
pub const URGENT: &str = "urgent";
pub const NON_URGENT: &str = "non-urgent";
pub const VCPU: &str = "vcpu";
pub const IO: &str = "io";
/// The class word for "the group itself, no class" (`move --thread TID default`).
pub const DEFAULT_CLASS: &str = "default";

/// What a group is: fixes its `cgroup.type`, whether it enables controllers for children,
/// and what may be placed in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The cgqos root itself (the empty path).
    Root,
    /// A domain whose children are threaded: one thread root for all browser processes.
    ThreadRoot,
    /// Threaded; whole processes are placed here and their threads keep their class below.
    ProcessGroup,
    /// Threaded leaf inside a process group: threads are placed here.
    ThreadClass,
    /// A domain holding one thread root per VM.
    VmRoot,
    /// One VM (`vms/<name>`): the thread root of that VM's processes; made per VM.
    Vm,
    /// Threaded leaf inside a VM (`vcpu`, `io`): threads are placed here.
    VmPart,
}

impl Kind {
    /// Written `threaded` before anything is enabled below it.
    pub fn threaded(self) -> bool {
        matches!(self, Kind::ProcessGroup | Kind::ThreadClass | Kind::VmPart)
    }

    /// Enables `+cpu +cpuset` for its children (leaves do not: they have none).
    pub fn enables_controllers(self) -> bool {
        !matches!(self, Kind::ThreadClass | Kind::VmPart)
    }

    /// A class of the group above it, named after `move --thread`.
    pub fn is_class(self) -> bool {
        matches!(self, Kind::ThreadClass | Kind::VmPart)
    }

    /// Where processes go (the group a class belongs to).
    pub fn holds_processes(self) -> bool {
        matches!(self, Kind::ProcessGroup | Kind::Vm)
    }
}

/// Where a group's `cpu.weight` comes from.
#[derive(Debug, Clone, Copy)]
pub enum Weight {
    None,
    /// A board setting (its key is spelled in `board::model`).
    Board(fn(&Board) -> u32),
}

impl Weight {
    pub fn value(self, board: &Board) -> Option<u32> {
        match self {
            Weight::None => None,
            Weight::Board(get) => Some(get(board)),
        }
    }
}

/// Where a group's `cpu.uclamp.min` comes from (percent; written only when there is one).
#[derive(Debug, Clone, Copy)]
pub enum Uclamp {
    None,
    /// A board setting, in percent.
    Board(fn(&Board) -> u32),
    /// ArcVM's boost, derived from `scheduler-tune.boost-arcvm` and the topology.
    ArcvmBoost,
    /// The group above's value (an urgent class of a boosted group, a VM's vCPUs).
    Parent,
    /// The largest value below it: the kernel caps a group's effective value by its
    /// parent's, so every ancestor carries at least the largest of its descendants.
    MaxBelow,
}

/// Where a group's `cpuset.cpus` comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cpus {
    None,
    /// Every usable CPU (the parent's otherwise empty cpuset is not inherited).
    All,
    /// The CPUs non-urgent work may use (the little cores, or the board's list).
    NonUrgent,
}

/// One group of the layout and the groups below it.
#[derive(Debug, Clone, Copy)]
pub struct Group {
    /// The directory name (empty for the root).
    pub name: &'static str,
    pub kind: Kind,
    pub weight: Weight,
    pub uclamp: Uclamp,
    pub cpus: Cpus,
    /// Other spellings users may type for it (besides its name).
    pub aliases: &'static [&'static str],
    /// Whether the threads of a process in it may have a class's real-time policy (a
    /// process group's own rule; its classes follow it). Where not, the class applies
    /// with SCHED_OTHER instead, as resourced treats a background process.
    pub real_time: bool,
    pub children: &'static [Group],
}

impl Group {
    const fn new(name: &'static str, kind: Kind) -> Group {
        Group {
            name,
            kind,
            weight: Weight::None,
            uclamp: Uclamp::None,
            cpus: Cpus::None,
            aliases: &[],
            real_time: true,
            children: &[],
        }
    }

    /// Whether `word` names this group (its name or an alias).
    pub fn answers_to(&self, word: &str) -> bool {
        self.name == word || self.aliases.contains(&word)
    }
}

/// The thread classes of every browser process group.
pub const BROWSER_CLASSES: &[Group] = &[
    Group {
        cpus: Cpus::All,
        uclamp: Uclamp::Parent,
        ..Group::new(URGENT, Kind::ThreadClass)
    },
    Group {
        cpus: Cpus::NonUrgent,
        aliases: &["nonurgent"],
        ..Group::new(NON_URGENT, Kind::ThreadClass)
    },
];

/// The thread classes of the background group: resourced never gives a thread of a
/// background process the foreground cpuset, so the group and its urgent class run where
/// non-urgent work does (its threads go back to all CPUs with their process).
pub const BACKGROUND_CLASSES: &[Group] = &[
    Group {
        cpus: Cpus::NonUrgent,
        ..BROWSER_CLASSES[0]
    },
    BROWSER_CLASSES[1],
];

/// The browser's process groups; each one's bare name is also an alias (`ui`).
pub const CHROME_GROUPS: &[Group] = &[
    Group {
        weight: Weight::Board(|b| b.cgqos.ui_cpu_weight.value),
        uclamp: Uclamp::Board(|b| b.scheduler_tune.boost_urgent.value),
        children: BROWSER_CLASSES,
        ..Group::new("ui", Kind::ProcessGroup)
    },
    Group {
        weight: Weight::Board(|b| b.cgqos.foreground_cpu_weight.value),
        uclamp: Uclamp::Board(|b| b.scheduler_tune.boost_urgent.value),
        children: BROWSER_CLASSES,
        ..Group::new("foreground", Kind::ProcessGroup)
    },
    Group {
        weight: Weight::Board(|b| b.cgqos.background_cpu_weight.value),
        cpus: Cpus::NonUrgent,
        real_time: false,
        children: BACKGROUND_CLASSES,
        ..Group::new("background", Kind::ProcessGroup)
    },
];

/// The parts of every VM: the vCPUs share the VM's boost.
pub const VM_PARTS: &[Group] = &[
    Group {
        uclamp: Uclamp::Parent,
        ..Group::new(VCPU, Kind::VmPart)
    },
    Group::new(IO, Kind::VmPart),
];

/// The static tree. `vms` has no fixed children: its VMs come from [`VMS_TABLE`] (those
/// setup makes) and `vm add`.
pub const ROOT: Group = Group {
    uclamp: Uclamp::MaxBelow,
    children: &[
        Group {
            cpus: Cpus::All,
            uclamp: Uclamp::MaxBelow,
            children: CHROME_GROUPS,
            ..Group::new(CHROME, Kind::ThreadRoot)
        },
        Group {
            cpus: Cpus::All,
            uclamp: Uclamp::MaxBelow,
            ..Group::new(VMS, Kind::VmRoot)
        },
    ],
    ..Group::new("", Kind::Root)
};

/// A VM's settings: a named VM's own, or (`name: None`) every other VM's.
#[derive(Debug, Clone, Copy)]
pub struct Vm {
    pub name: Option<&'static str>,
    pub weight: Weight,
    pub uclamp: Uclamp,
    /// Whether `setup` makes it (others are made by `vm add`). A named VM also answers to
    /// `<name>` and `<name>-<part>` (`arcvm`, `arcvm-vcpu`).
    pub in_plan: Option<fn(&Board) -> bool>,
}

pub const VMS_TABLE: &[Vm] = &[
    Vm {
        name: Some(ARCVM),
        weight: Weight::Board(|b| b.cgqos.arcvm_cpu_weight.value),
        uclamp: Uclamp::ArcvmBoost,
        in_plan: Some(|b| b.cgqos.arcvm.value),
    },
    Vm {
        name: None,
        weight: Weight::Board(|b| b.cgqos.vm_cpu_weight.value),
        uclamp: Uclamp::None,
        in_plan: None,
    },
];

/// The settings of the VM called `name`.
pub fn vm(name: &str) -> &'static Vm {
    VMS_TABLE
        .iter()
        .find(|v| v.name == Some(name))
        .unwrap_or_else(other_vm)
}

/// The settings of a VM without a row of its own.
fn other_vm() -> &'static Vm {
    // The table's last row; a unit test pins that it is the only unnamed one.
    VMS_TABLE
        .iter()
        .find(|v| v.name.is_none())
        .unwrap_or(&VMS_TABLE[VMS_TABLE.len() - 1])
}

/// The VMs with their own settings (`arcvm`), in table order.
pub fn named_vms() -> impl Iterator<Item = &'static str> {
    VMS_TABLE.iter().filter_map(|v| v.name)
}

/// `vms/<name>`.
pub fn vm_path(name: &str) -> String {
    format!("{VMS}/{name}")
}

/// `<group>/<child>` (the root is the empty path).
pub fn child_path(group: &str, child: &str) -> String {
    if group.is_empty() {
        child.to_string()
    } else {
        format!("{group}/{child}")
    }
}

/// The row of a path relative to the cgqos root: a fixed group, or a VM (any name below
/// `vms`) and its parts. The VM group's own row is built from its [`Vm`] settings.
/// Whether threads of a process in process group `group` may have a real-time class policy
/// (see [`Group::real_time`]); anything that is not a layout group may.
pub fn allows_real_time(group: &str) -> bool {
    lookup(group).is_none_or(|g| g.real_time)
}

pub fn lookup(rel: &str) -> Option<Group> {
    let mut group = ROOT;
    for part in rel.split('/').filter(|p| !p.is_empty()) {
        group = match group.kind {
            Kind::VmRoot => vm_group(vm(part)),
            _ => *group.children.iter().find(|c| c.name == part)?,
        };
    }
    Some(group)
}

/// The row of one VM's group.
pub fn vm_group(v: &Vm) -> Group {
    Group {
        weight: v.weight,
        uclamp: v.uclamp,
        children: VM_PARTS,
        ..Group::new("", Kind::Vm)
    }
}

/// The classes threads may be moved to inside `group` (a process group or VM path).
pub fn classes_of(group: &str) -> Vec<&'static str> {
    lookup(group)
        .filter(|g| g.kind.holds_processes())
        .map(|g| g.children.iter().map(|c| c.name).collect())
        .unwrap_or_default()
}

/// Every class word of `move --thread` with its canonical name (`None`: the default), in
/// table order: the browser classes and their aliases, `default`, then the VM parts.
pub fn class_words() -> Vec<(&'static str, Option<&'static str>)> {
    let mut out = Vec::new();
    for c in BROWSER_CLASSES {
        out.push((c.name, Some(c.name)));
        out.extend(c.aliases.iter().map(|a| (*a, Some(c.name))));
    }
    out.push((DEFAULT_CLASS, None));
    out.extend(VM_PARTS.iter().map(|p| (p.name, Some(p.name))));
    out
}

/// The canonical word of a class as the policy names it (`nonurgent` is `non-urgent`,
/// `default` stays `default`); `None` when `word` is no class of the layout.
pub fn canonical_class(word: &str) -> Option<&'static str> {
    class_words()
        .into_iter()
        .find(|(w, _)| *w == word)
        .map(|(_, c)| c.unwrap_or(DEFAULT_CLASS))
}

/// The full-speed `cpu.weight` of a process group or VM path, as the board configures it
/// (a path that is neither gets the VM default).
pub fn full_weight(board: &Board, group: &str) -> u32 {
    lookup(group)
        .filter(|g| g.kind.holds_processes())
        .and_then(|g| g.weight.value(board))
        .or_else(|| other_vm().weight.value(board))
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_background_group_refuses_real_time() {
        assert!(!allows_real_time("chrome/background"));
        assert!(allows_real_time("chrome/foreground"));
        assert!(allows_real_time("chrome/ui"));
        assert!(allows_real_time("vms/termina"));
        let rr = crate::sched::TaskAttrs {
            policy: Some(crate::sched::SCHED_RR),
            priority: Some(8),
            nice: Some(-8),
            ..Default::default()
        };
        let demoted = rr.without_real_time();
        assert_eq!(demoted.policy, Some(crate::sched::SCHED_OTHER));
        assert_eq!((demoted.priority, demoted.nice), (None, Some(-8)));
    }

    fn walk(g: &Group, path: &str, out: &mut Vec<(String, Group)>) {
        out.push((path.to_string(), *g));
        for c in g.children {
            walk(c, &child_path(path, c.name), out);
        }
    }

    fn all() -> Vec<(String, Group)> {
        let mut out = Vec::new();
        walk(&ROOT, "", &mut out);
        walk(&vm_group(vm(ARCVM)), &vm_path(ARCVM), &mut out);
        out
    }

    /// The background group has every browser class, by the same names; only the urgent
    /// one differs, by its CPUs.
    #[test]
    fn the_background_group_has_the_browser_classes() {
        let names = |t: &[Group]| t.iter().map(|g| (g.name, g.aliases)).collect::<Vec<_>>();
        assert_eq!(names(BACKGROUND_CLASSES), names(BROWSER_CLASSES));
        let cpus = |t: &[Group]| t.iter().map(|g| g.cpus).collect::<Vec<_>>();
        assert_eq!(cpus(BACKGROUND_CLASSES), [Cpus::NonUrgent, Cpus::NonUrgent]);
        assert_eq!(cpus(BROWSER_CLASSES), [Cpus::All, Cpus::NonUrgent]);
    }

    #[test]
    fn every_group_has_a_kind_its_parent_allows() {
        for (path, g) in all() {
            for c in g.children {
                let ok = matches!(
                    (g.kind, c.kind),
                    (Kind::Root, Kind::ThreadRoot | Kind::VmRoot)
                        | (Kind::ThreadRoot, Kind::ProcessGroup)
                        | (Kind::ProcessGroup, Kind::ThreadClass)
                        | (Kind::Vm, Kind::VmPart)
                );
                assert!(ok, "{path}/{}: {:?} under {:?}", c.name, c.kind, g.kind);
            }
            if g.kind.is_class() {
                assert!(g.children.is_empty(), "{path}: a class is a leaf");
            }
            assert_eq!(lookup(&path).map(|l| l.kind), Some(g.kind), "{path}");
        }
        assert_eq!(lookup("vms/termina/io").map(|g| g.kind), Some(Kind::VmPart));
        assert!(lookup("chrome/ui/gpu").is_none());
        assert!(lookup("other").is_none());
    }

    #[test]
    fn names_and_aliases_are_unique_where_they_are_typed() {
        let mut words: Vec<&str> = CHROME_GROUPS.iter().map(|g| g.name).collect();
        words.extend(named_vms());
        words.sort_unstable();
        let n = words.len();
        words.dedup();
        assert_eq!(words.len(), n, "a group alias names two groups");
        let classes: Vec<&str> = class_words().iter().map(|(w, _)| *w).collect();
        let mut sorted = classes.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(
            sorted.len(),
            classes.len(),
            "a class word names two classes"
        );
        for (_, g) in all() {
            for a in g.aliases {
                assert!(!a.is_empty() && !a.contains('/'), "alias {a:?}");
            }
        }
    }

    #[test]
    fn parent_values_only_where_a_parent_has_one() {
        // A `Parent` uclamp under a `MaxBelow` group would depend on itself.
        for (path, g) in all() {
            for c in g.children {
                if matches!(c.uclamp, Uclamp::Parent) {
                    assert!(!matches!(g.uclamp, Uclamp::MaxBelow), "{path}/{}", c.name);
                }
            }
        }
        // A VM's parts take nothing but their VM's boost (`plan::vm_steps` relies on it).
        for p in VM_PARTS {
            assert!(
                matches!(p.uclamp, Uclamp::Parent | Uclamp::None),
                "{}",
                p.name
            );
            assert!(matches!(p.weight, Weight::None) && p.cpus == Cpus::None);
        }
        assert_eq!(VMS_TABLE.iter().filter(|v| v.name.is_none()).count(), 1);
        assert!(VMS_TABLE.last().unwrap().name.is_none());
    }

    #[test]
    fn lookups_answer_as_the_layout_reads() {
        assert_eq!(classes_of("chrome/background"), [URGENT, NON_URGENT]);
        assert_eq!(classes_of("vms/termina"), [VCPU, IO]);
        assert!(classes_of("chrome").is_empty());
        assert!(classes_of("vms/termina/io").is_empty());
        assert_eq!(canonical_class("nonurgent"), Some(NON_URGENT));
        assert_eq!(canonical_class("default"), Some(DEFAULT_CLASS));
        assert_eq!(canonical_class("balanced"), None);
        assert_eq!(vm_path("x"), "vms/x");
    }
}
