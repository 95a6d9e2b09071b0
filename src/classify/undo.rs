//! The undo side of classification: what a task's original attributes are (recorded when
//! cgqos first changes them, inherited by tasks born from a changed creator, adopted when a
//! task changes them itself) and putting them back on `reset`.

use crate::procfs::{ProcessId, Procfs, TaskKey, ThreadId};
use crate::sched::{self, TaskAttrs};
use crate::session::Session;
use crate::state::{AttrRecord, Record, State};

use super::wants_change;

/// A task whose attributes differ from what cgqos last applied to it changed them itself
/// (Chromium sets each new thread's nice by its type after the thread's events): without
/// cgqos it would have those, so each field it changed becomes that field of its original
/// (replacing an earlier or inherited value); the fields it did not change keep theirs.
/// Returns whether the record changed.
pub(super) fn adopt_own_change(
    state: &mut State,
    key: TaskKey,
    current: &sched::SchedAttr,
) -> bool {
    let (tid, start) = (key.tid().get(), key.start());
    let applied = match state.why.get(&tid) {
        Some(w) if w.starttime == start && !w.attrs.is_empty() => w.attrs,
        _ => return false,
    };
    let uclamp = sched::Support::get().uclamp;
    if !wants_change(current, &applied, uclamp) {
        return false;
    }
    let Some(rec) = state.attrs.get_mut(&tid).filter(|r| r.starttime == start) else {
        return false;
    };
    let own = own_changes(rec.original, &applied, current, uclamp);
    if own == rec.original {
        return false;
    }
    tracing::debug!(
        tid,
        "the task changed its own attributes: they are its original now"
    );
    rec.original = own;
    true
}

/// `original` with every field that cgqos set to `applied` but that is something else now
/// (`cur`) replaced by its value now. A changed policy brings its priority along.
fn own_changes(
    original: TaskAttrs,
    applied: &TaskAttrs,
    cur: &sched::SchedAttr,
    uclamp: bool,
) -> TaskAttrs {
    let mut out = original;
    let moved = |set: Option<u64>, now: u64| set.is_some_and(|v| v != now);
    if moved(applied.policy.map(u64::from), u64::from(cur.sched_policy)) {
        out.policy = Some(cur.sched_policy);
        out.priority = Some(cur.sched_priority);
    }
    if applied.nice.is_some_and(|n| n != cur.sched_nice) {
        out.nice = Some(cur.sched_nice);
    }
    if moved(applied.runtime_ns, cur.sched_runtime) {
        out.runtime_ns = Some(cur.sched_runtime);
    }
    if uclamp
        && moved(
            applied.uclamp_min.map(u64::from),
            u64::from(cur.sched_util_min),
        )
    {
        out.uclamp_min = Some(cur.sched_util_min);
    }
    if uclamp
        && moved(
            applied.uclamp_max.map(u64::from),
            u64::from(cur.sched_util_max),
        )
    {
        out.uclamp_max = Some(cur.sched_util_max);
    }
    out
}

