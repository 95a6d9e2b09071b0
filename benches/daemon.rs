//! The daemon's cost against a raw `write()` of a pid to `cgroup.procs`, measured in the same
//! run on the real cgroup2 mount (root only). `cargo bench --bench daemon`; docs/performance.md
//! ("Daemon") has a run and how to read it.
//!
//! Starts the `cgqos daemon` binary on a temporary socket (directory mode 0755), a throwaway
//! sub-root of the cgroup2 mount, a temporary state directory (on /dev/shm when that is
//! tmpfs, as /run is in production) and an empty configuration directory, waits until `ping`
//! answers, then measures, as median and p99 and as a ratio to the raw write's median:
//!
//! - the raw write (1 writer, 8 concurrent writers, and one every 20 ms) and a library move,
//!   for scale;
//! - `ping` round trips (the protocol's floor), 1 and 8 clients;
//! - the round trip of a 1-thread process move (alternating foreground / background), with
//!   1 client (back to back, and one every 20 ms) and with 8 concurrent clients (each its own
//!   connection and its own process, 100,000 moves in all), with requests per second and the
//!   daemon's CPU time per request;
//! - the state file's save (serialise, write, fsync, rename) on tmpfs and on the temporary
//!   directory's filesystem, for scale;
//! - the daemon's resident memory, threads and descriptors, and the state file's size: idle,
//!   along the 100,000 moves, with 300 more processes recorded, and after those exited (the
//!   daemon forgets exited processes through pidfd watches).
//!
//! Everything it creates is removed at the end, also on panic (`Guard`): children killed,
//! SIGTERM to the daemon, `cgqos teardown --direct`, leftover cgroups removed deepest first.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Child;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use cgqos::cgroupfs::CgroupFs;
use cgqos::daemon::client::Client;
use cgqos::daemon::protocol::{Reply, Request, TaskRef};
use cgqos::layout::Target;
use cgqos::place::{CgroupMap, Placer};
use cgqos::procfs::{ProcessId, Procfs};
use cgqos::state::{State, StateDir};
use common::{Stats, fs_name, is_tmpfs, kill_all, measure, raw_write, stats, status_field};

const CHILD: &str = "CGQOS_BENCH_DAEMON_CHILD";
const CLIENTS: usize = 8;
/// Move requests of the 8-client phase: 8 clients x 3,125, four times (100,000 in all), with
/// the daemon's memory read after each part.
const PARTS: usize = 4;
const MOVES_PER_CLIENT_PART: usize = 3_125;
/// Rounds of the isolated rows, and the pause before each.
const ISOLATED: usize = 150;
const GAP: Duration = Duration::from_millis(20);
/// Short-lived processes moved through the daemon, then killed.
const CHURN: usize = 300;

/// Like `measure`, for calls that time their own critical part (after a pause, say); the rate
/// is over the sum of those times.
fn measure_timed(rounds: usize, mut f: impl FnMut(usize) -> Duration) -> Stats {
    for i in 0..rounds / 10 + 1 {
        f(i);
    }
    let t: Vec<Duration> = (0..rounds).map(&mut f).collect();
    let sum = t.iter().sum();
    stats(t, sum)
}

/// Runs `f(worker, round)` on `workers` threads at once, each `rounds` times after a warm-up;
/// every call timed, the rate over the wall time from the first start to the last finish.
fn measure_concurrent<F>(workers: usize, rounds: usize, f: F) -> (Vec<Duration>, Duration)
where
    F: Fn(usize, usize) + Send + Sync + 'static,
{
    let f = Arc::new(f);
    let barrier = Arc::new(Barrier::new(workers));
    let handles: Vec<_> = (0..workers)
        .map(|w| {
            let f = f.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                for i in 0..rounds / 10 + 1 {
                    f(w, i);
                }
                barrier.wait();
                let start = Instant::now();
                let t: Vec<Duration> = (0..rounds)
                    .map(|i| {
                        let s = Instant::now();
                        f(w, i);
                        s.elapsed()
                    })
                    .collect();
                (t, start, Instant::now())
            })
        })
        .collect();
    let mut all = Vec::with_capacity(workers * rounds);
    let (mut first, mut last) = (None::<Instant>, None::<Instant>);
    for h in handles {
        let (t, s, e) = h.join().expect("a worker panicked");
        all.extend(t);
        first = Some(first.map_or(s, |f| f.min(s)));
        last = Some(last.map_or(e, |l| l.max(e)));
    }
    (all, last.unwrap() - first.unwrap())
}

