//! Proxies of the manager's containers: [`ListProxy`], [`DictProxy`], [`NamespaceProxy`],
//! [`ValueProxy`], [`ArrayProxy`].
//!
//! Every call is one round trip to the manager. Reads of a whole container (`to_vec`,
//! `items`, `keys`, `values`, `Display`) cost one round trip per batch of up to 1 MiB, not
//! one per item. Values are compared by their encodings (see the crate's docs).

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use mp_process::code::Entry;
use parking_lot::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::apply::{Sort, Update, Upsert};
use crate::error::{Error, RemoteError, Result};
use crate::manager::Manager;
use crate::proto::Item;
use crate::proxies::proxy_impls;
use crate::proxy::{Handle, decode_item, encode_item};

/// The entry of a zero-sized body, or the error saying it lies outside the executable.
fn entry_of<C: 'static, B: mp_process::code::Body<C>>(body: B) -> Result<(u64, u64)> {
    Entry::<C>::of(body).map(Entry::to_parts).ok_or_else(|| {
        Error::Remote(RemoteError::new("Refused", "the function is not in the executable's text"))
    })
}

/// Reads a whole sequence, a batch per round trip: `method` takes the index to start at and
/// returns the batch's items and where the next starts.
fn read_all<T: DeserializeOwned>(handle: &Handle, method: &str) -> Result<Vec<T>> {
    let mut out = Vec::new();
    let mut start = 0u64;
    loop {
        let payload =
            handle.call_raw(method, &postcard::to_allocvec(&start).unwrap_or_default())?;
        let (items, next): (Vec<Vec<u8>>, Option<u64>) = crate::link::decode_reply(&payload.bytes)?;
        for bytes in items {
            out.push(decode_item::<T>(handle.link(), &bytes)?);
        }
        match next {
            Some(n) if n > start => start = n,
            _ => return Ok(out),
        }
    }
}

/// Formats `items` as Python prints a list, through their `Debug`.
fn list_repr<T: fmt::Debug>(f: &mut fmt::Formatter<'_>, items: &[T]) -> fmt::Result {
    f.write_str("[")?;
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{item:?}")?;
    }
    f.write_str("]")
}

/// A list held by a manager: Python's `ListProxy` (`manager.list(...)`).
///
/// Indices may be negative, counting from the end, as in Python. `Display` prints the list as
/// Python does, through the items' `Debug` (`[0, 1, 4, 9, 16]`).
pub struct ListProxy<T> {
    handle: Handle,
    _type: PhantomData<fn(T) -> T>,
}

proxy_impls!(ListProxy<T>, "list");

impl<T> ListProxy<T> {
    fn from_handle(handle: Handle) -> Self {
        ListProxy { handle, _type: PhantomData }
    }

    /// The handle, for the crate's tests.
    #[cfg(test)]
    pub(crate) fn handle_for_tests(&self) -> &Handle {
        &self.handle
    }
}

