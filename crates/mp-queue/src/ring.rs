//! The shared ring behind every queue: the protocol that makes a queue safe against processes
//! killed in the middle of a `put` or a `get`.
//!
//! # Layout
//! One anonymous, sealed memfd holds a page of [`Header`](crate::header::Header) (atomics only)
//! and the ring, a power-of-two number of bytes mapped twice in a row so that a record that
//! wraps around the end is one slice. Beside it: a robust [`Lock`] for producers and one for
//! consumers, a `SOCK_SEQPACKET` pair (the side channel for descriptors), and an eventfd
//! doorbell for [`wait`](crate::wait).
//!
//! # Records
//! A record is a 16-byte header (the *hint* word `u64`; the payload length `u32` with the
//! flags in its top 2 bits; the side-channel id `u32`; little endian), the payload, and
//! padding to a multiple of 8. The payload is the message's
//! postcard encoding, written straight into the ring; or, for a message larger than half the
//! ring ([`OUT_OF_BAND`]), the encoding of an [`OutOfBand`] naming an anonymous segment that
//! holds the message. A record whose message (or segment) carries descriptors has the
//! [`HAS_FDS`] flag: its descriptors travel on the side channel in a packet tagged with the
//! record's id.
//!
//! # Publishing last
//! `tail` and `head` each pack a message count (high 32 bits) and a byte position (low 32 bits)
//! into one word, so that one atomic store publishes a message or consumes one.
//! - A producer measures the message, waits (without any lock) for room, takes the producer
//!   lock, encodes the message into the free part of the ring, sends its descriptors if it
//!   has any, and stores the new `tail`. Killed before that store, it has published
//!   nothing: the next producer (told by the robust lock that the owner died) writes over its
//!   bytes. A side-channel packet it sent is an orphan that consumers drop (its id matches no
//!   record).
//! - The hint: `tail` is the truth, but a consumer that waits for the next message would read
//!   the producers' `tail` line for every message, and the producer then writes it again: two
//!   cache-line transfers per message on top of the record's own. So a producer also says it
//!   in the record: before storing `tail` it clears the hint word where the *next* record will
//!   start (the room check keeps [`HINT_ROOM`] bytes past every record free for this), and
//!   after storing `tail` it writes into the record's own hint word the `tail` it has just
//!   stored. A waiting consumer spins on the hint word at `head` alone, which is 0 until that
//!   record is published; the record's line is the only one that moves. A hint is taken only
//!   if it is one message past the head and one record header to a ring's length further,
//!   and it is then a `tail` the producers published: the consumer checks the record against
//!   it as against `tail` itself, so a record's bytes, whatever they hold, never move `head`
//!   past `tail`. A hint is never needed: a producer killed between its `tail` store and its
//!   hint leaves a published record without one, which consumers find by `tail` (a
//!   non-blocking `get`, and every wait before it sleeps, reads `tail`).
//! - A consumer takes the consumer lock, decodes the message at `head` out of the ring (its
//!   descriptors it *peeks* from the side channel, leaving the packet there), stores the new
//!   `head`, and only then removes the packet. Killed before the store, it has consumed
//!   nothing: the next consumer decodes the same record. Killed after it, the message is gone
//!   with it (it had left the queue); a packet it did not remove is dropped by the next
//!   consumer as stale.
//!
//! So among the living every message is delivered exactly once; a process killed inside a
//! `put` may or may not have published its message, and one killed inside a `get` may or may
//! not have taken it. Nobody sleeps holding a lock (except a producer waiting for room on the
//! side channel), so a dead sleeper blocks nobody.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use std::sync::Arc;

use mp_process::fdpass::{
    self, Kind as ObjectKind, ObjectId, PassFd, SharedObject, check, new_object_id, refuse,
};
use mp_process::os;
use mp_process::wire::WireError;
use mp_shm::SharedMemory;
use mp_sync::futex::SpinBackoff;
use mp_sync::{Lock, LockError, LockGuard};
use postcard::ser_flavors::{Size, Slice};
use rustix::io::Errno;
use rustix::net::{RecvFlags, SendFlags, SocketType};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::header::{self, QUEUE_MAGIC, Wake};
use crate::sys::Mirror;

/// Queue waits spin this many times `mp_sync::spin_limit()` before they sleep: a queue's other
/// side is usually busy producing or consuming, and a sleep costs both sides a system call.
const SPIN_FACTOR: u32 = 10;

/// A spinning wait looks at its condition once per this many spin pauses.
const LOOK_EVERY: u32 = 4;

/// The size of a record header.
const RECORD_HEADER: usize = 16;

/// The bytes past every record that producers keep free: the next record's hint word, which
/// a producer clears before it publishes (see the module's docs).
const HINT_ROOM: usize = 8;

/// Where a record's flags sit in its length word (payloads in the ring are shorter than half
/// of a ring of at most 1 GiB, so the top 2 bits are free).
const FLAGS_SHIFT: u32 = 30;

/// Record flag: the record's descriptors wait on the side channel.
const HAS_FDS: u32 = 1;

/// Record flag: the payload is an [`OutOfBand`] reference, not the message.
const OUT_OF_BAND: u32 = 2;

/// The default size of a queue's ring in bytes (4 MiB).
pub const DEFAULT_CAPACITY: usize = 4 << 20;

/// The smallest ring (one page on most machines).
pub const MIN_CAPACITY: usize = 4096;

/// The largest ring (1 GiB): positions are kept modulo 2^32.
pub const MAX_CAPACITY: usize = 1 << 30;

/// The default largest message in bytes, as encoded (64 MiB, as for connections).
pub const DEFAULT_MAX_MESSAGE: usize = mp_process::wire::DEFAULT_MAX_FRAME;

/// Which queue type a segment belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `Queue`.
    Queue = 1,
    /// `JoinableQueue`.
    Joinable = 2,
    /// `SimpleQueue`.
    Simple = 3,
}

impl Kind {
    /// The queue type's name, as errors show it.
    fn name(self) -> &'static str {
        match self {
            Kind::Queue => "mp_queue::Queue",
            Kind::Joinable => "mp_queue::JoinableQueue",
            Kind::Simple => "mp_queue::SimpleQueue",
        }
    }

    /// The kind stored as `raw`.
    fn from_raw(raw: u64) -> Option<Kind> {
        match raw {
            1 => Some(Kind::Queue),
            2 => Some(Kind::Joinable),
            3 => Some(Kind::Simple),
            _ => None,
        }
    }
}

/// A message too large for the ring: an anonymous segment holding its encoding, and the
/// descriptors that encoding refers to.
#[derive(Serialize, Deserialize)]
struct OutOfBand {
    /// The segment (a sealed memfd, checked when received).
    segment: SharedMemory,
    /// The length of the encoding at the start of the segment.
    len: u64,
    /// The message's own descriptors.
    fds: Vec<PassFd>,
}

/// This process's pid as a `u32`.
fn my_pid() -> u32 {
    mp_process::os::pid()
}

/// The message count packed in a `tail` or `head` word.
fn count(word: u64) -> u32 {
    (word >> 32) as u32
}

