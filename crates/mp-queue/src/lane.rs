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
//! - A receiving call that finds nothing waiting announces `spinning_until`, a deadline on the
//!   coarse monotonic clock by which it will look at the lane again (plus a tick's slack): a
//!   few µs ahead while it spins (unless spinning has not paid lately: [`SpinBackoff`]), then,
//!   while it sleeps in naps of 4 ms doubling to 50 ms, the end of the nap plus a margin. It
//!   sleeps on the futex of the stamp word at its head (see below), which reads "no record"
//!   until a sender publishes one there, having said so in `sleeping` (on the same cache line
//!   as its head and announcement). Between naps it looks at the socket without blocking (end
//!   of file, or a frame no sender counted), and before the first only if a handle on the
//!   sending end was closed since it last looked (`closes`). It stores 0 when it returns.
//! - A sender uses the lane only for a message without descriptors of at most
//!   [`LANE_MAX_MESSAGE`] bytes, with room in the ring, while the announcement holds (now <
//!   `spinning_until`): the receiver is alive and inside a receive. Everything else goes
//!   through the socket, whose signals (`EPIPE` for a closed peer, readability for `wait`)
//!   stay exact. After a lane record, the sender wakes the futex of its stamp word if the
//!   receiver sleeps (the stamp, then `sleeping`, stored then loaded with `SeqCst`; the
//!   receiver stores `sleeping`, then looks at the stamp: no wake-up is lost, and one that
//!   comes before the receiver's wait finds the word changed). After a socket frame, and
//!   when a handle on the sending end is closed by a holder of the send lock, the sender
//!   *pokes* the receiver: the stamp word at the receiver's head, which holds no record, is
//!   set to [`POKE`] (still no record) and its futex woken; the receiver clears the poke
//!   before it looks and sleeps again. So a message's hand-off touches the record's cache
//!   lines and the receiver's line only. A receiver killed while it sleeps lets its
//!   announcement lapse within a nap: senders go back to the socket (and its `EPIPE`); what
//!   they put in the lane meanwhile is lost with the receiver, as bytes in a socket buffer
//!   would be.
//! - Polling: a record published after the receiver left its receive would not make the
//!   socket readable, and `wait` or `poll` would miss it. So a sender marks the record's place
//!   [`WRITING`] before it reads the announcement, and a poller (`Connection::as_fd`,
//!   `Connection::poll`) withdraws the announcement before it looks at the head
//!   ([`Lane::withdraw`]; both `SeqCst`): either the sender sees the withdrawal and takes the
//!   socket, or the poller sees the record coming and reports the end ready. A receiver
//!   asleep on a place being written wakes at its stamp.
//! - Publication: a record is published by its first word, its *stamp* (the message's number,
//!   [`stamp`]), stored last; the sender clears the stamp word of the next record's place
//!   before that. So the receiver watches one word, at its head, which reads 0 (or a poke)
//!   until the next record is whole, and never takes bytes of an older lap for a record; a
//!   spinning receiver sees a message in one cache-line transfer (the record's), without
//!   reading the sender's tail. The tail is the senders' own bookkeeping. The receiver's head
//!   and announcement share a cache line, which the sender reads before each record.
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
//!   before lanes existed.

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mp_process::os;
use mp_shm::SharedMemory;
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

/// How much later than its next look a sleeping receiver says it will look (so that a sender
/// never sees the announcement lapse while the receiver is merely asleep).
const SLEEP_MARGIN: Duration = Duration::from_millis(5);

/// A lane record's header: its stamp word (`u32`, see [`stamp`]), the payload's length
/// (`u32`), then the number of socket frames sent before it (`u64`).
const RECORD_HEADER: usize = 16;

/// The bit set in every record's stamp word (a cleared word, 0, is no record).
const STAMPED: u32 = 1 << 31;

/// A stamp word that is no record either: a *poke*, which a sender leaves at the receiver's
/// head after a socket frame (or a close) to wake a receiver asleep on that word's futex. The
/// receiver clears it (back to 0) before it sleeps again; the next record's stamp overwrites
/// it.
const POKE: u32 = 1;

