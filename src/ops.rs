//! Operations shared by the command line (run directly) and the daemon (run on request):
//! each takes the pieces it needs and returns a serialisable result, so both paths print
//! the same thing and exit with the same code.

use std::path::Path;

use serde::{Deserialize, Serialize};

pub use crate::session::{Moved, Session};

use crate::apply::{Outcome, apply, same_value};
use crate::board::Board;
use crate::cgroupfs::{CgroupFs, files};
use crate::error::{CliError, CliResult, Exit, Kind};
use crate::layout::{self, Target, validate_vm_name};
use crate::model::{Code, RestrictState, TaskRef};
use crate::place::{Held, PlaceError, Placer, TeardownReport, ThreadPlace};
use crate::plan::{Op, Plan, Step, Tree, join, vm_steps};
use crate::procfs::{ProcessId, Procfs, StartTime, TaskKey, ThreadId};
use crate::rules::{ClassDef, Classes};
use crate::state::{Restriction, State};

/// Where a move sends its targets: whole processes to a group, or threads to a class.
#[derive(Debug, Clone)]
pub enum Dest {
    Group(Target),
    Thread(ThreadDest),
}

/// Where a thread move sends its targets.
#[derive(Debug, Clone)]
pub enum ThreadDest {
    /// A VM thread class (`vcpu`, `io`; `None`: the group's default).
    Vm(Option<&'static str>),
    /// A thread class of the class table: its cgroup class and its task attributes.
    Class {
        class: ClassDef,
        /// Who asked, for `why`.
        by: String,
    },
}

/// Resolves what `move --thread` names: a VM class, or a thread class of `classes`.
pub fn thread_dest(name: &str, classes: &Classes, by: String) -> Result<Dest, String> {
    match name {
        layout::VCPU | layout::IO => Ok(Dest::Thread(ThreadDest::Vm(layout::parse_class(name)?))),
        _ => match classes.get(name) {
            Some(c) => Ok(Dest::Thread(ThreadDest::Class {
                class: c.clone(),
                by,
            })),
            None => Err(format!(
                "unknown thread class {name:?}{}: expected one of {} (or urgent, non-urgent, default; vcpu, io in VM groups; schedqos QOS_* names){}",
                layout::suggest(name, classes.names()),
                classes.names().join(", "),
                if Target::parse(name).is_ok() {
                    format!(
                        "; {name:?} is a group: `cgqos move PID... {name}` moves whole processes"
                    )
                } else {
                    String::new()
                }
            )),
        },
    }
}

/// A target as asked for, or already held (the daemon checks the owner under the pidfd).
pub enum Task {
    Ref(TaskRef),
    Held(Held),
}

impl Task {
    pub fn id(&self) -> u32 {
        match self {
            Task::Ref(t) => t.id,
            Task::Held(h) => h.id(),
        }
    }
}

/// Holds a target for a move to `dest`: a process for a group, a thread for a class.
pub fn hold(proc: &Procfs, dest: &Dest, t: &TaskRef) -> Result<Held, PlaceError> {
    match dest {
        Dest::Group(_) => {
            Held::process(proc, ProcessId::new(t.id), t.starttime.map(StartTime::new))
        }
        Dest::Thread(_) => Held::thread(proc, ThreadId::new(t.id), t.starttime.map(StartTime::new)),
    }
}

/// Moves each target; a failure for one id does not stop the others.
pub fn move_tasks(s: &mut Session, dest: &Dest, targets: &[TaskRef]) -> Vec<Moved> {
    let tasks: Vec<Task> = targets.iter().map(|t| Task::Ref(*t)).collect();
    move_held(s, dest, tasks)
}

/// Moves each target, holding by a pidfd those not held yet, each from its identity check
/// through its write.
pub fn move_held(s: &mut Session, dest: &Dest, targets: Vec<Task>) -> Vec<Moved> {
    match dest {
        Dest::Group(g) => place_each(s, dest, targets, |placer, h, state| {
            placer.move_held_process(h, g, state)
        }),
        Dest::Thread(ThreadDest::Vm(c)) => place_each(s, dest, targets, |placer, h, state| {
            placer.move_held_thread(h, *c, state).map(|p| vec![p])
        }),
        Dest::Thread(ThreadDest::Class { class, by }) => targets
            .into_iter()
            .map(|t| {
                let id = t.id();
                let r = held(s, dest, t)
                    .and_then(|h| move_to_class(s, &h, class, by).map(|p| (h.key(), vec![p])));
                outcome(id, r)
            })
            .collect(),
    }
}

fn held(s: &Session, dest: &Dest, t: Task) -> Result<Held, PlaceError> {
    match t {
        Task::Held(h) => Ok(h),
        Task::Ref(r) => hold(&s.proc, dest, &r),
    }
}

/// Moves each target with `place`, through one placer for all of them: each cgroup file is
/// opened once per request.
fn place_each(
    s: &mut Session,
    dest: &Dest,
    targets: Vec<Task>,
    place: impl Fn(
        &mut Placer<'_>,
        &Held,
        &mut crate::state::State,
    ) -> Result<Vec<ThreadPlace>, PlaceError>,
) -> Vec<Moved> {
    let mut state = std::mem::take(&mut s.state);
    let mut placer = s.placer();
    let out = targets
        .into_iter()
        .map(|t| {
            let id = t.id();
            let r = held(s, dest, t)
                .and_then(|h| place(&mut placer, &h, &mut state).map(|v| (h.key(), v)));
            outcome(id, r)
        })
        .collect();
    s.state = state;
    out
}

fn outcome(id: u32, r: Result<(TaskKey, Vec<ThreadPlace>), PlaceError>) -> Moved {
    match r {
        Ok((key, threads)) => Moved {
            id,
            ok: true,
            error: None,
            code: None,
            threads,
            key: Some(key),
        },
        Err(e) => Moved::failed(id, CliError::from(e)),
    }
}

/// A thread to a class: its cgroup class inside its process group (which it must be in),
/// then the class's task attributes.
fn move_to_class(
    s: &mut Session,
    h: &Held,
    class: &ClassDef,
    by: &str,
) -> Result<ThreadPlace, PlaceError> {
    let mut state = std::mem::take(&mut s.state);
    let placed = s
        .placer()
        .move_held_thread(h, class.cgroup_class.layout_class(), &mut state);
    s.state = state;
    let mut place = placed?;
    // The attributes go to the held thread only (cheap: a poll of its pidfd).
    if !h.still_there(&s.proc) {
        return Err(PlaceError::Gone(h.id()));
    }
    // The held thread's identity: nothing re-reads its stat.
    crate::classify::apply_class(s, h.key(), class, by)?;
    place.class = Some(class.name.clone());
    Ok(place)
}

/// The exit status a list of move outcomes deserves: the worst failure, where a vanished id
/// is the mildest.
pub fn moves_exit(moved: &[Moved]) -> Exit {
    let mut worst = Exit::Ok;
    for m in moved.iter().filter(|m| !m.ok) {
        let e = Kind::of_code(m.code.unwrap_or(Code::Internal)).exit();
        if worst == Exit::Ok || worst == Exit::NoSuchProcess {
            worst = e;
        }
    }
    worst
}

/// Creates the cgqos root if it is missing, and records that cgqos created it (so teardown
/// removes it). Whether it was created.
pub fn create_root(root: &Path, state: &mut State) -> CliResult<bool> {
    if root.exists() {
        return Ok(false);
    }
    std::fs::create_dir(root).map_err(|e| {
        CliError::new(
            Exit::KernelRefused,
            format!("mkdir {}: {e}", root.display()),
        )
    })?;
    state.created_root = true;
    Ok(true)
}

/// What `vm add` reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Added {
    pub name: String,
    pub group: String,
    pub vcpu: String,
    pub io: String,
    pub changed: usize,
    pub unsupported: Vec<String>,
    /// uclamp.min percent for the guest's top app (ARCVM's androidboot.arc_top_app_uclamp_min)
    pub boost_top_app: Option<u32>,
    pub cpu_uclamp_min: Option<f64>,
}

