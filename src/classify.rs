//! Applying thread classes to live tasks: the cgroup class (inside the task's process group)
//! and the task attributes, recording what it changes so `reset` can undo it and `why` can
//! explain it. Used by rules (the daemon's events) and by `move --thread <class>`.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::cgroupfs::Refusal;
use crate::layout;
use crate::place::{Held, PlaceError, Placer, ThreadPlace};
use crate::procfs::{ProcessId, Procfs, StartTime, Stat, TaskKey, ThreadId};
use crate::rules::{ClassDef, Rule, RuleSet};
use crate::sched::{self, TaskAttrs};
use crate::session::Session;
use crate::state::{AttrRecord, State, Why};

/// How much of a process's command line rules see (argv[0] and `cmdline` matches), in bytes.
pub const MAX_CMDLINE: u64 = 128 * 1024;

mod info;

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
/// `key` was resolved by the caller (a held thread, or [`resolve`]): no `/proc/<tid>/stat`
/// is read again here.
pub fn apply_class(
    s: &mut Session,
    key: TaskKey,
    class: &ClassDef,
    by: &str,
) -> Result<Applied, PlaceError> {
    apply_class_known(s, key, Known::default(), class, by)
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

fn apply_class_known(
    s: &mut Session,
    key: TaskKey,
    known: Known<'_>,
    class: &ClassDef,
    by: &str,
) -> Result<Applied, PlaceError> {
    let mut state = std::mem::take(&mut s.state);
    let result = apply_class_inner(s, &mut state, key, known, class, by);
    s.state = state;
    result
}

/// A thread's identity from its stat, read once by the caller; kernel threads are refused.
pub fn resolve(pid: u32, tid: u32, stat: &Stat) -> Result<TaskKey, PlaceError> {
    if stat.is_kernel_thread() {
        return Err(PlaceError::KernelThread {
            id: tid,
            comm: stat.comm.clone(),
        });
    }
    Ok(TaskKey::new(
        ProcessId::new(pid),
        ThreadId::new(tid),
        StartTime::new(stat.starttime),
    ))
}

fn apply_class_inner(
    s: &Session,
    state: &mut State,
    key: TaskKey,
    known: Known<'_>,
    class: &ClassDef,
    by: &str,
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
    let mut attrs_changed = false;
    if !class.attrs.is_empty() {
        let current = match known.attrs {
            Some(a) => a,
            None => sched::getattr(tid).map_err(|e| sched_err(tid, e))?,
        };
        if wants_change(&current, &class.attrs, sched::Support::get().uclamp) {
            let before =
                sched::apply_over(tid, current, &class.attrs).map_err(|e| sched_err(tid, e))?;
            attrs_changed = true;
            match state.attrs.get(&tid) {
                Some(r) if r.starttime == starttime => {}
                _ => {
                    state.attrs.insert(
                        tid,
                        AttrRecord {
                            pid,
                            starttime,
                            original: TaskAttrs::of(&before),
                            inherited_from: None,
                        },
                    );
                }
            }
        }
    }
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
                attrs: class.attrs,
                at: now(),
            },
        );
    }
    Ok(Applied {
        tid,
        class: class.name.clone(),
        moved,
        attrs_changed,
        recorded: !same,
    })
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

