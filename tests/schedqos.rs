//! schedqos's own files read unchanged (issue 11, section 2): app configs with `version`,
//! `period` and `thread_qos` lists, `qos_mappings.json` in `rules.d/` or a schedqos
//! directory, `schedqos: DIR` in daemon.yaml, `QOS_INTERACTIVE`, and real-time threads left
//! alone. The loading tests run as anyone; the daemon tests need root (skipped otherwise)
//! and classify only copies of this test binary under unique names.

mod common;
use common::daemon::*;
use common::*;

use cgqos::rules::RuleSet;
use cgqos::rules::load::{load_dir, load_texts};
use cgqos::sched;

const CHILD: &str = "CGQOS_SCHEDQOS_CHILD";

fn fixture_text(rel: &str) -> String {
    std::fs::read_to_string(manifest_dir().join("tests/fixtures/schedqos").join(rel)).unwrap()
}

/// The fixture installation as `(name, text)`, in the order `schedqos: DIR` reads it.
fn fixture_set() -> RuleSet {
    let apps = fixture_text("app_configs/example.json");
    let mappings = fixture_text("qos_mappings.json");
    let profiles = fixture_text("sched_profiles.json");
    load_texts(&[
        ("app_configs/example.json", &apps),
        ("qos_mappings.json", &mappings),
        ("sched_profiles.json", &profiles),
    ])
    .unwrap()
}

fn process(argv0: &str) -> cgqos::rules::ProcessInfo {
    cgqos::rules::ProcessInfo {
        argv0: argv0.into(),
        ..Default::default()
    }
}

/// The class a rule set gives thread `comm` of program `argv0`.
fn class_of(set: &RuleSet, argv0: &str, comm: &str) -> Option<String> {
    let rule = set.rule_for(&process(argv0))?;
    set.decide(rule, comm).class.map(|c| c.name.clone())
}

#[test]
fn schedqos_shaped_files_load_with_every_key_schedqos_reads() {
    let set = fixture_set();
    let bg = set.classes.get("QOS_BACKGROUND").unwrap();
    assert_eq!(bg.name, "QOS_BACKGROUND");
    assert_eq!(bg.at, "qos_mappings.json:20");
    assert_eq!(
        (
            bg.attrs.policy,
            bg.attrs.nice,
            bg.attrs.runtime_ns,
            bg.attrs.uclamp_min,
            bg.attrs.uclamp_max
        ),
        (
            Some(sched::SCHED_BATCH),
            Some(7),
            Some(25_000_000),
            Some(0),
            Some(200)
        ),
        "the file's keys over schedqos's compiled-in values (util_min 0)"
    );
    // The cgroup class of each tag stays as it was.
    assert_eq!(
        bg.cgroup_class,
        cgqos::rules::CgroupClass::parse("non-urgent").unwrap(),
        "QOS_BACKGROUND stays non-urgent"
    );
    assert_eq!(
        set.classes
            .get("QOS_USER_INTERACTIVE")
            .unwrap()
            .cgroup_class,
        cgqos::rules::CgroupClass::parse("urgent").unwrap()
    );
    assert_eq!(
        set.classes.get("QOS_DEFAULT").unwrap().attrs.nice,
        Some(1),
        "QOS_DEFAULT and QOS_USER_INITIATED are separate tags, not one shared class"
    );
    assert_eq!(
        set.classes.get("QOS_USER_INITIATED").unwrap().attrs.nice,
        Some(-1)
    );
    // The cgqos classes themselves are untouched.
    assert_eq!(set.classes.get("background").unwrap().attrs.nice, Some(10));
    // The apps: `period`, `version` (string or number) accepted.
    assert_eq!(
        class_of(&set, "/usr/bin/browser", "browser").as_deref(),
        Some("QOS_USER_INTERACTIVE")
    );
    assert_eq!(
        class_of(&set, "ninja", "ninja").as_deref(),
        Some("QOS_BACKGROUND")
    );
    assert_eq!(
        class_of(&set, "bench", "bench-worker3").as_deref(),
        Some("QOS_USER_INITIATED")
    );
    assert_eq!(
        class_of(&set, "bench", "other"),
        None,
        "no qos: threads the map does not name are left alone"
    );
}

