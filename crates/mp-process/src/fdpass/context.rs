//! The fd-carrying serialisation context: while a value is encoded or decoded through this
//! module, the descriptors and shared objects it holds are moved out of band, and each is
//! written in the bytes as an index.
//!
//! The context is a thread-local: serde gives a `Serialize` impl no way to reach its caller
//! but the thread it runs on. Each encode or decode installs its own context and puts the
//! previous one back when it ends (also when it fails or unwinds), so calls nest.
//!
//! # The self-contained form
//! [`encode_with_fds`] and [`encode_with_flavor`] write the value's bytes, then the *object
//! table* (the definition of every shared object the value refers to, see
//! [`super::objects`]), then an 8-byte footer: the table's length (`u32`, little endian) and
//! [`TRAILER_MAGIC`]. The descriptors are the value's own, then each definition's, in order.
//! [`decode_with_fds`] reads the footer and the table first, then the value. A value that
//! holds no descriptor and no object is plain postcard, without table or footer: the table is
//! there exactly when descriptors come with the bytes (every object's definition holds at
//! least one).

use std::any::Any;
use std::cell::RefCell;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::table::{ObjectCache, ObjectId, ObjectList};
use crate::wire::WireError;

/// What a decode takes its descriptors and objects from.
#[derive(Default)]
pub(super) struct Source {
    /// The value's own descriptors, by index; taken as they are decoded.
    pub fds: Vec<Option<OwnedFd>>,
    /// The objects the value may refer to: index `i` in the bytes is `scope[i]`.
    pub scope: Vec<ObjectId>,
    /// Where the objects are defined (received, or rebuilt already).
    pub cache: ObjectCache,
    /// How many object definitions enclose this decode.
    pub depth: u8,
    /// The objects of `scope` already resolved in this decode, by index: a value (or a run
    /// of values in a session) that names an object again takes it from here.
    pub resolved: Vec<Option<Arc<dyn Any + Send + Sync>>>,
}

/// What the current thread is doing with descriptors met during (de)serialisation.
pub(super) enum Mode {
    /// No fd-carrying encode or decode is in progress.
    Idle,
    /// Encoding: descriptors are duplicated into `fds`, objects recorded in `objects`.
    Sink {
        /// The duplicated descriptors, by index.
        fds: Vec<OwnedFd>,
        /// The objects met, by index.
        objects: ObjectList,
    },
    /// Decoding.
    Source(Source),
}

/// The per-thread state of the fd-carrying encoder and decoder.
pub(super) struct Context {
    /// Whether descriptors are being collected, handed out, or neither.
    pub mode: Mode,
    /// The precise error behind the last serde custom error raised in this context,
    /// kept because postcard's error type drops custom messages.
    pub failure: Option<WireError>,
    /// Whether the context is in use: a session ([`EncodeSession`], [`DecodeSession`]) keeps
    /// its context installed between its values, inactive, so that code running meanwhile
    /// (the caller's iterator, a pool task) sees none.
    pub active: bool,
}

impl Context {
    /// A context in which no descriptor may be serialised or deserialised.
    const fn idle() -> Self {
        Self { mode: Mode::Idle, failure: None, active: true }
    }

    /// An encoding context that starts with `objects`.
    fn sink(objects: ObjectList) -> Self {
        Self { mode: Mode::Sink { fds: Vec::new(), objects }, failure: None, active: true }
    }

    /// A decoding context.
    pub(super) fn source(source: Source) -> Self {
        Self { mode: Mode::Source(source), failure: None, active: true }
    }
}

impl Default for Context {
    fn default() -> Self {
        Self::idle()
    }
}

thread_local! {
    static CONTEXT: RefCell<Context> = const { RefCell::new(Context::idle()) };
}

/// Runs `f` on this thread's context, borrowed in place (the context is touched for every
/// descriptor and object, so it is not moved). `f` must not start a nested encode or decode:
/// whatever needs one takes what it needs out of the context first. Returns `None` if the
/// thread-local storage is already gone (during thread teardown), the context is borrowed, or
/// it is a session's between two of its values (inactive).
#[inline]
pub(super) fn with_context<R>(f: impl FnOnce(&mut Context) -> R) -> Option<R> {
    with_installed(|ctx| if ctx.active { Some(f(ctx)) } else { None }).flatten()
}