/// A task born from a creator whose attributes cgqos changed starts with the changed
/// attributes (fork copies them); without cgqos it would have had the creator's original
/// ones, so those are its original too, and `reset` restores them. Records that for `tid`
/// (of process `tgid`), unless it has a record of its own. Returns whether it recorded.
pub fn inherit_original(
    state: &mut State,
    proc: &Procfs,
    creator: ThreadId,
    tid: ThreadId,
    tgid: ProcessId,
) -> bool {
    let (creator, tid, tgid) = (creator.get(), tid.get(), tgid.get());
    if creator == tid {
        return false;
    }
    let Some(parent) = state.attrs.get(&creator) else {
        return false;
    };
    // The record must still be the creator's: alive with the recorded start, or already
    // gone (its exit event, which drops the record, comes after this fork).
    if proc
        .stat(creator)
        .is_ok_and(|s| s.start() != parent.starttime)
    {
        return false;
    }
    let Ok(st) = proc.stat(tid) else {
        return false;
    };
    if state
        .attrs
        .get(&tid)
        .is_some_and(|r| r.starttime == st.start())
    {
        return false;
    }
    // Field by field: what the task still shares with its creator's changed attributes was
    // inherited; what it set itself since is its own. A creator already gone cannot be
    // compared with: the task takes its whole original.
    let original = match (sched::getattr(tid), sched::getattr(creator)) {
        (Ok(now), Ok(creator_now)) => match inherited(
            TaskAttrs::of(&now),
            TaskAttrs::of(&creator_now),
            parent.original,
        ) {
            Some(o) => o,
            None => return false,
        },
        _ => parent.original,
    };
    let record = AttrRecord {
        pid: ProcessId::new(tgid),
        starttime: st.start(),
        original,
        inherited_from: Some(parent.inherited_from.unwrap_or(creator)),
    };
    state.attrs.insert(tid, record);
    true
}

/// A new process `child` forked by `creator` (its fork event) inside the cgqos groups, where
/// cgqos had moved its creator: without cgqos it would have been born where its creator came
/// from, so that is its origin too, and `reset` moves it (the whole process) back there. A
/// child born elsewhere, or of a creator cgqos never moved, gets nothing. Returns whether it
/// recorded. (Chromium's zygote, moved by a rule, forks every renderer in its group.)
pub fn inherit_origin(s: &mut Session, creator: ThreadId, child: ProcessId) -> bool {
    let Some(creator_rec) = s.state.tasks.get(&creator.get()) else {
        return false;
    };
    // The creator's process's own record, when the creator is one of its threads.
    let rec = match s.state.tasks.get(&creator_rec.pid.get()) {
        Some(p) if p.process && p.pid == creator_rec.pid => p,
        _ => creator_rec,
    };
    if !s
        .proc
        .stat(creator.get())
        .is_ok_and(|st| st.start() == creator_rec.starttime)
    {
        return false;
    }
    let Ok(cgroup) = s.proc.cgroup(child, child.main_thread()) else {
        return false;
    };
    let inside = s
        .map
        .relative(&cgroup)
        .and_then(|r| crate::layout::classify(&r))
        .is_some();
    let Ok(st) = s.proc.stat(child.get()) else {
        return false;
    };
    if !inside || s.state.tasks.contains_key(&child.get()) {
        return false;
    }
    let record = Record {
        pid: child,
        starttime: st.start(),
        original: rec.original.clone(),
        process: true,
    };
    s.state.tasks.insert(child.get(), record);
    true
}

/// The original of a task born from a creator whose original was `creator_original` and
/// which has `creator_now` now, given what the task has `now`: every field the creator's
/// change set and the task still shares is the creator's original; the others are the
/// task's own. `None` when it shares none of the changed fields (nothing inherited left).
fn inherited(
    now: TaskAttrs,
    creator_now: TaskAttrs,
    creator_original: TaskAttrs,
) -> Option<TaskAttrs> {
    let mut out = now;
    let mut any = false;
    macro_rules! field {
        ($f:ident) => {
            if creator_original.$f != creator_now.$f && now.$f == creator_now.$f {
                out.$f = creator_original.$f;
                any = true;
            }
        };
    }
    field!(policy);
    field!(priority);
    field!(nice);
    field!(runtime_ns);
    field!(uclamp_min);
    field!(uclamp_max);
    any.then_some(out)
}

