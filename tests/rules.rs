//! Rules on real process events (root only; skipped with the reason otherwise). Every rule
//! matches only programs these tests start: copies of this test binary under unique names.

mod common;
use common::daemon::*;
use common::*;

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use cgqos::daemon::engine::RECHECK_AFTER;

const CHILD: &str = "CGQOS_RULES_CHILD";

/// Not a test: the program the rules match (run as a renamed copy of this binary). Starts
/// `CGQOS_RULES_CHILD` threads named worker-N, prints their tids, and runs until stdin
/// closes. For each line it reads, worker-0 sets its own nice to N (`nice N`) or renames
/// itself to `renamed-0` (anything else).
#[test]
#[ignore = "helper process for the rules tests"]
fn rules_child() {
    let Ok(n) = std::env::var(CHILD) else { return };
    let n: usize = n.parse().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let (rename_tx, rename_rx) = std::sync::mpsc::channel::<String>();
    let rename_rx = std::sync::Mutex::new(Some(rename_rx));
    let rename_rx = std::sync::Arc::new(rename_rx);
    for i in 0..n {
        let tx = tx.clone();
        let rr = rename_rx.clone();
        std::thread::Builder::new()
            .name(format!("worker-{i}"))
            .spawn(move || {
                // SAFETY: gettid has no preconditions.
                tx.send(unsafe { libc::gettid() } as u32).unwrap();
                if i == 0 {
                    let rx = rr.lock().unwrap().take().unwrap();
                    while let Ok(line) = rx.recv() {
                        if let Some(n) = line.trim().strip_prefix("nice ") {
                            // SAFETY: setpriority on this thread (who 0 = the caller).
                            unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, n.parse().unwrap()) };
                            continue;
                        }
                        let name = std::ffi::CString::new("renamed-0").unwrap();
                        // SAFETY: PR_SET_NAME with a NUL-terminated string we own.
                        unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
                    }
                }
                std::thread::park();
            })
            .unwrap();
    }
    let mut tids: Vec<u32> = (0..n).map(|_| rx.recv().unwrap()).collect();
    tids.sort();
    println!(
        "TIDS {}",
        tids.iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let stdin = std::io::stdin();
    let mut line = String::new();
    while stdin.read_line(&mut line).unwrap_or(0) > 0 {
        let _ = rename_tx.send(line.clone());
        line.clear();
    }
    std::process::exit(0);
}

fn program(tag: &str) -> Program {
    program_copy("cq", tag)
}

fn run_program(p: &Program, threads: usize) -> Running {
    run_child_program(p, "rules_child", CHILD, threads)
}

fn nice(pid: u32, tid: u32) -> i32 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).unwrap();
    let rest = &s[s.rfind(')').unwrap() + 2..];
    rest.split_whitespace().nth(16).unwrap().parse().unwrap()
}

/// The nice value of the calling test thread, which every task it starts inherits: 0 under a
/// plain `cargo test`, 10 under `nice -n 10 cargo test`. What "untouched" and "restored" mean.
fn start_nice() -> i32 {
    // SAFETY: gettid has no preconditions.
    nice(std::process::id(), unsafe { libc::gettid() } as u32)
}

const OPEN: &str = "socket:\n  mode: \"0666\"\n";

fn rules_daemon(tag: &str, rules: &str, env: &[(&str, &str)]) -> Option<Daemon> {
    Daemon::with(tag, OPEN, None, &[("rules.d/10-test.yaml", rules)], env)
}

