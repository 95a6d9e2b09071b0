//! What the engine does on its own: process events, rescans, and forgetting tasks that
//! exited.

use crate::procfs::{ProcessId, ThreadId};

use super::Engine;

/// A task classified on an event, to classify again a little later: its process, and the
/// thread (`None`: the whole process).
pub type Recheck = (ProcessId, Option<ThreadId>);

/// When a task classified on an event is classified again, after the event. A program may
/// set its new threads' attributes itself after the events that announced them (Chromium
/// sets each thread's nice by its type, after naming it), and no event reports that.
pub const RECHECK_AFTER: [std::time::Duration; 2] = [
    std::time::Duration::from_millis(100),
    std::time::Duration::from_secs(1),
];

/// One process event, decoded. `tid` is the task the event is about, `pid` its process (the
/// kernel's tgid): a process's own event has `tid == pid.main_thread()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A new task. `parent` is the kernel's `real_parent`: for a process, the thread that
    /// forked it (whose attributes it starts with); for a thread, the parent of its process
    /// (not its creator).
    Fork {
        tid: ThreadId,
        pid: ProcessId,
        parent: ThreadId,
    },
    Exec {
        tid: ThreadId,
        pid: ProcessId,
    },
    Comm {
        tid: ThreadId,
        pid: ProcessId,
    },
    Exit {
        tid: ThreadId,
        pid: ProcessId,
    },
}

/// For each event, whether a later event of the batch classifies the same whole process
/// (a process's fork, its exec, a rename of its main thread): `/proc` is read when an event
/// is handled, not when it happened, so the earlier classification would read the same.
fn classified_later(events: &[Event]) -> Vec<bool> {
    let whole = |ev: &Event| match *ev {
        Event::Fork { tid, pid, .. } | Event::Comm { tid, pid } if tid == pid.main_thread() => {
            Some(pid)
        }
        Event::Exec { pid, .. } => Some(pid),
        _ => None,
    };
    let mut seen = std::collections::HashSet::new();
    let mut later = vec![false; events.len()];
    for (i, ev) in events.iter().enumerate().rev() {
        if let Some(pid) = whole(ev) {
            later[i] = !seen.insert(pid);
        }
    }
    later
}

impl Engine {
    /// Applies the rules to everything that runs (at start, after a reload, after lost events).
    /// Records of tasks that exited meanwhile (their exit events may be among the lost ones)
    /// are dropped first; threads born without a fork event get their original attributes
    /// from their likely creator's record (`classify::inherit_unrecorded`).
    pub fn rescan(&mut self) {
        self.forget_exited();
        let pids: Vec<ProcessId> = std::fs::read_dir(self.session.proc.root())
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .map(ProcessId::new)
            .collect();
        let mut inherited = 0;
        let mut classified = 0;
        for pid in pids {
            inherited += crate::classify::inherit_unrecorded(
                &mut self.session.state,
                &self.session.proc,
                pid,
            );
            if !self.loaded.rules.rules.is_empty() {
                classified += self.classify(pid, None).0;
            }
        }
        tracing::info!(
            "rescan: {classified} thread(s) classified by rules, {inherited} inherited original attributes"
        );
        self.save_quietly();
    }

    /// Handles a batch of process events. Returns the tasks it classified, to be classified
    /// again after each of [`RECHECK_AFTER`] ([`Engine::recheck`]).
    pub fn events(&mut self, events: &[Event]) -> Vec<Recheck> {
        let mut touched = 0;
        let mut rechecks = Vec::new();
        let later = classified_later(events);
        for (i, ev) in events.iter().enumerate() {
            // An attached VM's new or renamed thread goes to vcpu or io by its name.
            touched += self.vm_event(ev);
            // Whatever the rules: a task born from one cgqos changed inherited the change.
            // A process's fork event names its creating thread; a thread's names the
            // process's parent, so its creator is inferred within its process.
            if let Event::Fork {
                tid,
                pid: tgid,
                parent,
            } = *ev
            {
                let s = &mut self.session;
                let inherited = if tid == tgid.main_thread() {
                    // Born inside the groups from a creator cgqos moved: its origin too.
                    let origin = crate::classify::inherit_origin(s, parent, tgid);
                    crate::classify::inherit_original(&mut s.state, &s.proc, parent, tid, tgid)
                        || origin
                } else {
                    crate::classify::inherit_thread(&mut s.state, &s.proc, tid, tgid)
                };
                touched += usize::from(inherited);
            }
            match *ev {
                Event::Exit { tid, .. } => {
                    // The task is gone: whatever was recorded for its id is stale.
                    let (state, id) = (&mut self.session.state, tid.get());
                    let t = state.tasks.remove(&id).is_some();
                    let a = state.attrs.remove(&id).is_some();
                    let w = state.why.remove(&id).is_some();
                    touched += usize::from(t || a || w);
                }
                _ if self.loaded.rules.rules.is_empty() => {}
                // The process is classified again further on in this batch, from what /proc
                // shows then: once is enough (a fork followed by its exec, say).
                _ if later[i] => {}
                // A new process, an exec, or a rename of a main thread: the whole process
                // (its match may have changed).
                Event::Fork { tid, pid, .. } | Event::Comm { tid, pid }
                    if tid == pid.main_thread() =>
                {
                    touched += self.classify_noting((pid, None), &mut rechecks);
                }
                Event::Exec { pid, .. } => {
                    touched += self.classify_noting((pid, None), &mut rechecks);
                }
                // A new or renamed thread.
                Event::Fork { tid, pid, .. } | Event::Comm { tid, pid } => {
                    touched += self.classify_noting((pid, Some(tid)), &mut rechecks);
                }
            }
        }
        if touched > 0 {
            self.save_quietly();
        }
        rechecks.dedup();
        rechecks
    }

