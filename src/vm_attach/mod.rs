//! Attaching a running VM monitor to its VM's groups: the process into `vms/<name>` (the
//! VM's thread root), each vCPU thread into `vms/<name>/vcpu` and every other thread into
//! `vms/<name>/io`, told apart by thread name. The command line runs it once; the daemon also
//! places threads created or renamed later (`daemon/engine/vms.rs`).
//!
//! A VM type ([`VmTypes`]: two ship, `vm-types.yaml` in the configuration directory changes
//! or adds them) is the monitor's program names (to detect the type from `/proc/<pid>/exe`,
//! else its comm) and the names of its vCPU threads. A caller may replace the vCPU patterns
//! for one attach (`--vcpu-threads`).

mod types;

use serde::{Deserialize, Serialize};

pub use types::{FILE as TYPES_FILE, MAX_PATTERNS, VmType, VmTypes};

use crate::error::{CliError, CliResult, Exit};
use crate::layout::{self, Target, validate_vm_name};
use crate::matcher::{Mode, Wildcard};
use crate::ops::{self, Session};
use crate::place::{Held, PlaceError};
use crate::procfs::{ProcessId, Procfs, ThreadId};

/// How one attached VM's threads are told apart.
#[derive(Debug, Clone)]
pub struct ThreadNames {
    /// The VM type (`custom` for patterns given without a type).
    pub vm_type: String,
    pub patterns: Vec<String>,
    compiled: Vec<Wildcard>,
}

impl ThreadNames {
    /// The vCPU patterns of type `vm_type`, or the given ones (which replace the type's).
    pub fn new(types: &VmTypes, vm_type: &str, patterns: &[String]) -> Result<ThreadNames, String> {
        let patterns: Vec<String> = match (types.get(vm_type), patterns.is_empty()) {
            (_, false) => patterns.to_vec(),
            (Some(t), true) => t.vcpu_threads.clone(),
            (None, true) => return Err(unknown_type(types, vm_type)),
        };
        if patterns.len() > MAX_PATTERNS {
            return Err(format!(
                "{} vCPU thread patterns; at most {MAX_PATTERNS}",
                patterns.len()
            ));
        }
        let compiled = patterns
            .iter()
            .map(|p| {
                types::check_pattern(p)
                    .map_err(|why| format!("vCPU thread pattern {p:?}: expected {why}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(ThreadNames {
            vm_type: vm_type.to_string(),
            patterns,
            compiled,
        })
    }

    /// The VM part a thread of this name belongs in: `vcpu` or `io`.
    pub fn part(&self, thread_name: &str) -> &'static str {
        if self.compiled.iter().any(|w| w.matches(thread_name)) {
            layout::VCPU
        } else {
            layout::IO
        }
    }
}

fn unknown_type(types: &VmTypes, name: &str) -> String {
    format!(
        "unknown VM type {name:?}: expected one of {} (or give --vcpu-threads; types are added in {})",
        types.names().join(", "),
        TYPES_FILE
    )
}

/// The VM type of a monitor, from its program's name (`/proc/<pid>/exe`, else its comm).
pub fn detect<'t>(
    types: &'t VmTypes,
    proc: &Procfs,
    pid: ProcessId,
    comm: &str,
) -> Option<&'t VmType> {
    let exe = std::fs::read_link(proc.root().join(format!("{}/exe", pid.get()))).ok();
    let exe_name = exe.as_ref().and_then(|p| p.file_name()).map(|n| {
        n.to_string_lossy()
            .trim_end_matches(" (deleted)")
            .to_string()
    });
    let is = |name: &str| {
        types.0.iter().find(|t| {
            t.monitors
                .iter()
                .any(|m| Wildcard::new(m, Mode::Name).matches(name))
        })
    };
    exe_name.as_deref().and_then(is).or_else(|| is(comm))
}

