//! The synchronisation types of a manager: queues, locks, semaphores, conditions, events,
//! barriers (Python's `SyncManager` registers `Queue`, `JoinableQueue`, `Lock`, `RLock`,
//! `Semaphore`, `BoundedSemaphore`, `Condition`, `Event` and `Barrier`).
//!
//! Each object is a `parking_lot` mutex over its state and condition variables. A call that
//! waits (a queue's `get`, a lock's `acquire`) waits on its own connection's thread, in slices
//! of at most [`SLICE`], and looks between slices whether its caller is still there: a caller
//! that died or hung up is given nothing (no item, no lock, no permit). Timeouts arrive with
//! the call (`Option<Duration>`: `None` waits for ever, zero does not wait) and are applied
//! here, so the client only waits for the reply.
//!
//! Locks (`Lock`, `RLock`, a `Condition`'s lock) record their owner as the client's pid and a
//! thread id the client sends; when a client process ends, however it ends, every lock it
//! held is released and the waiters woken ([`Served::session_ended`]), which CPython's manager
//! does not do.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mp_process::code::Entry;
use parking_lot::{Condvar, Mutex, MutexGuard};

use crate::apply::ActionRun;
use crate::error::RemoteError;
use crate::proto::{Item, Payload, decode};
use crate::server::objects::{Cx, Served, Store, guarded, not_exposed};
use crate::server::registry::Registry;

/// The longest a waiting call sleeps before it looks whether its caller is still there.
const SLICE: Duration = Duration::from_millis(50);

/// Who holds a lock: the client's pid and the id of its thread.
type Owner = (u32, u64);

/// The deadline of a wait of `timeout` (`None`: no deadline, also for a timeout too large to
/// add to now).
fn deadline(timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(|t| Instant::now().checked_add(t))
}

/// The error a wait gives up with when its caller is gone (the reply is never read).
fn gone() -> RemoteError {
    RemoteError::new("Gone", "the caller is gone: its wait was abandoned")
}

/// Python's `RuntimeError`.
fn runtime_error(message: &str) -> RemoteError {
    RemoteError::new("RuntimeError", message)
}

/// Waits on `cv`, with the object's state held by `guard`, until `ready` gives a result (it
/// runs with the state held, first at once), `deadline` passes (`Ok(None)`), or the caller is
/// gone (`Err`). `ready` never runs for a caller known to be dead. Returns with the state held.
fn wait_until<S, T>(
    cx: &Cx<'_>,
    cv: &Condvar,
    guard: &mut MutexGuard<'_, S>,
    deadline: Option<Instant>,
    mut ready: impl FnMut(&mut S) -> Option<T>,
) -> Result<Option<T>, RemoteError> {
    loop {
        if cx.session.is_dead() {
            return Err(gone());
        }
        if let Some(t) = ready(&mut **guard) {
            return Ok(Some(t));
        }
        let slice = match deadline {
            None => SLICE,
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => left.min(SLICE),
                _ => return Ok(None),
            },
        };
        cv.wait_for(guard, slice);
        if MutexGuard::unlocked(guard, || cx.gone()) {
            return Err(gone());
        }
    }
}

/// A queue's contents.
struct QueueState {
    /// The items, oldest first; each holds the objects it refers to.
    items: VecDeque<Item>,
    /// Items put and not yet marked done (a `JoinableQueue`'s count).
    unfinished: u64,
}

/// A queue: Python's `queue.Queue` (`"Queue"`) or its joinable kind (`"JoinableQueue"`,
/// `task_done` and `join`).
pub(crate) struct QueueObj {
    /// `"Queue"` or `"JoinableQueue"`.
    typeid: &'static str,
    /// The most items it holds (0: no limit).
    maxsize: usize,
    /// Its contents.
    state: Mutex<QueueState>,
    /// Signalled when an item is put.
    not_empty: Condvar,
    /// Signalled when an item is taken.
    not_full: Condvar,
    /// Signalled when the last unfinished task is marked done.
    all_done: Condvar,
}

