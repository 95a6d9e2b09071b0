//! Applying thread classes to live tasks: the cgroup class (inside the task's process group)
//! and the task attributes, recording what it changes so `reset` can undo it and `why` can
//! explain it. Used by rules (the daemon's events) and by `move --thread <class>`.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::layout;
use crate::place::{PlaceError, Placer};
use crate::procfs::{ProcError, ProcessId, Procfs, StartTime, Stat, TaskKey, ThreadId};
use crate::rules::{ClassDef, ProcessInfo, Rule, RuleSet};
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

/// Reads what rules match a process by. A process that exits meanwhile is `Gone`.
pub fn process_info(proc: &Procfs, pid: u32) -> Result<ProcessInfo, ProcError> {
    let root = proc.root();
    let read = |f: &str| std::fs::read(root.join(format!("{pid}/{f}")));
    let gone = |e: std::io::Error| match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ESRCH) => ProcError::Gone(pid),
        _ => ProcError::Io {
            path: root.join(format!("{pid}")),
            source: e,
        },
    };
    // argv can be megabytes; rules see its first MAX_CMDLINE bytes.
    let cmdline = std::fs::File::open(root.join(format!("{pid}/cmdline")))
        .and_then(|f| {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut std::io::Read::take(f, MAX_CMDLINE), &mut v).map(|_| v)
        })
        .map_err(gone)?;
    // Kernel threads and zombies have no exe; that is not an error, they just match less.
    // The link is read, never followed: its target names the program (`rules::app`).
    let exe = std::fs::read_link(root.join(format!("{pid}/exe")))
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let comm = String::from_utf8_lossy(&read("comm").map_err(gone)?)
        .trim_end()
        .to_string();
    let uid = proc.ruid(pid)?;
    Ok(ProcessInfo::from_proc(&cmdline, exe, comm, uid))
}

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
    apply_class_with(s, key, class, by, false)
}

