//! `cgqos vm`: groups for virtual machines (vms/<name>/{vcpu,io}).

use clap::Subcommand;
use serde::Serialize;

use super::Ctx;
use crate::apply::{Outcome, apply};
use crate::cgroupfs::files;
use crate::error::{CliError, CliResult, Exit};
use crate::layout::{self, validate_vm_name};
use crate::place::TeardownReport;
use crate::plan::vm_steps;

#[derive(Subcommand, Debug)]
pub enum VmCommand {
    /// Create (or converge) a VM's groups and print what its launcher needs
    Add {
        /// VM name: 1-64 of a-z, 0-9, '-', '_'
        name: String,
    },
    /// Move a VM's tasks back where they came from and remove its groups
    Remove { name: String },
    /// List VM groups and their members
    List,
}

#[derive(Serialize)]
struct Added {
    name: String,
    group: String,
    vcpu: String,
    io: String,
    changed: usize,
    unsupported: Vec<String>,
    /// uclamp.min percent for the guest's top app (ARCVM's androidboot.arc_top_app_uclamp_min)
    boost_top_app: Option<u32>,
    cpu_uclamp_min: Option<f64>,
}

#[derive(Serialize)]
struct Listed {
    name: String,
    processes: usize,
    vcpu_threads: usize,
    io_threads: usize,
}

pub fn run(ctx: &Ctx, cmd: VmCommand) -> CliResult<()> {
    match cmd {
        VmCommand::Add { name } => add(ctx, &name),
        VmCommand::Remove { name } => remove(ctx, &name),
        VmCommand::List => list(ctx),
    }
}

fn add(ctx: &Ctx, name: &str) -> CliResult<()> {
    validate_vm_name(name).map_err(CliError::bad_input)?;
    let (_topo, board, plan) = ctx.plan()?;
    let cg = ctx.cgroupfs()?;
    if !cg.exists(layout::VMS) {
        return Err(CliError::bad_input(format!(
            "{} does not exist: run `cgqos setup` first",
            cg.path(layout::VMS).display()
        )));
    }
    let is_arcvm = name == layout::ARCVM;
    let (weight, uclamp) = if is_arcvm {
        (
            board.cgqos.arcvm_cpu_weight.value,
            plan.derived.arcvm_uclamp_min,
        )
    } else {
        (board.cgqos.vm_cpu_weight.value, None)
    };
    let steps = vm_steps(name, weight, uclamp);
    let sd = ctx.state_dir()?;
    let mut state = sd.load(cg.root())?;
    let report = apply(&steps, &cg, &ctx.g.sysfs_root, false)?;
    state.vms.insert(name.to_string());
    sd.save(&state)?;
    let group = format!("{}/{name}", layout::VMS);
    let out = Added {
        name: name.into(),
        vcpu: cg
            .path(&format!("{group}/{}", layout::VCPU))
            .display()
            .to_string(),
        io: cg
            .path(&format!("{group}/{}", layout::IO))
            .display()
            .to_string(),
        group: cg.path(&group).display().to_string(),
        changed: report.changed(),
        unsupported: report
            .steps
            .iter()
            .filter_map(|s| match &s.outcome {
                Outcome::Unsupported(why) => Some(format!("{}: {why}", s.step)),
                _ => None,
            })
            .collect(),
        boost_top_app: plan.derived.boost_top_app,
        cpu_uclamp_min: uclamp,
    };
    ctx.output(&out, |o| {
        let mut s = format!(
            "vm {}: {} ({} change(s))\n  processes: cgqos move <pid> vm:{}\n  vCPU threads: cgqos move --thread <tid> vcpu   ({})\n  I/O threads:  cgqos move --thread <tid> io     ({})\n",
            o.name, o.group, o.changed, o.name, o.vcpu, o.io
        );
        match o.boost_top_app {
            Some(b) => s.push_str(&format!("  boost-top-app: {b}\n")),
            None => s.push_str("  boost-top-app: none (CPUs are symmetric)\n"),
        }
        for u in &o.unsupported {
            s.push_str(&format!("  unsupported: {u}\n"));
        }
        s
    });
    Ok(())
}

fn remove(ctx: &Ctx, name: &str) -> CliResult<()> {
    validate_vm_name(name).map_err(CliError::bad_input)?;
    let mut session = ctx.session()?;
    let group = format!("{}/{name}", layout::VMS);
    if !session.cg.exists(&group) {
        return Err(CliError::bad_input(format!(
            "no VM group {}",
            session.cg.path(&group).display()
        )));
    }
    let mut report = TeardownReport::default();
    session
        .placer()
        .evacuate(&group, &session.state, &mut report);
    if report.errors.is_empty() {
        session.state.vms.remove(name);
    }
    session.save()?;
    ctx.output(&report, |r| {
        let mut s = format!(
            "vm {name}: {} task(s) moved out, {} group(s) removed\n",
            r.restored.len(),
            r.removed.len()
        );
        for e in &r.errors {
            s.push_str(&format!("error: {e}\n"));
        }
        s
    });
    if report.errors.is_empty() {
        Ok(())
    } else {
        Err(CliError::new(Exit::KernelRefused, "vm remove incomplete"))
    }
}

fn list(ctx: &Ctx) -> CliResult<()> {
    let cg = ctx.cgroupfs()?;
    let count = |rel: String, file: &str| cg.members(&rel, file).map(|m| m.len()).unwrap_or(0);
    let vms: Vec<Listed> = cg
        .children(layout::VMS)
        .into_iter()
        .map(|name| {
            let g = format!("{}/{name}", layout::VMS);
            Listed {
                processes: count(g.clone(), files::PROCS),
                vcpu_threads: count(format!("{g}/{}", layout::VCPU), files::THREADS),
                io_threads: count(format!("{g}/{}", layout::IO), files::THREADS),
                name,
            }
        })
        .collect();
    ctx.output(&vms, |vs| {
        if vs.is_empty() {
            return "no VM groups\n".into();
        }
        let mut s = format!(
            "{:<20} {:>9} {:>12} {:>10}\n",
            "vm", "processes", "vcpu threads", "io threads"
        );
        for v in vs {
            s.push_str(&format!(
                "{:<20} {:>9} {:>12} {:>10}\n",
                v.name, v.processes, v.vcpu_threads, v.io_threads
            ));
        }
        s
    });
    Ok(())
}