#[test]
fn thread_qos_lists_the_last_tag_wins_and_qos_interactive_is_user_interactive() {
    let set = fixture_set();
    // ["QOS_UTILITY", "QOS_BACKGROUND"]: schedqos inserts both under one name; the last
    // stays.
    assert_eq!(
        class_of(&set, "editor", "io-3").as_deref(),
        Some("QOS_BACKGROUND")
    );
    // QOS_INTERACTIVE is QOS_USER_INTERACTIVE with the same attributes.
    assert_eq!(
        class_of(&set, "editor", "editor").as_deref(),
        Some("QOS_USER_INTERACTIVE")
    );
    assert_eq!(
        class_of(&set, "editor", "gui").as_deref(),
        Some("QOS_UTILITY")
    );
    // Without qos_mappings.json, the shipped classes: QOS_INTERACTIVE is urgent-bursty,
    // as QOS_USER_INTERACTIVE.
    let plain = load_texts(&[(
        "a.json",
        r#"{"x": {"version": "3", "period": 8000000, "thread_qos": {"a": "QOS_INTERACTIVE", "b": ["QOS_USER_INTERACTIVE"]}}}"#,
    )])
    .unwrap();
    assert_eq!(class_of(&plain, "x", "a").as_deref(), Some("urgent-bursty"));
    assert_eq!(class_of(&plain, "x", "b").as_deref(), Some("urgent-bursty"));
    assert_eq!(
        plain.classes.get("QOS_INTERACTIVE"),
        plain.classes.get("QOS_USER_INTERACTIVE")
    );
}

#[test]
fn qos_mappings_json_in_rules_d_no_longer_fails_the_load() {
    let conf = tempfile::tempdir().unwrap();
    let rules = conf.path().join("rules.d");
    std::fs::create_dir(&rules).unwrap();
    std::fs::write(
        rules.join("qos_mappings.json"),
        r#"{"QOS_BACKGROUND": {"sched_policy": "SCHED_IDLE", "sched_nice": 19}}"#,
    )
    .unwrap();
    std::fs::write(
        rules.join("sched_profiles.json"),
        fixture_text("sched_profiles.json"),
    )
    .unwrap();
    std::fs::write(
        rules.join("apps.json"),
        r#"{"ninja": {"qos": "QOS_BACKGROUND"}}"#,
    )
    .unwrap();
    let set = load_dir(conf.path()).unwrap();
    let c = set.classes.get("QOS_BACKGROUND").unwrap();
    assert_eq!(
        (c.attrs.policy, c.attrs.nice, c.attrs.runtime_ns),
        (Some(sched::SCHED_IDLE), Some(19), None)
    );
    assert_eq!(
        class_of(&set, "ninja", "x").as_deref(),
        Some("QOS_BACKGROUND")
    );
    // Tags the file does not name keep cgqos's classes.
    assert_eq!(
        set.classes.get("QOS_UTILITY").unwrap().name,
        "utility",
        "an unnamed tag is still the shipped class"
    );
}

