//! What the manager's objects are to the server: the [`Served`] trait every object type
//! implements, the context a call runs in ([`Cx`]), and the built-in containers (list, dict,
//! namespace, value).
//!
//! Values are stored as the clients encoded them ([`Item`]: postcard bytes and the objects
//! they hold proxies of); the server never decodes them. So two values are equal when their
//! encodings are (what `contains`, `index`, `count`, `remove` and dict keys use): the same as
//! `==` for integers, strings, tuples, structs and enums of them, but floats compare by their
//! bits (`-0.0 != 0.0`, a NaN equals itself) and a `HashMap` by its order of iteration. Orders
//! (`sort`) and updates (`update_with`) run typed code: a function of the program named by a
//! checked entry (see `apply.rs`).

use std::collections::BTreeMap;
use std::os::fd::BorrowedFd;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use indexmap::IndexMap;
use mp_process::code::Entry;
use parking_lot::Mutex;

use crate::apply::{SortRun, UpdateRun};
use crate::error::RemoteError;
use crate::proto::{BATCH_BYTES, Item, Payload, decode};
use crate::server::store::{Session, Store};

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
    /// The manager is stopping (a shutdown, or its owner's end): the object's last word.
    fn shutdown(&self) {}
}

/// The error for a method a type does not have.
pub(crate) fn not_exposed(typeid: &str, method: &str) -> RemoteError {
    RemoteError::new("NotExposed", format!("method {method:?} of {typeid} is not exposed"))
}

/// Python's `IndexError` for a list.
fn index_error(what: &str) -> RemoteError {
    RemoteError::new("IndexError", what.to_string())
}

/// Python's position of `index` in a sequence of `len` (negative counts from the end).
fn position(index: i64, len: usize) -> Option<usize> {
    let len = i64::try_from(len).ok()?;
    let at = if index < 0 { index.checked_add(len)? } else { index };
    (0..len).contains(&at).then_some(at as usize)
}

/// Python's clamped position for `insert` and slices.
fn clamp(index: i64, len: usize) -> usize {
    let n = i64::try_from(len).unwrap_or(i64::MAX);
    let at = if index < 0 { index.saturating_add(n).max(0) } else { index.min(n) };
    at as usize
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
    std::panic::catch_unwind(AssertUnwindSafe(|| entry.call(context))).map_err(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".to_string());
        RemoteError::new("Panic", message)
    })
}

/// Runs an update entry on `current` and returns the new value's bytes.
fn run_update(
    cx: &Cx<'_>,
    entry: (u64, u64),
    current: Option<Vec<u8>>,
) -> Result<Vec<u8>, RemoteError> {
    let mut run = UpdateRun::new(current);
    run_entry(cx, entry, &mut run)?;
    run.result.map_err(|m| RemoteError::new("TypeError", m))
}

/// A batch of items from `start`: as many as fit in [`BATCH_BYTES`] (at least one), and where
/// the next batch starts, if any.
fn batch<T>(
    items: impl ExactSizeIterator<Item = T>,
    start: u64,
    size: impl Fn(&T) -> usize,
) -> (Vec<T>, Option<u64>) {
    let len = items.len();
    let start = usize::try_from(start).unwrap_or(usize::MAX);
    let mut out = Vec::new();
    let mut bytes = 0usize;
    for item in items.skip(start) {
        if !out.is_empty() && bytes + size(&item) > BATCH_BYTES {
            break;
        }
        bytes += size(&item);
        out.push(item);
    }
    let end = start.saturating_add(out.len());
    (out, (end < len).then_some(end as u64))
}

/// A list: Python's `list` in a manager (and `Array`, which exposes part of it).
pub(crate) struct ListObj {
    /// `"list"` or `"Array"`.
    typeid: &'static str,
    items: Mutex<Vec<Item>>,
}

