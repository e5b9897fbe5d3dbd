//! The error type of `mp-pool`.

use std::fmt;
use std::io;
use std::sync::Arc;

use mp_process::wire::WireError;

/// Everything a pool or one of its tasks can report.
///
/// Task-level variants (`Remote`, `WorkerDied`, `Timeout`, `Serialization`) describe one
/// task; the others describe the pool.
///
/// Errors of the crates below are kept whole, never flattened to their message: `Process`,
/// `SharedMemory`, `Io` and a `Serialization` that happened in this process return them from
/// [`source`](std::error::Error::source). A pool hands the same outcome to a result's callback
/// and to its caller, so the errors of other crates it holds are shared (`Arc`).
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
    /// The task's arguments or result could not be serialised or deserialised: the message
    /// says why, and [`source`](std::error::Error::source) gives the `WireError` when it
    /// happened in this process (a worker's failure arrives as its message).
    Serialization(SerializationError),
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
    /// The pool's engine ([`engine`](crate::engine)) cannot go on: its workers are gone, or
    /// its messages fail. The pool stops and every task fails with this.
    Engine(String),
    /// Starting a worker failed (an error of `mp-process`).
    Process(Arc<mp_process::Error>),
    /// A worker's shared memory could not be created (an error of `mp-shm`).
    SharedMemory(Arc<mp_shm::Error>),
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

    /// A [`Serialization`](Error::Serialization) error known only by its message: one a
    /// worker reported, or a check of the pool's own.
    pub(crate) fn serialization(message: String) -> Self {
        Error::Serialization(SerializationError { message, source: None })
    }

    /// A copy of this error, for handing the same outcome to a callback and to the caller.
    /// Wrapped errors are shared; an `Io` error is copied (its OS error code, or its kind and
    /// message).
    pub(crate) fn duplicate(&self) -> Error {
        match self {
            Error::Remote { message, traceback } => {
                Error::Remote { message: message.clone(), traceback: traceback.clone() }
            }
            Error::WorkerDied { pid, signal, exitcode } => {
                Error::WorkerDied { pid: *pid, signal: *signal, exitcode: *exitcode }
            }
            Error::Timeout => Error::Timeout,
            Error::Serialization(e) => Error::Serialization(e.clone()),
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
            Error::Engine(m) => Error::Engine(m.clone()),
            Error::Process(e) => Error::Process(Arc::clone(e)),
            Error::SharedMemory(e) => Error::SharedMemory(Arc::clone(e)),
            Error::Io { op, source } => Error::Io {
                op,
                source: match source.raw_os_error() {
                    Some(code) => io::Error::from_raw_os_error(code),
                    None => io::Error::new(source.kind(), source.to_string()),
                },
            },
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
            Error::Serialization(e) => {
                write!(f, "a task's arguments or result did not serialise: {e}")
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
            Error::Engine(m) => write!(f, "the pool's engine stopped: {m}"),
            Error::Process(e) => write!(f, "cannot start a worker: {e}"),
            Error::SharedMemory(e) => write!(f, "cannot set up a worker's shared memory: {e}"),
            Error::Io { op, source } => write!(f, "{op}: {source}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Process(e) => Some(&**e),
            Error::SharedMemory(e) => Some(&**e),
            Error::Io { source, .. } => Some(source),
            Error::Serialization(e) => e.wire_error().map(|w| w as _),
            _ => None,
        }
    }
}

impl From<mp_process::Error> for Error {
    /// [`Error::Process`].
    fn from(e: mp_process::Error) -> Self {
        Error::Process(Arc::new(e))
    }
}

impl From<mp_shm::Error> for Error {
    /// [`Error::SharedMemory`].
    fn from(e: mp_shm::Error) -> Self {
        Error::SharedMemory(Arc::new(e))
    }
}

/// A failure of the socket is `Io`, and so is one of the descriptors beside it (the
/// `WireError` inside the `io::Error`); one of the bytes is `Serialization`, carrying the
/// `WireError`.
impl From<WireError> for Error {
    fn from(e: WireError) -> Self {
        match e {
            WireError::Io(source) => Error::Io { op: "send or receive a frame", source },
            e @ WireError::FdsDropped { .. } => {
                Error::Io { op: "receive descriptors", source: io::Error::other(e) }
            }
            e => Error::Serialization(SerializationError::from(e)),
        }
    }
}

/// Why a task's arguments or result did not serialise: the payload of
/// [`Error::Serialization`].
///
/// A failure in this process (encoding arguments, decoding a result) keeps its
/// [`WireError`](mp_process::wire::WireError), which [`source`](std::error::Error::source)
/// returns; a failure in a worker arrives as its message only.
#[derive(Debug, Clone)]
pub struct SerializationError {
    /// What went wrong, in words.
    message: String,
    /// The error, when it happened in this process.
    source: Option<Arc<WireError>>,
}

impl SerializationError {
    /// What went wrong, in words (the value's own message when its `Serialize` or
    /// `Deserialize` failed with one).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The error of the wire, when the failure happened in this process.
    pub fn wire_error(&self) -> Option<&WireError> {
        self.source.as_deref()
    }
}

impl From<WireError> for SerializationError {
    fn from(e: WireError) -> Self {
        SerializationError { message: e.to_string(), source: Some(Arc::new(e)) }
    }
}

impl fmt::Display for SerializationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SerializationError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.wire_error().map(|w| w as _)
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
