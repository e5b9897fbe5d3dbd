//! `mp-queue`: queues, pipes and connections between processes, as Python's
//! `multiprocessing.Queue`, `JoinableQueue`, `SimpleQueue`, `Pipe` and
//! `multiprocessing.connection`.
//!
//! ```
//! use mp_process::Process;
//! use mp_queue::Connection;
//!
//! fn worker(conn: Connection) -> Result<(), mp_queue::Error> {
//!     let numbers: Vec<u64> = conn.recv()?;
//!     conn.send(&numbers.iter().sum::<u64>())
//! }
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let _guard = mp_process::init()?;
//!     let (parent_end, child_end) = mp_queue::pipe(true)?;
//!     let mut p = Process::new(worker, (child_end,));
//!     p.start()?;
//!     parent_end.send(&vec![1u64, 2, 3, 4])?;
//!     assert_eq!(parent_end.recv::<u64>()?, 10);
//!     assert_eq!(p.join()?, 0);
//!     Ok(())
//! }
//! ```
//!
//! # Queues
//! [`Queue`], [`JoinableQueue`] and [`SimpleQueue`] carry any serde type between any number of
//! producers and consumers in any processes, FIFO per producer. Items are encoded straight
//! into a ring of shared memory and decoded straight out of it: a `put` or `get` is a copy and
//! a few atomic operations, with no helper thread and no system call unless a side sleeps.
//! Messages larger than half the ring travel in a segment of their own; descriptors inside
//! items (connections, other queues, locks, shared memory) cross on a side channel. A process
//! killed in the middle of a `put` or a `get` does not wedge or corrupt the queue (see
//! [`Queue`]).
//!
//! ```
//! use mp_process::Process;
//! use mp_queue::{JoinableQueue, Queue};
//!
//! fn square_all(tasks: JoinableQueue<Option<u64>>, results: Queue<u64>) {
//!     while let Ok(Some(n)) = tasks.get() {
//!         results.put(n * n).unwrap();
//!         tasks.task_done().unwrap();
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let tasks = JoinableQueue::with_maxsize(4)?;
//! let results = Queue::new()?;
//! let mut p = Process::new(square_all, (tasks.clone(), results.clone()));
//! p.start()?;
//! for n in 1..=5 {
//!     tasks.put(Some(n))?;
//! }
//! tasks.join()?; // every task reported done
//! let mut squares: Vec<u64> = (0..5).map(|_| results.get()).collect::<Result<_, _>>()?;
//! squares.sort();
//! assert_eq!(squares, [1, 4, 9, 16, 25]);
//! tasks.put(None)?;
//! assert_eq!(p.join()?, 0);
//! # Ok(())
//! # }
//! ```
//!
//! # Pipes and connections
//! [`pipe`] returns two [`Connection`]s joined by an `AF_UNIX` stream socket pair. A
//! connection sends typed values ([`Connection::send`], [`Connection::recv`]: postcard, any
//! serde type) or raw bytes ([`Connection::send_bytes`], [`Connection::recv_bytes`],
//! [`Connection::recv_bytes_into`]), and each message arrives whole and alone: boundaries are
//! kept, and an empty message is a message. [`Connection::poll`] tells whether a message is
//! waiting now, [`Connection::poll_timeout`] waits up to a timeout. The other end closing
//! gives [`Error::Eof`]. [`socket_pipe`] returns a pair with CPython's framing and no
//! shared memory, as CPython builds `Pipe()`: every message a system call, which is what a
//! receiver that never spins wants, or a Python program at the other end.
//!
//! ```
//! let (a, b) = mp_queue::pipe(true)?;
//! a.send_bytes(b"", 0, None)?;
//! a.send(&vec!["two", "strings"])?;
//! b.send(&3.5f64)?;
//! assert_eq!(b.recv_bytes(None)?, b"");
//! assert_eq!(b.recv::<Vec<String>>()?, ["two", "strings"]);
//! assert_eq!(a.recv::<f64>()?, 3.5);
//! drop(a);
//! assert!(matches!(b.recv::<u8>(), Err(mp_queue::Error::Eof)));
//! # Ok::<(), mp_queue::Error>(())
//! ```
//!
//! # The wire
//! A message crosses in a pipe's shared-memory lane when the receiver is waiting for it and it
//! is small and holds no descriptors (see [`pipe`]); otherwise, and always as far as errors
//! and limits go, it is one frame of `mp_process::fdpass`: an 8-byte header (payload length,
//! descriptor count), the payload, and any descriptors as `SCM_RIGHTS` beside the header. The
//! largest message is [`Connection::max_message_size`] (default 64 MiB,
//! `mp_process::wire::DEFAULT_MAX_FRAME`), checked before anything is sent and, on receipt,
//! before any memory is reserved. Corrupt, truncated or oversized input is an error value,
//! never a panic; after one that leaves the stream inside a frame, the connection refuses
//! further receives with [`Error::Broken`] and should be dropped.
//!
//! # Connections cross into children
//! A `Connection` is `Serialize` and `Deserialize` through `mp_process::fdpass`, so it is an
//! argument of `mp_process::Process::new` under every start method (moved under `fork`, its
//! socket carried beside the bootstrap under `spawn` and `forkserver`) and it travels inside
//! messages to a process that is already running, keeping its direction. Sending a connection
//! hands over another handle on the same end, as [`Connection::try_clone`] makes one: the
//! sender's own stays open (drop it). Handles on one end may be used by several threads and
//! processes at once: each end has a send lock and a receive lock shared by all its handles,
//! so messages never interleave and each arrives whole at one receiver.
//!
//! ```
//! use mp_queue::Connection;
//!
//! fn relay(control: Connection) -> Result<(), mp_queue::Error> {
//!     let out: Connection = control.recv()?; // a connection inside a message
//!     out.send("hello through a received connection")
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (control, child_control) = mp_queue::pipe(true)?;
//! let mut p = mp_process::Process::new(relay, (child_control,));
//! p.start()?;
//! let (reader, writer) = mp_queue::pipe(false)?;
//! control.send(&writer)?;
//! drop(writer);
//! assert_eq!(reader.recv::<String>()?, "hello through a received connection");
//! assert_eq!(p.join()?, 0);
//! # Ok(())
//! # }
//! ```
//!
//! # Listeners and clients
//! [`Listener`] and [`Client`] are Python's `multiprocessing.connection.Listener` and
//! `Client`: connections between processes that are not parent and child, on TCP, an
//! `AF_UNIX` path or a Linux abstract name ([`Address`]). With a key, both ends run
//! CPython's mutual handshake (HMAC-SHA256 challenges, every read capped at 256 bytes and
//! bounded in time) before any data; the connections frame messages as CPython does (a
//! 4-byte big-endian length), so either end may be a Python program using
//! `send_bytes`/`recv_bytes`. They are [`Connection`]s like a pipe's ends, carrying bytes
//! only (no descriptors inside messages); an accepted connection can itself be handed to a
//! child process.
//!
//! ```
//! let listener = mp_queue::Listener::bind("@mp-doc-example", Some(b"key"))?;
//! std::thread::scope(|s| {
//!     s.spawn(|| mp_queue::Client::connect("@mp-doc-example", Some(b"key"))?.send(&7u8));
//!     assert_eq!(listener.accept()?.recv::<u8>()?, 7);
//!     Ok::<(), mp_queue::Error>(())
//! })?;
//! # Ok::<(), mp_queue::Error>(())
//! ```
//!
//! # Waiting on many objects
//! [`wait`] and [`wait_timeout`] are Python's `multiprocessing.connection.wait`: given any
//! collection of connections, queues, process sentinels (`mp_process::Process::sentinel`),
//! `mp_sync` locks and events, or anything [`AsFd`](std::os::fd::AsFd), they return the ones
//! that are ready, in the order given.
//!
//! ```
//! use std::os::fd::AsFd;
//! use std::time::Duration;
//!
//! fn exit_now() {}
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (a, b) = mp_queue::pipe(true)?;
//! let mut p = mp_process::Process::new(exit_now, ());
//! p.start()?;
//! let sentinel = p.sentinel()?;
//! let objects: [&dyn AsFd; 2] = [&b, &sentinel];
//! let ready = mp_queue::wait(objects)?;
//! assert_eq!(ready.len(), 1);
//! assert!(std::ptr::addr_eq(ready[0], &sentinel), "the sentinel, not the connection");
//! a.send(&1u8)?;
//! assert_eq!(mp_queue::wait_timeout(objects, Duration::ZERO)?.len(), 2);
//! p.join()?;
//! # Ok(())
//! # }
//! ```
//!
//! # Errors
//! One [`Error`] type, with the variants a Python user knows: [`Error::Eof`] (`EOFError`),
//! [`Error::BufferTooShort`] (which carries the whole message), [`Error::Closed`],
//! [`Error::ReadOnly`], [`Error::WriteOnly`] and [`Error::BadMessageLength`] (Python's
//! `OSError`s), [`Error::OutOfRange`] (its `ValueError`s); system errors are [`Error::Io`],
//! message errors [`Error::Wire`], both chaining their cause.
//!
//! # Which handles are `Send` and `Sync`
//! | type | `Send` | `Sync` | why |
//! | --- | --- | --- | --- |
//! | [`Connection`] | yes | yes | a socket; the end's send lock orders sends and its receive lock receives (across processes too, for a pipe's ends; within the process for a `Listener`'s or `Client`'s), so messages never interleave, and one thread may receive while another sends. |
//! | [`Listener`] | yes | yes | a listening socket; several threads may accept at once. |
//! | [`Queue`], [`JoinableQueue`], [`SimpleQueue`] | yes | yes | whatever `T`: the handle holds no `T`, only shared memory, robust locks and descriptors; any thread of any process may put and get. |
//! | [`PutError`] | if `T` is | if `T` is | it holds the value. |
//! | [`Error`] | yes | yes | plain data and `io::Error`. |
//!
//! # Differences from Python's multiprocessing
//! - A receiver blocked in `recv` learns that the other end closed within 50 ms, not at once
//!   (it sleeps on a futex, looking at the socket between naps; see [`pipe`]).
//! - `Queue()` is bounded by its ring's bytes ([`DEFAULT_CAPACITY`], 4 MiB, set with
//!   [`QueueBuilder::capacity`]): a `put` into a full ring waits for a consumer, where
//!   Python's feeder thread buffers without limit. There is no feeder thread, so a `put` has
//!   finished when it returns (`join_thread`/`cancel_join_thread` have no counterpart), and
//!   `qsize` works everywhere.
//! - Messages are postcard encodings of serde types, not pickles: the receiver names the type
//!   (`recv::<T>()`), and a message of another shape is an [`Error::Wire`] that leaves the
//!   connection usable.
//! - `Pipe(duplex=False)` is a socket pair with the unused directions shut down, not an
//!   `os.pipe()`, so that descriptors can travel on it too. Its writing end, whose receiving
//!   side is shut down, always polls ready in [`wait`].
//! - Several processes may use one end at once ([`Connection::try_clone`]): the end's locks
//!   keep messages whole, where Python warns that data "may become corrupted".
//! - Messages are limited to [`Connection::max_message_size`] (64 MiB by default,
//!   configurable up to 4 GiB); Python has no limit.
//! - Python's `timeout` arguments are split into methods, as everywhere in `mp`: `poll()`
//!   looks without blocking (Python's default), `poll_timeout(t)` waits, and
//!   `poll_timeout(Duration::MAX)` waits for ever (`poll(None)`); `wait(objects)` blocks and
//!   `wait_timeout(objects, t)` does not wait longer than `t`.
//! - After `close`, the connection's descriptor ([`AsFd`](std::os::fd::AsFd)) is a stand-in
//!   that always polls ready, so [`wait`] returns it at once where Python raises `OSError`;
//!   its operations give [`Error::Closed`].
//! - Any receive that stops inside a message breaks the connection ([`Error::Broken`]), not
//!   only `recv_bytes` with a too small `maxlength`; a read-only end is not closed by it.
//! - A peer that closed with unread data (Linux: `ECONNRESET`) is [`Error::Eof`], not
//!   `ConnectionResetError`.
//! - There is no `fileno()`: use [`AsFd`](std::os::fd::AsFd).
//! - [`Listener`] and [`Client`] refuse Python 3.11's HMAC-MD5 handshake unless
//!   `legacy_md5(true)` is set (CPython 3.12 accepts it always), bound each handshake by a
//!   timeout (Python waits for ever), set `TCP_NODELAY`, and listen with a backlog of 128
//!   (Python's `Listener` uses 1).
//!
//! # Features
//! `failpoints` (off by default; the crate's own tests turn it on) adds `mp_queue::failpoint`: a
//! process can be made to SIGKILL itself at a chosen step of a `put` or `get`, for tests of
//! what a process killed mid-operation leaves behind. Without it, none of that code exists.
#![deny(unsafe_code)]

