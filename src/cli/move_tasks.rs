//! `cgqos move`: whole processes to a group, or threads to a class.

use clap::Args;

use super::Ctx;
use crate::daemon::protocol::{Request, TaskRef};
use crate::error::{CliError, CliResult, Exit};
use crate::layout::Target;
use crate::ops::{self, Dest, Moved};

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
    let targets: Vec<TaskRef> = ids
        .iter()
        .map(|&id| TaskRef {
            id,
            starttime: args.expect_starttime,
        })
        .collect();
    let results: Vec<Moved> = if args.thread {
        match ctx.daemon()? {
            Some(mut d) => d.call(&Request::MoveThreads {
                class: dest.clone(),
                targets,
            })?,
            None => {
                let rules = ctx.rules()?;
                // SAFETY: getuid has no preconditions.
                let uid = unsafe { libc::getuid() };
                let by = format!("cgqos move --thread (uid {uid})");
                let dest =
                    ops::thread_dest(dest, &rules.classes, crate::sched::uclamp_supported(), by)
                        .map_err(CliError::bad_input)?;
                run_direct(ctx, &dest, &targets)?
            }
        }
    } else {
        let group = Target::parse(dest).map_err(CliError::bad_input)?;
        match ctx.daemon()? {
            Some(mut d) => d.call(&Request::Move {
                group: dest.clone(),
                targets,
            })?,
            None => run_direct(ctx, &Dest::Group(group), &targets)?,
        }
    };
    for r in &results {
        match &r.error {
            None => tracing::info!(id = r.id, to = %label, "moved"),
            Some(e) => tracing::warn!(id = r.id, "{e}"),
        }
    }
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
    match ops::moves_exit(&results) {
        Exit::Ok => Ok(()),
        exit => Err(CliError::new(exit, String::new())),
    }
}

fn run_direct(ctx: &Ctx, dest: &Dest, targets: &[TaskRef]) -> CliResult<Vec<Moved>> {
    let mut s = ctx.session()?;
    let results = ops::move_tasks(&mut s, dest, targets);
    if let Dest::Group(_) | Dest::Class(_) = dest {
        // SAFETY: getuid has no preconditions.
        let uid = unsafe { libc::getuid() };
        let process = matches!(dest, Dest::Group(_));
        let by = format!(
            "cgqos move{} (uid {uid})",
            if process { "" } else { " --thread" }
        );
        crate::classify::record_moves(&mut s.state, &s.proc, &results, &by, process);
    }
    s.save()?;
    Ok(results)
}
