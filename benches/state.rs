//! The state store: what one change costs to persist with 100, 2,000 and 10,000 recorded
//! tasks, on tmpfs (where the daemon's `/run/cgqos` is) and on a disk file system.
//!
//! Baseline, measured in the same run: the whole-file save cgqos did before the journal
//! (serialise the whole state, write a temporary file, fsync, rename). Against it: the
//! journal (`StateDir::save` after a move's changes: its task record and its `why` record,
//! one write, fdatasync; the compactions it triggers are counted in the mean), the same
//! append without fdatasync (what durability costs), one compaction, and a load (snapshot
//! plus a journal about to be compacted: the daemon's start).
//!
//! No root needed: `cargo bench --bench state`.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use cgqos::procfs::{ProcessId, StartTime};
use cgqos::sched::TaskAttrs;
use cgqos::state::{AttrRecord, JOURNAL_FILE, Record, STATE_FILE, State, StateDir, Why};

const SIZES: [u32; 3] = [100, 2_000, 10_000];
const ROOT: &str = "/sys/fs/cgroup/cgqos";

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return; // `cargo test --benches` probing
    }
    let shm = Path::new("/dev/shm");
    let mut bases = vec![];
    if fs_type(shm) == "tmpfs" {
        bases.push(shm.to_path_buf());
    } else {
        println!("(no tmpfs at /dev/shm: the tmpfs rows are left out)");
    }
    bases.push(std::env::temp_dir());
    println!(
        "{:<44} {:>10} {:>10} {:>10} {:>10}",
        "one change persisted", "p50", "p99", "max", "mean"
    );
    for base in &bases {
        println!("\n-- on {} ({})", fs_type(base), base.display());
        for n in SIZES {
            bench_size(base, n);
        }
    }
}

fn bench_size(base: &Path, n: u32) {
    let dir = tempfile::Builder::new()
        .prefix("cgqos-bench-state-")
        .tempdir_in(base)
        .unwrap();
    let mut sd = StateDir::lock(dir.path()).unwrap();
    let mut state = sd.load(Path::new(ROOT)).unwrap();
    for id in 1..=n {
        record_move(&mut state, id, 0);
    }
    sd.save(&mut state).unwrap(); // a snapshot of n tasks
    let snapshot = file_len(dir.path(), STATE_FILE);
    println!("{n} tasks (snapshot {} kB):", snapshot / 1024);
    let old = baseline(base, &state, n);
    let amortised = journal(base, dir.path(), &mut sd, &mut state, n, snapshot);
    let load = measure(if n > 2_000 { 5 } else { 20 }, |_| {
        drop(sd.load(Path::new(ROOT)).unwrap());
    });
    row("  load: snapshot + journal replay", &load);
    println!(
        "  => persisting one change: {:.0}x faster than the whole-file save",
        old.mean.as_secs_f64() / amortised.as_secs_f64()
    );
}

/// The whole-file save every change paid before, and the load of that file alone.
fn baseline(base: &Path, state: &State, n: u32) -> Stats {
    // Fewer rounds where each costs milliseconds.
    let rounds = (400_000 / n as usize).clamp(20, 1000);
    let dir = tempfile::Builder::new()
        .prefix("cgqos-bench-state-old-")
        .tempdir_in(base)
        .unwrap();
    let mut state = state.clone();
    let old = measure(rounds, |i| {
        record_move(&mut state, 1 + i as u32 % n, i as u64);
        whole_file_save(dir.path(), &state);
    });
    row("  baseline: whole-file save (fsync, rename)", &old);
    let mut sd = StateDir::lock(dir.path()).unwrap();
    let load = measure(if n > 2_000 { 5 } else { 20 }, |_| {
        drop(sd.load(Path::new(ROOT)).unwrap());
    });
    row("  baseline: load of that file alone", &load);
    old
}

/// One move's changes saved, round after round, through the journal and the compactions it
/// triggers; returns the amortised cost of one.
fn journal(
    base: &Path,
    dir: &Path,
    sd: &mut StateDir,
    state: &mut State,
    n: u32,
    snapshot: u64,
) -> Duration {
    // Enough rounds to pass compactions at every size on tmpfs.
    let rounds = if fs_type(base) == "tmpfs" {
        60_000
    } else {
        3_000
    };
    let mut compactions = Vec::new();
    let mut appends = Vec::new();
    for i in 0..rounds {
        record_move(state, 1 + i as u32 % n, 1_000_000 + i as u64);
        let before = state.generation;
        let t = Instant::now();
        sd.save(state).unwrap();
        let t = t.elapsed();
        if state.generation != before {
            compactions.push(t);
        } else {
            appends.push(t);
        }
    }
    let all: Vec<Duration> = appends.iter().chain(&compactions).copied().collect();
    row("  journal: StateDir::save (fdatasync)", &Stats::of(all));
    let appended = Stats::of(appends);
    row("    of which appends", &appended);
    let seen = compactions.len();
    if compactions.is_empty() {
        // None in these rounds: time one (a value the directory did not load or commit
        // last is written whole), then go back to the live value (written whole again).
        let mut copy = state.clone();
        record_move(state, 1, 0);
        sd.save(state).unwrap();
        let t = Instant::now();
        sd.save(&mut copy).unwrap();
        compactions.push(t.elapsed());
        sd.save(state).unwrap();
    }
    let compaction = Stats::of(compactions);
    row("    compaction (snapshot + new journal)", &compaction);
    // Each compaction follows about (snapshot + 64 kB) / (one change's lines) changes.
    let line_bytes = journal_line_bytes(state, n);
    let period = (snapshot + (64 << 10)) / line_bytes.max(1);
    let amortised = appended.mean + compaction.mean / period as u32;
    println!(
        "    amortised: {} per change ({line_bytes} bytes; a compaction every ~{period} changes, {seen} in {rounds} rounds; journal now {} kB)",
        fmt(amortised),
        file_len(dir, JOURNAL_FILE) / 1024
    );
    let raw = append_without_sync(dir, line_bytes as usize);
    row("  append of one change, no fdatasync", &raw);
    amortised
}

