//! Every `unsafe` of cgqos, behind safe functions: what neither the standard library nor
//! `rustix` offers. The scheduler attribute syscalls (no crate wraps `sched_attr` with its
//! uclamp fields), tokio's `AsyncFd` registration, `localtime_r` (the local time zone is
//! libc's), `sysconf(_SC_NPROCESSORS_ONLN)`, a flag-setting signal handler, and `exec`'s
//! `clone3(CLONE_INTO_CGROUP)` with the signal mask and wait around it, a socket's classic
//! BPF filter (`SO_ATTACH_FILTER`), and an eBPF socket filter with the hash map it looks up
//! (`bpf(2)`, `SO_ATTACH_BPF`). Everything else goes through `rustix`.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// `struct sched_attr` up to `SCHED_ATTR_SIZE_VER1` (56 bytes, with the uclamp fields).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SchedAttr {
    pub size: u32,
    pub sched_policy: u32,
    pub sched_flags: u64,
    pub sched_nice: i32,
    pub sched_priority: u32,
    pub sched_runtime: u64,
    pub sched_deadline: u64,
    pub sched_period: u64,
    pub sched_util_min: u32,
    pub sched_util_max: u32,
}

/// One classic BPF instruction (`struct sock_filter`).
pub type SockFilter = libc::sock_filter;