/// Classifies every thread of a process by the rules; moves the process to the rule's group
/// first. Returns nothing when no rule matches (such processes are never touched).
pub fn classify_process(
    s: &mut Session,
    rules: &RuleSet,
    pid: ProcessId,
) -> Result<Vec<Applied>, PlaceError> {
    let info = process_info_for(&s.proc, pid.get(), rules)?;
    let class_rule = rules.rule_for(&info);
    let group_rule = rules.group_rule_for(&info);
    if class_rule.is_none() && group_rule.is_none() {
        return Ok(Vec::new());
    }
    // The process, held from here on: its identity read once (the pidfd, then its stat),
    // its move and its main thread's class take this hold, and its record this start time.
    let held = match Held::process(&s.proc, pid, None) {
        Err(PlaceError::KernelThread { .. }) => return Ok(Vec::new()),
        r => r?,
    };
    let placed = match group_rule.and_then(|r| r.group.as_ref().map(|g| (r, g))) {
        Some((rule, target)) => to_rule_group(s, &held, rule, target)?,
        None => None,
    };
    let Some(rule) = class_rule else {
        return Ok(Vec::new());
    };
    // Each thread with its cgroup when the move above just put it there.
    let threads: Vec<(ThreadId, Option<String>)> = match placed {
        Some(after) => after
            .into_iter()
            .map(|ThreadPlace { tid, cgroup, .. }| (tid, Some(cgroup)))
            .collect(),
        None => s
            .proc
            .threads(pid)?
            .into_iter()
            .map(|t| (t, None))
            .collect(),
    };
    let mut out = Vec::new();
    for (tid, cgroup) in threads {
        let r = if tid == pid.main_thread() {
            classify_held(s, rules, rule, &held, cgroup)
        } else {
            Held::thread_of(&s.proc, pid, tid, None)
                .and_then(|h| classify_held(s, rules, rule, &h, cgroup))
        };
        match r {
            Ok(Some(a)) => out.push(a),
            Ok(None) | Err(PlaceError::Gone(_)) | Err(PlaceError::KernelThread { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Moves a held process to its rule's group unless it is there (or the group is not set
/// up); where the write put each thread, when it moved.
fn to_rule_group(
    s: &mut Session,
    held: &Held,
    rule: &Rule,
    target: &layout::Target,
) -> Result<Option<Vec<ThreadPlace>>, PlaceError> {
    let pid = held.key().pid();
    let main = s.proc.cgroup(pid, pid.main_thread())?;
    let here = s
        .map
        .relative(&main)
        .and_then(|r| layout::classify(&r))
        .map(|p| p.group);
    if here.as_deref() == Some(target.path().as_str()) {
        return Ok(None);
    }
    let mut state = std::mem::take(&mut s.state);
    // The main thread's cgroup was read while held: the move takes it as is.
    let r = Placer::new(&s.cg, &s.map, &s.proc).move_held_process_from(
        held,
        Some(main),
        target,
        &mut state,
    );
    s.state = state;
    let after = match r {
        // Not set up: left alone, as a group that does not exist always was.
        Err(PlaceError::NotSetUp(_)) => return Ok(None),
        r => r?,
    };
    s.state.why.insert(
        pid.get(),
        Why {
            pid,
            starttime: held.key().start(),
            by: rule_label(rule),
            group: Some(target.path()),
            class: None,
            attrs: TaskAttrs::default(),
            at: now(),
        },
    );
    Ok(Some(after))
}

/// Classifies one thread (after its creation or a rename).
pub fn classify_thread(
    s: &mut Session,
    rules: &RuleSet,
    pid: ProcessId,
    tid: ThreadId,
) -> Result<Option<Applied>, PlaceError> {
    let info = process_info_for(&s.proc, pid.get(), rules)?;
    match rules.rule_for(&info) {
        Some(rule) => {
            let held = Held::thread_of(&s.proc, pid, tid, None)?;
            classify_held(s, rules, rule, &held, None)
        }
        None => Ok(None),
    }
}

fn rule_label(rule: &Rule) -> String {
    format!("rule {} ({})", rule.name, rule.at)
}

/// Applies `rule` to a held thread: its name (the stat read by the hold) picks the class;
/// `cgroup` is where a move just put it, if one did.
fn classify_held(
    s: &mut Session,
    rules: &RuleSet,
    rule: &Rule,
    held: &Held,
    cgroup: Option<String>,
) -> Result<Option<Applied>, PlaceError> {
    let key = held.key();
    let (pid, tid) = (key.pid().get(), key.tid().get());
    let comm = &held.stat.comm;
    let decision = rules.decide(rule, comm);
    let Some(class) = decision.class else {
        return Ok(None);
    };
    // As schedqos: rules change fair tasks only. A real-time or deadline thread that cgqos
    // did not make so (an audio thread) keeps its policy, cgroup and attributes.
    let ours = s.state.why.get(&tid).is_some_and(|w| {
        w.starttime == key.start() && w.attrs.policy.is_some_and(|p| !crate::rules::is_fair(p))
    });
    // Read once: the fairness check here, the class's comparison and its write below.
    let attrs = sched::getattr(tid).ok();
    if !ours && !attrs.is_some_and(|a| crate::rules::is_fair(a.sched_policy)) {
        return Ok(None);
    }
    let by = rule_label(rule);
    let known = |cgroup| Known {
        held: Some(held),
        cgroup: Some(cgroup),
        attrs,
    };
    let applied = match cgroup {
        // Read while held: the class's move takes it as is.
        None => {
            let read = s.proc.cgroup(key.pid(), key.tid())?;
            apply_class_known(s, key, known(read), class, &by)?
        }
        // Where the group move's write put it. A write the kernel skipped (an exiting
        // task) left it elsewhere, and the class's write is then refused: ask where it is.
        Some(put) => match apply_class_known(s, key, known(put), class, &by) {
            Err(PlaceError::Kernel(e)) if e.refusal() == Refusal::NotSupported => {
                let read = s.proc.cgroup(key.pid(), key.tid())?;
                apply_class_known(s, key, known(read), class, &by)?
            }
            r => r?,
        },
    };
    if applied.moved || applied.attrs_changed {
        tracing::info!(pid, tid, comm = %comm, class = %class.name, rule = %rule.at, "classified by rule {}", rule.name);
    }
    Ok(Some(applied))
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
    let record = AttrRecord {
        pid: ProcessId::new(tgid),
        starttime: st.start(),
        original: parent.original,
        inherited_from: Some(parent.inherited_from.unwrap_or(creator)),
    };
    state.attrs.insert(tid, record);
    true
}

/// The recorded task of process `tgid` that thread `tid` most likely inherited its
/// attributes from. The fork event of a thread names the process's parent, not the
/// creating thread, so: a live recorded thread of the same process (the main thread first)
/// whose attributes cgqos changed and which has exactly `tid`'s attributes now. A thread
/// whose attributes match no changed creator (born before the change, or set its own) has
/// none, and keeps no record.
fn likely_creator(state: &State, proc: &Procfs, tid: u32, tgid: u32) -> Option<u32> {
    let now = TaskAttrs::of(&sched::getattr(tid).ok()?);
    let matches = |id: u32, r: &AttrRecord| {
        id != tid
            && r.pid.get() == tgid
            && r.original != now
            && proc.stat(id).is_ok_and(|s| s.start() == r.starttime)
            && sched::getattr(id).is_ok_and(|a| TaskAttrs::of(&a) == now)
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