impl ListObj {
    /// A list of `items` (whose objects the caller held for it).
    pub(crate) fn new(typeid: &'static str, items: Vec<Item>) -> ListObj {
        ListObj { typeid, items: Mutex::new(items) }
    }
}

impl Served for ListObj {
    fn typeid(&self) -> &str {
        self.typeid
    }

    fn call(&self, cx: &Cx<'_>, method: &str, args: &[u8]) -> Result<Payload, RemoteError> {
        let array = self.typeid == "Array";
        let mut items = self.items.lock();
        match method {
            "len" => Payload::of(&(items.len() as u64)),
            "get" => {
                let i: i64 = decode(args)?;
                let at = position(i, items.len())
                    .ok_or_else(|| index_error("list index out of range"))?;
                cx.give(&items[at])
            }
            "set" => {
                let (i, item): (i64, Item) = decode(args)?;
                let at = position(i, items.len())
                    .ok_or_else(|| index_error("list assignment index out of range"))?;
                cx.hold(&item)?;
                let old = std::mem::replace(&mut items[at], item);
                drop(items);
                cx.release(old);
                Ok(Payload::unit())
            }
            "slice" => {
                let start: u64 = decode(args)?;
                let (out, next) = batch(items.iter(), start, |i| i.bytes.len());
                let mut refs = Vec::new();
                for item in &out {
                    refs.extend_from_slice(&item.refs);
                }
                cx.store.hold(&refs)?;
                let bytes: Vec<&[u8]> = out.iter().map(|i| i.bytes.as_slice()).collect();
                let mut payload = Payload::of(&(bytes, next))?;
                payload.refs = refs;
                Ok(payload)
            }
            "contains" | "index" | "count" if !array => {
                let (value, start, stop): (Vec<u8>, i64, i64) = decode(args)?;
                let (start, stop) = (clamp(start, items.len()), clamp(stop, items.len()));
                let mut hits = items
                    .iter()
                    .enumerate()
                    .skip(start)
                    .take(stop.saturating_sub(start))
                    .filter(|(_, item)| item.bytes == value);
                match method {
                    "contains" => Payload::of(&hits.next().is_some()),
                    "count" => Payload::of(&(hits.count() as u64)),
                    _ => match hits.next() {
                        Some((at, _)) => Payload::of(&(at as u64)),
                        None => Err(RemoteError::new("ValueError", "value is not in list")),
                    },
                }
            }
            "del" if !array => {
                let i: i64 = decode(args)?;
                let at = position(i, items.len())
                    .ok_or_else(|| index_error("list assignment index out of range"))?;
                let old = items.remove(at);
                drop(items);
                cx.release(old);
                Ok(Payload::unit())
            }
            "append" if !array => {
                let item: Item = decode(args)?;
                cx.hold(&item)?;
                items.push(item);
                Ok(Payload::unit())
            }
            "extend" if !array => {
                let new: Vec<Item> = decode(args)?;
                let refs: Vec<u64> = new.iter().flat_map(|i| i.refs.iter().copied()).collect();
                cx.store.hold(&refs)?;
                items.extend(new);
                Ok(Payload::unit())
            }
            "insert" if !array => {
                let (i, item): (i64, Item) = decode(args)?;
                cx.hold(&item)?;
                let at = clamp(i, items.len());
                items.insert(at, item);
                Ok(Payload::unit())
            }
            "pop" if !array => {
                let i: i64 = decode(args)?;
                if items.is_empty() {
                    return Err(index_error("pop from empty list"));
                }
                let at = position(i, items.len())
                    .ok_or_else(|| index_error("pop index out of range"))?;
                let item = items.remove(at);
                // The caller takes over the references the list held.
                Ok(Payload { bytes: item.bytes, refs: item.refs })
            }
            "remove" if !array => {
                let value: Vec<u8> = decode(args)?;
                let at = items.iter().position(|item| item.bytes == value).ok_or_else(|| {
                    RemoteError::new("ValueError", "list.remove(x): x not in list")
                })?;
                let old = items.remove(at);
                drop(items);
                cx.release(old);
                Ok(Payload::unit())
            }
            "reverse" if !array => {
                items.reverse();
                Ok(Payload::unit())
            }
            "clear" if !array => {
                let old = std::mem::take(&mut *items);
                drop(items);
                for item in old {
                    cx.release(item);
                }
                Ok(Payload::unit())
            }
            _ => Err(not_exposed(self.typeid, method)),
        }
    }