#[test]
fn schedqos_dir_in_daemon_yaml_reads_an_installation_in_place() {
    let sq = tempfile::tempdir().unwrap();
    std::fs::create_dir(sq.path().join("app_configs")).unwrap();
    std::fs::write(
        sq.path().join("app_configs/example.json"),
        fixture_text("app_configs/example.json"),
    )
    .unwrap();
    std::fs::write(
        sq.path().join("qos_mappings.json"),
        fixture_text("qos_mappings.json"),
    )
    .unwrap();
    std::fs::write(
        sq.path().join("sched_profiles.json"),
        fixture_text("sched_profiles.json"),
    )
    .unwrap();
    let conf = tempfile::tempdir().unwrap();
    let yaml = format!("schedqos: {}\n", sq.path().display());
    std::fs::write(conf.path().join("daemon.yaml"), &yaml).unwrap();
    let set = load_dir(conf.path()).unwrap();
    assert_eq!(
        set.files,
        vec![
            format!("{}/app_configs/example.json", sq.path().display()),
            format!("{}/qos_mappings.json", sq.path().display()),
        ]
    );
    assert_eq!(
        class_of(&set, "ninja", "ninja").as_deref(),
        Some("QOS_BACKGROUND")
    );
    assert_eq!(
        set.classes.get("QOS_BACKGROUND").unwrap().at,
        format!("{}/qos_mappings.json:20", sq.path().display())
    );
    // The daemon's own reader accepts the key.
    let etc = tempfile::tempdir().unwrap();
    cgqos::daemon::policy::parse("daemon.yaml", &yaml, etc.path()).unwrap();

    // A relative path, and a directory that does not exist: errors with file and line.
    std::fs::write(conf.path().join("daemon.yaml"), "schedqos: etc/schedqos\n").unwrap();
    let e = load_dir(conf.path()).unwrap_err().to_string();
    assert!(
        e.ends_with("daemon.yaml:1:11: schedqos: expected an absolute directory such as /etc/schedqos, found \"etc/schedqos\""),
        "{e}"
    );
    std::fs::write(
        conf.path().join("daemon.yaml"),
        "schedqos: /nonexistent-sq\n",
    )
    .unwrap();
    let e = load_dir(conf.path()).unwrap_err().to_string();
    assert_eq!(
        e,
        "/nonexistent-sq:1:1: schedqos: not a directory (daemon.yaml names it as a schedqos installation)"
    );
    // The same tag in rules.d and the installation: refused, naming both places.
    std::fs::write(conf.path().join("daemon.yaml"), &yaml).unwrap();
    std::fs::create_dir(conf.path().join("rules.d")).unwrap();
    std::fs::write(
        conf.path().join("rules.d/qos_mappings.json"),
        "{\"QOS_DEFAULT\": {\"sched_nice\": 2}}",
    )
    .unwrap();
    let e = load_dir(conf.path()).unwrap_err().to_string();
    assert!(
        e.ends_with(&format!(
            "qos_mappings.json:26:2: QOS_DEFAULT: QOS_DEFAULT is already defined at {}/rules.d/qos_mappings.json:1",
            conf.path().display()
        )),
        "{e}"
    );
}

#[test]
fn bad_schedqos_files_have_exact_errors() {
    let err = |name: &str, text: &str| load_texts(&[(name, text)]).unwrap_err().to_string();
    let m = "qos_mappings.json";
    assert_eq!(
        err(m, "{\"QOS_FAST\": {}}"),
        "qos_mappings.json:1:2: unknown QoS tag \"QOS_FAST\" (expected QOS_USER_INTERACTIVE, QOS_INTERACTIVE, QOS_USER_INITIATED, QOS_UTILITY, QOS_BACKGROUND or QOS_DEFAULT)"
    );
    assert_eq!(
        err(m, "{\"QOS_UTILITY\": {\n  \"sched_nice\": 40}}"),
        "qos_mappings.json:2:17: QOS_UTILITY.sched_nice: expected an integer -20-19, found \"40\""
    );
    assert_eq!(
        err(m, "{\"QOS_UTILITY\": {\"sched_nice\": \"4\"}}"),
        "qos_mappings.json:1:32: QOS_UTILITY.sched_nice: expected an integer -20-19, found \"4\""
    );
    assert_eq!(
        err(
            m,
            "{\"QOS_UTILITY\": {\"sched_policy\": \"SCHED_DEADLINE\"}}"
        ),
        "qos_mappings.json:1:34: QOS_UTILITY.sched_policy: SCHED_DEADLINE is not supported by cgqos (use SCHED_NORMAL, SCHED_BATCH, SCHED_IDLE, SCHED_FIFO or SCHED_RR)"
    );
    assert_eq!(
        err(m, "{\"QOS_UTILITY\": {\"sched_policy\": \"SCHED_FIFO\"}}"),
        "qos_mappings.json:1:17: QOS_UTILITY.sched_policy: SCHED_FIFO and SCHED_RR need a sched_priority 1-99"
    );
    assert_eq!(
        err(
            m,
            "{\"QOS_UTILITY\": {\"sched_util_min\": 900, \"sched_util_max\": 100}}"
        ),
        "qos_mappings.json:1:17: QOS_UTILITY: sched_util_min 900 is above sched_util_max 100"
    );
    assert_eq!(
        err(m, "{\"QOS_UTILITY\": {\"sched_latency\": 1}}"),
        "qos_mappings.json:1:18: QOS_UTILITY: unknown key `sched_latency` (expected one of: sched_policy, sched_nice, sched_priority, sched_runtime, sched_deadline, sched_period, sched_util_min, sched_util_max)"
    );
    assert_eq!(
        err("a.json", "{\"x\": {\"thread_qos\": {\"t\": []}}}"),
        "a.json:1:28: thread_qos.t: an empty list names no QoS tag"
    );
    assert_eq!(
        err(
            "a.json",
            "{\"x\": {\"thread_qos\": {\"t\": [\"QOS_UTILITY\", 3]}}}"
        ),
        "a.json:1:44: thread_qos: expected a JSON string, found 3"
    );
    assert_eq!(
        err("a.json", "{\"x\": {\"period\": \"fast\"}}"),
        "a.json:1:18: x.period: expected an integer 0-18446744073709551615, found \"fast\""
    );
}

