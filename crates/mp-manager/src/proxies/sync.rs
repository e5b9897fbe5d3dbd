//! Proxies of the manager's synchronisation types: [`QueueProxy`], [`JoinableQueueProxy`],
//! [`LockProxy`], [`RLockProxy`], [`SemaphoreProxy`], [`BoundedSemaphoreProxy`],
//! [`ConditionProxy`], [`EventProxy`], [`BarrierProxy`], and the guards of held locks and
//! permits ([`LockGuard`], [`SemaphoreGuard`]).
//!
//! A call that waits (`get`, `acquire`, `wait`) waits in the manager, on this thread's own
//! connection: other threads of the process go on calling. A timeout travels with the call and
//! is applied in the manager. Locks are owned by a thread of a process, as in Python: the
//! manager records the caller's pid and an id of its thread. Unlike CPython's manager, it
//! releases every lock a process held when that process ends, however it ends (killed
//! included), and wakes the waiters.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Result;
use crate::manager::Manager;
use crate::proxies::proxy_impls;
use crate::proxy::{Handle, encode_item};

/// Numbers the threads that take locks, in this process and the processes forked from it
/// (pids tell those apart).
static NEXT_THREAD: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// This thread's id, as the manager records lock owners.
    static THREAD: u64 = NEXT_THREAD.fetch_add(1, Ordering::Relaxed);
}

/// This thread's id for the manager (0 while the thread's locals are being destroyed: a
/// release then fails as one by another thread would).
fn thread_id() -> u64 {
    THREAD.try_with(|t| *t).unwrap_or(0)
}

/// A `put` of `value` on `handle`'s queue, waiting `timeout` (`None`: for ever).
fn put<T: Serialize>(handle: &Handle, value: &T, timeout: Option<Duration>) -> Result<()> {
    let item = encode_item(handle.link(), value)?;
    handle.call("put", &(item, timeout))
}

/// A `get` from `handle`'s queue, waiting `timeout` (`None`: for ever).
fn get<T: DeserializeOwned>(handle: &Handle, timeout: Option<Duration>) -> Result<T> {
    handle.call("get", &timeout)
}

/// An `acquire` of `handle`'s lock (or permit) by this thread: whether it was taken.
fn acquire(handle: &Handle, timeout: Option<Duration>) -> Result<bool> {
    handle.call("acquire", &(thread_id(), timeout))
}

/// The methods every queue proxy has.
macro_rules! queue_api {
    () => {
        /// Puts `value` at the end, waiting for room if the queue is full: Python's
        /// `put(value)`. Proxies inside `value` keep their objects alive while it is queued.
        pub fn put(&self, value: T) -> Result<()> {
            put(&self.handle, &value, None)
        }

        /// Puts `value`, waiting for room `timeout` at most: [`Error::Full`](crate::Error::Full)
        /// if none came (Python's `put(value, timeout=t)`).
        pub fn put_timeout(&self, value: T, timeout: Duration) -> Result<()> {
            put(&self.handle, &value, Some(timeout))
        }

        /// Puts `value` if there is room now, else [`Error::Full`](crate::Error::Full):
        /// Python's `put_nowait(value)`.
        pub fn try_put(&self, value: T) -> Result<()> {
            put(&self.handle, &value, Some(Duration::ZERO))
        }

        /// Takes the oldest item, waiting for one: Python's `get()`.
        pub fn get(&self) -> Result<T> {
            get(&self.handle, None)
        }

        /// Takes the oldest item, waiting `timeout` at most: [`Error::Empty`](crate::Error::Empty)
        /// if none came (Python's `get(timeout=t)`, which raises `queue.Empty`).
        pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
            get(&self.handle, Some(timeout))
        }

        /// Takes the oldest item if there is one now, else
        /// [`Error::Empty`](crate::Error::Empty): Python's `get_nowait()`.
        pub fn try_get(&self) -> Result<T> {
            get(&self.handle, Some(Duration::ZERO))
        }

        /// The number of items queued now.
        pub fn qsize(&self) -> Result<usize> {
            self.handle.call::<_, u64>("qsize", &()).map(|n| n as usize)
        }

        /// Whether the queue is empty now.
        pub fn empty(&self) -> Result<bool> {
            self.handle.call("empty", &())
        }

        /// Whether the queue is full now (never, without a maximum size).
        pub fn full(&self) -> Result<bool> {
            self.handle.call("full", &())
        }
    };
}