pub fn vm_add(
    s: &mut Session,
    board: &Board,
    plan: &Plan,
    sysfs: &Path,
    name: &str,
) -> CliResult<Added> {
    validate_vm_name(name).map_err(CliError::bad_input)?;
    if !s.cg.exists(layout::VMS) {
        return Err(CliError::bad_input(format!(
            "{} does not exist: run `cgqos setup` first",
            s.cg.path(layout::VMS).display()
        )));
    }
    let (weight, uclamp) = crate::plan::vm_settings(board, &plan.derived, name);
    let report = apply(&vm_steps(name, weight, uclamp), &s.cg, sysfs, false)?;
    s.state.vms.insert(name.to_string());
    let group = layout::vm_path(name);
    Ok(Added {
        name: name.into(),
        vcpu: s
            .cg
            .path(&layout::child_path(&group, layout::VCPU))
            .display()
            .to_string(),
        io: s
            .cg
            .path(&layout::child_path(&group, layout::IO))
            .display()
            .to_string(),
        group: s.cg.path(&group).display().to_string(),
        changed: report.changed(),
        unsupported: report
            .steps
            .iter()
            .filter_map(|st| match &st.outcome {
                Outcome::Unsupported(why) => Some(format!("{}: {why}", st.step)),
                _ => None,
            })
            .collect(),
        boost_top_app: plan.derived.boost_top_app,
        cpu_uclamp_min: uclamp,
    })
}

