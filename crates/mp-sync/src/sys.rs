//! The platform layer of `mp-sync`: a process-shared robust mutex and futex waits. A port to
//! another system replaces this module and nothing else.
//!
//! It imports nothing from the crate: errors are `rustix::io::Errno`s, which the callers map.
//!
//! * [`RawMutex`]: a process-shared, robust pthread mutex (`libc`'s
//!   `pthread_mutexattr_setpshared/setrobust/settype`, `pthread_mutex_init/lock/trylock/
//!   timedlock/unlock/consistent`), with mp's own inline fast paths for the uncontended lock
//!   and the plain unlock, which follow glibc's protocol on the same memory (see the `robust`
//!   module). Taking and releasing it are `unsafe fn`s: their contract is on [`RawMutex`].
//! * [`futex_wait`] and [`futex_wake`]: shared (not process-private) futex operations on an
//!   `AtomicU32`, for the words the primitives sleep on.
//! * [`check_at_thread_exit`]: a function run when a thread exits, after its thread-locals.
//!
//! # Safety
//!
//! The crate root denies `unsafe` code; this module allows it for the pthread calls and for
//! the fast paths, which read glibc's thread descriptor and follow the robust-list links
//! stored in the mutexes. Every block says which contract it meets.

use std::cell::UnsafeCell;
use std::mem::MaybeUninit;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::time::ClockId;

/// The longest sleep of a waiter that is woken one at a time (a mutex's, a semaphore's).
///
/// Whoever releases wakes one sleeper; if that sleeper is killed before it takes what it was
/// woken for, the wake-up dies with it, and the others would sleep on beside a free mutex or
/// a permit (found by `queue_crash`: a consumer asleep on a free queue lock for ever, once in
/// ~150 runs). So they look again at least this often: a killed waiter costs the others at
/// most this long, and a wait that is never lost costs nothing more (a timer armed). It is
/// also the longest single `pthread_mutex_timedlock`, whose deadline is on `CLOCK_REALTIME`:
/// a backward jump of the wall clock lengthens a timed acquire by at most this much.
pub(crate) const WAKE_SLICE: Duration = Duration::from_millis(100);

/// Makes `check` run in every thread that called this, when it exits: after its Rust
/// thread-locals are dropped (a `pthread_key_create` destructor, which glibc runs after the
/// thread-local destructors), right before the kernel releases the robust mutexes the thread
/// still holds. It does not run when the whole process ends.
///
/// One check per process: the first function given is the one that runs. Errors: the
/// process is out of thread-specific keys (`EAGAIN`) or memory.
pub(crate) fn check_at_thread_exit(check: fn()) -> Result<(), Errno> {
    static CHECK: OnceLock<fn()> = OnceLock::new();
    static KEY: OnceLock<Result<libc::pthread_key_t, Errno>> = OnceLock::new();
    /// The key's destructor: glibc calls it at thread exit for a thread whose value is set.
    extern "C" fn at_exit(_: *mut libc::c_void) {
        if let Some(check) = CHECK.get() {
            check();
        }
    }
    CHECK.get_or_init(|| check);
    let key = *KEY.get_or_init(|| {
        let mut key: libc::pthread_key_t = 0;
        // SAFETY: `pthread_key_create` asks for writable storage for a key (`key`) and a
        // destructor that may be called in any thread at its exit with the thread's value:
        // `at_exit` ignores the value and only reads a `OnceLock`.
        rc(unsafe { libc::pthread_key_create(&mut key, Some(at_exit)) }).map(|()| key)
    });
    // Any non-null value makes glibc call the destructor; the pointer is never dereferenced.
    let marker = std::ptr::NonNull::<libc::c_void>::dangling().as_ptr();
    // SAFETY: `pthread_setspecific` asks for a key made by `pthread_key_create` and not
    // deleted (`key`; keys are never deleted); the value is an opaque pointer.
    rc(unsafe { libc::pthread_setspecific(key?, marker) })
}

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
/// robust-list links: a held robust mutex is linked into the holding thread's robust list
/// (glibc's, by glibc or by the fast paths), and those links point into that thread's address
/// space. glibc, the fast paths and, when the thread dies, the kernel follow them.
///
/// # Safety
///
/// [`lock`](RawMutex::lock), [`try_lock`](RawMutex::try_lock),
/// [`lock_until`](RawMutex::lock_until) and [`unlock`](RawMutex::unlock) are `unsafe`; their
/// callers promise:
///
/// 1. **Initialised**: the mutex was set up by [`init`](RawMutex::init) (in this process or
///    another), has not moved since, and is not initialised again while a thread holds it.
/// 2. **Mapped while held**: when a call leaves the mutex held by the calling thread, the
///    memory holding it stays mapped, at the same address, until this thread has released
///    it (or has exited): the thread's robust list links to it.
/// 3. **Written only by the protocol**: every thread of every process that maps the mutex
///    changes its bytes only through these functions (or glibc's own on the same mutex),
///    since the links stored in it are followed as pointers.
#[repr(C)]
pub(crate) struct RawMutex {
    /// The pthread mutex; only ever touched through the pthread functions and the fast paths.
    inner: UnsafeCell<libc::pthread_mutex_t>,
}

