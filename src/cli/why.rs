//! `cgqos why`: which rule or request put a task where it is, what was applied and when, and
//! what `reset` will restore.

use clap::Args;
use serde::Serialize;

use super::Ctx;
use crate::error::CliResult;
use crate::procfs::{ProcessId, StartTime, ThreadId};
use crate::sched::{self, TaskAttrs};
use crate::state::{AttrRecord, State, Why};

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
    /// The cgqos process group the task is in now (`None`: outside the cgqos tree).
    group: Option<String>,
    /// Its thread class there (`None`: the group's default).
    class: Option<String>,
    /// The newest record for the thread, else for its process.
    why: Option<Why>,
    /// When, in local time, ISO 8601.
    at_local: Option<String>,
    /// Attributes of the record the kernel does not support, so not applied.
    not_applied: Vec<String>,
    /// The original scheduling attributes cgqos will restore on reset.
    original_attrs: Option<AttrRecord>,
    /// Where the task was before cgqos first moved it: where reset puts it back.
    original_cgroup: Option<String>,
}

pub fn run(ctx: &Ctx, args: WhyArgs) -> CliResult<()> {
    let proc = ctx.procfs();
    let stat = proc.stat(args.id)?;
    let pid = proc.tgid(args.id)?;
    let cgroup = proc.cgroup(ProcessId::new(pid), ThreadId::new(args.id))?;
    // The state file is replaced atomically, so it can be read without the daemon's lock;
    // its directory is checked as for any other command.
    let state: State = crate::state::read_unlocked(&ctx.g.state_dir)?.unwrap_or_default();
    let placement = ctx.cgroup_root().ok().and_then(|root| {
        ctx.map(&root)
            .relative(&cgroup)
            .and_then(|r| crate::layout::classify(&r))
    });
    let fresh = |st: StartTime, id: u32| proc.stat(id).is_ok_and(|s| s.start() == st);
    let why = state
        .why
        .get(&args.id)
        .filter(|w| w.starttime == stat.start())
        .or_else(|| state.why.get(&pid).filter(|w| fresh(w.starttime, pid)))
        .cloned();
    let uclamp = sched::Support::get().uclamp;
    let mut not_applied = Vec::new();
    let why = why.map(|mut w| {
        // Never claim what the kernel could not do: uclamp without CONFIG_UCLAMP_TASK.
        if !uclamp {
            for (name, v) in [
                ("uclamp_min", w.attrs.uclamp_min.take()),
                ("uclamp_max", w.attrs.uclamp_max.take()),
            ] {
                if let Some(v) = v {
                    not_applied.push(format!("{name} {}", uclamp_text(v)));
                }
            }
        }
        w
    });
    let original_attrs = state
        .attrs
        .get(&args.id)
        .filter(|a| a.starttime == stat.start())
        .cloned()
        .map(|mut a| {
            a.original = restorable(a.original, uclamp);
            a
        });
    // Reset moves a recorded process back as a whole first (its threads with it); a thread's
    // own record matters only when its process was not moved.
    let original_cgroup = state
        .tasks
        .get(&pid)
        .filter(|r| r.process && fresh(r.starttime, pid))
        .or_else(|| {
            state
                .tasks
                .get(&args.id)
                .filter(|r| r.starttime == stat.start())
        })
        .map(|r| r.original.display().to_string());
    let out = WhyOut {
        id: args.id,
        pid,
        comm: stat.comm,
        cgroup,
        group: placement.as_ref().map(|p| p.group.clone()),
        class: placement.and_then(|p| p.class),
        at_local: why.as_ref().map(|w| local_iso8601(w.at)),
        why,
        not_applied,
        original_attrs,
        original_cgroup,
    };
    ctx.output(&out, text);
    Ok(())
}

