//! How an app is named: what rules see of a process's command line (`argv0`, `cmdline`).
//! Pure: the caller reads `/proc/<pid>/cmdline` (capped) and the target of `/proc/<pid>/exe`.
//!
//! A program that rewrites its own command line (Chrome's zygote and its children,
//! `setproctitle`) often writes one string with spaces and a single NUL at the end:
//! `/usr/lib/chromium/chromium-headless-shell --type=renderer …`. Its "argv[0]" is then the
//! whole string, whose basename names nothing. So when the command line is one such string
//! and its first word is the process's executable (same basename, or the same absolute path),
//! that first word is argv[0]. An empty command line (cleared by the process) falls back to
//! the executable. Every step is one pass over the bytes: linear in the (capped) input.

use super::ProcessInfo;

/// The suffix the kernel appends to `/proc/<pid>/exe` when the file was replaced or removed
/// (a package upgrade while the program runs).
const DELETED: &str = " (deleted)";

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The executable's path without the kernel's ` (deleted)` mark.
fn exe_path(exe: &str) -> &str {
    exe.strip_suffix(DELETED).unwrap_or(exe)
}

/// The NUL-separated arguments of a command line, empty ones skipped.
fn args(cmdline: &[u8]) -> impl Iterator<Item = &[u8]> {
    cmdline.split(|&b| b == 0).filter(|a| !a.is_empty())
}

/// Whether [`argv0`] of this command line depends on the executable: a cleared one, or one
/// string with a space (rewritten). Any other is named by its own first argument.
pub fn argv0_needs_exe(cmdline: &[u8]) -> bool {
    let mut all = args(cmdline);
    match all.next() {
        None => true,
        Some(first) => all.next().is_none() && first.contains(&b' '),
    }
}

/// argv[0] as rules see it (see the module's comment); `exe` is the target of
/// `/proc/<pid>/exe`, empty when it could not be read.
pub fn argv0(cmdline: &[u8], exe: &str) -> String {
    let mut all = args(cmdline);
    let Some(first) = all.next() else {
        // A cleared command line: the executable still names the program.
        return exe_path(exe).to_string();
    };
    let first = String::from_utf8_lossy(first);
    let rewritten = all.next().is_none() && first.contains(' ');
    if rewritten && !exe.is_empty() {
        let word = first.split(' ').next().unwrap_or_default();
        let exe = exe_path(exe);
        let same = word == exe || (!word.is_empty() && basename(word) == basename(exe));
        if same && !basename(word).is_empty() {
            return word.to_string();
        }
    }
    first.into_owned()
}

/// The whole command line as `cmdline` rules see it: the arguments joined by single spaces.
pub fn joined(cmdline: &[u8]) -> String {
    let mut out = String::with_capacity(cmdline.len());
    for (i, a) in args(cmdline).enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(&String::from_utf8_lossy(a));
    }
    out
}

impl ProcessInfo {
    /// What the matcher sees of a process, from its raw (capped) command line, the target
    /// of its `exe` link (empty if unreadable), its main thread's name and its real uid.
    pub fn from_proc(cmdline: &[u8], exe: String, comm: String, uid: u32) -> ProcessInfo {
        ProcessInfo {
            argv0: argv0(cmdline, &exe),
            cmdline: joined(cmdline),
            exe,
            comm,
            uid,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv0_needs_the_executable_exactly_when_it_uses_it() {
        for cmdline in [
            &b""[..],
            b"\0\0",
            b"/bin/prog\0-x\0",
            b"/usr/lib/chromium/chromium --type=renderer\0",
            b"prog with spaces\0arg\0",
            b"one\0",
        ] {
            let uses = argv0(cmdline, "/usr/lib/chromium/chromium") != argv0(cmdline, "");
            assert!(!uses || argv0_needs_exe(cmdline), "{cmdline:?}");
        }
        assert!(!argv0_needs_exe(b"/bin/prog\0-x\0"));
        assert!(argv0_needs_exe(
            b"/usr/lib/chromium/chromium --type=renderer\0"
        ));
    }

    const EXE: &str = "/usr/lib/chromium/chromium-headless-shell";

    fn base(cmdline: &[u8], exe: &str) -> String {
        ProcessInfo::from_proc(cmdline, exe.into(), String::new(), 0)
            .argv0_base()
            .to_string()
    }

    #[test]
    fn an_ordinary_command_line_is_argv0() {
        let c = b"/usr/lib/chromium/chromium-headless-shell\0--headless\0about:blank\0";
        assert_eq!(base(c, EXE), "chromium-headless-shell");
        // argv[0] wins even when it is not the executable (a shell running a script).
        assert_eq!(base(b"/bin/sh\0-e\0/usr/bin/x\0", "/usr/bin/dash"), "sh");
        // A path with spaces in a real argv[0] stays whole.
        assert_eq!(
            base(b"/opt/My App/app\0--x\0", "/opt/My App/app"),
            "app",
            "several arguments: argv[0] is not split"
        );
    }

    #[test]
    fn a_rewritten_single_string_names_the_executable_by_its_first_word() {
        // What Chrome's zygote and its children show (one string, one NUL).
        let c = b"/usr/lib/chromium/chromium-headless-shell --type=renderer --lang=en-US\0";
        assert_eq!(base(c, EXE), "chromium-headless-shell");
        // Without the trailing NUL, and with a relative first word of the same basename.
        assert_eq!(
            base(b"chromium-headless-shell --type=zygote", EXE),
            "chromium-headless-shell"
        );
        // The executable was replaced by an upgrade.
        assert_eq!(
            base(c, &format!("{EXE} (deleted)")),
            "chromium-headless-shell"
        );
        // The joined command line is the string itself, for `cmdline` rules.
        let info = ProcessInfo::from_proc(c, EXE.into(), String::new(), 0);
        assert!(info.cmdline.starts_with(EXE) && info.cmdline.contains("--type=renderer"));
    }

    #[test]
    fn a_single_string_whose_first_word_is_not_the_executable_is_kept_whole() {
        // A title such as "postgres: writer" names no executable: schedqos's argv[0].
        assert_eq!(
            base(
                b"postgres: writer process\0",
                "/usr/lib/postgresql/bin/postgres"
            ),
            "postgres: writer process"
        );
        // A first word that merely ends like the executable does not count.
        assert_eq!(
            base(b"/tmp/evil/notchromium-headless-shell x\0", EXE),
            "notchromium-headless-shell x"
        );
        // No exe (a zombie, or unreadable): nothing to compare with.
        assert_eq!(base(b"/usr/bin/a b\0", ""), "a b");
        // A leading space: the first word is empty, never "the executable".
        assert_eq!(
            base(b" chromium-headless-shell\0", EXE),
            " chromium-headless-shell"
        );
    }

    #[test]
    fn an_empty_command_line_falls_back_to_the_executable() {
        assert_eq!(base(b"", EXE), "chromium-headless-shell");
        assert_eq!(
            base(b"\0\0", &format!("{EXE} (deleted)")),
            "chromium-headless-shell"
        );
        assert_eq!(base(b"", ""), "");
    }

    #[test]
    fn hostile_command_lines_stay_linear_and_lossy() {
        // Invalid UTF-8 is replaced, not refused.
        assert_eq!(base(b"\xff\xfe x\0", ""), "\u{fffd}\u{fffd} x");
        // 128 KiB of spaces and slashes: one pass each (this would be slow if quadratic).
        let big = "/ ".repeat(64 * 1024);
        let info = ProcessInfo::from_proc(big.as_bytes(), EXE.into(), String::new(), 0);
        assert_eq!(info.argv0.len(), big.len());
    }
}
