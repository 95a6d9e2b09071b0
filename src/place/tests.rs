//! Placement and teardown on the in-memory kernel model: no root, no real tasks.

use std::path::{Path, PathBuf};

use super::*;
use crate::apply::{Outcome, apply};
use crate::cgroupfs::memory::MemKernel;
use crate::layout::Target;
use crate::plan::Plan;
use crate::procfs::StartTime;
use crate::state::State;
use crate::topology::Topology;

const MOUNT: &str = "/mem";
const ROOT: &str = "/mem/cgqos";
/// Where the test's tasks start: a domain beside the cgqos root.
const USER: &str = "/mem/user";

fn plan() -> Plan {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let topo = Topology::detect(&manifest.join("tests/fixtures/sysfs/trogdor")).unwrap();
    let text = std::fs::read_to_string(manifest.join("boards/default/model.yaml")).unwrap();
    let board = crate::board::load_texts(&[("model.yaml", &text)], None, None).unwrap();
    Plan::build(&topo, &board).unwrap()
}

/// A model kernel set up as `cgqos setup` leaves it, with a `user` domain for the tasks.
fn setup() -> (MemKernel, CgroupMap) {
    let k = MemKernel::new(MOUNT, ROOT, &["cpu", "cpuset"]);
    k.write("../cgroup.subtree_control", "+cpu +cpuset")
        .unwrap();
    k.mkdir("../user").unwrap();
    let report = apply(&plan().steps, &k, Path::new("/nonexistent-sysfs"), false).unwrap();
    assert!(report.changed() > 0);
    let map = CgroupMap {
        mount: Mount {
            dir: MOUNT.into(),
            root: "/".into(),
        },
        root: ROOT.into(),
    };
    (k, map)
}

fn target(s: &str) -> Target {
    Target::parse(s).unwrap()
}

fn dir(rel: &str) -> PathBuf {
    Path::new(ROOT).join(rel)
}

#[test]
fn setup_on_the_model_converges_and_a_second_run_writes_nothing() {
    let (k, _) = setup();
    let again = apply(&plan().steps, &k, Path::new("/nonexistent-sysfs"), false).unwrap();
    assert_eq!(again.changed(), 0, "{:?}", again.steps);
    // No uclamp in this model: reported, not failed.
    assert!(
        again
            .unsupported()
            .all(|s| s.step.path.ends_with("cpu.uclamp.min")),
        "{:?}",
        again.unsupported().collect::<Vec<_>>()
    );
    assert_eq!(k.read("chrome/ui/cgroup.type").unwrap(), "threaded\n");
    assert_eq!(k.read("chrome/cgroup.type").unwrap(), "domain threaded\n");
}

#[test]
fn a_dry_run_predicts_the_files_of_groups_it_would_create() {
    let k = MemKernel::new(MOUNT, ROOT, &["cpu"]);
    k.write("../cgroup.subtree_control", "+cpu").unwrap();
    let report = apply(&plan().steps, &k, Path::new("/nonexistent-sysfs"), true).unwrap();
    assert!(!k.exists("chrome"), "a dry run creates nothing");
    let outcome = |path: &str| {
        report
            .steps
            .iter()
            .find(|s| s.step.path == path)
            .map(|s| s.outcome.clone())
    };
    assert_eq!(outcome("chrome/ui/cpu.weight"), Some(Outcome::Changed));
    assert!(matches!(
        outcome("chrome/cpuset.cpus"),
        Some(Outcome::Unsupported(_))
    ));
}

#[test]
fn a_process_move_keeps_each_threads_class() {
    let (k, map) = setup();
    k.spawn(100, 1, "chrome", Path::new(USER));
    k.spawn_thread(100, 101, "Compositor");
    k.spawn_thread(100, 102, "worker");
    let mut state = State::default();
    let mut p = Placer::new(&k, &map, &k);
    p.move_process(ProcessId::new(100), &target("foreground"), None, &mut state)
        .unwrap();
    p.move_thread(ThreadId::new(101), Some(layout::URGENT), None, &mut state)
        .unwrap();
    let after = p
        .move_process(ProcessId::new(100), &target("background"), None, &mut state)
        .unwrap();
    let class = |tid: u32| {
        after
            .iter()
            .find(|t| t.tid.get() == tid)
            .and_then(|t| t.class.clone())
    };
    assert_eq!(class(101).as_deref(), Some("urgent"));
    assert_eq!(class(102).as_deref(), Some("default"));
    assert_eq!(k.cgroup_of(101).unwrap(), "/cgqos/chrome/background/urgent");
    assert_eq!(k.cgroup_of(102).unwrap(), "/cgqos/chrome/background");
    // The first origin is kept: the user domain, not the foreground group.
    assert_eq!(state.tasks[&100].original, PathBuf::from(USER));
    assert!(state.tasks[&100].process);
}

