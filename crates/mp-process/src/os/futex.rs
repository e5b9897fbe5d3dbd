//! Futex waits and wakes on `AtomicU32` words in shared memory, shared between processes (no
//! `FUTEX_PRIVATE_FLAG`, so wakes from any process that maps the word reach the sleepers).

use std::sync::atomic::AtomicU32;
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::thread::futex;

use super::time::{expired, left, timespec};

/// Sleeps while `*word == expected`, until woken or `deadline` (`None`: no deadline).
///
/// `Ok(true)` if the deadline has passed, `Ok(false)` otherwise: woken, the word differed,
/// or a signal interrupted the sleep; the caller looks at the word again.
pub fn wait(word: &AtomicU32, expected: u32, deadline: Option<Instant>) -> Result<bool, Errno> {
    let timeout = match left(deadline) {
        Some(l) if l.is_zero() => return Ok(true),
        l => l.map(timespec),
    };
    match futex::wait(word, futex::Flags::empty(), expected, timeout.as_ref()) {
        Ok(()) | Err(Errno::AGAIN) | Err(Errno::INTR) => Ok(expired(deadline)),
        Err(Errno::TIMEDOUT) => Ok(true),
        Err(e) => Err(e),
    }
}

/// Sleeps while `*word == expected`, for `timeout` at most, reading no clock (the kernel counts
/// the time): for naps whose length need not be exact.
///
/// `Ok(true)` if the timeout ran out, `Ok(false)` otherwise: woken, the word differed, or a
/// signal interrupted the sleep.
pub fn wait_for(word: &AtomicU32, expected: u32, timeout: Duration) -> Result<bool, Errno> {
    match futex::wait(word, futex::Flags::empty(), expected, Some(&timespec(timeout))) {
        Ok(()) | Err(Errno::AGAIN) | Err(Errno::INTR) => Ok(false),
        Err(Errno::TIMEDOUT) => Ok(true),
        Err(e) => Err(e),
    }
}

/// Wakes up to `n` threads sleeping on `word`, in any process.
pub fn wake(word: &AtomicU32, n: u32) {
    // FUTEX_WAKE fails only for a bad address, which a reference cannot be.
    let _ = futex::wake(word, futex::Flags::empty(), n);
}

/// Wakes every thread sleeping on `word`.
pub fn wake_all(word: &AtomicU32) {
    wake(word, i32::MAX.unsigned_abs());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn waits_end_on_a_changed_word_a_wake_or_the_deadline() {
        let word = AtomicU32::new(1);
        // The word differs: back at once, deadline not passed.
        assert_eq!(wait(&word, 0, None), Ok(false));
        let soon = crate::os::time::deadline(Some(Duration::from_millis(5)));
        assert_eq!(wait(&word, 1, soon), Ok(true));
        assert!(expired(soon));
        std::thread::scope(|s| {
            let waiter = s.spawn(|| {
                while word.load(Ordering::SeqCst) == 1 {
                    let _ = wait(&word, 1, None);
                }
            });
            word.store(2, Ordering::SeqCst);
            wake_all(&word);
            waiter.join().unwrap();
        });
    }

    #[test]
    fn relative_waits_end_on_a_changed_word_a_wake_or_the_timeout() {
        let word = AtomicU32::new(1);
        assert_eq!(wait_for(&word, 0, Duration::from_secs(60)), Ok(false), "the word differs");
        let start = Instant::now();
        assert_eq!(wait_for(&word, 1, Duration::from_millis(5)), Ok(true));
        assert!(start.elapsed() >= Duration::from_millis(5));
        std::thread::scope(|s| {
            let waiter = s.spawn(|| {
                while word.load(Ordering::SeqCst) == 1 {
                    assert_eq!(wait_for(&word, 1, Duration::from_secs(60)), Ok(false));
                }
            });
            word.store(2, Ordering::SeqCst);
            wake_all(&word);
            waiter.join().unwrap();
        });
    }
}
