//! `Condition`: a condition variable over a `Lock` or `RLock`, with one slot (and one futex
//! word) per waiter, so that `notify(n)` wakes exactly `n` waiters.

use std::fmt;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, LockResult, TryLockResult};
use crate::lock::{AnyLock, LockGuard, RLock};
use crate::segment::{Handle, Kind, SharedLayout};
use crate::slots::{MAX_WAITERS, SlotTable};
use crate::sys::Taken;
use crate::wait::{deadline, expired, futex_wait, futex_wake};

/// A slot whose waiter sleeps, waiting for a notification.
const WAITING: u32 = 1;
/// A slot whose waiter was chosen by a `notify`.
const NOTIFIED: u32 = 2;
/// A slot whose waiter gave up (timeout) before any `notify` chose it.
const TIMED_OUT: u32 = 3;

/// The shared part of a condition (its lock has its own segment).
///
/// Lives in shared memory: `#[repr(C)]`; see [`SlotTable`] for its only pointers.
#[repr(C)]
pub(crate) struct CondLayout {
    /// The ticket of the next waiter: `notify` wakes the lowest tickets first. Changed only
    /// under the condition's lock.
    next_ticket: AtomicU64,
    /// Unused.
    _reserved: AtomicU64,
    /// The waiters.
    table: SlotTable,
}

// SAFETY: `CondLayout` is `#[repr(C)]` without `Drop`, made of `AtomicU64`s and a `SlotTable`,
// itself `#[repr(C)]` arrays of `AtomicU64`s and `#[repr(C)]` `Slot`s of a `RawMutex` and
// atomics (see `slots`): every bit pattern is valid (a `RawMutex` is plain bytes in an
// `UnsafeCell`), the only pointers are the mutexes' robust-list links, every change goes through
// an atomic or a mutex, and the alignment (8) is below `LAYOUT_ALIGN`.
#[allow(unsafe_code)]
unsafe impl SharedLayout for CondLayout {}

/// A condition variable shared between processes: Python's `multiprocessing.Condition`.
///
/// Built on a [`Lock`](crate::Lock) or [`RLock`] (its own `RLock` by default, as in Python).
/// [`acquire`](Condition::acquire) takes the lock and returns a [`ConditionGuard`], whose
/// [`wait`](ConditionGuard::wait) releases the lock (every level of an `RLock`), sleeps until
/// a [`notify`](ConditionGuard::notify), and takes the lock back.
///
/// Each waiter sleeps in a slot of its own: `notify(n)` wakes exactly `n` waiters (the
/// longest-waiting first), never more, and `notify_all` every thread waiting at the time.
/// A waiter whose process is killed while it waits is found dead (its slot's robust mutex
/// reports `EOWNERDEAD`) and neither counts as a waiter nor absorbs a notification. At most
/// [`MAX_WAITERS`] threads can wait at once.
///
/// ```
/// use mp_sync::Condition;
/// use std::time::Duration;
///
/// # fn main() -> Result<(), mp_sync::Error> {
/// let cond = Condition::new()?;
/// let mut guard = cond.acquire()?;
/// assert_eq!(guard.notify(1)?, 0, "nobody waits");
/// assert!(!guard.wait_timeout(Duration::from_millis(1))?, "nobody notifies");
/// # Ok(())
/// # }
/// ```
///
/// # Differences from Python's multiprocessing
/// - Waiting and notifying happen through the guard, which proves the lock is held, so
///   Python's "cannot wait on un-acquired lock" cannot happen.
/// - `notify` and `notify_all` return how many waiters they woke.
/// - Waiters are woken in FIFO order (Python's multiprocessing leaves the order open).
#[derive(Clone)]
pub struct Condition {
    /// The lock.
    lock: AnyLock,
    /// The waiters' segment.
    handle: Arc<Handle<CondLayout>>,
}

impl Condition {
    /// Creates a condition with its own [`RLock`].
    ///
    /// Errors: as [`Condition::with_lock`].
    pub fn new() -> Result<Condition, Error> {
        Condition::with_lock(RLock::new()?)
    }

    /// Creates a condition over `lock`.
    ///
    /// Errors: [`Error::SharedMemory`] or [`Error::Io`] if the segment cannot be made.
    pub fn with_lock(lock: impl Into<AnyLock>) -> Result<Condition, Error> {
        let handle = Handle::create(Kind::Condition, |l: &mut CondLayout| l.table.init())?;
        Ok(Condition { lock: lock.into(), handle: Arc::new(handle) })
    }

    /// The lock the condition is built on.
    pub fn get_lock(&self) -> &AnyLock {
        &self.lock
    }

