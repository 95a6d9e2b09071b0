//! Issue 8, section 4: a caller gets only what it could do itself, unless the policy grants
//! more. A real daemon on a sub-root of the real cgroup2 mount (root only; skipped with the
//! reason otherwise), and a real unprivileged caller (uid 54321) whose own process is the
//! target; the kernel's verdict on the same change, made by the caller itself, is recorded
//! beside the daemon's.

mod common;
use common::daemon::*;
use common::*;

use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Classes defined in rules.d: real time, and nice values just within and beyond an
/// RLIMIT_NICE of 25 (which allows down to -5).
const RULES: &str = "classes:\n  rt50: {cgroup-class: urgent, policy: fifo, priority: 50}\n  nice5: {nice: -5}\n  nice6: {nice: -6}\n  normal: {policy: other}\n";

const OPEN: &str = "socket:\n  mode: \"0666\"\n";

fn daemon(tag: &str, config: &str) -> Option<Daemon> {
    Daemon::with(
        tag,
        config,
        None,
        &[("rules.d/10-classes.yaml", RULES)],
        &[],
    )
}

/// What one step of the caller left behind: the daemon's reply (or the errno of the
/// caller's own system call, 0 for success), and its process's nice and policy after it.
struct Step {
    reply: String,
    nice: i32,
    policy: u32,
}

impl Step {
    /// The outcome for the one target (move_threads and move reply a list).
    fn target(&self) -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_str(&self.reply)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.reply));
        assert_eq!(v["ok"], true, "{}", self.reply);
        v["result"][0].clone()
    }

    fn allowed(&self) -> bool {
        self.target()["ok"] == true
    }

    fn denial(&self) -> String {
        let t = self.target();
        assert_eq!(t["code"], "denied", "{}", self.reply);
        t["error"].as_str().unwrap().to_string()
    }
}

