//! The `cgqos` command line: global options, shared context, one module per subcommand.

mod completions;
mod daemon;
mod detect;
mod exec;
mod move_tasks;
mod plan;
mod reset;
mod restrict;
mod rules;
mod setup;
mod status;
mod teardown;
mod top;
mod validate;
mod vm;
mod where_;
mod why;

use std::cell::RefCell;
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::builder::BoolishValueParser;
use clap::{ArgAction, Args, Parser, Subcommand};
use serde::Serialize;

use crate::board::{Board, BoardSource};
use crate::cgroupfs::CgroupFs;
use crate::daemon::client::Client;
use crate::error::{CliError, CliResult, Exit};
use crate::ops::Session;
use crate::place::CgroupMap;
use crate::plan::Plan;
use crate::procfs::Procfs;
use crate::state::StateDir;
use crate::topology::Topology;

const AFTER_HELP: &str = "\
Exit status:
  0  success
  1  unexpected failure (I/O on cgqos's own files, corrupt state file)
  2  bad input or configuration (usage, board file, unknown group, kernel thread)
  3  no such process or thread (it exited, or its id was reused)
  4  the kernel refused (EBUSY, EOPNOTSUPP, EINVAL, EACCES); the message says why
  5  --strict and a setting the kernel does not support
  6  the daemon's policy denied the request
  7  the daemon is busy or went away mid-request
  8  status: the tree is not in sync with the plan, or groups are missing

A closed stdout (cgqos plan | head -1) is not an error; any other failure to write the
output is exit 1. With --json, an error is also printed on stdout as
{\"error\": {\"exit\": N, \"kind\": \"...\", \"message\": \"...\"}}.

Environment: every global option has a CGQOS_* variable (shown with each option); an empty
value counts as unset, and switches take 1/0, true/false, yes/no, on/off.
CGQOS_LOG (or RUST_LOG) sets the log filter, e.g. CGQOS_LOG=debug; -v and -q override it.

See docs/ in the source tree for the design, the board configuration and deployment.";

#[derive(Parser, Debug)]
#[command(
    name = "cgqos",
    version,
    about = "Quality of service for Linux sessions through cgroup v2",
    long_about = "cgqos builds a ChromeOS-style cgroup v2 hierarchy (browser ui / foreground / \
background groups with urgent and non-urgent thread classes, VM groups) from the machine's \
CPU topology and a board model.yaml, and places processes and threads in it.",
    after_help = AFTER_HELP
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options that say where things are; accepted before or after the subcommand.
#[derive(Args, Debug, Clone)]
pub struct Global {
    /// sysfs root to read CPUs from
    #[arg(
        long,
        global = true,
        env = "CGQOS_SYSFS_ROOT",
        default_value = "/sys",
        value_name = "DIR"
    )]
    pub sysfs_root: PathBuf,

    /// procfs root to read tasks and mounts from
    #[arg(
        long,
        global = true,
        env = "CGQOS_PROC_ROOT",
        default_value = "/proc",
        value_name = "DIR"
    )]
    pub proc_root: PathBuf,

    /// The cgqos root: the cgroup under which chrome/ and vms/ live [default: the root
    /// recorded by setup in the state file, else the cgroup2 mount in /proc/self/mountinfo]
    #[arg(long, global = true, env = "CGQOS_CGROUP_ROOT", value_name = "DIR")]
    pub cgroup_root: Option<PathBuf>,

    /// Where cgqos records what it changed, for teardown
    #[arg(
        long,
        global = true,
        env = "CGQOS_STATE_DIR",
        default_value = "/run/cgqos",
        value_name = "DIR"
    )]
    pub state_dir: PathBuf,

    /// Board model file; repeat to overlay (later files win, maps merge key by key)
    #[arg(
        long = "model",
        global = true,
        env = "CGQOS_MODEL",
        value_delimiter = ':',
        value_name = "FILE"
    )]
    pub models: Vec<PathBuf>,

    /// Device (and, without --model, board directory) to use [default: the only device, or
    /// one named "default"]
    #[arg(long, global = true, env = "CGQOS_BOARD", value_name = "NAME")]
    pub board: Option<String>,

    /// SKU id of the device [default: its first SKU]
    #[arg(long, global = true, env = "CGQOS_SKU", value_name = "N")]
    pub sku: Option<i64>,

    /// Directory of installed boards (<DIR>/<board>/model.yaml); built-in boards otherwise
    #[arg(long, global = true, env = "CGQOS_BOARDS_DIR", value_name = "DIR")]
    pub boards_dir: Option<PathBuf>,

    /// The daemon's socket: commands that place work go through the daemon when it answers
    #[arg(long, global = true, env = "CGQOS_SOCKET", default_value = crate::daemon::DEFAULT_SOCKET, value_name = "PATH")]
    pub socket: PathBuf,

    /// Work directly on the cgroup tree even if a daemon answers (needs root)
    #[arg(long, global = true, env = "CGQOS_DIRECT", action = ArgAction::SetTrue, value_parser = BoolishValueParser::new())]
    pub direct: bool,

    /// The daemon's configuration directory (daemon.yaml), watched for changes
    #[arg(long, global = true, env = "CGQOS_CONFIG_DIR", default_value = crate::daemon::DEFAULT_CONFIG_DIR, value_name = "DIR")]
    pub config_dir: PathBuf,

    /// Print machine-readable JSON instead of text (errors too)
    #[arg(long, global = true)]
    pub json: bool,

    /// More log output on stderr: -v every change (info), -vv debug, -vvv trace
    #[arg(short = 'v', long = "verbose", global = true, action = ArgAction::Count)]
    pub verbose: u8,

    /// Less log output on stderr: -q errors only, -qq none (the error that ends a command is
    /// still printed)
    #[arg(short = 'q', long = "quiet", global = true, action = ArgAction::Count)]
    pub quiet: u8,

    /// For tests on fake trees: do not insist that the cgroup root is a cgroup2 filesystem
    #[arg(long, global = true, env = "CGQOS_ALLOW_NON_CGROUPFS", hide = true, action = ArgAction::SetTrue, value_parser = BoolishValueParser::new())]
    pub allow_non_cgroupfs: bool,
}