/// Dies here if the failpoint of this step of a `put` or `get` is armed (`failpoint!(Put, 2)`
/// is step 2 of a put); expands to nothing without the `failpoints` feature.
macro_rules! failpoint {
    ($op:ident, $step:expr) => {
        #[cfg(feature = "failpoints")]
        $crate::failpoint::hit($crate::failpoint::Op::$op, $step);
    };
}

mod bytes;
pub(crate) mod connection;
mod error;
#[cfg(feature = "failpoints")]
pub mod failpoint;
mod header;
#[allow(unsafe_code, reason = "a pipe lane's slices, under its one-sender, one-receiver rule")]
mod lane;
mod listener;
mod queue;
#[allow(unsafe_code, reason = "the ring protocol: slices of the ring under its locks")]
mod ring;
#[allow(unsafe_code, reason = "the platform layer: the mirrored ring mapping")]
mod sys;
mod wait;

pub use bytes::Bytes;
pub use connection::{Connection, pipe, socket_pipe};
pub use error::{Error, Result};
pub use listener::{
    Address, Client, DEFAULT_BACKLOG, DEFAULT_HANDSHAKE_TIMEOUT, IntoAddress, Listener,
    ListenerBuilder, Pending,
};
pub use queue::{JoinableQueue, PutError, Queue, QueueBuilder, SimpleQueue};
pub use ring::{DEFAULT_CAPACITY, DEFAULT_MAX_MESSAGE, MAX_CAPACITY, MIN_CAPACITY};
pub use wait::{wait, wait_timeout};

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn handles_are_send_and_sync() {
        assert_send_sync::<Connection>();
        assert_send_sync::<Error>();
        assert_send_sync::<Queue<std::rc::Rc<u8>>>();
        assert_send_sync::<JoinableQueue<String>>();
        assert_send_sync::<SimpleQueue<Vec<u8>>>();
    }
}
