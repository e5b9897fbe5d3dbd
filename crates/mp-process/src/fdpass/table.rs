//! What shared objects are, as data: identities, kinds, the trait every shareable object
//! implements, lists of objects, the object table's wire form, and a receiver's cache. What
//! is done with them (defining, rebuilding, the registry) is in `objects`.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::wire::WireError;

/// The identity mp gives a shared object when it is made; its handles in every process carry
/// it.
pub type ObjectId = u64;

/// How deep definitions may nest (a queue holds locks: 2).
pub const MAX_DEPTH: u8 = 8;

/// The most definitions one table may hold.
pub(super) const MAX_DEFS: usize = 1024;

/// The most objects an [`ObjectCache`] holds at once.
pub const MAX_CACHED: usize = 4096;

/// The longest definition, in bytes.
pub(super) const MAX_DEF_BYTES: usize = 64 * 1024;

/// The longest kind name.
pub(super) const MAX_NAME: usize = 128;

/// The most objects one definition may hold.
pub(super) const MAX_INNER: usize = 64;

/// Hashes `u64` keys that no adversary chooses freely: object identities (random already)
/// and counters (a pool's job ids), which one multiplication by the golden ratio spreads
/// (Fibonacci hashing) at a fraction of SipHash's cost. (A peer that picks colliding
/// identities slows its own table down, which holds at most 1,024 definitions (`MAX_DEFS`); a
/// worker's cache is filled by its own pool.) Use it as `BuildHasherDefault<IdHasher>`.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// A map keyed by object identity.
pub(super) type IdMap<V> = HashMap<ObjectId, V, std::hash::BuildHasherDefault<IdHasher>>;

/// A new object identity: the pid, a per-process counter and the clock, mixed; never 0.
pub fn new_object_id() -> ObjectId {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Realtime);
    let pid = u64::from(crate::os::pid());
    let mut x =
        pid << 32 ^ count ^ (now.tv_nsec as u64) << 16 ^ (now.tv_sec as u64).rotate_left(40);
    // splitmix64's finaliser spreads the bits.
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    (x ^ (x >> 31)).max(1)
}

/// The 64-bit FNV-1a hash of `text`: a fingerprint of a kind or type name.
pub const fn fingerprint(text: &str) -> u64 {
    let bytes = text.as_bytes();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    h
}

/// What kind of object a definition holds: a name for messages and its fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    /// The name, as errors show it ("mp_sync::Lock").
    pub name: &'static str,
    /// [`fingerprint`] of the name.
    pub fingerprint: u64,
}

impl Kind {
    /// The kind called `name`.
    pub const fn new(name: &'static str) -> Kind {
        Kind { name, fingerprint: fingerprint(name) }
    }
}

/// A handle on something several processes share, which crosses between them as an object:
/// defined once per receiver where the channel allows it, rebuilt once per process.
///
/// Implementors keep the object behind an `Arc` and serialise it with [`serialize_object`](super::serialize_object)
/// and [`deserialize_object`](super::deserialize_object). The first descriptor [`describe`](SharedObject::describe)
/// serialises must be the object's memory (its segment): a process keeps one handle per such
/// descriptor's device and inode.
///
/// # Safety
///
/// The crates above trust the memory of their objects (a lock's segment holds pointers of
/// glibc's robust list): a type that claimed their kind could rebuild their memory as
/// something safe code can write. So an implementor promises that:
/// 1. the name of [`KIND`](SharedObject::KIND) is its own: no other type implements the trait
///    with it (names are written `crate::Type`);
/// 2. [`rebuild`](SharedObject::rebuild) makes a handle only from a definition its own
///    [`describe`](SharedObject::describe) can write, and checks what it receives before it
///    trusts it.
///
/// Claiming a kind is that promise, so a plain `impl` does not compile:
///
/// ```compile_fail,E0200
/// use mp_process::fdpass::{Kind, ObjectId, SharedObject};
/// struct Fake(ObjectId);
/// impl SharedObject for Fake {
///     const KIND: Kind = Kind::new("mp_sync::Lock");
///     fn object_id(&self) -> ObjectId {
///         self.0
///     }
///     fn describe<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
///         s.serialize_unit()
///     }
///     fn rebuild<'de, D: serde::Deserializer<'de>>(id: ObjectId, d: D) -> Result<Self, D::Error> {
///         <() as serde::Deserialize>::deserialize(d).map(|()| Fake(id))
///     }
/// }
/// ```
#[allow(unsafe_code)]
pub unsafe trait SharedObject: Send + Sync + Sized + 'static {
    /// The kind, checked when a definition is received.
    const KIND: Kind;
    /// The object's identity (see [`new_object_id`]): the same for every handle on it.
    fn object_id(&self) -> ObjectId;
    /// Serialises the definition: descriptors through [`serde_fd`](super::serde_fd) or
    /// [`FdRef`](super::FdRef), the objects it holds through [`serialize_object`](super::serialize_object).
    fn describe<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error>;
    /// Rebuilds the object from a definition [`describe`](SharedObject::describe) wrote,
    /// checking everything it receives: the definition comes from another process.
    fn rebuild<'de, D: Deserializer<'de>>(id: ObjectId, d: D) -> Result<Self, D::Error>;
}

