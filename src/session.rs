//! A session: a cgroup tree, the view of it from /proc and the locked record of what cgqos
//! changed; and what moving one task in it came to. Below both the operations and the
//! classifier, which work on it.

use serde::{Deserialize, Serialize};

use crate::cgroupfs::CgroupFs;
use crate::error::{CliError, CliResult};
use crate::model::Code;
use crate::place::{CgroupMap, Placer, ThreadPlace};
use crate::procfs::{Procfs, TaskKey};
use crate::state::{RecordsWatch, State, StateDir};

/// A cgroup tree, the view of it from /proc, and the locked record of what cgqos changed.
pub struct Session {
    pub cg: CgroupFs,
    pub map: CgroupMap,
    pub proc: Procfs,
    pub sd: StateDir,
    pub state: State,
    /// Told at each save which tasks gained or lost their last record (the daemon's events
    /// thread keeps the kernel's set of creators whose new processes wake it).
    pub records_watch: Option<Box<dyn RecordsWatch>>,
}

impl Session {
    pub fn placer(&self) -> Placer<'_> {
        Placer::new(&self.cg, &self.map, &self.proc)
    }

    pub fn save(&mut self) -> CliResult<()> {
        if let Some(watch) = self.records_watch.as_deref_mut() {
            self.state.report_records(watch);
        }
        Ok(self.sd.save(&mut self.state)?)
    }

    /// Starts telling `watch` of the records' changes, first of every task recorded now.
    pub fn watch_records(&mut self, mut watch: Box<dyn RecordsWatch>) {
        watch.clear();
        for id in self.state.recorded_ids() {
            watch.set(id, true);
        }
        self.records_watch = Some(watch);
    }
}

/// The outcome for one id of a move.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Moved {
    pub id: u32,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<Code>,
    #[serde(default)]
    pub threads: Vec<ThreadPlace>,
    /// The task the move held and moved (after a success): its process and start time
    /// travel on from here, to the records and the exit watch, without another `/proc`
    /// read. Not part of any reply.
    #[serde(skip)]
    pub key: Option<TaskKey>,
}

impl Moved {
    /// A target that was not moved, and why.
    pub fn failed(id: u32, e: CliError) -> Moved {
        Moved {
            id,
            ok: false,
            code: Some(e.code()),
            error: Some(e.message),
            threads: vec![],
            key: None,
        }
    }
}
