//! The daemon's state and request execution: one `Engine` behind a mutex, so requests apply
//! one at a time, and every acknowledged change is in the state file before the reply.

use std::collections::HashSet;
use std::path::PathBuf;

use serde_json::{Value, json};

use super::policy::{self, Action, Caller, Config};
use super::protocol::{Code, Reply, Request, TaskRef};
use crate::apply::{Outcome, apply};
use crate::board::{Board, BoardSource};
use crate::cgroupfs::CgroupFs;
use crate::error::{CliError, Exit};
use crate::layout::{self, Target};
use crate::ops::{self, Dest, Moved, Session, code_of};
use crate::place::{CgroupMap, Held, Placer};
use crate::plan::Plan;
use crate::procfs::{ProcError, ProcessId, Procfs};
use crate::state::StateDir;
use crate::topology::Topology;

/// Where the daemon's inputs live.
#[derive(Debug, Clone)]
pub struct Paths {
    pub sysfs: PathBuf,
    pub proc: PathBuf,
    pub cgroup_root: PathBuf,
    pub state_dir: PathBuf,
    pub config_dir: PathBuf,
    /// Where passwd and group are read (`/etc`).
    pub etc: PathBuf,
    pub board: BoardSource,
}

/// Everything derived from configuration; replaced as a whole on reload.
pub struct Loaded {
    pub config: Config,
    pub rules: crate::rules::RuleSet,
    pub board: Board,
    pub topology: Topology,
    pub plan: Plan,
}

pub struct Engine {
    pub paths: Paths,
    pub loaded: Loaded,
    pub session: Session,
    /// Processes with a pidfd exit watch.
    pub watched: HashSet<u32>,
    /// Whether the kernel has per-task uclamp (probed once at start).
    pub uclamp: bool,
}

fn fail(e: CliError) -> (Code, String) {
    (code_of(e.exit), e.message)
}

impl Engine {
    /// Reads configuration, board and topology, and plans: all or nothing.
    pub fn load(paths: &Paths) -> Result<Loaded, String> {
        let config = policy::load(&paths.config_dir, &paths.etc).map_err(|e| e.to_string())?;
        let rules = crate::rules::load::load_dir(&paths.config_dir).map_err(|e| e.to_string())?;
        let board = paths.board.load().map_err(|e| e.to_string())?;
        let topology = Topology::detect(&paths.sysfs).map_err(|e| e.to_string())?;
        let plan = Plan::build(&topology, &board).map_err(|e| e.to_string())?;
        Ok(Loaded {
            config,
            rules,
            board,
            topology,
            plan,
        })
    }

    pub fn start(paths: Paths) -> Result<Engine, CliError> {
        let loaded = Engine::load(&paths).map_err(CliError::bad_input)?;
        let cg = CgroupFs::new(&paths.cgroup_root);
        let proc = Procfs::new(&paths.proc);
        let map = CgroupMap::new(&paths.cgroup_root, &proc.mountinfo().unwrap_or_default());
        let sd = StateDir::lock(&paths.state_dir)?;
        let state = sd.load(&paths.cgroup_root)?;
        let mut engine = Engine {
            paths,
            loaded,
            session: Session {
                cg,
                map,
                proc,
                sd,
                state,
            },
            watched: HashSet::new(),
            uclamp: crate::sched::uclamp_supported(),
        };
        if !engine.uclamp {
            tracing::warn!(
                "this kernel has no per-task uclamp (CONFIG_UCLAMP_TASK): classes apply their other attributes only"
            );
        }
        engine.converge()?;
        engine.forget_exited();
        engine.session.save()?;
        Ok(engine)
    }

