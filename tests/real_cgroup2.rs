//! Against the real cgroup2 mount of this machine (root only; skipped with the reason
//! otherwise). Each test works in its own sub-root and removes it. On hosts whose cgroup2
//! has no cpu/cpuset controllers (the development machines) setup is degraded but
//! membership is real: the kernel moves the processes and threads.

mod common;
use common::*;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const CHILD_ENV: &str = "CGQOS_TEST_CHILD_THREADS";

/// Not a test: the multi-threaded child the tests move (re-executed test binary).
#[test]
#[ignore = "helper process for the real-cgroup tests"]
fn child_with_threads() {
    let Ok(n) = std::env::var(CHILD_ENV) else {
        return;
    };
    let n: usize = n.parse().unwrap();
    let handles: Vec<_> = (0..n)
        .map(|i| {
            std::thread::Builder::new()
                .name(format!("worker-{i}"))
                .spawn(std::thread::park)
                .unwrap()
        })
        .collect();
    println!("CGQOS-CHILD-READY");
    let mut line = String::new();
    // Runs until the parent closes stdin.
    let _ = std::io::stdin().read_line(&mut line);
    drop(handles);
    std::process::exit(0);
}

struct Env {
    root: PathBuf,
    state: tempfile::TempDir,
    children: Vec<Child>,
}

impl Env {
    fn new(tag: &str) -> Option<Env> {
        Some(Env {
            root: common::real_subroot(tag)?,
            state: tempfile::tempdir().unwrap(),
            children: Vec::new(),
        })
    }

    fn cmd(&self, args: &[&str]) -> Run {
        run(cgqos()
            .args(args)
            .arg("--cgroup-root")
            .arg(&self.root)
            .arg("--state-dir")
            .arg(self.state.path()))
    }

    fn spawn(&mut self, threads: usize) -> u32 {
        let exe = std::env::current_exe().unwrap();
        let (child, mut out) = spawn_child_test(&exe, "child_with_threads", CHILD_ENV, threads);
        let mut line = String::new();
        loop {
            line.clear();
            assert!(out.read_line(&mut line).unwrap() > 0, "child died");
            if line.trim_end().ends_with("CGQOS-CHILD-READY") {
                break;
            }
        }
        let pid = child.id();
        self.children.push(child);
        pid
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        if self.root.exists() {
            let _ = self.cmd(&["teardown"]);
            // Last resort: remove what is left, deepest first.
            remove_tree(&self.root);
        }
    }
}

fn tids(pid: u32) -> Vec<u32> {
    let mut t: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_str().unwrap().parse().unwrap())
        .collect();
    t.sort();
    t
}

fn rel(root: &Path) -> String {
    // The sub-root's path as /proc shows it (the mount shows the hierarchy's root).
    format!("/{}", root.file_name().unwrap().to_str().unwrap())
}