/// The byte position packed in a `tail` or `head` word.
fn position(word: u64) -> u32 {
    word as u32
}

/// A `tail` or `head` word.
fn pack(count: u32, position: u32) -> u64 {
    (u64::from(count) << 32) | u64::from(position)
}

/// Whether `later` is a word published after `earlier` (more messages, at most `capacity`
/// bytes further): a sanity check on cached words.
fn ahead(earlier: u64, later: u64, capacity: usize) -> bool {
    let messages = count(later).wrapping_sub(count(earlier)) as i32;
    let bytes = position(later).wrapping_sub(position(earlier)) as usize;
    messages > 0 && bytes <= capacity
}

/// The ring space a record with a payload of `len` bytes takes.
fn record_len(len: usize) -> usize {
    (RECORD_HEADER + len).next_multiple_of(8)
}

/// The most descriptors one side-channel record carries.
pub(crate) const MAX_SIDE_FDS: usize = os::fds::MAX_FDS;

/// Sends the side-channel record `id` with `fds`, waiting for room until `deadline`.
/// Returns `false` if the deadline passed first (nothing sent).
fn side_send(
    sock: BorrowedFd<'_>,
    id: u64,
    fds: &[BorrowedFd<'_>],
    deadline: Option<Instant>,
) -> Result<bool> {
    let bytes = id.to_le_bytes();
    let flags = SendFlags::NOSIGNAL | SendFlags::DONTWAIT;
    loop {
        match os::fds::send(sock, &[IoSlice::new(&bytes)], fds, flags) {
            Ok(_) => return Ok(true),
            Err(Errno::AGAIN) => {
                if !os::poll::writable(sock, deadline).map_err(|e| Error::io("poll", e))? {
                    return Ok(false);
                }
            }
            Err(e) => return Err(Error::io("sendmsg (queue side channel)", e)),
        }
    }
}

/// Receives the next side-channel record, leaving it in the socket if `peek`. Returns `None`
/// when the channel is empty; the id is `None` for a record that is not 8 bytes long.
#[allow(clippy::type_complexity)]
fn side_recv(sock: BorrowedFd<'_>, peek: bool) -> Result<Option<(Option<u64>, Vec<OwnedFd>)>> {
    let mut bytes = [0u8; 8];
    let flags = if peek { RecvFlags::DONTWAIT | RecvFlags::PEEK } else { RecvFlags::DONTWAIT };
    match os::fds::recv(sock, &mut [IoSliceMut::new(&mut bytes)], flags) {
        Ok(got) => {
            let whole = got.bytes == 8 && !got.truncated && !got.fds_dropped;
            Ok(Some((whole.then(|| u64::from_le_bytes(bytes)), got.fds)))
        }
        Err(Errno::AGAIN) => Ok(None),
        Err(e) => Err(Error::io("recvmsg (queue side channel)", e)),
    }
}

/// A message on its way into the ring.
struct Message<'a, T: ?Sized> {
    /// The value.
    value: &'a T,
    /// For a message too large for the ring: the encoded [`OutOfBand`] and its descriptors.
    out_of_band: Option<(Vec<u8>, Vec<OwnedFd>)>,
    /// The value's encoded size.
    size: usize,
    /// Whether the value holds descriptors (so it needs mp's fd-carrying encoder).
    has_fds: bool,
}

/// How a non-failing `put` ended.
pub(crate) enum Put {
    /// The message is in the queue.
    Done,
    /// No room before the deadline (or at once, for a non-blocking put).
    Full,
}

/// The settings of a new ring.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    /// The ring's size in bytes.
    pub(crate) capacity: usize,
    /// The most items (0: no limit but the ring's bytes).
    pub(crate) maxsize: usize,
    /// The largest message, encoded.
    pub(crate) max_message: usize,
}

/// What one side of this process last knew of the ring, to spare a read of the other side's
/// cache line per operation.
///
/// `own` is the word this side last published (or read); `other` the other side's word, read
/// (with `Acquire`) while `own` was current. While the shared `own` word still equals the
/// cached one, nobody else on this side has moved it, so `other` is a conservative view: the
/// other side only moves forward (producers only add data, consumers only add room). The
/// cache is a hint for the fast path; every decision it cannot confirm reads the shared words.
#[derive(Default)]
struct Cache {
    /// This side's word (`tail` for producers, `head` for consumers).
    own: AtomicU64,
    /// The other side's word, as read while `own` was current.
    other: AtomicU64,
}

impl Cache {
    /// The other side's word if `own` (just read from shared memory) is still the cached one.
    fn other_if(&self, own: u64) -> Option<u64> {
        (self.own.load(Ordering::Acquire) == own).then(|| self.other.load(Ordering::Acquire))
    }

    /// Remembers `own` and `other`.
    fn set(&self, own: u64, other: u64) {
        self.other.store(other, Ordering::Release);
        self.own.store(own, Ordering::Release);
    }
}

/// One process's handle on a queue's shared ring.
pub(crate) struct Ring {
    /// The segment (kept for its descriptor).
    shm: SharedMemory,
    /// The header and the ring, mirrored.
    mirror: Mirror,
    /// Serialises producers.
    put_lock: Lock,
    /// Serialises consumers.
    get_lock: Lock,
    /// The side channel's sending end.
    side_tx: OwnedFd,
    /// The side channel's receiving end.
    side_rx: OwnedFd,
    /// The doorbell: readable while the queue holds messages and someone polls.
    bell: OwnedFd,
    /// The pid of the process that registered this handle as a poller, 0 if none.
    polled_by: AtomicU32,
    /// Producers of this process: the tail they last published and a head seen since.
    put_cache: Cache,
    /// Consumers of this process: the head they last published and a tail seen since.
    get_cache: Cache,
    /// Whether this process's producers spin while they wait for room.
    put_spin: SpinBackoff,
    /// Whether this process's consumers spin while they wait for a message.
    get_spin: SpinBackoff,
    /// The pid of the process that called `close`, or 0: a forked child's copy is open
    /// (Python's queue reopens after a fork).
    closed_by: AtomicU32,
    /// The queue's identity (see `mp_process::fdpass::SharedObject`).
    id: ObjectId,
    /// The queue type.
    kind: Kind,
    /// `std::any::type_name` of the items, as the queue's creator named it.
    item_type: String,
    /// The address of the last `type_name` string found equal to `item_type` when this handle
    /// was received (0: none yet): a handle received again is checked by address, without
    /// comparing the names (see [`Ring::deserialize`]).
    item_type_seen: AtomicUsize,
}