impl<T: Serialize + DeserializeOwned> ListProxy<T> {
    /// The number of items: Python's `len(l)`.
    pub fn len(&self) -> Result<usize> {
        self.handle.call::<_, u64>("len", &()).map(|n| n as usize)
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> Result<bool> {
        self.len().map(|n| n == 0)
    }

    /// The item at `index`: Python's `l[index]` (`IndexError` out of range).
    pub fn get(&self, index: isize) -> Result<T> {
        self.handle.call("get", &(index as i64))
    }

    /// Replaces the item at `index`: Python's `l[index] = value`.
    pub fn set(&self, index: isize, value: T) -> Result<()> {
        let item = encode_item(self.handle.link(), &value)?;
        self.handle.call("set", &(index as i64, item))
    }

    /// Removes the item at `index`: Python's `del l[index]`.
    pub fn delete(&self, index: isize) -> Result<()> {
        self.handle.call("del", &(index as i64))
    }

    /// Appends `value`.
    pub fn append(&self, value: T) -> Result<()> {
        let item = encode_item(self.handle.link(), &value)?;
        self.handle.call("append", &item)
    }

    /// Appends every value of `values`, in one round trip.
    pub fn extend(&self, values: impl IntoIterator<Item = T>) -> Result<()> {
        let items: Vec<Item> = values
            .into_iter()
            .map(|v| encode_item(self.handle.link(), &v))
            .collect::<Result<_>>()?;
        self.handle.call("extend", &items)
    }

    /// Inserts `value` before `index` (clamped to the list, as Python's `insert`).
    pub fn insert(&self, index: isize, value: T) -> Result<()> {
        let item = encode_item(self.handle.link(), &value)?;
        self.handle.call("insert", &(index as i64, item))
    }

    /// Removes and returns the last item (`IndexError` if empty).
    pub fn pop(&self) -> Result<T> {
        self.pop_at(-1)
    }

    /// Removes and returns the item at `index`.
    pub fn pop_at(&self, index: isize) -> Result<T> {
        self.handle.call("pop", &(index as i64))
    }

    /// Removes the first item equal to `value` (`ValueError` if there is none).
    pub fn remove(&self, value: &T) -> Result<()> {
        let item = encode_item(self.handle.link(), value)?;
        self.handle.call("remove", &item.bytes)
    }

    /// The position of the first item equal to `value` (`ValueError` if there is none).
    pub fn index(&self, value: &T) -> Result<usize> {
        let item = encode_item(self.handle.link(), value)?;
        self.handle.call::<_, u64>("index", &(item.bytes, 0i64, i64::MAX)).map(|n| n as usize)
    }

    /// How many items equal `value`.
    pub fn count(&self, value: &T) -> Result<usize> {
        let item = encode_item(self.handle.link(), value)?;
        self.handle.call::<_, u64>("count", &(item.bytes, 0i64, i64::MAX)).map(|n| n as usize)
    }

    /// Whether an item equals `value`: Python's `value in l`.
    pub fn contains(&self, value: &T) -> Result<bool> {
        let item = encode_item(self.handle.link(), value)?;
        self.handle.call("contains", &(item.bytes, 0i64, i64::MAX))
    }

    /// Reverses the list in place.
    pub fn reverse(&self) -> Result<()> {
        self.handle.call("reverse", &())
    }

    /// Removes every item.
    pub fn clear(&self) -> Result<()> {
        self.handle.call("clear", &())
    }

    /// A copy of the items: Python's `l[:]` or `list(l)`, a round trip per 1 MiB.
    pub fn to_vec(&self) -> Result<Vec<T>> {
        read_all(&self.handle, "slice")
    }

    /// Python's `l.copy()`: the same as [`to_vec`](ListProxy::to_vec).
    pub fn copy(&self) -> Result<Vec<T>> {
        self.to_vec()
    }

    /// Sorts the list in the manager by `T`'s order, stably: Python's `l.sort()`.
    pub fn sort(&self) -> Result<()>
    where
        T: Ord + 'static,
    {
        self.handle.apply("sort", entry_of(Sort::<T>(PhantomData))?, &false)
    }

    /// Sorts in descending order, stably: Python's `l.sort(reverse=True)`.
    pub fn sort_descending(&self) -> Result<()>
    where
        T: Ord + 'static,
    {
        self.handle.apply("sort", entry_of(Sort::<T>(PhantomData))?, &true)
    }

    /// Replaces the item at `index` with `f(item)` in the manager, with the list held, so no
    /// other process's change comes in between (Python needs a `Lock` for `l[i] += 1`);
    /// returns the new item. `f` is a `fn` item or a closure that captures nothing.
    pub fn update_with<F>(&self, index: isize, f: F) -> Result<T>
    where
        F: Fn(T) -> T + Copy + Send + Sync + 'static,
        T: 'static,
    {
        self.handle.apply("update", entry_of(Update::<F, T>(f, PhantomData))?, &(index as i64))
    }
}

impl<T: Serialize + DeserializeOwned + fmt::Debug> fmt::Display for ListProxy<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_vec() {
            Ok(items) => list_repr(f, &items),
            Err(e) => write!(f, "<ListProxy: {e}>"),
        }
    }
}

/// A batch of a dict's pairs as encoded, and where the next starts.
type PairBatch = (Vec<(Vec<u8>, Vec<u8>)>, Option<u64>);

/// A dict held by a manager, in insertion order: Python's `DictProxy` (`manager.dict()`).
///
/// Keys are compared by their encodings and may not hold proxies. `Display` prints the dict
/// as Python does, through `Debug` (`{"a": 1}`).
pub struct DictProxy<K, V> {
    handle: Handle,
    _type: PhantomData<fn() -> (K, V)>,
}

proxy_impls!(DictProxy<K, V>, "dict");

impl<K, V> DictProxy<K, V> {
    fn from_handle(handle: Handle) -> Self {
        DictProxy { handle, _type: PhantomData }
    }
}

impl<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned> DictProxy<K, V> {
    /// The key's encoding.
    fn key(&self, key: &K) -> Result<Item> {
        encode_item(self.handle.link(), key)
    }

    /// The number of keys.
    pub fn len(&self) -> Result<usize> {
        self.handle.call::<_, u64>("len", &()).map(|n| n as usize)
    }

