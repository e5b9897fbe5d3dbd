//! A primitive's shared segment: a header, its `#[repr(C)]` layout, and the eventfd doorbell
//! beside it, plus the process-local handle that registers pollers.
//!
//! # The doorbell protocol
//!
//! Every primitive has an eventfd (the *doorbell*) next to its futex words, so that event
//! loops can poll it. Ringing costs a `write`, so it happens only when the header's
//! `pollers` count says some handle, in some process, has handed out its descriptor:
//!
//! 1. A handle registers the first time its `as_fd` is called in a process: `pollers += 1`
//!    (SeqCst), then one unconditional ring, so that a state that was already ready before
//!    the registration is not missed. The registration ends when the last clone of that
//!    handle in that process is dropped (`pollers -= 1`). A process killed while registered
//!    leaves the count too high, which costs writes, never correctness.
//! 2. Every operation that may make the primitive ready (a release, a `set`, a broken barrier)
//!    changes the state first, then reads `pollers` (SeqCst) and rings if it is not zero.
//!    Since the registration increments `pollers` before its first look at the state, either
//!    the operation sees the poller or the poller sees the new state.
//! 3. A non-blocking attempt by a registered handle (`try_acquire`, `is_set`, ...) first
//!    drains the doorbell, then looks at the state; if the primitive is still ready for
//!    others afterwards (a semaphore with permits left, an event still set), it rings again,
//!    so that another poller's readiness is never eaten by this one.
//!
//! Readiness is therefore a hint: a poller may wake and find the primitive taken by someone
//! else (then its failed attempt drains the doorbell and it polls again), but it never
//! sleeps while the primitive stays ready.

use std::fmt;
use std::mem::ManuallyDrop;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use mp_process::fdpass::{Kind as ObjectKind, ObjectId, SharedObject, refuse};
use mp_shm::SharedMemory;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Error;
#[cfg(doc)]
use crate::sys::RawMutex;

/// "mpsy" in little-endian ASCII: the first word of the header of every segment of this crate.
const MAGIC: u32 = u32::from_le_bytes(*b"mpsy");

/// The version of the layouts; bumped whenever one of them (or the meaning of a word) changes.
/// 2: a barrier's generation word counts by 2 and carries the "action running" bit.
/// 3: a barrier's layout holds the table of its actions.
const VERSION: u32 = 4;

/// What a segment holds; checked when a segment is received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum Kind {
    /// A `Lock`.
    Lock = 1,
    /// An `RLock`.
    RLock = 2,
    /// A `Semaphore`.
    Semaphore = 3,
    /// A `BoundedSemaphore`.
    BoundedSemaphore = 4,
    /// An `Event`.
    Event = 5,
    /// A `Condition`.
    Condition = 6,
    /// A `Barrier`.
    Barrier = 7,
}

impl Kind {
    /// The primitive's name, as errors show it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Lock => "mp_sync::Lock",
            Kind::RLock => "mp_sync::RLock",
            Kind::Semaphore => "mp_sync::Semaphore",
            Kind::BoundedSemaphore => "mp_sync::BoundedSemaphore",
            Kind::Event => "mp_sync::Event",
            Kind::Condition => "mp_sync::Condition",
            Kind::Barrier => "mp_sync::Barrier",
        }
    }
}

/// The header of every segment, after the primitive's layout, in a cache line of its own:
/// it is read by every release (`pollers`) but written almost never, so every CPU keeps a
/// shared copy, and reading it right after a release does not have to win back the line of
/// the lock word that another process may be taking at that moment.
///
/// Lives in shared memory: `#[repr(C)]`, atomics only, no pointers. `magic`, `kind` and
/// `version` are written once by the creator before the segment is shared.
#[repr(C, align(64))]
pub(crate) struct Header {
    /// [`MAGIC`].
    magic: AtomicU32,
    /// A [`Kind`] as `u32`.
    kind: AtomicU32,
    /// [`VERSION`].
    version: AtomicU32,
    /// How many handles, over all processes, have handed out the doorbell's descriptor.
    pollers: AtomicU32,
    /// An identifier of the segment, unique with high probability: handles on the same
    /// primitive that were received separately (and so map it at different addresses)
    /// recognise each other by it.
    id: AtomicU64,
    /// Unused.
    _reserved: AtomicU64,
}

const _: () = assert!(size_of::<Header>() == 64 && align_of::<Header>() <= LAYOUT_ALIGN);

