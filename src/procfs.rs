//! Processes and threads as `/proc` shows them, under a caller-given root.
//!
//! A task is identified by (id, start time): ids are reused, start times (clock ticks since
//! boot, `/proc/<id>/stat` field 22) are not for the same id. A task that vanishes between
//! two reads is a normal event (`ProcError::Gone`), never a crash.

use std::fmt;
use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A process (thread-group) id. The number is private: a process id is made from a number
/// where a task enters cgqos (a request, an event, a CLI argument) and read back with `get`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ProcessId(u32);

/// A thread id (a process's id is also the id of its main thread).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ThreadId(u32);

/// A task's start time: clock ticks since boot (`/proc/<id>/stat` field 22). With the id it
/// names one task for good; the id alone may be reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StartTime(u64);

impl ProcessId {
    pub const fn new(id: u32) -> ProcessId {
        ProcessId(id)
    }
    pub const fn get(self) -> u32 {
        self.0
    }
    /// The process's main thread (same id).
    pub const fn main_thread(self) -> ThreadId {
        ThreadId(self.0)
    }
}

impl ThreadId {
    pub const fn new(id: u32) -> ThreadId {
        ThreadId(id)
    }
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl StartTime {
    pub const fn new(ticks: u64) -> StartTime {
        StartTime(ticks)
    }
    pub const fn get(self) -> u64 {
        self.0
    }
}

/// One task, resolved once where it enters cgqos and carried down from there: its process,
/// its own thread id (the process's id for a process) and its start time. Placement,
/// classification and the state records take it instead of re-reading `/proc/<id>/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskKey {
    pid: ProcessId,
    tid: ThreadId,
    start: StartTime,
}

impl TaskKey {
    pub const fn new(pid: ProcessId, tid: ThreadId, start: StartTime) -> TaskKey {
        TaskKey { pid, tid, start }
    }
    pub const fn pid(&self) -> ProcessId {
        self.pid
    }
    pub const fn tid(&self) -> ThreadId {
        self.tid
    }
    pub const fn start(&self) -> StartTime {
        self.start
    }
    /// Whether the task is its process's main thread (the process itself).
    pub const fn is_process(&self) -> bool {
        self.pid.0 == self.tid.0
    }
}

impl fmt::Display for StartTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for ProcessId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for ThreadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// `PF_KTHREAD` in `/proc/<pid>/stat` flags (include/linux/sched.h).
const PF_KTHREAD: u64 = 0x0020_0000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub comm: String,
    pub state: char,
    pub ppid: u32,
    pub flags: u64,
    /// Threads of the task's process (field 20).
    pub num_threads: u32,
    pub starttime: u64,
}

impl Stat {
    /// The task's start time, typed.
    pub fn start(&self) -> StartTime {
        StartTime(self.starttime)
    }

    pub fn is_kernel_thread(&self) -> bool {
        self.flags & PF_KTHREAD != 0
    }