fn row(name: &str, s: &Stats, base: Duration) {
    row_cpu(name, s, base, None)
}

/// A row with the daemon's CPU time per request (user + system, all its threads but the
/// process-events one).
fn row_cpu(name: &str, s: &Stats, base: Duration, cpu: Option<f64>) {
    println!(
        "{name:<52} p50 {:>8.1} us   p99 {:>8.1} us   x{:>6.1} raw   {:>7.0} /s{}",
        s.p50.as_secs_f64() * 1e6,
        s.p99.as_secs_f64() * 1e6,
        s.p50.as_secs_f64() / base.as_secs_f64(),
        s.rate,
        cpu.map(|c| format!("   daemon CPU {c:>6.1} us/request"))
            .unwrap_or_default()
    );
}

/// The daemon's CPU time so far (clock ticks of user + system time, exited threads
/// included) and the requests sent so far.
#[derive(Clone, Copy)]
struct Cpu {
    ticks: u64,
    requests: usize,
}

fn cpu(pid: u32) -> Cpu {
    // The process-events thread reads every fork, exec and exit of the machine (other
    // builds' compilers, say): its time is not the requests'.
    let events = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .find(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "cgqos-events")
        })
        .map_or(0, |t| ticks_of(&t.path().join("stat")));
    Cpu {
        ticks: ticks_of(Path::new(&format!("/proc/{pid}/stat"))) - events,
        requests: REQUESTS.load(Ordering::Relaxed),
    }
}

/// utime + stime (fields 14 and 15) of a `stat` file, in clock ticks.
fn ticks_of(stat: &Path) -> u64 {
    let stat = std::fs::read_to_string(stat).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let Some(close) = stat.rfind(')') else {
        return 0;
    };
    let f: Vec<u64> = stat[close + 2..]
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    f.get(11).zip(f.get(12)).map_or(0, |(u, s)| u + s)
}

/// Daemon CPU microseconds per request between two snapshots.
fn per_request(a: Cpu, b: Cpu) -> Option<f64> {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let n = b.requests - a.requests;
    (n > 0).then(|| (b.ticks - a.ticks) as f64 / hz * 1e6 / n as f64)
}

/// Failed replies are counted and the first few kept, not fatal: the numbers still print.
static FAILURES: AtomicUsize = AtomicUsize::new(0);
static FIRST_FAILURES: Mutex<Vec<String>> = Mutex::new(Vec::new());
static REQUESTS: AtomicUsize = AtomicUsize::new(0);

fn call(c: &mut Client, req: &Request) {
    REQUESTS.fetch_add(1, Ordering::Relaxed);
    let reply: Reply = c.call_raw(req).expect("the daemon answers");
    let ok = reply.ok
        && match req {
            Request::Move { .. } => reply.result.as_ref().is_some_and(|r| r[0]["ok"] == true),
            _ => true,
        };
    if !ok {
        FAILURES.fetch_add(1, Ordering::Relaxed);
        let mut f = FIRST_FAILURES.lock().unwrap();
        if f.len() < 5 {
            f.push(format!("{req:?} -> {reply:?}"));
        }
    }
}

fn connect(socket: &Path) -> Client {
    Client::connect(socket)
        .expect("connect to the daemon")
        .expect("the daemon listens")
}

