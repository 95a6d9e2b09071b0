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

pub const SCHED_OTHER: u32 = 0;
pub const SCHED_FIFO: u32 = 1;
pub const SCHED_RR: u32 = 2;
pub const SCHED_BATCH: u32 = 3;
pub const SCHED_IDLE: u32 = 5;
pub const SCHED_FLAG_RESET_ON_FORK: u64 = 0x01;
pub const SCHED_FLAG_UTIL_CLAMP_MAX: u64 = 0x40;

/// Task attributes a thread class sets; `None` keeps the task's own value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TaskAttrs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<u32>,
    /// Real-time priority (1-99), only with SCHED_FIFO / SCHED_RR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nice: Option<i32>,
    /// 0-1024.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uclamp_min: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uclamp_max: Option<u32>,
    /// EEVDF slice request in nanoseconds (`sched_runtime` of a fair task).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_ns: Option<u64>,
}

impl TaskAttrs {
    pub fn is_empty(&self) -> bool {
        *self == TaskAttrs::default()
    }

    /// The attributes a task has now, as a full set (for undo).
    pub fn of(a: &SchedAttr) -> TaskAttrs {
        TaskAttrs {
            policy: Some(a.sched_policy),
            priority: Some(a.sched_priority),
            nice: Some(a.sched_nice),
            uclamp_min: Some(a.sched_util_min),
            uclamp_max: Some(a.sched_util_max),
            runtime_ns: Some(a.sched_runtime),
        }
    }
}

pub fn is_realtime(policy: u32) -> bool {
    policy == SCHED_FIFO || policy == SCHED_RR
}

/// Applies `attrs` to one thread: reads its attributes first and keeps whatever `attrs`
/// leaves unset (sched_setattr has no partial update for policy, nice and slice). Without
/// uclamp support the clamp fields are left out. Returns the attributes it had before.
pub fn apply(tid: u32, attrs: &TaskAttrs, uclamp: bool) -> io::Result<SchedAttr> {
    let before = getattr(tid)?;
    let mut a = before;
    a.size = std::mem::size_of::<SchedAttr>() as u32;
    // Only RESET_ON_FORK carries over; every other flag describes this call.
    a.sched_flags = before.sched_flags & SCHED_FLAG_RESET_ON_FORK;
    if let Some(p) = attrs.policy {
        a.sched_policy = p;
    }
    if is_realtime(a.sched_policy) {
        a.sched_priority = attrs.priority.unwrap_or(a.sched_priority).clamp(1, 99);
    } else {
        // The kernel refuses a priority for SCHED_OTHER/BATCH/IDLE (EINVAL).
        a.sched_priority = 0;
    }
    if let Some(n) = attrs.nice {
        a.sched_nice = n.clamp(-20, 19);
    }
    if let Some(r) = attrs.runtime_ns {
        a.sched_runtime = r;
    }
    if uclamp {
        if let Some(v) = attrs.uclamp_min {
            a.sched_util_min = v.min(1024);
            a.sched_flags |= SCHED_FLAG_UTIL_CLAMP_MIN;
        }
        if let Some(v) = attrs.uclamp_max {
            a.sched_util_max = v.min(1024);
            a.sched_flags |= SCHED_FLAG_UTIL_CLAMP_MAX;
        }
    }
    setattr(tid, &a)?;
    Ok(before)
}
