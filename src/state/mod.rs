//! What cgqos changed, so `teardown` can undo it: the original cgroup of every task it moved,
//! whether it created the cgqos root, which VM groups it added.
//!
//! Kept under the state directory (`/run/cgqos/` by default: tmpfs, so a reboot, which also
//! resets cgroups, starts clean) as a snapshot (`state.json`, replaced atomically: write to
//! a temporary file, fsync, rename) and a journal of the changes since
//! (`state.journal`, one self-checking line per changed record, appended and fdatasync'd
//! before a change is acknowledged). On tmpfs or ramfs (the default `/run`) nothing is
//! flushed: a written line already survives the daemon's death (it is in the page cache),
//! and nothing there survives a reboot, flushed or not, nor do the tasks it records. A commit costs the changed records, not the whole
//! state; the snapshot is rewritten when the journal outgrows it (amortised O(1) per
//! change). An exclusive `flock` on a lock file serialises concurrent cgqos commands.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::procfs::{ProcessId, StartTime, TaskKey, ThreadId};

mod dir;
mod journal;
#[cfg(test)]
mod tests;

pub use dir::{StateDir, read_unlocked, recorded_root};
pub use journal::{JOURNAL_FILE, Tracked};

pub const STATE_FILE: &str = "state.json";
/// The snapshot format written. Version 1 (no journal) is still read.
const VERSION: u32 = 2;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The process the task belongs to.
    pub pid: ProcessId,
    pub starttime: StartTime,
    /// Absolute path of the cgroup directory the task was in before cgqos first moved it.
    pub original: PathBuf,
    /// Whether the whole process was moved (restored through `cgroup.procs`).
    pub process: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    /// The cgqos root this state belongs to.
    pub root: Option<PathBuf>,
    /// Whether `setup` created the root directory (teardown then removes it).
    pub created_root: bool,
    /// Keyed by task id (a process's id for process records).
    pub tasks: Tracked<Record>,
    pub vms: BTreeSet<String>,
    /// Restrictions set through the daemon (`restrict`), by group path; re-applied after a
    /// converge, which resets weights to the plan's.
    #[serde(default)]
    pub restrictions: BTreeMap<String, Restriction>,
    /// Original scheduling attributes of every thread whose attributes cgqos changed.
    #[serde(default)]
    pub attrs: Tracked<AttrRecord>,
    /// Why each task is where it is: the rule or request that last placed it.
    #[serde(default)]
    pub why: Tracked<Why>,
    /// sysfs files setup changed (absolute path), with the value they had before its first
    /// write: teardown writes them back.
    #[serde(default)]
    pub sysfs: BTreeMap<PathBuf, String>,
    /// Groups (relative to the root) setup or the daemon created; teardown removes only
    /// these and the groups of VMs added (`vms`). `None` in files written before it was
    /// kept: every group of the cgqos subtrees is then taken as cgqos's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<BTreeSet<String>>,
    /// Which snapshot this is: the journal names the one its changes follow. 0 in version 1
    /// files, which have no journal.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub generation: u64,
    #[serde(skip)]
    pub baseline: Baseline,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Which commit of the `StateDir` in use this value descends from: a commit appends only
/// the pending changes of the value it last wrote or loaded, and writes any other whole.
/// Bookkeeping, not content: all baselines compare equal.
#[derive(Debug, Clone, Copy, Default)]
pub struct Baseline(Option<u64>);

impl PartialEq for Baseline {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for Baseline {}

impl State {
    /// Whether teardown may remove `group`: cgqos created it.
    pub fn created_group(&self, group: &str) -> bool {
        let vm = group
            .strip_prefix("vms/")
            .map(|r| r.split('/').next().unwrap_or(r))
            .is_some_and(|name| self.vms.contains(name));
        vm || self.created.as_ref().is_none_or(|c| c.contains(group))
    }

