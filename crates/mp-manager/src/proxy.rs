//! What every proxy is: a reference to one object of one manager ([`Core`]), and how proxies
//! and the values that hold them cross (to the manager, into other processes, back).
//!
//! # References
//! The manager counts references per client process (and per container holding a proxy).
//! A proxy made in a process, or received from the manager inside a value, holds one
//! reference of that process; clones share it, and dropping the last clone gives it back. A
//! proxy that reaches another process (moved into a forked child, or decoded from a message)
//! takes a reference of that process the first time it is used there (CPython increfs when a
//! proxy is unpickled or after a fork), and gives it back when its last clone in that process
//! is dropped. The manager gives back every reference of a process that ends, however it ends.
//!
//! # Crossing
//! A proxy serialises in one of two forms. Inside a value sent to its own manager (an item
//! stored in a list, a dict...), as its object id alone, and the id is listed beside the bytes
//! so the manager holds the object while it stores the value ([`encode_item`]); values read
//! back rebuild such proxies on the reader's link ([`decode_item`]). Everywhere else (process
//! arguments, queue and pipe messages, pool tasks: `mp_process::fdpass` encoders) with the
//! manager's link, a shared object that carries the doorway.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use mp_process::fdpass::refuse;
use mp_process::os;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, RemoteError, Result};
use crate::link::{Link, decode_reply};
use crate::proto::{Call, Item, KEPT_BUFFER, Payload};

thread_local! {
    /// The buffer this thread's proxy calls encode their arguments in (see `Core::call`).
    static ARGS: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// A reference to one object of a manager, shared by a proxy's clones in one process.
pub(crate) struct Core {
    /// The way to the manager.
    link: Link,
    /// The object's id in the manager.
    id: u64,
    /// The object's registered type.
    typeid: String,
    /// The pid whose reference this handle holds (0: none yet).
    owner: AtomicU32,
}

impl Core {
    /// The manager's id of the object.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// The link to the manager.
    pub(crate) fn link(&self) -> &Link {
        &self.link
    }

    /// Makes sure this process holds a reference to the object (see the module's docs).
    fn adopt(&self) -> Result<()> {
        let me = os::pid();
        let was = self.owner.load(Ordering::Acquire);
        if was == me {
            return Ok(());
        }
        if self.owner.compare_exchange(was, me, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            if let Err(e) = self.link.incref(self.id) {
                self.owner.store(was, Ordering::Release);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Calls `method` on the object with `args` (postcard).
    pub(crate) fn call_raw(&self, method: &str, args: &[u8]) -> Result<Payload> {
        self.adopt()?;
        self.link.call(Call::Method { object: self.id, method, args })
    }

    /// Calls `method` with `args` encoded, and decodes the result as an `R`. A result that
    /// holds proxies of this manager rebuilds them here.
    pub(crate) fn call<A: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        method: &str,
        args: &A,
    ) -> Result<R> {
        // The arguments are encoded in this thread's buffer, kept between calls (taken out
        // while in use, so a call made meanwhile, by a `Serialize` impl say, makes its own).
        // (During thread teardown the buffer may be gone: then the call makes its own.)
        let mut buf = ARGS.try_with(Cell::take).unwrap_or_default();
        buf.clear();
        let encoded = postcard::to_extend(args, buf)
            .map_err(|e| Error::Wire(mp_process::wire::encode_error(e, args)))?;
        let result = self.call_raw(method, &encoded);
        if encoded.capacity() <= KEPT_BUFFER {
            let _ = ARGS.try_with(|kept| kept.set(encoded));
        }
        decode_payload(&self.link, result?)
    }

    /// Runs a checked entry on the object in the manager (`update_with`, `sort`).
    pub(crate) fn apply<A: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        what: &str,
        entry: (u64, u64),
        args: &A,
    ) -> Result<R> {
        self.adopt()?;
        let args = postcard::to_allocvec(args)
            .map_err(|e| Error::Wire(mp_process::wire::encode_error(e, args)))?;
        let payload = self.link.call(Call::Apply { object: self.id, what, entry, args: &args })?;
        decode_payload(&self.link, payload)
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        if *self.owner.get_mut() == os::pid() {
            // The manager may be gone already: then there is nothing to give back.
            let _ = self.link.decref(self.id);
        }
    }
}

/// A reference to a manager's object, as every proxy holds one: clones share it.
#[derive(Clone)]
pub(crate) struct Handle(pub(crate) Arc<Core>);

impl Handle {
    /// A handle on object `id` of `typeid`, whose reference this process already holds (the
    /// manager gave it in a reply).
    pub(crate) fn owned(link: Link, id: u64, typeid: &str) -> Handle {
        Handle(Arc::new(Core {
            link,
            id,
            typeid: typeid.to_string(),
            owner: AtomicU32::new(os::pid()),
        }))
    }

    /// A handle on object `id` for which this process holds no reference yet.
    fn unowned(link: Link, id: u64, typeid: String) -> Handle {
        Handle(Arc::new(Core { link, id, typeid, owner: AtomicU32::new(0) }))
    }

    /// Checks that the handle is on an object of `typeid`.
    pub(crate) fn expect<E: serde::de::Error>(self, typeid: &str) -> std::result::Result<Self, E> {
        if self.0.typeid == typeid {
            Ok(self)
        } else {
            Err(refuse(format!(
                "a proxy of a manager's {} was received where one of a {typeid} was expected",
                self.0.typeid
            )))
        }
    }
}

impl std::ops::Deref for Handle {
    type Target = Core;
    fn deref(&self) -> &Core {
        &self.0
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} proxy, object {:#x} of manager {:#x}>", self.typeid, self.id, self.link.id())
    }
}

/// How a proxy crosses (see the module's docs).
#[derive(Serialize, Deserialize)]
enum Wire {
    /// Inside a value sent to (or read from) its own manager: the object's id.
    Local { id: u64, typeid: String },
    /// Everywhere else: the manager's link too.
    Linked { link: Link, id: u64, typeid: String },
}

/// The reply giving the caller a reference to the new object `id` of `typeid`: a proxy in
/// its manager's form, which the caller rebuilds on its link (see [`decode_payload`]).
pub(crate) fn proxy_payload(id: u64, typeid: &str) -> Result<Payload, RemoteError> {
    let bytes = postcard::to_allocvec(&Wire::Local { id, typeid: typeid.to_string() })
        .map_err(|e| RemoteError::new("TypeError", format!("cannot encode a proxy: {e}")))?;
    Ok(Payload { bytes, refs: vec![id] })
}

/// The encoding in progress of a value sent to a manager: which manager, and the objects of it
/// the value holds proxies of.
struct Encoding {
    manager: u64,
    refs: Vec<u64>,
}

thread_local! {
    /// Set while [`encode_item`] runs.
    static ENCODING: RefCell<Option<Encoding>> = const { RefCell::new(None) };
    /// Set while [`decode_item`] runs: the link proxies read back are rebuilt on.
    static DECODING: RefCell<Option<Link>> = const { RefCell::new(None) };
}

/// Restores a thread-local's previous value when dropped (calls may nest).
struct Restore<T: 'static> {
    key: &'static std::thread::LocalKey<RefCell<Option<T>>>,
    previous: Option<Option<T>>,
}

impl<T: 'static> Drop for Restore<T> {
    fn drop(&mut self) {
        let previous = self.previous.take().flatten();
        self.key.with(|cell| *cell.borrow_mut() = previous);
    }
}