/// A [`SharedObject`] of any type, as lists of objects hold it.
pub(crate) trait AnyShared: Send + Sync + 'static {
    /// See [`SharedObject::object_id`].
    fn id(&self) -> ObjectId;
    /// See [`SharedObject::KIND`].
    fn kind(&self) -> Kind;
    /// The definition: its bytes, its descriptors and the objects it refers to.
    fn describe(&self) -> Result<(Vec<u8>, Vec<OwnedFd>, ObjectList), WireError>;
    /// The object as `Any`, for the registry.
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
}

/// The objects a value (or a run of values) refers to, in the order of their indices.
#[derive(Default, Clone)]
pub struct ObjectList {
    /// The objects.
    pub(super) items: Vec<Arc<dyn AnyShared>>,
    /// Their identities, in the same order.
    pub(super) ids: Vec<ObjectId>,
    /// Their positions by identity, once the list is long enough to want it.
    pub(super) index: IdMap<u32>,
}

/// Below this many objects a list is searched in order.
pub(super) const LINEAR: usize = 16;

impl ObjectList {
    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// How many objects it holds.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Their identities, in order: the scope of the values encoded with this list.
    pub fn ids(&self) -> &[ObjectId] {
        &self.ids
    }

    /// The position of object `id`, adding it (made by `make`) if it is not there yet.
    pub(crate) fn insert_with(
        &mut self,
        id: ObjectId,
        make: impl FnOnce() -> Arc<dyn AnyShared>,
    ) -> u32 {
        let found = if self.items.len() <= LINEAR {
            self.ids.iter().position(|&o| o == id).map(|i| i as u32)
        } else {
            self.index.get(&id).copied()
        };
        if let Some(i) = found {
            return i;
        }
        let at = self.items.len() as u32;
        self.items.push(make());
        self.ids.push(id);
        if self.ids.len() == LINEAR + 1 {
            self.index = self.ids.iter().enumerate().map(|(i, &o)| (o, i as u32)).collect();
        } else if self.ids.len() > LINEAR + 1 {
            self.index.insert(id, at);
        }
        at
    }
}

impl fmt::Debug for ObjectList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.items.iter().map(|o| (o.kind().name, o.id()))).finish()
    }
}

/// An object table as it crosses.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct TableWire {
    /// How many of the descriptors are the value's own (they come first).
    pub value_fds: u32,
    /// The value's scope.
    pub scope: Vec<ObjectId>,
    /// Objects the receiver may forget.
    pub releases: Vec<ObjectId>,
    /// Definitions; their descriptors follow the value's, in order.
    pub defs: Vec<DefWire>,
}

/// One object's definition as it crosses.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct DefWire {
    pub id: ObjectId,
    /// [`Kind::fingerprint`].
    pub kind: u64,
    /// [`Kind::name`].
    pub name: String,
    /// What [`SharedObject::describe`] wrote.
    pub bytes: Vec<u8>,
    /// How many descriptors it takes.
    pub fds: u32,
    /// The scope of its bytes.
    pub inner: Vec<ObjectId>,
}

/// A definition received and not rebuilt yet.
pub(super) struct RawObject {
    pub(super) kind: u64,
    pub(super) name: String,
    pub(super) bytes: Vec<u8>,
    pub(super) fds: Vec<OwnedFd>,
    pub(super) inner: Vec<ObjectId>,
}

/// An object a receiver knows.
pub(super) enum Entry {
    /// Defined, not yet needed.
    Raw(RawObject),
    /// Being rebuilt (a definition that reaches this again refers to itself).
    Busy,
    /// Rebuilt (or found in this process).
    Ready { obj: Arc<dyn Any + Send + Sync>, name: String },
    /// Could not be rebuilt, for this reason.
    Failed(String),
}

/// The objects a receiver has been sent: definitions not yet needed, and objects rebuilt.
///
/// A definition is rebuilt when a value first refers to it, so one that no value takes costs
/// only its descriptors, until it is released.
#[derive(Default)]
pub struct ObjectCache {
    pub(super) entries: IdMap<Entry>,
}

impl fmt::Debug for ObjectCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectCache").field("objects", &self.entries.len()).finish()
    }
}
