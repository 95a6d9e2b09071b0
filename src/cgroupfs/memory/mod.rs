//! An in-memory cgroup2 hierarchy with its tasks, refusing what the kernel refuses, so
//! placement, apply and teardown are tested without root.
//!
//! The rules (Documentation/admin-guide/cgroup-v2.rst, checked on a real cgroup2):
//! - a group is `domain`, `threaded` (after a write of `threaded` to `cgroup.type`, which
//!   cannot be undone: EINVAL), `domain threaded` (a domain with threaded children: a
//!   thread root) or `domain invalid` (a child of a thread root or of a threaded group
//!   that is not itself threaded); an invalid group refuses tasks with EOPNOTSUPP;
//! - a `cgroup.threads` write moves one thread, only inside its threaded domain
//!   (EOPNOTSUPP across domains); a `cgroup.procs` write moves the whole process, also
//!   into a threaded group; `cgroup.procs` of a threaded group cannot be read (EOPNOTSUPP);
//! - an id no task has: ESRCH;
//! - the no-internal-process rule: a non-root domain with controllers enabled in its
//!   `cgroup.subtree_control` takes no process, and one with processes cannot enable
//!   controllers (EBUSY); a group with members or children cannot be removed (EBUSY);
//! - a group has the controller files of the controllers its parent enabled (the root's
//!   are `available`); `cpu.uclamp.min` also needs uclamp; the root has no `cgroup.type`
//!   and no controller files. A missing file is ENOENT, as an `open` would say.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Component, Path, PathBuf};

use super::{CgroupBackend, FsError, files, join, parent_of};
use crate::procfs::{Pidfd, ProcError, ProcessId, Stat, TaskSource, ThreadId};

/// The cgroup2 controllers a kernel can have.
const CONTROLLERS: [&str; 8] = [
    "cpu", "cpuset", "io", "memory", "pids", "rdma", "hugetlb", "misc",
];

/// `PF_KTHREAD` in `/proc/<id>/stat`'s flags.
const KTHREAD_FLAG: u64 = 0x0020_0000;

#[derive(Debug, Default)]
struct Group {
    threaded: bool,
    subtree: BTreeSet<String>,
    values: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
struct Task {
    tgid: u32,
    ppid: u32,
    comm: String,
    starttime: u64,
    kernel: bool,
    /// Key of its group (relative to the mount, `""` for the hierarchy root).
    group: String,
}

#[derive(Debug, Default)]
struct Model {
    groups: BTreeMap<String, Group>,
    tasks: BTreeMap<u32, Task>,
    available: BTreeSet<String>,
    uclamp: bool,
    next_start: u64,
}

/// A cgroup2 hierarchy mounted (in name only) at `mount`, with cgqos's root at `root`.
#[derive(Debug)]
pub struct MemKernel {
    mount: PathBuf,
    root: PathBuf,
    model: RefCell<Model>,
}

fn errno(op: &'static str, path: &Path, value: Option<&str>, code: i32) -> FsError {
    FsError {
        op,
        path: path.to_path_buf(),
        value: value.map(String::from),
        source: io::Error::from_raw_os_error(code),
    }
}

impl Model {
    fn is_thread_root(&self, key: &str) -> bool {
        let g = &self.groups[key];
        !g.threaded && self.child_keys(key).any(|c| self.groups[c].threaded)
    }

    fn child_keys<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a String> + 'a {
        self.groups
            .keys()
            .filter(move |k| !k.is_empty() && parent_of(k) == key && k.as_str() != key)
    }

