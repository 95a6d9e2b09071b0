//! The rule engine on real process events (root only): `cargo bench --bench rules`.
//!
//! Starts `cgqos daemon` on a throwaway sub-root of the real cgroup2 mount, a temporary
//! socket, state directory (tmpfs when /dev/shm is one, as /run is in production) and
//! configuration directory with two rules. Each rule matches only programs this benchmark
//! starts under a unique short name (comm keeps 15 characters): copies of this binary and,
//! on x86_64, a tiny static executable written at run time (read stdin to its end, exit), so
//! no rule can match anything else that runs on the machine. `bench-app` gives a group
//! (background), a class (background: non-urgent, nice 10) and a thread map (`cqr-*`:
//! urgent, nice -8); `bench-app-no-group` the same classes without a group (nice only, no
//! cgroup writes). A listener of our own on the proc connector counts the events the daemon
//! receives and timestamps execs. Phases:
//!
//! 1. **Idle cost** (10 s, before anything of ours, and again at the end): the daemon's CPU
//!    time and wakeups (context switches summed over its threads), with the events the whole
//!    machine produced meanwhile: every fork, exec and exit anywhere is an event it reads.
//! 2. **Classification latency**: from the kernel's exec event of a matching program (the
//!    connector's own timestamp) to the task in its group and class (`/proc/<pid>/cgroup`)
//!    with its nice value (`/proc/<pid>/stat` field 19), busy-polled; 1,000 execs after a
//!    warm-up, 2 ms apart, each process kept alive 1.2 s (the daemon's rechecks, 0.1 s and
//!    1 s after a classification, count in its CPU per process). Baselines in the same run:
//!    spawn to the child visible in /proc as the new program (fork + exec), and the exec
//!    event to our own listener (a thread asleep in `recv` on the connector) having it: the
//!    wake-up that any reaction to an event waits for. The daemon's CPU
//!    per matching and per non-matching process; the same latency for the rule without a
//!    group (500 execs).
//! 3. **Fork storms**: 2,000 forks/s (paced, 2 spawner threads) for 10 s; per 10 forks, 1
//!    long-lived child (a copy of this binary) whose 2 threads rename themselves 5 ms after
//!    their creation, 3 short-lived children that exit at once, 6 bare `fork()` + `_exit()`.
//!    Three times: A, nothing matches (the spawners' ceiling); B, the rule without a group;
//!    C, the full rule. After a 2 s grace: every long-lived task checked (cgroup and nice of
//!    the main thread and of the renamed threads), the daemon's CPU time and RSS, where its
//!    events thread and the spawners spent their time (wchan samples), the daemon's warnings,
//!    whether it lost events and rescanned /proc, and the records of its state file.
//! 4. **Latency again** (200 execs) with what the storms left in the daemon's state.
//!
//! Everything it creates is removed at the end, also on panic (`Guard`).

mod common;

use std::collections::HashMap;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{is_tmpfs, status_field};

const CHILD: &str = "CGQOS_BENCH_RULES_CHILD";

/// Classification latency: measured execs, after a warm-up.
const LAT_RUNS: usize = 1_000;
const LAT_WARMUP: usize = 50;
/// Pause between two measured execs, so each is classified alone.
const LAT_GAP: Duration = Duration::from_millis(2);
/// Give up on one exec after this long (counted, not fatal).
const LAT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long each classified process lives: past the daemon's last recheck (1 s).
const KEEP_ALIVE: Duration = Duration::from_millis(1_200);
/// Non-matching processes started for the daemon's CPU per process.
const NONMATCH_RUNS: usize = 1_000;

const STORM: Duration = Duration::from_secs(10);
const STORM_RATE: f64 = 2_000.0;
const SPAWNERS: usize = 2;
/// Per 10 forks: slot 0 long-lived matching, 1..=3 short-lived matching, the rest bare forks.
const MIX: usize = 10;
const SHORT_MATCHING: usize = 3;
const LONG_THREADS: usize = 2;
const RENAME_AFTER: Duration = Duration::from_millis(5);
const GRACE: Duration = Duration::from_secs(2);

const IDLE: Duration = Duration::from_secs(10);

const RCVBUF: usize = 4 << 20;

// ---------------------------------------------------------------------------------------
// Child modes (this binary, copied under a unique name) and the programs

fn wait_stdin_eof() {
    let mut buf = [0u8; 64];
    let mut stdin = std::io::stdin();
    while stdin.read(&mut buf).is_ok_and(|n| n > 0) {}
}

fn child(mode: &str) -> ! {
    match mode {
        // Classification latency: one thread, until stdin closes.
        "sleep" => wait_stdin_eof(),
        // Short-lived.
        "exit" => {}
        // Long-lived with threads renamed after their creation.
        "threads" => {
            for i in 0..LONG_THREADS {
                std::thread::Builder::new()
                    .name(format!("cqw-{i}"))
                    .spawn(move || {
                        std::thread::sleep(RENAME_AFTER);
                        let name = std::ffi::CString::new(format!("cqr-{i}")).unwrap();
                        // SAFETY: PR_SET_NAME with a NUL-terminated string we own.
                        unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
                        loop {
                            std::thread::park();
                        }
                    })
                    .unwrap();
            }
            wait_stdin_eof();
        }
        other => panic!("unknown child mode {other}"),
    }
    // SAFETY: _exit has no preconditions; skips atexit work we do not need.
    unsafe { libc::_exit(0) }
}

/// One program name, under which a rule matches (or not) only what this benchmark starts:
/// a copy of this binary (every mode) and, on x86_64, a tiny static executable of the same
/// name in another directory (no libc, no runtime: `read(0)` until end of file, then
/// `exit(0)`), used where a process only needs to exist: it execs in a fraction of the time.
#[derive(Clone)]
struct Program {
    name: String,
    rust: PathBuf,
    tiny: Option<PathBuf>,
}

fn program(dir: &Path, tag: &str) -> Program {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    // At most 3 + 1 + 5 + 3 = 12 characters: comm keeps 15.
    let name = format!(
        "cqb{tag}{}{:03x}",
        std::process::id() % 100_000,
        nanos & 0xfff
    );
    let place = |sub: &str| {
        let d = dir.join(sub);
        std::fs::create_dir_all(&d).unwrap();
        d.join(&name)
    };
    let rust = place("rust");
    std::fs::copy(std::env::current_exe().unwrap(), &rust).unwrap();
    std::fs::set_permissions(&rust, std::fs::Permissions::from_mode(0o755)).unwrap();
    let tiny = tiny_elf().and_then(|bytes| {
        let path = place("tiny");
        std::fs::write(&path, bytes).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        // It must run and exit 0 at end of file, or we do without it.
        let ok = Command::new(&path)
            .stdin(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(path)
    });
    Program { name, rust, tiny }
}

/// A static x86_64 ELF executable: one PT_LOAD segment, 21 + 12 bytes of code.
impl Program {
    fn kind(&self, mode: &str) -> &'static str {
        match (&self.tiny, mode) {
            (Some(_), "sleep" | "exit") => "tiny static executable",
            _ => "copy of this binary",
        }
    }
}

