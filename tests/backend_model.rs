//! The in-memory cgroup2 model (`cgroupfs::memory::MemKernel`) against the real kernel:
//! one script of cgroup operations, run on a real sub-root (root only; skipped with the
//! reason otherwise) and on the model, must get the same answers, errno for errno.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};

use cgqos::cgroupfs::memory::MemKernel;
use cgqos::cgroupfs::{CgroupBackend, CgroupFs, FsError};
use cgqos::procfs::{ProcessId, Procfs, TaskSource, ThreadId};

const CHILD_ENV: &str = "CGQOS_TEST_MODEL_CHILD";

/// Not a test: the two-thread child the script moves (re-executed test binary).
#[test]
#[ignore = "helper process for the model comparison"]
fn model_child() {
    if std::env::var(CHILD_ENV).is_err() {
        return;
    }
    let worker = std::thread::Builder::new()
        .name("worker".into())
        .spawn(std::thread::park)
        .unwrap();
    println!("READY {}", thread_id());
    let _ = std::io::stdin().read_line(&mut String::new());
    drop(worker);
    std::process::exit(0);
}

/// The caller's thread id (from /proc/thread-self, no unsafe needed).
fn thread_id() -> u32 {
    let link = std::fs::read_link("/proc/thread-self").unwrap();
    link.file_name().unwrap().to_str().unwrap().parse().unwrap()
}

/// A task id no task has (beyond any pid_max, still a valid `int`).
const NOBODY: u32 = 2_000_000_000;

fn answer<T: ToString>(r: Result<T, FsError>) -> String {
    match r {
        Ok(v) => format!("ok {}", v.to_string().trim()),
        Err(e) => format!("errno {}", e.source.raw_os_error().unwrap_or(-1)),
    }
}

/// The operations, each with the answer it got; groups relative to the backend's root.
fn script(cg: &impl CgroupBackend, proc: &impl TaskSource, pid: u32, tid: u32) -> Vec<String> {
    let mut out = Vec::new();
    let mut log = |what: &str, a: String| out.push(format!("{what}: {a}"));
    let attach = |file: &str, id: u32| answer(cg.attach(&cg.path(file), id).map(|()| ""));
    let at = |id: u32| {
        let c = proc.cgroup(ProcessId::new(pid), ThreadId::new(id)).unwrap();
        let root = cg.root().file_name().unwrap().to_str().unwrap().to_string();
        c.split_once(&root)
            .map_or(c.clone(), |(_, rest)| rest.to_string())
    };
    for g in ["p", "p/t", "p/d", "q", "p/t/c"] {
        log(&format!("mkdir {g}"), answer(cg.mkdir(g).map(|()| "")));
    }
    log(
        "threaded p/t",
        answer(cg.write("p/t/cgroup.type", "threaded").map(|()| "")),
    );
    log(
        "threaded again",
        answer(cg.write("p/t/cgroup.type", "threaded").map(|()| "")),
    );
    for g in ["p", "p/t", "p/d", "p/t/c", "q"] {
        log(
            &format!("type {g}"),
            answer(cg.read(&format!("{g}/cgroup.type"))),
        );
    }
    log(
        "back to domain",
        answer(cg.write("p/t/cgroup.type", "domain").map(|()| "")),
    );
    log("thread across domains", attach("q/cgroup.threads", tid));
    log("process into threaded", attach("p/t/cgroup.procs", pid));
    log("where", format!("{} {}", at(pid), at(tid)));
    log("thread to its thread root", attach("p/cgroup.threads", tid));
    log("where", format!("{} {}", at(pid), at(tid)));
    log(
        "procs of thread root",
        answer(cg.members("p", "cgroup.procs").map(|m| format!("{m:?}"))),
    );
    log("procs of threaded", answer(cg.read("p/t/cgroup.procs")));
    log("thread into invalid", attach("p/d/cgroup.threads", tid));
    log("process into invalid", attach("p/d/cgroup.procs", pid));
    log("nobody", attach("q/cgroup.procs", NOBODY));
    log("nobody thread", attach("q/cgroup.threads", NOBODY));
    log("rmdir busy", answer(cg.rmdir("p/t").map(|()| "")));
    log("thread id moves its process", attach("q/cgroup.procs", tid));
    log("where", format!("{} {}", at(pid), at(tid)));
    log("children", format!("{:?}", cg.children("p")));
    log(
        "no cpu here",
        answer(cg.write("q/cpu.weight", "50").map(|()| "")),
    );
    log(
        "cpu if available",
        answer(cg.write("q/cgroup.subtree_control", "+cpu").map(|()| "")),
    );
    log(
        "no such controller",
        answer(
            cg.write("q/cgroup.subtree_control", "+nonesuch")
                .map(|()| ""),
        ),
    );
    out
}

