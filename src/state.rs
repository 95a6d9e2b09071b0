//! What cgqos changed, so `teardown` can undo it: the original cgroup of every task it moved,
//! whether it created the cgqos root, which VM groups it added.
//!
//! One JSON file under the state directory (`/run/cgqos/` by default: tmpfs, so a reboot,
//! which also resets cgroups, starts clean). Updates are write-to-temp, fsync, rename, so a
//! crash mid-write leaves the old file or the new one, never half of either. An exclusive
//! `flock` on a lock file serialises concurrent cgqos commands.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags};
use serde::{Deserialize, Serialize};

use crate::procfs::{ProcessId, StartTime, TaskKey, ThreadId};

pub const STATE_FILE: &str = "state.json";
const LOCK_FILE: &str = "lock";
const VERSION: u32 = 1;
/// How long a command waits for the state lock.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The process the task belongs to.
    pub pid: ProcessId,
    pub starttime: StartTime,
    /// Absolute path of the cgroup directory the task was in before cgqos first moved it.
    pub original: PathBuf,
    /// Whether the whole process was moved (restored through `cgroup.procs`).
    pub process: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    /// The cgqos root this state belongs to.
    pub root: Option<PathBuf>,
    /// Whether `setup` created the root directory (teardown then removes it).
    pub created_root: bool,
    /// Keyed by task id (a process's id for process records).
    pub tasks: BTreeMap<u32, Record>,
    pub vms: BTreeSet<String>,
    /// Restrictions set through the daemon (`restrict`), by group path; re-applied after a
    /// converge, which resets weights to the plan's.
    #[serde(default)]
    pub restrictions: BTreeMap<String, Restriction>,
    /// Original scheduling attributes of every thread whose attributes cgqos changed.
    #[serde(default)]
    pub attrs: BTreeMap<u32, AttrRecord>,
    /// Why each task is where it is: the rule or request that last placed it.
    #[serde(default)]
    pub why: BTreeMap<u32, Why>,
    /// sysfs files setup changed (absolute path), with the value they had before its first
    /// write: teardown writes them back.
    #[serde(default)]
    pub sysfs: BTreeMap<PathBuf, String>,
    /// Groups (relative to the root) setup or the daemon created; teardown removes only
    /// these and the groups of VMs added (`vms`). `None` in files written before it was
    /// kept: every group of the cgqos subtrees is then taken as cgqos's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<BTreeSet<String>>,
}

impl State {
    /// Whether teardown may remove `group`: cgqos created it.
    pub fn created_group(&self, group: &str) -> bool {
        let vm = group
            .strip_prefix("vms/")
            .map(|r| r.split('/').next().unwrap_or(r))
            .is_some_and(|name| self.vms.contains(name));
        vm || self.created.as_ref().is_none_or(|c| c.contains(group))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttrRecord {
    pub pid: ProcessId,
    pub starttime: StartTime,
    pub original: crate::sched::TaskAttrs,
    /// The creator whose original this is: the task was born after cgqos changed its
    /// creator and inherited the changed attributes (see `classify::inherit_original`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inherited_from: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Why {
    pub pid: ProcessId,
    pub starttime: StartTime,
    /// `rule NAME (file:line)` or `request from uid U (pid P)`.
    pub by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    #[serde(default, skip_serializing_if = "crate::sched::TaskAttrs::is_empty")]
    pub attrs: crate::sched::TaskAttrs,
    /// Seconds since the epoch.
    pub at: u64,
}

impl Record {
    /// The recorded task's identity, `tid` being the id it is recorded under.
    pub fn key(&self, tid: ThreadId) -> TaskKey {
        TaskKey::new(self.pid, tid, self.starttime)
    }
}

impl AttrRecord {
    /// The recorded task's identity, `tid` being the id it is recorded under.
    pub fn key(&self, tid: ThreadId) -> TaskKey {
        TaskKey::new(self.pid, tid, self.starttime)
    }
}

impl Why {
    /// The recorded task's identity, `tid` being the id it is recorded under.
    pub fn key(&self, tid: ThreadId) -> TaskKey {
        TaskKey::new(self.pid, tid, self.starttime)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restriction {
    pub weight: u32,
    /// The `cpu.max` value written (`max 100000` for none).
    pub cpu_max: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: not a cgqos state file ({source}); move it away to start afresh")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error(
        "{path}: state file version {found}, this cgqos understands version {VERSION}; left untouched (use the cgqos that wrote it, or move it away after undoing its changes)"
    )]
    Version { path: PathBuf, found: String },
    #[error(
        "{0}: locked by another cgqos process (a running daemon holds it: talk to it, without --direct, or stop it)"
    )]
    Locked(PathBuf),
    #[error(
        "{path}: cgqos is set up at {other} (recorded in the state file), not at {ours}: run without --cgroup-root to use {other}, or tear it down first (or use another --state-dir)"
    )]
    OtherRoot {
        path: PathBuf,
        other: String,
        ours: String,
    },
    /// A state directory others could plant files in.
    #[error("state directory {path}: {why}; refusing to use it as root")]
    Unsafe { path: PathBuf, why: String },
}

