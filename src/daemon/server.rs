//! The socket itself: bind it safely in a checked directory, and remove it at shutdown only
//! if it is still ours. Serving the connections is `conn`'s.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};

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

impl SocketDir {
    /// `/proc/self/fd/<dir>/<name>`: the socket's path through the opened directory, for the
    /// calls that take a path (bind, connect).
    fn via_fd(&self) -> PathBuf {
        let mut p = PathBuf::from(format!("/proc/self/fd/{}", self.dir.as_raw_fd()));
        p.push(std::ffi::OsStr::from_bytes(self.name.as_bytes()));
        p
    }

    /// The socket's entry, not following a symlink; `None` if there is none.
    fn entry(&self) -> io::Result<Option<Stat>> {
        match rustix::fs::statat(&self.dir, self.name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn unlink(&self) -> io::Result<()> {
        Ok(rustix::fs::unlinkat(
            &self.dir,
            self.name.as_c_str(),
            AtFlags::empty(),
        )?)
    }

    fn socket_path(&self) -> PathBuf {
        self.dir_path
            .join(std::ffi::OsStr::from_bytes(self.name.as_bytes()))
    }
}

fn is_socket(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::Socket
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
        rustix::fs::chmodat(
            &sd.dir,
            sd.name.as_c_str(),
            Mode::from_bits_retain(mode),
            AtFlags::empty(),
        )
        .map_err(|e| {
            let e = io::Error::from(e);
            io::Error::new(e.kind(), format!("chmod {mode:o}: {e}"))
        })?;
        if let Some(g) = gid {
            // No uid: the owner stays.
            rustix::fs::chownat(
                &sd.dir,
                sd.name.as_c_str(),
                None,
                Some(rustix::fs::Gid::from_raw(g)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| {
                let e = io::Error::from(e);
                io::Error::new(e.kind(), format!("chown to group {g}: {e}"))
            })?;
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
    let euid = rustix::process::geteuid().as_raw();
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
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = match rustix::fs::open(cdir.as_c_str(), flags, Mode::empty()).map_err(io::Error::from)
    {
        Ok(fd) => fd,
        // O_NOFOLLOW on a symlink: ELOOP, or ENOTDIR with O_DIRECTORY.
        Err(_) if fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink()) => {
            return refuse(format!(
                "{} is a symbolic link; give the socket's real directory",
                dir.display()
            ));
        }
        Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", dir.display()))),
    };
    let st = rustix::fs::fstat(&fd)?;
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
