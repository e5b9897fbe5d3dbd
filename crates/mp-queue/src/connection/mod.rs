//! `pipe`, `socket_pipe` and `Connection`: message-preserving channels over stream sockets.
//! A pipe's ends use mp's frames and shared-memory lanes; the connections of `Listener` and
//! `Client`, and the ends of a `socket_pipe`, use CPython's framing (`pyframe.rs`). What
//! crosses for a connection is in `wire.rs`.

pub(crate) mod pyframe;
mod wire;

use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use mp_process::fdpass;
use mp_process::os::{self, socket::Peek};
use mp_process::wire::{DEFAULT_MAX_FRAME, WireError};
use mp_sync::{Lock, LockError, LockGuard};
use rustix::io::Errno;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::lane::{self, Lane, Lanes, Next};
use crate::sys;

/// Returns a pair of connected [`Connection`]s: Python's `multiprocessing.Pipe(duplex)`.
///
/// Both ends are one `AF_UNIX` `SOCK_STREAM` socket pair (close-on-exec), so descriptors can
/// travel inside messages. With `duplex` both ends send and receive. Without it the pair is
/// `(reader, writer)`, as in Python: the first end only receives, the second only sends, and
/// using an end the other way is [`Error::ReadOnly`] or [`Error::WriteOnly`] (the unused
/// direction of each socket is also shut down, so the kernel enforces it).
///
/// Beside the sockets, the pair shares a segment of memory with a lane (a 4 MiB ring) per
/// direction: while a receiver is waiting in `recv` (it spins for a few µs, then sleeps on a
/// futex, and says so), a message without descriptors of up to 2 MiB that fits is copied into
/// the lane instead of the socket, so a round trip costs no system call while both sides are
/// busy, and a futex wake-up when one sleeps. Everything else (larger messages, messages with
/// descriptors, messages to a receiver that is not receiving) goes through the socket, whose
/// signals (`EPIPE`, readability for [`wait`](crate::wait)) stay exact; order is kept across
/// the two. A receiver blocked in `recv` notices that the other end closed within 50 ms. The
/// lanes' memory is touched only as messages pass: a pipe that carries much holds up to
/// 4 MiB per direction, as a queue holds its ring.
///
/// Each end also has a send lock and a receive lock (robust process-shared mutexes, as
/// `mp_sync::Lock`, for the directions it uses), shared by every handle on the end, so that
/// an end can be used by several threads and processes at once (see
/// [`Connection::try_clone`]).
///
/// ```
/// let (reader, writer) = mp_queue::pipe(false)?;
/// writer.send("one way")?;
/// assert_eq!(reader.recv::<String>()?, "one way");
/// assert!(matches!(reader.send(&1), Err(mp_queue::Error::ReadOnly)));
/// # Ok::<(), mp_queue::Error>(())
/// ```
pub fn pipe(duplex: bool) -> Result<(Connection, Connection)> {
    let closed = sys::closed_fd()?;
    let (a, b) = os::socket::stream_pair().map_err(|e| Error::io("socketpair", e))?;
    let lanes = Arc::new(Lanes::create()?);
    // Each end has a lock per direction it uses (see `Connection::try_clone`).
    let locks = |send: bool, recv: bool| -> Result<Locks> {
        Ok(Locks {
            send: if send { Some(Lock::new()?) } else { None },
            recv: if recv { Some(Lock::new()?) } else { None },
        })
    };
    // Lane 0 carries a's messages to b (and a one-way pipe's), lane 1 b's to a.
    if duplex {
        return Ok((
            Connection::from_pipe(a, locks(true, true)?, closed, Arc::clone(&lanes), 1),
            Connection::from_pipe(b, locks(true, true)?, closed, lanes, 0),
        ));
    }
    // One way: the reader (a) receives on lane 0, the writer (b) sends on it.
    os::socket::shutdown(a.as_fd(), false).map_err(|e| Error::io("shutdown", e))?;
    os::socket::shutdown(b.as_fd(), true).map_err(|e| Error::io("shutdown", e))?;
    Ok((
        Connection::from_pipe(a, locks(false, true)?, closed, Arc::clone(&lanes), 0),
        Connection::from_pipe(b, locks(true, false)?, closed, lanes, 1),
    ))
}

/// Returns a pair of connected [`Connection`]s with CPython's framing and nothing else: the
/// `Pipe(duplex=True)` CPython makes (a socket pair whose messages are 4-byte big-endian
/// lengths and the bytes), both ends sending and receiving.
///
/// Unlike [`pipe`]'s ends, these have no shared-memory lanes: every message is one write and
/// one read on the socket, and a receiver sleeps in the kernel's read. That is the cheapest
/// hand-off when receivers do not spin ([`mp_sync::set_spin_limit`]`(0)`, or one CPU): no
/// futex, and a peer that dies is end of file at once. It is also what a Python program
/// expects at the other end of an inherited socket (`multiprocessing.connection.Connection`
/// over its descriptor). The ends behave as a [`Client`](crate::Client)'s connection: bytes
/// only (a value holding descriptors is [`Error::InvalidArgument`]), any message size up to
/// [`max_message_size`](Connection::max_message_size), and handles made by
/// [`try_clone`](Connection::try_clone) share their locks within one process only. They
/// cross into another process as every connection does.
///
/// Errors: [`Error::Io`] if the sockets cannot be made (out of descriptors).
///
/// ```
/// let (a, b) = mp_queue::socket_pipe()?;
/// a.send(&(1u32, "one"))?;
/// assert_eq!(b.recv::<(u32, String)>()?, (1, "one".to_owned()));
/// b.send_bytes(b"raw", 0, None)?;
/// assert_eq!(a.recv_bytes(None)?, b"raw");
/// assert!(a.is_socket() && b.is_socket());
/// drop(b);
/// assert!(matches!(a.recv_bytes(None), Err(mp_queue::Error::Eof)));
/// # Ok::<(), mp_queue::Error>(())
/// ```
pub fn socket_pipe() -> Result<(Connection, Connection)> {
    let (a, b) = os::socket::stream_pair().map_err(|e| Error::io("socketpair", e))?;
    Ok((Connection::from_socket(a)?, Connection::from_socket(b)?))
}

/// An end's locks: the one its senders hold while they send a message and the one its
/// receivers hold while they receive one, shared by every handle on the end in every process.
/// An end has the lock of each direction it may use.
#[derive(Clone)]
struct Locks {
    /// Held for the whole of one message's sending.
    send: Option<Lock>,
    /// Held for the whole of one message's receiving.
    recv: Option<Lock>,
}

/// What an end has beside its socket, by where it came from.
enum Kind {
    /// An end of a [`pipe`]: mp's frames (descriptors beside the bytes), the pipe's lanes,
    /// and process-shared locks.
    Pipe(PipeEnd),
    /// A connection of a `Listener` or `Client`, or an end of a `socket_pipe`: CPython's
    /// framing, bytes only, and locks shared by this process's handles on it.
    Socket(Arc<SocketEnd>),
}