/// A connection and the two moves (foreground, background) of its own process.
type MoveClient = (Client, [Request; 2]);

fn moves(pid: u32) -> [Request; 2] {
    ["foreground", "background"].map(|g| Request::Move {
        group: g.into(),
        targets: vec![TaskRef {
            id: pid,
            starttime: None,
        }],
    })
}

/// (VmRSS kB, VmHWM kB, threads, open descriptors) of a process.
fn footprint(pid: u32) -> (u64, u64, u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| status_field(&status, name);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    (field("VmRSS:"), field("VmHWM:"), field("Threads:"), fds)
}

/// (size in bytes, task records) of the daemon's state file.
fn state_file(dir: &Path) -> (u64, usize) {
    let size = [cgqos::state::STATE_FILE, cgqos::state::JOURNAL_FILE]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
        .map(|m| m.len())
        .sum();
    let tasks = cgqos::state::read_unlocked(dir)
        .ok()
        .flatten()
        .map_or(0, |s| s.tasks.len());
    (size, tasks)
}

fn memory_row(what: &str, daemon: u32, state_dir: &Path) {
    let (rss, hwm, threads, fds) = footprint(daemon);
    let (size, tasks) = state_file(state_dir);
    println!(
        "{what:<52} RSS {:>6} kB  (peak {:>6} kB)  threads {threads:>3}  fds {fds:>4}  state {size:>6} B, {tasks:>3} tasks  [{} requests so far]",
        rss,
        hwm,
        REQUESTS.load(Ordering::Relaxed)
    );
}

/// Busy clock ticks of the whole machine (all CPUs, anything but idle and iowait).
fn machine_busy() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let f: Vec<u64> = stat
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .skip(1)
        .take(8) // user nice system idle iowait irq softirq steal
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    f.iter().sum::<u64>() - f[3] - f[4]
}

/// Clock ticks used by this process and its reaped children (the daemon once stopped, the
/// child processes, teardown).
fn own_cpu() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let f: Vec<u64> = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    f[11] + f[12] + f[13] + f[14] // utime stime cutime cstime
}

/// CPU clock ticks of every process (user + system, with reaped children's), and its name.
fn all_cpu() -> std::collections::HashMap<u32, (u64, String)> {
    let mut m = std::collections::HashMap::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let f: Vec<u64> = stat[close + 2..]
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        if f.len() > 14 {
            let ticks = f[11] + f[12] + f[13] + f[14]; // utime stime cutime cstime
            m.insert(pid, (ticks, stat[open + 1..close].to_string()));
        }
    }
    m
}

/// The biggest CPU users among other processes between an `all_cpu` snapshot and now, to name
/// what disturbed a run. Only processes alive at the end are seen, and one that reaped a child
/// meanwhile is charged the child's whole life: names, not amounts.
fn others(before: &std::collections::HashMap<u32, (u64, String)>) -> String {
    let me = std::process::id();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let mut by: Vec<(u64, String)> = all_cpu()
        .into_iter()
        .filter(|(pid, _)| *pid != me)
        .map(|(pid, (t, name))| (t.saturating_sub(before.get(&pid).map_or(0, |b| b.0)), name))
        .filter(|(d, _)| *d > 0)
        .collect();
    by.sort_by_key(|b| std::cmp::Reverse(b.0));
    by.iter()
        .take(3)
        .map(|(d, n)| format!("{n} {:.1} s", *d as f64 / hz))
        .collect::<Vec<_>>()
        .join(", ")
}