    /// Converges the tree to the plan (creating the root if needed) and re-applies
    /// restrictions. Unsupported settings are logged, not fatal.
    pub fn converge(&mut self) -> Result<(), CliError> {
        let root = &self.paths.cgroup_root;
        if !root.exists() {
            std::fs::create_dir(root).map_err(|e| {
                CliError::new(
                    Exit::KernelRefused,
                    format!("mkdir {}: {e}", root.display()),
                )
            })?;
            self.session.state.created_root = true;
        }
        let report = apply(
            &self.loaded.plan.steps,
            &self.session.cg,
            &self.paths.sysfs,
            false,
        )?;
        let mut unsupported = 0;
        for s in &report.steps {
            match &s.outcome {
                Outcome::Changed => tracing::info!("converge: {}", s.step),
                Outcome::Unsupported(_) => unsupported += 1,
                _ => {}
            }
        }
        if unsupported > 0 {
            tracing::warn!(
                "{unsupported} setting(s) not supported by this kernel (see `cgqos status`)"
            );
        }
        for (group, r) in &self.session.state.restrictions {
            if let Err(e) = ops::write_restriction(&self.session.cg, group, r) {
                tracing::warn!("restriction of {group} not re-applied: {e}");
            }
        }
        Ok(())
    }

    /// Re-reads configuration and converges; an invalid configuration keeps the old one.
    pub fn reload(&mut self, why: &str) -> Result<usize, (Code, String)> {
        match Engine::load(&self.paths) {
            Ok(loaded) => {
                let (old, new) = (&self.loaded.config, &loaded.config);
                if (
                    old.socket_mode,
                    old.socket_gid,
                    old.max_connections,
                    old.idle_timeout_secs,
                ) != (
                    new.socket_mode,
                    new.socket_gid,
                    new.max_connections,
                    new.idle_timeout_secs,
                ) {
                    tracing::warn!(
                        "socket.* and limits.* changed: they take effect when the daemon restarts"
                    );
                }
                self.loaded = loaded;
                self.converge().map_err(fail)?;
                self.session.save().map_err(fail)?;
                tracing::info!(
                    "reloaded ({why}): board {:?}, {} rule(s) from {} file(s)",
                    self.loaded.board.name,
                    self.loaded.rules.rules.len(),
                    self.loaded.rules.files.len()
                );
                // New rules apply to what already runs.
                self.rescan();
                Ok(self.loaded.plan.steps.len())
            }
            Err(e) => {
                tracing::error!(
                    "reload ({why}) refused, the previous configuration stays in force: {e}"
                );
                Err((Code::InvalidConfig, e))
            }
        }
    }

    /// Re-detects the CPUs (hotplug) and converges the cpusets.
    pub fn redetect(&mut self) {
        match Topology::detect(&self.paths.sysfs)
            .map_err(|e| e.to_string())
            .and_then(|t| {
                Plan::build(&t, &self.loaded.board)
                    .map(|p| (t, p))
                    .map_err(|e| e.to_string())
            }) {
            Ok((t, p)) => {
                let changed =
                    t.all != self.loaded.topology.all || t.little != self.loaded.topology.little;
                self.loaded.topology = t;
                self.loaded.plan = p;
                if changed {
                    tracing::info!(
                        "CPUs changed: all {}, little {}",
                        self.loaded.topology.all,
                        self.loaded.topology.little
                    );
                }
                if let Err(e) = self.converge() {
                    tracing::error!("converge after a CPU change failed: {e}");
                }
            }
            Err(e) => tracing::error!("re-detecting CPUs failed: {e}"),
        }
    }

    /// Undoes every change to tasks: scheduling attributes, then cgroups. The tree stays.
    pub fn reset(&mut self) -> crate::ops::ResetReport {
        crate::ops::reset(&mut self.session)
    }

    /// Applies the rules to everything that runs (at start, after a reload, after lost events).
    pub fn rescan(&mut self) {
        if self.loaded.rules.rules.is_empty() {
            return;
        }
        let pids: Vec<u32> = std::fs::read_dir(self.session.proc.root())
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        let mut classified = 0;
        for pid in pids {
            classified += self.classify(pid, None);
        }
        tracing::info!("rescan: {classified} thread(s) classified by rules");
        self.save_quietly();
    }

