//! Exit codes and the command-line error type. Every failure maps to one documented code.

use std::fmt;

use crate::apply::ApplyError;
use crate::board::BoardError;
use crate::cgroupfs::{FsError, Refusal};
use crate::model::Code;
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

/// What went wrong, in one taxonomy: the command line's exit code (`exit`) and the daemon's
/// reply code (`code`) are both derived from it here, and nowhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Unexpected failure: I/O on our own files, a corrupt state file, a bug.
    Internal,
    /// Bad input or configuration: an unknown group or class, a kernel thread, no setup yet.
    BadInput,
    /// A request that is not JSON, not an object, or has an unknown op or field.
    BadRequest,
    /// A request line or list longer than the daemon accepts.
    TooLarge,
    /// A protocol version the daemon does not speak.
    UnsupportedVersion,
    /// A configuration that does not load; the old one stays in force.
    InvalidConfig,
    /// A process or thread does not exist (exited, or the id was reused).
    NoSuchProcess,
    /// The kernel refused (EBUSY, EOPNOTSUPP, EINVAL, EACCES).
    KernelRefused,
    /// The kernel lacks what was asked for.
    Unsupported,
    /// The policy refused.
    Denied,
    /// The daemon turned the connection away; try again.
    Busy,
    /// The daemon went away mid-request.
    Unavailable,
    /// `status`: the tree differs from the plan.
    NotInSync,
}

impl Kind {
    /// The exit code of the command line.
    pub fn exit(self) -> Exit {
        match self {
            Kind::Internal | Kind::UnsupportedVersion => Exit::Failure,
            Kind::BadInput | Kind::BadRequest | Kind::TooLarge | Kind::InvalidConfig => {
                Exit::BadInput
            }
            Kind::NoSuchProcess => Exit::NoSuchProcess,
            Kind::KernelRefused => Exit::KernelRefused,
            Kind::Unsupported => Exit::Unsupported,
            Kind::Denied => Exit::Denied,
            Kind::Busy | Kind::Unavailable => Exit::Unavailable,
            Kind::NotInSync => Exit::NotInSync,
        }
    }

    /// The result code of a failed daemon reply (and of a failed target in a move).
    pub fn code(self) -> Code {
        match self {
            Kind::Internal | Kind::Unavailable | Kind::NotInSync => Code::Internal,
            Kind::BadInput => Code::InvalidTarget,
            Kind::BadRequest => Code::BadRequest,
            Kind::TooLarge => Code::TooLarge,
            Kind::UnsupportedVersion => Code::UnsupportedVersion,
            Kind::InvalidConfig => Code::InvalidConfig,
            Kind::NoSuchProcess => Code::NoSuchProcess,
            Kind::KernelRefused => Code::KernelRefused,
            Kind::Unsupported => Code::Unsupported,
            Kind::Denied => Code::Denied,
            Kind::Busy => Code::Busy,
        }
    }

    /// The kind a daemon's reply code stands for (the command line exits with its `exit`).
    pub fn of_code(code: Code) -> Kind {
        match code {
            Code::BadRequest => Kind::BadRequest,
            Code::UnsupportedVersion => Kind::UnsupportedVersion,
            Code::TooLarge => Kind::TooLarge,
            Code::Denied => Kind::Denied,
            Code::InvalidTarget => Kind::BadInput,
            Code::NoSuchProcess => Kind::NoSuchProcess,
            Code::KernelRefused => Kind::KernelRefused,
            Code::Unsupported => Kind::Unsupported,
            Code::Busy => Kind::Busy,
            Code::InvalidConfig => Kind::InvalidConfig,
            Code::Internal => Kind::Internal,
        }
    }

    /// The kind behind an exit code (for errors made from one).
    pub fn of_exit(exit: Exit) -> Kind {
        match exit {
            // Not a failure; never made into an error.
            Exit::Ok | Exit::Failure => Kind::Internal,
            Exit::BadInput => Kind::BadInput,
            Exit::NoSuchProcess => Kind::NoSuchProcess,
            Exit::KernelRefused => Kind::KernelRefused,
            Exit::Unsupported => Kind::Unsupported,
            Exit::Denied => Kind::Denied,
            Exit::Unavailable => Kind::Unavailable,
            Exit::NotInSync => Kind::NotInSync,
        }
    }
}

/// The error of every operation, on the command line and in the daemon: a kind (which decides
/// the exit code and the reply code) and the whole message, with the path and value that
/// failed; the typed error it came from, when there is one, stays reachable as its `source`.
#[derive(Debug)]
pub struct CliError {
    pub kind: Kind,
    pub message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

/// The one error type (its historical name is `CliError`).
pub type Error = CliError;

impl CliError {
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        Self::of(Kind::of_exit(exit), message)
    }

