//! Waiter slots: how a `Condition` or `Barrier` knows which of its waiters are alive.
//!
//! Each waiter claims a slot and holds the slot's robust mutex for as long as it waits. A
//! thread that counts waiters, or hands a wake-up to one, first try-locks the slot: `EBUSY`
//! means a living waiter holds it; `EOWNERDEAD` means the waiter died (killed while asleep),
//! and the slot is reclaimed. Death is thus detected by the kernel's robust-futex mechanism,
//! never by asking whether a pid is alive.
//!
//! Claims happen under the primitive's own lock (the condition's lock, the barrier's
//! mutex). A slot is marked in the `occupied` bitmap from its claim until its waiter frees it,
//! which clears the bit before it unlocks the slot's mutex.
//!
//! # The contract of the mutex calls
//!
//! Every call on a slot's mutex meets the contract on [`RawMutex`]:
//!
//! 1. *Initialised*: a `SlotTable` lives only inside a primitive's layout (`CondLayout`,
//!    `BarrierLayout`), whose creator runs [`SlotTable::init`] in `Handle::create`'s `init`,
//!    before the segment can be reached; a received segment is one whose header was checked
//!    to be of that kind.
//! 2. *Mapped while held*: a hold taken here ends before the borrow of the table it was taken
//!    through does (`with_slot` frees the slot through a drop guard, also when its closure
//!    unwinds; `scan` frees a reclaimed slot at once), and a borrow of the table is a borrow of
//!    the mapped segment (`Mapped::get`).
//! 3. *Written only by the protocol*: the segment is written only by this crate's code (the
//!    crate's trust model).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use rustix::io::Errno;

use crate::error::Error;
use crate::lock::init_mutex;
use crate::sys::{MutexKind, RawMutex, Taken};

/// How many threads, over all processes, can wait on one `Condition` or `Barrier` at once.
pub const MAX_WAITERS: usize = 128;

/// The number of bitmap words.
const WORDS: usize = MAX_WAITERS / 64;

/// The state of a free slot.
pub(crate) const FREE: u32 = 0;

/// One waiter's slot.
///
/// Lives in shared memory: `#[repr(C)]`; its only pointers are the robust-list links of its
/// mutex (see `sys`).
#[repr(C)]
pub(crate) struct Slot {
    /// Held by the waiting thread for as long as it owns the slot.
    mutex: RawMutex,
    /// The waiter's state (each primitive has its own values; [`FREE`] when free); a
    /// condition's waiter sleeps on it.
    pub(crate) state: AtomicU32,
    /// A barrier waiter's arrival index.
    pub(crate) index: AtomicU32,
    /// A condition waiter's ticket (its place in the FIFO), or a barrier waiter's
    /// generation.
    pub(crate) tag: AtomicU64,
    /// Unused: pads the slot to a cache line.
    _reserved: AtomicU64,
}

/// The slots of one primitive.
///
/// Lives in shared memory: `#[repr(C)]`, see [`Slot`].
#[repr(C)]
pub(crate) struct SlotTable {
    /// Bit `i` is set while slot `i` is claimed.
    occupied: [AtomicU64; WORDS],
    /// The slots.
    slots: [Slot; MAX_WAITERS],
}

/// What a try-lock of an occupied slot says about its waiter.
enum Occupant {
    /// A living thread holds the slot.
    Alive,
    /// Nobody holds it any more (its waiter died): this thread now holds its mutex.
    Gone,
    /// The try-lock failed.
    Unknown,
}

impl SlotTable {
    /// Initialises every slot's mutex (the table is not shared yet).
    pub(crate) fn init(&mut self) -> Result<(), Error> {
        for slot in &mut self.slots {
            init_mutex(&mut slot.mutex, MutexKind::ErrorCheck)?;
        }
        Ok(())
    }

    /// Slot `i`.
    pub(crate) fn slot(&self, i: usize) -> Option<&Slot> {
        self.slots.get(i)
    }

    /// The word and bit of slot `i`.
    fn bit(i: usize) -> (usize, u64) {
        (i / 64, 1u64 << (i % 64))
    }

