//! The error types of `mp-sync`: [`Error`] for everything, and [`LockError`], which hands the
//! guard back when the previous holder of a lock died.

use std::fmt;
use std::io;

/// Everything that can go wrong with a primitive of `mp-sync`.
///
/// The variants a Python user knows keep Python's names: [`BrokenBarrier`](Error::BrokenBarrier)
/// is `threading.BrokenBarrierError`; [`NotHeld`](Error::NotHeld) and
/// [`TooManyReleases`](Error::TooManyReleases) are the `ValueError`/`RuntimeError`/
/// `AssertionError` Python raises for a lock released too often or by the wrong thread.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The shared memory of a primitive could not be created.
    SharedMemory(mp_shm::Error),
    /// A system call failed; `op` says which operation.
    Io {
        /// What mp-sync was doing.
        op: &'static str,
        /// The operating system's error.
        source: io::Error,
    },
    /// The previous holder of the lock died (its process was killed, or its thread exited)
    /// while holding it. The lock was handed over and is consistent again, but the data it
    /// protects may be half-updated. [`LockError::OwnerDied`] carries the guard; this variant
    /// is what remains once the guard is dropped (through `?` or `From`).
    OwnerDied,
    /// Release of a lock this thread does not hold: it is free, another thread or process
    /// holds it, or this thread holds it only through a guard (guards release themselves).
    /// Python raises `ValueError("semaphore or lock released too many times")` for an unheld
    /// `Lock`; a `Lock` held by another thread or process can be released in Python but not
    /// here.
    NotHeld,
    /// Acquiring a `Lock` this thread already holds: it would wait for itself forever
    /// (Python would deadlock; use an `RLock` to acquire recursively).
    AlreadyHeld,
    /// A `BoundedSemaphore` released above its initial value, a semaphore above
    /// [`SEM_VALUE_MAX`](crate::SEM_VALUE_MAX), or an `RLock` released more times than it was
    /// acquired (Python: "semaphore or lock released too many times").
    TooManyReleases,
    /// The barrier is broken (aborted, reset while waiting, a waiter timed out, or a process
    /// died inside it): Python's `BrokenBarrierError`.
    BrokenBarrier,
    /// More threads wait on a `Condition` or `Barrier` at once than it has slots for.
    TooManyWaiters {
        /// The number of slots.
        max: usize,
    },
    /// A `Value` or `Array` guard of this thread is alive on the lock, so the operation (a
    /// second guard, a copy, or a `Condition` wait that would release the lock) would alias
    /// its `&mut` borrow.
    Borrowed,
    /// An index past the end of an `Array` (Python's `IndexError`).
    IndexOutOfRange {
        /// The index asked for.
        index: usize,
        /// The number of items.
        len: usize,
    },
    /// An argument out of range, such as a barrier of 0 parties.
    InvalidArgument(&'static str),
    /// A shared segment does not hold what it should: it was overwritten, or something else
    /// was received in its place.
    Corrupt(&'static str),
}

impl Error {
    /// An [`Error::Io`] for `op`.
    pub(crate) fn io(op: &'static str, source: impl Into<io::Error>) -> Self {
        Error::Io { op, source: source.into() }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::SharedMemory(e) => write!(f, "cannot create the shared memory of a primitive: {e}"),
            Error::Io { op, source } => write!(f, "{op} failed: {source}"),
            Error::OwnerDied => f.write_str("the previous holder of the lock died holding it"),
            Error::NotHeld => f.write_str("release of a lock this thread does not hold"),
            Error::AlreadyHeld => {
                f.write_str("this thread already holds the lock: acquiring it would deadlock")
            }
            Error::TooManyReleases => f.write_str("semaphore or lock released too many times"),
            Error::BrokenBarrier => f.write_str("the barrier is broken"),
            Error::TooManyWaiters { max } => {
                write!(f, "too many waiters: at most {max} threads can wait at once")
            }
            Error::Borrowed => f.write_str(
                "a Value or Array guard of this thread holds the lock: the operation would alias it",
            ),
            Error::IndexOutOfRange { index, len } => {
                write!(f, "index {index} out of range for an array of {len} items")
            }
            Error::InvalidArgument(what) => write!(f, "invalid argument: {what}"),
            Error::Corrupt(what) => write!(f, "corrupt shared segment: {what}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::SharedMemory(e) => Some(e),
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<mp_shm::Error> for Error {
    /// [`Error::SharedMemory`].
    fn from(e: mp_shm::Error) -> Self {
        Error::SharedMemory(e)
    }
}

/// The error of an acquisition: the previous holder died, or something failed.
///
/// Like [`std::sync::PoisonError`], [`OwnerDied`](LockError::OwnerDied) carries the guard:
/// the lock *was* acquired, and the caller decides whether the protected data can be trusted.
///
/// `?` turns it into an [`Error`] (or a `Box<dyn Error>`), dropping the guard and so
/// releasing the lock: [`Error::OwnerDied`] then reports the death. `LockError` itself does
/// not implement `std::error::Error`, so that these conversions can exist (a guard borrows its
/// lock and could not live in a boxed error); with `anyhow`, convert first:
/// `lock.acquire().map_err(mp_sync::Error::from)?`.
///
/// ```
/// use mp_sync::{Lock, LockError};
///
/// # fn main() -> Result<(), mp_sync::Error> {
/// let lock = Lock::new()?;
/// // Take the lock even if its previous holder died, after repairing the data:
/// let guard = match lock.acquire() {
///     Ok(guard) => guard,
///     Err(LockError::OwnerDied(guard)) => {
///         // ... check or repair what the lock protects ...
///         guard
///     }
///     Err(LockError::Failed(e)) => return Err(e),
/// };
/// drop(guard);
/// // Or treat a dead owner as an error, as `?` does:
/// let _guard = lock.acquire()?;
/// # Ok(())
/// # }
/// ```
pub enum LockError<G> {
    /// The previous holder died holding the lock. The lock is now held by this thread,
    /// through `G`, and marked consistent: it works normally from here on.
    OwnerDied(G),
    /// The acquisition failed; the lock is not held.
    Failed(Error),
}

impl<G> LockError<G> {
    /// The guard, if the lock was acquired from a dead holder; the error otherwise.
    ///
    /// `lock.acquire().or_else(LockError::into_guard)` acquires whether or not the previous
    /// holder died.
    pub fn into_guard(self) -> Result<G, Error> {
        match self {
            LockError::OwnerDied(g) => Ok(g),
            LockError::Failed(e) => Err(e),
        }
    }

    /// Whether the lock was acquired from a dead holder.
    pub fn owner_died(&self) -> bool {
        matches!(self, LockError::OwnerDied(_))
    }

    /// Applies `f` to the guard of an [`OwnerDied`](LockError::OwnerDied).
    pub fn map<H>(self, f: impl FnOnce(G) -> H) -> LockError<H> {
        match self {
            LockError::OwnerDied(g) => LockError::OwnerDied(f(g)),
            LockError::Failed(e) => LockError::Failed(e),
        }
    }
}

impl<G> From<Error> for LockError<G> {
    fn from(e: Error) -> Self {
        LockError::Failed(e)
    }
}

impl<G> From<LockError<G>> for Error {
    /// Drops the guard of an `OwnerDied` (releasing the lock) and keeps the reason.
    fn from(e: LockError<G>) -> Self {
        match e {
            LockError::OwnerDied(_) => Error::OwnerDied,
            LockError::Failed(e) => e,
        }
    }
}

impl<G> fmt::Debug for LockError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockError::OwnerDied(_) => f.write_str("OwnerDied(..)"),
            LockError::Failed(e) => f.debug_tuple("Failed").field(e).finish(),
        }
    }
}

impl<G> fmt::Display for LockError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockError::OwnerDied(_) => fmt::Display::fmt(&Error::OwnerDied, f),
            LockError::Failed(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl<G> From<LockError<G>> for Box<dyn std::error::Error> {
    /// Drops the guard of an `OwnerDied` (releasing the lock): `?` works in functions that
    /// return `Box<dyn Error>`.
    fn from(e: LockError<G>) -> Self {
        Box::new(Error::from(e))
    }
}

impl<G> From<LockError<G>> for Box<dyn std::error::Error + Send + Sync> {
    /// As the conversion into `Box<dyn Error>`.
    fn from(e: LockError<G>) -> Self {
        Box::new(Error::from(e))
    }
}

/// The result of a blocking acquisition: the guard, or a [`LockError`].
pub type LockResult<G> = Result<G, LockError<G>>;

/// The result of a non-blocking or timed acquisition: `Ok(None)` if the lock was not taken.
pub type TryLockResult<G> = Result<Option<G>, LockError<G>>;
