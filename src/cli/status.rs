//! `cgqos status`: the hierarchy as the kernel has it, next to what the plan asks for.

use clap::Args;
use serde::Serialize;

use std::path::Path;

use super::Ctx;
use crate::daemon::protocol::Request;
use crate::error::{CliError, CliResult, Exit};
use crate::ops::{self, Status};

#[derive(Args, Debug)]
#[command(
    after_help = "Exit status 0 when the tree is in sync with the plan (settings the kernel \
does not support do not count), 8 when a group is missing or a setting differs (run `cgqos \
setup`), another code when status itself failed."
)]
pub struct StatusArgs {}

/// The cgroup2 mount's `favordynmods` next to what the board asks for.
#[derive(Serialize)]
struct Favor {
    /// The mount point holding the cgqos root.
    mount: String,
    on: bool,
    /// The kernel knows the option (`/sys/kernel/cgroup/features`).
    supported: bool,
    /// The board's `favor-dynmods` (`None`: the board could not be read here).
    requested: Option<bool>,
}

#[derive(Serialize)]
struct StatusOut {
    #[serde(flatten)]
    status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    favordynmods: Option<Favor>,
}

pub fn run(ctx: &Ctx, _args: StatusArgs) -> CliResult<()> {
    let (status, requested) = match ctx.daemon()? {
        // The daemon's board is the same files as ours unless started with other options.
        Some(mut d) => (d.call(&Request::Status)?, ctx.board().ok()),
        None => {
            let (_topo, board, plan) = ctx.plan()?;
            let cg = ctx.cgroupfs()?;
            // As setup: a root outside cgroup2 would read as "missing" everywhere.
            ctx.check_cgroup2(cg.root())?;
            (ops::status(&cg, &board, &plan), Some(board))
        }
    };
    let requested = requested.map(|b| b.cgqos.favor_dynmods.value);
    let mountinfo = ctx.procfs().mountinfo().unwrap_or_default();
    let favordynmods =
        crate::mounts::cgroup2_mount_of(&mountinfo, Path::new(&status.root)).map(|m| Favor {
            mount: m.dir.display().to_string(),
            on: m.favordynmods(),
            supported: crate::mounts::favordynmods_supported(&ctx.g.sysfs_root),
            requested,
        });
    let mut out = StatusOut {
        status,
        favordynmods,
    };
    // Asked for, possible and off: setup has not run since the board changed, or a remount
    // dropped it.
    if out
        .favordynmods
        .as_ref()
        .is_some_and(|f| f.requested == Some(true) && !f.on && f.supported)
    {
        out.status.in_sync = false;
    }
    ctx.output(&out, text);
    let out = out.status;
    // Scripts and monitoring read the answer from the exit status; the output said why.
    if out.in_sync {
        Ok(())
    } else {
        Err(CliError::new(Exit::NotInSync, String::new()))
    }
}

fn text(out: &StatusOut) -> String {
    let o = &out.status;
    let mut s = format!(
        "root {} (board {:?}): {}\n",
        o.root,
        o.board,
        if o.in_sync {
            "in sync with the plan"
        } else {
            "NOT in sync with the plan: run `cgqos setup`"
        }
    );
    for g in &o.groups {
        let name = if g.path.is_empty() {
            "."
        } else {
            g.path.as_str()
        };
        if !g.exists {
            s.push_str(&format!("{name:<28} missing\n"));
            continue;
        }
        s.push_str(&format!(
            "{name:<28} {:<16} threads {:<5} cpus.effective {}\n",
            g.kind.as_deref().unwrap_or("root"),
            g.threads.map_or("-".into(), |n| n.to_string()),
            g.cpus_effective.as_deref().unwrap_or("-"),
        ));
        for st in &g.settings {
            s.push_str(&format!(
                "    {:<24} {:<12} {}\n",
                st.file,
                st.requested,
                match st.state.as_str() {
                    "ok" => "ok".to_string(),
                    "differs" => format!("differs: {}", st.current.as_deref().unwrap_or("")),
                    other => other.to_string(),
                }
            ));
        }
    }
    if let Some(f) = &out.favordynmods {
        s.push_str(&format!(
            "favordynmods: {} (mount {}{})\n",
            if f.on { "on" } else { "off" },
            f.mount,
            match f.requested {
                Some(true) if !f.on && !f.supported =>
                    "; the board asks for it, this kernel lacks it",
                Some(true) if !f.on => "; the board asks for it: run `cgqos setup`",
                Some(true) => ", as the board asks",
                _ => "",
            }
        ));
    }
    if !o.unsupported.is_empty() {
        s.push_str(&format!(
            "unsupported by this kernel: {}\n",
            o.unsupported.join(", ")
        ));
    }
    s
}
