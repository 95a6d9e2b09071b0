//! The daemon's state and request execution: one `Engine` behind a mutex, so requests apply
//! one at a time, and every acknowledged change is in the state file before the reply.

use std::collections::{HashMap, HashSet};
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
}

/// Why a configuration could not be loaded: the whole message (for root and the log) and the
/// files whose content it may quote, so a caller who could not read them is not shown it.
#[derive(Debug, Clone)]
pub struct LoadError {
    pub message: String,
    /// `file:line:col`, when the error has one.
    pub at: Option<String>,
    /// Files whose content the message may quote.
    pub quotes: Vec<PathBuf>,
}

impl LoadError {
    fn yaml(e: crate::board::yaml::YamlError) -> LoadError {
        LoadError {
            message: e.to_string(),
            at: Some(e.at.to_string()),
            quotes: vec![PathBuf::from(&*e.at.file)],
        }
    }

    fn quoting(e: impl std::fmt::Display, quotes: Vec<PathBuf>) -> LoadError {
        LoadError {
            message: e.to_string(),
            at: None,
            quotes,
        }
    }

    /// What `caller` is told: everything when it could read every file the message may
    /// quote; otherwise where, and that the details are in the daemon's log.
    pub fn for_caller(&self, caller: &Caller) -> String {
        let hidden: Vec<String> = self
            .quotes
            .iter()
            .filter(|f| !crate::config_read::readable_by(f, caller.uid, &caller.gids))
            .map(|f| f.display().to_string())
            .collect();
        if caller.is_root() || hidden.is_empty() {
            return self.message.clone();
        }
        format!(
            "{}invalid configuration; the message quotes {}, which uid {} may not read: see the daemon's log",
            self.at
                .as_ref()
                .map(|a| format!("{a}: "))
                .unwrap_or_default(),
            hidden.join(", "),
            caller.uid
        )
    }
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<LoadError> for String {
    fn from(e: LoadError) -> String {
        e.message
    }
}

fn fail(e: CliError) -> (Code, String) {
    (code_of(e.exit), e.message)
}

impl Engine {
    /// Reads configuration, board and topology, and plans: all or nothing. Reads files only:
    /// the daemon runs it without holding the engine (`watch::reload`).
    pub fn load(paths: &Paths) -> Result<Loaded, LoadError> {
        // The classes first: the policy may name any of them.
        let rules = crate::rules::load::load_dir(&paths.config_dir).map_err(LoadError::yaml)?;
        let config =
            policy::load(&paths.config_dir, &paths.etc, &rules.classes).map_err(LoadError::yaml)?;
        let board = paths.board.load().map_err(|e| match e {
            crate::board::BoardError::Yaml(y) => LoadError::yaml(y),
            e => LoadError::quoting(e.to_string(), paths.board.files()),
        })?;
        let topology = Topology::detect(&paths.sysfs).map_err(|e| LoadError::quoting(e, vec![]))?;
        // Plan errors quote board values.
        let plan = Plan::build(&topology, &board)
            .map_err(|e| LoadError::quoting(e, paths.board.files()))?;
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
        };
        if !crate::sched::Support::get().uclamp {
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
        let before = crate::apply::sysfs_before(&self.loaded.plan.steps, &self.paths.sysfs);
        let report = apply(
            &self.loaded.plan.steps,
            &self.session.cg,
            &self.paths.sysfs,
            false,
        )?;
        crate::apply::remember_sysfs(&report, &self.paths.sysfs, &before, &mut self.session.state);
        crate::apply::remember_created(&report, &mut self.session.state);
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

    /// Re-reads configuration and converges; an invalid configuration keeps the old one. This
    /// reads files with the engine held: the daemon uses `watch::reload`, which does not.
    pub fn reload(&mut self, why: &str) -> Result<usize, (Code, String)> {
        let loaded = Engine::load(&self.paths);
        self.install(loaded, why)
            .map_err(|e| (e.0, e.1.to_string()))
    }

    /// Replaces the configuration with a freshly loaded one and converges; a failed load keeps
    /// the old configuration (and is logged in full).
    pub fn install(
        &mut self,
        loaded: Result<Loaded, LoadError>,
        why: &str,
    ) -> Result<usize, (Code, LoadError)> {
        match loaded {
            Ok(loaded) => {
                let (old, new) = (&self.loaded.config, &loaded.config);
                if (
                    old.socket_mode,
                    old.socket_gid,
                    old.max_connections,
                    old.max_connections_per_user,
                    old.idle_timeout_secs,
                ) != (
                    new.socket_mode,
                    new.socket_gid,
                    new.max_connections,
                    new.max_connections_per_user,
                    new.idle_timeout_secs,
                ) {
                    tracing::warn!(
                        "socket.* and limits.* changed: they take effect when the daemon restarts"
                    );
                }
                self.loaded = loaded;
                let plain = |(code, msg): (Code, String)| (code, LoadError::quoting(msg, vec![]));
                self.converge().map_err(fail).map_err(plain)?;
                self.session.save().map_err(fail).map_err(plain)?;
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

    /// The paths to reload from, if `caller` may reload.
    pub fn reload_paths(&self, caller: &Caller) -> Result<Paths, (Code, String)> {
        self.authorize(caller, &Action::Reload)?;
        Ok(self.paths.clone())
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
    /// Records of tasks that exited meanwhile (their exit events may be among the lost ones)
    /// are dropped first; threads born without a fork event get their original attributes
    /// from their likely creator's record (`classify::inherit_unrecorded`).
    pub fn rescan(&mut self) {
        self.forget_exited();
        let pids: Vec<u32> = std::fs::read_dir(self.session.proc.root())
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
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
                classified += self.classify(pid, None);
            }
        }
        tracing::info!(
            "rescan: {classified} thread(s) classified by rules, {inherited} inherited original attributes"
        );
        self.save_quietly();
    }

    /// Handles a batch of process events.
    pub fn events(&mut self, events: &[super::events::Event]) {
        use super::events::Event;
        let mut touched = 0;
        for ev in events {
            // Whatever the rules: a task born from one cgqos changed inherited the change.
            // A process's fork event names its creating thread; a thread's names the
            // process's parent, so its creator is inferred within its process.
            if let Event::Fork { pid, tgid, parent } = *ev {
                let s = &mut self.session;
                let inherited = if pid == tgid {
                    crate::classify::inherit_original(&mut s.state, &s.proc, parent, pid, tgid)
                } else {
                    crate::classify::inherit_thread(&mut s.state, &s.proc, pid, tgid)
                };
                touched += usize::from(inherited);
            }
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
                Event::Fork { pid, tgid, .. } | Event::Comm { pid, tgid } if pid == tgid => {
                    touched += self.classify(tgid, None)
                }
                Event::Exec { tgid, .. } => touched += self.classify(tgid, None),
                // A new or renamed thread.
                Event::Fork { pid, tgid, .. } | Event::Comm { pid, tgid } => {
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
            None => crate::classify::classify_process(&mut self.session, &rules, pid)
                .map(|v| v.iter().filter(|a| a.changed()).count()),
            Some(t) => crate::classify::classify_thread(&mut self.session, &rules, pid, t)
                .map(|a| usize::from(a.is_some_and(|a| a.changed()))),
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
                let by = format!(
                    "request from uid {} (pid {})",
                    caller.uid,
                    caller.pid.unwrap_or(0)
                );
                let s = &mut self.session;
                crate::classify::record_moves(&mut s.state, &s.proc, &moved, &by, true);
                self.finish_moves(moved, watch)
            }
            Request::MoveThreads { class, targets } => {
                let by = format!(
                    "request from uid {} (pid {})",
                    caller.uid,
                    caller.pid.unwrap_or(0)
                );
                let dest = ops::thread_dest(class, &self.loaded.rules.classes, by)
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
                // A class's task attributes go as far as the caller could go itself, unless
                // granted: its limits (read once; a caller that is gone has none) and what
                // each thread had before cgqos first changed it.
                let attrs = match &dest {
                    Dest::ThreadClass { class, .. } if !caller.is_root() => {
                        Some(class.attrs).filter(|a| !a.is_empty())
                    }
                    _ => None,
                };
                let own = attrs.map(|_| caller_limits(&proc, caller));
                let originals: HashMap<u32, (u64, policy::Sched)> = attrs
                    .map(|_| {
                        targets
                            .iter()
                            .filter_map(|t| {
                                let r = self.session.state.attrs.get(&t.id)?;
                                Some((t.id, (r.starttime, policy::Sched::recorded(&r.original)?)))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let uclamp = crate::sched::Support::get().uclamp;
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
                    if let (Some(a), Some((limits, note))) = (&attrs, &own) {
                        let beyond = within_own(&proc, t.id, a, *limits, &originals, uclamp)?
                            .map_err(|why| format!("{why}{note}"));
                        config
                            .authorize_class(caller, &canonical, beyond)
                            .map_err(|m| (Code::Denied, m))?;
                    }
                    Ok(())
                };
                let moved = self.move_checked(caller, &dest, targets, check);
                if let Dest::Class(_) = dest {
                    // Thread classes record their own why; VM classes are recorded here.
                    let by = format!(
                        "request from uid {} (pid {})",
                        caller.uid,
                        caller.pid.unwrap_or(0)
                    );
                    let s = &mut self.session;
                    crate::classify::record_moves(&mut s.state, &s.proc, &moved, &by, false);
                }
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
            // The server reloads through `watch::reload_request` (files read outside the
            // engine); this is the same, with the engine held.
            Request::Reload => {
                self.authorize(caller, &Action::Reload)?;
                let loaded = Engine::load(&self.paths);
                let steps = self
                    .install(loaded, "request")
                    .map_err(|(code, e)| (code, e.for_caller(caller)))?;
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

/// The caller's soft RLIMIT_NICE and RLIMIT_RTPRIO from `/proc/<pid>/limits`, and a note for
/// refusals when they could not be read: then it has none. The pid (from SO_PEERCRED) must
/// still be a process of the caller's uid, or it may be someone else's by now.
fn caller_limits(proc: &Procfs, caller: &Caller) -> (policy::Limits, String) {
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
/// to thread `tid` itself. The kernel checks the target's own limits (task_rlimit of the
/// target), so the lower of the caller's and the thread's process's applies. The outer
/// error is a thread that vanished; the inner one names the attribute beyond.
fn within_own(
    proc: &Procfs,
    tid: u32,
    attrs: &crate::sched::TaskAttrs,
    caller: policy::Limits,
    originals: &HashMap<u32, (u64, policy::Sched)>,
    uclamp: bool,
) -> Result<Result<(), String>, (Code, String)> {
    let gone = || {
        (
            Code::NoSuchProcess,
            format!("no such process or thread {tid}"),
        )
    };
    let starttime = proc.stat(tid).map_err(proc_fail)?.starttime;
    let a = crate::sched::getattr(tid).map_err(|e| match e.raw_os_error() {
        Some(libc::ESRCH) => gone(),
        _ => (Code::Internal, format!("sched_getattr {tid}: {e}")),
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
            (
                Code::Internal,
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

fn value<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("results serialise")
}
