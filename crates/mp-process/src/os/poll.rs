//! Waiting for descriptors against a deadline. An interrupted wait (`EINTR`), and a wait the
//! kernel ends early by rounding, goes on with the time that is left, so a timeout always
//! means that the deadline really passed.

use std::os::fd::BorrowedFd;
use std::time::Instant;

use rustix::event::{PollFd, PollFlags};
use rustix::io::Errno;

use super::time::{expired, timespec_left};

/// Polls `fds` until one of them has an event or `deadline` passes (`None`: no deadline).
/// Returns the number of descriptors with events: 0 only once the deadline has passed. The
/// events are in each `PollFd`'s `revents`.
pub fn poll(fds: &mut [PollFd<'_>], deadline: Option<Instant>) -> Result<usize, Errno> {
    loop {
        match rustix::event::poll(fds, timespec_left(deadline).as_ref()) {
            Ok(0) | Err(Errno::INTR) => {}
            Ok(n) => return Ok(n),
            Err(e) => return Err(e),
        }
        if expired(deadline) {
            return Ok(0);
        }
        for p in fds.iter_mut() {
            p.clear_revents();
        }
    }
}

/// Whether `fd` is readable (or hung up, or in error) before `deadline`.
pub fn readable(fd: BorrowedFd<'_>, deadline: Option<Instant>) -> Result<bool, Errno> {
    Ok(poll(&mut [PollFd::from_borrowed_fd(fd, PollFlags::IN)], deadline)? > 0)
}

/// Whether `fd` is writable (or hung up, or in error) before `deadline`.
pub fn writable(fd: BorrowedFd<'_>, deadline: Option<Instant>) -> Result<bool, Errno> {
    Ok(poll(&mut [PollFd::from_borrowed_fd(fd, PollFlags::OUT)], deadline)? > 0)
}

/// Waits until some of `fds` is readable (or hung up, or in error) or `deadline` passes, and
/// returns for each whether it is ready (none: the deadline passed).
pub fn ready_flags(fds: &[BorrowedFd<'_>], deadline: Option<Instant>) -> Result<Vec<bool>, Errno> {
    let mut polls: Vec<PollFd<'_>> =
        fds.iter().map(|fd| PollFd::from_borrowed_fd(*fd, PollFlags::IN)).collect();
    poll(&mut polls, deadline)?;
    Ok(polls.iter().map(|p| !p.revents().is_empty()).collect())
}

/// As [`ready_flags`], but returns the indices of the ready descriptors, in order (empty: the
/// deadline passed).
pub fn ready(fds: &[BorrowedFd<'_>], deadline: Option<Instant>) -> Result<Vec<usize>, Errno> {
    let flags = ready_flags(fds, deadline)?;
    Ok(flags.iter().enumerate().filter(|(_, r)| **r).map(|(i, _)| i).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::os::time::deadline;
    use std::os::fd::AsFd;
    use std::time::Duration;

    #[test]
    fn readiness_and_timeouts() {
        let (a, b) = crate::os::socket::stream_pair().unwrap();
        let soon = deadline(Some(Duration::from_millis(5)));
        assert!(!readable(a.as_fd(), soon).unwrap());
        assert!(expired(soon), "a timeout means the deadline passed");
        assert!(writable(a.as_fd(), None).unwrap());
        rustix::io::write(&b, b"x").unwrap();
        assert!(readable(a.as_fd(), None).unwrap());
        assert_eq!(ready(&[b.as_fd(), a.as_fd()], None).unwrap(), vec![1]);
        assert_eq!(ready_flags(&[b.as_fd(), a.as_fd()], None).unwrap(), vec![false, true]);
        drop(b);
        assert_eq!(ready(&[a.as_fd()], deadline(Some(Duration::ZERO))).unwrap(), vec![0]);
    }
}
