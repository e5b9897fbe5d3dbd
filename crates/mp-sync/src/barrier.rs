//! `Barrier`: a generation counter (the futex word) under a robust mutex, with one slot per
//! waiter so that dead waiters are not counted.
//!
//! # `unsafe` here
//!
//! * The barrier's mutex is taken only by `enter`, which returns the `Inside` guard that
//!   releases it; the calls meet the contract on [`RawMutex`]: (1) `Barrier::new` initialises
//!   the mutex in `Handle::create`'s `init`, before the segment can be reached, and a received
//!   segment's header was checked to be a barrier's; (2) `Inside` borrows the barrier, hence
//!   its handle and the mapped segment, and no code of this module leaks it, so the hold ends
//!   while the segment is mapped (the action, which runs inside, cannot reach it); (3) the
//!   segment is written only by this crate's code (the crate's trust model).
//! * An action crosses into another process as an index into the barrier's table of actions
//!   (`ActionEntry`), never as an address: the table lives in the barrier's segment and only
//!   `BarrierLayout::register_action` writes it, with the text offset (`fn_offset`) of a
//!   `fn()` and the identity of the executable it lies in. The receiver turns the entry back
//!   into a `fn()` (`mp_process::code::fn_at`) only if that executable is its own; a forged
//!   message can name another entry, never another address.

use std::fmt;
use std::os::fd::{AsFd, BorrowedFd};
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Error;
use crate::lock::{init_mutex, lock_error};
use crate::segment::{Handle, Kind, SharedLayout};
use crate::slots::{MAX_WAITERS, SlotTable};
use crate::sys::{MutexKind, RawMutex, Taken};
use crate::wait::{deadline, futex_wait, futex_wake_all, spin_until};

/// A slot whose waiter waits for the barrier to trip.
const WAITING: u32 = 1;
/// A slot whose waiter's cycle completed.
const PASSED: u32 = 2;
/// A slot whose waiter's cycle was broken (abort, reset, timeout, a death inside).
const BROKEN: u32 = 3;

/// The bit of the generation word saying that the last party of the cycle runs the action
/// (holding the barrier's mutex); generations themselves are even.
const ACTING: u32 = 1;

/// The number of words of an arrival-index bitset.
const INDEX_WORDS: usize = MAX_WAITERS.div_ceil(64);

/// How many distinct actions the handles of one barrier can carry into other processes.
const MAX_ACTIONS: usize = 8;

/// An [`ActionEntry`] nobody has claimed.
const ENTRY_FREE: u64 = 0;
/// An [`ActionEntry`] being filled in (for ever, if its writer died meanwhile).
const ENTRY_CLAIMED: u64 = 1;
/// An [`ActionEntry`] filled in: it never changes again.
const ENTRY_READY: u64 = 2;

/// An action a handle of the barrier carried into another process: the offset of a `fn()`
/// in the text of an executable, and that executable's identity.
///
/// Lives in shared memory: `#[repr(C)]`, atomics only, no pointers.
#[repr(C)]
struct ActionEntry {
    /// [`ENTRY_FREE`], [`ENTRY_CLAIMED`] or [`ENTRY_READY`]; it only moves forward.
    state: AtomicU64,
    /// The device of the executable whose text holds the action.
    dev: AtomicU64,
    /// The inode of that executable.
    ino: AtomicU64,
    /// The action's offset into that text (`mp_process::code::fn_offset`).
    offset: AtomicU64,
}

impl ActionEntry {
    /// Whether the entry, once ready, records `offset` in the executable `exe`.
    fn records(&self, exe: (u64, u64), offset: u64) -> bool {
        (self.dev.load(Ordering::Relaxed), self.ino.load(Ordering::Relaxed)) == exe
            && self.offset.load(Ordering::Relaxed) == offset
    }
}

/// The device and inode of this process's executable, `None` if they cannot be read.
fn executable() -> Option<(u64, u64)> {
    static EXE: OnceLock<Option<(u64, u64)>> = OnceLock::new();
    *EXE.get_or_init(|| {
        let stat = rustix::fs::stat("/proc/self/exe").ok()?;
        Some((stat.st_dev, stat.st_ino))
    })
}

