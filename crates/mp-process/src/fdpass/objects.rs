//! Shared objects (queues, locks, shared memory): handles on memory and descriptors that
//! several processes share, with an identity that mp assigns.
//!
//! # How an object crosses
//! In the bytes of a value, an object is an index into the value's *scope*, a list of object
//! identities. The object's *definition* (its own bytes and descriptors, and the identities of
//! the objects it holds, such as a queue's locks) travels in an object table:
//!
//! * In the self-contained form of [`encode_with_fds`](super::encode_with_fds) (pipes,
//!   queues, a child's arguments, results), every object the value refers to is defined in
//!   the table that follows the value.
//! * On a channel whose receiver keeps an [`ObjectCache`] for its whole life, in the order the
//!   sender sends (a pool's worker), the sender keeps a [`PeerObjects`] and defines an object
//!   once: [`PeerObjects::prepare`] gives the frames of definitions to send before a message
//!   that refers to new objects, and later messages only name it. The sender keeps no strong
//!   reference; when its last handle on an object is gone, its next frame tells the receiver
//!   to release it, and the cache is bounded (the least recently used are released first).
//!   No acknowledgement is needed: the stream is ordered, a release is only sent once no
//!   queued message can refer to the object, and the cache lives exactly as long as the
//!   stream.
//!
//! # One handle per object in a process
//! A received object is rebuilt at most once per process: a registry, keyed by the object's
//! kind and the device and inode of its first descriptor (its memory, which the kernel
//! vouches for; mp's identity is only a name its sender chose), hands out the handle this
//! process already has, and the received descriptors are closed. Clones of a handle share
//! one set of descriptors.
//!
//! # Checks
//! A definition names its kind; a definition of another kind than the type being decoded is
//! refused ("a Queue was received where a Lock was expected"), and so is a reference to an
//! object that was never defined, one whose definition refers to itself, definitions nested
//! more than [`MAX_DEPTH`] deep, and tables past their limits. The object type's own
//! [`SharedObject::rebuild`] checks what it receives (sizes, seals, descriptor types).

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::context::{self, Context, Mode, fail, record, with_context};
use super::frame::MAX_FDS_PER_FRAME;
use super::table::*;
use crate::wire::WireError;

/// Serialises a definition through [`SharedObject::describe`].
struct Describe<'a, T>(&'a T);

impl<T: SharedObject> Serialize for Describe<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.describe(s)
    }
}

impl<T: SharedObject> AnyShared for T {
    fn id(&self) -> ObjectId {
        self.object_id()
    }

    fn kind(&self) -> Kind {
        T::KIND
    }

    fn describe(&self) -> Result<(Vec<u8>, Vec<OwnedFd>, ObjectList), WireError> {
        let mut inner = ObjectList::default();
        let (bytes, fds) = context::encode_with_objects(
            &Describe(self),
            postcard::ser_flavors::AllocVec::new(),
            &mut inner,
        )?;
        Ok((bytes, fds, inner))
    }

    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }
}

/// Serialises a shared object as its index in the value's scope (inside mp's fd-carrying
/// encoders only: elsewhere this fails, as a descriptor does).
pub fn serialize_object<T: SharedObject, S: Serializer>(
    obj: &Arc<T>,
    s: S,
) -> Result<S::Ok, S::Error> {
    let index = stash_object(obj).map_err(<S::Error as serde::ser::Error>::custom)?;
    s.serialize_u32(index)
}

/// Deserialises a shared object written by [`serialize_object`]: the handle this process
/// already has on it, or one rebuilt from its definition.
pub fn deserialize_object<'de, T: SharedObject, D: Deserializer<'de>>(
    d: D,
) -> Result<Arc<T>, D::Error> {
    let index = u32::deserialize(d)?;
    resolve_object::<T>(index).map_err(<D::Error as serde::de::Error>::custom)
}

/// Records `obj` in the active sink (once per encode) and returns its index there.
#[inline]
pub(super) fn stash_object<T: SharedObject>(obj: &Arc<T>) -> Result<u32, String> {
    with_context(|ctx| {
        let result = match &mut ctx.mode {
            Mode::Sink { objects, .. } => {
                Ok(objects.insert_with(obj.object_id(), || Arc::clone(obj) as Arc<dyn AnyShared>))
            }
            Mode::Idle | Mode::Source(_) => Err(WireError::NoFdContext),
        };
        result.map_err(|err| fail(ctx, err))
    })
    .unwrap_or_else(|| Err(WireError::NoFdContext.to_string()))
}

/// What [`resolve_object`] found under the context's borrow.
enum Found<T> {
    /// The object, or why there is none.
    Done(Result<Arc<T>, WireError>),
    /// Its definition, to rebuild outside the borrow with the cache taken out of the context.
    Rebuild(ObjectId, ObjectCache, u8),
}

