//! The state directory: checked and locked, every file opened relative to it without
//! following a symlink. The snapshot is replaced atomically, the journal appended to; both
//! are read back together, by the lock holder and by readers without the lock alike.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{AtFlags, Mode, OFlags};

use super::journal::{self, JOURNAL_FILE, Meta, Parsed};
use super::{Baseline, STATE_FILE, State, StateError, VERSION};

const LOCK_FILE: &str = "lock";
#[cfg(test)]
pub(super) const LOCK_FILE_FOR_TESTS: &str = LOCK_FILE;
/// How long a command waits for the state lock.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);
/// Bytes read from a state file (snapshot or journal) at most: a real snapshot is a few
/// megabytes with ten thousand tasks, and the journal is kept below about its size.
const MAX_STATE_BYTES: u64 = 64 << 20;
/// The journal is folded into a new snapshot once it would hold more than the snapshot's
/// bytes plus this: each change then pays for rewriting at most its own size, and a load
/// reads at most about twice the snapshot (docs/performance.md, "State store").
// Small, so a short-lived command (the CLI replays the journal at every start) reads little;
// the bound on the cost per change comes from the snapshot term.
pub(super) const JOURNAL_SLACK: u64 = 4 << 10;
/// Times a reader without the lock rereads when a compaction replaced the files between
/// its two reads.
const READ_RETRIES: usize = 5;

/// The state directory, locked for the lifetime of this value.
pub struct StateDir {
    dir: PathBuf,
    fd: OwnedFd,
    _lock: File,
    /// Where changes go; `None` until a snapshot with its journal is in place, and after a
    /// failed append (the next commit then writes a snapshot).
    journal: Option<Appender>,
    /// The baseline of the last value loaded or committed.
    token: u64,
    /// Whether the directory outlives a reboot (not tmpfs or ramfs): only then are writes
    /// flushed to the device (fsync, fdatasync). Checked once, when locked.
    on_disk: bool,
}

/// Whether the file system of `dir` keeps its files in memory only (tmpfs, ramfs): a flush
/// there does nothing a reboot would not undo anyway. Unknown counts as a disk.
fn in_memory(dir: &OwnedFd) -> bool {
    const TMPFS_MAGIC: u64 = 0x0102_1994;
    const RAMFS_MAGIC: u64 = 0x8584_58f6;
    rustix::fs::fstatfs(dir).is_ok_and(|st| {
        let magic = st.f_type as u64;
        magic == TMPFS_MAGIC || magic == RAMFS_MAGIC
    })
}

/// The open journal.
struct Appender {
    /// Opened with O_APPEND.
    file: File,
    /// Its size.
    len: u64,
    /// The size of the snapshot it follows.
    snapshot_len: u64,
    /// The metadata as on disk (snapshot and journal).
    meta: Meta,
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

/// Reads the snapshot of an opened, checked directory: a regular file, size-capped, its
/// version checked before anything else is interpreted. `None` when there is none; else the
/// state and its size.
fn read_snapshot(dir: &OwnedFd, path: &Path) -> Result<Option<(State, u64)>, StateError> {
    let io_err = |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    };
    let f = match open_at(dir, STATE_FILE, OFlags::RDONLY | OFlags::NONBLOCK, 0) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(e)),
    };
    let bytes = read_capped(&f).map_err(io_err)?;
    let corrupt = |source| StateError::Corrupt {
        path: path.to_path_buf(),
        source,
    };
    // The version alone first (the rest skipped, not built), then the state.
    #[derive(serde::Deserialize)]
    struct Versioned {
        version: Option<serde_json::Value>,
    }
    let v: Versioned = serde_json::from_slice(&bytes).map_err(corrupt)?;
    match v.version {
        Some(serde_json::Value::Number(n)) if matches!(n.as_u64(), Some(1 | 2)) => {}
        other => {
            return Err(StateError::Version {
                path: path.to_path_buf(),
                found: other.map_or("(none)".into(), |v| v.to_string()),
            });
        }
    }
    let state = serde_json::from_slice(&bytes).map_err(corrupt)?;
    Ok(Some((state, bytes.len() as u64)))
}