/// The thread names of the VM whose monitor is `held`: the asked type, else the detected one.
pub fn thread_names(
    types: &VmTypes,
    proc: &Procfs,
    held: &Held,
    asked: Option<&str>,
    vcpu_threads: &[String],
) -> CliResult<ThreadNames> {
    let vm_type = match asked {
        Some(t) => t.to_string(),
        None => match detect(types, proc, held.key().pid(), &held.stat.comm) {
            Some(t) => t.name.clone(),
            None if !vcpu_threads.is_empty() => "custom".to_string(),
            None => {
                return Err(CliError::bad_input(format!(
                    "cannot tell the VM type of process {} ({}): name it ({}) with --type (`type` in a request)",
                    held.id(),
                    held.stat.comm,
                    types.names().join(", ")
                )));
            }
        },
    };
    ThreadNames::new(types, &vm_type, vcpu_threads).map_err(CliError::bad_input)
}

/// One thread of an attached VM.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmThread {
    pub tid: u32,
    pub name: String,
    /// `vcpu` or `io`.
    pub part: String,
    /// Why it is not there (it stays in the VM's group), if it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What `vm attach` did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Attached {
    pub name: String,
    pub pid: u32,
    pub vm_type: String,
    pub vcpu_threads: Vec<String>,
    /// The VM's group (a directory).
    pub group: String,
    /// Whether the attach created the VM's groups (`vm add`).
    pub created: bool,
    pub dry_run: bool,
    pub threads: Vec<VmThread>,
    /// Threads that exited while they were being placed.
    pub exited: usize,
}

impl Attached {
    /// The exit status: a thread the kernel refused is a failure of the attach.
    pub fn exit(&self) -> Exit {
        if self.threads.iter().any(|t| t.error.is_some()) {
            Exit::KernelRefused
        } else {
            Exit::Ok
        }
    }

    fn new(name: &str, group: String, process: &Held, names: &ThreadNames, dry_run: bool) -> Self {
        Attached {
            name: name.to_string(),
            pid: process.id(),
            vm_type: names.vm_type.clone(),
            vcpu_threads: names.patterns.clone(),
            group,
            created: false,
            dry_run,
            threads: Vec::new(),
            exited: 0,
        }
    }
}

/// The VM's groups, created as `vm add` would if missing. Whether they were created.
pub type EnsureGroups<'a> = &'a mut dyn FnMut(&mut Session) -> CliResult<bool>;

/// What an attach would do: each thread's part by its name; nothing is written.
pub fn preview(
    proc: &Procfs,
    group_dir: &std::path::Path,
    name: &str,
    process: &Held,
    names: &ThreadNames,
) -> CliResult<Attached> {
    validate_vm_name(name).map_err(CliError::bad_input)?;
    let group = group_dir.join(layout::vm_path(name)).display().to_string();
    let mut out = Attached::new(name, group, process, names, true);
    let pid = process.key().pid();
    for tid in proc.threads(pid).map_err(PlaceError::from)? {
        match proc.task_stat(pid.get(), tid.get()) {
            Ok(st) => out.threads.push(VmThread {
                tid: tid.get(),
                part: names.part(&st.comm).to_string(),
                name: st.comm,
                error: None,
            }),
            Err(_) => out.exited += 1,
        }
    }
    if !process.still_there(proc) {
        return Err(PlaceError::Gone(process.id()).into());
    }
    Ok(out)
}

