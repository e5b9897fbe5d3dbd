//! The operating-system layer every crate of mp stands on: one home for each mechanism, so
//! that no crate calls the kernel for these in its own way.
//!
//! | module | mechanism |
//! | --- | --- |
//! | [`time`] | deadlines, and the time left until one as a kernel `Timespec` |
//! | [`poll`] | waiting for descriptors against a deadline, `EINTR` retried |
//! | [`socket`] | `AF_UNIX` socket pairs, `shutdown`, peeking at a stream |
//! | [`fds`] | descriptors beside bytes (`SCM_RIGHTS` on `sendmsg`/`recvmsg`) |
//! | [`eventfd`] | doorbells: non-blocking eventfds rung and drained |
//! | [`futex`] | sleeping on and waking shared `AtomicU32` words, across processes |
//! | [`code`] | functions crossing into other processes of the executable as checked text offsets ([`code::Entry`]) |
//! | [`pid`] | this process's pid, asked of the kernel each time (so right after a fork) |
//!
//! Calls return `rustix`'s `Errno`; each crate wraps it in its own error with what it was
//! doing. The process calls rustix does not offer (fork, `posix_spawn`, signal dispositions)
//! stay private to `mp-process`. This layer is Linux's; a port to another Unix replaces it.

pub mod code;
pub mod eventfd;
pub mod fds;
pub mod futex;
pub mod poll;
pub(crate) mod process;
pub mod socket;
pub mod time;

/// This process's pid as a `u32` (one `getpid`: right in a forked child at once).
pub fn pid() -> u32 {
    rustix::process::getpid().as_raw_nonzero().get().unsigned_abs()
}
