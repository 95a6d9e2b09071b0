//! A thread class's task attributes against what the caller could do itself: the kernel's
//! rule for `sched_setattr` without CAP_SYS_NICE, the caller's soft limits, and the boosts
//! cgqos treats as privileges.

use crate::sched::{TaskAttrs, is_realtime};

/// Soft resource limits that bound what an unprivileged task may ask of the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// RLIMIT_NICE: a nice value n may be reached when `20 - n <= nice`.
    pub nice: u64,
    /// RLIMIT_RTPRIO: the highest real-time priority; 0 forbids real-time policies.
    pub rtprio: u64,
}

impl Limits {
    /// No limit at all: what a caller whose limits cannot be read gets.
    pub const NONE: Limits = Limits { nice: 0, rtprio: 0 };

    /// Reads the soft limits from a `/proc/<pid>/limits` text (`unlimited`: `u64::MAX`).
    pub fn parse(text: &str) -> Option<Limits> {
        let soft = |name: &str| -> Option<u64> {
            let rest = text.lines().find_map(|l| l.strip_prefix(name))?;
            match rest.split_whitespace().next()? {
                "unlimited" => Some(u64::MAX),
                v => v.parse().ok(),
            }
        };
        Some(Limits {
            nice: soft("Max nice priority")?,
            rtprio: soft("Max realtime priority")?,
        })
    }

    /// The lower of each limit.
    pub fn min(self, other: Limits) -> Limits {
        Limits {
            nice: self.nice.min(other.nice),
            rtprio: self.rtprio.min(other.rtprio),
        }
    }

    fn nice_allowed(&self, nice: i32) -> bool {
        // The kernel's is_nice_reduction: nice 19..-20 is rlimit style 1..40.
        (20 - i64::from(nice)) as u64 <= self.nice
    }

    fn describe_nice(&self) -> String {
        match self.nice {
            0 => "RLIMIT_NICE 0 allows no lowering".to_string(),
            n if n >= 40 => format!("RLIMIT_NICE {n} allows any nice"),
            n => format!("RLIMIT_NICE {n} allows down to {}", 20 - n as i64),
        }
    }
}

/// The scheduling attributes of a task, as `sched_getattr` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sched {
    pub policy: u32,
    pub priority: u32,
    pub nice: i32,
    pub uclamp_min: u32,
    pub uclamp_max: u32,
    /// The fair slice (`sched_runtime`); 0 where the kernel reports none (before 6.12).
    pub slice_ns: u64,
}

impl Sched {
    pub fn of(a: &crate::sched::SchedAttr) -> Sched {
        Sched {
            policy: a.sched_policy,
            priority: a.sched_priority,
            nice: a.sched_nice,
            uclamp_min: a.sched_util_min,
            uclamp_max: a.sched_util_max,
            slice_ns: a.sched_runtime,
        }
    }

    /// A recorded full set of attributes (`state.attrs` originals); `None` if incomplete.
    pub fn recorded(a: &TaskAttrs) -> Option<Sched> {
        Some(Sched {
            policy: a.policy?,
            priority: a.priority?,
            nice: a.nice?,
            uclamp_min: a.uclamp_min?,
            uclamp_max: a.uclamp_max?,
            slice_ns: a.runtime_ns?,
        })
    }

    /// What the task has after `class` is applied over it, as `sched::apply` computes it.
    pub fn with(&self, class: &TaskAttrs) -> Sched {
        let policy = class.policy.unwrap_or(self.policy);
        Sched {
            policy,
            priority: if is_realtime(policy) {
                class.priority.unwrap_or(self.priority).clamp(1, 99)
            } else {
                0
            },
            nice: class.nice.map_or(self.nice, |n| n.clamp(-20, 19)),
            uclamp_min: class.uclamp_min.map_or(self.uclamp_min, |v| v.min(1024)),
            uclamp_max: class.uclamp_max.map_or(self.uclamp_max, |v| v.min(1024)),
            slice_ns: class.runtime_ns.unwrap_or(self.slice_ns),
        }
    }
}