/// [`with_context`] on the installed context, active or not (for sessions).
#[inline]
fn with_installed<R>(f: impl FnOnce(&mut Context) -> R) -> Option<R> {
    CONTEXT.try_with(|cell| cell.try_borrow_mut().ok().map(|mut ctx| f(&mut ctx))).ok().flatten()
}

/// Replaces this thread's context with `ctx` and returns the previous one.
fn swap_context(ctx: Context) -> Option<Context> {
    CONTEXT
        .try_with(|cell| cell.try_borrow_mut().ok().map(|mut c| std::mem::replace(&mut *c, ctx)))
        .ok()
        .flatten()
}

/// Installs a context for the duration of one encode or decode and puts the previous
/// one back afterwards, also when the call fails or unwinds, so nesting is safe.
pub(super) struct ContextGuard {
    /// The context that was active before this guard installed its own.
    previous: Option<Context>,
}

impl ContextGuard {
    /// Makes `ctx` the current thread's context.
    pub(super) fn install(ctx: Context) -> Result<Self, WireError> {
        let previous = swap_context(ctx).ok_or(WireError::NoFdContext)?;
        Ok(Self { previous: Some(previous) })
    }

    /// Restores the previous context and returns the one this guard installed.
    pub(super) fn finish(mut self) -> Context {
        let previous = self.previous.take().unwrap_or_default();
        swap_context(previous).unwrap_or_default()
    }
}

impl Drop for ContextGuard {
    fn drop(&mut self) {
        if let Some(previous) = self.previous.take() {
            // The replaced context is dropped here, closing any descriptors it held.
            let _ = swap_context(previous);
        }
    }
}

/// Records `err` as the reason for a serde failure in the active context and
/// returns its message for the serde custom error.
pub(super) fn fail(ctx: &mut Context, err: WireError) -> String {
    let message = err.to_string();
    if !matches!(ctx.mode, Mode::Idle) {
        ctx.failure = Some(err);
    }
    message
}

/// Duplicates `fd` into the active sink and returns its index there.
fn stash_fd(fd: BorrowedFd<'_>) -> Result<u32, String> {
    with_context(|ctx| {
        let result = match &mut ctx.mode {
            Mode::Sink { fds, .. } => match u32::try_from(fds.len()) {
                Ok(index) => match rustix::io::fcntl_dupfd_cloexec(fd, 0) {
                    Ok(dup) => {
                        fds.push(dup);
                        Ok(index)
                    }
                    Err(e) => Err(WireError::Io(std::io::Error::new(
                        e.kind(),
                        format!("duplicating a descriptor to send it: {e}"),
                    ))),
                },
                Err(_) => {
                    Err(WireError::TooManyFds { count: fds.len(), max: super::MAX_FDS_PER_FRAME })
                }
            },
            Mode::Idle | Mode::Source(_) => Err(WireError::NoFdContext),
        };
        result.map_err(|err| fail(ctx, err))
    })
    .unwrap_or_else(|| Err(WireError::NoFdContext.to_string()))
}

/// Takes descriptor `index` out of the active source.
fn take_fd(index: u32) -> Result<OwnedFd, String> {
    with_context(|ctx| {
        let result = match &mut ctx.mode {
            Mode::Source(source) => usize::try_from(index)
                .ok()
                .and_then(|i| source.fds.get_mut(i))
                .and_then(Option::take)
                .ok_or(WireError::MissingFd { index }),
            Mode::Idle | Mode::Sink { .. } => Err(WireError::NoFdContext),
        };
        result.map_err(|err| fail(ctx, err))
    })
    .unwrap_or_else(|| Err(WireError::NoFdContext.to_string()))
}

/// Records `err` in the active context (see [`fail`]) and returns its message.
pub(super) fn record(err: WireError) -> String {
    let message = err.to_string();
    let _ = with_context(|ctx| {
        if !matches!(ctx.mode, Mode::Idle) {
            ctx.failure = Some(err);
        }
    });
    message
}

