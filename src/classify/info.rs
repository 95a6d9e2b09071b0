//! Reading what rules match a process by, on the event path: only the names the rules
//! look at, each with one read.

use crate::procfs::{ProcError, Procfs};
use crate::rules::{ProcessInfo, RuleSet};

use super::MAX_CMDLINE;

/// Reads what rules match a process by. A process that exits meanwhile is `Gone`.
pub fn process_info(proc: &Procfs, pid: u32) -> Result<ProcessInfo, ProcError> {
    let root = proc.root();
    let read = |f: &str| std::fs::read(root.join(format!("{pid}/{f}")));
    let gone = |e: std::io::Error| match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ESRCH) => ProcError::Gone(pid),
        _ => ProcError::Io {
            path: root.join(format!("{pid}")),
            source: e,
        },
    };
    // argv can be megabytes; rules see its first MAX_CMDLINE bytes.
    let cmdline = std::fs::File::open(root.join(format!("{pid}/cmdline")))
        .and_then(|f| {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut std::io::Read::take(f, MAX_CMDLINE), &mut v).map(|_| v)
        })
        .map_err(gone)?;
    let (argv0, joined) = split_cmdline(&cmdline);
    // Kernel threads and zombies have no exe; that is not an error, they just match less.
    let exe = std::fs::read_link(root.join(format!("{pid}/exe")))
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let comm = String::from_utf8_lossy(&read("comm").map_err(gone)?)
        .trim_end()
        .to_string();
    let uid = proc.ruid(pid)?;
    Ok(ProcessInfo {
        argv0,
        exe,
        comm,
        cmdline: joined,
        uid,
    })
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
    if needs.cmdline {
        (info.argv0, info.cmdline) = proc.cmdline(pid, MAX_CMDLINE as usize, split_cmdline)?;
    }
    if needs.exe {
        info.exe = std::fs::read_link(proc.root().join(format!("{pid}/exe")))
            .map(|p| p.display().to_string())
            .unwrap_or_default();
    }
    if needs.comm {
        info.comm = proc.comm(pid)?;
    }
    if needs.uid {
        info.uid = proc.ruid(pid)?;
    }
    Ok(info)
}

/// argv[0] and the arguments joined by spaces, from a NUL-separated command line.
pub(super) fn split_cmdline(cmdline: &[u8]) -> (String, String) {
    let mut args = cmdline.split(|&b| b == 0).filter(|a| !a.is_empty());
    let argv0 = args
        .next()
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .unwrap_or_default();
    let joined = cmdline
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(String::from_utf8_lossy)
        .collect::<Vec<_>>()
        .join(" ");
    (argv0, joined)
}