    /// Wraps a lock guard.
    fn guard<'a>(&'a self, guard: LockGuard<'a>) -> ConditionGuard<'a> {
        ConditionGuard { cond: self, guard }
    }

    /// Acquires the lock, blocking: as [`Lock::acquire`](crate::Lock::acquire).
    pub fn acquire(&self) -> LockResult<ConditionGuard<'_>> {
        match self.lock.acquire() {
            Ok(g) => Ok(self.guard(g)),
            Err(e) => Err(e.map(|g| self.guard(g))),
        }
    }

    /// Acquires the lock, waiting for `timeout` at most.
    pub fn acquire_timeout(&self, timeout: Duration) -> TryLockResult<ConditionGuard<'_>> {
        match self.lock.acquire_timeout(timeout) {
            Ok(g) => Ok(g.map(|g| self.guard(g))),
            Err(e) => Err(e.map(|g| self.guard(g))),
        }
    }

    /// Acquires the lock if it is free.
    pub fn try_acquire(&self) -> TryLockResult<ConditionGuard<'_>> {
        match self.lock.try_acquire() {
            Ok(g) => Ok(g.map(|g| self.guard(g))),
            Err(e) => Err(e.map(|g| self.guard(g))),
        }
    }

    /// Releases a hold of the lock whose guard was forgotten: as
    /// [`Lock::release`](crate::Lock::release).
    pub fn release(&self) -> Result<(), Error> {
        self.lock.release()
    }

    #[inline]
    fn layout(&self) -> &CondLayout {
        self.handle.get()
    }
}

/// The guard of a [`Condition`]'s lock, through which one waits and notifies. The lock is
/// released when it is dropped; it is `!Send`, like a [`LockGuard`].
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ConditionGuard<'a> {
    /// The condition.
    cond: &'a Condition,
    /// The hold of its lock.
    guard: LockGuard<'a>,
}

impl ConditionGuard<'_> {
    /// Releases the lock, waits until notified, and takes the lock back (every level of an
    /// `RLock`).
    ///
    /// Errors: [`Error::OwnerDied`] if, while this thread waited, a holder of the lock died
    /// holding it: the lock is held again all the same (the guard stays valid), but the data
    /// may be half-updated. [`Error::Borrowed`] if a `Value`/`Array` guard of this thread
    /// holds the lock (releasing it would break that guard's exclusive access).
    /// [`Error::TooManyWaiters`] if [`MAX_WAITERS`] threads already wait.
    pub fn wait(&mut self) -> Result<(), Error> {
        self.wait_until(None).map(|_| ())
    }

    /// As [`wait`](ConditionGuard::wait), giving up after `timeout`: `Ok(false)` if no
    /// notification came in time (the lock is held again either way).
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<bool, Error> {
        self.wait_until(deadline(Some(timeout)))
    }

    /// Waits until `predicate` holds, checking it first and after each wake-up, with the lock
    /// held: Python's `wait_for(predicate)`.
    ///
    /// Errors: as [`wait`](ConditionGuard::wait).
    pub fn wait_for(&mut self, predicate: impl FnMut() -> bool) -> Result<(), Error> {
        self.wait_for_until(predicate, None).map(drop)
    }

    /// As [`wait_for`](ConditionGuard::wait_for), giving up after `timeout`: Python's
    /// `wait_for(predicate, timeout)`. Returns the last result of `predicate`: `Ok(false)` only
    /// once `timeout` has passed (the lock is held again either way).
    ///
    /// Errors: as [`wait`](ConditionGuard::wait).
    pub fn wait_for_timeout(
        &mut self,
        predicate: impl FnMut() -> bool,
        timeout: Duration,
    ) -> Result<bool, Error> {
        self.wait_for_until(predicate, deadline(Some(timeout)))
    }

    /// Waits until `predicate` holds or `deadline` passes (`None`: no deadline).
    fn wait_for_until(
        &mut self,
        mut predicate: impl FnMut() -> bool,
        deadline: Option<Instant>,
    ) -> Result<bool, Error> {
        loop {
            if predicate() {
                return Ok(true);
            }
            if expired(deadline) {
                return Ok(false);
            }
            self.wait_until(deadline)?;
        }
    }

    /// Wakes `n` of the threads waiting on the condition (the longest-waiting first), or all
    /// of them if fewer wait; returns how many it woke. Each wakes once this guard's lock is
    /// released.
    pub fn notify(&mut self, n: usize) -> Result<usize, Error> {
        if n == 0 {
            return Ok(0);
        }
        let table = &self.cond.layout().table;
        let mut waiting = [(0u64, 0usize); MAX_WAITERS];
        let mut count = 0;
        table.scan(|i, slot| {
            if slot.state.load(Ordering::Acquire) == WAITING
                && let Some(entry) = waiting.get_mut(count)
            {
                *entry = (slot.tag.load(Ordering::Relaxed), i);
                count += 1;
            }
        });
        let waiting = waiting.get_mut(..count).unwrap_or_default();
        waiting.sort_unstable();
        let mut woken = 0;
        for &(_, i) in waiting.iter() {
            if woken == n {
                break;
            }
            let Some(slot) = table.slot(i) else { continue };
            if slot
                .state
                .compare_exchange(WAITING, NOTIFIED, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                futex_wake(&slot.state, 1);
                woken += 1;
            }
        }
        Ok(woken)
    }

    /// Wakes every thread waiting on the condition; returns how many.
    pub fn notify_all(&mut self) -> Result<usize, Error> {
        self.notify(usize::MAX)
    }

    /// How many threads wait on the condition now (dead waiters are found and not counted).
    pub fn n_waiters(&self) -> usize {
        let mut count = 0;
        self.cond.layout().table.scan(|_, slot| {
            if slot.state.load(Ordering::Acquire) == WAITING {
                count += 1;
            }
        });
        count
    }

    /// Keeps the lock held after the guard is gone, to be released with
    /// [`Condition::release`]: as [`LockGuard::forget`].
    pub fn forget(self) {
        self.guard.forget();
    }

    /// One wait: register, release, sleep, withdraw or be notified, relock.
    fn wait_until(&mut self, deadline: Option<Instant>) -> Result<bool, Error> {
        let core = self.guard.core();
        if core.is_borrowed() {
            return Err(Error::Borrowed);
        }
        let layout = self.cond.layout();
        let (relocked, notified, failure) = layout.table.with_slot(|slot| {
            let ticket = layout.next_ticket.load(Ordering::Relaxed);
            layout.next_ticket.store(ticket.wrapping_add(1), Ordering::Relaxed);
            slot.tag.store(ticket, Ordering::Relaxed);
            slot.state.store(WAITING, Ordering::SeqCst);
            let depth = core.unlock_all()?;
            let mut failure = None;
            let notified = loop {
                if slot.state.load(Ordering::Acquire) == NOTIFIED {
                    break true;
                }
                let timed_out = match futex_wait(&slot.state, WAITING, deadline) {
                    Ok(timed_out) => timed_out,
                    Err(e) => {
                        failure = Some(e);
                        true
                    }
                };
                if timed_out {
                    // Withdraw, unless a notification chose this slot first.
                    break slot
                        .state
                        .compare_exchange(WAITING, TIMED_OUT, Ordering::AcqRel, Ordering::Acquire)
                        .is_err();
                }
            };
            // The lock is taken back before the slot is freed.
            Ok::<_, Error>((core.relock(depth), notified, failure))
        })??;
        match relocked? {
            Taken::Clean => {}
            Taken::OwnerDied => return Err(Error::OwnerDied),
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(notified),
        }
    }
}