/// Refuses a received value: returns a serde error saying why, and records the reason in the
/// active decode, so that the caller's error ([`WireError::Refused`]) says it too (postcard's
/// own error type drops custom messages).
///
/// For `Deserialize` impls of types that check what they receive (a segment of the wrong
/// kind, a descriptor of the wrong type, a queue of another item type).
pub fn refuse<E: serde::de::Error>(reason: impl std::fmt::Display) -> E {
    let message = reason.to_string();
    let _ = with_context(|ctx| {
        if !matches!(ctx.mode, Mode::Idle) {
            ctx.failure = Some(WireError::Refused(message.clone()));
        }
    });
    E::custom(message)
}

/// Serde adapters for `OwnedFd` fields, for use as
/// `#[serde(with = "mp_process::fdpass::serde_fd")]`.
///
/// Inside [`encode_with_fds`](super::encode_with_fds) a descriptor is duplicated into
/// the out-of-band list and serialised as its `u32` index; inside
/// [`decode_with_fds`](super::decode_with_fds) the index takes the matching received
/// descriptor. Anywhere else both functions return a serde error saying that
/// descriptors can only cross through mp's fd-carrying encoder.
pub mod serde_fd {
    use std::os::fd::{AsFd, OwnedFd};

    use serde::{Deserialize, Deserializer, Serializer, de, ser};

    /// Serialises `fd` as its index in the active fd sink.
    pub fn serialize<S: Serializer>(fd: &OwnedFd, s: S) -> Result<S::Ok, S::Error> {
        let index = super::stash_fd(fd.as_fd()).map_err(<S::Error as ser::Error>::custom)?;
        s.serialize_u32(index)
    }

    /// Deserialises an index and takes the matching descriptor from the active fd source.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OwnedFd, D::Error> {
        let index = u32::deserialize(d)?;
        super::take_fd(index).map_err(<D::Error as de::Error>::custom)
    }
}

/// Serialises `value` with postcard, moving its descriptors out of band and *recording* the
/// shared objects it refers to in `objects` (which may already hold some: each object is
/// recorded once, and its index in `objects` is what the bytes hold), without defining them.
///
/// For a channel that defines objects once per peer (see
/// [`PeerObjects`](super::PeerObjects)): the receiver decodes the bytes with
/// [`decode_in`], in the scope of `objects.ids()`. Returns the flavor's output and the
/// value's own descriptors.
pub fn encode_with_objects<T, F>(
    value: &T,
    flavor: F,
    objects: &mut ObjectList,
) -> Result<(F::Output, Vec<OwnedFd>), WireError>
where
    T: Serialize + ?Sized,
    F: postcard::ser_flavors::Flavor,
{
    let (out, fds, list) = encode_in_sink(value, flavor, std::mem::take(objects))?;
    *objects = list;
    Ok((out, fds))
}

/// Encodes `value` in a sink that starts with `objects`, and returns them with the output.
pub(super) fn encode_in_sink<T, F>(
    value: &T,
    flavor: F,
    objects: ObjectList,
) -> Result<(F::Output, Vec<OwnedFd>, ObjectList), WireError>
where
    T: Serialize + ?Sized,
    F: postcard::ser_flavors::Flavor,
{
    let guard = ContextGuard::install(Context::sink(objects))?;
    // A failure is explained inside the context, so that the value's descriptors and objects
    // serialise again and the replay stops where the encode did.
    let result = postcard::serialize_with_flavor(value, flavor)
        .map_err(|e| crate::wire::encode_error(e, value));
    let ctx = guard.finish();
    let (fds, objects) = match ctx.mode {
        Mode::Sink { fds, objects } => (fds, objects),
        Mode::Idle | Mode::Source(_) => (Vec::new(), ObjectList::default()),
    };
    match result {
        Ok(out) => Ok((out, fds, objects)),
        Err(e) => Err(ctx.failure.unwrap_or(e)),
    }
}

/// The value of `taken` (a value and the bytes it took) if it took all `len` bytes.
pub(super) fn whole<T>((value, used): (T, usize), len: usize) -> Result<T, WireError> {
    if used == len { Ok(value) } else { Err(WireError::TrailingBytes { extra: len - used }) }
}

