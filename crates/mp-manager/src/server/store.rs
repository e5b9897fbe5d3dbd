//! The manager's objects and who holds them: the object table with a count of references per
//! object, and the client sessions (one per client process) with the references each holds.
//!
//! An object lives while its count is above zero. The count is the sum of the references
//! client processes hold (recorded in their [`Session`], given back when the process ends) and
//! of the references values stored in the manager's containers hold (proxies nested in them).
//! Dropping an object gives back the references its stored values held, and so on down.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::error::RemoteError;
use crate::server::objects::Served;

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

/// A client process: its pidfd, and the references it holds.
pub(crate) struct Session {
    /// The client's pid.
    pub pid: u32,
    /// Its pidfd: readable once it ended.
    pub pidfd: OwnedFd,
    /// References held, by object.
    refs: Mutex<HashMap<u64, u64>>,
    /// Set once the process ended: calls it left blocked give up.
    dead: AtomicBool,
}

impl Session {
    /// A session for the process `pid`, watched through `pidfd`.
    pub(crate) fn new(pid: u32, pidfd: OwnedFd) -> Session {
        Session { pid, pidfd, refs: Mutex::new(HashMap::new()), dead: AtomicBool::new(false) }
    }

    /// Records references to `ids` the table already counts.
    pub(crate) fn record(&self, ids: &[u64]) {
        if ids.is_empty() {
            return;
        }
        let mut refs = self.refs.lock();
        for &id in ids {
            *refs.entry(id).or_insert(0) += 1;
        }
    }

    /// One more reference to `id`, counted in `store` too.
    pub(crate) fn incref(&self, store: &Store, id: u64) -> Result<(), RemoteError> {
        store.hold(&[id])?;
        self.record(&[id]);
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
