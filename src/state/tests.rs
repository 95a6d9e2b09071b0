//! The state store: snapshot and journal, their checks and their files.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use super::dir::LOCK_FILE_FOR_TESTS as LOCK_FILE;
use super::*;
use crate::procfs::{ProcessId, StartTime, ThreadId};

fn rec(starttime: u64, original: &str) -> Record {
    Record {
        pid: ProcessId::new(10),
        starttime: StartTime::new(starttime),
        original: original.into(),
        process: false,
    }
}

#[test]
fn first_origin_wins_until_the_id_is_reused() {
    let mut s = State::default();
    s.remember(ThreadId::new(10), rec(5, "/a"));
    s.remember(ThreadId::new(10), rec(5, "/b"));
    assert_eq!(s.tasks[&10].original, PathBuf::from("/a"));
    s.remember(ThreadId::new(10), rec(6, "/c"));
    assert_eq!(s.tasks[&10].original, PathBuf::from("/c"));
}

#[test]
fn save_then_load_round_trips_and_leaves_no_temp_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut sd = StateDir::lock(dir.path()).unwrap();
    let mut s = sd.load(Path::new("/cg")).unwrap();
    s.remember(ThreadId::new(10), rec(5, "/a"));
    sd.save(&mut s).unwrap();
    assert_eq!(sd.load(Path::new("/cg")).unwrap(), s);
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
}

#[test]
fn a_corrupt_state_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join(STATE_FILE), "{not json").unwrap();
    let mut sd = StateDir::lock(dir.path()).unwrap();
    let e = sd.load(Path::new("/cg")).unwrap_err();
    assert!(e.to_string().contains("not a cgqos state file"), "{e}");
}

#[test]
fn state_of_another_root_is_not_mixed_in() {
    let dir = tempfile::tempdir().unwrap();
    let mut sd = StateDir::lock(dir.path()).unwrap();
    let mut s = sd.load(Path::new("/one")).unwrap();
    s.remember(ThreadId::new(10), rec(5, "/a"));
    sd.save(&mut s).unwrap();
    assert!(matches!(
        sd.load(Path::new("/two")),
        Err(StateError::OtherRoot { .. })
    ));
}
#[test]
fn load_for_takes_the_recorded_root_and_asks_only_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut sd = StateDir::lock(dir.path()).unwrap();
    // Nothing recorded: the picked root, which the first commit records.
    let (root, mut s) = sd
        .load_for(|recorded| {
            assert_eq!(recorded, None);
            Ok::<_, StateError>(PathBuf::from("/one"))
        })
        .unwrap();
    assert_eq!(root, PathBuf::from("/one"));
    sd.save(&mut s).unwrap();
    let (root, _) = sd
        .load_for(|recorded| Ok::<_, StateError>(recorded.unwrap().to_path_buf()))
        .unwrap();
    assert_eq!(root, PathBuf::from("/one"));
    // A root picked against the recorded one is refused, as `load` refuses it.
    let e = sd
        .load_for(|_| Ok::<_, StateError>(PathBuf::from("/two")))
        .unwrap_err();
    assert!(matches!(e, StateError::OtherRoot { .. }), "{e}");
}

#[test]
fn a_missing_state_directory_is_made_and_an_existing_file_refused() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("a/b");
    StateDir::lock(&nested).unwrap();
    assert!(nested.join(LOCK_FILE).exists());
    let file = dir.path().join("file");
    fs::write(&file, "").unwrap();
    assert!(StateDir::lock(&file).is_err());
}

#[test]
fn a_planted_temporary_symlink_is_replaced_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let target = tempfile::NamedTempFile::new().unwrap();
    fs::write(target.path(), "precious").unwrap();
    std::os::unix::fs::symlink(target.path(), dir.path().join(".state.json.tmp")).unwrap();
    let mut sd = StateDir::lock(dir.path()).unwrap();
    let mut s = sd.load(Path::new("/cg")).unwrap();
    sd.save(&mut s).unwrap();
    assert_eq!(fs::read_to_string(target.path()).unwrap(), "precious");
    let meta = fs::symlink_metadata(dir.path().join(STATE_FILE)).unwrap();
    assert!(meta.file_type().is_file());
}

