//! `cgqos vm`: groups for virtual machines (vms/<name>/{vcpu,io}), and attaching a running
//! VM monitor to them.

use clap::Subcommand;
use serde::Serialize;

use super::Ctx;
use crate::cgroupfs::files;
use crate::daemon::protocol::Request;
use crate::error::{CliError, CliResult, Exit};
use crate::layout;
use crate::ops::{self, Added};
use crate::place::{Held, TeardownReport};
use crate::procfs::ProcessId;
use crate::vm_attach::{self, Attached};

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
    /// Move a running VM monitor into its VM's groups: vCPU threads to vcpu, the rest to io
    Attach {
        /// VM name: 1-64 of a-z, 0-9, '-', '_' (groups made as `vm add` makes them)
        name: String,
        /// The monitor's process id
        pid: String,
        /// VM type (qemu, crosvm); detected from the monitor's program name when absent
        #[arg(long = "type", value_name = "TYPE")]
        vm_type: Option<String>,
        /// A vCPU thread name pattern (`*`, `?`), replacing the type's; repeatable
        #[arg(long = "vcpu-threads", value_name = "GLOB")]
        vcpu_threads: Vec<String>,
        /// Show where each thread would go; move nothing
        #[arg(long)]
        dry_run: bool,
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
        VmCommand::Attach {
            name,
            pid,
            vm_type,
            vcpu_threads,
            dry_run,
        } => attach(ctx, &name, &pid, vm_type, vcpu_threads, dry_run),
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

fn attach(
    ctx: &Ctx,
    name: &str,
    pid: &str,
    vm_type: Option<String>,
    vcpu_threads: Vec<String>,
    dry_run: bool,
) -> CliResult<()> {
    let pid = match pid.parse::<u32>() {
        Ok(n) if n > 0 => ProcessId::new(n),
        _ => {
            return Err(CliError::bad_input(format!(
                "{pid:?} is not a process id (expected a positive integer)"
            )));
        }
    };
    layout::validate_vm_name(name).map_err(CliError::bad_input)?;
    let out: Attached = if dry_run {
        // Reads only: no daemon, no state lock.
        let proc = ctx.procfs();
        let types = vm_types(ctx)?;
        let held = Held::process(&proc, pid, None)?;
        let names =
            vm_attach::thread_names(&types, &proc, &held, vm_type.as_deref(), &vcpu_threads)?;
        vm_attach::preview(&proc, &ctx.cgroup_root()?, name, &held, &names)?
    } else {
        match ctx.daemon()? {
            Some(mut d) => d.call(&Request::VmAttach {
                name: name.into(),
                pid: pid.get(),
                vm_type,
                vcpu_threads,
            })?,
            None => attach_direct(ctx, name, pid, vm_type.as_deref(), &vcpu_threads)?,
        }
    };
    ctx.output(&out, attached_text);
    match out.exit() {
        Exit::Ok => Ok(()),
        exit => Err(CliError::new(exit, String::new())),
    }
}

/// Without a daemon: one pass; threads created later are not placed.
fn attach_direct(
    ctx: &Ctx,
    name: &str,
    pid: ProcessId,
    vm_type: Option<&str>,
    vcpu_threads: &[String],
) -> CliResult<Attached> {
    let (_topo, board, plan) = ctx.plan()?;
    let types = vm_types(ctx)?;
    let mut s = ctx.session()?;
    let held = Held::process(&s.proc, pid, None)?;
    let names = vm_attach::thread_names(&types, &s.proc, &held, vm_type, vcpu_threads)?;
    let sysfs = ctx.g.sysfs_root.clone();
    let mut ensure =
        |s: &mut ops::Session| vm_attach::ensure_groups(s, &board, &plan, &sysfs, name);
    let r = vm_attach::attach(&mut s, &mut ensure, name, &held, &names);
    // What moved is recorded, whatever failed after.
    s.save()?;
    r
}

/// The VM types: `vm-types.yaml` of the configuration directory over the shipped ones.
fn vm_types(ctx: &Ctx) -> CliResult<vm_attach::VmTypes> {
    vm_attach::VmTypes::load(&ctx.g.config_dir).map_err(|e| CliError::bad_input(e.to_string()))
}

fn attached_text(a: &Attached) -> String {
    let verb = if a.dry_run {
        "would attach"
    } else {
        "attached"
    };
    let mut s = format!(
        "vm {}: {verb} {} process {} ({}){}\n",
        a.name,
        a.vm_type,
        a.pid,
        a.group,
        if a.created { ", groups created" } else { "" }
    );
    s.push_str(&format!("{:>8}  {:<16} {}\n", "tid", "name", "part"));
    for t in &a.threads {
        s.push_str(&format!("{:>8}  {:<16} {}", t.tid, t.name, t.part));
        if let Some(e) = &t.error {
            s.push_str(&format!("   error: {e}"));
        }
        s.push('\n');
    }
    if a.exited > 0 {
        s.push_str(&format!("{} thread(s) exited meanwhile\n", a.exited));
    }
    s
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
