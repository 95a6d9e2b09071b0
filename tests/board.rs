//! Board model files: every key, overlays, anchors and merge keys, and bad inputs, each with
//! its exact error (file, line, column, key, expected vs found).

mod common;
use cgqos::board::{BoardError, load_texts};
use common::*;

fn wrap(config: &str) -> String {
    let mut s = String::from(
        "chromeos:\n  devices:\n    - $device-name: \"dev\"\n      skus:\n        - config:\n            name: \"{{$device-name}}\"\n",
    );
    for line in config.lines() {
        s.push_str("            ");
        s.push_str(line);
        s.push('\n');
    }
    s
}

fn err(text: &str) -> String {
    match load_texts(&[("m.yaml", text)], None, None) {
        Ok(b) => panic!("expected an error, got {b:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn every_scheduler_tune_and_cgqos_key_is_read() {
    let text = wrap(
        "scheduler-tune:\n  boost-urgent: 30\n  input-boost: 75\n  cpuset-nonurgent: 0-3,6\n  boost-top-app: 60\n  boost-arcvm: 0.5\ncgqos:\n  ui-cpu-weight: 200\n  foreground-cpu-weight: 150\n  background-cpu-weight: 5\n  arcvm: false\n  arcvm-cpu-weight: 300\n  vm-cpu-weight: 50\n  favor-dynmods: true\n",
    );
    let b = load_texts(&[("m.yaml", &text)], None, None).unwrap();
    let t = &b.scheduler_tune;
    assert_eq!(b.name, "dev");
    assert_eq!(t.boost_urgent.value, 30);
    assert_eq!(t.boost_urgent.at.as_ref().unwrap().line, 8);
    assert_eq!(t.input_boost.as_ref().unwrap().value, 75);
    assert_eq!(
        t.cpuset_nonurgent.as_ref().unwrap().value.to_string(),
        "0-3,6"
    );
    assert_eq!(t.boost_top_app.as_ref().unwrap().value, 60);
    assert_eq!(t.boost_arcvm.as_ref().unwrap().value, 0.5);
    let c = &b.cgqos;
    assert_eq!(
        (
            c.ui_cpu_weight.value,
            c.foreground_cpu_weight.value,
            c.background_cpu_weight.value
        ),
        (200, 150, 5)
    );
    assert!(!c.arcvm.value);
    assert_eq!((c.arcvm_cpu_weight.value, c.vm_cpu_weight.value), (300, 50));
    assert!(c.favor_dynmods.value);
}

#[test]
fn defaults_when_keys_are_absent() {
    let b = load_texts(&[("m.yaml", &wrap("scheduler-tune: {}"))], None, None).unwrap();
    assert_eq!(b.scheduler_tune.boost_urgent.value, 20);
    assert!(b.scheduler_tune.boost_urgent.at.is_none());
    assert!(b.scheduler_tune.cpuset_nonurgent.is_none());
    assert_eq!(b.cgqos.background_cpu_weight.value, 1);
    assert!(b.cgqos.arcvm.value);
}

#[test]
fn single_cpu_and_mixed_cpulists_are_accepted_unlike_chromeos() {
    for (list, printed) in [("3", "3"), ("0-3,6", "0-3,6"), ("\"0,1,2\"", "0-2")] {
        let b = load_texts(
            &[(
                "m.yaml",
                &wrap(&format!("scheduler-tune:\n  cpuset-nonurgent: {list}")),
            )],
            None,
            None,
        )
        .unwrap();
        assert_eq!(
            b.scheduler_tune.cpuset_nonurgent.unwrap().value.to_string(),
            printed
        );
    }
}

#[test]
fn shipped_boards_load() {
    for name in ["default", "trogdor", "brya"] {
        let r = run(cgqos().args(["validate", "--board", name]));
        assert_eq!(r.code, 0, "{name}: {}", r.stderr);
    }
    let r = run(cgqos().args(["validate", "--json", "--board", "trogdor"]));
    let j = json(&r);
    assert_eq!(j["scheduler_tune"]["cpuset_nonurgent"]["value"], "0-5");
    assert_eq!(j["scheduler_tune"]["input_boost"]["value"], 75);
}

#[test]
fn trogdor_merge_keys_with_a_list_of_anchors() {
    let text = std::fs::read_to_string(board_file("trogdor/model.yaml")).unwrap();
    let b = load_texts(&[("trogdor.yaml", &text)], Some("trogdor"), None).unwrap();
    let t = &b.scheduler_tune;
    assert_eq!(t.boost_urgent.value, 20);
    assert_eq!(t.input_boost.as_ref().unwrap().value, 75);
    assert_eq!(
        t.cpuset_nonurgent.as_ref().unwrap().value.to_string(),
        "0-5"
    );
    // The value's location is where the anchor defined it.
    assert_eq!(
        t.input_boost.as_ref().unwrap().at.as_ref().unwrap().line,
        11
    );
}

#[test]
fn overlays_merge_maps_key_by_key() {
    let r = run(cgqos()
        .args(["validate", "--json", "--model"])
        .arg(board_file("trogdor/model.yaml"))
        .arg("--model")
        .arg(board_file("examples/trogdor-overlay.yaml")));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let j = json(&r);
    assert_eq!(j["scheduler_tune"]["boost_urgent"]["value"], 40);
    assert!(
        j["scheduler_tune"]["boost_urgent"]["at"]
            .as_str()
            .unwrap()
            .contains("trogdor-overlay.yaml:")
    );
    assert_eq!(j["scheduler_tune"]["cpuset_nonurgent"]["value"], "0-5");
    assert_eq!(j["scheduler_tune"]["input_boost"]["value"], 75);
    assert_eq!(j["cgqos"]["background_cpu_weight"]["value"], 5);
    assert_eq!(j["files"].as_array().unwrap().len(), 2);
}

#[test]
fn device_and_sku_selection() {
    let text = "chromeos:\n  devices:\n    - $device-name: a\n      skus:\n        - $sku-id: 1\n          config: {scheduler-tune: {boost-urgent: 11}}\n        - $sku-id: 2\n          config: {scheduler-tune: {boost-urgent: 12}}\n    - $device-name: b\n      skus:\n        - config: {scheduler-tune: {boost-urgent: 30}}\n";
    let pick = |board, sku| load_texts(&[("m.yaml", text)], board, sku);
    assert_eq!(
        pick(Some("a"), None)
            .unwrap()
            .scheduler_tune
            .boost_urgent
            .value,
        11
    );
    assert_eq!(
        pick(Some("a"), Some(2))
            .unwrap()
            .scheduler_tune
            .boost_urgent
            .value,
        12
    );
    assert_eq!(
        pick(Some("b"), None)
            .unwrap()
            .scheduler_tune
            .boost_urgent
            .value,
        30
    );
    let e = pick(None, None).unwrap_err().to_string();
    assert_eq!(
        e,
        "several devices and none named \"default\": choose one with --board (devices: a, b)"
    );
    let e = pick(Some("c"), None).unwrap_err().to_string();
    assert_eq!(e, "no device named \"c\" in m.yaml (devices: a, b)");
    let e = pick(Some("a"), Some(9)).unwrap_err().to_string();
    assert_eq!(e, "m.yaml: device \"a\" has no SKU 9 (SKUs: 1, 2)");
}

#[test]
fn flattened_configs_form() {
    let text = "chromeos:\n  configs:\n    - name: x\n      identity: {sku-id: 4}\n      scheduler-tune: {boost-urgent: 44}\n      audio: {whatever: 1}\n";
    let b = load_texts(&[("f.yaml", text)], None, Some(4)).unwrap();
    assert_eq!(
        (b.name.as_str(), b.sku, b.scheduler_tune.boost_urgent.value),
        ("x", Some(4), 44)
    );
}

#[test]
fn bad_inputs_have_exact_errors() {
    let cases: Vec<(String, &str)> = vec![
        (wrap("scheduler-tune:\n  boost-urgent: 120"), "m.yaml:8:29: scheduler-tune.boost-urgent: expected an integer 0-100, found \"120\""),
        (wrap("scheduler-tune:\n  boost-urgent: \"20\""), "m.yaml:8:29: scheduler-tune.boost-urgent: expected an integer 0-100, found \"20\""),
        (wrap("scheduler-tune:\n  boost-urgent: -1"), "m.yaml:8:29: scheduler-tune.boost-urgent: expected an integer 0-100, found \"-1\""),
        (wrap("scheduler-tune:\n  input-boost: [1]"), "m.yaml:8:28: scheduler-tune.input-boost: expected an integer 0-100, found a list"),
        (wrap("scheduler-tune:\n  boost-arcvm: 1.5"), "m.yaml:8:28: scheduler-tune.boost-arcvm: expected a number 0.0-1.0, found \"1.5\""),
        (wrap("scheduler-tune:\n  boost-top-app: 101"), "m.yaml:8:30: scheduler-tune.boost-top-app: expected an integer 0-100, found \"101\""),
        (wrap("scheduler-tune:\n  cpuset-nonurgent: 5-2"), "m.yaml:8:33: scheduler-tune.cpuset-nonurgent: expected a CPU list such as \"0-5\": range \"5-2\" runs backwards"),
        (wrap("scheduler-tune:\n  cpuset-nonurgent: little"), "m.yaml:8:33: scheduler-tune.cpuset-nonurgent: expected a CPU list such as \"0-5\": \"little\" is not a CPU number"),
        (wrap("scheduler-tune:\n  cpuset-nonurgent: \"\""), "m.yaml:8:33: scheduler-tune.cpuset-nonurgent: expected a CPU list such as \"0-5\", found an empty list"),
        (wrap("scheduler-tune:\n  boost-urgnet: 20"), "m.yaml:8:15: scheduler-tune: unknown key `boost-urgnet` (expected one of: boost-urgent, input-boost, cpuset-nonurgent, boost-top-app, boost-arcvm)"),
        (wrap("scheduler-tune: 20"), "m.yaml:7:29: `scheduler-tune` must be a mapping, found a scalar"),
        (wrap("cgqos:\n  background-cpu-weight: 0"), "m.yaml:8:38: cgqos.background-cpu-weight: expected an integer 1-10000, found \"0\""),
        (wrap("cgqos:\n  arcvm: yes"), "m.yaml:8:22: cgqos.arcvm: expected true or false, found \"yes\""),
        (wrap("cgqos:\n  weights: {}"), "m.yaml:8:15: cgqos: unknown key `weights` (expected one of: ui-cpu-weight, foreground-cpu-weight, background-cpu-weight, arcvm, arcvm-cpu-weight, vm-cpu-weight, favor-dynmods)"),
        (wrap("cgqos:\n  favor-dynmods: 1"), "m.yaml:8:30: cgqos.favor-dynmods: expected true or false, found \"1\""),
        (wrap("scheduler-tune:\n  boost-urgent: 20\n  boost-urgent: 30"), "m.yaml:9:15: duplicate key `boost-urgent` (first defined at line 8)"),
        (String::new(), "m.yaml:1:1: the file is empty (expected a YAML mapping with a `chromeos` key)"),
        ("# only a comment\n".into(), "m.yaml:1:1: the file is empty (expected a YAML mapping with a `chromeos` key)"),
        ("other: 1\n".into(), "m.yaml:1:1: no `chromeos` key at the top level (expected `chromeos: devices:` or `chromeos: configs:`)"),
        ("chromeos: {}\n".into(), "m.yaml:1:11: `chromeos` has neither `devices` nor `configs`"),
        ("chromeos:\n  devices: []\n".into(), "m.yaml:2:3: no device or config defined"),
        ("chromeos:\n  devices:\n    - $device-name: x\n".into(), "m.yaml:3:7: device has no `skus` list"),
        ("- 1\n".into(), "m.yaml:1:1: expected a mapping with a `chromeos` key at the top, found a list"),
        ("chromeos:\n  devices: [\n".into(), "m.yaml:3:1: YAML syntax error: while parsing a node, did not find expected node content"),
        (wrap("<<: *nope"), "m.yaml:7:17: YAML syntax error: while parsing node, found unknown anchor"),
        (wrap("scheduler-tune:\n  <<: 5"), "m.yaml:8:19: merge key `<<` takes a mapping or a list of mappings, found a scalar"),
        (
            "chromeos:\n  devices:\n    - $device-name: x\n      skus:\n        - config:\n            name: \"{{$device-name}}-{{$nope}}\"\n".into(),
            "m.yaml:6:19: template uses undefined variable `$nope`",
        ),
        ("chromeos:\n  devices:\n    - skus:\n        - config: {}\n".into(), "m.yaml:4:19: config has no `name` and the device no `$device-name`"),
    ];
    assert!(cases.len() >= 15);
    let mut failures = Vec::new();
    for (text, want) in &cases {
        let got = err(text);
        if !got.starts_with(want) {
            failures.push(format!("  want: {want}\n  got:  {got}\n  in:\n{text}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn exponential_aliases_are_refused() {
    let mut doc = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    let mut prev = 'a';
    for name in 'b'..='j' {
        doc.push_str(&format!("{name}: &{name} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
        prev = name;
    }
    doc.push_str("chromeos: {configs: [{name: x}]}\n");
    assert!(err(&doc).contains("anchors and aliases expand to more than 500000 nodes"));
}

#[test]
fn validate_exit_codes_and_messages() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, wrap("scheduler-tune:\n  boost-urgent: 120")).unwrap();
    let r = run(cgqos().args(["validate", "--model"]).arg(&bad));
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains(&format!(
            "{}:8:29: scheduler-tune.boost-urgent: expected an integer 0-100, found \"120\"",
            bad.display()
        )),
        "{}",
        r.stderr
    );
    let r = run(cgqos().args(["validate", "--model", "/nonexistent/model.yaml"]));
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("/nonexistent/model.yaml: cannot read"),
        "{}",
        r.stderr
    );
    let r = run(cgqos().args(["validate", "--board", "nosuchboard"]));
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("no board \"nosuchboard\""),
        "{}",
        r.stderr
    );
    let r = run(cgqos().args(["validate"]));
    assert_eq!(r.code, 2);
}

#[test]
fn overlay_for_another_device_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other.yaml");
    std::fs::write(&other, "chromeos:\n  configs:\n    - name: zork\n").unwrap();
    let r = run(cgqos()
        .args(["validate", "--model"])
        .arg(board_file("trogdor/model.yaml"))
        .arg("--model")
        .arg(&other)
        .args(["--board", "trogdor"]));
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("no device named \"trogdor\" to overlay (devices here: zork)"),
        "{}",
        r.stderr
    );
}

#[test]
fn boards_dir_overrides_builtin_boards() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("trogdor")).unwrap();
    std::fs::write(
        dir.path().join("trogdor/model.yaml"),
        "chromeos:\n  configs:\n    - name: trogdor\n      scheduler-tune: {boost-urgent: 55}\n",
    )
    .unwrap();
    let r = run(cgqos()
        .args(["validate", "--json", "--board", "trogdor", "--boards-dir"])
        .arg(dir.path()));
    assert_eq!(json(&r)["scheduler_tune"]["boost_urgent"]["value"], 55);
}

#[allow(dead_code)]
fn _type_check(e: BoardError) -> String {
    e.to_string()
}
