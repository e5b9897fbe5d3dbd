//! `Value` and `Array`: plain-old-data in shared memory (`mp-shm`'s `RawValue` and
//! `RawArray`) with the lock that guards it.
//!
//! # `unsafe` here
//!
//! A guard hands out `&mut T` (or `&mut [T]`) into the shared segment, made by the `unsafe fn`
//! [`items_mut`], whose contract is that the caller holds the value's lock exclusively for as
//! long as the reference lives. `lock_exclusive` takes the lock for that: every other thread
//! and process reaches the bytes only through the same lock (copies take it too), and this
//! thread is kept out as well: it cannot take a `Lock` again at all (`AlreadyHeld`), and for an
//! `RLock` the guard sets the lock's borrow flag, which every other path to the bytes (a second
//! guard, a copy) and every way to release the lock while the guard lives
//! (`Condition::wait`) checks and refuses; guards release only themselves, and `release` only
//! holds whose guard was forgotten. A guard can still be leaked (`mem::forget`): its lock then
//! stays held, as a leaked `std` mutex guard's does, unless the leaking thread exits, which
//! would make the kernel release the robust mutex while references from the guard may live on
//! in other threads. So each thread counts its guards, and a thread that exits with one still
//! counted aborts the process (`no_guard_left`). A process that dies takes its references with
//! it; the next acquirer in another process gets [`LockError::OwnerDied`] and the guard.

use std::cell::Cell;
use std::fmt;
use std::io::Write;
use std::ops::{Deref, DerefMut};

use bytemuck::Pod;
use mp_shm::{RawArray, RawValue};
use serde::{Deserialize, Serialize};

use mp_shm::SharedMemory;

use crate::error::{Error, LockError, LockResult};
use crate::lock::{AnyLock, LockGuard, RLock};
use crate::sys;

thread_local! {
    /// How many `Value`/`Array` guards this thread holds; `None` until the thread-exit check
    /// is registered for the thread (at its first guard).
    static GUARDS: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Counts a guard made by this thread; registers [`no_guard_left`] to run at the thread's exit
/// when it is the thread's first.
///
/// Errors: the check cannot be registered (the process is out of thread-specific keys).
#[inline]
fn guard_made() -> Result<(), Error> {
    match GUARDS.with(Cell::get) {
        Some(n) => GUARDS.with(|g| g.set(Some(n + 1))),
        None => {
            sys::check_at_thread_exit(no_guard_left)
                .map_err(|e| Error::io("pthread_key_create", e))?;
            GUARDS.with(|g| g.set(Some(1)));
        }
    }
    Ok(())
}

/// Uncounts a guard of this thread, as it is dropped.
#[inline]
fn guard_dropped() {
    GUARDS.with(|g| g.set(g.get().map(|n| n.saturating_sub(1))));
}

/// Run when a thread that made guards exits, after its thread-locals are dropped: if a guard of
/// the thread is still counted, it was leaked (`mem::forget`, `Box::leak`), and a reference it
/// handed out may live on in another thread. The thread's exit is about to release the lock
/// (a robust mutex), and the next acquirer would get a second `&mut` to the same value: the
/// process aborts instead, as nothing can keep the lock held after its thread is gone.
fn no_guard_left() {
    if GUARDS.try_with(Cell::get).ok().flatten().unwrap_or(0) != 0 {
        let _ = std::io::stderr().write_all(
            b"mp-sync: a thread exits while a Value or Array guard it leaked still holds the \
              value's lock; releasing the lock would hand out a second reference to the value, \
              so the process aborts\n",
        );
        std::process::abort();
    }
}

/// The first `len` items of type `T` at the start of `shm`, as an exclusive slice; `None` if
/// the segment is too small or misaligned for them (checked when the value was made or
/// received, so never in practice).
///
/// # Safety
///
/// For as long as the returned slice lives, the caller holds the lock that guards `shm`
/// exclusively (made so by `lock_exclusive`: the borrow flag of an `RLock` is set), and every
/// access to these bytes, in every thread and process, goes through that lock.
// The `&mut` comes from the lock, not from `shm`: shared memory is interior-mutable.
#[allow(unsafe_code, clippy::mut_from_ref)]
unsafe fn items_mut<T: Pod>(shm: &SharedMemory, len: usize) -> Option<&mut [T]> {
    let bytes = len.checked_mul(size_of::<T>())?;
    let base = shm.as_ptr();
    if bytes > shm.size() || (base as usize) % align_of::<T>() != 0 {
        return None;
    }
    // SAFETY: `slice::from_raw_parts_mut` asks for a non-null pointer aligned for `T` (a
    // mapping's base, checked aligned above), valid for reads and writes of `len * size_of::<T>()`
    // bytes for the returned lifetime (inside the mapping, checked above, which lives as long as
    // `shm`, which the slice borrows), properly initialised `T`s (`T: Pod` is valid for any
    // bytes), at most `isize::MAX` bytes (they fit in the mapping), and no other access to the
    // bytes while the slice lives: this function's contract.
    Some(unsafe { std::slice::from_raw_parts_mut(base.cast::<T>(), len) })
}

/// Takes `lock` for a guard: the lock must not already carry a `Value`/`Array` guard of this
/// thread (with an `RLock`, this thread may hold it already through other guards). Sets the
/// borrow flag.
#[inline]
fn lock_exclusive(lock: &AnyLock) -> LockResult<LockGuard<'_>> {
    let (guard, died) = match lock.acquire() {
        Ok(g) => (g, false),
        Err(LockError::OwnerDied(g)) => (g, true),
        Err(LockError::Failed(e)) => return Err(LockError::Failed(e)),
    };
    let core = guard.core();
    if core.is_borrowed() {
        drop(guard);
        return Err(LockError::Failed(Error::Borrowed));
    }
    core.set_borrowed(true);
    if died { Err(LockError::OwnerDied(guard)) } else { Ok(guard) }
}

