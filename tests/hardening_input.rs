//! Hostile input (issue 8, sections 1 and 2): names that made the old glob matcher
//! backtrack for seconds, configuration files that are FIFOs, devices or huge, and error
//! messages that quoted files the caller could not read. The daemon tests need root and the
//! real cgroup2 mount (skipped with the reason otherwise); the CLI tests run anywhere.

mod common;
use common::daemon::*;
use common::*;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `cmd` and waits at most `limit` (a liveness bound: the commands here used to hang
/// for good or for seconds); a command still running then is killed and the test fails.
fn run_within(cmd: &mut Command, limit: Duration) -> Run {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mkfifo with a NUL-terminated path we own.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo");
}

/// Generous: these commands finish in milliseconds; before the fix they never did.
const QUICK: Duration = Duration::from_secs(10);

#[test]
fn validate_refuses_a_fifo_a_device_and_a_huge_file_at_once() {
    let d = tempfile::tempdir().unwrap();
    let fifo = d.path().join("model.yaml");
    mkfifo(&fifo);
    let r = run_within(cgqos().arg("validate").arg("--model").arg(&fifo), QUICK);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "{}: not a regular file (a FIFO): configuration files must be regular files",
            fifo.display()
        )),
        "{}",
        r.stderr
    );

    let r = run_within(cgqos().args(["validate", "--model", "/dev/zero"]), QUICK);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("/dev/zero: not a regular file (a character device)"),
        "{}",
        r.stderr
    );

    let big = d.path().join("big.yaml");
    std::fs::write(&big, "#".repeat(2 << 20)).unwrap();
    let r = run_within(cgqos().arg("validate").arg("--model").arg(&big), QUICK);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "{}: larger than the limit of 1048576 bytes for a configuration file",
            big.display()
        )),
        "{}",
        r.stderr
    );
}

#[test]
fn rules_check_refuses_a_fifo_and_an_overlong_glob() {
    let d = tempfile::tempdir().unwrap();
    let rules = d.path().join("rules.d");
    std::fs::create_dir(&rules).unwrap();
    std::fs::write(rules.join("10-ok.yaml"), "rules: []\n").unwrap();
    mkfifo(&rules.join("zz.yaml"));
    let r = run_within(
        cgqos()
            .args(["rules", "check", "--config-dir"])
            .arg(d.path()),
        QUICK,
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("zz.yaml:1:1: not a regular file (a FIFO)"),
        "{}",
        r.stderr
    );
    std::fs::remove_file(rules.join("zz.yaml")).unwrap();

    std::fs::write(
        rules.join("20-long.yaml"),
        format!(
            "rules:\n  - match: {{argv0: \"{}\"}}\n    class: utility\n",
            "*a".repeat(600)
        ),
    )
    .unwrap();
    let r = run_within(
        cgqos()
            .args(["rules", "check", "--config-dir"])
            .arg(d.path()),
        QUICK,
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains(
            "20-long.yaml:2:20: match.argv0: pattern of 1200 characters is longer than the limit of 1024"
        ),
        "{}",
        r.stderr
    );
}

/// `bash -c 'exec -a NAME sleep 60'`: a process whose argv[0] is NAME.
fn named_sleeper(name: &str) -> Child {
    Command::new("bash")
        .arg("-c")
        .arg(format!("exec -a {name} sleep 60"))
        .spawn()
        .unwrap()
}

struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn argv0(pid: u32) -> String {
    let c = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(c.split(|&b| b == 0).next().unwrap_or_default()).into_owned()
}

fn nice(pid: u32) -> i32 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &s[s.rfind(')').unwrap() + 2..];
    rest.split_whitespace().nth(16).unwrap().parse().unwrap()
}

