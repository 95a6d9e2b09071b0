//! Moves on request: every target held by a pidfd while its owner and the policy are
//! checked, and a class's task attributes kept within what the caller could do itself.

use std::collections::HashMap;

use serde_json::Value;

use super::{Engine, value};
use crate::daemon::policy::{self, Caller};
use crate::error::{CliError, CliResult, Kind};
use crate::model::TaskRef;
use crate::ops::{self, Dest, Moved};
use crate::place::Held;
use crate::procfs::{ProcError, Procfs, TaskKey};

/// A check of a held target beyond its owner (a thread class's attributes, say).
pub(super) type ExtraCheck<'a> = dyn Fn(&TaskRef, &Held) -> CliResult<()> + 'a;

impl Engine {
    /// Holds each target by a pidfd, checks its owner (and `extra`, if any) while held, then
    /// moves the ones allowed, still held; refusals are per target.
    pub(super) fn move_checked(
        &mut self,
        caller: &Caller,
        dest: &Dest,
        targets: &[TaskRef],
        extra: Option<&ExtraCheck<'_>>,
    ) -> Vec<Moved> {
        let mut allowed = Vec::new();
        let mut refused = Vec::new();
        for t in targets {
            let checked = self.check_target(caller, dest, t).and_then(|held| {
                let Some(extra) = extra else {
                    // `check_target` polled the hold after its last read.
                    return Ok(held);
                };
                extra(t, &held)?;
                // `extra` read /proc too: still the held task?
                if held.still_there(&self.session.proc) {
                    Ok(held)
                } else {
                    Err(gone(t.id))
                }
            });
            match checked {
                Ok(held) => allowed.push(ops::Task::Held(held)),
                Err(e) => refused.push(Moved::failed(t.id, e)),
            }
        }
        let mut moved = ops::move_held(&mut self.session, dest, allowed);
        moved.extend(refused);
        // Replies come in the order of the request's targets (an id's first place).
        let mut order: HashMap<u32, usize> = HashMap::with_capacity(targets.len());
        for (i, t) in targets.iter().enumerate() {
            order.entry(t.id).or_insert(i);
        }
        moved.sort_by_key(|m| order.get(&m.id).copied().unwrap_or(usize::MAX));
        moved
    }

    /// Holds the target by a pidfd, then checks that its owner may be touched by the
    /// caller: every read is of the held task, and the move that follows writes its id
    /// while still holding it, so it hits the process that was checked, not a successor
    /// (even one started within the same 10 ms tick).
    pub(super) fn check_target(
        &self,
        caller: &Caller,
        dest: &Dest,
        t: &TaskRef,
    ) -> CliResult<Held> {
        let proc = &self.session.proc;
        let held = ops::hold(proc, dest, t).map_err(CliError::from)?;
        let config = &self.loaded.config;
        // Whose the target is matters only to a caller who may not touch every process.
        if !config.touches_any(caller) {
            let owner = proc.ruid(t.id).map_err(proc_fail)?;
            if !held.still_there(proc) {
                return Err(gone(t.id));
            }
            config.may_touch(caller, owner).map_err(CliError::denied)?;
        }
        Ok(held)
    }

    pub(super) fn finish_moves(
        &mut self,
        moved: Vec<Moved>,
        watch: &mut Vec<(u32, u64)>,
    ) -> CliResult<Value> {
        // Acknowledged means recorded: the state is on disk before the reply leaves.
        self.session.save()?;
        // Each moved task's process is known from its hold: no `/proc` read here.
        for m in moved.iter().filter(|m| m.ok) {
            let Some(pid) = m.key.map(|k| k.pid().get()) else {
                continue;
            };
            if let (false, Some(rec)) = (
                self.watched.contains(&pid),
                self.session.state.tasks.get(&pid),
            ) {
                watch.push((pid, rec.starttime.get()));
                self.watched.insert(pid);
            }
        }
        Ok(value(&moved))
    }
}