/// The largest socket frame after which (rather than before which) the sender wakes a
/// receiver asleep on the lane: far below any socket buffer, so the frame is never held back.
const WAKE_AFTER_FRAME: usize = 16 << 10;

/// What an end of a pipe shares with the other handles on it and with the other end.
struct PipeEnd {
    /// The end's locks, shared with every other handle on it.
    locks: Locks,
    /// The pipe's shared-memory lanes (see `lane.rs`); the lane this end receives on also
    /// holds whether its stream is broken.
    lanes: Arc<Lanes>,
    /// The lane this end receives on; it sends on the other.
    lane_in: usize,
    /// This handle's receive spin, in ns, if set (`Connection::set_receive_spin`; `u64::MAX`:
    /// the process's budget, always).
    spin_ns: AtomicU64,
    /// Whether this handle's last wait ended within its set spin (then the next one spins).
    quick: AtomicBool,
    /// The count of closed handles on the other end that this handle's receives last saw
    /// (`Lane::closes`): when it has changed, a receive looks at the socket before its first
    /// nap, since end of file may be there.
    closes_seen: AtomicU64,
}

impl PipeEnd {
    /// An end of a pipe with the process's spin.
    fn new(locks: Locks, lanes: Arc<Lanes>, lane_in: usize) -> PipeEnd {
        PipeEnd {
            locks,
            lanes,
            lane_in,
            spin_ns: AtomicU64::new(u64::MAX),
            quick: AtomicBool::new(true),
            closes_seen: AtomicU64::new(0),
        }
    }

    /// How long the next receive spins, and the spin it was set to (`None` for
    /// `set_receive_spin(None)`: no spin); `None` if no spin was set (the lane's policy).
    fn spin(&self) -> Option<(Option<Duration>, Option<Duration>)> {
        match self.spin_ns.load(Ordering::Relaxed) {
            u64::MAX => None,
            0 => Some((None, None)),
            ns => {
                let set = Duration::from_nanos(ns);
                Some((self.quick.load(Ordering::Relaxed).then_some(set), Some(set)))
            }
        }
    }
}

/// What the handles on one socket connection share, in one process.
struct SocketEnd {
    /// Held for the whole of one message's sending.
    send: Mutex<()>,
    /// Held for the whole of one message's receiving, with the bytes read ahead.
    recv: Mutex<pyframe::ReadAhead>,
    /// Whether bytes read ahead wait in `recv` (for `poll` and `wait`, without the lock).
    read_ahead: AtomicBool,
    /// Whether a receive stopped inside a frame.
    broken: AtomicBool,
    /// How long a receive looks without blocking, in ns (`u64::MAX`: the process's budget).
    spin_ns: AtomicU64,
}

impl Default for SocketEnd {
    fn default() -> SocketEnd {
        SocketEnd {
            send: Mutex::default(),
            recv: Mutex::default(),
            read_ahead: AtomicBool::new(false),
            broken: AtomicBool::new(false),
            spin_ns: AtomicU64::new(u64::MAX),
        }
    }
}

impl SocketEnd {
    /// How long a receive looks without blocking before it blocks.
    fn spin(&self) -> Option<Duration> {
        match self.spin_ns.load(Ordering::Relaxed) {
            u64::MAX => lane::spin_budget(),
            0 => None,
            ns => Some(Duration::from_nanos(ns)),
        }
    }
}

/// A message a pipe's end received: a lane record, still in the lane, or a socket frame.
enum Got {
    /// A lane record, to take under the receive lock.
    Lane(lane::Record),
    /// A frame read from the socket, and the descriptors that came with it.
    Frame(Vec<u8>, Vec<OwnedFd>),
}

impl Got {
    /// A frame read from the socket.
    fn frame((bytes, fds): (Vec<u8>, Vec<OwnedFd>)) -> Got {
        Got::Frame(bytes, fds)
    }
}

/// A received message's bytes, as the receive has them: still in the lane (read in place, under
/// the receive lock), or a frame read from the socket into a vector of its own, which a caller
/// that keeps the bytes takes without a copy.
enum Received<'a> {
    /// A lane record's payload.
    Lane(&'a [u8]),
    /// A socket frame's payload.
    Frame(Vec<u8>),
}

impl Received<'_> {
    /// The bytes.
    fn bytes(&self) -> &[u8] {
        match self {
            Received::Lane(bytes) => bytes,
            Received::Frame(bytes) => bytes,
        }
    }

    /// The bytes in a vector of their own: a lane record's copied, a frame's moved (its spare
    /// capacity given back if it is more than a quarter of the bytes: a frame read in growing
    /// chunks may have reserved up to twice what came).
    fn into_vec(self) -> Vec<u8> {
        match self {
            Received::Lane(bytes) => bytes.to_vec(),
            Received::Frame(mut bytes) => {
                if bytes.capacity() - bytes.len() > bytes.len() / 4 {
                    bytes.shrink_to_fit();
                }
                bytes
            }
        }
    }
}

