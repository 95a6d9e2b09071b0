//! One function per request: authorize, run the operation, shape the reply's result.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::moves::{caller_limits, proc_fail, within_own};
use super::{Engine, value};
use crate::daemon::policy::{self, Action, Caller};
use crate::daemon::protocol::{Request, RestrictState};
use crate::error::{CliError, CliResult};
use crate::layout::{self, Target};
use crate::model::TaskRef;
use crate::ops::{self, Dest, ThreadDest};
use crate::place::{Held, Placer};
use crate::procfs::ProcessId;

/// Who asked, as `why` records it.
fn requested_by(caller: &Caller) -> String {
    caller.describe()
}

impl Engine {
    /// Runs one request; `watch` collects the processes that now want an exit watch.
    pub(super) fn execute(
        &mut self,
        caller: &Caller,
        req: &Request,
        watch: &mut Vec<(u32, u64)>,
    ) -> CliResult<Value> {
        match req {
            Request::Ping => Ok(json!({"pong": true, "version": env!("CARGO_PKG_VERSION")})),
            Request::Status => self.status(caller),
            Request::Where { pid } => self.where_(caller, *pid),
            Request::Move { group, targets } => self.move_processes(caller, group, targets, watch),
            Request::MoveThreads { class, targets } => {
                self.move_threads(caller, class, targets, watch)
            }
            Request::VmAdd { name } => self.vm_add(caller, name),
            Request::VmRemove { name } => self.vm_remove(caller, name),
            Request::VmAttach {
                name,
                pid,
                vm_type,
                vcpu_threads,
            } => {
                let ask = super::vms::AttachAsk {
                    name,
                    pid: *pid,
                    vm_type: vm_type.as_deref(),
                    vcpu_threads,
                };
                self.vm_attach(caller, &ask, watch)
            }
            Request::Restrict {
                group,
                state,
                quota_percent,
            } => self.restrict(caller, group, *state, *quota_percent),
            Request::Reload => self.reload_request(caller),
            Request::Reset => self.reset_request(caller),
        }
    }

    fn status(&self, caller: &Caller) -> CliResult<Value> {
        self.authorize(caller, &Action::Read)?;
        let s = ops::status(&self.session.cg, &self.loaded.board, &self.loaded.plan);
        Ok(value(&s))
    }

    fn where_(&self, caller: &Caller, pid: u32) -> CliResult<Value> {
        self.authorize(caller, &Action::Read)?;
        let placer = Placer::new(&self.session.cg, &self.session.map, &self.session.proc);
        let t = placer.locate(ProcessId::new(pid)).map_err(CliError::from)?;
        Ok(value(&t))
    }

