//! Every `unsafe` of cgqos, behind safe functions: what neither the standard library nor
//! `rustix` offers. The scheduler attribute syscalls (no crate wraps `sched_attr` with its
//! uclamp fields), tokio's `AsyncFd` registration, `localtime_r` (the local time zone is
//! libc's), `sysconf(_SC_NPROCESSORS_ONLN)` and a flag-setting signal handler. Everything
//! else goes through `rustix`.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
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

#[cfg(test)]
mod tests {
    use super::*;

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
