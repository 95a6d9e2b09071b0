//! Placement: moving processes and threads into cgqos's groups, and back out on teardown.
//!
//! A process move is one `cgroup.procs` write (the kernel moves every thread at once, new
//! ones included) followed by one `cgroup.threads` write per thread that had a class, so
//! each thread keeps its class: O(threads) syscalls, each target file opened once.

use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cgroupfs::{Attacher, CgroupFs, FsError, Mount, Refusal, files};
use crate::layout::{self, Placement, Target};
use crate::procfs::{ProcError, ProcessId, Procfs, Stat, ThreadId};
use crate::state::{Record, State};

/// Maps the cgroup paths `/proc` reports (`0::/chrome/ui`) to directories and back.
#[derive(Debug, Clone)]
pub struct CgroupMap {
    /// Directory showing the cgroup `mount.root`.
    pub mount: Mount,
    /// The cgqos root directory.
    pub root: PathBuf,
}

impl CgroupMap {
    /// Finds the cgroup2 mount holding `root` in `mountinfo`; without one (a fake tree in
    /// tests) the root itself stands for the hierarchy's `/`.
    pub fn new(root: &Path, mountinfo: &str) -> CgroupMap {
        let mount = crate::cgroupfs::cgroup2_mounts(mountinfo)
            .into_iter()
            .filter(|m| root.starts_with(&m.dir))
            .max_by_key(|m| m.dir.as_os_str().len())
            .unwrap_or(Mount {
                dir: root.to_path_buf(),
                root: "/".into(),
            });
        CgroupMap {
            mount,
            root: root.to_path_buf(),
        }
    }

    /// Directory of a cgroup path as `/proc/<pid>/cgroup` prints it.
    pub fn dir_of(&self, cgroup: &str) -> PathBuf {
        let inside = cgroup
            .strip_prefix(self.mount.root.trim_end_matches('/'))
            .unwrap_or(cgroup);
        match inside.trim_start_matches('/') {
            "" => self.mount.dir.clone(),
            rel => self.mount.dir.join(rel),
        }
    }

    /// The cgroup path relative to the cgqos root, when it lies inside it.
    pub fn relative(&self, cgroup: &str) -> Option<String> {
        let dir = self.dir_of(cgroup);
        let rel = dir.strip_prefix(&self.root).ok()?;
        Some(rel.to_string_lossy().into_owned())
    }

    /// Where tasks go when their origin is unknown: the cgqos root's parent, or the root
    /// itself when it is the hierarchy's root (the only group that can always hold tasks).
    pub fn fallback(&self) -> PathBuf {
        if self.root == self.mount.dir {
            self.root.clone()
        } else {
            self.root
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| self.mount.dir.clone())
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    #[error("no such process or thread {0} (it exited, or never existed)")]
    Gone(u32),
    #[error(
        "{id} is a different process now (started at {found}, expected {expected}): the id was reused"
    )]
    Reused { id: u32, expected: u64, found: u64 },
    #[error("{id} ({comm}) is a kernel thread: cgqos never moves kernel threads")]
    KernelThread { id: u32, comm: String },
    #[error("{tid} is a thread of process {tgid}: move the process {tgid}, or use --thread {tid}")]
    NotAProcess { tid: u32, tgid: u32 },
    #[error("group {0} does not exist: run `cgqos setup` first (or `cgqos vm add` for a VM)")]
    NotSetUp(String),
    #[error(
        "thread {tid} is in {cgroup}, not in a cgqos process group: move its process {tgid} into one first"
    )]
    NotInGroup { tid: u32, tgid: u32, cgroup: String },
    #[error("class {class} does not exist in {group} (classes there: {allowed})")]
    WrongClass {
        class: String,
        group: String,
        allowed: String,
    },
    #[error("{0}")]
    Kernel(#[from] FsError),
    #[error("{0}")]
    Proc(ProcError),
}

impl From<ProcError> for PlaceError {
    fn from(e: ProcError) -> Self {
        match e {
            ProcError::Gone(id) => PlaceError::Gone(id),
            other => PlaceError::Proc(other),
        }
    }
}

/// One thread after a move.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ThreadPlace {
    pub tid: ThreadId,
    /// Empty after a move (not read on that hot path); `where` fills it.
    #[serde(skip_serializing_if = "String::is_empty")]
    #[serde(default)]
    pub comm: String,
    /// The cgroup path as `/proc` shows it.
    pub cgroup: String,
    /// The cgqos process group, if inside the cgqos tree.
    pub group: Option<String>,
    /// `urgent`, `non-urgent`, `vcpu`, `io`, or `default`.
    pub class: Option<String>,
}

