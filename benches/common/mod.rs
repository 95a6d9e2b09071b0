//! The harness the benchmarks share (`mod common;` in each): the root and cgroup2 checks, the
//! re-executed child processes, the timing and percentiles, and the `Guard` that stops the
//! daemon and removes everything a benchmark created.
//!
//! Each benchmark uses only part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cgqos::cgroupfs::Mount;
use cgqos::daemon::client::Client;
use cgqos::daemon::protocol::Request;

// ---------------------------------------------------------------------------------------
// Start

/// What a benchmark's `main` checks after dispatching its child modes: returns `None` (after
/// printing why) when it should not run: `cargo test --benches` probing, not root (`why`
/// says what it needs root for), or no cgroup2 mount of the whole hierarchy. Otherwise the
/// mountinfo text and that mount.
pub fn start(name: &str, why: &str) -> Option<(String, Mount)> {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return None; // `cargo test --benches` probing
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("skipped: the {name} benchmark needs root ({why})");
        return None;
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let Some(mount) = cgqos::cgroupfs::cgroup2_mounts(&mountinfo)
        .into_iter()
        .find(|m| m.root == "/")
    else {
        println!("skipped: no cgroup2 mount");
        return None;
    };
    Some((mountinfo, mount))
}

// ---------------------------------------------------------------------------------------
// Child processes: this binary, re-executed with an environment variable set

/// The child mode of `spawn_ready`: a process of `threads` threads that says "ready" and
/// waits for a line on its stdin, or its end (or to be killed).
pub fn ready_child(threads: usize) -> ! {
    let hs: Vec<_> = (0..threads.saturating_sub(1))
        .map(|_| std::thread::spawn(std::thread::park))
        .collect();
    println!("ready");
    std::io::stdout().flush().unwrap();
    let _ = std::io::stdin().read_line(&mut String::new());
    drop(hs);
    std::process::exit(0)
}

/// Starts this binary with `var` set to `threads` (its `main` then calls `ready_child`) and
/// waits until it is ready.
pub fn spawn_ready(var: &str, threads: usize) -> Child {
    let mut c = Command::new(std::env::current_exe().unwrap())
        .env(var, threads.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(c.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    c
}

/// Kills and reaps children.
pub fn kill_all(children: &mut Vec<Child>) {
    for c in children.iter_mut() {
        let _ = c.kill();
    }
    for mut c in children.drain(..) {
        let _ = c.wait();
    }
}

/// Where a `Guard` keeps the children it kills: a plain list, or one shared with threads.
pub trait Children {
    fn kill_all(&mut self);
}

impl Children for Vec<Child> {
    fn kill_all(&mut self) {
        kill_all(self);
    }
}

impl Children for Arc<Mutex<Vec<Child>>> {
    fn kill_all(&mut self) {
        kill_all(&mut self.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

// ---------------------------------------------------------------------------------------
// Measuring

pub fn raw_write(path: &Path, pid: u32) {
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all(pid.to_string().as_bytes()).unwrap();
}

pub struct Stats {
    pub p50: Duration,
    pub p99: Duration,
    /// Requests per second over the measured wall time.
    pub rate: f64,
}

pub fn stats(mut t: Vec<Duration>, wall: Duration) -> Stats {
    t.sort();
    Stats {
        p50: t[t.len() / 2],
        p99: t[(t.len() * 99 / 100).min(t.len() - 1)],
        rate: t.len() as f64 / wall.as_secs_f64(),
    }
}

/// Times `rounds` calls of `f` (after a tenth as many for warm-up).
pub fn measure(rounds: usize, mut f: impl FnMut(usize)) -> Stats {
    for i in 0..rounds / 10 + 1 {
        f(i);
    }
    let start = Instant::now();
    let t: Vec<Duration> = (0..rounds)
        .map(|i| {
            let s = Instant::now();
            f(i);
            s.elapsed()
        })
        .collect();
    stats(t, start.elapsed())
}

/// A number field of a `/proc/<pid>/status` text (`VmRSS:`, say); 0 when missing.
pub fn status_field(status: &str, name: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------
// Temporary places

pub fn is_tmpfs(p: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs fills the zeroed struct we pass; the path is a valid C string.
    unsafe {
        let mut s: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut s) == 0 && s.f_type == libc::TMPFS_MAGIC
    }
}

pub fn fs_name(p: &Path) -> &'static str {
    if is_tmpfs(p) { "tmpfs" } else { "not tmpfs" }
}

/// A temporary directory named `cgqos-bench-<what>-…` in the default temporary directory.
pub fn tempdir(what: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("cgqos-bench-{what}-"))
        .tempdir()
        .unwrap()
}

// ---------------------------------------------------------------------------------------
// The daemon and the cleanup

/// Removes `dir` and the cgroups below it, deepest first.
pub fn rmdir_tree(dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                rmdir_tree(&e.path());
            }
        }
    }
    if let Err(e) = std::fs::remove_dir(dir) {
        eprintln!("warning: rmdir {}: {e}", dir.display());
    }
}

