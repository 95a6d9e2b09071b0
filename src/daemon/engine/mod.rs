//! The daemon's state and request execution: one `Engine` behind a mutex, so requests apply
//! one at a time, and every acknowledged change is in the state file before the reply.
//!
//! `load`: reading the configuration; `requests`: one function per request (a new daemon op
//! is one function there and one arm of `Engine::execute`); `moves`: the checks of a move on
//! request; `tasks`: process events, rescans and forgetting.

mod load;
mod moves;
mod requests;
mod tasks;
mod vms;

use std::collections::HashSet;
use std::path::PathBuf;

use serde_json::Value;

pub use load::LoadError;
pub use tasks::{Event, RECHECK_AFTER, Recheck};

use super::policy::{Action, Caller, Config};
use super::protocol::{Reply, Request};
use crate::apply::{Outcome, apply};
use crate::board::{Board, BoardSource};
use crate::cgroupfs::CgroupFs;
use crate::error::{CliError, CliResult, Kind};
use crate::ops::{self, Session};
use crate::place::CgroupMap;
use crate::plan::Plan;
use crate::procfs::Procfs;
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
    /// `vm-types.yaml` over the shipped VM types (`vm_attach`).
    pub vm_types: crate::vm_attach::VmTypes,
}

pub struct Engine {
    pub paths: Paths,
    pub loaded: Loaded,
    pub session: Session,
    /// Processes with a pidfd exit watch.
    pub watched: HashSet<u32>,
    /// VM monitors attached with `vm_attach`, whose new threads are placed as they appear.
    pub vms: vms::Attachments,
}

impl Engine {
    pub fn start(paths: Paths) -> Result<Engine, CliError> {
        let loaded = Engine::load(&paths).map_err(CliError::bad_input)?;
        let cg = CgroupFs::new(&paths.cgroup_root);
        let proc = Procfs::new(&paths.proc);
        let map = CgroupMap::new(&paths.cgroup_root, &proc.mountinfo().unwrap_or_default());
        let mut sd = StateDir::lock(&paths.state_dir)?;
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
                records_watch: None,
            },
            watched: HashSet::new(),
            vms: Default::default(),
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
        ops::create_root(&self.paths.cgroup_root, &mut self.session.state)?;
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

    /// Replaces the configuration with a freshly loaded one and converges; a failed load keeps
    /// the old configuration (and is logged in full).
    pub fn install(
        &mut self,
        loaded: Result<Loaded, LoadError>,
        why: &str,
    ) -> Result<usize, (Kind, LoadError)> {
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
                let plain = |e: CliError| (e.kind(), LoadError::quoting(e.message, vec![]));
                self.converge().map_err(plain)?;
                self.session.save().map_err(plain)?;
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
                Err((Kind::InvalidConfig, e))
            }
        }
    }

    /// The paths to reload from, if `caller` may reload.
    pub fn reload_paths(&self, caller: &Caller) -> CliResult<Paths> {
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
            Err(e) => Reply::err(id, e.code(), e.message),
        };
        (reply, watch)
    }

    fn authorize(&self, caller: &Caller, action: &Action) -> CliResult<()> {
        self.loaded
            .config
            .authorize(caller, action)
            .map_err(CliError::denied)
    }
}

fn value<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("results serialise")
}
