//! Reading configuration, board and rules files safely as root: only regular files (a FIFO
//! would block the reader for good, a device never ends), never more than
//! [`MAX_CONFIG_BYTES`], and, where asked, only files that root or the daemon's user owns and
//! nobody else may write, checked on the opened file rather than on its name.
//!
//! Symbolic links are followed: configuration under /etc is often a link to a root-owned file
//! elsewhere. What is checked (type, size, owner, mode) is the file actually opened.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Largest configuration file read, in bytes. Real board and rules files are a few KiB.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{}: cannot read: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: not a regular file ({kind}): configuration files must be regular files", path.display())]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error("{}: larger than the limit of {limit} bytes for a configuration file", path.display())]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("{}: refused: {why}; configuration must be writable only by root", path.display())]
    Untrusted { path: PathBuf, why: String },
}

impl ReadError {
    pub fn path(&self) -> &Path {
        match self {
            ReadError::Io { path, .. }
            | ReadError::NotRegular { path, .. }
            | ReadError::TooLarge { path, .. }
            | ReadError::Untrusted { path, .. } => path,
        }
    }

    /// The message without the leading path (for errors that carry the path elsewhere).
    pub fn detail(&self) -> String {
        let full = self.to_string();
        let prefix = format!("{}: ", self.path().display());
        full.strip_prefix(&prefix).unwrap_or(&full).to_string()
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, ReadError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

/// Whose files are accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// Anyone's (the CLI reading files its user named).
    Any,
    /// Only files owned by root or the effective user, not writable by group or others.
    Owner,
}

fn kind(ft: &fs::FileType) -> &'static str {
    if ft.is_dir() {
        "a directory"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else {
        "not a file"
    }
}

/// Why a file's owner or mode makes it untrusted, if it does.
pub fn untrusted(m: &fs::Metadata) -> Option<String> {
    let euid = rustix::process::geteuid().as_raw();
    if m.uid() != euid && m.uid() != 0 {
        Some(format!("owned by uid {}", m.uid()))
    } else if m.mode() & 0o022 != 0 {
        Some(format!(
            "writable by group or others (mode {:o})",
            m.mode() & 0o777
        ))
    } else {
        None
    }
}

/// Reads a whole configuration file as text.
pub fn read(path: &Path, trust: Trust) -> Result<String, ReadError> {
    let io = |source: io::Error| ReadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let check = |m: &fs::Metadata| -> Result<(), ReadError> {
        if !m.file_type().is_file() {
            return Err(ReadError::NotRegular {
                path: path.to_path_buf(),
                kind: kind(&m.file_type()),
            });
        }
        if m.len() > MAX_CONFIG_BYTES {
            return Err(ReadError::TooLarge {
                path: path.to_path_buf(),
                limit: MAX_CONFIG_BYTES,
            });
        }
        Ok(())
    };
    // Looked at before opening, so a device is never opened (opening one can have effects);
    // checked again on the opened file, which is what counts.
    check(&fs::metadata(path).map_err(io)?)?;
    // O_NONBLOCK: a FIFO swapped in meanwhile opens at once instead of waiting for a writer
    // (and is then refused); O_NOCTTY: a terminal never becomes ours.
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(io)?;
    let m = file.metadata().map_err(io)?;
    check(&m)?;
    if trust == Trust::Owner {
        if let Some(why) = untrusted(&m) {
            return Err(ReadError::Untrusted {
                path: path.to_path_buf(),
                why,
            });
        }
    }
    let mut bytes = Vec::with_capacity(m.len() as usize);
    // One byte more than the limit tells a file that grew past it from one that fits.
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(ReadError::TooLarge {
            path: path.to_path_buf(),
            limit: MAX_CONFIG_BYTES,
        });
    }
    String::from_utf8(bytes)
        .map_err(|_| io(io::Error::new(io::ErrorKind::InvalidData, "not UTF-8 text")))
}

