//! `cgqos move`: whole processes to a group, or threads to a class.

use clap::Args;
use serde::Serialize;

use super::Ctx;
use crate::error::{CliError, CliResult, Exit};
use crate::layout::{self, Target};
use crate::place::ThreadPlace;
use crate::procfs::{ProcessId, ThreadId};

#[derive(Args, Debug)]
#[command(after_help = "Examples:
  cgqos move 1234 background            # every thread keeps its urgent/non-urgent class
  cgqos move 1234 1240 chrome/foreground
  cgqos move 4321 arcvm-io
  cgqos move --thread 1237 non-urgent   # within the thread's current process group
  cgqos move --thread 5000 5001 vcpu    # vCPU threads of a VM")]
pub struct MoveArgs {
    /// Move threads to a class (urgent, non-urgent, default; vcpu, io in VM groups)
    #[arg(long)]
    pub thread: bool,
    /// Refuse unless the (single) id's start time, field 22 of /proc/<id>/stat, is this:
    /// protects a caller that looked the id up earlier against id reuse
    #[arg(long, value_name = "TICKS")]
    pub expect_starttime: Option<u64>,
    /// Process ids (thread ids with --thread) followed by the group (class with --thread)
    #[arg(required = true, num_args = 2.., value_name = "ID... GROUP")]
    pub args: Vec<String>,
}

#[derive(Serialize)]
struct Moved {
    id: u32,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    threads: Vec<ThreadPlace>,
}

pub fn run(ctx: &Ctx, args: MoveArgs) -> CliResult<()> {
    let (ids, dest) = args.args.split_at(args.args.len() - 1);
    let dest = &dest[0];
    let label = dest.clone();
    let ids: Vec<u32> = ids
        .iter()
        .map(|s| match s.parse::<u32>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(CliError::bad_input(format!(
                "{s:?} is not a process or thread id (expected a positive integer)"
            ))),
        })
        .collect::<Result<_, _>>()?;
    if args.expect_starttime.is_some() && ids.len() != 1 {
        return Err(CliError::bad_input(
            "--expect-starttime takes exactly one id",
        ));
    }
    enum Dest {
        Group(Target),
        Class(Option<&'static str>),
    }
    let dest = if args.thread {
        Dest::Class(layout::parse_class(dest).map_err(CliError::bad_input)?)
    } else {
        Dest::Group(Target::parse(dest).map_err(CliError::bad_input)?)
    };

    let mut session = ctx.session()?;
    let mut state = std::mem::take(&mut session.state);
    let mut placer = session.placer();
    let mut results = Vec::new();
    let mut worst: Option<CliError> = None;
    for id in ids {
        let r = match &dest {
            Dest::Group(t) => {
                placer.move_process(ProcessId(id), t, args.expect_starttime, &mut state)
            }
            Dest::Class(c) => placer
                .move_thread(ThreadId(id), *c, args.expect_starttime, &mut state)
                .map(|t| vec![t]),
        };
        match r {
            Ok(threads) => {
                tracing::info!(id, to = %label, "moved");
                results.push(Moved {
                    id,
                    ok: true,
                    error: None,
                    threads,
                })
            }
            Err(e) => {
                let e = CliError::from(e);
                tracing::warn!(id, "{e}");
                results.push(Moved {
                    id,
                    ok: false,
                    error: Some(e.message.clone()),
                    threads: vec![],
                });
                // A vanished id is the mildest failure; anything else decides the exit.
                if worst.as_ref().is_none_or(|w| w.exit == Exit::NoSuchProcess) {
                    worst = Some(e);
                }
            }
        }
    }
    session.state = state;
    session.save()?;
    ctx.output(&results, |rs| {
        let mut s = String::new();
        for r in rs {
            if let Some(e) = &r.error {
                s.push_str(&format!("{}: not moved: {e}\n", r.id));
                continue;
            }
            let mut counts: Vec<(String, usize)> = Vec::new();
            for t in &r.threads {
                let c = t.class.clone().unwrap_or_else(|| "outside".into());
                match counts.iter_mut().find(|(k, _)| *k == c) {
                    Some((_, n)) => *n += 1,
                    None => counts.push((c, 1)),
                }
            }
            let group = r
                .threads
                .first()
                .and_then(|t| t.group.clone())
                .unwrap_or_default();
            s.push_str(&format!(
                "{}: in {group}: {} thread(s) ({})\n",
                r.id,
                r.threads.len(),
                counts
                    .iter()
                    .map(|(c, n)| format!("{n} {c}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        s
    });
    // Each failure was printed above; the exit code tells the worst of them.
    match worst {
        Some(e) => Err(CliError::new(e.exit, String::new())),
        None => Ok(()),
    }
}
