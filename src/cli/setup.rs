//! `cgqos setup`: converge the cgroup tree to the plan.

use clap::Args;
use serde::Serialize;

use super::Ctx;
use crate::apply::{MountReport, Outcome, Report, apply};
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
    /// The board's `favor-dynmods` (absent when it does not ask for it).
    #[serde(skip_serializing_if = "Option::is_none")]
    favordynmods: Option<&'a MountReport>,
    #[serde(flatten)]
    report: &'a Report,
}

pub fn run(ctx: &Ctx, args: SetupArgs) -> CliResult<()> {
    let (_topo, board, plan) = ctx.plan()?;
    let root = ctx.cgroup_root()?;
    ctx.check_cgroupfs(&root)?;
    let cg = CgroupFs::new(&root);
    tracing::info!(board = %board.name, root = %root.display(), "setup");

    let favor = |dry_run| -> CliResult<Option<MountReport>> {
        if !board.cgqos.favor_dynmods.value {
            return Ok(None);
        }
        let mountinfo = || ctx.procfs().mountinfo().unwrap_or_default();
        crate::apply::favor_dynmods(&root, &mountinfo(), &ctx.g.sysfs_root, dry_run, mountinfo)
            .map(Some)
            .map_err(|e| CliError::new(Exit::KernelRefused, e.to_string()))
    };

    if args.dry_run {
        let mount = favor(true)?;
        let report = apply(&plan.steps, &cg, &ctx.g.sysfs_root, true)?;
        print(ctx, &root, false, mount.as_ref(), &report);
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
        let mut missing: Vec<String> = preview
            .unsupported()
            .map(|s| format!("{}: {}", s.step, detail(&s.outcome)))
            .collect();
        if let Some(m) = favor(true)?.filter(|m| matches!(m.outcome, Outcome::Unsupported(_))) {
            missing.push(format!("favordynmods: {}", detail(&m.outcome)));
        }
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
    // First: with the option on, the subtree_control writes below skip grace periods too.
    let mount = favor(false)?;
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
    let unsupported = report.unsupported().count() + count(mount.as_ref(), unsupported_outcome);
    if unsupported > 0 {
        tracing::warn!(
            "{unsupported} setting(s) not supported by this kernel (see `cgqos status`)"
        );
    }
    sd.save(&mut state)?;
    print(ctx, &root, created_root, mount.as_ref(), &report);
    Ok(())
}

fn unsupported_outcome(o: &Outcome) -> bool {
    matches!(o, Outcome::Unsupported(_))
}

fn count(mount: Option<&MountReport>, f: fn(&Outcome) -> bool) -> usize {
    mount.is_some_and(|m| f(&m.outcome)).into()
}

fn detail(o: &Outcome) -> &str {
    match o {
        Outcome::Unsupported(s) | Outcome::Skipped(s) => s,
        _ => "",
    }
}

fn print(
    ctx: &Ctx,
    root: &std::path::Path,
    created_root: bool,
    mount: Option<&MountReport>,
    report: &Report,
) {
    let out = SetupOut {
        root: root.display().to_string(),
        created_root,
        changed: report.changed() + count(mount, |o| matches!(o, Outcome::Changed)),
        unsupported: report.unsupported().count() + count(mount, unsupported_outcome),
        favordynmods: mount,
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
        if let Some(m) = o.favordynmods {
            s.push_str(&mount_line(verb, m));
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

/// The text line of the `favor-dynmods` outcome (empty when already on).
fn mount_line(verb: &str, m: &MountReport) -> String {
    match &m.outcome {
        Outcome::Changed => format!("{verb}: remount {} with favordynmods\n", m.mount),
        Outcome::Unchanged => String::new(),
        Outcome::Unsupported(why) => format!("unsupported: favordynmods: {why}\n"),
        Outcome::Skipped(why) => format!("skipped: favordynmods: {why}\n"),
    }
}
