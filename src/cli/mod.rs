//! The `cgqos` command line: global options, shared context, one module per subcommand.

mod daemon;
mod detect;
mod move_tasks;
mod plan;
mod reset;
mod rules;
mod setup;
mod status;
mod teardown;
mod validate;
mod vm;
mod where_;
mod why;

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
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

Environment: every global option has a CGQOS_* variable (shown with each option);
CGQOS_LOG (or RUST_LOG) sets the log filter, e.g. CGQOS_LOG=debug.

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
    #[arg(long, global = true, env = "CGQOS_DIRECT")]
    pub direct: bool,

    /// The daemon's configuration directory (daemon.yaml), watched for changes
    #[arg(long, global = true, env = "CGQOS_CONFIG_DIR", default_value = crate::daemon::DEFAULT_CONFIG_DIR, value_name = "DIR")]
    pub config_dir: PathBuf,

    /// Print machine-readable JSON instead of text
    #[arg(long, global = true)]
    pub json: bool,

    /// For tests on fake trees: do not insist that the cgroup root is a cgroup2 filesystem
    #[arg(long, global = true, env = "CGQOS_ALLOW_NON_CGROUPFS", hide = true)]
    pub allow_non_cgroupfs: bool,
}

#[derive(Subcommand, Debug)]
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
    /// Show each thread of a process: its group and class
    Where(where_::WhereArgs),
    /// Add, remove or list VM groups
    #[command(subcommand)]
    Vm(vm::VmCommand),
    /// Move every task back where it came from and remove the hierarchy
    Teardown(teardown::TeardownArgs),
    /// Serve the placement API on --socket (converges the hierarchy first)
    Daemon(daemon::DaemonArgs),
    /// Check the rules of <config-dir>/rules.d
    #[command(subcommand)]
    Rules(rules::RulesCommand),
    /// Explain which rule or request put a task where it is
    Why(why::WhyArgs),
    /// Undo every change to tasks (cgroups and scheduling attributes); keep the hierarchy
    Reset(reset::ResetArgs),
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> CliResult<()> {
    let ctx = Ctx { g: cli.global };
    match cli.command {
        Command::Detect(a) => detect::run(&ctx, a),
        Command::Validate(a) => validate::run(&ctx, a),
        Command::Plan(a) => plan::run(&ctx, a),
        Command::Setup(a) => setup::run(&ctx, a),
        Command::Status(a) => status::run(&ctx, a),
        Command::Move(a) => move_tasks::run(&ctx, a),
        Command::Where(a) => where_::run(&ctx, a),
        Command::Vm(c) => vm::run(&ctx, c),
        Command::Teardown(a) => teardown::run(&ctx, a),
        Command::Daemon(a) => daemon::run(&ctx, a),
        Command::Rules(c) => rules::run(&ctx, c),
        Command::Why(a) => why::run(&ctx, a),
        Command::Reset(a) => reset::run(&ctx, a),
    }
}

/// Resolves the global options into the pieces each command needs.
pub struct Ctx {
    pub g: Global,
}

impl Ctx {
    pub fn topology(&self) -> CliResult<Topology> {
        let topo = Topology::detect(&self.g.sysfs_root)?;
        for w in &topo.warnings {
            tracing::warn!("{w}");
        }
        Ok(topo)
    }

    pub fn board_source(&self) -> BoardSource {
        BoardSource {
            models: self.g.models.clone(),
            board: self.g.board.clone(),
            sku: self.g.sku,
            boards_dir: self.g.boards_dir.clone(),
        }
    }

    pub fn board(&self) -> CliResult<Board> {
        Ok(self.board_source().load()?)
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

    pub fn state_dir(&self) -> CliResult<StateDir> {
        Ok(StateDir::lock(&self.g.state_dir)?)
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
                Ok(None)
            }
        }
    }

    /// Everything a command that moves tasks needs, with the state file locked and loaded.
    pub fn session(&self) -> CliResult<Session> {
        let cg = self.cgroupfs()?;
        let map = self.map(cg.root());
        let sd = self.state_dir()?;
        let state = sd.load(cg.root())?;
        Ok(Session {
            map,
            proc: self.procfs(),
            sd,
            state,
            cg,
        })
    }

    /// Checks that `dir` (or its nearest existing ancestor) is on cgroup2 and writable.
    pub fn check_cgroupfs(&self, dir: &Path) -> CliResult<()> {
        let existing = dir.ancestors().find(|d| d.exists()).unwrap_or(dir);
        if !self.g.allow_non_cgroupfs && !is_cgroup2(existing) {
            return Err(CliError::bad_input(format!(
                "{} is not on a cgroup2 filesystem (pass --cgroup-root inside a cgroup2 mount)",
                existing.display()
            )));
        }
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

    /// Prints a value as JSON (with --json) or with the given text renderer.
    pub fn output<T: Serialize>(&self, value: &T, text: impl FnOnce(&T) -> String) {
        if self.g.json {
            println!(
                "{}",
                serde_json::to_string_pretty(value).expect("output serialises")
            );
        } else {
            let t = text(value);
            if !t.is_empty() {
                print!("{t}");
                if !t.ends_with('\n') {
                    println!();
                }
            }
        }
    }
}

fn is_cgroup2(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated path and `buf` a zeroed statfs we own.
    let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut buf) };
    const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
    rc == 0 && buf.f_type as i64 == CGROUP2_SUPER_MAGIC
}

fn writable(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated path.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}