// --- On the real kernel, through the real daemon (root only) ---

/// Not a test: the program the rules match (run as a renamed copy of this binary). Starts
/// `CGQOS_SCHEDQOS_CHILD` threads named worker-N, prints their tids, and runs until stdin
/// closes.
#[test]
#[ignore = "helper process for the schedqos tests"]
fn schedqos_child() {
    let Ok(n) = std::env::var(CHILD) else { return };
    let n: usize = n.parse().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    for i in 0..n {
        let tx = tx.clone();
        std::thread::Builder::new()
            .name(format!("worker-{i}"))
            .spawn(move || {
                // SAFETY: gettid has no preconditions.
                tx.send(unsafe { libc::gettid() } as u32).unwrap();
                std::thread::park();
            })
            .unwrap();
    }
    let mut tids: Vec<u32> = (0..n).map(|_| rx.recv().unwrap()).collect();
    tids.sort();
    let list: Vec<String> = tids.iter().map(|t| t.to_string()).collect();
    println!("TIDS {}", list.join(" "));
    let mut line = String::new();
    while std::io::stdin().read_line(&mut line).unwrap_or(0) > 0 {
        line.clear();
    }
    std::process::exit(0);
}

fn run_program(p: &Program, threads: usize) -> Running {
    run_child_program(p, "schedqos_child", CHILD, threads)
}

/// (nice, policy, rt_priority) of one thread, from /proc/PID/task/TID/stat.
fn sched_of(pid: u32, tid: u32) -> (i32, u32, u32) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).unwrap();
    let f: Vec<&str> = s[s.rfind(')').unwrap() + 2..].split_whitespace().collect();
    // Fields 19 (nice), 41 (policy), 40 (rt_priority), counted from field 3 (state).
    (
        f[16].parse().unwrap(),
        f[38].parse().unwrap(),
        f[37].parse().unwrap(),
    )
}

/// The nice value of the calling test thread, which every task it starts inherits (0 under a
/// plain `cargo test`): what "untouched" and "restored" mean.
fn start_nice() -> i32 {
    // SAFETY: gettid has no preconditions.
    sched_of(std::process::id(), unsafe { libc::gettid() } as u32).0
}

const OPEN: &str = "socket:\n  mode: \"0666\"\n";

/// A schedqos installation (root-owned temporary directory) with one app config and the
/// fixture qos_mappings.json.
fn installation(app_config: &str) -> tempfile::TempDir {
    let sq = tempfile::tempdir().unwrap();
    std::fs::create_dir(sq.path().join("app_configs")).unwrap();
    std::fs::write(sq.path().join("app_configs/test.json"), app_config).unwrap();
    std::fs::write(
        sq.path().join("qos_mappings.json"),
        fixture_text("qos_mappings.json"),
    )
    .unwrap();
    sq
}