impl QueueObj {
    /// An empty queue of `typeid` holding at most `maxsize` items (0: no limit).
    fn new(typeid: &'static str, maxsize: u64) -> QueueObj {
        QueueObj {
            typeid,
            maxsize: usize::try_from(maxsize).unwrap_or(usize::MAX),
            state: Mutex::new(QueueState { items: VecDeque::new(), unfinished: 0 }),
            not_empty: Condvar::new(),
            not_full: Condvar::new(),
            all_done: Condvar::new(),
        }
    }

    /// Whether the queue has room for one more item.
    fn room(&self, state: &QueueState) -> bool {
        self.maxsize == 0 || state.items.len() < self.maxsize
    }

    /// `put(item, timeout)`.
    fn put(&self, cx: &Cx<'_>, args: &[u8]) -> Result<Payload, RemoteError> {
        let (item, timeout): (Item, Option<Duration>) = decode(args)?;
        // Held before the wait, outside the queue's mutex; given back if the put fails.
        cx.hold(&item)?;
        let joinable = self.typeid == "JoinableQueue";
        let mut item = Some(item);
        let mut state = self.state.lock();
        let put = wait_until(cx, &self.not_full, &mut state, deadline(timeout), |s| {
            if !self.room(s) {
                return None;
            }
            s.items.push_back(item.take()?);
            if joinable {
                s.unfinished = s.unfinished.saturating_add(1);
            }
            Some(())
        });
        drop(state);
        match put {
            Ok(Some(())) => {
                self.not_empty.notify_one();
                Ok(Payload::unit())
            }
            failed => {
                // A wake-up this call took and did not use goes to the next putter.
                self.not_full.notify_one();
                if let Some(item) = item {
                    cx.release(item);
                }
                Err(failed.err().unwrap_or_else(|| RemoteError::new("Full", "the queue is full")))
            }
        }
    }

    /// `get(timeout)`: the caller takes over the references the item held.
    fn get(&self, cx: &Cx<'_>, args: &[u8]) -> Result<Payload, RemoteError> {
        let timeout: Option<Duration> = decode(args)?;
        let mut state = self.state.lock();
        let got =
            wait_until(cx, &self.not_empty, &mut state, deadline(timeout), |s| s.items.pop_front());
        drop(state);
        match got {
            Ok(Some(item)) => {
                self.not_full.notify_one();
                Ok(Payload { bytes: item.bytes, refs: item.refs })
            }
            failed => {
                self.not_empty.notify_one();
                Err(failed.err().unwrap_or_else(|| RemoteError::new("Empty", "the queue is empty")))
            }
        }
    }
}

impl Served for QueueObj {
    fn typeid(&self) -> &str {
        self.typeid
    }

    /// An item whose `get` reply was lost goes back to the front of the queue (if the
    /// objects it refers to still exist).
    fn reply_lost(&self, store: &Store, method: &str, payload: Payload) {
        if method != "get" || store.hold(&payload.refs).is_err() {
            return;
        }
        self.state.lock().items.push_front(Item { bytes: payload.bytes, refs: payload.refs });
        self.not_empty.notify_one();
    }

    fn call(&self, cx: &Cx<'_>, method: &str, args: &[u8]) -> Result<Payload, RemoteError> {
        let joinable = self.typeid == "JoinableQueue";
        match method {
            "put" => self.put(cx, args),
            "get" => self.get(cx, args),
            "qsize" => {
                let () = decode(args)?;
                Payload::of(&(self.state.lock().items.len() as u64))
            }
            "empty" => {
                let () = decode(args)?;
                Payload::of(&self.state.lock().items.is_empty())
            }
            "full" => {
                let () = decode(args)?;
                let state = self.state.lock();
                Payload::of(&!self.room(&state))
            }
            "task_done" if joinable => {
                let () = decode(args)?;
                let mut state = self.state.lock();
                if state.unfinished == 0 {
                    return Err(RemoteError::new(
                        "ValueError",
                        "task_done() called too many times",
                    ));
                }
                state.unfinished -= 1;
                if state.unfinished == 0 {
                    self.all_done.notify_all();
                }
                Ok(Payload::unit())
            }
            "join" if joinable => {
                let timeout: Option<Duration> = decode(args)?;
                let mut state = self.state.lock();
                let done = wait_until(cx, &self.all_done, &mut state, deadline(timeout), |s| {
                    (s.unfinished == 0).then_some(())
                })?;
                Payload::of(&done.is_some())
            }
            _ => Err(not_exposed(self.typeid, method)),
        }
    }