    /// Classifies again tasks classified on an event (see [`RECHECK_AFTER`]): a task that
    /// changed its own attributes since gets its class back, and what it set becomes its
    /// original (`classify::apply_class`). Only tasks that still have a rule's record: a
    /// `reset` (or the task's exit) in between cancels their recheck.
    pub fn recheck(&mut self, tasks: &[Recheck]) {
        if self.loaded.rules.rules.is_empty() {
            return;
        }
        let mut touched = 0;
        for &(pid, tid) in tasks {
            let id = tid.unwrap_or(pid.main_thread()).get();
            let ruled = self
                .session
                .state
                .why
                .get(&id)
                .is_some_and(|w| w.pid == pid && w.by.starts_with("rule "));
            if !ruled {
                continue;
            }
            // Most tasks still have what they were given: confirming it costs a
            // `sched_getattr` (and for a process, its names), not a classification.
            let rules = &self.loaded.rules;
            use crate::place::PlaceError::Gone;
            match crate::classify::still_applied(&self.session, rules, pid, tid) {
                Ok(true) | Err(Gone(_)) => {}
                _ => touched += self.classify(pid, tid).0,
            }
        }
        if touched > 0 {
            self.save_quietly();
        }
    }

    /// Classifies `task`; notes it for a recheck when a rule matched it: a process as a
    /// whole (its match) and each of its other classified threads on its own.
    fn classify_noting(&mut self, task: Recheck, rechecks: &mut Vec<Recheck>) -> usize {
        let (pid, tid) = task;
        let Some(outcome) = self.classify_outcome(pid, tid) else {
            return 0;
        };
        if outcome.matched() {
            rechecks.push(task);
            if tid.is_none() {
                let others = outcome.classified().filter(|&t| t != pid.main_thread());
                rechecks.extend(others.map(|t| (pid, Some(t))));
            }
        }
        outcome.changed()
    }

    /// Classifies a process (or one of its threads); a task that is gone is not an error.
    /// Returns how many tasks changed, and whether a rule gave any of them a class.
    fn classify(&mut self, pid: ProcessId, tid: Option<ThreadId>) -> (usize, bool) {
        self.classify_outcome(pid, tid)
            .map_or((0, false), |o| (o.changed(), o.matched()))
    }

    /// [`Engine::classify`]'s outcome; `None`: gone, or an error (logged).
    fn classify_outcome(
        &mut self,
        pid: ProcessId,
        tid: Option<ThreadId>,
    ) -> Option<crate::classify::ThreadOutcome> {
        use crate::classify::ThreadOutcome;
        let rules = std::mem::take(&mut self.loaded.rules);
        let r = match tid {
            None => crate::classify::classify_process(&mut self.session, &rules, pid)
                .map(ThreadOutcome::Process),
            Some(t) => crate::classify::classify_thread(&mut self.session, &rules, pid, t),
        };
        self.loaded.rules = rules;
        match r {
            Ok(o) => Some(o),
            Err(crate::place::PlaceError::Gone(_)) => None,
            Err(e) => {
                let tid = tid.unwrap_or(pid.main_thread());
                tracing::warn!(pid = pid.get(), tid = tid.get(), "rule not applied: {e}");
                None
            }
        }
    }

    fn save_quietly(&mut self) {
        if let Err(e) = self.session.save() {
            tracing::warn!("saving state: {e}");
        }
    }

    /// Drops state records of tasks that exited (bounded memory, whatever the history).
    pub fn forget_exited(&mut self) {
        let proc = &self.session.proc;
        let alive =
            |id: u32, st: crate::procfs::StartTime| proc.stat(id).is_ok_and(|s| s.start() == st);
        let state = &mut self.session.state;
        state.tasks.retain(|&id, r| alive(id, r.starttime));
        state.attrs.retain(|&id, r| alive(id, r.starttime));
        state.why.retain(|&id, r| alive(id, r.starttime));
        self.watched
            .retain(|pid| self.session.state.tasks.contains_key(pid));
    }

    /// Watched processes exited: forget them and their threads, with one save.
    pub fn processes_exited(&mut self, pids: &[u32]) {
        for pid in pids {
            self.watched.remove(pid);
        }
        let state = &mut self.session.state;
        let before = state.tasks.len() + state.attrs.len() + state.why.len();
        state.tasks.retain(|_, r| !pids.contains(&r.pid.get()));
        state.attrs.retain(|_, r| !pids.contains(&r.pid.get()));
        state.why.retain(|_, r| !pids.contains(&r.pid.get()));
        if state.tasks.len() + state.attrs.len() + state.why.len() != before {
            self.save_quietly();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_classified_again_later_in_the_batch_is_classified_once() {
        let events = [
            Event::Fork {
                tid: ThreadId::new(11),
                pid: ProcessId::new(11),
                parent: ThreadId::new(10),
            },
            Event::Fork {
                tid: ThreadId::new(12),
                pid: ProcessId::new(11),
                parent: ThreadId::new(10),
            },
            Event::Exec {
                tid: ThreadId::new(11),
                pid: ProcessId::new(11),
            },
            Event::Comm {
                tid: ThreadId::new(12),
                pid: ProcessId::new(11),
            },
            Event::Exec {
                tid: ThreadId::new(20),
                pid: ProcessId::new(20),
            },
            Event::Exit {
                tid: ThreadId::new(11),
                pid: ProcessId::new(11),
            },
        ];
        // The fork of 11 is classified by its exec; threads, exits and 20 each count.
        assert_eq!(
            classified_later(&events),
            [true, false, false, false, false, false]
        );
    }
}