    /// Whether the dict is empty.
    pub fn is_empty(&self) -> Result<bool> {
        self.len().map(|n| n == 0)
    }

    /// The value of `key`, if it has one: Python's `d.get(key)`.
    pub fn get(&self, key: &K) -> Result<Option<V>> {
        self.handle.call("get", &self.key(key)?.bytes)
    }

    /// The value of `key`, or Python's `KeyError`: `d[key]`.
    pub fn get_item(&self, key: &K) -> Result<V> {
        self.get(key)?.ok_or_else(|| Error::Remote(RemoteError::new("KeyError", "key not found")))
    }

    /// Sets `key` to `value`: Python's `d[key] = value`.
    pub fn insert(&self, key: K, value: V) -> Result<()> {
        let value = encode_item(self.handle.link(), &value)?;
        self.handle.call("set", &(self.key(&key)?, value))
    }

    /// Whether `key` is in the dict: Python's `key in d`.
    pub fn contains_key(&self, key: &K) -> Result<bool> {
        self.handle.call("contains", &self.key(key)?.bytes)
    }

    /// Removes `key` (Python's `del d[key]`: `KeyError` if it is missing).
    pub fn delete(&self, key: &K) -> Result<()> {
        self.handle.call("del", &self.key(key)?.bytes)
    }

    /// Removes `key` and returns its value, if it had one: Python's `d.pop(key, None)`.
    pub fn pop(&self, key: &K) -> Result<Option<V>> {
        self.handle.call("pop", &self.key(key)?.bytes)
    }

    /// Removes and returns the last pair inserted (`KeyError` if the dict is empty).
    pub fn popitem(&self) -> Result<(K, V)> {
        let payload = self.handle.call_raw("popitem", &[])?;
        let pair: Option<(Vec<u8>, Vec<u8>)> = crate::link::decode_reply(&payload.bytes)?;
        let (k, v) = pair.ok_or_else(|| {
            Error::Remote(RemoteError::new("KeyError", "popitem(): dictionary is empty"))
        })?;
        Ok((decode_item(self.handle.link(), &k)?, decode_item(self.handle.link(), &v)?))
    }

    /// The value of `key`, set to `default` first if it has none: Python's `setdefault`.
    pub fn setdefault(&self, key: K, default: V) -> Result<V> {
        let value = encode_item(self.handle.link(), &default)?;
        self.handle.call("setdefault", &(self.key(&key)?, value))
    }

    /// Sets every pair of `pairs`, in one round trip: Python's `d.update(pairs)`.
    pub fn update(&self, pairs: impl IntoIterator<Item = (K, V)>) -> Result<()> {
        let pairs: Vec<(Item, Item)> = pairs
            .into_iter()
            .map(|(k, v)| Ok((self.key(&k)?, encode_item(self.handle.link(), &v)?)))
            .collect::<Result<_>>()?;
        self.handle.call("update", &pairs)
    }

    /// Removes every pair.
    pub fn clear(&self) -> Result<()> {
        self.handle.call("clear", &())
    }

    /// Every pair, in insertion order: Python's `d.items()` (a round trip per 1 MiB).
    pub fn items(&self) -> Result<Vec<(K, V)>> {
        let mut out = Vec::new();
        let mut start = 0u64;
        loop {
            let payload = self
                .handle
                .call_raw("items", &postcard::to_allocvec(&start).unwrap_or_default())?;
            let (pairs, next): PairBatch = crate::link::decode_reply(&payload.bytes)?;
            for (k, v) in pairs {
                out.push((
                    decode_item(self.handle.link(), &k)?,
                    decode_item(self.handle.link(), &v)?,
                ));
            }
            match next {
                Some(n) if n > start => start = n,
                _ => return Ok(out),
            }
        }
    }

    /// Every key, in insertion order.
    pub fn keys(&self) -> Result<Vec<K>> {
        Ok(self.items()?.into_iter().map(|(k, _)| k).collect())
    }

    /// Every value, in insertion order.
    pub fn values(&self) -> Result<Vec<V>> {
        Ok(self.items()?.into_iter().map(|(_, v)| v).collect())
    }

    /// Python's `d.copy()`: every pair, as [`items`](DictProxy::items).
    pub fn copy(&self) -> Result<Vec<(K, V)>> {
        self.items()
    }

