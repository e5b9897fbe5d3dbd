//! A pipe's shared-memory lanes: how small messages skip the socket while the receiver is
//! looking for them.
//!
//! A pipe has one sealed memfd with a lane per direction: a page of header (the queue
//! [`Header`](crate::header::Header) layout) and a ring mapped twice, as a queue's. A lane has one
//! sender and one receiver at a time: every handle on an end, in every process, sends under
//! the end's send lock and receives under its receive lock (`connection.rs`). Even without
//! them nothing here is undefined behaviour: every length is checked, and a lane written by
//! two senders at once gives [`Error::Corrupt`].
//!
//! # The receiving side's state
//! The header's `next_id` word, which only queues use, holds what every receiver of the end
//! must know, in every process: [`BROKEN`] once a receive stopped inside a message (the stream
//! position is lost), and [`IN_FRAME`] while a receiver reads a frame from the socket, so that
//! the next receiver, told by the receive lock that its holder died, knows whether the holder
//! died inside a frame (the stream is broken) or between messages (it is not).
//!
//! # The protocol
//! - Places: a record's first word, its *stamp word*, says what the place holds: a record
//!   (the [`STAMPED`] bit and the message's number, [`stamp`]), or no record and flags:
//!   [`OPEN`] (senders may publish a record there), [`POKE`] (look at the socket and the close
//!   count), [`SLEEPING`] (the receiver sleeps on the word's futex: whoever changes the word
//!   wakes it). The receiver's head is always such a place, so everything that concerns the
//!   next message meets in one word, on the cache line that carries the message.
//! - Opening: a receive that finds nothing opens the lane at its head ([`Lane::open`]) and
//!   renews its *lease* (`alive_until`, on the coarse monotonic clock, 30 ms, renewed when
//!   less than half is left): a promise that it is alive, so that a killed receiver's
//!   senders go back to the socket (and its `EPIPE`) within a lease; what they put in the
//!   lane meanwhile is lost with the receiver, as bytes in a socket buffer would be. The lane
//!   stays open after the receive: records that come meanwhile wait for the next receive.
//! - Sending: a sender uses the lane only for a message without descriptors of at most
//!   [`LANE_MAX_MESSAGE`] bytes, with room in the ring, while the lease holds (each process's
//!   senders read it again only when their copy runs out) and the place at the tail is open.
//!   It writes the record past the stamp word, sets the next place to [`OPEN`] (so the
//!   receiver, once past this record, never takes bytes of an older lap for a record, and the
//!   lane stays open there), and publishes by a compare-and-swap of the stamp word from its
//!   flags to the stamp, which fails if the lane was closed meanwhile (then the message takes
//!   the socket, and what was written stays in free space); if the flags said
//!   [`SLEEPING`], it wakes the receiver. The senders' room comes from `send_limit` (the
//!   published head plus the capacity, shared by the senders), and the receiver publishes its
//!   head (its exact head is `reader`) once per [`PUBLISH_EVERY`] bytes: so in the steady
//!   state a message moves the record's cache lines and nothing else.
//! - Polling and closing: a record in the lane does not make the socket readable, so a
//!   poller (`Connection::as_fd` for `wait`, `Connection::poll`) and the close of a receiving
//!   handle first close the lane at the head ([`Lane::withdraw`]: [`OPEN`] off, by the same
//!   word the sender publishes with): either the poller sees the record, or the sender sees
//!   the lane closed and takes the socket, which the poller watches. The next receive opens
//!   the lane again.
//! - Sleeping: a receiver that has spun its budget (or spins not at all) sets [`SLEEPING`] in
//!   the place at its head and sleeps on its futex, in naps of 4 ms doubling to 50 ms, its
//!   lease renewed past each nap. Between naps it looks at the socket without blocking (end
//!   of file, or a frame no sender counted), and before the first only if a handle on the
//!   sending end was closed since it last looked (`closes`). A socket frame, and the close of
//!   a handle on the sending end by a holder of its send lock, *poke* the receiver: [`POKE`]
//!   in the place at the tail (the receiver's head when it sleeps) and a wake-up if it sleeps
//!   there; the receiver clears both flags when it wakes, and looks.
//! - Order: the sender counts the frames it sends on the socket (`socket_sent`, raised just
//!   before each frame; the sleeping receiver is poked before a large frame, so that it comes
//!   to read a frame larger than the socket's buffer, and after a small one) and writes that
//!   count in each lane record; the
//!   receiver counts the frames it has read (`socket_taken`), reads the socket (blocking)
//!   while the counts differ, and takes a lane record only once it has read every frame sent
//!   before it. The receiver reads `socket_sent` before it looks at the lane, so that a record
//!   published before a frame was counted is always seen before that frame is read. Bytes on
//!   the socket that no count announces (a frame written by other means) are read as they
//!   come, uncounted. A sender killed between counting a frame and sending it leaves the receiver
//!   waiting for that frame on the socket, as a sender killed in the middle of a frame did
//!   before lanes existed; one killed between publishing a record and moving the tail leaves
//!   the lane to the socket (its successors never write over a record).

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mp_process::os;
use mp_shm::SharedMemory;
use mp_sync::futex::SpinBackoff;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::header::{self, Header};
use crate::sys::Mirror;

/// The magic number of a lane's header ("mpLANE01").
const LANE_MAGIC: u64 = u64::from_le_bytes(*b"mpLANE01");

/// The receiving side's state: the stream is broken.
const BROKEN: u64 = 1;

/// The receiving side's state: a receiver is reading a frame from the socket.
const IN_FRAME: u64 = 2;

/// The size of a lane's ring.
const LANE_CAPACITY: usize = 4 << 20;

/// The largest message a lane carries; larger ones take the socket.
pub(crate) const LANE_MAX_MESSAGE: usize = LANE_CAPACITY / 2;

/// How long a receiver's lease lasts from each receive (see [`Lane::open`]): how late senders
/// notice a receiver that was killed; renewed when less than half of it is left.
const LEASE: Duration = Duration::from_millis(30);