    fn kind(&self, key: &str) -> &'static str {
        if self.groups[key].threaded {
            return "threaded";
        }
        if !key.is_empty() {
            let parent = parent_of(key);
            if self.groups[parent].threaded || self.is_thread_root(parent) {
                return "domain invalid";
            }
        }
        if self.is_thread_root(key) {
            "domain threaded"
        } else {
            "domain"
        }
    }

    /// The threaded domain a group belongs to (itself for a domain).
    fn domain<'a>(&self, mut key: &'a str) -> &'a str {
        while self.groups[key].threaded && !key.is_empty() {
            key = parent_of(key);
        }
        key
    }

    fn controllers(&self, key: &str) -> BTreeSet<String> {
        if key.is_empty() {
            self.available.clone()
        } else {
            self.groups[parent_of(key)].subtree.clone()
        }
    }

    fn has_file(&self, key: &str, name: &str) -> bool {
        let controllers = self.controllers(key);
        match name {
            files::PROCS | files::THREADS | files::CONTROLLERS | files::SUBTREE_CONTROL => true,
            files::TYPE => !key.is_empty(),
            files::CPU_UCLAMP_MIN => !key.is_empty() && controllers.contains("cpu") && self.uclamp,
            files::CPU_WEIGHT | files::CPU_MAX => !key.is_empty() && controllers.contains("cpu"),
            files::CPUSET_CPUS | files::CPUSET_CPUS_EFFECTIVE => {
                !key.is_empty() && controllers.contains("cpuset")
            }
            _ => false,
        }
    }

    fn has_processes(&self, key: &str) -> bool {
        self.tasks.values().any(|t| t.group == key)
    }

    /// The no-internal-process rule for a task entering `key`.
    fn takes_tasks(&self, key: &str) -> bool {
        key.is_empty()
            || self.groups[key].threaded
            || self.groups[key].subtree.is_empty()
            || self.is_thread_root(key)
    }

    fn read(&self, key: &str, name: &str) -> Result<String, i32> {
        let list = |ids: BTreeSet<u32>| ids.iter().map(|i| format!("{i}\n")).collect();
        let words = |set: &BTreeSet<String>| {
            format!("{}\n", set.iter().cloned().collect::<Vec<_>>().join(" "))
        };
        Ok(match name {
            files::PROCS if self.groups[key].threaded => return Err(libc::EOPNOTSUPP),
            // A domain lists the processes of its threaded subtree too.
            files::PROCS => list(
                self.tasks
                    .values()
                    .filter(|t| t.group == key || self.domain(&t.group) == key)
                    .map(|t| t.tgid)
                    .collect(),
            ),
            files::THREADS => list(
                self.tasks
                    .iter()
                    .filter(|(_, t)| t.group == key)
                    .map(|(&id, _)| id)
                    .collect(),
            ),
            files::CONTROLLERS => words(&self.controllers(key)),
            files::SUBTREE_CONTROL => words(&self.groups[key].subtree),
            files::TYPE => format!("{}\n", self.kind(key)),
            other => {
                let default = match other {
                    files::CPU_WEIGHT => "100",
                    files::CPU_MAX => "max 100000",
                    files::CPU_UCLAMP_MIN => "0.00",
                    _ => "",
                };
                let v = self.groups[key].values.get(other).map(String::as_str);
                format!("{}\n", v.unwrap_or(default))
            }
        })
    }

    fn write(&mut self, key: &str, name: &str, value: &str) -> Result<(), i32> {
        match name {
            files::PROCS | files::THREADS => {
                let id = value.trim().parse().map_err(|_| libc::EINVAL)?;
                self.attach(key, name == files::PROCS, id)
            }
            files::TYPE => match (value.trim(), self.groups[key].threaded) {
                ("threaded", _) => {
                    self.groups.get_mut(key).expect("checked").threaded = true;
                    Ok(())
                }
                ("domain", false) => Ok(()),
                _ => Err(libc::EINVAL),
            },
            files::SUBTREE_CONTROL => self.enable(key, value),
            files::CPU_WEIGHT => match value.trim().parse::<u32>() {
                Ok(1..=10000) => self.set(key, name, value.trim().to_string()),
                _ => Err(libc::EINVAL),
            },
            files::CPU_UCLAMP_MIN => match value.trim().parse::<f64>() {
                Ok(v) if (0.0..=100.0).contains(&v) => self.set(key, name, format!("{v:.2}")),
                _ => Err(libc::EINVAL),
            },
            files::CONTROLLERS => Err(libc::EACCES),
            _ => self.set(key, name, value.trim().to_string()),
        }
    }

    fn set(&mut self, key: &str, name: &str, value: String) -> Result<(), i32> {
        let g = self.groups.get_mut(key).expect("checked");
        g.values.insert(name.to_string(), value);
        Ok(())
    }

    fn enable(&mut self, key: &str, value: &str) -> Result<(), i32> {
        let available = self.controllers(key);
        let mut subtree = self.groups[key].subtree.clone();
        for word in value.split_whitespace() {
            if let Some(c) = word.strip_prefix('+') {
                // Not a controller at all: EINVAL; one not available here: ENOENT.
                if !CONTROLLERS.contains(&c) {
                    return Err(libc::EINVAL);
                }
                if !available.contains(c) {
                    return Err(libc::ENOENT);
                }
                subtree.insert(c.to_string());
            } else if let Some(c) = word.strip_prefix('-') {
                subtree.remove(c);
            } else {
                return Err(libc::EINVAL);
            }
        }
        let domain = !key.is_empty() && !self.groups[key].threaded && !self.is_thread_root(key);
        if !subtree.is_empty() && domain && self.has_processes(key) {
            return Err(libc::EBUSY);
        }
        self.groups.get_mut(key).expect("checked").subtree = subtree;
        Ok(())
    }

    fn attach(&mut self, key: &str, process: bool, id: u32) -> Result<(), i32> {
        let task = self.tasks.get(&id).ok_or(libc::ESRCH)?;
        if self.kind(key) == "domain invalid" {
            return Err(libc::EOPNOTSUPP);
        }
        if !process && self.domain(&task.group) != self.domain(key) {
            return Err(libc::EOPNOTSUPP);
        }
        if !self.takes_tasks(key) {
            return Err(libc::EBUSY);
        }
        // A process write of any of its thread ids moves the whole process.
        let tgid = task.tgid;
        for t in self
            .tasks
            .values_mut()
            .filter(|t| process && t.tgid == tgid)
        {
            t.group = key.to_string();
        }
        if !process {
            self.tasks.get_mut(&id).expect("checked").group = key.to_string();
        }
        Ok(())
    }
}

