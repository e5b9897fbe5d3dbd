//! `Lock` and `RLock`: robust, process-shared pthread mutexes in shared memory, their RAII
//! guard, and [`AnyLock`], either of them.

use std::fmt;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::process::Pid;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, LockError, LockResult, TryLockResult};
use crate::segment::{Handle, Kind, SharedLayout};
use crate::sys::{MutexKind, RawMutex, Taken};

/// The shared part of a `Lock` or `RLock`.
///
/// Lives in shared memory: `#[repr(C)]`; its only pointers are the robust-list links inside
/// the pthread mutex (see `sys`).
#[repr(C)]
pub(crate) struct LockLayout {
    /// The robust, process-shared mutex: error-checking for a `Lock`, recursive for an
    /// `RLock`.
    mutex: RawMutex,
    /// How many levels the holder of an `RLock` holds; 0 when it is free. Written only by
    /// the holder.
    depth: AtomicU32,
    /// 1 while a `Value`/`Array` guard holds the lock (so the holder must not release it or
    /// take another copy through it); written only by the holder.
    borrowed: AtomicU32,
}

// SAFETY: `LockLayout` is `#[repr(C)]` without `Drop`; its fields are a `RawMutex` (a
// `pthread_mutex_t` in an `UnsafeCell`: plain bytes, valid for every bit pattern, changed only
// through the pthread functions and the fast paths, whose only pointers are its robust-list
// links) and two `AtomicU32`s (valid for every bit pattern, changed atomically). Its alignment is
// the mutex's, 8, below `LAYOUT_ALIGN`.
#[allow(unsafe_code)]
unsafe impl SharedLayout for LockLayout {}

/// A marker that makes a guard `!Send` (it must be dropped by the thread that acquired the
/// lock, which pthread requires) but `Sync`.
pub(crate) type NotSend = PhantomData<std::sync::MutexGuard<'static, ()>>;

/// The machinery shared by `Lock`, `RLock` and `AnyLock`.
///
/// # The contract of the mutex calls
///
/// Every call that takes or releases the segment's mutex meets the contract on [`RawMutex`]:
///
/// 1. *Initialised*: [`LockCore::new`] initialises the mutex (`init_mutex`) in
///    `Handle::create`'s `init`, before the segment can be reached; a received segment is one
///    whose header `Handle` checked (magic, version, kind `Lock` or `RLock`), so `LockCore::new`
///    made it. Nothing initialises it again.
/// 2. *Mapped while held*: every hold is counted on the handle it was taken through (`taken`
///    calls `Handle::hold_taken`) until it is released (`unlock` calls `Handle::hold_released`
///    just before), and a handle with holds counted leaves its segment mapped when it is
///    dropped. So the mapping outlives the hold however the guard ends: dropped, forgotten
///    with [`LockGuard::forget`] (whose registry keeps the handle anyway), or leaked. Only the
///    holder changes the count, as it does `depth`: `unlock` is called only by the thread
///    holding the lock (a guard's drop, `release` of this thread's forgotten hold,
///    `unlock_all` under a guard).
/// 3. *Written only by the protocol*: the segment is written only by this crate's code (the
///    crate's trust model; see the crate documentation).
#[derive(Clone)]
pub(crate) struct LockCore {
    /// The segment.
    handle: Arc<Handle<LockLayout>>,
    /// Whether the mutex is recursive (an `RLock`).
    recursive: bool,
}

/// Held locks that have no guard (`LockGuard::forget`), by thread and segment. Holding the
/// handle keeps the mutex mapped while it is in the thread's robust list, and lets `release`
/// check that the calling thread holds the lock without a guard.
static FORGOTTEN: parking_lot::Mutex<Vec<Forgotten>> = parking_lot::Mutex::new(Vec::new());