fn tiny_elf() -> Option<Vec<u8>> {
    if !cfg!(target_arch = "x86_64") {
        return None;
    }
    const BASE: u64 = 0x40_0000;
    const CODE_AT: u64 = 64 + 56;
    let code: [u8; 33] = [
        0x31, 0xc0, // xor eax, eax          (read)
        0x31, 0xff, // xor edi, edi          (fd 0)
        0x48, 0x8d, 0x74, 0x24, 0xc0, // lea rsi, [rsp-64]  (red zone)
        0xba, 0x40, 0x00, 0x00, 0x00, // mov edx, 64
        0x0f, 0x05, // syscall
        0x48, 0x85, 0xc0, // test rax, rax
        0x7f, 0xeb, // jg back to the read
        0xb8, 0x3c, 0x00, 0x00, 0x00, // mov eax, 60     (exit)
        0x31, 0xff, // xor edi, edi
        0x0f, 0x05, // syscall
        0x0f, 0x0b, 0x90, // ud2; nop (never reached)
    ];
    let size = CODE_AT + code.len() as u64;
    let mut f = Vec::with_capacity(size as usize);
    // ELF header.
    f.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    f.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    f.extend_from_slice(&0x3eu16.to_le_bytes()); // EM_X86_64
    f.extend_from_slice(&1u32.to_le_bytes());
    f.extend_from_slice(&(BASE + CODE_AT).to_le_bytes()); // entry
    f.extend_from_slice(&64u64.to_le_bytes()); // program headers
    f.extend_from_slice(&0u64.to_le_bytes()); // no section headers
    f.extend_from_slice(&0u32.to_le_bytes());
    for v in [64u16, 56, 1, 64, 0, 0] {
        f.extend_from_slice(&v.to_le_bytes());
    }
    // PT_LOAD, R+X, the whole file at BASE.
    f.extend_from_slice(&1u32.to_le_bytes());
    f.extend_from_slice(&5u32.to_le_bytes());
    for v in [0, BASE, BASE, size, size, 0x1000] {
        f.extend_from_slice(&v.to_le_bytes());
    }
    f.extend_from_slice(&code);
    assert_eq!(f.len() as u64, size);
    Some(f)
}

/// Starts `p`: "sleep" runs until its stdin closes, "exit" exits at once, "threads" starts
/// threads that rename themselves and runs until its stdin closes.
fn spawn(p: &Program, mode: &str) -> Child {
    let mut c = match (&p.tiny, mode) {
        (Some(t), "sleep" | "exit") => Command::new(t),
        _ => {
            let mut c = Command::new(&p.rust);
            c.env(CHILD, mode);
            c
        }
    };
    c.stdin(if mode == "exit" {
        Stdio::null()
    } else {
        Stdio::piped()
    })
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap()
}

/// Closes the child's stdin (it exits) and reaps it.
fn finish(mut c: Child) {
    drop(c.stdin.take());
    let _ = c.wait();
}

// ---------------------------------------------------------------------------------------
// /proc readers

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime fills the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// Fields after the command name of a stat file (field 3 is index 0).
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    Some(rest.split_whitespace().collect())
}

fn nice_of(stat_path: &str) -> Option<i32> {
    let s = read(stat_path)?;
    stat_fields(&s)?.get(16)?.parse().ok() // field 19
}

/// The cgroup v2 line of a `cgroup` file (hybrid hierarchies list v1 controllers too).
fn cgroup2_of(path: &str) -> Option<String> {
    read(path)?
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_string)
}

fn hz() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

/// A snapshot of the daemon's cost counters.
#[derive(Clone, Copy, Debug, Default)]
struct Cost {
    /// utime + stime of the whole process (exited threads included), clock ticks.
    ticks: u64,
    /// Sum of the live threads' on-CPU time (schedstat), ns: finer than ticks.
    run_ns: u64,
    /// Voluntary + nonvoluntary context switches, summed over the live threads.
    switches: u64,
    threads: usize,
    rss_kb: u64,
    hwm_kb: u64,
    at: Option<Instant>,
}

