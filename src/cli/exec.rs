//! `cgqos exec`: start a command inside a group, with a thread class's task attributes.
//!
//! Directly (root, no daemon): `clone3(CLONE_INTO_CGROUP)` puts the child in the group at
//! birth (no migration). The child waits on a socket pair while the parent records it for
//! undo and applies the class, then execs; the parent forwards signals, waits, and exits
//! with the command's status. Where the kernel lacks clone3 or `CLONE_INTO_CGROUP`, and
//! through the daemon, cgqos moves itself (as `move` and `move --thread` would) and execs
//! in place, leaving no parent behind.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use clap::Args;
use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::process::{Pid, Signal, WaitOptions};

mod program;

use program::{Program, exec_failed, exec_in_place, exit_with, find_program, shell_status};

use super::Ctx;
use crate::cgroupfs::{CgroupFs, FsError};
use crate::daemon::client::Client;
use crate::daemon::protocol::{Request, TaskRef};
use crate::error::{CliError, CliResult, Exit};
use crate::layout::{self, Target};
use crate::ops::{self, Added, Dest, Moved, Session, ThreadDest};
use crate::place::PlaceError;
use crate::procfs::{ProcessId, TaskKey, ThreadId};
use crate::rules::ClassDef;
use crate::state::Record;
use crate::sys::{self, ExecImage, SignalSet, Spawn};

#[derive(Args, Debug)]
#[command(
    override_usage = "cgqos exec [OPTIONS] GROUP [--class CLASS] -- CMD [ARGS]...",
    after_help = "Examples:
  cgqos exec background -- make -j8              # the build runs in chrome/background
  cgqos exec foreground --class urgent -- ./game # in foreground/urgent, with urgent's nice
  cgqos exec vm:build -- qemu-system-x86_64 ...  # creates vms/build as `vm add` would

The command is in GROUP from its first instruction. Run directly (root, no daemon), cgqos
starts it with clone3(CLONE_INTO_CGROUP), stays as its parent, passes on SIGINT, SIGTERM,
SIGHUP and SIGQUIT (not those a terminal already sent to both, like ^C), and exits with the
command's status (128+N if a signal N killed it). Through the daemon (any non-root caller),
or on kernels before 5.7, cgqos moves itself and then becomes the command, like cgexec.
Either way `reset` and `teardown` move it back like any moved process.

Exit status: the command's; 127 if CMD is not found, 126 if it cannot be run; cgqos's own
codes (2 bad group or class, 4 kernel refused, 6 denied by the daemon's policy, ...) when
the command was not started."
)]
pub struct ExecArgs {
    /// Thread class the command starts with (urgent, non-urgent, balanced, ... or a class of
    /// rules.d): its task attributes (nice, policy, uclamp), and in a browser group its
    /// urgent/non-urgent subgroup
    #[arg(long, value_name = "CLASS")]
    pub class: Option<String>,
    /// Group (ui, foreground, background, arcvm, vm:<name>, chrome/..., vms/...); a VM's
    /// groups are created first if missing, as `vm add` does
    #[arg(value_name = "GROUP")]
    pub group: String,
    /// The command and its arguments, after `--`
    #[arg(
        last = true,
        required = true,
        num_args = 1..,
        value_name = "CMD",
        value_parser = clap::value_parser!(OsString)
    )]
    pub command: Vec<OsString>,
}

