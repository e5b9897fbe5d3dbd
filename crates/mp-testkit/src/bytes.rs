//! Reports of one byte each: a child (or a pool task) [`say`]s that it got somewhere, and the
//! test [`hear`]s that `n` of them did, without caring which.

use std::os::fd::AsFd;

/// Writes one byte into `fd` (a task reporting that it started).
pub fn say(fd: impl AsFd) {
    crate::pipes::write_all(fd, b"x");
}

/// Reads `n` bytes from `fd` (waits for `n` reports).
pub fn hear(fd: impl AsFd, n: usize) {
    crate::read_exact(fd, n);
}