fn cost(pid: u32) -> Cost {
    let stat = read(&format!("/proc/{pid}/stat")).expect("the daemon runs");
    let f = stat_fields(&stat).unwrap();
    let ticks = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    let status = read(&format!("/proc/{pid}/status")).unwrap();
    let mut c = Cost {
        ticks,
        rss_kb: status_field(&status, "VmRSS:"),
        hwm_kb: status_field(&status, "VmHWM:"),
        at: Some(Instant::now()),
        ..Cost::default()
    };
    for t in thread_ids(pid) {
        if let Some(s) = read(&format!("/proc/{pid}/task/{t}/status")) {
            c.switches += status_field(&s, "voluntary_ctxt_switches:")
                + status_field(&s, "nonvoluntary_ctxt_switches:");
            c.threads += 1;
        }
        if let Some(s) = read(&format!("/proc/{pid}/task/{t}/schedstat")) {
            c.run_ns += s
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    c
}

/// Per-thread (name, context switches) of the daemon.
fn thread_switches(pid: u32) -> HashMap<u32, (String, u64)> {
    thread_ids(pid)
        .into_iter()
        .filter_map(|t| {
            let s = read(&format!("/proc/{pid}/task/{t}/status"))?;
            let name = read(&format!("/proc/{pid}/task/{t}/comm"))?
                .trim()
                .to_string();
            Some((
                t,
                (
                    name,
                    status_field(&s, "voluntary_ctxt_switches:")
                        + status_field(&s, "nonvoluntary_ctxt_switches:"),
                ),
            ))
        })
        .collect()
}

fn thread_ids(pid: u32) -> Vec<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The `processes` line of /proc/stat: forks since boot, machine-wide.
fn forks_since_boot() -> u64 {
    read("/proc/stat")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("processes "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------
// Our own proc connector listener: counts what the daemon receives, and timestamps execs.

const EV_FORK: u32 = 0x1;
const EV_EXEC: u32 = 0x2;
const EV_COMM: u32 = 0x200;
const EV_EXIT: u32 = 0x8000_0000;

#[derive(Default)]
struct Counts {
    fork_process: AtomicU64,
    fork_thread: AtomicU64,
    exec: AtomicU64,
    comm: AtomicU64,
    exit: AtomicU64,
    other: AtomicU64,
    /// ENOBUFS on our own socket (same buffer size as the daemon's).
    lost: AtomicU64,
}

#[derive(Clone, Copy, Default, Debug)]
struct CountSnap {
    fork_process: u64,
    fork_thread: u64,
    exec: u64,
    comm: u64,
    exit: u64,
    other: u64,
    lost: u64,
}

impl Counts {
    fn snap(&self) -> CountSnap {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CountSnap {
            fork_process: l(&self.fork_process),
            fork_thread: l(&self.fork_thread),
            exec: l(&self.exec),
            comm: l(&self.comm),
            exit: l(&self.exit),
            other: l(&self.other),
            lost: l(&self.lost),
        }
    }
}

impl CountSnap {
    fn since(self, a: CountSnap) -> CountSnap {
        CountSnap {
            fork_process: self.fork_process - a.fork_process,
            fork_thread: self.fork_thread - a.fork_thread,
            exec: self.exec - a.exec,
            comm: self.comm - a.comm,
            exit: self.exit - a.exit,
            other: self.other - a.other,
            lost: self.lost - a.lost,
        }
    }
    fn total(&self) -> u64 {
        self.fork_process + self.fork_thread + self.exec + self.comm + self.exit + self.other
    }
    fn describe(&self, secs: f64) -> String {
        format!(
            "{:.0} events/s (process forks {:.0}/s, thread creations {:.0}/s, execs {:.0}/s, renames {:.0}/s, exits {:.0}/s, other {:.0}/s){}",
            self.total() as f64 / secs,
            self.fork_process as f64 / secs,
            self.fork_thread as f64 / secs,
            self.exec as f64 / secs,
            self.comm as f64 / secs,
            self.exit as f64 / secs,
            self.other as f64 / secs,
            if self.lost > 0 {
                format!(", the counter itself lost events {} time(s)", self.lost)
            } else {
                String::new()
            }
        )
    }
}

struct Listener {
    counts: Counts,
    /// When on, the kernel timestamp of every exec, and when this listener had it, by tgid.
    record_execs: AtomicBool,
    execs: Mutex<HashMap<u32, (u64, u64)>>,
}

fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    b.get(o..o + 4)
        .map(|s| u32::from_ne_bytes(s.try_into().unwrap()))
}

fn u64_at(b: &[u8], o: usize) -> Option<u64> {
    b.get(o..o + 8)
        .map(|s| u64::from_ne_bytes(s.try_into().unwrap()))
}

impl Listener {
    /// Decodes one datagram: nlmsghdr (16) + cn_msg (20) + proc_event {what, cpu,
    /// timestamp_ns, union}, possibly several messages.
    fn take(&self, mut buf: &[u8]) {
        let c = &self.counts;
        while buf.len() >= 16 {
            let len = u32_at(buf, 0).unwrap() as usize;
            if len < 16 || len > buf.len() {
                break;
            }
            let ev = &buf[16..len];
            if ev.len() >= 20 && u32_at(ev, 0) == Some(1) {
                let ev = &ev[20..];
                let field = |i: usize| u32_at(ev, 16 + 4 * i).unwrap_or(0);
                match u32_at(ev, 0) {
                    Some(EV_FORK) => {
                        if field(2) == field(3) {
                            c.fork_process.fetch_add(1, Ordering::Relaxed);
                        } else {
                            c.fork_thread.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Some(EV_EXEC) => {
                        c.exec.fetch_add(1, Ordering::Relaxed);
                        if self.record_execs.load(Ordering::Relaxed) {
                            let ts = u64_at(ev, 8).unwrap_or(0);
                            let had = monotonic_ns();
                            self.execs.lock().unwrap().insert(field(1), (ts, had));
                        }
                    }
                    Some(EV_COMM) => {
                        c.comm.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(EV_EXIT) => {
                        c.exit.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(_) => {
                        c.other.fetch_add(1, Ordering::Relaxed);
                    }
                    None => {}
                }
            }
            let next = (len + 3) & !3;
            if next >= buf.len() {
                break;
            }
            buf = &buf[next..];
        }
    }
}

fn start_listener(stop: Arc<AtomicBool>) -> Arc<Listener> {
    let l = Arc::new(Listener {
        counts: Counts::default(),
        record_execs: AtomicBool::new(false),
        execs: Mutex::new(HashMap::new()),
    });
    let fd = cgqos::daemon::events::open(RCVBUF).expect("open the proc connector");
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 100_000,
    };
    // SAFETY: setsockopt with a pointer to a live timeval and its size.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const libc::timeval as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as u32,
        )
    };
    let l2 = l.clone();
    std::thread::Builder::new()
        .name("bench-events".into())
        .spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            while !stop.load(Ordering::Relaxed) {
                // SAFETY: recv into our own buffer of the given length.
                let n =
                    unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
                if n < 0 {
                    if std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOBUFS) {
                        l2.counts.lost.fetch_add(1, Ordering::Relaxed);
                    }
                    continue;
                }
                l2.take(&buf[..n as usize]);
            }
        })
        .unwrap();
    l
}

// ---------------------------------------------------------------------------------------
// Statistics

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn lat_row(name: &str, mut ns: Vec<u64>) {
    ns.sort_unstable();
    let us = |v: u64| v as f64 / 1e3;
    println!(
        "{name:<52} n {:>5}   p50 {:>8.1} us   p99 {:>8.1} us   max {:>8.1} us",
        ns.len(),
        us(pct(&ns, 0.5)),
        us(pct(&ns, 0.99)),
        us(*ns.last().unwrap_or(&0))
    );
}

fn daemon_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn count_lines(log: &str, what: &str) -> usize {
    log.lines().filter(|l| l.contains(what)).count()
}

fn warnings(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect()
}

/// What the benchmark shares between its phases.
struct Ctx {
    dpid: u32,
    listener: Arc<Listener>,
    log_path: PathBuf,
    state_dir: PathBuf,
    root_name: String,
    children: Arc<Mutex<Vec<Child>>>,
}

fn idle_phase(what: &str, ctx: &Ctx) {
    let dpid = ctx.dpid;
    let before_threads = thread_switches(dpid);
    let a = cost(dpid);
    let ev = ctx.listener.counts.snap();
    let forks = forks_since_boot();
    std::thread::sleep(IDLE);
    let b = cost(dpid);
    let after_threads = thread_switches(dpid);
    let ev = ctx.listener.counts.snap().since(ev);
    let forks = forks_since_boot() - forks;
    let secs = (b.at.unwrap() - a.at.unwrap()).as_secs_f64();
    let cpu = (b.ticks - a.ticks) as f64 / hz();
    println!(
        "{what}: {secs:.1} s: daemon CPU {cpu:.2} s by ticks ({:.2}% of one CPU; live threads' on-CPU time {:.1} ms), {:.1} wakeups/s (context switches of its {} threads; {} before), RSS {} kB",
        cpu / secs * 100.0,
        (b.run_ns.saturating_sub(a.run_ns)) as f64 / 1e6,
        (b.switches.saturating_sub(a.switches)) as f64 / secs,
        b.threads,
        a.threads,
        b.rss_kb
    );
    let mut per: Vec<(String, f64)> = after_threads
        .iter()
        .map(|(t, (name, n))| {
            let was = before_threads.get(t).map_or(0, |(_, w)| *w);
            (format!("{name}[{t}]"), (n - was) as f64 / secs)
        })
        .collect();
    per.sort_by(|a, b| b.1.total_cmp(&a.1));
    println!(
        "  per thread (wakeups/s): {}",
        per.iter()
            .map(|(n, r)| format!("{n} {r:.1}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "  the machine meanwhile: {:.0} forks/s (/proc/stat), {}",
        forks as f64 / secs,
        ev.describe(secs)
    );
}

/// What we know of an exec that was not seen classified in time.
fn diagnose(ctx: &Ctx, pid: u32, want: &str, spawned: std::time::SystemTime) {
    let log = daemon_log(&ctx.log_path);
    let tag = format!("pid={pid} ");
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(&tag)).collect();
    // The log's UTC time of day against the spawn's.
    let day = |secs: f64| secs.rem_euclid(86_400.0);
    let spawned = day(spawned
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64());
    let logged = lines.last().and_then(|l| {
        let t = l.get(11..26)?; // HH:MM:SS.ffffff
        let h: f64 = t.get(0..2)?.parse().ok()?;
        let m: f64 = t.get(3..5)?.parse().ok()?;
        let s: f64 = t.get(6..)?.parse().ok()?;
        Some(day(h * 3600.0 + m * 60.0 + s))
    });
    if let Some(l) = logged {
        println!(
            "  pid {pid}: the daemon logged its classification {:.1} ms after the spawn",
            (l - spawned) * 1e3
        );
    }
    let state = cgqos::state::read_unlocked(&ctx.state_dir).ok().flatten();
    let v = serde_json::to_value(state).unwrap_or_default();
    let key = pid.to_string();
    println!(
        "  NOT CLASSIFIED in {} s: pid {pid} comm {:?} cgroup {:?} nice {:?} (want {want}, nice 10); state: tasks {}, attrs {}, why {}; daemon log lines for it: {}",
        LAT_TIMEOUT.as_secs(),
        read(&format!("/proc/{pid}/comm"))
            .unwrap_or_default()
            .trim(),
        cgroup2_of(&format!("/proc/{pid}/cgroup")),
        nice_of(&format!("/proc/{pid}/stat")),
        v["tasks"][&key],
        v["attrs"][&key],
        v["why"][&key],
        lines.len()
    );
    for l in lines.iter().rev().take(3) {
        println!("    {l}");
    }
}

/// Watches the daemon's events thread every millisecond until `stop`: the longest stretches it
/// spent outside its receive wait (handling events, or blocked in the kernel), each with the
/// place it was seen most often; (ms, where), longest first.
fn watch_stalls(
    stop: Arc<AtomicBool>,
    task: Option<String>,
) -> std::thread::JoinHandle<Vec<(f64, String)>> {
    std::thread::spawn(move || {
        let Some(task) = task else {
            return Vec::new();
        };
        let mut stretches: Vec<(f64, String)> = Vec::new();
        let mut current: Option<(Instant, HashMap<String, u32>)> = None;
        while !stop.load(Ordering::Relaxed) {
            let stat = read(&format!("{task}/stat")).unwrap_or_default();
            let state = stat_fields(&stat)
                .and_then(|f| f.first().map(|s| s.to_string()))
                .unwrap_or_default();
            let at = if state == "R" {
                "running".to_string()
            } else {
                read(&format!("{task}/wchan")).unwrap_or_default()
            };
            if at == "__skb_wait_for_more_packets" {
                if let Some((since, places)) = current.take() {
                    let most = places
                        .into_iter()
                        .max_by_key(|(_, n)| *n)
                        .map(|(w, _)| w)
                        .unwrap_or_default();
                    stretches.push((since.elapsed().as_secs_f64() * 1e3, most));
                    stretches.sort_by(|a, b| b.0.total_cmp(&a.0));
                    stretches.truncate(3);
                }
            } else {
                let (_, places) = current.get_or_insert_with(|| (Instant::now(), HashMap::new()));
                *places.entry(at).or_default() += 1;
            }
            std::thread::sleep(Duration::from_micros(1000));
        }
        if let Some((since, places)) = current {
            let most = places
                .into_iter()
                .max_by_key(|(_, n)| *n)
                .map(|(w, _)| w)
                .unwrap_or_default();
            stretches.push((
                since.elapsed().as_secs_f64() * 1e3,
                format!("{most}, still busy at the end"),
            ));
            stretches.sort_by(|a, b| b.0.total_cmp(&a.0));
            stretches.truncate(3);
        }
        stretches
    })
}

fn events_thread(dpid: u32) -> Option<String> {
    thread_ids(dpid)
        .into_iter()
        .find(|t| {
            read(&format!("/proc/{dpid}/task/{t}/comm")).is_some_and(|c| c.trim() == "cgqos-events")
        })
        .map(|t| format!("/proc/{dpid}/task/{t}"))
}

/// (busy, total) jiffies of all CPUs, from /proc/stat.
fn cpu_jiffies() -> (u64, u64) {
    let s = read("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = s
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// Execs of the matching program, one at a time, each busy-polled until classified.
fn latency(ctx: &Ctx, matching: &Program, group_cg: Option<&str>, warmup: usize, runs: usize) {
    let mut to_visible = Vec::with_capacity(runs);
    let mut to_exec = Vec::with_capacity(runs);
    let mut exec_to_class = Vec::with_capacity(runs);
    let mut exec_to_listener = Vec::with_capacity(runs);
    let mut spawn_to_class = Vec::with_capacity(runs);
    let (mut already, mut timeouts, mut timeouts_warmup, mut no_exec_event) = (0, 0, 0, 0);
    let mut polls = 0u64;
    let mut alive = std::collections::VecDeque::new();
    let listener = &ctx.listener;
    listener.record_execs.store(true, Ordering::Relaxed);
    let cost_a = cost(ctx.dpid);
    let ev_a = listener.counts.snap();
    let stop_watch = Arc::new(AtomicBool::new(false));
    let watch = watch_stalls(stop_watch.clone(), events_thread(ctx.dpid));
    let start = Instant::now();
    for i in 0..warmup + runs {
        let measured = i >= warmup;
        let t_spawn = monotonic_ns();
        let wall_spawn = std::time::SystemTime::now();
        let c = spawn(matching, "sleep");
        let pid = c.id();
        let (cg_path, stat_path, comm_path) = (
            format!("/proc/{pid}/cgroup"),
            format!("/proc/{pid}/stat"),
            format!("/proc/{pid}/comm"),
        );
        let mut t_visible = None;
        let mut t_class = None;
        let mut first = true;
        loop {
            let now = monotonic_ns();
            polls += 1;
            if t_visible.is_none()
                && read(&comm_path).is_some_and(|c| c.trim_end() == matching.name)
            {
                t_visible = Some(now);
            }
            if group_cg.is_none_or(|g| cgroup2_of(&cg_path).is_some_and(|c| c == g))
                && nice_of(&stat_path) == Some(10)
            {
                // Classified means exec'd: the comm read just before may have raced with the
                // exec (spawn() returns once the new memory map is in place, a little before
                // the kernel sets the new comm).
                t_visible.get_or_insert(now);
                t_class = Some(now);
                if first && measured {
                    already += 1;
                }
                break;
            }
            first = false;
            if now - t_spawn > LAT_TIMEOUT.as_nanos() as u64 {
                break;
            }
            for _ in 0..32 {
                std::hint::spin_loop();
            }
            std::thread::yield_now();
        }
        // The kernel's exec timestamp, from our listener (it may lag a little).
        let deadline = Instant::now() + Duration::from_millis(200);
        let t_exec = loop {
            let got = listener.execs.lock().unwrap().remove(&pid);
            match got {
                Some(ts) if ts.0 >= t_spawn => break Some(ts),
                _ if Instant::now() > deadline => break None,
                _ => std::thread::sleep(Duration::from_micros(50)),
            }
        };
        if t_class.is_none() && !measured {
            timeouts_warmup += 1;
            assert!(
                timeouts_warmup < 5,
                "execs are not classified: {pid} is in {:?} with nice {:?} (want {group_cg:?}, nice 10); daemon log:\n{}",
                cgroup2_of(&cg_path),
                nice_of(&stat_path),
                daemon_log(&ctx.log_path)
            );
        }
        if measured {
            match (t_visible, t_class) {
                (Some(v), Some(cl)) => {
                    to_visible.push(v - t_spawn);
                    spawn_to_class.push(cl - t_spawn);
                    match t_exec {
                        Some((e, had)) => {
                            to_exec.push(e - t_spawn);
                            exec_to_class.push(cl.saturating_sub(e));
                            exec_to_listener.push(had.saturating_sub(e));
                        }
                        None => no_exec_event += 1,
                    }
                }
                _ => {
                    timeouts += 1;
                    if timeouts <= 3 {
                        diagnose(ctx, pid, group_cg.unwrap_or("any cgroup"), wall_spawn);
                    }
                }
            }
        }
        // Alive through the daemon's rechecks (0.1 s and 1 s after a classification), which
        // are part of its cost per classified process.
        alive.push_back((Instant::now(), c));
        while alive.front().is_some_and(|(t, _)| t.elapsed() > KEEP_ALIVE) {
            finish(alive.pop_front().unwrap().1);
        }
        std::thread::sleep(LAT_GAP);
    }
    if let Some((t, _)) = alive.back() {
        std::thread::sleep(KEEP_ALIVE.saturating_sub(t.elapsed()));
    }
    for (_, c) in alive.drain(..) {
        finish(c);
    }
    let wall = start.elapsed();
    stop_watch.store(true, Ordering::Relaxed);
    let stalls = watch.join().unwrap();
    listener.record_execs.store(false, Ordering::Relaxed);
    listener.execs.lock().unwrap().clear();
    std::thread::sleep(Duration::from_millis(200));
    let cost_b = cost(ctx.dpid);
    let ev = listener.counts.snap().since(ev_a);
    println!(
        "{runs} execs of {} ({}; {warmup} warm-up), each busy-polled ({:.1} polls per exec) until classified, {} ms apart",
        matching.name,
        matching.kind("sleep"),
        polls as f64 / (warmup + runs) as f64,
        LAT_GAP.as_millis()
    );
    lat_row(
        "spawn -> new program visible in /proc (baseline)",
        to_visible,
    );
    lat_row("spawn -> kernel exec event (its timestamp)", to_exec);
    // The floor of any reaction to an event: a thread asleep in recv woken with it.
    lat_row(
        "exec event -> our own listener has it (baseline)",
        exec_to_listener,
    );
    lat_row(
        if group_cg.is_some() {
            "exec event -> in group, class and nice (classified)"
        } else {
            "exec event -> nice (classified)"
        },
        exec_to_class,
    );
    lat_row("spawn -> classified", spawn_to_class);
    let n = (warmup + runs) as f64;
    println!(
        "  classified at the first poll after spawn() returned: {already} of {runs}; timeouts ({} s): {timeouts}; exec event not seen: {no_exec_event}",
        LAT_TIMEOUT.as_secs()
    );
    println!(
        "  longest stretches of the daemon's events thread outside its receive wait (1 ms samples): {}",
        stalls
            .iter()
            .map(|(ms, w)| format!("{ms:.0} ms (mostly {w})"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "  daemon CPU per matching process (fork, exec, classification, its 2 rechecks, exit): {:.0} us by ticks, {:.0} us by its live threads' schedstat; {:.1} s wall; the machine meanwhile: {}",
        (cost_b.ticks - cost_a.ticks) as f64 / hz() * 1e6 / n,
        (cost_b.run_ns - cost_a.run_ns) as f64 / 1e3 / n,
        wall.as_secs_f64(),
        ev.describe(wall.as_secs_f64())
    );
}

/// The daemon's CPU per process that matches no rule (every process on the machine costs it).
fn nonmatching(ctx: &Ctx, other: &Program, runs: usize) {
    let a = cost(ctx.dpid);
    let ev_a = ctx.listener.counts.snap();
    let t = Instant::now();
    for _ in 0..runs {
        let mut c = spawn(other, "exit");
        let _ = c.wait();
        std::thread::sleep(LAT_GAP);
    }
    let wall = t.elapsed();
    std::thread::sleep(Duration::from_millis(200));
    let b = cost(ctx.dpid);
    let ev = ctx.listener.counts.snap().since(ev_a);
    println!(
        "  daemon CPU per non-matching process ({runs} x fork, exec, exit of {}, {}): {:.0} us by ticks, {:.0} us by its live threads' schedstat; the machine meanwhile: {}",
        other.name,
        other.kind("exit"),
        (b.ticks - a.ticks) as f64 / hz() * 1e6 / runs as f64,
        (b.run_ns - a.run_ns) as f64 / 1e3 / runs as f64,
        ev.describe(wall.as_secs_f64())
    );
}

/// What a long-lived child's tasks should look like after the storm: (cgroup, nice) of the
/// main thread and of the renamed threads; `None` cgroup: outside the cgqos sub-root.
struct Expect {
    main: (Option<String>, i32),
    renamed: (Option<String>, i32),
}

#[derive(Default)]
struct SpawnTimes {
    n: [AtomicU64; 3],
    sum_ns: [AtomicU64; 3],
    max_ns: [AtomicU64; 3],
}

/// The (id, start time) of every record of the state file, by kind (tasks, attrs, why), and
/// how many of them name a task that no longer exists.
fn state_records(state_dir: &Path) -> (u64, [(usize, usize); 3]) {
    let state = cgqos::state::read_unlocked(state_dir).ok().flatten();
    let v = serde_json::to_value(state).unwrap_or_default();
    let kinds = ["tasks", "attrs", "why"].map(|k| {
        let Some(m) = v[k].as_object() else {
            return (0, 0);
        };
        let stale = m
            .iter()
            .filter(|(id, r)| {
                let st = r["starttime"].as_u64();
                let live = read(&format!("/proc/{id}/stat"))
                    .and_then(|s| stat_fields(&s)?.get(19)?.parse::<u64>().ok());
                st.is_none() || live != st
            })
            .count();
        (m.len(), stale)
    });
    let bytes: u64 = [cgqos::state::STATE_FILE, cgqos::state::JOURNAL_FILE]
        .iter()
        .filter_map(|f| std::fs::metadata(state_dir.join(f)).ok())
        .map(|m| m.len())
        .sum();
    (bytes, kinds)
}

fn state_row(what: &str, ctx: &Ctx) {
    let (bytes, [t, a, w]) = state_records(&ctx.state_dir);
    println!(
        "  {what}: state file {bytes} bytes; records (of exited tasks): tasks {} ({}), attrs {} ({}), why {} ({}); daemon RSS {} kB",
        t.0,
        t.1,
        a.0,
        a.1,
        w.0,
        w.1,
        cost(ctx.dpid).rss_kb
    );
}

/// Per group of tasks: (where, samples), most frequent first.
type Samples = Vec<(&'static str, Vec<(String, u64)>)>;

/// Samples, at about 500 Hz until `stop`, where each task of each group is: "running" (state
/// R) or the kernel function it sleeps in (`wchan`). Returns, per group, (where, samples).
fn sample_wchan(
    stop: Arc<AtomicBool>,
    groups: Vec<(&'static str, Vec<String>)>,
) -> std::thread::JoinHandle<Samples> {
    std::thread::spawn(move || {
        let mut tallies: Vec<HashMap<String, u64>> =
            groups.iter().map(|_| HashMap::new()).collect();
        while !stop.load(Ordering::Relaxed) {
            for (i, (_, tasks)) in groups.iter().enumerate() {
                for t in tasks {
                    let Some(stat) = read(&format!("{t}/stat")) else {
                        continue;
                    };
                    let state = stat_fields(&stat).and_then(|f| f.first().map(|s| s.to_string()));
                    let at = match state.as_deref() {
                        Some("R") => "running".to_string(),
                        _ => read(&format!("{t}/wchan"))
                            .filter(|w| w != "0" && !w.is_empty())
                            .unwrap_or_else(|| format!("state {}", state.unwrap_or_default())),
                    };
                    *tallies[i].entry(at).or_default() += 1;
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        groups
            .iter()
            .zip(tallies)
            .map(|((name, _), t)| {
                let mut v: Vec<(String, u64)> = t.into_iter().collect();
                v.sort_by_key(|x| std::cmp::Reverse(x.1));
                (*name, v)
            })
            .collect()
    })
}

fn print_samples(samples: &Samples) {
    for (name, v) in samples {
        let total: u64 = v.iter().map(|(_, n)| n).sum::<u64>().max(1);
        println!(
            "  where {name} were (sampled): {}",
            v.iter()
                .take(5)
                .map(|(w, n)| format!("{w} {:.0}%", *n as f64 * 100.0 / total as f64))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}

/// Forks at STORM_RATE for STORM from SPAWNERS threads: per MIX forks, one long-lived child
/// of `long` with renamed threads, SHORT_MATCHING short-lived children of `short`, and bare
/// forks of this process. After GRACE, checks every long-lived task against `expect`.
fn storm(ctx: &Ctx, label: &str, long: &Program, short: &Program, expect: &Expect) {
    println!("fork storm, {label}:");
    let dpid = ctx.dpid;
    let log_before = daemon_log(&ctx.log_path);
    let a = cost(dpid);
    let ev_a = ctx.listener.counts.snap();
    let jiffies_a = cpu_jiffies();
    let next = Arc::new(AtomicUsize::new(0));
    let times = Arc::new(SpawnTimes::default());
    let behind_max = Arc::new(AtomicU64::new(0));
    let (long, short) = (Arc::new(long.clone()), Arc::new(short.clone()));
    let start = Instant::now();
    let end = start + STORM;
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let spawners: Vec<_> = (0..SPAWNERS)
        .map(|_| {
            let (next, times, behind_max, long, short, keep, tid_tx) = (
                next.clone(),
                times.clone(),
                behind_max.clone(),
                long.clone(),
                short.clone(),
                ctx.children.clone(),
                tid_tx.clone(),
            );
            std::thread::spawn(move || {
                // SAFETY: gettid has no preconditions.
                tid_tx.send(unsafe { libc::gettid() }).unwrap();
                let mut shorts: Vec<Child> = Vec::new();
                let mut bare: Vec<libc::pid_t> = Vec::new();
                let reap = |shorts: &mut Vec<Child>, bare: &mut Vec<libc::pid_t>, block| {
                    shorts.retain_mut(|c| {
                        if block {
                            let _ = c.wait();
                            false
                        } else {
                            !matches!(c.try_wait(), Ok(Some(_)))
                        }
                    });
                    bare.retain(|&p| {
                        let mut st = 0;
                        // SAFETY: waitpid on a child we forked and have not reaped.
                        let r = unsafe {
                            libc::waitpid(p, &mut st, if block { 0 } else { libc::WNOHANG })
                        };
                        r == 0
                    });
                };
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let due = start + Duration::from_secs_f64(k as f64 / STORM_RATE);
                    let now = Instant::now();
                    if due >= end || now >= end {
                        break;
                    }
                    if due > now {
                        std::thread::sleep(due - now);
                    } else {
                        behind_max.fetch_max((now - due).as_micros() as u64, Ordering::Relaxed);
                    }
                    let t = Instant::now();
                    let kind = match k % MIX {
                        0 => {
                            let c = spawn(&long, "threads");
                            keep.lock().unwrap().push(c);
                            0
                        }
                        s if s <= SHORT_MATCHING => {
                            shorts.push(spawn(&short, "exit"));
                            1
                        }
                        _ => {
                            // SAFETY: the child only calls _exit, which is async-signal-safe.
                            let pid = unsafe { libc::fork() };
                            if pid == 0 {
                                unsafe { libc::_exit(0) };
                            }
                            assert!(pid > 0, "fork: {}", std::io::Error::last_os_error());
                            bare.push(pid);
                            2
                        }
                    };
                    let ns = t.elapsed().as_nanos() as u64;
                    times.n[kind].fetch_add(1, Ordering::Relaxed);
                    times.sum_ns[kind].fetch_add(ns, Ordering::Relaxed);
                    times.max_ns[kind].fetch_max(ns, Ordering::Relaxed);
                    reap(&mut shorts, &mut bare, false);
                }
                reap(&mut shorts, &mut bare, true);
            })
        })
        .collect();
    let spawner_tasks: Vec<String> = (0..SPAWNERS)
        .map(|_| format!("/proc/self/task/{}", tid_rx.recv().unwrap()))
        .collect();
    let events_thread: Vec<String> = events_thread(dpid).into_iter().collect();
    let sampling = Arc::new(AtomicBool::new(false));
    let sampler = sample_wchan(
        sampling.clone(),
        vec![
            ("the spawner threads", spawner_tasks),
            ("the daemon's events thread", events_thread),
        ],
    );
    for s in spawners {
        s.join().expect("a spawner panicked");
    }
    sampling.store(true, Ordering::Relaxed);
    let samples = sampler.join().unwrap();
    let wall = start.elapsed();
    let b = cost(dpid);
    let ev = ctx.listener.counts.snap().since(ev_a);
    let jiffies_b = cpu_jiffies();
    std::thread::sleep(GRACE);
    let c = cost(dpid);
    let ev_all = ctx.listener.counts.snap().since(ev_a);

    let (mut tasks, mut bad_tasks, mut bad_procs, mut not_renamed) = (0, 0, 0, 0);
    let mut examples = Vec::new();
    let pids: Vec<u32> = ctx
        .children
        .lock()
        .unwrap()
        .iter()
        .map(|c| c.id())
        .collect();
    let sub_root = format!("/{}/", ctx.root_name);
    for &pid in &pids {
        let mut bad = false;
        let tids = thread_ids(pid);
        if tids.len() != 1 + LONG_THREADS {
            bad = true;
            examples.push(format!("pid {pid}: {} tasks", tids.len()));
        }
        for tid in tids {
            let comm = read(&format!("/proc/{pid}/task/{tid}/comm"))
                .unwrap_or_default()
                .trim()
                .to_string();
            let cg = cgroup2_of(&format!("/proc/{pid}/task/{tid}/cgroup")).unwrap_or_default();
            let nice = nice_of(&format!("/proc/{pid}/task/{tid}/stat"));
            tasks += 1;
            not_renamed += usize::from(comm.starts_with("cqw-"));
            let (want_cg, want_nice) = if comm.starts_with("cqr-") {
                &expect.renamed
            } else {
                &expect.main
            };
            let cg_ok = match want_cg {
                Some(w) => &cg == w,
                None => !cg.starts_with(&sub_root),
            };
            if !cg_ok || nice != Some(*want_nice) {
                bad_tasks += 1;
                bad = true;
                if examples.len() < 5 {
                    examples.push(format!(
                        "pid {pid} tid {tid} comm {comm}: {cg}, nice {nice:?} (want {}, nice {want_nice})",
                        want_cg.as_deref().unwrap_or("outside the sub-root")
                    ));
                }
            }
        }
        bad_procs += usize::from(bad);
    }
    let secs = wall.as_secs_f64();
    let n = |i: usize| times.n[i].load(Ordering::Relaxed);
    let total = n(0) + n(1) + n(2);
    println!(
        "  target {STORM_RATE:.0} forks/s for {} s from {SPAWNERS} threads: achieved {:.0} forks/s ({total} in {secs:.2} s); at worst {:.0} ms behind schedule; the machine's CPUs {:.0}% busy",
        STORM.as_secs(),
        total as f64 / secs,
        behind_max.load(Ordering::Relaxed) as f64 / 1e3,
        (jiffies_b.0 - jiffies_a.0) as f64 / (jiffies_b.1 - jiffies_a.1).max(1) as f64 * 100.0
    );
    for (i, what) in [
        format!(
            "long-lived {} with {LONG_THREADS} renamed threads",
            long.name
        ),
        format!(
            "short-lived {} ({}, exits at once)",
            short.name,
            short.kind("exit")
        ),
        "bare fork + _exit of this process".to_string(),
    ]
    .iter()
    .enumerate()
    {
        println!(
            "    {:>6} x {what:<52} spawn call mean {:>7.0} us, max {:>7.1} ms",
            n(i),
            times.sum_ns[i].load(Ordering::Relaxed) as f64 / n(i).max(1) as f64 / 1e3,
            times.max_ns[i].load(Ordering::Relaxed) as f64 / 1e6
        );
    }
    print_samples(&samples);
    println!("  events, machine-wide: {}", ev.describe(secs));
    let gsecs = (c.at.unwrap() - b.at.unwrap()).as_secs_f64();
    println!(
        "  daemon CPU: {:.2} s during the storm ({:.0}% of one CPU), {:.2} s in the {gsecs:.0} s grace after it; {:.0} us per event",
        (b.ticks - a.ticks) as f64 / hz(),
        (b.ticks - a.ticks) as f64 / hz() / secs * 100.0,
        (c.ticks - b.ticks) as f64 / hz(),
        (c.ticks - a.ticks) as f64 / hz() * 1e6 / ev_all.total().max(1) as f64
    );
    println!(
        "  daemon RSS: {} kB before, {} kB after the storm, {} kB after the grace (peak so far {} kB); threads {} -> {}",
        a.rss_kb, b.rss_kb, c.rss_kb, c.hwm_kb, a.threads, c.threads
    );
    println!(
        "  after the {} s grace: {bad_tasks} of {tasks} long-lived tasks not as expected ({bad_procs} of {} processes){}",
        GRACE.as_secs(),
        pids.len(),
        if not_renamed > 0 {
            format!("; {not_renamed} threads had not renamed themselves yet")
        } else {
            String::new()
        }
    );
    for e in &examples {
        println!("    {e}");
    }
    let log_after = daemon_log(&ctx.log_path);
    let new_log = &log_after[log_before.len().min(log_after.len())..];
    let w = warnings(new_log);
    println!(
        "  lost events: the daemon rescanned /proc {} time(s) (\"rescanning /proc\" in its log); {} \"classified by rule\" log lines; {} warnings or errors",
        count_lines(new_log, "rescanning /proc"),
        count_lines(new_log, "classified by rule"),
        w.len()
    );
    for l in w.iter().take(5) {
        println!("    {l}");
    }
    state_row(
        &format!("with the {} long-lived children running", pids.len()),
        ctx,
    );
    let t = Instant::now();
    {
        let mut v = ctx.children.lock().unwrap();
        for c in v.drain(..) {
            finish(c);
        }
    }
    let reaped = t.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    state_row(
        &format!(
            "1 s after they exited ({:.1} s to close and reap them)",
            reaped.as_secs_f64()
        ),
        ctx,
    );
}

// ---------------------------------------------------------------------------------------

fn main() {
    if let Ok(mode) = std::env::var(CHILD) {
        child(&mode);
    }
    let Some((_, mount)) = common::start(
        "rules",
        "it writes to the real cgroup2 mount and listens to process events",
    ) else {
        return;
    };
    let began = Instant::now();
    let root_name = format!("cgqos-bench-rules-{}", std::process::id());
    let root = mount.dir.join(&root_name);
    let listener_stop = Arc::new(AtomicBool::new(false));
    let mut g = common::Guard::new(root.clone(), Arc::new(Mutex::new(Vec::new())));
    g.stop = Some(listener_stop.clone());
    let work_tmp = common::tempdir("rules");
    let work = work_tmp.path().to_path_buf();
    let log_path = work.join("daemon.log");
    g._dirs.push(work_tmp);

    // The programs: copies of this binary under unique names. Two rules: one with a group,
    // one with classes only (no cgroup moves); a third name matches nothing.
    let matching = program(&work, "m");
    let nogroup = program(&work, "g");
    let other = program(&work, "n");
    let rules = format!(
        "# cgqos rules benchmark: each rule matches only a copy of the benchmark binary under a unique name\nrules:\n  - name: bench-app\n    match: {{argv0: \"{}\"}}\n    group: background\n    class: background\n    threads:\n      \"cqr-*\": urgent\n  - name: bench-app-no-group\n    match: {{argv0: \"{}\"}}\n    class: background\n    threads:\n      \"cqr-*\": urgent\n",
        matching.name, nogroup.name
    );
    std::fs::create_dir(g.config_dir.join("rules.d")).unwrap();
    std::fs::write(g.config_dir.join("rules.d/10-bench.yaml"), &rules).unwrap();

    println!(
        "cgqos rules benchmark: kernel {}, {} CPUs, load average {}, cgroup2 at {} ({}), controllers {:?}, state dir on {}",
        read("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        read("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        mount.dir.display(),
        mount_options(&mount.dir),
        read(&mount.dir.join("cgroup.controllers").display().to_string())
            .unwrap_or_default()
            .trim(),
        if is_tmpfs(&g.state_dir) {
            "tmpfs"
        } else {
            "not tmpfs"
        }
    );
    println!(
        "programs: {} (rule bench-app: group background, class background, threads \"cqr-*\" urgent), {} (rule bench-app-no-group: the same classes, no group), {} (no rule); in {}/{{rust,tiny}}; tiny static executable: {}",
        matching.name,
        nogroup.name,
        other.name,
        work.display(),
        if matching.tiny.is_some() {
            "yes"
        } else {
            "no (not x86_64, or it did not run): copies of this binary everywhere"
        }
    );
    println!(
        "if interrupted, clean up with: {} teardown --direct --cgroup-root {} --state-dir {}",
        g.exe,
        g.root.display(),
        g.state_dir.display()
    );

    // Listen before the daemon starts, as the daemon does before its first scan.
    let listener = start_listener(listener_stop.clone());

    // The daemon, as deployed: default policy, info logging (to a file here: no journald),
    // the default 4 MiB events receive buffer.
    let log = std::fs::File::create(&log_path).unwrap();
    let mut daemon = g.daemon_command(log);
    daemon.env_remove("CGQOS_EVENTS_RCVBUF");
    // If this benchmark is killed (Ctrl-C: no unwinding), the daemon stops too; the sub-root
    // then stays: the teardown printed above removes it.
    // SAFETY: prctl is async-signal-safe; the closure touches nothing else.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut daemon, || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let started = g.start_daemon(daemon, &log_path);
    let dpid = g.daemon_pid();
    println!(
        "daemon pid {dpid} answers ping {:.0} ms after spawn",
        started.as_secs_f64() * 1e3
    );
    let start_log = daemon_log(&log_path);
    assert!(
        start_log.contains("listening to process events"),
        "the daemon does not listen to process events:\n{start_log}"
    );
    std::thread::sleep(Duration::from_secs(1));
    let c0 = cost(dpid);
    println!(
        "daemon after start: RSS {} kB (peak {} kB), {} threads",
        c0.rss_kb, c0.hwm_kb, c0.threads
    );
    let ctx = Ctx {
        dpid,
        listener,
        log_path: log_path.clone(),
        state_dir: g.state_dir.clone(),
        root_name: root_name.clone(),
        children: g.children.clone(),
    };

    // ---- 3a. Idle, before anything of ours.
    println!();
    idle_phase("idle, before anything of ours", &ctx);

    // ---- 1. Classification latency.
    println!();
    let bg = format!("/{root_name}/chrome/background/non-urgent");
    let urgent = format!("/{root_name}/chrome/background/urgent");
    println!("classification latency, rule bench-app (group, class, nice):");
    latency(&ctx, &matching, Some(&bg), LAT_WARMUP, LAT_RUNS);
    nonmatching(&ctx, &other, NONMATCH_RUNS);
    println!("classification latency, rule bench-app-no-group (nice only, no cgroup move):");
    latency(&ctx, &nogroup, None, LAT_WARMUP / 2, LAT_RUNS / 2);

    // ---- 2. Fork storms: what the spawners reach when nothing matches, then with a rule
    // without a group (task attributes only), then the full rule (cgroup moves too).
    println!();
    storm(
        &ctx,
        "A: nothing matches (the spawners' own ceiling, daemon running)",
        &other,
        &other,
        &Expect {
            main: (None, 0),
            renamed: (None, 0),
        },
    );
    println!();
    storm(
        &ctx,
        "B: rule without a group (nice only)",
        &nogroup,
        &nogroup,
        &Expect {
            main: (None, 10),
            renamed: (None, -8),
        },
    );
    println!();
    storm(
        &ctx,
        "C: the full rule (group, classes and nice)",
        &matching,
        &matching,
        &Expect {
            main: (Some(bg.clone()), 10),
            renamed: (Some(urgent), -8),
        },
    );

    // Latency again, with what the storms left in the daemon's state.
    println!();
    println!("classification latency after the storms, rule bench-app:");
    state_row("what the daemon's state holds now", &ctx);
    latency(&ctx, &matching, Some(&bg), 20, 200);

    // ---- 3b. Idle again.
    println!();
    idle_phase("idle, after the storms", &ctx);

    let logtext = daemon_log(&log_path);
    let w = warnings(&logtext);
    println!();
    println!(
        "daemon log: {} lines, {} bytes, {} \"classified by rule\", {} rescans, {} warnings or errors",
        logtext.lines().count(),
        logtext.len(),
        count_lines(&logtext, "classified by rule"),
        count_lines(&logtext, "rescanning /proc"),
        w.len()
    );
    for l in w.iter().take(10) {
        println!("  {l}");
    }
    drop(ctx);
    drop(g);
    println!(
        "cleaned up ({} removed: {}); total {:.0} s",
        root.display(),
        !root.exists(),
        began.elapsed().as_secs_f64()
    );
}

fn mount_options(dir: &Path) -> String {
    let mi = read("/proc/self/mountinfo").unwrap_or_default();
    mi.lines()
        .find(|l| l.split_whitespace().nth(4) == Some(&dir.display().to_string()))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let sep = f.iter().position(|x| *x == "-").unwrap_or(f.len());
            format!("{} {}", f[5], f.get(sep + 3).copied().unwrap_or(""))
        })
        .unwrap_or_default()
}
