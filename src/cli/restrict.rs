//! `cgqos restrict`: the CPU share (foreground or background) and optional quota of a
//! browser group or a whole VM; the daemon's `restrict` operation (docs/protocol.md).

use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};

use super::Ctx;
use crate::daemon::protocol::{Request, RestrictState};
use crate::error::CliResult;
use crate::layout::Target;
use crate::ops;

#[derive(Args, Debug)]
#[command(after_help = "Examples:
  cgqos restrict vm:termina background --quota 50   # 1/16 of the weight, half a CPU at most
  cgqos restrict vm:termina foreground              # full weight, no quota
  cgqos restrict chrome/background background

The restriction is recorded and written again after every converge; `cgqos status` shows the
group's cpu.weight as `differs` while it is in force. `vm remove` forgets it.")]
pub struct RestrictArgs {
    /// A browser group (ui, foreground, background, chrome/<group>) or a whole VM (arcvm,
    /// vm:<name>, vms/<name>)
    #[arg(value_name = "GROUP")]
    pub group: String,
    /// foreground: the board's full cpu.weight for the group; background: a sixteenth of it
    #[arg(value_enum, value_name = "STATE")]
    pub state: State,
    /// CPU quota in percent of one CPU per 100 ms period (cpu.max) [default: no quota]
    #[arg(long, value_name = "PERCENT")]
    pub quota: Option<u32>,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum State {
    Foreground,
    Background,
}

/// What was written; the daemon's reply has the same shape.
#[derive(Serialize, Deserialize)]
struct Restricted {
    group: String,
    cpu_weight: u32,
    cpu_max: String,
}

pub fn run(ctx: &Ctx, args: RestrictArgs) -> CliResult<()> {
    let state = match args.state {
        State::Foreground => RestrictState::Foreground,
        State::Background => RestrictState::Background,
    };
    let out: Restricted = match ctx.daemon()? {
        Some(mut d) => d.call(&Request::Restrict {
            group: args.group.clone(),
            state,
            quota_percent: args.quota,
        })?,
        None => {
            let board = ctx.board()?;
            let mut s = ctx.session()?;
            let r = ops::restrict(&mut s, &board, &args.group, state, args.quota)?;
            s.save()?;
            Restricted {
                // restrict parsed the group already; this cannot fail.
                group: Target::parse(&args.group).map_or(args.group.clone(), |t| t.path()),
                cpu_weight: r.weight,
                cpu_max: r.cpu_max,
            }
        }
    };
    ctx.output(&out, |o| {
        let quota = match o.cpu_max.split_once(' ') {
            Some(("max", _)) | None => "no quota".to_string(),
            Some((q, period)) => format!("quota {q} of every {period} µs"),
        };
        format!(
            "{}: cpu.weight {}, {quota} (cpu.max {})\n",
            o.group, o.cpu_weight, o.cpu_max
        )
    });
    Ok(())
}