/// The object at `index` of the active source's scope, rebuilt if this is its first use.
#[inline]
pub(super) fn resolve_object<T: SharedObject>(index: u32) -> Result<Arc<T>, String> {
    // The common case, small: an object this decode (or session) resolved already.
    let resolved = with_context(|ctx| match &ctx.mode {
        Mode::Source(source) => match source.resolved.get(index as usize) {
            Some(Some(obj)) => Arc::clone(obj).downcast::<T>().ok(),
            _ => None,
        },
        Mode::Idle | Mode::Sink { .. } => None,
    });
    if let Some(Some(obj)) = resolved {
        return Ok(obj);
    }
    let found = with_context(|ctx| match &mut ctx.mode {
        Mode::Source(source) => {
            let i = usize::try_from(index).unwrap_or(usize::MAX);
            if let Some(Some(obj)) = source.resolved.get(i) {
                if let Ok(obj) = Arc::clone(obj).downcast::<T>() {
                    return Found::Done(Ok(obj));
                }
            }
            match source.scope.get(i).copied() {
                Some(id) => match source.cache.ready::<T>(id) {
                    Some(Ok(obj)) => {
                        if source.resolved.len() < source.scope.len() {
                            source.resolved.resize(source.scope.len(), None);
                        }
                        if let Some(slot) = source.resolved.get_mut(i) {
                            *slot = Some(obj.clone());
                        }
                        Found::Done(Ok(obj))
                    }
                    Some(Err(e)) => Found::Done(Err(e)),
                    None => Found::Rebuild(id, std::mem::take(&mut source.cache), source.depth),
                },
                None => Found::Done(Err(WireError::Refused(format!(
                    "the message refers to object {index}, and has {} objects",
                    source.scope.len()
                )))),
            }
        }
        Mode::Idle | Mode::Sink { .. } => Found::Done(Err(WireError::NoFdContext)),
    });
    let result = match found {
        None => return Err(WireError::NoFdContext.to_string()),
        Some(Found::Done(result)) => result,
        Some(Found::Rebuild(id, mut cache, depth)) => {
            // The rebuild is a nested decode: it runs with the context not borrowed.
            let result = cache.resolve::<T>(id, depth);
            let _ = with_context(|ctx| {
                if let Mode::Source(source) = &mut ctx.mode {
                    source.cache = cache;
                }
            });
            result
        }
    };
    result.map_err(record)
}

impl ObjectCache {
    /// How many objects it knows.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it knows none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Admits a frame of definitions that [`PeerObjects::prepare`] made.
    ///
    /// Errors: a damaged table, descriptors the table does not account for, or a cache past
    /// [`MAX_CACHED`] objects. The cache is then as the frame found it, but for releases.
    pub fn admit_frame(&mut self, bytes: &[u8], fds: Vec<OwnedFd>) -> Result<(), WireError> {
        let table: TableWire = match postcard::take_from_bytes(bytes) {
            Ok((table, [])) => table,
            Ok(_) | Err(_) => {
                return Err(WireError::Refused("a frame of object definitions is damaged".into()));
            }
        };
        if table.value_fds != 0 || !table.scope.is_empty() {
            return Err(WireError::Refused("a frame of object definitions holds a value".into()));
        }
        self.admit(table.releases, table.defs, fds)
    }

    /// Forgets `releases`, then adds `defs`, which take `fds` in order (exactly).
    pub(super) fn admit(
        &mut self,
        releases: Vec<ObjectId>,
        defs: Vec<DefWire>,
        fds: Vec<OwnedFd>,
    ) -> Result<(), WireError> {
        for id in releases {
            self.entries.remove(&id);
        }
        if defs.len() > MAX_DEFS {
            return Err(WireError::Refused(format!(
                "{} object definitions in one table (at most {MAX_DEFS})",
                defs.len()
            )));
        }
        let announced = defs.iter().map(|d| d.fds as usize).fold(0usize, usize::saturating_add);
        if announced != fds.len() {
            return Err(WireError::FdCountMismatch { announced, received: fds.len() });
        }
        for d in &defs {
            if d.name.len() > MAX_NAME || d.inner.len() > MAX_INNER || d.bytes.len() > MAX_DEF_BYTES
            {
                return Err(WireError::Refused(format!(
                    "an object definition is past its limits ({} bytes, {} objects)",
                    d.bytes.len(),
                    d.inner.len()
                )));
            }
        }
        let new = defs.iter().filter(|d| !self.entries.contains_key(&d.id)).count();
        if self.entries.len().saturating_add(new) > MAX_CACHED {
            return Err(WireError::Refused(format!(
                "more than {MAX_CACHED} shared objects defined to one receiver"
            )));
        }
        let mut fds = fds.into_iter();
        for d in defs {
            let own: Vec<OwnedFd> = fds.by_ref().take(d.fds as usize).collect();
            let raw =
                RawObject { kind: d.kind, name: d.name, bytes: d.bytes, fds: own, inner: d.inner };
            self.entries.insert(d.id, Entry::Raw(raw));
        }
        Ok(())
    }

