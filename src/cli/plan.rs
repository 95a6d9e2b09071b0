//! `cgqos plan`: every directory and write `setup` would make, in order. Touches nothing.

use clap::Args;
use serde::Serialize;

use super::Ctx;
use crate::error::CliResult;
use crate::plan::{Derived, Step};

#[derive(Args, Debug)]
pub struct PlanArgs {}

#[derive(Serialize)]
struct PlanOut<'a> {
    board: &'a str,
    sku: Option<i64>,
    derived: &'a Derived,
    steps: &'a [Step],
}

pub fn run(ctx: &Ctx, _args: PlanArgs) -> CliResult<()> {
    let (_topo, board, plan) = ctx.plan()?;
    let out = PlanOut {
        board: &board.name,
        sku: board.sku,
        derived: &plan.derived,
        steps: &plan.steps,
    };
    ctx.output(&out, |o| {
        let d = o.derived;
        let mut s = format!(
            "# board {:?}{}: all CPUs {}, non-urgent CPUs {}, boost-urgent {}%{}{}\n",
            o.board,
            o.sku.map(|s| format!(" SKU {s}")).unwrap_or_default(),
            d.all_cpus,
            d.nonurgent_cpus,
            d.boost_urgent,
            d.arcvm_uclamp_min
                .map(|b| format!(", arcvm uclamp.min {b:.2}%"))
                .unwrap_or_default(),
            d.boost_top_app
                .map(|b| format!(", boost-top-app {b}"))
                .unwrap_or_default(),
        );
        s.push_str("# paths are relative to the cgqos root (sysfs: relative to the sysfs root)\n");
        for step in o.steps {
            s.push_str(&format!("{step}\n"));
        }
        s
    });
    Ok(())
}
