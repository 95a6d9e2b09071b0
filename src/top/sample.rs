//! One snapshot of the tree: every group below the cgqos root with its cgroup files, and
//! every task in those groups with its CPU time. Read through [`CgroupFs`] and [`Procfs`],
//! so tests point it at fake trees.
//!
//! cgqos's own subtrees (`chrome/`, `vms/`) get a row per group; any other child of the root
//! is one row for its whole subtree, like a collapsed `systemd-cgtop` branch. A task that
//! exits while being read is left out; a file the kernel does not offer is a missing value.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::Path;

use super::model::{GroupSnap, Snapshot, TaskSnap};
use crate::cgroupfs::{CgroupFs, files};
use crate::layout;
use crate::plan::join;
use crate::procfs::{ProcessId, Procfs};

/// At most this many groups are read (a delegated subtree can hold any number).
pub const MAX_GROUPS: usize = 4096;
/// And at most this deep below the root.
pub const MAX_DEPTH: usize = 16;

pub const CPU_STAT: &str = "cpu.stat";
pub const CPU_PRESSURE: &str = "cpu.pressure";
pub const CPU_UCLAMP_MAX: &str = "cpu.uclamp.max";

pub struct Sampler {
    pub cg: CgroupFs,
    pub proc: Procfs,
    pub max_groups: usize,
}

struct Walk {
    snap: Snapshot,
    pids: BTreeSet<u32>,
    groups: usize,
    truncated: bool,
}

impl Sampler {
    pub fn new(cg: CgroupFs, proc: Procfs) -> Sampler {
        Sampler {
            cg,
            proc,
            max_groups: MAX_GROUPS,
        }
    }

    /// Reads the tree and its tasks; `at_usec` is the caller's monotonic clock.
    pub fn snapshot(&self, at_usec: u64) -> Snapshot {
        let mut w = Walk {
            snap: Snapshot {
                at_usec,
                parent_uclamp: self.parent_uclamp(),
                ..Default::default()
            },
            pids: BTreeSet::new(),
            groups: 0,
            truncated: false,
        };
        self.group(&mut w, "", false);
        // cgqos's own groups first, so that many groups elsewhere (a delegated subtree can
        // make thousands) use up the budget without hiding them.
        let (ours, others): (Vec<String>, Vec<String>) = self
            .cg
            .children("")
            .into_iter()
            .partition(|c| c == layout::CHROME || c == layout::VMS);
        for child in ours {
            self.walk(&mut w, &child, 1);
        }
        for child in others {
            self.collapsed(&mut w, &child);
        }
        if w.truncated {
            w.snap.warnings.push(format!(
                "more than {} groups below {} (or deeper than {MAX_DEPTH}): the rest are not shown",
                self.max_groups,
                self.cg.root().display()
            ));
        }
        self.tasks(&mut w);
        w.snap
    }

    fn walk(&self, w: &mut Walk, rel: &str, depth: usize) {
        if !self.group(w, rel, false) {
            return;
        }
        for child in self.cg.children(rel) {
            if depth >= MAX_DEPTH {
                w.truncated = true;
                return;
            }
            self.walk(w, &join(rel, &child), depth + 1);
        }
    }

    /// One row for a group outside cgqos's layout, holding the threads of its subtree.
    fn collapsed(&self, w: &mut Walk, rel: &str) {
        if !self.group(w, rel, true) {
            return;
        }
        let row = w.snap.groups.len() - 1;
        let mut stack: Vec<(String, usize)> = self
            .cg
            .children(rel)
            .into_iter()
            .map(|c| (join(rel, &c), 2))
            .collect();
        while let Some((dir, depth)) = stack.pop() {
            if w.groups >= self.max_groups || depth > MAX_DEPTH {
                w.truncated = true;
                break;
            }
            w.groups += 1;
            let threads = self.members(w, &dir);
            w.snap.groups[row].threads.extend(threads);
            stack.extend(
                self.cg
                    .children(&dir)
                    .into_iter()
                    .map(|c| (join(&dir, &c), depth + 1)),
            );
        }
    }

    /// Reads one group into a row; false when the group limit is reached.
    fn group(&self, w: &mut Walk, rel: &str, outside: bool) -> bool {
        if w.groups >= self.max_groups {
            w.truncated = true;
            return false;
        }
        w.groups += 1;
        let file = |name: &str| self.cg.read(&join(rel, name)).ok();
        let kind = match file(files::TYPE) {
            Some(t) => t.trim().to_string(),
            None if self.cg.is_hierarchy_root(rel) => "root".to_string(),
            None => "unknown".to_string(),
        };
        let threads = self.members(w, rel);
        w.snap.groups.push(GroupSnap {
            path: rel.to_string(),
            kind,
            outside,
            usage_usec: file(CPU_STAT).and_then(|s| keyed(&s, "usage_usec")),
            pressure_some_avg10: file(CPU_PRESSURE).and_then(|s| some_avg10(&s)),
            cpus_effective: file(files::CPUSET_CPUS_EFFECTIVE).map(|s| s.trim().to_string()),
            uclamp_min: file(files::CPU_UCLAMP_MIN).and_then(|s| percent(&s)),
            uclamp_max: file(CPU_UCLAMP_MAX).and_then(|s| percent(&s)),
            threads,
        });
        true
    }