    /// Sets `key` to `f(its value)` in the manager, with the dict held, so that no other
    /// process's change comes in between: Python's racy `d[k] = d.get(k, 0) + 1`, made atomic.
    /// `f` gets `None` for a missing key; it is a `fn` item or a closure that captures nothing.
    /// Returns the new value.
    pub fn update_with<F>(&self, key: &K, f: F) -> Result<V>
    where
        F: Fn(Option<V>) -> V + Copy + Send + Sync + 'static,
        V: 'static,
    {
        self.handle.apply("update", entry_of(Upsert::<F, V>(f, PhantomData))?, &self.key(key)?)
    }
}

impl<K, V> fmt::Display for DictProxy<K, V>
where
    K: Serialize + DeserializeOwned + fmt::Debug,
    V: Serialize + DeserializeOwned + fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.items() {
            Ok(items) => {
                f.write_str("{")?;
                for (i, (k, v)) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{k:?}: {v:?}")?;
                }
                f.write_str("}")
            }
            Err(e) => write!(f, "<DictProxy: {e}>"),
        }
    }
}

/// A namespace held by a manager: Python's `Namespace` (`manager.Namespace()`), attributes
/// by name with typed values.
///
/// As in Python, an attribute whose name starts with `_` stays in this proxy (and its clones
/// in this process): it is not sent to the manager, and `Display` does not show it. Display
/// prints `Namespace(a=1, b="x")`, attributes sorted, values through the `Debug` they had when
/// set.
pub struct NamespaceProxy {
    handle: Handle,
    local: Arc<Mutex<HashMap<String, Vec<u8>>>>,
}

proxy_impls!(NamespaceProxy, "Namespace");

impl NamespaceProxy {
    fn from_handle(handle: Handle) -> Self {
        NamespaceProxy { handle, local: Arc::default() }
    }

    /// The error of a missing attribute.
    fn missing(name: &str) -> Error {
        Error::Remote(RemoteError::new(
            "AttributeError",
            format!("'Namespace' object has no attribute '{name}'"),
        ))
    }

    /// The attribute `name` (`AttributeError` if it is not set).
    pub fn get<T: DeserializeOwned>(&self, name: &str) -> Result<T> {
        if name.starts_with('_') {
            let local = self.local.lock();
            let bytes = local.get(name).ok_or_else(|| Self::missing(name))?;
            return crate::link::decode_reply(bytes);
        }
        self.handle.call("get", name)
    }

    /// Sets the attribute `name`: Python's `ns.name = value`.
    pub fn set<T: Serialize + fmt::Debug>(&self, name: &str, value: T) -> Result<()> {
        if name.starts_with('_') {
            let bytes = postcard::to_allocvec(&value)
                .map_err(|e| Error::Wire(mp_process::wire::encode_error(e, &value)))?;
            self.local.lock().insert(name.to_string(), bytes);
            return Ok(());
        }
        let item = encode_item(self.handle.link(), &value)?;
        self.handle.call("set", &(name, item, format!("{value:?}")))
    }

    /// Removes the attribute `name` (`AttributeError` if it is not set).
    pub fn delete(&self, name: &str) -> Result<()> {
        if name.starts_with('_') {
            return self.local.lock().remove(name).map(drop).ok_or_else(|| Self::missing(name));
        }
        self.handle.call("del", name)
    }

    /// Whether the attribute `name` is set: Python's `hasattr`.
    pub fn contains(&self, name: &str) -> Result<bool> {
        if name.starts_with('_') {
            return Ok(self.local.lock().contains_key(name));
        }
        self.handle.call("contains", name)
    }
}

impl fmt::Display for NamespaceProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.handle.call::<_, String>("repr", &()) {
            Ok(repr) => f.write_str(&repr),
            Err(e) => write!(f, "<NamespaceProxy: {e}>"),
        }
    }
}

/// One value held by a manager: Python's `ValueProxy` (`manager.Value(typecode, v)`).
/// `Display` prints `Value(7)`.
pub struct ValueProxy<T> {
    handle: Handle,
    _type: PhantomData<fn(T) -> T>,
}

proxy_impls!(ValueProxy<T>, "Value");

impl<T> ValueProxy<T> {
    fn from_handle(handle: Handle) -> Self {
        ValueProxy { handle, _type: PhantomData }
    }
}

impl<T: Serialize + DeserializeOwned> ValueProxy<T> {
    /// The value: Python's `v.value` (or `v.get()`).
    pub fn get(&self) -> Result<T> {
        self.handle.call("get", &())
    }

    /// Replaces the value: Python's `v.value = x` (or `v.set(x)`).
    pub fn set(&self, value: T) -> Result<()> {
        let item = encode_item(self.handle.link(), &value)?;
        self.handle.call("set", &item)
    }

