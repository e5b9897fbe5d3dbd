//! Doorbells: non-blocking eventfds that poll readable once rung, until drained. Every
//! primitive that `wait` can watch (queues, locks, events...) has one.

use std::os::fd::{BorrowedFd, OwnedFd};

use rustix::event::EventfdFlags;
use rustix::io::Errno;

/// A new doorbell: a non-blocking, close-on-exec eventfd, not rung.
pub fn doorbell() -> Result<OwnedFd, Errno> {
    rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
}

/// Rings `bell`: it polls readable until drained.
pub fn ring(bell: BorrowedFd<'_>) {
    // Fails only when the counter would overflow, when it is readable anyway (or for a
    // descriptor that is not an eventfd, which the checks on received doorbells exclude).
    let _ = rustix::io::write(bell, &1u64.to_ne_bytes());
}

/// Empties `bell`.
pub fn drain(bell: BorrowedFd<'_>) {
    let mut buf = [0u8; 8];
    // EAGAIN: already empty.
    let _ = rustix::io::read(bell, &mut buf);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::os::poll::readable;
    use std::os::fd::AsFd;
    use std::time::Instant;

    #[test]
    fn a_doorbell_polls_readable_from_ring_to_drain() {
        let bell = doorbell().unwrap();
        let now = Some(Instant::now());
        assert!(!readable(bell.as_fd(), now).unwrap());
        ring(bell.as_fd());
        ring(bell.as_fd());
        assert!(readable(bell.as_fd(), now).unwrap());
        drain(bell.as_fd());
        assert!(!readable(bell.as_fd(), now).unwrap());
        crate::fdpass::check::eventfd(bell.as_fd(), "a doorbell").unwrap();
    }
}