/// Like [`read`], but a file that does not exist is `None`.
pub fn read_optional(path: &Path, trust: Trust) -> Result<Option<String>, ReadError> {
    match read(path, trust) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether user `uid` with groups `gids` could read `path` itself, by the mode bits of the
/// file and of every directory on the way (symbolic links resolved). Used to decide whether
/// an error message that may quote the file can be shown to that user. A file that does not
/// exist quotes nothing. ACLs are not consulted: they can only make this answer `false`
/// where the user could read, never the reverse (a named entry can deny, see the caveat in
/// docs/configuration.md).
pub fn readable_by(path: &Path, uid: u32, gids: &[u32]) -> bool {
    if uid == 0 {
        return true;
    }
    let real = match fs::canonicalize(path) {
        Ok(p) => p,
        Err(e) => {
            return e.kind() == io::ErrorKind::NotFound && fs::symlink_metadata(path).is_err();
        }
    };
    let allows = |m: &fs::Metadata, bit: u32| {
        let mode = m.mode();
        let shift = if m.uid() == uid {
            6
        } else if gids.contains(&m.gid()) {
            3
        } else {
            0
        };
        (mode >> shift) & bit != 0
    };
    let dirs_ok = real
        .ancestors()
        .skip(1)
        .all(|d| fs::metadata(d).is_ok_and(|m| allows(&m, 0o1)));
    dirs_ok && fs::metadata(&real).is_ok_and(|m| allows(&m, 0o4))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_files_read_and_everything_else_is_refused_by_path() {
        let d = tempfile::tempdir().unwrap();
        let ok = d.path().join("ok.yaml");
        fs::write(&ok, "a: 1\n").unwrap();
        assert_eq!(read(&ok, Trust::Any).unwrap(), "a: 1\n");
        let link = d.path().join("link.yaml");
        std::os::unix::fs::symlink(&ok, &link).unwrap();
        assert_eq!(read(&link, Trust::Any).unwrap(), "a: 1\n");

        let fifo = d.path().join("zz.yaml");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        assert_eq!(
            read(&fifo, Trust::Any).unwrap_err().to_string(),
            format!(
                "{}: not a regular file (a FIFO): configuration files must be regular files",
                fifo.display()
            )
        );
        assert!(
            read(Path::new("/dev/zero"), Trust::Any)
                .unwrap_err()
                .to_string()
                .contains("/dev/zero: not a regular file (a character device)")
        );
        assert!(
            read(d.path(), Trust::Any)
                .unwrap_err()
                .to_string()
                .contains("not a regular file (a directory)")
        );
        assert!(
            read_optional(&d.path().join("none"), Trust::Any)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn files_over_the_limit_are_refused_with_the_limit() {
        let d = tempfile::tempdir().unwrap();
        let big = d.path().join("big.yaml");
        fs::write(&big, vec![b'#'; MAX_CONFIG_BYTES as usize + 1]).unwrap();
        let e = read(&big, Trust::Any).unwrap_err().to_string();
        assert!(
            e.ends_with(
                "big.yaml: larger than the limit of 1048576 bytes for a configuration file"
            ),
            "{e}"
        );
        let fits = d.path().join("fits.yaml");
        fs::write(&fits, vec![b'#'; MAX_CONFIG_BYTES as usize]).unwrap();
        assert!(read(&fits, Trust::Any).is_ok());
    }

    #[test]
    fn readable_by_follows_links_and_needs_every_directory() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        fs::set_permissions(d.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let open = d.path().join("open.yaml");
        fs::write(&open, "x").unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o644)).unwrap();
        let secret = d.path().join("secret");
        fs::write(&secret, "x").unwrap();
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
        let link = d.path().join("link.yaml");
        std::os::unix::fs::symlink(&secret, &link).unwrap();
        let closed = d.path().join("closed");
        fs::create_dir(&closed).unwrap();
        fs::set_permissions(&closed, fs::Permissions::from_mode(0o700)).unwrap();
        let inside = closed.join("in.yaml");
        fs::write(&inside, "x").unwrap();
        fs::set_permissions(&inside, fs::Permissions::from_mode(0o644)).unwrap();
        let me = rustix::process::geteuid().as_raw();
        let other = if me == 54321 { 54322 } else { 54321 };
        assert!(readable_by(&open, other, &[other]));
        assert!(!readable_by(&secret, other, &[other]));
        assert!(!readable_by(&link, other, &[other]));
        assert!(!readable_by(&inside, other, &[other]));
        assert!(readable_by(&d.path().join("gone"), other, &[other]));
        assert!(readable_by(&link, 0, &[0]));
        if me != 0 {
            assert!(readable_by(&inside, me, &[]));
        }
        let dangling = d.path().join("dangling.yaml");
        std::os::unix::fs::symlink(d.path().join("nothing"), &dangling).unwrap();
        assert!(!readable_by(&dangling, other, &[other]));
    }

    #[test]
    fn trust_is_checked_on_the_opened_file() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("w.yaml");
        fs::write(&f, "a: 1\n").unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o666)).unwrap();
        assert!(read(&f, Trust::Any).is_ok());
        let link = d.path().join("l.yaml");
        std::os::unix::fs::symlink(&f, &link).unwrap();
        assert_eq!(
            read(&link, Trust::Owner).unwrap_err().to_string(),
            format!(
                "{}: refused: writable by group or others (mode 666); configuration must be writable only by root",
                link.display()
            )
        );
    }
}
