//! The operating-system calls of `mp-queue`: socket pairs, `shutdown`, `poll` against a
//! deadline, the socket checks a received connection goes through, and the descriptor a
//! closed connection lends out.
//!
//! Sending and receiving frames goes through `mp_process::fdpass`; everything else the crate
//! asks of the kernel is here, so that a port to another Unix is a change to this file.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::net::{AddressFamily, Shutdown, SocketFlags, SocketType};

use crate::error::{Error, Result};

/// A connected pair of `AF_UNIX` `SOCK_STREAM` sockets, both close-on-exec.
pub(crate) fn socket_pair() -> Result<(OwnedFd, OwnedFd)> {
    rustix::net::socketpair(AddressFamily::UNIX, SocketType::STREAM, SocketFlags::CLOEXEC, None)
        .map_err(|e| Error::io("socketpair", e))
}

/// Shuts down the direction of `sock` that its owner will never use: `reading` shuts down the
/// receiving side, otherwise the sending side.
pub(crate) fn shutdown(sock: BorrowedFd<'_>, reading: bool) -> Result<()> {
    let how = if reading { Shutdown::Read } else { Shutdown::Write };
    rustix::net::shutdown(sock, how).map_err(|e| Error::io("shutdown", e))
}

/// Checks that `fd` is an `AF_UNIX` `SOCK_STREAM` socket, the only kind a connection can use.
pub(crate) fn check_unix_stream(fd: BorrowedFd<'_>) -> std::result::Result<(), String> {
    let kind = rustix::net::sockopt::socket_type(fd)
        .map_err(|e| format!("a Connection's descriptor is not a socket ({e})"))?;
    let domain = rustix::net::sockopt::socket_domain(fd)
        .map_err(|e| format!("cannot read a Connection socket's family ({e})"))?;
    if kind != SocketType::STREAM || domain != AddressFamily::UNIX {
        return Err("a Connection's descriptor is not an AF_UNIX stream socket".to_owned());
    }
    Ok(())
}

/// The descriptor of closed connections: one end of a socket pair whose other end is closed,
/// so it always polls readable and hung up, and reads end of file.
static CLOSED: OnceLock<OwnedFd> = OnceLock::new();

/// Returns the process's descriptor for closed connections, making it on first use.
pub(crate) fn closed_fd() -> Result<&'static OwnedFd> {
    if let Some(fd) = CLOSED.get() {
        return Ok(fd);
    }
    let (ours, peer) = socket_pair()?;
    drop(peer);
    // Two threads may race here; the loser's socket is simply dropped.
    Ok(CLOSED.get_or_init(|| ours))
}

/// The time left until `deadline` as a `Timespec`, or `None` for no deadline.
fn time_left(deadline: Option<Instant>) -> Option<Timespec> {
    deadline.map(|d| {
        let left = d.saturating_duration_since(Instant::now());
        Timespec {
            tv_sec: i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(left.subsec_nanos()),
        }
    })
}

/// The deadline `timeout` from now: `None` (no deadline) for `None` or a timeout too large to
/// represent.
pub(crate) fn deadline(timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(|t| Instant::now().checked_add(t))
}

/// Waits until some of `fds` is readable or hung up, or `deadline` passes, and returns the
/// indices of the ready ones (empty on timeout). Interrupted waits, and waits the kernel ends
/// early by rounding, go on with the time that is left, so an empty result means the deadline
/// really passed.
pub(crate) fn poll_readable(
    fds: &[BorrowedFd<'_>],
    deadline: Option<Instant>,
) -> Result<Vec<usize>> {
    let mut polls: Vec<PollFd<'_>> =
        fds.iter().map(|fd| PollFd::from_borrowed_fd(*fd, PollFlags::IN)).collect();
    loop {
        let ts = time_left(deadline);
        match rustix::event::poll(&mut polls, ts.as_ref()) {
            Ok(0) => {}
            Ok(_) => {
                return Ok(polls
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| !p.revents().is_empty())
                    .map(|(i, _)| i)
                    .collect());
            }
            Err(Errno::INTR) => {}
            Err(e) => return Err(Error::io("poll", e)),
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(Vec::new());
        }
        for p in &mut polls {
            p.clear_revents();
        }
    }
}

/// Whether `fd` is readable or hung up within `deadline`.
pub(crate) fn poll_one(fd: impl AsFd, deadline: Option<Instant>) -> Result<bool> {
    Ok(!poll_readable(&[fd.as_fd()], deadline)?.is_empty())
}