    /// Every task id with a record, in order, each once.
    pub fn recorded_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = (self.tasks.keys())
            .chain(self.attrs.keys())
            .chain(self.why.keys())
            .copied()
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Tells `watch` what changed since the last commit: which ids gained or lost their
    /// last record. If a map was emptied wholesale, a `clear` and then every id recorded
    /// now (the other maps may still hold some).
    pub fn report_records(&self, watch: &mut dyn RecordsWatch) {
        if self.cleared() {
            watch.clear();
            for id in self.recorded_ids() {
                watch.set(id, true);
            }
            return;
        }
        let changed = (self.tasks.changed().map(|c| c.0))
            .chain(self.attrs.changed().map(|c| c.0))
            .chain(self.why.changed().map(|c| c.0));
        let mut seen = std::collections::BTreeSet::new();
        for id in changed {
            if seen.insert(id) {
                let recorded = self.tasks.contains_key(&id)
                    || self.attrs.contains_key(&id)
                    || self.why.contains_key(&id);
                watch.set(id, recorded);
            }
        }
    }

    /// Whether a map was emptied wholesale since the last commit.
    fn cleared(&self) -> bool {
        self.tasks.cleared() || self.attrs.cleared() || self.why.cleared()
    }

    /// Everything pending is on disk.
    fn settle(&mut self) {
        self.tasks.settle();
        self.attrs.settle();
        self.why.settle();
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttrRecord {
    pub pid: ProcessId,
    pub starttime: StartTime,
    pub original: crate::sched::TaskAttrs,
    /// The creator whose original this is: the task was born after cgqos changed its
    /// creator and inherited the changed attributes (see `classify::inherit_original`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inherited_from: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Why {
    pub pid: ProcessId,
    pub starttime: StartTime,
    /// `rule NAME (file:line)` or `request from uid U (pid P)`.
    pub by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    #[serde(default, skip_serializing_if = "crate::sched::TaskAttrs::is_empty")]
    pub attrs: crate::sched::TaskAttrs,
    /// Seconds since the epoch.
    pub at: u64,
}

impl Record {
    /// The recorded task's identity, `tid` being the id it is recorded under.
    pub fn key(&self, tid: ThreadId) -> TaskKey {
        TaskKey::new(self.pid, tid, self.starttime)
    }
}

impl AttrRecord {
    /// The recorded task's identity, `tid` being the id it is recorded under.
    pub fn key(&self, tid: ThreadId) -> TaskKey {
        TaskKey::new(self.pid, tid, self.starttime)
    }
}

impl Why {
    /// The recorded task's identity, `tid` being the id it is recorded under.
    pub fn key(&self, tid: ThreadId) -> TaskKey {
        TaskKey::new(self.pid, tid, self.starttime)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restriction {
    pub weight: u32,
    /// The `cpu.max` value written (`max 100000` for none).
    pub cpu_max: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: not a cgqos state file ({source}); move it away to start afresh")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error(
        "{path}: line {line}: {why}; left untouched (a damaged state journal: move it and {STATE_FILE} away to start afresh)"
    )]
    Journal {
        path: PathBuf,
        line: usize,
        why: String,
    },
    #[error(
        "{path}: state file version {found}, this cgqos understands version {VERSION} (and reads 1); left untouched (use the cgqos that wrote it, or move it away after undoing its changes)"
    )]
    Version { path: PathBuf, found: String },
    #[error(
        "{0}: locked by another cgqos process (a running daemon holds it: talk to it, without --direct, or stop it)"
    )]
    Locked(PathBuf),
    #[error(
        "{path}: cgqos is set up at {other} (recorded in the state file), not at {ours}: run without --cgroup-root to use {other}, or tear it down first (or use another --state-dir)"
    )]
    OtherRoot {
        path: PathBuf,
        other: String,
        ours: String,
    },
    /// A state directory others could plant files in.
    #[error("state directory {path}: {why}; refusing to use it as root")]
    Unsafe { path: PathBuf, why: String },
}

/// Follows which task ids have a record (of origin, original attributes, or why).
pub trait RecordsWatch: Send {
    /// `id` has a record now (`true`) or none any more (`false`).
    fn set(&mut self, id: u32, recorded: bool);
    /// No task has a record any more.
    fn clear(&mut self);
}

impl State {
    /// Remembers where a task was before its first move; later moves keep the first origin.
    pub fn remember(&mut self, tid: ThreadId, record: Record) {
        let tid = tid.get();
        match self.tasks.get(&tid) {
            Some(r) if r.starttime == record.starttime => {
                if record.process && !r.process {
                    let mut r = r.clone();
                    r.process = true;
                    self.tasks.insert(tid, r);
                }
            }
            _ => {
                self.tasks.insert(tid, record);
            }
        }
    }
}