#[test]
fn setup_move_threads_keep_class_and_teardown_restores() {
    let Some(mut env) = Env::new("move") else {
        return;
    };
    let r = env.cmd(&["setup"]);
    assert_eq!(r.code, 0, "degraded setup must still succeed: {}", r.stderr);
    assert!(env.root.join("chrome/ui/urgent").is_dir());
    assert_eq!(
        std::fs::read_to_string(env.root.join("chrome/ui/cgroup.type"))
            .unwrap()
            .trim(),
        "threaded"
    );
    assert_eq!(
        std::fs::read_to_string(env.root.join("chrome/cgroup.type"))
            .unwrap()
            .trim(),
        "domain threaded"
    );
    let again = env.cmd(&["setup", "--json"]);
    assert_eq!(
        json(&again)["changed"],
        0,
        "second setup must change nothing"
    );

    let pid = env.spawn(4);
    let all = tids(pid);
    // The re-executed test binary: its main thread, libtest's test thread, 4 workers.
    assert_eq!(all.len(), 6);
    let before: Vec<String> = all.iter().map(|&t| cgroup_of_task(pid, t)).collect();
    let base = rel(&env.root);

    let r = env.cmd(&["move", &pid.to_string(), "foreground"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for &t in &all {
        assert_eq!(cgroup_of_task(pid, t), format!("{base}/chrome/foreground"));
    }
    let (urgent, nonurgent) = (all[1], all[2]);
    assert_eq!(
        env.cmd(&["move", "--thread", &urgent.to_string(), "urgent"])
            .code,
        0
    );
    assert_eq!(
        env.cmd(&["move", "--thread", &nonurgent.to_string(), "non-urgent"])
            .code,
        0
    );
    assert_eq!(
        cgroup_of_task(pid, urgent),
        format!("{base}/chrome/foreground/urgent")
    );

    // The whole process to background: every thread keeps its class.
    let r = env.cmd(&["move", &pid.to_string(), "chrome/background"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for &t in &all {
        let want = match t {
            t if t == urgent => format!("{base}/chrome/background/urgent"),
            t if t == nonurgent => format!("{base}/chrome/background/non-urgent"),
            _ => format!("{base}/chrome/background"),
        };
        assert_eq!(cgroup_of_task(pid, t), want, "thread {t}");
    }
    let w = json(&env.cmd(&["where", "--json", &pid.to_string()]));
    let classes: Vec<&str> = w
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["class"].as_str().unwrap())
        .collect();
    assert_eq!(classes.iter().filter(|c| **c == "urgent").count(), 1);
    assert_eq!(classes.iter().filter(|c| **c == "non-urgent").count(), 1);
    assert_eq!(classes.iter().filter(|c| **c == "default").count(), 4);

    // A class that does not exist in a browser group is refused before the kernel sees it.
    let r = env.cmd(&["move", "--thread", &urgent.to_string(), "vcpu"]);
    assert_eq!(r.code, 2);

    let r = env.cmd(&["teardown"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let after: Vec<String> = all.iter().map(|&t| cgroup_of_task(pid, t)).collect();
    assert_eq!(
        after, before,
        "teardown must restore every thread's original cgroup"
    );
    assert!(
        !env.root.exists(),
        "teardown must remove the sub-root it created"
    );
    let r = env.cmd(&["teardown"]);
    assert_eq!(r.code, 0, "a second teardown is harmless: {}", r.stderr);
}

#[test]
fn vm_groups_place_processes_and_vcpu_threads() {
    let Some(mut env) = Env::new("vm") else {
        return;
    };
    assert_eq!(env.cmd(&["setup"]).code, 0);
    let r = env.cmd(&["vm", "add", "termina", "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(env.root.join("vms/termina/vcpu").is_dir());
    let pid = env.spawn(2);
    let all = tids(pid);
    let base = rel(&env.root);
    assert_eq!(env.cmd(&["move", &pid.to_string(), "vm:termina"]).code, 0);
    assert_eq!(
        env.cmd(&["move", "--thread", &all[1].to_string(), "vcpu"])
            .code,
        0
    );
    assert_eq!(
        cgroup_of_task(pid, all[1]),
        format!("{base}/vms/termina/vcpu")
    );
    // A browser class is not a VM class.
    assert_eq!(
        env.cmd(&["move", "--thread", &all[2].to_string(), "urgent"])
            .code,
        2
    );
    let list = json(&env.cmd(&["vm", "list", "--json"]));
    let termina = list
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "termina")
        .unwrap();
    assert_eq!(termina["vcpu_threads"], 1);
    let r = env.cmd(&["vm", "remove", "termina"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(!env.root.join("vms/termina").exists());
    assert!(!cgroup_of_task(pid, all[1]).contains("termina"));
    assert_eq!(env.cmd(&["teardown"]).code, 0);
}

#[test]
fn a_process_that_exits_before_teardown_is_skipped() {
    let Some(mut env) = Env::new("exit") else {
        return;
    };
    assert_eq!(env.cmd(&["setup"]).code, 0);
    let pid = env.spawn(1);
    assert_eq!(env.cmd(&["move", &pid.to_string(), "ui"]).code, 0);
    let mut child = env.children.pop().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let r = env.cmd(&["teardown", "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!env.root.exists());
    // And moving it now is a clear "no such process".
    let r = env.cmd(&["move", &pid.to_string(), "ui"]);
    assert_eq!(r.code, 3);
}

#[test]
fn forked_children_of_moved_processes_follow_their_parent_home() {
    let Some(env) = Env::new("fork") else {
        return;
    };
    assert_eq!(env.cmd(&["setup"]).code, 0);
    // A shell that, once moved, forks a sleeper inside the group.
    let mut sh = Command::new("sh")
        .arg("-c")
        .arg("read go; sleep 30 & echo $!; wait")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = sh.id();
    let original = cgroup_of_task(pid, pid);
    assert_eq!(env.cmd(&["move", &pid.to_string(), "background"]).code, 0);
    use std::io::Write;
    writeln!(sh.stdin.as_mut().unwrap(), "go").unwrap();
    let mut line = String::new();
    BufReader::new(sh.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let sleeper: u32 = line.trim().parse().unwrap();
    assert!(cgroup_of_task(sleeper, sleeper).ends_with("/chrome/background"));
    let r = env.cmd(&["teardown"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        cgroup_of_task(sleeper, sleeper),
        original,
        "the unknown child goes where its parent came from"
    );
    let _ = Command::new("kill").arg(sleeper.to_string()).status();
    let _ = sh.kill();
    let _ = sh.wait();
}

#[test]
fn an_origin_inside_the_cgqos_root_but_outside_its_groups_is_restored() {
    let Some(mut env) = Env::new("sibling") else {
        return;
    };
    assert_eq!(env.cmd(&["setup"]).code, 0);
    // A group of someone else's beside chrome/ and vms/, under the same cgqos root.
    let sibling = env.root.join("elsewhere");
    std::fs::create_dir(&sibling).unwrap();
    let pid = env.spawn(1);
    std::fs::write(sibling.join("cgroup.procs"), pid.to_string()).unwrap();
    let base = rel(&env.root);
    assert_eq!(cgroup_of_task(pid, pid), format!("{base}/elsewhere"));
    assert_eq!(env.cmd(&["move", &pid.to_string(), "ui"]).code, 0);
    let r = env.cmd(&["teardown"]);
    // The root stays (it holds `elsewhere`), so teardown reports that and exits 4.
    assert_eq!(
        cgroup_of_task(pid, pid),
        format!("{base}/elsewhere"),
        "{}",
        r.stdout
    );
    assert!(!env.root.join("chrome").exists());
    let mut c = env.children.pop().unwrap();
    c.kill().unwrap();
    c.wait().unwrap();
    std::fs::remove_dir(&sibling).unwrap();
}
