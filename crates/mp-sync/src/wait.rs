//! Futex waits and wakes on shared words, deadlines, and bounded spinning.

use std::sync::atomic::AtomicU32;
use std::time::{Duration, Instant};

use crate::error::Error;

pub use mp_process::os::spin::{
    DEFAULT_SPIN_LIMIT, MAX_SKIP, SpinBackoff, can_spin, set_spin_limit, spin_limit,
};

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

/// Spins for a bounded time until `ready` returns true, if `backoff` says spinning pays;
/// whether `ready` held. The outcome teaches `backoff` (see [`SpinBackoff`]).
#[inline]
pub(crate) fn spin_until(backoff: &SpinBackoff, mut ready: impl FnMut() -> bool) -> bool {
    if !can_spin() || spin_limit() == 0 || !backoff.next_spins() {
        return ready();
    }
    for _ in 0..spin_limit() {
        if ready() {
            backoff.spun(true);
            return true;
        }
        std::hint::spin_loop();
    }
    let won = ready();
    backoff.spun(won);
    won
}