    fn held(&self) -> Vec<u64> {
        self.state.lock().items.iter().flat_map(|i| i.refs.iter().copied()).collect()
    }
}

/// A lock's holder and how many times it holds it.
#[derive(Default)]
struct LockState {
    /// Who holds it.
    owner: Option<Owner>,
    /// How many levels (1 for a `Lock`).
    count: u64,
}

impl LockState {
    /// Takes the lock for `me` if it is free (or, `recursive`, one more level of it if `me`
    /// holds it).
    fn take(&mut self, me: Owner, recursive: bool) -> Option<()> {
        match self.owner {
            None => {
                self.owner = Some(me);
                self.count = 1;
                Some(())
            }
            Some(owner) if recursive && owner == me => {
                self.count = self.count.saturating_add(1);
                Some(())
            }
            Some(_) => None,
        }
    }

    /// Releases one level of an `RLock` held by `me`: whether the lock is free now.
    fn release_level(&mut self, me: Owner) -> Result<bool, RemoteError> {
        if self.owner != Some(me) {
            return Err(runtime_error("cannot release un-acquired lock"));
        }
        self.count = self.count.saturating_sub(1);
        if self.count == 0 {
            self.owner = None;
        }
        Ok(self.owner.is_none())
    }

    /// Frees the lock if process `pid` holds it: whether it did.
    fn free_for(&mut self, pid: u32) -> bool {
        if self.owner.is_some_and(|(p, _)| p == pid) {
            self.owner = None;
            self.count = 0;
            true
        } else {
            false
        }
    }
}

/// A lock's state and wake-ups, shared by a `Lock` or `RLock` object and the conditions
/// made with it (Python's `Condition(lock)`).
struct LockCore {
    /// Whether it is an `RLock`.
    recursive: bool,
    /// Its holder.
    state: Mutex<LockState>,
    /// Signalled when it is freed.
    freed: Condvar,
}

impl LockCore {
    /// `acquire(thread, timeout)`: whether the caller got it.
    fn acquire(
        &self,
        cx: &Cx<'_>,
        thread: u64,
        timeout: Option<Duration>,
    ) -> Result<bool, RemoteError> {
        let me = (cx.session.pid, thread);
        let mut state = self.state.lock();
        let got = wait_until(cx, &self.freed, &mut state, deadline(timeout), |s| {
            s.take(me, self.recursive)
        });
        drop(state);
        if !matches!(got, Ok(Some(()))) {
            self.freed.notify_one();
        }
        Ok(got?.is_some())
    }

    /// `release(thread)`.
    fn release(&self, cx: &Cx<'_>, thread: u64) -> Result<(), RemoteError> {
        let me = (cx.session.pid, thread);
        let mut state = self.state.lock();
        let free = if self.recursive {
            state.release_level(me)?
        } else if state.owner.is_none() {
            return Err(runtime_error("release unlocked lock"));
        } else {
            *state = LockState::default();
            true
        };
        drop(state);
        if free {
            self.freed.notify_one();
        }
        Ok(())
    }

    /// Whether `me` holds it.
    fn held_by(&self, me: Owner) -> bool {
        self.state.lock().owner == Some(me)
    }
}

/// A lock: Python's `threading.Lock` (`"Lock"`) or `threading.RLock` (`"RLock"`).
///
/// As in Python, a `Lock` may be released by a thread that did not acquire it; an `RLock`
/// only by its owner.
pub(crate) struct LockObj {
    /// Its state, shared with conditions made with it.
    core: Arc<LockCore>,
}

impl LockObj {
    /// A free lock (`recursive`: an `RLock`).
    fn new(recursive: bool) -> LockObj {
        LockObj {
            core: Arc::new(LockCore {
                recursive,
                state: Mutex::new(LockState::default()),
                freed: Condvar::new(),
            }),
        }
    }
}

impl Served for LockObj {
    fn typeid(&self) -> &str {
        if self.core.recursive { "RLock" } else { "Lock" }
    }