    fn apply(
        &self,
        cx: &Cx<'_>,
        what: &str,
        entry: (u64, u64),
        args: &[u8],
    ) -> Result<Payload, RemoteError> {
        let mut items = self.items.lock();
        match what {
            "update" => {
                let i: i64 = decode(args)?;
                let at = position(i, items.len())
                    .ok_or_else(|| index_error("list index out of range"))?;
                if !items[at].refs.is_empty() {
                    return Err(RemoteError::new(
                        "TypeError",
                        "cannot update a value holding proxies",
                    ));
                }
                let new = run_update(cx, entry, Some(items[at].bytes.clone()))?;
                items[at].bytes.clone_from(&new);
                Ok(Payload { bytes: new, refs: Vec::new() })
            }
            "sort" if self.typeid == "list" => {
                let reverse: bool = decode(args)?;
                let mut run = SortRun {
                    items: items.iter().map(|i| i.bytes.clone()).collect(),
                    reverse,
                    order: Err("the sort did not run".to_string()),
                };
                run_entry(cx, entry, &mut run)?;
                let order = run.order.map_err(|m| RemoteError::new("TypeError", m))?;
                if order.len() != items.len() {
                    return Err(RemoteError::new("TypeError", "the sort lost items"));
                }
                let mut old: Vec<Option<Item>> = items.drain(..).map(Some).collect();
                for at in order {
                    if let Some(item) = old.get_mut(at).and_then(Option::take) {
                        items.push(item);
                    }
                }
                Ok(Payload::unit())
            }
            _ => Err(not_exposed(self.typeid, what)),
        }
    }

    fn held(&self) -> Vec<u64> {
        self.items.lock().iter().flat_map(|i| i.refs.iter().copied()).collect()
    }
}

/// Refuses a dict key that holds proxies.
fn key_of(item: &Item) -> Result<(), RemoteError> {
    if item.refs.is_empty() {
        Ok(())
    } else {
        Err(RemoteError::new("TypeError", "a dict key cannot hold a proxy"))
    }
}

/// A dict: Python's `dict` in a manager, in insertion order.
pub(crate) struct DictObj {
    map: Mutex<IndexMap<Vec<u8>, Item>>,
}

impl DictObj {
    /// An empty dict.
    pub(crate) fn new() -> DictObj {
        DictObj { map: Mutex::new(IndexMap::new()) }
    }
}

impl Served for DictObj {
    fn typeid(&self) -> &str {
        "dict"
    }

