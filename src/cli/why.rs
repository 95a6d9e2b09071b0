//! `cgqos why`: which rule or request put a task where it is, what was applied and when.

use clap::Args;
use serde::Serialize;

use super::Ctx;
use crate::error::{CliError, CliResult, Exit};
use crate::procfs::{ProcessId, ThreadId};
use crate::state::{AttrRecord, STATE_FILE, State, Why};

#[derive(Args, Debug)]
pub struct WhyArgs {
    /// Process or thread id
    pub id: u32,
}

#[derive(Serialize)]
struct WhyOut {
    id: u32,
    pid: u32,
    comm: String,
    cgroup: String,
    /// The newest record for the thread, else for its process.
    why: Option<Why>,
    /// The original scheduling attributes cgqos will restore on reset.
    original_attrs: Option<AttrRecord>,
    /// Where the task was before cgqos first moved it.
    original_cgroup: Option<String>,
}

pub fn run(ctx: &Ctx, args: WhyArgs) -> CliResult<()> {
    let proc = ctx.procfs();
    let stat = proc.stat(args.id)?;
    let pid = proc.tgid(args.id)?;
    let cgroup = proc.cgroup(ProcessId(pid), ThreadId(args.id))?;
    // The state file is replaced atomically, so it can be read without the daemon's lock.
    let path = ctx.g.state_dir.join(STATE_FILE);
    let state: State = match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| {
            CliError::new(
                Exit::Failure,
                format!("{}: not a cgqos state file: {e}", path.display()),
            )
        })?,
        Err(_) => State::default(),
    };
    let fresh = |st: u64, id: u32| proc.stat(id).is_ok_and(|s| s.starttime == st);
    let why = state
        .why
        .get(&args.id)
        .filter(|w| w.starttime == stat.starttime)
        .or_else(|| state.why.get(&pid).filter(|w| fresh(w.starttime, pid)))
        .cloned();
    let out = WhyOut {
        id: args.id,
        pid,
        comm: stat.comm,
        cgroup,
        why,
        original_attrs: state
            .attrs
            .get(&args.id)
            .filter(|a| a.starttime == stat.starttime)
            .cloned(),
        original_cgroup: state
            .tasks
            .get(&args.id)
            .or_else(|| state.tasks.get(&pid))
            .filter(|r| fresh(r.starttime, r.pid))
            .map(|r| r.original.display().to_string()),
    };
    ctx.output(&out, |o| {
        let mut s = format!(
            "{} ({}, process {}) is in {}\n",
            o.id, o.comm, o.pid, o.cgroup
        );
        match &o.why {
            None => s.push_str("cgqos did not place it (no rule or request recorded)\n"),
            Some(w) => {
                s.push_str(&format!(
                    "placed by {} at {} (seconds since the epoch)\n",
                    w.by, w.at
                ));
                if let Some(g) = &w.group {
                    s.push_str(&format!("  group: {g}\n"));
                }
                if let Some(c) = &w.class {
                    s.push_str(&format!("  class: {c}\n"));
                }
                if !w.attrs.is_empty() {
                    s.push_str(&format!(
                        "  attributes applied: {}\n",
                        serde_json::to_string(&w.attrs).unwrap_or_default()
                    ));
                }
            }
        }
        if let Some(c) = &o.original_cgroup {
            s.push_str(&format!("  reset restores cgroup {c}\n"));
        }
        if let Some(a) = &o.original_attrs {
            s.push_str(&format!(
                "  reset restores attributes {}\n",
                serde_json::to_string(&a.original).unwrap_or_default()
            ));
        }
        s
    });
    Ok(())
}