    /// Handles a batch of process events.
    pub fn events(&mut self, events: &[super::events::Event]) {
        use super::events::Event;
        let mut touched = 0;
        for ev in events {
            match *ev {
                Event::Exit { pid, .. } => {
                    // The task is gone: whatever was recorded for its id is stale.
                    let state = &mut self.session.state;
                    let t = state.tasks.remove(&pid).is_some();
                    let a = state.attrs.remove(&pid).is_some();
                    let w = state.why.remove(&pid).is_some();
                    touched += usize::from(t || a || w);
                }
                _ if self.loaded.rules.rules.is_empty() => {}
                // A new process, an exec, or a rename of a main thread: the whole process
                // (its match may have changed).
                Event::Fork { pid, tgid } | Event::Comm { pid, tgid } if pid == tgid => {
                    touched += self.classify(tgid, None)
                }
                Event::Exec { tgid, .. } => touched += self.classify(tgid, None),
                // A new or renamed thread.
                Event::Fork { pid, tgid } | Event::Comm { pid, tgid } => {
                    touched += self.classify(tgid, Some(pid))
                }
            }
        }
        if touched > 0 {
            self.save_quietly();
        }
    }

    /// Classifies a process (or one of its threads); a task that is gone is not an error.
    fn classify(&mut self, pid: u32, tid: Option<u32>) -> usize {
        let rules = std::mem::take(&mut self.loaded.rules);
        let r = match tid {
            None => crate::classify::classify_process(&mut self.session, &rules, pid, self.uclamp)
                .map(|v| v.iter().filter(|a| a.changed()).count()),
            Some(t) => {
                crate::classify::classify_thread(&mut self.session, &rules, pid, t, self.uclamp)
                    .map(|a| usize::from(a.is_some_and(|a| a.changed())))
            }
        };
        self.loaded.rules = rules;
        match r {
            Ok(n) => n,
            Err(crate::place::PlaceError::Gone(_)) => 0,
            Err(e) => {
                tracing::warn!(pid, tid = tid.unwrap_or(pid), "rule not applied: {e}");
                0
            }
        }
    }

    fn save_quietly(&self) {
        if let Err(e) = self.session.save() {
            tracing::warn!("saving state: {e}");
        }
    }

    /// Drops state records of tasks that exited (bounded memory, whatever the history).
    pub fn forget_exited(&mut self) {
        let proc = &self.session.proc;
        let alive = |id: u32, st: u64| proc.stat(id).is_ok_and(|s| s.starttime == st);
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
        state.tasks.retain(|_, r| !pids.contains(&r.pid));
        state.attrs.retain(|_, r| !pids.contains(&r.pid));
        state.why.retain(|_, r| !pids.contains(&r.pid));
        if state.tasks.len() + state.attrs.len() + state.why.len() != before {
            self.save_quietly();
        }
    }

    /// Executes one authenticated request. Returns the reply and the processes that now
    /// want an exit watch.
    pub fn handle(
        &mut self,
        caller: &Caller,
        id: Value,
        req: &Request,
    ) -> (Reply, Vec<(u32, u64)>) {
        let mut watch = Vec::new();
        let result = self.execute(caller, req, &mut watch);
        let reply = match result {
            Ok(v) => Reply::ok(id, v),
            Err((code, msg)) => Reply::err(id, code, msg),
        };
        (reply, watch)
    }

    fn authorize(&self, caller: &Caller, action: &Action) -> Result<(), (Code, String)> {
        self.loaded
            .config
            .authorize(caller, action)
            .map_err(|m| (Code::Denied, m))
    }