    fn call(&self, cx: &Cx<'_>, method: &str, args: &[u8]) -> Result<Payload, RemoteError> {
        match method {
            "acquire" => {
                let (thread, timeout): (u64, Option<Duration>) = decode(args)?;
                Payload::of(&self.core.acquire(cx, thread, timeout)?)
            }
            "release" => {
                let thread: u64 = decode(args)?;
                self.core.release(cx, thread).map(|()| Payload::unit())
            }
            _ => Err(not_exposed(self.typeid(), method)),
        }
    }

    fn session_ended(&self, pid: u32) {
        if self.core.state.lock().free_for(pid) {
            self.core.freed.notify_one();
        }
    }

    fn lock_core(&self) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        Some(Arc::clone(&self.core) as Arc<dyn std::any::Any + Send + Sync>)
    }
}

/// A semaphore: Python's `threading.Semaphore` (`"Semaphore"`) or `BoundedSemaphore`
/// (`"BoundedSemaphore"`, never released above its initial value).
pub(crate) struct SemaphoreObj {
    /// The initial value, for a bounded semaphore.
    bound: Option<u32>,
    /// The permits available.
    value: Mutex<u32>,
    /// Signalled when a permit is added.
    released: Condvar,
}

impl SemaphoreObj {
    /// A semaphore holding `value` permits (`bounded`: at most `value`).
    fn new(value: u32, bounded: bool) -> SemaphoreObj {
        SemaphoreObj {
            bound: bounded.then_some(value),
            value: Mutex::new(value),
            released: Condvar::new(),
        }
    }
}

impl Served for SemaphoreObj {
    fn typeid(&self) -> &str {
        if self.bound.is_some() { "BoundedSemaphore" } else { "Semaphore" }
    }

    fn call(&self, cx: &Cx<'_>, method: &str, args: &[u8]) -> Result<Payload, RemoteError> {
        match method {
            "acquire" => {
                let (_thread, timeout): (u64, Option<Duration>) = decode(args)?;
                let mut value = self.value.lock();
                let got = wait_until(cx, &self.released, &mut value, deadline(timeout), |v| {
                    (*v > 0).then(|| *v -= 1)
                });
                drop(value);
                if !matches!(got, Ok(Some(()))) {
                    self.released.notify_one();
                }
                Payload::of(&got?.is_some())
            }
            "release" => {
                let _thread: u64 = decode(args)?;
                let mut value = self.value.lock();
                if self.bound.is_some_and(|bound| *value >= bound) {
                    return Err(RemoteError::new(
                        "ValueError",
                        "Semaphore released too many times",
                    ));
                }
                *value = value.checked_add(1).ok_or_else(|| {
                    RemoteError::new("OverflowError", "the semaphore's value would overflow")
                })?;
                drop(value);
                self.released.notify_one();
                Ok(Payload::unit())
            }
            "get_value" => {
                let () = decode(args)?;
                Payload::of(&*self.value.lock())
            }
            _ => Err(not_exposed(self.typeid(), method)),
        }
    }
}

/// A condition's lock and waiters.
#[derive(Default)]
struct ConditionState {
    /// Its lock (recursive, as Python's default `RLock`).
    lock: LockState,
    /// Tickets of the waiters not yet notified, oldest first, with their pids.
    waiting: VecDeque<(u64, u32)>,
    /// Tickets of the waiters notified and not yet awake, with their pids.
    notified: HashMap<u64, u32>,
    /// The next ticket.
    next_ticket: u64,
}

impl ConditionState {
    /// Moves up to `n` waiters, oldest first, to the notified: how many.
    fn notify(&mut self, n: u64) -> u64 {
        let mut woken = 0;
        while woken < n {
            let Some((ticket, pid)) = self.waiting.pop_front() else { break };
            self.notified.insert(ticket, pid);
            woken += 1;
        }
        woken
    }

    /// Withdraws the waiter `ticket`; a notification it had and did not use goes to the next
    /// waiter.
    fn withdraw(&mut self, ticket: u64) {
        self.waiting.retain(|&(t, _)| t != ticket);
        if self.notified.remove(&ticket).is_some() {
            self.notify(1);
        }
    }
}

