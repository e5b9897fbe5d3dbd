//! Bounded spinning before sleeping: the one policy of every spinning wait in mp (futex waits
//! of `mp-sync`, pipe and queue receives of `mp-queue`, `Process::join`). A spin pays when the
//! party waited for runs on another CPU and answers within the spin; on one CPU, or when
//! spins keep running out, waiting sleeps at once.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// How many times a contended path looks again before it sleeps, by default.
pub const DEFAULT_SPIN_LIMIT: u32 = 200;

/// How many times a contended path looks again before it sleeps, in this process.
static SPIN_LIMIT: AtomicU32 = AtomicU32::new(DEFAULT_SPIN_LIMIT);

/// Sets how many times a contended wait of this process (a `Semaphore`, `Event` or `Barrier`
/// wait) looks again before it sleeps on its futex, and scales how long the other waits that
/// spin (pipe and queue receives, `Process::join`) look before they sleep; 0 sleeps at once.
/// Spinning shortens hand-offs between processes running on other CPUs; it burns CPU when
/// the other side is slow.
/// The setting is per process (a forked child inherits it; a spawned child starts with
/// [`DEFAULT_SPIN_LIMIT`]).
pub fn set_spin_limit(limit: u32) {
    SPIN_LIMIT.store(limit, Ordering::Relaxed);
}

/// The current spin limit of this process (see [`set_spin_limit`]).
pub fn spin_limit() -> u32 {
    SPIN_LIMIT.load(Ordering::Relaxed)
}

/// Whether spinning can help: another CPU may run the thread we wait for.
pub fn can_spin() -> bool {
    static MULTI: OnceLock<bool> = OnceLock::new();
    *MULTI.get_or_init(|| std::thread::available_parallelism().is_ok_and(|n| n.get() > 1))
}

/// How long a wait whose spin takes `base` at the default spin limit should spin in this
/// process: `base` scaled by [`spin_limit`] against [`DEFAULT_SPIN_LIMIT`] (a limit of 0
/// turns it off), and `None` on a machine with one CPU, where the other side cannot run
/// while we look.
pub fn budget(base: Duration) -> Option<Duration> {
    let limit = spin_limit();
    if limit == 0 || !can_spin() {
        return None;
    }
    Some(base.saturating_mul(limit) / DEFAULT_SPIN_LIMIT.max(1))
}

/// The most waits in a row that skip spinning after spins that did not pay.
pub const MAX_SKIP: u32 = 64;

/// Whether a waiter spins before it sleeps, learnt from its waits before: a policy a process
/// keeps per object it waits on (a pipe lane's receives, an `Event`, `Semaphore` or
/// `Barrier` handle), and one for all its joins of children.
///
/// A wait that spun its whole budget and then had to sleep lost that time: the other side
/// was slow, or, on a machine whose every core is busy, it waited for a CPU (perhaps the very
/// one the spinner held: the scheduler may put both processes of a hand-off on one CPU), and
/// spinning cannot win there. After such a loss the next waits sleep at once without
/// spinning: 1 after the first loss, twice as many after each loss in a row, at most
/// [`MAX_SKIP`]; then one wait spins again, to learn whether spinning pays now. A spin that
/// wins (the condition came while it spun) resets the policy. So a quick peer keeps
/// sub-microsecond hand-offs, and a slow peer or a loaded machine costs one spin in
/// [`MAX_SKIP`] waits.
///
/// Its counters are relaxed atomics: threads that wait at once through one policy may blur
/// its count a little, which changes nothing but when the next spin comes.
///
/// ```
/// use mp_process::os::spin::SpinBackoff;
/// let policy = SpinBackoff::default();
/// assert!(policy.next_spins());
/// policy.spun(false); // spun in vain: the next wait sleeps at once
/// assert!(!policy.next_spins());
/// assert!(policy.next_spins());
/// ```
#[derive(Debug, Default)]
pub struct SpinBackoff {
    /// How many waits will still skip spinning.
    skip: AtomicU32,
    /// How many waits the next loss makes skip spinning, less one doubling (0 after a win).
    penalty: AtomicU32,
}

impl SpinBackoff {
    /// A policy that spins at its next wait (as `default()`, in a `static` too).
    pub const fn new() -> SpinBackoff {
        SpinBackoff { skip: AtomicU32::new(0), penalty: AtomicU32::new(0) }
    }

    /// Whether the wait starting now spins (else it sleeps at once).
    pub fn next_spins(&self) -> bool {
        let skip = self.skip.load(Ordering::Relaxed);
        if skip == 0 {
            return true;
        }
        self.skip.store(skip - 1, Ordering::Relaxed);
        false
    }

    /// A wait that spun is over; `won` if what it waited for came while it spun.
    pub fn spun(&self, won: bool) {
        if won {
            self.penalty.store(0, Ordering::Relaxed);
            return;
        }
        let penalty = self.penalty.load(Ordering::Relaxed).saturating_mul(2).clamp(1, MAX_SKIP);
        self.penalty.store(penalty, Ordering::Relaxed);
        self.skip.store(penalty, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skipped(b: &SpinBackoff) -> u32 {
        let mut n = 0;
        while !b.next_spins() {
            n += 1;
            assert!(n <= MAX_SKIP, "more than MAX_SKIP waits skipped spinning");
        }
        n
    }

    #[test]
    fn spinning_goes_on_while_it_wins() {
        let b = SpinBackoff::default();
        for _ in 0..10 {
            assert!(b.next_spins());
            b.spun(true);
        }
    }

    #[test]
    fn losses_in_a_row_back_off_doubling_up_to_the_cap() {
        let b = SpinBackoff::default();
        let mut seen = Vec::new();
        for _ in 0..9 {
            b.spun(false);
            seen.push(skipped(&b));
        }
        assert_eq!(seen, [1, 2, 4, 8, 16, 32, 64, 64, 64]);
    }

    #[test]
    fn a_win_resets_the_backoff() {
        let b = SpinBackoff::default();
        for _ in 0..4 {
            b.spun(false);
            skipped(&b);
        }
        b.spun(true);
        b.spun(false);
        assert_eq!(skipped(&b), 1);
    }
}
