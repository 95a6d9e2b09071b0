//! Reading what rules match a process by, on the event path: only the names the rules
//! look at, each with one read.

use crate::procfs::{ProcError, Procfs};
use crate::rules::{ProcessInfo, RuleSet, app};

use super::MAX_CMDLINE;

/// Reads what rules match a process by. A process that exits meanwhile is `Gone`.
pub fn process_info(proc: &Procfs, pid: u32) -> Result<ProcessInfo, ProcError> {
    // Kernel threads and zombies have no exe; that is not an error, they just match less.
    let exe = exe_of(proc, pid);
    // argv can be megabytes; rules see its first MAX_CMDLINE bytes.
    let (argv0, cmdline) = proc.cmdline(pid, MAX_CMDLINE as usize, |b| names(b, &exe))?;
    Ok(ProcessInfo {
        argv0,
        exe,
        comm: proc.comm(pid)?,
        cmdline,
        uid: proc.ruid(pid)?,
    })
}

/// The target of `/proc/<pid>/exe`, read, never followed (`rules::app` names the program
/// by it); empty when there is none.
fn exe_of(proc: &Procfs, pid: u32) -> String {
    std::fs::read_link(proc.root().join(format!("{pid}/exe")))
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// argv[0] as rules see it (a rewritten command line named by its executable) and the
/// arguments joined by spaces.
fn names(cmdline: &[u8], exe: &str) -> (String, String) {
    (app::argv0(cmdline, exe), app::joined(cmdline))
}

/// Which of a process's names the rules look at: only those are read from `/proc`.
#[derive(Debug, Clone, Copy, Default)]
struct Needs {
    cmdline: bool,
    exe: bool,
    comm: bool,
    uid: bool,
}

impl Needs {
    fn of(rules: &RuleSet) -> Needs {
        let mut n = Needs::default();
        for m in rules.rules.iter().map(|r| &r.matcher) {
            n.cmdline |= m.argv0.is_some() || m.cmdline.is_some();
            n.exe |= m.exe.is_some();
            n.comm |= m.comm.is_some();
            n.uid |= m.uid.is_some();
        }
        n
    }
}

/// `process_info`, reading only what `rules` match by (one read each); the rest stays
/// empty, which no rule looks at. The event path's reads.
pub(super) fn process_info_for(
    proc: &Procfs,
    pid: u32,
    rules: &RuleSet,
) -> Result<ProcessInfo, ProcError> {
    let needs = Needs::of(rules);
    let mut info = ProcessInfo {
        argv0: String::new(),
        exe: String::new(),
        comm: String::new(),
        cmdline: String::new(),
        uid: 0,
    };
    if needs.exe {
        info.exe = exe_of(proc, pid);
    }
    if needs.cmdline {
        // argv[0] needs the executable only for a command line rewritten into one string,
        // or cleared (`app::argv0`): read it then, not for every process.
        let exe = &mut info.exe;
        let known = needs.exe;
        (info.argv0, info.cmdline) = proc.cmdline(pid, MAX_CMDLINE as usize, |b| {
            if !known && app::argv0_needs_exe(b) {
                *exe = exe_of(proc, pid);
            }
            names(b, exe)
        })?;
    }
    if needs.comm {
        info.comm = proc.comm(pid)?;
    }
    if needs.uid {
        info.uid = proc.ruid(pid)?;
    }
    Ok(info)
}
