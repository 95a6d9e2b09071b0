//! `cgqos top`: the sampler and model on fake trees (every number known), the command's
//! errors and hostile names, the live view under tmux (q, Ctrl-C, SIGTERM restore the
//! terminal), and, as root, a real busy process in a real sub-root.

mod common;
use common::*;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cgqos::cgroupfs::CgroupFs;
use cgqos::procfs::{ProcessId, Procfs, StartTime};
use cgqos::state::{State, Why};
use cgqos::top::model::compute;
use cgqos::top::sample::Sampler;

const CHILD_ENV: &str = "CGQOS_TEST_TOP_CHILD";

/// Not a test: the busy process the real-cgroup test watches (re-executed test binary).
/// One thread named `hog` spins, two sleep; prints the hog's thread id, runs until stdin
/// closes.
#[test]
#[ignore = "helper process for the top tests"]
fn busy_child() {
    if std::env::var(CHILD_ENV).is_err() {
        return;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let s = stop.clone();
    let _hog = std::thread::Builder::new()
        .name("hog".into())
        .spawn(move || {
            // SAFETY: gettid has no preconditions.
            tx.send(unsafe { libc::gettid() }).unwrap();
            while !s.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        })
        .unwrap();
    let _idle: Vec<_> = (0..2)
        .map(|i| {
            std::thread::Builder::new()
                .name(format!("idle-{i}"))
                .spawn(std::thread::park)
                .unwrap()
        })
        .collect();
    println!("CGQOS-TOP-READY {}", rx.recv().unwrap());
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    stop.store(true, Ordering::Relaxed);
    std::process::exit(0);
}

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, text).unwrap();
}

fn stat_line(tid: u32, comm: &str, utime: u64, stime: u64, starttime: u64) -> String {
    format!(
        "{tid} ({comm}) S 1 {tid} {tid} 0 -1 4194560 0 0 0 0 {utime} {stime} 0 0 20 0 1 0 {starttime} 0 0\n"
    )
}

/// A fake /proc: `(pid, tid, comm, ticks, starttime)`, reachable both as
/// `<pid>/task/<tid>` and `<tid>`.
fn fake_proc(dir: &Path, tasks: &[(u32, u32, &str, u64, u64)]) {
    for &(pid, tid, comm, ticks, start) in tasks {
        let stat = stat_line(tid, comm, ticks / 2, ticks - ticks / 2, start);
        write(dir, &format!("{pid}/task/{tid}/stat"), &stat);
        write(dir, &format!("{tid}/stat"), &stat);
        write(
            dir,
            &format!("{tid}/status"),
            &format!("Name:\t{comm}\nTgid:\t{pid}\n"),
        );
    }
}

fn cpu_stat(usage: u64) -> String {
    format!("usage_usec {usage}\nuser_usec {usage}\nsystem_usec 0\n")
}

