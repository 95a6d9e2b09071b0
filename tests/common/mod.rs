//! Shared helpers for the integration tests: run the binary with a clean environment, find
//! fixtures, build fake cgroup trees.
#![allow(dead_code)]

pub mod clients;
pub mod daemon;
pub mod root_only;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The state recorded in the state directory `dir` as cgqos reads it (the snapshot with its
/// journal replayed), as JSON; `null` when there is none.
pub fn recorded_state(dir: &Path) -> serde_json::Value {
    let state = cgqos::state::read_unlocked(dir).expect("a readable state");
    serde_json::to_value(state).unwrap()
}

pub fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture(name: &str) -> PathBuf {
    manifest_dir().join("tests/fixtures/sysfs").join(name)
}

pub fn board_file(rel: &str) -> PathBuf {
    manifest_dir().join("boards").join(rel)
}

/// The cgqos binary with no CGQOS_* variables from the caller's environment.
pub fn cgqos() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cgqos"));
    for (k, _) in std::env::vars() {
        if k.starts_with("CGQOS_") || k == "RUST_LOG" {
            c.env_remove(k);
        }
    }
    // Never talk to a daemon that may run on the test machine.
    c.env("CGQOS_SOCKET", "/nonexistent/cgqos-test.sock");
    c
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn run(cmd: &mut Command) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("cgqos runs");
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

pub fn json(r: &Run) -> serde_json::Value {
    serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", r.stdout, r.stderr))
}

/// A fake cgroup2 tree that, like cgroupfs, has exactly the files the kernel would create
/// for a group, so writes to anything else fail with ENOENT.
pub struct FakeCgroup {
    pub dir: tempfile::TempDir,
    /// Controllers the fake kernel offers at the root.
    pub controllers: Vec<&'static str>,
    pub uclamp: bool,
}

impl FakeCgroup {
    pub fn new(controllers: &[&'static str], uclamp: bool) -> FakeCgroup {
        let f = FakeCgroup {
            dir: tempfile::tempdir().unwrap(),
            controllers: controllers.to_vec(),
            uclamp,
        };
        let root = f.dir.path();
        for (name, value) in [
            ("cgroup.procs", ""),
            ("cgroup.threads", ""),
            ("cgroup.controllers", &controllers.join(" ")[..]),
            ("cgroup.subtree_control", ""),
        ] {
            fs::write(root.join(name), value).unwrap();
        }
        f
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Creates a group as the kernel would, with the controllers its parent offers.
    pub fn group(&self, rel: &str, threaded: bool) {
        let dir = self.root().join(rel);
        fs::create_dir_all(&dir).unwrap();
        let files: Vec<(&str, &str)> = vec![
            ("cgroup.procs", ""),
            ("cgroup.threads", ""),
            ("cgroup.controllers", ""),
            ("cgroup.subtree_control", ""),
            ("cgroup.type", if threaded { "threaded" } else { "domain" }),
        ];
        for (name, value) in files {
            fs::write(dir.join(name), format!("{value}\n")).unwrap();
        }
        let offered = self.controllers.join(" ");
        fs::write(dir.join("cgroup.controllers"), format!("{offered}\n")).unwrap();
        if self.controllers.contains(&"cpu") {
            fs::write(dir.join("cpu.weight"), "100\n").unwrap();
            fs::write(dir.join("cpu.max"), "max 100000\n").unwrap();
            if self.uclamp {
                fs::write(dir.join("cpu.uclamp.min"), "0.00\n").unwrap();
            }
        }
        if self.controllers.contains(&"cpuset") {
            fs::write(dir.join("cpuset.cpus"), "\n").unwrap();
            fs::write(dir.join("cpuset.cpus.effective"), "0-7\n").unwrap();
        }
    }

    /// Every file below the root, relative, sorted: to prove nothing was created.
    pub fn files(&self) -> Vec<String> {
        let mut out = Vec::new();
        walk(self.root(), self.root(), &mut out);
        out.sort();
        out
    }

    pub fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.root().join(rel)).unwrap()
    }
}

fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(base, &p, out);
        } else {
            out.push(p.strip_prefix(base).unwrap().display().to_string());
        }
    }
}

/// A unique sub-root path of the machine's real cgroup2 mount, or `None` (with the reason
/// printed) when the tests that need one cannot run: not root, no cgroup2 mount, or this
/// process outside cgroup2.
pub fn real_subroot(tag: &str) -> Option<PathBuf> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        root_only::skipped("not root (tests on the real cgroup2 mount need root)");
        return None;
    }
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let Some(mount) = cgqos::cgroupfs::cgroup2_mounts(&mountinfo)
        .into_iter()
        .find(|m| m.root == "/")
    else {
        root_only::skipped("no cgroup2 mount found in /proc/self/mountinfo");
        return None;
    };
    // Our own cgroup must be inside this mount for moves to be visible to us.
    let own = fs::read_to_string("/proc/self/cgroup").unwrap();
    if !own.lines().any(|l| l.starts_with("0::/")) {
        root_only::skipped("this process has no cgroup2 membership");
        return None;
    }
    Some(
        mount
            .dir
            .join(format!("cgqos-test-{tag}-{}", std::process::id())),
    )
}

