//! The cgroup2 mount's own options: which mount holds a cgroup, whether it has
//! `favordynmods`, and turning that on.
//!
//! `favordynmods` (Linux 6.0+) makes a `cgroup.procs` write skip the RCU grace period the
//! global threadgroup lock otherwise waits for (milliseconds when no other write came just
//! before), at a small cost on every fork, exec and exit (docs/performance.md,
//! "favordynmods"). It is a property of the whole cgroup2 hierarchy, set by mounting or
//! remounting, and honoured only from the initial cgroup namespace.

use std::io;
use std::path::{Path, PathBuf};

/// The mount option, as mountinfo shows it and as the kernel parses it.
pub const FAVORDYNMODS: &str = "favordynmods";

/// One cgroup2 mount from mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup2Mount {
    /// Where it is mounted.
    pub dir: PathBuf,
    /// The superblock options (`rw,nsdelegate,memory_recursiveprot`), one per entry.
    pub options: Vec<String>,
}

impl Cgroup2Mount {
    pub fn favordynmods(&self) -> bool {
        self.options.iter().any(|o| o == FAVORDYNMODS)
    }
}

/// The cgroup2 mount that holds `path`: the one with the longest mount point above it.
pub fn cgroup2_mount_of(mountinfo: &str, path: &Path) -> Option<Cgroup2Mount> {
    mountinfo
        .lines()
        .filter_map(|line| {
            // The mount point, unescaped, from the one parser of cgroup2 lines.
            let dir = crate::cgroupfs::cgroup2_mounts(line).pop()?.dir;
            // After " - ": fstype, source, superblock options.
            let (_, right) = line.split_once(" - ")?;
            let options = right.split_whitespace().nth(2)?;
            Some(Cgroup2Mount {
                dir,
                options: options.split(',').map(str::to_string).collect(),
            })
        })
        .filter(|m| path.starts_with(&m.dir))
        .max_by_key(|m| m.dir.components().count())
}

/// Whether the running kernel knows the option: `/sys/kernel/cgroup/features` lists it.
pub fn favordynmods_supported(sysfs_root: &Path) -> bool {
    std::fs::read_to_string(sysfs_root.join("kernel/cgroup/features"))
        .is_ok_and(|f| f.lines().any(|l| l.trim() == FAVORDYNMODS))
}

/// Reconfigures the superblock of `mount` with `favordynmods` added.
///
/// A cgroup2 reconfiguration sets every hierarchy flag from the options it is given, so the
/// current ones (`nsdelegate`, `memory_recursiveprot`, ...) are passed again; `rw`/`ro` are
/// generic superblock flags that `fspick` carries over unless told otherwise. `fspick` (not
/// `mount(MS_REMOUNT)`) leaves the mount's own flags (`nosuid`, `nodev`, ...) alone.
pub fn remount_favordynmods(mount: &Cgroup2Mount) -> io::Result<()> {
    use rustix::mount::{FsPickFlags, fsconfig_reconfigure, fsconfig_set_flag, fspick};
    let fs = fspick(
        rustix::fs::CWD,
        &mount.dir,
        FsPickFlags::FSPICK_CLOEXEC | FsPickFlags::FSPICK_NO_AUTOMOUNT,
    )?;
    let keep = mount
        .options
        .iter()
        .filter(|o| !matches!(o.as_str(), "rw" | "ro" | FAVORDYNMODS));
    for option in keep.map(String::as_str).chain([FAVORDYNMODS]) {
        fsconfig_set_flag(&fs, option)
            .map_err(|e| io::Error::new(e.kind(), format!("option {option}: {e}")))?;
    }
    fsconfig_reconfigure(&fs).map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
24 1 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - tmpfs tmpfs ro,mode=755
36 35 0:31 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
37 24 0:32 / /sys/fs/cgroup/my\\040dir rw,relatime - cgroup2 none rw,favordynmods
";

    #[test]
    fn the_mount_holding_a_path_and_its_options() {
        let m = cgroup2_mount_of(MOUNTINFO, Path::new("/sys/fs/cgroup/unified/cgqos")).unwrap();
        assert_eq!(m.dir, Path::new("/sys/fs/cgroup/unified"));
        assert_eq!(m.options, ["rw", "nsdelegate", "memory_recursiveprot"]);
        assert!(!m.favordynmods());
        let m = cgroup2_mount_of(MOUNTINFO, Path::new("/sys/fs/cgroup/my dir/x")).unwrap();
        assert!(m.favordynmods());
        // The tmpfs above the cgroup2 mounts is not a cgroup2 mount.
        assert_eq!(
            cgroup2_mount_of(MOUNTINFO, Path::new("/sys/fs/cgroup/x")),
            None
        );
        assert_eq!(cgroup2_mount_of(MOUNTINFO, Path::new("/tmp/fake")), None);
    }

    #[test]
    fn support_is_read_from_the_features_file() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!favordynmods_supported(dir.path()));
        std::fs::create_dir_all(dir.path().join("kernel/cgroup")).unwrap();
        std::fs::write(
            dir.path().join("kernel/cgroup/features"),
            "nsdelegate\nfavordynmods\nmemory_localevents\n",
        )
        .unwrap();
        assert!(favordynmods_supported(dir.path()));
    }
}
