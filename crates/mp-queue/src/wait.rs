//! `wait`: Python's `multiprocessing.connection.wait` over anything with a descriptor.

use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use crate::error::{Error, Result};

/// Waits until some of `objects` are ready and returns their indices, in order: Python's
/// `multiprocessing.connection.wait`.
///
/// An object is ready when its descriptor polls readable or hung up: a [`Connection`] with a
/// message waiting or whose other end is closed, an `mp_process::Process::sentinel()` whose
/// process has exited, an `mp_sync` lock or event whose doorbell rang, or any other [`AsFd`].
/// `timeout` `None` waits for ever; `Some(t)` returns an empty vector once `t` has passed
/// with nothing ready (`Some(Duration::ZERO)` only looks). Interrupted waits are retried with
/// the time left. As in Python, waiting on an empty slice with no timeout blocks for ever.
///
/// ```
/// use std::time::Duration;
///
/// let (a1, b1) = mp_queue::pipe(true)?;
/// let (a2, b2) = mp_queue::pipe(true)?;
/// assert!(mp_queue::wait(&[&b1, &b2], Some(Duration::from_millis(10)))?.is_empty());
/// a2.send("second")?;
/// assert_eq!(mp_queue::wait(&[&b1, &b2], None)?, vec![1]);
/// drop(a1);
/// assert_eq!(mp_queue::wait(&[&b1, &b2], None)?, vec![0, 1]);
/// # Ok::<(), mp_queue::Error>(())
/// ```
///
/// [`Connection`]: crate::Connection
pub fn wait(objects: &[&dyn AsFd], timeout: Option<Duration>) -> Result<Vec<usize>> {
    let fds: Vec<BorrowedFd<'_>> = objects.iter().map(|o| o.as_fd()).collect();
    mp_process::os::poll::ready(&fds, mp_process::os::time::deadline(timeout))
        .map_err(|e| Error::io("poll", e))
}
