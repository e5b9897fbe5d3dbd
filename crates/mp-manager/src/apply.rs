//! Functions of the program run inside the manager, on an object it holds locked: the
//! atomic read-modify-writes (`update_with`) and typed sorts of the built-in containers, and
//! a barrier's action.
//!
//! The client names the function as a checked `mp_process::code::Entry` (a text offset signed
//! with the process tree's key); the manager, a process of the same tree and executable,
//! checks the tag as the spawn bootstrap does and calls it with one of the contexts below. The
//! function decodes the stored bytes as the proxy's type, runs the user's zero-sized `fn` item
//! or closure on them, and encodes the result. Entries are accepted only on the private
//! connections of the tree (see `link.rs`), never from a network client.

use std::marker::PhantomData;

use mp_process::code::Body;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// What an update runs with: the stored value's bytes (none for a missing dict key), and what
/// it leaves: the new value's bytes, or why there is none.
pub(crate) struct UpdateRun {
    /// The value stored now.
    pub current: Option<Vec<u8>>,
    /// The new value's bytes, or an error message.
    pub result: Result<Vec<u8>, String>,
}

impl UpdateRun {
    /// A run over `current`, with no result yet.
    pub(crate) fn new(current: Option<Vec<u8>>) -> UpdateRun {
        UpdateRun { current, result: Err("the update did not run".to_string()) }
    }
}

/// What a sort runs with: the items' bytes, and the order it found (indices into them).
pub(crate) struct SortRun {
    /// The items, as stored.
    pub items: Vec<Vec<u8>>,
    /// Whether to sort in descending order.
    pub reverse: bool,
    /// The sorted order, or an error message.
    pub order: Result<Vec<usize>, String>,
}

/// What a barrier's action runs with: nothing (it is the program's own code, run in the
/// manager by the last party to arrive).
pub(crate) struct ActionRun;

/// A barrier's action `F: Fn()`.
#[derive(Clone, Copy)]
pub(crate) struct BarrierAction<F>(pub F);

impl<F: Fn() + Copy + Send + Sync> Body<ActionRun> for BarrierAction<F> {
    fn run(self, _: &mut ActionRun) {
        (self.0)();
    }
}

/// An update `F: Fn(V) -> V` of a value that must exist.
pub(crate) struct Update<F, V>(pub F, pub PhantomData<fn(V) -> V>);

/// An update `F: Fn(Option<V>) -> V` of a value that may be missing (a dict's key).
pub(crate) struct Upsert<F, V>(pub F, pub PhantomData<fn(V) -> V>);

/// A sort of items of type `T` by their `Ord`.
pub(crate) struct Sort<T>(pub PhantomData<fn(T) -> T>);

macro_rules! copy_zst {
    ($($name:ident<$($p:ident),*>),*) => {$(
        impl<$($p),*> Clone for $name<$($p),*> where $name<$($p),*>: Copy {
            fn clone(&self) -> Self {
                *self
            }
        }
    )*};
}
copy_zst!(Update<F, V>, Upsert<F, V>, Sort<T>);
impl<F: Copy, V> Copy for Update<F, V> {}
impl<F: Copy, V> Copy for Upsert<F, V> {}
impl<T> Copy for Sort<T> {}

/// Decodes `bytes` as a whole `V`.
fn decode<V: DeserializeOwned>(bytes: &[u8]) -> Result<V, String> {
    match postcard::take_from_bytes::<V>(bytes) {
        Ok((v, [])) => Ok(v),
        Ok(_) => Err(format!("the stored value is not a {}", std::any::type_name::<V>())),
        Err(e) => Err(format!("the stored value is not a {}: {e}", std::any::type_name::<V>())),
    }
}

/// Encodes the new value.
fn encode<V: Serialize>(v: &V) -> Result<Vec<u8>, String> {
    postcard::to_allocvec(v).map_err(|e| format!("cannot encode the new value: {e}"))
}

impl<F, V> Body<UpdateRun> for Update<F, V>
where
    F: Fn(V) -> V + Copy + Send + Sync,
    V: Serialize + DeserializeOwned,
{
    fn run(self, run: &mut UpdateRun) {
        run.result = match &run.current {
            Some(bytes) => decode::<V>(bytes).and_then(|v| encode(&(self.0)(v))),
            None => Err("there is no value to update".to_string()),
        };
    }
}

impl<F, V> Body<UpdateRun> for Upsert<F, V>
where
    F: Fn(Option<V>) -> V + Copy + Send + Sync,
    V: Serialize + DeserializeOwned,
{
    fn run(self, run: &mut UpdateRun) {
        let current = match &run.current {
            Some(bytes) => decode::<V>(bytes).map(Some),
            None => Ok(None),
        };
        run.result = current.and_then(|v| encode(&(self.0)(v)));
    }
}

impl<T> Body<SortRun> for Sort<T>
where
    T: Ord + DeserializeOwned,
{
    fn run(self, run: &mut SortRun) {
        let decoded: Result<Vec<T>, String> = run.items.iter().map(|b| decode::<T>(b)).collect();
        run.order = decoded.map(|items| {
            let mut order: Vec<usize> = (0..items.len()).collect();
            // Stable, as Python's sort; `reverse` keeps equal items in their order, as Python's
            // `sort(reverse=True)` does.
            if run.reverse {
                order.sort_by(|&a, &b| items[b].cmp(&items[a]));
            } else {
                order.sort_by(|&a, &b| items[a].cmp(&items[b]));
            }
            order
        });
    }
}