impl Global {
    /// The log level -v / -q ask for, counted from the default `warn`; `None` without them
    /// (then CGQOS_LOG, RUST_LOG or the command's default decide).
    pub fn log_level(&self) -> Option<&'static str> {
        if self.verbose == 0 && self.quiet == 0 {
            return None;
        }
        let levels = ["off", "error", "warn", "info", "debug", "trace"];
        let i = (2 + i32::from(self.verbose) - i32::from(self.quiet)).clamp(0, 5);
        Some(levels[i as usize])
    }
}

// Deferred: only the subcommand that runs builds its arguments (the start-up of every
// command: docs/performance.md, "CLI start-up, third pass").
#[derive(Subcommand, Debug)]
#[command(defer = true)]
pub enum Command {
    /// Detect CPU tiers: which CPUs are usable and which are little
    Detect(detect::DetectArgs),
    /// Check board model files and print the resolved settings
    Validate(validate::ValidateArgs),
    /// Print every directory and write `setup` would make (touches nothing)
    Plan(plan::PlanArgs),
    /// Create or converge the cgroup hierarchy (idempotent)
    Setup(setup::SetupArgs),
    /// Show the hierarchy: requested and effective values, members, unsupported settings
    Status(status::StatusArgs),
    /// Move whole processes to a group, or threads (--thread) to a class
    #[command(name = "move")]
    Move(move_tasks::MoveArgs),
    /// Run a command inside a group, with a thread class's attributes
    Exec(exec::ExecArgs),
    /// Show each thread of a process: its group and class
    Where(where_::WhereArgs),
    /// Add, remove or list VM groups
    #[command(subcommand, about = "Add, remove or list VM groups")]
    Vm(vm::VmCommand),
    /// Move every task back where it came from and remove the hierarchy
    Teardown(teardown::TeardownArgs),
    /// Set the CPU share (foreground or background) and quota of a browser group or a VM
    Restrict(restrict::RestrictArgs),
    /// Serve the placement API on --socket (converges the hierarchy first)
    Daemon(daemon::DaemonArgs),
    /// Check the rules of <config-dir>/rules.d
    #[command(subcommand, about = "Check the rules of <config-dir>/rules.d")]
    Rules(rules::RulesCommand),
    /// Explain which rule or request put a task where it is
    Why(why::WhyArgs),
    /// Undo every change to tasks (cgroups and scheduling attributes); keep the hierarchy
    Reset(reset::ResetArgs),
    /// Print shell completions (bash, zsh, fish, ...) to stdout
    Completions(completions::CompletionsArgs),
    /// Print the roff manual page cgqos(8), or one subcommand's, to stdout
    Manpage(completions::ManpageArgs),
    /// Live view of the groups: tasks, CPU use, pressure, cpusets, uclamp (--once: one sample)
    Top(top::TopArgs),
}

