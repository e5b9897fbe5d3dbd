//! The platform layer: every `unsafe` of `mp-sync` lives in this module.
//!
//! # Safety
//!
//! The crate root denies `unsafe`; this module allows it for these jobs, each block saying why
//! its contract holds:
//!
//! * [`RawMutex`]: a process-shared, robust pthread mutex (`libc`'s
//!   `pthread_mutexattr_setpshared/setrobust/settype`, `pthread_mutex_init/lock/trylock/
//!   timedlock/unlock/consistent`). It lives in shared memory and is never moved. glibc links a
//!   held robust mutex into the holding thread's robust list, whose links point into that
//!   thread's address space: the one kind of pointer into private memory a shared layout holds.
//!   The crate keeps the mapping of a mutex alive for as long as any of its threads holds it
//!   (guards borrow the handle that owns the mapping; held locks without a guard keep their
//!   handle in a registry until released), so glibc and the kernel never follow a link into
//!   memory that was unmapped.
//! * [`Mapped`]: the view of a segment as a `#[repr(C)]` layout of atomics and mutexes, for
//!   the types that implement the `unsafe` marker trait [`SharedLayout`] (implemented here,
//!   for the crate's layouts only).
//! * [`pod_mut`] and [`pod_slice_mut`]: `&mut T` / `&mut [T]` into the segment of a `Value`
//!   or `Array`, in exchange for an [`Exclusive`] token, which `value.rs` makes only while it
//!   holds the value's lock exclusively (see `pod_slice_mut`).
//! * [`action_offset`] / [`action_at`]: a barrier action (`fn()`) crossing into a fresh exec of
//!   the same executable as an offset into its text, as `mp-process` carries process targets.
//!
//! Shared memory trusts every process that maps it: a process that writes garbage over a
//! mutex can make the others fail or crash, as with any process-shared pthread mutex. The
//! checks made on a received segment (size, magic, kind) catch mistakes, not malice.
#![allow(unsafe_code)]

use std::cell::UnsafeCell;
use std::mem::MaybeUninit;
use std::time::{Duration, Instant};

use bytemuck::Pod;
use rustix::io::Errno;
use rustix::time::ClockId;

use crate::value::Exclusive;

/// The longest single `pthread_mutex_timedlock`: its deadline is on `CLOCK_REALTIME`, so a
/// backward jump of the wall clock can lengthen a timed acquire by at most this much.
const TIMEDLOCK_SLICE: Duration = Duration::from_secs(1);

/// The type of a robust mutex: what relocking by its holder does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MutexKind {
    /// Relocking by the holder fails with `EDEADLK` (`PTHREAD_MUTEX_ERRORCHECK`).
    ErrorCheck,
    /// Relocking by the holder counts a level (`PTHREAD_MUTEX_RECURSIVE`).
    Recursive,
}

/// How a robust mutex was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Taken {
    /// It was free, or released by a living holder.
    Clean,
    /// Its previous holder died holding it (`EOWNERDEAD`); it has been marked consistent.
    OwnerDied,
}

/// A process-shared robust pthread mutex stored in shared memory.
///
/// Lives in shared memory: `#[repr(C)]`, never moved. Its only pointers are glibc's
/// robust-list links (see the module documentation), the one exception to "no pointers into
/// private memory".
#[repr(C)]
pub(crate) struct RawMutex {
    /// The pthread mutex; only ever touched through the pthread functions.
    inner: UnsafeCell<libc::pthread_mutex_t>,
}

// SAFETY: a process-shared pthread mutex is made to be operated on by many threads (of many
// processes) at once; every access goes through the pthread functions, which synchronise.
unsafe impl Sync for RawMutex {}

// A lock stays consistent across a panic (a guard unlocks it while unwinding), as
// `std::sync::Mutex` does; the primitives built on it are unwind-safe.
impl std::panic::RefUnwindSafe for RawMutex {}
impl std::panic::UnwindSafe for RawMutex {}

/// Turns a pthread return code into a result.
#[inline(always)]
fn rc(code: libc::c_int) -> Result<(), Errno> {
    if code == 0 { Ok(()) } else { Err(Errno::from_raw_os_error(code)) }
}