/// Takes `lock` to copy in or out, refusing if a value guard of this thread holds it.
fn lock_copy(lock: &AnyLock) -> Result<LockGuard<'_>, Error> {
    let guard = lock.acquire()?;
    if guard.core().is_borrowed() {
        return Err(Error::Borrowed);
    }
    Ok(guard)
}

/// A value of plain-old-data `T` in shared memory, with a lock: Python's
/// `multiprocessing.Value`.
///
/// [`lock`](Value::lock) takes the lock and gives a [`ValueGuard`], which dereferences to
/// `&mut T` for as long as it lives: the lock keeps every other thread and process out, so the
/// access is exclusive. [`get`](Value::get) and [`set`](Value::set) copy out and in under the
/// lock. Clones share the value and its lock; a `Value` passes into a child as a `Process`
/// argument or inside a message, under every start method.
///
/// `T` is plain old data (`bytemuck::Pod`): integers, floats, arrays and `#[repr(C)]` structs
/// of those. A `bool`, a pointer or a `String` does not compile (see `mp_shm::RawValue`).
///
/// ```
/// use mp_sync::Value;
///
/// # fn main() -> Result<(), mp_sync::Error> {
/// let counter = Value::new(0i32)?;
/// *counter.lock()? += 1;
/// {
///     let mut guard = counter.lock()?;
///     *guard += 10;
/// }
/// assert_eq!(counter.get()?, 11);
/// counter.set(5)?;
/// assert_eq!(counter.get()?, 5);
/// # Ok(())
/// # }
/// ```
///
/// # Differences from Python's multiprocessing
/// - The value is reached through a guard (or copies), not a `.value` attribute; `*v.lock()?
///   += 1` is atomic, unlike Python's `v.value += 1`, which reads and writes under two
///   separate acquisitions.
/// - While a thread holds a [`ValueGuard`], that thread cannot take another guard, copy, or
///   `Condition::wait` through the same lock ([`Error::Borrowed`]): that would alias the
///   `&mut T`.
/// - There is no `lock=False` (use `mp_shm::RawValue`) and no `get_obj()`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Value<T: Pod + Send + Sync> {
    /// The value.
    raw: RawValue<T>,
    /// Its lock.
    lock: AnyLock,
}

impl<T: Pod + Send + Sync> Value<T> {
    /// Puts `value` into shared memory with a new [`RLock`] (Python's default, `lock=True`).
    ///
    /// Errors: [`Error::SharedMemory`] or [`Error::Io`] if the segments cannot be made.
    pub fn new(value: T) -> Result<Value<T>, Error> {
        Value::with_lock(value, RLock::new()?)
    }