/// `SO_ATTACH_FILTER`: the kernel runs `program` on each packet before queueing it to the
/// socket and drops those it returns 0 for (the socket's reader is not woken for them).
pub fn attach_socket_filter(fd: BorrowedFd<'_>, program: &[SockFilter]) -> io::Result<()> {
    let len =
        u16::try_from(program.len()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let prog = libc::sock_fprog {
        len,
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: SO_ATTACH_FILTER takes a sock_fprog; the kernel copies (and checks) the
    // program, reading, never writing, through `filter`, which points at `len` live
    // instructions for the call's duration.
    unsafe { set_socket_option(fd, libc::SO_ATTACH_FILTER, &prog) }
}

/// `setsockopt(fd, SOL_SOCKET, opt, value)`.
///
/// # Safety
/// `T` must be the type the kernel expects for `opt`, and every pointer inside `value` must
/// be valid for what the kernel does through it during the call.
unsafe fn set_socket_option<T>(fd: BorrowedFd<'_>, opt: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` is a live, initialised `T` for the call's duration and its size is
    // passed; the kernel only reads it, and the caller vouches for what it points to.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            std::ptr::from_ref(value).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// One eBPF instruction (`struct bpf_insn`): opcode, destination and source registers (low
/// and high nibble), offset, immediate.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BpfInsn {
    pub code: u8,
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

// bpf(2) commands and the few constants the socket filter needs (linux/bpf.h).
const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_MAP_TYPE_HASH: u32 = 1;
const BPF_PROG_TYPE_SOCKET_FILTER: u32 = 1;
/// Elements are allocated when inserted: an empty set costs next to nothing.
const BPF_F_NO_PREALLOC: u32 = 1;
/// `SO_ATTACH_BPF`: 50 where the architecture uses asm-generic/socket.h; MIPS and SPARC
/// number their socket options their own way (not looked up: no set of creators there).
const SO_ATTACH_BPF: Option<libc::c_int> = if cfg!(any(
    target_arch = "mips",
    target_arch = "mips64",
    target_arch = "mips32r6",
    target_arch = "mips64r6",
    target_arch = "sparc",
    target_arch = "sparc64"
)) {
    None
} else {
    Some(50)
};

/// `union bpf_attr` for BPF_MAP_CREATE, up to `map_flags`.
#[repr(C)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
}

/// `union bpf_attr` for the element commands: map fd, then pointers to the key and the
/// value (or the next key), and the update flags.
#[repr(C)]
struct MapElemAttr {
    map_fd: u32,
    pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// `union bpf_attr` for BPF_PROG_LOAD, up to `prog_flags`.
#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
}

/// `bpf(2)` with `attr`, a repr(C) prefix of `union bpf_attr` (the kernel zero-fills the
/// rest).
fn bpf<A>(cmd: libc::c_long, attr: &mut A) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, exclusively borrowed repr(C) struct of the size passed; the
    // kernel reads it (and writes nothing back for these commands), and reads or writes only
    // through the pointers the caller put in it, which the caller keeps alive for the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr),
            std::mem::size_of::<A>() as libc::c_uint,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn owned_fd(fd: libc::c_long) -> io::Result<OwnedFd> {
    use std::os::fd::FromRawFd;
    let fd = libc::c_int::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: the kernel just returned this new descriptor to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A set of `u32` in the kernel: an eBPF hash map (4-byte keys, 1-byte values) that an eBPF
/// program looks up, changed from here one key at a time.
#[derive(Debug)]
pub struct BpfSet(OwnedFd);

impl BpfSet {
    /// An empty set of at most `max` keys (root, or CAP_BPF).
    pub fn new(max: u32) -> io::Result<BpfSet> {
        let mut attr = MapCreateAttr {
            map_type: BPF_MAP_TYPE_HASH,
            key_size: 4,
            value_size: 1,
            max_entries: max,
            map_flags: BPF_F_NO_PREALLOC,
        };
        bpf(BPF_MAP_CREATE, &mut attr)
            .and_then(owned_fd)
            .map(BpfSet)
    }

    /// The map's descriptor, for a program that looks it up.
    pub fn fd(&self) -> BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.0.as_fd()
    }

    fn elem(&self, key: &u32, value: u64, flags: u64) -> MapElemAttr {
        MapElemAttr {
            map_fd: self.0.as_raw_fd() as u32,
            pad: 0,
            key: std::ptr::from_ref(key) as u64,
            value,
            flags,
        }
    }

    /// Adds `key` (E2BIG when the set is full).
    pub fn insert(&self, key: u32) -> io::Result<()> {
        let one = 1u8;
        // BPF_ANY: create or overwrite.
        let mut attr = self.elem(&key, std::ptr::from_ref(&one) as u64, 0);
        bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(drop)
    }

    /// Removes `key`; a key that is not there is not an error.
    pub fn remove(&self, key: u32) -> io::Result<()> {
        let mut attr = self.elem(&key, 0, 0);
        match bpf(BPF_MAP_DELETE_ELEM, &mut attr) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            r => r.map(drop),
        }
    }

    /// Removes every key.
    pub fn clear(&self) -> io::Result<()> {
        loop {
            let mut next = 0u32;
            // No key (a null pointer): the first key. Deleting it makes the next call
            // return the new first, so the loop ends when the map is empty (ENOENT).
            let mut attr = MapElemAttr {
                map_fd: self.0.as_raw_fd() as u32,
                pad: 0,
                key: 0,
                value: std::ptr::from_mut(&mut next) as u64,
                flags: 0,
            };
            match bpf(BPF_MAP_GET_NEXT_KEY, &mut attr) {
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
                Err(e) => return Err(e),
                Ok(_) => self.remove(next)?,
            }
        }
    }
}

/// Loads `program` as an eBPF socket filter; the error of a program the verifier refuses
/// carries the end of its log.
pub fn load_socket_filter(program: &[BpfInsn]) -> io::Result<OwnedFd> {
    // cgqos's own licence: the program calls no GPL-only helper.
    let license = c"BSD-3-Clause";
    let mut log = vec![0u8; 16 * 1024];
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_SOCKET_FILTER,
        insn_cnt: u32::try_from(program.len())
            .map_err(|_| io::Error::from_raw_os_error(libc::E2BIG))?,
        insns: program.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 0,
        log_size: 0,
        log_buf: 0,
        kern_version: 0,
        prog_flags: 0,
    };
    match bpf(BPF_PROG_LOAD, &mut attr) {
        Ok(fd) => owned_fd(fd),
        Err(e)
            if e.raw_os_error() == Some(libc::EACCES) || e.raw_os_error() == Some(libc::EINVAL) =>
        {
            // Load again with the verifier's log, to say why.
            attr.log_level = 1;
            attr.log_size = log.len() as u32;
            attr.log_buf = log.as_mut_ptr() as u64;
            let _ = bpf(BPF_PROG_LOAD, &mut attr);
            let text = String::from_utf8_lossy(&log);
            let text = text.trim_end_matches('\0').trim_end();
            let tail: String = text.lines().rev().take(3).collect::<Vec<_>>().join(" / ");
            Err(io::Error::new(e.kind(), format!("{e}: {tail}")))
        }
        Err(e) => Err(e),
    }
}

