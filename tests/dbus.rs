//! The daemon on D-Bus, against a real `dbus-daemon` started privately with a system-bus-like
//! configuration (method calls denied by default) that includes the shipped policy files of
//! `dbus/`, and real clients (`dbus-send`, as root and as uid 65534 through `setpriv`).
//! Processes are moved on the real cgroup2 mount (a sub-root per daemon).

mod common;

use common::daemon::{Daemon, cgroup_of};
use common::{cgqos, cgroup_of_task, clients, manifest_dir, run};
use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

const RM: &str = "org.chromium.ResourceManager";
const RM_PATH: &str = "/org/chromium/ResourceManager";
const CG: &str = "org.cgqos.Daemon1";
const CG_PATH: &str = "/org/cgqos/Daemon1";
const NOBODY: u32 = 65534;
const CHILD: &str = "CGQOS_DBUS_CHILD";

/// A private bus: ChromeOS's and Debian's system bus policy in short (no method call to
/// anyone but the bus itself unless a policy file allows it), plus the shipped files.
struct Bus {
    child: Child,
    _dir: tempfile::TempDir,
    address: String,
    send: PathBuf,
    setpriv: PathBuf,
}

impl Bus {
    fn start() -> Option<Bus> {
        let daemon = clients::program(&["dbus-daemon"])?;
        let send = clients::program(&["dbus-send"])?;
        let setpriv = clients::program(&["setpriv"])?;
        let dir = tempfile::tempdir().unwrap();
        // uid 65534 connects to the bus's socket in here.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let conf = dir.path().join("bus.conf");
        std::fs::write(&conf, bus_config(dir.path(), &manifest_dir().join("dbus"))).unwrap();
        let mut child = Command::new(daemon)
            .arg(format!("--config-file={}", conf.display()))
            .args(["--nofork", "--print-address"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut address = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut address)
            .unwrap();
        assert!(address.starts_with("unix:"), "dbus-daemon said {address:?}");
        Some(Bus {
            child,
            _dir: dir,
            address: address.trim().to_string(),
            send,
            setpriv,
        })
    }

    /// A cgqos daemon serving D-Bus on this bus (`dbus: true` and `config` in daemon.yaml).
    fn daemon(&self, tag: &str, config: &str) -> Option<Daemon> {
        self.daemon_with(tag, config, &[])
    }

    fn daemon_with(&self, tag: &str, config: &str, files: &[(&str, &str)]) -> Option<Daemon> {
        let config = format!("dbus: true\n{config}");
        Daemon::with(
            tag,
            &config,
            None,
            files,
            &[("DBUS_SYSTEM_BUS_ADDRESS", &self.address)],
        )
    }

    /// `dbus-send --print-reply` as root or as uid 65534: Ok(reply) or Err(stderr), which
    /// starts with `Error <name>: <message>`.
    fn call(
        &self,
        as_nobody: bool,
        dest: &str,
        path: &str,
        method: &str,
        args: &[String],
    ) -> Result<String, String> {
        let mut c = if as_nobody {
            let mut c = Command::new(&self.setpriv);
            c.args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
                .arg(&self.send);
            c
        } else {
            Command::new(&self.send)
        };
        c.args(["--system", "--print-reply"])
            .arg(format!("--dest={dest}"))
            .arg(path)
            .arg(format!("{dest}.{method}"))
            .args(args)
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.address);
        let out = c.output().unwrap();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    fn rm(&self, method: &str, args: &[String]) -> Result<String, String> {
        self.call(false, RM, RM_PATH, method, args)
    }

    /// The JSON text of an org.cgqos.Daemon1 reply.
    fn cg(&self, method: &str, args: &[String]) -> Result<serde_json::Value, String> {
        let out = self.call(false, CG, CG_PATH, method, args)?;
        let text = out
            .split_once("string \"")
            .map(|(_, s)| s.trim_end().trim_end_matches('"'));
        Ok(serde_json::from_str(text.unwrap_or("null")).unwrap_or_else(|e| panic!("{e}: {out}")))
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bus_config(dir: &std::path::Path, policy_dir: &std::path::Path) -> String {
    format!(
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={}/bus</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
  </policy>
  <includedir>{}</includedir>
</busconfig>
"#,
        dir.display(),
        policy_dir.display()
    )
}

fn u(v: u32) -> String {
    format!("uint32:{v}")
}

fn y(v: u8) -> String {
    format!("byte:{v}")
}

fn error_name(r: Result<String, String>) -> String {
    let e = r.expect_err("a D-Bus error");
    e.strip_prefix("Error ")
        .and_then(|s| s.split(':').next())
        .unwrap_or(&e)
        .to_string()
}

/// A process of uid 65534 (real and effective), killed on drop.
struct NobodySleeper(Child);

impl NobodySleeper {
    fn start(bus: &Bus) -> NobodySleeper {
        let c = Command::new(&bus.setpriv)
            .args([
                "--reuid",
                "65534",
                "--regid",
                "65534",
                "--clear-groups",
                "sleep",
                "60",
            ])
            .spawn()
            .unwrap();
        // setpriv execs sleep: the pid stays; wait until it runs as 65534.
        common::daemon::wait_for("the sleeper to drop privileges", || {
            std::fs::read_to_string(format!("/proc/{}/status", c.id()))
                .is_ok_and(|s| s.contains("Uid:\t65534") && s.contains("Name:\tsleep"))
        });
        NobodySleeper(c)
    }
}

impl Drop for NobodySleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Helper process: starts $CGQOS_DBUS_CHILD threads, prints `TIDS ...`, waits on stdin.
#[test]
#[ignore = "helper process for the thread tests"]
fn dbus_threads_child() {
    let Ok(n) = std::env::var(CHILD) else { return };
    let (tx, rx) = std::sync::mpsc::channel();
    for _ in 0..n.parse::<usize>().unwrap() {
        let tx = tx.clone();
        std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            tx.send(unsafe { libc::gettid() } as u32).unwrap();
            std::thread::park();
        });
    }
    let tids: Vec<String> = rx
        .iter()
        .take(n.parse().unwrap())
        .map(|t| t.to_string())
        .collect();
    println!("TIDS {}", tids.join(" "));
    let mut line = String::new();
    while std::io::stdin().read_line(&mut line).unwrap_or(0) > 0 {}
    std::process::exit(0);
}

#[test]
fn resourced_states_move_a_real_process_and_its_threads() {
    let Some(bus) = Bus::start() else { return };
    let Some(d) = bus.daemon("dbrm", "") else {
        return;
    };
    // /proc shows cgroups relative to the mount, where the sub-root is one level down.
    let sub = d.root.file_name().unwrap().to_string_lossy().into_owned();
    let want = |rel: &str| format!("/{sub}/{rel}");
    let program = common::program_copy("dbt", "");
    let child = common::run_child_program(&program, "dbus_threads_child", CHILD, 2);
    let pid = child.child.id();
    let (t1, t2) = (child.tids[0], child.tids[1]);

    // A thread state needs its process in a cgqos group first (resourced: not registered).
    assert_eq!(
        error_name(bus.rm("SetThreadState", &[u(pid), u(t1), y(1)])),
        "org.chromium.ResourceManager.Error.InvalidTarget"
    );
    bus.rm("SetProcessState", &[u(pid), y(1)]).unwrap();
    assert_eq!(cgroup_of(pid), want("chrome/background"));
    bus.rm("SetProcessState", &[u(pid), y(0)]).unwrap();
    assert_eq!(cgroup_of(pid), want("chrome/foreground"));

    // UrgentBursty and UrgentBurstyServer: the urgent class; Eco: non-urgent.
    bus.rm("SetThreadState", &[u(pid), u(t1), y(0)]).unwrap();
    bus.rm("SetThreadState", &[u(pid), u(t2), y(3)]).unwrap();
    assert_eq!(cgroup_of_task(pid, t1), want("chrome/foreground/urgent"));
    assert_eq!(
        cgroup_of_task(pid, t2),
        want("chrome/foreground/non-urgent")
    );
    bus.rm("SetThreadState", &[u(pid), u(t2), y(6)]).unwrap();
    assert_eq!(cgroup_of_task(pid, t2), want("chrome/foreground/urgent"));
    // A background process's threads keep their classes, in the background group.
    bus.rm("SetProcessState", &[u(pid), y(1)]).unwrap();
    assert_eq!(cgroup_of_task(pid, t1), want("chrome/background/urgent"));
    assert_eq!(cgroup_of(pid), want("chrome/background"));

    // The record names the D-Bus caller, through D-Bus and through `cgqos why`.
    let why = bus.cg("Why", &[u(t2)]).unwrap();
    let by = why["why"]["by"].as_str().unwrap().to_string();
    assert!(
        by.starts_with("dbus :1.") && by.contains(" uid 0 pid "),
        "{why}"
    );
    assert_eq!(why["why"]["class"], "urgent-bursty-server", "{why}");
    let cli = run(cgqos()
        .args(["why", &t2.to_string(), "--state-dir"])
        .arg(d.state())
        .arg("--cgroup-root")
        .arg(&d.root));
    assert!(
        cli.stdout.contains("dbus :1."),
        "{}{}",
        cli.stdout,
        cli.stderr
    );

    // Errors, by name.
    assert_eq!(
        error_name(bus.rm("SetProcessState", &[u(pid), y(2)])),
        "org.chromium.ResourceManager.Error.InvalidState"
    );
    assert_eq!(
        error_name(bus.rm("SetThreadState", &[u(pid), u(t1), y(8)])),
        "org.chromium.ResourceManager.Error.InvalidState"
    );
    let gone = 4_000_000 + std::process::id() % 100_000;
    assert_eq!(
        error_name(bus.rm("SetProcessState", &[u(gone), y(0)])),
        "org.chromium.ResourceManager.Error.NoSuchProcess"
    );
    assert_eq!(
        error_name(bus.rm("SetThreadState", &[u(std::process::id()), u(t1), y(2)])),
        "org.chromium.ResourceManager.Error.NoSuchThread"
    );
    // Wrong argument types are refused before the daemon sees them.
    let wrong = bus.rm("SetProcessState", &[u(pid), u(1)]);
    assert!(
        wrong
            .as_ref()
            .is_err_and(|e| e.contains("Signature mismatch: got `(uu)`, expected `(uy)`")),
        "{wrong:?}"
    );
    assert_eq!(error_name(wrong), "org.freedesktop.zbus.Error");
}

#[test]
fn a_non_root_caller_is_held_to_the_policy() {
    let Some(bus) = Bus::start() else { return };
    let config = "policy:\n  grants:\n    - class: urgent\n      users: [nobody]\n";
    let Some(mut d) = bus.daemon("dbnr", config) else {
        return;
    };
    let sleeper = NobodySleeper::start(&bus);
    let own = sleeper.0.id();
    let foreign = d.sleeper();
    let rm = |m: &str, args: &[String]| bus.call(true, RM, RM_PATH, m, args);

    assert_eq!(
        error_name(rm("SetProcessState", &[u(foreign), y(1)])),
        "org.chromium.ResourceManager.Error.AccessDenied"
    );
    assert!(!cgroup_of(foreign).contains("/chrome/"));
    rm("SetProcessState", &[u(own), y(1)]).unwrap();
    assert!(
        cgroup_of(own).ends_with("/chrome/background"),
        "{}",
        cgroup_of(own)
    );
    // urgent-bursty's nice -8 is beyond what uid 65534 may do itself.
    let denied = rm("SetThreadState", &[u(own), u(own), y(0)]);
    assert!(
        denied.as_ref().is_err_and(|e| e.contains("nice -8")),
        "{denied:?}"
    );
    assert_eq!(
        error_name(denied),
        "org.chromium.ResourceManager.Error.AccessDenied"
    );
    // urgent is granted (and afterwards urgent-bursty is within the thread's reach: it
    // has nice -8 then).
    rm("SetThreadState", &[u(own), u(own), y(1)]).unwrap();
    assert!(cgroup_of(own).ends_with("/chrome/background/urgent"));
    let why = bus.cg("Why", &[u(own)]).unwrap();
    assert!(
        why["why"]["by"]
            .as_str()
            .unwrap()
            .contains(&format!("uid {NOBODY} pid ")),
        "{why}"
    );
    // The same policy on cgqos's own interface.
    let cg = bus.call(
        true,
        CG,
        CG_PATH,
        "Move",
        &[
            "string:foreground".into(),
            format!("array:uint32:{foreign}"),
        ],
    );
    assert!(
        cg.as_ref()
            .is_ok_and(|o| o.contains("may only place its own processes")),
        "{cg:?}"
    );
    let cg = bus.call(true, CG, CG_PATH, "VmAdd", &["string:dbnr".into()]);
    assert_eq!(error_name(cg), "org.cgqos.Daemon1.Error.AccessDenied");
}

#[test]
fn the_cgqos_interface_moves_and_answers() {
    let Some(bus) = Bus::start() else { return };
    let Some(mut d) = bus.daemon("dbcg", "") else {
        return;
    };
    let pid = d.sleeper();
    let moved = bus
        .cg(
            "Move",
            &["string:background".into(), format!("array:uint32:{pid}")],
        )
        .unwrap();
    assert_eq!(moved[0]["ok"], true, "{moved}");
    assert!(cgroup_of(pid).ends_with("/chrome/background"));
    let moved = bus
        .cg(
            "MoveThreads",
            &["string:urgent".into(), format!("array:uint32:{pid}")],
        )
        .unwrap();
    assert_eq!(moved[0]["ok"], true, "{moved}");
    assert!(cgroup_of(pid).ends_with("/chrome/background/urgent"));
    let at = bus.cg("Where", &[u(pid)]).unwrap();
    assert_eq!(at[0]["group"], "chrome/background", "{at}");
    assert_eq!(at[0]["class"], "urgent", "{at}");
    let status = bus.cg("Status", &[]).unwrap();
    assert!(status.is_object(), "{status}");
    assert_eq!(bus.cg("Ping", &[]).unwrap()["pong"], true);
    let added = bus.cg("VmAdd", &["string:dbustest".into()]).unwrap();
    assert!(added.to_string().contains("dbustest"), "{added}");
    assert!(d.root.join("vms/dbustest").is_dir());
    bus.cg("VmRemove", &["string:dbustest".into()]).unwrap();
    assert!(!d.root.join("vms/dbustest").exists());
    assert_eq!(
        error_name(bus.call(
            false,
            CG,
            CG_PATH,
            "Move",
            &["string:sideways".into(), format!("array:uint32:{pid}")]
        )),
        "org.cgqos.Daemon1.Error.InvalidTarget"
    );
}

/// resourced's UrgentBursty is SCHED_RR 8; a rules.d class that makes it so is refused for
/// a thread of a background process, and applied in the foreground.
#[test]
fn a_real_time_state_is_refused_in_the_background() {
    let Some(bus) = Bus::start() else { return };
    let rr =
        "classes:\n  urgent-bursty:\n    cgroup-class: urgent\n    policy: rr\n    priority: 8\n";
    let Some(_d) = bus.daemon_with("dbrt", "", &[("rules.d/rr.yaml", rr)]) else {
        return;
    };
    let program = common::program_copy("dbr", "");
    let child = common::run_child_program(&program, "dbus_threads_child", CHILD, 1);
    let (pid, tid) = (child.child.id(), child.tids[0]);
    bus.rm("SetProcessState", &[u(pid), y(1)]).unwrap();
    let refused = bus.rm("SetThreadState", &[u(pid), u(tid), y(0)]);
    assert_eq!(
        error_name(refused),
        "org.chromium.ResourceManager.Error.RealTimeRefused"
    );
    assert!(cgroup_of_task(pid, tid).ends_with("/chrome/background"));
    // Urgent has no real-time policy: allowed, on the background group's CPUs.
    bus.rm("SetThreadState", &[u(pid), u(tid), y(1)]).unwrap();
    assert!(cgroup_of_task(pid, tid).ends_with("/chrome/background/urgent"));
    bus.rm("SetProcessState", &[u(pid), y(0)]).unwrap();
    bus.rm("SetThreadState", &[u(pid), u(tid), y(0)]).unwrap();
    assert!(cgroup_of_task(pid, tid).ends_with("/chrome/foreground/urgent"));
    // Field 41 of stat is the policy (after the parenthesised comm): 2 is SCHED_RR.
    let policy = || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).unwrap();
        let fields: Vec<String> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .map(String::from)
            .collect();
        fields[41 - 3].clone()
    };
    assert_eq!(policy(), "2");
    // The process goes to the background: its thread keeps its class, without real time
    // (resourced demotes it too); back in the foreground, the class's SCHED_RR again.
    bus.rm("SetProcessState", &[u(pid), y(1)]).unwrap();
    assert!(cgroup_of_task(pid, tid).ends_with("/chrome/background/urgent"));
    assert_eq!(policy(), "0", "no real time in the background");
    bus.rm("SetProcessState", &[u(pid), y(0)]).unwrap();
    assert!(cgroup_of_task(pid, tid).ends_with("/chrome/foreground/urgent"));
    assert_eq!(
        policy(),
        "2",
        "the class's real time back in the foreground"
    );
}

/// `--dbus` with no bus at the address: the daemon stops with the address and the cause,
/// and leaves no socket behind.
#[test]
fn an_unreachable_bus_stops_the_daemon() {
    let Some(root) = common::real_subroot("dbno") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("run/cgqos.sock");
    let address = format!("unix:path={}/no-bus", dir.path().display());
    let r = run(cgqos()
        .arg("daemon")
        .arg("--dbus")
        .arg("--cgroup-root")
        .arg(&root)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--socket")
        .arg(&socket)
        .arg("--config-dir")
        .arg(dir.path())
        .env("DBUS_SYSTEM_BUS_ADDRESS", &address));
    let _ = run(cgqos()
        .args(["teardown", "--direct", "--cgroup-root"])
        .arg(&root)
        .arg("--state-dir")
        .arg(dir.path().join("state")));
    assert_ne!(r.code, 0);
    assert!(
        r.stderr
            .contains(&format!("D-Bus: the system bus at {address}")),
        "{}",
        r.stderr
    );
    assert!(!socket.exists());
}