/// The recorded task of process `tgid` that thread `tid` most likely inherited its
/// attributes from. The fork event of a thread names the process's parent, not the
/// creating thread, so: a live recorded thread of the same process (the main thread first)
/// whose attributes cgqos changed and which `tid` still shares at least one changed field
/// with (`inherited`; the thread may have set others itself before its event was handled,
/// as Chromium sets a new thread's nice). A thread that shares none (born before the
/// change, or set its own) has none, and keeps no record.
fn likely_creator(state: &State, proc: &Procfs, tid: u32, tgid: u32) -> Option<u32> {
    let now = TaskAttrs::of(&sched::getattr(tid).ok()?);
    let matches = |id: u32, r: &AttrRecord| {
        id != tid
            && r.pid.get() == tgid
            && proc.stat(id).is_ok_and(|s| s.start() == r.starttime)
            && sched::getattr(id)
                .is_ok_and(|a| inherited(now, TaskAttrs::of(&a), r.original).is_some())
    };
    if state.attrs.get(&tgid).is_some_and(|r| matches(tgid, r)) {
        return Some(tgid);
    }
    state
        .attrs
        .iter()
        .find(|(id, r)| r.pid.get() == tgid && matches(**id, r))
        .map(|(id, _)| *id)
}

/// A new thread `tid` of `tgid` (its fork event): inherits the original of its likely
/// creator (`likely_creator`). Returns whether it recorded. Only processes whose main
/// thread has a record are looked at: this runs on every thread creation of the system,
/// and one map lookup keeps it cheap (classes from rules always cover the main thread).
pub fn inherit_thread(state: &mut State, proc: &Procfs, tid: ThreadId, tgid: ProcessId) -> bool {
    let (tid, tgid) = (tid.get(), tgid.get());
    if !state.attrs.contains_key(&tgid) {
        return false;
    }
    match likely_creator(state, proc, tid, tgid) {
        Some(creator) => inherit_original(
            state,
            proc,
            ThreadId::new(creator),
            ThreadId::new(tid),
            ProcessId::new(tgid),
        ),
        None => false,
    }
}

/// For threads found without their fork event (a rescan after lost events): each thread of
/// `pid` with no record of its own gets the original of its likely creator, as on a fork
/// event. Returns how many were recorded.
pub fn inherit_unrecorded(state: &mut State, proc: &Procfs, pid: ProcessId) -> usize {
    let pid = pid.get();
    if !state.attrs.contains_key(&pid) {
        return 0;
    }
    let Ok(threads) = proc.threads(ProcessId::new(pid)) else {
        return 0;
    };
    let mut n = 0;
    for tid in threads.into_iter().map(ThreadId::get) {
        let Ok(st) = proc.stat(tid) else { continue };
        if state
            .attrs
            .get(&tid)
            .is_some_and(|r| r.starttime == st.start())
        {
            continue;
        }
        n += usize::from(inherit_thread(
            state,
            proc,
            ThreadId::new(tid),
            ProcessId::new(pid),
        ));
    }
    n
}

/// Restores the scheduling attributes of every recorded thread that is still the same
/// thread; returns how many were restored and how many had exited.
pub fn restore_attrs(state: &mut State, proc: &Procfs) -> (usize, usize) {
    let uclamp = sched::Support::get().uclamp;
    let (mut restored, mut exited) = (0, 0);
    let mut failed = Vec::new();
    for (&tid, rec) in &state.attrs {
        if !proc.stat(tid).is_ok_and(|s| s.start() == rec.starttime) {
            exited += 1;
            continue;
        }
        let mut a = rec.original;
        // A thread that never had its own clamps gets the kernel's defaults back.
        let default_clamps = a.uclamp_min == Some(0) && a.uclamp_max == Some(1024);
        if default_clamps {
            a.uclamp_min = None;
            a.uclamp_max = None;
        }
        // Default clamps were taken out of `a` above: only the reset below touches them.
        let r = sched::apply(tid, &a).and_then(|_| {
            if uclamp && default_clamps {
                reset_clamps(tid)
            } else {
                Ok(())
            }
        });
        match r {
            Ok(()) => restored += 1,
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => exited += 1,
            Err(e) => {
                tracing::warn!(tid, "restoring scheduling attributes: {e}");
                failed.push(tid);
            }
        }
    }
    // Failed ones stay recorded, so a later reset can try again.
    state.attrs.retain(|t, _| failed.contains(t));
    (restored, exited)
}