/// The shared part of a barrier.
///
/// Lives in shared memory: `#[repr(C)]`; its only pointers are the robust-list links of its
/// mutexes (see `sys`).
#[repr(C)]
pub(crate) struct BarrierLayout {
    /// Serialises arrivals, trips, breaks and resets. Error-checking and robust: a process
    /// that dies holding it breaks the barrier.
    mutex: RawMutex,
    /// The number of parties, fixed at creation.
    parties: AtomicU32,
    /// The generation (even) and [`ACTING`]: the futex word waiters sleep on. It advances by
    /// 2 (under `mutex`) each time the barrier trips, breaks or is reset with waiters, after
    /// their slots say which; [`ACTING`] is set while the last party runs the action.
    generation: AtomicU32,
    /// 1 while the barrier is broken.
    broken: AtomicU32,
    /// Unused.
    _reserved: AtomicU32,
    /// The actions that handles of this barrier carried into other processes; a handle sends
    /// the index of its action here, never the action's address.
    actions: [ActionEntry; MAX_ACTIONS],
    /// The waiters: each holds a slot (tagged with its generation and arrival index) while it
    /// waits.
    table: SlotTable,
}

// SAFETY: `BarrierLayout` is `#[repr(C)]` without `Drop`, made of a `RawMutex`, `AtomicU32`s,
// `#[repr(C)]` `ActionEntry`s of `AtomicU64`s, and a `SlotTable` (`#[repr(C)]` arrays of atomics
// and of `Slot`s of a `RawMutex` and atomics, see `slots`): every bit pattern is valid (a
// `RawMutex` is plain bytes in an `UnsafeCell`), the only pointers are the mutexes' robust-list
// links, every change goes through an atomic or a mutex, and the alignment (8) is below
// `LAYOUT_ALIGN`.
#[allow(unsafe_code)]
unsafe impl SharedLayout for BarrierLayout {}

impl BarrierLayout {
    /// Records `action` in the table (or finds it there) and returns its index, for a handle
    /// that carries it into another process.
    fn register_action(&self, action: fn()) -> Result<u32, &'static str> {
        let offset = mp_process::code::fn_offset(action)
            .ok_or("the barrier action is not in the main executable's text")?;
        let exe = executable().ok_or("the executable cannot be identified (/proc/self/exe)")?;
        for (i, entry) in self.actions.iter().enumerate() {
            let mut state = entry.state.load(Ordering::Acquire);
            if state == ENTRY_FREE {
                match entry.state.compare_exchange(
                    ENTRY_FREE,
                    ENTRY_CLAIMED,
                    Ordering::Acquire,
                    Ordering::Acquire,
                ) {
                    Ok(_) => {
                        entry.dev.store(exe.0, Ordering::Relaxed);
                        entry.ino.store(exe.1, Ordering::Relaxed);
                        entry.offset.store(offset, Ordering::Relaxed);
                        entry.state.store(ENTRY_READY, Ordering::Release);
                        return Ok(u32::try_from(i).unwrap_or(u32::MAX));
                    }
                    Err(now) => state = now,
                }
            }
            if state == ENTRY_READY && entry.records(exe, offset) {
                return Ok(u32::try_from(i).unwrap_or(u32::MAX));
            }
        }
        Err("a barrier's handles carry at most 8 distinct actions into other processes")
    }

    /// The action recorded at `index` for this process's executable, if there is one.
    fn action_at(&self, index: u32) -> Option<fn()> {
        let entry = self.actions.get(usize::try_from(index).ok()?)?;
        if entry.state.load(Ordering::Acquire) != ENTRY_READY {
            return None;
        }
        let exe = executable()?;
        let offset = entry.offset.load(Ordering::Relaxed);
        if !entry.records(exe, offset) {
            return None;
        }
        // SAFETY: `fn_at` asks that `offset` come from `fn_offset` in a process running the
        // same executable file, through a channel only such trusted processes can write. The
        // entry is ready, so `register_action` filled it in (nothing else writes entries, and
        // it writes each once, publishing it with the Release store of `ENTRY_READY` that the
        // Acquire load above pairs with) with `fn_offset` of a `fn()`, in a process whose
        // executable has the entry's device and inode: this process's own executable (checked
        // above). The channel is the barrier's segment, shared memory of the processes that
        // hold the barrier, which only this crate writes (the crate's trust model); the index
        // that chose the entry may be forged, but it can only choose another such entry.
        unsafe { mp_process::code::fn_at(offset) }
    }
}