/// A condition variable: Python's `threading.Condition` (`"Condition"`), with its own
/// recursive lock or a `Lock`/`RLock` object of the manager (`Condition(lock)`). Waiters are
/// notified oldest first.
pub(crate) struct ConditionObj {
    /// Its own lock's state (unused with an external lock) and the waiters.
    state: Mutex<ConditionState>,
    /// Signalled when its own lock is freed or waiters are notified.
    changed: Condvar,
    /// The lock object it was made with, if any: its id (held while the condition lives) and
    /// its state.
    external: Option<(u64, Arc<LockCore>)>,
}

impl ConditionObj {
    /// A condition, its lock free.
    fn new(external: Option<(u64, Arc<LockCore>)>) -> ConditionObj {
        ConditionObj {
            state: Mutex::new(ConditionState::default()),
            changed: Condvar::new(),
            external,
        }
    }

    /// `wait` with the lock object `lock`: as [`ConditionObj::wait`]. The waiter's ticket is
    /// taken before the lock is released, so a notifier (who must hold the lock) cannot miss
    /// it; lock order: the lock's state, then the condition's, never the other way.
    fn wait_external(
        &self,
        cx: &Cx<'_>,
        lock: &LockCore,
        thread: u64,
        timeout: Option<Duration>,
    ) -> Result<Payload, RemoteError> {
        let me = (cx.session.pid, thread);
        let mut held = lock.state.lock();
        if held.owner != Some(me) {
            return Err(runtime_error("cannot wait on un-acquired lock"));
        }
        let depth = held.count;
        let ticket = {
            let mut state = self.state.lock();
            let ticket = state.next_ticket;
            state.next_ticket = ticket.wrapping_add(1);
            state.waiting.push_back((ticket, me.0));
            ticket
        };
        *held = LockState::default();
        drop(held);
        lock.freed.notify_one();
        let mut state = self.state.lock();
        let waited = wait_until(cx, &self.changed, &mut state, deadline(timeout), |s| {
            s.notified.remove(&ticket).map(drop)
        });
        let notified = match waited {
            Ok(Some(())) => true,
            Ok(None) => {
                state.withdraw(ticket);
                false
            }
            Err(e) => {
                state.withdraw(ticket);
                drop(state);
                self.changed.notify_all();
                return Err(e);
            }
        };
        drop(state);
        // As Python's, the lock is taken back with no timeout, at the depth it was held.
        let mut held = lock.state.lock();
        let relocked = wait_until(cx, &lock.freed, &mut held, None, |s| {
            s.owner.is_none().then(|| *s = LockState { owner: Some(me), count: depth })
        });
        drop(held);
        if relocked.is_err() {
            lock.freed.notify_one();
        }
        relocked?;
        Payload::of(&notified)
    }

    /// `wait(thread, timeout)`: releases every level of the lock, waits to be notified (or
    /// the timeout), takes the lock back at the same depth; whether it was notified.
    fn wait(&self, cx: &Cx<'_>, args: &[u8]) -> Result<Payload, RemoteError> {
        let (thread, timeout): (u64, Option<Duration>) = decode(args)?;
        if let Some((_, lock)) = &self.external {
            return self.wait_external(cx, lock, thread, timeout);
        }
        let me = (cx.session.pid, thread);
        let mut state = self.state.lock();
        if state.lock.owner != Some(me) {
            return Err(runtime_error("cannot wait on un-acquired lock"));
        }
        let depth = state.lock.count;
        state.lock = LockState::default();
        let ticket = state.next_ticket;
        state.next_ticket = ticket.wrapping_add(1);
        state.waiting.push_back((ticket, me.0));
        self.changed.notify_all();
        let waited = wait_until(cx, &self.changed, &mut state, deadline(timeout), |s| {
            s.notified.remove(&ticket).map(drop)
        });
        let notified = match waited {
            Ok(Some(())) => true,
            Ok(None) => {
                state.withdraw(ticket);
                false
            }
            Err(e) => {
                state.withdraw(ticket);
                drop(state);
                self.changed.notify_all();
                return Err(e);
            }
        };
        // As Python's, the lock is taken back with no timeout.
        let relocked = wait_until(cx, &self.changed, &mut state, None, |s| {
            s.lock.owner.is_none().then(|| s.lock = LockState { owner: Some(me), count: depth })
        });
        if relocked.is_err() {
            drop(state);
            self.changed.notify_all();
        }
        relocked?;
        Payload::of(&notified)
    }
}