struct Child2 {
    child: Child,
    pid: u32,
    tid: u32,
}

fn spawn_child() -> Child2 {
    let child = common::child_test_command(&std::env::current_exe().unwrap(), "model_child")
        .env(CHILD_ENV, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut c = Child2 {
        pid: child.id(),
        tid: 0,
        child,
    };
    let mut out = BufReader::new(c.child.stdout.take().unwrap());
    let mut line = String::new();
    while out.read_line(&mut line).unwrap_or(0) > 0 {
        // libtest may print its "test model_child ... " before it on the same line.
        if let Some((_, t)) = line.trim().split_once("READY ") {
            c.tid = t.parse().unwrap();
            return c;
        }
        line.clear();
    }
    let _ = c.child.wait();
    panic!("the child exited before it was ready");
}

#[test]
fn the_model_answers_as_the_kernel_does() {
    let Some(root) = common::real_subroot("model") else {
        return;
    };
    let mount = root.parent().unwrap().to_path_buf();
    let c = spawn_child();
    let proc = Procfs::new("/proc");
    let origin = proc
        .cgroup(ProcessId::new(c.pid), ThreadId::new(c.pid))
        .unwrap();
    let origin_dir = mount.join(origin.trim_start_matches('/'));
    std::fs::create_dir(&root).unwrap();
    let real = CgroupFs::new(&root);
    let got_real = script(&real, &proc, c.pid, c.tid);
    // Clean up before judging: the child back where it was, then gone; groups removed.
    let _ = std::fs::write(origin_dir.join("cgroup.procs"), c.pid.to_string());
    let Child2 { mut child, .. } = c;
    drop(child.stdin.take());
    let _ = child.wait();
    for g in ["p/t/c", "p/t", "p/d", "p", "q", ""] {
        let _ = CgroupBackend::rmdir(&real, g);
    }
    assert!(!root.exists(), "{} left behind", root.display());

    let root_controllers =
        std::fs::read_to_string(mount.join("cgroup.subtree_control")).unwrap_or_default();
    let available: Vec<&str> = root_controllers.split_whitespace().collect();
    let k = MemKernel::new(&mount, &root, &available);
    let enable: Vec<String> = available.iter().map(|c| format!("+{c}")).collect();
    if !enable.is_empty() {
        k.write("../cgroup.subtree_control", &enable.join(" "))
            .unwrap();
    }
    k.mkdir_all(&origin_dir);
    k.spawn(c.pid, 1, "model_child", &origin_dir);
    k.spawn_thread(c.pid, c.tid, "worker");
    let got_model = script(&k, &k, c.pid, c.tid);
    assert_eq!(got_model, got_real);
    // The script exercised refusals, not only successes.
    assert!(
        got_real.iter().filter(|l| l.contains("errno")).count() >= 6,
        "{got_real:#?}"
    );
}

#[test]
fn a_missing_path_is_the_same_error_on_both() {
    let k = MemKernel::new("/m", "/m/cgqos", &[]);
    let dir = tempfile::tempdir().unwrap();
    let real = CgroupFs::new(dir.path());
    for (name, e) in [
        ("model", k.write("nope/cgroup.procs", "1").unwrap_err()),
        (
            "real",
            CgroupBackend::write(&real, "nope/cgroup.procs", "1").unwrap_err(),
        ),
    ] {
        assert_eq!(e.op, "open", "{name}");
        assert_eq!(e.value.as_deref(), Some("1"), "{name}");
        assert_eq!(e.source.raw_os_error(), Some(libc::ENOENT), "{name}");
    }
    assert!(!Path::new("/m").exists());
}