/// Bytes read from a state file at most: a real one is a few hundred kilobytes.
const MAX_STATE_BYTES: u64 = 64 << 20;

/// The state directory, locked for the lifetime of this value. Every file in it is opened
/// relative to the directory's descriptor, never following a symlink.
pub struct StateDir {
    dir: PathBuf,
    fd: OwnedFd,
    _lock: File,
}

/// Opens `dir` and checks, on the opened descriptor (no race with a rename), that only root
/// or this process's user can create files in it: owned by root or our euid, not writable
/// by group or others. Anyone else could plant a symlink or a forged record there.
fn open_checked(dir: &Path) -> Result<OwnedFd, StateError> {
    let c = CString::new(dir.as_os_str().as_bytes()).map_err(|_| StateError::Unsafe {
        path: dir.to_path_buf(),
        why: "the path contains a NUL byte".into(),
    })?;
    let io_err = |e: rustix::io::Errno| StateError::Io {
        path: dir.to_path_buf(),
        source: e.into(),
    };
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let fd = rustix::fs::open(c.as_c_str(), flags, Mode::empty()).map_err(io_err)?;
    let meta = rustix::fs::fstat(&fd).map_err(io_err)?;
    let euid = rustix::process::geteuid().as_raw();
    if meta.st_uid != 0 && meta.st_uid != euid {
        return Err(StateError::Unsafe {
            path: dir.to_path_buf(),
            why: format!(
                "owned by uid {}, expected root{}",
                meta.st_uid,
                if euid == 0 {
                    String::new()
                } else {
                    format!(" or uid {euid}")
                }
            ),
        });
    }
    if meta.st_mode & 0o022 != 0 {
        return Err(StateError::Unsafe {
            path: dir.to_path_buf(),
            why: format!(
                "mode {:04o} lets group or others create files in it (chmod go-w)",
                meta.st_mode & 0o7777
            ),
        });
    }
    Ok(fd)
}

/// `openat(dir, name, flags | O_NOFOLLOW | O_CLOEXEC, mode)`: a symlink planted as `name`
/// fails with ELOOP instead of redirecting root's write.
fn open_at(dir: &OwnedFd, name: &str, flags: OFlags, mode: u32) -> io::Result<File> {
    let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(dir, name, flags, Mode::from_bits_retain(mode))?;
    Ok(File::from(fd))
}

fn unlink_at(dir: &OwnedFd, name: &str) -> io::Result<()> {
    Ok(rustix::fs::unlinkat(dir, name, AtFlags::empty())?)
}

