//! `cgqos where`: each thread of a process, its group and class.

use clap::Args;

use super::Ctx;
use crate::daemon::protocol::Request;
use crate::error::{CliError, CliResult};
use crate::place::{Placer, ThreadPlace};
use crate::procfs::ProcessId;

#[derive(Args, Debug)]
pub struct WhereArgs {
    /// Process id
    pub pid: u32,
}

pub fn run(ctx: &Ctx, args: WhereArgs) -> CliResult<()> {
    if args.pid == 0 {
        return Err(CliError::bad_input("0 is not a process id"));
    }
    let threads: Vec<ThreadPlace> = match ctx.daemon()? {
        Some(mut d) => d.call(&Request::Where { pid: args.pid })?,
        None => {
            let cg = ctx.cgroupfs()?;
            let map = ctx.map(cg.root());
            let proc = ctx.procfs();
            Placer::new(&cg, &map, &proc).locate(ProcessId::new(args.pid))?
        }
    };
    ctx.output(&threads, |ts| {
        let mut s = format!(
            "{:<8} {:<16} {:<20} {:<11} cgroup\n",
            "tid", "comm", "group", "class"
        );
        for t in ts {
            s.push_str(&format!(
                "{:<8} {:<16} {:<20} {:<11} {}\n",
                t.tid,
                t.comm,
                t.group.as_deref().unwrap_or("-"),
                t.class.as_deref().unwrap_or("-"),
                t.cgroup
            ));
        }
        s
    });
    Ok(())
}