/// What a move records: the task's origin and why it is where it is.
fn record_move(s: &mut State, id: u32, at: u64) {
    let pid = ProcessId::new(id);
    let starttime = StartTime::new(1_000 + id as u64);
    s.tasks.insert(
        id,
        Record {
            pid,
            starttime,
            original: "/sys/fs/cgroup/user.slice/user-1000.slice/session-c2.scope".into(),
            process: true,
        },
    );
    s.attrs.insert(
        id,
        AttrRecord {
            pid,
            starttime,
            original: TaskAttrs {
                policy: Some(0),
                nice: Some(0),
                ..TaskAttrs::default()
            },
            inherited_from: None,
        },
    );
    s.why.insert(
        id,
        Why {
            pid,
            starttime,
            by: "rule chrome-renderer (/etc/cgqos/rules.d/50-chrome.yaml:12)".into(),
            group: Some("chrome/background".into()),
            class: Some("non-urgent".into()),
            attrs: TaskAttrs::default(),
            at,
        },
    );
}

/// The bytes of one change's journal lines, measured on a scratch directory.
fn journal_line_bytes(state: &State, n: u32) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let mut sd = StateDir::lock(dir.path()).unwrap();
    let mut s = state.clone();
    sd.save(&mut s).unwrap();
    let before = file_len(dir.path(), JOURNAL_FILE);
    record_move(&mut s, n, 7);
    sd.save(&mut s).unwrap();
    file_len(dir.path(), JOURNAL_FILE) - before
}

/// The save every change paid before the journal, as `StateDir::save` did it.
fn whole_file_save(dir: &Path, state: &State) {
    let bytes = serde_json::to_vec(state).unwrap();
    let tmp = dir.join(".state.json.tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&tmp)
        .unwrap();
    f.write_all(&bytes).unwrap();
    f.sync_all().unwrap();
    fs::rename(&tmp, dir.join(STATE_FILE)).unwrap();
}

/// Appending one change's bytes with no fdatasync: what the write itself costs.
fn append_without_sync(dir: &Path, bytes: usize) -> Stats {
    let mut f = fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(dir.join("scratch.journal"))
        .unwrap();
    let line = vec![b'x'; bytes];
    measure(20_000, |_| f.write_all(&line).unwrap())
}

fn file_len(dir: &Path, name: &str) -> u64 {
    fs::metadata(dir.join(name)).map_or(0, |m| m.len())
}

fn fs_type(p: &Path) -> &'static str {
    match rustix::fs::statfs(p).map(|s| s.f_type) {
        Ok(0x0102_1994) => "tmpfs",
        Ok(0xEF53) => "ext4",
        Ok(0x9123_683E) => "btrfs",
        Ok(0x5846_5342) => "xfs",
        Ok(0x794C_7630) => "overlayfs",
        _ => "other",
    }
}

struct Stats {
    p50: Duration,
    p99: Duration,
    max: Duration,
    mean: Duration,
}

impl Stats {
    fn of(mut t: Vec<Duration>) -> Stats {
        t.sort();
        let n = t.len().max(1);
        Stats {
            p50: t.get(t.len() / 2).copied().unwrap_or_default(),
            p99: t
                .get((t.len() * 99 / 100).min(t.len().saturating_sub(1)))
                .copied()
                .unwrap_or_default(),
            max: t.last().copied().unwrap_or_default(),
            mean: t.iter().sum::<Duration>() / n as u32,
        }
    }
}

/// Times `rounds` calls of `f`, after a tenth as many for warm-up.
fn measure(rounds: usize, mut f: impl FnMut(usize)) -> Stats {
    for i in 0..rounds / 10 + 1 {
        f(i);
    }
    let t = (0..rounds)
        .map(|i| {
            let s = Instant::now();
            f(i);
            s.elapsed()
        })
        .collect();
    Stats::of(t)
}

fn fmt(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.1} us")
    }
}

fn row(what: &str, s: &Stats) {
    println!(
        "{what:<44} {:>10} {:>10} {:>10} {:>10}",
        fmt(s.p50),
        fmt(s.p99),
        fmt(s.max),
        fmt(s.mean)
    );
}
