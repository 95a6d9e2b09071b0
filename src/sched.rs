//! Scheduler attribute syscalls (`sched_getattr` / `sched_setattr`), which libc does not wrap
//! and whose uclamp fields its `sched_attr` lacks.

use std::io;

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

pub const SCHED_FLAG_KEEP_POLICY: u64 = 0x08;
pub const SCHED_FLAG_KEEP_PARAMS: u64 = 0x10;
pub const SCHED_FLAG_UTIL_CLAMP_MIN: u64 = 0x20;

/// Reads a task's attributes (`tid` 0: the calling thread).
pub fn getattr(tid: u32) -> io::Result<SchedAttr> {
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

/// Writes a task's attributes.
pub fn setattr(tid: u32, attr: &SchedAttr) -> io::Result<()> {
    // SAFETY: `attr` points to a valid sched_attr whose `size` field the caller set; the
    // kernel only reads it.
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

/// Whether the kernel has uclamp (CONFIG_UCLAMP_TASK): re-applies the calling thread's own
/// uclamp.min, which changes nothing where it works and fails with EOPNOTSUPP (EINVAL
/// before 5.3) where it does not.
pub fn uclamp_supported() -> bool {
    let Ok(mut attr) = getattr(0) else {
        return false;
    };
    if (attr.size as usize) < std::mem::size_of::<SchedAttr>() {
        return false;
    }
    attr.size = std::mem::size_of::<SchedAttr>() as u32;
    attr.sched_flags = SCHED_FLAG_KEEP_POLICY | SCHED_FLAG_KEEP_PARAMS | SCHED_FLAG_UTIL_CLAMP_MIN;
    setattr(0, &attr).is_ok()
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
        let a = getattr(0).unwrap();
        assert!(a.size >= 48, "{a:?}");
    }
}
