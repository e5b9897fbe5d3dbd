//! Futex waits and wakes on shared words, deadlines, and bounded spinning.

use std::sync::OnceLock;
use std::sync::atomic::AtomicU32;
use std::time::{Duration, Instant};

use crate::error::Error;

/// How many times a contended path looks again before it sleeps, by default.
pub const DEFAULT_SPIN_LIMIT: u32 = 200;

/// How many times a contended path looks again before it sleeps, in this process.
static SPIN_LIMIT: AtomicU32 = AtomicU32::new(DEFAULT_SPIN_LIMIT);

/// Sets how many times a contended wait of this process (a `Semaphore`, `Event` or `Barrier`
/// wait) looks again before it sleeps on its futex; 0 sleeps at once. Spinning shortens hand-
/// offs between processes running on other CPUs; it burns CPU when the other side is slow.
/// The setting is per process (a forked child inherits it; a spawned child starts with
/// [`DEFAULT_SPIN_LIMIT`]).
pub fn set_spin_limit(limit: u32) {
    SPIN_LIMIT.store(limit, std::sync::atomic::Ordering::Relaxed);
}

/// The current spin limit of this process (see [`set_spin_limit`]).
pub fn spin_limit() -> u32 {
    SPIN_LIMIT.load(std::sync::atomic::Ordering::Relaxed)
}

/// The deadline `timeout` from now; `None` (wait forever) if it is `None` or too far.
pub(crate) fn deadline(timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(|t| Instant::now().checked_add(t))
}

/// Whether `deadline` has passed.
pub(crate) fn expired(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|d| Instant::now() >= d)
}

/// Sleeps while `*word == expected`, until woken or `deadline`.
///
/// Returns `Ok(true)` if the deadline has passed, `Ok(false)` otherwise (woken, the word
/// changed, or a signal interrupted the wait: the caller looks again). The futex is shared
/// (no `FUTEX_PRIVATE_FLAG`), so wakes from other processes reach it.
pub fn futex_wait(
    word: &AtomicU32,
    expected: u32,
    deadline: Option<Instant>,
) -> Result<bool, Error> {
    mp_process::os::futex::wait(word, expected, deadline).map_err(|e| Error::io("futex wait", e))
}

pub(crate) use mp_process::os::futex::{wake as futex_wake, wake_all as futex_wake_all};

/// Whether spinning can help: another CPU may run the thread we wait for.
pub fn can_spin() -> bool {
    static MULTI: OnceLock<bool> = OnceLock::new();
    *MULTI.get_or_init(|| std::thread::available_parallelism().is_ok_and(|n| n.get() > 1))
}

/// Spins for a bounded time until `ready` returns true; whether it did.
#[inline]
pub(crate) fn spin_until(mut ready: impl FnMut() -> bool) -> bool {
    if !can_spin() {
        return ready();
    }
    for _ in 0..spin_limit() {
        if ready() {
            return true;
        }
        std::hint::spin_loop();
    }
    ready()
}