    /// Puts `value` into shared memory guarded by `lock` (Python's `lock=<a Lock or
    /// RLock>`), which may guard other things too.
    ///
    /// Errors: [`Error::SharedMemory`] if the segment cannot be made.
    pub fn with_lock(value: T, lock: impl Into<AnyLock>) -> Result<Value<T>, Error> {
        let raw = RawValue::new(value).map_err(Error::SharedMemory)?;
        Ok(Value { raw, lock: lock.into() })
    }

    /// The lock: Python's `get_lock()`.
    pub fn get_lock(&self) -> &AnyLock {
        &self.lock
    }

    /// Takes the lock and returns a guard giving `&mut T`.
    ///
    /// Errors: [`LockError::OwnerDied`] (with the guard) if the previous holder of the lock
    /// died holding it: the value may be half-written. [`Error::Borrowed`] if this thread
    /// already has a guard through the same lock; [`Error::AlreadyHeld`] if the lock is a
    /// [`Lock`](crate::Lock) this thread holds.
    #[inline]
    pub fn lock(&self) -> LockResult<ValueGuard<'_, T>> {
        match lock_exclusive(&self.lock) {
            Ok(g) => Ok(self.wrap(g)?),
            Err(LockError::OwnerDied(g)) => Err(LockError::OwnerDied(self.wrap(g)?)),
            Err(LockError::Failed(e)) => Err(LockError::Failed(e)),
        }
    }

    /// Turns an exclusive hold of the lock into a guard.
    #[inline]
    #[allow(unsafe_code)]
    fn wrap<'a>(&'a self, guard: LockGuard<'a>) -> Result<ValueGuard<'a, T>, Error> {
        if let Err(e) = guard_made() {
            guard.core().set_borrowed(false);
            return Err(e);
        }
        // SAFETY: `items_mut` asks that this thread hold the value's lock exclusively while the
        // reference lives: `guard` came from `lock_exclusive` on `self.lock`, the lock that
        // guards `self.raw` (every copy of `Value` takes it too), and the reference is stored
        // beside it in the `ValueGuard`, which releases it only when dropped. If the guard is
        // leaked, the lock stays held for as long as this thread lives, and the thread-exit
        // check (counted by `guard_made` above) aborts the process before the thread's end
        // could release it.
        match unsafe { items_mut::<T>(self.raw.shm(), 1) }.and_then(|s| s.first_mut()) {
            Some(value) => Ok(ValueGuard { value, guard }),
            None => {
                guard_dropped();
                guard.core().set_borrowed(false);
                Err(Error::Corrupt("the value's segment is too small or misaligned"))
            }
        }
    }

    /// A copy of the value, read under the lock (Python's `v.value`).
    ///
    /// Errors: [`Error::OwnerDied`] if the previous holder of the lock died holding it (the
    /// lock is released and consistent again: a second call reads whatever it left);
    /// [`Error::Borrowed`] if a guard of this thread holds the lock.
    pub fn get(&self) -> Result<T, Error> {
        let _guard = lock_copy(&self.lock)?;
        Ok(self.raw.get())
    }

    /// Stores `value` under the lock (Python's `v.value = x`).
    ///
    /// Errors: as [`get`](Value::get); the value is not stored after an error.
    pub fn set(&self, value: T) -> Result<(), Error> {
        let _guard = lock_copy(&self.lock)?;
        self.raw.set(value);
        Ok(())
    }
}

impl<T: Pod + Send + Sync + fmt::Debug> fmt::Debug for Value<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.get() {
            Ok(v) => f.debug_tuple("Value").field(&v).finish(),
            Err(_) => f.write_str("Value(<locked>)"),
        }
    }
}

/// The guard of a [`Value`]: `&mut T` while the lock is held. `!Send`, like every lock guard.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ValueGuard<'a, T: Pod> {
    /// The value, exclusively ours while `guard` lives.
    value: &'a mut T,
    /// The hold of the lock.
    guard: LockGuard<'a>,
}

impl<T: Pod> Deref for ValueGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.value
    }
}

impl<T: Pod> DerefMut for ValueGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.value
    }
}