/// The cgroup2 path `/proc` shows for one thread of a process.
pub fn cgroup_of_task(pid: u32, tid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/task/{tid}/cgroup"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap()
        .to_string()
}

/// A copy of the running test binary under a unique name (`prefix`, `tag`, our pid), so rules
/// that match it match nothing else. comm keeps 15 characters: keep both short.
pub struct Program {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
    pub name: String,
}

pub fn program_copy(prefix: &str, tag: &str) -> Program {
    let dir = tempfile::tempdir().unwrap();
    let name = format!("{prefix}{tag}{}", std::process::id() % 100000);
    let path = dir.path().join(&name);
    fs::copy(std::env::current_exe().unwrap(), &path).unwrap();
    Program {
        _dir: dir,
        path,
        name,
    }
}

/// A running copy of the test binary that runs one ignored test (`child_test`) as a
/// multi-threaded program: it starts `threads` threads, prints `TIDS t1 t2 ...` and waits on
/// stdin. Killed and reaped on drop.
pub struct Running {
    pub child: std::process::Child,
    pub tids: Vec<u32>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `exe` (a test binary) set to run only its ignored test `name`: a helper program that lives
/// inside the test binary (started again as a child, often as another uid).
pub fn child_test_command(exe: &Path, name: &str) -> Command {
    let mut c = Command::new(exe);
    c.args([
        "--exact",
        name,
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    c
}

/// The rest of the line after `tag` in a helper program's stdout (a helper prints results as
/// `TAG value`); panics with both outputs when there is none.
pub fn tagged_line(out: &Output, tag: &str) -> String {
    let text = String::from_utf8_lossy(&out.stdout);
    text.split(tag)
        .nth(1)
        .and_then(|r| r.lines().next())
        .unwrap_or_else(|| {
            panic!(
                "no {tag} in {text} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
        .to_string()
}

/// Removes what is left of a test's cgroup sub-root, deepest first (cgroupfs directories go
/// with `rmdir`, never recursively). The last resort after `teardown`; errors are ignored.
pub fn remove_tree(root: &Path) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(&e.path());
        }
    }
    let _ = fs::remove_dir(root);
}

/// The groups a trogdor plan creates, pre-made in a fake tree as a kernel that had them
/// would show them.
pub fn fake_with_groups(controllers: &[&'static str], uclamp: bool) -> FakeCgroup {
    let f = FakeCgroup::new(controllers, uclamp);
    let r = run(cgqos()
        .args(["plan", "--json", "--board", "trogdor", "--sysfs-root"])
        .arg(fixture("trogdor")));
    for s in json(&r)["steps"].as_array().unwrap() {
        if s["op"] == "mkdir" {
            f.group(s["path"].as_str().unwrap(), false);
        }
    }
    f
}

/// A copy of the trogdor sysfs with ChromeOS's cpu_boost parameter set to `value`; returns
/// the tree and the parameter's path.
pub fn sysfs_with_input_boost(value: &str) -> (tempfile::TempDir, PathBuf) {
    let sysfs = tempfile::tempdir().unwrap();
    let st = Command::new("cp")
        .arg("-r")
        .arg(fixture("trogdor").join("devices"))
        .arg(sysfs.path())
        .status()
        .unwrap();
    assert!(st.success());
    let param = sysfs
        .path()
        .join("module/cpu_boost/parameters/input_boost_freq_percent");
    fs::create_dir_all(param.parent().unwrap()).unwrap();
    fs::write(&param, value).unwrap();
    (sysfs, param)
}

/// Spawns a program that was just written (a `program_copy`). Another test thread that forks
/// while the copy's file is still open for writing holds that descriptor until its own exec,
/// and executing the copy then fails with ETXTBSY ("Text file busy"): retry briefly.
pub fn spawn_fresh_copy(cmd: &mut Command) -> std::process::Child {
    let mut tries = 0;
    loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 50 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            r => return r.unwrap(),
        }
    }
}

/// Starts `exe` running only its ignored test `child_test` (a helper program inside a test
/// binary), with `env=threads`, stdin and stdout piped; returns it and its stdout.
pub fn spawn_child_test(
    exe: &Path,
    child_test: &str,
    env: &str,
    threads: usize,
) -> (
    std::process::Child,
    std::io::BufReader<std::process::ChildStdout>,
) {
    use std::process::Stdio;
    let mut cmd = child_test_command(exe, child_test);
    cmd.env(env, threads.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut child = spawn_fresh_copy(&mut cmd);
    let out = std::io::BufReader::new(child.stdout.take().unwrap());
    (child, out)
}

// The child is reaped by Running's Drop, on every path that returns it.
#[allow(clippy::zombie_processes)]
pub fn run_child_program(p: &Program, child_test: &str, env: &str, threads: usize) -> Running {
    use std::io::BufRead;
    let (child, mut out) = spawn_child_test(&p.path, child_test, env, threads);
    let mut line = String::new();
    loop {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "child died");
        if let Some(t) = line.split("TIDS ").nth(1) {
            let tids = t.split_whitespace().map(|s| s.parse().unwrap()).collect();
            return Running { child, tids };
        }
    }
}
