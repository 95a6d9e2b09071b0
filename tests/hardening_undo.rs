//! Issue 8 section 6 (undo that undoes) and the state directory of section 2: inherited
//! attributes are restored by `reset`, commands keep to the recorded cgqos root, teardown
//! restores sysfs values, the state file's version is checked, and a state directory others
//! can write is refused. Root-only tests skip with the reason otherwise.

mod common;
use common::daemon::*;
use common::*;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHILD: &str = "CGQOS_UNDO_CHILD";

/// Not a test: the program of the inheritance tests (a renamed copy of this binary). Its
/// main thread says READY, waits for a line on stdin, then starts `CGQOS_UNDO_CHILD` threads (which
/// inherit whatever the main thread's attributes are by then), prints their tids and runs
/// until stdin closes.
#[test]
#[ignore = "helper process for the undo tests"]
fn undo_child() {
    let Ok(n) = std::env::var(CHILD) else { return };
    let n: usize = n.parse().unwrap();
    println!("READY");
    let stdin = std::io::stdin();
    let mut line = String::new();
    if stdin.read_line(&mut line).unwrap_or(0) == 0 {
        std::process::exit(0);
    }
    let (tx, rx) = std::sync::mpsc::channel();
    for i in 0..n {
        let tx = tx.clone();
        std::thread::Builder::new()
            .name(format!("late-{i}"))
            .spawn(move || {
                // SAFETY: gettid has no preconditions.
                tx.send(unsafe { libc::gettid() } as u32).unwrap();
                std::thread::park();
            })
            .unwrap();
    }
    let tids: Vec<String> = (0..n).map(|_| rx.recv().unwrap().to_string()).collect();
    println!("TIDS {}", tids.join(" "));
    while stdin.read_line(&mut line).unwrap_or(0) > 0 {}
    std::process::exit(0);
}

fn program(tag: &str) -> Program {
    program_copy("cu", tag)
}

struct Running {
    child: Child,
    out: BufReader<std::process::ChildStdout>,
}