    fn execute(
        &mut self,
        caller: &Caller,
        req: &Request,
        watch: &mut Vec<(u32, u64)>,
    ) -> Result<Value, (Code, String)> {
        match req {
            Request::Ping => Ok(json!({"pong": true, "version": env!("CARGO_PKG_VERSION")})),
            Request::Status => {
                self.authorize(caller, &Action::Read)?;
                let s = ops::status(&self.session.cg, &self.loaded.board, &self.loaded.plan);
                Ok(value(&s))
            }
            Request::Where { pid } => {
                self.authorize(caller, &Action::Read)?;
                let placer = Placer::new(&self.session.cg, &self.session.map, &self.session.proc);
                let t = placer.locate(ProcessId(*pid)).map_err(|e| fail(e.into()))?;
                Ok(value(&t))
            }
            Request::Move { group, targets } => {
                let target = Target::parse(group).map_err(|e| (Code::InvalidTarget, e))?;
                let (pgroup, class) = match &target {
                    Target::Vm { name, part } => (format!("{}/{name}", layout::VMS), part.clone()),
                    t => (t.path(), None),
                };
                self.authorize(
                    caller,
                    &Action::Place {
                        group: &pgroup,
                        class: class.as_deref(),
                    },
                )?;
                // A reservation may name the part itself (`arcvm-vcpu`, `vms/x/io`).
                if class.is_some() {
                    self.authorize(
                        caller,
                        &Action::Place {
                            group: &target.path(),
                            class: None,
                        },
                    )?;
                }
                let moved = self.move_checked(caller, &Dest::Group(target), targets, |_| Ok(()));
                self.finish_moves(moved, watch)
            }
            Request::MoveThreads { class, targets } => {
                let by = format!(
                    "request from uid {} (pid {})",
                    caller.uid,
                    caller.pid.unwrap_or(0)
                );
                let dest = ops::thread_dest(class, &self.loaded.rules.classes, self.uclamp, by)
                    .map_err(|e| (Code::InvalidTarget, e))?;
                // The policy sees the class by its own name (whatever alias was asked for)
                // and where it puts the thread.
                let (canonical, cgroup_class) = match &dest {
                    Dest::ThreadClass { class, .. } => (
                        class.name.clone(),
                        class.cgroup_class.layout_class().unwrap_or("default"),
                    ),
                    _ => (class.clone(), class.as_str()),
                };
                let config = self.loaded.config.clone();
                let map = self.session.map.clone();
                let proc = self.session.proc.clone();
                // Each thread's own process group decides what the class means there.
                let check = move |t: &TaskRef| -> Result<(), (Code, String)> {
                    let tgid = proc.tgid(t.id).map_err(proc_fail)?;
                    let cgroup = proc
                        .cgroup(ProcessId(tgid), crate::procfs::ThreadId(t.id))
                        .map_err(proc_fail)?;
                    let group = map
                        .relative(&cgroup)
                        .and_then(|r| layout::classify(&r))
                        .map(|p| p.group)
                        .unwrap_or_default();
                    for c in [canonical.as_str(), cgroup_class] {
                        config
                            .authorize(
                                caller,
                                &Action::Place {
                                    group: &group,
                                    class: Some(c),
                                },
                            )
                            .map_err(|m| (Code::Denied, m))?;
                    }
                    Ok(())
                };
                let moved = self.move_checked(caller, &dest, targets, check);
                self.finish_moves(moved, watch)
            }
            Request::VmAdd { name } => {
                self.authorize(
                    caller,
                    &Action::ChangeGroup {
                        group: &format!("{}/{name}", layout::VMS),
                    },
                )?;
                let added = ops::vm_add(
                    &mut self.session,
                    &self.loaded.board,
                    &self.loaded.plan,
                    &self.paths.sysfs,
                    name,
                )
                .map_err(fail)?;
                self.session.save().map_err(fail)?;
                Ok(value(&added))
            }
            Request::VmRemove { name } => {
                self.authorize(
                    caller,
                    &Action::ChangeGroup {
                        group: &format!("{}/{name}", layout::VMS),
                    },
                )?;
                let r = ops::vm_remove(&mut self.session, name);
                self.session.save().map_err(fail)?;
                Ok(value(&r.map_err(fail)?))
            }
            Request::Restrict {
                group,
                state,
                quota_percent,
            } => {
                let path = Target::parse(group)
                    .map_err(|e| (Code::InvalidTarget, e))?
                    .path();
                self.authorize(caller, &Action::ChangeGroup { group: &path })?;
                let r = ops::restrict(
                    &mut self.session,
                    &self.loaded.board,
                    group,
                    *state,
                    *quota_percent,
                )
                .map_err(fail)?;
                self.session.save().map_err(fail)?;
                Ok(json!({"group": path, "cpu_weight": r.weight, "cpu_max": r.cpu_max}))
            }
            Request::Reload => {
                self.authorize(caller, &Action::Reload)?;
                let steps = self.reload("request")?;
                Ok(json!({"reloaded": true, "steps": steps}))
            }
            Request::Reset => {
                self.authorize(caller, &Action::Reload)?;
                let r = self.reset();
                self.session.save().map_err(fail)?;
                Ok(value(&r))
            }
        }
    }

