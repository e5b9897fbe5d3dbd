//! `wait` and `wait_timeout`: Python's `multiprocessing.connection.wait` over anything with a
//! descriptor.

use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Waits until some of `objects` are ready and returns those, in the order given: Python's
/// `multiprocessing.connection.wait(object_list)` (no timeout).
///
/// `objects` is any collection of things with a descriptor: connections, queues, process
/// sentinels (`mp_process::Process::sentinel`), `mp_sync` primitives, any [`AsFd`], or
/// references to them. An object is ready when its descriptor polls readable or hung up: a
/// [`Connection`] with a message waiting or whose other end is closed (a closed connection is
/// ready at once), a queue holding an item, a sentinel whose process has exited, an `mp_sync`
/// lock or event whose doorbell rang (a hint: try it, and wait again if someone else took
/// it). Interrupted waits are retried. As in Python, waiting on nothing blocks for ever.
///
/// The ready objects come back themselves, as in Python; to tell apart objects of different
/// types, pass `&dyn AsFd` references and compare addresses (`std::ptr::addr_eq`), as Python
/// compares identities.
///
/// ```
/// let (a1, b1) = mp_queue::pipe(true)?;
/// let (a2, b2) = mp_queue::pipe(true)?;
/// a2.send("second")?;
/// let readers = [&b1, &b2];
/// for conn in mp_queue::wait(readers)? {
///     assert!(std::ptr::eq(conn, &b2));
///     assert_eq!(conn.recv::<String>()?, "second");
/// }
/// # drop(a1);
/// # Ok::<(), mp_queue::Error>(())
/// ```
///
/// Errors: [`Error::Io`](crate::Error::Io) if `poll` fails.
///
/// [`Connection`]: crate::Connection
pub fn wait<I>(objects: I) -> Result<Vec<I::Item>>
where
    I: IntoIterator,
    I::Item: AsFd,
{
    ready(objects, None)
}

/// Waits at most `timeout` until some of `objects` are ready and returns those, in the order
/// given: Python's `multiprocessing.connection.wait(object_list, timeout)`.
///
/// Returns an empty vector once at least `timeout` has passed with nothing ready;
/// `Duration::ZERO` only looks, and a timeout too large to represent waits for ever. The rest
/// is as [`wait`].
///
/// ```
/// use std::time::Duration;
///
/// let (a1, b1) = mp_queue::pipe(true)?;
/// let (a2, b2) = mp_queue::pipe(true)?;
/// assert!(mp_queue::wait_timeout([&b1, &b2], Duration::from_millis(10))?.is_empty());
/// drop(a1);
/// a2.send("second")?;
/// assert_eq!(mp_queue::wait_timeout([&b1, &b2], Duration::ZERO)?.len(), 2);
/// # Ok::<(), mp_queue::Error>(())
/// ```
///
/// Errors: as [`wait`].
pub fn wait_timeout<I>(objects: I, timeout: Duration) -> Result<Vec<I::Item>>
where
    I: IntoIterator,
    I::Item: AsFd,
{
    ready(objects, mp_process::os::time::deadline(Some(timeout)))
}

/// The objects of `objects` ready by `deadline` (`None`: no deadline).
fn ready<I>(objects: I, deadline: Option<Instant>) -> Result<Vec<I::Item>>
where
    I: IntoIterator,
    I::Item: AsFd,
{
    let objects: Vec<I::Item> = objects.into_iter().collect();
    let indices = {
        let fds: Vec<BorrowedFd<'_>> = objects.iter().map(AsFd::as_fd).collect();
        mp_process::os::poll::ready(&fds, deadline).map_err(|e| Error::io("poll", e))?
    };
    // `indices` is in increasing order.
    let mut next = indices.into_iter().peekable();
    Ok(objects
        .into_iter()
        .enumerate()
        .filter_map(|(i, object)| next.next_if_eq(&i).map(|_| object))
        .collect())
}
