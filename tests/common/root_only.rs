//! Root-only tests that did not run, reported when the test binary exits.
//!
//! A test that cannot run (not root, no cgroup2) returns early and passes; libtest captures
//! the output of passing tests, so a "skipped" line printed by the test itself is never seen.
//! Instead each such test is recorded here, and an `atexit` handler writes one summary per
//! reason straight to the stderr file descriptor (which libtest does not capture), after the
//! binary's `test result:` line.

use std::io::Write;
use std::sync::{Mutex, Once};

/// (test name, reason), one entry per test.
static SKIPPED: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());
static REGISTER: Once = Once::new();

/// Records that the calling test does not run, and why. Call once per test (repeats by the
/// same test are counted once).
pub fn skipped(reason: &str) {
    // Still visible with --nocapture, next to the test it belongs to.
    eprintln!("skipped: {reason}");
    REGISTER.call_once(|| {
        // SAFETY: `report` is an `extern "C" fn()` that never unwinds (it only formats and
        // writes, ignoring errors) and touches only statics that outlive the process.
        unsafe { libc::atexit(report) };
    });
    // libtest names each test's thread after the test.
    let test = std::thread::current()
        .name()
        .unwrap_or("(unnamed test)")
        .to_string();
    let mut s = SKIPPED.lock().unwrap_or_else(|p| p.into_inner());
    if !s.iter().any(|(t, _)| *t == test) {
        s.push((test, reason.to_string()));
    }
}

extern "C" fn report() {
    // try_lock: a test thread that panicked while holding it must not hang the exit.
    let Ok(s) = SKIPPED.try_lock() else { return };
    let mut reasons: Vec<&str> = s.iter().map(|(_, r)| r.as_str()).collect();
    reasons.sort_unstable();
    reasons.dedup();
    let mut out = String::new();
    for reason in reasons {
        let n = s.iter().filter(|(_, r)| r == reason).count();
        out.push_str(&format!(
            "note: {n} root-only test{} did not run (they passed without checking anything): {reason}\n",
            if n == 1 { "" } else { "s" }
        ));
    }
    if !out.is_empty() {
        out.push_str("note: run `cargo test` as root on a machine with a cgroup2 mount to run them (docs/testing.md)\n");
        let _ = std::io::stderr().write_all(out.as_bytes());
    }
}
