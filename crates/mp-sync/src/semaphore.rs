//! `Semaphore` and `BoundedSemaphore`: a counter in shared memory with futex waits.

use std::fmt;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Error;
use crate::segment::{Handle, Kind, SharedLayout};
use crate::sys::WAKE_SLICE;
use crate::wait::{deadline, expired, futex_wait, futex_wake, spin_until};

/// The largest value a semaphore can hold: Python's `SEM_VALUE_MAX` on Linux (`INT_MAX`).
pub const SEM_VALUE_MAX: u32 = i32::MAX.unsigned_abs();

/// The shared part of a semaphore.
///
/// Lives in shared memory: `#[repr(C)]`, atomics only, no pointers.
#[repr(C)]
pub(crate) struct SemLayout {
    /// The count of permits; the futex word sleepers wait on while it is 0.
    value: AtomicU32,
    /// How many threads sleep (or are about to) on `value`: releases skip the wake-up
    /// system call when it is 0. A waiter killed while asleep leaves it too high, which only
    /// costs useless wake-ups.
    waiters: AtomicU32,
    /// The largest value a release may reach: the initial value of a `BoundedSemaphore`,
    /// [`SEM_VALUE_MAX`] otherwise.
    max: AtomicU32,
    /// Unused.
    _reserved: AtomicU32,
}

// SAFETY: `SemLayout` is `#[repr(C)]` without `Drop`, made of `AtomicU32`s only: every bit pattern is
// valid, there are no pointers, every change is atomic, and the alignment (4) is below
// `LAYOUT_ALIGN`.
#[allow(unsafe_code)]
unsafe impl SharedLayout for SemLayout {}

/// The machinery of both semaphores.
#[derive(Clone)]
struct SemCore {
    /// The segment.
    handle: Arc<Handle<SemLayout>>,
}

impl SemCore {
    fn new(value: u32, bounded: bool) -> Result<Self, Error> {
        if value > SEM_VALUE_MAX {
            return Err(Error::InvalidArgument(
                "a semaphore's value must be at most SEM_VALUE_MAX",
            ));
        }
        let kind = if bounded { Kind::BoundedSemaphore } else { Kind::Semaphore };
        let handle = Handle::create(kind, |l: &mut SemLayout| {
            *l.value.get_mut() = value;
            *l.max.get_mut() = if bounded { value } else { SEM_VALUE_MAX };
            Ok(())
        })?;
        Ok(SemCore { handle: Arc::new(handle) })
    }

    #[inline]
    fn layout(&self) -> &SemLayout {
        self.handle.get()
    }

    /// Takes a permit if there is one.
    #[inline]
    fn try_take(&self) -> bool {
        let value = &self.layout().value;
        let mut v = value.load(Ordering::Relaxed);
        while v > 0 {
            match value.compare_exchange_weak(v, v - 1, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(now) => v = now,
            }
        }
        false
    }

    /// Takes a permit, waiting until `deadline`; whether it got one.
    fn take_until(&self, deadline: Option<Instant>) -> Result<bool, Error> {
        if self.try_take() {
            return Ok(true);
        }
        let l = self.layout();
        if spin_until(&self.handle.spin, || l.value.load(Ordering::Relaxed) > 0 && self.try_take())
        {
            return Ok(true);
        }
        loop {
            l.waiters.fetch_add(1, Ordering::SeqCst);
            // A release wakes one sleeper; one killed once woken takes that wake-up along, so
            // every sleep is a slice (see `WAKE_SLICE`).
            let slice = Instant::now() + WAKE_SLICE;
            let waited = if l.value.load(Ordering::SeqCst) == 0 {
                futex_wait(&l.value, 0, Some(deadline.map_or(slice, |d| d.min(slice))))
            } else {
                Ok(false)
            };
            l.waiters.fetch_sub(1, Ordering::SeqCst);
            waited?;
            if self.try_take() {
                return Ok(true);
            }
            if expired(deadline) {
                return Ok(false);
            }
        }
    }