impl Ring {
    /// Creates a queue's ring for items of the type named `item_type`.
    pub(crate) fn create(kind: Kind, settings: Settings, item_type: &str) -> Result<Ring> {
        let Settings { capacity, maxsize, max_message } = settings;
        if !capacity.is_power_of_two()
            || !(MIN_CAPACITY..=MAX_CAPACITY).contains(&capacity)
            || capacity % rustix::param::page_size() != 0
        {
            return Err(Error::InvalidArgument(
                "the ring's capacity must be a power of two from 4 KiB to 1 GiB (and a \
                 multiple of the page size)",
            ));
        }
        if max_message == 0 {
            return Err(Error::InvalidArgument("the largest message size must be at least 1"));
        }
        let shm =
            SharedMemory::new(header::header_len() + capacity).map_err(Error::SharedMemory)?;
        let mirror = Mirror::map(shm.as_fd(), 0, capacity)?;
        let config = &mirror.header().config.0;
        config.capacity.store(capacity as u64, Ordering::Relaxed);
        config.maxsize.store(maxsize as u64, Ordering::Relaxed);
        config.max_message.store(max_message as u64, Ordering::Relaxed);
        config.kind.store(kind as u64, Ordering::Relaxed);
        config.magic.store(QUEUE_MAGIC, Ordering::Release);
        let (side_tx, side_rx) =
            os::socket::seqpacket_pair().map_err(|e| Error::io("socketpair", e))?;
        Ok(Ring {
            shm,
            mirror,
            put_lock: Lock::new().map_err(Error::Sync)?,
            get_lock: Lock::new().map_err(Error::Sync)?,
            side_tx,
            side_rx,
            bell: os::eventfd::doorbell().map_err(|e| Error::io("eventfd", e))?,
            polled_by: AtomicU32::new(0),
            put_cache: Cache::default(),
            get_cache: Cache::default(),
            put_spin: SpinBackoff::default(),
            get_spin: SpinBackoff::default(),
            closed_by: AtomicU32::new(0),
            id: new_object_id(),
            kind,
            item_type: item_type.to_owned(),
            item_type_seen: AtomicUsize::new(0),
        })
    }

    /// Closes the queue for this process.
    pub(crate) fn close(&self) {
        self.closed_by.store(my_pid(), Ordering::Relaxed);
    }

    /// Whether the queue is closed in this process.
    pub(crate) fn is_closed(&self) -> bool {
        let by = self.closed_by.load(Ordering::Relaxed);
        by != 0 && by == my_pid()
    }

    /// The header.
    fn header(&self) -> &header::Header {
        self.mirror.header()
    }

    /// The ring's size in bytes.
    pub(crate) fn capacity(&self) -> usize {
        self.mirror.capacity()
    }

    /// The most items, 0 for no limit.
    pub(crate) fn maxsize(&self) -> usize {
        usize::try_from(self.header().config.0.maxsize.load(Ordering::Relaxed)).unwrap_or(0)
    }

    /// The largest message, encoded.
    pub(crate) fn max_message(&self) -> usize {
        usize::try_from(self.header().config.0.max_message.load(Ordering::Relaxed))
            .unwrap_or(usize::MAX)
    }

    /// The largest record kept in the ring; larger messages go out of band.
    fn inline_max(&self) -> usize {
        self.capacity() / 2
    }

    /// The number of messages in the queue (a snapshot: it may change at once).
    pub(crate) fn qsize(&self) -> usize {
        let h = self.header();
        let head = h.head.0.head.load(Ordering::Acquire);
        let tail = h.tail.0.load(Ordering::Acquire);
        count(tail).wrapping_sub(count(head)) as usize
    }

    /// Whether a message is published and not yet consumed.
    fn available(&self) -> bool {
        self.published().is_some()
    }

    /// Whether a message is published and not yet consumed, as far as this process's cache
    /// and the hint at the head say, without reading `tail`: what a waiting consumer spins on.
    /// `false` may be wrong (a producer killed before its hint), `true` is not.
    fn available_hinted(&self) -> bool {
        let head = self.header().head.0.head.load(Ordering::SeqCst);
        self.tail_known(head).is_some()
    }

    /// A published tail past `head` known without reading `tail`: this process's cache when
    /// the head is where this process left it, else the hint of the record at `head` (then
    /// cached).
    fn tail_known(&self, head: u64) -> Option<u64> {
        // Threads of this process may race on the cache and pair `head` with an older tail:
        // use it only if it is ahead of the head.
        let cached =
            self.get_cache.other_if(head).filter(|&tail| ahead(head, tail, self.capacity()));
        cached.or_else(|| {
            let tail = self.hinted(head)?;
            self.get_cache.set(head, tail);
            Some(tail)
        })
    }

    /// The `tail` published with the record at `head`, as its hint gives it: one message past
    /// the head, one record header to the ring's length (less the hint room) further, else
    /// `None`.
    fn hinted(&self, head: u64) -> Option<u64> {
        // SAFETY: positions are multiples of 8; the hint words of the ring are accessed only
        // atomically (producers write records past them, `write`), or under the protocol's
        // order once they lie inside a consumed record's place.
        let word = unsafe { self.mirror.word64(position(head)) };
        let hint = word.load(Ordering::Acquire);
        let one_more = count(hint) == count(head).wrapping_add(1);
        let bytes = position(hint).wrapping_sub(position(head)) as usize;
        (one_more && (RECORD_HEADER..=self.capacity() - HINT_ROOM).contains(&bytes)).then_some(hint)
    }

    /// The head and the published tail if a message waits there: from this process's cache
    /// when the head is where this process left it, else from the record's hint, else from
    /// the ring's `tail`.
    fn published(&self) -> Option<(u64, u64)> {
        let h = self.header();
        let head = h.head.0.head.load(Ordering::SeqCst);
        if let Some(tail) = self.tail_known(head) {
            return Some((head, tail));
        }
        let tail = h.tail.0.load(Ordering::SeqCst);
        self.get_cache.set(head, tail);
        (count(tail) != count(head)).then_some((head, tail))
    }

    /// Whether a record of `need` bytes fits now (with [`HINT_ROOM`] bytes free past it), and
    /// the item limit allows one more.
    fn has_room(&self, need: usize) -> bool {
        let h = self.header();
        let tail = h.tail.0.load(Ordering::SeqCst);
        let fits = |head: u64| {
            let used = position(tail).wrapping_sub(position(head)) as usize;
            let maxsize = self.maxsize();
            let items = count(tail).wrapping_sub(count(head)) as usize;
            self.capacity().saturating_sub(used) >= need + HINT_ROOM
                && (maxsize == 0 || items < maxsize)
        };
        let cached = self.put_cache.other_if(tail);
        if cached.is_some_and(|head| !ahead(tail, head, self.capacity()) && fits(head)) {
            return true;
        }
        let head = h.head.0.head.load(Ordering::SeqCst);
        self.put_cache.set(tail, head);
        fits(head)
    }

    /// Whether the queue holds `maxsize` items (always false without a limit).
    pub(crate) fn full(&self) -> bool {
        let maxsize = self.maxsize();
        maxsize != 0 && self.qsize() >= maxsize
    }

