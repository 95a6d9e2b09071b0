//! The socket itself: bind it safely in a checked directory, and remove it at shutdown only
//! if it is still ours. Serving the connections is `conn`'s.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// The socket's directory, opened once and checked on the descriptor: the checks, the bind,
/// the mode and group and the removal at shutdown all work relative to it, so renaming or
/// replacing a component of the path afterwards cannot redirect the daemon.
pub struct SocketDir {
    dir: OwnedFd,
    /// The directory as given, for messages.
    dir_path: PathBuf,
    /// The socket's file name in it.
    name: CString,
    /// (device, inode) of the socket this daemon bound, so that shutdown removes that one
    /// and nothing a later daemon put there.
    bound: Option<(u64, u64)>,
}

fn refuse<T>(msg: String) -> io::Result<T> {
    Err(io::Error::new(io::ErrorKind::PermissionDenied, msg))
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

impl SocketDir {
    /// `/proc/self/fd/<dir>/<name>`: the socket's path through the opened directory, for the
    /// calls that take a path (bind, connect).
    fn via_fd(&self) -> PathBuf {
        let mut p = PathBuf::from(format!("/proc/self/fd/{}", self.dir.as_raw_fd()));
        p.push(std::ffi::OsStr::from_bytes(self.name.as_bytes()));
        p
    }

    /// The socket's entry, not following a symlink; `None` if there is none.
    fn entry(&self) -> io::Result<Option<libc::stat>> {
        // SAFETY: all-zero is a valid `stat`; it is only read after fstatat filled it.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: a live directory descriptor, a NUL-terminated name and a `stat` we own.
        let r = unsafe {
            libc::fstatat(
                self.dir.as_raw_fd(),
                self.name.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        match cvt(r) {
            Ok(_) => Ok(Some(st)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn unlink(&self) -> io::Result<()> {
        // SAFETY: a live directory descriptor and a NUL-terminated name.
        cvt(unsafe { libc::unlinkat(self.dir.as_raw_fd(), self.name.as_ptr(), 0) }).map(drop)
    }

    fn socket_path(&self) -> PathBuf {
        self.dir_path
            .join(std::ffi::OsStr::from_bytes(self.name.as_bytes()))
    }
}

fn is_socket(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFSOCK
}

/// Creates the listening socket in the checked directory (see `check`).
pub fn bind(
    sd: &mut SocketDir,
    mode: u32,
    gid: Option<u32>,
) -> io::Result<std::os::unix::net::UnixListener> {
    let listener = std::os::unix::net::UnixListener::bind(sd.via_fd())?;
    // Nobody else can create or rename entries in the checked directory, so the name still
    // is the socket just bound.
    let finish = |sd: &mut SocketDir| -> io::Result<()> {
        // SAFETY: a live directory descriptor and a NUL-terminated name.
        cvt(unsafe {
            libc::fchmodat(
                sd.dir.as_raw_fd(),
                sd.name.as_ptr(),
                mode as libc::mode_t,
                0,
            )
        })
        .map_err(|e| io::Error::new(e.kind(), format!("chmod {mode:o}: {e}")))?;
        if let Some(g) = gid {
            // SAFETY: as above; uid -1 leaves the owner unchanged.
            cvt(unsafe {
                libc::fchownat(
                    sd.dir.as_raw_fd(),
                    sd.name.as_ptr(),
                    u32::MAX,
                    g,
                    libc::AT_SYMLINK_NOFOLLOW,
                )
            })
            .map_err(|e| io::Error::new(e.kind(), format!("chown to group {g}: {e}")))?;
        }
        sd.bound = sd.entry()?.map(|st| (st.st_dev, st.st_ino));
        listener.set_nonblocking(true)
    };
    if let Err(e) = finish(sd) {
        let _ = sd.unlink();
        return Err(e);
    }
    Ok(listener)
}

/// Opens and checks the socket's directory, before the daemon touches anything: created
/// (mode 0755) if missing; a symlink, a directory owned by anyone but root or the daemon's
/// user, or one writable by group or others is refused (others could replace the socket).
/// An existing entry must be a socket of the daemon's user on which no daemon answers; such a
/// stale socket is removed.
pub fn check(path: &Path) -> io::Result<SocketDir> {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    let Some(name) = path.file_name() else {
        return refuse(format!("{} does not name a file", path.display()));
    };
    let name = CString::new(name.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in the path"))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|e| io::Error::new(e.kind(), format!("creating {}: {e}", dir.display())))?;
    let cdir = CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in the path"))?;
    // SAFETY: a NUL-terminated path; the descriptor is owned right below.
    let fd = unsafe {
        libc::open(
            cdir.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    let fd = match cvt(fd) {
        // SAFETY: `fd` was just returned by open and is owned by nobody else.
        Ok(fd) => unsafe { OwnedFd::from_raw_fd(fd) },
        // O_NOFOLLOW on a symlink: ELOOP, or ENOTDIR with O_DIRECTORY.
        Err(_) if fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink()) => {
            return refuse(format!(
                "{} is a symbolic link; give the socket's real directory",
                dir.display()
            ));
        }
        Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", dir.display()))),
    };
    // SAFETY: all-zero is a valid `stat`; it is only read after fstat filled it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a live descriptor and a `stat` we own.
    cvt(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    if st.st_uid != 0 && st.st_uid != euid {
        return refuse(format!(
            "{} is owned by uid {}, not by root or the daemon (uid {euid})",
            dir.display(),
            st.st_uid
        ));
    }
    if st.st_mode & 0o022 != 0 {
        return refuse(format!(
            "{} is writable by group or others (mode {:o}); the socket's directory must be \
             writable only by its owner",
            dir.display(),
            st.st_mode & 0o7777
        ));
    }
    let sd = SocketDir {
        dir: fd,
        dir_path: dir.to_path_buf(),
        name,
        bound: None,
    };
    if let Some(m) = sd.entry()? {
        if !is_socket(&m) {
            return refuse(format!("{} exists and is not a socket", path.display()));
        }
        if m.st_uid != euid {
            return refuse(format!("{} is owned by uid {}", path.display(), m.st_uid));
        }
        if std::os::unix::net::UnixStream::connect(sd.via_fd()).is_ok() {
            return refuse(format!("another daemon is serving {}", path.display()));
        }
        sd.unlink()?;
    }
    Ok(sd)
}

/// Removes the socket on shutdown, if it is still the one this daemon bound.
pub fn unbind(sd: &SocketDir) {
    let ours = sd
        .entry()
        .ok()
        .flatten()
        .is_some_and(|st| is_socket(&st) && sd.bound == Some((st.st_dev, st.st_ino)));
    if ours {
        if let Err(e) = sd.unlink() {
            tracing::warn!("removing {}: {e}", sd.socket_path().display());
        }
    }
}