/// A stamp word that is no record yet: a sender is writing the record there, having seen the
/// receiver's announcement (see [`Lane::withdraw`]); its stamp follows.
const WRITING: u32 = 2;

/// The stamp word of the record of message number `count` (modulo 2^31).
fn stamp(count: u32) -> u32 {
    STAMPED | (count & !STAMPED)
}

/// Whether the stamp word `word` publishes the record of message number `count`: `Ok(false)`
/// for no record (0, a poke, a record being written), `Err(())` for a word that is neither.
fn is_stamp(word: u32, count: u32) -> std::result::Result<bool, ()> {
    if word == 0 || word == POKE || word == WRITING {
        return Ok(false);
    }
    if word == stamp(count) { Ok(true) } else { Err(()) }
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

/// The clock of announcements: `CLOCK_MONOTONIC_COARSE` now, in nanoseconds (shared by every
/// process of the machine). Both sides read it on every lane message, and it costs a fifth of
/// the precise clock; it advances by the kernel's ticks, so every announcement is made
/// [`ANNOUNCE_SLACK`] longer, which matters only for a receiver that died (a live one
/// withdraws its announcement itself).
fn coarse_ns() -> u64 {
    timespec_ns(rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse))
}

/// A kernel time in nanoseconds.
fn timespec_ns(t: rustix::time::Timespec) -> u64 {
    u64::try_from(t.tv_sec).unwrap_or(0).saturating_mul(1_000_000_000)
        + u64::try_from(t.tv_nsec).unwrap_or(0)
}

/// How much longer every announcement is made than the receiver means to look: the longest
/// tick of the coarse clock (`HZ` = 100), so that an announcement never lapses early.
const ANNOUNCE_SLACK: Duration = Duration::from_millis(10);

/// What the head of a lane holds.
pub(crate) enum Next {
    /// A message: its payload.
    Message(Vec<u8>),
    /// Nothing.
    Empty,
    /// A message is there, but a frame on the socket comes before it.
    SocketFirst,
}