/// The guard of an end's send or receive lock.
enum Order<'a> {
    /// A pipe end's process-shared lock.
    Shared(#[allow(dead_code, reason = "held for its drop")] LockGuard<'a>),
    /// A socket connection's send lock.
    Local(#[allow(dead_code, reason = "held for its drop")] MutexGuard<'a, ()>),
    /// A socket connection's receive lock.
    Reader(#[allow(dead_code, reason = "held for its drop")] MutexGuard<'a, pyframe::ReadAhead>),
}

/// Takes a socket connection's lock.
fn take_local<T>(lock: &Mutex<T>) -> MutexGuard<'_, T> {
    lock.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One end of a [`pipe`] or a [`socket_pipe`], or a connection made by a
/// [`Listener`](crate::Listener) or a [`Client`](crate::Client): Python's
/// `multiprocessing.connection.Connection`.
///
/// Messages keep their boundaries: each [`send`](Connection::send) or
/// [`send_bytes`](Connection::send_bytes) arrives as exactly one message at the other end, an
/// empty one included. Typed messages are postcard encodings; descriptors inside them (a
/// `Connection`, a queue, a lock, shared memory, an `mp_process::fdpass::PassFd`) travel beside
/// the bytes (`SCM_RIGHTS`), so they reach a process that is already running.
///
/// A `Connection` is itself `Serialize` and `Deserialize` through `mp_process::fdpass`: it
/// passes into a child as an argument of `mp_process::Process::new` under every start method
/// (under `fork` it is simply moved), and inside messages. It keeps its direction and its
/// maximum message size when it crosses.
///
/// # Connections of a `Listener` or `Client`, and of a `socket_pipe`
/// A connection made by [`Listener::accept`](crate::Listener::accept) or
/// [`Client::connect`](crate::Client::connect), or an end of a [`socket_pipe`], has the same
/// API over a TCP or `AF_UNIX` socket, with CPython's framing (a 4-byte big-endian length; −1
/// and an 8-byte length past 2 GiB) and no lanes, so its peer may be a Python program. It
/// carries bytes only: a value holding descriptors is [`Error::InvalidArgument`]. Its handles
/// share send and receive locks within one process; it may be handed to a child, which then
/// uses it on its own.
///
/// # Errors and a connection's state
/// The other end closing gives [`Error::Eof`] from the receiving calls (and
/// [`poll`](Connection::poll) returns `true` at end of file, as Python's does). A message larger
/// than [`max_message_size`](Connection::max_message_size) is refused before anything is sent,
/// and on receipt before any memory is reserved for it. A message that arrives whole but does
/// not decode as the type asked for is an [`Error::Wire`] and the connection stays usable. A
/// corrupt or truncated frame, an oversized announcement, or a message longer than the
/// `maxlength` of [`recv_bytes`](Connection::recv_bytes) leaves the stream in the middle of a
/// message: the error is returned once, and every later receive gives [`Error::Broken`]; such
/// a connection should be dropped. Nothing panics on bad input.
///
/// # Threads and processes
/// A `Connection` is `Send` and `Sync`, and [`try_clone`](Connection::try_clone) makes more
/// handles on the same end, for other threads or other processes. Every handle on an end, in
/// every process, sends under the end's send lock and receives under its receive lock (robust
/// process-shared locks, as `mp_sync::Lock`), so messages from several threads or processes
/// never interleave, and one thread may block in `recv` while another sends.
pub struct Connection {
    /// The socket, or `None` once closed.
    fd: Option<OwnedFd>,
    /// What `as_fd` lends out once the connection is closed: a socket that always polls ready.
    closed_fd: &'static OwnedFd,
    /// Whether this end may receive.
    readable: bool,
    /// Whether this end may send.
    writable: bool,
    /// The largest message this end sends or accepts, in bytes.
    max_message: usize,
    /// A pipe's end or a socket connection, and what it has beside the socket.
    kind: Kind,
}

/// Takes one of an end's locks: the guard, and whether its previous holder died holding it.
fn take(lock: &Lock) -> Result<(LockGuard<'_>, bool)> {
    match lock.acquire() {
        Ok(guard) => Ok((guard, false)),
        Err(LockError::OwnerDied(guard)) => Ok((guard, true)),
        Err(LockError::Failed(e)) => Err(Error::Sync(e)),
    }
}

/// Turns a sending error of `fdpass` into the crate's error.
fn send_error(e: WireError) -> Error {
    match e {
        WireError::Io(source) => Error::Io { op: "send", source },
        other => Error::Wire(other),
    }
}

impl Connection {
    /// An end of a pipe over `fd`, which may receive if it has a receive lock and send if it
    /// has a send lock.
    fn from_pipe(
        fd: OwnedFd,
        locks: Locks,
        closed_fd: &'static OwnedFd,
        lanes: Arc<Lanes>,
        lane_in: usize,
    ) -> Connection {
        Connection {
            fd: Some(fd),
            closed_fd,
            readable: locks.recv.is_some(),
            writable: locks.send.is_some(),
            max_message: DEFAULT_MAX_FRAME,
            kind: Kind::Pipe(PipeEnd::new(locks, lanes, lane_in & 1)),
        }
    }

    /// A connection with CPython's framing over the connected stream socket `fd` (of a
    /// `Listener` or `Client`), readable and writable.
    ///
    /// Errors: [`Error::Io`] if the stand-in descriptor of closed connections cannot be made.
    pub(crate) fn from_socket(fd: OwnedFd) -> Result<Connection> {
        Ok(Connection {
            fd: Some(fd),
            closed_fd: sys::closed_fd()?,
            readable: true,
            writable: true,
            max_message: DEFAULT_MAX_FRAME,
            kind: Kind::Socket(Arc::default()),
        })
    }

    /// Sets how long a receive looks for a message without sleeping before it sleeps in the
    /// kernel: `Some(d)`, or `None` to sleep at once. By default it is the process's spin
    /// budget (30 µs, scaled by `mp_sync::spin_limit()`; none on one CPU), which turns a
    /// reply that comes within it into no wake-up. With a spin set here, a receive spins only
    /// if the previous wait ended within it, so a peer that is idle or slow costs no spinning
    /// (a connection of a `Listener` or `Client` is adaptive so by default too). For a
    /// connection of a `Listener` or `Client` the setting is shared by this process's handles
    /// on it; for an end of a [`pipe`] it is this handle's.
    pub fn set_receive_spin(&self, spin: Option<Duration>) {
        let ns = spin.map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX - 1));
        let ns = ns.min(u64::MAX - 1);
        match &self.kind {
            Kind::Socket(end) => end.spin_ns.store(ns, Ordering::Relaxed),
            Kind::Pipe(end) => end.spin_ns.store(ns, Ordering::Relaxed),
        }
    }

    /// Whether this is a connection of a `Listener` or `Client` or an end of a
    /// [`socket_pipe`] (CPython's framing), not an end of a [`pipe`].
    pub fn is_socket(&self) -> bool {
        matches!(self.kind, Kind::Socket(_))
    }

    /// The connection's socket itself, `None` once closed: for what concerns the socket and
    /// not the messages, such as its peer's credentials (`SO_PEERCRED`) or noticing that the
    /// peer hung up (`POLLRDHUP`). To wait for a message, use [`wait`](crate::wait) (which
    /// takes [`as_fd`](AsFd::as_fd)) or [`poll`](Connection::poll): a pipe's small messages
    /// may wait beside the socket, which `as_fd` accounts for and this does not.
    ///
    /// ```
    /// let (a, b) = mp_queue::pipe(true)?;
    /// let cred = rustix::net::sockopt::socket_peercred(a.socket().unwrap())?;
    /// assert_eq!(cred.pid, rustix::process::getpid());
    /// # drop(b);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn socket(&self) -> Option<BorrowedFd<'_>> {
        self.fd.as_ref().map(AsFd::as_fd)
    }

    /// Another handle on the same end of the pipe: Python passes one `Connection` to several
    /// processes; here each gets a handle of its own.
    ///
    /// (For a connection of a `Listener` or `Client`, the handle's locks are shared with the
    /// other handles of this process only: see [`Connection`].)
    ///
    /// The handle has its own duplicate of the socket (so it closes on its own: the other end
    /// sees end of file once every handle on this end, in every process, is closed), and
    /// shares with every other handle on the end the pipe's lanes and the end's two locks:
    /// one held while a message is sent, the other while one is received, robust
    /// process-shared mutexes in shared memory (`mp_sync::Lock`). So handles on one end can
    /// be used at once by several threads and processes: messages never interleave, on the
    /// socket (where a large message takes several writes) or in the lanes (one sender and one
    /// receiver at a time). Each message arrives whole at one receiver. The handle starts
    /// with this one's maximum message size.
    ///
    /// A sender killed in the middle of a message leaves that message torn, as with one
    /// handle: the receiver gets a malformed frame. A receiver killed while it reads a frame
    /// leaves the stream's position lost: the next receive, in any process, gives
    /// [`Error::Broken`]; one killed while it waits for a message leaves the end as it was.
    ///
    /// Errors: [`Error::Closed`] for a closed connection, [`Error::Io`] if the socket cannot
    /// be duplicated (out of descriptors).
    ///
    /// ```
    /// let (reader, writer) = mp_queue::pipe(false)?;
    /// let second = writer.try_clone()?;
    /// writer.send("from the first")?;
    /// second.send("from the second")?;
    /// drop(writer);
    /// assert_eq!(reader.recv::<String>()?, "from the first");
    /// assert_eq!(reader.recv::<String>()?, "from the second");
    /// drop(second); // the last handle on the writing end
    /// assert!(matches!(reader.recv::<String>(), Err(mp_queue::Error::Eof)));
    /// # Ok::<(), mp_queue::Error>(())
    /// ```
    pub fn try_clone(&self) -> Result<Connection> {
        let fd = self.fd.as_ref().ok_or(Error::Closed)?;
        let kind = match &self.kind {
            Kind::Pipe(end) => {
                Kind::Pipe(PipeEnd::new(end.locks.clone(), Arc::clone(&end.lanes), end.lane_in))
            }
            Kind::Socket(end) => Kind::Socket(Arc::clone(end)),
        };
        Ok(Connection {
            fd: Some(fd.try_clone().map_err(|e| Error::io("dup", e))?),
            closed_fd: self.closed_fd,
            readable: self.readable,
            writable: self.writable,
            max_message: self.max_message,
            kind,
        })
    }

    /// The lane this end receives on, for an end of a pipe.
    fn lane_in(&self) -> Option<Lane<'_>> {
        match &self.kind {
            Kind::Pipe(end) => Some(end.lanes.lane(end.lane_in)),
            Kind::Socket(_) => None,
        }
    }

    /// The lane this end sends on, for an end of a pipe.
    fn lane_out(&self) -> Option<Lane<'_>> {
        match &self.kind {
            Kind::Pipe(end) => Some(end.lanes.lane(1 - end.lane_in)),
            Kind::Socket(_) => None,
        }
    }

    /// Whether a socket connection has bytes read ahead, which the socket no longer shows
    /// (such a connection cannot be sent: they would stay behind).
    pub(crate) fn has_read_ahead(&self) -> bool {
        match &self.kind {
            Kind::Socket(end) => end.read_ahead.load(Ordering::Acquire),
            Kind::Pipe(_) => false,
        }
    }

    /// Whether a receive stopped inside a frame, so this end can no longer receive.
    fn is_broken(&self) -> bool {
        match &self.kind {
            Kind::Pipe(end) => end.lanes.lane(end.lane_in).is_broken(),
            Kind::Socket(end) => end.broken.load(Ordering::Acquire),
        }
    }

    /// Says that a receive stopped inside a frame.
    fn mark_broken(&self) {
        match &self.kind {
            Kind::Pipe(end) => end.lanes.lane(end.lane_in).mark_broken(),
            Kind::Socket(end) => end.broken.store(true, Ordering::Release),
        }
    }

    /// Sets the largest message, in bytes, this end sends or accepts (default
    /// `mp_process::wire::DEFAULT_MAX_FRAME`, 64 MiB; at most `u32::MAX` is usable on an end
    /// of a pipe, any size on a connection of a `Listener` or `Client`, whose frames announce
    /// lengths beyond 2 GiB as CPython's do).
    /// Returns the connection, for chaining after [`pipe`].
    pub fn with_max_message_size(mut self, max: usize) -> Connection {
        self.max_message = max;
        self
    }

    /// Sets the largest message, in bytes, this end sends or accepts.
    pub fn set_max_message_size(&mut self, max: usize) {
        self.max_message = max;
    }

    /// The largest message, in bytes, this end sends or accepts.
    pub fn max_message_size(&self) -> usize {
        self.max_message
    }

    /// Whether [`close`](Connection::close) was called.
    pub fn closed(&self) -> bool {
        self.fd.is_none()
    }

    /// Whether this end may receive (`false` for the writing end of a one-way pipe).
    pub fn readable(&self) -> bool {
        self.readable
    }

    /// Whether this end may send (`false` for the reading end of a one-way pipe).
    pub fn writable(&self) -> bool {
        self.writable
    }

    /// Closes this end. Idempotent; dropping the connection does the same. The other end sees
    /// end of file once every copy of this end is closed (under `fork`, children hold copies
    /// of every descriptor their parent had); a receive of the other end that sleeps wakes at
    /// the close to look.
    pub fn close(&mut self) {
        let Some(fd) = self.fd.take() else { return };
        drop(fd);
        // Senders to this end take the socket from now on (and see it closed once every copy
        // is), unless records wait in the lane.
        if self.readable {
            if let Some(lane) = self.lane_in() {
                lane.withdraw();
            }
        }
        // A receiver of the other end asleep on the lane wakes and looks at the socket. The
        // poke that wakes it needs the send lock; if another handle holds it, this close was
        // not the last one (that holder's end is open), and the count is enough.
        if let (true, Kind::Pipe(end), Some(lane)) = (self.writable, &self.kind, self.lane_out()) {
            let guard = end.locks.send.as_ref().map(|lock| match lock.try_acquire() {
                Ok(guard) => guard,
                Err(LockError::OwnerDied(guard)) => Some(guard),
                Err(LockError::Failed(_)) => None,
            });
            lane.closed_one(matches!(guard, Some(Some(_))));
        }
    }

    /// Whether handles on the other end were closed since this handle's receives last
    /// looked; remembers `closes` as seen.
    fn closes_changed(&self, closes: u64) -> bool {
        match &self.kind {
            Kind::Pipe(end) => end.closes_seen.swap(closes, Ordering::Relaxed) != closes,
            Kind::Socket(_) => true,
        }
    }

    /// The socket, if this end is open and may send.
    fn send_fd(&self) -> Result<BorrowedFd<'_>> {
        let fd = self.fd.as_ref().ok_or(Error::Closed)?;
        if !self.writable {
            return Err(Error::ReadOnly);
        }
        Ok(fd.as_fd())
    }

    /// The socket, if this end is open, may receive, and is not broken.
    fn recv_fd(&self) -> Result<BorrowedFd<'_>> {
        let fd = self.fd.as_ref().ok_or(Error::Closed)?;
        if !self.readable {
            return Err(Error::WriteOnly);
        }
        if self.is_broken() {
            return Err(Error::Broken);
        }
        Ok(fd.as_fd())
    }

    /// Takes the end's send lock (the end may send: [`Connection::send_fd`] said so). A
    /// previous holder that died may have torn its message; the receiver will see it.
    fn send_guard(&self) -> Result<Order<'_>> {
        match &self.kind {
            Kind::Pipe(end) => {
                let lock = end.locks.send.as_ref().ok_or(Error::ReadOnly)?;
                take(lock).map(|(guard, _)| Order::Shared(guard))
            }
            Kind::Socket(end) => Ok(Order::Local(take_local(&end.send))),
        }
    }

    /// Sends `payload` with `fds` beside it as one frame on the socket, the send lock held;
    /// on an end of a pipe, counting it first (the count orders it before later lane messages
    /// and wakes a receiver asleep on the lane). A socket connection carries no descriptors.
    fn send_frame_locked(
        &self,
        fd: BorrowedFd<'_>,
        payload: &[u8],
        fds: &[BorrowedFd<'_>],
    ) -> Result<()> {
        // What `send_frame` would refuse before sending a byte is refused here, before the
        // frame is counted: a counted frame must follow.
        if let Kind::Socket(_) = self.kind {
            if !fds.is_empty() {
                return Err(Error::InvalidArgument(
                    "a connection of a Listener or Client carries bytes only: a value holding \
                     descriptors (a connection, queue, lock, shared memory) cannot cross it",
                ));
            }
            if payload.len() > self.max_message {
                let max = self.max_message;
                return Err(Error::Wire(WireError::Oversized { len: payload.len() as u64, max }));
            }
            return pyframe::send(fd, payload).map_err(send_error);
        }
        if fds.len() > fdpass::MAX_FDS_PER_FRAME {
            let max = fdpass::MAX_FDS_PER_FRAME;
            return Err(Error::Wire(WireError::TooManyFds { count: fds.len(), max }));
        }
        if payload.len() > self.max_message || u32::try_from(payload.len()).is_err() {
            let max = self.max_message;
            return Err(Error::Wire(WireError::Oversized { len: payload.len() as u64, max }));
        }
        // Counted before the bytes go. A receiver asleep on the lane is woken before a frame
        // that might not fit in the socket's buffer (so that it comes to read it), and after a
        // small one, which the socket takes at once: woken before, it would find the frame not
        // there yet and sleep again in the socket read, a second wake-up for one message.
        let Some(lane) = self.lane_out() else {
            return fdpass::send_frame(fd, payload, fds, self.max_message).map_err(send_error);
        };
        let small = payload.len() <= WAKE_AFTER_FRAME;
        lane.count_socket_frame(!small);
        let sent = fdpass::send_frame(fd, payload, fds, self.max_message).map_err(send_error);
        if small {
            lane.poke();
        }
        sent
    }

    /// Receives one message of at most `limit` bytes, from the lane or the socket, marking the
    /// connection broken if the receive stops inside a frame, and hands it to `f` (a lane
    /// message in place, under the receive lock; a socket frame as the vector it was read
    /// into).
    fn recv_with<R>(
        &self,
        limit: usize,
        f: impl FnOnce(Received<'_>, Vec<OwnedFd>) -> R,
    ) -> Result<R> {
        let fd = self.recv_fd()?;
        // The receive lock is held until the end, through `mark_broken` below.
        let (_order, received) = match &self.kind {
            Kind::Pipe(end) => {
                let lock = end.locks.recv.as_ref().ok_or(Error::WriteOnly)?;
                let (order, holder_died) = take(lock)?;
                let lane = end.lanes.lane(end.lane_in);
                // A receiver that died reading a frame from the socket lost the stream's
                // position.
                if holder_died && lane.in_frame() {
                    lane.mark_broken();
                }
                // Another receive may have broken the stream while this one waited.
                if lane.is_broken() {
                    return Err(Error::Broken);
                }
                let received = match self.receive(fd, lane, limit) {
                    Ok(Some(Got::Lane(record))) => {
                        return Ok(
                            lane.consume(record, |bytes| f(Received::Lane(bytes), Vec::new()))
                        );
                    }
                    Ok(Some(Got::Frame(bytes, fds))) => Ok(Some((bytes, fds))),
                    Ok(None) => Ok(None),
                    Err(e) => Err(e),
                };
                (Order::Shared(order), received)
            }
            Kind::Socket(end) => {
                let mut reader = take_local(&end.recv);
                if end.broken.load(Ordering::Acquire) {
                    return Err(Error::Broken);
                }
                let frame = reader.recv(fd, limit, end.spin()).map(|f| f.map(|b| (b, Vec::new())));
                end.read_ahead.store(!reader.is_empty(), Ordering::Release);
                (Order::Reader(reader), frame.map_err(Error::Wire))
            }
        };
        match received {
            Ok(Some((bytes, fds))) => Ok(f(Received::Frame(bytes), fds)),
            Ok(None) => Err(Error::Eof),
            // Linux reports a peer that closed with unread data as a reset: it is gone all
            // the same, and later reads see end of file.
            Err(Error::Wire(WireError::Io(e)))
                if e.raw_os_error() == Some(Errno::CONNRESET.raw_os_error()) =>
            {
                Err(Error::Eof)
            }
            Err(e) => {
                self.mark_broken();
                Err(match e {
                    Error::Wire(WireError::Io(source)) => Error::Io { op: "recv", source },
                    other => other,
                })
            }
        }
    }

    /// The next message, in order: lane records once every socket frame sent before them is
    /// read, spinning for a while (unless the lane's spin policy backs off: spins that did not
    /// pay, `mp_sync::futex::SpinBackoff`), then sleeping on the lane's futex in naps (see `lane.rs`),
    /// looking at the socket between naps. `None` at end of file.
    fn receive(&self, fd: BorrowedFd<'_>, lane: Lane<'_>, limit: usize) -> Result<Option<Got>> {
        // A spin set on this handle (`set_receive_spin`) adapts on its own; otherwise the
        // lane's policy decides.
        if let Some((budget, set)) = match &self.kind {
            Kind::Pipe(end) => end.spin(),
            Kind::Socket(_) => None,
        } {
            let _adapt = set.map(|set| Adapt { conn: self, at: Instant::now(), set });
            return self.wait_receive(fd, lane, limit, budget, &mut false);
        }
        let budget = lane.receive_spin();
        let mut slept = false;
        let received = self.wait_receive(fd, lane, limit, budget, &mut slept);
        if budget.is_some() {
            lane.spun(!slept);
        }
        received
    }

    /// [`receive`](Self::receive)'s loop, spinning for `budget` first; sets `slept` if it
    /// napped.
    fn wait_receive(
        &self,
        fd: BorrowedFd<'_>,
        lane: Lane<'_>,
        limit: usize,
        budget: Option<Duration>,
        slept: &mut bool,
    ) -> Result<Option<Got>> {
        /// The first nap. A timer due sooner than the kernel's next tick costs a
        /// reprogramming of the timer device on every sleep (on this VM ~1.7 µs per blocking
        /// round trip with 1 ms, ~0.3 µs with 4 ms).
        const FIRST_NAP: Duration = Duration::from_millis(4);
        /// The longest nap: how late a sleeping receiver may notice end of file.
        const LONGEST_NAP: Duration = Duration::from_millis(50);
        let mut spin_end: Option<Instant> = None;
        let mut nap: Option<Duration> = None;
        let mut looks: u32 = 0;
        loop {
            // Order: the count of frames the sender has started is read before the lane, so a
            // record published before a counted frame is seen (and taken) before that frame.
            let sent = lane.socket_sent();
            match lane.take(limit)? {
                Ok(Next::Message(record)) => return Ok(Some(Got::Lane(record))),
                Ok(Next::SocketFirst) => return self.socket_frame(fd, lane, limit),
                Ok(Next::Empty) => {}
                Err(len) => {
                    return Err(Error::Wire(WireError::Oversized { len, max: limit }));
                }
            }
            if sent > lane.socket_taken() {
                return self.socket_frame(fd, lane, limit);
            }
            if let Some(budget) = budget {
                if looks == 0 {
                    lane.open();
                }
                // The clock is read on every eighth look only (a look is a few loads, a clock
                // read several times that), and the spin is timed from the first such read: a
                // message that comes within eight looks costs no clock read.
                looks = looks.wrapping_add(1);
                if looks % 8 != 0 {
                    std::hint::spin_loop();
                    continue;
                }
                let now = Instant::now();
                let end = *spin_end.get_or_insert_with(|| now + budget);
                if now < end {
                    lane::spin_pause(budget.saturating_sub(end - now));
                    continue;
                }
            }
            // Before each nap but the first, look at the socket without taking anything: end
            // of file, or bytes. Bytes of a counted frame show in the count (raised before the
            // frame is sent): then the loop above takes it in order. Bytes no count announces
            // are a frame nobody counted (written by hand); it is read as it comes. Before the
            // first nap it looks only if a handle on the other end was closed since it last
            // looked (a close by a holder of the send lock pokes a sleeping receiver), which
            // saves a system call on every receive that sleeps: the end of file of a peer
            // killed, or ended without closing, is seen at most `FIRST_NAP` later.
            let closes = lane.closes();
            if nap.is_some() || self.closes_changed(closes) {
                match os::socket::peek(fd).map_err(|e| Error::io("recv (peek)", e))? {
                    Peek::Eof if !lane.ready() => return Ok(None),
                    Peek::Bytes if !lane.ready() => {
                        return read_frame(fd, lane, limit).map(|f| f.map(Got::frame));
                    }
                    Peek::Eof | Peek::Bytes => continue,
                    Peek::Nothing => {}
                }
            }
            let this_nap = nap.map_or(FIRST_NAP, |n| (n * 2).min(LONGEST_NAP));
            nap = Some(this_nap);
            *slept = true;
            lane.sleep(this_nap, closes)?;
        }
    }

    /// Reads the counted socket frame that comes next (blocking).
    fn socket_frame(
        &self,
        fd: BorrowedFd<'_>,
        lane: Lane<'_>,
        limit: usize,
    ) -> Result<Option<Got>> {
        let frame = read_frame(fd, lane, limit)?;
        if frame.is_some() {
            lane.taken_from_socket();
        }
        Ok(frame.map(Got::frame))
    }

    /// Sends `value` as one message: Python's `Connection.send`.
    ///
    /// The value is encoded with postcard; descriptors it holds are duplicated and travel
    /// beside the bytes. Errors: [`Error::Closed`], [`Error::ReadOnly`], [`Error::Wire`] for a
    /// value that fails to encode or whose encoding is larger than the maximum message size
    /// (nothing is sent), [`Error::Io`] (`EPIPE` once the other end is closed; no `SIGPIPE`
    /// is raised).
    ///
    /// ```
    /// let (a, b) = mp_queue::pipe(true)?;
    /// a.send(&(1u8, "two".to_string(), vec![3.0f64]))?;
    /// let (one, two, three): (u8, String, Vec<f64>) = b.recv()?;
    /// assert_eq!((one, two.as_str(), three), (1, "two", vec![3.0]));
    /// # Ok::<(), mp_queue::Error>(())
    /// ```
    pub fn send<T: Serialize + ?Sized>(&self, value: &T) -> Result<()> {
        use postcard::ser_flavors::{Size, Slice};
        let fd = self.send_fd()?;
        // Measure first, so that an oversized value is refused before it is encoded. Plain
        // postcard first: a value holding descriptors fails there and is measured with them.
        let plain = postcard::serialize_with_flavor(value, Size::default()).ok();
        let size = match plain {
            Some(size) => size,
            None => fdpass::encode_with_flavor(value, Size::default())?.0,
        };
        if size > self.max_message {
            return Err(Error::Wire(WireError::Oversized {
                len: size as u64,
                max: self.max_message,
            }));
        }
        let _order = self.send_guard()?;
        // A small value without descriptors goes through the lane while the peer is
        // receiving, encoded in place.
        if let (Some(_), Some(lane)) = (plain, self.lane_out()) {
            let sent = lane.try_send(size, |buf| {
                let written = postcard::serialize_with_flavor(value, Slice::new(buf))
                    .map_err(|e| Error::Wire(WireError::Encode(e)))?;
                if written.len() == size { Ok(()) } else { Err(Error::Unstable) }
            })?;
            if sent {
                return Ok(());
            }
        }
        let (bytes, fds) = fdpass::encode_with_fds(value)?;
        let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(AsFd::as_fd).collect();
        self.send_frame_locked(fd, &bytes, &borrowed)
    }

    /// Receives one message and decodes it as a `T`: Python's `Connection.recv`.
    ///
    /// Blocks until a message arrives. Errors: [`Error::Eof`] once the other end is closed
    /// and every message has been read, [`Error::Wire`] for a message that does not decode as
    /// a `T` (the message is consumed and the connection stays usable) or a malformed frame
    /// (after which the connection is broken), [`Error::Closed`], [`Error::WriteOnly`],
    /// [`Error::Broken`].
    pub fn recv<T: DeserializeOwned>(&self) -> Result<T> {
        Ok(self.recv_with(self.max_message, |m, fds| fdpass::decode_with_fds(m.bytes(), fds))??)
    }

    /// Sends `buf[offset..offset + size]` (to the end if `size` is `None`) as one message:
    /// Python's `Connection.send_bytes`.
    ///
    /// An empty message is a message. An `offset` or `offset + size` past the end of `buf` is
    /// [`Error::OutOfRange`]; the other errors are those of [`send`](Connection::send). The
    /// bytes go to the socket straight from `buf`, with no copy.
    ///
    /// ```
    /// let (a, b) = mp_queue::pipe(true)?;
    /// a.send_bytes(b"hello world", 6, None)?;
    /// a.send_bytes(b"hello world", 0, Some(5))?;
    /// a.send_bytes(b"", 0, None)?;
    /// assert_eq!(b.recv_bytes(None)?, b"world");
    /// assert_eq!(b.recv_bytes(None)?, b"hello");
    /// assert_eq!(b.recv_bytes(None)?, b"");
    /// assert!(matches!(a.send_bytes(b"abc", 2, Some(2)), Err(mp_queue::Error::OutOfRange { .. })));
    /// # Ok::<(), mp_queue::Error>(())
    /// ```
    pub fn send_bytes(&self, buf: &[u8], offset: usize, size: Option<usize>) -> Result<()> {
        let fd = self.send_fd()?;
        let len = buf.len();
        let out_of_range = || Error::OutOfRange { offset, len: size, size: len };
        let end = match size {
            None if offset <= len => len,
            None => return Err(out_of_range()),
            Some(size) => {
                offset.checked_add(size).filter(|&end| end <= len).ok_or_else(out_of_range)?
            }
        };
        let payload = buf.get(offset..end).ok_or_else(out_of_range)?;
        if payload.len() > self.max_message {
            return Err(Error::Wire(WireError::Oversized {
                len: payload.len() as u64,
                max: self.max_message,
            }));
        }
        let _order = self.send_guard()?;
        if let Some(lane) = self.lane_out() {
            let sent = lane.try_send(payload.len(), |dst| {
                dst.copy_from_slice(payload);
                Ok(())
            })?;
            if sent {
                return Ok(());
            }
        }
        self.send_frame_locked(fd, payload, &[])
    }

    /// Receives one message as bytes: Python's `Connection.recv_bytes`.
    ///
    /// Descriptors that came with the message are closed. With `maxlength`, a longer message
    /// is [`Error::BadMessageLength`] and, as in Python, this end can no longer receive (the
    /// message is left unread): later receives give [`Error::Broken`]. The other errors are
    /// those of [`recv`](Connection::recv).
    ///
    /// ```
    /// let (a, b) = mp_queue::pipe(true)?;
    /// a.send_bytes(&[7; 100], 0, None)?;
    /// assert!(matches!(b.recv_bytes(Some(10)), Err(mp_queue::Error::BadMessageLength { len: 100, maxlength: 10 })));
    /// assert!(matches!(b.recv_bytes(None), Err(mp_queue::Error::Broken)));
    /// # Ok::<(), mp_queue::Error>(())
    /// ```
    pub fn recv_bytes(&self, maxlength: Option<usize>) -> Result<Vec<u8>> {
        let limit = maxlength.map_or(self.max_message, |m| m.min(self.max_message));
        match self.recv_with(limit, |message, _fds| message.into_vec()) {
            Ok(bytes) => Ok(bytes),
            Err(Error::Wire(WireError::Oversized { len, .. }))
                if maxlength.is_some_and(|m| m < self.max_message) =>
            {
                Err(Error::BadMessageLength { len, maxlength: limit })
            }
            Err(e) => Err(e),
        }
    }

    /// Receives one message into `buf`, replacing what it held, and returns its length: a
    /// [`recv_bytes`](Connection::recv_bytes) that reuses `buf`'s memory, so that a loop of
    /// receives allocates nothing once `buf` has grown to its messages' size. Descriptors that
    /// came with the message are closed, as `recv_bytes` does. The errors are those of
    /// `recv_bytes` without a `maxlength`; after an error `buf` is unchanged.
    ///
    /// ```
    /// let (a, b) = mp_queue::pipe(true)?;
    /// let mut buf = Vec::new();
    /// a.send_bytes(b"hello", 0, None)?;
    /// a.send_bytes(b"hi", 0, None)?;
    /// assert_eq!(b.recv_bytes_into_vec(&mut buf)?, 5);
    /// assert_eq!(buf, b"hello");
    /// assert_eq!(b.recv_bytes_into_vec(&mut buf)?, 2);
    /// assert_eq!(buf, b"hi");
    /// # Ok::<(), mp_queue::Error>(())
    /// ```
    pub fn recv_bytes_into_vec(&self, buf: &mut Vec<u8>) -> Result<usize> {
        self.recv_with(self.max_message, |message, _fds| {
            buf.clear();
            buf.extend_from_slice(message.bytes());
            buf.len()
        })
    }

    /// Receives one message into `buf` at `offset` and returns its length: Python's
    /// `Connection.recv_bytes_into`.
    ///
    /// An `offset` past the end of `buf` is [`Error::OutOfRange`], checked before anything is
    /// received. A message longer than the room after `offset` is consumed and returned whole
    /// inside [`Error::BufferTooShort`] (the connection stays usable); `buf` is left untouched.
    ///
    /// ```
    /// let (a, b) = mp_queue::pipe(true)?;
    /// a.send_bytes(b"abc", 0, None)?;
    /// a.send_bytes(b"too long", 0, None)?;
    /// let mut buf = [0u8; 6];
    /// assert_eq!(b.recv_bytes_into(&mut buf, 2)?, 3);
    /// assert_eq!(&buf, b"\0\0abc\0");
    /// match b.recv_bytes_into(&mut buf, 0) {
    ///     Err(mp_queue::Error::BufferTooShort { message, .. }) => assert_eq!(message, b"too long"),
    ///     other => panic!("{other:?}"),
    /// }
    /// # Ok::<(), mp_queue::Error>(())
    /// ```
    pub fn recv_bytes_into(&self, buf: &mut [u8], offset: usize) -> Result<usize> {
        let len = buf.len();
        // The checks Python makes before reading, in its order.
        self.recv_fd()?;
        let Some(room) = buf.get_mut(offset..) else {
            return Err(Error::OutOfRange { offset, len: None, size: len });
        };
        self.recv_with(self.max_message, |message, _fds| {
            match room.get_mut(..message.bytes().len()) {
                Some(dest) => {
                    dest.copy_from_slice(message.bytes());
                    Ok(dest.len())
                }
                None => {
                    Err(Error::BufferTooShort { room: room.len(), message: message.into_vec() })
                }
            }
        })?
    }

    /// Whether a message (or end of file) is waiting to be received now, without blocking:
    /// Python's `Connection.poll()` (whose timeout defaults to 0).
    ///
    /// Returns `true` at end of file too; [`recv`](Connection::recv) then gives
    /// [`Error::Eof`]. To wait, use [`poll_timeout`](Connection::poll_timeout), or
    /// [`wait`](crate::wait) to wait for ever.
    ///
    /// Errors: [`Error::Closed`], [`Error::WriteOnly`], [`Error::Broken`], [`Error::Io`].
    ///
    /// ```
    /// let (a, b) = mp_queue::pipe(true)?;
    /// assert!(!b.poll()?);
    /// a.send(&42u32)?;
    /// assert_eq!(mp_queue::wait([&b])?.len(), 1);
    /// assert!(b.poll()?, "polling does not take the message");
    /// assert_eq!(b.recv::<u32>()?, 42);
    /// # Ok::<(), mp_queue::Error>(())
    /// ```
    pub fn poll(&self) -> Result<bool> {
        self.poll_until(Some(Instant::now()))
    }

    /// Whether a message (or end of file) arrives within `timeout`: Python's
    /// `Connection.poll(timeout)`.
    ///
    /// `Duration::ZERO` only looks (as [`poll`](Connection::poll)); a timeout too large to
    /// represent (`Duration::MAX`) waits for ever, as Python's `poll(None)`. Signals that
    /// interrupt the wait are retried with the time left, and `false` is returned only once
    /// the whole timeout has passed. Returns `true` at end of file too.
    ///
    /// Errors: as [`poll`](Connection::poll).
    ///
    /// ```
    /// use std::time::Duration;
    /// let (a, b) = mp_queue::pipe(true)?;
    /// assert!(!b.poll_timeout(Duration::from_millis(10))?);
    /// drop(a);
    /// assert!(b.poll_timeout(Duration::MAX)?);
    /// assert!(matches!(b.recv::<u32>(), Err(mp_queue::Error::Eof)));
    /// # Ok::<(), mp_queue::Error>(())
    /// ```
    pub fn poll_timeout(&self, timeout: Duration) -> Result<bool> {
        self.poll_until(os::time::deadline(Some(timeout)))
    }

    /// Whether a message (or end of file) is waiting by `deadline` (`None`: for ever).
    fn poll_until(&self, deadline: Option<Instant>) -> Result<bool> {
        let fd = self.recv_fd()?;
        let lane = self.lane_in();
        // Withdrawn first: no sender starts a lane record while this polls the socket, and
        // one that did before is seen here.
        if lane.is_some_and(|l| l.withdraw() || l.socket_pending()) || self.has_read_ahead() {
            return Ok(true);
        }
        let ready = os::poll::readable(fd.as_fd(), deadline).map_err(|e| Error::io("poll", e))?;
        Ok(ready || lane.is_some_and(|l| l.ready()))
    }
}

/// Says, when a receive with a set spin ends (however it ends), whether its wait ended within
/// the spin: the next receive spins only then.
struct Adapt<'a> {
    conn: &'a Connection,
    at: Instant,
    set: Duration,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.close();
    }
}

