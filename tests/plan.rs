//! Plan snapshots per fixture and board, and the plan's ordering rules.
//!
//! Snapshots live in tests/snapshots/plan/; after an intended change, regenerate them with
//! `UPDATE_SNAPSHOTS=1 cargo test --test plan` and review the diff.

mod common;
use common::*;

const CASES: &[(&str, &[&str])] = &[
    ("homogeneous", &["--board", "default"]),
    ("trogdor", &["--board", "default"]),
    ("trogdor", &["--board", "trogdor"]),
    ("three-tier", &["--board", "default"]),
    ("intel-hybrid", &["--board", "brya"]),
    ("cppc-only", &["--board", "default"]),
    ("offline-cpu", &["--board", "trogdor"]),
    ("isolated", &["--board", "default"]),
    ("bad-values", &["--board", "default"]),
    ("single-cpu", &["--board", "default"]),
];

fn plan_text(fixture_name: &str, args: &[&str]) -> String {
    let r = run(cgqos()
        .arg("plan")
        .args(args)
        .arg("--sysfs-root")
        .arg(fixture(fixture_name)));
    assert_eq!(r.code, 0, "{fixture_name} {args:?}: {}", r.stderr);
    r.stdout
}

#[test]
fn plans_match_their_snapshots() {
    let dir = manifest_dir().join("tests/snapshots/plan");
    let update = std::env::var_os("UPDATE_SNAPSHOTS").is_some();
    let mut differ = Vec::new();
    for (fx, args) in CASES {
        let name = format!("{fx}--{}.txt", args[1]);
        let got = plan_text(fx, args);
        let path = dir.join(&name);
        if update {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&path).unwrap_or_else(|_| {
            panic!(
                "missing snapshot {}: run with UPDATE_SNAPSHOTS=1",
                path.display()
            )
        });
        if want != got {
            differ.push(format!("{name}:\n--- want\n{want}\n--- got\n{got}"));
        }
    }
    assert!(differ.is_empty(), "{}", differ.join("\n"));
}

fn steps(fixture_name: &str, args: &[&str]) -> Vec<serde_json::Value> {
    let r = run(cgqos()
        .args(["plan", "--json"])
        .args(args)
        .arg("--sysfs-root")
        .arg(fixture(fixture_name)));
    assert_eq!(r.code, 0, "{}", r.stderr);
    json(&r)["steps"].as_array().unwrap().clone()
}

fn value_of(steps: &[serde_json::Value], path: &str) -> Option<String> {
    steps
        .iter()
        .find(|s| s["path"] == path)
        .map(|s| s["value"].as_str().unwrap().to_string())
}

#[test]
fn trogdor_non_urgent_groups_get_the_little_cpus_and_urgent_all() {
    let s = steps("trogdor", &["--board", "trogdor"]);
    for g in ["ui", "foreground", "background"] {
        assert_eq!(
            value_of(&s, &format!("chrome/{g}/non-urgent/cpuset.cpus")).unwrap(),
            "0-5"
        );
        // resourced's rule: a background process's urgent threads get no big core.
        let urgent = if g == "background" { "0-5" } else { "0-7" };
        assert_eq!(
            value_of(&s, &format!("chrome/{g}/urgent/cpuset.cpus")).unwrap(),
            urgent
        );
    }
    assert_eq!(
        value_of(&s, "module/cpu_boost/parameters/input_boost_freq_percent").unwrap(),
        "75"
    );
}

#[test]
fn uclamp_is_written_top_down_on_every_ancestor() {
    let s = steps("trogdor", &["--board", "trogdor"]);
    for p in [
        "cpu.uclamp.min",
        "chrome/cpu.uclamp.min",
        "chrome/ui/cpu.uclamp.min",
        "chrome/ui/urgent/cpu.uclamp.min",
        "chrome/foreground/cpu.uclamp.min",
        "chrome/foreground/urgent/cpu.uclamp.min",
    ] {
        assert_eq!(value_of(&s, p).as_deref(), Some("20.00"), "{p}");
    }
    // Background work gets no boost and the lowest weight.
    assert_eq!(value_of(&s, "chrome/background/cpu.uclamp.min"), None);
    assert_eq!(value_of(&s, "chrome/background/cpu.weight").unwrap(), "1");
    let idx = |p: &str| s.iter().position(|x| x["path"] == p).unwrap();
    assert!(idx("cpu.uclamp.min") < idx("chrome/cpu.uclamp.min"));
    assert!(idx("chrome/cpu.uclamp.min") < idx("chrome/ui/cpu.uclamp.min"));
}

