//! `cgqos detect` on fixture sysfs trees (tests/fixtures/sysfs/README.md lists them).

mod common;
use common::*;

fn detect(fixture_name: &str) -> serde_json::Value {
    let r = run(cgqos()
        .args(["detect", "--json", "--sysfs-root"])
        .arg(fixture(fixture_name)));
    assert_eq!(r.code, 0, "{}", r.stderr);
    json(&r)
}

fn check(name: &str, source: Option<&str>, little: &str, all: &str) {
    let j = detect(name);
    assert_eq!(j["source"].as_str(), source, "{name}: {j}");
    assert_eq!(j["little"], little, "{name}");
    assert_eq!(j["all"], all, "{name}");
    assert_eq!(j["hybrid"], !little.is_empty(), "{name}");
}

#[test]
fn homogeneous_cpus_are_not_hybrid() {
    check("homogeneous", None, "", "0-3");
}

#[test]
fn trogdor_little_cores_by_capacity() {
    check("trogdor", Some("cpu_capacity"), "0-5", "0-7");
    let j = detect("trogdor");
    assert_eq!(j["cpus"][0]["value"], 415);
    assert_eq!(j["cpus"][7]["value"], 1024);
    assert_eq!(j["cpus"][7]["online"], true);
}

#[test]
fn three_tier_part_takes_the_two_lowest_tiers_printed_numerically() {
    // ChromeOS prints "10,11,12,13,4,5,6,7,8,9" here (string sort).
    check("three-tier", Some("cpuinfo_max_freq"), "4-13", "0-13");
}

#[test]
fn intel_hybrid_prefers_the_kernels_cpu_atom_list() {
    check("intel-hybrid", Some("cpu_atom"), "4-11", "0-11");
}

#[test]
fn cppc_is_the_last_resort() {
    check("cppc-only", Some("acpi_cppc"), "0-3", "0-7");
}

#[test]
fn offline_cpus_are_not_read_and_not_usable() {
    check("offline-cpu", Some("cpu_capacity"), "0-5", "0-6");
    let j = detect("offline-cpu");
    assert_eq!(j["cpus"][7]["online"], false);
    assert_eq!(j["cpus"][7]["value"], serde_json::Value::Null);
}

#[test]
fn isolated_cpus_are_in_no_set() {
    check("isolated", Some("cpu_capacity"), "0-2", "0-2,4-6");
}

#[test]
fn zero_and_unreadable_values_skip_the_cpu_with_a_warning() {
    check("bad-values", Some("cpu_capacity"), "0-1", "0-5");
    let j = detect("bad-values");
    let warnings: Vec<String> = j["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap().to_string())
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("cpu2/cpu_capacity") && w.contains("value is 0")),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("cpu3/cpu_capacity") && w.contains("unreadable")),
        "{warnings:?}"
    );
    assert_eq!(j["cpus"][2]["value"], serde_json::Value::Null);
}

#[test]
fn a_different_cpu_that_is_isolated_does_not_make_a_hybrid() {
    check("isolated-only-differs", None, "", "0-2");
}

#[test]
fn single_cpu() {
    check("single-cpu", None, "", "0");
}

#[test]
fn board_cpuset_nonurgent_overrides_detection() {
    let r = run(cgqos()
        .args(["detect", "--json", "--board", "trogdor", "--sysfs-root"])
        .arg(fixture("three-tier")));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let j = json(&r);
    assert_eq!(j["source"], "board");
    assert_eq!(j["little"], "0-5");
    // --no-board shows what the kernel alone says.
    let r = run(cgqos()
        .args([
            "detect",
            "--json",
            "--no-board",
            "--board",
            "trogdor",
            "--sysfs-root",
        ])
        .arg(fixture("three-tier")));
    assert_eq!(json(&r)["source"], "cpuinfo_max_freq");
}

#[test]
fn board_cpus_outside_the_possible_set_are_an_error() {
    // trogdor's cpuset-nonurgent 0-5 on a 4-CPU machine.
    let r = run(cgqos()
        .args(["detect", "--board", "trogdor", "--sysfs-root"])
        .arg(fixture("homogeneous")));
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("scheduler-tune.cpuset-nonurgent: CPUs 4-5 are not possible on this machine (possible: 0-3)"), "{}", r.stderr);
    assert!(r.stderr.contains("trogdor/model.yaml:"), "{}", r.stderr);
}

#[test]
fn missing_sysfs_is_a_clear_error() {
    let r = run(cgqos().args(["detect", "--sysfs-root", "/nonexistent-sysfs"]));
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("/nonexistent-sysfs/devices/system/cpu"),
        "{}",
        r.stderr
    );
}

#[test]
fn text_output_names_source_and_sets() {
    let r = run(cgqos()
        .args(["detect", "--sysfs-root"])
        .arg(fixture("trogdor")));
    assert!(r.stdout.contains("source:   cpu_capacity"), "{}", r.stdout);
    assert!(r.stdout.contains("little:   0-5"), "{}", r.stdout);
}
