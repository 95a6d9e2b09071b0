//! `cgqos reset`: undo every change cgqos made to tasks (cgroups and scheduling attributes);
//! the hierarchy stays (teardown removes it).

use clap::Args;

use super::Ctx;
use crate::daemon::protocol::Request;
use crate::error::{CliError, CliResult, Exit};
use crate::ops::{self, ResetReport};

#[derive(Args, Debug)]
pub struct ResetArgs {}

pub fn run(ctx: &Ctx, _args: ResetArgs) -> CliResult<()> {
    let report: ResetReport = match ctx.daemon()? {
        Some(mut d) => d.call(&Request::Reset)?,
        None => {
            let mut s = ctx.session()?;
            let r = ops::reset(&mut s);
            s.save()?;
            r
        }
    };
    ctx.output(&report, |r| {
        let mut s = format!(
            "restored the scheduling attributes of {} thread(s) and the cgroup of {} task(s); {} had exited\n",
            r.attrs_restored,
            r.tasks.restored.len(),
            r.exited + r.tasks.skipped_exited
        );
        for e in &r.tasks.errors {
            s.push_str(&format!("error: {e}\n"));
        }
        s
    });
    if report.tasks.errors.is_empty() {
        Ok(())
    } else {
        Err(CliError::new(
            Exit::KernelRefused,
            "reset incomplete (see errors above)",
        ))
    }
}