#[test]
fn a_lock_symlink_is_refused_and_its_target_never_created() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("elsewhere");
    std::os::unix::fs::symlink(&target, dir.path().join(LOCK_FILE)).unwrap();
    assert!(StateDir::lock(dir.path()).is_err());
    assert!(!target.exists());
}

#[test]
fn a_state_file_symlink_is_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let other = tempfile::NamedTempFile::new().unwrap();
    fs::write(
        other.path(),
        r#"{"version":1,"root":"/elsewhere","created_root":true,"tasks":{},"vms":[]}"#,
    )
    .unwrap();
    std::os::unix::fs::symlink(other.path(), dir.path().join(STATE_FILE)).unwrap();
    let mut sd = StateDir::lock(dir.path()).unwrap();
    assert!(sd.load(Path::new("/cg")).is_err());
}

#[test]
fn an_unknown_version_is_an_error_and_the_file_stays() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"{"version":3,"root":"/cg","created_root":false,"tasks":{},"vms":[]}"#;
    fs::write(dir.path().join(STATE_FILE), text).unwrap();
    let mut sd = StateDir::lock(dir.path()).unwrap();
    let e = sd.load(Path::new("/cg")).unwrap_err();
    assert!(matches!(e, StateError::Version { .. }), "{e}");
    assert_eq!(
        fs::read_to_string(dir.path().join(STATE_FILE)).unwrap(),
        text
    );
}

#[test]
fn a_directory_others_can_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let e = StateDir::lock(dir.path()).err().expect("refused");
    assert!(e.to_string().contains("mode 0777"), "{e}");
    assert!(!dir.path().join(LOCK_FILE).exists());
}

fn why(at: u64) -> Why {
    Why {
        pid: ProcessId::new(10),
        starttime: StartTime::new(5),
        by: "rule r (a.yaml:1)".into(),
        group: Some("chrome/ui".into()),
        class: None,
        attrs: Default::default(),
        at,
    }
}

fn read(dir: &Path, name: &str) -> Vec<u8> {
    fs::read(dir.join(name)).unwrap_or_default()
}

/// A state dir with a snapshot and an empty journal, and the state loaded from it.
fn started(dir: &Path) -> (StateDir, State) {
    let mut sd = StateDir::lock(dir).unwrap();
    let mut s = sd.load(Path::new("/cg")).unwrap();
    sd.save(&mut s).unwrap();
    (sd, s)
}

#[test]
fn crc32_is_the_zlib_one() {
    assert_eq!(journal::crc32(b"123456789"), 0xCBF4_3926);
}

#[test]
fn changes_are_appended_and_replayed_the_snapshot_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let (mut sd, mut s) = started(dir.path());
    let snapshot = read(dir.path(), STATE_FILE);
    s.remember(ThreadId::new(10), rec(5, "/a"));
    s.remember(ThreadId::new(11), rec(6, "/b"));
    s.why.insert(10, why(1));
    sd.save(&mut s).unwrap();
    s.tasks.remove(&11);
    s.why.get_mut(&10).unwrap().at = 2;
    s.vms.insert("termina".into());
    sd.save(&mut s).unwrap();
    // Nothing pending: nothing written.
    let journal = read(dir.path(), JOURNAL_FILE);
    sd.save(&mut s).unwrap();
    assert_eq!(read(dir.path(), JOURNAL_FILE), journal);
    assert_eq!(read(dir.path(), STATE_FILE), snapshot);
    // header + 3 lines + 2 lines + the metadata line
    assert_eq!(journal.iter().filter(|&&b| b == b'\n').count(), 7);
    drop(sd);
    let mut sd = StateDir::lock(dir.path()).unwrap();
    let back = sd.load(Path::new("/cg")).unwrap();
    assert_eq!(back, s);
    assert_eq!(back.why[&10].at, 2);
    assert!(!back.tasks.contains_key(&11) && back.vms.contains("termina"));
    assert_eq!(read_unlocked(dir.path()).unwrap().unwrap(), s);
}