/// A barrier shared between processes: Python's `multiprocessing.Barrier`.
///
/// [`wait`](Barrier::wait) blocks until `parties` threads (of any processes) have called it,
/// then releases them all, each with a different arrival index in `0..parties`. The barrier
/// then starts its next cycle. The last to arrive runs the barrier's action, if it has one,
/// before the others are released. A wait that times out, [`abort`](Barrier::abort), and a
/// [`reset`](Barrier::reset) while threads wait, break it: the waiters get
/// [`Error::BrokenBarrier`], and so does every `wait` until a `reset`.
///
/// A waiter whose process is killed is found dead (its slot's robust mutex reports
/// `EOWNERDEAD`) and withdrawn: it no longer counts in [`n_waiting`](Barrier::n_waiting) or
/// towards the parties of the cycle. A process that dies inside the barrier's own critical
/// section breaks the barrier. The action runs in that critical section, under the barrier's
/// robust mutex, and while it runs the waiters wait on that mutex: if the last party dies in
/// the action, the kernel's robust-futex mechanism wakes them, and they get
/// [`Error::BrokenBarrier`] (no pid is ever checked). A death in the few instructions of
/// bookkeeping around an arrival is found by the next thread that enters the barrier
/// (`wait`, `n_waiting`, `abort`, `reset`, or a waiter's timeout).
///
/// ```
/// use mp_sync::Barrier;
///
/// # fn main() -> Result<(), mp_sync::Error> {
/// let barrier = Barrier::new(1)?;
/// assert_eq!(barrier.wait()?, 0, "one party: the barrier trips at once");
/// barrier.abort()?;
/// assert!(barrier.broken());
/// assert!(matches!(barrier.wait(), Err(mp_sync::Error::BrokenBarrier)));
/// barrier.reset()?;
/// assert_eq!(barrier.wait()?, 0);
/// # Ok(())
/// # }
/// ```
///
/// # Differences from Python's multiprocessing
/// - The action is a plain `fn()` (it crosses into spawned children as an offset into the
///   executable). A panicking action breaks the barrier and the panic continues in the thread
///   that ran it, as Python re-raises the action's exception there.
/// - At most [`MAX_WAITERS`] parties, and at most that many threads inside `wait` at once.
/// - After a `reset`, threads that arrive while the previous waiters are still leaving start
///   the new cycle at once instead of waiting for them.
#[derive(Clone)]
pub struct Barrier {
    /// The segment.
    handle: Arc<Handle<BarrierLayout>>,
    /// The number of parties (a copy of the shared one).
    parties: usize,
    /// The action run by the last to arrive.
    action: Option<fn()>,
    /// The timeout of `wait`.
    timeout: Option<Duration>,
}

/// The barrier's mutex, held; unlocked when dropped.
struct Inside<'a> {
    /// The barrier.
    barrier: &'a Barrier,
}

impl Drop for Inside<'_> {
    fn drop(&mut self) {
        // Held by this thread, so this cannot fail.
        // SAFETY: `RawMutex::unlock` asks for points 1 and 3 of the contract on `RawMutex`,
        // met as the module documentation says.
        let _ = unsafe { self.barrier.layout().mutex.unlock() };
    }
}

impl Barrier {
    /// Creates a barrier for `parties` threads, with no action and no timeout.
    ///
    /// Errors: [`Error::InvalidArgument`] if `parties` is 0 (Python: "parties must be >= 1")
    /// or above [`MAX_WAITERS`]; [`Error::SharedMemory`] or [`Error::Io`] if the segment
    /// cannot be made.
    pub fn new(parties: usize) -> Result<Barrier, Error> {
        if parties == 0 {
            return Err(Error::InvalidArgument("parties must be >= 1"));
        }
        if parties > MAX_WAITERS {
            return Err(Error::InvalidArgument("a barrier has at most MAX_WAITERS parties"));
        }
        let handle = Handle::create(Kind::Barrier, |l: &mut BarrierLayout| {
            init_mutex(&mut l.mutex, MutexKind::ErrorCheck)?;
            *l.parties.get_mut() = u32::try_from(parties).unwrap_or(u32::MAX);
            l.table.init()
        })?;
        Ok(Barrier { handle: Arc::new(handle), parties, action: None, timeout: None })
    }