    /// The object `id`, of type `T`, if the cache has it rebuilt already (or why it cannot
    /// be had); `None` if it is a definition still to be rebuilt (see
    /// [`ObjectCache::resolve`]).
    pub(super) fn ready<T: SharedObject>(&self, id: ObjectId) -> Option<Result<Arc<T>, WireError>> {
        match self.entries.get(&id) {
            Some(Entry::Ready { obj, name }) => {
                Some(Arc::clone(obj).downcast::<T>().map_err(|_| wrong::<T>(name)))
            }
            Some(Entry::Raw(raw)) if raw.kind == T::KIND.fingerprint => None,
            None => Some(Err(WireError::Refused(format!(
                "the message refers to shared object {id:#018x}, which was never defined to \
                 this process (or was released)"
            )))),
            Some(Entry::Busy) => Some(Err(WireError::Refused(
                "a shared object's definition refers to itself".into(),
            ))),
            Some(Entry::Failed(why)) => Some(Err(WireError::Refused(why.clone()))),
            Some(Entry::Raw(raw)) => Some(Err(wrong::<T>(&raw.name))),
        }
    }

    /// The object `id`, of type `T`: the one this cache or this process has already, or one
    /// rebuilt from its definition. `depth` is how many definitions enclose this one.
    pub(super) fn resolve<T: SharedObject>(
        &mut self,
        id: ObjectId,
        depth: u8,
    ) -> Result<Arc<T>, WireError> {
        let wrong = |got: &str| wrong::<T>(got);
        match self.entries.get(&id) {
            None => {
                return Err(WireError::Refused(format!(
                    "the message refers to shared object {id:#018x}, which was never defined to \
                     this process (or was released)"
                )));
            }
            Some(Entry::Busy) => {
                return Err(WireError::Refused(
                    "a shared object's definition refers to itself".into(),
                ));
            }
            Some(Entry::Failed(why)) => return Err(WireError::Refused(why.clone())),
            Some(Entry::Ready { obj, name }) => {
                return Arc::clone(obj).downcast::<T>().map_err(|_| wrong(name));
            }
            Some(Entry::Raw(raw)) if raw.kind != T::KIND.fingerprint => {
                return Err(wrong(&raw.name));
            }
            Some(Entry::Raw(_)) => {}
        }
        let Some(Entry::Raw(raw)) = self.entries.insert(id, Entry::Busy) else {
            return Err(WireError::Refused("a shared object vanished while it was rebuilt".into()));
        };
        let name = raw.name;
        let key = raw.fds.first().and_then(|fd| identity(T::KIND, fd.as_fd()));
        if let Some(found) = key.and_then(registry::find::<T>) {
            self.entries.insert(id, Entry::Ready { obj: found.clone(), name });
            return found.downcast::<T>().map_err(|_| wrong("object of another type"));
        }
        match self.rebuild::<T>(id, raw.bytes, raw.fds, raw.inner, depth) {
            Ok(obj) => {
                let obj = Arc::new(obj);
                let any: Arc<dyn Any + Send + Sync> = obj.clone();
                if let Some(key) = key {
                    registry::add(key, &any);
                }
                self.entries.insert(id, Entry::Ready { obj: any, name });
                Ok(obj)
            }
            Err(e) => {
                let why = format!("a received {name} was refused: {e}");
                self.entries.insert(id, Entry::Failed(why.clone()));
                Err(WireError::Refused(why))
            }
        }
    }

    /// Rebuilds a `T` from its definition, with this cache lent to the nested decode.
    fn rebuild<T: SharedObject>(
        &mut self,
        id: ObjectId,
        bytes: Vec<u8>,
        fds: Vec<OwnedFd>,
        mut inner: Vec<ObjectId>,
        depth: u8,
    ) -> Result<T, WireError> {
        if depth >= MAX_DEPTH {
            return Err(WireError::Refused(format!(
                "shared objects are nested more than {MAX_DEPTH} deep"
            )));
        }
        let fds = fds.into_iter().map(Some).collect();
        let ((obj, used), _unused) =
            context::decode_with(&bytes, fds, &mut inner, self, depth + 1, |d| T::rebuild(id, d))?;
        if used != bytes.len() {
            return Err(WireError::TrailingBytes { extra: bytes.len() - used });
        }
        Ok(obj)
    }
}

/// The refusal of an object of the kind called `got` where a `T` was expected.
fn wrong<T: SharedObject>(got: &str) -> WireError {
    WireError::Refused(format!("a {got} was received where a {} was expected", T::KIND.name))
}

/// The registry key of an object of `kind` whose first descriptor is `fd`.
fn identity(kind: Kind, fd: BorrowedFd<'_>) -> Option<registry::Key> {
    let st = rustix::fs::fstat(fd).ok()?;
    Some((kind.fingerprint, st.st_dev as u64, st.st_ino as u64))
}

/// Checks that a definition holds a descriptor (its memory comes first): a table is there
/// exactly when descriptors travel.
fn check_identity(obj: &dyn AnyShared, fds: &[OwnedFd]) -> Result<(), WireError> {
    if fds.is_empty() {
        return Err(WireError::Refused(format!(
            "the definition of a {} holds no descriptor",
            obj.kind().name
        )));
    }
    Ok(())
}

/// Registers a handle this process sends, so that the same object coming back is not
/// rebuilt: `fds` is its definition's descriptors.
fn register_sent(obj: &Arc<dyn AnyShared>, fds: &[OwnedFd]) {
    if let Some(key) = fds.first().and_then(|fd| identity(obj.kind(), fd.as_fd())) {
        registry::add(key, &Arc::clone(obj).into_any());
    }
}