/// Owns everything a daemon benchmark creates; its `Drop` undoes it all, also on panic:
/// `stop` raised, children killed, SIGTERM to the daemon, `cgqos teardown --direct`,
/// leftover cgroups removed deepest first.
pub struct Guard<C: Children> {
    pub exe: &'static str,
    pub root: PathBuf,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub config_dir: PathBuf,
    pub daemon: Option<Child>,
    pub children: C,
    /// Raised first, for threads of the benchmark's own to stop.
    pub stop: Option<Arc<AtomicBool>>,
    /// Dropped (removed) after `drop` has run.
    pub _dirs: Vec<tempfile::TempDir>,
}

impl<C: Children> Guard<C> {
    /// For a daemon on the throwaway sub-root `root` (which must not exist yet): a state
    /// directory (on /dev/shm when that is tmpfs, as /run is in production), a socket
    /// directory and an empty configuration directory, all temporary.
    pub fn new(root: PathBuf, children: C) -> Self {
        assert!(!root.exists(), "{} exists", root.display());
        let shm = Path::new("/dev/shm");
        let state_tmp = if is_tmpfs(shm) {
            tempfile::Builder::new()
                .prefix("cgqos-bench-state-")
                .tempdir_in(shm)
        } else {
            tempfile::Builder::new()
                .prefix("cgqos-bench-state-")
                .tempdir()
        }
        .unwrap();
        let sock_tmp = tempdir("sock");
        let config_tmp = tempdir("config");
        Guard {
            exe: bench_exe(),
            root,
            socket: sock_tmp.path().join("cgqos.sock"),
            state_dir: state_tmp.path().to_path_buf(),
            config_dir: config_tmp.path().to_path_buf(),
            daemon: None,
            children,
            stop: None,
            _dirs: vec![state_tmp, sock_tmp, config_tmp],
        }
    }

    /// `cgqos <args>` on this guard's sub-root, state, socket and configuration directories,
    /// stdin from /dev/null.
    fn cgqos(&self, args: &[&str]) -> Command {
        let mut c = Command::new(self.exe);
        c.args(args)
            .arg("--cgroup-root")
            .arg(&self.root)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--socket")
            .arg(&self.socket)
            .arg("--config-dir")
            .arg(&self.config_dir)
            .stdin(Stdio::null());
        c
    }

    /// The daemon as deployed: info logging to `log` (there is no journald here), no
    /// `RUST_LOG`, no systemd notification socket. To start with `start_daemon`.
    pub fn daemon_command(&self, log: std::fs::File) -> Command {
        let mut c = self.cgqos(&["daemon"]);
        c.env("CGQOS_LOG", "info")
            .env_remove("RUST_LOG")
            .env_remove("NOTIFY_SOCKET")
            .stdout(Stdio::null())
            .stderr(log);
        c
    }

    /// Starts the daemon and waits (10 s at most) until it answers `ping`; the time that
    /// took. A daemon that exits or does not answer panics with its log (`log_path`).
    pub fn start_daemon(&mut self, mut daemon: Command, log_path: &Path) -> Duration {
        self.daemon = Some(daemon.spawn().unwrap());
        let log = || std::fs::read_to_string(log_path).unwrap_or_default();
        let t0 = Instant::now();
        loop {
            if let Some(st) = self.daemon.as_mut().unwrap().try_wait().unwrap() {
                panic!("the daemon exited at start ({st}):\n{}", log());
            }
            if let Ok(Some(mut c)) = Client::connect(&self.socket) {
                if c.call_raw(&Request::Ping).is_ok_and(|r| r.ok) {
                    return t0.elapsed();
                }
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "the daemon did not answer ping within 10 s:\n{}",
                log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn daemon_pid(&self) -> u32 {
        self.daemon.as_ref().expect("daemon running").id()
    }

    fn stop_daemon(&mut self) {
        let Some(mut d) = self.daemon.take() else {
            return;
        };
        // SAFETY: kill(2) on the pid of our own child, which we have not reaped yet.
        unsafe { libc::kill(d.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match d.try_wait() {
                Ok(Some(st)) => {
                    if !st.success() {
                        eprintln!("warning: the daemon exited with {st} after SIGTERM");
                    }
                    return;
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => {
                    eprintln!("warning: the daemon ignored SIGTERM for 5 s; killing it");
                    let _ = d.kill();
                    let _ = d.wait();
                    return;
                }
            }
        }
    }
}

impl<C: Children> Drop for Guard<C> {
    fn drop(&mut self) {
        if let Some(stop) = &self.stop {
            stop.store(true, Ordering::Relaxed);
        }
        self.children.kill_all();
        self.stop_daemon();
        match self.cgqos(&["teardown", "--direct"]).output() {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "warning: teardown failed ({}): {}{}",
                o.status,
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => eprintln!("warning: teardown did not run: {e}"),
        }
        if self.root.exists() {
            eprintln!(
                "warning: teardown left {}; removing it",
                self.root.display()
            );
            rmdir_tree(&self.root);
        }
    }
}

/// The `cgqos` binary the benchmarks run: this build's, or `CGQOS_BENCH_EXE` (a copy of an
/// earlier build, to measure before and after a change in the same run and conditions).
fn bench_exe() -> &'static str {
    match std::env::var("CGQOS_BENCH_EXE") {
        Ok(p) if !p.is_empty() => Box::leak(p.into_boxed_str()),
        _ => env!("CARGO_BIN_EXE_cgqos"),
    }
}