impl Served for ConditionObj {
    fn typeid(&self) -> &str {
        "Condition"
    }

    fn held(&self) -> Vec<u64> {
        self.external.iter().map(|(id, _)| *id).collect()
    }

    fn call(&self, cx: &Cx<'_>, method: &str, args: &[u8]) -> Result<Payload, RemoteError> {
        if let Some((_, lock)) = &self.external {
            match method {
                "acquire" => {
                    let (thread, timeout): (u64, Option<Duration>) = decode(args)?;
                    return Payload::of(&lock.acquire(cx, thread, timeout)?);
                }
                "release" => {
                    let thread: u64 = decode(args)?;
                    return lock.release(cx, thread).map(|()| Payload::unit());
                }
                "notify" => {
                    let (thread, n): (u64, u64) = decode(args)?;
                    if !lock.held_by((cx.session.pid, thread)) {
                        return Err(runtime_error("cannot notify on un-acquired lock"));
                    }
                    let woken = self.state.lock().notify(n);
                    if woken > 0 {
                        self.changed.notify_all();
                    }
                    return Payload::of(&woken);
                }
                _ => {}
            }
        }
        match method {
            "acquire" => {
                let (thread, timeout): (u64, Option<Duration>) = decode(args)?;
                let me = (cx.session.pid, thread);
                let mut state = self.state.lock();
                let got = wait_until(cx, &self.changed, &mut state, deadline(timeout), |s| {
                    s.lock.take(me, true)
                });
                drop(state);
                if !matches!(got, Ok(Some(()))) {
                    self.changed.notify_all();
                }
                Payload::of(&got?.is_some())
            }
            "release" => {
                let thread: u64 = decode(args)?;
                let free = self.state.lock().lock.release_level((cx.session.pid, thread))?;
                if free {
                    self.changed.notify_all();
                }
                Ok(Payload::unit())
            }
            "wait" => self.wait(cx, args),
            "notify" => {
                let (thread, n): (u64, u64) = decode(args)?;
                let mut state = self.state.lock();
                if state.lock.owner != Some((cx.session.pid, thread)) {
                    return Err(runtime_error("cannot notify on un-acquired lock"));
                }
                let woken = state.notify(n);
                drop(state);
                if woken > 0 {
                    self.changed.notify_all();
                }
                Payload::of(&woken)
            }
            _ => Err(not_exposed("Condition", method)),
        }
    }

    fn session_ended(&self, pid: u32) {
        let mut state = self.state.lock();
        state.lock.free_for(pid);
        state.waiting.retain(|&(_, p)| p != pid);
        let lost: Vec<u64> =
            state.notified.iter().filter(|&(_, &p)| p == pid).map(|(&t, _)| t).collect();
        for ticket in lost {
            state.withdraw(ticket);
        }
        drop(state);
        self.changed.notify_all();
    }
}

/// An event's flag, and how many times it was set (a waiter returns `true` for a `set`
/// during its wait even if a `clear` followed).
#[derive(Default)]
struct EventState {
    /// The flag.
    flag: bool,
    /// How many times it was set.
    sets: u64,
}

/// An event: Python's `threading.Event` (`"Event"`).
pub(crate) struct EventObj {
    /// The flag.
    state: Mutex<EventState>,
    /// Signalled when the flag is set.
    set: Condvar,
}

impl Served for EventObj {
    fn typeid(&self) -> &str {
        "Event"
    }

    fn call(&self, cx: &Cx<'_>, method: &str, args: &[u8]) -> Result<Payload, RemoteError> {
        match method {
            "set" => {
                let () = decode(args)?;
                let mut state = self.state.lock();
                state.flag = true;
                state.sets = state.sets.wrapping_add(1);
                drop(state);
                self.set.notify_all();
                Ok(Payload::unit())
            }
            "clear" => {
                let () = decode(args)?;
                self.state.lock().flag = false;
                Ok(Payload::unit())
            }
            "is_set" => {
                let () = decode(args)?;
                Payload::of(&self.state.lock().flag)
            }
            "wait" => {
                let timeout: Option<Duration> = decode(args)?;
                let mut state = self.state.lock();
                let start = state.sets;
                let set = wait_until(cx, &self.set, &mut state, deadline(timeout), |s| {
                    (s.flag || s.sets != start).then_some(())
                })?;
                Payload::of(&set.is_some())
            }
            _ => Err(not_exposed("Event", method)),
        }
    }
}