#[test]
fn a_matching_program_is_classified_at_exec_and_a_renamed_thread_again() {
    let p = program("ex");
    let rules = format!(
        "rules:\n  - name: test-app\n    match: {{argv0: \"{}\"}}\n    group: background\n    class: utility\n    threads:\n      \"renamed-*\": background\n",
        p.name
    );
    let Some(d) = rules_daemon("exec", &rules, &[]) else {
        return;
    };
    let r = run_program(&p, 2);
    let pid = r.child.id();
    wait_for("the process in background", || {
        cgroup_of_task(pid, pid).ends_with("/chrome/background/non-urgent")
    });
    wait_for("utility's nice on every thread", || {
        r.tids.iter().all(|&t| nice(pid, t) == 1)
    });
    assert_eq!(nice(pid, pid), 1);
    // Rename worker-0 after its creation: the COMM event re-classifies it.
    let mut stdin = r.child.stdin.as_ref().unwrap();
    writeln!(stdin, "rename").unwrap();
    let renamed = r.tids[0];
    let why = || {
        d.cli(&[
            "why",
            &renamed.to_string(),
            "--state-dir",
            d.state().to_str().unwrap(),
        ])
    };
    // The daemon sets the attributes before it saves the record that `why` reads: wait for
    // both (seen failing under `nice -n 10`, where the window was hit).
    wait_for("the renamed thread in class background", || {
        nice(pid, renamed) == 10 && why().stdout.contains("class: background")
    });
    assert_eq!(nice(pid, renamed), 10);
    assert_eq!(nice(pid, r.tids[1]), 1, "the other worker keeps its class");
    // Explain: the rule, with file and line.
    let w = why();
    assert!(
        w.stdout.contains("placed by rule test-app (") && w.stdout.contains("10-test.yaml:2)"),
        "{}",
        w.stdout
    );
    assert!(w.stdout.contains("class: background"), "{}", w.stdout);
    // Reset: nice and cgroup back, through the daemon.
    let original = cgroup_of_task(std::process::id(), std::process::id());
    let reset = d.cli(&["reset"]);
    assert_eq!(reset.code, 0, "{}{}", reset.stdout, reset.stderr);
    for &t in &r.tids {
        assert_eq!(nice(pid, t), start_nice(), "reset restores nice of {t}");
    }
    assert_eq!(
        cgroup_of_task(pid, pid),
        original,
        "reset restores the cgroup"
    );
    assert!(
        d.log().contains("classified by rule test-app"),
        "one log line per applied rule"
    );
}

/// A program that sets a thread's nice itself right after the thread was classified (as
/// Chromium does for every new thread, after the events that announced it): the daemon's
/// recheck gives the thread its class back, and `reset` restores the nice the program chose,
/// which is what the thread would have without cgqos.
#[test]
fn a_thread_that_sets_its_own_nice_after_its_events_is_rechecked_and_reset_keeps_its_choice() {
    let p = program("own");
    let rules = format!(
        "rules:\n  - name: own\n    match: {{argv0: \"{}\"}}\n    class: utility\n",
        p.name
    );
    let Some(d) = rules_daemon("own", &rules, &[]) else {
        return;
    };
    let r = run_program(&p, 2);
    let pid = r.child.id();
    wait_for("utility's nice on every thread", || {
        r.tids.iter().all(|&t| nice(pid, t) == 1)
    });
    // Within the recheck window (0.1 s and 1 s after the thread's events).
    let own = start_nice() + 4;
    writeln!(r.child.stdin.as_ref().unwrap(), "nice {own}").unwrap();
    let worker = r.tids[0];
    // Past the last recheck: whenever the nice landed, a recheck came after it.
    std::thread::sleep(RECHECK_AFTER[1] + Duration::from_millis(500));
    wait_for("the recheck to give worker-0 its class back", || {
        nice(pid, worker) == 1
    });
    assert!(d.log().contains("classified by rule own"), "{}", d.log());
    let reset = d.cli(&["reset"]);
    assert_eq!(reset.code, 0, "{}{}", reset.stdout, reset.stderr);
    assert_eq!(
        nice(pid, worker),
        own,
        "the program's own choice is its original"
    );
    assert_eq!(nice(pid, r.tids[1]), start_nice());
    assert_eq!(nice(pid, pid), start_nice());
}

