//! Two snapshots of the tree in, rows with rates out: no I/O, so every number is testable.
//!
//! A group's counts and CPU cover its whole subtree (`cpu.stat` is recursive, and the
//! counts follow it); its tasks are every task of the subtree, busiest first.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::layout;
use crate::state::State;

/// One group as read at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GroupSnap {
    /// Relative to the cgqos root; `""` is the root.
    pub path: String,
    /// `cgroup.type` (`domain`, `domain threaded`, `threaded`, ...), `root` for the
    /// hierarchy's root, which has none.
    pub kind: String,
    /// Not one of cgqos's groups: one row stands for its whole subtree.
    pub outside: bool,
    /// `usage_usec` of `cpu.stat` (a core file: present without the cpu controller).
    pub usage_usec: Option<u64>,
    /// `some avg10` of `cpu.pressure` (needs PSI).
    pub pressure_some_avg10: Option<f64>,
    pub cpus_effective: Option<String>,
    /// `cpu.uclamp.min` / `cpu.uclamp.max` in percent (`max` is 100).
    pub uclamp_min: Option<f64>,
    pub uclamp_max: Option<f64>,
    /// Thread ids of the group itself (of its whole subtree when `outside`).
    pub threads: Vec<u32>,
}

/// One task as read at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskSnap {
    pub tid: u32,
    pub pid: u32,
    /// `/proc/<tid>/stat` field 22: with the id, what makes the task unique.
    pub starttime: u64,
    /// utime + stime, in clock ticks.
    pub ticks: u64,
    pub comm: String,
}

#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// A monotonic clock, in microseconds.
    pub at_usec: u64,
    /// Parents before children (a pre-order walk): the root, cgqos's groups, then the
    /// collapsed others.
    pub groups: Vec<GroupSnap>,
    pub tasks: HashMap<u32, TaskSnap>,
    /// The effective uclamp (min, max) percent above the cgqos root, where its ancestors
    /// have uclamp files; none means no cap from above.
    pub parent_uclamp: Option<(f64, f64)>,
    pub warnings: Vec<String>,
}