/// A held lock without a guard: the process and thread holding it, the segment's id, and the
/// handle that took it. The pid matters after a `fork`: the child inherits the parent's
/// entries, and its forking thread the parent's `ThreadId`, but not the holds.
type Forgotten = (Pid, ThreadId, u64, Arc<Handle<LockLayout>>);

/// Maps the error of a pthread lock call.
pub(crate) fn lock_error(e: Errno) -> Error {
    match e {
        Errno::DEADLK => Error::AlreadyHeld,
        Errno::NOTRECOVERABLE => Error::Corrupt("the lock was left unrecoverable"),
        e => Error::io("pthread_mutex_lock", e),
    }
}

impl LockCore {
    /// A new lock.
    fn new(recursive: bool) -> Result<Self, Error> {
        let kind = if recursive { Kind::RLock } else { Kind::Lock };
        let mutex_kind = if recursive { MutexKind::Recursive } else { MutexKind::ErrorCheck };
        let handle =
            Handle::create(kind, |l: &mut LockLayout| init_mutex(&mut l.mutex, mutex_kind))?;
        Ok(LockCore { handle: Arc::new(handle), recursive })
    }

    /// The shared layout.
    #[inline]
    fn layout(&self) -> &LockLayout {
        self.handle.get()
    }

    /// Records a successful lock: counts the hold on the handle (point 2 of the contract) and
    /// the level, or resets the state a dead holder left.
    #[inline(always)]
    fn taken(&self, taken: Taken) -> Taken {
        self.handle.hold_taken();
        let l = self.layout();
        match taken {
            Taken::Clean => {
                if self.recursive {
                    l.depth.store(l.depth.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
                }
            }
            Taken::OwnerDied => {
                l.depth.store(1, Ordering::Relaxed);
                l.borrowed.store(0, Ordering::Relaxed);
            }
        }
        taken
    }

    /// Locks, blocking (in `pthread_mutex_lock`, which sleeps on the futex at once when the
    /// lock is taken).
    ///
    /// There is no spinning before the sleep: on two cores, spinning (on the lock word, for
    /// up to a microsecond or more) measured slower both uncontended and in the two-process
    /// counter benchmark, because the spinner takes the lock's cache line away from the holder.
    #[inline]
    pub(crate) fn lock(&self) -> Result<Taken, Error> {
        // SAFETY: `RawMutex::lock` asks for the three points of the contract on `RawMutex`,
        // which every call on this mutex meets (see `LockCore`): initialised by `LockCore::new`,
        // the hold counted by `taken` right after, written only by this crate.
        let taken = unsafe { self.layout().mutex.lock() }.map_err(lock_error)?;
        Ok(self.taken(taken))
    }

    /// Locks if free.
    pub(crate) fn try_lock(&self) -> Result<Option<Taken>, Error> {
        if self.handle.is_polled_here() {
            self.handle.shared.drain();
        }
        // SAFETY: `RawMutex::try_lock` asks for the contract on `RawMutex`, met as in `lock`.
        match unsafe { self.layout().mutex.try_lock() }.map_err(lock_error)? {
            Some(t) => Ok(Some(self.taken(t))),
            None => Ok(None),
        }
    }

    /// Locks, blocking until `deadline` at most.
    pub(crate) fn lock_until(&self, deadline: Instant) -> Result<Option<Taken>, Error> {
        // SAFETY: `RawMutex::try_lock` asks for the contract on `RawMutex`, met as in `lock`.
        if let Some(t) = unsafe { self.layout().mutex.try_lock() }.map_err(lock_error)? {
            return Ok(Some(self.taken(t)));
        }
        // SAFETY: `RawMutex::lock_until` asks for the contract on `RawMutex`, met as in `lock`.
        match unsafe { self.layout().mutex.lock_until(deadline) }.map_err(lock_error)? {
            Some(t) => Ok(Some(self.taken(t))),
            None => Ok(None),
        }
    }

    /// Locks, blocking for `timeout` at most.
    pub(crate) fn lock_timeout(&self, timeout: Duration) -> Result<Option<Taken>, Error> {
        match Instant::now().checked_add(timeout) {
            Some(deadline) => self.lock_until(deadline),
            None => self.lock().map(Some),
        }
    }

    /// Releases one level held by this thread, ringing the doorbell when the lock becomes
    /// free.
    #[inline]
    pub(crate) fn unlock(&self) -> Result<(), Error> {
        let l = self.layout();
        let mut freed = true;
        if self.recursive {
            let depth = l.depth.load(Ordering::Relaxed).saturating_sub(1);
            l.depth.store(depth, Ordering::Relaxed);
            freed = depth == 0;
        }
        self.handle.hold_released();
        // SAFETY: `RawMutex::unlock` asks for points 1 and 3 of the contract on `RawMutex`,
        // met as in `lock`.
        if let Err(e) = unsafe { l.mutex.unlock() } {
            // Not ours after all: put the counts back.
            self.handle.hold_taken();
            if self.recursive {
                l.depth.fetch_add(1, Ordering::Relaxed);
            }
            return Err(match e {
                Errno::PERM => Error::NotHeld,
                e => Error::io("pthread_mutex_unlock", e),
            });
        }
        if freed {
            after_release();
            self.handle.shared.ring_if_polled();
        }
        Ok(())
    }

    /// How many levels this thread holds, given that it holds the lock.
    pub(crate) fn held_depth(&self) -> u32 {
        if self.recursive { self.layout().depth.load(Ordering::Relaxed).max(1) } else { 1 }
    }

    /// Releases every level this thread holds (it holds the lock), returning how many.
    pub(crate) fn unlock_all(&self) -> Result<u32, Error> {
        let depth = self.held_depth();
        for _ in 0..depth {
            self.unlock()?;
        }
        Ok(depth)
    }

    /// Takes `depth` levels again after [`unlock_all`](LockCore::unlock_all); whether the
    /// first one came from a dead holder.
    pub(crate) fn relock(&self, depth: u32) -> Result<Taken, Error> {
        let first = self.lock()?;
        for _ in 1..depth {
            self.lock()?;
        }
        Ok(first)
    }

    /// Whether a `Value`/`Array` guard holds the lock (read by its holder).
    ///
    /// Only an `RLock` needs the flag: a thread that holds a `Lock` cannot take it again
    /// (`AlreadyHeld`), so a guard through a `Lock` is exclusive without it.
    #[inline]
    pub(crate) fn is_borrowed(&self) -> bool {
        self.recursive && self.layout().borrowed.load(Ordering::Relaxed) != 0
    }

    /// Sets or clears the borrow flag (by the holder of an `RLock`).
    #[inline]
    pub(crate) fn set_borrowed(&self, borrowed: bool) {
        if self.recursive {
            self.layout().borrowed.store(u32::from(borrowed), Ordering::Relaxed);
        }
    }

    /// A guard for a lock just taken, or the owner-died error carrying it.
    #[inline]
    fn guard(&self, taken: Taken) -> LockResult<LockGuard<'_>> {
        let guard = LockGuard { core: self, _not_send: PhantomData };
        match taken {
            Taken::Clean => Ok(guard),
            Taken::OwnerDied => Err(LockError::OwnerDied(guard)),
        }
    }

