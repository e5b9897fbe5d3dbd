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
//! holds whose guard was forgotten.

use std::fmt;
use std::ops::{Deref, DerefMut};

use bytemuck::Pod;
use mp_shm::{RawArray, RawValue};
use serde::{Deserialize, Serialize};

use mp_shm::SharedMemory;

use crate::error::{Error, LockError, LockResult};
use crate::lock::{AnyLock, LockGuard, RLock};

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
        // SAFETY: `items_mut` asks that this thread hold the value's lock exclusively while the
        // reference lives: `guard` came from `lock_exclusive` on `self.lock`, the lock that
        // guards `self.raw` (every copy of `Value` takes it too), and the reference is stored
        // beside it in the `ValueGuard`, which releases it only when dropped.
        match unsafe { items_mut::<T>(self.raw.shm(), 1) }.and_then(|s| s.first_mut()) {
            Some(value) => Ok(ValueGuard { value, guard }),
            None => {
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
        // SAFETY: as in `Value::wrap`: `guard` holds the array's lock exclusively and lives
        // beside the slice in the `ArrayGuard`.
        match unsafe { items_mut::<T>(self.raw.shm(), self.raw.len()) } {
            Some(items) => Ok(ArrayGuard { items, guard }),
            None => {
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
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for ArrayGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ArrayGuard").field(&&*self.items).finish()
    }
}