/// A whole segment: the primitive's layout, then the header.
///
/// The layout starts the segment, so a lock's mutex and its counters share the first cache
/// line; the header starts the next cache line after the layout.
///
/// Lives in shared memory: `#[repr(C)]`, no pointers (see [`Header`] and each layout).
#[repr(C)]
pub(crate) struct Full<L> {
    /// The primitive's layout, at offset 0.
    body: L,
    /// The header.
    header: Header,
}

/// A `#[repr(C)]` layout that can be viewed in place in a shared segment (through
/// [`Mapped`]).
///
/// # Safety
///
/// Implementors promise that:
///
/// * they are `#[repr(C)]` and have no `Drop` (a view never drops the bytes it looks at);
/// * every bit pattern, in particular all zeros, is a valid value (another process may have
///   written anything);
/// * they hold no pointers into private memory, except the robust-list links inside a
///   [`RawMutex`] (see its documentation);
/// * their alignment is at most [`LAYOUT_ALIGN`] (segments are page-aligned);
/// * they change only through interior mutability (atomics and [`RawMutex`]), so that a
///   shared reference to one may coexist with writes from other threads and processes.
///
/// Each implementation sits beside its type, with the reason it holds.
pub(crate) unsafe trait SharedLayout: Sync + 'static {}

/// The largest alignment a [`SharedLayout`] may have: a cache line (segments are
/// page-aligned).
pub(crate) const LAYOUT_ALIGN: usize = 64;

// SAFETY: `Full<L>` is a `#[repr(C)]` pair of an `L: SharedLayout` and a `Header`; neither has
// `Drop`. `Header` is `#[repr(C)]`, made of `AtomicU32`/`AtomicU64` only (every bit pattern
// valid, no pointers, changed only atomically) and aligned to 64 = `LAYOUT_ALIGN`. So `Full<L>`
// has every property the trait asks for when `L` has them: valid for every bit pattern, no
// pointers but `L`'s mutex links, interior mutability only, alignment max(align(L), 64) ≤ 64.
unsafe impl<L: SharedLayout> SharedLayout for Full<L> {}

/// A shared segment viewed as an `L` at its start, checked once when it is made.
///
/// The segment stays mapped while the view lives; [`keep_mapped`](Mapped::keep_mapped) makes
/// it stay mapped for the rest of the process (for a mutex of `L` that some thread may still
/// hold, see [`RawMutex`]).
pub(crate) struct Mapped<L> {
    /// The segment; its mapping outlives every reference `get` hands out. Dropped by `Drop`,
    /// unless `keep` says to leave it mapped.
    shm: ManuallyDrop<SharedMemory>,
    /// The start of the mapping, checked to be aligned and large enough for an `L`.
    layout: NonNull<L>,
    /// Whether the segment stays mapped when the view is dropped.
    keep: bool,
}

// SAFETY: `Send` promises that the view may move to another thread. It owns its
// `SharedMemory`, which is `Send`; the pointer designates the start of that mapping, whose
// address does not depend on the thread, and `L: SharedLayout` is `Sync` and made for access
// from any thread (and process).
unsafe impl<L: SharedLayout> Send for Mapped<L> {}
// SAFETY: `Sync` promises that `&Mapped<L>` may be used from several threads at once: it only
// hands out `&L` (`get`, and `L: Sync`) and `&SharedMemory` (which is `Sync`).
unsafe impl<L: SharedLayout> Sync for Mapped<L> {}

impl<L: SharedLayout> Mapped<L> {
    /// Views `shm` as an `L`, if it is large enough and aligned.
    pub(crate) fn new(shm: SharedMemory) -> Option<Self> {
        const { assert!(align_of::<L>() <= LAYOUT_ALIGN) };
        let base = shm.as_ptr();
        if size_of::<L>() > shm.size() || (base as usize) % align_of::<L>() != 0 {
            return None;
        }
        let layout = NonNull::new(base.cast::<L>())?;
        Some(Mapped { shm: ManuallyDrop::new(shm), layout, keep: false })
    }

