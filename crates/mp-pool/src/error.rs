//! The error type of `mp-pool`.

use std::fmt;
use std::io;

use mp_process::wire::WireError;

/// Everything a pool or one of its tasks can report.
///
/// Task-level variants (`Remote`, `WorkerDied`, `Timeout`, `Serialization`) describe one
/// task; the others describe the pool.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The task panicked in its worker: the panic message and the worker's backtrace
    /// (Python's remote traceback).
    Remote {
        /// The panic message.
        message: String,
        /// The backtrace captured in the worker where the task panicked.
        traceback: String,
    },
    /// The worker running the task died (SIGKILL, abort, OOM, `exit`) before it finished.
    WorkerDied {
        /// The worker's pid.
        pid: u32,
        /// The signal that killed it, if a signal did.
        signal: Option<i32>,
        /// Its exit status in Python's form (minus the signal number when killed), if known.
        exitcode: Option<i32>,
    },
    /// The task ran past the pool's task timeout; its worker was killed and replaced. Also
    /// [`AsyncResult::get_timeout`](crate::AsyncResult::get_timeout) when the result is not
    /// ready in time (the task keeps running then).
    Timeout,
    /// The task's arguments or result could not be serialised or deserialised; the message
    /// says why.
    Serialization(String),
    /// The pool was terminated (or dropped) before the task finished.
    Terminated,
    /// The workers were interrupted (SIGINT, Ctrl-C): every outstanding task fails with this
    /// and the pool stops.
    Interrupted,
    /// The pool is closed (or terminated): it takes no new tasks.
    Closed,
    /// `join` was called on a pool that is neither closed nor terminated.
    StillRunning,
    /// The pool was used from a process other than the one that made it.
    WrongProcess {
        /// The pid of the process that made the pool.
        creator: u32,
        /// The pid of the calling process.
        current: u32,
    },
    /// The initializer panicked in a worker; the pool stops and every task fails with this.
    Initializer(String),
    /// The input iterator of an `imap` panicked (with this message) while the next item was
    /// pulled: the result in that item's place is this error, after the results of the items
    /// before it, and the iterator ends (CPython yields the iterable's exception in its turn).
    Input(String),
    /// An invalid setting: zero processes, zero `maxtasksperchild`, a zero timeout, ...
    InvalidArgument(&'static str),
    /// Starting a worker failed.
    Process(mp_process::Error),
    /// A system call failed; `op` says which operation.
    Io {
        /// What the pool was doing.
        op: &'static str,
        /// The operating system's error.
        source: io::Error,
    },
}

impl Error {
    pub(crate) fn io(op: &'static str, source: impl Into<io::Error>) -> Self {
        Error::Io { op, source: source.into() }
    }

    /// A copy of this error, for handing the same outcome to a callback and to the caller.
    /// Errors carrying a source (`Io`, `Process`) keep only their message.
    pub(crate) fn duplicate(&self) -> Error {
        match self {
            Error::Remote { message, traceback } => {
                Error::Remote { message: message.clone(), traceback: traceback.clone() }
            }
            Error::WorkerDied { pid, signal, exitcode } => {
                Error::WorkerDied { pid: *pid, signal: *signal, exitcode: *exitcode }
            }
            Error::Timeout => Error::Timeout,
            Error::Serialization(m) => Error::Serialization(m.clone()),
            Error::Terminated => Error::Terminated,
            Error::Interrupted => Error::Interrupted,
            Error::Closed => Error::Closed,
            Error::StillRunning => Error::StillRunning,
            Error::WrongProcess { creator, current } => {
                Error::WrongProcess { creator: *creator, current: *current }
            }
            Error::Initializer(m) => Error::Initializer(m.clone()),
            Error::Input(m) => Error::Input(m.clone()),
            Error::InvalidArgument(m) => Error::InvalidArgument(m),
            Error::Process(e) => Error::io("start a worker", io::Error::other(e.to_string())),
            Error::Io { op, source } => {
                Error::Io { op, source: io::Error::new(source.kind(), source.to_string()) }
            }
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Remote { message, .. } => {
                write!(f, "the task panicked in its worker: {message}")
            }
            Error::WorkerDied { pid, signal: Some(s), .. } => {
                write!(f, "the worker (pid {pid}) running the task was killed by signal {s}")
            }
            Error::WorkerDied { pid, exitcode: Some(c), .. } => {
                write!(f, "the worker (pid {pid}) running the task exited with {c}")
            }
            Error::WorkerDied { pid, .. } => {
                write!(f, "the worker (pid {pid}) running the task died")
            }
            Error::Timeout => f.write_str("timed out"),
            Error::Serialization(m) => {
                write!(f, "a task's arguments or result did not serialise: {m}")
            }
            Error::Terminated => f.write_str("the pool was terminated before the task finished"),
            Error::Interrupted => f.write_str("the pool's workers were interrupted (SIGINT)"),
            Error::Closed => f.write_str("the pool is closed"),
            Error::StillRunning => {
                f.write_str("the pool is still running: close or terminate it first")
            }
            Error::WrongProcess { creator, current } => write!(
                f,
                "the pool belongs to process {creator} and cannot be used from process {current}"
            ),
            Error::Initializer(m) => write!(f, "the pool's initializer panicked: {m}"),
            Error::Input(m) => write!(f, "the input iterator panicked: {m}"),
            Error::InvalidArgument(m) => write!(f, "invalid argument: {m}"),
            Error::Process(e) => write!(f, "cannot start a worker: {e}"),
            Error::Io { op, source } => write!(f, "{op}: {source}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Process(e) => Some(e),
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<mp_process::Error> for Error {
    fn from(e: mp_process::Error) -> Self {
        Error::Process(e)
    }
}

/// A failure of the socket or of the descriptors beside it is `Io`; one of the bytes is
/// `Serialization`.
impl From<WireError> for Error {
    fn from(e: WireError) -> Self {
        match e {
            WireError::Io(source) => Error::Io { op: "send or receive a frame", source },
            e @ WireError::FdsDropped { .. } => {
                Error::Io { op: "receive descriptors", source: io::Error::other(e.to_string()) }
            }
            e => Error::Serialization(e.to_string()),
        }
    }
}

/// The result type of `mp-pool`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The message of a caught panic.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "Box<dyn Any>".to_string()
    }
}
