//! `cgqos vm attach` against the real cgroup2 mount (root only; skipped with the reason
//! otherwise): a real `qemu-system-x86_64` (paused, TCG, two vCPUs: no guest needed) attached
//! directly and through a daemon, every thread's cgroup checked against its name, and `vm
//! remove` putting every thread back; a multi-threaded test program attached as `crosvm`
//! whose thread renamed later, and a thread created later, are placed by the daemon from
//! process events.

mod common;
use common::daemon::*;
use common::*;

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const OPEN_SOCKET: &str = "socket:\n  mode: \"0666\"\n";
const CHILD: &str = "CGQOS_VM_CHILD";

/// A paused QEMU in its own process group, killed (the whole group) and reaped on drop.
struct Qemu(Child);

impl Qemu {
    fn start(exe: &Path) -> Qemu {
        let child = Command::new(exe)
            .args([
                "-name",
                "t,debug-threads=on",
                "-machine",
                "q35",
                "-accel",
                "tcg,thread=multi",
                "-smp",
                "2",
                "-m",
                "64",
                "-display",
                "none",
                "-nodefaults",
                "-monitor",
                "none",
                "-S",
            ])
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let q = Qemu(child);
        let pid = q.pid();
        wait_for("QEMU's vCPU threads", || {
            let names: Vec<String> = threads(pid).into_values().collect();
            names.iter().any(|n| n == "CPU 0/TCG") && names.iter().any(|n| n == "CPU 1/TCG")
        });
        q
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        // SAFETY: kill of the process group we created (QEMU's own pid is its id).
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

/// Each thread of `pid` and its name.
fn threads(pid: u32) -> HashMap<u32, String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.filter_map(|e| {
                let tid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
                let comm = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).ok()?;
                Some((tid, comm.trim_end().to_string()))
            })
            .collect()
        })
        .unwrap_or_default()
}

/// Each thread's cgroup.
fn cgroups(pid: u32) -> HashMap<u32, String> {
    threads(pid)
        .into_keys()
        .map(|tid| (tid, cgroup_of_task(pid, tid)))
        .collect()
}

/// Every thread of `pid` is in `vms/<vm>/vcpu` if `is_vcpu(its name)`, else in `vms/<vm>/io`.
fn assert_placed(pid: u32, vm: &str, is_vcpu: impl Fn(&str) -> bool) {
    for (tid, name) in threads(pid) {
        let part = if is_vcpu(&name) { "vcpu" } else { "io" };
        let cg = cgroup_of_task(pid, tid);
        assert!(
            cg.ends_with(&format!("/vms/{vm}/{part}")),
            "thread {tid} ({name}) is in {cg}, not in vms/{vm}/{part}"
        );
    }
}

fn qemu_vcpu(name: &str) -> bool {
    name.starts_with("CPU ") && name.ends_with("/TCG")
}

/// A direct (no daemon) cgqos tree on the real mount, torn down and removed on drop.
struct Tree {
    root: PathBuf,
    state: tempfile::TempDir,
}

impl Tree {
    fn new(tag: &str) -> Option<Tree> {
        let root = real_subroot(tag)?;
        let t = Tree {
            root,
            state: tempfile::tempdir().unwrap(),
        };
        let r = t.run(&["setup"]);
        assert_eq!(r.code, 0, "setup: {}", r.stderr);
        Some(t)
    }

    fn run(&self, args: &[&str]) -> Run {
        run(cgqos()
            .args(args)
            .arg("--cgroup-root")
            .arg(&self.root)
            .arg("--state-dir")
            .arg(self.state.path()))
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = self.run(&["teardown"]);
        let _ = std::fs::remove_dir(&self.root);
    }
}

