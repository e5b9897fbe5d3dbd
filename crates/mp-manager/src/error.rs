//! The error type of `mp-manager`.

use std::fmt;
use std::io;

use mp_process::wire::WireError;
use serde::{Deserialize, Serialize};

/// The result type of `mp-manager`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error raised in the manager's process by a call on one of its objects: Python's
/// `RemoteError` and the exceptions a manager re-raises, with their kind and message.
///
/// `kind` is the name Python gives the exception (`"KeyError"`, `"IndexError"`,
/// `"ValueError"`, `"AttributeError"`, `"TypeError"`) or, for what Python has no exception for,
/// mp's own: `"NotExposed"` (a method the object's type does not expose), `"NoSuchObject"` (an
/// object id the manager does not know, or no longer), `"Refused"` (a request the manager
/// would not run), `"Panic"` (a function run in the manager panicked), `"BadRequest"` (bytes
/// that are not a request).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteError {
    /// The kind of the error, as Python names its exception.
    pub kind: String,
    /// What went wrong, in the manager's words.
    pub message: String,
}

impl RemoteError {
    /// An error of `kind` saying `message`.
    pub fn new(kind: &str, message: impl Into<String>) -> RemoteError {
        RemoteError { kind: kind.to_string(), message: message.into() }
    }
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for RemoteError {}

/// Everything that can go wrong with a manager or a proxy.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The call ran in the manager and failed there (see [`RemoteError`]).
    Remote(RemoteError),
    /// The manager's process is gone (it was shut down, killed, or it exited): no call can
    /// reach it. Every blocked call on a proxy returns this when the manager dies.
    ManagerGone,
    /// [`Manager::start`](crate::Manager::start) on a manager that already started (Python:
    /// "Already started server").
    AlreadyStarted,
    /// The manager was shut down: it makes no more objects.
    ShutDown,
    /// The operation is the owner's, and this handle reached the manager with
    /// [`Manager::connect`](crate::Manager::connect) (Python's connected managers have no
    /// process to join).
    NotOwner,
    /// A non-blocking or timed `get` found the queue empty (Python's `queue.Empty`).
    Empty,
    /// A non-blocking or timed `put` found the queue full (Python's `queue.Full`).
    Full,
    /// A timed wait ran out of time.
    Timeout,
    /// A barrier was broken while or before a party waited (Python's `BrokenBarrierError`).
    BrokenBarrier,
    /// The manager's process could not be started or stopped.
    Process(mp_process::Error),
    /// A connection to the manager failed in a way that is not simply its end.
    Connection(mp_queue::Error),
    /// A value could not be encoded or decoded (a reply that does not decode as the type the
    /// proxy expects, a value holding something that cannot cross, a message too large).
    Wire(WireError),
    /// A shared-memory segment could not be made
    /// ([`SharedMemoryManager`](crate::SharedMemoryManager)).
    SharedMemory(mp_shm::Error),
    /// A system call failed; `op` says which operation.
    Io {
        /// What mp was doing.
        op: &'static str,
        /// The operating system's error.
        source: io::Error,
    },
}

impl Error {
    /// An `Io` error for `op` from a rustix `Errno`.
    pub(crate) fn io(op: &'static str, e: rustix::io::Errno) -> Error {
        Error::Io { op, source: e.into() }
    }

    /// The remote error, if this is one.
    pub fn remote(&self) -> Option<&RemoteError> {
        match self {
            Error::Remote(r) => Some(r),
            _ => None,
        }
    }

    /// Whether this is a remote error of `kind` (`"KeyError"`, `"IndexError"`, ...).
    pub fn is_remote(&self, kind: &str) -> bool {
        self.remote().is_some_and(|r| r.kind == kind)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Remote(r) => write!(f, "the manager raised {r}"),
            Error::ManagerGone => f.write_str("the manager's process is gone"),
            Error::AlreadyStarted => f.write_str("the manager was already started"),
            Error::ShutDown => f.write_str("the manager was shut down"),
            Error::NotOwner => f.write_str(
                "this handle connected to the manager: only the process that started it may do this",
            ),
            Error::Empty => f.write_str("the queue is empty"),
            Error::Full => f.write_str("the queue is full"),
            Error::Timeout => f.write_str("timed out"),
            Error::BrokenBarrier => f.write_str("the barrier is broken"),
            Error::Process(e) => write!(f, "the manager's process: {e}"),
            Error::Connection(e) => write!(f, "a connection to the manager: {e}"),
            Error::Wire(e) => write!(f, "{e}"),
            Error::SharedMemory(e) => write!(f, "shared memory: {e}"),
            Error::Io { op, source } => write!(f, "{op}: {source}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Remote(r) => Some(r),
            Error::Process(e) => Some(e),
            Error::Connection(e) => Some(e),
            Error::Wire(e) => Some(e),
            Error::SharedMemory(e) => Some(e),
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<RemoteError> for Error {
    fn from(e: RemoteError) -> Error {
        match e.kind.as_str() {
            "Empty" => Error::Empty,
            "Full" => Error::Full,
            "Timeout" => Error::Timeout,
            "BrokenBarrier" => Error::BrokenBarrier,
            _ => Error::Remote(e),
        }
    }
}

impl From<mp_process::Error> for Error {
    fn from(e: mp_process::Error) -> Error {
        Error::Process(e)
    }
}

impl From<WireError> for Error {
    fn from(e: WireError) -> Error {
        Error::Wire(e)
    }
}

impl From<mp_queue::Error> for Error {
    /// The end of a connection to the manager is the manager's end.
    fn from(e: mp_queue::Error) -> Error {
        match e {
            mp_queue::Error::Eof | mp_queue::Error::Broken => Error::ManagerGone,
            mp_queue::Error::Io { source, .. }
                if matches!(
                    source.raw_os_error(),
                    Some(libc_epipe) if libc_epipe == rustix::io::Errno::PIPE.raw_os_error()
                        || libc_epipe == rustix::io::Errno::CONNRESET.raw_os_error()
                ) =>
            {
                Error::ManagerGone
            }
            other => Error::Connection(other),
        }
    }
}