/// Runs a parsed command line. Output goes through `Ctx::output`: a closed stdout ends the
/// command quietly, any other write error is exit 1; with `--json`, an error that ends the
/// command before it printed anything is also printed on stdout as a JSON object.
pub fn run(cli: Cli) -> CliResult<()> {
    let ctx = Ctx::new(cli.global);
    let result = match cli.command {
        Command::Detect(a) => detect::run(&ctx, a),
        Command::Validate(a) => validate::run(&ctx, a),
        Command::Plan(a) => plan::run(&ctx, a),
        Command::Setup(a) => setup::run(&ctx, a),
        Command::Status(a) => status::run(&ctx, a),
        Command::Move(a) => move_tasks::run(&ctx, a),
        Command::Exec(a) => exec::run(&ctx, a),
        Command::Where(a) => where_::run(&ctx, a),
        Command::Vm(c) => vm::run(&ctx, c),
        Command::Teardown(a) => teardown::run(&ctx, a),
        Command::Restrict(a) => restrict::run(&ctx, a),
        Command::Daemon(a) => daemon::run(&ctx, a),
        Command::Rules(c) => rules::run(&ctx, c),
        Command::Why(a) => why::run(&ctx, a),
        Command::Reset(a) => reset::run(&ctx, a),
        Command::Completions(a) => completions::completions(a),
        Command::Manpage(a) => completions::manpage(a),
        Command::Top(a) => top::run(&ctx, a),
    };
    let out = ctx.out.into_inner();
    let result = match (result, out.error) {
        // The command's own failure says more than a failure to print its report; its
        // code stays, and a report that failed silently gets the write error as message.
        (Err(e), Some(w)) if e.message.is_empty() => Err(CliError::of(e.kind(), w.message)),
        (Err(e), _) => Err(e),
        (Ok(()), Some(e)) => Err(e),
        (Ok(()), None) => Ok(()),
    };
    if let Err(e) = &result {
        if ctx.g.json && !out.printed && !out.closed && !e.message.is_empty() {
            let _ = write_stdout(&json_error(e));
        }
    }
    result
}

/// The `--json` form of an error that ends a command (documented in docs/cli.md).
pub fn json_error(e: &CliError) -> String {
    let v = serde_json::json!({
        "error": {"exit": e.exit() as u8, "kind": e.exit().name(), "message": e.message}
    });
    format!("{v}\n")
}

fn write_stdout(s: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(s.as_bytes())?;
    out.flush()
}

/// Writes one line to stderr, prefixed with `cgqos: `; a failing stderr is ignored (there is
/// nowhere left to report it).
pub fn eprint_line(message: &str) {
    let _ = writeln!(std::io::stderr().lock(), "cgqos: {message}");
}

/// Resolves the global options into the pieces each command needs.
pub struct Ctx {
    pub g: Global,
    out: RefCell<Output>,
    /// Why the daemon could not be used, when a connection was tried and failed.
    daemon_unusable: RefCell<Option<String>>,
}

/// What happened to stdout.
#[derive(Default)]
struct Output {
    /// Something was written (or tried).
    printed: bool,
    /// The reader went away (EPIPE): the rest of the output is dropped quietly.
    closed: bool,
    /// Writing failed otherwise: the command ends with this (exit 1).
    error: Option<CliError>,
}

impl Ctx {
    pub fn new(g: Global) -> Ctx {
        Ctx {
            g,
            out: RefCell::default(),
            daemon_unusable: RefCell::default(),
        }
    }

    pub fn topology(&self) -> CliResult<Topology> {
        let topo = Topology::detect(&self.g.sysfs_root)?;
        for w in &topo.warnings {
            tracing::warn!("{w}");
        }
        Ok(topo)
    }