    /// Takes `lock` until `deadline`: `None` if the deadline passed first. A dead previous
    /// holder is no obstacle: the queue's shared state is consistent at every instant.
    fn lock<'a>(lock: &'a Lock, deadline: Option<Instant>) -> Result<Option<LockGuard<'a>>> {
        let result = match deadline {
            None => lock.acquire().map(Some),
            Some(d) => lock.acquire_timeout(d.saturating_duration_since(Instant::now())),
        };
        match result {
            Ok(guard) => Ok(guard),
            Err(LockError::OwnerDied(guard)) => Ok(Some(guard)),
            Err(LockError::Failed(e)) => Err(Error::Sync(e)),
        }
    }

    /// Spins until `quick` holds, for 10 × `mp_sync::spin_limit()` pauses at most; whether it
    /// did.
    #[inline]
    fn spin(mut quick: impl FnMut() -> bool) -> bool {
        // Looking every few pauses (~40 ns each on this project's machine), not at every one:
        // a consumer that has caught up with a producer pulls the line the producer writes
        // next, and each look between two of its writes costs the producer a transfer of that
        // line (queue_small: +25% to +45% from this alone).
        for i in 0..mp_sync::spin_limit().saturating_mul(SPIN_FACTOR) {
            if i % LOOK_EVERY == 0 && quick() {
                return true;
            }
            std::hint::spin_loop();
        }
        false
    }

    /// Sleeps on `wake` until `ready` holds, the word changes, or `deadline`; spins first if
    /// `backoff` says spinning pays, looking at `quick` (a cheaper test that may miss what
    /// `ready` sees, never the reverse). Returns whether the deadline passed.
    fn sleep_until(
        wake: &Wake,
        deadline: Option<Instant>,
        backoff: &SpinBackoff,
        mut quick: impl FnMut() -> bool,
        mut ready: impl FnMut() -> bool,
    ) -> Result<bool> {
        if mp_sync::futex::can_spin() && backoff.next_spins() {
            let won = Self::spin(&mut quick);
            backoff.spun(won);
            if won {
                return Ok(false);
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(!ready());
        }
        wake.waiters.fetch_add(1, Ordering::SeqCst);
        let seen = wake.word.load(Ordering::SeqCst);
        let expired = if ready() {
            Ok(false)
        } else {
            os::futex::wait(&wake.word, seen, deadline).map_err(|e| Error::io("futex wait", e))
        };
        wake.waiters.fetch_sub(1, Ordering::SeqCst);
        expired
    }

    /// Wakes everyone sleeping on `wake`, if anyone is.
    fn wake_all(wake: &Wake) {
        if wake.waiters.load(Ordering::SeqCst) != 0 {
            wake.word.fetch_add(1, Ordering::SeqCst);
            os::futex::wake_all(&wake.word);
        }
    }

    /// Puts `value`, waiting for room until `deadline` unless `nonblocking`.
    pub(crate) fn put<T: Serialize + ?Sized>(
        &self,
        value: &T,
        deadline: Option<Instant>,
        nonblocking: bool,
    ) -> Result<Put> {
        // Plain postcard first; a value holding descriptors fails there (they only serialise
        // inside mp's fd-carrying encoder) and is measured again with it.
        let (size, has_fds) = match postcard::serialize_with_flavor(value, Size::default()) {
            Ok(size) => (size, false),
            Err(_) => (fdpass::encode_with_flavor(value, Size::default())?.0, true),
        };
        let max = self.max_message();
        if size > max {
            return Err(Error::Wire(WireError::Oversized { len: size as u64, max }));
        }
        // A message too large for the ring goes into its own segment, encoded before any lock.
        let out_of_band = if record_len(size) > self.inline_max() {
            let segment = SharedMemory::new(size.max(1)).map_err(Error::SharedMemory)?;
            // SAFETY: `as_mut_slice` asks that nobody else reads or writes the segment while
            // the slice lives: it was created just above and is not shared yet.
            let buf = unsafe { segment.as_mut_slice() };
            let (written, fds) = fdpass::encode_with_flavor(value, Slice::new(buf))?;
            if written.len() != size {
                return Err(Error::Unstable);
            }
            let reference =
                OutOfBand { segment, len: size as u64, fds: fds.into_iter().map(PassFd).collect() };
            Some(fdpass::encode_with_fds(&reference)?)
        } else {
            None
        };
        let payload_len = out_of_band.as_ref().map_or(size, |(bytes, _)| bytes.len());
        let need = record_len(payload_len);
        let h = self.header();
        loop {
            if self.has_room(need) {
                let Some(guard) = Self::lock(&self.put_lock, deadline)? else {
                    return Ok(Put::Full);
                };
                if self.has_room(need) {
                    let message = Message { value, out_of_band, size, has_fds };
                    // A non-blocking put does not wait for room on the side channel either.
                    let side_deadline = if nonblocking { Some(Instant::now()) } else { deadline };
                    return self.write(guard, message, need, side_deadline);
                }
                drop(guard);
            }
            if nonblocking {
                return Ok(Put::Full);
            }
            let room = || self.has_room(need);
            if Self::sleep_until(&h.space.0, deadline, &self.put_spin, room, room)? {
                return Ok(Put::Full);
            }
        }
    }

    /// Writes and publishes one record, holding the producer lock (`guard`), with room for
    /// `need` bytes checked.
    fn write<T: Serialize + ?Sized>(
        &self,
        guard: LockGuard<'_>,
        message: Message<'_, T>,
        need: usize,
        deadline: Option<Instant>,
    ) -> Result<Put> {
        let Message { value, out_of_band, size, has_fds } = message;
        let h = self.header();
        failpoint!(Put, 1);
        let tail = h.tail.0.load(Ordering::Relaxed);
        let at = position(tail);
        // SAFETY: `need <= capacity` (checked by `has_room`), we hold the producer lock, and
        // the bytes from the published tail on, up to `need` of them, are free: consumers
        // read only below the tail, and `has_room` saw the head far enough ahead (it only
        // moves further). The record's first 8 bytes, its hint word, are left out: a waiting
        // consumer reads that word meanwhile, atomically.
        let record = unsafe { self.mirror.bytes_mut(at.wrapping_add(8), need - 8) };
        let (header, body) = record.split_at_mut(RECORD_HEADER - 8);
        let (mut flags, fds, len) = match out_of_band {
            Some((bytes, fds)) => {
                let dst = body.get_mut(..bytes.len()).ok_or(Error::Unstable)?;
                dst.copy_from_slice(&bytes);
                (OUT_OF_BAND, fds, bytes.len())
            }
            None => {
                let dst = body.get_mut(..size).ok_or(Error::Unstable)?;
                let (written, fds) = if has_fds {
                    fdpass::encode_with_flavor(value, Slice::new(dst))?
                } else {
                    let written = postcard::serialize_with_flavor(value, Slice::new(dst))
                        .map_err(|e| Error::Wire(WireError::Encode(e)))?;
                    (written, Vec::new())
                };
                if written.len() != size {
                    return Err(Error::Unstable);
                }
                (0, fds, size)
            }
        };
        failpoint!(Put, 2);
        let mut id = 0u64;
        if !fds.is_empty() {
            if fds.len() > MAX_SIDE_FDS {
                return Err(Error::Wire(WireError::TooManyFds {
                    count: fds.len(),
                    max: MAX_SIDE_FDS,
                }));
            }
            // The record holds 32 bits of the id: ids wrap long after any packet is stale.
            id = h.next_id.0.fetch_add(1, Ordering::Relaxed) & u64::from(u32::MAX);
            let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(AsFd::as_fd).collect();
            if !side_send(self.side_tx.as_fd(), id, &borrowed, deadline)? {
                return Ok(Put::Full);
            }
            flags |= HAS_FDS;
        }
        failpoint!(Put, 3);
        let len =
            u32::try_from(len).ok().filter(|l| l >> FLAGS_SHIFT == 0).ok_or(Error::Unstable)?;
        header[..4].copy_from_slice(&(len | flags << FLAGS_SHIFT).to_le_bytes());
        header[4..8].copy_from_slice(&(id as u32).to_le_bytes());
        let published = pack(count(tail).wrapping_add(1), at.wrapping_add(need as u32));
        // SAFETY: positions are multiples of 8; the next record's hint word lies in the
        // `HINT_ROOM` bytes `has_room` kept free past this record, which nobody reads but
        // atomically (a consumer that finished this record, once it is published).
        let next_hint = unsafe { self.mirror.word64(position(published)) };
        next_hint.store(0, Ordering::Relaxed);
        // Publish: one store makes the whole record visible. A release store, not a
        // sequentially consistent one (an `xchg` on x86-64, a full barrier per message that
        // waits for the record's lines: queue_small +3 to +12 % in this machine's slow
        // phase): the order a sleeper needs, this store before the read of its `waiters` in
        // `wake_all`, comes from the producer lock's release in between, a full fence
        // (`LockGuard`).
        h.tail.0.store(published, Ordering::Release);
        failpoint!(Put, 4);
        // SAFETY: as for `hinted`: the hint word at `at` is accessed only atomically.
        let hint = unsafe { self.mirror.word64(at) };
        hint.store(published, Ordering::Release);
        if let Some(head) = self.put_cache.other_if(tail) {
            self.put_cache.set(published, head);
        }
        failpoint!(Put, 5);
        drop(guard);
        Self::wake_all(&h.data.0);
        if h.pollers.0.load(Ordering::SeqCst) != 0 {
            os::eventfd::ring(self.bell.as_fd());
        }
        Ok(Put::Done)
    }

    /// Gets the next message, waiting until `deadline` unless `nonblocking`. `Ok(None)`: the
    /// queue stayed empty.
    pub(crate) fn get<T: DeserializeOwned>(
        &self,
        deadline: Option<Instant>,
        nonblocking: bool,
    ) -> Result<Option<T>> {
        let h = self.header();
        // A blocking get looks at the hint first and reads `tail` only once its spin is over
        // (see the module's docs); a non-blocking one reads it at once.
        let mut look_at_tail = nonblocking;
        loop {
            if self.available_hinted() || (look_at_tail && self.available()) {
                let Some(guard) = Self::lock(&self.get_lock, deadline)? else {
                    return Ok(None);
                };
                if self.available() {
                    return self.take(guard).map(Some);
                }
                drop(guard);
            }
            if nonblocking {
                return Ok(None);
            }
            let (quick, ready) = (|| self.available_hinted(), || self.available());
            if Self::sleep_until(&h.data.0, deadline, &self.get_spin, quick, ready)? {
                return Ok(None);
            }
            look_at_tail = true;
        }
    }

    /// Decodes and consumes the record at the head, holding the consumer lock (`guard`), with
    /// a record known to be published.
    fn take<T: DeserializeOwned>(&self, guard: LockGuard<'_>) -> Result<T> {
        let h = self.header();
        failpoint!(Get, 1);
        let Some((head, tail)) = self.published() else {
            return Err(self.corrupt(guard, "a message vanished under the consumer lock"));
        };
        let at = position(head);
        let used = position(tail).wrapping_sub(at) as usize;
        if used < RECORD_HEADER || used > self.capacity() {
            return Err(self.corrupt(guard, "the ring's positions are inconsistent"));
        }
        // SAFETY: `RECORD_HEADER <= used <= capacity`; we hold the consumer lock and these
        // bytes lie between the published head and tail, which no producer writes. The hint
        // word before them is read atomically only (`hinted`).
        let header = unsafe { self.mirror.bytes(at.wrapping_add(8), RECORD_HEADER - 8) };
        let word = |i: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&header[i..i + 4]);
            u32::from_le_bytes(b)
        };
        let len = (word(0) & ((1 << FLAGS_SHIFT) - 1)) as usize;
        let flags = word(0) >> FLAGS_SHIFT;
        let id = u64::from(word(4));
        let need = record_len(len);
        if need > used {
            return Err(self.corrupt(guard, "a record is longer than the published data"));
        }
        let fds = if flags & HAS_FDS != 0 { self.side_peek(id)? } else { Ok(Vec::new()) };
        // SAFETY: as for the header: `RECORD_HEADER + len <= need <= used`, between head and
        // tail, and we hold the consumer lock.
        let payload = unsafe { self.mirror.bytes(at.wrapping_add(RECORD_HEADER as u32), len) };
        let result = match fds {
            Ok(fds) if flags & OUT_OF_BAND != 0 => Self::decode_out_of_band(payload, fds),
            Ok(_) if flags & HAS_FDS == 0 => Self::decode_plain(payload),
            Ok(fds) => fdpass::decode_with_fds(payload, fds).map_err(Error::Wire),
            Err(e) => Err(e),
        };
        failpoint!(Get, 2);
        // Consume: one store, after the message was copied out.
        let consumed = pack(count(head).wrapping_add(1), at.wrapping_add(need as u32));
        // A release store: the order a producer asleep for room needs, this store before the
        // read of its `waiters`, comes from the consumer lock's release below (as in `write`).
        h.head.0.head.store(consumed, Ordering::Release);
        self.get_cache.set(consumed, tail);
        failpoint!(Get, 3);
        if flags & HAS_FDS != 0 {
            // Remove the packet peeked above (its descriptors were duplicated by the peek).
            let _ = side_recv(self.side_rx.as_fd(), false);
        }
        failpoint!(Get, 4);
        drop(guard);
        Self::wake_all(&h.space.0);
        self.settle_bell();
        result
    }

    /// Decodes a message that carries no descriptors: plain postcard, with the fd-carrying
    /// decoder run again on failure for its precise error.
    fn decode_plain<T: DeserializeOwned>(payload: &[u8]) -> Result<T> {
        match postcard::take_from_bytes::<T>(payload) {
            Ok((value, [])) => Ok(value),
            Ok((_, rest)) => Err(Error::Wire(WireError::TrailingBytes { extra: rest.len() })),
            Err(_) => Ok(fdpass::decode_with_fds(payload, Vec::new())?),
        }
    }

    /// Decodes a message out of band: the payload is an [`OutOfBand`] reference.
    fn decode_out_of_band<T: DeserializeOwned>(payload: &[u8], fds: Vec<OwnedFd>) -> Result<T> {
        let reference: OutOfBand = fdpass::decode_with_fds(payload, fds)?;
        let bytes = {
            // SAFETY: `as_slice` asks that nobody writes the segment while the slice lives: the
            // producer encoded the message into the segment before publishing
            // its record and never writes it again; nobody else has the segment.
            unsafe { reference.segment.as_slice() }
        };
        let len = usize::try_from(reference.len).unwrap_or(usize::MAX);
        let message = bytes.get(..len).ok_or_else(|| {
            Error::Corrupt("an out-of-band message is longer than its segment".into())
        })?;
        let fds = reference.fds.into_iter().map(PassFd::into_inner).collect();
        Ok(fdpass::decode_with_fds(message, fds)?)
    }

    /// The descriptors of record `id`, peeked from the side channel (the packet stays until
    /// the record is consumed). Packets before it that belong to no record (left by a process
    /// killed mid-operation) are dropped. The outer error is fatal for the call; the inner
    /// one is this message's.
    fn side_peek(&self, id: u64) -> Result<Result<Vec<OwnedFd>>> {
        loop {
            match side_recv(self.side_rx.as_fd(), true)? {
                None => {
                    return Ok(Err(Error::Corrupt(
                        "the descriptors of a message are missing from the side channel".into(),
                    )));
                }
                Some((Some(got), fds)) if got == id => return Ok(Ok(fds)),
                Some(_) => {
                    // A stale packet: drop it (and the duplicates the peek gave us).
                    side_recv(self.side_rx.as_fd(), false)?;
                }
            }
        }
    }

    /// Gives up on a ring whose shared state is inconsistent (written by something other
    /// than this protocol): everything published is dropped so that the queue can go on.
    fn corrupt(&self, guard: LockGuard<'_>, what: &str) -> Error {
        let h = self.header();
        let tail = h.tail.0.load(Ordering::Acquire);
        h.head.0.head.store(tail, Ordering::SeqCst);
        drop(guard);
        Self::wake_all(&h.space.0);
        Error::Corrupt(format!("{what}; the messages in the queue were dropped"))
    }

    /// After a `get`: empties the doorbell if the queue is now empty and someone polls, then
    /// rings it again if a message arrived meanwhile.
    fn settle_bell(&self) {
        if self.header().pollers.0.load(Ordering::SeqCst) != 0 && !self.available() {
            os::eventfd::drain(self.bell.as_fd());
            if self.available() {
                os::eventfd::ring(self.bell.as_fd());
            }
        }
    }

    /// The doorbell, registering this handle as a poller in this process first.
    pub(crate) fn doorbell(&self) -> BorrowedFd<'_> {
        let me = my_pid();
        if self.polled_by.swap(me, Ordering::SeqCst) != me {
            self.header().pollers.0.fetch_add(1, Ordering::SeqCst);
            if self.available() {
                os::eventfd::ring(self.bell.as_fd());
            }
        }
        self.bell.as_fd()
    }

    /// `task_done`: one more item processed.
    pub(crate) fn task_done(&self) -> Result<()> {
        let h = self.header();
        let done = &h.done.0.word;
        let mut seen = done.load(Ordering::SeqCst);
        loop {
            let puts = count(h.tail.0.load(Ordering::SeqCst));
            if puts.wrapping_sub(seen) == 0 {
                return Err(Error::TooManyTaskDone);
            }
            match done.compare_exchange(
                seen,
                seen.wrapping_add(1),
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => break,
                Err(now) => seen = now,
            }
        }
        if h.done.0.waiters.load(Ordering::SeqCst) != 0 {
            os::futex::wake_all(done);
        }
        Ok(())
    }

    /// The number of items put and not yet marked done.
    pub(crate) fn unfinished(&self) -> u32 {
        let h = self.header();
        count(h.tail.0.load(Ordering::SeqCst)).wrapping_sub(h.done.0.word.load(Ordering::SeqCst))
    }

    /// `join`: waits until every item put has been marked done, or `deadline` (then `false`).
    pub(crate) fn join(&self, deadline: Option<Instant>) -> Result<bool> {
        let wake = &self.header().done.0;
        loop {
            if self.unfinished() == 0 {
                return Ok(true);
            }
            wake.waiters.fetch_add(1, Ordering::SeqCst);
            let seen = wake.word.load(Ordering::SeqCst);
            let expired = if self.unfinished() == 0 {
                Ok(false)
            } else {
                os::futex::wait(&wake.word, seen, deadline).map_err(|e| Error::io("futex wait", e))
            };
            wake.waiters.fetch_sub(1, Ordering::SeqCst);
            if expired? {
                return Ok(self.unfinished() == 0);
            }
        }
    }

    /// Receives a ring: the segment must hold a queue with a sane configuration, the side
    /// channel must be a `SOCK_SEQPACKET` socket and the doorbell a non-blocking eventfd.
    fn from_wire(wire: Wire, id: ObjectId) -> std::result::Result<Ring, String> {
        let Wire { shm, put_lock, get_lock, side_tx, side_rx, bell, item_type } = wire;
        let magic = shm.atomic_u64(0).map_err(|e| e.to_string())?.load(Ordering::Acquire);
        if magic != QUEUE_MAGIC {
            return Err("the segment received as a queue does not hold one".into());
        }
        let read = |offset: usize| -> std::result::Result<u64, String> {
            Ok(shm.atomic_u64(offset).map_err(|e| e.to_string())?.load(Ordering::Relaxed))
        };
        // The offsets of `Config`'s fields: magic, capacity, maxsize, max_message, kind.
        let capacity = usize::try_from(read(8)?).unwrap_or(0);
        let kind = Kind::from_raw(read(32)?).ok_or("the queue received is of no known type")?;
        let sane = capacity.is_power_of_two()
            && (MIN_CAPACITY..=MAX_CAPACITY).contains(&capacity)
            && capacity % rustix::param::page_size() == 0
            && shm.size() == header::header_len() + capacity;
        if !sane {
            return Err("the queue received has an impossible ring size".into());
        }
        check::unix_socket(side_tx.as_fd(), SocketType::SEQPACKET, "a queue's side channel")?;
        check::unix_socket(side_rx.as_fd(), SocketType::SEQPACKET, "a queue's side channel")?;
        check::eventfd(bell.as_fd(), "a queue's doorbell")?;
        let mirror = Mirror::map(shm.as_fd(), 0, capacity).map_err(|e| e.to_string())?;
        Ok(Ring {
            shm,
            mirror,
            put_lock,
            get_lock,
            side_tx: side_tx.0,
            side_rx: side_rx.0,
            bell: bell.0,
            polled_by: AtomicU32::new(0),
            put_cache: Cache::default(),
            get_cache: Cache::default(),
            put_spin: SpinBackoff::default(),
            get_spin: SpinBackoff::default(),
            closed_by: AtomicU32::new(0),
            id,
            kind,
            item_type,
            item_type_seen: AtomicUsize::new(0),
        })
    }

    /// Serialises the ring as a shared object (through mp's fd-carrying encoder): defined
    /// once per message, or once per pool worker.
    pub(crate) fn serialize<S: Serializer>(
        self: &Arc<Self>,
        s: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        mp_process::fdpass::serialize_object(self, s)
    }

    /// Deserialises a ring of one of `kinds` holding items of the type named `item_type`:
    /// this process's handle on it, or a new one.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
        kinds: &[Kind],
        item_type: &'static str,
    ) -> std::result::Result<Arc<Ring>, D::Error> {
        let ring: Arc<Ring> = mp_process::fdpass::deserialize_object(d)?;
        if !kinds.contains(&ring.kind) {
            let want = kinds.first().map_or("queue", |k| k.name());
            return Err(refuse(format!(
                "a {} was received where a {want} was expected",
                ring.kind.name()
            )));
        }
        // A static string found equal once is equal again: the same address and length are
        // the same bytes. A pool task's queue is received once per task, so the names are
        // compared once per handle, not once per task.
        let at = item_type.as_ptr() as usize;
        if ring.item_type_seen.load(Ordering::Relaxed) == at
            && ring.item_type.len() == item_type.len()
        {
            return Ok(ring);
        }
        if ring.item_type == item_type {
            ring.item_type_seen.store(at, Ordering::Relaxed);
        } else {
            return Err(refuse(format!(
                "a {}<{}> was received where a {}<{item_type}> was expected",
                ring.kind.name(),
                ring.item_type,
                ring.kind.name(),
            )));
        }
        Ok(ring)
    }
}