impl fmt::Debug for ConditionGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConditionGuard").finish_non_exhaustive()
    }
}

impl AsFd for Condition {
    /// The doorbell of the condition's lock: as [`Lock::as_fd`](crate::Lock).
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.lock.as_fd()
    }
}

/// The serialised shape of a condition.
#[derive(Serialize)]
struct WireRef<'a> {
    /// The lock.
    lock: &'a AnyLock,
    /// The waiters' segment.
    #[serde(serialize_with = "serialize_handle")]
    handle: &'a Arc<Handle<CondLayout>>,
}

fn serialize_handle<S: Serializer>(h: &&Arc<Handle<CondLayout>>, s: S) -> Result<S::Ok, S::Error> {
    h.serialize(s)
}

/// The received shape of a condition.
#[derive(Deserialize)]
struct Wire {
    /// The lock.
    lock: AnyLock,
    /// The waiters' segment.
    #[serde(deserialize_with = "deserialize_handle")]
    handle: Arc<Handle<CondLayout>>,
}

fn deserialize_handle<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Arc<Handle<CondLayout>>, D::Error> {
    Handle::deserialize(d, &[Kind::Condition])
}

impl Serialize for Condition {
    /// Serialises the lock and the waiters' segment (only through `mp-process`'s
    /// fd-carrying encoder).
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        WireRef { lock: &self.lock, handle: &self.handle }.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Condition {
    /// Receives a condition, checking its segments.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let Wire { lock, handle } = Wire::deserialize(d)?;
        Ok(Condition { lock, handle })
    }
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Condition").field("lock", &self.lock).finish_non_exhaustive()
    }
}

impl crate::segment::Layout for CondLayout {
    const OBJECT: mp_process::fdpass::Kind = mp_process::fdpass::Kind::new("mp_sync::Condition");
    const KINDS: &'static [Kind] = &[Kind::Condition];
}