    /// Holds each target by a pidfd, checks its owner (and `extra`) while held, then moves
    /// the ones allowed, still held; refusals are per target.
    fn move_checked(
        &mut self,
        caller: &Caller,
        dest: &Dest,
        targets: &[TaskRef],
        extra: impl Fn(&TaskRef) -> Result<(), (Code, String)>,
    ) -> Vec<Moved> {
        let mut allowed = Vec::new();
        let mut refused = Vec::new();
        for t in targets {
            match self
                .check_target(caller, dest, t)
                .and_then(|held| extra(t).map(|()| held))
                .and_then(|held| {
                    // `extra` read /proc too: still the held task?
                    if held.still_there(&self.session.proc) {
                        Ok(held)
                    } else {
                        Err(gone(t.id))
                    }
                }) {
                Ok(held) => allowed.push(ops::Task::Held(held)),
                Err((code, message)) => refused.push(Moved {
                    id: t.id,
                    ok: false,
                    error: Some(message),
                    code: Some(code),
                    threads: vec![],
                }),
            }
        }
        let mut moved = ops::move_held(&mut self.session, dest, allowed);
        moved.extend(refused);
        // Replies come in the order of the request's targets.
        let order = |id: u32| {
            targets
                .iter()
                .position(|t| t.id == id)
                .unwrap_or(usize::MAX)
        };
        moved.sort_by_key(|m| order(m.id));
        moved
    }

    /// Holds the target by a pidfd, then checks that its owner may be touched by the
    /// caller: every read is of the held task, and the move that follows writes its id
    /// while still holding it, so it hits the process that was checked, not a successor
    /// (even one started within the same 10 ms tick).
    fn check_target(
        &self,
        caller: &Caller,
        dest: &Dest,
        t: &TaskRef,
    ) -> Result<Held, (Code, String)> {
        let proc = &self.session.proc;
        let held = ops::hold(proc, dest, t).map_err(|e| fail(e.into()))?;
        let owner = proc.ruid(t.id).map_err(proc_fail)?;
        if !held.still_there(proc) {
            return Err(gone(t.id));
        }
        self.loaded
            .config
            .may_touch(caller, owner)
            .map_err(|m| (Code::Denied, m))?;
        Ok(held)
    }

    fn finish_moves(
        &mut self,
        moved: Vec<Moved>,
        watch: &mut Vec<(u32, u64)>,
    ) -> Result<Value, (Code, String)> {
        // Acknowledged means recorded: the state is on disk before the reply leaves.
        self.session.save().map_err(fail)?;
        for m in moved.iter().filter(|m| m.ok) {
            let pid = match self.session.proc.tgid(m.id) {
                Ok(p) => p,
                Err(_) => continue,
            };
            if let (false, Some(rec)) = (
                self.watched.contains(&pid),
                self.session.state.tasks.get(&pid),
            ) {
                watch.push((pid, rec.starttime));
                self.watched.insert(pid);
            }
        }
        Ok(value(&moved))
    }
}

fn gone(id: u32) -> (Code, String) {
    (
        Code::NoSuchProcess,
        format!("no such process or thread {id} (it exited)"),
    )
}

fn proc_fail(e: ProcError) -> (Code, String) {
    match e {
        ProcError::Gone(id) => (
            Code::NoSuchProcess,
            format!("no such process or thread {id}"),
        ),
        other => (Code::Internal, other.to_string()),
    }
}

fn value<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("results serialise")
}
