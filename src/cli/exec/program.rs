//! The command `exec` runs: found as a shell finds it, run in place, and its status as a
//! shell reports it.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

/// A shell's statuses for a command that could not be run.
pub(super) const NOT_FOUND: i32 = 127;
pub(super) const NOT_EXECUTABLE: i32 = 126;

/// The command as found: where it is, and its arguments (argv[0] as typed).
pub(super) struct Program {
    pub(super) path: PathBuf,
    pub(super) argv: Vec<OsString>,
}

/// Ends the process with `code`, after a `cgqos:` line saying why.
pub(super) fn exit_with(code: i32, message: &str) -> ! {
    crate::cli::eprint_line(message);
    std::process::exit(code)
}

/// Finds CMD as a shell would: a name with a slash as is, else the first executable
/// regular file of that name in `PATH`. Err: the shell's status and a message.
pub(super) fn find_program(command: &[OsString]) -> Result<Program, (i32, String)> {
    let cmd = command.first().map(OsString::as_os_str).unwrap_or_default();
    let shown = cmd.to_string_lossy();
    let path = if cmd.as_bytes().contains(&b'/') {
        let p = PathBuf::from(cmd);
        match check_executable(&p) {
            Ok(true) => p,
            Ok(false) => return Err((NOT_EXECUTABLE, format!("{shown}: permission denied"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err((NOT_FOUND, format!("{shown}: no such file")));
            }
            Err(e) => return Err((NOT_EXECUTABLE, format!("{shown}: {e}"))),
        }
    } else {
        search_path(cmd)?
    };
    Ok(Program {
        path,
        argv: command.to_vec(),
    })
}

/// `PATH`'s first executable file named `cmd`; an empty entry is the current directory.
fn search_path(cmd: &OsStr) -> Result<PathBuf, (i32, String)> {
    let shown = cmd.to_string_lossy();
    if cmd.is_empty() {
        return Err((NOT_FOUND, "the command is empty".into()));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    let mut denied = None;
    for dir in std::env::split_paths(&path) {
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        let candidate = dir.join(cmd);
        match check_executable(&candidate) {
            Ok(true) => return Ok(candidate),
            Ok(false) => {
                denied.get_or_insert(candidate);
            }
            Err(_) => {}
        }
    }
    Err(match denied {
        Some(p) => (
            NOT_EXECUTABLE,
            format!("{shown}: {} is not executable", p.display()),
        ),
        None => (
            NOT_FOUND,
            format!(
                "{shown}: command not found (PATH={})",
                path.to_string_lossy()
            ),
        ),
    })
}

/// Whether `p` is a regular file we may execute; Err when it cannot be looked at.
fn check_executable(p: &Path) -> std::io::Result<bool> {
    let m = std::fs::metadata(p)?;
    Ok(m.is_file() && rustix::fs::access(p, rustix::fs::Access::EXEC_OK).is_ok())
}

/// What a failed `execve` means to a shell: 127 for a missing file (or interpreter), 126
/// for anything else.
pub(super) fn exec_failed(program: &Program, e: &std::io::Error) -> ! {
    let code = match e.kind() {
        std::io::ErrorKind::NotFound => NOT_FOUND,
        _ => NOT_EXECUTABLE,
    };
    exit_with(code, &format!("cannot run {}: {e}", program.path.display()))
}

/// Becomes the command (no parent left): std's exec resets the signal mask and SIGPIPE.
pub(super) fn exec_in_place(program: &Program) -> ! {
    let e = std::process::Command::new(&program.path)
        .arg0(&program.argv[0])
        .args(&program.argv[1..])
        .exec();
    exec_failed(program, &e)
}

/// A shell's `$?`: the exit code, or 128 + the signal that killed it.
pub(super) fn shell_status(exit_code: Option<i32>, killed_by: Option<i32>) -> i32 {
    match (exit_code, killed_by) {
        (Some(code), _) => code,
        (None, Some(sig)) => 128 + sig,
        (None, None) => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_is_found_like_a_shell_finds_it() {
        let sh = find_program(&["sh".into(), "-c".into(), "true".into()]).unwrap();
        assert!(
            sh.path.ends_with("sh") && sh.path.is_absolute(),
            "{:?}",
            sh.path
        );
        assert_eq!(sh.argv[0], "sh");
        let (code, msg) = find_program(&["cgqos-no-such-command".into()])
            .err()
            .unwrap();
        assert_eq!(code, NOT_FOUND);
        assert!(
            msg.starts_with("cgqos-no-such-command: command not found (PATH="),
            "{msg}"
        );
        let (code, _) = find_program(&["/nonexistent/x".into()]).err().unwrap();
        assert_eq!(code, NOT_FOUND);
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "#!/bin/sh\n").unwrap();
        let (code, msg) = find_program(&[plain.clone().into()]).err().unwrap();
        assert_eq!(code, NOT_EXECUTABLE);
        assert_eq!(msg, format!("{}: permission denied", plain.display()));
        let (code, _) = find_program(&["/".into()]).err().unwrap();
        assert_eq!(code, NOT_EXECUTABLE);
    }

    #[test]
    fn statuses_read_as_a_shell_reads_them() {
        assert_eq!(shell_status(Some(3), None), 3);
        assert_eq!(shell_status(None, Some(libc::SIGKILL)), 137);
    }
}
