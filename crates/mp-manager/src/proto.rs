//! The manager's wire: what a client asks ([`Request`]) and what the server answers
//! ([`Reply`]), one postcard message each way on a connection of its own per client thread.
//!
//! Every request carries an id that its reply repeats, so a client never takes the reply of an
//! abandoned call for the answer to a later one. Values stored in the manager's containers
//! travel as [`Item`]s: their postcard bytes and the ids of the manager's objects they refer
//! to (proxies nested in them), which the server holds while it keeps the value.
//!
//! No type here is recursive: an item's bytes are opaque to the server.

use serde::{Deserialize, Serialize};

use crate::error::RemoteError;

/// The version of this wire; a hello of another version is refused.
pub(crate) const VERSION: u32 = 3;

/// The largest hello record (a connection's definition: its socket, lanes and locks).
pub(crate) const MAX_HELLO: usize = 64 * 1024;

/// The largest buffer a connection (either end) or a client thread keeps between calls for
/// the next request or reply; a larger one, grown for a large message, is dropped.
pub(crate) const KEPT_BUFFER: usize = 64 << 10;

/// The most bytes of items one batched read returns (`to_vec`, `items`, ...): the rest comes in
/// further round trips.
pub(crate) const BATCH_BYTES: usize = 1 << 20;

/// A value as the manager stores it: its postcard bytes and the objects it refers to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Item {
    /// The value's postcard encoding.
    pub bytes: Vec<u8>,
    /// The ids of the manager's objects the value holds proxies of.
    pub refs: Vec<u64>,
}

/// An [`Item`] read in place from the bytes of a request: the same wire form, its bytes not
/// copied (a dict's key that is already there needs no copy).
#[derive(Debug, Deserialize)]
pub(crate) struct ItemRef<'a> {
    /// The value's postcard encoding.
    pub bytes: &'a [u8],
    /// The ids of the manager's objects the value holds proxies of.
    pub refs: Vec<u64>,
}

/// What a connection sends first, through the manager's doorway.
#[derive(Serialize, Deserialize)]
pub(crate) struct Hello {
    /// [`VERSION`].
    pub version: u32,
    /// The server's end of the new connection.
    pub conn: mp_queue::Connection,
}

/// What a connection to a remote manager sends first, once authenticated.
#[derive(Serialize, Deserialize)]
pub(crate) struct RemoteHello {
    /// [`VERSION`].
    pub version: u32,
    /// The client process's session: its connections share the references it holds.
    pub session: [u8; 16],
}

/// The remote manager's answer to a [`RemoteHello`].
#[derive(Serialize, Deserialize)]
pub(crate) struct RemoteWelcome {
    /// The manager's identity (proxies of one manager know each other by it).
    pub id: u64,
    /// The manager process's pid.
    pub pid: u32,
    /// The same-host shortcut offered to this connection, if the manager has a side door.
    pub shortcut: Option<Shortcut>,
}

/// The way through a manager's side door, offered in its welcome to one remote connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Shortcut {
    /// The side door's name: its abstract address is `mp-manager-shortcut-` and these bytes in
    /// hex.
    pub door: [u8; 16],
    /// What the client shows at the door: good once, for the offering connection's session.
    pub token: [u8; 16],
}

/// One call, with the id its reply repeats.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Request<'a> {
    /// The call's id, unique on its connection.
    pub id: u64,
    /// What is asked.
    #[serde(borrow)]
    pub call: Call<'a>,
}

/// What a client asks of the manager.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Call<'a> {
    /// Makes an object of `typeid` from `args` and gives the caller a reference to it; the
    /// reply is its id (`u64`).
    Create {
        /// The registered type.
        typeid: &'a str,
        /// The constructor's arguments, postcard.
        args: &'a [u8],
    },
    /// Calls `method` of object `object` with `args` (postcard, the method's own shape).
    Method {
        /// The object.
        object: u64,
        /// The method's name.
        method: &'a str,
        /// Its arguments.
        args: &'a [u8],
    },
    /// Runs a function of this executable (a checked entry) on object `object`, with the
    /// object held: `update_with`, `sort`. Accepted only on the private connections of the
    /// manager's own process tree.
    Apply {
        /// The object.
        object: u64,
        /// What to run on it: `update` (one value) or `sort`.
        what: &'a str,
        /// The entry, as `mp_process::code::Entry::to_parts` gives it.
        entry: (u64, u64),
        /// Arguments of the operation (a key or an index, postcard).
        args: &'a [u8],
    },
    /// One more reference to `object` for the caller's process.
    Incref {
        /// The object.
        object: u64,
    },
    /// One reference fewer.
    Decref {
        /// The object.
        object: u64,
    },
    /// How many objects the manager holds (`u64`), and how many references the caller's
    /// process holds (`u64`): Python's `_number_of_objects`.
    Count,
    /// The manager's process id (`u32`).
    Pid,
    /// Ends the manager once the reply is sent.
    Shutdown,
    /// Stores `value` under `name` for other clients to look up (replacing what was there).
    Publish {
        /// The name.
        name: &'a str,
        /// The value (proxies of this manager inside, held while it is published).
        value: Item,
    },
    /// The value published under `name` (an [`Item`]'s payload), or `NoSuchName`.
    Lookup {
        /// The name.
        name: &'a str,
    },
    /// Removes what was published under `name` (`bool`: whether there was something).
    Unpublish {
        /// The name.
        name: &'a str,
    },
}

/// The answer to one [`Request`].
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Reply {
    /// The request's id (0 if the request could not be read).
    pub id: u64,
    /// The outcome.
    pub result: Result<Payload, RemoteError>,
}

/// What a call returns: postcard bytes of the method's result, and the objects the result
/// refers to, of which the caller's process now holds one reference each.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Payload {
    /// The result, postcard.
    pub bytes: Vec<u8>,
    /// References given to the caller.
    pub refs: Vec<u64>,
}

impl Payload {
    /// A payload of `value`'s encoding and no references.
    pub fn of<T: Serialize + ?Sized>(value: &T) -> Result<Payload, RemoteError> {
        postcard::to_allocvec(value)
            .map(|bytes| Payload { bytes, refs: Vec::new() })
            .map_err(|e| RemoteError::new("TypeError", format!("cannot encode the result: {e}")))
    }

    /// A payload of nothing.
    pub fn unit() -> Payload {
        Payload::default()
    }
}

/// The postcard encoding of `Some(v)` for a `v` encoded as `bytes`: the `Some` tag, then
/// the bytes, in one allocation.
pub(crate) fn some_bytes(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 1);
    out.push(1);
    out.extend_from_slice(bytes);
    out
}

/// Decodes `bytes` as a `T`, the whole of them, or says what was wrong as a `BadRequest`.
pub(crate) fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, RemoteError> {
    match postcard::take_from_bytes::<T>(bytes) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => {
            Err(RemoteError::new("BadRequest", format!("{} bytes after the arguments", rest.len())))
        }
        Err(e) => Err(RemoteError::new("BadRequest", format!("the arguments do not decode: {e}"))),
    }
}
