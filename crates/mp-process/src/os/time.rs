//! Deadlines: every bounded wait of mp turns its timeout into a deadline once, and every
//! system call that sleeps is given the time left until it.

use std::time::{Duration, Instant};

use rustix::time::Timespec;

/// The deadline `timeout` from now; `None` (no deadline) for `None` or for a timeout too
/// large to represent.
pub fn deadline(timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(|t| Instant::now().checked_add(t))
}

/// Whether `deadline` has passed (never, for `None`).
pub fn expired(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|d| Instant::now() >= d)
}

/// The time left until `deadline`: `None` for no deadline, zero once it passed.
pub fn left(deadline: Option<Instant>) -> Option<Duration> {
    deadline.map(|d| d.saturating_duration_since(Instant::now()))
}

/// `duration` as a kernel `Timespec`, saturating at the largest one.
pub fn timespec(duration: Duration) -> Timespec {
    Timespec {
        tv_sec: i64::try_from(duration.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(duration.subsec_nanos()),
    }
}

/// The time left until `deadline` as a `Timespec`, `None` for no deadline.
pub fn timespec_left(deadline: Option<Instant>) -> Option<Timespec> {
    left(deadline).map(timespec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_and_what_is_left() {
        assert_eq!(deadline(None), None);
        assert_eq!(deadline(Some(Duration::MAX)), None);
        let d = deadline(Some(Duration::ZERO));
        assert!(d.is_some() && expired(d));
        assert!(!expired(None));
        assert_eq!(left(d), Some(Duration::ZERO));
        let far = deadline(Some(Duration::from_secs(3600)));
        assert!(!expired(far) && left(far).unwrap() > Duration::from_secs(3500));
        let ts = timespec(Duration::new(5, 7));
        assert_eq!((ts.tv_sec, ts.tv_nsec), (5, 7));
        assert_eq!(timespec(Duration::MAX).tv_sec, i64::MAX);
        assert!(timespec_left(None).is_none());
    }
}