/// Where an absolute path points in the model.
enum Node {
    Group(String),
    File(String, String),
    Missing,
}

impl MemKernel {
    /// A hierarchy with `available` controllers at its root and an empty cgqos root group.
    pub fn new(mount: impl Into<PathBuf>, root: impl Into<PathBuf>, available: &[&str]) -> Self {
        let (mount, root) = (mount.into(), root.into());
        let mut m = Model {
            available: available.iter().map(|c| c.to_string()).collect(),
            next_start: 1000,
            ..Model::default()
        };
        m.groups.insert(String::new(), Group::default());
        let k = MemKernel {
            mount,
            root,
            model: RefCell::new(m),
        };
        k.mkdir_all(&k.root.clone());
        k
    }

    /// Creates the group at `dir` and its missing ancestors (groups outside the cgqos root
    /// that tasks come from).
    pub fn mkdir_all(&self, dir: &Path) {
        let key = self.key_of(dir).expect("a directory under the mount");
        let mut m = self.model.borrow_mut();
        let mut acc = String::new();
        for part in key.split('/').filter(|p| !p.is_empty()) {
            acc = join(&acc, part);
            m.groups.entry(acc.clone()).or_default();
        }
    }

    /// Groups get `cpu.uclamp.min` (with the cpu controller).
    pub fn with_uclamp(self) -> Self {
        self.model.borrow_mut().uclamp = true;
        self
    }

    /// The group key of an absolute path (`..` resolved), if it lies under the mount.
    fn key_of(&self, path: &Path) -> Option<String> {
        let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
        for c in path.components() {
            match c {
                Component::ParentDir => {
                    parts.pop();
                }
                Component::Normal(p) => parts.push(p),
                _ => {}
            }
        }
        let clean: PathBuf = std::iter::once(Component::RootDir.as_os_str())
            .chain(parts)
            .collect();
        let rel = clean.strip_prefix(&self.mount).ok()?;
        Some(rel.to_string_lossy().into_owned())
    }