impl<T: Pod> Drop for ValueGuard<'_, T> {
    fn drop(&mut self) {
        // The lock is released right after, when `guard` drops.
        self.guard.core().set_borrowed(false);
        guard_dropped();
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for ValueGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ValueGuard").field(&*self.value).finish()
    }
}

/// A fixed-length array of plain-old-data `T` in shared memory, with a lock: Python's
/// `multiprocessing.Array`.
///
/// [`lock`](Array::lock) gives an [`ArrayGuard`] that dereferences to `&mut [T]`; the other
/// methods copy under the lock. Clones share the array; it passes into children and messages
/// under every start method. The rules of [`Value`] apply.
///
/// ```
/// use mp_sync::Array;
///
/// # fn main() -> Result<(), mp_sync::Error> {
/// let a = Array::new(&[1u32, 2, 3])?;
/// a.lock()?.iter_mut().for_each(|x| *x *= 10);
/// assert_eq!(a.get(1)?, 20);
/// a.set(2, 7)?;
/// assert_eq!(a.to_vec()?, [10, 20, 7]);
/// assert!(a.get(3).is_err());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Array<T: Pod + Send + Sync> {
    /// The items.
    raw: RawArray<T>,
    /// Their lock.
    lock: AnyLock,
}

impl<T: Pod + Send + Sync> Array<T> {
    /// Copies `items` into shared memory with a new [`RLock`].
    ///
    /// Errors: [`Error::SharedMemory`] or [`Error::Io`] if the segments cannot be made (an
    /// empty array still takes a page).
    pub fn new(items: &[T]) -> Result<Array<T>, Error> {
        Array::with_lock(items, RLock::new()?)
    }

    /// An array of `len` zeroed items with a new [`RLock`] (Python's `Array(typecode, size)`).
    ///
    /// Errors: as [`new`](Array::new).
    pub fn zeroed(len: usize) -> Result<Array<T>, Error> {
        let raw = RawArray::zeroed(len).map_err(Error::SharedMemory)?;
        Ok(Array { raw, lock: RLock::new()?.into() })
    }

    /// Copies `items` into shared memory guarded by `lock`.
    ///
    /// Errors: [`Error::SharedMemory`] if the segment cannot be made.
    pub fn with_lock(items: &[T], lock: impl Into<AnyLock>) -> Result<Array<T>, Error> {
        let raw = RawArray::new(items).map_err(Error::SharedMemory)?;
        Ok(Array { raw, lock: lock.into() })
    }

    /// The lock: Python's `get_lock()`.
    pub fn get_lock(&self) -> &AnyLock {
        &self.lock
    }

    /// The number of items.
    pub fn len(&self) -> usize {
        self.raw.len()
    }

    /// Whether the array has no items.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// Takes the lock and returns a guard giving `&mut [T]`.
    ///
    /// Errors: as [`Value::lock`].
    pub fn lock(&self) -> LockResult<ArrayGuard<'_, T>> {
        match lock_exclusive(&self.lock) {
            Ok(g) => Ok(self.wrap(g)?),
            Err(LockError::OwnerDied(g)) => Err(LockError::OwnerDied(self.wrap(g)?)),
            Err(LockError::Failed(e)) => Err(LockError::Failed(e)),
        }
    }

    /// Turns an exclusive hold of the lock into a guard.
    #[allow(unsafe_code)]
    fn wrap<'a>(&'a self, guard: LockGuard<'a>) -> Result<ArrayGuard<'a, T>, Error> {
        if let Err(e) = guard_made() {
            guard.core().set_borrowed(false);
            return Err(e);
        }
        // SAFETY: as in `Value::wrap`: `guard` holds the array's lock exclusively, lives beside
        // the slice in the `ArrayGuard`, and is counted for the thread-exit check.
        match unsafe { items_mut::<T>(self.raw.shm(), self.raw.len()) } {
            Some(items) => Ok(ArrayGuard { items, guard }),
            None => {
                guard_dropped();
                guard.core().set_borrowed(false);
                Err(Error::Corrupt("the array's segment is too small or misaligned"))
            }
        }
    }

    /// A copy of item `index`, read under the lock.
    ///
    /// Errors: [`Error::IndexOutOfRange`]; otherwise as [`Value::get`].
    pub fn get(&self, index: usize) -> Result<T, Error> {
        let _guard = lock_copy(&self.lock)?;
        self.raw.get(index).ok_or(Error::IndexOutOfRange { index, len: self.raw.len() })
    }

    /// Stores item `index` under the lock.
    ///
    /// Errors: as [`get`](Array::get).
    pub fn set(&self, index: usize, value: T) -> Result<(), Error> {
        let len = self.raw.len();
        if index >= len {
            return Err(Error::IndexOutOfRange { index, len });
        }
        let _guard = lock_copy(&self.lock)?;
        self.raw.set(index, value).map_err(|_| Error::IndexOutOfRange { index, len })
    }

    /// A copy of every item, read under the lock.
    ///
    /// Errors: as [`Value::get`].
    pub fn to_vec(&self) -> Result<Vec<T>, Error> {
        let _guard = lock_copy(&self.lock)?;
        Ok(self.raw.to_vec())
    }
}