/// A cgqos tree with controllers and uclamp, a process with a thread per class, a service
/// outside cgqos's layout, and a thread whose process is listed nowhere.
fn fake_tree() -> (FakeCgroup, tempfile::TempDir) {
    let f = FakeCgroup::new(&["cpu", "cpuset"], true);
    for (g, threaded) in [
        ("chrome", false),
        ("chrome/ui", true),
        ("chrome/ui/urgent", true),
        ("chrome/ui/non-urgent", true),
        ("vms", false),
        ("system.slice", false),
        ("system.slice/x.service", false),
    ] {
        f.group(g, threaded);
    }
    let r = f.root();
    write(r, "chrome/cgroup.type", "domain threaded\n");
    for g in [
        "",
        "chrome",
        "chrome/ui",
        "chrome/ui/urgent",
        "chrome/ui/non-urgent",
        "vms",
    ] {
        write(r, &join(g, "cpu.stat"), &cpu_stat(0));
        write(
            r,
            &join(g, "cpu.pressure"),
            "some avg10=1.50 avg60=0.00 avg300=0.00 total=10\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
        );
    }
    write(r, "chrome/cpu.uclamp.min", "20.00\n");
    write(r, "chrome/ui/cpu.uclamp.min", "50.00\n");
    write(r, "chrome/ui/non-urgent/cpuset.cpus.effective", "0-1\n");
    write(r, "cgroup.procs", "1\n");
    write(r, "cgroup.threads", "1\n");
    // A domain threaded group lists the processes of its whole subtree.
    write(r, "chrome/cgroup.procs", "100\n");
    write(r, "chrome/ui/cgroup.threads", "100\n");
    write(r, "chrome/ui/urgent/cgroup.threads", "101\n");
    write(r, "chrome/ui/non-urgent/cgroup.threads", "102\n");
    write(r, "vms/cgroup.threads", "300\n");
    write(r, "system.slice/x.service/cgroup.procs", "200\n");
    write(r, "system.slice/x.service/cgroup.threads", "200\n201\n");
    let proc = tempfile::tempdir().unwrap();
    fake_proc(
        proc.path(),
        &[
            (1, 1, "init", 0, 1),
            (100, 100, "chrome", 0, 50),
            (100, 101, "Compositor", 0, 51),
            (100, 102, "ThreadPool", 0, 52),
            (200, 200, "svc", 0, 60),
            (200, 201, "svc-worker", 0, 61),
            (300, 300, "crosvm", 0, 70),
        ],
    );
    (f, proc)
}

fn join(g: &str, file: &str) -> String {
    if g.is_empty() {
        file.into()
    } else {
        format!("{g}/{file}")
    }
}

#[test]
fn two_reads_of_a_fake_tree_give_rates_counts_placement_and_caps() {
    let (f, proc) = fake_tree();
    let sampler = Sampler::new(CgroupFs::new(f.root()), Procfs::new(proc.path()));
    let first = sampler.snapshot(0);
    // One second later: the urgent thread ran 0.6 s (60 ticks at 100 Hz), the main thread
    // 0.1 s, the service worker 0.2 s.
    let r = f.root();
    for (g, usage) in [
        ("", 1_000_000),
        ("chrome", 700_000),
        ("chrome/ui", 700_000),
        ("chrome/ui/urgent", 600_000),
    ] {
        write(r, &join(g, "cpu.stat"), &cpu_stat(usage));
    }
    fake_proc(
        proc.path(),
        &[
            (100, 100, "chrome", 10, 50),
            (100, 101, "Compositor", 60, 51),
            (200, 201, "svc-worker", 20, 61),
        ],
    );
    let second = sampler.snapshot(1_000_000);
    assert!(second.warnings.is_empty(), "{:?}", second.warnings);
    let mut state = State::default();
    state.why.insert(
        101,
        Why {
            pid: ProcessId::new(100),
            starttime: StartTime::new(51),
            by: "rule compositor (/etc/cgqos/rules.d/10.yaml:3)".into(),
            group: Some("chrome/ui".into()),
            class: Some("urgent".into()),
            attrs: Default::default(),
            at: 0,
        },
    );
    let rows = compute(&first, &second, &state, 100);
    let row = |p: &str| rows.iter().find(|r| r.path == p).unwrap();
    let paths: Vec<&str> = rows.iter().map(|r| r.path.as_str()).collect();
    // cgqos's groups one by one; the service as one collapsed row.
    assert_eq!(
        paths,
        [
            "",
            "chrome",
            "chrome/ui",
            "chrome/ui/non-urgent",
            "chrome/ui/urgent",
            "vms",
            "system.slice"
        ]
    );
    let ui = row("chrome/ui");
    assert_eq!((ui.processes, ui.threads), (1, 3));
    assert_eq!(ui.cpu_percent, Some(70.0));
    assert_eq!(ui.pressure_some_avg10, Some(1.5));
    assert_eq!(
        (ui.uclamp_min, ui.uclamp_min_effective),
        (Some(50.0), Some(20.0))
    );
    assert_eq!(ui.tasks[0].tid, 101);
    assert_eq!(ui.tasks[0].cpu_percent, 60.0);
    assert_eq!(ui.tasks[0].cgroup, "chrome/ui/urgent");
    assert_eq!(
        ui.tasks[0].placed_by.as_deref(),
        Some("rule compositor (/etc/cgqos/rules.d/10.yaml:3)")
    );
    assert_eq!(ui.tasks[1].cpu_percent, 10.0);
    let urgent = row("chrome/ui/urgent");
    assert_eq!(urgent.class.as_deref(), Some("urgent"));
    assert_eq!(urgent.group.as_deref(), Some("chrome/ui"));
    assert_eq!((urgent.processes, urgent.threads), (1, 1));
    assert_eq!(urgent.cpu_percent, Some(60.0));
    assert_eq!(urgent.kind, "threaded");
    assert_eq!(row("chrome").kind, "domain threaded");
    assert_eq!(
        row("chrome/ui/non-urgent").cpus_effective.as_deref(),
        Some("0-1")
    );
    // A thread whose process no group lists is found through its status.
    let vms = row("vms");
    assert_eq!((vms.processes, vms.threads), (1, 1));
    assert_eq!(vms.tasks[0].pid, 300);
    // The collapsed service: its subtree's tasks; no cpu.stat in the fake, so no rate.
    let svc = row("system.slice");
    assert!(svc.outside);
    assert_eq!((svc.processes, svc.threads), (1, 2));
    assert_eq!(svc.cpu_percent, None);
    assert_eq!(svc.tasks[0].comm, "svc-worker");
    assert_eq!(svc.tasks[0].cpu_percent, 20.0);
    let root = row("");
    assert_eq!(root.kind, "root");
    assert_eq!((root.processes, root.threads), (4, 7));
    assert_eq!(root.cpu_percent, Some(100.0));
}