/// How often, in bytes taken, a receiver publishes its head for the senders' room check.
const PUBLISH_EVERY: u32 = (LANE_CAPACITY / 16) as u32;

/// A lane record's header: its stamp word (`u32`, see [`stamp`]), the payload's length
/// (`u32`), then the number of socket frames sent before it (`u64`).
const RECORD_HEADER: usize = 16;

/// The bit set in every record's stamp word; a place without it holds no record, only the
/// flags below.
const STAMPED: u32 = 1 << 31;

/// A place's flag: the lane is open, senders may write a record there (see [`Lane::open`]).
const OPEN: u32 = 1;

/// A place's flag: a sender sent a socket frame, or a handle on the sending end was closed,
/// since the receiver last looked (see [`Lane::poke`]).
const POKE: u32 = 2;

/// A place's flag: the receiver sleeps on the place's futex; whoever changes the word wakes it.
const SLEEPING: u32 = 4;

/// Every flag of a place without a record; other bits there are corruption.
const FLAGS: u32 = OPEN | POKE | SLEEPING;

/// The stamp word of the record of message number `count` (modulo 2^31).
fn stamp(count: u32) -> u32 {
    STAMPED | (count & !STAMPED)
}

/// What a place's stamp word says, where the record of message number `count` is expected.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Place {
    /// The record, published.
    Record,
    /// No record: these flags.
    Free(u32),
    /// Another message's stamp, or bits no party writes.
    Corrupt,
}

/// Reads the stamp word `word` of the place where message number `count` goes.
fn place(word: u32, count: u32) -> Place {
    if word & STAMPED != 0 {
        if word == stamp(count) { Place::Record } else { Place::Corrupt }
    } else if word & !FLAGS != 0 {
        Place::Corrupt
    } else {
        Place::Free(word)
    }
}

/// The ring space of a record with `len` bytes of payload.
fn record_len(len: usize) -> usize {
    (RECORD_HEADER + len).next_multiple_of(8)
}

/// The message count of a packed word.
fn count(word: u64) -> u32 {
    (word >> 32) as u32
}

/// The byte position of a packed word.
fn position(word: u64) -> u32 {
    word as u32
}

/// A packed word.
fn pack(count: u32, position: u32) -> u64 {
    (u64::from(count) << 32) | u64::from(position)
}

/// `CLOCK_MONOTONIC` now, in nanoseconds.
fn now_ns() -> u64 {
    timespec_ns(rustix::time::clock_gettime(rustix::time::ClockId::Monotonic))
}

/// The clock of leases: `CLOCK_MONOTONIC_COARSE` now, in nanoseconds (shared by every process
/// of the machine); a fifth of the precise clock's cost, and a tick's precision is plenty.
fn coarse_ns() -> u64 {
    timespec_ns(rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse))
}

/// A kernel time in nanoseconds.
fn timespec_ns(t: rustix::time::Timespec) -> u64 {
    u64::try_from(t.tv_sec).unwrap_or(0).saturating_mul(1_000_000_000)
        + u64::try_from(t.tv_nsec).unwrap_or(0)
}

/// A record found at the head of a lane, to be taken ([`Lane::consume`]).
pub(crate) struct Record {
    /// The head it lies at (packed).
    head: u64,
    /// Its payload's length.
    len: usize,
}

/// What the head of a lane holds.
pub(crate) enum Next {
    /// A message: its record.
    Message(Record),
    /// Nothing.
    Empty,
    /// A message is there, but a frame on the socket comes before it.
    SocketFirst,
}

/// What this process's senders on a lane remember of its receiver's lease.
#[derive(Debug, Default)]
struct Lease {
    /// The receiver's lease (`alive_until`) as last read.
    until: AtomicU64,
}

/// The two lanes of a pipe, mapped.
pub(crate) struct Lanes {
    /// The segment (for its descriptor).
    shm: SharedMemory,
    /// Lane 0 and lane 1.
    lanes: [Mirror; 2],
    /// The spin policy of this process's receives on lane 0 and on lane 1.
    backoff: [SpinBackoff; 2],
    /// The receivers' leases, as this process's senders on lane 0 and lane 1 last read them.
    leases: [Lease; 2],
}

impl Lanes {
    /// The size of one lane in the segment.
    fn lane_len() -> usize {
        header::header_len() + LANE_CAPACITY
    }

    /// Creates the lanes of a new pipe.
    pub(crate) fn create() -> Result<Lanes> {
        let shm = SharedMemory::new(2 * Self::lane_len()).map_err(Error::SharedMemory)?;
        let lanes = Self::map(&shm)?;
        for lane in &lanes {
            let config = &lane.header().config.0;
            config.capacity.store(LANE_CAPACITY as u64, Ordering::Relaxed);
            config.magic.store(LANE_MAGIC, Ordering::Release);
        }
        Ok(Lanes { shm, lanes, backoff: Default::default(), leases: Default::default() })
    }

    /// Maps both lanes of `shm`.
    fn map(shm: &SharedMemory) -> Result<[Mirror; 2]> {
        let second = u64::try_from(Self::lane_len()).unwrap_or(u64::MAX);
        Ok([
            Mirror::map(shm.as_fd(), 0, LANE_CAPACITY)?,
            Mirror::map(shm.as_fd(), second, LANE_CAPACITY)?,
        ])
    }

    /// Checks and maps received lanes.
    fn from_received(shm: SharedMemory) -> std::result::Result<Lanes, String> {
        if shm.size() != 2 * Self::lane_len() {
            return Err("a pipe's lanes have the wrong size".into());
        }
        let lanes = Self::map(&shm).map_err(|e| e.to_string())?;
        for lane in &lanes {
            let config = &lane.header().config.0;
            if config.magic.load(Ordering::Acquire) != LANE_MAGIC
                || config.capacity.load(Ordering::Relaxed) != LANE_CAPACITY as u64
            {
                return Err("the segment received as a pipe's lanes does not hold them".into());
            }
        }
        Ok(Lanes { shm, lanes, backoff: Default::default(), leases: Default::default() })
    }