fn text(o: &WhyOut) -> String {
    let mut s = format!(
        "{} ({}, process {}) is in {}\n",
        o.id, o.comm, o.pid, o.cgroup
    );
    match &o.group {
        Some(g) => s.push_str(&format!(
            "  now in group {g}, class {}\n",
            o.class.as_deref().unwrap_or("default")
        )),
        None => s.push_str("  now outside the cgqos groups\n"),
    }
    match &o.why {
        None => s.push_str("cgqos did not place it (no rule or request recorded)\n"),
        Some(w) => {
            s.push_str(&format!(
                "placed by {} at {}\n",
                w.by,
                o.at_local.as_deref().unwrap_or("?")
            ));
            if let Some(g) = &w.group {
                s.push_str(&format!("  group: {g}\n"));
            }
            if let Some(c) = &w.class {
                s.push_str(&format!("  class: {c}\n"));
            }
            if !w.attrs.is_empty() {
                s.push_str(&format!("  attributes applied: {}\n", attrs_text(&w.attrs)));
            }
            if !o.not_applied.is_empty() {
                s.push_str(&format!(
                    "  not applied (this kernel has no per-task uclamp): {}\n",
                    o.not_applied.join(", ")
                ));
            }
        }
    }
    match &o.original_cgroup {
        Some(c) => s.push_str(&format!("  reset restores cgroup {c}\n")),
        None => s.push_str("  reset leaves its cgroup as it is (cgqos did not move it)\n"),
    }
    match &o.original_attrs {
        Some(a) => {
            s.push_str(&format!(
                "  reset restores attributes {}",
                attrs_text(&a.original)
            ));
            if let Some(c) = a.inherited_from {
                s.push_str(&format!(
                    " (its creator {c}'s original: it was born with the attributes cgqos gave {c})"
                ));
            }
            s.push('\n');
        }
        None => s.push_str("  reset leaves its scheduling attributes as they are\n"),
    }
    s
}

/// What `classify::restore_attrs` actually writes back: clamps only with uclamp support,
/// and the kernel's defaults (0, 1024) shown as "unset".
fn restorable(mut a: TaskAttrs, uclamp: bool) -> TaskAttrs {
    if !uclamp {
        a.uclamp_min = None;
        a.uclamp_max = None;
    }
    a
}

/// uclamp as the kernel's raw value (0-1024) and in percent.
fn uclamp_text(v: u32) -> String {
    format!("{v} ({:.1}%)", v as f64 * 100.0 / 1024.0)
}

fn attrs_text(a: &TaskAttrs) -> String {
    let mut parts = Vec::new();
    if let Some(p) = a.policy {
        parts.push(format!("policy {}", sched::policy_name(p)));
        if sched::is_realtime(p) {
            if let Some(prio) = a.priority {
                parts.push(format!("priority {prio}"));
            }
        }
    } else if let Some(prio) = a.priority {
        parts.push(format!("priority {prio}"));
    }
    if let Some(n) = a.nice {
        parts.push(format!("nice {n}"));
    }
    match (a.uclamp_min, a.uclamp_max) {
        (Some(0), Some(1024)) => parts.push("uclamp unset".into()),
        (min, max) => {
            if let Some(v) = min {
                parts.push(format!("uclamp_min {}", uclamp_text(v)));
            }
            if let Some(v) = max {
                parts.push(format!("uclamp_max {}", uclamp_text(v)));
            }
        }
    }
    if let Some(r) = a.runtime_ns.filter(|&r| r != 0) {
        parts.push(format!("slice {r} ns"));
    }
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

/// Seconds since the epoch as local time, ISO 8601 with the UTC offset
/// (`2026-11-30T23:05:09+01:00`).
fn local_iso8601(secs: u64) -> String {
    let Some(tm) = crate::sys::localtime(secs) else {
        return format!("{secs} (seconds since the epoch)");
    };
    let off = tm.utc_offset;
    let sign = if off < 0 { '-' } else { '+' };
    let off = off.unsigned_abs();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{sign}{:02}:{:02}",
        tm.year,
        tm.month,
        tm.day,
        tm.hour,
        tm.minute,
        tm.second,
        off / 3600,
        off % 3600 / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_time_is_iso_8601() {
        let s = local_iso8601(0);
        // 1970-01-01T00:00:00+00:00 in UTC; another zone shifts the fields, not the shape.
        assert_eq!(s.len(), 25, "{s}");
        assert_eq!(&s[4..5], "-");
        assert_eq!(&s[10..11], "T");
    }

    #[test]
    fn uclamp_shows_raw_and_percent() {
        assert_eq!(uclamp_text(512), "512 (50.0%)");
        let a = TaskAttrs {
            nice: Some(10),
            uclamp_min: Some(0),
            uclamp_max: Some(1024),
            ..TaskAttrs::default()
        };
        assert_eq!(attrs_text(&a), "nice 10, uclamp unset");
    }
}