impl Drop for Adapt<'_> {
    fn drop(&mut self) {
        if let Kind::Pipe(end) = &self.conn.kind {
            end.quick.store(self.at.elapsed() <= self.set, Ordering::Relaxed);
        }
    }
}

/// Reads one frame of mp's from the socket of a pipe's end (blocking), saying in the lane
/// that a receiver is inside a frame meanwhile, so that a receiver killed there is known to
/// have broken the stream. A frame whose descriptors were dropped is read whole, and the
/// stream goes on.
fn read_frame(
    fd: BorrowedFd<'_>,
    lane: Lane<'_>,
    limit: usize,
) -> Result<Option<(Vec<u8>, Vec<OwnedFd>)>> {
    lane.set_in_frame(true);
    let frame = fdpass::recv_frame(fd, limit);
    lane.set_in_frame(false);
    Ok(frame?)
}

/// The socket of an open connection. Once it is closed, a socket that always polls readable
/// (and reads end of file) stands in, so that [`wait`](crate::wait) reports a closed
/// connection at once; every operation on the closed connection then gives
/// [`Error::Closed`].
impl AsFd for Connection {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match &self.fd {
            // A message left in the lane does not make the socket readable: lend the
            // always-ready descriptor while one waits. The lane is closed first (by the word
            // senders publish with), so that no record comes while the socket is polled.
            Some(_)
                if self.readable
                    && (self.lane_in().is_some_and(|l| l.withdraw()) || self.has_read_ahead()) =>
            {
                self.closed_fd.as_fd()
            }
            Some(fd) => fd.as_fd(),
            None => self.closed_fd.as_fd(),
        }
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("fd", &self.fd.as_ref().map(AsRawFd::as_raw_fd))
            .field("readable", &self.readable)
            .field("writable", &self.writable)
            .field("max_message", &self.max_message)
            .field("socket", &self.is_socket())
            .field("broken", &(self.readable && self.is_broken()))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The locks of an end of a pipe.
    fn pipe_locks(conn: &Connection) -> &Locks {
        match &conn.kind {
            Kind::Pipe(end) => &end.locks,
            Kind::Socket(_) => panic!("not a pipe"),
        }
    }