/// A queue held by a manager: Python's `manager.Queue()` (a `queue.Queue` in the manager's
/// process), made by [`Manager::queue`] or [`Manager::queue_with_maxsize`].
///
/// Items are values of `T` (proxies of the same manager inside them included); they are taken
/// in the order they were put. A `get` that waits blocks only its own thread.
///
/// ```
/// let manager = mp_manager::Manager::start()?;
/// let queue = manager.queue::<String>()?;
/// queue.put("hello".to_string())?;
/// assert_eq!(queue.get()?, "hello");
/// assert!(matches!(queue.try_get(), Err(mp_manager::Error::Empty)));
/// # Ok::<(), mp_manager::Error>(())
/// ```
pub struct QueueProxy<T> {
    handle: Handle,
    _type: PhantomData<fn(T) -> T>,
}

proxy_impls!(QueueProxy<T>, "Queue");

impl<T> QueueProxy<T> {
    fn from_handle(handle: Handle) -> Self {
        QueueProxy { handle, _type: PhantomData }
    }

    /// The handle, for the crate's tests.
    #[cfg(test)]
    pub(crate) fn handle_for_tests(&self) -> &Handle {
        &self.handle
    }
}

impl<T: Serialize + DeserializeOwned> QueueProxy<T> {
    queue_api!();
}

/// A queue whose producers can wait until every item was processed: Python's
/// `manager.JoinableQueue()`, made by [`Manager::joinable_queue`]. The methods of a
/// [`QueueProxy`], with [`task_done`](JoinableQueueProxy::task_done) and
/// [`join`](JoinableQueueProxy::join).
///
/// ```
/// let manager = mp_manager::Manager::start()?;
/// let queue = manager.joinable_queue::<u32>()?;
/// queue.put(7)?;
/// assert_eq!(queue.get()?, 7);
/// queue.task_done()?;
/// queue.join()?;
/// # Ok::<(), mp_manager::Error>(())
/// ```
pub struct JoinableQueueProxy<T> {
    handle: Handle,
    _type: PhantomData<fn(T) -> T>,
}

proxy_impls!(JoinableQueueProxy<T>, "JoinableQueue");

impl<T> JoinableQueueProxy<T> {
    fn from_handle(handle: Handle) -> Self {
        JoinableQueueProxy { handle, _type: PhantomData }
    }
}

impl<T: Serialize + DeserializeOwned> JoinableQueueProxy<T> {
    queue_api!();

    /// Marks one item taken from the queue as processed: Python's `task_done()`.
    ///
    /// Errors: a remote `ValueError` if it is called more times than items were put.
    pub fn task_done(&self) -> Result<()> {
        self.handle.call("task_done", &())
    }

    /// Waits until every item put has been marked done: Python's `join()`.
    pub fn join(&self) -> Result<()> {
        self.handle.call::<_, bool>("join", &None::<Duration>).map(drop)
    }

    /// As [`join`](JoinableQueueProxy::join), waiting `timeout` at most: whether every item
    /// was marked done.
    pub fn join_timeout(&self, timeout: Duration) -> Result<bool> {
        self.handle.call("join", &Some(timeout))
    }
}

/// A hold of a manager's [`LockProxy`], [`RLockProxy`] or [`ConditionProxy`] lock, released
/// when dropped (one round trip; an error then is ignored: use
/// [`release`](LockGuard::release) to see it).
///
/// It is `!Send`: the lock belongs to the thread that acquired it. An `RLock` held at several
/// levels has a guard per level.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct LockGuard<'a> {
    /// The lock's handle.
    handle: &'a Handle,
    /// The id the lock was acquired with.
    thread: u64,
    /// `!Send`.
    _not_send: PhantomData<*const ()>,
}