#[test]
fn a_torn_last_line_is_dropped_and_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let (mut sd, mut s) = started(dir.path());
    s.remember(ThreadId::new(10), rec(5, "/a"));
    sd.save(&mut s).unwrap();
    drop(sd);
    let complete = read(dir.path(), JOURNAL_FILE);
    let mut torn = complete.clone();
    torn.extend_from_slice(b"120 0badcafe {\"task\":{\"id\":11,\"rec");
    fs::write(dir.path().join(JOURNAL_FILE), &torn).unwrap();
    // A reader without the lock skips it; the lock holder cuts it off.
    assert_eq!(read_unlocked(dir.path()).unwrap().unwrap().tasks.len(), 1);
    let mut sd = StateDir::lock(dir.path()).unwrap();
    let mut back = sd.load(Path::new("/cg")).unwrap();
    assert_eq!(back, s);
    assert_eq!(read(dir.path(), JOURNAL_FILE), complete);
    back.remember(ThreadId::new(12), rec(7, "/c"));
    sd.save(&mut back).unwrap();
    drop(sd);
    let mut sd = StateDir::lock(dir.path()).unwrap();
    assert_eq!(sd.load(Path::new("/cg")).unwrap(), back);
}

#[test]
fn a_damaged_complete_line_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut sd, mut s) = started(dir.path());
    s.remember(ThreadId::new(10), rec(5, "/a"));
    sd.save(&mut s).unwrap();
    s.remember(ThreadId::new(11), rec(5, "/b"));
    sd.save(&mut s).unwrap();
    drop(sd);
    let journal = read(dir.path(), JOURNAL_FILE);
    let text = String::from_utf8(journal)
        .unwrap()
        .replace("\"/a\"", "\"/x\"");
    fs::write(dir.path().join(JOURNAL_FILE), &text).unwrap();
    let mut sd = StateDir::lock(dir.path()).unwrap();
    let e = sd.load(Path::new("/cg")).unwrap_err().to_string();
    assert!(e.contains("state.journal: line 2: checksum"), "{e}");
    assert_eq!(
        read(dir.path(), JOURNAL_FILE),
        text.as_bytes(),
        "left as it was"
    );
}

#[test]
fn a_journal_line_of_hostile_size_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (sd, _) = started(dir.path());
    drop(sd);
    let mut journal = read(dir.path(), JOURNAL_FILE);
    journal.extend_from_slice(b"18446744073709551615 00000000 {}\n");
    fs::write(dir.path().join(JOURNAL_FILE), &journal).unwrap();
    let e = read_unlocked(dir.path()).unwrap_err().to_string();
    assert!(
        e.contains("line 2: a record of 18446744073709551615 bytes (at most"),
        "{e}"
    );
    journal.truncate(journal.len() - 33);
    journal.extend_from_slice(b"99999999999999999999999 x {}\n");
    fs::write(dir.path().join(JOURNAL_FILE), &journal).unwrap();
    let e = read_unlocked(dir.path()).unwrap_err().to_string();
    assert!(
        e.contains("line 2: length \"99999999999999999999999\" is not a number"),
        "{e}"
    );
}

#[test]
fn a_journal_larger_than_the_cap_is_refused_not_cut() {
    let dir = tempfile::tempdir().unwrap();
    let (sd, _) = started(dir.path());
    drop(sd);
    let f = fs::OpenOptions::new()
        .append(true)
        .open(dir.path().join(JOURNAL_FILE))
        .unwrap();
    // Sparse: no 64 MiB written.
    f.set_len((64 << 20) + 1).unwrap();
    let e = read_unlocked(dir.path()).unwrap_err().to_string();
    assert!(e.contains("state.journal: larger than"), "{e}");
}

#[test]
fn an_unknown_journal_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (sd, s) = started(dir.path());
    drop(sd);
    let header = format!("{{\"journal\":9,\"generation\":{}}}", s.generation);
    let line = format!(
        "{} {:08x} {header}\n",
        header.len(),
        journal::crc32(header.as_bytes())
    );
    fs::write(dir.path().join(JOURNAL_FILE), &line).unwrap();
    let mut sd = StateDir::lock(dir.path()).unwrap();
    let e = sd.load(Path::new("/cg")).unwrap_err().to_string();
    assert!(
        e.contains("line 1: journal format 9, this cgqos reads format 1"),
        "{e}"
    );
}

