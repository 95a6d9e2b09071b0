//! Applying thread classes to live tasks: the cgroup class (inside the task's process group)
//! and the task attributes, recording what it changes so `reset` can undo it and `why` can
//! explain it. Used by rules (the daemon's events) and by `move --thread <class>`.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::cgroupfs::Refusal;
use crate::layout;
use crate::place::{Held, PlaceError, Placer, ThreadPlace};
use crate::procfs::{ProcessId, Procfs, StartTime, TaskKey, ThreadId};
use crate::rules::{ClassDef, Classes, Rule, RuleSet};
use crate::sched::{self, TaskAttrs};
use crate::session::Session;
use crate::state::{AttrRecord, State, Why};

mod undo;
use undo::adopt_own_change;
pub use undo::{
    inherit_origin, inherit_original, inherit_thread, inherit_unrecorded, restore_attrs,
};

/// How much of a process's command line rules see (argv[0] and `cmdline` matches), in bytes.
pub const MAX_CMDLINE: u64 = 128 * 1024;

mod by_rule;
mod info;

pub use by_rule::{ThreadOutcome, classify_process, classify_thread, still_applied};

pub use info::process_info;
use info::process_info_for;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What one classification did to one thread.
#[derive(Debug, Clone, Serialize)]
pub struct Applied {
    pub tid: u32,
    pub class: String,
    pub moved: bool,
    pub attrs_changed: bool,
    /// Whether a new `why` record was written (the state then needs saving).
    #[serde(skip)]
    pub recorded: bool,
}

impl Applied {
    /// Whether anything changed, in the kernel or in the record.
    pub fn changed(&self) -> bool {
        self.moved || self.attrs_changed || self.recorded
    }
}

/// Applies a class to one thread: its cgroup class, when its process sits in a cgqos browser
/// group, and its task attributes. Records the original attributes (first change wins) and
/// why. Skips writes that would change nothing.
///
/// `key` was resolved by the caller (a held thread): no `/proc/<tid>/stat` is read again
/// here.
pub fn apply_class(
    s: &mut Session,
    key: TaskKey,
    class: &ClassDef,
    by: &str,
) -> Result<Applied, PlaceError> {
    apply_class_known(s, key, Known::default(), class, by, false)
}

/// [`apply_class`] to a thread the caller holds (its cgroup and attributes read now, under
/// the hold).
pub fn apply_class_held(
    s: &mut Session,
    held: &Held,
    class: &ClassDef,
    by: &str,
) -> Result<Applied, PlaceError> {
    let known = Known {
        held: Some(held),
        ..Known::default()
    };
    apply_class_known(s, held.key(), known, class, by, false)
}

/// After process `pid` moved to another group: applies again the real-time classes of its
/// threads, so that they lose the real-time policy in a group that allows none and get it
/// back elsewhere (`layout::Group::real_time`). Each thread is held through the write; one
/// that exited meanwhile is skipped. Returns how many threads changed.
pub fn real_time_follows_group(s: &mut Session, classes: &Classes, pid: ProcessId) -> usize {
    // No class is real-time (the shipped ones are not): nothing to look up on a move.
    if !classes
        .0
        .iter()
        .any(|c| c.attrs.policy.is_some_and(sched::is_realtime))
    {
        return 0;
    }
    let recorded: Vec<(u32, StartTime, ClassDef, String)> = s
        .state
        .why
        .iter()
        .filter(|(_, w)| w.pid == pid)
        .filter_map(|(&tid, w)| {
            let class = classes.get(w.class.as_deref()?)?;
            let real_time = class.attrs.policy.is_some_and(sched::is_realtime);
            real_time.then(|| (tid, w.starttime, class.clone(), w.by.clone()))
        })
        .collect();
    let mut changed = 0;
    for (tid, start, class, by) in recorded {
        let Ok(held) = Held::thread_of(&s.proc, pid, ThreadId::new(tid), Some(start)) else {
            continue;
        };
        match apply_class_held(s, &held, &class, &by) {
            Ok(a) => changed += usize::from(a.attrs_changed),
            Err(e) => tracing::debug!(tid, "a real-time class not re-applied: {e}"),
        }
    }
    changed
}

