//! `cgqos exec` against the real cgroup2 mount (root only; skipped with the reason
//! otherwise): the command is in its group from its first instruction, with its class's
//! attributes, through clone3 (CLONE_INTO_CGROUP), the forced fallback (the process moves
//! itself and execs in place) and a daemon (an unprivileged caller under the policy).

mod common;
use common::daemon::{Daemon, UNPRIV_UID, wait_for};
use common::*;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A set-up sub-root of the real cgroup2 mount, with its own state and configuration
/// directories; torn down on drop.
struct Env {
    root: PathBuf,
    dir: tempfile::TempDir,
    children: Vec<Child>,
}

/// A rules.d class with a policy of its own (the shipped ones set nice and uclamp only).
const RULES: &str = "classes:\n  batch5: {policy: batch, nice: 5}\n";

impl Env {
    fn new(tag: &str) -> Option<Env> {
        let env = Env {
            root: real_subroot(&format!("exec{tag}"))?,
            dir: tempfile::tempdir().unwrap(),
            children: Vec::new(),
        };
        let rules = env.dir.path().join("conf/rules.d");
        std::fs::create_dir_all(&rules).unwrap();
        std::fs::write(rules.join("10-test.yaml"), RULES).unwrap();
        let r = run(&mut env.cmd(&["setup"]));
        assert_eq!(r.code, 0, "setup: {}", r.stderr);
        Some(env)
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = cgqos();
        // Global options first: after exec's `--`, everything is the command's.
        c.arg("--cgroup-root")
            .arg(&self.root)
            .arg("--state-dir")
            .arg(self.dir.path().join("state"))
            .arg("--config-dir")
            .arg(self.dir.path().join("conf"))
            .args(args);
        c
    }

    /// `cgqos exec <args>` run to its end.
    fn exec(&self, args: &[&str]) -> Run {
        let mut all = vec!["exec"];
        all.extend(args);
        run(&mut self.cmd(&all))
    }

    /// The cgroup path `/proc` shows for a group of this sub-root.
    fn shown(&self, group: &str) -> String {
        format!(
            "/{}/{group}",
            self.root.file_name().unwrap().to_str().unwrap()
        )
    }

    fn state(&self) -> serde_json::Value {
        recorded_state(&self.dir.path().join("state"))
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = run(&mut self.cmd(&["teardown"]));
        if self.root.exists() {
            let _ = Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "find '{}' -depth -type d -exec rmdir {{}} \\; 2>/dev/null",
                    self.root.display()
                ))
                .status();
        }
    }
}

/// This test's own cgroup as a directory (the sub-root sits right under the mount).
fn own_group_dir(env: &Env) -> PathBuf {
    let own = cgroup_of_task(std::process::id(), std::process::id());
    env.root
        .parent()
        .unwrap()
        .join(own.trim_start_matches('/'))
        .components()
        .collect()
}

/// The command each test runs: its own cgroup, nice (field 19 of stat) and policy (41), as
/// the exec'd program itself reads them first thing.
const REPORT: &str = "echo PID $$; cat /proc/self/cgroup; echo NICE $(cut -d' ' -f19 /proc/self/stat); echo POLICY $(cut -d' ' -f41 /proc/self/stat)";

/// What REPORT printed: the process id, its cgroup2 path, nice and policy.
fn report(r: &Run) -> (u32, String, i32, u32) {
    let field = |tag: &str| {
        r.stdout
            .lines()
            .find_map(|l| l.strip_prefix(tag))
            .unwrap_or_else(|| panic!("no {tag:?} in {:?} (stderr {:?})", r.stdout, r.stderr))
            .trim()
            .to_string()
    };
    (
        field("PID ").parse().unwrap(),
        field("0::"),
        field("NICE ").parse().unwrap(),
        field("POLICY ").parse().unwrap(),
    )
}

