//! `cgqos setup`: converge the cgroup tree to the plan.

use clap::Args;
use serde::Serialize;

use super::Ctx;
use crate::apply::{Outcome, Report, apply};
use crate::cgroupfs::CgroupFs;
use crate::error::{CliError, CliResult, Exit};

#[derive(Args, Debug)]
pub struct SetupArgs {
    /// Read the tree and report what would change; write nothing
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Fail (exit 5) instead of reporting settings the kernel does not support; checked
    /// before the first write
    #[arg(long)]
    pub strict: bool,
}

#[derive(Serialize)]
struct SetupOut<'a> {
    root: String,
    created_root: bool,
    changed: usize,
    unsupported: usize,
    #[serde(flatten)]
    report: &'a Report,
}

pub fn run(ctx: &Ctx, args: SetupArgs) -> CliResult<()> {
    let (_topo, board, plan) = ctx.plan()?;
    let root = ctx.cgroup_root()?;
    ctx.check_cgroupfs(&root)?;
    let cg = CgroupFs::new(&root);
    tracing::info!(board = %board.name, root = %root.display(), "setup");

    if args.dry_run {
        let report = apply(&plan.steps, &cg, &ctx.g.sysfs_root, true)?;
        print(ctx, &root, false, &report);
        return Ok(());
    }

    let mut sd = ctx.state_dir()?;
    let mut state = sd.load(&root)?;
    let created_root = crate::ops::create_root(&root, &mut state)?;
    if created_root {
        sd.save(&mut state)?;
    }
    if args.strict {
        let preview = apply(&plan.steps, &cg, &ctx.g.sysfs_root, true)?;
        let missing: Vec<String> = preview
            .unsupported()
            .map(|s| format!("{}: {}", s.step, detail(&s.outcome)))
            .collect();
        if !missing.is_empty() {
            if created_root {
                let _ = std::fs::remove_dir(&root);
                state.created_root = false;
                sd.save(&mut state)?;
            }
            return Err(CliError::new(
                Exit::Unsupported,
                format!(
                    "--strict: nothing written; the kernel does not support:\n  {}",
                    missing.join("\n  ")
                ),
            ));
        }
    }
    let before = crate::apply::sysfs_before(&plan.steps, &ctx.g.sysfs_root);
    let report = apply(&plan.steps, &cg, &ctx.g.sysfs_root, false)?;
    crate::apply::remember_sysfs(&report, &ctx.g.sysfs_root, &before, &mut state);
    crate::apply::remember_created(&report, &mut state);
    for s in &report.steps {
        match &s.outcome {
            Outcome::Changed => tracing::info!("{}", s.step),
            Outcome::Unsupported(why) => tracing::debug!("unsupported: {}: {why}", s.step),
            _ => {}
        }
    }
    let unsupported = report.unsupported().count();
    if unsupported > 0 {
        tracing::warn!(
            "{unsupported} setting(s) not supported by this kernel (see `cgqos status`)"
        );
    }
    sd.save(&mut state)?;
    print(ctx, &root, created_root, &report);
    Ok(())
}

fn detail(o: &Outcome) -> &str {
    match o {
        Outcome::Unsupported(s) | Outcome::Skipped(s) => s,
        _ => "",
    }
}

fn print(ctx: &Ctx, root: &std::path::Path, created_root: bool, report: &Report) {
    let out = SetupOut {
        root: root.display().to_string(),
        created_root,
        changed: report.changed(),
        unsupported: report.unsupported().count(),
        report,
    };
    ctx.output(&out, |o| {
        let verb = if o.report.dry_run {
            "would change"
        } else {
            "changed"
        };
        let mut s = String::new();
        if o.created_root {
            s.push_str(&format!("created cgqos root {}\n", o.root));
        }
        // Unsupported settings grouped by reason: one line per missing kernel feature.
        let mut by_reason: Vec<(&str, Vec<&str>)> = Vec::new();
        for step in &o.report.steps {
            match &step.outcome {
                Outcome::Changed => s.push_str(&format!("{verb}: {}\n", step.step)),
                Outcome::Unsupported(why) => match by_reason.iter_mut().find(|(r, _)| r == why) {
                    Some((_, paths)) => paths.push(&step.step.path),
                    None => by_reason.push((why, vec![&step.step.path])),
                },
                _ => {}
            }
        }
        for (why, paths) in by_reason {
            s.push_str(&format!(
                "unsupported ({} setting(s)): {why}: {}\n",
                paths.len(),
                paths.join(", ")
            ));
        }
        if o.changed == 0 {
            s.push_str(&format!(
                "nothing to do: {} already matches the plan",
                o.root
            ));
        } else {
            s.push_str(&format!("{} {verb} in {}", o.changed, o.root));
        }
        if o.unsupported > 0 {
            s.push_str(&format!(
                "; {} setting(s) unsupported by this kernel (--strict makes that an error)",
                o.unsupported
            ));
        }
        s.push('\n');
        s
    });
}
