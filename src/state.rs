//! What cgqos changed, so `teardown` can undo it: the original cgroup of every task it moved,
//! whether it created the cgqos root, which VM groups it added.
//!
//! One JSON file under the state directory (`/run/cgqos/` by default: tmpfs, so a reboot,
//! which also resets cgroups, starts clean). Updates are write-to-temp, fsync, rename, so a
//! crash mid-write leaves the old file or the new one, never half of either. An exclusive
//! `flock` on a lock file serialises concurrent cgqos commands.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const STATE_FILE: &str = "state.json";
const LOCK_FILE: &str = "lock";
const VERSION: u32 = 1;
/// How long a command waits for the state lock.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The process the task belongs to.
    pub pid: u32,
    pub starttime: u64,
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
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttrRecord {
    pub pid: u32,
    pub starttime: u64,
    pub original: crate::sched::TaskAttrs,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Why {
    pub pid: u32,
    pub starttime: u64,
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
        "{0}: locked by another cgqos process (a running daemon holds it: talk to it, without --direct, or stop it)"
    )]
    Locked(PathBuf),
    #[error(
        "{path}: state of cgqos root {other}, not {ours}; run teardown with --cgroup-root {other} first, or use another --state-dir"
    )]
    OtherRoot {
        path: PathBuf,
        other: String,
        ours: String,
    },
}

/// The state directory, locked for the lifetime of this value.
pub struct StateDir {
    dir: PathBuf,
    _lock: File,
}

impl StateDir {
    /// Creates the directory if needed and takes the lock (blocking).
    pub fn lock(dir: &Path) -> Result<StateDir, StateError> {
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StateError::Io { path, source }
        };
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        // Another cgqos command finishes in milliseconds; a daemon holds the lock for its
        // whole life, so give up after a few seconds with a message that says so.
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        loop {
            // SAFETY: flock on a file descriptor we own; no memory is passed.
            let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                break;
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(StateError::Io {
                    path: lock_path,
                    source: e,
                });
            }
            if std::time::Instant::now() >= deadline {
                return Err(StateError::Locked(lock_path));
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Ok(StateDir {
            dir: dir.to_path_buf(),
            _lock: lock,
        })
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// Reads the state of `root`; an absent file is an empty state.
    pub fn load(&self, root: &Path) -> Result<State, StateError> {
        let path = self.path();
        let state = match fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice::<State>(&bytes).map_err(|source| StateError::Corrupt {
                    path: path.clone(),
                    source,
                })?
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => State::default(),
            Err(source) => return Err(StateError::Io { path, source }),
        };
        if let Some(other) = &state.root {
            if other != root && !(state.tasks.is_empty() && state.vms.is_empty()) {
                return Err(StateError::OtherRoot {
                    path,
                    other: other.display().to_string(),
                    ours: root.display().to_string(),
                });
            }
        }
        Ok(State {
            version: VERSION,
            root: Some(root.to_path_buf()),
            ..state
        })
    }

    /// Replaces the state file atomically.
    pub fn save(&self, state: &State) -> Result<(), StateError> {
        let path = self.path();
        let tmp = self.dir.join(format!(".{STATE_FILE}.tmp"));
        let io_err = |p: &Path| {
            let p = p.to_path_buf();
            move |source| StateError::Io { path: p, source }
        };
        // Compact: the daemon rewrites it after every batch of changes.
        let bytes = serde_json::to_vec(state).expect("state serialises");
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(&bytes).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        Ok(())
    }

    /// Removes the state file (after a complete teardown).
    pub fn clear(&self) -> Result<(), StateError> {
        match fs::remove_file(self.path()) {
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
    pub fn remember(&mut self, tid: u32, record: Record) {
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
            pid: 10,
            starttime,
            original: original.into(),
            process: false,
        }
    }

    #[test]
    fn first_origin_wins_until_the_id_is_reused() {
        let mut s = State::default();
        s.remember(10, rec(5, "/a"));
        s.remember(10, rec(5, "/b"));
        assert_eq!(s.tasks[&10].original, PathBuf::from("/a"));
        s.remember(10, rec(6, "/c"));
        assert_eq!(s.tasks[&10].original, PathBuf::from("/c"));
    }

    #[test]
    fn save_then_load_round_trips_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir::lock(dir.path()).unwrap();
        let mut s = sd.load(Path::new("/cg")).unwrap();
        s.remember(10, rec(5, "/a"));
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
        s.remember(10, rec(5, "/a"));
        sd.save(&s).unwrap();
        assert!(matches!(
            sd.load(Path::new("/two")),
            Err(StateError::OtherRoot { .. })
        ));
    }
}