/// Builds the self-contained table of the encode in progress (see
/// [`encode_with_fds`](super::encode_with_fds)): every object it met is defined, and the
/// definitions' descriptors are added to its own.
/// `None` if the value holds no descriptor and no object: then it has no table.
pub(super) fn seal_table() -> Result<Option<Vec<u8>>, String> {
    let taken = with_context(|ctx: &mut Context| match &mut ctx.mode {
        Mode::Sink { fds, objects } => Ok((fds.len(), objects.clone())),
        Mode::Idle | Mode::Source(_) => Err(WireError::NoFdContext),
    });
    let (value_fds, objects) =
        taken.unwrap_or(Err(WireError::NoFdContext)).map_err(context::record)?;
    if value_fds == 0 && objects.is_empty() {
        return Ok(None);
    }
    // The definitions are nested encodes: they run with the context not borrowed.
    let mut fds = Vec::new();
    let table = build_table(value_fds, &objects, &mut fds).map_err(context::record)?;
    let added = with_context(|ctx| match &mut ctx.mode {
        Mode::Sink { fds: sink, .. } => {
            sink.append(&mut fds);
            true
        }
        Mode::Idle | Mode::Source(_) => false,
    });
    if added != Some(true) {
        return Err(context::record(WireError::NoFdContext));
    }
    Ok(Some(table))
}

/// The table for a value that holds `value_fds` descriptors and refers to `objects`; the
/// definitions' descriptors are appended to `fds`.
fn build_table(
    value_fds: usize,
    objects: &ObjectList,
    fds: &mut Vec<OwnedFd>,
) -> Result<Vec<u8>, WireError> {
    let mut table = TableWire {
        value_fds: u32::try_from(value_fds).unwrap_or(u32::MAX),
        scope: objects.ids().to_vec(),
        ..TableWire::default()
    };
    let mut seen: HashSet<ObjectId> = table.scope.iter().copied().collect();
    let mut work: Vec<Arc<dyn AnyShared>> = objects.items.clone();
    let mut i = 0;
    while let Some(obj) = work.get(i).cloned() {
        i += 1;
        let (bytes, own, inner) = obj.describe()?;
        check_identity(obj.as_ref(), &own)?;
        register_sent(&obj, &own);
        table.defs.push(DefWire {
            id: obj.id(),
            kind: obj.kind().fingerprint,
            name: obj.kind().name.to_owned(),
            bytes,
            fds: u32::try_from(own.len()).unwrap_or(u32::MAX),
            inner: inner.ids().to_vec(),
        });
        fds.extend(own);
        for o in inner.items {
            if seen.insert(o.id()) {
                work.push(o);
            }
        }
    }
    postcard::to_stdvec(&table).map_err(WireError::Encode)
}

/// What a sender has defined to one receiver that keeps an [`ObjectCache`] (see the module
/// docs).
pub struct PeerObjects {
    sent: IdMap<Sent>,
    /// Counts the calls of [`PeerObjects::prepare`]: when each object was last used.
    clock: u64,
    limit: usize,
}

/// An object defined to the receiver.
struct Sent {
    /// The sender's object, not kept alive by this.
    obj: Weak<dyn AnyShared>,
    /// The objects its definition refers to.
    inner: Vec<ObjectId>,
    /// The [`PeerObjects::clock`] of its last use.
    used: u64,
}

impl fmt::Debug for PeerObjects {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerObjects")
            .field("defined", &self.sent.len())
            .field("limit", &self.limit)
            .finish()
    }
}

impl PeerObjects {
    /// A receiver that has been sent nothing, and is kept to about `limit` objects (at most
    /// [`MAX_CACHED`]).
    pub fn new(limit: usize) -> PeerObjects {
        PeerObjects { sent: IdMap::default(), clock: 0, limit: limit.clamp(1, MAX_CACHED) }
    }

    /// How many objects the receiver holds for this sender.
    pub fn len(&self) -> usize {
        self.sent.len()
    }

    /// Whether the receiver holds none.
    pub fn is_empty(&self) -> bool {
        self.sent.is_empty()
    }