#[test]
fn a_schedqos_installation_read_in_place_classifies_a_real_program() {
    let p = program_copy("sq", "in");
    // version, period and a thread_qos list, as schedqos's author writes them.
    let sq = installation(&format!(
        r#"{{"{0}": {{"version": "1.0", "period": 16000000, "qos": "QOS_BACKGROUND", "thread_qos": {{"{0}": ["QOS_UTILITY", "QOS_INTERACTIVE"], "worker-1": "QOS_USER_INITIATED"}}}}}}"#,
        p.name
    ));
    let config = format!("{OPEN}schedqos: {}\n", sq.path().display());
    let Some(_d) = Daemon::with("sqdir", &config, None, &[], &[]) else {
        return;
    };
    let original = cgroup_of_task(std::process::id(), std::process::id());
    let r = run_program(&p, 3);
    let pid = r.child.id();
    // The values of the fixture qos_mappings.json: USER_INTERACTIVE nice -5 normal,
    // USER_INITIATED nice -1 normal, BACKGROUND nice 7 batch.
    let (other, batch) = (sched::SCHED_OTHER, sched::SCHED_BATCH);
    wait_for(
        "the main thread QOS_USER_INTERACTIVE (last of its list)",
        || sched_of(pid, pid) == (-5, other, 0),
    );
    wait_for("worker-1 QOS_USER_INITIATED", || {
        let w1 = r.tids[1..]
            .iter()
            .filter(|&&t| sched_of(pid, t) == (-1, other, 0))
            .count();
        w1 == 1
    });
    wait_for("the other workers QOS_BACKGROUND (batch, nice 7)", || {
        r.tids
            .iter()
            .filter(|&&t| sched_of(pid, t) == (7, batch, 0))
            .count()
            == 2
    });
    // schedqos names no group: the process keeps its cgroup.
    assert_eq!(cgroup_of_task(pid, pid), original);
}

fn set_fifo(tid: u32, prio: i32) {
    let param = libc::sched_param {
        sched_priority: prio,
    };
    // SAFETY: a valid sched_param for a thread id this test started.
    let rc = unsafe { libc::sched_setscheduler(tid as i32, libc::SCHED_FIFO, &param) };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
}

#[test]
fn a_real_time_thread_is_left_alone_by_a_background_rule() {
    let p = program_copy("sq", "rt");
    // The program starts before the daemon: its first worker becomes SCHED_FIFO 10 (an
    // audio thread), then the daemon's start-up scan applies the rule to every thread.
    let r = run_program(&p, 3);
    let pid = r.child.id();
    // /proc lists a process's threads in ascending id order, and the scan classifies them
    // in that order: the lowest worker is decided before the highest.
    let (audio, last) = (r.tids[0], *r.tids.last().unwrap());
    let rules = format!(
        "classes:\n  demote: {{cgroup-class: non-urgent, policy: batch, nice: 12}}\nrules:\n  - match: {{argv0: \"{}\"}}\n    class: demote\n",
        p.name
    );
    if real_subroot("probe-sqrt").is_none() {
        return;
    }
    set_fifo(audio, 10);
    let Some(d) = Daemon::with("sqrt", OPEN, None, &[("rules.d/10-test.yaml", &rules)], &[]) else {
        return;
    };
    let batch = sched::SCHED_BATCH;
    wait_for("the fair threads demoted (batch, nice 12)", || {
        sched_of(pid, pid) == (12, batch, 0) && sched_of(pid, last) == (12, batch, 0)
    });
    let start = start_nice();
    assert_eq!(
        sched_of(pid, audio),
        (start, sched::SCHED_FIFO, 10),
        "the SCHED_FIFO thread keeps its policy, priority and nice"
    );
    let why = d.cli(&["why", &audio.to_string()]);
    assert!(
        !why.stdout.contains("demote"),
        "no record of a class for the real-time thread: {}",
        why.stdout
    );
    // Undo: reset returns the fair threads and leaves the real-time one as it is.
    let reset = d.cli(&["reset"]);
    assert_eq!(reset.code, 0, "{}", reset.stderr);
    assert_eq!(sched_of(pid, last), (start, sched::SCHED_OTHER, 0));
    assert_eq!(sched_of(pid, audio), (start, sched::SCHED_FIFO, 10));
}