#[test]
fn vanished_tasks_and_the_group_limit_are_normal_events() {
    let (f, proc) = fake_tree();
    // Thread 102 exits between the group listing and its stat.
    fs::remove_dir_all(proc.path().join("100/task/102")).unwrap();
    fs::remove_dir_all(proc.path().join("102")).unwrap();
    let mut sampler = Sampler::new(CgroupFs::new(f.root()), Procfs::new(proc.path()));
    let snap = sampler.snapshot(0);
    let rows = compute(&snap, &snap, &State::default(), 100);
    let nu = rows
        .iter()
        .find(|r| r.path == "chrome/ui/non-urgent")
        .unwrap();
    // Listed by the kernel, so counted; no task row for it.
    assert_eq!(nu.threads, 1);
    assert!(nu.tasks.is_empty());
    sampler.max_groups = 3;
    let snap = sampler.snapshot(0);
    assert_eq!(snap.groups.len(), 3);
    assert!(
        snap.warnings[0].contains("more than 3 groups"),
        "{:?}",
        snap.warnings
    );
}

fn top(root: &Path, state: &Path, args: &[&str]) -> Run {
    run(cgqos()
        .arg("top")
        .args(args)
        .arg("--cgroup-root")
        .arg(root)
        .arg("--state-dir")
        .arg(state)
        .arg("--allow-non-cgroupfs"))
}

