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

mod held;
mod move_;
mod restore;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cgroupfs::{CgroupBackend, CgroupFs, FsError, Mount, Refusal};
use crate::layout;
use crate::procfs::{ProcError, ProcessId, Procfs, TaskSource, ThreadId};

pub use held::Held;
pub use restore::{Restored, TeardownReport};

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

/// Moves tasks in the tree `cg` (the real [`CgroupFs`], or a model in tests), reading them
/// through `proc`.
pub struct Placer<'a, B: CgroupBackend = CgroupFs, P: TaskSource = Procfs> {
    pub cg: &'a B,
    pub map: &'a CgroupMap,
    pub proc: &'a P,
}

/// Kernels before 6.0 refuse to attach a thread that has not run yet with EINVAL
/// (`cpu_cgroup_can_attach`); it runs within milliseconds, so retry a few times.
const EINVAL_RETRIES: [u64; 3] = [1, 10, 50];

impl<'a, B: CgroupBackend, P: TaskSource> Placer<'a, B, P> {
    pub fn new(cg: &'a B, map: &'a CgroupMap, proc: &'a P) -> Self {
        Placer { cg, map, proc }
    }

    fn attach(&mut self, file: &Path, id: u32) -> Result<(), FsError> {
        let mut result = self.cg.attach(file, id);
        for ms in EINVAL_RETRIES {
            match &result {
                Err(e) if e.refusal() == Refusal::Invalid => {
                    sleep(Duration::from_millis(ms));
                    result = self.cg.attach(file, id);
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
            let (cgroup, comm) = match (self.proc.cgroup(pid, tid), self.proc.stat(tid.get())) {
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

    /// The path `/proc/<pid>/cgroup` shows for a group relative to the cgqos root.
    fn cgroup_path(&self, group: &str) -> String {
        let dir = self.cg.path(group);
        let inside = dir.strip_prefix(&self.map.mount.dir).unwrap_or(&dir);
        let base = self.map.mount.root.trim_end_matches('/');
        format!("{base}/{}", inside.display())
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