impl<T: Pod + Send + Sync + fmt::Debug> fmt::Debug for Array<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_vec() {
            Ok(v) => f.debug_tuple("Array").field(&v).finish(),
            Err(_) => f.write_str("Array(<locked>)"),
        }
    }
}

/// The guard of an [`Array`]: `&mut [T]` while the lock is held. `!Send`.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ArrayGuard<'a, T: Pod> {
    /// The items, exclusively ours while `guard` lives.
    items: &'a mut [T],
    /// The hold of the lock.
    guard: LockGuard<'a>,
}

impl<T: Pod> Deref for ArrayGuard<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        self.items
    }
}

impl<T: Pod> DerefMut for ArrayGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        self.items
    }
}

impl<T: Pod> Drop for ArrayGuard<'_, T> {
    fn drop(&mut self) {
        self.guard.core().set_borrowed(false);
        guard_dropped();
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for ArrayGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ArrayGuard").field(&&*self.items).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::sync::OnceLock;

    /// Leaks a guard of `value` in a thread that then exits, and hands the reference the guard
    /// gave out to this thread.
    fn leak_a_guard_and_end_the_thread(value: Value<u64>) {
        let leaked: &mut u64 = std::thread::scope(|s| {
            s.spawn(|| &mut **Box::leak(Box::new(value.lock().unwrap()))).join().unwrap()
        });
        // Not reached: the exit of the thread aborted the process. Before, it was: the thread's
        // exit released the lock (a robust mutex), and this second guard aliased `leaked`.
        let mut second = value.lock().or_else(LockError::into_guard).unwrap();
        *second += 1;
        *leaked += 1;
    }

    #[test]
    fn a_thread_that_leaks_a_guard_cannot_end_while_its_reference_lives() {
        let value = Value::new(7u64).unwrap();
        let mut child = mp_process::Process::new(leak_a_guard_and_end_the_thread, (value.clone(),));
        child.start().unwrap();
        assert_eq!(child.join().unwrap(), -6, "the child should abort (SIGABRT)");
        // The whole process died: nobody holds a reference any more, and the lock is recovered.
        match value.lock() {
            Err(LockError::OwnerDied(guard)) => assert_eq!(*guard, 7),
            other => panic!("expected OwnerDied, got {other:?}"),
        }
    }

    static KEPT_VALUE: OnceLock<Value<u64>> = OnceLock::new();

    thread_local! {
        /// A guard kept in a thread-local, dropped with the thread's thread-locals.
        static KEPT: RefCell<Option<ValueGuard<'static, u64>>> = const { RefCell::new(None) };
    }

    #[test]
    fn guards_dropped_at_thread_exit_are_not_leaks() {
        let value = KEPT_VALUE.get_or_init(|| Value::new(1u64).unwrap());
        std::thread::spawn(|| {
            // The thread-local is registered before the thread's first guard, so its destructor
            // runs after any thread-local registered later: the check runs after all of them.
            KEPT.with(|_| ());
            let mut guard = value.lock().unwrap();
            *guard += 1;
            KEPT.with(|kept| *kept.borrow_mut() = Some(guard));
        })
        .join()
        .unwrap();
        assert_eq!(value.get().unwrap(), 2);
        std::thread::spawn(|| drop(value.lock().unwrap())).join().unwrap();
        assert_eq!(value.get().unwrap(), 2);
    }
}
