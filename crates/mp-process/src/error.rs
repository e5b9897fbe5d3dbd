//! The error type of `mp-process`.

use std::fmt;
use std::io;

use crate::wire::WireError;

/// Everything that can go wrong when starting, waiting for or signalling a process.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A system call failed; `op` says which operation.
    Io {
        /// What mp was doing.
        op: &'static str,
        /// The operating system's error.
        source: io::Error,
    },
    /// A message could not be encoded or decoded, or a frame was malformed.
    Wire(WireError),
    /// A start method name other than `fork`, `spawn` or `forkserver`.
    UnknownStartMethod(String),
    /// `set_start_method` was called after the start method was fixed, without `force`.
    ContextAlreadySet,
    /// `start` was called twice on the same `Process`.
    AlreadyStarted,
    /// The operation needs a started process.
    NotStarted,
    /// A daemonic process tried to start a child (Python: "daemonic processes are not allowed
    /// to have children").
    DaemonicChildren,
    /// The `.init_array` entry hook of `mp-process` did not run in this binary, so `spawn` and
    /// `forkserver` children could not be diverted before `main`.
    EntryHookMissing,
    /// This process was started as an `mp` child but its bootstrap never ran (the entry hook
    /// is missing from the binary): starting processes from here would re-run the program.
    Bootstrapping,
    /// The kernel lacks pidfds (Linux 5.4 or later is needed) or a seccomp filter forbids them.
    PidfdUnsupported(io::Error),
    /// An object that owns processes was used from a process other than the one that made it.
    WrongProcess {
        /// The pid of the process that made the object.
        creator: u32,
        /// The pid of the calling process.
        current: u32,
    },
    /// A capturing closure (`Process::fork_closure`) can only run under the `fork` method.
    ForkOnly,
    /// The forkserver went away before it reported the child's exit status.
    ForkserverLost,
    /// The forkserver refused a request; its message says why.
    Forkserver(String),
}

impl Error {
    pub(crate) fn io(op: &'static str, source: impl Into<io::Error>) -> Self {
        Error::Io { op, source: source.into() }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { op, source } => write!(f, "{op} failed: {source}"),
            Error::Wire(e) => write!(f, "wire error: {e}"),
            Error::UnknownStartMethod(name) => write!(
                f,
                "unknown start method {name:?}: expected \"fork\", \"spawn\" or \"forkserver\""
            ),
            Error::ContextAlreadySet => f.write_str(
                "the start method has already been set (pass force = true to change it)",
            ),
            Error::AlreadyStarted => f.write_str("processes can only be started once"),
            Error::NotStarted => f.write_str("the process has not been started"),
            Error::DaemonicChildren => {
                f.write_str("daemonic processes are not allowed to have children")
            }
            Error::EntryHookMissing => f.write_str(
                "the mp entry hook did not run in this binary: spawn and forkserver children \
                 cannot be diverted before main (is mp-process linked into the executable?)",
            ),
            Error::Bootstrapping => f.write_str(
                "this process was started as an mp child but its bootstrap did not run; \
                 refusing to start more processes (the entry hook is missing)",
            ),
            Error::PidfdUnsupported(e) => write!(
                f,
                "pidfds are unavailable ({e}): mp needs Linux 5.4 or later without a seccomp \
                 filter that blocks pidfd_open"
            ),
            Error::WrongProcess { creator, current } => write!(
                f,
                "this object belongs to process {creator} and cannot be used from process {current}"
            ),
            Error::ForkOnly => f.write_str(
                "a capturing closure can only run in a forked child; use Process::new with a fn \
                 and serde arguments for spawn and forkserver",
            ),
            Error::ForkserverLost => {
                f.write_str("the forkserver exited before reporting the child's exit status")
            }
            Error::Forkserver(msg) => write!(f, "the forkserver refused the request: {msg}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } | Error::PidfdUnsupported(source) => Some(source),
            Error::Wire(e) => Some(e),
            _ => None,
        }
    }
}

impl From<WireError> for Error {
    fn from(e: WireError) -> Self {
        Error::Wire(e)
    }
}
