//! `cgqos teardown`: every task back where it came from, then the hierarchy removed.

use clap::Args;

use super::Ctx;
use crate::error::{CliError, CliResult, Exit};
use crate::layout;
use crate::place::TeardownReport;

#[derive(Args, Debug)]
pub struct TeardownArgs {}

pub fn run(ctx: &Ctx, _args: TeardownArgs) -> CliResult<()> {
    let mut session = ctx.session()?;
    let uclamp = crate::sched::uclamp_supported();
    let (attrs, _) = crate::classify::restore_attrs(&mut session.state, &session.proc, uclamp);
    if attrs > 0 {
        tracing::info!("restored the scheduling attributes of {attrs} thread(s)");
    }
    let mut report = TeardownReport::default();
    let mut placer = session.placer();
    for subtree in [layout::CHROME, layout::VMS] {
        placer.evacuate(subtree, &session.state, &mut report);
    }
    if session.state.created_root && report.errors.is_empty() {
        match session.cg.rmdir("") {
            Ok(()) => report.removed.push(session.cg.root().display().to_string()),
            Err(e) => report.errors.push(e.to_string()),
        }
    }
    if report.errors.is_empty() {
        session.sd.clear()?;
    } else {
        // Keep what is still needed to finish the job on a rerun.
        session.state.vms.clear();
        session.save()?;
    }
    for r in &report.restored {
        tracing::info!(id = r.id, to = %r.to.display(), note = r.note.as_deref().unwrap_or(""), "restored");
    }
    ctx.output(&report, |r| {
        let mut s = String::new();
        for t in &r.restored {
            s.push_str(&format!(
                "restored {} {} to {}{}\n",
                if t.process { "process" } else { "thread" },
                t.id,
                t.to.display(),
                t.note
                    .as_ref()
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default()
            ));
        }
        for g in &r.removed {
            s.push_str(&format!("removed {g}\n"));
        }
        for e in &r.errors {
            s.push_str(&format!("error: {e}\n"));
        }
        if r.restored.is_empty() && r.removed.is_empty() && r.errors.is_empty() {
            s.push_str("nothing to tear down\n");
        }
        s
    });
    if report.errors.is_empty() {
        Ok(())
    } else {
        Err(CliError::new(
            Exit::KernelRefused,
            "teardown incomplete (see errors above); run it again once the cause is fixed",
        ))
    }
}