    /// Lane `i` (0 or 1).
    pub(crate) fn lane(&self, i: usize) -> Lane<'_> {
        Lane { m: &self.lanes[i & 1], backoff: &self.backoff[i & 1], lease: &self.leases[i & 1] }
    }

    /// Serialises the segment.
    pub(crate) fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.shm.serialize(s)
    }

    /// Receives a segment of lanes.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<Lanes, D::Error> {
        let shm = SharedMemory::deserialize(d)?;
        Lanes::from_received(shm).map_err(mp_process::fdpass::refuse)
    }
}

/// One direction of a pipe.
#[derive(Clone, Copy)]
pub(crate) struct Lane<'a> {
    /// The mapping.
    m: &'a Mirror,
    /// This process's spin policy for receives on the lane.
    backoff: &'a SpinBackoff,
    /// The receiver's lease, as this process's senders last read it.
    lease: &'a Lease,
}

impl Lane<'_> {
    /// Receiver: how long this receive may spin before it sleeps (`None`: sleep at once), by
    /// [`spin_budget`] and this process's [`SpinBackoff`] for the lane.
    pub(crate) fn receive_spin(&self) -> Option<Duration> {
        let budget = spin_budget()?;
        self.backoff.next_spins().then_some(budget)
    }

    /// Receiver: a receive that spun is over; `won` if the message came while it spun (it
    /// did not have to sleep; see [`SpinBackoff`]).
    pub(crate) fn spun(&self, won: bool) {
        self.backoff.spun(won);
    }

    /// The header.
    fn h(&self) -> &Header {
        self.m.header()
    }

    /// The stamp word of the place at byte position `at`, if `at` is a multiple of 8 (only a
    /// process writing the shared header out of turn misaligns a head or a tail).
    fn word_at(&self, at: u32) -> Option<&AtomicU32> {
        // SAFETY: `at` is a multiple of 8; the word there is a place's stamp word, which every
        // party accesses atomically only (record payloads of other laps are written and read
        // in turns ordered by the stamps and the heads).
        (at % 8 == 0).then(|| unsafe { self.m.word(at) })
    }

    /// The receiver's exact head (packed).
    fn reader_head(&self) -> u64 {
        self.h().reader.0.load(Ordering::Acquire)
    }

    /// The stamp word at the receiver's head, if aligned.
    fn head_word(&self) -> Option<&AtomicU32> {
        self.word_at(position(self.reader_head()))
    }

    /// Sender: whether the receiver's lease holds (it is alive), reading the shared lease only
    /// once this process's copy has run out.
    fn receiver_alive(&self) -> bool {
        let now = coarse_ns();
        if now < self.lease.until.load(Ordering::Relaxed) {
            return true;
        }
        let until = self.h().head.0.alive_until.load(Ordering::Acquire);
        self.lease.until.store(until, Ordering::Relaxed);
        now < until
    }

    /// Sender: whether `need` bytes from the tail position `at` are free, reading the
    /// receiver's published head only when the known free space runs short.
    fn has_room(&self, at: u32, need: usize) -> bool {
        let h = self.h();
        let room = |limit: u64| position(limit).wrapping_sub(at) as usize;
        let known = room(h.send_limit.0.load(Ordering::Relaxed));
        if (need..=LANE_CAPACITY).contains(&known) {
            return true;
        }
        let head = position(h.head.0.head.load(Ordering::Acquire));
        let used = at.wrapping_sub(head) as usize;
        if used > LANE_CAPACITY {
            // Only a process writing the shared header out of turn puts the head past the tail.
            return false;
        }
        let limit = u64::from(head.wrapping_add(LANE_CAPACITY as u32));
        h.send_limit.0.store(limit, Ordering::Relaxed);
        room(limit) >= need
    }

    /// Sender: puts a message of `len` bytes that `write` fills, if the lane is open (the
    /// receiver is alive and nobody polls the end's socket), there is room, and the message
    /// is small enough; `Ok(false)` otherwise (send it on the socket). Wakes the receiver if
    /// it sleeps on the place.
    pub(crate) fn try_send(
        &self,
        len: usize,
        write: impl FnOnce(&mut [u8]) -> Result<()>,
    ) -> Result<bool> {
        let h = self.h();
        if len > LANE_MAX_MESSAGE || !self.receiver_alive() {
            return Ok(false);
        }
        let need = record_len(len);
        let tail = h.tail.0.load(Ordering::Relaxed);
        let at = position(tail);
        // Room for the record, and for the stamp word of the next one, which is set.
        if !self.has_room(at, need + 8) {
            return Ok(false);
        }
        let Some(word) = self.word_at(at) else { return Ok(false) };
        let next = at.wrapping_add(need as u32);
        let Some(next_word) = self.word_at(next) else { return Ok(false) };
        // Only over a free place of an open lane: never over a record (a sender killed
        // between publishing and moving the tail leaves one there).
        let open = |seen: u32| matches!(place(seen, count(tail)), Place::Free(f) if f & OPEN != 0);
        // Read by a compare-and-swap that changes nothing (OPEN for OPEN; any other value is
        // left alone): it takes the line exclusive at once, so the header, the payload and the
        // publishing CAS below find it here, where a plain load would fetch it shared from the
        // receiver spinning on it and the first write fetch it a second time (pipe_pingpong:
        // 1.26 -> 0.95 µs in this machine's slow phase). A `fetch_or(0)` would do, but the
        // compiler turns it into a fence and a plain load.
        let mut seen = match word.compare_exchange(OPEN, OPEN, Ordering::Acquire, Ordering::Acquire)
        {
            Ok(flags) | Err(flags) => flags,
        };
        if !open(seen) {
            return Ok(false);
        }
        {
            // SAFETY: `need <= LANE_CAPACITY`; these bytes (the record but its stamp word) lie
            // past the tail and before the published head plus the capacity (`has_room`),
            // which the receiver does not read; the lane has one sender at a time (the end's
            // send lock; even without it every reader checks what it reads).
            let record = unsafe { self.m.bytes_mut(at.wrapping_add(4), need - 4) };
            let (header, body) = record.split_at_mut(RECORD_HEADER - 4);
            write(body.get_mut(..len).ok_or(Error::Unstable)?)?;
            let (len_bytes, sent) = header.split_at_mut(4);
            len_bytes.copy_from_slice(&(len as u32).to_le_bytes());
            sent.copy_from_slice(&h.socket_sent.0.load(Ordering::Relaxed).to_le_bytes());
        }
        // The next place reads "no record, open" before this record is published: the
        // receiver, once past this record, never takes bytes of an older lap for a record,
        // and the lane stays open there.
        next_word.store(OPEN, Ordering::Relaxed);
        // The publication, by the word a poller closes the lane with: either the poller sees
        // the record, or this sender sees the lane closed and takes the socket (what it wrote
        // stays in free space). Everything above is visible to whoever sees the stamp.
        loop {
            match word.compare_exchange_weak(
                seen,
                stamp(count(tail)),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(now) if open(now) => seen = now,
                Err(_) => return Ok(false),
            }
        }
        h.tail.0.store(pack(count(tail).wrapping_add(1), next), Ordering::Relaxed);
        if seen & SLEEPING != 0 {
            os::futex::wake_all(word);
        }
        Ok(true)
    }

    /// Changes the flags of the place `word` (if it holds no record) to what `change` makes of
    /// them (`None`: leave them), atomically; wakes a receiver asleep there if they changed.
    /// Returns the flags seen last (`None` for a record or corruption).
    fn update(&self, word: &AtomicU32, change: impl Fn(u32) -> Option<u32>) -> Option<u32> {
        let mut seen = word.load(Ordering::Acquire);
        loop {
            if seen & STAMPED != 0 || seen & !FLAGS != 0 {
                return None;
            }
            let Some(new) = change(seen) else { return Some(seen) };
            if new == seen {
                return Some(seen);
            }
            match word.compare_exchange_weak(seen, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    if seen & SLEEPING != 0 {
                        os::futex::wake_all(word);
                    }
                    return Some(seen);
                }
                Err(now) => seen = now,
            }
        }
    }

    /// Sender or closer, holding the end's send lock: pokes the receiver, so that it looks at
    /// the socket and the close count: the place at the tail (where the receiver sleeps when
    /// it has taken every record) gets [`POKE`], and a receiver asleep there is woken.
    pub(crate) fn poke(&self) {
        if let Some(word) = self.word_at(position(self.h().tail.0.load(Ordering::Relaxed))) {
            self.update(word, |flags| Some(flags | POKE));
        }
    }

    /// Sender: one more frame is about to be sent on the socket; with `wake`, a receiver
    /// asleep on the lane wakes now to read it (else the sender calls [`poke`](Self::poke)
    /// once the frame is sent).
    pub(crate) fn count_socket_frame(&self, wake: bool) {
        self.h().socket_sent.0.fetch_add(1, Ordering::SeqCst);
        if wake {
            self.poke();
        }
    }

    /// Receiver, finding nothing: renews its lease if less than half of it is left, and
    /// opens the lane at its head (senders write records there only while it is open and the
    /// lease holds). The lane stays open after the receive: records that come meanwhile wait
    /// for the next one, and a poller (`wait`, `poll`) closes it first ([`withdraw`]).
    ///
    /// [`withdraw`]: Self::withdraw
    pub(crate) fn open(&self) {
        self.open_for(LEASE);
    }

    /// [`open`](Self::open), with a lease of at least `lease`.
    fn open_for(&self, lease: Duration) {
        let alive = &self.h().head.0.alive_until;
        let now = coarse_ns();
        let lease = duration_ns(lease);
        if alive.load(Ordering::Relaxed).saturating_sub(now) < lease / 2 {
            alive.store(now.saturating_add(lease), Ordering::Release);
        }
        if let Some(word) = self.head_word() {
            self.update(word, |flags| (flags & OPEN == 0).then_some(flags | OPEN));
        }
    }

    /// Receiver's end, about to be polled (`wait`, `poll`) or closed: closes the lane at the
    /// head, so that senders take the socket (which the poller watches), and says whether a
    /// record is there, in which case the end is ready: the record does not make the socket
    /// readable. A sender publishes by the same word, so a record is either seen here or
    /// not published.
    pub(crate) fn withdraw(&self) -> bool {
        let Some(word) = self.head_word() else { return true };
        self.update(word, |flags| Some(flags & !OPEN)).is_none()
    }

    /// Receiver: sleeps on the futex of the place at its head until a record is published
    /// there or a sender pokes it (a socket frame, a close), or `timeout` passes, with its
    /// lease renewed past the nap. Returns at once if a record, a poke, a socket frame or a
    /// close (other than `closes_seen`) is already there.
    pub(crate) fn sleep(&self, timeout: Duration, closes_seen: u64) -> Result<()> {
        self.open_for(timeout.saturating_add(LEASE));
        let Some(word) = self.head_word() else { return Ok(()) };
        // Said in the place's word: whoever changes it afterwards (a record, a poke) sees
        // the flag and wakes this receiver, and a wake-up before the wait finds the word
        // changed. A poke seen here is cleared: the look it asks for comes next.
        let before = self.update(word, |flags| {
            Some(if flags & POKE != 0 { flags & !(POKE | SLEEPING) } else { flags | SLEEPING })
        });
        let asleep = match before {
            Some(flags) if flags & POKE == 0 => flags | SLEEPING,
            _ => return Ok(()),
        };
        let result = if self.socket_pending() || self.closes() != closes_seen {
            Ok(false)
        } else {
            os::futex::wait_for(word, asleep, timeout)
        };
        // Awake: the flag goes (a poke has done its work: the receiver looks now).
        self.update(word, |flags| Some(flags & !(SLEEPING | POKE)));
        result.map(|_| ()).map_err(|e| Error::io("futex wait", e))
    }

    /// Receiver: how many handles on the sending end have been closed, in any process.
    pub(crate) fn closes(&self) -> u64 {
        self.h().closes.0.load(Ordering::SeqCst)
    }

    /// Sender: a handle on the sending end was just closed (its descriptor first): counts it
    /// and, if the closer holds the end's send lock (`locked`), pokes the receiver (see
    /// [`poke`](Self::poke)), so that it looks at the socket (end of file once every copy
    /// is closed). Without the lock (another handle is sending, so this was not the last
    /// one) the count alone tells the receiver's next look.
    pub(crate) fn closed_one(&self, locked: bool) {
        self.h().closes.0.fetch_add(1, Ordering::SeqCst);
        if locked {
            self.poke();
        }
    }

    /// Receiver: one more frame was read from the socket.
    pub(crate) fn taken_from_socket(&self) {
        self.h().socket_taken.0.fetch_add(1, Ordering::SeqCst);
    }

    /// Receiver: how many frames the sender has started on the socket.
    pub(crate) fn socket_sent(&self) -> u64 {
        self.h().socket_sent.0.load(Ordering::SeqCst)
    }

    /// Receiver: how many counted frames it has read from the socket.
    pub(crate) fn socket_taken(&self) -> u64 {
        self.h().socket_taken.0.load(Ordering::SeqCst)
    }

    /// Receiver: whether a frame sent on the socket is waiting to be read.
    pub(crate) fn socket_pending(&self) -> bool {
        self.socket_sent() > self.socket_taken()
    }

    /// Receiver: whether a lane record is waiting (or the lane is corrupt, which the next
    /// receive reports).
    pub(crate) fn has_record(&self) -> bool {
        let head = self.reader_head();
        let Some(word) = self.word_at(position(head)) else { return true };
        !matches!(place(word.load(Ordering::Acquire), count(head)), Place::Free(_))
    }

    /// Receiver: whether anything (a lane record or a socket frame) is waiting.
    pub(crate) fn ready(&self) -> bool {
        self.has_record() || self.socket_pending()
    }

    /// Receiver: takes the message at the head, if it comes before any unread socket frame.
    /// A message longer than `limit` is left in place: `Err((len, ..))` through
    /// [`Error::BadMessageLength`] is the caller's to build.
    pub(crate) fn take(&self, limit: usize) -> Result<std::result::Result<Next, u64>> {
        let h = self.h();
        let head = h.reader.0.load(Ordering::Relaxed);
        let at = position(head);
        let Some(word) = self.word_at(at) else {
            return Err(Error::Corrupt("a pipe lane's head is misaligned".into()));
        };
        match place(word.load(Ordering::Acquire), count(head)) {
            Place::Record => {}
            Place::Free(_) => return Ok(Ok(Next::Empty)),
            Place::Corrupt => {
                return Err(Error::Corrupt("a pipe lane holds a record out of order".into()));
            }
        }
        // SAFETY: the record is published (its stamp was loaded with `Acquire` after the sender
        // wrote it whole) and lies between the head and the published end, which the sender
        // does not write; this end has one receiver at a time (the connection's receive lock;
        // across processes, see the module documentation).
        let header = unsafe { self.m.bytes(at.wrapping_add(4), RECORD_HEADER - 4) };
        let mut len = [0u8; 4];
        let mut before = [0u8; 8];
        len.copy_from_slice(&header[..4]);
        before.copy_from_slice(&header[4..]);
        let len = u32::from_le_bytes(len) as usize;
        let before = u64::from_le_bytes(before);
        if len > LANE_MAX_MESSAGE {
            return Err(Error::Corrupt("a pipe lane's record is longer than its data".into()));
        }
        if before > h.socket_taken.0.load(Ordering::SeqCst) {
            return Ok(Ok(Next::SocketFirst));
        }
        if len > limit {
            return Ok(Err(len as u64));
        }
        Ok(Ok(Next::Message(Record { head, len })))
    }

    /// Receiver, holding the receive lock: takes `record` (just found by [`take`](Self::take)),
    /// handing its payload to `f` in place; the head moves past it afterwards.
    pub(crate) fn consume<R>(&self, record: Record, f: impl FnOnce(&[u8]) -> R) -> R {
        let h = self.h();
        let at = position(record.head);
        // SAFETY: `take` found the record published (its stamp loaded with `Acquire`) and its
        // length within bounds; it lies between the receiver's head, which moves only below,
        // and the published end, and senders never write there (their room ends at the
        // published head, which is at most this head, plus the capacity).
        let payload = unsafe { self.m.bytes(at.wrapping_add(RECORD_HEADER as u32), record.len) };
        let out = f(payload);
        let end = at.wrapping_add(record_len(record.len) as u32);
        let consumed = pack(count(record.head).wrapping_add(1), end);
        h.reader.0.store(consumed, Ordering::Release);
        // Senders read the head only when they run short of room: it is published once per
        // `PUBLISH_EVERY` bytes.
        if end / PUBLISH_EVERY != at / PUBLISH_EVERY {
            h.head.0.head.store(consumed, Ordering::Release);
        }
        out
    }

    /// Receiver: whether a receive stopped inside a message, in any process (see the module
    /// documentation).
    pub(crate) fn is_broken(&self) -> bool {
        self.h().next_id.0.load(Ordering::Acquire) & BROKEN != 0
    }

    /// Receiver: the stream position is lost; every later receive, in any process, fails.
    pub(crate) fn mark_broken(&self) {
        self.h().next_id.0.fetch_or(BROKEN, Ordering::AcqRel);
    }

    /// Receiver: about to read a frame from the socket (`true`) or done with it (`false`).
    pub(crate) fn set_in_frame(&self, reading: bool) {
        let state = &self.h().next_id.0;
        if reading {
            state.fetch_or(IN_FRAME, Ordering::AcqRel);
        } else {
            state.fetch_and(!IN_FRAME, Ordering::AcqRel);
        }
    }

    /// Receiver, holding the receive lock of a receiver that died: whether it died reading a
    /// frame from the socket.
    pub(crate) fn in_frame(&self) -> bool {
        self.h().next_id.0.load(Ordering::Acquire) & IN_FRAME != 0
    }
}