    /// The frames to send the receiver before a message whose values refer to the objects of
    /// `lists` (each frame of at most [`MAX_FDS_PER_FRAME`] descriptors, for
    /// [`ObjectCache::admit_frame`]); none if it has them all and nothing is to be released.
    ///
    /// On an error (a descriptor that cannot be duplicated: out of descriptors) nothing is
    /// recorded as sent, and the message must not be sent.
    #[allow(clippy::type_complexity)]
    pub fn prepare<'a>(
        &mut self,
        lists: impl IntoIterator<Item = &'a ObjectList>,
    ) -> Result<Vec<(Vec<u8>, Vec<OwnedFd>)>, WireError> {
        self.clock += 1;
        let clock = self.clock;
        // Objects the sender no longer has: released (once the frames are made: on an error
        // nothing changes).
        let mut releases: Vec<ObjectId> = self
            .sent
            .iter()
            .filter(|(_, s)| s.obj.strong_count() == 0)
            .map(|(id, _)| *id)
            .collect();
        let mut seen: HashSet<ObjectId> = HashSet::new();
        let mut work: Vec<Arc<dyn AnyShared>> = Vec::new();
        for list in lists {
            for o in &list.items {
                if seen.insert(o.id()) {
                    work.push(Arc::clone(o));
                }
            }
        }
        let mut tables: Vec<(TableWire, Vec<OwnedFd>)> = vec![(TableWire::default(), Vec::new())];
        let mut fresh: Vec<(ObjectId, Sent)> = Vec::new();
        let mut touch: Vec<ObjectId> = Vec::new();
        let mut i = 0;
        while let Some(obj) = work.get(i).cloned() {
            i += 1;
            let id = obj.id();
            if self.sent.contains_key(&id) {
                touch.push(id);
                continue;
            }
            let (bytes, own, inner) = obj.describe()?;
            check_identity(obj.as_ref(), &own)?;
            if own.len() > MAX_FDS_PER_FRAME {
                return Err(WireError::TooManyFds { count: own.len(), max: MAX_FDS_PER_FRAME });
            }
            register_sent(&obj, &own);
            let full = tables.last().is_none_or(|(t, fds)| {
                fds.len() + own.len() > MAX_FDS_PER_FRAME || t.defs.len() >= MAX_DEFS
            });
            if full {
                tables.push((TableWire::default(), Vec::new()));
            }
            let inner_ids = inner.ids().to_vec();
            if let Some((t, fds)) = tables.last_mut() {
                t.defs.push(DefWire {
                    id,
                    kind: obj.kind().fingerprint,
                    name: obj.kind().name.to_owned(),
                    bytes,
                    fds: u32::try_from(own.len()).unwrap_or(u32::MAX),
                    inner: inner_ids.clone(),
                });
                fds.extend(own);
            }
            fresh.push((id, Sent { obj: Arc::downgrade(&obj), inner: inner_ids, used: clock }));
            for o in inner.items {
                if seen.insert(o.id()) {
                    work.push(o);
                }
            }
        }
        // Objects the receiver has, and those their definitions refer to, are in use.
        while let Some(id) = touch.pop() {
            if let Some(s) = self.sent.get_mut(&id) {
                if s.used != clock {
                    s.used = clock;
                    touch.extend(s.inner.iter().copied());
                }
            }
        }
        for id in &releases {
            self.sent.remove(id);
        }
        self.sent.extend(fresh);
        if self.sent.len() > self.limit {
            let mut idle: Vec<(u64, ObjectId)> = self
                .sent
                .iter()
                .filter(|(_, s)| s.used != clock)
                .map(|(id, s)| (s.used, *id))
                .collect();
            idle.sort_unstable();
            let excess = self.sent.len() - self.limit;
            for (_, id) in idle.into_iter().take(excess) {
                self.sent.remove(&id);
                releases.push(id);
            }
        }
        if let Some((first, _)) = tables.first_mut() {
            first.releases = releases;
        }
        let mut frames = Vec::new();
        for (table, fds) in tables {
            if table.defs.is_empty() && table.releases.is_empty() {
                continue;
            }
            frames.push((postcard::to_stdvec(&table).map_err(WireError::Encode)?, fds));
        }
        Ok(frames)
    }
}

/// The process-wide registry of shared objects: one handle per object in a process.
mod registry {
    use super::*;

    /// An object's kind fingerprint, and the device and inode of its memory.
    pub(super) type Key = (u64, u64, u64);

    /// The handles, not kept alive by the registry.
    pub(crate) struct Registry {
        map: HashMap<Key, Weak<dyn Any + Send + Sync>>,
        /// The size at which dead entries are swept next.
        sweep_at: usize,
    }

    /// The registry. A `std` mutex: a forked child unlocks the copy it inherits (see
    /// [`hold_for_fork`]).
    static REGISTRY: Mutex<Option<Registry>> = Mutex::new(None);

    fn lock() -> MutexGuard<'static, Option<Registry>> {
        REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The handle this process has on the object `key`, if it has one.
    pub(super) fn find<T: Any + Send + Sync>(key: Key) -> Option<Arc<dyn Any + Send + Sync>> {
        let g = lock();
        let obj = g.as_ref()?.map.get(&key)?.upgrade()?;
        obj.is::<T>().then_some(obj)
    }

    /// Records `obj` as this process's handle on the object `key` (if it has none alive).
    pub(super) fn add(key: Key, obj: &Arc<dyn Any + Send + Sync>) {
        let mut g = lock();
        let r = g.get_or_insert_with(|| Registry { map: HashMap::new(), sweep_at: 64 });
        if r.map.get(&key).is_some_and(|w| w.strong_count() > 0) {
            return;
        }
        r.map.insert(key, Arc::downgrade(obj));
        if r.map.len() >= r.sweep_at {
            r.map.retain(|_, w| w.strong_count() > 0);
            r.sweep_at = (r.map.len() * 2).max(64);
        }
    }

    /// Takes the registry's lock across a fork, so that the child's copy is never locked by
    /// a thread that does not exist there; dropped on both sides after the fork.
    pub(crate) fn hold_for_fork() -> MutexGuard<'static, Option<Registry>> {
        lock()
    }
}

pub(crate) use registry::hold_for_fork;