    fn node(&self, path: &Path) -> Node {
        let m = self.model.borrow();
        let Some(key) = self.key_of(path) else {
            return Node::Missing;
        };
        if m.groups.contains_key(&key) {
            return Node::Group(key);
        }
        let (parent, name) = match key.rsplit_once('/') {
            Some((p, n)) => (p.to_string(), n.to_string()),
            None => (String::new(), key.clone()),
        };
        if m.groups.contains_key(&parent) && m.has_file(&parent, &name) {
            Node::File(parent, name)
        } else {
            Node::Missing
        }
    }

    /// A new process `pid` (its leader thread) in the group at `dir`, created by `ppid`.
    pub fn spawn(&self, pid: u32, ppid: u32, comm: &str, dir: &Path) {
        let key = self.key_of(dir).expect("a directory under the mount");
        self.add(pid, pid, ppid, comm, key, false);
    }

    /// A kernel thread in the hierarchy root.
    pub fn spawn_kernel_thread(&self, pid: u32, comm: &str) {
        self.add(pid, pid, 2, comm, String::new(), true);
    }

    /// A new thread `tid` of process `pid`, in its leader's group (as clone places it).
    pub fn spawn_thread(&self, pid: u32, tid: u32, comm: &str) {
        let (group, ppid) = {
            let m = self.model.borrow();
            let leader = &m.tasks[&pid];
            (leader.group.clone(), leader.ppid)
        };
        self.add(pid, tid, ppid, comm, group, false);
    }

    fn add(&self, tgid: u32, id: u32, ppid: u32, comm: &str, group: String, kernel: bool) {
        let mut m = self.model.borrow_mut();
        assert!(m.groups.contains_key(&group), "no group {group:?}");
        m.next_start += 1;
        let starttime = m.next_start;
        m.tasks.insert(
            id,
            Task {
                tgid,
                ppid,
                comm: comm.to_string(),
                starttime,
                kernel,
                group,
            },
        );
    }

    /// Task `id` exits (a process leader takes its threads with it).
    pub fn exit(&self, id: u32) {
        let mut m = self.model.borrow_mut();
        let leader = m.tasks.get(&id).is_some_and(|t| t.tgid == id);
        m.tasks
            .retain(|&t, task| t != id && !(leader && task.tgid == id));
    }

    /// The cgroup path `/proc/<id>/cgroup` would show for task `id`.
    pub fn cgroup_of(&self, id: u32) -> Option<String> {
        let m = self.model.borrow();
        m.tasks.get(&id).map(|t| format!("/{}", t.group))
    }

    /// The start time of task `id`.
    pub fn starttime(&self, id: u32) -> Option<u64> {
        self.model.borrow().tasks.get(&id).map(|t| t.starttime)
    }
}

