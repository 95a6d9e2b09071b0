//! The cgroup v2 filesystem: file names, the kernel's error meanings, and nothing else.
//!
//! Every operation is relative to a root directory given by the caller, so tests run on a
//! fake tree in a tempdir. Writes never create files: cgroupfs has no unknown files, and a
//! missing controller file means "this kernel or this group does not support it".
//!
//! [`CgroupBackend`] is what placement and apply need of a tree: [`CgroupFs`] does it on
//! the real filesystem, [`memory::MemKernel`] in memory with the kernel's rules (for tests
//! that need no root).

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub mod memory;

/// cgroup v2 file names and values.
pub mod files {
    pub const PROCS: &str = "cgroup.procs";
    pub const THREADS: &str = "cgroup.threads";
    pub const TYPE: &str = "cgroup.type";
    pub const CONTROLLERS: &str = "cgroup.controllers";
    pub const SUBTREE_CONTROL: &str = "cgroup.subtree_control";
    pub const CPU_WEIGHT: &str = "cpu.weight";
    pub const CPU_MAX: &str = "cpu.max";
    pub const CPU_UCLAMP_MIN: &str = "cpu.uclamp.min";
    pub const CPUSET_CPUS: &str = "cpuset.cpus";
    pub const CPUSET_CPUS_EFFECTIVE: &str = "cpuset.cpus.effective";
    pub const THREADED: &str = "threaded";
}

/// What a failed cgroupfs operation means, from the kernel's errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// ESRCH: the task exited (or never existed).
    Gone,
    /// ENOENT on a file: the kernel has no such file here (controller not enabled/built).
    Missing,
    /// EBUSY: the no-internal-process rule, or a group still has members.
    Busy,
    /// EOPNOTSUPP: not allowed for this cgroup type (e.g. a thread moved across domains).
    NotSupported,
    /// EINVAL: a rejected value, or a thread that has not run yet.
    Invalid,
    /// EACCES / EPERM.
    Permission,
    Other,
}

impl Refusal {
    pub fn of(e: &io::Error) -> Refusal {
        match e.raw_os_error() {
            Some(libc::ESRCH) => Refusal::Gone,
            Some(libc::ENOENT) => Refusal::Missing,
            Some(libc::EBUSY) => Refusal::Busy,
            Some(libc::EOPNOTSUPP) => Refusal::NotSupported,
            Some(libc::EINVAL) => Refusal::Invalid,
            Some(libc::EACCES) | Some(libc::EPERM) => Refusal::Permission,
            _ => Refusal::Other,
        }
    }