/// Signals the parent passes on to the command.
const FORWARDED: [libc::c_int; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

pub fn run(ctx: &Ctx, args: ExecArgs) -> CliResult<()> {
    // First: a missing command costs nothing, not even a group.
    let program = match find_program(&args.command) {
        Ok(p) => p,
        Err((code, message)) => exit_with(code, &message),
    };
    let target = Target::parse(&args.group).map_err(CliError::bad_input)?;
    if let (
        Some(class),
        Target::Vm {
            part: Some(part), ..
        },
    ) = (&args.class, &target)
    {
        return Err(CliError::bad_input(format!(
            "{} is a VM part, itself a thread class ({part}): --class {class} goes with a browser group or a whole VM (vm:<name>)",
            args.group
        )));
    }
    match ctx.daemon()? {
        Some(d) => through_daemon(ctx, d, &args, &target, program),
        None => directly(ctx, &args, &target, program),
    }
}

/// Who asked, for `why`.
fn requested_by() -> String {
    format!("cgqos exec (uid {})", rustix::process::getuid().as_raw())
}

/// The class `name` names in rules.d (or the shipped classes).
fn class_def(ctx: &Ctx, name: &str, by: &str) -> CliResult<ClassDef> {
    let rules = ctx.rules()?;
    match ops::thread_dest(name, &rules.classes, by.to_string()).map_err(CliError::bad_input)? {
        Dest::Thread(ThreadDest::Class { class, .. }) => Ok(class),
        _ => Err(CliError::bad_input(format!(
            "{name} is a VM part, not a thread class: give it as the group (vm:<name>/{name})"
        ))),
    }
}

/// The group the command starts in: `target`, or its subgroup for the class's urgent /
/// non-urgent cgroup class (which must exist there, as for `move --thread`).
fn start_group(target: &Target, class: Option<&ClassDef>) -> CliResult<String> {
    let group = target.path();
    let Some((class, sub)) = class.and_then(|c| Some((c, c.cgroup_class.layout_class()?))) else {
        return Ok(group);
    };
    let allowed = layout::classes_of(&group);
    if !allowed.contains(&sub) {
        return Err(PlaceError::WrongClass {
            class: if sub == class.name {
                sub.to_string()
            } else {
                format!("{sub} (of class {})", class.name)
            },
            group,
            allowed: allowed
                .iter()
                .copied()
                .chain(["default"])
                .collect::<Vec<_>>()
                .join(", "),
        }
        .into());
    }
    Ok(format!("{group}/{sub}"))
}

/// The direct path: the group (and a VM's groups) must exist or be made; then clone3, or
/// the fallback where the kernel lacks it.
fn directly(ctx: &Ctx, args: &ExecArgs, target: &Target, program: Program) -> CliResult<()> {
    let by = requested_by();
    let class = match &args.class {
        Some(c) => Some(class_def(ctx, c, &by)?),
        None => None,
    };
    let start_in = start_group(target, class.as_ref())?;
    let mut s = ctx.session()?;
    if let Target::Vm { name, .. } = target {
        if !s.cg.exists(&layout::vm_path(name)) {
            let (_topo, board, plan) = ctx.plan()?;
            ops::vm_add(&mut s, &board, &plan, &ctx.g.sysfs_root, name)?;
            s.save()?;
        }
    }
    if !s.cg.exists(&start_in) {
        return Err(PlaceError::NotSetUp(start_in).into());
    }
    if !clone3_disabled() {
        match clone_into(s, &start_in, &program, class.as_ref(), &by)? {
            Cloned::Exited(code) => std::process::exit(code),
            Cloned::Unsupported(again) => s = *again,
        }
    }
    place_self(&mut s, target, class, &by)?;
    s.save()?;
    // The state file's lock goes with the session, before the command takes over.
    drop(s);
    exec_in_place(&program)
}

/// Test hook, debug builds only: `CGQOS_TEST_NO_CLONE3=1` takes the path of kernels
/// without clone3.
fn clone3_disabled() -> bool {
    cfg!(debug_assertions) && std::env::var_os("CGQOS_TEST_NO_CLONE3").is_some_and(|v| v == "1")
}

/// Moves this process to `target` and its (only) thread to the class, recorded as `move`
/// and `move --thread` record.
fn place_self(
    s: &mut Session,
    target: &Target,
    class: Option<ClassDef>,
    by: &str,
) -> CliResult<()> {
    let me = [TaskRef {
        id: std::process::id(),
        starttime: None,
    }];
    let moved = ops::move_tasks(s, &Dest::Group(target.clone()), &me);
    refused(&moved, &target.path())?;
    crate::classify::record_moves(&mut s.state, &s.proc, &moved, by, true);
    if let Some(class) = class {
        let name = class.name.clone();
        let dest = Dest::Thread(ThreadDest::Class {
            class,
            by: by.to_string(),
        });
        refused(&ops::move_tasks(s, &dest, &me), &name)?;
    }
    Ok(())
}

/// The error of a move of ourselves that failed, with the move's exit code.
fn refused(moved: &[Moved], to: &str) -> CliResult<()> {
    match ops::moves_exit(moved) {
        Exit::Ok => Ok(()),
        exit => Err(CliError::new(
            exit,
            format!(
                "the command was not started: cannot place it in {to}: {}",
                moved
                    .iter()
                    .find_map(|m| m.error.as_deref())
                    .unwrap_or("refused")
            ),
        )),
    }
}

/// Through the daemon: it moves this process (its policy decides), then this process
/// becomes the command.
fn through_daemon(
    ctx: &Ctx,
    mut d: Client,
    args: &ExecArgs,
    target: &Target,
    program: Program,
) -> CliResult<()> {
    // The class's fit, checked here when this side can read the classes (the daemon
    // checks again), so a misfit changes nothing.
    if let Some(class) = args
        .class
        .as_deref()
        .and_then(|c| class_def(ctx, c, "").ok())
    {
        start_group(target, Some(&class))?;
    }
    if let Target::Vm { name, .. } = target {
        // Only when missing: `vm_add` is a change of groups the policy may refuse a caller
        // who may still place work in an existing VM.
        let exists = ctx
            .cgroupfs()
            .is_ok_and(|cg| cg.exists(&layout::vm_path(name)));
        if !exists {
            let _: Added = d.call(&Request::VmAdd { name: name.clone() })?;
        }
    }
    let me = vec![TaskRef {
        id: std::process::id(),
        starttime: None,
    }];
    let moved: Vec<Moved> = d.call(&Request::Move {
        group: args.group.clone(),
        targets: me.clone(),
    })?;
    refused(&moved, &args.group)?;
    if let Some(class) = &args.class {
        let moved: Vec<Moved> = d.call(&Request::MoveThreads {
            class: class.clone(),
            targets: me,
        })?;
        refused(&moved, class)?;
    }
    drop(d);
    exec_in_place(&program)
}

/// How a clone3 start ended.
enum Cloned {
    /// The command ran; its shell status.
    Exited(i32),
    /// The kernel has no clone3 or `CLONE_INTO_CGROUP`: the session, for the fallback.
    Unsupported(Box<Session>),
}

/// Starts the command in `start_in` with clone3, records it, lets it exec, and waits.
fn clone_into(
    mut s: Session,
    start_in: &str,
    program: &Program,
    class: Option<&ClassDef>,
    by: &str,
) -> CliResult<Cloned> {
    let image = image_of(program)?;
    let me = ProcessId::new(std::process::id());
    // Where fork would have put it: its origin, for undo.
    let origin = s.map.dir_of(&s.proc.cgroup(me, me.main_thread())?);
    let dir = open_group(&s.cg, start_in)?;
    let (mut parent_end, child_end) =
        UnixStream::pair().map_err(|e| CliError::new(Exit::Failure, format!("socketpair: {e}")))?;
    let mut waited = FORWARDED.to_vec();
    waited.push(libc::SIGCHLD);
    let waited = SignalSet::of(&waited);
    // A SIGCHLD ignored by whoever started us would make the kernel reap the child
    // unannounced: a handler (reset by the exec) instead. Then all are blocked before the
    // clone, so none is lost before the wait; the child unblocks them.
    sys::catch_signal(libc::SIGCHLD)
        .map_err(|e| CliError::new(Exit::Failure, format!("catching SIGCHLD: {e}")))?;
    let mask = sys::block_signals(&waited)
        .map_err(|e| CliError::new(Exit::Failure, format!("blocking signals: {e}")))?;
    let spawned = sys::spawn_into_cgroup(&Spawn {
        cgroup: dir.as_fd(),
        image: &image,
        mask: &mask,
        child_end: child_end.as_fd(),
        parent_end: parent_end.as_fd(),
    });
    drop((child_end, dir));
    let pid = match spawned {
        Ok(pid) => pid,
        Err(e) => {
            let _ = sys::restore_signals(&mask);
            return not_cloned(s, start_in, e);
        }
    };
    // Saved before the command runs: whoever sees it can ask `why` at once.
    let before = s.state.clone();
    if let Err(e) = record_child(&mut s, pid, origin, class, by).and_then(|()| s.save()) {
        // Never told to go, the child exits 127 without running anything.
        drop(parent_end);
        reap(pid);
        s.state = before;
        let _ = s.save();
        return Err(e);
    }
    if let Some(e) = release(&mut parent_end) {
        reap(pid);
        // It never ran: nothing of it stays recorded.
        s.state = before;
        let _ = s.save();
        exec_failed(program, &e);
    }
    drop(parent_end);
    tracing::info!(pid, group = start_in, "started {}", program.path.display());
    // The state file's lock goes with the session: the command may run for days.
    drop(s);
    wait_forwarding(pid, &waited).map(Cloned::Exited)
}

/// The command as `execve` takes it, with our environment.
fn image_of(program: &Program) -> CliResult<ExecImage> {
    let env: Vec<OsString> = std::env::vars_os()
        .map(|(k, v)| {
            let mut kv = k;
            kv.push("=");
            kv.push(v);
            kv
        })
        .collect();
    ExecImage::new(&program.path, &program.argv, &env)
        .map_err(|e| CliError::bad_input(format!("the command line: {e}")))
}

/// A failed clone3: the kernel lacks it (take the fallback), or refused the group.
fn not_cloned(s: Session, start_in: &str, e: std::io::Error) -> CliResult<Cloned> {
    match e.raw_os_error() {
        Some(libc::ENOSYS | libc::E2BIG | libc::EINVAL) => {
            tracing::debug!("clone3(CLONE_INTO_CGROUP): {e}; moving this process instead");
            Ok(Cloned::Unsupported(Box::new(s)))
        }
        _ => Err(FsError {
            op: "clone3 into",
            path: s.cg.path(start_in),
            value: None,
            source: e,
        }
        .into()),
    }
}

/// Opens a group's directory for clone3: beneath the cgqos root, no symlink on the way.
fn open_group(cg: &CgroupFs, rel: &str) -> CliResult<OwnedFd> {
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW;
    let fail = |source: rustix::io::Errno| -> CliError {
        FsError {
            op: "open",
            path: cg.path(rel),
            value: None,
            source: source.into(),
        }
        .into()
    };
    let root = rustix::fs::open(cg.root(), flags, Mode::empty()).map_err(fail)?;
    let beneath = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS;
    match rustix::fs::openat2(&root, rel, flags, Mode::empty(), beneath) {
        // Before Linux 5.6: the path as cgroupfs joins it (plain names only).
        Err(rustix::io::Errno::NOSYS) => {
            rustix::fs::open(cg.path(rel), flags, Mode::empty()).map_err(fail)
        }
        r => r.map_err(fail),
    }
}

/// Records the new child as a `move` would record a process it moved (its origin: our
/// own group), and applies the class to it (attributes and their originals, `why`).
fn record_child(
    s: &mut Session,
    pid: u32,
    origin: PathBuf,
    class: Option<&ClassDef>,
    by: &str,
) -> CliResult<()> {
    let stat = s.proc.stat(pid)?;
    let pid = ProcessId::new(pid);
    let key = TaskKey::new(pid, ThreadId::new(pid.get()), stat.start());
    s.state.remember(
        pid.main_thread(),
        Record {
            pid,
            starttime: key.start(),
            original: origin,
            process: true,
        },
    );
    let threads = s.placer().locate(pid)?;
    let moved = Moved {
        id: pid.get(),
        ok: true,
        error: None,
        code: None,
        threads,
        key: Some(key),
    };
    crate::classify::record_moves(&mut s.state, &s.proc, &[moved], by, true);
    if let Some(class) = class {
        crate::classify::apply_class(s, key, class, by)?;
    }
    Ok(())
}

/// Tells the child to exec; `Some(errno)` if its `execve` failed (it has exited then).
fn release(parent_end: &mut UnixStream) -> Option<std::io::Error> {
    if let Err(e) = parent_end.write_all(b"g") {
        return Some(e);
    }
    // EOF: the exec closed the child's end. Four bytes: execve's errno.
    let mut errno = [0u8; 4];
    match parent_end.read(&mut errno) {
        Ok(4) => Some(std::io::Error::from_raw_os_error(i32::from_ne_bytes(errno))),
        Ok(_) => None,
        Err(e) => Some(e),
    }
}

/// Waits for a child that is exiting.
fn reap(pid: u32) {
    if let Some(p) = Pid::from_raw(pid as i32) {
        let _ = rustix::process::waitpid(Some(p), WaitOptions::empty());
    }
}

/// Passes signals on to the command until it exits; its status as a shell reports it.
fn wait_forwarding(pid: u32, waited: &SignalSet) -> CliResult<i32> {
    let child = Pid::from_raw(pid as i32).ok_or_else(|| CliError::new(Exit::Failure, "pid 0"))?;
    let fail = |e: std::io::Error| CliError::new(Exit::Failure, format!("waiting for {pid}: {e}"));
    loop {
        let (sig, from_terminal) = sys::wait_signal(waited).map_err(fail)?;
        if sig == libc::SIGCHLD {
            let status = rustix::process::waitpid(Some(child), WaitOptions::NOHANG)
                .map_err(|e| fail(e.into()))?;
            if let Some((_, status)) = status {
                return Ok(shell_status(
                    status.exit_status(),
                    status.terminating_signal(),
                ));
            }
        } else if !from_terminal {
            // The terminal sent its ^C / ^\ to the command too (same process group).
            if let Some(signal) = forwarded(sig) {
                let _ = rustix::process::kill_process(child, signal);
            }
        }
    }
}

fn forwarded(sig: libc::c_int) -> Option<Signal> {
    match sig {
        libc::SIGINT => Some(Signal::INT),
        libc::SIGTERM => Some(Signal::TERM),
        libc::SIGHUP => Some(Signal::HUP),
        libc::SIGQUIT => Some(Signal::QUIT),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_class_starts_in_its_subgroup_where_the_group_has_one() {
        let classes = crate::rules::Classes::default();
        let get = |n: &str| classes.get(n).unwrap().clone();
        let fg = Target::parse("foreground").unwrap();
        assert_eq!(start_group(&fg, None).unwrap(), "chrome/foreground");
        assert_eq!(
            start_group(&fg, Some(&get("urgent"))).unwrap(),
            "chrome/foreground/urgent"
        );
        let vm = Target::parse("vm:x").unwrap();
        let e = start_group(&vm, Some(&get("urgent"))).unwrap_err();
        assert!(
            e.message.contains("does not exist in vms/x"),
            "{}",
            e.message
        );
    }
}