#[test]
fn a_running_qemu_is_attached_thread_by_thread_and_detached_by_vm_remove() {
    let Some(exe) = clients::program(&["qemu-system-x86_64"]) else {
        return;
    };
    let Some(tree) = Tree::new("vmattach") else {
        return;
    };
    let qemu = Qemu::start(&exe);
    let pid = qemu.pid();
    let before = cgroups(pid);
    let p = pid.to_string();

    // A dry run shows the parts and moves nothing (the VM's groups do not exist yet).
    let r = tree.run(&["vm", "attach", "t", &p, "--dry-run", "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = json(&r);
    assert_eq!(v["vm_type"], "qemu", "detected from the exe");
    assert_eq!(v["dry_run"], true);
    assert_eq!(cgroups(pid), before);
    assert!(!tree.root.join("vms/t").exists());

    let r = tree.run(&["vm", "attach", "t", &p, "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = json(&r);
    assert_eq!(v["created"], true, "{v}");
    let listed = v["threads"].as_array().unwrap();
    for t in listed {
        let part = if qemu_vcpu(t["name"].as_str().unwrap()) {
            "vcpu"
        } else {
            "io"
        };
        assert_eq!(t["part"], part, "{t}");
    }
    assert_eq!(
        listed.iter().filter(|t| t["part"] == "vcpu").count(),
        2,
        "{v}"
    );
    assert_placed(pid, "t", qemu_vcpu);
    // Nothing was hot-added: the same threads, all placed.
    assert_eq!(threads(pid).len(), listed.len());

    // Text output: one line per thread.
    let r = tree.run(&["vm", "attach", "t", &p]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("attached qemu process"), "{}", r.stdout);
    assert!(r.stdout.contains("CPU 1/TCG        vcpu"), "{}", r.stdout);

    // ArcVM keeps its own group: attached there, the same split.
    let r = tree.run(&["vm", "attach", "arcvm", &p, "--type", "qemu"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("/vms/arcvm)"), "{}", r.stdout);
    assert_placed(pid, "arcvm", qemu_vcpu);

    let r = tree.run(&["vm", "remove", "t"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!tree.root.join("vms/t").exists());
    let r = tree.run(&["vm", "remove", "arcvm"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(cgroups(pid), before, "every thread back where it was");
}

#[test]
fn bad_attach_requests_are_refused_before_anything_moves() {
    let Some(tree) = Tree::new("vmattach-bad") else {
        return;
    };
    let mut sleeper = Command::new("sleep").arg("60").spawn().unwrap();
    let p = sleeper.id().to_string();
    let before = cgroup_of(sleeper.id());
    for (args, code, message) in [
        (
            vec!["vm", "attach", "t", &p],
            2,
            "cannot tell the VM type of process",
        ),
        (
            vec!["vm", "attach", "t", &p, "--type", "vbox"],
            2,
            "unknown VM type \"vbox\": expected one of qemu, crosvm",
        ),
        (vec!["vm", "attach", "Bad", &p, "--type", "qemu"], 2, "Bad"),
        (
            vec!["vm", "attach", "t", "0", "--type", "qemu"],
            2,
            "\"0\" is not a process id",
        ),
        (
            vec!["vm", "attach", "t", "4194304", "--type", "qemu"],
            3,
            "no such process",
        ),
    ] {
        let r = tree.run(&args);
        assert_eq!(r.code, code, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains(message), "{args:?}: {}", r.stderr);
        assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    }
    // A bad vm-types.yaml: its file, line and column, and nothing moves.
    let conf = tempfile::tempdir().unwrap();
    std::fs::write(conf.path().join("vm-types.yaml"), "qemu:\n  vcpu: [x]\n").unwrap();
    let dir = conf.path().to_str().unwrap();
    let r = tree.run(&[
        "vm",
        "attach",
        "t",
        &p,
        "--type",
        "qemu",
        "--config-dir",
        dir,
    ]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("vm-types.yaml:2:3: qemu: unknown key `vcpu`"),
        "{}",
        r.stderr
    );
    assert_eq!(cgroup_of(sleeper.id()), before);
    assert!(!tree.root.join("vms/t").exists());
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
}

/// Not a test: the "crosvm" the daemon test attaches (this binary, run for this one test).
/// Starts `CGQOS_VM_CHILD` threads named worker-N and prints their tids; then, per line read:
/// `rename` renames worker-0 to `crosvm_vcpu2`, `spawn` starts a thread named `crosvm_vcpu3`
/// and another named `late-io`. Runs until stdin closes.
#[test]
#[ignore = "helper process for the vm attach tests"]
fn vm_child() {
    let Ok(n) = std::env::var(CHILD) else { return };
    let n: usize = n.parse().unwrap();
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let (rename_tx, rename_rx) = std::sync::mpsc::channel::<()>();
    let mut rename_rx = Some(rename_rx);
    for i in 0..n {
        let tid_tx = tid_tx.clone();
        let rx = if i == 0 { rename_rx.take() } else { None };
        std::thread::Builder::new()
            .name(format!("worker-{i}"))
            .spawn(move || {
                // SAFETY: gettid has no preconditions.
                tid_tx.send((i, unsafe { libc::gettid() } as u32)).unwrap();
                if rx.is_some_and(|rx| rx.recv().is_ok()) {
                    let name = std::ffi::CString::new("crosvm_vcpu2").unwrap();
                    // SAFETY: PR_SET_NAME with a NUL-terminated string we own.
                    unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
                }
                loop {
                    std::thread::park();
                }
            })
            .unwrap();
    }
    // In thread order, whichever started first: the test renames the first (worker-0).
    let mut tids: Vec<(usize, u32)> = (0..n).map(|_| tid_rx.recv().unwrap()).collect();
    tids.sort_unstable();
    let tids: Vec<String> = tids.iter().map(|(_, t)| t.to_string()).collect();
    println!("TIDS {}", tids.join(" "));
    let mut line = String::new();
    while std::io::stdin().read_line(&mut line).unwrap_or(0) > 0 {
        match line.trim() {
            "rename" => rename_tx.send(()).unwrap(),
            "spawn" => {
                for name in ["crosvm_vcpu3", "late-io"] {
                    std::thread::Builder::new()
                        .name(name.into())
                        .spawn(|| {
                            loop {
                                std::thread::park();
                            }
                        })
                        .unwrap();
                }
            }
            _ => {}
        }
        line.clear();
    }
}

/// The thread of `pid` named `name`, once there is one.
fn thread_named(pid: u32, name: &str) -> u32 {
    let mut found = None;
    wait_for(&format!("a thread named {name}"), || {
        found = threads(pid)
            .into_iter()
            .find(|(_, n)| n == name)
            .map(|(t, _)| t);
        found.is_some()
    });
    found.unwrap()
}

fn in_part(pid: u32, tid: u32, vm: &str, part: &str) -> bool {
    cgroup_of_task(pid, tid).ends_with(&format!("/vms/{vm}/{part}"))
}

#[test]
fn the_daemon_places_threads_created_or_renamed_after_the_attach() {
    // A VM type of the configuration: the test program as its monitor.
    let types = "testvmm:\n  monitors: [\"vmac*\"]\n  vcpu-threads: [\"crosvm_vcpu*\"]\n";
    let Some(d) = Daemon::with(
        "vmattach",
        OPEN_SOCKET,
        None,
        &[("vm-types.yaml", types)],
        &[],
    ) else {
        return;
    };
    // QEMU through the daemon: the same placement as directly.
    if let Some(exe) = clients::program(&["qemu-system-x86_64"]) {
        let qemu = Qemu::start(&exe);
        let before = cgroups(qemu.pid());
        let r = d.cli(&["vm", "attach", "q", &qemu.pid().to_string(), "--json"]);
        assert_eq!(r.code, 0, "{}\n{}", r.stderr, d.log());
        assert_eq!(json(&r)["vm_type"], "qemu");
        assert_placed(qemu.pid(), "q", qemu_vcpu);
        let r = d.cli(&["vm", "remove", "q"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert_eq!(cgroups(qemu.pid()), before);
    }

    let prog = program_copy("vma", "c");
    let mut child = run_child_program(&prog, "vm_child", CHILD, 2);
    let pid = child.child.id();
    let before = cgroups(pid);
    let r = d.cli(&["vm", "attach", "c", &pid.to_string(), "--json"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stderr, d.log());
    assert_eq!(json(&r)["vm_type"], "testvmm", "detected by vm-types.yaml");
    let crosvm_vcpu = |n: &str| n.starts_with("crosvm_vcpu");
    assert_placed(pid, "c", crosvm_vcpu);
    let worker0 = child.tids[0];
    assert!(in_part(pid, worker0, "c", "io"));

    // Renamed after the attach: to vcpu, by the comm event.
    let stdin = child.child.stdin.as_mut().unwrap();
    stdin.write_all(b"rename\n").unwrap();
    wait_for("the renamed thread in vcpu", || {
        in_part(pid, worker0, "c", "vcpu")
    });
    // Created after the attach (in the creator's io group), then named: by name.
    stdin.write_all(b"spawn\n").unwrap();
    let vcpu3 = thread_named(pid, "crosvm_vcpu3");
    wait_for("the new vCPU thread in vcpu", || {
        in_part(pid, vcpu3, "c", "vcpu")
    });
    let late = thread_named(pid, "late-io");
    assert!(in_part(pid, late, "c", "io"));
    assert_placed(pid, "c", crosvm_vcpu);

    // Detached: every thread there before the attach is back where it was.
    let r = d.cli(&["vm", "remove", "c"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let now = cgroups(pid);
    for (tid, cg) in &before {
        assert_eq!(now.get(tid), Some(cg), "thread {tid}");
    }
    // The new threads left with their process.
    assert_eq!(now.get(&vcpu3), before.get(&pid));
    drop(child);
    assert!(!d.log().contains("panicked"), "{}", d.log());
}

/// Not a test: the unprivileged client of `an_unprivileged_caller_attaches_its_own_monitor_only`,
/// run as uid 54321: attaches a process of its own, then the foreign one, then its own to a VM
/// whose groups do not exist yet.
#[test]
#[ignore = "helper process for the vm attach tests"]
fn unprivileged_attacher() {
    let Ok(socket) = std::env::var("CGQOS_TEST_SOCKET") else {
        return;
    };
    let foreign = std::env::var("CGQOS_TEST_FOREIGN").unwrap();
    let mut own = Command::new("sleep").arg("30").spawn().unwrap();
    let mut s = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    let attach = |s: &mut std::os::unix::net::UnixStream, vm: &str, pid: &str| {
        request(
            s,
            &format!(r#"{{"v":1,"op":"vm_attach","name":"{vm}","pid":{pid},"type":"crosvm"}}"#),
        )
    };
    let mine = attach(&mut s, "u", &own.id().to_string());
    let theirs = attach(&mut s, "u", &foreign);
    let new_vm = attach(&mut s, "other", &own.id().to_string());
    println!("MINE {mine}THEIRS {theirs}NEW {new_vm}");
    own.kill().unwrap();
    own.wait().unwrap();
}

#[test]
fn an_unprivileged_caller_attaches_its_own_monitor_only() {
    let Some(mut d) = Daemon::new("vmattach-u", OPEN_SOCKET, None) else {
        return;
    };
    let r = d.cli(&["vm", "add", "u"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let foreign = d.sleeper();
    let foreign_before = cgroup_of(foreign);
    let out = child_test_command(&std::env::current_exe().unwrap(), "unprivileged_attacher")
        .env("CGQOS_TEST_SOCKET", d.socket())
        .env("CGQOS_TEST_FOREIGN", foreign.to_string())
        .uid(UNPRIV_UID)
        .gid(UNPRIV_UID)
        .output()
        .unwrap();
    let line = |tag: &str| tagged_line(&out, tag);
    let mine = line("MINE ");
    assert!(
        mine.contains("\"ok\":true") && mine.contains("\"part\":\"io\""),
        "{mine}"
    );
    let theirs = line("THEIRS ");
    assert!(
        theirs.contains("\"code\":\"denied\"")
            && theirs.contains("uid 54321 may only place its own processes"),
        "{theirs}"
    );
    assert_eq!(cgroup_of(foreign), foreign_before);
    let new_vm = line("NEW ");
    assert!(
        new_vm.contains("\"code\":\"denied\"") && new_vm.contains("changing vms/other is for root"),
        "{new_vm}"
    );
    assert!(!d.root.join("vms/other").exists());
}