impl<'a> LockGuard<'a> {
    /// A guard of a hold of `handle`'s lock by this thread.
    fn new(handle: &'a Handle) -> LockGuard<'a> {
        LockGuard { handle, thread: thread_id(), _not_send: PhantomData }
    }

    /// Releases the lock now, reporting an error.
    pub fn release(self) -> Result<()> {
        let result = self.handle.call("release", &self.thread);
        std::mem::forget(self);
        result
    }

    /// Keeps the lock held after the guard is gone, to be released later with the proxy's
    /// `release()`, as Python code does with `acquire()` and `release()`.
    pub fn forget(self) {
        std::mem::forget(self);
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        // The manager may be gone: then so is the lock.
        let _ = self.handle.call::<_, ()>("release", &self.thread);
    }
}

impl std::fmt::Debug for LockGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockGuard").field("lock", self.handle).finish()
    }
}

/// The acquisitions and `release` of a lock proxy.
macro_rules! lock_api {
    () => {
        /// Acquires the lock, waiting until it is free; the guard releases it.
        pub fn acquire(&self) -> Result<LockGuard<'_>> {
            acquire(&self.handle, None)?;
            Ok(LockGuard::new(&self.handle))
        }

        /// Acquires the lock, waiting `timeout` at most: `Ok(None)` if it stayed taken.
        pub fn acquire_timeout(&self, timeout: Duration) -> Result<Option<LockGuard<'_>>> {
            Ok(acquire(&self.handle, Some(timeout))?.then(|| LockGuard::new(&self.handle)))
        }

        /// Acquires the lock if it is free now: `Ok(None)` if it is taken.
        pub fn try_acquire(&self) -> Result<Option<LockGuard<'_>>> {
            self.acquire_timeout(Duration::ZERO)
        }
    };
}

/// A lock held by a manager: Python's `manager.Lock()` (a `threading.Lock`), made by
/// [`Manager::lock`].
///
/// As Python's, it is not re-entrant (a thread that acquires it twice waits for ever, or until
/// its timeout), and [`release`](LockProxy::release) may be called by any thread of any
/// process while it is held. If the process holding it ends, the manager releases it.
///
/// ```
/// let manager = mp_manager::Manager::start()?;
/// let lock = manager.lock()?;
/// let guard = lock.acquire()?;
/// assert!(lock.try_acquire()?.is_none());
/// drop(guard);
/// assert!(lock.try_acquire()?.is_some());
/// # Ok::<(), mp_manager::Error>(())
/// ```
pub struct LockProxy {
    handle: Handle,
}

proxy_impls!(LockProxy, "Lock");

impl LockProxy {
    fn from_handle(handle: Handle) -> Self {
        LockProxy { handle }
    }

    lock_api!();

    /// Releases the lock (acquired with a guard that was [forgotten](LockGuard::forget)):
    /// Python's `release()`.
    ///
    /// Errors: a remote `RuntimeError` ("release unlocked lock") if it is not held.
    pub fn release(&self) -> Result<()> {
        self.handle.call("release", &thread_id())
    }
}

/// A re-entrant lock held by a manager: Python's `manager.RLock()` (a `threading.RLock`),
/// made by [`Manager::rlock`]. Its owner, a thread of a process, may acquire it again; it is
/// free once released as many times. If the process holding it ends, the manager releases it.
///
/// ```
/// let manager = mp_manager::Manager::start()?;
/// let rlock = manager.rlock()?;
/// let outer = rlock.acquire()?;
/// let inner = rlock.acquire()?;
/// drop(inner);
/// drop(outer);
/// assert!(rlock.release().is_err(), "not held any more");
/// # Ok::<(), mp_manager::Error>(())
/// ```
pub struct RLockProxy {
    handle: Handle,
}

proxy_impls!(RLockProxy, "RLock");