#[test]
fn the_command_starts_in_its_group_with_its_class() {
    let Some(env) = Env::new("group") else {
        return;
    };
    let r = env.exec(&["background", "--", "sh", "-c", REPORT]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let (pid, cgroup, nice, policy) = report(&r);
    assert_eq!(cgroup, env.shown("chrome/background"));
    assert_eq!((nice, policy), (0, 0));
    // Recorded as a move records: its origin (this test's group) and who asked.
    let state = env.state();
    let origin = state["tasks"][pid.to_string()]["original"]
        .as_str()
        .unwrap();
    assert_eq!(Path::new(origin), own_group_dir(&env));
    assert_eq!(state["why"][pid.to_string()]["by"], "cgqos exec (uid 0)");
    // A class: its urgent subgroup and its nice, before the command's first instruction.
    let r = env.exec(&["foreground", "--class", "urgent", "--", "sh", "-c", REPORT]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let (pid, cgroup, nice, _) = report(&r);
    assert_eq!(cgroup, env.shown("chrome/foreground/urgent"));
    assert_eq!(nice, -8);
    let state = env.state();
    assert_eq!(state["why"][pid.to_string()]["class"], "urgent");
    assert_eq!(state["attrs"][pid.to_string()]["original"]["nice"], 0);
    // A class of rules.d with a policy; a default-class class stays in the group itself.
    let r = env.exec(&["ui", "--class", "batch5", "--", "sh", "-c", REPORT]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let (_, cgroup, nice, policy) = report(&r);
    assert_eq!(cgroup, env.shown("chrome/ui"));
    assert_eq!((nice, policy), (5, libc::SCHED_BATCH as u32));
}

#[test]
fn the_exit_status_is_the_commands() {
    let Some(env) = Env::new("status") else {
        return;
    };
    for (script, code) in [("exit 0", 0), ("exit 3", 3), ("kill -KILL $$", 137)] {
        let r = env.exec(&["background", "--", "sh", "-c", script]);
        assert_eq!(r.code, code, "{script}: {}", r.stderr);
    }
    // Started with SIGCHLD ignored (which would make the kernel reap the command
    // unannounced), cgqos still sees it end.
    let mut c = env.cmd(&["exec", "background", "--", "sh", "-c", "exit 4"]);
    // SAFETY: only signal(2), async-signal-safe, between fork and exec.
    unsafe {
        c.pre_exec(|| {
            libc::signal(libc::SIGCHLD, libc::SIG_IGN);
            Ok(())
        });
    }
    assert_eq!(run(&mut c).code, 4);
    // A missing command: the shell's 127 and a message, before anything is placed or made.
    let r = env.exec(&["vm:never", "--", "cgqos-no-such-command", "x"]);
    assert_eq!(r.code, 127, "{}", r.stderr);
    assert!(
        r.stderr
            .starts_with("cgqos: cgqos-no-such-command: command not found (PATH="),
        "{}",
        r.stderr
    );
    assert!(!env.root.join("vms/never").exists());
    // A file that is not executable: 126.
    let plain = env.dir.path().join("plain");
    std::fs::write(&plain, "echo never\n").unwrap();
    let r = env.exec(&["background", "--", plain.to_str().unwrap()]);
    assert_eq!(r.code, 126, "{}", r.stderr);
    assert!(r.stderr.contains("permission denied"), "{}", r.stderr);
    // One the kernel refuses to run: execve's error, and the child placed for it is gone
    // unrecorded.
    std::fs::set_permissions(&plain, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::write(&plain, [0x7f, b'E', b'L', b'F', 0, 0, 0, 0]).unwrap();
    let r = env.exec(&["background", "--", plain.to_str().unwrap()]);
    assert_eq!(r.code, 126, "{}", r.stderr);
    assert!(r.stderr.contains("cannot run"), "{}", r.stderr);
    let state = env.state();
    assert_eq!(state["tasks"].as_object().unwrap().len(), 4, "{state}");
    // (A threaded group lists its members in cgroup.threads only.)
    let members =
        std::fs::read_to_string(env.root.join("chrome/background/cgroup.threads")).unwrap();
    assert_eq!(members, "");
    // Bad input: cgqos's own codes, nothing run.
    let r = env.exec(&["nowhere", "--", "sh", "-c", "echo RAN"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(!r.stdout.contains("RAN"));
    let r = env.exec(&["vm:x/vcpu", "--class", "urgent", "--", "true"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("is a VM part"), "{}", r.stderr);
    let r = env.exec(&["vm:x", "--class", "urgent", "--", "true"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("does not exist in vms/x"), "{}", r.stderr);
    assert!(!env.root.join("vms/x").exists());
}

/// The child cgqos started (its only one), once it runs `comm`.
fn child_running(parent: u32, comm: &str) -> u32 {
    let mut child = 0;
    wait_for("the command", || {
        let kids = std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children"))
            .unwrap_or_default();
        child = kids
            .split_whitespace()
            .next()
            .map_or(0, |k| k.parse().unwrap());
        child != 0
            && std::fs::read_to_string(format!("/proc/{child}/comm"))
                .is_ok_and(|c| c.trim() == comm)
    });
    child
}

#[test]
fn signals_are_passed_on_and_teardown_moves_the_command_back() {
    let Some(mut env) = Env::new("signal") else {
        return;
    };
    let c = env
        .cmd(&["exec", "vm:sig", "--", "sleep", "60"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let parent = c.id();
    env.children.push(c);
    let child = child_running(parent, "sleep");
    assert_eq!(cgroup_of_task(child, child), env.shown("vms/sig"));
    // The VM's groups were made as `vm add` makes them.
    for part in ["vcpu", "io"] {
        assert!(env.root.join("vms/sig").join(part).is_dir());
    }
    assert_eq!(env.state()["vms"], serde_json::json!(["sig"]));
    let why = run(&mut env.cmd(&["why", &child.to_string()]));
    assert!(why.stdout.contains("cgqos exec (uid 0)"), "{}", why.stdout);
    // Teardown puts it where it came from: this test's group.
    let r = run(&mut env.cmd(&["teardown"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let own = cgroup_of_task(std::process::id(), std::process::id());
    assert_eq!(cgroup_of_task(child, child), own);
    // SIGTERM to cgqos reaches the command; cgqos reports how it ended, as a shell would.
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(parent as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let status = env.children.pop().unwrap().wait().unwrap();
    assert_eq!(status.code(), Some(128 + libc::SIGTERM));
}

#[test]
fn without_clone3_cgqos_moves_itself_and_becomes_the_command() {
    let Some(env) = Env::new("fallback") else {
        return;
    };
    let mut c = env.cmd(&[
        "exec",
        "foreground",
        "--class",
        "urgent",
        "--",
        "sh",
        "-c",
        REPORT,
    ]);
    c.env("CGQOS_TEST_NO_CLONE3", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = c.spawn().unwrap();
    let cgqos_pid = child.id();
    let out = child.wait_with_output().unwrap();
    let r = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert_eq!(r.code, 0, "{}", r.stderr);
    let (pid, cgroup, nice, _) = report(&r);
    assert_eq!(
        pid, cgqos_pid,
        "the command is cgqos's own process: no parent left"
    );
    assert_eq!(cgroup, env.shown("chrome/foreground/urgent"));
    assert_eq!(nice, -8);
    let state = env.state();
    assert_eq!(state["why"][pid.to_string()]["class"], "urgent");
    assert!(
        state["tasks"][pid.to_string()]["process"] == true,
        "{state}"
    );
    // The exit status and a missing command, the same way.
    let mut c = env.cmd(&["exec", "background", "--", "sh", "-c", "exit 5"]);
    let r = run(c.env("CGQOS_TEST_NO_CLONE3", "1"));
    assert_eq!(r.code, 5, "{}", r.stderr);
    let mut c = env.cmd(&["exec", "background", "--", "cgqos-no-such-command"]);
    let r = run(c.env("CGQOS_TEST_NO_CLONE3", "1"));
    assert_eq!(r.code, 127, "{}", r.stderr);
}

/// `cgqos exec` through the daemon, as uid 54321 (no grant, RLIMIT_NICE as inherited).
fn unprivileged_exec(d: &Daemon, args: &[&str]) -> Run {
    let mut c = cgqos();
    c.arg("--socket")
        .arg(d.socket())
        .arg("exec")
        .args(args)
        .current_dir("/")
        .uid(UNPRIV_UID)
        .gid(UNPRIV_UID);
    run(&mut c)
}

#[test]
fn an_unprivileged_caller_goes_through_the_daemon_and_its_policy() {
    let config = "socket:\n  mode: \"0666\"\npolicy:\n  reserved:\n    - target: class:urgent\n      users: [12345]\n";
    // Debug: a move applied in full is logged at that level only.
    let Some(d) = Daemon::with("exec", config, None, &[], &[("CGQOS_LOG", "debug")]) else {
        return;
    };
    let shown = format!("/{}", d.root.file_name().unwrap().to_str().unwrap());
    let r = unprivileged_exec(&d, &["background", "--", "sh", "-c", REPORT]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let (pid, cgroup, _, _) = report(&r);
    assert_eq!(cgroup, format!("{shown}/chrome/background"));
    let log = d.log();
    assert!(log.contains(&pid.to_string()), "the daemon moved it: {log}");
    // A class reserved to someone else: the policy's exit code, and nothing runs.
    let r = unprivileged_exec(
        &d,
        &[
            "background",
            "--class",
            "urgent",
            "--",
            "sh",
            "-c",
            "echo RAN",
        ],
    );
    assert_eq!(r.code, 6, "{}", r.stderr);
    assert!(
        r.stderr.contains("class urgent is reserved"),
        "{}",
        r.stderr
    );
    assert!(!r.stdout.contains("RAN"), "{}", r.stdout);
    // Root through the daemon: the same request, and cgqos becomes the command.
    let r = run(cgqos()
        .arg("--socket")
        .arg(d.socket())
        .args(["exec", "ui", "--class", "urgent", "--", "sh", "-c", REPORT]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let (_, cgroup, nice, _) = report(&r);
    assert_eq!(cgroup, format!("{shown}/chrome/ui/urgent"));
    assert_eq!(nice, -8);
}
