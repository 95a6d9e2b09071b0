//! Holding a target by pidfd from its identity check to the write that moves it.

use crate::procfs::{Pidfd, ProcError, ProcessId, StartTime, Stat, TaskKey, TaskSource, ThreadId};

use super::PlaceError;

/// A target held from its identity check to the write that moves it.
///
/// The pidfd is opened first, `/proc/<id>` read after: while the task the pidfd names is
/// alive its id names nothing else, so a read followed by a check that it is still alive
/// read that task, however fast ids are reused (start times tick only every 10 ms).
#[derive(Debug)]
pub struct Held {
    /// The held task (for a process, its main thread): resolved once here and carried
    /// down to the write and the state record, so nothing re-reads its start time.
    key: TaskKey,
    /// Read while held (`key`'s start time is this stat's).
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
    pub fn process(
        proc: &impl TaskSource,
        pid: ProcessId,
        expected: Option<StartTime>,
    ) -> Result<Held, PlaceError> {
        let pid = pid.get();
        let fd = match opened(pid, proc.pidfd(pid, false))? {
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
            key: key_of(pid, pid, &stat),
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
    pub fn thread(
        proc: &impl TaskSource,
        tid: ThreadId,
        expected: Option<StartTime>,
    ) -> Result<Held, PlaceError> {
        Held::hold_thread(proc, None, tid, expected, true)
    }

    /// Holds thread `tid` of process `pid` (known from an event or a listing): as `thread`,
    /// but its stat is read from `/proc/<pid>/task/<tid>/stat`, which exists only while it
    /// is a thread of `pid`, so its process needs no `status` read.
    pub fn thread_of(
        proc: &impl TaskSource,
        pid: ProcessId,
        tid: ThreadId,
        expected: Option<StartTime>,
    ) -> Result<Held, PlaceError> {
        Held::hold_thread(proc, Some(pid.get()), tid, expected, true)
    }

    /// `thread`, choosing whether to try `PIDFD_THREAD` (tests exercise the older kernels'
    /// path with `false`).
    pub fn thread_with(
        proc: &impl TaskSource,
        tid: ThreadId,
        expected: Option<StartTime>,
        thread_pidfd: bool,
    ) -> Result<Held, PlaceError> {
        Held::hold_thread(proc, None, tid, expected, thread_pidfd)
    }

    /// Holds thread `tid`, of process `tgid` when the caller knows it.
    fn hold_thread(
        proc: &impl TaskSource,
        tgid: Option<u32>,
        tid: ThreadId,
        expected: Option<StartTime>,
        thread_pidfd: bool,
    ) -> Result<Held, PlaceError> {
        let tid = tid.get();
        let own = if thread_pidfd {
            opened(tid, proc.pidfd(tid, true))?
        } else {
            Opened::Invalid
        };
        let held = match own {
            Opened::Fd(fd) => Held::read(proc, tgid, tid, Some(fd))?,
            Opened::Unsupported => Held::read(proc, tgid, tid, None)?,
            Opened::Invalid => {
                // The process is held, and the thread found in its task list after that.
                let tgid = match tgid {
                    Some(t) => t,
                    None => proc.tgid(tid)?,
                };
                let fd = match opened(tgid, proc.pidfd(tgid, false))? {
                    Opened::Fd(fd) => fd,
                    // Its process exited (or the thread moved groups by exec): gone.
                    Opened::Invalid | Opened::Unsupported => return Err(PlaceError::Gone(tid)),
                };
                let stat = proc.task_stat(tgid, tid)?;
                Held {
                    key: key_of(tgid, tid, &stat),
                    stat,
                    fd: Some(fd),
                    via_process: true,
                }
            }
        };
        held.checked(proc, expected)
    }

    /// A thread held by its own pidfd (or none): its stat and process read after (its
    /// stat under its process's `task/` when the process is known).
    fn read(
        proc: &impl TaskSource,
        tgid: Option<u32>,
        tid: u32,
        fd: Option<Pidfd>,
    ) -> Result<Held, PlaceError> {
        let (stat, tgid) = match tgid {
            Some(tgid) => (proc.task_stat(tgid, tid)?, tgid),
            None => (proc.stat(tid)?, proc.tgid(tid)?),
        };
        Ok(Held {
            key: key_of(tgid, tid, &stat),
            stat,
            fd,
            via_process: false,
        })
    }

    /// The held task's identity: process, thread, start time.
    pub fn key(&self) -> TaskKey {
        self.key
    }

    /// The held task's own id (the process's, for a process).
    pub fn id(&self) -> u32 {
        self.key.tid().get()
    }

    /// Its process's id.
    pub fn tgid(&self) -> u32 {
        self.key.pid().get()
    }

    fn checked(
        self,
        proc: &impl TaskSource,
        expected: Option<StartTime>,
    ) -> Result<Held, PlaceError> {
        if self.stat.is_kernel_thread() {
            return Err(PlaceError::KernelThread {
                id: self.id(),
                comm: self.stat.comm.clone(),
            });
        }
        if let Some(expected) = expected {
            if self.key.start() != expected {
                return Err(PlaceError::Reused {
                    id: self.id(),
                    expected: expected.get(),
                    found: self.stat.starttime,
                });
            }
        }
        if !self.still_there(proc) {
            return Err(PlaceError::Gone(self.id()));
        }
        Ok(self)
    }

    /// Whether the id still names the held task: everything read since it was held was
    /// about that task. A poll of the pidfd, plus one `/proc` read for a thread held
    /// through its process.
    pub fn still_there(&self, proc: &impl TaskSource) -> bool {
        match &self.fd {
            Some(fd) if fd.exited() => false,
            Some(_) if self.via_process => proc
                .task_stat(self.tgid(), self.id())
                .is_ok_and(|s| s.starttime == self.stat.starttime),
            Some(_) => true,
            None => proc
                .stat(self.id())
                .is_ok_and(|s| s.starttime == self.stat.starttime),
        }
    }
}

fn key_of(tgid: u32, tid: u32, stat: &Stat) -> TaskKey {
    TaskKey::new(
        ProcessId::new(tgid),
        ThreadId::new(tid),
        StartTime::new(stat.starttime),
    )
}