    pub fn of(kind: Kind, message: impl Into<String>) -> Self {
        CliError {
            kind,
            message: message.into(),
            source: None,
        }
    }

    pub fn bad_input(message: impl Into<String>) -> Self {
        Self::of(Kind::BadInput, message)
    }

    /// The policy refused; the message says which rule.
    pub fn denied(message: impl Into<String>) -> Self {
        Self::of(Kind::Denied, message)
    }

    /// An error of `kind` carrying the typed error it describes.
    fn wrap<E: std::error::Error + Send + Sync + 'static>(kind: Kind, e: E) -> Self {
        CliError {
            kind,
            message: e.to_string(),
            source: Some(Box::new(e)),
        }
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn exit(&self) -> Exit {
        self.kind.exit()
    }

    pub fn code(&self) -> Code {
        self.kind.code()
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

pub type CliResult<T> = Result<T, CliError>;

fn fs_kind(e: &FsError) -> Kind {
    match e.refusal() {
        Refusal::Gone => Kind::NoSuchProcess,
        Refusal::Other => Kind::Internal,
        _ => Kind::KernelRefused,
    }
}

impl From<FsError> for CliError {
    fn from(e: FsError) -> Self {
        CliError::wrap(fs_kind(&e), e)
    }
}

impl From<ApplyError> for CliError {
    fn from(e: ApplyError) -> Self {
        CliError::wrap(fs_kind(&e.source), e)
    }
}

impl From<BoardError> for CliError {
    fn from(e: BoardError) -> Self {
        let kind = match e {
            BoardError::Read { .. } | BoardError::Yaml(_) | BoardError::Select(_) => Kind::BadInput,
        };
        CliError::wrap(kind, e)
    }
}

impl From<PlanError> for CliError {
    fn from(e: PlanError) -> Self {
        CliError::wrap(Kind::BadInput, e)
    }
}

impl From<TopologyError> for CliError {
    fn from(e: TopologyError) -> Self {
        CliError::wrap(Kind::BadInput, e)
    }
}

impl From<StateError> for CliError {
    fn from(e: StateError) -> Self {
        let kind = match e {
            StateError::Unsafe { .. } | StateError::OtherRoot { .. } => Kind::BadInput,
            _ => Kind::Internal,
        };
        CliError::wrap(kind, e)
    }
}

impl From<ProcError> for CliError {
    fn from(e: ProcError) -> Self {
        let kind = match e {
            ProcError::Gone(_) => Kind::NoSuchProcess,
            _ => Kind::Internal,
        };
        CliError::wrap(kind, e)
    }
}

impl From<PlaceError> for CliError {
    fn from(e: PlaceError) -> Self {
        let kind = match &e {
            PlaceError::Gone(_) | PlaceError::Reused { .. } => Kind::NoSuchProcess,
            PlaceError::KernelThread { .. }
            | PlaceError::NotAProcess { .. }
            | PlaceError::NotSetUp(_)
            | PlaceError::NotInGroup { .. }
            | PlaceError::WrongClass { .. } => Kind::BadInput,
            PlaceError::Kernel(fe) => fs_kind(fe),
            PlaceError::Proc(_) => Kind::Internal,
        };
        CliError::wrap(kind, e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error made from an exit code exits with it, and a reply code read by the client
    /// maps back to itself: the kind loses nothing either way.
    #[test]
    fn kinds_round_trip_exit_codes_and_reply_codes() {
        for e in [
            Exit::Failure,
            Exit::BadInput,
            Exit::NoSuchProcess,
            Exit::KernelRefused,
            Exit::Unsupported,
            Exit::Denied,
            Exit::Unavailable,
            Exit::NotInSync,
        ] {
            assert_eq!(Kind::of_exit(e).exit(), e);
        }
        for c in [
            Code::BadRequest,
            Code::UnsupportedVersion,
            Code::TooLarge,
            Code::Denied,
            Code::InvalidTarget,
            Code::NoSuchProcess,
            Code::KernelRefused,
            Code::Unsupported,
            Code::Busy,
            Code::InvalidConfig,
            Code::Internal,
        ] {
            assert_eq!(Kind::of_code(c).code(), c);
        }
        // Bad input on the command line is an invalid target on the wire, and back.
        assert_eq!(Kind::of_exit(Exit::BadInput).code(), Code::InvalidTarget);
        assert_eq!(Kind::of_code(Code::Busy).exit(), Exit::Unavailable);
    }
}