    /// Where the board comes from. An explicit `--boards-dir` must be a directory: a typo
    /// there would otherwise fall back to the built-in boards without a word.
    pub fn board_source(&self) -> CliResult<BoardSource> {
        if let Some(dir) = &self.g.boards_dir {
            match std::fs::metadata(dir) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(CliError::bad_input(format!(
                        "--boards-dir {}: not a directory",
                        dir.display()
                    )));
                }
                Err(e) => {
                    return Err(CliError::bad_input(format!(
                        "--boards-dir {}: {e}",
                        dir.display()
                    )));
                }
            }
        }
        Ok(BoardSource {
            models: self.g.models.clone(),
            board: self.g.board.clone(),
            sku: self.g.sku,
            boards_dir: self.g.boards_dir.clone(),
        })
    }

    pub fn board(&self) -> CliResult<Board> {
        Ok(self.board_source()?.load()?)
    }

    pub fn plan(&self) -> CliResult<(Topology, Board, Plan)> {
        let topo = self.topology()?;
        let board = self.board()?;
        let plan = Plan::build(&topo, &board)?;
        Ok((topo, board, plan))
    }

    pub fn procfs(&self) -> Procfs {
        Procfs::new(&self.g.proc_root)
    }

    fn mountinfo(&self) -> String {
        self.procfs().mountinfo().unwrap_or_default()
    }

    /// The cgqos root: `--cgroup-root`; else the root recorded in the state file (where
    /// `setup` put the hierarchy); else the cgroup2 mount (the one showing the hierarchy's
    /// root, e.g. `/sys/fs/cgroup` or `/sys/fs/cgroup/unified` on hybrid hosts). A root
    /// given that differs from the recorded one is refused when the state is loaded.
    pub fn cgroup_root(&self) -> CliResult<PathBuf> {
        if let Some(r) = &self.g.cgroup_root {
            return Ok(r.clone());
        }
        if let Some(r) = crate::state::recorded_root(&self.g.state_dir)? {
            return Ok(r);
        }
        self.mount_root()
    }

    /// The cgroup2 mount showing the hierarchy's root (else the first one): the cgqos root
    /// when neither `--cgroup-root` nor the state names one.
    fn mount_root(&self) -> CliResult<PathBuf> {
        let mounts = crate::cgroupfs::cgroup2_mounts(&self.mountinfo());
        mounts
            .iter()
            .find(|m| m.root == "/")
            .or(mounts.first())
            .map(|m| m.dir.clone())
            .ok_or_else(|| {
                CliError::bad_input(format!(
                    "no cgroup2 mount in {}/self/mountinfo: mount one (mount -t cgroup2 none /sys/fs/cgroup) or pass --cgroup-root",
                    self.g.proc_root.display()
                ))
            })
    }

    pub fn cgroupfs(&self) -> CliResult<CgroupFs> {
        Ok(CgroupFs::new(self.cgroup_root()?))
    }

    pub fn map(&self, root: &Path) -> CgroupMap {
        CgroupMap::new(root, &self.mountinfo())
    }

    /// Locks the state directory. A permission error for a user other than root means the
    /// command needed root or the daemon: say that, not just which file was refused.
    pub fn state_dir(&self) -> CliResult<StateDir> {
        match StateDir::lock(&self.g.state_dir) {
            Ok(sd) => Ok(sd),
            Err(crate::state::StateError::Io { path, source })
                if source.kind() == std::io::ErrorKind::PermissionDenied
                    && !rustix::process::geteuid().is_root() =>
            {
                let daemon = match self.daemon_unusable.borrow().as_deref() {
                    Some(why) => format!(
                        "the daemon's socket {} is unusable ({why})",
                        self.g.socket.display()
                    ),
                    None if self.g.direct => "--direct was given".to_string(),
                    None => format!("no daemon answers on {}", self.g.socket.display()),
                };
                Err(CliError::new(
                    Exit::KernelRefused,
                    format!(
                        "this needs root, or a running cgqos daemon to ask: {daemon}, and working directly needs root ({}: {source})",
                        path.display()
                    ),
                ))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The rules and classes of `<config-dir>/rules.d` (the shipped classes when absent).
    pub fn rules(&self) -> CliResult<crate::rules::RuleSet> {
        crate::rules::load::load_dir(&self.g.config_dir)
            .map_err(|e| CliError::bad_input(e.to_string()))
    }

    /// The daemon, when one answers on `--socket` (and `--direct` is not given).
    pub fn daemon(&self) -> CliResult<Option<Client>> {
        if self.g.direct {
            return Ok(None);
        }
        match Client::connect(&self.g.socket) {
            Ok(c) => Ok(c),
            Err(e) => {
                tracing::debug!(
                    "daemon at {} unusable ({e}); working directly",
                    self.g.socket.display()
                );
                *self.daemon_unusable.borrow_mut() = Some(e.to_string());
                Ok(None)
            }
        }
    }

    /// Everything a command that moves tasks needs, with the state file locked and loaded.
    /// The root is `cgroup_root`'s, taken from the state this loads (one read of it).
    pub fn session(&self) -> CliResult<Session> {
        let mut sd = self.state_dir()?;
        let (root, state) = sd.load_for(|recorded| match (&self.g.cgroup_root, recorded) {
            (Some(given), _) => Ok(given.clone()),
            (None, Some(recorded)) => Ok(recorded.to_path_buf()),
            (None, None) => self.mount_root(),
        })?;
        let cg = CgroupFs::new(root);
        let map = self.map(cg.root());
        Ok(Session {
            map,
            proc: self.procfs(),
            sd,
            state,
            records_watch: None,
            cg,
        })
    }

    /// Checks that `dir` (or its nearest existing ancestor) is on cgroup2 and writable.
    pub fn check_cgroupfs(&self, dir: &Path) -> CliResult<()> {
        self.check_cgroup2(dir)?;
        let existing = dir.ancestors().find(|d| d.exists()).unwrap_or(dir);
        if !writable(existing) {
            return Err(CliError::new(
                Exit::KernelRefused,
                format!(
                    "{} is not writable: cgqos needs root, or a subtree delegated to its user",
                    existing.display()
                ),
            ));
        }
        Ok(())
    }

    /// Checks that `dir` (or its nearest existing ancestor) is on a cgroup2 filesystem.
    pub fn check_cgroup2(&self, dir: &Path) -> CliResult<()> {
        let existing = dir.ancestors().find(|d| d.exists()).unwrap_or(dir);
        if !self.g.allow_non_cgroupfs && !is_cgroup2(existing) {
            return Err(CliError::bad_input(format!(
                "{} is not on a cgroup2 filesystem (pass --cgroup-root inside a cgroup2 mount)",
                existing.display()
            )));
        }
        Ok(())
    }

    /// Prints a value as JSON (with --json) or with the given text renderer. Never panics:
    /// a closed stdout drops the output quietly, another write error is kept and ends the
    /// command with exit 1 once it returns (see `run`).
    pub fn output<T: Serialize>(&self, value: &T, text: impl FnOnce(&T) -> String) {
        let s = if self.g.json {
            match serde_json::to_string_pretty(value) {
                Ok(mut j) => {
                    j.push('\n');
                    j
                }
                Err(e) => {
                    self.out.borrow_mut().error.get_or_insert(CliError::new(
                        Exit::Failure,
                        format!("cannot format the output as JSON: {e}"),
                    ));
                    return;
                }
            }
        } else {
            let mut t = text(value);
            if !t.is_empty() && !t.ends_with('\n') {
                t.push('\n');
            }
            t
        };
        self.print(&s);
    }

    /// Writes text to stdout as `output` does.
    pub fn print(&self, s: &str) {
        let mut out = self.out.borrow_mut();
        if out.closed || out.error.is_some() || s.is_empty() {
            return;
        }
        out.printed = true;
        match write_stdout(s) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => out.closed = true,
            Err(e) => {
                out.error = Some(CliError::new(
                    Exit::Failure,
                    format!("writing the output to stdout: {e}"),
                ));
            }
        }
    }
}

fn is_cgroup2(path: &Path) -> bool {
    // A path with a NUL byte fails like a missing one. 0x63677270: CGROUP2_SUPER_MAGIC.
    rustix::fs::statfs(path).is_ok_and(|buf| buf.f_type == 0x6367_7270)
}

fn writable(path: &Path) -> bool {
    rustix::fs::access(path, rustix::fs::Access::WRITE_OK).is_ok()
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// main.rs rewrites the command line's variables only when a `CGQOS_*` one is empty.
    #[test]
    fn every_variable_has_the_cgqos_prefix() {
        fn check(cmd: &clap::Command) {
            for a in cmd.get_arguments() {
                if let Some(env) = a.get_env() {
                    assert!(env.to_string_lossy().starts_with("CGQOS_"), "{env:?}");
                }
            }
            cmd.get_subcommands().for_each(check);
        }
        check(&super::Cli::command());
    }
}