/// The whole of a regular file, refused beyond `MAX_STATE_BYTES` (never cut short: a cut
/// journal would look like a torn one).
fn read_capped(f: &File) -> io::Result<Vec<u8>> {
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    // Room for the whole file and the read that finds its end: two reads, not a dozen
    // growing ones (`take` hides the size from `read_to_end`).
    let mut bytes = Vec::with_capacity(meta.len().min(MAX_STATE_BYTES) as usize + 1);
    f.take(MAX_STATE_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_STATE_BYTES {
        return Err(io::Error::other(format!(
            "larger than {MAX_STATE_BYTES} bytes: not a state file cgqos wrote"
        )));
    }
    Ok(bytes)
}

/// The state on disk: the snapshot with its journal replayed.
struct OnDisk {
    state: State,
    snapshot_len: u64,
    /// The journal replayed, as opened, with the length of its complete lines.
    journal: Option<(File, u64)>,
}

enum Found {
    Nothing,
    State(Box<OnDisk>),
    /// The journal follows a newer snapshot than the one read: a compaction ran between
    /// the two reads (or the files were tampered with).
    NewerJournal,
}

/// Reads the snapshot and replays the journal that follows it (opened for appending when
/// `append`). A journal of an older snapshot is already in it, and is skipped.
fn read_on_disk(dir: &OwnedFd, dir_path: &Path, append: bool) -> Result<Found, StateError> {
    let Some((mut state, snapshot_len)) = read_snapshot(dir, &dir_path.join(STATE_FILE))? else {
        return Ok(Found::Nothing);
    };
    let path = dir_path.join(JOURNAL_FILE);
    let io_err = |source| StateError::Io {
        path: path.clone(),
        source,
    };
    let flags = if append {
        OFlags::RDWR | OFlags::APPEND
    } else {
        OFlags::RDONLY
    };
    let file = match open_at(dir, JOURNAL_FILE, flags | OFlags::NONBLOCK, 0) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let d = OnDisk {
                state,
                snapshot_len,
                journal: None,
            };
            return Ok(Found::State(Box::new(d)));
        }
        Err(e) => return Err(io_err(e)),
    };
    let bytes = read_capped(&file).map_err(io_err)?;
    let parsed: Parsed = journal::parse(&bytes).map_err(|e| StateError::Journal {
        path: path.clone(),
        line: e.0,
        why: e.1,
    })?;
    let journal = match parsed.generation {
        Some(g) if g > state.generation => return Ok(Found::NewerJournal),
        Some(g) if g == state.generation => {
            let valid = parsed.valid_len as u64;
            parsed.replay(&mut state);
            Some((file, valid))
        }
        // An older snapshot's (its changes are in this one), or one whose header never
        // made it to disk.
        _ => None,
    };
    Ok(Found::State(Box::new(OnDisk {
        state,
        snapshot_len,
        journal,
    })))
}

fn newer_journal(dir: &Path) -> StateError {
    StateError::Journal {
        path: dir.join(JOURNAL_FILE),
        line: 1,
        why: format!("it follows a newer snapshot than {STATE_FILE}"),
    }
}

/// The cgqos root recorded in the state of `dir`, read without taking the lock. `None`
/// when there is no directory, file or record.
pub fn recorded_root(dir: &Path) -> Result<Option<PathBuf>, StateError> {
    Ok(read_unlocked(dir)?.and_then(|s| s.root))
}

/// The state of `dir` without the lock (for `why`, `top`, and to find the recorded root);
/// the directory is checked as for `lock`. `None` when the directory or the state is
/// absent. The snapshot is replaced atomically and the journal only grows between
/// compactions, so a reader sees a state that was committed (a line being appended is
/// dropped as torn), rereading if a compaction ran between its two reads.
pub fn read_unlocked(dir: &Path) -> Result<Option<State>, StateError> {
    if !dir.exists() {
        return Ok(None);
    }
    let fd = open_checked(dir)?;
    for _ in 0..READ_RETRIES {
        match read_on_disk(&fd, dir, false)? {
            Found::Nothing => return Ok(None),
            Found::State(d) => return Ok(Some(d.state)),
            Found::NewerJournal => continue,
        }
    }
    Err(newer_journal(dir))
}