/// Whether `deadline` has passed.
pub(crate) fn passed(deadline: Instant) -> bool {
    Instant::now() >= deadline
}

/// How long a receive spins on the CPU before it starts yielding the CPU between looks.
const PURE_SPIN: Duration = Duration::from_micros(2);

/// A yield after which this thread got its CPU back only this much later gave the CPU to a
/// thread that does not yield it back (a busy program): yielding then costs whole time slices.
/// (Among mp's own threads on an oversubscribed machine, a yield comes back within
/// microseconds, and a few take a millisecond or two; the threshold is above those.)
const SLOW_YIELD: Duration = Duration::from_millis(3);

/// How long receives stop yielding (and only spin) after a slow yield.
const YIELD_PAUSE: Duration = Duration::from_millis(100);

/// When this process's receives may yield (see [`spin_pause`]).
static YIELDING: YieldPolicy = YieldPolicy { no_yield_until: AtomicU64::new(0) };

/// Whether receives yield the CPU while they spin: not for [`YIELD_PAUSE`] after a slow yield.
struct YieldPolicy {
    /// Until when (`CLOCK_MONOTONIC` nanoseconds) receives do not yield.
    no_yield_until: AtomicU64,
}

impl YieldPolicy {
    /// Whether a receive may yield at `now`.
    fn may_yield(&self, now: u64) -> bool {
        now >= self.no_yield_until.load(Ordering::Relaxed)
    }

