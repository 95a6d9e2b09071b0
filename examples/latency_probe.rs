//! Wake-up latency probe: `latency_probe [--interval-us N] [--samples N] [--work-us N]`.
//!
//! Sleeps a fixed interval, then (optionally) does a fixed amount of work, and records how
//! late each wake-up was (and how long the work took). Prints one line of key=value pairs
//! with p50, p99 and max in microseconds, for the effect benchmark (tests/vm/bench-effect.sh).

use std::time::{Duration, Instant};

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let interval = Duration::from_micros(arg(&args, "--interval-us", 2000));
    let samples = arg(&args, "--samples", 1000) as usize;
    let work = Duration::from_micros(arg(&args, "--work-us", 0));
    let mut late = Vec::with_capacity(samples);
    let mut frame = Vec::with_capacity(samples);
    for _ in 0..samples {
        let start = Instant::now();
        std::thread::sleep(interval);
        let woke = Instant::now();
        late.push((woke - start).saturating_sub(interval).as_micros() as u64);
        if !work.is_zero() {
            let mut x: u64 = 1;
            while woke.elapsed() < work {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
            frame.push(
                (Instant::now() - start)
                    .saturating_sub(interval)
                    .as_micros() as u64,
            );
        }
    }
    late.sort_unstable();
    frame.sort_unstable();
    let mut line = format!(
        "samples={} interval_us={} wake_late_p50_us={} wake_late_p99_us={} wake_late_max_us={}",
        samples,
        interval.as_micros(),
        pct(&late, 0.50),
        pct(&late, 0.99),
        late.last().copied().unwrap_or(0)
    );
    if !frame.is_empty() {
        line.push_str(&format!(
            " frame_p50_us={} frame_p99_us={} frame_max_us={}",
            pct(&frame, 0.50),
            pct(&frame, 0.99),
            frame.last().copied().unwrap_or(0)
        ));
    }
    println!("{line}");
}