/// A barrier's cycle: its waiters and whether it is broken.
#[derive(Default)]
struct BarrierState {
    /// The waiters by ticket: their pid, and how their cycle ended (`None` while it fills,
    /// `true` passed, `false` broken). A waiter removes its own entry.
    waiters: HashMap<u64, (u32, Option<bool>)>,
    /// How many waiters the current cycle has.
    filling: usize,
    /// The next ticket.
    next_ticket: u64,
    /// Whether the barrier is broken.
    broken: bool,
}

impl BarrierState {
    /// Ends the current cycle: its waiters learn `passed`.
    fn end_cycle(&mut self, passed: bool) {
        for (_, outcome) in self.waiters.values_mut() {
            if outcome.is_none() {
                *outcome = Some(passed);
            }
        }
        self.filling = 0;
    }
}

/// A barrier: Python's `threading.Barrier` (`"Barrier"`), with its action (a function of the
/// program, run in the manager by the last party to arrive, before the others are released)
/// and default timeout. A party whose process dies while it waits breaks the barrier, as a
/// timeout does.
pub(crate) struct BarrierObj {
    /// How many parties trip it.
    parties: usize,
    /// The action, checked when the barrier was made.
    action: Option<Entry<ActionRun>>,
    /// The timeout of a `wait` that gives none.
    timeout: Option<Duration>,
    /// Its cycle.
    state: Mutex<BarrierState>,
    /// Signalled when a cycle ends.
    changed: Condvar,
}

/// Python's `BrokenBarrierError`.
fn broken_barrier() -> RemoteError {
    RemoteError::new("BrokenBarrier", "the barrier is broken")
}

impl BarrierObj {
    /// `wait(timeout)`: the caller's arrival index, or `BrokenBarrier`.
    fn wait(&self, cx: &Cx<'_>, args: &[u8]) -> Result<Payload, RemoteError> {
        let timeout: Option<Duration> = decode(args)?;
        let timeout = timeout.or(self.timeout);
        let mut state = self.state.lock();
        if cx.session.is_dead() {
            return Err(gone());
        }
        if state.broken {
            return Err(broken_barrier());
        }
        let index = state.filling;
        if index + 1 >= self.parties {
            // The last party: runs the action (the others still wait: their cycle has not
            // ended), then releases them; an action that panics breaks the barrier.
            let acted = match self.action {
                Some(action) => {
                    drop(state);
                    let acted = guarded(|| action.call(&mut ActionRun));
                    state = self.state.lock();
                    acted
                }
                None => Ok(()),
            };
            if acted.is_err() {
                state.broken = true;
            }
            state.end_cycle(acted.is_ok());
            drop(state);
            self.changed.notify_all();
            acted?;
            return Payload::of(&(index as u64));
        }
        let ticket = state.next_ticket;
        state.next_ticket = ticket.wrapping_add(1);
        state.waiters.insert(ticket, (cx.session.pid, None));
        state.filling += 1;
        let waited = wait_until(cx, &self.changed, &mut state, deadline(timeout), |s| {
            s.waiters.get(&ticket).and_then(|&(_, outcome)| outcome)
        });
        let outcome = state.waiters.remove(&ticket).and_then(|(_, outcome)| outcome);
        let passed = match (waited, outcome) {
            (_, Some(passed)) => passed,
            (waited, None) => {
                // Timed out, or the caller is gone, in a cycle still filling: it breaks.
                state.broken = true;
                state.end_cycle(false);
                drop(state);
                self.changed.notify_all();
                waited?;
                return Err(broken_barrier());
            }
        };
        if passed { Payload::of(&(index as u64)) } else { Err(broken_barrier()) }
    }
}

