//! `cgqos daemon`: serve the placement API (see docs/protocol.md).

use clap::builder::BoolishValueParser;
use clap::{ArgAction, Args};

use super::Ctx;
use crate::daemon::engine::Paths;
use crate::error::{CliError, CliResult};

#[derive(Args, Debug)]
pub struct DaemonArgs {
    /// Where user and group names of daemon.yaml are looked up (passwd, group)
    #[arg(long, default_value = "/etc", value_name = "DIR", hide = true)]
    pub etc_dir: std::path::PathBuf,
    /// On SIGTERM/SIGINT, undo every change to tasks (as `cgqos reset`) before exiting
    #[arg(long, env = "CGQOS_RESET_ON_EXIT", action = ArgAction::SetTrue, value_parser = BoolishValueParser::new())]
    pub reset_on_exit: bool,
    /// Also serve ChromeOS's org.chromium.ResourceManager and cgqos's org.cgqos.Daemon1 on
    /// the system bus (DBUS_SYSTEM_BUS_ADDRESS, else /run/dbus/system_bus_socket); also
    /// `dbus: true` in daemon.yaml
    #[arg(long)]
    pub dbus: bool,
}

pub fn run(ctx: &Ctx, args: DaemonArgs) -> CliResult<()> {
    if ctx.g.json {
        // The daemon prints nothing on stdout; accepting --json and ignoring it would
        // suggest JSON logs that do not exist.
        return Err(CliError::bad_input(
            "daemon: --json does not apply (the daemon prints nothing; its replies on the socket are JSON, see docs/protocol.md)",
        ));
    }
    let root = ctx.cgroup_root()?;
    ctx.check_cgroupfs(&root)?;
    let paths = Paths {
        sysfs: ctx.g.sysfs_root.clone(),
        proc: ctx.g.proc_root.clone(),
        cgroup_root: root,
        state_dir: ctx.g.state_dir.clone(),
        config_dir: ctx.g.config_dir.clone(),
        etc: args.etc_dir,
        board: ctx.board_source()?,
    };
    crate::daemon::run(paths, ctx.g.socket.clone(), args.reset_on_exit, args.dbus)
}