    #[test]
    fn closing_a_sending_handle_is_counted_for_the_receiver() {
        let (mut a, b) = pipe(true).unwrap();
        let closes = |conn: &Connection| conn.lane_in().unwrap().closes();
        let a2 = a.try_clone().unwrap();
        drop(a2);
        assert_eq!(closes(&b), 1, "dropping a clone of a counts");
        assert!(b.closes_changed(closes(&b)), "b's receives have not looked since");
        assert!(!b.closes_changed(closes(&b)));
        a.close();
        a.close();
        assert_eq!(closes(&b), 2, "closing twice counts once");
        assert!(matches!(b.recv_bytes(None), Err(Error::Eof)));
        assert_eq!(closes(&a), 0, "nothing of b was closed");
        // A one-way pipe: only the writer's close counts.
        let (reader, writer) = pipe(false).unwrap();
        let lane = reader.lane_in().unwrap().closes();
        drop(reader);
        assert_eq!(writer.lane_out().unwrap().closes(), lane);
        let (reader, writer) = pipe(false).unwrap();
        drop(writer);
        assert_eq!(reader.lane_in().unwrap().closes(), 1);
    }

    #[test]
    fn closing_a_handle_while_its_end_sends_does_not_wait_for_the_send() {
        let (a, b) = pipe(true).unwrap();
        let a2 = a.try_clone().unwrap();
        // The end's send lock is held (as by a send of another handle, blocked on a full
        // socket): the close counts without it and returns.
        let held = pipe_locks(&a).send.as_ref().unwrap().acquire().unwrap();
        drop(a2);
        drop(held);
        assert_eq!(b.lane_in().unwrap().closes(), 1);
        a.send(&7u8).unwrap();
        assert_eq!(b.recv::<u8>().unwrap(), 7);
        drop(a);
        assert!(matches!(b.recv::<u8>(), Err(Error::Eof)));
    }

