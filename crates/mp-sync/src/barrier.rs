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
//!
//! An action crosses into another process as a checked `mp_process::code::Entry` (an offset
//! and a tag signed with the process tree's key) and its arguments in the self-contained form;
//! the receiver calls the entry only if the tag checks, and the entry re-makes the action from
//! the arguments. No `unsafe` is involved.

use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::panic::{AssertUnwindSafe, RefUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use mp_process::code::{Body, Callable, Entry};
use mp_process::fdpass::{self, PassFd};
use mp_process::wire::WireError;
use serde::de::DeserializeOwned;
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
    /// The waiters: each holds a slot (tagged with its generation and arrival index) while it
    /// waits.
    table: SlotTable,
}

// SAFETY: `BarrierLayout` is `#[repr(C)]` without `Drop`, made of a `RawMutex`, `AtomicU32`s
// and a `SlotTable` (`#[repr(C)]` arrays of atomics
// and of `Slot`s of a `RawMutex` and atomics, see `slots`): every bit pattern is valid (a
// `RawMutex` is plain bytes in an `UnsafeCell`), the only pointers are the mutexes' robust-list
// links, every change goes through an atomic or a mutex, and the alignment (8) is below
// `LAYOUT_ALIGN`.
#[allow(unsafe_code)]
unsafe impl SharedLayout for BarrierLayout {}

/// An action, bound to its arguments: what the last party of a cycle runs.
trait Action: Send + Sync + RefUnwindSafe {
    /// Runs the action.
    fn run(&self);
    /// The entry that re-makes the action in another process from its arguments.
    fn entry(&self) -> Option<Entry<ActionRun>>;
    /// The arguments, in the self-contained form.
    fn encode(&self) -> Result<(Vec<u8>, Vec<OwnedFd>), WireError>;
}

/// An action `F` and its arguments.
struct Bound<F, A> {
    action: F,
    args: A,
}

impl<F, A> Action for Bound<F, A>
where
    F: Fn(&A) + Copy + Send + Sync + RefUnwindSafe + 'static,
    A: Serialize + DeserializeOwned + Send + Sync + RefUnwindSafe + 'static,
{
    fn run(&self) {
        (self.action)(&self.args);
    }

    fn entry(&self) -> Option<Entry<ActionRun>> {
        Entry::of(Callable::<F, A>::new(self.action))
    }

    fn encode(&self) -> Result<(Vec<u8>, Vec<OwnedFd>), WireError> {
        fdpass::encode_with_fds(&self.args)
    }
}

/// What an action's entry runs with in a receiving process: the arguments as they arrived, and
/// the action it re-makes from them (or why it cannot).
struct ActionRun {
    bytes: Vec<u8>,
    fds: Vec<OwnedFd>,
    made: Result<Arc<dyn Action>, String>,
}