/// Whether a task that has `task` may be given `new` by an unprivileged owner with `limits`:
/// the kernel's rule for `sched_setattr` without CAP_SYS_NICE (user_check_sched_setscheduler
/// in kernel/sched/syscalls.c), plus the boosts the kernel leaves unchecked for an owner,
/// which cgqos treats as privileges: a higher uclamp.min or uclamp.max (`uclamp`: the kernel
/// has per-task uclamp) and a shorter fair slice. `Err` names the first attribute beyond.
pub fn beyond_task(new: &Sched, task: &Sched, limits: Limits, uclamp: bool) -> Result<(), String> {
    use crate::sched::{SCHED_BATCH, SCHED_IDLE, SCHED_OTHER};
    let fair = |p: u32| p == SCHED_OTHER || p == SCHED_BATCH;
    if fair(new.policy) && new.nice < task.nice && !limits.nice_allowed(new.nice) {
        return Err(format!(
            "nice {} (the thread has {}; {})",
            new.nice,
            task.nice,
            limits.describe_nice()
        ));
    }
    if is_realtime(new.policy) {
        if new.policy != task.policy && limits.rtprio == 0 {
            return Err(format!(
                "policy {} (the thread is {}; RLIMIT_RTPRIO 0 allows no real-time policy)",
                crate::sched::policy_name(new.policy),
                crate::sched::policy_name(task.policy)
            ));
        }
        if new.priority > task.priority && u64::from(new.priority) > limits.rtprio {
            return Err(format!(
                "priority {} (the thread has {}; RLIMIT_RTPRIO {} allows up to {})",
                new.priority, task.priority, limits.rtprio, limits.rtprio
            ));
        }
    }
    if task.policy == SCHED_IDLE && new.policy != SCHED_IDLE && !limits.nice_allowed(task.nice) {
        return Err(format!(
            "policy {} (the thread is idle, which counts as nice 20; leaving it for nice {} needs RLIMIT_NICE {})",
            crate::sched::policy_name(new.policy),
            task.nice,
            20 - i64::from(task.nice)
        ));
    }
    if uclamp {
        for (name, n, t) in [
            ("uclamp-min", new.uclamp_min, task.uclamp_min),
            ("uclamp-max", new.uclamp_max, task.uclamp_max),
        ] {
            if n > t {
                return Err(format!(
                    "{name} {n} (the thread has {t}; raising a utilization clamp is a boost)"
                ));
            }
        }
    }
    if fair(new.policy) && task.slice_ns != 0 && new.slice_ns < task.slice_ns {
        return Err(format!(
            "slice-us {} (the thread has {}; a shorter slice is a latency boost)",
            new.slice_ns / 1000,
            task.slice_ns / 1000
        ));
    }
    Ok(())
}

/// Whether applying class attributes `class` to a task that has `now` (and had `original`
/// before cgqos first changed it) stays within what its unprivileged owner could do itself:
/// checked against the task as it is, and else against the task as it was, so going back
/// to the original values is always allowed. `Err` names the attribute beyond.
pub fn beyond_own(
    class: &TaskAttrs,
    now: &Sched,
    original: Option<&Sched>,
    limits: Limits,
    uclamp: bool,
) -> Result<(), String> {
    beyond_reach(&now.with(class), now, original, limits, uclamp)
}