    /// Python's blocking `acquire`.
    #[inline]
    pub(crate) fn acquire(&self) -> LockResult<LockGuard<'_>> {
        let taken = self.lock()?;
        self.guard(taken)
    }

    /// Wraps the outcome of a non-blocking or timed lock.
    fn try_guard(&self, taken: Result<Option<Taken>, Error>) -> TryLockResult<LockGuard<'_>> {
        match taken? {
            Some(t) => self.guard(t).map(Some),
            None => Ok(None),
        }
    }

    /// Python's `acquire(timeout=...)`.
    pub(crate) fn acquire_timeout(&self, timeout: Duration) -> TryLockResult<LockGuard<'_>> {
        if timeout.is_zero() {
            return self.try_acquire();
        }
        self.try_guard(self.lock_timeout(timeout))
    }

    /// Python's `acquire(block=False)`.
    pub(crate) fn try_acquire(&self) -> TryLockResult<LockGuard<'_>> {
        self.try_guard(self.try_lock())
    }

    /// Python's `release`, for a hold whose guard was forgotten.
    pub(crate) fn release(&self) -> Result<(), Error> {
        let (pid, me) = (rustix::process::getpid(), std::thread::current().id());
        let id = self.handle.shared.id();
        let entry = {
            let mut forgotten = FORGOTTEN.lock();
            // The most recent hold first, so an RLock unwinds its levels in order.
            let found =
                forgotten.iter().rposition(|(p, t, i, _)| *p == pid && *t == me && *i == id);
            found.map(|at| forgotten.remove(at))
        };
        let Some((_, _, _, handle)) = entry else {
            if self.recursive && self.layout().depth.load(Ordering::Relaxed) == 0 {
                return Err(Error::TooManyReleases);
            }
            return Err(Error::NotHeld);
        };
        // Release through the handle that took the lock (the one in the robust list).
        LockCore { handle, recursive: self.recursive }.unlock()
    }

    /// Registers this handle as a poller and returns the doorbell.
    pub(crate) fn doorbell(&self) -> BorrowedFd<'_> {
        self.handle.doorbell()
    }

    /// Serialises the segment.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.handle.serialize(s)
    }

    /// Receives a segment of `kind`.
    fn deserialize<'de, D: Deserializer<'de>>(d: D, recursive: bool) -> Result<Self, D::Error> {
        let kind = if recursive { Kind::RLock } else { Kind::Lock };
        let handle = Handle::deserialize(d, &[kind])?;
        Ok(LockCore { handle, recursive })
    }
}