/// Sets a thread-local for the guard's life.
fn set<T: 'static>(
    key: &'static std::thread::LocalKey<RefCell<Option<T>>>,
    value: T,
) -> Restore<T> {
    let previous = key.with(|cell| cell.borrow_mut().replace(value));
    Restore { key, previous: Some(previous) }
}

/// Encodes `value` to be stored by the manager behind `link`: its bytes and the objects of
/// that manager it holds proxies of.
pub(crate) fn encode_item<T: Serialize + ?Sized>(link: &Link, value: &T) -> Result<Item> {
    let guard = set(&ENCODING, Encoding { manager: link.id(), refs: Vec::new() });
    let bytes = postcard::to_allocvec(value)
        .map_err(|e| Error::Wire(mp_process::wire::encode_error(e, value)));
    let refs = ENCODING.with(|cell| cell.borrow_mut().take().map(|e| e.refs).unwrap_or_default());
    drop(guard);
    Ok(Item { bytes: bytes?, refs })
}

/// Decodes a value read from the manager behind `link`, rebuilding the proxies it holds
/// (whose references the manager gave this process with the reply).
pub(crate) fn decode_item<T: DeserializeOwned>(link: &Link, bytes: &[u8]) -> Result<T> {
    let _guard = set(&DECODING, link.clone());
    decode_reply(bytes)
}

/// Decodes a call's result, rebuilding the proxies it holds.
pub(crate) fn decode_payload<R: DeserializeOwned>(link: &Link, payload: Payload) -> Result<R> {
    if payload.refs.is_empty() {
        return decode_reply(&payload.bytes);
    }
    decode_item(link, &payload.bytes)
}

impl Serialize for Handle {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let local = ENCODING.with(|cell| match cell.borrow_mut().as_mut() {
            Some(encoding) if encoding.manager == self.link.id() => {
                encoding.refs.push(self.id);
                true
            }
            _ => false,
        });
        if local {
            Wire::Local { id: self.id, typeid: self.typeid.clone() }.serialize(s)
        } else {
            Wire::Linked { link: self.link.clone(), id: self.id, typeid: self.typeid.clone() }
                .serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for Handle {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        match Wire::deserialize(d)? {
            Wire::Local { id, typeid } => {
                let link = DECODING.with(|cell| cell.borrow().clone()).ok_or_else(|| {
                    refuse::<D::Error>(
                        "a proxy in its manager's form was read outside a value of that manager",
                    )
                })?;
                Ok(Handle::owned(link, id, &typeid))
            }
            Wire::Linked { link, id, typeid } => Ok(Handle::unowned(link, id, typeid)),
        }
    }
}