fn main() {
    if std::env::var_os(CHILD).is_some() {
        common::ready_child(1);
    }
    let Some((mountinfo, mount)) = common::start("daemon", "it writes to the real cgroup2 mount")
    else {
        return;
    };
    let began = Instant::now();
    let (cpu0, busy0, own0) = (all_cpu(), machine_busy(), own_cpu());
    let root = mount
        .dir
        .join(format!("cgqos-bench-daemon-{}", std::process::id()));
    let mut g = common::Guard::new(root.clone(), Vec::new());
    std::fs::set_permissions(
        g.socket.parent().unwrap(),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let log_tmp = common::tempdir("log");
    let log_path = log_tmp.path().join("daemon.log");
    g._dirs.push(log_tmp);
    println!(
        "cgqos daemon benchmark: kernel {}, {} CPUs, cgroup2 at {}, controllers {:?}, state dir on {} ({})",
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        mount.dir.display(),
        std::fs::read_to_string(mount.dir.join("cgroup.controllers"))
            .unwrap_or_default()
            .trim(),
        fs_name(&g.state_dir),
        g.state_dir.display()
    );

    // The daemon, as deployed: default policy (empty configuration directory), info logging
    // (to stderr here: there is no journald), which we keep in a file.
    let log = std::fs::File::create(&log_path).unwrap();
    let started = g.start_daemon(g.daemon_command(log), &log_path);
    println!(
        "daemon pid {} answers ping {:.0} ms after spawn",
        g.daemon_pid(),
        started.as_secs_f64() * 1e3
    );
    let dpid = g.daemon_pid();
    std::thread::sleep(Duration::from_millis(300));
    println!();
    memory_row("daemon idle after start", dpid, &g.state_dir);
    println!();

    // One process for the 1-client rows, one per concurrent client.
    g.children.push(common::spawn_ready(CHILD, 1));
    let pid1 = g.children[0].id();
    for _ in 0..CLIENTS {
        g.children.push(common::spawn_ready(CHILD, 1));
    }
    let pids8: Arc<Vec<u32>> = Arc::new(g.children[1..].iter().map(|c| c.id()).collect());
    let files = Arc::new([
        root.join("chrome/foreground/cgroup.procs"),
        root.join("chrome/background/cgroup.procs"),
    ]);

    // Baselines.
    let raw = measure(5000, |i| raw_write(&files[i % 2], pid1));
    row("raw write(pid) to cgroup.procs (baseline)", &raw, raw.p50);
    let (t, wall) = {
        let (files, pids) = (files.clone(), pids8.clone());
        measure_concurrent(CLIENTS, 2000, move |w, i| raw_write(&files[i % 2], pids[w]))
    };
    row(
        "raw write(pid), 8 concurrent writers",
        &stats(t, wall),
        raw.p50,
    );
    // A move that comes alone: the kernel's cgroup_threadgroup_rwsem write side then waits
    // for an RCU grace period, which back-to-back writes skip.
    let raw_iso = measure_timed(ISOLATED, |i| {
        std::thread::sleep(GAP);
        let s = Instant::now();
        raw_write(&files[i % 2], pid1);
        s.elapsed()
    });
    row(
        &format!("raw write(pid), isolated ({} ms apart)", GAP.as_millis()),
        &raw_iso,
        raw.p50,
    );
    {
        let cg = CgroupFs::new(&root);
        let map = CgroupMap::new(&root, &mountinfo);
        let proc = Procfs::new("/proc");
        let targets = [
            Target::parse("foreground").unwrap(),
            Target::parse("background").unwrap(),
        ];
        let mut state = State::default();
        let mut placer = Placer::new(&cg, &map, &proc);
        let s = measure(2000, |i| {
            placer
                .move_process(ProcessId::new(pid1), &targets[i % 2], None, &mut state)
                .unwrap();
        });
        row("move 1-thread process, library (for scale)", &s, raw.p50);
    }

    // The protocol's floor.
    let mut c = connect(&g.socket);
    let a = cpu(dpid);
    let s = measure(5000, |_| call(&mut c, &Request::Ping));
    row_cpu("ping, 1 client", &s, raw.p50, per_request(a, cpu(dpid)));
    let a = cpu(dpid);
    let (t, wall) = {
        let socket = g.socket.clone();
        let clients: Arc<Vec<Mutex<Client>>> =
            Arc::new((0..CLIENTS).map(|_| Mutex::new(connect(&socket))).collect());
        measure_concurrent(CLIENTS, 2000, move |w, _| {
            call(&mut clients[w].lock().unwrap(), &Request::Ping)
        })
    };
    row_cpu(
        "ping, 8 concurrent clients",
        &stats(t, wall),
        raw.p50,
        per_request(a, cpu(dpid)),
    );

    // A 1-thread process move, through the daemon.
    let req1 = moves(pid1);
    let a = cpu(dpid);
    let s = measure(5000, |i| call(&mut c, &req1[i % 2]));
    row_cpu(
        "move 1-thread process, daemon, 1 client",
        &s,
        raw.p50,
        per_request(a, cpu(dpid)),
    );
    let s = measure_timed(ISOLATED, |i| {
        std::thread::sleep(GAP);
        let s = Instant::now();
        call(&mut c, &req1[i % 2]);
        s.elapsed()
    });
    row(
        &format!(
            "move, daemon, 1 client, isolated ({} ms apart)",
            GAP.as_millis()
        ),
        &s,
        raw.p50,
    );
    drop(c);

    println!();
    memory_row("daemon after the 1-client rows", dpid, &g.state_dir);
    let mut all = Vec::new();
    let mut wall = Duration::ZERO;
    let socket = g.socket.clone();
    let clients: Arc<Vec<Mutex<MoveClient>>> = Arc::new(
        pids8
            .iter()
            .map(|&p| Mutex::new((connect(&socket), moves(p))))
            .collect(),
    );
    let a = cpu(dpid);
    for part in 0..PARTS {
        let clients = clients.clone();
        let (t, w) = measure_concurrent(CLIENTS, MOVES_PER_CLIENT_PART, move |w, i| {
            let mut cl = clients[w].lock().unwrap();
            let (client, reqs) = &mut *cl;
            call(client, &reqs[i % 2]);
        });
        all.extend(t);
        wall += w;
        memory_row(
            &format!("daemon after 8-client moves, part {}/{PARTS}", part + 1),
            dpid,
            &g.state_dir,
        );
    }
    let cpu8 = per_request(a, cpu(dpid));
    drop(clients);
    println!();
    let n8 = all.len();
    row_cpu(
        &format!("move 1-thread process, daemon, 8 clients ({n8})"),
        &stats(all, wall),
        raw.p50,
        cpu8,
    );

    // For scale: the save every acknowledged move pays (serialise, write, fsync, rename), with
    // the state the daemon holds now, on tmpfs (as the daemon's) and on the temp directory.
    let state: State = cgqos::state::read_unlocked(&g.state_dir).unwrap().unwrap();
    let save_dirs = [
        tempfile::Builder::new()
            .prefix("cgqos-bench-save-")
            .tempdir_in(if is_tmpfs(Path::new("/dev/shm")) {
                Path::new("/dev/shm").to_path_buf()
            } else {
                std::env::temp_dir()
            })
            .unwrap(),
        tempfile::Builder::new()
            .prefix("cgqos-bench-save-")
            .tempdir()
            .unwrap(),
    ];
    for d in &save_dirs {
        // One changed record per save, as a move: appended to the journal (benches/state.rs
        // compares it with rewriting the whole file).
        let mut sd = StateDir::lock(d.path()).unwrap();
        let mut state = state.clone();
        let (&id, rec) = state.tasks.iter().next().expect("a recorded task");
        let rec = rec.clone();
        let s = measure(1000, |_| {
            state.tasks.insert(id, rec.clone());
            sd.save(&mut state).unwrap()
        });
        row(
            &format!(
                "state save (1 changed record), {} tasks, {} ({})",
                state.tasks.len(),
                fs_name(d.path()),
                d.path().parent().unwrap().display()
            ),
            &s,
            raw.p50,
        );
    }
    drop(save_dirs);

    // Churn: short-lived processes moved through the daemon, then killed; the daemon should
    // forget them (pidfd exit watches), in memory and in the state file.
    println!();
    let (_, tasks_before) = state_file(&g.state_dir);
    let base = g.children.len();
    for _ in 0..CHURN {
        g.children.push(common::spawn_ready(CHILD, 1));
    }
    let mut c = connect(&g.socket);
    let churn_pids: Vec<u32> = g.children[base..].iter().map(|c| c.id()).collect();
    let mut t = Vec::with_capacity(CHURN);
    let start = Instant::now();
    for (i, &p) in churn_pids.iter().enumerate() {
        let s = Instant::now();
        call(&mut c, &moves(p)[i % 2]);
        t.push(s.elapsed());
    }
    let first = stats(t, start.elapsed());
    // Let the exit watches register (each checks the start time on the engine first).
    std::thread::sleep(Duration::from_millis(200));
    memory_row(
        &format!("daemon with {CHURN} more processes recorded"),
        dpid,
        &g.state_dir,
    );
    let churn_move = measure(1000, |i| call(&mut c, &req1[i % 2]));
    let mut dying: Vec<Child> = g.children.drain(base..).collect();
    kill_all(&mut dying);
    let killed = Instant::now();
    let forgot = loop {
        let (_, tasks) = state_file(&g.state_dir);
        if tasks <= tasks_before {
            break Some(killed.elapsed());
        }
        if killed.elapsed() > Duration::from_secs(10) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    std::thread::sleep(Duration::from_millis(200));
    memory_row(
        &format!("daemon after those {CHURN} exited"),
        dpid,
        &g.state_dir,
    );
    // Tokio's blocking threads retire after 10 s idle.
    std::thread::sleep(Duration::from_secs(12));
    memory_row("daemon 12 s later (idle)", dpid, &g.state_dir);
    match forgot {
        Some(d) => println!(
            "the state file was back to {tasks_before} tasks {:.0} ms after the kills",
            d.as_secs_f64() * 1e3
        ),
        None => println!(
            "PROBLEM: 10 s after the kills the state file still has {} tasks (before: {tasks_before})",
            state_file(&g.state_dir).1
        ),
    }
    println!();
    row(
        &format!("first move of a new process, daemon ({CHURN})"),
        &first,
        raw.p50,
    );
    row(
        &format!("move, daemon, 1 client, {CHURN} more recorded"),
        &churn_move,
        raw.p50,
    );
    drop(c);

    println!();
    println!(
        "{} requests, {} failed",
        REQUESTS.load(Ordering::Relaxed),
        FAILURES.load(Ordering::Relaxed)
    );
    for f in FIRST_FAILURES.lock().unwrap().iter() {
        println!("  failed: {f}");
    }
    let logtext = std::fs::read_to_string(&log_path).unwrap_or_default();
    let bad: Vec<&str> = logtext
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    println!(
        "daemon log: {} lines, {} bytes, {} warnings or errors",
        logtext.lines().count(),
        logtext.len(),
        bad.len()
    );
    for l in bad.iter().take(5) {
        println!("  {l}");
    }
    drop(g);
    // Everything the machine did minus what this benchmark, the daemon and the children did.
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let (busy, own) = (machine_busy() - busy0, own_cpu() - own0);
    let other = busy.saturating_sub(own) as f64 / hz;
    println!(
        "cleaned up ({} removed: {}); total {:.0} s",
        root.display(),
        !root.exists(),
        began.elapsed().as_secs_f64()
    );
    println!(
        "CPU used by anything else meanwhile: {other:.1} s of {:.1} s busy{} (more than a few \
         tenths skews the rows: run it on a quiet machine)",
        busy as f64 / hz,
        if other >= 0.5 {
            format!("; biggest other processes: {}", others(&cpu0))
        } else {
            String::new()
        }
    );
}