#[test]
fn a_version_1_file_is_read_and_rewritten_as_version_2() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = r#"{"version":1,"root":"/cg","created_root":false,"tasks":{"10":{"pid":10,"starttime":5,"original":"/a","process":true}},"vms":[]}"#;
    fs::write(dir.path().join(STATE_FILE), v1).unwrap();
    let mut sd = StateDir::lock(dir.path()).unwrap();
    let mut s = sd.load(Path::new("/cg")).unwrap();
    assert_eq!(s.tasks[&10].original, PathBuf::from("/a"));
    s.remember(ThreadId::new(11), rec(5, "/b"));
    sd.save(&mut s).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&read(dir.path(), STATE_FILE)).unwrap();
    assert_eq!(v["version"], 2);
    assert_eq!(
        v["tasks"].as_object().unwrap().len(),
        2,
        "written whole: {v}"
    );
}

#[test]
fn the_journal_is_folded_into_the_snapshot_when_it_outgrows_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut sd, mut s) = started(dir.path());
    for id in 0..100 {
        s.remember(ThreadId::new(id), rec(5, "/a"));
    }
    sd.save(&mut s).unwrap();
    let mut generations = BTreeSet::from([s.generation]);
    let mut largest = 0;
    for round in 0..1500u64 {
        s.why.insert((round % 100) as u32, why(round));
        sd.save(&mut s).unwrap();
        generations.insert(s.generation);
        let (snapshot, journal) = (read(dir.path(), STATE_FILE), read(dir.path(), JOURNAL_FILE));
        largest = largest.max(journal.len());
        assert!(journal.len() as u64 <= snapshot.len() as u64 + super::dir::JOURNAL_SLACK);
    }
    assert!(generations.len() > 2, "compacted: {generations:?}");
    assert!(
        largest as u64 > super::dir::JOURNAL_SLACK,
        "the journal was used: {largest}"
    );
    drop(sd);
    let mut sd = StateDir::lock(dir.path()).unwrap();
    assert_eq!(sd.load(Path::new("/cg")).unwrap(), s);
}

#[test]
fn a_wholesale_clear_or_a_foreign_value_is_written_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (mut sd, mut s) = started(dir.path());
    s.remember(ThreadId::new(10), rec(5, "/a"));
    sd.save(&mut s).unwrap();
    let generation = s.generation;
    s.tasks.clear();
    sd.save(&mut s).unwrap();
    assert_ne!(s.generation, generation, "a new snapshot");
    // A value this directory did not load (a copy that went its own way).
    let mut copy = s.clone();
    s.remember(ThreadId::new(11), rec(5, "/b"));
    sd.save(&mut s).unwrap();
    copy.remember(ThreadId::new(12), rec(5, "/c"));
    sd.save(&mut copy).unwrap();
    drop(sd);
    let mut sd = StateDir::lock(dir.path()).unwrap();
    let back = sd.load(Path::new("/cg")).unwrap();
    assert_eq!(back, copy);
    assert!(!back.tasks.contains_key(&11));
}

#[test]
fn a_journal_of_an_older_snapshot_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let (mut sd, mut s) = started(dir.path());
    s.remember(ThreadId::new(10), rec(5, "/a"));
    sd.save(&mut s).unwrap();
    let old_journal = read(dir.path(), JOURNAL_FILE);
    s.tasks.clear();
    sd.save(&mut s).unwrap();
    drop(sd);
    // As a crash between the new snapshot and its journal leaves it.
    fs::write(dir.path().join(JOURNAL_FILE), &old_journal).unwrap();
    let mut sd = StateDir::lock(dir.path()).unwrap();
    assert!(sd.load(Path::new("/cg")).unwrap().tasks.is_empty());
}

#[test]
fn a_journal_symlink_is_refused_and_a_temporary_one_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let (sd, _) = started(dir.path());
    drop(sd);
    let target = tempfile::NamedTempFile::new().unwrap();
    fs::write(target.path(), "precious").unwrap();
    fs::remove_file(dir.path().join(JOURNAL_FILE)).unwrap();
    std::os::unix::fs::symlink(target.path(), dir.path().join(JOURNAL_FILE)).unwrap();
    let mut sd = StateDir::lock(dir.path()).unwrap();
    assert!(sd.load(Path::new("/cg")).is_err());
    assert!(read_unlocked(dir.path()).is_err());
    assert_eq!(fs::read_to_string(target.path()).unwrap(), "precious");
    // A planted temporary journal is removed, never written through.
    fs::remove_file(dir.path().join(JOURNAL_FILE)).unwrap();
    std::os::unix::fs::symlink(target.path(), dir.path().join(".state.journal.tmp")).unwrap();
    let mut s = sd.load(Path::new("/cg")).unwrap();
    s.remember(ThreadId::new(10), rec(5, "/a"));
    sd.save(&mut s).unwrap();
    assert_eq!(fs::read_to_string(target.path()).unwrap(), "precious");
    let meta = fs::symlink_metadata(dir.path().join(JOURNAL_FILE)).unwrap();
    assert!(meta.file_type().is_file());
}