    /// Replaces the value with `f(value)` in the manager, atomically; returns the new value.
    pub fn update_with<F>(&self, f: F) -> Result<T>
    where
        F: Fn(T) -> T + Copy + Send + Sync + 'static,
        T: 'static,
    {
        self.handle.apply("update", entry_of(Update::<F, T>(f, PhantomData))?, &())
    }
}

impl<T: Serialize + DeserializeOwned + fmt::Debug> fmt::Display for ValueProxy<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.get() {
            Ok(v) => write!(f, "Value({v:?})"),
            Err(e) => write!(f, "<ValueProxy: {e}>"),
        }
    }
}

/// A fixed-length array held by a manager: Python's `ArrayProxy` (`manager.Array(typecode,
/// seq)`): `len`, items read and written by index. `Display` prints `array([1, 2])`.
pub struct ArrayProxy<T> {
    handle: Handle,
    _type: PhantomData<fn(T) -> T>,
}

proxy_impls!(ArrayProxy<T>, "Array");

impl<T> ArrayProxy<T> {
    fn from_handle(handle: Handle) -> Self {
        ArrayProxy { handle, _type: PhantomData }
    }
}

impl<T: Serialize + DeserializeOwned> ArrayProxy<T> {
    /// The number of items.
    pub fn len(&self) -> Result<usize> {
        self.handle.call::<_, u64>("len", &()).map(|n| n as usize)
    }

    /// Whether the array is empty.
    pub fn is_empty(&self) -> Result<bool> {
        self.len().map(|n| n == 0)
    }

    /// The item at `index` (negative counts from the end; `IndexError` out of range).
    pub fn get(&self, index: isize) -> Result<T> {
        self.handle.call("get", &(index as i64))
    }

    /// Replaces the item at `index`.
    pub fn set(&self, index: isize, value: T) -> Result<()> {
        let item = encode_item(self.handle.link(), &value)?;
        self.handle.call("set", &(index as i64, item))
    }

    /// A copy of the items, a round trip per 1 MiB.
    pub fn to_vec(&self) -> Result<Vec<T>> {
        read_all(&self.handle, "slice")
    }

    /// Replaces the item at `index` with `f(item)` in the manager, atomically.
    pub fn update_with<F>(&self, index: isize, f: F) -> Result<T>
    where
        F: Fn(T) -> T + Copy + Send + Sync + 'static,
        T: 'static,
    {
        self.handle.apply("update", entry_of(Update::<F, T>(f, PhantomData))?, &(index as i64))
    }
}

impl<T: Serialize + DeserializeOwned + fmt::Debug> fmt::Display for ArrayProxy<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_vec() {
            Ok(items) => {
                f.write_str("array(")?;
                list_repr(f, &items)?;
                f.write_str(")")
            }
            Err(e) => write!(f, "<ArrayProxy: {e}>"),
        }
    }
}

impl Manager {
    /// A list holding `items`: Python's `manager.list(items)`.
    pub fn list<T: Serialize + DeserializeOwned>(
        &self,
        items: impl IntoIterator<Item = T>,
    ) -> Result<ListProxy<T>> {
        let items: Vec<Item> =
            items.into_iter().map(|v| encode_item(self.link(), &v)).collect::<Result<_>>()?;
        Ok(ListProxy::from_handle(self.create("list", &items)?))
    }

    /// An empty dict: Python's `manager.dict()`.
    pub fn dict<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned>(
        &self,
    ) -> Result<DictProxy<K, V>> {
        Ok(DictProxy::from_handle(self.create("dict", &())?))
    }

    /// An empty namespace: Python's `manager.Namespace()`.
    pub fn namespace(&self) -> Result<NamespaceProxy> {
        Ok(NamespaceProxy::from_handle(self.create("Namespace", &())?))
    }

    /// A value holding `value`: Python's `manager.Value(typecode, value)`.
    pub fn value<T: Serialize + DeserializeOwned>(&self, value: T) -> Result<ValueProxy<T>> {
        let item = encode_item(self.link(), &value)?;
        Ok(ValueProxy::from_handle(self.create("Value", &item)?))
    }

    /// An array holding `items`: Python's `manager.Array(typecode, items)`.
    pub fn array<T: Serialize + DeserializeOwned>(
        &self,
        items: impl IntoIterator<Item = T>,
    ) -> Result<ArrayProxy<T>> {
        let items: Vec<Item> =
            items.into_iter().map(|v| encode_item(self.link(), &v)).collect::<Result<_>>()?;
        Ok(ArrayProxy::from_handle(self.create("Array", &items)?))
    }
}