/// `beyond_own` for attributes `new` computed elsewhere (from what `sched_getattr`
/// reports, which for a real-time task is not the nice the kernel keeps in `now`).
pub fn beyond_reach(
    new: &Sched,
    now: &Sched,
    original: Option<&Sched>,
    limits: Limits,
    uclamp: bool,
) -> Result<(), String> {
    beyond_task(new, now, limits, uclamp).or_else(|why| match original {
        Some(o) if beyond_task(new, o, limits, uclamp).is_ok() => Ok(()),
        _ => Err(why),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::Classes;

    fn task(policy: u32, priority: u32, nice: i32) -> Sched {
        Sched {
            policy,
            priority,
            nice,
            uclamp_min: 0,
            uclamp_max: 1024,
            slice_ns: 3_000_000,
        }
    }

    fn class(f: impl FnOnce(&mut TaskAttrs)) -> TaskAttrs {
        let mut a = TaskAttrs::default();
        f(&mut a);
        a
    }

    #[test]
    fn own_reach_follows_the_kernels_rule_for_nice_and_real_time() {
        use crate::sched::{SCHED_BATCH, SCHED_FIFO, SCHED_IDLE, SCHED_OTHER, SCHED_RR};
        let none = Limits::NONE;
        let normal = task(SCHED_OTHER, 0, 0);
        let nice = |n| class(|a| a.nice = Some(n));
        // Raising nice is free; lowering it needs RLIMIT_NICE (20 - n <= limit).
        assert!(beyond_own(&nice(10), &normal, None, none, false).is_ok());
        let e = beyond_own(&nice(-8), &normal, None, none, false).unwrap_err();
        assert_eq!(
            e,
            "nice -8 (the thread has 0; RLIMIT_NICE 0 allows no lowering)"
        );
        let l25 = Limits {
            nice: 25,
            rtprio: 0,
        };
        assert!(beyond_own(&nice(-5), &normal, None, l25, false).is_ok());
        assert!(
            beyond_own(&nice(-6), &normal, None, l25, false)
                .unwrap_err()
                .contains("RLIMIT_NICE 25 allows down to -5")
        );
        // Back to the original value cgqos recorded, whatever the limit.
        let slowed = task(SCHED_OTHER, 0, 10);
        assert!(beyond_own(&nice(0), &slowed, Some(&normal), none, false).is_ok());
        assert!(beyond_own(&nice(-1), &slowed, Some(&normal), none, false).is_err());
        // Real time: entering needs RLIMIT_RTPRIO > 0, the priority at most the limit.
        let fifo = |p| {
            class(|a| {
                a.policy = Some(SCHED_FIFO);
                a.priority = Some(p)
            })
        };
        assert_eq!(
            beyond_own(&fifo(50), &normal, None, none, false).unwrap_err(),
            "policy fifo (the thread is normal; RLIMIT_RTPRIO 0 allows no real-time policy)"
        );
        let rt10 = Limits {
            nice: 0,
            rtprio: 10,
        };
        assert!(beyond_own(&fifo(10), &normal, None, rt10, false).is_ok());
        assert_eq!(
            beyond_own(&fifo(50), &normal, None, rt10, false).unwrap_err(),
            "priority 50 (the thread has 0; RLIMIT_RTPRIO 10 allows up to 10)"
        );
        // A real-time task may lower its priority, not switch fifo <-> rr without a limit.
        let rt = task(SCHED_FIFO, 50, 0);
        assert!(beyond_own(&fifo(20), &rt, None, none, false).is_ok());
        let rr = class(|a| {
            a.policy = Some(SCHED_RR);
            a.priority = Some(20)
        });
        assert!(beyond_own(&rr, &rt, None, none, false).is_err());
        // Leaving real time for a fair policy at the nice it keeps is free.
        let other = class(|a| a.policy = Some(SCHED_OTHER));
        assert!(beyond_own(&other, &rt, None, none, false).is_ok());
        // sched_getattr reports nice 0 for a real-time task that keeps nice 10: leaving
        // real time then lowers it, as the kernel sees it.
        let reported = task(SCHED_FIFO, 50, 0);
        let kept = task(SCHED_FIFO, 50, 10);
        assert_eq!(
            beyond_reach(&reported.with(&other), &kept, None, none, false).unwrap_err(),
            "nice 0 (the thread has 10; RLIMIT_NICE 0 allows no lowering)"
        );
        // Batch and idle are slower: free. Leaving idle needs RLIMIT_NICE for its nice.
        let batch = class(|a| a.policy = Some(SCHED_BATCH));
        let idle = class(|a| a.policy = Some(SCHED_IDLE));
        assert!(beyond_own(&batch, &normal, None, none, false).is_ok());
        assert!(beyond_own(&idle, &normal, None, none, false).is_ok());
        let idling = task(SCHED_IDLE, 0, 0);
        assert!(
            beyond_own(&other, &idling, None, none, false)
                .unwrap_err()
                .contains("the thread is idle")
        );
        assert!(
            beyond_own(
                &other,
                &idling,
                None,
                Limits {
                    nice: 20,
                    rtprio: 0
                },
                false
            )
            .is_ok()
        );
        assert!(beyond_own(&other, &idling, Some(&normal), none, false).is_ok());
    }

    #[test]
    fn uclamp_and_slice_boosts_need_a_grant() {
        let normal = task(crate::sched::SCHED_OTHER, 0, 0);
        let none = Limits::NONE;
        let boost = class(|a| a.uclamp_min = Some(614));
        assert_eq!(
            beyond_own(&boost, &normal, None, none, true).unwrap_err(),
            "uclamp-min 614 (the thread has 0; raising a utilization clamp is a boost)"
        );
        // Without per-task uclamp the clamps are not applied, so they are no boost.
        assert!(beyond_own(&boost, &normal, None, none, false).is_ok());
        let capped = Sched {
            uclamp_max: 512,
            ..normal
        };
        let uncap = class(|a| a.uclamp_max = Some(1024));
        assert!(beyond_own(&uncap, &capped, None, none, true).is_err());
        assert!(beyond_own(&uncap, &capped, Some(&normal), none, true).is_ok());
        let cap = class(|a| a.uclamp_max = Some(256));
        assert!(beyond_own(&cap, &normal, None, none, true).is_ok());
        let short = class(|a| a.runtime_ns = Some(100_000));
        assert_eq!(
            beyond_own(&short, &normal, None, none, true).unwrap_err(),
            "slice-us 100 (the thread has 3000; a shorter slice is a latency boost)"
        );
        let long = class(|a| a.runtime_ns = Some(6_000_000));
        assert!(beyond_own(&long, &normal, None, none, true).is_ok());
        // A kernel that reports no slice ignores it.
        let old = Sched {
            slice_ns: 0,
            ..normal
        };
        assert!(beyond_own(&short, &old, None, none, true).is_ok());
        // The shipped slow-down classes are always within reach.
        for name in ["background", "utility", "eco", "balanced"] {
            let c = Classes::default();
            let attrs = c.get(name).unwrap().attrs;
            assert!(
                beyond_own(&attrs, &normal, None, none, true).is_ok(),
                "{name}"
            );
        }
    }

    #[test]
    fn limits_come_from_proc_limits() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max nice priority         25                   30                   \n\
                    Max realtime priority     unlimited            unlimited            \n";
        assert_eq!(
            Limits::parse(text),
            Some(Limits {
                nice: 25,
                rtprio: u64::MAX
            })
        );
        assert_eq!(Limits::parse("nothing"), None);
    }
}