    fn call(&self, cx: &Cx<'_>, method: &str, args: &[u8]) -> Result<Payload, RemoteError> {
        let mut map = self.map.lock();
        match method {
            "len" => Payload::of(&(map.len() as u64)),
            "get" => {
                let key: Vec<u8> = decode(args)?;
                match map.get(&key) {
                    Some(item) => {
                        let mut payload = cx.give(item)?;
                        payload.bytes.insert(0, 1);
                        Ok(payload)
                    }
                    None => Payload::of(&None::<()>),
                }
            }
            "contains" => {
                let key: Vec<u8> = decode(args)?;
                Payload::of(&map.contains_key(&key))
            }
            "set" => {
                let (key, item): (Item, Item) = decode(args)?;
                key_of(&key)?;
                cx.hold(&item)?;
                let old = map.insert(key.bytes, item);
                drop(map);
                if let Some(old) = old {
                    cx.release(old);
                }
                Ok(Payload::unit())
            }
            "setdefault" => {
                let (key, item): (Item, Item) = decode(args)?;
                key_of(&key)?;
                if !map.contains_key(&key.bytes) {
                    cx.hold(&item)?;
                }
                let stored = map.entry(key.bytes).or_insert(item);
                cx.give(stored)
            }
            "pop" => {
                let key: Vec<u8> = decode(args)?;
                match map.shift_remove(&key) {
                    // The caller takes over the references the dict held.
                    Some(item) => {
                        let mut bytes = vec![1];
                        bytes.extend_from_slice(&item.bytes);
                        Ok(Payload { bytes, refs: item.refs })
                    }
                    None => Payload::of(&None::<()>),
                }
            }
            "popitem" => match map.pop() {
                Some((key, item)) => {
                    let bytes = postcard::to_allocvec(&Some((key, item.bytes))).map_err(|e| {
                        RemoteError::new("TypeError", format!("cannot encode the item: {e}"))
                    })?;
                    Ok(Payload { bytes, refs: item.refs })
                }
                None => Err(RemoteError::new("KeyError", "popitem(): dictionary is empty")),
            },
            "del" => {
                let key: Vec<u8> = decode(args)?;
                let old = map
                    .shift_remove(&key)
                    .ok_or_else(|| RemoteError::new("KeyError", "key not found"))?;
                drop(map);
                cx.release(old);
                Ok(Payload::unit())
            }
            "items" => {
                let start: u64 = decode(args)?;
                let (out, next) = batch(map.iter(), start, |(k, v)| k.len() + v.bytes.len());
                let refs: Vec<u64> = out.iter().flat_map(|(_, v)| v.refs.iter().copied()).collect();
                cx.store.hold(&refs)?;
                let pairs: Vec<(&[u8], &[u8])> =
                    out.iter().map(|(k, v)| (k.as_slice(), v.bytes.as_slice())).collect();
                let mut payload = Payload::of(&(pairs, next))?;
                payload.refs = refs;
                Ok(payload)
            }
            "update" => {
                let pairs: Vec<(Item, Item)> = decode(args)?;
                for (key, _) in &pairs {
                    key_of(key)?;
                }
                let refs: Vec<u64> =
                    pairs.iter().flat_map(|(_, v)| v.refs.iter().copied()).collect();
                cx.store.hold(&refs)?;
                let mut old = Vec::new();
                for (key, item) in pairs {
                    old.extend(map.insert(key.bytes, item));
                }
                drop(map);
                for item in old {
                    cx.release(item);
                }
                Ok(Payload::unit())
            }
            "clear" => {
                let old = std::mem::take(&mut *map);
                drop(map);
                for (_, item) in old {
                    cx.release(item);
                }
                Ok(Payload::unit())
            }
            _ => Err(not_exposed("dict", method)),
        }
    }

    fn apply(
        &self,
        cx: &Cx<'_>,
        what: &str,
        entry: (u64, u64),
        args: &[u8],
    ) -> Result<Payload, RemoteError> {
        if what != "update" {
            return Err(not_exposed("dict", what));
        }
        let key: Item = decode(args)?;
        key_of(&key)?;
        let mut map = self.map.lock();
        let current = match map.get(&key.bytes) {
            Some(item) if !item.refs.is_empty() => {
                return Err(RemoteError::new("TypeError", "cannot update a value holding proxies"));
            }
            Some(item) => Some(item.bytes.clone()),
            None => None,
        };
        let new = run_update(cx, entry, current)?;
        map.insert(key.bytes, Item { bytes: new.clone(), refs: Vec::new() });
        Ok(Payload { bytes: new, refs: Vec::new() })
    }

    fn held(&self) -> Vec<u64> {
        self.map.lock().values().flat_map(|i| i.refs.iter().copied()).collect()
    }
}

/// A namespace: attributes by name, each with its value and how it prints.
pub(crate) struct NamespaceObj {
    attrs: Mutex<BTreeMap<String, (Item, String)>>,
}