    /// Why the kernel says no, in words a user can act on.
    pub fn explain(self) -> &'static str {
        match self {
            Refusal::Gone => "the task exited",
            Refusal::Missing => {
                "the kernel offers no such file here (controller not enabled or not built in)"
            }
            Refusal::Busy => {
                "the kernel's no-internal-process rule: a group that enables controllers for its children cannot hold tasks, and a group with members cannot be removed"
            }
            Refusal::NotSupported => {
                "not allowed for this cgroup type (threads can only move inside their own threaded subtree; a threaded group cannot become a domain)"
            }
            Refusal::Invalid => "the kernel rejected the value (or the thread has not run yet)",
            Refusal::Permission => "permission denied (cgqos needs root or a delegated subtree)",
            Refusal::Other => "unexpected error",
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{op} {path}{}: {source} ({})", value.as_ref().map(|v| format!(" = {v:?}")).unwrap_or_default(), Refusal::of(source).explain())]
pub struct FsError {
    pub op: &'static str,
    pub path: PathBuf,
    pub value: Option<String>,
    pub source: io::Error,
}

impl FsError {
    pub fn refusal(&self) -> Refusal {
        Refusal::of(&self.source)
    }
}

/// `group/file` (or a subgroup), relative to a root; `""` is the root itself.
pub fn join(group: &str, file: &str) -> String {
    if group.is_empty() {
        file.to_string()
    } else {
        format!("{group}/{file}")
    }
}

/// The group above `group` (`""`, the root, for a top-level group and for the root itself).
pub fn parent_of(group: &str) -> &str {
    group.rsplit_once('/').map_or("", |(p, _)| p)
}

/// `root/rel`, keeping only the plain names of `rel`: a relative group path never leaves the
/// root, whatever it holds (`Path::join` would let an absolute `rel` replace the root and a
/// `..` climb out of it).
pub fn join_safely(root: &Path, rel: &str) -> PathBuf {
    let mut p = root.to_path_buf();
    for c in Path::new(rel).components() {
        if let std::path::Component::Normal(name) = c {
            p.push(name);
        }
    }
    p
}

/// A cgroup v2 tree rooted at `root` (the cgqos root).
#[derive(Debug, Clone)]
pub struct CgroupFs {
    root: PathBuf,
    /// The `cgroup.procs` / `cgroup.threads` files written so far, kept open (as Android's
    /// libprocessgroup does): a move is one `write(2)`, not open, write, close. Shared by
    /// clones, so every placer of a process uses the same descriptors.
    attacher: Arc<Mutex<Attacher>>,
}

impl CgroupFs {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        CgroupFs {
            root: root.into(),
            attacher: Arc::default(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Absolute path of a group or file relative to the root (`""` is the root).
    pub fn path(&self, rel: &str) -> PathBuf {
        join_safely(&self.root, rel)
    }

    pub fn exists(&self, rel: &str) -> bool {
        self.path(rel).exists()
    }

    pub fn read(&self, rel: &str) -> Result<String, FsError> {
        let path = self.path(rel);
        fs::read_to_string(&path).map_err(|source| FsError {
            op: "read",
            path,
            value: None,
            source,
        })
    }

    /// One `write(2)` of `value` to an existing file, as the kernel wants it.
    pub fn write(&self, rel: &str, value: &str) -> Result<(), FsError> {
        let path = self.path(rel);
        write_existing(&path, value)
    }

    pub fn mkdir(&self, rel: &str) -> Result<(), FsError> {
        let path = self.path(rel);
        match fs::create_dir(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(source) => Err(FsError {
                op: "mkdir",
                path,
                value: None,
                source,
            }),
        }
    }

    /// Removes an empty group (the kernel refuses with EBUSY while it has members).
    pub fn rmdir(&self, rel: &str) -> Result<(), FsError> {
        let path = self.path(rel);
        // A removed group's files answer ENODEV: close them (and anything below).
        self.attachers().forget_under(&path);
        match fs::remove_dir(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(FsError {
                op: "rmdir",
                path,
                value: None,
                source,
            }),
        }
    }

    fn attachers(&self) -> std::sync::MutexGuard<'_, Attacher> {
        // The cache holds nothing a panic could leave half-changed.
        self.attacher.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ids listed in `cgroup.procs` or `cgroup.threads` of a group.
    pub fn members(&self, group: &str, file: &str) -> Result<Vec<u32>, FsError> {
        Ok(self
            .read(&join(group, file))?
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect())
    }

    /// Child group names of a group (directories), sorted.
    pub fn children(&self, group: &str) -> Vec<String> {
        let mut out: Vec<String> = fs::read_dir(self.path(group))
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        out.sort();
        out
    }

    /// Whether `rel` is the root of a cgroup2 hierarchy (which has no `cgroup.type`).
    pub fn is_hierarchy_root(&self, rel: &str) -> bool {
        let dir = self.path(rel);
        dir.join(files::PROCS).exists() && !dir.join(files::TYPE).exists()
    }
}

/// The file operations placement and apply do on a cgroup tree. Group and file names are
/// relative to the cgqos root (`""` is the root); `read_path` and `attach` take absolute
/// paths, because tasks go back to groups outside the root. Errors are the kernel's errnos
/// with path and value, as [`CgroupFs`] reports them.
pub trait CgroupBackend {
    /// The cgqos root directory.
    fn root(&self) -> &Path;
    /// Absolute path of a group or file relative to the root (`""` is the root).
    fn path(&self, rel: &str) -> PathBuf;
    fn exists(&self, rel: &str) -> bool;
    fn read(&self, rel: &str) -> Result<String, FsError>;
    /// A file by absolute path (the dry run reads the parent of a root it would create).
    fn read_path(&self, path: &Path) -> Result<String, FsError>;
    /// One `write(2)` of `value` to an existing file.
    fn write(&self, rel: &str, value: &str) -> Result<(), FsError>;
    /// Creates a group; an existing one is fine.
    fn mkdir(&self, rel: &str) -> Result<(), FsError>;
    /// Removes an empty group; a missing one is fine.
    fn rmdir(&self, rel: &str) -> Result<(), FsError>;
    /// Child group names of a group, sorted.
    fn children(&self, group: &str) -> Vec<String>;
    /// Whether `rel` is the root of a cgroup2 hierarchy (which has no `cgroup.type`).
    fn is_hierarchy_root(&self, rel: &str) -> bool;
    /// Writes `id` to an absolute `cgroup.procs` / `cgroup.threads` path (the real tree
    /// keeps each file open once written to).
    fn attach(&self, file: &Path, id: u32) -> Result<(), FsError>;

    /// Ids listed in `cgroup.procs` or `cgroup.threads` of a group.
    fn members(&self, group: &str, file: &str) -> Result<Vec<u32>, FsError> {
        Ok(self
            .read(&join(group, file))?
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect())
    }
}

impl CgroupBackend for CgroupFs {
    fn root(&self) -> &Path {
        CgroupFs::root(self)
    }
    fn path(&self, rel: &str) -> PathBuf {
        CgroupFs::path(self, rel)
    }
    fn exists(&self, rel: &str) -> bool {
        CgroupFs::exists(self, rel)
    }
    fn read(&self, rel: &str) -> Result<String, FsError> {
        CgroupFs::read(self, rel)
    }
    fn read_path(&self, path: &Path) -> Result<String, FsError> {
        fs::read_to_string(path).map_err(|source| FsError {
            op: "read",
            path: path.to_path_buf(),
            value: None,
            source,
        })
    }
    fn write(&self, rel: &str, value: &str) -> Result<(), FsError> {
        CgroupFs::write(self, rel, value)
    }
    fn mkdir(&self, rel: &str) -> Result<(), FsError> {
        CgroupFs::mkdir(self, rel)
    }
    fn rmdir(&self, rel: &str) -> Result<(), FsError> {
        CgroupFs::rmdir(self, rel)
    }
    fn children(&self, group: &str) -> Vec<String> {
        CgroupFs::children(self, group)
    }
    fn is_hierarchy_root(&self, rel: &str) -> bool {
        CgroupFs::is_hierarchy_root(self, rel)
    }
    #[inline]
    fn attach(&self, file: &Path, id: u32) -> Result<(), FsError> {
        self.attachers().attach(file, id)
    }
    fn members(&self, group: &str, file: &str) -> Result<Vec<u32>, FsError> {
        CgroupFs::members(self, group, file)
    }
}

pub fn write_existing(path: &Path, value: &str) -> Result<(), FsError> {
    // O_TRUNC as a shell's `echo v > file` does: kernfs ignores it, plain files need it.
    let mut f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(|source| FsError {
            op: "open",
            path: path.to_path_buf(),
            value: Some(value.to_string()),
            source,
        })?;
    f.write_all(value.as_bytes()).map_err(|source| FsError {
        op: "write",
        path: path.to_path_buf(),
        value: Some(value.to_string()),
        source,
    })
}

/// Writes task ids to `cgroup.procs` / `cgroup.threads` files, opening each file once and
/// keeping it open: the groups in use are few (the layout's groups and classes, the VMs').
#[derive(Debug, Default)]
pub struct Attacher {
    open: HashMap<PathBuf, File>,
}

/// More open attach files than any layout has: past it, all are closed and reopened as used.
const MAX_OPEN_ATTACH_FILES: usize = 256;

impl Attacher {
    pub fn new() -> Self {
        Self::default()
    }

    /// One `write(2)` of `id` to `file` (`cgroup.procs` or `cgroup.threads`). A descriptor
    /// kept from before that answers ENODEV (its group was removed, and maybe made again)
    /// is closed and the file opened afresh, once.
    pub fn attach(&mut self, file: &Path, id: u32) -> Result<(), FsError> {
        let cached = self.open.contains_key(file);
        match self.write(file, id) {
            Err(e) if cached && e.source.raw_os_error() == Some(libc::ENODEV) => {
                self.open.remove(file);
                self.write(file, id)
            }
            r => r,
        }
    }

    fn write(&mut self, file: &Path, id: u32) -> Result<(), FsError> {
        let fail = |op, source| FsError {
            op,
            path: file.to_path_buf(),
            value: Some(id.to_string()),
            source,
        };
        if !self.open.contains_key(file) {
            let f = OpenOptions::new()
                .write(true)
                .open(file)
                .map_err(|e| fail("open", e))?;
            if self.open.len() >= MAX_OPEN_ATTACH_FILES {
                self.open.clear();
            }
            self.open.insert(file.to_path_buf(), f);
        }
        let f = self.open.get_mut(file).expect("inserted above");
        let mut digits = [0u8; 10];
        let text = decimal(id, &mut digits);
        // A cgroup attach file takes one id per write(2): insist on one full write.
        match f.write(text) {
            Ok(n) if n == text.len() => Ok(()),
            Ok(_) => Err(fail("write", io::Error::other("short write"))),
            Err(source) => Err(fail("write", source)),
        }
    }

    /// Closes the files of `dir` and of the groups below it.
    pub fn forget_under(&mut self, dir: &Path) {
        self.open.retain(|path, _| !path.starts_with(dir));
    }
}

/// `id` in decimal, in `buf`.
fn decimal(mut id: u32, buf: &mut [u8; 10]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (id % 10) as u8;
        id /= 10;
        if id == 0 {
            return &buf[i..];
        }
    }
}

/// A cgroup2 mount from `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Where it is mounted.
    pub dir: PathBuf,
    /// Which cgroup of the hierarchy the mount shows (usually `/`).
    pub root: String,
}

/// All cgroup2 mounts listed in a mountinfo file.
pub fn cgroup2_mounts(mountinfo: &str) -> Vec<Mount> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            if right.split_whitespace().next()? != "cgroup2" {
                return None;
            }
            let f: Vec<&str> = left.split_whitespace().collect();
            Some(Mount {
                root: unescape(f.get(3)?),
                dir: PathBuf::from(unescape(f.get(4)?)),
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let mut out = String::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v as char);
            i += 4;
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_written_in_decimal() {
        let mut buf = [0u8; 10];
        for id in [0, 7, 10, 4_194_304, u32::MAX] {
            assert_eq!(decimal(id, &mut buf), id.to_string().as_bytes());
        }
    }

    #[test]
    fn a_relative_group_path_never_leaves_the_root() {
        let root = Path::new("/sys/fs/cgroup/cgqos");
        assert_eq!(join_safely(root, ""), root);
        assert_eq!(join_safely(root, "vms/arcvm"), root.join("vms/arcvm"));
        assert_eq!(join_safely(root, "/etc/passwd"), root.join("etc/passwd"));
        assert_eq!(join_safely(root, "../../x/./y"), root.join("x/y"));
        assert_eq!(
            join(join("", "chrome").as_str(), "cpu.weight"),
            "chrome/cpu.weight"
        );
    }

    #[test]
    fn finds_the_hybrid_hosts_cgroup2_mount() {
        let mi = "\
35 25 0:30 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
36 35 0:31 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw
37 35 0:32 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu
40 25 0:33 /sub /mnt/my\\040cg rw - cgroup2 cgroup2 rw
";
        let m = cgroup2_mounts(mi);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].dir, PathBuf::from("/sys/fs/cgroup/unified"));
        assert_eq!(m[0].root, "/");
        assert_eq!(m[1].dir, PathBuf::from("/mnt/my cg"));
        assert_eq!(m[1].root, "/sub");
    }

    #[test]
    fn writes_never_create_files() {
        let dir = tempfile::tempdir().unwrap();
        let fs = CgroupFs::new(dir.path());
        let e = fs.write("cpu.weight", "100").unwrap_err();
        assert_eq!(e.refusal(), Refusal::Missing);
        assert!(!dir.path().join("cpu.weight").exists());
        assert!(e.to_string().contains("cpu.weight"), "{e}");
        assert!(e.to_string().contains("\"100\""), "{e}");
    }
}
