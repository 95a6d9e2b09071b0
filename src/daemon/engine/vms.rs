//! Attached VMs: `vm_attach` places a running monitor's threads (`crate::vm_attach`), and the
//! daemon keeps placing them: a thread created later (fork event) or renamed (comm event) goes
//! to `vcpu` or `io` by its name; the monitor's exit or `vm_remove` forgets the VM.

use std::collections::HashMap;

use serde_json::Value;

use super::{Engine, Event, value};
use crate::daemon::policy::{Action, Caller};
use crate::error::{CliError, CliResult};
use crate::layout;
use crate::model::TaskRef;
use crate::ops::{self, Dest};
use crate::place::PlaceError;
use crate::procfs::{ProcessId, StartTime, ThreadId};
use crate::vm_attach::{self, ThreadNames};

/// One attached monitor process.
#[derive(Debug, Clone)]
pub struct Attachment {
    pub name: String,
    /// The monitor's start time: a reused pid is not the attached monitor.
    pub start: StartTime,
    pub names: ThreadNames,
}

/// Attached monitors by process id. In memory only: after a daemon restart, attach again.
pub type Attachments = HashMap<u32, Attachment>;

/// What `vm_attach` asks for.
pub struct AttachAsk<'a> {
    pub name: &'a str,
    pub pid: u32,
    pub vm_type: Option<&'a str>,
    pub vcpu_threads: &'a [String],
}

impl Engine {
    /// `vm_attach`: the policy of `vm_add` if the VM's groups are to be made, and of a move
    /// into the VM and both its parts; the monitor held by a pidfd while its owner is checked
    /// (a caller not root places only its own processes unless the policy says more) and
    /// while it moves.
    pub(super) fn vm_attach(
        &mut self,
        caller: &Caller,
        ask: &AttachAsk<'_>,
        watch: &mut Vec<(u32, u64)>,
    ) -> CliResult<Value> {
        layout::validate_vm_name(ask.name).map_err(CliError::bad_input)?;
        let group = layout::vm_path(ask.name);
        // Making the VM's groups is `vm_add`'s permission; placing into them a move's.
        if !self.session.cg.exists(&group) {
            self.authorize(caller, &Action::ChangeGroup { group: &group })?;
        }
        for (g, class) in [
            (group.clone(), None),
            (group.clone(), Some(layout::VCPU)),
            (group.clone(), Some(layout::IO)),
            (layout::child_path(&group, layout::VCPU), None),
            (layout::child_path(&group, layout::IO), None),
        ] {
            self.authorize(caller, &Action::Place { group: &g, class })?;
        }
        let target = TaskRef {
            id: ask.pid,
            starttime: None,
        };
        let dest = Dest::Group(layout::Target::Vm {
            name: ask.name.to_string(),
            part: None,
        });
        let held = self.check_target(caller, &dest, &target)?;
        let s = &mut self.session;
        let names = vm_attach::thread_names(
            &self.loaded.vm_types,
            &s.proc,
            &held,
            ask.vm_type,
            ask.vcpu_threads,
        )?;
        let (board, plan, sysfs) = (&self.loaded.board, &self.loaded.plan, &self.paths.sysfs);
        let mut ensure =
            |s: &mut ops::Session| vm_attach::ensure_groups(s, board, plan, sysfs, ask.name);
        let attached = vm_attach::attach(s, &mut ensure, ask.name, &held, &names);
        // Whatever happened, what moved is recorded before the reply.
        self.session.save()?;
        let attached = attached?;
        let key = held.key();
        // Monitors whose exit event was lost go now: the map holds live processes only.
        let proc = &self.session.proc;
        self.vms
            .retain(|&pid, a| proc.stat(pid).is_ok_and(|st| st.start() == a.start));
        self.vms.insert(
            key.pid().get(),
            Attachment {
                name: ask.name.to_string(),
                start: key.start(),
                names,
            },
        );
        if self.watched.insert(key.pid().get()) {
            watch.push((key.pid().get(), key.start().get()));
        }
        tracing::info!(
            pid = ask.pid,
            "vm {}: attached {} monitor, {} thread(s)",
            ask.name,
            attached.vm_type,
            attached.threads.len()
        );
        Ok(value(&attached))
    }

    /// Forgets the monitors attached to VM `name` (its groups are going).
    pub(super) fn vm_detach(&mut self, name: &str) {
        self.vms.retain(|_, a| a.name != name);
    }

    /// A process event of an attached monitor: a new or renamed thread is placed by its
    /// name; the monitor's exit forgets it. How many tasks moved (for the batch's save).
    pub(super) fn vm_event(&mut self, ev: &Event) -> usize {
        let (tid, tgid) = match *ev {
            Event::Fork { tid, pid, .. } | Event::Comm { tid, pid } => (tid.get(), pid.get()),
            Event::Exit { tid, pid } if tid == pid.main_thread() => {
                self.vms.remove(&pid.get());
                return 0;
            }
            _ => return 0,
        };
        let Some(a) = self.vms.get(&tgid).cloned() else {
            return 0;
        };
        let s = &mut self.session;
        // Still the attached monitor, and still in its VM's group: else no longer attached.
        let pid = ProcessId::new(tgid);
        let same = s.proc.stat(tgid).is_ok_and(|st| st.start() == a.start);
        let inside = s
            .proc
            .cgroup(pid, ThreadId::new(tid))
            .ok()
            .and_then(|c| s.map.relative(&c))
            .and_then(|r| layout::classify(&r))
            .is_some_and(|p| p.group == layout::vm_path(&a.name));
        if !same || !inside {
            if !same {
                self.vms.remove(&tgid);
            }
            return 0;
        }
        match vm_attach::place_thread(s, pid, ThreadId::new(tid), &a.names) {
            Ok(t) if t.error.is_none() => {
                tracing::debug!(pid = tgid, tid, "vm {}: {:?} to {}", a.name, t.name, t.part);
                1
            }
            Ok(t) => {
                tracing::warn!(
                    pid = tgid,
                    tid,
                    "vm {}: {:?} not placed: {}",
                    a.name,
                    t.name,
                    t.error.unwrap_or_default()
                );
                0
            }
            Err(PlaceError::Gone(_)) => 0,
            Err(e) => {
                tracing::warn!(pid = tgid, tid, "vm {}: thread not placed: {e}", a.name);
                0
            }
        }
    }
}
