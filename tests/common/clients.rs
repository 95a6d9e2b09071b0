//! Real client programs (dbus-daemon, Chromium, QEMU) that some integration tests run.
//!
//! `tests/clients/install.sh` installs them. A test whose program is missing is recorded as
//! skipped (see `root_only`), except when `CGQOS_REQUIRE_CLIENTS=1` (set by `.ci/run` after
//! it ran the installer): then a missing program fails the test, so CI cannot go green
//! without having run it.

use std::path::{Path, PathBuf};

/// The first of `candidates` (absolute paths, or names looked up on PATH) that exists and is
/// executable, or `None` after recording the skip (or panicking under CGQOS_REQUIRE_CLIENTS).
pub fn program(candidates: &[&str]) -> Option<PathBuf> {
    for c in candidates {
        if let Some(p) = find(c) {
            return Some(p);
        }
    }
    let what = candidates.join(" or ");
    if std::env::var_os("CGQOS_REQUIRE_CLIENTS").is_some_and(|v| v == "1") {
        panic!("{what} is not installed (CGQOS_REQUIRE_CLIENTS=1): run tests/clients/install.sh");
    }
    super::root_only::skipped(&format!(
        "{what} not installed (tests/clients/install.sh installs it)"
    ));
    None
}

fn find(name: &str) -> Option<PathBuf> {
    let executable = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if name.contains('/') {
        let p = PathBuf::from(name);
        return executable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| executable(p))
}
