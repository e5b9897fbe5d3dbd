//! The error type of `mp-shm`.

use std::fmt;
use std::io;

/// Everything that can go wrong when creating, attaching, passing or accessing shared memory.
///
/// The variants mirror the exceptions Python's `multiprocessing.shared_memory` raises:
/// [`InvalidSize`](Error::InvalidSize) and [`InvalidName`](Error::InvalidName) are its
/// `ValueError`s, [`Exists`](Error::Exists) its `FileExistsError`,
/// [`NotFound`](Error::NotFound) its `FileNotFoundError`, and
/// [`IndexOutOfRange`](Error::IndexOutOfRange) the `IndexError` of a `ShareableList`.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A segment of this size cannot be created: the size is 0 (Python: "'size' must be a
    /// positive number different from zero"), too large for the address space, or a segment
    /// attached by name is empty.
    InvalidSize(usize),
    /// A segment name is empty, too long, `.` or `..`, or holds a NUL or a `/`.
    InvalidName(String),
    /// A segment with this name already exists (Python's `FileExistsError`).
    Exists(String),
    /// No segment has this name (Python's `FileNotFoundError`), for example after it was
    /// unlinked.
    NotFound(String),
    /// A system call failed; `op` says which operation.
    Io {
        /// What mp was doing.
        op: &'static str,
        /// The operating system's error.
        source: io::Error,
    },
    /// An access reaches outside the segment: `len` bytes at `offset` in a segment of `size`
    /// bytes (the same variant as `mp_queue::Error::OutOfRange`, for a buffer).
    OutOfRange {
        /// The first byte of the access.
        offset: usize,
        /// The length of the access in bytes.
        len: usize,
        /// The size of the segment in bytes.
        size: usize,
    },
    /// An atomic access at an offset that is not a multiple of the atomic's alignment.
    Misaligned {
        /// The offset asked for.
        offset: usize,
        /// The alignment the access needs.
        align: usize,
    },
    /// An index past the end of a `RawArray` or `ShareableList` (Python's `IndexError`).
    IndexOutOfRange {
        /// The index asked for.
        index: usize,
        /// The number of items.
        len: usize,
    },
    /// A slice whose length differs from the array's (Python: "Can only assign sequence of
    /// same size").
    LengthMismatch {
        /// The number of items the array holds.
        expected: usize,
        /// The number of items given.
        got: usize,
    },
    /// A `str` or `bytes` value longer than its `ShareableList` slot (Python: "bytes/str item
    /// exceeds available storage").
    TooLong {
        /// The length of the value in bytes.
        len: usize,
        /// The capacity of the slot in bytes.
        capacity: usize,
    },
    /// A received descriptor was refused before it was mapped: it is not a regular file or
    /// memfd, it is smaller than the size it was sent with, or an anonymous segment lacks its
    /// seals against resizing.
    InvalidSegment(String),
    /// The content of a `ShareableList` (or of another structure read out of shared memory)
    /// is not valid: a bad magic number, kind tag, length, offset or UTF-8 string.
    Corrupt(String),
    /// The tracker that unlinks the named segments of crashed processes could not record a
    /// new segment (an error of `mp-process`, which runs the tracker); the segment was
    /// unlinked again.
    Process(mp_process::Error),
}

impl Error {
    /// Wraps a system error with the operation that failed.
    pub(crate) fn io(op: &'static str, source: impl Into<io::Error>) -> Self {
        Error::Io { op, source: source.into() }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidSize(0) => {
                f.write_str("'size' must be a positive number different from zero")
            }
            Error::InvalidSize(size) => write!(f, "invalid shared memory size {size}"),
            Error::InvalidName(name) => write!(
                f,
                "invalid shared memory name {name:?}: it must be 1 to 254 bytes without NUL or '/'"
            ),
            Error::Exists(name) => write!(f, "shared memory segment {name:?} already exists"),
            Error::NotFound(name) => write!(f, "no shared memory segment named {name:?}"),
            Error::Io { op, source } => write!(f, "{op} failed: {source}"),
            Error::OutOfRange { offset, len, size } => write!(
                f,
                "access of {len} bytes at offset {offset} is outside the segment of {size} bytes"
            ),
            Error::Misaligned { offset, align } => {
                write!(f, "offset {offset} is not a multiple of the alignment {align}")
            }
            Error::IndexOutOfRange { index, len } => {
                write!(f, "index {index} out of range for length {len}")
            }
            Error::LengthMismatch { expected, got } => write!(
                f,
                "can only assign a sequence of the same size: expected {expected} items, got {got}"
            ),
            Error::TooLong { len, capacity } => write!(
                f,
                "bytes/str item of {len} bytes exceeds the available storage of {capacity} bytes"
            ),
            Error::InvalidSegment(why) => write!(f, "refused a shared memory descriptor: {why}"),
            Error::Corrupt(why) => write!(f, "corrupt shared memory content: {why}"),
            Error::Process(e) => write!(f, "the shared memory tracker failed: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::Process(e) => Some(e),
            _ => None,
        }
    }
}

impl From<mp_process::Error> for Error {
    /// [`Error::Process`].
    fn from(e: mp_process::Error) -> Self {
        Error::Process(e)
    }
}

/// The result type of `mp-shm`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
