//! cgqos: quality of service for Linux sessions through cgroup v2.
//!
//! Data flows one way: sysfs → [`topology`]; board files → [`board`]; (topology, board) →
//! [`plan`], a pure list of steps; plan → [`apply`] against a [`cgroupfs`] root; requests →
//! [`place`] against the same root, with [`procfs`] identifying tasks and [`state`]
//! remembering what to undo.

pub mod apply;
pub mod board;
pub mod cgroupfs;
pub mod classify;
pub mod cli;
pub mod config_read;
pub mod cpulist;
pub mod daemon;
pub mod error;
pub mod layout;
pub mod matcher;
pub mod model;
pub mod mounts;
pub mod ops;
pub mod place;
pub mod plan;
pub mod procfs;
pub mod rules;
pub mod sched;
pub mod session;
pub mod state;
pub mod suggest;
pub mod sys;
pub mod top;
pub mod topology;
pub mod vm_attach;
pub mod yaml;