#[test]
fn clear_removes_the_snapshot_and_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let (mut sd, _) = started(dir.path());
    sd.clear().unwrap();
    assert!(!dir.path().join(STATE_FILE).exists());
    assert!(!dir.path().join(JOURNAL_FILE).exists());
    assert!(read_unlocked(dir.path()).unwrap().is_none());
}

/// Writes are flushed (fsync, fdatasync) on a disk only: on tmpfs they would survive
/// nothing more. Both kinds of directory still save and load alike.
#[test]
fn flushed_on_a_disk_not_on_tmpfs() {
    let is_tmpfs = |p: &Path| rustix::fs::statfs(p).unwrap().f_type as u64 == 0x0102_1994;
    let shm = Path::new("/dev/shm");
    let disk = tempfile::tempdir().unwrap();
    let mut dirs = vec![(disk.path().to_path_buf(), !is_tmpfs(disk.path()))];
    let mem = is_tmpfs(shm).then(|| tempfile::tempdir_in(shm).unwrap());
    dirs.extend(mem.iter().map(|d| (d.path().to_path_buf(), false)));
    for (dir, flushed) in dirs {
        let mut sd = StateDir::lock(&dir).unwrap();
        assert_eq!(sd.flushes(), flushed, "{}", dir.display());
        let mut s = sd.load(Path::new("/cg")).unwrap();
        s.remember(ThreadId::new(10), rec(5, "/a"));
        sd.save(&mut s).unwrap();
        s.remember(ThreadId::new(11), rec(6, "/b"));
        sd.save(&mut s).unwrap();
        drop(sd);
        let mut sd = StateDir::lock(&dir).unwrap();
        assert_eq!(sd.load(Path::new("/cg")).unwrap().tasks, s.tasks);
    }
}

/// What a `RecordsWatch` was told, in order.
#[derive(Default)]
struct Told(Vec<(u32, bool)>, usize);

impl crate::state::RecordsWatch for Told {
    fn set(&mut self, id: u32, recorded: bool) {
        self.0.push((id, recorded));
    }
    fn clear(&mut self) {
        self.0.clear();
        self.1 += 1;
    }
}

#[test]
fn a_task_leaves_the_watched_set_only_with_its_last_record() {
    let dir = tempfile::tempdir().unwrap();
    let (mut sd, mut s) = started(dir.path());
    s.remember(ThreadId::new(10), rec(5, "/a"));
    s.why.insert(10, why(1));
    s.why.insert(12, why(1));
    let mut told = Told::default();
    s.report_records(&mut told);
    assert_eq!(told.0, vec![(10, true), (12, true)]);
    assert_eq!(s.recorded_ids(), vec![10, 12]);
    sd.save(&mut s).unwrap();

    // 10 keeps its origin record: still recorded; 12 has none left.
    s.why.remove(&10);
    s.why.remove(&12);
    let mut told = Told::default();
    s.report_records(&mut told);
    assert_eq!(told.0, vec![(10, true), (12, false)]);
    sd.save(&mut s).unwrap();

    // Nothing changed: nothing to tell.
    let mut told = Told::default();
    s.report_records(&mut told);
    assert!(told.0.is_empty() && told.1 == 0);

    // One map emptied wholesale while another keeps 15, then a new record: a clear, then
    // every id recorded now.
    s.why.insert(15, why(2));
    sd.save(&mut s).unwrap();
    s.tasks.clear();
    s.why.insert(13, why(2));
    let mut told = Told::default();
    s.report_records(&mut told);
    assert_eq!((told.0, told.1), (vec![(13, true), (15, true)], 1));
}