#[test]
fn the_schedqos_json_example_on_a_real_multithreaded_process() {
    let p = program("sq");
    // Every task background, except threads named like the program: interactive. The main
    // thread's comm is the program's name.
    let json = format!(
        r#"{{"{0}": {{"qos": "QOS_BACKGROUND", "thread_qos": {{"{0}": "QOS_INTERACTIVE"}}}}}}"#,
        p.name
    );
    let Some(_d) = Daemon::with("sq", OPEN, None, &[("rules.d/chrome.json", &json)], &[]) else {
        return;
    };
    let original = cgroup_of_task(std::process::id(), std::process::id());
    let r = run_program(&p, 3);
    let pid = r.child.id();
    wait_for("the main thread interactive (nice -8)", || {
        nice(pid, pid) == -8
    });
    wait_for("the workers background (nice 10)", || {
        r.tids.iter().all(|&t| nice(pid, t) == 10)
    });
    // schedqos names no group: the process keeps its cgroup.
    assert_eq!(cgroup_of_task(pid, pid), original);
}

#[test]
fn tasks_that_match_no_rule_are_never_touched() {
    let p = program("no");
    let Some(mut d) = rules_daemon(
        "none",
        "rules:\n  - match: {argv0: \"cgqos-matches-nothing\"}\n    class: background\n",
        &[],
    ) else {
        return;
    };
    let r = run_program(&p, 1);
    let pid = r.child.id();
    let s = d.sleeper();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(nice(pid, pid), start_nice());
    assert_eq!(nice(s, s), start_nice());
    assert!(!cgroup_of_task(pid, pid).contains("chrome"));
}

#[test]
fn lost_events_are_followed_by_a_rescan_with_nothing_missed() {
    let p = program("lo");
    let rules = format!(
        "rules:\n  - match: {{argv0: \"{}\"}}\n    class: background\n",
        p.name
    );
    // A receive buffer too small for a burst: the kernel drops events (ENOBUFS).
    let Some(d) = rules_daemon("lost", &rules, &[("CGQOS_EVENTS_RCVBUF", "1")]) else {
        return;
    };
    // A burst of short-lived unrelated processes to overflow the buffer, and long-lived
    // matching ones among them.
    let mut keep = Vec::new();
    for i in 0..40 {
        let mut burst: Vec<Child> = (0..25)
            .map(|_| Command::new("true").spawn().unwrap())
            .collect();
        if i % 4 == 0 {
            keep.push(run_program(&p, 1));
        }
        for b in &mut burst {
            let _ = b.wait();
        }
    }
    wait_for("a rescan after lost events", || {
        d.log().contains("rescanning /proc")
    });
    for r in &keep {
        let pid = r.child.id();
        wait_for("every long-lived matching task classified", || {
            r.tids.iter().chain([&pid]).all(|&t| nice(pid, t) == 10)
        });
    }
}

