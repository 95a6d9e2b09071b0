//! Teardown: recorded tasks back to their origins, the rest to a fallback, groups removed.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cgroupfs::{CgroupBackend, Refusal, files};
use crate::layout;
use crate::procfs::{ProcessId, TaskSource, ThreadId};
use crate::state::State;

use super::Placer;

/// What teardown did with one task.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Restored {
    pub id: u32,
    pub process: bool,
    pub to: PathBuf,
    /// Why it did not go back to its recorded origin, if it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct TeardownReport {
    pub restored: Vec<Restored>,
    pub removed: Vec<String>,
    pub skipped_exited: usize,
    pub errors: Vec<String>,
    /// sysfs files written back to their value before setup (`path = value`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sysfs_restored: Vec<String>,
}
impl<B: CgroupBackend, P: TaskSource> Placer<'_, B, P> {
    /// Moves every task out of the subtree `group` (to its recorded origin when known and
    /// still the same task) and removes the groups bottom-up. Safe to run twice.
    pub fn evacuate(&mut self, group: &str, state: &State, report: &mut TeardownReport) {
        if !self.cg.exists(group) {
            return;
        }
        // 1. Recorded tasks back to their origins.
        self.restore_recorded(group, state, report);
        // 2. Anything else still inside (children forked in the groups, tasks placed by
        //    others): to their parent's recorded origin, else the fallback. cgroup.procs
        //    is readable at domains and thread roots, which list their whole subtree.
        self.empty_and_remove(group, state, report);
    }

    /// Moves every recorded task that is still the same task and still inside `group` (all
    /// of the cgqos groups for `""`) back to where it came from: processes first, then
    /// threads that lived apart from their process.
    pub fn restore_recorded(&mut self, group: &str, state: &State, report: &mut TeardownReport) {
        for process_pass in [true, false] {
            for (&id, rec) in state
                .tasks
                .iter()
                .filter(|(_, r)| r.process == process_pass)
            {
                match self.proc.stat(id) {
                    Ok(s) if s.start() == rec.starttime => {}
                    _ => continue,
                }
                if !self.inside(rec.pid.get(), id, group) {
                    continue;
                }
                let file = if rec.process {
                    files::PROCS
                } else {
                    files::THREADS
                };
                self.restore(group, id, rec.process, Some(&rec.original), file, report);
            }
        }
    }

    fn empty_and_remove(&mut self, group: &str, state: &State, report: &mut TeardownReport) {
        let mut groups = Vec::new();
        self.collect_groups(group, &mut groups);
        for g in &groups {
            let Ok(procs) = self.cg.members(g, files::PROCS) else {
                continue;
            };
            for pid in procs {
                let origin = self
                    .proc
                    .stat(pid)
                    .ok()
                    .and_then(|s| state.tasks.get(&s.ppid))
                    .filter(|r| r.process)
                    .map(|r| r.original.clone());
                self.restore(group, pid, true, origin.as_deref(), files::PROCS, report);
            }
        }
        // 3. Remove the groups cgqos created, deepest first.
        for g in groups.iter().rev().filter(|g| state.created_group(g)) {
            match self.cg.rmdir(g) {
                Ok(()) => report.removed.push(g.clone()),
                Err(e) => report.errors.push(e.to_string()),
            }
        }
    }

    fn inside(&self, pid: u32, tid: u32, group: &str) -> bool {
        self.proc
            .cgroup(ProcessId::new(pid), ThreadId::new(tid))
            .ok()
            .and_then(|c| self.map.relative(&c))
            .is_some_and(|r| {
                (group.is_empty() && !r.is_empty())
                    || r == group
                    || r.starts_with(&format!("{group}/"))
            })
    }

    #[allow(clippy::too_many_arguments)]
    fn restore(
        &mut self,
        group: &str,
        id: u32,
        process: bool,
        origin: Option<&Path>,
        file: &str,
        report: &mut TeardownReport,
    ) {
        let fallback = self.map.fallback();
        let mut candidates: Vec<(PathBuf, Option<String>)> = Vec::new();
        // An origin inside the groups being emptied is no origin at all.
        let emptied: Vec<PathBuf> = if group.is_empty() {
            vec![self.cg.path(layout::CHROME), self.cg.path(layout::VMS)]
        } else {
            vec![self.cg.path(group)]
        };
        if let Some(o) = origin.filter(|o| !emptied.iter().any(|e| o.starts_with(e))) {
            candidates.push((o.to_path_buf(), None));
        }
        let why = if candidates.is_empty() {
            "origin unknown"
        } else {
            "its origin refused it"
        };
        candidates.push((fallback.clone(), Some(why.to_string())));
        if fallback != self.map.mount.dir {
            candidates.push((
                self.map.mount.dir.clone(),
                Some(format!("{why}, and so did {}", fallback.display())),
            ));
        }
        let mut last_err = None;
        for (dir, note) in candidates {
            match self.attach(&dir.join(file), id) {
                Ok(()) => {
                    report.restored.push(Restored {
                        id,
                        process,
                        to: dir,
                        note,
                    });
                    return;
                }
                Err(e) if e.refusal() == Refusal::Gone => {
                    report.skipped_exited += 1;
                    return;
                }
                Err(e) => last_err = Some(e),
            }
        }
        if let Some(e) = last_err {
            report.errors.push(e.to_string());
        }
    }

    /// A group and all groups below it, top-down.
    fn collect_groups(&self, group: &str, out: &mut Vec<String>) {
        out.push(group.to_string());
        for child in self.cg.children(group) {
            self.collect_groups(&crate::plan::join(group, &child), out);
        }
    }
}
