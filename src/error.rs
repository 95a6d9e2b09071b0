//! Exit codes and the command-line error type. Every failure maps to one documented code.

use std::fmt;

use crate::apply::ApplyError;
use crate::board::BoardError;
use crate::cgroupfs::{FsError, Refusal};
use crate::place::PlaceError;
use crate::plan::PlanError;
use crate::procfs::ProcError;
use crate::state::StateError;
use crate::topology::TopologyError;

/// Process exit codes (documented in `cgqos --help` and docs/cli.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    /// Unexpected failure: I/O on our own files, a corrupt state file.
    Failure = 1,
    /// Bad input or configuration (also clap's usage errors).
    BadInput = 2,
    /// A process or thread does not exist (exited, or the id was reused).
    NoSuchProcess = 3,
    /// The kernel refused an operation (EBUSY, EOPNOTSUPP, EINVAL, EACCES).
    KernelRefused = 4,
    /// `--strict`: a setting the kernel does not support.
    Unsupported = 5,
    /// The daemon's policy refused the request.
    Denied = 6,
    /// The daemon is busy or went away mid-request.
    Unavailable = 7,
    /// `status`: the tree differs from the plan or groups are missing (run `setup`).
    NotInSync = 8,
}

impl Exit {
    /// The name of the code in `--json` error objects (docs/cli.md).
    pub fn name(self) -> &'static str {
        match self {
            Exit::Ok => "ok",
            Exit::Failure => "failure",
            Exit::BadInput => "bad_input",
            Exit::NoSuchProcess => "no_such_process",
            Exit::KernelRefused => "kernel_refused",
            Exit::Unsupported => "unsupported",
            Exit::Denied => "denied",
            Exit::Unavailable => "unavailable",
            Exit::NotInSync => "not_in_sync",
        }
    }
}

#[derive(Debug)]
pub struct CliError {
    pub exit: Exit,
    pub message: String,
}

impl CliError {
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        CliError {
            exit,
            message: message.into(),
        }
    }

    pub fn bad_input(message: impl Into<String>) -> Self {
        Self::new(Exit::BadInput, message)
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

pub type CliResult<T> = Result<T, CliError>;

fn fs_exit(e: &FsError) -> Exit {
    match e.refusal() {
        Refusal::Gone => Exit::NoSuchProcess,
        Refusal::Other => Exit::Failure,
        _ => Exit::KernelRefused,
    }
}

impl From<FsError> for CliError {
    fn from(e: FsError) -> Self {
        CliError::new(fs_exit(&e), e.to_string())
    }
}

impl From<ApplyError> for CliError {
    fn from(e: ApplyError) -> Self {
        CliError::new(fs_exit(&e.source), e.to_string())
    }
}

impl From<BoardError> for CliError {
    fn from(e: BoardError) -> Self {
        let exit = match e {
            BoardError::Read { .. } | BoardError::Yaml(_) | BoardError::Select(_) => Exit::BadInput,
        };
        CliError::new(exit, e.to_string())
    }
}

impl From<PlanError> for CliError {
    fn from(e: PlanError) -> Self {
        CliError::bad_input(e.to_string())
    }
}

impl From<TopologyError> for CliError {
    fn from(e: TopologyError) -> Self {
        CliError::bad_input(e.to_string())
    }
}

impl From<StateError> for CliError {
    fn from(e: StateError) -> Self {
        let exit = match e {
            StateError::Unsafe { .. } | StateError::OtherRoot { .. } => Exit::BadInput,
            _ => Exit::Failure,
        };
        CliError::new(exit, e.to_string())
    }
}

impl From<ProcError> for CliError {
    fn from(e: ProcError) -> Self {
        let exit = match e {
            ProcError::Gone(_) => Exit::NoSuchProcess,
            _ => Exit::Failure,
        };
        CliError::new(exit, e.to_string())
    }
}

impl From<PlaceError> for CliError {
    fn from(e: PlaceError) -> Self {
        let exit = match &e {
            PlaceError::Gone(_) | PlaceError::Reused { .. } => Exit::NoSuchProcess,
            PlaceError::KernelThread { .. }
            | PlaceError::NotAProcess { .. }
            | PlaceError::NotSetUp(_)
            | PlaceError::NotInGroup { .. }
            | PlaceError::WrongClass { .. } => Exit::BadInput,
            PlaceError::Kernel(fe) => fs_exit(fe),
            PlaceError::Proc(_) => Exit::Failure,
        };
        CliError::new(exit, e.to_string())
    }
}