#[test]
fn move_thread_applies_the_class_attributes() {
    let Some(mut d) = Daemon::new("attrs", OPEN, None) else {
        return;
    };
    let pid = d.sleeper();
    assert_eq!(d.cli(&["move", &pid.to_string(), "foreground"]).code, 0);
    let r = d.cli(&["move", "--thread", &pid.to_string(), "utility"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(nice(pid, pid), 1);
    assert!(cgroup_of_task(pid, pid).ends_with("/chrome/foreground/non-urgent"));
    // schedqos names work as classes too.
    assert_eq!(
        d.cli(&["move", "--thread", &pid.to_string(), "QOS_BACKGROUND"])
            .code,
        0
    );
    assert_eq!(nice(pid, pid), 10);
    let r = d.cli(&["move", "--thread", &pid.to_string(), "QOS_NOPE"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    // Teardown restores the attributes with the cgroup.
    d.signal(libc::SIGTERM);
    let t = run(cgqos()
        .args(["teardown", "--direct", "--cgroup-root"])
        .arg(&d.root)
        .arg("--state-dir")
        .arg(d.state()));
    assert_eq!(t.code, 0, "{}", t.stderr);
    assert_eq!(nice(pid, pid), start_nice(), "teardown restored nice");
    assert!(!Path::new(&d.root).exists());
}

#[test]
fn new_rules_apply_to_running_tasks_and_an_invalid_file_keeps_the_old_ones() {
    let p = program("rl");
    let rules = |class: &str| {
        format!(
            "rules:\n  - name: app\n    match: {{argv0: \"{}\"}}\n    class: {class}\n",
            p.name
        )
    };
    let Some(d) = rules_daemon("reload", &rules("utility"), &[]) else {
        return;
    };
    let r = run_program(&p, 1);
    let pid = r.child.id();
    wait_for("utility (nice 1)", || nice(pid, pid) == 1);
    // An editor's save into rules.d: temporary file, then rename.
    let dir = d.dir.path().join("conf/rules.d");
    std::fs::write(dir.join(".10-test.yaml.swp"), rules("background")).unwrap();
    std::fs::rename(dir.join(".10-test.yaml.swp"), dir.join("10-test.yaml")).unwrap();
    wait_for(
        "the running task re-classified as background (nice 10)",
        || nice(pid, pid) == 10,
    );
    // An invalid rules file: refused with file and line; the running rules stay.
    std::fs::write(
        dir.join("20-bad.yaml"),
        "rules:\n  - match: {argv0: x}\n    class: warp-speed\n",
    )
    .unwrap();
    wait_for("the refusal", || {
        d.log()
            .contains("20-bad.yaml:3:12: unknown class \"warp-speed\"")
    });
    let q = run_program(&p, 1);
    let qid = q.child.id();
    wait_for("a new task still classified by the old rules", || {
        nice(qid, qid) == 10
    });
}

#[test]
fn rules_writable_by_others_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.d");
    std::fs::create_dir(&rules).unwrap();
    std::fs::write(rules.join("10.yaml"), "rules: []\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        rules.join("10.yaml"),
        std::fs::Permissions::from_mode(0o666),
    )
    .unwrap();
    let r = run(cgqos()
        .args(["rules", "check", "--config-dir"])
        .arg(dir.path()));
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("10.yaml:1:1: refused: writable by group or others (mode 666)"),
        "{}",
        r.stderr
    );
}

#[test]
fn records_of_rule_moved_tasks_are_dropped_when_they_exit() {
    let p = program("ex2");
    let rules = format!(
        "rules:\n  - match: {{argv0: \"{}\"}}\n    group: background\n    class: background\n",
        p.name
    );
    let Some(d) = rules_daemon("exit", &rules, &[]) else {
        return;
    };
    let state = || recorded_state(&d.state()).to_string();
    let pid;
    {
        let r = run_program(&p, 1);
        pid = r.child.id();
        wait_for("the rule to move it", || {
            state().contains(&format!("\"{pid}\":"))
        });
    }
    // The program exited (Running's drop): no record of its id is left.
    wait_for("its records to go", || {
        !state().contains(&format!("\"{pid}\":"))
    });
}

/// Scheduling policy of a task: field 41 of its stat.
fn policy(pid: u32, tid: u32) -> u32 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).unwrap();
    let rest = &s[s.rfind(')').unwrap() + 2..];
    rest.split_whitespace().nth(38).unwrap().parse().unwrap()
}

#[test]
fn reset_restores_policy_nice_and_cgroup_of_real_tasks() {
    let classes = "classes:\n  batchy: {cgroup-class: non-urgent, policy: batch, nice: 5}\n";
    let Some(mut d) = rules_daemon("policy", classes, &[]) else {
        return;
    };
    let pid = d.sleeper();
    let original = cgroup_of_task(pid, pid);
    assert_eq!((policy(pid, pid), nice(pid, pid)), (0, start_nice()));
    assert_eq!(d.cli(&["move", &pid.to_string(), "foreground"]).code, 0);
    let r = d.cli(&["move", "--thread", &pid.to_string(), "batchy"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        (policy(pid, pid), nice(pid, pid)),
        (3, 5),
        "SCHED_BATCH, nice 5"
    );
    assert!(cgroup_of_task(pid, pid).ends_with("/chrome/foreground/non-urgent"));
    let r = d.cli(&["reset"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        (policy(pid, pid), nice(pid, pid)),
        (0, start_nice()),
        "SCHED_OTHER, the starting nice again"
    );
    assert_eq!(cgroup_of_task(pid, pid), original);
}