    /// Parses `/proc/<id>/stat`; the comm may hold spaces and parentheses, so fields are
    /// counted from the last `)`.
    pub fn parse(text: &str) -> Option<Stat> {
        let open = text.find('(')?;
        let close = text.rfind(')')?;
        let comm = text.get(open + 1..close)?.to_string();
        let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
        Some(Stat {
            comm,
            state: rest.first()?.chars().next()?,
            ppid: rest.get(1)?.parse().ok()?,
            flags: rest.get(6)?.parse().ok()?,
            num_threads: rest.get(17)?.parse().ok()?,
            starttime: rest.get(19)?.parse().ok()?,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("no such process or thread {0}")]
    Gone(u32),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{0}: unexpected format")]
    Format(PathBuf),
}

/// The task reads placement needs, as `/proc` answers them: [`Procfs`] reads a `/proc`
/// tree, `cgroupfs::memory::MemKernel` answers from its model.
pub trait TaskSource {
    fn stat(&self, id: u32) -> Result<Stat, ProcError>;
    fn task_stat(&self, pid: u32, tid: u32) -> Result<Stat, ProcError>;
    fn tgid(&self, tid: u32) -> Result<u32, ProcError>;
    fn threads(&self, pid: ProcessId) -> Result<Vec<ThreadId>, ProcError>;
    fn cgroup(&self, pid: ProcessId, tid: ThreadId) -> Result<String, ProcError>;
    /// A pidfd for the process (`thread: false`) or thread `id`.
    fn pidfd(&self, id: u32, thread: bool) -> io::Result<Pidfd> {
        if thread {
            Pidfd::thread(id)
        } else {
            Pidfd::process(id)
        }
    }
}

impl TaskSource for Procfs {
    fn stat(&self, id: u32) -> Result<Stat, ProcError> {
        Procfs::stat(self, id)
    }
    fn task_stat(&self, pid: u32, tid: u32) -> Result<Stat, ProcError> {
        Procfs::task_stat(self, pid, tid)
    }
    fn tgid(&self, tid: u32) -> Result<u32, ProcError> {
        Procfs::tgid(self, tid)
    }
    fn threads(&self, pid: ProcessId) -> Result<Vec<ThreadId>, ProcError> {
        Procfs::threads(self, pid)
    }
    fn cgroup(&self, pid: ProcessId, tid: ThreadId) -> Result<String, ProcError> {
        Procfs::cgroup(self, pid, tid)
    }
}

/// A `/proc` tree (`/proc` normally; a fixture in tests).
#[derive(Debug, Clone)]
pub struct Procfs {
    root: PathBuf,
}

impl Procfs {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Procfs { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Reads `rel` with one `read(2)` into this thread's reused buffer and hands the text
    /// to `f`. The files read this way (`stat`, `status`, `cgroup`, `comm`) are generated
    /// whole by the kernel and returned whole by a read with room for them, so a read
    /// shorter than the room left is the end; `fs::read` would `statx` and then `read`
    /// until a zero (a size-0 procfs file costs it four reads).
    fn read_with<T>(&self, rel: &str, id: u32, f: impl FnOnce(&str) -> T) -> Result<T, ProcError> {
        // Lossy: a thread may name itself with any bytes, and a name that is not UTF-8 must
        // not make its task unplaceable.
        self.read_bytes(rel, id, usize::MAX, |b| f(&String::from_utf8_lossy(b)))
    }

    /// At most `limit` bytes of `rel`, read as `read_with` does, handed to `f` (which must
    /// not read `/proc` itself: the buffer is borrowed meanwhile).
    fn read_bytes<T>(
        &self,
        rel: &str,
        id: u32,
        limit: usize,
        f: impl FnOnce(&[u8]) -> T,
    ) -> Result<T, ProcError> {
        let path = self.root.join(rel);
        let gone = |source: io::Error| match source.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ESRCH) => ProcError::Gone(id),
            _ => ProcError::Io {
                path: path.clone(),
                source,
            },
        };
        let file = fs::File::open(&path).map_err(gone)?;
        READ_BUF.with_borrow_mut(|buf| {
            let n = read_whole(&file, buf, limit).map_err(gone)?;
            Ok(f(&buf[..n]))
        })
    }

    /// `/proc/<id>/stat`; for a thread id this is the thread's own stat.
    pub fn stat(&self, id: u32) -> Result<Stat, ProcError> {
        let rel = format!("{id}/stat");
        self.read_with(&rel, id, Stat::parse)?
            .ok_or_else(|| ProcError::Format(self.root.join(rel)))
    }

    /// `/proc/<pid>/task/<tid>/stat`: the thread's stat, found only while `tid` is a thread
    /// of `pid`.
    pub fn task_stat(&self, pid: u32, tid: u32) -> Result<Stat, ProcError> {
        let rel = format!("{pid}/task/{tid}/stat");
        self.read_with(&rel, tid, Stat::parse)?
            .ok_or_else(|| ProcError::Format(self.root.join(rel)))
    }

    /// The first `limit` bytes of a process's command line (`/proc/<id>/cmdline`), handed
    /// to `f`.
    pub fn cmdline<T>(
        &self,
        id: u32,
        limit: usize,
        f: impl FnOnce(&[u8]) -> T,
    ) -> Result<T, ProcError> {
        self.read_bytes(&format!("{id}/cmdline"), id, limit, f)
    }

    /// A task's name (`/proc/<id>/comm`, without the newline).
    pub fn comm(&self, id: u32) -> Result<String, ProcError> {
        self.read_with(&format!("{id}/comm"), id, |t| t.trim_end().to_string())
    }

    /// The thread group (process) a thread id belongs to.
    pub fn tgid(&self, tid: u32) -> Result<u32, ProcError> {
        let rel = format!("{tid}/status");
        self.read_with(&rel, tid, |text| {
            text.lines()
                .find_map(|l| l.strip_prefix("Tgid:"))
                .and_then(|v| v.trim().parse().ok())
        })?
        .ok_or_else(|| ProcError::Format(self.root.join(rel)))
    }

    /// Real uid of a task (`Uid:` of its status: real, effective, saved, filesystem).
    pub fn ruid(&self, id: u32) -> Result<u32, ProcError> {
        self.status_ids(id, "Uid:").and_then(|v| {
            v.first()
                .copied()
                .ok_or_else(|| ProcError::Format(self.root.join(format!("{id}/status"))))
        })
    }

    /// Supplementary groups of a task, only while its effective uid is `euid`, from one read
    /// of its status: `None` when the id now names a task of another user (reused).
    pub fn groups_of_euid(&self, id: u32, euid: u32) -> Result<Option<Vec<u32>>, ProcError> {
        let rel = format!("{id}/status");
        let fields = self.read_with(&rel, id, |text| {
            (status_field(text, "Uid:"), status_field(text, "Groups:"))
        })?;
        let uids = fields
            .0
            .ok_or_else(|| ProcError::Format(self.root.join(&rel)))?;
        if uids.get(1) != Some(&euid) {
            return Ok(None);
        }
        fields
            .1
            .map(Some)
            .ok_or_else(|| ProcError::Format(self.root.join(rel)))
    }

    fn status_ids(&self, id: u32, field: &str) -> Result<Vec<u32>, ProcError> {
        let rel = format!("{id}/status");
        self.read_with(&rel, id, |text| status_field(text, field))?
            .ok_or_else(|| ProcError::Format(self.root.join(rel)))
    }

    /// Thread ids of a process. The kernel's readdir of `task/` can skip a live thread
    /// while another exits, so the list is read twice and merged.
    pub fn threads(&self, pid: ProcessId) -> Result<Vec<ThreadId>, ProcError> {
        let dir = self.root.join(format!("{}/task", pid.0));
        let mut ids = Vec::new();
        for _ in 0..2 {
            list_ids(&dir, &mut ids).map_err(|source| match source.raw_os_error() {
                Some(libc::ENOENT) | Some(libc::ESRCH) => ProcError::Gone(pid.0),
                _ => ProcError::Io {
                    path: dir.clone(),
                    source,
                },
            })?;
        }
        ids.sort_unstable();
        ids.dedup();
        Ok(ids.into_iter().map(ThreadId).collect())
    }

    /// The cgroup v2 path of a task (`/chrome/ui`), from the `0::` line of its cgroup file.
    pub fn cgroup(&self, pid: ProcessId, tid: ThreadId) -> Result<String, ProcError> {
        let rel = format!("{}/task/{}/cgroup", pid.0, tid.0);
        self.read_with(&rel, tid.0, |text| {
            text.lines()
                .find_map(|l| l.strip_prefix("0::"))
                .map(|p| p.trim().to_string())
        })?
        .ok_or_else(|| ProcError::Format(self.root.join(rel)))
    }

    /// Many records: read to the end, not with one read.
    pub fn mountinfo(&self) -> Result<String, ProcError> {
        let path = self.root.join("self/mountinfo");
        // Room for a few hundred mounts up front: `fs::read` of a size-0 file starts with
        // 32-byte reads and doubles, eight calls for twenty mounts.
        let mut bytes = Vec::with_capacity(16 << 10);
        fs::File::open(&path)
            .and_then(|mut f| io::Read::read_to_end(&mut f, &mut bytes))
            .map(|_| String::from_utf8_lossy(&bytes).into_owned())
            .map_err(|source| ProcError::Io { path, source })
    }
}

thread_local! {
    /// The buffer `/proc` files are read into, reused (one per thread: the daemon's
    /// engine, its event thread and the CLI each have their own).
    static READ_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Appends the numeric names in directory `dir` to `ids`: open, `getdents64` into a stack
/// buffer until the end, close (`fs::read_dir` also `fstat`s, and allocates per entry).
fn list_ids(dir: &Path, ids: &mut Vec<u32>) -> io::Result<()> {
    use rustix::fs::{CWD, Mode, OFlags, RawDir};
    let fd = rustix::fs::openat(
        CWD,
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 4096];
    let mut entries = RawDir::new(fd, &mut buf);
    while let Some(entry) = entries.next() {
        let entry = entry?;
        if let Some(id) = entry
            .file_name()
            .to_str()
            .ok()
            .and_then(|n| n.parse::<u32>().ok())
        {
            ids.push(id);
        }
    }
    Ok(())
}

/// Room for one read: more than any `stat`, `status` or `cgroup` file holds.
const READ_ROOM: usize = 16 * 1024;

/// Reads `file` into `buf` (its contents kept between calls: only the first `n` bytes
/// returned are this file's): one read while it returns less than the room left, more only
/// for a file larger than that.
fn read_whole(mut file: &fs::File, buf: &mut Vec<u8>, limit: usize) -> io::Result<usize> {
    use std::io::Read;
    let mut filled = 0;
    loop {
        if filled >= limit {
            return Ok(limit);
        }
        if buf.len() - filled < READ_ROOM / 4 {
            buf.resize(buf.len().max(READ_ROOM / 2) * 2, 0);
        }
        let end = buf.len().min(limit);
        let room = end - filled;
        match file.read(&mut buf[filled..end]) {
            Ok(n) if n < room => return Ok(filled + n),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// `PIDFD_THREAD` (Linux 6.9): a pidfd for one thread rather than a whole process.
const PIDFD_THREAD: rustix::process::PidfdFlags =
    rustix::process::PidfdFlags::from_bits_retain(libc::O_EXCL as u32);

/// A pidfd: names one task for its whole life, whatever later happens to its id. An id is
/// free for reuse once its task is reaped; the pidfd then still names the dead task, and
/// shows that it exited.
#[derive(Debug)]
pub struct Pidfd {
    fd: OwnedFd,
}

impl Pidfd {
    fn open(id: u32, flags: rustix::process::PidfdFlags) -> io::Result<Pidfd> {
        // 0 and ids beyond i32 name no task: the kernel's own answer for them.
        let pid = i32::try_from(id)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
        Ok(Pidfd {
            fd: rustix::process::pidfd_open(pid, flags)?,
        })
    }

    /// The process `pid` (a thread-group leader). ESRCH: no such process; EINVAL (ENOENT
    /// on newer kernels): `pid` is a thread, not a process; ENOSYS: a kernel before 5.3.
    pub fn process(pid: u32) -> io::Result<Pidfd> {
        Pidfd::open(pid, rustix::process::PidfdFlags::empty())
    }

    /// The thread `tid` alone (`PIDFD_THREAD`). EINVAL on kernels before 6.9: learnt from
    /// the first such answer and remembered, so later calls fail at once without the
    /// system call (a thread id is never EINVAL with the flag where the kernel has it).
    pub fn thread(tid: u32) -> io::Result<Pidfd> {
        use std::sync::atomic::{AtomicBool, Ordering};
        static NO_THREAD_PIDFDS: AtomicBool = AtomicBool::new(false);
        let einval = || io::Error::from_raw_os_error(libc::EINVAL);
        if NO_THREAD_PIDFDS.load(Ordering::Relaxed) {
            return Err(einval());
        }
        let r = Pidfd::open(tid, PIDFD_THREAD);
        // An id beyond i32 is EINVAL too, without asking the kernel: not a kernel fact.
        if i32::try_from(tid).is_ok_and(|t| t > 0)
            && r.as_ref()
                .is_err_and(|e| e.raw_os_error() == Some(libc::EINVAL))
        {
            NO_THREAD_PIDFDS.store(true, Ordering::Relaxed);
        }
        r
    }

    /// Whether the task has exited (for a process pidfd: its whole thread group), i.e. its
    /// id may already name another task. One `poll(2)`, no `/proc` read.
    pub fn exited(&self) -> bool {
        use rustix::event::{PollFd, PollFlags, Timespec};
        let mut p = [PollFd::new(&self.fd, PollFlags::IN)];
        let now = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // A failed poll cannot prove the task alive: treat it as gone, the safe side.
        rustix::event::poll(&mut p, Some(&now)) != Ok(0)
    }
}

/// The descriptor, e.g. to wait for the exit with tokio.
impl From<Pidfd> for OwnedFd {
    fn from(p: Pidfd) -> OwnedFd {
        p.fd
    }
}

/// The numbers of one `Name:` line of a status file.
fn status_field(text: &str, field: &str) -> Option<Vec<u32>> {
    text.lines().find_map(|l| l.strip_prefix(field)).map(|v| {
        v.split_whitespace()
            .filter_map(|n| n.parse().ok())
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_larger_than_one_read_are_read_whole_and_limits_hold() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("5")).unwrap();
        let big: Vec<u8> = (0..100_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        std::fs::write(dir.path().join("5/cmdline"), &big).unwrap();
        let p = Procfs::new(dir.path());
        assert_eq!(p.cmdline(5, usize::MAX, |b| b.to_vec()).unwrap(), big);
        assert_eq!(
            p.cmdline(5, 40_000, |b| b.to_vec()).unwrap(),
            &big[..40_000]
        );
        // The reused buffer holds the long file's bytes; a short file reads as itself.
        std::fs::write(dir.path().join("5/comm"), "short\n").unwrap();
        assert_eq!(p.comm(5).unwrap(), "short");
    }

    #[test]
    fn groups_count_only_while_the_task_runs_as_the_caller() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("9")).unwrap();
        std::fs::write(
            dir.path().join("9/status"),
            "Name:\tx\nUid:\t1000\t1000\t1000\t1000\nGroups:\t20 27 \n",
        )
        .unwrap();
        let p = Procfs::new(dir.path());
        assert_eq!(p.groups_of_euid(9, 1000).unwrap(), Some(vec![20, 27]));
        assert_eq!(p.groups_of_euid(9, 1001).unwrap(), None);
    }

    #[test]
    fn a_thread_named_with_bytes_that_are_not_utf8_is_still_read() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("77")).unwrap();
        let mut stat =
            b"77 (a\xff\xfeb) S 1 77 77 0 -1 4194560 0 0 0 0 1 2 0 0 20 0 1 0 4242 0 0".to_vec();
        stat.push(b'\n');
        std::fs::write(dir.path().join("77/stat"), stat).unwrap();
        let st = Procfs::new(dir.path()).stat(77).unwrap();
        assert_eq!(st.comm, "a\u{fffd}\u{fffd}b");
        assert_eq!(st.starttime, 4242);
    }

    #[test]
    fn stat_with_spaces_and_parens_in_comm() {
        let s = "1234 (we ird) (x) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 3 0 98765 1000 100 18446744073709551615";
        let st = Stat::parse(s).unwrap();
        assert_eq!(st.comm, "we ird) (x");
        assert_eq!(st.state, 'S');
        assert_eq!(st.ppid, 1);
        assert_eq!(st.starttime, 98765);
        assert_eq!(st.num_threads, 3);
        assert!(!st.is_kernel_thread());
    }

    #[test]
    fn kernel_threads_are_recognised_by_flags() {
        let s = "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 3 0 0";
        assert!(Stat::parse(s).unwrap().is_kernel_thread());
    }

    #[test]
    fn a_pidfd_shows_when_its_task_exited() {
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let fd = Pidfd::process(child.id()).unwrap();
        assert!(!fd.exited());
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(fd.exited());
        // Our own main thread is a process; another thread of ours is not.
        let me = std::process::id();
        assert!(!Pidfd::process(me).unwrap().exited());
        let tid = std::thread::spawn(|| rustix::thread::gettid().as_raw_nonzero().get() as u32);
        let tid = tid.join().unwrap();
        // The thread exited: its id is no process, and (6.9+) its own pidfd is gone too.
        assert!(Pidfd::process(tid).is_err());
    }

    #[test]
    fn a_vanished_task_is_gone_not_an_io_error() {
        let p = Procfs::new("/proc");
        // pid_max is at most 2^22, so this id cannot exist.
        assert!(matches!(p.stat(4_999_999), Err(ProcError::Gone(4_999_999))));
    }
}
