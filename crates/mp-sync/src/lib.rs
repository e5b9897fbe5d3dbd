//! `mp-sync`: locks, semaphores, events, conditions, barriers and synchronised values shared
//! between processes, for `mp`, Python's `multiprocessing` in Rust.
//!
//! ```
//! use mp_process::Process;
//! use mp_sync::{Error, Value};
//!
//! fn increment(counter: Value<u64>) -> Result<(), Error> {
//!     for _ in 0..1000 {
//!         *counter.lock()? += 1;
//!     }
//!     Ok(())
//! }
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let counter = Value::new(0u64)?;
//!     let mut children: Vec<Process> =
//!         (0..2).map(|_| Process::new(increment, (counter.clone(),))).collect();
//!     for child in &mut children {
//!         child.start()?;
//!     }
//!     for child in &children {
//!         assert_eq!(child.join()?, 0);
//!     }
//!     assert_eq!(counter.get()?, 2000);
//!     Ok(())
//! }
//! ```
//!
//! Every primitive lives in a shared memory segment (an anonymous memfd of `mp-shm`). Its
//! handle is `Clone` (clones share the primitive) and `Send + Sync`, and it passes into a child
//! as an argument of `mp_process::Process::new`, or inside a message sent with
//! `mp_process::fdpass`, under every start method: under `fork` the child inherits the
//! mapping; otherwise the segment's descriptor crosses beside the bytes (`SCM_RIGHTS`) and the
//! receiver checks it (size, a magic number, the kind of primitive) before using it.
//!
//! # Locks: [`Lock`] and [`RLock`]
//! A robust, process-shared pthread mutex (error-checking for a `Lock`, recursive for an
//! `RLock`). [`acquire`](Lock::acquire) returns a [`LockGuard`] that releases the lock when
//! dropped; Python's operations are beside it: [`acquire_timeout`](Lock::acquire_timeout),
//! [`try_acquire`](Lock::try_acquire), and [`release`](Lock::release) for a hold whose guard
//! was [forgotten](LockGuard::forget).
//!
//! ```
//! use mp_sync::{Lock, RLock};
//! use std::time::Duration;
//!
//! # fn main() -> Result<(), mp_sync::Error> {
//! let lock = Lock::new()?;
//! {
//!     let _guard = lock.acquire()?;
//!     // ... the critical section ...
//! }
//! let guard = lock.acquire_timeout(Duration::from_millis(10))?.expect("the lock is free");
//! drop(guard);
//!
//! let rlock = RLock::new()?;
//! let _outer = rlock.acquire()?;
//! let _inner = rlock.acquire()?; // the holder may take an RLock again
//! # Ok(())
//! # }
//! ```
//!
//! An uncontended acquire and a plain release run inline (mp follows glibc's robust-mutex
//! protocol itself, on the same memory, linking the hold into glibc's robust list); everything
//! else goes to glibc. A contended lock sleeps at once in `pthread_mutex_lock` (on the futex):
//! spinning first measured slower on two cores. Semaphores, events and barriers spin briefly on their futex
//! word (reading it only) before they sleep.
//!
//! ## Owner death
//! When the thread holding a lock dies (its process is SIGKILLed, aborts, or the thread exits),
//! the kernel's robust-futex mechanism marks the mutex, and the next acquirer gets the lock with
//! [`LockError::OwnerDied`], carrying the guard, as `std::sync::Mutex` reports poisoning. The
//! lock is consistent again from then on; the data it protects may be half-updated. `?`
//! converts the error into [`Error::OwnerDied`] (releasing the lock), and
//! `lock.acquire().or_else(LockError::into_guard)` takes the lock whether or not its holder
//! died. Death is never detected by asking whether a pid is alive.
//!
//! ```
//! # fn main() -> Result<(), mp_sync::Error> {
//! let lock = mp_sync::Lock::new()?;
//! std::thread::scope(|s| {
//!     // A thread that ends while holding the lock.
//!     s.spawn(|| lock.acquire().map(|guard| guard.forget()).map_err(mp_sync::Error::from));
//! });
//! match lock.acquire() {
//!     Err(mp_sync::LockError::OwnerDied(_guard)) => { /* repair, then carry on */ }
//!     other => panic!("expected OwnerDied, got {other:?}"),
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Semaphores: [`Semaphore`] and [`BoundedSemaphore`]
//! A counter in shared memory; waiters sleep on it with a shared futex.
//! [`acquire`](Semaphore::acquire) returns a [`SemaphoreGuard`] that gives the permit back when
//! dropped; [`release`](Semaphore::release) adds one (from any thread or process), and
//! [`get_value`](Semaphore::get_value) reads the count. A `BoundedSemaphore` refuses to go
//! above its initial value ([`Error::TooManyReleases`]). Permits held by a process that dies
//! are lost, as with POSIX semaphores.
//!
//! ```
//! # fn main() -> Result<(), mp_sync::Error> {
//! let sem = mp_sync::Semaphore::new(2)?;
//! let _a = sem.acquire()?;
//! let _b = sem.acquire()?;
//! assert_eq!(sem.get_value(), 0);
//! assert!(sem.try_acquire().is_none());
//! # Ok(())
//! # }
//! ```
//!
//! # Events: [`Event`]
//! A flag that [`set`](Event::set) raises, waking every [`wait`](Event::wait)er in every
//! process, and [`clear`](Event::clear) lowers.
//!
//! ```
//! # fn main() -> Result<(), mp_sync::Error> {
//! let event = mp_sync::Event::new()?;
//! event.set();
//! assert!(event.wait_timeout(std::time::Duration::ZERO)?);
//! # Ok(())
//! # }
//! ```
//!
//! # Conditions: [`Condition`]
//! A condition variable over a `Lock` or `RLock` ([`AnyLock`]). Waiting and notifying happen
//! through the [`ConditionGuard`] that [`acquire`](Condition::acquire) returns:
//! [`wait`](ConditionGuard::wait), [`wait_timeout`](ConditionGuard::wait_timeout),
//! [`wait_for`](ConditionGuard::wait_for), [`notify`](ConditionGuard::notify) and
//! [`notify_all`](ConditionGuard::notify_all). Each waiter sleeps in a slot of its own, on its
//! own futex word, so `notify(n)` wakes exactly `n` waiters, the longest-waiting first. A
//! waiter holds its slot's robust mutex while it waits: counting waiters, or handing one a
//! notification, first try-locks the slot, and `EOWNERDEAD` reveals a waiter that was killed,
//! whose slot is reclaimed. At most [`MAX_WAITERS`] threads wait at once.
//!
//! ```
//! # fn main() -> Result<(), mp_sync::Error> {
//! let cond = mp_sync::Condition::new()?;
//! let mut guard = cond.acquire()?;
//! assert_eq!(guard.notify_all()?, 0);
//! assert!(!guard.wait_for_timeout(|| false, std::time::Duration::from_millis(1))?);
//! # Ok(())
//! # }
//! ```
//!
//! # Barriers: [`Barrier`]
//! [`wait`](Barrier::wait) blocks until `parties` threads arrive and returns each a different
//! index in `0..parties`; the last to arrive runs the barrier's action. Abort, reset and a
//! timeout break it ([`Error::BrokenBarrier`]); it is reusable after [`reset`](Barrier::reset).
//! Waiters hold slots as in a `Condition`, so a killed waiter counts neither in
//! [`n_waiting`](Barrier::n_waiting) nor towards the parties.
//!
//! ```
//! # fn main() -> Result<(), mp_sync::Error> {
//! let barrier = mp_sync::Barrier::new(2)?;
//! let indices = std::thread::scope(|s| {
//!     let other = s.spawn(|| barrier.wait());
//!     let mine = barrier.wait();
//!     (mine, other.join())
//! });
//! let (mine, theirs) = (indices.0?, indices.1.expect("the thread ran")?);
//! assert_eq!(mine + theirs, 1);
//! # Ok(())
//! # }
//! ```
//!
//! # Synchronised values: [`Value`] and [`Array`]
//! Plain old data (`bytemuck::Pod`) in shared memory with the lock that guards it (a new
//! [`RLock`] by default, or one passed in). [`Value::lock`] gives a [`ValueGuard`], which
//! dereferences to `&mut T` while the lock is held; [`Value::get`] and [`Value::set`] copy.
//! [`Array`] is the same for a fixed-length slice.
//!
//! ```
//! # fn main() -> Result<(), mp_sync::Error> {
//! let a = mp_sync::Array::new(&[1.0f64, 2.0])?;
//! a.lock()?.iter_mut().for_each(|x| *x *= 2.0);
//! assert_eq!(a.to_vec()?, [2.0, 4.0]);
//! # Ok(())
//! # }
//! ```
//!
//! # Polling: every primitive is `AsFd`
//! Each primitive has an eventfd, its *doorbell*, beside its futex words, so that event loops
//! (and a `wait` over many objects) can poll it: it polls readable when a lock or semaphore may
//! be taken, while an event is set, and while a barrier is broken (a [`Condition`] hands out
//! its lock's). Ringing costs a system call, so it happens only while someone polls: the first
//! `as_fd` of a handle in a process registers it in a shared `pollers` count, and releases ring
//! only when that count is not zero. The fast paths pay one load of a cache line that nobody
//! writes. Readiness is a hint: after a wake-up, call the non-blocking operation
//! (`try_acquire`, `is_set`, `broken`), which, for a registered handle, drains the doorbell
//! before it looks (and rings again if the primitive stays ready for others).
//!
//! ```
//! use std::os::fd::AsFd;
//!
//! # fn main() -> Result<(), mp_sync::Error> {
//! let lock = mp_sync::Lock::new()?;
//! let bell = lock.as_fd();
//! let mut fds = [rustix::event::PollFd::new(&bell, rustix::event::PollFlags::IN)];
//! let guard = loop {
//!     rustix::event::poll(&mut fds, None).map_err(|e| mp_sync::Error::Io {
//!         op: "poll",
//!         source: e.into(),
//!     })?;
//!     if let Some(guard) = lock.try_acquire()? {
//!         break guard;
//!     }
//! };
//! # drop(guard);
//! # Ok(())
//! # }
//! ```
//!
//! # Where the `unsafe` code is
//! The crate root denies `unsafe` code. Every `unsafe fn` states its contract in a `# Safety`
//! section, and every `unsafe` block says, in a `// SAFETY:` comment, how it meets the contract
//! of what it calls. These modules allow `unsafe` code, each for one job:
//! - `sys`, the platform layer: the pthread calls of the robust process-shared mutex
//!   (`RawMutex`, which is taken and released through `unsafe fn`s: initialised, mapped while
//!   held, written only by the protocol), mp's inline fast paths for it (glibc's thread
//!   descriptor and the robust-list links), and a hook run at thread exit (a pthread key).
//! - `segment`: the `unsafe` marker trait `SharedLayout` of the layouts that can be viewed in
//!   place in shared memory, and `Mapped`, that view (`&L` over a segment, and the `&mut L`
//!   with which a fresh segment is set up).
//! - `lock`, `slots` and `barrier`: taking and releasing their mutexes under `RawMutex`'s
//!   contract. A lock counts its holds on its handle, so that the segment of a leaked guard
//!   stays mapped; a waiter's slot is held only inside `SlotTable::with_slot`; the barrier's
//!   mutex only by its internal guard.
//!
//! Elsewhere single items allow it: the `unsafe impl SharedLayout` beside each layout
//! (`semaphore`, `event`, `condition`; those of `lock` and `barrier` sit in their modules), and
//! in `value` the `unsafe fn items_mut` that makes a guard's `&mut T`, with the two guard
//! constructors that call it.
//!
//! ## What the crate trusts
//! Every process that maps a primitive's segment is trusted to change it only through this
//! crate: the robust-list links stored in a mutex are followed as pointers (as with any
//! process-shared robust pthread mutex), and a `Value`'s lock is what makes its `&mut T`
//! exclusive. The checks made on a received segment (size, magic, version, kind) catch
//! mistakes, not malice. Within one process, no other type can rebuild a primitive's
//! definition as something safe code can write: implementing `mp_process::fdpass::SharedObject`
//! is `unsafe`, a promise that a kind's name is the implementor's own. A barrier's action
//! crosses as a checked `mp_process::code::Entry`, so no message names code to run.
//!
//! A guard can be leaked (`mem::forget`): its lock then stays held, and its segment stays
//! mapped in this process for good. A thread that exits while a `Value` or `Array` guard it
//! leaked still holds the lock aborts the process, since the kernel would release the lock
//! while the guard's `&mut T` may live on in another thread.
//!
//! # Which handles are `Send` and `Sync`
//! | type | `Send` | `Sync` | why |
//! | --- | --- | --- | --- |
//! | the primitives, [`Value`], [`Array`], [`AnyLock`] | yes | yes | handles on shared memory made for concurrent use |
//! | [`LockGuard`], [`ConditionGuard`], [`ValueGuard`], [`ArrayGuard`] | no | yes | pthread requires the thread that locked a mutex to unlock it |
//! | [`SemaphoreGuard`] | yes | yes | a semaphore has no owner |
//!
//! # Differences from Python's multiprocessing
//! - A lock can only be released by the thread that acquired it ([`Error::NotHeld`]); Python's
//!   `Lock` can be released by any thread or process. Acquiring a `Lock` one already holds is
//!   [`Error::AlreadyHeld`] instead of a deadlock.
//! - A dead lock holder is reported ([`LockError::OwnerDied`]) instead of deadlocking the
//!   others.
//! - Locks are used through RAII guards; Python-style `acquire()` ... `release()` is
//!   `acquire()?.forget()` ... `release()?`.
//! - `Condition` waits and notifies through its guard; `notify` returns how many it woke.
//! - A barrier's action is a `fn()`; at most [`MAX_WAITERS`] threads wait on a `Condition` or
//!   `Barrier` at once.
//! - `Value` and `Array` hold `Pod` types only, reached through a guard or copies.
//! - Timeouts are `Duration`s; `acquire_timeout(Duration::ZERO)` is Python's
//!   `acquire(block=False)`.
#![deny(unsafe_code)]