impl RLockProxy {
    fn from_handle(handle: Handle) -> Self {
        RLockProxy { handle }
    }

    lock_api!();

    /// Releases one level of the lock this thread holds: Python's `release()`.
    ///
    /// Errors: a remote `RuntimeError` ("cannot release un-acquired lock") if this thread does
    /// not hold it.
    pub fn release(&self) -> Result<()> {
        self.handle.call("release", &thread_id())
    }
}

/// A permit taken from a [`SemaphoreProxy`] or [`BoundedSemaphoreProxy`], given back when
/// dropped (one round trip; an error then is ignored). A semaphore has no owner: the permit is
/// `Send`.
#[must_use = "the permit is given back as soon as it is dropped"]
pub struct SemaphoreGuard<'a> {
    /// The semaphore's handle.
    handle: &'a Handle,
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
        // The permit was taken, so giving it back cannot exceed a bound.
        let _ = self.handle.call::<_, ()>("release", &thread_id());
    }
}

impl std::fmt::Debug for SemaphoreGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SemaphoreGuard").field("semaphore", self.handle).finish()
    }
}

/// The methods of both semaphore proxies, named as `mp_sync`'s semaphores.
macro_rules! semaphore_api {
    () => {
        /// Takes a permit, waiting until one is available.
        pub fn acquire(&self) -> Result<SemaphoreGuard<'_>> {
            acquire(&self.handle, None)?;
            Ok(SemaphoreGuard { handle: &self.handle })
        }

        /// Takes a permit, waiting `timeout` at most: `Ok(None)` if none came.
        pub fn acquire_timeout(&self, timeout: Duration) -> Result<Option<SemaphoreGuard<'_>>> {
            Ok(acquire(&self.handle, Some(timeout))?
                .then(|| SemaphoreGuard { handle: &self.handle }))
        }

        /// Takes a permit if one is available now: `Ok(None)` if none is.
        pub fn try_acquire(&self) -> Result<Option<SemaphoreGuard<'_>>> {
            self.acquire_timeout(Duration::ZERO)
        }

        /// Adds a permit, waking one waiter: Python's `release()`. Any thread of any process
        /// may call it.
        pub fn release(&self) -> Result<()> {
            self.handle.call("release", &thread_id())
        }

        /// The number of permits available now (Python's `get_value()`, and `mp_sync`'s).
        pub fn get_value(&self) -> Result<u32> {
            self.handle.call("get_value", &())
        }
    };
}

/// A counting semaphore held by a manager: Python's `manager.Semaphore(value)`, made by
/// [`Manager::semaphore`]. Permits a process holds when it ends are not given back (as with
/// Python's, and `mp_sync`'s).
///
/// ```
/// let manager = mp_manager::Manager::start()?;
/// let sem = manager.semaphore(1)?;
/// let permit = sem.acquire()?;
/// assert!(sem.try_acquire()?.is_none());
/// drop(permit);
/// assert_eq!(sem.get_value()?, 1);
/// # Ok::<(), mp_manager::Error>(())
/// ```
pub struct SemaphoreProxy {
    handle: Handle,
}

proxy_impls!(SemaphoreProxy, "Semaphore");

impl SemaphoreProxy {
    fn from_handle(handle: Handle) -> Self {
        SemaphoreProxy { handle }
    }

    semaphore_api!();
}

/// A semaphore that cannot be released above its initial value: Python's
/// `manager.BoundedSemaphore(value)`, made by [`Manager::bounded_semaphore`]. A release over
/// the initial value fails with a remote `ValueError`.
///
/// ```
/// let manager = mp_manager::Manager::start()?;
/// let sem = manager.bounded_semaphore(1)?;
/// assert!(sem.release().unwrap_err().is_remote("ValueError"));
/// # Ok::<(), mp_manager::Error>(())
/// ```
pub struct BoundedSemaphoreProxy {
    handle: Handle,
}

proxy_impls!(BoundedSemaphoreProxy, "BoundedSemaphore");