    /// Try-locks occupied slot `slot`; on [`Occupant::Gone`] the caller frees it before its
    /// borrow of the table ends.
    fn probe(slot: &Slot) -> Occupant {
        // SAFETY: `RawMutex::try_lock` asks for the contract on `RawMutex`, met as the module
        // documentation says; the callers (`claim`, `scan`) free a slot this takes.
        match unsafe { slot.mutex.try_lock() } {
            Ok(None) | Err(Errno::DEADLK) => Occupant::Alive,
            Ok(Some(Taken::OwnerDied | Taken::Clean)) => Occupant::Gone,
            Err(_) => Occupant::Unknown,
        }
    }

    /// Claims a slot for the calling thread, which holds the primitive's lock, runs `wait`
    /// with it, and frees it (also if `wait` unwinds). Reclaims the slot of a dead waiter if no
    /// slot is free.
    ///
    /// Errors: [`Error::TooManyWaiters`] if every slot belongs to a living waiter.
    pub(crate) fn with_slot<R>(&self, wait: impl FnOnce(&Slot) -> R) -> Result<R, Error> {
        let i = self.claim()?;
        let claimed = Claimed { table: self, i };
        let slot = self.slots.get(i).ok_or(Error::Corrupt("a claimed slot is out of range"))?;
        let result = wait(slot);
        drop(claimed);
        Ok(result)
    }

    /// Claims a slot for the calling thread: returns its index, with the slot's mutex held by
    /// this thread, which `with_slot` frees.
    fn claim(&self) -> Result<usize, Error> {
        for (w, word) in self.occupied.iter().enumerate() {
            let mut free = !word.load(Ordering::Acquire);
            while free != 0 {
                let i = w * 64 + free.trailing_zeros() as usize;
                free &= free - 1;
                let Some(slot) = self.slots.get(i) else { continue };
                // A free slot's mutex is free, unless its last waiter is between clearing
                // its bit and unlocking: skip it then.
                // SAFETY: `RawMutex::try_lock` asks for the contract on `RawMutex`, met as the
                // module documentation says; `with_slot` frees the slot this takes.
                if let Ok(Some(_)) = unsafe { slot.mutex.try_lock() } {
                    let (w, bit) = Self::bit(i);
                    self.occupied[w].fetch_or(bit, Ordering::AcqRel);
                    return Ok(i);
                }
            }
        }
        for i in self.occupied_indices() {
            let Some(slot) = self.slots.get(i) else { continue };
            if let Occupant::Gone = Self::probe(slot) {
                // A dead waiter's slot: ours now, bit and all.
                return Ok(i);
            }
        }
        Err(Error::TooManyWaiters { max: MAX_WAITERS })
    }

    /// The indices of the occupied slots, at the time of the call.
    fn occupied_indices(&self) -> impl Iterator<Item = usize> + '_ {
        self.occupied.iter().enumerate().flat_map(|(w, word)| {
            let mut bits = word.load(Ordering::Acquire);
            std::iter::from_fn(move || {
                if bits == 0 {
                    return None;
                }
                let i = w * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                Some(i)
            })
        })
    }

    /// Calls `live` for each slot held by a living waiter, and frees the slots of dead ones.
    /// The caller holds the primitive's lock.
    pub(crate) fn scan(&self, mut live: impl FnMut(usize, &Slot)) {
        for i in self.occupied_indices() {
            let Some(slot) = self.slots.get(i) else { continue };
            match Self::probe(slot) {
                Occupant::Alive => live(i, slot),
                Occupant::Gone => self.free(i),
                Occupant::Unknown => {}
            }
        }
    }

    /// Frees slot `i`, whose mutex the calling thread holds.
    fn free(&self, i: usize) {
        let Some(slot) = self.slots.get(i) else { return };
        slot.state.store(FREE, Ordering::Relaxed);
        let (w, bit) = Self::bit(i);
        self.occupied[w].fetch_and(!bit, Ordering::AcqRel);
        // Held by this thread (claimed or reclaimed by it), so this cannot fail.
        // SAFETY: `RawMutex::unlock` asks for points 1 and 3 of the contract on `RawMutex`,
        // met as the module documentation says.
        let _ = unsafe { slot.mutex.unlock() };
    }
}

/// A slot claimed by this thread; freed when dropped.
struct Claimed<'a> {
    /// The table.
    table: &'a SlotTable,
    /// The slot's index.
    i: usize,
}

impl Drop for Claimed<'_> {
    fn drop(&mut self) {
        self.table.free(self.i);
    }
}