    /// Sets the action: a function the last thread to arrive runs once per cycle, before the
    /// others are released (Python's `action`). It belongs to this handle and its clones, and
    /// travels with them into children.
    pub fn with_action(mut self, action: fn()) -> Barrier {
        self.action = Some(action);
        self
    }

    /// Sets the default timeout of [`wait`](Barrier::wait) (Python's `timeout`).
    pub fn with_timeout(mut self, timeout: Duration) -> Barrier {
        self.timeout = Some(timeout);
        self
    }

    #[inline]
    fn layout(&self) -> &BarrierLayout {
        self.handle.get()
    }

    /// Takes the barrier's mutex. If its holder died, the barrier's state cannot be trusted:
    /// it is broken.
    fn enter(&self) -> Result<Inside<'_>, Error> {
        // SAFETY: `RawMutex::lock` asks for the contract on `RawMutex`, met as the module
        // documentation says: the hold is handed to the `Inside` made right below.
        let taken = unsafe { self.layout().mutex.lock() }.map_err(lock_error)?;
        let inside = Inside { barrier: self };
        if taken == Taken::OwnerDied {
            self.break_inside(&inside);
        }
        Ok(inside)
    }

    /// Ends the current cycle: every living waiter of it gets `outcome`, then the
    /// generation advances and they all wake.
    fn end_cycle(&self, _inside: &Inside<'_>, outcome: u32) {
        let l = self.layout();
        let generation = l.generation.load(Ordering::Relaxed) & !ACTING;
        l.table.scan(|_, slot| {
            if slot.tag.load(Ordering::Relaxed) == u64::from(generation)
                && slot.state.load(Ordering::Relaxed) == WAITING
            {
                slot.state.store(outcome, Ordering::Release);
            }
        });
        l.generation.store(generation.wrapping_add(2), Ordering::SeqCst);
        futex_wake_all(&l.generation);
    }

    /// Breaks the barrier (Python's `_break`).
    fn break_inside(&self, inside: &Inside<'_>) {
        self.layout().broken.store(1, Ordering::SeqCst);
        self.end_cycle(inside, BROKEN);
        self.handle.shared.ring_if_polled();
    }

    /// The living waiters of the current cycle: how many, and which arrival indices they
    /// hold.
    fn waiting(&self, _inside: &Inside<'_>) -> (usize, [u64; INDEX_WORDS]) {
        let l = self.layout();
        let generation = u64::from(l.generation.load(Ordering::Relaxed) & !ACTING);
        let mut count = 0;
        let mut used = [0u64; INDEX_WORDS];
        l.table.scan(|_, slot| {
            if slot.tag.load(Ordering::Relaxed) == generation
                && slot.state.load(Ordering::Relaxed) == WAITING
            {
                count += 1;
                let index = slot.index.load(Ordering::Relaxed) as usize;
                if let Some(word) = used.get_mut(index / 64) {
                    *word |= 1 << (index % 64);
                }
            }
        });
        (count, used)
    }

    /// Waits for the other parties, with the barrier's default timeout (if any); returns
    /// this thread's arrival index, in `0..parties`.
    ///
    /// Errors: [`Error::BrokenBarrier`] if the barrier is broken, or breaks while this thread
    /// waits (abort, reset, the timeout of this or another waiter, a process dying inside
    /// the barrier); [`Error::TooManyWaiters`] past [`MAX_WAITERS`] threads inside `wait`.
    pub fn wait(&self) -> Result<usize, Error> {
        self.wait_until(deadline(self.timeout))
    }

    /// As [`wait`](Barrier::wait), with `timeout` instead of the default: if the barrier has
    /// not tripped by then, it breaks, and this call returns [`Error::BrokenBarrier`].
    ///
    /// As in Python, a timeout that passes while the last party runs the action does not cut
    /// the wait short: the action decides the cycle (it passes unless the action panics or its
    /// thread dies).
    pub fn wait_timeout(&self, timeout: Duration) -> Result<usize, Error> {
        self.wait_until(deadline(Some(timeout)))
    }

    fn wait_until(&self, deadline: Option<Instant>) -> Result<usize, Error> {
        let l = self.layout();
        let inside = self.enter()?;
        if l.broken.load(Ordering::Relaxed) != 0 {
            return Err(Error::BrokenBarrier);
        }
        let generation = l.generation.load(Ordering::Relaxed) & !ACTING;
        let (count, used) = self.waiting(&inside);
        let index = (0..self.parties)
            .find(|i| used.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) == 0))
            .ok_or(Error::Corrupt("more waiters than parties"))?;
        if count + 1 >= self.parties {
            if let Some(action) = self.action {
                // The waiters move from the generation word to the mutex, which this thread
                // holds: if it dies in the action, the kernel marks the mutex and wakes one
                // of them, which breaks the barrier for all (`enter`).
                l.generation.store(generation | ACTING, Ordering::SeqCst);
                futex_wake_all(&l.generation);
                if let Err(panic) = catch_unwind(AssertUnwindSafe(action)) {
                    self.break_inside(&inside);
                    drop(inside);
                    resume_unwind(panic);
                }
            }
            self.end_cycle(&inside, PASSED);
            return Ok(index);
        }
        let outcome = l.table.with_slot(|slot| {
            slot.tag.store(u64::from(generation), Ordering::Relaxed);
            slot.index.store(u32::try_from(index).unwrap_or(u32::MAX), Ordering::Relaxed);
            slot.state.store(WAITING, Ordering::Relaxed);
            drop(inside);

            let tripped = || l.generation.load(Ordering::Acquire) & !ACTING != generation;
            let moved = || l.generation.load(Ordering::Acquire) != generation;
            let mut spun = false;
            loop {
                if tripped() {
                    break slot.state.load(Ordering::Acquire);
                }
                if l.generation.load(Ordering::Acquire) & ACTING != 0 {
                    // The last party runs the action holding the mutex: wait for the mutex, so
                    // that its death reaches this thread through the robust list. As in
                    // Python, the timeout does not cut the action short: the wait ends with it.
                    match self.enter() {
                        Ok(inside) => {
                            if !tripped() {
                                // Nobody runs the action any more, yet the cycle did not end.
                                self.break_inside(&inside);
                            }
                            continue;
                        }
                        Err(_) => {
                            break if tripped() {
                                slot.state.load(Ordering::Acquire)
                            } else {
                                BROKEN
                            };
                        }
                    }
                }
                if !spun {
                    spun = true;
                    if spin_until(moved) {
                        continue;
                    }
                }
                if let Ok(false) = futex_wait(&l.generation, generation, deadline) {
                    continue;
                }
                // Timed out (or the wait failed): break the barrier if this cycle still fills.
                if let Ok(inside) = self.enter()
                    && !tripped()
                {
                    self.break_inside(&inside);
                }
                break if tripped() { slot.state.load(Ordering::Acquire) } else { BROKEN };
            }
        })?;
        if outcome == PASSED { Ok(index) } else { Err(Error::BrokenBarrier) }
    }

    /// The number of parties.
    pub fn parties(&self) -> usize {
        self.parties
    }

    /// How many threads wait in the current cycle (dead waiters are found and not counted);
    /// 0 while the barrier is broken.
    pub fn n_waiting(&self) -> usize {
        let Ok(inside) = self.enter() else { return 0 };
        if self.layout().broken.load(Ordering::Relaxed) != 0 {
            return 0;
        }
        self.waiting(&inside).0
    }

    /// Whether the barrier is broken.
    ///
    /// For a handle whose doorbell is polled, a `false` answer drains the doorbell first.
    pub fn broken(&self) -> bool {
        let broken = &self.layout().broken;
        if broken.load(Ordering::Acquire) != 0 {
            return true;
        }
        if self.handle.is_polled_here() {
            self.handle.shared.drain();
            if broken.load(Ordering::SeqCst) != 0 {
                self.handle.shared.ring();
                return true;
            }
        }
        false
    }

    /// Breaks the barrier: the threads waiting get [`Error::BrokenBarrier`], and so does every
    /// `wait` until [`reset`](Barrier::reset). Python's `abort`.
    ///
    /// Errors: [`Error::Io`] if the barrier's mutex cannot be taken.
    pub fn abort(&self) -> Result<(), Error> {
        let inside = self.enter()?;
        self.break_inside(&inside);
        Ok(())
    }

    /// Returns the barrier to its initial, unbroken state: the threads waiting get
    /// [`Error::BrokenBarrier`]. Python's `reset`.
    ///
    /// Errors: [`Error::Io`] if the barrier's mutex cannot be taken.
    pub fn reset(&self) -> Result<(), Error> {
        let inside = self.enter()?;
        let (count, _) = self.waiting(&inside);
        if count > 0 {
            self.end_cycle(&inside, BROKEN);
        }
        self.layout().broken.store(0, Ordering::SeqCst);
        if self.handle.is_polled_here() {
            self.handle.shared.drain();
        }
        Ok(())
    }
}