impl RawMutex {
    /// Initialises the mutex in place: process-shared, robust, of type `kind`. The `&mut`
    /// proves that nobody else can use it yet (see [`Mapped::create`]).
    pub(crate) fn init(&mut self, kind: MutexKind) -> Result<(), Errno> {
        let mut attr = MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
        // SAFETY: `attr` is writable storage for an attribute object, which `init` fills.
        rc(unsafe { libc::pthread_mutexattr_init(attr.as_mut_ptr()) })?;
        let kind = match kind {
            MutexKind::ErrorCheck => libc::PTHREAD_MUTEX_ERRORCHECK,
            MutexKind::Recursive => libc::PTHREAD_MUTEX_RECURSIVE,
        };
        // SAFETY: `attr` was initialised above; these calls only set fields of it, and the
        // mutex storage is ours alone (`&mut self`) while `pthread_mutex_init` writes it. The
        // attribute object is destroyed on every path.
        let result = unsafe {
            rc(libc::pthread_mutexattr_setpshared(attr.as_mut_ptr(), libc::PTHREAD_PROCESS_SHARED))
                .and_then(|()| {
                    rc(libc::pthread_mutexattr_setrobust(
                        attr.as_mut_ptr(),
                        libc::PTHREAD_MUTEX_ROBUST,
                    ))
                })
                .and_then(|()| rc(libc::pthread_mutexattr_settype(attr.as_mut_ptr(), kind)))
                .and_then(|()| rc(libc::pthread_mutex_init(self.inner.get(), attr.as_ptr())))
        };
        // SAFETY: `attr` is initialised and no longer needed.
        unsafe { libc::pthread_mutexattr_destroy(attr.as_mut_ptr()) };
        result
    }

    /// Interprets the return code of a lock call: `EOWNERDEAD` makes the mutex consistent.
    #[inline]
    fn taken(&self, code: libc::c_int) -> Result<Taken, Errno> {
        match code {
            0 => Ok(Taken::Clean),
            libc::EOWNERDEAD => {
                // SAFETY: we hold the mutex (EOWNERDEAD hands it over); marking it consistent
                // is what the holder must do before unlocking it.
                rc(unsafe { libc::pthread_mutex_consistent(self.inner.get()) })?;
                Ok(Taken::OwnerDied)
            }
            e => Err(Errno::from_raw_os_error(e)),
        }
    }

    /// Locks the mutex, blocking.
    ///
    /// Errors: `EDEADLK` if this thread holds an error-checking mutex, `ENOTRECOVERABLE` if
    /// a previous holder released it after its owner died without making it consistent.
    #[inline]
    pub(crate) fn lock(&self) -> Result<Taken, Errno> {
        // SAFETY: the mutex was initialised by the segment's creator (the segment's magic and
        // kind were checked), and its mapping outlives every hold (module contract).
        let code = unsafe { libc::pthread_mutex_lock(self.inner.get()) };
        self.taken(code)
    }

    /// Locks the mutex if it is free (or its holder died); `None` if another thread holds it.
    ///
    /// `EDEADLK` if this thread holds an error-checking mutex.
    #[inline]
    pub(crate) fn try_lock(&self) -> Result<Option<Taken>, Errno> {
        // SAFETY: as in `lock`.
        let code = unsafe { libc::pthread_mutex_trylock(self.inner.get()) };
        match code {
            libc::EBUSY => Ok(None),
            code => self.taken(code).map(Some),
        }
    }

    /// Locks the mutex, blocking until `deadline` at the latest; `None` if it passed.
    ///
    /// `pthread_mutex_timedlock` takes an absolute `CLOCK_REALTIME` deadline. It is computed
    /// from the monotonic time left, in slices of at most [`TIMEDLOCK_SLICE`], and an early
    /// return (the wall clock jumped forward) is retried against the monotonic deadline, so
    /// the wait is never shorter than asked.
    pub(crate) fn lock_until(&self, deadline: Instant) -> Result<Option<Taken>, Errno> {
        loop {
            let now = Instant::now();
            let Some(left) = deadline.checked_duration_since(now).filter(|d| !d.is_zero()) else {
                return self.try_lock();
            };
            let slice = left.min(TIMEDLOCK_SLICE);
            let real = rustix::time::clock_gettime(ClockId::Realtime);
            let mut sec = real.tv_sec.saturating_add(slice.as_secs() as i64);
            let mut nsec = real.tv_nsec.saturating_add(i64::from(slice.subsec_nanos()));
            if nsec >= 1_000_000_000 {
                nsec -= 1_000_000_000;
                sec = sec.saturating_add(1);
            }
            let abs = libc::timespec { tv_sec: sec as libc::time_t, tv_nsec: nsec as _ };
            // SAFETY: as in `lock`; `abs` is a valid, normalised timespec.
            let code = unsafe { libc::pthread_mutex_timedlock(self.inner.get(), &abs) };
            match code {
                libc::ETIMEDOUT => continue,
                code => return self.taken(code).map(Some),
            }
        }
    }