/// Runs `steps` as uid/gid 54321 with RLIMIT_NICE `nice_limit` (soft and hard), against a
/// sleeping process of its own: `move:GROUP`, `threads:CLASS` (through the daemon),
/// `renice:N` and `fifo:P` (the caller itself, with setpriority / sched_setscheduler).
fn as_caller(d: &Daemon, nice_limit: u64, steps: &[&str]) -> Vec<Step> {
    let mut cmd = child_test_command(&std::env::current_exe().unwrap(), "caller");
    cmd.env("CGQOS_TEST_SOCKET", d.socket())
        .env("CGQOS_TEST_STEPS", steps.join(","));
    // SAFETY: only async-signal-safe calls (setrlimit, setgroups, setgid, setuid) between
    // fork and exec. The limit is set while still root: an unprivileged process cannot
    // raise its hard limit; then the identity is dropped, groups first, uid last.
    unsafe {
        cmd.pre_exec(move || {
            let r = libc::rlimit {
                rlim_cur: nice_limit,
                rlim_max: nice_limit,
            };
            if libc::setrlimit(libc::RLIMIT_NICE, &r) != 0
                || libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(UNPRIV_UID) != 0
                || libc::setuid(UNPRIV_UID) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let steps: Vec<Step> = text
        .lines()
        // The first line follows the harness's `test caller ... ` on the same line.
        .filter_map(|l| l.split_once("STEP ").map(|(_, step)| step))
        .map(|l| {
            let (rest, policy) = l.rsplit_once(" POLICY ").unwrap();
            let (reply, nice) = rest.rsplit_once(" NICE ").unwrap();
            Step {
                reply: reply.to_string(),
                nice: nice.parse().unwrap(),
                policy: policy.parse().unwrap(),
            }
        })
        .collect();
    assert!(
        !steps.is_empty(),
        "the caller ran no step: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    steps
}

/// Not a test: the unprivileged caller run by `as_caller`.
#[test]
#[ignore = "helper process for the privilege tests"]
fn caller() {
    let (Ok(socket), Ok(steps)) = (
        std::env::var("CGQOS_TEST_SOCKET"),
        std::env::var("CGQOS_TEST_STEPS"),
    ) else {
        return;
    };
    let mut own = Command::new("sleep").arg("30").spawn().unwrap();
    let pid = own.id();
    let mut s = UnixStream::connect(&socket).unwrap();
    for step in steps.split(',') {
        let (op, arg) = step.split_once(':').unwrap();
        let reply = match op {
            "move" => request(
                &mut s,
                &format!(r#"{{"v":1,"op":"move","group":"{arg}","targets":[{{"id":{pid}}}]}}"#),
            ),
            "threads" => request(
                &mut s,
                &format!(
                    r#"{{"v":1,"op":"move_threads","class":"{arg}","targets":[{{"id":{pid}}}]}}"#
                ),
            ),
            "renice" => {
                // SAFETY: setpriority on our own child; no memory is passed.
                let rc =
                    unsafe { libc::setpriority(libc::PRIO_PROCESS, pid, arg.parse().unwrap()) };
                errno_of(rc)
            }
            "fifo" => {
                let p = libc::sched_param {
                    sched_priority: arg.parse().unwrap(),
                };
                // SAFETY: `p` is a valid sched_param the kernel only reads.
                let rc = unsafe { libc::sched_setscheduler(pid as i32, libc::SCHED_FIFO, &p) };
                errno_of(rc)
            }
            other => panic!("unknown step {other}"),
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 1..]
            .split_whitespace()
            .collect();
        // Fields 19 (nice) and 41 (policy), counted from the state, field 3.
        println!(
            "STEP {} NICE {} POLICY {}",
            reply.trim_end(),
            fields[16],
            fields[38]
        );
    }
    own.kill().unwrap();
    own.wait().unwrap();
}

fn errno_of(rc: i32) -> String {
    if rc == 0 {
        "0".into()
    } else {
        std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap()
            .to_string()
    }
}

#[test]
fn without_a_grant_a_caller_gets_only_what_it_could_do_itself() {
    let Some(d) = daemon("privnogrant", OPEN) else {
        return;
    };
    let s = as_caller(
        &d,
        0,
        &[
            "move:background",
            "threads:urgent",
            "threads:QOS_INTERACTIVE",
            "threads:rt50",
            "threads:nice5",
            "threads:background",
            "threads:utility",
            "threads:eco",
            "renice:-8",
            "fifo:50",
        ],
    );
    assert!(
        s[0].allowed(),
        "its own process into background: {}",
        s[0].reply
    );
    // The shipped urgent class lowers nice to -8: refused, naming class, attribute, grant.
    let urgent = s[1].denial();
    assert_eq!(
        urgent,
        "class urgent goes beyond what uid 54321 may do to this thread itself: nice -8 (the thread has 0; RLIMIT_NICE 0 allows no lowering); a grant in daemon.yaml allows it (policy.grants: [{class: urgent, users: [54321]}])"
    );
    assert_eq!(s[1].nice, 0, "nothing was applied");
    assert!(
        s[2].denial().starts_with("class urgent-bursty goes beyond"),
        "the alias too"
    );
    // A rules.d class with policy fifo 50: refused, and the thread did not become FIFO.
    let rt = s[3].denial();
    assert!(
        rt.starts_with("class rt50 goes beyond what uid 54321 may do to this thread itself: policy fifo (the thread is normal; RLIMIT_RTPRIO 0 allows no real-time policy)"),
        "{rt}"
    );
    assert!(
        rt.contains("policy.grants: [{class: rt50, users: [54321]}]"),
        "{rt}"
    );
    assert_eq!(s[3].policy, 0, "still SCHED_OTHER");
    assert!(s[4].denial().contains("nice -5"), "{}", s[4].reply);
    // Slowing its own tasks down stays allowed: nice up to 10, then back down towards the
    // original 0, which cgqos recorded before its first change.
    for (i, nice) in [(5, 10), (6, 1), (7, 0)] {
        assert!(s[i].allowed(), "{}", s[i].reply);
        assert_eq!(s[i].nice, nice, "{}", s[i].reply);
    }
    // The kernel refuses the caller the same two changes when it tries them itself.
    assert_eq!(s[8].reply, libc::EACCES.to_string(), "setpriority -8");
    assert_eq!(
        s[9].reply,
        libc::EPERM.to_string(),
        "sched_setscheduler FIFO 50"
    );
    assert_eq!((s[9].nice, s[9].policy), (0, 0));
    // The refusal is logged with the caller.
    let log = d.log();
    assert!(
        log.contains("class urgent goes beyond what uid 54321") && log.contains("uid=54321"),
        "{log}"
    );
}

#[test]
fn lowering_nice_within_the_callers_rlimit_nice_is_allowed() {
    if !can_raise_rlimit_nice() {
        eprintln!(
            "skipped: this root cannot raise RLIMIT_NICE (no CAP_SYS_RESOURCE); the rule is unit-tested in src/daemon/policy/attrs.rs"
        );
        return;
    }
    let Some(d) = daemon("privrlimit", OPEN) else {
        return;
    };
    // RLIMIT_NICE 25: nice -5 at most, for the caller and (inherited) its process.
    let s = as_caller(
        &d,
        25,
        &[
            "move:background",
            "threads:nice6",
            "threads:nice5",
            "threads:urgent",
            "renice:-6",
        ],
    );
    assert!(s[0].allowed(), "{}", s[0].reply);
    let e = s[1].denial();
    assert!(
        e.contains("nice -6 (the thread has 0; RLIMIT_NICE 25 allows down to -5)"),
        "{e}"
    );
    assert!(s[2].allowed(), "{}", s[2].reply);
    assert_eq!(s[2].nice, -5);
    assert!(
        s[3].denial().contains("nice -8 (the thread has -5"),
        "{}",
        s[3].reply
    );
    // The kernel draws the line at the same place.
    assert_eq!(s[4].reply, libc::EACCES.to_string());
    assert_eq!(s[4].nice, -5);
}

/// Whether a child can be given RLIMIT_NICE 25: raising a hard limit needs
/// CAP_SYS_RESOURCE, which a container's root may lack.
fn can_raise_rlimit_nice() -> bool {
    let mut cmd = Command::new("true");
    // SAFETY: only setrlimit, async-signal-safe, between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let r = libc::rlimit {
                rlim_cur: 25,
                rlim_max: 25,
            };
            if libc::setrlimit(libc::RLIMIT_NICE, &r) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.status().is_ok()
}

#[test]
fn a_grant_in_the_policy_allows_the_class() {
    // rt50 is defined in rules.d only: the policy may name it.
    let config = format!(
        "{OPEN}policy:\n  grants:\n    - class: urgent\n      users: [{UNPRIV_UID}]\n    - class: [rt50]\n      groups: [{UNPRIV_UID}]\n  reserved:\n    - target: class:rt50\n      users: [{UNPRIV_UID}]\n"
    );
    let Some(d) = daemon("privgrant", &config) else {
        return;
    };
    let s = as_caller(
        &d,
        0,
        // In the foreground: a background process's threads get no real-time policy at all.
        &[
            "move:foreground",
            "threads:nice6",
            "threads:urgent",
            "threads:rt50",
            "threads:normal",
        ],
    );
    assert!(s[0].allowed(), "{}", s[0].reply);
    // A grant covers the classes it names only.
    assert!(
        s[1].denial().starts_with("class nice6 goes beyond"),
        "{}",
        s[1].reply
    );
    assert!(s[2].allowed(), "{}", s[2].reply);
    assert_eq!(s[2].nice, -8, "the granted class applied");
    assert!(s[3].allowed(), "{}", s[3].reply);
    assert_eq!(s[3].policy, libc::SCHED_FIFO as u32, "granted by group");
    // Leaving real time for a fair policy needs no grant (nice 0: sched_getattr reports
    // none for a real-time task, and cgqos keeps what it reports).
    assert!(s[4].allowed(), "{}", s[4].reply);
    assert_eq!((s[4].policy, s[4].nice), (0, 0));
    // Classes and policy load together: without rt50 in rules.d the policy is invalid, the
    // reload is refused with the policy's position, and the old configuration stays.
    std::fs::remove_file(d.dir.path().join("conf/rules.d/10-classes.yaml")).unwrap();
    let reply = request(&mut d.connect(), r#"{"v":1,"op":"reload"}"#);
    assert!(
        reply.contains("invalid_config")
            && reply
                .contains(r#"daemon.yaml:10:15: policy.reserved.target: unknown class \"rt50\""#),
        "{reply}"
    );
    let s = as_caller(&d, 0, &["move:background", "threads:rt50"]);
    assert!(s[1].allowed(), "the old policy stays: {}", s[1].reply);
}

#[test]
fn a_policy_naming_an_unknown_class_is_refused_with_its_position() {
    let Some(root) = usable("privunknown") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("conf");
    std::fs::create_dir(&conf).unwrap();
    let daemon_yaml = conf.join("daemon.yaml");
    std::fs::write(
        &daemon_yaml,
        "policy:\n  grants:\n    - class: rt50\n      users: [54321]\n",
    )
    .unwrap();
    let start = || {
        run(cgqos()
            .arg("daemon")
            .arg("--cgroup-root")
            .arg(&root)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .arg("--socket")
            .arg(dir.path().join("run/cgqos.sock"))
            .arg("--config-dir")
            .arg(&conf))
    };
    let r = start();
    assert_eq!(r.code, 2, "{}", r.stderr);
    let at = format!(
        "{}:3:14: policy.grants.class: unknown class \"rt50\"",
        daemon_yaml.display()
    );
    assert!(r.stderr.contains(&at), "{}", r.stderr);
    assert!(!root.exists(), "refused before touching any cgroup");
    // The same name in a reservation.
    std::fs::write(
        &daemon_yaml,
        "policy:\n  reserved:\n    - target: class:rt50\n      users: [54321]\n",
    )
    .unwrap();
    let r = start();
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "{}:3:15: policy.reserved.target: unknown class \"rt50\"",
            daemon_yaml.display()
        )),
        "{}",
        r.stderr
    );
}

/// The ChromeOS example of docs/deployment.md, as printed there.
fn chromeos_example() -> String {
    let doc = std::fs::read_to_string(manifest_dir().join("docs/deployment.md")).unwrap();
    let section = doc
        .split("### Example: a ChromeOS-like policy")
        .nth(1)
        .expect("the example's section");
    let start = section.find("```yaml\n").expect("its yaml block") + "```yaml\n".len();
    let len = section[start..].find("```").unwrap();
    section[start..start + len].to_string()
}

#[test]
fn the_chromeos_example_grants_the_browser_what_it_needs() {
    use cgqos::daemon::policy::{self, Caller};
    let etc = tempfile::tempdir().unwrap();
    std::fs::write(
        etc.path().join("passwd"),
        "root:x:0:0::/root:/bin/sh\nchronos:x:1000:1000::/home/chronos:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(
        etc.path().join("group"),
        "root:x:0:\nchronos:x:1000:\ncrosvm:x:299:\ncgqos:x:300:\n",
    )
    .unwrap();
    let c = policy::parse("deployment.md", &chromeos_example(), etc.path())
        .unwrap_or_else(|e| panic!("the example does not parse: {e}"));
    let chronos = Caller {
        uid: 1000,
        gids: vec![1000, 300],
        pid: None,
        bus: None,
    };
    let other = Caller {
        uid: 1300,
        gids: vec![1300, 300],
        pid: None,
        bus: None,
    };
    let beyond = || Err("nice -8 (the thread has 0; RLIMIT_NICE 0 allows no lowering)".into());
    // Every state of the browser's threads (resourced lets the browser use them all).
    for class in [
        "urgent-bursty",
        "urgent",
        "balanced",
        "eco",
        "utility",
        "background",
    ] {
        assert!(
            c.authorize_class(&chronos, class, beyond()).is_ok(),
            "{class}"
        );
        assert!(
            c.authorize_class(&other, class, beyond()).is_err(),
            "{class}"
        );
    }
    // The browser places processes of every user, and only it makes threads urgent.
    assert!(c.may_touch(&chronos, 655360).is_ok());
    let urgent = policy::Action::Place {
        group: "chrome/ui",
        class: Some("urgent"),
    };
    assert!(c.authorize(&chronos, &urgent).is_ok());
    assert!(c.authorize(&other, &urgent).is_err());
}