    /// A yield begun at `now` gave the CPU back `away` nanoseconds later.
    fn yielded(&self, now: u64, away: u64) {
        if away > duration_ns(SLOW_YIELD) {
            let until = now.saturating_add(away).saturating_add(duration_ns(YIELD_PAUSE));
            self.no_yield_until.store(until, Ordering::Relaxed);
        }
    }
}

/// One look of a receive's spin that found nothing, `spun` into its spin: a pause of the CPU
/// for the first [`PURE_SPIN`], then a yield of the CPU (`sched_yield`), so that on a machine
/// with more runnable threads than CPUs, such as several clients and a manager's threads on
/// two CPUs, the peer that would answer gets the CPU at once instead of at the end of the
/// spinner's time slice. A yield with no other thread to run returns at once. A yield that
/// kept the thread off the CPU for long ([`SLOW_YIELD`]: a busy program got the CPU and ran its
/// slice) turns yielding off in this process for [`YIELD_PAUSE`].
pub(crate) fn spin_pause(spun: Duration) {
    if spun < PURE_SPIN {
        std::hint::spin_loop();
        return;
    }
    let now = now_ns();
    if !YIELDING.may_yield(now) {
        std::hint::spin_loop();
        return;
    }
    std::thread::yield_now();
    YIELDING.yielded(now, now_ns().saturating_sub(now));
}