    /// Creates a segment for an `L` (zeroed, anonymous, not shared with anyone yet) and lets
    /// `init` set it up through a `&mut` before anything else can reach it.
    pub(crate) fn create(init: impl FnOnce(&mut L) -> Result<(), Error>) -> Result<Self, Error> {
        let shm = SharedMemory::new(size_of::<L>()).map_err(Error::SharedMemory)?;
        let mut mapped =
            Self::new(shm).ok_or(Error::Corrupt("a new segment is too small for its layout"))?;
        // SAFETY: `NonNull::as_mut` asks for a pointer that is aligned, dereferenceable for an
        // `L` holding a valid value, and not accessed through any other pointer while the
        // `&mut` lives. `new` checked the size and alignment, and the mapping lives as long as
        // `mapped`, which outlives `init`; the bytes are zeros, a valid `L` (`SharedLayout`).
        // The segment was just created here (`SharedMemory::new`: an anonymous memfd nobody
        // else holds) and is not handed out before `init` returns, so no other reference to its
        // bytes exists in any thread or process.
        init(unsafe { mapped.layout.as_mut() })?;
        Ok(mapped)
    }

    /// The layout.
    #[inline(always)]
    pub(crate) fn get(&self) -> &L {
        // SAFETY: `NonNull::as_ref` asks for a pointer that is aligned and dereferenceable for a
        // valid `L` for the returned lifetime, with no mutation except through `UnsafeCell`
        // meanwhile. `new` checked the size and alignment; the mapping lives as long as
        // `self.shm`, which the returned borrow cannot outlive; `L: SharedLayout` is valid for
        // any bytes and changes only through interior mutability, which is what other threads
        // and processes use.
        unsafe { self.layout.as_ref() }
    }

    /// The segment.
    pub(crate) fn shm(&self) -> &SharedMemory {
        &self.shm
    }

    /// Leaves the segment mapped (and its descriptor open) for the rest of the process when
    /// the view is dropped.
    pub(crate) fn keep_mapped(&mut self) {
        self.keep = true;
    }
}

impl<L> Drop for Mapped<L> {
    fn drop(&mut self) {
        if !self.keep {
            // SAFETY: `ManuallyDrop::drop` asks that the value is not used again: `shm` is
            // dropped here, once, and `self` is being dropped with it.
            unsafe { ManuallyDrop::drop(&mut self.shm) };
        }
    }
}

/// The typed segment of one primitive, with its doorbell.
pub(crate) struct Shared<L: SharedLayout> {
    /// The memory.
    map: Mapped<Full<L>>,
    /// The doorbell: a non-blocking eventfd.
    bell: OwnedFd,
    /// The header's identifier, as read once (the header's words never change).
    id: u64,
    /// The header's kind, as read once.
    kind: u32,
}

impl<L: SharedLayout> Shared<L> {
    /// Creates a zeroed segment for `L`, lets `init` set it up, then stamps the header.
    ///
    /// `init` runs before anything else can see the segment.
    pub(crate) fn create(
        kind: Kind,
        init: impl FnOnce(&mut L) -> Result<(), Error>,
    ) -> Result<Self, Error> {
        let bell = mp_process::os::eventfd::doorbell().map_err(|e| Error::io("eventfd", e))?;
        let map = Mapped::create(|full: &mut Full<L>| init(&mut full.body))?;
        let id = mp_process::fdpass::new_object_id();
        let shared = Shared { map, bell, id, kind: kind as u32 };
        let header = shared.header();
        header.kind.store(kind as u32, Ordering::Relaxed);
        header.version.store(VERSION, Ordering::Relaxed);
        header.id.store(id, Ordering::Relaxed);
        header.magic.store(MAGIC, Ordering::Release);
        Ok(shared)
    }

    /// Checks a received segment: size, magic, version and kind.
    fn check(shm: SharedMemory, bell: OwnedFd, kinds: &[Kind]) -> Result<Self, &'static str> {
        let map = Mapped::new(shm).ok_or("the segment is too small for its primitive")?;
        let mut shared = Shared { map, bell, id: 0, kind: 0 };
        let header = shared.header();
        if header.magic.load(Ordering::Acquire) != MAGIC {
            return Err("the segment is not an mp-sync primitive");
        }
        if header.version.load(Ordering::Relaxed) != VERSION {
            return Err("the segment was made by another version of mp-sync");
        }
        let kind = header.kind.load(Ordering::Relaxed);
        if !kinds.iter().any(|k| *k as u32 == kind) {
            return Err("the segment holds another kind of primitive");
        }
        shared.id = header.id.load(Ordering::Relaxed);
        shared.kind = kind;
        Ok(shared)
    }

    /// The header.
    #[inline]
    pub(crate) fn header(&self) -> &Header {
        &self.map.get().header
    }

    /// The layout.
    #[inline]
    pub(crate) fn get(&self) -> &L {
        &self.map.get().body
    }

    /// The segment.
    pub(crate) fn shm(&self) -> &SharedMemory {
        self.map.shm()
    }

    /// The segment's identifier.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Rings the doorbell if anyone polls it (step 2 of the protocol).
    #[inline]
    pub(crate) fn ring_if_polled(&self) {
        if self.header().pollers.load(Ordering::SeqCst) != 0 {
            self.ring();
        }
    }

    /// Rings the doorbell.
    #[cold]
    pub(crate) fn ring(&self) {
        mp_process::os::eventfd::ring(self.bell.as_fd());
    }

    /// Empties the doorbell.
    pub(crate) fn drain(&self) {
        mp_process::os::eventfd::drain(self.bell.as_fd());
    }
}

