//! The command line's own behaviour (issue 8 §7, issue 9): no command ends in a panic
//! whatever stdout is, errors are one line (and JSON with --json), environment variables
//! behave like their flags, status has an exit code scripts can use, and names typed wrong
//! get a suggestion. Runs on fake trees (no root needed) except where it says so.

mod common;
use common::*;

use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The directories `setup --board trogdor` makes, as `plan` lists them (computed once).
fn planned_dirs() -> &'static [String] {
    static DIRS: OnceLock<Vec<String>> = OnceLock::new();
    DIRS.get_or_init(|| {
        let r = run(cgqos()
            .args(["plan", "--json", "--board", "trogdor", "--sysfs-root"])
            .arg(fixture("trogdor")));
        json(&r)["steps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["op"] == "mkdir")
            .map(|s| s["path"].as_str().unwrap().to_string())
            .collect()
    })
}

/// A fake cgroup tree with every planned group, a state directory and a configuration
/// directory, and the options that point cgqos at them.
struct Env {
    fake: FakeCgroup,
    dir: tempfile::TempDir,
}

impl Env {
    fn new(controllers: &[&'static str]) -> Env {
        let fake = FakeCgroup::new(controllers, false);
        for d in planned_dirs() {
            fake.group(d, false);
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("conf")).unwrap();
        Env { fake, dir }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = cgqos();
        c.args(args)
            .args(["--board", "trogdor", "--allow-non-cgroupfs", "--sysfs-root"])
            .arg(fixture("trogdor"))
            .arg("--cgroup-root")
            .arg(self.fake.root())
            .arg("--state-dir")
            .arg(self.dir.path().join("state"))
            .arg("--config-dir")
            .arg(self.dir.path().join("conf"));
        c
    }

    fn run(&self, args: &[&str]) -> Run {
        run(&mut self.cmd(args))
    }
}

/// A process of our own to name in commands, killed on drop. It sleeps far longer than any
/// test runs (a 60 s sleep ran out on a loaded machine, and the moves then met exit 3).
struct Sleeper(std::process::Child);

impl Sleeper {
    fn new() -> Sleeper {
        Sleeper(Command::new("sleep").arg("86400").spawn().unwrap())
    }
    fn pid(&self) -> String {
        self.0.id().to_string()
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Where the child's stdout goes.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Out {
    /// A pipe we read (the reference run).
    Piped,
    /// A pipe whose reading end is closed before the child starts: every write is EPIPE, as
    /// in `cgqos plan | head -1` once head has exited.
    ClosedPipe,
    /// `/dev/full`: every write is ENOSPC.
    Full,
    /// File descriptor 1 closed.
    Closed,
}

fn run_with(mut cmd: Command, out: Out) -> Run {
    match out {
        Out::Piped => {}
        Out::ClosedPipe => {
            let mut fds = [0; 2];
            // SAFETY: `fds` is a valid array of two ints for pipe(2) to fill.
            assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
            // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
            let (read, write) =
                unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
            drop(read);
            cmd.stdout(Stdio::from(write));
        }
        Out::Full => {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/full")
                .unwrap();
            cmd.stdout(Stdio::from(f));
        }
        Out::Closed => {
            // SAFETY: close(2) is async-signal-safe; the child only closes its own fd 1.
            unsafe {
                cmd.pre_exec(|| {
                    libc::close(1);
                    Ok(())
                });
            }
        }
    }
    run(&mut cmd)
}

/// Every subcommand (and help), each as (preparation commands, the command). Placeholders:
/// PID (a sleeping process of ours), TID (its only thread); the preparation `fake-vm` makes
/// the groups of VM t1 as the kernel would on mkdir (the fake does not).
const CASES: &[(&[&[&str]], &[&str])] = &[
    (&[], &["detect"]),
    (&[], &["detect", "--no-board"]),
    (&[], &["validate"]),
    (&[], &["plan"]),
    (&[], &["setup"]),
    (&[], &["setup", "--dry-run"]),
    (&[&["setup"]], &["status"]),
    (&[], &["status"]),
    (&[&["setup"]], &["move", "PID", "background"]),
    (&[&["setup"]], &["move", "--thread", "TID", "urgent"]),
    (&[], &["move", "PID", "nowhere"]),
    (&[], &["where", "PID"]),
    (&[&["setup"], &["fake-vm"]], &["vm", "add", "t1"]),
    (&[&["setup"]], &["vm", "list"]),
    (
        &[&["setup"], &["fake-vm"], &["vm", "add", "t1"]],
        &["vm", "remove", "t1"],
    ),
    (
        &[&["setup"]],
        &["restrict", "background", "background", "--quota", "50"],
    ),
    (&[], &["rules", "check"]),
    (&[], &["why", "PID"]),
    (&[&["setup"]], &["reset"]),
    (&[&["setup"]], &["teardown"]),
    (&[], &["daemon", "--json"]),
    (&[], &["--help"]),
    (&[], &["--version"]),
    (&[], &["help", "move"]),
    (&[], &["move", "-h"]),
    (&[], &["vm", "--help"]),
    (&[], &["rules", "-h"]),
    (&[], &["restrict", "-h"]),
    (&[], &["no-such-command"]),
    (&[], &["completions", "bash"]),
    (&[], &["manpage"]),
    (&[], &["manpage", "--list"]),
    (&[&["setup"]], &["top", "--once", "--interval", "0.1"]),
];

fn substitute(args: &[&str], pid: &str) -> Vec<String> {
    args.iter()
        .map(|a| match *a {
            "PID" | "TID" => pid.to_string(),
            other => other.to_string(),
        })
        .collect()
}

fn case_run(prep: &[&[&str]], args: &[&str], json: bool, out: Out, pid: &str) -> Run {
    let env = Env::new(&["cpu"]);
    for p in prep {
        if p == &["fake-vm"] {
            for g in ["vms/t1", "vms/t1/vcpu", "vms/t1/io"] {
                env.fake.group(g, g != "vms/t1");
            }
            continue;
        }
        let r = env.run(p);
        assert!(r.code == 0, "preparation {p:?}: {}", r.stderr);
    }
    let mut full: Vec<String> = substitute(args, pid);
    if json {
        full.push("--json".into());
    }
    let refs: Vec<&str> = full.iter().map(String::as_str).collect();
    run_with(env.cmd(&refs), out)
}

/// Started with fd 1 closed, the next file opened would get that number and receive the
/// report (the state lock, a cgroup file). Rust's runtime reopens closed standard descriptors
/// on /dev/null before main; this pins that nothing cgqos opens takes fd 1.
#[test]
fn a_closed_stdout_is_not_reused_for_the_files_cgqos_opens() {
    let env = Env::new(&["cpu"]);
    let r = run_with(env.cmd(&["setup", "--json"]), Out::Closed);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let state = env.dir.path().join("state");
    assert_eq!(
        std::fs::read(state.join("lock")).unwrap(),
        b"",
        "the lock file stays empty"
    );
    let text = std::fs::read_to_string(state.join("state.json")).unwrap();
    serde_json::from_str::<serde_json::Value>(&text).expect("the state file is only the state");
}

#[test]
fn every_command_survives_a_closed_or_full_stdout() {
    let sleeper = Sleeper::new();
    let pid = sleeper.pid();
    // A few cases at a time: each is independent (its own fake tree and state).
    std::thread::scope(|s| {
        for chunk in CASES.chunks(CASES.len().div_ceil(4)) {
            let pid = &pid;
            s.spawn(move || {
                for (prep, args) in chunk {
                    for json in [false, true] {
                        check_outputs(prep, args, json, pid);
                    }
                }
            });
        }
    });
}

fn check_outputs(prep: &[&[&str]], args: &[&str], json: bool, pid: &str) {
    let what = format!("{args:?}{}", if json { " --json" } else { "" });
    let base = case_run(prep, args, json, Out::Piped, pid);
    assert!(
        base.code != 101 && !base.stderr.contains("panicked"),
        "{what} panicked: {}",
        base.stderr
    );
    for out in [Out::ClosedPipe, Out::Full, Out::Closed] {
        let r = case_run(prep, args, json, out, pid);
        assert!(
            r.code != 101 && !r.stderr.contains("panicked"),
            "{what} with stdout {out:?} panicked: {}",
            r.stderr
        );
        match out {
            // A reader that went away is not an error: same status, nothing said.
            Out::ClosedPipe | Out::Closed => {
                assert_eq!(
                    r.code, base.code,
                    "{what} with stdout {out:?}: {}",
                    r.stderr
                );
                assert!(
                    !r.stderr.contains("Broken pipe") && !r.stderr.contains("os error 32"),
                    "{what} with stdout {out:?}: {}",
                    r.stderr
                );
            }
            // A failed write: exit 1 and one line saying so, unless the command failed
            // anyway (its own code then wins) or printed nothing.
            Out::Full => {
                if base.code == 0 && !base.stdout.is_empty() {
                    assert_eq!(r.code, 1, "{what} on /dev/full: {}", r.stderr);
                    let lines: Vec<&str> = r
                        .stderr
                        .lines()
                        .filter(|l| l.contains("No space left on device"))
                        .collect();
                    assert_eq!(lines.len(), 1, "{what} on /dev/full: {}", r.stderr);
                    assert!(lines[0].starts_with("cgqos: writing the "), "{}", lines[0]);
                } else {
                    assert_eq!(r.code, base.code, "{what} on /dev/full: {}", r.stderr);
                }
            }
            Out::Piped => unreachable!(),
        }
    }
}

#[test]
fn every_command_and_argument_has_a_description() {
    use clap::CommandFactory;
    let cmd = cgqos::cli::Cli::command();
    cmd.clone().debug_assert();
    fn walk(c: &clap::Command, path: &str) {
        if c.get_name() != "help" {
            assert!(
                c.get_about()
                    .is_some_and(|a| !a.to_string().trim().is_empty()),
                "`{path}` has no description"
            );
            for a in c.get_positionals() {
                assert!(
                    a.get_help()
                        .is_some_and(|h| !h.to_string().trim().is_empty()),
                    "`{path}` argument {} has no description",
                    a.get_id()
                );
            }
        }
        for sub in c.get_subcommands() {
            walk(sub, &format!("{path} {}", sub.get_name()));
        }
    }
    for sub in cmd.get_subcommands() {
        walk(sub, sub.get_name());
    }
    // The usage line of move names both forms.
    let r = run(cgqos().args(["move", "-h"]));
    assert!(
        r.stdout.contains("cgqos move [OPTIONS] PID... GROUP"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("cgqos move --thread [OPTIONS] TID... CLASS"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("<ID... GROUP>"), "{}", r.stdout);
}

#[test]
fn json_errors_are_on_stdout_once() {
    let r = run(cgqos().args(["move", "1", "forground", "--json"]));
    assert_eq!(r.code, 2);
    let j = json(&r);
    assert_eq!(j["error"]["exit"], 2);
    assert_eq!(j["error"]["kind"], "bad_input");
    let m = j["error"]["message"].as_str().unwrap();
    assert!(m.contains("did you mean \"foreground\""), "{m}");
    // Also one line on stderr for a human.
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);

    // A usage error clap reports.
    let r = run(cgqos().args(["plan", "--json", "--bogus"]));
    assert_eq!(r.code, 2);
    assert_eq!(json(&r)["error"]["kind"], "bad_input");

    // A command that printed its report and then failed prints no second JSON document.
    let env = Env::new(&["cpu"]);
    std::fs::remove_dir_all(env.fake.root().join("chrome/background/urgent")).unwrap();
    let r = env.run(&["status", "--json"]);
    assert_eq!(r.code, 8, "{}", r.stderr);
    assert_eq!(json(&r)["in_sync"], false);
}

#[test]
fn a_failure_for_one_id_is_printed_once() {
    let env = Env::new(&["cpu"]);
    assert_eq!(env.run(&["setup"]).code, 0);
    // An id no process can have (above the kernel's pid_max limit of 2^22).
    let r = env.run(&["move", "99999999", "background"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    let lines = r
        .stderr
        .lines()
        .chain(r.stdout.lines())
        .filter(|l| l.contains("99999999"))
        .count();
    assert_eq!(lines, 1, "stdout: {}\nstderr: {}", r.stdout, r.stderr);
    assert!(
        r.stdout.starts_with("99999999: not moved: "),
        "{}",
        r.stdout
    );
    assert!(
        !r.stderr.contains("WARN") && !r.stderr.contains("warning"),
        "{}",
        r.stderr
    );
    // With --json the failure is in the report only.
    let r = env.run(&["move", "99999999", "background", "--json"]);
    assert_eq!(r.code, 3);
    assert_eq!(json(&r)[0]["ok"], false);
    assert!(!r.stderr.contains("99999999"), "{}", r.stderr);
}

#[test]
fn verbose_and_quiet_set_the_log_level_and_lines_have_no_timestamps() {
    // The fake offers no cpuset controller: setup warns that settings are unsupported.
    let env = Env::new(&["cpu"]);
    let r = env.run(&["setup"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("cgqos: warning: "), "{}", r.stderr);
    let timestamp = regex_like_rfc3339;
    assert!(!r.stderr.lines().any(timestamp), "{}", r.stderr);

    let env = Env::new(&["cpu"]);
    let r = env.run(&["setup", "-q"]);
    assert_eq!(r.code, 0);
    assert_eq!(r.stderr, "", "-q keeps warnings out");

    let env = Env::new(&["cpu"]);
    let r = env.run(&["-v", "setup"]);
    assert!(r.stderr.contains("cgqos: info: "), "{}", r.stderr);
    assert!(!r.stderr.lines().any(timestamp), "{}", r.stderr);

    // -v wins over CGQOS_LOG; -vv reaches debug.
    let env = Env::new(&["cpu"]);
    let r = run(env.cmd(&["setup", "-vv"]).env("CGQOS_LOG", "error"));
    assert!(r.stderr.contains("cgqos: debug: "), "{}", r.stderr);

    // The error that ends a command is printed even with -qq.
    let r = run(cgqos().args(["-qq", "move", "1", "nowhere"]));
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("unknown group"), "{}", r.stderr);
}

/// `2026-11-30T22:45:46` anywhere in the line.
fn regex_like_rfc3339(line: &str) -> bool {
    let b = line.as_bytes();
    b.windows(19).any(|w| {
        w.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            _ => c.is_ascii_digit(),
        })
    })
}

#[test]
fn environment_variables_behave_like_their_flags() {
    // Empty means unset, as `CGQOS_SKU=` in an EnvironmentFile.
    let r = run(cgqos()
        .args(["plan", "--json", "--sysfs-root"])
        .arg(fixture("trogdor"))
        .env("CGQOS_SKU", "")
        .env("CGQOS_BOARDS_DIR", "")
        .env("CGQOS_MODEL", "")
        .env("CGQOS_DIRECT", ""));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(json(&r)["board"], "default");
    // An empty path variable falls back to the default instead of "".
    let r = run(cgqos()
        .args(["detect", "--json"])
        .env("CGQOS_SYSFS_ROOT", ""));
    assert_ne!(r.code, 101);
    assert!(!r.stderr.contains("invalid value"), "{}", r.stderr);

    // Switches take the usual words.
    for v in ["1", "0", "true", "false", "yes", "no", "on", "off", "YES"] {
        let r = run(cgqos()
            .args(["plan", "--sysfs-root"])
            .arg(fixture("trogdor"))
            .env("CGQOS_DIRECT", v));
        assert_eq!(r.code, 0, "CGQOS_DIRECT={v}: {}", r.stderr);
    }
    let r = run(cgqos()
        .args(["plan", "--sysfs-root"])
        .arg(fixture("trogdor"))
        .env("CGQOS_DIRECT", "maybe"));
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("CGQOS_DIRECT") || r.stderr.contains("--direct"),
        "{}",
        r.stderr
    );

    // 0 / no really turn a switch off: the fake root is then refused as not cgroup2.
    let env = Env::new(&["cpu"]);
    for v in ["0", "no", "false"] {
        let mut c = cgqos();
        c.args(["setup", "--dry-run", "--board", "trogdor", "--sysfs-root"])
            .arg(fixture("trogdor"))
            .arg("--cgroup-root")
            .arg(env.fake.root())
            .env("CGQOS_ALLOW_NON_CGROUPFS", v);
        let r = run(&mut c);
        assert_eq!(r.code, 2, "CGQOS_ALLOW_NON_CGROUPFS={v}: {}", r.stderr);
        assert!(r.stderr.contains("not on a cgroup2"), "{}", r.stderr);
    }
    let mut c = cgqos();
    c.args(["setup", "--dry-run", "--board", "trogdor", "--sysfs-root"])
        .arg(fixture("trogdor"))
        .arg("--cgroup-root")
        .arg(env.fake.root())
        .env("CGQOS_ALLOW_NON_CGROUPFS", "yes");
    assert_eq!(run(&mut c).code, 0);

    // The daemon's switch parses the same way (the command is then refused for --json,
    // before it would start).
    let r = run(cgqos()
        .args(["daemon", "--json"])
        .env("CGQOS_RESET_ON_EXIT", "yes"));
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("--json does not apply"), "{}", r.stderr);
}

#[test]
fn boards_dir_must_exist() {
    let r = run(cgqos()
        .args([
            "plan",
            "--boards-dir",
            "/nonexistent/boards",
            "--sysfs-root",
        ])
        .arg(fixture("trogdor")));
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("--boards-dir /nonexistent/boards"),
        "{}",
        r.stderr
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    let r = run(cgqos()
        .args(["plan", "--sysfs-root"])
        .arg(fixture("trogdor"))
        .arg("--boards-dir")
        .arg(file.path()));
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("not a directory"), "{}", r.stderr);
}