#[allow(unsafe_code)]
mod barrier;
mod condition;
mod error;
mod event;
#[allow(unsafe_code)]
mod lock;
#[allow(unsafe_code)]
mod segment;
mod semaphore;
#[allow(unsafe_code)]
mod slots;
#[allow(unsafe_code)]
mod sys;
mod value;
mod wait;

pub use barrier::Barrier;
pub use condition::{Condition, ConditionGuard};
pub use error::{Error, LockError, LockResult, TryLockResult};
pub use event::Event;
pub use lock::{AnyLock, Lock, LockGuard, RLock};
pub use semaphore::{BoundedSemaphore, SEM_VALUE_MAX, Semaphore, SemaphoreGuard};
pub use slots::MAX_WAITERS;
pub use value::{Array, ArrayGuard, Value, ValueGuard};
pub use wait::{DEFAULT_SPIN_LIMIT, set_spin_limit, spin_limit};

/// Futex waits and wakes on `AtomicU32` words in shared memory, shared between processes (no
/// `FUTEX_PRIVATE_FLAG`): the waiting the primitives here are built on, for crates that build
/// their own (`mp-queue`'s queues).
pub mod futex {
    pub use crate::wait::{MAX_SKIP, SpinBackoff, can_spin};
    pub use mp_process::os::futex::{wait, wake, wake_all};
}