/// Attaches the held monitor process to VM `name`: its groups made if missing (`ensure`),
/// the process moved into the VM's group, each thread into its part by name.
pub fn attach(
    s: &mut Session,
    ensure: EnsureGroups<'_>,
    name: &str,
    process: &Held,
    names: &ThreadNames,
) -> CliResult<Attached> {
    validate_vm_name(name).map_err(CliError::bad_input)?;
    let group = layout::vm_path(name);
    let mut out = Attached::new(
        name,
        s.cg.path(&group).display().to_string(),
        process,
        names,
        false,
    );
    out.created = ensure(s)?;
    let target = Target::Vm {
        name: name.to_string(),
        part: None,
    };
    let mut state = std::mem::take(&mut s.state);
    let moved = s.placer().move_held_process(process, &target, &mut state);
    s.state = state;
    moved?;
    for tid in s
        .proc
        .threads(process.key().pid())
        .map_err(PlaceError::from)?
    {
        match place_thread(s, process.key().pid(), tid, names) {
            Ok(t) => out.threads.push(t),
            Err(PlaceError::Gone(_)) => out.exited += 1,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

/// Places one thread of process `pid` by its name. A refusal by the kernel is reported in
/// the thread's `error` (it stays where it is); a thread that is gone (or, its id reused,
/// another process's now) is `Gone`.
pub fn place_thread(
    s: &mut Session,
    pid: ProcessId,
    tid: ThreadId,
    names: &ThreadNames,
) -> Result<VmThread, PlaceError> {
    let held = Held::thread(&s.proc, tid, None)?;
    if held.key().pid() != pid {
        return Err(PlaceError::Gone(tid.get()));
    }
    let part = names.part(&held.stat.comm);
    let mut state = std::mem::take(&mut s.state);
    let placed = s.placer().move_held_thread(&held, Some(part), &mut state);
    s.state = state;
    let error = match placed {
        Ok(_) => None,
        Err(PlaceError::Gone(id)) => return Err(PlaceError::Gone(id)),
        Err(e) => Some(e.to_string()),
    };
    Ok(VmThread {
        tid: tid.get(),
        name: held.stat.comm.clone(),
        part: part.to_string(),
        error,
    })
}

/// The VM's groups as `vm add` makes them, if `vms/<name>` is missing.
pub fn ensure_groups(
    s: &mut Session,
    board: &crate::board::Board,
    plan: &crate::plan::Plan,
    sysfs: &std::path::Path,
    name: &str,
) -> CliResult<bool> {
    if s.cg.exists(&layout::vm_path(name)) {
        return Ok(false);
    }
    ops::vm_add(s, board, plan, sysfs, name)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(t: &str, patterns: &[&str]) -> Result<ThreadNames, String> {
        let p: Vec<String> = patterns.iter().map(|s| s.to_string()).collect();
        ThreadNames::new(&VmTypes::default(), t, &p)
    }

    #[test]
    fn qemu_and_crosvm_threads_go_to_their_parts() {
        let qemu = names("qemu", &[]).unwrap();
        for (name, part) in [
            ("CPU 0/TCG", "vcpu"),
            ("CPU 11/KVM", "vcpu"),
            ("CPU 1/HVF", "vcpu"),
            ("qemu-system-x86", "io"),
            ("call_rcu", "io"),
            ("IO mon_iothread", "io"),
            ("worker", "io"),
            ("CPU 0/KVMx", "io"),
        ] {
            assert_eq!(qemu.part(name), part, "{name}");
        }
        let crosvm = names("crosvm", &[]).unwrap();
        assert_eq!(crosvm.part("crosvm_vcpu0"), "vcpu");
        assert_eq!(crosvm.part("crosvm_vcpu12"), "vcpu");
        assert_eq!(crosvm.part("crosvm"), "io");
        assert_eq!(crosvm.part("v_balloon"), "io");
        // Patterns given replace the type's.
        let custom = names("qemu", &["vcpu-*"]).unwrap();
        assert_eq!(custom.part("vcpu-3"), "vcpu");
        assert_eq!(custom.part("CPU 0/TCG"), "io");
    }

    #[test]
    fn bad_types_and_patterns_are_refused_clearly() {
        assert_eq!(
            names("vbox", &[]).unwrap_err(),
            "unknown VM type \"vbox\": expected one of qemu, crosvm (or give --vcpu-threads; types are added in vm-types.yaml)"
        );
        assert!(names("custom", &["x*"]).is_ok());
        let long = "a".repeat(crate::matcher::MAX_PATTERN + 1);
        let e = names("qemu", &[&long]).unwrap_err();
        assert!(e.contains("a pattern of at most 1024 characters"), "{e}");
        assert_eq!(
            names("qemu", &[""]).unwrap_err(),
            "vCPU thread pattern \"\": expected a non-empty pattern"
        );
        let many: Vec<String> = (0..=MAX_PATTERNS).map(|i| i.to_string()).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(names("qemu", &many).unwrap_err().contains("at most 16"));
    }

    #[test]
    fn monitors_are_detected_by_program_name() {
        let types = VmTypes::default();
        let proc = Procfs::new("/nonexistent-proc");
        let pid = ProcessId::new(1);
        let kind = |comm: &str| detect(&types, &proc, pid, comm).map(|t| t.name.clone());
        // No exe to read: the comm decides (kept to 15 bytes by the kernel).
        assert_eq!(kind("qemu-system-x86").as_deref(), Some("qemu"));
        assert_eq!(kind("crosvm").as_deref(), Some("crosvm"));
        assert_eq!(kind("bash"), None);
    }
}