/// [`apply_class`]; `inherited`: the thread may have been born from a changed creator of
/// its process after that change (its process's main thread was recorded before this
/// classification began), so attributes it still shares with that creator's change are
/// not its original (`undo::inherit_thread`).
fn apply_class_with(
    s: &mut Session,
    key: TaskKey,
    class: &ClassDef,
    by: &str,
    inherited: bool,
) -> Result<Applied, PlaceError> {
    let mut state = std::mem::take(&mut s.state);
    let result = apply_class_inner(s, &mut state, key, class, by, inherited);
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
    class: &ClassDef,
    by: &str,
    inherited: bool,
) -> Result<Applied, PlaceError> {
    let (pid, tid, starttime) = (key.pid(), key.tid().get(), key.start());
    let mut moved = false;
    let cgroup = s.proc.cgroup(key.pid(), key.tid())?;
    let placement = s.map.relative(&cgroup).and_then(|r| layout::classify(&r));
    let mut group = None;
    if let Some(p) = placement.filter(|p| p.group.starts_with(layout::CHROME)) {
        let want = class.cgroup_class.layout_class();
        if p.class.as_deref() != want {
            let mut placer = Placer::new(&s.cg, &s.map, &s.proc);
            placer.move_thread(key.tid(), want, Some(key.start()), state)?;
            moved = true;
        }
        group = Some(p.group);
    }
    let (attrs_changed, recorded) = apply_attrs(s, state, key, &class.attrs, inherited)?;
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
    attrs: &TaskAttrs,
    inherited: bool,
) -> Result<(bool, bool), PlaceError> {
    let (tid, starttime) = (key.tid().get(), key.start());
    if attrs.is_empty() {
        return Ok((false, false));
    }
    let current = sched::getattr(tid).map_err(|e| sched_err(tid, e))?;
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
    let before = sched::apply(tid, attrs).map_err(|e| sched_err(tid, e))?;
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
    let pid = pid.get();
    let info = process_info(&s.proc, pid)?;
    let class_rule = rules.rule_for(&info);
    let group_rule = rules.group_rule_for(&info);
    if class_rule.is_none() && group_rule.is_none() {
        return Ok(Vec::new());
    }
    let main_stat = s.proc.stat(pid)?;
    if main_stat.is_kernel_thread() {
        return Ok(Vec::new());
    }
    // The process's identity, read once: the move below holds exactly this process, and
    // its record takes this start time (no second read of its stat).
    let start = main_stat.start();
    if let Some((rule, target)) = group_rule.and_then(|r| r.group.as_ref().map(|g| (r, g))) {
        let main = s.proc.cgroup(ProcessId::new(pid), ThreadId::new(pid))?;
        let here = s
            .map
            .relative(&main)
            .and_then(|r| layout::classify(&r))
            .map(|p| p.group);
        if here.as_deref() != Some(target.path().as_str()) && s.cg.exists(&target.path()) {
            let mut state = std::mem::take(&mut s.state);
            let r = Placer::new(&s.cg, &s.map, &s.proc).move_process(
                ProcessId::new(pid),
                target,
                Some(start),
                &mut state,
            );
            s.state = state;
            r?;
            s.state.why.insert(
                pid,
                Why {
                    pid: ProcessId::new(pid),
                    starttime: start,
                    by: rule_label(rule),
                    group: Some(target.path()),
                    class: None,
                    attrs: TaskAttrs::default(),
                    at: now(),
                },
            );
        }
    }
    let mut out = Vec::new();
    let Some(rule) = class_rule else {
        return Ok(out);
    };
    // Threads may carry a change inherited from their main thread only if that change was
    // made (and recorded) before this classification: one made below came after them.
    let inherited = s
        .state
        .attrs
        .get(&pid)
        .is_some_and(|r| r.starttime == start);
    let mut main_stat = Some(main_stat);
    for tid in s.proc.threads(ProcessId::new(pid))? {
        // The main thread's stat was read above: not again.
        let known = main_stat.take_if(|_| tid.get() == pid);
        match classify_thread_with(s, rules, rule, (pid, tid.get()), known, inherited) {
            Ok(Some(a)) => out.push(a),
            Ok(None) | Err(PlaceError::Gone(_)) => {}
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
    let (pid, tid) = (pid.get(), tid.get());
    let info = process_info(&s.proc, pid)?;
    let Some(rule) = rules.rule_for(&info) else {
        return Ok(ThreadOutcome::Thread(None));
    };
    if process_rematch_needed(&s.state, rules, rule, pid, &info.comm) {
        let applied = classify_process(s, rules, ProcessId::new(pid))?;
        return Ok(ThreadOutcome::Process(applied));
    }
    // A new or renamed thread: its process's main thread, if changed, was changed before.
    classify_thread_with(s, rules, rule, (pid, tid), None, true).map(ThreadOutcome::Thread)
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

fn classify_thread_with(
    s: &mut Session,
    rules: &RuleSet,
    rule: &Rule,
    (pid, tid): (u32, u32),
    known: Option<Stat>,
    inherited: bool,
) -> Result<Option<Applied>, PlaceError> {
    // The thread's one stat read on the rule path (`known`: the caller's): its name for the
    // rule, its identity for the class's move and records.
    let stat = match known {
        Some(st) => st,
        None => s.proc.stat(tid)?,
    };
    let comm = &stat.comm;
    let decision = rules.decide(rule, comm);
    let Some(class) = decision.class else {
        return Ok(None);
    };
    // As schedqos: rules change fair tasks only. A real-time or deadline thread that cgqos
    // did not make so (an audio thread) keeps its policy, cgroup and attributes.
    let ours = s.state.why.get(&tid).is_some_and(|w| {
        w.starttime == stat.start() && w.attrs.policy.is_some_and(|p| !crate::rules::is_fair(p))
    });
    if !ours && !sched::getattr(tid).is_ok_and(|a| crate::rules::is_fair(a.sched_policy)) {
        return Ok(None);
    }
    let key = resolve(pid, tid, &stat)?;
    let applied = apply_class_with(s, key, class, &rule_label(rule), inherited)?;
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