/// Initialises a mutex of a segment that is not shared yet.
pub(crate) fn init_mutex(mutex: &mut RawMutex, kind: MutexKind) -> Result<(), Error> {
    mutex.init(kind).map_err(|e| Error::io("pthread_mutex_init", e))
}

/// Orders the release of a mutex before the read of the pollers count (step 2 of the
/// doorbell protocol), and makes a freeing release the full fence [`LockGuard`] promises.
///
/// On x86-64, a robust mutex is released with an atomic exchange (by `sys`'s fast path or by
/// glibc), a full barrier in hardware, so only the compiler needs stopping; elsewhere a full
/// fence is needed.
#[inline(always)]
pub(crate) fn after_release() {
    #[cfg(target_arch = "x86_64")]
    std::sync::atomic::compiler_fence(Ordering::SeqCst);
    #[cfg(not(target_arch = "x86_64"))]
    std::sync::atomic::fence(Ordering::SeqCst);
}

/// The guard of a held [`Lock`], [`RLock`] or [`AnyLock`]: the lock is released when it is
/// dropped.
///
/// It is `!Send`: pthread requires the thread that locked a mutex to unlock it. An `RLock`
/// held at several levels has a guard per level.
///
/// A drop that frees the lock (the last level of an `RLock`) is a sequentially consistent
/// fence, as [`fence(SeqCst)`](std::sync::atomic::fence): a store before it and a load after
/// it are not reordered, so code that stores, releases the lock, and then reads another
/// process's "I am asleep" flag needs no sequentially consistent store of its own
/// (`mp-queue`'s ring relies on this).
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct LockGuard<'a> {
    /// The lock.
    core: &'a LockCore,
    /// `!Send`.
    _not_send: NotSend,
}