impl BoundedSemaphoreProxy {
    fn from_handle(handle: Handle) -> Self {
        BoundedSemaphoreProxy { handle }
    }

    semaphore_api!();
}

/// A condition variable held by a manager, with its own re-entrant lock: Python's
/// `manager.Condition()`, made by [`Manager::condition`].
///
/// As in Python, the lock is acquired and released as an [`RLockProxy`]'s, and
/// [`wait`](ConditionProxy::wait) and [`notify`](ConditionProxy::notify) are called with it
/// held by the calling thread (else a remote `RuntimeError`). Waiting releases every level of
/// the lock in the manager and takes it back there. Waiters are notified oldest first. If the
/// process holding the lock ends, the manager releases it.
///
/// ```
/// let manager = mp_manager::Manager::start()?;
/// let cond = manager.condition()?;
/// let _guard = cond.acquire()?;
/// assert_eq!(cond.notify(1)?, 0, "nobody waits");
/// assert!(!cond.wait_timeout(std::time::Duration::from_millis(1))?, "nobody notifies");
/// # Ok::<(), mp_manager::Error>(())
/// ```
pub struct ConditionProxy {
    handle: Handle,
}

proxy_impls!(ConditionProxy, "Condition");

impl ConditionProxy {
    fn from_handle(handle: Handle) -> Self {
        ConditionProxy { handle }
    }

    lock_api!();

    /// Releases one level of the lock this thread holds: Python's `release()`.
    pub fn release(&self) -> Result<()> {
        self.handle.call("release", &thread_id())
    }

    /// Releases the lock, waits until notified, and takes the lock back: Python's `wait()`.
    ///
    /// Errors: a remote `RuntimeError` if this thread does not hold the lock.
    pub fn wait(&self) -> Result<()> {
        self.handle.call::<_, bool>("wait", &(thread_id(), None::<Duration>)).map(drop)
    }

    /// As [`wait`](ConditionProxy::wait), giving up after `timeout`: whether it was notified
    /// (the lock is held again either way).
    pub fn wait_timeout(&self, timeout: Duration) -> Result<bool> {
        self.handle.call("wait", &(thread_id(), Some(timeout)))
    }

    /// Waits until `predicate` holds, checking it first and after each wake-up, with the lock
    /// held, for `timeout` at most (`None`: no limit): Python's `wait_for(predicate,
    /// timeout)`. Returns the last result of `predicate`. The predicate runs here, in the
    /// calling process.
    pub fn wait_for(
        &self,
        mut predicate: impl FnMut() -> bool,
        timeout: Option<Duration>,
    ) -> Result<bool> {
        let end = timeout.and_then(|t| Instant::now().checked_add(t));
        loop {
            if predicate() {
                return Ok(true);
            }
            match end {
                None => self.wait()?,
                Some(end) => match end.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => {
                        self.wait_timeout(left)?;
                    }
                    _ => return Ok(false),
                },
            }
        }
    }

    /// Wakes `n` of the threads waiting (oldest first), or all if fewer wait; each wakes once
    /// it can take the lock back. Returns how many it woke.
    ///
    /// Errors: a remote `RuntimeError` if this thread does not hold the lock.
    pub fn notify(&self, n: usize) -> Result<usize> {
        self.handle.call::<_, u64>("notify", &(thread_id(), n as u64)).map(|n| n as usize)
    }

    /// Wakes every thread waiting; returns how many.
    pub fn notify_all(&self) -> Result<usize> {
        self.handle.call::<_, u64>("notify", &(thread_id(), u64::MAX)).map(|n| n as usize)
    }
}

/// An event held by a manager: Python's `manager.Event()` (a `threading.Event`), made by
/// [`Manager::event`]: a flag that waiters wait to see set.
///
/// ```
/// let manager = mp_manager::Manager::start()?;
/// let event = manager.event()?;
/// assert!(!event.wait_timeout(std::time::Duration::from_millis(1))?);
/// event.set()?;
/// assert!(event.is_set()?);
/// event.wait()?;
/// # Ok::<(), mp_manager::Error>(())
/// ```
pub struct EventProxy {
    handle: Handle,
}