/// Resets a thread's uclamp requests to "not set" (the kernel's -1), where supported.
fn reset_clamps(tid: u32) -> std::io::Result<()> {
    let Ok(mut a) = sched::getattr(tid) else {
        return Ok(());
    };
    a.size = std::mem::size_of::<sched::SchedAttr>() as u32;
    a.sched_flags = sched::SCHED_FLAG_KEEP_POLICY
        | sched::SCHED_FLAG_KEEP_PARAMS
        | sched::SCHED_FLAG_UTIL_CLAMP_MIN
        | sched::SCHED_FLAG_UTIL_CLAMP_MAX;
    a.sched_util_min = u32::MAX;
    a.sched_util_max = u32::MAX;
    // Kernels without uclamp say EOPNOTSUPP/EINVAL: there is nothing to reset there.
    match sched::setattr(tid, &a) {
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EOPNOTSUPP) | Some(libc::EINVAL)
            ) =>
        {
            Ok(())
        }
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_fields_a_task_changed_itself_become_its_original() {
        let original = TaskAttrs {
            policy: Some(sched::SCHED_OTHER),
            priority: Some(0),
            nice: Some(0),
            uclamp_min: Some(0),
            uclamp_max: Some(1024),
            runtime_ns: Some(2_800_000),
        };
        // cgqos applied batch, nice 7 and a 25 ms slice; the task then set nice -8 itself.
        let applied = TaskAttrs {
            policy: Some(sched::SCHED_BATCH),
            nice: Some(7),
            runtime_ns: Some(25_000_000),
            ..TaskAttrs::default()
        };
        let cur = sched::SchedAttr {
            sched_policy: sched::SCHED_BATCH,
            sched_nice: -8,
            sched_runtime: 25_000_000,
            ..Default::default()
        };
        let own = own_changes(original, &applied, &cur, false);
        assert_eq!(
            own,
            TaskAttrs {
                nice: Some(-8),
                ..original
            },
            "the policy and slice cgqos set stay the original's"
        );
        // It switched to SCHED_IDLE: the policy (and its priority) is its own too.
        let cur = sched::SchedAttr {
            sched_policy: sched::SCHED_IDLE,
            ..cur
        };
        let own = own_changes(original, &applied, &cur, false);
        assert_eq!(own.policy, Some(sched::SCHED_IDLE));
        assert_eq!(own.runtime_ns, original.runtime_ns);
        // Nothing changed since cgqos applied: the original stays.
        let cur = sched::SchedAttr {
            sched_policy: sched::SCHED_BATCH,
            sched_nice: 7,
            sched_runtime: 25_000_000,
            ..Default::default()
        };
        assert_eq!(own_changes(original, &applied, &cur, true), original);
    }

    #[test]
    fn a_new_task_inherits_only_the_changed_fields_it_still_shares() {
        let original = TaskAttrs::of(&sched::SchedAttr {
            sched_nice: 0,
            sched_runtime: 2_800_000,
            ..Default::default()
        });
        // The creator was given nice -5 and a 6 ms slice.
        let creator_now = TaskAttrs {
            nice: Some(-5),
            runtime_ns: Some(6_000_000),
            ..original
        };
        // Born with both; then set its own nice -8 before its event was handled.
        let now = TaskAttrs {
            nice: Some(-8),
            ..creator_now
        };
        assert_eq!(
            inherited(now, creator_now, original),
            Some(TaskAttrs {
                nice: Some(-8),
                ..original
            })
        );
        // Nothing of the change left (or a creator cgqos never changed): nothing inherited.
        let own = TaskAttrs {
            nice: Some(3),
            runtime_ns: Some(1_000_000),
            ..original
        };
        assert_eq!(inherited(own, creator_now, original), None);
        assert_eq!(inherited(original, original, original), None);
    }
}