/// cpu.weight and uclamp of a VM's group, from the layout's VM table.
pub fn vm_remove(s: &mut Session, name: &str) -> CliResult<TeardownReport> {
    validate_vm_name(name).map_err(CliError::bad_input)?;
    let group = layout::vm_path(name);
    if !s.cg.exists(&group) {
        return Err(CliError::bad_input(format!(
            "no VM group {}",
            s.cg.path(&group).display()
        )));
    }
    let mut report = TeardownReport::default();
    s.placer().evacuate(&group, &s.state, &mut report);
    if report.errors.is_empty() {
        s.state.vms.remove(name);
        s.state.restrictions.remove(&group);
        Ok(report)
    } else {
        Err(CliError::new(
            Exit::KernelRefused,
            format!("vm remove incomplete: {}", report.errors.join("; ")),
        ))
    }
}

/// The full-speed `cpu.weight` of a group, as the board configures it.
/// Period of `cpu.max` quotas, in microseconds (the kernel's default).
pub const CPU_MAX_PERIOD: u64 = 100_000;

/// Writes a restriction (foreground/background weight, optional quota) to a process group
/// and remembers it so it survives a re-converge. Background is 1/16 of the full weight,
/// as concierge's 64 against 1024 shares.
pub fn restrict(
    s: &mut Session,
    board: &Board,
    group: &str,
    state: RestrictState,
    quota_percent: Option<u32>,
) -> CliResult<Restriction> {
    let target = Target::parse(group).map_err(CliError::bad_input)?;
    if matches!(&target, Target::Vm { part: Some(_), .. }) {
        return Err(CliError::bad_input(
            "restrict a whole VM (vm:<name>) or browser group, not a vcpu/io part",
        ));
    }
    let path = target.path();
    if !s.cg.exists(&path) {
        return Err(CliError::bad_input(format!(
            "group {path} does not exist: run `cgqos setup` (or `cgqos vm add`) first"
        )));
    }
    let ncpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    if let Some(q) = quota_percent {
        if q == 0 || q > 100 * ncpus {
            return Err(CliError::bad_input(format!(
                "quota_percent {q}: expected 1-{} (percent of one CPU)",
                100 * ncpus
            )));
        }
    }
    let full = layout::full_weight(board, &path);
    let r = Restriction {
        weight: match state {
            RestrictState::Foreground => full,
            RestrictState::Background => (full / 16).max(1),
        },
        cpu_max: match quota_percent {
            Some(q) => format!("{} {CPU_MAX_PERIOD}", CPU_MAX_PERIOD * q as u64 / 100),
            None => format!("max {CPU_MAX_PERIOD}"),
        },
    };
    write_restriction(&s.cg, &path, &r)?;
    s.state.restrictions.insert(path, r.clone());
    Ok(r)
}

/// Applies a remembered restriction (after a converge reset the group's weight).
pub fn write_restriction(cg: &CgroupFs, group: &str, r: &Restriction) -> CliResult<()> {
    for (file, value) in [
        (files::CPU_WEIGHT, r.weight.to_string()),
        (files::CPU_MAX, r.cpu_max.clone()),
    ] {
        let rel = join(group, file);
        if !cg.exists(&rel) {
            return Err(CliError::new(
                Exit::Unsupported,
                format!("{}: no cpu controller here", cg.path(&rel).display()),
            ));
        }
        if !same_value(file, &cg.read(&rel).unwrap_or_default(), &value) {
            cg.write(&rel, &value)?;
        }
    }
    Ok(())
}

/// One planned setting of a group, next to what the kernel has.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SettingStatus {
    pub file: String,
    pub requested: String,
    pub current: Option<String>,
    /// `ok`, `differs` (the current value is another), `unsupported` (the kernel has no such
    /// file), or `missing` (the group does not exist: run setup)
    pub state: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupStatus {
    pub path: String,
    pub exists: bool,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub cpus_effective: Option<String>,
    pub threads: Option<usize>,
    pub settings: Vec<SettingStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub root: String,
    pub board: String,
    pub in_sync: bool,
    pub unsupported: Vec<String>,
    pub groups: Vec<GroupStatus>,
}

pub fn status(cg: &CgroupFs, board: &Board, plan: &Plan) -> Status {
    let steps = status_steps(cg, board, plan);
    let groups = groups_status(cg, &steps);
    let unsupported: Vec<String> = groups
        .iter()
        .flat_map(|g| {
            g.settings
                .iter()
                .filter(|s| s.state == "unsupported")
                .map(move |s| join(&g.path, &s.file))
        })
        .collect();
    let in_sync = groups.iter().all(|g| {
        g.exists
            && g.settings
                .iter()
                .all(|s| s.state == "ok" || s.state == "unsupported")
    });
    Status {
        root: cg.root().display().to_string(),
        board: board.name.clone(),
        in_sync,
        unsupported,
        groups,
    }
}

