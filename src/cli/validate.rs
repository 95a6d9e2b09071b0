//! `cgqos validate`: check board files; print the resolved settings and where each came from.

use clap::Args;

use super::Ctx;
use crate::board::yaml::Location;
use crate::board::{Board, Setting};
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

fn at(a: &Option<Location>) -> String {
    match a {
        Some(l) => l.to_string(),
        None => "default".into(),
    }
}

fn text(b: &Board) -> String {
    let t = &b.scheduler_tune;
    let c = &b.cgqos;
    let mut out = format!(
        "ok: device {:?}{} from {}\n",
        b.name,
        b.sku.map(|s| format!(" SKU {s}")).unwrap_or_default(),
        b.files.join(", ")
    );
    fn opt<T: ToString>(s: Option<&Setting<T>>, unset: &str) -> (String, String) {
        match s {
            Some(s) => (s.value.to_string(), at(&s.at)),
            None => ("-".into(), unset.into()),
        }
    }
    let rows = [
        (
            "scheduler-tune.boost-urgent",
            opt(Some(&t.boost_urgent), ""),
        ),
        (
            "scheduler-tune.input-boost",
            opt(t.input_boost.as_ref(), "not set"),
        ),
        (
            "scheduler-tune.cpuset-nonurgent",
            opt(t.cpuset_nonurgent.as_ref(), "detected"),
        ),
        (
            "scheduler-tune.boost-top-app",
            opt(t.boost_top_app.as_ref(), "computed"),
        ),
        (
            "scheduler-tune.boost-arcvm",
            opt(t.boost_arcvm.as_ref(), "not set"),
        ),
        ("cgqos.ui-cpu-weight", opt(Some(&c.ui_cpu_weight), "")),
        (
            "cgqos.foreground-cpu-weight",
            opt(Some(&c.foreground_cpu_weight), ""),
        ),
        (
            "cgqos.background-cpu-weight",
            opt(Some(&c.background_cpu_weight), ""),
        ),
        ("cgqos.arcvm", opt(Some(&c.arcvm), "")),
        ("cgqos.arcvm-cpu-weight", opt(Some(&c.arcvm_cpu_weight), "")),
        ("cgqos.vm-cpu-weight", opt(Some(&c.vm_cpu_weight), "")),
    ];
    for (k, (v, a)) in rows {
        out.push_str(&format!("  {k:<32} {v:<10} {a}\n"));
    }
    out
}