impl AsFd for Barrier {
    /// The barrier's doorbell: it polls readable while the barrier is broken (a hint: check
    /// with [`broken`](Barrier::broken), which drains a stale doorbell).
    ///
    /// The first call registers this handle (and its clones) in this process as a poller.
    /// See the crate documentation for the protocol.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.handle.doorbell()
    }
}

/// The serialised shape of a barrier.
#[derive(Serialize)]
struct WireRef<'a> {
    /// The segment.
    #[serde(serialize_with = "serialize_handle")]
    handle: &'a Arc<Handle<BarrierLayout>>,
    /// The action, as an index into the segment's table of actions.
    action: Option<u32>,
    /// The default timeout.
    timeout: Option<Duration>,
}

fn serialize_handle<S: Serializer>(
    h: &&Arc<Handle<BarrierLayout>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    h.serialize(s)
}

/// The received shape of a barrier.
#[derive(Deserialize)]
struct Wire {
    /// The segment.
    #[serde(deserialize_with = "deserialize_handle")]
    handle: Arc<Handle<BarrierLayout>>,
    /// The action's index in the segment's table of actions.
    action: Option<u32>,
    /// The default timeout.
    timeout: Option<Duration>,
}

fn deserialize_handle<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Arc<Handle<BarrierLayout>>, D::Error> {
    Handle::deserialize(d, &[Kind::Barrier])
}