/// Reads the state file of an opened, checked directory: a regular file, size-capped, its
/// version checked before anything else is interpreted. `None` when there is none.
fn read_at(dir: &OwnedFd, path: &Path) -> Result<Option<State>, StateError> {
    let io_err = |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    };
    let f = match open_at(dir, STATE_FILE, OFlags::RDONLY | OFlags::NONBLOCK, 0) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(e)),
    };
    let meta = f.metadata().map_err(io_err)?;
    if !meta.is_file() {
        return Err(io_err(io::Error::other("not a regular file")));
    }
    let mut bytes = Vec::new();
    f.take(MAX_STATE_BYTES)
        .read_to_end(&mut bytes)
        .map_err(io_err)?;
    let corrupt = |source| StateError::Corrupt {
        path: path.to_path_buf(),
        source,
    };
    let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(corrupt)?;
    match value.get("version") {
        Some(serde_json::Value::Number(n)) if n.as_u64() == Some(VERSION as u64) => {}
        other => {
            return Err(StateError::Version {
                path: path.to_path_buf(),
                found: other.map_or("(none)".into(), |v| v.to_string()),
            });
        }
    }
    serde_json::from_value(value).map(Some).map_err(corrupt)
}

/// The cgqos root recorded in the state file of `dir`, read without taking the lock (the
/// file is replaced atomically). `None` when there is no directory, file or record.
pub fn recorded_root(dir: &Path) -> Result<Option<PathBuf>, StateError> {
    Ok(read_unlocked(dir)?.and_then(|s| s.root))
}

/// The state of `dir` without the lock (for `why`, and to find the recorded root); the
/// directory is checked as for `lock`. `None` when the directory or the file is absent.
pub fn read_unlocked(dir: &Path) -> Result<Option<State>, StateError> {
    if !dir.exists() {
        return Ok(None);
    }
    let fd = open_checked(dir)?;
    read_at(&fd, &dir.join(STATE_FILE))
}

/// Whether two spellings name the same directory (`/a/b/` and `/a/./b`, or a symlink).
fn same_dir(a: &Path, b: &Path) -> bool {
    a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
}

impl StateDir {
    /// Creates the directory if needed (mode 0755), checks it is safe, and takes the lock
    /// (blocking, a few seconds at most).
    pub fn lock(dir: &Path) -> Result<StateDir, StateError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|source| StateError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        let fd = open_checked(dir)?;
        let lock_path = dir.join(LOCK_FILE);
        let lock =
            open_at(&fd, LOCK_FILE, OFlags::RDWR | OFlags::CREATE, 0o600).map_err(|source| {
                StateError::Io {
                    path: lock_path.clone(),
                    source,
                }
            })?;
        // Another cgqos command finishes in milliseconds; a daemon holds the lock for its
        // whole life, so give up after a few seconds with a message that says so.
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        loop {
            match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => break,
                Err(rustix::io::Errno::WOULDBLOCK) => {}
                Err(e) => {
                    return Err(StateError::Io {
                        path: lock_path,
                        source: e.into(),
                    });
                }
            }
            if std::time::Instant::now() >= deadline {
                return Err(StateError::Locked(lock_path));
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Ok(StateDir {
            dir: dir.to_path_buf(),
            fd,
            _lock: lock,
        })
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// Reads the state of `root`; an absent file is an empty state. A state recorded for
    /// another root is refused, never rewritten; so is a file of an unknown version.
    pub fn load(&self, root: &Path) -> Result<State, StateError> {
        let path = self.path();
        // A fresh state records the groups it creates from the start.
        let state = read_at(&self.fd, &path)?.unwrap_or_else(|| State {
            created: Some(BTreeSet::new()),
            ..State::default()
        });
        if let Some(other) = &state.root {
            if !same_dir(other, root) {
                return Err(StateError::OtherRoot {
                    path,
                    other: other.display().to_string(),
                    ours: root.display().to_string(),
                });
            }
        }
        Ok(State {
            version: VERSION,
            root: Some(state.root.clone().unwrap_or_else(|| root.to_path_buf())),
            ..state
        })
    }

    /// Replaces the state file atomically: a new temporary file (O_EXCL: never an existing
    /// file or a symlink), fsync, rename over the old one.
    pub fn save(&self, state: &State) -> Result<(), StateError> {
        let path = self.path();
        let tmp_name = format!(".{STATE_FILE}.tmp");
        let tmp = self.dir.join(&tmp_name);
        let io_err = |p: &Path| {
            let p = p.to_path_buf();
            move |source| StateError::Io { path: p, source }
        };
        // Compact: the daemon rewrites it after every batch of changes.
        let bytes = serde_json::to_vec(state).expect("state serialises");
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL;
        let mut f = match open_at(&self.fd, &tmp_name, flags, 0o644) {
            // A temporary file left by a crash (we hold the lock: nobody else writes it).
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                unlink_at(&self.fd, &tmp_name).map_err(io_err(&tmp))?;
                open_at(&self.fd, &tmp_name, flags, 0o644)
            }
            r => r,
        }
        .map_err(io_err(&tmp))?;
        f.write_all(&bytes).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        rustix::fs::renameat(&self.fd, tmp_name.as_str(), &self.fd, STATE_FILE)
            .map_err(|e| io_err(&path)(e.into()))?;
        Ok(())
    }

