//! Moving a process (each thread keeping its class) or one thread to a class.

use crate::cgroupfs::{CgroupBackend, FsError, Refusal, files};
use crate::layout::{self, Placement, Target};
use crate::procfs::{ProcError, ProcessId, StartTime, TaskSource, ThreadId};
use crate::state::{Record, State};

use super::{Held, PlaceError, Placer, ThreadPlace, gone_or_kernel, test_pause};

impl<B: CgroupBackend, P: TaskSource> Placer<'_, B, P> {
    /// Moves a whole process into `target`, each thread keeping its class.
    pub fn move_process(
        &mut self,
        pid: ProcessId,
        target: &Target,
        expected: Option<StartTime>,
        state: &mut State,
    ) -> Result<Vec<ThreadPlace>, PlaceError> {
        let held = Held::process(self.proc, pid, expected)?;
        self.move_held_process(&held, target, state)
    }

    /// Moves a held process into `target`, each thread keeping its class.
    pub fn move_held_process(
        &mut self,
        held: &Held,
        target: &Target,
        state: &mut State,
    ) -> Result<Vec<ThreadPlace>, PlaceError> {
        self.move_held_process_from(held, None, target, state)
    }

    /// `move_held_process`, given the main thread's cgroup when the caller read it while
    /// holding the process.
    pub fn move_held_process_from(
        &mut self,
        held: &Held,
        mut main_cgroup: Option<String>,
        target: &Target,
        state: &mut State,
    ) -> Result<Vec<ThreadPlace>, PlaceError> {
        let pid = held.key().pid();
        let group = target.path();
        // One read per thread: its cgroup (the class to keep). Threads that exit meanwhile
        // are simply not there.
        let mut before: Vec<(ThreadId, String)> = Vec::new();
        // A process that had one thread when held has no thread for `task/`'s readdir to
        // skip: its main thread is the list (a thread born since is where its creator is,
        // and the write takes it along, as it would one born just after a listing).
        let threads = if held.stat.num_threads == 1 {
            vec![pid.main_thread()]
        } else {
            self.proc.threads(pid)?
        };
        for tid in threads {
            let known = main_cgroup.take_if(|_| tid == pid.main_thread());
            match known.map_or_else(|| self.proc.cgroup(pid, tid), Ok) {
                Ok(c) => before.push((tid, c)),
                Err(ProcError::Gone(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let main_cgroup = before
            .iter()
            .find(|(t, _)| t.get() == pid.get())
            .map(|(_, c)| c.clone())
            .ok_or(PlaceError::Gone(pid.get()))?;
        // The last check before the write: the reads above were of the held process.
        if !held.still_there(self.proc) {
            return Err(PlaceError::Gone(pid.get()));
        }
        test_pause(pid.get());
        if let Err(e) = self.attach(
            &self.cg.path(&format!("{group}/{}", files::PROCS)),
            pid.get(),
        ) {
            // Asked only now: a group in use has its file open already.
            if e.refusal() == Refusal::Missing && !self.cg.exists(&group) {
                return Err(PlaceError::NotSetUp(group));
            }
            return Err(self.refused(held, e));
        }
        if !held.still_there(self.proc) {
            // It exited around the write: what moved may be a stranger with its id.
            self.put_back_stranger(held, &group, true);
            return Err(PlaceError::Gone(pid.get()));
        }
        self.record_process(held, &main_cgroup, &before, state);
        self.keep_classes(pid, target, &group, &before)
    }

    /// Records a process the write moved and its threads that lived apart from it.
    fn record_process(
        &self,
        held: &Held,
        main_cgroup: &str,
        before: &[(ThreadId, String)],
        state: &mut State,
    ) {
        let pid = held.key().pid();
        // Recorded once the write is known to have hit the held process (in memory; the
        // caller saves before it reports success).
        state.remember(
            pid.main_thread(),
            Record {
                pid,
                starttime: held.key().start(),
                original: self.map.dir_of(main_cgroup),
                process: true,
            },
        );
        // Threads living apart from their process (another threaded group) are recorded
        // one by one, so teardown can put them back there.
        for (tid, cgroup) in before
            .iter()
            .filter(|(t, c)| *t != pid.main_thread() && c != main_cgroup)
        {
            if let Ok(ts) = self.proc.stat(tid.get()) {
                state.remember(
                    *tid,
                    Record {
                        pid,
                        starttime: ts.start(),
                        original: self.map.dir_of(cgroup),
                        process: false,
                    },
                );
            }
        }
    }

    /// Puts each moved thread that had a class of `target` back in that class; reports
    /// where every thread now is.
    fn keep_classes(
        &mut self,
        pid: ProcessId,
        target: &Target,
        group: &str,
        before: &[(ThreadId, String)],
    ) -> Result<Vec<ThreadPlace>, PlaceError> {
        let classes = target.classes();
        let group_cgroup = self.cgroup_path(group);
        // As `where` reports it: a VM part (`vms/x/vcpu`) is the VM's group and that class.
        let (shown_group, shown_class) = match layout::classify(group) {
            Some(p) => (p.group, p.class),
            None => (group.to_string(), None),
        };
        let mut after = Vec::with_capacity(before.len());
        for (tid, cgroup) in before {
            let class = self
                .map
                .relative(cgroup)
                .and_then(|r| layout::classify(&r))
                .and_then(|p| p.class)
                .filter(|c| classes.contains(&c.as_str()));
            let mut place = ThreadPlace {
                tid: *tid,
                comm: String::new(),
                cgroup: group_cgroup.clone(),
                group: Some(shown_group.clone()),
                class: Some(
                    class
                        .clone()
                        .or_else(|| shown_class.clone())
                        .unwrap_or_else(|| "default".into()),
                ),
            };
            if let Some(class) = class {
                let file = self.cg.path(&format!("{group}/{class}/{}", files::THREADS));
                match self.attach(&file, tid.get()) {
                    Ok(()) => place.cgroup = format!("{group_cgroup}/{class}"),
                    Err(e) if e.refusal() == Refusal::Gone => continue,
                    // Refused, but no longer a thread of this process: it exited, and the
                    // kernel refused whoever has its id now.
                    Err(_)
                        if matches!(
                            self.proc.task_stat(pid.get(), tid.get()),
                            Err(ProcError::Gone(_))
                        ) =>
                    {
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            after.push(place);
        }
        Ok(after)
    }

    /// What a refused write means: if the held task is gone, the kernel refused someone
    /// else (a stranger with its id), so the answer is that it exited.
    fn refused(&self, held: &Held, e: FsError) -> PlaceError {
        if held.still_there(self.proc) {
            gone_or_kernel(held.id())(e)
        } else {
            PlaceError::Gone(held.id())
        }
    }

    /// After a write of `held`'s id to `dest` whose task turned out to have exited: if the
    /// id now names another live task sitting in `dest`, the write may have moved it. It
    /// appeared after our last check, an instant before the write, so it was where it was
    /// born (fork and clone place a task in its creator's group): a new process in its
    /// parent's group, a new thread in its process leader's. Put it back there; nothing is
    /// recorded for it. Best effort: every outcome is logged, the move reports `Gone`.
    fn put_back_stranger(&mut self, held: &Held, dest: &str, process: bool) {
        let id = held.id();
        let Ok(st) = self.proc.stat(id) else {
            return; // Nobody has the id: nothing alive was moved.
        };
        if matches!(st.state, 'Z' | 'X') {
            return; // The held task's remains (or a stranger's): nothing to run elsewhere.
        }
        let Ok(tgid) = self.proc.tgid(id) else { return };
        let dest_cgroup = self.cgroup_path(dest);
        match self.proc.cgroup(ProcessId::new(tgid), ThreadId::new(id)) {
            Ok(now) if now == dest_cgroup => {}
            // Not where we wrote: our write did not put it there.
            _ => return,
        }
        // A process write of a thread's id moves that thread's whole process.
        let (moved, file) = if process {
            (tgid, files::PROCS)
        } else {
            (id, files::THREADS)
        };
        let born_in = if moved == tgid {
            self.proc.stat(tgid).ok().and_then(|s| {
                self.proc
                    .cgroup(ProcessId::new(s.ppid), ThreadId::new(s.ppid))
                    .ok()
            })
        } else {
            self.proc
                .cgroup(ProcessId::new(tgid), ThreadId::new(tgid))
                .ok()
        };
        let dir = match born_in {
            Some(c) if c == dest_cgroup => return, // Born there: it never moved.
            Some(c) => self.map.dir_of(&c),
            // Its parent is gone too: where teardown sends tasks of unknown origin.
            None => self.map.fallback(),
        };
        match self.attach(&dir.join(file), moved) {
            Ok(()) => tracing::warn!(
                id,
                "id {id} was reused during a move: put task {moved} (started at {}) back in {}",
                st.starttime,
                dir.display()
            ),
            Err(e) if e.refusal() == Refusal::Gone => {}
            Err(e) => tracing::warn!(
                id,
                "id {id} was reused during a move; task {moved} could not be put back: {e}"
            ),
        }
    }

    /// Moves one thread to a class of its current process group (`None`: the default).
    pub fn move_thread(
        &mut self,
        tid: ThreadId,
        class: Option<&str>,
        expected: Option<StartTime>,
        state: &mut State,
    ) -> Result<ThreadPlace, PlaceError> {
        let held = Held::thread(self.proc, tid, expected)?;
        self.move_held_thread(&held, class, state)
    }

    /// Moves a held thread to a class of its current process group (`None`: the default).
    pub fn move_held_thread(
        &mut self,
        held: &Held,
        class: Option<&str>,
        state: &mut State,
    ) -> Result<ThreadPlace, PlaceError> {
        let key = held.key();
        let cgroup = self.proc.cgroup(key.pid(), key.tid())?;
        self.move_held_thread_from(held, cgroup, class, state)
    }

    /// `move_held_thread` of a thread whose cgroup the caller read while holding it.
    pub fn move_held_thread_from(
        &mut self,
        held: &Held,
        cgroup: String,
        class: Option<&str>,
        state: &mut State,
    ) -> Result<ThreadPlace, PlaceError> {
        let key = held.key();
        let (tid, tgid) = (key.tid(), key.pid().get());
        let Some(Placement { group, .. }) = self
            .map
            .relative(&cgroup)
            .and_then(|r| layout::classify(&r))
        else {
            return Err(PlaceError::NotInGroup {
                tid: tid.get(),
                tgid,
                cgroup,
            });
        };
        let allowed = layout::classes_of(&group);
        if let Some(c) = class {
            if !allowed.contains(&c) {
                return Err(PlaceError::WrongClass {
                    class: c.into(),
                    group,
                    allowed: format!("{}, default", allowed.join(", ")),
                });
            }
        }
        let dest = match class {
            Some(c) => format!("{group}/{c}"),
            None => group.clone(),
        };
        // The last check before the write: the cgroup read above was the held thread's.
        if !held.still_there(self.proc) {
            return Err(PlaceError::Gone(tid.get()));
        }
        test_pause(tid.get());
        if let Err(e) = self.attach(
            &self.cg.path(&format!("{dest}/{}", files::THREADS)),
            tid.get(),
        ) {
            return Err(self.refused(held, e));
        }
        if !held.still_there(self.proc) {
            self.put_back_stranger(held, &dest, false);
            return Err(PlaceError::Gone(tid.get()));
        }
        state.remember(
            tid,
            Record {
                pid: key.pid(),
                starttime: key.start(),
                original: self.map.dir_of(&cgroup),
                process: false,
            },
        );
        Ok(ThreadPlace {
            tid,
            comm: held.stat.comm.clone(),
            // Where the write put it: no need to read it back.
            cgroup: self.cgroup_path(&dest),
            group: Some(group),
            class: Some(class.unwrap_or("default").into()),
        })
    }
}