/// Deserialises a value encoded by [`encode_with_objects`]: its object indices refer to
/// `scope`, whose objects `cache` holds (as defined by [`PeerObjects`](super::PeerObjects)
/// frames the cache admitted). `scope` and `cache` are lent to the decode and given back.
///
/// Trailing bytes fail with `TrailingBytes`.
pub fn decode_in<T: DeserializeOwned>(
    bytes: &[u8],
    fds: Vec<OwnedFd>,
    scope: &mut Vec<ObjectId>,
    cache: &mut ObjectCache,
) -> Result<T, WireError> {
    whole(take_in(bytes, fds, scope, cache)?, bytes.len())
}

/// As [`decode_in`], for a value followed by others: returns it and how many bytes it took.
pub fn take_in<T: DeserializeOwned>(
    bytes: &[u8],
    fds: Vec<OwnedFd>,
    scope: &mut Vec<ObjectId>,
    cache: &mut ObjectCache,
) -> Result<(T, usize), WireError> {
    let own = fds.into_iter().map(Some).collect();
    decode_from(bytes, own, scope, cache, 0).map(|(v, _)| v)
}

/// Decodes a `T` from the start of `bytes` in a source context; returns it with the number of
/// bytes it took, and the descriptors it did not take (closed by the caller's drop).
#[allow(clippy::type_complexity)]
pub(super) fn decode_from<T: DeserializeOwned>(
    bytes: &[u8],
    fds: Vec<Option<OwnedFd>>,
    scope: &mut Vec<ObjectId>,
    cache: &mut ObjectCache,
    depth: u8,
) -> Result<((T, usize), Vec<Option<OwnedFd>>), WireError> {
    decode_with(bytes, fds, scope, cache, depth, |d| T::deserialize(d))
}

/// Runs `f` on a postcard deserializer over `bytes`, in a source context of `fds`, `scope`
/// and `cache` (lent, and given back whatever happens short of a panic).
#[allow(clippy::type_complexity)]
pub(super) fn decode_with<'b, T>(
    bytes: &'b [u8],
    fds: Vec<Option<OwnedFd>>,
    scope: &mut Vec<ObjectId>,
    cache: &mut ObjectCache,
    depth: u8,
    f: impl FnOnce(
        &mut postcard::Deserializer<'b, postcard::de_flavors::Slice<'b>>,
    ) -> postcard::Result<T>,
) -> Result<((T, usize), Vec<Option<OwnedFd>>), WireError> {
    let guard = ContextGuard::install(Context::source(Source {
        fds,
        scope: std::mem::take(scope),
        cache: std::mem::take(cache),
        depth,
        resolved: Vec::new(),
    }))?;
    let mut de = postcard::Deserializer::from_bytes(bytes);
    let result = f(&mut de).and_then(|v| de.finalize().map(|rest| (v, bytes.len() - rest.len())));
    let ctx = guard.finish();
    let leftover = match ctx.mode {
        Mode::Source(source) => {
            *scope = source.scope;
            *cache = source.cache;
            source.fds
        }
        Mode::Idle | Mode::Sink { .. } => Vec::new(),
    };
    match result {
        Ok(v) => Ok((v, leftover)),
        Err(e) => Err(ctx.failure.unwrap_or(WireError::Decode(e))),
    }
}

/// Sets whether the installed context is active.
fn set_active(active: bool) {
    let _ = with_installed(|ctx| ctx.active = active);
}

/// Many values encoded into one scope of shared objects with the context installed once (the
/// items of a pool's chunk): each [`encode`](EncodeSession::encode) is an
/// [`encode_with_objects`] into the session's list of objects. Between them the context is
/// inactive, so code that runs meanwhile (the caller's iterator) sees none. Dropping the
/// session puts the previous context back.
pub struct EncodeSession {
    /// Puts the previous context back.
    _guard: ContextGuard,
}

impl std::fmt::Debug for EncodeSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncodeSession").finish_non_exhaustive()
    }
}

impl EncodeSession {
    /// A session whose values refer to `objects` (and to the objects they add to it).
    pub fn begin(objects: ObjectList) -> Result<EncodeSession, WireError> {
        let mut ctx = Context::sink(objects);
        ctx.active = false;
        Ok(EncodeSession { _guard: ContextGuard::install(ctx)? })
    }

