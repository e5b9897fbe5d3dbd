//! The built-in containers' server side: list (and `Array`), dict, namespace, value.
//!
//! Values are stored as the clients encoded them ([`Item`]: postcard bytes and the objects
//! they hold proxies of); the server never decodes them. So two values are equal when their
//! encodings are (what `contains`, `index`, `count`, `remove` and dict keys use): the same as
//! `==` for integers, strings, tuples, structs and enums of them, but floats compare by their
//! bits (`-0.0 != 0.0`, a NaN equals itself) and a `HashMap` by its order of iteration. Orders
//! (`sort`) and updates (`update_with`) run typed code: a function of the program named by a
//! checked entry (see `apply.rs`).

use std::collections::BTreeMap;

use indexmap::IndexMap;
use parking_lot::Mutex;

use crate::apply::{SortRun, UpdateRun};
use crate::error::RemoteError;
use crate::proto::{BATCH_BYTES, Item, ItemRef, Payload, decode, some_bytes};
use crate::server::objects::{Cx, Served, not_exposed, run_entry};

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

/// Refuses a dict key that holds proxies (`refs`: the objects the key refers to).
fn key_of(refs: &[u64]) -> Result<(), RemoteError> {
    if refs.is_empty() {
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
                // Keys are looked up in the request's bytes, not copied out of them.
                let key: &[u8] = decode(args)?;
                match map.get(key) {
                    Some(item) => cx.give_some(item),
                    None => Payload::of(&None::<()>),
                }
            }
            "contains" => {
                let key: &[u8] = decode(args)?;
                Payload::of(&map.contains_key(key))
            }
            "set" => {
                let (key, item): (ItemRef<'_>, Item) = decode(args)?;
                key_of(&key.refs)?;
                cx.hold(&item)?;
                // A key already there keeps its bytes: only a new key is copied.
                let old = match map.get_mut(key.bytes) {
                    Some(slot) => Some(std::mem::replace(slot, item)),
                    None => map.insert(key.bytes.to_vec(), item),
                };
                drop(map);
                if let Some(old) = old {
                    cx.release(old);
                }
                Ok(Payload::unit())
            }
            "setdefault" => {
                let (key, item): (Item, Item) = decode(args)?;
                key_of(&key.refs)?;
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
                    Some(item) => Ok(Payload { bytes: some_bytes(&item.bytes), refs: item.refs }),
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
                    key_of(&key.refs)?;
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
        key_of(&key.refs)?;
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