impl<'a> LockGuard<'a> {
    /// Keeps the lock held after the guard is gone, to be released later by the same thread
    /// with `release()`, as Python code does with `acquire()` and `release()`.
    ///
    /// ```
    /// # fn main() -> Result<(), mp_sync::Error> {
    /// let lock = mp_sync::Lock::new()?;
    /// lock.acquire()?.forget();
    /// // ... the lock is held ...
    /// lock.release()?;
    /// assert!(lock.release().is_err(), "released twice");
    /// # Ok(())
    /// # }
    /// ```
    pub fn forget(self) {
        let this = ManuallyDrop::new(self);
        let entry = (
            rustix::process::getpid(),
            std::thread::current().id(),
            this.core.handle.shared.id(),
            Arc::clone(&this.core.handle),
        );
        FORGOTTEN.lock().push(entry);
    }

    /// The lock's machinery.
    pub(crate) fn core(&self) -> &'a LockCore {
        self.core
    }
}

impl Drop for LockGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        // The guard proves this thread holds the lock, so this cannot fail.
        let _ = self.core.unlock();
    }
}

impl fmt::Debug for LockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard").field("recursive", &self.core.recursive).finish_non_exhaustive()
    }
}

macro_rules! lock_api {
    ($name:ident) => {
        impl $name {
            /// Acquires the lock, blocking until it is free.
            ///
            /// Returns the guard, or [`LockError::OwnerDied`] with the guard if the previous
            /// holder died holding the lock (the lock is yours and works normally; the data
            /// it protects may be half-updated).
            #[inline]
            pub fn acquire(&self) -> LockResult<LockGuard<'_>> {
                self.core.acquire()
            }

            /// Acquires the lock, waiting for `timeout` at most: `Ok(None)` if it stayed
            /// taken. A zero timeout tries once without blocking.
            ///
            /// The wait is never shorter than `timeout` (measured on the monotonic clock).
            /// `pthread_mutex_timedlock` takes a wall-clock (`CLOCK_REALTIME`) deadline, so it
            /// is given slices of at most a second: a backward jump of the wall clock can
            /// lengthen the wait by up to a second, a forward jump only causes a retry.
            pub fn acquire_timeout(&self, timeout: Duration) -> TryLockResult<LockGuard<'_>> {
                self.core.acquire_timeout(timeout)
            }

            /// Acquires the lock if it is free, without blocking: `Ok(None)` if it is taken.
            pub fn try_acquire(&self) -> TryLockResult<LockGuard<'_>> {
                self.core.try_acquire()
            }

            /// Releases a hold whose guard was [forgotten](LockGuard::forget), as Python's
            /// `release()`.
            ///
            /// Errors: [`Error::NotHeld`] if this thread holds no such hold (the lock is free,
            /// another thread or process holds it, or this thread holds it only through a
            /// guard).
            pub fn release(&self) -> Result<(), Error> {
                self.core.release()
            }
        }

        impl AsFd for $name {
            /// The lock's doorbell: it polls readable when the lock has been released since
            /// it was last drained, a hint that [`try_acquire`](Self::try_acquire) may
            /// succeed.
            ///
            /// The first call registers this handle (and its clones) in this process as a
            /// poller: from then until they are all dropped, every release in every process
            /// costs one extra `write`, and `try_acquire` drains the doorbell before it
            /// tries. See the crate documentation for the protocol.
            fn as_fd(&self) -> BorrowedFd<'_> {
                self.core.doorbell()
            }
        }

        impl Serialize for $name {
            /// Serialises the lock's segment and doorbell; only `mp-process`'s fd-carrying
            /// encoder (process arguments, messages) can carry them.
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                self.core.serialize(s)
            }
        }
    };
}

