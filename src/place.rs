//! Placement: moving processes and threads into cgqos's groups, and back out on teardown.
//!
//! A process move is one `cgroup.procs` write (the kernel moves every thread at once, new
//! ones included) followed by one `cgroup.threads` write per thread that had a class, so
//! each thread keeps its class: O(threads) syscalls, each target file opened once.
//!
//! Every target is held by a pidfd from its identity check through the write (`Held`): the
//! write hit the checked task if the pidfd shows it alive afterwards. If it exited, the id
//! may have named a stranger by the time of the write: the stranger goes back where it was
//! born and the move reports `Gone`, leaving nothing moved and unrecorded.

use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cgroupfs::{Attacher, CgroupFs, FsError, Mount, Refusal, files};
use crate::layout::{self, Placement, Target};
use crate::procfs::{Pidfd, ProcError, ProcessId, Procfs, Stat, ThreadId};
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

/// A target held from its identity check to the write that moves it.
///
/// The pidfd is opened first, `/proc/<id>` read after: while the task the pidfd names is
/// alive its id names nothing else, so a read followed by a check that it is still alive
/// read that task, however fast ids are reused (start times tick only every 10 ms).
#[derive(Debug)]
pub struct Held {
    pub id: u32,
    /// Its process (`id` itself for a process).
    pub tgid: u32,
    /// Read while held.
    pub stat: Stat,
    /// `None` on kernels without pidfd_open (before 5.3): start times only.
    fd: Option<Pidfd>,
    /// A thread target held through its process's pidfd (kernels before 6.9 have no
    /// `PIDFD_THREAD`): its start time is re-read from `/proc/<tgid>/task/<tid>/stat`.
    via_process: bool,
}

/// What a failed pidfd_open means for a target.
enum Opened {
    Fd(Pidfd),
    /// ENOSYS: the kernel has no pidfd_open; check start times only.
    Unsupported,
    /// EINVAL or ENOENT: not a process (for a process pidfd), or no `PIDFD_THREAD` (for a
    /// thread's).
    Invalid,
}

fn opened(id: u32, r: std::io::Result<Pidfd>) -> Result<Opened, PlaceError> {
    match r {
        Ok(fd) => Ok(Opened::Fd(fd)),
        Err(e) => match e.raw_os_error() {
            Some(libc::ESRCH) => Err(PlaceError::Gone(id)),
            Some(libc::ENOSYS) => Ok(Opened::Unsupported),
            // Newer kernels say ENOENT where older ones said EINVAL.
            Some(libc::EINVAL) | Some(libc::ENOENT) => Ok(Opened::Invalid),
            _ => Err(PlaceError::Proc(ProcError::Io {
                path: format!("pidfd_open({id})").into(),
                source: e,
            })),
        },
    }
}

impl Held {
    /// Holds the process `pid`, then checks it: not a kernel thread, a process (not one of
    /// its threads), and started at `expected` when given.
    pub fn process(proc: &Procfs, pid: u32, expected: Option<u64>) -> Result<Held, PlaceError> {
        let fd = match opened(pid, Pidfd::process(pid))? {
            Opened::Fd(fd) => Some(fd),
            Opened::Unsupported => None,
            Opened::Invalid => {
                let tgid = proc.tgid(pid)?;
                return Err(if tgid != pid {
                    PlaceError::NotAProcess { tid: pid, tgid }
                } else {
                    // A process an instant ago, not any more: it exited.
                    PlaceError::Gone(pid)
                });
            }
        };
        let stat = proc.stat(pid)?;
        let held = Held {
            id: pid,
            tgid: pid,
            stat,
            fd,
            via_process: false,
        };
        // Without a pidfd a thread id passes for a process: tell the user which process.
        if held.fd.is_none() {
            let tgid = proc.tgid(pid)?;
            if tgid != pid {
                return Err(PlaceError::NotAProcess { tid: pid, tgid });
            }
        }
        held.checked(proc, expected)
    }

    /// Holds the thread `tid`: by its own pidfd (Linux 6.9+), else by its process's pidfd
    /// and its start time in `/proc/<tgid>/task/<tid>/stat`.
    pub fn thread(proc: &Procfs, tid: u32, expected: Option<u64>) -> Result<Held, PlaceError> {
        Held::thread_with(proc, tid, expected, true)
    }

