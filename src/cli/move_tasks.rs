//! `cgqos move`: whole processes to a group, or threads to a class.

use clap::Args;

use super::Ctx;
use crate::daemon::protocol::{Request, TaskRef};
use crate::error::{CliError, CliResult, Exit};
use crate::layout::Target;
use crate::ops::{self, Dest, Moved, ThreadDest};

#[derive(Args, Debug)]
#[command(
    override_usage = "cgqos move [OPTIONS] PID... GROUP\n       cgqos move --thread [OPTIONS] TID... CLASS",
    after_help = "Examples:
  cgqos move 1234 background            # every thread keeps its urgent/non-urgent class
  cgqos move 1234 1240 chrome/foreground
  cgqos move 4321 arcvm-io
  cgqos move --thread 1237 non-urgent   # within the thread's current process group
  cgqos move --thread 5000 5001 vcpu    # vCPU threads of a VM"
)]
pub struct MoveArgs {
    /// Move threads to a class (urgent, non-urgent, default; vcpu, io in VM groups)
    #[arg(long)]
    pub thread: bool,
    /// Refuse unless the (single) id's start time, field 22 of /proc/<id>/stat, is this:
    /// protects a caller that looked the id up earlier against id reuse
    #[arg(long, value_name = "TICKS")]
    pub expect_starttime: Option<u64>,
    /// Process ids (thread ids with --thread)
    #[arg(required = true, num_args = 1.., value_name = "ID")]
    pub ids: Vec<String>,
    /// Group (ui, foreground, background, arcvm, vm:<name>, chrome/..., vms/...); with
    /// --thread, a thread class
    #[arg(required = true, value_name = "GROUP|CLASS")]
    pub dest: String,
}

pub fn run(ctx: &Ctx, args: MoveArgs) -> CliResult<()> {
    let dest = &args.dest;
    let ids = parse_ids(&args.ids)?;
    let targets = task_refs(&ids, args.expect_starttime)?;
    let results = if args.thread {
        move_threads(ctx, dest, targets)?
    } else {
        move_processes(ctx, dest, targets)?
    };
    // Each failure is printed once, in the report (a line of its own in text), not also
    // as a log line.
    for r in results.iter().filter(|r| r.error.is_none()) {
        tracing::info!(id = r.id, to = %dest, "moved");
    }
    ctx.output(&results, |rs| report_text(rs));
    // Each failure was printed above; the exit code tells the worst of them.
    match ops::moves_exit(&results) {
        Exit::Ok => Ok(()),
        exit => Err(CliError::new(exit, String::new())),
    }
}

/// The command line's ids: positive integers.
fn parse_ids(ids: &[String]) -> CliResult<Vec<u32>> {
    ids.iter()
        .map(|s| match s.parse::<u32>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(CliError::bad_input(format!(
                "{s:?} is not a process or thread id (expected a positive integer)"
            ))),
        })
        .collect()
}

/// The targets of the move, each with the start time it must have (`--expect-starttime`,
/// which names a single id).
fn task_refs(ids: &[u32], starttime: Option<u64>) -> CliResult<Vec<TaskRef>> {
    if starttime.is_some() && ids.len() != 1 {
        return Err(CliError::bad_input(
            "--expect-starttime takes exactly one id",
        ));
    }
    Ok(ids.iter().map(|&id| TaskRef { id, starttime }).collect())
}

/// `--thread`: through the daemon when one runs, else directly.
fn move_threads(ctx: &Ctx, class: &str, targets: Vec<TaskRef>) -> CliResult<Vec<Moved>> {
    Ok(match ctx.daemon()? {
        Some(mut d) => d.call(&Request::MoveThreads {
            class: class.to_string(),
            targets,
        })?,
        None => {
            let rules = ctx.rules()?;
            let uid = rustix::process::getuid().as_raw();
            let by = format!("cgqos move --thread (uid {uid})");
            let dest = ops::thread_dest(class, &rules.classes, by).map_err(CliError::bad_input)?;
            run_direct(ctx, &dest, &targets)?
        }
    })
}

/// Whole processes: the group is checked here first, then the move goes through the
/// daemon when one runs, else directly.
fn move_processes(ctx: &Ctx, dest: &str, targets: Vec<TaskRef>) -> CliResult<Vec<Moved>> {
    let group = parse_group(ctx, dest)?;
    Ok(match ctx.daemon()? {
        Some(mut d) => d.call(&Request::Move {
            group: dest.to_string(),
            targets,
        })?,
        None => run_direct(ctx, &Dest::Group(group), &targets)?,
    })
}

/// `dest` as a group; a class of rules.d is not a group either: the error points at
/// --thread as for the built-in class names (Target::parse knows only those).
fn parse_group(ctx: &Ctx, dest: &str) -> CliResult<Target> {
    Target::parse(dest).map_err(|e| {
        match ctx.rules().ok().filter(|r| r.classes.get(dest).is_some()) {
            Some(_) if !e.contains("--thread") => CliError::bad_input(format!(
                "{dest:?} is a thread class, not a group: `cgqos move --thread TID... {dest}` moves threads to a class"
            )),
            _ => CliError::bad_input(e),
        }
    })
}

/// The text report: a line per id, where it is and how many of its threads are in each
/// class, or why it was not moved.
fn report_text(rs: &[Moved]) -> String {
    let mut s = String::new();
    for r in rs {
        if let Some(e) = &r.error {
            s.push_str(&format!("{}: not moved: {e}\n", r.id));
            continue;
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
            class_counts(r)
                .iter()
                .map(|(c, n)| format!("{n} {c}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    s
}

/// How many of a moved process's threads are in each class ("outside": in none), in the
/// order the classes first appear.
fn class_counts(r: &Moved) -> Vec<(String, usize)> {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for t in &r.threads {
        let c = t.class.clone().unwrap_or_else(|| "outside".into());
        match counts.iter_mut().find(|(k, _)| *k == c) {
            Some((_, n)) => *n += 1,
            None => counts.push((c, 1)),
        }
    }
    counts
}

fn run_direct(ctx: &Ctx, dest: &Dest, targets: &[TaskRef]) -> CliResult<Vec<Moved>> {
    let mut s = ctx.session()?;
    let results = ops::move_tasks(&mut s, dest, targets);
    if let Dest::Group(_) | Dest::Thread(ThreadDest::Vm(_)) = dest {
        let uid = rustix::process::getuid().as_raw();
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