/// What the caller of [`apply_class_known`] already has of the thread, so it is not read
/// again.
#[derive(Default)]
struct Known<'h> {
    /// The thread, held by its pidfd (else a move holds it).
    held: Option<&'h Held>,
    /// Its cgroup as `/proc` shows it, read while held (or where a held write put it).
    cgroup: Option<String>,
    /// Its scheduling attributes (`sched_getattr`), read while held.
    attrs: Option<sched::SchedAttr>,
}

/// [`apply_class`] with what the caller already read (`known`); `inherited`: the thread may
/// have been born from a changed creator of its process after that change (its process's
/// main thread was recorded before this classification began), so attributes it still
/// shares with that creator's change are not its original (`undo::inherit_thread`).
fn apply_class_known(
    s: &mut Session,
    key: TaskKey,
    known: Known<'_>,
    class: &ClassDef,
    by: &str,
    inherited: bool,
) -> Result<Applied, PlaceError> {
    let mut state = std::mem::take(&mut s.state);
    let result = apply_class_inner(s, &mut state, key, known, class, by, inherited);
    s.state = state;
    result
}

fn apply_class_inner(
    s: &Session,
    state: &mut State,
    key: TaskKey,
    known: Known<'_>,
    class: &ClassDef,
    by: &str,
    inherited: bool,
) -> Result<Applied, PlaceError> {
    let (pid, tid, starttime) = (key.pid(), key.tid().get(), key.start());
    let mut moved = false;
    let cgroup = match known.cgroup {
        Some(c) => c,
        None => s.proc.cgroup(key.pid(), key.tid())?,
    };
    let placement = s.map.relative(&cgroup).and_then(|r| layout::classify(&r));
    let mut group = None;
    if let Some(p) = placement.filter(|p| p.group.starts_with(layout::CHROME)) {
        let want = class.cgroup_class.layout_class();
        if p.class.as_deref() != want {
            let mut placer = Placer::new(&s.cg, &s.map, &s.proc);
            match known.held {
                // Held since before its cgroup was read: that read serves the move.
                Some(held) => placer.move_held_thread_from(held, cgroup, want, state)?,
                None => placer.move_thread(key.tid(), want, Some(key.start()), state)?,
            };
            moved = true;
        }
        group = Some(p.group);
    }
    // A process group that allows no real-time policy (background) gets the class without it.
    let attrs = match &group {
        Some(g) if !layout::allows_real_time(g) => class.attrs.without_real_time(),
        _ => class.attrs,
    };
    let (attrs_changed, recorded) = apply_attrs(s, state, key, known.attrs, &attrs, inherited)?;
    // Re-applying what is already in force changes nothing, not even the record's time.
    let same = state.why.get(&tid).is_some_and(|w| {
        w.starttime == starttime && w.by == by && w.class.as_deref() == Some(class.name.as_str())
    });
    if moved || attrs_changed || !same {
        state.why.insert(
            tid,
            Why {
                pid,
                starttime,
                by: by.to_string(),
                group,
                class: Some(class.name.clone()),
                attrs,
                at: now(),
            },
        );
    }
    Ok(Applied {
        tid,
        class: class.name.clone(),
        moved,
        attrs_changed,
        recorded: recorded || !same,
    })
}