    /// `thread`, choosing whether to try `PIDFD_THREAD` (tests exercise the older kernels'
    /// path with `false`).
    pub fn thread_with(
        proc: &Procfs,
        tid: u32,
        expected: Option<u64>,
        thread_pidfd: bool,
    ) -> Result<Held, PlaceError> {
        let own = if thread_pidfd {
            opened(tid, Pidfd::thread(tid))?
        } else {
            Opened::Invalid
        };
        let held = match own {
            Opened::Fd(fd) => Held {
                id: tid,
                stat: proc.stat(tid)?,
                tgid: proc.tgid(tid)?,
                fd: Some(fd),
                via_process: false,
            },
            Opened::Unsupported => Held {
                id: tid,
                stat: proc.stat(tid)?,
                tgid: proc.tgid(tid)?,
                fd: None,
                via_process: false,
            },
            Opened::Invalid => {
                // The process is held, and the thread found in its task list after that.
                let tgid = proc.tgid(tid)?;
                let fd = match opened(tgid, Pidfd::process(tgid))? {
                    Opened::Fd(fd) => fd,
                    // Its process exited (or the thread moved groups by exec): gone.
                    Opened::Invalid | Opened::Unsupported => return Err(PlaceError::Gone(tid)),
                };
                Held {
                    id: tid,
                    tgid,
                    stat: proc.task_stat(tgid, tid)?,
                    fd: Some(fd),
                    via_process: true,
                }
            }
        };
        held.checked(proc, expected)
    }

    fn checked(self, proc: &Procfs, expected: Option<u64>) -> Result<Held, PlaceError> {
        if self.stat.is_kernel_thread() {
            return Err(PlaceError::KernelThread {
                id: self.id,
                comm: self.stat.comm.clone(),
            });
        }
        if let Some(expected) = expected {
            if self.stat.starttime != expected {
                return Err(PlaceError::Reused {
                    id: self.id,
                    expected,
                    found: self.stat.starttime,
                });
            }
        }
        if !self.still_there(proc) {
            return Err(PlaceError::Gone(self.id));
        }
        Ok(self)
    }

    /// Whether the id still names the held task: everything read since it was held was
    /// about that task. A poll of the pidfd, plus one `/proc` read for a thread held
    /// through its process.
    pub fn still_there(&self, proc: &Procfs) -> bool {
        match &self.fd {
            Some(fd) if fd.exited() => false,
            Some(_) if self.via_process => proc
                .task_stat(self.tgid, self.id)
                .is_ok_and(|s| s.starttime == self.stat.starttime),
            Some(_) => true,
            None => proc
                .stat(self.id)
                .is_ok_and(|s| s.starttime == self.stat.starttime),
        }
    }
}