    /// Adds a permit and wakes a sleeper.
    fn give(&self) -> Result<(), Error> {
        let l = self.layout();
        let max = l.max.load(Ordering::Relaxed);
        let mut v = l.value.load(Ordering::Relaxed);
        loop {
            if v >= max {
                return Err(Error::TooManyReleases);
            }
            match l.value.compare_exchange_weak(v, v + 1, Ordering::SeqCst, Ordering::Relaxed) {
                Ok(_) => break,
                Err(now) => v = now,
            }
        }
        if l.waiters.load(Ordering::SeqCst) != 0 {
            futex_wake(&l.value, 1);
        }
        self.handle.shared.ring_if_polled();
        Ok(())
    }

    /// A non-blocking attempt, draining the doorbell first for a polled handle.
    fn try_acquire(&self) -> bool {
        if !self.handle.is_polled_here() {
            return self.try_take();
        }
        self.handle.shared.drain();
        let got = self.try_take();
        if self.layout().value.load(Ordering::SeqCst) > 0 {
            // Permits remain for others: keep the doorbell readable for them.
            self.handle.shared.ring();
        }
        got
    }

    fn value(&self) -> u32 {
        self.layout().value.load(Ordering::Relaxed)
    }
}

/// A permit taken from a [`Semaphore`] or [`BoundedSemaphore`], given back when dropped.
///
/// A semaphore has no owner (any thread or process may release it), so the permit is `Send`.
#[must_use = "the permit is given back as soon as it is dropped"]
pub struct SemaphoreGuard<'a> {
    /// The semaphore.
    core: &'a SemCore,
}

impl SemaphoreGuard<'_> {
    /// Keeps the permit: the semaphore stays one lower until someone calls `release()`, as
    /// Python code does with `acquire()` and `release()`.
    pub fn forget(self) {
        std::mem::forget(self);
    }
}

impl Drop for SemaphoreGuard<'_> {
    fn drop(&mut self) {
        // The permit was taken, so giving it back cannot exceed the bound.
        let _ = self.core.give();
    }
}

impl fmt::Debug for SemaphoreGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SemaphoreGuard").finish_non_exhaustive()
    }
}

macro_rules! semaphore_api {
    ($name:ident, $kind:expr, $python:literal) => {
        impl $name {
            /// Takes a permit, waiting until one is available.
            ///
            /// Errors: [`Error::Io`] if the futex wait fails.
            pub fn acquire(&self) -> Result<SemaphoreGuard<'_>, Error> {
                self.core.take_until(None)?;
                Ok(SemaphoreGuard { core: &self.core })
            }

            /// Takes a permit, waiting for `timeout` at most: `Ok(None)` if none came.
            pub fn acquire_timeout(
                &self,
                timeout: Duration,
            ) -> Result<Option<SemaphoreGuard<'_>>, Error> {
                if timeout.is_zero() {
                    return Ok(self.try_acquire());
                }
                let got = self.core.take_until(deadline(Some(timeout)))?;
                Ok(got.then(|| SemaphoreGuard { core: &self.core }))
            }

            /// Takes a permit if one is available, without blocking.
            pub fn try_acquire(&self) -> Option<SemaphoreGuard<'_>> {
                self.core.try_acquire().then(|| SemaphoreGuard { core: &self.core })
            }

            /// Adds a permit, waking one waiter: Python's `release()`. Any thread or process
            /// may call it.
            pub fn release(&self) -> Result<(), Error> {
                self.core.give()
            }

            /// The number of permits available now: Python's `get_value()`.
            pub fn get_value(&self) -> u32 {
                self.core.value()
            }
        }

        impl AsFd for $name {
            /// The semaphore's doorbell: it polls readable when a permit may be available.
            ///
            /// The first call registers this handle (and its clones) in this process as a
            /// poller; [`try_acquire`](Self::try_acquire) then drains the doorbell before it
            /// tries, and rings it again if permits remain. See the crate documentation.
            fn as_fd(&self) -> BorrowedFd<'_> {
                self.core.handle.doorbell()
            }
        }

        impl Serialize for $name {
            /// Serialises the segment and doorbell (only through `mp-process`'s fd-carrying
            /// encoder).
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                self.core.handle.serialize(s)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            /// Receives a semaphore, checking the segment's kind.
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let handle = Handle::deserialize(d, &[$kind])?;
                Ok($name { core: SemCore { handle } })
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!("<", $python, "(value={})>"), self.get_value())
            }
        }
    };
}