/// Whether two spellings name the same directory (`/a/b/` and `/a/./b`, or a symlink).
fn same_dir(a: &Path, b: &Path) -> bool {
    a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
}

/// A new baseline token, unique in this process.
fn next_token() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A snapshot generation after `prev`: the time in nanoseconds, so a journal left behind by
/// an earlier state (a teardown that removed the snapshot, then crashed) never names a
/// later snapshot.
fn next_generation(prev: u64) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    now.max(prev + 1)
}

impl StateDir {
    /// Creates the directory if needed (mode 0755), checks it is safe, and takes the lock
    /// (blocking, a few seconds at most).
    pub fn lock(dir: &Path) -> Result<StateDir, StateError> {
        // Made only when missing: opening an existing one is one call, not three.
        let fd = match open_checked(dir) {
            Err(StateError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(dir)
                    .map_err(|source| StateError::Io {
                        path: dir.to_path_buf(),
                        source,
                    })?;
                open_checked(dir)?
            }
            r => r?,
        };
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
            _lock: lock,
            journal: None,
            token: 0,
            on_disk: !in_memory(&fd),
            fd,
        })
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    #[cfg(test)]
    pub(super) fn flushes(&self) -> bool {
        self.on_disk
    }

    /// Reads the state of `root` (the snapshot, then the journal replayed; a torn last line
    /// is dropped and cut off); an absent state is an empty one. A state recorded for
    /// another root is refused, never rewritten; so is a file of an unknown version.
    pub fn load(&mut self, root: &Path) -> Result<State, StateError> {
        let given = |_: Option<&Path>| Ok::<_, StateError>(root.to_path_buf());
        self.load_for(given).map(|(_, state)| state)
    }

    /// `load` for the root `pick` chooses from the one recorded (if any): one read of the
    /// state where finding the root first and then loading would read it twice. Returns the
    /// root with the state.
    pub fn load_for<E: From<StateError>>(
        &mut self,
        pick: impl FnOnce(Option<&Path>) -> Result<PathBuf, E>,
    ) -> Result<(PathBuf, State), E> {
        let path = self.path();
        self.journal = None;
        let (mut state, journal) = match read_on_disk(&self.fd, &self.dir, true)? {
            Found::NewerJournal => return Err(newer_journal(&self.dir).into()),
            // A fresh state records the groups it creates from the start.
            Found::Nothing => {
                let fresh = State {
                    created: Some(BTreeSet::new()),
                    ..State::default()
                };
                (fresh, None)
            }
            Found::State(d) => {
                let j = d.journal.map(|(file, len)| Appender {
                    file,
                    len,
                    snapshot_len: d.snapshot_len,
                    meta: Meta::of(&d.state),
                });
                (d.state, j)
            }
        };
        let root = pick(state.root.as_deref())?;
        if let Some(other) = &state.root {
            if !same_dir(other, &root) {
                return Err(StateError::OtherRoot {
                    path,
                    other: other.display().to_string(),
                    ours: root.display().to_string(),
                }
                .into());
            }
        }
        if let Some(j) = &journal {
            // A line cut short by a crash: appends go after the last complete one.
            j.file.set_len(j.len).map_err(|source| StateError::Io {
                path: self.dir.join(JOURNAL_FILE),
                source,
            })?;
        }
        // A version 1 snapshot has no journal: the first commit writes a version 2 one.
        self.journal = journal.filter(|_| state.version == VERSION);
        state.version = VERSION;
        state.root.get_or_insert_with(|| root.clone());
        state.settle();
        self.token = next_token();
        state.baseline = Baseline(Some(self.token));
        Ok((root, state))
    }

    /// Makes every change to `state` since it was loaded or last saved durable: appended to
    /// the journal (one line per changed record, one write, fdatasync on a disk), or, for a
    /// value this directory did not load, after a wholesale `clear`, or when the journal has
    /// outgrown the snapshot, written whole as a new snapshot.
    pub fn save(&mut self, state: &mut State) -> Result<(), StateError> {
        let current = state.baseline.0 == Some(self.token) && !state.cleared();
        let Some(j) = self.journal.as_mut().filter(|_| current) else {
            return self.compact(state);
        };
        let lines = journal::pending_lines(state, &mut j.meta);
        if lines.is_empty() {
            return Ok(());
        }
        if j.len + lines.len() as u64 > j.snapshot_len + JOURNAL_SLACK {
            return self.compact(state);
        }
        let on_disk = self.on_disk;
        let appended = j
            .file
            .write_all(&lines)
            .and_then(|()| if on_disk { j.file.sync_data() } else { Ok(()) });
        if let Err(source) = appended {
            // A partial line may be on disk: the next commit starts afresh from a snapshot.
            self.journal = None;
            return Err(StateError::Io {
                path: self.dir.join(JOURNAL_FILE),
                source,
            });
        }
        j.len += lines.len() as u64;
        self.settled(state);
        Ok(())
    }

    fn settled(&mut self, state: &mut State) {
        state.settle();
        self.token = next_token();
        state.baseline = Baseline(Some(self.token));
    }

    /// Writes `state` whole as a new snapshot, then an empty journal that follows it.
    fn compact(&mut self, state: &mut State) -> Result<(), StateError> {
        self.journal = None;
        state.version = VERSION;
        state.generation = next_generation(state.generation);
        let snapshot = serde_json::to_vec(state).expect("state serialises");
        self.replace(STATE_FILE, &snapshot)?;
        // A crash here leaves the old journal, of an older generation: skipped on load.
        let header = journal::header(state.generation);
        let file = self.replace(JOURNAL_FILE, &header)?;
        self.journal = Some(Appender {
            file,
            len: header.len() as u64,
            snapshot_len: snapshot.len() as u64,
            meta: Meta::of(state),
        });
        self.settled(state);
        Ok(())
    }

    /// Replaces `name` atomically with `bytes`: a new temporary file (O_EXCL: never an
    /// existing file or a symlink), fsync, rename over `name`, fsync of the directory (so
    /// the snapshot is in place before its journal is); the two fsyncs on a disk only.
    /// Returns the file, open for appending.
    fn replace(&self, name: &str, bytes: &[u8]) -> Result<File, StateError> {
        let tmp_name = format!(".{name}.tmp");
        let err = |p: &str| {
            let path = self.dir.join(p);
            move |source| StateError::Io { path, source }
        };
        let flags = OFlags::WRONLY | OFlags::APPEND | OFlags::CREATE | OFlags::EXCL;
        let mut f = match open_at(&self.fd, &tmp_name, flags, 0o644) {
            // A temporary file left by a crash (we hold the lock: nobody else writes it).
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                unlink_at(&self.fd, &tmp_name).map_err(err(&tmp_name))?;
                open_at(&self.fd, &tmp_name, flags, 0o644)
            }
            r => r,
        }
        .map_err(err(&tmp_name))?;
        f.write_all(bytes).map_err(err(&tmp_name))?;
        if self.on_disk {
            f.sync_all().map_err(err(&tmp_name))?;
        }
        rustix::fs::renameat(&self.fd, tmp_name.as_str(), &self.fd, name)
            .map_err(|e| err(name)(e.into()))?;
        if self.on_disk {
            rustix::fs::fsync(&self.fd).map_err(|e| err(".")(e.into()))?;
        }
        Ok(f)
    }

    /// Removes the state (after a complete teardown): the snapshot first, so a crash in
    /// between leaves a journal that no snapshot names.
    pub fn clear(&mut self) -> Result<(), StateError> {
        self.journal = None;
        for name in [STATE_FILE, JOURNAL_FILE] {
            match unlink_at(&self.fd, name) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(StateError::Io {
                        path: self.dir.join(name),
                        source,
                    });
                }
            }
        }
        Ok(())
    }
}
