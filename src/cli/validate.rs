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
    let mut out = format!(
        "ok: device {:?}{} from {}\n",
        b.name,
        b.sku.map(|s| format!(" SKU {s}")).unwrap_or_default(),
        b.files.join(", ")
    );
    for (key, shown) in b.rows() {
        let (v, a) = match shown {
            Some((value, Some(at))) => (value, at.to_string()),
            Some((value, None)) => (value, "default".to_string()),
            None => ("-".to_string(), key.unset.to_string()),
        };
        out.push_str(&format!("  {:<32} {v:<10} {a}\n", key.to_string()));
    }
    out
}