/// What `top --once --json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// The cgqos root directory.
    pub root: String,
    /// Time between the two reads.
    pub interval_ms: u64,
    /// Online CPUs: a group can use up to `cpus * 100` percent.
    pub cpus: usize,
    pub groups: Vec<GroupRow>,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupRow {
    pub path: String,
    /// Components below the root.
    pub depth: usize,
    pub kind: String,
    /// The cgqos process group (`chrome/foreground`, `vms/arcvm`) this is or belongs to.
    pub group: Option<String>,
    /// The thread class (`urgent`, `non-urgent`, `vcpu`, `io`) when this is one.
    pub class: Option<String>,
    pub outside: bool,
    /// Distinct processes with a thread in the subtree.
    pub processes: usize,
    pub threads: usize,
    /// CPU time used over the interval, in percent of one CPU; none for a group that did not
    /// exist at the first read or has no `cpu.stat`.
    pub cpu_percent: Option<f64>,
    pub pressure_some_avg10: Option<f64>,
    pub cpus_effective: Option<String>,
    /// `cpu.uclamp.min` as written, and what the kernel enforces after its ancestors' caps.
    pub uclamp_min: Option<f64>,
    pub uclamp_min_effective: Option<f64>,
    /// The subtree's tasks, busiest first.
    pub tasks: Vec<TaskRow>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TaskRow {
    pub tid: u32,
    pub pid: u32,
    pub comm: String,
    /// The group the thread is in, relative to the cgqos root.
    pub cgroup: String,
    /// Percent of one CPU (utime + stime over the interval), at most 100.
    pub cpu_percent: f64,
    /// The rule or request that placed the thread (or its process), from the state file.
    pub placed_by: Option<String>,
}

/// The parent of a group path (`""` is the root, which has none).
pub fn parent(path: &str) -> Option<&str> {
    if path.is_empty() {
        None
    } else {
        Some(crate::cgroupfs::parent_of(path))
    }
}

/// Rows for every group of `cur`, with rates measured from `prev`.
pub fn compute(prev: &Snapshot, cur: &Snapshot, state: &State, clk_tck: u64) -> Vec<GroupRow> {
    let elapsed_usec = cur.at_usec.saturating_sub(prev.at_usec);
    let prev_usage: HashMap<&str, Option<u64>> = prev
        .groups
        .iter()
        .map(|g| (g.path.as_str(), g.usage_usec))
        .collect();
    let (members, where_) = subtree_members(cur);
    let rows_of_tasks = task_rows(prev, cur, state, clk_tck, &where_);

    let mut eff: HashMap<&str, (f64, f64)> = HashMap::new();
    let mut out = Vec::with_capacity(cur.groups.len());
    for (i, g) in cur.groups.iter().enumerate() {
        let uclamp_min_effective = effective_uclamp_min(g, cur.parent_uclamp, &mut eff);
        let tasks = busiest_first(&members[i], &rows_of_tasks);
        let processes = tasks.iter().map(|t| t.pid).collect::<HashSet<_>>().len();
        let before = prev_usage.get(g.path.as_str()).copied().flatten();
        let cpu_percent = group_cpu_percent(before, g.usage_usec, elapsed_usec);
        let placement = layout::classify(&g.path);
        out.push(GroupRow {
            path: g.path.clone(),
            depth: depth(&g.path),
            kind: g.kind.clone(),
            group: placement.as_ref().map(|p| p.group.clone()),
            class: placement.and_then(|p| p.class),
            outside: g.outside,
            processes,
            threads: members[i].len(),
            cpu_percent,
            pressure_some_avg10: g.pressure_some_avg10,
            cpus_effective: g.cpus_effective.clone(),
            uclamp_min: g.uclamp_min,
            uclamp_min_effective,
            tasks,
        });
    }
    out
}

/// Per group of `cur` (by index), the threads of its subtree; and each thread's own group.
/// Each listed thread counts in its group and every ancestor shown.
fn subtree_members(cur: &Snapshot) -> (Vec<Vec<u32>>, HashMap<u32, &str>) {
    let index: HashMap<&str, usize> = cur
        .groups
        .iter()
        .enumerate()
        .map(|(i, g)| (g.path.as_str(), i))
        .collect();
    let mut members: Vec<Vec<u32>> = vec![Vec::new(); cur.groups.len()];
    let mut where_: HashMap<u32, &str> = HashMap::new();
    for g in &cur.groups {
        for &tid in &g.threads {
            where_.insert(tid, g.path.as_str());
            let mut p = Some(g.path.as_str());
            while let Some(path) = p {
                if let Some(&i) = index.get(path) {
                    members[i].push(tid);
                }
                p = parent(path);
            }
        }
    }
    (members, where_)
}

/// A row for every listed thread still in `cur`'s tasks, keyed by thread id.
fn task_rows(
    prev: &Snapshot,
    cur: &Snapshot,
    state: &State,
    clk_tck: u64,
    where_: &HashMap<u32, &str>,
) -> HashMap<u32, TaskRow> {
    let elapsed_usec = cur.at_usec.saturating_sub(prev.at_usec);
    let task_row = |tid: u32| -> Option<TaskRow> {
        let t = cur.tasks.get(&tid)?;
        Some(TaskRow {
            tid,
            pid: t.pid,
            comm: t.comm.clone(),
            cgroup: where_.get(&tid).map_or(String::new(), |s| s.to_string()),
            cpu_percent: task_cpu(prev.tasks.get(&tid), t, elapsed_usec, clk_tck),
            placed_by: placed_by(state, t, &cur.tasks),
        })
    };
    where_
        .keys()
        .filter_map(|&tid| task_row(tid).map(|r| (tid, r)))
        .collect()
}

/// The uclamp.min the kernel enforces for `g`, recording its effective (min, max) in `eff`
/// for its children. Parents come before children in the snapshot, so `eff` holds them.
fn effective_uclamp_min<'a>(
    g: &'a GroupSnap,
    parent_uclamp: Option<(f64, f64)>,
    eff: &mut HashMap<&'a str, (f64, f64)>,
) -> Option<f64> {
    let above = parent(&g.path)
        .and_then(|p| eff.get(p).copied())
        .or(parent_uclamp)
        .unwrap_or((100.0, 100.0));
    g.uclamp_min.map(|min| {
        let max = g.uclamp_max.unwrap_or(100.0).min(above.1);
        // The kernel caps a group's protection by its limit, both after its parent's.
        let e = (min.min(above.0).min(max), max);
        eff.insert(g.path.as_str(), e);
        e.0
    })
}

/// The rows of `tids`, busiest first, then by thread id.
fn busiest_first(tids: &[u32], rows: &HashMap<u32, TaskRow>) -> Vec<TaskRow> {
    let mut tasks: Vec<TaskRow> = tids
        .iter()
        .filter_map(|tid| rows.get(tid).cloned())
        .collect();
    tasks.sort_by(|a, b| {
        b.cpu_percent
            .total_cmp(&a.cpu_percent)
            .then(a.tid.cmp(&b.tid))
    });
    tasks
}