#[test]
fn once_prints_a_table_or_json_and_bad_input_is_refused() {
    let (f, proc) = fake_tree();
    let state = tempfile::tempdir().unwrap();
    // A group name that tries to clear the screen and retitle the terminal.
    fs::create_dir(f.root().join("evil\x1b[2J\x1b]0;x\x07")).unwrap();
    let args = [
        "--once",
        "--interval",
        "0.1",
        "--proc-root",
        proc.path().to_str().unwrap(),
    ];
    let r = top(f.root(), state.path(), &args);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("cgqos top  root"), "{}", r.stdout);
    assert!(r.stdout.contains("non-urgent"), "{}", r.stdout);
    assert!(r.stdout.contains("Compositor"), "{}", r.stdout);
    assert!(!r.stdout.contains('\x1b') && !r.stdout.contains('\x07'));
    assert!(r.stdout.contains("evil?[2J?]0;x?/*"), "{}", r.stdout);

    // The JSON shape docs/cli.md documents; --tasks bounds the task lists.
    let mut a = args.to_vec();
    a.extend(["--json", "--tasks", "1"]);
    let r = top(f.root(), state.path(), &a);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = json(&r);
    for key in ["root", "interval_ms", "cpus", "groups", "warnings"] {
        assert!(v.get(key).is_some(), "{key} in {v}");
    }
    let ui = v["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["path"] == "chrome/ui")
        .unwrap();
    for key in [
        "depth",
        "kind",
        "group",
        "class",
        "outside",
        "processes",
        "threads",
        "cpu_percent",
        "pressure_some_avg10",
        "cpus_effective",
        "uclamp_min",
        "uclamp_min_effective",
    ] {
        assert!(ui.get(key).is_some(), "{key} in {ui}");
    }
    assert_eq!(ui["threads"], 3);
    assert_eq!(ui["uclamp_min_effective"], 20.0);
    assert_eq!(ui["tasks"].as_array().unwrap().len(), 1);
    for key in ["tid", "pid", "comm", "cgroup", "cpu_percent", "placed_by"] {
        assert!(ui["tasks"][0].get(key).is_some(), "{key} in {ui}");
    }

    // A corrupt state file costs the placed-by column, not the view.
    fs::write(state.path().join("state.json"), "{not json").unwrap();
    let r = top(f.root(), state.path(), &a);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let w = json(&r)["warnings"].to_string();
    assert!(w.contains("not a cgqos state file"), "{w}");
    // And so does a symlink planted in its place.
    fs::remove_file(state.path().join("state.json")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", state.path().join("state.json")).unwrap();
    let r = top(f.root(), state.path(), &a);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(json(&r)["warnings"].to_string().contains("state.json"));

    for (bad, why) in [
        (&["--interval", "0"][..], "expected 0.1 to 3600 seconds"),
        (&["--interval", "soon"][..], "expected a number of seconds"),
        (&["--tasks", "20000"][..], "--tasks"),
    ] {
        let r = top(f.root(), state.path(), bad);
        assert_eq!(r.code, 2, "{bad:?}: {}", r.stderr);
        assert!(r.stderr.contains(why), "{bad:?}: {}", r.stderr);
    }
    let r = top(Path::new("/nonexistent/cgqos"), state.path(), &["--once"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("/nonexistent/cgqos is not a directory"),
        "{}",
        r.stderr
    );
    let r = run(cgqos()
        .args(["top", "--once", "--cgroup-root"])
        .arg(f.root()));
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("not on a cgroup2 filesystem"),
        "{}",
        r.stderr
    );
}

/// A tmux server of our own, killed on drop.
struct Tmux {
    socket: String,
    dir: tempfile::TempDir,
}

impl Tmux {
    fn new() -> Option<Tmux> {
        if Command::new("tmux").arg("-V").output().is_err() {
            eprintln!("skipped: tmux is not installed (the live view is checked under tmux)");
            return None;
        }
        Some(Tmux {
            socket: format!("cgqos-top-test-{}", std::process::id()),
            dir: tempfile::tempdir().unwrap(),
        })
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts `top` in a new 120x40 window named `name`; records its pid, exit status and
    /// the terminal settings after it (each file complete once renamed into place; the
    /// `rc` file last).
    fn start(&self, name: &str, top_cmd: &str) {
        let d = self.dir.path().display();
        let script = format!(
            "stty sane; echo $$ > {d}/{name}.pid.tmp; mv {d}/{name}.pid.tmp {d}/{name}.pid; {top_cmd}; echo $? > {d}/{name}.rc.tmp; stty -a > {d}/{name}.stty; mv {d}/{name}.rc.tmp {d}/{name}.rc; sleep 60"
        );
        // The first window creates the session; later ones join it.
        let has = Command::new("tmux")
            .args(["-L", &self.socket, "has-session", "-t", "t"])
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success();
        if has {
            self.tmux(&["new-window", "-t", "t", "-n", name, "sh", "-c", &script]);
        } else {
            self.tmux(&[
                "new-session",
                "-d",
                "-s",
                "t",
                "-n",
                name,
                "-x",
                "120",
                "-y",
                "40",
                "sh",
                "-c",
                &script,
            ]);
        }
    }

    fn screen(&self, name: &str) -> String {
        self.tmux(&["capture-pane", "-p", "-t", &format!("t:{name}")])
    }

    fn keys(&self, name: &str, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t"];
        let target = format!("t:{name}");
        args.push(&target);
        args.extend_from_slice(keys);
        self.tmux(&args);
    }

    fn file(&self, name: &str, ext: &str) -> Option<String> {
        fs::read_to_string(self.dir.path().join(format!("{name}.{ext}"))).ok()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .stderr(Stdio::null())
            .status();
    }
}

/// Waits for `f` to give a value. A liveness bound only (generous: the host is shared), not
/// a timing assertion.
fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_live_view_takes_keys_and_restores_the_terminal_on_every_way_out() {
    let Some(t) = Tmux::new() else { return };
    let (f, proc) = fake_tree();
    let state = tempfile::tempdir().unwrap();
    let cmd = format!(
        "'{}' top --interval 0.25 --allow-non-cgroupfs --cgroup-root '{}' --proc-root '{}' --state-dir '{}'",
        env!("CARGO_BIN_EXE_cgqos"),
        f.root().display(),
        proc.path().display(),
        state.path().display()
    );
    let cmd = format!("{cmd} --socket /nonexistent/cgqos-test.sock");
    for (name, quit) in [("q", "q"), ("ctrlc", "C-c"), ("term", "")] {
        t.start(name, &cmd);
        let screen = wait_for("the first sample", || {
            let s = t.screen(name);
            s.contains("sorted by cpu").then_some(s)
        });
        assert!(screen.contains("q quit"), "{screen}");
        if name == "q" {
            // Sort by name, expand the second row (chrome): its tasks appear.
            t.keys(name, &["n", "2"]);
            let s = wait_for("the expanded group", || {
                let s = t.screen(name);
                (s.contains("sorted by name") && s.contains("Compositor")).then_some(s)
            });
            assert!(s.contains("PLACED BY"), "{s}");
            t.keys(name, &["+"]);
            wait_for("the new interval", || {
                t.screen(name).contains("interval 0.50 s").then_some(())
            });
        }
        if quit.is_empty() {
            let pid = wait_for("the pid", || t.file(name, "pid"));
            // The shell execs nothing: top is its child. Find it by parent.
            let top_pid = wait_for("top's pid", || {
                let out = Command::new("pgrep")
                    .args(["-P", pid.trim(), "-x", "cgqos"])
                    .output()
                    .ok()?;
                String::from_utf8(out.stdout)
                    .ok()?
                    .split_whitespace()
                    .next()
                    .map(str::to_string)
            });
            // SAFETY: kill on a process this test started (through tmux).
            unsafe { libc::kill(top_pid.parse().unwrap(), libc::SIGTERM) };
        } else {
            t.keys(name, &[quit]);
        }
        let rc = wait_for("top to exit", || t.file(name, "rc"));
        assert_eq!(rc.trim(), "0", "{name}");
        let stty = t.file(name, "stty").unwrap();
        let words: Vec<&str> = stty.split_whitespace().collect();
        for mode in ["icanon", "echo", "isig", "icrnl"] {
            assert!(words.contains(&mode), "{name}: {mode} not restored: {stty}");
        }
        // Back on the main screen: the table is gone.
        let s = t.screen(name);
        assert!(!s.contains("q quit"), "{name}: {s}");
    }
}

struct RealEnv {
    root: PathBuf,
    state: tempfile::TempDir,
    conf: tempfile::TempDir,
    child: Option<Child>,
}

impl RealEnv {
    fn cmd(&self, args: &[&str]) -> Run {
        run(cgqos()
            .args(args)
            .arg("--cgroup-root")
            .arg(&self.root)
            .arg("--state-dir")
            .arg(self.state.path())
            .arg("--config-dir")
            .arg(self.conf.path()))
    }
}

impl Drop for RealEnv {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
        if self.root.exists() {
            let _ = self.cmd(&["teardown"]);
            remove_tree(&self.root);
        }
    }
}

#[test]
fn a_busy_process_in_a_real_group_shows_its_tasks_cpu_and_placement() {
    let Some(root) = real_subroot("top") else {
        return;
    };
    let mut env = RealEnv {
        root,
        state: tempfile::tempdir().unwrap(),
        conf: tempfile::tempdir().unwrap(),
        child: None,
    };
    assert_eq!(env.cmd(&["setup"]).code, 0);
    let mut child = child_test_command(&std::env::current_exe().unwrap(), "busy_child")
        .env(CHILD_ENV, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let pid = child.id();
    env.child = Some(child);
    let hog: u32 = loop {
        let mut line = String::new();
        assert!(out.read_line(&mut line).unwrap() > 0, "child died");
        if let Some(t) = line.trim_end().split("CGQOS-TOP-READY ").nth(1) {
            break t.parse().unwrap();
        }
    };
    let r = env.cmd(&["move", &pid.to_string(), "foreground"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // eco: the non-urgent class at nice 0 (a polite hog on a shared machine).
    let r = env.cmd(&["move", "--thread", &hog.to_string(), "eco"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let threads = fs::read_dir(format!("/proc/{pid}/task")).unwrap().count();

    let r = env.cmd(&["top", "--once", "--json", "--interval", "1"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = json(&r);
    let group = |p: &str| {
        v["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["path"] == p)
            .unwrap_or_else(|| panic!("no {p} in {v}"))
            .clone()
    };
    let fg = group("chrome/foreground");
    assert_eq!(fg["processes"], 1, "{fg}");
    assert_eq!(fg["threads"], threads, "{fg}");
    let nu = group("chrome/foreground/non-urgent");
    assert_eq!(nu["processes"], 1, "{nu}");
    assert_eq!(nu["threads"], 1, "{nu}");
    assert_eq!(nu["class"], "non-urgent");
    // cpu.stat is a core file: the rate exists without the cpu controller.
    assert!(nu["cpu_percent"].as_f64().unwrap() > 0.0, "{nu}");
    assert!(fg["cpu_percent"].as_f64().unwrap() > 0.0, "{fg}");
    let t = &nu["tasks"][0];
    assert_eq!(t["tid"], hog, "{nu}");
    assert_eq!(t["pid"], pid);
    assert_eq!(t["comm"], "hog");
    assert_eq!(t["cgroup"], "chrome/foreground/non-urgent");
    assert!(t["cpu_percent"].as_f64().unwrap() > 0.0, "{t}");
    assert!(
        t["placed_by"]
            .as_str()
            .is_some_and(|b| b.starts_with("cgqos move --thread")),
        "{t}"
    );
    // The busiest task of the foreground group is the hog, whichever class it is in.
    assert_eq!(fg["tasks"][0]["tid"], hog, "{fg}");
    assert!(group("")["threads"].as_u64().unwrap() >= threads as u64);

    // Anyone may look: an unprivileged user sees the same groups; a state directory it
    // cannot read only costs the placed-by column, with a warning.
    fs::set_permissions(
        env.state.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let out = match Command::new(env!("CARGO_BIN_EXE_cgqos"))
        .args([
            "top",
            "--once",
            "--json",
            "--interval",
            "0.2",
            "--cgroup-root",
        ])
        .arg(&env.root)
        .arg("--state-dir")
        .arg(env.state.path())
        .env("CGQOS_SOCKET", "/nonexistent/cgqos-test.sock")
        .uid(54321)
        .gid(54321)
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            eprintln!("skipped the unprivileged run: uid 54321 cannot run the binary ({e})");
            return;
        }
    };
    {
        let r = Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into(),
            stderr: String::from_utf8_lossy(&out.stderr).into(),
        };
        assert_eq!(r.code, 0, "{}", r.stderr);
        let v = json(&r);
        let nu = v["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["path"] == "chrome/foreground/non-urgent")
            .unwrap()
            .clone();
        assert_eq!(nu["threads"], 1, "{nu}");
        assert_eq!(nu["tasks"][0]["placed_by"], serde_json::Value::Null);
        assert!(
            v["warnings"].to_string().contains("placed-by is not shown"),
            "{v}"
        );
    }
}

use std::os::unix::process::CommandExt;