#[test]
fn teardown_restores_processes_before_threads_so_threads_follow_their_process() {
    let (k, map) = setup();
    k.spawn(100, 1, "chrome", Path::new(USER));
    k.spawn_thread(100, 101, "Compositor");
    let mut state = State::default();
    let mut p = Placer::new(&k, &map, &k);
    p.move_process(ProcessId::new(100), &target("ui"), None, &mut state)
        .unwrap();
    p.move_thread(ThreadId::new(101), Some(layout::URGENT), None, &mut state)
        .unwrap();
    // The thread's own record says "chrome/ui", inside the emptied tree: had it gone
    // first, it would have had no origin and been refused across domains.
    assert_eq!(state.tasks[&101].original, dir("chrome/ui"));
    let mut report = TeardownReport::default();
    p.restore_recorded("", &state, &mut report);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.restored.len(), 1, "{:?}", report.restored);
    assert_eq!(report.restored[0].to, PathBuf::from(USER));
    assert_eq!(k.cgroup_of(100).unwrap(), "/user");
    assert_eq!(k.cgroup_of(101).unwrap(), "/user");
}

#[test]
fn evacuate_sends_unrecorded_children_to_their_parents_origin_and_removes_groups() {
    let (k, map) = setup();
    k.spawn(100, 1, "crosvm", Path::new(USER));
    let mut state = State::default();
    let mut p = Placer::new(&k, &map, &k);
    p.move_process(ProcessId::new(100), &target("background"), None, &mut state)
        .unwrap();
    // A child forked inside the group: cgqos never moved it.
    k.spawn(200, 100, "child", &dir("chrome/background"));
    // And a stranger placed by someone else whose parent cgqos knows nothing of.
    k.spawn(300, 1, "other", &dir("chrome/background"));
    let mut report = TeardownReport::default();
    p.evacuate(layout::CHROME, &state, &mut report);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(k.cgroup_of(100).unwrap(), "/user");
    assert_eq!(k.cgroup_of(200).unwrap(), "/user");
    // Origin unknown: the fallback, the cgqos root's parent.
    assert_eq!(k.cgroup_of(300).unwrap(), "/");
    let note = report.restored.iter().find(|r| r.id == 300).unwrap();
    assert_eq!(note.note.as_deref(), Some("origin unknown"));
    assert!(!k.exists(layout::CHROME), "{:?}", report.removed);
}

#[test]
fn an_origin_that_is_gone_falls_back_with_a_note() {
    let (k, map) = setup();
    k.mkdir("../tmp").unwrap();
    k.spawn(100, 1, "app", Path::new("/mem/tmp"));
    let mut state = State::default();
    let mut p = Placer::new(&k, &map, &k);
    p.move_process(ProcessId::new(100), &target("foreground"), None, &mut state)
        .unwrap();
    k.rmdir("../tmp").unwrap();
    let mut report = TeardownReport::default();
    p.restore_recorded("", &state, &mut report);
    assert_eq!(report.restored.len(), 1);
    assert_eq!(report.restored[0].to, PathBuf::from(MOUNT));
    assert_eq!(
        report.restored[0].note.as_deref(),
        Some("its origin refused it")
    );
}

#[test]
fn a_thread_recorded_in_another_domain_is_refused_and_reported_not_lost() {
    let (k, map) = setup();
    k.spawn(100, 1, "app", Path::new(USER));
    k.spawn_thread(100, 101, "t");
    let mut state = State::default();
    let mut p = Placer::new(&k, &map, &k);
    p.move_process(ProcessId::new(100), &target("ui"), None, &mut state)
        .unwrap();
    p.move_thread(ThreadId::new(101), Some(layout::URGENT), None, &mut state)
        .unwrap();
    // Restoring only the urgent class: its record's origin (chrome/ui) is inside the
    // domain, the fallbacks are other domains, which take no single thread.
    let mut report = TeardownReport::default();
    p.restore_recorded("chrome/ui/urgent", &state, &mut report);
    assert_eq!(report.restored.len(), 1, "{report:?}");
    assert_eq!(report.restored[0].to, dir("chrome/ui"));
    let mut stranded = State::default();
    stranded.tasks.insert(
        101,
        crate::state::Record {
            pid: ProcessId::new(100),
            starttime: StartTime::new(k.starttime(101).unwrap()),
            original: PathBuf::from(USER),
            process: false,
        },
    );
    let mut report = TeardownReport::default();
    p.restore_recorded("", &stranded, &mut report);
    assert!(report.restored.is_empty(), "{report:?}");
    assert_eq!(report.errors.len(), 1, "{report:?}");
    assert!(report.errors[0].contains("cgroup.threads"), "{report:?}");
    assert_eq!(k.cgroup_of(101).unwrap(), "/cgqos/chrome/ui");
}