    /// A thread takes `conn`'s `lock` and exits holding it, as a process killed holding it
    /// would; with `in_frame`, while it says it is reading a frame.
    fn die_holding(conn: &Connection, lock: &Lock, in_frame: bool) {
        std::thread::scope(|s| {
            s.spawn(|| {
                let (guard, _) = take(lock).unwrap();
                if in_frame {
                    conn.lane_in().unwrap().set_in_frame(true);
                }
                guard.forget();
            });
        });
    }

    #[test]
    fn a_receiver_that_died_between_messages_leaves_the_end_usable() {
        let (a, b) = pipe(true).unwrap();
        a.send(&1u8).unwrap();
        die_holding(&b, pipe_locks(&b).recv.as_ref().unwrap(), false);
        assert_eq!(b.recv::<u8>().unwrap(), 1);
        a.send(&2u8).unwrap();
        assert_eq!(b.recv::<u8>().unwrap(), 2);
    }

    #[test]
    fn a_receiver_that_died_inside_a_frame_breaks_the_end_for_every_handle() {
        let (a, b) = pipe(true).unwrap();
        let b2 = b.try_clone().unwrap();
        a.send(&1u8).unwrap();
        die_holding(&b, pipe_locks(&b).recv.as_ref().unwrap(), true);
        assert!(matches!(b.recv::<u8>(), Err(Error::Broken)));
        assert!(matches!(b2.recv::<u8>(), Err(Error::Broken)));
        assert!(matches!(b2.poll(), Err(Error::Broken)));
        // The other direction is another stream.
        b.send(&3u8).unwrap();
        assert_eq!(a.recv::<u8>().unwrap(), 3);
    }

    #[test]
    fn a_sender_that_died_holding_the_send_lock_does_not_stop_the_others() {
        let (a, b) = pipe(true).unwrap();
        die_holding(&a, pipe_locks(&a).send.as_ref().unwrap(), false);
        a.send(&1u8).unwrap();
        assert_eq!(b.recv::<u8>().unwrap(), 1);
    }
}