/// A lock shared between processes: Python's `multiprocessing.Lock`.
///
/// A robust, process-shared, error-checking pthread mutex in a shared memory segment. Clones
/// share the lock; it passes into a child as a `Process` argument or inside a message, under
/// every start method.
///
/// If the thread holding it dies (its process is killed, or the thread exits), the next
/// acquirer gets the lock with [`LockError::OwnerDied`], as `std::sync::Mutex` reports
/// poisoning: nobody deadlocks.
///
/// ```
/// use mp_sync::Lock;
///
/// # fn main() -> Result<(), mp_sync::Error> {
/// let lock = Lock::new()?;
/// {
///     let _guard = lock.acquire()?;
///     assert!(lock.try_acquire().is_err(), "a Lock is not recursive");
/// }
/// assert!(lock.try_acquire()?.is_some());
/// # Ok(())
/// # }
/// ```
///
/// # Differences from Python's multiprocessing
/// - Only the thread that acquired a `Lock` can release it ([`Error::NotHeld`]); Python's
///   `Lock` is a semaphore that any thread or process may release.
/// - Acquiring a `Lock` the calling thread already holds fails with [`Error::AlreadyHeld`]
///   instead of deadlocking (or returning `False` for a non-blocking acquire).
/// - A dead holder does not deadlock the others ([`LockError::OwnerDied`]).
#[derive(Clone)]
pub struct Lock {
    /// The machinery.
    core: LockCore,
}

impl Lock {
    /// Creates a lock, free.
    ///
    /// Errors: [`Error::SharedMemory`] or [`Error::Io`] if the segment, its eventfd or the
    /// mutex cannot be created.
    pub fn new() -> Result<Lock, Error> {
        Ok(Lock { core: LockCore::new(false)? })
    }
}

lock_api!(Lock);

impl<'de> Deserialize<'de> for Lock {
    /// Receives a lock, checking that the segment holds one.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Lock { core: LockCore::deserialize(d, false)? })
    }
}

impl fmt::Debug for Lock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lock").finish_non_exhaustive()
    }
}

/// A recursive lock shared between processes: Python's `multiprocessing.RLock`.
///
/// The thread that holds it may acquire it again; it is free once released as many times as
/// it was acquired. Otherwise it is a [`Lock`]: robust (a dead holder gives
/// [`LockError::OwnerDied`], and the next holder holds it at one level), process-shared,
/// passable to children and in messages.
///
/// ```
/// use mp_sync::RLock;
///
/// # fn main() -> Result<(), mp_sync::Error> {
/// let lock = RLock::new()?;
/// let outer = lock.acquire()?;
/// let inner = lock.acquire()?;
/// drop(inner);
/// drop(outer);
/// assert!(matches!(lock.release(), Err(mp_sync::Error::TooManyReleases)));
/// # Ok(())
/// # }
/// ```
///
/// # Differences from Python's multiprocessing
/// - Releasing more times than acquired is [`Error::TooManyReleases`] and releasing one held
///   by another thread [`Error::NotHeld`] (Python raises `AssertionError` for both).
/// - A dead holder does not deadlock the others ([`LockError::OwnerDied`]).
#[derive(Clone)]
pub struct RLock {
    /// The machinery.
    core: LockCore,
}

impl RLock {
    /// Creates a recursive lock, free.
    ///
    /// Errors: as [`Lock::new`].
    pub fn new() -> Result<RLock, Error> {
        Ok(RLock { core: LockCore::new(true)? })
    }
}

lock_api!(RLock);

impl<'de> Deserialize<'de> for RLock {
    /// Receives a recursive lock, checking that the segment holds one.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(RLock { core: LockCore::deserialize(d, true)? })
    }
}

impl fmt::Debug for RLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RLock").finish_non_exhaustive()
    }
}

/// Either kind of lock: what a [`Condition`](crate::Condition), [`Value`](crate::Value) or
/// [`Array`](crate::Array) is built on (Python accepts a `Lock` or an `RLock` there too).
///
/// ```
/// use mp_sync::{AnyLock, Lock};
///
/// # fn main() -> Result<(), mp_sync::Error> {
/// let lock: AnyLock = Lock::new()?.into();
/// let _guard = lock.acquire()?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum AnyLock {
    /// A [`Lock`].
    Lock(Lock),
    /// An [`RLock`].
    RLock(RLock),
}