impl CgroupBackend for MemKernel {
    fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.root.clone()
        } else {
            self.root.join(rel)
        }
    }

    fn exists(&self, rel: &str) -> bool {
        !matches!(self.node(&self.path(rel)), Node::Missing)
    }

    fn read(&self, rel: &str) -> Result<String, FsError> {
        self.read_path(&self.path(rel))
    }

    fn read_path(&self, path: &Path) -> Result<String, FsError> {
        match self.node(path) {
            Node::File(g, name) => self
                .model
                .borrow()
                .read(&g, &name)
                .map_err(|code| errno("read", path, None, code)),
            Node::Group(_) => Err(errno("read", path, None, libc::EISDIR)),
            Node::Missing => Err(errno("read", path, None, libc::ENOENT)),
        }
    }

    fn write(&self, rel: &str, value: &str) -> Result<(), FsError> {
        let path = self.path(rel);
        match self.node(&path) {
            Node::File(g, name) => self
                .model
                .borrow_mut()
                .write(&g, &name, value)
                .map_err(|code| errno("write", &path, Some(value), code)),
            Node::Group(_) => Err(errno("open", &path, Some(value), libc::EISDIR)),
            Node::Missing => Err(errno("open", &path, Some(value), libc::ENOENT)),
        }
    }

    fn mkdir(&self, rel: &str) -> Result<(), FsError> {
        let path = self.path(rel);
        let key = self
            .key_of(&path)
            .ok_or_else(|| errno("mkdir", &path, None, libc::ENOENT))?;
        let mut m = self.model.borrow_mut();
        if m.groups.contains_key(&key) {
            return Ok(());
        }
        if !m.groups.contains_key(parent_of(&key)) {
            return Err(errno("mkdir", &path, None, libc::ENOENT));
        }
        m.groups.insert(key, Group::default());
        Ok(())
    }

    fn rmdir(&self, rel: &str) -> Result<(), FsError> {
        let path = self.path(rel);
        let Node::Group(key) = self.node(&path) else {
            return Ok(());
        };
        let mut m = self.model.borrow_mut();
        if key.is_empty() || m.has_processes(&key) || m.child_keys(&key).next().is_some() {
            return Err(errno("rmdir", &path, None, libc::EBUSY));
        }
        m.groups.remove(&key);
        Ok(())
    }

    fn children(&self, group: &str) -> Vec<String> {
        let Node::Group(key) = self.node(&self.path(group)) else {
            return Vec::new();
        };
        let m = self.model.borrow();
        let prefix = if key.is_empty() { 0 } else { key.len() + 1 };
        m.child_keys(&key)
            .map(|c| c[prefix..].to_string())
            .collect()
    }

    fn is_hierarchy_root(&self, rel: &str) -> bool {
        matches!(self.node(&self.path(rel)), Node::Group(k) if k.is_empty())
    }

    fn attach(&self, file: &Path, id: u32) -> Result<(), FsError> {
        let value = id.to_string();
        match self.node(file) {
            Node::File(g, name) if name == files::PROCS || name == files::THREADS => self
                .model
                .borrow_mut()
                .write(&g, &name, &value)
                .map_err(|code| errno("write", file, Some(&value), code)),
            _ => Err(errno("open", file, Some(&value), libc::ENOENT)),
        }
    }
}

impl TaskSource for MemKernel {
    fn stat(&self, id: u32) -> Result<Stat, ProcError> {
        let m = self.model.borrow();
        let t = m.tasks.get(&id).ok_or(ProcError::Gone(id))?;
        Ok(Stat {
            comm: t.comm.clone(),
            state: 'S',
            ppid: t.ppid,
            flags: if t.kernel { KTHREAD_FLAG } else { 0 },
            num_threads: m.tasks.values().filter(|o| o.tgid == t.tgid).count() as u32,
            starttime: t.starttime,
        })
    }

    fn task_stat(&self, pid: u32, tid: u32) -> Result<Stat, ProcError> {
        match self.tgid(tid) {
            Ok(tgid) if tgid == pid => self.stat(tid),
            _ => Err(ProcError::Gone(tid)),
        }
    }

    fn tgid(&self, tid: u32) -> Result<u32, ProcError> {
        let m = self.model.borrow();
        m.tasks
            .get(&tid)
            .map(|t| t.tgid)
            .ok_or(ProcError::Gone(tid))
    }

    fn threads(&self, pid: ProcessId) -> Result<Vec<ThreadId>, ProcError> {
        let m = self.model.borrow();
        if m.tasks.get(&pid.get()).is_none_or(|t| t.tgid != pid.get()) {
            return Err(ProcError::Gone(pid.get()));
        }
        Ok(m.tasks
            .iter()
            .filter(|(_, t)| t.tgid == pid.get())
            .map(|(&id, _)| ThreadId::new(id))
            .collect())
    }

    fn cgroup(&self, pid: ProcessId, tid: ThreadId) -> Result<String, ProcError> {
        self.task_stat(pid.get(), tid.get())?;
        Ok(self.cgroup_of(tid.get()).expect("checked"))
    }

    /// The model has no pidfds: placement checks start times, as on kernels before 5.3.
    fn pidfd(&self, _id: u32, _thread: bool) -> io::Result<Pidfd> {
        Err(io::Error::from_raw_os_error(libc::ENOSYS))
    }
}

#[cfg(test)]
mod tests;