/// A process-local handle on a shared segment: the segment and this process's poller
/// registration. Primitives hold it in an `Arc`, so that clones share one registration.
pub(crate) struct Handle<L: SharedLayout> {
    /// The segment.
    pub(crate) shared: Shared<L>,
    /// The pid of the process that registered this handle as a poller, or 0.
    polling: AtomicU32,
    /// How many holds of the layout's mutexes, taken through this handle by threads of this
    /// process, may outlive every borrow of the handle (a lock's, whose guard can be leaked):
    /// while it is not zero, dropping the handle leaves the segment mapped.
    holds: AtomicUsize,
    /// Whether this process's waits through this handle spin before they sleep.
    pub(crate) spin: crate::wait::SpinBackoff,
}

/// This process's pid as a `u32`.
fn my_pid() -> u32 {
    mp_process::os::pid()
}

impl<L: SharedLayout> Handle<L> {
    /// A handle on a new segment.
    pub(crate) fn create(
        kind: Kind,
        init: impl FnOnce(&mut L) -> Result<(), Error>,
    ) -> Result<Self, Error> {
        Ok(Handle::new(Shared::create(kind, init)?))
    }

    /// A handle on `shared`.
    fn new(shared: Shared<L>) -> Self {
        Handle {
            shared,
            polling: AtomicU32::new(0),
            holds: AtomicUsize::new(0),
            spin: crate::wait::SpinBackoff::default(),
        }
    }

    /// Counts a hold of the layout's mutex, just taken through this handle by the calling
    /// thread.
    ///
    /// Together with [`hold_released`](Handle::hold_released), this is what keeps the promise
    /// "mapped while held" of [`RawMutex`] for holds that outlive the borrows of the handle:
    /// the segment is unmapped only when the count is zero. The count is changed only by the
    /// thread holding the mutex (one mutex per counted layout: a lock's), so the mutex orders
    /// the changes, and each is a load and a store rather than a read-modify-write.
    #[inline]
    pub(crate) fn hold_taken(&self) {
        let holds = self.holds.load(Ordering::Relaxed);
        self.holds.store(holds.wrapping_add(1), Ordering::Relaxed);
    }

    /// Uncounts a hold counted by [`hold_taken`](Handle::hold_taken), by the thread holding
    /// the mutex, before it releases it.
    #[inline]
    pub(crate) fn hold_released(&self) {
        let holds = self.holds.load(Ordering::Relaxed);
        self.holds.store(holds.wrapping_sub(1), Ordering::Relaxed);
    }

    /// The layout.
    #[inline]
    pub(crate) fn get(&self) -> &L {
        self.shared.get()
    }

    /// Whether this handle is registered as a poller (in this process or, after a fork, in
    /// its parent: then draining costs a syscall but changes nothing).
    #[inline]
    pub(crate) fn is_polled_here(&self) -> bool {
        self.polling.load(Ordering::Relaxed) != 0
    }

    /// Registers this handle as a poller in this process (step 1) and returns the doorbell.
    pub(crate) fn doorbell(&self) -> BorrowedFd<'_> {
        let me = my_pid();
        let current = self.polling.load(Ordering::Relaxed);
        if current != me
            && self
                .polling
                .compare_exchange(current, me, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            self.shared.header().pollers.fetch_add(1, Ordering::SeqCst);
            self.shared.ring();
        }
        self.shared.bell.as_fd()
    }
}