#[test]
fn a_thread_outside_the_groups_cannot_take_a_class() {
    let (k, map) = setup();
    k.spawn(100, 1, "app", Path::new(USER));
    k.spawn_thread(100, 101, "t");
    let mut p = Placer::new(&k, &map, &k);
    let e = p
        .move_thread(
            ThreadId::new(101),
            Some("urgent"),
            None,
            &mut State::default(),
        )
        .unwrap_err();
    assert!(matches!(e, PlaceError::NotInGroup { tid: 101, .. }), "{e}");
}

#[test]
fn a_vanished_task_is_gone_and_nothing_is_recorded() {
    let (k, map) = setup();
    k.spawn(100, 1, "app", Path::new(USER));
    k.spawn_thread(100, 101, "t");
    k.exit(101);
    let mut state = State::default();
    let mut p = Placer::new(&k, &map, &k);
    let e = p
        .move_process(ProcessId::new(555), &target("ui"), None, &mut state)
        .unwrap_err();
    assert!(matches!(e, PlaceError::Gone(555)), "{e}");
    let e = p
        .move_thread(ThreadId::new(101), None, None, &mut state)
        .unwrap_err();
    assert!(matches!(e, PlaceError::Gone(101)), "{e}");
    assert!(state.tasks.is_empty());
    // A recorded task that exited is skipped on teardown.
    p.move_process(ProcessId::new(100), &target("ui"), None, &mut state)
        .unwrap();
    k.exit(100);
    let mut report = TeardownReport::default();
    p.evacuate(layout::CHROME, &state, &mut report);
    assert!(
        report.restored.is_empty() && report.errors.is_empty(),
        "{report:?}"
    );
}

#[test]
fn identity_checks_refuse_reused_ids_kernel_threads_and_thread_ids() {
    let (k, map) = setup();
    k.spawn(100, 1, "app", Path::new(USER));
    k.spawn_thread(100, 101, "t");
    k.spawn_kernel_thread(50, "kworker/0:1");
    let start = k.starttime(100).unwrap();
    let mut state = State::default();
    let mut p = Placer::new(&k, &map, &k);
    let ui = target("ui");
    let e = p
        .move_process(
            ProcessId::new(100),
            &ui,
            Some(StartTime::new(start + 1)),
            &mut state,
        )
        .unwrap_err();
    assert!(matches!(e, PlaceError::Reused { id: 100, .. }), "{e}");
    let e = p
        .move_process(ProcessId::new(50), &ui, None, &mut state)
        .unwrap_err();
    assert!(matches!(e, PlaceError::KernelThread { id: 50, .. }), "{e}");
    let e = p
        .move_process(ProcessId::new(101), &ui, None, &mut state)
        .unwrap_err();
    assert!(
        matches!(
            e,
            PlaceError::NotAProcess {
                tid: 101,
                tgid: 100
            }
        ),
        "{e}"
    );
    assert!(state.tasks.is_empty());
    p.move_process(
        ProcessId::new(100),
        &ui,
        Some(StartTime::new(start)),
        &mut state,
    )
    .unwrap();
}

#[test]
fn a_group_not_set_up_and_the_no_internal_process_rule_are_errors() {
    let (k, map) = setup();
    k.spawn(100, 1, "crosvm", Path::new(USER));
    let mut state = State::default();
    let mut p = Placer::new(&k, &map, &k);
    let e = p
        .move_process(ProcessId::new(100), &target("vm:termina"), None, &mut state)
        .unwrap_err();
    assert!(matches!(e, PlaceError::NotSetUp(_)), "{e}");
    // `vms` enables controllers for its children: the kernel refuses it tasks.
    k.mkdir("vms/termina").unwrap();
    k.write("vms/cgroup.subtree_control", "+cpu").unwrap();
    let err = k.attach(&dir("vms/cgroup.procs"), 100).unwrap_err();
    assert_eq!(err.refusal(), Refusal::Busy, "{err}");
    p.move_process(ProcessId::new(100), &target("vm:termina"), None, &mut state)
        .unwrap();
    assert_eq!(k.cgroup_of(100).unwrap(), "/cgqos/vms/termina");
}

#[test]
fn where_reports_each_threads_group_and_class() {
    let (k, map) = setup();
    k.spawn(100, 1, "app", Path::new(USER));
    k.spawn_thread(100, 101, "t");
    let mut state = State::default();
    let mut p = Placer::new(&k, &map, &k);
    p.move_process(ProcessId::new(100), &target("ui"), None, &mut state)
        .unwrap();
    p.move_thread(
        ThreadId::new(101),
        Some(layout::NON_URGENT),
        None,
        &mut state,
    )
    .unwrap();
    let places = p.locate(ProcessId::new(100)).unwrap();
    let got: Vec<_> = places
        .iter()
        .map(|t| (t.tid.get(), t.comm.as_str(), t.class.as_deref()))
        .collect();
    assert_eq!(
        got,
        [
            (100, "app", Some("default")),
            (101, "t", Some("non-urgent"))
        ]
    );
}
