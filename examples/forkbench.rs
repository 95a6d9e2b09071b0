//! Costs the `favordynmods` cgroup2 mount option trades (tests/vm/bench-favordynmods.sh):
//!
//! - `forkbench move DIR_A DIR_B N GAP_MS`: forks an idle child, then moves it N times
//!   between two cgroups (one `cgroup.procs` write each, through descriptors opened once),
//!   sleeping GAP_MS between moves (0: back to back, so each write finds the rcu_sync of the
//!   previous one still active; more than a grace period: each write is isolated);
//! - `forkbench fork N`: N times fork, `_exit(0)` in the child, wait in the parent;
//! - `forkbench threads N`: N times start a thread that returns at once, and join it.
//!
//! Each prints one line of key=value pairs, times in microseconds (p50, p90, max, mean).

use std::fs::File;
use std::io::Write;
use std::time::{Duration, Instant};

fn usage() -> ! {
    eprintln!("usage: forkbench move DIR_A DIR_B N GAP_MS | fork N | threads N");
    std::process::exit(2);
}

fn number(arg: Option<&String>) -> u64 {
    arg.and_then(|a| a.parse().ok()).unwrap_or_else(|| usage())
}

/// `p50=.. p90=.. max=.. mean=..` of per-operation times in microseconds.
fn summary(mut us: Vec<f64>) -> String {
    if us.is_empty() {
        return "n=0".into();
    }
    us.sort_by(f64::total_cmp);
    let at = |p: f64| us[((us.len() - 1) as f64 * p).round() as usize];
    let mean = us.iter().sum::<f64>() / us.len() as f64;
    format!(
        "n={} p50={:.1} p90={:.1} max={:.1} mean={:.1}",
        us.len(),
        at(0.5),
        at(0.9),
        at(1.0),
        mean
    )
}

fn timed(n: u64, mut op: impl FnMut()) -> Vec<f64> {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            op();
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect()
}

/// fork; the child exits at once. Returns the child's pid (in the parent).
fn fork_child(idle: bool) -> libc::pid_t {
    // SAFETY: this program is single-threaded when it forks, and the child calls only
    // async-signal-safe functions (pause, _exit) before it ends.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => {
            eprintln!("fork: {}", std::io::Error::last_os_error());
            std::process::exit(1);
        }
        0 => {
            if idle {
                // SAFETY: pause and _exit have no preconditions.
                unsafe { libc::pause() };
            }
            // SAFETY: _exit has no preconditions; it skips this process's atexit handlers,
            // which belong to the parent.
            unsafe { libc::_exit(0) }
        }
        child => child,
    }
}

fn reap(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: status is a valid pointer for the call's duration.
    unsafe { libc::waitpid(pid, &mut status, 0) };
}

fn moves(args: &[String]) {
    let open = |dir: Option<&String>| {
        let path = format!("{}/cgroup.procs", dir.unwrap_or_else(|| usage()));
        File::options().write(true).open(&path).unwrap_or_else(|e| {
            eprintln!("{path}: {e}");
            std::process::exit(1)
        })
    };
    let mut files = [open(args.get(1)), open(args.get(2))];
    let n = number(args.get(3));
    let gap = Duration::from_millis(number(args.get(4)));
    let child = fork_child(true);
    let line = format!("{child}\n");
    let mut us = Vec::with_capacity(n as usize);
    for i in 0..n as usize {
        if !gap.is_zero() {
            std::thread::sleep(gap);
        }
        let t = Instant::now();
        if let Err(e) = files[i % 2].write_all(line.as_bytes()) {
            eprintln!("moving {child}: {e}");
            std::process::exit(1);
        }
        us.push(t.elapsed().as_secs_f64() * 1e6);
    }
    // SAFETY: kill has no memory preconditions; the child is ours and not yet reaped.
    unsafe { libc::kill(child, libc::SIGKILL) };
    reap(child);
    println!("{}", summary(us));
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("move") => moves(&args),
        Some("fork") => {
            let us = timed(number(args.get(1)), || reap(fork_child(false)));
            println!("{}", summary(us));
        }
        Some("threads") => {
            let us = timed(number(args.get(1)), || {
                std::thread::spawn(|| ()).join().expect("thread")
            });
            println!("{}", summary(us));
        }
        _ => usage(),
    }
}