impl Serialize for Barrier {
    /// Serialises the segment, the action (recorded in the segment's table of actions, as an
    /// offset into the executable's text, and sent as its index there: an action outside the
    /// main executable, say in a shared library, cannot cross) and the timeout.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let action = match self.action {
            None => None,
            Some(f) => Some(self.layout().register_action(f).map_err(S::Error::custom)?),
        };
        WireRef { handle: &self.handle, action, timeout: self.timeout }.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Barrier {
    /// Receives a barrier, checking its segment, its number of parties and that its action is
    /// one the barrier's table records for this executable.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let Wire { handle, action, timeout } = Wire::deserialize(d)?;
        let parties = handle.get().parties.load(Ordering::Relaxed) as usize;
        if parties == 0 || parties > MAX_WAITERS {
            return Err(mp_process::fdpass::refuse(
                "the barrier's number of parties is out of range",
            ));
        }
        let action = match action {
            None => None,
            Some(index) => Some(handle.get().action_at(index).ok_or_else(|| {
                mp_process::fdpass::refuse::<D::Error>(
                    "the barrier's action is not one its table records for this executable",
                )
            })?),
        };
        Ok(Barrier { handle, parties, action, timeout })
    }
}

impl fmt::Debug for Barrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Barrier")
            .field("parties", &self.parties)
            .field("broken", &(self.layout().broken.load(Ordering::Relaxed) != 0))
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl crate::segment::Layout for BarrierLayout {
    const OBJECT: mp_process::fdpass::Kind = mp_process::fdpass::Kind::new("mp_sync::Barrier");
    const KINDS: &'static [Kind] = &[Kind::Barrier];
}

#[cfg(test)]
mod tests {
    use super::*;
    use mp_process::fdpass::{decode_with_fds, encode_with_fds};

    /// The address of an action.
    fn addr(f: fn()) -> usize {
        f as usize
    }

    // Distinct bodies, so that no linker folds them into one address.
    fn first() {
        std::hint::black_box(1);
    }
    fn second() {
        std::hint::black_box(2);
    }

    /// A message naming the barrier's segment and action index `index`, as a forger (or a
    /// damaged message) would make it.
    fn message(barrier: &Barrier, index: Option<u32>) -> (Vec<u8>, Vec<std::os::fd::OwnedFd>) {
        let wire = WireRef { handle: &barrier.handle, action: index, timeout: None };
        encode_with_fds(&wire).unwrap()
    }