/// The two lanes of a pipe, mapped.
pub(crate) struct Lanes {
    /// The segment (for its descriptor).
    shm: SharedMemory,
    /// Lane 0 and lane 1.
    lanes: [Mirror; 2],
    /// The spin policy of this process's receives on lane 0 and on lane 1.
    backoff: [SpinBackoff; 2],
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
        Ok(Lanes { shm, lanes, backoff: Default::default() })
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
        Ok(Lanes { shm, lanes, backoff: Default::default() })
    }

    /// Lane `i` (0 or 1).
    pub(crate) fn lane(&self, i: usize) -> Lane<'_> {
        Lane { m: &self.lanes[i & 1], backoff: &self.backoff[i & 1] }
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

    /// Sender: puts a message of `len` bytes that `write` fills, if the receiver is receiving
    /// (its announcement has not lapsed) and there is room; `Ok(false)` otherwise (send it on
    /// the socket). Wakes the receiver if it sleeps.
    pub(crate) fn try_send(
        &self,
        len: usize,
        write: impl FnOnce(&mut [u8]) -> Result<()>,
    ) -> Result<bool> {
        let h = self.h();
        if len > LANE_MAX_MESSAGE || h.head.0.spinning_until.load(Ordering::Relaxed) == 0 {
            return Ok(false);
        }
        let need = record_len(len);
        let tail = h.tail.0.load(Ordering::Relaxed);
        let head = h.head.0.head.load(Ordering::Acquire);
        let used = position(tail).wrapping_sub(position(head)) as usize;
        // Room for the record, and for the first word of the next one, which is cleared.
        if used > LANE_CAPACITY || LANE_CAPACITY - used < need + 8 {
            return Ok(false);
        }
        let at = position(tail);
        if at % 8 != 0 {
            // Only a process writing the shared header out of turn misaligns the tail: the
            // message takes the socket.
            return Ok(false);
        }
        let next = at.wrapping_add(need as u32);
        // SAFETY: `at` is a multiple of 8 (checked), and so is `next` (record lengths are);
        // the word at `next` is free space (the room checked above), and the word at `at` is
        // the stamp, which the receiver only accesses atomically.
        let (next_word, stamp_word) = unsafe { (self.m.word(next), self.m.word(at)) };
        // The record is said to be coming before the announcement is read (both `SeqCst`); a
        // poller withdraws the announcement before it looks at the stamp word (`withdraw`):
        // so either this sender sees the withdrawal, or the poller sees the record coming.
        let before = stamp_word.swap(WRITING, Ordering::SeqCst);
        let until = h.head.0.spinning_until.load(Ordering::SeqCst);
        if until == 0 || coarse_ns() >= until {
            self.unclaim(stamp_word, before);
            return Ok(false);
        }
        let written = {
            // SAFETY: `need <= LANE_CAPACITY`; these bytes (the record but its stamp word) lie
            // past the published tail and before the head plus the capacity, which the
            // receiver never reads; the lane has one sender (an end used by two processes at
            // once is documented as unsupported, and even then both only write bytes that
            // every reader checks).
            let record = unsafe { self.m.bytes_mut(at.wrapping_add(4), need - 4) };
            let (header, body) = record.split_at_mut(RECORD_HEADER - 4);
            let written = body.get_mut(..len).ok_or(Error::Unstable).and_then(write);
            let (len_bytes, sent) = header.split_at_mut(4);
            len_bytes.copy_from_slice(&(len as u32).to_le_bytes());
            sent.copy_from_slice(&h.socket_sent.0.load(Ordering::Relaxed).to_le_bytes());
            written
        };
        if let Err(e) = written {
            self.unclaim(stamp_word, before);
            return Err(e);
        }
        // The next record's stamp word reads "no record" before this one is published: the
        // receiver, once past this record, never takes bytes of an older lap for a record.
        next_word.store(0, Ordering::Relaxed);
        h.tail.0.store(pack(count(tail).wrapping_add(1), next), Ordering::Relaxed);
        // The publication: everything above is visible to whoever sees the stamp. A receiver
        // asleep on the stamp word's futex (it sleeps while the word reads no record) is woken.
        stamp_word.store(stamp(count(tail)), Ordering::SeqCst);
        self.wake_at(stamp_word);
        Ok(true)
    }

    /// Sender: gives up the record place whose stamp word it set to [`WRITING`] (it held
    /// `before`): a poke stays a poke, anything else reads no record; a receiver asleep on
    /// the word is woken, since its value changed.
    fn unclaim(&self, stamp_word: &AtomicU32, before: u32) {
        stamp_word.store(if before == POKE { POKE } else { 0 }, Ordering::SeqCst);
        self.wake_at(stamp_word);
    }

    /// Receiver's end, about to be polled (`wait`, `poll`): withdraws any announcement, so
    /// that no sender starts a lane record from now on, then says whether a record is there
    /// or being written by a sender that saw the announcement (it will be published), in
    /// which case the end is ready: the record would not make the socket readable.
    pub(crate) fn withdraw(&self) -> bool {
        self.h().head.0.spinning_until.swap(0, Ordering::SeqCst);
        self.has_record()
    }

    /// Wakes the receiver if it sleeps, on the futex of `word` (the stamp word at its head).
    fn wake_at(&self, word: &AtomicU32) {
        if self.h().head.0.sleeping.load(Ordering::SeqCst) != 0 {
            os::futex::wake_all(word);
        }
    }

    /// Sender or closer, holding the end's send lock: wakes the receiver if it sleeps, so
    /// that it looks at the socket and the close count. The stamp word at the receiver's
    /// head, which holds no record (else the receiver is not asleep), becomes a [`POKE`],
    /// and the futex there is woken. With the send lock held no record is being written, so
    /// that word holds a stamp, 0 or a poke, whatever the receiver has taken meanwhile.
    pub(crate) fn poke(&self) {
        let h = self.h();
        let at = position(h.head.0.head.load(Ordering::Acquire));
        if at % 8 != 0 {
            // Only a process writing the shared header out of turn misaligns the head; the
            // receiver finds it at its nap's end.
            return;
        }
        // SAFETY: `at` is a multiple of 8, and the word there is a stamp word (see above),
        // accessed atomically only.
        let word = unsafe { self.m.word(at) };
        let _ = word.compare_exchange(0, POKE, Ordering::SeqCst, Ordering::SeqCst);
        self.wake_at(word);
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

    /// Receiver: sleeps on the futex of the stamp word at its head until a record is
    /// published there or a sender pokes it (a socket frame, a close), or `timeout` passes,
    /// having announced that it is alive and receiving until a little after it will look
    /// again. Returns at once if something is already waiting.
    pub(crate) fn sleep(&self, timeout: Duration, closes_seen: u64) -> Result<()> {
        let consumer = &self.h().head.0;
        self.announce(timeout.saturating_add(SLEEP_MARGIN));
        let at = position(consumer.head.load(Ordering::Relaxed));
        if at % 8 != 0 {
            // Only a process writing the shared header out of turn misaligns the head: the
            // next take reports it.
            return Ok(());
        }
        // SAFETY: `at` is a multiple of 8, and the word there is the stamp word at the head,
        // accessed atomically only.
        let word = unsafe { self.m.word(at) };
        // Said before looking (both `SeqCst`, as the sender's stamp or poke and then its load
        // of `sleeping`): either this receiver sees what the sender did, or the sender sees
        // it sleeping and wakes it; a wake-up before the wait finds the word changed.
        consumer.sleeping.store(1, Ordering::SeqCst);
        let mut seen = word.load(Ordering::SeqCst);
        if seen == POKE {
            // A poke asked for the look below; cleared first, so that a later one is seen.
            seen = match word.compare_exchange(POKE, 0, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => 0,
                Err(now) => now,
            };
        }
        // Nothing there (0), or a record being written (its stamp will change the word): sleep
        // unless a socket frame or a close is there to look at.
        let result = if (seen != 0 && seen != WRITING)
            || self.socket_pending()
            || self.closes() != closes_seen
        {
            Ok(false)
        } else {
            os::futex::wait_for(word, seen, timeout)
        };
        consumer.sleeping.store(0, Ordering::Relaxed);
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

    /// Receiver: whether a lane record is waiting or being written (or the lane is corrupt,
    /// which the next receive reports).
    pub(crate) fn has_record(&self) -> bool {
        let at = position(self.h().head.0.head.load(Ordering::SeqCst));
        if at % 8 != 0 {
            // Only a process writing the shared header out of turn misaligns the head.
            return true;
        }
        // SAFETY: `at` is a multiple of 8, and its word is a stamp word, accessed atomically
        // only.
        let word = unsafe { self.m.word(at) }.load(Ordering::SeqCst);
        word != 0 && word != POKE
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
        let head = h.head.0.head.load(Ordering::Relaxed);
        let at = position(head);
        if at % 8 != 0 {
            return Err(Error::Corrupt("a pipe lane's head is misaligned".into()));
        }
        // SAFETY: `at` is a multiple of 8, and the word there is a stamp word (the sender
        // publishes with it and clears it only while it is free space), accessed atomically.
        let word = unsafe { self.m.word(at) }.load(Ordering::Acquire);
        match is_stamp(word, count(head)) {
            Ok(true) => {}
            Ok(false) => return Ok(Ok(Next::Empty)),
            Err(()) => {
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
        let need = record_len(len);
        if before > h.socket_taken.0.load(Ordering::SeqCst) {
            return Ok(Ok(Next::SocketFirst));
        }
        if len > limit {
            return Ok(Err(len as u64));
        }
        // SAFETY: as for the header: inside the published record.
        let payload = unsafe { self.m.bytes(at.wrapping_add(RECORD_HEADER as u32), len) };
        let message = payload.to_vec();
        let consumed = pack(count(head).wrapping_add(1), at.wrapping_add(need as u32));
        h.head.0.head.store(consumed, Ordering::Release);
        Ok(Ok(Next::Message(message)))
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

    /// Receiver: announces that it is receiving, and looks at the lane at least once more,
    /// until `budget` from now.
    pub(crate) fn announce(&self, budget: Duration) {
        let until = coarse_ns().saturating_add(duration_ns(budget.saturating_add(ANNOUNCE_SLACK)));
        self.h().head.0.spinning_until.store(until.max(1), Ordering::SeqCst);
    }

    /// Receiver: no longer looks at the lane (about to sleep, or done).
    pub(crate) fn stop_spinning(&self) {
        self.h().head.0.spinning_until.store(0, Ordering::Release);
    }
}

/// Receiver: stops spinning when dropped, on every way out of a receive.
pub(crate) struct Spinning<'a>(pub(crate) Lane<'a>);

impl Drop for Spinning<'_> {
    fn drop(&mut self) {
        self.0.stop_spinning();
    }
}

/// The most receives in a row that skip spinning after spins that did not pay.
const MAX_SKIP: u32 = 64;

/// Whether a receiving end spins, learnt from its receives before (per lane, per process).
///
/// A receive that spun its whole budget and then had to sleep lost that time: the peer was
/// slow, or, on a machine whose every core is busy, it waited for a CPU (perhaps the very one
/// the spinner held), and spinning cannot win there. After such a loss the next receives
/// sleep at once without spinning: 1 after the first loss, twice as many after each loss in
/// a row, at most [`MAX_SKIP`]; then one receive spins again, to learn whether spinning pays
/// now. A spin that wins (the message came while it spun) resets the policy. So a quick peer
/// keeps sub-microsecond hand-offs, and a slow peer or a loaded machine costs one spin in
/// [`MAX_SKIP`] receives.
#[derive(Debug, Default)]
pub(crate) struct SpinBackoff {
    /// How many receives will still skip spinning.
    skip: AtomicU32,
    /// How many receives the next loss makes skip spinning, less one doubling (0 after a win).
    penalty: AtomicU32,
}

impl SpinBackoff {
    /// Whether the receive starting now spins (else it sleeps at once). Receives on a lane
    /// are serialised by its receive lock, so plain loads and stores suffice.
    pub(crate) fn next_spins(&self) -> bool {
        let skip = self.skip.load(Ordering::Relaxed);
        if skip == 0 {
            return true;
        }
        self.skip.store(skip - 1, Ordering::Relaxed);
        false
    }

    /// A receive that spun is over; `won` if the message came while it spun.
    pub(crate) fn spun(&self, won: bool) {
        if won {
            self.penalty.store(0, Ordering::Relaxed);
            return;
        }
        let penalty = self.penalty.load(Ordering::Relaxed).saturating_mul(2).clamp(1, MAX_SKIP);
        self.penalty.store(penalty, Ordering::Relaxed);
        self.skip.store(penalty, Ordering::Relaxed);
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
    let limit = mp_sync::spin_limit();
    if limit == 0 || !mp_sync::futex::can_spin() {
        return None;
    }
    Some(RECV_SPIN.saturating_mul(limit) / mp_sync::DEFAULT_SPIN_LIMIT.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_name_their_message() {
        assert_eq!(is_stamp(0, 7), Ok(false));
        assert_eq!(is_stamp(POKE, 7), Ok(false), "a poke is no record");
        assert_eq!(is_stamp(stamp(7), 7), Ok(true));
        assert_eq!(is_stamp(stamp(u32::MAX), u32::MAX), Ok(true));
        assert_eq!(is_stamp(stamp(0), 0), Ok(true));
        assert_eq!(is_stamp(stamp(7), 8), Err(()), "another message's stamp");
        assert_eq!(is_stamp(stamp(7) & !STAMPED, 7), Err(()), "not a stamp");
        for count in [0, 1, u32::MAX, STAMPED] {
            assert!(stamp(count) != 0 && stamp(count) != POKE, "a stamp is neither 0 nor a poke");
        }
    }

    /// Takes the next message of `lane`, which must be there.
    fn take_one(lane: Lane<'_>) -> Vec<u8> {
        match lane.take(usize::MAX) {
            Ok(Ok(Next::Message(m))) => m,
            Ok(Ok(Next::Empty)) => panic!("no message"),
            Ok(Ok(Next::SocketFirst)) => panic!("a socket frame first"),
            Ok(Err(len)) => panic!("a message of {len} bytes over the limit"),
            Err(e) => panic!("{e}"),
        }
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
            lane.announce(Duration::from_secs(60));
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
    fn a_forged_stamp_is_corruption_not_a_message() {
        let lanes = Lanes::create().unwrap();
        let lane = lanes.lane(1);
        // SAFETY: the head (0) is a stamp word and 4 its length; nothing else uses the lane.
        let (word, len) = unsafe { (lane.m.word(0), lane.m.word(4)) };
        word.store(stamp(5), Ordering::SeqCst);
        assert!(matches!(lane.take(usize::MAX), Err(Error::Corrupt(_))));
        word.store(stamp(0), Ordering::SeqCst);
        len.store(LANE_MAX_MESSAGE as u32 + 1, Ordering::SeqCst);
        assert!(matches!(lane.take(usize::MAX), Err(Error::Corrupt(_))));
        word.store(0, Ordering::SeqCst);
        assert!(matches!(lane.take(usize::MAX), Ok(Ok(Next::Empty))));
        // Whatever another process writes in the head and the ring, a take ends in a value or
        // an error.
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
            h.head.0.head.store(head, Ordering::SeqCst);
            let at = position(head) & !7;
            let forged = match next() % 4 {
                0 => next() as u32,
                1 => POKE,
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
        }
        // A misaligned tail sends the message on the socket; a misaligned head makes sleeps
        // and pokes return at once.
        h.tail.0.store(pack(3, 12), Ordering::SeqCst);
        lane.announce(Duration::from_secs(60));
        assert!(!lane.try_send(8, |_| Ok(())).unwrap());
        h.head.0.head.store(pack(3, 12), Ordering::SeqCst);
        lane.poke();
        lane.sleep(Duration::from_secs(3600), lane.closes()).unwrap();
        assert!(lane.has_record(), "a misaligned head is reported by the next take");
    }

    /// A writer of `bytes` for `try_send`.
    fn put(bytes: &[u8]) -> impl FnOnce(&mut [u8]) -> Result<()> + '_ {
        move |body| {
            body.copy_from_slice(bytes);
            Ok(())
        }
    }

    /// Whether a record is published at the head of `lane`.
    fn published(lane: Lane<'_>) -> bool {
        let head = lane.h().head.0.head.load(Ordering::SeqCst);
        // SAFETY: the tests keep the head aligned; its stamp word is accessed atomically only.
        let word = unsafe { lane.m.word(position(head)) }.load(Ordering::SeqCst);
        is_stamp(word, count(head)) == Ok(true)
    }

    /// Runs `wake` once a receiver sleeps on `lane` (with hour-long naps, so that a lost
    /// wake-up hangs the test until it is killed), and waits for the receiver to see
    /// something to look at (`ready`, or closes other than `closes_seen`).
    fn wakes_a_sleeper(lane: Lane<'_>, wake: impl FnOnce()) {
        let closes_seen = lane.closes();
        std::thread::scope(|s| {
            let sleeper = s.spawn(|| {
                while !published(lane) && !lane.socket_pending() && lane.closes() == closes_seen {
                    lane.sleep(Duration::from_secs(3600), closes_seen).unwrap();
                }
            });
            while lane.h().head.0.sleeping.load(Ordering::SeqCst) == 0 {
                std::thread::yield_now();
            }
            wake();
            sleeper.join().unwrap();
        });
    }

    #[test]
    fn a_poke_is_no_record_and_wakes_a_sleeping_receiver() {
        let lanes = Lanes::create().unwrap();
        let lane = lanes.lane(0);
        // Nobody sleeps: the poke stays at the head, and reads as no record.
        lane.poke();
        assert!(!lane.has_record());
        assert!(matches!(lane.take(usize::MAX), Ok(Ok(Next::Empty))));
        // A record is written over it.
        lane.announce(Duration::from_secs(60));
        assert!(lane.try_send(3, put(b"abc")).unwrap());
        assert_eq!(take_one(lane), b"abc");
        // A socket frame's poke wakes a sleeping receiver, and so does a record...
        wakes_a_sleeper(lane, || {
            lane.count_socket_frame(false);
            lane.poke();
        });
        assert!(lane.socket_pending());
        lane.taken_from_socket();
        wakes_a_sleeper(lane, || {
            lane.announce(Duration::from_secs(60));
            assert!(lane.try_send(2, put(b"de")).unwrap());
        });
        assert_eq!(take_one(lane), b"de");
        // ...and a close by a holder of the send lock, and a frame large enough to be
        // counted with a wake-up before it is sent.
        wakes_a_sleeper(lane, || lane.closed_one(true));
        wakes_a_sleeper(lane, || lane.count_socket_frame(true));
        assert!(lane.socket_pending());
    }

    #[test]
    fn a_poller_sees_the_record_a_sender_started_or_no_sender_starts_one() {
        let lanes = Lanes::create().unwrap();
        let lane = lanes.lane(0);
        // SAFETY: the head stays at 0 until a record is taken; its stamp word is accessed
        // atomically only.
        let head_word =
            || unsafe { lane.m.word(position(lane.h().head.0.head.load(Ordering::SeqCst))) };
        // The receiver leaves, and a poller looks, while a sender writes a record it started
        // because the receiver was receiving: the poller sees the record coming.
        lane.announce(Duration::from_secs(60));
        let sent = lane.try_send(2, |body| {
            assert!(lane.withdraw(), "a record being written is seen by a poller");
            body.copy_from_slice(b"hi");
            Ok(())
        });
        assert!(sent.unwrap());
        assert!(lane.withdraw());
        assert_eq!(take_one(lane), b"hi");
        // Withdrawn before a sender looks: the sender takes the socket and leaves no record.
        lane.announce(Duration::from_secs(60));
        assert!(!lane.withdraw());
        assert!(!lane.try_send(2, put(b"no")).unwrap());
        assert!(!lane.has_record());
        assert_eq!(head_word().load(Ordering::SeqCst), 0);
        // A poke at the head stays one when a sender gives the place up.
        lane.poke();
        lane.announce(Duration::from_secs(60));
        lane.h().head.0.spinning_until.store(1, Ordering::SeqCst);
        assert!(!lane.try_send(2, put(b"no")).unwrap(), "the announcement lapsed");
        assert_eq!(head_word().load(Ordering::SeqCst), POKE);
        // A record whose writing fails gives the place up too.
        lane.announce(Duration::from_secs(60));
        assert!(matches!(lane.try_send(2, |_| Err(Error::Unstable)), Err(Error::Unstable)));
        assert!(!lane.has_record());
        assert!(lane.try_send(2, put(b"ok")).unwrap());
        assert_eq!(take_one(lane), b"ok");
        // A receiver asleep while a record is being written (as a sender killed while it
        // wrote leaves it) wakes at the stamp of the next sender's record, written there.
        head_word().store(WRITING, Ordering::SeqCst);
        wakes_a_sleeper(lane, || {
            lane.h().head.0.spinning_until.store(u64::MAX, Ordering::SeqCst);
            assert!(lane.try_send(3, put(b"zzz")).unwrap());
        });
        assert_eq!(take_one(lane), b"zzz");
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

    fn skipped(b: &SpinBackoff) -> u32 {
        let mut n = 0;
        while !b.next_spins() {
            n += 1;
            assert!(n <= MAX_SKIP, "more than MAX_SKIP receives skipped spinning");
        }
        n
    }

    #[test]
    fn spinning_goes_on_while_it_wins() {
        let b = SpinBackoff::default();
        for _ in 0..10 {
            assert!(b.next_spins());
            b.spun(true);
        }
    }

    #[test]
    fn losses_in_a_row_back_off_doubling_up_to_the_cap() {
        let b = SpinBackoff::default();
        let mut seen = Vec::new();
        for _ in 0..9 {
            b.spun(false);
            seen.push(skipped(&b));
        }
        assert_eq!(seen, [1, 2, 4, 8, 16, 32, 64, 64, 64]);
    }

    #[test]
    fn a_win_resets_the_backoff() {
        let b = SpinBackoff::default();
        for _ in 0..4 {
            b.spun(false);
            skipped(&b);
        }
        b.spun(true);
        b.spun(false);
        assert_eq!(skipped(&b), 1);
    }
}