impl<L: Layout> Handle<L> {
    /// Serialises the handle as a shared object (through `mp-process`'s fd-carrying encoder):
    /// its segment and doorbell cross once per message, or once per pool worker.
    pub(crate) fn serialize<S: Serializer>(self: &Arc<Self>, s: S) -> Result<S::Ok, S::Error> {
        mp_process::fdpass::serialize_object(self, s)
    }

    /// Receives a handle whose segment must hold one of `kinds`: the one this process has on
    /// that segment, or a new one.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
        kinds: &[Kind],
    ) -> Result<Arc<Self>, D::Error> {
        let handle: Arc<Self> = mp_process::fdpass::deserialize_object(d)?;
        let kind = handle.shared.kind;
        if !kinds.iter().any(|k| *k as u32 == kind) {
            let got = L::KINDS.iter().find(|k| **k as u32 == kind).map_or("?", |k| k.name());
            let want = kinds.first().map_or("?", |k| k.name());
            return Err(refuse(format!("a {got} was received where a {want} was expected")));
        }
        Ok(handle)
    }
}

/// A layout of this crate's segments, with what its handles are as shared objects.
pub(crate) trait Layout: SharedLayout + Send {
    /// The object kind of a handle on such a segment.
    const OBJECT: ObjectKind;
    /// The primitives whose segments have this layout.
    const KINDS: &'static [Kind];
}

/// A handle crosses as a shared object: the segment (a sealed memfd, checked by `mp-shm`)
/// then the doorbell (checked to be a non-blocking eventfd), and the segment's header is
/// checked (magic, version, a kind of this layout) before anything else reads it.
// SAFETY: each layout's kind (`Layout::OBJECT`, `mp_sync::Lock`...) is its handle's alone, and
// `rebuild` makes a handle only from the segment and doorbell `describe` writes, after checking
// the segment (size, magic, version, kind) and the doorbell (a non-blocking eventfd).
unsafe impl<L: Layout> SharedObject for Handle<L> {
    const KIND: ObjectKind = L::OBJECT;

    fn object_id(&self) -> ObjectId {
        self.shared.id()
    }

    fn describe<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        WireRef { shm: self.shared.shm(), bell: &self.shared.bell }.serialize(s)
    }

    fn rebuild<'de, D: Deserializer<'de>>(_id: ObjectId, d: D) -> Result<Self, D::Error> {
        let Wire { shm, bell } = Wire::deserialize(d)?;
        mp_process::fdpass::check::eventfd(bell.as_fd(), "a doorbell")
            .map_err(refuse::<D::Error>)?;
        let shared = Shared::check(shm, bell, L::KINDS).map_err(refuse::<D::Error>)?;
        Ok(Handle::new(shared))
    }
}

impl<L: SharedLayout> Drop for Handle<L> {
    fn drop(&mut self) {
        let registered = self.polling.load(Ordering::Relaxed);
        if registered != 0 && registered == my_pid() {
            self.shared.header().pollers.fetch_sub(1, Ordering::SeqCst);
        }
        // The last handle of this process on the segment goes while a thread still holds one of
        // its mutexes (a lock guard was leaked, say): the thread's robust list links into the
        // mapping, so it must stay. Every count made by another thread is visible here: it
        // dropped its own reference to the handle after counting, and the `Arc` the handle
        // lives in orders those drops before this one.
        if self.holds.load(Ordering::Relaxed) != 0 {
            self.shared.map.keep_mapped();
        }
    }
}

impl<L: SharedLayout> fmt::Debug for Handle<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle").field("segment", &self.shared.shm().name()).finish_non_exhaustive()
    }
}

/// The serialised shape of a handle: the segment and the doorbell's descriptor.
#[derive(Serialize)]
struct WireRef<'a> {
    /// The segment.
    shm: &'a SharedMemory,
    /// The doorbell.
    #[serde(serialize_with = "serialize_fd")]
    bell: &'a OwnedFd,
}

/// Serialises a borrowed descriptor through `mp-process`'s fd-carrying encoder.
fn serialize_fd<S: Serializer>(fd: &&OwnedFd, s: S) -> Result<S::Ok, S::Error> {
    mp_process::fdpass::serde_fd::serialize(fd, s)
}

/// The received shape of a handle.
#[derive(Deserialize)]
struct Wire {
    /// The segment (checked by `mp-shm` before it is mapped).
    shm: SharedMemory,
    /// The doorbell.
    #[serde(with = "mp_process::fdpass::serde_fd")]
    bell: OwnedFd,
}