/// The task-attribute half of [`apply_class_inner`]: applies `attrs` if they would change
/// anything, recording the original first (its own, adopted or inherited: `undo`). Returns
/// whether the attributes changed and whether the record did without them changing.
fn apply_attrs(
    s: &Session,
    state: &mut State,
    key: TaskKey,
    known: Option<sched::SchedAttr>,
    attrs: &TaskAttrs,
    inherited: bool,
) -> Result<(bool, bool), PlaceError> {
    let (tid, starttime) = (key.tid().get(), key.start());
    if attrs.is_empty() {
        return Ok((false, false));
    }
    // Read while the caller held the thread, or now.
    let current = match known {
        Some(a) => a,
        None => sched::getattr(tid).map_err(|e| sched_err(tid, e))?,
    };
    let adopted = adopt_own_change(state, key, &current);
    if !wants_change(&current, attrs, sched::Support::get().uclamp) {
        return Ok((false, adopted));
    }
    // A thread met before its own fork event (its process's classification came first) may
    // still have what it inherited from a changed creator: that is not its original. The
    // process's own fork event already looked at its main thread.
    let recorded = state
        .attrs
        .get(&tid)
        .is_some_and(|r| r.starttime == starttime);
    if inherited && !recorded && key.tid() != key.pid().main_thread() {
        undo::inherit_thread(state, &s.proc, key.tid(), key.pid());
    }
    let before = sched::apply_over(tid, current, attrs).map_err(|e| sched_err(tid, e))?;
    match state.attrs.get(&tid) {
        Some(r) if r.starttime == starttime => {}
        _ => {
            let record = AttrRecord {
                pid: key.pid(),
                starttime,
                original: TaskAttrs::of(&before),
                inherited_from: None,
            };
            state.attrs.insert(tid, record);
        }
    }
    Ok((true, adopted))
}

fn sched_err(tid: u32, e: std::io::Error) -> PlaceError {
    if e.raw_os_error() == Some(libc::ESRCH) {
        PlaceError::Gone(tid)
    } else {
        PlaceError::Kernel(crate::cgroupfs::FsError {
            op: "sched_setattr",
            path: format!("/proc/{tid}").into(),
            value: None,
            source: e,
        })
    }
}

/// Whether applying `attrs` would change anything the kernel reports.
fn wants_change(cur: &sched::SchedAttr, attrs: &TaskAttrs, uclamp: bool) -> bool {
    attrs.policy.is_some_and(|p| p != cur.sched_policy)
        || (attrs.policy.is_some_and(sched::is_realtime)
            && attrs.priority.is_some_and(|p| p != cur.sched_priority))
        || attrs.nice.is_some_and(|n| n != cur.sched_nice)
        || attrs.runtime_ns.is_some_and(|r| r != cur.sched_runtime)
        || (uclamp && attrs.uclamp_min.is_some_and(|v| v != cur.sched_util_min))
        || (uclamp && attrs.uclamp_max.is_some_and(|v| v != cur.sched_util_max))
}

/// Records why each successful move of `moved` happened (`by`: who asked): a process move
/// (`process`) under the process's id with its group, a thread move under the thread's id
/// with its class. Ids that exited meanwhile are skipped.
pub fn record_moves(
    state: &mut State,
    proc: &Procfs,
    moved: &[crate::session::Moved],
    by: &str,
    process: bool,
) {
    for m in moved.iter().filter(|m| m.ok) {
        // The move carries the identity of the task it held through the write; the origin
        // record, then /proc, only for an outcome without one.
        let (pid, starttime) = match (m.key, state.tasks.get(&m.id)) {
            // The task the move held: its identity came with the outcome.
            (Some(k), _) => (k.pid(), k.start()),
            (None, Some(r)) => (r.pid, r.starttime),
            (None, None) => {
                let Ok(st) = proc.stat(m.id) else { continue };
                let pid = if process {
                    m.id
                } else {
                    match proc.tgid(m.id) {
                        Ok(p) => p,
                        Err(_) => continue,
                    }
                };
                (ProcessId::new(pid), st.start())
            }
        };
        let place = m
            .threads
            .iter()
            .find(|t| t.tid.get() == m.id)
            .or(m.threads.first());
        state.why.insert(
            m.id,
            Why {
                pid,
                starttime,
                by: by.to_string(),
                group: place.and_then(|t| t.group.clone()),
                class: if process {
                    None
                } else {
                    place.and_then(|t| t.class.clone())
                },
                attrs: TaskAttrs::default(),
                at: now(),
            },
        );
    }
}