/// A `where` request on a fresh connection, and how long the answer took.
fn timed_where(d: &Daemon, pid: u32) -> (String, Duration) {
    let started = Instant::now();
    let mut s = d.connect();
    let r = request(&mut s, &format!(r#"{{"v":1,"op":"where","pid":{pid}}}"#));
    (r, started.elapsed())
}

#[test]
fn a_pathological_name_does_not_hold_the_daemon() {
    // The issue's rule: stars separated by literals, which made the old matcher backtrack
    // exponentially on a long run of `a`.
    let rules =
        "rules:\n  - name: adversarial\n    match: {argv0: \"*a*a*a*b\"}\n    class: utility\n";
    let Some(d) = Daemon::with(
        "h1glob",
        "socket:\n  mode: \"0666\"\n",
        None,
        &[("rules.d/10-adversarial.yaml", rules)],
        &[],
    ) else {
        return;
    };
    // The issue's 600 `a`, and a name near the kernel's limit for one argument (128 KiB).
    let mut victims = Vec::new();
    for len in [600, 120_000] {
        let name = "a".repeat(len);
        let p = Reaped(named_sleeper(&name));
        let pid = p.0.id();
        wait_for("the exec of the named process", || argv0(pid) == name);
        victims.push(p);
    }
    // One that matches, to show the rule is live: it is classified (nice 1).
    let matching = Reaped(named_sleeper(&format!("{}b", "a".repeat(600))));
    let mpid = matching.0.id();
    wait_for(
        "the matching process classified as utility (nice 1)",
        || nice(mpid) == 1,
    );
    for v in &victims {
        let pid = v.0.id();
        let (r, took) = timed_where(&d, pid);
        eprintln!(
            "where {pid} (argv[0] of {} characters): {took:?}",
            argv0(pid).len()
        );
        assert!(r.contains("\"ok\":true"), "{r}");
        // Liveness bound from the issue (target 100 ms); 1 s keeps a loaded machine from
        // failing the test, and is still 17 times less than the old matcher took.
        assert!(took < Duration::from_secs(1), "where took {took:?}");
        assert_eq!(
            nice(pid),
            0,
            "a process the rule does not match is untouched"
        );
    }
    // A reload re-matches every running process: the daemon answers right after it.
    let mut s = d.connect();
    let r = request(&mut s, r#"{"v":1,"op":"reload"}"#);
    assert!(r.contains("\"reloaded\":true"), "{r}");
    let (r, took) = timed_where(&d, victims[1].0.id());
    assert!(
        r.contains("\"ok\":true") && took < Duration::from_secs(1),
        "{r} {took:?}"
    );
}

#[test]
fn a_fifo_in_rules_d_does_not_wedge_the_daemon() {
    let rules = "rules: []\n";
    let Some(mut d) = Daemon::with(
        "h1fifo",
        "socket:\n  mode: \"0666\"\n",
        None,
        &[("rules.d/10-empty.yaml", rules)],
        &[],
    ) else {
        return;
    };
    let fifo = d.dir.path().join("conf/rules.d/zz.yaml");
    mkfifo(&fifo);
    // The inotify reload is refused with the path; the old configuration stays.
    let want = format!(
        "{}:1:1: not a regular file (a FIFO): configuration files must be regular files",
        fifo.display()
    );
    wait_for("the refused reload in the log", || d.log().contains(&want));
    let mut s = d.connect();
    assert!(request(&mut s, r#"{"v":1,"op":"ping"}"#).contains("pong"));
    let r = request(&mut s, r#"{"v":1,"op":"reload"}"#);
    assert!(r.contains("invalid_config") && r.contains(&want), "{r}");
    let me = std::process::id();
    let (r, took) = timed_where(&d, me);
    // Liveness bound (generous, see above).
    assert!(
        r.contains("\"ok\":true") && took < Duration::from_secs(1),
        "{r} {took:?}"
    );
    // SIGTERM still stops it.
    let mut child = d.child.take().unwrap();
    // SAFETY: kill on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < QUICK,
            "the daemon ignored SIGTERM: {}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    d.child = None;
}

/// Not a test: sends `CGQOS_TEST_REQUEST` to `CGQOS_TEST_SOCKET` and prints the reply; run as
/// an unprivileged user by the test below.
#[test]
#[ignore = "helper process for the hardening tests"]
fn hardening_client() {
    let (Ok(socket), Ok(line)) = (
        std::env::var("CGQOS_TEST_SOCKET"),
        std::env::var("CGQOS_TEST_REQUEST"),
    ) else {
        return;
    };
    let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    println!("REPLY {}", request(&mut s, &line));
}

fn unprivileged_request(d: &Daemon, line: &str) -> String {
    let out = child_test_command(&std::env::current_exe().unwrap(), "hardening_client")
        .env("CGQOS_TEST_SOCKET", d.socket())
        .env("CGQOS_TEST_REQUEST", line)
        .uid(UNPRIV_UID)
        .gid(UNPRIV_UID)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.split("REPLY ")
        .nth(1)
        .and_then(|r| r.lines().next())
        .unwrap_or_else(|| panic!("no reply: {text} {}", String::from_utf8_lossy(&out.stderr)))
        .to_string()
}

#[test]
fn reload_errors_quote_only_files_the_caller_may_read() {
    // uid 54321 is a non-root admin: it may reload.
    let config =
        format!("socket:\n  mode: \"0666\"\npolicy:\n  admin:\n    users: [{UNPRIV_UID}]\n");
    let Some(d) = Daemon::with(
        "h1quote",
        &config,
        None,
        &[("rules.d/10-ok.yaml", "rules: []\n")],
        &[],
    ) else {
        return;
    };
    // A secret only root may read (like /etc/shadow), linked into rules.d, whose content an
    // error message would quote.
    let secret_dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(secret_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let secret = secret_dir.path().join("shadow");
    std::fs::write(
        &secret,
        "rules:\n  - match: {argv0: x}\n    class: SECRET-hunter2\n",
    )
    .unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let link = d.dir.path().join("conf/rules.d/50-link.yaml");
    std::os::unix::fs::symlink(&secret, &link).unwrap();
    wait_for("the refused reload in the log", || {
        d.log().contains("SECRET-hunter2")
    });
    // The non-root admin learns where, not what.
    let r = unprivileged_request(&d, r#"{"v":1,"op":"reload"}"#);
    assert!(r.contains("invalid_config"), "{r}");
    assert!(!r.contains("SECRET"), "{r}");
    assert!(
        r.contains(&format!(
            "{}:3:12: invalid configuration; the message quotes {}, which uid {UNPRIV_UID} may not read: see the daemon's log",
            link.display(),
            link.display()
        )),
        "{r}"
    );
    // Root sees everything.
    let mut s = d.connect();
    let r = request(&mut s, r#"{"v":1,"op":"reload"}"#);
    assert!(r.contains("unknown class \\\"SECRET-hunter2\\\""), "{r}");
    // A file the admin may read itself: the whole message.
    std::fs::remove_file(&link).unwrap();
    let open = d.dir.path().join("conf/rules.d/60-open.yaml");
    std::fs::write(
        &open,
        "rules:\n  - match: {argv0: x}\n    class: warp-speed\n",
    )
    .unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    let r = unprivileged_request(&d, r#"{"v":1,"op":"reload"}"#);
    assert!(
        r.contains("60-open.yaml:3:12: unknown class \\\"warp-speed\\\""),
        "{r}"
    );
    // The old configuration stayed in force throughout.
    let mut s = d.connect();
    assert!(request(&mut s, r#"{"v":1,"op":"ping"}"#).contains("pong"));
}