/// A counting semaphore shared between processes: Python's `multiprocessing.Semaphore`.
///
/// A count of permits in shared memory: [`acquire`](Semaphore::acquire) takes one (waiting
/// on a futex while there are none), dropping the [`SemaphoreGuard`] or calling
/// [`release`](Semaphore::release) gives one back. Clones share the semaphore; it passes into
/// children and messages under every start method.
///
/// ```
/// use mp_sync::Semaphore;
/// use std::time::Duration;
///
/// # fn main() -> Result<(), mp_sync::Error> {
/// let sem = Semaphore::new(2)?;
/// let a = sem.acquire()?;
/// let _b = sem.acquire()?;
/// assert_eq!(sem.get_value(), 0);
/// assert!(sem.acquire_timeout(Duration::from_millis(10))?.is_none());
/// drop(a);
/// assert_eq!(sem.get_value(), 1);
/// # Ok(())
/// # }
/// ```
///
/// # Differences from Python's multiprocessing
/// - Permits held by a process that dies are lost, as with POSIX semaphores (and Python's):
///   nothing gives them back.
#[derive(Clone)]
pub struct Semaphore {
    /// The machinery.
    core: SemCore,
}

impl Semaphore {
    /// Creates a semaphore holding `value` permits.
    ///
    /// Errors: [`Error::InvalidArgument`] above [`SEM_VALUE_MAX`]; [`Error::SharedMemory`] or
    /// [`Error::Io`] if the segment cannot be made.
    pub fn new(value: u32) -> Result<Semaphore, Error> {
        Ok(Semaphore { core: SemCore::new(value, false)? })
    }
}

semaphore_api!(Semaphore, Kind::Semaphore, "Semaphore");

/// A semaphore that cannot be released above its initial value: Python's
/// `multiprocessing.BoundedSemaphore`.
///
/// ```
/// use mp_sync::{BoundedSemaphore, Error};
///
/// # fn main() -> Result<(), Error> {
/// let sem = BoundedSemaphore::new(1)?;
/// sem.acquire()?.forget();
/// sem.release()?;
/// assert!(matches!(sem.release(), Err(Error::TooManyReleases)));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct BoundedSemaphore {
    /// The machinery.
    core: SemCore,
}

impl BoundedSemaphore {
    /// Creates a bounded semaphore holding `value` permits, which is also its maximum.
    ///
    /// Errors: as [`Semaphore::new`].
    pub fn new(value: u32) -> Result<BoundedSemaphore, Error> {
        Ok(BoundedSemaphore { core: SemCore::new(value, true)? })
    }
}

semaphore_api!(BoundedSemaphore, Kind::BoundedSemaphore, "BoundedSemaphore");

impl crate::segment::Layout for SemLayout {
    const OBJECT: mp_process::fdpass::Kind =
        mp_process::fdpass::Kind::new("mp_sync::Semaphore/BoundedSemaphore");
    const KINDS: &'static [Kind] = &[Kind::Semaphore, Kind::BoundedSemaphore];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sleeper_finds_a_permit_whose_wake_up_was_lost() {
        // A release wakes one sleeper; if that sleeper is killed before it takes the permit,
        // the wake-up is lost with it. Here the permit appears without any wake-up at all:
        // the sleeper must still find it.
        let sem = Semaphore::new(0).unwrap();
        let (tids, tid) = std::sync::mpsc::channel();
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(|| {
                tids.send(rustix::thread::gettid().as_raw_nonzero().get()).unwrap();
                let got = sem.acquire().map(SemaphoreGuard::forget);
                done.send(got.is_ok()).unwrap();
            });
            let sleeper = tid.recv().unwrap();
            assert!(mp_testkit::eventually(Duration::from_secs(30), || {
                mp_testkit::asleep_in_futex(sleeper)
            }));
            sem.core.layout().value.store(1, Ordering::SeqCst);
            assert_eq!(
                finished.recv_timeout(Duration::from_secs(30)),
                Ok(true),
                "the sleeper slept beside a permit"
            );
        });
        assert_eq!(sem.get_value(), 0);
    }
}