/// Percent of one CPU a group used between two `usage_usec` reads; none when either is
/// missing, the counter went back or no time passed.
fn group_cpu_percent(before: Option<u64>, now: Option<u64>, elapsed_usec: u64) -> Option<f64> {
    match (before, now) {
        (Some(a), Some(b)) if b >= a && elapsed_usec > 0 => {
            Some(round2((b - a) as f64 * 100.0 / elapsed_usec as f64))
        }
        _ => None,
    }
}

/// Components below the root (`""` is 0).
fn depth(path: &str) -> usize {
    if path.is_empty() {
        0
    } else {
        path.split('/').count()
    }
}

/// Percent of one CPU a task used between two reads. A task not seen at the first read (or
/// whose id now names another task) started during the interval: all its time is new.
fn task_cpu(prev: Option<&TaskSnap>, cur: &TaskSnap, elapsed_usec: u64, clk_tck: u64) -> f64 {
    if elapsed_usec == 0 || clk_tck == 0 {
        return 0.0;
    }
    let before = prev
        .filter(|p| p.starttime == cur.starttime)
        .map_or(0, |p| p.ticks);
    let ticks = cur.ticks.saturating_sub(before);
    let pct = ticks as f64 * 1e6 / clk_tck as f64 * 100.0 / elapsed_usec as f64;
    // One thread runs on one CPU at a time; tick accounting can overshoot a short interval.
    round2(pct.min(100.0))
}

