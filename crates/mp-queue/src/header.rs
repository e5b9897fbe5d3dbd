//! The shared header of queues and pipe lanes: what a segment holds before its ring. Atomics
//! only, no pointers, valid for every bit pattern, so that whatever another process writes
//! cannot cause undefined behaviour here.

use std::sync::atomic::{AtomicU32, AtomicU64};

/// A 64-byte aligned cell, so that words written by different parties (producers, consumers,
/// waiters) do not share a cache line.
#[repr(C, align(64))]
pub(crate) struct Line<T>(pub(crate) T);

/// A futex word and the number of threads sleeping on it, over all processes.
#[repr(C)]
pub(crate) struct Wake {
    /// The futex word.
    pub(crate) word: AtomicU32,
    /// How many threads sleep (or are about to sleep) on `word`; wakers skip the system call
    /// when it is 0. A process killed while waiting leaves it one too high: extra wake-ups.
    pub(crate) waiters: AtomicU32,
}

/// The words the consumers of a queue, or the receiver of a pipe lane, write.
#[repr(C)]
pub(crate) struct Consumer {
    /// The consumers' published start, packed as [`Header::tail`]. A pipe lane's receiver
    /// publishes it now and then only (senders read it when they run short of room); its
    /// exact head is [`Header::reader`].
    pub(crate) head: AtomicU64,
    /// Pipes: the receiver's lease: until when (`CLOCK_MONOTONIC_COARSE` nanoseconds) it
    /// promises to be alive and to receive again (0: never received).
    pub(crate) alive_until: AtomicU64,
}

/// The settings a queue is created with, fixed afterwards.
#[repr(C)]
pub(crate) struct Config {
    /// [`QUEUE_MAGIC`]: what a received segment must hold.
    pub(crate) magic: AtomicU64,
    /// The ring's size in bytes: a power of two, a multiple of the page size.
    pub(crate) capacity: AtomicU64,
    /// The most items the queue holds (0: bounded only by the ring's bytes).
    pub(crate) maxsize: AtomicU64,
    /// The largest message in bytes, as encoded.
    pub(crate) max_message: AtomicU64,
    /// Which queue type made the segment (`Queue`, `JoinableQueue`, `SimpleQueue`).
    pub(crate) kind: AtomicU64,
}

/// What a queue segment holds before its ring: atomics only, no pointers, valid for every bit
/// pattern, so that whatever another process writes it cannot cause undefined behaviour here.
#[repr(C)]
pub(crate) struct Header {
    /// The settings.
    pub(crate) config: Line<Config>,
    /// The producers' published end: message count in the high 32 bits, byte position
    /// (modulo 2^32) in the low 32 bits. One store publishes a message.
    pub(crate) tail: Line<AtomicU64>,
    /// The next side-channel id (producers, under their lock).
    pub(crate) next_id: Line<AtomicU64>,
    /// What the consumers write (a pipe lane's receiver: its lease and published head, which
    /// senders read now and then only).
    pub(crate) head: Line<Consumer>,
    /// Consumers sleep here waiting for a message.
    pub(crate) data: Line<Wake>,
    /// Producers sleep here waiting for room.
    pub(crate) space: Line<Wake>,
    /// `JoinableQueue`: `word` counts `task_done` calls (modulo 2^32); `join` sleeps on it.
    pub(crate) done: Line<Wake>,
    /// How many handles, over all processes, have handed out the doorbell's descriptor.
    pub(crate) pollers: Line<AtomicU32>,
    /// Pipes: how many frames the sender has sent on the socket.
    pub(crate) socket_sent: Line<AtomicU64>,
    /// Pipes: how many frames the receiver has read from the socket.
    pub(crate) socket_taken: Line<AtomicU64>,
    /// Pipes: how many handles on the sending end, in any process, have been closed.
    pub(crate) closes: Line<AtomicU64>,
    /// Pipes: the receiver's exact head, packed as [`Header::tail`] (senders never read it).
    pub(crate) reader: Line<AtomicU64>,
    /// Pipes: the byte position up to which senders know the ring to be free (the published
    /// head plus the capacity, when they last read it), packed as [`Header::tail`].
    pub(crate) send_limit: Line<AtomicU64>,
}

/// The magic number at the start of every queue segment ("mpQUEUE1").
pub(crate) const QUEUE_MAGIC: u64 = u64::from_le_bytes(*b"mpQUEUE1");

/// The size of the header region: one page (the ring must start on a page boundary).
pub(crate) fn header_len() -> usize {
    rustix::param::page_size().max(std::mem::size_of::<Header>())
}