/// `SO_ATTACH_BPF`: the kernel runs the loaded socket filter `program` on each packet before
/// queueing it to the socket (replacing any filter attached before).
pub fn attach_socket_bpf(fd: BorrowedFd<'_>, program: BorrowedFd<'_>) -> io::Result<()> {
    let Some(opt) = SO_ATTACH_BPF else {
        return Err(io::Error::from_raw_os_error(libc::ENOPROTOOPT));
    };
    let prog: libc::c_int = program.as_raw_fd();
    // SAFETY: SO_ATTACH_BPF takes a plain int, the program's descriptor: no pointer in it.
    unsafe { set_socket_option(fd, opt, &prog) }
}

/// `sched_getattr(2)`: a task's attributes (`tid` 0: the calling thread).
pub fn sched_getattr(tid: u32) -> io::Result<SchedAttr> {
    let mut attr = SchedAttr::default();
    let size = std::mem::size_of::<SchedAttr>() as u32;
    // SAFETY: `attr` is a live, writable repr(C) sched_attr of `size` bytes; the kernel
    // writes at most `size` bytes into it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_sched_getattr,
            tid as libc::pid_t,
            &mut attr as *mut SchedAttr,
            size,
            0u32,
        )
    };
    if rc == 0 {
        Ok(attr)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `sched_setattr(2)`: writes a task's attributes; the kernel reads `attr.size` bytes.
pub fn sched_setattr(tid: u32, attr: &SchedAttr) -> io::Result<()> {
    // The kernel reads as many bytes as `size` says: never more than we own.
    if attr.size as usize > std::mem::size_of::<SchedAttr>() {
        return Err(io::Error::from_raw_os_error(libc::E2BIG));
    }
    // SAFETY: `attr` points to a live sched_attr of at least `attr.size` bytes (checked
    // above); the kernel only reads it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_sched_setattr,
            tid as libc::pid_t,
            attr as *const SchedAttr,
            0u32,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A descriptor owner whose `as_raw_fd` names the same open descriptor for its whole life,
/// which is what `AsyncFd` requires. Sealed: only the types below.
pub trait StableFd: AsRawFd + sealed::Sealed {}

mod sealed {
    pub trait Sealed {}
    impl Sealed for std::os::fd::OwnedFd {}
    impl Sealed for inotify::Inotify {}
}

impl StableFd for OwnedFd {}
// An `Inotify` owns its descriptor (shared with its `Watches` handles) until dropped.
impl StableFd for inotify::Inotify {}

/// Registers `inner` with tokio's reactor (inside a runtime).
pub fn async_fd<T: StableFd>(inner: T, interest: Interest) -> io::Result<AsyncFd<T>> {
    // SAFETY: a `StableFd` owns its descriptor, which stays open and unchanged until it is
    // dropped; the `AsyncFd` owns `inner`, so the descriptor outlives the registration.
    unsafe { AsyncFd::register_with_interest(inner, interest) }.map_err(io::Error::from)
}

/// A broken-down local time (`localtime_r`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalTime {
    pub year: i32,
    /// 1-12.
    pub month: i32,
    pub day: i32,
    pub hour: i32,
    pub minute: i32,
    pub second: i32,
    /// Seconds east of UTC.
    pub utc_offset: i64,
}

/// Seconds since the epoch in the local time zone; `None` when libc cannot say.
pub fn localtime(secs: u64) -> Option<LocalTime> {
    let t = secs as libc::time_t;
    // SAFETY: all-zero is a valid `tm` (integers and a null zone pointer).
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: `t` and `tm` are live and ours; localtime_r writes only into `tm`.
    if unsafe { libc::localtime_r(&t, &mut tm) }.is_null() {
        return None;
    }
    Some(LocalTime {
        year: tm.tm_year + 1900,
        month: tm.tm_mon + 1,
        day: tm.tm_mday,
        hour: tm.tm_hour,
        minute: tm.tm_min,
        second: tm.tm_sec,
        utc_offset: tm.tm_gmtoff as i64,
    })
}

/// CPUs online now (`sysconf(_SC_NPROCESSORS_ONLN)`); `None` when it cannot say.
pub fn online_cpus() -> Option<usize> {
    // SAFETY: sysconf takes a constant and touches no memory of ours.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    (n > 0).then_some(n as usize)
}

/// One flag per signal number, set by [`on_signal`].
static CAUGHT: [AtomicBool; 65] = [const { AtomicBool::new(false) }; 65];

extern "C" fn on_signal(sig: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    if let Some(flag) = usize::try_from(sig).ok().and_then(|s| CAUGHT.get(s)) {
        flag.store(true, Ordering::SeqCst);
    }
}

/// From now on, `sig` only sets a flag ([`signal_caught`], [`take_signal`]). No
/// `SA_RESTART`: a blocking call returns EINTR, so a loop sees the flag at once.
pub fn catch_signal(sig: libc::c_int) -> io::Result<()> {
    if usize::try_from(sig).map_or(true, |s| s == 0 || s >= CAUGHT.len()) {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: all-zero is a valid `sigaction` (no flags, empty mask) before we fill it.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
    // SAFETY: `sa` is ours; the handler only stores to a static atomic, which is
    // async-signal-safe; the old action is not asked for (null).
    let rc = unsafe {
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(sig, &sa, std::ptr::null_mut())
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether `sig` arrived since it was caught or last taken.
pub fn signal_caught(sig: libc::c_int) -> bool {
    usize::try_from(sig)
        .ok()
        .and_then(|s| CAUGHT.get(s))
        .is_some_and(|f| f.load(Ordering::SeqCst))
}

/// Like [`signal_caught`], and clears the flag.
pub fn take_signal(sig: libc::c_int) -> bool {
    usize::try_from(sig)
        .ok()
        .and_then(|s| CAUGHT.get(s))
        .is_some_and(|f| f.swap(false, Ordering::SeqCst))
}

/// A program, its arguments and its environment as `execve(2)` takes them: built before a
/// clone, so the child makes system calls only (no allocation in a forked copy).
pub struct ExecImage {
    path: CString,
    // Own the strings the pointer arrays point into.
    _strings: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
}

impl ExecImage {
    /// `path` run with `args` (argv[0] first) and `env` (`NAME=value` each). A NUL byte
    /// anywhere is InvalidInput.
    pub fn new(path: &Path, args: &[OsString], env: &[OsString]) -> io::Result<ExecImage> {
        let c = |s: &OsStr| {
            CString::new(s.as_bytes()).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{s:?} holds a NUL byte"),
                )
            })
        };
        let path = c(path.as_os_str())?;
        let args = args.iter().map(|a| c(a)).collect::<io::Result<Vec<_>>>()?;
        let env = env.iter().map(|e| c(e)).collect::<io::Result<Vec<_>>>()?;
        let list = |v: &[CString]| {
            let mut p: Vec<*const libc::c_char> = v.iter().map(|s| s.as_ptr()).collect();
            p.push(std::ptr::null());
            p
        };
        let (argv, envp) = (list(&args), list(&env));
        let mut strings = args;
        strings.extend(env);
        Ok(ExecImage {
            path,
            _strings: strings,
            argv,
            envp,
        })
    }
}

/// A set of signals, to block and wait for.
#[derive(Clone, Copy)]
pub struct SignalSet(libc::sigset_t);

impl SignalSet {
    pub fn of(signals: &[libc::c_int]) -> SignalSet {
        // SAFETY: all-zero is a valid sigset_t, and sigemptyset/sigaddset write only into
        // it (an out-of-range number is refused with EINVAL, leaving the set as it was).
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for &s in signals {
                libc::sigaddset(&mut set, s);
            }
            SignalSet(set)
        }
    }
}