#[test]
fn threaded_before_controllers_below_and_parents_enable_controllers_first() {
    let s = steps("trogdor", &["--board", "trogdor"]);
    let idx = |p: &str| {
        s.iter()
            .position(|x| x["path"] == p)
            .unwrap_or_else(|| panic!("{p}"))
    };
    for g in ["chrome/ui", "chrome/foreground", "chrome/background"] {
        assert!(idx(&format!("{g}/cgroup.type")) < idx(&format!("{g}/cgroup.subtree_control")));
        assert!(idx(&format!("{g}/cgroup.subtree_control")) < idx(&format!("{g}/urgent")));
        assert!(idx("chrome/cgroup.subtree_control") < idx(&format!("{g}/cpu.weight")));
    }
    for st in &s {
        if st["op"] == "mkdir" {
            assert!(st.get("value").is_none());
        } else {
            assert!(st["value"].is_string(), "{st}");
        }
    }
}

#[test]
fn arcvm_boost_scales_with_the_little_big_frequency_ratio() {
    // brya: boost-arcvm 0.5; intel-hybrid max freqs 3.6 / 4.7 GHz: 0.5 * 3.6/4.7 * 100 = 38.30
    let s = steps("intel-hybrid", &["--board", "brya"]);
    assert_eq!(value_of(&s, "vms/arcvm/cpu.uclamp.min").unwrap(), "38.30");
    assert_eq!(
        value_of(&s, "vms/arcvm/vcpu/cpu.uclamp.min").unwrap(),
        "38.30"
    );
    assert_eq!(value_of(&s, "vms/cpu.uclamp.min").unwrap(), "38.30");
    // The root carries the largest value below it.
    assert_eq!(value_of(&s, "cpu.uclamp.min").unwrap(), "38.30");
}

#[test]
fn boost_top_app_default_follows_chromeos() {
    // trogdor capacities 415/1024: min(415*100/1024 + 5, 100) = 45
    let r = run(cgqos()
        .args(["plan", "--json", "--sysfs-root"])
        .arg(fixture("trogdor")));
    assert_eq!(json(&r)["derived"]["boost_top_app"], 45);
    let r = run(cgqos()
        .args(["plan", "--json", "--sysfs-root"])
        .arg(fixture("homogeneous")));
    assert_eq!(
        json(&r)["derived"]["boost_top_app"],
        serde_json::Value::Null
    );
}

#[test]
fn board_cpuset_nonurgent_drops_isolated_cpus() {
    // trogdor says 0-5; CPU 3 is isolated on this machine.
    let s = steps("isolated", &["--board", "trogdor"]);
    assert_eq!(
        value_of(&s, "chrome/ui/non-urgent/cpuset.cpus").unwrap(),
        "0-2,4-5"
    );
    assert_eq!(
        value_of(&s, "chrome/ui/urgent/cpuset.cpus").unwrap(),
        "0-2,4-6"
    );
}

#[test]
fn plan_touches_nothing_and_needs_no_cgroup_root() {
    let r = run(cgqos()
        .args([
            "plan",
            "--cgroup-root",
            "/nonexistent/cg",
            "--state-dir",
            "/nonexistent/state",
            "--sysfs-root",
        ])
        .arg(fixture("trogdor")));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!std::path::Path::new("/nonexistent").exists());
}

#[test]
fn global_options_work_after_the_subcommand_and_from_the_environment() {
    let before = run(cgqos()
        .args(["--board", "trogdor", "plan", "--sysfs-root"])
        .arg(fixture("trogdor")));
    let after = run(cgqos()
        .args(["plan", "--board", "trogdor", "--sysfs-root"])
        .arg(fixture("trogdor")));
    let env = run(cgqos()
        .args(["plan"])
        .env("CGQOS_BOARD", "trogdor")
        .env("CGQOS_SYSFS_ROOT", fixture("trogdor")));
    assert_eq!(before.stdout, after.stdout);
    assert_eq!(before.stdout, env.stdout);
    assert!(before.stdout.contains("non-urgent CPUs 0-5"));
}