    /// Serialises `value` into `flavor`, recording its objects in the session's list: the
    /// output and the value's own descriptors.
    pub fn encode<T, F>(
        &mut self,
        value: &T,
        flavor: F,
    ) -> Result<(F::Output, Vec<OwnedFd>), WireError>
    where
        T: Serialize + ?Sized,
        F: postcard::ser_flavors::Flavor,
    {
        set_active(true);
        let result = postcard::serialize_with_flavor(value, flavor)
            .map_err(|e| crate::wire::encode_error(e, value));
        let taken = with_installed(|ctx| {
            ctx.active = false;
            let fds = match &mut ctx.mode {
                Mode::Sink { fds, .. } => std::mem::take(fds),
                Mode::Idle | Mode::Source(_) => Vec::new(),
            };
            (fds, ctx.failure.take())
        });
        let (fds, failure) = taken.unwrap_or_default();
        match result {
            Ok(out) => Ok((out, fds)),
            Err(e) => Err(failure.unwrap_or(e)),
        }
    }

    /// The objects recorded so far; the session goes on with an empty list.
    pub fn take_objects(&mut self) -> ObjectList {
        with_installed(|ctx| match &mut ctx.mode {
            Mode::Sink { objects, .. } => std::mem::take(objects),
            Mode::Idle | Mode::Source(_) => ObjectList::default(),
        })
        .unwrap_or_default()
    }
}

/// Many values decoded in one scope of shared objects with the context installed once (the
/// items of a pool's chunk): each [`take`](DecodeSession::take) is a [`take_in`]. Between them
/// the context is inactive, so code that runs meanwhile (a pool task) sees none. The scope and
/// the cache are lent to the session and given back when it is dropped.
pub struct DecodeSession<'a> {
    /// Puts the previous context back.
    guard: Option<ContextGuard>,
    scope: &'a mut Vec<ObjectId>,
    cache: &'a mut ObjectCache,
}

impl std::fmt::Debug for DecodeSession<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecodeSession").finish_non_exhaustive()
    }
}

impl<'a> DecodeSession<'a> {
    /// A session whose values' object indices refer to `scope`, defined in `cache`.
    pub fn begin(
        scope: &'a mut Vec<ObjectId>,
        cache: &'a mut ObjectCache,
    ) -> Result<DecodeSession<'a>, WireError> {
        let mut ctx = Context::source(Source {
            fds: Vec::new(),
            scope: std::mem::take(scope),
            cache: std::mem::take(cache),
            depth: 0,
            resolved: Vec::new(),
        });
        ctx.active = false;
        match ContextGuard::install(ctx) {
            Ok(guard) => Ok(DecodeSession { guard: Some(guard), scope, cache }),
            // The context was dropped with what it held: nothing is lent.
            Err(e) => Err(e),
        }
    }

    /// Decodes a `T` from the start of `bytes`, giving it `fds`: the value and how many bytes
    /// it took.
    pub fn take<T: DeserializeOwned>(
        &mut self,
        bytes: &[u8],
        fds: Vec<OwnedFd>,
    ) -> Result<(T, usize), WireError> {
        let _ = with_installed(|ctx| {
            ctx.active = true;
            if !fds.is_empty() {
                if let Mode::Source(source) = &mut ctx.mode {
                    source.fds = fds.into_iter().map(Some).collect();
                }
            }
        });
        let mut de = postcard::Deserializer::from_bytes(bytes);
        let result = T::deserialize(&mut de)
            .and_then(|v| de.finalize().map(|rest| (v, bytes.len() - rest.len())));
        let failure = with_installed(|ctx| {
            ctx.active = false;
            if let Mode::Source(source) = &mut ctx.mode {
                if !source.fds.is_empty() {
                    // Descriptors the value did not take are closed.
                    source.fds = Vec::new();
                }
            }
            ctx.failure.take()
        });
        result.map_err(|e| failure.flatten().unwrap_or(WireError::Decode(e)))
    }
}

impl Drop for DecodeSession<'_> {
    fn drop(&mut self) {
        if let Some(guard) = self.guard.take() {
            if let Mode::Source(source) = guard.finish().mode {
                *self.scope = source.scope;
                *self.cache = source.cache;
            }
        }
    }
}

/// A borrowed descriptor that serialises through [`serde_fd`]: for `Serialize`
/// implementations that send a descriptor they keep (the value stays usable; the receiver
/// gets a duplicate).
#[derive(Debug, Clone, Copy)]
pub struct FdRef<'a>(pub &'a OwnedFd);