/// `d` in nanoseconds, saturating.
fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// How long a receive looks for a message without sleeping before it blocks in the kernel.
const RECV_SPIN: Duration = Duration::from_micros(30);

/// How long a receive should look for a message before it sleeps: [`RECV_SPIN`] scaled by
/// `mp_sync::spin_limit()` against its default (so a limit of 0 turns it off), and `None` on
/// a machine with one CPU, where the peer cannot run while we look.
pub(crate) fn spin_budget() -> Option<Duration> {
    mp_process::os::spin::budget(RECV_SPIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lease no test outlives (a receiver's lease lapses 30 ms after its last receive).
    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn places_say_record_flags_or_corruption() {
        assert_eq!(place(0, 7), Place::Free(0));
        assert_eq!(place(OPEN | POKE | SLEEPING, 7), Place::Free(OPEN | POKE | SLEEPING));
        assert_eq!(place(stamp(7), 7), Place::Record);
        assert_eq!(place(stamp(u32::MAX), u32::MAX), Place::Record);
        assert_eq!(place(stamp(0), 0), Place::Record);
        assert_eq!(place(stamp(7), 8), Place::Corrupt, "another message's stamp");
        assert_eq!(place(FLAGS + 1, 7), Place::Corrupt, "bits no party writes");
        for count in [0, 1, u32::MAX, STAMPED] {
            assert_eq!(stamp(count) & FLAGS & !STAMPED, count & FLAGS, "a stamp is a count");
            assert_ne!(stamp(count) & STAMPED, 0);
        }
    }

    /// Takes the next message of `lane`, which must be there.
    fn take_one(lane: Lane<'_>) -> Vec<u8> {
        match lane.take(usize::MAX) {
            Ok(Ok(Next::Message(record))) => lane.consume(record, <[u8]>::to_vec),
            Ok(Ok(Next::Empty)) => panic!("no message"),
            Ok(Ok(Next::SocketFirst)) => panic!("a socket frame first"),
            Ok(Err(len)) => panic!("a message of {len} bytes over the limit"),
            Err(e) => panic!("{e}"),
        }
    }

    /// A writer of `bytes` for `try_send`.
    fn put(bytes: &[u8]) -> impl FnOnce(&mut [u8]) -> Result<()> + '_ {
        move |body| {
            body.copy_from_slice(bytes);
            Ok(())
        }
    }

    /// The stamp word at the receiver's head.
    fn head_word<'a>(lane: &Lane<'a>) -> &'a AtomicU32 {
        let at = position(lane.h().reader.0.load(Ordering::SeqCst));
        // SAFETY: the tests keep the head aligned; the word is accessed atomically only.
        unsafe { lane.m.word(at) }
    }

    #[test]
    fn a_lane_carries_records_only_while_open_and_its_receiver_alive() {
        let lanes = Lanes::create().unwrap();
        let lane = lanes.lane(0);
        let lease = || lane.h().head.0.alive_until.load(Ordering::SeqCst);
        assert!(!lane.try_send(2, put(b"no")).unwrap(), "nobody ever received");
        // A receive that finds nothing takes a lease and opens the lane at its head.
        let before = coarse_ns();
        lane.open();
        assert!(lease() >= before + duration_ns(LEASE));
        assert_eq!(head_word(&lane).load(Ordering::SeqCst), OPEN);
        lane.open_for(HOUR);
        assert!(lane.try_send(2, put(b"ab")).unwrap());
        assert!(lane.try_send(1, put(b"c")).unwrap(), "the lane stays open past a record");
        assert_eq!(take_one(lane), b"ab");
        assert_eq!(take_one(lane), b"c");
        assert!(matches!(lane.take(usize::MAX), Ok(Ok(Next::Empty))));
        // A closed lane (a poller withdrew it) takes no record until a receive opens it.
        assert!(!lane.withdraw());
        assert_eq!(head_word(&lane).load(Ordering::SeqCst), 0);
        assert!(!lane.try_send(2, put(b"no")).unwrap());
        lane.open();
        assert!(lane.try_send(2, put(b"de")).unwrap());
        assert_eq!(take_one(lane), b"de");
        // A receiver whose lease ran out (it was killed) gets no record once this process's
        // senders read the lease again; a receive renews it.
        lane.h().head.0.alive_until.store(1, Ordering::SeqCst);
        lane.lease.until.store(0, Ordering::SeqCst);
        assert!(!lane.try_send(2, put(b"no")).unwrap());
        let before = coarse_ns();
        lane.open();
        assert!(lease() >= before + duration_ns(LEASE));
    }

    #[test]
    fn old_laps_bytes_are_never_taken_for_records() {
        let lanes = Lanes::create().unwrap();
        let lane = lanes.lane(0);
        // Payloads made of what would be valid stamps of later messages: once the ring wraps,
        // record headers fall on such bytes of older laps.
        let mut sent: u32 = 0;
        let mut total = 0usize;
        while total < 3 * LANE_CAPACITY {
            lane.open_for(HOUR);
            let len = [8usize, 40, 4096, 100_000, 24][sent as usize % 5];
            let fill = |body: &mut [u8]| {
                for (i, chunk) in body.chunks_mut(4).enumerate() {
                    let forged = stamp(sent.wrapping_add(1 + i as u32 % 3)).to_le_bytes();
                    chunk.copy_from_slice(&forged[..chunk.len()]);
                }
                Ok(())
            };
            assert!(lane.try_send(len, fill).unwrap(), "room in an empty lane");
            assert!(lane.has_record());
            let got = take_one(lane);
            assert_eq!(got.len(), len);
            assert_eq!(got[..4], stamp(sent.wrapping_add(1)).to_le_bytes());
            assert!(!lane.has_record(), "a drained lane is empty after message {sent}");
            assert!(matches!(lane.take(usize::MAX), Ok(Ok(Next::Empty))));
            sent += 1;
            total += record_len(len);
        }
    }

    #[test]
    fn a_record_after_a_counted_socket_frame_waits_for_it() {
        let lanes = Lanes::create().unwrap();
        let lane = lanes.lane(0);
        lane.open_for(HOUR);
        assert!(lane.try_send(2, put(b"r0")).unwrap());
        lane.count_socket_frame(false);
        assert!(lane.try_send(2, put(b"r1")).unwrap());
        assert_eq!(take_one(lane), b"r0", "counted before the frame");
        assert!(matches!(lane.take(usize::MAX), Ok(Ok(Next::SocketFirst))));
        assert!(lane.socket_pending());
        lane.taken_from_socket();
        assert_eq!(take_one(lane), b"r1");
    }

    #[test]
    fn a_full_ring_sends_on_the_socket_until_the_receiver_takes() {
        let lanes = Lanes::create().unwrap();
        let lane = lanes.lane(1);
        lane.open_for(HOUR);
        let big = LANE_MAX_MESSAGE / 4;
        let mut queued = 0;
        while lane.try_send(big, |_| Ok(())).unwrap() {
            queued += 1;
            assert!(queued <= LANE_CAPACITY / big, "more records than the ring holds");
        }
        assert_eq!(queued, LANE_CAPACITY / big - 1, "the ring fills but for one record");
        for _ in 0..queued {
            assert_eq!(take_one(lane).len(), big);
        }
        // The receiver's head is published as it goes: the room is seen again.
        assert!(lane.try_send(big, |_| Ok(())).unwrap());
        assert_eq!(take_one(lane).len(), big);
    }

    #[test]
    fn a_forged_place_is_corruption_not_a_message() {
        let lanes = Lanes::create().unwrap();
        let lane = lanes.lane(1);
        // SAFETY: the head (0) is a stamp word and 4 its length; nothing else uses the lane.
        let (word, len) = unsafe { (lane.m.word(0), lane.m.word(4)) };
        word.store(stamp(5), Ordering::SeqCst);
        assert!(matches!(lane.take(usize::MAX), Err(Error::Corrupt(_))));
        word.store(FLAGS + 1, Ordering::SeqCst);
        assert!(matches!(lane.take(usize::MAX), Err(Error::Corrupt(_))));
        lane.open_for(HOUR);
        assert!(!lane.try_send(1, put(b"x")).unwrap(), "no record over a corrupt place");
        word.store(stamp(0), Ordering::SeqCst);
        len.store(LANE_MAX_MESSAGE as u32 + 1, Ordering::SeqCst);
        assert!(matches!(lane.take(usize::MAX), Err(Error::Corrupt(_))));
        word.store(0, Ordering::SeqCst);
        assert!(matches!(lane.take(usize::MAX), Ok(Ok(Next::Empty))));
        // Whatever another process writes in the heads, the tail and the ring, a take, a send,
        // a poll and a sleep end in a value or an error.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let h = lane.h();
        for _ in 0..20_000 {
            let head = next();
            h.reader.0.store(head, Ordering::SeqCst);
            if next() % 4 == 0 {
                h.tail.0.store(next(), Ordering::SeqCst);
                h.head.0.head.store(next(), Ordering::SeqCst);
                h.send_limit.0.store(next(), Ordering::SeqCst);
            }
            let at = position(head) & !7;
            let forged = match next() % 4 {
                0 => next() as u32,
                1 => (next() as u32) & FLAGS,
                _ => stamp(count(head)),
            };
            let len = match next() % 3 {
                0 => next() as u32,
                1 => (next() % (2 * LANE_MAX_MESSAGE as u64)) as u32,
                _ => 64,
            };
            // SAFETY: `at` is a multiple of 8; the words are the record's stamp, length and
            // socket count (two words); nothing else uses the lane.
            unsafe {
                lane.m.word(at).store(forged, Ordering::SeqCst);
                lane.m.word(at.wrapping_add(4)).store(len, Ordering::SeqCst);
                lane.m.word(at.wrapping_add(8)).store((next() % 2) as u32, Ordering::SeqCst);
                lane.m.word(at.wrapping_add(12)).store(0, Ordering::SeqCst);
            }
            let _ = lane.has_record();
            let _ = lane.take((next() % 4096) as usize);
            let _ = lane.try_send((next() % 100) as usize, |_| Ok(()));
            if next() % 8 == 0 {
                let _ = lane.withdraw();
                lane.poke();
                lane.sleep(Duration::ZERO, lane.closes()).unwrap();
            }
        }
    }

    /// Runs `wake` once a receiver sleeps on `lane` (with hour-long naps, so that a lost
    /// wake-up hangs the test until it is killed), and waits for the receiver to see
    /// something to look at: a published record, a socket frame, a close.
    fn wakes_a_sleeper(lane: Lane<'_>, wake: impl FnOnce()) {
        let closes_seen = lane.closes();
        let published = || {
            let head = lane.h().reader.0.load(Ordering::SeqCst);
            place(head_word(&lane).load(Ordering::SeqCst), count(head)) == Place::Record
        };
        std::thread::scope(|s| {
            let sleeper = s.spawn(|| {
                while !published() && !lane.socket_pending() && lane.closes() == closes_seen {
                    lane.sleep(Duration::from_secs(3600), closes_seen).unwrap();
                }
            });
            while head_word(&lane).load(Ordering::SeqCst) & SLEEPING == 0 {
                std::thread::yield_now();
            }
            wake();
            sleeper.join().unwrap();
        });
    }

    #[test]
    fn records_and_pokes_wake_a_sleeping_receiver() {
        let lanes = Lanes::create().unwrap();
        let lane = lanes.lane(0);
        // Nobody sleeps: the poke stays at the place, which holds no record.
        lane.open_for(HOUR);
        lane.poke();
        assert!(!lane.has_record());
        assert!(matches!(lane.take(usize::MAX), Ok(Ok(Next::Empty))));
        // A record is written over it.
        assert!(lane.try_send(3, put(b"abc")).unwrap());
        assert_eq!(take_one(lane), b"abc");
        // A socket frame's poke wakes a sleeping receiver, and so does a record...
        wakes_a_sleeper(lane, || {
            lane.count_socket_frame(false);
            lane.poke();
        });
        assert!(lane.socket_pending());
        lane.taken_from_socket();
        wakes_a_sleeper(lane, || assert!(lane.try_send(2, put(b"de")).unwrap()));
        assert_eq!(take_one(lane), b"de");
        // ...and a close by a holder of the send lock, and a frame large enough to be
        // counted with a wake-up before it is sent.
        wakes_a_sleeper(lane, || lane.closed_one(true));
        wakes_a_sleeper(lane, || lane.count_socket_frame(true));
        assert!(lane.socket_pending());
        assert_eq!(head_word(&lane).load(Ordering::SeqCst) & (SLEEPING | POKE), 0);
    }

    #[test]
    fn a_poller_sees_the_record_or_the_sender_sees_the_lane_closed() {
        let lanes = Lanes::create().unwrap();
        let lane = lanes.lane(0);
        // A poller closes the lane while a sender writes a record: the sender sees it closed
        // when it publishes, and takes the socket; nothing is published.
        lane.open_for(HOUR);
        let sent = lane.try_send(2, |body| {
            assert!(!lane.withdraw(), "nothing published yet");
            body.copy_from_slice(b"no");
            Ok(())
        });
        assert!(!sent.unwrap());
        assert!(!lane.has_record());
        assert!(!lane.try_send(2, put(b"no")).unwrap(), "the lane stays closed");
        // A poller that comes after the publication sees the record.
        lane.open_for(HOUR);
        assert!(lane.try_send(2, put(b"hi")).unwrap());
        assert!(lane.withdraw());
        assert_eq!(take_one(lane), b"hi");
        // A record whose writing fails publishes nothing, and the lane stays usable.
        lane.open_for(HOUR);
        assert!(matches!(lane.try_send(2, |_| Err(Error::Unstable)), Err(Error::Unstable)));
        assert!(!lane.has_record());
        assert!(lane.try_send(2, put(b"ok")).unwrap());
        assert_eq!(take_one(lane), b"ok");
        // A sender killed after publishing but before moving the tail leaves its record at
        // the tail: the next sender takes the socket rather than write over it.
        let tail = lane.h().tail.0.load(Ordering::SeqCst);
        assert!(lane.try_send(3, put(b"old")).unwrap());
        lane.h().tail.0.store(tail, Ordering::SeqCst);
        assert!(!lane.try_send(3, put(b"new")).unwrap());
        assert_eq!(take_one(lane), b"old");
    }

    #[test]
    fn a_slow_yield_stops_yielding_for_a_while() {
        let p = YieldPolicy { no_yield_until: AtomicU64::new(0) };
        let ms = duration_ns(Duration::from_millis(1));
        assert!(p.may_yield(5 * ms));
        // Quick yields (mp's own threads took their turns) change nothing.
        p.yielded(5 * ms, 20_000);
        p.yielded(6 * ms, duration_ns(SLOW_YIELD));
        assert!(p.may_yield(6 * ms));
        // A yield that came back after a busy program's time slice turns yielding off...
        let away = duration_ns(SLOW_YIELD) + 1;
        p.yielded(10 * ms, away);
        let back = 10 * ms + away;
        assert!(!p.may_yield(back));
        assert!(!p.may_yield(back + duration_ns(YIELD_PAUSE) - 1));
        // ...for the pause only.
        assert!(p.may_yield(back + duration_ns(YIELD_PAUSE)));
    }
}
