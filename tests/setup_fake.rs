//! `setup`, `status` and `teardown` logic on fake cgroup trees. The fake, like cgroupfs, has
//! only the files the kernel would create, so a write to an unknown file fails. What only
//! the kernel can say (threaded moves, EBUSY, effective cpusets, uclamp) is tested against
//! real kernels: tests/real_cgroup2.rs here and tests/vm/ in QEMU.

mod common;
use common::*;

fn setup(f: &FakeCgroup, state: &std::path::Path, extra: &[&str]) -> Run {
    run(cgqos()
        .args([
            "setup",
            "--board",
            "trogdor",
            "--allow-non-cgroupfs",
            "--sysfs-root",
        ])
        .arg(fixture("trogdor"))
        .arg("--cgroup-root")
        .arg(f.root())
        .arg("--state-dir")
        .arg(state)
        .args(extra))
}

#[test]
fn setup_writes_every_value_then_a_second_run_writes_nothing() {
    let f = fake_with_groups(&["cpu", "cpuset"], true);
    let state = tempfile::tempdir().unwrap();
    let files_before = f.files();
    let r = setup(&f, state.path(), &["--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let j = json(&r);
    // Only the input boost: the fixture is not a ChromeOS kernel with the cpu_boost module.
    assert_eq!(j["unsupported"], 1);
    let ib = j["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["result"] == "unsupported")
        .unwrap();
    assert_eq!(
        ib["path"],
        "module/cpu_boost/parameters/input_boost_freq_percent"
    );
    assert_eq!(ib["tree"], "sysfs");
    assert!(j["changed"].as_u64().unwrap() > 30);
    assert_eq!(f.read("chrome/ui/non-urgent/cpuset.cpus"), "0-5");
    assert_eq!(f.read("chrome/ui/urgent/cpuset.cpus"), "0-7");
    assert_eq!(f.read("chrome/ui/urgent/cpu.uclamp.min"), "20.00");
    assert_eq!(f.read("chrome/background/cpu.weight"), "1");
    assert_eq!(f.read("chrome/ui/cgroup.type"), "threaded");
    assert_eq!(
        f.read("chrome/cgroup.type"),
        "domain\n",
        "the thread root stays a domain"
    );
    // A fake file records only the last write; the kernel accumulates "+cpu +cpuset".
    assert_eq!(f.read("chrome/cgroup.subtree_control"), "+cpu +cpuset");
    assert_eq!(
        f.files(),
        files_before,
        "setup created files cgroupfs would not have"
    );

    // Make the fake look like the kernel after those writes, then converge again.
    for g in [
        "",
        "chrome",
        "chrome/ui",
        "chrome/foreground",
        "chrome/background",
        "vms",
        "vms/arcvm",
    ] {
        let p = if g.is_empty() {
            "cgroup.subtree_control".to_string()
        } else {
            format!("{g}/cgroup.subtree_control")
        };
        std::fs::write(f.root().join(p), "cpu cpuset\n").unwrap();
    }
    let r = setup(&f, state.path(), &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("nothing to do"), "{}", r.stdout);
    let r = setup(&f, state.path(), &["--json"]);
    assert_eq!(json(&r)["changed"], 0);
}

#[test]
fn values_are_compared_as_the_kernel_means_them() {
    let f = fake_with_groups(&["cpu", "cpuset"], true);
    let state = tempfile::tempdir().unwrap();
    setup(&f, state.path(), &[]);
    // The kernel prints "20" back as "20.00" and may print a cpulist differently.
    std::fs::write(f.root().join("chrome/ui/cpu.uclamp.min"), "20\n").unwrap();
    std::fs::write(
        f.root().join("chrome/ui/non-urgent/cpuset.cpus"),
        "0,1,2,3,4,5\n",
    )
    .unwrap();
    let r = setup(&f, state.path(), &["--json"]);
    let changed: Vec<String> = json(&r)["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["result"] == "changed")
        .map(|s| s["path"].as_str().unwrap().to_string())
        .collect();
    assert!(
        !changed
            .iter()
            .any(|p| p.ends_with("cpu.uclamp.min") || p.ends_with("cpuset.cpus")),
        "{changed:?}"
    );
}

#[test]
fn a_kernel_without_uclamp_or_cpuset_is_reported_not_fatal() {
    let f = fake_with_groups(&["cpu"], false);
    let state = tempfile::tempdir().unwrap();
    let r = setup(&f, state.path(), &["--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let j = json(&r);
    let unsupported: Vec<String> = j["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["result"] == "unsupported")
        .map(|s| {
            format!(
                "{} | {}",
                s["path"].as_str().unwrap(),
                s["detail"].as_str().unwrap()
            )
        })
        .collect();
    assert!(
        unsupported
            .iter()
            .any(|u| u.starts_with("chrome/ui/urgent/cpu.uclamp.min | no cpu.uclamp.min")),
        "{unsupported:?}"
    );
    assert!(
        unsupported
            .iter()
            .any(|u| u.starts_with("chrome/ui/non-urgent/cpuset.cpus | no cpuset controller")),
        "{unsupported:?}"
    );
    assert!(unsupported.iter().any(|u| u.starts_with("cgroup.subtree_control | controller cpuset not available here")), "{unsupported:?}");
    // The rest was applied.
    assert_eq!(f.read("chrome/background/cpu.weight"), "1");
    assert_eq!(f.read("cgroup.subtree_control"), "+cpu");
}

#[test]
fn strict_refuses_before_the_first_write() {
    let f = fake_with_groups(&["cpu"], false);
    let state = tempfile::tempdir().unwrap();
    let before: Vec<(String, String)> = f
        .files()
        .into_iter()
        .map(|p| (p.clone(), f.read(&p)))
        .collect();
    let r = setup(&f, state.path(), &["--strict"]);
    assert_eq!(r.code, 5, "{}", r.stderr);
    assert!(
        r.stderr.contains("--strict: nothing written"),
        "{}",
        r.stderr
    );
    let after: Vec<(String, String)> = f
        .files()
        .into_iter()
        .map(|p| (p.clone(), f.read(&p)))
        .collect();
    assert_eq!(before, after);
}

#[test]
fn dry_run_predicts_files_of_groups_it_would_create() {
    // Only the root exists; it offers cpu but not cpuset, and no uclamp.
    let f = FakeCgroup::new(&["cpu"], false);
    std::fs::create_dir(f.root().join("probe")).unwrap();
    std::fs::write(f.root().join("probe/cgroup.controllers"), "cpu\n").unwrap();
    std::fs::write(f.root().join("probe/cgroup.type"), "domain\n").unwrap();
    std::fs::write(f.root().join("probe/cpu.weight"), "100\n").unwrap();
    let state = tempfile::tempdir().unwrap();
    let before = f.files();
    let r = setup(&f, state.path(), &["--dry-run", "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(f.files(), before, "a dry run writes nothing");
    let j = json(&r);
    let outcome = |p: &str| {
        j["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["path"] == p)
            .unwrap()["result"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(outcome("chrome"), "changed");
    assert_eq!(outcome("chrome/ui/cpu.weight"), "changed");
    assert_eq!(outcome("chrome/ui/cpu.uclamp.min"), "unsupported");
    assert_eq!(outcome("chrome/ui/urgent/cpuset.cpus"), "unsupported");
}

#[test]
fn a_failed_write_names_path_and_value_and_says_how_to_converge() {
    let f = fake_with_groups(&["cpu", "cpuset"], true);
    let state = tempfile::tempdir().unwrap();
    // A file that reads but refuses writes, as a kernel file refusing a value would.
    let p = f.root().join("chrome/ui/cpu.weight");
    std::fs::remove_file(&p).unwrap();
    std::os::unix::fs::symlink("/proc/version", &p).unwrap();
    let r = setup(&f, state.path(), &[]);
    assert_ne!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("chrome/ui/cpu.weight"), "{}", r.stderr);
    assert!(r.stderr.contains("\"100\""), "{}", r.stderr);
    assert!(
        r.stderr.contains("run setup again to converge"),
        "{}",
        r.stderr
    );
}

#[test]
fn status_reports_requested_effective_and_unsupported() {
    let f = fake_with_groups(&["cpu"], false);
    let state = tempfile::tempdir().unwrap();
    setup(&f, state.path(), &[]);
    let r = run(cgqos()
        .args([
            "status",
            "--json",
            "--board",
            "trogdor",
            "--allow-non-cgroupfs",
            "--sysfs-root",
        ])
        .arg(fixture("trogdor"))
        .arg("--cgroup-root")
        .arg(f.root()));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let j = json(&r);
    let groups = j["groups"].as_array().unwrap();
    let bg = groups
        .iter()
        .find(|g| g["path"] == "chrome/background")
        .unwrap();
    let w = bg["settings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["file"] == "cpu.weight")
        .unwrap();
    assert_eq!(
        (
            w["requested"].as_str(),
            w["current"].as_str(),
            w["state"].as_str()
        ),
        (Some("1"), Some("1"), Some("ok"))
    );
    assert!(
        j["unsupported"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u == "chrome/ui/urgent/cpuset.cpus")
    );
}

#[test]
fn setup_refuses_a_root_outside_cgroup2_without_the_test_switch() {
    let dir = tempfile::tempdir().unwrap();
    let r = run(cgqos()
        .args(["setup", "--sysfs-root"])
        .arg(fixture("trogdor"))
        .arg("--cgroup-root")
        .arg(dir.path())
        .arg("--state-dir")
        .arg(dir.path().join("state")));
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("is not on a cgroup2 filesystem"),
        "{}",
        r.stderr
    );
}

#[test]
fn move_of_a_vanished_pid_exits_3_and_a_bad_group_exits_2() {
    let f = fake_with_groups(&["cpu"], false);
    let state = tempfile::tempdir().unwrap();
    let base = |args: &[&str]| {
        run(cgqos()
            .args(args)
            .arg("--cgroup-root")
            .arg(f.root())
            .arg("--state-dir")
            .arg(state.path()))
    };
    let r = base(&["move", "4999999", "background"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stdout
            .contains("4999999: not moved: no such process or thread 4999999"),
        "{}",
        r.stdout
    );
    let r = base(&["move", "1", "nowhere"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("unknown group \"nowhere\""),
        "{}",
        r.stderr
    );
    let r = base(&["move", "abc", "background"]);
    assert_eq!(r.code, 2);
    let r = base(&["move", "--thread", "1", "sideways"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("unknown thread class \"sideways\""),
        "{}",
        r.stderr
    );
}

#[test]
fn kernel_threads_are_refused() {
    // kthreadd is pid 2 wherever the kernel's own pid namespace is visible.
    let Ok(stat) = std::fs::read_to_string("/proc/2/stat") else {
        eprintln!("skipped: no pid 2 in this pid namespace");
        return;
    };
    if !stat.contains("(kthreadd)") {
        eprintln!("skipped: pid 2 is not kthreadd here");
        return;
    }
    let f = fake_with_groups(&["cpu"], false);
    let state = tempfile::tempdir().unwrap();
    let r = run(cgqos()
        .args(["move", "2", "background", "--cgroup-root"])
        .arg(f.root())
        .arg("--state-dir")
        .arg(state.path()));
    assert_eq!(r.code, 2, "{}", r.stdout);
    assert!(r.stdout.contains("is a kernel thread"), "{}", r.stdout);
}

#[test]
fn input_boost_is_written_where_the_cpu_boost_module_exists() {
    let f = fake_with_groups(&["cpu", "cpuset"], true);
    let state = tempfile::tempdir().unwrap();
    let (sysfs, param) = sysfs_with_input_boost("0\n");
    let r = run(cgqos()
        .args([
            "setup",
            "--board",
            "trogdor",
            "--allow-non-cgroupfs",
            "--json",
            "--sysfs-root",
        ])
        .arg(sysfs.path())
        .arg("--cgroup-root")
        .arg(f.root())
        .arg("--state-dir")
        .arg(state.path()));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(json(&r)["unsupported"], 0);
    assert_eq!(std::fs::read_to_string(&param).unwrap(), "75");
}