proxy_impls!(EventProxy, "Event");

impl EventProxy {
    fn from_handle(handle: Handle) -> Self {
        EventProxy { handle }
    }

    /// Sets the flag, waking every waiter.
    pub fn set(&self) -> Result<()> {
        self.handle.call("set", &())
    }

    /// Clears the flag.
    pub fn clear(&self) -> Result<()> {
        self.handle.call("clear", &())
    }

    /// Whether the flag is set.
    pub fn is_set(&self) -> Result<bool> {
        self.handle.call("is_set", &())
    }

    /// Waits until the flag is set; returns at once if it is.
    pub fn wait(&self) -> Result<()> {
        self.handle.call::<_, bool>("wait", &None::<Duration>).map(drop)
    }

    /// Waits until the flag is set, `timeout` at most: Python's `wait(timeout)`. `true` if it
    /// was set before the call or a `set` happened during it (even if cleared since), `false`
    /// on timeout.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<bool> {
        self.handle.call("wait", &Some(timeout))
    }
}

/// A barrier held by a manager: Python's `manager.Barrier(parties)` (a `threading.Barrier`,
/// without an action or a default timeout), made by [`Manager::barrier`].
///
/// [`wait`](BarrierProxy::wait) returns once `parties` threads (of any processes) wait; each
/// gets its arrival index in `0..parties`. A barrier breaks ([`Error::BrokenBarrier`] for its
/// waiters and every later `wait` until [`reset`](BarrierProxy::reset)) on
/// [`abort`](BarrierProxy::abort), on the timeout of a waiter, and when the process of a
/// waiter ends.
///
/// [`Error::BrokenBarrier`]: crate::Error::BrokenBarrier
///
/// ```
/// let manager = mp_manager::Manager::start()?;
/// let barrier = manager.barrier(1)?;
/// assert_eq!(barrier.wait()?, 0);
/// barrier.abort()?;
/// assert!(matches!(barrier.wait(), Err(mp_manager::Error::BrokenBarrier)));
/// # Ok::<(), mp_manager::Error>(())
/// ```
pub struct BarrierProxy {
    handle: Handle,
}

proxy_impls!(BarrierProxy, "Barrier");

impl BarrierProxy {
    fn from_handle(handle: Handle) -> Self {
        BarrierProxy { handle }
    }

    /// Waits for the other parties; returns this thread's arrival index, in `0..parties`.
    ///
    /// Errors: [`Error::BrokenBarrier`](crate::Error::BrokenBarrier) if the barrier is, or
    /// breaks while this thread waits (also by a [`reset`](BarrierProxy::reset)).
    pub fn wait(&self) -> Result<usize> {
        self.handle.call::<_, u64>("wait", &None::<Duration>).map(|i| i as usize)
    }

    /// As [`wait`](BarrierProxy::wait), for `timeout` at most: if the barrier has not tripped
    /// by then, it breaks, and this call returns
    /// [`Error::BrokenBarrier`](crate::Error::BrokenBarrier), as in Python.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<usize> {
        self.handle.call::<_, u64>("wait", &Some(timeout)).map(|i| i as usize)
    }

    /// Breaks the barrier: its waiters, and every `wait` until a reset, fail with
    /// [`Error::BrokenBarrier`](crate::Error::BrokenBarrier). Python's `abort()`.
    pub fn abort(&self) -> Result<()> {
        self.handle.call("abort", &())
    }

    /// Returns the barrier to its initial, unbroken state; its waiters fail with
    /// [`Error::BrokenBarrier`](crate::Error::BrokenBarrier). Python's `reset()`.
    pub fn reset(&self) -> Result<()> {
        self.handle.call("reset", &())
    }

    /// The number of parties.
    pub fn parties(&self) -> Result<usize> {
        self.handle.call::<_, u64>("parties", &()).map(|n| n as usize)
    }

    /// How many threads wait in the current cycle.
    pub fn n_waiting(&self) -> Result<usize> {
        self.handle.call::<_, u64>("n_waiting", &()).map(|n| n as usize)
    }

    /// Whether the barrier is broken.
    pub fn broken(&self) -> Result<bool> {
        self.handle.call("broken", &())
    }
}

