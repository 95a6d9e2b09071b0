//! Scheduler attributes of tasks: what the kernel supports (probed once), and applying a
//! class's attributes. The syscalls themselves are in [`crate::sys`].

use std::io;
use std::sync::OnceLock;

pub use crate::sys::SchedAttr;

pub const SCHED_FLAG_KEEP_POLICY: u64 = 0x08;
pub const SCHED_FLAG_KEEP_PARAMS: u64 = 0x10;
pub const SCHED_FLAG_UTIL_CLAMP_MIN: u64 = 0x20;

/// Reads a task's attributes (`tid` 0: the calling thread).
pub fn getattr(tid: u32) -> io::Result<SchedAttr> {
    crate::sys::sched_getattr(tid)
}

/// Writes a task's attributes.
pub fn setattr(tid: u32, attr: &SchedAttr) -> io::Result<()> {
    crate::sys::sched_setattr(tid, attr)
}

/// What the running kernel's scheduler offers cgqos, probed once per process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Support {
    /// Per-task utilization clamps (CONFIG_UCLAMP_TASK).
    pub uclamp: bool,
}

impl Support {
    /// The kernel's support, probed on first use and remembered: it does not change while
    /// the process runs.
    pub fn get() -> Support {
        static SUPPORT: OnceLock<Support> = OnceLock::new();
        *SUPPORT.get_or_init(|| Support {
            uclamp: probe_uclamp(),
        })
    }
}

/// Re-applies the calling thread's own uclamp.min, which changes nothing where it works and
/// fails with EOPNOTSUPP (EINVAL before 5.3) where it does not.
fn probe_uclamp() -> bool {
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
    fn support_is_probed_once_and_agrees_with_the_probe() {
        assert_eq!(Support::get(), Support::get());
        assert_eq!(Support::get().uclamp, probe_uclamp());
    }
}

pub const SCHED_OTHER: u32 = 0;
pub const SCHED_FIFO: u32 = 1;
pub const SCHED_RR: u32 = 2;
pub const SCHED_BATCH: u32 = 3;
pub const SCHED_IDLE: u32 = 5;
/// SCHED_DEADLINE: never set by cgqos, only seen (and left alone).
pub const SCHED_DEADLINE: u32 = 6;

/// The policies a class may set, by the names configuration files use; the first name of
/// each policy is the one cgqos prints.
pub const POLICY_NAMES: [(&str, u32); 6] = [
    ("normal", SCHED_OTHER),
    ("other", SCHED_OTHER),
    ("batch", SCHED_BATCH),
    ("idle", SCHED_IDLE),
    ("fifo", SCHED_FIFO),
    ("rr", SCHED_RR),
];

/// The name cgqos prints for a policy (`policy N` for one it does not know).
pub fn policy_name(policy: u32) -> std::borrow::Cow<'static, str> {
    match POLICY_NAMES.iter().find(|(_, p)| *p == policy) {
        Some((name, _)) => (*name).into(),
        None if policy == SCHED_DEADLINE => "deadline".into(),
        None => format!("policy {policy}").into(),
    }
}
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

    /// These attributes with a real-time policy replaced by SCHED_OTHER (its priority
    /// dropped; nice, uclamp and the rest kept).
    pub fn without_real_time(mut self) -> TaskAttrs {
        if self.policy.is_some_and(is_realtime) {
            self.policy = Some(SCHED_OTHER);
            self.priority = None;
        }
        self
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
/// uclamp support ([`Support`]) the clamp fields are left out. Returns the attributes it had
/// before.
pub fn apply(tid: u32, attrs: &TaskAttrs) -> io::Result<SchedAttr> {
    apply_over(tid, getattr(tid)?, attrs)
}

/// `apply` over attributes the caller has just read (`sched_getattr` of `tid`): one
/// system call, not two.
pub fn apply_over(tid: u32, before: SchedAttr, attrs: &TaskAttrs) -> io::Result<SchedAttr> {
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
    if Support::get().uclamp {
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
