//! Issue 8 §5, PID reuse: a move holds its target by a pidfd from the identity check
//! through the write; if the target exits and its id names a stranger by the time of the
//! write, the stranger is put back where it was and nothing is recorded.
//!
//! The reuse is forced for real (root only; skipped with the reason otherwise): a helper
//! runs as pid 1 of a new pid namespace with its own /proc (`unshare`), where nothing else
//! allocates pids; it starts a daemon that pauses before each write (the debug-build hook
//! `CGQOS_TEST_PAUSE_BEFORE_WRITE_MS`), kills the target during the pause and, through
//! `ns_last_pid`, makes the next process take the target's id.

mod common;
use common::daemon::*;
use common::*;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use cgqos::place::{Held, PlaceError};
use cgqos::procfs::{Pidfd, ProcessId, Procfs, StartTime, ThreadId};

const OPEN_SOCKET: &str = "socket:\n  mode: \"0666\"\n";
const HELPER_ENV: &str = "CGQOS_PIDREUSE_HELPER";
const TAG_ENV: &str = "CGQOS_PIDREUSE_TAG";
const THREAD_CHILD_ENV: &str = "CGQOS_PIDREUSE_THREAD_CHILD";
const PAUSE_ENV: &str = "CGQOS_TEST_PAUSE_BEFORE_WRITE_MS";
/// Long enough for the helper to kill the target and start the stranger; a liveness bound,
/// not a timing assertion (an attempt that misses it is retried).
const PAUSE_MS: &str = "1500";
const ATTEMPTS: usize = 5;
const NS_LAST_PID: &str = "/proc/sys/kernel/ns_last_pid";

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Runs the ignored test `helper` as pid 1 of a new pid and mount namespace; `None` (with
/// the reason printed) when that is impossible here.
fn in_pid_namespace(helper: &str, tag: &str) -> Option<Run> {
    if !is_root() {
        eprintln!("skipped: not root (forcing a pid reuse needs root)");
        return None;
    }
    if !cfg!(debug_assertions) {
        eprintln!("skipped: the pause hook exists in debug builds only");
        return None;
    }
    real_subroot("pidreuse-probe")?;
    let probe = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        eprintln!("skipped: `unshare --pid --fork --mount-proc` does not work here");
        return None;
    }
    let r = run(Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "--"])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            helper,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HELPER_ENV, "1")
        // Unique per test: each helper is pid 1 of its namespace.
        .env(TAG_ENV, format!("{tag}{}", std::process::id())));
    eprintln!("{}", r.stdout);
    eprintln!("{}", r.stderr);
    assert_eq!(r.code, 0, "the helper failed");
    if let Some((_, why)) = r.stdout.split_once("RESULT skipped: ") {
        eprintln!("skipped: {why}");
        return None;
    }
    assert!(r.stdout.contains("RESULT forced"), "{}", r.stdout);
    Some(r)
}

#[test]
fn a_process_id_reused_between_check_and_write_is_put_back() {
    in_pid_namespace("helper_process_reuse", "p");
}

#[test]
fn a_thread_id_reused_between_check_and_write_is_put_back() {
    in_pid_namespace("helper_thread_reuse", "t");
}

/// The daemon's reply to `line`, on a thread: the daemon pauses in the middle.
fn request_later(d: &Daemon, line: String) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let sock = d.socket();
    std::thread::spawn(move || {
        let mut s = UnixStream::connect(sock).unwrap();
        let _ = tx.send(request(&mut s, &line));
    });
    rx
}

fn wait_for_pause(d: &Daemon, id: u32) {
    wait_for("the daemon to pause before its write", || {
        d.log().contains(&format!("before writing {id}\n"))
    });
}

fn recorded(d: &Daemon, id: u32) -> bool {
    let v = recorded_state(&d.state());
    ["tasks", "attrs", "why"]
        .iter()
        .any(|k| v[k].get(id.to_string()).is_some())
}