impl Serialize for FdRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serde_fd::serialize(self.0, s)
    }
}

/// A file descriptor to hand to another process inside a serialised value.
///
/// It serialises through [`serde_fd`], so it only crosses through
/// [`encode_with_fds`](super::encode_with_fds) / [`decode_with_fds`](super::decode_with_fds) (and [`send_value`](super::send_value) /
/// [`recv_value`](super::recv_value)).
#[derive(Debug)]
pub struct PassFd(pub OwnedFd);

impl PassFd {
    /// Returns the descriptor.
    pub fn into_inner(self) -> OwnedFd {
        self.0
    }
}

impl AsFd for PassFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl From<OwnedFd> for PassFd {
    fn from(fd: OwnedFd) -> Self {
        Self(fd)
    }
}

impl From<PassFd> for OwnedFd {
    fn from(fd: PassFd) -> Self {
        fd.0
    }
}

impl Serialize for PassFd {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serde_fd::serialize(&self.0, s)
    }
}

impl<'de> Deserialize<'de> for PassFd {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde_fd::deserialize(d).map(Self)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::codec::TRAILER_MAGIC;
    use super::super::table::TableWire;
    use super::*;
    use crate::fdpass::{decode_with_fds, encode_with_fds};
    use rustix::pipe::{PipeFlags, pipe_with};
    use serde::ser::SerializeTuple;
    use std::fs::File;
    use std::io::Write;

    pub(crate) fn pipe() -> (OwnedFd, OwnedFd) {
        pipe_with(PipeFlags::CLOEXEC).unwrap()
    }

    /// Writes `data` to a received pipe write end and checks it arrives at `reader`.
    pub(crate) fn check_pipe(writer: OwnedFd, reader: &OwnedFd, data: &[u8]) {
        File::from(writer).write_all(data).unwrap();
        let mut buf = vec![0u8; data.len()];
        rustix::io::read(reader, &mut buf[..]).unwrap();
        assert_eq!(buf, data);
    }

    /// `value_bytes` in the self-contained form, with a table of no objects and `value_fds`
    /// descriptors: a forged message.
    pub(crate) fn packed(value_bytes: &[u8], value_fds: u32) -> Vec<u8> {
        let table = TableWire { value_fds, ..Default::default() };
        let table = postcard::to_stdvec(&table).unwrap();
        let mut out = value_bytes.to_vec();
        out.extend_from_slice(&table);
        out.extend_from_slice(&(table.len() as u32).to_le_bytes());
        out.extend_from_slice(&TRAILER_MAGIC);
        out
    }

    /// A value holding descriptors.
    #[derive(Debug, Serialize, Deserialize)]
    pub(crate) struct Holder {
        pub name: String,
        pub a: PassFd,
        pub b: Vec<PassFd>,
    }

    #[test]
    fn encode_decode_with_fds_roundtrip() {
        let pipes: Vec<_> = (0..3).map(|_| pipe()).collect();
        let dup = |fd: &OwnedFd| PassFd(rustix::io::fcntl_dupfd_cloexec(fd, 0).unwrap());
        let value = Holder {
            name: "holder".into(),
            a: dup(&pipes[0].1),
            b: vec![dup(&pipes[1].1), dup(&pipes[2].1)],
        };
        let (bytes, fds) = encode_with_fds(&value).unwrap();
        assert_eq!(fds.len(), 3);
        drop(value);
        let back: Holder = decode_with_fds(&bytes, fds).unwrap();
        assert_eq!(back.name, "holder");
        check_pipe(back.a.into_inner(), &pipes[0].0, b"a");
        for (i, fd) in back.b.into_iter().enumerate() {
            check_pipe(fd.into_inner(), &pipes[i + 1].0, b"b");
        }
    }