    /// The group's threads; its processes (readable in domain groups only) are noted so
    /// their threads can be read through `/proc/<pid>/task`.
    fn members(&self, w: &mut Walk, rel: &str) -> Vec<u32> {
        if let Ok(pids) = self.cg.members(rel, files::PROCS) {
            w.pids.extend(pids);
        }
        self.cg.members(rel, files::THREADS).unwrap_or_default()
    }

    /// CPU time, process and start time of every listed thread.
    fn tasks(&self, w: &mut Walk) {
        let root = self.proc.root();
        let mut tasks: HashMap<u32, TaskSnap> = HashMap::new();
        for &pid in &w.pids {
            let Ok(tids) = self.proc.threads(ProcessId::new(pid)) else {
                continue;
            };
            for tid in tids {
                let path = root.join(format!("{pid}/task/{}/stat", tid.get()));
                if let Some(t) = read_task(&path, tid.get(), pid) {
                    tasks.insert(tid.get(), t);
                }
            }
        }
        // Threads whose process was not listed (a process outside the walk, or one that
        // arrived between the reads): look their process up one by one.
        let listed: BTreeSet<u32> = w
            .snap
            .groups
            .iter()
            .flat_map(|g| g.threads.iter().copied())
            .collect();
        for tid in listed {
            if tasks.contains_key(&tid) {
                continue;
            }
            let Ok(pid) = self.proc.tgid(tid) else {
                continue;
            };
            if let Some(t) = read_task(&root.join(format!("{tid}/stat")), tid, pid) {
                tasks.insert(tid, t);
            }
        }
        w.snap.tasks = tasks;
    }

    /// The effective uclamp above the root: min over the ancestors that have uclamp files.
    fn parent_uclamp(&self) -> Option<(f64, f64)> {
        let mut out: Option<(f64, f64)> = None;
        let mut dir = self.cg.root().parent();
        for _ in 0..64 {
            let Some(d) = dir else { break };
            let Some(min) = read_percent(&d.join(files::CPU_UCLAMP_MIN)) else {
                break;
            };
            let max = read_percent(&d.join(CPU_UCLAMP_MAX)).unwrap_or(100.0);
            let (m, x) = out.unwrap_or((100.0, 100.0));
            out = Some((m.min(min), x.min(max)));
            dir = d.parent();
        }
        out.map(|(m, x)| (m.min(x), x))
    }
}

fn read_percent(path: &Path) -> Option<f64> {
    percent(&fs::read_to_string(path).ok()?)
}

/// Reads `/proc/.../stat` of a task: comm, start time, utime + stime.
fn read_task(path: &Path, tid: u32, pid: u32) -> Option<TaskSnap> {
    // Lossy: a thread may name itself with any bytes, and must not vanish from the view.
    let bytes = fs::read(path).ok()?;
    let (comm, ticks, starttime) = parse_stat(&String::from_utf8_lossy(&bytes))?;
    Some(TaskSnap {
        tid,
        pid,
        starttime,
        ticks,
        comm,
    })
}

/// (comm, utime + stime, starttime) of a stat line. The comm may hold spaces and
/// parentheses, so fields are counted from the last `)`: utime and stime are fields 14 and
/// 15, starttime 22 (proc(5)).
pub fn parse_stat(text: &str) -> Option<(String, u64, u64)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    let utime: u64 = rest.get(11)?.parse().ok()?;
    let stime: u64 = rest.get(12)?.parse().ok()?;
    let starttime: u64 = rest.get(19)?.parse().ok()?;
    Some((comm, utime.saturating_add(stime), starttime))
}

/// `key value` lines (`cpu.stat`).
pub fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// `some avg10=1.23 avg60=... total=...` (`cpu.pressure`).
pub fn some_avg10(text: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.starts_with("some "))?;
    line.split_whitespace()
        .find_map(|f| f.strip_prefix("avg10="))?
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite())
}

/// A `cpu.uclamp.*` value: a percentage, or `max`.
pub fn percent(text: &str) -> Option<f64> {
    match text.trim() {
        "max" => Some(100.0),
        v => v.parse().ok().filter(|v: &f64| v.is_finite()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_file_formats() {
        let stat = "usage_usec 263112700\nuser_usec 151533728\nsystem_usec 111578972\n";
        assert_eq!(keyed(stat, "usage_usec"), Some(263112700));
        assert_eq!(keyed(stat, "nr_periods"), None);
        let psi = "some avg10=8.18 avg60=11.08 avg300=9.63 total=46948276\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
        assert_eq!(some_avg10(psi), Some(8.18));
        assert_eq!(some_avg10("full avg10=1.00\n"), None);
        assert_eq!(percent("20.00\n"), Some(20.0));
        assert_eq!(percent("max\n"), Some(100.0));
        assert_eq!(percent("nan"), None);
        assert_eq!(percent(""), None);
    }

    #[test]
    fn stat_lines_with_hostile_comms() {
        let s = "1234 (a) b) S 1 1234 1234 0 -1 4194560 100 0 0 0 17 4 0 0 20 0 3 0 98765 1000 100";
        assert_eq!(parse_stat(s), Some(("a) b".into(), 21, 98765)));
        assert_eq!(parse_stat("1 (x) S 1"), None);
        assert_eq!(parse_stat(""), None);
    }
}
