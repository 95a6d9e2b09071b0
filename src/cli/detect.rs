//! `cgqos detect`: the CPU topology as cgqos sees it.

use clap::Args;

use super::Ctx;
use crate::error::CliResult;
use crate::topology::Topology;

#[derive(Args, Debug)]
pub struct DetectArgs {
    /// Ignore the board's cpuset-nonurgent: show what the kernel alone says
    #[arg(long)]
    pub no_board: bool,
}

pub fn run(ctx: &Ctx, args: DetectArgs) -> CliResult<()> {
    // Not ctx.topology(): the report lists the warnings, so they are not logged as well.
    let mut topo = Topology::detect(&ctx.g.sysfs_root)?;
    if !args.no_board {
        let board = ctx.board()?;
        if let Some(list) = &board.scheduler_tune.cpuset_nonurgent {
            // Validated as the plan validates it (CPUs must be possible), and trimmed the
            // same way: isolated or offline CPUs never get non-urgent work.
            crate::plan::Plan::build(&topo, &board)?;
            let usable = list.value.intersection(&topo.all);
            topo.override_little(usable);
        }
    }
    ctx.output(&topo, text);
    Ok(())
}

fn text(t: &Topology) -> String {
    let source = match t.source {
        Some(s) => serde_json::to_value(s)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default(),
        None => "none (all CPUs alike)".into(),
    };
    let mut out = format!(
        "hybrid:   {}\nsource:   {source}\nall:      {}\nlittle:   {}\n",
        if t.hybrid { "yes" } else { "no" },
        t.all,
        if t.little.is_empty() {
            "(none)".to_string()
        } else {
            t.little.to_string()
        },
    );
    if !t.isolated.is_empty() {
        out.push_str(&format!(
            "isolated: {} (left out of every set)\n",
            t.isolated
        ));
    }
    out.push_str("cpu  online  value\n");
    for c in &t.cpus {
        out.push_str(&format!(
            "{:<4} {:<7} {}{}\n",
            c.cpu,
            if c.online { "yes" } else { "no" },
            c.value.map_or("-".into(), |v| v.to_string()),
            if c.isolated { "  (isolated)" } else { "" }
        ));
    }
    for w in &t.warnings {
        out.push_str(&format!("warning: {w}\n"));
    }
    out
}