impl Running {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Asks the program to start its threads; returns their tids.
    fn start_threads(&mut self) -> Vec<u32> {
        writeln!(self.child.stdin.as_ref().unwrap(), "go").unwrap();
        let mut line = String::new();
        loop {
            line.clear();
            assert!(self.out.read_line(&mut line).unwrap() > 0, "child died");
            if let Some(t) = line.split("TIDS ").nth(1) {
                return t.split_whitespace().map(|s| s.parse().unwrap()).collect();
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(p: &Program, threads: usize) -> Running {
    let (child, mut out) = spawn_child_test(&p.path, "undo_child", CHILD, threads);
    // Every thread the program has before it is asked for more exists once it says so.
    let mut line = String::new();
    while !line.contains("READY") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "child died");
    }
    Running { child, out }
}

fn nice(pid: u32, tid: u32) -> i32 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).unwrap();
    let rest = &s[s.rfind(')').unwrap() + 2..];
    rest.split_whitespace().nth(16).unwrap().parse().unwrap()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The scenario: the main thread is classed QOS_BACKGROUND at exec (nice 10), and
/// threads it starts afterwards inherit nice 10. Their original is what they would have had
/// without cgqos (nice 0, like a control process running the same program); `why` says so
/// and `reset` restores it.
#[test]
fn threads_born_after_a_class_change_get_their_creators_original_back() {
    let p = program("in");
    let control_prog = program("co");
    let rules = format!(
        "rules:\n  - name: late-threads\n    match: {{argv0: \"{}\"}}\n    class: QOS_BACKGROUND\n",
        p.name
    );
    let open = "socket:\n  mode: \"0666\"\n";
    let Some(d) = Daemon::with(
        "undo-inh",
        open,
        None,
        &[("rules.d/10-test.yaml", &rules)],
        &[],
    ) else {
        return;
    };
    let mut r = start(&p, 3);
    let pid = r.pid();
    wait_for("the main thread classed background at exec", || {
        nice(pid, pid) == 10
    });
    // Started after the change (the program waits for our line): they inherit nice 10.
    let tids = r.start_threads();
    for &t in &tids {
        assert_eq!(nice(pid, t), 10, "thread {t} inherits its creator's nice");
    }
    let mut control = start(&control_prog, 3);
    let control_tids = control.start_threads();
    let control_nice = nice(control.pid(), control_tids[0]);
    assert_eq!(control_nice, 0, "the control process is untouched");
    // `why` shows what reset will restore: the creator's original, nice 0. Waiting for it
    // also waits for the daemon to have handled the fork events (a liveness bound only).
    let state = d.state();
    for &t in &tids {
        wait_for("why to show the inherited original", || {
            let w = d.cli(&[
                "why",
                &t.to_string(),
                "--state-dir",
                state.to_str().unwrap(),
            ]);
            w.stdout.contains("reset restores attributes") && w.stdout.contains("nice 0")
        });
        let w = d.cli(&[
            "why",
            &t.to_string(),
            "--state-dir",
            state.to_str().unwrap(),
        ]);
        assert!(
            w.stdout.contains(&format!("its creator {pid}'s original")),
            "{}",
            w.stdout
        );
    }
    let reset = d.cli(&["reset"]);
    assert_eq!(reset.code, 0, "{}{}", reset.stdout, reset.stderr);
    assert_eq!(
        nice(pid, pid),
        control_nice,
        "reset restores the main thread"
    );
    for &t in &tids {
        assert_eq!(
            nice(pid, t),
            control_nice,
            "reset restores thread {t} like the control process"
        );
    }
}

/// Threads found by a rescan (their fork events lost) get the original of a recorded thread
/// of their process (the main thread first) whose changed attributes they carry exactly; a
/// thread that set its own is left alone.
#[test]
fn a_rescan_gives_unrecorded_threads_their_creators_original() {
    if !is_root() {
        eprintln!("skipped: not root (changing another process's nice needs root)");
        return;
    }
    let p = program("rs");
    let mut r = start(&p, 2);
    let pid = r.pid();
    let starttime = |id: u32| {
        let proc = cgqos::procfs::Procfs::new("/proc");
        proc.stat(id).unwrap().starttime
    };
    let original = cgqos::sched::TaskAttrs::of(&cgqos::sched::getattr(pid).unwrap());
    // As a class would: every thread there is (the test harness runs the program's code on
    // a thread of its own) to nice 10, each recorded with its original.
    let ten = cgqos::sched::TaskAttrs {
        nice: Some(10),
        ..Default::default()
    };
    let proc = cgqos::procfs::Procfs::new("/proc");
    let mut state = cgqos::state::State::default();
    let before: Vec<u32> = proc
        .threads(cgqos::procfs::ProcessId::new(pid))
        .unwrap()
        .into_iter()
        .map(|t| t.get())
        .collect();
    for &t in &before {
        cgqos::sched::apply(t, &ten).unwrap();
        state.attrs.insert(
            t,
            cgqos::state::AttrRecord {
                pid: cgqos::procfs::ProcessId::new(pid),
                starttime: cgqos::procfs::StartTime::new(starttime(t)),
                original,
                inherited_from: None,
            },
        );
    }
    let tids = r.start_threads();
    // One thread sets its own nice after its birth: not cgqos's doing.
    let own = cgqos::sched::TaskAttrs {
        nice: Some(5),
        ..Default::default()
    };
    cgqos::sched::apply(tids[1], &own).unwrap();
    assert_eq!(nice(pid, tids[1]), 5);
    let n =
        cgqos::classify::inherit_unrecorded(&mut state, &proc, cgqos::procfs::ProcessId::new(pid));
    assert_eq!(n, 1, "{:?}", state.attrs);
    let rec = &state.attrs[&tids[0]];
    assert_eq!(rec.original, original);
    assert_eq!(rec.inherited_from, Some(pid));
    assert!(!state.attrs.contains_key(&tids[1]));
    let (restored, _) = cgqos::classify::restore_attrs(&mut state, &proc);
    assert_eq!(restored, before.len() + 1);
    assert_eq!(nice(pid, pid), 0);
    assert_eq!(nice(pid, tids[0]), 0);
    assert_eq!(nice(pid, tids[1]), 5, "its own choice stays");
}

/// After `setup --cgroup-root R`, commands without `--cgroup-root` use R; one given another
/// root refuses and leaves the record alone; teardown removes R and nothing above it.
#[test]
fn commands_keep_to_the_recorded_root() {
    let Some(root) = real_subroot("undo-root") else {
        return;
    };
    let state = tempfile::tempdir().unwrap();
    let sd = state.path().to_str().unwrap().to_string();
    let cmd = |args: &[&str]| run(cgqos().args(args).args(["--state-dir", &sd]));
    let setup = run(cgqos()
        .args(["setup", "--state-dir", &sd, "--cgroup-root"])
        .arg(&root));
    assert_eq!(setup.code, 0, "{}", setup.stderr);
    // The snapshot and the journal, byte for byte.
    let recorded = || {
        ["state.json", "state.journal"]
            .map(|f| std::fs::read(state.path().join(f)).unwrap_or_default())
    };
    let mut sleeper = Command::new("sleep").arg("60").spawn().unwrap();
    let pid = sleeper.id().to_string();
    let origin = cgroup_of_task(sleeper.id(), sleeper.id());

    let mv = cmd(&["move", &pid, "background"]);
    assert_eq!(mv.code, 0, "{}{}", mv.stdout, mv.stderr);
    let here = cgroup_of_task(sleeper.id(), sleeper.id());
    assert!(
        here.ends_with(&format!(
            "{}/chrome/background",
            root.file_name().unwrap().to_str().unwrap()
        )),
        "moved under the recorded root: {here}"
    );
    let w = cmd(&["where", &pid]);
    assert_eq!(w.code, 0, "{}", w.stderr);
    assert!(w.stdout.contains("chrome/background"), "{}", w.stdout);
    let st = cmd(&["status", "--json"]);
    assert_eq!(st.code, 0, "{}", st.stderr);
    assert_eq!(json(&st)["root"], root.display().to_string());
    let why = cmd(&["why", &pid]);
    assert!(
        why.stdout.contains("placed by cgqos move (uid 0)")
            && why.stdout.contains("now in group chrome/background"),
        "{}",
        why.stdout
    );

    // Another root: refused, exit 2, the record unchanged.
    let before = recorded();
    let other = root.with_file_name(format!(
        "{}-other",
        root.file_name().unwrap().to_str().unwrap()
    ));
    for args in [
        ["reset"].as_slice(),
        &["teardown"],
        &["move", &pid, "foreground"],
    ] {
        let r = run(cgqos()
            .args(args)
            .args(["--state-dir", &sd, "--cgroup-root"])
            .arg(&other));
        assert_eq!(r.code, 2, "{args:?}: {}{}", r.stdout, r.stderr);
        assert!(
            r.stderr
                .contains(&format!("cgqos is set up at {}", root.display())),
            "{}",
            r.stderr
        );
        assert_eq!(recorded(), before, "{args:?} rewrote the record");
        assert!(!other.exists());
    }

    let reset = cmd(&["reset"]);
    assert_eq!(reset.code, 0, "{}{}", reset.stdout, reset.stderr);
    assert_eq!(cgroup_of_task(sleeper.id(), sleeper.id()), origin);
    let rec = recorded_state(state.path());
    assert_eq!(
        rec["root"],
        root.display().to_string(),
        "reset kept the root"
    );

    let td = cmd(&["teardown"]);
    assert_eq!(td.code, 0, "{}{}", td.stdout, td.stderr);
    assert!(!root.exists(), "teardown removed the recorded root");
    assert!(root.parent().unwrap().exists(), "and nothing above it");
    assert!(root.parent().unwrap().join("cgroup.procs").exists());
    let _ = sleeper.kill();
    let _ = sleeper.wait();
}

fn fake_cmd(sub: &str, sysfs: &Path, root: &Path, state: &Path) -> Run {
    run(cgqos()
        .args([
            sub,
            "--board",
            "trogdor",
            "--allow-non-cgroupfs",
            "--sysfs-root",
        ])
        .arg(sysfs)
        .arg("--cgroup-root")
        .arg(root)
        .arg("--state-dir")
        .arg(state))
}

#[test]
fn teardown_restores_the_input_boost_setup_wrote() {
    let f = fake_with_groups(&["cpu", "cpuset"], true);
    let state = tempfile::tempdir().unwrap();
    let (sysfs, param) = sysfs_with_input_boost("20\n");
    let r = fake_cmd("setup", sysfs.path(), f.root(), state.path());
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(std::fs::read_to_string(&param).unwrap(), "75");
    // A second setup must not record cgqos's own value as the original.
    let r = fake_cmd("setup", sysfs.path(), f.root(), state.path());
    assert_eq!(r.code, 0, "{}", r.stderr);
    // The fake's files keep its groups from being removed (exit 4); the sysfs value is
    // restored all the same, before the groups are touched.
    let r = fake_cmd("teardown", sysfs.path(), f.root(), state.path());
    assert_eq!(std::fs::read_to_string(&param).unwrap().trim(), "20");
    assert!(
        r.stdout.contains("input_boost_freq_percent = 20"),
        "{}",
        r.stdout
    );
}

#[test]
fn a_state_file_of_an_unknown_version_is_refused_and_left_alone() {
    let f = FakeCgroup::new(&["cpu", "cpuset"], true);
    let state = tempfile::tempdir().unwrap();
    let file = state.path().join("state.json");
    let text = format!(
        "{{\"version\": 99, \"root\": \"{}\", \"created_root\": true, \"tasks\": {{}}, \"vms\": [], \"future\": 1}}",
        f.root().display()
    );
    std::fs::write(&file, &text).unwrap();
    for sub in ["setup", "teardown", "reset"] {
        let r = fake_cmd(sub, &fixture("trogdor"), f.root(), state.path());
        assert_eq!(r.code, 1, "{sub}: {}{}", r.stdout, r.stderr);
        assert!(
            r.stderr.contains("state file version 99")
                && r.stderr.contains("understands version 2"),
            "{sub}: {}",
            r.stderr
        );
        assert_eq!(std::fs::read_to_string(&file).unwrap(), text, "{sub}");
    }
    assert!(f.root().exists());
}

/// Runs a command that must end by itself (a refused daemon exits); a generous liveness
/// bound so a daemon that wrongly starts fails the test instead of hanging it.
fn run_bounded(cmd: &mut Command) -> Run {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The attack of section 2: symlinks planted as `.state.json.tmp` and `lock` in a state
/// directory another user owns (or a root-owned one others can write). `setup` and
/// `daemon` refuse it with exit 2; the targets are untouched, nothing is created.
#[test]
fn a_state_directory_others_can_write_is_refused() {
    if !is_root() {
        eprintln!("skipped: not root (the attack needs a directory owned by another uid)");
        return;
    }
    let base = tempfile::tempdir().unwrap();
    std::fs::set_permissions(base.path(), PermissionsExt::from_mode(0o755)).unwrap();
    let target = base.path().join("root-owned");
    std::fs::write(&target, "precious\n").unwrap();
    let created = base.path().join("created-by-lock");
    let f = FakeCgroup::new(&["cpu", "cpuset"], true);

    let owned = base.path().join("owned-by-other");
    let group_writable = base.path().join("group-writable");
    std::fs::create_dir(&owned).unwrap();
    std::fs::create_dir(&group_writable).unwrap();
    std::os::unix::fs::chown(&owned, Some(UNPRIV_UID), Some(UNPRIV_UID)).unwrap();
    std::fs::set_permissions(&owned, PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&group_writable, PermissionsExt::from_mode(0o775)).unwrap();
    for dir in [&owned, &group_writable] {
        std::os::unix::fs::symlink(&target, dir.join(".state.json.tmp")).unwrap();
        std::os::unix::fs::symlink(&created, dir.join("lock")).unwrap();
    }
    let conf = base.path().join("conf");
    std::fs::create_dir(&conf).unwrap();
    std::fs::write(conf.join("daemon.yaml"), "socket:\n  mode: \"0660\"\n").unwrap();

    for (dir, why) in [
        (&owned, format!("owned by uid {UNPRIV_UID}")),
        (&group_writable, "mode 0775".to_string()),
    ] {
        let setup = fake_cmd("setup", &fixture("trogdor"), f.root(), dir);
        assert_eq!(setup.code, 2, "setup: {}{}", setup.stdout, setup.stderr);
        assert!(
            setup
                .stderr
                .contains(&format!("state directory {}", dir.display()))
                && setup.stderr.contains(&why),
            "{}",
            setup.stderr
        );
        let daemon = run_bounded(
            cgqos()
                .args(["daemon", "--board", "trogdor", "--allow-non-cgroupfs"])
                .arg("--sysfs-root")
                .arg(fixture("trogdor"))
                .arg("--cgroup-root")
                .arg(f.root())
                .arg("--state-dir")
                .arg(dir)
                .arg("--config-dir")
                .arg(&conf)
                .arg("--socket")
                .arg(base.path().join("run/cgqos.sock")),
        );
        assert_eq!(daemon.code, 2, "daemon: {}{}", daemon.stdout, daemon.stderr);
        assert!(daemon.stderr.contains(&why), "{}", daemon.stderr);
        // Without --cgroup-root (the recorded root is looked up first): refused as well.
        let teardown = run(cgqos()
            .args(["teardown", "--allow-non-cgroupfs", "--state-dir"])
            .arg(dir));
        assert_eq!(teardown.code, 2, "{}", teardown.stderr);
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious\n");
        assert!(
            !created.exists(),
            "root created a file through the lock symlink"
        );
        assert!(!dir.join("state.json").exists());
    }
}

/// `why` explains process moves through the daemon like thread moves: who asked.
#[test]
fn why_explains_a_process_move_through_the_daemon() {
    let open = "socket:\n  mode: \"0666\"\n";
    let Some(mut d) = Daemon::new("undo-why", open, None) else {
        return;
    };
    let pid = d.sleeper();
    let mv = d.cli(&["move", &pid.to_string(), "background"]);
    assert_eq!(mv.code, 0, "{}{}", mv.stdout, mv.stderr);
    let state = d.state();
    let w = d.cli(&[
        "why",
        &pid.to_string(),
        "--state-dir",
        state.to_str().unwrap(),
    ]);
    assert_eq!(w.code, 0, "{}", w.stderr);
    assert!(
        w.stdout.contains("placed by request from uid 0 (pid ")
            && w.stdout.contains("now in group chrome/background")
            && w.stdout.contains("reset restores cgroup "),
        "{}",
        w.stdout
    );
    // Local time, ISO 8601: 2026-11-30T23:05:09+01:00.
    let at = w.stdout.split(" at ").nth(1).unwrap_or_default();
    assert_eq!(at.as_bytes().get(10), Some(&b'T'), "{}", w.stdout);
}

/// Teardown removes the groups cgqos created and leaves the ones that were there before
/// (here the root and `chrome/`, made by someone else).
#[test]
fn teardown_removes_only_the_groups_cgqos_created() {
    let Some(root) = real_subroot("undo-own") else {
        return;
    };
    std::fs::create_dir(&root).unwrap();
    std::fs::create_dir(root.join("chrome")).unwrap();
    let state = tempfile::tempdir().unwrap();
    let sd = state.path().to_str().unwrap().to_string();
    let setup = run(cgqos()
        .args(["setup", "--state-dir", &sd, "--cgroup-root"])
        .arg(&root));
    assert_eq!(setup.code, 0, "{}", setup.stderr);
    assert!(root.join("chrome/ui").exists() && root.join("vms").exists());
    let td = run(cgqos().args(["teardown", "--state-dir", &sd]));
    assert_eq!(td.code, 0, "{}{}", td.stdout, td.stderr);
    assert!(
        !root.join("chrome/ui").exists(),
        "created by setup: removed"
    );
    assert!(!root.join("vms").exists(), "created by setup: removed");
    assert!(root.join("chrome").exists(), "there before setup: kept");
    assert!(root.exists(), "there before setup: kept");
    std::fs::remove_dir(root.join("chrome")).unwrap();
    std::fs::remove_dir(&root).unwrap();
}
