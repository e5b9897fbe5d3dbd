//! `Event`: a flag in shared memory with futex waits.

use std::fmt;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Error;
use crate::segment::{Handle, Kind, SharedLayout};
use crate::wait::{deadline, futex_wait, futex_wake_all, spin_until};

/// The flag bit of the state word; the bits above it count the `set` calls that changed it.
const SET: u32 = 1;

/// The shared part of an event.
///
/// Lives in shared memory: `#[repr(C)]`, atomics only, no pointers.
#[repr(C)]
pub(crate) struct EventLayout {
    /// The futex word: the flag in bit 0, and in the bits above a generation that each `set`
    /// of a cleared event increments, so that a waiter woken by a `set` sees the change even
    /// if the event was cleared again before it looked.
    state: AtomicU32,
    /// How many threads sleep on `state`; `set` skips the wake-up system call when it is 0.
    waiters: AtomicU32,
}

// SAFETY: `EventLayout` is `#[repr(C)]` without `Drop`, made of `AtomicU32`s only: every bit pattern is
// valid, there are no pointers, every change is atomic, and the alignment (4) is below
// `LAYOUT_ALIGN`.
#[allow(unsafe_code)]
unsafe impl SharedLayout for EventLayout {}

/// An event shared between processes: Python's `multiprocessing.Event`.
///
/// A flag that [`set`](Event::set) raises, waking every process that
/// [`wait`](Event::wait)s, and [`clear`](Event::clear) lowers. Clones share the event; it
/// passes into children and messages under every start method.
///
/// ```
/// use mp_sync::Event;
/// use std::time::Duration;
///
/// # fn main() -> Result<(), mp_sync::Error> {
/// let event = Event::new()?;
/// assert!(!event.wait_timeout(Duration::from_millis(1))?);
/// event.set();
/// assert!(event.is_set());
/// assert!(event.wait_timeout(Duration::from_millis(1))?);
/// event.clear();
/// assert!(!event.is_set());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Event {
    /// The segment.
    handle: Arc<Handle<EventLayout>>,
}

impl Event {
    /// Creates an event, cleared.
    ///
    /// Errors: [`Error::SharedMemory`] or [`Error::Io`] if the segment cannot be made.
    pub fn new() -> Result<Event, Error> {
        let handle = Handle::create(Kind::Event, |_: &mut EventLayout| Ok(()))?;
        Ok(Event { handle: Arc::new(handle) })
    }

    #[inline]
    fn layout(&self) -> &EventLayout {
        self.handle.get()
    }

    /// Whether the flag is set.
    ///
    /// For a handle whose doorbell is polled, a `false` answer drains the doorbell first.
    pub fn is_set(&self) -> bool {
        let state = &self.layout().state;
        if state.load(Ordering::Acquire) & SET != 0 {
            return true;
        }
        if self.handle.is_polled_here() {
            self.handle.shared.drain();
            if state.load(Ordering::SeqCst) & SET != 0 {
                self.handle.shared.ring();
                return true;
            }
        }
        false
    }

    /// Sets the flag and wakes every waiter, in every process.
    pub fn set(&self) {
        let l = self.layout();
        let mut s = l.state.load(Ordering::Relaxed);
        loop {
            if s & SET != 0 {
                return;
            }
            let next = (s & !SET).wrapping_add(2) | SET;
            match l.state.compare_exchange_weak(s, next, Ordering::SeqCst, Ordering::Relaxed) {
                Ok(_) => break,
                Err(now) => s = now,
            }
        }
        if l.waiters.load(Ordering::SeqCst) != 0 {
            futex_wake_all(&l.state);
        }
        self.handle.shared.ring_if_polled();
    }

    /// Clears the flag.
    pub fn clear(&self) {
        let l = self.layout();
        l.state.fetch_and(!SET, Ordering::SeqCst);
        if self.handle.is_polled_here() {
            self.handle.shared.drain();
            if l.state.load(Ordering::SeqCst) & SET != 0 {
                // Set again meanwhile: its ring may have been drained above.
                self.handle.shared.ring();
            }
        }
    }

    /// Waits until the flag is set; returns at once if it is.
    ///
    /// Errors: [`Error::Io`] if the futex wait fails.
    pub fn wait(&self) -> Result<(), Error> {
        self.wait_until(None).map(|_| ())
    }

    /// Waits until the flag is set or `timeout` passes: Python's `wait(timeout)`. Returns
    /// `true` if the flag was set before the call or a `set` happened during it (even if the
    /// event was cleared again since), `false` on timeout.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<bool, Error> {
        self.wait_until(deadline(Some(timeout)))
    }

    fn wait_until(&self, deadline: Option<std::time::Instant>) -> Result<bool, Error> {
        let l = self.layout();
        let start = l.state.load(Ordering::Acquire);
        if start & SET != 0 {
            return Ok(true);
        }
        if spin_until(&self.handle.spin, || l.state.load(Ordering::Acquire) != start) {
            return Ok(true);
        }
        loop {
            l.waiters.fetch_add(1, Ordering::SeqCst);
            let waited = futex_wait(&l.state, start, deadline);
            l.waiters.fetch_sub(1, Ordering::SeqCst);
            let timed_out = waited?;
            // Only a `set` changes the word of a cleared event.
            if l.state.load(Ordering::Acquire) != start {
                return Ok(true);
            }
            if timed_out {
                return Ok(false);
            }
        }
    }
}

impl AsFd for Event {
    /// The event's doorbell: it polls readable while the flag is set (a hint: check with
    /// [`is_set`](Event::is_set), which drains a stale doorbell).
    ///
    /// The first call registers this handle (and its clones) in this process as a poller.
    /// See the crate documentation for the protocol.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.handle.doorbell()
    }
}

impl Serialize for Event {
    /// Serialises the segment and doorbell (only through `mp-process`'s fd-carrying encoder).
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.handle.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Event {
    /// Receives an event, checking the segment's kind.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Event { handle: Handle::deserialize(d, &[Kind::Event])? })
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = self.layout().state.load(Ordering::Relaxed) & SET != 0;
        write!(f, "<Event({})>", if set { "set" } else { "unset" })
    }
}

impl crate::segment::Layout for EventLayout {
    const OBJECT: mp_process::fdpass::Kind = mp_process::fdpass::Kind::new("mp_sync::Event");
    const KINDS: &'static [Kind] = &[Kind::Event];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_whose_spin_ran_out_makes_the_next_sleep_at_once() {
        let event = Event::new().unwrap();
        assert!(!event.wait_timeout(Duration::from_millis(5)).unwrap());
        if crate::wait::can_spin() {
            assert!(!event.handle.spin.next_spins(), "the spin ran out: the next sleeps at once");
            assert!(event.handle.spin.next_spins(), "one wait only, after the first loss");
        }
        event.set();
        assert!(event.wait_timeout(Duration::from_millis(5)).unwrap());
    }
}
