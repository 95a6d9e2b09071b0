//! `cgqos vm`: groups for virtual machines (vms/<name>/{vcpu,io}).

use clap::Subcommand;
use serde::Serialize;

use super::Ctx;
use crate::cgroupfs::files;
use crate::daemon::protocol::Request;
use crate::error::CliResult;
use crate::layout;
use crate::ops::{self, Added};
use crate::place::TeardownReport;

#[derive(Subcommand, Debug)]
pub enum VmCommand {
    /// Create (or converge) a VM's groups and print what its launcher needs
    Add {
        /// VM name: 1-64 of a-z, 0-9, '-', '_'
        name: String,
    },
    /// Move a VM's tasks back where they came from and remove its groups
    Remove {
        /// VM name, as given to `vm add`
        name: String,
    },
    /// List VM groups and their members
    List,
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
    let out: Added = match ctx.daemon()? {
        Some(mut d) => d.call(&Request::VmAdd { name: name.into() })?,
        None => {
            let (_topo, board, plan) = ctx.plan()?;
            let mut s = ctx.session()?;
            let added = ops::vm_add(&mut s, &board, &plan, &ctx.g.sysfs_root, name)?;
            s.save()?;
            added
        }
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
    let report: TeardownReport = match ctx.daemon()? {
        Some(mut d) => d.call(&Request::VmRemove { name: name.into() })?,
        None => {
            let mut s = ctx.session()?;
            let r = ops::vm_remove(&mut s, name);
            s.save()?;
            r?
        }
    };
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
    Ok(())
}

fn list(ctx: &Ctx) -> CliResult<()> {
    let cg = ctx.cgroupfs()?;
    let count = |rel: String, file: &str| cg.members(&rel, file).map(|m| m.len()).unwrap_or(0);
    let vms: Vec<Listed> = cg
        .children(layout::VMS)
        .into_iter()
        .map(|name| {
            let g = layout::vm_path(&name);
            Listed {
                processes: count(g.clone(), files::PROCS),
                vcpu_threads: count(layout::child_path(&g, layout::VCPU), files::THREADS),
                io_threads: count(layout::child_path(&g, layout::IO), files::THREADS),
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
