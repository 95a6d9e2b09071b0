//! A task's identity (`TaskKey`: process, thread, start time) is resolved once and carried
//! down; the typed ids must not change what cgqos writes. These check the state file's
//! bytes against the shape it had with plain numbers, and that a held task's key is the
//! task `/proc` shows.

use std::process::Command;
use std::sync::mpsc;

use cgqos::place::Held;
use cgqos::procfs::{ProcessId, Procfs, StartTime, TaskKey, ThreadId};
use cgqos::state::{AttrRecord, Record, State, Why};

/// A state file as cgqos wrote it before ids were typed (plain numbers, map keys as
/// strings): reading it and writing it back gives the same bytes.
const OLD_STATE: &str = concat!(
    r#"{"version":1,"root":"/sys/fs/cgroup/cgqos","created_root":true,"#,
    r#""tasks":{"100":{"pid":100,"starttime":4242,"original":"/sys/fs/cgroup/user.slice","process":true},"#,
    r#""101":{"pid":100,"starttime":4243,"original":"/sys/fs/cgroup/x","process":false}},"#,
    r#""vms":[],"restrictions":{},"#,
    r#""attrs":{"101":{"pid":100,"starttime":4243,"original":{"nice":0},"inherited_from":100}},"#,
    r#""why":{"101":{"pid":100,"starttime":4243,"by":"rule a (r.yaml:1)","class":"urgent","at":7}},"#,
    r#""sysfs":{}}"#
);

#[test]
fn the_state_file_keeps_its_bytes_with_typed_ids() {
    let state: State = serde_json::from_str(OLD_STATE).unwrap();
    assert_eq!(serde_json::to_string(&state).unwrap(), OLD_STATE);
    let rec = &state.tasks[&101];
    assert_eq!(rec.pid, ProcessId::new(100));
    assert_eq!(rec.starttime, StartTime::new(4243));
    let key = rec.key(ThreadId::new(101));
    assert_eq!(
        (key.pid().get(), key.tid().get(), key.start().get()),
        (100, 101, 4243)
    );
    assert!(!key.is_process());
    assert!(state.tasks[&100].key(ThreadId::new(100)).is_process());
    assert_eq!(state.attrs[&101].key(ThreadId::new(101)), key);
    assert_eq!(state.why[&101].key(ThreadId::new(101)), key);
}

#[test]
fn records_built_from_typed_ids_serialise_as_plain_numbers() {
    let mut state = State {
        version: 1,
        ..State::default()
    };
    let key = TaskKey::new(ProcessId::new(7), ThreadId::new(8), StartTime::new(9));
    state.remember(
        key.tid(),
        Record {
            pid: key.pid(),
            starttime: key.start(),
            original: "/o".into(),
            process: false,
        },
    );
    state.attrs.insert(
        8,
        AttrRecord {
            pid: key.pid(),
            starttime: key.start(),
            original: Default::default(),
            inherited_from: None,
        },
    );
    state.why.insert(
        8,
        Why {
            pid: key.pid(),
            starttime: key.start(),
            by: "b".into(),
            group: None,
            class: None,
            attrs: Default::default(),
            at: 1,
        },
    );
    let text = serde_json::to_string(&state).unwrap();
    assert!(
        text.contains(r#""tasks":{"8":{"pid":7,"starttime":9,"original":"/o","process":false}}"#),
        "{text}"
    );
    assert!(
        text.contains(r#""attrs":{"8":{"pid":7,"starttime":9,"original":{}}}"#),
        "{text}"
    );
    assert!(
        text.contains(r#""why":{"8":{"pid":7,"starttime":9,"by":"b","at":1}}"#),
        "{text}"
    );
}

fn stat_start(id: u32) -> u64 {
    Procfs::new("/proc").stat(id).unwrap().starttime
}

#[test]
fn a_held_task_carries_the_key_proc_shows() {
    let proc = Procfs::new("/proc");
    let mut child = Command::new("sleep").arg("60").spawn().unwrap();
    let pid = child.id();
    let held = Held::process(&proc, ProcessId::new(pid), None).unwrap();
    let key = held.key();
    assert_eq!(key.pid(), ProcessId::new(pid));
    assert_eq!(key.tid(), ThreadId::new(pid));
    assert!(key.is_process());
    assert_eq!(key.start().get(), stat_start(pid));
    // The key's start time is the one a caller may pass to refuse a reused id.
    assert!(Held::process(&proc, ProcessId::new(pid), Some(key.start())).is_ok());
    child.kill().unwrap();
    child.wait().unwrap();

    // A thread of this test process: its key names our process and the thread.
    let (tid_tx, tid_rx) = mpsc::channel();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        tid_tx
            .send(rustix::thread::gettid().as_raw_nonzero().get() as u32)
            .unwrap();
        let _ = stop_rx.recv();
    });
    let tid = tid_rx.recv().unwrap();
    for held in [
        Held::thread(&proc, ThreadId::new(tid), None).unwrap(),
        Held::thread_with(&proc, ThreadId::new(tid), None, false).unwrap(),
    ] {
        let key = held.key();
        assert_eq!(key.pid(), ProcessId::new(std::process::id()));
        assert_eq!(key.tid(), ThreadId::new(tid));
        assert!(!key.is_process());
        assert_eq!(key.start().get(), stat_start(tid));
    }
    drop(stop_tx);
    t.join().unwrap();
}
