//! The words the operations share with their front ends: a task as asked for, a restriction
//! state, the result code of a failure. The daemon's wire protocol re-exports them, so the
//! operations layer never depends on the protocol.

use serde::{Deserialize, Serialize};

/// A process or thread named by a request, optionally with the start time the caller saw
/// (field 22 of `/proc/<id>/stat`), so a reused id is refused instead of moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskRef {
    pub id: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starttime: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestrictState {
    Foreground,
    Background,
}

/// Error codes of failed replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Code {
    /// Not JSON, not an object, unknown op or field, wrong type.
    BadRequest,
    /// `v` is not a version this daemon speaks.
    UnsupportedVersion,
    /// The line is longer than MAX_LINE, or a list longer than MAX_TARGETS.
    TooLarge,
    /// The caller may not do this (the message says which rule).
    Denied,
    /// Unknown group or class, kernel thread, group not set up.
    InvalidTarget,
    /// The process or thread does not exist, or its id was reused.
    NoSuchProcess,
    /// The kernel refused (EBUSY, EOPNOTSUPP, EINVAL, EACCES).
    KernelRefused,
    /// The kernel lacks what the request needs (e.g. no cpu controller for `restrict`).
    Unsupported,
    /// Too many connections; try again.
    Busy,
    /// The new configuration is invalid; the old one stays in force.
    InvalidConfig,
    Internal,
}
