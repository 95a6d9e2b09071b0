//! `cgqos validate`: check board files; print the resolved settings and where each came from.

use clap::Args;

use super::Ctx;
use crate::board::Board;
use crate::error::{CliError, CliResult};

#[derive(Args, Debug)]
pub struct ValidateArgs {}

pub fn run(ctx: &Ctx, _args: ValidateArgs) -> CliResult<()> {
    if ctx.g.models.is_empty() && ctx.g.board.is_none() {
        return Err(CliError::bad_input(
            "validate needs --model FILE (repeatable) or --board NAME",
        ));
    }
    let board = ctx.board()?;
    ctx.output(&board, text);
    Ok(())
}

fn text(b: &Board) -> String {
    let at = |a: &Option<crate::board::yaml::Location>| match a {
        Some(l) => l.to_string(),
        None => "default".into(),
    };
    let t = &b.scheduler_tune;
    let c = &b.cgqos;
    let mut out = format!(
        "ok: device {:?}{} from {}\n",
        b.name,
        b.sku.map(|s| format!(" SKU {s}")).unwrap_or_default(),
        b.files.join(", ")
    );
    let mut line =
        |k: &str, v: String, a: String| out.push_str(&format!("  {k:<28} {v:<10} {a}\n"));
    line(
        "scheduler-tune.boost-urgent",
        t.boost_urgent.value.to_string(),
        at(&t.boost_urgent.at),
    );
    match &t.input_boost {
        Some(s) => line("scheduler-tune.input-boost", s.value.to_string(), at(&s.at)),
        None => line("scheduler-tune.input-boost", "-".into(), "not set".into()),
    }
    match &t.cpuset_nonurgent {
        Some(s) => line(
            "scheduler-tune.cpuset-nonurgent",
            s.value.to_string(),
            at(&s.at),
        ),
        None => line(
            "scheduler-tune.cpuset-nonurgent",
            "-".into(),
            "detected".into(),
        ),
    }
    match &t.boost_top_app {
        Some(s) => line(
            "scheduler-tune.boost-top-app",
            s.value.to_string(),
            at(&s.at),
        ),
        None => line(
            "scheduler-tune.boost-top-app",
            "-".into(),
            "computed".into(),
        ),
    }
    match &t.boost_arcvm {
        Some(s) => line("scheduler-tune.boost-arcvm", s.value.to_string(), at(&s.at)),
        None => line("scheduler-tune.boost-arcvm", "-".into(), "not set".into()),
    }
    line(
        "cgqos.ui-cpu-weight",
        c.ui_cpu_weight.value.to_string(),
        at(&c.ui_cpu_weight.at),
    );
    line(
        "cgqos.foreground-cpu-weight",
        c.foreground_cpu_weight.value.to_string(),
        at(&c.foreground_cpu_weight.at),
    );
    line(
        "cgqos.background-cpu-weight",
        c.background_cpu_weight.value.to_string(),
        at(&c.background_cpu_weight.at),
    );
    line("cgqos.arcvm", c.arcvm.value.to_string(), at(&c.arcvm.at));
    line(
        "cgqos.arcvm-cpu-weight",
        c.arcvm_cpu_weight.value.to_string(),
        at(&c.arcvm_cpu_weight.at),
    );
    line(
        "cgqos.vm-cpu-weight",
        c.vm_cpu_weight.value.to_string(),
        at(&c.vm_cpu_weight.at),
    );
    out
}
