//! `cgqos top`: a live view of the hierarchy, or one sample with `--once` / `--json`.

use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use clap::Args;

use super::Ctx;
use crate::error::{CliError, CliResult, Exit};
use crate::state::State;
use crate::top::model::{Sample, Snapshot, compute};
use crate::top::render;
use crate::top::sample::Sampler;
use crate::top::term;

#[derive(Args, Debug)]
pub struct TopArgs {
    /// Print one sample (two reads --interval apart) and exit; implied by --json and when
    /// stdout or stdin is not a terminal
    #[arg(long)]
    pub once: bool,

    /// Seconds between reads (0.1 to 3600)
    #[arg(long, default_value = "1", value_parser = parse_interval, value_name = "SECONDS")]
    pub interval: Duration,

    /// With --once: the busiest tasks listed per group (0 to 10000)
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(0..=10000), value_name = "N")]
    pub tasks: u16,
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("expected a number of seconds, found {s:?}"))?;
    if !(0.1..=3600.0).contains(&v) {
        return Err(format!("expected 0.1 to 3600 seconds, found {s:?}"));
    }
    Ok(Duration::from_secs_f64(v))
}

pub fn run(ctx: &Ctx, args: TopArgs) -> CliResult<()> {
    let cg = ctx.cgroupfs()?;
    let root = cg.root().to_path_buf();
    if !root.is_dir() {
        return Err(CliError::bad_input(format!(
            "{} is not a directory: run `cgqos setup`, or pass --cgroup-root",
            root.display()
        )));
    }
    ctx.check_cgroup2(&root)?;
    let sampler = Sampler::new(cg, ctx.procfs());
    let state_dir = ctx.g.state_dir.clone();
    let clk_tck = clock_ticks();
    let start = Instant::now();
    let snapshot = || sampler.snapshot(start.elapsed().as_micros() as u64);
    let build = |prev: &Snapshot, cur: &Snapshot| -> Sample {
        let (state, mut warnings) = read_state(&state_dir);
        warnings.splice(0..0, cur.warnings.iter().cloned());
        Sample {
            root: root.display().to_string(),
            interval_ms: cur.at_usec.saturating_sub(prev.at_usec) / 1000,
            cpus: online_cpus(),
            groups: compute(prev, cur, &state, clk_tck),
            warnings,
        }
    };
    let live = !args.once
        && !ctx.g.json
        && std::io::stdout().is_terminal()
        && std::io::stdin().is_terminal();
    if live {
        return term::run(args.interval, snapshot, build)
            .map_err(|e| CliError::new(Exit::Failure, format!("terminal: {e}")));
    }
    let prev = snapshot();
    std::thread::sleep(args.interval);
    let cur = snapshot();
    let mut sample = build(&prev, &cur);
    for g in &mut sample.groups {
        g.tasks.truncate(args.tasks as usize);
    }
    ctx.output(&sample, render::once);
    Ok(())
}

/// The state, for `placed by`, read as every command reads it without the lock
/// (`state::read_unlocked`: the directory checked, no symlink followed, a regular file of
/// bounded size, its version known). A missing file is an empty state; anything else is a
/// warning, since the rest of the view does not need it.
fn read_state(dir: &Path) -> (State, Vec<String>) {
    match crate::state::read_unlocked(dir) {
        Ok(s) => (s.unwrap_or_default(), vec![]),
        Err(e) => (
            State::default(),
            vec![format!("{e}; placed-by is not shown")],
        ),
    }
}

fn clock_ticks() -> u64 {
    match rustix::param::clock_ticks_per_second() {
        0 => 100,
        t => t,
    }
}

fn online_cpus() -> usize {
    crate::sys::online_cpus().unwrap_or(1)
}