pub struct Placer<'a> {
    pub cg: &'a CgroupFs,
    pub map: &'a CgroupMap,
    pub proc: &'a Procfs,
    attacher: Attacher,
}

/// Kernels before 6.0 refuse to attach a thread that has not run yet with EINVAL
/// (`cpu_cgroup_can_attach`); it runs within milliseconds, so retry a few times.
const EINVAL_RETRIES: [u64; 3] = [1, 10, 50];

impl<'a> Placer<'a> {
    pub fn new(cg: &'a CgroupFs, map: &'a CgroupMap, proc: &'a Procfs) -> Self {
        Placer {
            cg,
            map,
            proc,
            attacher: Attacher::new(),
        }
    }

    fn attach(&mut self, file: &Path, id: u32) -> Result<(), FsError> {
        let mut result = self.attacher.attach(file, id);
        for ms in EINVAL_RETRIES {
            match &result {
                Err(e) if e.refusal() == Refusal::Invalid => {
                    sleep(Duration::from_millis(ms));
                    result = self.attacher.attach(file, id);
                }
                _ => break,
            }
        }
        result
    }

    fn identify(&self, id: u32, expected: Option<u64>) -> Result<Stat, PlaceError> {
        let stat = self.proc.stat(id)?;
        if stat.is_kernel_thread() {
            return Err(PlaceError::KernelThread {
                id,
                comm: stat.comm,
            });
        }
        if let Some(expected) = expected {
            if stat.starttime != expected {
                return Err(PlaceError::Reused {
                    id,
                    expected,
                    found: stat.starttime,
                });
            }
        }
        Ok(stat)
    }

    /// After a write: the id must still name the task we checked before it.
    fn recheck(&self, id: u32, starttime: u64) -> Result<(), PlaceError> {
        self.identify(id, Some(starttime)).map(|_| ())
    }

    /// Where every thread of a process is.
    pub fn locate(&self, pid: ProcessId) -> Result<Vec<ThreadPlace>, PlaceError> {
        let mut out = Vec::new();
        for tid in self.proc.threads(pid)? {
            let (cgroup, comm) = match (self.proc.cgroup(pid, tid), self.proc.stat(tid.0)) {
                (Ok(c), Ok(s)) => (c, s.comm),
                // A thread exiting while we look is not an error.
                (Err(ProcError::Gone(_)), _) | (_, Err(ProcError::Gone(_))) => continue,
                (Err(e), _) | (_, Err(e)) => return Err(e.into()),
            };
            let placement = self
                .map
                .relative(&cgroup)
                .and_then(|r| layout::classify(&r));
            out.push(ThreadPlace {
                tid,
                comm,
                cgroup,
                group: placement.as_ref().map(|p| p.group.clone()),
                class: placement.map(|p| p.class.unwrap_or_else(|| "default".into())),
            });
        }
        Ok(out)
    }

