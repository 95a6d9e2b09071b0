//! `cgqos status`: the hierarchy as the kernel has it, next to what the plan asks for.

use clap::Args;

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

pub fn run(ctx: &Ctx, _args: StatusArgs) -> CliResult<()> {
    let out: Status = match ctx.daemon()? {
        Some(mut d) => d.call(&Request::Status)?,
        None => {
            let (_topo, board, plan) = ctx.plan()?;
            let cg = ctx.cgroupfs()?;
            // As setup: a root outside cgroup2 would read as "missing" everywhere.
            ctx.check_cgroup2(cg.root())?;
            ops::status(&cg, &board, &plan)
        }
    };
    ctx.output(&out, text);
    // Scripts and monitoring read the answer from the exit status; the output said why.
    if out.in_sync {
        Ok(())
    } else {
        Err(CliError::new(Exit::NotInSync, String::new()))
    }
}

fn text(o: &Status) -> String {
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
    if !o.unsupported.is_empty() {
        s.push_str(&format!(
            "unsupported by this kernel: {}\n",
            o.unsupported.join(", ")
        ));
    }
    s
}
