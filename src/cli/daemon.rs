//! `cgqos daemon`: serve the placement API (see docs/protocol.md).

use clap::Args;

use super::Ctx;
use crate::daemon::engine::Paths;
use crate::error::CliResult;

#[derive(Args, Debug)]
pub struct DaemonArgs {
    /// Where user and group names of daemon.yaml are looked up (passwd, group)
    #[arg(long, default_value = "/etc", value_name = "DIR", hide = true)]
    pub etc_dir: std::path::PathBuf,
    /// On SIGTERM/SIGINT, undo every change to tasks (as `cgqos reset`) before exiting
    #[arg(long, env = "CGQOS_RESET_ON_EXIT")]
    pub reset_on_exit: bool,
}

pub fn run(ctx: &Ctx, args: DaemonArgs) -> CliResult<()> {
    let root = ctx.cgroup_root()?;
    ctx.check_cgroupfs(&root)?;
    let paths = Paths {
        sysfs: ctx.g.sysfs_root.clone(),
        proc: ctx.g.proc_root.clone(),
        cgroup_root: root,
        state_dir: ctx.g.state_dir.clone(),
        config_dir: ctx.g.config_dir.clone(),
        etc: args.etc_dir,
        board: ctx.board_source(),
    };
    crate::daemon::run(paths, ctx.g.socket.clone(), args.reset_on_exit)
}
