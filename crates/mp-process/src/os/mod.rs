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
//! | [`spin`] | bounded spinning before sleeping: the spin limit, [`spin::SpinBackoff`] |
//! | [`code`] | functions crossing into other processes of the executable as checked text offsets ([`code::Entry`]) |
//! | [`pid`] | this process's pid, asked of the kernel once and again in every forked child |
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
pub mod spin;
pub mod time;

use std::sync::Once;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// This process's pid as a `u32`, right in a forked child at once.
///
/// Asked of the kernel once per process: a handler registered with `pthread_atfork` forgets
/// it in every child of `fork` (glibc no longer caches the pid, and a `getpid` per call was
/// a fifth of a manager call's time). A child made by a raw `clone` system call that
/// bypasses glibc's `fork` would see its parent's pid here.
pub fn pid() -> u32 {
    let known = PID.load(Ordering::Relaxed);
    if known != 0 {
        return known;
    }
    static WATCH_FORKS: Once = Once::new();
    // The handler is registered before the first pid is kept: a fork after this point
    // forgets it in the child. If registering fails, the pid is never kept.
    WATCH_FORKS.call_once(|| {
        if process::on_fork_child(forget_pid).is_ok() {
            KEEP_PID.store(true, Ordering::Relaxed);
        }
    });
    let pid = rustix::process::getpid().as_raw_nonzero().get().unsigned_abs();
    if KEEP_PID.load(Ordering::Relaxed) {
        PID.store(pid, Ordering::Relaxed);
    }
    pid
}

/// This process's pid once known (0: not yet, or forgotten by a fork).
static PID: AtomicU32 = AtomicU32::new(0);

/// Whether the fork handler is in place, so that [`PID`] may keep the pid.
static KEEP_PID: AtomicBool = AtomicBool::new(false);

/// Run in every forked child: the pid kept is the parent's.
extern "C" fn forget_pid() {
    PID.store(0, Ordering::Relaxed);
}