impl<F, A> Body<ActionRun> for Callable<F, A>
where
    F: Fn(&A) + Copy + Send + Sync + RefUnwindSafe + 'static,
    A: Serialize + DeserializeOwned + Send + Sync + RefUnwindSafe + 'static,
{
    fn run(self, run: &mut ActionRun) {
        let fds = std::mem::take(&mut run.fds);
        run.made = fdpass::decode_with_fds::<A>(&run.bytes, fds)
            .map(|args| Arc::new(Bound { action: self.0, args }) as Arc<dyn Action>)
            .map_err(|e| format!("the barrier action's arguments: {e}"));
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
/// - The action is a `fn` item or a closure that captures nothing, with serde arguments
///   ([`with_action_args`](Barrier::with_action_args)): only its code (a checked entry) and
///   its arguments cross into other processes. A panicking action breaks the barrier and the
///   panic continues in the thread that ran it, as Python re-raises the action's exception
///   there.
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
    action: Option<Arc<dyn Action>>,
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
    /// travels with them into children. It must be a `fn` item or a closure that captures
    /// nothing (checked when the program is compiled), since only its code crosses:
    ///
    /// ```compile_fail
    /// let n = 3;
    /// let b = mp_sync::Barrier::new(1)?.with_action(move || println!("{n}")); // captures `n`
    /// # Ok::<(), mp_sync::Error>(())
    /// ```
    pub fn with_action<F>(self, action: F) -> Barrier
    where
        F: Fn() + Copy + Send + Sync + RefUnwindSafe + 'static,
    {
        const { assert!(std::mem::size_of::<F>() == 0, "a barrier action must be zero-sized") };
        self.with_action_args(move |_: &()| action(), ())
    }

    /// Sets an action that takes arguments: `action(&args)` runs as [`with_action`]'s does.
    /// The arguments travel with the barrier (in the self-contained form, so they may hold
    /// descriptors and shared objects: a `Value`, a `Queue`), and the action must be a `fn`
    /// item or a closure that captures nothing.
    ///
    /// ```
    /// use mp_sync::{Barrier, Value};
    ///
    /// fn count(cycles: &Value<u32>) {
    ///     *cycles.lock().unwrap() += 1;
    /// }
    ///
    /// # fn main() -> Result<(), mp_sync::Error> {
    /// let cycles = Value::new(0u32)?;
    /// let barrier = Barrier::new(1)?.with_action_args(count, cycles.clone());
    /// barrier.wait()?;
    /// barrier.wait()?;
    /// assert_eq!(cycles.get()?, 2);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// [`with_action`]: Barrier::with_action
    pub fn with_action_args<F, A>(mut self, action: F, args: A) -> Barrier
    where
        F: Fn(&A) + Copy + Send + Sync + RefUnwindSafe + 'static,
        A: Serialize + DeserializeOwned + Send + Sync + RefUnwindSafe + 'static,
    {
        const { assert!(std::mem::size_of::<F>() == 0, "a barrier action must be zero-sized") };
        self.action = Some(Arc::new(Bound { action, args }));
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
            if let Some(action) = &self.action {
                // The waiters move from the generation word to the mutex, which this thread
                // holds: if it dies in the action, the kernel marks the mutex and wakes one
                // of them, which breaks the barrier for all (`enter`).
                l.generation.store(generation | ACTING, Ordering::SeqCst);
                futex_wake_all(&l.generation);
                if let Err(panic) = catch_unwind(AssertUnwindSafe(|| action.run())) {
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
                    if spin_until(&self.handle.spin, moved) {
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
    /// The action: its entry's offset and tag, its arguments and their descriptors.
    action: Option<ActionWire>,
    /// The default timeout.
    timeout: Option<Duration>,
}

fn serialize_handle<S: Serializer>(
    h: &&Arc<Handle<BarrierLayout>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    h.serialize(s)
}

/// An action as it crosses: its entry as offset and tag (checked by the receiver), and its
/// arguments in the self-contained form with their descriptors.
#[derive(Serialize, Deserialize)]
struct ActionWire {
    entry: (u64, u64),
    args: Vec<u8>,
    fds: Vec<PassFd>,
}

/// The received shape of a barrier.
#[derive(Deserialize)]
struct Wire {
    /// The segment.
    #[serde(deserialize_with = "deserialize_handle")]
    handle: Arc<Handle<BarrierLayout>>,
    /// The action (see [`WireRef`]).
    action: Option<ActionWire>,
    /// The default timeout.
    timeout: Option<Duration>,
}

fn deserialize_handle<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Arc<Handle<BarrierLayout>>, D::Error> {
    Handle::deserialize(d, &[Kind::Barrier])
}

impl Serialize for Barrier {
    /// Serialises the segment, the action (its checked entry and its arguments) and the
    /// timeout.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let action = match &self.action {
            None => None,
            Some(a) => {
                let entry = a
                    .entry()
                    .ok_or_else(|| S::Error::custom("the barrier action lies outside the text"))?;
                let (args, fds) = a.encode().map_err(S::Error::custom)?;
                let fds = fds.into_iter().map(PassFd).collect();
                Some(ActionWire { entry: entry.to_parts(), args, fds })
            }
        };
        WireRef { handle: &self.handle, action, timeout: self.timeout }.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Barrier {
    /// Receives a barrier, checking its segment, its number of parties, and its action's entry
    /// (made by this process tree for a barrier action) and arguments.
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
            Some(ActionWire { entry, args, fds }) => {
                let entry = Entry::<ActionRun>::from_parts(entry.0, entry.1).ok_or_else(|| {
                    fdpass::refuse::<D::Error>(
                        "the barrier's action is not an entry this process tree made",
                    )
                })?;
                let fds = fds.into_iter().map(PassFd::into_inner).collect();
                let mut run = ActionRun { bytes: args, fds, made: Err(String::new()) };
                entry.call(&mut run);
                Some(run.made.map_err(fdpass::refuse::<D::Error>)?)
            }
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
    use std::sync::atomic::AtomicUsize;

    static RUNS: AtomicUsize = AtomicUsize::new(0);

    fn add(n: &usize) {
        RUNS.fetch_add(*n, Ordering::SeqCst);
    }

    fn runs_after(barrier: &Barrier) -> usize {
        let before = RUNS.load(Ordering::SeqCst);
        barrier.wait().unwrap();
        RUNS.load(Ordering::SeqCst) - before
    }

    #[test]
    fn an_action_and_its_arguments_cross_as_a_checked_entry() {
        let barrier = Barrier::new(1).unwrap().with_action_args(add, 5usize);
        let (bytes, fds) = encode_with_fds(&barrier).unwrap();
        let back: Barrier = decode_with_fds(&bytes, fds).unwrap();
        assert_eq!(runs_after(&back), 5);
        let (bytes, fds) = encode_with_fds(&Barrier::new(1).unwrap()).unwrap();
        assert!(decode_with_fds::<Barrier>(&bytes, fds).unwrap().action.is_none());
    }

    /// A message naming the barrier's segment and the action `wire`, as a forger (or a damaged
    /// message) would make it.
    fn message(barrier: &Barrier, wire: ActionWire) -> (Vec<u8>, Vec<std::os::fd::OwnedFd>) {
        let wire = WireRef { handle: &barrier.handle, action: Some(wire), timeout: None };
        encode_with_fds(&wire).unwrap()
    }

    #[test]
    fn a_forged_entry_or_bad_arguments_are_refused() {
        let barrier = Barrier::new(1).unwrap();
        let entry = barrier.clone().with_action_args(add, 1usize).action.unwrap().entry().unwrap();
        let (offset, tag) = entry.to_parts();
        let (args, _) = encode_with_fds(&3usize).unwrap();
        for forged in [(offset + 1, tag), (offset, tag ^ 1), (u64::MAX, tag)] {
            let (bytes, fds) =
                message(&barrier, ActionWire { entry: forged, args: args.clone(), fds: vec![] });
            let err = decode_with_fds::<Barrier>(&bytes, fds).unwrap_err().to_string();
            assert!(err.contains("not an entry this process tree made"), "{err}");
        }
        // The right entry with arguments that do not decode as its type.
        let (bytes, fds) = message(
            &barrier,
            ActionWire { entry: (offset, tag), args: vec![0xff; 12], fds: vec![] },
        );
        let err = decode_with_fds::<Barrier>(&bytes, fds).unwrap_err().to_string();
        assert!(err.contains("the barrier action's arguments"), "{err}");
        // And with good ones, the action runs with them.
        let (bytes, fds) =
            message(&barrier, ActionWire { entry: (offset, tag), args, fds: vec![] });
        let back: Barrier = decode_with_fds(&bytes, fds).unwrap();
        assert_eq!(runs_after(&back), 3);
    }
}