    #[test]
    fn an_action_crosses_as_an_entry_of_the_table() {
        let barrier = Barrier::new(1).unwrap().with_action(first);
        let (bytes, fds) = encode_with_fds(&barrier).unwrap();
        let back: Barrier = decode_with_fds(&bytes, fds).unwrap();
        assert_eq!(back.action.map(addr), Some(addr(first)));
        // The same action again reuses its entry; another one takes the next.
        assert_eq!(barrier.layout().register_action(first), Ok(0));
        let other = barrier.clone().with_action(second);
        let (bytes, fds) = encode_with_fds(&other).unwrap();
        let back: Barrier = decode_with_fds(&bytes, fds).unwrap();
        assert_eq!(back.action.map(addr), Some(addr(second)));
        assert_eq!(barrier.layout().register_action(second), Ok(1));
        let (bytes, fds) = encode_with_fds(&Barrier::new(1).unwrap()).unwrap();
        assert!(decode_with_fds::<Barrier>(&bytes, fds).unwrap().action.is_none());
    }

    #[test]
    fn a_message_cannot_name_an_address() {
        // Before, the message carried the action's offset into the text, and any offset inside
        // the text was accepted: a forged one made `wait` jump into the middle of a function.
        // Now it carries an index, and only entries the barrier recorded are accepted.
        let barrier = Barrier::new(1).unwrap().with_action(first);
        for index in [0, 1, 7, MAX_ACTIONS as u32, u32::MAX] {
            let (bytes, fds) = message(&barrier, Some(index));
            assert!(decode_with_fds::<Barrier>(&bytes, fds).is_err(), "index {index}");
        }
        // Once the handle with the action has crossed, its entry is accepted, and only it.
        let _ = encode_with_fds(&barrier).unwrap();
        let (bytes, fds) = message(&barrier, Some(0));
        let back: Barrier = decode_with_fds(&bytes, fds).unwrap();
        assert_eq!(back.action.map(addr), Some(addr(first)));
        let (bytes, fds) = message(&barrier, Some(1));
        assert!(decode_with_fds::<Barrier>(&bytes, fds).is_err());
    }

    #[test]
    fn an_entry_recorded_for_another_executable_is_refused() {
        let barrier = Barrier::new(1).unwrap();
        let entry = &barrier.layout().actions[0];
        let (dev, ino) = executable().unwrap();
        let offset = mp_process::code::fn_offset(first).unwrap();
        entry.dev.store(dev, Ordering::Relaxed);
        entry.ino.store(ino ^ 1, Ordering::Relaxed);
        entry.offset.store(offset, Ordering::Relaxed);
        entry.state.store(ENTRY_READY, Ordering::Release);
        assert!(barrier.layout().action_at(0).is_none());
        // A claimed entry, whose writer may have died before filling it in, is never used.
        let entry = &barrier.layout().actions[1];
        entry.state.store(ENTRY_CLAIMED, Ordering::Release);
        assert!(barrier.layout().action_at(1).is_none());
        assert_eq!(barrier.layout().register_action(first), Ok(2));
        assert_eq!(barrier.layout().action_at(2).map(addr), Some(addr(first)));
    }

    #[test]
    fn a_barrier_records_a_bounded_number_of_actions() {
        macro_rules! actions {
            ($($name:ident)*) => {{
                $(fn $name() { std::hint::black_box(stringify!($name)); })*
                [$($name as fn()),*]
            }};
        }
        let actions = actions!(a0 a1 a2 a3 a4 a5 a6 a7 a8);
        assert!(actions.len() > MAX_ACTIONS);
        let barrier = Barrier::new(1).unwrap();
        for (i, action) in actions.iter().take(MAX_ACTIONS).enumerate() {
            let with = barrier.clone().with_action(*action);
            encode_with_fds(&with).unwrap();
            assert_eq!(barrier.layout().register_action(*action), Ok(i as u32));
        }
        let full = barrier.clone().with_action(actions[MAX_ACTIONS]);
        let err = encode_with_fds(&full).unwrap_err().to_string();
        assert!(err.contains(&format!("at most {MAX_ACTIONS} distinct actions")), "{err}");
    }
}