#[test]
fn names_typed_wrong_get_a_suggestion() {
    let r = run(cgqos()
        .args(["plan", "--board", "trogdr", "--sysfs-root"])
        .arg(fixture("trogdor")));
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("did you mean \"trogdor\""),
        "{}",
        r.stderr
    );

    let conf = tempfile::tempdir().unwrap();
    let thread = |class: &str| {
        run(cgqos()
            .args(["move", "--thread", "1", class, "--config-dir"])
            .arg(conf.path()))
    };
    let r = thread("urgnt");
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("did you mean \"urgent\""), "{}", r.stderr);
    let r = thread("foreground");
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("is a group"), "{}", r.stderr);

    // A thread class given to a whole-process move points at --thread: built-in names and
    // classes only rules.d knows.
    for class in ["urgent", "non-urgent", "balanced"] {
        let r = run(cgqos()
            .args(["move", "1", class, "--config-dir"])
            .arg(conf.path()));
        assert_eq!(r.code, 2, "{class}");
        assert!(r.stderr.contains("move --thread"), "{class}: {}", r.stderr);
    }
}

#[test]
fn status_exit_code_tells_whether_the_tree_is_in_sync() {
    let env = Env::new(&["cpu"]);
    // Before setup the planned values are not there.
    assert_eq!(env.run(&["status"]).code, 8);
    assert_eq!(env.run(&["setup"]).code, 0);
    // Settings the kernel lacks (no cpuset here) do not count against it.
    let r = env.run(&["status"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    std::fs::write(env.fake.root().join("chrome/ui/cpu.weight"), "7\n").unwrap();
    let r = env.run(&["status"]);
    assert_eq!(r.code, 8);
    assert!(r.stdout.contains("NOT in sync"), "{}", r.stdout);
    assert!(r.stdout.contains("differs: 7"), "{}", r.stdout);
}

#[test]
fn status_refuses_a_root_outside_cgroup2() {
    let dir = tempfile::tempdir().unwrap();
    let r = run(cgqos()
        .args(["status", "--sysfs-root"])
        .arg(fixture("trogdor"))
        .arg("--cgroup-root")
        .arg(dir.path()));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("is not on a cgroup2 filesystem"),
        "{}",
        r.stderr
    );
}

/// Real kernel, no root needed: status only reads. A root that does not exist yet inside the
/// cgroup2 mount passes the check (as for setup) and reports missing groups, exit 8.
#[test]
fn status_accepts_a_root_inside_cgroup2() {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let Some(mount) = cgqos::cgroupfs::cgroup2_mounts(&mountinfo)
        .into_iter()
        .find(|m| m.root == "/")
    else {
        eprintln!("skipped: no cgroup2 mount found in /proc/self/mountinfo");
        return;
    };
    let root = mount
        .dir
        .join(format!("cgqos-test-robust-absent-{}", std::process::id()));
    let r = run(cgqos()
        .args(["status", "--json", "--sysfs-root"])
        .arg(fixture("trogdor"))
        .arg("--cgroup-root")
        .arg(&root));
    assert_eq!(r.code, 8, "{}", r.stderr);
    assert_eq!(json(&r)["groups"][0]["exists"], false);
    assert!(!root.exists());
}

#[test]
fn restrict_writes_weight_and_quota_and_is_recorded() {
    let env = Env::new(&["cpu"]);
    assert_eq!(env.run(&["setup"]).code, 0);
    let full: u32 = env
        .fake
        .read("chrome/ui/cpu.weight")
        .trim()
        .parse()
        .unwrap();
    let r = env.run(&["restrict", "ui", "background", "--quota", "50", "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let j = json(&r);
    assert_eq!(j["group"], "chrome/ui");
    assert_eq!(j["cpu_weight"], (full / 16).max(1));
    assert_eq!(j["cpu_max"], "50000 100000");
    assert_eq!(env.fake.read("chrome/ui/cpu.max"), "50000 100000");
    assert_eq!(
        env.fake.read("chrome/ui/cpu.weight"),
        ((full / 16).max(1)).to_string()
    );
    let state = recorded_state(&env.dir.path().join("state"));
    assert!(state["restrictions"]["chrome/ui"].is_object(), "{state}");
    // Text form, and back to foreground without a quota.
    let r = env.run(&["restrict", "chrome/ui", "foreground"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("chrome/ui: cpu.weight"), "{}", r.stdout);
    assert!(r.stdout.contains("no quota"), "{}", r.stdout);
    assert_eq!(env.fake.read("chrome/ui/cpu.max"), "max 100000");

    // Bad input: a VM part, a state clap does not know, a quota out of range.
    assert_eq!(env.run(&["restrict", "arcvm-vcpu", "background"]).code, 2);
    assert_eq!(env.run(&["restrict", "ui", "medium"]).code, 2);
    assert_eq!(
        env.run(&["restrict", "ui", "background", "--quota", "0"])
            .code,
        2
    );
    // No cpu controller: the kernel lacks what it needs.
    let bare = Env::new(&[]);
    assert_eq!(bare.run(&["setup"]).code, 0);
    let r = bare.run(&["restrict", "ui", "background"]);
    assert_eq!(r.code, 5, "{}", r.stderr);
}

#[test]
fn daemon_refuses_json() {
    let r = run(cgqos().args(["daemon", "--json"]));
    assert_eq!(r.code, 2);
    assert_eq!(json(&r)["error"]["kind"], "bad_input");
}

/// Real uid: an unprivileged `move` with no daemon is told it needs root or the daemon.
#[test]
fn an_unprivileged_move_without_a_daemon_says_what_it_needs() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "skipped: not root (the test runs cgqos as uid {})",
            common::daemon::UNPRIV_UID
        );
        return;
    }
    let env = Env::new(&["cpu"]);
    // The state directory's parent is root's and not writable by others, as /run is.
    let parent: PathBuf = env.dir.path().to_path_buf();
    std::fs::set_permissions(&parent, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let sleeper = Sleeper::new();
    let uid = common::daemon::UNPRIV_UID;
    let r = run(env
        .cmd(&["move", &sleeper.pid(), "background"])
        .uid(uid)
        .gid(uid));
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(r.stderr.contains("needs root"), "{}", r.stderr);
    assert!(r.stderr.contains("daemon"), "{}", r.stderr);
    assert!(
        r.stderr.contains("/nonexistent/cgqos-test.sock"),
        "{}",
        r.stderr
    );
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(!Path::new(&parent.join("state")).exists());
}

/// Real kernel and a real daemon (root): `restrict` and `status` through the socket give the
/// same codes as directly. This host may lack the cpu controller: then restrict is exit 5.
#[test]
fn restrict_and_status_through_the_daemon() {
    let Some(d) = common::daemon::Daemon::new("robust-cli", "socket:\n  mode: \"0666\"\n", None)
    else {
        return;
    };
    let r = d.cli(&["status", "--json"]);
    let in_sync = json(&r)["in_sync"] == true;
    assert_eq!(r.code, if in_sync { 0 } else { 8 }, "{}", r.stderr);

    let r = d.cli(&[
        "restrict",
        "background",
        "background",
        "--quota",
        "50",
        "--json",
    ]);
    if d.root.join("chrome/background/cpu.weight").exists() {
        assert_eq!(r.code, 0, "{}", r.stderr);
        let j = json(&r);
        assert_eq!(j["group"], "chrome/background");
        assert_eq!(j["cpu_max"], "50000 100000");
        // The restriction is in force, not the plan: status says so in its exit status.
        assert_eq!(d.cli(&["status"]).code, 8);
    } else {
        assert_eq!(r.code, 5, "{}", r.stderr);
        assert_eq!(json(&r)["error"]["kind"], "unsupported");
        assert!(r.stderr.contains("no cpu controller"), "{}", r.stderr);
    }
    let r = d.cli(&["restrict", "arcvm-io", "background"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
}

/// detect's report lists the topology's warnings; they are not logged on stderr as well.
#[test]
fn detect_warnings_are_printed_once() {
    let r = run(cgqos()
        .args(["detect", "--sysfs-root"])
        .arg(fixture("bad-values")));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("warning: "), "{}", r.stdout);
    assert!(!r.stderr.contains("warning"), "{}", r.stderr);
}
