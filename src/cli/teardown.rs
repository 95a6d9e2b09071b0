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
    let (attrs, _) = crate::classify::restore_attrs(&mut session.state, &session.proc);
    if attrs > 0 {
        tracing::info!("restored the scheduling attributes of {attrs} thread(s)");
    }
    let mut report = TeardownReport::default();
    let mut placer = session.placer();
    for subtree in [layout::CHROME, layout::VMS] {
        placer.evacuate(subtree, &session.state, &mut report);
    }
    let (sysfs, errors) = crate::apply::restore_sysfs(&mut session.state);
    report.sysfs_restored = sysfs;
    report.errors.extend(errors);
    // Only a root setup created, and never a hierarchy's root (a cgroup2 mount point): a
    // record naming one is not to be trusted that far.
    if session.state.created_root && report.errors.is_empty() {
        let root = session.cg.root().display().to_string();
        if session.cg.is_hierarchy_root("") || is_mount_point(session.cg.root()) {
            tracing::warn!("{root} is a cgroup2 mount root: left in place");
        } else {
            match session.cg.rmdir("") {
                Ok(()) => report.removed.push(root),
                Err(e) => report.errors.push(e.to_string()),
            }
        }
    }
    if report.errors.is_empty() {
        session.sd.clear()?;
    } else {
        // Keep what is still needed to finish the job on a rerun (the VM names among it:
        // they say which VM groups cgqos made).
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
        for v in &r.sysfs_restored {
            s.push_str(&format!("restored {v}\n"));
        }
        for e in &r.errors {
            s.push_str(&format!("error: {e}\n"));
        }
        if r.restored.is_empty()
            && r.removed.is_empty()
            && r.errors.is_empty()
            && r.sysfs_restored.is_empty()
        {
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

/// Whether `dir` is a mount point (its device differs from its parent's).
fn is_mount_point(dir: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(d), Some(Ok(p))) = (std::fs::metadata(dir), dir.parent().map(std::fs::metadata)) else {
        return false;
    };
    d.dev() != p.dev()
}