/// The cgroup steps `status` compares: the plan's, plus those of VM groups added at run
/// time (they are part of the tree too).
fn status_steps(cg: &CgroupFs, board: &Board, plan: &Plan) -> Vec<Step> {
    let mut steps: Vec<_> = plan
        .steps
        .iter()
        .filter(|s| s.tree == Tree::Cgroup)
        .cloned()
        .collect();
    for vm in cg.children(layout::VMS) {
        if !crate::plan::plans_vm(plan, &vm) {
            let (weight, uclamp) = crate::plan::vm_settings(board, &plan.derived, &vm);
            steps.extend(vm_steps(&vm, weight, uclamp));
        }
    }
    steps
}

/// One entry per group the steps name, in step order, each with the state of the files
/// the steps write in it.
fn groups_status(cg: &CgroupFs, steps: &[Step]) -> Vec<GroupStatus> {
    let mut groups: Vec<GroupStatus> = Vec::new();
    for step in steps {
        let (dir, file) = match step.op {
            Op::Mkdir => (step.path.as_str(), None),
            Op::Write => {
                let (d, f) = step.split();
                (d, Some(f))
            }
        };
        if groups.iter().all(|g| g.path != dir) {
            groups.push(group_status(cg, dir));
        }
        let Some(file) = file else { continue };
        let g = groups
            .iter_mut()
            .find(|g| g.path == dir)
            .expect("pushed above");
        let requested = step.value.clone().unwrap_or_default();
        let current = cg.read(&step.path).ok().map(|v| v.trim().to_string());
        let Some(state) = setting_state(cg, dir, file, &requested, current.as_deref(), g.exists)
        else {
            continue;
        };
        g.settings.push(SettingStatus {
            file: file.to_string(),
            requested,
            current,
            state: state.into(),
        });
    }
    groups
}

/// How a file of group `dir` compares with the value the plan requests: "missing",
/// "unsupported", "differs" or "ok"; `None` for a setting not to report (uclamp on the
/// hierarchy root, which has no such file).
fn setting_state(
    cg: &CgroupFs,
    dir: &str,
    file: &str,
    requested: &str,
    current: Option<&str>,
    exists: bool,
) -> Option<&'static str> {
    Some(match (current, exists) {
        (_, false) => "missing",
        (None, true) if file == files::CPU_UCLAMP_MIN && cg.is_hierarchy_root(dir) => {
            return None;
        }
        (None, true) => "unsupported",
        (Some(c), true) if file == files::SUBTREE_CONTROL => {
            subtree_control_state(cg, dir, c, requested)
        }
        (Some(c), true) if same_value(file, c, requested) => "ok",
        (Some(_), true) => "differs",
    })
}

/// cgroup.subtree_control holds at least the requested controllers ("ok"); or cannot, as
/// the kernel does not offer one of them here ("unsupported"); or does not yet ("differs").
fn subtree_control_state(cg: &CgroupFs, dir: &str, current: &str, requested: &str) -> &'static str {
    let available = cg.read(&join(dir, files::CONTROLLERS)).unwrap_or_default();
    let wanted: Vec<&str> = requested
        .split_whitespace()
        .map(|c| c.trim_start_matches('+'))
        .collect();
    if wanted
        .iter()
        .all(|w| current.split_whitespace().any(|x| x == *w))
    {
        "ok"
    } else if wanted
        .iter()
        .any(|w| !available.split_whitespace().any(|x| x == *w))
    {
        "unsupported"
    } else {
        "differs"
    }
}

fn group_status(cg: &CgroupFs, rel: &str) -> GroupStatus {
    let read = |f: &str| cg.read(&join(rel, f)).ok().map(|v| v.trim().to_string());
    GroupStatus {
        path: rel.to_string(),
        exists: cg.exists(rel),
        kind: read(files::TYPE),
        cpus_effective: read(files::CPUSET_CPUS_EFFECTIVE),
        threads: cg.members(rel, files::THREADS).ok().map(|m| m.len()),
        settings: Vec::new(),
    }
}

/// What `reset` undid.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ResetReport {
    pub attrs_restored: usize,
    pub exited: usize,
    pub tasks: TeardownReport,
}

/// Undoes every change cgqos made to tasks: scheduling attributes first, then cgroups (each
/// recorded task that is still the same task goes back where it came from). The hierarchy
/// stays; `teardown` removes it.
pub fn reset(s: &mut Session) -> ResetReport {
    let (attrs_restored, exited) = crate::classify::restore_attrs(&mut s.state, &s.proc);
    let mut tasks = TeardownReport::default();
    let state = std::mem::take(&mut s.state);
    s.placer().restore_recorded("", &state, &mut tasks);
    s.state = state;
    s.state.tasks.clear();
    s.state.why.clear();
    ResetReport {
        attrs_restored,
        exited,
        tasks,
    }
}