    fn move_processes(
        &mut self,
        caller: &Caller,
        group: &str,
        targets: &[TaskRef],
        watch: &mut Vec<(u32, u64)>,
    ) -> CliResult<Value> {
        let target = Target::parse(group).map_err(CliError::bad_input)?;
        let (pgroup, class) = match &target {
            Target::Vm { name, part } => (layout::vm_path(name), part.clone()),
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
        let moved = self.move_checked(caller, &Dest::Group(target), targets, None);
        let by = requested_by(caller);
        let s = &mut self.session;
        crate::classify::record_moves(&mut s.state, &s.proc, &moved, &by, true);
        // A thread's real-time class follows its process's group (none in background).
        for pid in moved
            .iter()
            .filter(|m| m.ok)
            .filter_map(|m| m.key.map(|k| k.pid()))
        {
            crate::classify::real_time_follows_group(s, &self.loaded.rules.classes, pid);
        }
        self.finish_moves(moved, watch)
    }

    fn move_threads(
        &mut self,
        caller: &Caller,
        class: &str,
        targets: &[TaskRef],
        watch: &mut Vec<(u32, u64)>,
    ) -> CliResult<Value> {
        let dest = ops::thread_dest(class, &self.loaded.rules.classes, requested_by(caller))
            .map_err(CliError::bad_input)?;
        let check = self.thread_check(caller, class, &dest, targets);
        let moved = self.move_checked(caller, &dest, targets, Some(&check));
        if let Dest::Thread(ThreadDest::Vm(_)) = dest {
            // Thread classes record their own why; VM classes are recorded here.
            let by = requested_by(caller);
            let s = &mut self.session;
            crate::classify::record_moves(&mut s.state, &s.proc, &moved, &by, false);
        }
        self.finish_moves(moved, watch)
    }

    /// What a thread move checks for each target, held: the policy for the class in the
    /// thread's own process group, and a class's task attributes against the caller's reach.
    fn thread_check<'c>(
        &self,
        caller: &'c Caller,
        asked: &str,
        dest: &Dest,
        targets: &[TaskRef],
    ) -> impl Fn(&TaskRef, &Held) -> CliResult<()> + use<'c> {
        // The policy sees the class by its own name (whatever alias was asked for) and where
        // it puts the thread.
        let (canonical, cgroup_class) = match dest {
            Dest::Thread(ThreadDest::Class { class, .. }) => (
                class.name.clone(),
                class
                    .cgroup_class
                    .layout_class()
                    .unwrap_or("default")
                    .to_string(),
            ),
            _ => (asked.to_string(), asked.to_string()),
        };
        let config = self.loaded.config.clone();
        let map = self.session.map.clone();
        let proc = self.session.proc.clone();
        // A class's task attributes go as far as the caller could go itself, unless granted:
        // its limits (read once; a caller that is gone has none) and what each thread had
        // before cgqos first changed it.
        let attrs = match dest {
            Dest::Thread(ThreadDest::Class { class, .. }) if !caller.is_root() => {
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
                        Some((
                            t.id,
                            (r.starttime.get(), policy::Sched::recorded(&r.original)?),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let uclamp = crate::sched::Support::get().uclamp;
        // Each thread's own process group decides what the class means there.
        move |_: &TaskRef, held: &Held| -> CliResult<()> {
            // The hold knows the thread's process and start time: only its cgroup is read.
            let key = held.key();
            let cgroup = proc.cgroup(key.pid(), key.tid()).map_err(proc_fail)?;
            let group = map
                .relative(&cgroup)
                .and_then(|r| layout::classify(&r))
                .map(|p| p.group)
                .unwrap_or_default();
            for c in [canonical.as_str(), cgroup_class.as_str()] {
                config
                    .authorize(
                        caller,
                        &Action::Place {
                            group: &group,
                            class: Some(c),
                        },
                    )
                    .map_err(CliError::denied)?;
            }
            if let (Some(a), Some((limits, note))) = (&attrs, &own) {
                let beyond = within_own(&proc, key, a, *limits, &originals, uclamp)?
                    .map_err(|why| format!("{why}{note}"));
                config
                    .authorize_class(caller, &canonical, beyond)
                    .map_err(CliError::denied)?;
            }
            Ok(())
        }
    }

    fn vm_add(&mut self, caller: &Caller, name: &str) -> CliResult<Value> {
        self.authorize(
            caller,
            &Action::ChangeGroup {
                group: &layout::vm_path(name),
            },
        )?;
        let added = ops::vm_add(
            &mut self.session,
            &self.loaded.board,
            &self.loaded.plan,
            &self.paths.sysfs,
            name,
        )?;
        self.session.save()?;
        Ok(value(&added))
    }

    fn vm_remove(&mut self, caller: &Caller, name: &str) -> CliResult<Value> {
        self.authorize(
            caller,
            &Action::ChangeGroup {
                group: &layout::vm_path(name),
            },
        )?;
        let r = ops::vm_remove(&mut self.session, name);
        self.vm_detach(name);
        self.session.save()?;
        Ok(value(&r?))
    }

    fn restrict(
        &mut self,
        caller: &Caller,
        group: &str,
        state: RestrictState,
        quota_percent: Option<u32>,
    ) -> CliResult<Value> {
        let path = Target::parse(group).map_err(CliError::bad_input)?.path();
        self.authorize(caller, &Action::ChangeGroup { group: &path })?;
        let r = ops::restrict(
            &mut self.session,
            &self.loaded.board,
            group,
            state,
            quota_percent,
        )?;
        self.session.save()?;
        Ok(json!({"group": path, "cpu_weight": r.weight, "cpu_max": r.cpu_max}))
    }

    /// The server reloads through `watch::reload_request` (files read outside the engine);
    /// this is the same, with the engine held.
    fn reload_request(&mut self, caller: &Caller) -> CliResult<Value> {
        self.authorize(caller, &Action::Reload)?;
        let loaded = Engine::load(&self.paths);
        let steps = self
            .install(loaded, "request")
            .map_err(|(kind, e)| CliError::of(kind, e.for_caller(caller)))?;
        Ok(json!({"reloaded": true, "steps": steps}))
    }

    fn reset_request(&mut self, caller: &Caller) -> CliResult<Value> {
        self.authorize(caller, &Action::Reload)?;
        let r = self.reset();
        self.session.save()?;
        Ok(value(&r))
    }
}
