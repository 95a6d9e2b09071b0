//! The daemon against the real cgroup2 mount (root only; skipped with the reason otherwise):
//! a temporary socket, state and configuration, and a unique sub-root of the mount.

mod common;
use common::daemon::*;
use common::*;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const OPEN_SOCKET: &str = "socket:\n  mode: \"0666\"\n";

#[test]
fn moves_through_the_daemon_match_direct_moves() {
    let Some(mut d) = Daemon::new("moves", OPEN_SOCKET, None) else {
        return;
    };
    let pid = d.sleeper();
    let r = d.cli(&["move", &pid.to_string(), "background"]);
    assert_eq!(r.code, 0, "{}{}", r.stderr, d.log());
    assert!(
        r.stdout.contains(&format!(
            "{pid}: in chrome/background: 1 thread(s) (1 default)"
        )),
        "{}",
        r.stdout
    );
    assert!(cgroup_of(pid).ends_with("/chrome/background"));
    // The same exit codes as a direct run: a vanished pid is 3, an unknown group 2.
    assert_eq!(d.cli(&["move", "4999999", "ui"]).code, 3);
    assert_eq!(d.cli(&["move", &pid.to_string(), "nowhere"]).code, 2);
    let w = json(&d.cli(&["where", "--json", &pid.to_string()]));
    assert_eq!(w[0]["group"], "chrome/background");
    // Threads by id, and a class the group has.
    assert_eq!(
        d.cli(&["move", "--thread", &pid.to_string(), "non-urgent"])
            .code,
        0
    );
    assert!(cgroup_of(pid).ends_with("/chrome/background/non-urgent"));
    // VM groups through the daemon.
    let r = d.cli(&["vm", "add", "termina", "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        json(&r)["vcpu"]
            .as_str()
            .unwrap()
            .ends_with("vms/termina/vcpu")
    );
    let mut s = d.connect();
    let reply = request(
        &mut s,
        r#"{"v":1,"id":1,"op":"restrict","group":"vm:termina","state":"background","quota_percent":50}"#,
    );
    // This host's cgroup2 may lack the cpu controller; then the daemon says so.
    assert!(
        reply.contains("\"cpu_weight\":6") || reply.contains("no cpu controller"),
        "{reply}"
    );
    assert_eq!(d.cli(&["vm", "remove", "termina"]).code, 0);
    assert!(
        d.log().contains("applied:"),
        "one log line per applied request: {}",
        d.log()
    );
}

#[test]
fn malformed_oversized_and_concurrent_requests() {
    let Some(d) = Daemon::new("robust", OPEN_SOCKET, None) else {
        return;
    };
    let mut s = d.connect();
    for (line, code) in [
        ("garbage", "bad_request"),
        ("[]", "bad_request"),
        (r#"{"v":1,"op":"where","pid":"x"}"#, "bad_request"),
        (
            r#"{"v":1,"op":"where","pid":1,"extra":true}"#,
            "bad_request",
        ),
        (r#"{"v":9,"op":"ping"}"#, "unsupported_version"),
        (
            r#"{"v":1,"op":"move","group":"ui","targets":[]}"#,
            "bad_request",
        ),
    ] {
        let reply = request(&mut s, line);
        assert!(
            reply.contains(&format!("\"code\":\"{code}\"")),
            "{line} -> {reply}"
        );
    }
    let huge = format!(r#"{{"v":1,"op":"ping","pad":"{}"}}"#, "x".repeat(70_000));
    let reply = request(&mut s, &huge);
    assert!(reply.contains("too_large"), "{reply}");
    // The same connection still works after all that.
    assert!(request(&mut s, r#"{"v":1,"id":"after","op":"ping"}"#).contains("\"id\":\"after\""));

    // 50 concurrent clients.
    let socket = d.socket();
    let handles: Vec<_> = (0..50)
        .map(|i| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                let mut s = UnixStream::connect(&socket).unwrap();
                for j in 0..10 {
                    let r = request(
                        &mut s,
                        &format!(r#"{{"v":1,"id":{},"op":"ping"}}"#, i * 100 + j),
                    );
                    assert!(
                        r.contains("\"ok\":true") && r.contains(&format!("\"id\":{}", i * 100 + j)),
                        "{r}"
                    );
                }
                let pid = std::process::id();
                assert!(
                    request(&mut s, &format!(r#"{{"v":1,"op":"where","pid":{pid}}}"#))
                        .contains("\"ok\":true")
                );
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

/// Not a test: the unprivileged client, run as uid 54321 by `an_unprivileged_caller_...`.
#[test]
#[ignore = "helper process for the daemon tests"]
fn unprivileged_client() {
    let Ok(socket) = std::env::var("CGQOS_TEST_SOCKET") else {
        return;
    };
    let foreign: u32 = std::env::var("CGQOS_TEST_FOREIGN")
        .unwrap()
        .parse()
        .unwrap();
    let mut own = Command::new("sleep").arg("30").spawn().unwrap();
    let mut s = UnixStream::connect(&socket).unwrap();
    let mine = request(
        &mut s,
        &format!(
            r#"{{"v":1,"op":"move","group":"background","targets":[{{"id":{}}}]}}"#,
            own.id()
        ),
    );
    let theirs = request(
        &mut s,
        &format!(r#"{{"v":1,"op":"move","group":"background","targets":[{{"id":{foreign}}}]}}"#),
    );
    let urgent = request(
        &mut s,
        &format!(
            r#"{{"v":1,"op":"move_threads","class":"urgent","targets":[{{"id":{}}}]}}"#,
            own.id()
        ),
    );
    let reload = request(&mut s, r#"{"v":1,"op":"reload"}"#);
    // Reservations hold whatever name the request uses: an alias of a reserved class, a VM part.
    let alias = request(
        &mut s,
        &format!(
            r#"{{"v":1,"op":"move_threads","class":"QOS_BACKGROUND","targets":[{{"id":{}}}]}}"#,
            own.id()
        ),
    );
    let part = request(
        &mut s,
        &format!(
            r#"{{"v":1,"op":"move","group":"arcvm-vcpu","targets":[{{"id":{}}}]}}"#,
            own.id()
        ),
    );
    println!("MINE {mine}THEIRS {theirs}URGENT {urgent}RELOAD {reload}ALIAS {alias}PART {part}");
    own.kill().unwrap();
    own.wait().unwrap();
}

#[test]
fn an_unprivileged_caller_may_place_its_own_processes_only() {
    let config = "socket:\n  mode: \"0666\"\npolicy:\n  reserved:\n    - target: class:urgent\n      users: [12345]\n    - target: class:background\n      users: [12345]\n    - target: arcvm-vcpu\n      users: [12345]\n";
    let Some(mut d) = Daemon::new("unpriv", config, None) else {
        return;
    };
    let foreign = d.sleeper();
    let out = child_test_command(&std::env::current_exe().unwrap(), "unprivileged_client")
        .env("CGQOS_TEST_SOCKET", d.socket())
        .env("CGQOS_TEST_FOREIGN", foreign.to_string())
        .uid(UNPRIV_UID)
        .gid(UNPRIV_UID)
        .output()
        .unwrap();
    let line = |tag: &str| tagged_line(&out, tag);
    let mine = line("MINE ");
    assert!(
        mine.contains("\"ok\":true") && mine.contains("chrome/background"),
        "{mine}"
    );
    let theirs = line("THEIRS ");
    assert!(theirs.contains("\"code\":\"denied\""), "{theirs}");
    assert!(
        theirs.contains("uid 54321 may only place its own processes"),
        "{theirs}"
    );
    let urgent = line("URGENT ");
    assert!(
        urgent.contains("\"code\":\"denied\"") && urgent.contains("class urgent is reserved"),
        "{urgent}"
    );
    assert!(line("RELOAD ").contains("\"code\":\"denied\""));
    let alias = line("ALIAS ");
    assert!(alias.contains("class background is reserved"), "{alias}");
    let part = line("PART ");
    assert!(part.contains("group vms/arcvm/vcpu is reserved"), "{part}");
    // The foreign process did not move; the denial is logged with the caller.
    assert!(!cgroup_of(foreign).contains("chrome"));
    let log = d.log();
    assert!(
        log.contains("denied") && log.contains(&format!("uid={UNPRIV_UID}")),
        "{log}"
    );
}

const MODEL: &str =
    "chromeos:\n  configs:\n    - name: default\n      cgqos: {background-cpu-weight: 1}\n";

fn requested_background_weight(d: &Daemon) -> String {
    let st = json(&d.cli(&["status", "--json"]));
    let g = st["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["path"] == "chrome/background")
        .unwrap()
        .clone();
    let w = g["settings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["file"] == "cpu.weight")
        .unwrap()
        .clone();
    w["requested"].as_str().unwrap().to_string()
}

#[test]
fn reload_on_rename_and_an_invalid_file_keeps_the_old_configuration() {
    let Some(d) = Daemon::new("reload", OPEN_SOCKET, Some(MODEL)) else {
        return;
    };
    assert_eq!(requested_background_weight(&d), "1");
    // An editor's save: write a temporary file, rename it over the old one.
    let conf = d.dir.path().join("conf");
    std::fs::write(
        conf.join(".model.yaml.tmp"),
        MODEL.replace("background-cpu-weight: 1", "background-cpu-weight: 7"),
    )
    .unwrap();
    std::fs::rename(conf.join(".model.yaml.tmp"), conf.join("model.yaml")).unwrap();
    wait_for("the reload after a rename", || {
        requested_background_weight(&d) == "7"
    });
    // An invalid file: refused, logged with file and line, the old configuration stays.
    std::fs::write(
        conf.join("model.yaml"),
        MODEL.replace("background-cpu-weight: 1", "background-cpu-weight: zero"),
    )
    .unwrap();
    wait_for("the refusal in the log", || {
        d.log()
            .contains("refused, the previous configuration stays in force")
    });
    assert!(d.log().contains("model.yaml:4:"), "{}", d.log());
    assert_eq!(requested_background_weight(&d), "7");
    // An explicit reload request says why it failed.
    let mut s = d.connect();
    let r = request(&mut s, r#"{"v":1,"op":"reload"}"#);
    assert!(
        r.contains("invalid_config") && r.contains("background-cpu-weight"),
        "{r}"
    );
}

#[test]
fn sigkill_mid_burst_loses_nothing_acknowledged() {
    let Some(mut d) = Daemon::new("kill", OPEN_SOCKET, None) else {
        return;
    };
    let original = cgroup_of(std::process::id());
    let pids: Vec<u32> = (0..30).map(|_| d.sleeper()).collect();
    let socket = d.socket();
    let burst_pids = pids.clone();
    // The kill lands mid-burst once the first move is acknowledged (a fixed delay lost the
    // race on a loaded machine: the kill came before any reply).
    let (first_ack, first_acked) = std::sync::mpsc::channel();
    let burst = std::thread::spawn(move || {
        let mut acked = Vec::new();
        let mut s = UnixStream::connect(&socket).unwrap();
        for pid in burst_pids {
            let line =
                format!(r#"{{"v":1,"op":"move","group":"foreground","targets":[{{"id":{pid}}}]}}"#);
            if s.write_all(format!("{line}\n").as_bytes()).is_err() {
                break;
            }
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut reply = String::new();
            if r.read_line(&mut reply).unwrap_or(0) == 0 {
                break;
            }
            if reply.contains("\"ok\":true") {
                acked.push(pid);
                let _ = first_ack.send(());
            }
        }
        acked
    });
    let _ = first_acked.recv_timeout(Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(2));
    d.signal(libc::SIGKILL);
    let acked = burst.join().unwrap();
    assert!(
        !acked.is_empty(),
        "no move was acknowledged before the kill"
    );
    // Every acknowledged move is in the state file, with its origin.
    let state = recorded_state(&d.state());
    for pid in &acked {
        let rec = &state["tasks"][pid.to_string()];
        assert_eq!(
            rec["process"], true,
            "pid {pid} acknowledged but not recorded: {state}"
        );
    }
    // Restart on the stale socket: it reconciles and serves again.
    d.start();
    for pid in &acked {
        assert!(cgroup_of(*pid).ends_with("/chrome/foreground"));
    }
    d.signal(libc::SIGTERM);
    let r = run(cgqos()
        .args(["teardown", "--direct", "--cgroup-root"])
        .arg(&d.root)
        .arg("--state-dir")
        .arg(d.state()));
    assert_eq!(r.code, 0, "{}", r.stderr);
    for pid in &acked {
        assert_eq!(
            cgroup_of(*pid),
            original,
            "teardown after the restart restores {pid}"
        );
    }
}

#[test]
fn exited_processes_are_forgotten() {
    let Some(mut d) = Daemon::new("forget", OPEN_SOCKET, None) else {
        return;
    };
    let pid = d.sleeper();
    assert_eq!(d.cli(&["move", &pid.to_string(), "ui"]).code, 0);
    let state = |d: &Daemon| recorded_state(&d.state()).to_string();
    assert!(state(&d).contains(&format!("\"{pid}\"")));
    let mut c = d.sleepers.pop().unwrap();
    c.kill().unwrap();
    c.wait().unwrap();
    wait_for("the exit to be noticed", || {
        !state(&d).contains(&format!("\"{pid}\""))
    });
}

#[test]
fn the_daemon_refuses_a_socket_it_does_not_own() {
    let Some(root) = usable("owner") else { return };
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("cgqos.sock");
    std::fs::write(&sock, "not a socket").unwrap();
    let r = run(cgqos()
        .arg("daemon")
        .arg("--cgroup-root")
        .arg(&root)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--socket")
        .arg(&sock)
        .arg("--config-dir")
        .arg(dir.path()));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("exists and is not a socket"),
        "{}",
        r.stderr
    );
    assert!(
        !Path::new(&root).exists(),
        "it refused before touching any cgroup"
    );
}
