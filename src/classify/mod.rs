//! Applying thread classes to live tasks: the cgroup class (inside the task's process group)
//! and the task attributes, recording what it changes so `reset` can undo it and `why` can
//! explain it. Used by rules (the daemon's events) and by `move --thread <class>`.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::cgroupfs::Refusal;
use crate::layout;
use crate::place::{Held, PlaceError, Placer, ThreadPlace};
use crate::procfs::{ProcessId, Procfs, StartTime, Stat, TaskKey, ThreadId};
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
    // Threads may carry a change inherited from their main thread only if that change was
    // made (and recorded) before this classification: one made below came after them.
    let inherited = s
        .state
        .attrs
        .get(&pid.get())
        .is_some_and(|r| r.starttime == held.key().start());
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
            classify_held(s, rules, rule, &held, cgroup, inherited)
        } else {
            Held::thread_of(&s.proc, pid, tid, None)
                .and_then(|h| classify_held(s, rules, rule, &h, cgroup, inherited))
        };
        match r {
            Ok(Some(a)) => out.push(a),
            Ok(None) | Err(PlaceError::Gone(_)) | Err(PlaceError::KernelThread { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// What classifying one thread did: that thread only, or (when its process's match had
/// changed) the whole process.
#[derive(Debug)]
pub enum ThreadOutcome {
    Thread(Option<Applied>),
    Process(Vec<Applied>),
}

impl ThreadOutcome {
    /// How many tasks changed (in the kernel or in the record).
    pub fn changed(&self) -> usize {
        match self {
            ThreadOutcome::Thread(a) => usize::from(a.as_ref().is_some_and(Applied::changed)),
            ThreadOutcome::Process(v) => v.iter().filter(|a| a.changed()).count(),
        }
    }

    /// Whether a rule gave any task a class.
    pub fn matched(&self) -> bool {
        match self {
            ThreadOutcome::Thread(a) => a.is_some(),
            ThreadOutcome::Process(v) => !v.is_empty(),
        }
    }
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

/// Classifies one thread (after its creation or a rename) by its own name and its process's
/// rule. A process that changed its command line without exec since it was classified (a
/// zygote's child rewriting its title) has no event of its own: if its rule now differs from
/// the rule recorded for its main thread, or the rule names the main thread and the main
/// thread has no record, the whole process is classified instead (`ThreadOutcome::Process`).
/// Both checks reuse what was read for the thread: no extra `/proc` read.
pub fn classify_thread(
    s: &mut Session,
    rules: &RuleSet,
    pid: ProcessId,
    tid: ThreadId,
) -> Result<ThreadOutcome, PlaceError> {
    let info = process_info_for(&s.proc, pid.get(), rules)?;
    let Some(rule) = rules.rule_for(&info) else {
        return Ok(ThreadOutcome::Thread(None));
    };
    // The main thread's name matters only without a record; read it then, unless reading
    // for the rules already did.
    let unrecorded = !s.state.why.contains_key(&pid.get());
    let main_comm = match unrecorded && info.comm.is_empty() {
        true => s.proc.comm(pid.get())?,
        false => info.comm,
    };
    if process_rematch_needed(&s.state, rules, rule, pid.get(), &main_comm) {
        let applied = classify_process(s, rules, pid)?;
        return Ok(ThreadOutcome::Process(applied));
    }
    // A new or renamed thread: its process's main thread, if changed, was changed before.
    let held = Held::thread_of(&s.proc, pid, tid, None)?;
    classify_held(s, rules, rule, &held, None, true).map(ThreadOutcome::Thread)
}

/// Whether process `pid`, whose rule is now `rule`, was classified by another rule, or never
/// by this one although the rule gives its main thread (named `main_comm`) a class. Records
/// made by requests (`cgqos move`) are left to them.
fn process_rematch_needed(
    state: &State,
    rules: &RuleSet,
    rule: &Rule,
    pid: u32,
    main_comm: &str,
) -> bool {
    match state.why.get(&pid) {
        Some(w) if w.by.starts_with("rule ") => w.class.is_some() && w.by != rule_label(rule),
        Some(_) => false,
        None => rules.decide(rule, main_comm).class.is_some(),
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
    inherited: bool,
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
            apply_class_known(s, key, known(read), class, &by, inherited)?
        }
        // Where the group move's write put it. A write the kernel skipped (an exiting
        // task) left it elsewhere, and the class's write is then refused: ask where it is.
        Some(put) => match apply_class_known(s, key, known(put), class, &by, inherited) {
            Err(PlaceError::Kernel(e)) if e.refusal() == Refusal::NotSupported => {
                let read = s.proc.cgroup(key.pid(), key.tid())?;
                apply_class_known(s, key, known(read), class, &by, inherited)?
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

#[cfg(test)]
mod tests {
    use super::*;

    fn why(by: &str, class: Option<&str>) -> Why {
        Why {
            pid: ProcessId::new(7),
            starttime: StartTime::new(1),
            by: by.into(),
            group: None,
            class: class.map(String::from),
            attrs: TaskAttrs::default(),
            at: 0,
        }
    }

    #[test]
    fn a_process_is_matched_again_when_its_rule_changed_or_its_main_thread_was_missed() {
        let rules = crate::rules::load::load_texts(&[(
            "a.yaml",
            "rules:\n  - name: zygote\n    match: {cmdline: \"--type=zygote\"}\n    class: urgent\n  - name: renderer\n    match: {cmdline: \"--type=renderer\"}\n    class: background\n  - name: workers\n    match: {argv0: w}\n    threads: {\"worker-*\": eco}\n",
        )])
        .unwrap();
        let (zygote, renderer, workers) = (&rules.rules[0], &rules.rules[1], &rules.rules[2]);
        let mut state = State::default();
        // Never classified, and the rule names the main thread: the whole process.
        assert!(process_rematch_needed(&state, &rules, renderer, 7, "main"));
        // Never classified, but the rule leaves the main thread alone: that thread only.
        assert!(!process_rematch_needed(&state, &rules, workers, 7, "main"));
        // Classified by the zygote's rule, now a renderer (title rewritten): again.
        state
            .why
            .insert(7, why(&rule_label(zygote), Some("urgent")));
        assert!(process_rematch_needed(&state, &rules, renderer, 7, "main"));
        // Same rule as recorded: only the thread.
        assert!(!process_rematch_needed(&state, &rules, zygote, 7, "main"));
        // A request placed it (`cgqos move`): rules leave that to the request.
        state
            .why
            .insert(7, why("request from uid 0 (pid 1)", Some("urgent")));
        assert!(!process_rematch_needed(&state, &rules, renderer, 7, "main"));
    }
}