impl Manager {
    /// A queue with no maximum size: Python's `manager.Queue()`.
    pub fn queue<T: Serialize + DeserializeOwned>(&self) -> Result<QueueProxy<T>> {
        self.queue_with_maxsize(0)
    }

    /// A queue holding at most `maxsize` items (0: no limit): Python's
    /// `manager.Queue(maxsize)`.
    pub fn queue_with_maxsize<T: Serialize + DeserializeOwned>(
        &self,
        maxsize: usize,
    ) -> Result<QueueProxy<T>> {
        Ok(QueueProxy::from_handle(self.create("Queue", &(maxsize as u64))?))
    }

    /// A joinable queue with no maximum size: Python's `manager.JoinableQueue()`.
    pub fn joinable_queue<T: Serialize + DeserializeOwned>(&self) -> Result<JoinableQueueProxy<T>> {
        self.joinable_queue_with_maxsize(0)
    }

    /// A joinable queue holding at most `maxsize` items (0: no limit).
    pub fn joinable_queue_with_maxsize<T: Serialize + DeserializeOwned>(
        &self,
        maxsize: usize,
    ) -> Result<JoinableQueueProxy<T>> {
        Ok(JoinableQueueProxy::from_handle(self.create("JoinableQueue", &(maxsize as u64))?))
    }

    /// A lock, free: Python's `manager.Lock()`.
    pub fn lock(&self) -> Result<LockProxy> {
        Ok(LockProxy::from_handle(self.create("Lock", &())?))
    }

    /// A re-entrant lock, free: Python's `manager.RLock()`.
    pub fn rlock(&self) -> Result<RLockProxy> {
        Ok(RLockProxy::from_handle(self.create("RLock", &())?))
    }

    /// A semaphore holding `value` permits: Python's `manager.Semaphore(value)`.
    pub fn semaphore(&self, value: u32) -> Result<SemaphoreProxy> {
        Ok(SemaphoreProxy::from_handle(self.create("Semaphore", &value)?))
    }

    /// A semaphore holding `value` permits, never more: Python's
    /// `manager.BoundedSemaphore(value)`.
    pub fn bounded_semaphore(&self, value: u32) -> Result<BoundedSemaphoreProxy> {
        Ok(BoundedSemaphoreProxy::from_handle(self.create("BoundedSemaphore", &value)?))
    }

    /// A condition variable with its own re-entrant lock: Python's `manager.Condition()`.
    pub fn condition(&self) -> Result<ConditionProxy> {
        Ok(ConditionProxy::from_handle(self.create("Condition", &None::<u64>)?))
    }

    /// A condition variable that uses `lock`, a lock of this manager: Python's
    /// `manager.Condition(lock)`. Acquiring or releasing the condition acquires or releases
    /// `lock` (and the other way round); `wait` releases it and takes it back. The manager
    /// keeps the lock while the condition lives.
    ///
    /// ```
    /// let m = mp_manager::Manager::start()?;
    /// let lock = m.lock()?;
    /// let cond = m.condition_with_lock(&lock)?;
    /// let held = cond.acquire()?;
    /// assert!(lock.try_acquire()?.is_none(), "the condition holds the lock");
    /// assert!(!cond.wait_timeout(std::time::Duration::from_millis(10))?);
    /// drop(held); // releases it
    /// assert!(lock.try_acquire()?.is_some());
    /// # Ok::<(), mp_manager::Error>(())
    /// ```
    ///
    /// Errors: [`Error::Remote`](crate::Error::Remote) `"TypeError"` if `lock` is a proxy of
    /// another manager.
    pub fn condition_with_lock(&self, lock: &LockProxy) -> Result<ConditionProxy> {
        self.condition_on(&lock.handle)
    }

