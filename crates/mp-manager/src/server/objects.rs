//! The manager's objects as the server holds them: the [`Served`] trait every object type
//! implements, the object table with a count of references per object ([`Store`]), the client
//! sessions (one per client process, with the references each holds: [`Session`]), and the
//! context a call runs in ([`Cx`]).
//!
//! An object lives while its count is above zero. The count is the sum of the references
//! client processes hold (recorded in their [`Session`], given back when the process ends) and
//! of the references values stored in the manager's containers hold (proxies nested in them).
//! Dropping an object gives back the references its stored values held, and so on down.

use std::collections::HashMap;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use mp_process::code::Entry;
use parking_lot::Mutex;

use crate::error::RemoteError;
use crate::proto::{Item, Payload};

/// One object of the table and its count.
struct Slot {
    obj: Arc<dyn Served>,
    count: u64,
}

/// The manager's objects.
pub(crate) struct Store {
    objects: Mutex<HashMap<u64, Slot>>,
    next: AtomicU64,
}

/// The error for an id the table does not hold.
pub(crate) fn no_such(id: u64) -> RemoteError {
    RemoteError::new(
        "NoSuchObject",
        format!("the manager holds no object {id:#x} (it was released, or never existed)"),
    )
}

impl Store {
    /// An empty table.
    pub(crate) fn new() -> Store {
        Store { objects: Mutex::new(HashMap::new()), next: AtomicU64::new(1) }
    }

    /// Adds `obj` with one reference; returns its id.
    pub(crate) fn add(&self, obj: Arc<dyn Served>) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.objects.lock().insert(id, Slot { obj, count: 1 });
        id
    }

    /// The object `id`.
    pub(crate) fn get(&self, id: u64) -> Result<Arc<dyn Served>, RemoteError> {
        self.objects.lock().get(&id).map(|slot| Arc::clone(&slot.obj)).ok_or_else(|| no_such(id))
    }

    /// One more reference to each of `ids`; none is taken if one is missing.
    pub(crate) fn hold(&self, ids: &[u64]) -> Result<(), RemoteError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut objects = self.objects.lock();
        if let Some(&missing) = ids.iter().find(|id| !objects.contains_key(id)) {
            return Err(no_such(missing));
        }
        for id in ids {
            if let Some(slot) = objects.get_mut(id) {
                slot.count += 1;
            }
        }
        Ok(())
    }

    /// One reference fewer to each of `ids`; objects left with none are dropped, and the
    /// references their values held given back in turn.
    pub(crate) fn release(&self, ids: impl IntoIterator<Item = u64>) {
        let mut pending: Vec<u64> = ids.into_iter().collect();
        while !pending.is_empty() {
            let mut dropped = Vec::new();
            {
                let mut objects = self.objects.lock();
                for id in pending.drain(..) {
                    if let Some(slot) = objects.get_mut(&id) {
                        slot.count = slot.count.saturating_sub(1);
                        if slot.count == 0 {
                            if let Some(slot) = objects.remove(&id) {
                                dropped.push(slot.obj);
                            }
                        }
                    }
                }
            }
            // Outside the table's lock: an object's values may hold references of their own.
            for obj in dropped {
                pending.extend(obj.held());
            }
        }
    }

    /// How many objects the table holds.
    pub(crate) fn len(&self) -> usize {
        self.objects.lock().len()
    }

    /// Every object, for a session's end (locks it held are released).
    pub(crate) fn all(&self) -> Vec<Arc<dyn Served>> {
        self.objects.lock().values().map(|slot| Arc::clone(&slot.obj)).collect()
    }
}

/// The first session number of remote clients: above every pid (Linux's are below 2^22).
pub(crate) const REMOTE_SESSIONS: u32 = 1 << 31;