impl AnyLock {
    /// The machinery.
    #[inline]
    pub(crate) fn core(&self) -> &LockCore {
        match self {
            AnyLock::Lock(l) => &l.core,
            AnyLock::RLock(l) => &l.core,
        }
    }
}

impl AnyLock {
    /// Acquires the lock, blocking: as [`Lock::acquire`].
    #[inline]
    pub fn acquire(&self) -> LockResult<LockGuard<'_>> {
        self.core().acquire()
    }

    /// Acquires the lock, waiting for `timeout` at most: as [`Lock::acquire_timeout`].
    pub fn acquire_timeout(&self, timeout: Duration) -> TryLockResult<LockGuard<'_>> {
        self.core().acquire_timeout(timeout)
    }

    /// Acquires the lock if it is free: as [`Lock::try_acquire`].
    pub fn try_acquire(&self) -> TryLockResult<LockGuard<'_>> {
        self.core().try_acquire()
    }

    /// Releases a forgotten hold: as [`Lock::release`].
    pub fn release(&self) -> Result<(), Error> {
        self.core().release()
    }
}

impl AsFd for AnyLock {
    /// The lock's doorbell: as [`Lock::as_fd`].
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.core().doorbell()
    }
}

impl From<Lock> for AnyLock {
    fn from(lock: Lock) -> Self {
        AnyLock::Lock(lock)
    }
}

impl From<RLock> for AnyLock {
    fn from(lock: RLock) -> Self {
        AnyLock::RLock(lock)
    }
}

impl crate::segment::Layout for LockLayout {
    const OBJECT: mp_process::fdpass::Kind = mp_process::fdpass::Kind::new("mp_sync::Lock/RLock");
    const KINDS: &'static [Kind] = &[Kind::Lock, Kind::RLock];
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether this process maps the segment named `name` (a memfd's display name).
    fn mapped(name: &str) -> bool {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        maps.lines().any(|line| line.contains(name))
    }

    /// The display name of a lock's segment.
    fn segment(core: &LockCore) -> String {
        core.handle.shared.shm().name().to_owned()
    }

    #[test]
    fn a_leaked_guard_keeps_its_segment_mapped() {
        // Before, the segment of a lock whose guard was leaked (`mem::forget`) was unmapped
        // with the lock's last handle, while the mutex stayed in this thread's robust list:
        // the next lock of any robust mutex by this thread wrote through the dangling link
        // (into whatever was mapped there next), and the kernel followed it when the thread
        // exited. Now such a segment stays mapped.
        let lock = Lock::new().unwrap();
        let name = segment(&lock.core);
        std::mem::forget(lock.acquire().unwrap());
        drop(lock);
        assert!(mapped(&name), "the segment of a held lock was unmapped");

        let rlock = RLock::new().unwrap();
        let name = segment(&rlock.core);
        let outer = rlock.acquire().unwrap();
        std::mem::forget(rlock.acquire().unwrap());
        drop(outer);
        drop(rlock);
        assert!(mapped(&name), "the segment of a held RLock was unmapped");

        // Locks made afterwards work, in this thread and in one that exits holding one.
        let other = Lock::new().unwrap();
        for _ in 0..3 {
            drop(other.acquire().unwrap());
        }
        std::thread::scope(|s| {
            s.spawn(|| std::mem::forget(other.acquire().unwrap()));
        });
        assert!(matches!(other.acquire(), Err(LockError::OwnerDied(_))));
    }

    #[test]
    fn a_released_lock_unmaps_its_segment() {
        let lock = Lock::new().unwrap();
        let name = segment(&lock.core);
        drop(lock.acquire().unwrap());
        lock.acquire().unwrap().forget();
        lock.release().unwrap();
        assert!(mapped(&name));
        drop(lock);
        assert!(!mapped(&name), "the segment of a free lock stayed mapped");
    }
}
