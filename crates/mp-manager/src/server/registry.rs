//! The types a manager can make, by name: the built-in ones and those a program registers.

use std::collections::HashMap;
use std::sync::Arc;

use crate::error::RemoteError;
use crate::managed::Kinds;
use crate::proto::{Item, decode};
use crate::server::containers::{DictObj, ListObj, NamespaceObj, ValueObj};
use crate::server::objects::{Cx, Served};

/// Makes an object from its constructor's arguments (postcard).
pub(crate) type Ctor =
    Box<dyn Fn(&Cx<'_>, &[u8]) -> Result<Arc<dyn Served>, RemoteError> + Send + Sync>;

/// A registered type: how to make one, and whether clients may ask for one directly.
pub(crate) struct Registered {
    /// The constructor.
    pub ctor: Ctor,
    /// Whether `Create` may name the type (Python's `create_method`); otherwise objects of
    /// it are made only by methods of other objects.
    pub create: bool,
}

/// The types a manager serves: the built-in ones, and those the program registers with
/// [`Registry::register`] in a function given to
/// [`ManagerBuilder::register`](crate::ManagerBuilder::register), which the manager's process
/// runs before it serves (Python's `BaseManager.register`).
pub struct Registry {
    types: HashMap<String, Registered>,
    /// The registered program types' methods, by Rust type.
    pub(crate) kinds: Arc<Kinds>,
    /// The arguments of the setup function running now (an initializer's `initargs`).
    pub(crate) setup_args: Vec<u8>,
    /// Why the setup function that just ran failed, if it did (the manager does not start).
    pub(crate) setup_error: Option<String>,
}

/// Holds the objects `items` refer to (they are about to be stored).
fn hold_all<'a>(cx: &Cx<'_>, items: impl IntoIterator<Item = &'a Item>) -> Result<(), RemoteError> {
    let refs: Vec<u64> = items.into_iter().flat_map(|i| i.refs.iter().copied()).collect();
    cx.store.hold(&refs)
}

impl Registry {
    /// The built-in containers of Python's `SyncManager` (`serve.rs` adds the
    /// synchronisation types of `sync.rs`).
    pub(crate) fn builtin() -> Registry {
        let mut r = Registry {
            types: HashMap::new(),
            kinds: Arc::default(),
            setup_args: Vec::new(),
            setup_error: None,
        };
        r.add(
            "list",
            true,
            Box::new(|cx, args| {
                let items: Vec<Item> = decode(args)?;
                hold_all(cx, &items)?;
                Ok(Arc::new(ListObj::new("list", items)))
            }),
        );
        r.add(
            "Array",
            true,
            Box::new(|cx, args| {
                let items: Vec<Item> = decode(args)?;
                hold_all(cx, &items)?;
                Ok(Arc::new(ListObj::new("Array", items)))
            }),
        );
        r.add(
            "dict",
            true,
            Box::new(|_, args| {
                let () = decode(args)?;
                Ok(Arc::new(DictObj::new()))
            }),
        );
        r.add(
            "Namespace",
            true,
            Box::new(|_, args| {
                let () = decode(args)?;
                Ok(Arc::new(NamespaceObj::new()))
            }),
        );
        r.add(
            "Value",
            true,
            Box::new(|cx, args| {
                let item: Item = decode(args)?;
                cx.hold(&item)?;
                Ok(Arc::new(ValueObj::new(item)))
            }),
        );
        r
    }

    /// Adds (or replaces) the type `typeid`.
    pub(crate) fn add(&mut self, typeid: &str, create: bool, ctor: Ctor) {
        self.types.insert(typeid.to_string(), Registered { ctor, create });
    }

    /// Makes an object of `typeid` for a client's `Create`.
    pub(crate) fn create(
        &self,
        cx: &Cx<'_>,
        typeid: &str,
        args: &[u8],
    ) -> Result<Arc<dyn Served>, RemoteError> {
        match self.types.get(typeid) {
            Some(t) if t.create => (t.ctor)(cx, args),
            Some(_) => Err(RemoteError::new(
                "Refused",
                format!("{typeid} objects are made only by methods of other objects"),
            )),
            None => Err(RemoteError::new(
                "NotExposed",
                format!("the manager has no type {typeid:?} registered"),
            )),
        }
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut typeids: Vec<&str> = self.types.keys().map(String::as_str).collect();
        typeids.sort_unstable();
        f.debug_struct("Registry").field("types", &typeids).finish()
    }
}