    /// As [`condition_with_lock`](Manager::condition_with_lock), with a re-entrant lock:
    /// Python's `manager.Condition(rlock)`.
    pub fn condition_with_rlock(&self, lock: &RLockProxy) -> Result<ConditionProxy> {
        self.condition_on(&lock.handle)
    }

    /// A condition on the lock object behind `lock`.
    fn condition_on(&self, lock: &Handle) -> Result<ConditionProxy> {
        if lock.link().id() != self.link().id() {
            return Err(crate::Error::Remote(crate::RemoteError::new(
                "TypeError",
                "a Condition's lock must be a lock of the same manager",
            )));
        }
        Ok(ConditionProxy::from_handle(self.create("Condition", &Some(lock.id()))?))
    }

    /// An event, cleared: Python's `manager.Event()`.
    pub fn event(&self) -> Result<EventProxy> {
        Ok(EventProxy::from_handle(self.create("Event", &())?))
    }

    /// A barrier for `parties` threads: Python's `manager.Barrier(parties)`.
    ///
    /// Errors: a remote `ValueError` for 0 parties.
    pub fn barrier(&self, parties: usize) -> Result<BarrierProxy> {
        self.barrier_of(parties, None, None)
    }

    /// A barrier for `parties` parties whose `wait` without a timeout gives up after
    /// `timeout` (breaking the barrier): Python's `manager.Barrier(parties, timeout=t)`.
    pub fn barrier_with_timeout(&self, parties: usize, timeout: Duration) -> Result<BarrierProxy> {
        self.barrier_of(parties, Some(timeout), None)
    }

    /// A barrier for `parties` parties with an action: Python's
    /// `manager.Barrier(parties, action)`. When the last party arrives, `action` runs in the
    /// manager's process (as in Python, where the barrier lives in the manager) before the
    /// parties are released; if it panics, the barrier breaks, the last party's `wait` fails
    /// with a `"Panic"` remote error and the others' with
    /// [`Error::BrokenBarrier`](crate::Error::BrokenBarrier). `action` is a `fn` item or a
    /// closure that captures nothing (it crosses as a checked entry of the executable), so
    /// only processes of the manager's own tree may make such a barrier (a remote client's is
    /// refused: a remote manager runs no code sent to it). `timeout` is the default timeout
    /// of `wait`, as [`barrier_with_timeout`](Manager::barrier_with_timeout).
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU32, Ordering};
    ///
    /// static TRIPS: AtomicU32 = AtomicU32::new(0);
    ///
    /// let m = mp_manager::Manager::start()?;
    /// // The action runs in the manager's process; it says so through a value of the manager.
    /// let barrier = m.barrier_with_action(1, || { TRIPS.fetch_add(1, Ordering::SeqCst); }, None)?;
    /// assert_eq!(barrier.wait()?, 0);
    /// assert_eq!(TRIPS.load(Ordering::SeqCst), 0, "it ran in the manager, not here");
    /// # Ok::<(), mp_manager::Error>(())
    /// ```
    pub fn barrier_with_action<F>(
        &self,
        parties: usize,
        action: F,
        timeout: Option<Duration>,
    ) -> Result<BarrierProxy>
    where
        F: Fn() + Copy + Send + Sync + 'static,
    {
        let entry = mp_process::code::Entry::<crate::apply::ActionRun>::of(
            crate::apply::BarrierAction(action),
        )
        .map(mp_process::code::Entry::to_parts)
        .ok_or_else(|| {
            crate::Error::Remote(crate::RemoteError::new(
                "Refused",
                "the action is not in the executable's text",
            ))
        })?;
        self.barrier_of(parties, timeout, Some(entry))
    }

    /// Makes a barrier.
    fn barrier_of(
        &self,
        parties: usize,
        timeout: Option<Duration>,
        action: Option<(u64, u64)>,
    ) -> Result<BarrierProxy> {
        Ok(BarrierProxy::from_handle(self.create("Barrier", &(parties as u64, timeout, action))?))
    }
}