/// Test hook, debug builds only: `CGQOS_TEST_PAUSE_BEFORE_WRITE_MS` pauses between a
/// target's last identity check and the write that moves it, so a test can force the id's
/// reuse exactly there.
fn test_pause(id: u32) {
    #[cfg(debug_assertions)]
    if let Some(ms) = std::env::var("CGQOS_TEST_PAUSE_BEFORE_WRITE_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        tracing::warn!("test hook: pausing {ms} ms before writing {id}");
        sleep(Duration::from_millis(ms));
    }
    #[cfg(not(debug_assertions))]
    let _ = id;
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
        let held = Held::process(self.proc, pid.0, expected_starttime)?;
        self.move_held_process(&held, target, state)
    }

    /// Moves a held process into `target`, each thread keeping its class.
    pub fn move_held_process(
        &mut self,
        held: &Held,
        target: &Target,
        state: &mut State,
    ) -> Result<Vec<ThreadPlace>, PlaceError> {
        let pid = ProcessId(held.id);
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
        // The last check before the write: the reads above were of the held process.
        if !held.still_there(self.proc) {
            return Err(PlaceError::Gone(pid.0));
        }
        test_pause(pid.0);
        if let Err(e) = self.attach(&self.cg.path(&format!("{group}/{}", files::PROCS)), pid.0) {
            return Err(self.refused(held, e));
        }
        if !held.still_there(self.proc) {
            // It exited around the write: what moved may be a stranger with its id.
            self.put_back_stranger(held, &group, true);
            return Err(PlaceError::Gone(pid.0));
        }
        // Recorded once the write is known to have hit the held process (in memory; the
        // caller saves before it reports success).
        state.remember(
            pid.0,
            Record {
                pid: pid.0,
                starttime: held.stat.starttime,
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
                    // Refused, but no longer a thread of this process: it exited, and the
                    // kernel refused whoever has its id now.
                    Err(_)
                        if matches!(self.proc.task_stat(pid.0, tid.0), Err(ProcError::Gone(_))) =>
                    {
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            after.push(place);
        }
        Ok(after)
    }

    /// What a refused write means: if the held task is gone, the kernel refused someone
    /// else (a stranger with its id), so the answer is that it exited.
    fn refused(&self, held: &Held, e: FsError) -> PlaceError {
        if held.still_there(self.proc) {
            gone_or_kernel(held.id)(e)
        } else {
            PlaceError::Gone(held.id)
        }
    }

    /// After a write of `held`'s id to `dest` whose task turned out to have exited: if the
    /// id now names another live task sitting in `dest`, the write may have moved it. It
    /// appeared after our last check, an instant before the write, so it was where it was
    /// born (fork and clone place a task in its creator's group): a new process in its
    /// parent's group, a new thread in its process leader's. Put it back there; nothing is
    /// recorded for it. Best effort: every outcome is logged, the move reports `Gone`.
    fn put_back_stranger(&mut self, held: &Held, dest: &str, process: bool) {
        let id = held.id;
        let Ok(st) = self.proc.stat(id) else {
            return; // Nobody has the id: nothing alive was moved.
        };
        if matches!(st.state, 'Z' | 'X') {
            return; // The held task's remains (or a stranger's): nothing to run elsewhere.
        }
        let Ok(tgid) = self.proc.tgid(id) else { return };
        let dest_cgroup = self.cgroup_path(dest);
        match self.proc.cgroup(ProcessId(tgid), ThreadId(id)) {
            Ok(now) if now == dest_cgroup => {}
            // Not where we wrote: our write did not put it there.
            _ => return,
        }
        // A process write of a thread's id moves that thread's whole process.
        let (moved, file) = if process {
            (tgid, files::PROCS)
        } else {
            (id, files::THREADS)
        };
        let born_in = if moved == tgid {
            self.proc
                .stat(tgid)
                .ok()
                .and_then(|s| self.proc.cgroup(ProcessId(s.ppid), ThreadId(s.ppid)).ok())
        } else {
            self.proc.cgroup(ProcessId(tgid), ThreadId(tgid)).ok()
        };
        let dir = match born_in {
            Some(c) if c == dest_cgroup => return, // Born there: it never moved.
            Some(c) => self.map.dir_of(&c),
            // Its parent is gone too: where teardown sends tasks of unknown origin.
            None => self.map.fallback(),
        };
        match self.attach(&dir.join(file), moved) {
            Ok(()) => tracing::warn!(
                id,
                "id {id} was reused during a move: put task {moved} (started at {}) back in {}",
                st.starttime,
                dir.display()
            ),
            Err(e) if e.refusal() == Refusal::Gone => {}
            Err(e) => tracing::warn!(
                id,
                "id {id} was reused during a move; task {moved} could not be put back: {e}"
            ),
        }
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
        let held = Held::thread(self.proc, tid.0, expected_starttime)?;
        self.move_held_thread(&held, class, state)
    }

    /// Moves a held thread to a class of its current process group (`None`: the default).
    pub fn move_held_thread(
        &mut self,
        held: &Held,
        class: Option<&str>,
        state: &mut State,
    ) -> Result<ThreadPlace, PlaceError> {
        let tid = ThreadId(held.id);
        let tgid = held.tgid;
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
        let allowed = layout::classes_of(&group);
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
        // The last check before the write: the cgroup read above was the held thread's.
        if !held.still_there(self.proc) {
            return Err(PlaceError::Gone(tid.0));
        }
        test_pause(tid.0);
        if let Err(e) = self.attach(&self.cg.path(&format!("{dest}/{}", files::THREADS)), tid.0) {
            return Err(self.refused(held, e));
        }
        if !held.still_there(self.proc) {
            self.put_back_stranger(held, &dest, false);
            return Err(PlaceError::Gone(tid.0));
        }
        state.remember(
            tid.0,
            Record {
                pid: tgid,
                starttime: held.stat.starttime,
                original: self.map.dir_of(&cgroup),
                process: false,
            },
        );
        Ok(ThreadPlace {
            tid,
            comm: held.stat.comm.clone(),
            // Where the write put it: no need to read it back.
            cgroup: self.cgroup_path(&dest),
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