    /// Unlocks the mutex. `EPERM` if this thread does not hold it.
    #[inline]
    pub(crate) fn unlock(&self) -> Result<(), Errno> {
        // SAFETY: as in `lock`. glibc checks the owner of a robust mutex and returns EPERM
        // for a thread that does not hold it, touching nothing else.
        rc(unsafe { libc::pthread_mutex_unlock(self.inner.get()) })
    }
}

/// A `#[repr(C)]` layout that can be viewed in place in a shared segment.
///
/// # Safety
///
/// Implementors are `#[repr(C)]`, have no `Drop`, are valid for every bit pattern (in
/// particular all zeros), hold no pointers into private memory (except a [`RawMutex`]'s
/// robust-list links), have an alignment of at most [`LAYOUT_ALIGN`], and change only through
/// interior mutability (atomics and [`RawMutex`]), so a shared reference to one may coexist
/// with writes from other processes.
pub(crate) unsafe trait SharedLayout: Sync + 'static {}

/// The largest alignment a [`SharedLayout`] may have: a cache line (segments are
/// page-aligned).
pub(crate) const LAYOUT_ALIGN: usize = 64;

// SAFETY: a `#[repr(C)]` pair of a `SharedLayout` and a header (atomics only, aligned to a
// cache line), so it has every property the trait asks for if `L` has them, and is aligned
// to 64 at most.
unsafe impl<L: SharedLayout> SharedLayout for crate::segment::Full<L> {}
// SAFETY: each of these is a `#[repr(C)]` struct of `AtomicU32`/`AtomicU64`, `RawMutex` and
// arrays and `#[repr(C)]` structs of those (see their definitions), all valid for every bit
// pattern, none with `Drop`, aligned to 8 at most.
unsafe impl SharedLayout for crate::lock::LockLayout {}
// SAFETY: as above.
unsafe impl SharedLayout for crate::semaphore::SemLayout {}
// SAFETY: as above.
unsafe impl SharedLayout for crate::event::EventLayout {}
// SAFETY: as above.
unsafe impl SharedLayout for crate::condition::CondLayout {}
// SAFETY: as above.
unsafe impl SharedLayout for crate::barrier::BarrierLayout {}

/// A shared segment viewed as an `L` at its start, checked once when it is made.
pub(crate) struct Mapped<L> {
    /// The segment; its mapping outlives `layout`.
    shm: mp_shm::SharedMemory,
    /// The start of the mapping, checked to be aligned and large enough for an `L`.
    layout: std::ptr::NonNull<L>,
}

// SAFETY: `Mapped` owns its `SharedMemory` (which is `Send + Sync`); the pointer only
// designates the start of that mapping, and `L: SharedLayout` is `Sync` and made for
// concurrent access, so moving or sharing the view between threads is sound.
unsafe impl<L: SharedLayout> Send for Mapped<L> {}
// SAFETY: as above.
unsafe impl<L: SharedLayout> Sync for Mapped<L> {}

impl<L: SharedLayout> Mapped<L> {
    /// Views `shm` as an `L`, if it is large enough and aligned.
    pub(crate) fn new(shm: mp_shm::SharedMemory) -> Option<Self> {
        const { assert!(align_of::<L>() <= LAYOUT_ALIGN) };
        let base = shm.as_ptr();
        if size_of::<L>() > shm.size() || (base as usize) % align_of::<L>() != 0 {
            return None;
        }
        let layout = std::ptr::NonNull::new(base.cast::<L>())?;
        Some(Mapped { shm, layout })
    }