    /// Removes the state file (after a complete teardown).
    pub fn clear(&self) -> Result<(), StateError> {
        match unlink_at(&self.fd, STATE_FILE) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StateError::Io {
                path: self.path(),
                source,
            }),
        }
    }
}

impl State {
    /// Remembers where a task was before its first move; later moves keep the first origin.
    pub fn remember(&mut self, tid: ThreadId, record: Record) {
        let tid = tid.get();
        match self.tasks.get(&tid) {
            Some(r) if r.starttime == record.starttime => {
                if record.process && !r.process {
                    let mut r = r.clone();
                    r.process = true;
                    self.tasks.insert(tid, r);
                }
            }
            _ => {
                self.tasks.insert(tid, record);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let sd = StateDir::lock(dir.path()).unwrap();
        let mut s = sd.load(Path::new("/cg")).unwrap();
        s.remember(ThreadId::new(10), rec(5, "/a"));
        sd.save(&s).unwrap();
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
        let sd = StateDir::lock(dir.path()).unwrap();
        let e = sd.load(Path::new("/cg")).unwrap_err();
        assert!(e.to_string().contains("not a cgqos state file"), "{e}");
    }

    #[test]
    fn state_of_another_root_is_not_mixed_in() {
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir::lock(dir.path()).unwrap();
        let mut s = sd.load(Path::new("/one")).unwrap();
        s.remember(ThreadId::new(10), rec(5, "/a"));
        sd.save(&s).unwrap();
        assert!(matches!(
            sd.load(Path::new("/two")),
            Err(StateError::OtherRoot { .. })
        ));
    }
    #[test]
    fn a_planted_temporary_symlink_is_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = tempfile::NamedTempFile::new().unwrap();
        fs::write(target.path(), "precious").unwrap();
        std::os::unix::fs::symlink(target.path(), dir.path().join(".state.json.tmp")).unwrap();
        let sd = StateDir::lock(dir.path()).unwrap();
        let s = sd.load(Path::new("/cg")).unwrap();
        sd.save(&s).unwrap();
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
        let sd = StateDir::lock(dir.path()).unwrap();
        assert!(sd.load(Path::new("/cg")).is_err());
    }

    #[test]
    fn an_unknown_version_is_an_error_and_the_file_stays() {
        let dir = tempfile::tempdir().unwrap();
        let text = r#"{"version":2,"root":"/cg","created_root":false,"tasks":{},"vms":[]}"#;
        fs::write(dir.path().join(STATE_FILE), text).unwrap();
        let sd = StateDir::lock(dir.path()).unwrap();
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
}