/// The newest record for the thread, else for its process, when it is still the same task.
fn placed_by(state: &State, t: &TaskSnap, tasks: &HashMap<u32, TaskSnap>) -> Option<String> {
    if let Some(w) = state
        .why
        .get(&t.tid)
        .filter(|w| w.starttime.get() == t.starttime)
    {
        return Some(w.by.clone());
    }
    let process_start = tasks.get(&t.pid)?.starttime;
    state
        .why
        .get(&t.pid)
        .filter(|w| w.starttime.get() == process_start)
        .map(|w| w.by.clone())
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Why;

    fn task(tid: u32, pid: u32, ticks: u64) -> TaskSnap {
        TaskSnap {
            tid,
            pid,
            starttime: 1000 + tid as u64,
            ticks,
            comm: format!("t{tid}"),
        }
    }

    fn group(path: &str, usage: u64, threads: &[u32]) -> GroupSnap {
        GroupSnap {
            path: path.into(),
            kind: "threaded".into(),
            usage_usec: Some(usage),
            threads: threads.to_vec(),
            ..Default::default()
        }
    }

    fn snap(at: u64, groups: Vec<GroupSnap>, tasks: Vec<TaskSnap>) -> Snapshot {
        Snapshot {
            at_usec: at,
            groups,
            tasks: tasks.into_iter().map(|t| (t.tid, t)).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn rates_counts_and_busiest_tasks_follow_the_subtree() {
        let prev = snap(
            0,
            vec![
                group("", 0, &[1]),
                group("chrome", 0, &[]),
                group("chrome/ui", 0, &[10]),
                group("chrome/ui/urgent", 0, &[11]),
            ],
            vec![task(1, 1, 0), task(10, 10, 0), task(11, 10, 5)],
        );
        // Two seconds later: the urgent thread ran 150 ticks (1.5 s), the main thread 20.
        let cur = snap(
            2_000_000,
            vec![
                group("", 1_800_000, &[1]),
                group("chrome", 1_700_000, &[]),
                group("chrome/ui", 1_700_000, &[10]),
                group("chrome/ui/urgent", 1_500_000, &[11]),
            ],
            vec![task(1, 1, 0), task(10, 10, 20), task(11, 10, 155)],
        );
        let rows = compute(&prev, &cur, &State::default(), 100);
        let ui = &rows[2];
        assert_eq!(ui.path, "chrome/ui");
        assert_eq!(ui.depth, 2);
        assert_eq!(ui.group.as_deref(), Some("chrome/ui"));
        assert_eq!(ui.class, None);
        assert_eq!((ui.processes, ui.threads), (1, 2));
        assert_eq!(ui.cpu_percent, Some(85.0));
        assert_eq!(ui.tasks[0].tid, 11);
        assert_eq!(ui.tasks[0].cpu_percent, 75.0);
        assert_eq!(ui.tasks[0].cgroup, "chrome/ui/urgent");
        assert_eq!(ui.tasks[1].cpu_percent, 10.0);
        let urgent = &rows[3];
        assert_eq!(urgent.class.as_deref(), Some("urgent"));
        assert_eq!((urgent.processes, urgent.threads), (1, 1));
        assert_eq!(urgent.cpu_percent, Some(75.0));
        let root = &rows[0];
        assert_eq!((root.processes, root.threads), (2, 3));
        assert_eq!(root.depth, 0);
    }

    #[test]
    fn a_reused_id_and_a_new_group_are_not_given_old_numbers() {
        let prev = snap(0, vec![group("", 100, &[7])], vec![task(7, 7, 500)]);
        let mut reborn = task(7, 7, 30);
        reborn.starttime += 1;
        let cur = snap(
            1_000_000,
            vec![group("", 50, &[7]), group("vms", 10, &[])],
            vec![reborn],
        );
        let rows = compute(&prev, &cur, &State::default(), 100);
        // cpu.stat went backwards (the group was recreated): no rate rather than a wrong one.
        assert_eq!(rows[0].cpu_percent, None);
        assert_eq!(rows[1].cpu_percent, None);
        assert_eq!(rows[0].tasks[0].cpu_percent, 30.0);
    }

    #[test]
    fn a_task_never_exceeds_one_cpu_and_zero_time_gives_zero() {
        let prev = snap(0, vec![group("", 0, &[1])], vec![task(1, 1, 0)]);
        let cur = snap(100_000, vec![group("", 0, &[1])], vec![task(1, 1, 50)]);
        let rows = compute(&prev, &cur, &State::default(), 100);
        assert_eq!(rows[0].tasks[0].cpu_percent, 100.0);
        let same = compute(&cur, &cur, &State::default(), 100);
        assert_eq!(same[0].tasks[0].cpu_percent, 0.0);
        assert_eq!(same[0].cpu_percent, None);
    }

    #[test]
    fn effective_uclamp_is_capped_by_every_ancestor_and_by_the_limit() {
        let g = |path: &str, min: Option<f64>, max: Option<f64>| GroupSnap {
            path: path.into(),
            uclamp_min: min,
            uclamp_max: max,
            ..Default::default()
        };
        let cur = Snapshot {
            groups: vec![
                g("", None, None),
                g("chrome", Some(20.0), None),
                g("chrome/ui", Some(50.0), None),
                g("chrome/ui/urgent", Some(60.0), Some(10.0)),
                g("vms", Some(0.0), None),
                g("vms/arcvm", Some(30.0), None),
            ],
            ..Default::default()
        };
        let rows = compute(&Snapshot::default(), &cur, &State::default(), 100);
        let eff: Vec<Option<f64>> = rows.iter().map(|r| r.uclamp_min_effective).collect();
        assert_eq!(
            eff,
            vec![
                None,
                Some(20.0),
                Some(20.0),
                Some(10.0),
                Some(0.0),
                Some(0.0)
            ]
        );
        assert_eq!(rows[2].uclamp_min, Some(50.0));
        // A cap from above the cgqos root applies too.
        let capped = Snapshot {
            parent_uclamp: Some((5.0, 100.0)),
            ..cur
        };
        let rows = compute(&Snapshot::default(), &capped, &State::default(), 100);
        assert_eq!(rows[1].uclamp_min_effective, Some(5.0));
    }

    #[test]
    fn placed_by_comes_from_the_thread_then_its_process_when_still_the_same_task() {
        let why = |pid: u32, starttime: u64, by: &str| Why {
            pid: crate::procfs::ProcessId::new(pid),
            starttime: crate::procfs::StartTime::new(starttime),
            by: by.into(),
            group: None,
            class: None,
            attrs: Default::default(),
            at: 0,
        };
        let mut state = State::default();
        state.why.insert(11, why(10, 1011, "rule r (a.yaml:2)"));
        state
            .why
            .insert(10, why(10, 1010, "request from uid 0 (pid 5)"));
        // A stale record: thread 12 restarted since.
        state.why.insert(12, why(10, 1, "rule stale (b.yaml:1)"));
        let cur = snap(
            1,
            vec![group("", 0, &[10, 11, 12, 13])],
            vec![
                task(10, 10, 0),
                task(11, 10, 3),
                task(12, 10, 2),
                task(13, 13, 1),
            ],
        );
        let rows = compute(&Snapshot::default(), &cur, &state, 100);
        let by: HashMap<u32, Option<String>> = rows[0]
            .tasks
            .iter()
            .map(|t| (t.tid, t.placed_by.clone()))
            .collect();
        assert_eq!(by[&11].as_deref(), Some("rule r (a.yaml:2)"));
        assert_eq!(by[&12].as_deref(), Some("request from uid 0 (pid 5)"));
        assert_eq!(by[&10].as_deref(), Some("request from uid 0 (pid 5)"));
        assert_eq!(by[&13], None);
    }

    #[test]
    fn parents_of_paths() {
        assert_eq!(parent(""), None);
        assert_eq!(parent("chrome"), Some(""));
        assert_eq!(parent("chrome/ui/urgent"), Some("chrome/ui"));
    }
}
