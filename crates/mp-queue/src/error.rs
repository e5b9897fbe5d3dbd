//! The error type of `mp-queue`.

use std::fmt;
use std::io;

use mp_process::wire::WireError;

/// The result type of `mp-queue`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong with a pipe, a connection or a wait.
///
/// The variants mirror what Python's `multiprocessing.connection` raises:
/// [`Eof`](Error::Eof) is its `EOFError`, [`BufferTooShort`](Error::BufferTooShort) its
/// `BufferTooShort` (carrying the whole message, as Python's does), [`Closed`](Error::Closed),
/// [`ReadOnly`](Error::ReadOnly), [`WriteOnly`](Error::WriteOnly) and
/// [`BadMessageLength`](Error::BadMessageLength) its `OSError`s, and
/// [`OutOfRange`](Error::OutOfRange) its `ValueError`s about offsets and sizes.
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
    /// A message could not be encoded or decoded, was larger than the connection's maximum
    /// message size, or arrived malformed (a corrupt or truncated frame). After a malformed
    /// frame the connection refuses further receives with [`Error::Broken`]; drop it.
    Wire(WireError),
    /// The other end closed the connection: no message will come (Python's `EOFError`).
    Eof,
    /// This connection was closed with [`Connection::close`](crate::Connection::close)
    /// (Python: "handle is closed").
    Closed,
    /// A message was sent on the reading end of a one-way pipe (Python: "connection is
    /// read-only").
    ReadOnly,
    /// A message was received or polled for on the writing end of a one-way pipe (Python:
    /// "connection is write-only").
    WriteOnly,
    /// `recv_bytes(Some(maxlength))` met a longer message (Python: "bad message length"). As
    /// in Python the message is not consumed and the connection can no longer be read; it
    /// can still send if it is duplex.
    BadMessageLength {
        /// The length of the message that arrived, in bytes.
        len: u64,
        /// The most the caller accepted.
        maxlength: usize,
    },
    /// `recv_bytes_into` received a message longer than the room left in the buffer. The
    /// message was consumed and is here, whole.
    BufferTooShort {
        /// The message that did not fit.
        message: Vec<u8>,
        /// The room the buffer had after the offset, in bytes.
        room: usize,
    },
    /// An offset, or an offset plus a length, lies past the end of the buffer (Python:
    /// "buffer length < offset", "buffer length < offset + size", "offset too large"). The
    /// same variant as `mp_shm::Error::OutOfRange`, for a segment.
    OutOfRange {
        /// The offset asked for.
        offset: usize,
        /// The length asked for (Python's `size` argument), if one was given.
        len: Option<usize>,
        /// The size of the buffer in bytes.
        size: usize,
    },
    /// An earlier receive stopped in the middle of a message (a malformed or oversized frame,
    /// a message longer than `maxlength`, or a failed read), so the stream position is lost:
    /// this end can no longer receive. Drop the connection.
    Broken,
    /// A non-blocking or timed `get` found the queue empty (Python's `queue.Empty`).
    Empty,
    /// A non-blocking or timed `put` found no room (Python's `queue.Full`). `put` itself
    /// returns [`PutError::Full`](crate::PutError::Full) with the value; this is what remains
    /// of it after `?`.
    Full,
    /// `task_done` was called more times than items were put (Python: `ValueError("task_done()
    /// called too many times")`).
    TooManyTaskDone,
    /// A queue's shared memory holds something its protocol cannot have written (memory
    /// written by other means, or a forged segment); what was in the queue is dropped.
    Corrupt(String),
    /// A value's `Serialize` implementation wrote a different encoding the second time it
    /// ran (queues measure a message before encoding it in place).
    Unstable,
    /// A queue's lock or futex wait failed (an error of `mp-sync`).
    Sync(mp_sync::Error),
    /// A queue's or pipe's shared memory could not be created or mapped (an error of
    /// `mp-shm`).
    SharedMemory(mp_shm::Error),
    /// An argument is out of range, such as a ring capacity that is not a power of two.
    InvalidArgument(&'static str),
    /// The handshake of a `Listener`/`Client` connection failed: the peer does not hold the
    /// key, or does not speak the protocol (Python's `AuthenticationError`). The text says
    /// which, as CPython's messages do (`"digest received was wrong"` on the side that
    /// checked, `"digest sent was rejected"` on the side that answered).
    Authentication(String),
}

impl Error {
    /// An `Io` error for the operation `op`.
    pub(crate) fn io(op: &'static str, source: impl Into<io::Error>) -> Self {
        Error::Io { op, source: source.into() }
    }

    /// The message a [`BufferTooShort`](Error::BufferTooShort) error carries, if this is one.
    pub fn into_message(self) -> Option<Vec<u8>> {
        match self {
            Error::BufferTooShort { message, .. } => Some(message),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { op, source } => write!(f, "{op} failed: {source}"),
            Error::Wire(e) => write!(f, "message error: {e}"),
            Error::Eof => f.write_str("end of file: the other end of the connection is closed"),
            Error::Closed => f.write_str("the connection or queue is closed"),
            Error::ReadOnly => f.write_str("connection is read-only"),
            Error::WriteOnly => f.write_str("connection is write-only"),
            Error::BadMessageLength { len, maxlength } => write!(
                f,
                "bad message length: a message of {len} bytes exceeds maxlength {maxlength}; \
                 the connection can no longer receive"
            ),
            Error::BufferTooShort { message, room } => write!(
                f,
                "buffer too short: a message of {} bytes does not fit in the {room} bytes \
                 after the offset (the error carries the message)",
                message.len()
            ),
            Error::OutOfRange { offset, len: None, size } => {
                write!(f, "offset {offset} lies past the end of a buffer of {size} bytes")
            }
            Error::OutOfRange { offset, len: Some(len), size } => write!(
                f,
                "offset {offset} + size {len} lies past the end of a buffer of {size} bytes"
            ),
            Error::Broken => f.write_str(
                "the connection can no longer receive: an earlier receive stopped in the \
                 middle of a message (drop the connection)",
            ),
            Error::Empty => f.write_str("the queue is empty"),
            Error::Full => f.write_str("the queue is full"),
            Error::TooManyTaskDone => f.write_str("task_done() called too many times"),
            Error::Corrupt(what) => write!(f, "corrupt queue: {what}"),
            Error::Unstable => f.write_str(
                "a value serialised to a different length the second time (queues encode \
                 each message twice: to measure it, then in place)",
            ),
            Error::Sync(e) => write!(f, "a queue's lock failed: {e}"),
            Error::SharedMemory(e) => write!(f, "a queue's shared memory could not be set up: {e}"),
            Error::InvalidArgument(what) => write!(f, "invalid argument: {what}"),
            Error::Authentication(why) => write!(f, "authentication failed: {why}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::Wire(e) => Some(e),
            Error::Sync(e) => Some(e),
            Error::SharedMemory(e) => Some(e),
            _ => None,
        }
    }
}

impl From<WireError> for Error {
    fn from(e: WireError) -> Self {
        Error::Wire(e)
    }
}

impl From<mp_sync::Error> for Error {
    /// [`Error::Sync`].
    fn from(e: mp_sync::Error) -> Self {
        Error::Sync(e)
    }
}

impl From<mp_shm::Error> for Error {
    /// [`Error::SharedMemory`].
    fn from(e: mp_shm::Error) -> Self {
        Error::SharedMemory(e)
    }
}