/// A ring crosses as a shared object: its segment first, its locks (objects of their own),
/// its side channel, doorbell and item type.
// SAFETY: the kind `mp_queue::Queue` is the ring's alone, and `rebuild` makes a ring only from
// the segment, locks, side channel and doorbell `describe` writes, after checking each (the
// segment's seals, size and header, the socket's type, the eventfd).
unsafe impl SharedObject for Ring {
    const KIND: ObjectKind = ObjectKind::new("mp_queue::Queue");

    fn object_id(&self) -> ObjectId {
        self.id
    }

    fn describe<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        WireRef {
            shm: &self.shm,
            put_lock: &self.put_lock,
            get_lock: &self.get_lock,
            side_tx: mp_process::fdpass::FdRef(&self.side_tx),
            side_rx: mp_process::fdpass::FdRef(&self.side_rx),
            bell: mp_process::fdpass::FdRef(&self.bell),
            item_type: &self.item_type,
        }
        .serialize(s)
    }

    fn rebuild<'de, D: Deserializer<'de>>(
        id: ObjectId,
        d: D,
    ) -> std::result::Result<Self, D::Error> {
        let wire = Wire::deserialize(d)?;
        Ring::from_wire(wire, id).map_err(refuse)
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        let me = my_pid();
        if self.polled_by.load(Ordering::SeqCst) == me {
            self.header().pollers.0.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// The serialised shape of a queue, as sent.
#[derive(Serialize)]
#[serde(rename = "Queue")]
struct WireRef<'a> {
    /// The segment.
    shm: &'a SharedMemory,
    /// The producer lock.
    put_lock: &'a Lock,
    /// The consumer lock.
    get_lock: &'a Lock,
    /// The side channel's sending end.
    side_tx: mp_process::fdpass::FdRef<'a>,
    /// The side channel's receiving end.
    side_rx: mp_process::fdpass::FdRef<'a>,
    /// The doorbell.
    bell: mp_process::fdpass::FdRef<'a>,
    /// The item type's name.
    item_type: &'a str,
}

/// The serialised shape of a queue, as received.
#[derive(Deserialize)]
#[serde(rename = "Queue")]
struct Wire {
    /// The segment.
    shm: SharedMemory,
    /// The producer lock.
    put_lock: Lock,
    /// The consumer lock.
    get_lock: Lock,
    /// The side channel's sending end.
    side_tx: PassFd,
    /// The side channel's receiving end.
    side_rx: PassFd,
    /// The doorbell.
    bell: PassFd,
    /// The item type's name.
    item_type: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn settings() -> Settings {
        Settings { capacity: 1 << 16, maxsize: 0, max_message: DEFAULT_MAX_MESSAGE }
    }

    impl Ring {
        /// Publishes `record` (the header after its hint word, and the payload, as given,
        /// unchecked) as the next record; with its hint if `hint` (without, as left by a
        /// producer killed between its `tail` store and its hint).
        fn put_raw_hinted(&self, record: &[u8], hint: bool) {
            let guard = Self::lock(&self.put_lock, None).unwrap().unwrap();
            let h = self.header();
            let tail = h.tail.0.load(Ordering::Relaxed);
            let need = (8 + record.len()).next_multiple_of(8).max(RECORD_HEADER);
            assert!(self.has_room(need));
            // SAFETY: as in `write`: room checked, producer lock held, hint word left out.
            let dst = unsafe { self.mirror.bytes_mut(position(tail).wrapping_add(8), need - 8) };
            dst[..record.len()].copy_from_slice(record);
            let next = pack(count(tail).wrapping_add(1), position(tail).wrapping_add(need as u32));
            // SAFETY: as in `write`.
            unsafe { self.mirror.word64(position(next)) }.store(0, Ordering::Relaxed);
            h.tail.0.store(next, Ordering::SeqCst);
            if hint {
                // SAFETY: as in `write`.
                unsafe { self.mirror.word64(position(tail)) }.store(next, Ordering::Release);
            }
            drop(guard);
            Self::wake_all(&h.data.0);
        }

        /// Publishes `record` as [`put_raw_hinted`](Self::put_raw_hinted) does, with its hint.
        fn put_raw(&self, record: &[u8]) {
            self.put_raw_hinted(record, true);
        }
    }

    /// After whatever came before, the ring still carries a message.
    fn still_works(ring: &Ring) {
        ring.put(&(42u32, "ok".to_owned()), None, false).unwrap();
        let mut got = None;
        // Earlier garbage may still be queued (if it decoded as an error and a record was
        // consumed); take until the good message.
        for _ in 0..4 {
            if let Ok(Some(v)) = ring.get::<(u32, String)>(None, true) {
                got = Some(v);
                break;
            }
        }
        assert_eq!(got, Some((42, "ok".to_owned())));
        assert_eq!(ring.qsize(), 0);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        /// Random payloads with a valid header decode to a value or an error, never a panic.
        #[test]
        fn random_payloads_are_errors_not_panics(payload in proptest::collection::vec(any::<u8>(), 0..200), flags in 0u32..4) {
            let ring = Ring::create(Kind::Queue, settings(), "test").unwrap();
            let mut record = Vec::new();
            let len = payload.len() as u32 | (flags & OUT_OF_BAND) << FLAGS_SHIFT;
            record.extend_from_slice(&len.to_le_bytes());
            record.extend_from_slice(&0u32.to_le_bytes());
            record.extend_from_slice(&payload);
            ring.put_raw(&record);
            let _ = ring.get::<(u32, String, Vec<i64>, Option<bool>)>(None, true);
            still_works(&ring);
        }

        /// Random record headers (lengths past the data, unknown flags, missing descriptors)
        /// are errors, never panics, and the queue goes on.
        #[test]
        fn random_headers_are_errors_not_panics(header in proptest::collection::vec(any::<u8>(), 8..40)) {
            let ring = Ring::create(Kind::Queue, settings(), "test").unwrap();
            ring.put_raw(&header);
            let _ = ring.get::<Vec<u8>>(None, true);
            still_works(&ring);
        }

        /// Valid messages, mutated in place, decode or fail cleanly.
        #[test]
        fn mutated_messages_are_errors_not_panics(
            value in (any::<u32>(), ".{0,20}", proptest::collection::vec(any::<i64>(), 0..8)),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        ) {
            let (mut bytes, _) = fdpass::encode_with_fds(&value).unwrap();
            for (at, xor) in flips {
                let len = bytes.len();
                if len > 0 {
                    bytes[at % len] ^= xor;
                }
            }
            let ring = Ring::create(Kind::Queue, settings(), "test").unwrap();
            let mut record = Vec::new();
            record.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            record.extend_from_slice(&0u32.to_le_bytes());
            record.extend_from_slice(&bytes);
            ring.put_raw(&record);
            let _ = ring.get::<(u32, String, Vec<i64>)>(None, true);
            still_works(&ring);
        }
    }

    #[test]
    fn a_record_claiming_descriptors_that_never_came_is_an_error() {
        let ring = Ring::create(Kind::Queue, settings(), "test").unwrap();
        let (bytes, _) = fdpass::encode_with_fds(&5u8).unwrap();
        let mut record = Vec::new();
        record.extend_from_slice(&(bytes.len() as u32 | HAS_FDS << FLAGS_SHIFT).to_le_bytes());
        record.extend_from_slice(&99u32.to_le_bytes());
        record.extend_from_slice(&bytes);
        ring.put_raw(&record);
        assert!(matches!(ring.get::<u8>(None, true), Err(Error::Corrupt(_))));
        still_works(&ring);
    }

    #[test]
    fn a_record_without_its_hint_is_found_by_tail() {
        let ring = Ring::create(Kind::Queue, settings(), "test").unwrap();
        let payload = postcard::to_allocvec(&77u64).unwrap();
        let mut record = Vec::new();
        record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        record.extend_from_slice(&0u32.to_le_bytes());
        record.extend_from_slice(&payload);
        // As a producer killed between its `tail` store and its hint leaves it.
        ring.put_raw_hinted(&record, false);
        assert!(!ring.available_hinted(), "no hint, and this process's cache knows nothing");
        assert!(ring.available(), "`tail` says it");
        // A blocking get spins on the hint, then reads `tail` before it would sleep.
        assert_eq!(ring.get::<u64>(None, false).unwrap(), Some(77));
        // With the hint, a waiting consumer sees the record without reading `tail`.
        ring.put_raw(&record);
        assert!(ring.available_hinted());
        assert_eq!(ring.get::<u64>(None, true).unwrap(), Some(77));
        // The word past every published record is clear: nothing is hinted at the head.
        assert!(!ring.available_hinted() && !ring.available());
        still_works(&ring);
    }

    #[test]
    fn a_forged_hint_is_an_error_and_the_next_look_at_tail_repairs_the_queue() {
        let ring = Ring::create(Kind::Queue, settings(), "test").unwrap();
        // A hint where nothing was published (only a writer outside the protocol can put one
        // there, as it could write `head` or `tail`).
        // SAFETY: position 0 is a multiple of 8 and nothing else touches the ring here.
        unsafe { ring.mirror.word64(0) }.store(pack(1, 16), Ordering::Release);
        assert!(ring.available_hinted());
        assert!(ring.get::<u64>(None, true).is_err(), "an empty record decodes as no u64");
        // The consumer went past `tail`; the next look at `tail` sees it and drops the lot.
        assert!(matches!(ring.get::<u64>(None, true), Err(Error::Corrupt(_))));
        still_works(&ring);
    }

    #[test]
    fn a_hint_too_far_or_not_one_message_on_is_not_taken() {
        let ring = Ring::create(Kind::Queue, settings(), "test").unwrap();
        let far = settings().capacity as u32;
        for hint in
            [pack(2, 16), pack(0, 16), pack(1, 0), pack(1, 8), pack(1, far), pack(1, far - 4)]
        {
            // SAFETY: position 0 is a multiple of 8 and nothing else touches the ring here.
            unsafe { ring.mirror.word64(0) }.store(hint, Ordering::Release);
            assert!(!ring.available_hinted(), "{hint:#x} taken");
            assert_eq!(ring.get::<u64>(None, true).unwrap(), None);
        }
        // SAFETY: as above.
        unsafe { ring.mirror.word64(0) }.store(0, Ordering::Release);
        still_works(&ring);
    }

    #[test]
    fn record_bytes_never_move_the_head_past_the_tail() {
        // Whatever a record's length says, the hint bounds it as `tail` does: a length past
        // the record's end is refused, and the queue goes on.
        let ring = Ring::create(Kind::Queue, settings(), "test").unwrap();
        for claimed in [9u32, 100, 60_000] {
            let mut record = Vec::new();
            record.extend_from_slice(&claimed.to_le_bytes());
            record.extend_from_slice(&0u32.to_le_bytes());
            record.extend_from_slice(&[0u8; 8]);
            ring.put_raw(&record);
            assert!(matches!(ring.get::<u64>(None, true), Err(Error::Corrupt(_))));
            let h = ring.header();
            let (head, tail) =
                (h.head.0.head.load(Ordering::SeqCst), h.tail.0.load(Ordering::SeqCst));
            assert_eq!(head, tail, "the head is where the tail is");
            still_works(&ring);
        }
    }

    #[test]
    fn a_wait_whose_spin_ran_out_makes_the_next_sleep_at_once() {
        let ring = Ring::create(Kind::Queue, settings(), "test").unwrap();
        let soon = Instant::now() + std::time::Duration::from_millis(20);
        assert_eq!(ring.get::<u64>(Some(soon), false).unwrap(), None);
        if mp_sync::futex::can_spin() {
            assert!(!ring.get_spin.next_spins(), "the spin ran out: the next wait sleeps at once");
            assert!(ring.get_spin.next_spins(), "one wait only, after the first loss");
        }
        // A message that comes while a wait spins resets the policy.
        ring.put(&5u64, None, false).unwrap();
        assert_eq!(ring.get::<u64>(None, false).unwrap(), Some(5));
        still_works(&ring);
    }

    #[test]
    fn a_producer_keeps_room_for_the_next_hint() {
        // A 4 KiB ring takes records up to 4 KiB - 8 bytes in all, never the last 8.
        let ring = Ring::create(
            Kind::Queue,
            Settings { capacity: 4096, maxsize: 0, max_message: DEFAULT_MAX_MESSAGE },
            "test",
        )
        .unwrap();
        let item = vec![5u8; 1000];
        let mut put = 0;
        while let Put::Done = ring.put(&item, None, true).unwrap() {
            put += 1;
        }
        // Each record: 16 bytes of header, 2 of length, 1000 of bytes, padded to 1024.
        assert_eq!(put, 3, "four records of 1024 bytes would leave no room for the hint");
        for _ in 0..put {
            assert_eq!(ring.get::<Vec<u8>>(None, true).unwrap(), Some(item.clone()));
        }
        still_works(&ring);
    }

    #[test]
    fn positions_and_counts_pack_into_one_word() {
        let w = pack(7, u32::MAX - 3);
        assert_eq!(count(w), 7);
        assert_eq!(position(w), u32::MAX - 3);
        assert_eq!(record_len(0), 16);
        assert_eq!(record_len(1), 24);
        assert_eq!(record_len(8), 24);
    }
}