fn gone(id: u32) -> CliError {
    CliError::of(
        Kind::NoSuchProcess,
        format!("no such process or thread {id} (it exited)"),
    )
}

pub(super) fn proc_fail(e: ProcError) -> CliError {
    match e {
        ProcError::Gone(id) => CliError::of(
            Kind::NoSuchProcess,
            format!("no such process or thread {id}"),
        ),
        other => CliError::of(Kind::Internal, other.to_string()),
    }
}

/// The caller's soft RLIMIT_NICE and RLIMIT_RTPRIO from `/proc/<pid>/limits`, and a note for
/// refusals when they could not be read: then it has none. The pid (from SO_PEERCRED) must
/// still be a process of the caller's uid, or it may be someone else's by now.
pub(super) fn caller_limits(proc: &Procfs, caller: &Caller) -> (policy::Limits, String) {
    let read = |pid: u32| -> Option<policy::Limits> {
        if proc.ruid(pid).ok()? != caller.uid {
            return None;
        }
        let text = std::fs::read_to_string(proc.root().join(format!("{pid}/limits"))).ok()?;
        policy::Limits::parse(&text)
    };
    match caller.pid.map(|pid| (pid, read(pid))) {
        Some((_, Some(l))) => (l, String::new()),
        Some((pid, None)) => (
            policy::Limits::NONE,
            format!(
                " (the caller's limits are unknown: pid {pid} is gone or not uid {}'s)",
                caller.uid
            ),
        ),
        None => (
            policy::Limits::NONE,
            " (the caller's limits are unknown: no peer pid)".to_string(),
        ),
    }
}

/// Whether class attributes `attrs` stay within what the caller (limits `caller`) could do
/// to the held thread `key` itself. The kernel checks the target's own limits (task_rlimit of the
/// target), so the lower of the caller's and the thread's process's applies. The outer
/// error is a thread that vanished; the inner one names the attribute beyond.
pub(super) fn within_own(
    proc: &Procfs,
    key: TaskKey,
    attrs: &crate::sched::TaskAttrs,
    caller: policy::Limits,
    originals: &HashMap<u32, (u64, policy::Sched)>,
    uclamp: bool,
) -> CliResult<Result<(), String>> {
    // The thread is held: its start time is the hold's, not read again.
    let (tid, starttime) = (key.tid().get(), key.start().get());
    let gone = || {
        CliError::of(
            Kind::NoSuchProcess,
            format!("no such process or thread {tid}"),
        )
    };
    let a = crate::sched::getattr(tid).map_err(|e| match e.raw_os_error() {
        Some(libc::ESRCH) => gone(),
        _ => CliError::of(Kind::Internal, format!("sched_getattr {tid}: {e}")),
    })?;
    // What the thread ends up with, as sched::apply builds it from sched_getattr.
    let new = policy::Sched::of(&a).with(attrs);
    let mut now = policy::Sched::of(&a);
    if crate::sched::is_realtime(now.policy) {
        // sched_getattr reports no nice for a real-time task; the kernel still checks the
        // one it keeps (stat field 19) when the task goes back to a fair policy.
        now.nice = stat_nice(proc, tid).ok_or_else(gone)?;
    }
    let text =
        std::fs::read_to_string(proc.root().join(format!("{tid}/limits"))).map_err(|_| gone())?;
    let limits = policy::Limits::parse(&text)
        .ok_or_else(|| {
            CliError::of(
                Kind::Internal,
                format!("/proc/{tid}/limits: unexpected format"),
            )
        })?
        .min(caller);
    let original = originals
        .get(&tid)
        .filter(|(st, _)| *st == starttime)
        .map(|(_, o)| o);
    Ok(policy::beyond_reach(&new, &now, original, limits, uclamp))
}

/// A task's nice value (`/proc/<id>/stat` field 19, counted from after the comm).
fn stat_nice(proc: &Procfs, tid: u32) -> Option<i32> {
    let text = std::fs::read_to_string(proc.root().join(format!("{tid}/stat"))).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    rest.split_whitespace().nth(16)?.parse().ok()
}