    #[test]
    fn forged_indices_are_errors() {
        let (_r, w) = pipe();
        let (bytes, fds) = encode_with_fds(&PassFd(w)).unwrap();
        // Without its descriptor the message reads as plain postcard: index 0 has none.
        assert!(matches!(
            decode_with_fds::<PassFd>(&bytes, Vec::new()),
            Err(WireError::MissingFd { index: 0 })
        ));
        let forged = packed(&crate::wire::encode(&(0u32, 0u32)).unwrap(), 1);
        assert!(matches!(
            decode_with_fds::<(PassFd, PassFd)>(&forged, fds),
            Err(WireError::MissingFd { index: 0 })
        ));
        let forged = packed(&crate::wire::encode(&u32::MAX).unwrap(), 0);
        assert!(matches!(
            decode_with_fds::<PassFd>(&forged, Vec::new()),
            Err(WireError::MissingFd { index: u32::MAX })
        ));
        let (_r, w) = pipe();
        let (bytes, fds) = encode_with_fds(&PassFd(w)).unwrap();
        // A byte more in the value (before the table).
        let value_len = bytes.len()
            - 8
            - u32::from_le_bytes(bytes[bytes.len() - 8..][..4].try_into().unwrap()) as usize;
        let mut longer = bytes[..value_len].to_vec();
        longer.push(0);
        let longer = packed(&longer, 1);
        assert!(matches!(
            decode_with_fds::<PassFd>(&longer, fds),
            Err(WireError::TrailingBytes { extra: 1 })
        ));
        // With descriptors, plain postcard (no table) and damaged tables are refused.
        for bad in [vec![], vec![0u8; 3], crate::wire::encode(&7u32).unwrap(), {
            let mut b = packed(&[1, 2], 0);
            let n = b.len();
            b[n - 8] = 200;
            b
        }] {
            let (_r, w) = pipe();
            assert!(matches!(decode_with_fds::<u32>(&bad, vec![w]), Err(WireError::Refused(_))));
        }
    }

    #[test]
    fn fds_outside_the_context_are_errors() {
        let (_r, w) = pipe();
        let fd = PassFd(w);
        assert!(postcard::to_stdvec(&fd).is_err());
        assert!(crate::wire::encode(&fd).is_err());
        assert!(postcard::from_bytes::<PassFd>(&[0]).is_err());
        assert!(crate::wire::decode::<PassFd>(&[0]).is_err());

        // A format that keeps custom messages shows why.
        use serde::de::IntoDeserializer;
        let d: serde::de::value::U32Deserializer<serde::de::value::Error> =
            0u32.into_deserializer();
        let err = serde_fd::deserialize(d).unwrap_err();
        assert!(err.to_string().contains("fd-carrying encoder"), "{err}");

        // The contexts were restored: encoding works again afterwards.
        assert_eq!(encode_with_fds(&fd).unwrap().1.len(), 1);
        assert!(postcard::to_stdvec(&fd).is_err());
    }

    /// A value whose serialisation nests a second fd-carrying encode.
    struct Nested {
        inner: PassFd,
        outer: PassFd,
    }

    impl Serialize for Nested {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::Error;
            let (bytes, fds) = encode_with_fds(&self.inner).map_err(S::Error::custom)?;
            let mut t = s.serialize_tuple(3)?;
            t.serialize_element(&bytes)?;
            t.serialize_element(&fds.len())?;
            t.serialize_element(&self.outer)?;
            t.end()
        }
    }

    #[test]
    fn nested_encodes_keep_their_own_fds() {
        let (_r1, w1) = pipe();
        let (_r2, w2) = pipe();
        let value = Nested { inner: PassFd(w1), outer: PassFd(w2) };
        let (bytes, fds) = encode_with_fds(&value).unwrap();
        assert_eq!(fds.len(), 1);
        let (inner_bytes, inner_count, outer): (Vec<u8>, usize, PassFd) =
            decode_with_fds(&bytes, fds).unwrap();
        assert_eq!(inner_count, 1);
        // The inner value is index 0, in the self-contained form of its own.
        assert_eq!(inner_bytes[0], 0);
        assert!(inner_bytes.ends_with(&TRAILER_MAGIC));
        drop(outer);
    }

    #[test]
    fn refusals_keep_their_reason() {
        struct Picky;
        impl<'de> Deserialize<'de> for Picky {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let n = u8::deserialize(d)?;
                Err(refuse(format!("{n} is not welcome")))
            }
        }
        let (bytes, fds) = encode_with_fds(&7u8).unwrap();
        match decode_with_fds::<Picky>(&bytes, fds) {
            Err(WireError::Refused(why)) => assert_eq!(why, "7 is not welcome"),
            other => panic!("{:?}", other.map(|_| ())),
        }
    }
}