/// A client process: its pidfd, and the references it holds.
pub(crate) struct Session {
    /// Who the client is: its pid for a process of the manager's tree, a number from
    /// [`REMOTE_SESSIONS`] up for a remote client (whose pid, on another host, names nothing
    /// here). Locks held are recorded under it.
    pub pid: u32,
    /// Its pidfd, readable once it ended (a local client); a remote client's session ends
    /// when its last connection closes.
    pub pidfd: Option<OwnedFd>,
    /// References held, by object.
    refs: Mutex<HashMap<u64, u64>>,
    /// Set once the process ended: calls it left blocked give up.
    dead: AtomicBool,
}

impl Session {
    /// A session for the process `pid`, watched through `pidfd` (none for a remote client).
    pub(crate) fn new(pid: u32, pidfd: Option<OwnedFd>) -> Session {
        Session { pid, pidfd, refs: Mutex::new(HashMap::new()), dead: AtomicBool::new(false) }
    }

    /// Records references to `ids` the table already counts.
    /// A session that ended meanwhile (a call that finished after its caller died) gives
    /// them straight back to `store`.
    pub(crate) fn record(&self, store: &Store, ids: &[u64]) {
        if ids.is_empty() {
            return;
        }
        let mut refs = self.refs.lock();
        // `end` marks the session dead before it takes the references, under this lock.
        if self.dead.load(Ordering::Acquire) {
            drop(refs);
            store.release(ids.iter().copied());
            return;
        }
        for &id in ids {
            *refs.entry(id).or_insert(0) += 1;
        }
    }

    /// One more reference to `id`, counted in `store` too.
    pub(crate) fn incref(&self, store: &Store, id: u64) -> Result<(), RemoteError> {
        store.hold(&[id])?;
        self.record(store, &[id]);
        Ok(())
    }

    /// Gives back one reference to `id`.
    pub(crate) fn decref(&self, store: &Store, id: u64) -> Result<(), RemoteError> {
        {
            let mut refs = self.refs.lock();
            match refs.get_mut(&id) {
                Some(n) if *n > 1 => *n -= 1,
                Some(_) => {
                    refs.remove(&id);
                }
                None => {
                    return Err(RemoteError::new(
                        "NoSuchObject",
                        format!("this process holds no reference to object {id:#x}"),
                    ));
                }
            }
        }
        store.release([id]);
        Ok(())
    }

    /// How many references the session holds.
    pub(crate) fn held(&self) -> u64 {
        self.refs.lock().values().sum()
    }

    /// Whether the process ended.
    pub(crate) fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }

    /// Ends the session: every reference it held is given back to `store`.
    pub(crate) fn end(&self, store: &Store) {
        self.dead.store(true, Ordering::Release);
        let refs = std::mem::take(&mut *self.refs.lock());
        store.release(refs.into_iter().flat_map(|(id, n)| std::iter::repeat_n(id, n as usize)));
    }
}

/// The context of one call: the manager's table, the caller's session and connection.
pub(crate) struct Cx<'a> {
    /// The manager's objects.
    pub store: &'a Store,
    /// The calling process.
    pub session: &'a Arc<Session>,
    /// The caller's connection (to notice it hang up during a long wait).
    pub conn: BorrowedFd<'a>,
    /// Whether the connection is one of the tree's private ones (entries accepted).
    pub private: bool,
}

