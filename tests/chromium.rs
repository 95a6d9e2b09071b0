//! A real Chromium (Debian's `chromium-headless-shell`) under the seed config of schedqos's
//! author (issue 11, section 3): "all chrome tasks background except the main threads".
//! Chromium rewrites its children's command lines into one string, forks renderers from its
//! zygote without exec, and its new threads are born with their creator's attributes. Every
//! thread of every Chromium process must end in the class of its name, and `reset` must
//! return every one to its original attributes.
//!
//! Chromium starts before the daemon, so what every thread had before cgqos is known; a tab
//! opened while the daemon runs adds a renderer forked by the zygote (fork without exec) and
//! threads born from classified ones. Root only, and only when no other Chromium runs (the
//! seed config matches every Chromium of the machine).
//!
//! Chromium sets some threads' nice itself, whether cgqos runs or not: as root, the browser
//! and GPU main threads, `Chrome_IOThread`, `Chrome_ChildIOT`, `ThreadPoolPrese`,
//! `ThreadPoolAudio`, `VizCompositorTh` and `Compositor` run at nice -8 (15 of 61 threads
//! here). Those are their originals, and `reset` gives them back -8.

mod common;
use common::daemon::*;
use common::*;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cgqos::sched;

/// The seed config, verbatim.
const SEED: &str = r#"{"chromium-headless-shell": {"qos": "QOS_BACKGROUND", "thread_qos": {"chromium-headle": "QOS_INTERACTIVE"}}}"#;
/// The executable's basename; the main thread's name is its first 15 bytes.
const APP: &str = "chromium-headless-shell";
const MAIN_COMM: &str = "chromium-headle";
const OPEN: &str = "socket:\n  mode: \"0666\"\n";

/// The seed config matches every Chromium of the machine: one test at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// What a thread's scheduling looks like from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sched {
    nice: i32,
    policy: u32,
    runtime: u64,
}

#[derive(Debug, Clone)]
struct ThreadState {
    pid: u32,
    kind: String,
    comm: String,
    start: u64,
    sched: Sched,
    cgroup: String,
}

/// (tid) -> state, for every thread of every Chromium process of the group.
type Snapshot = BTreeMap<u32, ThreadState>;

fn stat_fields(path: &str) -> Option<(String, Vec<String>)> {
    let s = std::fs::read_to_string(path).ok()?;
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let comm = s[open + 1..close].to_string();
    // Fields from 3 (state) on.
    let rest = s[close + 2..]
        .split_whitespace()
        .map(String::from)
        .collect();
    Some((comm, rest))
}

/// The process type Chromium writes into its command line (`--type=renderer`), or
/// `browser`.
fn kind_of(pid: u32) -> String {
    let c = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let text = String::from_utf8_lossy(&c).replace('\0', " ");
    text.split(' ')
        .find_map(|w| w.strip_prefix("--type="))
        .unwrap_or("browser")
        .to_string()
}

struct Chromium {
    child: Child,
    dir: tempfile::TempDir,
}

impl Chromium {
    fn start(program: &Path) -> Chromium {
        let dir = tempfile::tempdir().unwrap();
        use std::os::unix::process::CommandExt;
        // As root Chromium needs --no-sandbox; its zygote stays (no --no-zygote): the test is
        // about the processes it forks.
        let child = Command::new(program)
            .args([
                "--no-sandbox",
                "--headless",
                "--disable-gpu",
                "--no-first-run",
                "--remote-debugging-port=0",
            ])
            .arg(format!(
                "--user-data-dir={}",
                dir.path().join("profile").display()
            ))
            .arg("about:blank")
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Chromium { child, dir }
    }

    fn group(&self) -> u32 {
        self.child.id()
    }