impl Served for BarrierObj {
    fn typeid(&self) -> &str {
        "Barrier"
    }

    fn call(&self, cx: &Cx<'_>, method: &str, args: &[u8]) -> Result<Payload, RemoteError> {
        match method {
            "wait" => self.wait(cx, args),
            "abort" | "reset" => {
                let () = decode(args)?;
                let mut state = self.state.lock();
                state.end_cycle(false);
                state.broken = method == "abort";
                drop(state);
                self.changed.notify_all();
                Ok(Payload::unit())
            }
            "parties" => {
                let () = decode(args)?;
                Payload::of(&(self.parties as u64))
            }
            "n_waiting" => {
                let () = decode(args)?;
                Payload::of(&(self.state.lock().filling as u64))
            }
            "broken" => {
                let () = decode(args)?;
                Payload::of(&self.state.lock().broken)
            }
            _ => Err(not_exposed("Barrier", method)),
        }
    }

    fn session_ended(&self, pid: u32) {
        let mut state = self.state.lock();
        if state.waiters.values().any(|&(p, outcome)| p == pid && outcome.is_none()) {
            state.broken = true;
            state.end_cycle(false);
            drop(state);
            self.changed.notify_all();
        }
    }
}

/// Registers the synchronisation types.
pub(crate) fn register(r: &mut Registry) {
    for typeid in ["Queue", "JoinableQueue"] {
        r.add(
            typeid,
            true,
            Box::new(move |_, args| {
                let maxsize: u64 = decode(args)?;
                Ok(Arc::new(QueueObj::new(typeid, maxsize)))
            }),
        );
    }
    for (typeid, recursive) in [("Lock", false), ("RLock", true)] {
        r.add(
            typeid,
            true,
            Box::new(move |_, args| {
                let () = decode(args)?;
                Ok(Arc::new(LockObj::new(recursive)))
            }),
        );
    }
    for (typeid, bounded) in [("Semaphore", false), ("BoundedSemaphore", true)] {
        r.add(
            typeid,
            true,
            Box::new(move |_, args| {
                let value: u32 = decode(args)?;
                Ok(Arc::new(SemaphoreObj::new(value, bounded)))
            }),
        );
    }
    r.add(
        "Condition",
        true,
        Box::new(|cx, args| {
            let lock: Option<u64> = decode(args)?;
            let external = match lock {
                None => None,
                Some(id) => {
                    let core = cx
                        .store
                        .get(id)?
                        .lock_core()
                        .and_then(|core| core.downcast::<LockCore>().ok())
                        .ok_or_else(|| {
                            RemoteError::new(
                                "TypeError",
                                "a Condition's lock must be a Lock or an RLock",
                            )
                        })?;
                    // Held while the condition lives (given back through `held`).
                    cx.store.hold(&[id])?;
                    Some((id, core))
                }
            };
            Ok(Arc::new(ConditionObj::new(external)))
        }),
    );
    r.add(
        "Event",
        true,
        Box::new(|_, args| {
            let () = decode(args)?;
            Ok(Arc::new(EventObj { state: Mutex::new(EventState::default()), set: Condvar::new() }))
        }),
    );
    r.add(
        "Barrier",
        true,
        Box::new(|cx, args| {
            let (parties, timeout, action): (u64, Option<Duration>, Option<(u64, u64)>) =
                decode(args)?;
            let action = match action {
                None => None,
                Some(_) if !cx.private => {
                    return Err(RemoteError::new(
                        "Refused",
                        "functions run in the manager only for its own process tree's connections",
                    ));
                }
                Some((offset, tag)) => {
                    Some(Entry::<ActionRun>::from_parts(offset, tag).ok_or_else(|| {
                        RemoteError::new(
                            "Refused",
                            "the action's entry does not check (forged, or from another program)",
                        )
                    })?)
                }
            };
            match usize::try_from(parties) {
                Ok(parties) if parties > 0 => Ok(Arc::new(BarrierObj {
                    parties,
                    action,
                    timeout,
                    state: Mutex::new(BarrierState::default()),
                    changed: Condvar::new(),
                })),
                _ => Err(RemoteError::new("ValueError", "parties must be > 0")),
            }
        }),
    );
}