impl NamespaceObj {
    /// An empty namespace.
    pub(crate) fn new() -> NamespaceObj {
        NamespaceObj { attrs: Mutex::new(BTreeMap::new()) }
    }
}

impl Served for NamespaceObj {
    fn typeid(&self) -> &str {
        "Namespace"
    }

    fn call(&self, cx: &Cx<'_>, method: &str, args: &[u8]) -> Result<Payload, RemoteError> {
        let mut attrs = self.attrs.lock();
        let missing = |name: &str| {
            RemoteError::new(
                "AttributeError",
                format!("'Namespace' object has no attribute '{name}'"),
            )
        };
        match method {
            "get" => {
                let name: String = decode(args)?;
                attrs.get(&name).ok_or_else(|| missing(&name)).and_then(|(item, _)| cx.give(item))
            }
            "set" => {
                let (name, item, repr): (String, Item, String) = decode(args)?;
                cx.hold(&item)?;
                let old = attrs.insert(name, (item, repr));
                drop(attrs);
                if let Some((old, _)) = old {
                    cx.release(old);
                }
                Ok(Payload::unit())
            }
            "del" => {
                let name: String = decode(args)?;
                let (old, _) = attrs.remove(&name).ok_or_else(|| missing(&name))?;
                drop(attrs);
                cx.release(old);
                Ok(Payload::unit())
            }
            "contains" => {
                let name: String = decode(args)?;
                Payload::of(&attrs.contains_key(&name))
            }
            "names" => Payload::of(&attrs.keys().collect::<Vec<_>>()),
            "repr" => {
                // Python's `Namespace.__repr__`: sorted, names starting with `_` hidden.
                let shown: Vec<String> = attrs
                    .iter()
                    .filter(|(name, _)| !name.starts_with('_'))
                    .map(|(name, (_, repr))| format!("{name}={repr}"))
                    .collect();
                Payload::of(&format!("Namespace({})", shown.join(", ")))
            }
            _ => Err(not_exposed("Namespace", method)),
        }
    }

    fn held(&self) -> Vec<u64> {
        self.attrs.lock().values().flat_map(|(i, _)| i.refs.iter().copied()).collect()
    }
}

/// A value: one item, read and replaced whole (Python's `Value` in a manager).
pub(crate) struct ValueObj {
    item: Mutex<Item>,
}

impl ValueObj {
    /// A value holding `item`.
    pub(crate) fn new(item: Item) -> ValueObj {
        ValueObj { item: Mutex::new(item) }
    }
}

impl Served for ValueObj {
    fn typeid(&self) -> &str {
        "Value"
    }

    fn call(&self, cx: &Cx<'_>, method: &str, args: &[u8]) -> Result<Payload, RemoteError> {
        let mut item = self.item.lock();
        match method {
            "get" => cx.give(&item),
            "set" => {
                let new: Item = decode(args)?;
                cx.hold(&new)?;
                let old = std::mem::replace(&mut *item, new);
                drop(item);
                cx.release(old);
                Ok(Payload::unit())
            }
            _ => Err(not_exposed("Value", method)),
        }
    }

    fn apply(
        &self,
        cx: &Cx<'_>,
        what: &str,
        entry: (u64, u64),
        _args: &[u8],
    ) -> Result<Payload, RemoteError> {
        if what != "update" {
            return Err(not_exposed("Value", what));
        }
        let mut item = self.item.lock();
        if !item.refs.is_empty() {
            return Err(RemoteError::new("TypeError", "cannot update a value holding proxies"));
        }
        let new = run_update(cx, entry, Some(item.bytes.clone()))?;
        item.bytes.clone_from(&new);
        Ok(Payload { bytes: new, refs: Vec::new() })
    }

    fn held(&self) -> Vec<u64> {
        self.item.lock().refs.clone()
    }
}