/// Sets the calling thread's signal mask (`how`: SIG_BLOCK or SIG_SETMASK); the mask before.
fn sigmask(how: libc::c_int, set: &SignalSet) -> io::Result<SignalSet> {
    // SAFETY: all-zero is a valid sigset_t; both sets are live and ours.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is read, `old` written; nothing else is touched.
    match unsafe { libc::pthread_sigmask(how, &set.0, &mut old) } {
        0 => Ok(SignalSet(old)),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

/// Blocks `set` on the calling thread (they stay pending until [`wait_signal`]); returns
/// the mask before, for [`restore_signals`].
pub fn block_signals(set: &SignalSet) -> io::Result<SignalSet> {
    sigmask(libc::SIG_BLOCK, set)
}

/// Puts back a mask [`block_signals`] returned.
pub fn restore_signals(mask: &SignalSet) -> io::Result<()> {
    sigmask(libc::SIG_SETMASK, mask).map(drop)
}

/// Waits for a signal of `set` (blocked with [`block_signals`]): its number, and whether
/// the kernel sent it (`SI_KERNEL`: a terminal's ^C or ^\ to its foreground group) rather
/// than a process.
pub fn wait_signal(set: &SignalSet) -> io::Result<(libc::c_int, bool)> {
    loop {
        // SAFETY: all-zero is a valid siginfo_t; sigwaitinfo writes only into it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` and `info` are live and ours.
        let sig = unsafe { libc::sigwaitinfo(&set.0, &mut info) };
        if sig > 0 {
            return Ok((sig, info.si_code == libc::SI_KERNEL));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Linux 5.7+ (libc's constant is an overflowing `c_int`).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `struct clone_args` up to `CLONE_ARGS_SIZE_VER2` (88 bytes, with `cgroup`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// What the child of [`spawn_into_cgroup`] is given.
pub struct Spawn<'a> {
    /// The cgroup directory the child is born in (O_PATH is enough).
    pub cgroup: BorrowedFd<'a>,
    pub image: &'a ExecImage,
    /// The child's signal mask (the parent's before it blocked what it forwards).
    pub mask: &'a SignalSet,
    /// The child's end of a socket pair (close-on-exec): the child waits for one byte on
    /// it before `execve`, and writes `execve`'s errno (4 bytes, native order) to it if
    /// that fails.
    pub child_end: BorrowedFd<'a>,
    /// The parent's end, closed in the child, so the child sees EOF (and exits 127
    /// without running anything) if the parent goes away before saying go.
    pub parent_end: BorrowedFd<'a>,
}

/// `clone3(CLONE_INTO_CGROUP)`: a child born in `spawn.cgroup` (no migration afterwards)
/// that waits for the parent's go, then `execve`s the image with SIGPIPE at its default.
/// Returns the child's pid; ENOSYS, E2BIG or EINVAL mean the kernel lacks clone3 or
/// `CLONE_INTO_CGROUP` (before 5.7), or refused the group.
pub fn spawn_into_cgroup(spawn: &Spawn<'_>) -> io::Result<u32> {
    let args = CloneArgs {
        flags: CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: spawn.cgroup.as_raw_fd() as u64,
        ..CloneArgs::default()
    };
    // SAFETY: `args` is a live clone_args of the size passed. Without CLONE_VM the child
    // runs on a copy of this address space (like fork), with our stack; it only makes
    // async-signal-safe calls on memory prepared before the clone, then execs or exits.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match rc {
        0 => child(spawn),
        pid if pid > 0 => Ok(pid as u32),
        _ => Err(io::Error::last_os_error()),
    }
}

/// The child of [`spawn_into_cgroup`]: never returns.
fn child(spawn: &Spawn<'_>) -> ! {
    let (child_end, image) = (spawn.child_end.as_raw_fd(), spawn.image);
    // SAFETY: close, signal, pthread_sigmask, read, execve, write and _exit are
    // async-signal-safe and touch only our descriptors and memory built before the clone
    // (the image's NUL-terminated strings and arrays).
    unsafe {
        libc::close(spawn.parent_end.as_raw_fd());
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::pthread_sigmask(libc::SIG_SETMASK, &spawn.mask.0, std::ptr::null_mut());
        let mut go = 0u8;
        if libc::read(child_end, (&mut go as *mut u8).cast(), 1) == 1 {
            libc::execve(
                image.path.as_ptr(),
                image.argv.as_ptr(),
                image.envp.as_ptr(),
            );
            let errno = *libc::__errno_location();
            libc::write(child_end, (&errno as *const i32).cast(), 4);
        }
        libc::_exit(127)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn sched_attr_has_the_ver1_layout() {
        assert_eq!(std::mem::size_of::<SchedAttr>(), 56);
    }

    #[test]
    fn getattr_of_self_reports_a_policy() {
        let a = sched_getattr(0).unwrap();
        assert!(a.size >= 48, "{a:?}");
    }

    #[test]
    fn setattr_refuses_a_size_beyond_the_struct() {
        let mut a = sched_getattr(0).unwrap();
        a.size = 4096;
        assert_eq!(
            sched_setattr(0, &a).unwrap_err().raw_os_error(),
            Some(libc::E2BIG)
        );
    }

    #[test]
    fn the_epoch_is_a_local_time_in_1969_or_1970() {
        let t = localtime(0).unwrap();
        assert!(t.year == 1970 || (t.year == 1969 && t.month == 12), "{t:?}");
        assert!(t.utc_offset.abs() <= 14 * 3600);
    }

    #[test]
    fn at_least_one_cpu_is_online() {
        assert!(online_cpus().unwrap() >= 1);
    }

    #[test]
    fn a_caught_signal_sets_its_flag_only() {
        // SIGUSR2: nothing else in the test binary uses it.
        catch_signal(libc::SIGUSR2).unwrap();
        assert!(!signal_caught(libc::SIGUSR2));
        rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::USR2)
            .unwrap();
        // A process-directed signal may run its handler on another thread, a moment later:
        // a generous liveness bound, not a timing assertion.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !signal_caught(libc::SIGUSR2) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(signal_caught(libc::SIGUSR2));
        assert!(!signal_caught(libc::SIGUSR1));
        assert!(take_signal(libc::SIGUSR2));
        assert!(!take_signal(libc::SIGUSR2));
        assert!(catch_signal(0).is_err() && catch_signal(65).is_err());
    }

    #[test]
    fn an_exec_image_refuses_a_nul_byte() {
        let ok = ExecImage::new(Path::new("/bin/true"), &["true".into()], &["A=b".into()]);
        assert_eq!(ok.unwrap().argv.len(), 2, "argv ends with a null pointer");
        let bad = ExecImage::new(Path::new("/bin/true"), &["tr\0ue".into()], &[]);
        assert_eq!(bad.err().unwrap().kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn clone3_into_a_directory_that_is_no_cgroup_starts_nothing() {
        let dir = std::fs::File::open("/").unwrap();
        let image = ExecImage::new(Path::new("/bin/true"), &["true".into()], &[]).unwrap();
        let (parent, child) = std::os::unix::net::UnixStream::pair().unwrap();
        let mask = SignalSet::of(&[]);
        let r = spawn_into_cgroup(&Spawn {
            cgroup: dir.as_fd(),
            image: &image,
            mask: &mask,
            child_end: child.as_fd(),
            parent_end: parent.as_fd(),
        });
        // EBADF where the kernel has CLONE_INTO_CGROUP, E2BIG or ENOSYS where it does not.
        let e = r.unwrap_err().raw_os_error();
        assert!(
            matches!(e, Some(libc::EBADF | libc::E2BIG | libc::ENOSYS)),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn an_owned_fd_registers_with_tokio() {
        let (r, w) = std::os::unix::net::UnixStream::pair().unwrap();
        r.set_nonblocking(true).unwrap();
        let afd = async_fd(OwnedFd::from(r), Interest::READABLE).unwrap();
        use std::io::Write;
        (&w).write_all(b"x").unwrap();
        afd.readable().await.unwrap().retain_ready();
    }
}