    /// Moves a whole process into `target`, each thread keeping its class.
    pub fn move_process(
        &mut self,
        pid: ProcessId,
        target: &Target,
        expected_starttime: Option<u64>,
        state: &mut State,
    ) -> Result<Vec<ThreadPlace>, PlaceError> {
        let stat = self.identify(pid.0, expected_starttime)?;
        let tgid = self.proc.tgid(pid.0)?;
        if tgid != pid.0 {
            return Err(PlaceError::NotAProcess { tid: pid.0, tgid });
        }
        let group = target.path();
        if !self.cg.exists(&group) {
            return Err(PlaceError::NotSetUp(group));
        }
        // One read per thread: its cgroup (the class to keep). Threads that exit meanwhile
        // are simply not there.
        let mut before: Vec<(ThreadId, String)> = Vec::new();
        for tid in self.proc.threads(pid)? {
            match self.proc.cgroup(pid, tid) {
                Ok(c) => before.push((tid, c)),
                Err(ProcError::Gone(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let main_cgroup = before
            .iter()
            .find(|(t, _)| t.0 == pid.0)
            .map(|(_, c)| c.clone())
            .ok_or(PlaceError::Gone(pid.0))?;
        state.remember(
            pid.0,
            Record {
                pid: pid.0,
                starttime: stat.starttime,
                original: self.map.dir_of(&main_cgroup),
                process: true,
            },
        );
        // Threads living apart from their process (another threaded group) are recorded
        // one by one, so teardown can put them back there.
        for (tid, cgroup) in before
            .iter()
            .filter(|(t, c)| t.0 != pid.0 && *c != main_cgroup)
        {
            if let Ok(ts) = self.proc.stat(tid.0) {
                state.remember(
                    tid.0,
                    Record {
                        pid: pid.0,
                        starttime: ts.starttime,
                        original: self.map.dir_of(cgroup),
                        process: false,
                    },
                );
            }
        }

        self.attach(&self.cg.path(&format!("{group}/{}", files::PROCS)), pid.0)
            .map_err(gone_or_kernel(pid.0))?;
        let classes = target.classes();
        let group_cgroup = self.cgroup_path(&group);
        // As `where` reports it: a VM part (`vms/x/vcpu`) is the VM's group and that class.
        let (shown_group, shown_class) = match layout::classify(&group) {
            Some(p) => (p.group, p.class),
            None => (group.clone(), None),
        };
        let mut after = Vec::with_capacity(before.len());
        for (tid, cgroup) in &before {
            let class = self
                .map
                .relative(cgroup)
                .and_then(|r| layout::classify(&r))
                .and_then(|p| p.class)
                .filter(|c| classes.contains(&c.as_str()));
            let mut place = ThreadPlace {
                tid: *tid,
                comm: String::new(),
                cgroup: group_cgroup.clone(),
                group: Some(shown_group.clone()),
                class: Some(
                    class
                        .clone()
                        .or_else(|| shown_class.clone())
                        .unwrap_or_else(|| "default".into()),
                ),
            };
            if let Some(class) = class {
                let file = self.cg.path(&format!("{group}/{class}/{}", files::THREADS));
                match self.attach(&file, tid.0) {
                    Ok(()) => place.cgroup = format!("{group_cgroup}/{class}"),
                    Err(e) if e.refusal() == Refusal::Gone => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            after.push(place);
        }
        self.recheck(pid.0, stat.starttime)?;
        Ok(after)
    }

    /// The path `/proc/<pid>/cgroup` shows for a group relative to the cgqos root.
    fn cgroup_path(&self, group: &str) -> String {
        let dir = self.cg.path(group);
        let inside = dir.strip_prefix(&self.map.mount.dir).unwrap_or(&dir);
        let base = self.map.mount.root.trim_end_matches('/');
        format!("{base}/{}", inside.display())
    }

    /// Moves one thread to a class of its current process group (`None`: the default).
    pub fn move_thread(
        &mut self,
        tid: ThreadId,
        class: Option<&str>,
        expected_starttime: Option<u64>,
        state: &mut State,
    ) -> Result<ThreadPlace, PlaceError> {
        let stat = self.identify(tid.0, expected_starttime)?;
        let tgid = self.proc.tgid(tid.0)?;
        let cgroup = self.proc.cgroup(ProcessId(tgid), tid)?;
        let Some(Placement { group, .. }) = self
            .map
            .relative(&cgroup)
            .and_then(|r| layout::classify(&r))
        else {
            return Err(PlaceError::NotInGroup {
                tid: tid.0,
                tgid,
                cgroup,
            });
        };
        let allowed: &[&str] = if group.starts_with(layout::VMS) {
            &[layout::VCPU, layout::IO]
        } else {
            &[layout::URGENT, layout::NON_URGENT]
        };
        if let Some(c) = class {
            if !allowed.contains(&c) {
                return Err(PlaceError::WrongClass {
                    class: c.into(),
                    group,
                    allowed: format!("{}, default", allowed.join(", ")),
                });
            }
        }
        let dest = match class {
            Some(c) => format!("{group}/{c}"),
            None => group.clone(),
        };
        state.remember(
            tid.0,
            Record {
                pid: tgid,
                starttime: stat.starttime,
                original: self.map.dir_of(&cgroup),
                process: false,
            },
        );
        self.attach(&self.cg.path(&format!("{dest}/{}", files::THREADS)), tid.0)
            .map_err(gone_or_kernel(tid.0))?;
        self.recheck(tid.0, stat.starttime)?;
        let now = self.proc.cgroup(ProcessId(tgid), tid)?;
        Ok(ThreadPlace {
            tid,
            comm: stat.comm,
            cgroup: now,
            group: Some(group),
            class: Some(class.unwrap_or("default").into()),
        })
    }
}

fn gone_or_kernel(id: u32) -> impl Fn(FsError) -> PlaceError {
    move |e| {
        if e.refusal() == Refusal::Gone {
            PlaceError::Gone(id)
        } else {
            PlaceError::Kernel(e)
        }
    }
}

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

impl<'a> Placer<'a> {
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
                    Ok(s) if s.starttime == rec.starttime => {}
                    _ => continue,
                }
                if !self.inside(rec.pid, id, group) {
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
            .cgroup(ProcessId(pid), ThreadId(tid))
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