impl Cx<'_> {
    /// Whether the caller is gone: its process ended, or it closed the connection (a call it
    /// abandoned). Long waits look at this between naps and give up.
    pub(crate) fn gone(&self) -> bool {
        use rustix::event::{PollFd, PollFlags};
        if self.session.is_dead() {
            return true;
        }
        let mut fds = [PollFd::new(&self.conn, PollFlags::RDHUP)];
        mp_process::os::poll::poll(&mut fds, Some(std::time::Instant::now())).is_ok()
            && fds[0].revents().intersects(PollFlags::RDHUP | PollFlags::HUP)
    }

    /// Holds the objects `item` refers to (it is being stored).
    pub(crate) fn hold(&self, item: &Item) -> Result<(), RemoteError> {
        self.store.hold(&item.refs)
    }

    /// Gives back the references a stored item held (it was removed or replaced).
    pub(crate) fn release(&self, item: Item) {
        if !item.refs.is_empty() {
            self.store.release(item.refs);
        }
    }

    /// A payload of `item`'s bytes, holding its objects for the caller.
    pub(crate) fn give(&self, item: &Item) -> Result<Payload, RemoteError> {
        self.store.hold(&item.refs)?;
        Ok(Payload { bytes: item.bytes.clone(), refs: item.refs.clone() })
    }

    /// [`give`](Self::give) of `Some(item)`: its bytes behind postcard's `Some` tag, in one
    /// allocation.
    pub(crate) fn give_some(&self, item: &Item) -> Result<Payload, RemoteError> {
        self.store.hold(&item.refs)?;
        Ok(Payload { bytes: crate::proto::some_bytes(&item.bytes), refs: item.refs.clone() })
    }
}

/// An object the manager serves.
pub(crate) trait Served: Send + Sync + 'static {
    /// The type's registered name.
    fn typeid(&self) -> &str;
    /// Runs `method` with `args` (postcard, the method's own shape).
    fn call(&self, cx: &Cx<'_>, method: &str, args: &[u8]) -> Result<Payload, RemoteError>;
    /// Runs a checked entry on the object, held (see `apply.rs`).
    fn apply(
        &self,
        _cx: &Cx<'_>,
        what: &str,
        _entry: (u64, u64),
        _args: &[u8],
    ) -> Result<Payload, RemoteError> {
        Err(not_exposed(self.typeid(), what))
    }
    /// The objects the values it stores hold references to (given back when it is dropped).
    fn held(&self) -> Vec<u64> {
        Vec::new()
    }
    /// The process `pid` ended: what it held in the object (a lock) is released.
    fn session_ended(&self, _pid: u32) {}
    /// The state of a `Lock` or `RLock` (a `sync::LockCore`), for a `Condition` made with it.
    fn lock_core(&self) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        None
    }
    /// The reply to a successful call of `method` could not be sent (its caller is gone):
    /// what the call took out of the object (a queue's item, in `payload`) goes back, if it
    /// can. The payload's references were recorded for the caller's session, which gives
    /// them back when it ends.
    fn reply_lost(&self, _store: &Store, _method: &str, _payload: Payload) {}
    /// The manager is stopping (a shutdown, or its owner's end): the object's last word.
    fn shutdown(&self) {}
}

/// The error for a method a type does not have.
pub(crate) fn not_exposed(typeid: &str, method: &str) -> RemoteError {
    RemoteError::new("NotExposed", format!("method {method:?} of {typeid} is not exposed"))
}

/// Runs a checked entry with `context`, refusing it on a public connection and reporting a
/// panic in it as a `Panic`.
pub(crate) fn run_entry<C: 'static>(
    cx: &Cx<'_>,
    entry: (u64, u64),
    context: &mut C,
) -> Result<(), RemoteError> {
    if !cx.private {
        return Err(RemoteError::new(
            "Refused",
            "functions run in the manager only for its own process tree's connections",
        ));
    }
    let Some(entry) = Entry::<C>::from_parts(entry.0, entry.1) else {
        return Err(RemoteError::new(
            "Refused",
            "the function's entry does not check (forged, or from another program)",
        ));
    };
    guarded(|| entry.call(context))
}

/// Runs `f`, reporting a panic in it as a `Panic` (code of the program run in the manager:
/// an entry, a registered type's method).
pub(crate) fn guarded<R>(f: impl FnOnce() -> R) -> Result<R, RemoteError> {
    std::panic::catch_unwind(AssertUnwindSafe(f)).map_err(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".to_string());
        RemoteError::new("Panic", message)
    })
}
