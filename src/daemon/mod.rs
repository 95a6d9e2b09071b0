//! `cgqos daemon`: the placement API over a Unix socket.

pub mod client;
pub mod protocol;

pub const DEFAULT_SOCKET: &str = "/run/cgqos/cgqos.sock";
pub const DEFAULT_CONFIG_DIR: &str = "/etc/cgqos";
