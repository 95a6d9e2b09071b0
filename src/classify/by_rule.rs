//! Rules applied to live processes: a process (or one thread) matched by its names, moved
//! to its rule's group and each thread given its class, every task held while it is read and
//! written.

use super::*;

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

    /// The threads a rule gave a class.
    pub fn classified(&self) -> impl Iterator<Item = ThreadId> + '_ {
        let all = match self {
            ThreadOutcome::Thread(a) => a.as_slice(),
            ThreadOutcome::Process(v) => v.as_slice(),
        };
        all.iter().map(|a| ThreadId::new(a.tid))
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

/// Whether a task classified by a rule still has what the rule gave it, so that classifying
/// it again would change nothing (a recheck, `daemon::engine`): the thread's attributes are
/// what its `why` record says were applied (one `sched_getattr`); for a process (`tid`
/// `None`), its main thread's, and the same rule still matches it (its names read again: a
/// rewritten command line has no event). Its other threads are rechecked one by one (the
/// caller's list, from the classification). Cgroups are not read: a recheck is for
/// attributes a program sets itself, which no event reports. `false` means: classify it
/// again. A task that is gone needs nothing.
pub fn still_applied(
    s: &Session,
    rules: &RuleSet,
    pid: ProcessId,
    tid: Option<ThreadId>,
) -> Result<bool, PlaceError> {
    let in_force = |tid: ThreadId, label: Option<&str>| -> bool {
        let Some(w) = s.state.why.get(&tid.get()) else {
            return false;
        };
        if w.pid != pid || label.is_some_and(|l| w.by != l) {
            return false;
        }
        match sched::getattr(tid.get()) {
            Ok(cur) => !wants_change(&cur, &w.attrs, sched::Support::get().uclamp),
            // Gone: nothing to apply (its exit event drops the record).
            Err(e) => e.raw_os_error() == Some(libc::ESRCH),
        }
    };
    if let Some(tid) = tid {
        return Ok(in_force(tid, None));
    }
    let info = process_info_for(&s.proc, pid.get(), rules)?;
    let Some(rule) = rules.rule_for(&info) else {
        return Ok(false);
    };
    if rules.group_rule_for(&info).is_some_and(|g| g.at != rule.at) {
        return Ok(false);
    }
    Ok(in_force(pid.main_thread(), Some(&rule_label(rule))))
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