    /// Views a segment this process has just created, and not yet shared, as an `L`, and lets
    /// `init` set it up through a `&mut` before anything else can reach it.
    pub(crate) fn create<E>(
        shm: mp_shm::SharedMemory,
        init: impl FnOnce(&mut L) -> Result<(), E>,
    ) -> Result<Option<Self>, E> {
        let Some(mut mapped) = Self::new(shm) else {
            return Ok(None);
        };
        // SAFETY: as in `get`, and moreover the segment is fresh (`SharedMemory::new`, an
        // anonymous memfd) and has not been handed to anyone: no other reference to its bytes
        // exists in any process, so the `&mut` is exclusive for the duration of `init`.
        init(unsafe { mapped.layout.as_mut() })?;
        Ok(Some(mapped))
    }

    /// The layout.
    #[inline(always)]
    pub(crate) fn get(&self) -> &L {
        // SAFETY: the first `size_of::<L>()` bytes of the mapping were checked to exist and
        // the base to be aligned for `L`; the mapping lives as long as `self.shm`, which the
        // returned borrow cannot outlive. `L: SharedLayout` is valid for any bytes and only
        // changes through interior mutability, so a shared reference is sound while other
        // processes operate on the same bytes.
        unsafe { self.layout.as_ref() }
    }

    /// The segment.
    pub(crate) fn shm(&self) -> &mp_shm::SharedMemory {
        &self.shm
    }
}

/// The value of a `Value<T>` as `&mut T`, consuming the proof of exclusive access.
///
/// Returns `None` if the segment is too small or misaligned for a `T` (checked when the
/// value was made or received, so never in practice).
pub(crate) fn pod_mut<T: Pod>(shm: &mp_shm::SharedMemory, exclusive: Exclusive) -> Option<&mut T> {
    pod_slice_mut::<T>(shm, 1, exclusive).and_then(|s| s.first_mut())
}

/// The items of an `Array<T>` as `&mut [T]`, consuming the proof of exclusive access.
// The `&mut` comes from the proof, not from `shm`: shared memory is interior-mutable.
#[allow(clippy::mut_from_ref)]
pub(crate) fn pod_slice_mut<T: Pod>(
    shm: &mp_shm::SharedMemory,
    len: usize,
    _exclusive: Exclusive,
) -> Option<&mut [T]> {
    let bytes = len.checked_mul(size_of::<T>())?;
    let base = shm.as_ptr();
    if bytes > shm.size() || (base as usize) % align_of::<T>() != 0 {
        return None;
    }
    // SAFETY: the range lies in the mapping, which outlives the returned borrow (it borrows
    // `shm`), and is aligned for `T`; `T: Pod` is valid for any bytes. The reference is
    // exclusive: an `Exclusive` is made only by `value.rs`, right after it took the value's
    // lock, and the reference is stored in the value guard that holds that lock and releases
    // it when dropped. Every other thread and process reaches the bytes only through the same
    // lock, so they are kept out. This thread is kept out too: if the lock is a `Lock`
    // (error-checking), it cannot take it again at all (`AlreadyHeld`); if it is an `RLock`,
    // the guard sets the lock's borrow flag, and every other path to the bytes (a second
    // guard, a copy) and every way to release the lock while the guard lives
    // (`Condition::wait`) checks the flag and refuses; guards release only themselves, and
    // `release` only holds whose guard was forgotten.
    Some(unsafe { std::slice::from_raw_parts_mut(base.cast::<T>(), len) })
}

/// The offset of a barrier action from the start of the executable, if it lies in its text.
pub(crate) fn action_offset(action: fn()) -> Option<u64> {
    mp_process::code::fn_offset(action)
}

/// Turns an offset made by [`action_offset`] in another process back into the action, if it
/// lies in this executable's text.
pub(crate) fn action_at(offset: u64) -> Option<fn()> {
    // SAFETY: the offset was made by `action_offset` (that is, `fn_offset`) from a `fn()` in a
    // process of this tree: `mp-process` checks that every child runs the same executable file
    // as its parent, and the offset reached us through the barrier's shared memory, which only
    // the processes of the tree map.
    unsafe { mp_process::code::fn_at(offset) }
}