fn kill(mut c: Child) {
    let _ = c.kill();
    let _ = c.wait();
}

fn helper_daemon() -> Option<Daemon> {
    std::env::var_os(HELPER_ENV)?;
    let tag = format!("pr{}", std::env::var(TAG_ENV).unwrap());
    let d = Daemon::with(&tag, OPEN_SOCKET, None, &[], &[(PAUSE_ENV, PAUSE_MS)]);
    if d.is_none() {
        println!("RESULT skipped: no usable cgroup2 inside the namespace");
    }
    d
}

/// Not a test: pid 1 of a fresh pid namespace, forcing a process id's reuse.
#[test]
#[ignore = "helper: run in a pid namespace by a_process_id_reused_between_check_and_write_is_put_back"]
fn helper_process_reuse() {
    let Some(mut d) = helper_daemon() else { return };
    for attempt in 0..ATTEMPTS {
        let p = d.sleeper();
        let origin = cgroup_of(p);
        let reply = request_later(
            &d,
            format!(r#"{{"v":1,"op":"move","group":"background","targets":[{{"id":{p}}}]}}"#),
        );
        wait_for_pause(&d, p);
        kill(d.sleepers.pop().unwrap());
        std::fs::write(NS_LAST_PID, (p - 1).to_string()).unwrap();
        let stranger = Command::new("sleep").arg("60").spawn().unwrap();
        let early = reply.try_recv().ok();
        if stranger.id() != p || early.is_some() {
            println!(
                "attempt {attempt}: not forced (stranger {}, target {p}, reply already: {early:?})",
                stranger.id()
            );
            kill(stranger);
            let _ = reply.recv_timeout(Duration::from_secs(30));
            continue;
        }
        let x = stranger.id();
        let reply = reply.recv_timeout(Duration::from_secs(30)).unwrap();
        assert!(
            reply.contains(r#""code":"no_such_process""#),
            "{reply}\n{}",
            d.log()
        );
        assert_eq!(
            cgroup_of(x),
            origin,
            "the stranger is back where it was born"
        );
        assert!(!recorded(&d, x), "nothing recorded for {x}");
        assert!(
            d.log()
                .contains(&format!("id {x} was reused during a move")),
            "{}",
            d.log()
        );
        kill(stranger);
        println!("RESULT forced");
        return;
    }
    println!("RESULT skipped: the pid could not be reused in {ATTEMPTS} attempts");
}

/// Not a test: a process with one extra thread that exits when told (a line on stdin).
#[test]
#[ignore = "helper process for the thread reuse test"]
fn thread_child() {
    if std::env::var_os(THREAD_CHILD_ENV).is_none() {
        return;
    }
    let (tx, rx) = mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        // SAFETY: gettid has no preconditions.
        println!("TID {}", unsafe { libc::gettid() });
        let _ = rx.recv();
    });
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    drop(tx);
    t.join().unwrap();
    println!("GONE");
    // Runs until the parent closes stdin.
    let _ = std::io::stdin().read_line(&mut line);
}

fn line_with(out: &mut BufReader<ChildStdout>, prefix: &str) -> String {
    let mut line = String::new();
    loop {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "child died");
        // The harness may print `test name ... ` before it on the same line.
        if let Some((_, rest)) = line.trim_end().split_once(prefix) {
            return rest.to_string();
        }
    }
}