/// Serde adapters for `Arc<T>` fields holding a [`SharedObject`], for use as
/// `#[serde(with = "mp_process::fdpass::serde_object")]`: [`serialize_object`] and
/// [`deserialize_object`].
pub mod serde_object {
    use std::sync::Arc;

    use serde::{Deserializer, Serializer};

    use super::SharedObject;

    /// See [`serialize_object`](super::serialize_object).
    pub fn serialize<T: SharedObject, S: Serializer>(
        obj: &Arc<T>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        super::serialize_object(obj, s)
    }

    /// See [`deserialize_object`](super::deserialize_object).
    pub fn deserialize<'de, T: SharedObject, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Arc<T>, D::Error> {
        super::deserialize_object(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fdpass::{
        FdRef, PassFd, decode_in, decode_with_fds, encode_with_fds, encode_with_objects,
    };
    use proptest::prelude::*;

    /// A test object: a memfd, a label, and maybe an object it holds.
    struct Seg {
        id: ObjectId,
        fd: OwnedFd,
        label: String,
        inner: Option<Arc<Seg>>,
    }

    impl Seg {
        fn new(label: &str, inner: Option<Arc<Seg>>) -> Arc<Seg> {
            let fd = rustix::fs::memfd_create("seg", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
            Arc::new(Seg { id: new_object_id(), fd, label: label.into(), inner })
        }
    }

    #[derive(Serialize)]
    struct SegOut<'a> {
        fd: FdRef<'a>,
        label: &'a str,
        #[serde(serialize_with = "ser_opt")]
        inner: &'a Option<Arc<Seg>>,
    }

    fn ser_opt<S: Serializer>(v: &&Option<Arc<Seg>>, s: S) -> Result<S::Ok, S::Error> {
        struct One<'a>(&'a Arc<Seg>);
        impl Serialize for One<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                serialize_object(self.0, s)
            }
        }
        v.as_ref().map(One).serialize(s)
    }

    #[derive(Deserialize)]
    struct SegIn {
        fd: PassFd,
        label: String,
        inner: Option<Obj<Seg>>,
    }

    /// An object, received.
    struct Obj<T>(Arc<T>);

    impl<'de, T: SharedObject> Deserialize<'de> for Obj<T> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            deserialize_object(d).map(Obj)
        }
    }

    impl Serialize for Obj<Seg> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            serialize_object(&self.0, s)
        }
    }

    // SAFETY: `test::Seg` is this test type's own kind, and `rebuild` reads only what
    // `describe` writes.
    #[allow(unsafe_code)]
    unsafe impl SharedObject for Seg {
        const KIND: Kind = Kind::new("test::Seg");
        fn object_id(&self) -> ObjectId {
            self.id
        }
        fn describe<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            SegOut { fd: FdRef(&self.fd), label: &self.label, inner: &self.inner }.serialize(s)
        }
        fn rebuild<'de, D: Deserializer<'de>>(id: ObjectId, d: D) -> Result<Self, D::Error> {
            let w = SegIn::deserialize(d)?;
            Ok(Seg { id, fd: w.fd.into_inner(), label: w.label, inner: w.inner.map(|o| o.0) })
        }
    }

    /// Another kind.
    struct Other(ObjectId, OwnedFd);

    // SAFETY: as for `Seg`, with the kind `test::Other`.
    #[allow(unsafe_code)]
    unsafe impl SharedObject for Other {
        const KIND: Kind = Kind::new("test::Other");
        fn object_id(&self) -> ObjectId {
            self.0
        }
        fn describe<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            FdRef(&self.1).serialize(s)
        }
        fn rebuild<'de, D: Deserializer<'de>>(id: ObjectId, d: D) -> Result<Self, D::Error> {
            Ok(Other(id, PassFd::deserialize(d)?.into_inner()))
        }
    }

    /// The device and inode of `fd`.
    fn ino(fd: &OwnedFd) -> (u64, u64) {
        let st = rustix::fs::fstat(fd).unwrap();
        (st.st_dev as u64, st.st_ino as u64)
    }

    #[test]
    fn an_object_sent_twice_in_a_message_is_defined_once_and_comes_back_as_the_same_handle() {
        let seg = Seg::new("a", None);
        let value = (Obj(seg.clone()), Obj(seg.clone()), 5u8);
        let (bytes, fds) = encode_with_fds(&value).unwrap();
        assert_eq!(fds.len(), 1, "one definition, one descriptor");
        let (a, b, n): (Obj<Seg>, Obj<Seg>, u8) = decode_with_fds(&bytes, fds).unwrap();
        assert_eq!(n, 5);
        assert!(Arc::ptr_eq(&a.0, &b.0));
        // This process has the object already: the registry hands out its own handle.
        assert!(Arc::ptr_eq(&a.0, &seg));
    }

    #[test]
    fn a_received_object_is_rebuilt_once_per_process() {
        // An object this process never sent (made as another process would define it).
        let seg = Seg::new("far", None);
        let (bytes, fds) = encode_with_fds(&Obj(seg.clone())).unwrap();
        let (bytes2, fds2) = encode_with_fds(&Obj(seg.clone())).unwrap();
        let far_ino = ino(&seg.fd);
        drop(seg);
        let first: Obj<Seg> = decode_with_fds(&bytes, fds).unwrap();
        let second: Obj<Seg> = decode_with_fds(&bytes2, fds2).unwrap();
        assert!(Arc::ptr_eq(&first.0, &second.0), "two handles on one object");
        assert_eq!(ino(&first.0.fd), far_ino);
        assert_eq!(first.0.label, "far");
    }

    #[test]
    fn objects_inside_objects_cross_and_are_shared() {
        let inner = Seg::new("inner", None);
        let outer = Seg::new("outer", Some(inner.clone()));
        let (bytes, fds) = encode_with_fds(&(Obj(outer.clone()), Obj(inner.clone()))).unwrap();
        assert_eq!(fds.len(), 2);
        let (o, i): (Obj<Seg>, Obj<Seg>) = decode_with_fds(&bytes, fds).unwrap();
        assert!(Arc::ptr_eq(o.0.inner.as_ref().unwrap(), &i.0));
        assert_eq!(o.0.inner.as_ref().unwrap().label, "inner");
    }

    #[test]
    fn an_object_of_another_kind_is_refused_and_says_what_arrived() {
        let seg = Seg::new("a", None);
        let (bytes, fds) = encode_with_fds(&Obj(seg)).unwrap();
        match decode_with_fds::<Obj<Other>>(&bytes, fds) {
            Err(WireError::Refused(why)) => {
                assert_eq!(why, "a test::Seg was received where a test::Other was expected")
            }
            other => panic!("{:?}", other.map(|_| ())),
        }
    }

    /// `value` in the self-contained form with `table`.
    fn forged(value: &[u8], table: &TableWire) -> Vec<u8> {
        let t = postcard::to_stdvec(table).unwrap();
        let mut out = value.to_vec();
        out.extend_from_slice(&t);
        out.extend_from_slice(&(t.len() as u32).to_le_bytes());
        out.extend_from_slice(&super::super::codec::TRAILER_MAGIC);
        out
    }

    fn memfd() -> OwnedFd {
        rustix::fs::memfd_create("forged", rustix::fs::MemfdFlags::CLOEXEC).unwrap()
    }

    fn def(id: ObjectId, inner: Vec<ObjectId>) -> DefWire {
        // A Seg definition: fd index 0, label "x", inner object index 0 if any.
        let bytes = if inner.is_empty() { vec![0, 1, b'x', 0] } else { vec![0, 1, b'x', 1, 0] };
        DefWire { id, kind: Seg::KIND.fingerprint, name: "test::Seg".into(), bytes, fds: 1, inner }
    }

    #[test]
    fn forged_tables_are_refused() {
        let value = postcard::to_stdvec(&0u32).unwrap();
        // Each forged message also carries a descriptor of the value's own, so that it is read
        // in the self-contained form.
        let refused = |mut table: TableWire, mut fds: Vec<OwnedFd>| {
            table.value_fds = 1;
            fds.insert(0, memfd());
            match decode_with_fds::<Obj<Seg>>(&forged(&value, &table), fds) {
                Err(WireError::Refused(why)) => why,
                Err(e) => panic!("{e:?}"),
                Ok(_) => panic!("a forged table was accepted"),
            }
        };
        // An object never defined.
        let why = refused(TableWire { scope: vec![77], ..Default::default() }, vec![]);
        assert!(why.contains("never defined"), "{why}");
        // An index past the scope.
        let why = refused(TableWire::default(), vec![]);
        assert!(why.contains("has 0 objects"), "{why}");
        // A definition that refers to itself.
        let t = TableWire { scope: vec![5], defs: vec![def(5, vec![5])], ..Default::default() };
        let why = refused(t, vec![memfd()]);
        assert!(why.contains("refers to itself"), "{why}");
        // A cycle of two.
        let t = TableWire {
            scope: vec![5],
            defs: vec![def(5, vec![6]), def(6, vec![5])],
            ..Default::default()
        };
        let why = refused(t, vec![memfd(), memfd()]);
        assert!(why.contains("refers to itself"), "{why}");
        // A chain deeper than the limit.
        let n = u64::from(MAX_DEPTH) + 2;
        let defs: Vec<DefWire> =
            (1..=n).map(|i| def(i, if i < n { vec![i + 1] } else { vec![] })).collect();
        let fds = (1..=n).map(|_| memfd()).collect();
        let why = refused(TableWire { scope: vec![1], defs, ..Default::default() }, fds);
        assert!(why.contains("nested more than"), "{why}");
        // Too many definitions.
        let defs: Vec<DefWire> =
            (0..MAX_DEFS as u64 + 1).map(|i| DefWire { fds: 0, ..def(i + 1, vec![]) }).collect();
        let why = refused(TableWire { scope: vec![1], defs, ..Default::default() }, vec![]);
        assert!(why.contains("definitions in one table"), "{why}");
        // Descriptors the table does not account for.
        let t = TableWire { scope: vec![5], defs: vec![def(5, vec![])], ..Default::default() };
        assert!(matches!(
            decode_with_fds::<Obj<Seg>>(&forged(&value, &t), vec![memfd(), memfd()]),
            Err(WireError::FdCountMismatch { announced: 1, received: 2 })
        ));
    }

    #[test]
    fn a_peer_is_sent_each_object_once_and_told_to_release_it() {
        let mut peer = PeerObjects::new(100);
        let mut cache = ObjectCache::default();
        let inner = Seg::new("inner", None);
        let outer = Seg::new("outer", Some(inner.clone()));
        let other = Seg::new("other", None);

        // The receiver here is this process, whose registry would hand the decoded value the
        // sender's own handle and keep it alive: `outer` is only defined, never decoded.
        let send = |peer: &mut PeerObjects,
                    cache: &mut ObjectCache,
                    value: &(Obj<Seg>, u8),
                    decode: bool| {
            let mut list = ObjectList::default();
            let (bytes, fds) =
                encode_with_objects(value, postcard::ser_flavors::AllocVec::new(), &mut list)
                    .unwrap();
            assert!(fds.is_empty());
            let frames = peer.prepare([&list]).unwrap();
            let sent = frames.len();
            for (f, fds) in frames {
                cache.admit_frame(&f, fds).unwrap();
            }
            let mut scope = list.ids().to_vec();
            let got = decode.then(|| {
                let got: (Obj<Seg>, u8) = decode_in(&bytes, Vec::new(), &mut scope, cache).unwrap();
                got.1
            });
            (got, sent)
        };
        let (_, frames) = send(&mut peer, &mut cache, &(Obj(outer.clone()), 1), false);
        assert_eq!(frames, 1);
        assert_eq!(cache.len(), 2, "the object and the one it holds");
        let (_, frames) = send(&mut peer, &mut cache, &(Obj(outer.clone()), 2), false);
        assert_eq!(frames, 0, "the second crossing defines nothing");
        let (n, frames) = send(&mut peer, &mut cache, &(Obj(other.clone()), 3), true);
        assert_eq!((n, frames), (Some(3), 1));
        assert_eq!((peer.len(), cache.len()), (3, 3));
        // The sender drops its handles: the next frame releases them.
        drop((outer, inner));
        let (_, frames) = send(&mut peer, &mut cache, &(Obj(other.clone()), 4), true);
        assert_eq!(frames, 1, "a frame of releases");
        assert_eq!((peer.len(), cache.len()), (1, 1));
    }

    #[test]
    fn a_peer_past_its_limit_releases_the_least_recently_used() {
        let mut peer = PeerObjects::new(2);
        let mut cache = ObjectCache::default();
        let segs: Vec<Arc<Seg>> = (0..4).map(|i| Seg::new(&format!("{i}"), None)).collect();
        for s in &segs {
            let mut list = ObjectList::default();
            encode_with_objects(&Obj(s.clone()), postcard::ser_flavors::AllocVec::new(), &mut list)
                .unwrap();
            for (f, fds) in peer.prepare([&list]).unwrap() {
                cache.admit_frame(&f, fds).unwrap();
            }
            assert!(peer.len() <= 2 && cache.len() == peer.len());
        }
        // The last one is there; the first was released and would be defined again.
        let mut list = ObjectList::default();
        encode_with_objects(
            &Obj(segs[3].clone()),
            postcard::ser_flavors::AllocVec::new(),
            &mut list,
        )
        .unwrap();
        assert!(peer.prepare([&list]).unwrap().is_empty());
        let mut list = ObjectList::default();
        encode_with_objects(
            &Obj(segs[0].clone()),
            postcard::ser_flavors::AllocVec::new(),
            &mut list,
        )
        .unwrap();
        assert_eq!(peer.prepare([&list]).unwrap().len(), 1);
    }

    #[test]
    fn definitions_past_a_frame_of_descriptors_are_split() {
        let segs: Vec<Arc<Seg>> =
            (0..MAX_FDS_PER_FRAME + 10).map(|_| Seg::new("s", None)).collect();
        let mut list = ObjectList::default();
        for s in &segs {
            encode_with_objects(&Obj(s.clone()), postcard::ser_flavors::AllocVec::new(), &mut list)
                .unwrap();
        }
        assert_eq!(list.len(), segs.len());
        let mut peer = PeerObjects::new(MAX_CACHED);
        let frames = peer.prepare([&list]).unwrap();
        assert_eq!(frames.len(), 2);
        assert!(frames.iter().all(|(_, fds)| fds.len() <= MAX_FDS_PER_FRAME));
        let mut cache = ObjectCache::default();
        for (f, fds) in frames {
            cache.admit_frame(&f, fds).unwrap();
        }
        assert_eq!(cache.len(), segs.len());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Garbage tables and values are errors, never panics.
        #[test]
        fn garbage_is_an_error_not_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_with_fds::<(Obj<Seg>, u32)>(&bytes, Vec::new());
            let _ = ObjectCache::default().admit_frame(&bytes, Vec::new());
            let mut with_magic = bytes.clone();
            with_magic.extend_from_slice(&[0, 0, 0, 0]);
            with_magic.extend_from_slice(&super::super::codec::TRAILER_MAGIC);
            let _ = decode_with_fds::<Obj<Seg>>(&with_magic, Vec::new());
        }
    }
}