// SAFETY: `Sync` promises that `&RawMutex` may be used from several threads at once. Every
// access through a shared reference goes through the pthread functions, which are made for
// concurrent use by many threads (of many processes) on a process-shared mutex, or through the
// fast paths, which change the mutex only with atomic instructions or while holding it, as
// glibc does.
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
    /// proves that nobody else can use it yet, so no thread holds it (a hold is made through
    /// a shared reference, under the contract on [`RawMutex`]).
    pub(crate) fn init(&mut self, kind: MutexKind) -> Result<(), Errno> {
        let mut attr = MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
        // SAFETY: `pthread_mutexattr_init` asks for writable storage for an attribute object:
        // `attr` is, and the call initialises it.
        rc(unsafe { libc::pthread_mutexattr_init(attr.as_mut_ptr()) })?;
        let kind = match kind {
            MutexKind::ErrorCheck => libc::PTHREAD_MUTEX_ERRORCHECK,
            MutexKind::Recursive => libc::PTHREAD_MUTEX_RECURSIVE,
        };
        // SAFETY: the `pthread_mutexattr_set*` calls ask for an initialised attribute object
        // (`attr`, initialised above). `pthread_mutex_init` asks for storage for a mutex that
        // is not in use (ours alone through `&mut self`; not held by any thread, see above)
        // and an initialised attribute object. The attribute object is destroyed on every path.
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
        // SAFETY: `pthread_mutexattr_destroy` asks for an initialised attribute object that is
        // no longer needed: `attr` is both.
        unsafe { libc::pthread_mutexattr_destroy(attr.as_mut_ptr()) };
        result
    }

    /// Interprets the return code of a lock call: `EOWNERDEAD` makes the mutex consistent.
    ///
    /// # Safety
    ///
    /// `code` was just returned by a pthread lock call on `self` in this thread, under the
    /// contract on [`RawMutex`].
    #[inline]
    unsafe fn taken(&self, code: libc::c_int) -> Result<Taken, Errno> {
        match code {
            0 => Ok(Taken::Clean),
            libc::EOWNERDEAD => {
                // SAFETY: `pthread_mutex_consistent` asks for an initialised robust mutex
                // (contract point 1) held by the calling thread in the inconsistent state:
                // EOWNERDEAD from the lock call just made in this thread hands it over so.
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
    ///
    /// # Safety
    ///
    /// The contract on [`RawMutex`].
    #[inline(always)]
    pub(crate) unsafe fn lock(&self) -> Result<Taken, Errno> {
        // SAFETY: `try_fast_lock` asks for the contract on `RawMutex`, which the caller gives.
        match unsafe { robust::try_fast_lock(self) } {
            robust::Fast::Done => Ok(Taken::Clean),
            robust::Fast::Failed(e) => Err(e),
            // SAFETY: `lock_slow` asks for the same contract.
            robust::Fast::Slow => unsafe { self.lock_slow() },
        }
    }

    /// Locks the mutex through glibc: contended, relocked, or left by a dead holder.
    ///
    /// # Safety
    ///
    /// The contract on [`RawMutex`].
    /// It sleeps in slices of [`WAKE_SLICE`]: glibc's unlock wakes one waiter, and a waiter
    /// killed once woken would leave the others asleep beside a free mutex.
    #[cold]
    #[inline(never)]
    unsafe fn lock_slow(&self) -> Result<Taken, Errno> {
        loop {
            // SAFETY: the caller's contract is `lock_until`'s.
            if let Some(taken) = unsafe { self.lock_until(Instant::now() + WAKE_SLICE) }? {
                return Ok(taken);
            }
        }
    }

    /// Locks the mutex if it is free (or its holder died); `None` if another thread holds it.
    ///
    /// `EDEADLK` if this thread holds an error-checking mutex.
    ///
    /// # Safety
    ///
    /// The contract on [`RawMutex`].
    #[inline]
    pub(crate) unsafe fn try_lock(&self) -> Result<Option<Taken>, Errno> {
        // SAFETY: `try_fast_lock` asks for the contract on `RawMutex`, which the caller gives.
        match unsafe { robust::try_fast_lock(self) } {
            robust::Fast::Done => return Ok(Some(Taken::Clean)),
            robust::Fast::Failed(e) => return Err(e),
            robust::Fast::Slow => {}
        }
        // SAFETY: `pthread_mutex_trylock` asks what `pthread_mutex_lock` does (see
        // `lock_slow`), which the caller's contract gives.
        let code = unsafe { libc::pthread_mutex_trylock(self.inner.get()) };
        match code {
            libc::EBUSY => Ok(None),
            // SAFETY: `code` was just returned by a lock call on `self` in this thread.
            code => unsafe { self.taken(code) }.map(Some),
        }
    }

    /// Locks the mutex, blocking until `deadline` at the latest; `None` if it passed.
    ///
    /// `pthread_mutex_timedlock` takes an absolute `CLOCK_REALTIME` deadline. It is computed
    /// from the monotonic time left, in slices of at most [`WAKE_SLICE`], and an early
    /// return (the wall clock jumped forward) is retried against the monotonic deadline, so
    /// the wait is never shorter than asked.
    ///
    /// # Safety
    ///
    /// The contract on [`RawMutex`].
    pub(crate) unsafe fn lock_until(&self, deadline: Instant) -> Result<Option<Taken>, Errno> {
        loop {
            let now = Instant::now();
            let Some(left) = deadline.checked_duration_since(now).filter(|d| !d.is_zero()) else {
                // SAFETY: the caller's contract is `try_lock`'s.
                return unsafe { self.try_lock() };
            };
            let slice = left.min(WAKE_SLICE);
            let real = rustix::time::clock_gettime(ClockId::Realtime);
            let mut sec = real.tv_sec.saturating_add(slice.as_secs() as i64);
            let mut nsec = real.tv_nsec.saturating_add(i64::from(slice.subsec_nanos()));
            if nsec >= 1_000_000_000 {
                nsec -= 1_000_000_000;
                sec = sec.saturating_add(1);
            }
            let abs = libc::timespec { tv_sec: sec as libc::time_t, tv_nsec: nsec as _ };
            // SAFETY: `pthread_mutex_timedlock` asks what `pthread_mutex_lock` does (see
            // `lock_slow`; the caller's contract), and a valid timespec: `abs` is normalised
            // and lives across the call.
            let code = unsafe { libc::pthread_mutex_timedlock(self.inner.get(), &abs) };
            match code {
                libc::ETIMEDOUT => continue,
                // SAFETY: `code` was just returned by a lock call on `self` in this thread.
                code => return unsafe { self.taken(code) }.map(Some),
            }
        }
    }

    /// Unlocks the mutex. `EPERM` if this thread does not hold it.
    ///
    /// # Safety
    ///
    /// Points 1 and 3 of the contract on [`RawMutex`] (a release leaves nothing held).
    #[inline(always)]
    pub(crate) unsafe fn unlock(&self) -> Result<(), Errno> {
        // SAFETY: `try_fast_unlock` asks for points 1 and 3, which the caller gives.
        if unsafe { robust::try_fast_unlock(self) } {
            Ok(())
        } else {
            // SAFETY: `unlock_slow` asks for the same.
            unsafe { self.unlock_slow() }
        }
    }

    /// Unlocks the mutex through glibc: held at several levels, not made consistent, or not
    /// held by this thread.
    ///
    /// # Safety
    ///
    /// As [`unlock`](RawMutex::unlock).
    #[cold]
    #[inline(never)]
    unsafe fn unlock_slow(&self) -> Result<(), Errno> {
        // SAFETY: `pthread_mutex_unlock` asks for an initialised mutex (point 1) whose links
        // are glibc's own (point 3). glibc checks the owner of a robust mutex and returns
        // EPERM for a thread that does not hold it, touching nothing else.
        rc(unsafe { libc::pthread_mutex_unlock(self.inner.get()) })
    }
}

/// mp's own fast paths for a robust mutex: an uncontended lock and an unlock without
/// complications, inline, following glibc's robust-mutex protocol step for step on the same
/// memory, so that glibc's functions (the slow paths) and these interleave freely.
///
/// # Why not glibc's functions for everything
///
/// `pthread_mutex_lock`/`unlock` of a robust mutex take two calls through the PLT and a
/// dispatch on the mutex type each (`__pthread_mutex_lock_full`), which measured about as
/// much as the two atomic instructions that are the real work. mp knows the type of its
/// mutexes, so it does the work inline and leaves every other case to glibc.
///
/// # Why not a robust lock of mp's own
///
/// Owner death rests on the kernel's robust list, which has a single head per thread,
/// registered with `set_robust_list`, and glibc registers its own for every thread. A second
/// registration would unhook glibc's; a separate list is impossible. So mp's holds must be
/// entries of glibc's list, in glibc's format: a `pthread_mutex_t`, linked through its
/// `__list` (`__prev`, then `__next`, the node the kernel follows), with the lock word
/// `futex_offset` bytes before the node. Once mp follows that format it might as well be a
/// glibc robust mutex, which keeps the slow paths (sleeping, timed waits, `EOWNERDEAD` and
/// `pthread_mutex_consistent`, recursion, `EDEADLK`, `EPERM`) in glibc.
///
/// # The protocol (glibc's `pthread_mutex_lock.c`, `pthread_mutex_unlock.c`, `descr.h`)
///
/// The lock word holds the holder's tid, `FUTEX_WAITERS` and `FUTEX_OWNER_DIED`. To lock:
/// set the thread's `list_op_pending` to the node, compare-and-swap the word from 0 to the
/// tid, set `__count` to 1, insert the node at the front of the list, clear
/// `list_op_pending`, set `__owner` to the tid and count a user. To unlock: set
/// `list_op_pending`, unlink the node, clear `__owner`, uncount the user, swap the word to 0
/// (waking one waiter if `FUTEX_WAITERS` was set), clear `list_op_pending`. The thread is the
/// only writer of its list; the kernel reads it after the thread died, so program order
/// (compiler fences: the concurrency is that of a signal handler) keeps it consistent at
/// every point a kill can land, as in glibc. Anything else (the word not 0, the mutex held at
/// several levels or not made consistent, another holder) goes to glibc.
///
/// # What it assumes of glibc, checked once per thread
///
/// The robust-list head sits in glibc's thread descriptor right after `pid_t tid; pid_t
/// pid_ununsed; void *robust_prev;` (`nptl/descr.h` with `__PTHREAD_MUTEX_HAVE_PREV`, as in
/// glibc 2.36 and current glibc; the layout is private to glibc, hence the check). The first
/// fast operation of a thread asks the kernel for the head (`get_robust_list`) and uses the
/// fast paths only if its size is glibc's, its `futex_offset` is that of a `pthread_mutex_t`,
/// and the `tid` before it is the thread's (`gettid`). glibc keeps that `tid` right across
/// `fork`, so the fast paths never cache a tid. Otherwise (another C library, a runtime that
/// registered its own head) every operation goes to the pthread functions. Reading that `tid`
/// assumes that a head of glibc's size and `futex_offset` is glibc's: nothing else is expected
/// to register one of exactly that shape.
#[cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64"))]
mod robust {
    use std::cell::Cell;
    use std::marker::PhantomData;
    use std::ptr;
    use std::sync::atomic::{AtomicPtr, AtomicU32, Ordering, compiler_fence};

    use rustix::io::Errno;

    use super::RawMutex;

    /// The lock word's bit saying that threads may sleep on it (`linux/futex.h`).
    const FUTEX_WAITERS: u32 = 0x8000_0000;
    /// The lock word's bits holding the holder's tid.
    const FUTEX_TID_MASK: u32 = 0x3fff_ffff;
    /// glibc's `__owner` of a mutex that was released without being made consistent.
    const PTHREAD_MUTEX_NOTRECOVERABLE: u32 = 0x7fff_fffe;

    /// glibc's `struct __pthread_mutex_s` on 64-bit Linux (`bits/struct_mutex.h`), the layout
    /// behind a `pthread_mutex_t`, as atomics: glibc's functions write it with plain stores,
    /// but always from the thread that holds the mutex, as these paths do.
    #[repr(C)]
    struct GlibcMutex {
        /// `__lock`: the futex word.
        lock: AtomicU32,
        /// `__count`: the levels of a recursive hold.
        count: AtomicU32,
        /// `__owner`: the holder's tid, or a marker of an inconsistent mutex (an `int`).
        owner: AtomicU32,
        /// `__nusers`.
        nusers: AtomicU32,
        /// `__kind`.
        _kind: AtomicU32,
        /// `__spins` and `__elision`.
        _spins: AtomicU32,
        /// `__list.__prev`: the node before this one in the holder's robust list.
        prev: AtomicPtr<u8>,
        /// `__list.__next`: the node of the kernel's robust list.
        next: AtomicPtr<u8>,
    }

    const _: () = assert!(size_of::<GlibcMutex>() == size_of::<libc::pthread_mutex_t>());
    const _: () = assert!(align_of::<GlibcMutex>() <= align_of::<libc::pthread_mutex_t>());

    /// The `futex_offset` glibc registers: from a node (`__list.__next`) back to the lock word.
    const FUTEX_OFFSET: i64 = -(std::mem::offset_of!(GlibcMutex, next) as i64);

    /// The kernel's `struct robust_list_head`, inside glibc's thread descriptor.
    #[repr(C)]
    struct RobustHead {
        /// The first node, or the head itself when the list is empty (bit 0 marks PI mutexes).
        list: AtomicPtr<u8>,
        /// From a node to its lock word.
        futex_offset: i64,
        /// The node being locked or unlocked right now, if any.
        op_pending: AtomicPtr<u8>,
    }

    /// The byte offset from the head back to glibc's `tid` of the thread.
    const TID_BEFORE_HEAD: usize = 16;
    /// The byte offset from a node back to the `__prev` beside it (glibc's `QUEUE_PTR_ADJUST`);
    /// the head has one too (glibc's `robust_prev`).
    const PREV_BEFORE_NODE: usize = 8;

    /// This thread's robust-list head once checked, [`UNSUPPORTED`], or 0 before the check.
    /// Not `Send`: it describes the thread that made it.
    #[derive(Clone, Copy)]
    struct Head(usize, PhantomData<*const ()>);

    /// The value of [`HEAD`] when the fast paths cannot be used in this thread.
    const UNSUPPORTED: usize = 1;

    thread_local! {
        /// This thread's [`Head`]. Constant-initialised and without `Drop`: reading it is a
        /// load relative to the thread pointer, and never fails.
        static HEAD: Cell<Head> = const { Cell::new(Head(0, PhantomData)) };
    }

    impl Head {
        /// This thread's head, if the fast paths can be used.
        #[inline(always)]
        fn get() -> Option<Head> {
            let head = HEAD.try_with(Cell::get).ok()?;
            match head.0 {
                0 => Head::probe(),
                UNSUPPORTED => None,
                _ => Some(head),
            }
        }

        /// Asks the kernel for this thread's head and checks that glibc laid it out as the
        /// fast paths assume.
        #[cold]
        #[inline(never)]
        fn probe() -> Option<Head> {
            let mut head: *mut RobustHead = ptr::null_mut();
            let mut len: libc::size_t = 0;
            // SAFETY: `get_robust_list(0, ...)` writes the calling thread's head pointer and
            // the registered size into the two locations, which are valid for those writes.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_get_robust_list,
                    0 as libc::c_long,
                    &raw mut head,
                    &raw mut len,
                )
            };
            let address = head as usize;
            let fits = rc == 0
                && len == size_of::<RobustHead>()
                && address % align_of::<RobustHead>() == 0
                && address > TID_BEFORE_HEAD;
            let found = fits && {
                // SAFETY: the kernel registered `head` for this thread with the size of a
                // `RobustHead`, so it points to one, which lives as long as the thread (glibc
                // keeps it in the thread's descriptor). Only this thread writes it.
                let offset = unsafe { (*head).futex_offset };
                offset == FUTEX_OFFSET && {
                    let tid = address.wrapping_sub(TID_BEFORE_HEAD) as *const AtomicU32;
                    // SAFETY: dereferencing asks for a live, aligned `AtomicU32`. A head of
                    // glibc's size whose `futex_offset` is that of a `pthread_mutex_t` is
                    // glibc's (checked above; another runtime registering one of the same
                    // shape is assumed away, see the module documentation), and glibc
                    // registers `&pd->robust_head`, after `pid_t tid; pid_t pid_ununsed; void
                    // *robust_prev;` of the same descriptor, so the 4 bytes `TID_BEFORE_HEAD`
                    // before it are live and aligned for an `i32` (the head is 8-aligned,
                    // checked above). The comparison with `gettid` confirms the layout. The
                    // read is atomic and glibc writes `tid` only in this thread (and in `fork`,
                    // before the child runs).
                    let tid = unsafe { &*tid }.load(Ordering::Relaxed);
                    let me = rustix::thread::gettid().as_raw_nonzero().get();
                    u32::try_from(me) == Ok(tid)
                }
            };
            let head = Head(if found { address } else { UNSUPPORTED }, PhantomData);
            let _ = HEAD.try_with(|h| h.set(head));
            found.then_some(head)
        }

        /// The head. (`'static` stands for "as long as this thread": the fast paths use the
        /// reference within one call, in the thread, and never store it.)
        #[inline(always)]
        fn head(self) -> &'static RobustHead {
            // SAFETY: `probe` checked that the address is this thread's registered head, which
            // lives as long as the thread; a `Head` is made in the thread it describes and is
            // not `Send`, so it is used only there.
            unsafe { &*(self.0 as *const RobustHead) }
        }

        /// The thread's tid as glibc keeps it (a `pid_t`; updated by `fork` in the child).
        #[inline(always)]
        fn tid(self) -> u32 {
            // SAFETY: `probe` checked that glibc's `tid` lies `TID_BEFORE_HEAD` bytes before
            // the head, in the thread's descriptor, aligned.
            let tid = unsafe { &*(self.0.wrapping_sub(TID_BEFORE_HEAD) as *const AtomicU32) };
            tid.load(Ordering::Relaxed)
        }
    }

    /// The `__prev` that sits [`PREV_BEFORE_NODE`] bytes before a node of this thread's list
    /// (or before the head, glibc's `robust_prev`).
    ///
    /// # Safety
    ///
    /// `node`, with bit 0 cleared, is the head of this thread's list or a node in it, which
    /// glibc or these paths linked: the `__list.__next` of a locked `pthread_mutex_t` that is
    /// still mapped (point 2 of the contract on [`RawMutex`]), or the head in glibc's thread
    /// descriptor.
    #[inline(always)]
    unsafe fn prev_of(node: *mut u8) -> &'static AtomicPtr<u8> {
        let at = (node as usize & !1).wrapping_sub(PREV_BEFORE_NODE);
        // SAFETY: dereferencing asks for a pointer to a live, aligned `AtomicPtr`: by this
        // function's contract, `at` is the `__prev` of a `__pthread_list_t` (or glibc's
        // `robust_prev`), a pointer-sized, aligned field that lives while the node is linked,
        // and is only accessed atomically while this thread uses it (it is this thread's list).
        // The reference is used at once, never kept.
        unsafe { &*(at as *const AtomicPtr<u8>) }
    }

    /// The `__next` a node points to, seen from the node itself.
    ///
    /// # Safety
    ///
    /// As [`prev_of`].
    #[inline(always)]
    unsafe fn next_of(node: *mut u8) -> &'static AtomicPtr<u8> {
        // SAFETY: as in `prev_of`: by the contract, a node is the address of a live, aligned
        // `__next` field (or of the head's `list`).
        unsafe { &*((node as usize & !1) as *const AtomicPtr<u8>) }
    }

    /// What a fast path did.
    pub(super) enum Fast {
        /// The mutex is locked, cleanly.
        Done,
        /// The mutex cannot be locked (glibc would say the same).
        Failed(Errno),
        /// Left to glibc.
        Slow,
    }

    impl RawMutex {
        /// The mutex as glibc's layout.
        #[inline(always)]
        fn glibc(&self) -> &GlibcMutex {
            // SAFETY: `GlibcMutex` is the layout of the `pthread_mutex_t` (size and alignment
            // are checked above), made only of atomics, valid for every bit pattern; the
            // mutex is inside an `UnsafeCell` and only ever changed atomically by these paths
            // or by glibc's functions, which write these fields only in the thread holding the
            // mutex (the lock word, which others change, always with atomic instructions).
            unsafe { &*self.inner.get().cast::<GlibcMutex>() }
        }
    }

    /// Locks `mutex` if its word is 0, as glibc's robust lock does.
    ///
    /// # Safety
    ///
    /// The contract on [`RawMutex`].
    #[inline(always)]
    pub(super) unsafe fn try_fast_lock(mutex: &RawMutex) -> Fast {
        let Some(head) = Head::get() else { return Fast::Slow };
        let (h, m, tid) = (head.head(), mutex.glibc(), head.tid());
        let node = m.next.as_ptr().cast::<u8>();
        h.op_pending.store(node, Ordering::Relaxed);
        compiler_fence(Ordering::SeqCst);
        if m.lock.compare_exchange(0, tid, Ordering::Acquire, Ordering::Relaxed).is_err() {
            compiler_fence(Ordering::SeqCst);
            h.op_pending.store(ptr::null_mut(), Ordering::Relaxed);
            return Fast::Slow;
        }
        if m.owner.load(Ordering::Relaxed) == PTHREAD_MUTEX_NOTRECOVERABLE {
            // Released after an owner died and never made consistent: give the word back
            // and fail, as glibc does.
            m.count.store(0, Ordering::Relaxed);
            if m.lock.swap(0, Ordering::Release) & FUTEX_WAITERS != 0 {
                mp_process::os::futex::wake(&m.lock, 1);
            }
            compiler_fence(Ordering::SeqCst);
            h.op_pending.store(ptr::null_mut(), Ordering::Relaxed);
            return Fast::Failed(Errno::NOTRECOVERABLE);
        }
        m.count.store(1, Ordering::Relaxed);
        compiler_fence(Ordering::SeqCst);
        // Insert at the front (glibc's ENQUEUE_MUTEX).
        let first = h.list.load(Ordering::Relaxed);
        // SAFETY: `prev_of` asks for the head or a node of this thread's list: `first` is the
        // head or the first node, each linked node a mutex this thread holds, which stays mapped
        // while held (point 2 of the contract, which every hold of this thread was made under).
        unsafe { prev_of(first) }.store(node, Ordering::Relaxed);
        m.next.store(first, Ordering::Relaxed);
        m.prev.store(h.list.as_ptr().cast::<u8>(), Ordering::Relaxed);
        compiler_fence(Ordering::SeqCst);
        h.list.store(node, Ordering::Relaxed);
        compiler_fence(Ordering::SeqCst);
        h.op_pending.store(ptr::null_mut(), Ordering::Relaxed);
        m.owner.store(tid, Ordering::Relaxed);
        m.nusers.store(m.nusers.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
        Fast::Done
    }

    /// Unlocks `mutex` if this thread holds it at one level, consistent, as glibc's robust
    /// unlock does; whether it did.
    ///
    /// # Safety
    ///
    /// Points 1 and 3 of the contract on [`RawMutex`].
    #[inline(always)]
    pub(super) unsafe fn try_fast_unlock(mutex: &RawMutex) -> bool {
        let Some(head) = Head::get() else { return false };
        let (h, m, tid) = (head.head(), mutex.glibc(), head.tid());
        if m.lock.load(Ordering::Relaxed) & FUTEX_TID_MASK != tid
            || m.owner.load(Ordering::Relaxed) != tid
            || m.count.load(Ordering::Relaxed) != 1
        {
            return false;
        }
        let node = m.next.as_ptr().cast::<u8>();
        h.op_pending.store(node, Ordering::Relaxed);
        compiler_fence(Ordering::SeqCst);
        // Unlink (glibc's DEQUEUE_MUTEX).
        let (next, prev) = (m.next.load(Ordering::Relaxed), m.prev.load(Ordering::Relaxed));
        // SAFETY: `prev_of` and `next_of` ask for the head or nodes of this thread's list. This
        // thread holds the mutex (its tid is in the word and `__owner`, checked above), so its
        // node is in this thread's list, and the links stored in it, which only the protocol
        // writes (point 3), are its neighbours there: nodes of mutexes this thread holds, mapped
        // while held (point 2 of the contract under which they were taken), or the head.
        unsafe {
            prev_of(next).store(prev, Ordering::Relaxed);
            next_of(prev).store(next, Ordering::Relaxed);
        }
        compiler_fence(Ordering::SeqCst);
        m.prev.store(ptr::null_mut(), Ordering::Relaxed);
        m.next.store(ptr::null_mut(), Ordering::Relaxed);
        m.owner.store(0, Ordering::Relaxed);
        m.nusers.store(m.nusers.load(Ordering::Relaxed).wrapping_sub(1), Ordering::Relaxed);
        if m.lock.swap(0, Ordering::SeqCst) & FUTEX_WAITERS != 0 {
            mp_process::os::futex::wake(&m.lock, 1);
        }
        compiler_fence(Ordering::SeqCst);
        h.op_pending.store(ptr::null_mut(), Ordering::Relaxed);
        true
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::sys::{MutexKind, Taken};
        use std::cell::UnsafeCell;
        use std::time::Duration;

        #[test]
        fn a_waiter_whose_wake_up_went_to_another_finds_the_mutex_free() {
            // glibc's unlock wakes one waiter. A waiter killed once woken takes that wake-up
            // along; here a decoy queued first on the mutex's futex takes it and leaves. The
            // real waiter must still find the mutex free (a queue consumer slept for ever
            // beside its free lock once in ~150 runs of `queue_crash` before).
            let mut boxed = Box::new(RawMutex {
                inner: UnsafeCell::new(
                    // SAFETY: an all-zero `pthread_mutex_t` is plain bytes, initialised below.
                    unsafe { std::mem::zeroed() },
                ),
            });
            boxed.init(MutexKind::ErrorCheck).unwrap();
            let m: &RawMutex = &boxed;
            // SAFETY: initialised above, never moved (boxed), used through these calls only.
            assert_eq!(unsafe { m.lock() }, Ok(Taken::Clean));
            let word = &m.glibc().lock;
            let held = word.fetch_or(FUTEX_WAITERS, Ordering::SeqCst) | FUTEX_WAITERS;
            let (tids, tid) = std::sync::mpsc::channel();
            let (done, finished) = std::sync::mpsc::channel();
            std::thread::scope(|s| {
                let decoy = {
                    let tids = tids.clone();
                    s.spawn(move || {
                        tids.send(rustix::thread::gettid().as_raw_nonzero().get()).unwrap();
                        mp_process::os::futex::wait(word, held, None).unwrap()
                    })
                };
                let decoy_tid = tid.recv().unwrap();
                assert!(mp_testkit::eventually(Duration::from_secs(30), || {
                    mp_testkit::asleep_in_futex(decoy_tid)
                }));
                s.spawn(move || {
                    tids.send(rustix::thread::gettid().as_raw_nonzero().get()).unwrap();
                    // SAFETY: as above.
                    let taken = unsafe { m.lock() };
                    // SAFETY: as above; this thread holds it if `taken` is `Ok`.
                    let released = unsafe { m.unlock() };
                    done.send((taken, released)).unwrap();
                });
                let waiter_tid = tid.recv().unwrap();
                assert!(mp_testkit::eventually(Duration::from_secs(30), || {
                    mp_testkit::asleep_in_futex(waiter_tid)
                }));
                // The unlock's one wake-up goes to the decoy, queued first.
                // SAFETY: this thread holds it.
                assert_eq!(unsafe { m.unlock() }, Ok(()));
                assert!(!decoy.join().unwrap(), "the decoy was woken, not timed out");
                let got = finished.recv_timeout(Duration::from_secs(30));
                assert_eq!(
                    got,
                    Ok((Ok(Taken::Clean), Ok(()))),
                    "the waiter slept beside a free mutex"
                );
            });
        }

        #[test]
        fn the_fast_paths_are_used_in_every_thread() {
            // glibc's layout is as assumed here: if this fails, mp still works, through the
            // pthread functions only, and the lock rows of the benchmark say so.
            assert!(Head::get().is_some());
            assert!(std::thread::spawn(|| Head::get().is_some()).join().unwrap());
        }
    }
}

/// Elsewhere every operation goes to the pthread functions.
#[cfg(not(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64")))]
mod robust {
    use rustix::io::Errno;

    use super::RawMutex;

    /// What a fast path did: here, never anything.
    pub(super) enum Fast {
        /// Unused.
        #[allow(dead_code)]
        Done,
        /// Unused.
        #[allow(dead_code)]
        Failed(Errno),
        /// Left to the pthread functions.
        Slow,
    }

    /// Leaves the lock to the pthread functions.
    ///
    /// # Safety
    ///
    /// None needed here; `unsafe` to match the glibc version.
    #[inline(always)]
    pub(super) unsafe fn try_fast_lock(_: &RawMutex) -> Fast {
        Fast::Slow
    }

    /// Leaves the unlock to the pthread functions.
    ///
    /// # Safety
    ///
    /// None needed here; `unsafe` to match the glibc version.
    #[inline(always)]
    pub(super) unsafe fn try_fast_unlock(_: &RawMutex) -> bool {
        false
    }
}