/// Not a test: pid 1 of a fresh pid namespace, forcing a thread id's reuse by a new
/// process born in the same threaded subtree (so the kernel lets the write move it).
#[test]
#[ignore = "helper: run in a pid namespace by a_thread_id_reused_between_check_and_write_is_put_back"]
fn helper_thread_reuse() {
    let Some(d) = helper_daemon() else { return };
    for attempt in 0..ATTEMPTS {
        // The thread's process, and a shell that starts the stranger when told the id.
        let mut child = child_test_command(&std::env::current_exe().unwrap(), "thread_child")
            .env(THREAD_CHILD_ENV, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let t: u32 = line_with(&mut out, "TID ").parse().unwrap();
        let mut shell = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "read x; echo $x > {NS_LAST_PID}; sleep 60 & echo STRANGER $!; wait"
            ))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut shell_out = BufReader::new(shell.stdout.take().unwrap());
        let both = format!(
            r#"{{"v":1,"op":"move","group":"background","targets":[{{"id":{}}},{{"id":{}}}]}}"#,
            child.id(),
            shell.id()
        );
        let r = request_later(&d, both).recv().unwrap();
        assert_eq!(r.matches(r#""ok":true"#).count(), 3, "{r}\n{}", d.log());
        let background = cgroup_of(shell.id());
        assert!(background.ends_with("/chrome/background"), "{background}");

        let reply = request_later(
            &d,
            format!(r#"{{"v":1,"op":"move_threads","class":"urgent","targets":[{{"id":{t}}}]}}"#),
        );
        wait_for_pause(&d, t);
        // The thread exits; the stranger is born in the shell's group with its id.
        writeln!(child.stdin.as_mut().unwrap()).unwrap();
        line_with(&mut out, "GONE");
        // Joined is not yet reaped: the id is free once the task list no longer shows it.
        let task = format!("/proc/{}/task/{t}", child.id());
        wait_for("the thread's id to be free", || {
            !std::path::Path::new(&task).exists()
        });
        writeln!(shell.stdin.as_mut().unwrap(), "{}", t - 1).unwrap();
        let x: u32 = line_with(&mut shell_out, "STRANGER ").parse().unwrap();
        let early = reply.try_recv().ok();
        if x != t || early.is_some() {
            println!(
                "attempt {attempt}: not forced (stranger {x}, thread {t}, reply already: {early:?})"
            );
            let _ = reply.recv_timeout(Duration::from_secs(30));
            kill(child);
            // SAFETY: kill on the stranger, a child of our own shell.
            unsafe { libc::kill(x as i32, libc::SIGKILL) };
            kill(shell);
            continue;
        }
        let reply = reply.recv_timeout(Duration::from_secs(30)).unwrap();
        assert!(
            reply.contains(r#""code":"no_such_process""#),
            "{reply}\n{}",
            d.log()
        );
        assert_eq!(
            cgroup_of(x),
            background,
            "the stranger is back where it was born"
        );
        assert!(!recorded(&d, x), "nothing recorded for {x}");
        assert!(
            d.log()
                .contains(&format!("id {x} was reused during a move")),
            "{}",
            d.log()
        );
        kill(child);
        // SAFETY: kill on the stranger, a child of our own shell.
        unsafe { libc::kill(x as i32, libc::SIGKILL) };
        kill(shell);
        println!("RESULT forced");
        return;
    }
    println!("RESULT skipped: the thread id could not be reused in {ATTEMPTS} attempts");
}

// --- Without forced reuse: the held paths themselves, on real tasks. ---

#[test]
fn a_held_process_is_there_until_it_exits() {
    let proc = Procfs::new("/proc");
    let mut c = Command::new("sleep").arg("60").spawn().unwrap();
    let pid = c.id();
    let h = Held::process(&proc, ProcessId::new(pid), None).unwrap();
    assert!(h.still_there(&proc));
    // A wrong start time is refused as a reused id.
    let st = h.stat.starttime;
    assert!(matches!(
        Held::process(&proc, ProcessId::new(pid), Some(StartTime::new(st + 1))),
        Err(PlaceError::Reused { .. })
    ));
    c.kill().unwrap();
    c.wait().unwrap();
    assert!(!h.still_there(&proc), "the pidfd shows the exit");
    assert!(matches!(
        Held::process(&proc, ProcessId::new(pid), Some(StartTime::new(st))),
        Err(PlaceError::Gone(_))
    ));
}

#[test]
fn a_thread_is_held_by_its_own_pidfd_or_through_its_process() {
    let proc = Procfs::new("/proc");
    let (tx, rx) = mpsc::channel::<()>();
    let (tid_tx, tid_rx) = mpsc::channel();
    let t = std::thread::spawn(move || {
        // SAFETY: gettid has no preconditions.
        tid_tx.send(unsafe { libc::gettid() } as u32).unwrap();
        let _ = rx.recv();
    });
    let tid = tid_rx.recv().unwrap();
    // A thread id is not a process.
    assert!(matches!(
        Held::process(&proc, ProcessId::new(tid), None),
        Err(PlaceError::NotAProcess { .. })
    ));
    let own = Pidfd::thread(tid).is_ok();
    let by_thread = Held::thread(&proc, ThreadId::new(tid), None).unwrap();
    let by_process = Held::thread_with(&proc, ThreadId::new(tid), None, false).unwrap();
    assert_eq!(by_thread.tgid(), std::process::id());
    assert_eq!(by_process.tgid(), std::process::id());
    assert!(by_thread.still_there(&proc) && by_process.still_there(&proc));
    drop(tx);
    t.join().unwrap();
    // A joined thread may still be finishing its exit for an instant (its id is not free
    // until then): wait for the kernel to show it, a liveness bound. Through the process:
    // the thread's entry leaves its process's task list.
    wait_for("the thread's exit to show in /proc", || {
        !by_process.still_there(&proc)
    });
    if own {
        wait_for("the thread's pidfd to show its exit", || {
            !by_thread.still_there(&proc)
        });
    } else {
        eprintln!("PIDFD_THREAD unsupported (kernel before 6.9): the process path only");
    }
}

/// A normal direct move works and reads the target's stat once and its status never
/// (the start time is no longer re-read after the write: the pidfd answers).
#[test]
fn a_normal_move_holds_the_target_without_extra_proc_reads() {
    let Some(root) = real_subroot("pidreuse-normal") else {
        return;
    };
    let state = tempfile::tempdir().unwrap();
    let cmd = |args: &[&str]| {
        let mut c = cgqos();
        c.args(args)
            .arg("--cgroup-root")
            .arg(&root)
            .arg("--state-dir")
            .arg(state.path());
        c
    };
    assert_eq!(run(&mut cmd(&["setup"])).code, 0);
    let mut sleeper = Command::new("sleep").arg("60").spawn().unwrap();
    let pid = sleeper.id();
    let strace = Command::new("strace").arg("-V").output().is_ok();
    let trace = state.path().join("trace");
    let r = if strace {
        let mut c = Command::new("strace");
        c.args(["-f", "-qq", "-e", "trace=openat", "-o"])
            .arg(&trace)
            .arg(env!("CARGO_BIN_EXE_cgqos"))
            .args(["move", &pid.to_string(), "background"])
            .arg("--cgroup-root")
            .arg(&root)
            .arg("--state-dir")
            .arg(state.path())
            .env("CGQOS_SOCKET", "/nonexistent/cgqos-test.sock");
        run(&mut c)
    } else {
        eprintln!("strace not installed: the move is checked, its /proc reads are not counted");
        run(&mut cmd(&["move", &pid.to_string(), "background"]))
    };
    let moved = cgroup_of(pid);
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    let teardown = run(&mut cmd(&["teardown"]));
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(moved.ends_with("/chrome/background"), "{moved}");
    assert_eq!(teardown.code, 0, "{}", teardown.stderr);
    if strace {
        let t = std::fs::read_to_string(&trace).unwrap();
        let count = |file: &str| {
            t.lines()
                .filter(|l| l.contains(&format!("\"/proc/{pid}/{file}\"")))
                .count()
        };
        assert_eq!(count("stat"), 1, "{t}");
        assert_eq!(count("status"), 0, "{t}");
    }
}
