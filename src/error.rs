//! [`Error`]: one error for every `mp` call, whichever crate it comes from.

use std::fmt;
use std::io;

/// Everything a call into `mp` can report: the error of the crate that failed, kept whole.
///
/// Every crate's error converts into it, so `?` works in a function returning
/// [`mp::Result`](crate::Result) for any mix of calls; [`source`](std::error::Error::source)
/// gives the crate's error (and its own source after it), and `Display` shows it, after the
/// crate's name. Match on the variant to act on a particular error:
///
/// ```
/// use std::time::Duration;
///
/// fn first_or_zero(q: &mp::Queue<u32>) -> mp::Result<u32> {
///     match q.get_timeout(Duration::from_millis(1)) {
///         Err(mp::QueueError::Empty) => Ok(0),
///         other => Ok(other?),
///     }
/// }
///
/// # fn main() -> mp::Result<()> {
/// let q = mp::Queue::new()?; // an mp_queue::Error converts
/// let lock = mp::Lock::new()?; // and an mp_sync::Error
/// let _guard = lock.acquire()?; // and a LockError (its guard dropped)
/// assert_eq!(first_or_zero(&q)?, 0);
/// q.put(7)?; // and a PutError (its value dropped)
/// assert_eq!(first_or_zero(&q)?, 7);
/// let e = mp::SharedMemory::new(0).unwrap_err();
/// let e = mp::Error::from(e);
/// assert!(matches!(e, mp::Error::SharedMemory(mp::ShmError::InvalidSize(0))));
/// # Ok(())
/// # }
/// ```
///
/// The conversions that drop something: [`PutError`](mp_queue::PutError) hands back the value
/// that was not put, and converting it drops the value (keep it with
/// [`PutError::into_inner`](mp_queue::PutError::into_inner) first when it matters);
/// [`LockError::OwnerDied`](mp_sync::LockError::OwnerDied) holds the guard of a lock whose
/// previous holder died, and converting it drops the guard, releasing the lock, as
/// `mp_sync::Error::from` does. A [`CloseError`](mp_process::CloseError) keeps its process.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// An error of `mp-process`: starting, waiting for or signalling a process, the start
    /// methods, the wire.
    Process(mp_process::Error),
    /// `Process::close` on a process still running (the process is inside).
    Close(mp_process::CloseError),
    /// An error of `mp-shm`: shared memory segments, raw values and arrays, shareable lists.
    SharedMemory(mp_shm::Error),
    /// An error of `mp-sync`: locks, semaphores, events, conditions, barriers, values.
    Sync(mp_sync::Error),
    /// An error of `mp-queue`: queues, pipes, connections, `wait`.
    Queue(mp_queue::Error),
    /// An error of `mp-pool`: the pool and its tasks.
    Pool(mp_pool::Error),
    /// An error of `mp-manager`: managers and proxies.
    Manager(mp_manager::Error),
    /// An error of `mp-mpi`: MPI itself (feature `mpi`).
    #[cfg(feature = "mpi")]
    Mpi(mp_mpi::Error),
    /// An error of the operating system or of `std`, met outside `mp` in the same function.
    Io(io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Process(e) => write!(f, "mp-process: {e}"),
            Error::Close(e) => write!(f, "mp-process: {e}"),
            Error::SharedMemory(e) => write!(f, "mp-shm: {e}"),
            Error::Sync(e) => write!(f, "mp-sync: {e}"),
            Error::Queue(e) => write!(f, "mp-queue: {e}"),
            Error::Pool(e) => write!(f, "mp-pool: {e}"),
            Error::Manager(e) => write!(f, "mp-manager: {e}"),
            #[cfg(feature = "mpi")]
            Error::Mpi(e) => write!(f, "mp-mpi: {e}"),
            Error::Io(e) => write!(f, "I/O error: {e}"),
        }
    }
}

impl std::error::Error for Error {
    /// The crate's error (or the `io::Error`).
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(match self {
            Error::Process(e) => e,
            Error::Close(e) => e,
            Error::SharedMemory(e) => e,
            Error::Sync(e) => e,
            Error::Queue(e) => e,
            Error::Pool(e) => e,
            Error::Manager(e) => e,
            #[cfg(feature = "mpi")]
            Error::Mpi(e) => e,
            Error::Io(e) => e,
        })
    }
}

/// `From<$inner> for Error`, as `Error::$variant`.
macro_rules! from_crate_error {
    ($($inner:ty => $variant:ident,)*) => {$(
        impl From<$inner> for Error {
            fn from(e: $inner) -> Self {
                Error::$variant(e)
            }
        }
    )*};
}

from_crate_error! {
    mp_process::Error => Process,
    mp_process::CloseError => Close,
    mp_shm::Error => SharedMemory,
    mp_sync::Error => Sync,
    mp_queue::Error => Queue,
    mp_pool::Error => Pool,
    mp_manager::Error => Manager,
    io::Error => Io,
}

#[cfg(feature = "mpi")]
from_crate_error! {
    mp_mpi::Error => Mpi,
}

impl From<mp_process::wire::WireError> for Error {
    /// [`Error::Process`] holding `mp_process::Error::Wire`: the wire is `mp-process`'s.
    fn from(e: mp_process::wire::WireError) -> Self {
        Error::Process(mp_process::Error::Wire(e))
    }
}

impl<G> From<mp_sync::LockError<G>> for Error {
    /// [`Error::Sync`]: `OwnerDied` drops the guard (releasing the lock) and becomes
    /// `mp_sync::Error::OwnerDied`, as `mp_sync::Error::from` does.
    fn from(e: mp_sync::LockError<G>) -> Self {
        Error::Sync(mp_sync::Error::from(e))
    }
}

impl<T> From<mp_queue::PutError<T>> for Error {
    /// [`Error::Queue`], dropping the value that was not put: `Full`, `Closed` or the cause
    /// of a failed put, as [`PutError::into_error`](mp_queue::PutError::into_error).
    fn from(e: mp_queue::PutError<T>) -> Self {
        Error::Queue(e.into_error())
    }
}

/// The result type of `mp`: `Result<T, mp::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