    /// Every Chromium process of our process group (the `/usr/bin` wrapper is a shell).
    fn processes(&self) -> Vec<u32> {
        let mut out = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Some((_, f)) = stat_fields(&format!("/proc/{pid}/stat")) else {
                continue;
            };
            if f[0] == "Z" || f[2].parse::<u32>().ok() != Some(self.group()) {
                continue;
            }
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
            if exe.file_name().is_some_and(|n| n == APP) {
                out.push(pid);
            }
        }
        out.sort();
        out
    }

    fn snapshot(&self) -> Snapshot {
        let mut snap = Snapshot::new();
        for pid in self.processes() {
            let kind = kind_of(pid);
            let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
                continue;
            };
            for t in tasks.flatten() {
                let Some(tid) = t.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                    continue;
                };
                let Some((comm, f)) = stat_fields(&format!("/proc/{pid}/task/{tid}/stat")) else {
                    continue;
                };
                let Ok(a) = sched::getattr(tid) else { continue };
                let Ok(cg) = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/cgroup"))
                else {
                    continue;
                };
                let cgroup = cg
                    .lines()
                    .find_map(|l| l.strip_prefix("0::"))
                    .unwrap_or_default()
                    .to_string();
                snap.insert(
                    tid,
                    ThreadState {
                        pid,
                        kind: kind.clone(),
                        comm,
                        start: f[19].parse().unwrap(),
                        sched: Sched {
                            nice: f[16].parse().unwrap(),
                            policy: a.sched_policy,
                            runtime: a.sched_runtime,
                        },
                        cgroup,
                    },
                );
            }
        }
        snap
    }

    fn kinds(&self) -> Vec<String> {
        self.processes().into_iter().map(kind_of).collect()
    }

    /// Waits until the browser, both zygotes, the GPU, the network utility and `renderers`
    /// renderers run and the set of threads has stopped changing for a second.
    fn settle(&self, renderers: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = Vec::new();
        let mut stable_since = Instant::now();
        loop {
            let kinds = self.kinds();
            let count = |k: &str| kinds.iter().filter(|x| *x == k).count();
            let complete = count("browser") == 1
                && count("zygote") >= 1
                && count("gpu-process") >= 1
                && count("utility") >= 1
                && count("renderer") >= renderers;
            let threads: Vec<u32> = self.snapshot().into_keys().collect();
            if threads != last || !complete {
                last = threads;
                stable_since = Instant::now();
            } else if stable_since.elapsed() >= Duration::from_secs(1) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "Chromium did not settle: processes {kinds:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Opens a tab through the DevTools HTTP endpoint: a new renderer, forked by the zygote.
    fn new_tab(&self) {
        let port_file = self.dir.path().join("profile/DevToolsActivePort");
        let mut port = String::new();
        wait_for("the DevTools port", || {
            port = std::fs::read_to_string(&port_file).unwrap_or_default();
            port.lines()
                .next()
                .is_some_and(|l| l.parse::<u16>().is_ok())
        });
        let port: u16 = port.lines().next().unwrap().parse().unwrap();
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "PUT /json/new?data:text/html,tab HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut reply = String::new();
        let _ = s.read_to_string(&mut reply);
        assert!(reply.starts_with("HTTP/1.1 200"), "DevTools said: {reply}");
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        // SIGTERM lets the browser reap its children; then whatever is left of the group.
        let group = -(self.group() as i32);
        // SAFETY: kill on the process group this test created.
        unsafe { libc::kill(group, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && self.child.try_wait().ok().flatten().is_none() {
            std::thread::sleep(Duration::from_millis(50));
        }
        // SAFETY: as above.
        unsafe { libc::kill(group, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// Chromium processes outside `ours`'s group: the seed config would classify them too.
fn foreign_chromium(ours: Option<&Chromium>) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            return false;
        };
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
        exe.file_name().is_some_and(|n| n == APP)
            && ours.is_none_or(|c| !c.processes().contains(&pid))
    })
}

/// The scheduling a class gives a thread that had `original`: the class's nice and (when it
/// sets one) policy; the rest is kept.
#[derive(Clone, Copy)]
struct Class {
    nice: i32,
    policy: Option<u32>,
    runtime: Option<u64>,
    /// Its cgroup class, where the process sits in a browser group.
    cgroup_class: &'static str,
}

impl Class {
    fn of(&self, original: Sched) -> Sched {
        Sched {
            nice: self.nice,
            policy: self.policy.unwrap_or(original.policy),
            runtime: self.runtime.unwrap_or(original.runtime),
        }
    }
}

/// Every thread in the class of its name; returns the mismatches (empty: all good).
/// `original` gives a thread's policy and slice before cgqos; threads born later are
/// compared on nice and the class's own fields only. The cgroup: the class's inside
/// `group` when a rule gives one, else `cgroup` (unchanged).
fn out_of_class(
    now: &Snapshot,
    before: &Snapshot,
    (cgroup, group): (&str, Option<&str>),
    main: Class,
    other: Class,
) -> Vec<String> {
    let mut bad = Vec::new();
    for (tid, t) in now {
        let class = if t.comm == MAIN_COMM { main } else { other };
        let cgroup = match group {
            Some(g) => format!("{g}/{}", class.cgroup_class),
            None => cgroup.to_string(),
        };
        let original = match before.get(tid).filter(|b| b.start == t.start) {
            Some(b) => b.sched,
            None => Sched {
                policy: class.policy.unwrap_or(t.sched.policy),
                runtime: class.runtime.unwrap_or(t.sched.runtime),
                ..t.sched
            },
        };
        let want = class.of(original);
        if t.sched != want || t.cgroup != cgroup {
            bad.push(format!(
                "{} {tid} {} ({}): {:?} in {}, want {want:?} in {cgroup}",
                t.kind, t.comm, t.pid, t.sched, t.cgroup
            ));
        }
    }
    bad
}

/// After reset: a thread that ran before the daemon has exactly what it had; a thread born
/// later has what it would have had without cgqos: its creator's original, or what
/// Chromium itself gives a thread of that name in that kind of process (seen before the
/// daemon started), and never a class's attributes otherwise.
fn not_restored(now: &Snapshot, before: &Snapshot, cgroup: &str) -> Vec<String> {
    let mut bad = Vec::new();
    for (tid, t) in now {
        let ok = match before.get(tid).filter(|b| b.start == t.start) {
            Some(b) => t.sched == b.sched && t.cgroup == b.cgroup,
            None => {
                let same_name: Vec<Sched> = before
                    .values()
                    .filter(|b| b.kind == t.kind && b.comm == t.comm)
                    .map(|b| b.sched)
                    .collect();
                let creator = before.get(&t.pid).map(|m| m.sched).or_else(|| {
                    before
                        .values()
                        .find(|b| b.kind == "zygote")
                        .map(|z| z.sched)
                });
                (same_name.contains(&t.sched) || creator == Some(t.sched)) && t.cgroup == cgroup
            }
        };
        if !ok {
            let was = before.get(tid).map(|b| format!("{:?}", b.sched));
            bad.push(format!(
                "{} {tid} {} ({}): {:?} in {} (before the daemon: {})",
                t.kind,
                t.comm,
                t.pid,
                t.sched,
                t.cgroup,
                was.as_deref().unwrap_or("born later")
            ));
        }
    }
    bad
}

fn table(s: &Snapshot) -> String {
    s.iter()
        .map(|(tid, t)| format!("  {} {} {tid} {} {:?}", t.kind, t.pid, t.comm, t.sched))
        .collect::<Vec<_>>()
        .join("\n")
}

fn wait_in_class(
    c: &Chromium,
    before: &Snapshot,
    cgroup: (&str, Option<&str>),
    main: Class,
    other: Class,
    d: &Daemon,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = c.snapshot();
        let bad = out_of_class(&now, before, cgroup, main, other);
        if bad.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} threads out of class:\n{}\ndaemon log:\n{}",
            bad.len(),
            now.len(),
            bad.join("\n"),
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `cgqos reset` through the daemon, then every thread as [`not_restored`] wants it.
fn check_reset(chromium: &Chromium, before: &Snapshot, cgroup: &str, d: &Daemon) {
    let reset = d.cli(&["reset"]);
    assert_eq!(reset.code, 0, "{}{}", reset.stdout, reset.stderr);
    let after = chromium.snapshot();
    let bad = not_restored(&after, before, cgroup);
    assert!(
        bad.is_empty(),
        "{} of {} threads not restored by reset:\n{}\nreset said: {}\ndaemon log:\n{}",
        bad.len(),
        after.len(),
        bad.join("\n"),
        reset.stdout,
        d.log()
    );
}

/// The whole scenario for one way of installing the seed config; `group`: a rule also
/// puts Chromium in the background group.
fn scenario(
    tag: &str,
    (config, files): (&str, &[(&str, &str)]),
    main: Class,
    other: Class,
    group: bool,
) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let Some(program) = clients::program(&[APP]) else {
        return;
    };
    if real_subroot(&format!("probe-{tag}")).is_none() {
        return;
    }
    if foreign_chromium(None) {
        root_only::skipped(
            "another Chromium runs on this machine (the seed config would classify it)",
        );
        return;
    }
    // SAFETY: gettid has no preconditions.
    let me = unsafe { libc::gettid() } as u32;
    let cgroup = cgroup_of_task(std::process::id(), me);
    let chromium = Chromium::start(&program);
    chromium.settle(1);
    let before = chromium.snapshot();
    eprintln!(
        "before the daemon ({} threads):\n{}",
        before.len(),
        table(&before)
    );
    assert!(
        before.len() >= 30,
        "a real Chromium has dozens of threads:\n{}",
        table(&before)
    );

    let Some(d) = Daemon::with(tag, config, None, files, &[]) else {
        return;
    };
    let group_dir = group.then(|| {
        let root = d.root.file_name().unwrap().to_str().unwrap();
        format!("/{root}/chrome/background")
    });
    let placed = (cgroup.as_str(), group_dir.as_deref());
    // The start-up scan: processes with rewritten command lines and zygote children too.
    wait_in_class(&chromium, &before, placed, main, other, &d);
    // A tab opened now: a renderer forked by the zygote (no exec), threads born from
    // classified threads.
    let renderers = chromium.kinds().iter().filter(|k| *k == "renderer").count();
    chromium.new_tab();
    chromium.settle(renderers + 1);
    wait_in_class(&chromium, &before, placed, main, other, &d);
    let classified = chromium.snapshot();
    eprintln!(
        "classified ({} threads):\n{}",
        classified.len(),
        table(&classified)
    );
    assert!(
        classified.keys().any(|t| !before.contains_key(t)),
        "the new tab added threads"
    );

    check_reset(&chromium, &before, &cgroup, &d);
    assert!(
        !foreign_chromium(Some(&chromium)),
        "a Chromium of someone else appeared meanwhile"
    );
}

/// The shipped classes: QOS_INTERACTIVE is urgent-bursty (nice -8), QOS_BACKGROUND is
/// background (nice 10); neither sets a policy or slice (and this kernel has no uclamp).
const URGENT_BURSTY: Class = Class {
    nice: -8,
    policy: None,
    runtime: None,
    cgroup_class: "urgent",
};
const BACKGROUND: Class = Class {
    nice: 10,
    policy: None,
    runtime: None,
    cgroup_class: "non-urgent",
};

#[test]
fn seed_config_in_rules_d_classifies_every_chromium_thread_and_reset_restores_them() {
    let files = [("rules.d/seed.json", SEED)];
    scenario("chr", (OPEN, &files), URGENT_BURSTY, BACKGROUND, false);
}

/// The seed config with a YAML rule that gives the same app a group: every process in
/// `chrome/background`, each thread in its class's cgroup (urgent, non-urgent), the new
/// renderer born there from the zygote; `reset` moves every one back.
#[test]
fn seed_config_with_a_group_places_every_chromium_thread_and_reset_moves_them_back() {
    let group = "rules:\n  - name: chromium-group\n    match: {argv0: chromium-headless-shell}\n    group: background\n";
    let files = [
        ("rules.d/00-group.yaml", group),
        ("rules.d/seed.json", SEED),
    ];
    scenario("chrg", (OPEN, &files), URGENT_BURSTY, BACKGROUND, true);
}

/// Through a schedqos installation with the fixture qos_mappings.json: QOS_USER_INTERACTIVE
/// is SCHED_NORMAL nice -5 slice 6 ms, QOS_BACKGROUND SCHED_BATCH nice 7 slice 25 ms.
#[test]
fn seed_config_in_a_schedqos_installation_with_its_mappings() {
    let sq = tempfile::tempdir().unwrap();
    std::fs::create_dir(sq.path().join("app_configs")).unwrap();
    std::fs::write(sq.path().join("app_configs/chromium.json"), SEED).unwrap();
    let mappings = manifest_dir().join("tests/fixtures/schedqos/qos_mappings.json");
    std::fs::copy(mappings, sq.path().join("qos_mappings.json")).unwrap();
    let config = format!("{OPEN}schedqos: {}\n", sq.path().display());
    let main = Class {
        nice: -5,
        policy: Some(sched::SCHED_OTHER),
        runtime: Some(6_000_000),
        cgroup_class: "urgent",
    };
    let other = Class {
        nice: 7,
        policy: Some(sched::SCHED_BATCH),
        runtime: Some(25_000_000),
        cgroup_class: "non-urgent",
    };
    scenario("chrsq", (&config, &[]), main, other, false);
}
